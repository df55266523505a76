//! Hook runs in the replicated state: which audited events the post hooks have seen, and the
//! audit line of every hook run.
//!
//! The events themselves are audit entries: an [`AuditEntry`](super::AuditEntry) whose
//! change an operator's hooks want to hear about (a failover, a switchover, a bootstrap, a
//! finished remediation or backup) carries an [`AuditEvent`]. The leader runs the post hooks
//! for every such entry above [`HookProgress::post_done`], oldest first, and commits a
//! [`Command::RecordHook`](super::Command::RecordHook) for each: the audit line with the exit
//! status, and the progress a new leader continues from.
//!
//! Caveats: post hooks run at least once, not exactly once. A leader that ran a hook and lost
//! its leadership before the record committed leaves the event to the next leader, which runs
//! it again; the event's `id` (cluster name and log index) lets a receiver drop the repeat.
//! An event that fell out of the bounded history before any leader got to it is never run.

use serde::{Deserialize, Serialize};

use super::{ClusterState, EntryMeta, Outcome};
use crate::ids::{LogIndex, NodeId};

/// What an audited change was, for hooks and notifications.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An automatic or forced change of the Redis master or the Galera writer.
    Failover,
    /// A planned switchover of the Redis master or the Galera writer.
    Switchover,
    /// A Galera bootstrap decided after a full outage.
    Bootstrap,
    /// A remediation (a restart, a remount) ended.
    Remediation,
    /// A backup ended.
    Backup,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 5] = [
        EventKind::Failover,
        EventKind::Switchover,
        EventKind::Bootstrap,
        EventKind::Remediation,
        EventKind::Backup,
    ];

    /// Stable name (`failover`): the hook's JSON, the wire, metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Failover => "failover",
            EventKind::Switchover => "switchover",
            EventKind::Bootstrap => "bootstrap",
            EventKind::Remediation => "remediation",
            EventKind::Backup => "backup",
        }
    }

    /// Parses [`EventKind::as_str`] names.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The structured side of an audit entry that hooks are told about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// What happened.
    pub what: EventKind,
    /// The service it concerns: `redis`, `galera`, `php-fpm`, `gluster` or `backup`.
    pub service: String,
    /// The nodes concerned, the acting one first (the new master or writer then the old one,
    /// the bootstrap node, the repaired node, the backup's node).
    pub nodes: Vec<NodeId>,
    /// The number it belongs to: the new epoch, the outage, the remediation or the backup id.
    pub epoch: u64,
    /// Whether it succeeded (remediations and backups); decisions are `true`.
    pub ok: bool,
}

/// Before or after the action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookPhase {
    /// Before a planned action, which it may veto.
    Pre,
    /// After a committed change.
    Post,
}

impl HookPhase {
    /// Stable name (`pre`, `post`).
    pub fn as_str(self) -> &'static str {
        match self {
            HookPhase::Pre => "pre",
            HookPhase::Post => "post",
        }
    }

    /// Parses [`HookPhase::as_str`] names.
    pub fn parse(s: &str) -> Option<HookPhase> {
        [HookPhase::Pre, HookPhase::Post]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

/// How a hook run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookOutcome {
    /// Every configured hook (command, webhook) succeeded.
    Ok,
    /// A post hook or the webhook failed (exit status, timeout, no answer); logged and
    /// counted, never fatal.
    Failed,
    /// A pre hook refused the action (or failed, or timed out: no action on doubt).
    Vetoed,
    /// Not run: the events were older than `[hooks] max_age` when a leader got to them.
    Skipped,
}

impl HookOutcome {
    /// Stable name (`ok`, `failed`, `vetoed`, `skipped`).
    pub fn as_str(self) -> &'static str {
        match self {
            HookOutcome::Ok => "ok",
            HookOutcome::Failed => "failed",
            HookOutcome::Vetoed => "vetoed",
            HookOutcome::Skipped => "skipped",
        }
    }

    /// Parses [`HookOutcome::as_str`] names.
    pub fn parse(s: &str) -> Option<HookOutcome> {
        [
            HookOutcome::Ok,
            HookOutcome::Failed,
            HookOutcome::Vetoed,
            HookOutcome::Skipped,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// How far the post hooks got.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookProgress {
    /// The newest audited event whose post hooks ran (or were skipped): a leader runs those of
    /// newer events only.
    pub post_done: LogIndex,
}

impl ClusterState {
    /// Audited events whose post hooks have not run yet, oldest first.
    pub fn pending_post_hooks(&self) -> Vec<&super::AuditEntry> {
        let mut out: Vec<_> = self
            .history
            .iter()
            .filter(|e| e.event.is_some() && e.index > self.hooks.post_done)
            .collect();
        out.reverse();
        out
    }

    pub(super) fn record_hook(
        &mut self,
        meta: EntryMeta,
        phase: HookPhase,
        what: EventKind,
        event: Option<LogIndex>,
        outcome: HookOutcome,
        detail: &str,
    ) -> Outcome {
        if phase == HookPhase::Post {
            match event {
                Some(e) if e > self.hooks.post_done => self.hooks.post_done = e,
                // A repeat (a new leader ran it again): recorded once.
                _ => return Outcome::Unchanged,
            }
        }
        let of = event.map_or(String::new(), |e| format!(" (entry {e})"));
        self.record(
            meta,
            "hook",
            format!(
                "{} hook for {}{of} {}: {detail}",
                phase.as_str(),
                what.as_str(),
                outcome.as_str()
            ),
        );
        Outcome::Changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::meta;
    use crate::cluster::{AuditEntry, Command};
    use crate::ids::{Term, UnixMillis};

    fn event_at(s: &mut ClusterState, i: u64, what: EventKind) {
        s.applied = LogIndex(i);
        s.history.push_front(AuditEntry {
            term: Term(1),
            index: LogIndex(i),
            at: UnixMillis(i as i64),
            kind: "redis".into(),
            details: format!("event {i}"),
            event: Some(AuditEvent {
                what,
                service: "redis".into(),
                nodes: vec![NodeId(2), NodeId(1)],
                epoch: 2,
                ok: true,
            }),
        });
    }

    fn post(event: u64, outcome: HookOutcome) -> Command {
        Command::RecordHook {
            phase: HookPhase::Post,
            what: EventKind::Failover,
            event: Some(LogIndex(event)),
            outcome,
            detail: "exit 0 in 0.1 s".into(),
        }
    }

    #[test]
    fn post_hooks_run_oldest_first_and_once() {
        let mut s = ClusterState::default();
        event_at(&mut s, 3, EventKind::Failover);
        event_at(&mut s, 5, EventKind::Backup);
        s.record(meta(6), "maintenance", "not an event".into());
        let pending: Vec<u64> = s.pending_post_hooks().iter().map(|e| e.index.0).collect();
        assert_eq!(pending, vec![3, 5]);

        assert_eq!(
            s.apply(meta(7), &post(3, HookOutcome::Ok)),
            Outcome::Changed
        );
        assert_eq!(s.hooks.post_done, LogIndex(3));
        assert!(s.history[0]
            .details
            .contains("post hook for failover (entry 3) ok"));
        let pending: Vec<u64> = s.pending_post_hooks().iter().map(|e| e.index.0).collect();
        assert_eq!(pending, vec![5]);

        // A new leader that ran it again: recorded once.
        let before = s.history.len();
        assert_eq!(
            s.apply(meta(8), &post(3, HookOutcome::Ok)),
            Outcome::Unchanged
        );
        assert_eq!(s.history.len(), before);

        // A skip covers every older event at once.
        assert_eq!(
            s.apply(meta(9), &post(5, HookOutcome::Skipped)),
            Outcome::Changed
        );
        assert!(s.pending_post_hooks().is_empty());
    }

    #[test]
    fn a_vetoed_pre_hook_is_audited_and_moves_nothing() {
        let mut s = ClusterState::default();
        let veto = Command::RecordHook {
            phase: HookPhase::Pre,
            what: EventKind::Switchover,
            event: None,
            outcome: HookOutcome::Vetoed,
            detail: "exit 1: change freeze".into(),
        };
        assert_eq!(s.apply(meta(1), &veto), Outcome::Changed);
        assert_eq!(s.hooks.post_done, LogIndex(0));
        assert_eq!(s.history[0].kind, "hook");
        assert_eq!(
            s.history[0].details,
            "pre hook for switchover vetoed: exit 1: change freeze"
        );
    }

    /// The changes hooks hear about carry their event; the first master recorded does not.
    #[test]
    fn failovers_and_switchovers_are_events_the_initial_master_is_not() {
        use crate::cluster::ChangeKind;
        use crate::ids::Epoch;
        let mut s = ClusterState {
            members: crate::cluster::fixtures::members(3),
            ..ClusterState::default()
        };
        let master = |node, epoch, kind| Command::SetRedisMaster {
            node: NodeId(node),
            epoch: Epoch(epoch),
            kind,
            reason: "test".into(),
            suspect: None,
        };
        assert_eq!(
            s.apply(meta(1), &master(1, 1, ChangeKind::Initial)),
            Outcome::Changed
        );
        assert_eq!(s.history[0].event, None);
        assert_eq!(
            s.apply(meta(2), &master(2, 2, ChangeKind::Forced)),
            Outcome::Changed
        );
        assert_eq!(
            s.history[0].event,
            Some(AuditEvent {
                what: EventKind::Failover,
                service: "redis".into(),
                nodes: vec![NodeId(2), NodeId(1)],
                epoch: 2,
                ok: true,
            })
        );
        assert_eq!(
            s.apply(meta(3), &master(3, 3, ChangeKind::Switchover)),
            Outcome::Changed
        );
        let e = s.history[0].event.as_ref().expect("an event");
        assert_eq!(
            (e.what, e.nodes.clone()),
            (EventKind::Switchover, vec![NodeId(3), NodeId(2)])
        );
        // A rejected change is no event.
        let rejected = s.apply(meta(4), &master(1, 9, ChangeKind::Switchover));
        assert!(matches!(rejected, Outcome::Rejected(_)));
        assert_eq!(s.history[0].event, None);
        let pending: Vec<u64> = s.pending_post_hooks().iter().map(|e| e.index.0).collect();
        assert_eq!(pending, vec![2, 3]);
    }

    #[test]
    fn names_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        for o in [
            HookOutcome::Ok,
            HookOutcome::Failed,
            HookOutcome::Vetoed,
            HookOutcome::Skipped,
        ] {
            assert_eq!(HookOutcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(HookPhase::parse("pre"), Some(HookPhase::Pre));
        assert_eq!(HookPhase::parse("during"), None);
    }
}
