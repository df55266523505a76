//! The restic repository, driven through the `restic` program.
//!
//! The repository and its password file go to restic in its environment
//! (`RESTIC_REPOSITORY`, `RESTIC_PASSWORD_FILE`), so neither the password nor the repository's
//! credentials ever appear in a command line; argv holds only paths, tags and snapshot ids.
//! Every snapshot is written with `--host <cluster_name>` and the tags `triad` and its
//! component, so that retention groups a component's snapshots across the nodes that took
//! them (`forget --group-by host,tags`).
//!
//! Caveats: restic 0.14 (Debian 12) restores a snapshot's tree as it was given on the command
//! line, relative to the working directory of the backup; each component is therefore backed
//! up from its parent directory with relative paths.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

use super::ProgramError;

/// A restic failure, with what restic said.
#[derive(Debug, thiserror::Error)]
pub enum ResticError {
    /// The program could not be started.
    #[error("cannot run {program}: {source} (install restic, or set backup.programs.restic)")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// It exited unsuccessfully.
    #[error("restic {what} failed ({status}): {stderr}")]
    Failed {
        /// The subcommand.
        what: String,
        /// Its exit status.
        status: String,
        /// The end of its standard error.
        stderr: String,
    },
    /// It ran past its deadline and was killed.
    #[error("restic {what} did not finish within {after:?}")]
    Timeout {
        /// The subcommand.
        what: String,
        /// The deadline.
        after: Duration,
    },
    /// Its output was not what restic prints.
    #[error("restic {what}: unexpected output: {detail}")]
    Output {
        /// The subcommand.
        what: String,
        /// What was wrong.
        detail: String,
    },
}

/// How to reach the repository.
#[derive(Clone, Debug)]
pub struct Restic {
    /// The program.
    pub program: PathBuf,
    /// The repository (`RESTIC_REPOSITORY`).
    pub repository: String,
    /// Its password file (`RESTIC_PASSWORD_FILE`).
    pub password_file: PathBuf,
    /// The host name every snapshot is written with (the cluster's name).
    pub host: String,
    /// restic's cache directory.
    pub cache_dir: PathBuf,
}

/// What a finished `restic backup` reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The new snapshot's short id.
    pub id: String,
    /// Bytes of the files it covers.
    pub bytes: u64,
}

#[derive(Deserialize)]
struct BackupLine {
    message_type: String,
    #[serde(default)]
    snapshot_id: Option<String>,
    #[serde(default)]
    total_bytes_processed: Option<u64>,
    #[serde(default)]
    bytes_done: Option<u64>,
}

impl ResticError {
    /// Whether restic refused because another process holds a lock on the repository (a run
    /// killed on another host leaves its lock, which restic calls stale only after 30 min).
    pub fn is_locked(&self) -> bool {
        matches!(self, ResticError::Failed { stderr, .. } if stderr.contains("repository is already locked"))
    }
}

/// Whether restic's error says there is no repository at the location.
fn is_missing(stderr: &str) -> bool {
    stderr.contains("Is there a repository at the following location?")
        || stderr.contains("repository does not exist")
}

impl Restic {
    fn command(&self, cwd: Option<&Path>) -> Command {
        let mut c = Command::new(&self.program);
        c.env("RESTIC_REPOSITORY", &self.repository)
            .env("RESTIC_PASSWORD_FILE", &self.password_file)
            .env("RESTIC_CACHE_DIR", &self.cache_dir)
            .env_remove("RESTIC_PASSWORD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        super::die_with_parent(&mut c);
        if let Some(d) = cwd {
            c.current_dir(d);
        }
        c
    }

    /// Runs `restic <args>` to completion within `timeout`; its standard output.
    async fn run(
        &self,
        what: &str,
        args: &[&str],
        cwd: Option<&Path>,
        timeout: Duration,
    ) -> Result<String, ResticError> {
        let mut c = self.command(cwd);
        c.args(args);
        let out = super::run_program(what, c, timeout)
            .await
            .map_err(|e| match e {
                ProgramError::Spawn { source, .. } => ResticError::Spawn {
                    program: self.program.clone(),
                    source,
                },
                ProgramError::Timeout { what, after } => ResticError::Timeout { what, after },
                ProgramError::Failed {
                    what,
                    status,
                    stderr,
                } => ResticError::Failed {
                    what,
                    status,
                    stderr,
                },
            })?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates the repository unless it exists. Returns whether it created it. A repository
    /// that exists but does not open (a wrong password, an unreachable backend) is an error,
    /// never a reason to create one.
    pub async fn ensure(&self, timeout: Duration) -> Result<bool, ResticError> {
        match self
            .run("cat config", &["cat", "config"], None, timeout)
            .await
        {
            Ok(_) => Ok(false),
            Err(ResticError::Failed { stderr, .. }) if is_missing(&stderr) => {
                self.run("init", &["init"], None, timeout).await?;
                Ok(true)
            }
            Err(ResticError::Failed { stderr, .. }) if stderr.contains("wrong password") => {
                Err(ResticError::Failed {
                    what: "open".into(),
                    status: "wrong password".into(),
                    stderr: format!(
                        "the password in backup.password_file does not open the repository \
                         {} (every node needs the same password file)",
                        self.repository
                    ),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Backs up `paths` (relative to `cwd`) as a snapshot of `component`, calling `progress`
    /// with the bytes done so far as restic reports them.
    pub async fn backup(
        &self,
        component: &str,
        cwd: &Path,
        paths: &[String],
        timeout: Duration,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<Snapshot, ResticError> {
        let what = format!("backup of {component}");
        let mut c = self.command(Some(cwd));
        c.args(["backup", "--json", "--host", &self.host, "--tag"])
            .arg(format!("triad,{component}"))
            .args(paths);
        let mut child = c.spawn().map_err(|source| ResticError::Spawn {
            program: self.program.clone(),
            source,
        })?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let work = async {
            let mut summary = None;
            if let Some(out) = stdout {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let Ok(l) = serde_json::from_str::<BackupLine>(&line) else {
                        continue;
                    };
                    match l.message_type.as_str() {
                        "status" => progress(l.bytes_done.unwrap_or(0)),
                        "summary" => summary = Some(l),
                        _ => {}
                    }
                }
            }
            let mut err = String::new();
            if let Some(mut e) = stderr {
                let _ = e.read_to_string(&mut err).await;
            }
            (summary, err, child.wait().await)
        };
        let (summary, err, status) =
            tokio::time::timeout(timeout, work)
                .await
                .map_err(|_| ResticError::Timeout {
                    what: what.clone(),
                    after: timeout,
                })?;
        let status = status.map_err(|source| ResticError::Spawn {
            program: self.program.clone(),
            source,
        })?;
        if !status.success() {
            return Err(ResticError::Failed {
                what,
                status: status.to_string(),
                stderr: super::stderr_tail(&err, 600),
            });
        }
        let s = summary.ok_or_else(|| ResticError::Output {
            what: what.clone(),
            detail: "no summary line".into(),
        })?;
        Ok(Snapshot {
            id: s.snapshot_id.ok_or_else(|| ResticError::Output {
                what,
                detail: "no snapshot id in the summary".into(),
            })?,
            bytes: s.total_bytes_processed.unwrap_or(0),
        })
    }

    /// Restores snapshot `id` into `target` (which must not hold live data).
    pub async fn restore(
        &self,
        id: &str,
        target: &Path,
        timeout: Duration,
    ) -> Result<(), ResticError> {
        let t = target.to_string_lossy();
        self.run(
            &format!("restore of {id}"),
            &["restore", id, "--target", &t],
            None,
            timeout,
        )
        .await
        .map(|_| ())
    }

    /// Applies the retention tiers (`args`, restic's `--keep-within*` flags) to Triad's
    /// snapshots and prunes what they no longer keep.
    pub async fn forget(&self, args: &[String], timeout: Duration) -> Result<(), ResticError> {
        let mut all: Vec<&str> = vec![
            "forget",
            "--host",
            &self.host,
            "--tag",
            "triad",
            "--group-by",
            "host,tags",
            "--prune",
        ];
        all.extend(args.iter().map(String::as_str));
        self.run("forget", &all, None, timeout).await.map(|_| ())
    }

    /// Removes the repository's stale locks (`restic unlock`: locks of processes that no
    /// longer run on this host, and locks older than 30 minutes); never a live one.
    pub async fn unlock(&self, timeout: Duration) -> Result<(), ResticError> {
        self.run("unlock", &["unlock"], None, timeout)
            .await
            .map(|_| ())
    }

    /// Checks the repository's structure (`restic check`).
    pub async fn check(&self, timeout: Duration) -> Result<(), ResticError> {
        self.run("check", &["check"], None, timeout)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_missing_repository_is_created() {
        assert!(is_missing(
            "Fatal: unable to open config file: stat /r/config: no such file or directory | \
             Is there a repository at the following location? | /r"
        ));
        assert!(!is_missing("Fatal: wrong password or no key found"));
        assert!(!is_missing(
            "Fatal: unable to open config file: permission denied"
        ));
    }

    /// Against the real restic (skipped without it, or without root for `unshare -u`): a
    /// `restic backup` killed with SIGKILL leaves its lock. Killed on this host, `unlock`
    /// removes it and retention runs; killed on another host (a UTS namespace with another
    /// host name), restic keeps it: retention is refused as locked, which a run defers.
    #[tokio::test]
    async fn a_killed_runs_lock_is_removed_on_this_host_and_deferred_from_another() {
        #![allow(clippy::disallowed_types, clippy::disallowed_methods)]
        let program = PathBuf::from("/usr/bin/restic");
        if !program.exists() || !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs /usr/bin/restic (Debian package restic) and root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let password_file = dir.path().join("pass");
        std::fs::write(&password_file, "lab-test\n").expect("password");
        let r = Restic {
            program: program.clone(),
            repository: dir.path().join("repo").display().to_string(),
            password_file,
            host: "shop".into(),
            cache_dir: dir.path().join("cache"),
        };
        let t = Duration::from_secs(60);
        assert!(r.ensure(t).await.expect("init"), "a new repository");
        let locks = || async {
            let out = r
                .run("list locks", &["list", "locks", "--no-lock"], None, t)
                .await
                .expect("list locks");
            out.lines().filter(|l| !l.trim().is_empty()).count()
        };
        // A backup that waits on its standard input holds its lock until it is killed.
        let kill_holding = |prefix: &[&str]| {
            let mut argv: Vec<String> = prefix.iter().map(|a| a.to_string()).collect();
            argv.extend(
                [
                    program.to_str().unwrap_or("restic"),
                    "backup",
                    "--stdin",
                    "--host",
                    "shop",
                ]
                .map(String::from),
            );
            let mut c = std::process::Command::new(&argv[0]);
            c.args(&argv[1..])
                .env("RESTIC_REPOSITORY", &r.repository)
                .env("RESTIC_PASSWORD_FILE", &r.password_file)
                .env("RESTIC_CACHE_DIR", &r.cache_dir)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            c.spawn().expect("restic backup")
        };
        for (prefix, foreign) in [
            (&[][..], false),
            (
                &[
                    "unshare",
                    "-u",
                    "sh",
                    "-c",
                    "hostname elsewhere && exec \"$0\" \"$@\"",
                ][..],
                true,
            ),
        ] {
            let mut holder = kill_holding(prefix);
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while locks().await == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "restic backup took no lock"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            holder.kill().expect("kill");
            let _ = holder.wait();
            r.unlock(t).await.expect("unlock");
            let forget = r.forget(&["--keep-last".into(), "1".into()], t).await;
            if foreign {
                assert_eq!(
                    locks().await,
                    1,
                    "another host's lock is not stale to restic"
                );
                let e = forget.expect_err("retention while another host's lock stands");
                assert!(e.is_locked(), "{e}");
            } else {
                assert_eq!(locks().await, 0, "this host's dead run's lock was removed");
                forget.expect("retention after unlock");
            }
        }
    }
}
