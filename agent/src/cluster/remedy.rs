//! The remediation authority: one remediation at a time, cluster-wide, under a committed
//! lease.
//!
//! A remediation (restart a dead PHP-FPM pool or glusterd, start a dead brick, mount a broken
//! mount again) runs only
//! under a [`RemedyLease`]: numbered ([`RemedyId`], exactly the last number plus one), for one
//! node and one [`RemedyAction`], bounded in time. It ends only by
//! [`Command::FinishRemedy`](super::Command::FinishRemedy) naming its lease: done as its agent
//! reported (succeeded or failed), or expired (the leader judged its time out). So three nodes
//! never restart their services at once, whatever the leader changes, crashes and replays.
//!
//! Checked on apply, like the other authorities' epochs: a grant only with no lease open, to a
//! member, never to the node holding the backup lease, never while a Galera outage is open
//! (its bootstrap restarts mariadbd; nothing else is touched meanwhile).
//!
//! The finished remediations are kept (newest first, at most [`REMEDY_RECORDS`]): the
//! decision's back-off and hourly cap count them, so a new leader counts what the old one did.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::{AuditEvent, ClusterState, EntryMeta, EventKind, Outcome};
use crate::ids::{LogIndex, NodeId, RemedyId, Term, UnixMillis};

/// How many finished remediations the replicated state keeps (newest first).
pub const REMEDY_RECORDS: usize = 64;

/// What a remediation does on its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemedyAction {
    /// Restart the PHP-FPM pool (service control `phpfpm`).
    RestartPhpfpm,
    /// Mount a GlusterFS mount point again (its target) with `[gluster] remount_command`: a
    /// lazy unmount and a mount; then a write and a read must work.
    Remount,
    /// Start this node's dead brick process (its target, `host:path`) with `gluster volume
    /// start VOLUME force`, which starts only the bricks that are not running; then the brick
    /// must be online in `volume status`.
    StartBrick,
    /// Restart this node's dead glusterd (service control `glusterd`); then the gluster CLI
    /// must answer again.
    RestartGlusterd,
}

impl RemedyAction {
    /// Every action, in the order the decision considers them.
    pub const ALL: [RemedyAction; 4] = [
        RemedyAction::RestartPhpfpm,
        RemedyAction::Remount,
        RemedyAction::StartBrick,
        RemedyAction::RestartGlusterd,
    ];

    /// Stable name (`restart_phpfpm`): wire, metrics, status.
    pub fn as_str(self) -> &'static str {
        match self {
            RemedyAction::RestartPhpfpm => "restart_phpfpm",
            RemedyAction::Remount => "remount",
            RemedyAction::StartBrick => "start_brick",
            RemedyAction::RestartGlusterd => "restart_glusterd",
        }
    }

    /// Parses [`RemedyAction::as_str`] names.
    pub fn parse(s: &str) -> Option<RemedyAction> {
        RemedyAction::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// In words, for the history (`restart php-fpm`).
    pub fn describe(self) -> &'static str {
        match self {
            RemedyAction::RestartPhpfpm => "restart php-fpm",
            RemedyAction::Remount => "remount",
            RemedyAction::StartBrick => "start brick",
            RemedyAction::RestartGlusterd => "restart glusterd",
        }
    }

    /// The service it repairs (`php-fpm`, `gluster`): hooks' events.
    pub fn service(self) -> &'static str {
        match self {
            RemedyAction::RestartPhpfpm => "php-fpm",
            RemedyAction::Remount | RemedyAction::StartBrick | RemedyAction::RestartGlusterd => {
                "gluster"
            }
        }
    }
}

impl std::fmt::Display for RemedyAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The remediation in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemedyLease {
    /// Its number.
    pub id: RemedyId,
    /// The node that carries it out on itself.
    pub node: NodeId,
    /// What it does.
    pub action: RemedyAction,
    /// What it acts on, when the action needs it (the mount point of a remount).
    #[serde(default)]
    pub target: String,
    /// Its bound: the leader expires the lease after it.
    pub max_duration_ms: u64,
    /// Log index of the grant.
    pub index: LogIndex,
    /// Raft term of the grant.
    pub term: Term,
    /// The proposer's wall clock at the grant.
    pub at: UnixMillis,
    /// The decision's verdict.
    pub reason: String,
}

/// A finished remediation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemedyRecord {
    /// Its number.
    pub id: RemedyId,
    /// Its node.
    pub node: NodeId,
    /// What it did.
    pub action: RemedyAction,
    /// What it acted on (the mount point of a remount).
    #[serde(default)]
    pub target: String,
    /// When it was granted (the proposer's wall clock): the back-off and the hourly cap count
    /// from it.
    pub granted_at: UnixMillis,
    /// Whether its agent reported success; `None` when the lease expired without a result.
    pub ok: Option<bool>,
    /// What its agent reported, or why it expired.
    pub result: String,
    /// Log index of the end.
    pub index: LogIndex,
}

/// A remediation as its agent reports it (in its health reports) while its lease is in force:
/// the leader commits the end from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemedyRun {
    /// The lease's number.
    pub id: RemedyId,
    /// Whether it is over.
    pub done: bool,
    /// Whether it succeeded (when over).
    pub ok: bool,
    /// What happened, one line.
    pub detail: String,
}

/// The remediation authority. See the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemedyAuthority {
    /// The newest lease number granted.
    pub last_id: RemedyId,
    /// The remediation in force.
    pub lease: Option<RemedyLease>,
    /// Finished remediations, newest first, at most [`REMEDY_RECORDS`].
    pub records: VecDeque<RemedyRecord>,
}

impl RemedyAuthority {
    /// Checks what a snapshot may hold: node ids not 0, the lease numbered `last_id`, records
    /// within bounds. Names the first problem.
    pub fn check(&self) -> Result<(), String> {
        if let Some(l) = &self.lease {
            if l.node.0 == 0 {
                return Err("remediation lease on node 0".into());
            }
            if l.id != self.last_id {
                return Err(format!(
                    "remediation lease {} is not the last granted ({})",
                    l.id, self.last_id
                ));
            }
        }
        if self.records.len() > REMEDY_RECORDS {
            return Err(format!(
                "{} remediation records (at most {REMEDY_RECORDS})",
                self.records.len()
            ));
        }
        if self
            .records
            .iter()
            .any(|r| r.node.0 == 0 || r.id > self.last_id)
        {
            return Err("remediation record of node 0 or above the last id".into());
        }
        Ok(())
    }
}

impl ClusterState {
    #[allow(clippy::too_many_arguments)] // the command's fields, as `apply` unpacks them
    pub(super) fn grant_remedy(
        &mut self,
        meta: EntryMeta,
        id: RemedyId,
        node: NodeId,
        action: RemedyAction,
        target: &str,
        max_duration_ms: u64,
        reason: &str,
    ) -> Outcome {
        let r = &self.remedy;
        let what = format!("remediation {id} ({} on {node})", describe(action, target));
        let backup_holder = self.backup.lease.as_ref().map(|l| l.node);
        let refusal = if r
            .lease
            .as_ref()
            .is_some_and(|l| l.id == id && l.node == node)
        {
            return Outcome::Unchanged;
        } else if id != r.last_id.next() {
            Some(format!(
                "{what} rejected: the last remediation granted is {} (stale decision)",
                r.last_id
            ))
        } else if let Some(l) = &r.lease {
            Some(format!(
                "{what} rejected: remediation {} ({} on {}) is still in force",
                l.id,
                describe(l.action, &l.target),
                l.node
            ))
        } else if !self.members.is_empty() && !self.members.contains_key(&node) {
            Some(format!("{what} rejected: {node} is not a member"))
        } else if backup_holder == Some(node) {
            Some(format!("{what} rejected: {node} holds the backup lease"))
        } else {
            self.galera
                .open()
                .map(|o| format!("{what} rejected: Galera outage {} is open", o.number))
        };
        if let Some(why) = refusal {
            return self.reject(meta, "remedy", why);
        }
        let r = &mut self.remedy;
        r.last_id = id;
        r.lease = Some(RemedyLease {
            id,
            node,
            action,
            target: target.to_string(),
            max_duration_ms,
            index: meta.index,
            term: meta.term,
            at: meta.at,
            reason: reason.to_string(),
        });
        self.record(meta, "remedy", format!("{what} granted: {reason}"));
        Outcome::Changed
    }

    pub(super) fn finish_remedy(
        &mut self,
        meta: EntryMeta,
        id: RemedyId,
        ok: bool,
        expired: bool,
        reason: &str,
    ) -> Outcome {
        let Some(l) = self.remedy.lease.clone() else {
            let done = self.remedy.records.iter().any(|r| r.id == id);
            if done {
                return Outcome::Unchanged;
            }
            return self.reject(
                meta,
                "remedy",
                format!("end of remediation {id} rejected: no remediation is in force"),
            );
        };
        if l.id != id {
            return self.reject(
                meta,
                "remedy",
                format!(
                    "end of remediation {id} rejected: remediation {} is in force",
                    l.id
                ),
            );
        }
        let outcome = match (expired, ok) {
            (true, _) => "expired",
            (false, true) => "done",
            (false, false) => "failed",
        };
        let r = &mut self.remedy;
        r.lease = None;
        r.records.push_front(RemedyRecord {
            id,
            node: l.node,
            action: l.action,
            target: l.target.clone(),
            granted_at: l.at,
            ok: (!expired).then_some(ok),
            result: reason.to_string(),
            index: meta.index,
        });
        r.records.truncate(REMEDY_RECORDS);
        let event = AuditEvent {
            what: EventKind::Remediation,
            service: l.action.service().to_string(),
            nodes: vec![l.node],
            epoch: id.0,
            ok: ok && !expired,
        };
        self.record_event(
            meta,
            "remedy",
            format!(
                "remediation {id} ({} on {}) {outcome}: {reason}",
                describe(l.action, &l.target),
                l.node
            ),
            Some(event),
        );
        Outcome::Changed
    }
}

/// An action and its target in words (`remount /mnt/shop`).
pub fn describe(action: RemedyAction, target: &str) -> String {
    if target.is_empty() {
        action.describe().to_string()
    } else {
        format!("{} {target}", action.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::members;
    use crate::cluster::fixtures::meta;
    use crate::cluster::Command;

    fn grant(id: u64, node: u64) -> Command {
        Command::GrantRemedy {
            id: RemedyId(id),
            node: NodeId(node),
            action: RemedyAction::RestartPhpfpm,
            target: String::new(),
            max_duration_ms: 30_000,
            reason: "php-fpm unreachable".into(),
        }
    }

    fn finish(id: u64, ok: bool, expired: bool) -> Command {
        Command::FinishRemedy {
            id: RemedyId(id),
            ok,
            expired,
            reason: "restarted".into(),
        }
    }

    /// Data-driven: one lease at a time, numbered in order, ended only by its own number;
    /// every state passes `check`.
    #[test]
    fn one_remediation_at_a_time() {
        let mut s = ClusterState {
            members: members(3),
            ..ClusterState::default()
        };
        // (command, outcome, lease in force afterwards as (id, node))
        type Step = (Command, &'static str, Option<(u64, u64)>);
        let steps: Vec<Step> = vec![
            (finish(1, true, false), "rejected", None),
            (grant(2, 1), "rejected", None),
            (grant(1, 4), "rejected", None),
            (grant(1, 2), "changed", Some((1, 2))),
            (grant(1, 2), "unchanged", Some((1, 2))),
            (grant(2, 3), "rejected", Some((1, 2))),
            (finish(2, true, false), "rejected", Some((1, 2))),
            (finish(1, true, false), "changed", None),
            (finish(1, true, false), "unchanged", None),
            (grant(1, 3), "rejected", None),
            (grant(2, 3), "changed", Some((2, 3))),
            (finish(2, false, true), "changed", None),
        ];
        for (i, (cmd, outcome, lease)) in steps.into_iter().enumerate() {
            let got = s.apply(meta(i as u64 + 1), &cmd);
            assert_eq!(got.name(), outcome, "step {i}: {got:?}");
            assert_eq!(
                s.remedy.lease.as_ref().map(|l| (l.id.0, l.node.0)),
                lease,
                "step {i}"
            );
            assert!(s.remedy.check().is_ok(), "step {i}");
        }
        let r: Vec<(u64, Option<bool>)> = s.remedy.records.iter().map(|r| (r.id.0, r.ok)).collect();
        assert_eq!(r, [(2, None), (1, Some(true))]);
    }

    /// Never on the backup lease's holder, never during a Galera outage.
    #[test]
    fn never_beside_a_backup_or_a_galera_outage() {
        let mut s = ClusterState {
            members: members(3),
            ..ClusterState::default()
        };
        s.backup.lease = Some(crate::cluster::BackupLease {
            id: crate::ids::BackupId(1),
            node: NodeId(2),
            trigger: crate::cluster::BackupTrigger::Manual {
                request: LogIndex(1),
            },
            attempt: 1,
            max_duration_ms: 60_000,
            index: LogIndex(1),
            term: Term(1),
            at: UnixMillis(0),
            reason: String::new(),
        });
        let out = s.apply(meta(2), &grant(1, 2));
        assert!(
            matches!(&out, Outcome::Rejected(w) if w.contains("holds the backup lease")),
            "{out:?}"
        );
        s.apply(
            meta(3),
            &Command::OpenGaleraOutage {
                outage: crate::cluster::OutageId(1),
                reason: String::new(),
            },
        );
        let out = s.apply(meta(4), &grant(1, 3));
        assert!(
            matches!(&out, Outcome::Rejected(w) if w.contains("Galera outage 1 is open")),
            "{out:?}"
        );
    }
}
