//! The Redis reconciler: every agent drives *its own* Redis and the Redis backend of its own
//! HAProxy towards the committed Redis authority, one cycle at a time.
//!
//! A cycle ([`RedisReconciler::cycle`]) reads the local Redis (`INFO replication`, fenced or not),
//! plans with the pure [`plan_local`], runs the actions, then reads the local HAProxy's Redis
//! backend, plans with the pure HAProxy planner towards [`desired_backend`], and runs those.
//! Both sides are admitted by an [`EpochFence`] keyed by the decision epoch (term and index of
//! the committed change of master), so a cycle planned from an older state can never undo a
//! newer decision. The same code runs against the real adapters in the agent and against the
//! `Sim*` ones in the simulation.
//!
//! Rules:
//! - Without a lease (this agent lost contact with a quorum) the local Redis is fenced if it is
//!   a master and every Redis server of the local HAProxy goes to `maint`; nothing else.
//! - With a lease: the committed master is promoted and unfenced, every other Redis follows it
//!   (a master that is not the committed one is fenced *before* it is turned into a replica),
//!   and HAProxy has the committed master `ready` and the others `maint`, cutting the sessions
//!   of a server that leaves service.
//! - The local Redis, when first seen, back after an outage, or restarted (its `run_id`
//!   changed), is not trusted until a lease grant issued *after* that moment: until then it is
//!   handled as without a lease (fenced if master, no role change) and the local HAProxy does
//!   not route to it. A restarted old master may come back as master before this agent has
//!   applied who the master is now; peers grant no lease to an agent behind the newest
//!   decision, so the fresh grant proves that this agent's view is current. While it is
//!   unreachable, the local HAProxy does not route to it either; the other servers follow the
//!   committed state as usual.
//! - Redis should boot fenced (`min-replicas-to-write 1000` in redis.conf): a restarted server
//!   then refuses writes until its agent has looked at it, which closes the gap between the
//!   restart and the next cycle (and covers an agent that is down).
//! - A suspected master (committed `SuspectRedisMaster`) leaves every HAProxy, and its own
//!   agent handles its Redis as without a lease (fenced). Once done (or the Redis refuses
//!   connections: no process), the agent reports the suspicion as carried out
//!   (`reconciled_index`): the leader's fast path promotes only then. A Redis that does not
//!   answer at all (hung, SIGSTOP) is never reported as carried out: it could resume unfenced,
//!   so the leader waits for the silent path (lease plus clock margin).
//! - A cycle reconciles HAProxy before the local Redis when the local server stays out of it
//!   whatever the Redis side finds (no lease, suspected, or unreachable at the last cycle), so
//!   that a hung local Redis, whose side waits out the deadline, does not delay the routing to
//!   a new master.
//! - In maintenance, roles are not changed (no promote, no follow); fencing, unfencing the
//!   committed master, and routing still follow the committed state, so a switchover committed
//!   during maintenance still takes effect through the switchover procedure.
//!
//! Caveats: the two services are planned one after the other, not atomically; a node whose
//! Redis is promoted a few milliseconds after another node's HAProxy already routes to it
//! answers those writes with `READONLY` errors (refused, never lost).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::actuator::haproxy::{self, AdminMode, Haproxy, HaproxyPlan, Policy, Sessions};
use crate::actuator::redis::{plan_local, LocalRedis, RedisAction, RedisActionError, RedisControl};
use crate::actuator::{DecisionEpoch, EpochFence};
use crate::cluster::RedisAuthority;
use crate::ids::NodeId;
use crate::probe::redis_info::{RedisInfo, RedisRole};

use super::{usable_lease, within, Timer};

/// What one cycle reconciles towards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisTarget {
    /// The committed Redis authority.
    pub authority: RedisAuthority,
    /// Whether maintenance mode is on.
    pub maintenance: bool,
    /// Whether this agent holds its lease.
    pub has_lease: bool,
    /// When the peer grant that keeps the lease alive was issued (its ping's send time), on
    /// the caller's monotonic clock in milliseconds; `None` without a lease.
    pub lease_granted_at_ms: Option<u64>,
    /// The caller's monotonic clock now, in milliseconds.
    pub now_ms: u64,
}

impl RedisTarget {
    /// The log index of the newest Redis decision in the target (change of master or
    /// suspicion).
    pub fn decision_index(&self) -> crate::ids::LogIndex {
        let a = &self.authority;
        [
            a.last_change.as_ref().map(|c| c.index),
            a.suspect.as_ref().map(|s| s.index),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or_default()
    }

    /// The epoch of the decision this target implements.
    pub fn epoch(&self) -> DecisionEpoch {
        self.authority
            .last_change
            .as_ref()
            .map(|c| DecisionEpoch {
                term: c.term,
                index: c.index,
            })
            .unwrap_or_default()
    }
}

/// The HAProxy side of a reconciler.
pub struct HaproxyTarget {
    /// The local HAProxy.
    pub haproxy: Arc<dyn Haproxy>,
    /// Backend routing to Redis.
    pub backend: String,
    /// Server name of each node's Redis in that backend.
    pub servers: BTreeMap<NodeId, String>,
    /// Write the server-state file after a change.
    pub save_state: bool,
}

/// The outcome of one cycle, for logs, status and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CycleReport {
    /// Local Redis role after the cycle, when it answered.
    pub redis_role: Option<String>,
    /// Whether the local Redis is fenced after the cycle, when it answered.
    pub redis_fenced: Option<bool>,
    /// Redis actions run this cycle.
    pub redis_actions: Vec<String>,
    /// HAProxy actions run this cycle.
    pub haproxy_actions: Vec<String>,
    /// HAProxy verdict (what it would take to converge), when HAProxy is managed.
    pub haproxy_verdict: Option<String>,
    /// Errors of this cycle (the next cycle retries).
    pub redis_error: Option<String>,
    /// HAProxy error of this cycle.
    pub haproxy_error: Option<String>,
    /// Whether a fence action ran this cycle.
    pub fenced_now: bool,
    /// Whether the local Redis was not trusted this cycle (unreachable or restarted, and no
    /// lease grant since): the cycle ran as without a lease.
    #[serde(default)]
    pub untrusted: bool,
    /// Whether the local Redis is as the target wants it: every planned action ran, or it
    /// refused the connection (no process: a server that comes back boots fenced and is not
    /// trusted until a fresh lease grant). A server that does not answer (hung, stopped) is
    /// *not* settled: it may resume unfenced. The agent then reports the target's decision as
    /// carried out, which the leader's fast path waits for.
    #[serde(default)]
    pub redis_settled: bool,
}

/// The desired admin state of the Redis backend: the committed master `ready`, the others
/// `maint`; everything `maint` without a lease or while the master is suspected. `None` when there is nothing to route to yet
/// (no master recorded).
pub fn desired_backend(
    target: &RedisTarget,
    servers: &BTreeMap<NodeId, String>,
) -> Option<BTreeMap<String, AdminMode>> {
    desired_backend_excluding(target, servers, None)
}

/// [`desired_backend`], with `down` (the local server, when this agent cannot reach it) kept
/// out of service.
fn desired_backend_excluding(
    target: &RedisTarget,
    servers: &BTreeMap<NodeId, String>,
    down: Option<NodeId>,
) -> Option<BTreeMap<String, AdminMode>> {
    let master = target.authority.master;
    if target.has_lease && master.is_none() {
        return None;
    }
    Some(
        servers
            .iter()
            .map(|(&node, name)| {
                let suspected = target
                    .authority
                    .suspect
                    .as_ref()
                    .is_some_and(|s| s.node == node);
                let ready =
                    target.has_lease && Some(node) == master && down != Some(node) && !suspected;
                (
                    name.clone(),
                    if ready {
                        AdminMode::Ready
                    } else {
                        AdminMode::Maint
                    },
                )
            })
            .collect(),
    )
}

/// Keeps the maintenance-safe subset of a local Redis plan: fencing always; unfencing only of
/// the committed master; no role change.
pub fn maintenance_filter(
    actions: Vec<RedisAction>,
    me: NodeId,
    target: &RedisTarget,
    role: Option<RedisRole>,
) -> Vec<RedisAction> {
    let committed_master_here =
        target.authority.master == Some(me) && role == Some(RedisRole::Master);
    actions
        .into_iter()
        .filter(|a| match a {
            RedisAction::Fence => true,
            RedisAction::Unfence => committed_master_here,
            RedisAction::Promote | RedisAction::Follow(_) => false,
        })
        .collect()
}

/// Drives one node's Redis and HAProxy.
pub struct RedisReconciler {
    me: NodeId,
    addrs: BTreeMap<NodeId, SocketAddr>,
    redis: Arc<dyn RedisControl>,
    haproxy: Option<HaproxyTarget>,
    redis_fence: EpochFence,
    haproxy_fence: EpochFence,
    /// `run_id` of the local Redis when last read.
    run_id: Option<String>,
    /// Whether the local Redis was read successfully at least once.
    seen: bool,
    /// Whether the last read of the local Redis failed.
    down: bool,
    /// Since when the local Redis is not trusted (first seen, back, or restarted).
    untrusted_since: Option<u64>,
    /// The deadline of each side of a cycle, and the timer that measures it.
    deadline: Option<(Duration, Timer)>,
}

fn cut(side: &str, deadline: &Option<(Duration, Timer)>) -> String {
    let d = deadline.as_ref().map(|(d, _)| *d).unwrap_or_default();
    format!("{side} side of the cycle cut at its deadline ({d:?}); retrying next cycle")
}

/// Whether this node's Redis may take writes, as its own agent answers HAProxy's check of it
/// (`GET /redis/master`): it is the committed master and not suspected, this agent holds a
/// usable lease, and its latest cycle found the local Redis a trusted, unfenced master. `Err`
/// says why not.
///
/// Every HAProxy checks every Redis server against *that server's* agent, so a server leaves
/// every HAProxy, those of dead or lagging agents included, as soon as its own agent says no
/// (or is dead, or cut off): a resumed old master is never routed to by an HAProxy that its
/// agent cannot reach. The silent path's wait covers the check period (see the README).
pub fn serving_master(
    me: NodeId,
    authority: &RedisAuthority,
    lease_valid: bool,
    last: Option<&CycleReport>,
) -> Result<(), String> {
    if authority.master != Some(me) {
        return Err(match authority.master {
            Some(m) => format!(
                "not the committed master ({m} is, epoch {})",
                authority.epoch
            ),
            None => "no Redis master committed yet".into(),
        });
    }
    if authority.suspect.as_ref().is_some_and(|s| s.node == me) {
        return Err("suspected by the cluster: failing over".into());
    }
    if !lease_valid {
        return Err("no lease: this agent lost contact with a quorum".into());
    }
    let Some(r) = last else {
        return Err("no reconciliation cycle yet".into());
    };
    if r.untrusted {
        return Err("local Redis not trusted yet (waiting for a fresh lease grant)".into());
    }
    match (r.redis_role.as_deref(), r.redis_fenced) {
        (Some("master"), Some(false)) if r.redis_error.is_none() => Ok(()),
        _ => Err(match &r.redis_error {
            Some(e) => format!("local Redis: {e}"),
            None => format!(
                "local Redis is {} and {}",
                r.redis_role.as_deref().unwrap_or("of unknown role"),
                match r.redis_fenced {
                    Some(true) => "fenced",
                    Some(false) => "not fenced",
                    None => "of unknown fence",
                }
            ),
        }),
    }
}

impl RedisReconciler {
    /// A reconciler for node `me`, with every member's Redis address.
    pub fn new(
        me: NodeId,
        addrs: BTreeMap<NodeId, SocketAddr>,
        redis: Arc<dyn RedisControl>,
        haproxy: Option<HaproxyTarget>,
    ) -> Self {
        RedisReconciler {
            me,
            addrs,
            redis,
            haproxy,
            redis_fence: EpochFence::new(),
            haproxy_fence: EpochFence::new(),
            run_id: None,
            seen: false,
            down: false,
            untrusted_since: None,
            deadline: None,
        }
    }

    /// The newest decision epoch executed on Redis and on HAProxy.
    pub fn executed(&self) -> (Option<DecisionEpoch>, Option<DecisionEpoch>) {
        (self.redis_fence.newest(), self.haproxy_fence.newest())
    }

    /// Bounds each side of a cycle (all Redis commands of a cycle together, all HAProxy
    /// commands together) by `deadline`, timed by `timer` (the agent passes tokio's sleep; a
    /// side cut at its deadline is reported as an error and retried next cycle). Without it
    /// (tests, the simulation, whose adapters answer at once) sides are not cut.
    pub fn with_deadline(mut self, deadline: Duration, timer: Timer) -> Self {
        self.deadline = Some((deadline, timer));
        self
    }

    /// Runs one cycle towards `target`. Never panics; errors end up in the report and the
    /// next cycle retries.
    ///
    /// Order: when this node must stop serving (no lease, or its own Redis is suspected), the
    /// HAProxy side runs first: taking servers out of service does not depend on what the
    /// local Redis answers, and a hung local Redis must not delay it. Otherwise the Redis side
    /// runs first, so that a promotion is done before the local HAProxy routes to it.
    pub async fn cycle(&mut self, target: &RedisTarget) -> CycleReport {
        let mut report = CycleReport::default();
        let epoch = target.epoch();
        let suspected_self = target
            .authority
            .suspect
            .as_ref()
            .is_some_and(|s| s.node == self.me);
        let stop_serving = !target.has_lease || suspected_self;
        // HAProxy first when the local server stays out of it whatever the Redis side finds:
        // without a lease or suspected, and when the last cycle found the local Redis
        // unreachable (should it answer now, it is back after an outage and untrusted until a
        // fresh grant). A hung local Redis then holds up only the Redis side (cut at the
        // deadline), not the routing to a newly promoted master.
        let haproxy_first = stop_serving || self.down;
        let deadline = self.deadline.clone();
        if haproxy_first {
            let done = within(
                &deadline,
                self.haproxy_side(target, epoch, Some(self.me), &mut report),
            )
            .await;
            if !done {
                report.haproxy_error = Some(cut("HAProxy", &deadline));
            }
        }
        let mut local_out = None;
        let done = within(
            &deadline,
            self.local_redis(target, epoch, suspected_self, &mut local_out, &mut report),
        )
        .await;
        if !done {
            // No answer in time: as unreachable (and untrusted once it answers again).
            self.down = true;
            report.redis_error = Some(cut("Redis", &deadline));
            report.redis_settled = false;
            local_out = Some(self.me);
        }
        if !haproxy_first {
            let done = within(
                &deadline,
                self.haproxy_side(target, epoch, local_out, &mut report),
            )
            .await;
            if !done {
                report.haproxy_error = Some(cut("HAProxy", &deadline));
            }
        }
        report
    }

    /// The Redis side of a cycle: read the local Redis, decide whether it is trusted, run the
    /// local plan. Sets `local_out` when the local server must stay out of the local HAProxy.
    async fn local_redis(
        &mut self,
        target: &RedisTarget,
        epoch: DecisionEpoch,
        suspected_self: bool,
        local_out: &mut Option<NodeId>,
        report: &mut CycleReport,
    ) {
        let info = self.redis.info().await;
        let reachable = info.is_ok();
        // Proof that the local Redis takes no writes without an answer from it: the connection
        // was refused, so no process listens (a restarted one boots fenced and is not trusted
        // until a fresh lease grant). A timeout proves nothing: a stopped or busy server
        // answers later, unfenced, with whatever state it had.
        let refused = info.as_ref().err().is_some_and(|e| e.refused);
        match &info {
            Ok(i) => {
                // First sight, back after an outage, or restarted in between: from now on it
                // needs a lease grant issued after this moment.
                let restarted = i.run_id.is_some() && i.run_id != self.run_id;
                if !self.seen || self.down || restarted {
                    self.untrusted_since = Some(target.now_ms);
                }
                self.seen = true;
                self.down = false;
                self.run_id.clone_from(&i.run_id);
            }
            Err(_) => self.down = true,
        }
        if let (Some(since), Some(granted)) = (self.untrusted_since, target.lease_granted_at_ms) {
            if reachable && target.has_lease && granted > since {
                self.untrusted_since = None;
            }
        }
        let mut redis_target = target.clone();
        if self.untrusted_since.is_some() {
            redis_target.has_lease = false;
            report.untrusted = true;
        }
        // Suspected by the cluster: this node's Redis must not take writes (as without a lease).
        if suspected_self {
            redis_target.has_lease = false;
        }
        // The local server leaves the local HAProxy while it is down or not yet trusted; the
        // others follow the committed state and the lease as usual.
        *local_out = (!reachable || self.untrusted_since.is_some()).then_some(self.me);
        self.redis_side(&redis_target, epoch, info, report).await;
        report.redis_settled = refused || report.redis_error.is_none();
    }

    async fn redis_side(
        &mut self,
        target: &RedisTarget,
        epoch: DecisionEpoch,
        info: Result<RedisInfo, RedisActionError>,
        r: &mut CycleReport,
    ) {
        let info = match info {
            Ok(i) => i,
            Err(e) => {
                r.redis_error = Some(e.to_string());
                return;
            }
        };
        let fenced = match self.redis.is_fenced().await {
            Ok(f) => f,
            Err(e) => {
                r.redis_error = Some(e.to_string());
                return;
            }
        };
        let mut actions = plan_local(&LocalRedis {
            me: self.me,
            authority: &target.authority,
            addrs: &self.addrs,
            info: Some(&info),
            fenced: Some(fenced),
            has_lease: target.has_lease,
        });
        if target.maintenance {
            actions = maintenance_filter(actions, self.me, target, info.role);
        }
        let mut role = info.role;
        let mut now_fenced = fenced;
        for a in actions {
            if let Err(stale) = self.redis_fence.admit(epoch) {
                r.redis_error = Some(stale.to_string());
                break;
            }
            match self.redis.apply(&a, target.authority.epoch).await {
                Ok(()) => {
                    match &a {
                        RedisAction::Promote => role = Some(RedisRole::Master),
                        RedisAction::Follow(_) => role = Some(RedisRole::Replica),
                        RedisAction::Fence => {
                            now_fenced = true;
                            r.fenced_now = true;
                        }
                        RedisAction::Unfence => now_fenced = false,
                    }
                    r.redis_actions.push(action_name(&a));
                }
                Err(e) => {
                    r.redis_error = Some(e.to_string());
                    break;
                }
            }
        }
        r.redis_role = role.map(|x| x.as_str().to_string());
        r.redis_fenced = Some(now_fenced);
    }

    async fn haproxy_side(
        &mut self,
        target: &RedisTarget,
        epoch: DecisionEpoch,
        down: Option<NodeId>,
        r: &mut CycleReport,
    ) {
        let Some(h) = &self.haproxy else {
            return;
        };
        let Some(desired) = desired_backend_excluding(target, &h.servers, down) else {
            r.haproxy_verdict = Some("haproxy: no Redis master recorded yet".into());
            return;
        };
        let rows = match h.haproxy.show_servers_state(Some(&h.backend)).await {
            Ok(rows) => rows,
            Err(e) => {
                r.haproxy_error = Some(e.to_string());
                return;
            }
        };
        let plan: HaproxyPlan = haproxy::plan(
            &h.backend,
            &desired,
            &rows,
            epoch,
            Policy {
                sessions: Sessions::ShutdownOnLeave,
                force_up_on_enter: true,
            },
        );
        r.haproxy_verdict = Some(plan.verdict());
        if plan.actions.is_empty() {
            return;
        }
        match haproxy::apply(h.haproxy.as_ref(), &mut self.haproxy_fence, &plan.actions).await {
            Ok(_) => {
                r.haproxy_actions = plan.actions.iter().map(|a| a.command()).collect();
                if h.save_state {
                    if let Err(e) = h.haproxy.save_server_state().await {
                        r.haproxy_error = Some(format!("saving the server-state file: {e}"));
                    }
                }
            }
            Err(e) => r.haproxy_error = Some(e.to_string()),
        }
    }
}

fn action_name(a: &RedisAction) -> String {
    match a {
        RedisAction::Promote => "promote".into(),
        RedisAction::Follow(addr) => format!("follow {addr}"),
        RedisAction::Fence => "fence".into(),
        RedisAction::Unfence => "unfence".into(),
    }
}

/// The pacing of the local reconciler, clock-free: when a cycle runs, with which lease, and
/// what it carried out. The agent's reconciler task and the simulation both use it, so the
/// simulation paces cycles exactly as the agent does.
///
/// - A wake-up is an interval tick ([`Pacer::tick`]) or a new target.
/// - A quiet, converged reconciler (its last cycle did nothing and saw no trouble) with the
///   same target and lease validity runs a full cycle only every 4th tick (three reads a
///   second at a 250 ms interval); anything new runs one at once.
/// - No target: wait. Just started without a lease: wait for the first grants (`grace`), so
///   that an agent does not fence on no news.
/// - The lease counts only when usable ([`usable_lease`]).
#[derive(Debug)]
pub struct Pacer {
    lease_ms: u64,
    grace_ms: u64,
    side_deadline: Duration,
    started_ms: u64,
    ticks: u64,
    last_run: Option<(Option<RedisTarget>, bool)>,
    quiet: bool,
    lease_valid: bool,
    reconciled: u64,
}

/// What the reconciler does on a wake-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pace {
    /// Nothing new since a quiet cycle: skip this wake-up.
    Skip,
    /// Do not run a cycle yet, for this reason (shown in status).
    Wait(&'static str),
    /// Run a cycle towards this target (lease and time filled in).
    Run(RedisTarget),
}

impl Pacer {
    /// A pacer for an agent started at `started_ms` (the base of every `now_ms` given later),
    /// with the lease duration, the start-up grace and the per-side cycle deadline.
    pub fn new(lease: Duration, grace: Duration, side_deadline: Duration, started_ms: u64) -> Self {
        Pacer {
            lease_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
            grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            side_deadline,
            started_ms,
            ticks: 0,
            last_run: None,
            quiet: false,
            lease_valid: false,
            reconciled: 0,
        }
    }

    /// An interval tick.
    pub fn tick(&mut self) {
        self.ticks += 1;
    }

    /// Decides this wake-up, given the published target, the lease as granted, and the time.
    pub fn next(
        &mut self,
        target: Option<&RedisTarget>,
        valid: bool,
        remaining: Duration,
        now_ms: u64,
    ) -> Pace {
        let valid = usable_lease(valid, remaining, self.side_deadline);
        self.lease_valid = valid;
        let key = (target.cloned(), valid);
        if self.quiet && self.last_run.as_ref() == Some(&key) && !self.ticks.is_multiple_of(4) {
            return Pace::Skip;
        }
        self.last_run = Some(key);
        let Some(target) = target else {
            return Pace::Wait("no committed state applied yet");
        };
        if !valid && now_ms.saturating_sub(self.started_ms) < self.grace_ms {
            return Pace::Wait("start-up: waiting for the first lease grants");
        }
        let remaining_ms = u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX);
        Pace::Run(RedisTarget {
            has_lease: valid,
            now_ms,
            lease_granted_at_ms: valid.then(|| {
                now_ms
                    .saturating_add(remaining_ms)
                    .saturating_sub(self.lease_ms)
            }),
            ..target.clone()
        })
    }

    /// Records a finished cycle; returns the newest decision carried out on the local Redis
    /// (reported to the peers: the leader's fast path waits for it).
    pub fn done(&mut self, target: &RedisTarget, report: &CycleReport) -> u64 {
        self.quiet = report.redis_actions.is_empty()
            && report.haproxy_actions.is_empty()
            && report.redis_error.is_none()
            && report.haproxy_error.is_none()
            && !report.untrusted;
        if report.redis_settled {
            self.reconciled = self.reconciled.max(target.decision_index().0);
        }
        self.reconciled
    }

    /// Whether the lease was usable at the last wake-up.
    pub fn lease_valid(&self) -> bool {
        self.lease_valid
    }

    /// The newest decision carried out on the local Redis.
    pub fn reconciled(&self) -> u64 {
        self.reconciled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuator::haproxy::SimHaproxy;
    use crate::actuator::redis::SimRedis;
    use crate::cluster::{ChangeKind, MasterChange};
    use crate::ids::{Epoch, LogIndex, Term, UnixMillis};
    use crate::probe::redis_info::RedisInfo;
    use futures::future::BoxFuture;
    use std::time::Duration;

    fn authority(master: u64, epoch: u64, index: u64) -> RedisAuthority {
        RedisAuthority {
            master: Some(NodeId(master)),
            epoch: Epoch(epoch),
            suspect: None,
            last_change: Some(MasterChange {
                kind: ChangeKind::Automatic,
                from: None,
                to: NodeId(master),
                epoch: Epoch(epoch),
                index: LogIndex(index),
                term: Term(1),
                at: UnixMillis(0),
                reason: String::new(),
            }),
        }
    }

    fn setup(me: u64, role: RedisRole) -> (RedisReconciler, SimRedis, SimHaproxy) {
        let addrs: BTreeMap<NodeId, SocketAddr> = (1..=3)
            .map(|i| (NodeId(i), SocketAddr::from(([10, 0, 0, i as u8], 6379))))
            .collect();
        let redis = SimRedis::new(RedisInfo {
            role: Some(role),
            ..RedisInfo::default()
        });
        let h = SimHaproxy::new(Duration::from_secs(1));
        let mut servers = BTreeMap::new();
        for i in 1..=3u64 {
            h.add_server("be_redis", &format!("redis{i}"), 6379, i != 1);
            servers.insert(NodeId(i), format!("redis{i}"));
        }
        let mut rec = RedisReconciler::new(
            NodeId(me),
            addrs,
            Arc::new(redis.clone()),
            Some(HaproxyTarget {
                haproxy: Arc::new(h.clone()),
                backend: "be_redis".into(),
                servers,
                save_state: false,
            }),
        );
        // As if an earlier cycle had seen the local Redis and a fresh grant had come since
        // (first sight is tested on its own).
        rec.seen = true;
        (rec, redis, h)
    }

    fn modes(h: &SimHaproxy) -> Vec<AdminMode> {
        let rows = futures::executor::block_on(h.show_servers_state(Some("be_redis")));
        rows.iter()
            .flatten()
            .map(|r| r.admin_state.mode())
            .collect()
    }

    /// The epoch fence is per authority: entries of other authorities (maintenance,
    /// membership, later Galera) committed after the Redis decision leave the Redis target's
    /// epoch where it was, so a Redis action is never refused as stale because of them.
    #[test]
    fn other_authorities_entries_do_not_move_the_redis_epoch() {
        use crate::actuator::EpochFence;
        use crate::cluster::{ClusterState, Command, EntryMeta};
        let meta = |index: u64| EntryMeta {
            term: Term(2),
            index: LogIndex(index),
            at: UnixMillis(0),
        };
        let mut state = ClusterState::default();
        let change = Command::SetRedisMaster {
            node: NodeId(2),
            epoch: Epoch(1),
            kind: ChangeKind::Initial,
            reason: String::new(),
            suspect: None,
        };
        state.apply(meta(5), &change);
        let target = |s: &ClusterState| RedisTarget {
            authority: s.redis.clone(),
            maintenance: s.maintenance.enabled,
            has_lease: true,
            lease_granted_at_ms: Some(0),
            now_ms: 0,
        };
        let before = target(&state).epoch();
        assert_eq!(before, DecisionEpoch::new(2, 5));
        let mut fence = EpochFence::new();
        assert!(fence.admit(before).is_ok());
        let maintenance = |enabled| Command::SetMaintenance {
            enabled,
            reason: "patching".into(),
            by: "test".into(),
        };
        state.apply(meta(9), &maintenance(true));
        state.apply(meta(10), &maintenance(false));
        let after = target(&state).epoch();
        assert_eq!(after, before, "a maintenance entry moved the Redis epoch");
        assert!(fence.admit(after).is_ok());
    }

    #[test]
    fn failover_converges_and_a_second_cycle_does_nothing() {
        let (mut rec, redis, h) = setup(2, RedisRole::Replica);
        let t = RedisTarget {
            authority: authority(2, 2, 40),
            maintenance: false,
            has_lease: true,
            lease_granted_at_ms: Some(10),
            now_ms: 20,
        };
        let r = futures::executor::block_on(rec.cycle(&t));
        assert_eq!(r.redis_actions, ["promote"], "{r:?}");
        assert!(r.redis_settled, "{r:?}");
        assert_eq!(
            r.haproxy_actions,
            [
                "set server be_redis/redis1 state maint",
                "shutdown sessions server be_redis/redis1",
                "set server be_redis/redis2 state ready",
                "set server be_redis/redis2 health up"
            ]
        );
        assert_eq!(redis.snapshot().info.role, Some(RedisRole::Master));
        assert_eq!(
            modes(&h),
            [AdminMode::Maint, AdminMode::Ready, AdminMode::Maint]
        );
        let again = futures::executor::block_on(rec.cycle(&t));
        assert!(
            again.redis_actions.is_empty() && again.haproxy_actions.is_empty(),
            "{again:?}"
        );
    }

    #[test]
    fn lost_lease_fences_and_takes_everything_out_of_service() {
        let (mut rec, redis, h) = setup(1, RedisRole::Master);
        redis.with(|s| s.fenced = false);
        let t = RedisTarget {
            authority: authority(1, 1, 10),
            maintenance: false,
            has_lease: false,
            lease_granted_at_ms: None,
            now_ms: 20,
        };
        let r = futures::executor::block_on(rec.cycle(&t));
        assert_eq!(r.redis_actions, ["fence"]);
        assert!(r.fenced_now);
        assert!(redis.snapshot().fenced);
        assert_eq!(modes(&h), [AdminMode::Maint; 3]);
        // Lease back: unfenced and routed again.
        let back = RedisTarget {
            has_lease: true,
            lease_granted_at_ms: Some(30),
            now_ms: 40,
            ..t
        };
        let r = futures::executor::block_on(rec.cycle(&back));
        assert_eq!(r.redis_actions, ["unfence"]);
        assert_eq!(
            modes(&h),
            [AdminMode::Ready, AdminMode::Maint, AdminMode::Maint]
        );
    }

    #[test]
    fn stale_targets_are_refused() {
        let (mut rec, redis, _h) = setup(3, RedisRole::Replica);
        let newer = RedisTarget {
            authority: authority(2, 3, 50),
            maintenance: false,
            has_lease: true,
            lease_granted_at_ms: Some(10),
            now_ms: 20,
        };
        futures::executor::block_on(rec.cycle(&newer));
        let older = RedisTarget {
            authority: authority(1, 2, 40),
            ..newer
        };
        let r = futures::executor::block_on(rec.cycle(&older));
        assert!(
            r.redis_error
                .as_deref()
                .is_some_and(|e| e.contains("refused")),
            "{r:?}"
        );
        assert!(r.haproxy_error.is_some(), "{r:?}");
        let log = redis.snapshot().log;
        assert!(log.iter().all(|(_, e)| *e == Epoch(3)), "{log:?}");
    }

    #[test]
    fn restarted_local_redis_is_untrusted_until_a_fresh_grant() {
        let (mut rec, redis, h) = setup(1, RedisRole::Master);
        rec.seen = false;
        redis.with(|s| s.info.run_id = Some("a".into()));
        let t = |granted: u64, now: u64| RedisTarget {
            authority: authority(1, 1, 10),
            maintenance: false,
            has_lease: true,
            lease_granted_at_ms: Some(granted),
            now_ms: now,
        };
        // First sight: needs a grant issued after it.
        let r = futures::executor::block_on(rec.cycle(&t(10, 20)));
        assert!(r.untrusted, "{r:?}");
        let r = futures::executor::block_on(rec.cycle(&t(21, 25)));
        assert!(!r.untrusted, "{r:?}");
        // Restarted (new run_id) between two cycles: the grant from before does not count.
        redis.with(|s| s.info.run_id = Some("b".into()));
        let r = futures::executor::block_on(rec.cycle(&t(15, 30)));
        assert!(r.untrusted && r.fenced_now, "{r:?}");
        assert_eq!(modes(&h), [AdminMode::Maint; 3]);
        // A grant issued after the restart was seen: trusted again, unfenced and routed.
        let r = futures::executor::block_on(rec.cycle(&t(35, 40)));
        assert!(!r.untrusted, "{r:?}");
        assert_eq!(r.redis_actions, ["unfence"]);
        assert_eq!(
            modes(&h),
            [AdminMode::Ready, AdminMode::Maint, AdminMode::Maint]
        );
        // Unreachable: the local server leaves the local HAProxy at once, every cycle the same
        // (no flapping while it stays down); a server that is down counts as settled (it boots
        // fenced and is untrusted when it returns).
        redis.with(|s| s.down = true);
        for now in [50, 60, 70] {
            let r = futures::executor::block_on(rec.cycle(&t(now - 5, now)));
            assert!(r.redis_settled, "{r:?}");
            assert_eq!(modes(&h), [AdminMode::Maint; 3]);
        }
    }

    /// A stopped (SIGSTOP) master that is suspected cannot be fenced: its agent must not report
    /// the suspicion as carried out, or the fast path promotes while it may resume unfenced.
    /// A refused connection (no process) is proof and counts.
    #[test]
    fn a_hung_local_redis_is_not_settled_but_a_dead_one_is() {
        let (mut rec, redis, _h) = setup(1, RedisRole::Master);
        redis.with(|s| s.fenced = false);
        let mut a = authority(1, 1, 10);
        a.suspect = Some(crate::cluster::Suspect {
            node: NodeId(1),
            epoch: Epoch(1),
            index: LogIndex(12),
            reason: String::new(),
        });
        let t = RedisTarget {
            authority: a,
            maintenance: false,
            has_lease: true,
            lease_granted_at_ms: Some(10),
            now_ms: 20,
        };
        redis.with(|s| s.hung = true);
        let r = futures::executor::block_on(rec.cycle(&t));
        assert!(!r.redis_settled, "a hung master counted as fenced: {r:?}");
        assert!(!redis.snapshot().fenced);
        // It resumes: the agent fences it, and only now is the suspicion carried out.
        redis.with(|s| s.hung = false);
        let r = futures::executor::block_on(rec.cycle(&RedisTarget {
            now_ms: 30,
            ..t.clone()
        }));
        assert!(redis.snapshot().fenced, "{r:?}");
        // Dead (refused): nothing listens, which is proof.
        redis.with(|s| s.down = true);
        let r = futures::executor::block_on(rec.cycle(&RedisTarget { now_ms: 40, ..t }));
        assert!(r.redis_settled, "{r:?}");
    }

    /// A Redis that never answers (the real adapter's commands each wait `action_timeout`).
    struct Silent;

    impl RedisControl for Silent {
        fn apply<'a>(
            &'a self,
            _: &'a RedisAction,
            _: Epoch,
        ) -> BoxFuture<'a, Result<(), RedisActionError>> {
            Box::pin(futures::future::pending())
        }
        fn is_fenced(&self) -> BoxFuture<'_, Result<bool, RedisActionError>> {
            Box::pin(futures::future::pending())
        }
        fn info(&self) -> BoxFuture<'_, Result<RedisInfo, RedisActionError>> {
            Box::pin(futures::future::pending())
        }
        fn pause_writes(&self, _: u64) -> BoxFuture<'_, Result<(), RedisActionError>> {
            Box::pin(futures::future::pending())
        }
        fn unpause(&self) -> BoxFuture<'_, Result<(), RedisActionError>> {
            Box::pin(futures::future::pending())
        }
    }

    /// Review finding: the cycle read the local Redis (INFO, CONFIG GET, then the fence, each
    /// with its own timeout) before it touched HAProxy, so after a lost lease a hung Redis
    /// delayed taking HAProxy out of service by several timeouts. Now, without a lease, HAProxy
    /// goes first, and each side is cut at its deadline.
    #[test]
    fn without_a_lease_haproxy_goes_first_and_a_silent_redis_is_cut_at_the_deadline() {
        let (rec, _redis, h) = setup(1, RedisRole::Master);
        let haproxy = rec.haproxy;
        // The deadline "passes" as soon as a side waits at all: a side that can finish at
        // once does, a side waiting on the silent Redis is cut.
        let timer: Timer = Arc::new(|_| Box::pin(futures::future::ready(())));
        let mut rec = RedisReconciler::new(NodeId(1), rec.addrs, Arc::new(Silent), haproxy)
            .with_deadline(Duration::from_millis(300), timer);
        rec.seen = true;
        let t = RedisTarget {
            authority: authority(1, 1, 10),
            maintenance: false,
            has_lease: false,
            lease_granted_at_ms: None,
            now_ms: 20,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(futures::executor::block_on(rec.cycle(&t)));
        });
        let r = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the cycle ends at its deadline");
        assert_eq!(modes(&h), [AdminMode::Maint; 3], "{r:?}");
        assert!(
            r.redis_error
                .as_deref()
                .is_some_and(|e| e.contains("deadline")),
            "{r:?}"
        );
        assert!(!r.redis_settled, "{r:?}");
    }

    #[test]
    fn a_lease_with_less_than_a_cycle_left_is_not_acted_on() {
        let side = Duration::from_millis(300);
        assert!(usable_lease(true, Duration::from_millis(601), side));
        assert!(!usable_lease(true, Duration::from_millis(600), side));
        assert!(!usable_lease(false, Duration::from_secs(2), side));
    }

    /// The reconciler's pacing, as a script: each step is a wake-up (an interval tick or not),
    /// the published target, the lease as granted, the time, and what the pacer must answer.
    #[test]
    fn pacer_script() {
        let t1 = RedisTarget {
            authority: authority(1, 1, 10),
            maintenance: false,
            has_lease: false,
            lease_granted_at_ms: None,
            now_ms: 0,
        };
        let t2 = RedisTarget {
            authority: authority(2, 2, 20),
            ..t1.clone()
        };
        let quiet = CycleReport {
            redis_settled: true,
            ..CycleReport::default()
        };
        let busy = CycleReport {
            redis_actions: vec!["fence".into()],
            ..CycleReport::default()
        };
        let ms = Duration::from_millis;
        // Lease 2 s, grace 600 ms, 300 ms per side: a lease counts with more than 600 ms left.
        let mut p = Pacer::new(ms(2000), ms(600), ms(300), 1000);
        type Step<'a> = (bool, Option<&'a RedisTarget>, bool, u64, u64, &'a str);
        #[rustfmt::skip]
        let script: &[Step] = &[
            // (tick, target, lease valid, remaining ms, now ms, expected)
            (true, None, false, 0, 1000, "wait: no committed state applied yet"),
            (true, Some(&t1), false, 0, 1200, "wait: start-up: waiting for the first lease grants"),
            (true, Some(&t1), true, 1900, 1400, "run: lease true granted 1300"),
            // Past the grace, no lease: run (it fences).
            (true, Some(&t1), false, 0, 1700, "run: lease false granted -"),
            // A lease with too little left is no lease.
            (true, Some(&t1), true, 600, 1800, "run: lease false granted -"),
        ];
        let run = |p: &mut Pacer, script: &[Step], report: &CycleReport| {
            for &(tick, target, valid, remaining, now, want) in script {
                if tick {
                    p.tick();
                }
                let got = match p.next(target, valid, ms(remaining), now) {
                    Pace::Skip => "skip".to_string(),
                    Pace::Wait(why) => format!("wait: {why}"),
                    Pace::Run(t) => {
                        p.done(&t, report);
                        format!(
                            "run: lease {} granted {}",
                            t.has_lease,
                            t.lease_granted_at_ms.map_or("-".into(), |g| g.to_string())
                        )
                    }
                };
                assert_eq!(got, want, "at {now} ms");
            }
        };
        run(&mut p, script, &busy);
        // Quiet and unchanged: a full cycle only on every 4th tick (tick 6 runs: the lease
        // came back; 7 skips; 8 runs; 9 skips).
        #[rustfmt::skip]
        let settled: &[Step] = &[
            (true, Some(&t1), true, 1900, 2000, "run: lease true granted 1900"),
            (true, Some(&t1), true, 1900, 2250, "skip"),
            (true, Some(&t1), true, 1900, 2500, "run: lease true granted 2400"),
            (true, Some(&t1), true, 1900, 2750, "skip"),
            // A new target runs at once, without a tick.
            (false, Some(&t2), true, 1900, 2800, "run: lease true granted 2700"),
            (true, Some(&t2), true, 1900, 3000, "skip"),
            // The lease gone: the next tick runs, though not a 4th one.
            (true, Some(&t2), false, 0, 3250, "run: lease false granted -"),
        ];
        run(&mut p, settled, &quiet);
        assert_eq!(p.reconciled(), 20, "the settled decision index is reported");
    }

    /// Golden table for the answer to HAProxy's check of the local Redis.
    #[test]
    fn serving_master_table() {
        let ok = CycleReport {
            redis_role: Some("master".into()),
            redis_fenced: Some(false),
            ..CycleReport::default()
        };
        let fenced = CycleReport {
            redis_fenced: Some(true),
            ..ok.clone()
        };
        let untrusted = CycleReport {
            untrusted: true,
            ..ok.clone()
        };
        let failed = CycleReport {
            redis_error: Some("no answer".into()),
            ..ok.clone()
        };
        let mut suspected = authority(1, 1, 10);
        suspected.suspect = Some(crate::cluster::Suspect {
            node: NodeId(1),
            epoch: Epoch(1),
            index: LogIndex(12),
            reason: String::new(),
        });
        let a1 = authority(1, 1, 10);
        let a2 = authority(2, 2, 20);
        /// Authority, lease usable, last cycle, expected answer.
        type Case<'a> = (
            &'a RedisAuthority,
            bool,
            Option<&'a CycleReport>,
            Result<(), &'a str>,
        );
        let cases: [Case; 8] = [
            (&a1, true, Some(&ok), Ok(())),
            (
                &a2,
                true,
                Some(&ok),
                Err("not the committed master (n2 is, epoch 2)"),
            ),
            (&suspected, true, Some(&ok), Err("suspected")),
            (&a1, false, Some(&ok), Err("no lease")),
            (&a1, true, None, Err("no reconciliation cycle yet")),
            (&a1, true, Some(&untrusted), Err("not trusted")),
            (&a1, true, Some(&fenced), Err("master and fenced")),
            (&a1, true, Some(&failed), Err("local Redis: no answer")),
        ];
        for (i, (a, lease, last, want)) in cases.into_iter().enumerate() {
            let got = serving_master(NodeId(1), a, lease, last);
            match (want, &got) {
                (Ok(()), Ok(())) => {}
                (Err(w), Err(g)) if g.contains(w) => {}
                _ => panic!("case {i}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn maintenance_changes_no_role() {
        let (mut rec, redis, _h) = setup(2, RedisRole::Replica);
        let t = RedisTarget {
            authority: authority(2, 2, 40),
            maintenance: true,
            has_lease: true,
            lease_granted_at_ms: Some(10),
            now_ms: 20,
        };
        let r = futures::executor::block_on(rec.cycle(&t));
        assert!(r.redis_actions.is_empty(), "{r:?}");
        assert_eq!(redis.snapshot().info.role, Some(RedisRole::Replica));
    }
}
