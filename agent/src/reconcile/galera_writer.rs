//! The Galera writer reconciler: every agent routes *its own* HAProxy's MySQL backend to the
//! committed writer, carries the committed evictions out on *its own* mariadbd, and, on the
//! writer's node, proves the local node ready to take writes.
//!
//! A cycle ([`WriterReconciler::cycle`]):
//! 1. reads the local node (`wsrep_*` and the evict list, [`GaleraSql::read`]), and once per
//!    mariadbd process sets the EVS timing options (`galera.join_retrans_period` and
//!    `galera.keepalive_period`: how soon Galera installs a view after an eviction or a join);
//! 2. on the writer's node, Synced, Primary and ready, once per writer epoch: a causal read
//!    ([`GaleraSql::causal_wait`]), so the new writer has applied everything committed before
//!    it takes writes. [`serving_writer`] (what `GET /galera/writer` answers, and so every
//!    HAProxy's check of this server) says yes only after it, and only from a fresh cycle;
//! 3. evictions, on a node that is Primary and not evicted itself: its evict list is made
//!    equal to the committed one (a list holding a UUID no longer committed is cleared
//!    first: `evs.evict=` clears only this node's list, so every survivor's agent does it);
//! 4. HAProxy: the committed writer `ready`, every other server `maint`, cutting the sessions
//!    of a server that leaves, all admitted by an [`EpochFence`](crate::actuator::EpochFence) keyed by the writer change's
//!    term and index. A server entering service is *not* forced up: its check (the writer's own
//!    agent, from a fresh local read) brings it up, so no HAProxy routes to a node its own
//!    agent has not just seen Synced. Once HAProxy was found as desired, it is read again only
//!    when the desired state changes, after a failed pass, or every
//!    [`WriterReconciler::with_haproxy_recheck`] cycles (about once a second in the agent):
//!    only the agent changes admin states, and a change made behind its back (an operator,
//!    a restarted HAProxy) is undone within that time. HAProxy's own check of the writer
//!    (step 2) is what takes a node that stops serving out at once.
//!
//! The same code runs against the real adapters in the agent and the `Sim*` ones in tests.
//!
//! Caveats:
//! - The HAProxy side follows the committed state without a lease: a cut-off agent's HAProxy
//!   keeps its last writer `ready`, but that server's check asks its own agent, which says no
//!   once it applied a newer writer (and a cut-off MariaDB is non-Primary: refuses writes).
//! - Evictions are carried out even in maintenance: they are committed only outside it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::actuator::galera_sql::{EvsPeriod, GaleraSql, LocalWsrep};
use crate::actuator::haproxy::{AdminMode, Policy, Sessions};
use crate::actuator::DecisionEpoch;
use crate::cluster::GaleraWriterAuthority;
use crate::ids::{Epoch, NodeId};

use super::redis::HaproxyTarget;
use super::route::BackendRouter;
use super::{within, Timer};

/// What one cycle reconciles towards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterTarget {
    /// The committed writer authority.
    pub authority: GaleraWriterAuthority,
    /// Whether maintenance mode is on.
    pub maintenance: bool,
    /// Whether a Galera full outage is open.
    pub outage_open: bool,
}

impl WriterTarget {
    /// The decision epoch of the newest writer change (default before the first).
    pub fn epoch(&self) -> DecisionEpoch {
        DecisionEpoch::of_change(
            self.authority
                .last_change
                .as_ref()
                .map(|c| (c.term, c.index)),
        )
    }
}

/// The outcome of one cycle, for the API, the status and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterReport {
    /// The writer epoch this cycle worked towards.
    pub epoch: Epoch,
    /// Whether the local node was Synced, Primary and ready.
    pub serving: bool,
    /// The local node's state (`Synced`, `Donor/Desynced`...), when it answered.
    pub local_state: Option<String>,
    /// The local node's gcomm UUID, when it answered.
    pub gcomm_uuid: Option<String>,
    /// The writer epoch whose causal read passed on this node (its writer epochs only).
    pub caught_up: Option<Epoch>,
    /// Eviction statements run this cycle.
    pub evictions: Vec<String>,
    /// Provider options set this cycle (`evs.join_retrans_period=PT0.1S;…`, once per process).
    #[serde(default)]
    pub provider_options: Vec<String>,
    /// HAProxy actions run this cycle.
    pub haproxy_actions: Vec<String>,
    /// HAProxy verdict, when HAProxy is managed.
    pub haproxy_verdict: Option<String>,
    /// Local node error of this cycle (the next cycle retries).
    pub local_error: Option<String>,
    /// HAProxy error of this cycle.
    pub haproxy_error: Option<String>,
}

/// The desired admin state of the MySQL backend: the committed writer `ready`, the others
/// `maint`. `None` before a writer is recorded (the config's initial state stays).
pub fn desired_backend(
    authority: &GaleraWriterAuthority,
    servers: &BTreeMap<NodeId, String>,
) -> Option<BTreeMap<String, AdminMode>> {
    let writer = authority.writer?;
    Some(
        servers
            .iter()
            .map(|(&n, name)| {
                let ready = n == writer && !authority.evicted.contains_key(&n);
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

/// The evict-list statements that make `actual` equal to `desired` (both sorted): `clear`
/// first when `actual` holds a UUID not desired, then `evict UUID` for each one missing.
pub fn plan_evictions(desired: &[String], actual: &[String]) -> Vec<EvictOp> {
    let mut ops = Vec::new();
    let stale = actual.iter().any(|a| !desired.contains(a));
    if stale {
        ops.push(EvictOp::Clear);
    }
    for d in desired {
        if stale || !actual.contains(d) {
            ops.push(EvictOp::Evict(d.clone()));
        }
    }
    ops
}

/// One evict-list statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EvictOp {
    /// `evs.evict=` (clear this node's list).
    Clear,
    /// `evs.evict=UUID`.
    Evict(String),
}

/// Whether this node may take writes, as its own agent answers HAProxy's check of it
/// (`GET /galera/writer`): the committed writer, not evicted, and its latest cycle, at most
/// `max_age` old, found the local node Synced, Primary and ready and caught up for this
/// epoch. `Err` says why not.
pub fn serving_writer(
    me: NodeId,
    authority: &GaleraWriterAuthority,
    last: Option<(&WriterReport, Duration)>,
    max_age: Duration,
) -> Result<(), String> {
    match authority.writer {
        Some(w) if w == me => {}
        Some(w) => {
            return Err(format!(
                "not the committed writer ({w} is, epoch {})",
                authority.epoch
            ))
        }
        None => return Err("no Galera writer committed yet".into()),
    }
    if authority.evicted.contains_key(&me) {
        return Err("evicted from the component".into());
    }
    let Some((r, age)) = last else {
        return Err("no writer reconciliation cycle yet".into());
    };
    if age > max_age {
        return Err(format!(
            "the last local check is {} ms old (more than {} ms): not trusted",
            age.as_millis(),
            max_age.as_millis()
        ));
    }
    if r.epoch != authority.epoch {
        return Err(format!(
            "the last cycle worked for epoch {}, not {}",
            r.epoch, authority.epoch
        ));
    }
    if !r.serving {
        return Err(match (&r.local_error, &r.local_state) {
            (Some(e), _) => format!("local MariaDB: {e}"),
            (None, Some(s)) => format!("local MariaDB is {s}, not Synced, Primary and ready"),
            (None, None) => "local MariaDB state unknown".into(),
        });
    }
    if r.caught_up != Some(authority.epoch) {
        return Err(
            "waiting for the causal read of this epoch (applying what was committed)".into(),
        );
    }
    Ok(())
}

/// Drives one node's HAProxy MySQL backend and its own mariadbd's evict list.
pub struct WriterReconciler {
    me: NodeId,
    sql: Arc<dyn GaleraSql>,
    haproxy: Option<BackendRouter>,
    caught_up: Option<Epoch>,
    deadline: Option<(Duration, Timer)>,
    /// EVS timing options to set on the local node, once per process.
    evs: Vec<(EvsPeriod, Duration)>,
    /// The gcomm UUID (the process) it was set on.
    tuned: Option<String>,
}

/// How often a quiet writer reconciler re-reads its HAProxy backend in the agent and the
/// simulation: a change made behind the agent's back is undone within it.
pub const HAPROXY_RECHECK: Duration = Duration::from_secs(1);

/// How many writer cycles of `interval` make about `period` (at least one): the HAProxy
/// re-read pace the agent uses (see [`WriterReconciler::with_haproxy_recheck`]).
pub fn cycles_per(period: Duration, interval: Duration) -> u32 {
    let n = period.as_micros() / interval.as_micros().max(1);
    u32::try_from(n).unwrap_or(u32::MAX).max(1)
}

impl WriterReconciler {
    /// A reconciler for node `me`.
    pub fn new(me: NodeId, sql: Arc<dyn GaleraSql>, haproxy: Option<HaproxyTarget>) -> Self {
        WriterReconciler {
            me,
            sql,
            haproxy: haproxy.map(|h| {
                BackendRouter::new(
                    h,
                    Policy {
                        sessions: Sessions::ShutdownOnLeave,
                        force_up_on_enter: false,
                    },
                )
            }),
            caught_up: None,
            deadline: None,
            evs: Vec::new(),
            tuned: None,
        }
    }

    /// Once HAProxy was found as desired, reads it again only every `cycles` cycles while the
    /// desired state stays the same (default 1: every cycle).
    pub fn with_haproxy_recheck(mut self, cycles: u32) -> Self {
        self.haproxy = self.haproxy.map(|h| h.with_recheck(cycles));
        self
    }

    /// Sets these EVS timing options on the local node once per mariadbd process (identified
    /// by its gcomm UUID); a zero period leaves that option as the node has it.
    pub fn with_evs_periods(mut self, periods: &[(EvsPeriod, Duration)]) -> Self {
        self.evs = periods
            .iter()
            .copied()
            .filter(|(_, d)| !d.is_zero())
            .collect();
        self
    }

    /// Bounds each side of a cycle by `deadline` (see the Redis reconciler).
    pub fn with_deadline(mut self, deadline: Duration, timer: Timer) -> Self {
        self.deadline = Some((deadline, timer));
        self
    }

    /// Runs one cycle towards `target`. Never panics; errors end up in the report.
    pub async fn cycle(&mut self, target: &WriterTarget) -> WriterReport {
        let mut r = WriterReport {
            epoch: target.authority.epoch,
            ..WriterReport::default()
        };
        let deadline = self.deadline.clone();
        let done = within(&deadline, self.local_side(target, &mut r)).await;
        if !done {
            r.serving = false;
            r.local_error = Some("no answer within the cycle's deadline: hung?".into());
        }
        let done = within(&deadline, self.haproxy_side(target, &mut r)).await;
        if !done {
            r.haproxy_error = Some("HAProxy side cut at its deadline; retrying".into());
        }
        r
    }

    async fn local_side(&mut self, target: &WriterTarget, r: &mut WriterReport) {
        let local: LocalWsrep = match self.sql.read().await {
            Ok(l) => l,
            Err(e) => {
                r.local_error = Some(e.to_string());
                return;
            }
        };
        r.serving = local.serving();
        r.local_state = Some(local.state.clone());
        r.gcomm_uuid.clone_from(&local.gcomm_uuid);
        if let Some(u) = local.gcomm_uuid.as_ref().filter(|_| !self.evs.is_empty()) {
            if self.tuned.as_ref() != Some(u) {
                match self.sql.set_evs(&self.evs).await {
                    Ok(()) => {
                        self.tuned = Some(u.clone());
                        r.provider_options
                            .push(crate::actuator::galera_sql::evs_settings(&self.evs));
                    }
                    Err(e) => r.local_error = Some(format!("EVS timing options: {e}")),
                }
            }
        }
        let a = &target.authority;
        if a.writer == Some(self.me) && r.serving && self.caught_up != Some(a.epoch) {
            match self.sql.causal_wait().await {
                Ok(()) => self.caught_up = Some(a.epoch),
                Err(e) => r.local_error = Some(format!("causal read: {e}")),
            }
        }
        r.caught_up = self.caught_up;
        if !local.primary || a.evicted.contains_key(&self.me) {
            return;
        }
        let desired: Vec<String> = {
            let mut d: Vec<String> = a.evicted.values().map(|e| e.gcomm_uuid.clone()).collect();
            d.sort();
            d
        };
        for op in plan_evictions(&desired, &local.evict_list) {
            let (name, res) = match &op {
                EvictOp::Clear => ("clear".to_string(), self.sql.clear_evictions().await),
                EvictOp::Evict(u) => (format!("evict {u}"), self.sql.evict(u).await),
            };
            match res {
                Ok(()) => r.evictions.push(name),
                Err(e) => {
                    r.local_error = Some(format!("{name}: {e}"));
                    return;
                }
            }
        }
    }

    async fn haproxy_side(&mut self, target: &WriterTarget, r: &mut WriterReport) {
        let Some(router) = &mut self.haproxy else {
            return;
        };
        let Some(desired) = desired_backend(&target.authority, router.servers()) else {
            r.haproxy_verdict = Some("haproxy: no Galera writer recorded yet".into());
            return;
        };
        let routed = router.route(desired, target.epoch()).await;
        r.haproxy_actions = routed.actions;
        r.haproxy_verdict = routed.verdict;
        r.haproxy_error = routed.error;
    }
}

#[cfg(test)]
mod tests;
