//! Backup benchmark on the lab (issue 15; not a test): per run, an insert load through every
//! node's HAProxy, first idle for a while, then during `triad backup now`. Prints the backup's
//! duration and size per component, and the insert latency p50/p99 idle against during the
//! backup (the target: p99 during a backup at most 1.5x idle; the backup node is desynced, so
//! flow control never slows the writer).
//!
//!   tests/bench/backup.sh [--runs N] [--data-mb M] [--idle-secs S]
//!
//! `--data-mb` first grows the shop's database (a `bench_blob` table) and the media directory
//! to about that many MiB in all, so that the copy takes a measurable time; the table and the
//! files are removed at the end.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use triad_tests::lab::load::{LoadOptions, WriteLoad};
use triad_tests::lab::{self, query, Lab, LabSpec};

struct Args {
    runs: usize,
    data_mb: u64,
    idle: Duration,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        runs: 3,
        data_mb: 64,
        idle: Duration::from_secs(10),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => a.runs = value()?.parse()?,
            "--data-mb" => a.data_mb = value()?.parse()?,
            "--idle-secs" => a.idle = Duration::from_secs(value()?.parse()?),
            other => bail!("unknown argument {other} (--runs N, --data-mb M, --idle-secs S)"),
        }
    }
    Ok(a)
}

fn triad_bin() -> Result<String> {
    std::env::var("TRIAD_BIN")
        .context("TRIAD_BIN must name the triad binary (tests/bench/backup.sh sets it)")
}

/// p50, p99 and max of `v` (milliseconds), or None when empty.
fn stats(v: &mut [f64]) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Some((at(0.5), at(0.99), v[v.len() - 1]))
}

/// The writer node (the committed Galera writer, as node 1's agent sees it).
fn writer(lab: &Lab) -> Result<u64> {
    let v = lab::galera_writer::writer_view_of(lab, 1)?;
    v.writer.context("no committed Galera writer")
}

/// Grows the database and the media directory to about `mb` MiB in all.
fn seed(spec: &LabSpec, w: u64, mb: u64) -> Result<()> {
    let db_mb = mb * 3 / 4;
    query::mysql(
        spec,
        w,
        "CREATE TABLE IF NOT EXISTS shop.bench_blob (id BIGINT AUTO_INCREMENT PRIMARY KEY, \
         b MEDIUMBLOB NOT NULL) ENGINE=InnoDB",
        Duration::from_secs(30),
    )?;
    // 1 MiB rows (a random KiB repeated: the copy and the upload read every byte).
    for _ in 0..db_mb {
        query::mysql(
            spec,
            w,
            "INSERT INTO shop.bench_blob (b) VALUES (REPEAT(RANDOM_BYTES(1024), 1024))",
            Duration::from_secs(30),
        )?;
    }
    let media = spec.gluster_mount(w).join("pub/media/bench");
    std::fs::create_dir_all(&media)?;
    let chunk: Vec<u8> = (0..1_048_576u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    for i in 0..(mb - db_mb) {
        std::fs::write(media.join(format!("img{i:04}.bin")), &chunk)?;
    }
    Ok(())
}

fn unseed(spec: &LabSpec, w: u64) {
    let _ = query::mysql(
        spec,
        w,
        "DROP TABLE IF EXISTS shop.bench_blob",
        Duration::from_secs(30),
    );
    let _ = std::fs::remove_dir_all(spec.gluster_mount(w).join("pub/media/bench"));
}

fn run() -> Result<()> {
    let args = parse_args()?;
    let lab =
        Lab::attach(LabSpec::new(triad_bin()?)).context("the lab must be up: tests/lab up")?;
    let spec = lab.spec().clone();
    let w = writer(&lab)?;
    if args.data_mb > 0 {
        eprintln!(
            "seeding about {} MiB (database and media) ...",
            args.data_mb
        );
        seed(&spec, w, args.data_mb)?;
    }
    let mut lines = Vec::new();
    let mut idle_all = Vec::new();
    let mut during_all = Vec::new();
    let mut failed = 0usize;
    for run in 1..=args.runs {
        let mut load = WriteLoad::start(&lab, LoadOptions::every_haproxy(&spec, "bb"))?;
        std::thread::sleep(args.idle);
        let asked = Instant::now();
        let record = lab::backup::now(&spec, 1, "backup benchmark", Duration::from_secs(600))?;
        let done = Instant::now();
        std::thread::sleep(Duration::from_millis(500));
        let _ = load.stop();
        let attempts = load.attempts();
        failed += attempts.iter().filter(|a| !a.acked()).count();
        let ms = |a: &lab::load::Attempt| (a.ended - a.started).as_secs_f64() * 1000.0;
        let warm = load.started() + Duration::from_secs(2);
        let mut idle: Vec<f64> = attempts
            .iter()
            .filter(|a| a.acked() && a.started >= warm && a.started < asked)
            .map(ms)
            .collect();
        let mut during: Vec<f64> = attempts
            .iter()
            .filter(|a| a.acked() && a.started >= asked && a.ended <= done)
            .map(ms)
            .collect();
        idle_all.extend(idle.iter().copied());
        during_all.extend(during.iter().copied());
        let comps: Vec<String> = record
            .summary
            .components
            .iter()
            .map(|c| {
                format!(
                    "{} {:.1} MiB in {:.1} s",
                    c.component.as_str(),
                    c.bytes as f64 / 1_048_576.0,
                    c.duration_ms as f64 / 1000.0
                )
            })
            .collect();
        let (i50, i99, _) = stats(&mut idle).unwrap_or_default();
        let (d50, d99, dmax) = stats(&mut during).unwrap_or_default();
        lines.push(format!(
            "run {run}: {} on {} {} in {:.1} s ({}); inserts idle p50 {i50:.1} / p99 {i99:.1} ms \
             ({} acked), during p50 {d50:.1} / p99 {d99:.1} / max {dmax:.1} ms ({} acked)",
            record.id,
            record.node,
            if record.verified {
                "verified"
            } else {
                "FAILED"
            },
            record.summary.duration_ms as f64 / 1000.0,
            comps.join(", "),
            idle.len(),
            during.len()
        ));
        eprintln!("{}", lines.last().map(String::as_str).unwrap_or_default());
        if !record.verified {
            eprintln!("  reason: {}", record.reason);
        }
    }
    if args.data_mb > 0 {
        unseed(&spec, w);
    }
    println!(
        "backup benchmark on the lab ({} runs, ~{} MiB seeded):",
        args.runs, args.data_mb
    );
    for l in &lines {
        println!("  {l}");
    }
    let (i50, i99, _) = stats(&mut idle_all).unwrap_or_default();
    let (d50, d99, dmax) = stats(&mut during_all).unwrap_or_default();
    println!(
        "  all runs: insert latency through every HAProxy idle p50 {i50:.1} / p99 {i99:.1} ms, \
         during a backup p50 {d50:.1} / p99 {d99:.1} / max {dmax:.1} ms; p99 ratio {:.2} \
         (target <= 1.5); {failed} inserts failed",
        if i99 > 0.0 { d99 / i99 } else { 0.0 }
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("triad-backup-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        assert_eq!(stats(&mut []), None);
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(stats(&mut v), Some((3.0, 5.0, 5.0)));
    }
}
