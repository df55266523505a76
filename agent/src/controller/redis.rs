//! The Redis master's controller: the timeline and lease embargo of the Redis decision, its
//! inputs, the failover duration metric and the reconcile target.
//!
//! The decision itself is `decide::redis` (pure, golden-tested); the clocks it needs between
//! cycles are `decide::timeline`. This module only wires them to the driver's cycle, so the
//! behaviour is exactly what it was when this code sat in the driver.
//!
//! Caveats:
//! - The failover duration is measured from the old master's first failed check as the
//!   reports tell it (`first_failure_age_ms`), on this node's clock, and observed only by the
//!   leader that decided the change.
//! - Until the first observation, every peer is under embargo (as in the transport): a peer's
//!   lease is renewed only once this node knows it applied the newest decision.

use std::collections::BTreeSet;

use crate::cluster::{Authority, ChangeKind, ClusterState, RedisAuthority};
use crate::decide::redis::{first_failure_age_ms, FailoverSettings, RedisInputs};
use crate::decide::timeline::{embargo, suspect_lease_age_ms, RedisTimeline};
use crate::decide::{ServiceInputs, ServicePlan};
use crate::ids::{Epoch, LogIndex, NodeId};
use crate::metrics::Metrics;
use crate::reconcile::redis::RedisTarget;

use super::{Context, Controller, ServiceTarget};

/// The Redis controller. See the module docs.
pub struct RedisController {
    settings: FailoverSettings,
    probe_interval_ms: u64,
    metrics: Metrics,
    timeline: RedisTimeline,
    embargo: BTreeSet<NodeId>,
    seen_epoch: Epoch,
    seen_decision: (Option<LogIndex>, Option<LogIndex>),
    /// When the committed master's failure began (monotonic ms), for the duration metric.
    down_since_ms: Option<u64>,
    plan: Option<ServicePlan>,
}

impl RedisController {
    /// A controller for an agent that started at `started_ms` with `state` restored.
    /// `probe_interval_ms` is the Redis probe's interval (it dates a master's first failed
    /// check).
    pub fn new(
        me: NodeId,
        members: &[NodeId],
        state: &ClusterState,
        settings: FailoverSettings,
        probe_interval_ms: u64,
        metrics: Metrics,
        started_ms: u64,
    ) -> Self {
        RedisController {
            settings,
            probe_interval_ms,
            metrics,
            timeline: RedisTimeline::new(started_ms),
            embargo: members.iter().copied().filter(|&m| m != me).collect(),
            seen_epoch: state.redis.epoch,
            seen_decision: (None, None),
            down_since_ms: None,
            plan: None,
        }
    }

    /// Metrics and logs for a newly applied change of Redis master.
    fn on_master_change(&mut self, members: &[NodeId], authority: &RedisAuthority, mono: u64) {
        let metrics = &self.metrics;
        metrics.redis_epoch.set(authority.epoch.0 as i64);
        for m in members {
            metrics
                .redis_committed_master
                .with_label_values(&[&m.to_string()])
                .set(i64::from(authority.master == Some(*m)));
        }
        let Some(c) = &authority.last_change else {
            return;
        };
        metrics
            .redis_failovers
            .with_label_values(&[c.kind.as_str()])
            .inc();
        if let Some(since) = self.down_since_ms.take() {
            if c.kind == ChangeKind::Automatic {
                metrics
                    .redis_failover_duration
                    .with_label_values(&[c.kind.as_str()])
                    .observe(mono.saturating_sub(since) as f64 / 1000.0);
            }
        }
        tracing::warn!(master = %c.to, from = ?c.from.map(|f| f.to_string()), epoch = %c.epoch,
            kind = c.kind.as_str(), index = %c.index, reason = %c.reason, "redis master changed");
    }
}

impl Controller for RedisController {
    fn authority(&self) -> Authority {
        Authority::Redis
    }

    fn observe(&mut self, cx: &Context<'_>) -> bool {
        let authority = &cx.state.redis;
        let mono = cx.clock.mono_ms;
        let decision_index = (
            authority.last_change.as_ref().map(|c| c.index),
            authority.suspect.as_ref().map(|c| c.index),
        );
        // Peers lift their lease embargo on this node once its report shows that it applied
        // the newest decision: report at once.
        let report_now = decision_index != self.seen_decision;
        if decision_index.1 != self.seen_decision.1 {
            if let Some(s) = &authority.suspect {
                tracing::warn!(suspect = %s.node, epoch = %s.epoch, index = %s.index,
                    reason = %s.reason, "redis master suspected");
            }
        }
        self.seen_decision = decision_index;
        if authority.epoch != self.seen_epoch {
            self.seen_epoch = authority.epoch;
            self.on_master_change(cx.members, authority, mono);
        }
        self.timeline
            .observe(cx.me, authority, &cx.reports.applied, mono);
        self.embargo = embargo(cx.me, cx.members, authority, &cx.reports.applied);
        report_now
    }

    fn embargo(&self) -> BTreeSet<NodeId> {
        self.embargo.clone()
    }

    fn inputs<'a>(&'a self, cx: &'a Context<'a>) -> Option<ServiceInputs<'a>> {
        if !cx.is_leader {
            return None;
        }
        let authority = &cx.state.redis;
        let mono = cx.clock.mono_ms;
        let quorum = cx.members.len() / 2 + 1;
        // The larger of the two bounds on the suspect's lease (see `decide::timeline`).
        let mut suspect_embargo_ms = self
            .timeline
            .suspect_embargo_ms(quorum, mono)
            .into_iter()
            .chain(suspect_lease_age_ms(
                cx.members,
                authority,
                &cx.reports.applied,
                &cx.reports.pongs,
                mono,
            ))
            .max();
        if cx.skip_lease_wait && authority.suspect.is_some() {
            suspect_embargo_ms = Some(u64::MAX / 2);
        }
        let suspect_reconciled = authority.suspect.as_ref().is_some_and(|s| {
            cx.reports
                .reconciled
                .get(&s.node)
                .is_some_and(|&r| r >= s.index.0)
        });
        let suspect_applied_by_all = authority.suspect.as_ref().is_some_and(|s| {
            cx.assume_applied_by_all
                || cx.members.iter().all(|m| {
                    let fresh = cx
                        .reports
                        .ages
                        .get(m)
                        .is_some_and(|&a| a <= self.settings.freshness_ms);
                    fresh && cx.reports.applied.get(m).is_some_and(|&a| a >= s.index.0)
                })
        });
        let wall_age = authority
            .last_change
            .as_ref()
            .and_then(|c| u64::try_from(cx.clock.wall.0.saturating_sub(c.at.0)).ok());
        Some(ServiceInputs::Redis(RedisInputs {
            members: cx.members,
            authority,
            seen: &cx.reports.seen,
            report_age_ms: &cx.reports.ages,
            since_change_ms: self.timeline.since_change_ms(mono, wall_age),
            suspect_embargo_ms,
            suspect_reconciled,
            suspect_applied_by_all,
            maintenance: cx.state.maintenance.enabled,
            in_flight: cx.in_flight(Authority::Redis),
            settings: self.settings,
        }))
    }

    fn planned(&mut self, plan: Option<&ServicePlan>, cx: &Context<'_>) {
        let Some(plan) = plan else {
            self.plan = None;
            return;
        };
        let Some(rp) = plan.as_redis() else {
            return;
        };
        let mono = cx.clock.mono_ms;
        if !rp.candidates.is_empty() {
            // Measured from the old master's first failed check (as the reports tell it), not
            // from this decision.
            if self.down_since_ms.is_none() {
                let age = cx.state.redis.master.and_then(|m| {
                    first_failure_age_ms(&cx.reports.seen, m, self.probe_interval_ms)
                });
                self.down_since_ms = Some(age.map_or(mono, |a| mono.saturating_sub(a)));
            }
        } else if plan.is_no_action() {
            self.down_since_ms = None;
        }
        self.plan = Some(plan.clone());
    }

    fn plan(&self) -> Option<&ServicePlan> {
        self.plan.as_ref()
    }

    fn target(&self, state: &ClusterState) -> Option<ServiceTarget> {
        Some(ServiceTarget::Redis(RedisTarget {
            authority: state.redis.clone(),
            maintenance: state.maintenance.enabled,
            has_lease: false,
            lease_granted_at_ms: None,
            now_ms: 0,
        }))
    }
}
