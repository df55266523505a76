//! Starting each service of a node and waiting until it serves: shared by `up` (first start)
//! and `start` (after a fault).
//!
//! Readiness is checked the way a client would see it (Galera Synced and Primary, Redis
//! answering PING, the pool's port accepting, HAProxy's admin socket answering, glusterd
//! answering its CLI, the agent's `GET /live`), every wait bounded, and a daemon that dies
//! while we wait fails the start at once with the tail of its log.
//!
//! MariaDB has four ways in: [`MariadbStart::NewCluster`] (`up`'s first node),
//! [`MariadbStart::Join`] (an empty datadir filled by rsync SST), [`MariadbStart::Rejoin`]
//! (after a crash: `mariadbd --wsrep-recover` first, then `--wsrep_start_position`, so the node
//! catches up by IST in seconds instead of a full SST) and [`MariadbStart::Bootstrap`] (a new
//! cluster from existing data after a full crash: recovered position, `safe_to_bootstrap: 1`).
//!
//! Caveat: `start` of a brick runs `volume start shop force` through the node's glusterd,
//! which (re)starts every missing brick of that node only; it needs glusterd running there.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use super::agent_config::agent_config;
use super::process::{
    self, in_netns, launch, log_tail, netns_inode, netns_inode_of_pid, read_pidfile, run_ok, ProcId,
};
use super::query::{self, galera_status, redis};
use super::spec::{LabSpec, Service, GLUSTER_VOLUME};
use crate::poll_until;

/// Polling interval of readiness waits.
pub const READY_POLL: Duration = Duration::from_millis(100);

/// How a MariaDB node enters the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MariadbStart {
    /// Start a new cluster here from freshly installed system tables (`up`).
    NewCluster,
    /// Start a new cluster here (`--wsrep-new-cluster`), after marking the node safe to
    /// bootstrap and passing its recovered position.
    Bootstrap,
    /// Join with an empty datadir (state transfer by rsync SST).
    Join,
    /// Rejoin with existing data: recover the position, then start from it (IST).
    Rejoin,
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Fails when `id` died, with the tail of `log`.
fn check_alive(id: ProcId, what: &str, log: &Path) -> std::result::Result<(), String> {
    if id.is_alive() {
        Ok(())
    } else {
        Err(format!(
            "{what} (pid {}) exited; last lines of {}:\n{}",
            id.pid,
            log.display(),
            log_tail(log, 20)
        ))
    }
}

/// Waits for `probe` while `id` lives; a death ends the wait at once with the log tail. On
/// failure the launched process group is killed, so a failed start leaves nothing running
/// that the state file does not know about.
fn wait_serving<T>(
    id: ProcId,
    what: &str,
    log: &Path,
    timeout: Duration,
    mut probe: impl FnMut() -> std::result::Result<T, String>,
) -> Result<T> {
    let mut died = None;
    let res = poll_until(what, timeout, READY_POLL, || {
        if let Err(e) = check_alive(id, what, log) {
            died = Some(e);
            return Ok(None);
        }
        probe().map(Some)
    });
    let err = match (res, died) {
        (Ok(Some(v)), _) => return Ok(v),
        (Ok(None), Some(e)) => anyhow!(e),
        (Ok(None), None) => anyhow!("{what}: stopped waiting"),
        (Err(e), _) => anyhow!(
            "{e:#}\nlast lines of {}:\n{}",
            log.display(),
            log_tail(log, 10)
        ),
    };
    if id.is_alive() {
        let _ = id.signal_group(process::Signal::Kill);
        if process::wait_gone(&[id], Duration::from_secs(5)).is_empty() {
            return Err(err.context(format!("killed the new process (pid {}) again", id.pid)));
        }
    }
    Err(err)
}

/// Whether a TCP connection from the host to `addr` opens within `timeout` (the host reaches
/// every node through the bridge).
pub fn tcp_open(addr: SocketAddr, timeout: Duration) -> bool {
    TcpStream::connect_timeout(&addr, timeout).is_ok()
}

// ----- MariaDB ----------------------------------------------------------------------------

/// Creates node `n`'s system tables (`mariadb-install-db`), for the bootstrap node only; the
/// joiners start from an empty datadir that SST fills.
pub fn mariadb_install_db(lab: &LabSpec, n: u64) -> Result<()> {
    let mut cmd = std::process::Command::new("mariadb-install-db");
    // --defaults-file must come first.
    cmd.arg(format!(
        "--defaults-file={}",
        s(&lab.mysql_defaults_file(n))
    ))
    .args([
        "--user=mysql",
        "--skip-test-db",
        "--auth-root-authentication-method=socket",
    ]);
    run_ok(&mut cmd, None, Duration::from_secs(60))
        .with_context(|| format!("mariadb-install-db for n{n}"))?;
    Ok(())
}

/// Runs `mariadbd --wsrep-recover` for node `n` and returns `UUID:SEQNO`, the last committed
/// position in its datadir (`None` when it has no Galera state yet).
pub fn mariadb_recover_position(lab: &LabSpec, n: u64) -> Result<Option<String>> {
    let mut cmd = in_netns(&lab.netns(n), "mariadbd");
    cmd.arg(format!(
        "--defaults-file={}",
        s(&lab.mysql_defaults_file(n))
    ))
    .args(["--user=mysql", "--wsrep-recover", "--disable-log-error"]);
    let out = process::run(&mut cmd, None, Duration::from_secs(60))?;
    if !out.success() {
        bail!("mariadbd --wsrep-recover on n{n} failed: {}", out.failure());
    }
    let text = format!("{}\n{}", out.stdout, out.stderr);
    Ok(text.lines().find_map(|l| {
        let pos = l.split("WSREP: Recovered position:").nth(1)?.trim();
        (!pos.is_empty() && !pos.ends_with(":-1")).then(|| pos.to_string())
    }))
}

/// Sets `safe_to_bootstrap: 1` in node `n`'s grastate.dat (only ever for the node chosen to
/// bootstrap).
pub fn mark_safe_to_bootstrap(lab: &LabSpec, n: u64) -> Result<()> {
    let path = lab.grastate_file(n);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let edited: String = text
        .lines()
        .map(|l| {
            if l.starts_with("safe_to_bootstrap:") {
                "safe_to_bootstrap: 1".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    std::fs::write(&path, edited).with_context(|| format!("cannot write {}", path.display()))
}

/// Starts node `n`'s MariaDB as `how` and waits until it is Synced and Primary in a cluster of
/// at least `min_size` (the bootstrap node: 1).
pub fn start_mariadb(
    lab: &LabSpec,
    n: u64,
    how: MariadbStart,
    min_size: u32,
    timeout: Duration,
) -> Result<ProcId> {
    let mut argv = vec![
        "mariadbd".to_string(),
        format!("--defaults-file={}", s(&lab.mysql_defaults_file(n))),
    ];
    match how {
        MariadbStart::NewCluster => argv.push("--wsrep-new-cluster".to_string()),
        MariadbStart::Bootstrap => {
            if let Some(pos) = mariadb_recover_position(lab, n)? {
                argv.push(format!("--wsrep_start_position={pos}"));
                mark_safe_to_bootstrap(lab, n)?;
            }
            argv.push("--wsrep-new-cluster".to_string());
        }
        MariadbStart::Join => {}
        MariadbStart::Rejoin => {
            if let Some(pos) = mariadb_recover_position(lab, n)? {
                argv.push(format!("--wsrep_start_position={pos}"));
            }
        }
    }
    let log = lab.mysql_log(n);
    let id = launch(
        &lab.netns(n),
        &argv,
        &lab.launch_log(n, Service::Mariadb),
        &[],
    )?;
    write_service_pidfile(lab, n, Service::Mariadb, id)?;
    let what = format!("MariaDB on n{n} Synced and Primary");
    wait_serving(id, &what, &log, timeout, || {
        match galera_status(lab, n, Duration::from_secs(3)) {
            Ok(g)
                if g.state == "Synced"
                    && g.cluster_status == "Primary"
                    && g.ready
                    && g.size >= min_size =>
            {
                Ok(())
            }
            Ok(g) => Err(g.to_string()),
            Err(e) => Err(format!("{e:#}")),
        }
    })?;
    Ok(id)
}

// ----- Redis ------------------------------------------------------------------------------

/// Starts node `n`'s Redis and waits until it answers PING.
pub fn start_redis(lab: &LabSpec, n: u64, timeout: Duration) -> Result<ProcId> {
    let argv = vec!["redis-server".to_string(), s(&lab.redis_conf(n))];
    let id = launch(
        &lab.netns(n),
        &argv,
        &lab.launch_log(n, Service::Redis),
        &[],
    )?;
    write_service_pidfile(lab, n, Service::Redis, id)?;
    wait_serving(
        id,
        &format!("Redis on n{n} to answer PING"),
        &lab.redis_log(n),
        timeout,
        || match redis(lab, n, &["ping"], Duration::from_secs(2)) {
            Ok(t) if t.trim() == "PONG" => Ok(()),
            Ok(t) => Err(t.trim().to_string()),
            Err(e) => Err(format!("{e:#}")),
        },
    )?;
    Ok(id)
}

/// Waits until node `n`'s Redis replica reports `master_link_status:up`.
pub fn wait_redis_linked(lab: &LabSpec, n: u64, timeout: Duration) -> Result<()> {
    poll_until(
        &format!("Redis replica n{n} linked to its master"),
        timeout,
        READY_POLL,
        || match query::redis_role(lab, n, Duration::from_secs(2)) {
            Ok(r) if r.link.as_deref() == Some("up") => Ok(()),
            Ok(r) => Err(r.to_string()),
            Err(e) => Err(format!("{e:#}")),
        },
    )
}

// ----- PHP-FPM, HAProxy -------------------------------------------------------------------

/// Validates and starts node `n`'s PHP-FPM pool and waits until its port accepts.
pub fn start_phpfpm(lab: &LabSpec, n: u64, timeout: Duration) -> Result<ProcId> {
    let conf = s(&lab.phpfpm_conf(n));
    let mut check = std::process::Command::new("php-fpm8.2");
    check.args(["-t", "-y", &conf]);
    run_ok(&mut check, None, Duration::from_secs(10))
        .with_context(|| format!("PHP-FPM config of n{n}"))?;
    let argv = vec![
        "php-fpm8.2".to_string(),
        "-F".to_string(),
        "-y".to_string(),
        conf,
    ];
    let id = launch(
        &lab.netns(n),
        &argv,
        &lab.launch_log(n, Service::Phpfpm),
        &[],
    )?;
    write_service_pidfile(lab, n, Service::Phpfpm, id)?;
    let addr = lab.phpfpm_addr(n);
    wait_serving(
        id,
        &format!("PHP-FPM on n{n} to accept on {addr}"),
        &lab.phpfpm_log(n),
        timeout,
        || {
            if tcp_open(addr, Duration::from_millis(500)) {
                Ok(())
            } else {
                Err("port closed".to_string())
            }
        },
    )?;
    Ok(id)
}

/// Validates and starts node `n`'s HAProxy (master-worker) and waits until its admin socket
/// answers.
pub fn start_haproxy(lab: &LabSpec, n: u64, timeout: Duration) -> Result<ProcId> {
    let cfg = s(&lab.haproxy_cfg(n));
    let mut check = std::process::Command::new("haproxy");
    check.args(["-c", "-q", "-f", &cfg]);
    run_ok(&mut check, None, Duration::from_secs(10))
        .with_context(|| format!("HAProxy config of n{n}"))?;
    let argv = vec![
        "haproxy".to_string(),
        "-W".to_string(),
        "-S".to_string(),
        s(&lab.haproxy_master_socket(n)),
        "-f".to_string(),
        cfg,
        "-p".to_string(),
        s(&lab.haproxy_dir(n).join("haproxy.pid")),
    ];
    let id = launch(
        &lab.netns(n),
        &argv,
        &lab.launch_log(n, Service::Haproxy),
        &[],
    )?;
    wait_serving(
        id,
        &format!("HAProxy on n{n}: admin socket answering"),
        &lab.haproxy_log(n),
        timeout,
        || match query::haproxy(lab, n, "show info", Duration::from_secs(1)) {
            Ok(t) if t.contains("Pid:") => Ok(()),
            Ok(t) => Err(t),
            Err(e) => Err(format!("{e:#}")),
        },
    )?;
    Ok(id)
}

// ----- Gluster ----------------------------------------------------------------------------

/// Starts node `n`'s glusterd with private bind mounts over /var/lib/glusterd,
/// /var/log/glusterfs and /run (its own UUID, logs and sockets) and waits until its CLI
/// answers.
pub fn start_glusterd(lab: &LabSpec, n: u64, timeout: Duration) -> Result<ProcId> {
    let id = launch_glusterd(lab, n)?;
    wait_glusterd(lab, n, id, timeout)?;
    Ok(id)
}

/// Node `n`'s glusterd command, for a process that has a mount namespace of its own: its
/// state, log and run directories bound over the system ones, then `glusterd -N` (it stays
/// the same process, and writes its pidfile, [`LabSpec::glusterd_pidfile`] from the host).
/// Its agent runs it too (`[services.process.glusterd]`, after `unshare -m`).
pub fn glusterd_argv(lab: &LabSpec, n: u64) -> Vec<String> {
    let g = lab.gluster_dir(n);
    vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        "mount --bind \"$1\" /var/lib/glusterd && mount --bind \"$2\" /var/log/glusterfs && \
         mount --bind \"$3\" /run && exec glusterd -N -p /run/glusterd.pid"
            .to_string(),
        "glusterd-launch".to_string(),
        s(&g.join("lib")),
        s(&g.join("log")),
        s(&g.join("run")),
    ]
}

/// Launches node `n`'s glusterd (see [`start_glusterd`]) without waiting.
pub fn launch_glusterd(lab: &LabSpec, n: u64) -> Result<ProcId> {
    let argv = glusterd_argv(lab, n);
    launch(
        &lab.netns(n),
        &argv,
        &lab.launch_log(n, Service::Glusterd),
        &[],
    )
}

/// Waits until glusterd `id` of node `n` answers its CLI.
pub fn wait_glusterd(lab: &LabSpec, n: u64, id: ProcId, timeout: Duration) -> Result<()> {
    let log = lab.service_log(n, Service::Glusterd);
    wait_serving(
        id,
        &format!("glusterd on n{n} answering its CLI"),
        &log,
        timeout,
        || {
            query::gluster(id.pid, &["peer", "status"], Duration::from_secs(5))
                .map(|_| ())
                .map_err(|e| format!("{e:#}"))
        },
    )
}

/// Node `n`'s brick process, from glusterd's pidfile (checked to live in the node's netns).
pub fn brick_proc(lab: &LabSpec, n: u64) -> Option<ProcId> {
    let dir = lab.gluster_brick_piddir(n);
    let entries = std::fs::read_dir(&dir).ok()?;
    let ino = netns_inode(&lab.netns(n))?;
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pid"))
        .filter_map(|p| read_pidfile(&p))
        .filter(|&pid| netns_inode_of_pid(pid) == Some(ino))
        .find_map(ProcId::capture)
}

/// Node `n`'s FUSE client, from its pidfile (checked to live in the node's netns).
pub fn mount_proc(lab: &LabSpec, n: u64) -> Option<ProcId> {
    let pid = read_pidfile(&lab.gluster_mount_pidfile(n))?;
    let ino = netns_inode(&lab.netns(n))?;
    (netns_inode_of_pid(pid) == Some(ino))
        .then(|| ProcId::capture(pid))
        .flatten()
}

/// Starts node `n`'s missing bricks (`volume start shop force` through its glusterd) and
/// waits until its brick process runs.
pub fn start_brick(lab: &LabSpec, n: u64, glusterd: ProcId, timeout: Duration) -> Result<ProcId> {
    if !glusterd.is_alive() {
        bail!("glusterd on n{n} is not running; `start {n} glusterd` first");
    }
    // Right after a kill, glusterd may not have noticed the brick's death yet and takes
    // `start force` for a no-op: repeat it until a brick process shows up.
    let mut last_start = None::<Instant>;
    poll_until(
        &format!("brick process of n{n}"),
        timeout,
        READY_POLL,
        || {
            if let Some(id) = brick_proc(lab, n) {
                return Ok(id);
            }
            if last_start.is_none_or(|t| t.elapsed() >= Duration::from_secs(3)) {
                last_start = Some(Instant::now());
                query::gluster(
                    glusterd.pid,
                    &["volume", "start", GLUSTER_VOLUME, "force"],
                    Duration::from_secs(30),
                )
                .map_err(|e| format!("volume start force: {e:#}"))?;
            }
            Err("no live brick process yet".to_string())
        },
    )
    .with_context(|| format!("cannot start the brick of n{n}"))
}

/// Mounts the volume at node `n`'s mount point with a FUSE client in the node's network
/// namespace and the host's mount namespace (so the mount is visible everywhere, and a cut
/// of the node cuts its mount). A stale mount (dead client) is lazily unmounted first.
pub fn start_mount(lab: &LabSpec, n: u64, timeout: Duration) -> Result<ProcId> {
    let mnt = lab.gluster_mount(n);
    if query::is_mounted(&mnt, "fuse") {
        let mut um = std::process::Command::new("umount");
        um.arg("-l").arg(&mnt);
        run_ok(&mut um, None, Duration::from_secs(5))?;
    }
    let mut cmd = std::process::Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", lab.netns(n)))
        .arg("glusterfs")
        .arg(format!("--volfile-server={}", lab.node_ip(n)))
        .arg(format!("--volfile-id={GLUSTER_VOLUME}"))
        .arg(format!(
            "--log-file={}",
            s(&lab.service_log(n, Service::Mount))
        ))
        .arg(format!("--pid-file={}", s(&lab.gluster_mount_pidfile(n))))
        .arg(&mnt);
    run_ok(&mut cmd, None, Duration::from_secs(20))
        .with_context(|| format!("cannot mount the volume on n{n}"))?;
    poll_until(
        &format!("FUSE mount of n{n} at {}", mnt.display()),
        timeout,
        READY_POLL,
        || match (query::is_mounted(&mnt, "fuse"), mount_proc(lab, n)) {
            (true, Some(id)) => Ok(id),
            (m, p) => Err(format!("mounted {m}, client {p:?}")),
        },
    )
}

// ----- the agent --------------------------------------------------------------------------

/// Writes node `n`'s agent config (see [`agent_config`]), checks it with
/// `triad check-config`, and returns its path.
pub fn write_agent_config(lab: &LabSpec, n: u64) -> Result<PathBuf> {
    let path = lab.agent_config_path(n);
    std::fs::create_dir_all(lab.agent_dir(n))
        .with_context(|| format!("cannot create {}", lab.agent_dir(n).display()))?;
    std::fs::write(&path, agent_config(lab, n))
        .with_context(|| format!("cannot write {}", path.display()))?;
    write_gluster_cli(lab, n)?;
    write_gluster_remount(lab, n)?;
    write_hook_script(lab)?;
    let mut check = std::process::Command::new(&lab.triad_bin);
    check.arg("check-config").arg(&path);
    run_ok(&mut check, None, Duration::from_secs(10)).with_context(|| {
        format!(
            "the agent rejects the generated config {} (agent_config() in \
             tests/src/lab/agent_config.rs and agent/src/config.rs disagree)",
            path.display()
        )
    })?;
    Ok(path)
}

/// Writes the gluster CLI shim the agent's Gluster probe runs ([`LabSpec::gluster_cli`]).
fn write_gluster_cli(lab: &LabSpec, n: u64) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = lab.gluster_cli(n);
    let text = format!(
        "#!/bin/sh\n\
         # gluster CLI of lab node {n}: glusterd runs in a private mount namespace (own /run).\n\
         # A dead glusterd (gone, or a zombie its starter has not reaped yet) has no namespace;\n\
         # said on stdout, with exit 1, as the real CLI says it.\n\
         pid=$(cat {pidfile} 2>/dev/null) && readlink /proc/\"$pid\"/ns/mnt >/dev/null 2>&1 || \
         {{ echo \"Connection failed. glusterd of node {n} is not running.\"; exit 1; }}\n\
         exec nsenter -t \"$pid\" -m gluster \"$@\"\n",
        pidfile = lab.glusterd_pidfile(n).display()
    );
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot chmod {}", path.display()))?;
    Ok(())
}

/// Writes the agents' hook script (see [`LabSpec::hook_script`]). Appends of one line each
/// from the three agents do not interleave (`O_APPEND`, well under `PIPE_BUF`).
fn write_hook_script(lab: &LabSpec) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = lab.hooks_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = lab.hook_script();
    let text = format!(
        "#!/bin/sh\n\
         # The lab agents' hook ([hooks] pre and post): logs each event; a pre hook vetoes\n\
         # while {veto} exists.\n\
         event=$(cat | tr -d '\\n')\n\
         printf '%s\\n' \"$event\" >> {dir}/\"$TRIAD_HOOK_PHASE\".jsonl\n\
         if [ \"$TRIAD_HOOK_PHASE\" = pre ] && [ -f {veto} ]; then\n\
         \x20   cat {veto} >&2\n\
         \x20   exit 1\n\
         fi\n\
         exit 0\n",
        veto = s(&lab.hook_veto_file()),
        dir = s(&dir),
    );
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot chmod {}", path.display()))?;
    Ok(())
}

/// Writes node `n`'s remount script, its agent's `[gluster] remount_command`: the FUSE client
/// killed and the mount lazily unmounted, then mounted again as `start_mount` mounts it (the
/// agent runs in the host's mount namespace and the node's network namespace, see
/// `process::launch_host_mounts`), waiting until the mount is there.
fn write_gluster_remount(lab: &LabSpec, n: u64) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = lab.gluster_remount(n);
    let mnt = lab.gluster_mount(n);
    let pidfile = lab.gluster_mount_pidfile(n);
    let text = format!(
        "#!/bin/sh\n\
         # Remount of lab node {n}'s FUSE mount, for its agent ([gluster] remount_command).\n\
         [ \"$1\" = {mnt:?} ] || {{ echo \"not node {n}'s mount: $1\" >&2; exit 2; }}\n\
         pid=$(cat {pidfile:?} 2>/dev/null) && kill -9 \"$pid\" 2>/dev/null\n\
         umount -l {mnt:?} 2>/dev/null\n\
         glusterfs \
         --volfile-server={ip} --volfile-id={GLUSTER_VOLUME} --log-file={log:?} \
         --pid-file={pidfile:?} {mnt:?} || exit 1\n\
         i=0\n\
         while [ $i -lt 100 ]; do\n\
         \x20   grep -q \" {mnt} fuse\" /proc/self/mounts && exit 0\n\
         \x20   sleep 0.1; i=$((i + 1))\n\
         done\n\
         echo \"{mnt} is not mounted after 10 s\" >&2; exit 1\n",
        mnt = s(&mnt),
        pidfile = s(&pidfile),
        ip = lab.node_ip(n),
        log = s(&lab.service_log(n, Service::Mount)),
    );
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot chmod {}", path.display()))?;
    Ok(())
}

/// Starts node `n`'s agent (`triad run --config`) in the node's namespace and waits until
/// `GET /live` answers 200 from the host.
pub fn start_agent(lab: &LabSpec, n: u64, timeout: Duration) -> Result<ProcId> {
    let config = lab.agent_config_path(n);
    if !config.is_file() {
        write_agent_config(lab, n)?;
    }
    let argv = vec![
        s(&lab.triad_bin),
        "run".to_string(),
        "--config".to_string(),
        s(&config),
    ];
    let env = [("NO_COLOR", "1".to_string())];
    let id = process::launch_host_mounts(&lab.netns(n), &argv, &lab.agent_log(n), &env)?;
    let addr = lab.api_addr(n);
    wait_serving(
        id,
        &format!("agent on n{n}: GET /live"),
        &lab.agent_log(n),
        timeout,
        || match http_get(addr, "/live", Duration::from_secs(1)) {
            Ok((200, _)) => Ok(()),
            Ok((code, body)) => Err(format!("{code} {}", body.trim())),
            Err(e) => Err(format!("{e:#}")),
        },
    )?;
    Ok(id)
}

/// `GET <path>` on node `n`'s agent API with the lab's token (reads need one): status,
/// metrics, backups.
pub fn agent_get(lab: &LabSpec, n: u64, path: &str, timeout: Duration) -> Result<(u16, String)> {
    let token = std::fs::read_to_string(lab.token_file())
        .with_context(|| format!("cannot read {}", lab.token_file().display()))?;
    http_get_with(lab.api_addr(n), path, timeout, Some(token.trim()))
}

/// A minimal HTTP/1.1 GET from the host (no TLS, `Connection: close`), for liveness and
/// status polling without an async runtime. Returns status and body.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String)> {
    http_get_with(addr, path, timeout, None)
}

/// [`http_get`] with an optional bearer token.
pub fn http_get_with(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    bearer: Option<&str>,
) -> Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let start = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot connect to {addr}"))?;
    let left = timeout
        .saturating_sub(start.elapsed())
        .max(Duration::from_millis(100));
    stream.set_read_timeout(Some(left))?;
    stream.set_write_timeout(Some(left))?;
    let auth = bearer.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("GET {path} from {addr}: no complete answer"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("GET {path} from {addr}: not an HTTP answer: {head:?}"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

// ----- Daemons an agent may start -------------------------------------------------------------

/// Records `id` in the pidfile node `n`'s agent reads for `svc` (see
/// [`LabSpec::service_pidfile`]), so that the agent's service control finds the lab's daemon
/// and never starts a second one.
pub fn write_service_pidfile(lab: &LabSpec, n: u64, svc: Service, id: ProcId) -> Result<()> {
    let Some(path) = lab.service_pidfile(n, svc) else {
        return Ok(());
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&path, format!("{}\n", id.pid))
        .with_context(|| format!("writing {}", path.display()))
}

/// The daemon of `svc` on node `n` that its pidfile names, when one runs: alive, inside the
/// node's network namespace, and running the service's binary. This is how the lab finds a
/// daemon that the node's agent started (or restarted) itself.
pub fn service_by_pidfile(lab: &LabSpec, n: u64, svc: Service) -> Option<ProcId> {
    let (comm_name, pidfile) = match svc {
        // glusterd writes its own pidfile, wherever it was started from.
        Service::Glusterd => ("glusterd", lab.glusterd_pidfile(n)),
        _ => (svc.agent_controlled()?.1, lab.service_pidfile(n, svc)?),
    };
    let pid = read_pidfile(&pidfile)?;
    let id = ProcId::capture(pid)?;
    let ns = netns_inode(&lab.netns(n))?;
    (netns_inode_of_pid(pid) == Some(ns) && process::comm(pid) == comm_name).then_some(id)
}

/// Starts `svc` on node `n` with the waits `start` uses (not for MariaDB, brick or mount,
/// which need more context).
pub fn start_simple(lab: &LabSpec, n: u64, svc: Service) -> Result<ProcId> {
    match svc {
        Service::Redis => start_redis(lab, n, Duration::from_secs(15)),
        Service::Phpfpm => start_phpfpm(lab, n, Duration::from_secs(15)),
        Service::Haproxy => start_haproxy(lab, n, Duration::from_secs(15)),
        Service::Glusterd => start_glusterd(lab, n, Duration::from_secs(30)),
        Service::Agent => start_agent(lab, n, Duration::from_secs(15)),
        Service::Mariadb | Service::Brick | Service::Mount => {
            bail!("{svc} needs the cluster context to start")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }
}
