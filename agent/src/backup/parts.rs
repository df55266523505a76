//! The Redis and files components, and the digests the manifest records.
//!
//! **Redis.** The RDB is fetched from a replica (`redis-cli --rdb`, the replica's own SYNC
//! path; the master is never asked) and checked with `redis-check-rdb`, which also gives its
//! replication offset (the RDB's `repl-offset` field) and its key count. The password goes to
//! redis-cli in `REDISCLI_AUTH`, never on its command line.
//!
//! **Files.** The shop's directories are read from this node's GlusterFS mount by restic
//! itself. Their digest is over the listing (each file's path, size and modification time),
//! not their content: reading every media file twice would double the run's I/O; restic
//! verifies content by its own hashes when it restores.
//!
//! **Digests.** For the staged components (database, RDB) the digest is the SHA-256 of one
//! line per file, sorted by path: `path, size, SHA-256 of the content`. A restore is verified
//! by recomputing it.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::process::Command;

use super::run_program;

/// What a digest covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestKind {
    /// Path, size and content hash of every file.
    Content,
    /// Path, size and modification time of every file.
    Listing,
}

/// A directory tree's digest, its bytes and its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeDigest {
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// Bytes of its files.
    pub bytes: u64,
    /// Number of files.
    pub files: u64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn walk(
    root: &Path,
    rel: &Path,
    out: &mut Vec<(PathBuf, std::fs::Metadata)>,
) -> Result<(), String> {
    let dir = root.join(rel);
    let mut entries: Vec<std::fs::DirEntry> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for e in entries {
        let r = rel.join(e.file_name());
        let meta = std::fs::symlink_metadata(root.join(&r))
            .map_err(|err| format!("{}: {err}", root.join(&r).display()))?;
        if meta.is_dir() {
            walk(root, &r, out)?;
        } else {
            out.push((r, meta));
        }
    }
    Ok(())
}

/// The digest of `rels` (files or directories, relative to `root`), blocking: run it off the
/// event loop's thread.
pub fn digest(root: &Path, rels: &[String], kind: DigestKind) -> Result<TreeDigest, String> {
    let mut files = Vec::new();
    let mut rels: Vec<&String> = rels.iter().collect();
    rels.sort();
    for rel in rels {
        let p = root.join(rel);
        let meta = std::fs::symlink_metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        if meta.is_dir() {
            walk(root, Path::new(rel), &mut files)?;
        } else {
            files.push((PathBuf::from(rel), meta));
        }
    }
    let mut total = Sha256::new();
    let mut bytes = 0u64;
    for (rel, meta) in &files {
        bytes += meta.len();
        let detail = match kind {
            DigestKind::Listing => {
                use std::os::unix::fs::MetadataExt as _;
                meta.mtime().to_string()
            }
            DigestKind::Content if meta.file_type().is_symlink() => {
                let t = std::fs::read_link(root.join(rel))
                    .map_err(|e| format!("{}: {e}", rel.display()))?;
                format!("-> {}", t.display())
            }
            DigestKind::Content => {
                let mut f = std::fs::File::open(root.join(rel))
                    .map_err(|e| format!("{}: {e}", root.join(rel).display()))?;
                let mut h = Sha256::new();
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = f
                        .read(&mut buf)
                        .map_err(|e| format!("{}: {e}", root.join(rel).display()))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                hex(&h.finalize())
            }
        };
        total.update(format!("{}\t{}\t{detail}\n", rel.display(), meta.len()).as_bytes());
    }
    Ok(TreeDigest {
        sha256: hex(&total.finalize()),
        bytes,
        files: files.len() as u64,
    })
}

/// The same, on tokio's blocking pool.
pub async fn digest_async(
    root: PathBuf,
    rels: Vec<String>,
    kind: DigestKind,
) -> Result<TreeDigest, String> {
    tokio::task::spawn_blocking(move || digest(&root, &rels, kind))
        .await
        .map_err(|e| format!("digest: {e}"))?
}

/// How to fetch and check an RDB.
#[derive(Clone, Debug)]
pub struct RedisSpec {
    /// `redis-cli`.
    pub redis_cli: PathBuf,
    /// `redis-check-rdb`.
    pub redis_check_rdb: PathBuf,
    /// ACL user, if any.
    pub username: Option<String>,
    /// Password, if any.
    pub password: Option<String>,
    /// Bound for the transfer and the check.
    pub timeout: Duration,
}

/// What `redis-check-rdb` found in an RDB.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RdbCheck {
    /// The RDB's `repl-offset` field.
    pub offset: Option<u64>,
    /// Keys read.
    pub keys: u64,
}

/// Parses `redis-check-rdb`'s report.
pub fn parse_check(out: &str) -> Result<RdbCheck, String> {
    if !out.contains("RDB looks OK") {
        let last: Vec<&str> = out.lines().rev().take(2).collect();
        return Err(format!(
            "redis-check-rdb: {}",
            last.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    let mut c = RdbCheck::default();
    for line in out.lines() {
        if let Some(v) = line.split("AUX FIELD repl-offset = '").nth(1) {
            c.offset = v.trim_end_matches('\'').parse().ok();
        }
        if let Some(v) = line
            .strip_prefix("[info] ")
            .and_then(|l| l.strip_suffix(" keys read"))
        {
            c.keys = v.trim().parse().unwrap_or(0);
        }
    }
    Ok(c)
}

impl RedisSpec {
    /// Fetches the RDB of the replica at `source` into `file`, then checks it.
    pub async fn take(&self, source: SocketAddr, file: &Path) -> Result<RdbCheck, String> {
        let mut c = Command::new(&self.redis_cli);
        c.args([
            "-h",
            &source.ip().to_string(),
            "-p",
            &source.port().to_string(),
        ]);
        if let Some(u) = &self.username {
            c.args(["--user", u]);
        }
        if let Some(p) = &self.password {
            c.env("REDISCLI_AUTH", p);
        }
        c.arg("--rdb").arg(file);
        run_program(&format!("redis-cli --rdb from {source}"), c, self.timeout)
            .await
            .map_err(|e| e.to_string())?;
        self.check(file).await
    }

    /// Checks an RDB file.
    pub async fn check(&self, file: &Path) -> Result<RdbCheck, String> {
        let mut c = Command::new(&self.redis_check_rdb);
        c.arg(file);
        let out = run_program("redis-check-rdb", c, self.timeout)
            .await
            .map_err(|e| e.to_string())?;
        parse_check(&String::from_utf8_lossy(&out.stdout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_report_is_read() {
        let ok = "[offset 0] Checking RDB file /tmp/r.rdb\n\
                  [offset 152] AUX FIELD repl-offset = '1144'\n\
                  [offset 185] \\o/ RDB looks OK! \\o/\n\
                  [info] 1 keys read\n[info] 0 expires\n";
        assert_eq!(
            parse_check(ok),
            Ok(RdbCheck {
                offset: Some(1144),
                keys: 1
            })
        );
        let bad = "[offset 0] Checking RDB file x\n--- RDB ERROR DETECTED ---\n[additional info] \
                   Reading type 0\n";
        assert!(parse_check(bad).is_err_and(|e| e.contains("RDB ERROR") || e.contains("Reading")));
    }

    #[test]
    fn digests_follow_content_and_listing() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = d.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(root.join("a/b/x"), b"hello").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(root.join("a/y"), b"world!").unwrap_or_else(|e| panic!("{e}"));
        let one =
            digest(root, &["a".into()], DigestKind::Content).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((one.bytes, one.files), (11, 2));
        let listing =
            digest(root, &["a".into()], DigestKind::Listing).unwrap_or_else(|e| panic!("{e}"));
        // Same size and time, other content: the content digest changes, the listing's (path,
        // size and mtime) does not.
        let x = root.join("a/b/x");
        let mtime = std::fs::metadata(&x)
            .and_then(|m| m.modified())
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&x, b"HELLO").unwrap_or_else(|e| panic!("{e}"));
        std::fs::File::options()
            .write(true)
            .open(&x)
            .and_then(|f| f.set_modified(mtime))
            .unwrap_or_else(|e| panic!("{e}"));
        let two =
            digest(root, &["a".into()], DigestKind::Content).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(one.sha256, two.sha256);
        assert_eq!(one.sha256.len(), 64);
        let same =
            digest(root, &["a".into()], DigestKind::Listing).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(listing, same);
        // A new file changes both.
        std::fs::write(root.join("a/z"), b"").unwrap_or_else(|e| panic!("{e}"));
        let more =
            digest(root, &["a".into()], DigestKind::Listing).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(listing.sha256, more.sha256);
        assert_eq!(more.files, 3);
        assert!(digest(root, &["missing".into()], DigestKind::Content).is_err());
    }
}
