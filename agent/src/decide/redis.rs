//! The Redis failover decision: one pure function from [`RedisInputs`] to a [`RedisPlan`].
//!
//! Runs on the Raft leader every control-loop cycle. Everything it looks at comes in as
//! values: the committed authority (master, epoch, suspicion), every agent's latest
//! observations of every Redis with their ages, how fresh each agent's reports are, and a few
//! durations the wiring measures on its own monotonic clock.
//!
//! # Detection
//! - Each agent's probes turn single checks into a subjective verdict (rise/fall). A refused
//!   connection counts as down at once (no process listens: strong evidence); a timeout only
//!   after `fall` consecutive failures (weak evidence: a busy or paused server).
//! - The master is *objectively down* only when a majority of agents with fresh reports see it
//!   down (`down` or `unreachable`), and the replicas confirm it: no live replica reports its
//!   link to the master up (orchestrator's holistic rule). A link counts as lost when
//!   `master_link_status` is down or it carried nothing for `link_stale_after`: the replica's
//!   own agent measures how long its replication offset has not moved (`link_quiet_ms`, to
//!   the probe interval; the master's pings move it every `repl-ping-replica-period`), since
//!   Redis's `master_last_io_seconds_ago` counts whole seconds.
//!   Down as seen from one node only is reported in the verdict and not acted on.
//!
//! # Three paths
//! All start by committing `SuspectRedisMaster`: every HAProxy takes the master out of
//! service, every agent that applied it stops renewing the suspect's lease (its pongs stop),
//! and the suspect's own agent fences its Redis (as without a lease).
//! - **Fast path**: the master's own agent is alive (fresh report) and sees its local Redis
//!   down. Once that agent reports the suspicion carried out (`reconciled_index`: its Redis
//!   fenced, or unreachable and then not trusted until a lease grant it can no longer get), a
//!   replica is promoted: one round trip after the suspicion, no lease wait. Promoting on the
//!   evidence alone would not be safe: the dead master can restart, as master, between the
//!   decision and the commit, and its agent would still route to it.
//! - **Silent path**: the master's agent is silent (no fresh report: partition, VM down). The
//!   old master might still be writable by clients on its side. An agent whose lease runs out
//!   fences its own Redis and routes nothing to it; an agent that is itself dead cannot fence,
//!   then Redis fences itself: Triad keeps `min-replicas-to-write 1` with
//!   `min-replicas-max-lag` at most the lease on every server, so a master no replica
//!   acknowledged for that long refuses writes. The leader promotes only once the suspect's
//!   lease was last renewed `lease + clock_margin` ago ([`RedisInputs::suspect_embargo_ms`]),
//!   so the old master is fenced before a new one exists. When was it last renewed: at the
//!   last pong another agent gave it, as each agent's report dates it once that agent applied
//!   the suspicion (a cut-off master's peers stopped answering at the cut), else when a
//!   quorum applied the suspicion (`decide::timeline`).
//!
//! - **Hung path**: the master's own agent is alive and has had no answer from its local
//!   Redis for `hung_after` (one unbroken run of timed-out checks on the same host, reported as
//!   `unanswered_ms`; see `probe::runner`). The process is there and does not serve: stopped
//!   (SIGSTOP), swapping, or stuck. No network lies between that agent and its Redis, so this
//!   is stronger evidence than a remote timeout, and the replicas' links do not hold it back: a
//!   stopped process keeps its connections open, and a link goes stale only after
//!   `link_stale_after` (once 3 s, counted by Redis in whole seconds: what made a hung master
//!   take ~5 s). Once
//!   every member's agent is fresh and reports the suspicion applied (each took the suspect
//!   out of its HAProxy, and the suspect's own agent answers 503 to HAProxy's check and will
//!   fence the Redis the moment it answers again), a replica is promoted without the lease
//!   wait. If the old master resumes, no HAProxy routes to it, and its replicas have left it
//!   (they detach on the suspicion), so `min-replicas-to-write` refuses writes once its count
//!   refreshes. With an agent silent the silent path applies instead.
//!   Why `hung_after` (750 ms by default) is safe against a busy master: a run of timed-out
//!   checks spans at most the time the server was blocked (each check waits for its own
//!   answer, and the next starts only when one gave up), so a 500 ms slow command or fork shows
//!   at most 500 ms; the default leaves 1.5 times that (the lab test
//!   `slow_redis_master_is_not_failed_over` blocks the master 500 ms, three times). A quorum
//!   must still see the master down (`fall` failed checks each), as for any failover. Why not
//!   longer: the time to restore writes is `hung_after` plus up to one probe interval (the
//!   first timed-out check starts up to an interval after the hang), plus the decision.
//!
//! # Candidates
//! Each other node's Redis, as its own agent sees it: excluded when its agent is not fresh,
//! when it is not up, when its `replica-priority` is 0, when its replication offset is unknown
//! or negative (a bug or a hostile report: offsets count bytes from 0), or when it lags the best
//! candidate by more than `max_lag_bytes` (computed with saturating arithmetic); the rest rank by priority (lower first, as in Redis), then
//! replication offset (higher first), then node id. The ranking with every candidate's reason
//! is part of the plan and shown in the status API.
//!
//! # Anti-flapping and operator control
//! After an automatic failover, no new automatic failover for `hold_down` unless a majority of
//! fresh reports carry strong evidence (connection refused) that the new master is dead. A
//! planned switchover does not arm the hold-down: the operator chose that master. In
//! maintenance nothing is proposed (fencing still applies on every agent).
//!
//! Invariants: a proposal always names `epoch = committed + 1`, and an automatic promotion
//! names the suspicion it relied on, so a decision taken on a stale view (a cleared or replaced
//! suspicion, an older epoch) is rejected when it applies; nothing is proposed while an
//! earlier proposal is in flight.
//!
//! Caveats: sizes other than three members work arithmetically but are only tested with three.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::cluster::{ChangeKind, Command, RedisAuthority};
use crate::health::Seen;
use crate::ids::NodeId;
use crate::observation::{FailureKind, Service};

/// Tunables of the decision (from `[failover]` in the config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailoverSettings {
    /// A report older than this does not count (and its agent counts as silent).
    pub freshness_ms: u64,
    /// How long an agent's lease lasts without renewal.
    pub lease_ms: u64,
    /// Extra wait covering clock-rate drift and delivery delays.
    pub clock_margin_ms: u64,
    /// No automatic failover within this long after a change, unless evidence is strong.
    pub hold_down_ms: u64,
    /// A candidate lagging the best one by more bytes is excluded.
    pub max_lag_bytes: i64,
    /// A replica whose master sent nothing for this long counts as having lost it.
    pub link_stale_after_ms: u64,
    /// A master its own agent has had no answer from for this long is hung (0: never).
    pub hung_after_ms: u64,
}

/// Everything the Redis decision looks at.
#[derive(Clone, Debug)]
pub struct RedisInputs<'a> {
    /// Cluster members, sorted.
    pub members: &'a [NodeId],
    /// The committed authority.
    pub authority: &'a RedisAuthority,
    /// Every observer's latest view of every Redis, aged (from the health store).
    pub seen: &'a [Seen],
    /// Age of each agent's latest report; absent when never heard from.
    pub report_age_ms: &'a BTreeMap<NodeId, u64>,
    /// Time since this leader saw the last change of master applied (or since it started,
    /// whichever is shorter); `None` when there was no change.
    pub since_change_ms: Option<u64>,
    /// Time since the suspect's lease was last renewed, at least (silent path): since every
    /// other agent's last pong to it, or since a quorum applied the suspicion, whichever is
    /// known and longer (`decide::timeline`).
    pub suspect_embargo_ms: Option<u64>,
    /// Whether the suspected master's own agent reported the suspicion as carried out (its
    /// Redis fenced or unreachable): the fast path.
    pub suspect_reconciled: bool,
    /// Whether every member's agent is fresh and reported the current suspicion applied (each
    /// has taken the suspect out of its HAProxy): the hung path.
    pub suspect_applied_by_all: bool,
    /// Whether maintenance mode is on.
    pub maintenance: bool,
    /// Whether an earlier Redis proposal is still in flight.
    pub in_flight: bool,
    /// Tunables.
    pub settings: FailoverSettings,
}

/// A candidate for promotion and why it is or is not eligible.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// The node.
    pub node: NodeId,
    /// Rank among eligible candidates (1 = best); `None` when excluded.
    pub rank: Option<u32>,
    /// Why excluded, or a summary of why it ranks where it does.
    pub reason: String,
    /// Its replication offset, when known.
    pub offset: Option<i64>,
    /// Its `replica-priority`, when known.
    pub priority: Option<i64>,
}

/// The decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RedisPlan {
    /// One line for operators.
    pub verdict: String,
    /// Commands to propose.
    #[serde(skip)]
    pub proposals: Vec<Command>,
    /// The candidate ranking, when a failover was considered.
    pub candidates: Vec<Candidate>,
}

fn plan(verdict: impl Into<String>) -> RedisPlan {
    RedisPlan {
        verdict: verdict.into(),
        proposals: vec![],
        candidates: vec![],
    }
}

impl RedisInputs<'_> {
    fn quorum(&self) -> usize {
        self.members.len() / 2 + 1
    }

    fn is_fresh(&self, observer: NodeId) -> bool {
        self.report_age_ms
            .get(&observer)
            .is_some_and(|a| *a <= self.settings.freshness_ms)
    }

    /// Fresh views of `subject`'s Redis, one per observer.
    fn views_of(&self, subject: NodeId) -> Vec<&Seen> {
        self.seen
            .iter()
            .filter(|s| fresh_view_of(s, subject, self.report_age_ms, self.settings.freshness_ms))
            .collect()
    }

    /// `subject`'s Redis as its own agent sees it, when fresh.
    fn own_view(&self, subject: NodeId) -> Option<&Seen> {
        self.views_of(subject)
            .into_iter()
            .find(|s| s.observer == subject)
    }
}

/// Whether `s` is a view of `subject`'s Redis from an agent whose report, and the view itself,
/// are at most `freshness_ms` old.
fn fresh_view_of(
    s: &Seen,
    subject: NodeId,
    report_age_ms: &BTreeMap<NodeId, u64>,
    freshness_ms: u64,
) -> bool {
    s.observation.id.service == Service::Redis
        && s.observation.id.subject == subject
        && report_age_ms
            .get(&s.observer)
            .is_some_and(|a| *a <= freshness_ms)
        && s.age_ms <= freshness_ms
}

/// How many agents with fresh reports see `subject`'s Redis down, by the decision's own rule
/// (after rise/fall, or refused on the last check). The operator's forced failover asks the
/// same question (`switchover::failover`).
pub fn down_count(
    seen: &[Seen],
    report_age_ms: &BTreeMap<NodeId, u64>,
    subject: NodeId,
    freshness_ms: u64,
) -> usize {
    seen.iter()
        .filter(|s| fresh_view_of(s, subject, report_age_ms, freshness_ms) && sees_down(s))
        .count()
}

/// Whether a view counts as "down": after rise/fall, or refused on the last check.
fn sees_down(s: &Seen) -> bool {
    !s.observation.status.is_up() || s.observation.last.failure == Some(FailureKind::Refused)
}

fn int(s: &Seen, key: &str) -> Option<i64> {
    s.observation.last.details.get(key).and_then(|v| v.as_i64())
}

fn text<'a>(s: &'a Seen, key: &str) -> Option<&'a str> {
    s.observation.last.details.get(key).and_then(|v| v.as_str())
}

/// Decides.
pub fn decide(i: &RedisInputs<'_>) -> RedisPlan {
    if i.in_flight {
        return plan("waiting: a Redis decision is being committed");
    }
    let Some(master) = i.authority.master else {
        return initial(i);
    };
    let epoch = i.authority.epoch;
    if i.maintenance {
        return plan(format!(
            "no action (maintenance): redis master {master}, epoch {epoch}"
        ));
    }
    let views = i.views_of(master);
    // Down after rise/fall, or refused on the last check: nothing listens, which a timeout
    // does not prove, so a refusal counts at once.
    let down: Vec<&&Seen> = views.iter().filter(|s| sees_down(s)).collect();
    let refused = down
        .iter()
        .filter(|s| s.observation.last.failure == Some(FailureKind::Refused))
        .count();
    let quorum = i.quorum();
    let n = i.members.len();
    if down.len() < quorum {
        // Healthy (as far as a majority can tell). Withdraw a suspicion that no longer holds.
        if let Some(s) = &i.authority.suspect {
            let up = views
                .iter()
                .filter(|v| v.observation.status.is_up())
                .count();
            if up >= quorum && i.is_fresh(master) {
                return RedisPlan {
                    verdict: format!(
                        "clear suspicion: master {master} healthy on {up}/{n} agents again"
                    ),
                    proposals: vec![Command::ClearRedisSuspect {
                        node: s.node,
                        epoch: s.epoch,
                        reason: format!("healthy on {up}/{n} agents"),
                    }],
                    candidates: vec![],
                };
            }
        }
        if down.is_empty() {
            return plan(format!(
                "no action: redis master {master} healthy, epoch {epoch}"
            ));
        }
        let who: Vec<String> = down.iter().map(|s| s.observer.to_string()).collect();
        return plan(format!(
            "no action: master {master} down as seen from {} only ({}/{n}), not a majority",
            who.join(", "),
            down.len()
        ));
    }
    // A majority sees it down. Hung on its own host? Then the replicas' links prove nothing:
    // a stopped process keeps its connections open, and the replicas date its last I/O in
    // whole seconds.
    let hung = unanswered_on_own_host(i, master).filter(|&ms| {
        i.settings.hung_after_ms > 0 && ms >= i.settings.hung_after_ms && i.is_fresh(master)
    });
    // Otherwise, do the replicas confirm?
    if hung.is_none() {
        if let Some(holdout) = replica_with_link_up(i, master) {
            return plan(format!(
                "no action: master {master} down on {}/{n} agents but replica {holdout} still \
                 has its link to it up",
                down.len()
            ));
        }
    }
    let evidence = match hung {
        _ if refused > 0 => format!("{master} refused connections on {refused}/{n} agents"),
        Some(ms) => format!(
            "{master} unreachable from {}/{n} agents and hung on its own host (no answer for \
             {:.1}s)",
            down.len(),
            ms as f64 / 1000.0
        ),
        None => format!("{master} unreachable from {}/{n} agents", down.len()),
    };
    let strong = refused >= quorum;
    // Hold-down guards against flapping between automatic failovers; a planned switchover or
    // the initial recording is not a failover and arms nothing.
    let after_failover = i
        .authority
        .last_change
        .as_ref()
        .is_none_or(|c| c.kind == ChangeKind::Automatic);
    if let Some(age) = i.since_change_ms.filter(|_| after_failover) {
        if age < i.settings.hold_down_ms && !strong {
            return plan(format!(
                "held: {evidence}, but the last change of master was {:.1}s ago (hold-down \
                 {:.0}s; only refused connections on a majority override it)",
                age as f64 / 1000.0,
                i.settings.hold_down_ms as f64 / 1000.0
            ));
        }
    }
    let own = i.own_view(master);
    let fast = i.is_fresh(master) && own.is_some_and(sees_down);
    let candidates = rank(i, master);
    let best = candidates.iter().find(|c| c.rank == Some(1)).cloned();
    // Both paths commit the suspicion first: every HAProxy takes the master out of service,
    // its peers stop renewing its lease, and its own agent fences it.
    let wait = i
        .settings
        .lease_ms
        .saturating_add(i.settings.clock_margin_ms);
    let path = match (&i.authority.suspect, i.suspect_embargo_ms) {
        (None, _) => {
            let how = if hung.is_some() {
                "promoting once every agent has taken it out of its HAProxy".to_string()
            } else if fast {
                "its own agent sees it down; promoting once that agent has fenced it".to_string()
            } else {
                format!(
                    "{}; promoting only after its lease has run out ({:.1}s)",
                    if i.is_fresh(master) {
                        "while its own agent still sees it up"
                    } else {
                        "its agent silent"
                    },
                    wait as f64 / 1000.0
                )
            };
            return RedisPlan {
                verdict: format!("suspect {master}: {evidence}, {how}"),
                proposals: vec![Command::SuspectRedisMaster {
                    node: master,
                    epoch,
                    reason: evidence,
                }],
                candidates,
            };
        }
        (Some(_), _) if i.suspect_reconciled => Path::Fenced,
        (Some(_), _) if hung.is_some() && i.suspect_applied_by_all => Path::Hung,
        (Some(_), None) => {
            return RedisPlan {
                verdict: format!(
                    "waiting: {master} suspected; waiting for its agent to fence it or a \
                     quorum to apply the suspicion"
                ),
                proposals: vec![],
                candidates,
            };
        }
        (Some(_), Some(t)) if t < wait => {
            return RedisPlan {
                verdict: format!(
                    "waiting: {evidence}; its agent has not confirmed the fence, its lease runs \
                     out in {:.1}s",
                    (wait - t) as f64 / 1000.0
                ),
                proposals: vec![],
                candidates,
            };
        }
        (Some(_), Some(_)) => Path::LeaseExpired,
    };
    let Some(best) = best else {
        let reasons: Vec<String> = candidates
            .iter()
            .map(|c| format!("{} {}", c.node, c.reason))
            .collect();
        return RedisPlan {
            verdict: format!(
                "cannot fail over: {evidence}, but no replica is eligible ({})",
                reasons.join("; ")
            ),
            proposals: vec![],
            candidates,
        };
    };
    let mut verdict = format!("promote {} (epoch {}): {evidence}", best.node, epoch.next());
    let _ = write!(
        verdict,
        "{}",
        match path {
            Path::Fenced => ", fenced by its agent",
            Path::Hung => ", out of every HAProxy",
            Path::LeaseExpired => ", lease expired",
        }
    );
    let ranked: Vec<String> = candidates
        .iter()
        .filter(|c| c.rank.is_some())
        .map(|c| format!("{} {}", c.node, c.reason))
        .collect();
    let _ = write!(verdict, "; ranked {}", ranked.join(" > "));
    for c in candidates.iter().filter(|c| c.rank.is_none()) {
        let _ = write!(verdict, "; {} {}", c.node, c.reason);
    }
    RedisPlan {
        proposals: vec![Command::SetRedisMaster {
            node: best.node,
            epoch: epoch.next(),
            kind: ChangeKind::Automatic,
            reason: verdict.clone(),
            suspect: i.authority.suspect.as_ref().map(|s| s.index),
        }],
        verdict,
        candidates,
    }
}

/// Why a suspected master may be replaced now.
enum Path {
    /// Its own agent fenced it (or found no process): the fast path.
    Fenced,
    /// Hung on its own host, and every agent has taken it out of its HAProxy: the hung path.
    Hung,
    /// Its lease has run out on a quorum: the silent path.
    LeaseExpired,
}

/// How long `master`'s own agent has had no answer from it, when that agent's fresh view of
/// it fails by timeout (the process is there and does not serve).
fn unanswered_on_own_host(i: &RedisInputs<'_>, master: NodeId) -> Option<u64> {
    let own = i.own_view(master)?;
    if own.observation.last.failure != Some(FailureKind::Timeout) {
        return None;
    }
    int(own, "unanswered_ms").and_then(|v| u64::try_from(v).ok())
}

/// The candidate ranking for replacing the committed master (empty without one); used by the
/// planned switchover to pick a target when the operator names none.
pub fn candidates(i: &RedisInputs<'_>) -> Vec<Candidate> {
    i.authority.master.map(|m| rank(i, m)).unwrap_or_default()
}

/// How long ago, at the earliest, an observer's checks of `subject`'s Redis started failing,
/// as far as the reports tell: the report's age plus one probe `interval_ms` for every failed
/// check before the last one. `None` when no view of it is failing. An estimate within one
/// probe interval; used to measure a failover from the failure rather than from the decision.
pub fn first_failure_age_ms(seen: &[Seen], subject: NodeId, interval_ms: u64) -> Option<u64> {
    seen.iter()
        .filter(|s| {
            s.observation.id.service == Service::Redis
                && s.observation.id.subject == subject
                && s.observation.failures > 0
        })
        .map(|s| {
            let earlier = u64::from(s.observation.failures - 1).saturating_mul(interval_ms);
            s.age_ms.saturating_add(earlier)
        })
        .max()
}

/// Whether a replica's link has carried nothing for more than `stale_after_ms`: by
/// `link_quiet_ms` when its agent reports it (how long its replication offset has not moved,
/// measured by that agent to the probe interval: see `observe`), else by Redis's own
/// `master_last_io_seconds_ago` (whole seconds). A negative age is not trusted.
fn link_quiet_too_long(s: &Seen, stale_after_ms: u64) -> bool {
    match int(s, "link_quiet_ms") {
        Some(q) => u64::try_from(q).map_or(true, |q| q > stale_after_ms),
        None => {
            let io = int(s, "master_last_io_seconds_ago").unwrap_or(0);
            u64::try_from(io).map_or(true, |io| io.saturating_mul(1000) > stale_after_ms)
        }
    }
}

/// A live replica that still reports an up-to-date link to `master`, if any.
fn replica_with_link_up(i: &RedisInputs<'_>, master: NodeId) -> Option<NodeId> {
    i.members
        .iter()
        .filter(|&&m| m != master)
        .filter_map(|&m| i.own_view(m))
        .filter(|s| s.observation.status.is_up() && text(s, "role") == Some("replica"))
        .find(|s| {
            let link_up = s
                .observation
                .last
                .details
                .get("master_link_up")
                .and_then(|v| v.as_bool())
                == Some(true);
            link_up && !link_quiet_too_long(s, i.settings.link_stale_after_ms)
        })
        .map(|s| s.observer)
}

fn rank(i: &RedisInputs<'_>, master: NodeId) -> Vec<Candidate> {
    let mut out = Vec::new();
    for &node in i.members.iter().filter(|&&m| m != master) {
        let own = i.own_view(node);
        let offset = own.and_then(|s| int(s, "slave_repl_offset").or(int(s, "master_repl_offset")));
        let priority = own.and_then(|s| int(s, "slave_priority"));
        let exclusion = match own {
            None if !i.is_fresh(node) => Some("excluded: its agent is silent".to_string()),
            None => Some("excluded: no fresh report of its Redis".to_string()),
            Some(s) if !s.observation.status.is_up() => Some(format!(
                "excluded: {}",
                s.observation.last.error.clone().unwrap_or_else(|| s
                    .observation
                    .status
                    .as_str()
                    .to_string())
            )),
            Some(_) if priority == Some(0) => Some("excluded: replica-priority 0".into()),
            Some(_) => match offset {
                None => Some("excluded: offset unknown".into()),
                // Redis offsets count bytes from 0: a negative one is a bug or a hostile
                // report, and neither ranks it lowest nor takes part in the lag arithmetic.
                Some(o) if o < 0 => Some(format!("excluded: invalid offset {o} (negative)")),
                Some(_) => None,
            },
        };
        out.push(Candidate {
            node,
            rank: None,
            reason: exclusion.unwrap_or_default(),
            offset,
            priority,
        });
    }
    let best_offset = out
        .iter()
        .filter(|c| c.reason.is_empty())
        .filter_map(|c| c.offset)
        .max();
    for c in out.iter_mut().filter(|c| c.reason.is_empty()) {
        if let (Some(best), Some(o)) = (best_offset, c.offset) {
            // Both are non-negative here, so this cannot overflow; saturate all the same.
            let lag = best.saturating_sub(o);
            if lag > i.settings.max_lag_bytes {
                c.reason = format!(
                    "excluded: lags {lag} bytes behind the best replica (limit {})",
                    i.settings.max_lag_bytes
                );
            }
        }
    }
    let mut eligible: Vec<&mut Candidate> =
        out.iter_mut().filter(|c| c.reason.is_empty()).collect();
    eligible.sort_by(|a, b| {
        let pa = a.priority.unwrap_or(100);
        let pb = b.priority.unwrap_or(100);
        pa.cmp(&pb)
            .then(b.offset.cmp(&a.offset))
            .then(a.node.cmp(&b.node))
    });
    for (k, c) in eligible.into_iter().enumerate() {
        c.rank = Some(u32::try_from(k).unwrap_or(u32::MAX).saturating_add(1));
        c.reason = format!(
            "offset {} priority {}",
            c.offset.unwrap_or_default(),
            c.priority.unwrap_or(100)
        );
    }
    out.sort_by_key(|c| (c.rank.is_none(), c.rank, c.node));
    out
}

/// No master recorded yet: record the one the servers agree on.
fn initial(i: &RedisInputs<'_>) -> RedisPlan {
    let masters: Vec<NodeId> = i
        .members
        .iter()
        .copied()
        .filter(|&m| {
            i.own_view(m)
                .is_some_and(|s| s.observation.status.is_up() && text(s, "role") == Some("master"))
        })
        .collect();
    let reporting = i
        .members
        .iter()
        .filter(|&&m| i.own_view(m).is_some())
        .count();
    match masters.as_slice() {
        [m] if reporting >= i.quorum() => RedisPlan {
            verdict: format!(
                "record initial redis master {m}: the only server reporting role master \
                 ({reporting}/{} reporting)",
                i.members.len()
            ),
            proposals: vec![Command::SetRedisMaster {
                node: *m,
                epoch: i.authority.epoch.next(),
                kind: ChangeKind::Initial,
                reason: format!("only server reporting role master ({reporting} reporting)"),
                suspect: None,
            }],
            candidates: vec![],
        },
        [] => plan(format!(
            "waiting: no Redis reports role master yet ({reporting}/{} reporting)",
            i.members.len()
        )),
        [_] => plan(format!(
            "waiting: one Redis reports role master, but only {reporting}/{} nodes report",
            i.members.len()
        )),
        many => plan(format!(
            "waiting: several servers report role master ({}); fix by hand or switch over",
            many.iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::UnixMillis;
    use crate::observation::{CheckResult, FailureKind, Observation, ProbeId, Status};

    fn view(observer: u64, subject: u64, failures: u32, age_ms: u64) -> Seen {
        Seen {
            observer: NodeId(observer),
            observation: std::sync::Arc::new(Observation {
                id: ProbeId {
                    subject: NodeId(subject),
                    service: Service::Redis,
                    target: String::new(),
                },
                status: if failures > 0 {
                    Status::Unreachable
                } else {
                    Status::Healthy
                },
                last: CheckResult::unreachable(FailureKind::Timeout, "timed out"),
                failures,
                successes: 0,
                latency_us: 0,
                observed_at: UnixMillis(0),
            }),
            age_ms,
        }
    }

    /// The failover duration metric starts at the first failed check, not at the decision.
    #[test]
    fn first_failure_is_the_oldest_failing_check_of_the_subject() {
        let seen = [
            view(1, 1, 3, 100), // two checks of 300 ms before the last one, 100 ms ago
            view(2, 1, 1, 400),
            view(3, 1, 0, 10),   // healthy: does not count
            view(2, 2, 9, 9000), // another subject
        ];
        assert_eq!(first_failure_age_ms(&seen, NodeId(1), 300), Some(700));
        assert_eq!(first_failure_age_ms(&seen, NodeId(3), 300), None);
        let absurd = [view(1, 1, u32::MAX, u64::MAX)];
        assert_eq!(
            first_failure_age_ms(&absurd, NodeId(1), 300),
            Some(u64::MAX)
        );
    }

    /// Only fresh views from fresh agents count; a refused last check counts before the fall
    /// threshold.
    #[test]
    fn down_count_uses_the_decisions_rule() {
        let mut refused_once = view(3, 1, 0, 100);
        std::sync::Arc::make_mut(&mut refused_once.observation)
            .last
            .failure = Some(FailureKind::Refused);
        let seen = [
            view(1, 1, 2, 100),  // down, fresh
            view(2, 1, 2, 5000), // down, but the view is stale
            refused_once,        // healthy so far, but refused on its last check
            view(2, 2, 2, 100),  // another subject
        ];
        let ages = BTreeMap::from([(NodeId(1), 100), (NodeId(2), 100), (NodeId(3), 100)]);
        assert_eq!(down_count(&seen, &ages, NodeId(1), 3000), 2);
        // n1's agent is silent: its view does not count.
        let ages = BTreeMap::from([(NodeId(1), 9000), (NodeId(2), 100), (NodeId(3), 100)]);
        assert_eq!(down_count(&seen, &ages, NodeId(1), 3000), 1);
    }
}
