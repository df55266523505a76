//! Processes: launching daemons inside a node, telling whether one still runs, signalling a
//! service, and running short commands with a deadline.
//!
//! Identity: a [`ProcId`] is a pid plus the process start time from `/proc/PID/stat`. A pid
//! alone is never trusted after the fact: it may have been recycled, and a killed daemon
//! lingers as a zombie until PID 1 reaps it (`kill -0` still succeeds then). A process counts
//! as running only when `/proc/PID/stat` exists, its start time matches and its state is not
//! `Z`/`X`.
//!
//! Launching: `sh -c 'setsid "$@" </dev/null >>LOG 2>&1 & echo $!' ip netns exec haN DAEMON…`.
//! `setsid` (not a group leader inside a non-interactive shell) and `ip netns exec` both exec,
//! so `$!` is the daemon's own pid, and the daemon leads a new session and process group.
//! The shell exits at once, so the daemon is re-parented to PID 1 and never becomes a zombie
//! of the (possibly long-lived) test process. Every daemon runs in the foreground.
//!
//! Signals go to the service's process group (its pid): a pool's workers and an SST's rsync
//! helpers get the signal with their master, as systemd would do for a unit. Daemons that
//! start their own sessions (Gluster bricks, the FUSE client) are signalled by pid.
//!
//! Every child starts with an empty signal mask ([`clear_signal_mask`]): std passes the
//! caller's mask on, and a test harness that blocks SIGTERM to catch it must not hand that
//! to the daemons.
//!
//! Caveat: short commands run in a new process group and the whole group is killed at the
//! deadline; a grandchild that escapes the group and keeps our pipes open is abandoned (its
//! output is dropped) rather than waited for.

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde::{Deserialize, Serialize};

/// A process identified by pid and start time (clock ticks since boot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    /// The pid.
    pub pid: i32,
    /// Field 22 of `/proc/PID/stat`; distinguishes a recycled pid.
    pub start_time: u64,
}

/// What `/proc/PID/stat` says about a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// State letter: R, S, D, T (stopped), t, Z (zombie), X, I.
    pub state: char,
    /// Parent pid.
    pub ppid: i32,
    /// Process group id.
    pub pgid: i32,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
}

/// Whether a recorded process still runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Liveness {
    /// Alive and scheduled.
    Running,
    /// Alive but stopped by SIGSTOP (state T).
    Stopped,
    /// Exited, a zombie, or the pid now belongs to another process.
    Gone,
}

/// Reads and parses `/proc/PID/stat`; `None` when the process does not exist.
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses the text of `/proc/PID/stat`. The command name may hold spaces and parentheses, so
/// fields are counted after the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) pgrp(5) ... starttime(22) -> indexes 0, 1, 2, 19.
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgid: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

impl ProcId {
    /// Identifies the live process `pid` now; `None` when it does not exist or is a zombie.
    pub fn capture(pid: i32) -> Option<ProcId> {
        let st = proc_stat(pid)?;
        if matches!(st.state, 'Z' | 'X') {
            return None;
        }
        Some(ProcId {
            pid,
            start_time: st.start_time,
        })
    }

    /// Whether this exact process runs, is stopped, or is gone.
    pub fn liveness(&self) -> Liveness {
        match proc_stat(self.pid) {
            Some(st) if st.start_time == self.start_time => match st.state {
                'Z' | 'X' => Liveness::Gone,
                'T' | 't' => Liveness::Stopped,
                _ => Liveness::Running,
            },
            _ => Liveness::Gone,
        }
    }

    /// Running or stopped (not gone).
    pub fn is_alive(&self) -> bool {
        self.liveness() != Liveness::Gone
    }

    /// Sends `sig` to this process alone, if it is still this process.
    pub fn signal(&self, sig: Signal) -> Result<bool> {
        if !self.is_alive() {
            return Ok(false);
        }
        send(self.pid, sig).with_context(|| format!("cannot send {sig} to pid {}", self.pid))?;
        Ok(true)
    }

    /// Sends `sig` to this process's group (its pid as pgid), if it still leads it; when the
    /// leader is gone, to the group's remaining members one by one (found in `/proc`).
    /// Returns how many processes were signalled (a group counts as one).
    pub fn signal_group(&self, sig: Signal) -> Result<usize> {
        if self.is_alive() {
            let leads = proc_stat(self.pid).is_some_and(|st| st.pgid == self.pid);
            let target = if leads { -self.pid } else { self.pid };
            send(target, sig)
                .with_context(|| format!("cannot send {sig} to process group {} ", self.pid))?;
            return Ok(1);
        }
        // The leader died; orphans of its group (say, pool workers) keep the pgid number
        // allocated, so matching on pgid cannot hit an unrelated process.
        let mut n = 0;
        for pid in all_pids() {
            if proc_stat(pid)
                .is_some_and(|st| st.pgid == self.pid && !matches!(st.state, 'Z' | 'X'))
                && send(pid, sig).is_ok()
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Live members of this process's group, the leader included.
    pub fn group_members(&self) -> Vec<i32> {
        all_pids()
            .into_iter()
            .filter(|&pid| {
                proc_stat(pid)
                    .is_some_and(|st| st.pgid == self.pid && !matches!(st.state, 'Z' | 'X'))
            })
            .collect()
    }
}

/// A signal the lab sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Signal {
    /// SIGKILL.
    Kill,
    /// SIGTERM.
    Term,
    /// SIGSTOP (freeze).
    Stop,
    /// SIGCONT (thaw).
    Cont,
    /// SIGQUIT (PHP-FPM graceful stop).
    Quit,
    /// SIGUSR1 (HAProxy soft stop).
    Usr1,
}

impl Signal {
    /// The libc signal number.
    pub fn number(self) -> libc::c_int {
        match self {
            Signal::Kill => libc::SIGKILL,
            Signal::Term => libc::SIGTERM,
            Signal::Stop => libc::SIGSTOP,
            Signal::Cont => libc::SIGCONT,
            Signal::Quit => libc::SIGQUIT,
            Signal::Usr1 => libc::SIGUSR1,
        }
    }

    /// Parses `KILL`, `SIGKILL`, `kill`, `9` (and the same for TERM 15, STOP 19, CONT 18).
    pub fn parse(s: &str) -> Option<Signal> {
        let up = s.to_ascii_uppercase();
        let name = up.strip_prefix("SIG").unwrap_or(&up);
        match name {
            "KILL" | "9" => Some(Signal::Kill),
            "TERM" | "15" => Some(Signal::Term),
            "STOP" | "19" => Some(Signal::Stop),
            "CONT" | "18" => Some(Signal::Cont),
            "QUIT" | "3" => Some(Signal::Quit),
            "USR1" | "10" => Some(Signal::Usr1),
            _ => None,
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Signal::Kill => "SIGKILL",
            Signal::Term => "SIGTERM",
            Signal::Stop => "SIGSTOP",
            Signal::Cont => "SIGCONT",
            Signal::Quit => "SIGQUIT",
            Signal::Usr1 => "SIGUSR1",
        };
        f.write_str(name)
    }
}

fn send(target: i32, sig: Signal) -> std::io::Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions; callers checked the target's
    // identity (start time or process group) just before.
    if unsafe { libc::kill(target, sig.number()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Every pid in `/proc`.
pub fn all_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

/// Inode of the network namespace of `pid` (from the `/proc/PID/ns/net` link `net:[N]`).
pub fn netns_inode_of_pid(pid: i32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    let text = link.to_str()?;
    text.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// Inode of the named network namespace `/run/netns/NAME`, when it exists.
pub fn netns_inode(name: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(Path::new("/run/netns").join(name))
        .ok()
        .map(|m| m.ino())
}

/// Live (non-zombie) pids whose network namespace has inode `ino`.
pub fn pids_in_netns(ino: u64) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| netns_inode_of_pid(pid) == Some(ino))
        .filter(|&pid| proc_stat(pid).is_some_and(|st| !matches!(st.state, 'Z' | 'X')))
        .collect()
}

/// Short command name of `pid` (`/proc/PID/comm`), for messages.
pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".to_string())
}

/// Waits until none of `ids` is alive; returns those still alive at the deadline.
pub fn wait_gone(ids: &[ProcId], timeout: Duration) -> Vec<ProcId> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<ProcId> = ids.iter().copied().filter(ProcId::is_alive).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until none of the plain `pids` is alive (zombies count as gone); returns the rest.
pub fn wait_pids_gone(pids: &[i32], timeout: Duration) -> Vec<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<i32> = pids
            .iter()
            .copied()
            .filter(|&p| proc_stat(p).is_some_and(|st| !matches!(st.state, 'Z' | 'X')))
            .collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads a pidfile (digits only); `None` when missing, empty or not a number.
pub fn read_pidfile(path: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().parse().ok().filter(|&p| p > 0)
}

/// The result of [`run`].
#[derive(Debug)]
pub struct CmdOutput {
    /// Exit status; `None` when the command was killed at its deadline.
    pub status: Option<ExitStatus>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl CmdOutput {
    /// Exited with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Killed at its deadline.
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    /// One-line summary of a failure: exit status or timeout, then stderr (else stdout).
    pub fn failure(&self) -> String {
        let how = match self.status {
            Some(s) => s.to_string(),
            None => format!("timed out after {:.1}s", self.elapsed.as_secs_f64()),
        };
        let text = if self.stderr.trim().is_empty() {
            self.stdout.trim()
        } else {
            self.stderr.trim()
        };
        if text.is_empty() {
            how
        } else {
            format!("{how}: {}", tail_lines(text, 8))
        }
    }
}

/// The last `n` lines of `text`.
pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Human form of a command line, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// The caller's PATH plus the standard system directories it lacks (a `sudo` or CI PATH
/// without `/usr/sbin` would hide mariadbd, php-fpm8.2, haproxy and glusterd).
pub fn child_path() -> std::ffi::OsString {
    let current = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<std::path::PathBuf> = std::env::split_paths(&current).collect();
    for d in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        if !dirs.iter().any(|x| x == Path::new(d)) {
            dirs.push(d.into());
        }
    }
    std::env::join_paths(dirs).unwrap_or(current)
}

/// Makes `cmd` start with no blocked signals. std's `Command` passes the caller's signal
/// mask on to the child: a test harness that blocks SIGTERM to `sigwait` for it would
/// otherwise launch daemons that never see SIGTERM (`down` then needs SIGKILL for them).
pub fn clear_signal_mask(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls
    // sigemptyset(3) and pthread_sigmask(3) on a local set; both are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            if libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::other("pthread_sigmask failed"));
            }
            Ok(())
        });
    }
}

/// Runs `cmd` to completion with `input` on its stdin, killing its whole process group at
/// `timeout`. Never fails because of the command's own exit status: see [`CmdOutput`].
pub fn run(cmd: &mut Command, input: Option<&str>, timeout: Duration) -> Result<CmdOutput> {
    let shown = describe(cmd);
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0)
    .env("PATH", child_path());
    clear_signal_mask(cmd);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run `{shown}` (is it installed?)"))?;
    let pid = i32::try_from(child.id()).map_err(|_| anyhow!("pid out of range"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        let text = text.to_string();
        // A writer thread: a command that does not read its stdin must not block us.
        std::thread::spawn(move || {
            use std::io::Write as _;
            let _ = stdin.write_all(text.as_bytes());
        });
    }
    let out = collect(child.stdout.take());
    let err = collect(child.stderr.take());
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("cannot wait for `{shown}`"))?
        {
            break Some(status);
        }
        if start.elapsed() >= timeout {
            // SAFETY: kill(2) on the process group of our own unreaped child.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    // Output readers finish when every writer closed the pipe; a daemonised grandchild may
    // hold it open, so wait only briefly.
    let grace = Instant::now() + Duration::from_millis(500);
    let stdout = finish(&out, grace);
    let stderr = finish(&err, grace);
    Ok(CmdOutput {
        status,
        stdout,
        stderr,
        elapsed,
    })
}

type Sink = (Arc<Mutex<Vec<u8>>>, std::thread::JoinHandle<()>);

fn collect<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> Option<Sink> {
    let mut pipe = pipe?;
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&buf);
    let handle = std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend_from_slice(&chunk[..n]),
            }
        }
    });
    Some((buf, handle))
}

fn finish(sink: &Option<Sink>, until: Instant) -> String {
    let Some((buf, handle)) = sink else {
        return String::new();
    };
    while !handle.is_finished() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    let bytes = buf.lock().unwrap_or_else(PoisonError::into_inner).clone();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Runs `cmd` and returns its stdout, failing with the command line and its stderr unless
/// it exits 0 within `timeout`.
pub fn run_ok(cmd: &mut Command, input: Option<&str>, timeout: Duration) -> Result<String> {
    let shown = describe(cmd);
    let out = run(cmd, input, timeout)?;
    if !out.success() {
        bail!("`{shown}` failed: {}", out.failure());
    }
    Ok(out.stdout)
}

/// A command run inside node network namespace `netns` (`ip netns exec NETNS PROGRAM`).
pub fn in_netns(netns: &str, program: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, program]);
    cmd
}

/// Launches `argv` as a daemon inside `netns`, in a new session, with stdio appended to
/// `log`, and returns its identity. See the module docs for why the pid is the daemon's.
pub fn launch(netns: &str, argv: &[String], log: &Path, env: &[(&str, String)]) -> Result<ProcId> {
    launch_with(&["ip", "netns", "exec", netns], netns, argv, log, env)
}

/// As [`launch`], but in the host's mount namespace (only the network namespace entered, with
/// `nsenter --net`): what the agents run in, so that they see the node's FUSE mount as
/// everyone does and can mount it again themselves (`ip netns exec` gives each process a
/// mount namespace of its own).
pub fn launch_host_mounts(
    netns: &str,
    argv: &[String],
    log: &Path,
    env: &[(&str, String)],
) -> Result<ProcId> {
    let net = format!("--net=/run/netns/{netns}");
    launch_with(&["nsenter", &net], netns, argv, log, env)
}

fn launch_with(
    prefix: &[&str],
    netns: &str,
    argv: &[String],
    log: &Path,
    env: &[(&str, String)],
) -> Result<ProcId> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"setsid "$@" </dev/null >>"$TRIAD_LAB_LOG" 2>&1 & echo $!"#)
        .arg("triad-lab-launch")
        .args(prefix)
        .args(argv)
        .env("TRIAD_LAB_LOG", log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let shown = argv.join(" ");
    let out = run(&mut cmd, None, Duration::from_secs(5))?;
    if !out.success() {
        bail!("cannot launch `{shown}` in {netns}: {}", out.failure());
    }
    let pid: i32 = out
        .stdout
        .trim()
        .parse()
        .with_context(|| format!("launching `{shown}`: no pid in {:?}", out.stdout))?;
    // The daemon may already have failed (bad config): its log says why.
    ProcId::capture(pid).ok_or_else(|| {
        anyhow!(
            "`{shown}` in {netns} exited at once; last lines of {}:\n{}",
            log.display(),
            log_tail(log, 15)
        )
    })
}

/// The last `n` lines of a log file, or why it cannot be read.
pub fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => tail_lines(&String::from_utf8_lossy(&bytes), n),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let text = "1234 (a b) c)) S 1 1234 1234 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 \
                    1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let st = parse_stat(text).expect("parses");
        assert_eq!(st.state, 'S');
        assert_eq!(st.ppid, 1);
        assert_eq!(st.pgid, 1234);
        assert_eq!(st.start_time, 987654);
    }

    #[test]
    fn own_process_is_running_and_a_wrong_start_time_is_gone() {
        let me = i32::try_from(std::process::id()).expect("pid");
        let id = ProcId::capture(me).expect("self");
        assert_eq!(id.liveness(), Liveness::Running);
        let other = ProcId {
            pid: me,
            start_time: id.start_time + 1,
        };
        assert_eq!(other.liveness(), Liveness::Gone);
    }

    #[test]
    fn run_kills_at_the_deadline_and_reports_it() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started; sleep 5"]);
        let out = run(&mut cmd, None, Duration::from_millis(200)).expect("runs");
        assert!(out.timed_out());
        assert!(out.elapsed < Duration::from_secs(2), "{:?}", out.elapsed);
        assert_eq!(out.stdout.trim(), "started");
        assert!(out.failure().contains("timed out"), "{}", out.failure());
    }

    #[test]
    fn run_feeds_stdin_and_keeps_the_exit_status() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "cat; exit 3"]);
        let out = run(&mut cmd, Some("hello"), Duration::from_secs(5)).expect("runs");
        assert_eq!(out.stdout, "hello");
        assert_eq!(out.status.and_then(|s| s.code()), Some(3));
    }

    #[test]
    fn signals_parse_in_every_spelling() {
        assert_eq!(Signal::parse("KILL"), Some(Signal::Kill));
        assert_eq!(Signal::parse("sigterm"), Some(Signal::Term));
        assert_eq!(Signal::parse("19"), Some(Signal::Stop));
        assert_eq!(Signal::parse("Cont"), Some(Signal::Cont));
        assert_eq!(Signal::parse("HUP"), None);
    }
}
