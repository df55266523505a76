//! Planned Redis switchover: move the master to another node without losing an acknowledged
//! write. Runs in the agent that received `POST /v1/redis/switchover` ([`request`]; the API
//! only parses the request and maps the outcome to a status code). An adapter: it talks to the
//! two Redis servers, proposes one command through the agent's event loop and reads the Redis
//! authority as applied on this node.
//!
//! Steps (each reported with its time since the start):
//! 1. Check: a master is committed, the target is another member whose Redis is a replica of
//!    the master with its link up.
//! 2. `CLIENT PAUSE WRITE` on the master, bounded by `pause`: clients' writes wait, nothing
//!    new is acknowledged from here on. Every later wait re-issues the pause before half of it
//!    is left, so it holds for as long as the switchover needs it, and still ends by itself
//!    within `pause` if this agent dies.
//! 3. Wait until the target's replication offset reaches the master's (bounded by
//!    `catch_up`); on timeout, unpause and fail: nothing changed.
//! 4. Commit `SetRedisMaster { to, epoch + 1, Switchover }`.
//!    - No leader, refused by Raft, or applied and rejected (the epoch moved): the change is
//!      provably not in effect; unpause and fail: nothing changed.
//!    - Timed out, or the agent stopped with it pending: in doubt, the entry may still commit.
//!      Writes stay paused while the committed authority is polled (bounded by
//!      `outcome_wait`). The committed epoch reaching ours settles it: with our target it
//!      applied (go on with step 5); with another master, ours can no longer commit (the
//!      old master is fenced as in step 5 and writes resume unless the old master itself was
//!      committed again): fail, "another change committed first". Still below ours after
//!      `outcome_wait`: fence the old master (step 5), lift the pause only once it is fenced,
//!      and fail with "outcome unknown": its agent reconciles it to whatever commits (it
//!      unfences it if it stays the committed master).
//! 5. Fence the old master (`min-replicas-to-write`), so that even if its agent is slow, the
//!    writes held by the pause are refused once the pause ends. A failed fence is retried,
//!    with the pause held, until it succeeds or the old master's agent made it a replica
//!    (bounded by `demote_wait`); if neither, fail without lifting the pause, saying how long
//!    it still holds. Its own agent then turns it into a replica of the target (and cuts its
//!    clients), the target's agent promotes it, and every HAProxy moves to the target.
//! 6. Wait (bounded by `demote_wait`) until the old master is a replica, then unpause it.
//!
//! Every write acknowledged before step 2 is on the target by step 3; every write held by the
//! pause fails (fenced or `READONLY`) and is never acknowledged; clients reconnect through
//! HAProxy to the new master. Writes resume on the old master unfenced only when the change is
//! known not to be in effect.
//!
//! Caveats: one switchover at a time per agent is enforced by the API; two operators asking two
//! agents at once race on the epoch compare-and-set, and the loser's command is rejected (its
//! pause is lifted). When the old master can be neither fenced nor reached, nothing here can
//! stop it taking writes once its last pause ends: the error says when, and only its agent
//! (which fences a master that is not the committed one) closes that window. After "outcome
//! unknown", the old master stays fenced until its agent sees what committed.

// Reads the clock (adapter: a switchover waits on real time); see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::actuator::redis::{RedisAction, RedisControl, RedisServer};
use crate::cluster::{ChangeKind, Command, Outcome, RedisAuthority};
use crate::decide::redis::{candidates, RedisInputs};
use crate::driver::ProposeError;
use crate::ids::{Epoch, LogIndex, NodeId};
use crate::probe::redis_info::RedisRole;
use crate::status::Handles;

/// What to do.
#[derive(Clone, Debug)]
pub struct SwitchoverSpec {
    /// The committed master.
    pub from: NodeId,
    /// The target.
    pub to: NodeId,
    /// The committed epoch (the change commits at `epoch + 1`).
    pub epoch: Epoch,
    /// Address of the master as replicas name it (`host`, `port`).
    pub from_addr: std::net::SocketAddr,
    /// Bound of each `CLIENT PAUSE WRITE` (re-issued while the switchover still needs it).
    pub pause: Duration,
    /// Longest wait for the target to catch up.
    pub catch_up: Duration,
    /// Longest wait for the old master to become a replica.
    pub demote_wait: Duration,
    /// Longest wait for the outcome of a commit that timed out (it may still commit).
    pub outcome_wait: Duration,
    /// Who asked (for the audit history).
    pub by: String,
}

/// What happened, step by step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SwitchoverReport {
    /// The old master.
    pub from: NodeId,
    /// The new master.
    pub to: NodeId,
    /// The new epoch.
    pub epoch: Epoch,
    /// Log index of the committed change.
    pub index: LogIndex,
    /// The replication offset the target reached before the change.
    pub offset: i64,
    /// How long client writes were paused, in milliseconds.
    pub paused_ms: u64,
    /// Whether the old master was seen as a replica before the pause was lifted.
    pub old_master_demoted: bool,
    /// One line per step, in order, with its time since the start.
    pub steps: Vec<String>,
}

/// Why a switchover did not happen (or did not finish cleanly).
#[derive(Debug, thiserror::Error)]
pub enum SwitchoverError {
    /// The request cannot be satisfied in the current state; nothing was changed.
    #[error("{0}")]
    Precondition(String),
    /// A Redis server failed; the pause (if any) was lifted; nothing was committed.
    #[error("{0}")]
    Redis(String),
    /// The target did not catch up in time; the pause was lifted; nothing was committed.
    #[error(
        "target {to} reached offset {reached} but the master is at {want} after {after:?}; \
         writes resumed, nothing changed; retry when replication is idle"
    )]
    CatchUp {
        /// The target.
        to: NodeId,
        /// Its offset.
        reached: i64,
        /// The master's.
        want: i64,
        /// The wait.
        after: Duration,
    },
    /// The change provably did not commit (no leader, refused, or applied and rejected); the
    /// pause was lifted; nothing changed.
    #[error(
        "the change was not committed: {0}; writes resumed on the old master, nothing changed"
    )]
    Commit(String),
    /// The commit timed out and, after `outcome_wait`, it was still unknown whether it will
    /// commit: the old master was fenced (or, failing that, left paused) rather than resumed.
    #[error(
        "outcome unknown: the change making {to} master at epoch {epoch} was not applied here \
         within {after:?} and may still commit ({why}); old master {from}: {old_master}"
    )]
    OutcomeUnknown {
        /// The old master.
        from: NodeId,
        /// The target.
        to: NodeId,
        /// The epoch of the change.
        epoch: Epoch,
        /// The wait for the outcome.
        after: Duration,
        /// Why the commit was in doubt.
        why: String,
        /// What became of the old master.
        old_master: String,
        /// The steps, with their times.
        steps: Vec<String>,
    },
    /// Another change of master committed first; this one can no longer commit.
    #[error(
        "another change committed first: {master} is master at epoch {epoch}; this \
         switchover's change cannot commit; old master {from}: {old_master}"
    )]
    Superseded {
        /// The old master.
        from: NodeId,
        /// The committed master.
        master: String,
        /// The committed epoch.
        epoch: Epoch,
        /// What became of the old master.
        old_master: String,
        /// The steps, with their times.
        steps: Vec<String>,
    },
    /// The change committed, but the old master could be neither fenced nor seen as a replica
    /// in time; its writes were left paused (not lifted).
    #[error(
        "committed: {to} is master at epoch {epoch} (index {index}), but old master {from} \
         {old_master}"
    )]
    FenceFailed {
        /// The old master.
        from: NodeId,
        /// The new master.
        to: NodeId,
        /// The new epoch.
        epoch: Epoch,
        /// Log index of the committed change.
        index: LogIndex,
        /// What became of the old master.
        old_master: String,
        /// The steps, with their times.
        steps: Vec<String>,
    },
}

impl SwitchoverError {
    /// The steps taken, with their times, when the switchover got past the pause and did not
    /// finish cleanly (empty otherwise).
    pub fn steps(&self) -> &[String] {
        match self {
            SwitchoverError::OutcomeUnknown { steps, .. }
            | SwitchoverError::Superseded { steps, .. }
            | SwitchoverError::FenceFailed { steps, .. } => steps,
            _ => &[],
        }
    }
}

struct Clock {
    start: Instant,
    steps: Vec<String>,
}

impl Clock {
    fn step(&mut self, s: impl Into<String>) {
        let line = format!(
            "{:>6.1} ms  {}",
            self.start.elapsed().as_secs_f64() * 1000.0,
            s.into()
        );
        tracing::info!(step = %line, "switchover");
        self.steps.push(line);
    }
}

/// Runs a switchover; `propose` commits a command and answers its log index once applied
/// here, or why not; `committed` reads the Redis authority as applied on this node.
pub async fn run<P, F, C>(
    spec: &SwitchoverSpec,
    master: &dyn RedisControl,
    target: &dyn RedisControl,
    propose: P,
    committed: C,
) -> Result<SwitchoverReport, SwitchoverError>
where
    P: FnOnce(Command) -> F,
    F: Future<Output = Result<LogIndex, ProposeError>>,
    C: Fn() -> RedisAuthority,
{
    let mut clock = Clock {
        start: Instant::now(),
        steps: Vec::new(),
    };
    let redis = |who: NodeId, e: crate::actuator::redis::RedisActionError| {
        SwitchoverError::Redis(format!("{who}: {e}"))
    };
    // 1. The target replicates the master with its link up.
    let t = target.info().await.map_err(|e| redis(spec.to, e))?;
    let follows = t.role == Some(RedisRole::Replica)
        && t.master_host.as_deref() == Some(&spec.from_addr.ip().to_string())
        && t.master_port == Some(spec.from_addr.port())
        && t.master_link_up == Some(true);
    if !follows {
        return Err(SwitchoverError::Precondition(format!(
            "target {} is not a linked replica of master {} ({:?} of {:?}:{:?}, link {:?}); \
             wait until it is, or pick another target",
            spec.to, spec.from, t.role, t.master_host, t.master_port, t.master_link_up
        )));
    }
    clock.step(format!(
        "checked: {} replicates {} with its link up",
        spec.to, spec.from
    ));
    // 2. Pause writes.
    let pause_ms = spec.pause.as_millis() as u64;
    master
        .pause_writes(pause_ms)
        .await
        .map_err(|e| redis(spec.from, e))?;
    let paused_at = Instant::now();
    clock.step(format!(
        "paused writes on {} (at most {pause_ms} ms)",
        spec.from
    ));
    let resume = |why: &'static str| async move {
        if let Err(e) = master.unpause().await {
            tracing::warn!(error = %e, why, "switchover: unpausing the master failed; the pause ends by itself");
        }
    };
    // 3. Wait for the target to catch up.
    let want = match master.info().await {
        Ok(i) => i.master_repl_offset.unwrap_or(0),
        Err(e) => {
            resume("master info failed").await;
            return Err(redis(spec.from, e));
        }
    };
    let deadline = Instant::now() + spec.catch_up;
    let reached = loop {
        let got = match target.info().await {
            Ok(i) => i.slave_repl_offset.unwrap_or(-1),
            Err(e) => {
                resume("target info failed").await;
                return Err(redis(spec.to, e));
            }
        };
        if got >= want {
            break got;
        }
        if Instant::now() >= deadline {
            resume("catch-up timed out").await;
            return Err(SwitchoverError::CatchUp {
                to: spec.to,
                reached: got,
                want,
                after: spec.catch_up,
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    clock.step(format!("{} caught up: offset {reached} >= {want}", spec.to));
    // 4. Commit, holding the writes for as long as the proposal is pending.
    let mut hold = Hold {
        master,
        ms: pause_ms,
        until: paused_at + spec.pause,
        renew_failed: false,
    };
    let epoch = spec.epoch.next();
    let command = Command::SetRedisMaster {
        node: spec.to,
        epoch,
        kind: ChangeKind::Switchover,
        suspect: None,
        reason: format!(
            "switchover asked by {}: {} caught up at offset {reached}",
            spec.by, spec.to
        ),
    };
    let answer = {
        let mut pending = std::pin::pin!(propose(command));
        loop {
            tokio::select! {
                a = &mut pending => break a,
                () = tokio::time::sleep(POLL) => hold.keep(&mut clock).await,
            }
        }
    };
    let index = match answer {
        Ok(index) => {
            clock.step(format!(
                "committed: {} is master at epoch {epoch} (index {index})",
                spec.to
            ));
            index
        }
        Err(e @ (ProposeError::NoLeader | ProposeError::Refused(_))) => {
            // Provably not in the log (or applied and refused): nothing changed.
            resume("commit failed").await;
            return Err(SwitchoverError::Commit(e.to_string()));
        }
        Err(e @ (ProposeError::Timeout { .. } | ProposeError::Stopping)) => {
            // In doubt: the entry may still commit. Resuming writes now could let the old
            // master acknowledge writes that the change then discards.
            clock.step(format!(
                "commit not confirmed ({e}); writes on {} stay paused until the outcome is \
                 known (at most {:?})",
                spec.from, spec.outcome_wait
            ));
            match settle(spec, epoch, &committed, &mut hold, &mut clock).await {
                Settled::Ours(index) => {
                    clock.step(format!(
                        "applied after all: {} is master at epoch {epoch} (index {index})",
                        spec.to
                    ));
                    index
                }
                Settled::Other(a) if a.master == Some(spec.from) => {
                    resume("old master committed again").await;
                    clock.step(format!(
                        "epoch {} committed with {} still master: this change cannot commit; \
                         writes resumed",
                        a.epoch, spec.from
                    ));
                    return Err(SwitchoverError::Superseded {
                        from: spec.from,
                        master: fmt_master(a.master),
                        epoch: a.epoch,
                        old_master: "is the committed master; writes resumed".into(),
                        steps: clock.steps,
                    });
                }
                Settled::Other(a) => {
                    clock.step(format!(
                        "epoch {} committed with {} as master: this change cannot commit",
                        a.epoch,
                        fmt_master(a.master)
                    ));
                    let old_master = match retire(spec, &mut hold, &mut clock).await {
                        Ok(done) => {
                            resume("old master superseded").await;
                            format!("{done}; writes resumed (refused there); its agent follows the committed master")
                        }
                        Err(e) => hold.stuck(&e, spec.demote_wait),
                    };
                    clock.step(format!("{}: {old_master}", spec.from));
                    return Err(SwitchoverError::Superseded {
                        from: spec.from,
                        master: fmt_master(a.master),
                        epoch: a.epoch,
                        old_master,
                        steps: clock.steps,
                    });
                }
                Settled::Unknown => {
                    clock.step(format!(
                        "outcome still unknown after {:?}; fencing {}",
                        spec.outcome_wait, spec.from
                    ));
                    let old_master = match retire(spec, &mut hold, &mut clock).await {
                        Ok(done) => {
                            resume("outcome unknown, old master fenced").await;
                            format!(
                                "{done} (writes refused, never acknowledged); writes resumed \
                                 (refused there); its agent will reconcile it to whatever commits"
                            )
                        }
                        Err(e) => hold.stuck(&e, spec.demote_wait),
                    };
                    clock.step(format!("{}: {old_master}", spec.from));
                    return Err(SwitchoverError::OutcomeUnknown {
                        from: spec.from,
                        to: spec.to,
                        epoch,
                        after: spec.outcome_wait,
                        why: e.to_string(),
                        old_master,
                        steps: clock.steps,
                    });
                }
            }
        }
    };
    // 5. Fence the old master, whatever its agent does next; hold its writes until it is
    //    fenced or a replica.
    if let Err(e) = retire(spec, &mut hold, &mut clock).await {
        let old_master = hold.stuck(&e, spec.demote_wait);
        clock.step(format!("{}: {old_master}", spec.from));
        return Err(SwitchoverError::FenceFailed {
            from: spec.from,
            to: spec.to,
            epoch,
            index,
            old_master,
            steps: clock.steps,
        });
    }
    // 6. Wait for the old master's agent to make it a replica, then lift the pause (the old
    //    master refuses writes either way: fenced, or `READONLY`).
    let deadline = Instant::now() + spec.demote_wait;
    let mut demoted = false;
    while Instant::now() < deadline {
        if let Ok(i) = master.info().await {
            if i.role == Some(RedisRole::Replica) {
                demoted = true;
                break;
            }
        }
        tokio::time::sleep(POLL).await;
    }
    resume("done").await;
    let paused_ms = paused_at.elapsed().as_millis() as u64;
    clock.step(if demoted {
        format!(
            "{} is a replica; writes resumed after {paused_ms} ms",
            spec.from
        )
    } else {
        format!(
            "{} not yet a replica after {:?}; it stays fenced; writes resumed after {paused_ms} ms",
            spec.from, spec.demote_wait
        )
    });
    Ok(SwitchoverReport {
        from: spec.from,
        to: spec.to,
        epoch,
        index,
        offset: reached,
        paused_ms,
        old_master_demoted: demoted,
        steps: clock.steps,
    })
}

/// How often the waits poll (and the pause is checked for renewal).
const POLL: Duration = Duration::from_millis(10);

fn fmt_master(m: Option<NodeId>) -> String {
    m.map_or_else(|| "nobody".into(), |n| n.to_string())
}

/// The old master's writes, held by a bounded `CLIENT PAUSE WRITE` that is re-issued before
/// it lapses (each renewal is bounded too: if this agent dies, the pause still ends).
struct Hold<'a> {
    master: &'a dyn RedisControl,
    ms: u64,
    until: Instant,
    renew_failed: bool,
}

impl Hold<'_> {
    /// Renews the pause once less than half of it is left.
    async fn keep(&mut self, clock: &mut Clock) {
        let now = Instant::now();
        if self.until.saturating_duration_since(now) > Duration::from_millis(self.ms / 2) {
            return;
        }
        match self.master.pause_writes(self.ms).await {
            Ok(()) => {
                self.until = now + Duration::from_millis(self.ms);
                if std::mem::take(&mut self.renew_failed) {
                    clock.step(format!("pause renewed ({} ms)", self.ms));
                }
            }
            Err(e) => {
                if !self.renew_failed {
                    clock.step(format!(
                        "could not renew the pause ({e}); the last one ends in {} ms",
                        self.until.saturating_duration_since(now).as_millis()
                    ));
                }
                self.renew_failed = true;
            }
        }
    }

    /// The old master's state when it could be neither fenced nor seen as a replica.
    fn stuck(&self, error: &str, after: Duration) -> String {
        format!(
            "could not be fenced ({error}) and is not a replica after {after:?}; writes stay \
             paused on it for at most {} ms more (not lifted), then it takes writes again \
             unless its agent fences or demotes it first",
            self.until
                .saturating_duration_since(Instant::now())
                .as_millis()
        )
    }
}

/// The outcome of a commit in doubt, as applied on this node.
enum Settled {
    /// Our change applied, at this index.
    Ours(LogIndex),
    /// Another change took the epoch: ours can no longer commit.
    Other(RedisAuthority),
    /// Neither within `outcome_wait`.
    Unknown,
}

/// Waits (bounded by `outcome_wait`, holding the pause) until the committed epoch reaches
/// ours: the change is applied at `epoch` only once the committed epoch is `epoch - 1`, so
/// from then on its fate is decided.
async fn settle(
    spec: &SwitchoverSpec,
    epoch: Epoch,
    committed: &impl Fn() -> RedisAuthority,
    hold: &mut Hold<'_>,
    clock: &mut Clock,
) -> Settled {
    let deadline = Instant::now() + spec.outcome_wait;
    loop {
        let a = committed();
        if a.epoch == epoch && a.master == Some(spec.to) {
            let index = a.last_change.as_ref().map_or(LogIndex(0), |c| c.index);
            return Settled::Ours(index);
        }
        if a.epoch >= epoch {
            return Settled::Other(a);
        }
        if Instant::now() >= deadline {
            return Settled::Unknown;
        }
        hold.keep(clock).await;
        tokio::time::sleep(POLL).await;
    }
}

/// Fences the old master, retrying while holding its writes, until that succeeds or its agent
/// made it a replica (bounded by `demote_wait`); answers which, or the last error.
async fn retire(
    spec: &SwitchoverSpec,
    hold: &mut Hold<'_>,
    clock: &mut Clock,
) -> Result<&'static str, String> {
    let deadline = Instant::now() + spec.demote_wait;
    let mut failures = 0u32;
    loop {
        let e = match hold
            .master
            .apply(&RedisAction::Fence, spec.epoch.next())
            .await
        {
            Ok(()) => {
                clock.step(format!("fenced {}", spec.from));
                return Ok("fenced");
            }
            Err(e) => e.to_string(),
        };
        failures += 1;
        if failures == 1 {
            clock.step(format!(
                "could not fence {} ({e}); retrying with its writes paused",
                spec.from
            ));
        }
        if let Ok(i) = hold.master.info().await {
            if i.role == Some(RedisRole::Replica) {
                clock.step(format!(
                    "{} is a replica (its agent demoted it) after {failures} failed fence attempts",
                    spec.from
                ));
                return Ok("a replica");
            }
        }
        if Instant::now() >= deadline {
            tracing::warn!(from = %spec.from, failures, error = %e, "switchover: old master neither fenced nor demoted");
            return Err(e);
        }
        hold.keep(clock).await;
        tokio::time::sleep(POLL).await;
    }
}

/// Clears the busy flag when the switchover ends, however it ends.
/// Clears the agent's one-at-a-time flag when a switchover or forced failover ends.
pub(crate) struct Busy(pub(crate) Arc<AtomicBool>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Why a requested switchover did not start, or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The request names something that does not exist (a node without a Redis address).
    #[error("{0}")]
    BadRequest(String),
    /// The cluster is not in a state that allows it (no master, no eligible replica, already
    /// running); the text says what to wait for or change.
    #[error("{0}")]
    Conflict(String),
    /// This agent could not build what it needs (a Redis password file it cannot read).
    #[error("{0}")]
    Internal(String),
    /// It started and failed; see [`SwitchoverError`].
    #[error(transparent)]
    Failed(#[from] SwitchoverError),
    /// A forced failover was refused or did not commit; see
    /// [`FailoverError`](super::failover::FailoverError).
    #[error(transparent)]
    Forced(#[from] super::failover::FailoverError),
}

/// What a switchover or a forced failover starts from: `[redis]`, the status the event loop
/// published, the committed Redis authority and its master; refused (409) without `[redis]`
/// or before a master is recorded.
pub(crate) fn committed_master(
    h: &Handles,
) -> Result<
    (
        &crate::config::RedisSection,
        Arc<crate::status::CoreStatus>,
        RedisAuthority,
        NodeId,
    ),
    RequestError,
> {
    let Some(rcfg) = &h.config.config.redis else {
        return Err(RequestError::Conflict(
            "Redis is not managed by this agent ([redis] is not configured)".into(),
        ));
    };
    let core = h.status.borrow().clone();
    let authority = core.cluster.redis.clone();
    let Some(from) = authority.master else {
        return Err(RequestError::Conflict(
            "no Redis master is recorded yet; wait until the agents have recorded one".into(),
        ));
    };
    Ok((rcfg, core, authority, from))
}

/// Runs a Redis switchover asked of this agent (`POST /v1/redis/switchover`): to `to`, or to
/// the best-ranked replica. Checks the request against the committed state, allows one at a
/// time per agent, builds both servers from the config, and runs [`run`] with proposals made
/// through this agent's event loop.
pub async fn request(
    h: &Arc<Handles>,
    to: Option<NodeId>,
) -> Result<SwitchoverReport, RequestError> {
    use RequestError::{BadRequest, Conflict, Internal};
    let cfg = &h.config.config;
    let (rcfg, core, authority, from) = committed_master(h)?;
    let addr_of = |n: NodeId| h.config.members.iter().find(|m| m.id == n)?.redis_addr;
    let to = match to {
        Some(t) if t == from => return Err(Conflict(format!("{t} is already the Redis master"))),
        Some(t) if addr_of(t).is_none() => {
            return Err(BadRequest(format!(
                "{t} is not a member with a Redis address (peers[].redis_addr)"
            )))
        }
        Some(t) => t,
        None => {
            let now = h.liveness.mono_ms();
            let (seen, ages) = match core.health.lock() {
                Ok(hs) => (hs.all(now), hs.report_ages(now)),
                Err(_) => Default::default(),
            };
            let members: Vec<NodeId> = h.config.members.iter().map(|m| m.id).collect();
            let ranked = candidates(&RedisInputs {
                members: &members,
                authority: &authority,
                seen: &seen,
                report_age_ms: &ages,
                since_change_ms: None,
                suspect_embargo_ms: None,
                suspect_reconciled: false,
                suspect_applied_by_all: false,
                maintenance: false,
                in_flight: false,
                settings: cfg.failover.settings(),
            });
            match ranked.iter().find(|c| c.rank == Some(1)) {
                Some(c) => c.node,
                None => {
                    let why: Vec<String> = ranked
                        .iter()
                        .map(|c| format!("{} {}", c.node, c.reason))
                        .collect();
                    return Err(Conflict(format!(
                        "no eligible replica to switch over to: {}",
                        why.join("; ")
                    )));
                }
            }
        }
    };
    let (Some(from_addr), Some(to_addr)) = (addr_of(from), addr_of(to)) else {
        return Err(Conflict(format!(
            "{from} or {to} has no Redis address in peers[].redis_addr"
        )));
    };
    if h.switchover_busy.swap(true, Ordering::SeqCst) {
        return Err(Conflict(
            "a switchover is already running through this agent; wait for it to finish".into(),
        ));
    }
    let _busy = Busy(h.switchover_busy.clone());
    let fo = &cfg.failover;
    let server = |addr| RedisServer::from_config(addr, rcfg, fo);
    let (master, target) = match (server(from_addr), server(to_addr)) {
        (Ok(m), Ok(t)) => (m, t),
        (Err(e), _) | (_, Err(e)) => return Err(Internal(e.to_string())),
    };
    let catch_up = Duration::from_secs(2);
    let demote_wait = Duration::from_secs(2);
    let commit_wait = cfg.api.proposal_timeout;
    let spec = SwitchoverSpec {
        from,
        to,
        epoch: authority.epoch,
        from_addr,
        pause: catch_up + commit_wait + demote_wait + Duration::from_secs(1),
        catch_up,
        demote_wait,
        outcome_wait: commit_wait,
        by: format!("api@{}", h.config.node_id()),
    };
    super::pre_hook(
        h,
        "redis",
        format!("redis master switchover {from} -> {to} asked through the API"),
        authority.epoch.next().0,
        to,
        from,
    )
    .await
    .map_err(Conflict)?;
    let handles = h.clone();
    let propose = |command: Command| {
        let handles = handles.clone();
        async move {
            let applied = handles.propose(command).await?;
            match applied.outcome {
                // Applied and refused by the state machine: it changed nothing.
                Outcome::Rejected(why) => Err(ProposeError::Refused(format!("rejected: {why}"))),
                _ => Ok(applied.index),
            }
        }
    };
    let status = h.status.clone();
    let committed = move || status.borrow().cluster.redis.clone();
    let result = run(&spec, &master, &target, propose, committed).await;
    if let Err(e) = &result {
        tracing::warn!(%from, %to, error = %e, "switchover failed");
    }
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuator::redis::SimRedis;
    use crate::probe::redis_info::RedisInfo;

    fn spec() -> SwitchoverSpec {
        SwitchoverSpec {
            from: NodeId(1),
            to: NodeId(2),
            epoch: Epoch(4),
            from_addr: "10.0.0.1:6379".parse().expect("addr"),
            pause: Duration::from_secs(2),
            catch_up: Duration::from_millis(50),
            demote_wait: Duration::from_millis(50),
            outcome_wait: Duration::from_millis(200),
            by: "test".into(),
        }
    }

    fn servers(target_offset: i64) -> (SimRedis, SimRedis) {
        let master = SimRedis::new(RedisInfo {
            role: Some(RedisRole::Master),
            master_repl_offset: Some(100),
            ..RedisInfo::default()
        });
        let target = SimRedis::new(RedisInfo {
            role: Some(RedisRole::Replica),
            master_host: Some("10.0.0.1".into()),
            master_port: Some(6379),
            master_link_up: Some(true),
            slave_repl_offset: Some(target_offset),
            ..RedisInfo::default()
        });
        (master, target)
    }

    /// The committed authority before the switchover: n1 master at epoch 4.
    fn before() -> RedisAuthority {
        RedisAuthority {
            master: Some(NodeId(1)),
            epoch: Epoch(4),
            ..RedisAuthority::default()
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn caught_up_target_is_committed_and_old_master_fenced_and_unpaused() {
        let (master, target) = servers(100);
        let mut proposed = None;
        let r = rt().block_on(run(
            &spec(),
            &master,
            &target,
            |c| {
                proposed = Some(c);
                async { Ok(LogIndex(42)) }
            },
            before,
        ));
        let r = r.expect("switchover");
        assert_eq!(
            (r.to, r.epoch, r.index),
            (NodeId(2), Epoch(5), LogIndex(42))
        );
        assert!(matches!(
            proposed,
            Some(Command::SetRedisMaster {
                node: NodeId(2),
                epoch: Epoch(5),
                kind: ChangeKind::Switchover,
                ..
            })
        ));
        let m = master.snapshot();
        assert!(m.fenced && !m.paused, "{m:?}");
        // Nobody demoted the sim master: reported, not hidden.
        assert!(!r.old_master_demoted);
    }

    #[test]
    fn lagging_target_changes_nothing_and_resumes_writes() {
        let (master, target) = servers(90);
        let mut called = false;
        let r = rt().block_on(run(
            &spec(),
            &master,
            &target,
            |_| {
                called = true;
                async { Ok(LogIndex(1)) }
            },
            before,
        ));
        let e = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.contains("reached offset 90") && e.contains("at 100"),
            "{e}"
        );
        assert!(!called);
        let m = master.snapshot();
        assert!(!m.paused && !m.fenced, "{m:?}");
    }

    #[test]
    fn failed_commit_resumes_writes() {
        let (master, target) = servers(100);
        let r = rt().block_on(run(
            &spec(),
            &master,
            &target,
            |_| async { Err(ProposeError::NoLeader) },
            before,
        ));
        assert!(matches!(r, Err(SwitchoverError::Commit(_))));
        assert!(!master.snapshot().paused);
    }

    #[test]
    fn target_not_following_is_refused_before_any_pause() {
        let (master, target) = servers(100);
        target.with(|s| s.info.master_link_up = Some(false));
        let r = rt().block_on(run(
            &spec(),
            &master,
            &target,
            |_| async { Ok(LogIndex(1)) },
            before,
        ));
        assert!(matches!(r, Err(SwitchoverError::Precondition(_))));
        assert!(master.snapshot().log.is_empty());
    }

    /// The old master as its clients see it: wraps a [`SimRedis`], keeps the pause's deadline
    /// (the sim's `paused` flag has none), can fail `Fence`, can be demoted by its "agent" at
    /// a given time, and records every moment it could have acknowledged a write that the
    /// switchover then loses (a master, not fenced, with no pause in force).
    struct OldMaster {
        sim: SimRedis,
        start: Instant,
        s: std::sync::Mutex<Watch>,
    }

    #[derive(Default)]
    struct Watch {
        /// Pause in force until then (`None`: never paused, or unpaused).
        pause_until: Option<Instant>,
        /// Whether writes were paused at least once (before that, writes are legitimate).
        paused_once: bool,
        /// `Fence` attempts still to fail.
        fence_failures: u32,
        /// When its agent turns it into a replica.
        demote_at: Option<Duration>,
        /// Calls, with their time since the start.
        calls: Vec<(Duration, &'static str)>,
        /// When it could have acknowledged a write the switchover then lost.
        writable: Vec<String>,
    }

    impl OldMaster {
        fn new(sim: SimRedis, fence_failures: u32, demote_at: Option<Duration>) -> Self {
            OldMaster {
                sim,
                start: Instant::now(),
                s: std::sync::Mutex::new(Watch {
                    fence_failures,
                    demote_at,
                    ..Watch::default()
                }),
            }
        }

        /// Records the call after checking the state it found.
        fn call(&self, what: &'static str) {
            let now = Instant::now();
            let t = now - self.start;
            let st = self.sim.snapshot();
            if let Ok(mut w) = self.s.lock() {
                let paused = w.pause_until.is_some_and(|u| now < u);
                if w.paused_once && st.info.role == Some(RedisRole::Master) && !st.fenced && !paused
                {
                    let line = format!("{t:?}: writable master (unfenced, not paused) at {what}");
                    w.writable.push(line);
                }
                if w.demote_at.is_some_and(|d| t >= d) {
                    self.sim.with(|s| s.info.role = Some(RedisRole::Replica));
                }
                w.calls.push((t, what));
            }
        }

        fn watch<R>(&self, f: impl FnOnce(&mut Watch) -> R) -> R {
            let mut w = self.s.lock().expect("watch");
            f(&mut w)
        }

        fn first(&self, what: &str) -> Option<Duration> {
            self.watch(|w| w.calls.iter().find(|c| c.1 == what).map(|c| c.0))
        }
    }

    impl RedisControl for OldMaster {
        fn apply<'a>(
            &'a self,
            action: &'a RedisAction,
            epoch: Epoch,
        ) -> futures::future::BoxFuture<'a, Result<(), crate::actuator::redis::RedisActionError>>
        {
            self.call(if matches!(action, RedisAction::Fence) {
                "fence"
            } else {
                "apply"
            });
            if matches!(action, RedisAction::Fence)
                && self.watch(|w| {
                    let fail = w.fence_failures > 0;
                    w.fence_failures = w.fence_failures.saturating_sub(1);
                    fail
                })
            {
                return Box::pin(async {
                    Err(crate::actuator::redis::RedisActionError {
                        addr: "old master".into(),
                        message: "CONFIG SET timed out".into(),
                        refused: false,
                    })
                });
            }
            self.sim.apply(action, epoch)
        }
        fn is_fenced(
            &self,
        ) -> futures::future::BoxFuture<'_, Result<bool, crate::actuator::redis::RedisActionError>>
        {
            self.call("is_fenced");
            self.sim.is_fenced()
        }
        fn info(
            &self,
        ) -> futures::future::BoxFuture<
            '_,
            Result<RedisInfo, crate::actuator::redis::RedisActionError>,
        > {
            self.call("info");
            self.sim.info()
        }
        fn pause_writes(
            &self,
            ms: u64,
        ) -> futures::future::BoxFuture<'_, Result<(), crate::actuator::redis::RedisActionError>>
        {
            self.call("pause");
            self.watch(|w| {
                w.pause_until = Some(Instant::now() + Duration::from_millis(ms));
                w.paused_once = true;
            });
            self.sim.pause_writes(ms)
        }
        fn unpause(
            &self,
        ) -> futures::future::BoxFuture<'_, Result<(), crate::actuator::redis::RedisActionError>>
        {
            self.call("unpause");
            self.watch(|w| w.pause_until = None);
            self.sim.unpause()
        }
    }

    /// A short pause, so that holding writes longer than it needs renewing (renewed once
    /// half of it is left: 50 ms of slack for a slow test machine).
    fn short_pause() -> SwitchoverSpec {
        SwitchoverSpec {
            pause: Duration::from_millis(100),
            ..spec()
        }
    }

    fn timed_out() -> ProposeError {
        ProposeError::Timeout {
            after: Duration::from_millis(5),
            leader: "n3".into(),
        }
    }

    /// The authority once our change applied: n2 master at epoch 5, index 42.
    fn after_switchover() -> RedisAuthority {
        RedisAuthority {
            master: Some(NodeId(2)),
            epoch: Epoch(5),
            suspect: None,
            last_change: Some(crate::cluster::MasterChange {
                kind: ChangeKind::Switchover,
                from: Some(NodeId(1)),
                to: NodeId(2),
                epoch: Epoch(5),
                index: LogIndex(42),
                term: crate::ids::Term(3),
                at: crate::ids::UnixMillis(0),
                reason: "switchover".into(),
            }),
        }
    }

    #[test]
    fn commit_that_times_out_then_applies_keeps_writes_held_and_completes() {
        let (sim, target) = servers(100);
        let master = OldMaster::new(sim, 0, None);
        let t0 = Instant::now();
        let applies_after = Duration::from_millis(250);
        let committed = move || {
            if t0.elapsed() < applies_after {
                before()
            } else {
                after_switchover()
            }
        };
        let spec = SwitchoverSpec {
            outcome_wait: Duration::from_secs(2),
            ..short_pause()
        };
        let r = rt().block_on(run(
            &spec,
            &master,
            &target,
            |_| async { Err(timed_out()) },
            committed,
        ));
        let writable = master.watch(|w| w.writable.clone());
        assert!(writable.is_empty(), "{writable:?}");
        let unpaused = master.first("unpause");
        let fenced = master.first("fence");
        assert!(
            unpaused.is_some_and(|u| u >= applies_after && fenced.is_some_and(|f| f <= u)),
            "writes resumed at {unpaused:?}, fenced at {fenced:?}, applied at {applies_after:?}"
        );
        let r = r.expect("the change applied after the timeout: the switchover completes");
        assert_eq!(
            (r.to, r.epoch, r.index),
            (NodeId(2), Epoch(5), LogIndex(42))
        );
        assert!(
            r.steps.iter().any(|s| s.contains("may still commit")),
            "{:?}",
            r.steps
        );
        let m = master.sim.snapshot();
        assert!(m.fenced && !m.paused, "{m:?}");
    }

    #[test]
    fn commit_that_times_out_and_never_applies_leaves_old_master_fenced() {
        let (sim, target) = servers(100);
        let master = OldMaster::new(sim, 0, None);
        let spec = SwitchoverSpec {
            outcome_wait: Duration::from_millis(250),
            ..short_pause()
        };
        let r = rt().block_on(run(
            &spec,
            &master,
            &target,
            |_| async { Err(timed_out()) },
            before,
        ));
        let e = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("outcome unknown") && e.contains("fenced"), "{e}");
        // Held, then fenced: never open to a write the pending change would lose.
        master.call("end");
        let writable = master.watch(|w| w.writable.clone());
        assert!(writable.is_empty(), "{writable:?}");
        assert!(master.sim.snapshot().fenced);
        assert!(
            master
                .first("unpause")
                .is_none_or(|u| master.first("fence").is_some_and(|f| f <= u)),
            "{:?}",
            master.watch(|w| w.calls.clone())
        );
    }

    #[test]
    fn failed_fence_never_resumes_writes_on_an_unfenced_master() {
        // (fence failures, the old master's agent demotes it at, the switchover succeeds)
        let cases = [
            (2, None, true),
            (u32::MAX, Some(Duration::from_millis(200)), true),
            (u32::MAX, None, false),
        ];
        for (failures, demote_at, ok) in cases {
            let (sim, target) = servers(100);
            let master = OldMaster::new(sim, failures, demote_at);
            let spec = SwitchoverSpec {
                demote_wait: Duration::from_millis(350),
                ..short_pause()
            };
            let r = rt().block_on(run(
                &spec,
                &master,
                &target,
                |_| async { Ok(LogIndex(42)) },
                after_switchover,
            ));
            let case = format!("{failures} fence failures, demoted at {demote_at:?}");
            master.call("end");
            let writable = master.watch(|w| w.writable.clone());
            assert!(writable.is_empty(), "{case}: {writable:?}");
            match r {
                Ok(r) => {
                    assert!(ok, "{case}: {:?}", r.steps);
                    assert!(!master.sim.snapshot().paused, "{case}");
                }
                Err(e) => {
                    assert!(!ok, "{case}: {e}");
                    let e = e.to_string();
                    assert!(
                        e.contains("could not be fenced") && e.contains("paused"),
                        "{case}: {e}"
                    );
                    // Still held at the end: never unpaused.
                    assert!(master.first("unpause").is_none(), "{case}");
                    assert!(master.sim.snapshot().paused, "{case}");
                }
            }
        }
    }

    #[test]
    fn another_master_committed_first_fences_the_old_master() {
        let (sim, target) = servers(100);
        let master = OldMaster::new(sim, 0, None);
        let other = || RedisAuthority {
            master: Some(NodeId(3)),
            epoch: Epoch(5),
            ..RedisAuthority::default()
        };
        let r = rt().block_on(run(
            &short_pause(),
            &master,
            &target,
            |_| async { Err(timed_out()) },
            other,
        ));
        let e = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("n3") && e.contains("epoch 5"), "{e}");
        master.call("end");
        let writable = master.watch(|w| w.writable.clone());
        assert!(writable.is_empty(), "{writable:?}");
        assert!(master.sim.snapshot().fenced);
    }
}
