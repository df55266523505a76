//! `triad-raft-bench`: commit latency and leader re-election time of a local three-node
//! cluster on loopback. Run it through `tests/bench/raft.sh`, which builds the release agent
//! and points `TRIAD_BIN` at it.
//!
//! Measures:
//! 1. commit latency: N sequential `POST /v1/maintenance` proposals through the leader's API
//!    (each answers once committed and applied on the leader), after a short warm-up;
//! 2. re-election: R times, kill -9 the leader and time until both survivors report the same
//!    new leader and term in `/v1/status` (polled every 5 ms); the killed node is restarted and
//!    caught up before the next run.
//!
//! Usage: `triad-raft-bench [--proposals N] [--elections R]` (defaults 500 and 10). Exit code
//! 0 when it measured (targets missed are printed as MISS, not failures), 1 on an error.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use triad_tests::{ms, percentile, poll_until, triad_bin, wait_for, LocalCluster, NODES};

const COMMIT_P99_TARGET: Duration = Duration::from_millis(10);
const REELECTION_TARGET: Duration = Duration::from_secs(1);
const WARMUP: usize = 20;
const ELECTION_POLL: Duration = Duration::from_millis(5);

struct Args {
    proposals: usize,
    elections: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        proposals: 500,
        elections: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<usize> {
            it.next()
                .with_context(|| format!("{name} needs a value"))?
                .parse()
                .with_context(|| format!("{name} needs a positive integer"))
        };
        match a.as_str() {
            "--proposals" => args.proposals = value("--proposals")?,
            "--elections" => args.elections = value("--elections")?,
            "-h" | "--help" => {
                println!("usage: triad-raft-bench [--proposals N] [--elections R]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if args.proposals == 0 || args.elections == 0 {
        bail!("--proposals and --elections must be at least 1");
    }
    Ok(args)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISS"
    }
}

fn commit_latency(cluster: &mut LocalCluster, n: usize) -> Result<Vec<Duration>> {
    let leader = cluster.wait_for_leader(Duration::from_secs(10))?;
    println!(
        "commit latency: {n} sequential POST /v1/maintenance through leader n{} (term {}), \
         after {WARMUP} warm-up proposals",
        leader.id, leader.term
    );
    let mut samples = Vec::with_capacity(n);
    for i in 0..(WARMUP + n) {
        let reason = format!("bench {i}");
        let t0 = Instant::now();
        let r = cluster.post_maintenance(leader.id, i % 2 == 0, &reason)?;
        let took = t0.elapsed();
        if r.status != 200 {
            bail!(
                "proposal {i} through n{} answered {}: {}",
                leader.id,
                r.status,
                r.body
            );
        }
        if i >= WARMUP {
            samples.push(took);
        }
    }
    let after = cluster.agreed_leader(&NODES).map_err(anyhow::Error::msg)?;
    if after != leader {
        bail!("the leader changed during the latency run: {leader:?} -> {after:?}");
    }
    samples.sort();
    Ok(samples)
}

fn reelection(cluster: &mut LocalCluster, runs: usize) -> Result<Vec<Duration>> {
    println!(
        "\nre-election: {runs} runs of kill -9 of the leader; time until both survivors report \
         the same new leader (polled every {} ms)",
        ELECTION_POLL.as_millis()
    );
    let mut times = Vec::with_capacity(runs);
    for run in 1..=runs {
        let old = cluster.wait_for_leader(Duration::from_secs(10))?;
        let survivors: Vec<u64> = NODES.into_iter().filter(|&n| n != old.id).collect();
        let t0 = Instant::now();
        cluster.kill9(old.id)?;
        let new = poll_until(
            "the survivors to agree on a new leader",
            Duration::from_secs(10),
            ELECTION_POLL,
            || {
                let l = cluster.agreed_leader(&survivors)?;
                if l.id == old.id {
                    Err(format!("survivors still follow the killed n{}", old.id))
                } else {
                    Ok(l)
                }
            },
        )?;
        let took = t0.elapsed();
        times.push(took);
        println!(
            "  run {run:>2}: killed n{} (term {}) -> n{} leads term {} after {:>7.1} ms  {}",
            old.id,
            old.term,
            new.id,
            new.term,
            ms(took),
            verdict(took <= REELECTION_TARGET)
        );
        cluster.restart(old.id)?;
        wait_for(
            &format!("n{} to catch up after restart", old.id),
            Duration::from_secs(15),
            || cluster.caught_up(old.id, &NODES),
        )?;
    }
    times.sort();
    Ok(times)
}

fn run() -> Result<()> {
    let args = parse_args()?;
    let bin = triad_bin()?;
    println!("triad-raft-bench: binary {}", bin.display());
    let mut cluster = LocalCluster::builder().binary(&bin).start()?;
    println!(
        "cluster data and logs: {} (deleted at exit unless the bench fails or \
         TRIAD_KEEP_CLUSTER=1)",
        cluster.dir().display()
    );
    let measured = measure(&mut cluster, &args);
    if measured.is_err() {
        cluster.keep_files();
    }
    let (lat, el) = measured?;
    report(&lat, &el);
    Ok(())
}

fn measure(cluster: &mut LocalCluster, args: &Args) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let lat = commit_latency(cluster, args.proposals)?;
    let el = reelection(cluster, args.elections)?;
    Ok((lat, el))
}

fn report(lat: &[Duration], el: &[Duration]) {
    let (p50, p99, max) = (
        percentile(lat, 50.0),
        percentile(lat, 99.0),
        percentile(lat, 100.0),
    );
    let (e50, emax) = (percentile(el, 50.0), percentile(el, 100.0));

    println!("\n===== triad raft bench: results =====");
    println!(
        "commit latency over {} proposals (loopback, via leader API):",
        lat.len()
    );
    println!("  p50 {:>8.2} ms", ms(p50));
    println!(
        "  p99 {:>8.2} ms   target <= {} ms: {}",
        ms(p99),
        COMMIT_P99_TARGET.as_millis(),
        verdict(p99 <= COMMIT_P99_TARGET)
    );
    println!("  max {:>8.2} ms", ms(max));
    println!(
        "re-election after kill -9 of the leader over {} runs:",
        el.len()
    );
    println!(
        "  p50 {:>8.1} ms   target <= {} ms: {}",
        ms(e50),
        REELECTION_TARGET.as_millis(),
        verdict(e50 <= REELECTION_TARGET)
    );
    println!(
        "  max {:>8.1} ms   target <= {} ms: {}",
        ms(emax),
        REELECTION_TARGET.as_millis(),
        verdict(emax <= REELECTION_TARGET)
    );
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("triad-raft-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
