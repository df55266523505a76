//! The Galera recovery cases of issue #12 as lab checks, plus the building blocks the Galera
//! benchmark (`triad-galera-bench`) shares with them.
//!
//! Every case runs under the write load of [`super::load`] and ends the same way
//! ([`finish`]): every acknowledged insert is on all three nodes, and all three are Synced in
//! a cluster of 3. The *agents* recover MariaDB: a case never starts mariadbd itself. Where a
//! case needs every agent to find the cluster already down (a planned shutdown of all three,
//! as when the VMs are powered off), it stops the agents first and starts them again once
//! every mariadbd is stopped; the agents then do the rest.
//!
//! The cases (`pub fn NAME(lab: &Lab) -> Result<()>`, registered as trials in
//! `tests/tests/lab.rs`):
//! - a. [`kill9_one_node_is_restarted_by_its_agent_and_rejoins_by_ist`]
//! - b. [`kill_all_three_bootstraps_the_most_advanced_without_an_operator`]
//! - c. [`crash_with_seqno_minus_one_everywhere_bootstraps_the_node_recovery_says_is_ahead`]
//! - d. [`clean_shutdown_of_all_three_bootstraps_the_safe_node`]
//! - e. [`a_node_without_grastate_comes_last`]
//! - f. [`one_node_kept_down_waits_and_the_override_works`]
//! - g. [`partition_of_one_node_is_not_restarted_and_rejoins_after_the_heal`]
//!
//! Recipes (verified on the lab, MariaDB 10.11 / Galera 26.4, with the lab's own scripted
//! recovery standing in for the agents):
//! - Making n3 strictly the most advanced with `seqno: -1` and `safe_to_bootstrap: 0` in every
//!   grastate (case c): with all three Synced, a session on n1 and one on n2 each hold
//!   `LOCK TABLES shop.galera_load READ`. Their appliers wait on that lock (no brute-force
//!   abort for an explicit table lock), so rows inserted through n3 commit on n3 and queue on
//!   n1 and n2 (`wsrep_local_recv_queue` grows; fewer than `gcs.fc_limit` rows, or flow
//!   control would stall n3 too). Then kill -9 of all three: every grastate shows `seqno: -1,
//!   safe_to_bootstrap: 0`, and `--wsrep-recover` gives n3 the higher position (seen: n1 55,
//!   n2 55, n3 65). Recipes that do *not* work: `FLUSH TABLES WITH READ LOCK` pauses the
//!   provider, which writes the paused seqno into grastate (not -1); leaving n3 alone in a
//!   Primary component (pc.weight, or cutting the others off) sets `safe_to_bootstrap: 1` on
//!   it; killing n1 and n2 one by one lets their agents restart them while n3 is Primary, and
//!   n3 alone has no quorum anyway.
//! - Clean shutdowns (case d): every clean leave is a configuration change with its own
//!   seqno, so stopping n1, n3, n2 in that order leaves n1 < n3 < n2 in grastate, and only
//!   the last (n2) has `safe_to_bootstrap: 1` (seen: 68, 69, 70).
//! - After a crash, a joiner that rejoined by IST logs `rsync IST completed on joiner` and
//!   `IST received`; a full SST logs `rsync SST completed on joiner` (and then also `IST
//!   received` for the writesets that arrived meanwhile), so "IST received" alone does not
//!   prove there was no SST: [`state_transfer_in`] looks at both.
//!
//! Status shapes: the agents' `/v1/status` view of the Galera authority is read as raw JSON;
//! each place that depends on the agent's JSON shape is marked `// SHAPE:` (written as guesses
//! before the agent side existed, then checked against it at commit cecbcf1). The replicated
//! audit history (`history`, written by `agent/src/cluster.rs`) is read as a second source,
//! and both must agree.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use serde_json::Value;

use super::faults::{self, StartOptions};
use super::load::{LoadOptions, LoadSummary, Target, WriteLoad};
use super::process::{wait_gone, ProcId, Signal};
use super::query;
use super::services;
use super::spec::Service;
use super::Lab;

/// Bound on one node's rejoin after kill -9 (by its agent).
pub const REJOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on recovering from a full outage (by the agents).
pub const OUTAGE_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on reaching three Synced nodes at the start and end of a case.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a case lets the load run before its fault.
const WARM_UP: Duration = Duration::from_secs(3);

// ----- observing Galera -----------------------------------------------------------------------

/// `Ok` when node `n` answers and `want` holds, else what it showed.
pub fn galera_probe(
    lab: &Lab,
    n: u64,
    want: impl Fn(&query::GaleraStatus) -> bool,
) -> std::result::Result<(), String> {
    match lab.galera(n) {
        Ok(g) if want(&g) => Ok(()),
        Ok(g) => Err(format!("n{n}: {g}")),
        Err(e) => Err(format!("n{n}: {e:#}")),
    }
}

/// Waits until every node in `nodes` is Synced and Primary in a cluster of `size`; returns
/// when that was first seen.
pub fn wait_synced(lab: &Lab, nodes: &[u64], size: u32, timeout: Duration) -> Result<Instant> {
    let what = format!(
        "{} Synced in a cluster of {size}",
        nodes
            .iter()
            .map(|n| format!("n{n}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    lab.wait_for(&what, timeout, || {
        let bad: Vec<String> = nodes
            .iter()
            .filter_map(|&n| galera_probe(lab, n, |g| g.is_synced_in(size)).err())
            .collect();
        if bad.is_empty() {
            Ok(Instant::now())
        } else {
            Err(bad.join("; "))
        }
    })
}

/// [`wait_synced`] while the agents recover: a timeout also says what every agent's Galera
/// recovery is doing (and its last error), and the leader's verdict.
pub fn wait_recovered(lab: &Lab, nodes: &[u64], size: u32, timeout: Duration) -> Result<Instant> {
    wait_synced(lab, nodes, size, timeout)
        .map_err(|e| e.context(format!("the agents: {}", agents_galera_line(lab))))
}

/// Waits until all three are Synced in a cluster of 3 after a full outage that began at `at`
/// (`before`: the newest outage number then), checking on the way that no mariadbd runs again
/// before its own agent has a bootstrap of a newer outage committed. A node started on its
/// own changes the evidence under the decision: the position it reported is gone (a joiner
/// that found no Primary reports none), so the decision may pass over the most advanced node;
/// and such a joiner cannot take `pc.bootstrap`. Returns when all three were Synced.
pub fn wait_outage_recovered(
    lab: &Lab,
    before: u64,
    at: Instant,
    timeout: Duration,
) -> Result<Instant> {
    let nodes = lab.spec().nodes();
    let mut cleared = std::collections::BTreeSet::new();
    let outcome = lab.wait_for(
        "all three Synced in a cluster of 3 after the outage",
        timeout,
        || {
            for &n in &nodes {
                if cleared.contains(&n) {
                    continue;
                }
                let Some(id) = mariadb_proc(lab, n).map_err(|e| format!("{e:#}"))? else {
                    continue;
                };
                let Ok(status) = agent_status_json(lab, n) else {
                    continue;
                };
                let decided = galera_outage_json(&status)
                    .and_then(outage_view)
                    .is_some_and(|o| o.number > before && o.bootstrap.is_some())
                    || newest_bootstrap_in_history(&status).is_some_and(|(o, _)| o > before);
                if !decided {
                    return Ok(Err(format!(
                        "mariadb on n{n} runs again (pid {}) {:.1}s after every mariadbd was \
                         killed, but its agent has no bootstrap of an outage after {before}: it \
                         was started without the leader's decision; its agent: {}",
                        id.pid,
                        secs(at.elapsed()),
                        local_recovery_line(&status)
                    )));
                }
                cleared.insert(n);
            }
            let bad: Vec<String> = nodes
                .iter()
                .filter_map(|&n| galera_probe(lab, n, |g| g.is_synced_in(3)).err())
                .collect();
            if bad.is_empty() {
                Ok(Ok(Instant::now()))
            } else {
                Err(bad.join("; "))
            }
        },
    );
    match outcome {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(why)) => Err(anyhow!(why)),
        Err(e) => Err(e.context(format!("the agents: {}", agents_galera_line(lab)))),
    }
}

/// [`wait_synced`] for all three nodes in a cluster of 3.
pub fn wait_all_synced(lab: &Lab, timeout: Duration) -> Result<Instant> {
    wait_synced(lab, &lab.spec().nodes(), 3, timeout)
}

/// `wsrep_last_committed` of node `n`.
pub fn last_committed(lab: &Lab, n: u64) -> Result<i64> {
    let vars = query::wsrep_vars(lab.spec(), n, query::QUERY_TIMEOUT)?;
    vars.get("wsrep_last_committed")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("n{n}: no wsrep_last_committed in its status"))
}

/// A `grastate.dat`, leniently parsed (the agent has the strict parser).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grastate {
    /// `uuid:`.
    pub uuid: String,
    /// `seqno:` (-1 while running or after a crash).
    pub seqno: i64,
    /// `safe_to_bootstrap: 1`.
    pub safe_to_bootstrap: bool,
}

/// Parses the text of a `grastate.dat`.
pub fn parse_grastate(text: &str) -> Result<Grastate> {
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
    };
    let uuid = field("uuid:").ok_or_else(|| anyhow!("no uuid line in grastate: {text:?}"))?;
    let seqno = field("seqno:")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no seqno line in grastate: {text:?}"))?;
    let safe_to_bootstrap = field("safe_to_bootstrap:").is_some_and(|v| v == "1");
    Ok(Grastate {
        uuid,
        seqno,
        safe_to_bootstrap,
    })
}

/// Node `n`'s grastate, `None` when the file does not exist.
pub fn read_grastate(lab: &Lab, n: u64) -> Result<Option<Grastate>> {
    let path = lab.spec().grastate_file(n);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_grastate(&text)
            .map(Some)
            .with_context(|| format!("n{n}: {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// One line per node: `n1 seqno -1 safe 0`.
pub fn grastates_line(lab: &Lab) -> String {
    lab.spec()
        .nodes()
        .iter()
        .map(|&n| match read_grastate(lab, n) {
            Ok(Some(g)) => format!(
                "n{n} seqno {} safe {}",
                g.seqno,
                u8::from(g.safe_to_bootstrap)
            ),
            Ok(None) => format!("n{n} no grastate"),
            Err(e) => format!("n{n} {e:#}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// How a joiner got its state, from the part of its error log written since it started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transfer {
    /// Incremental state transfer only.
    Ist,
    /// A full state snapshot transfer.
    Sst,
    /// Neither shows in the log (yet).
    Unknown,
}

/// Reads [`Transfer`] from a joiner's log (see the module docs for the markers).
pub fn state_transfer_in(log: &str) -> Transfer {
    if log.contains("SST completed on joiner") {
        Transfer::Sst
    } else if log.contains("IST received") {
        Transfer::Ist
    } else {
        Transfer::Unknown
    }
}

/// The size of file `path` now (0 when missing): where "the log since now" starts.
pub fn log_offset(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The text of `path` written after `offset`.
pub fn log_since(path: &Path, offset: u64) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let from = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    Ok(String::from_utf8_lossy(&bytes[from..]).into_owned())
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ----- the agents' view -----------------------------------------------------------------------

/// Node `n`'s agent `GET /v1/status` as raw JSON (the typed [`crate::StatusBody`] drops
/// fields it does not know, such as a new `galera` object).
pub fn agent_status_json(lab: &Lab, n: u64) -> Result<Value> {
    let (code, body) = services::agent_get(lab.spec(), n, "/v1/status", Duration::from_secs(2))?;
    if code != 200 {
        bail!(
            "agent n{n}: GET /v1/status answered {code}: {}",
            body.trim()
        );
    }
    serde_json::from_str(&body).with_context(|| format!("agent n{n}: /v1/status is not JSON"))
}

/// The newest Galera outage and its bootstrap, as an agent's status shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutageView {
    /// The outage's number.
    pub number: u64,
    /// Still open (not ended).
    pub open: bool,
    /// Its bootstrap, once decided.
    pub bootstrap: Option<BootstrapView>,
}

/// A committed Galera bootstrap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapView {
    /// The node that bootstraps.
    pub node: u64,
    /// `automatic` or `operator`.
    pub kind: String,
}

/// The newest outage object (`GaleraOutage` serialized) in an agent's status JSON.
pub fn galera_outage_json(status: &Value) -> Option<&Value> {
    // SHAPE: `/v1/status` has `galera` (`GaleraStatusBody` in agent/src/api.rs, absent without
    // `[galera]`) with the committed `GaleraAuthority` under `authority`; checked against the
    // agent at commit cecbcf1 (it was a guess when this was written). `GET /v1/galera`
    // answers the same `GaleraStatusBody` at its top level.
    ["/galera/authority/outage", "/authority/outage"]
        .iter()
        .find_map(|p| status.pointer(p).filter(|v| !v.is_null()))
}

/// Whether the status JSON has a Galera section at all.
pub fn has_galera_section(status: &Value) -> bool {
    // SHAPE: see `galera_outage_json`.
    status.get("galera").is_some_and(|v| !v.is_null())
}

/// This node's local recovery as its agent shows it (`galera.local.recovery.doing` and
/// `galera.local.last_error`) and the leader's verdict, one line, for error messages.
pub fn local_recovery_line(status: &Value) -> String {
    // SHAPE: `galera.local` is `LocalGaleraView` (agent/src/status.rs): `recovery` is
    // `RecoveryView` (agent/src/reconcile/galera.rs) with `doing`, `restarts_last_hour`,
    // `capped`; `last_error` is a string or null. Checked at commit cecbcf1.
    let g = &status["galera"];
    if g.is_null() {
        return "no galera section in its status".to_string();
    }
    let r = &g["local"]["recovery"];
    let mut line = format!(
        "{} (restarts last hour {}{})",
        r["doing"].as_str().unwrap_or("?"),
        r["restarts_last_hour"],
        if r["capped"] == Value::Bool(true) {
            ", CAPPED"
        } else {
            ""
        }
    );
    if let Some(e) = g["local"]["last_error"].as_str() {
        line.push_str(&format!("; last error: {e}"));
    }
    if let Some(v) = g["verdict"].as_str() {
        line.push_str(&format!("; leader's verdict: {v}"));
    }
    line
}

/// Every agent's Galera recovery, one line each (`n1: ... | n2: ...`), for error messages.
pub fn agents_galera_line(lab: &Lab) -> String {
    lab.spec()
        .nodes()
        .iter()
        .map(|&n| match agent_status_json(lab, n) {
            Ok(s) => format!("n{n}: {}", local_recovery_line(&s)),
            Err(e) => format!("n{n}: {e:#}"),
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// A node id as JSON: `2` (NodeId is transparent) or `"n2"`.
fn node_of(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_str()
            .map(|s| s.trim_start_matches('n'))
            .and_then(|s| s.parse().ok())
    })
}

/// Reads an [`OutageView`] from a serialized `GaleraOutage` (`number`, `bootstrap.node`,
/// `bootstrap.kind`, `ended`; as `agent/src/cluster.rs` defines them).
pub fn outage_view(outage: &Value) -> Option<OutageView> {
    let number = outage.get("number").and_then(Value::as_u64)?;
    let open = outage.get("ended").is_none_or(Value::is_null);
    let bootstrap = outage
        .get("bootstrap")
        .filter(|b| !b.is_null())
        .and_then(|b| {
            Some(BootstrapView {
                node: node_of(b.get("node")?)?,
                kind: b
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string(),
            })
        });
    Some(OutageView {
        number,
        open,
        bootstrap,
    })
}

/// A bootstrap line of the audit history, as `agent/src/cluster.rs` writes it: `galera outage
/// 1: automatic bootstrap n2 at UUID:SEQNO (new-cluster): ...` or `galera outage 2 (opened by
/// it): operator override by NAME: bootstrap n2 at ...`. Refusals are not bootstraps.
pub fn bootstrap_in_history_line(details: &str) -> Option<(u64, BootstrapView)> {
    let rest = details.strip_prefix("galera outage ")?;
    if details.contains("rejected") {
        return None;
    }
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let number = digits.parse().ok()?;
    let kind = if rest.contains(": automatic bootstrap n") {
        "automatic"
    } else if rest.contains(": operator override by ") {
        "operator"
    } else {
        return None;
    };
    let at = rest.find(" bootstrap n")? + " bootstrap n".len();
    let node_digits: String = rest[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((
        number,
        BootstrapView {
            node: node_digits.parse().ok()?,
            kind: kind.to_string(),
        },
    ))
}

/// The newest Galera bootstrap in an agent's audit history (`history`, newest first).
pub fn newest_bootstrap_in_history(status: &Value) -> Option<(u64, BootstrapView)> {
    status
        .get("history")?
        .as_array()?
        .iter()
        .filter(|h| h.get("kind").and_then(Value::as_str) == Some("galera"))
        .filter_map(|h| h.get("details").and_then(Value::as_str))
        .find_map(bootstrap_in_history_line)
}

/// What one agent says about Galera outages, from two sources.
#[derive(Clone, Debug, Default)]
pub struct GaleraView {
    /// The newest outage in the status' Galera section.
    pub outage: Option<OutageView>,
    /// The newest bootstrap in the audit history: outage number and bootstrap.
    pub history: Option<(u64, BootstrapView)>,
}

/// What the first answering agent of `nodes` says about the newest outage. Errors when no
/// agent answers.
pub fn galera_view(lab: &Lab, nodes: &[u64]) -> Result<GaleraView> {
    let mut why = Vec::new();
    for &n in nodes {
        match agent_status_json(lab, n) {
            Ok(s) => {
                return Ok(GaleraView {
                    outage: galera_outage_json(&s).and_then(outage_view),
                    history: newest_bootstrap_in_history(&s),
                })
            }
            Err(e) => why.push(format!("{e:#}")),
        }
    }
    bail!("no agent answers /v1/status: {}", why.join("; "))
}

/// The newest outage number any answering agent knows (0 before the first), from either
/// source, so a case can tell its own outage from an earlier one.
pub fn newest_outage_number(lab: &Lab, nodes: &[u64]) -> Result<u64> {
    let v = galera_view(lab, nodes)?;
    Ok(v.outage
        .map(|o| o.number)
        .max(v.history.map(|(n, _)| n))
        .unwrap_or(0))
}

/// Waits until the agents show a bootstrap of an outage newer than `after` in both their
/// Galera section and their history (they must agree); returns it.
pub fn committed_bootstrap_after(
    lab: &Lab,
    nodes: &[u64],
    after: u64,
    timeout: Duration,
) -> Result<(u64, BootstrapView)> {
    lab.wait_for(
        &format!("a committed Galera bootstrap of an outage after {after}"),
        timeout,
        || {
            let GaleraView { outage, history } =
                galera_view(lab, nodes).map_err(|e| format!("{e:#}"))?;
            let from_status = outage
                .as_ref()
                .filter(|o| o.number > after)
                .and_then(|o| o.bootstrap.clone().map(|b| (o.number, b)));
            let from_history = history.filter(|(n, _)| *n > after);
            match (from_status, from_history) {
                (Some(a), Some(b)) if a == b => Ok(a),
                (Some(a), Some(b)) => Err(format!(
                    "status says outage {} bootstraps n{}, history says outage {} bootstraps n{}",
                    a.0, a.1.node, b.0, b.1.node
                )),
                (None, Some(b)) => Err(format!(
                    "the history has outage {} bootstrapping n{} ({}), but the status shows no \
                     such outage in its Galera section (SHAPE: galera.authority.outage; seen: \
                     {outage:?})",
                    b.0, b.1.node, b.1.kind
                )),
                (Some(a), None) => Err(format!(
                    "the status shows outage {} bootstrapping n{}, the history does not (yet)",
                    a.0, a.1.node
                )),
                (None, None) => Err(format!(
                    "no bootstrap after outage {after} (if the nodes are back, they came back \
                     without one: Galera re-forms a Primary by itself when every node of the \
                     last one restarts); newest: {outage:?}"
                )),
            }
        },
    )
    .map_err(|e| e.context(format!("the agents: {}", agents_galera_line(lab))))
}

// ----- acting -----------------------------------------------------------------------------

/// Node `n`'s mariadbd, when it runs (found by the lab's record or the shared pidfile).
pub fn mariadb_proc(lab: &Lab, n: u64) -> Result<Option<ProcId>> {
    lab.proc(n, Service::Mariadb)
}

/// Sends `sig` to the mariadbd of every node in `nodes` back to back (microseconds apart,
/// so no agent sees one die while another still runs), then waits until they are gone.
/// Returns when the first signal was sent.
pub fn signal_mariadb_at_once(lab: &Lab, nodes: &[u64], sig: Signal) -> Result<Instant> {
    let mut ids = Vec::new();
    for &n in nodes {
        let id = mariadb_proc(lab, n)?
            .ok_or_else(|| anyhow!("mariadb on n{n} is not running; nothing to signal"))?;
        ids.push((n, id));
    }
    let at = Instant::now();
    for (n, id) in &ids {
        id.signal_group(sig)
            .with_context(|| format!("sending {sig} to mariadb on n{n}"))?;
    }
    let left = wait_gone(
        &ids.iter().map(|(_, id)| *id).collect::<Vec<_>>(),
        Duration::from_secs(20),
    );
    ensure!(
        left.is_empty(),
        "mariadb still alive 20 s after {sig}: {left:?}"
    );
    Ok(at)
}

/// Stops mariadb on each of `order` cleanly (SIGTERM), one after the other, each gone before
/// the next.
pub fn stop_mariadb_in_order(lab: &Lab, order: &[u64]) -> Result<()> {
    for &n in order {
        let line = lab.kill(n, Service::Mariadb, Signal::Term)?;
        eprintln!("galera: {line}");
    }
    Ok(())
}

/// Stops the agents of `nodes` (SIGTERM).
pub fn stop_agents(lab: &Lab, nodes: &[u64]) -> Result<()> {
    for &n in nodes {
        if lab.proc(n, Service::Agent)?.is_some() {
            lab.kill(n, Service::Agent, Signal::Term)?;
        }
    }
    Ok(())
}

/// Starts the agents of `nodes` that do not run.
pub fn start_agents(lab: &Lab, nodes: &[u64]) -> Result<()> {
    for &n in nodes {
        lab.start(n, Service::Agent)?;
    }
    Ok(())
}

/// What `triad ARGS --api <n's API> --token-file <lab token>` did.
#[derive(Clone, Debug)]
pub struct CliRun {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CliRun {
    /// Stdout as JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(self.stdout.trim())
            .with_context(|| format!("not JSON: {} (stderr: {})", self.stdout, self.stderr))
    }
}

/// Runs the lab's `triad` CLI against node `via`'s agent, bounded to 60 s.
pub fn triad_cli(lab: &Lab, via: u64, args: &[&str]) -> Result<CliRun> {
    let spec = lab.spec();
    let mut cmd = crate::triad_command(&spec.triad_bin);
    cmd.env("TRIAD_READ_TOKEN_FILE", spec.token_file());
    cmd.args(args)
        .arg("--api")
        .arg(spec.api_url(via))
        .arg("--token-file")
        .arg(spec.token_file());
    let out = super::process::run(&mut cmd, None, Duration::from_secs(60))
        .with_context(|| format!("triad {}", args.join(" ")))?;
    if out.timed_out() {
        bail!("triad {} did not finish within 60 s", args.join(" "));
    }
    Ok(CliRun {
        code: out.status.and_then(|s| s.code()).unwrap_or(-1),
        stdout: out.stdout,
        stderr: out.stderr,
    })
}

/// Whether a `triad galera bootstrap --dry-run --json` answer names node `node` as one the
/// decision waits for.
pub fn names_waited_for(answer: &Value, node: u64) -> bool {
    // SHAPE: the dry run prints `GET /v1/galera` (`GaleraStatusBody`): `next` is the
    // `GaleraPlan` of the dry run, whose `verdict` reads "[no outage is open; if one were: ]
    // waiting for n1 (its agent is silent ...), ...: ..." and whose `ranking` has the node with
    // `tier: "excluded"`. Checked against agent/src/decide/galera.rs at commit cecbcf1.
    let verdict = answer
        .pointer("/next/verdict")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let named = verdict
        .split_once("waiting for ")
        .map(|(_, rest)| rest.split_once(": ").map_or(rest, |(list, _)| list))
        .is_some_and(|list| names_node(list, node));
    let excluded = answer
        .pointer("/next/ranking")
        .and_then(Value::as_array)
        .is_some_and(|r| {
            r.iter().any(|c| {
                c.get("node").and_then(node_of) == Some(node)
                    && c.get("tier").and_then(Value::as_str) == Some("excluded")
            })
        });
    named && excluded
}

/// Whether `text` names node `node` as `n<node>` (not as part of a longer number).
fn names_node(text: &str, node: u64) -> bool {
    let word = format!("n{node}");
    text.match_indices(&word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric())
            && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

// ----- the manual recovery (the benchmark's baseline) -------------------------------------------

/// How MariaDB comes back after a fault in a measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// The agents do it; the caller only waits.
    Agent,
    /// A scripted operator does it at once, the way `galera_recovery` and the lab's `start`
    /// do (the agents must be stopped).
    Manual,
}

impl std::fmt::Display for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Recovery::Agent => "agent",
            Recovery::Manual => "manual",
        })
    }
}

/// The seqno of a `UUID:SEQNO` position.
pub fn position_seqno(position: &str) -> Option<i64> {
    position.rsplit_once(':')?.1.trim().parse().ok()
}

/// The node to bootstrap from recovered positions: highest seqno, ties to the lowest id;
/// nodes without a position come last (never chosen while another has one).
pub fn most_advanced(positions: &BTreeMap<u64, Option<i64>>) -> Option<u64> {
    positions
        .iter()
        .max_by(|(a, sa), (b, sb)| sa.cmp(sb).then(b.cmp(a)))
        .map(|(n, _)| *n)
}

/// The scripted manual recovery after a full crash, as an operator following the Galera
/// documentation would do it: `mariadbd --wsrep-recover` on every node, bootstrap the most
/// advanced one (`safe_to_bootstrap: 1`, its recovered position, `--wsrep-new-cluster`), then
/// start the others with their recovered positions (IST). Returns the bootstrapped node.
pub fn manual_full_recovery(lab: &Lab) -> Result<u64> {
    let spec = lab.spec();
    let mut positions = BTreeMap::new();
    for n in spec.nodes() {
        let pos = services::mariadb_recover_position(spec, n)?;
        positions.insert(n, pos.as_deref().and_then(position_seqno));
    }
    let best = most_advanced(&positions).ok_or_else(|| anyhow!("no node to bootstrap"))?;
    eprintln!("galera (manual): recovered seqnos {positions:?}; bootstrapping n{best}");
    faults::start(
        spec,
        best,
        Service::Mariadb,
        StartOptions { bootstrap: true },
    )?;
    for n in spec.nodes().into_iter().filter(|&n| n != best) {
        lab.start(n, Service::Mariadb)?;
    }
    Ok(best)
}

// ----- the measurements the benchmark shares ----------------------------------------------------

/// One kill -9 of one node and its rejoin.
#[derive(Clone, Debug)]
pub struct OneKill {
    /// The node.
    pub node: u64,
    /// From the signal to the node Synced in a cluster of 3 again.
    pub to_synced: Duration,
    /// How it got its state.
    pub transfer: Transfer,
    /// The new mariadbd's pid.
    pub new_pid: i32,
    /// The node's error log since the kill.
    pub log: String,
}

/// Kills node `node`'s mariadbd with SIGKILL and waits (bounded by [`REJOIN_TIMEOUT`]) until it
/// is back, Synced in a cluster of 3, as a new process, recovered as `how` says.
pub fn kill9_one(lab: &Lab, node: u64, how: Recovery) -> Result<OneKill> {
    let spec = lab.spec();
    let old =
        mariadb_proc(lab, node)?.ok_or_else(|| anyhow!("mariadb on n{node} is not running"))?;
    // A manual rejoin finds the peers that the agents restarted by their pidfiles (the lab's
    // `start` looks for a Primary peer among them too).
    let log = spec.mysql_log(node);
    let offset = log_offset(&log);
    let at = signal_mariadb_at_once(lab, &[node], Signal::Kill)?;
    if how == Recovery::Manual {
        lab.start(node, Service::Mariadb)?;
    }
    let new_pid = lab
        .wait_for(
            &format!("n{node} restarted and Synced in a cluster of 3"),
            REJOIN_TIMEOUT.saturating_sub(at.elapsed()),
            || {
                let now = mariadb_proc(lab, node)
                    .map_err(|e| format!("{e:#}"))?
                    .ok_or_else(|| format!("mariadb on n{node} does not run"))?;
                if now == old {
                    return Err(format!("n{node} still shows the killed pid {}", old.pid));
                }
                galera_probe(lab, node, |g| g.is_synced_in(3))?;
                Ok(now.pid)
            },
        )
        .map_err(|e| e.context(format!("the agents: {}", agents_galera_line(lab))))?;
    let to_synced = at.elapsed();
    let log = log_since(&log, offset)?;
    Ok(OneKill {
        node,
        to_synced,
        transfer: state_transfer_in(&log),
        new_pid,
        log,
    })
}

/// One full outage (every mariadbd killed) and its recovery.
#[derive(Clone, Debug)]
pub struct FullOutage {
    /// From the kill to an acknowledged insert through every target of the load.
    pub to_writes_everywhere: Duration,
    /// From the kill to all three Synced in a cluster of 3.
    pub to_all_synced: Duration,
    /// The node that bootstrapped, when known (manual: always; agent: from the status).
    pub bootstrapped: Option<u64>,
}

/// Kills every mariadbd at once while `load` runs and waits (bounded by [`OUTAGE_TIMEOUT`])
/// for the recovery `how`: writes accepted through every target of the load, and all three
/// Synced. The load must run across the kill.
pub fn kill_all_and_recover(lab: &Lab, load: &WriteLoad, how: Recovery) -> Result<FullOutage> {
    let nodes = lab.spec().nodes();
    let before = match how {
        Recovery::Agent => newest_outage_number(lab, &nodes)?,
        Recovery::Manual => 0,
    };
    let at = signal_mariadb_at_once(lab, &nodes, Signal::Kill)?;
    let mut bootstrapped = match how {
        Recovery::Manual => Some(manual_full_recovery(lab)?),
        Recovery::Agent => None,
    };
    let synced = wait_recovered(lab, &nodes, 3, OUTAGE_TIMEOUT.saturating_sub(at.elapsed()))?;
    let writes =
        load.wait_every_target_acked_after(at, OUTAGE_TIMEOUT.saturating_sub(at.elapsed()))?;
    if how == Recovery::Agent {
        bootstrapped = committed_bootstrap_after(lab, &nodes, before, Duration::from_secs(10))
            .ok()
            .map(|(_, b)| b.node);
    }
    Ok(FullOutage {
        to_writes_everywhere: writes.saturating_duration_since(at),
        to_all_synced: synced.saturating_duration_since(at),
        bootstrapped,
    })
}

// ----- the end of every case ----------------------------------------------------------------

/// Starts a load through every node's HAProxy, labelled `label`.
pub fn start_load(lab: &Lab, label: &str) -> Result<WriteLoad> {
    WriteLoad::start(lab, LoadOptions::every_haproxy(lab.spec(), label))
}

/// Starts a load through every node's HAProxy while no node may be up (the table must exist:
/// an earlier load of the case created it).
pub fn start_load_during_outage(lab: &Lab, label: &str) -> Result<WriteLoad> {
    let mut opts = LoadOptions::every_haproxy(lab.spec(), label);
    opts.create_table = false;
    WriteLoad::start(lab, opts)
}

/// Stops every load, waits until all three are Synced in a cluster of 3, and checks that
/// every acknowledged insert of every load is on every node. Prints each load's summary.
pub fn finish(lab: &Lab, case: &str, loads: &mut [WriteLoad]) -> Result<Vec<LoadSummary>> {
    let summaries: Vec<LoadSummary> = loads.iter_mut().map(WriteLoad::stop).collect();
    for s in &summaries {
        eprintln!("{case}: {s}");
    }
    wait_all_synced(lab, SETTLE_TIMEOUT).with_context(|| format!("{case}: the end"))?;
    let mut problems = Vec::new();
    for load in loads.iter() {
        let acked = load.acked().len();
        ensure!(
            acked > 0,
            "{case}: load {} had no acknowledged insert",
            load.tag()
        );
        for n in lab.spec().nodes() {
            let missing = load.missing_on(lab, n)?;
            if !missing.is_empty() {
                problems.push(format!(
                    "n{n} lacks {} of {acked} acknowledged inserts of load {} (first: {})",
                    missing.len(),
                    load.tag(),
                    missing
                        .iter()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    ensure!(problems.is_empty(), "{case}: {}", problems.join("; "));
    eprintln!("{case}: every acknowledged insert is on all three nodes, all Synced in 3");
    Ok(summaries)
}

/// The acknowledged inserts of `load` missing on at least one node (all three must answer).
pub fn lost_anywhere(lab: &Lab, load: &WriteLoad) -> Result<std::collections::BTreeSet<String>> {
    let mut lost = std::collections::BTreeSet::new();
    for n in lab.spec().nodes() {
        lost.extend(load.missing_on(lab, n)?);
    }
    Ok(lost)
}

/// The start of every case: all three Synced in a cluster of 3, every agent running.
fn precondition(lab: &Lab, case: &str) -> Result<()> {
    for n in lab.spec().nodes() {
        ensure!(
            lab.proc(n, Service::Agent)?.is_some(),
            "{case}: the agent of n{n} does not run"
        );
    }
    wait_all_synced(lab, SETTLE_TIMEOUT).with_context(|| format!("{case}: the start"))?;
    Ok(())
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

// ----- the cases ------------------------------------------------------------------------------

/// a. kill -9 of n3's mariadbd under load: its agent restarts it (`--wsrep-recover`, then
/// `--wsrep_start_position`) and it rejoins by IST, Synced in a cluster of 3 within 60 s.
pub fn kill9_one_node_is_restarted_by_its_agent_and_rejoins_by_ist(lab: &Lab) -> Result<()> {
    let case = "galera a (kill -9 one node)";
    precondition(lab, case)?;
    let mut load = start_load(lab, "ga")?;
    std::thread::sleep(WARM_UP);
    let k = kill9_one(lab, 3, Recovery::Agent)?;
    eprintln!(
        "{case}: n3 killed; restarted by its agent (pid {}) and Synced in 3 after {:.2}s ({:?})",
        k.new_pid,
        secs(k.to_synced),
        k.transfer
    );
    ensure!(
        k.transfer == Transfer::Ist,
        "{case}: n3 did not rejoin by IST alone ({:?}); its log since the kill ends:\n{}",
        k.transfer,
        tail(&k.log, 30)
    );
    finish(lab, case, std::slice::from_mut(&mut load))?;
    Ok(())
}

/// b. kill -9 of all three mariadbd between writes: the agents open an outage, bootstrap the
/// most advanced node and rejoin the others, with no operator, within 120 s; no mariadbd is
/// started before the bootstrap is committed ([`wait_outage_recovered`]).
pub fn kill_all_three_bootstraps_the_most_advanced_without_an_operator(lab: &Lab) -> Result<()> {
    let case = "galera b (kill -9 all three)";
    precondition(lab, case)?;
    let nodes = lab.spec().nodes();
    let before = newest_outage_number(lab, &nodes)?;
    let mut first = start_load(lab, "gb1")?;
    std::thread::sleep(WARM_UP);
    // Between writes: the load stops (its acknowledged set is final) before the kill.
    first.stop();
    let at = signal_mariadb_at_once(lab, &nodes, Signal::Kill)?;
    eprintln!("{case}: every mariadbd killed ({})", grastates_line(lab));
    let second = start_load_during_outage(lab, "gb2")?;
    let synced = wait_outage_recovered(lab, before, at, OUTAGE_TIMEOUT)?;
    let writes = second.wait_every_target_acked_after(at, OUTAGE_TIMEOUT)?;
    let (outage, b) = committed_bootstrap_after(lab, &nodes, before, Duration::from_secs(10))?;
    eprintln!(
        "{case}: outage {outage} bootstrapped n{} ({}); writes through every HAProxy after \
         {:.2}s, all three Synced after {:.2}s",
        b.node,
        b.kind,
        secs(writes.saturating_duration_since(at)),
        secs(synced.saturating_duration_since(at))
    );
    ensure!(
        b.kind == "automatic",
        "{case}: outage {outage} was bootstrapped by {} (want automatic)",
        b.kind
    );
    finish(lab, case, &mut [first, second])?;
    Ok(())
}

/// c. A crash that leaves `seqno: -1` (and `safe_to_bootstrap: 0`) in every grastate with n3
/// strictly ahead: the agents bootstrap n3, the node `--wsrep-recover` says is ahead, and no
/// acknowledged insert is lost. Recipe in the module docs.
pub fn crash_with_seqno_minus_one_everywhere_bootstraps_the_node_recovery_says_is_ahead(
    lab: &Lab,
) -> Result<()> {
    crash_with_one_node_ahead(lab, 3)
}

/// Case c with any node ahead: `ahead` takes 8 inserts that the other two receive but do not
/// apply (their appliers wait on a table lock), then every mariadbd is killed at once. The
/// agents must bootstrap `ahead` and lose no acknowledged insert. With `ahead` the committed
/// Galera writer (the node every HAProxy writes to) this is the harder variant: see the
/// module docs.
pub fn crash_with_one_node_ahead(lab: &Lab, ahead: u64) -> Result<()> {
    let case = format!("galera c (seqno -1 everywhere, n{ahead} ahead)");
    let case = case.as_str();
    precondition(lab, case)?;
    let nodes = lab.spec().nodes();
    ensure!(nodes.contains(&ahead), "{case}: no node {ahead}");
    let behind: Vec<u64> = nodes.iter().copied().filter(|&n| n != ahead).collect();
    let before = newest_outage_number(lab, &nodes)?;
    let mut through_haproxy = start_load(lab, "gc1")?;
    std::thread::sleep(WARM_UP);
    // The HAProxies write through the committed Galera writer, whose table may be about to be
    // locked.
    through_haproxy.stop();
    // Hold the appliers of the others: each lock lives as long as its session (until kill).
    let spec = lab.spec().clone();
    let lockers: Vec<_> = behind
        .iter()
        .map(|&n| {
            let spec = spec.clone();
            std::thread::spawn(move || {
                query::mysql(
                    &spec,
                    n,
                    &format!(
                        "LOCK TABLES {} READ; SELECT SLEEP(120)",
                        super::load::LOAD_TABLE
                    ),
                    Duration::from_secs(150),
                )
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let base = last_committed(lab, ahead)?;
    // Fewer rows than Galera's flow-control limit (16), or `ahead` would stall too.
    let mut opts = LoadOptions::to(vec![Target::Direct(ahead)], "gc3");
    opts.interval = Duration::from_millis(50);
    // The table exists; no DDL while the others hold table locks.
    opts.create_table = false;
    let mut rows = WriteLoad::start(lab, opts)?;
    lab.wait_for(
        &format!("8 inserts acknowledged by n{ahead}"),
        Duration::from_secs(20),
        || {
            let n = rows.acked().len();
            if n >= 8 {
                Ok(())
            } else {
                Err(format!(
                    "{n} acknowledged; last: {}",
                    rows.last_error(Target::Direct(ahead))
                ))
            }
        },
    )?;
    rows.stop();
    let mut committed = BTreeMap::new();
    for &n in &nodes {
        committed.insert(n, last_committed(lab, n)?);
    }
    eprintln!(
        "{case}: wsrep_last_committed {committed:?} (n{ahead} was at {base} before its inserts)"
    );
    ensure!(
        behind.iter().all(|n| committed[n] < committed[&ahead]),
        "{case}: the locks did not hold the others back: last committed {committed:?}"
    );
    let at = signal_mariadb_at_once(lab, &nodes, Signal::Kill)?;
    for l in lockers {
        // The lock sessions end with the servers ("Lost connection").
        let _ = l.join();
    }
    for &n in &nodes {
        let g = read_grastate(lab, n)?.ok_or_else(|| anyhow!("{case}: n{n} has no grastate"))?;
        ensure!(
            g.seqno == -1 && !g.safe_to_bootstrap,
            "{case}: after kill -9, n{n}'s grastate has seqno {} safe_to_bootstrap {} (want -1, 0)",
            g.seqno,
            u8::from(g.safe_to_bootstrap)
        );
    }
    eprintln!("{case}: every mariadbd killed ({})", grastates_line(lab));
    let after = start_load_during_outage(lab, "gc2")?;
    let synced = wait_outage_recovered(lab, before, at, OUTAGE_TIMEOUT)?;
    let (outage, b) = committed_bootstrap_after(lab, &nodes, before, Duration::from_secs(10))?;
    eprintln!(
        "{case}: outage {outage} bootstrapped n{} ({}); all three Synced after {:.2}s",
        b.node,
        b.kind,
        secs(synced.saturating_duration_since(at))
    );
    ensure!(
        b.node == ahead && b.kind == "automatic",
        "{case}: outage {outage} bootstrapped n{} ({}); want n{ahead}, the most advanced, \
         automatically",
        b.node,
        b.kind
    );
    after.wait_every_target_acked_after(at, SETTLE_TIMEOUT)?;
    finish(lab, case, &mut [through_haproxy, rows, after])?;
    Ok(())
}

/// d. Clean shutdown of all three (SIGTERM to n1, n3, then n2, as in a planned power-off:
/// the agents are stopped first and started again once every mariadbd is down): n2 holds
/// `safe_to_bootstrap: 1` and the agents bootstrap it.
pub fn clean_shutdown_of_all_three_bootstraps_the_safe_node(lab: &Lab) -> Result<()> {
    let case = "galera d (clean shutdown of all three)";
    precondition(lab, case)?;
    let nodes = lab.spec().nodes();
    let before = newest_outage_number(lab, &nodes)?;
    let mut load = start_load(lab, "gd")?;
    std::thread::sleep(WARM_UP);
    // The load keeps writing through the shutdown: whatever is acknowledged lands on the
    // nodes still up, and n2, the last, has all of it.
    stop_agents(lab, &nodes)?;
    stop_mariadb_in_order(lab, &[1, 3, 2])?;
    let g2 = read_grastate(lab, 2)?.ok_or_else(|| anyhow!("{case}: n2 has no grastate"))?;
    eprintln!("{case}: all stopped ({})", grastates_line(lab));
    ensure!(
        g2.safe_to_bootstrap && g2.seqno >= 0,
        "{case}: n2, the last to stop, has seqno {} safe_to_bootstrap {}",
        g2.seqno,
        u8::from(g2.safe_to_bootstrap)
    );
    let t = Instant::now();
    start_agents(lab, &nodes)?;
    let synced = wait_outage_recovered(lab, before, t, OUTAGE_TIMEOUT)?;
    let (outage, b) = committed_bootstrap_after(lab, &nodes, before, Duration::from_secs(10))?;
    eprintln!(
        "{case}: outage {outage} bootstrapped n{} ({}); all three Synced {:.2}s after the agents \
         started",
        b.node,
        b.kind,
        secs(synced.saturating_duration_since(t))
    );
    ensure!(
        b.node == 2,
        "{case}: outage {outage} bootstrapped n{} (want n2, the safe node)",
        b.node
    );
    load.wait_every_target_acked_after(synced, SETTLE_TIMEOUT)?;
    finish(lab, case, std::slice::from_mut(&mut load))?;
    Ok(())
}

/// e. Clean shutdown of all three with n1 last (so it would win: highest seqno, safe), then
/// n1's grastate.dat deleted: n1 counts as having no state and comes last; the agents
/// bootstrap the most advanced of the others (n3, stopped after n2).
pub fn a_node_without_grastate_comes_last(lab: &Lab) -> Result<()> {
    let case = "galera e (no grastate on n1)";
    precondition(lab, case)?;
    let nodes = lab.spec().nodes();
    let before = newest_outage_number(lab, &nodes)?;
    let mut load = start_load(lab, "ge")?;
    std::thread::sleep(WARM_UP);
    // No writes during the shutdown: rows acknowledged by n1 alone would be lost with its
    // grastate (it rejoins by SST from the node that bootstraps).
    load.stop();
    stop_agents(lab, &nodes)?;
    stop_mariadb_in_order(lab, &[2, 3, 1])?;
    eprintln!("{case}: all stopped ({})", grastates_line(lab));
    let mut seqnos = BTreeMap::new();
    for n in nodes {
        let g = read_grastate(lab, n)?.ok_or_else(|| anyhow!("{case}: n{n} has no grastate"))?;
        seqnos.insert(n, g.seqno);
    }
    let g1 = read_grastate(lab, 1)?.ok_or_else(|| anyhow!("{case}: n1 has no grastate"))?;
    ensure!(
        g1.safe_to_bootstrap && seqnos.values().all(|&s| s <= g1.seqno),
        "{case}: n1, the last to stop, should be safe and ahead: {}",
        grastates_line(lab)
    );
    let others: BTreeMap<u64, Option<i64>> = seqnos
        .iter()
        .filter(|(n, _)| **n != 1)
        .map(|(n, s)| (*n, Some(*s)))
        .collect();
    let want = most_advanced(&others).ok_or_else(|| anyhow!("no other node"))?;
    let path = lab.spec().grastate_file(1);
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    let t = Instant::now();
    start_agents(lab, &nodes)?;
    let synced = wait_outage_recovered(lab, before, t, OUTAGE_TIMEOUT)?;
    let (outage, b) = committed_bootstrap_after(lab, &nodes, before, Duration::from_secs(10))?;
    eprintln!(
        "{case}: outage {outage} bootstrapped n{} ({}); all three Synced {:.2}s after the agents \
         started",
        b.node,
        b.kind,
        secs(synced.saturating_duration_since(t))
    );
    ensure!(
        b.node == want,
        "{case}: outage {outage} bootstrapped n{} (want n{want}: n1 has no grastate, the others \
         stopped at seqnos {others:?})",
        b.node
    );
    let after = start_load(lab, "ge2")?;
    std::thread::sleep(WARM_UP);
    finish(lab, case, &mut [load, after])?;
    Ok(())
}

/// f. A full outage with n1 kept down (its agent killed, so it reports nothing): no bootstrap
/// is decided for 10 s; `triad galera bootstrap --dry-run --json` names n1 as the node waited
/// for; the override `--node 2 --accept-data-loss` brings n2 and n3 back; once n1's agent
/// runs again, n1 rejoins.
pub fn one_node_kept_down_waits_and_the_override_works(lab: &Lab) -> Result<()> {
    let case = "galera f (n1 kept down, operator override)";
    precondition(lab, case)?;
    let nodes = lab.spec().nodes();
    let before = newest_outage_number(lab, &nodes)?;
    let mut first = start_load(lab, "gf1")?;
    std::thread::sleep(WARM_UP);
    first.stop();
    lab.kill(1, Service::Agent, Signal::Kill)?;
    let at = signal_mariadb_at_once(lab, &nodes, Signal::Kill)?;
    eprintln!(
        "{case}: n1's agent and every mariadbd killed ({})",
        grastates_line(lab)
    );
    // 10 s: no bootstrap, and nobody starts a mariadbd.
    while at.elapsed() < Duration::from_secs(10) {
        let GaleraView { outage, history } = galera_view(lab, &[2, 3])?;
        let decided = outage
            .as_ref()
            .filter(|o| o.number > before && o.bootstrap.is_some())
            .map(|o| format!("{o:?}"))
            .or_else(|| {
                history
                    .filter(|(n, _)| *n > before)
                    .map(|h| format!("{h:?}"))
            });
        if let Some(d) = decided {
            bail!(
                "{case}: a bootstrap was decided {:.1}s after the kill while n1 is silent: {d}",
                secs(at.elapsed())
            );
        }
        for n in nodes {
            if let Some(id) = mariadb_proc(lab, n)? {
                bail!(
                    "{case}: mariadb on n{n} runs again (pid {}) {:.1}s after the kill, with no \
                     bootstrap decided",
                    id.pid,
                    secs(at.elapsed())
                );
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let dry = triad_cli(lab, 2, &["galera", "bootstrap", "--dry-run", "--json"])?;
    eprintln!("{case}: dry run (exit {}): {}", dry.code, dry.stdout.trim());
    let answer = dry.json()?;
    ensure!(
        names_waited_for(&answer, 1),
        "{case}: the dry run does not name n1 as waited for: {answer}"
    );
    let t = Instant::now();
    let over = triad_cli(
        lab,
        2,
        &[
            "galera",
            "bootstrap",
            "--node",
            "2",
            "--accept-data-loss",
            "--reason",
            "lab test",
            "--json",
        ],
    )?;
    eprintln!(
        "{case}: override (exit {}): {}",
        over.code,
        over.stdout.trim()
    );
    ensure!(
        over.code == 0,
        "{case}: the override failed (exit {}): {} {}",
        over.code,
        over.stdout.trim(),
        over.stderr.trim()
    );
    let two = wait_recovered(lab, &[2, 3], 2, OUTAGE_TIMEOUT)?;
    let (outage, b) = committed_bootstrap_after(lab, &[2, 3], before, Duration::from_secs(10))?;
    eprintln!(
        "{case}: outage {outage} bootstrapped n{} ({}); n2 and n3 Synced {:.2}s after the \
         override",
        b.node,
        b.kind,
        secs(two.saturating_duration_since(t))
    );
    ensure!(
        b.node == 2 && b.kind == "operator",
        "{case}: outage {outage} bootstrapped n{} ({}); want n2 by the operator",
        b.node,
        b.kind
    );
    let second = start_load(lab, "gf2")?;
    let t = Instant::now();
    lab.start(1, Service::Agent)?;
    let synced = wait_recovered(lab, &nodes, 3, REJOIN_TIMEOUT)?;
    eprintln!(
        "{case}: n1's agent started; n1 Synced in 3 after {:.2}s",
        secs(synced.saturating_duration_since(t))
    );
    std::thread::sleep(Duration::from_secs(1));
    finish(lab, case, &mut [first, second])?;
    Ok(())
}

/// g. n3 cut off from its peers for 15 s: its mariadbd goes non-Primary but is never restarted
/// (same pid throughout), and it is Synced in 3 again after the heal, still the same process.
pub fn partition_of_one_node_is_not_restarted_and_rejoins_after_the_heal(lab: &Lab) -> Result<()> {
    let case = "galera g (partition of n3)";
    precondition(lab, case)?;
    let pid = mariadb_proc(lab, 3)?.ok_or_else(|| anyhow!("{case}: n3's mariadb does not run"))?;
    let mut load = start_load(lab, "gg")?;
    std::thread::sleep(WARM_UP);
    lab.partition(3, None, false)?;
    let cut = Instant::now();
    let mut non_primary_at = None;
    while cut.elapsed() < Duration::from_secs(15) {
        let now = mariadb_proc(lab, 3)?;
        if now != Some(pid) {
            let _ = lab.heal();
            bail!(
                "{case}: n3's mariadbd changed from pid {} to {now:?} {:.1}s into the cut",
                pid.pid,
                secs(cut.elapsed())
            );
        }
        if non_primary_at.is_none()
            && galera_probe(lab, 3, |g| g.cluster_status != "Primary").is_ok()
        {
            non_primary_at = Some(cut.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    lab.heal()?;
    let healed = Instant::now();
    let synced = wait_recovered(lab, &[3], 3, REJOIN_TIMEOUT)?;
    ensure!(
        mariadb_proc(lab, 3)? == Some(pid),
        "{case}: n3's mariadbd is not pid {} any more after the heal",
        pid.pid
    );
    eprintln!(
        "{case}: n3 non-Primary after {}; never restarted; Synced in 3 {:.2}s after the heal",
        non_primary_at.map_or_else(|| "(not seen)".to_string(), |d| format!("{:.2}s", secs(d))),
        secs(synced.saturating_duration_since(healed))
    );
    finish(lab, case, std::slice::from_mut(&mut load))?;
    Ok(())
}

/// A case: runs on the lab, `Err` says what went wrong.
pub type Case = fn(&Lab) -> Result<()>;

/// Every case, in the order above, by name (for a harness that registers them).
pub fn cases() -> Vec<(&'static str, Case)> {
    vec![
        (
            "kill9_one_node_is_restarted_by_its_agent_and_rejoins_by_ist",
            kill9_one_node_is_restarted_by_its_agent_and_rejoins_by_ist,
        ),
        (
            "kill_all_three_bootstraps_the_most_advanced_without_an_operator",
            kill_all_three_bootstraps_the_most_advanced_without_an_operator,
        ),
        (
            "crash_with_seqno_minus_one_everywhere_bootstraps_the_node_recovery_says_is_ahead",
            crash_with_seqno_minus_one_everywhere_bootstraps_the_node_recovery_says_is_ahead,
        ),
        (
            "clean_shutdown_of_all_three_bootstraps_the_safe_node",
            clean_shutdown_of_all_three_bootstraps_the_safe_node,
        ),
        (
            "a_node_without_grastate_comes_last",
            a_node_without_grastate_comes_last,
        ),
        (
            "one_node_kept_down_waits_and_the_override_works",
            one_node_kept_down_waits_and_the_override_works,
        ),
        (
            "partition_of_one_node_is_not_restarted_and_rejoins_after_the_heal",
            partition_of_one_node_is_not_restarted_and_rejoins_after_the_heal,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn grastate_parses_crash_clean_and_safe() {
        let g = parse_grastate(
            "# GALERA saved state\nversion: 2.1\nuuid:    ab2e5ea7-efbc-11f1-9ad7-2a6d805f47fe\n\
             seqno:   -1\nsafe_to_bootstrap: 0\n",
        )
        .unwrap();
        assert_eq!(g.seqno, -1);
        assert!(!g.safe_to_bootstrap);
        assert_eq!(g.uuid, "ab2e5ea7-efbc-11f1-9ad7-2a6d805f47fe");
        let g = parse_grastate("uuid: x\nseqno:   70\nsafe_to_bootstrap: 1\n").unwrap();
        assert_eq!((g.seqno, g.safe_to_bootstrap), (70, true));
        assert!(parse_grastate("version: 2.1\n").is_err());
    }

    #[test]
    fn a_full_sst_is_told_from_an_ist_although_both_log_ist_received() {
        // Captured on the lab: a rejoin after kill -9 with its recovered position ...
        let ist = "WSREP_SST: [INFO] rsync IST completed on joiner (20261204 08:29:23.204)\n\
                   2026-12-04  8:29:23 3 [Note] WSREP: SST received\n\
                   2026-12-04  8:29:23 2 [Note] WSREP: IST received: ab2e:36\n";
        // ... and a join with an empty datadir.
        let sst = "WSREP_SST: [INFO] rsync SST completed on joiner (20261204 08:28:26.786)\n\
                   2026-12-04  8:28:27 3 [Note] WSREP: SST received\n\
                   2026-12-04  8:28:27 2 [Note] WSREP: IST received: ab2e:11\n";
        assert_eq!(state_transfer_in(ist), Transfer::Ist);
        assert_eq!(state_transfer_in(sst), Transfer::Sst);
        assert_eq!(state_transfer_in("nothing yet"), Transfer::Unknown);
    }

    #[test]
    fn history_lines_give_the_outage_and_the_node() {
        let auto = "galera outage 3: automatic bootstrap n2 at \
                    ab2e5ea7-efbc-11f1-9ad7-2a6d805f47fe:70 (new-cluster): safe; evidence: ...";
        assert_eq!(
            bootstrap_in_history_line(auto),
            Some((
                3,
                BootstrapView {
                    node: 2,
                    kind: "automatic".into()
                }
            ))
        );
        let op = "galera outage 4 (opened by it): operator override by root: bootstrap n12 at \
                  an unknown position (new-cluster): lab test; evidence: n1 silent";
        assert_eq!(
            bootstrap_in_history_line(op),
            Some((
                4,
                BootstrapView {
                    node: 12,
                    kind: "operator".into()
                }
            ))
        );
        for other in [
            "galera outage 3 opened: no Primary anywhere",
            "galera outage 3 ended: n2 Primary of 3",
            "automatic galera bootstrap n3 for outage 3 rejected: outage 3 already bootstraps n2",
            "galera outage 3: automatic bootstrap n3 rejected",
        ] {
            assert_eq!(bootstrap_in_history_line(other), None, "{other}");
        }
    }

    #[test]
    fn the_newest_bootstrap_comes_from_galera_entries_newest_first() {
        let status = json!({"history": [
            {"kind": "galera", "details": "galera outage 2 ended: back"},
            {"kind": "redis", "details": "galera outage 9: automatic bootstrap n1 at x"},
            {"kind": "galera", "details": "galera outage 2: automatic bootstrap n3 at x"},
            {"kind": "galera", "details": "galera outage 1: automatic bootstrap n2 at x"},
        ]});
        assert_eq!(
            newest_bootstrap_in_history(&status).map(|(o, b)| (o, b.node)),
            Some((2, 3))
        );
    }

    #[test]
    fn the_outage_is_read_from_status_and_from_get_v1_galera() {
        let outage = json!({
            "number": 2,
            "opened": {"index": 10, "term": 1, "at": 0, "reason": "r"},
            "bootstrap": {"node": 3, "uuid": "u", "seqno": 65, "mode": "new-cluster",
                          "kind": "automatic", "by": "", "reason": "r", "evidence": "e",
                          "index": 11, "term": 1, "at": 0},
            "ended": null
        });
        for status in [
            json!({"galera": {"authority": {"outage": outage.clone()}}}),
            json!({"authority": {"outage": outage.clone()}}),
        ] {
            let v = galera_outage_json(&status).and_then(outage_view).unwrap();
            assert_eq!(v.number, 2);
            assert!(v.open);
            assert_eq!(
                v.bootstrap,
                Some(BootstrapView {
                    node: 3,
                    kind: "automatic".into()
                })
            );
        }
        let ended = json!({"galera": {"authority": {"outage":
            {"number": 1, "bootstrap": null, "ended": {"index": 3}}}}});
        let v = galera_outage_json(&ended).and_then(outage_view).unwrap();
        assert!(!v.open && v.bootstrap.is_none());
        assert!(galera_outage_json(&json!({"galera": {"authority": {"outage": null}}})).is_none());
        assert!(has_galera_section(&json!({"galera": {}})));
        assert!(!has_galera_section(&json!({"redis": {}})));
    }

    #[test]
    fn the_local_recovery_line_says_what_it_does_and_its_last_error() {
        let s = json!({"galera": {"verdict": null, "local": {
            "recovery": {"doing": "stopped while n2 are Primary: rejoining",
                         "restarts_last_hour": 6, "capped": true},
            "last_error": "start failed"}}});
        let line = local_recovery_line(&s);
        assert!(
            line.contains("rejoining (restarts last hour 6, CAPPED)"),
            "{line}"
        );
        assert!(line.contains("last error: start failed"), "{line}");
        assert_eq!(
            local_recovery_line(&json!({})),
            "no galera section in its status"
        );
    }

    #[test]
    fn the_dry_run_names_the_node_it_waits_for() {
        let ranking = json!([
            {"node": 1, "rank": null, "tier": "excluded", "reason": "its agent is silent"},
            {"node": 2, "rank": 1, "tier": "common", "reason": "seqno 40"},
        ]);
        let answer = |verdict: &str| json!({"next": {"verdict": verdict, "ranking": ranking}});
        let waiting = "no outage is open; if one were: waiting for n1 (its agent is silent \
                       for 12.0s): no Primary component in any report, but no outage opens \
                       until every node reports";
        assert!(names_waited_for(&answer(waiting), 1));
        // n2 is named, but not as waited for.
        assert!(!names_waited_for(
            &answer("waiting for n1 (silent): then bootstrap n2"),
            2
        ));
        assert!(!names_waited_for(&answer("waiting for n12 (silent): x"), 1));
        assert!(!names_waited_for(&answer("bootstrap n1 at x"), 1));
        // Named, but the ranking does not exclude it.
        let ranked = json!({"next": {"verdict": "waiting for n2 (x): y", "ranking": ranking}});
        assert!(!names_waited_for(&ranked, 2));
    }

    #[test]
    fn the_most_advanced_node_wins_ties_go_to_the_lowest_id() {
        let m = |v: &[(u64, Option<i64>)]| most_advanced(&v.iter().copied().collect());
        assert_eq!(m(&[(1, Some(55)), (2, Some(55)), (3, Some(65))]), Some(3));
        assert_eq!(m(&[(1, Some(55)), (2, Some(55)), (3, Some(50))]), Some(1));
        assert_eq!(m(&[(1, None), (2, Some(5)), (3, Some(5))]), Some(2));
        assert_eq!(m(&[]), None);
        assert_eq!(
            position_seqno("ab2e5ea7-efbc-11f1-9ad7-2a6d805f47fe:65"),
            Some(65)
        );
        assert_eq!(position_seqno("garbage"), None);
    }

    #[test]
    fn names_node_does_not_match_longer_ids() {
        assert!(names_node("waiting for n1.", 1));
        assert!(names_node("(n1, n2)", 2));
        assert!(!names_node("n12", 1));
        assert!(!names_node("xn1", 1));
    }

    #[test]
    fn every_case_is_listed_once() {
        let names: Vec<&str> = cases().iter().map(|(n, _)| *n).collect();
        let unique: std::collections::BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(names.len(), 7);
        assert_eq!(unique.len(), 7);
    }
}
