//! Errors that decide the exit code of `triad-lab`: a usage mistake (64), a lab that is not up
//! (69) or a caller that is not root (77). Everything else is an `anyhow` error that names the
//! step and the daemon's log, and exits 1.

/// A lab error with a meaning for the exit code. Wrapped in `anyhow::Error` like any other
/// error; [`exit_code`] finds it again anywhere in the chain.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The command line names something that does not exist (node, service, signal). Exit 64.
    #[error("{0}")]
    Usage(String),
    /// The lab is not (fully) up, so the command has nothing to act on. Exit 69.
    #[error("the lab is not up: {0}; start it with `tests/lab up`")]
    NotUp(String),
    /// The command needs root (network namespaces, mounts, signals to root daemons). Exit 77.
    #[error(
        "not root: {0} needs root (network namespaces, mounts); rerun it with sudo or as root"
    )]
    NotRoot(String),
}

impl LabError {
    /// The process exit code for this error (sysexits.h).
    pub fn exit_code(&self) -> u8 {
        match self {
            LabError::Usage(_) => 64,
            LabError::NotUp(_) => 69,
            LabError::NotRoot(_) => 77,
        }
    }
}

/// The exit code for any error: the [`LabError`]'s code when one is in the chain, else 1.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| e.downcast_ref::<LabError>())
        .map_or(1, LabError::exit_code)
}

/// Fails with [`LabError::NotRoot`] unless the effective user is root.
pub fn require_root(what: &str) -> anyhow::Result<()> {
    if is_root() {
        Ok(())
    } else {
        Err(LabError::NotRoot(what.to_string()).into())
    }
}

/// Whether the effective user is root.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
