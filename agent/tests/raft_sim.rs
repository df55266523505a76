//! Deterministic, seeded simulation of three Raft cores in one process.
//!
//! Runs the production [`RaftNode`] (raft-rs plus the redb store on a shared in-memory backend)
//! and the production [`StateMachine`] over a simulated network and clock. Faults are drawn from
//! the seed: symmetric and one-way link cuts, isolating one node, message loss, delay and
//! reordering, crashes and restarts of any node or of all three (a crash drops everything in
//! memory; only what the store committed survives), and clock skew (a node skips ticks).
//!
//! Checked after every step:
//! - election safety: at most one leader per term;
//! - log matching / state-machine safety: every node applies the same entry at the same index;
//! - durability: entries re-applied after a restart match what was applied before.
//!
//! Checked at the end, after faults stop: a leader is elected within 3 maximum election
//! timeouts, every acknowledged proposal is applied on every node, and all states are equal.
//!
//! `TRIAD_SIM_SEEDS=N` runs N seeds (default 200), `TRIAD_SIM_SEED=S` replays one seed.
//! A failure prints the seed, the invariant, and the last events.

mod simkit;

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use triad::cluster::Command;
use triad::codec::{self, Proposal, ProposalId};
use triad::ids::{NodeId, UnixMillis};
use triad::node::StateMachine;
use triad::raft::{CoreConfig, RaftNode, RaftStore, Role, SharedMemBackend};

use simkit::{catch_panics, hash, report, seeds, Elections, LogMatching, Trace};

/// This test target, for the replay line of a failure report.
const TEST: &str = "raft_sim";
const NODES: u64 = 3;
const ELECTION_TICKS: usize = 10;
const HEARTBEAT_TICKS: usize = 2;
const SNAPSHOT_EVERY: u64 = 25;
const FAULT_STEPS: u64 = 1500;
const HEAL_STEPS: u64 = 400;

/// Bugs the checker must be able to catch (proves the invariants are not vacuous).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Plant {
    None,
    /// A restarted node forgets whom it voted for in its current term (as if the vote were
    /// not made durable before answering).
    ForgetVote,
}

struct Live {
    raft: RaftNode,
    sm: StateMachine,
}

struct SimNode {
    id: NodeId,
    backend: SharedMemBackend,
    live: Option<Live>,
    seq: u64,
    restarts: u64,
}

struct InFlight {
    at: u64,
    from: NodeId,
    to: NodeId,
    bytes: Vec<u8>,
}

struct Sim {
    seed: u64,
    rng: StdRng,
    now: u64,
    nodes: Vec<SimNode>,
    net: Vec<InFlight>,
    blocked: BTreeSet<(u64, u64)>,
    loss_pct: u32,
    elections: Elections,
    log_matching: LogMatching,
    acked: BTreeMap<ProposalId, u64>,
    trace: Trace,
    plant: Plant,
    heavy_crashes: bool,
    faults: u64,
}

impl Sim {
    fn new(seed: u64, plant: Plant) -> Self {
        let mut sim = Sim {
            seed,
            rng: StdRng::seed_from_u64(seed),
            now: 0,
            nodes: (1..=NODES)
                .map(|i| SimNode {
                    id: NodeId(i),
                    backend: SharedMemBackend::new(),
                    live: None,
                    seq: 0,
                    restarts: 0,
                })
                .collect(),
            net: Vec::new(),
            blocked: BTreeSet::new(),
            loss_pct: 0,
            elections: Elections::default(),
            log_matching: LogMatching::default(),
            acked: BTreeMap::new(),
            trace: Trace::new(80),
            heavy_crashes: plant != Plant::None,
            plant,
            faults: 0,
        };
        for i in 0..NODES as usize {
            sim.start(i)
                .unwrap_or_else(|e| panic!("seed {seed}: start: {e}"));
        }
        sim
    }

    fn log(&mut self, event: String) {
        self.trace.push(format!("t={} {event}", self.now));
    }

    fn fail(&self, invariant: &str) -> String {
        report(TEST, self.seed, invariant, &self.trace)
    }

    fn start(&mut self, i: usize) -> Result<(), String> {
        let timeout_seed = self.rng.gen();
        let node = &mut self.nodes[i];
        let voters: Vec<u64> = (1..=NODES).collect();
        let mut store =
            RaftStore::open_mem(node.backend.clone(), &voters).map_err(|e| e.to_string())?;
        if self.plant == Plant::ForgetVote && node.restarts > 0 {
            let mut hs = store.hard_state().clone();
            hs.vote = 0;
            store
                .persist(None, &[], Some(&hs))
                .map_err(|e| e.to_string())?;
        }
        let raft = RaftNode::new(
            &CoreConfig {
                id: node.id,
                election_ticks: ELECTION_TICKS,
                heartbeat_ticks: HEARTBEAT_TICKS,
                timeout_seed: Some(timeout_seed),
                snapshot_validator: codec::validate_state,
            },
            store,
        )
        .map_err(|e| e.to_string())?;
        let sm = StateMachine::restore(raft.snapshot_data().as_ref().map(|s| s.data.as_slice()))
            .map_err(|e| e.to_string())?;
        node.live = Some(Live { raft, sm });
        Ok(())
    }

    fn crash(&mut self, i: usize) {
        if self.nodes[i].live.take().is_some() {
            self.nodes[i].restarts += 1;
            self.faults += 1;
            let id = self.nodes[i].id;
            self.log(format!("crash {id}"));
        }
    }

    fn propose(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let Some(live) = node.live.as_mut() else {
            return;
        };
        node.seq += 1;
        let id = ProposalId {
            node: node.id,
            seq: node.seq,
        };
        let data = codec::encode_entry(&Proposal {
            id,
            at: UnixMillis(self.now as i64),
            command: Command::SetMaintenance {
                enabled: node.seq % 2 == 1,
                reason: format!("{}-{}", node.id, node.seq),
                by: "sim".into(),
            },
        });
        let ok = live.raft.propose(data).is_ok();
        let nid = node.id;
        self.log(format!("propose on {nid} seq {} accepted={ok}", id.seq));
    }

    fn inject_faults(&mut self) {
        let mut r = self.rng.gen_range(0..1000);
        // With a planted bug, crash and restart far more often to give it a chance to bite.
        if self.heavy_crashes && (100..300).contains(&r) {
            r = if r < 200 { 17 } else { 21 };
        }
        let n = NODES;
        match r {
            0..=4 => {
                let a = self.rng.gen_range(1..=n);
                for b in 1..=n {
                    if a != b {
                        self.blocked.insert((a, b));
                        self.blocked.insert((b, a));
                    }
                }
                self.faults += 1;
                self.log(format!("isolate n{a}"));
            }
            5..=8 => {
                let a = self.rng.gen_range(1..=n);
                let b = (a % n) + 1;
                self.blocked.insert((a, b));
                self.faults += 1;
                self.log(format!("cut one-way n{a}->n{b}"));
            }
            9..=16 => {
                self.blocked.clear();
                self.log("heal links".into());
            }
            17..=19 => {
                let i = self.rng.gen_range(0..n as usize);
                self.crash(i);
            }
            20 => {
                for i in 0..n as usize {
                    self.crash(i);
                }
                self.log("crash all".into());
            }
            21..=35 => {
                let down: Vec<usize> = (0..n as usize)
                    .filter(|&i| self.nodes[i].live.is_none())
                    .collect();
                if let Some(&i) = down.choose(&mut self.rng) {
                    self.restart(i);
                }
            }
            36..=39 => {
                self.loss_pct = [0, 5, 20, 50][self.rng.gen_range(0..4)];
                self.faults += 1;
                let l = self.loss_pct;
                self.log(format!("loss {l}%"));
            }
            _ => {}
        }
    }

    fn restart(&mut self, i: usize) {
        let id = self.nodes[i].id;
        if let Err(e) = self.start(i) {
            panic!("{}", self.fail(&format!("restart of {id} failed: {e}")));
        }
        self.log(format!("restart {id}"));
    }

    fn step(&mut self, faulty: bool) -> Result<(), String> {
        self.now += 1;
        if faulty {
            self.inject_faults();
        }
        let quiet = !faulty && self.now % (FAULT_STEPS + HEAL_STEPS) > FAULT_STEPS + HEAL_STEPS / 2;
        if !quiet && self.rng.gen_range(0..100) < 8 {
            let i = self.rng.gen_range(0..NODES as usize);
            self.propose(i);
        }
        for i in 0..NODES as usize {
            // Clock skew: a node occasionally misses a tick.
            let skip = faulty && self.rng.gen_range(0..100) < 5;
            if let (Some(live), false) = (self.nodes[i].live.as_mut(), skip) {
                live.raft.tick();
            }
        }
        // Deliver due messages in random order (reordering), dropping lost ones.
        let mut due = Vec::new();
        let mut later = Vec::new();
        for m in self.net.drain(..) {
            if m.at <= self.now {
                due.push(m);
            } else {
                later.push(m);
            }
        }
        self.net = later;
        due.shuffle(&mut self.rng);
        for m in due {
            if self.blocked.contains(&(m.from.get(), m.to.get()))
                || self.rng.gen_range(0..100) < self.loss_pct
            {
                continue;
            }
            let to = (m.to.get() - 1) as usize;
            if let Some(live) = self.nodes[to].live.as_mut() {
                // Errors for messages from a peer's previous life are expected; not a failure.
                let _ = live.raft.step(m.from, &m.bytes);
            }
        }
        for i in 0..NODES as usize {
            self.drain_ready(i)?;
        }
        self.check_leaders()
    }

    fn drain_ready(&mut self, i: usize) -> Result<(), String> {
        loop {
            let id = self.nodes[i].id;
            let Some(live) = self.nodes[i].live.as_mut() else {
                return Ok(());
            };
            let out = live
                .raft
                .process_ready()
                .map_err(|e| self.fail(&format!("{id}: process_ready: {e}")))?;
            if out.is_empty() {
                return Ok(());
            }
            let live = self.nodes[i].live.as_mut().ok_or("vanished")?;
            if let Some(snap) = &out.snapshot {
                live.sm
                    .install(&snap.data)
                    .map_err(|e| format!("{id}: bad snapshot: {e}"))?;
            }
            let mut applied = Vec::new();
            for e in &out.committed {
                let a = live.sm.apply(e);
                applied.push((e.index.0, e.term.0, hash(&e.data), a.proposal));
            }
            let applied_idx = live.sm.state.applied;
            if applied_idx.0 >= live.raft.snapshot_index().0 + SNAPSHOT_EVERY {
                let data = codec::encode_state(&live.sm.state);
                live.raft
                    .compact(applied_idx, data)
                    .map_err(|e| format!("{id}: compact: {e}"))?;
            }
            for (index, term, h, proposal) in applied {
                if let Err(violation) = self.log_matching.check(id, index, term, h) {
                    return Err(self.fail(&violation));
                }
                if let Some(p) = proposal {
                    if p.node == id {
                        self.acked.insert(p, index);
                    }
                }
            }
            for m in out.messages {
                let delay = self.rng.gen_range(1..=4);
                self.net.push(InFlight {
                    at: self.now + delay,
                    from: id,
                    to: m.to,
                    bytes: m.bytes,
                });
            }
        }
    }

    fn check_leaders(&mut self) -> Result<(), String> {
        let claims: Vec<(u64, NodeId)> = self
            .nodes
            .iter()
            .filter_map(|node| {
                let st = node.live.as_ref()?.raft.status();
                (st.role == Role::Leader).then_some((st.term.0, node.id))
            })
            .collect();
        match self.elections.record(&claims) {
            Ok(new) => {
                for (term, id) in new {
                    self.log(format!("{id} leader of term {term}"));
                }
                Ok(())
            }
            Err(violation) => Err(self.fail(&violation)),
        }
    }

    fn run(mut self) -> Result<Stats, String> {
        for _ in 0..FAULT_STEPS {
            self.step(true)?;
        }
        self.blocked.clear();
        self.loss_pct = 0;
        for i in 0..NODES as usize {
            if self.nodes[i].live.is_none() {
                self.restart(i);
            }
        }
        self.log("faults stop".into());
        let healed_at = self.now;
        let mut leader_at = None;
        for _ in 0..HEAL_STEPS {
            self.step(false)?;
            if leader_at.is_none() && self.agreed_leader().is_some() {
                leader_at = Some(self.now - healed_at);
            }
        }
        let limit = 3 * 2 * ELECTION_TICKS as u64;
        match leader_at {
            Some(t) if t <= limit => {}
            Some(t) => {
                return Err(self.fail(&format!("liveness: leader after {t} ticks > {limit}")))
            }
            None => return Err(self.fail("liveness: no agreed leader after faults stopped")),
        }
        // Everything acknowledged must be applied everywhere, and states must be equal.
        let max_acked = self.acked.values().copied().max().unwrap_or(0);
        let states: Vec<_> = self
            .nodes
            .iter()
            .filter_map(|n| n.live.as_ref().map(|l| (n.id, l.sm.state.clone())))
            .collect();
        for (id, st) in &states {
            if st.applied.0 < max_acked {
                return Err(self.fail(&format!(
                    "durability: {id} applied {} < acknowledged index {max_acked}",
                    st.applied
                )));
            }
            if st != &states[0].1 {
                return Err(self.fail(&format!(
                    "convergence: {id} state differs from {}",
                    states[0].0
                )));
            }
        }
        Ok(Stats {
            faults: self.faults,
            acked: self.acked.len() as u64,
            terms: self.elections.terms(),
        })
    }

    fn agreed_leader(&self) -> Option<NodeId> {
        let mut seen = BTreeSet::new();
        for n in &self.nodes {
            let st = n.live.as_ref()?.raft.status();
            seen.insert((st.leader?, st.term));
        }
        (seen.len() == 1)
            .then(|| seen.into_iter().next().map(|(l, _)| l))
            .flatten()
    }
}

/// Runs one seed; a panic anywhere (raft-rs asserts too) becomes a report with the seed.
fn run_seed(seed: u64, plant: Plant, heavy_crashes: bool) -> Result<Stats, String> {
    let trace = Trace::new(80);
    let t = trace.clone();
    catch_panics(TEST, seed, &trace, move || {
        let mut sim = Sim::new(seed, plant);
        sim.trace = t;
        sim.heavy_crashes = heavy_crashes;
        sim.run()
    })
}

struct Stats {
    faults: u64,
    acked: u64,
    terms: u64,
}

#[test]
fn raft_is_safe_under_faults() {
    // The run's own wall time, printed as a figure; never an input of the simulation.
    #[allow(clippy::disallowed_types, clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    let seeds = seeds(200);
    let (mut faults, mut acked, mut terms) = (0, 0, 0);
    for &seed in &seeds {
        match run_seed(seed, Plant::None, false) {
            Ok(s) => {
                faults += s.faults;
                acked += s.acked;
                terms += s.terms;
            }
            Err(report) => panic!("{report}"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "raft simulation: {} seeds x {} steps in {secs:.1}s ({:.1} seeds/s); {:.1} faults, {:.1} \
         acknowledged proposals, {:.1} terms per seed",
        seeds.len(),
        FAULT_STEPS + HEAL_STEPS,
        seeds.len() as f64 / secs,
        faults as f64 / seeds.len() as f64,
        acked as f64 / seeds.len() as f64,
        terms as f64 / seeds.len() as f64,
    );
}

#[test]
fn same_seed_same_run() {
    let trace = |seed| {
        let mut sim = Sim::new(seed, Plant::None);
        for _ in 0..600 {
            sim.step(true).expect("step");
        }
        (
            sim.trace.lines(),
            sim.log_matching.clone(),
            sim.elections.clone(),
        )
    };
    assert_eq!(trace(7), trace(7), "a seed must replay exactly");
}

/// A node that forgets its vote across a restart can vote twice in one term; the checker must
/// notice within a bounded number of seeds, or its invariants are not worth much.
#[test]
fn checker_catches_planted_forgotten_vote() {
    let caught = (1..=200u64).find_map(|seed| {
        run_seed(seed, Plant::ForgetVote, true)
            .err()
            .map(|r| (seed, r))
    });
    let (seed, report) = caught.expect("a forgotten vote went unnoticed over 200 seeds");
    // The same seed and fault mix without the planted bug must pass: the bug, not the
    // heavier crash rate, is what the checker caught.
    if let Err(r) = run_seed(seed, Plant::None, true) {
        panic!("seed {seed} fails without the planted bug too:\n{r}");
    }
    // A node voting twice in a term lets two nodes win it: the checker must name exactly
    // that, not some unrelated failure (every report names its seed).
    assert!(
        report.contains(&format!("seed {seed} "))
            && report.contains("invariant: election safety: ")
            && report.contains("both leader in term "),
        "the planted forgotten vote must trip election safety, got:\n{report}"
    );
    eprintln!(
        "planted bug caught as expected:\n{}",
        report.lines().next().unwrap_or("")
    );
}

/// Every claim of a step is checked, including those after a newly recorded leader.
#[test]
fn election_safety_checks_every_claim_of_a_step() {
    let n = NodeId;
    // (already recorded, this step's claims, expected violation or newly recorded terms)
    type Case = (
        Vec<(u64, NodeId)>,
        Vec<(u64, NodeId)>,
        Result<Vec<u64>, &'static str>,
    );
    let table: Vec<Case> = vec![
        (vec![], vec![], Ok(vec![])),
        (vec![], vec![(1, n(1))], Ok(vec![1])),
        (vec![(1, n(1))], vec![(1, n(1))], Ok(vec![])),
        (
            vec![(1, n(1))],
            vec![(1, n(2))],
            Err("n2 and n1 both leader in term 1"),
        ),
        // Two nodes claim the same new term in one step.
        (
            vec![],
            vec![(5, n(1)), (5, n(2))],
            Err("n2 and n1 both leader in term 5"),
        ),
        // A new leader is recorded first, then a node claims an old term twice.
        (
            vec![(3, n(3))],
            vec![(4, n(1)), (3, n(2))],
            Err("n2 and n3 both leader in term 3"),
        ),
        // Two new terms in one step are both recorded.
        (vec![], vec![(6, n(1)), (7, n(2))], Ok(vec![6, 7])),
    ];
    for (before, claims, want) in table {
        let mut elections = Elections::with(before.iter().copied());
        let got = elections.record(&claims);
        match (&got, &want) {
            (Ok(new), Ok(terms)) => {
                let got_terms: Vec<u64> = new.iter().map(|(t, _)| *t).collect();
                assert_eq!(&got_terms, terms, "{before:?} then {claims:?}");
                for &(t, node) in &claims {
                    assert_eq!(
                        elections.leader(t),
                        Some(node),
                        "{before:?} then {claims:?}"
                    );
                }
            }
            (Err(e), Err(words)) => assert!(
                e.starts_with("election safety: ") && e.contains(words),
                "{before:?} then {claims:?}: {e}"
            ),
            _ => panic!("{before:?} then {claims:?}: got {got:?}, want {want:?}"),
        }
    }
}
