//! `triad backup list|now|show|restore`.
//!
//! `list`, `now` and `show` talk to an agent's API. `restore` runs here, on the machine where
//! the operator types it: it reads the repository and its password file from the config file
//! (`--config`), asks the API for the run's snapshot of the component, and restores it into a
//! new directory, never over live data.

// Reads the clock (adapter: waiting and timing for the operator); see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Subcommand, ValueEnum};

use super::{get_json, post_json, Failure, Target};
use super::{EXIT_REFUSED, EXIT_SOFTWARE, EXIT_USAGE};
use crate::api::backup::{BackupsBody, RunningBackup};
use crate::backup::restic::Restic;
use crate::cluster::{BackupRecord, BackupTrigger};
use crate::config;
use crate::ids::UnixMillis;

/// `triad backup ...`.
#[derive(Subcommand, Debug)]
pub(super) enum BackupCmd {
    /// The schedule, the next due time, a running backup's progress, the last success per
    /// component, the last failure, and the catalog of finished runs.
    List {
        #[command(flatten)]
        target: Target,
        /// Print the raw JSON (`GET /v1/backups`).
        #[arg(long)]
        json: bool,
    },
    /// Ask for a backup now; the leader leases it to a node. Follows its progress until it
    /// ends (verified or failed), unless `--no-wait`.
    Now {
        /// Why (recorded in the history).
        #[arg(long, default_value = "backup now")]
        reason: String,
        /// Return once the request is committed.
        #[arg(long)]
        no_wait: bool,
        /// Give up following after this long (the backup goes on).
        #[arg(long, default_value = "3h", value_parser = humantime::parse_duration)]
        timeout: Duration,
        #[command(flatten)]
        target: Target,
        /// File with the API bearer token (default: the config's api.token_file).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Print JSON: the request's answer, then the final record.
        #[arg(long)]
        json: bool,
    },
    /// One run: its components (digest, size, duration, snapshot), Galera position, Redis
    /// offset, version, and verdict.
    Show {
        /// The backup id (`b7` or `7`).
        id: String,
        #[command(flatten)]
        target: Target,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restore one component of a run into a new directory (never over live data).
    Restore {
        /// The backup id (`b7` or `7`).
        id: String,
        /// Which component.
        #[arg(long, value_enum)]
        component: ComponentArg,
        /// Where to restore: a directory that does not exist yet, or is empty.
        #[arg(long)]
        to: PathBuf,
        #[command(flatten)]
        target: Target,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(super) enum ComponentArg {
    /// The database (a prepared MariaDB datadir).
    Db,
    /// The Redis RDB.
    Redis,
    /// The shop's shared directories.
    Files,
}

impl ComponentArg {
    fn name(self) -> &'static str {
        match self {
            ComponentArg::Db => "db",
            ComponentArg::Redis => "redis",
            ComponentArg::Files => "files",
        }
    }
}

pub(super) async fn dispatch(cmd: BackupCmd) -> Result<(), Failure> {
    match cmd {
        BackupCmd::List { target, json } => list(&target, json).await,
        BackupCmd::Now {
            reason,
            no_wait,
            timeout,
            mut target,
            token_file,
            json,
        } => {
            // The admin token also opens the reads that follow the run.
            target.reads_with(&token_file);
            now(&target, &reason, no_wait, timeout, token_file, json).await
        }
        BackupCmd::Show { id, target, json } => show(&target, &id, json).await,
        BackupCmd::Restore {
            id,
            component,
            to,
            target,
            json,
        } => restore(&target, &id, component, &to, json).await,
    }
}

async fn fetch(target: &Target) -> Result<BackupsBody, Failure> {
    let (_, v) = get_json(target, "/v1/backups").await?;
    serde_json::from_value(v).map_err(|e| Failure {
        code: EXIT_SOFTWARE,
        message: format!("the agent's /v1/backups is not what this CLI reads: {e}"),
    })
}

fn when(t: UnixMillis) -> String {
    crate::decide::backup::fmt_time(t)
}

fn size(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..=1023 => format!("{bytes} B"),
        1024..=1_048_575 => format!("{:.1} KiB", b / 1024.0),
        1_048_576..=1_073_741_823 => format!("{:.1} MiB", b / 1_048_576.0),
        _ => format!("{:.1} GiB", b / 1_073_741_824.0),
    }
}

fn trigger(t: &BackupTrigger) -> String {
    match t {
        BackupTrigger::Scheduled { window } => format!("window {}", when(*window)),
        BackupTrigger::Manual { request } => format!("request @{request}"),
    }
}

fn running_line(r: &RunningBackup) -> String {
    let l = &r.lease;
    let p = r.progress.as_ref().map_or_else(
        || "not started yet".to_string(),
        |p| format!("{}, {}, {} s", p.phase, size(p.bytes), p.elapsed_ms / 1000),
    );
    format!(
        "{} on {} (attempt {}, {}): {p}",
        l.id,
        l.node,
        l.attempt,
        trigger(&l.trigger)
    )
}

fn record_line(r: &BackupRecord) -> String {
    let verdict = if r.verified {
        "verified"
    } else if r.expired {
        "expired"
    } else {
        "FAILED"
    };
    format!(
        "{:<5} {:<4} {:<33} #{} {:<20} {:>6} s  {:<8} {}",
        r.id.to_string(),
        r.node.to_string(),
        trigger(&r.trigger),
        r.attempt,
        when(r.started_at),
        r.summary.duration_ms / 1000,
        verdict,
        r.reason
    )
}

/// The backup section of `triad status`.
pub(super) fn status_lines(b: &BackupsBody) -> String {
    let mut out = String::from("\nbackups:");
    let successes: Vec<String> = ["db", "redis", "files"]
        .iter()
        .map(|c| match b.last_success.get(*c) {
            Some(r) => format!("{c} {} {}", r.id, when(r.finished_at)),
            None => format!("{c} none"),
        })
        .collect();
    out.push_str(&format!("\n  last verified: {}", successes.join("; ")));
    out.push_str(&format!(
        "\n  next due: {}",
        b.next_due.map_or_else(|| "never".to_string(), when)
    ));
    if let Some(r) = &b.running {
        out.push_str(&format!("\n  running: {}", running_line(r)));
    }
    if let Some(f) = &b.last_failure {
        out.push_str(&format!(
            "\n  LAST FAILURE: {} at {}: {}",
            f.id,
            when(f.finished_at),
            f.reason
        ));
    }
    out.push('\n');
    out
}

async fn list(target: &Target, json: bool) -> Result<(), Failure> {
    if json {
        let (text, _) = get_json(target, "/v1/backups").await?;
        println!("{text}");
        return Ok(());
    }
    let b = fetch(target).await?;
    println!("schedule:     {} (UTC)", b.schedule);
    println!(
        "next due:     {}",
        b.next_due.map_or_else(|| "never".to_string(), when)
    );
    match &b.running {
        Some(r) => println!("running:      {}", running_line(r)),
        None => println!("running:      none"),
    }
    if let Some(r) = &b.requested {
        println!("requested:    by {} at {}: {}", r.by, when(r.at), r.reason);
    }
    if let Some(r) = &b.retry {
        println!(
            "retry owed:   {} failed on {}; the retry runs on another node",
            r.failed, r.failed_on
        );
    }
    for c in ["db", "redis", "files"] {
        match b.last_success.get(c) {
            Some(r) => println!("last success: {c:<5} {} at {}", r.id, when(r.finished_at)),
            None => println!("last success: {c:<5} none"),
        }
    }
    if let Some(f) = &b.last_failure {
        println!(
            "last failure: {} at {}: {}",
            f.id,
            when(f.finished_at),
            f.reason
        );
    }
    println!();
    println!(
        "{:<5} {:<4} {:<33} {:<2} {:<20} {:>8}  {:<8} reason",
        "id", "node", "for", "#", "started", "took", "result"
    );
    for r in &b.catalog {
        println!("{}", record_line(r));
    }
    Ok(())
}

async fn show(target: &Target, id: &str, json: bool) -> Result<(), Failure> {
    let (text, v) = get_json(target, &format!("/v1/backups/{id}")).await?;
    if json {
        println!("{text}");
        return Ok(());
    }
    if let Ok(r) = serde_json::from_value::<BackupRecord>(v["record"].clone()) {
        println!("{}", record_line(&r));
        println!("  galera position: {}", or_none(&r.summary.galera_position));
        println!(
            "  redis offset:    {}",
            r.summary
                .redis_offset
                .map_or_else(|| "none".into(), |o| o.to_string())
        );
        println!("  triad version:   {}", or_none(&r.summary.version));
        for c in &r.summary.components {
            println!(
                "  {:<6} {:>10}  {:>5} s  snapshot {}  sha256 {}",
                c.component.as_str(),
                size(c.bytes),
                c.duration_ms / 1000,
                c.snapshot,
                c.sha256
            );
        }
        return Ok(());
    }
    if let Ok(r) = serde_json::from_value::<RunningBackup>(v["running"].clone()) {
        println!("running: {}", running_line(&r));
        return Ok(());
    }
    println!("{text}");
    Ok(())
}

fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "none"
    } else {
        s
    }
}

async fn now(
    target: &Target,
    reason: &str,
    no_wait: bool,
    timeout: Duration,
    token_file: Option<PathBuf>,
    json: bool,
) -> Result<(), Failure> {
    let answer = post_json(
        target,
        "/v1/backup",
        token_file,
        serde_json::json!({ "reason": reason }),
        Duration::from_secs(30),
        json,
    )
    .await?;
    if let Some(why) = answer["rejected"].as_str() {
        return Err(Failure {
            code: EXIT_REFUSED,
            message: format!("backup request refused: {why}"),
        });
    }
    let index = answer["applied_index"].as_u64().unwrap_or(0);
    if !json {
        eprintln!("backup requested (committed at index {index}); the leader leases it to a node");
    }
    if no_wait {
        return Ok(());
    }
    let mine = BackupTrigger::Manual {
        request: crate::ids::LogIndex(index),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure {
                code: EXIT_REFUSED,
                message: format!(
                    "still not done after {}; it goes on: follow it with `triad backup list`",
                    humantime::format_duration(timeout)
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let b = match fetch(target).await {
            Ok(b) => b,
            Err(f) => {
                if !json && last != f.message {
                    eprintln!("  ({}; retrying)", f.message);
                    last = f.message;
                }
                continue;
            }
        };
        let records: Vec<&BackupRecord> = b.catalog.iter().filter(|r| r.trigger == mine).collect();
        let owed = b.retry.as_ref().is_some_and(|r| r.trigger == mine);
        let running = b.running.as_ref().filter(|r| r.lease.trigger == mine);
        if let Some(r) = running {
            let line = running_line(r);
            if !json && line != last {
                eprintln!("  {line}");
                last = line;
            }
            continue;
        }
        if let Some(r) = records.first() {
            if r.verified || (!owed && b.requested.as_ref().is_none_or(|q| q.index.0 != index)) {
                if json {
                    println!("{}", serde_json::json!({ "record": r }));
                } else {
                    println!("{}", record_line(r));
                }
                if r.verified {
                    return Ok(());
                }
                return Err(Failure {
                    code: EXIT_REFUSED,
                    message: format!("backup {} failed: {}", r.id, r.reason),
                });
            }
            let line = format!("{} {}; retrying on another node", r.id, r.reason);
            if !json && line != last {
                eprintln!("  {line}");
                last = line;
            }
        }
    }
}

/// Whether `to` may receive a restore: not existing, or an empty directory, and neither
/// inside nor around a live path.
fn check_destination(to: &Path, live: &[PathBuf]) -> Result<PathBuf, String> {
    let abs = if to.is_absolute() {
        to.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("current directory: {e}"))?
            .join(to)
    };
    let canon_parent = abs
        .parent()
        .and_then(|p| std::fs::canonicalize(p).ok())
        .map(|p| p.join(abs.file_name().unwrap_or_default()))
        .unwrap_or_else(|| abs.clone());
    for l in live {
        let l = std::fs::canonicalize(l).unwrap_or_else(|_| l.clone());
        if canon_parent.starts_with(&l) || l.starts_with(&canon_parent) {
            return Err(format!(
                "{} is {} live data ({}); restore into a new directory elsewhere",
                abs.display(),
                if canon_parent.starts_with(&l) {
                    "inside"
                } else {
                    "around"
                },
                l.display()
            ));
        }
    }
    // Whatever this node's config says: never into (or under) a MariaDB datadir or a Redis
    // directory of any node on this machine.
    for dir in canon_parent.ancestors() {
        for mark in ["grastate.dat", "ibdata1", "aria_log_control", "dump.rdb"] {
            if dir.join(mark).exists() {
                return Err(format!(
                    "{} is inside {}, which holds {mark} (live data?); restore into a new \
                     directory elsewhere",
                    abs.display(),
                    dir.display()
                ));
            }
        }
    }
    match std::fs::read_dir(&abs) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(format!(
                    "{} is not empty; restore into a new or empty directory",
                    abs.display()
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", abs.display())),
    }
    Ok(abs)
}

async fn restore(
    target: &Target,
    id: &str,
    component: ComponentArg,
    to: &Path,
    json: bool,
) -> Result<(), Failure> {
    let usage = |message: String| Failure {
        code: EXIT_USAGE,
        message,
    };
    let cfg = config::load(&target.config_path(), None).map_err(|e| {
        usage(format!(
            "{e}\n(restore reads the repository and its password from the config: pass \
             --config)"
        ))
    })?;
    let c = &cfg.config;
    let b = c.backup.as_ref().ok_or_else(|| {
        usage(format!(
            "{} has no [backup] section: nothing to restore from",
            target.config_path().display()
        ))
    })?;
    let mut live = vec![c.node.data_dir.clone()];
    live.extend(c.mariadb.as_ref().and_then(|m| m.datadir.clone()));
    live.extend(c.gluster.iter().flat_map(|g| g.mounts.iter().cloned()));
    live.extend(b.files.iter().cloned());
    let dest = check_destination(to, &live).map_err(usage)?;
    let (_, v) = get_json(target, &format!("/v1/backups/{id}")).await?;
    let record: BackupRecord =
        serde_json::from_value(v["record"].clone()).map_err(|_| Failure {
            code: EXIT_REFUSED,
            message: format!("backup {id} is not finished (or not in the catalog)"),
        })?;
    let name = component.name();
    let comp = record
        .summary
        .components
        .iter()
        .find(|s| s.component.as_str() == name)
        .ok_or_else(|| Failure {
            code: EXIT_REFUSED,
            message: format!("backup {} has no {name} component", record.id),
        })?;
    if !record.verified && !json {
        eprintln!(
            "warning: backup {} was not verified ({}); restoring it anyway",
            record.id, record.reason
        );
    }
    let restic = Restic {
        program: b.programs.restic.clone(),
        repository: b.repository.clone(),
        password_file: b.password_file.clone(),
        host: c.cluster_name.clone(),
        cache_dir: std::env::temp_dir().join("triad-restic-cache"),
    };
    if !json {
        eprintln!(
            "restoring {name} of {} (snapshot {}, {}) into {} ...",
            record.id,
            comp.snapshot,
            size(comp.bytes),
            dest.display()
        );
    }
    let started = std::time::Instant::now();
    restic
        .restore(&comp.snapshot, &dest, Duration::from_secs(24 * 3600))
        .await
        .map_err(|e| Failure {
            code: EXIT_REFUSED,
            message: format!("restore failed: {e}"),
        })?;
    let hint = match component {
        ComponentArg::Db => format!(
            "{}/db is a prepared MariaDB datadir (Galera position {}): start a server on it \
             with mariadbd --datadir, or copy it into place while mariadbd is stopped",
            dest.display(),
            or_none(&record.summary.galera_position)
        ),
        ComponentArg::Redis => format!(
            "{}/redis/dump.rdb is the RDB (replication offset {}): put it in a stopped \
             Redis's dir to load it",
            dest.display(),
            record
                .summary
                .redis_offset
                .map_or_else(|| "unknown".into(), |o| o.to_string())
        ),
        ComponentArg::Files => format!(
            "{} holds the shared directories as they were",
            dest.display()
        ),
    };
    if json {
        println!(
            "{}",
            serde_json::json!({
                "id": record.id,
                "component": name,
                "snapshot": comp.snapshot,
                "to": dest,
                "seconds": started.elapsed().as_secs_f64(),
            })
        );
    } else {
        println!(
            "restored in {:.1} s. {hint}",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restores_never_go_over_live_data() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let live = d.path().join("live");
        std::fs::create_dir_all(live.join("data")).unwrap_or_else(|e| panic!("{e}"));
        let full = d.path().join("full");
        std::fs::create_dir_all(&full).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(full.join("x"), b"x").unwrap_or_else(|e| panic!("{e}"));
        let lives = [live.clone()];
        let datadir = d.path().join("other/mysql");
        std::fs::create_dir_all(&datadir).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(datadir.join("grastate.dat"), b"x").unwrap_or_else(|e| panic!("{e}"));
        let cases = [
            (live.join("data/r"), Some("inside live data")),
            (datadir.join("x/y"), Some("which holds grastate.dat")),
            (d.path().to_path_buf(), Some("around live data")),
            (full.clone(), Some("is not empty")),
            (d.path().join("new"), None),
        ];
        for (to, err) in cases {
            let got = check_destination(&to, &lives);
            match err {
                Some(e) => assert!(
                    got.as_ref().is_err_and(|m| m.contains(e)),
                    "{}: {got:?}",
                    to.display()
                ),
                None => assert!(got.is_ok(), "{}: {got:?}", to.display()),
            }
        }
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(2048), "2.0 KiB");
        assert_eq!(size(3 * 1_048_576), "3.0 MiB");
    }
}
