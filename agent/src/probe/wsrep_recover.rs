//! `mariadbd --wsrep-recover`: the durable position of a stopped Galera node when
//! `grastate.dat` does not have it (`seqno: -1` after a crash).
//!
//! With `--wsrep-recover`, mariadbd opens the datadir (running InnoDB crash recovery), logs
//! `WSREP: Recovered position: UUID:SEQNO` from InnoDB's saved wsrep checkpoint, and exits
//! without serving. [`parse_recover_log`] reads that log (pure, table-tested on real
//! captures); [`recover_position`] is the adapter that runs it on this node.
//!
//! Design:
//! - The adapter passes `--disable-log-error`, so the log comes back on stderr whatever the
//!   defaults file says (as Debian's `galera_recovery` does): no temporary file, no file the
//!   server's `--user` must be able to write, and nothing left behind.
//! - It refuses to run while the node's mariadbd runs (a live mariadbd pid in its pidfile, or
//!   a socket that accepts connections): on a datadir in use mariadbd blocks ~30 s on Aria's
//!   control-file lock, ignores SIGTERM meanwhile, then aborts without a position. It looks
//!   for up to 2 s before it refuses: a SIGKILLed mariadbd is already gone for service
//!   control while the kernel still tears it down, its socket accepting (lab: a kill of all
//!   three made one recovery fail that way and wait its 10 s retry).
//! - It runs under a deadline and is killed (SIGKILL, then reaped) when the deadline passes.
//! - Several position lines: the last one counts. `-1` as the seqno, or the nil UUID, means
//!   nothing was recovered (a datadir that never ran with Galera logs
//!   `00000000-0000-0000-0000-000000000000:-1`), which is a [`Position`] without state, not an
//!   error; the decision ranks it last.
//!
//! Caveats:
//! - mariadbd refuses to run as root without `--user`: an agent running as root must set
//!   [`RecoverSpec::user`] (Debian's script passes `mysql`; the lab runs mariadbd as root).
//! - Recovery replays InnoDB's redo log: it modifies the datadir as a normal start would, and
//!   it does not update `grastate.dat` (the seqno there stays `-1`).
//! - A defaults file that sets `wsrep_start_position` makes mariadbd skip recovery; that is
//!   reported as an error, never as the recovered position.
//! - The running check trusts the caller's pidfile and socket paths; with neither given it
//!   checks nothing. A pidfile whose pid now runs another program is treated as stale.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use super::grastate::{parse_seqno, parse_state_uuid, NIL_UUID};
use crate::helper_unit::{HelperError, HelperUnit};

/// The log line's marker, followed by `UUID:SEQNO`.
pub const RECOVERED_MARKER: &str = "WSREP: Recovered position:";

/// What mariadbd logs instead of a position when it skips recovery (wsrep disabled, or a
/// start position given in the configuration).
pub const SKIPPED_MARKER: &str = "skipping position recovery";

/// Debian's mariadbd.
pub const DEFAULT_MARIADBD: &str = "/usr/sbin/mariadbd";

/// How many trailing log lines an error quotes.
const TAIL_LINES: usize = 6;

/// Log bytes kept in memory (the last ones); a real recovery logs about 2 KB.
const LOG_CAP: usize = 1 << 20;

/// A node's durable Galera position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Cluster state (history) UUID, lowercase; `None` for the nil UUID (no state).
    pub uuid: Option<String>,
    /// Last committed seqno; `None` for `-1` (nothing recovered).
    pub seqno: Option<i64>,
}

impl Position {
    /// Whether anything was recovered: a history UUID and a seqno.
    pub fn has_state(&self) -> bool {
        self.uuid.is_some() && self.seqno.is_some()
    }

    /// `UUID:SEQNO` for `--wsrep_start_position` (a Galera rejoin), when there is a state.
    pub fn start_position(&self) -> Option<String> {
        self.has_state().then(|| self.to_string())
    }
}

impl fmt::Display for Position {
    /// As Galera writes it: `UUID:SEQNO`, with the nil UUID and `-1` for unknowns.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            self.uuid.as_deref().unwrap_or(NIL_UUID),
            self.seqno.unwrap_or(-1)
        )
    }
}

/// Why a `--wsrep-recover` log has no usable position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecoverLogError {
    /// mariadbd ran without wsrep (`WSREP: disabled, skipping position recovery`).
    #[error(
        "mariadbd skipped recovery because wsrep is disabled: set wsrep_on=ON and \
         wsrep_provider in the defaults file"
    )]
    WsrepDisabled,
    /// mariadbd skipped recovery for another reason (a `wsrep_start_position` in the config).
    #[error(
        "mariadbd skipped recovery (`{line}`): remove wsrep_start_position from the defaults file"
    )]
    Skipped {
        /// The log line that says so.
        line: String,
    },
    /// No position line at all (mariadbd failed before recovering).
    #[error("no `{RECOVERED_MARKER}` line in the mariadbd log; its last lines:\n{tail}")]
    NoPosition {
        /// The log's last lines.
        tail: String,
    },
    /// The position line does not hold `UUID:SEQNO`.
    #[error("mariadbd log line {line}: {reason}: `{text}`")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// The line as logged.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Reads the recovered position from the log of `mariadbd --wsrep-recover` (the last
/// position line counts).
pub fn parse_recover_log(log: &str) -> Result<Position, RecoverLogError> {
    let Some((n, text)) = log
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(RECOVERED_MARKER))
        .last()
    else {
        if log.lines().any(|l| l.contains("WSREP: disabled, skipping")) {
            return Err(RecoverLogError::WsrepDisabled);
        }
        if let Some(line) = log.lines().find(|l| l.contains(SKIPPED_MARKER)) {
            return Err(RecoverLogError::Skipped {
                line: line.trim().to_string(),
            });
        }
        return Err(RecoverLogError::NoPosition { tail: tail(log) });
    };
    let bad = |reason: String| RecoverLogError::Malformed {
        line: n + 1,
        text: text.to_string(),
        reason,
    };
    let rest = text
        .split_once(RECOVERED_MARKER)
        .map_or("", |(_, r)| r.trim());
    let (uuid, seqno) = rest
        .split_once(':')
        .ok_or_else(|| bad("expected UUID:SEQNO".into()))?;
    let uuid = parse_state_uuid(uuid.trim()).map_err(&bad)?;
    let seqno = parse_seqno(seqno.trim()).map_err(&bad)?;
    if uuid.is_none() && seqno.is_some() {
        // InnoDB never holds a position without a history; trusting it would rank garbage.
        return Err(bad("a seqno with the nil UUID".into()));
    }
    Ok(Position { uuid, seqno })
}

/// The last non-empty lines of a log, indented, for an error message.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return "  (empty)".into();
    }
    lines[lines.len().saturating_sub(TAIL_LINES)..]
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// How to run `--wsrep-recover` for this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoverSpec {
    /// The mariadbd binary.
    pub mariadbd: PathBuf,
    /// The node's configuration, passed as `--defaults-file` (datadir, wsrep settings).
    pub defaults_file: PathBuf,
    /// `--user`: required when the agent runs as root (mariadbd refuses root otherwise).
    pub user: Option<String>,
    /// The node's mariadbd pidfile: a live mariadbd there means "running, refuse".
    pub pidfile: Option<PathBuf>,
    /// The node's unix socket: accepting connections means "running, refuse".
    pub socket: Option<PathBuf>,
    /// Deadline for the whole run; past it mariadbd is killed.
    pub timeout: Duration,
    /// Run recovery by starting this helper unit instead (an agent that is not root: the
    /// package's `triad-wsrep-recover.service`), and read the log it leaves;
    /// `mariadbd`, `defaults_file` and `user` are then the unit's.
    pub unit: Option<HelperUnit>,
}

impl RecoverSpec {
    /// Debian's mariadbd with `defaults_file`, no user, nothing to check, a 60 s deadline.
    pub fn new(defaults_file: impl Into<PathBuf>) -> Self {
        RecoverSpec {
            mariadbd: PathBuf::from(DEFAULT_MARIADBD),
            defaults_file: defaults_file.into(),
            user: None,
            pidfile: None,
            socket: None,
            timeout: Duration::from_secs(60),
            unit: None,
        }
    }
}

/// Why the position could not be recovered.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The node's mariadbd is running: recovery is for a stopped node.
    #[error(
        "mariadbd is running ({evidence}): stop it through service control first; \
         --wsrep-recover on a datadir in use waits ~30 s on its locks and recovers nothing"
    )]
    Running {
        /// What showed it (the pidfile and pid, or the socket).
        evidence: String,
    },
    /// mariadbd could not be started.
    #[error("cannot run {}: {source}", mariadbd.display())]
    Spawn {
        /// The binary.
        mariadbd: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// mariadbd did not finish within the deadline and was killed.
    #[error("mariadbd --wsrep-recover did not finish within {after:?} (killed); its last lines:\n{tail}")]
    Timeout {
        /// The deadline.
        after: Duration,
        /// The log's last lines.
        tail: String,
    },
    /// mariadbd exited with a failure.
    #[error("mariadbd --wsrep-recover failed ({status}){hint}; its last lines:\n{tail}")]
    Failed {
        /// Its exit status.
        status: String,
        /// What to do, when recognised (empty otherwise).
        hint: String,
        /// The log's last lines.
        tail: String,
    },
    /// mariadbd exited normally but its log has no usable position.
    #[error(transparent)]
    Log(#[from] RecoverLogError),
    /// The helper unit did not run, or failed (its log, if any, is in the error).
    #[error("--wsrep-recover by helper unit: {0}; its last lines:\n{tail}", tail = tail(.0.output()))]
    Helper(#[from] HelperError),
}

/// How many times (at most) [`recover_log`] looks for a running mariadbd before it refuses,
/// [`RUNNING_LOOK_EVERY`] apart: 2 s for a killed process to finish exiting.
const RUNNING_LOOKS: u32 = 20;
/// The pause between two looks.
const RUNNING_LOOK_EVERY: Duration = Duration::from_millis(100);

/// Runs `mariadbd --defaults-file=F --wsrep-recover` on this (stopped) node and returns its
/// log; refuses if the node's mariadbd runs (see [`RecoverSpec`]).
pub async fn recover_log(spec: &RecoverSpec) -> Result<String, RecoverError> {
    // A SIGKILLed mariadbd is gone for service control before the kernel has closed its
    // files (it frees the buffer pool's memory first): its socket may accept for a moment
    // more. Look again for a short while before refusing.
    let mut looks = 0;
    while let Some(evidence) = running_evidence(spec).await {
        looks += 1;
        if looks >= RUNNING_LOOKS {
            return Err(RecoverError::Running { evidence });
        }
        tokio::time::sleep(RUNNING_LOOK_EVERY).await;
    }
    if let Some(unit) = &spec.unit {
        return Ok(unit.run(spec.timeout, true).await?);
    }
    let mut cmd = tokio::process::Command::new(&spec.mariadbd);
    // --defaults-file must come first; the log goes to stderr whatever the file says.
    cmd.arg(format!("--defaults-file={}", spec.defaults_file.display()))
        .args(["--wsrep-recover", "--disable-log-error"]);
    if let Some(user) = &spec.user {
        cmd.arg(format!("--user={user}"));
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| RecoverError::Spawn {
        mariadbd: spec.mariadbd.clone(),
        source,
    })?;
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let mut log = Vec::new();
    let run = async {
        // Chunk by chunk, so that what was read survives a timeout (read is cancel-safe).
        let mut chunk = [0u8; 8192];
        loop {
            match stderr.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    log.extend_from_slice(&chunk[..n]);
                    if log.len() > 2 * LOG_CAP {
                        log.drain(..log.len() - LOG_CAP);
                    }
                }
            }
        }
        child.wait().await
    };
    let outcome = tokio::time::timeout(spec.timeout, run).await;
    let text = String::from_utf8_lossy(&log).into_owned();
    let status = match outcome {
        Err(_) => {
            let _ = child.kill().await;
            return Err(RecoverError::Timeout {
                after: spec.timeout,
                tail: tail(&text),
            });
        }
        Ok(Err(e)) => {
            return Err(RecoverError::Failed {
                status: format!("wait: {e}"),
                hint: String::new(),
                tail: tail(&text),
            })
        }
        Ok(Ok(status)) => status,
    };
    if !status.success() {
        let hint = if text.contains("run mariadbd as root") {
            ": it refuses to run as root without --user; set the recover user (Debian: mysql)"
        } else {
            ""
        };
        return Err(RecoverError::Failed {
            status: status.to_string(),
            hint: hint.into(),
            tail: tail(&text),
        });
    }
    Ok(text)
}

/// Recovers this (stopped) node's durable position with `mariadbd --wsrep-recover`.
pub async fn recover_position(spec: &RecoverSpec) -> Result<Position, RecoverError> {
    Ok(parse_recover_log(&recover_log(spec).await?)?)
}

/// What shows that the node's mariadbd runs, if anything.
async fn running_evidence(spec: &RecoverSpec) -> Option<String> {
    if let Some(pidfile) = &spec.pidfile {
        if let Some(pid) = live_mariadbd(pidfile) {
            return Some(format!("pid {pid} from {}", pidfile.display()));
        }
    }
    if let Some(socket) = &spec.socket {
        match tokio::net::UnixStream::connect(socket).await {
            Ok(_) => return Some(format!("{} accepts connections", socket.display())),
            // A stale socket file after a kill -9, or none.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                ) => {}
            // A full backlog, a permission problem: something is there; do not guess.
            Err(e) => return Some(format!("{}: {e}", socket.display())),
        }
    }
    None
}

/// The pid in `pidfile` when it is a live (not zombie) mariadbd or mysqld (Linux `/proc`).
fn live_mariadbd(pidfile: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (state != "Z" && matches!(comm.trim(), "mariadbd" | "mysqld")).then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        crate::probe::fixture("galera", name)
    }

    const UUID: &str = "9eaceb67-efac-11f1-b809-474591e831a5";

    /// Real captures (see the fixtures' README): fixture -> recovered position.
    #[test]
    fn real_captures() {
        let cases = [
            ("recover_after_kill9.log", Some(UUID), Some(13)),
            ("recover_after_clean_stop.log", Some(UUID), Some(6)),
            ("recover_fresh_datadir.log", None, None),
        ];
        for (name, uuid, seqno) in cases {
            let p = parse_recover_log(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(p.uuid.as_deref(), uuid, "{name}");
            assert_eq!(p.seqno, seqno, "{name}");
            assert_eq!(p.has_state(), uuid.is_some(), "{name}");
        }
    }

    /// Real failures: fixture -> what the error must say.
    #[test]
    fn real_failures() {
        let e = parse_recover_log(&fixture("recover_datadir_in_use.log")).expect_err("in use");
        let msg = e.to_string();
        assert!(matches!(e, RecoverLogError::NoPosition { .. }), "{msg}");
        assert!(msg.contains("[ERROR] Aborting"), "quotes the tail: {msg}");
        assert!(!msg.contains("aria_log_control"), "only the tail: {msg}");
        assert_eq!(
            parse_recover_log(&fixture("recover_wsrep_disabled.log")),
            Err(RecoverLogError::WsrepDisabled)
        );
    }

    #[test]
    fn hand_made_logs() {
        let line =
            |pos: &str| format!("2026-12-04  6:26:17 0 [Note] WSREP: Recovered position: {pos}\n");
        // Several lines: the last counts.
        let two = format!(
            "{}{}",
            line(&format!("{UUID}:3")),
            line(&format!("{UUID}:12"))
        );
        assert_eq!(parse_recover_log(&two).expect("parses").seqno, Some(12));
        // A history without a seqno is kept (the UUID ranks nodes); a seqno without one is not.
        let p = parse_recover_log(&line(&format!("{UUID}:-1"))).expect("parses");
        assert_eq!((p.uuid.as_deref(), p.seqno), (Some(UUID), None));
        assert_eq!(p.start_position(), None);
        let p = parse_recover_log(&line(&format!("{}:7 ", UUID.to_uppercase()))).expect("parses");
        assert_eq!(p.start_position().as_deref(), Some(&*format!("{UUID}:7")));

        let skipped = format!(
            "[Note] WSREP: Position {UUID}:4 given at startup, skipping position recovery\n"
        );
        match parse_recover_log(&skipped) {
            Err(e @ RecoverLogError::Skipped { .. }) => {
                assert!(e.to_string().contains("wsrep_start_position"), "{e}")
            }
            other => panic!("{other:?}"),
        }

        // (log, what the error must say)
        let cases = [
            (String::new(), "(empty)".to_string()),
            ("a\nb\n".into(), "last lines:\n  a\n  b".into()),
            (line(UUID), "line 1: expected UUID:SEQNO".into()),
            (line("nope:3"), "line 1: not a UUID".into()),
            (
                line(&format!("{NIL_UUID}:5")),
                "line 1: a seqno with the nil UUID".into(),
            ),
            (line(&format!("{UUID}:x")), "line 1: not a seqno".into()),
            (
                format!("x\n{}", line(&format!("{UUID}:-7"))),
                "line 2: seqno below -1".into(),
            ),
        ];
        for (log, want) in cases {
            let e = parse_recover_log(&log).expect_err(&log).to_string();
            assert!(e.contains(&want), "{log:?}: `{e}` lacks `{want}`");
        }
        let long: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        let e = parse_recover_log(&long)
            .expect_err("no position")
            .to_string();
        assert!(
            e.contains("line 15") && e.contains("line 20") && !e.contains("line 14\n"),
            "{e}"
        );
    }

    #[test]
    fn position_displays_as_galera_writes_it() {
        let none = Position {
            uuid: None,
            seqno: None,
        };
        assert_eq!(none.to_string(), format!("{NIL_UUID}:-1"));
        let some = Position {
            uuid: Some(UUID.into()),
            seqno: Some(9),
        };
        assert_eq!(some.to_string(), format!("{UUID}:9"));
        assert_eq!(some.start_position(), Some(some.to_string()));
    }

    /// A socket that still accepts for a moment after service control saw the process gone
    /// (a killed mariadbd still exiting) does not fail the recovery; one that keeps
    /// accepting does, after the looks. (The binary does not exist here: getting past the
    /// check shows as a spawn error.)
    #[tokio::test(flavor = "current_thread")]
    async fn a_socket_that_closes_soon_is_waited_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("mysqld.sock");
        let mut spec = RecoverSpec::new(dir.path().join("my.cnf"));
        spec.mariadbd = dir.path().join("no-such-mariadbd");
        spec.socket = Some(socket.clone());
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
        let closer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(listener);
        });
        let r = recover_log(&spec).await;
        assert!(matches!(r, Err(RecoverError::Spawn { .. })), "{r:?}");
        closer.await.expect("closer");
        let _ = std::fs::remove_file(&socket);
        let _listener = tokio::net::UnixListener::bind(&socket).expect("bind");
        let r = recover_log(&spec).await;
        assert!(matches!(r, Err(RecoverError::Running { .. })), "{r:?}");
    }
}
