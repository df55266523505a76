//! The clocks of the Redis decision: when this node saw the last change of master and the
//! current suspicion, and which peers may renew their lease.
//!
//! Pure: the wiring feeds the committed authority, the peers' applied indexes (from their
//! health reports) and its own monotonic time in milliseconds; nothing here reads a clock.
//! Every agent keeps one (not only the leader), so a newly elected leader already knows how
//! long ago things happened *on its own clock*: no wall-clock comparison between VMs is ever
//! made.
//!
//! # The lease embargo
//! An agent renews its lease through peers answering its pings (`raft::transport`). A peer
//! withholds the answer ([`embargo`]) from
//! - the suspected master (silent path), so that its lease runs out and it fences itself;
//! - any agent whose latest report shows that it has not applied the newest Redis decision
//!   (a change of master or a suspicion), or that never reported. A cut-off old master that
//!   comes back therefore gets no lease (and cannot unfence) until it has applied who the
//!   master is now.
//!
//! # How long ago the suspect's lease was renewed
//! The silent path waits until the suspected master's lease has surely run out. Two bounds,
//! the larger wins:
//! - [`RedisTimeline::suspect_embargo_ms`]: since a quorum is known to have applied the
//!   suspicion (none of them answers the suspect's pings from then on);
//! - [`suspect_lease_age_ms`]: since the last pong any other member gave the suspect, as their
//!   reports date it, once each of them applied the suspicion. After a cut, that is the cut,
//!   not the suspicion a few seconds later.
//!
//! A change already committed when the agent started has no time on this node's monotonic
//! clock; [`since_change_ms`] then uses the wall-clock age of the change (the proposer's
//! clock against this one), which only the hold-down (anti-flapping, not safety) reads.
//!
//! Caveats: that wall-clock age is off by the clock skew between the two VMs (NTP keeps it in
//! milliseconds); without it (unknown), the uptime is used, which errs towards not failing
//! over.
//!
//! # Expired lease holders (backups, remediations)
//! A backup or remediation lease the leader expired may still have its runner going on the
//! old holder. [`expired_holder_embargo`] withholds ping answers from it until it applied the
//! end; [`expired_holder_stopped`] says when the next lease may be granted: once it reports
//! the run ended, or once its ping lease has surely run out.
//!
//! [`since_change_ms`]: RedisTimeline::since_change_ms

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::RedisAuthority;
use crate::ids::{Epoch, LogIndex, NodeId};

/// When this node learnt about the current Redis decisions, on its monotonic clock.
#[derive(Clone, Debug)]
pub struct RedisTimeline {
    started_ms: u64,
    observed: bool,
    /// Epoch of the last change, when this node learnt it, and whether it was already
    /// committed when the agent started.
    change: Option<(Epoch, u64, bool)>,
    suspect: Option<SuspectClock>,
}

#[derive(Clone, Debug)]
struct SuspectClock {
    index: LogIndex,
    /// Per node: when this node learnt that the node had applied the suspicion.
    applied_at: BTreeMap<NodeId, u64>,
}

impl RedisTimeline {
    /// A timeline for an agent that started at `started_ms`.
    pub fn new(started_ms: u64) -> Self {
        RedisTimeline {
            started_ms,
            observed: false,
            change: None,
            suspect: None,
        }
    }

    /// Records what is known at `now_ms`: the authority applied here (`me` applied it) and
    /// every peer's latest reported applied index.
    pub fn observe(
        &mut self,
        me: NodeId,
        authority: &RedisAuthority,
        peer_applied: &BTreeMap<NodeId, u64>,
        now_ms: u64,
    ) {
        if authority.last_change.is_some()
            && self.change.is_none_or(|(e, _, _)| e != authority.epoch)
        {
            self.change = Some((authority.epoch, now_ms, !self.observed));
        }
        self.observed = true;
        match &authority.suspect {
            None => self.suspect = None,
            Some(s) => {
                if self.suspect.as_ref().is_none_or(|c| c.index != s.index) {
                    self.suspect = Some(SuspectClock {
                        index: s.index,
                        applied_at: BTreeMap::new(),
                    });
                }
                if let Some(c) = &mut self.suspect {
                    c.applied_at.entry(me).or_insert(now_ms);
                    for (&peer, &applied) in peer_applied {
                        if applied >= c.index.0 {
                            c.applied_at.entry(peer).or_insert(now_ms);
                        }
                    }
                }
            }
        }
    }

    /// Time since this node applied the last change of master; `None` when no change was ever
    /// committed. For a change committed before this agent started, `wall_age_ms` (this
    /// node's wall clock minus the change's) when known, else the uptime.
    pub fn since_change_ms(&self, now_ms: u64, wall_age_ms: Option<u64>) -> Option<u64> {
        let (_, at, before_start) = self.change?;
        let uptime = now_ms.saturating_sub(self.started_ms);
        if before_start {
            return Some(wall_age_ms.unwrap_or(uptime).max(uptime));
        }
        Some(now_ms.saturating_sub(at.max(self.started_ms)))
    }

    /// Time since a quorum of `quorum` nodes is known here to have applied the current
    /// suspicion; `None` without a suspicion or before a quorum is known.
    pub fn suspect_embargo_ms(&self, quorum: usize, now_ms: u64) -> Option<u64> {
        let c = self.suspect.as_ref()?;
        let mut times: Vec<u64> = c.applied_at.values().copied().collect();
        times.sort_unstable();
        let at = *times.get(quorum.checked_sub(1)?)?;
        Some(now_ms.saturating_sub(at))
    }
}

/// Time since the suspected master's lease was last renewed, as its peers' reports bound it:
/// `None` unless every other member's latest report shows the suspicion applied (from then on
/// that agent answers none of the suspect's pings, so the pong date in the same report is its
/// last) and dates its last pong to the suspect. The lease needs a pong from some peer, so it
/// was last renewed at the latest of those dates (each dated late: see
/// `HealthStore::set_pongs`).
///
/// This is what lets a cut-off master be replaced soon after the cut: its peers stopped
/// answering it when the network did, long before they suspected it. The quorum rule of
/// [`RedisTimeline::suspect_embargo_ms`] counts only from the suspicion.
pub fn suspect_lease_age_ms(
    members: &[NodeId],
    authority: &RedisAuthority,
    applied: &BTreeMap<NodeId, u64>,
    pongs: &BTreeMap<NodeId, BTreeMap<NodeId, u64>>,
    now_ms: u64,
) -> Option<u64> {
    let suspect = authority.suspect.as_ref()?;
    unanswered_since(
        members,
        suspect.node,
        suspect.index.0,
        applied,
        pongs,
        now_ms,
    )
}

/// How long no other member has answered `node`'s lease pings, once every other member
/// reported that it applied the entry at `index` (from which on it answers `node` no more, so
/// its last answer is final); `None` until then, or when one has not reported its pongs.
pub fn unanswered_since(
    members: &[NodeId],
    node: NodeId,
    index: u64,
    applied: &BTreeMap<NodeId, u64>,
    pongs: &BTreeMap<NodeId, BTreeMap<NodeId, u64>>,
    now_ms: u64,
) -> Option<u64> {
    let mut last = 0u64;
    for &m in members.iter().filter(|&&m| m != node) {
        if applied.get(&m).is_none_or(|&a| a < index) {
            return None;
        }
        let at = pongs.get(&m)?.get(&node)?;
        last = last.max(*at);
    }
    Some(now_ms.saturating_sub(last))
}

/// After the lease of `node` expired at log index `end`: whether what it ran under that lease
/// (`what`: "backup b3", "remediation r4") surely stopped, or why that is not known yet. It
/// stopped when `node` applied the end and reports nothing of that lease running (`running`),
/// or when nobody has answered its pings for longer than `lease_ms` (its ping lease and the
/// clock margin) since every other member applied the end: its runner needs that lease to go
/// on. The backup and remediation leases share it.
#[allow(clippy::too_many_arguments)]
pub fn expired_holder_stopped(
    members: &[NodeId],
    node: NodeId,
    what: &str,
    end: u64,
    running: bool,
    applied: &BTreeMap<NodeId, u64>,
    pongs: &BTreeMap<NodeId, BTreeMap<NodeId, u64>>,
    now_ms: u64,
    lease_ms: u64,
) -> Result<(), String> {
    let caught_up = applied.get(&node).is_some_and(|a| *a >= end);
    if caught_up && !running {
        return Ok(());
    }
    match unanswered_since(members, node, end, applied, pongs, now_ms) {
        Some(q) if q > lease_ms => Ok(()),
        Some(q) => Err(format!(
            "{node}'s expired {what} may still run: nobody has answered its pings for {q} ms, \
             its lease lasts {lease_ms} ms"
        )),
        None => Err(format!(
            "{node}'s expired {what} may still run: waiting for {node} or every other agent \
             to apply its end"
        )),
    }
}

/// The ping embargo after a lease of `holder` expired at log index `end`: `me` does not
/// answer the holder's pings until its report shows it applied the end (so its runner, which
/// needs its ping lease, stops). Never `me` itself.
pub fn expired_holder_embargo(
    me: NodeId,
    expired: Option<(NodeId, u64)>,
    applied: &BTreeMap<NodeId, u64>,
) -> BTreeSet<NodeId> {
    match expired {
        Some((node, end)) if node != me && applied.get(&node).is_none_or(|a| *a < end) => {
            BTreeSet::from([node])
        }
        _ => BTreeSet::new(),
    }
}

/// The peers whose pings this node must not answer; see the module docs.
pub fn embargo(
    me: NodeId,
    members: &[NodeId],
    authority: &RedisAuthority,
    peer_applied: &BTreeMap<NodeId, u64>,
) -> BTreeSet<NodeId> {
    let newest = [
        authority.last_change.as_ref().map(|c| c.index),
        authority.suspect.as_ref().map(|s| s.index),
    ]
    .into_iter()
    .flatten()
    .max();
    members
        .iter()
        .copied()
        .filter(|&m| m != me)
        .filter(|m| {
            let suspected = authority.suspect.as_ref().is_some_and(|s| s.node == *m);
            let behind = newest.is_some_and(|n| peer_applied.get(m).is_none_or(|&a| a < n.0));
            suspected || behind
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ChangeKind, MasterChange, Suspect};
    use crate::ids::UnixMillis;

    fn authority(change_index: Option<u64>, suspect: Option<(u64, u64)>) -> RedisAuthority {
        RedisAuthority {
            master: Some(NodeId(1)),
            epoch: Epoch(change_index.map_or(0, |_| 1)),
            suspect: suspect.map(|(node, index)| Suspect {
                node: NodeId(node),
                epoch: Epoch(1),
                index: LogIndex(index),
                reason: String::new(),
            }),
            last_change: change_index.map(|i| MasterChange {
                kind: ChangeKind::Initial,
                from: None,
                to: NodeId(1),
                epoch: Epoch(1),
                index: LogIndex(i),
                term: Default::default(),
                at: UnixMillis(0),
                reason: String::new(),
            }),
        }
    }

    fn applied(pairs: &[(u64, u64)]) -> BTreeMap<NodeId, u64> {
        pairs.iter().map(|&(n, a)| (NodeId(n), a)).collect()
    }

    #[test]
    fn embargo_covers_the_suspect_and_peers_behind_the_newest_decision() {
        let members = [NodeId(1), NodeId(2), NodeId(3)];
        let me = NodeId(2);
        let ids = |s: BTreeSet<NodeId>| s.into_iter().map(|n| n.0).collect::<Vec<_>>();
        // Nothing decided yet: nobody is embargoed, even without reports.
        assert!(embargo(me, &members, &authority(None, None), &applied(&[])).is_empty());
        // Change at 10: n3 reported 12 (fine), n1 reported 9 (behind).
        let a = authority(Some(10), None);
        assert_eq!(
            ids(embargo(me, &members, &a, &applied(&[(1, 9), (3, 12)]))),
            [1]
        );
        // Never reported: embargoed.
        assert_eq!(ids(embargo(me, &members, &a, &applied(&[(1, 10)]))), [3]);
        // Suspicion of n1 at 20: n1 is embargoed whatever it applied; n3 behind 20 too.
        let a = authority(Some(10), Some((1, 20)));
        assert_eq!(
            ids(embargo(me, &members, &a, &applied(&[(1, 25), (3, 19)]))),
            [1, 3]
        );
    }

    #[test]
    fn suspect_clock_needs_a_quorum_and_counts_from_the_quorum() {
        let mut t = RedisTimeline::new(0);
        let a = authority(Some(10), Some((1, 20)));
        t.observe(NodeId(2), &a, &applied(&[(3, 15)]), 1000);
        // Only this node applied it: no quorum yet.
        assert_eq!(t.suspect_embargo_ms(2, 1500), None);
        t.observe(NodeId(2), &a, &applied(&[(3, 20)]), 1800);
        assert_eq!(t.suspect_embargo_ms(2, 2000), Some(200));
        // The old master reporting later does not move the time.
        t.observe(NodeId(2), &a, &applied(&[(1, 30), (3, 20)]), 2500);
        assert_eq!(t.suspect_embargo_ms(2, 3000), Some(1200));
        // Cleared: no clock.
        t.observe(NodeId(2), &authority(Some(10), None), &applied(&[]), 3100);
        assert_eq!(t.suspect_embargo_ms(2, 3200), None);
    }

    #[test]
    fn suspect_lease_age_counts_from_the_last_pong_of_agents_that_applied_the_suspicion() {
        let members = [NodeId(1), NodeId(2), NodeId(3)];
        let a = authority(Some(10), Some((1, 20)));
        let pongs = |list: &[(u64, u64, u64)]| {
            let mut m: BTreeMap<NodeId, BTreeMap<NodeId, u64>> = BTreeMap::new();
            for &(observer, peer, at) in list {
                m.entry(NodeId(observer))
                    .or_default()
                    .insert(NodeId(peer), at);
            }
            m
        };
        let both = pongs(&[(2, 1, 1000), (3, 1, 1400), (2, 3, 4900)]);
        // Every other member applied it: the lease was last renewed at the latest pong.
        assert_eq!(
            suspect_lease_age_ms(&members, &a, &applied(&[(2, 20), (3, 21)]), &both, 5000),
            Some(3600)
        );
        // The suspect's own report does not matter.
        assert_eq!(
            suspect_lease_age_ms(
                &members,
                &a,
                &applied(&[(1, 5), (2, 20), (3, 20)]),
                &both,
                5000
            ),
            Some(3600)
        );
        // One of them has not applied it (it may still answer): unknown.
        assert_eq!(
            suspect_lease_age_ms(&members, &a, &applied(&[(2, 20), (3, 19)]), &both, 5000),
            None
        );
        // One of them never dated its pongs to the suspect: unknown.
        let partial = pongs(&[(2, 1, 1000)]);
        assert_eq!(
            suspect_lease_age_ms(&members, &a, &applied(&[(2, 20), (3, 20)]), &partial, 5000),
            None
        );
        // No suspicion: nothing to count.
        assert_eq!(
            suspect_lease_age_ms(
                &members,
                &authority(Some(10), None),
                &applied(&[(2, 20), (3, 20)]),
                &both,
                5000
            ),
            None
        );
    }

    #[test]
    fn since_change_counts_on_this_clock_or_from_the_wall_clock_after_a_restart() {
        let mut t = RedisTimeline::new(5000);
        assert_eq!(t.since_change_ms(6000, None), None);
        // Nothing committed at start; a change applied later counts on the monotonic clock.
        t.observe(NodeId(1), &authority(None, None), &applied(&[]), 5000);
        t.observe(NodeId(1), &authority(Some(10), None), &applied(&[]), 5001);
        assert_eq!(t.since_change_ms(9001, Some(99_999)), Some(4000));
        // A change already committed at start: its wall-clock age, at least the uptime.
        let mut t = RedisTimeline::new(5000);
        t.observe(NodeId(1), &authority(Some(10), None), &applied(&[]), 5000);
        assert_eq!(t.since_change_ms(6000, Some(60_000)), Some(60_000));
        assert_eq!(t.since_change_ms(6000, None), Some(1000));
        // A skewed clock saying "in the future" does not shorten it below the uptime.
        assert_eq!(t.since_change_ms(6000, Some(0)), Some(1000));
    }

    #[test]
    fn an_expired_holder_is_embargoed_until_it_applied_the_end_and_stopped_once_known() {
        let members = [NodeId(1), NodeId(2), NodeId(3)];
        let me = NodeId(1);
        // n3 held a lease that ended at index 40.
        let expired = Some((NodeId(3), 40));
        assert_eq!(
            expired_holder_embargo(me, expired, &applied(&[(3, 39)])),
            BTreeSet::from([NodeId(3)])
        );
        assert!(expired_holder_embargo(me, expired, &applied(&[(3, 40)])).is_empty());
        assert!(
            expired_holder_embargo(NodeId(3), expired, &applied(&[])).is_empty(),
            "never itself"
        );
        assert!(expired_holder_embargo(me, None, &applied(&[])).is_empty());

        let pongs: BTreeMap<NodeId, BTreeMap<NodeId, u64>> = [
            (NodeId(1), BTreeMap::from([(NodeId(3), 1000)])),
            (NodeId(2), BTreeMap::from([(NodeId(3), 1500)])),
        ]
        .into_iter()
        .collect();
        let stopped = |running, applied: &BTreeMap<NodeId, u64>, now| {
            expired_holder_stopped(
                &members,
                NodeId(3),
                "backup b5",
                40,
                running,
                applied,
                &pongs,
                now,
                4000,
            )
        };
        // It applied the end and runs nothing of that lease.
        assert_eq!(
            stopped(false, &applied(&[(1, 40), (2, 40), (3, 41)]), 2000),
            Ok(())
        );
        // Still running, or silent: its ping lease must run out after the last pong (1500).
        let behind = applied(&[(1, 40), (2, 40)]);
        assert_eq!(
            stopped(false, &behind, 5000),
            Err(
                "n3's expired backup b5 may still run: nobody has answered its pings for \
                 3500 ms, its lease lasts 4000 ms"
                    .into()
            )
        );
        assert_eq!(stopped(true, &behind, 5501), Ok(()));
        // Until every other member applied the end, their last pong is not final.
        assert_eq!(
            stopped(false, &applied(&[(1, 40)]), 60_000),
            Err(
                "n3's expired backup b5 may still run: waiting for n3 or every other agent \
                 to apply its end"
                    .into()
            )
        );
    }
}
