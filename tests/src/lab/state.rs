//! The lab's state file (`state.json` in the state directory) and its lock.
//!
//! The state file lets every command work from any process: `up` records the identity of
//! every daemon it launched ([`ProcId`]: pid plus start time) and the `triad` binary it used;
//! `kill`, `start`, `partition` and `heal` update it; `status` and `down` read it. It is
//! written atomically (temporary file plus rename) and only while holding [`LabLock`], an
//! exclusive `flock` on the lock file, so two commands never interleave their changes.
//!
//! Caveat: the state file is a record, not the truth. `status` checks each recorded process
//! in /proc, and `down` does not need the file at all: it finds daemons through their
//! pidfiles and the nodes' network namespaces, which is how it cleans a crashed run.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use super::process::ProcId;
use super::spec::{LabSpec, Service};

/// Version of the state file format.
pub const STATE_VERSION: u32 = 1;

/// Where the lab is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// `up` is building it (or crashed while doing so).
    Starting,
    /// `up` finished.
    Up,
}

/// One cut made by `partition`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cut {
    /// The node whose firewall drops the traffic.
    pub node: u64,
    /// The peer cut off; `None` means every other node (the host stays reachable).
    pub from: Option<u64>,
    /// Only traffic *to* `node` is dropped; `node` can still send.
    pub oneway: bool,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let peers = match self.from {
            Some(p) => format!("n{p}"),
            None => "every other node".to_string(),
        };
        if self.oneway {
            write!(f, "n{} hears nothing from {peers} (one way)", self.node)
        } else {
            write!(f, "n{} cut from {peers} (both ways)", self.node)
        }
    }
}

/// The contents of `state.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabState {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// Life phase.
    pub phase: Phase,
    /// The spec the lab was built with (state directory, `triad` binary).
    pub spec: LabSpec,
    /// Pid of the process that ran `up`.
    pub built_by_pid: u32,
    /// Unix seconds when `up` started.
    pub started_unix: u64,
    /// How long `up` took, once it finished.
    pub up_seconds: Option<f64>,
    /// Per node (`"1"`..`"3"`): the daemons the lab launched, by service.
    pub nodes: BTreeMap<u64, BTreeMap<Service, ProcId>>,
    /// Cuts currently in place.
    pub cuts: Vec<Cut>,
}

impl LabState {
    /// A fresh record for `spec`, in phase [`Phase::Starting`].
    pub fn new(spec: &LabSpec) -> Self {
        LabState {
            version: STATE_VERSION,
            phase: Phase::Starting,
            spec: spec.clone(),
            built_by_pid: std::process::id(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            up_seconds: None,
            nodes: BTreeMap::new(),
            cuts: Vec::new(),
        }
    }

    /// The recorded process of `svc` on node `n`.
    pub fn proc(&self, n: u64, svc: Service) -> Option<ProcId> {
        self.nodes.get(&n).and_then(|m| m.get(&svc)).copied()
    }

    /// Records the process of `svc` on node `n`.
    pub fn set_proc(&mut self, n: u64, svc: Service, id: ProcId) {
        self.nodes.entry(n).or_default().insert(svc, id);
    }

    /// Reads the state file; `Ok(None)` when there is none.
    pub fn load(spec: &LabSpec) -> Result<Option<LabState>> {
        let path = spec.state_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let state: LabState = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a lab state file of this version; run `tests/lab down` to clean up",
                path.display()
            )
        })?;
        if state.version != STATE_VERSION {
            bail!(
                "{} has version {} (this triad-lab writes {STATE_VERSION}); run `tests/lab down`",
                path.display(),
                state.version
            );
        }
        Ok(Some(state))
    }

    /// Writes the state file atomically. Hold the [`LabLock`].
    pub fn save(&self, spec: &LabSpec) -> Result<()> {
        let path = spec.state_file();
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).context("cannot encode the lab state")?;
        std::fs::write(&tmp, text + "\n")
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
    }

    /// Removes the state file (after `down`).
    pub fn remove(spec: &LabSpec) -> Result<()> {
        let path = spec.state_file();
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
        }
    }
}

/// Exclusive right to change the lab: an `flock` on [`LabSpec::lock_file`], released on drop.
pub struct LabLock {
    _file: File,
    path: PathBuf,
}

impl LabLock {
    /// Takes the lock, waiting up to `timeout` for another lab command to finish.
    pub fn acquire(spec: &LabSpec, timeout: Duration) -> Result<LabLock> {
        std::fs::create_dir_all(&spec.dir)
            .with_context(|| format!("cannot create the lab directory {}", spec.dir.display()))?;
        let path = spec.lock_file();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open the lab lock {}", path.display()))?;
        let start = Instant::now();
        let mut told = false;
        loop {
            // SAFETY: flock(2) on a descriptor we own; no memory is shared with the kernel.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(LabLock { _file: file, path });
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(err).with_context(|| format!("cannot lock {}", path.display()));
            }
            if start.elapsed() >= timeout {
                bail!(
                    "another triad-lab command holds {} for more than {timeout:?}; wait for it \
                     or find it with `lsof {}`",
                    path.display(),
                    path.display()
                );
            }
            if !told {
                eprintln!("triad-lab: waiting for another lab command to finish");
                told = true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
