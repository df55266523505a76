//! The Galera writer authority (issue 13) as the lab sees it: the committed writer in the
//! agents' status, how each HAProxy's `be_mysql` routes, and an invariant monitor that samples
//! every HAProxy during a test. Shared by the lab tests (`tests/tests/lab.rs`,
//! `lab::galera_writer::*`) and the Galera benchmark (`triad-galera-bench`).
//!
//! The contract with the agent (written before the agent side existed, so each place that
//! depends on its JSON is marked `// SHAPE:`):
//! - `GET /v1/status` (and `triad status --json`) has a top-level `galera_writer`:
//!   `{"writer": ID|null, "epoch": U64, "change": {"kind": "initial"|"automatic"|"switchover",
//!   "from": ID|null, "to": ID, "epoch": U64, "index": U64, "reason": "..."}|null,
//!   "evicted": {"ID": {"gcomm_uuid": "...", "index": U64, "reason": "..."}},
//!   "ranking": [{"node": ID, "eligible": bool, "reason": "..."}]}`.
//! - `GET /galera/writer` on each agent's API answers 200 only while that node is the
//!   committed writer and its own fresh check says Synced and Primary; every HAProxy's
//!   `be_mysql` checks each server against its own agent with it (`configs::haproxy_cfg`).
//! - Each agent sets the committed writer's `db<id>` ready and every other `db*` maint in its
//!   HAProxy's `be_mysql`, and shuts down the sessions of a server that leaves.
//!
//! Words used here: a server is *in service* when its admin state is ready (not maint, not
//! drain) and *routable* when it is in service and passes its checks (what HAProxy may send a
//! new connection to). The invariant of the issue, "at most one writer ready in any HAProxy at
//! any instant", is checked on routable servers: an in-service server whose check fails takes
//! no connection. Samples with more than one server in service are counted and shown, not
//! failed, because the order of the reconciler's two `set server` commands is the agent's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use serde::Deserialize;
use serde_json::Value;

use super::galera_cases::agent_status_json;
use super::query::{self, HaproxyServer};
use super::spec::LabSpec;
use super::Lab;

/// The backend Triad routes to the committed Galera writer.
pub const WRITER_BACKEND: &str = "be_mysql";
/// The clustercheck-style backend of the benchmark's baseline (not managed by Triad).
pub const RECIPE_BACKEND: &str = "be_mysql_recipe";
/// Server name prefix of both MySQL backends.
pub const DB_PREFIX: &str = "db";

// ----- the status -----------------------------------------------------------------------------

/// The committed Galera writer and what goes with it, as one agent's status shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct WriterView {
    /// The committed writer, if any.
    #[serde(default)]
    pub writer: Option<u64>,
    /// Its epoch (every change raises it).
    #[serde(default)]
    pub epoch: u64,
    /// The last change.
    #[serde(default)]
    pub change: Option<WriterChange>,
    /// Nodes evicted from the Galera cluster (`evs.evict`), by node id.
    #[serde(default, deserialize_with = "node_keys")]
    pub evicted: BTreeMap<u64, Evicted>,
    /// Every node, best first, with whether it may be the writer and why.
    #[serde(default)]
    pub ranking: Vec<Ranked>,
}

/// A committed change of writer.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct WriterChange {
    /// `initial`, `automatic` or `switchover`.
    pub kind: String,
    /// The writer before, if any.
    #[serde(default)]
    pub from: Option<u64>,
    /// The new writer.
    pub to: u64,
    /// The epoch it set.
    pub epoch: u64,
    /// The Raft index it was committed at.
    #[serde(default)]
    pub index: u64,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// One evicted node.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Evicted {
    /// Its `wsrep_gcomm_uuid` when it was evicted.
    pub gcomm_uuid: String,
    /// The Raft index of the decision.
    #[serde(default)]
    pub index: u64,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// One node of the writer ranking.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Ranked {
    /// The node.
    pub node: u64,
    /// Whether it may be the writer now (Synced and Primary, fresh, not in maintenance).
    pub eligible: bool,
    /// Why (not).
    #[serde(default)]
    pub reason: String,
}

fn node_keys<'de, D>(d: D) -> std::result::Result<BTreeMap<u64, Evicted>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw: Option<BTreeMap<String, Evicted>> = Option::deserialize(d)?;
    raw.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            k.trim_start_matches('n')
                .parse::<u64>()
                .map(|n| (n, v))
                .map_err(|_| serde::de::Error::custom(format!("evicted key {k:?} is no node id")))
        })
        .collect()
}

impl WriterView {
    /// Whether `node` is readmitted: not evicted, and ranked eligible.
    pub fn readmitted(&self, node: u64) -> bool {
        !self.evicted.contains_key(&node) && self.eligible(node)
    }

    /// Whether the ranking says `node` may be the writer.
    pub fn eligible(&self, node: u64) -> bool {
        self.ranking.iter().any(|r| r.node == node && r.eligible)
    }

    /// One line for messages: `writer n2 epoch 5 (automatic from n1: ...), evicted n3`.
    pub fn line(&self) -> String {
        let mut out = format!(
            "writer {} epoch {}",
            self.writer
                .map_or_else(|| "none".to_string(), |w| format!("n{w}")),
            self.epoch
        );
        if let Some(c) = &self.change {
            out.push_str(&format!(
                " ({} from {} at index {}: {})",
                c.kind,
                c.from
                    .map_or_else(|| "none".to_string(), |f| format!("n{f}")),
                c.index,
                c.reason
            ));
        }
        if !self.evicted.is_empty() {
            let ev: Vec<String> = self
                .evicted
                .iter()
                .map(|(n, e)| format!("n{n} ({})", e.gcomm_uuid))
                .collect();
            out.push_str(&format!(", evicted {}", ev.join(" ")));
        }
        if !self.ranking.is_empty() {
            let r: Vec<String> = self
                .ranking
                .iter()
                .map(|r| {
                    format!(
                        "n{}{}",
                        r.node,
                        if r.eligible { "" } else { " (ineligible)" }
                    )
                })
                .collect();
            out.push_str(&format!("; ranking {}", r.join(", ")));
        }
        out
    }
}

/// The `galera_writer` section of an agent's status JSON.
pub fn writer_view(status: &Value) -> Result<WriterView> {
    // SHAPE: top-level `galera_writer` of `GET /v1/status` (the lead's contract, see the
    // module docs).
    let section = status
        .get("galera_writer")
        .filter(|v| !v.is_null())
        .ok_or_else(|| anyhow!("the status has no `galera_writer` section"))?;
    serde_json::from_value(section.clone())
        .with_context(|| format!("`galera_writer` does not have the agreed shape: {section}"))
}

/// Node `n`'s agent's view of the writer.
pub fn writer_view_of(lab: &Lab, n: u64) -> Result<WriterView> {
    writer_view(&agent_status_json(lab, n)?).with_context(|| format!("agent n{n}"))
}

/// The writer and epoch every agent of `nodes` reports, when they all agree; else what each
/// said.
pub fn agreed_writer(lab: &Lab, nodes: &[u64]) -> std::result::Result<WriterView, String> {
    let mut views = Vec::new();
    let mut seen = Vec::new();
    for &n in nodes {
        match writer_view_of(lab, n) {
            Ok(v) => {
                seen.push(format!("n{n}: {}", v.line()));
                views.push(v);
            }
            Err(e) => seen.push(format!("n{n}: {e:#}")),
        }
    }
    match views.first() {
        Some(first)
            if views.len() == nodes.len()
                && views
                    .iter()
                    .all(|v| (v.writer, v.epoch) == (first.writer, first.epoch)) =>
        {
            Ok(first.clone())
        }
        _ => Err(seen.join(" | ")),
    }
}

/// Waits until every agent of `nodes` agrees on a writer other than `old.writer` at an epoch
/// above `old.epoch`; returns their view.
pub fn wait_new_writer(
    lab: &Lab,
    nodes: &[u64],
    old: &WriterView,
    timeout: Duration,
) -> Result<WriterView> {
    lab.wait_for(
        &format!(
            "agents {} to commit a new Galera writer (was {})",
            names(nodes),
            old.line()
        ),
        timeout,
        || {
            let v = agreed_writer(lab, nodes)?;
            match v.writer {
                Some(w) if Some(w) != old.writer && v.epoch > old.epoch => Ok(v),
                _ => Err(format!("still {}", v.line())),
            }
        },
    )
}

/// `n1 n2`.
pub fn names(nodes: &[u64]) -> String {
    nodes
        .iter()
        .map(|n| format!("n{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

// ----- HAProxy routing ------------------------------------------------------------------------

/// How one HAProxy routes one MySQL backend: node ids of its `db*` servers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routing {
    /// In service by admin state (ready).
    pub in_service: Vec<u64>,
    /// In service and passing checks: where a new connection may go.
    pub routable: Vec<u64>,
}

impl std::fmt::Display for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[u64]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.iter()
                    .map(|n| format!("{DB_PREFIX}{n}"))
                    .collect::<Vec<_>>()
                    .join(",")
            }
        };
        write!(
            f,
            "in service {}, routable {}",
            list(&self.in_service),
            list(&self.routable)
        )
    }
}

impl Routing {
    /// Exactly `db<writer>` in service and routable.
    pub fn routes_only_to(&self, writer: u64) -> bool {
        self.in_service == [writer] && self.routable == [writer]
    }
}

/// Node id of a server named `<prefix><id>`.
pub fn server_node(name: &str, prefix: &str) -> Option<u64> {
    name.strip_prefix(prefix)?.parse().ok()
}

/// The routing of `backend` among `servers` (rows of every backend may be given).
pub fn routing(servers: &[HaproxyServer], backend: &str) -> Routing {
    let mut r = Routing::default();
    for s in servers.iter().filter(|s| s.backend == backend) {
        let Some(n) = server_node(&s.server, DB_PREFIX) else {
            continue;
        };
        if s.is_in_service() {
            r.in_service.push(n);
        }
        if s.is_routable() {
            r.routable.push(n);
        }
    }
    r.in_service.sort_unstable();
    r.routable.sort_unstable();
    r
}

/// Node `n`'s HAProxy's routing of `backend` (one admin-socket command, no process spawn).
pub fn routing_of(spec: &LabSpec, n: u64, backend: &str, timeout: Duration) -> Result<Routing> {
    let text = query::haproxy(spec, n, &format!("show servers state {backend}"), timeout)?;
    Ok(routing(&query::parse_servers_state(&text), backend))
}

/// The invariant of one sample: at most one routable server. `Err` says what was seen.
pub fn at_most_one_routable(r: &Routing) -> std::result::Result<(), String> {
    if r.routable.len() <= 1 {
        Ok(())
    } else {
        Err(format!("{} routable servers: {r}", r.routable.len()))
    }
}

/// Waits until the HAProxy of every node in `nodes` has exactly `db<writer>` in service and
/// routable in `be_mysql`; returns when the last one did.
pub fn wait_routed_to(lab: &Lab, nodes: &[u64], writer: u64, timeout: Duration) -> Result<Instant> {
    lab.wait_for(
        &format!(
            "the HAProxies of {} to route {WRITER_BACKEND} to {DB_PREFIX}{writer} only",
            names(nodes)
        ),
        timeout,
        || {
            let bad: Vec<String> = nodes
                .iter()
                .filter_map(|&n| {
                    match routing_of(lab.spec(), n, WRITER_BACKEND, query::QUERY_TIMEOUT) {
                        Ok(r) if r.routes_only_to(writer) => None,
                        Ok(r) => Some(format!("n{n}: {r}")),
                        Err(e) => Some(format!("n{n}: {e:#}")),
                    }
                })
                .collect();
            if bad.is_empty() {
                Ok(Instant::now())
            } else {
                Err(bad.join("; "))
            }
        },
    )
}

/// A probe for a healthy lab: every agent agrees on a writer, and every HAProxy routes
/// `be_mysql` to it only. `Ok(writer)`.
pub fn writer_routed_everywhere(lab: &Lab) -> std::result::Result<u64, String> {
    let nodes = lab.spec().nodes();
    let v = agreed_writer(lab, &nodes)?;
    let w = v
        .writer
        .ok_or_else(|| format!("no Galera writer committed: {}", v.line()))?;
    let bad: Vec<String> = nodes
        .iter()
        .filter_map(
            |&n| match routing_of(lab.spec(), n, WRITER_BACKEND, query::QUERY_TIMEOUT) {
                Ok(r) if r.routes_only_to(w) => None,
                Ok(r) => Some(format!("n{n}'s {WRITER_BACKEND}: {r} (writer n{w})")),
                Err(e) => Some(format!("n{n}: {e:#}")),
            },
        )
        .collect();
    if bad.is_empty() {
        Ok(w)
    } else {
        Err(bad.join("; "))
    }
}

/// Which node the recipe backend writes to now: the first routable active (non-backup)
/// server, else the first routable backup (HAProxy uses one backup at a time, the first in
/// the config, without `option allbackups`). Takes rows with `backup` filled in
/// ([`query::haproxy_servers`]).
pub fn recipe_writer(servers: &[HaproxyServer]) -> Option<u64> {
    let mut rows: Vec<&HaproxyServer> = servers
        .iter()
        .filter(|s| s.backend == RECIPE_BACKEND && s.is_routable())
        .collect();
    rows.sort_by_key(|s| (s.backup, server_node(&s.server, DB_PREFIX)));
    rows.first().and_then(|s| server_node(&s.server, DB_PREFIX))
}

// ----- the invariant monitor ------------------------------------------------------------------

/// What [`RoutingMonitor`] saw.
#[derive(Clone, Debug, Default)]
pub struct MonitorReport {
    /// Samples taken (one sample reads every HAProxy once).
    pub samples: u64,
    /// Samples in which some HAProxy had more than one server of `be_mysql` in service
    /// (counted, not a violation: see the module docs).
    pub several_in_service: u64,
    /// An example of those.
    pub several_in_service_example: Option<String>,
    /// Admin-socket reads that failed.
    pub read_errors: u64,
    /// Violations, with the time since the monitor started (the first 20).
    pub violations: Vec<String>,
    /// All violations, counted.
    pub violation_count: u64,
}

impl std::fmt::Display for MonitorReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} samples of every HAProxy's {WRITER_BACKEND}: {} violations, {} samples with \
             several servers in service, {} failed reads",
            self.samples, self.violation_count, self.several_in_service, self.read_errors
        )?;
        if let Some(e) = &self.several_in_service_example {
            write!(f, " (e.g. {e})")?;
        }
        Ok(())
    }
}

impl MonitorReport {
    /// Fails, listing the first violations, when there was any.
    pub fn ensure_clean(&self, case: &str) -> Result<()> {
        ensure!(
            self.violation_count == 0,
            "{case}: {} invariant violations in {} samples; first: {}",
            self.violation_count,
            self.samples,
            self.violations.join("; ")
        );
        ensure!(
            self.samples > 0,
            "{case}: the invariant monitor took no sample"
        );
        Ok(())
    }
}

struct MonitorShared {
    stop: AtomicBool,
    /// Node watched for "never routable while it answers not Synced" (0: none).
    watch: AtomicU64,
    report: Mutex<MonitorReport>,
}

/// Samples every HAProxy's `be_mysql` every 100 ms on a thread of its own, until stopped (or
/// for at most 15 minutes) and checks at every sample:
/// - at most one routable server in any HAProxy ([`at_most_one_routable`]);
/// - for the watched node (say, a node that was killed and rejoins): never routable in any
///   HAProxy while its MariaDB answers and is not Synced and Primary. The HAProxies are read
///   first, then the node, so a node that became Synced in between is not mistaken for one
///   routed while not Synced (a rejoining node only moves towards Synced). A node that does
///   not answer is not judged: a just-killed writer stays routable for one check interval.
pub struct RoutingMonitor {
    shared: Arc<MonitorShared>,
    thread: Option<JoinHandle<()>>,
    started: Instant,
}

/// Interval of [`RoutingMonitor`]'s samples.
pub const MONITOR_INTERVAL: Duration = Duration::from_millis(100);
const MONITOR_MAX: Duration = Duration::from_secs(900);

impl RoutingMonitor {
    /// Starts sampling.
    pub fn start(lab: &Lab) -> Result<RoutingMonitor> {
        let spec = lab.spec().clone();
        let shared = Arc::new(MonitorShared {
            stop: AtomicBool::new(false),
            watch: AtomicU64::new(0),
            report: Mutex::new(MonitorReport::default()),
        });
        let started = Instant::now();
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("writer-monitor".into())
            .spawn(move || monitor_loop(&spec, &s, started))
            .context("cannot spawn the invariant monitor")?;
        Ok(RoutingMonitor {
            shared,
            thread: Some(thread),
            started,
        })
    }

    /// From now on, also checks that `node` is never routable while it answers not Synced.
    pub fn watch(&self, node: u64) {
        self.shared.watch.store(node, Ordering::SeqCst);
    }

    /// When it started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// What it saw so far.
    pub fn report(&self) -> MonitorReport {
        self.shared
            .report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops sampling and returns what it saw.
    pub fn stop(&mut self) -> MonitorReport {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.report()
    }
}

impl Drop for RoutingMonitor {
    fn drop(&mut self) {
        self.stop();
    }
}

fn monitor_loop(spec: &LabSpec, shared: &MonitorShared, started: Instant) {
    let read_timeout = Duration::from_millis(500);
    while !shared.stop.load(Ordering::SeqCst) && started.elapsed() < MONITOR_MAX {
        let t = Instant::now();
        let at = started.elapsed().as_secs_f64();
        let mut found = Vec::new();
        let mut several = None;
        let mut errors = 0;
        let watch = shared.watch.load(Ordering::SeqCst);
        let mut watched_routable = Vec::new();
        for n in spec.nodes() {
            match routing_of(spec, n, WRITER_BACKEND, read_timeout) {
                Ok(r) => {
                    if let Err(e) = at_most_one_routable(&r) {
                        found.push(format!("+{at:.2}s n{n}'s HAProxy: {e}"));
                    }
                    if r.in_service.len() > 1 {
                        several = Some(format!("+{at:.2}s n{n}: {r}"));
                    }
                    if watch != 0 && r.routable.contains(&watch) {
                        watched_routable.push(n);
                    }
                }
                Err(_) => errors += 1,
            }
        }
        if !watched_routable.is_empty() {
            if let Ok(g) = query::galera_status(spec, watch, read_timeout) {
                if !(g.state == "Synced" && g.cluster_status == "Primary") {
                    found.push(format!(
                        "+{at:.2}s {DB_PREFIX}{watch} routable in the HAProxies of {} while n{watch} \
                         is {g}",
                        names(&watched_routable)
                    ));
                }
            }
        }
        {
            let mut rep = shared.report.lock().unwrap_or_else(PoisonError::into_inner);
            rep.samples += 1;
            rep.read_errors += errors;
            if let Some(s) = several {
                rep.several_in_service += 1;
                rep.several_in_service_example.get_or_insert(s);
            }
            rep.violation_count += found.len() as u64;
            for v in found {
                if rep.violations.len() < 20 {
                    rep.violations.push(v);
                }
            }
        }
        if let Some(rest) = MONITOR_INTERVAL.checked_sub(t.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}

// ----- the Galera side ------------------------------------------------------------------------

/// Node `n`'s `wsrep_gcomm_uuid` (what an eviction names).
pub fn gcomm_uuid(lab: &Lab, n: u64) -> Result<String> {
    let vars = query::wsrep_vars(lab.spec(), n, query::QUERY_TIMEOUT)?;
    match vars.get("wsrep_gcomm_uuid") {
        Some(u) if !u.is_empty() => Ok(u.clone()),
        _ => bail!("n{n}: no wsrep_gcomm_uuid in its status"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(backend: &str, server: &str, op: u32, admin: u32, backup: bool) -> HaproxyServer {
        HaproxyServer {
            backend: backend.into(),
            server: server.into(),
            addr: "10.77.0.11".into(),
            op_state: op,
            admin_state: admin,
            backup,
        }
    }

    #[test]
    fn the_writer_section_parses_with_every_field() {
        let status = json!({"node_id": 1, "galera_writer": {
        "writer": 2, "epoch": 7,
        "change": {"kind": "automatic", "from": 1, "to": 2, "epoch": 7, "index": 120,
                   "reason": "n1 is not Synced: its mariadbd refused"},
        "evicted": {"1": {"gcomm_uuid": "9b1c-aa", "index": 121, "reason": "refused"}},
        "ranking": [
            {"node": 2, "eligible": true, "reason": "Synced, Primary"},
            {"node": 3, "eligible": true, "reason": "Synced, Primary"},
            {"node": 1, "eligible": false, "reason": "refused"}
        ]}});
        let v = writer_view(&status).unwrap();
        assert_eq!((v.writer, v.epoch), (Some(2), 7));
        let c = v.change.clone().unwrap();
        assert_eq!(
            (c.kind.as_str(), c.from, c.to, c.index),
            ("automatic", Some(1), 2, 120)
        );
        assert_eq!(v.evicted[&1].gcomm_uuid, "9b1c-aa");
        assert!(v.eligible(3) && !v.eligible(1) && !v.eligible(9));
        assert!(v.readmitted(3) && !v.readmitted(1));
        let line = v.line();
        assert!(
            line.starts_with("writer n2 epoch 7 (automatic from n1"),
            "{line}"
        );
        assert!(line.contains("evicted n1 (9b1c-aa)"), "{line}");
        assert!(line.contains("n1 (ineligible)"), "{line}");
    }

    #[test]
    fn an_empty_writer_section_and_a_missing_one() {
        let v = writer_view(&json!({"galera_writer": {
            "writer": null, "epoch": 0, "change": null, "evicted": {}, "ranking": []}}))
        .unwrap();
        assert_eq!(v, WriterView::default());
        assert_eq!(v.line(), "writer none epoch 0");
        assert!(writer_view(&json!({"redis": {}})).is_err());
        assert!(writer_view(&json!({"galera_writer": null})).is_err());
        // A shape that is not the contract says so, with the JSON.
        let e = writer_view(&json!({"galera_writer": {"writer": "two"}})).unwrap_err();
        assert!(format!("{e:#}").contains("agreed shape"), "{e:#}");
        let e = writer_view(&json!({"galera_writer": {"evicted": {"x": {"gcomm_uuid": "u"}}}}))
            .unwrap_err();
        assert!(format!("{e:#}").contains("no node id"), "{e:#}");
    }

    #[test]
    fn routing_counts_in_service_and_routable_db_servers_of_one_backend() {
        let servers = [
            row("be_mysql", "db1", 2, 0, false),
            // Configured disabled, then `state ready`, check passing.
            row("be_mysql", "db2", 2, 4, false),
            // Configured disabled and still maint.
            row("be_mysql", "db3", 0, 5, false),
            row("be_mysql_recipe", "db3", 2, 0, true),
            row("be_redis", "redis1", 2, 0, false),
        ];
        let r = routing(&servers, WRITER_BACKEND);
        assert_eq!(r.in_service, [1, 2]);
        assert_eq!(r.routable, [1, 2]);
        assert!(at_most_one_routable(&r).is_err());
        assert!(!r.routes_only_to(1));
        assert_eq!(r.to_string(), "in service db1,db2, routable db1,db2");
        // Ready but failing its check: in service, not routable, no violation.
        let servers = [
            row("be_mysql", "db1", 0, 0, false),
            row("be_mysql", "db2", 2, 4, false),
            row("be_mysql", "db3", 0, 1, false),
        ];
        let r = routing(&servers, WRITER_BACKEND);
        assert_eq!(
            (r.in_service.as_slice(), r.routable.as_slice()),
            (&[1, 2][..], &[2][..])
        );
        assert!(at_most_one_routable(&r).is_ok());
        let one = Routing {
            in_service: vec![2],
            routable: vec![2],
        };
        assert!(one.routes_only_to(2) && !one.routes_only_to(1));
        assert_eq!(
            Routing::default().to_string(),
            "in service none, routable none"
        );
        assert_eq!(server_node("db12", "db"), Some(12));
        assert_eq!(server_node("redis1", "db"), None);
    }

    #[test]
    fn the_recipe_writes_to_the_active_server_else_the_first_backup() {
        let mut servers = vec![
            row("be_mysql_recipe", "db1", 2, 0, false),
            row("be_mysql_recipe", "db2", 2, 0, true),
            row("be_mysql_recipe", "db3", 2, 0, true),
            row("be_mysql", "db3", 2, 0, false),
        ];
        assert_eq!(recipe_writer(&servers), Some(1));
        servers[0].op_state = 0;
        assert_eq!(recipe_writer(&servers), Some(2));
        servers[1].op_state = 0;
        assert_eq!(recipe_writer(&servers), Some(3));
        servers[2].admin_state = 1;
        assert_eq!(recipe_writer(&servers), None);
    }

    #[test]
    fn a_monitor_report_fails_only_on_violations() {
        let clean = MonitorReport {
            samples: 10,
            several_in_service: 2,
            several_in_service_example: Some("+1.00s n1: in service db1,db2, routable db2".into()),
            ..MonitorReport::default()
        };
        assert!(clean.ensure_clean("c").is_ok());
        assert!(
            clean.to_string().contains("0 violations, 2 samples"),
            "{clean}"
        );
        let bad = MonitorReport {
            samples: 10,
            violation_count: 1,
            violations: vec!["+1.00s n2's HAProxy: 2 routable servers".into()],
            ..MonitorReport::default()
        };
        let e = bad.ensure_clean("c").unwrap_err().to_string();
        assert!(
            e.contains("1 invariant violations") && e.contains("2 routable"),
            "{e}"
        );
        assert!(MonitorReport::default().ensure_clean("c").is_err());
    }
}
