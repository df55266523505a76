//! `triad-galera-bench`: Galera recovery and the Galera writer on the lab (a benchmark, not a
//! test). Run it through `tests/bench/galera.sh` on a lab that is up.
//!
//! Under a write load through every node's HAProxy (one insert every 20 ms per HAProxy, see
//! `triad_tests::lab::load`), measures for the agents (and with `--manual` for a scripted
//! operator, in the same run):
//! 1. **one node, kill -9** (`--runs`, default 5; the node rotates n3, n2, n1): the time from
//!    the SIGKILL until the node is Synced in a cluster of 3 again, and whether it rejoined
//!    by IST or needed a full SST.
//! 2. **full outage** (`--outage-runs`, default 3): every mariadbd killed at once; the time
//!    until an insert is acknowledged through *every* HAProxy, and until all three are
//!    Synced in a cluster of 3; which node bootstrapped.
//! 3. **lost acknowledged inserts**, after every run of both (must be 0), and the longest
//!    stretch without any acknowledged insert.
//!
//! The manual recovery is what an operator following the Galera documentation does, scripted
//! so it reacts at once (a lower bound for a human): after a single kill, wait until the
//! survivors evicted the node, `mariadbd --wsrep-recover`, start it with
//! `--wsrep_start_position` (IST); after a full outage, `--wsrep-recover` on every node,
//! bootstrap the most advanced (`safe_to_bootstrap: 1`, its position, `--wsrep-new-cluster`),
//! then start the others with their positions (the lab's `start` / `start --bootstrap`). The
//! agents are stopped for the manual phase (so they do not recover in parallel) and started
//! again after it; its load goes through the clustercheck-style recipe frontend
//! (`fe_mysql_recipe`), since `be_mysql` routes nowhere without the agents.
//!
//! The Galera writer (issue 13), Triad side by side with the clustercheck-style recipe
//! (`be_mysql_recipe`: n1 active, n2/n3 `backup`, `mysql-check`, `inter 2s fall 2 rise 1`)
//! in one invocation:
//! 4. **writer kill -9** (`--writer-runs`, default 0): the time until an insert is
//!    acknowledged through every HAProxy again.
//! 5. **non-writer kill -9** (`--nonwriter-runs`, default 0; the victim rotates among the
//!    non-writers): the longest stretch without any acknowledged insert from the kill until
//!    the node is back (the commit stall).
//! 6. For both: the time from the rejoined node Synced (in a cluster of 3) to its
//!    readmission, and acknowledged inserts lost.
//!
//! Triad runs write through `fe_mysql` with the agents in charge: the writer is the committed
//! one from the status, the killed node's agent rejoins it, and readmission is the status
//! showing it no longer evicted and ranked eligible. Recipe runs turn the cluster's
//! maintenance mode on first (`triad maintenance on`, so Triad takes no action: no writer
//! change, no eviction, no restart), write through `fe_mysql_recipe`, restore the killed node
//! by hand the way the manual recovery does (`--wsrep-recover`, start with the position, once
//! the survivors evicted it), and turn maintenance off at the end; readmission is the server
//! UP in `be_mysql_recipe` of every HAProxy (negative: routed to before it was Synced). Each
//! line prints p50/p99/max and the ratio Triad/recipe. `--skip-recipe` measures Triad only;
//! `--skip-agent` measures no Triad case at all (only the manual recovery and the recipe).
//!
//! Usage: `triad-galera-bench [--runs N] [--outage-runs N] [--manual] [--skip-agent]
//! [--writer-runs N] [--nonwriter-runs N] [--skip-recipe]`. Exit code 0 when it measured (a
//! lost acknowledged insert prints LOST), 1 on an error. The lab is left with every node
//! Synced, the agents running and maintenance off.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use triad_tests::lab::galera_cases::{
    self, kill9_one, kill_all_and_recover, lost_anywhere, wait_all_synced, Recovery, Transfer,
    OUTAGE_TIMEOUT, REJOIN_TIMEOUT, SETTLE_TIMEOUT,
};
use triad_tests::lab::galera_writer::{self, RECIPE_BACKEND};
use triad_tests::lab::load::{LoadOptions, WriteLoad};
use triad_tests::lab::{query, Lab, LabSpec, Service, Signal};
use triad_tests::{ms, percentile, triad_bin};

/// How long the load runs before a fault.
const WARM_UP: Duration = Duration::from_secs(2);
/// How long it keeps running after the recovery, before the check.
const COOL_DOWN: Duration = Duration::from_secs(1);

struct Args {
    runs: usize,
    outage_runs: usize,
    manual: bool,
    agent: bool,
    writer_runs: usize,
    nonwriter_runs: usize,
    recipe: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        runs: 5,
        outage_runs: 3,
        manual: false,
        agent: true,
        writer_runs: 0,
        nonwriter_runs: 0,
        recipe: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut value = |name: &str| -> Result<usize> {
            it.next()
                .with_context(|| format!("{name} needs a value"))?
                .parse()
                .with_context(|| format!("{name} needs a number"))
        };
        match x.as_str() {
            "--runs" => a.runs = value("--runs")?,
            "--outage-runs" => a.outage_runs = value("--outage-runs")?,
            "--manual" => a.manual = true,
            "--skip-agent" => {
                a.agent = false;
                a.manual = true;
            }
            "--writer-runs" => a.writer_runs = value("--writer-runs")?,
            "--nonwriter-runs" => a.nonwriter_runs = value("--nonwriter-runs")?,
            "--skip-recipe" => a.recipe = false,
            other => bail!("unknown argument {other}; see the module docs"),
        }
    }
    Ok(a)
}

/// Figures of one recovery mode.
#[derive(Default)]
struct Figures {
    one_kill: Vec<Duration>,
    one_kill_sst: usize,
    one_kill_gap: Vec<Duration>,
    outage_writes: Vec<Duration>,
    outage_synced: Vec<Duration>,
    outage_gap: Vec<Duration>,
    bootstrapped: Vec<String>,
    acked: usize,
    lost: usize,
}

fn sorted(v: &[Duration]) -> Vec<Duration> {
    let mut v = v.to_vec();
    v.sort();
    v
}

fn line(name: &str, times: &[Duration]) -> String {
    if times.is_empty() {
        return format!("{name}: no runs");
    }
    let t = sorted(times);
    format!(
        "{name}: runs {}  p50 {:.0} ms  max {:.0} ms  (each: {})",
        t.len(),
        ms(percentile(&t, 50.0)),
        ms(t.last().copied().unwrap_or_default()),
        times
            .iter()
            .map(|d| format!("{:.0}", ms(*d)))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// Stops the load, waits for three Synced nodes, and counts what was acknowledged and lost.
fn settle(
    lab: &Lab,
    mut load: triad_tests::lab::load::WriteLoad,
    f: &mut Figures,
) -> Result<Duration> {
    std::thread::sleep(COOL_DOWN);
    let summary = load.stop();
    wait_all_synced(lab, SETTLE_TIMEOUT)?;
    let lost = lost_anywhere(lab, &load)?;
    f.acked += summary.acked;
    f.lost += lost.len();
    eprintln!("  {summary}");
    if !lost.is_empty() {
        eprintln!(
            "  LOST {} acknowledged inserts (first: {})",
            lost.len(),
            lost.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(summary.longest_gap.map(|g| g.length).unwrap_or_default())
}

/// The load of a recovery phase: through `fe_mysql` while the agents run, through the recipe
/// frontend for the manual recovery (the agents are stopped, so `be_mysql` routes nowhere).
fn phase_load(lab: &Lab, how: Recovery, label: &str) -> Result<WriteLoad> {
    let opts = match how {
        Recovery::Agent => LoadOptions::every_haproxy(lab.spec(), label),
        Recovery::Manual => LoadOptions::every_recipe_frontend(lab.spec(), label),
    };
    WriteLoad::start(lab, opts)
}

fn phase(lab: &Lab, how: Recovery, args: &Args) -> Result<Figures> {
    let mut f = Figures::default();
    for run in 1..=args.runs {
        let node = [3, 2, 1][(run - 1) % 3];
        let load = phase_load(lab, how, &format!("b{how}1"))?;
        std::thread::sleep(WARM_UP);
        let k = kill9_one(lab, node, how)?;
        eprintln!(
            "{how} one-node run {run}: killed n{node}; Synced in 3 after {:.0} ms ({:?})",
            ms(k.to_synced),
            k.transfer
        );
        f.one_kill.push(k.to_synced);
        if k.transfer != Transfer::Ist {
            f.one_kill_sst += 1;
        }
        let gap = settle(lab, load, &mut f)?;
        f.one_kill_gap.push(gap);
    }
    for run in 1..=args.outage_runs {
        let load = phase_load(lab, how, &format!("b{how}3"))?;
        std::thread::sleep(WARM_UP);
        let o = kill_all_and_recover(lab, &load, how)?;
        let boot = o
            .bootstrapped
            .map_or_else(|| "n?".to_string(), |n| format!("n{n}"));
        eprintln!(
            "{how} outage run {run}: all killed; writes through every HAProxy after {:.0} ms, all \
             Synced after {:.0} ms; bootstrapped {boot}",
            ms(o.to_writes_everywhere),
            ms(o.to_all_synced)
        );
        f.outage_writes.push(o.to_writes_everywhere);
        f.outage_synced.push(o.to_all_synced);
        f.bootstrapped.push(boot);
        let gap = settle(lab, load, &mut f)?;
        f.outage_gap.push(gap);
    }
    Ok(f)
}

fn report(how: Recovery, f: &Figures) {
    println!(
        "{}",
        line(
            &format!("{how}: one node kill -9 -> Synced in 3"),
            &f.one_kill
        )
    );
    if !f.one_kill.is_empty() {
        println!(
            "{how}: one node: {} of {} rejoined by IST (full SST: {}); {}",
            f.one_kill.len() - f.one_kill_sst,
            f.one_kill.len(),
            f.one_kill_sst,
            line("longest write gap", &f.one_kill_gap)
        );
    }
    println!(
        "{}",
        line(
            &format!("{how}: full outage -> writes through every HAProxy"),
            &f.outage_writes
        )
    );
    println!(
        "{}",
        line(
            &format!("{how}: full outage -> all three Synced"),
            &f.outage_synced
        )
    );
    if !f.outage_synced.is_empty() {
        println!(
            "{how}: full outage: bootstrapped {}; {}",
            f.bootstrapped.join(" "),
            line("longest write gap", &f.outage_gap)
        );
    }
    println!(
        "{how}: acknowledged inserts {}, lost {} {}",
        f.acked,
        f.lost,
        if f.lost == 0 { "(ok)" } else { "LOST" }
    );
}

fn run() -> Result<()> {
    let args = parse_args()?;
    let lab =
        Lab::attach(LabSpec::new(triad_bin()?)).context("the lab must be up: tests/lab up")?;
    let nodes = lab.spec().nodes();
    wait_all_synced(&lab, SETTLE_TIMEOUT).context("the lab's Galera must be healthy first")?;
    let recovery = args.runs > 0 || args.outage_runs > 0;
    let mut results = Vec::new();
    if args.agent && recovery {
        results.push((Recovery::Agent, phase(&lab, Recovery::Agent, &args)?));
    }
    if args.manual && recovery {
        galera_cases::stop_agents(&lab, &nodes)?;
        let manual = phase(&lab, Recovery::Manual, &args);
        let restarted = galera_cases::start_agents(&lab, &nodes);
        results.push((Recovery::Manual, manual?));
        restarted?;
    }
    let writer = writer_phases(&lab, &args)?;
    if recovery {
        println!(
            "galera recovery on the lab ({} one-node runs, {} outage runs; bound {} s per \
             outage)",
            args.runs,
            args.outage_runs,
            OUTAGE_TIMEOUT.as_secs()
        );
    }
    for (how, f) in &results {
        report(*how, f);
    }
    if let Some(w) = &writer {
        report_writer(&args, w);
    }
    if let [(_, a), (_, m)] = results.as_slice() {
        let p50 = |v: &[Duration]| ms(percentile(&sorted(v), 50.0));
        if !a.one_kill.is_empty() && !a.outage_writes.is_empty() {
            println!(
                "ratio agent/manual (p50): one node {:.2}, outage writes {:.2}, outage Synced {:.2}",
                p50(&a.one_kill) / p50(&m.one_kill).max(1.0),
                p50(&a.outage_writes) / p50(&m.outage_writes).max(1.0),
                p50(&a.outage_synced) / p50(&m.outage_synced).max(1.0)
            );
        }
    }
    Ok(())
}

// ----- the Galera writer against the clustercheck recipe (issue 13) ---------------------------

/// Which side of the comparison a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// The agents in charge, through `fe_mysql`.
    Triad,
    /// Maintenance on, through `fe_mysql_recipe`, the killed node restored by hand.
    Recipe,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Triad => "triad",
            Side::Recipe => "recipe",
        })
    }
}

/// Which node a run kills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kill {
    /// The node writes go to.
    Writer,
    /// Another one.
    NonWriter,
}

impl std::fmt::Display for Kill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kill::Writer => "writer kill -9",
            Kill::NonWriter => "non-writer kill -9",
        })
    }
}

/// Figures of one case on one side.
#[derive(Default)]
struct KillFigures {
    /// Writer kill: until writes are acknowledged through every HAProxy again; non-writer
    /// kill: the longest stretch without an acknowledged insert from the kill until the node
    /// is back.
    headline: Vec<Duration>,
    /// Readmission minus Synced, in ms (negative: readmitted before it was Synced).
    readmit_ms: Vec<f64>,
    acked: usize,
    lost: usize,
}

/// Both cases on both sides.
#[derive(Default)]
struct WriterFigures {
    triad_writer: KillFigures,
    triad_nonwriter: KillFigures,
    recipe_writer: KillFigures,
    recipe_nonwriter: KillFigures,
}

impl WriterFigures {
    fn get(&self, side: Side, kill: Kill) -> &KillFigures {
        match (side, kill) {
            (Side::Triad, Kill::Writer) => &self.triad_writer,
            (Side::Triad, Kill::NonWriter) => &self.triad_nonwriter,
            (Side::Recipe, Kill::Writer) => &self.recipe_writer,
            (Side::Recipe, Kill::NonWriter) => &self.recipe_nonwriter,
        }
    }

    fn get_mut(&mut self, side: Side, kill: Kill) -> &mut KillFigures {
        match (side, kill) {
            (Side::Triad, Kill::Writer) => &mut self.triad_writer,
            (Side::Triad, Kill::NonWriter) => &mut self.triad_nonwriter,
            (Side::Recipe, Kill::Writer) => &mut self.recipe_writer,
            (Side::Recipe, Kill::NonWriter) => &mut self.recipe_nonwriter,
        }
    }
}

/// Interval of the rejoin watch (each sample reads the status or three admin sockets, then
/// asks the node with the `mariadb` CLI).
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// The Triad runs, then (maintenance on) the recipe runs; `None` when no writer case is
/// asked for.
fn writer_phases(lab: &Lab, args: &Args) -> Result<Option<WriterFigures>> {
    if args.writer_runs == 0 && args.nonwriter_runs == 0 {
        return Ok(None);
    }
    let mut f = WriterFigures::default();
    let cases = [
        (Kill::Writer, args.writer_runs),
        (Kill::NonWriter, args.nonwriter_runs),
    ];
    if args.agent {
        for (kill, runs) in cases {
            for run in 1..=runs {
                kill_run(lab, Side::Triad, kill, run, f.get_mut(Side::Triad, kill))?;
            }
        }
    }
    if args.recipe {
        set_maintenance(lab, true)?;
        let mut measured = Ok(());
        'cases: for (kill, runs) in cases {
            for run in 1..=runs {
                measured = kill_run(lab, Side::Recipe, kill, run, f.get_mut(Side::Recipe, kill));
                if measured.is_err() {
                    break 'cases;
                }
            }
        }
        let off = set_maintenance(lab, false);
        measured?;
        off?;
    }
    Ok(Some(f))
}

/// Turns the cluster's maintenance mode on or off through the `triad` CLI (via n1's agent)
/// and waits until every agent shows it.
fn set_maintenance(lab: &Lab, on: bool) -> Result<()> {
    let word = if on { "on" } else { "off" };
    let run = galera_cases::triad_cli(
        lab,
        1,
        &[
            "maintenance",
            word,
            "--reason",
            "galera benchmark: the clustercheck recipe's runs",
            "--json",
        ],
    )?;
    ensure!(
        run.code == 0,
        "triad maintenance {word} failed (exit {}): {} {}",
        run.code,
        run.stdout.trim(),
        run.stderr.trim()
    );
    lab.wait_for(
        &format!("every agent to show maintenance {word}"),
        Duration::from_secs(10),
        || {
            let bad: Vec<String> = lab
                .spec()
                .nodes()
                .iter()
                .filter_map(|&n| match lab.agent_status(n) {
                    Ok(s) if s.cluster.maintenance.enabled == on => None,
                    Ok(s) => Some(format!("n{n}: {}", s.cluster.maintenance.enabled)),
                    Err(e) => Some(format!("n{n}: {e:#}")),
                })
                .collect();
            if bad.is_empty() {
                Ok(())
            } else {
                Err(bad.join("; "))
            }
        },
    )?;
    eprintln!("maintenance {word}");
    Ok(())
}

/// Waits until every server of `be_mysql_recipe` is UP in every HAProxy and they all write
/// to the same node; returns it.
fn wait_recipe_all_up(lab: &Lab) -> Result<u64> {
    lab.wait_for(
        "every HAProxy to see every server of be_mysql_recipe UP",
        SETTLE_TIMEOUT,
        || {
            let mut writers = Vec::new();
            let mut bad = Vec::new();
            for n in lab.spec().nodes() {
                let servers = query::haproxy_servers(lab.spec(), n, query::QUERY_TIMEOUT)
                    .map_err(|e| format!("n{n}: {e:#}"))?;
                let r = galera_writer::routing(&servers, RECIPE_BACKEND);
                if r.routable.len() != 3 {
                    bad.push(format!("n{n}: {r}"));
                }
                writers.push(galera_writer::recipe_writer(&servers));
            }
            match writers.first() {
                Some(Some(w)) if bad.is_empty() && writers.iter().all(|x| *x == Some(*w)) => Ok(*w),
                _ => Err(format!("{}; writers {writers:?}", bad.join("; "))),
            }
        },
    )
}

/// When the killed node was Synced again and readmitted.
struct Rejoin {
    synced: Instant,
    readmitted: Instant,
}

/// Watches node `node` after its kill at `at` until it is Synced in a cluster of 3 as a new
/// process (not `old`) and readmitted: for Triad, `observer`'s status shows it no longer
/// evicted and ranked eligible; for the recipe, it is UP in `be_mysql_recipe` of every
/// HAProxy. Readmission counts only after it was first seen out. Each sample reads the
/// readmission first, then the node, and stamps both with its start (readmitted before Synced
/// means in an earlier sample). For the recipe, Triad must not touch it (maintenance).
fn watch_rejoin(
    lab: &Lab,
    side: Side,
    node: u64,
    old: triad_tests::lab::ProcId,
    observer: u64,
    at: Instant,
) -> Result<Rejoin> {
    let spec = lab.spec();
    let bound = REJOIN_TIMEOUT + Duration::from_secs(30);
    let short = Duration::from_secs(1);
    let mut out = false;
    let mut synced = None;
    let mut readmitted = None;
    let mut last = String::new();
    while at.elapsed() < bound {
        let t = Instant::now();
        let admitted = match side {
            Side::Triad => match galera_writer::writer_view_of(lab, observer) {
                Ok(v) => {
                    last = v.line();
                    v.readmitted(node)
                }
                Err(e) => {
                    last = format!("{e:#}");
                    false
                }
            },
            Side::Recipe => {
                let mut all = true;
                let mut seen = Vec::new();
                for n in spec.nodes() {
                    match galera_writer::routing_of(spec, n, RECIPE_BACKEND, short) {
                        Ok(r) => {
                            all &= r.routable.contains(&node);
                            seen.push(format!("n{n}: {r}"));
                        }
                        Err(e) => {
                            all = false;
                            seen.push(format!("n{n}: {e:#}"));
                        }
                    }
                }
                // Maintenance must hold Triad off: no eviction of the killed node.
                if let Ok(v) = galera_writer::writer_view_of(lab, observer) {
                    ensure!(
                        !v.evicted.contains_key(&node),
                        "Triad evicted n{node} while maintenance is on: {}",
                        v.line()
                    );
                }
                last = seen.join("; ");
                all
            }
        };
        if !admitted {
            out = true;
        } else if out && readmitted.is_none() {
            readmitted = Some(t);
        }
        if synced.is_none() {
            let restarted = galera_cases::mariadb_proc(lab, node)
                .ok()
                .flatten()
                .is_some_and(|p| p != old);
            // Stamped with the sample's start, as the readmission is: both are known to sample
            // granularity. A readmission seen in the same sample counts as 0, not as early:
            // Triad readmits only on its agent's own check that found the node Synced, which
            // came before this sample (this query only confirms it a few ms later).
            if restarted && query::galera_status(spec, node, short).is_ok_and(|g| g.is_synced_in(3))
            {
                synced = Some(t);
            }
        }
        if let (Some(synced), Some(readmitted)) = (synced, readmitted) {
            return Ok(Rejoin { synced, readmitted });
        }
        if let Some(rest) = WATCH_EVERY.checked_sub(t.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    bail!(
        "{side}: n{node} not back within {bound:?} of its kill: Synced after {:?}, readmitted \
         after {:?} (seen out: {out}); last: {last}; the agents: {}",
        synced.map(|s| s.saturating_duration_since(at)),
        readmitted.map(|r| r.saturating_duration_since(at)),
        galera_cases::agents_galera_line(lab)
    )
}

/// `a - b` in ms, negative when `a` is earlier.
fn signed_ms(a: Instant, b: Instant) -> f64 {
    if a >= b {
        ms(a - b)
    } else {
        -ms(b - a)
    }
}

/// One run: the writer (or a non-writer) killed under load, measured until the node is back
/// and readmitted; adds to `f`.
fn kill_run(lab: &Lab, side: Side, kill: Kill, run: usize, f: &mut KillFigures) -> Result<()> {
    let nodes = lab.spec().nodes();
    wait_all_synced(lab, SETTLE_TIMEOUT)?;
    let writer = match side {
        Side::Triad => lab.wait_for(
            "a committed Galera writer routed to by every HAProxy",
            SETTLE_TIMEOUT,
            || galera_writer::writer_routed_everywhere(lab),
        )?,
        Side::Recipe => wait_recipe_all_up(lab)?,
    };
    let node = match kill {
        Kill::Writer => writer,
        Kill::NonWriter => {
            let others: Vec<u64> = nodes.iter().copied().filter(|&n| n != writer).collect();
            others[(run - 1) % others.len()]
        }
    };
    let observer = nodes
        .iter()
        .copied()
        .find(|&n| n != node)
        .ok_or_else(|| anyhow!("no node other than n{node}"))?;
    let before = galera_writer::writer_view_of(lab, observer).ok();
    let label = format!(
        "w{}{}",
        &side.to_string()[..1],
        if kill == Kill::Writer { "w" } else { "n" }
    );
    let opts = match side {
        Side::Triad => LoadOptions::every_haproxy(lab.spec(), &label),
        Side::Recipe => LoadOptions::every_recipe_frontend(lab.spec(), &label),
    };
    let mut load = WriteLoad::start(lab, opts)?;
    std::thread::sleep(WARM_UP);
    let old = galera_cases::mariadb_proc(lab, node)?
        .ok_or_else(|| anyhow!("mariadb on n{node} is not running"))?;
    let at = galera_cases::signal_mariadb_at_once(lab, &[node], Signal::Kill)?;
    let rejoin = std::thread::scope(|sc| -> Result<Rejoin> {
        // The recipe's operator restores it at once (the lab's `start`: it waits until the
        // survivors evicted the dead process, recovers the position and starts it with it).
        let manual = (side == Side::Recipe).then(|| sc.spawn(|| lab.start(node, Service::Mariadb)));
        let watched = watch_rejoin(lab, side, node, old, observer, at);
        if let Some(h) = manual {
            h.join()
                .map_err(|_| anyhow!("the manual restart of n{node} panicked"))?
                .with_context(|| format!("restoring n{node} by hand"))?;
        }
        watched
    })?;
    let headline = match kill {
        Kill::Writer => load
            .wait_every_target_acked_after(at, Duration::from_secs(60))?
            .saturating_duration_since(at),
        Kill::NonWriter => load
            .longest_gap_between(at, rejoin.synced.max(rejoin.readmitted))
            .map(|g| g.length)
            .unwrap_or_default(),
    };
    std::thread::sleep(COOL_DOWN);
    let summary = load.stop();
    wait_all_synced(lab, SETTLE_TIMEOUT)?;
    let lost = lost_anywhere(lab, &load)?;
    if side == Side::Recipe {
        // Maintenance must have held Triad off: no writer change either.
        if let (Some(b), Ok(a)) = (&before, galera_writer::writer_view_of(lab, observer)) {
            ensure!(
                (a.writer, a.epoch) == (b.writer, b.epoch),
                "Triad changed the Galera writer while maintenance is on: {} -> {}",
                b.line(),
                a.line()
            );
        }
    }
    let readmit = signed_ms(rejoin.readmitted, rejoin.synced);
    eprintln!(
        "{side} {kill} run {run}: killed n{node} (writer n{writer}); {} {:.0} ms; Synced in 3 \
         after {:.0} ms, readmitted {readmit:+.0} ms from Synced; {summary}{}",
        match kill {
            Kill::Writer => "writes through every HAProxy after",
            Kill::NonWriter => "longest commit stall",
        },
        ms(headline),
        ms(rejoin.synced.saturating_duration_since(at)),
        if lost.is_empty() {
            String::new()
        } else {
            format!(
                "; LOST {} acknowledged inserts (first: {})",
                lost.len(),
                lost.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
            )
        }
    );
    f.headline.push(headline);
    f.readmit_ms.push(readmit);
    f.acked += summary.acked;
    f.lost += lost.len();
    Ok(())
}

/// Nearest-rank percentile of sorted values (as `triad_tests::percentile`).
fn percentile_f64(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50, p99 and max of `v`, `None` when empty.
fn stats(v: &[f64]) -> Option<(f64, f64, f64)> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let max = *s.last()?;
    Some((percentile_f64(&s, 50.0), percentile_f64(&s, 99.0), max))
}

/// `triad p50 .. p99 .. max .. (each: ..)`.
fn side_stats(side: Side, v: &[f64]) -> String {
    match stats(v) {
        None => format!("{side}: no runs"),
        Some((p50, p99, max)) => format!(
            "{side} p50 {p50:.0} ms p99 {p99:.0} ms max {max:.0} ms (each: {})",
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

/// Triad/recipe of two positive figures, else `n/a`.
fn ratio(triad: f64, recipe: f64) -> String {
    if triad >= 0.0 && recipe > 0.0 {
        format!("{:.2}", triad / recipe)
    } else {
        "n/a".to_string()
    }
}

/// One comparison line: both sides' p50/p99/max and the ratios of p50 and p99.
fn compare_line(name: &str, triad: &[f64], recipe: &[f64]) -> String {
    let ratios = match (stats(triad), stats(recipe)) {
        (Some(t), Some(r)) => format!(
            " | triad/recipe p50 {} p99 {}",
            ratio(t.0, r.0),
            ratio(t.1, r.1)
        ),
        _ => String::new(),
    };
    format!(
        "{name}: {} | {}{ratios}",
        side_stats(Side::Triad, triad),
        side_stats(Side::Recipe, recipe)
    )
}

fn report_writer(args: &Args, f: &WriterFigures) {
    println!(
        "galera writer against the clustercheck recipe ({} writer-kill and {} non-writer-kill \
         runs per side)",
        args.writer_runs, args.nonwriter_runs
    );
    let as_ms = |v: &[Duration]| v.iter().map(|d| ms(*d)).collect::<Vec<f64>>();
    for (kill, headline) in [
        (Kill::Writer, "writes restored through every HAProxy"),
        (Kill::NonWriter, "longest commit stall"),
    ] {
        let t = f.get(Side::Triad, kill);
        let r = f.get(Side::Recipe, kill);
        if t.headline.is_empty() && r.headline.is_empty() {
            continue;
        }
        println!(
            "{}",
            compare_line(
                &format!("{kill} -> {headline}"),
                &as_ms(&t.headline),
                &as_ms(&r.headline)
            )
        );
        println!(
            "{}",
            compare_line(
                &format!("{kill} -> rejoined node readmitted after Synced"),
                &t.readmit_ms,
                &r.readmit_ms
            )
        );
        let early = |k: &KillFigures| k.readmit_ms.iter().filter(|x| **x < 0.0).count();
        println!(
            "{kill}: readmitted before it was Synced: triad {} of {}, recipe {} of {}",
            early(t),
            t.readmit_ms.len(),
            early(r),
            r.readmit_ms.len()
        );
        println!(
            "{kill}: acknowledged inserts lost: triad {} of {}, recipe {} of {} {}",
            t.lost,
            t.acked,
            r.lost,
            r.acked,
            if t.lost + r.lost == 0 { "(ok)" } else { "LOST" }
        );
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("triad-galera-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_stats_and_ratios() {
        assert_eq!(stats(&[]), None);
        let (p50, p99, max) = stats(&[300.0, -200.0, 100.0, 900.0]).unwrap();
        assert_eq!((p50, p99, max), (100.0, 900.0, 900.0));
        assert_eq!(ratio(500.0, 6200.0), "0.08");
        assert_eq!(ratio(500.0, -100.0), "n/a");
        assert_eq!(ratio(-5.0, 100.0), "n/a");
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(250);
        assert_eq!(signed_ms(t1, t0), 250.0);
        assert_eq!(signed_ms(t0, t1), -250.0);
        let line = compare_line("x", &[100.0, 200.0], &[1000.0]);
        assert!(
            line.contains("triad p50 100 ms p99 200 ms max 200 ms"),
            "{line}"
        );
        assert!(line.contains("triad/recipe p50 0.10 p99 0.20"), "{line}");
        assert!(compare_line("x", &[], &[1.0]).contains("triad: no runs"));
    }
}
