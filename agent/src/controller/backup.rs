//! The backup controller: the backup decision's inputs and clocks, its metrics, and the
//! target of the local backup runner (`reconcile::backup`).
//!
//! Every node follows the committed backup authority: it notes when it first saw each lease
//! in force (its monotonic clock; a new leader counts from its own first sight, which is never
//! before the grant committed, so its expiry is never early), and keeps the backup metrics
//! (last success per component, size, duration, verification) from the catalog, so every
//! node's `/metrics` tells the same.
//!
//! On the leader, each decision cycle, it builds every member's candidacy from the fresh
//! reports: its own agent reporting, its MariaDB Synced and Primary by its own check (the
//! writer evidence's `serving`), its Gluster mounts healthy by its own check; and, after an
//! expired lease, whether the old holder's runner has surely stopped
//! (`decide::backup::previous_stopped`).
//!
//! Its lease embargo: after an expired lease, the old holder gets no lease renewal from this
//! node until its report shows that it applied the end (its runner needs that lease to go on).
//!
//! Caveats: a node's candidacy uses only its own agent's checks (a peer cannot see a mount).

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::{Authority, ClusterState, Component};
use crate::decide::backup::{previous_stopped, BackupInputs, BackupSettings, Candidate};
use crate::decide::galera_writer::{writer_evidence_from_reports, WriterEvidence, WriterMemory};
use crate::decide::{ServiceInputs, ServicePlan};
use crate::ids::{BackupId, NodeId};
use crate::metrics::Metrics;
use crate::observation::{Service, Status};
use crate::reconcile::backup::BackupTarget;

use super::{Context, Controller, SeenKey, ServiceTarget};

/// The backup controller. See the module docs.
pub struct BackupController {
    settings: BackupSettings,
    metrics: Metrics,
    /// The lease in force and when this node first saw it (monotonic ms).
    lease_seen: Option<(BackupId, u64)>,
    /// The catalog's newest run, as the metrics last showed it.
    shown: Option<BackupId>,
    candidates: BTreeMap<NodeId, Candidate>,
    evidence: BTreeMap<NodeId, WriterEvidence>,
    evidence_of: SeenKey,
    memory: WriterMemory,
    /// The last run's end, when its lease expired: (holder, id, end index).
    expired: Option<(NodeId, BackupId, u64)>,
    embargo: BTreeSet<NodeId>,
    plan: Option<ServicePlan>,
}

impl BackupController {
    /// A controller with the decision's tunables.
    pub fn new(settings: BackupSettings, metrics: Metrics) -> Self {
        metrics.backup_last_verified.set(-1);
        BackupController {
            settings,
            metrics,
            lease_seen: None,
            shown: None,
            candidates: BTreeMap::new(),
            evidence: BTreeMap::new(),
            evidence_of: SeenKey::default(),
            memory: WriterMemory::default(),
            expired: None,
            embargo: BTreeSet::new(),
            plan: None,
        }
    }

    fn on_authority(&mut self, state: &ClusterState, now_ms: u64) {
        let b = &state.backup;
        match (&b.lease, self.lease_seen) {
            (Some(l), Some((id, _))) if l.id == id => {}
            (Some(l), _) => {
                self.lease_seen = Some((l.id, now_ms));
                tracing::info!(backup = %l.id, node = %l.node, trigger = %l.trigger,
                    attempt = l.attempt, index = %l.index, "backup lease in force");
            }
            (None, _) => self.lease_seen = None,
        }
        self.metrics
            .backup_running
            .set(i64::from(b.lease.is_some()));
        let newest = b.catalog.front().map(|r| r.id);
        if newest == self.shown {
            return;
        }
        let first = self.shown.is_none();
        self.shown = newest;
        let Some(r) = b.catalog.front() else {
            return;
        };
        let m = &self.metrics;
        m.backup_last_verified.set(i64::from(r.verified));
        if !first {
            let result = if r.verified { "verified" } else { "failed" };
            m.backup_runs.with_label_values(&[result]).inc();
            if r.verified {
                tracing::info!(backup = %r.id, node = %r.node, reason = %r.reason,
                    "backup verified");
            } else {
                tracing::warn!(backup = %r.id, node = %r.node, reason = %r.reason,
                    "backup failed");
            }
        }
        for c in Component::ALL {
            let newest_ok = b.catalog.iter().filter(|r| r.verified).find_map(|r| {
                r.summary
                    .components
                    .iter()
                    .find(|s| s.component == c)
                    .map(|s| (r, s))
            });
            if let Some((r, s)) = newest_ok {
                let l = [c.as_str()];
                m.backup_last_success
                    .with_label_values(&l)
                    .set(r.finished_at.0 / 1000);
                m.backup_last_duration
                    .with_label_values(&l)
                    .set(i64::try_from(s.duration_ms / 1000).unwrap_or(i64::MAX));
                m.backup_last_size
                    .with_label_values(&l)
                    .set(i64::try_from(s.bytes).unwrap_or(i64::MAX));
            }
        }
    }

    fn candidates_from(&mut self, cx: &Context<'_>) {
        let fresh = self.settings.freshness_ms;
        let now = cx.clock.mono_ms;
        let key = SeenKey::of(&cx.reports.seen, &[Service::Mariadb], fresh, now);
        if !key.same(&self.evidence_of) {
            self.evidence = writer_evidence_from_reports(
                cx.members,
                &cx.reports.seen,
                fresh,
                now,
                &mut self.memory,
            );
            self.evidence_of = key;
        }
        let mut out = BTreeMap::new();
        for &n in cx.members {
            let own_mounts: Vec<Status> = cx
                .reports
                .seen
                .iter()
                .filter(|s| {
                    s.observer == n
                        && s.age_ms <= fresh
                        && s.observation.id.subject == n
                        && s.observation.id.service == Service::GlusterMount
                })
                .map(|s| s.observation.status)
                .collect();
            let e = self.evidence.get(&n);
            out.insert(
                n,
                Candidate {
                    reporting: cx.reports.ages.get(&n).is_some_and(|a| *a <= fresh),
                    synced: e.filter(|e| e.answered).map(|e| e.serving),
                    db_state: e.map(|e| e.state.clone()).unwrap_or_default(),
                    mounts_ok: (!own_mounts.is_empty())
                        .then(|| own_mounts.iter().all(|s| *s == Status::Healthy)),
                },
            );
        }
        self.candidates = out;
    }
}

impl Controller for BackupController {
    fn authority(&self) -> Authority {
        Authority::Backup
    }

    fn observe(&mut self, cx: &Context<'_>) -> bool {
        self.on_authority(cx.state, cx.clock.mono_ms);
        // After an expiry, the old holder gets no lease renewal from this node until it
        // reports that it applied the end; it reports at once when it has.
        let expired = cx
            .state
            .backup
            .catalog
            .front()
            .filter(|r| r.expired)
            .map(|r| (r.node, r.id, r.index.0));
        let report_now = expired != self.expired;
        self.expired = expired;
        self.embargo = crate::decide::timeline::expired_holder_embargo(
            cx.me,
            expired.map(|(node, _, end)| (node, end)),
            &cx.reports.applied,
        );
        if !cx.is_leader {
            self.candidates.clear();
            self.evidence.clear();
            self.evidence_of = SeenKey::default();
            self.metrics.backup_next_due.set(0);
            return report_now;
        }
        if !cx.reports.seen.is_empty() {
            self.candidates_from(cx);
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
        let w = &cx.state.galera_writer;
        Some(ServiceInputs::Backup(BackupInputs {
            members: cx.members,
            authority: &cx.state.backup,
            maintenance: cx.state.maintenance.enabled,
            galera_outage_open: cx.state.galera.open().is_some(),
            galera_writer: w.writer,
            galera_evicted: w.evicted.keys().copied().collect(),
            redis_master: cx.state.redis.master,
            candidates: &self.candidates,
            runs: &cx.reports.backup_runs,
            report_ages: &cx.reports.ages,
            lease_seen_ms: self
                .lease_seen
                .map(|(_, at)| cx.clock.mono_ms.saturating_sub(at)),
            previous_stopped: match self.expired {
                Some(_) if cx.assume_backup_stopped => Ok(()),
                Some((node, id, end)) => previous_stopped(
                    cx.members,
                    node,
                    id,
                    end,
                    &cx.reports.applied,
                    &cx.reports.pongs,
                    &cx.reports.backup_runs,
                    cx.clock.mono_ms,
                    &self.settings,
                ),
                None => Ok(()),
            },
            now: cx.clock.wall,
            in_flight: cx.in_flight(Authority::Backup),
            settings: &self.settings,
        }))
    }

    fn planned(&mut self, plan: Option<&ServicePlan>, _cx: &Context<'_>) {
        if let Some(due) = plan
            .and_then(ServicePlan::as_backup)
            .and_then(|p| p.next_due)
        {
            self.metrics.backup_next_due.set(due.0 / 1000);
        }
        self.plan = plan.cloned();
    }

    fn plan(&self) -> Option<&ServicePlan> {
        self.plan.as_ref()
    }

    fn target(&self, state: &ClusterState) -> Option<ServiceTarget> {
        Some(ServiceTarget::Backup(BackupTarget {
            lease: state.backup.lease.clone(),
            maintenance: state.maintenance.enabled,
            galera_writer: state.galera_writer.writer,
            redis_master: state.redis.master,
        }))
    }
}
