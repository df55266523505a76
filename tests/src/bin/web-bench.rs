//! Web tier benchmark on the lab (issue 17; not a test): per run, `kill -9` of one node's
//! PHP-FPM pool (n2, n3, n1, n2, ... in turn) while the shop page is requested through every
//! node's HAProxy. Prints, per run and as p50/max, the time until the pool is drained in every
//! HAProxy (target at most 1 s) and until its agent restarted it and every HAProxy has it back
//! (target at most 5 s), and the failed requests through each HAProxy during the event (target
//! 0, with `option redispatch`).
//!
//! Then, per mount run, n3's GlusterFS mount is broken: its FUSE client killed (ENOTCONN), or
//! n3 cut from its peers for 8 s so that its mount hangs, then healed. Prints the time until
//! its own agent's mount probe says healthy again (target at most 10 s after the kill or the
//! heal), remounted by the agent (or, after a heal, by the client itself: the run says which).
//!
//!   tests/bench/web.sh [--runs N] [--mount-runs N]
//!
//! Runs beyond one per node meet the restart back-off (`[web] restart_backoff`, doubling with
//! each restart of a node in the hour; the lab's agents use 1 s): the readmission then
//! includes it, by design.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use triad_tests::lab::web::{poll_pages, remedy_history, wait_php_everywhere};
use triad_tests::lab::{Lab, LabSpec, Service, Signal};

fn parse_runs() -> Result<(usize, usize)> {
    let (mut runs, mut mount_runs) = (3, 2);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--runs" => runs = it.next().context("--runs needs a value")?.parse()?,
            "--mount-runs" => {
                mount_runs = it.next().context("--mount-runs needs a value")?.parse()?
            }
            other => bail!("unknown argument {other} (--runs N, --mount-runs N)"),
        }
    }
    Ok((runs, mount_runs))
}

/// Whether node `n`'s own agent reports its mount healthy.
fn mount_healthy(lab: &Lab, n: u64) -> Result<(), String> {
    let st = lab.agent_status(n).map_err(|e| format!("{e:#}"))?;
    let v = st
        .nodes
        .get(&triad::ids::NodeId(n))
        .and_then(|v| v.iter().find(|s| s.service == "gluster_mount").cloned())
        .ok_or("no mount observation")?;
    if v.status == triad::probe::Status::Healthy {
        Ok(())
    } else {
        Err(format!("{} {:?}", v.status.as_str(), v.error))
    }
}

/// One mount run on n3: broken by `kill` of its client, or by an 8 s cut; the time from the
/// kill or the heal until its agent's probe says healthy, and whether a remount was done.
fn mount_run(lab: &Lab, kill: bool) -> Result<(Duration, bool)> {
    let before = remedy_history(lab)?.last().map_or(0, |h| h.0);
    if kill {
        lab.kill(3, Service::Mount, Signal::Kill)?;
    } else {
        lab.partition(3, None, false)?;
        std::thread::sleep(Duration::from_secs(8));
        lab.heal()?;
    }
    let t0 = Instant::now();
    lab.wait_for("n3's mount healthy again", Duration::from_secs(60), || {
        mount_healthy(lab, 3)
    })?;
    let took = t0.elapsed();
    let remounted = remedy_history(lab)?
        .iter()
        .any(|(i, d)| *i > before && d.contains("remount") && d.contains(") done:"));
    Ok((took, remounted))
}

/// p50 and max of `v` (milliseconds), or None when empty.
fn stats(v: &mut [f64]) -> Option<(f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some((v[(v.len() - 1) / 2], v[v.len() - 1]))
}

fn run() -> Result<()> {
    let (runs, mount_runs) = parse_runs()?;
    let bin = std::env::var("TRIAD_BIN")
        .context("TRIAD_BIN must name the triad binary (tests/bench/web.sh sets it)")?;
    let lab = Lab::attach(LabSpec::new(bin)).context("the lab must be up: tests/lab up")?;
    let mut drained = Vec::new();
    let mut readmitted = Vec::new();
    let mut failed: BTreeMap<u64, u32> = BTreeMap::new();
    let mut answered: BTreeMap<u64, u32> = BTreeMap::new();
    for run in 0..runs {
        let n = [2, 3, 1][run % 3];
        let stop = Arc::new(AtomicBool::new(false));
        let pages = poll_pages(lab.spec().clone(), stop.clone());
        std::thread::sleep(Duration::from_millis(500));
        let t0 = Instant::now();
        lab.kill(n, Service::Phpfpm, Signal::Kill)?;
        let d =
            wait_php_everywhere(&lab, n, "MAINT", Duration::from_secs(15)).map(|_| t0.elapsed());
        let r = d.as_ref().ok().map(|_| {
            wait_php_everywhere(&lab, n, "UP", Duration::from_secs(120)).map(|_| t0.elapsed())
        });
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        let pages = pages
            .join()
            .map_err(|_| anyhow!("the page poller panicked"))?;
        let d = d?;
        let r = r.ok_or_else(|| anyhow!("not drained"))??;
        let fails: Vec<String> = pages
            .iter()
            .map(|(h, p)| {
                *failed.entry(*h).or_default() += p.failed;
                *answered.entry(*h).or_default() += p.ok;
                let first = p
                    .first_failure
                    .as_ref()
                    .map_or(String::new(), |f| format!(" (first: {f})"));
                format!("n{h} {}/{}{first}", p.failed, p.ok + p.failed)
            })
            .collect();
        println!(
            "run {}: php-fpm n{n} kill -9 -> drained everywhere {:.0} ms, restarted and \
             readmitted everywhere {:.0} ms; failed requests {}",
            run + 1,
            d.as_secs_f64() * 1000.0,
            r.as_secs_f64() * 1000.0,
            fails.join(", ")
        );
        drained.push(d.as_secs_f64() * 1000.0);
        readmitted.push(r.as_secs_f64() * 1000.0);
        // Let the readmitted pool settle before the next kill.
        std::thread::sleep(Duration::from_secs(2));
    }
    if let (Some((d50, dmax)), Some((r50, rmax))) = (stats(&mut drained), stats(&mut readmitted)) {
        println!(
            "drained everywhere: p50 {d50:.0} ms, max {dmax:.0} ms (target 1000); restarted \
             and readmitted: p50 {r50:.0} ms, max {rmax:.0} ms (target 5000)"
        );
    }
    let totals: Vec<String> = failed
        .iter()
        .map(|(h, f)| format!("n{h} {f} of {}", f + answered.get(h).copied().unwrap_or(0)))
        .collect();
    println!(
        "failed requests through each HAProxy: {}",
        totals.join(", ")
    );
    let mut mount = Vec::new();
    for run in 0..mount_runs {
        let kill = run % 2 == 0;
        // The rotation back to every node and the lab healthy before each run.
        for p in [1, 2, 3] {
            wait_php_everywhere(&lab, p, "UP", Duration::from_secs(60))?;
        }
        let (took, remounted) = mount_run(&lab, kill)?;
        let how = if remounted {
            "remounted by its agent"
        } else {
            "the client reconnected by itself"
        };
        println!(
            "mount run {}: n3's mount {} -> healthy again after {:.0} ms ({how})",
            run + 1,
            if kill {
                "client killed"
            } else {
                "cut 8 s, healed"
            },
            took.as_secs_f64() * 1000.0
        );
        mount.push(took.as_secs_f64() * 1000.0);
    }
    if let Some((m50, mmax)) = stats(&mut mount) {
        println!("mount healthy again: p50 {m50:.0} ms, max {mmax:.0} ms (target 10000)");
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("web bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
