//! Data-driven tests of the remediation decision and its evidence.

use std::sync::Arc;

use super::*;
use crate::cluster::{RemedyLease, RemedyRecord};
use crate::ids::{LogIndex, RemedyId, Term};
use crate::observation::{CheckResult, Observation, ProbeId};

const M: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

const SETTINGS: RemedySettings = RemedySettings {
    freshness_ms: 3000,
    per_hour: 3,
    backoff_ms: 10_000,
    max_duration_ms: 30_000,
    restart_phpfpm: true,
    remount: true,
    start_bricks: true,
    restart_glusterd: true,
    ping_lease_ms: 3000,
    clock_margin_ms: 1000,
};

/// The hour starts at 10 000 000 ms.
const NOW: i64 = 10_000_000;

fn record(id: u64, node: u64, ago_ms: i64) -> RemedyRecord {
    record_of(id, node, ago_ms, RemedyAction::RestartPhpfpm)
}

fn record_of(id: u64, node: u64, ago_ms: i64, action: RemedyAction) -> RemedyRecord {
    RemedyRecord {
        id: RemedyId(id),
        node: NodeId(node),
        action,
        target: String::new(),
        granted_at: UnixMillis(NOW - ago_ms),
        ok: Some(true),
        result: String::new(),
        index: LogIndex(id),
    }
}

fn lease(id: u64, node: u64) -> RemedyLease {
    RemedyLease {
        id: RemedyId(id),
        node: NodeId(node),
        action: RemedyAction::RestartPhpfpm,
        target: String::new(),
        max_duration_ms: 30_000,
        index: LogIndex(9),
        term: Term(1),
        at: UnixMillis(NOW),
        reason: String::new(),
    }
}

fn need(nodes: &[u64]) -> BTreeMap<NodeId, Vec<Need>> {
    nodes
        .iter()
        .map(|&n| {
            (
                NodeId(n),
                vec![(
                    RemedyAction::RestartPhpfpm,
                    String::new(),
                    "php-fpm unreachable: refused".into(),
                )],
            )
        })
        .collect()
}

const BRICK: &str = "n2:/bricks/shop";
const MOUNT: &str = "/srv/shop/var";

/// A node's needs past its dead pool (from `needs`): in the evidence's order.
fn more(node: u64, action: RemedyAction) -> (u64, Need) {
    let target = match action {
        RemedyAction::StartBrick => BRICK,
        RemedyAction::Remount => MOUNT,
        RemedyAction::RestartPhpfpm | RemedyAction::RestartGlusterd => "",
    };
    (
        node,
        (
            action,
            target.to_string(),
            format!("{} needed", action.describe()),
        ),
    )
}

struct Case {
    what: &'static str,
    lease: Option<RemedyLease>,
    records: Vec<RemedyRecord>,
    needs: &'static [u64],
    /// Needs after the pools of `needs` (a node that is not in `needs` has only these).
    more: Vec<(u64, Need)>,
    /// The holds, when the case checks them.
    held: Option<Vec<(u64, &'static str)>>,
    runs: Vec<(u64, RemedyRun)>,
    known_ms: Option<u64>,
    backup: Option<u64>,
    outage: bool,
    maintenance: bool,
    stopped: Result<(), String>,
    verdict: &'static str,
}

fn case(what: &'static str, needs: &'static [u64], verdict: &'static str) -> Case {
    Case {
        what,
        lease: None,
        records: vec![],
        needs,
        more: vec![],
        held: None,
        runs: vec![],
        known_ms: None,
        backup: None,
        outage: false,
        maintenance: false,
        stopped: Ok(()),
        verdict,
    }
}

#[test]
fn decisions_table() {
    let run = |id, done, ok| RemedyRun {
        id: RemedyId(id),
        done,
        ok,
        detail: "restarted in 120 ms".into(),
    };
    let cases = vec![
        case("nothing", &[], "no action: nothing to repair"),
        case(
            "one dead pool",
            &[2],
            "remediation r1: restart php-fpm on n2 (php-fpm unreachable: refused)",
        ),
        case(
            "two at once: the first only",
            &[3, 2],
            "remediation r1: restart php-fpm on n2 (php-fpm unreachable: refused)",
        ),
        Case {
            lease: Some(lease(1, 2)),
            runs: vec![(2, run(1, true, true))],
            ..case(
                "done",
                &[2, 3],
                "end remediation r1 (restart php-fpm on n2): done: restarted in 120 ms",
            )
        },
        Case {
            lease: Some(lease(1, 2)),
            runs: vec![(2, run(1, true, false))],
            ..case(
                "failed",
                &[2],
                "end remediation r1 (restart php-fpm on n2): failed: restarted in 120 ms",
            )
        },
        Case {
            lease: Some(lease(1, 2)),
            runs: vec![(2, run(1, false, false))],
            known_ms: Some(29_999),
            ..case(
                "running",
                &[2, 3],
                "waiting: remediation r1 (restart php-fpm on n2) in progress",
            )
        },
        Case {
            lease: Some(lease(1, 2)),
            runs: vec![(2, run(0, true, true))],
            known_ms: Some(30_000),
            ..case(
                "expired (an old run's result does not count)",
                &[2],
                "expire remediation r1 (restart php-fpm on n2): no result from n2 within 30000 ms",
            )
        },
        Case {
            backup: Some(2),
            ..case(
                "the backup holder waits, another goes",
                &[2, 3],
                "remediation r1: restart php-fpm on n3 (php-fpm unreachable: refused)",
            )
        },
        Case {
            backup: Some(2),
            ..case(
                "the backup holder alone",
                &[2],
                "no action: n2: restart php-fpm: n2 holds the backup lease",
            )
        },
        Case {
            outage: true,
            ..case("galera", &[2], "waiting: a Galera outage is open, no remediation starts")
        },
        Case {
            stopped: Err("n1's expired remediation r4 may still run".into()),
            ..case(
                "an expired holder that may still run",
                &[2],
                "waiting: n1's expired remediation r4 may still run",
            )
        },
        Case {
            maintenance: true,
            ..case("maintenance", &[2], "no action: maintenance on, no remediation starts")
        },
        Case {
            records: vec![record(1, 2, 5_000)],
            ..case(
                "back-off after one",
                &[2],
                "no action: n2: restart php-fpm backing off: 1 in the last hour, the next in 5000 ms",
            )
        },
        Case {
            records: vec![record(2, 2, 15_000), record(1, 2, 40_000)],
            ..case(
                "back-off doubles",
                &[2],
                "no action: n2: restart php-fpm backing off: 2 in the last hour, the next in 5000 ms",
            )
        },
        Case {
            records: vec![record(2, 2, 25_000), record(1, 2, 40_000), record(9, 3, 1)],
            ..case(
                "back-off over; another node's records do not count",
                &[2],
                "remediation r1: restart php-fpm on n2 (php-fpm unreachable: refused)",
            )
        },
        Case {
            records: vec![
                record(3, 2, 600_000),
                record(2, 2, 1_200_000),
                record(1, 2, 1_800_000),
            ],
            ..case(
                "capped",
                &[2],
                "no action: n2: restart php-fpm capped: 3 in the last hour (at most 3); it stays \
                 drained until an operator repairs it",
            )
        },
        Case {
            records: vec![
                record(3, 2, 600_000),
                record(2, 2, 1_200_000),
                record(1, 2, 3_600_000),
            ],
            ..case(
                "an hour old does not count",
                &[2],
                "remediation r1: restart php-fpm on n2 (php-fpm unreachable: refused)",
            )
        },
        Case {
            more: vec![more(2, RemedyAction::StartBrick)],
            ..case(
                "a pool before a brick on one node",
                &[2],
                "remediation r1: restart php-fpm on n2 (php-fpm unreachable: refused)",
            )
        },
        Case {
            records: vec![
                record_of(3, 2, 600_000, RemedyAction::StartBrick),
                record_of(2, 2, 1_200_000, RemedyAction::StartBrick),
                record_of(1, 2, 1_800_000, RemedyAction::StartBrick),
            ],
            more: vec![
                more(2, RemedyAction::StartBrick),
                more(2, RemedyAction::Remount),
            ],
            held: Some(vec![(
                2,
                "start brick n2:/bricks/shop capped: 3 in the last hour (at most 3); it waits \
                 for an operator",
            )]),
            ..case(
                "a capped brick start does not hold the node's remount",
                &[],
                "remediation r1: remount /srv/shop/var on n2 (remount needed)",
            )
        },
        Case {
            records: vec![record(1, 2, 5_000)],
            more: vec![more(2, RemedyAction::StartBrick)],
            held: Some(vec![(
                2,
                "restart php-fpm backing off: 1 in the last hour, the next in 5000 ms",
            )]),
            ..case(
                "a pool backing off does not hold the node's brick",
                &[2],
                "remediation r1: start brick n2:/bricks/shop on n2 (start brick needed)",
            )
        },
        Case {
            records: vec![
                record(1, 2, 5_000),
                record_of(2, 2, 1_000, RemedyAction::StartBrick),
            ],
            more: vec![more(2, RemedyAction::StartBrick)],
            held: Some(vec![(
                2,
                "restart php-fpm backing off: 1 in the last hour, the next in 5000 ms; start \
                 brick n2:/bricks/shop backing off: 1 in the last hour, the next in 9000 ms",
            )]),
            ..case(
                "every need of a node held: one line each",
                &[2, 3],
                "remediation r1: restart php-fpm on n3 (php-fpm unreachable: refused)",
            )
        },
        Case {
            records: vec![record_of(1, 2, 5_000, RemedyAction::RestartGlusterd)],
            more: vec![
                more(2, RemedyAction::RestartGlusterd),
                more(2, RemedyAction::Remount),
            ],
            held: Some(vec![(
                2,
                "restart glusterd backing off: 1 in the last hour, the next in 5000 ms; remount \
                 /srv/shop/var waits for restart glusterd on n2",
            )]),
            ..case(
                "a mount waits while its node's glusterd restart is held",
                &[],
                "no action: n2: restart glusterd backing off: 1 in the last hour, the next in \
                 5000 ms; remount /srv/shop/var waits for restart glusterd on n2",
            )
        },
        Case {
            records: vec![record_of(1, 2, 5_000, RemedyAction::Remount)],
            more: vec![more(2, RemedyAction::Remount)],
            // The grant ends the node's turn: its later needs are not looked at.
            held: Some(vec![]),
            ..case(
                "another kind's records do not count against a pool",
                &[2],
                "remediation r1: restart php-fpm on n2 (php-fpm unreachable: refused)",
            )
        },
        Case {
            backup: Some(2),
            more: vec![more(2, RemedyAction::Remount)],
            held: Some(vec![(
                2,
                "restart php-fpm, remount /srv/shop/var: n2 holds the backup lease",
            )]),
            ..case(
                "the backup holder's needs all wait, once said",
                &[2],
                "no action: n2: restart php-fpm, remount /srv/shop/var: n2 holds the backup lease",
            )
        },
    ];
    for c in cases {
        let authority = RemedyAuthority {
            last_id: c.lease.as_ref().map_or(RemedyId(0), |l| l.id),
            lease: c.lease.clone(),
            records: c.records.clone().into(),
        };
        let mut needs = need(c.needs);
        for (n, x) in &c.more {
            needs.entry(NodeId(*n)).or_default().push(x.clone());
        }
        let runs: BTreeMap<NodeId, RemedyRun> = c
            .runs
            .iter()
            .map(|(n, r)| (NodeId(*n), r.clone()))
            .collect();
        let plan = decide(&RemedyInputs {
            members: &M,
            authority: &authority,
            needs: &needs,
            runs: &runs,
            lease_known_ms: c.known_ms,
            now: UnixMillis(NOW),
            backup_holder: c.backup.map(NodeId),
            galera_outage: c.outage,
            maintenance: c.maintenance,
            in_flight: false,
            previous_stopped: c.stopped.clone(),
            settings: SETTINGS,
        });
        assert_eq!(plan.verdict, c.verdict, "{}", c.what);
        assert!(plan.proposals.len() <= 1, "{}", c.what);
        if let Some(held) = &c.held {
            let want: BTreeMap<NodeId, String> = held
                .iter()
                .map(|(n, why)| (NodeId(*n), (*why).to_string()))
                .collect();
            assert_eq!(plan.held, want, "{}", c.what);
        }
        // Whatever it proposes applies to the state it decided from.
        let mut state = crate::cluster::ClusterState {
            members: crate::cluster::fixtures::members(3),
            remedy: authority,
            ..Default::default()
        };
        for p in &plan.proposals {
            let out = state.apply(
                crate::cluster::EntryMeta {
                    term: Term(1),
                    index: LogIndex(100),
                    at: UnixMillis(NOW),
                },
                p,
            );
            assert_eq!(out, crate::cluster::Outcome::Changed, "{}", c.what);
        }
    }
}

fn seen(node: u64, service: Service, status: Status, last: CheckResult, age_ms: u64) -> Seen {
    Seen {
        observer: NodeId(node),
        observation: Arc::new(Observation {
            id: ProbeId {
                subject: NodeId(node),
                service,
                target: if service == Service::GlusterMount {
                    "/srv/shop".into()
                } else {
                    String::new()
                },
            },
            status,
            last,
            failures: 2,
            successes: 0,
            latency_us: 0,
            observed_at: UnixMillis(0),
        }),
        age_ms,
    }
}

/// Dead (refused) and wrong (down) pools need a restart; hung, saturated, stale and healthy
/// ones, and one whose last check passed, do not. A broken mount needs a remount, after the
/// pool, only when remounts are on.
#[test]
fn needs_from_the_reports() {
    let refused = CheckResult::unreachable(FailureKind::Refused, "connection refused");
    let timeout = CheckResult::unreachable(FailureKind::Timeout, "no answer");
    let fpm = Service::Phpfpm;
    let reports = vec![
        seen(1, fpm, Status::Unreachable, refused.clone(), 100),
        seen(2, fpm, Status::Unreachable, timeout, 100),
        seen(3, fpm, Status::Unreachable, refused.clone(), 5000),
    ];
    let needs = needs_from_reports(&M, &reports, &SETTINGS);
    assert_eq!(
        needs,
        [(
            NodeId(1),
            vec![(
                RemedyAction::RestartPhpfpm,
                String::new(),
                "php-fpm unreachable: connection refused".to_string()
            )]
        )]
        .into()
    );
    let wrong = CheckResult::down(serde_json::json!({}), "ping answered `nope`");
    let needs = needs_from_reports(&M, &[seen(2, fpm, Status::Down, wrong, 10)], &SETTINGS);
    assert!(needs.contains_key(&NodeId(2)), "{needs:?}");
    // Back on its last check, though still down by the tracker: left alone.
    let back = CheckResult::healthy(serde_json::json!({}));
    let needs = needs_from_reports(
        &M,
        &[seen(2, fpm, Status::Unreachable, back, 10)],
        &SETTINGS,
    );
    assert!(needs.is_empty(), "{needs:?}");
    let enotconn = CheckResult::down(
        serde_json::json!({}),
        "mount /srv/shop: Transport endpoint is not connected (os error 107)",
    );
    let broken = vec![
        seen(3, Service::GlusterMount, Status::Down, enotconn, 10),
        seen(3, fpm, Status::Unreachable, refused, 10),
    ];
    let needs = needs_from_reports(&M, &broken, &SETTINGS);
    let actions: Vec<(RemedyAction, &str)> = needs[&NodeId(3)]
        .iter()
        .map(|(a, t, _)| (*a, t.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            (RemedyAction::RestartPhpfpm, ""),
            (RemedyAction::Remount, "/srv/shop")
        ]
    );
    let off = RemedySettings {
        remount: false,
        start_bricks: false,
        restart_glusterd: false,
        restart_phpfpm: false,
        ..SETTINGS
    };
    assert!(needs_from_reports(&M, &broken, &off).is_empty());
}

/// This node's dead brick (the volume probe's `down`, naming the local brick among the bricks
/// down) needs a start, before a broken mount; another node's dead brick, a volume that only
/// failed to answer (no details), or a last check that saw the brick back do not.
#[test]
fn a_dead_local_brick_needs_a_start() {
    let brick = "10.0.0.13:/srv/gluster/shop";
    let dead = |down: &[&str]| {
        CheckResult::down(
            serde_json::json!({"local_brick": brick, "bricks_down": down}),
            format!("local brick {brick} is down"),
        )
    };
    let enotconn = CheckResult::down(serde_json::json!({}), "mount: not connected");
    let reports = vec![
        seen(3, Service::GlusterMount, Status::Down, enotconn, 10),
        seen(3, Service::Gluster, Status::Down, dead(&[brick]), 10),
        seen(
            2,
            Service::Gluster,
            Status::Down,
            dead(&["10.0.0.11:/srv/gluster/shop"]),
            10,
        ),
        seen(
            1,
            Service::Gluster,
            Status::Down,
            CheckResult::down(serde_json::Value::Null, "gluster XML: no cliOutput"),
            10,
        ),
    ];
    let needs = needs_from_reports(&M, &reports, &SETTINGS);
    let actions: Vec<(NodeId, RemedyAction, &str)> = needs
        .iter()
        .flat_map(|(n, v)| v.iter().map(move |(a, t, _)| (*n, *a, t.as_str())))
        .collect();
    assert_eq!(
        actions,
        [
            (NodeId(3), RemedyAction::StartBrick, brick),
            (NodeId(3), RemedyAction::Remount, "/srv/shop"),
        ]
    );
    assert_eq!(
        needs[&NodeId(3)][0].2,
        format!("brick {brick} down: local brick {brick} is down")
    );
    let back = CheckResult::healthy(serde_json::json!({}));
    let needs = needs_from_reports(
        &M,
        &[seen(3, Service::Gluster, Status::Down, back, 10)],
        &SETTINGS,
    );
    assert!(needs.is_empty(), "{needs:?}");
    let off = RemedySettings {
        start_bricks: false,
        ..SETTINGS
    };
    let needs = needs_from_reports(
        &M,
        &[seen(3, Service::Gluster, Status::Down, dead(&[brick]), 10)],
        &off,
    );
    assert!(needs.is_empty(), "{needs:?}");
}

/// A gluster CLI refused (glusterd not running) on the last check too needs a glusterd
/// restart, before anything else of the volume; a CLI that timed out (glusterd busy or hung)
/// or a refusal whose last check answered does not.
#[test]
fn a_dead_glusterd_needs_a_restart() {
    let refused = CheckResult::unreachable(
        FailureKind::Refused,
        "gluster peer status: Connection failed. Please check if gluster daemon is operational.",
    );
    let slow = CheckResult::unreachable(FailureKind::Timeout, "gluster: no answer in 4s");
    let reports = vec![
        seen(
            1,
            Service::Gluster,
            Status::Unreachable,
            refused.clone(),
            10,
        ),
        seen(2, Service::Gluster, Status::Unreachable, slow, 10),
        seen(
            3,
            Service::Gluster,
            Status::Unreachable,
            CheckResult::healthy(serde_json::json!({})),
            10,
        ),
    ];
    let needs = needs_from_reports(&M, &reports, &SETTINGS);
    assert_eq!(needs.keys().copied().collect::<Vec<_>>(), vec![NodeId(1)]);
    assert_eq!(needs[&NodeId(1)][0].0, RemedyAction::RestartGlusterd);
    assert!(needs[&NodeId(1)][0]
        .2
        .starts_with("glusterd not answering: "));
    let off = RemedySettings {
        restart_glusterd: false,
        ..SETTINGS
    };
    let needs = needs_from_reports(
        &M,
        &[seen(1, Service::Gluster, Status::Unreachable, refused, 10)],
        &off,
    );
    assert!(needs.is_empty(), "{needs:?}");
}
