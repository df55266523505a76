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

use crate::ids::{Epoch, LogIndex, NodeId, Term, UnixMillis};

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

/// Why the Redis master changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// The first master recorded (from what the servers reported).
    Initial,
    /// An automatic failover.
    Automatic,
    /// A planned switchover asked by an operator.
    Switchover,
}

impl ChangeKind {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Initial => "initial",
            ChangeKind::Automatic => "automatic",
            ChangeKind::Switchover => "switchover",
        }
    }

    /// Parses [`ChangeKind::as_str`] names.
    pub fn parse(s: &str) -> Option<ChangeKind> {
        [
            ChangeKind::Initial,
            ChangeKind::Automatic,
            ChangeKind::Switchover,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// The last committed change of Redis master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterChange {
    /// Why.
    pub kind: ChangeKind,
    /// The previous master.
    pub from: Option<NodeId>,
    /// The new master.
    pub to: NodeId,
    /// Epoch of the change.
    pub epoch: Epoch,
    /// Log index of the change.
    pub index: LogIndex,
    /// Raft term of the change's entry (with `index`, the decision epoch actions carry).
    #[serde(default)]
    pub term: Term,
    /// Proposer's wall clock.
    pub at: UnixMillis,
    /// The decision's verdict.
    pub reason: String,
}

/// A master whose agent went silent (the silent failover path).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspect {
    /// The suspected master.
    pub node: NodeId,
    /// The epoch it is master in.
    pub epoch: Epoch,
    /// Log index of the suspicion: once applied, peers stop renewing the node's lease.
    pub index: LogIndex,
    /// The decision's verdict.
    pub reason: String,
}

/// Who is the Redis master, at which epoch: the authority every agent reconciles to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisAuthority {
    /// The master, once one was recorded.
    pub master: Option<NodeId>,
    /// Grows by one with every change of master.
    pub epoch: Epoch,
    /// Set while the master is suspected on the silent path.
    pub suspect: Option<Suspect>,
    /// The last change of master.
    pub last_change: Option<MasterChange>,
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
    /// Make `node` the Redis master at `epoch` (exactly the current epoch plus one).
    SetRedisMaster {
        /// The new master.
        node: NodeId,
        /// The new epoch.
        epoch: Epoch,
        /// Why.
        kind: ChangeKind,
        /// The decision's verdict.
        reason: String,
        /// Automatic only: the log index of the suspicion the decision relied on. The change
        /// applies only while that suspicion is still in force (not cleared or replaced).
        suspect: Option<LogIndex>,
    },
    /// Suspect the master `node` at `epoch` (silent path): peers stop renewing its lease.
    SuspectRedisMaster {
        /// The master.
        node: NodeId,
        /// Its epoch (the current one).
        epoch: Epoch,
        /// The decision's verdict.
        reason: String,
    },
    /// Withdraw the suspicion of `node` at `epoch`.
    ClearRedisSuspect {
        /// The suspected master.
        node: NodeId,
        /// Its epoch.
        epoch: Epoch,
        /// The decision's verdict.
        reason: String,
    },
}

/// The replicated authority a command changes. Each authority has its own proposals in flight
/// (a slow Redis commit never holds back a membership change) and its own epoch fence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Authority {
    /// The membership view.
    Members,
    /// The maintenance flag.
    Maintenance,
    /// The Redis master and its epoch.
    Redis,
}

impl Authority {
    /// Stable name (metric labels, status keys).
    pub fn as_str(self) -> &'static str {
        match self {
            Authority::Members => "members",
            Authority::Maintenance => "maintenance",
            Authority::Redis => "redis",
        }
    }
}

impl std::fmt::Display for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Command {
    /// The authority this command changes.
    pub fn authority(&self) -> Authority {
        match self {
            Command::SetMaintenance { .. } => Authority::Maintenance,
            Command::RegisterMembers { .. } => Authority::Members,
            Command::SetRedisMaster { .. }
            | Command::SuspectRedisMaster { .. }
            | Command::ClearRedisSuspect { .. } => Authority::Redis,
        }
    }

    /// Whether this is an automatic failover step, which `[failover] automatic = false` holds
    /// back (a suspicion or an automatic change of master). Withdrawing a suspicion, operator
    /// commands and membership are never held back.
    pub fn is_automatic_failover(&self) -> bool {
        matches!(
            self,
            Command::SetRedisMaster {
                kind: ChangeKind::Automatic,
                ..
            } | Command::SuspectRedisMaster { .. }
        )
    }
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
    /// The command no longer fits the state (a stale epoch, a changed master); nothing
    /// changed. Every node rejects it alike, and the audit history says why.
    Rejected(String),
}

impl Outcome {
    /// Stable name (`changed`, `unchanged`, `stale`, `rejected`).
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Changed => "changed",
            Outcome::Unchanged => "unchanged",
            Outcome::Stale => "stale",
            Outcome::Rejected(_) => "rejected",
        }
    }
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
    /// Redis master authority.
    #[serde(default)]
    pub redis: RedisAuthority,
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
            Command::SetRedisMaster {
                node,
                epoch,
                kind,
                reason,
                suspect,
            } => self.set_redis_master(meta, *node, *epoch, *kind, reason, *suspect),
            Command::SuspectRedisMaster {
                node,
                epoch,
                reason,
            } => {
                let r = &self.redis;
                let refusal = if r.master != Some(*node) || r.epoch != *epoch {
                    Some(format!(
                        "suspect {node} at epoch {epoch} rejected: master is {} at epoch {}",
                        fmt_node(r.master),
                        r.epoch
                    ))
                } else if r.suspect.is_some() {
                    return Outcome::Unchanged;
                } else {
                    None
                };
                if let Some(why) = refusal {
                    self.record(meta, "redis", why.clone());
                    return Outcome::Rejected(why);
                }
                self.redis.suspect = Some(Suspect {
                    node: *node,
                    epoch: *epoch,
                    index: meta.index,
                    reason: reason.clone(),
                });
                self.record(
                    meta,
                    "redis",
                    format!("suspect master {node} at epoch {epoch}: {reason}"),
                );
                Outcome::Changed
            }
            Command::ClearRedisSuspect {
                node,
                epoch,
                reason,
            } => match &self.redis.suspect {
                Some(s) if s.node == *node && s.epoch == *epoch => {
                    self.redis.suspect = None;
                    self.record(
                        meta,
                        "redis",
                        format!("suspicion of {node} at epoch {epoch} withdrawn: {reason}"),
                    );
                    Outcome::Changed
                }
                _ => Outcome::Unchanged,
            },
        }
    }

    fn set_redis_master(
        &mut self,
        meta: EntryMeta,
        node: NodeId,
        epoch: Epoch,
        kind: ChangeKind,
        reason: &str,
        suspect: Option<LogIndex>,
    ) -> Outcome {
        let r = &self.redis;
        let in_force = r.suspect.as_ref().map(|s| s.index);
        let refusal = if epoch != r.epoch.next() {
            Some(format!(
                "{} master {node} at epoch {epoch} rejected: current epoch is {} (stale decision)",
                kind.as_str(),
                r.epoch
            ))
        } else if !self.members.is_empty() && !self.members.contains_key(&node) {
            Some(format!("master {node} rejected: not a member"))
        } else if kind == ChangeKind::Initial && r.master.is_some() {
            Some(format!(
                "initial master {node} rejected: {} is already master",
                fmt_node(r.master)
            ))
        } else if kind != ChangeKind::Initial && r.master.is_none() {
            Some(format!(
                "{} to {node} rejected: no master recorded yet",
                kind.as_str()
            ))
        } else if kind == ChangeKind::Automatic && (suspect.is_none() || suspect != in_force) {
            Some(format!(
                "automatic master {node} rejected: it relied on the suspicion at index {}, \
                 which is no longer in force (stale decision)",
                suspect.map_or_else(|| "none".to_string(), |i| i.to_string())
            ))
        } else if kind != ChangeKind::Initial && r.master == Some(node) {
            Some(format!(
                "{} to {node} rejected: it is already master",
                kind.as_str()
            ))
        } else {
            None
        };
        if let Some(why) = refusal {
            self.record(meta, "redis", why.clone());
            return Outcome::Rejected(why);
        }
        let from = self.redis.master;
        self.redis = RedisAuthority {
            master: Some(node),
            epoch,
            suspect: None,
            last_change: Some(MasterChange {
                kind,
                from,
                to: node,
                epoch,
                index: meta.index,
                term: meta.term,
                at: meta.at,
                reason: reason.to_string(),
            }),
        };
        self.record(
            meta,
            "redis",
            format!(
                "{} master {} -> {node} at epoch {epoch}: {reason}",
                kind.as_str(),
                fmt_node(from)
            ),
        );
        Outcome::Changed
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

fn fmt_node(n: Option<NodeId>) -> String {
    n.map_or_else(|| "none".to_string(), |n| n.to_string())
}

/// Test fixtures shared by the crate's unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// Members 1..=`n` on loopback (Raft port 720N, API port 710N).
    pub fn members(n: u64) -> BTreeMap<NodeId, MemberInfo> {
        (1..=n)
            .map(|i| {
                (
                    NodeId(i),
                    MemberInfo {
                        raft_addr: format!("127.0.0.1:720{i}"),
                        api_addr: format!("127.0.0.1:710{i}"),
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each command belongs to one authority, and only automatic failover steps are held back
    /// by `[failover] automatic = false`.
    #[test]
    fn commands_know_their_authority_and_whether_they_are_automatic() {
        let redis_master = |kind| Command::SetRedisMaster {
            node: NodeId(2),
            epoch: Epoch(2),
            kind,
            reason: String::new(),
            suspect: None,
        };
        let cases = [
            (
                Command::SetMaintenance {
                    enabled: true,
                    reason: String::new(),
                    by: String::new(),
                },
                Authority::Maintenance,
                false,
            ),
            (
                Command::RegisterMembers {
                    members: BTreeMap::new(),
                },
                Authority::Members,
                false,
            ),
            (redis_master(ChangeKind::Automatic), Authority::Redis, true),
            (
                redis_master(ChangeKind::Switchover),
                Authority::Redis,
                false,
            ),
            (redis_master(ChangeKind::Initial), Authority::Redis, false),
            (
                Command::SuspectRedisMaster {
                    node: NodeId(1),
                    epoch: Epoch(1),
                    reason: String::new(),
                },
                Authority::Redis,
                true,
            ),
            (
                Command::ClearRedisSuspect {
                    node: NodeId(1),
                    epoch: Epoch(1),
                    reason: String::new(),
                },
                Authority::Redis,
                false,
            ),
        ];
        for (command, authority, automatic) in cases {
            assert_eq!(command.authority(), authority, "{command:?}");
            assert_eq!(command.is_automatic_failover(), automatic, "{command:?}");
        }
    }

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
        let cmd = Command::RegisterMembers {
            members: fixtures::members(3),
        };
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

    fn set_master(node: u64, epoch: u64, kind: ChangeKind) -> Command {
        Command::SetRedisMaster {
            node: NodeId(node),
            epoch: Epoch(epoch),
            kind,
            reason: "test".into(),
            suspect: (kind == ChangeKind::Automatic).then_some(LogIndex(7)),
        }
    }

    /// Data-driven: a sequence of commands and the outcome of each, then the final authority.
    #[test]
    fn redis_authority_epochs_are_compare_and_set() {
        let mut s = ClusterState::default();
        let steps: Vec<(Command, &str)> = vec![
            (
                set_master(1, 2, ChangeKind::Initial),
                "rejected: current epoch is 0",
            ),
            (
                set_master(1, 1, ChangeKind::Automatic),
                "rejected: no master recorded yet",
            ),
            (set_master(1, 1, ChangeKind::Initial), "changed"),
            (
                set_master(2, 1, ChangeKind::Initial),
                "rejected: current epoch is 1",
            ),
            (
                set_master(2, 2, ChangeKind::Initial),
                "rejected: n1 is already master",
            ),
            (
                Command::SuspectRedisMaster {
                    node: NodeId(2),
                    epoch: Epoch(1),
                    reason: "x".into(),
                },
                "rejected: master is n1 at epoch 1",
            ),
            (
                Command::SuspectRedisMaster {
                    node: NodeId(1),
                    epoch: Epoch(1),
                    reason: "silent".into(),
                },
                "changed",
            ),
            (
                Command::SuspectRedisMaster {
                    node: NodeId(1),
                    epoch: Epoch(1),
                    reason: "again".into(),
                },
                "unchanged",
            ),
            (
                Command::SetRedisMaster {
                    node: NodeId(2),
                    epoch: Epoch(2),
                    kind: ChangeKind::Automatic,
                    reason: "relied on an older suspicion".into(),
                    suspect: Some(LogIndex(3)),
                },
                "rejected: no longer in force",
            ),
            (set_master(2, 2, ChangeKind::Automatic), "changed"),
            (
                Command::ClearRedisSuspect {
                    node: NodeId(1),
                    epoch: Epoch(1),
                    reason: "late".into(),
                },
                "unchanged",
            ),
            (
                set_master(3, 2, ChangeKind::Switchover),
                "rejected: current epoch is 2 (stale decision)",
            ),
            (set_master(3, 3, ChangeKind::Switchover), "changed"),
        ];
        for (i, (cmd, want)) in steps.iter().enumerate() {
            let got = match s.apply(meta(i as u64 + 1), cmd) {
                Outcome::Changed => "changed".to_string(),
                Outcome::Unchanged => "unchanged".to_string(),
                Outcome::Stale => "stale".to_string(),
                Outcome::Rejected(why) => format!("rejected: {why}"),
            };
            let ok = if let Some(w) = want.strip_prefix("rejected: ") {
                got.starts_with("rejected: ") && got.contains(w)
            } else {
                got == *want
            };
            assert!(ok, "step {i}: {cmd:?}: got {got:?}, want {want:?}");
        }
        assert_eq!(s.redis.master, Some(NodeId(3)));
        assert_eq!(s.redis.epoch, Epoch(3));
        assert_eq!(
            s.redis.suspect, None,
            "a change of master clears the suspicion"
        );
        let last = s.redis.last_change.as_ref().expect("change");
        assert_eq!(
            (last.kind, last.from, last.to),
            (ChangeKind::Switchover, Some(NodeId(2)), NodeId(3))
        );
        assert!(
            s.history
                .iter()
                .any(|h| h.details.contains("stale decision")),
            "rejections are audited"
        );
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
