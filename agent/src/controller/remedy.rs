//! The remediation controller: each node's needs from its own agent's reports, how long this
//! leader has known the lease in force (its monotonic clock: the expiry), the decision's
//! inputs, metrics, and the target of the local remediation task (`local::spawn_remedy`),
//! which carries out the lease on its own node.
//!
//! Its lease embargo, as the backup controller's: after an expired lease, the old holder gets
//! no ping lease renewal from this node until its report shows it applied the end, and the
//! leader grants no other remediation until it surely stopped.
//!
//! Caveat: the expiry counts from when this leader first saw the lease; a new leader counts
//! afresh, so a lease whose holder went silent may outlive its bound by one leader change.

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::{Authority, ClusterState};
use crate::decide::remedy::{needs_from_reports, previous_stopped, RemedyInputs, RemedySettings};
use crate::decide::{ServiceInputs, ServicePlan};
use crate::ids::{NodeId, RemedyId};
use crate::metrics::Metrics;
use crate::reconcile::remedy::RemedyTarget;

use super::{Context, Controller, SeenKey, ServiceTarget};

/// The services whose observations make the needs.
const REMEDY_SERVICES: [crate::observation::Service; 3] = [
    crate::observation::Service::Phpfpm,
    crate::observation::Service::Gluster,
    crate::observation::Service::GlusterMount,
];

/// The remediation controller. See the module docs.
pub struct RemedyController {
    settings: RemedySettings,
    metrics: Metrics,
    needs: BTreeMap<NodeId, Vec<crate::decide::remedy::Need>>,
    /// The observations `needs` came from (the same ones give the same needs).
    needs_of: SeenKey,
    /// The lease in force and when (this node's monotonic ms) this node first saw it.
    known: Option<(RemedyId, u64)>,
    /// The newest finished record seen (metrics count each end once).
    seen_records: Option<RemedyId>,
    /// The newest expired lease: (its node, its number, the log index of its end).
    expired: Option<(NodeId, RemedyId, u64)>,
    /// Peers whose ping lease this node does not renew: an expired holder until it applied
    /// the end.
    embargo: BTreeSet<NodeId>,
    plan: Option<ServicePlan>,
}

impl RemedyController {
    /// A controller with the decision's tunables.
    pub fn new(settings: RemedySettings, metrics: Metrics) -> Self {
        RemedyController {
            settings,
            metrics,
            needs: BTreeMap::new(),
            needs_of: SeenKey::default(),
            known: None,
            seen_records: None,
            expired: None,
            embargo: BTreeSet::new(),
            plan: None,
        }
    }
}

impl Controller for RemedyController {
    fn authority(&self) -> Authority {
        Authority::Remedy
    }

    fn observe(&mut self, cx: &Context<'_>) -> bool {
        let r = &cx.state.remedy;
        match &r.lease {
            Some(l) if self.known.is_none_or(|(id, _)| id != l.id) => {
                self.known = Some((l.id, cx.clock.mono_ms));
                tracing::warn!(id = %l.id, node = %l.node, action = l.action.as_str(),
                    reason = %l.reason, "remediation granted");
            }
            Some(_) => {}
            None => self.known = None,
        }
        self.metrics
            .remedy_running
            .set(i64::from(r.lease.is_some()));
        let newest = r.records.front().map(|x| x.id);
        if newest != self.seen_records {
            let first = self.seen_records.is_none();
            self.seen_records = newest;
            if let (false, Some(rec)) = (first, r.records.front()) {
                let result = match rec.ok {
                    Some(true) => "done",
                    Some(false) => "failed",
                    None => "expired",
                };
                self.metrics
                    .remedies
                    .with_label_values(&[rec.action.as_str(), result])
                    .inc();
                tracing::warn!(id = %rec.id, node = %rec.node, action = rec.action.as_str(),
                    result, detail = %rec.result, "remediation ended");
            }
        }
        // After an expiry, the old holder gets no lease renewal from this node until it
        // reports that it applied the end (its runner starts nothing without that lease).
        let expired = r
            .records
            .front()
            .filter(|x| x.ok.is_none())
            .map(|x| (x.node, x.id, x.index.0));
        let report_now = expired != self.expired;
        self.expired = expired;
        self.embargo = crate::decide::timeline::expired_holder_embargo(
            cx.me,
            expired.map(|(node, _, end)| (node, end)),
            &cx.reports.applied,
        );
        if !cx.is_leader {
            self.needs.clear();
            self.needs_of = SeenKey::default();
            return report_now;
        }
        if !cx.reports.seen.is_empty() {
            let key = SeenKey::of(
                &cx.reports.seen,
                &REMEDY_SERVICES,
                self.settings.freshness_ms,
                cx.clock.mono_ms,
            );
            if !key.same(&self.needs_of) {
                self.needs = needs_from_reports(cx.members, &cx.reports.seen, &self.settings);
                self.needs_of = key;
            }
        }
        report_now
    }

    fn embargo(&self) -> BTreeSet<NodeId> {
        self.embargo.clone()
    }

    fn inputs<'a>(&'a self, cx: &'a Context<'a>) -> Option<ServiceInputs<'a>> {
        if !cx.is_leader {
            return None;
        }
        Some(ServiceInputs::Remedy(RemedyInputs {
            members: cx.members,
            authority: &cx.state.remedy,
            needs: &self.needs,
            runs: &cx.reports.remedy_runs,
            lease_known_ms: self
                .known
                .map(|(_, since)| cx.clock.mono_ms.saturating_sub(since)),
            now: cx.clock.wall,
            backup_holder: cx.state.backup.lease.as_ref().map(|l| l.node),
            galera_outage: cx.state.galera.open().is_some(),
            maintenance: cx.state.maintenance.enabled,
            in_flight: cx.in_flight(Authority::Remedy),
            previous_stopped: match self.expired {
                Some((node, id, end)) => previous_stopped(
                    cx.members,
                    node,
                    id,
                    end,
                    &cx.reports.applied,
                    &cx.reports.pongs,
                    &cx.reports.remedy_runs,
                    cx.clock.mono_ms,
                    &self.settings,
                ),
                None => Ok(()),
            },
            settings: self.settings,
        }))
    }

    fn planned(&mut self, plan: Option<&ServicePlan>, _cx: &Context<'_>) {
        let held = plan
            .and_then(ServicePlan::as_remedy)
            .map_or(0, |p| p.held.len());
        self.metrics
            .remedy_held
            .set(i64::try_from(held).unwrap_or(i64::MAX));
        self.plan = plan.cloned();
    }

    fn plan(&self) -> Option<&ServicePlan> {
        self.plan.as_ref()
    }

    fn target(&self, state: &ClusterState) -> Option<ServiceTarget> {
        let holder = state.backup.lease.as_ref().map(|b| b.node);
        let blocked = match (&state.remedy.lease, state.galera.open()) {
            (_, Some(o)) => Some(format!("Galera outage {} is open", o.number)),
            (Some(l), None) if holder == Some(l.node) => {
                Some(format!("{} holds the backup lease", l.node))
            }
            _ => None,
        };
        Some(ServiceTarget::Remedy(RemedyTarget {
            lease: state.remedy.lease.clone(),
            blocked,
        }))
    }
}
