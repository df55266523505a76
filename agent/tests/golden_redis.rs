//! Golden scripts for the Redis failover decision (`agent/tests/golden/redis/*.txt`).
//!
//! Each script describes one situation (committed authority, every agent's observations with
//! ages, timers) and ends with `decide`; below a `----` line it holds the expected plan: the
//! verdict, the proposals and the candidate ranking. Run with `TRIAD_GOLDEN_UPDATE=1` to
//! rewrite the expected parts, then review the diff.
//!
//! Script lines:
//! - `members N`; `settings key=value ...` (freshness, lease, margin, hold_down, max_lag,
//!   link_stale (seconds), link_stale_ms, hung_after); `authority master=nX epoch=E [suspect]`; `since_change MS [kind=K]` (the
//!   last change, `automatic` unless K is `switchover` or `initial`); `embargo MS`;
//!   `maintenance`; `in_flight`; `suspect_reconciled` (the suspect's agent reported the
//!   suspicion carried out); `suspect_applied_by_all` (every agent fresh and applied it);
//! - `agent nX age=MS`: age of that agent's latest report;
//! - `see OBSERVER SUBJECT STATUS [failure=K] [role=R] [link=up|down] [io=S] [quiet=MS]
//!   [offset=N] [prio=N] [unanswered=MS] [age=MS] [error=WORD]`: one observation of SUBJECT's
//!   Redis by OBSERVER (`quiet` is `link_quiet_ms`).

mod goldenkit;

use std::collections::BTreeMap;

use goldenkit::{kv, node};

use triad::cluster::{ChangeKind, Command, MasterChange, RedisAuthority, Suspect};
use triad::decide::redis::{decide, FailoverSettings, RedisInputs};
use triad::health::Seen;
use triad::ids::{Epoch, LogIndex, NodeId, Term, UnixMillis};
use triad::probe::{CheckResult, FailureKind, Observation, ProbeId, Service, Status};

fn run(script: &str) -> String {
    let mut members = vec![];
    let mut settings = FailoverSettings {
        freshness_ms: 2000,
        lease_ms: 2000,
        clock_margin_ms: 500,
        hold_down_ms: 30_000,
        max_lag_bytes: 1_048_576,
        link_stale_after_ms: 3000,
        hung_after_ms: 750,
    };
    let mut authority = RedisAuthority::default();
    let mut ages = BTreeMap::new();
    let mut seen = vec![];
    let (mut since_change, mut embargo, mut maintenance, mut in_flight) =
        (None, None, false, false);
    let mut suspect_reconciled = false;
    let mut suspect_applied_by_all = false;
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
                let set = |slot: &mut u64, k: &str| {
                    if let Some(v) = num(k) {
                        *slot = v;
                    }
                };
                set(&mut settings.freshness_ms, "freshness");
                set(&mut settings.lease_ms, "lease");
                set(&mut settings.clock_margin_ms, "margin");
                set(&mut settings.hold_down_ms, "hold_down");
                set(&mut settings.hung_after_ms, "hung_after");
                if let Some(v) = num("max_lag") {
                    settings.max_lag_bytes = v as i64;
                }
                if let Some(v) = num("link_stale") {
                    settings.link_stale_after_ms = v * 1000;
                }
                set(&mut settings.link_stale_after_ms, "link_stale_ms");
            }
            "authority" => {
                let master = args.get("master").map(|m| node(m));
                authority.master = master;
                authority.epoch = Epoch(num("epoch").unwrap_or(0));
                if parts.contains(&"suspect") {
                    authority.suspect = Some(Suspect {
                        node: master.expect("suspect needs a master"),
                        epoch: authority.epoch,
                        index: LogIndex(10),
                        reason: "test".into(),
                    });
                }
            }
            "since_change" => {
                since_change = Some(parts[1].parse().expect("ms"));
                let kind = args.get("kind").map_or("automatic", String::as_str);
                authority.last_change = Some(MasterChange {
                    kind: ChangeKind::parse(kind).expect("kind"),
                    from: None,
                    to: authority
                        .master
                        .expect("since_change needs authority first"),
                    epoch: authority.epoch,
                    index: LogIndex(5),
                    term: Term(1),
                    at: UnixMillis(0),
                    reason: "test".into(),
                });
            }
            "embargo" => embargo = Some(parts[1].parse().expect("ms")),
            "maintenance" => maintenance = true,
            "suspect_reconciled" => suspect_reconciled = true,
            "suspect_applied_by_all" => suspect_applied_by_all = true,
            "in_flight" => in_flight = true,
            "agent" => {
                ages.insert(node(parts[1]), num("age").expect("age="));
            }
            "see" => {
                let status = Status::parse(parts[3]).expect("status");
                let mut details = serde_json::Map::new();
                if let Some(r) = args.get("role") {
                    details.insert("role".into(), r.clone().into());
                }
                if let Some(l) = args.get("link") {
                    details.insert("master_link_up".into(), (l == "up").into());
                }
                for (k, key) in [
                    ("io", "master_last_io_seconds_ago"),
                    ("prio", "slave_priority"),
                    ("unanswered", "unanswered_ms"),
                    ("quiet", "link_quiet_ms"),
                ] {
                    if let Some(v) = args.get(k) {
                        details.insert(key.into(), v.parse::<i64>().expect("int").into());
                    }
                }
                if let Some(v) = args.get("offset") {
                    let key = if args.get("role").map(String::as_str) == Some("master") {
                        "master_repl_offset"
                    } else {
                        "slave_repl_offset"
                    };
                    details.insert(key.into(), v.parse::<i64>().expect("int").into());
                }
                let failure = args.get("failure").map(|f| match f.as_str() {
                    "refused" => FailureKind::Refused,
                    "timeout" => FailureKind::Timeout,
                    other => panic!("failure {other}"),
                });
                let last = CheckResult {
                    status,
                    failure,
                    error: args.get("error").map(|e| e.replace('_', " ")),
                    details: serde_json::Value::Object(details),
                };
                seen.push(Seen {
                    observer: node(parts[1]),
                    observation: std::sync::Arc::new(Observation {
                        id: ProbeId {
                            subject: node(parts[2]),
                            service: Service::Redis,
                            target: String::new(),
                        },
                        status,
                        last,
                        failures: 0,
                        successes: 0,
                        latency_us: 0,
                        observed_at: UnixMillis(0),
                    }),
                    age_ms: num("age").unwrap_or(100),
                });
            }
            "decide" => {}
            other => panic!("unknown script line `{other}`"),
        }
    }
    let p = decide(&RedisInputs {
        members: &members,
        authority: &authority,
        seen: &seen,
        report_age_ms: &ages,
        since_change_ms: since_change,
        suspect_embargo_ms: embargo,
        suspect_reconciled,
        suspect_applied_by_all,
        maintenance,
        in_flight,
        settings,
    });
    let mut out = format!("verdict: {}\n", p.verdict);
    for c in &p.proposals {
        out += &match c {
            Command::SetRedisMaster {
                node, epoch, kind, ..
            } => {
                format!(
                    "propose: set_redis_master {node} epoch {epoch} {}\n",
                    kind.as_str()
                )
            }
            Command::SuspectRedisMaster { node, epoch, .. } => {
                format!("propose: suspect_redis_master {node} epoch {epoch}\n")
            }
            Command::ClearRedisSuspect { node, epoch, .. } => {
                format!("propose: clear_redis_suspect {node} epoch {epoch}\n")
            }
            other => format!("propose: {other:?}\n"),
        };
    }
    for c in &p.candidates {
        out += &match c.rank {
            Some(r) => format!("candidate {} rank {r}: {}\n", c.node, c.reason),
            None => format!("candidate {}: {}\n", c.node, c.reason),
        };
    }
    out
}

#[test]
fn redis_decision_golden_scripts() {
    goldenkit::check(&goldenkit::scripts("redis", 10), run);
}
