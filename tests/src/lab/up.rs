//! `up`: builds the whole lab, one progress line per step.
//!
//! Order and parallelism (Galera is the critical path, ~10 s of the ~13 s):
//! 1. clean any previous lab, then one tmpfs per node (the disk here is slow on fsync:
//!    `mariadb-install-db` took 3.9 s on ext4, 0.6 s on tmpfs, and `down` drops all state with
//!    one unmount);
//! 2. the network, configs, secrets and the PHP page;
//! 3. in parallel: Galera (install on n1, bootstrap n1, create the database and users, then
//!    join n2 and, only once n2 is Synced, n3: two joiners at once race in gcomm and queue
//!    for the single donor anyway), Gluster (three glusterd, peer probe, replica-3 volume,
//!    FUSE mounts, directories), and in this thread Redis, PHP-FPM and HAProxy;
//! 4. the agents, once every service is up, so their first view is a healthy cluster;
//! 5. ready when the agents agree on a leader, every HAProxy sees all PHP servers and all
//!    servers of the MySQL recipe backend UP (right after the joins, db3 may still be DOWN
//!    from checks made before n3 joined), and every HAProxy routes `be_mysql` to one and the
//!    same server only: the Galera writer the agents committed.
//!
//! `up` on a healthy lab changes nothing; on a broken or partial one (a crashed run, a
//! killed service, a cut) it tears that down first.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};

use super::configs::{self, Secrets};
use super::down::{down_locked, traces};
use super::error::require_root;
use super::process::{run_ok, ProcId};
use super::query::{self, QUERY_TIMEOUT};
use super::services::{self, MariadbStart};
use super::spec::{LabSpec, Service, GLUSTER_DIRS, GLUSTER_VOLUME, REDIS_PORT};
use super::state::{LabLock, LabState, Phase};
use super::{agents_leader, galera_writer, health_problems, Progress};
use crate::poll_until;

/// What `up` did.
#[derive(Clone, Debug)]
pub struct UpReport {
    /// The lab was already up and healthy; nothing was done.
    pub already_up: bool,
    /// Wall time of the whole command.
    pub took: Duration,
}

/// Builds the lab (see the module docs). Needs root; holds the lab lock throughout.
pub fn up(lab: &LabSpec, progress: &Progress) -> Result<UpReport> {
    require_root("`up`")?;
    let start = Instant::now();
    let _lock = LabLock::acquire(lab, Duration::from_secs(60))?;
    preflight(lab)?;
    if let Ok(Some(state)) = LabState::load(lab) {
        if state.phase == Phase::Up {
            let problems = health_problems(lab, &state);
            if problems.is_empty() {
                progress.line("the lab is already up and every service runs; nothing to do");
                return Ok(UpReport {
                    already_up: true,
                    took: start.elapsed(),
                });
            }
            progress.line(&format!(
                "the lab is up but not healthy ({}); rebuilding it",
                problems.join("; ")
            ));
        }
    }
    let leftovers = traces(lab);
    if !leftovers.is_empty() {
        let t = Instant::now();
        let report = down_locked(lab, &Progress::quiet())?;
        if !report.leftovers.is_empty() {
            return Err(anyhow!(
                "cannot clean the previous lab: {}; see `tests/lab down`",
                report.leftovers.join("; ")
            ));
        }
        progress.step("removed the previous lab", t.elapsed());
    }
    build(lab, progress)?;
    let took = start.elapsed();
    let mut state =
        LabState::load(lab)?.ok_or_else(|| anyhow!("the state file vanished during up"))?;
    state.phase = Phase::Up;
    state.up_seconds = Some(took.as_secs_f64());
    state.save(lab)?;
    progress.line(&format!("lab up in {:.1}s", took.as_secs_f64()));
    Ok(UpReport {
        already_up: false,
        took,
    })
}

/// Programs the lab runs (all from Debian packages in `tests/install-packages.sh`).
const PROGRAMS: [&str; 19] = [
    "ip",
    "nft",
    "nsenter",
    "setsid",
    "mount",
    "umount",
    "mariadbd",
    "mariadb-install-db",
    "mariadb",
    "redis-server",
    "redis-cli",
    "php-fpm8.2",
    "haproxy",
    "glusterd",
    "glusterfs",
    "curl",
    "restic",
    "mariadb-backup",
    "redis-check-rdb",
];

/// Fails before touching anything when a program, the Galera provider, PHP's mysqli or the
/// `triad` binary is missing, naming all of them and the fix.
fn preflight(lab: &LabSpec) -> Result<()> {
    let path = super::process::child_path();
    let found = |prog: &str| std::env::split_paths(&path).any(|d| d.join(prog).is_file());
    let mut missing: Vec<String> = PROGRAMS
        .iter()
        .filter(|p| !found(p))
        .map(|p| p.to_string())
        .collect();
    for file in [
        "/usr/lib/galera/libgalera_smm.so",
        "/etc/php/8.2/mods-available/mysqli.ini",
        "/usr/bin/socat",
    ] {
        if !std::path::Path::new(file).exists() {
            missing.push(file.to_string());
        }
    }
    if !missing.is_empty() {
        return Err(anyhow!(
            "missing: {} (PATH={}); install the lab's packages with tests/install-packages.sh \
             (as root; `tests/lab` does it)",
            missing.join(", "),
            path.to_string_lossy()
        ));
    }
    if !lab.triad_bin.is_file() {
        return Err(anyhow!(
            "the agent binary {} does not exist; build it with `cargo build -p triad --bin triad`",
            lab.triad_bin.display()
        ));
    }
    Ok(())
}

fn random_hex(bytes: usize) -> Result<String> {
    use std::io::Read as _;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("cannot read /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_secret(path: &std::path::Path, value: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "{value}").with_context(|| format!("cannot write {}", path.display()))
}

fn sh(cmd: &str, args: &[&str]) -> Result<()> {
    let mut c = std::process::Command::new(cmd);
    c.args(args);
    run_ok(&mut c, None, Duration::from_secs(30)).map(|_| ())
}

/// A fresh cluster CA and a certificate per agent, made by the agent binary's `triad cert`:
/// the lab's agents speak mutual TLS like production ones.
fn make_certificates(lab: &LabSpec) -> Result<()> {
    let dir = lab.tls_dir();
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    let bin = lab.triad_bin.display().to_string();
    let at = dir.display().to_string();
    let cluster = lab.cluster_name.as_str();
    sh(
        &bin,
        &[
            "cert",
            "init",
            "--dir",
            &at,
            "--cluster",
            cluster,
            "--days",
            "30",
        ],
    )?;
    for n in lab.nodes() {
        let node = n.to_string();
        sh(
            &bin,
            &[
                "cert",
                "issue",
                "--dir",
                &at,
                "--cluster",
                cluster,
                "--node",
                &node,
                "--days",
                "30",
            ],
        )?;
    }
    Ok(())
}

fn build(lab: &LabSpec, progress: &Progress) -> Result<()> {
    // 1. State directory, one tmpfs per node, directories.
    let t = Instant::now();
    std::fs::create_dir_all(&lab.dir)
        .with_context(|| format!("cannot create {}", lab.dir.display()))?;
    // Workers (www-data, mysql) must traverse the state directory.
    sh("chmod", &["755", &lab.dir.display().to_string()])?;
    for n in lab.nodes() {
        let dir = lab.node_dir(n);
        std::fs::create_dir_all(&dir)?;
        sh(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                "size=1g,mode=755",
                &lab.tmpfs_name(n),
                &dir.display().to_string(),
            ],
        )
        .with_context(|| format!("cannot mount a tmpfs on {}", dir.display()))?;
        // Shared, so that a mount made under it later (the FUSE mount, mounted again after a
        // cut) reaches the daemons started by `ip netns exec`: each runs in a mount namespace
        // of its own, a slave of this one, which would otherwise keep the dead FUSE connection
        // it saw at its start and answer ENOTCONN for ever. (The agents run in this one.)
        sh("mount", &["--make-shared", &dir.display().to_string()])
            .with_context(|| format!("cannot make {} a shared mount", dir.display()))?;
        for sub in [
            "pids",
            "mysql/data",
            "redis",
            "php",
            "haproxy",
            "gluster/lib",
            "gluster/log",
            "gluster/run/gluster",
            "brick",
            "mnt",
            "agent",
        ] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        sh(
            "chown",
            &["-R", "mysql:mysql", &lab.mysql_dir(n).display().to_string()],
        )?;
    }
    let state = LabState::new(lab);
    state.save(lab)?;
    progress.step("state dir and a tmpfs per node", t.elapsed());

    // 2. Network.
    let t = Instant::now();
    super::net::create(lab)?;
    progress.step(
        &format!(
            "network: bridge {} {}/{}, netns ha1..ha3 at 10.77.0.11-13",
            lab.bridge,
            lab.host_ip(),
            lab.prefix_len()
        ),
        t.elapsed(),
    );

    // 3. Secrets, configs, the page.
    let t = Instant::now();
    let secrets = Secrets {
        shop: random_hex(12)?,
        monitor: random_hex(12)?,
        backup: random_hex(12)?,
        restic: random_hex(16)?,
        api_token: random_hex(16)?,
        redis: random_hex(16)?,
    };
    let sdir = lab.secrets_dir();
    std::fs::create_dir_all(&sdir)?;
    sh("chmod", &["700", &sdir.display().to_string()])?;
    write_secret(&lab.shop_password_file(), &secrets.shop)?;
    write_secret(&lab.monitor_password_file(), &secrets.monitor)?;
    write_secret(&lab.backup_password_file(), &secrets.backup)?;
    write_secret(&lab.restic_password_file(), &secrets.restic)?;
    write_secret(&lab.redis_password_file(), &secrets.redis)?;
    // A repository left by an earlier lab was made with another password: start afresh.
    if let Some(dir) = lab.backup_repository().parent() {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
    }
    write_secret(&lab.token_file(), &secrets.api_token)?;
    make_certificates(lab)?;
    for n in lab.nodes() {
        write(&lab.mysql_defaults_file(n), &configs::my_cnf(lab, n))?;
        write(
            &lab.redis_conf(n),
            &configs::redis_conf(lab, n, &secrets.redis),
        )?;
        write(&lab.phpfpm_conf(n), &configs::phpfpm_conf(lab, n, &secrets))?;
        write(&lab.haproxy_cfg(n), &configs::haproxy_cfg(lab, n))?;
        write(
            &lab.haproxy_server_state(n),
            configs::HAPROXY_SERVER_STATE_INIT,
        )?;
        services::write_agent_config(lab, n)?;
    }
    let www = lab.www_dir();
    std::fs::create_dir_all(&www)?;
    write(&www.join("index.php"), configs::INDEX_PHP)?;
    sh("chmod", &["755", &www.display().to_string()])?;
    progress.step("configs, secrets and the PHP page written", t.elapsed());

    // 4. Services: Galera and Gluster in threads, the rest here.
    let state = Mutex::new(state);
    let record = |n: u64, svc: Service, id: ProcId| -> Result<()> {
        let mut st = state.lock().map_err(|_| anyhow!("state lock poisoned"))?;
        st.set_proc(n, svc, id);
        st.save(lab)
    };
    std::thread::scope(|scope| -> Result<()> {
        let galera = scope.spawn(|| galera_up(lab, &secrets, progress, &record));
        let gluster = scope.spawn(|| gluster_up(lab, progress, &record));
        let local = redis_php_haproxy_up(lab, progress, &record);
        let galera = galera
            .join()
            .map_err(|_| anyhow!("the Galera thread panicked"))?;
        let gluster = gluster
            .join()
            .map_err(|_| anyhow!("the Gluster thread panicked"))?;
        local.context("Redis, PHP-FPM or HAProxy")?;
        galera.context("MariaDB Galera")?;
        gluster.context("GlusterFS")?;
        Ok(())
    })?;

    // 5. Agents, then readiness.
    let t = Instant::now();
    for n in lab.nodes() {
        let id = services::start_agent(lab, n, Duration::from_secs(15))
            .with_context(|| format!("agent on n{n}"))?;
        record(n, Service::Agent, id)?;
    }
    let leader = poll_until(
        "the agents to agree on a leader",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || agents_leader(lab),
    )?;
    progress.step(
        &format!(
            "agents: 3 running, leader n{} in term {}",
            leader.0, leader.1
        ),
        t.elapsed(),
    );
    let t = Instant::now();
    for n in lab.nodes() {
        poll_until(
            &format!(
                "HAProxy on n{n} to see every PHP and MySQL recipe server and the Redis master UP"
            ),
            Duration::from_secs(15),
            Duration::from_millis(200),
            || {
                let servers =
                    query::haproxy_servers(lab, n, QUERY_TIMEOUT).map_err(|e| format!("{e:#}"))?;
                let down: Vec<String> = servers
                    .iter()
                    // The Redis master too: its agent admits it once it holds its lease
                    // and has reconciled (its `httpchk` on /redis/master).
                    .filter(|s| {
                        s.backend == galera_writer::RECIPE_BACKEND
                            || s.backend == "be_php"
                            || (s.backend == "be_redis" && s.server == "redis1")
                    })
                    .filter(|s| !s.is_up())
                    .map(|s| format!("{}/{} {}", s.backend, s.server, s.word()))
                    .collect();
                if down.is_empty() {
                    Ok(())
                } else {
                    Err(down.join(", "))
                }
            },
        )?;
    }
    // be_mysql: the agents commit a Galera writer, and each sets its server alone in service
    // (its `httpchk` on /galera/writer passes once its own agent has a fresh Synced check).
    let writer = poll_until(
        "every HAProxy to route be_mysql to one and the same server only",
        Duration::from_secs(15),
        Duration::from_millis(200),
        || {
            let mut seen = Vec::new();
            for n in lab.nodes() {
                let r =
                    galera_writer::routing_of(lab, n, galera_writer::WRITER_BACKEND, QUERY_TIMEOUT)
                        .map_err(|e| format!("n{n}: {e:#}"))?;
                seen.push((n, r));
            }
            let first = seen[0].1.routable.clone();
            match first.as_slice() {
                [w] if seen.iter().all(|(_, r)| r.routes_only_to(*w)) => Ok(*w),
                _ => Err(seen
                    .iter()
                    .map(|(n, r)| format!("n{n}: {r}"))
                    .collect::<Vec<_>>()
                    .join("; ")),
            }
        },
    )?;
    progress.step(
        &format!(
            "HAProxy: every node sees all PHP and MySQL recipe servers and the Redis master UP, \
             and routes be_mysql to db{writer} only"
        ),
        t.elapsed(),
    );
    Ok(())
}

fn write(path: &std::path::Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

type Record<'a> = dyn Fn(u64, Service, ProcId) -> Result<()> + Sync + 'a;

fn galera_up(
    lab: &LabSpec,
    secrets: &Secrets,
    progress: &Progress,
    record: &Record<'_>,
) -> Result<()> {
    let t = Instant::now();
    services::mariadb_install_db(lab, 1)?;
    progress.step(
        "galera: system tables on n1 (mariadb-install-db)",
        t.elapsed(),
    );
    let t = Instant::now();
    let id = services::start_mariadb(lab, 1, MariadbStart::NewCluster, 1, Duration::from_secs(30))
        .context("bootstrap of n1")?;
    record(1, Service::Mariadb, id)?;
    query::mysql(
        lab,
        1,
        &configs::bootstrap_sql(lab, secrets),
        Duration::from_secs(20),
    )
    .context("creating the shop database and the users on n1")?;
    progress.step(
        "galera: n1 bootstrapped, database `shop` and users created",
        t.elapsed(),
    );
    // One joiner at a time (see the module docs).
    for n in [2, 3] {
        let t = Instant::now();
        let id = services::start_mariadb(
            lab,
            n,
            MariadbStart::Join,
            n as u32,
            Duration::from_secs(60),
        )
        .with_context(|| format!("n{n} joining by SST"))?;
        record(n, Service::Mariadb, id)?;
        progress.step(
            &format!("galera: n{n} joined by rsync SST, Synced"),
            t.elapsed(),
        );
    }
    for n in lab.nodes() {
        poll_until(
            &format!("Galera n{n} Synced in a cluster of 3"),
            Duration::from_secs(30),
            services::READY_POLL,
            || match query::galera_status(lab, n, QUERY_TIMEOUT) {
                Ok(g) if g.is_synced_in(3) => Ok(()),
                Ok(g) => Err(g.to_string()),
                Err(e) => Err(format!("{e:#}")),
            },
        )?;
    }
    Ok(())
}

fn redis_php_haproxy_up(lab: &LabSpec, progress: &Progress, record: &Record<'_>) -> Result<()> {
    let t = Instant::now();
    for n in lab.nodes() {
        let id = services::start_redis(lab, n, Duration::from_secs(15))?;
        record(n, Service::Redis, id)?;
    }
    // The first topology, once (redis.conf has no `replicaof`; afterwards the agents decide).
    for n in [2, 3] {
        query::redis_from(
            lab,
            n,
            n,
            &[
                "REPLICAOF",
                &lab.node_ip(1).to_string(),
                &REDIS_PORT.to_string(),
            ],
            Duration::from_secs(5),
        )
        .with_context(|| format!("making n{n}'s Redis a replica of n1"))?;
    }
    for n in [2, 3] {
        services::wait_redis_linked(lab, n, Duration::from_secs(20))?;
    }
    progress.step("redis: master n1, replicas n2 n3 linked", t.elapsed());
    let t = Instant::now();
    for n in lab.nodes() {
        let id = services::start_phpfpm(lab, n, Duration::from_secs(15))?;
        record(n, Service::Phpfpm, id)?;
        let id = services::start_haproxy(lab, n, Duration::from_secs(15))?;
        record(n, Service::Haproxy, id)?;
    }
    progress.step(
        "php-fpm and haproxy: 3 each, admin sockets answering",
        t.elapsed(),
    );
    Ok(())
}

fn gluster_up(lab: &LabSpec, progress: &Progress, record: &Record<'_>) -> Result<()> {
    let t = Instant::now();
    for n in lab.nodes() {
        // A fresh /var/lib/glusterd per node makes glusterd write its own UUID; copy only the
        // option groups (the packaged hooks only print SELinux noise here).
        let groups = std::path::Path::new("/var/lib/glusterd/groups");
        if groups.is_dir() {
            sh(
                "cp",
                &[
                    "-a",
                    "/var/lib/glusterd/groups",
                    &lab.gluster_dir(n).join("lib").display().to_string(),
                ],
            )?;
        }
    }
    let mut glusterd = Vec::new();
    for n in lab.nodes() {
        let id = services::launch_glusterd(lab, n)?;
        record(n, Service::Glusterd, id)?;
        glusterd.push(id);
    }
    for (n, &id) in lab.nodes().into_iter().zip(&glusterd) {
        services::wait_glusterd(lab, n, id, Duration::from_secs(30))?;
    }
    progress.step("gluster: 3 glusterd answering", t.elapsed());
    let t = Instant::now();
    let g1 = glusterd[0].pid;
    for n in [2, 3] {
        query::gluster(
            g1,
            &["peer", "probe", &lab.node_ip(n).to_string()],
            Duration::from_secs(30),
        )?;
    }
    // Every glusterd must see both others connected, not only n1: `volume
    // create` is staged on every peer, and a peer that has not yet connected
    // to a third one refuses ("Staging failed ... Host ... not connected").
    poll_until(
        "every glusterd sees both other peers connected",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            for (n, id) in lab.nodes().into_iter().zip(&glusterd) {
                let out = query::gluster(id.pid, &["peer", "status"], Duration::from_secs(5))
                    .map_err(|e| format!("n{n}: {e:#}"))?;
                let connected = out.matches("Peer in Cluster (Connected)").count();
                if connected != 2 {
                    return Err(format!("n{n} sees {connected} of 2 peers connected"));
                }
            }
            Ok(())
        },
    )?;
    let bricks: Vec<String> = lab
        .nodes()
        .iter()
        .map(|&n| lab.gluster_brick_spec(n))
        .collect();
    let mut create = vec!["volume", "create", GLUSTER_VOLUME, "replica", "3"];
    create.extend(bricks.iter().map(String::as_str));
    // Bricks on the root filesystem (here: a tmpfs) need `force`.
    create.push("force");
    // A peer connection can still flap right after the probe; a create whose
    // staging was refused for that left nothing behind and is tried again.
    let mut tries = 0;
    loop {
        tries += 1;
        match query::gluster(g1, &create, Duration::from_secs(60)) {
            Ok(_) => break,
            Err(e) if tries < 5 && format!("{e:#}").contains("not connected") => {
                progress.line(&format!(
                    "gluster: volume create refused ({e:#}); again in 1 s"
                ));
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
    query::gluster(
        g1,
        &["volume", "start", GLUSTER_VOLUME],
        Duration::from_secs(60),
    )?;
    progress.step(
        "gluster: peers probed, replica-3 volume `shop` started",
        t.elapsed(),
    );
    let t = Instant::now();
    for n in lab.nodes() {
        services::start_mount(lab, n, Duration::from_secs(20))?;
    }
    let mnt = lab.gluster_mount(1);
    let dirs: Vec<String> = GLUSTER_DIRS
        .iter()
        .map(|d| mnt.join(d).display().to_string())
        .collect();
    let mut mkdir = std::process::Command::new("mkdir");
    mkdir.arg("-p").args(&dirs);
    run_ok(&mut mkdir, None, Duration::from_secs(15))
        .context("creating the shop directories on the volume")?;
    let mut chown = std::process::Command::new("chown");
    chown
        .args(["-R", "www-data:www-data"])
        .arg(mnt.join("var"))
        .arg(mnt.join("pub"));
    run_ok(&mut chown, None, Duration::from_secs(15))?;
    progress.step(
        &format!(
            "gluster: mounted on every node, dirs {}",
            GLUSTER_DIRS.join(" ")
        ),
        t.elapsed(),
    );
    Ok(())
}
