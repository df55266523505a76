//! Fault commands: `kill`, `start`, `partition`, `heal`, `exec`.
//!
//! `kill NODE SERVICE --signal S` signals the service's process group (master and workers
//! together, as systemd's default kill mode would) and waits for the effect: gone after
//! KILL/TERM (zombies count as gone), state T after STOP, running after CONT. `start` brings a
//! service back the way production would after a crash: MariaDB recovers its position and
//! rejoins by IST (or, with `bootstrap`, starts a new cluster when no other node is Primary).
//! Each command updates the state file under the lab lock and returns one line saying what
//! happened and how long it took.
//!
//! MariaDB, Redis and PHP-FPM share a pidfile with the node's agent
//! ([`LabSpec::service_pidfile`]; the agent's `[services] control = "process"`): a daemon the
//! agent restarted itself is found by it (`status`, `kill`), and `start` adopts it rather
//! than start a second one on the same data directory.
//!
//! Caveat: `kill ... --signal STOP` on a service leaves it frozen until `--signal CONT`; `down`
//! continues frozen daemons before stopping them.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use super::error::{require_root, LabError};
use super::net;
use super::process::{wait_gone, Liveness, ProcId, Signal};
use super::query::{self, QUERY_TIMEOUT};
use super::services::{self, brick_proc, mount_proc, MariadbStart};
use super::spec::{check_node, LabSpec, Service};
use super::state::{Cut, LabLock, LabState, Phase};

const LOCK_WAIT: Duration = Duration::from_secs(60);

/// Loads the state of a lab that is up, else [`LabError::NotUp`].
pub fn load_up(lab: &LabSpec) -> Result<LabState> {
    match LabState::load(lab)? {
        Some(s) if s.phase == Phase::Up => Ok(s),
        Some(_) => Err(LabError::NotUp(format!(
            "{} says `up` has not finished (or crashed)",
            lab.state_file().display()
        ))
        .into()),
        None => {
            Err(LabError::NotUp(format!("no state file {}", lab.state_file().display())).into())
        }
    }
}

/// The current process of `svc` on node `n`: the recorded one for daemons the lab launches,
/// the pidfile's for the brick and the FUSE client.
pub fn service_proc(lab: &LabSpec, state: &LabState, n: u64, svc: Service) -> Option<ProcId> {
    match svc {
        Service::Brick => brick_proc(lab, n),
        Service::Mount => mount_proc(lab, n),
        // A daemon the node's agent restarted is not the recorded one: its pidfile names it.
        _ => match state.proc(n, svc) {
            Some(id) if id.is_alive() => Some(id),
            recorded => services::service_by_pidfile(lab, n, svc).or(recorded),
        },
    }
}

/// Sends `sig` to `svc` on node `n` and waits for its effect (see the module docs).
pub fn kill(lab: &LabSpec, n: u64, svc: Service, sig: Signal) -> Result<String> {
    check_node(n)?;
    require_root("`kill`")?;
    let _lock = LabLock::acquire(lab, LOCK_WAIT)?;
    let state = load_up(lab)?;
    let id = service_proc(lab, &state, n, svc)
        .filter(ProcId::is_alive)
        .ok_or_else(|| {
            anyhow!("{svc} on n{n} is not running; nothing to signal (`start {n} {svc}` starts it)")
        })?;
    let start = Instant::now();
    if svc.is_launched() {
        id.signal_group(sig)?;
    } else {
        id.signal(sig)?;
    }
    let (effect, deadline) = match sig {
        Signal::Kill => ("gone", Duration::from_secs(5)),
        Signal::Term | Signal::Quit | Signal::Usr1 => ("gone", Duration::from_secs(15)),
        Signal::Stop => ("stopped", Duration::from_secs(5)),
        Signal::Cont => ("running", Duration::from_secs(5)),
    };
    let reached = loop {
        let now = id.liveness();
        let ok = match sig {
            Signal::Stop => now == Liveness::Stopped,
            Signal::Cont => now == Liveness::Running,
            _ => now == Liveness::Gone,
        };
        if ok || start.elapsed() >= deadline {
            break ok;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = start.elapsed().as_secs_f64();
    if !reached {
        bail!(
            "sent {sig} to {svc} on n{n} (pid {}), but it is not {effect} after {took:.1}s",
            id.pid
        );
    }
    Ok(format!(
        "{svc} on n{n} (pid {}): {sig} sent, {effect} after {took:.2}s",
        id.pid
    ))
}

/// Options of [`start`].
#[derive(Clone, Copy, Debug, Default)]
pub struct StartOptions {
    /// MariaDB only: start a new cluster on this node when no other node is Primary.
    pub bootstrap: bool,
}

/// Starts `svc` on node `n` (no-op when it runs) and waits until it serves.
pub fn start(lab: &LabSpec, n: u64, svc: Service, opts: StartOptions) -> Result<String> {
    check_node(n)?;
    require_root("`start`")?;
    let _lock = LabLock::acquire(lab, LOCK_WAIT)?;
    let mut state = load_up(lab)?;
    // The binary recorded at `up` runs the agents, whoever calls `start`.
    let lab = &LabSpec {
        triad_bin: state.spec.triad_bin.clone(),
        ..lab.clone()
    };
    if let Some(id) = service_proc(lab, &state, n, svc) {
        match id.liveness() {
            Liveness::Running if state.proc(n, svc) != Some(id) => {
                // Started outside the lab (by the node's agent): adopt it, never a second one
                // on the same data directory.
                state.set_proc(n, svc, id);
                state.save(lab)?;
                return Ok(format!(
                    "{svc} on n{n} already runs (pid {}, started outside the lab and found by \
                     its pidfile); not starting a second one",
                    id.pid
                ));
            }
            Liveness::Running => return Ok(format!("{svc} on n{n} already runs (pid {})", id.pid)),
            Liveness::Stopped => bail!(
                "{svc} on n{n} (pid {}) is stopped by SIGSTOP; continue it with \
                 `kill {n} {svc} --signal CONT`",
                id.pid
            ),
            Liveness::Gone => {}
        }
    }
    let t = Instant::now();
    let (id, how) = match svc {
        Service::Mariadb => start_mariadb(lab, &state, n, opts)?,
        Service::Brick => {
            let glusterd = state
                .proc(n, Service::Glusterd)
                .ok_or_else(|| anyhow!("no glusterd recorded for n{n}"))?;
            (
                services::start_brick(lab, n, glusterd, Duration::from_secs(30))?,
                "",
            )
        }
        Service::Mount => (services::start_mount(lab, n, Duration::from_secs(20))?, ""),
        _ => {
            // Leftovers of the old group (say, pool workers after a KILL of the master only)
            // would hold the port.
            if let Some(old) = state.proc(n, svc) {
                reap_group(old)?;
            }
            (services::start_simple(lab, n, svc)?, "")
        }
    };
    if svc.is_launched() {
        state.set_proc(n, svc, id);
        state.save(lab)?;
    }
    Ok(format!(
        "{svc} on n{n} started (pid {}){how}, serving after {:.1}s",
        id.pid,
        t.elapsed().as_secs_f64()
    ))
}

fn reap_group(old: ProcId) -> Result<()> {
    let members = old.group_members();
    if members.is_empty() {
        return Ok(());
    }
    old.signal_group(Signal::Kill)?;
    let ids: Vec<ProcId> = members.into_iter().filter_map(ProcId::capture).collect();
    let left = wait_gone(&ids, Duration::from_secs(3));
    if !left.is_empty() {
        bail!("leftover processes of the old service do not exit: {left:?}");
    }
    Ok(())
}

fn start_mariadb(
    lab: &LabSpec,
    state: &LabState,
    n: u64,
    opts: StartOptions,
) -> Result<(ProcId, &'static str)> {
    // Is any other node Primary? Then join it; otherwise only an explicit bootstrap.
    let running: Vec<u64> = lab
        .nodes()
        .into_iter()
        .filter(|&p| p != n)
        .filter(|&p| {
            // Found by its pidfile too: the node's agent may have restarted it.
            service_proc(lab, state, p, Service::Mariadb)
                .is_some_and(|id| id.liveness() == Liveness::Running)
        })
        .collect();
    let primary: Vec<(u64, u32)> = running
        .iter()
        .copied()
        .filter_map(|p| {
            let g = query::galera_status(lab, p, QUERY_TIMEOUT).ok()?;
            (g.cluster_status == "Primary").then_some((p, g.size))
        })
        .collect();
    if let Some(old) = state.proc(n, Service::Mariadb) {
        reap_group(old)?;
    }
    match (primary.first(), opts.bootstrap) {
        (Some(_), false) => {
            // Wait until the survivors have evicted this node's dead incarnation (~5 s after a
            // kill): it comes back with the same gcomm UUID (gvwstate.dat), and joining earlier
            // made the rejoin take ~18 s instead of ~3 s.
            let alive = u32::try_from(running.len()).unwrap_or(u32::MAX);
            crate::poll_until(
                &format!("the other MariaDB nodes to evict n{n}'s old process"),
                Duration::from_secs(20),
                Duration::from_millis(200),
                || {
                    let sizes: Vec<String> = running
                        .iter()
                        .map(|&p| match query::galera_status(lab, p, QUERY_TIMEOUT) {
                            Ok(g) if g.size <= alive => Ok(()),
                            Ok(g) => Err(format!("n{p}: {g}")),
                            Err(e) => Err(format!("n{p}: {e:#}")),
                        })
                        .filter_map(|r| r.err())
                        .collect();
                    if sizes.is_empty() {
                        Ok(())
                    } else {
                        Err(sizes.join("; "))
                    }
                },
            )?;
            // Joined means: in one Primary component with every MariaDB that runs. (A
            // survivor's `wsrep_cluster_size` may still count the dead node for ~5 s.)
            let size = u32::try_from(running.len() + 1).unwrap_or(u32::MAX);
            let id = services::start_mariadb(lab, n, MariadbStart::Rejoin, size, Duration::from_secs(90))
                .with_context(|| format!("MariaDB on n{n} rejoining"))?;
            Ok((id, ", rejoined the cluster"))
        }
        (Some(&(p, _)), true) => bail!(
            "n{p} is Primary: bootstrapping n{n} would split the cluster; start it without --bootstrap"
        ),
        (None, true) => {
            let id = services::start_mariadb(lab, n, MariadbStart::Bootstrap, 1, Duration::from_secs(60))
                .with_context(|| format!("MariaDB on n{n} bootstrapping"))?;
            Ok((id, ", bootstrapped a new cluster"))
        }
        (None, false) => bail!(
            "no other MariaDB node is Primary, so n{n} has nothing to join; bootstrap the most \
             advanced node with `start NODE mariadb --bootstrap` (see `mariadbd --wsrep-recover`)"
        ),
    }
}

/// Cuts node `node` from `from` (or from every other node), both ways unless `oneway`.
pub fn partition(lab: &LabSpec, node: u64, from: Option<u64>, oneway: bool) -> Result<String> {
    check_node(node)?;
    if let Some(f) = from {
        check_node(f)?;
        if f == node {
            return Err(LabError::Usage(format!("cannot cut n{node} from itself")).into());
        }
    }
    require_root("`partition`")?;
    let _lock = LabLock::acquire(lab, LOCK_WAIT)?;
    let mut state = load_up(lab)?;
    let cut = Cut { node, from, oneway };
    net::apply_cut(lab, &cut)?;
    let line = format!("cut: {cut}; the host still reaches n{node}");
    state.cuts.push(cut);
    state.save(lab)?;
    Ok(line)
}

/// Removes every cut.
pub fn heal(lab: &LabSpec) -> Result<String> {
    require_root("`heal`")?;
    let _lock = LabLock::acquire(lab, LOCK_WAIT)?;
    let mut state = load_up(lab)?;
    let healed = net::heal_all(lab)?;
    let n = state.cuts.len();
    state.cuts.clear();
    state.save(lab)?;
    if healed.is_empty() {
        Ok("no cuts to heal".to_string())
    } else {
        Ok(format!(
            "healed {n} cut(s) on {}",
            healed
                .iter()
                .map(|n| format!("n{n}"))
                .collect::<Vec<_>>()
                .join(" ")
        ))
    }
}

/// Runs `argv` inside node `n`'s namespace with the caller's stdio; returns its exit code.
pub fn exec(lab: &LabSpec, n: u64, argv: &[String]) -> Result<i32> {
    check_node(n)?;
    require_root("`exec`")?;
    if !net::netns_exists(lab, n) {
        return Err(LabError::NotUp(format!("namespace {} does not exist", lab.netns(n))).into());
    }
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| LabError::Usage("exec needs a command after `--`".to_string()))?;
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &lab.netns(n), program])
        .args(args)
        .env("PATH", super::process::child_path());
    super::process::clear_signal_mask(&mut cmd);
    let status = cmd
        .status()
        .with_context(|| format!("cannot run `{program}` in {}", lab.netns(n)))?;
    Ok(status.code().unwrap_or(128 + 9))
}
