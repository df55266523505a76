//! Table tests of the local Galera recovery planner.

use super::*;
use crate::cluster::{BootstrapKind, GaleraBootstrap, GaleraOutage, OutageMark};
use crate::ids::{Term, UnixMillis};

const UUID: &str = "9eaceb67-efac-11f1-b809-474591e831a5";

fn settings() -> RecoverySettings {
    RecoverySettings {
        rejoin: true,
        backoff_ms: 5_000,
        max_per_hour: 3,
        restart_non_primary_after_ms: 60_000,
        unit_recovers: false,
    }
}

fn mark(i: u64) -> OutageMark {
    OutageMark {
        index: LogIndex(i),
        term: Term(1),
        at: UnixMillis(0),
        reason: "test".into(),
    }
}

/// The target: no outage, an open undecided outage 1, or outage 1 bootstrapping `node`.
fn target(outage: Option<Option<(u64, BootstrapMode)>>, maintenance: bool) -> GaleraTarget {
    let authority = GaleraAuthority {
        outage: outage.map(|b| GaleraOutage {
            number: OutageId(1),
            opened: mark(10),
            bootstrap: b.map(|(node, mode)| GaleraBootstrap {
                node: NodeId(node),
                uuid: Some(UUID.into()),
                seqno: Some(40),
                mode,
                kind: BootstrapKind::Automatic,
                by: String::new(),
                reason: "test".into(),
                evidence: String::new(),
                index: LogIndex(11),
                term: Term(1),
                at: UnixMillis(0),
            }),
            ended: None,
        }),
    };
    GaleraTarget {
        authority,
        maintenance,
        evicted: Default::default(),
    }
}

/// The same target with its outage ended.
fn ended(mut t: GaleraTarget) -> GaleraTarget {
    if let Some(o) = t.authority.outage.as_mut() {
        o.ended = Some(mark(12));
    }
    t
}

fn grastate(seqno: Option<i64>, safe: bool) -> GrastateEvidence {
    GrastateEvidence::Present {
        uuid: Some(UUID.into()),
        seqno,
        safe_to_bootstrap: safe,
    }
}

fn facts(process: ProcessState, primary: bool, peers: &[(u64, u64)]) -> LocalFacts {
    LocalFacts {
        now_ms: 1_000_000,
        process,
        primary,
        synced: primary,
        grastate: grastate(None, false),
        peers_primary: peers.iter().map(|&(n, s)| (NodeId(n), s)).collect(),
        // Checked just now: after any stop the planner saw.
        peers_primary_age_ms: peers.iter().map(|&(n, _)| (NodeId(n), 0)).collect(),
        // Both peers of n3 checked just now.
        peers_checked_age_ms: [(NodeId(1), 0), (NodeId(2), 0)].into(),
        peers_position: BTreeMap::new(),
        own_position: None,
    }
}

use ProcessState::{Running, Stopped, Unknown};

/// What a step is, in one word, for the table.
fn kind(s: &Step) -> String {
    match s {
        Step::Idle { .. } => "idle".into(),
        Step::Recover { .. } => "recover".into(),
        Step::Start {
            kind: StartKind::Join,
            position,
            ..
        } => format!("join {}", position.as_deref().unwrap_or("-")),
        Step::Start {
            kind: StartKind::NewCluster,
            position,
            ..
        } => format!("new-cluster {}", position.as_deref().unwrap_or("-")),
        Step::PcBootstrap { .. } => "pc-bootstrap".into(),
        Step::Stop { .. } => "stop".into(),
    }
}

#[test]
fn planner_table() {
    let me = NodeId(3);
    let pos = |s: i64| format!("{UUID}:{s}");
    let recovered = |s: i64| GaleraPosition {
        uuid: Some(UUID.into()),
        seqno: Some(s),
    };
    type Case = (
        &'static str,
        Option<GaleraTarget>,
        LocalFacts,
        Option<GaleraPosition>,
        String,
        &'static str,
    );
    let mut clean = facts(Stopped, false, &[(1, 2)]);
    let mut counted = facts(Stopped, false, &[(1, 3), (2, 3)]);
    counted.grastate = grastate(Some(77), false);
    clean.grastate = grastate(Some(77), false);
    let mut no_grastate = facts(Stopped, false, &[(1, 2), (2, 2)]);
    no_grastate.grastate = GrastateEvidence::Missing;
    let cases: Vec<Case> = vec![
        (
            "nothing committed yet",
            None,
            facts(Stopped, false, &[(1, 2)]),
            None,
            "idle".into(),
            "no committed state",
        ),
        (
            "maintenance holds a rejoin",
            Some(target(None, true)),
            facts(Stopped, false, &[(1, 2)]),
            None,
            "idle".into(),
            "maintenance",
        ),
        (
            "unknown state: nothing",
            Some(target(None, false)),
            facts(Unknown, false, &[(1, 2)]),
            None,
            "idle".into(),
            "unknown",
        ),
        (
            "healthy",
            Some(target(None, false)),
            facts(Running, true, &[(1, 3), (2, 3)]),
            None,
            "idle".into(),
            "Primary and Synced",
        ),
        (
            "crashed while peers are Primary: recover first",
            Some(target(None, false)),
            facts(Stopped, false, &[(1, 2), (2, 2)]),
            None,
            "recover".into(),
            "rejoin",
        ),
        (
            "crashed, position recovered: join from it",
            Some(target(None, false)),
            facts(Stopped, false, &[(1, 2), (2, 2)]),
            Some(recovered(41)),
            format!("join {}", pos(41)),
            "rejoining",
        ),
        (
            "clean stop: grastate's position, no recovery",
            Some(target(None, false)),
            clean,
            None,
            format!("join {}", pos(77)),
            "rejoining",
        ),
        (
            "stopped, the Primary still counts this node: wait for its eviction",
            Some(target(None, false)),
            counted,
            None,
            "idle".into(),
            "dropped this node's old process",
        ),
        (
            "no grastate: join by full transfer",
            Some(target(None, false)),
            no_grastate,
            None,
            "join -".into(),
            "rejoining",
        ),
        (
            "stopped, a peer Primary alone that nobody committed: not joined",
            Some(target(None, false)),
            facts(Stopped, false, &[(1, 1)]),
            Some(recovered(40)),
            "idle".into(),
            "not joined automatically",
        ),
        (
            "stopped, the committed bootstrap node Primary alone (outage ended): rejoin it",
            Some(ended(target(
                Some(Some((1, BootstrapMode::NewCluster))),
                false,
            ))),
            facts(Stopped, false, &[(1, 1)]),
            Some(recovered(40)),
            format!("join {}", pos(40)),
            "rejoining",
        ),
        (
            "stopped, no peer seen: its position is found for the evidence",
            Some(target(None, false)),
            facts(Stopped, false, &[]),
            None,
            "recover".into(),
            "no Primary component seen elsewhere",
        ),
        (
            "stopped, no peer seen, position known: not restarted",
            Some(target(None, false)),
            facts(Stopped, false, &[]),
            Some(recovered(40)),
            "idle".into(),
            "full outage is the leader's decision",
        ),
        (
            "non-Primary while peers Primary: left alone at first",
            Some(target(None, false)),
            facts(Running, false, &[(1, 2), (2, 2)]),
            None,
            "idle".into(),
            "restart in 60s",
        ),
        (
            "open outage, undecided, crashed: recover for the evidence",
            Some(target(Some(None), false)),
            facts(Stopped, false, &[]),
            None,
            "recover".into(),
            "outage 1 open",
        ),
        (
            "open outage, undecided, recovered: wait",
            Some(target(Some(None), false)),
            facts(Stopped, false, &[]),
            Some(recovered(40)),
            "idle".into(),
            "waiting for the leader",
        ),
        (
            "open outage: no rejoin even with a Primary peer",
            Some(target(Some(None), false)),
            facts(Stopped, false, &[(1, 1)]),
            Some(recovered(40)),
            "idle".into(),
            "waiting for the leader",
        ),
        (
            "decided here, stopped: new cluster from the position",
            Some(target(Some(Some((3, BootstrapMode::NewCluster))), false)),
            facts(Stopped, false, &[]),
            Some(recovered(40)),
            format!("new-cluster {}", pos(40)),
            "committed bootstrap of this node",
        ),
        (
            "decided here, not recovered yet: recover first",
            Some(target(Some(Some((3, BootstrapMode::NewCluster))), false)),
            facts(Stopped, false, &[]),
            None,
            "recover".into(),
            "bootstrap of this node",
        ),
        (
            "decided here by pc.bootstrap, running non-Primary",
            Some(target(Some(Some((3, BootstrapMode::PcBootstrap))), false)),
            facts(Running, false, &[]),
            None,
            "pc-bootstrap".into(),
            "pc.bootstrap",
        ),
        (
            "decided here as new cluster but running: an operator's call",
            Some(target(Some(Some((3, BootstrapMode::NewCluster))), false)),
            facts(Running, false, &[]),
            None,
            "idle".into(),
            "runs non-Primary",
        ),
        (
            "decided here as new cluster, running non-Primary past the decided seqno: it was \
             bootstrapped (this agent restarted since) and fell",
            Some(target(Some(Some((3, BootstrapMode::NewCluster))), false)),
            LocalFacts {
                own_position: Some(GaleraPosition {
                    uuid: Some(UUID.into()),
                    seqno: Some(41),
                }),
                ..facts(Running, false, &[])
            },
            None,
            "idle".into(),
            "so it was bootstrapped",
        ),
        (
            "decided here as new cluster, running non-Primary at the decided seqno: an \
             operator's call",
            Some(target(Some(Some((3, BootstrapMode::NewCluster))), false)),
            LocalFacts {
                own_position: Some(GaleraPosition {
                    uuid: Some(UUID.into()),
                    seqno: Some(40),
                }),
                ..facts(Running, false, &[])
            },
            None,
            "idle".into(),
            "runs non-Primary: stop it",
        ),
        (
            "decided elsewhere, bootstrap node not Primary yet: wait",
            Some(target(Some(Some((1, BootstrapMode::NewCluster))), false)),
            facts(Stopped, false, &[(2, 1)]),
            Some(recovered(38)),
            "idle".into(),
            "waiting for n1",
        ),
        (
            "decided elsewhere, bootstrap node Primary (size 1): join",
            Some(target(Some(Some((1, BootstrapMode::NewCluster))), false)),
            facts(Stopped, false, &[(1, 1)]),
            Some(recovered(38)),
            format!("join {}", pos(38)),
            "n1 is Primary",
        ),
        (
            "decided elsewhere, running: Galera joins it",
            Some(target(Some(Some((1, BootstrapMode::PcBootstrap))), false)),
            facts(Running, false, &[]),
            None,
            "idle".into(),
            "Galera joins this running node",
        ),
        (
            "decided, maintenance: nothing",
            Some(target(Some(Some((3, BootstrapMode::NewCluster))), true)),
            facts(Stopped, false, &[]),
            Some(recovered(40)),
            "idle".into(),
            "maintenance",
        ),
    ];
    for (name, target, f, rec, want, why) in cases {
        let mut r = GaleraRecovery::new(me, 3, settings());
        if let Some(p) = rec {
            r.recovered(p);
        }
        let step = r.next(target.as_ref(), &f);
        assert_eq!(kind(&step), want, "{name}: {step:?}");
        assert!(step.why().contains(why), "{name}: {:?}", step.why());
    }
}

/// Restarts back off (doubling) and stop at the hourly cap; a Synced node resets the
/// back-off, the cap counts the hour.
#[test]
fn restarts_back_off_and_are_capped_per_hour() {
    let mut r = GaleraRecovery::new(NodeId(3), 3, settings());
    let t = Some(target(None, false));
    let mut f = facts(Stopped, false, &[(1, 2), (2, 2)]);
    f.grastate = grastate(Some(5), false);
    let mut at = |r: &mut GaleraRecovery, now: u64| {
        f.now_ms = now;
        r.next(t.as_ref(), &f)
    };
    let s = at(&mut r, 0);
    assert_eq!(kind(&s), format!("join {UUID}:5"));
    r.started(&s, 0);
    // Second restart: 5 s back-off.
    assert!(
        at(&mut r, 4_000).why().contains("backing off"),
        "{:?}",
        r.last
    );
    let s = at(&mut r, 5_000);
    assert!(s.is_action(), "{s:?}");
    r.started(&s, 5_000);
    // Third: 10 s.
    assert!(at(&mut r, 14_000).why().contains("backing off"));
    let s = at(&mut r, 15_000);
    assert!(s.is_action(), "{s:?}");
    r.started(&s, 15_000);
    // Cap (3 per hour) reached: held, whatever the back-off.
    let s = at(&mut r, 600_000);
    assert!(s.why().contains("restart cap reached"), "{s:?}");
    assert!(r.view(600_000).capped);
    // An hour after the first restart, one slot is free again.
    let s = at(&mut r, HOUR_MS + 1);
    assert!(s.is_action(), "{s:?}");
    assert_eq!(r.view(HOUR_MS + 1).restarts_total, 3);
}

/// A bootstrap is carried out once per committed decision: after the start, the node is not
/// started as a new cluster again while it runs, and a pc.bootstrap is not repeated.
#[test]
fn a_bootstrap_is_carried_out_once_per_decision() {
    let mut r = GaleraRecovery::new(NodeId(3), 3, settings());
    let t = Some(target(Some(Some((3, BootstrapMode::PcBootstrap))), false));
    let f = facts(Running, false, &[]);
    let s = r.next(t.as_ref(), &f);
    assert_eq!(kind(&s), "pc-bootstrap");
    r.started(&s, f.now_ms);
    let s = r.next(t.as_ref(), &f);
    assert_eq!(kind(&s), "idle", "{s:?}");
    assert!(s.why().contains("under way"), "{s:?}");
    assert_eq!(r.view(0).bootstrapped, Some(OutageId(1)));
}

/// A node stuck non-Primary while its peers are Primary is stopped only after the configured
/// time, and the timer restarts when it becomes Primary.
#[test]
fn a_stuck_non_primary_node_is_stopped_after_the_configured_time() {
    let mut r = GaleraRecovery::new(NodeId(3), 3, settings());
    let t = Some(target(None, false));
    let mut f = facts(Running, false, &[(1, 2), (2, 2)]);
    f.now_ms = 0;
    assert_eq!(kind(&r.next(t.as_ref(), &f)), "idle");
    f.now_ms = 59_000;
    assert_eq!(kind(&r.next(t.as_ref(), &f)), "idle");
    // Primary for a moment: the wait starts over.
    f.primary = true;
    f.now_ms = 59_500;
    assert_eq!(kind(&r.next(t.as_ref(), &f)), "idle");
    f.primary = false;
    f.now_ms = 60_000;
    assert_eq!(kind(&r.next(t.as_ref(), &f)), "idle");
    f.now_ms = 120_000;
    let s = r.next(t.as_ref(), &f);
    assert_eq!(kind(&s), "stop", "{s:?}");
    // Peers not Primary (a cut): never stopped.
    let mut r = GaleraRecovery::new(NodeId(3), 3, settings());
    let mut f = facts(Running, false, &[]);
    f.now_ms = 0;
    r.next(t.as_ref(), &f);
    f.now_ms = 10 * HOUR_MS;
    assert_eq!(kind(&r.next(t.as_ref(), &f)), "idle");
}

/// All three died together: this agent's checks of its peers from before the stop still say
/// Primary. They do not count; a check made after the stop does.
#[test]
fn checks_older_than_the_stop_do_not_count() {
    let mut r = GaleraRecovery::new(NodeId(3), 3, settings());
    let t = Some(target(None, false));
    let mut f = facts(Stopped, false, &[(1, 2), (2, 2)]);
    f.grastate = grastate(Some(5), false);
    f.now_ms = 10_000;
    f.peers_primary_age_ms = [(NodeId(1), 800), (NodeId(2), 900)].into();
    let s = r.next(t.as_ref(), &f);
    assert_eq!(kind(&s), "idle", "{s:?}");
    f.now_ms = 11_000;
    f.peers_primary_age_ms = [(NodeId(1), 300), (NodeId(2), 1_900)].into();
    let s = r.next(t.as_ref(), &f);
    assert_eq!(kind(&s), format!("join {UUID}:5"), "{s:?}");
}

/// The bootstrap node that stops again during its outage never bootstraps twice: it joins a
/// Primary peer, or waits (the leader opens the next outage if it stays down).
#[test]
fn a_bootstrap_node_that_falls_again_never_bootstraps_twice() {
    let t = Some(target(Some(Some((3, BootstrapMode::NewCluster))), false));
    let mut r = GaleraRecovery::new(NodeId(3), 3, settings());
    let mut f = facts(Stopped, false, &[]);
    f.grastate = grastate(Some(40), true);
    let s = r.next(t.as_ref(), &f);
    assert_eq!(kind(&s), format!("new-cluster {UUID}:40"));
    r.started(&s, f.now_ms);
    // It ran, its peers joined, it fell: the peers are Primary, it joins them.
    f.now_ms += 60_000;
    f.peers_primary = [(NodeId(1), 2)].into();
    f.peers_primary_age_ms = [(NodeId(1), 0)].into();
    let s = r.next(t.as_ref(), &f);
    assert_eq!(kind(&s), format!("join {UUID}:40"), "{s:?}");
    // No Primary anywhere: no second bootstrap.
    let mut r2 = GaleraRecovery::new(NodeId(3), 3, settings());
    let mut g = facts(Stopped, false, &[]);
    g.grastate = grastate(Some(40), true);
    let s = r2.next(t.as_ref(), &g);
    r2.started(&s, g.now_ms);
    g.now_ms += 60_000;
    let s = r2.next(t.as_ref(), &g);
    assert_eq!(kind(&s), "idle", "{s:?}");
    assert!(s.why().contains("no second bootstrap"), "{s:?}");
}

/// A bootstrap waits until this agent has checked every peer since its node was seen stopped
/// (an agent restarted during an outage knows nothing of its peers yet), and then joins a
/// peer that turns out Primary instead.
#[test]
fn a_bootstrap_waits_for_a_check_of_every_peer_since_the_stop() {
    let t = Some(target(Some(Some((3, BootstrapMode::NewCluster))), false));
    let mut r = GaleraRecovery::new(NodeId(3), 3, settings());
    let mut f = facts(Stopped, false, &[]);
    f.grastate = grastate(Some(40), true);
    f.now_ms = 5_000;
    // First cycle: n1 checked 300 ms ago (before this planner saw the stop), n2 never.
    f.peers_checked_age_ms = [(NodeId(1), 300)].into();
    let s = r.next(t.as_ref(), &f);
    assert_eq!(kind(&s), "idle", "{s:?}");
    assert!(s.why().contains("0 of 2"), "{s:?}");
    // n1 checked again since; n2 still not.
    f.now_ms = 5_500;
    f.peers_checked_age_ms = [(NodeId(1), 100)].into();
    let s = r.next(t.as_ref(), &f);
    assert!(s.why().contains("1 of 2"), "{s:?}");
    // Both checked since the stop, neither Primary: the bootstrap goes ahead.
    f.now_ms = 6_000;
    f.peers_checked_age_ms = [(NodeId(1), 100), (NodeId(2), 200)].into();
    let s = r.next(t.as_ref(), &f);
    assert_eq!(kind(&s), format!("new-cluster {UUID}:40"), "{s:?}");
    // Had n2 been Primary, it would have joined it.
    let mut r = GaleraRecovery::new(NodeId(3), 3, settings());
    f.peers_primary = [(NodeId(2), 1)].into();
    f.peers_primary_age_ms = [(NodeId(2), 0)].into();
    let s = r.next(t.as_ref(), &f);
    assert_eq!(kind(&s), format!("join {UUID}:40"), "{s:?}");
}

/// An agent that bootstrapped its node, then restarted (forgetting it) while its node ran on
/// and fell again, does not bootstrap the same outage from the position the node has now:
/// it says so (as carried out) and the leader decides the next outage afresh.
#[test]
fn a_bootstrap_only_starts_from_the_decided_position() {
    let t = Some(target(Some(Some((3, BootstrapMode::NewCluster))), false));
    // The decision says 40; the node is at 57 after running as the new cluster.
    let mut r = GaleraRecovery::new(NodeId(3), 3, settings());
    let mut f = facts(Stopped, false, &[]);
    f.grastate = grastate(Some(57), false);
    let s = r.next(t.as_ref(), &f);
    assert_eq!(kind(&s), "idle", "{s:?}");
    assert!(s.why().contains("ran since the decision"), "{s:?}");
    assert_eq!(r.view(f.now_ms).bootstrapped, Some(OutageId(1)));
    // The same after a crash: the recovered position decides.
    let mut r = GaleraRecovery::new(NodeId(3), 3, settings());
    f.grastate = grastate(None, false);
    let s = r.next(t.as_ref(), &f);
    assert_eq!(kind(&s), "recover", "{s:?}");
    r.recovered(GaleraPosition {
        uuid: Some(UUID.into()),
        seqno: Some(41),
    });
    let s = r.next(t.as_ref(), &f);
    assert_eq!(kind(&s), "idle", "{s:?}");
    // Another history altogether: no.
    let mut r = GaleraRecovery::new(NodeId(3), 3, settings());
    f.grastate = GrastateEvidence::Present {
        uuid: Some("11111111-efac-11f1-b809-474591e831a5".into()),
        seqno: Some(40),
        safe_to_bootstrap: false,
    };
    assert_eq!(kind(&r.next(t.as_ref(), &f)), "idle");
    // At the decided position: it goes ahead.
    let mut r = GaleraRecovery::new(NodeId(3), 3, settings());
    f.grastate = grastate(Some(40), false);
    let s = r.next(t.as_ref(), &f);
    assert_eq!(kind(&s), format!("new-cluster {UUID}:40"), "{s:?}");
}

/// A timed-out check of a peer is not a check: a hung peer may still be Primary, so the
/// bootstrap keeps waiting for a definite answer from it.
#[test]
fn a_timed_out_check_does_not_count_as_checked() {
    use crate::observation::{CheckResult, FailureKind, Observation, ProbeId, Service, Status};
    let seen = |subject: u64, failure: FailureKind| {
        let last = CheckResult::unreachable(failure, "x");
        Seen {
            observer: NodeId(3),
            observation: std::sync::Arc::new(Observation {
                id: ProbeId {
                    subject: NodeId(subject),
                    service: Service::Mariadb,
                    target: String::new(),
                },
                status: Status::Unreachable,
                last,
                failures: 1,
                successes: 0,
                latency_us: 0,
                observed_at: UnixMillis(0),
            }),
            age_ms: 100,
        }
    };
    let all = [seen(1, FailureKind::Timeout), seen(2, FailureKind::Refused)];
    let members = [NodeId(1), NodeId(2), NodeId(3)];
    let c = PeerChecks::from_seen(&all, NodeId(3), &members, 5_000);
    assert_eq!(c.checked_age_ms, [(NodeId(2), 100)].into());
}

/// The last node of a cluster whose others stopped cleanly one by one stays Primary of one.
/// A stopped node rejoins it when it is of the same history and at or past this node's
/// position; not when it is behind, of another history, or unknown.
#[test]
fn a_minority_primary_is_joined_only_when_it_holds_everything_this_node_has() {
    let t = Some(target(None, false));
    let at = |uuid: &str, seqno: i64| GaleraPosition {
        uuid: Some(uuid.into()),
        seqno: Some(seqno),
    };
    let other = "11111111-efac-11f1-b809-474591e831a5";
    let cases: Vec<(&str, Option<GaleraPosition>, &str)> = vec![
        ("ahead, same history", Some(at(UUID, 60)), "join"),
        ("level", Some(at(UUID, 50)), "join"),
        ("behind", Some(at(UUID, 49)), "idle"),
        ("another history", Some(at(other, 90)), "idle"),
        ("position unknown", None, "idle"),
    ];
    for (name, peer, want) in cases {
        let mut r = GaleraRecovery::new(NodeId(3), 3, settings());
        let mut f = facts(Stopped, false, &[(1, 1)]);
        f.grastate = grastate(Some(50), false);
        if let Some(p) = peer {
            f.peers_position.insert(NodeId(1), p);
        }
        let s = r.next(t.as_ref(), &f);
        let got = kind(&s);
        assert!(got.starts_with(want), "{name}: {s:?}");
        if want == "join" {
            assert_eq!(got, format!("join {UUID}:50"), "{name}");
        } else {
            assert!(s.why().contains("an operator decides"), "{name}: {s:?}");
        }
    }
}

/// A crashed node's old process stays a member until the survivors' suspect timeout: the
/// rejoin waits until a Primary peer's component no longer counts it, or `EVICT_WAIT_MS`.
#[test]
fn a_rejoin_waits_until_the_old_process_is_dropped() {
    let t = Some(target(None, false));
    let mut r = GaleraRecovery::new(NodeId(3), 3, settings());
    let mut f = facts(Stopped, false, &[(1, 3), (2, 3)]);
    f.grastate = grastate(Some(9), false);
    f.now_ms = 0;
    let s = r.next(t.as_ref(), &f);
    assert_eq!(kind(&s), "idle", "{s:?}");
    assert!(s.why().contains("at most 30s more"), "{s:?}");
    // Dropped (size 2): it rejoins.
    f.now_ms = 5_000;
    f.peers_primary = [(NodeId(1), 2), (NodeId(2), 2)].into();
    assert_eq!(kind(&r.next(t.as_ref(), &f)), format!("join {UUID}:9"));
    // Never dropped: it starts anyway after EVICT_WAIT_MS.
    let mut r = GaleraRecovery::new(NodeId(3), 3, settings());
    f.peers_primary = [(NodeId(1), 3), (NodeId(2), 3)].into();
    f.now_ms = 0;
    assert_eq!(kind(&r.next(t.as_ref(), &f)), "idle");
    f.now_ms = EVICT_WAIT_MS;
    assert_eq!(kind(&r.next(t.as_ref(), &f)), format!("join {UUID}:9"));
}

/// A node whose eviction is still in force rejoins only once it is cleared (a start while
/// the survivors' evict list holds the old UUID hangs in the join), or after `EVICT_WAIT_MS`.
#[test]
fn a_rejoin_waits_until_the_eviction_is_cleared() {
    let mut evicted = target(None, false);
    evicted.evicted = [NodeId(3)].into();
    let cleared = target(None, false);
    let mut r = GaleraRecovery::new(NodeId(3), 3, settings());
    let mut f = facts(Stopped, false, &[(1, 2), (2, 2)]);
    f.grastate = grastate(Some(9), false);
    f.now_ms = 0;
    let s = r.next(Some(&evicted), &f);
    assert_eq!(kind(&s), "idle", "{s:?}");
    assert!(
        s.why()
            .contains("eviction of this node's old process is cleared"),
        "{s:?}"
    );
    f.now_ms = 1_000;
    assert_eq!(kind(&r.next(Some(&cleared), &f)), format!("join {UUID}:9"));
    // Another node's eviction does not hold this one back.
    let mut other = target(None, false);
    other.evicted = [NodeId(2)].into();
    let mut r = GaleraRecovery::new(NodeId(3), 3, settings());
    f.now_ms = 0;
    assert_eq!(kind(&r.next(Some(&other), &f)), format!("join {UUID}:9"));
    // Never cleared: it starts anyway after EVICT_WAIT_MS.
    let mut r = GaleraRecovery::new(NodeId(3), 3, settings());
    assert_eq!(kind(&r.next(Some(&evicted), &f)), "idle");
    f.now_ms = EVICT_WAIT_MS;
    assert_eq!(kind(&r.next(Some(&evicted), &f)), format!("join {UUID}:9"));
}
