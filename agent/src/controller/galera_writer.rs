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
//! - No lease embargo: the HAProxy checks of each server ask that server's own agent
//!   (`GET /galera/writer`), which answers from the state it applied and a fresh local check.

use std::collections::BTreeMap;

use crate::cluster::{Authority, ClusterState};
use crate::decide::galera_writer::{
    writer_evidence_from_reports, WriterEvidence, WriterInputs, WriterSettings,
};
use crate::decide::{ServiceInputs, ServicePlan};
use crate::ids::NodeId;
use crate::metrics::Metrics;
use crate::reconcile::galera_writer::WriterTarget;

use super::{Context, Controller, ServiceTarget};

/// The Galera writer controller. See the module docs.
pub struct GaleraWriterController {
    settings: WriterSettings,
    metrics: Metrics,
    evidence: BTreeMap<NodeId, WriterEvidence>,
    gcomm: BTreeMap<NodeId, String>,
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
            gcomm: BTreeMap::new(),
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
        if !cx.is_leader {
            self.evidence.clear();
            return false;
        }
        if cx.reports.seen.is_empty() {
            return false;
        }
        self.evidence = writer_evidence_from_reports(
            cx.members,
            &cx.reports.seen,
            self.settings.freshness_ms,
            &mut self.gcomm,
        );
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
            gcomm: &self.gcomm,
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
                    crate::cluster::Command::EvictGaleraNode { .. } => "evict",
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
