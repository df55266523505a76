//! The Galera controller: full-outage recovery's evidence, its clock, its decision's inputs,
//! metrics, and the target of the local recovery (`reconcile::galera`).
//!
//! On the leader, every decision cycle, it reads each member's evidence from the health
//! reports (`decide::galera::evidence_from_reports`: a node's own agent's fresh check of its
//! MariaDB, plus the peers that saw it Primary) and measures, on the monotonic clock, how long
//! no Primary component has been seen in any fresh report while every member reported. A new
//! leader starts that clock afresh: a leader change can only delay an outage, never hasten
//! one.
//!
//! Every node publishes the committed authority and maintenance as the target of its local
//! recovery: the rejoin of a fallen node is each agent's own business (see
//! `reconcile::galera`), the bootstrap of an outage is the committed decision's.
//!
//! It also measures how long the open outage's committed bootstrap node has been stopped
//! again after its own agent said it carried the bootstrap out (or refused it because its
//! position moved since the decision), with nothing Primary anywhere: past `rebootstrap_after` the decision opens the next outage (a
//! bootstrap that left no Primary behind, say the node crashed before anyone joined it).
//!
//! Caveats:
//! - Health never enters the log: the evidence a bootstrap was decided on is kept in the
//!   decision's `evidence` line, not as structured data.
//! - No lease embargo: a Galera action is fenced by its outage number and decision index, and
//!   a node behind the newest decision at worst waits.

use std::collections::BTreeMap;

use crate::cluster::{Authority, ClusterState, OutageId};
use crate::decide::galera::{
    any_primary, evidence_from_reports, GaleraEvidence, GaleraInputs, GaleraPlant, GaleraSettings,
    ProcessState,
};
use crate::decide::{ServiceInputs, ServicePlan};
use crate::ids::NodeId;
use crate::metrics::Metrics;
use crate::observation::Service;
use crate::reconcile::galera::GaleraTarget;

use super::{Context, Controller, SeenKey, ServiceTarget};

/// The Galera controller. See the module docs.
pub struct GaleraController {
    settings: GaleraSettings,
    metrics: Metrics,
    evidence: BTreeMap<NodeId, GaleraEvidence>,
    /// Whether any fresh report shows a Primary component, with `evidence`.
    any_primary: bool,
    /// The observations `evidence` and `any_primary` were computed from.
    evidence_of: SeenKey,
    /// Since when (monotonic ms) this leader has seen no Primary anywhere, every member
    /// reporting.
    no_primary_since: Option<u64>,
    /// Since when (monotonic ms) the open outage's bootstrap node has been seen fallen after
    /// carrying its bootstrap out (see [`GaleraInputs::bootstrap_fallen_ms`]), per outage,
    /// and whether every node's report confirms it this cycle.
    fallen_since: Option<(OutageId, u64, bool)>,
    /// Whether that node runs (non-Primary) rather than stopped, as last seen.
    fallen_running: bool,
    seen_outage: Option<(u64, bool, bool)>,
    plan: Option<ServicePlan>,
}

impl GaleraController {
    /// A controller with the decision's tunables.
    pub fn new(settings: GaleraSettings, metrics: Metrics) -> Self {
        GaleraController {
            settings,
            metrics,
            evidence: BTreeMap::new(),
            any_primary: false,
            evidence_of: SeenKey::default(),
            no_primary_since: None,
            fallen_since: None,
            fallen_running: false,
            seen_outage: None,
            plan: None,
        }
    }

    fn on_authority(&mut self, state: &ClusterState) {
        let g = &state.galera;
        let key = g
            .outage
            .as_ref()
            .map(|o| (o.number.0, o.bootstrap.is_some(), o.ended.is_some()));
        if key == self.seen_outage {
            return;
        }
        self.seen_outage = key;
        let m = &self.metrics;
        m.galera_outage_number
            .set(i64::try_from(g.number().0).unwrap_or(i64::MAX));
        m.galera_outage_open.set(i64::from(g.open().is_some()));
        let Some(o) = &g.outage else {
            return;
        };
        match (&o.bootstrap, &o.ended) {
            (_, Some(end)) => {
                tracing::warn!(outage = %o.number, index = %end.index, reason = %end.reason,
                    "galera outage ended");
            }
            (Some(b), None) => {
                m.galera_bootstraps
                    .with_label_values(&[b.kind.as_str()])
                    .inc();
                tracing::warn!(outage = %o.number, node = %b.node, mode = b.mode.as_str(),
                    kind = b.kind.as_str(), index = %b.index, reason = %b.reason,
                    evidence = %b.evidence, "galera bootstrap committed");
            }
            (None, None) => {
                tracing::warn!(outage = %o.number, index = %o.opened.index,
                    reason = %o.opened.reason, "galera outage opened");
            }
        }
    }
}

impl Controller for GaleraController {
    fn authority(&self) -> Authority {
        Authority::Galera
    }

    fn observe(&mut self, cx: &Context<'_>) -> bool {
        self.on_authority(cx.state);
        if !cx.is_leader {
            self.evidence.clear();
            self.evidence_of = SeenKey::default();
            self.no_primary_since = None;
            self.fallen_since = None;
            return false;
        }
        if cx.reports.seen.is_empty() {
            // Not a decision cycle: the reports were not read.
            return false;
        }
        let fresh = self.settings.freshness_ms;
        let key = SeenKey::of(
            &cx.reports.seen,
            &[Service::Mariadb],
            fresh,
            cx.clock.mono_ms,
        );
        if !key.same(&self.evidence_of) {
            self.evidence = evidence_from_reports(cx.members, &cx.reports.seen, fresh);
            self.any_primary = any_primary(&cx.reports.seen, fresh);
            self.evidence_of = key;
        }
        let everyone = cx.members.iter().all(|m| self.evidence.contains_key(m))
            || self.settings.plant == GaleraPlant::SilentAsAbsent;
        let primary = self.any_primary;
        if primary || !everyone {
            self.no_primary_since = None;
        } else {
            self.no_primary_since.get_or_insert(cx.clock.mono_ms);
        }
        // The committed bootstrap was carried out (its own agent says so, or that it refused
        // it because its node's position moved) and that mariadbd fell again: stopped, or
        // running non-Primary (alone after the node that joined it died), nothing Primary
        // anywhere (other nodes may run non-Primary, waiting to join it). A node whose report
        // is missing this cycle neither confirms nor denies it: the time seen so far is kept,
        // but not reported.
        let mut running = false;
        let fallen = cx.state.galera.open().and_then(|o| {
            let b = o.bootstrap.as_ref()?;
            let denied = primary
                || self.evidence.values().any(|e| e.primary)
                || self.evidence.get(&b.node).is_some_and(|e| {
                    e.process == ProcessState::Unknown || e.bootstrapped != Some(o.number)
                });
            if denied {
                return None;
            }
            running = self
                .evidence
                .get(&b.node)
                .is_some_and(|e| e.process == ProcessState::Running);
            let confirmed = cx.members.iter().all(|m| self.evidence.contains_key(m));
            Some((o.number, confirmed))
        });
        self.fallen_running = running;
        self.fallen_since = match (fallen, self.fallen_since) {
            (Some((n, confirmed)), Some((m, since, _))) if n == m => Some((m, since, confirmed)),
            (Some((n, true)), _) => Some((n, cx.clock.mono_ms, true)),
            (Some((_, false)), _) | (None, _) => None,
        };
        false
    }

    fn inputs<'a>(&'a self, cx: &'a Context<'a>) -> Option<ServiceInputs<'a>> {
        if !cx.is_leader {
            return None;
        }
        Some(ServiceInputs::Galera(GaleraInputs {
            members: cx.members,
            authority: &cx.state.galera,
            evidence: &self.evidence,
            report_age_ms: &cx.reports.ages,
            no_primary_ms: self
                .no_primary_since
                .map(|s| cx.clock.mono_ms.saturating_sub(s)),
            bootstrap_fallen_ms: self
                .fallen_since
                .filter(|&(_, _, confirmed)| confirmed)
                .map(|(_, s, _)| cx.clock.mono_ms.saturating_sub(s)),
            bootstrap_fallen_running: self.fallen_running,
            maintenance: cx.state.maintenance.enabled,
            in_flight: cx.in_flight(Authority::Galera),
            settings: self.settings,
        }))
    }

    fn planned(&mut self, plan: Option<&ServicePlan>, _cx: &Context<'_>) {
        self.plan = plan.cloned();
    }

    fn plan(&self) -> Option<&ServicePlan> {
        self.plan.as_ref()
    }

    fn target(&self, state: &ClusterState) -> Option<ServiceTarget> {
        Some(ServiceTarget::Galera(GaleraTarget {
            authority: state.galera.clone(),
            maintenance: state.maintenance.enabled,
            evicted: state.galera_writer.evicted.keys().copied().collect(),
        }))
    }
}
