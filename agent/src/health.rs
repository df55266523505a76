//! What every agent's probes see, as known to this agent: a pure store of the latest
//! observations per observer, aged by a monotonic clock passed in as a value.
//!
//! Each agent broadcasts its observations to every peer (not only the leader), so whichever
//! node becomes leader already holds a fresh picture and decides without waiting a report
//! interval. Reports are samples, not authority: they never enter the Raft log.
//!
//! Ages: an observation carries its age when sent (by the sender's monotonic clock); the store
//! adds the time since receipt (by this node's monotonic clock). Wall clocks never matter.
//!
//! Caveats: a report replaces the sender's previous one whole; an observer that stops
//! reporting keeps its last report, which simply grows old (consumers check the age).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::cluster::BackupRun;
use crate::ids::NodeId;
use crate::observation::{Observation, ProbeId, Status};

/// An observation as received, with its age at receipt.
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    /// The observation (shared: every decision reads the views of every report, and cloning
    /// each one's details was most of the leader's work between events).
    pub observation: Arc<Observation>,
    /// Its age when it arrived, in milliseconds.
    pub age_at_receipt_ms: u64,
}

/// One observer's latest report.
#[derive(Clone, Debug, PartialEq)]
struct Report {
    received_at_ms: u64,
    observations: Vec<Received>,
    applied_index: u64,
    reconciled_index: u64,
    /// Per peer: when (this node's monotonic ms, dated late) the observer last answered that
    /// peer's lease ping, as of this report.
    pongs: BTreeMap<NodeId, u64>,
    /// The backup the observer runs or last ran under a lease, as of this report.
    backup_run: Option<BackupRun>,
    remedy_run: Option<crate::cluster::RemedyRun>,
}

/// The latest report of every observer. Pure.
#[derive(Clone, Debug, Default)]
pub struct HealthStore {
    reports: BTreeMap<NodeId, Report>,
}

/// One observer's view of one instance, aged to now.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Seen {
    /// Who observed it.
    pub observer: NodeId,
    /// The observation, shared with the report it came in.
    pub observation: Arc<Observation>,
    /// Its age now, in milliseconds.
    pub age_ms: u64,
}

impl HealthStore {
    /// Replaces `observer`'s report. `now_ms` is this node's monotonic clock.
    pub fn ingest(
        &mut self,
        observer: NodeId,
        observations: Vec<Received>,
        applied_index: u64,
        now_ms: u64,
    ) {
        self.reports.insert(
            observer,
            Report {
                received_at_ms: now_ms,
                observations,
                applied_index,
                reconciled_index: 0,
                pongs: BTreeMap::new(),
                backup_run: None,
                remedy_run: None,
            },
        );
    }

    /// Records when `observer` last answered each peer's lease ping, from the ages its latest
    /// report gave (call right after [`HealthStore::ingest`]). Each answer is dated as
    /// `received - age` on this node's clock: the report spent some time in transit, so the
    /// date errs late, which makes a wait that counts from it longer, never shorter.
    pub fn set_pongs(&mut self, observer: NodeId, ages_ms: &BTreeMap<NodeId, u64>) {
        if let Some(r) = self.reports.get_mut(&observer) {
            r.pongs = ages_ms
                .iter()
                .map(|(&peer, &age)| (peer, r.received_at_ms.saturating_sub(age)))
                .collect();
        }
    }

    /// Per observer, per peer: when (this node's monotonic ms) the observer last answered
    /// that peer's lease ping, as its latest report told.
    pub fn pongs(&self) -> BTreeMap<NodeId, BTreeMap<NodeId, u64>> {
        self.reports
            .iter()
            .map(|(&o, r)| (o, r.pongs.clone()))
            .collect()
    }

    /// Records the newest Redis decision `observer`'s reconciler carried out, as its latest
    /// report said (call right after [`HealthStore::ingest`]).
    pub fn set_reconciled(&mut self, observer: NodeId, index: u64) {
        if let Some(r) = self.reports.get_mut(&observer) {
            r.reconciled_index = index;
        }
    }

    /// Records the backup run `observer`'s latest report carried (call right after
    /// [`HealthStore::ingest`]).
    pub fn set_backup_run(&mut self, observer: NodeId, run: Option<BackupRun>) {
        if let Some(r) = self.reports.get_mut(&observer) {
            r.backup_run = run;
        }
    }

    /// Records the remediation `observer`'s latest report carried (or none).
    pub fn set_remedy_run(&mut self, observer: NodeId, run: Option<crate::cluster::RemedyRun>) {
        if let Some(r) = self.reports.get_mut(&observer) {
            r.remedy_run = run;
        }
    }

    /// The remediation every observer's latest report carried, by observer (those with one).
    pub fn remedy_runs(&self) -> BTreeMap<NodeId, crate::cluster::RemedyRun> {
        self.reports
            .iter()
            .filter_map(|(&o, r)| Some((o, r.remedy_run.clone()?)))
            .collect()
    }

    /// The backup run every observer's latest report carried, by observer (those with one).
    pub fn backup_runs(&self) -> BTreeMap<NodeId, BackupRun> {
        self.reports
            .iter()
            .filter_map(|(&o, r)| Some((o, r.backup_run.clone()?)))
            .collect()
    }

    /// The reconciled index every observer last reported, by observer.
    pub fn reconciled(&self) -> BTreeMap<NodeId, u64> {
        self.reports
            .iter()
            .map(|(&o, r)| (o, r.reconciled_index))
            .collect()
    }

    /// Age of every observer's latest report, by observer.
    pub fn report_ages(&self, now_ms: u64) -> BTreeMap<NodeId, u64> {
        self.reports
            .iter()
            .map(|(&o, r)| (o, now_ms.saturating_sub(r.received_at_ms)))
            .collect()
    }

    /// The applied index every observer last reported, by observer.
    pub fn applied(&self) -> BTreeMap<NodeId, u64> {
        self.reports
            .iter()
            .map(|(&o, r)| (o, r.applied_index))
            .collect()
    }

    /// Every observation of every observer, aged to `now_ms`, sorted by instance then observer.
    pub fn all(&self, now_ms: u64) -> Vec<Seen> {
        let mut out: Vec<Seen> = self
            .reports
            .iter()
            .flat_map(|(&observer, r)| {
                let since = now_ms.saturating_sub(r.received_at_ms);
                r.observations.iter().map(move |o| Seen {
                    observer,
                    observation: o.observation.clone(),
                    age_ms: o.age_at_receipt_ms.saturating_add(since),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.observation.id, a.observer).cmp(&(&b.observation.id, b.observer)));
        out
    }

    /// Views of one instance by every observer, aged to `now_ms`.
    pub fn of(&self, id: &ProbeId, now_ms: u64) -> Vec<Seen> {
        self.all(now_ms)
            .into_iter()
            .filter(|s| &s.observation.id == id)
            .collect()
    }

    /// Per instance: the subject's own view when it has one (it sees its own services best),
    /// else the freshest, plus every observer's status. Sorted by instance.
    pub fn summary(&self, now_ms: u64) -> Vec<InstanceView> {
        let mut by_id: BTreeMap<ProbeId, Vec<Seen>> = BTreeMap::new();
        for s in self.all(now_ms) {
            by_id.entry(s.observation.id.clone()).or_default().push(s);
        }
        by_id
            .into_iter()
            .filter_map(|(id, seen)| {
                let primary = seen
                    .iter()
                    .find(|s| s.observer == id.subject)
                    .or_else(|| seen.iter().min_by_key(|s| s.age_ms))?
                    .clone();
                let seen_by = seen
                    .iter()
                    .map(|s| (s.observer, s.observation.status))
                    .collect();
                Some(InstanceView {
                    id,
                    primary,
                    seen_by,
                })
            })
            .collect()
    }
}

/// One instance as shown in status.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InstanceView {
    /// Which instance.
    pub id: ProbeId,
    /// The subject's own view, or the freshest.
    pub primary: Seen,
    /// Every observer's status of it.
    pub seen_by: BTreeMap<NodeId, Status>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::UnixMillis;
    use crate::observation::{CheckResult, Service};

    fn obs(subject: u64, service: Service, status: Status) -> Received {
        let last = match status {
            Status::Healthy => CheckResult::healthy(serde_json::Value::Null),
            _ => CheckResult::unreachable(crate::observation::FailureKind::Refused, "x"),
        };
        Received {
            observation: std::sync::Arc::new(Observation {
                id: ProbeId {
                    subject: NodeId(subject),
                    service,
                    target: String::new(),
                },
                status,
                last,
                failures: 0,
                successes: 1,
                latency_us: 100,
                observed_at: UnixMillis(0),
            }),
            age_at_receipt_ms: 50,
        }
    }

    #[test]
    fn ages_add_time_since_receipt_and_reports_replace() {
        let mut h = HealthStore::default();
        h.ingest(
            NodeId(2),
            vec![obs(1, Service::Redis, Status::Healthy)],
            7,
            1_000,
        );
        let all = h.all(1_300);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].age_ms, 350);
        h.ingest(
            NodeId(2),
            vec![obs(1, Service::Redis, Status::Unreachable)],
            7,
            2_000,
        );
        let all = h.all(2_000);
        assert_eq!(all.len(), 1, "a report replaces the previous one");
        assert_eq!(all[0].observation.status, Status::Unreachable);
        assert_eq!(all[0].age_ms, 50);
    }

    #[test]
    fn summary_prefers_the_subjects_own_view_and_lists_all() {
        let mut h = HealthStore::default();
        h.ingest(
            NodeId(1),
            vec![obs(1, Service::Redis, Status::Healthy)],
            0,
            0,
        );
        h.ingest(
            NodeId(2),
            vec![obs(1, Service::Redis, Status::Unreachable)],
            7,
            0,
        );
        h.ingest(
            NodeId(3),
            vec![obs(1, Service::Redis, Status::Unreachable)],
            7,
            0,
        );
        let s = h.summary(10);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].primary.observer, NodeId(1));
        assert_eq!(s[0].seen_by.len(), 3);
        assert_eq!(s[0].seen_by[&NodeId(3)], Status::Unreachable);
        let of = h.of(&s[0].id, 10);
        assert_eq!(
            of.iter().map(|x| x.observer.0).collect::<Vec<_>>(),
            [1, 2, 3]
        );
    }
}
