//! The Galera writer controller: the writer decision's evidence, inputs, metrics, and the
//! target of the local writer reconciler (`reconcile::galera_writer`).
//!
//! On the leader, every decision cycle, it builds each member's writer evidence from the
//! fresh health reports (`decide::galera_writer::writer_evidence_from_reports`) and keeps the
//! newest gcomm UUID seen for each node while it answered: a dead node cannot be asked for
//! it, so the eviction names the one it reported while healthy.
//!
//! Every node publishes the committed writer authority, maintenance and whether a Galera
//! outage is open as the target of its local reconciler, which routes its HAProxy's MySQL
//! backend to the committed writer and carries out the committed evictions on its own
//! mariadbd.
//!
//! Caveats:
//! - The gcomm UUIDs are leader memory: a new leader learns them from the next reports, so a
//!   node that died before then is left to Galera's suspect timeout.
//! - A UUID is evicted at most once: a restarted node refuses on its socket while it joins,
//!   before it reports its new UUID, and evicting its old one again would stall that join
//!   (measured on the lab). The memory of spent UUIDs is per leader too; a new leader may
//!   evict a spent UUID once more, which at worst stalls one join.
//! - No lease embargo: the HAProxy checks of each server ask that server's own agent
//!   (`GET /galera/writer`), which answers from the state it applied and a fresh local check.

use std::collections::BTreeMap;

use crate::cluster::{Authority, ClusterState};
use crate::decide::galera_writer::{
    writer_evidence_from_reports, WriterEvidence, WriterInputs, WriterMemory, WriterSettings,
};
use crate::decide::{ServiceInputs, ServicePlan};
use crate::ids::NodeId;
use crate::metrics::Metrics;
use crate::observation::Service;
use crate::reconcile::galera_writer::WriterTarget;

use super::{Context, Controller, SeenKey, ServiceTarget};

/// The Galera writer controller. See the module docs.
pub struct GaleraWriterController {
    settings: WriterSettings,
    metrics: Metrics,
    evidence: BTreeMap<NodeId, WriterEvidence>,
    /// The newest gcomm UUID seen for each node while it answered, and when it last did
    /// (this node's monotonic clock).
    memory: WriterMemory,
    /// The observations `evidence` was computed from.
    evidence_of: SeenKey,
    /// The UUID each node's committed eviction named, once seen in force: it is never
    /// evicted again (a restarted node refuses on its socket while it joins, with a new UUID
    /// not yet reported; evicting the old one again would put it back on the survivors'
    /// evict list, which stalls that join).
    spent: BTreeMap<NodeId, String>,
    /// `gcomm` without the spent UUIDs: what the decision may evict.
    evictable: BTreeMap<NodeId, String>,
    seen: Option<(u64, usize)>,
    plan: Option<ServicePlan>,
}

impl GaleraWriterController {
    /// A controller with the decision's tunables.
    pub fn new(settings: WriterSettings, metrics: Metrics) -> Self {
        GaleraWriterController {
            settings,
            metrics,
            evidence: BTreeMap::new(),
            memory: WriterMemory::default(),
            evidence_of: SeenKey::default(),
            spent: BTreeMap::new(),
            evictable: BTreeMap::new(),
            seen: None,
            plan: None,
        }
    }

    fn on_authority(&mut self, state: &ClusterState) {
        let w = &state.galera_writer;
        let key = (w.epoch.0, w.evicted.len());
        if Some(key) == self.seen {
            return;
        }
        let first = self.seen.is_none();
        self.seen = Some(key);
        let m = &self.metrics;
        m.galera_writer_epoch
            .set(i64::try_from(w.epoch.0).unwrap_or(i64::MAX));
        m.galera_writer_node
            .set(w.writer.map_or(0, |n| i64::try_from(n.0).unwrap_or(0)));
        m.galera_evicted
            .set(i64::try_from(w.evicted.len()).unwrap_or(i64::MAX));
        if first {
            return;
        }
        if let Some(c) = &w.last_change {
            if c.epoch == w.epoch {
                tracing::warn!(writer = %c.to, epoch = %c.epoch, kind = c.kind.as_str(),
                    index = %c.index, reason = %c.reason, "galera writer committed");
            }
        }
        for (n, e) in &w.evicted {
            tracing::warn!(node = %n, gcomm_uuid = %e.gcomm_uuid, index = %e.index,
                reason = %e.reason, "galera eviction in force");
        }
    }
}

impl Controller for GaleraWriterController {
    fn authority(&self) -> Authority {
        Authority::GaleraWriter
    }

    fn observe(&mut self, cx: &Context<'_>) -> bool {
        self.on_authority(cx.state);
        for (n, e) in &cx.state.galera_writer.evicted {
            self.spent.insert(*n, e.gcomm_uuid.clone());
        }
        if !cx.is_leader {
            self.evidence.clear();
            self.evidence_of = SeenKey::default();
            return false;
        }
        if cx.reports.seen.is_empty() {
            return false;
        }
        // The same observations give the same evidence, and leave the memory as it is (it
        // only takes newer UUIDs and later answers): skip the parsing then.
        let key = SeenKey::of(
            &cx.reports.seen,
            &[Service::Mariadb],
            self.settings.freshness_ms,
            cx.clock.mono_ms,
        );
        if !key.same(&self.evidence_of) {
            self.evidence = writer_evidence_from_reports(
                cx.members,
                &cx.reports.seen,
                self.settings.freshness_ms,
                cx.clock.mono_ms,
                &mut self.memory,
            );
            self.evidence_of = key;
        }
        self.evictable = self
            .memory
            .uuids()
            .into_iter()
            .filter(|(n, u)| self.spent.get(n) != Some(u))
            .collect();
        false
    }

    fn inputs<'a>(&'a self, cx: &'a Context<'a>) -> Option<ServiceInputs<'a>> {
        if !cx.is_leader {
            return None;
        }
        Some(ServiceInputs::GaleraWriter(WriterInputs {
            members: cx.members,
            authority: &cx.state.galera_writer,
            evidence: &self.evidence,
            gcomm: &self.evictable,
            outage_open: cx.state.galera.open().is_some(),
            maintenance: cx.state.maintenance.enabled,
            in_flight: cx.in_flight(Authority::GaleraWriter),
            settings: self.settings,
        }))
    }

    fn planned(&mut self, plan: Option<&ServicePlan>, _cx: &Context<'_>) {
        if let Some(p) = plan.and_then(ServicePlan::as_galera_writer) {
            for c in &p.proposals {
                let kind = match c {
                    crate::cluster::Command::SetGaleraWriter { kind, .. } => kind.as_str(),
                    crate::cluster::Command::EvictGaleraNode {
                        node, gcomm_uuid, ..
                    } => {
                        // Spent from the proposal on, whatever becomes of it.
                        self.spent.insert(*node, gcomm_uuid.clone());
                        "evict"
                    }
                    crate::cluster::Command::ClearGaleraEviction { .. } => "clear",
                    _ => "other",
                };
                self.metrics
                    .galera_writer_decisions
                    .with_label_values(&[kind])
                    .inc();
            }
        }
        self.plan = plan.cloned();
    }

    fn plan(&self) -> Option<&ServicePlan> {
        self.plan.as_ref()
    }

    fn target(&self, state: &ClusterState) -> Option<ServiceTarget> {
        Some(ServiceTarget::GaleraWriter(WriterTarget {
            authority: state.galera_writer.clone(),
            maintenance: state.maintenance.enabled,
            outage_open: state.galera.open().is_some(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Command, EntryMeta};
    use crate::controller::{Clock, Reports};
    use crate::health::Seen;
    use crate::ids::{LogIndex, Term, UnixMillis};
    use crate::observation::{CheckResult, FailureKind, Observation, ProbeId, Service};

    const OLD: &str = "11111111-aaaa-11f1-b809-474591e831a5";

    fn seen(observer: u64, subject: u64, last: CheckResult) -> Seen {
        Seen {
            observer: NodeId(observer),
            observation: std::sync::Arc::new(Observation {
                id: ProbeId {
                    subject: NodeId(subject),
                    service: Service::Mariadb,
                    target: String::new(),
                },
                status: last.status,
                last,
                failures: 0,
                successes: 1,
                latency_us: 0,
                observed_at: UnixMillis(0),
            }),
            age_ms: 10,
        }
    }

    fn synced(size: i64, uuid: &str) -> CheckResult {
        CheckResult::healthy(serde_json::json!({
            "cluster_status": "Primary", "cluster_size": size, "local_state": 4,
            "local_state_comment": "Synced", "ready": true, "last_committed": 5,
            "gcomm_uuid": uuid,
        }))
    }

    fn evictions(
        c: &mut GaleraWriterController,
        state: &ClusterState,
        now_ms: u64,
        seen: Vec<Seen>,
    ) -> Vec<String> {
        let members = [NodeId(1), NodeId(2), NodeId(3)];
        let reports = Reports {
            seen,
            ..Reports::default()
        };
        let in_flight = Default::default();
        let cx = Context {
            me: NodeId(2),
            members: &members,
            is_leader: true,
            state,
            reports: &reports,
            in_flight: &in_flight,
            clock: Clock {
                mono_ms: now_ms,
                wall: UnixMillis(0),
            },
            skip_lease_wait: false,
            assume_applied_by_all: false,
            assume_backup_stopped: false,
        };
        c.observe(&cx);
        let Some(crate::decide::ServiceInputs::GaleraWriter(i)) = c.inputs(&cx) else {
            panic!("no inputs on the leader");
        };
        let plan =
            crate::decide::ServicePlan::GaleraWriter(crate::decide::galera_writer::decide(&i));
        c.planned(Some(&plan), &cx);
        plan.proposals()
            .iter()
            .filter_map(|p| match p {
                Command::EvictGaleraNode {
                    node, gcomm_uuid, ..
                } => Some(format!("{node} {gcomm_uuid}")),
                _ => None,
            })
            .collect()
    }

    /// A UUID is evicted once: while the restarted node joins (its socket refuses, the
    /// survivors count it again) its old UUID is not evicted a second time; a new UUID is.
    #[test]
    fn a_uuid_is_evicted_once() {
        let metrics = Metrics::new("t").expect("metrics");
        let mut c = GaleraWriterController::new(
            WriterSettings {
                freshness_ms: 2000,
                evict: true,
            },
            metrics,
        );
        let mut state = ClusterState {
            members: crate::cluster::fixtures::members(3),
            ..ClusterState::default()
        };
        let meta = |i: u64| EntryMeta {
            term: Term(1),
            index: LogIndex(i),
            at: UnixMillis(0),
        };
        state.apply(
            meta(1),
            &Command::SetGaleraWriter {
                node: NodeId(2),
                epoch: crate::ids::Epoch(1),
                kind: crate::cluster::ChangeKind::Initial,
                reason: String::new(),
            },
        );
        let healthy = |size| {
            vec![
                seen(1, 1, synced(3, OLD)),
                seen(2, 2, synced(size, "22222222-aaaa-11f1-b809-474591e831a5")),
                seen(3, 3, synced(size, "33333333-aaaa-11f1-b809-474591e831a5")),
            ]
        };
        assert!(evictions(&mut c, &state, 2000, healthy(3)).is_empty());
        let refused = || CheckResult::unreachable(FailureKind::Refused, "refused");
        let gone = |size| {
            let mut s = healthy(size);
            s[0] = seen(1, 1, refused());
            s
        };
        assert_eq!(
            evictions(&mut c, &state, 3000, gone(3)),
            [format!("n1 {OLD}")]
        );
        state.apply(
            meta(2),
            &Command::EvictGaleraNode {
                node: NodeId(1),
                gcomm_uuid: OLD.into(),
                reason: String::new(),
            },
        );
        state.apply(
            meta(3),
            &Command::ClearGaleraEviction {
                node: NodeId(1),
                gcomm_uuid: OLD.into(),
                reason: String::new(),
            },
        );
        // Restarted and joining: counted again, its socket still refuses (its new UUID not
        // reported yet). Not again.
        assert!(evictions(&mut c, &state, 4000, gone(3)).is_empty());
        // It answered with a new UUID and died again: that one is evicted.
        let new = "44444444-aaaa-11f1-b809-474591e831a5";
        let mut back = healthy(3);
        back[0] = seen(1, 1, synced(3, new));
        assert!(evictions(&mut c, &state, 5000, back).is_empty());
        assert_eq!(
            evictions(&mut c, &state, 6000, gone(3)),
            [format!("n1 {new}")]
        );
    }
}
