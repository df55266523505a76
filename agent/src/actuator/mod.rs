//! Actuators: the adapters that change this node's local services so that they match what the
//! cluster committed (which HAProxy server is `ready`, later which Redis is master, which Galera
//! node bootstraps). Probes observe; actuators act; neither decides.
//!
//! Design:
//! - Reconciliation, not commands: the reconciler compares a committed desired state with what
//!   the service reports and a *pure planner* returns the actions that close the gap (for
//!   HAProxy: [`haproxy::plan`]). An already converged service gets no action, so running the
//!   loop again (after a crash, a timeout, a lost answer) is always safe.
//! - Every action carries the [`DecisionEpoch`] (term and index of the committed log entry) of
//!   the decision it implements, and an [`EpochFence`] refuses any action older than the newest
//!   one already executed: a slow reconciliation cycle working from a stale snapshot can never
//!   undo a newer decision.
//! - Each technology sits behind a trait with a real implementation and a `Sim*` one, and both
//!   pass one contract suite (`agent/tests/haproxy_contract.rs`,
//!   `agent/tests/service_contract.rs` for [`service::ServiceControl`]).
//! - Errors say what to do and classify the cause: the service is down (socket missing or
//!   connection refused), did not answer in time, or refused the command (with its own text).
//!
//! Caveats:
//! - An action is idempotent, a *sequence* of actions is not atomic: a crash between two of them
//!   leaves a half-applied plan, which the next cycle completes (the planner orders actions so
//!   that every intermediate state is safe: servers leave service before others enter it).
//! - The fence lives in memory: after an agent restart the first action is admitted whatever its
//!   epoch. The reconciler must plan from the committed state it has loaded, which is at least as
//!   new as anything executed before the restart.
//! - Actuators never read the clock to decide anything; timeouts bound I/O only.

pub mod galera_sql;
pub mod haproxy;
pub mod redis;
pub mod service;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{LogIndex, Term};

/// The position of the committed decision an action implements: its log entry's term and index.
/// Ordered by term, then index (the log order), so a newer decision compares greater.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct DecisionEpoch {
    /// Term of the decision's log entry.
    pub term: Term,
    /// Index of the decision's log entry.
    pub index: LogIndex,
}

impl DecisionEpoch {
    /// The epoch of a committed change's entry (its term and index), or the default before
    /// the first change.
    pub fn of_change(entry: Option<(Term, LogIndex)>) -> Self {
        entry.map_or_else(DecisionEpoch::default, |(term, index)| DecisionEpoch {
            term,
            index,
        })
    }

    /// The epoch of the entry at `term`/`index`.
    pub fn new(term: u64, index: u64) -> Self {
        DecisionEpoch {
            term: Term(term),
            index: LogIndex(index),
        }
    }
}

impl fmt::Display for DecisionEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.term, self.index)
    }
}

/// An action was older than one already executed and was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "action for decision {action} refused: decision {applied} was already executed; \
     re-plan from the latest committed state"
)]
pub struct StaleEpoch {
    /// The refused action's epoch.
    pub action: DecisionEpoch,
    /// The newest epoch already executed.
    pub applied: DecisionEpoch,
}

/// Refuses actions older than the newest one already admitted. Pure; one per actuated service.
///
/// Equal epochs are admitted: a plan carries one epoch for all its actions, and retrying the same
/// decision is what idempotent reconciliation does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EpochFence {
    newest: Option<DecisionEpoch>,
}

impl EpochFence {
    /// A fence that has admitted nothing yet.
    pub fn new() -> Self {
        EpochFence::default()
    }

    /// The newest epoch admitted so far.
    pub fn newest(&self) -> Option<DecisionEpoch> {
        self.newest
    }

    /// Admits `epoch` if it is not older than anything admitted before, and remembers it.
    pub fn admit(&mut self, epoch: DecisionEpoch) -> Result<(), StaleEpoch> {
        match self.newest {
            Some(applied) if epoch < applied => Err(StaleEpoch {
                action: epoch,
                applied,
            }),
            _ => {
                self.newest = Some(epoch);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (epochs offered in order, expected admitted flags)
    #[test]
    fn fence_refuses_only_older_epochs() {
        let e = DecisionEpoch::new;
        let cases: [(&[DecisionEpoch], &[bool]); 5] = [
            (&[e(1, 5)], &[true]),
            (&[e(1, 5), e(1, 5)], &[true, true]),
            (&[e(1, 5), e(1, 4)], &[true, false]),
            (&[e(1, 5), e(2, 3)], &[true, true]),
            (
                &[e(2, 3), e(1, 9), e(2, 4), e(2, 3)],
                &[true, false, true, false],
            ),
        ];
        for (offered, want) in cases {
            let mut fence = EpochFence::new();
            let got: Vec<bool> = offered.iter().map(|x| fence.admit(*x).is_ok()).collect();
            assert_eq!(got, want, "{offered:?}");
        }
    }

    #[test]
    fn stale_error_names_both_epochs() {
        let mut fence = EpochFence::new();
        assert!(fence.admit(DecisionEpoch::new(3, 40)).is_ok());
        let err = fence.admit(DecisionEpoch::new(3, 12)).err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("3/12") && text.contains("3/40"), "{text}");
        assert_eq!(fence.newest(), Some(DecisionEpoch::new(3, 40)));
    }
}
