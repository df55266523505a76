//! The local reconcilers: one tokio task per managed service that drives this VM's daemons to
//! the target its controller publishes (see `controller`), and reports what it carried out.
//!
//! The event loop (`node`) owns a [`LocalReconcilers`]: it hands it every target the driver
//! publishes ([`LocalReconcilers::publish`], one watch channel per service, sent only on a
//! change) and reads back the newest decision carried out
//! ([`LocalReconcilers::reconciled`]), which the agent reports to its peers. Each task paces
//! itself with its own clock-free pacer (`reconcile::redis::Pacer` for Redis), which the simulation
//! runs too; what is here is the thin tokio glue: timers, the lease source, logs, metrics and
//! the status view.
//!
//! The reconcilers: Redis (with the local HAProxy's Redis backend on its side), the backup
//! runner (`backup`), the Galera writer, the web rotation (the HAProxy web backend), and the Galera recovery (`reconcile::galera` plans each step; [`spawn_galera`] gathers the local
//! facts, carries the step out through service control, `--wsrep-recover`, `grastate.dat`
//! and one SQL statement, and feeds the probe the notes the leader's evidence needs).
//!
//! Caveats:
//! - The reported reconciled index is Redis's (see `controller`); the Galera recovery needs
//!   none (its actions are fenced by outage number and decision index).
//! - The Galera recovery's cycle blocks while a start runs: a systemd start of a joiner
//!   returns once the unit is up (after its state transfer), bounded by
//!   `services.stop_timeout`.

// Reads the clock (adapter: cycle timestamps, the pacer's time); see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::actuator::galera_sql::{EvsPeriod, MysqlGaleraSql};
use crate::actuator::haproxy::HaproxySocket;
use crate::actuator::redis::RedisServer;
use crate::actuator::service::{service_control, ServiceState, StartMode};
use crate::cluster::{Authority, RemedyAction};
use crate::config::{
    BackendRole, ConfigError, MariadbSection, ServiceControlKind, ServiceName, Validated,
};
use crate::controller::ServiceTarget;
use crate::decide::galera::{GaleraPosition, GrastateEvidence, ProcessState};
use crate::decide::ServicePlan;
use crate::driver::Driver;
use crate::health::HealthStore;
use crate::helper_unit::HelperUnit;
use crate::ids::NodeId;
use crate::metrics::Metrics;
use crate::probe::grastate::{read_grastate, set_safe_to_bootstrap};
use crate::probe::mariadb::GaleraNotes;
use crate::probe::wsrep_recover::{recover_position, RecoverSpec};
use crate::raft::transport::Transport;
use crate::reconcile::galera::{GaleraRecovery, PeerChecks, RecoverySettings, StartKind, Step};
use crate::reconcile::galera_writer::{self, WriterReconciler};
use crate::reconcile::redis::{HaproxyTarget, Pace, Pacer, RedisReconciler};
use crate::reconcile::remedy::{RemedyRunner, RemedyStep};
use crate::reconcile::web::WebReconciler;
use crate::reconcile::Timer;
use crate::status::{
    GaleraCoreView, Liveness, LocalGaleraView, LocalRedisView, LocalWebView, LocalWriterView,
    RedisCoreView, RemedyCoreView, ServiceViews, WebCoreView, WriterCoreView,
};

/// What the local reconcilers share with the event loop's other parts.
pub struct LocalShared<'a> {
    /// The notes the Galera recovery leaves for the MariaDB probe.
    pub galera_notes: &'a GaleraNotes,
    /// The event loop's clock and liveness.
    pub liveness: &'a Arc<Liveness>,
    /// The local MariaDB probe's kick (checks at once when notified).
    pub mariadb_kick: Option<Arc<tokio::sync::Notify>>,
    /// The local PHP-FPM probe's kick.
    pub phpfpm_kick: Option<Arc<tokio::sync::Notify>>,
    /// The operator's hooks: a remediation's pre hook runs before it acts.
    pub hooks: Option<Arc<crate::hooks::Hooks>>,
}

/// The running local reconcilers of this node. See the module docs.
pub struct LocalReconcilers {
    targets: BTreeMap<Authority, watch::Sender<Option<ServiceTarget>>>,
    redis: Arc<Mutex<LocalRedisView>>,
    redis_managed: bool,
    galera: Arc<Mutex<LocalGaleraView>>,
    galera_managed: bool,
    writer: Arc<Mutex<LocalWriterView>>,
    web: Arc<Mutex<LocalWebView>>,
    web_managed: bool,
    /// What the remediation task reports (the remediation under this node's lease).
    remedy: Arc<Mutex<Option<crate::cluster::RemedyRun>>>,
    remedy_managed: bool,
    /// What the backup runner reports (the run under this node's lease).
    backup: Arc<Mutex<Option<crate::codec::BackupRun>>>,
    /// Notified when the Redis reconciler carried out a newer decision.
    reconciled_changed: Arc<tokio::sync::Notify>,
}

impl LocalReconcilers {
    /// Starts a reconciler for every service the driver has a target for (or will have, under
    /// a planted bug) and this node runs locally. Each starts from the driver's current target.
    pub fn spawn(
        cfg: &Validated,
        driver: &Driver,
        transport: &Transport,
        metrics: &Metrics,
        shared: LocalShared<'_>,
        shutdown: &CancellationToken,
    ) -> Result<Self, ConfigError> {
        let LocalShared {
            galera_notes,
            liveness,
            mariadb_kick,
            phpfpm_kick,
            hooks,
        } = shared;
        let redis = Arc::new(Mutex::new(LocalRedisView {
            waiting: Some("starting".into()),
            ..LocalRedisView::default()
        }));
        let mut targets = BTreeMap::new();
        let reconciled_changed = Arc::new(tokio::sync::Notify::new());
        if cfg.config.redis.is_some() {
            let (tx, rx) = watch::channel(driver.target(Authority::Redis).cloned());
            if spawn_redis(
                cfg,
                transport.clone(),
                rx,
                (redis.clone(), reconciled_changed.clone()),
                metrics.clone(),
                shutdown.clone(),
            )? {
                targets.insert(Authority::Redis, tx);
            }
        }
        let galera = Arc::new(Mutex::new(LocalGaleraView::default()));
        if cfg.config.galera.is_some() {
            let (tx, rx) = watch::channel(driver.target(Authority::Galera).cloned());
            let io = GaleraTaskIo {
                health: driver.health().clone(),
                liveness: liveness.clone(),
                view: galera.clone(),
                notes: galera_notes.clone(),
                metrics: metrics.clone(),
            };
            if spawn_galera(cfg, rx, io, shutdown.clone()) {
                targets.insert(Authority::Galera, tx);
            }
        }
        let writer = Arc::new(Mutex::new(LocalWriterView::default()));
        if cfg.config.galera.is_some() {
            let (tx, rx) = watch::channel(driver.target(Authority::GaleraWriter).cloned());
            let io = WriterTaskIo {
                view: writer.clone(),
                metrics: metrics.clone(),
                kick: mariadb_kick,
            };
            if spawn_galera_writer(cfg, rx, io, shutdown.clone())? {
                targets.insert(Authority::GaleraWriter, tx);
            }
        }
        let web = Arc::new(Mutex::new(LocalWebView::default()));
        if cfg.config.web.is_some() {
            let (tx, rx) = watch::channel(driver.target(Authority::Web).cloned());
            if spawn_web(cfg, rx, (web.clone(), metrics.clone()), shutdown.clone()) {
                targets.insert(Authority::Web, tx);
            }
        }
        let remedy = Arc::new(Mutex::new(None));
        if cfg.remedy_settings().is_some() {
            let (tx, rx) = watch::channel(driver.target(Authority::Remedy).cloned());
            let io = RemedyTaskIo {
                report: remedy.clone(),
                changed: reconciled_changed.clone(),
                kick: phpfpm_kick,
                transport: transport.clone(),
                hooks: hooks.clone(),
            };
            if spawn_remedy(cfg, rx, io, shutdown.clone()) {
                targets.insert(Authority::Remedy, tx);
            }
        }
        let backup = Arc::new(Mutex::new(None));
        if cfg.config.backup.is_some() {
            let (tx, rx) = watch::channel(driver.target(Authority::Backup).cloned());
            if crate::backup::spawn(
                cfg,
                rx,
                transport.clone(),
                (backup.clone(), reconciled_changed.clone()),
                hooks.clone(),
                shutdown.clone(),
            )? {
                targets.insert(Authority::Backup, tx);
            }
        }
        let remedy_managed = targets.contains_key(&Authority::Remedy);
        Ok(LocalReconcilers {
            remedy_managed,
            backup,
            targets,
            redis,
            redis_managed: cfg.config.redis.is_some(),
            galera,
            galera_managed: cfg.config.galera.is_some(),
            writer,
            web,
            web_managed: cfg.config.web.is_some(),
            remedy,
            reconciled_changed,
        })
    }

    /// Notified each time the local Redis reconciler carried out a newer decision
    /// ([`LocalReconcilers::reconciled`] grew), or the backup runner's report changed: the
    /// event loop reports it at once.
    pub fn reconciled_changed(&self) -> Arc<tokio::sync::Notify> {
        self.reconciled_changed.clone()
    }

    /// Hands every reconciler the driver's current target (a send only on a change).
    pub fn publish(&self, driver: &Driver) {
        for (&authority, tx) in &self.targets {
            // Compared in place, cloned only when changed (this runs after every event).
            let target = driver.target(authority);
            tx.send_if_modified(|cur| {
                let changed = cur.as_ref() != target;
                if changed {
                    *cur = target.cloned();
                }
                changed
            });
        }
    }

    /// What the remediation task reports now.
    pub fn remedy_run(&self) -> Option<crate::cluster::RemedyRun> {
        self.remedy.lock().ok().and_then(|g| g.clone())
    }

    /// What the backup runner reports now.
    pub fn backup_run(&self) -> Option<crate::codec::BackupRun> {
        self.backup.lock().ok().and_then(|g| g.clone())
    }

    /// The newest decision carried out locally (Redis's; 0 before the first cycle).
    pub fn reconciled(&self) -> u64 {
        self.redis.lock().map_or(0, |v| v.reconciled_index)
    }

    /// Each managed service's side of the published status: for Redis, the leader's plan,
    /// the lease embargo and the local reconciler's view.
    pub fn views(&self, driver: &Driver) -> ServiceViews {
        ServiceViews {
            redis: self.redis_managed.then(|| RedisCoreView {
                plan: redis_plan(driver).cloned(),
                embargo: driver.embargo().iter().copied().collect(),
                local: self.redis.clone(),
            }),
            galera: self.galera_managed.then(|| GaleraCoreView {
                plan: galera_plan(driver).cloned(),
                local: self.galera.clone(),
            }),
            galera_writer: self.galera_managed.then(|| WriterCoreView {
                plan: writer_plan(driver).cloned(),
                local: self.writer.clone(),
            }),
            web: self.web_managed.then(|| WebCoreView {
                plan: web_plan(driver).cloned(),
                local: self.web.clone(),
            }),
            remedy: self.remedy_managed.then(|| RemedyCoreView {
                plan: remedy_plan(driver).cloned(),
                local: self.remedy.clone(),
            }),
        }
    }

    /// Whether `views` still shows what [`LocalReconcilers::views`] would build now, without
    /// building it (the event loop asks after every event).
    pub fn views_current(&self, views: &ServiceViews, driver: &Driver) -> bool {
        let galera = match (&views.galera, self.galera_managed) {
            (None, managed) => !managed,
            (Some(_), false) => false,
            (Some(g), true) => {
                g.plan.as_ref() == galera_plan(driver) && Arc::ptr_eq(&g.local, &self.galera)
            }
        };
        let writer = match (&views.galera_writer, self.galera_managed) {
            (None, managed) => !managed,
            (Some(_), false) => false,
            (Some(w), true) => {
                w.plan.as_ref() == writer_plan(driver) && Arc::ptr_eq(&w.local, &self.writer)
            }
        };
        let web = match (&views.web, self.web_managed) {
            (None, managed) => !managed,
            (Some(_), false) => false,
            (Some(w), true) => {
                w.plan.as_ref() == web_plan(driver) && Arc::ptr_eq(&w.local, &self.web)
            }
        };
        let remedy = match (&views.remedy, self.remedy_managed) {
            (None, managed) => !managed,
            (Some(_), false) => false,
            (Some(r), true) => {
                r.plan.as_ref() == remedy_plan(driver) && Arc::ptr_eq(&r.local, &self.remedy)
            }
        };
        galera
            && writer
            && web
            && remedy
            && match (&views.redis, self.redis_managed) {
                (None, managed) => !managed,
                (Some(_), false) => false,
                (Some(r), true) => {
                    r.plan.as_ref() == redis_plan(driver)
                        && r.embargo.iter().eq(driver.embargo().iter())
                        && Arc::ptr_eq(&r.local, &self.redis)
                }
            }
    }
}

/// The leader's latest Galera plan, as the driver has it.
fn galera_plan(driver: &Driver) -> Option<&crate::decide::galera::GaleraPlan> {
    driver
        .plan(Authority::Galera)
        .and_then(ServicePlan::as_galera)
}

/// What the remediation task shares with the rest of the agent.
struct RemedyTaskIo {
    /// Its report, read by the event loop for this agent's health reports.
    report: Arc<Mutex<Option<crate::cluster::RemedyRun>>>,
    /// Notified when the report changed (the event loop reports at once).
    changed: Arc<tokio::sync::Notify>,
    /// The local PHP-FPM probe's kick: checked at once after a restart.
    kick: Option<Arc<tokio::sync::Notify>>,
    /// The ping lease (a remediation starts only while this agent holds it).
    transport: Transport,
    /// The operator's hooks: the pre hook may veto a remediation.
    hooks: Option<Arc<crate::hooks::Hooks>>,
}

/// How this node repairs what a remediation lease names.
struct Repairs {
    me: NodeId,
    /// The gluster CLI (`[gluster] command`) and the volume, for a brick start.
    gluster: Option<(Vec<String>, String)>,
    control: Option<Arc<dyn crate::actuator::service::ServiceControl>>,
    remount_command: Option<Vec<String>>,
    mounts: Vec<std::path::PathBuf>,
    timeout: std::time::Duration,
    check_timeout: std::time::Duration,
}

impl Repairs {
    /// Carries out `l` on this node; `Ok` says what was done.
    async fn run(&self, l: &crate::cluster::RemedyLease) -> Result<String, String> {
        match l.action {
            RemedyAction::RestartPhpfpm => {
                let control = self
                    .control
                    .as_ref()
                    .ok_or("no service control ([services] control = \"none\")")?;
                control
                    .restart(ServiceName::Phpfpm.as_str(), &StartMode::Normal)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok("php-fpm restarted".into())
            }
            RemedyAction::StartBrick => self.start_brick(&l.target).await,
            RemedyAction::RestartGlusterd => self.restart_glusterd().await,
            RemedyAction::Remount => self.remount(&l.target).await,
        }
    }

    /// Mounts `target` (one of `[gluster] mounts`) again with `[gluster] remount_command`,
    /// bounded by the repair timeout; then it must be a FUSE mount where a write and a read
    /// work.
    async fn remount(&self, target: &str) -> Result<String, String> {
        let mount = self
            .mounts
            .iter()
            .find(|m| m.display().to_string() == target)
            .ok_or_else(|| format!("{} is not one of [gluster] mounts", target))?;
        let argv = self
            .remount_command
            .as_ref()
            .ok_or("no [gluster] remount_command")?;
        let unit = crate::helper_unit::escape_path(mount);
        let args: Vec<String> = argv
            .iter()
            .map(|a| {
                a.replace("{mount_unit}", &unit)
                    .replace("{mount}", &mount.display().to_string())
            })
            .collect();
        let (program, rest) = args.split_first().ok_or("empty remount_command")?;
        let out = tokio::time::timeout(
            self.timeout,
            tokio::process::Command::new(program)
                .args(rest)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| format!("{program} did not finish within {:?}", self.timeout))?
        .map_err(|e| format!("cannot run {program}: {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let err: String = err.trim().chars().take(300).collect();
            let how = match out.status.code() {
                Some(c) => format!("exit {c}"),
                None => "killed by a signal".into(),
            };
            return Err(format!("{program} failed ({how}): {err}"));
        }
        // A mount that did not come back leaves the bare directory, where a write
        // would succeed: it must be a FUSE mount again first.
        if !is_fuse_mount(mount) {
            return Err(format!(
                "{program} exited 0 but {} is not a FUSE mount",
                mount.display()
            ));
        }
        crate::probe::gluster::check_mount(mount, &self.me.to_string(), self.check_timeout).await?;
        Ok(format!(
            "{} mounted again, a write and a read work",
            mount.display()
        ))
    }

    /// `gluster --mode=script ARGS` (with `--xml` when `xml`), bounded by the repair timeout;
    /// its standard output, or why it failed.
    async fn gluster(&self, args: &[&str], xml: bool) -> Result<String, String> {
        let (cli, _) = self.gluster.as_ref().ok_or("no [gluster] section")?;
        tokio::time::timeout(self.timeout, crate::probe::gluster::run_cli(cli, args, xml))
            .await
            .map_err(|_| {
                format!(
                    "gluster {} did not finish within {:?}",
                    args.join(" "),
                    self.timeout
                )
            })?
            .map(|out| out.trim().to_string())
            .map_err(|e| e.message)
    }

    /// Restarts this node's glusterd through service control, then waits (bounded by the
    /// repair timeout) until the gluster CLI answers `peer status`.
    async fn restart_glusterd(&self) -> Result<String, String> {
        let control = self
            .control
            .as_ref()
            .ok_or("no service control ([services] control = \"none\")")?;
        control
            .restart(ServiceName::Glusterd.as_str(), &StartMode::Normal)
            .await
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.gluster(&["peer", "status"], true).await {
                Ok(_) => return Ok("glusterd restarted and answering".into()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!(
                        "glusterd restarted, but its CLI does not answer after {:?}: {e}",
                        self.timeout
                    ))
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(300)).await,
            }
        }
    }

    /// Starts this node's dead brick: `gluster volume start VOLUME force` starts only the
    /// bricks that are not running; then waits (bounded by the repair timeout) until `volume
    /// status` lists `brick` online.
    async fn start_brick(&self, brick: &str) -> Result<String, String> {
        let volume = self
            .gluster
            .as_ref()
            .map(|(_, v)| v.clone())
            .ok_or("no [gluster] section")?;
        // On fresh evidence: a volume an operator stopped is not started behind their back,
        // and a brick that came back needs nothing.
        let before = self
            .gluster(&["volume", "status", &volume, "detail"], true)
            .await
            .and_then(|x| crate::probe::gluster_xml::parse_volume_status(&x));
        match before {
            Ok(bricks) if bricks.iter().any(|b| b.name == brick && b.online) => {
                return Ok(format!("brick {brick} is online already; nothing done"));
            }
            Ok(_) => {}
            Err(e) if e.contains("not started") => {
                return Err(format!(
                    "volume {volume} is not started (stopped by an operator?): not starting it"
                ));
            }
            Err(e) => return Err(format!("volume status before the start failed: {e}")),
        }
        self.gluster(&["volume", "start", &volume, "force"], false)
            .await?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let status = self
                .gluster(&["volume", "status", &volume, "detail"], true)
                .await
                .and_then(|x| crate::probe::gluster_xml::parse_volume_status(&x));
            let why = match status {
                Ok(bricks) if bricks.iter().any(|b| b.name == brick && b.online) => {
                    return Ok(format!(
                        "brick {brick} started (gluster volume start {volume} force) and online"
                    ))
                }
                Ok(_) => format!("{brick} is not online in volume status"),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "gluster volume start {volume} force ran, but after {:?}: {why}",
                    self.timeout
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    }
}

/// Time a remediation's lease keeps for its report to reach the leader (the lease's bound
/// adds 10 s for it, see `Validated::remedy_settings`).
const REMEDY_REPORT_MARGIN: std::time::Duration = std::time::Duration::from_secs(8);

/// Runs the operator's pre hook for remediation `l` on this node: `Err` is the veto.
async fn pre_hook(
    hooks: Option<&Arc<crate::hooks::Hooks>>,
    l: &crate::cluster::RemedyLease,
    me: NodeId,
) -> Result<(), String> {
    let Some(h) = hooks.filter(|h| h.has_pre()) else {
        return Ok(());
    };
    let event = h.planned(
        crate::cluster::EventKind::Remediation,
        l.action.service(),
        &format!(
            "{}: {}",
            crate::cluster::describe_remedy(l.action, &l.target),
            l.reason
        ),
        l.id.0,
        vec![me],
    );
    let report = h.pre(&event).await;
    if report.outcome == crate::cluster::HookOutcome::Vetoed {
        return Err(format!("vetoed by the pre hook ({})", report.detail));
    }
    Ok(())
}

/// Whether `path` is a FUSE mount point in this process's mount namespace.
fn is_fuse_mount(path: &std::path::Path) -> bool {
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    text.lines().any(|l| {
        let mut f = l.split(' ');
        let (_, point, fstype) = (f.next(), f.next(), f.next());
        point.map(|p| p.replace("\\040", " ")) == Some(path.display().to_string())
            && fstype.is_some_and(|t| t.starts_with("fuse"))
    })
}

/// Starts the remediation task: every 500 ms and at once on a new target, one
/// [`RemedyRunner::cycle`]; a lease for this node is carried out (a PHP-FPM restart through
/// service control, bounded by `services.stop_timeout` for its stop and its start; a remount
/// with `[gluster] remount_command`, bounded by `services.stop_timeout`, then a write and a
/// read through the mount) and its result reported until the lease ends.
fn spawn_remedy(
    cfg: &Validated,
    mut targets: watch::Receiver<Option<ServiceTarget>>,
    io: RemedyTaskIo,
    shutdown: CancellationToken,
) -> bool {
    let c = &cfg.config;
    let repairs = Repairs {
        me: cfg.node_id(),
        gluster: c
            .gluster
            .as_ref()
            .map(|g| (g.command.clone(), g.volume.clone())),
        control: service_control(cfg),
        remount_command: c.gluster.as_ref().and_then(|g| g.remount_command.clone()),
        mounts: c
            .gluster
            .as_ref()
            .map(|g| g.mounts.clone())
            .unwrap_or_default(),
        timeout: c.services.stop_timeout,
        check_timeout: c
            .gluster
            .as_ref()
            .map_or(std::time::Duration::from_secs(2), |g| {
                g.mount_timing.resolve(&c.probes).timeout
            }),
    };
    let lease_ms = c.failover.lease;
    let quorum = cfg.members.len() / 2 + 1;
    let cfg_me = cfg.node_id();
    let mut runner = RemedyRunner::new(cfg.node_id());
    let marker_file = c.node.data_dir.join("remedy.started");
    let mut marker = read_remedy_marker(&marker_file);
    tokio::spawn(async move {
        let mut interval = crate::pace::interval(std::time::Duration::from_millis(500));
        while let Some(target) = next_target(
            &mut targets,
            &mut interval,
            &shutdown,
            ServiceTarget::as_remedy,
        )
        .await
        {
            let lease = io.transport.lease(lease_ms, quorum - 1);
            if let RemedyStep::Start(l) = runner.cycle(&target, marker, lease.valid) {
                // Durable before the action: a restarted agent never carries it out again.
                if let Err(e) = std::fs::write(&marker_file, format!("{}\n", l.id.0)) {
                    let detail =
                        format!("not started: cannot write {}: {e}", marker_file.display());
                    tracing::error!(id = %l.id, detail = %detail, "remediation not started");
                    runner.finished(l.id, false, detail);
                    publish_remedy(&io, runner.report());
                    continue;
                }
                marker = Some(l.id);
                publish_remedy(&io, runner.report());
                tracing::warn!(id = %l.id, action = l.action.as_str(), reason = %l.reason,
                    "remediation starts on this node");
                let started = Instant::now();
                let result = match pre_hook(io.hooks.as_ref(), &l, cfg_me).await {
                    Err(veto) => Err(veto),
                    // The hook took time: the ping lease must still be held to act.
                    Ok(()) if !io.transport.lease(lease_ms, quorum - 1).valid => Err(
                        "not started: this agent lost its ping lease while the pre hook ran"
                            .to_string(),
                    ),
                    Ok(()) => {
                        // Bounded by the lease's own time (less the report's margin): a
                        // repair still running when the leader expires its lease would run
                        // beside the next one.
                        let budget = std::time::Duration::from_millis(l.max_duration_ms)
                            .saturating_sub(REMEDY_REPORT_MARGIN)
                            .saturating_sub(started.elapsed());
                        match tokio::time::timeout(budget, repairs.run(&l)).await {
                            Ok(r) => r,
                            Err(_) => Err(format!(
                                "stopped after {budget:?}, its lease's time (less the report's)"
                            )),
                        }
                    }
                };
                let took = started.elapsed().as_millis();
                let (ok, detail) = match result {
                    Ok(what) => (true, format!("{what} in {took} ms")),
                    Err(e) => (
                        false,
                        format!(
                            "{} failed after {took} ms: {e}",
                            crate::cluster::describe_remedy(l.action, &l.target)
                        ),
                    ),
                };
                if ok {
                    tracing::warn!(id = %l.id, detail = %detail, "remediation done");
                } else {
                    tracing::error!(id = %l.id, detail = %detail, "remediation failed");
                }
                if let Some(k) = &io.kick {
                    k.notify_one();
                }
                runner.finished(l.id, ok, detail);
            }
            publish_remedy(&io, runner.report());
        }
    });
    true
}

/// The local HAProxy's backend of `role` as a reconciler's target (each member's server in
/// it), over the admin socket with `timeout` per command; `None` without `[haproxy]` or
/// without a backend of that role.
fn haproxy_target(
    cfg: &Validated,
    role: BackendRole,
    timeout: std::time::Duration,
) -> Option<HaproxyTarget> {
    let h = cfg.config.haproxy.as_ref()?;
    let backend = h.backend(role)?;
    let mut sock = HaproxySocket::new(&h.admin_socket, timeout);
    if let Some(f) = &h.state_file {
        sock = sock.with_state_file(f);
    }
    Some(HaproxyTarget {
        haproxy: Arc::new(sock),
        backend: backend.name.clone(),
        servers: cfg
            .members
            .iter()
            .map(|m| (m.id, backend.server(m.id)))
            .collect(),
        save_state: h.state_file.is_some(),
    })
}

/// The next cycle of a local reconciler that acts only on a target of its kind: waits for the
/// interval's tick or a new target, then answers the target `pick` finds (waiting on while
/// there is none). `None` ends the task: shutdown, or the driver is gone.
async fn next_target<T: Clone>(
    targets: &mut watch::Receiver<Option<ServiceTarget>>,
    interval: &mut crate::pace::Interval,
    shutdown: &CancellationToken,
    pick: fn(&ServiceTarget) -> Option<&T>,
) -> Option<T> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = interval.tick() => {}
            r = targets.changed() => if r.is_err() { return None },
        }
        if let Some(t) = targets.borrow().as_ref().and_then(pick).cloned() {
            return Some(t);
        }
    }
}

/// The newest remediation this node ever started, from its marker file (none when absent or
/// unreadable: a missing marker only means none was started).
fn read_remedy_marker(path: &std::path::Path) -> Option<crate::ids::RemedyId> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .map(crate::ids::RemedyId)
}

/// Shares the runner's report with the event loop, notifying it on a change.
fn publish_remedy(io: &RemedyTaskIo, report: Option<&crate::cluster::RemedyRun>) {
    if let Ok(mut r) = io.report.lock() {
        if r.as_ref() != report {
            *r = report.cloned();
            io.changed.notify_one();
        }
    }
}

/// The leader's latest remediation plan, as the driver has it.
fn remedy_plan(driver: &Driver) -> Option<&crate::decide::remedy::RemedyPlan> {
    driver
        .plan(Authority::Remedy)
        .and_then(ServicePlan::as_remedy)
}

/// The leader's latest web rotation plan, as the driver has it.
fn web_plan(driver: &Driver) -> Option<&crate::decide::web::WebPlan> {
    driver.plan(Authority::Web).and_then(ServicePlan::as_web)
}

/// Starts the web reconciler task: keeps the local HAProxy's `web-pool` backend on the
/// committed rotation, at once on a new target and every [`galera_writer::HAPROXY_RECHECK`]
/// (a change made behind the agent's back is undone then). Returns false without a
/// `web-pool` backend (the rotation is then only decided and shown).
fn spawn_web(
    cfg: &Validated,
    mut targets: watch::Receiver<Option<ServiceTarget>>,
    (view, metrics): (Arc<Mutex<LocalWebView>>, Metrics),
    shutdown: CancellationToken,
) -> bool {
    let timeout = cfg.config.failover.action_timeout;
    let Some(target) = haproxy_target(cfg, BackendRole::WebPool, timeout) else {
        return false;
    };
    let mut rec = WebReconciler::new(target, 1);
    let every = galera_writer::HAPROXY_RECHECK;
    tokio::spawn(async move {
        let mut interval = crate::pace::interval(every);
        let mut last_error: Option<String> = None;
        while let Some(target) = next_target(
            &mut targets,
            &mut interval,
            &shutdown,
            ServiceTarget::as_web,
        )
        .await
        {
            let report = rec.cycle(&target).await;
            if !report.haproxy_actions.is_empty() {
                metrics
                    .reconcile_actions
                    .with_label_values(&["haproxy_web"])
                    .inc_by(report.haproxy_actions.len() as u64);
                let drained: Vec<String> = target
                    .authority
                    .drained
                    .keys()
                    .map(ToString::to_string)
                    .collect();
                tracing::info!(actions = ?report.haproxy_actions, drained = ?drained,
                    epoch = %target.authority.epoch, "routed the local HAProxy's web backend");
            }
            if report.haproxy_error.is_some() {
                metrics
                    .reconcile_errors
                    .with_label_values(&["haproxy_web"])
                    .inc();
            }
            if report.haproxy_error != last_error {
                match &report.haproxy_error {
                    Some(e) => tracing::warn!(side = "haproxy_web", error = %e,
                        "web reconciliation failed; retrying"),
                    None => tracing::info!(side = "haproxy_web", "web reconciliation works again"),
                }
                last_error.clone_from(&report.haproxy_error);
            }
            if let Ok(mut v) = view.lock() {
                v.cycles += 1;
                v.last_cycle = Some(report);
            }
        }
    });
    true
}

/// The leader's latest Galera writer plan, as the driver has it.
fn writer_plan(driver: &Driver) -> Option<&crate::decide::galera_writer::WriterPlan> {
    driver
        .plan(Authority::GaleraWriter)
        .and_then(ServicePlan::as_galera_writer)
}

/// Starts the Galera writer reconciler task: every `galera.writer_interval` (and at once on
/// a new target) one [`WriterReconciler::cycle`]: the local node's state and evict list, and
/// the local HAProxy's `galera-writer` backend. A cycle that finds the local node's state
/// changed (Synced, Donor, refused...) kicks the local MariaDB probe, so the leader hears of
/// it within a report gap. Returns false without `[galera]` or `[mariadb] socket` (the admin
/// statements run over the local socket).
fn spawn_galera_writer(
    cfg: &Validated,
    mut targets: watch::Receiver<Option<ServiceTarget>>,
    io: WriterTaskIo,
    shutdown: CancellationToken,
) -> Result<bool, ConfigError> {
    let WriterTaskIo {
        view,
        metrics,
        kick,
    } = io;
    let me = cfg.node_id();
    let c = &cfg.config;
    let (Some(g), Some(socket)) = (&c.galera, c.mariadb.as_ref().and_then(|m| m.socket.clone()))
    else {
        return Ok(false);
    };
    let password = g
        .admin_password_file
        .as_deref()
        .map(|p| crate::config::read_secret(p, "galera.admin_password_file"))
        .transpose()?;
    let timeout = c.failover.action_timeout;
    let sql = Arc::new(MysqlGaleraSql::new(
        socket,
        g.admin_user.clone(),
        password,
        timeout,
    ));
    let haproxy = haproxy_target(cfg, BackendRole::GaleraWriter, timeout);
    let timer: Timer = Arc::new(|d| Box::pin(tokio::time::sleep(d)));
    let mut rec = WriterReconciler::new(me, sql, haproxy)
        .with_deadline(timeout, timer)
        .with_haproxy_recheck(galera_writer::cycles_per(
            galera_writer::HAPROXY_RECHECK,
            g.writer_interval,
        ))
        .with_evs_periods(&[
            (EvsPeriod::JoinRetrans, g.join_retrans_period),
            (EvsPeriod::Keepalive, g.keepalive_period),
        ]);
    let every = g.writer_interval;
    tokio::spawn(async move {
        let mut interval = crate::pace::interval(every);
        let mut last_errors: (Option<String>, Option<String>) = (None, None);
        let mut last_local: Option<(bool, Option<String>, bool)> = None;
        while let Some(target) = next_target(
            &mut targets,
            &mut interval,
            &shutdown,
            ServiceTarget::as_galera_writer,
        )
        .await
        {
            let report = rec.cycle(&target).await;
            // The local node turned Synced, Donor, refused...: the MariaDB probe checks at
            // once, so that the leader's writer decision (and readmission) need not wait for
            // its next interval.
            let local = (
                report.serving,
                report.local_state.clone(),
                report.local_error.is_some(),
            );
            if last_local.as_ref().is_some_and(|l| *l != local) {
                if let Some(k) = &kick {
                    k.notify_one();
                }
            }
            last_local = Some(local);
            for op in &report.evictions {
                let label = if op == "clear" { "clear" } else { "evict" };
                metrics
                    .galera_evictions_run
                    .with_label_values(&[label])
                    .inc();
                tracing::warn!(op = %op, epoch = %target.authority.epoch,
                    "galera evict list changed on the local node");
            }
            if !report.provider_options.is_empty() {
                tracing::info!(options = ?report.provider_options, "set Galera provider options on the local node");
            }
            if !report.haproxy_actions.is_empty() {
                metrics
                    .reconcile_actions
                    .with_label_values(&["haproxy_mysql"])
                    .inc_by(report.haproxy_actions.len() as u64);
                tracing::info!(actions = ?report.haproxy_actions, writer = ?target.authority.writer,
                    epoch = %target.authority.epoch, "routed the local HAProxy's MySQL backend");
            }
            for (side, err, last) in [
                ("galera_writer", &report.local_error, &mut last_errors.0),
                ("haproxy_mysql", &report.haproxy_error, &mut last_errors.1),
            ] {
                if err.is_some() {
                    metrics.reconcile_errors.with_label_values(&[side]).inc();
                }
                if err != last {
                    match err {
                        Some(e) => {
                            tracing::warn!(side, error = %e, "writer reconciliation failed; retrying")
                        }
                        None => tracing::info!(side, "writer reconciliation works again"),
                    }
                    last.clone_from(err);
                }
            }
            if let Ok(mut v) = view.lock() {
                v.cycles += 1;
                v.last_cycle = Some(report);
                v.last_cycle_at = Some(Instant::now());
            }
        }
    });
    Ok(true)
}

/// What the writer reconciler task shares with the rest of the agent.
struct WriterTaskIo {
    /// Its status view.
    view: Arc<Mutex<LocalWriterView>>,
    metrics: Metrics,
    /// The local MariaDB probe's kick: notified when a cycle finds the node's state changed.
    kick: Option<Arc<tokio::sync::Notify>>,
}

/// The leader's latest Redis plan, as the driver has it.
fn redis_plan(driver: &Driver) -> Option<&crate::decide::redis::RedisPlan> {
    driver
        .plan(Authority::Redis)
        .and_then(ServicePlan::as_redis)
}

/// Starts the Redis reconciler task: every `reconcile_interval` (and at once on a new target)
/// it checks the lease and runs one [`RedisReconciler::cycle`]. Returns false when this node has no
/// local Redis to reconcile (no `[redis]`, or no `redis_addr` for this node).
fn spawn_redis(
    cfg: &Validated,
    transport: Transport,
    mut targets: watch::Receiver<Option<ServiceTarget>>,
    (view, reconciled_changed): (Arc<Mutex<LocalRedisView>>, Arc<tokio::sync::Notify>),
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<bool, ConfigError> {
    let me = cfg.node_id();
    let c = &cfg.config;
    let Some(r) = &c.redis else {
        return Ok(false);
    };
    let fo = c.failover.clone();
    let addrs: BTreeMap<NodeId, std::net::SocketAddr> = cfg
        .members
        .iter()
        .filter_map(|m| Some((m.id, m.redis_addr?)))
        .collect();
    let Some(&local) = addrs.get(&me) else {
        return Ok(false);
    };
    let redis = Arc::new(RedisServer::from_config(local, r, &fo)?);
    let haproxy = haproxy_target(cfg, BackendRole::RedisMaster, fo.action_timeout);
    // Each side of a cycle (Redis, HAProxy) shares one `action_timeout`; with the lease
    // counted as lapsed once less than a full cycle of it is left, a cut-off agent has taken
    // HAProxy out of service and fenced its Redis within max(reconcile_interval,
    // 2 * action_timeout) of its lease running out (the config check's arithmetic).
    let timer: Timer = Arc::new(|d| Box::pin(tokio::time::sleep(d)));
    let mut rec =
        RedisReconciler::new(me, addrs, redis, haproxy).with_deadline(fo.action_timeout, timer);
    let quorum = cfg.members.len() / 2 + 1;
    let ping = c.raft.tick_interval * c.raft.ping_ticks as u32;
    let started = Instant::now();
    let now_ms = move || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut pacer = Pacer::new(fo.lease, ping * 2, fo.action_timeout, now_ms());
    tokio::spawn(async move {
        let mut interval = crate::pace::interval(fo.reconcile_interval);
        let mut last_errors: (Option<String>, Option<String>) = (None, None);
        // When the lease, unless renewed, stops being usable: a cycle runs then, not at the
        // next interval, so that a cut-off agent fences as soon as it may no longer serve.
        let mut lapse: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = interval.tick() => pacer.tick(),
                r = targets.changed() => if r.is_err() { break },
                _ = tokio::time::sleep_until(lapse.unwrap_or_else(tokio::time::Instant::now)),
                    if lapse.is_some() => {}
            }
            let lease = transport.lease(fo.lease, quorum - 1);
            lapse = crate::reconcile::usable_for(lease.valid, lease.remaining, fo.action_timeout)
                .map(|d| tokio::time::Instant::now() + d + std::time::Duration::from_millis(1));
            let target = targets
                .borrow()
                .as_ref()
                .and_then(ServiceTarget::as_redis)
                .cloned();
            let pace = pacer.next(target.as_ref(), lease.valid, lease.remaining, now_ms());
            let valid = pacer.lease_valid();
            metrics.lease_valid.set(i64::from(valid));
            let set_view = |f: &mut dyn FnMut(&mut LocalRedisView)| {
                if let Ok(mut v) = view.lock() {
                    v.lease_valid = valid;
                    v.lease_remaining_ms = lease.remaining.as_millis() as u64;
                    f(&mut v);
                }
            };
            let target = match pace {
                Pace::Skip => continue,
                Pace::Wait(why) => {
                    set_view(&mut |v| v.waiting = Some(why.into()));
                    continue;
                }
                Pace::Run(target) => target,
            };
            let report = rec.cycle(&target).await;
            let before = pacer.reconciled();
            let reconciled = pacer.done(&target, &report);
            if report.fenced_now {
                metrics.redis_fence_events.inc();
                tracing::warn!(lease = valid, epoch = %target.authority.epoch,
                    "fenced the local Redis (writes refused)");
            }
            if !report.redis_actions.is_empty() {
                metrics
                    .reconcile_actions
                    .with_label_values(&["redis"])
                    .inc_by(report.redis_actions.len() as u64);
                tracing::info!(actions = ?report.redis_actions, epoch = %target.authority.epoch,
                    lease = valid, "reconciled the local Redis");
            }
            if !report.haproxy_actions.is_empty() {
                metrics
                    .reconcile_actions
                    .with_label_values(&["haproxy"])
                    .inc_by(report.haproxy_actions.len() as u64);
                tracing::info!(actions = ?report.haproxy_actions, epoch = %target.authority.epoch,
                    lease = valid, "reconciled the local HAProxy");
            }
            for (side, err, last) in [
                ("redis", &report.redis_error, &mut last_errors.0),
                ("haproxy", &report.haproxy_error, &mut last_errors.1),
            ] {
                if err.is_some() {
                    metrics.reconcile_errors.with_label_values(&[side]).inc();
                }
                if err != last {
                    match err {
                        Some(e) => {
                            tracing::warn!(side, error = %e, "reconciliation failed; retrying")
                        }
                        None => tracing::info!(side, "reconciliation works again"),
                    }
                    last.clone_from(err);
                }
            }
            set_view(&mut |v| {
                v.cycles += 1;
                v.waiting = None;
                v.last_cycle = Some(report.clone());
                v.last_cycle_at = Some(Instant::now());
                v.reconciled_index = reconciled;
            });
            if reconciled != before {
                reconciled_changed.notify_one();
            }
        }
    });
    Ok(true)
}

/// What the Galera recovery task shares with the rest of the agent.
struct GaleraTaskIo {
    /// The health store (this agent's own checks).
    health: Arc<Mutex<HealthStore>>,
    /// The health store's clock.
    liveness: Arc<Liveness>,
    /// The status view it writes.
    view: Arc<Mutex<LocalGaleraView>>,
    /// The notes the local MariaDB probe reports.
    notes: GaleraNotes,
    /// Metrics.
    metrics: Metrics,
}

/// Starts the Galera recovery task: every `galera.reconcile_interval` (and at once on a new
/// target) it gathers the local facts, plans one step ([`GaleraRecovery::next`]) and carries
/// it out. Returns false when there is no service control to act with (`control = "none"`).
fn spawn_galera(
    cfg: &Validated,
    mut targets: watch::Receiver<Option<ServiceTarget>>,
    io: GaleraTaskIo,
    shutdown: CancellationToken,
) -> bool {
    let GaleraTaskIo {
        health,
        liveness,
        view,
        notes,
        metrics,
    } = io;
    let c = &cfg.config;
    let (Some(g), Some(db)) = (c.galera.clone(), c.mariadb.clone()) else {
        return false;
    };
    let Some(datadir) = db.datadir.clone() else {
        return false;
    };
    let Some(control) = service_control(cfg) else {
        if let Ok(mut v) = view.lock() {
            v.last_error = Some(
                "no service control ([services] control = \"none\"): Galera is not recovered"
                    .into(),
            );
        }
        return false;
    };
    let me = cfg.node_id();
    let members: Vec<NodeId> = cfg.members.iter().map(|m| m.id).collect();
    let settings = RecoverySettings {
        rejoin: g.rejoin,
        backoff_ms: u64::try_from(g.restart_backoff.as_millis()).unwrap_or(u64::MAX),
        max_per_hour: g.restarts_per_hour,
        restart_non_primary_after_ms: u64::try_from(g.restart_non_primary_after.as_millis())
            .unwrap_or(u64::MAX),
        unit_recovers: c.services.control == ServiceControlKind::Systemd,
    };
    let mut spec = RecoverSpec::new(&g.defaults_file);
    spec.mariadbd.clone_from(&g.mariadbd);
    spec.user.clone_from(&g.recover_user);
    spec.socket.clone_from(&db.socket);
    spec.timeout = g.recover_timeout;
    spec.unit = g
        .recover_unit
        .as_ref()
        .map(|unit| HelperUnit::new(unit, &cfg.config.node.data_dir));
    spec.pidfile = c
        .services
        .process
        .get(ServiceName::Mariadb.as_str())
        .map(|p| p.pidfile.clone());
    let admin_password = g
        .admin_password_file
        .as_deref()
        .and_then(|f| crate::config::read_secret(f, "galera.admin_password_file").ok());
    let freshness = u64::try_from(g.freshness.as_millis()).unwrap_or(u64::MAX);
    let mut planner = GaleraRecovery::new(me, members.len(), settings);
    let service = ServiceName::Mariadb.as_str();
    let exec = GaleraExec {
        control: Arc::clone(&control),
        spec,
        datadir: datadir.clone(),
        db,
        admin_user: g.admin_user.clone(),
        admin_password,
        metrics: metrics.clone(),
        started: Instant::now(),
    };
    tokio::spawn(async move {
        let mut interval = crate::pace::interval(g.reconcile_interval);
        let mut last_logged = String::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = interval.tick() => {}
                r = targets.changed() => if r.is_err() { break },
            }
            let target = targets
                .borrow()
                .as_ref()
                .and_then(ServiceTarget::as_galera)
                .cloned();
            let state = tokio::time::timeout(g.recover_timeout, control.state(service)).await;
            let mut process = match &state {
                Ok(Ok(ServiceState::Running { .. })) => ProcessState::Running,
                Ok(Ok(ServiceState::Stopped | ServiceState::Failed { .. })) => {
                    ProcessState::Stopped
                }
                _ => ProcessState::Unknown,
            };
            let now = exec.now_ms();
            // What this agent's own checks say (aged on the health store's clock, the
            // event loop's `Liveness`).
            let checks = local_checks(&health, me, &members, freshness, liveness.mono_ms());
            let grastate = match read_grastate(&datadir) {
                Ok(Some(gs)) => GrastateEvidence::Present {
                    uuid: gs.uuid,
                    seqno: gs.seqno,
                    safe_to_bootstrap: gs.safe_to_bootstrap,
                },
                Ok(None) => GrastateEvidence::Missing,
                Err(e) => GrastateEvidence::Unreadable {
                    error: e.to_string(),
                },
            };
            let facts = checks.into_facts(now, process, grastate.clone());
            process = facts.process;
            let step = planner.next(target.as_ref(), &facts);
            if step.why() != last_logged {
                if step.is_action() {
                    tracing::warn!(step = ?step, "galera recovery");
                } else {
                    tracing::info!(doing = %step.why(), "galera recovery");
                }
                last_logged = step.why().to_string();
            }
            let (error, now_running) = exec.execute(&step, &grastate, &mut planner).await;
            if now_running {
                // Reported as running from now on (not as this cycle's stopped): the leader
                // reads a stopped node that says it bootstrapped as a bootstrap that fell.
                process = ProcessState::Running;
            }
            if let Some(e) = &error {
                tracing::warn!(error = %e, step = ?step, "galera recovery step failed");
            }
            let rv = planner.view(exec.now_ms());
            metrics.galera_restart_capped.set(i64::from(rv.capped));
            if let Ok(mut n) = notes.lock() {
                n.service = match process {
                    ProcessState::Running => Some("running"),
                    ProcessState::Stopped => Some("stopped"),
                    ProcessState::Unknown => None,
                };
                n.recovered = planner.recovered_position().cloned();
                n.bootstrapped = rv.bootstrapped;
            }
            if let Ok(mut v) = view.lock() {
                v.cycles += 1;
                v.process = Some(process);
                v.step = Some(step.clone());
                v.recovery = rv;
                if error.is_some() {
                    v.last_error = error;
                }
            }
        }
    });
    true
}

/// What carries out the local Galera recovery's steps.
struct GaleraExec {
    control: Arc<dyn crate::actuator::service::ServiceControl>,
    spec: RecoverSpec,
    datadir: std::path::PathBuf,
    db: MariadbSection,
    admin_user: String,
    admin_password: Option<String>,
    metrics: Metrics,
    /// When the task started: the planner's monotonic ms count from it.
    started: Instant,
}

impl GaleraExec {
    /// The planner's monotonic ms.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Carries out one step and tells the planner; returns the error, if any, and whether
    /// mariadbd was just started.
    async fn execute(
        &self,
        step: &Step,
        grastate: &GrastateEvidence,
        planner: &mut GaleraRecovery,
    ) -> (Option<String>, bool) {
        let service = ServiceName::Mariadb.as_str();
        let mut now_running = false;
        let mut error = None;
        match step {
            Step::Idle { .. } => {}
            Step::Recover { .. } => match recover_position(&self.spec).await {
                Ok(p) => {
                    tracing::info!(position = %p, "galera: recovered the local position");
                    planner.recovered(GaleraPosition {
                        uuid: p.uuid,
                        seqno: p.seqno,
                    });
                }
                Err(e) => {
                    self.metrics
                        .galera_recovery_errors
                        .with_label_values(&["recover"])
                        .inc();
                    planner.recover_failed(e.to_string(), self.now_ms());
                    error = Some(format!("--wsrep-recover: {e}"));
                }
            },
            Step::Start { kind, position, .. } => {
                let safe = *kind == StartKind::NewCluster;
                let has_file = matches!(grastate, GrastateEvidence::Present { .. });
                let flagged = match grastate {
                    GrastateEvidence::Present {
                        safe_to_bootstrap, ..
                    } => *safe_to_bootstrap,
                    _ => false,
                };
                let mut ok = true;
                if has_file && flagged != safe {
                    if let Err(e) = set_safe_to_bootstrap(&self.datadir, safe) {
                        // Setting it is required for a bootstrap (mariadbd refuses
                        // otherwise); clearing it before a join is hygiene only.
                        error = Some(format!("grastate.dat: {e}"));
                        ok = !safe;
                    }
                }
                if ok {
                    let mode = match (kind, position) {
                        (StartKind::NewCluster, p) => StartMode::GaleraBootstrap {
                            position: p.clone(),
                        },
                        (StartKind::Join, Some(p)) => StartMode::GaleraRejoin {
                            position: p.clone(),
                        },
                        (StartKind::Join, None) => StartMode::Normal,
                    };
                    let label = match kind {
                        StartKind::Join => "join",
                        StartKind::NewCluster => "new_cluster",
                    };
                    self.metrics
                        .galera_restarts
                        .with_label_values(&[label])
                        .inc();
                    match self.control.start(service, &mode).await {
                        // Reported as running from now on (not as this cycle's stopped):
                        // the leader reads a stopped node that says it bootstrapped as a
                        // bootstrap that fell.
                        Ok(()) => now_running = true,
                        Err(e) => error = Some(e.to_string()),
                    }
                }
                if error.is_some() {
                    self.metrics
                        .galera_recovery_errors
                        .with_label_values(&["start"])
                        .inc();
                }
                planner.started(step, self.now_ms());
            }
            Step::PcBootstrap { .. } => {
                match pc_bootstrap(&self.db, &self.admin_user, self.admin_password.as_deref()).await
                {
                    Ok(()) => planner.started(step, self.now_ms()),
                    Err(e) => {
                        self.metrics
                            .galera_recovery_errors
                            .with_label_values(&["pc_bootstrap"])
                            .inc();
                        error = Some(e);
                    }
                }
            }
            Step::Stop { .. } => {
                if let Err(e) = self.control.stop(service).await {
                    self.metrics
                        .galera_recovery_errors
                        .with_label_values(&["stop"])
                        .inc();
                    error = Some(e.to_string());
                }
                planner.started(step, self.now_ms());
            }
        }
        (error, now_running)
    }
}

/// This agent's own fresh checks of its own node and of its peers.
fn local_checks(
    health: &Arc<Mutex<HealthStore>>,
    me: NodeId,
    members: &[NodeId],
    freshness_ms: u64,
    now: u64,
) -> PeerChecks {
    match health.lock() {
        Ok(h) => PeerChecks::from_seen(&h.all(now), me, members, freshness_ms),
        Err(_) => PeerChecks::default(),
    }
}

/// `SET GLOBAL wsrep_provider_options='pc.bootstrap=YES'` over the local socket.
async fn pc_bootstrap(
    db: &MariadbSection,
    user: &str,
    password: Option<&str>,
) -> Result<(), String> {
    use mysql_async::prelude::Queryable;
    let Some(socket) = &db.socket else {
        return Err("pc.bootstrap needs [mariadb] socket (the local server's)".into());
    };
    let opts = mysql_async::OptsBuilder::default()
        .user(Some(user))
        .pass(password)
        .socket(Some(socket.to_string_lossy().into_owned()))
        .prefer_socket(true);
    let run = async {
        let mut conn = mysql_async::Conn::new(opts).await?;
        conn.query_drop("SET GLOBAL wsrep_provider_options='pc.bootstrap=YES'")
            .await?;
        conn.disconnect().await
    };
    match tokio::time::timeout(std::time::Duration::from_secs(10), run).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!(
            "pc.bootstrap as {user} on {}: {e} (galera.admin_user needs SUPER)",
            socket.display()
        )),
        Err(_) => Err(format!(
            "pc.bootstrap on {}: no answer within 10s",
            socket.display()
        )),
    }
}

/// How long the exit watch waits before reading a service's state again when it is not
/// running, or after an exit (a restart takes at least this long anyway).
const EXIT_WATCH_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// After a peer's Redis connection ended, when the peer watch kicks its checks a second time.
const PEER_RECHECK: std::time::Duration = std::time::Duration::from_millis(25);

/// The kicks of the probes that [`spawn_watches`] watches.
pub struct ProbeKicks {
    /// By probe: what `probe::runner::spawn_all` takes.
    pub by_probe: BTreeMap<crate::probe::ProbeId, Arc<tokio::sync::Notify>>,
    /// The local MariaDB probe's, also for the writer reconciler ([`LocalShared`]).
    pub mariadb: Option<Arc<tokio::sync::Notify>>,
    /// The local PHP-FPM probe's, also for the remediation task ([`LocalShared`]).
    pub phpfpm: Option<Arc<tokio::sync::Notify>>,
}

/// Starts the exit watch of the local mariadbd and redis-server ([`spawn_exit_watch`]) and the
/// connection watch of the peers' Redis ([`spawn_peer_watch`]), and returns the kick of each
/// probe they watch.
pub fn spawn_watches(cfg: &Validated, shutdown: &CancellationToken) -> ProbeKicks {
    let mut by_probe = BTreeMap::new();
    let mut local = BTreeMap::new();
    for (service, id) in exit_watch_kicks(cfg) {
        let kick = Arc::new(tokio::sync::Notify::new());
        by_probe.insert(id, kick.clone());
        local.insert(service, kick);
    }
    let mut peers = Vec::new();
    // A peer's Redis ending is checked at once, and so is the local one: when the peer was
    // the master, the local replica's link just went down, and the decision waits until no
    // replica reports its link up.
    let local_redis = local.get(&ServiceName::Redis).cloned();
    for (id, addr) in peer_watch_targets(cfg) {
        let kick = Arc::new(tokio::sync::Notify::new());
        by_probe.insert(id, kick.clone());
        peers.push((
            addr,
            [Some(kick), local_redis.clone()]
                .into_iter()
                .flatten()
                .collect(),
        ));
    }
    let mariadb = local.get(&ServiceName::Mariadb).cloned();
    let phpfpm = local.get(&ServiceName::Phpfpm).cloned();
    spawn_exit_watch(cfg, local, shutdown);
    spawn_peer_watch(peers, shutdown);
    ProbeKicks {
        by_probe,
        mariadb,
        phpfpm,
    }
}

/// The local probes to check at once when a watched process exits: this node's MariaDB,
/// Redis, PHP-FPM and GlusterFS volume checks, by the service control name that runs each.
fn exit_watch_kicks(cfg: &Validated) -> BTreeMap<ServiceName, crate::probe::ProbeId> {
    let me = cfg.node_id();
    let mut out = BTreeMap::new();
    let id = |service| crate::probe::ProbeId {
        subject: me,
        service,
        target: String::new(),
    };
    if cfg.config.mariadb.is_some() {
        out.insert(ServiceName::Mariadb, id(crate::probe::Service::Mariadb));
    }
    if cfg.config.redis.is_some() {
        out.insert(ServiceName::Redis, id(crate::probe::Service::Redis));
    }
    if cfg.config.phpfpm.is_some() {
        out.insert(ServiceName::Phpfpm, id(crate::probe::Service::Phpfpm));
    }
    if let Some(g) = &cfg.config.gluster {
        out.insert(
            ServiceName::Glusterd,
            crate::probe::ProbeId {
                subject: me,
                service: crate::probe::Service::Gluster,
                target: g.volume.clone(),
            },
        );
    }
    out
}

/// Starts one exit watch per entry of `kicks` whose service this node's service control
/// runs: it reads the service's main pid, waits for that process to exit
/// ([`process_exit`](crate::actuator::service::process_exit): a pidfd, no polling while it
/// runs) and then notifies the kick, so that the service's local probe checks at once. A
/// `kill -9` of mariadbd or redis-server is then reported within a report gap instead of up
/// to a probe interval later, which is most of the time to evict a dead Galera node or to
/// fail over a dead Redis master. Without service control (or for a service it does not run)
/// nothing is watched and the probes' own interval applies.
fn spawn_exit_watch(
    cfg: &Validated,
    kicks: BTreeMap<ServiceName, Arc<tokio::sync::Notify>>,
    shutdown: &CancellationToken,
) {
    let Some(control) = service_control(cfg) else {
        return;
    };
    // A stop's own bound (SIGTERM, then SIGKILL after `stop_timeout`), and room for the kill.
    let leftovers_within = cfg.config.services.stop_timeout + std::time::Duration::from_secs(5);
    for (service, kick) in kicks {
        let control = Arc::clone(&control);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let name = service.as_str();
            let mut last_exit: Option<u32> = None;
            loop {
                let state = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    s = tokio::time::timeout(std::time::Duration::from_secs(10), control.state(name)) => s,
                };
                match state {
                    Ok(Ok(ServiceState::Running { pid: Some(pid) })) if last_exit != Some(pid) => {
                        let exited = tokio::select! {
                            _ = shutdown.cancelled() => return,
                            r = crate::actuator::service::process_exit(pid) => r,
                        };
                        match exited {
                            Ok(()) => {
                                tracing::info!(
                                    service = name,
                                    pid,
                                    "process exited: checking it at once"
                                );
                                kick.notify_one();
                                // Its leftovers (php-fpm's workers) go too, so that the probe
                                // sees what the service manager sees: nothing runs. Then the
                                // probe checks again.
                                let ended = tokio::time::timeout(
                                    leftovers_within,
                                    control.end_leftovers(name),
                                )
                                .await;
                                match ended {
                                    Ok(Ok(())) => {}
                                    Ok(Err(e)) => tracing::warn!(service = name, pid, error = %e,
                                        "cannot end what is left of the exited process"),
                                    Err(_) => {
                                        tracing::warn!(service = name, pid,
                                        "ending what is left of the exited process took over 15 s")
                                    }
                                }
                                kick.notify_one();
                                last_exit = Some(pid);
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                                kick.notify_one();
                                last_exit = Some(pid);
                            }
                            Err(e) => {
                                tracing::warn!(service = name, pid, error = %e,
                                    "cannot watch the process for its exit; its probe's interval applies");
                                return;
                            }
                        }
                    }
                    Ok(Err(crate::actuator::service::ServiceError::Unknown(_))) => return,
                    _ => {}
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(EXIT_WATCH_POLL) => {}
                }
            }
        });
    }
}

/// The peers' Redis servers this agent probes (`redis.cross_check`), by the probe that
/// checks each: what [`spawn_peer_watch`] watches.
fn peer_watch_targets(cfg: &Validated) -> Vec<(crate::probe::ProbeId, std::net::SocketAddr)> {
    let me = cfg.node_id();
    if !cfg.config.redis.as_ref().is_some_and(|r| r.cross_check) {
        return Vec::new();
    }
    cfg.members
        .iter()
        .filter(|m| m.id != me)
        .filter_map(|m| {
            let id = crate::probe::ProbeId {
                subject: m.id,
                service: crate::probe::Service::Redis,
                target: String::new(),
            };
            Some((id, m.redis_addr?))
        })
        .collect()
}

/// Starts one connection watch per peer Redis: it keeps one idle TCP connection to the
/// server (Redis sends nothing unasked and keeps idle clients by default) and notifies the
/// kick of that server's probe when the connection ends. When a peer's redis-server exits,
/// its kernel closes the connection at once, so this agent's check of it runs then instead
/// of at its next interval: the leader gets every agent's refusal within a report gap. Each
/// entry's kicks are notified together, and again after [`PEER_RECHECK`]. A
/// network cut ends nothing (the probes' timeouts see that); a connection that cannot be
/// made is retried every [`EXIT_WATCH_POLL`]. A kick is only a check: it decides nothing.
pub fn spawn_peer_watch(
    targets: Vec<(std::net::SocketAddr, Vec<Arc<tokio::sync::Notify>>)>,
    shutdown: &CancellationToken,
) {
    for (addr, kicks) in targets {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    c = tokio::time::timeout(
                        std::time::Duration::from_secs(1),
                        tokio::net::TcpStream::connect(addr),
                    ) => c,
                };
                if let Ok(Ok(mut stream)) = conn {
                    let mut buf = [0u8; 64];
                    let ended = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        r = tokio::io::AsyncReadExt::read(&mut stream, &mut buf) => r,
                    };
                    tracing::debug!(%addr, ?ended, "peer redis connection ended: checking it at once");
                    for kick in &kicks {
                        kick.notify_one();
                    }
                    // Once more a moment later: the local replica may not have handled its
                    // own link's end yet when the first check reads it.
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(PEER_RECHECK) => {}
                    }
                    for kick in &kicks {
                        kick.notify_one();
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(EXIT_WATCH_POLL) => {}
                }
            }
        });
    }
}
