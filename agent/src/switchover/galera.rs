//! Planned Galera writer switchover: move the writer every HAProxy routes to onto another
//! node. Runs in the agent that received `POST /v1/galera/switchover` ([`request`]); an
//! adapter: it reads the reports this agent holds, proposes one command through its event
//! loop and asks the target's agent whether it serves.
//!
//! Steps (each reported with its time since the start):
//! 1. Check: a writer is committed; the target is another member, not evicted, whose own
//!    agent's fresh report says Synced, Primary and ready (absent: the best-ranked such node).
//! 2. Commit `SetGaleraWriter { to, epoch + 1, Switchover }`. Refused or rejected: nothing
//!    changed. Timed out: in doubt (the error says so; `triad status` shows what committed).
//! 3. Once it applied, every agent drains the old writer from its HAProxy (`maint`, sessions
//!    shut down), so no new write reaches it; the target's own agent runs a causal read
//!    (`wsrep_sync_wait=1`: it returns only once the target has applied every write set
//!    committed in the cluster before it, so `wsrep_last_committed` has caught up with the old
//!    writer's) before it answers HAProxy's check with 200.
//! 4. Wait (bounded by `serve_wait`) until the target's agent answers `GET /galera/writer`
//!    with 200; the write pause reported is the time from the commit to then (HAProxies take
//!    the target up within one check interval after it).
//!
//! No acknowledged commit is lost: Galera certifies every commit on every node before it is
//! acknowledged, sessions on the old writer are cut, and the new writer takes writes only
//! after applying everything committed before. A transaction still open on the old writer when
//! its session is cut fails (never acknowledged).
//!
//! Caveat: one switchover at a time per agent (the API's busy flag); two operators asking two
//! agents at once race on the epoch compare-and-set, and the loser's command is rejected.

// Reads the clock (adapter: a switchover waits on real time); see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cluster::{ChangeKind, Command, Outcome};
use crate::decide::galera_writer::rank_from_reports;
use crate::ids::{Epoch, LogIndex, NodeId};
use crate::status::Handles;

/// What a finished switchover reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GaleraSwitchoverReport {
    /// The old writer.
    pub from: NodeId,
    /// The new writer.
    pub to: NodeId,
    /// The new epoch.
    pub epoch: Epoch,
    /// Log index of the change.
    pub index: LogIndex,
    /// Milliseconds from the commit until the new writer's own agent answered 200 (writes
    /// paused at most this plus one HAProxy check interval).
    pub paused_ms: u64,
    /// Each step with its time since the start.
    pub steps: Vec<String>,
}

/// Why a switchover was not done (or not confirmed).
#[derive(Debug, thiserror::Error)]
pub enum GaleraSwitchoverError {
    /// The request names something that does not exist.
    #[error("{0}")]
    BadRequest(String),
    /// The cluster is not in a state that allows it; the text says what to wait for.
    #[error("{0}")]
    Conflict(String),
    /// The commit failed or is in doubt.
    #[error("{0}")]
    Commit(String),
    /// Committed, but the new writer's agent did not say it serves in time.
    #[error(
        "committed (writer {to}, epoch {epoch}), but {to}'s agent did not answer GET \
         /galera/writer with 200 within {after_ms} ms (last answer: {last}); writes wait until \
         it does or the leader moves the writer; see `triad status`"
    )]
    NotServing {
        /// The new writer.
        to: NodeId,
        /// Its epoch.
        epoch: Epoch,
        /// How long it was waited for.
        after_ms: u64,
        /// Its agent's last answer.
        last: String,
    },
}

/// Runs a switchover to `to` (absent: the best-ranked eligible node). See the module docs.
pub async fn request(
    h: &Arc<Handles>,
    to: Option<NodeId>,
) -> Result<GaleraSwitchoverReport, GaleraSwitchoverError> {
    use GaleraSwitchoverError::{BadRequest, Commit, Conflict};
    let start = Instant::now();
    let mut steps = Vec::new();
    let mut step = |what: String| {
        steps.push(format!("{:>6} ms  {what}", start.elapsed().as_millis()));
    };
    let Some(g) = h.config.config.galera.as_ref() else {
        return Err(Conflict(
            "the Galera writer is not managed by this agent ([galera] is not configured)".into(),
        ));
    };
    let core = h.status.borrow().clone();
    let a = core.cluster.galera_writer.clone();
    let Some(from) = a.writer else {
        return Err(Conflict(
            "no Galera writer is recorded yet; wait until the agents have recorded one".into(),
        ));
    };
    let members: Vec<NodeId> = h.config.members.iter().map(|m| m.id).collect();
    if let Some(t) = to.filter(|t| !members.contains(t)) {
        return Err(BadRequest(format!("{t} is not a member")));
    }
    if to == Some(from) {
        return Err(Conflict(format!("{from} is already the Galera writer")));
    }
    let settings = g.writer_settings();
    let now = h.liveness.mono_ms();
    let seen = core.health.lock().map(|hs| hs.all(now)).unwrap_or_default();
    let ranking = rank_from_reports(&members, &seen, &core.cluster, now, settings);
    let why_not = |n: NodeId| {
        ranking
            .iter()
            .find(|r| r.node == n)
            .map_or_else(|| "unknown".to_string(), |r| r.reason.clone())
    };
    let to = match to {
        Some(t) => {
            if !ranking.iter().any(|r| r.node == t && r.eligible) {
                return Err(Conflict(format!(
                    "{t} cannot take writes now: {}",
                    why_not(t)
                )));
            }
            t
        }
        None => match ranking.iter().find(|r| r.eligible && r.node != from) {
            Some(r) => r.node,
            None => {
                let all: Vec<String> = ranking
                    .iter()
                    .map(|r| format!("{} {}", r.node, r.reason))
                    .collect();
                return Err(Conflict(format!(
                    "no other node can take writes now: {}",
                    all.join("; ")
                )));
            }
        },
    };
    let Some(to_api) = h
        .config
        .members
        .iter()
        .find(|m| m.id == to)
        .map(|m| m.api_addr)
    else {
        return Err(BadRequest(format!("{to} has no API address")));
    };
    step(format!(
        "checked: writer {from} at epoch {}; {to} {}",
        a.epoch,
        why_not(to)
    ));
    if h.switchover_busy.swap(true, Ordering::SeqCst) {
        return Err(Conflict(
            "a switchover is already running through this agent; wait for it to finish".into(),
        ));
    }
    let _busy = Busy(h.switchover_busy.clone());
    let epoch = a.epoch.next();
    super::pre_hook(
        h,
        "galera",
        format!("galera writer switchover {from} -> {to} asked through the API"),
        epoch.0,
        to,
        from,
    )
    .await
    .map_err(Conflict)?;
    let command = Command::SetGaleraWriter {
        node: to,
        epoch,
        kind: ChangeKind::Switchover,
        reason: format!(
            "switchover {from} -> {to} asked through api@{}",
            h.config.node_id()
        ),
    };
    tracing::warn!(%from, %to, %epoch, "galera writer switchover requested");
    let applied = match h.propose(command).await {
        Ok(applied) => applied,
        Err(e) => {
            return Err(Commit(format!(
                "the change of writer was not confirmed: {e}; see `triad status` for what \
                 committed"
            )))
        }
    };
    if let Outcome::Rejected(why) = &applied.outcome {
        return Err(Conflict(format!("the change was rejected: {why}")));
    }
    let committed = Instant::now();
    step(format!(
        "committed writer {to} at epoch {epoch} (index {}); every HAProxy drains {from}",
        applied.index
    ));
    let serve_wait = Duration::from_secs(10);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .map_err(|e| Commit(format!("building an HTTP client: {e}")))?;
    let url = format!("http://{to_api}/galera/writer");
    let mut last = String::from("no answer yet");
    while committed.elapsed() < serve_wait {
        match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => {
                let paused_ms = u64::try_from(committed.elapsed().as_millis()).unwrap_or(u64::MAX);
                step(format!(
                    "{to}'s agent serves writes (caught up by a causal read) {paused_ms} ms \
                     after the commit"
                ));
                tracing::warn!(%from, %to, %epoch, paused_ms, "galera writer switchover done");
                return Ok(GaleraSwitchoverReport {
                    from,
                    to,
                    epoch,
                    index: applied.index,
                    paused_ms,
                    steps,
                });
            }
            Ok(r) => {
                let code = r.status();
                last = format!("{code}: {}", r.text().await.unwrap_or_default().trim());
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(GaleraSwitchoverError::NotServing {
        to,
        epoch,
        after_ms: u64::try_from(serve_wait.as_millis()).unwrap_or(u64::MAX),
        last,
    })
}

/// Clears the busy flag when dropped.
struct Busy(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}
