//! The replicated cluster state machine: [`ClusterState`] and the [`Command`]s that change it.
//!
//! This module is pure: no I/O, no clock, no randomness. Every node applies the same committed
//! commands in the same order and so holds the same state; the time of an entry (the
//! proposer's wall clock) comes in as a value in [`EntryMeta`] and is only recorded, never used
//! to decide anything.
//!
//! What is replicated here is *authority*, not samples: who the members are, whether the
//! cluster is in maintenance, and the audit history of every decision. Health observations
//! are sent to the leader as messages and never enter the log. Later waves add the Redis
//! master and its epoch, the Galera bootstrap choice, HAProxy routing and backup leases.
//!
//! Invariant: `apply` is deterministic and never panics; an entry whose index is not above the
//! last applied one is ignored (replays after a restart are harmless).
//!
//! Caveats: the audit history is bounded ([`HISTORY_LIMIT`] entries, newest first); older
//! entries are dropped from the state (they remain in logs and metrics).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::ids::{LogIndex, NodeId, Term, UnixMillis};

/// How many audit entries the replicated history keeps.
pub const HISTORY_LIMIT: usize = 200;

/// Where and when a committed entry sits in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    /// Term of the entry.
    pub term: Term,
    /// Index of the entry.
    pub index: LogIndex,
    /// The proposer's wall clock at proposal time (for display only).
    pub at: UnixMillis,
}

/// One member as recorded in the replicated membership view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Raft peer address.
    pub raft_addr: String,
    /// Operator API address.
    pub api_addr: String,
}

/// The maintenance flag. While enabled, no automatic action is taken (fencing still applies).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintenance {
    /// Whether maintenance mode is on.
    pub enabled: bool,
    /// Why it was last switched (operator text).
    pub reason: String,
    /// Who switched it last (for example `api@n2`).
    pub by: String,
    /// When it was last switched.
    pub since: Option<UnixMillis>,
    /// Log index of the command that last switched it.
    pub index: Option<LogIndex>,
}

/// One line of the replicated audit history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Term of the entry that caused it.
    pub term: Term,
    /// Log index of the entry that caused it.
    pub index: LogIndex,
    /// The proposer's wall clock.
    pub at: UnixMillis,
    /// Short machine-readable kind (`maintenance`, `members`, `invalid`).
    pub kind: String,
    /// Human-readable details.
    pub details: String,
}

/// A command of the state machine, as committed in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Turn maintenance mode on or off.
    SetMaintenance {
        /// On or off.
        enabled: bool,
        /// Operator's reason.
        reason: String,
        /// Who asked.
        by: String,
    },
    /// Record the membership view the leader was configured with.
    RegisterMembers {
        /// Members by id.
        members: BTreeMap<NodeId, MemberInfo>,
    },
}

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The state changed.
    Changed,
    /// The command was valid but the state already was as asked.
    Unchanged,
    /// The entry's index was not above the last applied index; ignored.
    Stale,
}

/// The replicated cluster state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Membership view by node id.
    pub members: BTreeMap<NodeId, MemberInfo>,
    /// Maintenance flag.
    pub maintenance: Maintenance,
    /// Audit history, newest first, at most [`HISTORY_LIMIT`] entries.
    pub history: VecDeque<AuditEntry>,
    /// Index of the last entry applied (commands, empty and invalid entries alike).
    pub applied: LogIndex,
}

impl ClusterState {
    /// Applies one committed command. Deterministic; never panics.
    pub fn apply(&mut self, meta: EntryMeta, command: &Command) -> Outcome {
        if meta.index <= self.applied {
            return Outcome::Stale;
        }
        self.applied = meta.index;
        match command {
            Command::SetMaintenance {
                enabled,
                reason,
                by,
            } => {
                let changed = self.maintenance.enabled != *enabled;
                self.maintenance = Maintenance {
                    enabled: *enabled,
                    reason: reason.clone(),
                    by: by.clone(),
                    since: if changed {
                        Some(meta.at)
                    } else {
                        self.maintenance.since.or(Some(meta.at))
                    },
                    index: Some(meta.index),
                };
                let state = if *enabled { "on" } else { "off" };
                let note = if changed { "" } else { " (already)" };
                self.record(
                    meta,
                    "maintenance",
                    format!("maintenance {state}{note} by {by}: {reason}"),
                );
                if changed {
                    Outcome::Changed
                } else {
                    Outcome::Unchanged
                }
            }
            Command::RegisterMembers { members } => {
                if &self.members == members {
                    return Outcome::Unchanged;
                }
                self.members = members.clone();
                let list = members
                    .iter()
                    .map(|(id, m)| format!("{id}@{}", m.raft_addr))
                    .collect::<Vec<_>>()
                    .join(", ");
                self.record(meta, "members", format!("membership view: {list}"));
                Outcome::Changed
            }
        }
    }

    /// Notes an entry that carries no command (a new leader's empty entry) so the applied
    /// index keeps up.
    pub fn apply_empty(&mut self, meta: EntryMeta) -> Outcome {
        if meta.index <= self.applied {
            return Outcome::Stale;
        }
        self.applied = meta.index;
        Outcome::Unchanged
    }

    /// Notes a committed entry that could not be decoded (for example written by a newer
    /// version). Every node decodes the same bytes the same way, so every node records the
    /// same audit line and the states stay equal.
    pub fn apply_invalid(&mut self, meta: EntryMeta, error: &str) -> Outcome {
        if meta.index <= self.applied {
            return Outcome::Stale;
        }
        self.applied = meta.index;
        self.record(meta, "invalid", format!("entry ignored: {error}"));
        Outcome::Unchanged
    }

    fn record(&mut self, meta: EntryMeta, kind: &str, details: String) {
        self.history.push_front(AuditEntry {
            term: meta.term,
            index: meta.index,
            at: meta.at,
            kind: kind.to_string(),
            details,
        });
        self.history.truncate(HISTORY_LIMIT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(index: u64) -> EntryMeta {
        EntryMeta {
            term: Term(2),
            index: LogIndex(index),
            at: UnixMillis(1_000 + index as i64),
        }
    }

    fn maint(enabled: bool, reason: &str) -> Command {
        Command::SetMaintenance {
            enabled,
            reason: reason.into(),
            by: "api@n1".into(),
        }
    }

    #[test]
    fn maintenance_on_off_and_repeat() {
        let mut s = ClusterState::default();
        assert_eq!(s.apply(meta(1), &maint(true, "upgrade")), Outcome::Changed);
        assert!(s.maintenance.enabled);
        assert_eq!(s.maintenance.since, Some(UnixMillis(1001)));
        assert_eq!(s.apply(meta(2), &maint(true, "still")), Outcome::Unchanged);
        assert_eq!(s.maintenance.since, Some(UnixMillis(1001)), "since kept");
        assert_eq!(s.maintenance.reason, "still");
        assert_eq!(s.apply(meta(3), &maint(false, "done")), Outcome::Changed);
        assert!(!s.maintenance.enabled);
        assert_eq!(s.maintenance.index, Some(LogIndex(3)));
        let details: Vec<_> = s.history.iter().map(|h| h.details.as_str()).collect();
        assert_eq!(
            details,
            [
                "maintenance off by api@n1: done",
                "maintenance on (already) by api@n1: still",
                "maintenance on by api@n1: upgrade"
            ]
        );
    }

    #[test]
    fn stale_entries_are_ignored() {
        let mut s = ClusterState::default();
        s.apply(meta(5), &maint(true, "a"));
        let before = s.clone();
        assert_eq!(s.apply(meta(5), &maint(false, "replay")), Outcome::Stale);
        assert_eq!(s.apply(meta(4), &maint(false, "old")), Outcome::Stale);
        assert_eq!(s.apply_empty(meta(3)), Outcome::Stale);
        assert_eq!(s.apply_invalid(meta(2), "x"), Outcome::Stale);
        assert_eq!(s, before);
    }

    #[test]
    fn register_members_records_once() {
        let mut s = ClusterState::default();
        let members: BTreeMap<_, _> = (1..=3)
            .map(|i| {
                (
                    NodeId(i),
                    MemberInfo {
                        raft_addr: format!("127.0.0.1:720{i}"),
                        api_addr: format!("127.0.0.1:710{i}"),
                    },
                )
            })
            .collect();
        let cmd = Command::RegisterMembers { members };
        assert_eq!(s.apply(meta(1), &cmd), Outcome::Changed);
        assert_eq!(s.apply(meta(2), &cmd), Outcome::Unchanged);
        assert_eq!(s.members.len(), 3);
        assert_eq!(s.history.len(), 1);
        assert_eq!(
            s.history[0].details,
            "membership view: n1@127.0.0.1:7201, n2@127.0.0.1:7202, n3@127.0.0.1:7203"
        );
        assert_eq!(s.applied, LogIndex(2));
    }

    #[test]
    fn empty_and_invalid_entries_advance_applied() {
        let mut s = ClusterState::default();
        assert_eq!(s.apply_empty(meta(1)), Outcome::Unchanged);
        assert_eq!(s.apply_invalid(meta(2), "bad bytes"), Outcome::Unchanged);
        assert_eq!(s.applied, LogIndex(2));
        assert_eq!(s.history[0].kind, "invalid");
        assert!(s.history[0].details.contains("bad bytes"));
    }

    #[test]
    fn history_is_bounded_newest_first() {
        let mut s = ClusterState::default();
        for i in 1..=(HISTORY_LIMIT as u64 + 50) {
            s.apply(meta(i), &maint(i % 2 == 1, &format!("r{i}")));
        }
        assert_eq!(s.history.len(), HISTORY_LIMIT);
        assert_eq!(s.history[0].index, LogIndex(HISTORY_LIMIT as u64 + 50));
        assert_eq!(s.history[HISTORY_LIMIT - 1].index, LogIndex(51));
    }
}
