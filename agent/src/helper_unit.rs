//! Helper units: the few commands an agent running as the unprivileged `triad` user cannot run
//! itself, each a fixed oneshot systemd unit that the package ships and the polkit rule lets
//! `triad` start (and nothing else of the kind).
//!
//! Design: the privilege lives in a unit file root owns, not in Triad's code. The agent can
//! trigger a helper but cannot shape it: the command line, the user it runs as and where its
//! output goes are the unit's (`StandardOutput=`/`StandardError=truncate:` a file in the
//! agent's state directory, opened by systemd before the command starts). The agent removes
//! the old output, runs `systemctl start UNIT` (which, for a oneshot, returns when the command
//! has finished, with its failure as systemctl's), and reads the file. The shipped helpers:
//! - `triad-wsrep-recover.service`: `mariadbd --wsrep-recover` as `mysql` (a stopped node's
//!   Galera position; mariadbd must run as the datadir's owner);
//! - `triad-galera-bootstrap.service`: `galera_new_cluster` as root (it sets the service
//!   manager's environment); no output read;
//! - `triad-gluster-heal@VOLUME.service`: `gluster --xml volume heal VOLUME info` as root,
//!   then `... info split-brain` when an entry is pending (`heal info` runs `glfsheal`, which
//!   needs glusterd's root-only socket); two XML documents in one file.
//!
//! Output file convention: `<state dir>/<unit name>.out` (the unit files say
//! `/var/lib/triad/%n.out`; a `node.data_dir` elsewhere needs matching drop-ins).
//!
//! Caveats: a `systemctl start` cut at the deadline leaves the job running in systemd (the
//! next start joins it); the output is read whole (helpers print kilobytes) and only its last
//! [`OUTPUT_CAP`] bytes are kept.

// Bounds the helper's run (adapter: a timeout); see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Output bytes kept (the last ones).
pub const OUTPUT_CAP: usize = 1 << 20;

/// One helper unit and where it leaves its output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelperUnit {
    /// The unit, for example `triad-wsrep-recover.service`.
    pub unit: String,
    /// The file its `StandardOutput=`/`StandardError=` truncates and writes.
    pub output: PathBuf,
    /// `systemctl` (tests use a stand-in).
    pub systemctl: PathBuf,
}

/// Why a helper unit gave no output.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// The previous output could not be removed (it would be read as this run's).
    #[error("cannot remove the old output {}: {source}", path.display())]
    Stale {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// `systemctl` could not be run.
    #[error("cannot run {}: {source}", systemctl.display())]
    Spawn {
        /// The program.
        systemctl: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The helper did not finish within the deadline (systemd keeps the job going).
    #[error("{unit} did not finish within {after:?}")]
    Timeout {
        /// The unit.
        unit: String,
        /// The deadline.
        after: Duration,
        /// What it wrote so far.
        output: String,
    },
    /// The unit failed, or starting it was refused.
    #[error(
        "systemctl start {unit}: {status}: {said} (see `journalctl -u {unit}`; the triad user \
         may start it only with the package's polkit rule)"
    )]
    Failed {
        /// The unit.
        unit: String,
        /// systemctl's exit status.
        status: String,
        /// What systemctl said.
        said: String,
        /// What the helper wrote.
        output: String,
    },
    /// The unit ran but wrote nothing where the agent looks.
    #[error(
        "{unit} ran but wrote nothing to {}: its unit file must send its output there \
         (StandardOutput=truncate:{})",
        path.display(),
        path.display()
    )]
    NoOutput {
        /// The unit.
        unit: String,
        /// The file.
        path: PathBuf,
    },
}

impl HelperError {
    /// What the helper wrote before it failed (empty when nothing or not applicable).
    pub fn output(&self) -> &str {
        match self {
            HelperError::Timeout { output, .. } | HelperError::Failed { output, .. } => output,
            _ => "",
        }
    }
}

/// A path as `systemd-escape --path` writes it (`/mnt/shop` gives `mnt-shop`): the instance
/// name of a templated unit for that path.
pub fn escape_path(path: &std::path::Path) -> String {
    let s = path.to_string_lossy();
    let trimmed = s.trim_matches('/');
    if trimmed.is_empty() {
        return "-".into();
    }
    let mut out = String::new();
    for (i, b) in trimmed.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || b == b':' || b == b'_' || b == b'.' => {
                out.push(b as char)
            }
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

impl HelperUnit {
    /// `unit` with its output at `<state_dir>/<unit>.out`, started by `systemctl` on the
    /// `PATH`.
    pub fn new(unit: impl Into<String>, state_dir: &Path) -> Self {
        let unit = unit.into();
        HelperUnit {
            output: state_dir.join(format!("{unit}.out")),
            unit,
            systemctl: PathBuf::from("systemctl"),
        }
    }

    /// Starts the unit and returns what it wrote (`expect_output`: an empty file is an
    /// error).
    pub async fn run(&self, timeout: Duration, expect_output: bool) -> Result<String, HelperError> {
        match std::fs::remove_file(&self.output) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(HelperError::Stale {
                    path: self.output.clone(),
                    source,
                })
            }
        }
        let start = tokio::process::Command::new(&self.systemctl)
            .args(["start", &self.unit])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = match tokio::time::timeout(timeout, start).await {
            Err(_) => {
                return Err(HelperError::Timeout {
                    unit: self.unit.clone(),
                    after: timeout,
                    output: self.read(),
                })
            }
            Ok(Err(source)) => {
                return Err(HelperError::Spawn {
                    systemctl: self.systemctl.clone(),
                    source,
                })
            }
            Ok(Ok(out)) => out,
        };
        let output = self.read();
        if !out.status.success() {
            return Err(HelperError::Failed {
                unit: self.unit.clone(),
                status: out.status.to_string(),
                said: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                output,
            });
        }
        if expect_output && output.trim().is_empty() {
            return Err(HelperError::NoOutput {
                unit: self.unit.clone(),
                path: self.output.clone(),
            });
        }
        Ok(output)
    }

    /// The output file's last [`OUTPUT_CAP`] bytes (empty when missing).
    fn read(&self) -> String {
        let bytes = std::fs::read(&self.output).unwrap_or_default();
        let keep = bytes.len().saturating_sub(OUTPUT_CAP);
        String::from_utf8_lossy(&bytes[keep..]).into_owned()
    }
}

/// Test support: executable stand-ins for the programs adapters run.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;

    /// Writes an executable `#!/bin/sh` script through a child process, so that no file of
    /// ours is open for writing when another test's thread forks (`Text file busy` on exec).
    pub(crate) fn stand_in(path: &Path, body: &str) {
        let status = std::process::Command::new("sh")
            .args([
                "-c",
                "printf '%s' \"$1\" > \"$2\" && chmod 755 \"$2\"",
                "sh",
            ])
            .arg(format!("#!/bin/sh\n{body}\n"))
            .arg(path)
            .status()
            .expect("write stand-in");
        assert!(status.success(), "write {}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As `systemd-escape --path` writes them.
    #[test]
    fn paths_escape_as_systemd_does() {
        for (path, unit) in [
            ("/mnt/shop", "mnt-shop"),
            ("/srv/shop/pub/media/", "srv-shop-pub-media"),
            ("/", "-"),
            ("/srv/my shop", "srv-my\\x20shop"),
            ("/srv/.hidden", "srv-.hidden"),
            ("/.x", "\\x2ex"),
            ("/a-b", "a\\x2db"),
        ] {
            assert_eq!(escape_path(std::path::Path::new(path)), unit, "{path}");
        }
    }

    /// A stand-in `systemctl` that writes what a unit would (its argument names the unit;
    /// the behaviour is chosen by the unit's name).
    fn stand_in(dir: &Path) -> PathBuf {
        let script = dir.join("systemctl");
        let out = dir.display();
        testing::stand_in(
            &script,
            &format!(
                "[ \"$1\" = start ] || exit 2\n\
                 echo \"$2\" >> {out}/calls\n\
                 case \"$2\" in\n\
                 ok.service) echo 'the output' > {out}/ok.service.out ;;\n\
                 silent.service) : > {out}/silent.service.out ;;\n\
                 fails.service) echo 'partial' > {out}/fails.service.out; \
                 echo 'Job for fails.service failed.' >&2; exit 1 ;;\n\
                 slow.service) echo 'begun' > {out}/slow.service.out; sleep 5 ;;\n\
                 esac"
            ),
        );
        script
    }

    fn helper(dir: &Path, unit: &str) -> HelperUnit {
        let mut h = HelperUnit::new(unit, dir);
        h.systemctl = stand_in(dir);
        h
    }

    #[tokio::test]
    async fn output_is_read_after_the_unit_ran_and_a_stale_one_never() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = helper(dir.path(), "ok.service");
        assert_eq!(h.output, dir.path().join("ok.service.out"));
        let out = h.run(Duration::from_secs(5), true).await.expect("runs");
        assert_eq!(out, "the output\n");
        // A stale output from an earlier run is removed first: a unit that now writes
        // nothing is reported, not answered with the old text.
        let silent = helper(dir.path(), "silent.service");
        std::fs::write(&silent.output, "old position").expect("stale");
        let e = silent
            .run(Duration::from_secs(5), true)
            .await
            .expect_err("nothing written");
        assert!(matches!(e, HelperError::NoOutput { .. }), "{e}");
        assert!(e.to_string().contains("StandardOutput=truncate:"), "{e}");
        assert_eq!(
            silent
                .run(Duration::from_secs(5), false)
                .await
                .expect("no output wanted"),
            ""
        );
    }

    #[tokio::test]
    async fn failures_and_deadlines_name_the_unit_and_keep_the_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = helper(dir.path(), "fails.service")
            .run(Duration::from_secs(5), true)
            .await
            .expect_err("fails");
        let text = e.to_string();
        assert!(text.contains("systemctl start fails.service"), "{text}");
        assert!(text.contains("Job for fails.service failed."), "{text}");
        assert!(text.contains("polkit"), "{text}");
        assert_eq!(e.output(), "partial\n");

        let e = helper(dir.path(), "slow.service")
            .run(Duration::from_millis(500), true)
            .await
            .expect_err("too slow");
        assert!(matches!(e, HelperError::Timeout { .. }), "{e}");
        assert_eq!(e.output(), "begun\n");

        let mut missing = helper(dir.path(), "ok.service");
        missing.systemctl = dir.path().join("no-such-systemctl");
        let e = missing
            .run(Duration::from_secs(1), true)
            .await
            .expect_err("no systemctl");
        assert!(e.to_string().contains("no-such-systemctl"), "{e}");
    }
}
