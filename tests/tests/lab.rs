//! Lab tests: the real services of three namespaced nodes plus the agents (`triad_tests::lab`).
//!
//! One custom harness (libtest-mimic, `harness = false`) so that the lab comes up once per run
//! (~13 s), the tests run one at a time in the order below, and teardown happens at the end
//! even when a test fails or panics (a guard), or the run is interrupted (SIGINT/SIGTERM/SIGHUP
//! are caught and run `down`). The last test tears the lab down and checks nothing is left;
//! when it is filtered out, the same teardown and check run after the tests and fail the run
//! on leftovers.
//!
//! Every fault test restores what it broke (heal, start, continue) and waits until the whole
//! lab is healthy again before the next test; a guard does the same on failure.
//!
//! The Galera recovery cases (`triad_tests::lab::galera_cases`, a to g) come after the other
//! faults, as `lab::galera::NAME` (`-- lab::galera::` runs only them, and the teardown check
//! after them), then the Galera writer cases (issue 13: kill -9 of the writer and of a
//! non-writer, partition of the writer, each under an insert load through every HAProxy and
//! watched by `galera_writer::RoutingMonitor`) as `lab::galera_writer::NAME`, and the planned
//! Galera switchover as `lab::galera_writer_switchover::NAME` (its own trial, see
//! `GALERA_SWITCHOVER_LANDED`). In them the agents recover MariaDB, so one that fails halfway is put back by
//! starting any agent it stopped and letting the agents finish; only if they do not, by a
//! scripted manual recovery.
//!
//! Needs root: otherwise every test is reported ignored, after printing why. A lab that is
//! already up (a developer's) is refused unless `TRIAD_LAB_REUSE=1`, which runs the tests on
//! it and leaves it up (no teardown test then). Build the agent first or let the harness do it
//! (`cargo build -p triad --bin triad`).

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use libtest_mimic::{Arguments, Completion, Failed, Trial};

use triad_tests::lab::web::{php_words, poll_pages, remedy_history, wait_php_everywhere};
use triad_tests::lab::{
    self, agents_leader_among, down, galera_cases, galera_writer, health_problems, net, query,
    GaleraStatus, Lab, LabSpec, Liveness, Service, Signal,
};

/// Bound on getting the whole lab healthy again after a fault.
const RECOVER: Duration = Duration::from_secs(90);

type Shared = Arc<Mutex<Option<Lab>>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Option<Lab>> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `f` on the lab, or fails when it is gone (an earlier test tore it down).
fn with_lab(shared: &Shared, f: impl FnOnce(&Lab) -> Result<()>) -> Result<(), Failed> {
    let guard = lock(shared);
    let lab = guard
        .as_ref()
        .ok_or_else(|| Failed::from("the lab is not up (torn down earlier)"))?;
    f(lab).map_err(|e| Failed::from(format!("{e:#}")))
}

/// Puts the lab back: heal every cut, continue frozen daemons, start dead ones, then wait until
/// everything is healthy.
fn restore(lab: &Lab) -> Result<()> {
    // A test that ended early may have left the pre hooks vetoing.
    let _ = std::fs::remove_file(lab.spec().hook_veto_file());
    let state = lab.state()?;
    if !state.cuts.is_empty() {
        lab.heal()?;
    }
    for n in lab.spec().nodes() {
        // In start order: glusterd before its brick and mount.
        for svc in Service::ALL {
            match lab.proc(n, svc)?.map(|id| id.liveness()) {
                Some(Liveness::Running) => {}
                Some(Liveness::Stopped) => {
                    lab.kill(n, svc, Signal::Cont)?;
                }
                _ => {
                    lab.start(n, svc)?;
                }
            }
        }
    }
    // A FUSE client that did not survive a cut stays disconnected (ENOTCONN) although its
    // process runs: its agent mounts it again (a remediation). Only if that does not happen
    // in time is it mounted again here (a mount of our own racing the agent's fails).
    for n in lab.spec().nodes() {
        let mnt = lab.spec().gluster_mount(n);
        if query::mount_problem(&mnt).is_none() {
            continue;
        }
        let by_agent = lab.wait_for(
            &format!("n{n}'s agent to mount its mount again"),
            Duration::from_secs(45),
            || query::mount_problem(&mnt).map_or(Ok(()), Err),
        );
        if let Err(e) = by_agent {
            eprintln!("lab tests: restore: {e:#}; mounting it again");
            if lab.proc(n, Service::Mount)?.is_some() {
                lab.kill(n, Service::Mount, Signal::Kill)?;
            }
            if let Err(e) = lab.start(n, Service::Mount) {
                // The agent's own remount may have won meanwhile.
                if let Some(why) = query::mount_problem(&mnt) {
                    return Err(e.context(format!("mount of n{n}: {why}")));
                }
            }
        }
    }
    redis_master_back_on_n1(lab)?;
    lab.wait_healthy(RECOVER)
}

/// Every test starts with the Redis master on n1: after a failover test, a planned switchover
/// (through the agents, as an operator would) moves it back.
fn redis_master_back_on_n1(lab: &Lab) -> Result<()> {
    let master = lab.wait_for("the agents to name a Redis master", RECOVER, || {
        lab.redis_master().map_err(|e| format!("{e:#}"))
    })?;
    if master == 1 {
        return Ok(());
    }
    // n1 may still be resyncing as a replica: retry until it is a linked replica.
    lab.wait_for("a switchover back to n1", RECOVER, || {
        lab.switchover_redis(2, 1).map_err(|e| format!("{e:#}"))
    })?;
    Ok(())
}

/// Restores the lab when a fault test ends early (failure or panic).
struct Restore<'a>(&'a Lab, bool);

impl Restore<'_> {
    /// The test restored the lab itself; nothing to do on drop.
    fn done(mut self) {
        self.1 = true;
    }
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        if !self.1 {
            if let Err(e) = restore(self.0) {
                eprintln!("lab tests: could not restore the lab after a failed test: {e:#}");
            }
        }
    }
}

fn fault_test(shared: &Shared, f: impl FnOnce(&Lab) -> Result<()>) -> Result<(), Failed> {
    with_lab(shared, |lab| {
        let guard = Restore(lab, false);
        f(lab)?;
        guard.done();
        restore(lab).context("restoring the lab after the test")
    })
}

/// Bound on the agents bringing Galera back after a Galera case failed halfway (a full outage
/// included), before the restore falls back to a scripted manual recovery.
const GALERA_RECOVER: Duration = Duration::from_secs(150);

/// Puts the lab back after a Galera case (`galera_cases`) that failed halfway: heal every cut,
/// continue frozen mariadbd, start the agents that were stopped and let *them* recover MariaDB
/// (a lab `start` of mariadbd would race an agent's `--wsrep-recover` on the same datadir, and
/// finds nothing to join during a full outage). Only when they do not manage within
/// [`GALERA_RECOVER`]: stop the agents, stop every mariadbd, recover by hand (bootstrap the
/// most advanced, the others rejoin) and start the agents again. Then the usual [`restore`].
fn restore_galera(lab: &Lab) -> Result<()> {
    if !lab.state()?.cuts.is_empty() {
        lab.heal()?;
    }
    let nodes = lab.spec().nodes();
    for &n in &nodes {
        if lab.proc(n, Service::Mariadb)?.map(|id| id.liveness()) == Some(Liveness::Stopped) {
            lab.kill(n, Service::Mariadb, Signal::Cont)?;
        }
    }
    galera_cases::start_agents(lab, &nodes)?;
    if let Err(e) = galera_cases::wait_recovered(lab, &nodes, 3, GALERA_RECOVER) {
        eprintln!("lab tests: the agents did not recover Galera ({e:#}); recovering by hand");
        galera_cases::stop_agents(lab, &nodes)?;
        for &n in &nodes {
            if lab.proc(n, Service::Mariadb)?.is_some() {
                lab.kill(n, Service::Mariadb, Signal::Term)?;
            }
        }
        galera_cases::manual_full_recovery(lab)?;
        galera_cases::start_agents(lab, &nodes)?;
    }
    restore(lab)
}

/// A Galera case: on failure the lab is put back with [`restore_galera`], on success with
/// [`restore`] (the case itself ends with every node Synced in 3 and every agent running).
fn galera_test(shared: &Shared, f: TestFn) -> Result<(), Failed> {
    with_lab(shared, |lab| {
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(lab)));
        eprintln!("    took {:.1}s", started.elapsed().as_secs_f64());
        match outcome {
            Ok(Ok(())) => restore(lab).context("restoring the lab after the test"),
            Ok(Err(e)) => {
                if let Err(r) = restore_galera(lab) {
                    eprintln!("lab tests: could not restore the lab after a failed test: {r:#}");
                }
                Err(e)
            }
            Err(panic) => {
                if let Err(r) = restore_galera(lab) {
                    eprintln!("lab tests: could not restore the lab after a failed test: {r:#}");
                }
                std::panic::resume_unwind(panic)
            }
        }
    })
}

fn galera_probe(lab: &Lab, n: u64, want: impl Fn(&GaleraStatus) -> bool) -> Result<(), String> {
    match lab.galera(n) {
        Ok(g) if want(&g) => Ok(()),
        Ok(g) => Err(g.to_string()),
        Err(e) => Err(format!("{e:#}")),
    }
}

fn secret(path: &std::path::Path) -> Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .trim()
        .to_string())
}

// ----- healthy lab ------------------------------------------------------------------------

fn every_service_is_healthy_on_every_node(lab: &Lab) -> Result<()> {
    let spec = lab.spec();
    let problems = health_problems(spec, &lab.state()?);
    ensure!(problems.is_empty(), "unhealthy: {}", problems.join("; "));
    for n in spec.nodes() {
        let g = lab.galera(n)?;
        ensure!(g.is_synced_in(3), "galera n{n}: {g}");
        let vars = lab.mysql(
            n,
            "SELECT @@auto_increment_increment, @@auto_increment_offset, @@wsrep_auto_increment_control",
        )?;
        ensure!(
            vars.trim() == format!("3\t{n}\t0"),
            "n{n} auto_increment: {vars:?}"
        );
    }
    let master = lab.redis_role(1)?;
    ensure!(
        master.role == "master" && master.replicas == Some(2),
        "redis n1: {master}"
    );
    for n in [2, 3] {
        let r = lab.redis_role(n)?;
        ensure!(
            r.role == "slave" && r.link.as_deref() == Some("up"),
            "redis n{n}: {r}"
        );
        ensure!(
            r.master.as_deref() == Some("10.77.0.11:6379"),
            "redis n{n}: {r}"
        );
    }
    // be_mysql routes to the committed Galera writer only; the others are in maintenance.
    let writer = galera_writer::agreed_writer(lab, &spec.nodes())
        .map_err(|e| anyhow!("the agents do not agree on a Galera writer: {e}"))?
        .writer
        .ok_or_else(|| anyhow!("no Galera writer committed"))?;
    for n in spec.nodes() {
        let servers = lab.haproxy_servers(n)?;
        let words: Vec<String> = servers
            .iter()
            .map(|s| {
                let b = if s.backup { " backup" } else { "" };
                format!("{}/{}={}{b}", s.backend, s.server, s.word())
            })
            .collect();
        let mut want: Vec<String> = [
            "be_redis/redis1=UP",
            "be_redis/redis2=MAINT",
            "be_redis/redis3=MAINT",
            "be_mysql_recipe/db1=UP",
            "be_mysql_recipe/db2=UP backup",
            "be_mysql_recipe/db3=UP backup",
        ]
        .map(String::from)
        .to_vec();
        for p in spec.nodes() {
            let word = if p == writer { "UP" } else { "MAINT" };
            want.push(format!("be_mysql/db{p}={word}"));
            // The local pool first, the others as backups.
            let backup = if p == n { "" } else { " backup" };
            want.push(format!("be_php/php{p}=UP{backup}"));
        }
        for w in want {
            ensure!(
                words.contains(&w),
                "haproxy n{n}: want {w} in {words:?} (Galera writer n{writer})"
            );
        }
        let r = galera_writer::routing(&servers, galera_writer::WRITER_BACKEND);
        ensure!(
            r.routes_only_to(writer),
            "haproxy n{n}: be_mysql {r}, want db{writer} only"
        );
    }
    Ok(())
}

fn php_page_reads_and_writes_through_haproxy_on_every_node(lab: &Lab) -> Result<()> {
    let spec = lab.spec();
    let mut last_hits = 0;
    let writer = galera_writer::agreed_writer(lab, &spec.nodes())
        .map_err(|e| anyhow!("the agents do not agree on a Galera writer: {e}"))?
        .writer
        .ok_or_else(|| anyhow!("no Galera writer committed"))?;
    for n in spec.nodes() {
        let r = lab.http_get_in(n, "http://127.0.0.1:8080/")?;
        ensure!(
            r.status == 200,
            "n{n}: page answered {}: {}",
            r.status,
            r.body
        );
        let v: serde_json::Value = serde_json::from_str(r.body.trim())
            .with_context(|| format!("n{n}: page is not JSON: {}", r.body))?;
        ensure!(
            v["node"] == format!("ha{n}"),
            "n{n}: served by {}",
            v["node"]
        );
        // Writes go through HAProxy's single writer, the committed Galera writer, whose
        // auto_increment offset is its node id.
        ensure!(
            v["db_node"] == format!("ha{writer}"),
            "n{n}: written on {}, not on the Galera writer n{writer}",
            v["db_node"]
        );
        let id = v["insert_id"]
            .as_u64()
            .ok_or_else(|| anyhow!("n{n}: no insert_id in {v}"))?;
        ensure!(
            id % 3 == writer % 3,
            "n{n}: insert id {id} not on offset {writer}"
        );
        let hits = v["hits"]
            .as_u64()
            .ok_or_else(|| anyhow!("n{n}: no hits in {v}"))?;
        ensure!(hits > last_hits, "n{n}: hits {hits} after {last_hits}");
        last_hits = hits;
        // Replicated: the row on n3 (Galera), the counter on the n3 replica (Redis).
        lab.wait_for(
            &format!("row {id} on n3"),
            Duration::from_secs(10),
            || match lab.mysql(3, &format!("SELECT node FROM shop.visits WHERE id = {id}")) {
                Ok(t) if t.trim() == format!("ha{n}") => Ok(()),
                Ok(t) => Err(format!("got {t:?}")),
                Err(e) => Err(format!("{e:#}")),
            },
        )?;
        lab.wait_for(
            &format!("hits={hits} on the n3 replica"),
            Duration::from_secs(10),
            || match lab.redis_from(3, 3, &["get", "hits"], Duration::from_secs(2)) {
                Ok(t) if t.trim().parse::<u64>().is_ok_and(|h| h >= hits) => Ok(()),
                Ok(t) => Err(format!("got {t:?}")),
                Err(e) => Err(format!("{e:#}")),
            },
        )?;
        let ping = lab.http_get_in(n, "http://127.0.0.1:8080/ping")?;
        ensure!(
            ping.status == 200 && ping.body.trim() == "pong",
            "n{n} /ping: {ping:?}"
        );
        let st = lab.http_get_in(n, "http://127.0.0.1:8080/status?json")?;
        ensure!(
            st.body.contains("\"pool\":\"shop\""),
            "n{n} /status: {}",
            st.body
        );
        // Regression for the fcgi keep-conn trap: back-to-back requests all answer.
        for i in 0..12 {
            let path = ["/ping", "/status?json", "/"][i % 3];
            let r = lab.http_get_in(n, &format!("http://127.0.0.1:8080{path}"))?;
            ensure!(r.status == 200, "n{n} request {i} {path}: {}", r.status);
        }
    }
    // And from the host, through the bridge.
    let (code, body) = lab::services::http_get(spec.web_addr(3), "/ping", Duration::from_secs(5))?;
    ensure!(
        code == 200 && body.trim() == "pong",
        "host -> n3:8080/ping: {code} {body}"
    );
    Ok(())
}

fn gluster_file_written_on_one_node_is_read_on_another(lab: &Lab) -> Result<()> {
    let spec = lab.spec();
    let token = format!(
        "lab-test-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    );
    let name = format!("var/lab-test-{}.txt", std::process::id());
    query::write_file_bounded(
        &spec.gluster_mount(1).join(&name),
        &token,
        Duration::from_secs(10),
    )?;
    let on3 =
        query::read_file_bounded(&spec.gluster_mount(3).join(&name), Duration::from_secs(10))?;
    ensure!(on3 == token, "n3 read {on3:?}, want {token:?}");
    // From inside n2, through its own mount.
    let path = spec.gluster_mount(2).join(&name);
    let out = lab.exec(
        2,
        "cat",
        &[&path.display().to_string()],
        Duration::from_secs(10),
    )?;
    ensure!(
        out.success() && out.stdout == token,
        "n2: {}",
        out.failure()
    );
    for d in lab::spec::GLUSTER_DIRS {
        let p = spec.gluster_mount(3).join(d);
        let out = lab.exec(
            3,
            "test",
            &["-d", &p.display().to_string()],
            Duration::from_secs(5),
        )?;
        ensure!(out.success(), "{} is not a directory on n3", p.display());
    }
    let xml = lab.gluster(2, &["volume", "status", "shop", "--xml"])?;
    let online = xml.matches("<status>1</status>").count();
    ensure!(
        online >= 6,
        "volume status: {online} online entries, want 3 bricks + 3 self-heal"
    );
    let heal = lab.gluster(3, &["volume", "heal", "shop", "info"])?;
    ensure!(
        heal.matches("Number of entries: 0").count() == 3,
        "heal info:\n{heal}"
    );
    Ok(())
}

fn monitor_user_reads_galera_status_but_no_shop_data(lab: &Lab) -> Result<()> {
    let spec = lab.spec();
    let pw = secret(&spec.monitor_password_file())?;
    let user = lab::spec::MONITOR_USER;
    let ok = query::mysql_tcp(
        spec,
        3,
        1,
        user,
        &pw,
        "SHOW GLOBAL STATUS LIKE 'wsrep_cluster_size'",
        Duration::from_secs(10),
    )?;
    ensure!(
        ok.success() && ok.stdout.trim().ends_with('3'),
        "monitor status: {}",
        ok.failure()
    );
    let denied = query::mysql_tcp(
        spec,
        3,
        1,
        user,
        &pw,
        "SELECT COUNT(*) FROM shop.visits",
        Duration::from_secs(10),
    )?;
    ensure!(
        !denied.success() && denied.stderr.contains("denied"),
        "monitor read shop data: {denied:?}"
    );
    // The backup account: what the backup runner needs (README "Backups") and no SUPER.
    let grants = lab.mysql(1, "SHOW GRANTS FOR 'triad_backup'@'localhost'")?;
    for g in [
        "RELOAD",
        "PROCESS",
        "LOCK TABLES",
        "BINLOG MONITOR",
        "SELECT",
    ] {
        ensure!(grants.contains(g), "backup grants lack {g}: {grants}");
    }
    ensure!(
        !grants.contains("SUPER") && !grants.contains("ALL PRIVILEGES"),
        "backup grants more than it needs: {grants}"
    );
    Ok(())
}

fn agents_agree_on_a_leader_through_their_apis(lab: &Lab) -> Result<()> {
    let spec = lab.spec();
    let (leader, term) = lab.wait_for("agreement", Duration::from_secs(10), || {
        lab::agents_leader(spec)
    })?;
    for n in spec.nodes() {
        let st = lab.agent_status(n)?;
        ensure!(
            st.cluster_name == "triad-lab",
            "n{n}: cluster {}",
            st.cluster_name
        );
        ensure!(st.members.len() == 3, "n{n}: {} members", st.members.len());
        ensure!(
            st.leader_id.map(|l| l.0) == Some(leader) && st.term.0 == term,
            "n{n} disagrees"
        );
    }
    Ok(())
}

fn lab_cli() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_triad-lab"));
    lab::process::clear_signal_mask(&mut cmd);
    cmd
}

fn status_cli_reports_every_service_and_rejects_bad_names(_lab: &Lab) -> Result<()> {
    let out = lab_cli().args(["status", "--json"]).output()?;
    ensure!(out.status.success(), "status --json: {:?}", out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(v["phase"] == "up", "phase {}", v["phase"]);
    let nodes = v["nodes"]
        .as_array()
        .ok_or_else(|| anyhow!("no nodes in {v}"))?;
    ensure!(nodes.len() == 3, "{} nodes", nodes.len());
    for node in nodes {
        let services = node["services"]
            .as_array()
            .ok_or_else(|| anyhow!("no services"))?;
        for s in services {
            ensure!(
                s["state"] == "running",
                "{} on n{}: {}",
                s["service"],
                node["node"],
                s
            );
        }
        ensure!(
            node["agent"]["role"].is_string(),
            "n{}: no agent view",
            node["node"]
        );
    }
    let text = lab_cli().arg("status").output()?;
    let text = String::from_utf8_lossy(&text.stdout);
    ensure!(
        text.contains("Synced Primary size 3") && text.contains("master, 2 replicas"),
        "{text}"
    );
    for (args, code) in [
        (vec!["kill", "4", "redis"], 64),
        (vec!["kill", "1", "nginx"], 64),
        (vec!["kill", "1", "redis", "--signal", "HUP"], 64),
        (vec!["partition", "1", "--from", "1"], 64),
        (vec!["frobnicate"], 64),
    ] {
        let out = lab_cli().args(&args).output()?;
        ensure!(
            out.status.code() == Some(code),
            "triad-lab {}: {:?}, want exit {code}; stderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(
            !out.stderr.is_empty(),
            "triad-lab {}: no message",
            args.join(" ")
        );
    }
    Ok(())
}

// ----- faults -----------------------------------------------------------------------------

fn kill_redis_replica_then_start_relinks_it(lab: &Lab) -> Result<()> {
    lab.kill(3, Service::Redis, Signal::Kill)?;
    // Seen from another node: nothing listens on n3's Redis port any more.
    let refused = lab.redis_from(2, 3, &["ping"], Duration::from_secs(3));
    ensure!(
        refused.is_err(),
        "n3 Redis still answers from n2: {refused:?}"
    );
    lab.wait_for(
        "the master to count one replica",
        Duration::from_secs(10),
        || match lab.redis_role(1) {
            Ok(r) if r.replicas == Some(1) => Ok(()),
            Ok(r) => Err(r.to_string()),
            Err(e) => Err(format!("{e:#}")),
        },
    )?;
    ensure!(
        lab.proc(3, Service::Redis)?.is_none(),
        "status still shows n3 Redis running"
    );
    lab.start(3, Service::Redis)?;
    let pong = lab.redis_from(2, 3, &["ping"], Duration::from_secs(3))?;
    ensure!(pong.trim() == "PONG", "n2 -> n3 ping: {pong}");
    lab.wait_for("n3 replica linked", Duration::from_secs(20), || {
        match lab.redis_role(3) {
            Ok(r) if r.link.as_deref() == Some("up") => Ok(()),
            Ok(r) => Err(r.to_string()),
            Err(e) => Err(format!("{e:#}")),
        }
    })?;
    Ok(())
}

/// The node's agent controls its services with `Process` (`[services] control = "process"`),
/// which shares each daemon's pidfile with the lab. Both directions: the agent's control finds
/// the lab's Redis and does not start a second one; a Redis the agent's control restarted is
/// found by the lab (`status`) and adopted by `start`, never doubled. The agent does not
/// restart services on its own yet, so the test drives the agent's configured `Process`
/// itself, through `ip netns exec` so that the daemon lands in the node as the agent's would.
fn agent_started_redis_is_found_by_its_pidfile_and_never_doubled(lab: &Lab) -> Result<()> {
    use triad::actuator::service::{Process, ServiceControl, ServiceState, StartMode};
    let n = 3;
    let netns = lab.spec().netns(n);
    let config = triad::config::load(&lab.spec().agent_config_path(n), None)
        .map_err(|e| anyhow!("n{n}'s agent config: {e}"))?;
    let services = &config.config.services;
    let mut spec = services
        .process
        .get("redis")
        .cloned()
        .ok_or_else(|| anyhow!("n{n}'s agent config has no [services.process.redis]"))?;
    spec.argv.splice(
        0..0,
        ["/usr/sbin/ip", "netns", "exec", netns.as_str()].map(String::from),
    );
    let control = Process::new(
        std::iter::once(("redis".to_string(), spec)).collect(),
        services.stop_timeout,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let redis_in_node = || -> Result<Vec<i32>> {
        let ino = lab::process::netns_inode(&netns).ok_or_else(|| anyhow!("no netns {netns}"))?;
        Ok(lab::process::pids_in_netns(ino)
            .into_iter()
            .filter(|&p| lab::process::comm(p) == "redis-server")
            .collect())
    };
    // The lab's Redis, as the agent's control sees it: running, by the lab's pidfile.
    let lab_pid = lab
        .proc(n, Service::Redis)?
        .ok_or_else(|| anyhow!("n{n} Redis is not running"))?
        .pid;
    let seen = rt.block_on(control.state("redis"))?;
    ensure!(
        seen == ServiceState::Running {
            pid: Some(lab_pid as u32)
        },
        "the agent's control sees {seen:?}, not the lab's Redis (pid {lab_pid})"
    );
    rt.block_on(control.start("redis", &StartMode::Normal))?;
    ensure!(
        redis_in_node()? == [lab_pid],
        "a start through the agent's control doubled Redis: {:?}",
        redis_in_node()?
    );
    // Killed, and started again by the agent's control: the lab finds and adopts it.
    lab.kill(n, Service::Redis, Signal::Kill)?;
    rt.block_on(control.start("redis", &StartMode::Normal))?;
    let ServiceState::Running {
        pid: Some(agent_pid),
    } = rt.block_on(control.state("redis"))?
    else {
        bail!("the agent's control did not start Redis");
    };
    ensure!(agent_pid as i32 != lab_pid, "the killed Redis still runs");
    lab.wait_for(
        "the agent-started Redis to answer",
        Duration::from_secs(10),
        || match lab.redis_from(2, n, &["ping"], Duration::from_secs(2)) {
            Ok(t) if t.trim() == "PONG" => Ok(()),
            Ok(t) => Err(t),
            Err(e) => Err(format!("{e:#}")),
        },
    )?;
    let found = lab.proc(n, Service::Redis)?.map(|id| id.pid);
    ensure!(
        found == Some(agent_pid as i32),
        "lab status does not find the agent-started Redis (pid {agent_pid}): {found:?}"
    );
    let said = lab.start(n, Service::Redis)?;
    ensure!(
        said.contains("found by its pidfile") && said.contains(&agent_pid.to_string()),
        "start did not adopt the running Redis: {said}"
    );
    ensure!(
        redis_in_node()? == [agent_pid as i32],
        "start doubled Redis: {:?}",
        redis_in_node()?
    );
    // Its agent makes it a replica again, as after any restart.
    lab.wait_for("n3 replica linked", Duration::from_secs(20), || {
        match lab.redis_role(n) {
            Ok(r) if r.link.as_deref() == Some("up") => Ok(()),
            Ok(r) => Err(r.to_string()),
            Err(e) => Err(format!("{e:#}")),
        }
    })?;
    Ok(())
}

fn stop_and_cont_mariadb_evicts_and_readmits_the_node(lab: &Lab) -> Result<()> {
    lab.kill(2, Service::Mariadb, Signal::Stop)?;
    ensure!(
        lab.proc(2, Service::Mariadb)?.map(|id| id.liveness()) == Some(Liveness::Stopped),
        "n2 MariaDB is not stopped"
    );
    // A frozen node answers nothing, within the query deadline.
    ensure!(lab.galera(2).is_err(), "a frozen MariaDB answered");
    lab.wait_for(
        "n1 and n3 to evict the frozen n2",
        Duration::from_secs(20),
        || {
            galera_probe(lab, 1, |g| g.is_synced_in(2))?;
            galera_probe(lab, 3, |g| g.is_synced_in(2))
        },
    )?;
    lab.kill(2, Service::Mariadb, Signal::Cont)?;
    lab.wait_for("n2 back in a cluster of 3", Duration::from_secs(60), || {
        galera_probe(lab, 2, |g| g.is_synced_in(3))
    })?;
    Ok(())
}

fn kill9_mariadb_is_restarted_by_its_agent_and_rejoins_by_ist(lab: &Lab) -> Result<()> {
    let spec = lab.spec();
    let before = std::fs::metadata(spec.mysql_log(3))?.len();
    let old = lab.proc(3, Service::Mariadb)?.map(|id| id.pid);
    let t = std::time::Instant::now();
    lab.kill(3, Service::Mariadb, Signal::Kill)?;
    // A write while n3 is gone, which it must receive by IST.
    let marker = format!("ist-{}", std::process::id());
    // Galera stalls every commit for ~6 s after a member dies, until it is evicted.
    let insert = format!("INSERT INTO shop.visits (node, hits) VALUES ('{marker}', 0)");
    query::mysql(spec, 1, &insert, Duration::from_secs(20))?;
    // Nobody but n3's agent starts it again.
    lab.wait_for(
        "n3 restarted by its agent and Synced in a cluster of 3",
        Duration::from_secs(60),
        || galera_probe(lab, 3, |g| g.is_synced_in(3)),
    )?;
    let synced = t.elapsed();
    let new = lab.proc(3, Service::Mariadb)?.map(|id| id.pid);
    ensure!(
        new.is_some() && new != old,
        "n3's mariadbd was not restarted: {old:?} -> {new:?}"
    );
    let log = std::fs::read(spec.mysql_log(3))?;
    let fresh =
        String::from_utf8_lossy(&log[usize::try_from(before).unwrap_or(0).min(log.len())..])
            .into_owned();
    ensure!(
        fresh.contains("IST received"),
        "n3 did not rejoin by IST; its log since the kill:\n{}",
        tail(&fresh, 30)
    );
    let rows = lab.mysql(
        3,
        &format!("SELECT COUNT(*) FROM shop.visits WHERE node = '{marker}'"),
    )?;
    ensure!(
        rows.trim() == "1",
        "the write made during the outage is not on n3: {rows}"
    );
    let status = lab.agent_status(3)?;
    eprintln!(
        "n3 killed -> Synced again by its agent in {synced:?}; its recovery: {}",
        serde_json::to_string(&status.galera.map(|g| g.local.recovery)).unwrap_or_default()
    );
    Ok(())
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn killed_pool_and_proxy_come_back_and_pages_keep_being_served(lab: &Lab) -> Result<()> {
    lab.kill(2, Service::Phpfpm, Signal::Kill)?;
    // The whole pool is gone, master and workers: nothing listens on its port.
    let addr = lab.spec().phpfpm_addr(2);
    ensure!(
        !net::tcp_reachable(lab.spec(), 1, addr, Duration::from_secs(2))?,
        "pool n2 still accepts"
    );
    lab.wait_for(
        "HAProxy n2 to mark php2 DOWN",
        Duration::from_secs(15),
        || {
            let s = lab.haproxy_servers(2).map_err(|e| format!("{e:#}"))?;
            match s.iter().find(|s| s.server == "php2") {
                Some(p) if !p.is_up() => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )?;
    let r = lab.http_get_in(2, "http://127.0.0.1:8080/")?;
    ensure!(
        r.status == 200,
        "n2 page with its pool down: {} {}",
        r.status,
        r.body
    );
    ensure!(
        !r.body.contains("\"node\":\"ha2\""),
        "served by the dead pool? {}",
        r.body
    );
    // Its agent restarts it too (a remediation); `start` adopts the one it started.
    lab.start(2, Service::Phpfpm)?;
    lab.kill(3, Service::Haproxy, Signal::Term)?;
    ensure!(
        lab.http_get_in(3, "http://127.0.0.1:8080/ping").is_err(),
        "n3 web answers without HAProxy"
    );
    lab.start(3, Service::Haproxy)?;
    let r = lab.http_get_in(3, "http://127.0.0.1:8080/ping")?;
    ensure!(r.status == 200, "n3 /ping after restart: {}", r.status);
    Ok(())
}

/// The web rotation as node `n`'s agent has it: (drained nodes, kept node).
fn web_rotation(lab: &Lab, n: u64) -> Result<(Vec<u64>, Option<u64>), String> {
    let status = lab.agent_status(n).map_err(|e| format!("{e:#}"))?;
    let web = status.web.ok_or("no web section in the status")?;
    Ok((
        web.drained.keys().map(|n| n.0).collect(),
        web.kept.map(|k| k.node.0),
    ))
}

/// Issue 17: a killed pool is drained from every HAProxy (in maintenance: Triad's doing, the
/// checks alone make it DOWN) and the leader's status says why; its agent restarts it under a
/// committed remediation lease and it is readmitted everywhere. Pages keep being answered
/// through the other nodes' HAProxy throughout (their local pools serve); through the killed
/// node's own HAProxy, a request that meets the dead pool is retried on another server.
fn killed_pool_is_drained_restarted_and_readmitted(lab: &Lab) -> Result<()> {
    let before = remedy_history(lab)?.last().map_or(0, |h| h.0);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pages = poll_pages(lab.spec().clone(), stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    let killed = Instant::now();
    lab.kill(2, Service::Phpfpm, Signal::Kill)?;
    let drained = wait_php_everywhere(lab, 2, "MAINT", Duration::from_secs(15));
    let back = drained.and_then(|d| {
        wait_php_everywhere(lab, 2, "UP", Duration::from_secs(30)).map(|_| (d, killed.elapsed()))
    });
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let pages = pages
        .join()
        .map_err(|_| anyhow!("the page poller panicked"))?;
    let (drained, readmitted) = back?;
    let history = remedy_history(lab)?;
    let new: Vec<&String> = history
        .iter()
        .filter(|h| h.0 > before)
        .map(|h| &h.1)
        .collect();
    ensure!(
        new.iter()
            .any(|d| d.contains("restart php-fpm on n2") && d.contains("granted"))
            && new
                .iter()
                .any(|d| d.contains("restart php-fpm on n2") && d.contains(") done:")),
        "no remediation of n2 granted and done in the history: {new:?}"
    );
    for n in [1, 3] {
        let p = pages.get(&n).cloned().unwrap_or_default();
        ensure!(
            p.failed == 0 && p.ok > 0,
            "pages through n{n}'s HAProxy: {} answered, {} failed ({:?})",
            p.ok,
            p.failed,
            p.first_failure
        );
    }
    let p2 = pages.get(&2).cloned().unwrap_or_default();
    let (ok2, failed2, first2) = (p2.ok, p2.failed, p2.first_failure);
    eprintln!(
        "php-fpm n2 kill -9 -> drained in every HAProxy after {drained:?}, restarted by its \
         agent and readmitted everywhere after {readmitted:?}; pages through n2's HAProxy: \
         {ok2} answered, {failed2} failed{}",
        first2.map_or(String::new(), |f| format!(" (first: {f})"))
    );
    Ok(())
}

/// Issue 17: two pools killed at once are both restarted by their agents, one after the other:
/// the second remediation is granted only after the first ended.
fn two_dead_pools_are_restarted_one_after_the_other(lab: &Lab) -> Result<()> {
    let before = remedy_history(lab)?.last().map_or(0, |h| h.0);
    lab.kill(2, Service::Phpfpm, Signal::Kill)?;
    lab.kill(3, Service::Phpfpm, Signal::Kill)?;
    // Both drained first (a kill is seen at once), then both back: the second waits for the
    // first remediation, and n2's for its back-off when the test before restarted it.
    for p in [2, 3] {
        wait_php_everywhere(lab, p, "MAINT", Duration::from_secs(15))?;
    }
    for p in [2, 3] {
        wait_php_everywhere(lab, p, "UP", Duration::from_secs(45))?;
    }
    let history: Vec<(u64, String)> = remedy_history(lab)?
        .into_iter()
        .filter(|h| h.0 > before)
        .collect();
    // Granted, ended, granted, ended: never two in force.
    let mut open: Option<&str> = None;
    let mut restarted = BTreeSet::new();
    for (index, d) in &history {
        let node = if d.contains("on n2") {
            "n2"
        } else if d.contains("on n3") {
            "n3"
        } else {
            "?"
        };
        if d.contains(" granted:") {
            ensure!(
                open.is_none(),
                "index {index}: {d} while {open:?} was in force; history: {history:?}"
            );
            open = Some(node);
        } else if d.contains(") done:") || d.contains(") failed:") || d.contains(") expired:") {
            ensure!(
                open == Some(node),
                "index {index}: {d} ends what was not in force"
            );
            open = None;
            restarted.insert(node);
        }
    }
    ensure!(
        restarted.contains("n2") && restarted.contains("n3"),
        "not both restarted by their agents: {history:?}"
    );
    eprintln!(
        "remediations: {}",
        history
            .iter()
            .map(|h| format!("[{}] {}", h.0, h.1))
            .collect::<Vec<_>>()
            .join("; ")
    );
    Ok(())
}

/// The live processes of process group `pgid`.
fn group_of(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            lab::process::proc_stat(pid)
                .is_some_and(|st| st.pgid == pgid && !matches!(st.state, 'Z' | 'X'))
        })
        .collect()
}

/// Issue 17: `kill -9` of the PHP-FPM master alone (its workers would go on serving the
/// inherited socket, unmanaged): the agent's exit watch ends the workers, as systemd ends a
/// unit's remaining processes, so the pool is drained, restarted and readmitted as after a
/// whole-pool kill.
fn killed_pool_master_alone_takes_its_workers_and_comes_back(lab: &Lab) -> Result<()> {
    let master = lab
        .proc(2, Service::Phpfpm)?
        .ok_or_else(|| anyhow!("php-fpm on n2 is not running"))?;
    let workers: Vec<i32> = group_of(master.pid)
        .into_iter()
        .filter(|&p| p != master.pid)
        .collect();
    ensure!(
        !workers.is_empty(),
        "php-fpm on n2 (pid {}) has no workers in its group",
        master.pid
    );
    let killed = Instant::now();
    master.signal(Signal::Kill)?;
    let drained = wait_php_everywhere(lab, 2, "MAINT", Duration::from_secs(15))?;
    lab.wait_for(
        "the old master's workers to be gone",
        Duration::from_secs(10),
        || {
            let left = group_of(master.pid);
            left.is_empty()
                .then_some(())
                .ok_or_else(|| format!("left: {left:?}"))
        },
    )?;
    wait_php_everywhere(lab, 2, "UP", Duration::from_secs(45))?;
    let new = lab
        .proc(2, Service::Phpfpm)?
        .ok_or_else(|| anyhow!("php-fpm on n2 is not running after its restart"))?;
    ensure!(new.pid != master.pid, "the same master after its kill");
    eprintln!(
        "php-fpm n2 master kill -9 ({} workers): drained everywhere after {drained:?}, back \
         everywhere after {:?}",
        workers.len(),
        killed.elapsed()
    );
    Ok(())
}

/// Issue 17: the remediation holder's pre hook vetoes a pool restart: the remediation ends
/// failed with the hook's reason, the pool stays dead and drained; once the veto lifts, the
/// next attempt (after its back-off) restarts it and every HAProxy readmits it.
fn remediation_vetoed_by_the_pre_hook_stays_drained_until_the_veto_lifts(lab: &Lab) -> Result<()> {
    let before = remedy_history(lab)?.last().map_or(0, |h| h.0);
    let _no_veto = NoVeto(lab);
    std::fs::write(lab.spec().hook_veto_file(), "web freeze (lab test)\n")?;
    lab.kill(3, Service::Phpfpm, Signal::Kill)?;
    wait_php_everywhere(lab, 3, "MAINT", Duration::from_secs(15))?;
    let vetoed = lab.wait_for(
        "the remediation of n3 to end vetoed",
        Duration::from_secs(60),
        || {
            let h = remedy_history(lab).map_err(|e| format!("{e:#}"))?;
            h.into_iter()
                .find(|(i, d)| {
                    *i > before
                        && d.contains("restart php-fpm on n3")
                        && d.contains(") failed:")
                        && d.contains("vetoed by the pre hook")
                        && d.contains("web freeze (lab test)")
                })
                .ok_or_else(|| "no vetoed end yet".to_string())
        },
    )?;
    let pre = hook_events(lab, "pre", "remediation");
    ensure!(
        pre.iter()
            .any(|v| v["service"] == "php-fpm" && v["node"] == 3),
        "n3's pre hook did not get the remediation's event: {pre:?}"
    );
    // Vetoed: nothing restarted it, and it stays out of every HAProxy.
    let words = php_words(lab, 3).map_err(|e| anyhow!(e))?;
    ensure!(
        words.values().all(|w| *w == "MAINT"),
        "n3's pool is back in service after a veto: {words:?} ({})",
        vetoed.1
    );
    std::fs::remove_file(lab.spec().hook_veto_file())?;
    wait_php_everywhere(lab, 3, "UP", Duration::from_secs(90))?;
    lab.wait_for(
        "a remediation of n3 done after the veto",
        Duration::from_secs(10),
        || {
            let h = remedy_history(lab).map_err(|e| format!("{e:#}"))?;
            h.iter()
                .any(|(i, d)| {
                    *i > vetoed.0 && d.contains("restart php-fpm on n3") && d.contains(") done:")
                })
                .then_some(())
                .ok_or_else(|| format!("not in {h:?}"))
        },
    )?;
    eprintln!("vetoed: [{}] {}", vetoed.0, vetoed.1);
    Ok(())
}

/// Issue 17: two hung pools are drained, the third stays; when the third hangs too it stays
/// in service (never the last web node), and every agent's status says it is kept though sick.
/// All continue: every pool back in every HAProxy.
fn hung_pools_drain_but_never_the_last_one(lab: &Lab) -> Result<()> {
    for n in [1, 2] {
        lab.kill(n, Service::Phpfpm, Signal::Stop)?;
    }
    for p in [1, 2] {
        wait_php_everywhere(lab, p, "MAINT", Duration::from_secs(20))?;
    }
    ensure!(
        php_words(lab, 3)
            .map_err(|e| anyhow!(e))?
            .values()
            .all(|w| *w != "MAINT"),
        "php3 drained too"
    );
    lab.kill(3, Service::Phpfpm, Signal::Stop)?;
    lab.wait_for(
        "every agent to keep the sick n3 in service",
        Duration::from_secs(20),
        || {
            for n in lab.spec().nodes() {
                match web_rotation(lab, n)? {
                    (d, Some(3)) if d == [1, 2] => {}
                    other => return Err(format!("n{n}: {other:?}")),
                }
            }
            Ok(())
        },
    )?;
    // Given the time to decide otherwise, it still stays.
    std::thread::sleep(Duration::from_secs(3));
    let words = php_words(lab, 3).map_err(|e| anyhow!(e))?;
    ensure!(
        words.values().all(|w| *w != "MAINT"),
        "the last web node was drained: {words:?}"
    );
    let status = lab.agent_status(2)?;
    let web = status.web.ok_or_else(|| anyhow!("no web status"))?;
    let k = web.kept.ok_or_else(|| anyhow!("no kept node"))?;
    ensure!(
        k.reason.contains("every web node is sick"),
        "kept for {:?}",
        k.reason
    );
    for n in [1, 2, 3] {
        lab.kill(n, Service::Phpfpm, Signal::Cont)?;
    }
    for p in [1, 2, 3] {
        wait_php_everywhere(lab, p, "UP", Duration::from_secs(30))?;
    }
    lab.wait_for(
        "the rotation to hold every node again",
        Duration::from_secs(10),
        || match web_rotation(lab, 3)? {
            (d, None) if d.is_empty() => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )?;
    eprintln!("kept sick n3 in service: {}", k.reason);
    Ok(())
}

fn killed_agent_leaves_two_that_agree_and_rejoins_on_start(lab: &Lab) -> Result<()> {
    let spec = lab.spec();
    let (leader, _) = lab.wait_for("agreement", Duration::from_secs(10), || {
        lab::agents_leader(spec)
    })?;
    lab.kill(leader, Service::Agent, Signal::Kill)?;
    let rest: Vec<u64> = spec.nodes().into_iter().filter(|&n| n != leader).collect();
    // Right after the kill the others still follow the dead leader, until their election
    // timeout: wait for a new one.
    let (new, _) = lab.wait_for(
        "the two others to elect a new leader",
        Duration::from_secs(10),
        || match agents_leader_among(spec, &rest)? {
            (l, _) if l == leader => Err(format!("both still follow the dead n{leader}")),
            agreed => Ok(agreed),
        },
    )?;
    ensure!(
        rest.contains(&new),
        "new leader n{new} is not among {rest:?}"
    );
    lab.start(leader, Service::Agent)?;
    lab.wait_for("all three to agree again", Duration::from_secs(15), || {
        lab::agents_leader(spec)
    })?;
    Ok(())
}

/// Waits until `volume status`, asked through node `via`'s glusterd, lists 3 of 3 bricks
/// online.
fn all_bricks_online(lab: &Lab, via: u64, within: Duration) -> Result<()> {
    lab.wait_for(
        &format!("3 of 3 bricks online through n{via}'s glusterd"),
        within,
        || {
            let xml = lab
                .gluster(via, &["volume", "status", "shop", "--xml"])
                .map_err(|e| format!("{e:#}"))?;
            let online = xml
                .split("<node>")
                .filter(|n| n.contains("/brick</path>") && n.contains("<status>1</status>"))
                .count();
            if online == 3 {
                Ok(())
            } else {
                Err(format!("{online} of 3 bricks online"))
            }
        },
    )
}

/// Issue 17: a killed glusterd is restarted by its node's agent (a remediation lease, service
/// control), and the volume, asked through that glusterd, shows 3 of 3 bricks online (the
/// bricks kept running meanwhile).
fn killed_glusterd_is_restarted_by_its_agent(lab: &Lab) -> Result<()> {
    let before = remedy_history(lab)?.last().map_or(0, |h| h.0);
    let killed = Instant::now();
    lab.kill(3, Service::Glusterd, Signal::Kill)?;
    let restarted = lab.wait_for(
        "n3's agent to restart its glusterd",
        Duration::from_secs(45),
        || {
            let h = remedy_history(lab).map_err(|e| format!("{e:#}"))?;
            h.iter()
                .find(|(i, d)| {
                    *i > before && d.contains("restart glusterd on n3") && d.contains(") done:")
                })
                .map(|_| killed.elapsed())
                .ok_or_else(|| {
                    format!(
                        "{:?}",
                        h.iter().filter(|(i, _)| *i > before).collect::<Vec<_>>()
                    )
                })
        },
    )?;
    all_bricks_online(lab, 3, Duration::from_secs(20))?;
    eprintln!("n3's glusterd killed: restarted by its agent after {restarted:?}");
    Ok(())
}

fn killed_brick_and_mount_come_back(lab: &Lab) -> Result<()> {
    let spec = lab.spec();
    let file = format!("var/brick-test-{}.txt", std::process::id());
    lab.kill(2, Service::Brick, Signal::Kill)?;
    let brick = spec.gluster_brick_spec(2);
    let brick_path = spec.gluster_brick(2).display().to_string();
    lab.wait_for(
        "volume status to show n2's brick offline",
        Duration::from_secs(15),
        || {
            let xml = lab
                .gluster(1, &["volume", "status", "shop", "--xml"])
                .map_err(|e| format!("{e:#}"))?;
            // An offline brick is listed with status 0, or left out altogether.
            let listed = xml.split("<node>").find(|n| n.contains(&brick_path));
            match listed {
                Some(node) if node.contains("<status>1</status>") => Err(format!("{brick} online")),
                _ => Ok(()),
            }
        },
    )?;
    // Two of three bricks still take writes.
    query::write_file_bounded(
        &spec.gluster_mount(1).join(&file),
        "two bricks",
        Duration::from_secs(10),
    )?;
    // Issue 17: n2's agent starts its dead brick (`gluster volume start shop force`) under a
    // remediation lease, and the volume shows 3 of 3 bricks online again.
    let brick_done = lab.wait_for(
        "n2's agent to start its brick",
        Duration::from_secs(45),
        || {
            let h = remedy_history(lab).map_err(|e| format!("{e:#}"))?;
            h.iter()
                .find(|(_, d)| {
                    d.contains(&format!("start brick {brick} on n2")) && d.contains(") done:")
                })
                .map(|(i, _)| *i)
                .ok_or_else(|| format!("{h:?}"))
        },
    )?;
    all_bricks_online(lab, 1, Duration::from_secs(15))?;
    let before = remedy_history(lab)?.last().map_or(brick_done, |h| h.0);
    let killed = Instant::now();
    lab.kill(3, Service::Mount, Signal::Kill)?;
    let dead = query::read_file_bounded(&spec.gluster_mount(3).join(&file), Duration::from_secs(5));
    ensure!(
        dead.is_err(),
        "read through n3's dead mount client: {dead:?}"
    );
    // Issue 17: the broken mount (ENOTCONN) drains n3 from every HAProxy, and its agent mounts
    // it again under a remediation lease; then n3 is readmitted and reads the file written
    // through n1.
    let drained =
        wait_php_everywhere(lab, 3, "MAINT", Duration::from_secs(15)).map(|_| killed.elapsed())?;
    let mnt = spec.gluster_mount(3).display().to_string();
    let remounted = lab.wait_for(
        "n3's agent to mount its mount again",
        Duration::from_secs(30),
        || {
            let h = remedy_history(lab).map_err(|e| format!("{e:#}"))?;
            let done = h.iter().find(|(i, d)| {
                *i > before && d.contains(&format!("remount {mnt} on n3")) && d.contains(") done:")
            });
            match done {
                Some(_) => Ok(killed.elapsed()),
                None => Err(format!(
                    "{:?}",
                    h.iter().filter(|(i, _)| *i > before).collect::<Vec<_>>()
                )),
            }
        },
    )?;
    let text =
        query::read_file_bounded(&spec.gluster_mount(3).join(&file), Duration::from_secs(10))?;
    ensure!(text == "two bricks", "n3 reads {text:?}");
    wait_php_everywhere(lab, 3, "UP", Duration::from_secs(20))?;
    eprintln!(
        "n3's FUSE client killed: drained everywhere after {drained:?}, remounted by its agent \
         after {remounted:?}, readmitted after {:?}",
        killed.elapsed()
    );
    Ok(())
}

fn partition_cuts_a_node_from_its_peers_but_not_the_host(lab: &Lab) -> Result<()> {
    let spec = lab.spec();
    let t = Duration::from_secs(2);
    lab.partition(3, None, false)?;
    // Measured from inside the nodes.
    ensure!(
        !net::tcp_reachable(spec, 1, spec.redis_addr(3), t)?,
        "n1 still reaches n3"
    );
    ensure!(
        !net::tcp_reachable(spec, 3, spec.mysql_addr(2), t)?,
        "n3 still reaches n2"
    );
    ensure!(
        net::tcp_reachable(spec, 1, spec.redis_addr(2), t)?,
        "n1 no longer reaches n2"
    );
    // The host still sees the cut node, and the cut node its own services.
    let st = lab.agent_status(3)?;
    ensure!(st.node_id.0 == 3, "n3 status: {}", st.node_id.0);
    ensure!(
        net::tcp_reachable(spec, 3, spec.redis_addr(3), t)?,
        "n3 lost its own Redis"
    );
    lab.wait_for(
        "Galera: n1 and n2 Primary without n3, n3 non-Primary",
        Duration::from_secs(20),
        || {
            galera_probe(lab, 1, |g| g.is_synced_in(2))?;
            galera_probe(lab, 3, |g| g.cluster_status != "Primary")
        },
    )?;
    lab.wait_for(
        "agents n1 and n2 to agree on a leader",
        Duration::from_secs(10),
        || agents_leader_among(spec, &[1, 2]),
    )?;
    lab.heal()?;
    ensure!(
        net::tcp_reachable(spec, 1, spec.redis_addr(3), t)?,
        "n1 does not reach n3 after heal"
    );
    Ok(())
}

fn oneway_partition_drops_only_traffic_towards_the_node(lab: &Lab) -> Result<()> {
    let spec = lab.spec();
    let t = Duration::from_secs(2);
    lab.partition(3, Some(1), true)?;
    ensure!(
        !net::udp_delivered(spec, 1, 3, t)?,
        "n1 -> n3 datagram arrived through a one-way cut"
    );
    ensure!(
        net::udp_delivered(spec, 3, 1, t)?,
        "n3 -> n1 datagram lost: the cut is not one-way"
    );
    ensure!(
        net::udp_delivered(spec, 2, 3, t)?,
        "n2 -> n3 datagram lost: the cut is not only from n1"
    );
    lab.heal()?;
    ensure!(
        net::udp_delivered(spec, 1, 3, t)?,
        "n1 -> n3 still lost after heal"
    );
    Ok(())
}

fn exec_runs_inside_the_node_namespace(lab: &Lab) -> Result<()> {
    let out = lab.exec(
        2,
        "ip",
        &["-4", "-o", "addr", "show", "dev", "eth0"],
        Duration::from_secs(5),
    )?;
    ensure!(
        out.success() && out.stdout.contains("10.77.0.12/24"),
        "ip addr in n2: {}",
        out.stdout
    );
    let cli = lab_cli()
        .args(["exec", "3", "--", "sh", "-c", "exit 7"])
        .output()?;
    ensure!(
        cli.status.code() == Some(7),
        "exec exit code: {:?}",
        cli.status
    );
    Ok(())
}

// ----- Redis failover ----------------------------------------------------------------------

/// Lease of the lab agents (`[failover] lease` at its default).
fn lease() -> Duration {
    triad::config::FailoverSection::default().lease
}

/// The Redis servers node `n`'s HAProxy routes to (in service: not in maintenance).
fn redis_routing(lab: &Lab, n: u64) -> Result<Vec<String>> {
    Ok(lab
        .haproxy_servers(n)?
        .into_iter()
        .filter(|s| s.backend == "be_redis" && !s.is_maint())
        .map(|s| s.server)
        .collect())
}

/// Waits until a write through every node's HAProxy is acknowledged, and returns when the
/// last node first succeeded.
fn writes_through_every_haproxy(lab: &Lab, key: &str, timeout: Duration) -> Result<Duration> {
    let start = Instant::now();
    for n in lab.spec().nodes() {
        lab.wait_for(
            &format!("a write through n{n}'s HAProxy"),
            timeout.saturating_sub(start.elapsed()),
            || {
                let r = lab
                    .redis_via_haproxy(
                        n,
                        &["SET", &format!("{key}:n{n}"), "1"],
                        Duration::from_secs(3),
                    )
                    .map_err(|e| format!("{e:#}"))?;
                if r == "OK" {
                    Ok(())
                } else {
                    Err(r)
                }
            },
        )?;
    }
    Ok(start.elapsed())
}

fn committed_master_other_than(lab: &Lab, old: u64) -> Result<u64> {
    lab.wait_for(
        "the agents to commit a new master",
        Duration::from_secs(20),
        || match lab.redis_master() {
            Ok(m) if m != old => Ok(m),
            Ok(m) => Err(format!("still n{m}")),
            Err(e) => Err(format!("{e:#}")),
        },
    )
}

fn replica_of(lab: &Lab, n: u64, master: u64, timeout: Duration) -> Result<()> {
    let want = lab.spec().node_ip(master).to_string();
    lab.wait_for(
        &format!("n{n} to be a linked replica of n{master}"),
        timeout,
        || match lab.redis_role(n) {
            Ok(r)
                if r.role != "master"
                    && r.master.as_deref().is_some_and(|m| m.starts_with(&want))
                    && r.link.as_deref() == Some("up") =>
            {
                Ok(())
            }
            Ok(r) => Err(r.to_string()),
            Err(e) => Err(format!("{e:#}")),
        },
    )
}

fn kill9_redis_master_fails_over_and_every_haproxy_follows(lab: &Lab) -> Result<()> {
    ensure!(
        lab.redis_master()? == 1,
        "the lab should start with the master on n1"
    );
    // A write acknowledged and replicated before the failure survives it.
    let r = lab.redis_via_haproxy(2, &["SET", "triad:before", "kept"], Duration::from_secs(3))?;
    ensure!(r == "OK", "write before the failure: {r}");
    for n in [2, 3] {
        lab.wait_for(
            &format!("n{n} to have the key"),
            Duration::from_secs(5),
            || match lab.redis_from(n, n, &["GET", "triad:before"], Duration::from_secs(3)) {
                Ok(v) if v.trim() == "kept" => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )?;
    }
    let hooks_before = hook_history(lab)?.last().map_or(0, |h| h.0);
    lab.kill(1, Service::Redis, Signal::Kill)?;
    let took = writes_through_every_haproxy(lab, "triad:after-kill", Duration::from_secs(20))?;
    let new = committed_master_other_than(lab, 1)?;
    let role = lab.redis_role(new)?;
    ensure!(role.role == "master", "committed master n{new} is {role}");
    let kept = lab.redis_from(new, new, &["GET", "triad:before"], Duration::from_secs(3))?;
    ensure!(
        kept.trim() == "kept",
        "the acknowledged write is gone: {kept:?}"
    );
    for n in lab.spec().nodes() {
        let routed = redis_routing(lab, n)?;
        ensure!(
            routed == [format!("redis{new}")],
            "n{n}'s HAProxy routes Redis to {routed:?}, not only to redis{new}"
        );
    }
    let status = lab.agent_status(new)?;
    let change = status
        .redis
        .and_then(|r| r.authority.last_change)
        .ok_or_else(|| anyhow!("no change recorded"))?;
    ensure!(
        change.kind == triad::cluster::ChangeKind::Automatic && change.reason.contains("refused"),
        "audit: {change:?}"
    );
    // The leader started the operators' pre hook as it proposed the failover (in the
    // background: nothing waited for it), and audited it.
    let epoch = change.epoch.0;
    lab.wait_for(
        "the failover's pre hook and its audit line",
        Duration::from_secs(10),
        || {
            let heard = hook_events(lab, "pre", "failover")
                .iter()
                .any(|v| v["service"] == "redis" && v["epoch"] == epoch);
            let h = hook_history(lab).map_err(|e| format!("{e:#}"))?;
            let audited = h.iter().any(|(i, d)| {
                *i > hooks_before
                    && d.starts_with("pre hook for failover ok")
                    && d.contains("an emergency, not waited for")
            });
            (heard && audited)
                .then_some(())
                .ok_or_else(|| format!("heard {heard}, audited {audited}: {h:?}"))
        },
    )?;
    // The old master returns (empty: the lab runs without persistence) and becomes a replica
    // of the new one; its own HAProxy never routes to it.
    lab.start(1, Service::Redis)?;
    replica_of(lab, 1, new, Duration::from_secs(20))?;
    ensure!(
        redis_routing(lab, 1)? == [format!("redis{new}")],
        "n1's HAProxy routes to its own Redis again"
    );
    eprintln!(
        "redis kill -9: writes through every HAProxy after {took:?} (poll {:?})",
        lab::LAB_POLL
    );
    Ok(())
}

/// The committed Redis epoch and suspicion, as n2's agent has them.
fn redis_epoch_and_suspect(lab: &Lab) -> Result<(u64, bool)> {
    let a = lab
        .agent_status(2)?
        .redis
        .ok_or_else(|| anyhow!("no redis status"))?
        .authority;
    Ok((a.epoch.0, a.suspect.is_some()))
}

/// A busy master is not a dead one: a Lua script that keeps the master busy for 500 ms (a
/// slow command, as `KEYS *` on a big keyspace or a fork would), three times, leaves the
/// master where it is with the default settings: no failover, not even a suspicion.
fn slow_redis_master_is_not_failed_over(lab: &Lab) -> Result<()> {
    ensure!(
        lab.redis_master()? == 1,
        "the lab should start with the master on n1"
    );
    let (epoch, _) = redis_epoch_and_suspect(lab)?;
    let busy = "#!lua flags=no-writes\nlocal t = redis.call('TIME') \
                local start = t[1] * 1000000 + t[2] \
                while true do local n = redis.call('TIME') \
                if n[1] * 1000000 + n[2] - start > 500000 then break end end return 1";
    for round in 1..=3 {
        let began = Instant::now();
        let r = lab.redis_from(1, 1, &["EVAL", busy, "0"], Duration::from_secs(5))?;
        let took = began.elapsed();
        ensure!(r.trim() == "1", "round {round}: the script answered {r:?}");
        ensure!(
            took >= Duration::from_millis(500),
            "round {round}: the script took {took:?}, not 500 ms"
        );
        for _ in 0..15 {
            let (e, suspect) = redis_epoch_and_suspect(lab)?;
            ensure!(
                e == epoch && !suspect,
                "round {round}: a 500 ms stall led to epoch {e} (was {epoch}), suspicion {suspect}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    ensure!(lab.redis_master()? == 1, "the master moved");
    Ok(())
}

/// A hung master (SIGSTOP): its own agent sees it time out on the same host for
/// `failover.hung_after`, every agent takes it out of its HAProxy, and a replica is promoted
/// without waiting for the replicas' links to go stale or for the lease. Exactly one failover;
/// when the old master resumes it takes no write through any HAProxy and becomes a replica.
fn hung_redis_master_fails_over_once_and_rejoins_as_a_replica(lab: &Lab) -> Result<()> {
    ensure!(
        lab.redis_master()? == 1,
        "the lab should start with the master on n1"
    );
    let (epoch, _) = redis_epoch_and_suspect(lab)?;
    lab.kill(1, Service::Redis, Signal::Stop)?;
    let stopped = Instant::now();
    let took = writes_through_every_haproxy(lab, "triad:after-stop", Duration::from_secs(20));
    // Resume it whatever happened, so that a failure leaves no stopped server behind.
    let resume = |lab: &Lab| lab.kill(1, Service::Redis, Signal::Cont);
    let took = match took {
        Ok(t) => t,
        Err(e) => {
            resume(lab)?;
            return Err(e);
        }
    };
    let new = committed_master_other_than(lab, 1)?;
    let status = lab.agent_status(new)?;
    let change = status
        .redis
        .and_then(|r| r.authority.last_change)
        .ok_or_else(|| anyhow!("no change recorded"))?;
    // Stopped for 4 s in all, then resumed.
    std::thread::sleep(Duration::from_secs(4).saturating_sub(stopped.elapsed()));
    resume(lab)?;
    ensure!(
        change.reason.contains("hung on its own host"),
        "audit: {change:?}"
    );
    replica_of(lab, 1, new, Duration::from_secs(20))?;
    for n in lab.spec().nodes() {
        let routed = redis_routing(lab, n)?;
        ensure!(
            routed == [format!("redis{new}")],
            "n{n}'s HAProxy routes Redis to {routed:?}, not only to redis{new}"
        );
    }
    let (e, _) = redis_epoch_and_suspect(lab)?;
    ensure!(
        e == epoch + 1,
        "{} failovers for one hung master (epoch {epoch} -> {e})",
        e - epoch
    );
    eprintln!("redis SIGSTOP: writes through every HAProxy after {took:?}");
    Ok(())
}

/// The operator's forced failover, where the cluster will not act by itself: in maintenance,
/// with the master killed. `triad failover redis --to 2` finds it down from a majority,
/// commits n2 as master (kind `forced`, with who and why in the audit), promotes it and points
/// n3 at it; writes flow through every HAProxy. Once maintenance ends, the old master returns
/// as a replica.
fn forced_failover_in_maintenance_moves_the_master_and_is_audited(lab: &Lab) -> Result<()> {
    ensure!(
        lab.redis_master()? == 1,
        "the lab should start with the master on n1"
    );
    let maintenance = |state: &str| -> Result<()> {
        let r = galera_cases::triad_cli(
            lab,
            2,
            &["maintenance", state, "--reason", "forced failover test"],
        )?;
        ensure!(
            r.code == 0,
            "maintenance {state}: {} {}",
            r.stdout,
            r.stderr
        );
        Ok(())
    };
    maintenance("on")?;
    let result = (|| -> Result<()> {
        let (epoch, _) = redis_epoch_and_suspect(lab)?;
        lab.kill(1, Service::Redis, Signal::Kill)?;
        std::thread::sleep(Duration::from_secs(2));
        ensure!(
            lab.redis_master()? == 1,
            "maintenance should hold the automatic failover"
        );
        let r = galera_cases::triad_cli(
            lab,
            3,
            &[
                "failover",
                "redis",
                "--to",
                "2",
                "--reason",
                "n1 died in maintenance",
                "--json",
            ],
        )?;
        ensure!(r.code == 0, "triad failover: {} {}", r.stdout, r.stderr);
        let report = r.json()?;
        ensure!(
            report["to"] == 2
                && report["old_master"]
                    .as_str()
                    .is_some_and(|o| o.starts_with("down from"))
                && report["promoted"] == true,
            "report: {report}"
        );
        let took = writes_through_every_haproxy(lab, "triad:forced", Duration::from_secs(20))?;
        let a = lab
            .agent_status(3)?
            .redis
            .ok_or_else(|| anyhow!("no redis status"))?
            .authority;
        let change = a.last_change.ok_or_else(|| anyhow!("no change recorded"))?;
        ensure!(
            a.master.map(|m| m.get()) == Some(2)
                && a.epoch.0 == epoch + 1
                && change.kind == triad::cluster::ChangeKind::Forced
                && change
                    .reason
                    .contains("forced by api@n3: n1 died in maintenance"),
            "audit: {change:?}"
        );
        eprintln!("forced failover: writes through every HAProxy after {took:?}");
        Ok(())
    })();
    maintenance("off")?;
    result?;
    lab.start(1, Service::Redis)?;
    replica_of(lab, 1, 2, Duration::from_secs(20))?;
    Ok(())
}

/// `CONFIG GET min-replicas-to-write` of node `n`'s Redis, asked from inside node `n`.
fn redis_min_replicas_to_write(lab: &Lab, n: u64) -> Result<u32> {
    let out = lab.redis_from(
        n,
        n,
        &["CONFIG", "GET", "min-replicas-to-write"],
        Duration::from_secs(2),
    )?;
    // Without a terminal, redis-cli prints the key and the value on two lines.
    let mut lines = out.lines().map(str::trim);
    match (lines.next(), lines.next()) {
        (Some("min-replicas-to-write"), Some(v)) => v
            .parse()
            .with_context(|| format!("n{n}: min-replicas-to-write {v:?}")),
        _ => bail!("n{n}: unexpected CONFIG GET reply {out:?}"),
    }
}

fn partition_of_the_redis_master_fences_it_and_the_majority_promotes(lab: &Lab) -> Result<()> {
    ensure!(
        lab.redis_master()? == 1,
        "the lab should start with the master on n1"
    );
    // The lab's agents run `[failover]` at its defaults. Redis's own guard
    // (`min-replicas-to-write 1` with `min-replicas-max-lag`) also answers NOREPLICAS once no
    // replica acknowledges, even when the agent does nothing; only the agent sets the fence
    // value. Before the cut n1 carries the guard, not the fence.
    let fo = triad::config::FailoverSection::default();
    let fence = triad::actuator::redis::FENCE_MIN_REPLICAS;
    let guard = redis_min_replicas_to_write(lab, 1)?;
    ensure!(
        guard == fo.redis_min_replicas_to_write,
        "n1 before the cut: min-replicas-to-write {guard}, expected the guard {}",
        fo.redis_min_replicas_to_write
    );
    lab.partition(1, None, false)?;
    let cut = Instant::now();
    // The cut-off master refuses writes from a client on its own node once its lease is gone.
    let fenced = lab.wait_for("n1's Redis to refuse writes", lease() * 4, || {
        let r = lab
            .redis_from(1, 1, &["SET", "triad:island", "x"], Duration::from_secs(2))
            .map_err(|e| format!("{e:#}"))?;
        if r.contains("NOREPLICAS") {
            Ok(cut.elapsed())
        } else {
            Err(format!("still writable: {}", r.trim()))
        }
    })?;
    ensure!(
        fenced <= lease() + Duration::from_secs(1) + lab::LAB_POLL * 2,
        "n1 fenced only {fenced:?} after the cut (lease {:?} + 1 s)",
        lease()
    );
    // The agent's own fence, apart from the guard: its lease lapses at most `lease` after the
    // cut, and it fences within the clock margin (which covers a reconcile cycle and one
    // command deadline); one more reconcile cycle and two polls for the observation itself.
    let bound = fo.lease + fo.clock_margin + fo.reconcile_interval + lab::LAB_POLL * 2;
    let agent_fenced = lab.wait_for(
        "n1's agent to fence its Redis (min-replicas-to-write at the fence value)",
        bound.saturating_sub(cut.elapsed()).max(lab::LAB_POLL),
        || match redis_min_replicas_to_write(lab, 1) {
            Ok(v) if v == fence => Ok(cut.elapsed()),
            Ok(v) => Err(format!("min-replicas-to-write {v}, not {fence}")),
            Err(e) => Err(format!("{e:#}")),
        },
    )?;
    ensure!(
        agent_fenced <= bound,
        "n1's agent fenced only {agent_fenced:?} after the cut (bound {bound:?})"
    );
    lab.wait_for(
        "n1's HAProxy to route no Redis",
        Duration::from_secs(5),
        || match redis_routing(lab, 1) {
            Ok(r) if r.is_empty() => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )?;
    // The majority promotes once the lease has surely run out.
    let new = lab.wait_for(
        "n2/n3 to commit a new master",
        Duration::from_secs(30),
        || match lab.agent_status(2) {
            Ok(s) => match s.redis.and_then(|r| r.authority.master) {
                Some(m) if m.get() != 1 => Ok(m.get()),
                other => Err(format!("master {other:?}")),
            },
            Err(e) => Err(format!("{e:#}")),
        },
    )?;
    let promoted = cut.elapsed();
    ensure!(
        promoted > lease(),
        "promoted {promoted:?} after the cut, before the lease ran out"
    );
    for n in [2, 3] {
        lab.wait_for(
            &format!("a write through n{n}'s HAProxy"),
            Duration::from_secs(10),
            || match lab.redis_via_haproxy(
                n,
                &["SET", "triad:majority", "1"],
                Duration::from_secs(3),
            ) {
                Ok(r) if r == "OK" => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )?;
    }
    // Still fenced on the island: never two writable masters.
    let r = lab.redis_from(1, 1, &["SET", "triad:island", "x"], Duration::from_secs(2))?;
    ensure!(
        r.contains("NOREPLICAS"),
        "the island accepts writes again: {r}"
    );
    let v = redis_min_replicas_to_write(lab, 1)?;
    ensure!(
        v == fence,
        "n1's agent lifted its fence while cut off: min-replicas-to-write {v}"
    );
    lab.heal()?;
    replica_of(lab, 1, new, Duration::from_secs(30))?;
    lab.wait_for(
        "n1's HAProxy to route to the new master",
        Duration::from_secs(10),
        || match redis_routing(lab, 1) {
            Ok(r) if r == [format!("redis{new}")] => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )?;
    eprintln!(
        "redis partition: n1 refused writes after {fenced:?}, its agent fenced after \
         {agent_fenced:?}, n{new} committed after {promoted:?}"
    );
    Ok(())
}

fn no_redis_promotion_without_an_agent_quorum(lab: &Lab) -> Result<()> {
    ensure!(
        lab.redis_master()? == 1,
        "the lab should start with the master on n1"
    );
    lab.kill(1, Service::Agent, Signal::Kill)?;
    lab.kill(2, Service::Agent, Signal::Kill)?;
    lab.kill(1, Service::Redis, Signal::Kill)?;
    // Longer than detection + lease + margin: the lone agent must not act.
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        for n in [2, 3] {
            let r = lab.redis_role(n)?;
            ensure!(
                r.role != "master",
                "n{n} was promoted without a quorum: {r}"
            );
        }
        std::thread::sleep(lab::LAB_POLL);
    }
    let s = lab.agent_status(3)?;
    let r = s.redis.ok_or_else(|| anyhow!("no redis status on n3"))?;
    ensure!(
        r.authority.master.map(|m| m.get()) == Some(1),
        "authority changed: {:?}",
        r.authority
    );
    ensure!(!r.local.lease_valid, "n3 holds a lease without a quorum");
    ensure!(
        redis_routing(lab, 3)?.is_empty(),
        "n3's HAProxy still routes Redis without a lease"
    );
    // Quorum back: the agents fail over (n1's Redis is still dead), then n1 follows.
    lab.start(1, Service::Agent)?;
    lab.start(2, Service::Agent)?;
    let new = committed_master_other_than(lab, 1)?;
    writes_through_every_haproxy(lab, "triad:quorum-back", Duration::from_secs(20))?;
    lab.start(1, Service::Redis)?;
    replica_of(lab, 1, new, Duration::from_secs(20))?;
    Ok(())
}

/// Removes the pre hooks' veto flag when a test ends, however it ends.
struct NoVeto<'a>(&'a Lab);

impl Drop for NoVeto<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0.spec().hook_veto_file());
    }
}

/// The lines of a hook log (one JSON event each) about `what`.
fn hook_events(lab: &Lab, phase: &str, what: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(lab.spec().hook_log(phase))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["what"] == what)
        .collect()
}

/// The leader's history lines of kind `hook` (index, details), oldest first.
fn hook_history(lab: &Lab) -> Result<Vec<(u64, String)>> {
    let (leader, _) = lab::agents_leader(lab.spec()).map_err(|e| anyhow!(e))?;
    let mut h: Vec<(u64, String)> = lab
        .agent_status(leader)?
        .history
        .iter()
        .filter(|h| h.kind == "hook")
        .map(|h| (h.index.0, h.details.clone()))
        .collect();
    h.sort();
    Ok(h)
}

/// An operator's pre hook vetoes a planned Redis switchover: the CLI says why, nothing moves,
/// and the history records the veto with the hook's exit status. Without the veto the same
/// switchover runs, and the post hook hears of it (its JSON event names the nodes and the
/// epoch) and is audited too.
fn pre_hook_vetoes_a_switchover_and_the_post_hook_hears_of_the_next(lab: &Lab) -> Result<()> {
    ensure!(
        lab.redis_master()? == 1,
        "the lab should start with the master on n1"
    );
    let _no_veto = NoVeto(lab);
    let (epoch, _) = redis_epoch_and_suspect(lab)?;
    // Every event of this test is newer than the history's newest hook line (the log of
    // events may hold older ones with the same epoch).
    let floor = hook_history(lab)?.last().map_or(0, |h| h.0);
    let pre_before = hook_events(lab, "pre", "switchover").len();
    std::fs::write(lab.spec().hook_veto_file(), "change freeze (lab test)\n")?;
    let r = galera_cases::triad_cli(lab, 3, &["switchover", "redis", "--to", "2", "--json"])?;
    let said = format!("{} {}", r.stdout, r.stderr);
    ensure!(r.code != 0, "the vetoed switchover exited 0: {said}");
    ensure!(
        said.contains("vetoed by the pre hook") && said.contains("change freeze (lab test)"),
        "the refusal does not say the pre hook vetoed it, and why: {said}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let (after, _) = redis_epoch_and_suspect(lab)?;
    ensure!(
        lab.redis_master()? == 1 && after == epoch,
        "a vetoed switchover changed the master or its epoch ({epoch} -> {after})"
    );
    ensure!(
        lab.redis_role(1)?.role == "master",
        "n1's Redis is no longer a master after a vetoed switchover"
    );
    let history = hook_history(lab)?;
    ensure!(
        history
            .iter()
            .any(|(_, d)| d.starts_with("pre hook for switchover vetoed")
                && d.contains("exit 1")
                && d.contains("change freeze (lab test)")),
        "the history does not record the veto with its exit status: {history:?}"
    );
    let pre = hook_events(lab, "pre", "switchover");
    ensure!(
        pre.len() == pre_before + 1 && pre[pre_before]["service"] == "redis",
        "the pre hook did not get the switchover's event once: {pre:?}"
    );

    // Without the veto: it runs, and the post hook hears of it.
    std::fs::remove_file(lab.spec().hook_veto_file())?;
    lab.switchover_redis(3, 2)?;
    ensure!(
        lab.redis_master()? == 2,
        "the switchover did not move the master to n2"
    );
    let post = lab.wait_for(
        "the post hook to hear of the switchover",
        Duration::from_secs(15),
        || {
            hook_events(lab, "post", "switchover")
                .into_iter()
                .find(|v| v["epoch"] == epoch + 1 && v["index"].as_u64() > Some(floor))
                .ok_or_else(|| "no post event for it yet".to_string())
        },
    )?;
    ensure!(
        post["nodes"] == serde_json::json!([2, 1]) && post["service"] == "redis",
        "the post event names the wrong nodes: {post}"
    );
    let index = post["index"].as_u64().unwrap_or(0);
    lab.wait_for(
        "the post hook's audit line",
        Duration::from_secs(10),
        || {
            let h = hook_history(lab).map_err(|e| format!("{e:#}"))?;
            h.iter()
                .find(|(_, d)| {
                    d.starts_with(&format!("post hook for switchover (entry {index}) ok"))
                        && d.contains("exit 0")
                })
                .map(|_| ())
                .ok_or_else(|| format!("not in {h:?}"))
        },
    )?;
    Ok(())
}

fn switchover_under_write_load_loses_no_acknowledged_write(lab: &Lab) -> Result<()> {
    ensure!(
        lab.redis_master()? == 1,
        "the lab should start with the master on n1"
    );
    let key = "triad:switchover:log";
    lab.redis_from(1, 1, &["DEL", key], Duration::from_secs(3))?;
    // One client on n3 appends 1..N through its HAProxy, one process per write, and prints
    // each reply: an integer is an acknowledged write.
    let script = format!(
        "for i in $(seq 1 1500); do r=$(redis-cli -h 127.0.0.1 -p {} RPUSH {key} $i 2>&1); \
         echo \"$i $r\"; done",
        lab::spec::HAPROXY_REDIS_PORT
    );
    let (out, report) = std::thread::scope(|sc| {
        let writer = sc.spawn(|| lab.exec(3, "bash", &["-c", &script], Duration::from_secs(120)));
        std::thread::sleep(Duration::from_secs(1));
        let report = lab.switchover_redis(3, 2);
        (writer.join(), report)
    });
    let out = out.map_err(|_| anyhow!("writer thread panicked"))??;
    let report = report?;
    let mut acked = Vec::new();
    let mut failed = 0;
    for line in out.stdout.lines() {
        let Some((i, reply)) = line.split_once(' ') else {
            continue;
        };
        if reply.trim().parse::<u64>().is_ok() {
            acked.push(i.to_string());
        } else {
            failed += 1;
        }
    }
    let new = lab.redis_master()?;
    ensure!(
        new == 2,
        "switchover to n2 ended with n{new} as master: {report}"
    );
    let stored = lab.redis_from(2, 2, &["LRANGE", key, "0", "-1"], Duration::from_secs(5))?;
    let stored: std::collections::BTreeSet<&str> = stored.lines().map(str::trim).collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|i| !stored.contains(i.as_str()))
        .collect();
    ensure!(
        lost.is_empty(),
        "{} acknowledged writes lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    ensure!(
        acked.len() > 1000,
        "only {} of 1500 writes acknowledged ({failed} failed)",
        acked.len()
    );
    eprintln!(
        "switchover under load: {} acknowledged, {failed} refused, 0 lost; paused {} ms",
        acked.len(),
        report["paused_ms"]
    );
    Ok(())
}

// ----- Galera writer (issue 13) -----------------------------------------------------------------

/// Bound on the agents committing a new Galera writer after a fault.
const WRITER_COMMIT: Duration = Duration::from_secs(20);
/// Bound on every HAProxy following a committed writer.
const WRITER_ROUTED: Duration = Duration::from_secs(10);
/// Bound on writes being acknowledged through every HAProxy again after a fault.
const WRITES_BACK: Duration = Duration::from_secs(30);
/// How long the load runs before a writer case's fault.
const WRITER_WARM_UP: Duration = Duration::from_secs(3);

/// The start of every writer case: every agent running, all three Synced in a cluster of 3,
/// the agents agreeing on a writer and every HAProxy routing `be_mysql` to it only. Returns
/// the agreed view.
fn writer_precondition(lab: &Lab, case: &str) -> Result<galera_writer::WriterView> {
    let nodes = lab.spec().nodes();
    for n in nodes {
        ensure!(
            lab.proc(n, Service::Agent)?.is_some(),
            "{case}: the agent of n{n} does not run"
        );
    }
    galera_cases::wait_all_synced(lab, galera_cases::SETTLE_TIMEOUT)
        .with_context(|| format!("{case}: the start"))?;
    lab.wait_for(
        "a committed Galera writer routed to by every HAProxy",
        galera_cases::SETTLE_TIMEOUT,
        || {
            let w = galera_writer::writer_routed_everywhere(lab)?;
            let v = galera_writer::agreed_writer(lab, &nodes)?;
            if v.writer == Some(w) {
                Ok(v)
            } else {
                Err(format!("routed to db{w}, agents now say {}", v.line()))
            }
        },
    )
    .with_context(|| format!("{case}: the start"))
}

/// The writer of `v`, which the precondition guarantees.
fn writer_of(case: &str, v: &galera_writer::WriterView) -> Result<u64> {
    v.writer
        .ok_or_else(|| anyhow!("{case}: no Galera writer: {}", v.line()))
}

/// Checks that the last change recorded in `v` is `kind` from `from` to `to` at `v`'s epoch.
fn check_change(
    case: &str,
    v: &galera_writer::WriterView,
    kind: &str,
    from: Option<u64>,
    to: u64,
) -> Result<()> {
    let c = v
        .change
        .as_ref()
        .ok_or_else(|| anyhow!("{case}: no writer change recorded: {}", v.line()))?;
    ensure!(
        c.kind == kind && c.from == from && c.to == to && c.epoch == v.epoch,
        "{case}: the change recorded is {} from {:?} to n{} at epoch {}; want {kind} from \
         {from:?} to n{to} at epoch {} ({})",
        c.kind,
        c.from,
        c.to,
        c.epoch,
        v.epoch,
        v.line()
    );
    Ok(())
}

/// The writer every agent of `nodes` agrees on once a node has rejoined, when `w` was the
/// writer before. A rejoin is an IST from one of the survivors: when that donor is the
/// writer, it is Donor/Desynced for a moment and the writer moves (issue 13: never route to
/// a node that is not Synced). Any other move fails.
fn writer_after_rejoin(lab: &Lab, case: &str, nodes: &[u64], w: u64) -> Result<u64> {
    let after = lab.wait_for(
        &format!(
            "agents {} to agree on a writer",
            galera_writer::names(nodes)
        ),
        Duration::from_secs(10),
        || galera_writer::agreed_writer(lab, nodes).map_err(|e| e.to_string()),
    )?;
    let now = after
        .writer
        .ok_or_else(|| anyhow!("{case}: no writer after the rejoin"))?;
    if now != w {
        let c = after
            .change
            .as_ref()
            .ok_or_else(|| anyhow!("{case}: the writer moved without a change record"))?;
        ensure!(
            c.kind == "automatic" && c.reason.contains("Donor/Desynced"),
            "{case}: the writer moved from n{w} for another reason than a donor's state: {}",
            after.line()
        );
        eprintln!(
            "{case}: the writer n{w} was a rejoin's IST donor and moved to n{now}: {}",
            c.reason
        );
    }
    Ok(now)
}

/// Waits until every agent of `nodes` agrees on writer `writer` at epoch `epoch` (an agent
/// that was cut off or whose node was down catches up).
fn wait_agreed_on(
    lab: &Lab,
    nodes: &[u64],
    writer: u64,
    epoch: u64,
    timeout: Duration,
) -> Result<galera_writer::WriterView> {
    lab.wait_for(
        &format!(
            "agents {} to agree on writer n{writer} at epoch {epoch}",
            galera_writer::names(nodes)
        ),
        timeout,
        || {
            let v = galera_writer::agreed_writer(lab, nodes)?;
            if v.writer == Some(writer) && v.epoch == epoch {
                Ok(v)
            } else {
                Err(v.line())
            }
        },
    )
}

/// Waits (bounded by [`galera_cases::REJOIN_TIMEOUT`]) until node `n`'s mariadbd runs again
/// as a process other than `old` (its agent restarted it) and is Synced in a cluster of 3.
/// At every poll the agents of `observers` must not rank it eligible while it answers and is
/// not Synced and Primary (the ranking is read first, then the node, which only moves towards
/// Synced while it rejoins). Returns when it was first seen Synced in 3.
fn wait_rejoined_never_eligible_early(
    lab: &Lab,
    case: &str,
    n: u64,
    old: lab::ProcId,
    observers: &[u64],
) -> Result<Instant> {
    let mut early: Option<String> = None;
    let synced = lab
        .wait_for(
            &format!("n{n} restarted by its agent and Synced in a cluster of 3"),
            galera_cases::REJOIN_TIMEOUT,
            || {
                let ranked = observers
                    .iter()
                    .find_map(|&o| galera_writer::writer_view_of(lab, o).ok())
                    .map(|v| v.eligible(n));
                let now = galera_cases::mariadb_proc(lab, n)
                    .map_err(|e| format!("{e:#}"))?
                    .ok_or_else(|| format!("mariadb on n{n} does not run"))?;
                if now == old {
                    return Err(format!("n{n} still shows the killed pid {}", old.pid));
                }
                match lab.galera(n) {
                    Ok(g) if g.is_synced_in(3) => Ok(Instant::now()),
                    Ok(g) => {
                        let synced_primary = g.state == "Synced" && g.cluster_status == "Primary";
                        if ranked == Some(true) && !synced_primary && early.is_none() {
                            early = Some(format!("ranked eligible as writer while {g}"));
                        }
                        Err(g.to_string())
                    }
                    Err(e) => Err(format!("{e:#}")),
                }
            },
        )
        .map_err(|e| {
            e.context(format!(
                "{case}: the agents: {}",
                galera_cases::agents_galera_line(lab)
            ))
        })?;
    if let Some(e) = early {
        bail!("{case}: n{n} was {e}");
    }
    Ok(synced)
}

/// Waits until every agent shows node `n` readmitted: not evicted, ranked eligible.
fn wait_readmitted(lab: &Lab, case: &str, n: u64, timeout: Duration) -> Result<Instant> {
    let nodes = lab.spec().nodes();
    lab.wait_for(
        &format!("{case}: every agent to show n{n} no longer evicted and ranked eligible"),
        timeout,
        || {
            let bad: Vec<String> = nodes
                .iter()
                .filter_map(|&o| match galera_writer::writer_view_of(lab, o) {
                    Ok(v) if v.readmitted(n) => None,
                    Ok(v) => Some(format!("n{o}: {}", v.line())),
                    Err(e) => Some(format!("n{o}: {e:#}")),
                })
                .collect();
            if bad.is_empty() {
                Ok(Instant::now())
            } else {
                Err(bad.join(" | "))
            }
        },
    )
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// a. kill -9 of the writer's mariadbd under load through every HAProxy: the survivors commit
/// a new writer, every HAProxy (the dead writer's node's too) routes `be_mysql` to it only,
/// and writes continue through every HAProxy; the killed node's agent rejoins it, it is
/// never routable nor ranked eligible while not Synced, its eviction is cleared once it is
/// back, and the writer stays where it is (sticky). Every acknowledged insert is on all three.
fn kill9_of_the_writer_commits_a_new_one_and_every_haproxy_follows(lab: &Lab) -> Result<()> {
    let case = "galera writer a (kill -9 of the writer)";
    let before = writer_precondition(lab, case)?;
    let w = writer_of(case, &before)?;
    let nodes = lab.spec().nodes();
    let survivors: Vec<u64> = nodes.iter().copied().filter(|&n| n != w).collect();
    let old = galera_cases::mariadb_proc(lab, w)?
        .ok_or_else(|| anyhow!("{case}: n{w}'s mariadb does not run"))?;
    let mut monitor = galera_writer::RoutingMonitor::start(lab)?;
    let mut load = galera_cases::start_load(lab, "wa")?;
    std::thread::sleep(WRITER_WARM_UP);
    monitor.watch(w);
    let at = galera_cases::signal_mariadb_at_once(lab, &[w], Signal::Kill)?;
    let after = galera_writer::wait_new_writer(lab, &survivors, &before, WRITER_COMMIT)?;
    let committed = at.elapsed();
    let new = writer_of(case, &after)?;
    check_change(case, &after, "automatic", Some(w), new)?;
    let routed = galera_writer::wait_routed_to(lab, &nodes, new, WRITER_ROUTED)?;
    let writes = load.wait_every_target_acked_after(at, WRITES_BACK)?;
    eprintln!(
        "{case}: n{w} killed; n{new} committed as writer (epoch {}) after {:.2}s; every \
         HAProxy routes be_mysql to db{new} only after {:.2}s; writes through every HAProxy \
         after {:.2}s; {}",
        after.epoch,
        secs(committed),
        secs(routed.saturating_duration_since(at)),
        secs(writes.saturating_duration_since(at)),
        after.line()
    );
    let synced = wait_rejoined_never_eligible_early(lab, case, w, old, &survivors)?;
    let readmitted = wait_readmitted(lab, case, w, Duration::from_secs(30))?;
    eprintln!(
        "{case}: n{w} rejoined by its agent, Synced in 3 {:.2}s after the kill; readmitted \
         (eviction cleared, ranked eligible) {:.2}s after it was Synced",
        secs(synced.saturating_duration_since(at)),
        secs(readmitted.saturating_duration_since(synced))
    );
    // Sticky: the old writer's return does not move the writer back (only its being the
    // rejoin's donor may move it, see `writer_after_rejoin`).
    let now_writer = writer_after_rejoin(lab, case, &nodes, new)
        .with_context(|| format!("{case}: the writer after n{w} rejoined"))?;
    galera_writer::wait_routed_to(lab, &nodes, now_writer, WRITER_ROUTED)?;
    let report = monitor.stop();
    eprintln!("{case}: {report}");
    report.ensure_clean(case)?;
    galera_cases::finish(lab, case, std::slice::from_mut(&mut load))?;
    Ok(())
}

/// b. kill -9 of a non-writer's mariadbd under load: the agents show it evicted with the
/// gcomm UUID it had, writes keep flowing through every HAProxy and the writer does not
/// move; the longest stretch without an acknowledged insert after the kill is printed (not
/// asserted). Once its agent has rejoined it, `evicted` no longer lists it and it is ranked
/// eligible again. Every acknowledged insert is on all three.
fn kill9_of_a_non_writer_evicts_it_and_writes_keep_flowing(lab: &Lab) -> Result<()> {
    let case = "galera writer b (kill -9 of a non-writer)";
    let before = writer_precondition(lab, case)?;
    let w = writer_of(case, &before)?;
    let nodes = lab.spec().nodes();
    let victim = nodes
        .iter()
        .copied()
        .filter(|&n| n != w)
        .max()
        .ok_or_else(|| anyhow!("{case}: no node other than the writer"))?;
    let survivors: Vec<u64> = nodes.iter().copied().filter(|&n| n != victim).collect();
    let uuid = galera_writer::gcomm_uuid(lab, victim)?;
    let old = galera_cases::mariadb_proc(lab, victim)?
        .ok_or_else(|| anyhow!("{case}: n{victim}'s mariadb does not run"))?;
    let mut monitor = galera_writer::RoutingMonitor::start(lab)?;
    let mut load = galera_cases::start_load(lab, "wb")?;
    std::thread::sleep(WRITER_WARM_UP);
    monitor.watch(victim);
    let at = galera_cases::signal_mariadb_at_once(lab, &[victim], Signal::Kill)?;
    let evicted = lab.wait_for(
        &format!(
            "agents {} to show n{victim} evicted with gcomm uuid {uuid}",
            galera_writer::names(&survivors)
        ),
        WRITER_COMMIT,
        || {
            let mut seen = Vec::new();
            for &o in &survivors {
                let v = galera_writer::writer_view_of(lab, o).map_err(|e| format!("{e:#}"))?;
                match v.evicted.get(&victim) {
                    Some(e) if e.gcomm_uuid == uuid => seen.push(e.clone()),
                    _ => return Err(format!("n{o}: {}", v.line())),
                }
            }
            Ok((Instant::now(), seen.remove(0)))
        },
    )?;
    let writes = load.wait_every_target_acked_after(at, WRITES_BACK)?;
    let v = galera_writer::agreed_writer(lab, &survivors).map_err(|e| anyhow!("{case}: {e}"))?;
    ensure!(
        v.writer == Some(w) && v.epoch == before.epoch,
        "{case}: the death of a non-writer moved the writer: was {}, now {}",
        before.line(),
        v.line()
    );
    let synced = wait_rejoined_never_eligible_early(lab, case, victim, old, &survivors)?;
    let gap = load.longest_gap_between(at, synced);
    let readmitted = wait_readmitted(lab, case, victim, Duration::from_secs(30))?;
    eprintln!(
        "{case}: n{victim} killed; evicted ({}, index {}: {}) after {:.2}s; writes through \
         every HAProxy after {:.2}s; longest commit gap from the kill to its rejoin {}; Synced \
         in 3 again after {:.2}s, eviction cleared and ranked eligible {:.2}s after that",
        evicted.1.gcomm_uuid,
        evicted.1.index,
        evicted.1.reason,
        secs(evicted.0.saturating_duration_since(at)),
        secs(writes.saturating_duration_since(at)),
        gap.map_or_else(|| "(none)".to_string(), |g| g.to_string()),
        secs(synced.saturating_duration_since(at)),
        secs(readmitted.saturating_duration_since(synced))
    );
    let now_writer = writer_after_rejoin(lab, case, &nodes, w)?;
    galera_writer::wait_routed_to(lab, &nodes, now_writer, WRITER_ROUTED)?;
    let report = monitor.stop();
    eprintln!("{case}: {report}");
    report.ensure_clean(case)?;
    galera_cases::finish(lab, case, std::slice::from_mut(&mut load))?;
    Ok(())
}

/// c. The writer's node cut off from its peers for 15 s under load: the majority commits a
/// new writer and routes to it, and writes flow through the majority's HAProxies; the cut
/// node goes non-Primary and its HAProxy routes nothing writable (no server but its own
/// non-Primary one is routable, and no insert through it that started after the cut is
/// acknowledged before the heal). After the heal everything converges: the cut node Synced
/// in 3, every agent on the new writer (sticky), every HAProxy routing to it, writes through
/// every HAProxy, every acknowledged insert on all three.
fn partition_of_the_writer_moves_it_to_the_majority(lab: &Lab) -> Result<()> {
    let case = "galera writer c (partition of the writer's node)";
    let before = writer_precondition(lab, case)?;
    let w = writer_of(case, &before)?;
    let nodes = lab.spec().nodes();
    let majority: Vec<u64> = nodes.iter().copied().filter(|&n| n != w).collect();
    let mut monitor = galera_writer::RoutingMonitor::start(lab)?;
    let mut load = galera_cases::start_load(lab, "wc")?;
    std::thread::sleep(WRITER_WARM_UP);
    lab.partition(w, None, false)?;
    let cut = Instant::now();
    let after = galera_writer::wait_new_writer(lab, &majority, &before, Duration::from_secs(30))?;
    let committed = cut.elapsed();
    let new = writer_of(case, &after)?;
    check_change(case, &after, "automatic", Some(w), new)?;
    let routed = galera_writer::wait_routed_to(lab, &majority, new, WRITER_ROUTED)?;
    let majority_targets: Vec<lab::load::Target> = majority
        .iter()
        .map(|&n| lab::load::Target::Haproxy(n))
        .collect();
    let writes = load.wait_targets_acked_after(&majority_targets, cut, WRITES_BACK)?;
    lab.wait_for(
        &format!("n{w}, cut off, to be non-Primary"),
        Duration::from_secs(20),
        || galera_probe(lab, w, |g| g.cluster_status != "Primary"),
    )?;
    let non_primary = cut.elapsed();
    let mut samples = 0;
    while cut.elapsed() < Duration::from_secs(15) {
        let r = galera_writer::routing_of(
            lab.spec(),
            w,
            galera_writer::WRITER_BACKEND,
            query::QUERY_TIMEOUT,
        )?;
        let foreign: Vec<u64> = r.routable.iter().copied().filter(|&p| p != w).collect();
        ensure!(
            foreign.is_empty(),
            "{case}: n{w}'s HAProxy, cut off, routes be_mysql to another node ({r})"
        );
        if r.routable.contains(&w) {
            galera_probe(lab, w, |g| g.cluster_status != "Primary").map_err(|g| {
                anyhow!("{case}: n{w}'s HAProxy, cut off, routes to its own db{w}, which is {g}")
            })?;
        }
        samples += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    lab.heal()?;
    let healed = Instant::now();
    monitor.watch(w);
    let island = load.acked_through_between(lab::load::Target::Haproxy(w), cut, healed);
    ensure!(
        island.is_empty(),
        "{case}: {} inserts through the cut n{w}'s HAProxy that started after the cut were \
         acknowledged before the heal (first: {} at +{:.2}s)",
        island.len(),
        island[0].id,
        secs(island[0].ended.saturating_duration_since(cut))
    );
    eprintln!(
        "{case}: n{w} cut off; n{new} committed as writer (epoch {}) after {:.2}s, routed by \
         the majority after {:.2}s, writes through the majority's HAProxies after {:.2}s; n{w} \
         non-Primary after {:.2}s and its HAProxy routed nothing writable in {samples} samples",
        after.epoch,
        secs(committed),
        secs(routed.saturating_duration_since(cut)),
        secs(writes.saturating_duration_since(cut)),
        secs(non_primary)
    );
    let synced = galera_cases::wait_recovered(lab, &[w], 3, galera_cases::REJOIN_TIMEOUT)?;
    wait_agreed_on(lab, &nodes, new, after.epoch, Duration::from_secs(30))
        .with_context(|| format!("{case}: after the heal"))?;
    let all_routed = galera_writer::wait_routed_to(lab, &nodes, new, Duration::from_secs(20))?;
    let everywhere = load.wait_every_target_acked_after(healed, WRITES_BACK)?;
    eprintln!(
        "{case}: healed; n{w} Synced in 3 after {:.2}s, every HAProxy routes to db{new} after \
         {:.2}s, writes through every HAProxy after {:.2}s",
        secs(synced.saturating_duration_since(healed)),
        secs(all_routed.saturating_duration_since(healed)),
        secs(everywhere.saturating_duration_since(healed))
    );
    let report = monitor.stop();
    eprintln!("{case}: {report}");
    report.ensure_clean(case)?;
    galera_cases::finish(lab, case, std::slice::from_mut(&mut load))?;
    Ok(())
}

/// d. A planned switchover under load (`triad switchover galera --to N --json`, which posts
/// `{"to": N}` to `POST /v1/switchover/galera`): it succeeds, the agents commit N at a higher
/// epoch as a `switchover` change, every HAProxy routes to N only, writes continue through
/// every HAProxy, no acknowledged insert is lost; the write pause the agent reports and the
/// longest stretch without an acknowledged insert are printed.
fn switchover_under_load_loses_no_acknowledged_insert(lab: &Lab) -> Result<()> {
    let case = "galera writer d (planned switchover under load)";
    let before = writer_precondition(lab, case)?;
    let w = writer_of(case, &before)?;
    let nodes = lab.spec().nodes();
    let to = nodes
        .iter()
        .copied()
        .find(|&n| n != w)
        .ok_or_else(|| anyhow!("{case}: no node other than the writer"))?;
    let mut monitor = galera_writer::RoutingMonitor::start(lab)?;
    let mut load = galera_cases::start_load(lab, "wd")?;
    std::thread::sleep(WRITER_WARM_UP);
    let asked = Instant::now();
    let run = galera_cases::triad_cli(
        lab,
        to,
        &["switchover", "galera", "--to", &to.to_string(), "--json"],
    )?;
    let answered = Instant::now();
    ensure!(
        run.code == 0,
        "{case}: triad switchover galera --to {to} failed (exit {}): {} {}",
        run.code,
        run.stdout.trim(),
        run.stderr.trim()
    );
    let answer = run.json()?;
    let after = lab.wait_for(
        &format!("every agent to commit n{to} as the writer"),
        Duration::from_secs(10),
        || {
            let v = galera_writer::agreed_writer(lab, &nodes)?;
            if v.writer == Some(to) && v.epoch > before.epoch {
                Ok(v)
            } else {
                Err(v.line())
            }
        },
    )?;
    check_change(case, &after, "switchover", Some(w), to)?;
    let routed = galera_writer::wait_routed_to(lab, &nodes, to, WRITER_ROUTED)?;
    let writes = load.wait_every_target_acked_after(answered, WRITES_BACK)?;
    let gap = load.longest_gap_between(asked, writes);
    let paused = answer.get("paused_ms").map_or_else(
        || format!("not given (answer: {answer})"),
        |p| format!("{p} ms"),
    );
    eprintln!(
        "{case}: n{w} -> n{to} (epoch {}): the switchover took {:.2}s; write pause reported by \
         the agent: {paused}; longest stretch without an acknowledged insert {}; every HAProxy \
         routes to db{to} {:.2}s after the answer, writes through every HAProxy {:.2}s after it",
        after.epoch,
        secs(answered.saturating_duration_since(asked)),
        gap.map_or_else(|| "(none)".to_string(), |g| g.to_string()),
        secs(routed.saturating_duration_since(answered)),
        secs(writes.saturating_duration_since(answered))
    );
    let report = monitor.stop();
    eprintln!("{case}: {report}");
    report.ensure_clean(case)?;
    galera_cases::finish(lab, case, std::slice::from_mut(&mut load))?;
    Ok(())
}

// ----- backups (issue 15) -------------------------------------------------------------------

/// Bound of one lab backup (the lab's data is small: about ten seconds).
const BACKUP_TIMEOUT: Duration = Duration::from_secs(180);

/// `backup now` under an insert load through every HAProxy: verified, all three components;
/// no insert fails and none waits long while a node is desynced; a restore of each component
/// gives the same rows, the same Redis keys and the same files as the live cluster.
fn backup_now_under_load_is_verified_and_restores_the_same_data(lab: &Lab) -> Result<()> {
    let spec = lab.spec();
    let case = "backup now";
    let w = writer_of(case, &writer_precondition(lab, case)?)?;
    // What the restore must give back: rows nobody else writes, Redis keys, files.
    let tag = format!("bk{}", std::process::id());
    for i in 0..20 {
        query::mysql(
            spec,
            w,
            &format!("INSERT INTO shop.visits (node, hits) VALUES ('{tag}', {i})"),
            Duration::from_secs(10),
        )?;
    }
    let master = committed_master_other_than(lab, 0)?;
    let keys: BTreeSet<String> = (0..30).map(|i| format!("{tag}:{i}")).collect();
    for k in &keys {
        query::redis(spec, master, &["SET", k, "v"], Duration::from_secs(5))?;
    }
    let media = spec
        .gluster_mount(w)
        .join("pub/media")
        .join(format!("{tag}.jpg"));
    query::write_file_bounded(&media, &format!("image {tag}"), Duration::from_secs(10))?;
    let etc = spec
        .gluster_mount(w)
        .join("app/etc")
        .join(format!("{tag}.xml"));
    query::write_file_bounded(&etc, "<config/>", Duration::from_secs(10))?;
    // Give the replicas a moment to have the keys (the RDB comes from one of them).
    std::thread::sleep(Duration::from_secs(1));
    let mut load =
        lab::load::WriteLoad::start(lab, lab::load::LoadOptions::every_haproxy(spec, "bk"))?;
    std::thread::sleep(Duration::from_secs(2));
    let record = lab::backup::now(spec, w, "lab: backup under load", BACKUP_TIMEOUT)?;
    std::thread::sleep(Duration::from_secs(1));
    let summary = load.stop();
    eprintln!(
        "  {case}: {} on {}: {}; {summary}",
        record.id, record.node, record.reason
    );
    ensure!(
        record.verified,
        "{case}: {} not verified: {}",
        record.id,
        record.reason
    );
    ensure!(
        record.node != triad::ids::NodeId(w),
        "{case}: taken on the writer n{w}"
    );
    let comps: Vec<&str> = record
        .summary
        .components
        .iter()
        .map(|c| c.component.as_str())
        .collect();
    ensure!(
        comps == ["db", "redis", "files"],
        "{case}: components {comps:?}"
    );
    ensure!(
        summary.failed == 0 && summary.acked > 0,
        "{case}: writes through every HAProxy failed during the backup: {summary}"
    );
    if let Some(g) = summary.longest_gap {
        ensure!(
            g.length < Duration::from_secs(2),
            "{case}: writes stalled: {summary}"
        );
    }
    ensure!(
        !record.summary.galera_position.is_empty() && record.summary.redis_offset.is_some(),
        "{case}: position or offset missing: {:?}",
        record.summary
    );
    let id = record.id.to_string();
    let dir = lab::backup::scratch("lab")?;
    // The database: the rows nobody else writes, the same as live.
    lab::backup::restore(spec, w, &id, "db", &dir.path().join("db"))?;
    let sql = format!("SELECT id, hits FROM shop.visits WHERE node = '{tag}' ORDER BY id");
    let restored =
        lab::backup::restored_query(&dir.path().join("db/db"), &dir.path().join("m"), &sql)?;
    let live = query::mysql(spec, w, &sql, Duration::from_secs(10))?;
    ensure!(
        restored.trim() == live.trim() && restored.lines().count() == 20,
        "{case}: restored rows differ from the live ones:\n{restored}\nvs\n{live}"
    );
    // Redis: every key.
    lab::backup::restore(spec, w, &id, "redis", &dir.path().join("redis"))?;
    let rdb_keys = lab::backup::rdb_keys(
        &dir.path().join("redis/redis/dump.rdb"),
        &dir.path().join("r"),
    )?;
    let missing: Vec<&String> = keys.iter().filter(|k| !rdb_keys.contains(*k)).collect();
    ensure!(
        missing.is_empty(),
        "{case}: keys missing from the restored RDB: {missing:?}"
    );
    // Files: the four directories as they are on the mount.
    lab::backup::restore(spec, w, &id, "files", &dir.path().join("files"))?;
    let restored = lab::backup::files_under(&dir.path().join("files"))?;
    let mut live = BTreeMap::new();
    for d in ["var", "pub/media", "pub/static", "app/etc"] {
        for (k, v) in lab::backup::files_under(&spec.gluster_mount(w).join(d))? {
            live.insert(format!("{d}/{k}"), v);
        }
    }
    ensure!(
        restored == live,
        "{case}: restored files differ: restored {:?}, live {:?}",
        restored.keys().collect::<Vec<_>>(),
        live.keys().collect::<Vec<_>>()
    );
    ensure!(
        restored.contains_key(&format!("pub/media/{tag}.jpg")),
        "{case}: media file missing"
    );
    // A restore never goes over live data.
    let refused = lab::backup::restore(spec, w, &id, "db", &spec.mysql_datadir(w).join("x"));
    ensure!(
        refused.is_err(),
        "{case}: a restore into the live datadir was accepted"
    );
    Ok(())
}

/// `kill -9` of the backup node's agent while it runs: its programs die with it (nothing of
/// the run is left), the lease expires after `backup.silence`, and the retry runs, verified, on
/// another node; never two at once.
fn kill9_of_the_backup_agent_retries_on_another_node(lab: &Lab) -> Result<()> {
    let spec = lab.spec();
    let case = "backup agent killed";
    writer_precondition(lab, case)?;
    let out = Command::new(&spec.triad_bin)
        .args([
            "backup",
            "now",
            "--no-wait",
            "--json",
            "--reason",
            "lab: agent killed",
        ])
        .args(["--api", &spec.api_url(1), "--token-file"])
        .arg(spec.token_file())
        .output()?;
    ensure!(
        out.status.success(),
        "{case}: backup now: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let index = v["applied_index"]
        .as_u64()
        .ok_or_else(|| anyhow!("{case}: no index: {v}"))?;
    let mine = triad::cluster::BackupTrigger::Manual {
        request: triad::ids::LogIndex(index),
    };
    let running = lab::backup::wait_list(
        spec,
        1,
        "the backup to start",
        Duration::from_secs(20),
        |b| {
            b.running
                .as_ref()
                .is_some_and(|r| r.lease.trigger == mine && r.progress.is_some())
        },
    )?;
    let lease = running
        .running
        .map(|r| r.lease)
        .ok_or_else(|| anyhow!("{case}: no lease"))?;
    let holder = lease.node.0;
    lab.kill(holder, Service::Agent, Signal::Kill)?;
    let killed = Instant::now();
    // Its programs die with it.
    let work = spec.agent_data_dir(holder).join("backup");
    let left = lab.wait_for(
        "the killed agent's backup programs to die",
        Duration::from_secs(3),
        || {
            let p = lab::backup::processes_under(&work);
            if p.is_empty() {
                Ok(())
            } else {
                Err(p.join("; "))
            }
        },
    );
    let others: Vec<u64> = spec.nodes().into_iter().filter(|&n| n != holder).collect();
    let ask = others[0];
    let done = lab::backup::wait_list(
        spec,
        ask,
        "the retry on another node",
        BACKUP_TIMEOUT,
        |b| {
            b.catalog
                .iter()
                .any(|r| r.trigger == mine && r.attempt == 2)
        },
    );
    lab.start(holder, Service::Agent)?;
    left?;
    let done = done?;
    let first = done
        .catalog
        .iter()
        .find(|r| r.trigger == mine && r.attempt == 1)
        .cloned()
        .ok_or_else(|| anyhow!("{case}: no first attempt in the catalog"))?;
    let retry = done
        .catalog
        .iter()
        .find(|r| r.trigger == mine && r.attempt == 2)
        .cloned()
        .ok_or_else(|| anyhow!("{case}: no retry"))?;
    eprintln!(
        "  {case}: {} on n{holder} ended after {:.1}s: {}; retry {} on {}: {}",
        first.id,
        killed.elapsed().as_secs_f64(),
        first.reason,
        retry.id,
        retry.node,
        retry.reason
    );
    ensure!(
        !first.verified && first.expired,
        "{case}: the first attempt did not expire: {first:?}"
    );
    ensure!(
        retry.node.0 != holder,
        "{case}: the retry ran on the killed node"
    );
    ensure!(retry.verified, "{case}: the retry failed: {}", retry.reason);
    // Never two at once: the retry's lease came after the first attempt's end.
    ensure!(
        retry.started_at >= first.finished_at,
        "{case}: the retry started at {:?}, before the first ended at {:?}",
        retry.started_at,
        first.finished_at
    );
    Ok(())
}

/// A repository with damaged pack files: the next backup is reported failed with the reason,
/// not verified. The repository is then put aside and the next backup starts a new one.
fn a_damaged_repository_fails_the_backup(lab: &Lab) -> Result<()> {
    let spec = lab.spec();
    let case = "damaged repository";
    writer_precondition(lab, case)?;
    let (repo, aside) = lab::backup::repository(spec);
    // Every pack file damaged in its middle: one of them holds trees (which `restic check`
    // reads) and the others data the next backup shares by deduplication (which its restore
    // reads); which is which is restic's business.
    let packs: Vec<std::path::PathBuf> = std::fs::read_dir(repo.join("data"))?
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .map(|f| f.path())
        .filter(|p| p.is_file())
        .collect();
    ensure!(
        !packs.is_empty(),
        "{case}: no pack file in {}",
        repo.display()
    );
    for pack in &packs {
        let mut bytes = std::fs::read(pack)?;
        let len = bytes.len();
        for b in bytes.iter_mut().take(len.min(400)).skip(len.min(100)) {
            *b ^= 0xff;
        }
        std::fs::set_permissions(pack, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        std::fs::write(pack, &bytes)?;
    }
    let record = lab::backup::now(spec, 1, "lab: damaged repository", BACKUP_TIMEOUT);
    // Put the damaged repository aside whatever happened: later backups start a new one.
    let _ = std::fs::remove_dir_all(&aside);
    std::fs::rename(&repo, &aside)?;
    std::fs::remove_dir_all(&aside)?;
    let record = record?;
    eprintln!(
        "  {case}: {} (attempt {}) on {}: {}",
        record.id, record.attempt, record.node, record.reason
    );
    ensure!(
        !record.verified,
        "{case}: {} verified despite the damage",
        record.id
    );
    ensure!(
        record.reason.contains("repository check") || record.reason.contains("verify"),
        "{case}: the reason does not say what failed: {}",
        record.reason
    );
    let b = lab::backup::list(spec, 2)?;
    ensure!(
        b.last_failure.as_ref().is_some_and(|f| f.id == record.id),
        "{case}: status does not show the failure: {:?}",
        b.last_failure
    );
    Ok(())
}

/// Issue 17: an operator's pre hook vetoes a backup run: the run fails at once with the
/// hook's reason (each attempt asks its node's hook), nothing is taken, and `triad backup
/// list` shows the failure.
fn pre_hook_vetoes_a_backup(lab: &Lab) -> Result<()> {
    let spec = lab.spec();
    let case = "vetoed backup";
    let _no_veto = NoVeto(lab);
    std::fs::write(spec.hook_veto_file(), "backup freeze (lab test)\n")?;
    let record = lab::backup::now(spec, 1, "lab: vetoed backup", BACKUP_TIMEOUT)?;
    eprintln!(
        "  {case}: {} (attempt {}) on {}: {}",
        record.id, record.attempt, record.node, record.reason
    );
    ensure!(
        !record.verified,
        "{case}: {} verified despite the veto",
        record.id
    );
    ensure!(
        record.reason.contains("vetoed by the pre hook")
            && record.reason.contains("backup freeze (lab test)"),
        "{case}: the reason does not name the veto: {}",
        record.reason
    );
    let b = lab::backup::list(spec, 2)?;
    ensure!(
        b.last_failure.as_ref().is_some_and(|f| f.id == record.id),
        "{case}: status does not show the failure: {:?}",
        b.last_failure
    );
    let vetoed = hook_events(lab, "pre", "backup").len();
    ensure!(vetoed >= 1, "{case}: no pre hook heard of the backup");
    Ok(())
}

// ----- teardown -----------------------------------------------------------------------------

/// Tears the lab down and checks that nothing of it is left: none of its processes, no mount
/// under the state directory, no namespace, no bridge; and that commands then say "not up".
fn teardown_and_check(lab: Lab) -> Result<()> {
    let spec = lab.spec().clone();
    let procs = down::lab_processes(&spec);
    ensure!(!procs.is_empty(), "found no lab processes before down");
    let report = lab.down()?;
    eprintln!("    lab down in {:.1}s", report.took.as_secs_f64());
    ensure!(
        report.leftovers.is_empty(),
        "down left: {}",
        report.leftovers.join("; ")
    );
    ensure!(
        report.took <= Duration::from_secs(10),
        "down took {:?}",
        report.took
    );
    // Killed daemons may be zombies for a moment; zombies are not running.
    let alive: Vec<String> = procs
        .iter()
        .filter(|id| id.is_alive())
        .map(|id| format!("{} ({})", id.pid, lab::process::comm(id.pid)))
        .collect();
    ensure!(
        alive.is_empty(),
        "lab processes survived down: {}",
        alive.join(", ")
    );
    let traces = down::traces(&spec);
    ensure!(traces.is_empty(), "left behind: {}", traces.join("; "));
    for n in spec.nodes() {
        ensure!(
            !net::netns_exists(&spec, n),
            "netns {} exists",
            spec.netns(n)
        );
    }
    ensure!(!net::bridge_exists(&spec), "bridge {} exists", spec.bridge);
    let st = lab_cli().arg("status").output()?;
    ensure!(
        st.status.code() == Some(69),
        "status on a lab that is down: {:?}",
        st.status
    );
    let k = lab_cli().args(["kill", "1", "redis"]).output()?;
    ensure!(
        k.status.code() == Some(69),
        "kill on a lab that is down: {:?}",
        k.status
    );
    Ok(())
}

// ----- harness ------------------------------------------------------------------------------

// ----- probes (issue: health probes reported to the leader) -------------------------------

/// The view of `subject`'s `service` in agent `n`'s status: (status, failure, error, observer).
fn service_view(
    lab: &Lab,
    n: u64,
    subject: u64,
    service: &str,
) -> std::result::Result<triad::api::ServiceStatus, String> {
    let st = lab.agent_status(n).map_err(|e| format!("{e:#}"))?;
    st.nodes
        .get(&triad::ids::NodeId(subject))
        .and_then(|v| v.iter().find(|s| s.service == service).cloned())
        .ok_or_else(|| format!("agent n{n} reports no {service} of n{subject} yet"))
}

/// Waits until agent `n` shows `subject`'s `service` (its own agent's view) with `want`, and
/// returns how long it took.
fn wait_service(
    lab: &Lab,
    n: u64,
    subject: u64,
    service: &str,
    timeout: Duration,
    want: impl Fn(&triad::api::ServiceStatus) -> bool,
) -> Result<Duration> {
    let start = Instant::now();
    lab.wait_for(
        &format!("agent n{n}'s view of n{subject}/{service}"),
        timeout,
        || {
            let v = service_view(lab, n, subject, service)?;
            if want(&v) {
                Ok(())
            } else {
                Err(format!(
                    "{} by n{} ({}ms old): {}",
                    v.status.as_str(),
                    v.observer,
                    v.age_ms,
                    v.error.clone().unwrap_or_default()
                ))
            }
        },
    )?;
    Ok(start.elapsed())
}

const PROBED: [&str; 5] = ["mariadb", "redis", "phpfpm", "gluster", "gluster_mount"];

fn probes_report_every_service_healthy_and_metrics_are_clean(lab: &Lab) -> Result<()> {
    let spec = lab.spec();
    for n in spec.nodes() {
        for subject in spec.nodes() {
            for svc in PROBED {
                wait_service(lab, n, subject, svc, Duration::from_secs(30), |v| {
                    v.status == triad::probe::Status::Healthy && v.observer.get() == subject
                })?;
            }
            // Cross-checks: every agent probes every Redis and MariaDB.
            for svc in ["redis", "mariadb"] {
                let v = service_view(lab, n, subject, svc).map_err(|e| anyhow!(e))?;
                ensure!(
                    v.seen_by.len() == 3,
                    "n{n}: n{subject}/{svc} seen by {:?}, want all three agents",
                    v.seen_by
                );
            }
        }
        let (code, metrics) =
            triad_tests::lab::services::agent_get(spec, n, "/metrics", Duration::from_secs(2))?;
        ensure!(code == 200, "n{n} /metrics answered {code}");
        for want in [
            "triad_service_up{node=\"n1\",service=\"redis\",target=\"\"} 1",
            "triad_galera_cluster_size{node=\"n2\"} 3",
            "triad_probe_duration_seconds_bucket",
            "triad_gluster_bricks_online",
            "triad_phpfpm_listen_queue",
        ] {
            ensure!(metrics.contains(want), "n{n} /metrics lacks {want}");
        }
        if !triad_tests::promtool_check_metrics(&metrics)? {
            eprintln!("promtool not installed: metrics of n{n} not linted");
        }
    }
    Ok(())
}

/// Budget for a probe to notice a change: fall (2) checks at the default 1 s interval, the
/// 800 ms timeout, one report gap and scheduling slack.
const NOTICE: Duration = Duration::from_secs(6);

fn probes_follow_kill_stop_and_restart_of_each_service(lab: &Lab) -> Result<()> {
    use triad::probe::{FailureKind, Status};
    let refused = |v: &triad::api::ServiceStatus| {
        v.status == Status::Unreachable && v.failure == Some(FailureKind::Refused)
    };
    let healthy = |v: &triad::api::ServiceStatus| v.status == Status::Healthy;
    let mut report = Vec::new();
    // (node, lab service, probe service): each killed, seen dead, started, seen healthy.
    for (n, svc, probe) in [
        (2, Service::Redis, "redis"),
        (2, Service::Phpfpm, "phpfpm"),
        (3, Service::Mariadb, "mariadb"),
    ] {
        let before = remedy_history(lab)?.last().map_or(0, |h| h.0);
        lab.kill(n, svc, Signal::Kill)?;
        // A killed pool is restarted by its agent (a remediation) as soon as its probe says
        // refused, which can be between two polls here: the remediation's reason, taken from
        // that very report, shows the probe saw it too.
        let down = if probe == "phpfpm" {
            let started = Instant::now();
            lab.wait_for(
                &format!("agent n{n}'s probe to see its pool refuse"),
                NOTICE,
                || {
                    let v = service_view(lab, n, n, probe)?;
                    if refused(&v) {
                        return Ok(());
                    }
                    let h = remedy_history(lab).map_err(|e| format!("{e:#}"))?;
                    let seen = h.iter().any(|(i, d)| {
                        *i > before
                            && d.contains(&format!("restart php-fpm on n{n}"))
                            && d.contains("Connection refused")
                    });
                    if seen {
                        Ok(())
                    } else {
                        Err(format!("{} {:?}", v.status.as_str(), v.error))
                    }
                },
            )?;
            started.elapsed()
        } else {
            wait_service(lab, n, n, probe, NOTICE, refused)?
        };
        // The peers' cross-checks see it too (Redis and MariaDB are probed by every agent),
        // each within its own fall threshold.
        if probe != "phpfpm" {
            let peer = if n == 2 { 1 } else { 2 };
            wait_service(lab, peer, n, probe, NOTICE, |v| {
                v.seen_by.values().filter(|s| !s.is_up()).count() == 3
            })?;
        }
        // The node's agent restarts its mariadbd itself (Galera recovery); a start from
        // here could race its `--wsrep-recover` on the same datadir.
        if svc != Service::Mariadb {
            lab.start(n, svc)?;
        }
        let up = wait_service(lab, n, n, probe, Duration::from_secs(60), healthy)?;
        report.push(format!(
            "{probe} n{n}: down seen in {down:?}, healthy {up:?} after start"
        ));
    }
    // A hung process: SIGSTOP gives a timeout, not a refusal; SIGCONT brings it back.
    for (n, svc, probe) in [
        (2, Service::Redis, "redis"),
        (2, Service::Phpfpm, "phpfpm"),
        (3, Service::Mariadb, "mariadb"),
    ] {
        lab.kill(n, svc, Signal::Stop)?;
        let hung = wait_service(lab, n, n, probe, NOTICE, |v| {
            v.status == Status::Unreachable && v.failure == Some(FailureKind::Timeout)
        })?;
        lab.kill(n, svc, Signal::Cont)?;
        // MariaDB may need to rejoin Galera after the pause before it is Synced again.
        let back = wait_service(lab, n, n, probe, Duration::from_secs(30), healthy)?;
        report.push(format!(
            "{probe} n{n} SIGSTOP: timeout seen in {hung:?}, healthy {back:?} after SIGCONT"
        ));
    }
    // glusterd gone: its CLI cannot connect, the volume probe says so.
    lab.kill(1, Service::Glusterd, Signal::Kill)?;
    let g = wait_service(lab, 1, 1, "gluster", Duration::from_secs(20), |v| {
        v.status == Status::Unreachable
    })?;
    lab.start(1, Service::Glusterd)?;
    report.push(format!("gluster n1: glusterd death seen in {g:?}"));
    eprintln!("probe timings: {}", report.join("; "));
    Ok(())
}

fn partition_hangs_the_mount_without_delaying_other_probes(lab: &Lab) -> Result<()> {
    use triad::probe::Status;
    lab.partition(3, None, false)?;
    // The cut node's mount hangs: its probe says down...
    wait_service(lab, 3, 3, "gluster_mount", Duration::from_secs(20), |v| {
        v.status == Status::Down
    })?;
    // ...while its other probes keep reporting on time, and the others see n3's Redis as
    // unreachable (timeouts: the packets vanish).
    for _ in 0..5 {
        for svc in ["redis", "phpfpm"] {
            let v = service_view(lab, 3, 3, svc).map_err(|e| anyhow!(e))?;
            ensure!(
                v.age_ms < 3000,
                "n3/{svc} observation is {} ms old while the mount hangs: probes are delayed",
                v.age_ms
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    wait_service(lab, 1, 3, "redis", NOTICE, |v| {
        v.seen_by.get(&triad::ids::NodeId(1)) == Some(&Status::Unreachable)
    })
    .context("n1 never saw n3's Redis unreachable")?;
    lab.heal()?;
    // After the heal the probe must tell the truth about the mount: healthy once the FUSE
    // client has reconnected, or down with the reason. (The FUSE client sometimes stays
    // disconnected after a cut, ENOTCONN; the restore mounts it again, and the agents see the
    // new mount because the node's tmpfs is a shared mount: see `up`.)
    let recovered = wait_service(lab, 3, 3, "gluster_mount", Duration::from_secs(30), |v| {
        v.status == Status::Healthy
    });
    if recovered.is_err() {
        let v = service_view(lab, 3, 3, "gluster_mount").map_err(|e| anyhow!(e))?;
        ensure!(
            v.status == Status::Down && v.error.is_some() && v.age_ms < 3000,
            "after heal the mount is neither healthy nor freshly reported down: {v:?}"
        );
        eprintln!(
            "note: the FUSE client of n3 did not reconnect within 30s after the heal; the probe \
             reports it down: {}",
            v.error.unwrap_or_default()
        );
    }
    Ok(())
}

fn mariadb_probe_with_bad_credentials_or_socket_says_why(lab: &Lab) -> Result<()> {
    use triad::probe::mariadb::{MariadbProbe, MysqlTarget};
    use triad::probe::{FailureKind, ProbeId, Service as S, Status};
    let spec = lab.spec();
    let timing = triad::config::ProbeTiming {
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(800),
        rise: 1,
        fall: 1,
    };
    let id = ProbeId {
        subject: triad::ids::NodeId(1),
        service: S::Mariadb,
        target: String::new(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let wrong = MariadbProbe::new(
        id.clone(),
        MysqlTarget::Socket(spec.mysql_socket(1)),
        "triad_monitor".into(),
        Some("not-the-password".into()),
        None,
        timing,
    );
    let (r, _) = rt.block_on(triad::probe::runner::check_once(&wrong));
    ensure!(
        r.status == Status::Unreachable && r.failure == Some(FailureKind::Auth),
        "wrong password: {r:?}"
    );
    let text = r.error.clone().unwrap_or_default();
    ensure!(
        !text.contains("not-the-password"),
        "the password leaked: {text}"
    );
    let missing = MariadbProbe::new(
        id,
        MysqlTarget::Socket("/nonexistent/mysqld.sock".into()),
        "triad_monitor".into(),
        Some(secret(&spec.monitor_password_file())?),
        Some(spec.mysql_datadir(1)),
        timing,
    );
    let (r, _) = rt.block_on(triad::probe::runner::check_once(&missing));
    ensure!(r.status == Status::Unreachable, "missing socket: {r:?}");
    ensure!(
        r.error
            .as_deref()
            .unwrap_or("")
            .contains("/nonexistent/mysqld.sock"),
        "the error must name the socket: {r:?}"
    );
    ensure!(
        r.details.get("grastate").is_some(),
        "an unreachable local server comes with grastate.dat: {}",
        r.details
    );
    Ok(())
}

type TestFn = fn(&Lab) -> Result<()>;

const HEALTHY: [(&str, TestFn); 8] = [
    (
        "every_service_is_healthy_on_every_node",
        every_service_is_healthy_on_every_node,
    ),
    (
        "php_page_reads_and_writes_through_haproxy_on_every_node",
        php_page_reads_and_writes_through_haproxy_on_every_node,
    ),
    (
        "gluster_file_written_on_one_node_is_read_on_another",
        gluster_file_written_on_one_node_is_read_on_another,
    ),
    (
        "monitor_user_reads_galera_status_but_no_shop_data",
        monitor_user_reads_galera_status_but_no_shop_data,
    ),
    (
        "agents_agree_on_a_leader_through_their_apis",
        agents_agree_on_a_leader_through_their_apis,
    ),
    (
        "status_cli_reports_every_service_and_rejects_bad_names",
        status_cli_reports_every_service_and_rejects_bad_names,
    ),
    (
        "probes_report_every_service_healthy_and_metrics_are_clean",
        probes_report_every_service_healthy_and_metrics_are_clean,
    ),
    (
        "mariadb_probe_with_bad_credentials_or_socket_says_why",
        mariadb_probe_with_bad_credentials_or_socket_says_why,
    ),
];

const FAULTS: [(&str, TestFn); 26] = [
    (
        "kill_redis_replica_then_start_relinks_it",
        kill_redis_replica_then_start_relinks_it,
    ),
    (
        "agent_started_redis_is_found_by_its_pidfile_and_never_doubled",
        agent_started_redis_is_found_by_its_pidfile_and_never_doubled,
    ),
    (
        "stop_and_cont_mariadb_evicts_and_readmits_the_node",
        stop_and_cont_mariadb_evicts_and_readmits_the_node,
    ),
    (
        "kill9_mariadb_is_restarted_by_its_agent_and_rejoins_by_ist",
        kill9_mariadb_is_restarted_by_its_agent_and_rejoins_by_ist,
    ),
    (
        "killed_pool_and_proxy_come_back_and_pages_keep_being_served",
        killed_pool_and_proxy_come_back_and_pages_keep_being_served,
    ),
    (
        "killed_pool_is_drained_restarted_and_readmitted",
        killed_pool_is_drained_restarted_and_readmitted,
    ),
    (
        "two_dead_pools_are_restarted_one_after_the_other",
        two_dead_pools_are_restarted_one_after_the_other,
    ),
    (
        "killed_pool_master_alone_takes_its_workers_and_comes_back",
        killed_pool_master_alone_takes_its_workers_and_comes_back,
    ),
    (
        "remediation_vetoed_by_the_pre_hook_stays_drained_until_the_veto_lifts",
        remediation_vetoed_by_the_pre_hook_stays_drained_until_the_veto_lifts,
    ),
    (
        "hung_pools_drain_but_never_the_last_one",
        hung_pools_drain_but_never_the_last_one,
    ),
    (
        "killed_agent_leaves_two_that_agree_and_rejoins_on_start",
        killed_agent_leaves_two_that_agree_and_rejoins_on_start,
    ),
    (
        "killed_glusterd_is_restarted_by_its_agent",
        killed_glusterd_is_restarted_by_its_agent,
    ),
    (
        "killed_brick_and_mount_come_back",
        killed_brick_and_mount_come_back,
    ),
    (
        "partition_cuts_a_node_from_its_peers_but_not_the_host",
        partition_cuts_a_node_from_its_peers_but_not_the_host,
    ),
    (
        "oneway_partition_drops_only_traffic_towards_the_node",
        oneway_partition_drops_only_traffic_towards_the_node,
    ),
    (
        "exec_runs_inside_the_node_namespace",
        exec_runs_inside_the_node_namespace,
    ),
    (
        "probes_follow_kill_stop_and_restart_of_each_service",
        probes_follow_kill_stop_and_restart_of_each_service,
    ),
    (
        "partition_hangs_the_mount_without_delaying_other_probes",
        partition_hangs_the_mount_without_delaying_other_probes,
    ),
    (
        "kill9_redis_master_fails_over_and_every_haproxy_follows",
        kill9_redis_master_fails_over_and_every_haproxy_follows,
    ),
    (
        "slow_redis_master_is_not_failed_over",
        slow_redis_master_is_not_failed_over,
    ),
    (
        "hung_redis_master_fails_over_once_and_rejoins_as_a_replica",
        hung_redis_master_fails_over_once_and_rejoins_as_a_replica,
    ),
    (
        "forced_failover_in_maintenance_moves_the_master_and_is_audited",
        forced_failover_in_maintenance_moves_the_master_and_is_audited,
    ),
    (
        "partition_of_the_redis_master_fences_it_and_the_majority_promotes",
        partition_of_the_redis_master_fences_it_and_the_majority_promotes,
    ),
    (
        "no_redis_promotion_without_an_agent_quorum",
        no_redis_promotion_without_an_agent_quorum,
    ),
    (
        "switchover_under_write_load_loses_no_acknowledged_write",
        switchover_under_write_load_loses_no_acknowledged_write,
    ),
    (
        "pre_hook_vetoes_a_switchover_and_the_post_hook_hears_of_the_next",
        pre_hook_vetoes_a_switchover_and_the_post_hook_hears_of_the_next,
    ),
];

/// The Galera writer cases (issue 13), after the Galera recovery cases, as
/// `lab::galera_writer::NAME` (`-- lab::galera_writer::` runs only them). Each runs like a
/// Galera recovery case ([`galera_test`]).
const GALERA_WRITER: [(&str, TestFn); 3] = [
    (
        "kill9_of_the_writer_commits_a_new_one_and_every_haproxy_follows",
        kill9_of_the_writer_commits_a_new_one_and_every_haproxy_follows,
    ),
    (
        "kill9_of_a_non_writer_evicts_it_and_writes_keep_flowing",
        kill9_of_a_non_writer_evicts_it_and_writes_keep_flowing,
    ),
    (
        "partition_of_the_writer_moves_it_to_the_majority",
        partition_of_the_writer_moves_it_to_the_majority,
    ),
];

/// The planned switchover of the Galera writer, a trial of its own
/// (`lab::galera_writer_switchover::NAME`) so that it can be left out on its own: while the
/// agent has no `triad switchover galera`, set [`GALERA_SWITCHOVER_LANDED`] to false and the
/// trial is reported ignored (`--include-ignored` still runs it).
const GALERA_WRITER_SWITCHOVER: [(&str, TestFn); 1] = [(
    "switchover_under_load_loses_no_acknowledged_insert",
    switchover_under_load_loses_no_acknowledged_insert,
)];

/// The backup cases (issue 15), after the Galera ones, as `lab::backup::NAME`. Each runs like
/// a Galera case ([`galera_test`]): a node is desynced and agents are killed.
const BACKUP: [(&str, TestFn); 4] = [
    (
        "backup_now_under_load_is_verified_and_restores_the_same_data",
        backup_now_under_load_is_verified_and_restores_the_same_data,
    ),
    (
        "kill9_of_the_backup_agent_retries_on_another_node",
        kill9_of_the_backup_agent_retries_on_another_node,
    ),
    (
        "a_damaged_repository_fails_the_backup",
        a_damaged_repository_fails_the_backup,
    ),
    ("pre_hook_vetoes_a_backup", pre_hook_vetoes_a_backup),
];

fn backup_name(case: &str) -> String {
    format!("backup::{case}")
}

/// Whether the agent implements the Galera switchover (see [`GALERA_WRITER_SWITCHOVER`]).
const GALERA_SWITCHOVER_LANDED: bool = true;

fn galera_writer_name(case: &str) -> String {
    format!("galera_writer::{case}")
}

fn galera_switchover_name(case: &str) -> String {
    format!("galera_writer_switchover::{case}")
}

const TEARDOWN: &str = "zz_down_stops_everything_and_leaves_nothing";

/// After every other case (failovers, switchovers, Galera recoveries, backups: the runs that
/// handle the most secrets), before the teardown.
const SECRETS: &str = "zy_no_secret_in_agent_logs_argv_environment_or_explanations";

/// #16: the lab's secrets (the API token, the MySQL passwords, the restic password, the
/// agents' private keys) appear in no agent's log, in no `/proc/PID/cmdline` or
/// `/proc/PID/environ` of an agent or a process it started, and in no `triad check-config
/// --json` explanation of an agent's config.
fn no_secret_in_agent_logs_argv_environment_or_explanations(lab: &Lab) -> Result<()> {
    let spec = lab.spec();
    let mut secrets: Vec<(String, String)> = Vec::new();
    for entry in std::fs::read_dir(spec.secrets_dir())? {
        let path = entry?.path();
        if path.is_file() {
            let value = secret(&path)?;
            if value.len() >= 8 {
                secrets.push((path.display().to_string(), value));
            }
        }
    }
    for entry in std::fs::read_dir(spec.secrets_dir().join("tls"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "key") {
            for line in std::fs::read_to_string(&path)?.lines() {
                if !line.starts_with("-----") && line.len() >= 16 {
                    secrets.push((path.display().to_string(), line.to_string()));
                }
            }
        }
    }
    ensure!(
        secrets.len() >= 5,
        "too few secrets found to check: {secrets:?}"
    );
    let mut places: Vec<(String, String)> = Vec::new();
    let agents: Vec<i32> = spec
        .nodes()
        .into_iter()
        .filter_map(|n| lab.proc(n, Service::Agent).ok().flatten().map(|p| p.pid))
        .collect();
    ensure!(
        agents.len() == spec.nodes().len(),
        "not every agent runs: {agents:?}"
    );
    // The agents and every process they started that runs now (and its children).
    let mut pids = agents.clone();
    let mut i = 0;
    while i < pids.len() {
        let parent = pids[i];
        for pid in lab::process::all_pids() {
            if lab::process::proc_stat(pid).is_some_and(|st| st.ppid == parent)
                && !pids.contains(&pid)
            {
                pids.push(pid);
            }
        }
        i += 1;
    }
    for pid in &pids {
        for what in ["cmdline", "environ"] {
            let path = format!("/proc/{pid}/{what}");
            if let Ok(bytes) = std::fs::read(&path) {
                places.push((path, String::from_utf8_lossy(&bytes).replace('\0', " ")));
            }
        }
    }
    for n in spec.nodes() {
        let log = spec.agent_log(n);
        places.push((log.display().to_string(), std::fs::read_to_string(&log)?));
        let out = Command::new(triad_tests::triad_bin()?)
            .args(["check-config", "--json"])
            .arg(spec.agent_config_path(n))
            .output()?;
        places.push((
            format!("triad check-config --json (n{n})"),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ));
    }
    let mut leaks = Vec::new();
    for (place, text) in &places {
        for (file, value) in &secrets {
            if text.contains(value.as_str()) {
                leaks.push(format!("{place} holds the secret from {file}"));
            }
        }
    }
    ensure!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
    eprintln!(
        "{} secrets, {} places ({} processes), no leak",
        secrets.len(),
        places.len(),
        pids.len()
    );
    Ok(())
}

/// The Galera recovery cases run after the other faults (they take the longest, and some take
/// every mariadbd down), under `lab::galera::` so that `-- lab::galera::` selects them.
fn galera_name(case: &str) -> String {
    format!("galera::{case}")
}

fn trial_names() -> Vec<String> {
    HEALTHY
        .iter()
        .chain(FAULTS.iter())
        .map(|(n, _)| n.to_string())
        .chain(galera_cases::cases().iter().map(|(n, _)| galera_name(n)))
        .chain(GALERA_WRITER.iter().map(|(n, _)| galera_writer_name(n)))
        .chain(
            GALERA_WRITER_SWITCHOVER
                .iter()
                .map(|(n, _)| galera_switchover_name(n)),
        )
        .chain(BACKUP.iter().map(|(n, _)| backup_name(n)))
        .chain(std::iter::once(SECRETS.to_string()))
        .chain(std::iter::once(TEARDOWN.to_string()))
        .collect()
}

fn ignored_trials(reason: &'static str) -> Vec<Trial> {
    trial_names()
        .into_iter()
        .map(|name| {
            Trial::ignorable_test(format!("lab::{name}"), move || {
                Ok(Completion::ignored_with(reason))
            })
            .with_ignored_flag(true)
        })
        .collect()
}

fn trials(shared: &Shared, reuse: bool) -> Vec<Trial> {
    let mut out = Vec::new();
    for (name, f) in HEALTHY {
        let s = Arc::clone(shared);
        out.push(Trial::test(format!("lab::{name}"), move || with_lab(&s, f)));
    }
    for (name, f) in FAULTS {
        let s = Arc::clone(shared);
        out.push(Trial::test(format!("lab::{name}"), move || {
            fault_test(&s, f)
        }));
    }
    for (name, f) in galera_cases::cases() {
        let s = Arc::clone(shared);
        out.push(Trial::test(
            format!("lab::{}", galera_name(name)),
            move || galera_test(&s, f),
        ));
    }
    for (name, f) in GALERA_WRITER {
        let s = Arc::clone(shared);
        out.push(Trial::test(
            format!("lab::{}", galera_writer_name(name)),
            move || galera_test(&s, f),
        ));
    }
    for (name, f) in GALERA_WRITER_SWITCHOVER {
        let s = Arc::clone(shared);
        out.push(
            Trial::test(
                format!("lab::{}", galera_switchover_name(name)),
                move || galera_test(&s, f),
            )
            .with_ignored_flag(!GALERA_SWITCHOVER_LANDED),
        );
    }
    for (name, f) in BACKUP {
        let s = Arc::clone(shared);
        out.push(Trial::test(
            format!("lab::{}", backup_name(name)),
            move || galera_test(&s, f),
        ));
    }
    let s = Arc::clone(shared);
    out.push(Trial::test(format!("lab::{SECRETS}"), move || {
        with_lab(&s, no_secret_in_agent_logs_argv_environment_or_explanations)
    }));
    let s = Arc::clone(shared);
    out.push(Trial::ignorable_test(
        format!("lab::{TEARDOWN}"),
        move || {
            if reuse {
                return Ok(Completion::ignored_with(
                    "TRIAD_LAB_REUSE=1: the lab stays up",
                ));
            }
            let lab = lock(&s)
                .take()
                .ok_or_else(|| Failed::from("the lab is not up"))?;
            teardown_and_check(lab).map_err(|e| Failed::from(format!("{e:#}")))?;
            Ok(Completion::Completed)
        },
    ));
    out
}

/// Blocks SIGINT, SIGTERM and SIGHUP in every thread and tears the lab down from a dedicated
/// thread when one arrives, so an interrupted run leaves no lab behind. (std's `Command`
/// passes the blocked mask on to children; the lab clears it before every exec, see
/// `lab::process::clear_signal_mask`.)
fn catch_interrupts(spec: LabSpec) {
    // SAFETY: plain libc signal-set manipulation on a local set; pthread_sigmask on this
    // (the main) thread before any other thread exists, so every later thread inherits it.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::spawn(move || {
        let mut sig: libc::c_int = 0;
        // SAFETY: sigwait on a valid, initialised set; `sig` is a valid out pointer.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            return;
        }
        eprintln!("\nlab tests: interrupted (signal {sig}); tearing the lab down");
        if let Err(e) = down::down(&spec, &lab::Progress::stderr()) {
            eprintln!("lab tests: down failed: {e:#}; run `tests/lab down`");
        }
        std::process::exit(128 + sig);
    });
}

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    // In order, one at a time, on the main thread: the tests share one lab.
    args.test_threads = Some(1);
    if args.list {
        return libtest_mimic::run(&args, ignored_trials("listing")).exit_code();
    }
    if !lab::is_root() {
        eprintln!("lab tests skipped: not root (need netns, mounts)");
        return libtest_mimic::run(&args, ignored_trials("not root")).exit_code();
    }
    let probe = trials(&Arc::new(Mutex::new(None)), false);
    if probe.iter().all(|t| args.is_filtered_out(t)) {
        return libtest_mimic::run(&args, probe).exit_code();
    }
    match run_with_lab(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lab tests: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The first few traces of a lab, for a one-line message.
fn summary(traces: &[String]) -> String {
    let mut shown: Vec<String> = traces.iter().take(3).cloned().collect();
    if traces.len() > 3 {
        shown.push(format!("and {} more", traces.len() - 3));
    }
    shown.join(", ")
}

fn run_with_lab(args: &Arguments) -> Result<ExitCode> {
    let bin = triad_tests::triad_bin()?;
    let spec = LabSpec::new(bin);
    let reuse = std::env::var("TRIAD_LAB_REUSE").is_ok_and(|v| v == "1");
    let mut traces = down::traces(&spec);
    if !traces.is_empty() && !reuse && down::lab_processes(&spec).is_empty() {
        // Remains of a run that was killed (or of a machine restart): namespaces, a bridge or a
        // state file, but not one process of the lab runs. Nothing there can be in use, so
        // clean it up rather than refuse; a lab with live daemons is still refused below.
        eprintln!(
            "lab tests: cleaning up the remains of a lab in which nothing runs ({})",
            summary(&traces)
        );
        let report = down::down(&spec, &lab::Progress::stderr())?;
        if !report.leftovers.is_empty() {
            bail!(
                "could not clean up the remains of an earlier lab: {}; run `tests/lab down`",
                report.leftovers.join(", ")
            );
        }
        traces = down::traces(&spec);
    }
    let lab = if traces.is_empty() {
        catch_interrupts(spec.clone());
        let t = Instant::now();
        eprintln!("lab tests: building the lab");
        let lab = Lab::up(spec.clone())?;
        eprintln!("lab tests: lab up in {:.1}s", t.elapsed().as_secs_f64());
        lab
    } else if reuse {
        eprintln!("lab tests: TRIAD_LAB_REUSE=1: using the lab that is up and leaving it up");
        Lab::attach(spec.clone())?
    } else {
        bail!(
            "a lab is already up ({}); the tests build and tear down their own. Run \
             `tests/lab down` first, or set TRIAD_LAB_REUSE=1 to run the tests on it (it stays up)",
            summary(&traces)
        );
    };
    let shared: Shared = Arc::new(Mutex::new(Some(lab)));
    let started = Instant::now();
    let conclusion = libtest_mimic::run(args, trials(&shared, reuse));
    let mut failed = conclusion.has_failed();
    // The teardown test was filtered out or failed before taking the lab: tear down here and
    // still check that nothing is left.
    let left = lock(&shared).take();
    if let Some(lab) = left {
        if lab.is_owned() {
            match teardown_and_check(lab) {
                Ok(()) => eprintln!("lab tests: lab torn down, nothing left behind"),
                Err(e) => {
                    eprintln!("lab tests: teardown check FAILED: {e:#}");
                    failed = true;
                }
            }
        }
    }
    eprintln!(
        "lab tests: {:.1}s with the lab",
        started.elapsed().as_secs_f64()
    );
    Ok(if failed {
        ExitCode::from(101)
    } else {
        ExitCode::SUCCESS
    })
}
