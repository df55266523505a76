//! `down`: stops everything the lab started, by pid, and removes its namespaces, bridge and
//! mounts; also cleans a lab left behind by a crashed run (no state file needed).
//!
//! Order, each step bounded (~1 s in total on a healthy lab):
//! 1. delete the cuts (a cut-off Galera node otherwise delays its shutdown);
//! 2. FUSE mounts: `umount -l` (a plain umount of a cut node's mount waits out its timeout),
//!    then SIGTERM to the client, SIGKILL after 2 s;
//! 3. graceful stops, all nodes at once: agents (waited for: they would restart a stopped
//!    mariadbd) and Redis SIGTERM, HAProxy SIGUSR1 (soft
//!    stop), PHP-FPM SIGQUIT, glusterd, bricks and self-heal daemons SIGTERM; MariaDB one node
//!    at a time n3 -> n1, at most 2.5 s each, then SIGKILL (all at once left the last one
//!    waiting for the 5 s suspect timeout; in this order n1 ends `safe_to_bootstrap: 1`);
//!    then 2 s of grace (a Redis master waits up to 10 s on SIGTERM for a cut-off replica);
//! 4. sweep: whatever still runs inside a lab namespace gets SIGTERM (SIGKILL when it already
//!    had its TERM), then SIGKILL;
//! 5. keep logs and configs in `logs/nN`, unmount the tmpfs, delete namespaces and bridge,
//!    remove the generated secrets and web root;
//! 6. report anything left: live lab pids, mounts under the state directory, namespaces, the
//!    bridge.
//!
//! Every signal goes to a process proven to be the lab's: a recorded [`ProcId`] (pid and start
//! time) or a pid whose network namespace is a lab node's. Nothing is ever killed by name.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::error::require_root;
use super::net;
use super::process::{
    self, comm, netns_inode, netns_inode_of_pid, pids_in_netns, read_pidfile, wait_gone, ProcId,
    Signal,
};
use super::query::{is_mounted, mounts_under};
use super::services::{brick_proc, mount_proc};
use super::spec::{LabSpec, Service};
use super::state::{LabLock, LabState};
use super::Progress;

/// What `down` did and what it could not undo.
#[derive(Clone, Debug, Default)]
pub struct DownReport {
    /// Wall time.
    pub took: Duration,
    /// Whether there was anything to tear down.
    pub had_lab: bool,
    /// Everything still there afterwards; empty on success.
    pub leftovers: Vec<String>,
}

/// What of a lab exists on this machine: state file, namespaces, bridge, mounts. Empty when
/// no lab is there.
pub fn traces(lab: &LabSpec) -> Vec<String> {
    let mut out = Vec::new();
    if lab.state_file().exists() {
        out.push(format!("state file {}", lab.state_file().display()));
    }
    for n in lab.nodes() {
        if net::netns_exists(lab, n) {
            out.push(format!("netns {}", lab.netns(n)));
        }
        if net::link_exists(&lab.veth(n)) {
            out.push(format!("link {}", lab.veth(n)));
        }
    }
    if net::bridge_exists(lab) {
        out.push(format!("bridge {}", lab.bridge));
    }
    for (point, fstype) in mounts_under(&lab.dir) {
        out.push(format!("mount {point} ({fstype})"));
    }
    out
}

/// Every process of the lab known now: recorded daemons, pidfiles, and whatever runs in the
/// lab's namespaces. For checking, after `down`, that none survived.
pub fn lab_processes(lab: &LabSpec) -> Vec<ProcId> {
    let mut ids: Vec<ProcId> = Vec::new();
    if let Ok(Some(state)) = LabState::load(lab) {
        ids.extend(state.nodes.values().flat_map(|m| m.values().copied()));
    }
    for n in lab.nodes() {
        ids.extend(brick_proc(lab, n));
        ids.extend(mount_proc(lab, n));
        if let Some(ino) = netns_inode(&lab.netns(n)) {
            ids.extend(pids_in_netns(ino).into_iter().filter_map(ProcId::capture));
        }
    }
    ids.retain(ProcId::is_alive);
    ids.sort_by_key(|id| id.pid);
    ids.dedup();
    ids
}

/// Tears the lab down (see the module docs). Needs root; takes the lab lock.
pub fn down(lab: &LabSpec, progress: &Progress) -> Result<DownReport> {
    require_root("`down`")?;
    let _lock = LabLock::acquire(lab, Duration::from_secs(60))?;
    down_locked(lab, progress)
}

/// [`down`] for a caller that holds the lab lock.
pub fn down_locked(lab: &LabSpec, progress: &Progress) -> Result<DownReport> {
    let start = Instant::now();
    let state = LabState::load(lab).ok().flatten();
    let before = lab_processes(lab);
    if traces(lab).is_empty() && before.is_empty() {
        return Ok(DownReport {
            took: start.elapsed(),
            had_lab: false,
            leftovers: Vec::new(),
        });
    }
    let inos: Vec<Option<u64>> = lab
        .nodes()
        .iter()
        .map(|&n| netns_inode(&lab.netns(n)))
        .collect();
    let in_node = |pid: i32, n: u64| -> bool {
        let i = usize::try_from(n - 1).unwrap_or(0);
        inos.get(i)
            .copied()
            .flatten()
            .is_some_and(|ino| netns_inode_of_pid(pid) == Some(ino))
    };
    let recorded = |n: u64, svc: Service| -> Option<ProcId> {
        state
            .as_ref()
            .and_then(|s| s.proc(n, svc))
            .filter(ProcId::is_alive)
    };
    // A daemon by its record, else by its pidfile (a crashed run may not have recorded it),
    // accepted only inside the node's namespace.
    let find = |n: u64, svc: Service, pidfile: Option<&Path>| -> Option<ProcId> {
        recorded(n, svc).or_else(|| {
            pidfile
                .and_then(read_pidfile)
                .filter(|&pid| in_node(pid, n))
                .and_then(ProcId::capture)
        })
    };

    // 1. Cuts.
    let t = Instant::now();
    let healed = net::heal_all(lab).unwrap_or_default();
    if !healed.is_empty() {
        progress.step(
            &format!("cuts removed on {}", nodes_list(&healed)),
            t.elapsed(),
        );
    }

    // 2. FUSE mounts.
    let t = Instant::now();
    let mut clients = Vec::new();
    for n in lab.nodes() {
        let mnt = lab.gluster_mount(n);
        if is_mounted(&mnt, "fuse") {
            let mut um = std::process::Command::new("umount");
            um.arg("-l").arg(&mnt);
            let _ = process::run(&mut um, None, Duration::from_secs(5));
        }
        if let Some(id) = mount_proc(lab, n) {
            let _ = id.signal(Signal::Term);
            clients.push(id);
        }
    }
    for id in wait_gone(&clients, Duration::from_secs(2)) {
        let _ = id.signal(Signal::Kill);
    }
    progress.step("gluster mounts unmounted", t.elapsed());

    // 3. Graceful stops.
    let t = Instant::now();
    let mut stopping: Vec<ProcId> = Vec::new();
    let mut agents: Vec<ProcId> = Vec::new();
    for n in lab.nodes() {
        let haproxy_pid = lab.haproxy_dir(n).join("haproxy.pid");
        let php_pid = lab.phpfpm_dir(n).join("php-fpm.pid");
        let redis_pid = lab.redis_dir(n).join("redis.pid");
        let glusterd_pid = lab.gluster_dir(n).join("run/glusterd.pid");
        // The agent writes no pidfile; without a record the sweep finds it in the netns.
        for (svc, pidfile, sig) in [
            (Service::Agent, None, Signal::Term),
            (Service::Haproxy, Some(haproxy_pid.as_path()), Signal::Usr1),
            (Service::Phpfpm, Some(php_pid.as_path()), Signal::Quit),
            (Service::Redis, Some(redis_pid.as_path()), Signal::Term),
            (
                Service::Glusterd,
                Some(glusterd_pid.as_path()),
                Signal::Term,
            ),
        ] {
            if let Some(id) = find(n, svc, pidfile) {
                // A stopped (SIGSTOP) daemon cannot act on its signal until it continues.
                let _ = id.signal_group(Signal::Cont);
                let _ = id.signal_group(sig);
                if svc == Service::Agent {
                    agents.push(id);
                }
                stopping.push(id);
            }
        }
        // Bricks and self-heal daemons have their pidfiles in glusterd's private /run.
        for pidfile in pidfiles_under(&lab.gluster_dir(n).join("run/gluster")) {
            if let Some(id) = read_pidfile(&pidfile)
                .filter(|&pid| in_node(pid, n))
                .and_then(ProcId::capture)
            {
                let _ = id.signal(Signal::Cont);
                let _ = id.signal(Signal::Term);
                stopping.push(id);
            }
        }
    }
    // The agents restart a stopped mariadbd while its peers are Primary: they go first.
    wait_gone(&agents, Duration::from_secs(3));
    for n in [3, 2, 1] {
        if let Some(id) = find(n, Service::Mariadb, Some(&lab.mysql_pidfile(n))) {
            let _ = id.signal_group(Signal::Cont);
            let _ = id.signal_group(Signal::Term);
            if !wait_gone(&[id], Duration::from_millis(2500)).is_empty() {
                // Seen after a one-way cut was healed: gcomm still re-establishing links
                // keeps the leaving node waiting. Its data is discarded anyway.
                progress.line(&format!(
                    "mariadbd on n{n} still up after 2.5 s; killing it"
                ));
                let _ = id.signal_group(Signal::Kill);
                wait_gone(&[id], Duration::from_secs(1));
            }
            stopping.push(id);
        }
    }
    let slow = wait_gone(&stopping, Duration::from_secs(2));
    progress.step(
        &format!(
            "daemons stopped gracefully{}",
            if slow.is_empty() {
                String::new()
            } else {
                format!(" ({} still running after 2 s)", slow.len())
            }
        ),
        t.elapsed(),
    );

    // 4. Sweep the namespaces.
    let t = Instant::now();
    let signalled: BTreeSet<i32> = stopping.iter().map(|id| id.pid).collect();
    let mut swept = Vec::new();
    for sig in [Signal::Term, Signal::Kill] {
        let mut left = Vec::new();
        for n in lab.nodes() {
            let Some(ino) = netns_inode(&lab.netns(n)) else {
                continue;
            };
            for pid in pids_in_netns(ino) {
                if sig == Signal::Term && signalled.contains(&pid) {
                    continue;
                }
                if let Some(id) = ProcId::capture(pid) {
                    left.push(id);
                }
            }
        }
        // Also the recorded daemons, in case a namespace was deleted under them.
        if let Some(st) = &state {
            left.extend(
                st.nodes
                    .values()
                    .flat_map(|m| m.values().copied())
                    .filter(ProcId::is_alive),
            );
        }
        if left.is_empty() {
            continue;
        }
        swept.extend(
            left.iter()
                .map(|id| format!("{}({})", id.pid, comm(id.pid))),
        );
        for id in &left {
            let _ = id.signal(Signal::Cont);
            let _ = id.signal(sig);
        }
        wait_gone(&left, Duration::from_secs(1));
    }
    if !swept.is_empty() {
        swept.sort();
        swept.dedup();
        progress.step(
            &format!("swept leftover processes: {}", swept.join(" ")),
            t.elapsed(),
        );
    }

    // 5. Logs, tmpfs, network.
    let t = Instant::now();
    for n in lab.nodes() {
        let dir = lab.node_dir(n);
        if !is_mounted(&dir, "tmpfs") {
            continue;
        }
        let keep = lab.logs_dir().join(format!("n{n}"));
        let _ = std::fs::remove_dir_all(&keep);
        keep_logs(&dir, &keep, 0);
        let _ = std::fs::copy(lab.grastate_file(n), keep.join("grastate.dat"));
    }
    // Nested mounts first (deepest path first), then each tmpfs.
    let mut mounts = mounts_under(&lab.dir);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.0.len()));
    for (point, _) in mounts {
        let mut um = std::process::Command::new("umount");
        um.arg(&point);
        let ok = process::run(&mut um, None, Duration::from_secs(5)).is_ok_and(|o| o.success());
        if !ok {
            let mut lazy = std::process::Command::new("umount");
            lazy.arg("-l").arg(&point);
            let _ = process::run(&mut lazy, None, Duration::from_secs(5));
        }
    }
    let mut problems = net::destroy(lab);
    let _ = LabState::remove(lab);
    // Generated files go too (`up` writes them anew); the kept logs and the lock stay. The
    // node directories are empty mount points now: remove_dir refuses anything else.
    let _ = std::fs::remove_dir_all(lab.secrets_dir());
    let _ = std::fs::remove_dir_all(lab.www_dir());
    // The hook script and the events the hooks logged: a new lab starts its epochs afresh.
    let _ = std::fs::remove_dir_all(lab.hooks_dir());
    // The backup repository: its password went with the secrets.
    if let Some(dir) = lab.backup_repository().parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    for n in lab.nodes() {
        if !is_mounted(&lab.node_dir(n), "") {
            let _ = std::fs::remove_dir(lab.node_dir(n));
        }
    }
    progress.step(
        "logs kept, tmpfs unmounted, namespaces and bridge deleted",
        t.elapsed(),
    );

    // 6. Leftovers.
    for id in before.iter().filter(|id| id.is_alive()) {
        problems.push(format!(
            "process {} ({}) still running",
            id.pid,
            comm(id.pid)
        ));
    }
    problems.extend(traces(lab));
    Ok(DownReport {
        took: start.elapsed(),
        had_lab: true,
        leftovers: problems,
    })
}

fn nodes_list(nodes: &[u64]) -> String {
    nodes
        .iter()
        .map(|n| format!("n{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn pidfiles_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() && depth < 4 {
                stack.push((p, depth + 1));
            } else if ft.is_file() && p.extension().is_some_and(|x| x == "pid") {
                out.push(p);
            }
        }
    }
    out
}

/// Copies logs and configs from a node directory, never descending into the brick, the
/// mount point (it may hang) or the MariaDB datadir.
fn keep_logs(from: &Path, to: &Path, depth: usize) {
    const SKIP: [&str; 4] = ["brick", "mnt", "data", "lib"];
    const KEEP: [&str; 7] = ["log", "out", "cnf", "conf", "cfg", "toml", "dat"];
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            if depth < 5 && !SKIP.iter().any(|s| name == *s) {
                keep_logs(&p, &to.join(&name), depth + 1);
            }
        } else if ft.is_file()
            && p.extension().is_some_and(|x| KEEP.iter().any(|k| x == *k))
            && std::fs::create_dir_all(to).is_ok()
        {
            let _ = std::fs::copy(&p, to.join(&name));
        }
    }
}
