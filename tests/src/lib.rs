//! Test harness for Triad: runs the real `triad` binary as a local three-node cluster on
//! loopback and talks to it over HTTP and raw TCP.
//!
//! What it gives a test:
//! - [`triad_bin`]: the `triad` binary next to the test executable (`target/<profile>/triad`),
//!   built with `cargo build -p triad --bin triad` when it is missing, or `TRIAD_BIN` when set;
//! - [`LocalCluster`]: the three nodes of `tests/local/node{1,2,3}.toml`, each with a fresh
//!   data directory in one temporary directory and its stderr/stdout in a log file there
//!   (`node<N>.log`); nodes can be killed with SIGKILL ([`LocalCluster::kill9`]), stopped with
//!   SIGTERM ([`LocalCluster::stop`]) and started again on the same data
//!   ([`LocalCluster::restart`]). Dropping the cluster kills every node it started, by PID;
//! - [`wait_for`] / [`poll_until`]: polling with a deadline whose error reports the last
//!   observation, so a failure says what the cluster looked like, not just "timed out";
//! - [`Http`]: a small blocking HTTP client (reqwest on a private tokio runtime), and
//!   [`LocalCluster`] helpers for status, metrics and `POST /v1/maintenance`;
//! - [`lab`]: the lab of real services in network namespaces (the `triad-lab` binary and the
//!   `lab` test target), with its own module docs.
//!
//! Ports are fixed by the configs (API 127.0.0.1:7101-7103, Raft 127.0.0.1:7201-7203), so at
//! most one cluster may run on the machine at a time. [`LocalCluster`] therefore holds a
//! [`ClusterLock`] for its whole life: a process-wide mutex (the threads of `cargo test`) plus
//! an exclusive file lock on [`LOCK_PATH`] (separate processes, as under `cargo nextest`, and the
//! benchmark). A test that uses the fixed ports without a cluster must take the lock itself.
//!
//! On a panic while a cluster is alive (a failing test), its temporary directory is kept and
//! the tail of every node's log is printed to stderr. `TRIAD_KEEP_CLUSTER=1` (or
//! [`LocalCluster::keep_files`]) keeps it in every case.
//!
//! Caveats: the harness does not rebuild a `triad` binary that exists, so build it after
//! changing the agent (`cargo build -p triad --bin triad`). On Linux every node gets
//! `PR_SET_PDEATHSIG = SIGKILL`, so nodes die with the *thread* that started them even if the
//! test process is killed without running destructors; keep a cluster on the thread that
//! created it.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

pub use triad::api::StatusBody;

pub mod lab;

/// Ids of the three local nodes.
pub const NODES: [u64; 3] = [1, 2, 3];

/// File locked exclusively while a local cluster runs, shared by every process on the machine.
pub const LOCK_PATH: &str = "/tmp/triad-local-cluster.lock";

/// How long starting one node may take until `GET /live` answers 200.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a node may take to exit after SIGTERM (the agent's own grace period is 10 s).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Interval at which [`wait_for`] polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Timeout of one status-like GET request.
const GET_TIMEOUT: Duration = Duration::from_secs(2);

/// Timeout of one POST request; above the agent's default 5 s proposal timeout so its 503
/// arrives rather than a client-side timeout.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// The workspace root (the parent of the `tests` package).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `tests/local`: the loopback cluster's configs and token.
pub fn local_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("local")
}

/// `tests/local/node<n>.toml`.
pub fn local_config(n: u64) -> PathBuf {
    local_dir().join(format!("node{n}.toml"))
}

/// `tests/local/token`: the bearer token file of the local configs.
pub fn token_path() -> PathBuf {
    local_dir().join("token")
}

/// Reads the local cluster's bearer token (surrounding whitespace removed).
pub fn read_token() -> Result<String> {
    let path = token_path();
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the API token file {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        bail!("the API token file {} is empty", path.display());
    }
    Ok(token.to_string())
}

/// Base URL of node `n`'s API, e.g. `http://127.0.0.1:7101`.
pub fn api_url(n: u64) -> String {
    format!("http://{}", api_addr(n))
}

/// Node `n`'s API address.
pub fn api_addr(n: u64) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port(7100, n)))
}

/// Node `n`'s Raft peer address.
pub fn raft_addr(n: u64) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port(7200, n)))
}

fn port(base: u16, n: u64) -> u16 {
    base.saturating_add(u16::try_from(n).unwrap_or(u16::MAX - base))
}

/// The loopback cluster's name, as in `tests/local/node<n>.toml`.
pub const LOCAL_CLUSTER: &str = "triad-local";

/// `tests/local/tls`: the loopback cluster's CA and node certificates (see
/// [`ensure_local_pki`]).
pub fn local_tls_dir() -> PathBuf {
    local_dir().join("tls")
}

/// Makes the loopback cluster's CA and node certificates with `triad cert` unless they exist
/// (no private key is kept in the repository). Concurrent test processes are safe: the files
/// are made in a private directory that is then renamed into place, and a process that loses
/// the race uses the winner's.
pub fn ensure_local_pki() -> Result<PathBuf> {
    let dir = local_tls_dir();
    let complete = |d: &Path| {
        d.join("ca.crt").is_file()
            && NODES.iter().all(|n| {
                d.join(format!("n{n}.crt")).is_file() && d.join(format!("n{n}.key")).is_file()
            })
    };
    if complete(&dir) {
        return Ok(dir);
    }
    let bin = triad_bin()?;
    let tmp = tempfile::Builder::new()
        .prefix(".tls-")
        .tempdir_in(local_dir())
        .context("cannot create a directory for the local certificates")?;
    let run = |args: &[&str]| -> Result<()> {
        let out = triad_command(&bin)
            .args(args)
            .output()
            .with_context(|| format!("cannot run {} {args:?}", bin.display()))?;
        if !out.status.success() {
            bail!(
                "triad {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    };
    let at = tmp.path().display().to_string();
    run(&[
        "cert",
        "init",
        "--dir",
        &at,
        "--cluster",
        LOCAL_CLUSTER,
        "--days",
        "3650",
    ])?;
    for n in NODES {
        let node = n.to_string();
        run(&[
            "cert",
            "issue",
            "--dir",
            &at,
            "--cluster",
            LOCAL_CLUSTER,
            "--node",
            &node,
            "--days",
            "3650",
        ])?;
    }
    let made = tmp.keep();
    if std::fs::rename(&made, &dir).is_err() {
        // Another process put its files in place first.
        let _ = std::fs::remove_dir_all(&made);
        if !complete(&dir) {
            bail!("{} is incomplete: remove it and run again", dir.display());
        }
    }
    Ok(dir)
}

/// Makes `tests/local/token` readable by its owner only, as the agent requires of a secret
/// file (git does not keep that mode: a fresh checkout has it readable by all).
pub fn ensure_token_mode() -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let token = token_path();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot chmod 600 {}", token.display()))
}

/// Writes a copy of `tests/local/node<n>.toml` into `dir`, with `token_file` and the `[tls]`
/// files made absolute (so the copy works from any directory; the certificates are made when
/// missing, see [`ensure_local_pki`]) and then `edit` applied to the text. Returns its path.
pub fn write_config(dir: &Path, n: u64, edit: impl FnOnce(String) -> String) -> Result<PathBuf> {
    let source = local_config(n);
    let text = std::fs::read_to_string(&source)
        .with_context(|| format!("cannot read {}", source.display()))?;
    let token = token_path();
    ensure_token_mode()?;
    let tls = ensure_local_pki()?;
    let text = text
        .replace(
            "token_file = \"token\"",
            &format!("token_file = {:?}", token.display().to_string()),
        )
        .replace("= \"tls/", &format!("= \"{}/", tls.display()));
    let path = dir.join(format!("node{n}.toml"));
    std::fs::write(&path, edit(text))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Removes every line that sets `key` (`key = ...`) from TOML text.
pub fn remove_key(text: &str, key: &str) -> String {
    text.lines()
        .filter(|line| {
            let t = line.trim_start();
            !(t.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('=')))
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Locates the `triad` binary, once per process:
/// 1. `TRIAD_BIN` when set (it must name a file);
/// 2. `triad` in the directory of the running executable or its parent (a test executable
///    lives in `target/<profile>/deps`, a binary in `target/<profile>`);
/// 3. otherwise builds it with `$CARGO build -p triad --bin triad` (`cargo` when `CARGO` is
///    unset; `--release` when this executable is a release build) and uses the result.
pub fn triad_bin() -> Result<PathBuf> {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| locate_or_build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn locate_or_build() -> Result<PathBuf> {
    let name = format!("triad{}", std::env::consts::EXE_SUFFIX);
    if let Some(bin) = std::env::var_os("TRIAD_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("TRIAD_BIN={} is not a file", bin.display());
        }
        return Ok(bin);
    }
    let exe = std::env::current_exe().context("cannot find the running executable's path")?;
    let exe_dir = exe
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", exe.display()))?;
    // target/<profile>/deps/<test> or target/<profile>/<bin>.
    let profile_dir = if exe_dir.file_name().is_some_and(|n| n == "deps") {
        exe_dir.parent().unwrap_or(exe_dir)
    } else {
        exe_dir
    };
    for dir in [exe_dir, profile_dir] {
        let candidate = dir.join(&name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let shown = format!(
        "{} build -p triad --bin triad{}",
        Path::new(&cargo).display(),
        if release { " --release" } else { "" }
    );
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "-p", "triad", "--bin", "triad"])
        .arg("--message-format=json-render-diagnostics")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if release {
        cmd.arg("--release");
    }
    eprintln!(
        "triad-tests: {} not found; building it with `{shown}`",
        profile_dir.join(&name).display()
    );
    let out = cmd.output().with_context(|| {
        format!(
            "cannot run `{shown}` to build the triad binary (set CARGO or put cargo on PATH, \
             or build it yourself and set TRIAD_BIN)"
        )
    })?;
    if !out.status.success() {
        bail!("`{shown}` failed ({}); fix the build and rerun", out.status);
    }
    // Cargo reports where it put the executable; that also covers CARGO_TARGET_DIR.
    let reported = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "triad")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from));
    let built = reported.unwrap_or_else(|| profile_dir.join(&name));
    if !built.is_file() {
        bail!(
            "`{shown}` succeeded but {} does not exist; set TRIAD_BIN to the binary's path",
            built.display()
        );
    }
    eprintln!("triad-tests: using {}", built.display());
    Ok(built)
}

/// A `triad` command line for `bin`, with `TRIAD_API` and `TRIAD_CONFIG` removed from its
/// environment so the caller's shell cannot redirect it.
pub fn triad_command(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env_remove("TRIAD_API")
        .env_remove("TRIAD_CONFIG")
        .env_remove("TRIAD_READ_TOKEN_FILE")
        .stdin(Stdio::null());
    cmd
}

static PROCESS_LOCK: Mutex<()> = Mutex::new(());

/// Exclusive right to the local cluster's fixed ports: a process-wide mutex plus an exclusive
/// file lock on [`LOCK_PATH`]. Released on drop (file first, then mutex).
pub struct ClusterLock {
    _file: File,
    _guard: MutexGuard<'static, ()>,
}

impl ClusterLock {
    /// Blocks until this thread holds both locks. A poisoned mutex (a test that panicked while
    /// holding it) is taken over: the panicking test's cluster was dropped, killing its nodes.
    pub fn acquire() -> Result<Self> {
        let guard = PROCESS_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(LOCK_PATH)
            .with_context(|| format!("cannot open the cluster lock file {LOCK_PATH}"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                eprintln!(
                    "triad-tests: waiting for {LOCK_PATH}: another process runs a local cluster"
                );
                file.lock()
                    .with_context(|| format!("cannot lock {LOCK_PATH}"))?;
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {LOCK_PATH}"));
            }
        }
        Ok(ClusterLock {
            _file: file,
            _guard: guard,
        })
    }
}

/// Polls `probe` every [`POLL_INTERVAL`] (20 ms) until it returns `Ok` or `timeout` passes.
/// `Err(observation)` means "not yet"; on timeout the error names `what` and the last
/// observation.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    probe: impl FnMut() -> std::result::Result<T, String>,
) -> Result<T> {
    poll_until(what, timeout, POLL_INTERVAL, probe)
}

/// Like [`wait_for`] with a chosen polling interval (fixed rate: the probe's own duration is
/// part of the interval). The probe always runs at least once.
pub fn poll_until<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> std::result::Result<T, String>,
) -> Result<T> {
    let start = Instant::now();
    let mut next = start;
    let mut checks = 0u64;
    loop {
        checks += 1;
        let observation = match probe() {
            Ok(v) => return Ok(v),
            Err(o) => o,
        };
        let now = Instant::now();
        if now.duration_since(start) >= timeout {
            bail!(
                "timed out after {timeout:?} waiting for {what} ({checks} checks); \
                 last observation: {observation}"
            );
        }
        next += every;
        let deadline = start + timeout;
        let wake = next.min(deadline);
        if wake > now {
            std::thread::sleep(wake - now);
        } else {
            next = now;
        }
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body as text.
    pub body: String,
}

impl Reply {
    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("body is not JSON (status {}): {}", self.status, self.body))
    }

    /// A header's value, when present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A blocking HTTP client: reqwest on a private one-worker tokio runtime.
pub struct Http {
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Http {
    /// Builds the runtime and the client (connect timeout 1 s; no proxy).
    pub fn new() -> Result<Self> {
        Self::trusting(None)
    }

    /// [`Http::new`], also trusting the CA in `ca` (PEM) for https.
    pub fn trusting(ca: Option<&Path>) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("cannot start a tokio runtime for HTTP")?;
        let client = {
            let _enter = rt.enter();
            let mut b = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(1))
                .no_proxy();
            if let Some(ca) = ca {
                let pem = std::fs::read(ca).with_context(|| format!("{}", ca.display()))?;
                for cert in reqwest::Certificate::from_pem_bundle(&pem)
                    .with_context(|| format!("{}: not PEM certificates", ca.display()))?
                {
                    b = b.add_root_certificate(cert);
                }
            }
            b.build().context("cannot build the HTTP client")?
        };
        Ok(Http { client, rt })
    }

    /// The underlying async client, to build unusual requests for [`Http::send`].
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends a request and reads the whole answer. Timeout: the request's own, else 10 s.
    pub fn send(&self, req: reqwest::RequestBuilder) -> Result<Reply> {
        self.rt.block_on(async move {
            let (client, req) = req.build_split();
            let mut req = req.context("cannot build the HTTP request")?;
            if req.timeout().is_none() {
                *req.timeout_mut() = Some(POST_TIMEOUT);
            }
            let desc = format!("{} {}", req.method(), req.url());
            let resp = client
                .execute(req)
                .await
                .with_context(|| format!("{desc} failed"))?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp
                .text()
                .await
                .with_context(|| format!("{desc}: cannot read the body"))?;
            Ok(Reply {
                status,
                headers,
                body,
            })
        })
    }

    /// `GET url` with a 2 s timeout.
    pub fn get(&self, url: &str) -> Result<Reply> {
        self.send(self.client.get(url).timeout(GET_TIMEOUT))
    }

    /// `POST url` with a JSON content type, the raw `body` and, when given, a bearer token.
    pub fn post(&self, url: &str, bearer: Option<&str>, body: impl Into<Vec<u8>>) -> Result<Reply> {
        let mut req = self
            .client
            .post(url)
            .timeout(POST_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.into());
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        self.send(req)
    }
}

/// A leader agreed on by a set of nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leader {
    /// The leader's node id.
    pub id: u64,
    /// The term they agree on.
    pub term: u64,
}

/// Sum of every sample of metric `name` (any labels) in Prometheus text, 0 when it has none.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = if rest.starts_with('{') {
                rest.rsplit_once('}')?.1
            } else if rest.starts_with(' ') {
                rest
            } else {
                return None;
            };
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .fold(0.0, |sum, v| sum + v)
}

/// Runs `promtool check metrics` on `text` when `/usr/bin/promtool` exists. Returns
/// `Ok(false)` (after printing why to stderr) when promtool is not installed, `Ok(true)` when
/// it found nothing, and an error with its findings otherwise.
pub fn promtool_check_metrics(text: &str) -> Result<bool> {
    let promtool = Path::new("/usr/bin/promtool");
    if !promtool.is_file() {
        eprintln!(
            "SKIPPED: promtool check of /metrics: /usr/bin/promtool is not installed \
             (install prometheus' promtool to run it)"
        );
        return Ok(false);
    }
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run /usr/bin/promtool")?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("promtool has no stdin"))?
        .write_all(text.as_bytes())
        .context("cannot write metrics to promtool")?;
    let out = child
        .wait_with_output()
        .context("promtool did not finish")?;
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !findings.trim().is_empty() {
        bail!(
            "promtool check metrics: {} with findings:\n{findings}",
            out.status
        );
    }
    Ok(true)
}

struct NodeSlot {
    config: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
    /// Its API speaks TLS (its config sets `tls_cert_file`).
    https: bool,
}

/// Builder for a [`LocalCluster`] with another binary or per-node configs.
#[derive(Default)]
pub struct LocalClusterBuilder {
    bin: Option<PathBuf>,
    configs: BTreeMap<u64, PathBuf>,
    api_ca: Option<PathBuf>,
}

impl LocalClusterBuilder {
    /// Uses `bin` instead of [`triad_bin`].
    pub fn binary(mut self, bin: impl Into<PathBuf>) -> Self {
        self.bin = Some(bin.into());
        self
    }

    /// Starts node `n` from `config` instead of `tests/local/node<n>.toml`. It must keep the
    /// node's id and addresses; see [`write_config`].
    pub fn config(mut self, n: u64, config: impl Into<PathBuf>) -> Self {
        self.configs.insert(n, config.into());
        self
    }

    /// Trusts the CA in `ca` (PEM) for the nodes whose config serves the API over TLS.
    pub fn api_ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.api_ca = Some(ca.into());
        self
    }

    /// Takes the [`ClusterLock`], checks the six ports are free, starts the three nodes and
    /// waits until each answers `GET /live`.
    pub fn start(mut self) -> Result<LocalCluster> {
        if let Some(n) = self.configs.keys().find(|n| !NODES.contains(n)) {
            bail!("no node {n}: the local cluster has nodes 1, 2 and 3");
        }
        let lock = ClusterLock::acquire()?;
        ensure_local_pki()?;
        ensure_token_mode()?;
        let bin = match self.bin.take() {
            Some(b) => b,
            None => triad_bin()?,
        };
        for n in NODES {
            check_ports_free(n)?;
        }
        let dir = tempfile::Builder::new()
            .prefix("triad-local-")
            .tempdir()
            .context("cannot create a temporary directory for the cluster")?;
        let nodes = NODES
            .iter()
            .map(|&n| {
                let config = self.configs.remove(&n).unwrap_or_else(|| local_config(n));
                let https = std::fs::read_to_string(&config).is_ok_and(|t| {
                    t.lines()
                        .any(|l| l.trim_start().starts_with("tls_cert_file"))
                });
                NodeSlot {
                    config,
                    data_dir: dir.path().join(format!("n{n}")),
                    log: dir.path().join(format!("node{n}.log")),
                    child: None,
                    starts: 0,
                    https,
                }
            })
            .collect();
        let mut cluster = LocalCluster {
            bin,
            nodes,
            http: Http::trusting(self.api_ca.as_deref())?,
            token: read_token()?,
            started_at: Instant::now(),
            dir: Some(dir),
            keep: std::env::var_os("TRIAD_KEEP_CLUSTER").is_some_and(|v| v == "1"),
            _lock: lock,
        };
        for n in NODES {
            cluster.spawn(n)?;
        }
        for n in NODES {
            cluster.wait_live(n, START_TIMEOUT)?;
        }
        Ok(cluster)
    }
}

fn check_ports_free(n: u64) -> Result<()> {
    for addr in [api_addr(n), raft_addr(n)] {
        TcpListener::bind(addr).with_context(|| {
            format!(
                "port {} (node {n}) is in use: is a stale triad agent running? \
                 find it with `ss -ltnp 'sport = :{}'`",
                addr.port(),
                addr.port()
            )
        })?;
    }
    Ok(())
}

/// Three `triad run` processes on the fixed loopback ports, with fresh data directories.
/// See the crate docs.
pub struct LocalCluster {
    bin: PathBuf,
    nodes: Vec<NodeSlot>,
    http: Http,
    token: String,
    started_at: Instant,
    dir: Option<tempfile::TempDir>,
    keep: bool,
    _lock: ClusterLock,
}

impl LocalCluster {
    /// Starts the three nodes from `tests/local/*.toml` with [`triad_bin`].
    pub fn start() -> Result<Self> {
        LocalClusterBuilder::default().start()
    }

    /// A builder for another binary or configs.
    pub fn builder() -> LocalClusterBuilder {
        LocalClusterBuilder::default()
    }

    /// The `triad` binary the nodes run.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// A `triad` command for the cluster's binary (see [`triad_command`]).
    pub fn triad(&self) -> Command {
        let mut c = triad_command(&self.bin);
        // The cluster's operator: reads carry its token.
        c.env("TRIAD_READ_TOKEN_FILE", token_path());
        c
    }

    /// The temporary directory holding data directories and logs.
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }

    /// Keeps the temporary directory (data and logs) when the cluster is dropped, and prints
    /// its path then.
    pub fn keep_files(&mut self) {
        self.keep = true;
    }

    /// When the first node was spawned.
    pub fn started_at(&self) -> Instant {
        self.started_at
    }

    /// The cluster's bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The HTTP client.
    pub fn http(&self) -> &Http {
        &self.http
    }

    fn slot(&self, n: u64) -> Result<&NodeSlot> {
        let i = usize::try_from(n).ok().and_then(|n| n.checked_sub(1));
        i.and_then(|i| self.nodes.get(i))
            .ok_or_else(|| anyhow!("no node {n}: the local cluster has nodes 1, 2 and 3"))
    }

    fn slot_mut(&mut self, n: u64) -> Result<&mut NodeSlot> {
        let i = usize::try_from(n).ok().and_then(|n| n.checked_sub(1));
        i.and_then(|i| self.nodes.get_mut(i))
            .ok_or_else(|| anyhow!("no node {n}: the local cluster has nodes 1, 2 and 3"))
    }

    /// Path of node `n`'s log file (stderr and stdout of every start, appended).
    pub fn log_path(&self, n: u64) -> Result<PathBuf> {
        Ok(self.slot(n)?.log.clone())
    }

    /// Node `n`'s log so far.
    pub fn log(&self, n: u64) -> Result<String> {
        let path = self.log_path(n)?;
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The PID of node `n` while it runs.
    pub fn pid(&self, n: u64) -> Result<Option<u32>> {
        Ok(self.slot(n)?.child.as_ref().map(Child::id))
    }

    /// Whether node `n`'s process is running; reaps it (and forgets it) when it exited.
    pub fn is_running(&mut self, n: u64) -> Result<bool> {
        Ok(self.exit_status(n)?.is_none() && self.slot(n)?.child.is_some())
    }

    /// When node `n`'s process has exited since the last check: its exit status (the process
    /// is reaped and forgotten). `None` while it runs or when it was not running.
    fn exit_status(&mut self, n: u64) -> Result<Option<ExitStatus>> {
        let slot = self.slot_mut(n)?;
        let Some(child) = slot.child.as_mut() else {
            return Ok(None);
        };
        match child
            .try_wait()
            .with_context(|| format!("cannot check node {n}'s process"))?
        {
            Some(status) => {
                slot.child = None;
                Ok(Some(status))
            }
            None => Ok(None),
        }
    }

    /// Nodes whose process runs.
    pub fn running(&mut self) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for n in NODES {
            if self.is_running(n)? {
                out.push(n);
            }
        }
        Ok(out)
    }

    fn spawn(&mut self, n: u64) -> Result<()> {
        let bin = self.bin.clone();
        let slot = self.slot_mut(n)?;
        if slot.child.is_some() {
            bail!("node {n} is already running");
        }
        slot.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&slot.log)
            .with_context(|| format!("cannot open {}", slot.log.display()))?;
        writeln!(
            log,
            "===== triad-tests: start #{} of node {n}: {} run --config {} --data-dir {}",
            slot.starts,
            bin.display(),
            slot.config.display(),
            slot.data_dir.display()
        )
        .with_context(|| format!("cannot write {}", slot.log.display()))?;
        let stdout = log
            .try_clone()
            .with_context(|| format!("cannot reopen {}", slot.log.display()))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("run")
            .arg("--config")
            .arg(&slot.config)
            .arg("--data-dir")
            .arg(&slot.data_dir)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log);
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt as _;
            // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
            // which is async-signal-safe and affects the child alone.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start node {n} with {}", bin.display()))?;
        slot.child = Some(child);
        Ok(())
    }

    fn wait_live(&mut self, n: u64, timeout: Duration) -> Result<()> {
        let url = format!("{}/live", self.base(n)?);
        let start = Instant::now();
        loop {
            if let Some(status) = self.exit_status(n)? {
                bail!(
                    "node {n} exited with {status} while starting; its log ({}):\n{}",
                    self.log_path(n)?.display(),
                    self.log_tail(n, 30)
                );
            }
            let last = match self.http.get(&url) {
                Ok(r) if r.status == 200 => return Ok(()),
                Ok(r) => format!("{} {}", r.status, r.body.trim()),
                Err(e) => format!("{e:#}"),
            };
            if start.elapsed() >= timeout {
                bail!(
                    "node {n} did not answer GET /live with 200 within {timeout:?} \
                     (last: {last}); its log:\n{}",
                    self.log_tail(n, 30)
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn log_tail(&self, n: u64, lines: usize) -> String {
        match self.log(n) {
            Ok(text) => {
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(e) => format!("(no log: {e:#})"),
        }
    }

    /// Kills node `n` with SIGKILL and reaps it. Fails when it is not running.
    pub fn kill9(&mut self, n: u64) -> Result<()> {
        let slot = self.slot_mut(n)?;
        let mut child = slot
            .child
            .take()
            .ok_or_else(|| anyhow!("node {n} is not running"))?;
        // Child::kill sends SIGKILL on Unix.
        child
            .kill()
            .with_context(|| format!("cannot SIGKILL node {n} (pid {})", child.id()))?;
        child
            .wait()
            .with_context(|| format!("cannot reap node {n}"))?;
        Ok(())
    }

    /// Sends SIGTERM to node `n` and waits up to [`STOP_TIMEOUT`] for it to exit; returns its
    /// exit status. When it does not exit in time it is killed and this fails.
    pub fn stop(&mut self, n: u64) -> Result<ExitStatus> {
        let slot = self.slot_mut(n)?;
        let mut child = slot
            .child
            .take()
            .ok_or_else(|| anyhow!("node {n} is not running"))?;
        let pid = libc::pid_t::try_from(child.id())
            .with_context(|| format!("node {n}'s pid {} does not fit pid_t", child.id()))?;
        // SAFETY: kill(2) on the PID of our own child, which is not reaped yet, so the PID
        // cannot have been reused by another process.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            let err = std::io::Error::last_os_error();
            let _ = child.kill();
            let _ = child.wait();
            return Err(err).with_context(|| format!("cannot SIGTERM node {n} (pid {pid})"));
        }
        let start = Instant::now();
        loop {
            if let Some(status) = child
                .try_wait()
                .with_context(|| format!("cannot check node {n}'s process"))?
            {
                return Ok(status);
            }
            if start.elapsed() >= STOP_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                bail!("node {n} (pid {pid}) did not exit within {STOP_TIMEOUT:?} after SIGTERM; killed it");
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Starts node `n` again on its data directory (after [`LocalCluster::kill9`] or
    /// [`LocalCluster::stop`]) and waits until it answers `GET /live`.
    pub fn restart(&mut self, n: u64) -> Result<()> {
        if self.is_running(n)? {
            bail!("node {n} is still running; kill9 or stop it first");
        }
        check_ports_free(n)?;
        self.spawn(n)?;
        self.wait_live(n, START_TIMEOUT)
    }

    /// Node `n`'s API base URL: [`api_url`], in https when its config serves TLS.
    pub fn base(&self, n: u64) -> Result<String> {
        let url = api_url(n);
        Ok(if self.slot(n)?.https {
            url.replacen("http://", "https://", 1)
        } else {
            url
        })
    }

    /// `GET <path>` on node `n`'s API, with the cluster's admin token (reads need a token).
    pub fn get(&self, n: u64, path: &str) -> Result<Reply> {
        self.slot(n)?;
        let url = format!("{}{path}", self.base(n)?);
        self.http.send(
            self.http
                .client()
                .get(&url)
                .bearer_auth(&self.token)
                .timeout(GET_TIMEOUT),
        )
    }

    /// `GET <path>` on node `n`'s API without a token.
    pub fn get_anonymous(&self, n: u64, path: &str) -> Result<Reply> {
        self.slot(n)?;
        self.http.get(&format!("{}{path}", self.base(n)?))
    }

    /// `POST <path>` on node `n`'s API with a raw body and an optional bearer token.
    pub fn post(&self, n: u64, path: &str, bearer: Option<&str>, body: &[u8]) -> Result<Reply> {
        self.slot(n)?;
        self.http
            .post(&format!("{}{path}", self.base(n)?), bearer, body.to_vec())
    }

    /// `POST /v1/maintenance {"enabled", "reason"}` on node `n` with the cluster's token.
    pub fn post_maintenance(&self, n: u64, enabled: bool, reason: &str) -> Result<Reply> {
        let body = serde_json::json!({ "enabled": enabled, "reason": reason }).to_string();
        self.post(n, "/v1/maintenance", Some(&self.token), body.as_bytes())
    }

    /// Node `n`'s `GET /v1/status`, parsed; fails unless it answers 200 with a status.
    pub fn status(&self, n: u64) -> Result<StatusBody> {
        let r = self.get(n, "/v1/status")?;
        if r.status != 200 {
            bail!("node {n}: GET /v1/status answered {}: {}", r.status, r.body);
        }
        serde_json::from_str(&r.body)
            .with_context(|| format!("node {n}: /v1/status is not a status: {}", r.body))
    }

    /// Node `n`'s `GET /metrics` text; fails unless it answers 200.
    pub fn metrics(&self, n: u64) -> Result<String> {
        let r = self.get(n, "/metrics")?;
        if r.status != 200 {
            bail!("node {n}: GET /metrics answered {}: {}", r.status, r.body);
        }
        Ok(r.body)
    }

    /// A probe for [`wait_for`]: `Ok` when every node in `nodes` answers status with the same
    /// known leader and term, and the leader (when among `nodes`) reports itself leader.
    /// `Err` describes what each node reported.
    pub fn agreed_leader(&self, nodes: &[u64]) -> std::result::Result<Leader, String> {
        let mut views = Vec::with_capacity(nodes.len());
        let mut observed = Vec::with_capacity(nodes.len());
        for &n in nodes {
            match self.status(n) {
                Ok(s) => {
                    observed.push(format!(
                        "n{n}: {} term {} leader {}",
                        s.role,
                        s.term.0,
                        s.leader_id.map_or_else(|| "none".into(), |l| l.to_string())
                    ));
                    views.push(s);
                }
                Err(e) => observed.push(format!("n{n}: {e:#}")),
            }
        }
        let observed = observed.join("; ");
        if views.len() != nodes.len() || views.is_empty() {
            return Err(observed);
        }
        let Some(leader) = views[0].leader_id else {
            return Err(observed);
        };
        let term = views[0].term;
        if views
            .iter()
            .any(|s| s.leader_id != Some(leader) || s.term != term)
        {
            return Err(observed);
        }
        if let Some(s) = views.iter().find(|s| s.node_id == leader) {
            if s.role != "leader" {
                return Err(observed);
            }
        }
        Ok(Leader {
            id: leader.0,
            term: term.0,
        })
    }

    /// Waits until every running node agrees on a leader (see [`LocalCluster::agreed_leader`]).
    pub fn wait_for_leader(&mut self, timeout: Duration) -> Result<Leader> {
        let nodes = self.running()?;
        wait_for("all running nodes to agree on a leader", timeout, || {
            self.agreed_leader(&nodes)
        })
    }

    /// A probe for [`wait_for`]: `Ok(applied_index)` when every node in `nodes` agrees on a
    /// leader and node `n` (one of them) has applied everything the leader had committed.
    pub fn caught_up(&self, n: u64, nodes: &[u64]) -> std::result::Result<u64, String> {
        let leader = self.agreed_leader(nodes)?;
        let commit = self
            .status(leader.id)
            .map_err(|e| format!("leader n{}: {e:#}", leader.id))?
            .commit_index
            .0;
        let me = self.status(n).map_err(|e| format!("n{n}: {e:#}"))?;
        if me.applied_index.0 >= commit {
            Ok(me.applied_index.0)
        } else {
            Err(format!(
                "n{n} applied {} < leader n{} commit {commit}",
                me.applied_index.0, leader.id
            ))
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for slot in &mut self.nodes {
            if let Some(mut child) = slot.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let panicking = std::thread::panicking();
        if panicking {
            for n in NODES {
                eprintln!(
                    "----- triad-tests: last lines of node {n}'s log -----\n{}",
                    self.log_tail(n, 40)
                );
            }
        }
        if panicking || self.keep {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!(
                    "triad-tests: kept the cluster's data and logs in {}",
                    kept.display()
                );
            }
        }
    }
}

/// The `p`-th percentile (0..=100, nearest rank) of sorted samples; zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds of a duration, as a float for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sum_adds_labelled_samples_only_of_that_name() {
        let text = "# HELP x_total x\n# TYPE x_total counter\nx_total{reason=\"a\"} 2\n\
                    x_total{reason=\"b\"} 3\nx_total_other 7\nx 1\n";
        assert_eq!(metric_sum(text, "x_total"), 5.0);
        assert_eq!(metric_sum(text, "x"), 1.0);
        assert_eq!(metric_sum(text, "missing"), 0.0);
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn remove_key_drops_only_that_key() {
        let text = "[api]\nlisten = \"x\"\ntoken_file = \"t\"\ntoken_file_x = 1\n";
        assert_eq!(
            remove_key(text, "token_file"),
            "[api]\nlisten = \"x\"\ntoken_file_x = 1\n"
        );
    }

    #[test]
    fn wait_for_reports_the_last_observation() {
        let mut n = 0;
        let err = wait_for("nothing", Duration::from_millis(60), || {
            n += 1;
            Err::<(), _>(format!("try {n}"))
        })
        .expect_err("must time out");
        let msg = err.to_string();
        assert!(msg.contains("waiting for nothing"), "{msg}");
        assert!(msg.contains(&format!("last observation: try {n}")), "{msg}");
        assert!(n >= 3, "polled {n} times");
        assert_eq!(
            wait_for("now", Duration::from_millis(10), || Ok::<_, String>(7)).expect("ok"),
            7
        );
    }
}
