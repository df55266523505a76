//! The web rotation controller: the evidence of every node's web tier (its own agent's PHP-FPM
//! and GlusterFS mount checks), the decision's inputs, metrics, and the target of the local
//! web reconciler (`reconcile::web`), which keeps its HAProxy's web backend on the committed
//! rotation.
//!
//! On the leader it keeps, per member, since when it has seen the member healthy without a
//! break (its monotonic clock, handed in): the decision readmits a drained node only after
//! `[web] readmit_after` of it. A new leader starts counting afresh.
//!
//! Caveat: no lease embargo. A cut-off agent's HAProxy keeps its last rotation; the web
//! backend's own checks (`option httpchk`) still take a dead PHP-FPM out of it.

use std::collections::BTreeMap;

use crate::cluster::{Authority, ClusterState};
use crate::decide::web::{web_health_from_reports, NodeWeb, WebInputs, WebSettings};
use crate::decide::{ServiceInputs, ServicePlan};
use crate::ids::NodeId;
use crate::metrics::Metrics;
use crate::reconcile::web::WebTarget;

use super::{Context, Controller, SeenKey, ServiceTarget};

/// The services a node's web health is judged from.
const WEB_SERVICES: [crate::observation::Service; 2] = [
    crate::observation::Service::Phpfpm,
    crate::observation::Service::GlusterMount,
];

/// The web rotation controller. See the module docs.
pub struct WebController {
    settings: WebSettings,
    metrics: Metrics,
    health: BTreeMap<NodeId, NodeWeb>,
    /// The observations `health` was judged from (the same ones give the same health).
    health_of: SeenKey,
    /// Since when (this node's monotonic ms) each member has been healthy without a break, as
    /// this leader saw it.
    healthy_since: BTreeMap<NodeId, u64>,
    /// How long each member has been healthy, as of the last observation.
    healthy_for: BTreeMap<NodeId, u64>,
    seen_epoch: Option<crate::ids::Epoch>,
    plan: Option<ServicePlan>,
}

impl WebController {
    /// A controller with the decision's tunables.
    pub fn new(settings: WebSettings, metrics: Metrics) -> Self {
        WebController {
            settings,
            metrics,
            health: BTreeMap::new(),
            health_of: SeenKey::default(),
            healthy_since: BTreeMap::new(),
            healthy_for: BTreeMap::new(),
            seen_epoch: None,
            plan: None,
        }
    }
}

impl Controller for WebController {
    fn authority(&self) -> Authority {
        Authority::Web
    }

    fn observe(&mut self, cx: &Context<'_>) -> bool {
        let w = &cx.state.web;
        if self.seen_epoch != Some(w.epoch) {
            let first = self.seen_epoch.is_none();
            self.seen_epoch = Some(w.epoch);
            let m = &self.metrics;
            m.web_epoch
                .set(i64::try_from(w.epoch.0).unwrap_or(i64::MAX));
            for n in cx.members {
                m.web_in_rotation
                    .with_label_values(&[&n.to_string()])
                    .set(i64::from(w.in_rotation(*n)));
            }
            m.web_kept_sick.set(i64::from(w.kept.is_some()));
            if !first {
                if let Some(c) = &w.last_change {
                    let drained: Vec<String> = w.drained.keys().map(ToString::to_string).collect();
                    tracing::warn!(epoch = %w.epoch, index = %c.index, drained = ?drained,
                        kept = ?w.kept.as_ref().map(|k| k.node), reason = %c.reason,
                        "web rotation committed");
                }
            }
        }
        if !cx.is_leader {
            self.health.clear();
            self.health_of = SeenKey::default();
            self.healthy_since.clear();
            self.healthy_for.clear();
            return false;
        }
        if !cx.reports.seen.is_empty() {
            let now = cx.clock.mono_ms;
            let fresh = self.settings.freshness_ms;
            let key = SeenKey::of(&cx.reports.seen, &WEB_SERVICES, fresh, now);
            if !key.same(&self.health_of) || !self.health.keys().eq(cx.members.iter()) {
                self.health = web_health_from_reports(cx.members, &cx.reports.seen, fresh);
                self.health_of = key;
            }
            for n in cx.members {
                if self.health.get(n) == Some(&NodeWeb::Healthy) {
                    self.healthy_since.entry(*n).or_insert(now);
                } else {
                    self.healthy_since.remove(n);
                }
            }
            self.healthy_for = self
                .healthy_since
                .iter()
                .map(|(n, since)| (*n, now.saturating_sub(*since)))
                .collect();
        }
        false
    }

    fn inputs<'a>(&'a self, cx: &'a Context<'a>) -> Option<ServiceInputs<'a>> {
        if !cx.is_leader {
            return None;
        }
        Some(ServiceInputs::Web(WebInputs {
            members: cx.members,
            authority: &cx.state.web,
            health: &self.health,
            healthy_for_ms: &self.healthy_for,
            settings: self.settings,
            maintenance: cx.state.maintenance.enabled,
            in_flight: cx.in_flight(Authority::Web),
        }))
    }

    fn planned(&mut self, plan: Option<&ServicePlan>, _cx: &Context<'_>) {
        if let Some(p) = plan.and_then(ServicePlan::as_web) {
            if !p.proposals.is_empty() {
                self.metrics.web_decisions.inc();
            }
        }
        self.plan = plan.cloned();
    }

    fn plan(&self) -> Option<&ServicePlan> {
        self.plan.as_ref()
    }

    fn target(&self, state: &ClusterState) -> Option<ServiceTarget> {
        Some(ServiceTarget::Web(WebTarget {
            authority: state.web.clone(),
        }))
    }
}
