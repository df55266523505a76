//! A bounded MySQL write load on the lab, for Galera fault tests and benchmarks: which inserts
//! were acknowledged, which failed, the longest stretch without an acknowledged write, and
//! whether every acknowledged row is on a given node afterwards.
//!
//! [`WriteLoad::start`] creates `shop.galera_load (id VARCHAR(64) PRIMARY KEY, at BIGINT)` when
//! missing, then runs one writer thread per [`Target`]: a node's HAProxy MySQL frontend
//! (`127.0.0.1:3307` inside the node, what the shop uses, routed by Triad to the committed
//! Galera writer), the clustercheck-style recipe frontend next to it (`127.0.0.1:3308`, the
//! Galera benchmark's baseline), or a node's MariaDB directly. Each
//! writer inserts one row with a unique id every `interval` (steady rate; an attempt that takes
//! longer delays the next, it never bursts to catch up), as the shop user, in autocommit: an
//! OK is a committed (acknowledged) insert. Anything else (refused connection, a Galera error
//! such as 1047 on a non-Primary node, a timeout, a dropped connection) is a failure whose
//! outcome is unknown: the row may or may not exist. A failed connection is dropped and the
//! next attempt connects again, so HAProxy routes it afresh. Writers stop when told
//! ([`WriteLoad::stop`], also on drop) or after `max_duration` on their own.
//!
//! Design:
//! - Each writer thread enters the target node's network namespace (`setns` on
//!   `/run/netns/haN`, which affects that thread only) and runs a current-thread tokio runtime
//!   with `mysql_async`, so every socket it opens lives in the node, where HAProxy listens on
//!   127.0.0.1. One persistent connection per writer; no process spawn per insert (the CLI
//!   clients of [`super::query`] cost a few ms each, too much at 50 inserts a second).
//! - `prefer_socket(false)`: mysql_async would otherwise switch a 127.0.0.1 connection to the
//!   server's UNIX socket, which the host's filesystem shares with every node: it would bypass
//!   HAProxy and reach whichever node's socket the server reported.
//! - Checking ([`WriteLoad::missing_on`]) goes straight to one node as root over its socket
//!   ([`super::query::mysql`]) with `wsrep_sync_wait=1`, so a node that is Synced but still
//!   applying answers only after it has applied everything committed before the query.
//!
//! Caveats: needs root (setns). Ids are `TAG-TARGET-SEQ`; the tag makes them unique per load,
//! so rows of earlier loads in the table do not count. Times are measured on the monotonic
//! clock of this process.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use mysql_async::prelude::Queryable as _;

use super::spec::{LabSpec, HAPROXY_MYSQL_PORT, HAPROXY_MYSQL_RECIPE_PORT, SHOP_DB, SHOP_USER};
use super::{query, Lab};

/// The table the load writes.
pub const LOAD_TABLE: &str = "shop.galera_load";

/// Where a writer sends its inserts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// Node N's HAProxy MySQL frontend (127.0.0.1:3307 inside node N): the shop's path.
    Haproxy(u64),
    /// Node N's HAProxy recipe frontend (127.0.0.1:3308 inside node N, `be_mysql_recipe`):
    /// the clustercheck-style baseline of the Galera benchmark, which Triad does not manage.
    Recipe(u64),
    /// Node N's MariaDB directly (its address, port 3306, from inside node N).
    Direct(u64),
}

impl Target {
    /// The node whose namespace the writer runs in.
    pub fn node(self) -> u64 {
        match self {
            Target::Haproxy(n) | Target::Recipe(n) | Target::Direct(n) => n,
        }
    }

    /// The address the writer connects to (inside the node's namespace).
    pub fn addr(self, spec: &LabSpec) -> SocketAddr {
        match self {
            Target::Haproxy(_) => SocketAddr::from(([127, 0, 0, 1], HAPROXY_MYSQL_PORT)),
            Target::Recipe(_) => SocketAddr::from(([127, 0, 0, 1], HAPROXY_MYSQL_RECIPE_PORT)),
            Target::Direct(n) => spec.mysql_addr(n),
        }
    }

    /// Short label, used in ids: `h2` (n2's HAProxy), `r1` (n1's recipe frontend), `d3` (n3
    /// directly).
    pub fn label(self) -> String {
        match self {
            Target::Haproxy(n) => format!("h{n}"),
            Target::Recipe(n) => format!("r{n}"),
            Target::Direct(n) => format!("d{n}"),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Haproxy(n) => write!(f, "n{n}'s HAProxy"),
            Target::Recipe(n) => write!(f, "n{n}'s HAProxy recipe frontend"),
            Target::Direct(n) => write!(f, "n{n}'s MariaDB"),
        }
    }
}

/// What a load does.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// One writer per target.
    pub targets: Vec<Target>,
    /// Time between the starts of two attempts of one writer.
    pub interval: Duration,
    /// The writers stop by themselves after this long.
    pub max_duration: Duration,
    /// Deadline of one connection attempt.
    pub connect_timeout: Duration,
    /// Deadline of one insert (above Galera's ~6 s commit stall after a member dies, so a
    /// stalled commit counts as what it is: late, not failed).
    pub attempt_timeout: Duration,
    /// Prefix of every id (made unique per load by [`WriteLoad::start`]).
    pub label: String,
    /// Create the table first (needs a node that takes DDL; turn it off to start a load
    /// during a full outage, once an earlier load created the table).
    pub create_table: bool,
}

impl LoadOptions {
    /// Every 20 ms through every node's HAProxy, for at most 10 minutes.
    pub fn every_haproxy(spec: &LabSpec, label: &str) -> Self {
        LoadOptions::to(
            spec.nodes().into_iter().map(Target::Haproxy).collect(),
            label,
        )
    }

    /// Every 20 ms through every node's HAProxy recipe frontend (`fe_mysql_recipe`), for at
    /// most 10 minutes.
    pub fn every_recipe_frontend(spec: &LabSpec, label: &str) -> Self {
        LoadOptions::to(
            spec.nodes().into_iter().map(Target::Recipe).collect(),
            label,
        )
    }

    /// Every 20 ms to `targets`, for at most 10 minutes.
    pub fn to(targets: Vec<Target>, label: &str) -> Self {
        LoadOptions {
            targets,
            interval: Duration::from_millis(20),
            max_duration: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(10),
            label: label.to_string(),
            create_table: true,
        }
    }
}

/// How one insert ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Committed: the server answered OK.
    Acked,
    /// Anything else, with the error; the row may or may not exist.
    Failed(String),
}

/// One insert attempt.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// The row's id.
    pub id: String,
    /// Where it was sent.
    pub target: Target,
    /// When it started.
    pub started: Instant,
    /// When its answer (or failure) came.
    pub ended: Instant,
    /// How it ended.
    pub outcome: Outcome,
}

impl Attempt {
    /// Whether it was acknowledged.
    pub fn acked(&self) -> bool {
        self.outcome == Outcome::Acked
    }
}

/// The longest stretch without an acknowledged write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    /// Its length.
    pub length: Duration,
    /// Its start (the acknowledgement before it, or the load's start), since the load started.
    pub from: Duration,
    /// Its end (the acknowledgement after it, or the load's end or now), since the start.
    pub to: Duration,
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.2}s (from +{:.2}s to +{:.2}s)",
            self.length.as_secs_f64(),
            self.from.as_secs_f64(),
            self.to.as_secs_f64()
        )
    }
}

/// The longest interval between consecutive points of `acks` (offsets since the start, any
/// order), counting `0` and `end` as boundaries: a load that never wrote has one gap from 0
/// to `end`. `None` when `end` is zero and there is nothing to measure.
pub fn longest_gap(acks: &[Duration], end: Duration) -> Option<Gap> {
    let mut points: Vec<Duration> = acks.iter().copied().filter(|&a| a <= end).collect();
    points.sort();
    let mut best: Option<Gap> = None;
    let mut prev = Duration::ZERO;
    for p in points.into_iter().chain(std::iter::once(end)) {
        let length = p.saturating_sub(prev);
        if best.is_none_or(|b| length > b.length) {
            best = Some(Gap {
                length,
                from: prev,
                to: p,
            });
        }
        prev = p;
    }
    best.filter(|g| end > Duration::ZERO || g.length > Duration::ZERO)
}

/// [`longest_gap`] inside the window `from..=to` only (`acks` and both bounds as offsets since
/// the load's start): the window's bounds count as boundaries, acknowledgements outside it are
/// ignored. `None` for an empty window.
pub fn longest_gap_in(acks: &[Duration], from: Duration, to: Duration) -> Option<Gap> {
    if to <= from {
        return None;
    }
    let inside: Vec<Duration> = acks
        .iter()
        .filter(|&&a| a >= from && a <= to)
        .map(|&a| a - from)
        .collect();
    longest_gap(&inside, to - from).map(|g| Gap {
        length: g.length,
        from: g.from + from,
        to: g.to + from,
    })
}

/// The acknowledged ids that are not in `present`, in the order given.
pub fn missing(acked: &[String], present: &BTreeSet<String>) -> Vec<String> {
    acked
        .iter()
        .filter(|id| !present.contains(*id))
        .cloned()
        .collect()
}

/// The id of attempt `seq` of `target` in a load tagged `tag`.
pub fn row_id(tag: &str, target: Target, seq: u64) -> String {
    format!("{tag}-{}-{seq:06}", target.label())
}

/// Counts and the longest gap, for a report line.
#[derive(Clone, Debug)]
pub struct LoadSummary {
    /// The load's tag.
    pub tag: String,
    /// Acknowledged inserts.
    pub acked: usize,
    /// Failed inserts (outcome unknown).
    pub failed: usize,
    /// How long it ran (so far).
    pub ran: Duration,
    /// The longest stretch without an acknowledged write.
    pub longest_gap: Option<Gap>,
    /// The first few distinct errors, with how often each was seen.
    pub errors: Vec<(String, usize)>,
}

impl fmt::Display for LoadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "load {}: {} acknowledged, {} failed in {:.1}s",
            self.tag,
            self.acked,
            self.failed,
            self.ran.as_secs_f64()
        )?;
        if let Some(g) = self.longest_gap {
            write!(f, "; longest gap without an acknowledged write {g}")?;
        }
        if !self.errors.is_empty() {
            let errs: Vec<String> = self
                .errors
                .iter()
                .map(|(e, n)| format!("{n}x {e}"))
                .collect();
            write!(f, "; errors: {}", errs.join("; "))?;
        }
        Ok(())
    }
}

struct Shared {
    stop: AtomicBool,
    attempts: Mutex<Vec<Attempt>>,
    /// Writers that could not run at all (namespace, runtime).
    setup_errors: Mutex<Vec<String>>,
    /// Set when the last writer ended.
    ended: Mutex<Option<Instant>>,
}

impl Shared {
    fn attempts(&self) -> std::sync::MutexGuard<'_, Vec<Attempt>> {
        self.attempts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running (or finished) write load; see the module docs. Dropping it stops the writers
/// and waits for them.
pub struct WriteLoad {
    tag: String,
    started: Instant,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    opts: LoadOptions,
}

impl WriteLoad {
    /// Creates the table when missing (through the first node whose MariaDB answers; unless
    /// `create_table` is off) and starts one writer per target. Fails when no node takes the DDL or a writer cannot
    /// enter its node's namespace.
    pub fn start(lab: &Lab, opts: LoadOptions) -> Result<WriteLoad> {
        if opts.targets.is_empty() {
            bail!("a write load needs at least one target");
        }
        if opts.interval.is_zero() {
            bail!("a write load needs an interval above zero");
        }
        let spec = lab.spec().clone();
        if opts.create_table {
            create_table(&spec)?;
        }
        let password = std::fs::read_to_string(spec.shop_password_file())
            .with_context(|| {
                format!(
                    "cannot read the shop password from {}",
                    spec.shop_password_file().display()
                )
            })?
            .trim()
            .to_string();
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let tag = format!("{}-{millis:x}", opts.label);
        if row_id(&tag, Target::Haproxy(1), 0).len() > 60 {
            bail!(
                "load label `{}` is too long for a 64-character id",
                opts.label
            );
        }
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            attempts: Mutex::new(Vec::new()),
            setup_errors: Mutex::new(Vec::new()),
            ended: Mutex::new(None),
        });
        let started = Instant::now();
        let mut threads = Vec::new();
        for &target in &opts.targets {
            let w = Writer {
                spec: spec.clone(),
                target,
                password: password.clone(),
                tag: tag.clone(),
                opts: opts.clone(),
                shared: Arc::clone(&shared),
                started,
            };
            let handle = std::thread::Builder::new()
                .name(format!("load-{}", target.label()))
                .spawn(move || w.run())
                .context("cannot spawn a load writer thread")?;
            threads.push(handle);
        }
        let load = WriteLoad {
            tag,
            started,
            shared,
            threads,
            opts,
        };
        // A writer that cannot enter its namespace says so at once.
        std::thread::sleep(Duration::from_millis(50));
        let setup = load.setup_errors();
        if !setup.is_empty() {
            let mut load = load;
            load.stop();
            bail!("the write load could not start: {}", setup.join("; "));
        }
        Ok(load)
    }

    /// The load's tag (every id starts with it).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// When it started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The options it runs with.
    pub fn options(&self) -> &LoadOptions {
        &self.opts
    }

    /// Whether any writer still runs.
    pub fn is_running(&self) -> bool {
        self.threads.iter().any(|t| !t.is_finished())
    }

    /// Stops the writers and waits for them (each ends within its current attempt's
    /// deadline). Idempotent. Returns the summary.
    pub fn stop(&mut self) -> LoadSummary {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let mut ended = self
            .shared
            .ended
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if ended.is_none() {
            *ended = Some(Instant::now());
        }
        drop(ended);
        self.summary()
    }

    /// Every attempt so far, in the order they ended.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.shared.attempts().clone()
    }

    /// Ids of the acknowledged inserts so far.
    pub fn acked(&self) -> Vec<String> {
        self.shared
            .attempts()
            .iter()
            .filter(|a| a.acked())
            .map(|a| a.id.clone())
            .collect()
    }

    /// The failed inserts so far: id and error.
    pub fn failed(&self) -> Vec<(String, String)> {
        self.shared
            .attempts()
            .iter()
            .filter_map(|a| match &a.outcome {
                Outcome::Failed(e) => Some((a.id.clone(), e.clone())),
                Outcome::Acked => None,
            })
            .collect()
    }

    /// Writers that could not run at all.
    pub fn setup_errors(&self) -> Vec<String> {
        self.shared
            .setup_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The end of the load: when it was stopped or its writers ended, else now.
    fn end(&self) -> Instant {
        let ended = *self
            .shared
            .ended
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Writers set it when they end, by themselves or when stopped.
        ended.unwrap_or_else(Instant::now)
    }

    /// The longest stretch without an acknowledged write (any target), from the start to the
    /// end of the load (or now while it runs).
    pub fn longest_gap(&self) -> Option<Gap> {
        self.longest_gap_where(|_| true)
    }

    /// [`WriteLoad::longest_gap`] counting only `target`'s acknowledgements.
    pub fn longest_gap_for(&self, target: Target) -> Option<Gap> {
        self.longest_gap_where(|a| a.target == target)
    }

    fn longest_gap_where(&self, keep: impl Fn(&Attempt) -> bool) -> Option<Gap> {
        let acks: Vec<Duration> = self
            .shared
            .attempts()
            .iter()
            .filter(|a| a.acked() && keep(a))
            .map(|a| a.ended.saturating_duration_since(self.started))
            .collect();
        longest_gap(&acks, self.end().saturating_duration_since(self.started))
    }

    /// The longest stretch without an acknowledged write (any target) between `from` and `to`
    /// (both bounds count as boundaries, so a stall that began at `from` is measured from
    /// there). `None` when the window is empty.
    pub fn longest_gap_between(&self, from: Instant, to: Instant) -> Option<Gap> {
        let since = |t: Instant| t.saturating_duration_since(self.started);
        let acks: Vec<Duration> = self
            .shared
            .attempts()
            .iter()
            .filter(|a| a.acked())
            .map(|a| since(a.ended))
            .collect();
        longest_gap_in(&acks, since(from), since(to))
    }

    /// The acknowledged attempts through `target` that started at or after `from` and ended at
    /// or before `to`.
    pub fn acked_through_between(
        &self,
        target: Target,
        from: Instant,
        to: Instant,
    ) -> Vec<Attempt> {
        self.shared
            .attempts()
            .iter()
            .filter(|a| a.target == target && a.acked() && a.started >= from && a.ended <= to)
            .cloned()
            .collect()
    }

    /// When `target` first had an insert acknowledged that *started* at or after `after`.
    pub fn first_ack_after(&self, target: Target, after: Instant) -> Option<Instant> {
        self.shared
            .attempts()
            .iter()
            .filter(|a| a.target == target && a.acked() && a.started >= after)
            .map(|a| a.ended)
            .min()
    }

    /// Waits (bounded) until every target had an insert acknowledged that started at or after
    /// `after`; returns the latest of those acknowledgements (when writes were accepted
    /// through every target again). The error names the targets still failing and their last
    /// error.
    pub fn wait_every_target_acked_after(
        &self,
        after: Instant,
        timeout: Duration,
    ) -> Result<Instant> {
        self.wait_targets_acked_after(&self.opts.targets.clone(), after, timeout)
    }

    /// [`WriteLoad::wait_every_target_acked_after`] for some of the load's targets only (say,
    /// the HAProxies of the majority side of a partition).
    pub fn wait_targets_acked_after(
        &self,
        targets: &[Target],
        after: Instant,
        timeout: Duration,
    ) -> Result<Instant> {
        let targets = targets.to_vec();
        crate::poll_until(
            &format!(
                "an acknowledged insert through {}",
                targets
                    .iter()
                    .map(Target::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            timeout,
            Duration::from_millis(100),
            || {
                let mut latest = after;
                let mut waiting = Vec::new();
                for &t in &targets {
                    match self.first_ack_after(t, after) {
                        Some(at) => latest = latest.max(at),
                        None => waiting.push(format!("{t}: {}", self.last_error(t))),
                    }
                }
                if !self.is_running() && !waiting.is_empty() {
                    return Ok(Err(format!(
                        "the load ended; still failing: {}",
                        waiting.join("; ")
                    )));
                }
                if waiting.is_empty() {
                    Ok(Ok(latest))
                } else {
                    Err(waiting.join("; "))
                }
            },
        )?
        .map_err(|e| anyhow!(e))
    }

    /// `target`'s last error, or "no attempt yet" / "last attempt acknowledged".
    pub fn last_error(&self, target: Target) -> String {
        match self
            .shared
            .attempts()
            .iter()
            .rev()
            .find(|a| a.target == target)
            .map(|a| a.outcome.clone())
        {
            Some(Outcome::Failed(e)) => e,
            Some(Outcome::Acked) => "last attempt acknowledged".to_string(),
            None => "no attempt yet".to_string(),
        }
    }

    /// The acknowledged ids that node `node` does not have, queried on its MariaDB as root
    /// (through its socket) with `wsrep_sync_wait=1`. Fails, naming the node, when it does not
    /// answer (down, non-Primary: ERROR 1047).
    pub fn missing_on(&self, lab: &Lab, node: u64) -> Result<Vec<String>> {
        let present = ids_on(lab.spec(), node, &self.tag)?;
        Ok(missing(&self.acked(), &present))
    }

    /// Counts, the longest gap, and the most frequent errors.
    pub fn summary(&self) -> LoadSummary {
        let attempts = self.shared.attempts();
        let acked = attempts.iter().filter(|a| a.acked()).count();
        let mut errors: Vec<(String, usize)> = Vec::new();
        for a in attempts.iter() {
            if let Outcome::Failed(e) = &a.outcome {
                let key = error_kind(e);
                match errors.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, n)) => *n += 1,
                    None => errors.push((key, 1)),
                }
            }
        }
        let failed = attempts.len() - acked;
        drop(attempts);
        errors.sort_by_key(|e| std::cmp::Reverse(e.1));
        errors.truncate(4);
        LoadSummary {
            tag: self.tag.clone(),
            acked,
            failed,
            ran: self.end().saturating_duration_since(self.started),
            longest_gap: self.longest_gap(),
            errors,
        }
    }
}

impl Drop for WriteLoad {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop();
        }
    }
}

/// An error shortened for grouping in a summary (ids never appear in errors).
fn error_kind(e: &str) -> String {
    e.chars().take(100).collect()
}

/// Creates [`LOAD_TABLE`] through the first node that takes it.
fn create_table(spec: &LabSpec) -> Result<()> {
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {LOAD_TABLE} (id VARCHAR(64) PRIMARY KEY, at BIGINT NOT NULL) \
         ENGINE=InnoDB"
    );
    let mut why = Vec::new();
    for n in spec.nodes() {
        match query::mysql(spec, n, &sql, Duration::from_secs(10)) {
            Ok(_) => return Ok(()),
            Err(e) => why.push(format!("n{n}: {e:#}")),
        }
    }
    bail!("cannot create {LOAD_TABLE} on any node: {}", why.join("; "))
}

/// The ids starting with `tag` on node `node` (root, socket, `wsrep_sync_wait=1`).
pub fn ids_on(spec: &LabSpec, node: u64, tag: &str) -> Result<BTreeSet<String>> {
    let sql = format!(
        "SET SESSION wsrep_sync_wait=1; SELECT id FROM {LOAD_TABLE} WHERE id LIKE '{tag}-%'"
    );
    let out = query::mysql(spec, node, &sql, Duration::from_secs(30))
        .with_context(|| format!("reading the load's rows on n{node}"))?;
    Ok(out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

struct Writer {
    spec: LabSpec,
    target: Target,
    password: String,
    tag: String,
    opts: LoadOptions,
    shared: Arc<Shared>,
    started: Instant,
}

impl Writer {
    fn run(self) {
        let setup = enter_netns(&self.spec.netns(self.target.node())).and_then(|()| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot build the writer's runtime")
        });
        match setup {
            Ok(rt) => rt.block_on(self.write_loop()),
            Err(e) => self
                .shared
                .setup_errors
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(format!("writer to {}: {e:#}", self.target)),
        }
    }

    fn conn_opts(&self) -> mysql_async::OptsBuilder {
        let addr = self.target.addr(&self.spec);
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(addr.ip().to_string())
            .tcp_port(addr.port())
            .user(Some(SHOP_USER))
            .pass(Some(self.password.clone()))
            .db_name(Some(SHOP_DB))
            .stmt_cache_size(0)
            .prefer_socket(false)
    }

    async fn write_loop(self) {
        let mut conn: Option<mysql_async::Conn> = None;
        let mut seq = 0u64;
        let mut next = Instant::now();
        let deadline = self.started + self.opts.max_duration;
        loop {
            let now = Instant::now();
            if self.shared.stop.load(Ordering::SeqCst) || now >= deadline {
                break;
            }
            if next > now {
                tokio::time::sleep(next - now).await;
                continue;
            }
            // Steady rate; after a slow attempt the next one starts at once, without
            // catching up on the ones it delayed.
            next = now + self.opts.interval;
            seq += 1;
            let id = row_id(&self.tag, self.target, seq);
            let started = Instant::now();
            let outcome = self.attempt(&mut conn, &id).await;
            let ended = Instant::now();
            if outcome != Outcome::Acked {
                // A fresh connection for the next attempt (HAProxy may route it elsewhere).
                conn = None;
            }
            self.shared.attempts().push(Attempt {
                id,
                target: self.target,
                started,
                ended,
                outcome,
            });
        }
        drop(conn);
        let mut ended = self
            .shared
            .ended
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        *ended = Some(ended.map_or(now, |e| e.max(now)));
    }

    async fn attempt(&self, conn: &mut Option<mysql_async::Conn>, id: &str) -> Outcome {
        if conn.is_none() {
            match tokio::time::timeout(
                self.opts.connect_timeout,
                mysql_async::Conn::new(self.conn_opts()),
            )
            .await
            {
                Ok(Ok(c)) => *conn = Some(c),
                Ok(Err(e)) => return Outcome::Failed(format!("connect: {e}")),
                Err(_) => {
                    return Outcome::Failed(format!(
                        "connect: no answer within {:?}",
                        self.opts.connect_timeout
                    ))
                }
            }
        }
        let Some(c) = conn.as_mut() else {
            return Outcome::Failed("no connection".to_string());
        };
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let sql = format!("INSERT INTO {LOAD_TABLE} (id, at) VALUES ('{id}', {at})");
        match tokio::time::timeout(self.opts.attempt_timeout, c.query_drop(sql)).await {
            Ok(Ok(())) => Outcome::Acked,
            Ok(Err(e)) => Outcome::Failed(format!("insert: {e}")),
            Err(_) => Outcome::Failed(format!(
                "insert: no answer within {:?}",
                self.opts.attempt_timeout
            )),
        }
    }
}

/// Moves the calling thread into network namespace `name` (`/run/netns/NAME`, as `ip netns`
/// makes them). Only this thread changes namespace.
fn enter_netns(name: &str) -> Result<()> {
    use std::os::fd::AsRawFd as _;
    let path = format!("/run/netns/{name}");
    let file = std::fs::File::open(&path).with_context(|| format!("cannot open {path}"))?;
    // SAFETY: setns(2) takes a valid open descriptor (owned by `file` for the whole call) and
    // a namespace type; it changes only the calling thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!(
            "cannot enter network namespace {name}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn the_longest_gap_counts_the_start_and_the_end() {
        // Acks at 0.1, 0.2, 3.0, 3.1 s over a 4 s load: the gap 0.2 -> 3.0.
        let g = longest_gap(&[ms(3000), ms(100), ms(3100), ms(200)], ms(4000)).unwrap();
        assert_eq!(
            g,
            Gap {
                length: ms(2800),
                from: ms(200),
                to: ms(3000)
            }
        );
        // Writes failing until the end: the gap runs to the end.
        let g = longest_gap(&[ms(100)], ms(5000)).unwrap();
        assert_eq!((g.from, g.to), (ms(100), ms(5000)));
        // Nothing acknowledged: the whole load.
        let g = longest_gap(&[], ms(700)).unwrap();
        assert_eq!((g.length, g.from, g.to), (ms(700), ms(0), ms(700)));
        // Slow first acknowledgement.
        let g = longest_gap(&[ms(900), ms(950)], ms(1000)).unwrap();
        assert_eq!((g.from, g.to), (ms(0), ms(900)));
        assert_eq!(longest_gap(&[], Duration::ZERO), None);
    }

    #[test]
    fn a_windowed_gap_starts_at_the_window_and_ignores_acks_outside() {
        // Acks every 100 ms up to 2.0 s, then none until 8.5 s; the fault at 2.05 s.
        let mut acks: Vec<Duration> = (1..=20).map(|i| ms(i * 100)).collect();
        acks.extend([ms(8500), ms(8600)]);
        let g = longest_gap_in(&acks, ms(2050), ms(9000)).unwrap();
        assert_eq!((g.length, g.from, g.to), (ms(6450), ms(2050), ms(8500)));
        // The earlier, shorter gaps do not count, nor does anything before the window.
        let g = longest_gap_in(&acks, ms(0), ms(1000)).unwrap();
        assert_eq!(g.length, ms(100));
        assert_eq!(longest_gap_in(&acks, ms(5), ms(5)), None);
        // Nothing acknowledged in the window: the whole window.
        let g = longest_gap_in(&acks, ms(3000), ms(4000)).unwrap();
        assert_eq!((g.from, g.to), (ms(3000), ms(4000)));
    }

    #[test]
    fn acks_after_the_end_are_ignored() {
        let g = longest_gap(&[ms(100), ms(9000)], ms(1000)).unwrap();
        assert_eq!((g.from, g.to), (ms(100), ms(1000)));
    }

    #[test]
    fn missing_lists_acknowledged_ids_absent_from_a_node_in_order() {
        let acked: Vec<String> = ["t-h1-000001", "t-h1-000002", "t-h2-000001"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let present: BTreeSet<String> = ["t-h1-000001", "t-h9-000009"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            missing(&acked, &present),
            vec!["t-h1-000002".to_string(), "t-h2-000001".to_string()]
        );
        assert!(missing(&[], &present).is_empty());
    }

    #[test]
    fn ids_are_unique_per_target_and_sort_by_sequence() {
        let a = row_id("kill9-18d", Target::Haproxy(2), 7);
        let b = row_id("kill9-18d", Target::Direct(2), 7);
        assert_eq!(a, "kill9-18d-h2-000007");
        assert_ne!(a, b);
        assert!(row_id("t", Target::Haproxy(1), 9) < row_id("t", Target::Haproxy(1), 10));
        // The longest label the load accepts still fits the column.
        assert!(
            row_id(
                &format!("{}-{:x}", "x".repeat(30), u64::MAX),
                Target::Haproxy(3),
                999_999
            )
            .len()
                <= 64
        );
    }

    #[test]
    fn targets_name_their_address_and_node() {
        let spec = LabSpec::new("/bin/true");
        assert_eq!(
            Target::Haproxy(2).addr(&spec),
            "127.0.0.1:3307".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            Target::Direct(3).addr(&spec),
            "10.77.0.13:3306".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(Target::Direct(3).node(), 3);
        assert_eq!(Target::Haproxy(1).to_string(), "n1's HAProxy");
        assert_eq!(
            Target::Recipe(1).addr(&spec),
            "127.0.0.1:3308".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(Target::Recipe(2).node(), 2);
        assert_ne!(
            row_id("t", Target::Recipe(2), 1),
            row_id("t", Target::Haproxy(2), 1)
        );
        let spec_targets = LoadOptions::every_recipe_frontend(&spec, "x").targets;
        assert_eq!(
            spec_targets,
            vec![Target::Recipe(1), Target::Recipe(2), Target::Recipe(3)]
        );
    }

    #[test]
    fn long_errors_are_shortened_for_grouping() {
        let long = format!("insert: {}", "x".repeat(300));
        assert_eq!(error_kind(&long).chars().count(), 100);
        assert_eq!(error_kind("connect: refused"), "connect: refused");
    }

    #[test]
    fn a_summary_says_counts_gap_and_errors() {
        let s = LoadSummary {
            tag: "t-1".into(),
            acked: 10,
            failed: 2,
            ran: ms(1500),
            longest_gap: Some(Gap {
                length: ms(600),
                from: ms(100),
                to: ms(700),
            }),
            errors: vec![("connect: refused".into(), 2)],
        };
        let text = s.to_string();
        assert!(text.contains("10 acknowledged, 2 failed in 1.5s"), "{text}");
        assert!(text.contains("0.60s (from +0.10s to +0.70s)"), "{text}");
        assert!(text.contains("2x connect: refused"), "{text}");
    }
}
