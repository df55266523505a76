//! The node's own observations: rise/fall trackers for every probe this agent runs, the
//! metrics they feed, and the periodic health report it broadcasts. Owned by the event loop.
//!
//! A report goes out as soon as a status, failure kind or reason changed (the event loop asks
//! after every event, and wakes itself when [`LocalObservations::next_report_in`] says so), at
//! most every [`MIN_REPORT_GAP`], and at least every [`MAX_REPORT_GAP`] regardless (carrying
//! fresh details such as offsets), so peers can tell a silent agent from a quiet one. The
//! shortest gap bounds the traffic of a flapping service; it is short because every step of a
//! failover waits for a report (the evidence, then the suspect's fence).
//!
//! A run of timed-out checks of one probe is dated: each result in it carries `unanswered_ms`,
//! the time from the start of its first check to the end of this one (the Redis decision reads
//! it from the master's own agent: see `decide::redis`, the hung path).
//!
//! A Redis replica's link is dated too: each result of a replica whose link is up carries
//! `link_quiet_ms`, how long its replication offset has not moved, from the first check that
//! saw the current offset to this one (so it errs short by up to a probe interval). The
//! master's pings move the offset every `repl-ping-replica-period` even without writes. Redis's
//! own `master_last_io_seconds_ago` counts whole seconds; this counts to the probe interval,
//! which is what lets the failover decision call a cut link lost in about two seconds. A
//! report goes out at once when a link's quiet time crosses `failover.link_stale_after` (either
//! way), as it does for a verdict change.
//!
//! Clock-free: times come in as milliseconds of the caller's monotonic clock, so the agent and
//! the whole-cluster simulation pace reports with this same code.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::health::Received;
use crate::ids::UnixMillis;
use crate::metrics::Metrics;
use crate::observation::{
    CheckResult, FailureKind, Observation, ProbeId, Service, Status, Thresholds, Tracker,
};

/// Shortest gap between two reports, in milliseconds.
pub const MIN_REPORT_GAP: u64 = 20;
/// Longest gap between two reports, in milliseconds.
pub const MAX_REPORT_GAP: u64 = 1000;

/// Trackers and report timing of the local probes.
pub struct LocalObservations {
    /// Each probe's tracker and when (monotonic ms) its last result came.
    trackers: BTreeMap<ProbeId, (Tracker, Option<u64>)>,
    /// Each probe's run of timed-out checks: when (monotonic ms) its first check started.
    unanswered: BTreeMap<ProbeId, Option<u64>>,
    /// Each Redis replica's replication offset and when (monotonic ms) it was first seen.
    links: BTreeMap<ProbeId, (i64, u64)>,
    /// `failover.link_stale_after` in ms: crossing it asks for a report at once.
    link_stale_after_ms: Option<u64>,
    dirty: bool,
    last_report: Option<u64>,
}

/// Adds how long a run of timed-out checks has had no answer: `unanswered_ms` in the details
/// (what the Redis decision's hung path reads) and in the reason, so that the report goes out
/// as it grows.
fn mark_unanswered(result: &mut CheckResult, ms: u64) {
    if let Some(d) = result.details.as_object_mut() {
        d.insert("unanswered_ms".into(), ms.into());
    } else {
        result.details = serde_json::json!({ "unanswered_ms": ms });
    }
    let reason = result.error.take().unwrap_or_default();
    result.error = Some(format!(
        "{reason} (no answer for {:.1}s)",
        ms as f64 / 1000.0
    ));
}

impl LocalObservations {
    /// Trackers for the given probes, with their rise/fall thresholds.
    pub fn new(probes: impl IntoIterator<Item = (ProbeId, Thresholds)>) -> Self {
        let trackers: BTreeMap<ProbeId, (Tracker, Option<u64>)> = probes
            .into_iter()
            .map(|(id, th)| (id, (Tracker::new(th), None)))
            .collect();
        LocalObservations {
            unanswered: trackers.keys().map(|id| (id.clone(), None)).collect(),
            trackers,
            links: BTreeMap::new(),
            link_stale_after_ms: None,
            dirty: false,
            last_report: None,
        }
    }

    /// Replaces the rise/fall thresholds of the probes named (a reload); the current
    /// observations stay, and the next result is judged by the new thresholds.
    pub fn set_thresholds(&mut self, thresholds: impl IntoIterator<Item = (ProbeId, Thresholds)>) {
        for (id, th) in thresholds {
            if let Some((tracker, _)) = self.trackers.get_mut(&id) {
                tracker.set_thresholds(th);
            }
        }
    }

    /// Reports at once when a replica link's quiet time crosses this (see the module docs).
    pub fn with_link_stale_after(mut self, ms: u64) -> Self {
        self.link_stale_after_ms = Some(ms);
        self
    }

    /// Adds `link_quiet_ms` to a Redis replica's result whose link is up (see the module
    /// docs); forgets the link otherwise. Returns whether the quiet time is past
    /// `link_stale_after`.
    fn date_link(&mut self, id: &ProbeId, result: &mut CheckResult, at_ms: u64) -> bool {
        if id.service != Service::Redis {
            return false;
        }
        let d = &result.details;
        let replica = d.get("role").and_then(|r| r.as_str()) == Some("replica");
        let up = d.get("master_link_up").and_then(|v| v.as_bool()) == Some(true);
        let offset = d.get("slave_repl_offset").and_then(|v| v.as_i64());
        let (true, true, Some(offset)) = (replica, up, offset) else {
            self.links.remove(id);
            return false;
        };
        let since = match self.links.get(id) {
            Some(&(seen, since)) if seen == offset => since,
            _ => {
                self.links.insert(id.clone(), (offset, at_ms));
                at_ms
            }
        };
        let quiet = at_ms.saturating_sub(since);
        if let Some(obj) = result.details.as_object_mut() {
            obj.insert("link_quiet_ms".into(), quiet.into());
        }
        self.link_stale_after_ms.is_some_and(|limit| quiet > limit)
    }

    /// Records one check result of probe `id`, taken at `at` (wall clock, display only) and
    /// `at_ms` (monotonic, for ages); logs status changes and updates metrics.
    pub fn record(
        &mut self,
        id: &ProbeId,
        result: CheckResult,
        latency: Duration,
        at: UnixMillis,
        at_ms: u64,
        metrics: &Metrics,
    ) {
        let Some((tracker, _)) = self.trackers.get(id) else {
            return;
        };
        let was_stale = tracker
            .current()
            .and_then(|o| o.last.details.get("link_quiet_ms"))
            .and_then(|v| v.as_u64())
            .zip(self.link_stale_after_ms)
            .is_some_and(|(q, limit)| q > limit);
        let mut result = result;
        if self.date_link(id, &mut result, at_ms) != was_stale {
            self.dirty = true;
        }
        let Some((tracker, seen)) = self.trackers.get_mut(id) else {
            return;
        };
        let before = tracker.current().map(|o| o.status);
        let before_last = tracker.current().map(verdict_key);
        let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let streak = self.unanswered.get_mut(id);
        match (result.failure, streak) {
            (Some(FailureKind::Timeout), Some(since)) => {
                let started = at_ms.saturating_sub(latency_us / 1000);
                let from = *since.get_or_insert(started);
                mark_unanswered(&mut result, at_ms.saturating_sub(from));
            }
            (_, Some(since)) => *since = None,
            (_, None) => {}
        }
        let o = tracker.record(id, result, latency_us, at);
        *seen = Some(at_ms);
        // Report at once only what changes a verdict (status, failure kind, reason); details
        // such as offsets ride along with the periodic report.
        if before_last.as_ref() != Some(&verdict_key(o)) {
            self.dirty = true;
        }
        if before != Some(o.status) {
            let error = o.last.error.as_deref().unwrap_or("");
            match before {
                None => {
                    tracing::info!(probe = %o.id, status = o.status.as_str(), error, "probe first result")
                }
                Some(b) if o.status == Status::Healthy => {
                    tracing::info!(probe = %o.id, from = b.as_str(), to = o.status.as_str(), "service recovered")
                }
                Some(b) => {
                    tracing::warn!(probe = %o.id, from = b.as_str(), to = o.status.as_str(), error, "service status changed")
                }
            }
        }
        record_metrics(o, latency, metrics);
    }

    /// Asks for a report as soon as the minimum gap allows (for example after this node
    /// applied a new Redis decision, so that peers learn its applied index quickly).
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Whether a report is due at `now_ms`.
    pub fn report_due(&self, now_ms: u64) -> bool {
        match self.last_report {
            None => self.dirty,
            Some(last) => {
                let gap = now_ms.saturating_sub(last);
                (self.dirty && gap >= MIN_REPORT_GAP) || gap >= MAX_REPORT_GAP
            }
        }
    }

    /// When a change waits only for [`MIN_REPORT_GAP`]: the milliseconds until the report is
    /// due; `None` when nothing changed (the periodic report comes with the ticks).
    pub fn next_report_in(&self, now_ms: u64) -> Option<u64> {
        if !self.dirty {
            return None;
        }
        let gap = self
            .last_report
            .map_or(MIN_REPORT_GAP, |last| now_ms.saturating_sub(last));
        Some(MIN_REPORT_GAP.saturating_sub(gap))
    }

    /// Current observations with their ages, and marks a report as sent.
    pub fn take_report(&mut self, now_ms: u64) -> Vec<(Observation, u64)> {
        self.dirty = false;
        self.last_report = Some(now_ms);
        self.trackers
            .values()
            .filter_map(|(t, at)| {
                let o = t.current()?;
                let age = at.map_or(0, |a| now_ms.saturating_sub(a));
                Some((o.clone(), age))
            })
            .collect()
    }
}

/// What a report must carry at once when it changes: status, failure kind and reason, plus
/// the details a failover decision reads (a Redis role and its replication link).
type VerdictKey = (
    Status,
    Status,
    Option<crate::observation::FailureKind>,
    Option<String>,
    Option<serde_json::Value>,
    Option<serde_json::Value>,
);

fn verdict_key(o: &Observation) -> VerdictKey {
    let d = &o.last.details;
    let (role, link) = if o.id.service == Service::Redis {
        (d.get("role").cloned(), d.get("master_link_up").cloned())
    } else {
        (None, None)
    };
    (
        // The tracked status first: a run of failed checks reaching `fall` changes it while
        // the last check reads as the one before (the same refusal).
        o.status,
        o.last.status,
        o.last.failure,
        o.last.error.clone(),
        role,
        link,
    )
}

/// The report as this node stores its own view.
pub fn as_received(items: &[(Observation, u64)]) -> Vec<Received> {
    items
        .iter()
        .map(|(o, age)| Received {
            observation: o.clone().into(),
            age_at_receipt_ms: *age,
        })
        .collect()
}

fn record_metrics(o: &Observation, latency: Duration, m: &Metrics) {
    let node = o.id.subject.to_string();
    let service = o.id.service.as_str();
    let target = o.id.target.as_str();
    m.service_up
        .with_label_values(&[&node, service, target])
        .set(i64::from(o.status.is_up()));
    m.probe_duration
        .with_label_values(&[service])
        .observe(latency.as_secs_f64());
    if let Some(f) = o.last.failure {
        m.probe_failures
            .with_label_values(&[service, f.as_str()])
            .inc();
    }
    let d = &o.last.details;
    let int = |k: &str| d.get(k).and_then(|v| v.as_i64());
    match o.id.service {
        Service::Mariadb => {
            if let Some(v) = int("cluster_size") {
                m.galera_cluster_size.with_label_values(&[&node]).set(v);
            }
            if let Some(v) = int("local_state") {
                m.galera_local_state.with_label_values(&[&node]).set(v);
            }
        }
        Service::Redis => {
            if let Some(role) = d.get("role").and_then(|v| v.as_str()) {
                m.redis_is_master
                    .with_label_values(&[&node])
                    .set(i64::from(role == "master"));
            }
            let offset = if d.get("role").and_then(|v| v.as_str()) == Some("replica") {
                int("slave_repl_offset")
            } else {
                int("master_repl_offset")
            };
            if let Some(v) = offset {
                m.redis_repl_offset.with_label_values(&[&node]).set(v);
            }
            if let Some(v) = int("master_last_io_seconds_ago") {
                m.redis_master_last_io.with_label_values(&[&node]).set(v);
            }
        }
        Service::Phpfpm => {
            if let Some(v) = int("listen_queue") {
                m.phpfpm_listen_queue.with_label_values(&[&node]).set(v);
            }
            if let Some(v) = int("active_processes") {
                m.phpfpm_active.with_label_values(&[&node]).set(v);
            }
        }
        Service::Gluster => {
            if let Some(v) = int("bricks_online") {
                m.gluster_bricks_online.with_label_values(&[&node]).set(v);
            }
            if let Some(v) = int("heal_pending") {
                m.gluster_heal_pending.with_label_values(&[&node]).set(v);
            }
            if let Some(v) = int("split_brain") {
                m.gluster_split_brain.with_label_values(&[&node]).set(v);
            }
        }
        Service::GlusterMount => {}
    }
    if o.status == Status::Unreachable || o.status == Status::Down {
        // Stale gauges would claim a dead service still has its last role and offsets.
        if o.id.service == Service::Redis {
            let _ = m.redis_is_master.remove_label_values(&[&node]);
            let _ = m.redis_repl_offset.remove_label_values(&[&node]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change is reported at once unless the last report is younger than the shortest gap;
    /// then `next_report_in` says how long to wait, and nothing unchanged asks for a wake-up.
    #[test]
    fn report_pacing_table() {
        // (last report at, dirty, now) -> (due, next_report_in)
        let cases = [
            (None, false, 0, false, None),
            (None, true, 0, true, Some(0)),
            (Some(1000), true, 1000 + MIN_REPORT_GAP, true, Some(0)),
            (Some(1000), true, 1005, false, Some(MIN_REPORT_GAP - 5)),
            (Some(1000), false, 1005, false, None),
            (Some(1000), false, 1000 + MAX_REPORT_GAP, true, None),
        ];
        for (last, dirty, now, due, next) in cases {
            let mut l = LocalObservations::new([]);
            l.last_report = last;
            l.dirty = dirty;
            assert_eq!(l.report_due(now), due, "{last:?} {dirty} {now}");
            assert_eq!(l.next_report_in(now), next, "{last:?} {dirty} {now}");
        }
    }

    /// A status that falls after `fall` identical failed checks is reported at once: the last
    /// check reads as the one before, but the tracked status changed (it once waited for the
    /// periodic report, up to a second, and delayed every drain and failover behind it).
    #[test]
    fn a_status_reaching_its_fall_threshold_is_reported_at_once() {
        use crate::ids::NodeId;
        use crate::observation::FailureKind;
        let id = ProbeId {
            subject: NodeId(3),
            service: Service::Phpfpm,
            target: String::new(),
        };
        let mut l = LocalObservations::new([(id.clone(), Thresholds { rise: 2, fall: 2 })]);
        let metrics = Metrics::new("n3").expect("metrics");
        let refused =
            || CheckResult::unreachable(FailureKind::Refused, "php-fpm: Connection refused");
        l.record(
            &id,
            CheckResult::healthy(serde_json::json!({})),
            Duration::from_millis(1),
            UnixMillis(0),
            0,
            &metrics,
        );
        l.take_report(0);
        // (at ms, result) -> (tracked status, a report asked for at once)
        let steps = [
            (1000, refused(), Status::Healthy, true),
            (1050, refused(), Status::Unreachable, true),
            (2050, refused(), Status::Unreachable, false),
        ];
        for (at, result, status, dirty) in steps {
            l.dirty = false;
            l.record(
                &id,
                result,
                Duration::from_millis(1),
                UnixMillis(0),
                at,
                &metrics,
            );
            let tracked = l.trackers[&id].0.current().map(|o| o.status);
            assert_eq!(tracked, Some(status), "at {at}");
            assert_eq!(l.dirty, dirty, "at {at}");
        }
    }

    /// A replica's link is dated from the first check that saw its current offset; crossing
    /// `link_stale_after` either way asks for a report; a link down or a master is not dated.
    #[test]
    fn replica_links_are_dated_by_their_offset() {
        use crate::ids::NodeId;
        let id = ProbeId {
            subject: NodeId(2),
            service: Service::Redis,
            target: String::new(),
        };
        let th = Thresholds { rise: 1, fall: 1 };
        let mut l = LocalObservations::new([(id.clone(), th)]).with_link_stale_after(2000);
        let metrics = Metrics::new("n1").expect("metrics");
        let replica = |offset: i64, up: bool| {
            CheckResult::healthy(serde_json::json!({
                "role": "replica", "master_link_up": up, "slave_repl_offset": offset,
            }))
        };
        let quiet = |l: &mut LocalObservations, now: u64| {
            let r = l.take_report(now);
            r[0].0
                .last
                .details
                .get("link_quiet_ms")
                .and_then(|v| v.as_u64())
        };
        // (at ms, offset, link up) -> (link_quiet_ms, report asked for at once)
        let steps = [
            (0, 100, true, Some(0), false),
            (300, 100, true, Some(300), false),
            (1000, 140, true, Some(0), false),
            (2900, 140, true, Some(1900), false),
            (3300, 140, true, Some(2300), true),
            (3600, 140, true, Some(2600), false),
            (3900, 150, true, Some(0), true),
            // The link's state is part of the verdict: reported at once either way.
            (4200, 150, false, None, true),
            (4500, 150, true, Some(0), true),
        ];
        for (at, offset, up, want, dirty) in steps {
            l.dirty = false;
            let before = l.trackers[&id].0.current().map(|o| o.status);
            l.record(
                &id,
                replica(offset, up),
                Duration::from_millis(1),
                UnixMillis(0),
                at,
                &metrics,
            );
            // A link going down changes the verdict (degraded) on its own.
            let status_changed = l.trackers[&id].0.current().map(|o| o.status) != before;
            assert_eq!(l.dirty && !status_changed, dirty, "at {at}");
            assert_eq!(quiet(&mut l, at), want, "at {at}");
        }
        let mut master = LocalObservations::new([(id.clone(), th)]);
        master.record(
            &id,
            CheckResult::healthy(serde_json::json!({"role": "master", "master_repl_offset": 5})),
            Duration::from_millis(1),
            UnixMillis(0),
            0,
            &metrics,
        );
        assert_eq!(quiet(&mut master, 0), None);
    }
}
