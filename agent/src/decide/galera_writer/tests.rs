//! Data-driven cases of the writer decision: a compact world per row, the verdict and the
//! commands expected.

use super::*;
use crate::cluster::{GaleraEviction, GaleraWriterAuthority};
use crate::health::Seen;
use crate::ids::{Epoch, LogIndex, Term, UnixMillis};
use crate::observation::{FailureKind, Service};

const U1: &str = "11111111-aaaa-11f1-b809-474591e831a5";
const U2: &str = "22222222-aaaa-11f1-b809-474591e831a5";
const U3: &str = "33333333-aaaa-11f1-b809-474591e831a5";

/// One node in a case: `S` Synced (seqno) in a component of 3, `s` Synced in a component of
/// 2, `D` donor, `J` joined, `N` non-Primary, `X`
/// stopped by its own agent's word, `H` hung check, `-` silent agent, `R` silent agent and
/// refused by both peers.
fn node(code: char, committed: i64) -> Option<WriterEvidence> {
    let mut e = WriterEvidence {
        reported: true,
        answered: true,
        last_committed: Some(committed),
        cluster_size: Some(3),
        ..WriterEvidence::default()
    };
    match code {
        's' => {
            e.serving = true;
            e.primary = true;
            e.cluster_size = Some(2);
            e.state = "Synced".into();
        }
        'S' => {
            e.serving = true;
            e.primary = true;
            e.state = "Synced".into();
        }
        'D' => {
            e.primary = true;
            e.state = "Donor/Desynced".into();
        }
        'J' => {
            e.primary = true;
            e.state = "Joined".into();
        }
        'N' => e.state = "non-Primary".into(),
        'X' => {
            e.answered = false;
            e.gone = true;
            e.last_committed = None;
            e.cluster_size = None;
            e.state = "refused".into();
        }
        'H' => {
            e.answered = false;
            e.last_committed = None;
            e.state = "hung (its check timed out)".into();
        }
        '-' => return None,
        'R' => {
            return Some(WriterEvidence {
                refused_by: [NodeId(8), NodeId(9)].into_iter().collect(),
                ..WriterEvidence::default()
            })
        }
        _ => unreachable!("unknown code {code}"),
    }
    Some(e)
}

struct Case {
    name: &'static str,
    /// Three nodes' codes, n1..n3.
    nodes: &'static str,
    writer: Option<u64>,
    evicted: &'static [u64],
    maintenance: bool,
    outage: bool,
    verdict: &'static str,
    /// Commands as short strings: `writer N kind`, `evict N`, `clear N`.
    commands: &'static [&'static str],
}

fn short(c: &Command) -> String {
    match c {
        Command::SetGaleraWriter { node, kind, .. } => {
            format!("writer {} {}", node.0, kind.as_str())
        }
        Command::EvictGaleraNode { node, .. } => format!("evict {}", node.0),
        Command::ClearGaleraEviction { node, .. } => format!("clear {}", node.0),
        other => format!("{other:?}"),
    }
}

const CASES: &[Case] = &[
    Case {
        name: "first writer is the most advanced Synced node (n2 is one ahead)",
        nodes: "SSS",
        writer: None,
        evicted: &[],
        maintenance: false,
        outage: false,
        verdict: "record n2 as the first writer",
        commands: &["writer 2 initial"],
    },
    Case {
        name: "first writer skips a donor; equals go to the lowest id",
        nodes: "SDS",
        writer: None,
        evicted: &[],
        maintenance: false,
        outage: false,
        verdict: "record n1 as the first writer",
        commands: &["writer 1 initial"],
    },
    Case {
        name: "a Synced writer stays (sticky)",
        nodes: "SSS",
        writer: Some(3),
        evicted: &[],
        maintenance: false,
        outage: false,
        verdict: "no action: writer n3 at epoch 1 is Synced",
        commands: &[],
    },
    Case {
        name: "a killed writer moves, then is evicted in the same cycle",
        nodes: "XSS",
        writer: Some(1),
        evicted: &[],
        maintenance: false,
        outage: false,
        verdict: "move the writer n1 -> n2; evict n1, whose mariadbd is gone",
        commands: &["writer 2 automatic", "evict 1"],
    },
    Case {
        name: "a donor writer moves to the Synced node, nobody is evicted",
        nodes: "JDS",
        writer: Some(2),
        evicted: &[],
        maintenance: false,
        outage: false,
        verdict: "move the writer n2 -> n3",
        commands: &["writer 3 automatic"],
    },
    Case {
        name: "a killed non-writer is evicted, the writer stays",
        nodes: "SXS",
        writer: Some(1),
        evicted: &[],
        maintenance: false,
        outage: false,
        verdict: "evict n2, whose mariadbd is gone",
        commands: &["evict 2"],
    },
    Case {
        name: "a hung node is left to Galera's suspect timeout",
        nodes: "SHS",
        writer: Some(1),
        evicted: &[],
        maintenance: false,
        outage: false,
        verdict: "no action: writer n1 at epoch 1 is Synced",
        commands: &[],
    },
    Case {
        name: "a silent agent is not evidence enough on its own",
        nodes: "S-S",
        writer: Some(1),
        evicted: &[],
        maintenance: false,
        outage: false,
        verdict: "no action: writer n1 at epoch 1 is Synced",
        commands: &[],
    },
    Case {
        name: "a silent agent whose node a majority finds refused is evicted",
        nodes: "SRS",
        writer: Some(1),
        evicted: &[],
        maintenance: false,
        outage: false,
        verdict: "evict n2, whose mariadbd is gone",
        commands: &["evict 2"],
    },
    Case {
        name: "a hung writer moves but is not evicted",
        nodes: "HSS",
        writer: Some(1),
        evicted: &[],
        maintenance: false,
        outage: false,
        verdict: "move the writer n1 -> n2",
        commands: &["writer 2 automatic"],
    },
    Case {
        name: "in maintenance the writer stays and nobody is evicted",
        nodes: "XSS",
        writer: Some(1),
        evicted: &[],
        maintenance: true,
        outage: false,
        verdict: "writer n1 is not Synced but stays: maintenance is on",
        commands: &[],
    },
    Case {
        name: "during a full outage the writer stays",
        nodes: "XXN",
        writer: Some(1),
        evicted: &[],
        maintenance: false,
        outage: true,
        verdict: "writer n1 is not Synced and no other node is: nothing to move to",
        commands: &[],
    },
    Case {
        name: "no eviction without a Primary elsewhere",
        nodes: "NXN",
        writer: Some(1),
        evicted: &[],
        maintenance: false,
        outage: false,
        verdict: "writer n1 is not Synced and no other node is: nothing to move to",
        commands: &[],
    },
    Case {
        name: "one eviction at a time",
        nodes: "SXX",
        writer: Some(1),
        evicted: &[3],
        maintenance: false,
        outage: false,
        verdict: "no action: writer n1 at epoch 1 is Synced",
        commands: &[],
    },
    Case {
        name: "an evicted node that answers again is cleared, even while joining",
        nodes: "SJS",
        writer: Some(1),
        evicted: &[2],
        maintenance: false,
        outage: false,
        verdict: "clear the eviction of n2: it answers again",
        commands: &["clear 2"],
    },
    Case {
        name: "an evicted Synced node is not eligible until cleared",
        nodes: "XSS",
        writer: Some(1),
        evicted: &[2],
        maintenance: false,
        outage: false,
        verdict: "move the writer n1 -> n3; clear the eviction of n2: it answers again",
        commands: &["writer 3 automatic", "clear 2"],
    },
    Case {
        name: "an eviction that took effect is cleared before the node comes back",
        nodes: "sXs",
        writer: Some(1),
        evicted: &[2],
        maintenance: false,
        outage: false,
        verdict: "clear the eviction of n2: the survivors' component no longer counts it",
        commands: &["clear 2"],
    },
    Case {
        name: "a gone node the survivors' component no longer counts is not evicted",
        nodes: "sXs",
        writer: Some(1),
        evicted: &[],
        maintenance: false,
        outage: false,
        verdict: "no action: writer n1 at epoch 1 is Synced",
        commands: &[],
    },
];

fn gcomm() -> BTreeMap<NodeId, String> {
    [(1, U1), (2, U2), (3, U3)]
        .into_iter()
        .map(|(n, u)| (NodeId(n), u.to_string()))
        .collect()
}

/// The inputs of a leader with these facts: no outage, no maintenance, nothing in flight,
/// reports fresh for 2 s, eviction on.
fn inputs<'a>(
    members: &'a [NodeId],
    authority: &'a GaleraWriterAuthority,
    evidence: &'a BTreeMap<NodeId, WriterEvidence>,
    gcomm: &'a BTreeMap<NodeId, String>,
) -> WriterInputs<'a> {
    WriterInputs {
        members,
        authority,
        evidence,
        gcomm,
        outage_open: false,
        maintenance: false,
        in_flight: false,
        settings: WriterSettings {
            freshness_ms: 2000,
            evict: true,
        },
    }
}

fn authority(writer: Option<u64>, evicted: &[u64]) -> GaleraWriterAuthority {
    let g = gcomm();
    GaleraWriterAuthority {
        writer: writer.map(NodeId),
        epoch: Epoch(u64::from(writer.is_some())),
        last_change: None,
        evicted: evicted
            .iter()
            .map(|&n| {
                (
                    NodeId(n),
                    GaleraEviction {
                        gcomm_uuid: g[&NodeId(n)].clone(),
                        index: LogIndex(5),
                        term: Term(1),
                        at: UnixMillis(0),
                        reason: String::new(),
                    },
                )
            })
            .collect(),
    }
}

#[test]
fn writer_decisions_table() {
    let members = [NodeId(1), NodeId(2), NodeId(3)];
    let gcomm = gcomm();
    for c in CASES {
        let evidence: BTreeMap<NodeId, WriterEvidence> = c
            .nodes
            .chars()
            .zip(1..)
            .filter_map(|(code, n)| node(code, 100 + i64::from(n == 2)).map(|e| (NodeId(n), e)))
            .collect();
        let a = authority(c.writer, c.evicted);
        let plan = decide(&WriterInputs {
            outage_open: c.outage,
            maintenance: c.maintenance,
            ..inputs(&members, &a, &evidence, &gcomm)
        });
        assert_eq!(plan.verdict, c.verdict, "{}", c.name);
        let got: Vec<String> = plan.proposals.iter().map(short).collect();
        assert_eq!(got, c.commands, "{}", c.name);
        // The commands apply in order on a state that holds the authority.
        let mut s = crate::cluster::ClusterState {
            members: crate::cluster::fixtures::members(3),
            galera_writer: a.clone(),
            ..Default::default()
        };
        for (k, cmd) in plan.proposals.iter().enumerate() {
            let meta = crate::cluster::EntryMeta {
                term: Term(1),
                index: LogIndex(10 + k as u64),
                at: UnixMillis(0),
            };
            let out = s.apply(meta, cmd);
            assert_eq!(out.name(), "changed", "{}: {cmd:?}", c.name);
        }
        // Eligible nodes come first, and only Synced unevicted nodes are eligible.
        let eligible: Vec<bool> = plan.ranking.iter().map(|r| r.eligible).collect();
        let mut sorted = eligible.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(eligible, sorted, "{}", c.name);
    }
}

#[test]
fn ranking_explains_each_node() {
    let members = [NodeId(1), NodeId(2), NodeId(3)];
    let mut evidence = BTreeMap::new();
    evidence.insert(NodeId(1), node('D', 100).expect("d"));
    evidence.insert(NodeId(2), node('S', 101).expect("s"));
    evidence.insert(NodeId(3), node('S', 100).expect("s"));
    let a = authority(Some(3), &[]);
    let ranking = rank(&inputs(&members, &a, &evidence, &gcomm()));
    let lines: Vec<String> = ranking
        .iter()
        .map(|r| format!("{} {} {}", r.node, r.eligible, r.reason))
        .collect();
    assert_eq!(
        lines,
        [
            "n3 true writer: Synced, Primary, last committed 100",
            "n2 true Synced, Primary, last committed 101",
            "n1 false Donor/Desynced",
        ]
    );
}

#[test]
fn eviction_can_be_switched_off() {
    let members = [NodeId(1), NodeId(2), NodeId(3)];
    let evidence: BTreeMap<NodeId, WriterEvidence> = [(1, 'S'), (2, 'X'), (3, 'S')]
        .into_iter()
        .filter_map(|(n, c)| node(c, 1).map(|e| (NodeId(n), e)))
        .collect();
    let a = authority(Some(1), &[]);
    let plan = decide(&WriterInputs {
        settings: WriterSettings {
            freshness_ms: 2000,
            evict: false,
        },
        ..inputs(&members, &a, &evidence, &gcomm())
    });
    assert!(plan.proposals.is_empty(), "{plan:?}");
}

/// Two nodes sharing an offset stay eligible, and the ranking says they are degraded.
#[test]
fn shared_offsets_are_reported_in_the_ranking() {
    let members = [NodeId(1), NodeId(2), NodeId(3)];
    let mut evidence = BTreeMap::new();
    for (n, off) in [(1, 1), (2, 3), (3, 3)] {
        let mut e = node('S', 100).expect("s");
        e.auto_increment_offset = Some(off);
        evidence.insert(NodeId(n), e);
    }
    let a = authority(Some(1), &[]);
    let ranking = rank(&inputs(&members, &a, &evidence, &gcomm()));
    let lines: Vec<String> = ranking
        .iter()
        .map(|r| format!("{} {} {}", r.node, r.eligible, r.reason))
        .collect();
    assert_eq!(
        lines,
        [
            "n1 true writer: Synced, Primary, last committed 100",
            "n2 true Synced, Primary, last committed 100; degraded: auto_increment_offset 3 is also n3's",
            "n3 true Synced, Primary, last committed 100; degraded: auto_increment_offset 3 is also n2's",
        ]
    );
}

fn observation(
    subject: u64,
    last: crate::observation::CheckResult,
) -> crate::observation::Observation {
    crate::observation::Observation {
        id: crate::observation::ProbeId {
            subject: NodeId(subject),
            service: Service::Mariadb,
            target: String::new(),
        },
        status: last.status,
        last,
        failures: 0,
        successes: 1,
        latency_us: 0,
        observed_at: UnixMillis(0),
    }
}

fn seen(observer: u64, subject: u64, last: crate::observation::CheckResult, age_ms: u64) -> Seen {
    Seen {
        observer: NodeId(observer),
        observation: observation(subject, last).into(),
        age_ms,
    }
}

/// From the reports: a Synced node's gcomm UUID is kept; a refused socket is "gone" even
/// while service control last said running (the note may be a cycle old); a timed-out check
/// is not; a stale report is not evidence; peers' refusals are counted.
#[test]
fn writer_evidence_reads_the_reports() {
    use crate::observation::CheckResult;
    let synced = CheckResult::healthy(serde_json::json!({
        "cluster_status": "Primary", "cluster_size": 3, "local_state": 4,
        "local_state_comment": "Synced", "ready": true, "last_committed": 7,
        "gcomm_uuid": U1.to_uppercase(), "auto_increment_offset": 1,
    }));
    let mut refused_running = CheckResult::unreachable(FailureKind::Refused, "refused");
    refused_running.details = serde_json::json!({ "service": "running" });
    let hung = CheckResult::unreachable(FailureKind::Timeout, "timeout");
    let refused = CheckResult::unreachable(FailureKind::Refused, "refused");
    let members = [NodeId(1), NodeId(2), NodeId(3)];
    let reports = vec![
        seen(1, 1, synced.clone(), 100),
        seen(2, 2, refused_running, 100),
        seen(1, 2, refused.clone(), 100),
        seen(3, 3, hung, 100),
        seen(1, 3, refused, 9_000),
    ];
    let mut memory = WriterMemory::default();
    let ev = writer_evidence_from_reports(&members, &reports, 2000, 10_000, &mut memory);
    let gcomm = memory.uuids();
    let n1 = &ev[&NodeId(1)];
    assert!(n1.serving && n1.primary && !n1.gone, "{n1:?}");
    assert_eq!(
        (n1.cluster_size, n1.last_committed, n1.auto_increment_offset),
        (Some(3), Some(7), Some(1))
    );
    assert_eq!(gcomm.get(&NodeId(1)).map(String::as_str), Some(U1));
    let n2 = &ev[&NodeId(2)];
    assert!(n2.gone && !n2.answered, "{n2:?}");
    assert_eq!(n2.refused_by, [NodeId(1)].into_iter().collect());
    let n3 = &ev[&NodeId(3)];
    assert!(!n3.gone && !n3.serving, "{n3:?}");
    assert_eq!(n3.state, "hung (its check timed out)");
    assert!(
        n3.refused_by.is_empty(),
        "a stale peer report is not evidence"
    );
}

/// A joining process's new UUID, seen by a peer, never pairs with its own agent's older
/// "refused": the node counts as back, and the UUID kept is the newest one seen.
#[test]
fn a_peer_seeing_the_node_back_after_its_own_refusal_is_not_gone() {
    use crate::observation::CheckResult;
    let members = [NodeId(1), NodeId(2), NodeId(3)];
    let new = "99999999-aaaa-11f1-b809-474591e831a5";
    let back = CheckResult::healthy(serde_json::json!({
        "cluster_status": "Primary", "cluster_size": 3, "local_state": 1,
        "local_state_comment": "Joining", "ready": false, "gcomm_uuid": new,
    }));
    let refused = CheckResult::unreachable(FailureKind::Refused, "refused");
    let mut memory = WriterMemory::default();
    memory.gcomm.insert(NodeId(2), (U2.to_string(), 5_000));
    let reports = vec![seen(2, 2, refused.clone(), 400), seen(1, 2, back, 100)];
    let ev = writer_evidence_from_reports(&members, &reports, 2000, 10_000, &mut memory);
    assert!(!ev[&NodeId(2)].gone, "{:?}", ev[&NodeId(2)]);
    assert_eq!(
        memory.uuids()[&NodeId(2)],
        new,
        "the newest UUID seen is kept"
    );
    // The other order, for a node never seen answering before: the peer's answer is older
    // than the refusal: gone.
    let mut memory = WriterMemory::default();
    let reports = vec![seen(2, 2, refused, 100), seen(1, 2, synced_check(), 400)];
    let ev = writer_evidence_from_reports(&members, &reports, 2000, 10_000, &mut memory);
    assert!(ev[&NodeId(2)].gone, "{:?}", ev[&NodeId(2)]);
}

/// Found by the whole-cluster simulation (seed 15): a node's own agent reported its mariadbd
/// stopped; the node was started again and a peer's check found the new process answering
/// (its new gcomm UUID) before the own agent's next report; then the node was cut off, so the
/// peer's next check timed out while the own "stopped" report was still fresh. Judged on the
/// current reports alone the node was gone, and the eviction named the live, rejoining
/// process's UUID. The memory of the answer keeps it not gone; a refusal after the answer
/// (the new process died too) makes it gone again, with the new UUID.
#[test]
fn a_node_answering_since_its_own_gone_report_is_not_evicted() {
    use crate::observation::CheckResult;
    const U3_NEW: &str = "33333333-bbbb-11f1-b809-474591e831a5";
    let joining = CheckResult::healthy(serde_json::json!({
        "cluster_status": "Primary", "local_state": 1, "local_state_comment": "Joining",
        "ready": false, "last_committed": 100, "gcomm_uuid": U3_NEW,
    }));
    let mut stopped = CheckResult::unreachable(FailureKind::Refused, "connection refused");
    stopped.details = serde_json::json!({"service": "stopped"});
    let timed_out = CheckResult::unreachable(FailureKind::Timeout, "timed out");
    let members = [NodeId(1), NodeId(2), NodeId(3)];
    let synced = |n: u64, u: &str| {
        let mut c = synced_check();
        c.details["gcomm_uuid"] = serde_json::json!(u);
        c.details["last_committed"] = serde_json::json!(100);
        seen(n, n, c, 100)
    };
    let evictions = |evidence: &BTreeMap<NodeId, WriterEvidence>, memory: &WriterMemory| {
        let a = authority(Some(1), &[]);
        let gcomm = memory.uuids();
        let plan = decide(&inputs(&members, &a, evidence, &gcomm));
        plan.proposals.iter().map(short).collect::<Vec<String>>()
    };
    // (age of n3's own "stopped" report, age of n1's check finding n3 Joining, evicted?)
    for (own_age, peer_age, evicted) in [(900, 200, false), (900, 1500, true)] {
        let now = 10_000;
        let mut memory = WriterMemory::default();
        memory.gcomm.insert(NodeId(3), (U3.to_string(), 1_000));
        let reports = vec![
            synced(1, U1),
            synced(2, U2),
            seen(3, 3, stopped.clone(), own_age),
            seen(1, 3, joining.clone(), peer_age),
        ];
        let ev = writer_evidence_from_reports(&members, &reports, 2000, now, &mut memory);
        assert_eq!(ev[&NodeId(3)].gone, evicted, "{own_age} {peer_age}");
        assert_eq!(memory.uuids()[&NodeId(3)], U3_NEW, "the newest UUID seen");
        let want: &[&str] = if evicted { &["evict 3"] } else { &[] };
        assert_eq!(evictions(&ev, &memory), want, "{own_age} {peer_age}");
        // 300 ms later n1's next check of n3 times out (a cut); n3's own report is unchanged.
        let reports = vec![
            synced(1, U1),
            synced(2, U2),
            seen(3, 3, stopped.clone(), own_age + 300),
            seen(1, 3, timed_out.clone(), 100),
        ];
        let ev = writer_evidence_from_reports(&members, &reports, 2000, now + 300, &mut memory);
        assert_eq!(ev[&NodeId(3)].gone, evicted, "later: {own_age} {peer_age}");
        assert_eq!(evictions(&ev, &memory), want, "later: {own_age} {peer_age}");
        // Then its own agent reports it stopped again: the new process died too.
        let reports = vec![
            synced(1, U1),
            synced(2, U2),
            seen(3, 3, stopped.clone(), 50),
            seen(1, 3, timed_out.clone(), 100),
        ];
        let ev = writer_evidence_from_reports(&members, &reports, 2000, now + 600, &mut memory);
        assert!(ev[&NodeId(3)].gone, "died again: {own_age} {peer_age}");
        assert_eq!(evictions(&ev, &memory), ["evict 3"]);
    }
}

fn synced_check() -> crate::observation::CheckResult {
    crate::observation::CheckResult::healthy(serde_json::json!({
        "cluster_status": "Primary", "cluster_size": 3, "local_state": 4,
        "local_state_comment": "Synced", "ready": true,
    }))
}
