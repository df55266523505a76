//! `triad-galera-bench`: Galera recovery on the lab (a benchmark, not a test). Run it through
//! `tests/bench/galera.sh` on a lab that is up.
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
//! again after it.
//!
//! Usage: `triad-galera-bench [--runs N] [--outage-runs N] [--manual] [--skip-agent]`.
//! Exit code 0 when it measured (a lost acknowledged insert prints LOST), 1 on an error. The
//! lab is left with every node Synced and the agents running.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use triad_tests::lab::galera_cases::{
    self, kill9_one, kill_all_and_recover, lost_anywhere, start_load, wait_all_synced, Recovery,
    Transfer, OUTAGE_TIMEOUT, SETTLE_TIMEOUT,
};
use triad_tests::lab::{Lab, LabSpec};
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
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        runs: 5,
        outage_runs: 3,
        manual: false,
        agent: true,
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

fn phase(lab: &Lab, how: Recovery, args: &Args) -> Result<Figures> {
    let mut f = Figures::default();
    for run in 1..=args.runs {
        let node = [3, 2, 1][(run - 1) % 3];
        let load = start_load(lab, &format!("b{how}1"))?;
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
        let load = start_load(lab, &format!("b{how}3"))?;
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
    let mut results = Vec::new();
    if args.agent {
        results.push((Recovery::Agent, phase(&lab, Recovery::Agent, &args)?));
    }
    if args.manual {
        galera_cases::stop_agents(&lab, &nodes)?;
        let manual = phase(&lab, Recovery::Manual, &args);
        let restarted = galera_cases::start_agents(&lab, &nodes);
        results.push((Recovery::Manual, manual?));
        restarted?;
    }
    println!(
        "galera recovery on the lab ({} one-node runs, {} outage runs; bound {} s per outage)",
        args.runs,
        args.outage_runs,
        OUTAGE_TIMEOUT.as_secs()
    );
    for (how, f) in &results {
        report(*how, f);
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

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("triad-galera-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
