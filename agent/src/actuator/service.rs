//! Service control: start, stop, restart and the state of a named local service (mariadb,
//! redis, php-fpm, glusterd), behind one trait with three implementations that pass one
//! contract suite (`agent/tests/service_contract.rs`):
//! - [`Systemd`] (production): `systemctl` on the unit. Galera's start modes use what Debian's
//!   `mariadb.service` provides: its `ExecStart` runs `galera_recovery` and starts `mariadbd`
//!   with the recovered `--wsrep_start_position`, so a rejoin is a plain `systemctl start`
//!   (the unit recovers the same position from the same data the agent read); a bootstrap
//!   runs `galera_new_cluster` (which starts the unit with `--wsrep-new-cluster`).
//! - [`Process`] (the lab): a configured argv per service, started in its own process group
//!   so that it outlives its agent, tracked by a pidfile. A start finds a running process by
//!   its pidfile first and never starts a second one.
//! - [`SimServices`] (simulation and tests): in memory.
//!
//! Every call is idempotent: starting a running service or stopping a stopped one succeeds
//! and does nothing. Errors name the service and what failed.
//!
//! [`service_control`] builds the implementation `[services]` configures.
//!
//! Caveats: only the Galera recovery (`local`, `reconcile::galera`) drives it today (PHP-FPM
//! remediation and backups will too). [`Process`] signals with `kill(1)` and reads liveness from `/proc`, so it is
//! Linux-only; it cannot tell a recycled pid from its daemon (the pidfile is removed on stop).
//! A stop signals the whole process group that the pidfile's pid leads (the service's own
//! children too), and so do a start after that pid died with children left behind and
//! [`ServiceControl::end_leftovers`] (the exit watch calls it when the main process exits:
//! systemd's end of a unit's remaining processes). Daemons that leave their group on purpose
//! (glusterd's bricks start their own sessions) are not touched.

// Reads the clock (adapter: stop deadlines); see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::config::{ServiceControlKind, ServicesSection, Validated};

/// How to start a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum StartMode {
    /// A plain start.
    Normal,
    /// Galera: rejoin the running cluster from a recovered position (`uuid:seqno`), so that
    /// the donor can send an incremental state transfer (IST) instead of a full copy.
    GaleraRejoin {
        /// The recovered position, `uuid:seqno`.
        position: String,
    },
    /// Galera: bootstrap a new cluster from this node (`--wsrep-new-cluster`), from its
    /// recovered position (`uuid:seqno`) when known.
    GaleraBootstrap {
        /// The recovered position, `uuid:seqno`.
        position: Option<String>,
    },
}

/// The state of a service as its controller sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum ServiceState {
    /// Running, with its main pid when known.
    Running {
        /// The main process id.
        pid: Option<u32>,
    },
    /// Starting or stopping.
    Changing,
    /// Not running.
    Stopped,
    /// Not running after a failure, with the manager's reason.
    Failed {
        /// Why, as the service manager says it.
        reason: String,
    },
}

impl ServiceState {
    /// Whether the service is running.
    pub fn is_running(&self) -> bool {
        matches!(self, ServiceState::Running { .. })
    }
}

/// Why a service operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The service is not configured here.
    #[error("service {0:?} is not configured for control on this node (see [services])")]
    Unknown(String),
    /// The start mode does not apply to this service or implementation.
    #[error("service {service:?}: start mode {mode:?} is not supported: {why}")]
    Mode {
        /// The service.
        service: String,
        /// The mode asked for.
        mode: StartMode,
        /// Why not.
        why: String,
    },
    /// A command failed or could not run.
    #[error("service {service:?}: {what} failed: {detail}")]
    Command {
        /// The service.
        service: String,
        /// What was attempted.
        what: String,
        /// Output or OS error.
        detail: String,
    },
    /// The service did not reach the wanted state in time.
    #[error("service {service:?} did not {what} within {after:?}")]
    Timeout {
        /// The service.
        service: String,
        /// What it did not do.
        what: &'static str,
        /// The wait.
        after: Duration,
    },
}

/// Start, stop, restart and state of local services. Every call is idempotent and bounded.
pub trait ServiceControl: Send + Sync + 'static {
    /// The state of `service`.
    fn state<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<ServiceState, ServiceError>>;
    /// Starts `service` in `mode`; a running service is left alone.
    fn start<'a>(
        &'a self,
        service: &'a str,
        mode: &'a StartMode,
    ) -> BoxFuture<'a, Result<(), ServiceError>>;
    /// Stops `service`; a stopped service is left alone.
    fn stop<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<(), ServiceError>>;
    /// After `service`'s main process exited by itself: ends what is left of it, as systemd
    /// ends a unit's remaining processes when its main process exits (a PHP-FPM master
    /// killed alone leaves its workers serving the inherited socket, so its pool would look
    /// healthy while nothing manages it, and a start would wait for them). Unknown services
    /// are refused; a service whose main process still runs is left alone. The default does
    /// nothing: the service manager does it.
    fn end_leftovers<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move { self.state(service).await.map(|_| ()) })
    }
    /// Stops, then starts `service` in `mode`.
    fn restart<'a>(
        &'a self,
        service: &'a str,
        mode: &'a StartMode,
    ) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            self.stop(service).await?;
            self.start(service, mode).await
        })
    }
}

/// Resolves when process `pid` exits: a Linux pidfd (`pidfd_open(2)`, Linux 5.3) turns
/// readable once the process has terminated, so the caller learns of a `kill -9` at once
/// instead of at its next poll. `Err` when the process cannot be watched: `NotFound` when it
/// is already gone (the caller treats that as an exit), another kind when pidfds are
/// unavailable. The pid comes from [`ServiceControl::state`] just before, so a recycled pid is
/// as unlikely here as everywhere else in this module.
pub async fn process_exit(pid: u32) -> std::io::Result<()> {
    use rustix::process::{pidfd_open, Pid, PidfdFlags};
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("pid {pid} is not valid"),
            )
        })?;
    let fd = pidfd_open(pid, PidfdFlags::NONBLOCK).map_err(|e| {
        if e == rustix::io::Errno::SRCH {
            std::io::Error::new(std::io::ErrorKind::NotFound, format!("pid {pid:?} is gone"))
        } else {
            std::io::Error::from(e)
        }
    })?;
    // SAFETY: `fd` is an `OwnedFd` moved into the `AsyncFd`: it stays open, and its
    // `as_raw_fd` is the same descriptor, until the `AsyncFd` is dropped (tokio's condition).
    let fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
    }
    .map_err(std::io::Error::from)?;
    let _ready = fd.readable().await?;
    Ok(())
}

/// The service control `[services]` configures: [`Systemd`] over the configured units,
/// [`Process`] over the configured specs, or `None` with `control = "none"`. The daemon does
/// drives it for the Galera recovery (later PHP-FPM remediation too). It lives here rather
/// than in `config` because `config` must not import the actuators.
pub fn service_control(cfg: &Validated) -> Option<Arc<dyn ServiceControl>> {
    Some(match Configured::from_section(&cfg.config.services)? {
        Configured::Systemd(s) => Arc::new(s),
        Configured::Process(p) => Arc::new(p),
    })
}

/// The implementation before it is shared, so that tests can see which one was built.
#[derive(Debug)]
enum Configured {
    Systemd(Systemd),
    Process(Process),
}

impl Configured {
    fn from_section(s: &ServicesSection) -> Option<Configured> {
        match s.control {
            ServiceControlKind::Systemd => Some(Configured::Systemd(
                Systemd::new(s.systemd_units(), s.stop_timeout)
                    .with_bootstrap_unit(s.bootstrap_unit.clone()),
            )),
            ServiceControlKind::Process => Some(Configured::Process(Process::new(
                s.process.clone(),
                s.stop_timeout,
            ))),
            ServiceControlKind::None => None,
        }
    }
}

// ----- systemd -------------------------------------------------------------------------------

/// Production: `systemctl` on each service's unit (`[services]` maps names to units).
///
/// What the units need:
/// - `systemctl start` returns once the service runs: `Type=notify`, as Debian 12's
///   `mariadb.service`, `redis-server.service` (`--supervised systemd`) and
///   `php8.2-fpm.service` are; the state is read from `ActiveState`/`SubState`/`MainPID`.
/// - MariaDB: Debian 12's `mariadb.service`, whose `ExecStart` runs `galera_recovery` and
///   passes the recovered `--wsrep_start_position` itself (older units took it from
///   `$_WSREP_START_POSITION`, set by `ExecStartPre`; this one does not read it), and
///   `galera_new_cluster` on the `PATH` (a bootstrap).
/// - A unit that restarts itself (`Restart=`) acts before the agent does. Debian ships
///   `Restart=on-abnormal` for MariaDB (a crash restart also recovers its position, so it
///   rejoins by IST as the agent would) and `Restart=always` for Redis: a restarted Redis boots
///   fenced (`min-replicas-to-write 1000` in redis.conf) and its agent decides its role, so
///   neither races a decision. The agent's own restarts are bounded and recorded.
/// - The agent runs as root, or (the package) as the `triad` user with the shipped polkit
///   rule, which lets it start, stop and restart these units and nothing else. As `triad`
///   it cannot run `galera_new_cluster` (that sets the manager's environment, which only
///   root may): a bootstrap then starts [`Systemd::with_bootstrap_unit`]'s oneshot unit,
///   which runs it as root. `systemctl` refuses what polkit does not allow, and the error
///   says so.
#[derive(Clone, Debug)]
pub struct Systemd {
    units: BTreeMap<String, String>,
    timeout: Duration,
    bootstrap_unit: Option<String>,
    systemctl: String,
}

impl Systemd {
    /// Controls the given units (service name -> unit name); each command is cut at `timeout`.
    pub fn new(units: BTreeMap<String, String>, timeout: Duration) -> Self {
        Systemd {
            units,
            timeout,
            bootstrap_unit: None,
            systemctl: "systemctl".into(),
        }
    }

    /// Runs this program instead of `systemctl` from the `PATH` (tests use a stand-in that
    /// records its arguments).
    pub fn with_systemctl(mut self, program: impl Into<String>) -> Self {
        self.systemctl = program.into();
        self
    }

    /// A Galera bootstrap starts this unit (`services.bootstrap_unit`) instead of running
    /// `galera_new_cluster`.
    pub fn with_bootstrap_unit(mut self, unit: Option<String>) -> Self {
        self.bootstrap_unit = unit;
        self
    }

    fn unit(&self, service: &str) -> Result<&str, ServiceError> {
        self.units
            .get(service)
            .map(String::as_str)
            .ok_or_else(|| ServiceError::Unknown(service.to_string()))
    }

    async fn run(
        &self,
        service: &str,
        program: &str,
        args: &[&str],
    ) -> Result<String, ServiceError> {
        let what = format!("{program} {}", args.join(" "));
        let fail = |detail: String| ServiceError::Command {
            service: service.to_string(),
            what: what.clone(),
            detail,
        };
        let out = tokio::time::timeout(
            self.timeout,
            tokio::process::Command::new(program)
                .args(args)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| ServiceError::Timeout {
            service: service.to_string(),
            what: "answer",
            after: self.timeout,
        })?
        .map_err(|e| fail(e.to_string()))?;
        if !out.status.success() {
            return Err(fail(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Parses `systemctl show -p ActiveState,SubState,MainPID,Result` output.
pub fn parse_systemctl_show(text: &str) -> ServiceState {
    let mut props = BTreeMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            props.insert(k.trim(), v.trim());
        }
    }
    let pid = props
        .get("MainPID")
        .and_then(|p| p.parse::<u32>().ok())
        .filter(|&p| p != 0);
    match props.get("ActiveState").copied().unwrap_or("") {
        "active" | "reloading" => ServiceState::Running { pid },
        "activating" | "deactivating" => ServiceState::Changing,
        "failed" => ServiceState::Failed {
            reason: format!(
                "{} ({})",
                props.get("Result").copied().unwrap_or("unknown"),
                props.get("SubState").copied().unwrap_or("?")
            ),
        },
        _ => ServiceState::Stopped,
    }
}

impl ServiceControl for Systemd {
    fn state<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<ServiceState, ServiceError>> {
        Box::pin(async move {
            let unit = self.unit(service)?;
            let out = self
                .run(
                    service,
                    &self.systemctl,
                    &["show", "-p", "ActiveState,SubState,MainPID,Result", unit],
                )
                .await?;
            Ok(parse_systemctl_show(&out))
        })
    }

    fn start<'a>(
        &'a self,
        service: &'a str,
        mode: &'a StartMode,
    ) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            let unit = self.unit(service)?;
            if self.state(service).await?.is_running() {
                return Ok(());
            }
            match mode {
                StartMode::Normal => {
                    self.run(service, &self.systemctl, &["start", unit]).await?;
                }
                StartMode::GaleraRejoin { position } => {
                    // The unit recovers the position itself (`galera_recovery` in its
                    // `ExecStart`); the one asked for is checked, not passed.
                    check_position(service, mode, position)?;
                    self.run(service, &self.systemctl, &["start", unit]).await?;
                }
                StartMode::GaleraBootstrap { position } => {
                    // `galera_new_cluster` starts the unit, whose `ExecStart` recovers the
                    // same position itself.
                    if let Some(p) = position {
                        check_position(service, mode, p)?;
                    }
                    match &self.bootstrap_unit {
                        Some(helper) => {
                            self.run(service, &self.systemctl, &["start", helper])
                                .await?;
                        }
                        None => {
                            self.run(service, "galera_new_cluster", &[]).await?;
                        }
                    }
                }
            }
            Ok(())
        })
    }

    fn stop<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            let unit = self.unit(service)?;
            self.run(service, &self.systemctl, &["stop", unit]).await?;
            Ok(())
        })
    }
}

/// A recovered Galera position must look like `uuid:seqno` (it reaches a command line).
fn check_position(service: &str, mode: &StartMode, position: &str) -> Result<(), ServiceError> {
    let ok = position.split_once(':').is_some_and(|(uuid, seqno)| {
        uuid.len() == 36
            && uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
            && seqno.parse::<i64>().is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Mode {
            service: service.to_string(),
            mode: mode.clone(),
            why: format!("{position:?} is not a Galera position (uuid:seqno)"),
        })
    }
}

// ----- process (lab) -------------------------------------------------------------------------

/// How the lab starts one service as a plain process (`[services.process.NAME]`; defined
/// with the rest of the configuration).
pub use crate::config::ProcessSpec;

/// The lab: each service is a process started from a configured argv, in its own process
/// group (it outlives its agent), tracked by its pidfile.
#[derive(Clone, Debug)]
pub struct Process {
    specs: BTreeMap<String, ProcessSpec>,
    stop_timeout: Duration,
}

impl Process {
    /// Controls the given services; a stop waits `stop_timeout` after SIGTERM, then kills.
    pub fn new(specs: BTreeMap<String, ProcessSpec>, stop_timeout: Duration) -> Self {
        Process {
            specs,
            stop_timeout,
        }
    }

    fn spec(&self, service: &str) -> Result<&ProcessSpec, ServiceError> {
        self.specs
            .get(service)
            .ok_or_else(|| ServiceError::Unknown(service.to_string()))
    }

    /// The pid in the pidfile, running or not.
    fn recorded_pid(spec: &ProcessSpec) -> Option<u32> {
        std::fs::read_to_string(&spec.pidfile)
            .ok()?
            .trim()
            .parse::<u32>()
            .ok()
    }

    /// The live pid in the pidfile, if any.
    fn live_pid(spec: &ProcessSpec) -> Option<u32> {
        Self::recorded_pid(spec).filter(|&pid| pid_alive(pid))
    }

    /// Signals what is left of the service started as `pid`: the process group it leads
    /// (see `start`), and itself should it have left that group.
    async fn signal(service: &str, pid: u32, sig: &str) -> Result<(), ServiceError> {
        let members = group_members(pid);
        let mut targets = Vec::new();
        if !members.is_empty() {
            targets.push(format!("-{pid}"));
        }
        if pid_alive(pid) && !members.contains(&pid) {
            targets.push(pid.to_string());
        }
        if targets.is_empty() {
            return Ok(());
        }
        let what = format!("kill {sig} -- {}", targets.join(" "));
        let out = tokio::process::Command::new("kill")
            .arg(sig)
            .arg("--")
            .args(&targets)
            .output()
            .await
            .map_err(|e| ServiceError::Command {
                service: service.to_string(),
                what: what.clone(),
                detail: e.to_string(),
            })?;
        // Processes that exited meanwhile are fine.
        if !out.status.success() && remains(pid) {
            return Err(ServiceError::Command {
                service: service.to_string(),
                what,
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }

    /// Stops what is left of the service started as `pid`: SIGTERM, then SIGKILL after the
    /// stop timeout.
    async fn stop_pid(&self, service: &str, pid: u32) -> Result<(), ServiceError> {
        if !remains(pid) {
            return Ok(());
        }
        Self::signal(service, pid, "-TERM").await?;
        let deadline = std::time::Instant::now() + self.stop_timeout;
        while remains(pid) {
            if std::time::Instant::now() >= deadline {
                Self::signal(service, pid, "-KILL").await?;
                // A killed process still takes a moment to go.
                let killed = std::time::Instant::now() + Duration::from_secs(1);
                while remains(pid) {
                    if std::time::Instant::now() >= killed {
                        return Err(ServiceError::Timeout {
                            service: service.to_string(),
                            what: "stop",
                            after: self.stop_timeout,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// Whether `pid` runs and is not a zombie (Linux `/proc`).
fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses, which may itself hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Whether anything is left of the service started as `pid`: itself, or a live member of the
/// process group it leads (php-fpm's workers outlive a killed master and keep serving on the
/// inherited socket).
fn remains(pid: u32) -> bool {
    pid_alive(pid) || !group_members(pid).is_empty()
}

/// The live (not zombie) processes of process group `pgid` (Linux `/proc`).
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After the command name: state, ppid, pgrp.
            let mut fields = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace())
                .into_iter()
                .flatten();
            let state = fields.next();
            let pgrp = fields.nth(1).and_then(|g| g.parse::<u32>().ok());
            pgrp == Some(pgid) && state.is_some_and(|s| s != "Z" && s != "X")
        })
        .collect()
}

impl ServiceControl for Process {
    fn state<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<ServiceState, ServiceError>> {
        Box::pin(async move {
            let spec = self.spec(service)?;
            Ok(match Self::live_pid(spec) {
                Some(pid) => ServiceState::Running { pid: Some(pid) },
                None => ServiceState::Stopped,
            })
        })
    }

    fn start<'a>(
        &'a self,
        service: &'a str,
        mode: &'a StartMode,
    ) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            let spec = self.spec(service)?;
            if Self::live_pid(spec).is_some() {
                return Ok(());
            }
            // A main process that died may have left children that still hold its port.
            if let Some(old) = Self::recorded_pid(spec) {
                self.stop_pid(service, old).await?;
            }
            let mut argv = spec.argv.clone();
            match mode {
                StartMode::Normal => {}
                StartMode::GaleraRejoin { position } => {
                    check_position(service, mode, position)?;
                    argv.extend(
                        spec.rejoin_args
                            .iter()
                            .map(|a| a.replace("{position}", position)),
                    );
                }
                StartMode::GaleraBootstrap { position } => {
                    argv.extend(spec.bootstrap_args.iter().cloned());
                    if let Some(position) = position {
                        check_position(service, mode, position)?;
                        argv.extend(
                            spec.rejoin_args
                                .iter()
                                .map(|a| a.replace("{position}", position)),
                        );
                    }
                }
            }
            let fail = |what: &str, detail: String| ServiceError::Command {
                service: service.to_string(),
                what: what.to_string(),
                detail,
            };
            let (program, args) = argv
                .split_first()
                .ok_or_else(|| fail("start", "empty argv".into()))?;
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&spec.log)
                .map_err(|e| fail("open log", format!("{}: {e}", spec.log.display())))?;
            let err = log
                .try_clone()
                .map_err(|e| fail("open log", e.to_string()))?;
            let child = tokio::process::Command::new(program)
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(log)
                .stderr(err)
                .process_group(0)
                .kill_on_drop(false)
                .spawn()
                .map_err(|e| fail("start", format!("{program}: {e}")))?;
            let pid = child
                .id()
                .ok_or_else(|| fail("start", "exited at once".into()))?;
            std::fs::write(&spec.pidfile, format!("{pid}\n"))
                .map_err(|e| fail("write pidfile", format!("{}: {e}", spec.pidfile.display())))?;
            // The child is not waited on here: tokio reaps it when it exits.
            drop(child);
            Ok(())
        })
    }

    fn stop<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            let spec = self.spec(service)?;
            if let Some(pid) = Self::recorded_pid(spec) {
                self.stop_pid(service, pid).await?;
            }
            let _ = std::fs::remove_file(&spec.pidfile);
            Ok(())
        })
    }

    fn end_leftovers<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            let spec = self.spec(service)?;
            match Self::recorded_pid(spec) {
                // The main process is gone, its group is not: stop the group (the pidfile
                // stays, so a start still finds and ends anything that outlives this).
                Some(pid) if !pid_alive(pid) && remains(pid) => {
                    let left = group_members(pid).len();
                    tracing::info!(
                        service,
                        pid,
                        left,
                        "the main process exited: ending what is left of its process group"
                    );
                    self.stop_pid(service, pid).await
                }
                _ => Ok(()),
            }
        })
    }
}

// ----- simulation ----------------------------------------------------------------------------

/// In memory: each configured service is running or not; every start and stop is logged.
#[derive(Clone, Debug, Default)]
pub struct SimServices {
    inner: Arc<Mutex<SimInner>>,
}

#[derive(Debug, Default)]
struct SimInner {
    running: BTreeMap<String, Option<u32>>,
    next_pid: u32,
    log: Vec<(String, String)>,
}

impl SimServices {
    /// Services with these names, all stopped.
    pub fn new<'a>(services: impl IntoIterator<Item = &'a str>) -> Self {
        let sim = SimServices::default();
        if let Ok(mut s) = sim.inner.lock() {
            s.next_pid = 100;
            for name in services {
                s.running.insert(name.to_string(), None);
            }
        }
        sim
    }

    /// What was done, in order: (service, operation).
    pub fn log(&self) -> Vec<(String, String)> {
        self.inner.lock().map(|s| s.log.clone()).unwrap_or_default()
    }

    /// A crash: the service stops without being asked.
    pub fn crash(&self, service: &str) {
        if let Ok(mut s) = self.inner.lock() {
            if let Some(p) = s.running.get_mut(service) {
                *p = None;
            }
        }
    }

    fn with<T>(
        &self,
        service: &str,
        f: impl FnOnce(&mut SimInner) -> T,
    ) -> Result<T, ServiceError> {
        let mut s = self.inner.lock().map_err(|_| ServiceError::Command {
            service: service.to_string(),
            what: "simulated control".into(),
            detail: "poisoned".into(),
        })?;
        if !s.running.contains_key(service) {
            return Err(ServiceError::Unknown(service.to_string()));
        }
        Ok(f(&mut s))
    }
}

impl ServiceControl for SimServices {
    fn state<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<ServiceState, ServiceError>> {
        Box::pin(async move {
            self.with(service, |s| {
                match s.running.get(service).copied().flatten() {
                    Some(pid) => ServiceState::Running { pid: Some(pid) },
                    None => ServiceState::Stopped,
                }
            })
        })
    }

    fn start<'a>(
        &'a self,
        service: &'a str,
        mode: &'a StartMode,
    ) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            match mode {
                StartMode::GaleraRejoin { position }
                | StartMode::GaleraBootstrap {
                    position: Some(position),
                } => check_position(service, mode, position)?,
                _ => {}
            }
            self.with(service, |s| {
                if s.running.get(service).copied().flatten().is_some() {
                    return;
                }
                s.next_pid += 1;
                let pid = s.next_pid;
                s.running.insert(service.to_string(), Some(pid));
                s.log.push((service.to_string(), format!("start {mode:?}")));
            })
        })
    }

    fn stop<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            self.with(service, |s| {
                if s.running.get(service).copied().flatten().is_none() {
                    return;
                }
                s.running.insert(service.to_string(), None);
                s.log.push((service.to_string(), "stop".into()));
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As the `triad` user a bootstrap starts the helper unit (`galera_new_cluster` needs
    /// root), and a plain start is `systemctl start` of the mapped unit; nothing else runs.
    #[tokio::test]
    async fn systemd_starts_the_bootstrap_helper_unit_when_configured() {
        let dir = tempfile::tempdir().expect("tempdir");
        let systemctl = dir.path().join("systemctl");
        let calls = dir.path().join("calls");
        crate::helper_unit::testing::stand_in(
            &systemctl,
            &format!(
                "echo \"$*\" >> '{}'\n\
                 [ \"$1\" = show ] && printf 'ActiveState=inactive\\nSubState=dead\\n\
                 MainPID=0\\nResult=success\\n'\n\
                 exit 0",
                calls.display()
            ),
        );
        let units = BTreeMap::from([("mariadb".to_string(), "mariadb.service".to_string())]);
        let control = Systemd::new(units, Duration::from_secs(5))
            .with_bootstrap_unit(Some("triad-galera-bootstrap.service".into()))
            .with_systemctl(systemctl.display().to_string());
        let position = "9eaceb67-efac-11f1-b809-474591e831a5:6".to_string();
        control
            .start(
                "mariadb",
                &StartMode::GaleraBootstrap {
                    position: Some(position.clone()),
                },
            )
            .await
            .expect("bootstrap");
        control
            .start("mariadb", &StartMode::GaleraRejoin { position })
            .await
            .expect("rejoin");
        let show = "show -p ActiveState,SubState,MainPID,Result mariadb.service";
        assert_eq!(
            std::fs::read_to_string(&calls).expect("calls"),
            format!(
                "{show}\nstart triad-galera-bootstrap.service\n{show}\nstart mariadb.service\n"
            )
        );
    }

    /// Recorded `systemctl show -p ActiveState,SubState,MainPID,Result` outputs.
    #[test]
    fn systemctl_show_outputs_parse() {
        let cases: &[(&str, ServiceState)] = &[
            (
                "MainPID=4242\nResult=success\nActiveState=active\nSubState=running\n",
                ServiceState::Running { pid: Some(4242) },
            ),
            (
                "MainPID=0\nResult=success\nActiveState=inactive\nSubState=dead\n",
                ServiceState::Stopped,
            ),
            (
                "MainPID=0\nResult=exit-code\nActiveState=failed\nSubState=failed\n",
                ServiceState::Failed {
                    reason: "exit-code (failed)".into(),
                },
            ),
            (
                "MainPID=977\nResult=success\nActiveState=activating\nSubState=start\n",
                ServiceState::Changing,
            ),
            (
                "MainPID=977\nResult=success\nActiveState=deactivating\nSubState=stop-sigterm\n",
                ServiceState::Changing,
            ),
            // A unit that does not exist: systemctl shows it inactive.
            (
                "MainPID=0\nResult=success\nActiveState=inactive\nSubState=dead\n",
                ServiceState::Stopped,
            ),
            ("", ServiceState::Stopped),
        ];
        for (text, want) in cases {
            assert_eq!(&parse_systemctl_show(text), want, "{text:?}");
        }
    }

    fn services(text: &str) -> Validated {
        let base = r#"
[node]
id = 1
data_dir = "/tmp/x"
[[peers]]
id = 1
raft_addr = "127.0.0.1:7201"
api_addr = "127.0.0.1:7101"
redis_addr = "127.0.0.1:6371"
[api]
listen = "127.0.0.1:7101"
[tls]
insecure_plaintext_peers = true
[redis]
"#;
        let path = std::path::Path::new("test.toml");
        crate::config::parse(path, &format!("{base}{text}"))
            .and_then(|c| crate::config::validate(path, c))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `[services]` builds the implementation it names, over the configured units or specs.
    #[test]
    fn service_control_builds_the_configured_kind() {
        let v = services("");
        match Configured::from_section(&v.config.services) {
            Some(Configured::Systemd(s)) => {
                assert_eq!(s.units["redis"], "redis-server.service");
                assert_eq!(s.units["phpfpm"], "php8.2-fpm.service");
                assert_eq!(s.timeout, Duration::from_secs(30));
            }
            other => panic!("default: expected systemd, got {other:?}"),
        }
        assert!(service_control(&v).is_some());

        let v = services(
            "[services]\ncontrol = \"process\"\nstop_timeout = \"2s\"\n\
             [services.process.redis]\nargv = [\"/usr/bin/redis-server\"]\n\
             pidfile = \"/run/triad/redis.pid\"\nlog = \"/var/log/triad/redis.log\"\n",
        );
        match Configured::from_section(&v.config.services) {
            Some(Configured::Process(p)) => {
                assert_eq!(p.specs.keys().collect::<Vec<_>>(), ["redis"]);
                assert_eq!(p.specs["redis"].argv, ["/usr/bin/redis-server"]);
                assert_eq!(p.stop_timeout, Duration::from_secs(2));
            }
            other => panic!("process: expected process, got {other:?}"),
        }
        let ctl = service_control(&v).expect("process control");
        // Only the configured services are known to it.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        assert!(matches!(
            rt.block_on(ctl.state("mariadb")),
            Err(ServiceError::Unknown(_))
        ));

        let v = services("[services]\ncontrol = \"none\"\n");
        assert!(Configured::from_section(&v.config.services).is_none());
        assert!(service_control(&v).is_none());
    }

    #[test]
    fn galera_positions_are_checked_before_they_reach_a_command_line() {
        let mode = |p: &str| StartMode::GaleraRejoin { position: p.into() };
        let ok = "6f0c2e64-1f0b-11ef-9c5b-0242ac120002:1234";
        assert!(check_position("mariadb", &mode(ok), ok).is_ok());
        for bad in [
            "",
            "1234",
            "6f0c2e64-1f0b-11ef-9c5b-0242ac120002:",
            "6f0c2e64-1f0b-11ef-9c5b-0242ac120002:12; rm -rf /",
            "short:1",
        ] {
            let e = check_position("mariadb", &mode(bad), bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains("not a Galera position"), "{bad:?}: {e}");
        }
    }

    /// The exit watch resolves when the watched process exits (here a child killed with
    /// SIGKILL, as `kill -9` would), not before; a pid that is already gone is `NotFound`.
    #[test]
    fn process_exit_resolves_when_the_process_exits() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut child = tokio::process::Command::new("sleep")
                .arg("60")
                .spawn()
                .expect("spawn sleep");
            let pid = child.id().expect("pid");
            let watch = tokio::spawn(process_exit(pid));
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(!watch.is_finished(), "resolved while the process runs");
            child.start_kill().expect("kill");
            let _ = child.wait().await;
            tokio::time::timeout(Duration::from_secs(10), watch)
                .await
                .expect("the watch resolves after the exit")
                .expect("join")
                .expect("watched");
            let gone = process_exit(pid).await.expect_err("already reaped");
            assert_eq!(gone.kind(), std::io::ErrorKind::NotFound, "{gone}");
        });
    }
}
