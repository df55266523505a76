//! GlusterFS probes: the volume as this node's glusterd sees it (bricks against the expected
//! list, pending heals, peers), and each FUSE mount point by a real write/read/remove.
//!
//! The volume probe runs the gluster CLI (`--mode=script ... --xml`) as a child process that is
//! killed when the check is cut at its timeout. Status: `unreachable` when the CLI cannot talk
//! to glusterd; `down` when this node's own brick is down; `degraded` when entries are in
//! split-brain, another brick is down, a peer is disconnected, or heals are pending; otherwise
//! `healthy`. Pending heals and split-brain entries are reported with counts and (up to
//! [`MAX_HEAL_PATHS`]) paths; a split-brain's reason names the commands an operator runs to
//! resolve it. Triad never resolves a split-brain: which copy is right is the operator's call.
//!
//! The mount probe does blocking filesystem calls on a blocking thread, at most one in flight:
//! while a check hangs (writes block for the whole `network.ping-timeout` during a partition),
//! later checks report `down` at once instead of starting another thread, so a hung mount
//! neither piles up threads nor delays any other probe.

// Reads the clock (adapter: times gluster commands); see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::gluster_xml::{self, bricks_down};
use super::{CheckResult, FailureKind, ProbeId};
use crate::config::ProbeTiming;
use crate::helper_unit::HelperUnit;

/// Probes the volume through the gluster CLI.
pub struct GlusterProbe {
    id: ProbeId,
    command: Vec<String>,
    volume: String,
    bricks: Vec<String>,
    local_brick: Option<String>,
    timing: ProbeTiming,
    checks: AtomicU64,
    last_extra: std::sync::Mutex<Extra>,
    heal_unit: Option<HelperUnit>,
}

/// `heal info` (or why it failed) and `peer status`, from the last check that ran them.
type Extra = (
    Result<gluster_xml::HealInfo, String>,
    Vec<gluster_xml::PeerStatus>,
);

/// The most entry paths a check reports (pending heal, and in split-brain).
pub const MAX_HEAL_PATHS: usize = 20;

/// `heal info` and `peer status` run on every [`EXTRA_EVERY`]-th check (each gluster CLI call
/// costs about a quarter of a CPU second), and on every check while something is wrong.
pub const EXTRA_EVERY: u64 = 3;

impl GlusterProbe {
    /// A probe of `volume` with its expected bricks.
    pub fn new(
        id: ProbeId,
        command: Vec<String>,
        volume: String,
        bricks: Vec<String>,
        local_brick: Option<String>,
        timing: ProbeTiming,
    ) -> Self {
        GlusterProbe {
            id,
            command,
            volume,
            bricks,
            local_brick,
            timing,
            checks: AtomicU64::new(0),
            last_extra: std::sync::Mutex::new((Ok(gluster_xml::HealInfo::default()), Vec::new())),
            heal_unit: None,
        }
    }

    /// Runs `heal info` by starting this helper unit (the package's
    /// `triad-gluster-heal@VOLUME.service`, as root) instead of through the CLI: `heal info`
    /// runs `glfsheal`, which needs glusterd's root-only socket.
    pub fn with_heal_unit(mut self, unit: Option<HelperUnit>) -> Self {
        self.heal_unit = unit;
        self
    }

    /// `volume heal VOLUME info`, and `volume heal VOLUME info split-brain` when something is
    /// pending, parsed; an error says why the backlog is unknown. The helper unit runs both
    /// (the second only when an entry is pending) and prints both documents.
    async fn heal_info(&self) -> Result<gluster_xml::HealInfo, String> {
        if let Some(unit) = &self.heal_unit {
            let text = unit
                .run(self.timing.timeout, true)
                .await
                .map_err(|e| e.to_string())?;
            return gluster_xml::parse_heal_docs(&text);
        }
        let failed = |r: CheckResult| r.error.unwrap_or_else(|| "gluster CLI failed".into());
        let xml = self
            .cli(&["volume", "heal", &self.volume, "info"])
            .await
            .map_err(failed)?;
        let bricks = gluster_xml::parse_heal_info(&xml)?;
        let pending: u64 = bricks.iter().filter_map(|b| b.entries).sum();
        let split_brain = if pending == 0 {
            Some(Vec::new())
        } else {
            match self
                .cli(&["volume", "heal", &self.volume, "info", "split-brain"])
                .await
            {
                Ok(x) => gluster_xml::parse_heal_info(&x).ok(),
                Err(_) => None,
            }
        };
        Ok(gluster_xml::HealInfo {
            bricks,
            split_brain,
        })
    }

    async fn cli(&self, args: &[&str]) -> Result<String, CheckResult> {
        run_cli(&self.command, args, true)
            .await
            .map_err(|e| CheckResult::unreachable(e.kind, e.message))
    }

    async fn run(&self) -> CheckResult {
        // `volume status` takes a cluster-wide lock; with three agents (and operators) asking,
        // glusterd sometimes answers "Another transaction is in progress". That says nothing
        // about the volume's health: retry a little, then report it as such.
        let mut attempt = 0;
        let bricks = loop {
            let status = match self
                .cli(&["volume", "status", &self.volume, "detail"])
                .await
            {
                Ok(x) => x,
                Err(r) => return r,
            };
            match gluster_xml::parse_volume_status(&status) {
                Ok(b) => break b,
                Err(e) if is_busy(&e) && attempt < 2 => {
                    attempt += 1;
                    let jitter = u64::from(self.id.subject.get() as u32 % 7) * 37;
                    tokio::time::sleep(Duration::from_millis(150 * attempt + jitter)).await;
                }
                Err(e) if is_busy(&e) => {
                    // Peers need no volume lock: say at least whether they are connected (a
                    // lock that stays held usually means a peer went away mid-transaction).
                    let peers = match self.cli(&["peer", "status"]).await {
                        Ok(x) => gluster_xml::parse_peer_status(&x).unwrap_or_default(),
                        Err(_) => Vec::new(),
                    };
                    let gone: Vec<&str> = peers
                        .iter()
                        .filter(|p| !p.connected)
                        .map(|p| p.hostname.as_str())
                        .collect();
                    let why = if gone.is_empty() {
                        format!("volume status unavailable (glusterd busy): {e}")
                    } else {
                        format!(
                            "peers disconnected: {}; volume status unavailable (lock held)",
                            gone.join(", ")
                        )
                    };
                    return CheckResult::degraded(
                        serde_json::json!({ "volume": self.volume, "peers_disconnected": gone }),
                        why,
                    );
                }
                Err(e) => return CheckResult::down(serde_json::Value::Null, e),
            }
        };
        let down = bricks_down(&self.bricks, &bricks);
        let n = self.checks.fetch_add(1, Ordering::Relaxed);
        let previous = self
            .last_extra
            .lock()
            .map(|g| g.clone())
            .unwrap_or_else(|_| (Ok(gluster_xml::HealInfo::default()), Vec::new()));
        let troubled = !down.is_empty()
            || previous.0.as_ref().map_or(true, |h| h.pending() > 0)
            || previous.1.iter().any(|p| !p.connected);
        let (heal, peers) = if n.is_multiple_of(EXTRA_EVERY) || troubled {
            let heal = self.heal_info().await;
            let peers = match self.cli(&["peer", "status"]).await {
                Ok(x) => gluster_xml::parse_peer_status(&x).unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            if let Ok(mut g) = self.last_extra.lock() {
                *g = (heal.clone(), peers.clone());
            }
            (heal, peers)
        } else {
            previous
        };
        let (heal, heal_error) = match heal {
            Ok(h) => (h, None),
            Err(e) => (gluster_xml::HealInfo::default(), Some(e)),
        };
        let pending = heal.pending();
        let split_brain = heal.split_brain();
        let heal_paths = gluster_xml::entry_paths(&heal.bricks, MAX_HEAL_PATHS);
        let split_paths = gluster_xml::entry_paths(
            heal.split_brain.as_deref().unwrap_or_default(),
            MAX_HEAL_PATHS,
        );
        let disconnected: Vec<&str> = peers
            .iter()
            .filter(|p| !p.connected)
            .map(|p| p.hostname.as_str())
            .collect();
        let unknown = heal_error.is_some();
        let details = serde_json::json!({
            "volume": self.volume,
            "local_brick": self.local_brick,
            "bricks_expected": self.bricks.len(),
            "bricks_online": self.bricks.len() - down.len(),
            "bricks_down": down,
            "heal_pending": if unknown { serde_json::Value::Null } else { pending.into() },
            "heal_paths": heal_paths,
            "heal_error": heal_error,
            "split_brain": if unknown { serde_json::Value::Null } else { split_brain.into() },
            "split_brain_paths": split_paths,
            "peers_disconnected": disconnected,
            "bricks": bricks,
        });
        if let Some(local) = &self.local_brick {
            if down.contains(local) {
                return CheckResult::down(details, format!("local brick {local} is down"));
            }
        }
        if let Some(n) = split_brain.filter(|n| *n > 0) {
            // Never resolved automatically: which copy is right is the operator's call.
            return CheckResult::degraded(
                details,
                format!(
                    "{n} entries in split-brain ({}): Triad does not resolve them; inspect \
                     with `gluster volume heal {v} info split-brain`, then per file `gluster \
                     volume heal {v} split-brain latest-mtime FILE` (or bigger-file, or \
                     source-brick HOST:BRICK FILE)",
                    listed(&split_paths, n),
                    v = self.volume
                ),
            );
        }
        if !down.is_empty() {
            return CheckResult::degraded(details, format!("bricks down: {}", down.join(", ")));
        }
        if !disconnected.is_empty() {
            return CheckResult::degraded(
                details,
                format!("peers disconnected: {}", disconnected.join(", ")),
            );
        }
        if pending > 0 {
            let split = if split_brain.is_none() {
                "; split-brain unknown (its listing failed)"
            } else {
                ""
            };
            return CheckResult::degraded(
                details,
                format!(
                    "{pending} entries pending heal ({}){split}",
                    listed(&heal_paths, pending)
                ),
            );
        }
        if let Some(e) = heal_error {
            // Unknown is not zero: a heal backlog that cannot be read is reported, not hidden.
            return CheckResult::degraded(details, format!("heal info unavailable: {e}"));
        }
        CheckResult::healthy(details)
    }
}

/// Whether a gluster error is lock contention rather than a fault.
fn is_busy(e: &str) -> bool {
    e.contains("Another transaction is in progress") || e.contains("Locking failed")
}

super::impl_probe!(GlusterProbe);

/// Probes one mount point with a write, read and remove of a small file.
pub struct MountProbe {
    id: ProbeId,
    path: PathBuf,
    file_name: String,
    timing: ProbeTiming,
    in_flight: Arc<AtomicBool>,
    /// Milliseconds since `epoch` at which the in-flight check started.
    started_ms: Arc<AtomicU64>,
    epoch: Instant,
}

impl MountProbe {
    /// A probe of the mount at `path`; `node` names the probe file so agents do not collide.
    pub fn new(id: ProbeId, path: PathBuf, node: &str, timing: ProbeTiming) -> Self {
        MountProbe {
            id,
            path,
            file_name: format!(".triad-probe-{node}"),
            timing,
            in_flight: Arc::new(AtomicBool::new(false)),
            started_ms: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
        }
    }

    async fn run(&self) -> CheckResult {
        if self.in_flight.swap(true, Ordering::AcqRel) {
            let started = Duration::from_millis(self.started_ms.load(Ordering::Acquire));
            let hung = self.epoch.elapsed().saturating_sub(started);
            return CheckResult::down(
                serde_json::json!({ "path": self.path, "hung_for_ms": hung.as_millis() as u64 }),
                format!(
                    "mount {} hung: the previous check is still blocked after {:.1}s",
                    self.path.display(),
                    hung.as_secs_f64()
                ),
            );
        }
        self.started_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Release);
        let path = self.path.clone();
        let file = self.path.join(&self.file_name);
        let in_flight = self.in_flight.clone();
        let task = tokio::task::spawn_blocking(move || {
            let r = touch(&path, &file);
            in_flight.store(false, Ordering::Release);
            r
        });
        let path = self.path.display().to_string();
        match tokio::time::timeout(self.timing.timeout, task).await {
            Ok(Ok(Ok(()))) => CheckResult::healthy(serde_json::json!({ "path": path })),
            Ok(Ok(Err(e))) => CheckResult::down(
                serde_json::json!({ "path": path }),
                format!("mount {path}: {e}"),
            ),
            Ok(Err(e)) => CheckResult::down(
                serde_json::json!({ "path": path }),
                format!("mount {path}: check thread failed: {e}"),
            ),
            // The thread keeps running; `in_flight` stays set until it returns.
            Err(_) => CheckResult::down(
                serde_json::json!({ "path": path }),
                format!(
                    "mount {path}: write/read did not finish within {:?} (hung mount?)",
                    self.timing.timeout
                ),
            ),
        }
    }
}

/// Whether a write and a read work through the mount at `dir` (with the probe file of `node`),
/// within `timeout`: what a remount is checked with. A hung call is left behind in its thread.
pub async fn check_mount(
    dir: &std::path::Path,
    node: &str,
    timeout: Duration,
) -> Result<(), String> {
    let path = dir.to_path_buf();
    let file = dir.join(format!(".triad-remount-{node}"));
    let task = tokio::task::spawn_blocking(move || touch(&path, &file));
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(format!("write and read through {}: {e}", dir.display())),
        Ok(Err(e)) => Err(format!("check thread failed: {e}")),
        Err(_) => Err(format!(
            "write and read through {} did not finish within {timeout:?}",
            dir.display()
        )),
    }
}

fn touch(dir: &std::path::Path, file: &std::path::Path) -> std::io::Result<()> {
    let meta = std::fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::other("not a directory"));
    }
    let payload = b"triad mount probe\n";
    {
        let mut f = std::fs::File::create(file)?;
        f.write_all(payload)?;
        f.sync_all()?;
    }
    let mut back = Vec::new();
    std::fs::File::open(file)?.read_to_end(&mut back)?;
    std::fs::remove_file(file)?;
    if back != payload {
        return Err(std::io::Error::other("read back different bytes"));
    }
    Ok(())
}

super::impl_probe!(MountProbe);

/// How a gluster CLI call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    /// `Refused` when glusterd does not answer (not running), else `Io`.
    pub kind: FailureKind,
    /// The command and what it said (at most 300 characters of it).
    pub message: String,
}

/// Runs `command` (`[gluster] command`: the program and its lead arguments) with
/// `--mode=script`, `args` and, when `xml`, `--xml`; answers its standard output. The one way
/// Triad runs the gluster CLI: the probe and the local repairs (`local`). A failed call
/// without an XML answer is an error that reads both streams (glusterd not answering, the
/// CLI prints "Connection failed. Please check if gluster daemon is operational." on stdout);
/// an XML answer carries its own error (`opRet`), which the parsers read. Not bounded in time:
/// callers bound it (the probe runner, the repair's timeout); the child is killed when the
/// call is dropped.
pub async fn run_cli(command: &[String], args: &[&str], xml: bool) -> Result<String, CliError> {
    let Some((program, lead)) = command.split_first() else {
        return Err(CliError {
            kind: FailureKind::Io,
            message: "gluster.command is empty".into(),
        });
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(lead).arg("--mode=script").args(args);
    if xml {
        cmd.arg("--xml");
    }
    let out = cmd
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| CliError {
            kind: FailureKind::Io,
            message: format!("cannot run {program}: {e} (set gluster.command)"),
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // With `--xml`, a successful call that printed something else goes to the parser, which
    // says what is wrong with it (the probe's `down`); only a call that printed nothing, or
    // failed without an XML answer, got no answer.
    let answered = if xml {
        !stdout.trim().is_empty() && (out.status.success() || stdout.contains("<cliOutput"))
    } else {
        out.status.success()
    };
    if !answered {
        let err = String::from_utf8_lossy(&out.stderr);
        let said = format!("{} {}", stdout.trim(), err.trim());
        let said: String = said.trim().chars().take(300).collect();
        let how = match out.status.code() {
            Some(c) => format!("exit {c}"),
            None => "killed by a signal".into(),
        };
        return Err(CliError {
            kind: cli_failure_kind(&said),
            message: format!("gluster {}: {how}: {said}", args.join(" ")),
        });
    }
    Ok(stdout)
}

/// How a gluster CLI call that got no answer failed: `Refused` when glusterd is not running
/// (the CLI's own words), else `Io`.
fn cli_failure_kind(said: &str) -> FailureKind {
    if said.contains("Connection failed") || said.contains("not running") {
        FailureKind::Refused
    } else {
        FailureKind::Io
    }
}

/// The first few of `paths` for a one-line reason, and how many more there are of `total`.
fn listed(paths: &[String], total: u64) -> String {
    let shown: Vec<&str> = paths.iter().take(3).map(String::as_str).collect();
    let more = total.saturating_sub(shown.len() as u64);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_contention_is_recognised() {
        let path = format!(
            "{}/tests/fixtures/gluster/volume_status_busy.xml",
            env!("CARGO_MANIFEST_DIR")
        );
        let xml = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let err = gluster_xml::parse_volume_status(&xml).expect_err("busy");
        assert!(is_busy(&err), "{err}");
        assert!(!is_busy(
            "gluster command failed (opRet -1): Volume shop does not exist"
        ));
    }

    use crate::helper_unit::testing::stand_in as script;

    /// A stand-in gluster CLI answering from the real captures; `heal info` answers as it
    /// does for a user that is not root (glfsheal cannot reach glusterd's socket).
    fn probe(dir: &std::path::Path, heal_unit: Option<HelperUnit>) -> GlusterProbe {
        let fixtures = format!("{}/tests/fixtures/gluster", env!("CARGO_MANIFEST_DIR"));
        let cli = dir.join("gluster");
        script(
            &cli,
            &format!(
                "case \"$*\" in\n\
                 *'volume status'*) cat {fixtures}/volume_status_detail.xml ;;\n\
                 *'peer status'*) cat {fixtures}/peer_status.xml ;;\n\
                 *'heal'*) echo '<cliOutput><opRet>-1</opRet><opErrno>13</opErrno><opErrstr>\
                 Failed to set the log file path, Permission denied</opErrstr></cliOutput>' ;;\n\
                 esac\n"
            ),
        );
        probe_on(&cli, heal_unit)
    }

    /// The probe of volume `shop` (the captures' bricks) through the CLI `cli`.
    fn probe_on(cli: &std::path::Path, heal_unit: Option<HelperUnit>) -> GlusterProbe {
        let bricks = (1..=3)
            .map(|n| format!("10.77.0.1{n}:/tmp/labproto/n{n}/brick"))
            .collect();
        GlusterProbe::new(
            ProbeId {
                subject: crate::ids::NodeId(1),
                service: super::super::Service::Gluster,
                target: "shop".into(),
            },
            vec![cli.display().to_string()],
            "shop".into(),
            bricks,
            None,
            ProbeTiming {
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(5),
                rise: 1,
                fall: 1,
            },
        )
        .with_heal_unit(heal_unit)
    }

    /// Unknown is not zero: a `heal info` the agent may not run is reported as such, and
    /// the helper unit (as root) gives the counts.
    #[tokio::test]
    async fn heal_info_through_its_helper_unit_or_reported_unknown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = probe(dir.path(), None).run().await;
        assert_eq!(r.status, crate::observation::Status::Degraded, "{r:?}");
        let why = r.error.clone().unwrap_or_default();
        assert!(why.contains("heal info unavailable"), "{why}");
        assert!(why.contains("Permission denied"), "{why}");
        assert!(r.details["heal_pending"].is_null(), "{r:?}");

        let systemctl = dir.path().join("systemctl");
        let fixtures = format!("{}/tests/fixtures/gluster", env!("CARGO_MANIFEST_DIR"));
        let out = dir.path().join("triad-gluster-heal@shop.service.out");
        script(
            &systemctl,
            &format!(
                "[ \"$*\" = 'start triad-gluster-heal@shop.service' ] || exit 3\n\
                 cat {fixtures}/heal_info.xml > '{}'\n",
                out.display()
            ),
        );
        let mut unit = HelperUnit::new("triad-gluster-heal@shop.service", dir.path());
        unit.systemctl = systemctl;
        let r = probe(dir.path(), Some(unit)).run().await;
        assert_eq!(r.status, crate::observation::Status::Healthy, "{r:?}");
        assert_eq!(r.details["heal_pending"], 0, "{r:?}");
        assert!(r.details["heal_error"].is_null(), "{r:?}");
    }

    /// A split-brain is reported with its paths and the commands an operator would run, and
    /// never touched; pending heals list their paths. Through the helper unit, which prints
    /// both documents (heal info, then split-brain).
    #[tokio::test]
    async fn split_brain_and_pending_heals_name_their_paths_and_the_operator_command() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fixtures = format!("{}/tests/fixtures/gluster", env!("CARGO_MANIFEST_DIR"));
        let systemctl = dir.path().join("systemctl");
        let out = dir.path().join("triad-gluster-heal@shop.service.out");
        let with_split = dir.path().join("split");
        script(
            &systemctl,
            &format!(
                "cat {fixtures}/heal_info_pending.xml > '{out}'\n\
                 [ -f '{split}' ] && cat {fixtures}/heal_info_split_brain.xml >> '{out}'\n\
                 exit 0\n",
                out = out.display(),
                split = with_split.display(),
            ),
        );
        let unit = || {
            let mut u = HelperUnit::new("triad-gluster-heal@shop.service", dir.path());
            u.systemctl = systemctl.clone();
            Some(u)
        };
        // Pending, the split-brain listing missing: pending with its paths, split-brain unknown.
        let r = probe(dir.path(), unit()).run().await;
        assert_eq!(r.status, crate::observation::Status::Degraded, "{r:?}");
        let why = r.error.clone().unwrap_or_default();
        assert!(
            why.starts_with(
                "12 entries pending heal (/, /healcap-1.txt, /healcap-2.txt and 9 more)"
            ),
            "{why}"
        );
        assert!(
            why.ends_with("split-brain unknown (its listing failed)"),
            "{why}"
        );
        assert_eq!(r.details["heal_paths"].as_array().map(Vec::len), Some(6));
        assert!(r.details["split_brain"].is_null(), "{r:?}");

        std::fs::write(&with_split, "").expect("flag");
        let r = probe(dir.path(), unit()).run().await;
        assert_eq!(r.status, crate::observation::Status::Degraded, "{r:?}");
        let why = r.error.clone().unwrap_or_default();
        assert!(
            why.starts_with(
                "1 entries in split-brain (/healcap-2.txt): Triad does not resolve them"
            ),
            "{why}"
        );
        assert!(
            why.contains("gluster volume heal shop info split-brain"),
            "{why}"
        );
        assert!(
            why.contains("gluster volume heal shop split-brain latest-mtime FILE"),
            "{why}"
        );
        assert_eq!(r.details["split_brain"], 1, "{r:?}");
        assert_eq!(
            r.details["split_brain_paths"],
            serde_json::json!(["/healcap-2.txt"])
        );
    }

    /// A glusterd that does not run: the real CLI says so on stdout and exits 1; the probe
    /// reports it unreachable and refused (what the glusterd restart needs), not down.
    #[tokio::test]
    async fn a_glusterd_that_does_not_run_is_refused_not_down() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cli = dir.path().join("gluster");
        script(
            &cli,
            "echo 'Connection failed. Please check if gluster daemon is operational.'\nexit 1\n",
        );
        let p = probe_on(&cli, None);
        let r = p.run().await;
        assert_eq!(r.status, crate::observation::Status::Unreachable, "{r:?}");
        assert_eq!(r.failure, Some(FailureKind::Refused), "{r:?}");
        let why = r.error.unwrap_or_default();
        assert!(why.contains("Connection failed. Please check"), "{why}");
    }

    /// The shipped heal unit's command (systemd's `$$` and `%%` undone, `%i` = shop), run by
    /// `sh` with a stand-in gluster that lists a backlog of 3 x 30 000 entries, 3 x 12 000 of
    /// them in split-brain (6.7 MB of XML): what the agent reads stays small, far under the
    /// helper's output cap, with gluster's own counts and the first paths.
    #[test]
    fn the_shipped_heal_unit_bounds_a_huge_backlog_and_keeps_the_counts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let unit = format!(
            "{}/../systemd/triad-gluster-heal@.service",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&unit).unwrap_or_else(|e| panic!("{unit}: {e}"));
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .expect("ExecStart");
        let gluster = dir.path().join("gluster");
        // One document: 3 bricks of `n` files each, `count` as gluster's numberOfEntries.
        script(
            &gluster,
            r#"case "$*" in
  *"info split-brain") n=12000 ;;
  *"heal shop info") n=30000 ;;
  *) exit 2 ;;
esac
awk -v n="$n" 'BEGIN {
  print "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>"
  print "<cliOutput>\n  <healInfo>\n    <bricks>"
  for (b = 1; b <= 3; b++) {
    print "      <brick hostUuid=\"u" b "\">\n        <name>10.0.0." b ":/bricks/shop</name>"
    for (i = 0; i < n; i++) {
      # A file name may hold a newline: one kept (3), one dropped (25).
      if (i == 3 || i == 25) printf "        <file gfid=\"g%d\">/var/cache/f%06d\nsecond line</file>\n", i, i
      else printf "        <file gfid=\"g%d\">/var/cache/f%06d</file>\n", i, i
    }
    print "        <status>Connected</status>\n        <numberOfEntries>" n "</numberOfEntries>\n      </brick>"
  }
  print "    </bricks>\n  </healInfo>\n  <opRet>0</opRet>\n  <opErrno>0</opErrno>\n  <opErrstr/>\n</cliOutput>"
}'"#,
        );
        let command = exec
            .replace("$$", "$")
            .replace("%%", "%")
            .replace("%i", "shop")
            .replace("/usr/sbin/gluster", &gluster.display().to_string());
        let out = std::process::Command::new("sh")
            .args(["-c", &command])
            .env("TMPDIR", dir.path())
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(
            printed.len() < 32 * 1024,
            "the unit printed {} bytes",
            printed.len()
        );
        let heal = gluster_xml::parse_heal_docs(&printed).expect("both documents parse");
        assert_eq!(heal.pending(), 90_000);
        assert_eq!(heal.split_brain(), Some(12_000));
        assert!(heal.bricks.iter().all(|b| b.files.len() == 20), "{heal:?}");
        assert!(
            heal.bricks[0]
                .files
                .contains(&"/var/cache/f000003\nsecond line".to_string()),
            "a kept name with a newline is whole: {:?}",
            heal.bricks[0].files
        );
        assert!(
            dir.path().join("triad-heal-info.xml").exists(),
            "the full listing went to a file, not into the shell's memory"
        );
        assert_eq!(
            gluster_xml::entry_paths(&heal.bricks, 20)
                .first()
                .map(String::as_str),
            Some("/var/cache/f000000")
        );
    }
}
