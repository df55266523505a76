//! The backup runner: the adapter that takes a backup on this node under a committed lease.
//!
//! One tokio task ([`spawn`]) follows the backup target the controller publishes and steps the
//! pure [`Runner`] (in `reconcile::backup`: when to start, refuse or stop) once a second and at
//! once on a new target, with this agent's lease from its peers. A started run is its own
//! future ([`run`]); stopping it drops that future, which kills its programs (each is spawned
//! with `kill_on_drop` and dies with the agent too: `PR_SET_PDEATHSIG`). Its progress (phase,
//! bytes) and, at the end, its result go into this agent's health reports; the leader commits
//! the end from them.
//!
//! A run, in order (each step bounded, the first failure ends it with the reason):
//! 0. the operator's pre hook (`[hooks] pre`), if any: a veto ends the run failed with the
//!    hook's reason (the attempt's retry goes to another node, which asks its own hook);
//! 1. the restic repository is created if missing;
//! 2. **db** ([`db`]): the copy under `FLUSH TABLES WITH READ LOCK` (the node desynced and
//!    paused, counts and position taken), resync, prepare; then `restic backup`;
//! 3. **redis** ([`parts`]): the RDB of a replica (this node's Redis unless it is the committed
//!    master, else another member's), checked; then `restic backup`;
//! 4. **files**: `restic backup` of the configured directories from this node's mount;
//! 5. the manifest (per component: digest, bytes, duration, snapshot; Galera position, Redis
//!    offset and keys, row counts, Triad version) as its own snapshot;
//! 6. retention (`restic forget --prune` with the configured tiers) and `restic check`; a
//!    lock another process holds defers both to a later run (said in the result): a run
//!    killed on another host leaves its lock, which restic ignores only after 30 minutes
//!    (stale locks of this host are removed with `restic unlock` at the start of each run);
//! 7. verification: every component restored from the repository into a throwaway directory
//!    and compared (digests; the database started in a private mariadbd and counted; the RDB
//!    checked). Only then is the run verified.
//!
//! The run's directory (`<work_dir>/run`) is private (0700) and removed at the end of every
//! run; the live datadir, Redis directory and mounts are only ever read. A marker file
//! (`<work_dir>/started`, the newest backup id started here) survives restarts: a restarted
//! agent reports the lease it had started as failed at once instead of running it again.
//!
//! Caveats: the components run one after the other (the lease bounds the whole run); the
//! files' digest is over their listing, not their content (see [`parts`]).

// Reads the clock (adapter: run durations and deadlines); see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

pub mod db;
pub mod parts;
pub mod restic;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cluster::{BackupLease, BackupSummary, Component, ComponentSummary};
use crate::codec::BackupRun;
use crate::config::{ConfigError, Validated};
use crate::controller::ServiceTarget;
use crate::ids::{BackupId, NodeId};
use crate::raft::transport::Transport;
use crate::reconcile::backup::{BackupTarget, Runner, RunnerStep};

use self::db::DbSpec;
use self::parts::{digest_async, DigestKind, RedisSpec};
use self::restic::Restic;

/// Makes a child process get SIGKILL when the agent's thread that spawned it dies, so that a
/// killed agent leaves no backup tool running (the lease may then go to another node).
pub(crate) fn die_with_parent(c: &mut tokio::process::Command) {
    // SAFETY: `pre_exec` runs in the child between fork and exec; prctl is async-signal-safe
    // and touches no memory of the parent.
    unsafe {
        c.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
}

/// How a program run by [`run_program`] failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProgramError {
    /// It could not be started, or waiting for it failed.
    #[error("{what}: cannot start: {source}")]
    Spawn {
        /// What was run.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// It ran past its deadline and was killed.
    #[error("{what}: did not finish within {after:?}")]
    Timeout {
        /// What was run.
        what: String,
        /// The deadline.
        after: Duration,
    },
    /// It exited unsuccessfully.
    #[error("{what} failed ({status}): {stderr}")]
    Failed {
        /// What was run.
        what: String,
        /// Its exit status.
        status: String,
        /// The end of its standard error ([`stderr_tail`]).
        stderr: String,
    },
}

/// The end of a program's standard error, where tools put their error, on one line: its
/// non-empty lines joined by ` | `, cut to the last `max` bytes.
pub(crate) fn stderr_tail(s: &str, max: usize) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let t = lines.join(" | ");
    if t.len() <= max {
        return t;
    }
    let mut start = t.len() - max;
    while !t.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &t[start..])
}

/// Runs a program to completion within `timeout`, with no standard input, its output
/// collected, killed if the deadline passes or the agent dies ([`die_with_parent`]). `what`
/// names it in the error.
pub(crate) async fn run_program(
    what: &str,
    mut c: tokio::process::Command,
    timeout: Duration,
) -> Result<std::process::Output, ProgramError> {
    c.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    die_with_parent(&mut c);
    let spawn = |source| ProgramError::Spawn {
        what: what.to_string(),
        source,
    };
    let child = c.spawn().map_err(spawn)?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| ProgramError::Timeout {
            what: what.to_string(),
            after: timeout,
        })?
        .map_err(spawn)?;
    if !out.status.success() {
        return Err(ProgramError::Failed {
            what: what.to_string(),
            status: out.status.to_string(),
            stderr: stderr_tail(&String::from_utf8_lossy(&out.stderr), 600),
        });
    }
    Ok(out)
}

/// Everything a run needs, from the configuration.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// This node.
    pub me: NodeId,
    /// `<work_dir>`.
    pub work_dir: PathBuf,
    /// The repository.
    pub restic: Restic,
    /// The database component, when `[galera]` and `[mariadb]` are configured.
    pub db: Option<DbSpec>,
    /// The Redis component and every member's Redis, when `[redis]` is configured.
    pub redis: Option<(RedisSpec, BTreeMap<NodeId, SocketAddr>)>,
    /// The files component: the root (their common directory) and the paths under it.
    pub files: Option<(PathBuf, Vec<String>)>,
    /// Retention as restic flags.
    pub retention: Vec<String>,
    /// Bound of each restic step.
    pub step_timeout: Duration,
}

/// The manifest of one run, stored beside its components in the repository.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// The run.
    pub id: u64,
    /// The node that ran it.
    pub node: u64,
    /// What it was for.
    pub trigger: String,
    /// Per component.
    pub components: Vec<ComponentSummary>,
    /// `uuid:seqno` of the database copy.
    pub galera_position: String,
    /// Rows of every table at backup time.
    pub row_counts: BTreeMap<String, u64>,
    /// The RDB's replication offset.
    pub redis_offset: Option<u64>,
    /// Keys in the RDB.
    pub redis_keys: u64,
    /// Files in the files component.
    pub files: u64,
    /// The Triad version.
    pub version: String,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOutcome {
    /// Every component taken and verified.
    pub verified: bool,
    /// What was verified, or why it failed.
    pub reason: String,
    /// What it produced.
    pub summary: BackupSummary,
}

/// Where a run reports its phase and bytes.
pub type Progress = Arc<Mutex<(String, u64)>>;

fn set_progress(p: &Progress, phase: &str, bytes: Option<u64>) {
    if let Ok(mut g) = p.lock() {
        g.0 = phase.to_string();
        if let Some(b) = bytes {
            g.1 = b;
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The common directory of `paths` (absolute) and each path relative to it.
pub fn split_root(paths: &[PathBuf]) -> Option<(PathBuf, Vec<String>)> {
    let first = paths.first()?;
    let mut root: PathBuf = first.parent()?.to_path_buf();
    while !paths.iter().all(|p| p.starts_with(&root) && p != &root) {
        root = root.parent()?.to_path_buf();
    }
    let rels = paths
        .iter()
        .map(|p| {
            p.strip_prefix(&root)
                .map(|r| r.display().to_string())
                .unwrap_or_default()
        })
        .collect();
    Some((root, rels))
}

fn fresh_dir(p: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt as _;
    if p.exists() {
        std::fs::remove_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .map_err(|e| format!("{}: {e}", p.display()))
}

/// State of a run between its steps.
struct Taken {
    components: Vec<ComponentSummary>,
    manifest: Manifest,
    /// Per component: the digest to find again after a restore, the paths restored.
    checks: Vec<(Component, String, Vec<String>, DigestKind)>,
}

impl RunSpec {
    /// The Redis to take the RDB from: this node's unless it is the committed master, else
    /// the first other member's.
    fn rdb_source(&self, master: Option<NodeId>) -> Option<SocketAddr> {
        let (_, addrs) = self.redis.as_ref()?;
        if master != Some(self.me) {
            if let Some(a) = addrs.get(&self.me) {
                return Some(*a);
            }
        }
        addrs
            .iter()
            .find(|(n, _)| Some(**n) != master)
            .map(|(_, a)| *a)
    }
}

/// Takes and verifies one backup under `lease`. Never panics; every failure is the outcome's
/// reason, naming the component and the step.
pub async fn run(
    spec: &RunSpec,
    lease: &BackupLease,
    redis_master: Option<NodeId>,
    progress: Progress,
) -> RunOutcome {
    let started = Instant::now();
    let run_dir = spec.work_dir.join("run");
    let mut taken = Taken {
        components: Vec::new(),
        manifest: Manifest {
            id: lease.id.0,
            node: spec.me.0,
            trigger: lease.trigger.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Manifest::default()
        },
        checks: Vec::new(),
    };
    let result = steps(spec, &run_dir, redis_master, &progress, &mut taken).await;
    let _ = std::fs::remove_dir_all(&run_dir);
    let summary = BackupSummary {
        components: taken.components.clone(),
        galera_position: taken.manifest.galera_position.clone(),
        redis_offset: taken.manifest.redis_offset,
        version: taken.manifest.version.clone(),
        duration_ms: ms(started.elapsed()),
    };
    match result {
        Ok(verified) => RunOutcome {
            verified: true,
            reason: format!("verified: {verified}"),
            summary,
        },
        Err(why) => RunOutcome {
            verified: false,
            reason: why,
            summary,
        },
    }
}

async fn steps(
    spec: &RunSpec,
    run_dir: &Path,
    redis_master: Option<NodeId>,
    progress: &Progress,
    t: &mut Taken,
) -> Result<String, String> {
    let stage = run_dir.join("stage");
    fresh_dir(run_dir)?;
    fresh_dir(&stage)?;
    let r = &spec.restic;
    set_progress(progress, "repository", None);
    if r.ensure(spec.step_timeout)
        .await
        .map_err(|e| format!("repository: {e}"))?
    {
        tracing::info!(repository = %r.repository, "backup: created the restic repository");
    }
    // A run killed on this host (an agent killed mid-run) leaves its lock; restic removes such
    // stale locks only when asked. A failure here is not the run's: a lock that stays is met
    // below.
    if let Err(e) = r.unlock(spec.step_timeout).await {
        tracing::warn!(error = %e, "backup: restic unlock failed; going on");
    }
    let mut bytes_before = 0u64;
    // restic reports bytes per snapshot; the run's progress adds the components before it.
    let mut counts = BTreeMap::new();
    if let Some(d) = &spec.db {
        let began = Instant::now();
        let ph = progress.clone();
        let copy = d
            .take(run_dir, &stage.join("db"), &move |p| {
                set_progress(&ph, p, None)
            })
            .await
            .map_err(|e| format!("db: {e}"))?;
        let dg = digest_async(stage.clone(), vec!["db".into()], DigestKind::Content)
            .await
            .map_err(|e| format!("db: {e}"))?;
        set_progress(progress, "db upload", None);
        let pb = progress.clone();
        let base = bytes_before;
        let snap = r
            .backup("db", &stage, &["db".into()], spec.step_timeout, &move |b| {
                if let Ok(mut g) = pb.lock() {
                    g.1 = base + b;
                }
            })
            .await
            .map_err(|e| format!("db: {e}"))?;
        bytes_before += dg.bytes;
        t.manifest.galera_position = copy.position.clone();
        counts = copy.counts.clone();
        t.manifest.row_counts = copy.counts;
        t.components.push(ComponentSummary {
            component: Component::Db,
            bytes: dg.bytes,
            sha256: dg.sha256.clone(),
            duration_ms: ms(began.elapsed()),
            snapshot: snap.id,
        });
        t.checks.push((
            Component::Db,
            dg.sha256,
            vec!["db".into()],
            DigestKind::Content,
        ));
        // The staged copy is in the repository now; free its room before the next step.
        let _ = std::fs::remove_dir_all(stage.join("db"));
    }
    let mut rdb_keys = None;
    if let Some((rs, _)) = &spec.redis {
        let began = Instant::now();
        let source = spec
            .rdb_source(redis_master)
            .ok_or("redis: no replica to take the RDB from")?;
        set_progress(progress, "redis rdb", None);
        let dir = stage.join("redis");
        fresh_dir(&dir)?;
        let check = rs
            .take(source, &dir.join("dump.rdb"))
            .await
            .map_err(|e| format!("redis: {e}"))?;
        let dg = digest_async(stage.clone(), vec!["redis".into()], DigestKind::Content)
            .await
            .map_err(|e| format!("redis: {e}"))?;
        set_progress(progress, "redis upload", None);
        let pb = progress.clone();
        let base = bytes_before;
        let snap = r
            .backup(
                "redis",
                &stage,
                &["redis".into()],
                spec.step_timeout,
                &move |b| {
                    if let Ok(mut g) = pb.lock() {
                        g.1 = base + b;
                    }
                },
            )
            .await
            .map_err(|e| format!("redis: {e}"))?;
        bytes_before += dg.bytes;
        t.manifest.redis_offset = check.offset;
        t.manifest.redis_keys = check.keys;
        rdb_keys = Some(check.keys);
        t.components.push(ComponentSummary {
            component: Component::Redis,
            bytes: dg.bytes,
            sha256: dg.sha256.clone(),
            duration_ms: ms(began.elapsed()),
            snapshot: snap.id,
        });
        t.checks.push((
            Component::Redis,
            dg.sha256,
            vec!["redis".into()],
            DigestKind::Content,
        ));
    }
    if let Some((root, rels)) = &spec.files {
        let began = Instant::now();
        set_progress(progress, "files", None);
        let dg = digest_async(root.clone(), rels.clone(), DigestKind::Listing)
            .await
            .map_err(|e| format!("files: {e}"))?;
        let pb = progress.clone();
        let base = bytes_before;
        let snap = r
            .backup("files", root, rels, spec.step_timeout, &move |b| {
                if let Ok(mut g) = pb.lock() {
                    g.1 = base + b;
                }
            })
            .await
            .map_err(|e| format!("files: {e}"))?;
        t.manifest.files = dg.files;
        t.components.push(ComponentSummary {
            component: Component::Files,
            bytes: dg.bytes,
            sha256: dg.sha256.clone(),
            duration_ms: ms(began.elapsed()),
            snapshot: snap.id,
        });
        t.checks.push((
            Component::Files,
            dg.sha256,
            rels.clone(),
            DigestKind::Listing,
        ));
    }
    // The manifest, as its own snapshot.
    set_progress(progress, "manifest", None);
    t.manifest.components = t.components.clone();
    let mdir = stage.join("manifest");
    fresh_dir(&mdir)?;
    let text = serde_json::to_vec_pretty(&t.manifest).map_err(|e| format!("manifest: {e}"))?;
    std::fs::write(mdir.join("manifest.json"), text).map_err(|e| format!("manifest: {e}"))?;
    r.backup(
        "manifest",
        &stage,
        &["manifest".into()],
        spec.step_timeout,
        &|_| {},
    )
    .await
    .map_err(|e| format!("manifest: {e}"))?;
    // Retention and the structure check need the repository to themselves. A lock another
    // host's killed run left (restic calls it stale after 30 minutes) defers them to a later
    // run, and says so; the snapshots of this run are in, and verified below all the same.
    set_progress(progress, "retention", None);
    let mut deferred = None;
    match r.forget(&spec.retention, spec.step_timeout).await {
        Err(e) if e.is_locked() => deferred = Some(e.to_string()),
        Err(e) => return Err(format!("retention: {e}")),
        Ok(()) => {
            set_progress(progress, "repository check", None);
            match r.check(spec.step_timeout).await {
                Err(e) if e.is_locked() => deferred = Some(e.to_string()),
                Err(e) => return Err(format!("repository check: {e}")),
                Ok(()) => {}
            }
        }
    }
    if let Some(why) = &deferred {
        tracing::warn!(reason = %why, "backup: retention and repository check deferred to a later run");
    }
    // Verification: every component back from the repository.
    let mut said = Vec::new();
    for (component, sha, rels, kind) in t.checks.clone() {
        set_progress(progress, &format!("verify {component}"), None);
        let snap = t
            .components
            .iter()
            .find(|c| c.component == component)
            .map(|c| c.snapshot.clone())
            .unwrap_or_default();
        let dir = run_dir.join("verify").join(component.as_str());
        fresh_dir(&dir)?;
        r.restore(&snap, &dir, spec.step_timeout)
            .await
            .map_err(|e| format!("verify {component}: {e}"))?;
        let got = digest_async(dir.clone(), rels.clone(), kind)
            .await
            .map_err(|e| format!("verify {component}: {e}"))?;
        if got.sha256 != sha {
            return Err(format!(
                "verify {component}: the restored copy's digest {} differs from the backup's {sha}",
                got.sha256
            ));
        }
        match component {
            Component::Db => {
                if let Some(d) = &spec.db {
                    let line = d
                        .verify(
                            &dir.join("db"),
                            &run_dir.join("verify").join("db-server"),
                            &counts,
                        )
                        .await
                        .map_err(|e| format!("verify db: {e}"))?;
                    said.push(format!("db {line}"));
                }
            }
            Component::Redis => {
                if let Some((rs, _)) = &spec.redis {
                    let c = rs
                        .check(&dir.join("redis").join("dump.rdb"))
                        .await
                        .map_err(|e| format!("verify redis: {e}"))?;
                    if Some(c.keys) != rdb_keys {
                        return Err(format!(
                            "verify redis: {} keys restored, {} taken",
                            c.keys,
                            rdb_keys.unwrap_or(0)
                        ));
                    }
                    said.push(format!("redis {} keys", c.keys));
                }
            }
            Component::Files => said.push(format!("files {} as listed", t.manifest.files)),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    let mut line = said.join(", ");
    if let Some(why) = deferred {
        line.push_str(&format!(
            "; retention and repository check deferred (the repository is locked: {why}; a \
             stopped run's lock goes after 30 minutes, or `restic unlock`)"
        ));
    }
    Ok(line)
}

/// The marker of the newest backup started on this node (`<work_dir>/started`).
fn read_marker(work_dir: &Path) -> Option<BackupId> {
    std::fs::read_to_string(work_dir.join("started"))
        .ok()?
        .trim()
        .parse()
        .ok()
        .map(BackupId)
}

fn write_marker(work_dir: &Path, id: BackupId) -> std::io::Result<()> {
    use std::io::Write as _;
    std::fs::create_dir_all(work_dir)?;
    let tmp = work_dir.join("started.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(id.0.to_string().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, work_dir.join("started"))?;
    if let Ok(d) = std::fs::File::open(work_dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Builds the run's specification from the configuration; `None` without `[backup]`.
pub fn run_spec(cfg: &Validated) -> Result<Option<RunSpec>, ConfigError> {
    let c = &cfg.config;
    let Some(b) = &c.backup else {
        return Ok(None);
    };
    let work_dir = b.work_dir(&c.node.data_dir);
    let restic = Restic {
        program: b.programs.restic.clone(),
        repository: b.repository.clone(),
        password_file: b.password_file.clone(),
        host: cfg.config.cluster_name.clone(),
        cache_dir: work_dir.join("cache"),
    };
    let db = match (&c.galera, &c.mariadb) {
        (Some(_), Some(m)) => Some(DbSpec {
            socket: m
                .socket
                .clone()
                .unwrap_or_else(|| PathBuf::from("/run/mysqld/mysqld.sock")),
            datadir: m
                .datadir
                .clone()
                .unwrap_or_else(|| PathBuf::from("/var/lib/mysql")),
            user: b.db_user.clone(),
            password: match &b.db_password_file {
                Some(f) => Some(crate::config::read_secret(f, "backup.db_password_file")?),
                None => None,
            },
            mariadb_backup: b.programs.mariadb_backup.clone(),
            mariadbd: b.programs.mariadbd.clone(),
            resync_timeout: b.resync_timeout,
            verify_timeout: b.verify_timeout,
            copy_timeout: b.max_duration,
        }),
        _ => None,
    };
    let redis = match &c.redis {
        Some(r) => {
            let addrs: BTreeMap<NodeId, SocketAddr> = cfg
                .members
                .iter()
                .filter_map(|m| Some((m.id, m.redis_addr?)))
                .collect();
            Some((
                RedisSpec {
                    redis_cli: b.programs.redis_cli.clone(),
                    redis_check_rdb: b.programs.redis_check_rdb.clone(),
                    username: r.username.clone(),
                    password: match &r.password_file {
                        Some(f) => Some(crate::config::read_secret(f, "redis.password_file")?),
                        None => None,
                    },
                    timeout: b.max_duration,
                },
                addrs,
            ))
        }
        None => None,
    };
    Ok(Some(RunSpec {
        me: cfg.node_id(),
        work_dir,
        restic,
        db,
        redis,
        files: split_root(&b.files),
        retention: b.retention.args(),
        step_timeout: b.max_duration,
    }))
}

/// Starts the runner task; `report` receives what this agent reports of its backup, and
/// `changed` is notified when that changes. Returns false without `[backup]`.
pub fn spawn(
    cfg: &Validated,
    mut targets: watch::Receiver<Option<ServiceTarget>>,
    transport: Transport,
    (report, changed): (Arc<Mutex<Option<BackupRun>>>, Arc<tokio::sync::Notify>),
    hooks: Option<Arc<crate::hooks::Hooks>>,
    shutdown: CancellationToken,
) -> Result<bool, ConfigError> {
    let Some(spec) = run_spec(cfg)? else {
        return Ok(false);
    };
    let me = cfg.node_id();
    let lease_ms = cfg.config.failover.lease;
    let quorum = cfg.members.len() / 2 + 1;
    tokio::spawn(async move {
        let started = Instant::now();
        let now_ms = move || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut runner = Runner::new(me);
        let mut marker = read_marker(&spec.work_dir);
        let mut interval = crate::pace::interval(Duration::from_secs(1));
        let mut task: Option<(tokio::task::JoinHandle<RunOutcome>, Progress)> = None;
        let mut last_report: Option<BackupRun> = None;
        loop {
            let done = async {
                match task.as_mut() {
                    Some((h, _)) => Some(h.await),
                    None => std::future::pending().await,
                }
            };
            let finished = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = interval.tick() => None,
                r = targets.changed() => { if r.is_err() { break } None }
                r = done => r,
            };
            if let Some(outcome) = finished {
                task = None;
                let o = outcome.unwrap_or_else(|e| RunOutcome {
                    verified: false,
                    reason: format!("the run's task failed: {e}"),
                    summary: BackupSummary::default(),
                });
                if o.verified {
                    tracing::info!(reason = %o.reason, "backup: run verified");
                } else {
                    tracing::warn!(reason = %o.reason, "backup: run failed");
                }
                runner.finished(o.verified, o.reason, o.summary, now_ms());
            }
            let target: Option<BackupTarget> = targets
                .borrow()
                .as_ref()
                .and_then(ServiceTarget::as_backup)
                .cloned();
            let Some(target) = target else {
                continue;
            };
            let lease = transport.lease(lease_ms, quorum - 1);
            match runner.cycle(&target, marker, lease.valid, now_ms()) {
                RunnerStep::Idle => {}
                RunnerStep::Start(l) => match write_marker(&spec.work_dir, l.id) {
                    Ok(()) => {
                        marker = Some(l.id);
                        runner.start(&l, now_ms());
                        tracing::info!(backup = %l.id, trigger = %l.trigger, attempt = l.attempt,
                            "backup: run starts");
                        let progress: Progress = Arc::new(Mutex::new(("starting".into(), 0)));
                        let (s, p, m) = (spec.clone(), progress.clone(), target.redis_master);
                        let hooks = hooks.clone();
                        let h = tokio::spawn(async move {
                            // The operator's pre hook may veto the run: a failed attempt.
                            if let Some(hooks) = hooks.as_ref().filter(|h| h.has_pre()) {
                                let event = hooks.planned(
                                    crate::cluster::EventKind::Backup,
                                    "backup",
                                    &format!(
                                        "backup {} (attempt {}) for {}",
                                        l.id, l.attempt, l.trigger
                                    ),
                                    l.id.0,
                                    vec![me],
                                );
                                let report = hooks.pre(&event).await;
                                if report.outcome == crate::cluster::HookOutcome::Vetoed {
                                    return RunOutcome {
                                        verified: false,
                                        reason: format!(
                                            "vetoed by the pre hook ({})",
                                            report.detail
                                        ),
                                        summary: BackupSummary::default(),
                                    };
                                }
                            }
                            run(&s, &l, m, p).await
                        });
                        task = Some((h, progress));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "backup: cannot write the start marker; not starting");
                    }
                },
                RunnerStep::Stop(why) => {
                    if let Some((h, _)) = task.take() {
                        h.abort();
                        let _ = h.await;
                    }
                    let _ = std::fs::remove_dir_all(spec.work_dir.join("run"));
                    tracing::warn!(reason = %why, "backup: run stopped");
                    runner.finished(false, why, BackupSummary::default(), now_ms());
                }
            }
            if let Some((_, p)) = &task {
                let (phase, bytes) = p.lock().map(|g| g.clone()).unwrap_or_default();
                runner.progress_to(&phase, bytes, now_ms());
            }
            let now = runner.report(now_ms());
            if now != last_report {
                last_report = now.clone();
                if let Ok(mut r) = report.lock() {
                    *r = now;
                }
                changed.notify_one();
            }
        }
        if let Some((h, _)) = task.take() {
            h.abort();
        }
    });
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_tail_keeps_the_end() {
        assert_eq!(stderr_tail("  short \n", 10), "short");
        assert_eq!(stderr_tail("a\n  b\n\nc\n", 20), "a | b | c");
        assert_eq!(stderr_tail("0123456789abcdef", 6), "...abcdef");
        // Never splits a character.
        assert_eq!(stderr_tail("ééé", 3), "...é");
    }

    #[test]
    fn files_split_at_their_common_directory() {
        let paths: Vec<PathBuf> = ["/m/shop/var", "/m/shop/pub/media", "/m/shop/app/etc"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(
            split_root(&paths),
            Some((
                PathBuf::from("/m/shop"),
                vec!["var".into(), "pub/media".into(), "app/etc".into()]
            ))
        );
        assert_eq!(
            split_root(&[PathBuf::from("/m/shop/var")]),
            Some((PathBuf::from("/m/shop"), vec!["var".into()]))
        );
        assert_eq!(split_root(&[]), None);
    }

    #[test]
    fn marker_survives_and_is_replaced() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_marker(d.path()), None);
        write_marker(d.path(), BackupId(7)).unwrap_or_else(|e| panic!("{e}"));
        write_marker(d.path(), BackupId(9)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_marker(d.path()), Some(BackupId(9)));
    }
}
