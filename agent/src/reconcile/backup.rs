//! The local backup runner's side of the controller shape: the target it follows.
//!
//! The runner (an adapter) takes a backup only under a committed lease that names this node,
//! reports its progress and result in the agent's health reports, and stops at the lease's
//! bound. See `decide::backup` for the lease's rules.

use crate::cluster::BackupRun;
use crate::cluster::{BackupLease, BackupSummary};
use crate::ids::{BackupId, NodeId};

/// What the backup runner follows, as the controller publishes it from the applied state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupTarget {
    /// The lease in force (for whichever node).
    pub lease: Option<BackupLease>,
    /// Maintenance is on.
    pub maintenance: bool,
    /// The committed Galera writer (a runner whose node becomes it stops).
    pub galera_writer: Option<NodeId>,
    /// The committed Redis master (the RDB is taken from a replica).
    pub redis_master: Option<NodeId>,
}

impl BackupTarget {
    /// The lease, when it names `me`.
    pub fn lease_for(&self, me: NodeId) -> Option<&BackupLease> {
        self.lease.as_ref().filter(|l| l.node == me)
    }
}

/// A run the runner started, until it ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    /// The lease's backup id.
    pub id: BackupId,
    /// When it started (monotonic ms).
    pub started_ms: u64,
    /// When it must have stopped (monotonic ms): `max_duration` after the start.
    pub deadline_ms: u64,
    /// What it does now.
    pub phase: String,
    /// Bytes taken so far.
    pub bytes: u64,
}

/// What the runner should do this cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunnerStep {
    /// Nothing new.
    Idle,
    /// Start the run under `lease` (the marker is written first: [`Runner::start`]).
    Start(BackupLease),
    /// Stop the run at once (kill its tools, undo the desync, remove its work files), then
    /// report it failed with the reason ([`Runner::stopped`]).
    Stop(String),
}

/// The runner's pure state: whether it runs, what it reports, and when it must start, refuse
/// or stop. The adapters (the agent's runner task, the simulation) carry out its steps.
///
/// Rules, each cycle:
/// - running: stop when the lease is gone or another, when `max_duration` has passed since
///   the start, when this agent lost its ping lease (cut off from a majority: the leader may
///   expire the lease and grant it elsewhere), or when this node became the Galera writer;
/// - not running, with a lease for this node not yet reported on: if the durable marker says
///   this lease already started (the agent restarted mid-run), report it failed at once, so the
///   leader retries without waiting for the expiry; refuse it while this node is the Galera
///   writer; wait for the ping lease; else start. (No clock is compared with the grant's: a
///   node that applies a grant late starts only with its lease from its peers, which they
///   withhold from a holder whose lease expired; see `decide::backup`.)
///
/// The result of a run is reported for as long as its lease is in force (the leader commits the
/// end from it); then nothing is.
#[derive(Clone, Debug)]
pub struct Runner {
    me: NodeId,
    running: Option<Running>,
    /// The report of the lease in force (progress, or the final result).
    report: Option<BackupRun>,
}

impl Runner {
    /// A runner for node `me`.
    pub fn new(me: NodeId) -> Self {
        Runner {
            me,
            running: None,
            report: None,
        }
    }

    /// The run going on, if any.
    pub fn running(&self) -> Option<&Running> {
        self.running.as_ref()
    }

    /// Decides this cycle's step. `marker` is the newest backup id this node ever started
    /// (durable across restarts); `ping_lease` whether this agent holds its lease from a
    /// majority now.
    pub fn cycle(
        &mut self,
        target: &BackupTarget,
        marker: Option<BackupId>,
        ping_lease: bool,
        mono_ms: u64,
    ) -> RunnerStep {
        let mine = target.lease_for(self.me);
        if let Some(r) = &self.running {
            return match mine {
                None => RunnerStep::Stop("its lease ended before it finished".into()),
                Some(l) if l.id != r.id => {
                    RunnerStep::Stop("its lease ended before it finished".into())
                }
                Some(_) if mono_ms >= r.deadline_ms => RunnerStep::Stop(format!(
                    "max_duration ({} s) reached",
                    r.deadline_ms.saturating_sub(r.started_ms) / 1000
                )),
                Some(_) if !ping_lease => RunnerStep::Stop(
                    "this agent lost its lease from its peers (cut off): the leader may give \
                     the backup to another node"
                        .into(),
                ),
                Some(_) if target.galera_writer == Some(self.me) => {
                    RunnerStep::Stop("this node became the Galera writer".into())
                }
                Some(_) => RunnerStep::Idle,
            };
        }
        let Some(l) = mine else {
            self.report = None;
            return RunnerStep::Idle;
        };
        if self.report.as_ref().is_some_and(|r| r.id == l.id) {
            return RunnerStep::Idle;
        }
        let refuse = if marker.is_some_and(|m| m >= l.id) {
            Some("the agent restarted during the run; its work was lost".to_string())
        } else if target.galera_writer == Some(self.me) {
            Some("this node is the Galera writer".to_string())
        } else {
            None
        };
        if let Some(why) = refuse {
            self.report = Some(BackupRun {
                id: l.id,
                phase: "done".into(),
                done: true,
                reason: why,
                ..BackupRun::default()
            });
            return RunnerStep::Idle;
        }
        if !ping_lease {
            return RunnerStep::Idle;
        }
        RunnerStep::Start(l.clone())
    }

    /// Notes that the run under `lease` started at `mono_ms` (after its marker was written).
    pub fn start(&mut self, lease: &BackupLease, mono_ms: u64) {
        self.running = Some(Running {
            id: lease.id,
            started_ms: mono_ms,
            deadline_ms: mono_ms.saturating_add(lease.max_duration_ms),
            phase: "starting".into(),
            bytes: 0,
        });
        self.report = Some(self.progress(mono_ms).unwrap_or_default());
    }

    /// Notes the running run's progress.
    pub fn progress_to(&mut self, phase: &str, bytes: u64, mono_ms: u64) {
        if let Some(r) = self.running.as_mut() {
            r.phase = phase.to_string();
            r.bytes = bytes;
        }
        if let Some(p) = self.progress(mono_ms) {
            self.report = Some(p);
        }
    }

    fn progress(&self, mono_ms: u64) -> Option<BackupRun> {
        let r = self.running.as_ref()?;
        Some(BackupRun {
            id: r.id,
            phase: r.phase.clone(),
            bytes: r.bytes,
            // Whole seconds: a report goes out when this changes, not on every cycle.
            elapsed_ms: mono_ms.saturating_sub(r.started_ms) / 1000 * 1000,
            ..BackupRun::default()
        })
    }

    /// Notes that the run ended (finished, or stopped): its result is reported until the
    /// lease ends.
    pub fn finished(
        &mut self,
        verified: bool,
        reason: String,
        summary: BackupSummary,
        mono_ms: u64,
    ) {
        let Some(r) = self.running.take() else {
            return;
        };
        self.report = Some(BackupRun {
            id: r.id,
            phase: "done".into(),
            bytes: r.bytes,
            elapsed_ms: mono_ms.saturating_sub(r.started_ms),
            done: true,
            verified,
            reason,
            summary,
        });
    }

    /// What this agent's health report says of its backup: the run under the lease in force.
    pub fn report(&self, mono_ms: u64) -> Option<BackupRun> {
        self.progress(mono_ms).or_else(|| self.report.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::BackupTrigger;
    use crate::ids::{LogIndex, Term, UnixMillis};

    fn lease(id: u64, node: u64) -> BackupLease {
        BackupLease {
            id: BackupId(id),
            node: NodeId(node),
            trigger: BackupTrigger::Scheduled {
                window: UnixMillis(0),
            },
            attempt: 1,
            max_duration_ms: 10_000,
            index: LogIndex(1),
            term: Term(1),
            at: UnixMillis(0),
            reason: String::new(),
        }
    }

    fn target(lease: Option<BackupLease>, writer: u64) -> BackupTarget {
        BackupTarget {
            lease,
            maintenance: false,
            galera_writer: Some(NodeId(writer)),
            redis_master: Some(NodeId(1)),
        }
    }

    /// The runner's rules, case by case: when it starts, refuses, waits and stops.
    #[test]
    fn runner_steps() {
        let me = NodeId(2);
        // Not ours, or no lease: idle, nothing reported.
        let mut r = Runner::new(me);
        assert_eq!(
            r.cycle(&target(Some(lease(1, 3)), 1), None, true, 0),
            RunnerStep::Idle
        );
        assert_eq!(r.report(0), None);
        // Ours but no ping lease: wait.
        assert_eq!(
            r.cycle(&target(Some(lease(1, 2)), 1), None, false, 0),
            RunnerStep::Idle
        );
        assert_eq!(r.report(0), None);
        // Ours, with the lease: start; then running, progress reported.
        let step = r.cycle(&target(Some(lease(1, 2)), 1), None, true, 100);
        assert_eq!(step, RunnerStep::Start(lease(1, 2)));
        r.start(&lease(1, 2), 100);
        r.progress_to("db copy", 500, 2_600);
        let rep = r.report(2_600).unwrap_or_default();
        assert_eq!(
            (rep.phase.as_str(), rep.bytes, rep.elapsed_ms, rep.done),
            ("db copy", 500, 2_000, false)
        );
        assert_eq!(
            r.cycle(
                &target(Some(lease(1, 2)), 1),
                Some(BackupId(1)),
                true,
                3_000
            ),
            RunnerStep::Idle
        );
        // Stops: lost ping lease, deadline, became writer, lease gone or another.
        let stop = |t: &BackupTarget, lease_ok: bool, now: u64| {
            let mut r2 = r.clone();
            match r2.cycle(t, Some(BackupId(1)), lease_ok, now) {
                RunnerStep::Stop(why) => why,
                other => format!("{other:?}"),
            }
        };
        assert!(stop(&target(Some(lease(1, 2)), 1), false, 3_000).contains("lost its lease"));
        assert!(stop(&target(Some(lease(1, 2)), 1), true, 10_100).contains("max_duration"));
        assert!(stop(&target(Some(lease(1, 2)), 2), true, 3_000).contains("Galera writer"));
        assert!(stop(&target(None, 1), true, 3_000).contains("lease ended"));
        assert!(stop(&target(Some(lease(2, 3)), 1), true, 3_000).contains("lease ended"));
        // Finished: the result is reported while the lease is in force, never run again.
        r.finished(true, "verified".into(), BackupSummary::default(), 5_000);
        let rep = r.report(5_000).unwrap_or_default();
        assert!(rep.done && rep.verified && rep.id == BackupId(1));
        assert_eq!(
            r.cycle(
                &target(Some(lease(1, 2)), 1),
                Some(BackupId(1)),
                true,
                5_100
            ),
            RunnerStep::Idle
        );
        assert_eq!(
            r.cycle(&target(None, 1), Some(BackupId(1)), true, 5_200),
            RunnerStep::Idle
        );
        assert_eq!(r.report(5_200), None);
        // A restarted agent with a lease it had started: reported failed at once.
        let mut fresh = Runner::new(me);
        assert_eq!(
            fresh.cycle(&target(Some(lease(3, 2)), 1), Some(BackupId(3)), true, 0),
            RunnerStep::Idle
        );
        let rep = fresh.report(0).unwrap_or_default();
        assert!(rep.done && !rep.verified && rep.reason.contains("restarted"));
        // A lease for the writer's node: refused.
        let mut w = Runner::new(me);
        assert_eq!(
            w.cycle(&target(Some(lease(4, 2)), 2), Some(BackupId(3)), true, 0),
            RunnerStep::Idle
        );
        assert!(w
            .report(0)
            .is_some_and(|r| r.done && r.reason.contains("Galera writer")));
    }
}
