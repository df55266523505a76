//! The lab: the three-VM production cluster rebuilt on one machine from real daemons, for
//! people (`tests/lab up|status|down|kill|start|partition|heal|exec`, the `triad-lab` binary)
//! and for tests ([`Lab`]).
//!
//! Each "VM" is a network namespace `haN` (10.77.0.1N on bridge `trlab0`, the host at
//! 10.77.0.1) running MariaDB Galera, Redis (n1 master), a PHP-FPM pool, glusterd with a brick
//! of the replica-3 volume `shop` FUSE-mounted at `nN/mnt`, HAProxy (Redis to the master,
//! MySQL to the committed Galera writer, web to the pools; plus the clustercheck-style MySQL
//! recipe on 127.0.0.1:3308 for the Galera benchmark) and the `triad` agent (API on
//! 10.77.0.1N:7100, Raft on :7200). State lives in `/tmp/triad-lab` (see [`LabSpec`]): a JSON
//! state file with the identity of every daemon, secrets, the PHP page, and one tmpfs per
//! node for all data.
//!
//! Design:
//! - Every daemon runs in the foreground under its own session, launched through a throwaway
//!   shell so PID 1 reaps it ([`process`]); it is known by pid *and* start time, so a recycled
//!   pid or a zombie is never mistaken for it, and it is only ever signalled by that identity
//!   or because it lives in a lab namespace. Nothing is killed by name.
//! - Any process can act on the lab: commands read the state file, changes happen under an
//!   exclusive lock ([`state`]). `down` needs no state at all (pidfiles and namespaces), which
//!   is how it cleans a crashed run.
//! - Every wait is bounded and says what it last saw; every query has a deadline
//!   ([`query`]), because frozen and cut-off services are the point of the lab.
//! - The recipe (order, settings, traps) is documented where it is used: [`up`], [`down`],
//!   [`configs`], [`services`], [`net`].
//!
//! Caveats:
//! - One lab per machine: the namespace, bridge and address names are fixed. It does not
//!   touch the loopback test cluster (127.0.0.1:7101-7103/7201-7203).
//! - Root only (namespaces, mounts, daemons as root with dropped workers). No systemd: the
//!   lab starts daemons directly, as production's process adapter will.
//! - No latency injection (the kernel has no netem); cuts are nftables drops.
//! - Gluster mounts are visible in the host's mount namespace: touching a cut node's mount
//!   blocks, so go through [`query::read_file_bounded`] and friends, and look for mounts in
//!   `/proc/self/mounts` only.

pub mod agent_config;
pub mod backup;
pub mod configs;
pub mod down;
pub mod error;
pub mod faults;
pub mod galera_cases;
pub mod galera_writer;
pub mod load;
pub mod net;
pub mod process;
pub mod query;
pub mod services;
pub mod spec;
pub mod state;
pub mod status;
pub mod up;
pub mod web;

use std::io::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

pub use error::{exit_code, is_root, LabError};
pub use faults::StartOptions;
pub use process::{Liveness, ProcId, Signal};
pub use query::{GaleraStatus, HaproxyServer, HttpAnswer, RedisRole};
pub use spec::{parse_node, LabSpec, Service, LAB_NODES};
pub use state::{Cut, LabState};
pub use status::LabStatus;

use crate::poll_until;

/// Progress lines: `[  3.2s] what (took 0.52s)`, to stdout, stderr or nowhere. Lines from
/// parallel steps never interleave.
pub struct Progress {
    start: Instant,
    sink: Sink,
    lock: Mutex<()>,
}

enum Sink {
    Stdout,
    Stderr,
    Quiet,
}

impl Progress {
    /// Lines to stdout (the CLI).
    pub fn stdout() -> Self {
        Progress::with(Sink::Stdout)
    }

    /// Lines to stderr (tests: stdout belongs to the test harness).
    pub fn stderr() -> Self {
        Progress::with(Sink::Stderr)
    }

    /// No lines.
    pub fn quiet() -> Self {
        Progress::with(Sink::Quiet)
    }

    fn with(sink: Sink) -> Self {
        Progress {
            start: Instant::now(),
            sink,
            lock: Mutex::new(()),
        }
    }

    /// One finished step and how long it took.
    pub fn step(&self, what: &str, took: Duration) {
        self.line(&format!("{what} ({:.2}s)", took.as_secs_f64()));
    }

    /// One line, prefixed with the time since the start.
    pub fn line(&self, what: &str) {
        let _guard = self.lock.lock();
        let text = format!("[{:>6.2}s] {what}\n", self.start.elapsed().as_secs_f64());
        let _ = match self.sink {
            Sink::Stdout => std::io::stdout().write_all(text.as_bytes()),
            Sink::Stderr => std::io::stderr().write_all(text.as_bytes()),
            Sink::Quiet => Ok(()),
        };
    }
}

/// Why a lab that is up is not healthy: dead or frozen recorded daemons, cuts. Empty when
/// every recorded daemon runs and nothing is cut.
pub fn health_problems(lab: &LabSpec, state: &LabState) -> Vec<String> {
    let mut out = Vec::new();
    for n in lab.nodes() {
        for svc in Service::ALL {
            match faults::service_proc(lab, state, n, svc).map(|id| id.liveness()) {
                Some(Liveness::Running) => {}
                Some(Liveness::Stopped) => out.push(format!("{svc} on n{n} is frozen")),
                _ => out.push(format!("{svc} on n{n} is not running")),
            }
        }
    }
    for c in &state.cuts {
        out.push(format!("cut: {c}"));
    }
    out
}

/// A probe: `Ok((leader, term))` when every agent answers `/v1/status` with the same known
/// leader and term; `Err` says what each reported.
pub fn agents_leader(lab: &LabSpec) -> std::result::Result<(u64, u64), String> {
    agents_leader_among(lab, &lab.nodes())
}

/// [`agents_leader`] over some nodes only (say, the two that were not killed).
pub fn agents_leader_among(
    lab: &LabSpec,
    nodes: &[u64],
) -> std::result::Result<(u64, u64), String> {
    let mut seen = Vec::new();
    let mut views = Vec::new();
    for &n in nodes {
        match services::agent_get(lab, n, "/v1/status", Duration::from_secs(2)) {
            Ok((200, body)) => match serde_json::from_str::<serde_json::Value>(&body) {
                Ok(v) => {
                    let leader = v["leader_id"].as_u64();
                    let term = v["term"].as_u64().unwrap_or(0);
                    seen.push(format!(
                        "n{n}: {} term {term} leader {}",
                        v["role"].as_str().unwrap_or("?"),
                        leader.map_or_else(|| "none".to_string(), |l| l.to_string())
                    ));
                    views.push((leader, term));
                }
                Err(e) => seen.push(format!("n{n}: bad JSON ({e})")),
            },
            Ok((code, body)) => seen.push(format!("n{n}: {code} {}", body.trim())),
            Err(e) => seen.push(format!("n{n}: {e:#}")),
        }
    }
    let seen = seen.join("; ");
    match views.first() {
        Some(&(Some(leader), term))
            if views.len() == nodes.len() && views.iter().all(|v| *v == (Some(leader), term)) =>
        {
            Ok((leader, term))
        }
        _ => Err(seen),
    }
}

/// Interval at which [`Lab::wait_for`] polls (queries spawn processes; 200 ms keeps a
/// two-core machine free for the daemons).
pub const LAB_POLL: Duration = Duration::from_millis(200);

/// A lab for a test or a tool: the spec plus whether dropping it tears the lab down.
///
/// [`Lab::up`] builds a lab that this value owns: dropping it (also while unwinding from a
/// panic) runs `down`. [`Lab::attach`] adopts a lab that is already up and leaves it up.
pub struct Lab {
    spec: LabSpec,
    owned: bool,
}

impl Lab {
    /// Builds the lab (see [`up::up`]), reporting progress to stderr, and owns it. When the
    /// build fails, the partial lab is torn down before the error is returned.
    pub fn up(spec: LabSpec) -> Result<Lab> {
        let progress = Progress::stderr();
        match up::up(&spec, &progress) {
            Ok(_) => Ok(Lab { spec, owned: true }),
            Err(e) => {
                if let Err(d) = down::down(&spec, &progress) {
                    eprintln!("triad-lab: tearing down the failed lab also failed: {d:#}");
                }
                Err(e)
            }
        }
    }

    /// Adopts the lab that is up (not torn down on drop). [`LabError::NotUp`] otherwise.
    pub fn attach(spec: LabSpec) -> Result<Lab> {
        let state = faults::load_up(&spec)?;
        // The agents run the binary recorded at `up`.
        let spec = LabSpec {
            triad_bin: state.spec.triad_bin,
            ..spec
        };
        Ok(Lab { spec, owned: false })
    }

    /// The layout.
    pub fn spec(&self) -> &LabSpec {
        &self.spec
    }

    /// Whether dropping this value tears the lab down.
    pub fn is_owned(&self) -> bool {
        self.owned
    }

    /// Tears the lab down now and reports what (if anything) was left behind.
    pub fn down(mut self) -> Result<down::DownReport> {
        self.owned = false;
        down::down(&self.spec, &Progress::stderr())
    }

    /// The current state file.
    pub fn state(&self) -> Result<LabState> {
        faults::load_up(&self.spec)
    }

    /// The current process of `svc` on node `n`, when it runs or is stopped.
    pub fn proc(&self, n: u64, svc: Service) -> Result<Option<ProcId>> {
        let state = self.state()?;
        Ok(faults::service_proc(&self.spec, &state, n, svc).filter(ProcId::is_alive))
    }

    /// Sends `sig` to `svc` on node `n` and waits for its effect.
    pub fn kill(&self, n: u64, svc: Service, sig: Signal) -> Result<String> {
        faults::kill(&self.spec, n, svc, sig)
    }

    /// Starts `svc` on node `n` and waits until it serves.
    pub fn start(&self, n: u64, svc: Service) -> Result<String> {
        faults::start(&self.spec, n, svc, StartOptions::default())
    }

    /// Cuts node `n` from `from` (or every other node), both ways unless `oneway`.
    pub fn partition(&self, n: u64, from: Option<u64>, oneway: bool) -> Result<String> {
        faults::partition(&self.spec, n, from, oneway)
    }

    /// Removes every cut.
    pub fn heal(&self) -> Result<String> {
        faults::heal(&self.spec)
    }

    /// Runs `program args` inside node `n` with a deadline.
    pub fn exec(
        &self,
        n: u64,
        program: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<process::CmdOutput> {
        spec::check_node(n)?;
        let mut cmd = process::in_netns(&self.spec.netns(n), program);
        cmd.args(args);
        process::run(&mut cmd, None, timeout)
    }

    /// Status of every node and service.
    pub fn status(&self) -> Result<LabStatus> {
        status::collect(&self.spec)
    }

    /// Polls `probe` every [`LAB_POLL`] until it returns `Ok` or `timeout` passes; the error
    /// names `what` and the last observation.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        probe: impl FnMut() -> std::result::Result<T, String>,
    ) -> Result<T> {
        poll_until(what, timeout, LAB_POLL, probe)
    }

    // ----- direct queries ---------------------------------------------------------------

    /// SQL as root on node `n` (UNIX socket).
    pub fn mysql(&self, n: u64, sql: &str) -> Result<String> {
        query::mysql(&self.spec, n, sql, query::QUERY_TIMEOUT)
    }

    /// Galera status of node `n`.
    pub fn galera(&self, n: u64) -> Result<GaleraStatus> {
        query::galera_status(&self.spec, n, query::QUERY_TIMEOUT)
    }

    /// `redis-cli ARGS` from inside node `from` against node `to`.
    pub fn redis_from(
        &self,
        from: u64,
        to: u64,
        args: &[&str],
        timeout: Duration,
    ) -> Result<String> {
        query::redis_from(&self.spec, from, to, args, timeout)
    }

    /// `redis-cli ARGS` inside node `n` through its HAProxy; the reply as text (error replies
    /// included).
    pub fn redis_via_haproxy(&self, n: u64, args: &[&str], timeout: Duration) -> Result<String> {
        query::redis_via_haproxy(&self.spec, n, args, timeout)
    }

    /// The committed Redis master (node number) as the first answering agent sees it.
    pub fn redis_master(&self) -> Result<u64> {
        let mut why = Vec::new();
        for n in self.spec.nodes() {
            match self.agent_status(n) {
                Ok(s) => match s.redis.and_then(|r| r.authority.master) {
                    Some(m) => return Ok(m.get()),
                    None => why.push(format!("n{n}: no master recorded")),
                },
                Err(e) => why.push(format!("n{n}: {e:#}")),
            }
        }
        bail!("no agent names a Redis master: {}", why.join("; "))
    }

    /// Planned Redis switchover to node `to`, asked through node `via`'s agent with the
    /// `triad switchover` CLI. Returns the agent's JSON report.
    pub fn switchover_redis(&self, via: u64, to: u64) -> Result<serde_json::Value> {
        let out = std::process::Command::new(&self.spec.triad_bin)
            .args(["switchover", "redis", "--json", "--to", &to.to_string()])
            .arg("--api")
            .arg(format!("http://{}", self.spec.api_addr(via)))
            .arg("--token-file")
            .arg(self.spec.token_file())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() {
            bail!(
                "triad switchover redis --to {to} via n{via} failed ({}): {text} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// Redis replication view of node `n`.
    pub fn redis_role(&self, n: u64) -> Result<RedisRole> {
        query::redis_role(&self.spec, n, query::QUERY_TIMEOUT)
    }

    /// One command on node `n`'s HAProxy admin socket.
    pub fn haproxy(&self, n: u64, command: &str) -> Result<String> {
        query::haproxy(&self.spec, n, command, query::QUERY_TIMEOUT)
    }

    /// Node `n`'s HAProxy servers.
    pub fn haproxy_servers(&self, n: u64) -> Result<Vec<HaproxyServer>> {
        query::haproxy_servers(&self.spec, n, query::QUERY_TIMEOUT)
    }

    /// `GET url` from inside node `n`.
    pub fn http_get_in(&self, n: u64, url: &str) -> Result<HttpAnswer> {
        query::http_get_in(&self.spec, n, url, Duration::from_secs(5))
    }

    /// `gluster --mode=script ARGS` through node `n`'s glusterd.
    pub fn gluster(&self, n: u64, args: &[&str]) -> Result<String> {
        let Some(id) = self.proc(n, Service::Glusterd)? else {
            bail!("glusterd on n{n} is not running");
        };
        query::gluster(id.pid, args, Duration::from_secs(30))
    }

    /// Node `n`'s agent `GET /v1/status`, parsed.
    pub fn agent_status(&self, n: u64) -> Result<crate::StatusBody> {
        let (code, body) =
            services::agent_get(&self.spec, n, "/v1/status", Duration::from_secs(2))?;
        if code != 200 {
            bail!("agent n{n}: GET /v1/status answered {code}: {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// Waits until the services of every node are healthy again after a fault: every
    /// recorded daemon running, Galera Synced with size 3 everywhere, both Redis replicas
    /// linked, every HAProxy seeing all PHP servers and all servers of the MySQL recipe
    /// backend UP, the agents agreeing on a leader and on a Galera writer, and every HAProxy
    /// routing `be_mysql` to that writer only. Fault tests call it to leave the lab as they
    /// found it.
    pub fn wait_healthy(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(Instant::now());
        self.wait_for("every lab daemon running, no cuts", left(), || {
            let state = self.state().map_err(|e| format!("{e:#}"))?;
            let p = health_problems(&self.spec, &state);
            if p.is_empty() {
                Ok(())
            } else {
                Err(p.join("; "))
            }
        })?;
        for n in self.spec.nodes() {
            self.wait_for(
                &format!("Galera n{n} Synced in a cluster of 3"),
                left(),
                || match self.galera(n) {
                    Ok(g) if g.is_synced_in(3) => Ok(()),
                    Ok(g) => Err(g.to_string()),
                    Err(e) => Err(format!("{e:#}")),
                },
            )?;
        }
        for n in [2, 3] {
            self.wait_for(
                &format!("Redis replica n{n} linked"),
                left(),
                || match self.redis_role(n) {
                    Ok(r) if r.link.as_deref() == Some("up") => Ok(()),
                    Ok(r) => Err(r.to_string()),
                    Err(e) => Err(format!("{e:#}")),
                },
            )?;
        }
        for n in self.spec.nodes() {
            self.wait_for(
                &format!("HAProxy n{n}: every PHP server and every MySQL recipe server UP"),
                left(),
                || {
                    let servers = self.haproxy_servers(n).map_err(|e| format!("{e:#}"))?;
                    let bad: Vec<String> = servers
                        .iter()
                        .filter(|s| {
                            s.backend == "be_php" || s.backend == galera_writer::RECIPE_BACKEND
                        })
                        .filter(|s| !s.is_up())
                        .map(|s| format!("{}/{} {}", s.backend, s.server, s.word()))
                        .collect();
                    if bad.is_empty() {
                        Ok(())
                    } else {
                        Err(bad.join(", "))
                    }
                },
            )?;
        }
        self.wait_for("the agents to agree on a leader", left(), || {
            agents_leader(&self.spec)
        })?;
        self.wait_for(
            "the agents to agree on a Galera writer and every HAProxy to route be_mysql to it \
             only",
            left(),
            || galera_writer::writer_routed_everywhere(self),
        )?;
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        self.owned = false;
        match down::down(&self.spec, &Progress::stderr()) {
            Ok(r) if r.leftovers.is_empty() => {}
            Ok(r) => eprintln!("triad-lab: down left behind: {}", r.leftovers.join("; ")),
            Err(e) => eprintln!("triad-lab: down failed: {e:#}"),
        }
    }
}
