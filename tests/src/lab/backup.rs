//! Backups on the lab (issue 15): `triad backup now` through the CLI, and what the lab tests
//! and the backup benchmark check around it.
//!
//! Everything goes through the `triad` binary the lab runs (`backup now|list --json`), as an
//! operator would type it, against the agents' APIs on the lab bridge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use triad::api::backup::BackupsBody;
use triad::cluster::BackupRecord;

use super::{query, LabSpec};

/// The CLI as the lab's operator: its reads carry the lab's token.
fn triad(spec: &LabSpec) -> Command {
    let mut c = Command::new(&spec.triad_bin);
    c.env("TRIAD_READ_TOKEN_FILE", spec.token_file());
    super::process::clear_signal_mask(&mut c);
    c
}

/// `triad backup list --json` against node `n`'s agent.
pub fn list(spec: &LabSpec, n: u64) -> Result<BackupsBody> {
    let out = triad(spec)
        .args(["backup", "list", "--json", "--api", &spec.api_url(n)])
        .output()
        .context("running triad backup list")?;
    ensure!(
        out.status.success(),
        "triad backup list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).context("parsing triad backup list --json")
}

/// `triad backup now --json` through node `n`'s agent: waits until the request's run ended and
/// returns its final record (verified or failed), and the CLI's progress lines.
pub fn now(spec: &LabSpec, n: u64, reason: &str, timeout: Duration) -> Result<BackupRecord> {
    let out = triad(spec)
        .args([
            "backup",
            "now",
            "--json",
            "--reason",
            reason,
            "--api",
            &spec.api_url(n),
            "--token-file",
        ])
        .arg(spec.token_file())
        .args(["--timeout", &format!("{}s", timeout.as_secs())])
        .output()
        .context("running triad backup now")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text
        .lines()
        .rev()
        .find(|l| l.contains("\"record\""))
        .ok_or_else(|| {
            anyhow!(
                "triad backup now gave no record ({}): {}{}",
                out.status,
                text,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let v: serde_json::Value = serde_json::from_str(last)?;
    serde_json::from_value(v["record"].clone()).context("parsing the final record")
}

/// `triad backup restore` of `component` of `id` into `to`, with node `n`'s config.
pub fn restore(spec: &LabSpec, n: u64, id: &str, component: &str, to: &Path) -> Result<()> {
    let out = triad(spec)
        .args(["backup", "restore", id, "--component", component, "--json"])
        .arg("--to")
        .arg(to)
        .args(["--api", &spec.api_url(n), "--config"])
        .arg(spec.agent_config_path(n))
        .output()
        .context("running triad backup restore")?;
    ensure!(
        out.status.success(),
        "triad backup restore {id} {component}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Polls node `n`'s `backup list` until `f` says yes (or `timeout`); the last answer.
pub fn wait_list(
    spec: &LabSpec,
    n: u64,
    what: &str,
    timeout: Duration,
    f: impl Fn(&BackupsBody) -> bool,
) -> Result<BackupsBody> {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < timeout {
        if let Ok(b) = list(spec, n) {
            if f(&b) {
                return Ok(b);
            }
            last = Some(b);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!(
        "{what}: not within {timeout:?}; last: {}",
        last.map(|b| serde_json::to_string(&b).unwrap_or_default())
            .unwrap_or_else(|| "no answer".into())
    )
}

/// Rows of every table of the shop database on node `n` (`schema.table` -> rows).
pub fn shop_counts(spec: &LabSpec, n: u64) -> Result<BTreeMap<String, u64>> {
    let out = query::mysql(
        spec,
        n,
        "SELECT CONCAT(table_schema, '.', table_name) FROM information_schema.tables \
         WHERE table_schema = 'shop' AND table_type = 'BASE TABLE'",
        Duration::from_secs(10),
    )?;
    let mut counts = BTreeMap::new();
    for t in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (s, name) = t.split_once('.').ok_or_else(|| anyhow!("table {t}"))?;
        let n_rows: u64 = query::mysql(
            spec,
            n,
            &format!("SELECT COUNT(*) FROM `{s}`.`{name}`"),
            Duration::from_secs(10),
        )?
        .trim()
        .parse()?;
        counts.insert(t.to_string(), n_rows);
    }
    Ok(counts)
}

/// Every file under `root` (relative path -> content), for comparing a restore.
pub fn files_under(root: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) -> Result<()> {
        for e in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
            let p = e?.path();
            if p.is_dir() {
                walk(root, &p, out)?;
            } else {
                let rel = p.strip_prefix(root)?.display().to_string();
                out.insert(rel, std::fs::read(&p)?);
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out)?;
    Ok(out)
}

/// The keys of an RDB file, read by loading it into a private redis-server on a unix socket.
pub fn rdb_keys(rdb: &Path, scratch: &Path) -> Result<BTreeSet<String>> {
    std::fs::create_dir_all(scratch)?;
    let dir = rdb.parent().ok_or_else(|| anyhow!("no parent"))?;
    let socket = scratch.join("redis.sock");
    let mut server = Command::new("redis-server")
        .args(["--port", "0", "--unixsocket"])
        .arg(&socket)
        .args(["--dir"])
        .arg(dir)
        .args(["--dbfilename"])
        .arg(rdb.file_name().ok_or_else(|| anyhow!("no file name"))?)
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting a private redis-server")?;
    let result = (|| -> Result<BTreeSet<String>> {
        let start = Instant::now();
        loop {
            let out = Command::new("redis-cli")
                .arg("-s")
                .arg(&socket)
                .args(["--raw", "KEYS", "*"])
                .output()?;
            if out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("LOADING") {
                return Ok(String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect());
            }
            ensure!(
                start.elapsed() < Duration::from_secs(10),
                "the private redis-server did not answer"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    })();
    let _ = server.kill();
    let _ = server.wait();
    result
}

/// A scratch directory for restores, removed with the value.
pub fn scratch(label: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("triad-restore-{label}-"))
        .tempdir()
        .context("creating a scratch directory")
}

/// The lab's repository directory, and where a copy of it is kept aside.
pub fn repository(spec: &LabSpec) -> (PathBuf, PathBuf) {
    let r = spec.backup_repository();
    let aside = r.with_extension("aside");
    (r, aside)
}

/// Runs `sql` (batch output) on a restored, prepared datadir, in a private mariadbd (no
/// networking, no grant tables, no wsrep) stopped afterwards.
pub fn restored_query(datadir: &Path, scratch: &Path, sql: &str) -> Result<String> {
    std::fs::create_dir_all(scratch)?;
    let socket = scratch.join("m.sock");
    let mut server = Command::new("mariadbd")
        .arg("--no-defaults")
        .arg(format!("--datadir={}", datadir.display()))
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--pid-file={}", scratch.join("m.pid").display()))
        .arg(format!("--log-error={}", scratch.join("m.err").display()))
        .args([
            "--skip-networking",
            "--wsrep-on=OFF",
            "--skip-grant-tables",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=16M",
            "--user=root",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting a private mariadbd")?;
    let result = (|| -> Result<String> {
        let start = Instant::now();
        loop {
            let out = Command::new("mariadb")
                .arg("-S")
                .arg(&socket)
                .args(["--batch", "--skip-column-names", "-e", sql])
                .output()?;
            if out.status.success() {
                return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
            }
            ensure!(
                start.elapsed() < Duration::from_secs(30),
                "the private mariadbd did not answer: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    })();
    let _ = Command::new("mariadb")
        .arg("-S")
        .arg(&socket)
        .args(["-e", "SHUTDOWN"])
        .output();
    let stop = Instant::now();
    while stop.elapsed() < Duration::from_secs(10) {
        if matches!(server.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = server.kill();
    let _ = server.wait();
    result
}

/// Processes whose command line or working directory is under `dir` (a backup's leftovers).
pub fn processes_under(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let cwd = std::fs::read_link(e.path().join("cwd"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if cmdline.contains(&needle) || cwd.starts_with(&needle) {
            out.push(format!("{name}: {}", cmdline.trim()));
        }
    }
    out
}
