//! What the two seeded simulations share (`raft_sim`: three Raft cores; `cluster_sim`: three
//! whole agents): the trace of the last events, the failure report that names the seed and
//! how to replay it, the panic catcher, the seed list from the environment, and the two Raft
//! safety checkers.
//!
//! - [`Elections`]: election safety, at most one leader per term, checked over every claim
//!   of a step (two nodes claiming the same new term in one step are caught too).
//! - [`LogMatching`]: every node applies the same entry (term and content) at the same index.
//!
//! Pure and deterministic: nothing here reads a clock or draws randomness.

#![allow(dead_code)]

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use triad::ids::NodeId;

/// A stable hash of an entry's bytes (within one process run).
pub fn hash(data: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    data.hash(&mut h);
    h.finish()
}

/// The last events of a run, shared with the caller so that a panic still prints them.
#[derive(Clone)]
pub struct Trace {
    lines: Arc<Mutex<VecDeque<String>>>,
    keep: usize,
}

impl Trace {
    /// A trace that keeps the last `keep` lines.
    pub fn new(keep: usize) -> Self {
        Trace {
            lines: Arc::new(Mutex::new(VecDeque::new())),
            keep,
        }
    }

    /// Appends one line, dropping the oldest beyond `keep`.
    pub fn push(&self, line: String) {
        if let Ok(mut t) = self.lines.lock() {
            while t.len() >= self.keep {
                t.pop_front();
            }
            t.push_back(line);
        }
    }

    /// The lines kept, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// The failure report: the seed, how to replay it (`test` is the test target), the invariant,
/// and the last events.
pub fn report(test: &str, seed: u64, invariant: &str, trace: &Trace) -> String {
    format!(
        "simulation failed: seed {seed} (replay: TRIAD_SIM_SEED={seed} cargo test -p triad \
         --test {test}), invariant: {invariant}\nlast events:\n  {}",
        trace.lines().join("\n  ")
    )
}

/// Runs one seed; a panic anywhere (raft-rs asserts too) becomes a report with the seed.
pub fn catch_panics<T>(
    test: &str,
    seed: u64,
    trace: &Trace,
    run: impl FnOnce() -> Result<T, String>,
) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(report(test, seed, &format!("panic: {msg}"), trace))
        }
    }
}

/// A number from the environment, when set and valid.
pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The seeds to run: `TRIAD_SIM_SEED=S` replays one, `TRIAD_SIM_SEEDS=N` runs 1..=N, else
/// 1..=`default`.
pub fn seeds(default: u64) -> Vec<u64> {
    match env_u64("TRIAD_SIM_SEED") {
        Some(s) => vec![s],
        None => (1..=env_u64("TRIAD_SIM_SEEDS").unwrap_or(default)).collect(),
    }
}

/// Election safety: the leader of every term seen so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Elections {
    leaders: BTreeMap<u64, NodeId>,
}

impl Elections {
    /// Starts from terms already known (tests).
    pub fn with(leaders: impl IntoIterator<Item = (u64, NodeId)>) -> Self {
        Elections {
            leaders: leaders.into_iter().collect(),
        }
    }

    /// Checks one step's leadership claims (`(term, node)` pairs): records each term's first
    /// leader and answers the newly recorded ones, or the violation when a term has two
    /// leaders (recorded before, or both claiming in this step).
    pub fn record(&mut self, claims: &[(u64, NodeId)]) -> Result<Vec<(u64, NodeId)>, String> {
        let mut new = Vec::new();
        for &(term, node) in claims {
            match self.leaders.get(&term) {
                Some(&other) if other != node => {
                    return Err(format!(
                        "election safety: {node} and {other} both leader in term {term}"
                    ));
                }
                Some(_) => {}
                None => {
                    self.leaders.insert(term, node);
                    new.push((term, node));
                }
            }
        }
        Ok(new)
    }

    /// The leader recorded for `term`.
    pub fn leader(&self, term: u64) -> Option<NodeId> {
        self.leaders.get(&term).copied()
    }

    /// How many terms had a leader.
    pub fn terms(&self) -> u64 {
        self.leaders.len() as u64
    }
}

/// Log matching: the term and content hash applied at every index so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogMatching {
    applied: BTreeMap<u64, (u64, u64)>,
}

impl LogMatching {
    /// Checks that `node` applying an entry of `term` whose content hashes to `h` ([`hash`])
    /// at `index` matches what every other node applied there.
    pub fn check(&mut self, node: NodeId, index: u64, term: u64, h: u64) -> Result<(), String> {
        match self.applied.get(&index) {
            Some(&(t, hh)) if (t, hh) != (term, h) => Err(format!(
                "log matching: {node} applied index {index} term {term}, another node applied \
                 term {t} there"
            )),
            Some(_) => Ok(()),
            None => {
                self.applied.insert(index, (term, h));
                Ok(())
            }
        }
    }

    /// The highest index any node applied.
    pub fn last_index(&self) -> u64 {
        self.applied.keys().next_back().copied().unwrap_or(0)
    }
}
