//! Talking to the lab's services directly, as a test or `status` needs to.
//!
//! Each client is the service's own CLI run with a deadline: `mariadb` through the node's
//! UNIX socket (root, via unix_socket auth) or over TCP from inside a node, `redis-cli` and
//! `curl` from inside a node's namespace (`ip netns exec`), the `gluster` CLI inside glusterd's
//! namespaces (`nsenter -t PID -n -m`). HAProxy's admin socket is a UNIX socket, spoken to
//! directly. Nothing here ever blocks without a deadline: a stopped (SIGSTOP) or cut-off
//! service makes a query fail after its timeout, with the command and what it printed.
//!
//! Caveat: the shell-out clients cost a process spawn each (a few ms); fine for polling every
//! 100-200 ms, not for load.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use serde::Serialize;

use super::process::{in_netns, run, run_ok, CmdOutput};
use super::spec::{LabSpec, REDIS_PORT};

/// Default deadline of one query.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

// ----- MariaDB ----------------------------------------------------------------------------

/// Runs SQL on node `n` as root through its UNIX socket; returns tab-separated rows.
pub fn mysql(lab: &LabSpec, n: u64, sql: &str, timeout: Duration) -> Result<String> {
    let mut cmd = Command::new("mariadb");
    cmd.arg(format!(
        "--defaults-file={}",
        lab.mysql_defaults_file(n).display()
    ))
    .args(["-uroot", "-N", "-B", "--connect-timeout=3"]);
    run_ok(&mut cmd, Some(sql), timeout).with_context(|| format!("SQL on n{n}"))
}

/// Runs SQL over TCP from inside node `from` against node `to`'s MariaDB as `user`.
/// Returns the raw output (the caller decides whether a refusal is what it wanted).
pub fn mysql_tcp(
    lab: &LabSpec,
    from: u64,
    to: u64,
    user: &str,
    password: &str,
    sql: &str,
    timeout: Duration,
) -> Result<CmdOutput> {
    let mut cmd = in_netns(&lab.netns(from), "mariadb");
    cmd.args(["--no-defaults", "-N", "-B", "--connect-timeout=3"])
        .arg(format!("--host={}", lab.node_ip(to)))
        .arg(format!("--user={user}"))
        .arg(format!("--execute={sql}"))
        // The password through the environment keeps it out of `ps`.
        .env("MYSQL_PWD", password);
    run(&mut cmd, None, timeout)
}

/// Galera status of one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GaleraStatus {
    /// `wsrep_local_state_comment`: Synced, Donor/Desynced, Joining, Joined, ...
    pub state: String,
    /// `wsrep_cluster_size`.
    pub size: u32,
    /// `wsrep_cluster_status`: Primary, non-Primary, Disconnected.
    pub cluster_status: String,
    /// `wsrep_ready`: ON when the node accepts queries.
    pub ready: bool,
}

impl GaleraStatus {
    /// Synced, Primary, ready, in a cluster of `size`.
    pub fn is_synced_in(&self, size: u32) -> bool {
        self.state == "Synced"
            && self.cluster_status == "Primary"
            && self.ready
            && self.size == size
    }
}

impl std::fmt::Display for GaleraStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} size {}{}",
            self.state,
            self.cluster_status,
            self.size,
            if self.ready { "" } else { " (not ready)" }
        )
    }
}

/// Node `n`'s `wsrep_%` status variables (as root through the socket).
pub fn wsrep_vars(lab: &LabSpec, n: u64, timeout: Duration) -> Result<BTreeMap<String, String>> {
    let out = mysql(lab, n, "SHOW GLOBAL STATUS LIKE 'wsrep_%'", timeout)?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('\t')?;
            Some((k.to_ascii_lowercase(), v.to_string()))
        })
        .collect())
}

/// Node `n`'s Galera status.
pub fn galera_status(lab: &LabSpec, n: u64, timeout: Duration) -> Result<GaleraStatus> {
    let vars = wsrep_vars(lab, n, timeout)?;
    let get = |k: &str| vars.get(k).cloned().unwrap_or_default();
    Ok(GaleraStatus {
        state: get("wsrep_local_state_comment"),
        size: get("wsrep_cluster_size").parse().unwrap_or(0),
        cluster_status: get("wsrep_cluster_status"),
        ready: get("wsrep_ready") == "ON",
    })
}

// ----- Redis ------------------------------------------------------------------------------

/// Runs `redis-cli ARGS` from inside node `from` against node `to`'s Redis. Fails when the
/// CLI fails or answers an error (`ERR`, `NOAUTH`, ... on stdout).
pub fn redis_from(
    lab: &LabSpec,
    from: u64,
    to: u64,
    args: &[&str],
    timeout: Duration,
) -> Result<String> {
    let mut cmd = in_netns(&lab.netns(from), "redis-cli");
    cmd.arg("-h")
        .arg(lab.node_ip(to).to_string())
        .arg("-p")
        .arg(REDIS_PORT.to_string())
        .args(args);
    let out = run_ok(&mut cmd, None, timeout)
        .with_context(|| format!("redis-cli {} (n{from} -> n{to})", args.join(" ")))?;
    let text = out.replace('\r', "");
    let first = text.lines().next().unwrap_or_default();
    if first.starts_with("ERR")
        || first.starts_with("Could not connect")
        || first.starts_with("(error)")
    {
        bail!(
            "redis-cli {} (n{from} -> n{to}): {}",
            args.join(" "),
            text.trim()
        );
    }
    Ok(text)
}

/// Runs `redis-cli ARGS` from inside node `n` against its HAProxy's Redis frontend
/// (127.0.0.1). Returns the CLI's output as is (an error reply such as `NOREPLICAS ...` or
/// `READONLY ...` is output, not an `Err`); fails only when the CLI itself fails.
pub fn redis_via_haproxy(
    lab: &LabSpec,
    n: u64,
    args: &[&str],
    timeout: Duration,
) -> Result<String> {
    let mut cmd = in_netns(&lab.netns(n), "redis-cli");
    cmd.arg("-h")
        .arg("127.0.0.1")
        .arg("-p")
        .arg(super::spec::HAPROXY_REDIS_PORT.to_string())
        .args(args);
    let out = run_ok(&mut cmd, None, timeout)
        .with_context(|| format!("redis-cli {} (n{n} HAProxy)", args.join(" ")))?;
    Ok(out.replace('\r', "").trim().to_string())
}

/// Runs `redis-cli ARGS` against node `n`'s Redis from inside node `n`.
pub fn redis(lab: &LabSpec, n: u64, args: &[&str], timeout: Duration) -> Result<String> {
    redis_from(lab, n, n, args, timeout)
}

/// Parses `INFO` output into `key -> value`.
pub fn parse_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// Redis replication view of one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RedisRole {
    /// `master` or `slave` (Redis' word).
    pub role: String,
    /// For a replica: `master_link_status` (`up`/`down`).
    pub link: Option<String>,
    /// For a replica: the master's address.
    pub master: Option<String>,
    /// For a master: `connected_slaves`.
    pub replicas: Option<u32>,
}

impl std::fmt::Display for RedisRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.role.as_str() {
            "master" => write!(f, "master, {} replicas", self.replicas.unwrap_or(0)),
            _ => write!(
                f,
                "replica of {}, link {}",
                self.master.as_deref().unwrap_or("?"),
                self.link.as_deref().unwrap_or("?")
            ),
        }
    }
}

/// Node `n`'s `INFO replication`, summarised.
pub fn redis_role(lab: &LabSpec, n: u64, timeout: Duration) -> Result<RedisRole> {
    let info = parse_info(&redis(lab, n, &["info", "replication"], timeout)?);
    let role = info
        .get("role")
        .cloned()
        .ok_or_else(|| anyhow!("n{n}: INFO replication has no role line"))?;
    let master = match (info.get("master_host"), info.get("master_port")) {
        (Some(h), Some(p)) => Some(format!("{h}:{p}")),
        _ => None,
    };
    Ok(RedisRole {
        link: info.get("master_link_status").cloned(),
        replicas: info.get("connected_slaves").and_then(|v| v.parse().ok()),
        master,
        role,
    })
}

// ----- HAProxy ----------------------------------------------------------------------------

/// Sends one command to node `n`'s HAProxy admin socket and returns the answer. A successful
/// `set` answers an empty line.
pub fn haproxy(lab: &LabSpec, n: u64, command: &str, timeout: Duration) -> Result<String> {
    haproxy_socket(&lab.haproxy_admin_socket(n), command, timeout)
        .with_context(|| format!("HAProxy admin socket of n{n}: `{command}`"))
}

/// One command on a HAProxy CLI socket at `path`.
pub fn haproxy_socket(path: &Path, command: &str, timeout: Duration) -> Result<String> {
    let mut s = UnixStream::connect(path)
        .with_context(|| format!("cannot connect to {}", path.display()))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(format!("{command}\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .with_context(|| format!("no complete answer within {timeout:?}"))?;
    Ok(out)
}

/// One row of `show servers state`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HaproxyServer {
    /// Backend name (`be_redis`, `be_mysql`, `be_mysql_recipe`, `be_php`).
    pub backend: String,
    /// Server name (`redis1`, `db2`, `php3`).
    pub server: String,
    /// `srv_addr`.
    pub addr: String,
    /// `srv_op_state`: 0 stopped, 1 starting, 2 running, 3 stopping.
    pub op_state: u32,
    /// `srv_admin_state` bitmask: 0x01 forced maint, 0x02 inherited maint, 0x04 maint from
    /// config (`disabled`, permanent), 0x08 forced drain, 0x10 inherited drain, 0x20 maint
    /// from a failed DNS resolution.
    pub admin_state: u32,
    /// A backup server (`backup` in the config; from `show stat`).
    pub backup: bool,
}

impl HaproxyServer {
    /// In maintenance now: a runtime maint bit is set (0x01, 0x02 or 0x20). A server
    /// configured `disabled` starts at 0x05 and keeps 0x04 for life, even after `state ready`
    /// (admin_state 4 is in service), so 0x04 alone does not count.
    pub fn is_maint(&self) -> bool {
        self.admin_state & (0x01 | 0x02 | 0x20) != 0
    }

    /// Draining (0x08 or 0x10).
    pub fn is_drain(&self) -> bool {
        self.admin_state & (0x08 | 0x10) != 0
    }

    /// Health checks pass (op_state 2).
    pub fn is_up(&self) -> bool {
        self.op_state == 2
    }

    /// In service by its admin state (`ready`): neither in maintenance nor draining.
    pub fn is_in_service(&self) -> bool {
        !self.is_maint() && !self.is_drain()
    }

    /// What HAProxy may send a new connection to: in service and passing its checks.
    pub fn is_routable(&self) -> bool {
        self.is_in_service() && self.is_up()
    }

    /// One word for status: MAINT, DRAIN, UP or DOWN.
    pub fn word(&self) -> &'static str {
        if self.is_maint() {
            "MAINT"
        } else if self.is_drain() {
            "DRAIN"
        } else if self.is_up() {
            "UP"
        } else {
            "DOWN"
        }
    }
}

/// Parses `show servers state` (version line, `#` header, rows).
pub fn parse_servers_state(text: &str) -> Vec<HaproxyServer> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 7 {
                return None;
            }
            Some(HaproxyServer {
                backend: f[1].to_string(),
                server: f[3].to_string(),
                addr: f[4].to_string(),
                op_state: f[5].parse().ok()?,
                admin_state: f[6].parse().ok()?,
                backup: false,
            })
        })
        .collect()
}

/// Backup servers `(backend, server)` from `show stat` CSV (column `bck` = 1).
pub fn parse_stat_backups(csv: &str) -> Vec<(String, String)> {
    let mut lines = csv.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let cols: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let Some(bck) = cols.iter().position(|c| *c == "bck") else {
        return Vec::new();
    };
    lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.get(bck) == Some(&"1")).then(|| (f[0].to_string(), f[1].to_string()))
        })
        .collect()
}

/// Node `n`'s HAProxy servers, every backend.
pub fn haproxy_servers(lab: &LabSpec, n: u64, timeout: Duration) -> Result<Vec<HaproxyServer>> {
    let mut servers = parse_servers_state(&haproxy(lab, n, "show servers state", timeout)?);
    let backups = parse_stat_backups(&haproxy(lab, n, "show stat", timeout)?);
    for s in &mut servers {
        s.backup = backups
            .iter()
            .any(|(b, n)| *b == s.backend && *n == s.server);
    }
    Ok(servers)
}

// ----- HTTP, Gluster ----------------------------------------------------------------------

/// An HTTP answer fetched from inside a node.
#[derive(Clone, Debug)]
pub struct HttpAnswer {
    /// Status code (0 when no answer).
    pub status: u16,
    /// Body.
    pub body: String,
}

/// `GET url` with curl from inside node `n` (for example `http://127.0.0.1:8080/`).
pub fn http_get_in(lab: &LabSpec, n: u64, url: &str, timeout: Duration) -> Result<HttpAnswer> {
    let mut cmd = in_netns(&lab.netns(n), "curl");
    let secs = format!("{:.1}", timeout.as_secs_f64().max(0.5));
    cmd.args(["-s", "-m", &secs, "-w", "\n%{http_code}", url]);
    let out = run(&mut cmd, None, timeout + Duration::from_secs(2))?;
    let text = out.stdout.clone();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    let status = code.trim().parse().unwrap_or(0);
    if status == 0 {
        bail!("GET {url} from n{n}: no answer ({})", out.failure());
    }
    Ok(HttpAnswer {
        status,
        body: body.to_string(),
    })
}

/// Runs `gluster --mode=script ARGS` through node `n`'s glusterd (pid `glusterd_pid`).
pub fn gluster(glusterd_pid: i32, args: &[&str], timeout: Duration) -> Result<String> {
    let mut cmd = Command::new("nsenter");
    cmd.arg("-t")
        .arg(glusterd_pid.to_string())
        .args(["-n", "-m", "gluster", "--mode=script"])
        .args(args);
    run_ok(&mut cmd, None, timeout)
}

/// Whether `path` is a mount point, from `/proc/self/mounts` (never `stat`: a cut node's
/// FUSE mount blocks every process that touches it).
pub fn is_mounted(path: &Path, fstype_prefix: &str) -> bool {
    mounts_under(path)
        .iter()
        .any(|(p, t)| Path::new(p) == path && t.starts_with(fstype_prefix))
}

/// Why the FUSE mount at `path` does not serve, if it does not: not mounted, or a listing
/// fails (`Transport endpoint is not connected` after a cut the client did not survive) or
/// hangs (2 s, in a child process so that a hung FUSE call cannot hold the caller).
pub fn mount_problem(path: &Path) -> Option<String> {
    if !is_mounted(path, "fuse") {
        return Some(format!("{} is not a FUSE mount", path.display()));
    }
    let mut ls = Command::new("ls");
    ls.arg("-a").arg(path);
    match run(&mut ls, None, Duration::from_secs(2)) {
        Ok(o) if o.status.is_some_and(|s| s.success()) => None,
        Ok(o) if o.status.is_none() => Some(format!("listing {} hangs", path.display())),
        Ok(o) => Some(format!("listing {}: {}", path.display(), o.stderr.trim())),
        Err(e) => Some(format!("listing {}: {e:#}", path.display())),
    }
}

/// Mount points (path, fstype) at or below `dir`, from `/proc/self/mounts`.
pub fn mounts_under(dir: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let point = f.get(1)?.replace("\\040", " ");
            Path::new(&point)
                .starts_with(dir)
                .then(|| (point, f.get(2).copied().unwrap_or_default().to_string()))
        })
        .collect()
}

/// Writes `text` to `path` inside a Gluster mount, with a deadline (a child process does it,
/// so a hung mount cannot block the caller).
pub fn write_file_bounded(path: &Path, text: &str, timeout: Duration) -> Result<()> {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "cat > \"$1\"", "sh"]).arg(path);
    run_ok(&mut cmd, Some(text), timeout)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Reads `path` inside a Gluster mount with a deadline (see [`write_file_bounded`]).
pub fn read_file_bounded(path: &Path, timeout: Duration) -> Result<String> {
    let mut cmd = Command::new("cat");
    cmd.arg(path);
    run_ok(&mut cmd, None, timeout).with_context(|| format!("cannot read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_state_rows_parse_and_admin_state_is_a_bitmask() {
        let text = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state \
                    srv_uweight\n3 be_redis 1 redis1 10.77.0.11 2 0 1 1 7 6 3 4 6 0 0 0 - 6379 -\n\
                    3 be_redis 2 redis2 10.77.0.12 0 5 1 1 7 1 0 0 14 0 0 0 - 6379 -\n\
                    3 be_redis 3 redis3 10.77.0.13 2 4 1 1 7 6 3 4 6 0 0 0 - 6379 -\n\
                    3 be_redis 3 redis3 10.77.0.13 2 12 1 1 7 6 3 4 6 0 0 0 - 6379 -\n";
        let rows = parse_servers_state(text);
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].word(), "UP");
        assert_eq!(rows[1].word(), "MAINT");
        // `disabled` in the config, then `state ready`: 4 means in service.
        assert_eq!(rows[2].word(), "UP");
        assert_eq!(rows[3].word(), "DRAIN");
        assert!(rows[0].is_routable() && rows[2].is_routable());
        assert!(!rows[1].is_in_service() && !rows[1].is_routable());
        assert!(!rows[3].is_in_service() && !rows[3].is_routable());
        // In service (ready) but failing its checks: not routable.
        let down = HaproxyServer {
            op_state: 0,
            admin_state: 4,
            ..rows[2].clone()
        };
        assert!(down.is_in_service() && !down.is_routable());
    }

    #[test]
    fn backups_come_from_the_bck_column() {
        let csv = "# pxname,svname,qcur,status,act,bck\nbe_mysql,db1,0,UP,1,0\n\
                   be_mysql,db2,0,UP,0,1\nbe_mysql,BACKEND,0,UP,1,2\n";
        assert_eq!(
            parse_stat_backups(csv),
            vec![("be_mysql".to_string(), "db2".to_string())]
        );
    }

    #[test]
    fn info_parses_and_skips_comments() {
        let info = parse_info("# Replication\nrole:slave\nmaster_link_status:up\n");
        assert_eq!(info.get("role").map(String::as_str), Some("slave"));
        assert_eq!(
            info.get("master_link_status").map(String::as_str),
            Some("up")
        );
    }
}
