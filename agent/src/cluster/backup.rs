//! The backup authority: the schedule's arming, the one backup lease, the manual request, the
//! retry owed after a failed run, and the bounded catalog of finished runs.
//!
//! A backup runs only under a committed lease ([`BackupLease`]): one at a time, numbered
//! ([`BackupId`], exactly the last number plus one), for one *trigger*: a scheduled window
//! (the cron time it belongs to) or an operator's request. A run ends only by
//! [`Command::FinishBackup`](super::Command::FinishBackup) naming its lease: verified, failed
//! (the runner said why), or expired (the leader judged the lease's time out on its own
//! monotonic clock). A failed first attempt owes one retry of the same trigger on another node;
//! a verified run, or a failed retry, closes the trigger: a scheduled window is never run again
//! ([`BackupAuthority::done_window`] only grows), a request is spent.
//!
//! So, whatever the leader changes, crashes and replays: never two leases at once, at most two
//! attempts per trigger, at most one verified run per window, and the second attempt never on
//! the node of the first. All of it is checked on apply, like the other authorities' epochs.
//!
//! Caveats: the catalog keeps the newest [`CATALOG_LIMIT`] runs (the repository keeps its
//! snapshots by its own retention); windows are wall-clock times chosen by the leader and only
//! recorded here.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::{AuditEvent, ClusterState, EntryMeta, EventKind, Outcome};
use crate::ids::{BackupId, LogIndex, NodeId, Term, UnixMillis};

/// How many finished runs the replicated catalog keeps (newest first).
pub const CATALOG_LIMIT: usize = 64;

/// Most attempts of one trigger: the first and one retry on another node.
pub const MAX_ATTEMPTS: u32 = 2;

/// What a backup run is for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum BackupTrigger {
    /// The schedule's window that starts at `window` (a cron time, UTC).
    Scheduled {
        /// The window's scheduled time.
        window: UnixMillis,
    },
    /// An operator's request (`triad backup now`), committed at log index `request`.
    Manual {
        /// Log index of the request.
        request: LogIndex,
    },
}

impl std::fmt::Display for BackupTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupTrigger::Scheduled { window } => write!(f, "window {}", window.0),
            BackupTrigger::Manual { request } => write!(f, "request at index {request}"),
        }
    }
}

/// One component of a backup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    /// The MariaDB datadir, as `mariadb-backup` copied and prepared it.
    Db,
    /// The Redis RDB, taken from a replica.
    Redis,
    /// The GlusterFS directories, read from the node's mount.
    Files,
}

impl Component {
    /// Every component, in backup order.
    pub const ALL: [Component; 3] = [Component::Db, Component::Redis, Component::Files];

    /// Stable name (`db`, `redis`, `files`: CLI, metric labels, restic tags).
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Db => "db",
            Component::Redis => "redis",
            Component::Files => "files",
        }
    }

    /// Parses [`Component::as_str`] names.
    pub fn parse(s: &str) -> Option<Component> {
        Component::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one component of a run produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentSummary {
    /// Which component.
    pub component: Component,
    /// Bytes backed up.
    pub bytes: u64,
    /// SHA-256 of the component's content list (each file's path, size and digest), hex.
    pub sha256: String,
    /// How long taking it took.
    pub duration_ms: u64,
    /// The repository snapshot holding it.
    pub snapshot: String,
}

/// What a finished run reports, as committed in the catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSummary {
    /// The components taken (in [`Component::ALL`] order; a failed run may have fewer).
    pub components: Vec<ComponentSummary>,
    /// The Galera position of the database copy, `uuid:seqno`, when taken.
    pub galera_position: String,
    /// The Redis replication offset of the RDB, when taken.
    pub redis_offset: Option<u64>,
    /// The runner's Triad version.
    pub version: String,
    /// How long the whole run took, by the runner's clock.
    pub duration_ms: u64,
}

/// A runner's report of the backup it runs (or ran) under a lease, as a health report carries
/// it to the leader.
/// A message (it travels in health reports), not replicated state: it lives here so that the
/// pure core can read it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupRun {
    /// The lease's backup id.
    pub id: BackupId,
    /// What the run does now, or `done`.
    pub phase: String,
    /// Bytes taken so far.
    pub bytes: u64,
    /// Time since the run started, by the runner's clock.
    pub elapsed_ms: u64,
    /// Whether the run is over.
    pub done: bool,
    /// Whether it ended verified (when done).
    pub verified: bool,
    /// What was verified, or why it failed (when done).
    pub reason: String,
    /// What it produced (when done).
    pub summary: BackupSummary,
}

/// The committed backup lease: who runs which backup, for what, for how long at most.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupLease {
    /// The run's number.
    pub id: BackupId,
    /// The node that runs it.
    pub node: NodeId,
    /// What it is for.
    pub trigger: BackupTrigger,
    /// 1 for the first attempt of the trigger, 2 for its retry.
    pub attempt: u32,
    /// The run's bound: the runner stops by then on its own clock, and the leader expires the
    /// lease once it surely has.
    pub max_duration_ms: u64,
    /// Log index of the grant.
    pub index: LogIndex,
    /// Raft term of the grant.
    pub term: Term,
    /// The proposer's wall clock at the grant (the runner refuses a grant it applies much
    /// later by its own clock).
    pub at: UnixMillis,
    /// The decision's verdict.
    pub reason: String,
}

/// A failed first attempt that owes its trigger one retry on another node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRetry {
    /// The trigger to retry.
    pub trigger: BackupTrigger,
    /// The node the first attempt failed on.
    pub failed_on: NodeId,
    /// The failed run.
    pub failed: BackupId,
}

/// An operator's request for a backup now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRequest {
    /// Who asked.
    pub by: String,
    /// Why.
    pub reason: String,
    /// Log index of the request (the trigger names it).
    pub index: LogIndex,
    /// The proposer's wall clock.
    pub at: UnixMillis,
}

/// A finished run, as the catalog keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    /// The run's number.
    pub id: BackupId,
    /// The node that ran it.
    pub node: NodeId,
    /// What it was for.
    pub trigger: BackupTrigger,
    /// Which attempt.
    pub attempt: u32,
    /// When the lease was granted (proposer's wall clock).
    pub started_at: UnixMillis,
    /// When the finish was committed (proposer's wall clock).
    pub finished_at: UnixMillis,
    /// Whether the run is verified: every component taken and restored in a check.
    pub verified: bool,
    /// The verdict: what was verified, or why it failed.
    pub reason: String,
    /// Whether the leader ended it without a result from its runner (the lease expired):
    /// until that node applied the end, its peers give it no lease renewal, and no new lease
    /// is granted until its runner has surely stopped.
    #[serde(default)]
    pub expired: bool,
    /// Log index of the end.
    #[serde(default)]
    pub index: LogIndex,
    /// What the run produced (empty when its lease expired).
    pub summary: BackupSummary,
}

/// The backup authority. See the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupAuthority {
    /// Since when the schedule counts windows (the first decision that saw backups
    /// configured); windows before it were not this cluster's to take.
    pub armed_at: Option<UnixMillis>,
    /// The newest lease number granted.
    pub last_id: BackupId,
    /// The running backup's lease.
    pub lease: Option<BackupLease>,
    /// The newest scheduled window closed (verified, or its retry spent).
    pub done_window: Option<UnixMillis>,
    /// The retry owed after a failed first attempt.
    pub retry: Option<BackupRetry>,
    /// An operator's pending request.
    pub request: Option<BackupRequest>,
    /// Finished runs, newest first, at most [`CATALOG_LIMIT`].
    pub catalog: VecDeque<BackupRecord>,
}

impl BackupAuthority {
    /// Whether `trigger` is still open: its window not closed, its request not spent.
    pub fn is_open(&self, trigger: &BackupTrigger) -> bool {
        match trigger {
            BackupTrigger::Scheduled { window } => {
                self.armed_at.is_some_and(|a| *window > a)
                    && self.done_window.is_none_or(|d| *window > d)
            }
            BackupTrigger::Manual { request } => {
                self.request.as_ref().is_some_and(|r| r.index == *request)
            }
        }
    }

    /// The newest verified run, if any.
    pub fn last_verified(&self) -> Option<&BackupRecord> {
        self.catalog.iter().find(|r| r.verified)
    }

    /// Checks what a snapshot may hold: the lease numbered within `last_id`, on a node not 0,
    /// at attempt 1 or 2; the catalog bounded. Names the first problem.
    pub fn check(&self) -> Result<(), String> {
        if let Some(l) = &self.lease {
            if l.id > self.last_id || l.id.0 == 0 {
                return Err(format!(
                    "backup lease {} beyond the last id {}",
                    l.id, self.last_id
                ));
            }
            if l.node.0 == 0 {
                return Err("backup lease on node 0".into());
            }
            if !(1..=MAX_ATTEMPTS).contains(&l.attempt) {
                return Err(format!("backup lease attempt {}", l.attempt));
            }
        }
        if self.catalog.len() > CATALOG_LIMIT {
            return Err(format!("backup catalog of {} runs", self.catalog.len()));
        }
        Ok(())
    }
}

impl ClusterState {
    pub(super) fn arm_backups(&mut self, meta: EntryMeta, since: UnixMillis) -> Outcome {
        if self.backup.armed_at.is_some() {
            return Outcome::Unchanged;
        }
        self.backup.armed_at = Some(since);
        self.record(
            meta,
            "backup",
            format!("backup schedule armed: windows after {} are due", since.0),
        );
        Outcome::Changed
    }

    pub(super) fn request_backup(&mut self, meta: EntryMeta, by: &str, reason: &str) -> Outcome {
        if let Some(r) = &self.backup.request {
            let why = format!(
                "backup request by {by} rejected: the request by {} at index {} is still pending",
                r.by, r.index
            );
            return self.reject(meta, "backup", why);
        }
        self.backup.request = Some(BackupRequest {
            by: by.to_string(),
            reason: reason.to_string(),
            index: meta.index,
            at: meta.at,
        });
        self.record(
            meta,
            "backup",
            format!("backup requested by {by}: {reason}"),
        );
        Outcome::Changed
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn grant_backup_lease(
        &mut self,
        meta: EntryMeta,
        id: BackupId,
        node: NodeId,
        trigger: &BackupTrigger,
        attempt: u32,
        max_duration_ms: u64,
        reason: &str,
    ) -> Outcome {
        let b = &self.backup;
        let refusal = if let Some(l) = &b.lease {
            if l.id == id && l.node == node && l.trigger == *trigger {
                return Outcome::Unchanged;
            }
            Some(format!("backup {} is running on {}", l.id, l.node))
        } else if id != b.last_id.next() {
            Some(format!("the last backup is {} (stale decision)", b.last_id))
        } else if self.maintenance.enabled {
            Some("maintenance is on".to_string())
        } else if !self.members.is_empty() && !self.members.contains_key(&node) {
            Some(format!("{node} is not a member"))
        } else if !b.is_open(trigger) {
            Some(format!("{trigger} is closed or was never due"))
        } else if max_duration_ms == 0 {
            Some("a lease of no duration".to_string())
        } else {
            match (attempt, &b.retry) {
                (1, Some(r)) if r.trigger == *trigger => Some(format!(
                    "{trigger} already had its first attempt ({})",
                    r.failed
                )),
                (1, _) => None,
                (2, Some(r)) if r.trigger == *trigger && r.failed_on == node => Some(format!(
                    "the retry must run on another node than {node}, where {} failed",
                    r.failed
                )),
                (2, Some(r)) if r.trigger == *trigger => None,
                (2, _) => Some(format!("{trigger} owes no retry")),
                (n, _) => Some(format!("attempt {n} (at most {MAX_ATTEMPTS})")),
            }
        };
        if let Some(why) = refusal {
            let why = format!("backup lease {id} on {node} for {trigger} rejected: {why}");
            return self.reject(meta, "backup", why);
        }
        let b = &mut self.backup;
        // A first attempt of a newer trigger supersedes a retry still owed.
        if attempt == 1 {
            b.retry = None;
        }
        b.last_id = id;
        b.lease = Some(BackupLease {
            id,
            node,
            trigger: trigger.clone(),
            attempt,
            max_duration_ms,
            index: meta.index,
            term: meta.term,
            at: meta.at,
            reason: reason.to_string(),
        });
        self.record(
            meta,
            "backup",
            format!(
                "backup {id} (attempt {attempt}) for {trigger} leased to {node} for at most \
                 {} s: {reason}",
                max_duration_ms / 1000
            ),
        );
        Outcome::Changed
    }

    pub(super) fn finish_backup(
        &mut self,
        meta: EntryMeta,
        id: BackupId,
        verified: bool,
        expired: bool,
        reason: &str,
        summary: &BackupSummary,
    ) -> Outcome {
        let verified = verified && !expired;
        let Some(lease) = self.backup.lease.clone() else {
            if self.backup.catalog.iter().any(|r| r.id == id) {
                return Outcome::Unchanged;
            }
            let why = format!("finish of backup {id} rejected: no backup is running");
            return self.reject(meta, "backup", why);
        };
        if lease.id != id {
            let why = format!(
                "finish of backup {id} rejected: the running backup is {} (stale decision)",
                lease.id
            );
            return self.reject(meta, "backup", why);
        }
        let b = &mut self.backup;
        b.lease = None;
        let closes = verified || lease.attempt >= MAX_ATTEMPTS;
        if closes {
            b.retry = None;
            match &lease.trigger {
                BackupTrigger::Scheduled { window } => {
                    b.done_window = Some(b.done_window.map_or(*window, |d| d.max(*window)));
                }
                BackupTrigger::Manual { request } => {
                    if b.request.as_ref().is_some_and(|r| r.index == *request) {
                        b.request = None;
                    }
                }
            }
        } else {
            b.retry = Some(BackupRetry {
                trigger: lease.trigger.clone(),
                failed_on: lease.node,
                failed: id,
            });
        }
        b.catalog.push_front(BackupRecord {
            id,
            node: lease.node,
            trigger: lease.trigger.clone(),
            attempt: lease.attempt,
            started_at: lease.at,
            finished_at: meta.at,
            verified,
            reason: reason.to_string(),
            expired,
            index: meta.index,
            summary: summary.clone(),
        });
        b.catalog.truncate(CATALOG_LIMIT);
        let verdict = match (verified, expired) {
            (true, _) => "verified",
            (false, true) => "expired",
            (false, false) => "failed",
        };
        let next = if closes {
            ""
        } else {
            "; one retry owed on another node"
        };
        let event = AuditEvent {
            what: EventKind::Backup,
            service: "backup".into(),
            nodes: vec![lease.node],
            epoch: id.0,
            ok: verified,
        };
        self.record_event(
            meta,
            "backup",
            format!(
                "backup {id} on {} for {} {verdict}: {reason}{next}",
                lease.node, lease.trigger
            ),
            Some(event),
        );
        Outcome::Changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::members;
    use crate::cluster::Command;

    fn meta(index: u64) -> EntryMeta {
        EntryMeta {
            term: Term(1),
            index: LogIndex(index),
            at: UnixMillis(1_000 * index as i64),
        }
    }

    fn grant(id: u64, node: u64, trigger: &BackupTrigger, attempt: u32) -> Command {
        Command::GrantBackupLease {
            id: BackupId(id),
            node: NodeId(node),
            trigger: trigger.clone(),
            attempt,
            max_duration_ms: 60_000,
            reason: "test".into(),
        }
    }

    fn finish(id: u64, verified: bool, expired: bool) -> Command {
        Command::FinishBackup {
            id: BackupId(id),
            verified,
            expired,
            reason: "test".into(),
            summary: BackupSummary::default(),
        }
    }

    /// Data-driven: a sequence of commands, each with the outcome it must have (a piece of
    /// the refusal for a rejection). Covers one lease at a time, ids in order, closed windows,
    /// the retry on another node only, requests, and stale ends.
    #[test]
    fn lease_rules_table() {
        let w1 = BackupTrigger::Scheduled {
            window: UnixMillis(10_000),
        };
        let w2 = BackupTrigger::Scheduled {
            window: UnixMillis(20_000),
        };
        let before = BackupTrigger::Scheduled {
            window: UnixMillis(500),
        };
        let steps: Vec<(Command, &str)> = vec![
            (grant(1, 2, &w1, 1), "closed or was never due"),
            (
                Command::ArmBackupSchedule {
                    since: UnixMillis(1_000),
                },
                "changed",
            ),
            (
                Command::ArmBackupSchedule {
                    since: UnixMillis(9_000),
                },
                "unchanged",
            ),
            (grant(1, 2, &before, 1), "closed or was never due"),
            (grant(2, 2, &w1, 1), "the last backup is b0"),
            (grant(1, 2, &w1, 2), "owes no retry"),
            (grant(1, 2, &w1, 1), "changed"),
            (grant(1, 2, &w1, 1), "unchanged"),
            (grant(2, 3, &w1, 1), "backup b1 is running on n2"),
            (finish(2, true, false), "the running backup is b1"),
            (finish(1, false, false), "changed"),
            (finish(1, false, false), "unchanged"),
            (grant(2, 3, &w1, 1), "already had its first attempt"),
            (grant(2, 2, &w1, 2), "must run on another node than n2"),
            (grant(2, 3, &w1, 3), "attempt 3"),
            (grant(2, 3, &w1, 2), "changed"),
            (finish(2, true, true), "changed"),
            // The retry expired: the window is closed all the same.
            (grant(3, 1, &w1, 1), "closed or was never due"),
            (grant(3, 1, &w2, 1), "changed"),
            (finish(3, true, false), "changed"),
            (grant(4, 1, &w2, 1), "closed or was never due"),
            (
                Command::RequestBackup {
                    by: "api@n1".into(),
                    reason: "before upgrade".into(),
                },
                "changed",
            ),
            (
                Command::RequestBackup {
                    by: "api@n2".into(),
                    reason: "again".into(),
                },
                "still pending",
            ),
            (
                grant(
                    4,
                    9,
                    &BackupTrigger::Manual {
                        request: LogIndex(22),
                    },
                    1,
                ),
                "n9 is not a member",
            ),
            (
                grant(
                    4,
                    1,
                    &BackupTrigger::Manual {
                        request: LogIndex(7),
                    },
                    1,
                ),
                "closed or was never due",
            ),
            (
                grant(
                    4,
                    1,
                    &BackupTrigger::Manual {
                        request: LogIndex(22),
                    },
                    1,
                ),
                "changed",
            ),
            (finish(4, true, false), "changed"),
            (finish(9, true, false), "no backup is running"),
        ];
        let mut state = ClusterState {
            members: members(3),
            ..ClusterState::default()
        };
        for (i, (command, want)) in steps.iter().enumerate() {
            let index = i as u64 + 1;
            let got = state.apply(meta(index), command);
            match &got {
                Outcome::Rejected(why) => assert!(
                    why.contains(want),
                    "step {index} {command:?}: rejected `{why}`, wanted `{want}`"
                ),
                other => assert_eq!(other.name(), *want, "step {index} {command:?}"),
            }
            assert!(state.backup.check().is_ok(), "step {index}");
        }
        let b = &state.backup;
        assert!(b.lease.is_none() && b.request.is_none() && b.retry.is_none());
        assert_eq!(b.done_window, Some(UnixMillis(20_000)));
        let ids: Vec<(u64, bool, bool)> = b
            .catalog
            .iter()
            .map(|r| (r.id.0, r.verified, r.expired))
            .collect();
        // Newest first; the expired retry is not verified even though it said so.
        assert_eq!(
            ids,
            [
                (4, true, false),
                (3, true, false),
                (2, false, true),
                (1, false, false)
            ]
        );
    }

    /// No lease in maintenance; the catalog stays bounded.
    #[test]
    fn maintenance_and_catalog_bound() {
        let mut state = ClusterState {
            members: members(3),
            ..ClusterState::default()
        };
        state.apply(
            meta(1),
            &Command::ArmBackupSchedule {
                since: UnixMillis(0),
            },
        );
        state.maintenance.enabled = true;
        let w = |n: i64| BackupTrigger::Scheduled {
            window: UnixMillis(n * 1_000),
        };
        let got = state.apply(meta(2), &grant(1, 2, &w(1), 1));
        assert!(matches!(got, Outcome::Rejected(ref why) if why.contains("maintenance")));
        state.maintenance.enabled = false;
        let mut index = 3;
        for n in 1..=(CATALOG_LIMIT as u64 + 5) {
            assert_eq!(
                state.apply(meta(index), &grant(n, 2, &w(n as i64), 1)),
                Outcome::Changed
            );
            assert_eq!(
                state.apply(meta(index + 1), &finish(n, true, false)),
                Outcome::Changed
            );
            index += 2;
        }
        assert_eq!(state.backup.catalog.len(), CATALOG_LIMIT);
        assert_eq!(
            state.backup.catalog.front().map(|r| r.id),
            Some(BackupId(CATALOG_LIMIT as u64 + 5))
        );
    }
}
