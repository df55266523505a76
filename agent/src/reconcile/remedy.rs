//! The local remediation runner: carries out the remediation lease in force when it names this
//! node, once, and reports how it went until the lease ends.
//!
//! Pure ([`RemedyRunner`]): the agent's task (`local::spawn_remedy`) and the simulation carry
//! out its steps. Rules, each cycle:
//! - a lease for this node not yet started: start it only while this agent holds its ping
//!   lease from a majority (a cut-off node may have been expired and replaced by the leader);
//! - a lease for this node while something blocks it as this node applied the state (a
//!   Galera outage opened, or a backup lease came to this node, after the grant): not started,
//!   reported failed at once so that the leader ends it;
//! - a lease started: report it running, then its result, for as long as the lease is in force
//!   (the leader commits the end from the report); then report nothing;
//! - a lease is carried out at most once per node: the newest lease started is kept durably
//!   (the caller's marker, written before the action); an agent restarted after starting one
//!   (it may still be behind, the lease still in force in its view, or already ended and
//!   followed by another node's) does not carry it out again and reports it failed;
//! - a node whose lease expired gets no ping lease from its peers until it has applied the
//!   end (`controller::remedy`'s embargo), so a lagging holder cannot start a lease that was
//!   expired and given to another node meanwhile.

use crate::cluster::{RemedyLease, RemedyRun};
use crate::ids::{NodeId, RemedyId};

/// What the local remediation task carries out: the lease in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemedyTarget {
    /// The remediation in force, if any.
    pub lease: Option<RemedyLease>,
    /// Why nothing may start now, as this node applied it: a Galera outage opened, or the
    /// lease's node now holds the backup lease, after the grant.
    pub blocked: Option<String>,
}

/// What the task does this cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemedyStep {
    /// Nothing.
    Idle,
    /// Carry out this lease now (then call [`RemedyRunner::finished`]).
    Start(RemedyLease),
}

/// The runner's state. See the module docs.
#[derive(Clone, Debug)]
pub struct RemedyRunner {
    me: NodeId,
    /// The newest lease started by this process.
    started: Option<RemedyId>,
    /// The report of the lease in force.
    report: Option<RemedyRun>,
}

impl RemedyRunner {
    /// A runner for node `me`.
    pub fn new(me: NodeId) -> Self {
        RemedyRunner {
            me,
            started: None,
            report: None,
        }
    }

    /// This cycle's step. `marker`: the newest lease this node ever started (durable across
    /// restarts); `ping_lease`: whether this agent holds its lease from a majority.
    pub fn cycle(
        &mut self,
        target: &RemedyTarget,
        marker: Option<RemedyId>,
        ping_lease: bool,
    ) -> RemedyStep {
        let mine = target.lease.as_ref().filter(|l| l.node == self.me);
        let Some(l) = mine else {
            self.report = None;
            return RemedyStep::Idle;
        };
        if self.report.as_ref().is_some_and(|r| r.id != l.id) {
            self.report = None;
        }
        if self.started.is_some_and(|s| s >= l.id) || !ping_lease {
            return RemedyStep::Idle;
        }
        self.started = Some(l.id);
        if marker.is_some_and(|m| m >= l.id) {
            self.report = Some(RemedyRun {
                id: l.id,
                done: true,
                ok: false,
                detail: "not carried out again: this node's agent restarted after starting it"
                    .into(),
            });
            return RemedyStep::Idle;
        }
        if let Some(why) = &target.blocked {
            self.report = Some(RemedyRun {
                id: l.id,
                done: true,
                ok: false,
                detail: format!("not started: {why}"),
            });
            return RemedyStep::Idle;
        }
        self.report = Some(RemedyRun {
            id: l.id,
            done: false,
            ok: false,
            detail: format!("{} running", l.action.describe()),
        });
        RemedyStep::Start(l.clone())
    }

    /// Records how lease `id` went.
    pub fn finished(&mut self, id: RemedyId, ok: bool, detail: String) {
        if self.started == Some(id) {
            self.report = Some(RemedyRun {
                id,
                done: true,
                ok,
                detail,
            });
        }
    }

    /// What to report now.
    pub fn report(&self) -> Option<&RemedyRun> {
        self.report.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::RemedyAction;
    use crate::ids::{LogIndex, Term, UnixMillis};

    fn target(id: u64, node: u64) -> RemedyTarget {
        RemedyTarget {
            blocked: None,
            lease: Some(RemedyLease {
                id: RemedyId(id),
                node: NodeId(node),
                action: RemedyAction::RestartPhpfpm,
                target: String::new(),
                max_duration_ms: 30_000,
                index: LogIndex(1),
                term: Term(1),
                at: UnixMillis(0),
                reason: String::new(),
            }),
        }
    }

    /// Another node's lease, no ping lease, once only, the report while the lease lasts.
    #[test]
    fn carries_out_its_own_lease_once_with_a_ping_lease() {
        let mut r = RemedyRunner::new(NodeId(2));
        assert_eq!(r.cycle(&target(1, 3), None, true), RemedyStep::Idle);
        assert_eq!(r.cycle(&target(1, 2), None, false), RemedyStep::Idle);
        assert!(r.report().is_none());
        assert!(matches!(
            r.cycle(&target(1, 2), None, true),
            RemedyStep::Start(_)
        ));
        assert_eq!(r.report().map(|x| x.done), Some(false));
        assert_eq!(r.cycle(&target(1, 2), None, true), RemedyStep::Idle);
        r.finished(RemedyId(1), true, "restarted".into());
        assert_eq!(r.cycle(&target(1, 2), None, true), RemedyStep::Idle);
        assert_eq!(
            r.report().map(|x| (x.id, x.done, x.ok)),
            Some((RemedyId(1), true, true))
        );
        // The lease ended: nothing reported; the next one starts.
        let none = RemedyTarget {
            lease: None,
            blocked: None,
        };
        assert_eq!(r.cycle(&none, Some(RemedyId(1)), true), RemedyStep::Idle);
        assert!(r.report().is_none());
        assert!(matches!(
            r.cycle(&target(2, 2), Some(RemedyId(1)), true),
            RemedyStep::Start(_)
        ));
        // Blocked after the grant: not started, reported failed.
        let blocked = RemedyTarget {
            blocked: Some("Galera outage 3 is open".into()),
            ..target(3, 2)
        };
        assert_eq!(r.cycle(&blocked, Some(RemedyId(2)), true), RemedyStep::Idle);
        assert_eq!(
            r.report().map(|x| (x.done, x.ok, x.detail.as_str())),
            Some((true, false, "not started: Galera outage 3 is open"))
        );
        // A restarted agent (a fresh runner) whose marker says it started lease 3 already.
        let mut again = RemedyRunner::new(NodeId(2));
        assert_eq!(
            again.cycle(&target(3, 2), Some(RemedyId(3)), true),
            RemedyStep::Idle
        );
        assert_eq!(again.report().map(|x| (x.done, x.ok)), Some((true, false)));
    }
}
