//! The web tier in the whole-cluster simulation: the `WebController` in every driver (the
//! leader's rotation decision, from the same reports as in production, with its readmission
//! hold on the leader's clock) and in every agent the production [`WebReconciler`] over its
//! HAProxy's `be_php` backend, run as `local::spawn_web` runs it: every second and at once on a
//! new target.
//!
//! The world: each node's PHP-FPM pool is up, killed (its probe: connection refused), hung
//! (a timeout) or saturated (the probe's `degraded`), and its GlusterFS mount is fine or hung
//! (the mount probe's `down`). Each agent probes its own pool and mount every
//! [`PROBE_EVERY`] steps through its own rise/fall trackers. Faults, drawn beside the others
//! with their details from the web world's own randomness, each end by themselves: one pool
//! killed, hung or saturated for 2-20 s, one mount hung for 2-15 s, or every pool killed at once
//! for 3-12 s.
//!
//! Checked after every step:
//! - no proposed or applied rotation drains every member, and every HAProxy keeps at least
//!   one `be_php` server `ready` (never the last web node);
//! - no drain on doubt: every proposed rotation that newly drains a node (against the
//!   proposer's applied rotation) comes at most [`EVIDENCE_MS`] after that node was sick in the
//!   world (its probe's fall threshold, the report's freshness); every drain committed was
//!   proposed. A proposal may commit much later (a leader that lost its quorum with it in its
//!   log, and a later leader commits it): the node is then drained though healthy again, until
//!   the next decision readmits it after its hold; that is by design, and the end check
//!   covers it.
//!
//! Checked at the end, once every pool and mount is healthy: nobody drained, no sick node
//! kept, and every HAProxy's `be_php` all `ready`, within [`SETTLE_MS`] of the last web fault.

use std::collections::BTreeSet;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use triad::actuator::haproxy::{AdminMode, Haproxy, SimHaproxy};
use triad::cluster::{ClusterState, RemedyAction};
use triad::decide::remedy::RemedySettings;
use triad::decide::web::{WebPlant, WebSettings};
use triad::ids::NodeId;
use triad::observation::{CheckResult, FailureKind, ProbeId, Service};
use triad::reconcile::web::{WebReconciler, WebTarget};

/// The web backend's name in every simulated HAProxy.
pub const BACKEND: &str = "be_php";

/// The mount every agent probes.
pub const MOUNT: &str = "/srv/shop";

/// How often an agent probes its pool and mount, in steps (1 s at 50 ms a step).
pub const PROBE_EVERY: u64 = 20;

/// How often an agent's web reconciler cycles, in steps (and at once on a new target).
pub const WEB_EVERY: u64 = 20;

/// How long a pool restart runs in the world.
pub const RESTART_MS: u64 = 500;

/// A node is drained only if it was sick at most this long before the commit: two failed
/// checks (fall 2, 1 s apart), a report's freshness (3 s) and the commit, with room for the
/// lost messages and slow rounds of the faults.
pub const EVIDENCE_MS: u64 = 12_000;

/// After the last web fault ends, the rotation and every HAProxy are back to every node in
/// service within this long: rise (2 checks), the readmission hold, reports, a commit and a
/// reconciler cycle, with room for a leader change.
pub const SETTLE_MS: u64 = 20_000;

/// The remediation settings of the simulated agents: the defaults, with a 30 s lease bound,
/// and the agents' ping lease and clock margin.
pub fn remedy_settings(ping_lease_ms: u64, clock_margin_ms: u64) -> RemedySettings {
    RemedySettings {
        freshness_ms: 3000,
        per_hour: 6,
        backoff_ms: 10_000,
        max_duration_ms: 30_000,
        restart_phpfpm: true,
        remount: true,
        // The simulated world has no volume (no bricks, no glusterd).
        start_bricks: false,
        restart_glusterd: false,
        ping_lease_ms,
        clock_margin_ms,
    }
}

/// The decision's settings in the simulated agents (the defaults).
pub fn settings(plant: WebPlant) -> WebSettings {
    WebSettings {
        freshness_ms: 3000,
        readmit_after_ms: 2000,
        plant,
    }
}

/// A pool's state in the world.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    Up,
    Killed,
    Hung,
    Saturated,
}

/// One node's web tier in the world.
#[derive(Clone, Debug)]
struct NodeWorld {
    pool: Pool,
    pool_until: u64,
    mount_hung: bool,
    mount_until: u64,
    /// The last time it was sick (pool not up or mount hung).
    last_sick_ms: Option<u64>,
}

/// The web side of the world.
pub struct WebWorld {
    nodes: Vec<NodeWorld>,
    rng: StdRng,
    pub faults: u64,
    /// When the last web fault ended (or began, while one is on).
    pub last_fault_ms: u64,
    /// Drains already checked: (node, log index of its drain).
    checked: BTreeSet<(u64, u64)>,
    /// Nodes some proposal drained.
    proposed: BTreeSet<u64>,
    /// Committed rotations seen, by epoch.
    pub rotations: u64,
    /// Times a sick node was kept because every node was sick.
    pub kept: BTreeSet<u64>,
    /// Pools restarted by their agents.
    pub restarts: u64,
    /// The restart executing: (node index, when it ends).
    executing: Option<(usize, u64)>,
}

impl WebWorld {
    pub fn new(seed: u64, n: u64) -> Self {
        WebWorld {
            nodes: (0..n)
                .map(|_| NodeWorld {
                    pool: Pool::Up,
                    pool_until: 0,
                    mount_hung: false,
                    mount_until: 0,
                    last_sick_ms: None,
                })
                .collect(),
            rng: StdRng::seed_from_u64(seed ^ 0x0000_0eb0),
            faults: 0,
            last_fault_ms: 0,
            checked: BTreeSet::new(),
            proposed: BTreeSet::new(),
            rotations: 0,
            kept: BTreeSet::new(),
            restarts: 0,
            executing: None,
        }
    }

    fn sick(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        n.pool != Pool::Up || n.mount_hung
    }

    /// Whether any fault is on.
    pub fn faulty(&self) -> bool {
        (0..self.nodes.len()).any(|i| self.sick(i))
    }

    /// One fault (its kind and details from the web world's own randomness); a line for the
    /// trace.
    pub fn inject(&mut self, now: u64) -> String {
        let n = self.nodes.len();
        let i = self.rng.gen_range(0..n);
        self.faults += 1;
        self.last_fault_ms = now;
        let line = match self.rng.gen_range(0..10) {
            0..=2 => {
                let until = now + self.rng.gen_range(2_000..20_000);
                self.set_pool(i, Pool::Killed, until);
                format!("kill php-fpm n{} until {until}ms", i + 1)
            }
            3..=4 => {
                let until = now + self.rng.gen_range(2_000..20_000);
                self.set_pool(i, Pool::Hung, until);
                format!("hang php-fpm n{} until {until}ms", i + 1)
            }
            5..=6 => {
                let until = now + self.rng.gen_range(2_000..20_000);
                self.set_pool(i, Pool::Saturated, until);
                format!("saturate php-fpm n{} until {until}ms", i + 1)
            }
            7..=8 => {
                let until = now + self.rng.gen_range(2_000..15_000);
                let node = &mut self.nodes[i];
                node.mount_hung = true;
                node.mount_until = node.mount_until.max(until);
                format!("hang mount n{} until {until}ms", i + 1)
            }
            _ => {
                let until = now + self.rng.gen_range(3_000..12_000);
                for j in 0..n {
                    self.set_pool(j, Pool::Killed, until);
                }
                format!("kill every php-fpm until {until}ms")
            }
        };
        self.mark(now);
        line
    }

    fn set_pool(&mut self, i: usize, pool: Pool, until: u64) {
        let node = &mut self.nodes[i];
        node.pool = pool;
        node.pool_until = node.pool_until.max(until);
    }

    fn mark(&mut self, now: u64) {
        for i in 0..self.nodes.len() {
            if self.sick(i) {
                self.nodes[i].last_sick_ms = Some(now);
            }
        }
    }

    /// Node `i`'s agent starts restarting its pool under a remediation lease; it ends after
    /// [`RESTART_MS`] ([`WebWorld::restarted`]). Checked: never while another node's restart
    /// runs (one remediation at a time), never on the node running a backup.
    pub fn start_restart(&mut self, i: usize, now: u64, backup_here: bool) -> Result<(), String> {
        if let Some((j, ends)) = self.executing {
            if j != i && now < ends {
                return Err(format!(
                    "web: n{} restarts its pool while n{}'s restart (until {ends}ms) runs",
                    i + 1,
                    j + 1
                ));
            }
        }
        if backup_here {
            return Err(format!(
                "web: n{} restarts its pool while it runs a backup",
                i + 1
            ));
        }
        self.executing = Some((i, now + RESTART_MS));
        Ok(())
    }

    /// Node `i`'s repair is over: a restarted pool comes back (dead, hung or saturated), a
    /// remounted mount serves again. A line for the report.
    pub fn repaired(&mut self, i: usize, action: RemedyAction) -> String {
        if self.executing.is_some_and(|(j, _)| j == i) {
            self.executing = None;
        }
        self.restarts += 1;
        let node = &mut self.nodes[i];
        match action {
            RemedyAction::RestartPhpfpm => {
                let was = node.pool;
                node.pool = Pool::Up;
                format!("php-fpm restarted (was {was:?})")
            }
            RemedyAction::Remount => {
                let was = node.mount_hung;
                node.mount_hung = false;
                format!("{MOUNT} mounted again (was hung: {was})")
            }
            // Never granted here (both are off): the world has no volume.
            RemedyAction::StartBrick | RemedyAction::RestartGlusterd => {
                "no volume in the simulated world".into()
            }
        }
    }

    /// Ends the faults that are due; lines for the trace.
    pub fn advance(&mut self, now: u64) -> Vec<String> {
        let mut lines = Vec::new();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if node.pool != Pool::Up && now >= node.pool_until {
                node.pool = Pool::Up;
                lines.push(format!("php-fpm n{} back", i + 1));
            }
            if node.mount_hung && now >= node.mount_until {
                node.mount_hung = false;
                lines.push(format!("mount n{} back", i + 1));
            }
        }
        if self.faulty() || !lines.is_empty() {
            self.last_fault_ms = now;
        }
        self.mark(now);
        lines
    }

    /// Ends every fault now (the end of the faulty phase).
    pub fn heal(&mut self, now: u64) {
        for node in &mut self.nodes {
            node.pool_until = node.pool_until.min(now);
            node.mount_until = node.mount_until.min(now);
        }
    }

    /// Node `i`'s own checks of its pool and its mount, as the probes report them.
    pub fn checks(&self, i: usize) -> [(ProbeId, CheckResult); 2] {
        let me = NodeId(i as u64 + 1);
        let node = &self.nodes[i];
        let pool = match node.pool {
            Pool::Up => CheckResult::healthy(serde_json::json!({"listen_queue": 0})),
            Pool::Saturated => CheckResult::degraded(
                serde_json::json!({"listen_queue": 12}),
                "requests queueing: listen queue 9 then 12",
            ),
            Pool::Killed => CheckResult::unreachable(FailureKind::Refused, "connection refused"),
            Pool::Hung => CheckResult::unreachable(FailureKind::Timeout, "no answer within 800ms"),
        };
        let mount = if node.mount_hung {
            CheckResult::down(
                serde_json::json!({}),
                "write and read did not finish within 2s: hung",
            )
        } else {
            CheckResult::healthy(serde_json::json!({}))
        };
        [
            (probe_id(me, Service::Phpfpm, ""), pool),
            (probe_id(me, Service::GlusterMount, MOUNT), mount),
        ]
    }

    /// The invariants on one agent's applied state (see the module docs).
    pub fn check_state(&mut self, state: &ClusterState) -> Result<(), String> {
        let w = &state.web;
        if !state.members.is_empty() && state.members.keys().all(|n| w.drained.contains_key(n)) {
            return Err(format!(
                "web: rotation at epoch {} drains every member",
                w.epoch
            ));
        }
        if let Some(k) = &w.kept {
            self.kept.insert(k.node.0);
        }
        self.rotations = self.rotations.max(w.epoch.0);
        for (n, d) in &w.drained {
            if self.checked.insert((n.0, d.index.0)) && !self.proposed.contains(&n.0) {
                return Err(format!(
                    "web: {n} drained at index {} ({}) by no proposal",
                    d.index, d.reason
                ));
            }
        }
        Ok(())
    }

    /// A rotation proposed at `now` by a leader whose applied rotation drains `current`: it
    /// keeps a node in service, and every node it newly drains was sick in the last
    /// [`EVIDENCE_MS`].
    pub fn check_proposal(
        &mut self,
        current: &BTreeSet<u64>,
        proposed: &BTreeSet<u64>,
        now: u64,
    ) -> Result<(), String> {
        // The state machine refuses such a rotation too (defence in depth): the decision
        // must never propose one.
        if proposed.len() >= self.nodes.len() {
            return Err(format!(
                "web: a proposed rotation drains every member ({proposed:?})"
            ));
        }
        for n in proposed.difference(current) {
            let last = self.nodes[*n as usize - 1].last_sick_ms;
            if last.is_none_or(|t| now.saturating_sub(t) > EVIDENCE_MS) {
                return Err(format!(
                    "web: n{n} drained without being sick in the last {EVIDENCE_MS}ms (last \
                     sick: {last:?})"
                ));
            }
            self.proposed.insert(*n);
        }
        Ok(())
    }

    /// Whether the world is all healthy and has been since `SETTLE_MS` ago.
    pub fn settled(&self, now: u64) -> bool {
        !self.faulty() && now.saturating_sub(self.last_fault_ms) >= SETTLE_MS
    }
}

fn probe_id(subject: NodeId, service: Service, target: &str) -> ProbeId {
    ProbeId {
        subject,
        service,
        target: target.into(),
    }
}

/// The probes every agent runs on its own web tier (trackers for `LocalObservations`).
pub fn probes(me: NodeId) -> [ProbeId; 2] {
    [
        probe_id(me, Service::Phpfpm, ""),
        probe_id(me, Service::GlusterMount, MOUNT),
    ]
}

/// One agent's web reconciler task; lost when the agent crashes.
pub struct WebTask {
    pub rec: WebReconciler,
    pub last_target: Option<WebTarget>,
}

/// The admin states of `h`'s web backend, by server.
pub fn ready_servers(h: &SimHaproxy) -> Result<Vec<String>, String> {
    let rows = futures::executor::block_on(h.show_servers_state(Some(BACKEND)))
        .map_err(|e| e.to_string())?;
    Ok(rows
        .iter()
        .filter(|r| r.admin_state.mode() == AdminMode::Ready)
        .map(|r| r.server.clone())
        .collect())
}
