//! The simulated Galera world of `cluster_sim`: three mariadbd processes with their data and
//! `grastate.dat`, Galera's components, a write client, and the glue that runs each agent's
//! production Galera recovery ([`GaleraRecovery`]) on them, as `local::spawn_galera` does.
//!
//! # The world, per node
//! - **mariadbd** runs (alive), hangs (SIGSTOP: answers nobody, not even its own agent, whose
//!   check times out; service control still says running) or is dead (refused; service
//!   control says stopped). It is started only by its agent's glue carrying out a planner
//!   [`Step`] ([`World::start`] takes the step as its witness); the faults kill, hang or stop
//!   it cleanly (an operator's `systemctl stop`).
//! - **Data**: the state UUID (a history number, shown as a UUID) and the last committed
//!   seqno, kept across crashes.
//! - **gcomm UUID** (`wsrep_gcomm_uuid`, its member id in the group, what `evs.evict` takes):
//!   new at every start of mariadbd ([`gcomm_str`], deterministic: the node and the number of
//!   the process in the world), reported by every check that it answers; and its **evict
//!   list**, in memory (a restart clears it), kept by the `evs.evict` statements its agent's
//!   writer reconciler runs on it ([`World::evict`], [`World::clear_evictions`]).
//! - **grastate.dat**: while mariadbd runs, `seqno: -1` and `safe_to_bootstrap: 1` only while
//!   it is alone in a Primary component; a crash leaves that behind (so after a crash of a
//!   larger component: `seqno: -1, safe_to_bootstrap: 0`, and the position only by
//!   `--wsrep-recover`, which takes [`RECOVER_MS`] of simulated time); a clean stop writes the
//!   seqno, with `safe_to_bootstrap: 1` only for the last node to leave a Primary component.
//!   A rare fault deletes it from a dead node.
//!
//! # Components
//! Every running mariadbd is in one component (a view): Primary (it commits, at a position
//! `uuid:seqno`) or not.
//! - A member that goes silent (dead, hung, or cut off by the simulated network, any cut
//!   counting both ways) is dropped only after [`SUSPECT_MS`] (`evs.suspect_timeout`);
//!   meanwhile nobody in its component commits (Galera stalls every commit until the
//!   eviction). A hung member counts as present until then. Then each group of members that
//!   still reach each other forms its own component, Primary only when the old one was and
//!   the group is a strict majority of it. An evicted hung node finds itself alone and
//!   non-Primary when it resumes. A clean stop is a graceful leave: the others stay Primary
//!   whatever their number.
//! - `evs.evict` of a dead member's gcomm UUID, run on a member of its component, drops it at
//!   once: the rest install a new view, Primary when it was and they are a strict majority of
//!   the view before (the suspect timeout's rule, without the wait). Of a running member's
//!   UUID (which no correct decision asks for), it cuts that member off alone, non-Primary,
//!   and the member never joins anything again until it restarts.
//! - Components whose members have reached each other for [`MERGE_MS`] merge: non-Primary
//!   nodes join a Primary component (IST of [`IST_MS`] when their UUID matches and their
//!   seqno is within the donor's gcache of [`GCACHE_SEQNOS`] seqnos, else SST of
//!   [`SST_MS`], during which the donor is Donor/Desynced); two non-Primary components merge,
//!   and become Primary again when they hold a strict majority of the members of a Primary
//!   view that they were the last to see (Galera's own recovery after a partition heals).
//! - A node started as a new cluster (bootstrap) forms a Primary of one after [`BOOT_MS`]
//!   (refused when its grastate says `safe_to_bootstrap: 0`; with no state it starts a new
//!   history). `pc.bootstrap=YES` makes the component of a running non-Primary node Primary,
//!   from that node's position. A started joiner joins a reachable Primary component, or
//!   gives up and exits after [`WAIT_PRIM_MS`] without one.
//!
//! # Writes
//! A client commits a write, on about every other step, to a Synced member of the Primary
//! component that accepts writes (stable: every member answers and reaches the others), and
//! every Synced member applies it. Every commit is acknowledged, so the acknowledged history
//! is linear: the newest acknowledged write `uuid:seqno` says it all.
//!
//! # Invariants checked here (the caller's step fails with the message)
//! - split brain: never two Primary components accepting writes at once;
//! - no acknowledged write lost: every commit extends the newest acknowledged write (same
//!   history, next seqno), every Primary that forms (a bootstrap, a `pc.bootstrap`, Galera's
//!   own recovery) holds it, and no joiner ahead of its donor is wiped by SST;
//! - a start from a position other than the node's durable one (a stale recovered position);
//! - at most one bootstrap carried out per outage number (across agent restarts), and none
//!   while any node is in a Primary component ([`World::bootstrapped`], called by the glue).
//!
//! # Simplified relative to real Galera
//! - Membership is computed per node pair from the simulated network (a one-way cut breaks
//!   the pair); gcomm's relaying, weights, `pc.recovery` (gvwstate.dat: a Primary re-formed
//!   from a restart of every node) and the segment logic are not modelled.
//! - Commits are instantaneous on every Synced member (no certification conflicts, no flow
//!   control); a joiner catches up at the end of its transfer with everything committed
//!   meanwhile; the donor of an IST stays Synced.
//! - A node that is not Synced serves no SQL until it joined something; a Failing start (a
//!   broken node, a refused bootstrap) exits after [`FAIL_START_MS`] without touching its
//!   grastate.
//! - An interrupted SST leaves the joiner with no state (nil UUID), an interrupted IST with
//!   what it had; in both cases the joiner exits.
//! - `--wsrep-recover` reads the durable data exactly (no torn InnoDB state); without
//!   grastate the agent never runs it (the planner's rule), and the node joins by SST.
//! - A node started again before its old process was evicted joins as any joiner (real
//!   Galera reconfigures for many seconds, stalling commits; the planner waits for the
//!   eviction, so the sim does not model that cost).
//! - Service control is process control (the lab's): a start returns once the process is
//!   spawned, a stop once it is gone; a stop of a hung mariadbd ends in SIGKILL.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use triad::actuator::galera_sql::{GaleraSqlError, LocalWsrep};
use triad::config::GaleraSection;
use triad::decide::galera::{GaleraPosition, GrastateEvidence, ProcessState};
use triad::health::HealthStore;
use triad::ids::NodeId;
use triad::observation::{CheckResult, FailureKind};
use triad::probe::galera_status::GaleraStatus;
use triad::probe::grastate::Grastate;
use triad::probe::mariadb::{grastate_json, judge, LocalGaleraNotes};
use triad::reconcile::galera::{
    GaleraRecovery, GaleraTarget, PeerChecks, RecoverySettings, StartKind, Step,
};

/// Nodes.
pub const N: usize = 3;
/// `evs.suspect_timeout`: a silent member is dropped after this.
pub const SUSPECT_MS: u64 = 5_000;
/// Components whose members reach each other merge after this.
pub const MERGE_MS: u64 = 1_000;
/// A new cluster is Primary this long after its start (`--wsrep-new-cluster`).
pub const BOOT_MS: u64 = 300;
/// An incremental state transfer.
pub const IST_MS: u64 = 1_000;
/// A full state transfer takes between these.
pub const SST_MS: (u64, u64) = (5_000, 10_000);
/// The donor's gcache, in seqnos: an IST needs the joiner within this of the donor.
pub const GCACHE_SEQNOS: i64 = 1_000;
/// A started joiner that finds no Primary component exits after this.
pub const WAIT_PRIM_MS: u64 = 20_000;
/// A start that fails (a broken node, a refused bootstrap) exits after this.
pub const FAIL_START_MS: u64 = 200;
/// `--wsrep-recover` takes between these.
pub const RECOVER_MS: (u64, u64) = (300, 3_000);
/// The client writes on this share of the steps, in percent.
const WRITE_PCT: u32 = 50;
/// The simulation's step.
const STEP_MS: u64 = 50;

/// What a running mariadbd is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Started as a joiner: looking for a Primary component (serves no SQL yet).
    Connecting {
        /// Since when.
        since: u64,
    },
    /// Started as a new cluster: Primary of one at `until`.
    Booting {
        /// When.
        until: u64,
    },
    /// Started, but fails (a broken node, a refused bootstrap): exits at `at`.
    Failing {
        /// When.
        at: u64,
    },
    /// In a Primary component, receiving a state transfer until `until`.
    Joining {
        /// When it ends.
        until: u64,
        /// A full transfer (else incremental).
        sst: bool,
        /// The donor.
        donor: usize,
    },
    /// Sending a full state transfer (Donor/Desynced) until `until`.
    Donor {
        /// When it ends.
        until: u64,
    },
    /// Synced with its Primary component.
    Synced,
    /// In a non-Primary component.
    NonPrimary,
}

/// A running mariadbd (alive or hung).
#[derive(Clone, Debug)]
pub struct Proc {
    /// What it does.
    pub phase: Phase,
    /// Hung (SIGSTOP) until then.
    pub hung_until: Option<u64>,
    /// Its component (view id), once it has one.
    pub comp: Option<u64>,
    /// The last Primary view it was a member of since it started: (view id, size).
    pub last_prim: Option<(u64, usize)>,
    /// `wsrep_gcomm_uuid`: its member id in the group, new at every start.
    pub gcomm: String,
    /// Its evict list (`evs.evict`; in memory: a restart clears it).
    pub evict_list: BTreeSet<String>,
    /// Evicted (its gcomm UUID named by a member's `evs.evict` while it ran): it never joins
    /// anything again until it restarts.
    pub evicted: bool,
}

/// `grastate.dat` as the world keeps it (histories by number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gs {
    /// No file.
    Missing,
    /// The file.
    Present {
        /// History; `None` for the nil UUID.
        uuid: Option<u32>,
        /// Seqno; `None` for -1.
        seqno: Option<i64>,
        /// `safe_to_bootstrap: 1`.
        safe: bool,
    },
}

/// One node's MariaDB.
#[derive(Clone, Debug)]
pub struct Db {
    /// The process, when one runs.
    pub proc: Option<Proc>,
    /// Durable data: history (`None`: no state).
    pub uuid: Option<u32>,
    /// Durable data: last committed seqno (-1 with no state).
    pub seqno: i64,
    /// Its `grastate.dat`.
    pub grastate: Gs,
    /// Starts fail until then (a node kept dead: a broken disk, a bad config).
    pub broken_until: u64,
}

/// A component (a view).
#[derive(Clone, Debug)]
pub struct Comp {
    /// Its members whose mariadbd runs (alive or hung).
    pub members: BTreeSet<usize>,
    /// Members whose mariadbd died, not evicted yet (a restarted node is a new member), with
    /// the gcomm UUID of the process that died.
    pub ghosts: BTreeMap<usize, String>,
    /// Primary: the position it commits at (history, seqno).
    pub primary: Option<(u32, i64)>,
    /// Since when a member has been silent (evicted at [`SUSPECT_MS`]).
    pub unstable_since: Option<u64>,
}

/// The Galera world. See the module docs.
pub struct World {
    /// Nodes 1..=3 at indexes 0..=2.
    pub dbs: Vec<Db>,
    /// Components by view id.
    pub comps: BTreeMap<u64, Comp>,
    next_view: u64,
    next_uuid: u32,
    /// mariadbd processes started so far (each one's gcomm UUID is told apart by it).
    processes: u64,
    /// Since when each pair of nodes reaches each other (both alive, no cut), by (a, b), a < b.
    linked_since: [[Option<u64>; N]; N],
    /// The newest acknowledged write: (history, seqno).
    pub acked: Option<(u32, i64)>,
    /// Acknowledged writes.
    pub writes: u64,
    /// Bootstraps carried out by the glue, by outage number: (node, when, agent incarnation).
    pub bootstraps: BTreeMap<u64, Vec<(usize, u64, u64)>>,
    /// Bootstraps carried out again by the same node after its agent restarted.
    pub rebootstraps: u64,
    /// Whether those count as violations too.
    pub strict: bool,
    /// Starts carried out by the glue (every start is one).
    pub starts: u64,
    /// Events since the caller last took them (for the trace and the scripts): (when, what).
    pub events: Vec<(u64, String)>,
    rng: StdRng,
}

/// The UUID string of history `u`.
pub fn uuid_str(u: u32) -> String {
    format!(
        "9eaceb67-efac-11f1-b809-{:012x}",
        0x4745_9100_0000_u64 + u64::from(u)
    )
}

/// The gcomm UUID of the `k`th mariadbd process started in the world, on node `n`: new at
/// every start, as `wsrep_gcomm_uuid` is (no `gvwstate.dat` is kept).
pub fn gcomm_str(n: usize, k: u64) -> String {
    format!("6a1e0000-0000-11f1-8000-{:04x}{:08x}", n + 1, k)
}

/// The node (index) whose process had gcomm UUID `u` ([`gcomm_str`]).
pub fn gcomm_node(u: &str) -> Option<usize> {
    let tail = u.strip_prefix("6a1e0000-0000-11f1-8000-")?;
    let n = usize::from_str_radix(tail.get(..4)?, 16).ok()?;
    n.checked_sub(1)
}

/// A gcomm UUID for display: the process number on its node's name (`n1#4`).
pub fn gcomm_short(u: &str) -> String {
    match (gcomm_node(u), u.get(u.len().saturating_sub(8)..)) {
        (Some(n), Some(k)) => format!(
            "{}#{}",
            name(n),
            u64::from_str_radix(k, 16).unwrap_or_default()
        ),
        _ => u.to_string(),
    }
}

/// A position for display: `uuid-tail:seqno`.
fn pos_str(uuid: Option<u32>, seqno: i64) -> String {
    match uuid {
        Some(u) => format!("{}:{seqno}", short(u)),
        None => "nil:-1".into(),
    }
}

fn short(u: u32) -> String {
    format!("h{u}")
}

fn name(n: usize) -> String {
    format!("n{}", n + 1)
}

fn names(set: &BTreeSet<usize>) -> String {
    set.iter().map(|&n| name(n)).collect::<Vec<_>>().join(",")
}

impl World {
    /// Three Synced members of one Primary component of history 0 at seqno 0 (bootstrapped
    /// by hand before the run), their randomness from `seed`.
    pub fn new(seed: u64) -> World {
        let members: BTreeSet<usize> = (0..N).collect();
        let mut comps = BTreeMap::new();
        comps.insert(
            1,
            Comp {
                members,
                primary: Some((0, 0)),
                ghosts: BTreeMap::new(),
                unstable_since: None,
            },
        );
        let dbs = (0..N)
            .map(|n| Db {
                proc: Some(Proc {
                    phase: Phase::Synced,
                    hung_until: None,
                    comp: Some(1),
                    last_prim: Some((1, N)),
                    gcomm: gcomm_str(n, n as u64 + 1),
                    evict_list: BTreeSet::new(),
                    evicted: false,
                }),
                uuid: Some(0),
                seqno: 0,
                grastate: Gs::Present {
                    uuid: Some(0),
                    seqno: None,
                    safe: false,
                },
                broken_until: 0,
            })
            .collect();
        World {
            dbs,
            comps,
            next_view: 2,
            next_uuid: 1,
            processes: N as u64,
            linked_since: [[Some(0); N]; N],
            acked: None,
            writes: 0,
            bootstraps: BTreeMap::new(),
            rebootstraps: 0,
            strict: std::env::var_os("TRIAD_SIM_GALERA_STRICT").is_some(),
            starts: 0,
            events: Vec::new(),
            rng: StdRng::seed_from_u64(seed ^ 0x6a1e_7a5e_ed00_0000),
        }
    }

    fn event(&mut self, now: u64, e: String) {
        self.events.push((now, e));
    }

    /// Draws from the world's own randomness (the Redis world's draws stay as they were).
    pub fn gen_range(&mut self, lo: u64, hi: u64) -> u64 {
        self.rng.gen_range(lo..=hi)
    }

    fn proc(&self, n: usize) -> Option<&Proc> {
        self.dbs[n].proc.as_ref()
    }

    /// Whether mariadbd `n` runs and answers (not hung, not failing).
    pub fn alive(&self, n: usize) -> bool {
        self.proc(n)
            .is_some_and(|p| p.hung_until.is_none() && !matches!(p.phase, Phase::Failing { .. }))
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        a == b || self.linked_since[a.min(b)][a.max(b)].is_some()
    }

    fn linked_for(&self, a: usize, b: usize, now: u64, ms: u64) -> bool {
        a == b || self.linked_since[a.min(b)][a.max(b)].is_some_and(|s| now.saturating_sub(s) >= ms)
    }

    /// The component of node `n`, with its view id.
    pub fn comp_of(&self, n: usize) -> Option<(u64, &Comp)> {
        let id = self.proc(n)?.comp?;
        self.comps.get(&id).map(|c| (id, c))
    }

    /// Whether node `n` runs in a Primary component (hung or not).
    pub fn is_primary(&self, n: usize) -> bool {
        self.comp_of(n).is_some_and(|(_, c)| c.primary.is_some())
    }

    /// The nodes that run in a Primary component.
    pub fn primaries(&self) -> Vec<usize> {
        (0..N).filter(|&n| self.is_primary(n)).collect()
    }

    /// Whether every member of component `c` answers and reaches every other.
    fn stable(&self, c: &Comp) -> bool {
        c.unstable_since.is_none()
            && c.ghosts.is_empty()
            && c.members
                .iter()
                .all(|&m| self.alive(m) && self.proc(m).is_some_and(|p| !p.evicted))
            && c.members
                .iter()
                .all(|&a| c.members.iter().all(|&b| self.linked(a, b)))
    }

    /// Whether component `c` is Primary and accepts writes now: stable, with a Synced member.
    fn accepts(&self, c: &Comp) -> bool {
        c.primary.is_some()
            && self.stable(c)
            && c.members
                .iter()
                .any(|&m| self.proc(m).is_some_and(|p| p.phase == Phase::Synced))
    }

    /// How many Primary components accept writes now, and the first of them.
    fn accepting(&self) -> (usize, Option<u64>) {
        let mut first = None;
        let mut count = 0;
        for (&id, c) in &self.comps {
            if self.accepts(c) {
                count += 1;
                first.get_or_insert(id);
            }
        }
        (count, first)
    }

    /// Whether all three run Synced in one Primary component of three that accepts writes.
    pub fn converged(&self) -> bool {
        self.accepting().0 == 1
            && self.comps.values().any(|c| {
                c.primary.is_some()
                    && c.members.len() == N
                    && c.members
                        .iter()
                        .all(|&m| self.proc(m).is_some_and(|p| p.phase == Phase::Synced))
            })
    }

    fn new_view(&mut self) -> u64 {
        let v = self.next_view;
        self.next_view += 1;
        v
    }

    /// Installs `members` as a new view (Primary at `primary` or not); members' components
    /// and last Primary views follow.
    fn install(&mut self, members: BTreeSet<usize>, primary: Option<(u32, i64)>) -> u64 {
        let id = self.new_view();
        let size = members.len();
        for &m in &members {
            if let Some(p) = self.dbs[m].proc.as_mut() {
                p.comp = Some(id);
                if primary.is_some() {
                    p.last_prim = Some((id, size));
                }
            }
        }
        self.comps.insert(
            id,
            Comp {
                members,
                ghosts: BTreeMap::new(),
                primary,
                unstable_since: None,
            },
        );
        id
    }

    /// A Primary forms at `pos` (`what` says how): it must hold the newest acknowledged
    /// write.
    fn covers(&self, pos: (u32, i64), what: &str) -> Result<(), String> {
        match self.acked {
            Some((u, s)) if pos.0 != u || pos.1 < s => Err(format!(
                "lost acknowledged writes: {what} forms a Primary at {} but writes up to {} \
                 were acknowledged",
                pos_str(Some(pos.0), pos.1),
                pos_str(Some(u), s)
            )),
            _ => Ok(()),
        }
    }

    // ----- one step --------------------------------------------------------------------

    /// One step of the world at `now`; `net(a, b)` says whether node `a` reaches node `b`.
    pub fn tick(&mut self, now: u64, net: impl Fn(usize, usize) -> bool) -> Result<(), String> {
        for a in 0..N {
            for b in a + 1..N {
                let up = self.alive(a) && self.alive(b) && net(a, b) && net(b, a);
                let slot = &mut self.linked_since[a][b];
                match (up, *slot) {
                    (true, None) => *slot = Some(now),
                    (false, Some(_)) => *slot = None,
                    _ => {}
                }
            }
        }
        self.phases(now)?;
        if !self.comps.values().all(|c| self.stable(c)) {
            self.evictions(now);
        }
        self.transfers(now);
        self.merges(now)?;
        for n in 0..N {
            self.running_grastate(n);
        }
        self.writes()
    }

    /// Timers of every process: resumes, boots, transfers, give-ups.
    fn phases(&mut self, now: u64) -> Result<(), String> {
        for n in 0..N {
            let Some(p) = self.dbs[n].proc.as_mut() else {
                continue;
            };
            if let Some(until) = p.hung_until {
                if now >= until {
                    p.hung_until = None;
                    self.event(now, format!("mariadbd {} resumes", name(n)));
                } else {
                    // A stopped process's timers do not run.
                    match &mut p.phase {
                        Phase::Connecting { since } => *since += STEP_MS,
                        Phase::Booting { until }
                        | Phase::Joining { until, .. }
                        | Phase::Donor { until } => *until += STEP_MS,
                        Phase::Failing { at } => *at += STEP_MS,
                        Phase::Synced | Phase::NonPrimary => {}
                    }
                    continue;
                }
            }
            let Some(p) = self.dbs[n].proc.as_ref() else {
                continue;
            };
            match p.phase {
                Phase::Failing { at } if now >= at => {
                    self.die(n);
                    self.event(now, format!("mariadbd {} exits (start failed)", name(n)));
                }
                Phase::Connecting { since } if now.saturating_sub(since) >= WAIT_PRIM_MS => {
                    self.die(n);
                    self.event(
                        now,
                        format!("mariadbd {} exits: no Primary component to join", name(n)),
                    );
                }
                Phase::Booting { until } if now >= until => {
                    let db = &self.dbs[n];
                    let pos = match db.uuid {
                        Some(u) => (u, db.seqno),
                        None => {
                            let u = self.next_uuid;
                            self.next_uuid += 1;
                            (u, 0)
                        }
                    };
                    self.covers(pos, &format!("the bootstrap of {}", name(n)))?;
                    let db = &mut self.dbs[n];
                    db.uuid = Some(pos.0);
                    db.seqno = pos.1;
                    if let Some(p) = db.proc.as_mut() {
                        p.phase = Phase::Synced;
                    }
                    self.install(BTreeSet::from([n]), Some(pos));
                    self.event(
                        now,
                        format!(
                            "{} bootstrapped: Primary of 1 at {}",
                            name(n),
                            pos_str(Some(pos.0), pos.1)
                        ),
                    );
                }
                Phase::Joining { until, sst, donor } if now >= until => {
                    let pos = self.comp_of(n).and_then(|(_, c)| c.primary);
                    if let Some((u, s)) = pos {
                        let db = &mut self.dbs[n];
                        db.uuid = Some(u);
                        db.seqno = s;
                        if let Some(p) = db.proc.as_mut() {
                            p.phase = Phase::Synced;
                        }
                        if sst {
                            if let Some(p) = self.dbs[donor].proc.as_mut() {
                                if matches!(p.phase, Phase::Donor { .. }) {
                                    p.phase = Phase::Synced;
                                }
                            }
                        }
                        self.event(
                            now,
                            format!(
                                "{} Synced after {} at {}",
                                name(n),
                                if sst { "SST" } else { "IST" },
                                pos_str(Some(u), s)
                            ),
                        );
                    }
                }
                Phase::Donor { until } if now >= until => {
                    if let Some(p) = self.dbs[n].proc.as_mut() {
                        p.phase = Phase::Synced;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Drops members silent for [`SUSPECT_MS`]; each group that still reaches itself forms a
    /// component, Primary when it is a strict majority of a Primary one.
    fn evictions(&mut self, now: u64) {
        let ids: Vec<u64> = self.comps.keys().copied().collect();
        for id in ids {
            let Some(c) = self.comps.get(&id) else {
                continue;
            };
            if c.unstable_since.is_none() && self.stable(c) {
                continue;
            }
            if c.members.is_empty() {
                self.comps.remove(&id);
                continue;
            }
            let members = c.members.clone();
            let ghosts = c.ghosts.clone();
            let ok: Vec<usize> = members.iter().copied().filter(|&m| self.alive(m)).collect();
            if ok.is_empty() {
                if let Some(c) = self.comps.get_mut(&id) {
                    // Nobody answers to count the silence: nothing changes until one does.
                    c.unstable_since = None;
                }
                continue;
            }
            let groups = self.groups(&ok);
            let stable = ghosts.is_empty() && ok.len() == members.len() && groups.len() == 1;
            let Some(c) = self.comps.get_mut(&id) else {
                continue;
            };
            if stable {
                c.unstable_since = None;
                continue;
            }
            let since = *c.unstable_since.get_or_insert(now);
            if now.saturating_sub(since) < SUSPECT_MS {
                continue;
            }
            let primary = c.primary;
            self.comps.remove(&id);
            let before = members.len() + ghosts.len();
            let was = if ghosts.is_empty() {
                names(&members)
            } else {
                format!(
                    "{}, {} gone",
                    names(&members),
                    names(&ghosts.keys().copied().collect())
                )
            };
            for g in groups {
                let stays = primary.filter(|_| 2 * g.len() > before);
                for &m in &g {
                    if stays.is_none() {
                        self.lose_primary(m, now);
                    }
                }
                let alive: BTreeSet<usize> = g
                    .iter()
                    .copied()
                    .filter(|&m| self.dbs[m].proc.is_some())
                    .collect();
                if alive.is_empty() {
                    continue;
                }
                self.install(alive.clone(), stays);
                self.event(
                    now,
                    format!(
                        "view {{{}}} {} (was {{{}}})",
                        names(&alive),
                        if stays.is_some() {
                            "Primary"
                        } else {
                            "non-Primary"
                        },
                        was
                    ),
                );
            }
            for &m in &members {
                if self.dbs[m].proc.is_some() && !ok.contains(&m) {
                    // Hung and evicted: alone when it resumes.
                    self.lose_primary(m, now);
                    if self.dbs[m].proc.is_some() {
                        self.install(BTreeSet::from([m]), None);
                    }
                }
            }
        }
    }

    /// Node `m`'s component stops being Primary for it: a transfer in progress fails (the
    /// joiner exits), a Synced node or donor is non-Primary.
    fn lose_primary(&mut self, m: usize, now: u64) {
        let Some(p) = self.dbs[m].proc.as_mut() else {
            return;
        };
        match p.phase {
            Phase::Joining { .. } => {
                self.die(m);
                self.event(
                    now,
                    format!("mariadbd {} exits: state transfer failed", name(m)),
                );
            }
            Phase::Synced | Phase::Donor { .. } => p.phase = Phase::NonPrimary,
            _ => {}
        }
    }

    /// Groups of `ok` that reach each other (connected by links).
    fn groups(&self, ok: &[usize]) -> Vec<BTreeSet<usize>> {
        let mut out: Vec<BTreeSet<usize>> = Vec::new();
        for &m in ok {
            let joined: Vec<usize> = (0..out.len())
                .filter(|&k| out[k].iter().any(|&o| self.linked(m, o)))
                .collect();
            let mut g = BTreeSet::from([m]);
            for &k in joined.iter().rev() {
                g.extend(out.remove(k));
            }
            out.push(g);
        }
        out.sort();
        out
    }

    /// A joiner whose donor left (or whose component is no longer Primary) fails.
    fn transfers(&mut self, now: u64) {
        for n in 0..N {
            let Some(Phase::Joining { donor, .. }) = self.proc(n).map(|p| p.phase) else {
                continue;
            };
            let ok = self.dbs[donor].proc.is_some()
                && self.proc(donor).and_then(|p| p.comp) == self.proc(n).and_then(|p| p.comp)
                && self.is_primary(n);
            if !ok {
                self.die(n);
                self.event(
                    now,
                    format!(
                        "mariadbd {} exits: its donor {} is gone",
                        name(n),
                        name(donor)
                    ),
                );
            }
        }
    }

    /// Merges components whose members have reached each other for [`MERGE_MS`]; a
    /// non-Primary component with a majority of its last Primary view becomes Primary again.
    fn merges(&mut self, now: u64) -> Result<(), String> {
        if self.comps.len() > 1 {
            'again: loop {
                let ids: Vec<u64> = self.comps.keys().copied().collect();
                for (i, &a) in ids.iter().enumerate() {
                    for &b in &ids[i + 1..] {
                        let (ca, cb) = (&self.comps[&a], &self.comps[&b]);
                        if (ca.primary.is_some() && cb.primary.is_some())
                            || !self.stable(ca)
                            || !self.stable(cb)
                        {
                            continue;
                        }
                        let linked = ca.members.iter().all(|&x| {
                            cb.members
                                .iter()
                                .all(|&y| self.linked_for(x, y, now, MERGE_MS))
                        });
                        if !linked {
                            continue;
                        }
                        let merged = match (ca.primary, cb.primary) {
                            (Some(_), None) => self.join_primary(a, b, now)?,
                            (None, Some(_)) => self.join_primary(b, a, now)?,
                            _ => {
                                let mut members =
                                    self.comps.remove(&a).map(|c| c.members).unwrap_or_default();
                                members.extend(
                                    self.comps.remove(&b).map(|c| c.members).unwrap_or_default(),
                                );
                                self.install(members, None);
                                true
                            }
                        };
                        if merged {
                            continue 'again;
                        }
                    }
                }
                break;
            }
        }
        let ids: Vec<u64> = self
            .comps
            .iter()
            .filter(|(_, c)| c.primary.is_none())
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.restore(id, now)?;
        }
        Ok(())
    }

    /// The members of non-Primary component `q` join Primary component `p`; false when `p`
    /// has no Synced member to be their donor.
    fn join_primary(&mut self, p: u64, q: u64, now: u64) -> Result<bool, String> {
        let Some(pos) = self.comps[&p].primary else {
            return Ok(false);
        };
        let Some(donor) = self.comps[&p]
            .members
            .iter()
            .copied()
            .find(|&m| self.proc(m).is_some_and(|x| x.phase == Phase::Synced))
        else {
            return Ok(false);
        };
        let joiners = self.comps.remove(&q).map(|c| c.members).unwrap_or_default();
        let mut members = self.comps.remove(&p).map(|c| c.members).unwrap_or_default();
        members.extend(joiners.iter().copied());
        self.install(members.clone(), Some(pos));
        for j in joiners {
            self.transfer(j, donor, pos, now)?;
        }
        self.event(
            now,
            format!(
                "view {{{}}} Primary at {}",
                names(&members),
                pos_str(Some(pos.0), pos.1)
            ),
        );
        Ok(true)
    }

    /// Node `j` joins the Primary at `pos` from `donor`: IST when it can, else SST.
    fn transfer(
        &mut self,
        j: usize,
        donor: usize,
        pos: (u32, i64),
        now: u64,
    ) -> Result<(), String> {
        let (uuid, seqno) = (self.dbs[j].uuid, self.dbs[j].seqno);
        let same = uuid == Some(pos.0);
        if same && seqno > pos.1 {
            return Err(format!(
                "lost acknowledged writes: {} at {} is ahead of the Primary it joins at {} and \
                 is wiped by SST",
                name(j),
                pos_str(uuid, seqno),
                pos_str(Some(pos.0), pos.1)
            ));
        }
        let ist = same && pos.1 - seqno <= GCACHE_SEQNOS;
        let (until, sst) = if ist {
            (now + IST_MS, false)
        } else {
            let d = self.gen_range(SST_MS.0, SST_MS.1);
            if let Some(p) = self.dbs[donor].proc.as_mut() {
                p.phase = Phase::Donor { until: now + d };
            }
            // The joiner's datadir is overwritten from here on.
            self.dbs[j].uuid = None;
            self.dbs[j].seqno = -1;
            (now + d, true)
        };
        if same && seqno == pos.1 {
            if let Some(p) = self.dbs[j].proc.as_mut() {
                p.phase = Phase::Synced;
            }
            return Ok(());
        }
        if let Some(p) = self.dbs[j].proc.as_mut() {
            p.phase = Phase::Joining { until, sst, donor };
        }
        self.event(
            now,
            format!(
                "{} joins by {} from {} ({} -> {})",
                name(j),
                if sst { "SST" } else { "IST" },
                name(donor),
                pos_str(uuid, seqno),
                pos_str(Some(pos.0), pos.1)
            ),
        );
        Ok(())
    }

    /// Galera's own recovery: a stable non-Primary component holding a strict majority of
    /// the members of the last Primary view they saw becomes Primary again.
    fn restore(&mut self, id: u64, now: u64) -> Result<(), String> {
        let Some(c) = self.comps.get(&id) else {
            return Ok(());
        };
        if c.primary.is_some() || !self.stable(c) {
            return Ok(());
        }
        let mut holders: BTreeMap<(u64, usize), Vec<usize>> = BTreeMap::new();
        for &m in &c.members {
            if let Some(v) = self.proc(m).and_then(|p| p.last_prim) {
                holders.entry(v).or_default().push(m);
            }
        }
        let Some((_, hs)) = holders
            .into_iter()
            .rev()
            .find(|((_, size), hs)| 2 * hs.len() > *size)
        else {
            return Ok(());
        };
        let Some(&src) = hs
            .iter()
            .max_by_key(|&&h| (self.dbs[h].seqno, std::cmp::Reverse(h)))
        else {
            return Ok(());
        };
        let Some(u) = self.dbs[src].uuid else {
            return Ok(());
        };
        let pos = (u, self.dbs[src].seqno);
        self.covers(pos, "Galera's own recovery of a Primary")?;
        let members = self
            .comps
            .remove(&id)
            .map(|c| c.members)
            .unwrap_or_default();
        self.install(members.clone(), Some(pos));
        for &m in &members {
            if hs.contains(&m) && self.dbs[m].uuid == Some(u) && self.dbs[m].seqno == pos.1 {
                if let Some(p) = self.dbs[m].proc.as_mut() {
                    p.phase = Phase::Synced;
                }
            }
        }
        for &m in &members {
            if self.proc(m).is_some_and(|p| p.phase != Phase::Synced) {
                self.transfer(m, src, pos, now)?;
            }
        }
        self.event(
            now,
            format!(
                "view {{{}}} Primary again at {} (a majority of its last Primary view)",
                names(&members),
                pos_str(Some(pos.0), pos.1)
            ),
        );
        Ok(())
    }

    /// While mariadbd runs, grastate says `seqno: -1`, and `safe_to_bootstrap: 1` only while
    /// it is alone in a Primary component.
    fn running_grastate(&mut self, n: usize) {
        let Some(p) = self.proc(n) else {
            return;
        };
        if matches!(p.phase, Phase::Failing { .. } | Phase::Booting { .. }) {
            return;
        }
        let alone = self
            .comp_of(n)
            .filter(|(_, c)| c.primary.is_some())
            .map(|(_, c)| c.members.len() == 1 && c.ghosts.is_empty());
        let uuid = self.dbs[n].uuid;
        if let Gs::Present { safe, .. } = self.dbs[n].grastate {
            self.dbs[n].grastate = Gs::Present {
                uuid,
                seqno: None,
                safe: alone.unwrap_or(safe),
            };
        }
    }

    /// The client's write, and the split-brain check.
    fn writes(&mut self) -> Result<(), String> {
        let (count, first) = self.accepting();
        if count > 1 {
            let comps: Vec<String> = self
                .comps
                .values()
                .filter(|c| self.accepts(c))
                .map(|c| {
                    let (u, s) = c.primary.unwrap_or((0, 0));
                    format!("{{{}}} at {}", names(&c.members), pos_str(Some(u), s))
                })
                .collect();
            return Err(format!(
                "split brain: two Primary components accept writes: {}",
                comps.join(" and ")
            ));
        }
        let Some(id) = first else {
            return Ok(());
        };
        if self.rng.gen_range(0..100) >= WRITE_PCT {
            return Ok(());
        }
        let Some((u, s)) = self
            .comps
            .get_mut(&id)
            .and_then(|c| c.primary.as_mut())
            .map(|p| {
                p.1 += 1;
                *p
            })
        else {
            return Ok(());
        };
        if let Some((au, asq)) = self.acked {
            if au != u || s != asq + 1 {
                let members = self.comps.get(&id).map(|c| names(&c.members));
                return Err(format!(
                    "lost acknowledged writes: {{{}}} commits {} after {} was acknowledged",
                    members.unwrap_or_default(),
                    pos_str(Some(u), s),
                    pos_str(Some(au), asq)
                ));
            }
        }
        self.acked = Some((u, s));
        self.writes += 1;
        for db in &mut self.dbs {
            if db.proc.as_ref().is_some_and(|p| {
                p.comp == Some(id) && matches!(p.phase, Phase::Synced | Phase::Donor { .. })
            }) {
                db.uuid = Some(u);
                db.seqno = s;
            }
        }
        Ok(())
    }

    // ----- what happens to a process -------------------------------------------------------

    /// The process of `n` is gone (killed or exited): its component notices by the suspect
    /// timeout; its grastate stays as it was while running.
    fn die(&mut self, n: usize) {
        if let Some(id) = self.dbs[n].proc.as_ref().and_then(|p| p.comp) {
            if let Some(c) = self.comps.get_mut(&id) {
                if c.members.remove(&n) {
                    let gcomm = self.dbs[n].proc.as_ref().map(|p| p.gcomm.clone());
                    c.ghosts.insert(n, gcomm.unwrap_or_default());
                }
            }
        }
        self.dbs[n].proc = None;
    }

    /// SIGKILL (a crash).
    pub fn kill(&mut self, n: usize, now: u64) {
        if self.dbs[n].proc.is_some() {
            self.die(n);
            self.event(now, format!("mariadbd {} killed", name(n)));
        }
    }

    /// SIGSTOP until `until`.
    pub fn hang(&mut self, n: usize, until: u64, now: u64) {
        if let Some(p) = self.dbs[n].proc.as_mut() {
            p.hung_until = Some(until);
            self.event(now, format!("mariadbd {} hangs", name(n)));
        }
    }

    /// SIGCONT now.
    pub fn resume(&mut self, n: usize, now: u64) {
        if let Some(p) = self.dbs[n].proc.as_mut() {
            if p.hung_until.is_some() {
                p.hung_until = Some(now);
            }
        }
    }

    /// A clean stop (`by` says who): a graceful leave; grastate gets the seqno, and
    /// `safe_to_bootstrap: 1` when it was the last member of a Primary component. A hung
    /// mariadbd does not stop: it is killed at the stop timeout.
    pub fn stop(&mut self, n: usize, now: u64, by: &str) {
        let Some(p) = self.dbs[n].proc.clone() else {
            return;
        };
        if p.hung_until.is_some()
            || matches!(p.phase, Phase::Failing { .. } | Phase::Booting { .. })
        {
            self.kill(n, now);
            return;
        }
        let mut last = false;
        if let Some(id) = p.comp {
            if let Some(c) = self.comps.remove(&id) {
                last = c.primary.is_some() && c.members.len() == 1 && c.ghosts.is_empty();
                let rest: BTreeSet<usize> = c.members.iter().copied().filter(|&m| m != n).collect();
                if !rest.is_empty() {
                    let new = self.install(rest, c.primary);
                    if let Some(nc) = self.comps.get_mut(&new) {
                        nc.unstable_since = c.unstable_since;
                        nc.ghosts.clone_from(&c.ghosts);
                    }
                }
            }
        }
        let db = &mut self.dbs[n];
        db.proc = None;
        db.grastate = match (db.grastate, db.uuid) {
            (Gs::Missing, _) => Gs::Missing,
            (_, Some(u)) => Gs::Present {
                uuid: Some(u),
                seqno: Some(db.seqno),
                safe: last,
            },
            (_, None) => Gs::Present {
                uuid: None,
                seqno: None,
                safe: false,
            },
        };
        let at = pos_str(db.uuid, db.seqno);
        self.event(
            now,
            format!(
                "mariadbd {} stopped cleanly by {by} at {at}{}",
                name(n),
                if last { ", safe_to_bootstrap 1" } else { "" }
            ),
        );
    }

    /// Deletes the grastate of a node whose mariadbd is down (a rare fault).
    pub fn lose_grastate(&mut self, n: usize, now: u64) {
        if self.dbs[n].proc.is_none() && self.dbs[n].grastate != Gs::Missing {
            self.dbs[n].grastate = Gs::Missing;
            self.event(now, format!("{}'s grastate.dat is gone", name(n)));
        }
    }

    /// Starts mariadbd `n` as `step` (a [`Step::Start`] of its agent's planner: the glue is
    /// the only way to start one) asks. Idempotent. An error is a violated invariant.
    pub fn start(&mut self, n: usize, step: &Step, now: u64) -> Result<(), String> {
        let Step::Start { kind, position, .. } = step else {
            return Err(format!(
                "mariadbd {} started without a Start step: {step:?}",
                name(n)
            ));
        };
        self.starts += 1;
        if self.dbs[n].proc.is_some() {
            return Ok(());
        }
        if let Some(p) = position {
            let have = self.dbs[n]
                .uuid
                .map(|u| format!("{}:{}", uuid_str(u), self.dbs[n].seqno));
            if have.as_deref() != Some(p.as_str()) {
                return Err(format!(
                    "{} started from position {p}, but its data is at {}",
                    name(n),
                    pos_str(self.dbs[n].uuid, self.dbs[n].seqno)
                ));
            }
        }
        let refused = *kind == StartKind::NewCluster
            && matches!(
                self.dbs[n].grastate,
                Gs::Present {
                    uuid: Some(_),
                    safe: false,
                    ..
                }
            );
        let phase = if now < self.dbs[n].broken_until || refused {
            Phase::Failing {
                at: now + FAIL_START_MS,
            }
        } else if *kind == StartKind::NewCluster {
            Phase::Booting {
                until: now + BOOT_MS,
            }
        } else {
            Phase::Connecting { since: now }
        };
        let joiner = matches!(phase, Phase::Connecting { .. });
        self.processes += 1;
        self.dbs[n].proc = Some(Proc {
            phase,
            hung_until: None,
            comp: None,
            last_prim: None,
            gcomm: gcomm_str(n, self.processes),
            evict_list: BTreeSet::new(),
            evicted: false,
        });
        if joiner {
            self.install(BTreeSet::from([n]), None);
        }
        if !matches!(phase, Phase::Failing { .. }) {
            // mariadbd marks its grastate "running" (and writes one when there is none).
            let (uuid, safe) = match self.dbs[n].grastate {
                Gs::Present { uuid, safe, .. } => (uuid, safe),
                Gs::Missing => (self.dbs[n].uuid, false),
            };
            self.dbs[n].grastate = Gs::Present {
                uuid,
                seqno: None,
                safe,
            };
        }
        let how = match (kind, refused, now < self.dbs[n].broken_until) {
            (_, _, true) => "start (fails: the node is broken)".to_string(),
            (_, true, _) => "start as a new cluster refused: safe_to_bootstrap 0".to_string(),
            (StartKind::NewCluster, ..) => "start as a new cluster".to_string(),
            (StartKind::Join, ..) => "start as a joiner".to_string(),
        };
        self.event(
            now,
            format!(
                "mariadbd {} {how} from {}",
                name(n),
                position.as_deref().map_or("no position".to_string(), |p| {
                    p.rsplit_once(':')
                        .map_or(p.to_string(), |(_, s)| format!("seqno {s}"))
                })
            ),
        );
        Ok(())
    }

    /// `pc.bootstrap=YES` on mariadbd `n`: its component becomes Primary at its position (a
    /// no-op on a Primary node). An `Err` is the SQL error (not running, no answer); a
    /// violated invariant is `Ok(Some)`.
    pub fn pc_bootstrap(&mut self, n: usize, now: u64) -> Result<Option<String>, String> {
        if !self.alive(n) {
            return Err(format!("pc.bootstrap on {}: no answer", name(n)));
        }
        let Some((id, c)) = self.comp_of(n) else {
            return Err(format!("pc.bootstrap on {}: not connected", name(n)));
        };
        if c.primary.is_some() {
            return Ok(None);
        }
        let pos = match self.dbs[n].uuid {
            Some(u) => (u, self.dbs[n].seqno),
            None => {
                let u = self.next_uuid;
                self.next_uuid += 1;
                self.dbs[n].uuid = Some(u);
                self.dbs[n].seqno = 0;
                (u, 0)
            }
        };
        if let Err(e) = self.covers(pos, &format!("pc.bootstrap on {}", name(n))) {
            return Ok(Some(e));
        }
        let Some(old) = self.comps.remove(&id) else {
            return Err(format!("pc.bootstrap on {}: not connected", name(n)));
        };
        let members = old.members;
        let new = self.install(members.clone(), Some(pos));
        if let Some(c) = self.comps.get_mut(&new) {
            // A silent member is still counted, and still evicted at its suspect timeout.
            c.ghosts = old.ghosts;
            c.unstable_since = old.unstable_since;
        }
        if let Some(p) = self.dbs[n].proc.as_mut() {
            p.phase = Phase::Synced;
        }
        for &m in &members {
            if m != n {
                if let Err(e) = self.transfer(m, n, pos, now) {
                    return Ok(Some(e));
                }
            }
        }
        self.event(
            now,
            format!(
                "pc.bootstrap on {}: view {{{}}} Primary at {}",
                name(n),
                names(&members),
                pos_str(Some(pos.0), pos.1)
            ),
        );
        Ok(None)
    }

    /// `mariadbd --wsrep-recover` on the stopped node `n`: its durable position.
    pub fn recover(&self, n: usize) -> Result<GaleraPosition, String> {
        if self.dbs[n].proc.is_some() {
            return Err("mariadbd is running (the datadir is locked)".into());
        }
        Ok(match self.dbs[n].uuid {
            Some(u) => GaleraPosition {
                uuid: Some(uuid_str(u)),
                seqno: Some(self.dbs[n].seqno),
            },
            None => GaleraPosition {
                uuid: None,
                seqno: None,
            },
        })
    }

    /// A bootstrap the glue of agent incarnation `agent` carries out for outage `outage` on
    /// node `n`: at most one per outage, and none while any node is in a Primary component.
    ///
    /// One exception, by design (`reconcile::galera`'s fencing note): the same node's agent,
    /// restarted since its bootstrap of that outage (its memory lost), may carry it out again,
    /// no Primary existing (counted in [`World::rebootstraps`]). [`World::strict`] (from
    /// `TRIAD_SIM_GALERA_STRICT=1`) counts that as a violation too.
    pub fn bootstrapped(
        &mut self,
        outage: u64,
        n: usize,
        agent: u64,
        now: u64,
    ) -> Result<(), String> {
        let primaries: Vec<String> = self.primaries().into_iter().map(name).collect();
        let strict = self.strict;
        let before = self.bootstraps.entry(outage).or_default();
        let again = !before.is_empty();
        let excused = !strict && before.iter().all(|&(m, _, inc)| m == n && inc != agent);
        before.push((n, now, agent));
        if again && !excused {
            let all: Vec<String> = before
                .iter()
                .map(|(m, at, _)| format!("{} at t={at}ms", name(*m)))
                .collect();
            return Err(format!(
                "one bootstrap per outage: outage {outage} was bootstrapped {} times ({})",
                before.len(),
                all.join(", ")
            ));
        }
        if again {
            self.rebootstraps += 1;
            self.event(
                now,
                format!(
                    "{} bootstraps outage {outage} again: its agent restarted since its first \
                     bootstrap",
                    name(n)
                ),
            );
        }
        if !primaries.is_empty() {
            return Err(format!(
                "bootstrap of {} for outage {outage} while {} Primary",
                name(n),
                primaries.join(", ")
            ));
        }
        Ok(())
    }

    // ----- what the agents see -------------------------------------------------------------

    /// What mariadbd `n` answers on its socket: its process, `wsrep_local_state` and its
    /// comment, and whether it is in a Primary component; else why not (refused: not running,
    /// or not serving SQL yet; timeout: hung).
    fn answer(&self, n: usize) -> Result<(&Proc, i64, &'static str, bool), FailureKind> {
        let p = self.proc(n).ok_or(FailureKind::Refused)?;
        if p.hung_until.is_some() {
            return Err(FailureKind::Timeout);
        }
        let primary = self.is_primary(n);
        let (state, comment) = match p.phase {
            Phase::Connecting { .. } | Phase::Booting { .. } | Phase::Failing { .. } => {
                return Err(FailureKind::Refused);
            }
            Phase::Joining { .. } => (1, "Joining"),
            Phase::Donor { .. } => (2, "Donor/Desynced"),
            Phase::Synced if primary => (4, "Synced"),
            Phase::Synced | Phase::NonPrimary => (0, "Initialized"),
        };
        Ok((p, state, comment, primary))
    }

    /// Whether mariadbd `n` may take writes now: it answers, Synced, in a Primary component
    /// (what `wsrep_ready` and the writer's own check require).
    pub fn serving(&self, n: usize) -> bool {
        matches!(self.answer(n), Ok((_, 4, _, true)))
    }

    /// The gcomm UUID of node `n`'s running mariadbd (alive or hung, whatever it does).
    pub fn running_gcomm(&self, n: usize) -> Option<&str> {
        self.proc(n).map(|p| p.gcomm.as_str())
    }

    /// What the writer reconciler's [`GaleraSql::read`] gets from node `n` over its socket:
    /// the same answer as the probe's (`answer`), with its gcomm UUID and evict list.
    ///
    /// [`GaleraSql::read`]: triad::actuator::galera_sql::GaleraSql::read
    pub fn local_sql(&self, n: usize, timeout: Duration) -> Result<LocalWsrep, GaleraSqlError> {
        let at = format!("sim:n{}/mysqld.sock", n + 1);
        match self.answer(n) {
            Ok((p, state, comment, primary)) => Ok(LocalWsrep {
                primary,
                synced: state == 4,
                ready: primary && state == 4,
                gcomm_uuid: Some(p.gcomm.clone()),
                evict_list: p.evict_list.iter().cloned().collect(),
                state: comment.into(),
            }),
            Err(FailureKind::Timeout) => Err(GaleraSqlError::Timeout { at, after: timeout }),
            Err(_) => Err(GaleraSqlError::Refused { at }),
        }
    }

    /// `SET GLOBAL wsrep_provider_options='evs.evict=UUID'` run on node `n` (its agent's
    /// writer reconciler did; `Err` when it does not answer): the UUID joins its evict list,
    /// and a member of its component with that UUID is dropped from the component at once
    /// (Galera's eviction instead of the suspect timeout). A dead member's (a ghost's): the
    /// rest install a new view without it, Primary when it was and they are a strict majority
    /// of the view before (as the suspect timeout would, only now). A running member's (a
    /// bug: the simulation checks that none is ever committed): it is cut off alone,
    /// non-Primary, for good (an evicted process never rejoins until it restarts).
    pub fn evict(&mut self, n: usize, uuid: &str, now: u64) -> Result<(), String> {
        if self.answer(n).is_err() {
            return Err(format!("evs.evict on {}: no answer", name(n)));
        }
        let Some(p) = self.dbs[n].proc.as_mut() else {
            return Ok(());
        };
        p.evict_list.insert(uuid.to_string());
        let Some((id, c)) = self.comp_of(n) else {
            return Ok(());
        };
        let ghost = c.ghosts.iter().find(|(_, u)| *u == uuid).map(|(&g, _)| g);
        let member = c
            .members
            .iter()
            .copied()
            .find(|&m| m != n && self.running_gcomm(m) == Some(uuid));
        if ghost.is_none() && member.is_none() {
            return Ok(());
        }
        let Some(c) = self.comps.remove(&id) else {
            return Ok(());
        };
        let before = c.members.len() + c.ghosts.len();
        let was = format!(
            "{}{}",
            names(&c.members),
            if c.ghosts.is_empty() {
                String::new()
            } else {
                format!(", {} gone", names(&c.ghosts.keys().copied().collect()))
            }
        );
        let mut rest = c.members.clone();
        let mut ghosts = c.ghosts.clone();
        let gone = ghost.or(member).unwrap_or(n);
        if let Some(g) = ghost {
            ghosts.remove(&g);
        }
        if let Some(m) = member {
            rest.remove(&m);
        }
        let stays = c.primary.filter(|_| 2 * rest.len() > before);
        if stays.is_none() {
            for &m in &rest {
                self.lose_primary(m, now);
            }
        }
        let rest: BTreeSet<usize> = rest
            .into_iter()
            .filter(|&m| self.dbs[m].proc.is_some())
            .collect();
        if !rest.is_empty() {
            let silent = !ghosts.is_empty() || rest.iter().any(|&m| !self.alive(m));
            let new = self.install(rest.clone(), stays);
            if let Some(nc) = self.comps.get_mut(&new) {
                nc.ghosts = ghosts;
                nc.unstable_since = c.unstable_since.filter(|_| silent);
            }
        }
        if let Some(m) = member {
            self.lose_primary(m, now);
            if let Some(p) = self.dbs[m].proc.as_mut() {
                p.evicted = true;
            }
            if self.dbs[m].proc.is_some() {
                self.install(BTreeSet::from([m]), None);
            }
        }
        self.event(
            now,
            format!(
                "evs.evict on {} of {} ({}): view {{{}}} {} (was {{{was}}})",
                name(n),
                name(gone),
                if member.is_some() { "running" } else { "dead" },
                names(
                    &self
                        .comp_of(n)
                        .map(|(_, c)| c.members.clone())
                        .unwrap_or_default()
                ),
                if stays.is_some() {
                    "Primary"
                } else {
                    "non-Primary"
                },
            ),
        );
        Ok(())
    }

    /// `evs.evict=` run on node `n`: clears its evict list (`Err` when it does not answer).
    pub fn clear_evictions(&mut self, n: usize) -> Result<(), String> {
        if self.answer(n).is_err() {
            return Err(format!("evs.evict= on {}: no answer", name(n)));
        }
        if let Some(p) = self.dbs[n].proc.as_mut() {
            p.evict_list.clear();
        }
        Ok(())
    }

    /// What service control says of mariadbd `n`.
    pub fn service(&self, n: usize) -> ProcessState {
        if self.dbs[n].proc.is_some() {
            ProcessState::Running
        } else {
            ProcessState::Stopped
        }
    }

    /// `grastate.dat` of node `n`, as `probe::grastate::read_grastate` returns it.
    pub fn grastate_file(&self, n: usize) -> Result<Option<Grastate>, String> {
        Ok(match self.dbs[n].grastate {
            Gs::Missing => None,
            Gs::Present { uuid, seqno, safe } => Some(Grastate {
                version: "2.1".into(),
                uuid: uuid.map(uuid_str),
                seqno,
                safe_to_bootstrap: safe,
            }),
        })
    }

    /// `grastate.dat` of node `n` as the glue reads it into its facts.
    pub fn grastate_evidence(&self, n: usize) -> GrastateEvidence {
        match self.grastate_file(n) {
            Ok(Some(g)) => GrastateEvidence::Present {
                uuid: g.uuid,
                seqno: g.seqno,
                safe_to_bootstrap: g.safe_to_bootstrap,
            },
            Ok(None) => GrastateEvidence::Missing,
            Err(error) => GrastateEvidence::Unreadable { error },
        }
    }

    /// Sets `safe_to_bootstrap` in node `n`'s grastate (`set_safe_to_bootstrap`).
    pub fn set_safe(&mut self, n: usize, safe: bool) -> Result<(), String> {
        match &mut self.dbs[n].grastate {
            Gs::Present { safe: s, .. } => {
                *s = safe;
                Ok(())
            }
            Gs::Missing => Err("grastate.dat: no such file".into()),
        }
    }

    /// The check of mariadbd `subject` by `observer`'s agent, as `MariadbProbe` reports it:
    /// the server's status when it answers (`judge`), else the failure, with grastate and the
    /// local recovery's `notes` on the local check (`grastate_json`, then
    /// [`LocalGaleraNotes::add_to`]). `reaches` says
    /// whether the network lets the check through (the local check uses the socket).
    pub fn check(
        &self,
        observer: usize,
        subject: usize,
        reaches: bool,
        notes: &LocalGaleraNotes,
    ) -> CheckResult {
        let local = observer == subject;
        let db = &self.dbs[subject];
        let failed = |kind: FailureKind, why: &str| {
            let mut r = CheckResult::unreachable(kind, format!("mariadb n{}: {why}", subject + 1));
            if local {
                r.details = grastate_json(&self.grastate_file(subject));
                notes.add_to(&mut r.details);
            }
            r
        };
        if !local && !reaches {
            return failed(FailureKind::Timeout, "timed out");
        }
        let (p, state, comment, primary) = match self.answer(subject) {
            Ok(a) => a,
            Err(FailureKind::Timeout) => return failed(FailureKind::Timeout, "timed out"),
            Err(kind) => return failed(kind, "connection refused"),
        };
        let comp = p.comp.and_then(|id| self.comps.get(&id));
        let size = comp.map_or(1, |c| c.members.len() + c.ghosts.len());
        // The simulation models no auto-increment settings: no check (0).
        let mut r = judge(
            GaleraStatus {
                local_state: Some(state),
                local_state_comment: Some(comment.into()),
                cluster_status: Some(if primary { "Primary" } else { "non-Primary" }.into()),
                cluster_size: Some(i64::try_from(size).unwrap_or(0)),
                ready: Some(primary && state == 4),
                connected: Some(true),
                last_committed: Some(db.seqno),
                state_uuid: Some(
                    db.uuid
                        .map_or_else(|| triad::probe::grastate::NIL_UUID.to_string(), uuid_str),
                ),
                gcomm_uuid: Some(p.gcomm.clone()),
                ..GaleraStatus::default()
            },
            0,
        );
        if local {
            notes.add_bootstrapped_to(&mut r.details);
        }
        r
    }

    /// One line per node for the scripts' `galera` status.
    pub fn status_rows(&self, now: u64) -> Vec<Vec<String>> {
        (0..N)
            .map(|n| {
                let db = &self.dbs[n];
                let state = match &db.proc {
                    None if db.broken_until > now => "dead (broken)".to_string(),
                    None => "dead".into(),
                    Some(p) => {
                        let comp = p.comp.and_then(|id| self.comps.get(&id));
                        let view = comp.map_or(String::new(), |c| {
                            format!(
                                ", {} {{{}}}",
                                if c.primary.is_some() {
                                    "Primary"
                                } else {
                                    "non-Primary"
                                },
                                names(&c.members)
                            )
                        });
                        let phase = match p.phase {
                            Phase::Connecting { .. } => "connecting",
                            Phase::Booting { .. } => "booting",
                            Phase::Failing { .. } => "failing",
                            Phase::Joining { sst: true, .. } => "joining (SST)",
                            Phase::Joining { sst: false, .. } => "joining (IST)",
                            Phase::Donor { .. } => "donor",
                            Phase::Synced => "synced",
                            Phase::NonPrimary => "non-primary",
                        };
                        let hung = if p.hung_until.is_some() { "hung, " } else { "" };
                        format!("{hung}{phase}{view}")
                    }
                };
                let gs = match db.grastate {
                    Gs::Missing => "none".to_string(),
                    Gs::Present { uuid, seqno, safe } => format!(
                        "{}:{} safe {}",
                        uuid.map_or("nil".to_string(), short),
                        seqno.unwrap_or(-1),
                        u8::from(safe)
                    ),
                };
                vec![
                    name(n),
                    state,
                    format!("data {}", pos_str(db.uuid, db.seqno)),
                    format!("grastate {gs}"),
                ]
            })
            .collect()
    }
}

// ----- the glue ----------------------------------------------------------------------------

/// One agent's Galera recovery task, as `local::spawn_galera` runs it: the planner, the notes
/// its probe reports, and a `--wsrep-recover` under way. Lost when the agent crashes.
pub struct Glue {
    me: usize,
    /// Which start of this agent this is (bootstraps are told apart by it).
    incarnation: u64,
    /// The production planner.
    pub planner: GaleraRecovery,
    /// What the local probe reports while mariadbd does not answer.
    pub notes: LocalGaleraNotes,
    /// A `--wsrep-recover` under way ends then (the task's cycle blocks meanwhile).
    recovering: Option<u64>,
    /// The target the last cycle saw (a new one wakes the task at once).
    pub last_target: Option<GaleraTarget>,
}

/// The recovery's tunables in the simulation: `[galera]`'s (`g`), but for the hourly cap (the
/// simulation packs hours of faults into minutes; the cap has its own unit tests).
pub fn recovery_settings(g: &GaleraSection) -> RecoverySettings {
    RecoverySettings {
        rejoin: g.rejoin,
        backoff_ms: millis(g.restart_backoff),
        max_per_hour: 1_000,
        restart_non_primary_after_ms: millis(g.restart_non_primary_after),
        // Process control, as in the lab: the agent recovers the position itself.
        unit_recovers: false,
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Glue {
    /// A fresh task for node index `me` (the agent just started, its `incarnation`th start),
    /// with the recovery's tunables.
    pub fn new(me: usize, incarnation: u64, settings: RecoverySettings) -> Glue {
        Glue {
            me,
            incarnation,
            planner: GaleraRecovery::new(NodeId(me as u64 + 1), N, settings),
            notes: LocalGaleraNotes::default(),
            recovering: None,
            last_target: None,
        }
    }

    /// One cycle of the task at `now`, on `world`, with this agent's health store and the
    /// published target: gathers the facts, plans a step and carries it out. Answers a line
    /// for the trace when it did something; an error is a violated invariant.
    pub fn cycle(
        &mut self,
        world: &mut World,
        health: &HealthStore,
        target: Option<&GaleraTarget>,
        freshness_ms: u64,
        now: u64,
    ) -> Result<Option<String>, String> {
        let me = self.me;
        let id = NodeId(me as u64 + 1);
        if let Some(done) = self.recovering {
            if now < done {
                return Ok(None);
            }
            self.recovering = None;
            let line = match world.recover(me) {
                Ok(p) => {
                    let line = format!(
                        "{id} galera: --wsrep-recover found {}:{}",
                        p.uuid
                            .as_deref()
                            .map_or("nil", |u| u.rsplit('-').next().unwrap_or(u)),
                        p.seqno.unwrap_or(-1)
                    );
                    self.planner.recovered(p);
                    line
                }
                Err(e) => {
                    self.planner.recover_failed(e.clone(), now);
                    format!("{id} galera: --wsrep-recover failed: {e}")
                }
            };
            self.notes.recovered = self.planner.recovered_position().cloned();
            return Ok(Some(line));
        }
        self.last_target = target.cloned();
        let mut process = world.service(me);
        let members: Vec<NodeId> = (1..=N as u64).map(NodeId).collect();
        let checks = PeerChecks::from_seen(&health.all(now), id, &members, freshness_ms);
        let grastate = world.grastate_evidence(me);
        let facts = checks.into_facts(now, process, grastate.clone());
        process = facts.process;
        let step = self.planner.next(target, &facts);
        let mut line = step
            .is_action()
            .then(|| format!("{id} galera: {}", describe(&step)));
        match &step {
            Step::Idle { .. } => {}
            Step::Recover { .. } => {
                self.recovering = Some(now + world.gen_range(RECOVER_MS.0, RECOVER_MS.1));
            }
            Step::Start { kind, outage, .. } => {
                let safe = *kind == StartKind::NewCluster;
                if let GrastateEvidence::Present {
                    safe_to_bootstrap, ..
                } = grastate
                {
                    if safe_to_bootstrap != safe {
                        // Never fails here: the file is there.
                        let _ = world.set_safe(me, safe);
                    }
                }
                if let (StartKind::NewCluster, Some(o)) = (kind, outage) {
                    world.bootstrapped(o.0, me, self.incarnation, now)?;
                }
                world.start(me, &step, now)?;
                self.planner.started(&step, now);
                // Reported as running from now on (not as this cycle's stopped).
                process = ProcessState::Running;
            }
            Step::PcBootstrap { outage, .. } => {
                let already = world.is_primary(me);
                if !already && world.alive(me) {
                    world.bootstrapped(outage.0, me, self.incarnation, now)?;
                }
                match world.pc_bootstrap(me, now) {
                    Ok(None) => self.planner.started(&step, now),
                    Ok(Some(violation)) => return Err(violation),
                    Err(e) => {
                        line = Some(format!("{id} galera: pc.bootstrap failed: {e}"));
                    }
                }
            }
            Step::Stop { .. } => {
                world.stop(me, now, &format!("{id}'s agent"));
                self.planner.started(&step, now);
            }
        }
        self.notes.service = match process {
            ProcessState::Running => Some("running"),
            ProcessState::Stopped => Some("stopped"),
            ProcessState::Unknown => None,
        };
        self.notes.recovered = self.planner.recovered_position().cloned();
        self.notes.bootstrapped = self.planner.view(now).bootstrapped;
        Ok(line)
    }
}

/// A step in a few words (its reason included).
fn describe(step: &Step) -> String {
    let why = step.why();
    match step {
        Step::Idle { .. } => format!("idle ({why})"),
        Step::Recover { .. } => format!("--wsrep-recover ({why})"),
        Step::Start { kind, .. } => format!(
            "start {} ({why})",
            match kind {
                StartKind::Join => "as a joiner",
                StartKind::NewCluster => "as a new cluster",
            }
        ),
        Step::PcBootstrap { .. } => format!("pc.bootstrap ({why})"),
        Step::Stop { .. } => format!("stop ({why})"),
    }
}
