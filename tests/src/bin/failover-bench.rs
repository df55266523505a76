//! `triad-failover-bench`: Redis failover on the lab, Triad against Redis Sentinel (a
//! benchmark, not a test). Run it through `tests/bench/failover.sh` on a lab that is up.
//!
//! Measures, each `--runs` times (default 20):
//! 1. **Triad, kill -9**: kill -9 of the Redis master; the time until a write succeeds through
//!    *every* node's HAProxy (on a live master: the old one is dead). One client per node
//!    writes in a loop from inside the node (`redis-cli` through 127.0.0.1:6380, each attempt
//!    bounded to 300 ms); the figure is the end of the first successful attempt that started
//!    after the kill, on the slowest node. Spurious failovers: more than one committed change
//!    of master per run (epoch grows by more than 1 within 10 s).
//! 2. **Sentinel, kill -9**: the agents stopped; three `redis-sentinel`s (quorum 2,
//!    `down-after-milliseconds 1000`, `failover-timeout 10000`), every HAProxy routing to
//!    whichever server answers `role:master` to a `tcp-check` every 250 ms (fall 1, rise 1:
//!    the fastest usual setting); same clients and figure. Spurious failovers: Sentinel's
//!    config epoch grows by more than 1 within 10 s.
//! 3. **Triad, partition** (`--partition-runs`, default 3): the master's node cut from its
//!    peers while every node's client appends unique values; the time until a write succeeds
//!    through a majority node's HAProxy, the time until the cut-off master's last acknowledged
//!    write (through its own node's HAProxy), and how many acknowledged appends are missing
//!    from the final master afterwards (acknowledged by the cut-off master before it fenced
//!    itself); targets: writable within 4 s, the cut-off master silent within 1 s.
//!
//! 4. **Hung master** (`--hung-runs`, default 20), Triad then Sentinel: SIGSTOP of the master
//!    for 6 s, then SIGCONT, while every node's client appends unique values; the time until an
//!    append goes through every HAProxy, acknowledged appends missing afterwards (a resumed old
//!    master that took writes loses them), and failovers beyond the first.
//!
//! Each Triad kill -9 run also prints where its time went, from the agents' logs: detection,
//! suspicion committed, fence confirmed (the leader's decision to promote), promotion
//! committed, and each node's HAProxy switched.
//!
//! Usage: `triad-failover-bench [--runs N] [--hung-runs N] [--partition-runs N]
//! [--skip-sentinel]`.
//! Exit code 0 when it measured (missed targets print MISS), 1 on an error. The lab is left
//! with the agents running and the master where the last run put it.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use triad_tests::lab::{process, query, spec::HAPROXY_REDIS_PORT, Lab, LabSpec, Service, Signal};
use triad_tests::{ms, percentile, triad_bin};

const P50_TARGET: Duration = Duration::from_millis(300);
const P99_TARGET: Duration = Duration::from_millis(500);
const SETTLE: Duration = Duration::from_secs(10);

struct Args {
    runs: usize,
    hung_runs: usize,
    partition_runs: usize,
    sentinel: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        runs: 20,
        hung_runs: 20,
        partition_runs: 3,
        sentinel: true,
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
            "--hung-runs" => a.hung_runs = value("--hung-runs")?,
            "--partition-runs" => a.partition_runs = value("--partition-runs")?,
            "--skip-sentinel" => a.sentinel = false,
            other => bail!("unknown argument {other}; see the module docs"),
        }
    }
    Ok(a)
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A client loop inside node `n` for `secs` seconds; each line: `start_ns end_ns value reply`.
/// `NODE` in `command` becomes the node number, `$i` is the attempt number.
fn client_script(n: u64, secs: u64, command: &str) -> String {
    let command = command.replace("NODE", &n.to_string());
    format!(
        "end=$(( $(date +%s) + {secs} )); i=0; while [ $(date +%s) -lt $end ]; do i=$((i+1)); \
         s=$(date +%s%N); r=$(timeout 0.3 redis-cli -h 127.0.0.1 -p {HAPROXY_REDIS_PORT} \
         {command} 2>&1 | head -c 80 | tr '\\n' ' '); e=$(date +%s%N); echo \"$s $e n{n}-$i $r\"; \
         done"
    )
}

/// One attempt of a client: start, end, the value it wrote, and whether it was acknowledged.
struct Attempt {
    start: u128,
    end: u128,
    value: String,
    ok: bool,
}

fn parse_attempts(text: &str, ok: impl Fn(&str) -> bool) -> Vec<Attempt> {
    text.lines()
        .filter_map(|l| {
            let mut p = l.splitn(4, ' ');
            let start = p.next()?.parse().ok()?;
            let end = p.next()?.parse().ok()?;
            let value = p.next()?.to_string();
            let reply = p.next().unwrap_or("").trim().to_string();
            Some(Attempt {
                start,
                end,
                ok: ok(&reply),
                value,
            })
        })
        .collect()
}

/// When the fault started and when it was in place (ns since the epoch), and every node's
/// attempts.
type Observed = ((u128, u128), Vec<Vec<Attempt>>);

/// Runs one client per node while `fault` runs; returns each node's attempts.
fn with_clients(
    lab: &Lab,
    secs: u64,
    command: &str,
    ok: impl Fn(&str) -> bool + Sync,
    fault: impl FnOnce() -> Result<(u128, u128)>,
) -> Result<Observed> {
    std::thread::scope(|sc| {
        let handles: Vec<_> = lab
            .spec()
            .nodes()
            .into_iter()
            .map(|n| {
                let script = client_script(n, secs, command);
                sc.spawn(move || {
                    lab.exec(n, "bash", &["-c", &script], Duration::from_secs(secs + 30))
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1500));
        let t0 = fault()?;
        let mut out = Vec::new();
        for h in handles {
            let r = h
                .join()
                .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
            out.push(parse_attempts(&r.stdout, &ok));
        }
        Ok((t0, out))
    })
}

/// Time from `t0` to the end of the first acknowledged attempt that started after `after`.
fn first_success(attempts: &[Attempt], t0: u128, after: u128) -> Option<Duration> {
    attempts
        .iter()
        .find(|a| a.ok && a.start > after)
        .map(|a| Duration::from_nanos((a.end.saturating_sub(t0)) as u64))
}

fn summary(name: &str, times: &[Duration]) -> (Duration, Duration, Duration) {
    let mut t = times.to_vec();
    t.sort();
    let (p50, p99, max) = (
        percentile(&t, 50.0),
        percentile(&t, 99.0),
        t.last().copied().unwrap_or_default(),
    );
    println!(
        "{name}: runs {}  p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms  (each: {})",
        t.len(),
        ms(p50),
        ms(p99),
        ms(max),
        times
            .iter()
            .map(|d| format!("{:.0}", ms(*d)))
            .collect::<Vec<_>>()
            .join(" ")
    );
    (p50, p99, max)
}

/// The Redis master once every agent names the same one at the same epoch (an agent that was
/// just cut off may still answer with its old view).
fn agreed_master(lab: &Lab) -> Result<u64> {
    lab.wait_for(
        "the agents to agree on the Redis master",
        Duration::from_secs(30),
        || {
            let mut seen = BTreeSet::new();
            for n in lab.spec().nodes() {
                let s = lab.agent_status(n).map_err(|e| format!("{e:#}"))?;
                let a = s.redis.ok_or("no redis status")?.authority;
                seen.insert((a.master.map(|m| m.get()), a.epoch.0));
            }
            match seen.iter().next() {
                Some(&(Some(m), _)) if seen.len() == 1 => Ok(m),
                _ => Err(format!("views differ: {seen:?}")),
            }
        },
    )
}

fn triad_epoch(lab: &Lab) -> Result<u64> {
    for n in lab.spec().nodes() {
        if let Ok(s) = lab.agent_status(n) {
            if let Some(r) = s.redis {
                return Ok(r.authority.epoch.0);
            }
        }
    }
    bail!("no agent answers")
}

fn wait_replicas_linked(lab: &Lab, master: u64) -> Result<()> {
    let ip = lab.spec().node_ip(master).to_string();
    for n in lab.spec().nodes().into_iter().filter(|&n| n != master) {
        lab.wait_for(
            &format!("n{n} linked to n{master}"),
            Duration::from_secs(60),
            || match lab.redis_role(n) {
                Ok(r)
                    if r.master.as_deref().is_some_and(|m| m.starts_with(&ip))
                        && r.link.as_deref() == Some("up") =>
                {
                    Ok(())
                }
                Ok(r) => Err(r.to_string()),
                Err(e) => Err(format!("{e:#}")),
            },
        )?;
    }
    Ok(())
}

// ----- Triad's own timeline --------------------------------------------------------------

/// Where a Triad failover's time went, in ms after the kill, read from the agents' logs:
/// the first sign of the failure (the master's own exit watch, or the leader's verdict naming
/// it down), the suspicion applied (first agent), the leader's decision to promote (the
/// suspect's fence confirmed, or its lease run out), the promotion applied (first agent), and
/// the new master made `ready` in each node's HAProxy.
#[derive(Clone, Debug, Default)]
struct Breakdown {
    detected: Option<f64>,
    suspected: Option<f64>,
    fenced: Option<f64>,
    promoted: Option<f64>,
    switched: Vec<Option<f64>>,
}

/// Every agent log line stamped within `[from, to)` (ns since the epoch): stamp, node, text.
fn log_lines(lab: &Lab, from: u128, to: u128) -> Vec<(u128, u64, String)> {
    let mut out = Vec::new();
    for n in lab.spec().nodes() {
        let Ok(text) = std::fs::read_to_string(lab.spec().agent_log(n)) else {
            continue;
        };
        for line in text.lines() {
            let Some(stamp) = line.split_whitespace().next() else {
                continue;
            };
            let Ok(at) = humantime::parse_rfc3339(stamp) else {
                continue;
            };
            let at = at
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            if (from..to).contains(&at) {
                out.push((at, n, line.to_string()));
            }
        }
    }
    out.sort_by_key(|l| l.0);
    out
}

fn breakdown(lab: &Lab, t0: u128, old: u64, new: u64) -> Breakdown {
    let lines = log_lines(lab, t0, t0 + 6_000_000_000);
    let after = |at: u128| Some((at - t0) as f64 / 1e6);
    let first = |f: &dyn Fn(u64, &str) -> bool| {
        lines
            .iter()
            .find(|(_, n, l)| f(*n, l))
            .and_then(|(at, _, _)| after(*at))
    };
    let down = format!("master n{old} down");
    let refused = format!("n{old} refused");
    let suspect = format!("suspect=n{old}");
    let changed = format!("redis master changed master=n{new}");
    let ready = format!("command=set server be_redis/redis{new} state ready");
    Breakdown {
        detected: first(&|n, l| {
            (n == old && l.contains("process exited") && l.contains("\"redis\""))
                || (l.contains("decision verdict=redis:")
                    && (l.contains(&down) || l.contains(&refused)))
        }),
        suspected: first(&|_, l| l.contains("redis master suspected") && l.contains(&suspect)),
        fenced: first(&|_, l| l.contains("decision verdict=redis: promote")),
        promoted: first(&|_, l| l.contains(&changed)),
        switched: lab
            .spec()
            .nodes()
            .into_iter()
            .map(|node| first(&|n, l| n == node && l.contains(&ready)))
            .collect(),
    }
}

fn stage(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.0}"))
}

impl Breakdown {
    fn line(&self) -> String {
        format!(
            "detected {} | suspicion committed {} | fence confirmed {} | promotion committed {} \
             | HAProxy switched {}",
            stage(self.detected),
            stage(self.suspected),
            stage(self.fenced),
            stage(self.promoted),
            self.switched
                .iter()
                .enumerate()
                .map(|(i, v)| format!("n{} {}", i + 1, stage(*v)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// The median of each stage over the runs that logged it.
fn breakdown_summary(name: &str, all: &[Breakdown]) {
    let med = |f: &dyn Fn(&Breakdown) -> Option<f64>| {
        let mut v: Vec<f64> = all.iter().filter_map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len().saturating_sub(1) / 2).copied()
    };
    let last_switch = |b: &Breakdown| {
        b.switched
            .iter()
            .copied()
            .collect::<Option<Vec<f64>>>()
            .and_then(|v| v.into_iter().reduce(f64::max))
    };
    println!(
        "{name} breakdown (median ms after the kill, from the agents' logs): detected {} -> \
         suspicion committed {} -> fence confirmed {} -> promotion committed {} -> last \
         HAProxy switched {}",
        stage(med(&|b| b.detected)),
        stage(med(&|b| b.suspected)),
        stage(med(&|b| b.fenced)),
        stage(med(&|b| b.promoted)),
        stage(med(&last_switch)),
    );
}

/// Kill -9 runs with whatever failover mechanism runs now; `master` names the current master,
/// `epoch` reads the failover epoch; with `timeline`, each run's Triad breakdown is printed
/// and collected.
#[allow(clippy::too_many_arguments)]
fn kill_runs(
    lab: &Lab,
    name: &str,
    runs: usize,
    master: &dyn Fn() -> Result<u64>,
    epoch: &dyn Fn() -> Result<u64>,
    after_restart: &dyn Fn(u64) -> Result<()>,
    mut timeline: Option<&mut Vec<Breakdown>>,
) -> Result<(Vec<Duration>, usize)> {
    let mut times = Vec::new();
    let mut spurious = 0;
    for run in 1..=runs {
        let m = master()?;
        wait_replicas_linked(lab, m)?;
        let e0 = epoch()?;
        let ((t0, killed_at), attempts) = with_clients(
            lab,
            6,
            &format!("SET bench:{name} {run}"),
            |r| r == "OK",
            || {
                let t0 = now_ns();
                lab.kill(m, Service::Redis, Signal::Kill)?;
                Ok((t0, now_ns()))
            },
        )?;
        let per_node: Vec<Option<Duration>> = attempts
            .iter()
            .map(|a| first_success(a, t0, killed_at))
            .collect();
        let Some(worst) = per_node.iter().copied().collect::<Option<Vec<_>>>() else {
            bail!("{name} run {run}: some node never wrote again: {per_node:?}");
        };
        let worst = worst.into_iter().max().unwrap_or_default();
        std::thread::sleep(SETTLE.saturating_sub(Duration::from_secs(6)));
        let e1 = epoch()?;
        let changes = e1.saturating_sub(e0);
        if changes != 1 {
            spurious += changes.saturating_sub(1) as usize;
        }
        eprintln!(
            "{name} run {run}: killed n{m}; writes through every HAProxy after {:.0} ms; \
             epoch {e0} -> {e1}",
            ms(worst)
        );
        times.push(worst);
        lab.start(m, Service::Redis)?;
        after_restart(m)?;
        let new = master()?;
        if let Some(all) = timeline.as_deref_mut() {
            let b = breakdown(lab, t0, m, new);
            eprintln!("{name} run {run}: {}", b.line());
            all.push(b);
        }
        wait_replicas_linked(lab, new)?;
    }
    Ok((times, spurious))
}

/// What hung-master runs measured: the time until writes went through every HAProxy again,
/// acknowledged writes lost, and failovers beyond the first.
struct HungResult {
    times: Vec<Duration>,
    lost: usize,
    acked: usize,
    spurious: usize,
}

/// How long a hung-master run keeps the master stopped before SIGCONT.
const HUNG_FOR: Duration = Duration::from_secs(6);

/// Acknowledged appends of every node's client to `key`, and how many of them the list on
/// master `new` lacks.
fn lost_appends(
    lab: &Lab,
    new: u64,
    key: &str,
    attempts: &[Vec<Attempt>],
) -> Result<(usize, usize)> {
    let stored = lab.redis_from(
        new,
        new,
        &["LRANGE", key, "0", "-1"],
        Duration::from_secs(5),
    )?;
    let stored: BTreeSet<&str> = stored.lines().map(str::trim).collect();
    let acked: Vec<&Attempt> = attempts.iter().flatten().filter(|a| a.ok).collect();
    let lost = acked
        .iter()
        .filter(|a| !stored.contains(a.value.as_str()))
        .count();
    Ok((acked.len(), lost))
}

/// Hung-master runs: SIGSTOP of the master for [`HUNG_FOR`], then SIGCONT, while one client per
/// node appends unique values through its HAProxy. Measures the time until an append goes
/// through every HAProxy, and how many acknowledged appends are missing from the master's
/// list once everything settled (a resumed old master that took writes before it was
/// demoted loses them).
fn hung_runs(
    lab: &Lab,
    name: &str,
    runs: usize,
    master: &dyn Fn() -> Result<u64>,
    epoch: &dyn Fn() -> Result<u64>,
    settled: &dyn Fn(u64) -> Result<()>,
    before_run: &dyn Fn(u64) -> Result<u64>,
) -> Result<HungResult> {
    let mut out = HungResult {
        times: Vec::new(),
        lost: 0,
        acked: 0,
        spurious: 0,
    };
    for run in 1..=runs {
        let m = master()?;
        wait_replicas_linked(lab, m)?;
        let m = before_run(m)?;
        let e0 = epoch()?;
        let key = format!("bench:{name}:hung:{run}");
        let (observed, resumed) = std::thread::scope(|sc| {
            // with_clients starts the fault 1.5 s after the clients.
            let resume = sc.spawn(|| {
                std::thread::sleep(Duration::from_millis(1500) + HUNG_FOR);
                lab.kill(m, Service::Redis, Signal::Cont)
            });
            let observed = with_clients(
                lab,
                14,
                &format!("RPUSH {key} nNODE-$i"),
                |r| r.parse::<u64>().is_ok(),
                || {
                    let t0 = now_ns();
                    lab.kill(m, Service::Redis, Signal::Stop)?;
                    Ok((t0, now_ns()))
                },
            );
            let resumed = resume
                .join()
                .map_err(|_| anyhow::anyhow!("resume thread panicked"));
            (observed, resumed)
        });
        resumed??;
        let ((t0, stopped_at), attempts) = observed?;
        let per_node: Vec<Option<Duration>> = attempts
            .iter()
            .map(|a| first_success(a, t0, stopped_at))
            .collect();
        let Some(worst) = per_node.iter().copied().collect::<Option<Vec<_>>>() else {
            bail!("{name} hung run {run}: some node never wrote again: {per_node:?}");
        };
        let worst = worst.into_iter().max().unwrap_or_default();
        let new = master()?;
        settled(m)?;
        wait_replicas_linked(lab, new)?;
        let e1 = epoch()?;
        let (acked, lost) = lost_appends(lab, new, &key, &attempts)?;
        let changes = e1.saturating_sub(e0);
        if name == "triad" {
            eprintln!(
                "{name} hung run {run}: {}",
                breakdown(lab, t0, m, new).line()
            );
        }
        eprintln!(
            "{name} hung run {run}: stopped n{m} for {:?}; writes through every HAProxy after \
             {:.0} ms; n{new} master; {} acknowledged, {lost} lost; epoch {e0} -> {e1}",
            HUNG_FOR,
            ms(worst),
            acked
        );
        out.times.push(worst);
        out.lost += lost;
        out.acked += acked;
        out.spurious += changes.saturating_sub(1) as usize;
    }
    Ok(out)
}

fn hung_summary(name: &str, r: &HungResult) -> (Duration, Duration) {
    let (p50, p99, _) = summary(&format!("{name} SIGSTOP"), &r.times);
    println!(
        "{name} SIGSTOP: {} acknowledged writes, {} lost; spurious second failovers: {}",
        r.acked, r.lost, r.spurious
    );
    (p50, p99)
}

// ----- Sentinel ----------------------------------------------------------------------------

/// `min-replicas-to-write 0` on node `n`'s Redis (no write guard, as a plain Sentinel setup).
fn unfence(lab: &Lab, n: u64) -> Result<()> {
    lab.wait_for(
        &format!("n{n}'s Redis to answer"),
        Duration::from_secs(10),
        || {
            lab.redis_from(
                n,
                n,
                &["CONFIG", "SET", "min-replicas-to-write", "0"],
                Duration::from_secs(2),
            )
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
        },
    )
}

fn sentinel_conf(lab: &LabSpec, n: u64, master: u64) -> String {
    format!(
        "port 26379\nbind {ip}\ndaemonize no\nprotected-mode no\ndir {dir}\n\
         sentinel monitor shop {mip} 6379 2\n\
         sentinel down-after-milliseconds shop 1000\n\
         sentinel failover-timeout shop 10000\n\
         sentinel parallel-syncs shop 1\n",
        ip = lab.node_ip(n),
        dir = sentinel_dir(lab, n).display(),
        mip = lab.node_ip(master),
    )
}

fn sentinel_dir(lab: &LabSpec, n: u64) -> std::path::PathBuf {
    lab.node_dir(n).join("sentinel")
}

fn sentinel_cli(lab: &Lab, n: u64, args: &[&str]) -> Result<String> {
    let out = lab.exec(
        n,
        "redis-cli",
        &[
            &["-h", &lab.spec().node_ip(n).to_string(), "-p", "26379"],
            args,
        ]
        .concat(),
        Duration::from_secs(3),
    )?;
    Ok(out.stdout)
}

fn sentinel_master(lab: &Lab) -> Result<u64> {
    for n in lab.spec().nodes() {
        if let Ok(out) = sentinel_cli(lab, n, &["SENTINEL", "get-master-addr-by-name", "shop"]) {
            if let Some(ip) = out.lines().next() {
                if let Some(m) = lab
                    .spec()
                    .nodes()
                    .into_iter()
                    .find(|&m| lab.spec().node_ip(m).to_string() == ip.trim())
                {
                    return Ok(m);
                }
            }
        }
    }
    bail!("no sentinel names a master")
}

fn sentinel_epoch(lab: &Lab) -> Result<u64> {
    let mut best = 0;
    for n in lab.spec().nodes() {
        if let Ok(out) = sentinel_cli(lab, n, &["SENTINEL", "master", "shop"]) {
            let lines: Vec<&str> = out.lines().map(str::trim).collect();
            if let Some(i) = lines.iter().position(|l| *l == "config-epoch") {
                if let Some(v) = lines.get(i + 1).and_then(|v| v.parse().ok()) {
                    best = best.max(v);
                }
            }
        }
    }
    Ok(best)
}

/// The HAProxy config for Sentinel: every Redis server checked for `role:master`.
fn sentinel_haproxy_cfg(original: &str) -> Result<String> {
    // "\nbackend": `default_backend be_redis` must not match.
    let start = original
        .find("\nbackend be_redis\n")
        .context("no backend be_redis in haproxy.cfg")?
        + 1;
    let rest = &original[start..];
    let end = rest[1..]
        .find("\nfrontend ")
        .map(|i| start + i + 2)
        .unwrap_or(original.len());
    let block = &original[start..end];
    let mut out = String::from(
        "backend be_redis\n    timeout connect 50ms\n    option redispatch 1\n    \
         option tcp-check\n    tcp-check connect\n    tcp-check send PING\\r\\n\n    \
         tcp-check expect string +PONG\n    tcp-check send info\\ replication\\r\\n\n    \
         tcp-check expect string role:master\n    tcp-check send QUIT\\r\\n\n    \
         tcp-check expect string +OK\n",
    );
    for line in block
        .lines()
        .filter(|l| l.trim_start().starts_with("server "))
    {
        let words: Vec<&str> = line.split_whitespace().take(3).collect();
        out.push_str(&format!(
            "    {} check inter 250ms fall 1 rise 1\n",
            words.join(" ")
        ));
    }
    let cfg = format!("{}{}{}", &original[..start], out, &original[end..]);
    Ok(cfg.replace("    load-server-state-from-file global\n", ""))
}

fn reload_haproxy(lab: &Lab, n: u64) -> Result<()> {
    let cfg = lab.spec().haproxy_cfg(n);
    let check = std::process::Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .output()?;
    if !check.status.success() {
        bail!(
            "{} does not pass haproxy -c: {}",
            cfg.display(),
            String::from_utf8_lossy(&check.stderr).trim()
        );
    }
    let out = query::haproxy_socket(
        &lab.spec().haproxy_master_socket(n),
        "reload",
        Duration::from_secs(10),
    )?;
    if out.contains("Failed") {
        bail!("HAProxy n{n} reload failed: {out}");
    }
    std::thread::sleep(Duration::from_millis(500));
    Ok(())
}

/// Sentinel's kill -9 times and spurious failovers, and its hung-master runs.
type SentinelResults = ((Vec<Duration>, usize), HungResult);

fn sentinel_phase(lab: &Lab, runs: usize, hung: usize) -> Result<SentinelResults> {
    let spec = lab.spec().clone();
    let master = lab.redis_master()?;
    let originals: Vec<String> = spec
        .nodes()
        .into_iter()
        .map(|n| std::fs::read_to_string(spec.haproxy_cfg(n)))
        .collect::<std::io::Result<_>>()?;
    for n in spec.nodes() {
        lab.kill(n, Service::Agent, Signal::Term)?;
    }
    // Redis as the agents left it, without Triad's write guard (the lab's redis.conf boots
    // every server fenced for Triad to unfence; Sentinel does not know about it).
    for n in spec.nodes() {
        unfence(lab, n)?;
    }
    let mut sentinels = Vec::new();
    let result = (|| -> Result<SentinelResults> {
        for (i, n) in spec.nodes().into_iter().enumerate() {
            std::fs::write(spec.haproxy_cfg(n), sentinel_haproxy_cfg(&originals[i])?)?;
            reload_haproxy(lab, n)?;
            let dir = sentinel_dir(&spec, n);
            std::fs::create_dir_all(&dir)?;
            let conf = dir.join("sentinel.conf");
            std::fs::write(&conf, sentinel_conf(&spec, n, master))?;
            let id = process::launch(
                &spec.netns(n),
                &[
                    "redis-server".to_string(),
                    conf.display().to_string(),
                    "--sentinel".to_string(),
                ],
                &dir.join("sentinel.log"),
                &[],
            )?;
            sentinels.push(id);
        }
        lab.wait_for(
            "the sentinels to find each other",
            Duration::from_secs(30),
            || {
                let out = sentinel_cli(lab, 1, &["SENTINEL", "master", "shop"])
                    .map_err(|e| format!("{e:#}"))?;
                let l: Vec<&str> = out.lines().map(str::trim).collect();
                let get = |k: &str| {
                    l.iter()
                        .position(|x| *x == k)
                        .and_then(|i| l.get(i + 1))
                        .copied()
                };
                match (get("num-other-sentinels"), get("num-slaves")) {
                    (Some("2"), Some("2")) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )?;
        let kills = kill_runs(
            lab,
            "sentinel",
            runs,
            &|| sentinel_master(lab),
            &|| sentinel_epoch(lab),
            &|n| unfence(lab, n),
            None,
        )?;
        let hung = hung_runs(
            lab,
            "sentinel",
            hung,
            &|| sentinel_master(lab),
            &|| sentinel_epoch(lab),
            &|_| Ok(()),
            &Ok,
        )?;
        Ok((kills, hung))
    })();
    for id in &sentinels {
        let _ = id.signal(Signal::Term);
    }
    for (i, n) in spec.nodes().into_iter().enumerate() {
        std::fs::write(spec.haproxy_cfg(n), &originals[i])?;
        reload_haproxy(lab, n)?;
        lab.start(n, Service::Agent)?;
    }
    result
}

// ----- partition ---------------------------------------------------------------------------

/// A planned switchover away from `before`, returning the new master: it leaves no hold-down
/// armed (an automatic failover of an earlier run would rightly hold the next one for
/// `hold_down` unless the new master refuses connections).
fn switchover_first(lab: &Lab, before: u64) -> Result<u64> {
    let to = if before == 3 { 1 } else { before + 1 };
    lab.wait_for(
        "a switchover before the fault",
        Duration::from_secs(30),
        || lab.switchover_redis(to, to).map_err(|e| format!("{e:#}")),
    )?;
    wait_replicas_linked(lab, to)?;
    Ok(to)
}

/// What the partition runs measured.
struct PartitionFigures {
    /// Per run: the cut to the first write that succeeded through a majority node's HAProxy.
    writable: Vec<Duration>,
    /// Per run: the cut to the last write the cut-off master acknowledged (through its own
    /// node's HAProxy); zero when it acknowledged none after the cut.
    island_acks: Vec<Duration>,
    /// Per run: acknowledged writes lost.
    lost: Vec<usize>,
    acked: usize,
}

fn partition_runs(lab: &Lab, runs: usize) -> Result<PartitionFigures> {
    let mut f = PartitionFigures {
        writable: Vec::new(),
        island_acks: Vec::new(),
        lost: Vec::new(),
        acked: 0,
    };
    for run in 1..=runs {
        let before = agreed_master(lab)?;
        wait_replicas_linked(lab, before)?;
        let m = switchover_first(lab, before)?;
        let key = format!("bench:partition:{run}");
        let ((t0, cut_at), attempts) = with_clients(
            lab,
            16,
            &format!("RPUSH {key} nNODE-$i"),
            |r| r.parse::<u64>().is_ok(),
            || {
                let t0 = now_ns();
                lab.partition(m, None, false)?;
                Ok((t0, now_ns()))
            },
        )?;
        let majority: Vec<usize> = (0..3).filter(|&i| i as u64 + 1 != m).collect();
        let took = majority
            .iter()
            .filter_map(|&i| {
                attempts[i]
                    .iter()
                    .find(|a| a.ok && a.start > cut_at)
                    .map(|a| Duration::from_nanos((a.end - t0) as u64))
            })
            .min()
            .context("no majority node ever wrote again")?;
        let island_ack = attempts[(m - 1) as usize]
            .iter()
            .filter(|a| a.ok && a.end > cut_at)
            .map(|a| Duration::from_nanos((a.end - cut_at) as u64))
            .max()
            .unwrap_or_default();
        lab.heal()?;
        let new = agreed_master(lab)?;
        wait_replicas_linked(lab, new)?;
        let (acked, lost) = lost_appends(lab, new, &key, &attempts)?;
        eprintln!(
            "partition run {run}: cut n{m}; its last acknowledged write {:.0} ms after the cut; \
             n{new} writable through a majority HAProxy after {:.0} ms; {} acknowledged, {lost} \
             lost",
            ms(island_ack),
            ms(took),
            acked
        );
        f.writable.push(took);
        f.island_acks.push(island_ack);
        f.lost.push(lost);
        f.acked += acked;
    }
    Ok(f)
}

fn run() -> Result<()> {
    let args = parse_args()?;
    let lab =
        Lab::attach(LabSpec::new(triad_bin()?)).context("the lab must be up: tests/lab up")?;
    let mut timeline = Vec::new();
    let (triad, triad_spurious) = kill_runs(
        &lab,
        "triad",
        args.runs,
        &|| agreed_master(&lab),
        &|| triad_epoch(&lab),
        &|_| Ok(()),
        Some(&mut timeline),
    )?;
    let (t50, t99, _) = summary("triad kill -9", &triad);
    breakdown_summary("triad kill -9", &timeline);
    println!("triad spurious second failovers: {triad_spurious}");
    let verdict = |ok: bool| if ok { "ok" } else { "MISS" };
    println!(
        "targets: p50 <= 300 ms {}, p99 <= 500 ms {}, no spurious failover {}",
        verdict(t50 <= P50_TARGET),
        verdict(t99 <= P99_TARGET),
        verdict(triad_spurious == 0)
    );
    let hung = hung_runs(
        &lab,
        "triad",
        args.hung_runs,
        &|| agreed_master(&lab),
        &|| triad_epoch(&lab),
        &|_| Ok(()),
        &|m| switchover_first(&lab, m),
    )?;
    let (h50, h99) = if args.hung_runs > 0 {
        let (h50, h99) = hung_summary("triad", &hung);
        println!(
            "targets: SIGSTOP p50 <= 1500 ms {}, no acknowledged write lost {}, one failover \
             each {}",
            verdict(h50 <= Duration::from_millis(1500)),
            verdict(hung.lost == 0),
            verdict(hung.spurious == 0)
        );
        (h50, h99)
    } else {
        Default::default()
    };
    if args.sentinel {
        let ((sentinel, s_spurious), s_hung) = sentinel_phase(&lab, args.runs, args.hung_runs)?;
        let (s50, s99, _) = summary("sentinel kill -9", &sentinel);
        println!("sentinel spurious second failovers: {s_spurious}");
        println!(
            "ratio triad/sentinel kill -9: p50 {:.2}  p99 {:.2}",
            ms(t50) / ms(s50).max(1.0),
            ms(t99) / ms(s99).max(1.0),
        );
        if args.hung_runs > 0 {
            let (s50, s99) = hung_summary("sentinel", &s_hung);
            println!(
                "ratio triad/sentinel SIGSTOP: p50 {:.2}  p99 {:.2}  (target <= 0.7: {})",
                ms(h50) / ms(s50).max(1.0),
                ms(h99) / ms(s99).max(1.0),
                verdict(ms(h50) <= 0.7 * ms(s50))
            );
        }
    }
    if args.partition_runs > 0 {
        let f = partition_runs(&lab, args.partition_runs)?;
        let (w50, _, wmax) = summary(
            "triad partition (writable new master via a majority HAProxy)",
            &f.writable,
        );
        let (_, _, imax) = summary(
            "triad partition (cut-off master's last acknowledged write after the cut)",
            &f.island_acks,
        );
        let lost: usize = f.lost.iter().sum();
        println!(
            "partition: {} acknowledged writes, {lost} lost (acknowledged by the cut-off master \
             before it fenced itself), per run {:?}",
            f.acked, f.lost
        );
        println!(
            "targets: writable new master <= 4000 ms {} (p50 {:.0}, max {:.0}), cut-off master \
             stops acknowledging <= 1000 ms {} (max {:.0})",
            verdict(ms(wmax) <= 4000.0),
            ms(w50),
            ms(wmax),
            verdict(ms(imax) <= 1000.0),
            ms(imax)
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("triad-failover-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
