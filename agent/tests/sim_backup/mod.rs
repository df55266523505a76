//! Backups in the whole-cluster simulation: the `BackupController` in every driver (the
//! leader's schedule, lease, expiry and retry decisions, from the same reports and pongs as in
//! production), and in every agent the production [`Runner`] stepped as the agent's runner
//! task steps it, over a simulated backup that takes 3-25 s (past the 20 s `max_duration` the
//! runner stops it) and, while faults are injected, fails one time in ten.
//!
//! What is simulated: the run itself (no database, no repository). It dies with its agent (the
//! agent's children get SIGKILL when it dies), its "started" marker survives (it is a file);
//! it goes on while its agent is cut off, until the runner stops it. The schedule is every 30
//! seconds (`*/30 * * * * *`), so ten simulated minutes see about twenty windows.
//!
//! Checked after every step:
//! - never two backups running at once in the world;
//! - every end committed: at most one verified run per trigger, at most two attempts, the
//!   second on another node than the first; a verified end only for a run that really
//!   completed verified, under that id, on that node.
//!
//! Checked at the end: once the faults stopped and Galera recovered, a verified backup
//! committed after that, when the quiet time left room for two windows and a run (plus the
//! spread of the agents' wall clocks, which the seed's clock jumps leave behind: the windows
//! are the leader's wall-clock times).

use std::collections::BTreeMap;

use triad::cluster::{BackupRecord, BackupSummary, Component, ComponentSummary};
use triad::decide::backup::{BackupSchedule, BackupSettings};
use triad::ids::{BackupId, NodeId};
use triad::reconcile::backup::{BackupTarget, Runner, RunnerStep};

/// The simulation's schedule: every 30 seconds.
pub const SCHEDULE: &str = "*/30 * * * * *";

/// How often an agent's runner task cycles, in steps (and at once on a new target).
pub const RUNNER_EVERY: u64 = 10;

/// The backup settings of the simulated agents.
pub fn settings(
    ping_lease_ms: u64,
    clock_margin_ms: u64,
    freshness_ms: u64,
    db: bool,
) -> BackupSettings {
    BackupSettings {
        schedule: BackupSchedule::parse(SCHEDULE).unwrap_or_else(|e| panic!("{e}")),
        max_duration_ms: 20_000,
        silence_ms: 10_000,
        ping_lease_ms,
        clock_margin_ms,
        freshness_ms,
        db,
        files: false,
    }
}

/// A backup executing in the world.
#[derive(Clone, Debug)]
pub struct SimRun {
    pub id: BackupId,
    pub started_ms: u64,
    pub ends_ms: u64,
    pub fails: bool,
}

/// One agent's runner task; lost when the agent crashes.
pub struct RunnerTask {
    pub runner: Runner,
    pub last_target: Option<BackupTarget>,
}

impl RunnerTask {
    pub fn new(me: NodeId) -> Self {
        RunnerTask {
            runner: Runner::new(me),
            last_target: None,
        }
    }
}

/// The backup side of the world.
#[derive(Default)]
pub struct BackupWorld {
    /// Each node's durable "started" marker (the newest backup id its runner started).
    pub marker: BTreeMap<usize, BackupId>,
    /// The run executing on each node.
    pub running: BTreeMap<usize, SimRun>,
    /// Runs that completed, by id: (node index, verified).
    pub completed: BTreeMap<BackupId, (usize, bool)>,
    /// Every committed end seen, by id.
    pub ends: BTreeMap<BackupId, BackupRecord>,
    /// When (simulated ms) each end was first seen committed.
    pub ends_at: BTreeMap<BackupId, u64>,
    /// Runs started.
    pub started: u64,
}

impl BackupWorld {
    /// Whether a backup executes on node `i` now.
    pub fn running_on(&self, i: usize) -> bool {
        self.running.contains_key(&i)
    }

    /// The run on node `i` ends with its agent.
    pub fn agent_died(&mut self, i: usize) -> Option<SimRun> {
        self.running.remove(&i)
    }

    /// Never two at once.
    pub fn check_exclusive(&self) -> Result<(), String> {
        if self.running.len() > 1 {
            let runs: Vec<String> = self
                .running
                .iter()
                .map(|(i, r)| format!("{} on n{} since {}ms", r.id, i + 1, r.started_ms))
                .collect();
            return Err(format!(
                "backup: two backups run at once: {}",
                runs.join(", ")
            ));
        }
        Ok(())
    }

    /// Checks a newly committed end against the ends before it and the world.
    pub fn check_end(&mut self, r: &BackupRecord, now_ms: u64) -> Result<(), String> {
        if let Some(seen) = self.ends.get(&r.id) {
            if seen != r {
                return Err(format!("backup: {} ended differently on two agents", r.id));
            }
            return Ok(());
        }
        let same: Vec<&BackupRecord> = self
            .ends
            .values()
            .filter(|e| e.trigger == r.trigger)
            .collect();
        if r.verified && same.iter().any(|e| e.verified) {
            return Err(format!(
                "backup: a second verified backup ({}) for {}",
                r.id, r.trigger
            ));
        }
        if same.len() >= 2 {
            return Err(format!(
                "backup: a third attempt ({}) for {}",
                r.id, r.trigger
            ));
        }
        if let Some(first) = same.first() {
            if first.node == r.node {
                return Err(format!(
                    "backup: the retry {} of {} ran on {}, where {} failed",
                    r.id, r.trigger, r.node, first.id
                ));
            }
        }
        if r.verified {
            match self.completed.get(&r.id) {
                Some((i, true)) if NodeId(*i as u64 + 1) == r.node => {}
                other => {
                    return Err(format!(
                        "backup: {} committed verified on {} but the world ran {other:?}",
                        r.id, r.node
                    ))
                }
            }
        }
        self.ends.insert(r.id, r.clone());
        self.ends_at.insert(r.id, now_ms);
        Ok(())
    }

    /// The summary a simulated run reports.
    pub fn summary(id: BackupId) -> BackupSummary {
        BackupSummary {
            components: vec![ComponentSummary {
                component: Component::Db,
                bytes: 1000 + id.0,
                sha256: "0".repeat(64),
                duration_ms: 1000,
                snapshot: format!("s{}", id.0),
            }],
            galera_position: String::new(),
            redis_offset: None,
            version: "sim".into(),
            duration_ms: 1000,
        }
    }

    /// One cycle of node `i`'s runner task at `now_ms`: the production runner's step, carried
    /// out on the world. `draw(lo, hi)` draws from the world's randomness; `failing` says
    /// whether runs may fail now. Returns a trace line when something happened.
    #[allow(clippy::too_many_arguments)]
    pub fn cycle(
        &mut self,
        i: usize,
        task: &mut RunnerTask,
        target: &BackupTarget,
        ping_lease: bool,
        now_ms: u64,
        failing: bool,
        draw: &mut dyn FnMut(u64, u64) -> u64,
    ) -> Option<String> {
        let me = NodeId(i as u64 + 1);
        // A run that reached its end completes first (the task notices at its next cycle).
        if let Some(run) = self
            .running
            .get(&i)
            .filter(|r| now_ms >= r.ends_ms)
            .cloned()
        {
            self.running.remove(&i);
            self.completed.insert(run.id, (i, !run.fails));
            let (ok, reason) = if run.fails {
                (
                    false,
                    "simulated failure: restic check found a damaged pack",
                )
            } else {
                (true, "verified")
            };
            let summary = if ok {
                Self::summary(run.id)
            } else {
                BackupSummary::default()
            };
            task.runner.finished(ok, reason.into(), summary, now_ms);
            return Some(format!("{me} backup {} done: {reason}", run.id));
        }
        let marker = self.marker.get(&i).copied();
        match task.runner.cycle(target, marker, ping_lease, now_ms) {
            RunnerStep::Idle => None,
            RunnerStep::Start(lease) => {
                self.marker.insert(i, lease.id);
                task.runner.start(&lease, now_ms);
                task.runner.progress_to("db copy", 0, now_ms);
                let took = draw(3_000, 25_000);
                let fails = failing && draw(0, 10) == 0;
                self.running.insert(
                    i,
                    SimRun {
                        id: lease.id,
                        started_ms: now_ms,
                        ends_ms: now_ms + took,
                        fails,
                    },
                );
                self.started += 1;
                Some(format!(
                    "{me} backup {} starts ({} for {}ms{})",
                    lease.id,
                    lease.trigger,
                    took,
                    if fails { ", will fail" } else { "" }
                ))
            }
            RunnerStep::Stop(why) => {
                let run = self.running.remove(&i);
                task.runner
                    .finished(false, why.clone(), BackupSummary::default(), now_ms);
                Some(format!(
                    "{me} backup {} stopped: {why}",
                    run.map_or_else(|| "?".into(), |r| r.id.to_string())
                ))
            }
        }
    }

    /// Whether a verified end was committed after `since_ms` (simulated time).
    pub fn verified_after(&self, since_ms: u64) -> bool {
        self.ends
            .values()
            .any(|e| e.verified && self.ends_at.get(&e.id).is_some_and(|t| *t > since_ms))
    }

    /// (verified, expired, retries) among the committed ends.
    pub fn counts(&self) -> (u64, u64, u64) {
        let v = self.ends.values();
        (
            v.clone().filter(|e| e.verified).count() as u64,
            v.clone().filter(|e| e.expired).count() as u64,
            v.filter(|e| e.attempt == 2).count() as u64,
        )
    }
}
