//! Data-driven tests of the web rotation decision and its evidence.

use std::sync::Arc;

use super::*;
use crate::cluster::WebDrain;
use crate::ids::{Epoch, LogIndex, UnixMillis};
use crate::observation::{CheckResult, FailureKind, Observation, ProbeId};

const M: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

const SETTINGS: WebSettings = WebSettings {
    freshness_ms: 3000,
    readmit_after_ms: 2000,
    plant: WebPlant::None,
};

/// Every member seen healthy for longer than the readmission hold.
fn long_healthy() -> BTreeMap<NodeId, u64> {
    M.iter().map(|n| (*n, 60_000)).collect()
}

/// A drained node that turned healthy is readmitted only after the hold, seen without a break.
#[test]
fn readmission_waits_for_the_hold() {
    let a = authority(&[2], None);
    let h: BTreeMap<NodeId, NodeWeb> = M.iter().map(|n| (*n, NodeWeb::Healthy)).collect();
    let decide_at = |for_ms: u64| {
        let mut healthy = long_healthy();
        healthy.insert(NodeId(2), for_ms);
        decide(&WebInputs {
            members: &M,
            authority: &a,
            health: &h,
            healthy_for_ms: &healthy,
            settings: SETTINGS,
            maintenance: false,
            in_flight: false,
        })
    };
    let early = decide_at(1500);
    assert!(early.proposals.is_empty());
    assert_eq!(
        early.verdict,
        "no action: web rotation drains n2; n2 healthy for 1500 ms, readmitted after 2000 ms"
    );
    let late = decide_at(2000);
    assert_eq!(late.verdict, "web rotation: readmit n2");
}

/// A node's health in the table: `h` healthy, `d` PHP-FPM down, `s` saturated, `m` a mount
/// down, `dm` both PHP-FPM and a mount down, `?` unknown.
fn health(code: &str) -> NodeWeb {
    let sick = |score, reasons: &[&str]| NodeWeb::Sick {
        score,
        reasons: reasons.iter().map(ToString::to_string).collect(),
    };
    match code {
        "h" => NodeWeb::Healthy,
        "d" => sick(4, &["php-fpm down"]),
        "s" => sick(1, &["php-fpm saturated"]),
        "m" => sick(2, &["mount /srv/var unreachable"]),
        "dm" => sick(6, &["php-fpm down", "mount /srv/var unreachable"]),
        _ => NodeWeb::Unknown("silent".into()),
    }
}

fn authority(drained: &[u64], kept: Option<u64>) -> WebAuthority {
    WebAuthority {
        epoch: Epoch(5),
        drained: drained
            .iter()
            .map(|&n| {
                (
                    NodeId(n),
                    WebDrain {
                        reason: "was sick".into(),
                        index: LogIndex(1),
                        at: UnixMillis(0),
                    },
                )
            })
            .collect(),
        kept: kept.map(|n| WebKept {
            node: NodeId(n),
            reason: "least sick".into(),
        }),
        last_change: Some(crate::cluster::WebChange {
            index: LogIndex(1),
            term: crate::ids::Term(1),
            at: UnixMillis(0),
            reason: String::new(),
        }),
    }
}

/// (committed drained, committed kept, health of n1..n3, maintenance, in flight) →
/// (verdict, proposed drained and kept, or None for no proposal).
#[test]
fn decisions_table() {
    type Case<'a> = (
        &'a [u64],
        Option<u64>,
        [&'a str; 3],
        bool,
        bool,
        &'a str,
        Option<(&'a [u64], Option<u64>)>,
    );
    let cases: Vec<Case> = vec![
        (&[], None, ["h", "h", "h"], false, false,
            "no action: web rotation has every node in service", None),
        (&[], None, ["h", "d", "h"], false, false,
            "web rotation: drain n2 (php-fpm down)", Some((&[2], None))),
        (&[2], None, ["h", "h", "h"], false, false,
            "web rotation: readmit n2", Some((&[], None))),
        // Saturation drains too.
        (&[], None, ["s", "h", "h"], false, false,
            "web rotation: drain n1 (php-fpm saturated)", Some((&[1], None))),
        // Unknown keeps its place, drained or not.
        (&[2], None, ["h", "?", "?"], false, false,
            "no action: web rotation drains n2", None),
        // Two sick: one stays.
        (&[], None, ["d", "h", "d"], false, false,
            "web rotation: drain n1 (php-fpm down); drain n3 (php-fpm down)",
            Some((&[1, 3], None))),
        // All sick: the least sick (n2, saturated) is kept.
        (&[1, 3], None, ["d", "s", "d"], false, false,
            "web rotation: every web node is sick; n2 is the least sick and stays in service (php-fpm saturated)",
            Some((&[1, 3], Some(2)))),
        // All equally sick: the one in service stays (no flapping).
        (&[1, 3], None, ["d", "d", "d"], false, false,
            "web rotation: every web node is sick; n2 is the least sick and stays in service (php-fpm down)",
            Some((&[1, 3], Some(2)))),
        // All sick from all healthy: the lowest id.
        (&[], None, ["m", "m", "m"], false, false,
            "web rotation: drain n2 (mount /srv/var unreachable); drain n3 (mount /srv/var unreachable); every web node is sick; n1 is the least sick and stays in service (mount /srv/var unreachable)",
            Some((&[2, 3], Some(1)))),
        // Kept stays kept while all are as sick: no proposal.
        (&[1, 3], Some(2), ["d", "d", "dm"], false, false,
            "no action: web rotation drains n1, n3, keeps sick n2 in service; least sick", None),
        // The kept one got sicker than a drained one: they swap.
        (&[1, 3], Some(2), ["d", "dm", "d"], false, false,
            "web rotation: drain n2 (php-fpm down, mount /srv/var unreachable); every web node is sick; n1 is the least sick and stays in service (php-fpm down)",
            Some((&[2, 3], Some(1)))),
        // A drained node heals while the kept one is sick: the healthy one is readmitted and
        // the sick one drained.
        (&[1, 3], Some(2), ["h", "d", "d"], false, false,
            "web rotation: drain n2 (php-fpm down); readmit n1; n2 no longer the only one in service",
            Some((&[2, 3], None))),
        // The kept one heals.
        (&[1, 3], Some(2), ["d", "h", "d"], false, false,
            "web rotation: n2 no longer the only one in service", Some((&[1, 3], None))),
        // An unknown drained node is not kept over a known sick one.
        (&[3], None, ["d", "d", "?"], false, false,
            "web rotation: drain n2 (php-fpm down); every web node is sick; n1 is the least sick and stays in service (php-fpm down)",
            Some((&[2, 3], Some(1)))),
        (&[], None, ["d", "h", "h"], true, false,
            "no action: maintenance on, web rotation frozen (has every node in service)", None),
        (&[], None, ["d", "h", "h"], false, true,
            "waiting: a web rotation change is in flight", None),
    ];
    for (drained, kept, codes, maintenance, in_flight, verdict, proposal) in cases {
        let a = authority(drained, kept);
        let h: BTreeMap<NodeId, NodeWeb> =
            M.iter().zip(codes).map(|(n, c)| (*n, health(c))).collect();
        let p = decide(&WebInputs {
            members: &M,
            authority: &a,
            health: &h,
            healthy_for_ms: &long_healthy(),
            settings: SETTINGS,
            maintenance,
            in_flight,
        });
        assert_eq!(p.verdict, verdict, "{codes:?}");
        let got = p.proposals.first().map(|c| match c {
            Command::SetWebRotation {
                epoch,
                drained,
                kept,
                ..
            } => {
                assert_eq!(*epoch, Epoch(6));
                (
                    drained.keys().map(|n| n.0).collect::<Vec<_>>(),
                    kept.as_ref().map(|k| k.node.0),
                )
            }
            other => panic!("unexpected {other:?}"),
        });
        assert_eq!(got, proposal.map(|(d, k)| (d.to_vec(), k)), "{verdict}");
        assert_eq!(p.nodes.len(), 3);
    }
}

/// Whatever the health, a proposed rotation always leaves a member in service and applies.
#[test]
fn every_proposal_leaves_a_member_in_service_and_applies() {
    let codes = ["h", "d", "s", "m", "dm", "?"];
    let mut n = 0;
    for a in codes {
        for b in codes {
            for c in codes {
                for (drained, kept) in [(&[][..], None), (&[1, 3][..], Some(2)), (&[2][..], None)] {
                    let auth = authority(drained, kept);
                    let h: BTreeMap<NodeId, NodeWeb> = M
                        .iter()
                        .zip([a, b, c])
                        .map(|(n, c)| (*n, health(c)))
                        .collect();
                    let p = decide(&WebInputs {
                        members: &M,
                        authority: &auth,
                        health: &h,
                        healthy_for_ms: &long_healthy(),
                        settings: SETTINGS,
                        maintenance: false,
                        in_flight: false,
                    });
                    let mut state = crate::cluster::ClusterState {
                        members: crate::cluster::fixtures::members(3),
                        web: auth.clone(),
                        ..Default::default()
                    };
                    for cmd in &p.proposals {
                        n += 1;
                        let out = state.apply(
                            crate::cluster::EntryMeta {
                                term: crate::ids::Term(1),
                                index: LogIndex(10),
                                at: UnixMillis(0),
                            },
                            cmd,
                        );
                        assert_eq!(out, crate::cluster::Outcome::Changed, "{a} {b} {c}");
                    }
                    assert!(M.iter().any(|n| state.web.in_rotation(*n)));
                    // Decided again on the new state: nothing more to do.
                    if !p.proposals.is_empty() {
                        let again = decide(&WebInputs {
                            members: &M,
                            authority: &state.web,
                            health: &h,
                            healthy_for_ms: &long_healthy(),
                            settings: SETTINGS,
                            maintenance: false,
                            in_flight: false,
                        });
                        assert!(again.proposals.is_empty(), "{a} {b} {c}: {}", again.verdict);
                    }
                }
            }
        }
    }
    assert!(n > 100, "{n}");
}

fn seen(node: u64, service: Service, target: &str, status: Status, age_ms: u64) -> Seen {
    let last = match status {
        Status::Healthy => CheckResult::healthy(serde_json::json!({})),
        Status::Degraded => CheckResult::degraded(serde_json::json!({}), "queue 4"),
        _ => CheckResult::unreachable(FailureKind::Refused, "connection refused"),
    };
    Seen {
        observer: NodeId(node),
        observation: Arc::new(Observation {
            id: ProbeId {
                subject: NodeId(node),
                service,
                target: target.into(),
            },
            status,
            last,
            failures: 0,
            successes: 1,
            latency_us: 0,
            observed_at: UnixMillis(0),
        }),
        age_ms,
    }
}

/// The evidence: own reports only, fresh only, mounts degraded still serve.
#[test]
fn evidence_from_reports() {
    let reports = vec![
        seen(1, Service::Phpfpm, "", Status::Healthy, 100),
        seen(1, Service::GlusterMount, "/srv/var", Status::Degraded, 100),
        seen(2, Service::Phpfpm, "", Status::Unreachable, 100),
        seen(
            2,
            Service::GlusterMount,
            "/srv/var",
            Status::Unreachable,
            100,
        ),
        seen(2, Service::Redis, "", Status::Down, 100),
        seen(3, Service::Phpfpm, "", Status::Degraded, 5000),
    ];
    let h = web_health_from_reports(&M, &reports, 3000);
    assert_eq!(h[&NodeId(1)], NodeWeb::Healthy);
    assert_eq!(
        h[&NodeId(2)],
        NodeWeb::Sick {
            score: 6,
            reasons: vec![
                "php-fpm unreachable: connection refused".into(),
                "mount /srv/var unreachable: connection refused".into()
            ]
        }
    );
    assert_eq!(
        h[&NodeId(3)],
        NodeWeb::Unknown("no report from its agent within 3000 ms".into())
    );
    let h = web_health_from_reports(
        &M,
        &[seen(3, Service::Phpfpm, "", Status::Degraded, 10)],
        3000,
    );
    assert_eq!(
        h[&NodeId(3)],
        NodeWeb::Sick {
            score: 1,
            reasons: vec!["php-fpm saturated: queue 4".into()]
        }
    );
    assert!(matches!(h[&NodeId(1)], NodeWeb::Unknown(_)));
}
