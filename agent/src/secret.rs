//! Files that hold secrets (API tokens, passwords, private keys): the agent refuses one that
//! anyone but its owner may read, with the fix. One rule for the config's secret files and
//! the TLS keys.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// The file's permission bits when group or others have any of them (`None`: owner only).
pub fn exposed_mode(meta: &std::fs::Metadata) -> Option<u32> {
    let mode = meta.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

/// What is wrong with an exposed secret file, and what to do.
pub fn exposed_problem(path: &Path, mode: u32) -> String {
    format!(
        "{} holds a secret but is readable by group or others (mode {mode:o}); run `chmod 600 \
         {0}` and make it owned by the agent's user",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_owner_only_modes_pass() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("s");
        std::fs::write(&f, "x").expect("write");
        for (mode, exposed) in [(0o600, false), (0o400, false), (0o640, true), (0o604, true)] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let meta = std::fs::metadata(&f).expect("meta");
            assert_eq!(exposed_mode(&meta).is_some(), exposed, "{mode:o}");
        }
        assert!(exposed_problem(&f, 0o640).contains("chmod 600"));
    }
}
