//! `grastate.dat`: the durable position Galera saves in a node's datadir, read by the node's
//! own agent as evidence for a rejoin or a full-outage bootstrap.
//!
//! Galera writes the file at start (with `seqno: -1`, "running, position unknown"), and again
//! on a clean shutdown with the last committed seqno. A `kill -9` or a power loss leaves the
//! running state behind, so `seqno: -1` after a stop means "crashed: ask
//! `mariadbd --wsrep-recover`" (see [`super::wsrep_recover`]). `safe_to_bootstrap: 1` is set
//! on the last node to leave a Primary component cleanly.
//!
//! Design: [`parse_grastate`] is pure and strict, because its output decides which node's
//! history survives an outage: unknown keys are ignored (forward compatibility), but a bad
//! UUID, seqno or flag, a duplicate key, or a missing header/`version`/`uuid`/`seqno` is an
//! error naming the file and line. A missing file is not an error: [`read_grastate`] returns
//! `Ok(None)`, which the decision ranks apart from "present but unreadable".
//!
//! Galera pads the file with spaces to a fixed size (rewriting it in place), so blank and
//! space-only lines are skipped.
//!
//! Caveats:
//! - The nil UUID with `seqno: -1` is read as "no state" (`uuid: None, seqno: None`), which is
//!   what Galera writes for a node that never joined a cluster.
//! - A file without `safe_to_bootstrap` (format 2.0, Galera before 3.19) reads as not safe,
//!   although Galera itself would treat it as safe: the evidence never claims a safety it
//!   did not see.
//! - A single-node cluster keeps `safe_to_bootstrap: 1` even after `kill -9` (it was the whole
//!   Primary component); only members of a larger component are marked unsafe while running.
//! - [`read_grastate`] is a blocking read of a small local file; call it from a blocking
//!   context if the filesystem may hang.
//! - `galera_status::parse_grastate` (used by the MariaDB probe's details) is an older,
//!   lenient parser of the same file; this module is the one to rank evidence with.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cluster::is_state_uuid;

/// The file's name inside the datadir.
pub const GRASTATE_FILE: &str = "grastate.dat";

/// The first line Galera writes.
pub const HEADER: &str = "# GALERA saved state";

/// The UUID Galera writes for "no cluster state".
pub const NIL_UUID: &str = "00000000-0000-0000-0000-000000000000";

/// The saved state of one node, as `grastate.dat` says it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grastate {
    /// File format version (`2.1` with Galera 26.4).
    pub version: String,
    /// Cluster state (history) UUID, lowercase; `None` for the nil UUID (no state).
    pub uuid: Option<String>,
    /// Last committed seqno after a clean stop; `None` for `-1` (running, or crashed).
    pub seqno: Option<i64>,
    /// Whether this node may bootstrap a new cluster as is (`safe_to_bootstrap: 1`).
    pub safe_to_bootstrap: bool,
}

/// Why `grastate.dat` could not be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum GrastateError {
    /// The file exists but could not be read (permissions, not UTF-8, a directory...).
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is empty (truncated, for instance by a crash during a write).
    #[error("{}: empty file", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// One line is malformed.
    #[error("{}:{line}: {reason}: `{text}`", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The line as written.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A required key is absent.
    #[error("{}: no `{key}:` line", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// The key (`version`, `uuid` or `seqno`).
        key: &'static str,
    },
}

/// Whether `s` is a UUID as Galera writes it: `8-4-4-4-12` hex digits (either case), the nil
/// UUID included. The shape check is the replicated state's ([`is_state_uuid`]).
pub fn is_uuid(s: &str) -> bool {
    s == NIL_UUID || is_state_uuid(&s.to_ascii_lowercase())
}

/// Parses a Galera state UUID: `Ok(None)` for the nil UUID, the lowercase UUID otherwise.
pub fn parse_state_uuid(s: &str) -> Result<Option<String>, String> {
    if !is_uuid(s) {
        return Err("not a UUID (8-4-4-4-12 hex digits)".into());
    }
    Ok((s != NIL_UUID).then(|| s.to_ascii_lowercase()))
}

/// Parses a Galera seqno: `Ok(None)` for `-1` (undefined), the seqno otherwise.
pub fn parse_seqno(s: &str) -> Result<Option<i64>, String> {
    match s.parse::<i64>() {
        Ok(-1) => Ok(None),
        Ok(n) if n >= 0 => Ok(Some(n)),
        Ok(_) => Err("seqno below -1".into()),
        Err(e) => Err(format!("not a seqno: {e}")),
    }
}

/// Parses the text of `grastate.dat`; `path` only names the file in errors.
pub fn parse_grastate(text: &str, path: &Path) -> Result<Grastate, GrastateError> {
    let line_err = |line: usize, text: &str, reason: String| GrastateError::Line {
        path: path.to_path_buf(),
        line,
        text: text.to_string(),
        reason,
    };
    if text.trim().is_empty() {
        return Err(GrastateError::Empty {
            path: path.to_path_buf(),
        });
    }
    let mut version: Option<String> = None;
    let mut uuid: Option<Option<String>> = None;
    // With its line, to blame it if it comes with the nil UUID.
    let mut seqno: Option<(Option<i64>, usize, &str)> = None;
    let mut safe: Option<bool> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if n == 1 {
            if line != HEADER {
                return Err(line_err(n, raw, format!("expected `{HEADER}`")));
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(line_err(n, raw, "expected `key: value`".into()));
        };
        let (key, value) = (key.trim(), value.trim());
        let duplicate = match key {
            "version" => version.is_some(),
            "uuid" => uuid.is_some(),
            "seqno" => seqno.is_some(),
            "safe_to_bootstrap" => safe.is_some(),
            // Later formats may add keys; they carry nothing we rank on.
            _ => continue,
        };
        if duplicate {
            return Err(line_err(n, raw, format!("duplicate `{key}`")));
        }
        let bad = |reason: String| line_err(n, raw, reason);
        match key {
            "version" if value.is_empty() => return Err(bad("empty version".into())),
            "version" => version = Some(value.to_string()),
            "uuid" => uuid = Some(parse_state_uuid(value).map_err(bad)?),
            "seqno" => seqno = Some((parse_seqno(value).map_err(bad)?, n, raw)),
            _ => {
                safe = Some(match value {
                    "0" => false,
                    "1" => true,
                    _ => return Err(bad("safe_to_bootstrap is neither 0 nor 1".into())),
                })
            }
        }
    }
    let missing = |key| GrastateError::Missing {
        path: path.to_path_buf(),
        key,
    };
    let version = version.ok_or_else(|| missing("version"))?;
    let uuid = uuid.ok_or_else(|| missing("uuid"))?;
    let (seqno, seqno_line, seqno_text) = seqno.ok_or_else(|| missing("seqno"))?;
    if uuid.is_none() && seqno.is_some() {
        // Galera never writes a position without a history; trusting it would rank garbage.
        return Err(line_err(
            seqno_line,
            seqno_text,
            "a seqno with the nil UUID".into(),
        ));
    }
    Ok(Grastate {
        version,
        uuid,
        seqno,
        safe_to_bootstrap: safe == Some(true),
    })
}

/// Reads `datadir/grastate.dat`: `Ok(None)` when the file does not exist (a fresh datadir,
/// or one whose state was removed), an error when it exists but cannot be used.
pub fn read_grastate(datadir: &Path) -> Result<Option<Grastate>, GrastateError> {
    let path = datadir.join(GRASTATE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_grastate(&text, &path).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(GrastateError::Read { path, source }),
    }
}

/// Sets `safe_to_bootstrap` in `datadir/grastate.dat` (what Galera's documentation tells an
/// operator to edit by hand before a bootstrap): rewrites only that line, through a
/// temporary file renamed over the original, keeping the file's owner and mode (mariadbd,
/// running as its own user, rewrites the file later). Returns whether it changed anything;
/// a missing file is an error (a bootstrap from a datadir without state needs no flag:
/// mariadbd creates the file with the flag set).
pub fn set_safe_to_bootstrap(datadir: &Path, safe: bool) -> Result<bool, GrastateError> {
    use std::os::unix::fs::MetadataExt as _;
    let path = datadir.join(GRASTATE_FILE);
    let read_err = |source| GrastateError::Read {
        path: path.clone(),
        source,
    };
    let text = std::fs::read_to_string(&path).map_err(read_err)?;
    let parsed = parse_grastate(&text, &path)?;
    if parsed.safe_to_bootstrap == safe {
        return Ok(false);
    }
    let value = if safe { "1" } else { "0" };
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line.trim_start().starts_with("safe_to_bootstrap:") {
            out.push_str("safe_to_bootstrap: ");
            out.push_str(value);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    let meta = std::fs::metadata(&path).map_err(read_err)?;
    let tmp = datadir.join(format!("{GRASTATE_FILE}.triad-tmp"));
    let write = || -> std::io::Result<()> {
        std::fs::write(&tmp, &out)?;
        std::fs::set_permissions(&tmp, meta.permissions())?;
        std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid()))?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    match write() {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            // The agent as the `triad` user, a member of the server's group: the datadir is
            // not writable (no temporary file, no chown) but grastate.dat is (mode 0660).
            let _ = std::fs::remove_file(&tmp);
            rewrite_in_place(&path, &out).map_err(read_err)?;
        }
        Err(source) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(read_err(source));
        }
    }
    Ok(true)
}

/// Rewrites `path` in place with `text` and syncs it: one `write` of a file of a few hundred
/// bytes (a block), for an agent that may write the file but not its directory. The owner
/// and mode stay as they are.
fn rewrite_in_place(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        crate::probe::fixture("galera", name)
    }

    /// The path an agent without write access to the datadir takes (it is in the server's
    /// group): the file's text changes, its inode, owner and mode do not.
    #[test]
    fn in_place_rewrite_keeps_the_file() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(GRASTATE_FILE);
        std::fs::write(&path, fixture("grastate_killed_single_node.dat")).expect("write");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o660))
            .expect("chmod");
        let before = std::fs::metadata(&path).expect("meta");
        let text = fixture("grastate_clean_stop.dat");
        rewrite_in_place(&path, &text).expect("rewrite");
        let after = std::fs::metadata(&path).expect("meta");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), text);
        assert_eq!(
            (before.ino(), before.mode(), before.uid()),
            (after.ino(), after.mode(), after.uid())
        );
    }

    fn parse(text: &str) -> Result<Grastate, GrastateError> {
        parse_grastate(text, Path::new("/data/grastate.dat"))
    }

    /// Real captures (see the fixtures' README): fixture -> (uuid, seqno, safe).
    #[test]
    fn real_captures() {
        let cases: [(&str, Option<&str>, Option<i64>, bool); 3] = [
            (
                "grastate_clean_stop.dat",
                Some("9eaceb67-efac-11f1-b809-474591e831a5"),
                Some(6),
                true,
            ),
            (
                "grastate_killed_single_node.dat",
                Some("9eaceb67-efac-11f1-b809-474591e831a5"),
                None,
                true,
            ),
            (
                "grastate_running.dat",
                Some("de5b593b-ebe1-11f1-b996-0bbce3f5b979"),
                None,
                false,
            ),
        ];
        for (name, uuid, seqno, safe) in cases {
            let g = parse(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(g.version, "2.1", "{name}");
            assert_eq!(g.uuid.as_deref(), uuid, "{name}");
            assert_eq!(g.seqno, seqno, "{name}");
            assert_eq!(g.safe_to_bootstrap, safe, "{name}");
        }
    }

    #[test]
    fn hand_made_valid_cases() {
        let nil =
            format!("{HEADER}\nversion: 2.1\nuuid: {NIL_UUID}\nseqno: -1\nsafe_to_bootstrap: 0\n");
        let g = parse(&nil).expect("nil state parses");
        assert_eq!((g.uuid, g.seqno, g.safe_to_bootstrap), (None, None, false));

        // Upper case, extra keys and comments, no safe_to_bootstrap (format 2.0).
        let old = format!(
            "{HEADER}\nversion: 2.0\n# note\nuuid: 9EACEB67-EFAC-11F1-B809-474591E831A5\n\
             seqno: 42\ncert_index: x\n"
        );
        let g = parse(&old).expect("format 2.0 parses");
        assert_eq!(
            g.uuid.as_deref(),
            Some("9eaceb67-efac-11f1-b809-474591e831a5")
        );
        assert_eq!(g.seqno, Some(42));
        assert!(!g.safe_to_bootstrap, "missing flag reads as not safe");
    }

    /// (text, what the error must mention)
    #[test]
    fn malformed_cases_name_file_and_line() {
        let u = "9eaceb67-efac-11f1-b809-474591e831a5";
        let cases = [
            ("", "/data/grastate.dat: empty file".to_string()),
            (" \n", "empty file".to_string()),
            (
                "version: 2.1\n",
                ":1: expected `# GALERA saved state`".into(),
            ),
            (
                &*format!("{HEADER}\nversion: 2.1\nuuid: {u}\nseqno: banana\n"),
                "/data/grastate.dat:4: not a seqno".into(),
            ),
            (
                &*format!("{HEADER}\nversion: 2.1\nuuid: {u}\nseqno: -2\n"),
                ":4: seqno below -1".into(),
            ),
            (
                &*format!("{HEADER}\nversion: 2.1\nuuid: not-a-uuid\nseqno: 1\n"),
                ":3: not a UUID".into(),
            ),
            (
                &*format!("{HEADER}\nversion: 2.1\nuuid: {}\nseqno: 1\n", &u[1..]),
                ":3: not a UUID".into(),
            ),
            (
                &*format!("{HEADER}\nversion: 2.1\nuuid: {u}\nseqno: 1\nsafe_to_bootstrap: yes\n"),
                ":5: safe_to_bootstrap is neither 0 nor 1".into(),
            ),
            (
                &*format!("{HEADER}\nversion: 2.1\nuuid: {u}\nseqno: 1\nseqno: 2\n"),
                ":5: duplicate `seqno`".into(),
            ),
            (
                &*format!("{HEADER}\nversion: 2.1\nuuid {u}\n"),
                ":3: expected `key: value`".into(),
            ),
            (
                &*format!("{HEADER}\nversion: 2.1\nseqno: 1\n"),
                "no `uuid:` line".into(),
            ),
            (
                &*format!("{HEADER}\nversion: 2.1\nuuid: {u}\n"),
                "no `seqno:` line".into(),
            ),
            (
                &*format!("{HEADER}\nuuid: {u}\nseqno: 1\n"),
                "no `version:` line".into(),
            ),
            (
                &*format!("{HEADER}\nversion: 2.1\nuuid: {NIL_UUID}\nseqno: 7\n"),
                "a seqno with the nil UUID".into(),
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.contains(&want), "{text:?}: `{e}` lacks `{want}`");
            assert!(e.contains("/data/grastate.dat"), "{e}");
        }
    }

    #[test]
    fn read_tells_missing_from_malformed() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(read_grastate(dir.path()).expect("no file").is_none());
        std::fs::write(dir.path().join(GRASTATE_FILE), "garbage\n").expect("write");
        let e = read_grastate(dir.path()).expect_err("malformed");
        assert!(matches!(e, GrastateError::Line { line: 1, .. }), "{e}");
        std::fs::remove_file(dir.path().join(GRASTATE_FILE)).expect("rm");
        std::fs::create_dir(dir.path().join(GRASTATE_FILE)).expect("mkdir");
        let e = read_grastate(dir.path()).expect_err("a directory");
        assert!(matches!(e, GrastateError::Read { .. }), "{e}");
        std::fs::remove_dir(dir.path().join(GRASTATE_FILE)).expect("rmdir");
        std::fs::write(
            dir.path().join(GRASTATE_FILE),
            fixture("grastate_clean_stop.dat"),
        )
        .expect("write");
        assert_eq!(
            read_grastate(dir.path())
                .expect("reads")
                .and_then(|g| g.seqno),
            Some(6)
        );
    }

    #[test]
    fn uuid_and_seqno_helpers() {
        assert!(is_uuid(NIL_UUID));
        assert!(!is_uuid("ed03d71a-d068-11f0-a0d3-1f99c5be746"));
        assert!(!is_uuid("9eaceb67-efac-11f1-b809-474591e831a5-0"));
        assert!(!is_uuid("ed03d71a-d068-11f0-a0d3-1f99c5be746g"));
        assert!(!is_uuid("ed03d71ad06811f0a0d31f99c5be7468"));
        assert_eq!(parse_state_uuid(NIL_UUID), Ok(None));
        assert_eq!(parse_seqno("-1"), Ok(None));
        assert_eq!(parse_seqno("0"), Ok(Some(0)));
        assert!(parse_seqno("+").is_err());
    }

    /// The flag is set and cleared on a real capture, only that line changes, the mode is
    /// kept, and a missing file is an error that names it.
    #[test]
    fn safe_to_bootstrap_is_set_and_cleared_in_place() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("triad-grastate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(GRASTATE_FILE);
        let original = fixture("grastate_clean_stop.dat");
        std::fs::write(&path, &original).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert_eq!(
            set_safe_to_bootstrap(&dir, true).ok(),
            Some(false),
            "already set"
        );
        assert_eq!(set_safe_to_bootstrap(&dir, false).ok(), Some(true));
        let g = read_grastate(&dir).expect("read").expect("present");
        assert!(!g.safe_to_bootstrap);
        assert_eq!(g.seqno, Some(6));
        let text = std::fs::read_to_string(&path).expect("read");
        let changed: Vec<_> = original
            .lines()
            .zip(text.lines())
            .filter(|(a, b)| a != b)
            .collect();
        assert_eq!(changed.len(), 1, "{changed:?}");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(set_safe_to_bootstrap(&dir, true).ok(), Some(true));
        assert!(
            read_grastate(&dir)
                .expect("read")
                .expect("present")
                .safe_to_bootstrap
        );
        std::fs::remove_file(&path).expect("rm");
        let e = set_safe_to_bootstrap(&dir, true).expect_err("missing");
        assert!(e.to_string().contains("grastate.dat"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
