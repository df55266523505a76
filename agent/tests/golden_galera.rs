//! Golden scripts for the Galera full-outage decision (`agent/tests/golden/galera/*.txt`).
//!
//! Each script describes one situation (the committed outage and bootstrap, every node's
//! evidence as its own agent reported it, report ages, timers) and ends with `decide`, maybe
//! followed by `override` lines; below a `----` line it holds the expected output: the
//! verdict, the proposals (a bootstrap with its evidence line), the ranking with every node's
//! reason, and each override's command or refusal. Run with `TRIAD_GOLDEN_UPDATE=1` to
//! rewrite the expected parts, then review the diff.
//!
//! `[failover] automatic = false` is not a case here: the decision proposes as usual and the
//! driver holds back the commands that say they are automatic
//! (`Command::is_automatic_failover`).
//!
//! Script lines:
//! - `members N`; `settings key=MS ...` (freshness, open_after_stopped,
//!   open_after_non_primary, rebootstrap_after); `no_primary MS`; `fallen MS [running]` (how
//!   long the decided bootstrap node has been stopped again, or with `running` has run
//!   non-Primary, after carrying it out, nothing Primary); `maintenance`; `in_flight`;
//! - `outage N open|ended`: the newest committed outage; `decided nX uuid=U seqno=S
//!   [kind=operator by=WHO] [mode=pc-bootstrap]`: its bootstrap;
//! - `agent nX age=MS`: age of that agent's latest report;
//! - `node nX stopped|running|unknown [primary] [size=N] [state=S] [uuid=U] [committed=N]
//!   [grastate=missing|unreadable|UUID:SEQNO] [safe] [recovered=UUID:SEQNO]
//!   [seen_primary_by=nA,nB] [bootstrapped=N]`: that node's evidence (a seqno of -1 is unknown, `nil` the nil
//!   UUID);
//! - `decide`; `override nX [accept] [by=WHO] [reason=WORDS_WITH_UNDERSCORES]`: the operator's
//!   override built against the same inputs.

mod goldenkit;

use std::collections::BTreeMap;
use std::path::PathBuf;

use goldenkit::{kv, node};

use triad::cluster::{
    BootstrapKind, BootstrapMode, Command, GaleraAuthority, GaleraBootstrap, GaleraOutage,
    OutageId, OutageMark,
};
use triad::decide::galera::{
    decide_ranked, operator_override, rank, GaleraCandidate, GaleraEvidence, GaleraInputs,
    GaleraPlant, GaleraPosition, GaleraSettings, GrastateEvidence, ProcessState, Ranker, Tier,
};
use triad::ids::{LogIndex, NodeId, Term, UnixMillis};

/// `UUID:SEQNO` with `nil` and `-1` for unknowns.
fn position(s: &str) -> (Option<String>, Option<i64>) {
    let (u, n) = s
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("bad position `{s}`"));
    let seqno: i64 = n.parse().unwrap_or_else(|_| panic!("bad seqno `{n}`"));
    (
        (u != "nil").then(|| u.to_string()),
        (seqno >= 0).then_some(seqno),
    )
}

fn mark(index: u64) -> OutageMark {
    OutageMark {
        index: LogIndex(index),
        term: Term(2),
        at: UnixMillis(0),
        reason: "test".into(),
    }
}

fn describe(c: &Command) -> String {
    match c {
        Command::OpenGaleraOutage { outage, .. } => format!("open_galera_outage {outage}"),
        Command::BootstrapGalera {
            outage,
            node,
            uuid,
            seqno,
            mode,
            kind,
            by,
            evidence,
            ..
        } => {
            let mut s = format!(
                "bootstrap_galera outage {outage} {node} {}:{} {} {}",
                uuid.as_deref().unwrap_or("?"),
                seqno.map_or_else(|| "?".to_string(), |s| s.to_string()),
                mode.as_str(),
                kind.as_str()
            );
            if !by.is_empty() {
                s += &format!(" by {by}");
            }
            s + &format!("\n  evidence: {evidence}")
        }
        Command::EndGaleraOutage { outage, .. } => format!("end_galera_outage {outage}"),
        other => format!("{other:?}"),
    }
}

fn run(script: &str, ranker: Ranker) -> String {
    let mut members = vec![];
    let mut settings = GaleraSettings {
        freshness_ms: 2000,
        open_after_stopped_ms: 1000,
        open_after_non_primary_ms: 10_000,
        rebootstrap_after_ms: 5_000,
        plant: GaleraPlant::None,
    };
    let mut authority = GaleraAuthority::default();
    let mut ages = BTreeMap::new();
    let mut evidence = BTreeMap::new();
    let (mut no_primary, mut maintenance, mut in_flight) = (None, false, false);
    let mut fallen = None;
    let mut fallen_running = false;
    let mut overrides = vec![];
    for line in script.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        let args = kv(&parts[1..]);
        let num = |k: &str| args.get(k).map(|v| v.parse::<u64>().expect("number"));
        match parts[0] {
            "members" => {
                members = (1..=parts[1].parse::<u64>().expect("n"))
                    .map(NodeId)
                    .collect()
            }
            "settings" => {
                for (slot, k) in [
                    (&mut settings.freshness_ms, "freshness"),
                    (&mut settings.open_after_stopped_ms, "open_after_stopped"),
                    (
                        &mut settings.open_after_non_primary_ms,
                        "open_after_non_primary",
                    ),
                    (&mut settings.rebootstrap_after_ms, "rebootstrap_after"),
                ] {
                    if let Some(v) = num(k) {
                        *slot = v;
                    }
                }
            }
            "no_primary" => no_primary = Some(parts[1].parse().expect("ms")),
            "fallen" => {
                fallen = Some(parts[1].parse().expect("ms"));
                fallen_running = parts.get(2) == Some(&"running");
            }
            "maintenance" => maintenance = true,
            "in_flight" => in_flight = true,
            "outage" => {
                authority.outage = Some(GaleraOutage {
                    number: OutageId(parts[1].parse().expect("outage number")),
                    opened: mark(40),
                    bootstrap: None,
                    ended: match parts[2] {
                        "open" => None,
                        "ended" => Some(mark(45)),
                        other => panic!("outage state {other}"),
                    },
                });
            }
            "decided" => {
                let (uuid, seqno) = (args.get("uuid").cloned(), num("seqno").map(|s| s as i64));
                let outage = authority
                    .outage
                    .as_mut()
                    .expect("decided needs outage first");
                outage.bootstrap = Some(GaleraBootstrap {
                    node: node(parts[1]),
                    uuid,
                    seqno,
                    mode: BootstrapMode::parse(args.get("mode").map_or("new-cluster", |m| m))
                        .expect("mode"),
                    kind: BootstrapKind::parse(args.get("kind").map_or("automatic", |k| k))
                        .expect("kind"),
                    by: args.get("by").cloned().unwrap_or_default(),
                    reason: "test".into(),
                    evidence: "test".into(),
                    index: LogIndex(41),
                    term: Term(2),
                    at: UnixMillis(0),
                });
            }
            "agent" => {
                ages.insert(node(parts[1]), num("age").expect("age="));
            }
            "node" => {
                let grastate = match args.get("grastate").map(String::as_str) {
                    None | Some("missing") => GrastateEvidence::Missing,
                    Some("unreadable") => GrastateEvidence::Unreadable {
                        error: "grastate.dat:3: not a seqno".into(),
                    },
                    Some(p) => {
                        let (uuid, seqno) = position(p);
                        GrastateEvidence::Present {
                            uuid,
                            seqno,
                            safe_to_bootstrap: parts.contains(&"safe"),
                        }
                    }
                };
                let mut e = GaleraEvidence::stopped(grastate);
                e.process = match parts[2] {
                    "stopped" => ProcessState::Stopped,
                    "running" => ProcessState::Running,
                    "unknown" => ProcessState::Unknown,
                    other => panic!("process state {other}"),
                };
                e.primary = parts.contains(&"primary");
                e.cluster_size = num("size");
                e.local_state = args.get("state").cloned();
                e.wsrep_uuid = args.get("uuid").cloned();
                e.last_committed = args.get("committed").map(|c| c.parse().expect("seqno"));
                e.recovered = args.get("recovered").map(|p| {
                    let (uuid, seqno) = position(p);
                    GaleraPosition { uuid, seqno }
                });
                e.bootstrapped = num("bootstrapped").map(OutageId);
                e.primary_seen_by = args
                    .get("seen_primary_by")
                    .map(|l| l.split(',').map(node).collect())
                    .unwrap_or_default();
                evidence.insert(node(parts[1]), e);
            }
            "decide" => {}
            "override" => overrides.push((
                node(parts[1]),
                parts.contains(&"accept"),
                args.get("by").cloned().unwrap_or_default(),
                args.get("reason")
                    .map(|r| r.replace('_', " "))
                    .unwrap_or_default(),
            )),
            other => panic!("unknown script line `{other}`"),
        }
    }
    let inputs = GaleraInputs {
        members: &members,
        authority: &authority,
        evidence: &evidence,
        report_age_ms: &ages,
        no_primary_ms: no_primary,
        bootstrap_fallen_ms: fallen,
        bootstrap_fallen_running: fallen_running,
        maintenance,
        in_flight,
        settings,
    };
    let p = decide_ranked(&inputs, ranker);
    let mut out = format!("verdict: {}\n", p.verdict);
    for c in &p.proposals {
        out += &format!("propose: {}\n", describe(c));
    }
    for c in &p.ranking {
        out += &match c.rank {
            Some(r) => format!(
                "node {} rank {r} {}: {}\n",
                c.node,
                c.tier.as_str(),
                c.reason
            ),
            None => format!("node {}: {}\n", c.node, c.reason),
        };
    }
    for (n, accept, by, reason) in overrides {
        out += &match operator_override(&inputs, n, accept, &by, &reason) {
            Ok(c) => format!("override {n}: {}\n", describe(&c)),
            Err(e) => format!("override {n}: refused: {e}\n"),
        };
    }
    out
}

/// Every golden script against `ranker`: the files whose output differs.
fn mismatches(ranker: Ranker) -> Vec<(PathBuf, String, String)> {
    goldenkit::mismatches(&goldenkit::scripts("galera", 12), |script| {
        run(script, ranker)
    })
}

#[test]
fn galera_decision_golden_scripts() {
    goldenkit::check(&goldenkit::scripts("galera", 12), |script| {
        run(script, rank)
    });
}

/// Planted bug: a ranking that orders by node id instead of seqno (tiers kept, so only the
/// order among equals-by-evidence changes). The golden cases must catch it, and the full
/// crash where recovered positions make n3 the most advanced must be one of them.
fn by_node_id(i: &GaleraInputs<'_>) -> Vec<GaleraCandidate> {
    let mut out = rank(i);
    let mut eligible: Vec<&mut GaleraCandidate> = out
        .iter_mut()
        .filter(|c| c.tier != Tier::Excluded)
        .collect();
    eligible.sort_by_key(|c| (c.tier, c.node));
    for (k, c) in eligible.into_iter().enumerate() {
        c.rank = Some(k as u32 + 1);
    }
    out.sort_by_key(|c| (c.rank.is_none(), c.rank, c.node));
    out
}

#[test]
fn planted_bug_choosing_by_node_id_fails_the_golden_cases() {
    if std::env::var_os("TRIAD_GOLDEN_UPDATE").is_some() {
        return; // the expected outputs are being rewritten
    }
    let caught: Vec<String> = mismatches(by_node_id)
        .into_iter()
        .filter_map(|(f, _, _)| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert!(
        caught
            .iter()
            .any(|f| f.contains("full_crash_recovered_positions")),
        "choosing by node id went unnoticed; it changed only {caught:?}"
    );
}
