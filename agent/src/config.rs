//! The agent's configuration: a TOML file, parsed strictly and then validated.
//!
//! Parsing rejects unknown keys (`deny_unknown_fields`) so a typo never silently falls back to
//! a default. Validation runs after parsing and checks what types cannot: the node's own id is
//! among the peers, ids and addresses are unique and parse, the Raft timing is coherent, and
//! referenced files exist. Every error names the file, the key path and what is wrong, and
//! `triad check-config` exits 64 (EX_USAGE) on any of them.
//!
//! Every service has one shape: a section says how Triad probes it (`[redis]`, `[mariadb]`,
//! ...), `[[haproxy.backends]]` says which HAProxy backend follows which committed role, and
//! `[services]` says how Triad starts and stops it. `triad check-config` prints what an agent
//! with the file will do ([`Explanation`]).
//!
//! Caveats: membership is fixed by this file (no runtime membership change yet); a node whose
//! stored Raft membership differs from the configured peers refuses to start.

mod backup;
mod explain;
mod tls;

pub use backup::{settings as backup_settings, BackupPrograms, BackupSection, Retention};
pub use tls::{config_dir, load as load_tls, TlsSection};

pub use explain::{
    BackendPlan, ControlPlan, Explanation, FailoverMode, FailoverPlan, HaproxyPlan, ProbePlan,
    TimingPlan,
};

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name of the cluster. Agents refuse peer connections that announce another name, so two
    /// clusters on one network cannot mix. Default `triad`.
    #[serde(default = "default_cluster_name")]
    pub cluster_name: String,
    /// This node.
    pub node: NodeSection,
    /// Every member of the cluster, this node included.
    pub peers: Vec<PeerConfig>,
    /// The operator HTTP API.
    pub api: ApiSection,
    /// Consensus timing and log compaction.
    #[serde(default)]
    pub raft: RaftSection,
    /// Default probe timing; each service section may override it.
    #[serde(default)]
    pub probes: ProbeDefaults,
    /// Redis probing (absent: Redis is not probed).
    #[serde(default)]
    pub redis: Option<RedisSection>,
    /// MariaDB/Galera probing (absent: not probed).
    #[serde(default)]
    pub mariadb: Option<MariadbSection>,
    /// PHP-FPM probing (absent: not probed).
    #[serde(default)]
    pub phpfpm: Option<PhpfpmSection>,
    /// GlusterFS probing (absent: not probed).
    #[serde(default)]
    pub gluster: Option<GlusterSection>,
    /// Redis failover and fencing (used when `[redis]` is configured).
    #[serde(default)]
    pub failover: FailoverSection,
    /// The local HAProxy and the backends Triad keeps routing to what was committed (absent:
    /// HAProxy is not managed).
    #[serde(default)]
    pub haproxy: Option<HaproxySection>,
    /// How Triad starts, stops and restarts local services (default: systemd with Debian's
    /// unit names).
    #[serde(default)]
    pub services: ServicesSection,
    /// Galera recovery: rejoining this node's mariadbd when it dies, and bootstrapping the
    /// cluster after a full outage (absent: Galera is only probed). Needs `[mariadb]` with
    /// `datadir` and a service control (`[services]`).
    #[serde(default)]
    pub galera: Option<GaleraSection>,
    /// Coordinated backups of the database, Redis and the shared files to a restic
    /// repository, verified by a restore (absent: no backups).
    #[serde(default)]
    pub backup: Option<BackupSection>,
    /// Mutual TLS between agents (on by default; see [`TlsSection`]).
    #[serde(default)]
    pub tls: TlsSection,
    /// The agent's log (see [`LogSection`]).
    #[serde(default)]
    pub log: LogSection,
    /// The web tier (absent: PHP-FPM and the mounts are only probed). Needs `[phpfpm]`.
    #[serde(default)]
    pub web: Option<WebSection>,
    /// Operators' hooks and notifications (absent: none).
    #[serde(default)]
    pub hooks: Option<HooksSection>,
}

/// `[hooks]`: commands run before and after Triad's actions, and a webhook.
///
/// Every hook gets one JSON event on stdin (`id`, `phase`, `what`, `service`, `why`, `epoch`,
/// `nodes`, `ok`, `index` (post only), `at_ms`, `cluster`, `node`) and the environment variables
/// `TRIAD_HOOK_PHASE` and `TRIAD_HOOK_WHAT`. Hooks run as the agent's user, under its
/// service's sandbox (a read-only `/usr` and `/etc`, a private `/tmp`).
///
/// - **pre**: run by the agent about to act, before a planned switchover (Redis or the Galera
///   writer), a remediation (a restart, a remount) and a backup run. Exit 0 lets it go; any other
///   exit, a timeout or a command that cannot start vetoes it (no action on doubt), and the
///   history says so with the hook's first line of output. Emergencies (an automatic failover
///   of the Redis master or the Galera writer, its fencing, a bootstrap) never wait for a pre
///   hook: the leader starts it as it proposes them, in the background; it cannot veto.
/// - **post**: run by the Raft leader after every failover, switchover, bootstrap decision,
///   finished remediation and finished backup, oldest first, at least once (a leader change
///   can repeat one: the event's `id` is stable). A failure is logged, counted
///   (`triad_hooks_total`) and audited, never fatal.
/// - **webhook**: receives the same JSON (both phases) by `POST`; never vetoes.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HooksSection {
    /// The pre hook: program (an absolute path) and arguments. Default: none.
    #[serde(default)]
    pub pre: Option<Vec<String>>,
    /// The post hook: program (an absolute path) and arguments. Default: none.
    #[serde(default)]
    pub post: Option<Vec<String>>,
    /// How long a hook or the webhook may take; a hook still running then is killed (a pre
    /// hook's timeout vetoes). Default 10s; 100ms to 10min.
    #[serde(default = "default_hook_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// A URL (`http://` or `https://`) that receives every event by `POST` (JSON). Default:
    /// none.
    #[serde(default)]
    pub webhook: Option<String>,
    /// CA certificates (PEM) that an `https://` webhook's certificate must chain to. Required
    /// for an `https://` webhook.
    #[serde(default)]
    pub webhook_ca_file: Option<PathBuf>,
    /// Post hooks of events older than this when a leader gets to them (hooks configured
    /// later, a long leaderless time) are skipped, and the history says so. Default 15m; 1m
    /// to 7 days.
    #[serde(default = "default_hook_max_age", with = "humantime_serde")]
    pub max_age: Duration,
}

fn default_hook_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_hook_max_age() -> Duration {
    Duration::from_secs(15 * 60)
}

/// `[web]`: the web rotation. The leader drains a node whose PHP-FPM is down, unreachable or
/// saturated, or whose GlusterFS mount is down or hung, from every HAProxy's `web-pool`
/// backend, readmits it once healthy, and never drains every node (the least sick stays, and
/// the status says so). Drains and readmissions follow the PHP-FPM and mount probes' fall and
/// rise thresholds (`[phpfpm] timing`, `[gluster] mount_timing`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebSection {
    /// A node whose agent sent no report for this long is left as the rotation has it (no
    /// decision on doubt). Default 3s; between 1s and 1h.
    #[serde(default = "default_freshness", with = "humantime_serde")]
    pub freshness: Duration,
    /// A drained node is readmitted once the leader has seen it healthy this long without a
    /// break (after the probe's own rise threshold): a drained pool sheds its load, and a
    /// saturated one would otherwise look healthy at once and flap. Default 2s; at most 1h.
    #[serde(default = "default_readmit_after", with = "humantime_serde")]
    pub readmit_after: Duration,
    /// Restart a dead PHP-FPM pool (its probe: connection refused, or a wrong answer) through
    /// service control, one node at a time under a committed lease. A hung or saturated pool
    /// is only drained. Default true; needs `[services] control` other than `none`.
    #[serde(default = "yes")]
    pub restart_phpfpm: bool,
    /// Repairs of one kind on one node allowed in any hour (PHP-FPM restarts, remounts of its
    /// mounts, brick starts, glusterd restarts: each counted apart); past it that repair waits
    /// for an operator (a dead pool or a broken mount stays drained) and the status says why.
    /// Default 6; 1 to 100.
    #[serde(default = "default_web_restarts_per_hour")]
    pub restarts_per_hour: u32,
    /// The wait after a node's first repair of a kind before the next of that kind; doubles
    /// with every such repair in the last hour. The first is immediate. Default 10s; 1s to 1h.
    #[serde(default = "default_web_restart_backoff", with = "humantime_serde")]
    pub restart_backoff: Duration,
}

fn default_web_restarts_per_hour() -> u32 {
    6
}

fn default_web_restart_backoff() -> Duration {
    Duration::from_secs(10)
}

fn default_readmit_after() -> Duration {
    Duration::from_secs(2)
}

impl WebSection {
    /// The web decision's tunables.
    pub fn settings(&self) -> crate::decide::web::WebSettings {
        crate::decide::web::WebSettings {
            freshness_ms: millis(self.freshness),
            readmit_after_ms: millis(self.readmit_after),
            plant: crate::decide::web::WebPlant::None,
        }
    }
}

/// `[log]`: the agent's log output (stderr, which journald keeps).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// The filter, in `tracing`'s directive syntax: `info`, or `warn,triad::raft=debug` for
    /// one module's detail. A reload (`systemctl reload triad`) applies a new value. Default:
    /// `TRIAD_LOG` from the environment, else `info`.
    #[serde(default)]
    pub level: Option<String>,
}

/// `[node]`: who this agent is and where it keeps its state.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// This node's id; must match one of `[[peers]]`. Non-zero.
    pub id: NodeId,
    /// Directory for the Raft log and snapshots (`raft.redb`). Created when missing. A relative
    /// path is relative to the config file's directory. `triad run --data-dir` overrides it.
    pub data_dir: PathBuf,
}

/// `[[peers]]`: one cluster member.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The member's node id. Non-zero, unique.
    pub id: NodeId,
    /// Address (`IP:port`) on which that member's agent accepts Raft peer connections; the
    /// member itself listens on it.
    pub raft_addr: String,
    /// Address (`IP:port`) of that member's operator API, used by the CLI and shown in status.
    pub api_addr: String,
    /// Address (`IP:port`) of that member's Redis. With `[redis]` configured, this node probes
    /// its own Redis here and, for cross-checks, its peers' Redis.
    #[serde(default)]
    pub redis_addr: Option<String>,
    /// Address (`IP:port`) of that member's MariaDB. With `[mariadb]` configured, this node
    /// probes its peers' MariaDB here (and its own, unless `mariadb.socket` is set).
    #[serde(default)]
    pub mysql_addr: Option<String>,
}

/// Probe timing as written in a section; unset fields fall back to `[probes]`.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProbeDefaults {
    /// Time between two checks. `10ms` to `1h`. Default `1s`.
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// A check not finished within this is cut and counts as a timeout. Must be below the
    /// interval. Default `800ms`.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Consecutive successes before a failed service counts as up again. 1 to 100. Default 2.
    #[serde(default)]
    pub rise: Option<u32>,
    /// Consecutive failures before a serving service counts as failed. 1 to 100. Default 2.
    #[serde(default)]
    pub fall: Option<u32>,
}

/// Effective timing of one probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeTiming {
    /// Time between checks.
    pub interval: Duration,
    /// Per-check deadline.
    pub timeout: Duration,
    /// Successes to rise.
    pub rise: u32,
    /// Failures to fall.
    pub fall: u32,
}

impl ProbeDefaults {
    /// Resolves `self` over `defaults` over the built-in defaults.
    pub fn resolve(&self, defaults: &ProbeDefaults) -> ProbeTiming {
        ProbeTiming {
            interval: self
                .interval
                .or(defaults.interval)
                .unwrap_or(Duration::from_secs(1)),
            timeout: self
                .timeout
                .or(defaults.timeout)
                .unwrap_or(Duration::from_millis(800)),
            rise: self.rise.or(defaults.rise).unwrap_or(2),
            fall: self.fall.or(defaults.fall).unwrap_or(2),
        }
    }
}

/// `[redis]`: how to talk to Redis. Addresses come from `[[peers]] redis_addr`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSection {
    /// ACL user name (default: the `default` user).
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password (one line). Never logged or shown.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Also probe the peers' Redis (cross-checks for failover decisions). Default true.
    #[serde(default = "yes")]
    pub cross_check: bool,
    /// Timing overrides. Failover speed depends on them, so interval and timeout default to
    /// `300ms` and `250ms` rather than to `[probes]` (one `INFO` on a kept connection costs
    /// well under a millisecond); rise and fall default to `[probes]`.
    #[serde(default)]
    pub timing: ProbeDefaults,
}

impl RedisSection {
    /// Effective timing of the Redis probes.
    pub fn effective_timing(&self, defaults: &ProbeDefaults) -> ProbeTiming {
        self.timing.resolve(&ProbeDefaults {
            interval: Some(Duration::from_millis(300)),
            timeout: Some(Duration::from_millis(250)),
            ..*defaults
        })
    }
}

/// `[mariadb]`: how to talk to MariaDB/Galera. Peer addresses come from
/// `[[peers]] mysql_addr`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MariadbSection {
    /// Monitoring user (needs only PROCESS, REPLICATION CLIENT / SLAVE MONITOR and USAGE).
    pub user: String,
    /// File holding the password (one line). Never logged or shown.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// UNIX socket of the local server; when set, the local probe uses it instead of TCP.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// Data directory of the local server, to read `grastate.dat` when mariadbd is down.
    #[serde(default)]
    pub datadir: Option<PathBuf>,
    /// Also probe the peers' MariaDB. Default true.
    #[serde(default = "yes")]
    pub cross_check: bool,
    /// Timing overrides. The Galera writer's failover waits on them, so interval and timeout
    /// default to `500ms` and `450ms` rather than to `[probes]` (one `SHOW STATUS` on a kept
    /// connection costs well under a millisecond); rise and fall default to `[probes]`.
    #[serde(default)]
    pub timing: ProbeDefaults,
}

impl MariadbSection {
    /// Effective timing of the MariaDB probes.
    pub fn effective_timing(&self, defaults: &ProbeDefaults) -> ProbeTiming {
        self.timing.resolve(&ProbeDefaults {
            interval: Some(Duration::from_millis(500)),
            timeout: Some(Duration::from_millis(450)),
            ..*defaults
        })
    }
}

/// `[phpfpm]`: the local PHP-FPM pool.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PhpfpmSection {
    /// FastCGI address: `IP:port` or `unix:/path/to/socket`.
    pub address: String,
    /// The pool's `ping.path`. Default `/ping`.
    #[serde(default = "default_ping_path")]
    pub ping_path: String,
    /// The pool's `ping.response`. Default `pong`.
    #[serde(default = "default_ping_response")]
    pub ping_response: String,
    /// The pool's `pm.status_path`. Default `/status`.
    #[serde(default = "default_status_path")]
    pub status_path: String,
    /// A listen queue above this many requests counts as queueing; a pool queueing on two
    /// consecutive checks and for `queue_for` is saturated (`degraded`: drained from the web
    /// rotation, never restarted). Default 0 (any queued request); at most 100000.
    #[serde(default)]
    pub queue_bound: u64,
    /// How long the queue must stay above `queue_bound` (from the first check that saw it).
    /// Default 0s (two consecutive checks); at most 10min.
    #[serde(default, with = "humantime_serde")]
    pub queue_for: Duration,
    /// Timing overrides.
    #[serde(default)]
    pub timing: ProbeDefaults,
}

/// `[gluster]`: the GlusterFS volume and this node's mounts of it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GlusterSection {
    /// Volume name.
    pub volume: String,
    /// Every brick of the volume as `host:/path`, as `gluster volume info` names them. A brick
    /// missing from `volume status` counts as down.
    pub bricks: Vec<String>,
    /// This node's brick, one of `bricks` (its loss makes this node's volume status `down`
    /// rather than `degraded`).
    #[serde(default)]
    pub local_brick: Option<String>,
    /// FUSE mount points of the volume on this node, each checked by writing, reading and
    /// removing a small file.
    #[serde(default)]
    pub mounts: Vec<PathBuf>,
    /// How a broken mount (down or hung: ENOTCONN after a cut, a dead client) is mounted
    /// again, with `[web]` on: program and arguments, `{mount}` replaced by the mount point and
    /// `{mount_unit}` by its systemd-escaped name (`/mnt/shop` gives `mnt-shop`). It must lazily
    /// unmount and mount again, and exit 0; then a write and a read through the mount must
    /// work. One node at a time, under a remediation lease, bounded by
    /// `services.stop_timeout`. The packaged agent (not root): `["systemctl", "start",
    /// "triad-gluster-remount@{mount_unit}.service"]` (the package's helper unit, which mounts
    /// the mount point's `/etc/fstab` entry). Absent: a broken mount is only drained.
    #[serde(default)]
    pub remount_command: Option<Vec<String>>,
    /// With `[web]` on: start this node's brick when its process is dead (the volume probe
    /// sees the local brick offline twice in a row), with `gluster volume start VOLUME force`
    /// through `command`, which starts only the bricks that are not running. One node at a
    /// time, under a remediation lease; then the brick must be online. Needs `local_brick`.
    /// Default true.
    #[serde(default = "yes")]
    pub restart_bricks: bool,
    /// With `[web]` on: restart this node's glusterd when the gluster CLI is refused (glusterd
    /// not running) twice in a row, through service control (`glusterd`; with `[services]
    /// control = "process"` only when `[services.process.glusterd]` is given), one node at a
    /// time under a remediation lease; then the CLI must answer. Its bricks keep serving
    /// meanwhile (they are processes of their own). Default true.
    #[serde(default = "yes")]
    pub restart_glusterd: bool,
    /// Program and leading arguments of the gluster CLI. Default `["gluster"]` (root: it
    /// talks to glusterd over its root-only socket). The packaged agent, as the `triad` user:
    /// `["gluster", "--remote-host=127.0.0.1", "--log-file=/var/lib/triad/gluster-cli.log"]`
    /// (TCP, and a log it may write) with `heal_unit`. The lab's glusterd runs in another
    /// mount namespace: `["nsenter", "-t", "PID", "-m", "gluster"]`, which needs root and a
    /// unit without `RestrictNamespaces=` (the shipped unit forbids it).
    #[serde(default = "default_gluster_command")]
    pub command: Vec<String>,
    /// Run `volume heal VOLUME info` by starting this helper unit instead of through
    /// `command`: an agent that is not root reaches glusterd only over TCP
    /// (`command = ["gluster", "--remote-host=127.0.0.1", "--log-file=..."]`), and `heal info`
    /// needs its root-only socket. The package ships `triad-gluster-heal@.service`; name the
    /// volume as its instance (`triad-gluster-heal@shop.service`). Its output is read from
    /// `<node.data_dir>/<unit>.out`. Default none.
    #[serde(default)]
    pub heal_unit: Option<String>,
    /// Timing of the volume checks. The CLI is slow, so interval and timeout default to 5s and
    /// 4s rather than to `[probes]`; rise and fall default to `[probes]`.
    #[serde(default)]
    pub timing: ProbeDefaults,
    /// Timing of the mount checks (default as `[probes]`).
    #[serde(default)]
    pub mount_timing: ProbeDefaults,
}

impl GlusterSection {
    /// Effective timing of the volume probe.
    pub fn volume_timing(&self, defaults: &ProbeDefaults) -> ProbeTiming {
        self.timing.resolve(&ProbeDefaults {
            interval: Some(Duration::from_secs(5)),
            timeout: Some(Duration::from_secs(4)),
            ..*defaults
        })
    }
}

fn yes() -> bool {
    true
}
fn default_ping_path() -> String {
    "/ping".into()
}
fn default_ping_response() -> String {
    "pong".into()
}
fn default_status_path() -> String {
    "/status".into()
}
fn default_gluster_command() -> Vec<String> {
    vec!["gluster".into()]
}

/// `[api]`: the HTTP status, metrics and operator API.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Address (`IP:port`) to listen on.
    pub listen: String,
    /// File holding the bearer token that mutating endpoints require. Without it, mutating
    /// endpoints answer 403. The file must exist and hold one non-empty line. A relative path is
    /// relative to the config file's directory.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// File holding a read-only bearer token: it opens the read endpoints (`GET /v1/...`,
    /// `/metrics`) and nothing else, for dashboards and Prometheus. The admin token
    /// (`token_file`) opens them too. Same rules as `token_file`.
    #[serde(default)]
    pub read_token_file: Option<PathBuf>,
    /// Serve the API over TLS with this certificate chain (PEM; the operator's, naming the
    /// addresses clients use). With `tls_key_file`; both or neither. Default none: plain
    /// HTTP. HAProxy checks it with `check-ssl` (`ca-file` or `verify none`).
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// The API certificate's private key (PEM, mode 0600).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// The CA that signed `tls_cert_file`, for the `triad` CLI on this node (it then speaks
    /// https to `listen` and trusts this CA). Default none: the CLI needs `--ca-file`.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Leave the read endpoints open without a token (as before tokens had scopes). Default
    /// `false`: reads need the read or the admin token. `/live`, `/ready` and the role checks
    /// (`/redis/master`, `/galera/writer`) are always open: HAProxy and systemd use them.
    #[serde(default)]
    pub open_reads: bool,
    /// Mutating requests accepted at once before the rate limit applies (429 with
    /// `Retry-After`). Default 10.
    #[serde(default = "default_mutation_burst")]
    pub mutation_burst: u32,
    /// Mutating requests refilled per minute after the burst. Default 30.
    #[serde(default = "default_mutations_per_minute")]
    pub mutations_per_minute: u32,
    /// Failed authentications accepted at once; past them every mutating request answers 429
    /// until one more is refilled (one every 10 s). At least 1. Default 5.
    #[serde(default = "default_auth_failure_burst")]
    pub auth_failure_burst: u32,
    /// How long a mutating request waits for its command to be committed and applied on this
    /// node before answering 503. Above zero, at most `1h`. Default `5s`.
    #[serde(default = "default_proposal_timeout", with = "humantime_serde")]
    pub proposal_timeout: Duration,
}

/// `[raft]`: consensus timing. The election timeout is `tick_interval * election_ticks`
/// (randomised by Raft between one and two times that).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RaftSection {
    /// Period of one Raft tick. `1ms` to `10s` (the election timeout and the ping interval are
    /// multiples of it). Default `50ms`.
    #[serde(default = "default_tick", with = "humantime_serde")]
    pub tick_interval: Duration,
    /// Ticks without a leader's heartbeat before a follower campaigns. Must exceed
    /// `heartbeat_ticks`; at most 1000. Default 10.
    #[serde(default = "default_election_ticks")]
    pub election_ticks: usize,
    /// Ticks between the leader's heartbeats. 1 to 100. Default 2.
    #[serde(default = "default_heartbeat_ticks")]
    pub heartbeat_ticks: usize,
    /// Ticks between two lease pings to each peer (`tick_interval * ping_ticks`, the ping
    /// interval); each answer renews this agent's lease (`[failover]`). 1 to 100. Default 4
    /// (200 ms): pings and their answers are the agent's most frequent wake-ups, and the
    /// default lease's usable part (0.8 s) still spans four of them.
    #[serde(default = "default_ping_ticks")]
    pub ping_ticks: usize,
    /// Take a snapshot of the cluster state and compact the log once this many entries were
    /// applied since the last snapshot. 1 to 10 000 000 (the log between two snapshots is held
    /// in memory). Default 1000.
    #[serde(default = "default_snapshot_entries")]
    pub snapshot_entries: u64,
    /// Largest peer frame accepted, in bytes; a larger one closes the connection. 64 KiB to
    /// 1 GiB (a snapshot must fit in one frame; a peer may make this node allocate that much).
    /// Default 8 MiB.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
}

impl Default for RaftSection {
    fn default() -> Self {
        RaftSection {
            tick_interval: default_tick(),
            election_ticks: default_election_ticks(),
            heartbeat_ticks: default_heartbeat_ticks(),
            ping_ticks: default_ping_ticks(),
            snapshot_entries: default_snapshot_entries(),
            max_frame_bytes: default_max_frame_bytes(),
        }
    }
}

fn default_cluster_name() -> String {
    "triad".to_string()
}
fn default_mutation_burst() -> u32 {
    10
}
fn default_mutations_per_minute() -> u32 {
    30
}
fn default_auth_failure_burst() -> u32 {
    5
}
fn default_proposal_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_tick() -> Duration {
    Duration::from_millis(50)
}
fn default_election_ticks() -> usize {
    10
}
fn default_heartbeat_ticks() -> usize {
    2
}
fn default_ping_ticks() -> usize {
    4
}
fn default_snapshot_entries() -> u64 {
    1000
}
fn default_max_frame_bytes() -> usize {
    8 * 1024 * 1024
}

/// `[failover]`: Redis failover decision, leases and fencing.
///
/// Timing invariant (checked at load): the silent path promotes a replica only
/// `lease + clock_margin` after the old master's lease was last renewed: after the last pong
/// any other agent gave it (each reports when it last answered a peer, and answers none of the
/// suspect's pings once it applied the suspicion), or after a quorum applied the suspicion.
/// The old master's agent must have taken it out of its HAProxy and fenced it by then. The
/// arithmetic:
/// - its lease ends at most `lease` after the last grant (`L`);
/// - each side of a reconciliation cycle (all its Redis commands, all its HAProxy commands)
///   is cut at `action_timeout`, so a cycle takes at most `2 * action_timeout`; the agent
///   counts its lease as lapsed once less than that is left, so a cycle that starts with the
///   lease ends by `L`;
/// - the next cycle starts within `reconcile_interval` of the previous start, or at once when
///   that one overran, so by `L + max(reconcile_interval, 2 * action_timeout) - 2 *
///   action_timeout`; it runs without the lease: HAProxy out of service first, then the fence,
///   each within `action_timeout`: done by `L + max(reconcile_interval, 2 * action_timeout)`;
/// - an agent that just started waits up to two ping intervals for its first grants.
///
/// Hence `clock_margin >= max(reconcile_interval, 2 * action_timeout) + 2 *
/// raft.tick_interval * raft.ping_ticks`. Clock *rate* drift between VMs is far below
/// 1 % and is covered by the rest of the margin. (The reconciler also wakes the moment its
/// lease stops being usable, so in practice the fence comes `lease - 2 * action_timeout`
/// after the last grant: 0.8 s with the defaults.)
///
/// With the defaults, a master whose node is cut off stops taking writes through any HAProxy
/// about 0.8 s after the cut, and a replica is promoted about `lease + clock_margin` = 2.4 s
/// after it (the replicas call the link lost after `link_stale_after`, 2 s, and the master's
/// agent counts as silent after `freshness`, 2 s, both earlier).
///
/// A master whose agent is dead is out of every HAProxy already: each checks every Redis
/// server against its own agent (`GET /redis/master`). Redis's own fence
/// (`redis_min_replicas_to_write`) is the line for clients that bypass HAProxy.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverSection {
    /// Fail over automatically. With `false` the decision is still computed and shown, never
    /// proposed (fencing and reconciliation still run). Default true.
    #[serde(default = "yes")]
    pub automatic: bool,
    /// A peer report older than this does not count, and its agent counts as silent.
    /// Default `2s`; at least twice the Redis probe interval and above 1 s (the longest gap
    /// between two reports); at most `1h`.
    #[serde(default = "default_freshness", with = "humantime_serde")]
    pub freshness: Duration,
    /// How long an agent's lease lasts after the last ping a peer answered. An agent without
    /// a usable lease (less than `2 * action_timeout` left) fences its local Redis master and
    /// takes every Redis server of its HAProxy out of service, so a cut-off master stops
    /// taking writes `lease - 2 * action_timeout` after the cut. Default `1400ms`; above 1 s,
    /// at least three ping intervals, and usable for at least three ping intervals
    /// (`lease - 2 * action_timeout`), so that one late pong never fences; at most `1h`.
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub lease: Duration,
    /// Extra wait on the silent path, on top of `lease`; see the timing invariant. At most `1h`.
    /// Default `1s`.
    #[serde(default = "default_clock_margin", with = "humantime_serde")]
    pub clock_margin: Duration,
    /// After a change of master, no new automatic failover for this long unless a majority
    /// reports refused connections from the new master. At most `24h`. Default `30s`.
    #[serde(default = "default_hold_down", with = "humantime_serde")]
    pub hold_down: Duration,
    /// A replica lagging the best candidate by more bytes is not promoted. Default 1 MiB.
    #[serde(default = "default_max_lag_bytes")]
    pub max_lag_bytes: u64,
    /// A replica that received nothing from its master for this long counts as having lost
    /// its link: its agent measures how long the replica's offset has not moved, to the
    /// Redis probe interval. The master's pings move it every `repl-ping-replica-period`
    /// (10 s by default: set it to 1 s on the servers). Default `2s`; above 1 s plus the
    /// Redis probe interval; at most `1h`.
    #[serde(default = "default_link_stale_after", with = "humantime_serde")]
    pub link_stale_after: Duration,
    /// A master whose own agent (on the same host) has had no answer from it for this long is
    /// hung: a failover then waits neither for the replicas' links to go stale nor for the
    /// lease, once every agent has taken it out of its HAProxy (see `decide::redis`). Above
    /// twice the Redis probe's timeout, so one slow check is never enough. The default is
    /// 1.5 times the 500 ms a slow command or a fork may block a healthy master; raise it for
    /// a master whose fork takes longer (a large dataset on a hypervisor with slow page-table
    /// copies). A run of timed-out checks grows in steps of the probe timeout (250 ms), so a
    /// multiple of it wastes nothing. `0s` turns it off. Default `750ms`, at most `1h`.
    #[serde(default = "default_hung_after", with = "humantime_serde")]
    pub hung_after: Duration,
    /// Period of the local reconciliation of Redis and HAProxy. `10ms` to `60s`. Default `250ms`.
    #[serde(default = "default_reconcile_interval", with = "humantime_serde")]
    pub reconcile_interval: Duration,
    /// Deadline of each side of one reconciliation cycle: all its Redis commands together, and
    /// all its HAProxy commands together (so of every single command too). `10ms` to `60s`.
    /// Default `300ms`; see the timing invariant.
    #[serde(default = "default_action_timeout", with = "humantime_serde")]
    pub action_timeout: Duration,
    /// The `min-replicas-to-write` value Triad keeps on every Redis when not fenced (fencing
    /// sets it to 1000). Default 1: a master that no replica acknowledged for
    /// `redis_min_replicas_max_lag` refuses writes by itself, which fences a cut-off master even
    /// when its agent is dead. 0 turns that off (then a cut-off master whose agent is down keeps
    /// accepting writes from clients on its own node).
    #[serde(default = "default_min_replicas")]
    pub redis_min_replicas_to_write: u32,
    /// The `min-replicas-max-lag` Triad keeps with it, whole seconds, `1s` to `1h`. Default
    /// `2s`. A cut-off master refuses writes by itself within this plus 2 s of the last
    /// acknowledgement it got (Redis compares whole seconds and refreshes its count once a
    /// second): the line for clients that bypass HAProxy, since a failover may come sooner
    /// (see the timing invariant). `1s` would close it sooner, but replicas acknowledge once a
    /// second, so a late acknowledgement would refuse a healthy master's writes.
    #[serde(default = "default_min_replicas_max_lag", with = "humantime_serde")]
    pub redis_min_replicas_max_lag: Duration,
}

fn default_min_replicas() -> u32 {
    1
}
fn default_min_replicas_max_lag() -> Duration {
    Duration::from_secs(2)
}

impl FailoverSection {
    /// The decision's tunables.
    pub fn settings(&self) -> crate::decide::redis::FailoverSettings {
        crate::decide::redis::FailoverSettings {
            freshness_ms: millis(self.freshness),
            lease_ms: millis(self.lease),
            clock_margin_ms: millis(self.clock_margin),
            hold_down_ms: millis(self.hold_down),
            max_lag_bytes: i64::try_from(self.max_lag_bytes).unwrap_or(i64::MAX),
            link_stale_after_ms: millis(self.link_stale_after),
            hung_after_ms: millis(self.hung_after),
        }
    }
}

/// Milliseconds, saturating (validation bounds every timer far below `u64::MAX` ms).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Default for FailoverSection {
    fn default() -> Self {
        FailoverSection {
            automatic: true,
            freshness: default_freshness(),
            lease: default_lease(),
            clock_margin: default_clock_margin(),
            hold_down: default_hold_down(),
            max_lag_bytes: default_max_lag_bytes(),
            link_stale_after: default_link_stale_after(),
            hung_after: default_hung_after(),
            reconcile_interval: default_reconcile_interval(),
            action_timeout: default_action_timeout(),
            redis_min_replicas_to_write: default_min_replicas(),
            redis_min_replicas_max_lag: default_min_replicas_max_lag(),
        }
    }
}

fn default_freshness() -> Duration {
    Duration::from_secs(2)
}
fn default_lease() -> Duration {
    Duration::from_millis(1400)
}
fn default_clock_margin() -> Duration {
    Duration::from_secs(1)
}
fn default_hold_down() -> Duration {
    Duration::from_secs(30)
}
fn default_max_lag_bytes() -> u64 {
    1024 * 1024
}
fn default_link_stale_after() -> Duration {
    Duration::from_secs(2)
}
fn default_hung_after() -> Duration {
    Duration::from_millis(750)
}
fn default_reconcile_interval() -> Duration {
    Duration::from_millis(250)
}
fn default_action_timeout() -> Duration {
    Duration::from_millis(300)
}

/// `[haproxy]`: the local HAProxy's admin socket and the backends Triad drives.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HaproxySection {
    /// The admin socket (`stats socket PATH level admin` in haproxy.cfg).
    pub admin_socket: PathBuf,
    /// The `server-state-file` of haproxy.cfg: Triad writes the runtime state there after each
    /// change, so that a reload keeps it. Absent: not written.
    #[serde(default)]
    pub state_file: Option<PathBuf>,
    /// `[[haproxy.backends]]`: the backends Triad keeps on a committed role. Omitted: with
    /// `[redis]` configured, one `redis-master` backend named `be_redis` with servers
    /// `redis<id>`; without `[redis]`, none. `backends = []` drives none. Names are unique and
    /// each role has at most one backend. Validation fills in the default, so in a
    /// [`Validated`] config this is always `Some`.
    #[serde(
        default,
        deserialize_with = "deserialize_backends",
        skip_serializing_if = "Option::is_none"
    )]
    pub backends: Option<Vec<HaproxyBackend>>,
}

impl HaproxySection {
    /// The configured backends (none before validation filled in the default).
    pub fn backends(&self) -> &[HaproxyBackend] {
        self.backends.as_deref().unwrap_or_default()
    }

    /// The backend Triad keeps on `role`, if one is configured.
    pub fn backend(&self, role: BackendRole) -> Option<&HaproxyBackend> {
        self.backends().iter().find(|b| b.role == role)
    }
}

/// `[[haproxy.backends]]`: one backend of haproxy.cfg and the role its servers follow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HaproxyBackend {
    /// The backend's name in haproxy.cfg (letters, digits, `-`, `_`, `.`, `:`).
    pub name: String,
    /// What Triad keeps the backend on: which of its servers are in service.
    pub role: BackendRole,
    /// Its servers are named this prefix followed by the node id (`redis` gives `redis1`,
    /// `redis2`, `redis3`), one per cluster member.
    pub server_prefix: String,
}

impl HaproxyBackend {
    /// The name of node `id`'s server in this backend.
    pub fn server(&self, id: NodeId) -> String {
        format!("{}{}", self.server_prefix, id.get())
    }

    /// The backend used when `backends` is omitted and `[redis]` is configured: `be_redis`,
    /// `redis-master`, servers `redis<id>`.
    pub fn default_redis() -> HaproxyBackend {
        HaproxyBackend {
            name: "be_redis".into(),
            role: BackendRole::RedisMaster,
            server_prefix: "redis".into(),
        }
    }
}

/// What Triad keeps a HAProxy backend on. Each role is one variant; a role that follows a
/// service needs that service's section (see [`BackendRole::needs`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendRole {
    /// Only the server of the committed Redis master is in service (`ready`); every other
    /// server is in maintenance. Needs `[redis]`.
    RedisMaster,
    /// Only the server of the committed Galera writer is in service (`ready`); every other
    /// server is in maintenance. Needs `[galera]`. The servers' checks should ask each node's
    /// own agent (`GET /galera/writer`), see the README.
    GaleraWriter,
    /// Every node in the committed web rotation is in service (`ready`), every drained one in
    /// maintenance (its requests in flight finish). Needs `[web]`. The servers' own checks
    /// (`option httpchk` of the pool's ping) still take a dead PHP-FPM out at once.
    WebPool,
}

impl BackendRole {
    /// Every role, in the order `check-config` lists them.
    pub const ALL: &'static [BackendRole] = &[
        BackendRole::RedisMaster,
        BackendRole::GaleraWriter,
        BackendRole::WebPool,
    ];

    /// The name as written in the config (`redis-master`).
    pub fn as_str(self) -> &'static str {
        match self {
            BackendRole::RedisMaster => "redis-master",
            BackendRole::GaleraWriter => "galera-writer",
            BackendRole::WebPool => "web-pool",
        }
    }

    /// Parses [`BackendRole::as_str`] names.
    pub fn parse(s: &str) -> Option<BackendRole> {
        BackendRole::ALL.iter().copied().find(|r| r.as_str() == s)
    }

    /// What the role keeps in service, in words.
    pub fn describe(self) -> &'static str {
        match self {
            BackendRole::RedisMaster => "only the committed Redis master in service",
            BackendRole::GaleraWriter => "only the committed Galera writer in service",
            BackendRole::WebPool => "every node of the committed web rotation in service",
        }
    }

    /// The section the role follows (`[redis]`), which must be configured.
    pub fn needs(self) -> &'static str {
        match self {
            BackendRole::RedisMaster => "[redis]",
            BackendRole::GaleraWriter => "[galera]",
            BackendRole::WebPool => "[web]",
        }
    }

    /// Whether `config` has the section the role follows.
    fn is_served_by(self, config: &Config) -> bool {
        match self {
            BackendRole::RedisMaster => config.redis.is_some(),
            BackendRole::GaleraWriter => config.galera.is_some(),
            BackendRole::WebPool => config.web.is_some(),
        }
    }

    fn known() -> String {
        BackendRole::ALL
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for BackendRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backend as written: the role is read as text so that an unknown one is refused naming
/// its key and the known roles, which serde's own message does not.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendAsWritten {
    name: String,
    role: String,
    server_prefix: String,
}

fn deserialize_backends<'de, D>(d: D) -> Result<Option<Vec<HaproxyBackend>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let written = Vec::<BackendAsWritten>::deserialize(d)?;
    let mut out = Vec::with_capacity(written.len());
    for (i, b) in written.into_iter().enumerate() {
        let role = BackendRole::parse(&b.role).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "haproxy.backends[{i}].role: unknown role {:?}; known roles: {}",
                b.role,
                BackendRole::known()
            ))
        })?;
        out.push(HaproxyBackend {
            name: b.name,
            role,
            server_prefix: b.server_prefix,
        });
    }
    Ok(Some(out))
}

/// A local service Triad can start, stop and restart through `[services]`. The names are
/// those of the probes (`observation::Service`) where both exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceName {
    /// MariaDB with Galera.
    Mariadb,
    /// Redis.
    Redis,
    /// The PHP-FPM pool.
    Phpfpm,
    /// HAProxy.
    Haproxy,
    /// The GlusterFS daemon.
    Glusterd,
}

impl ServiceName {
    /// Every service, in the order `check-config` lists them.
    pub const ALL: [ServiceName; 5] = [
        ServiceName::Mariadb,
        ServiceName::Redis,
        ServiceName::Phpfpm,
        ServiceName::Haproxy,
        ServiceName::Glusterd,
    ];

    /// The name used in `[services]` keys and by the service control (`phpfpm`).
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::Mariadb => "mariadb",
            ServiceName::Redis => "redis",
            ServiceName::Phpfpm => "phpfpm",
            ServiceName::Haproxy => "haproxy",
            ServiceName::Glusterd => "glusterd",
        }
    }

    /// Parses [`ServiceName::as_str`] names.
    pub fn parse(s: &str) -> Option<ServiceName> {
        ServiceName::ALL.into_iter().find(|n| n.as_str() == s)
    }

    /// The systemd unit Debian 12 ships for it.
    pub fn default_unit(self) -> &'static str {
        match self {
            ServiceName::Mariadb => "mariadb.service",
            ServiceName::Redis => "redis-server.service",
            ServiceName::Phpfpm => "php8.2-fpm.service",
            ServiceName::Haproxy => "haproxy.service",
            ServiceName::Glusterd => "glusterd.service",
        }
    }

    fn known() -> String {
        ServiceName::ALL
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How Triad controls local services (`services.control`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceControlKind {
    /// `systemctl` on each service's unit (production).
    #[default]
    Systemd,
    /// Each service is a process started from a configured argv and tracked by its pidfile
    /// (a machine without systemd, such as the lab).
    Process,
    /// Triad starts and stops no service.
    None,
}

impl ServiceControlKind {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceControlKind::Systemd => "systemd",
            ServiceControlKind::Process => "process",
            ServiceControlKind::None => "none",
        }
    }
}

/// `[services]`: how Triad starts, stops and restarts this node's services. Nothing in the
/// agent acts on it yet; Galera rejoin and PHP-FPM remediation will.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesSection {
    /// `systemd`, `process` or `none`. Default `systemd`.
    #[serde(default)]
    pub control: ServiceControlKind,
    /// With `process`: how long a stop waits after SIGTERM before SIGKILL. With `systemd`:
    /// the deadline of every `systemctl` command, a start included (raise it when a Galera
    /// state transfer can take longer; systemd itself keeps going). `100ms` to `1h`. Default
    /// `30s`.
    #[serde(default = "default_stop_timeout", with = "humantime_serde")]
    pub stop_timeout: Duration,
    /// `[services.units]` (only with `control = "systemd"`): service name -> unit, over the
    /// Debian defaults `mariadb.service`, `redis-server.service`, `php8.2-fpm.service`,
    /// `haproxy.service` and `glusterd.service`. Keys are `mariadb`, `redis`, `phpfpm`,
    /// `haproxy` and `glusterd`.
    #[serde(default)]
    pub units: BTreeMap<String, String>,
    /// With `systemd`: a Galera bootstrap starts this unit instead of running
    /// `galera_new_cluster`, which only root can run (it sets the service manager's
    /// environment). The package ships `triad-galera-bootstrap.service` (a oneshot running
    /// `galera_new_cluster` as root); the polkit rule lets the `triad` user start it and
    /// nothing else of the kind. Default none (`galera_new_cluster`, for an agent run as root).
    #[serde(default)]
    pub bootstrap_unit: Option<String>,
    /// `[services.process.NAME]` (only with `control = "process"`): how to run each service,
    /// one table per service with the same keys as `[services.units]`. Required for every
    /// service this node probes (`mariadb` with `[mariadb]`, `redis` with `[redis]`, `phpfpm`
    /// with `[phpfpm]`); `haproxy` and `glusterd` are optional.
    #[serde(default)]
    pub process: BTreeMap<String, ProcessSpec>,
}

/// `[galera]`: Galera recovery (see the README's "Galera recovery").
///
/// A node's own agent restarts its mariadbd when it is gone while a Primary component of a
/// majority runs elsewhere, from the position `--wsrep-recover` finds, so that it rejoins by
/// IST. After a full outage the Raft leader commits one bootstrap node per outage (the most
/// advanced), whose agent starts it as a new cluster; the others then rejoin.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GaleraSection {
    /// Restart this node's mariadbd when it is gone while a majority is Primary. With
    /// `false`, a fallen node stays down (the status says what Triad would do). Default true.
    #[serde(default = "yes")]
    pub rejoin: bool,
    /// A report older than this does not count as evidence, and its agent counts as silent
    /// (no outage opens, no automatic bootstrap). `1s` to `1h`. Default `3s`.
    #[serde(default = "default_freshness", with = "humantime_serde")]
    pub freshness: Duration,
    /// How long no Primary component must be seen anywhere, every mariadbd stopped (each
    /// node's own agent says so), before the leader opens an outage: a report caught while
    /// a node restarts must not open one. Every second here is a second of the shop without
    /// its database after a full outage. `0s` to `1h`. Default `1s`.
    #[serde(default = "default_open_after_stopped", with = "humantime_serde")]
    pub open_after_stopped: Duration,
    /// The same while some mariadbd still runs non-Primary (Galera re-forms a Primary by
    /// itself after a short partition heals). `1s` to `24h`. Default `30s`.
    #[serde(default = "default_open_after_non_primary", with = "humantime_serde")]
    pub open_after_non_primary: Duration,
    /// After a committed bootstrap, its node's agent said it carried it out and that mariadbd
    /// has stayed stopped this long, nothing Primary anywhere (other nodes may run
    /// non-Primary, waiting to join it):
    /// the bootstrap is given up and the leader opens the next outage (decided afresh from
    /// every node's position; the fallen node usually holds the newest). At least
    /// `open_after_stopped`; `1s` to `1h`. Default `10s`.
    #[serde(default = "default_rebootstrap_after", with = "humantime_serde")]
    pub rebootstrap_after: Duration,
    /// A node that runs non-Primary while its peers are reachable and Primary is restarted
    /// after this long (Galera normally rejoins it by itself after a partition heals).
    /// `1s` to `24h`. Default `60s`.
    #[serde(
        default = "default_restart_non_primary_after",
        with = "humantime_serde"
    )]
    pub restart_non_primary_after: Duration,
    /// First wait between two restarts of this node's mariadbd; it doubles with every restart
    /// that did not end Synced, up to 16 times this (80 s with the default: a database node
    /// down longer than that between tries costs the shop more than the retries; the hourly
    /// cap bounds them). `1s` to `1h`. Default `5s`.
    #[serde(default = "default_restart_backoff", with = "humantime_serde")]
    pub restart_backoff: Duration,
    /// At most this many restarts in any hour; past it the node stays down and the status
    /// and `triad_galera_restart_capped` say so. `1` to `100`. Default `6`.
    #[serde(default = "default_restarts_per_hour")]
    pub restarts_per_hour: u32,
    /// Every node's `auto_increment_increment`: the platform fixes it, with one
    /// `auto_increment_offset` per node and `wsrep_auto_increment_control=OFF`, so that ids
    /// taken on different nodes never collide. The MariaDB probes report a serving node as
    /// degraded, with the reason, when its increment differs, its offset is outside
    /// `1..=increment`, or Galera's auto-control is ON. `0` turns the check off (without
    /// `[galera]` it is off). `0` to `65535`. Default `3`.
    #[serde(default = "default_auto_increment_increment")]
    pub auto_increment_increment: u64,
    /// The local recovery's cycle. `50ms` to `60s`. Default `500ms`.
    #[serde(default = "default_galera_interval", with = "humantime_serde")]
    pub reconcile_interval: Duration,
    /// mariadbd, for `--wsrep-recover`. Default `/usr/sbin/mariadbd`.
    #[serde(default = "default_mariadbd")]
    pub mariadbd: PathBuf,
    /// The server's option file, passed to `--wsrep-recover` as `--defaults-file`. Default
    /// `/etc/mysql/my.cnf` (Debian's).
    #[serde(default = "default_defaults_file")]
    pub defaults_file: PathBuf,
    /// `--user` of `--wsrep-recover` (mariadbd refuses root without one, unless the option
    /// file sets `user`). Default none.
    #[serde(default)]
    pub recover_user: Option<String>,
    /// Run `--wsrep-recover` by starting this helper unit instead of running `mariadbd`
    /// directly: an agent that is not root cannot run mariadbd as the datadir's owner. The
    /// package ships `triad-wsrep-recover.service` (a oneshot, `User=mysql`, its log in
    /// `<node.data_dir>/<unit>.out`); the polkit rule lets the `triad` user start it.
    /// `mariadbd`, `defaults_file` and `recover_user` are then the unit's. Default none.
    #[serde(default)]
    pub recover_unit: Option<String>,
    /// Deadline of `--wsrep-recover` (it replays InnoDB's redo log). `1s` to `1h`. Default
    /// `120s`.
    #[serde(default = "default_recover_timeout", with = "humantime_serde")]
    pub recover_timeout: Duration,
    /// The local account that may run `SET GLOBAL wsrep_provider_options='pc.bootstrap=YES'`
    /// (SUPER), over `[mariadb] socket`, for a bootstrap of a running node. Default `root`
    /// (Debian's root@localhost authenticates by the unix socket as the agent's root user).
    #[serde(default = "default_admin_user")]
    pub admin_user: String,
    /// File with that account's password (absent: none, socket authentication).
    #[serde(default)]
    pub admin_password_file: Option<PathBuf>,
    /// Evict a node whose mariadbd is definitely gone (its own agent finds the process
    /// stopped or its socket refusing; or, its agent silent, a majority of checks refused)
    /// from the survivors' component at once, with `evs.evict` of the gcomm UUID it reported
    /// while healthy, instead of letting every commit in the cluster stall for Galera's
    /// suspect timeout (~6 s). Uses `admin_user`. A hung or cut-off node is never evicted.
    /// Default true.
    #[serde(default = "yes")]
    pub evict_dead: bool,
    /// The writer reconciler's cycle: how often each agent reads its own node's wsrep state
    /// (what `GET /galera/writer`, and so every HAProxy's check of this server, answers from)
    /// and converges its HAProxy's `galera-writer` backend and the evict list. `50ms` to
    /// `10s`. Default `200ms`.
    #[serde(default = "default_writer_interval", with = "humantime_serde")]
    pub writer_interval: Duration,
    /// Galera's `evs.join_retrans_period`, which the writer reconciler sets at runtime on
    /// its own node, once per mariadbd process (a runtime setting does not survive a
    /// restart). Galera installs the view without an evicted member only at the next JOIN
    /// retransmission: with Galera's default `PT1S`, every commit in the cluster stalls about
    /// a second after an eviction (measured on the lab: 1.09 s, and 1.5 s when the node
    /// rejoins); with `100ms`, 89 ms and 0.5 s. Raise it on a high-latency network. `0s`
    /// leaves the node's own setting alone; otherwise `10ms` to `10s`. Default `100ms`.
    #[serde(default = "default_evs_period", with = "humantime_serde")]
    pub join_retrans_period: Duration,
    /// Galera's `evs.keepalive_period`, set the same way: how often a quiet member signals it
    /// is alive. A joining member's view waits on it too: with Galera's default `PT1S` a
    /// node's rejoin stalled commits for 1.2-1.4 s in 4 of 6 runs on the lab, with `100ms`
    /// 0.4-0.5 s in 6 of 6. `0s` leaves the node's own setting alone; otherwise `10ms` to
    /// `10s` (keep it well below `evs.suspect_timeout`). Default `100ms`.
    #[serde(default = "default_evs_period", with = "humantime_serde")]
    pub keepalive_period: Duration,
}

fn default_evs_period() -> Duration {
    Duration::from_millis(100)
}
fn default_writer_interval() -> Duration {
    Duration::from_millis(200)
}

fn default_open_after_stopped() -> Duration {
    Duration::from_secs(1)
}
fn default_open_after_non_primary() -> Duration {
    Duration::from_secs(30)
}
fn default_rebootstrap_after() -> Duration {
    Duration::from_secs(10)
}
fn default_restart_non_primary_after() -> Duration {
    Duration::from_secs(60)
}
fn default_restart_backoff() -> Duration {
    Duration::from_secs(5)
}
fn default_restarts_per_hour() -> u32 {
    6
}
fn default_auto_increment_increment() -> u64 {
    3
}
fn default_galera_interval() -> Duration {
    Duration::from_millis(500)
}
fn default_mariadbd() -> PathBuf {
    PathBuf::from("/usr/sbin/mariadbd")
}
fn default_defaults_file() -> PathBuf {
    PathBuf::from("/etc/mysql/my.cnf")
}
/// The API's TLS acceptor (`None`: plain HTTP), from `[api] tls_cert_file` and
/// `tls_key_file`; the error names the key and says what to do.
pub fn api_tls(
    path: &Path,
    api: &ApiSection,
) -> Result<Option<tokio_rustls::TlsAcceptor>, ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        file: path.to_path_buf(),
        key: key.to_string(),
        message,
    };
    match (&api.tls_cert_file, &api.tls_key_file) {
        (None, None) => {
            if api.tls_ca_file.is_some() {
                return Err(invalid(
                    "api.tls_ca_file",
                    "set only with api.tls_cert_file and api.tls_key_file".into(),
                ));
            }
            Ok(None)
        }
        (Some(_), None) => Err(invalid(
            "api.tls_key_file",
            "api.tls_cert_file needs its key: set both, or neither for plain HTTP".into(),
        )),
        (None, Some(_)) => Err(invalid(
            "api.tls_cert_file",
            "api.tls_key_file needs its certificate: set both, or neither for plain HTTP".into(),
        )),
        (Some(cert), Some(key)) => crate::tls::api_acceptor(cert, key).map(Some).map_err(|e| {
            let which = match &e {
                crate::tls::TlsError::Io { path, .. }
                | crate::tls::TlsError::Content { path, .. }
                    if path == key =>
                {
                    "api.tls_key_file"
                }
                _ => "api.tls_cert_file",
            };
            invalid(which, e.to_string())
        }),
    }
}

/// A unit name reaches systemctl's command line: no option, no glob, nothing but the
/// characters systemd allows in unit names.
fn check_unit_name(path: &Path, key: &str, unit: &str, example: &str) -> Result<(), ConfigError> {
    let ok = !unit.starts_with('-')
        && !unit.is_empty()
        && unit
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_' | b'.' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            file: path.to_path_buf(),
            key: key.to_string(),
            message: format!(
                "{unit:?} is not a systemd unit name: use letters, digits, ':', '-', '_', '.' \
                 and '@' (for example \"{example}\")"
            ),
        })
    }
}

fn default_recover_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_admin_user() -> String {
    "root".into()
}

impl GaleraSection {
    /// The decision's tunables.
    pub fn settings(&self) -> crate::decide::galera::GaleraSettings {
        crate::decide::galera::GaleraSettings {
            freshness_ms: millis(self.freshness),
            open_after_stopped_ms: millis(self.open_after_stopped),
            open_after_non_primary_ms: millis(self.open_after_non_primary),
            rebootstrap_after_ms: millis(self.rebootstrap_after),
            plant: crate::decide::galera::GaleraPlant::None,
        }
    }

    /// The writer decision's tunables.
    pub fn writer_settings(&self) -> crate::decide::galera_writer::WriterSettings {
        crate::decide::galera_writer::WriterSettings {
            freshness_ms: millis(self.freshness),
            evict: self.evict_dead,
        }
    }
}

impl Default for ServicesSection {
    fn default() -> Self {
        ServicesSection {
            control: ServiceControlKind::default(),
            stop_timeout: default_stop_timeout(),
            units: BTreeMap::new(),
            bootstrap_unit: None,
            process: BTreeMap::new(),
        }
    }
}

impl ServicesSection {
    /// Every service's systemd unit: the Debian defaults with `units` over them.
    pub fn systemd_units(&self) -> BTreeMap<String, String> {
        let mut units: BTreeMap<String, String> = ServiceName::ALL
            .into_iter()
            .map(|n| (n.as_str().to_string(), n.default_unit().to_string()))
            .collect();
        units.extend(self.units.iter().map(|(k, v)| (k.clone(), v.clone())));
        units
    }
}

fn default_stop_timeout() -> Duration {
    Duration::from_secs(30)
}

/// `[services.process.NAME]`: how to run one service as a plain process (used by the
/// `Process` service control).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpec {
    /// The command line of a normal start (the process must stay in the foreground). Not
    /// empty; the program is an absolute path.
    pub argv: Vec<String>,
    /// Extra arguments of a Galera start from a known position (a rejoin, and a bootstrap
    /// after a crash); `{position}` is replaced by the position
    /// (`["--wsrep_start_position={position}"]`).
    #[serde(default)]
    pub rejoin_args: Vec<String>,
    /// Extra arguments of a Galera bootstrap (`["--wsrep-new-cluster"]`); the rejoin
    /// arguments follow them when the position is known.
    #[serde(default)]
    pub bootstrap_args: Vec<String>,
    /// Where the pid is kept (written by Triad at start). Absolute, one per service.
    pub pidfile: PathBuf,
    /// Where stdout and stderr go. Absolute.
    pub log: PathBuf,
}

impl Config {
    /// The services this node runs and probes, which a service control must be able to
    /// start: `mariadb` with `[mariadb]`, `redis` with `[redis]`, `phpfpm` with `[phpfpm]`.
    pub fn managed_services(&self) -> Vec<ServiceName> {
        [
            (ServiceName::Mariadb, self.mariadb.is_some()),
            (ServiceName::Redis, self.redis.is_some()),
            (ServiceName::Phpfpm, self.phpfpm.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, on)| on.then_some(n))
        .collect()
    }
}

/// A configuration problem. Display names the file, the key path and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The configuration file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema (unknown key, wrong type).
    #[error("{file}: {message}")]
    Parse {
        /// The configuration file.
        file: PathBuf,
        /// The parser's message, with line, column and key.
        message: String,
    },
    /// The file parsed but a value is not acceptable.
    #[error("{file}: {key}: {message}")]
    Invalid {
        /// The configuration file.
        file: PathBuf,
        /// Key path, for example `peers[2].raft_addr`.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
}

/// A validated configuration with addresses parsed.
#[derive(Clone, Debug)]
pub struct Validated {
    /// The file it was read from.
    pub file: PathBuf,
    /// The configuration as written (with `--data-dir` applied).
    pub config: Config,
    /// `api.listen`, parsed.
    pub api_listen: SocketAddr,
    /// This node's Raft listen address (its own `raft_addr`).
    pub raft_listen: SocketAddr,
    /// Every member's parsed addresses, sorted by id.
    pub members: Vec<Member>,
}

/// A member with parsed addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Member {
    /// Node id.
    pub id: NodeId,
    /// Raft peer address.
    pub raft_addr: SocketAddr,
    /// Operator API address.
    pub api_addr: SocketAddr,
    /// Redis address, when configured.
    pub redis_addr: Option<SocketAddr>,
    /// MariaDB address, when configured.
    pub mysql_addr: Option<SocketAddr>,
}

/// Where a FastCGI server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FcgiAddr {
    /// TCP.
    Tcp(SocketAddr),
    /// UNIX socket.
    Unix(PathBuf),
}

impl std::fmt::Display for FcgiAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FcgiAddr::Tcp(a) => write!(f, "{a}"),
            FcgiAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Parses `IP:port` or `unix:/path`.
pub fn parse_fcgi_addr(s: &str) -> Result<FcgiAddr, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(format!("`{s}`: the socket path must be absolute"));
        }
        return Ok(FcgiAddr::Unix(PathBuf::from(path)));
    }
    s.parse()
        .map(FcgiAddr::Tcp)
        .map_err(|e| format!("`{s}` is neither IP:port nor unix:/path ({e})"))
}

impl Validated {
    /// The remediation decision's tunables, when remediations are on: `[web]` with
    /// `restart_phpfpm` and a service control, or `[gluster] remount_command`. A lease's bound
    /// is two stop timeouts (a restart is a stop and a start, each bounded by it; a remount is
    /// bounded by one, and its check by the mount probe's timeout), 10 s for the report to
    /// reach the leader, and twice `[hooks] timeout` when a pre hook or a webhook runs first.
    pub fn remedy_settings(&self) -> Option<crate::decide::remedy::RemedySettings> {
        let c = &self.config;
        let w = c.web.as_ref()?;
        let restart_phpfpm = w.restart_phpfpm && c.services.control != ServiceControlKind::None;
        let remount = c
            .gluster
            .as_ref()
            .is_some_and(|g| g.remount_command.is_some());
        let start_bricks = c
            .gluster
            .as_ref()
            .is_some_and(|g| g.restart_bricks && g.local_brick.is_some());
        let restart_glusterd = c.gluster.as_ref().is_some_and(|g| g.restart_glusterd)
            && match c.services.control {
                ServiceControlKind::None => false,
                ServiceControlKind::Process => c.services.process.contains_key("glusterd"),
                _ => true,
            };
        if !restart_phpfpm && !remount && !start_bricks && !restart_glusterd {
            return None;
        }
        Some(crate::decide::remedy::RemedySettings {
            freshness_ms: millis(w.freshness),
            per_hour: w.restarts_per_hour,
            backoff_ms: millis(w.restart_backoff),
            // A pre hook runs first, within the lease.
            max_duration_ms: millis(c.services.stop_timeout.saturating_mul(2))
                .saturating_add(10_000)
                .saturating_add(
                    c.hooks
                        .as_ref()
                        .filter(|h| h.pre.is_some() || h.webhook.is_some())
                        .map_or(0, |h| millis(h.timeout.saturating_mul(2))),
                ),
            restart_phpfpm,
            remount,
            start_bricks,
            restart_glusterd,
            ping_lease_ms: millis(c.failover.lease),
            clock_margin_ms: millis(c.failover.clock_margin),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.config.node.id
    }
}

/// Reads, parses and validates a configuration file. `data_dir_override` replaces
/// `node.data_dir` before validation.
pub fn load(path: &Path, data_dir_override: Option<&Path>) -> Result<Validated, ConfigError> {
    let mut config = read(path)?;
    if let Some(dir) = data_dir_override {
        config.node.data_dir = dir.to_path_buf();
    }
    validate(path, config)
}

/// Reads and parses a configuration file, with every relative file path made relative to
/// the file's directory, without validating it (what the CLI needs to find the API and the
/// token).
pub fn read(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    let mut config = parse(path, &text)?;
    // Relative paths in the file are relative to the file's directory, not the working one.
    let base = tls::config_dir(path);
    if config.node.data_dir.is_relative() {
        config.node.data_dir = base.join(&config.node.data_dir);
    }
    // Every file path, the same way (programs excepted: they are found as given).
    let fix = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    let fix_opt = |p: &mut Option<PathBuf>| {
        if let Some(p) = p.as_mut() {
            fix(p);
        }
    };
    fix_opt(&mut config.api.token_file);
    fix_opt(&mut config.api.read_token_file);
    fix_opt(&mut config.api.tls_cert_file);
    fix_opt(&mut config.api.tls_key_file);
    fix_opt(&mut config.api.tls_ca_file);
    if let Some(r) = config.redis.as_mut() {
        fix_opt(&mut r.password_file);
    }
    if let Some(m) = config.mariadb.as_mut() {
        fix_opt(&mut m.password_file);
        fix_opt(&mut m.socket);
        fix_opt(&mut m.datadir);
    }
    if let Some(h) = config.haproxy.as_mut() {
        fix(&mut h.admin_socket);
        fix_opt(&mut h.state_file);
    }
    if let Some(g) = config.galera.as_mut() {
        fix(&mut g.defaults_file);
        fix_opt(&mut g.admin_password_file);
    }
    if let Some(b) = config.backup.as_mut() {
        b.resolve(base);
    }
    if let Some(h) = config.hooks.as_mut() {
        fix_opt(&mut h.webhook_ca_file);
    }
    Ok(config)
}

/// Keys an earlier version accepted, and what to write instead. The parser refuses them as
/// unknown; the hint is added to its message.
const RETIRED_KEYS: &[(&str, &str)] = &[
    (
        "redis_backend",
        "[haproxy] redis_backend is gone: describe the backend in a [[haproxy.backends]] table \
         with name = \"be_redis\", role = \"redis-master\" and server_prefix = \"redis\" (or \
         leave [[haproxy.backends]] out: with [redis] configured that backend is the default)",
    ),
    (
        "redis_server_prefix",
        "[haproxy] redis_server_prefix is gone: write it as server_prefix in the \
         [[haproxy.backends]] table of the role = \"redis-master\" backend",
    ),
];

/// Parses TOML text into a [`Config`] without validating it.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    toml::from_str(text).map_err(|err| {
        let mut message = err.to_string().trim_end().to_string();
        for (key, hint) in RETIRED_KEYS {
            if message.contains(&format!("unknown field `{key}`")) {
                message.push_str("\nhint: ");
                message.push_str(hint);
            }
        }
        ConfigError::Parse {
            file: path.to_path_buf(),
            message,
        }
    })
}

/// Validates a parsed configuration; see the module docs for the rules. Fills in the defaults
/// that depend on other sections (`haproxy.backends`).
pub fn validate(path: &Path, mut config: Config) -> Result<Validated, ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        file: path.to_path_buf(),
        key: key.to_string(),
        message,
    };
    if config.cluster_name.trim().is_empty() {
        return Err(invalid("cluster_name", "must not be empty".into()));
    }
    if config.node.id.get() == 0 {
        return Err(invalid(
            "node.id",
            "must be a positive integer (0 is reserved)".into(),
        ));
    }
    if config.node.data_dir.as_os_str().is_empty() {
        return Err(invalid("node.data_dir", "must not be empty".into()));
    }
    if config.peers.is_empty() {
        return Err(invalid(
            "peers",
            "at least one [[peers]] entry is required".into(),
        ));
    }
    let mut ids = BTreeSet::new();
    let mut addrs = BTreeSet::new();
    let mut members = Vec::with_capacity(config.peers.len());
    for (i, peer) in config.peers.iter().enumerate() {
        if peer.id.get() == 0 {
            return Err(invalid(
                &format!("peers[{i}].id"),
                "must be a positive integer".into(),
            ));
        }
        if !ids.insert(peer.id) {
            return Err(invalid(
                &format!("peers[{i}].id"),
                format!("duplicate peer id {}", peer.id.get()),
            ));
        }
        let mut parse_addr = |field: &str, value: &str| -> Result<SocketAddr, ConfigError> {
            let key = format!("peers[{i}].{field}");
            let addr: SocketAddr = value
                .parse()
                .map_err(|e| invalid(&key, format!("`{value}` is not an IP:port address ({e})")))?;
            if !addrs.insert(addr) {
                return Err(invalid(&key, format!("address {addr} is used twice")));
            }
            Ok(addr)
        };
        let raft_addr = parse_addr("raft_addr", &peer.raft_addr)?;
        let api_addr = parse_addr("api_addr", &peer.api_addr)?;
        let redis_addr = match &peer.redis_addr {
            Some(a) => Some(parse_addr("redis_addr", a)?),
            None => None,
        };
        let mysql_addr = match &peer.mysql_addr {
            Some(a) => Some(parse_addr("mysql_addr", a)?),
            None => None,
        };
        members.push(Member {
            id: peer.id,
            raft_addr,
            api_addr,
            redis_addr,
            mysql_addr,
        });
    }
    members.sort_by_key(|m| m.id);
    let Some(me) = members.iter().find(|m| m.id == config.node.id) else {
        return Err(invalid(
            "node.id",
            format!(
                "{} is not among [[peers]] (ids: {}); add this node to the peers list",
                config.node.id.get(),
                ids.iter()
                    .map(|i| i.get().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    let raft_listen = me.raft_addr;
    let api_listen: SocketAddr = config.api.listen.parse().map_err(|e| {
        invalid(
            "api.listen",
            format!("`{}` is not an IP:port address ({e})", config.api.listen),
        )
    })?;
    if let Some(token_file) = &config.api.token_file {
        check_secret_file(path, token_file, "api.token_file")?;
    }
    if let Some(token_file) = &config.api.read_token_file {
        check_secret_file(path, token_file, "api.read_token_file")?;
    }
    api_tls(path, &config.api)?;
    for (key, value) in [
        ("api.mutation_burst", config.api.mutation_burst),
        ("api.auth_failure_burst", config.api.auth_failure_burst),
    ] {
        if value == 0 {
            return Err(invalid(
                key,
                "must be at least 1 (0 would refuse every mutating request)".into(),
            ));
        }
    }
    if config.api.proposal_timeout.is_zero() {
        return Err(invalid(
            "api.proposal_timeout",
            "must be greater than zero".into(),
        ));
    }
    in_range(
        path,
        "api.proposal_timeout",
        config.api.proposal_timeout,
        Duration::from_millis(1),
        MAX_PROPOSAL_TIMEOUT,
        "a request waits that long; the deadline is computed from the current instant",
    )?;
    let raft = &config.raft;
    in_range(
        path,
        "raft.tick_interval",
        raft.tick_interval,
        MIN_TICK_INTERVAL,
        MAX_TICK_INTERVAL,
        "the election timeout and the ping interval are multiples of it",
    )?;
    in_range(
        path,
        "raft.heartbeat_ticks",
        raft.heartbeat_ticks,
        1,
        MAX_HEARTBEAT_TICKS,
        "0 would leave followers without heartbeats",
    )?;
    in_range(
        path,
        "raft.ping_ticks",
        raft.ping_ticks,
        1,
        MAX_HEARTBEAT_TICKS,
        "the ping interval is tick_interval * ping_ticks, and 0 would make it zero",
    )?;
    in_range(
        path,
        "raft.election_ticks",
        raft.election_ticks,
        2,
        MAX_ELECTION_TICKS,
        "the election timeout is tick_interval * election_ticks",
    )?;
    if raft.election_ticks <= raft.heartbeat_ticks {
        return Err(invalid(
            "raft.election_ticks",
            format!(
                "must be greater than raft.heartbeat_ticks ({} <= {})",
                raft.election_ticks, raft.heartbeat_ticks
            ),
        ));
    }
    in_range(
        path,
        "raft.snapshot_entries",
        raft.snapshot_entries,
        1,
        MAX_SNAPSHOT_ENTRIES,
        "the log between two snapshots is held in memory",
    )?;
    in_range(
        path,
        "raft.max_frame_bytes",
        raft.max_frame_bytes,
        MIN_MAX_FRAME_BYTES,
        MAX_MAX_FRAME_BYTES,
        "a snapshot must fit in one frame, and a peer may make this node allocate that much",
    )?;
    validate_probes(path, &config, me)?;
    validate_failover(path, &config)?;
    let has_redis = config.redis.is_some();
    if let Some(h) = &mut config.haproxy {
        if h.backends.is_none() {
            h.backends = Some(if has_redis {
                vec![HaproxyBackend::default_redis()]
            } else {
                vec![]
            });
        }
    }
    validate_haproxy(path, &config)?;
    if let Some(level) = &config.log.level {
        crate::logging::parse_level(level).map_err(|message| invalid("log.level", message))?;
    }
    validate_services(path, &config)?;
    validate_galera(path, &config)?;
    validate_web(path, &config)?;
    validate_hooks(path, &config)?;
    backup::validate(path, &config)?;
    tls::load(path, &config)?;
    Ok(Validated {
        file: path.to_path_buf(),
        config,
        api_listen,
        raft_listen,
        members,
    })
}

// Bounds of the numeric keys, documented on each field. They keep every duration and count
// the agent derives from them (`tick_interval * ping_ticks`, `Instant::now() + timeout`,
// milliseconds as `u64`, sums in the timing invariant) far from overflow and truncation, and
// every interval above zero.
const MAX_PROPOSAL_TIMEOUT: Duration = Duration::from_secs(3600);
const MIN_TICK_INTERVAL: Duration = Duration::from_millis(1);
const MAX_TICK_INTERVAL: Duration = Duration::from_secs(10);
const MAX_HEARTBEAT_TICKS: usize = 100;
const MAX_ELECTION_TICKS: usize = 1000;
const MAX_SNAPSHOT_ENTRIES: u64 = 10_000_000;
const MIN_MAX_FRAME_BYTES: usize = 64 * 1024;
const MAX_MAX_FRAME_BYTES: usize = 1024 * 1024 * 1024;
const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(10);
const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(3600);
const MAX_RISE_FALL: u32 = 100;
const MAX_FAILOVER_TIMER: Duration = Duration::from_secs(3600);
const MAX_HOLD_DOWN: Duration = Duration::from_secs(24 * 3600);
const MIN_RECONCILE: Duration = Duration::from_millis(10);
const MAX_RECONCILE: Duration = Duration::from_secs(60);

/// A bounded config value, shown as an operator writes it.
trait Bounded: PartialOrd + Copy {
    fn show(self) -> String;
}

impl Bounded for Duration {
    fn show(self) -> String {
        humantime::format_duration(self).to_string()
    }
}

macro_rules! bounded_int {
    ($($t:ty),*) => {$(
        impl Bounded for $t {
            fn show(self) -> String {
                self.to_string()
            }
        }
    )*};
}
bounded_int!(u32, u64, usize);

/// `value` must lie in `min..=max`; else an error naming `key`, the value, the allowed range
/// and `why` the bound exists.
fn in_range<T: Bounded>(
    path: &Path,
    key: &str,
    value: T,
    min: T,
    max: T,
    why: &str,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::Invalid {
            file: path.to_path_buf(),
            key: key.to_string(),
            message: format!(
                "{} is out of range (allowed {} to {}): {why}",
                value.show(),
                min.show(),
                max.show()
            ),
        });
    }
    Ok(())
}

fn validate_probes(path: &Path, config: &Config, me: &Member) -> Result<(), ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        file: path.to_path_buf(),
        key: key.to_string(),
        message,
    };
    let me_index = config
        .peers
        .iter()
        .position(|p| p.id == me.id)
        .unwrap_or_default();
    let timing = |key: &str, r: ProbeTiming| -> Result<(), ConfigError> {
        if r.interval < MIN_PROBE_INTERVAL {
            return Err(invalid(
                &format!("{key}.interval"),
                "must be at least 10ms".into(),
            ));
        }
        in_range(
            path,
            &format!("{key}.interval"),
            r.interval,
            MIN_PROBE_INTERVAL,
            MAX_PROBE_INTERVAL,
            "failover waits on it",
        )?;
        if r.timeout.is_zero() || r.timeout >= r.interval {
            return Err(invalid(
                &format!("{key}.timeout"),
                format!(
                    "must be above zero and below the interval ({:?} >= {:?})",
                    r.timeout, r.interval
                ),
            ));
        }
        for (name, n) in [("rise", r.rise), ("fall", r.fall)] {
            in_range(
                path,
                &format!("{key}.{name}"),
                n,
                1,
                MAX_RISE_FALL,
                "consecutive checks before a change of status counts; rise and fall must be at \
                 least 1",
            )?;
        }
        Ok(())
    };
    let file_exists = |key: &str, f: &Option<PathBuf>| -> Result<(), ConfigError> {
        match f {
            Some(f) => check_secret_file(path, f, key),
            None => Ok(()),
        }
    };
    timing("probes", ProbeDefaults::default().resolve(&config.probes))?;
    if let Some(r) = &config.redis {
        timing("redis.timing", r.effective_timing(&config.probes))?;
        file_exists("redis.password_file", &r.password_file)?;
        if me.redis_addr.is_none() {
            return Err(invalid(
                &format!("peers[{me_index}].redis_addr"),
                "required for this node because [redis] is configured".into(),
            ));
        }
    }
    if let Some(m) = &config.mariadb {
        timing("mariadb.timing", m.effective_timing(&config.probes))?;
        file_exists("mariadb.password_file", &m.password_file)?;
        if m.user.trim().is_empty() {
            return Err(invalid("mariadb.user", "must not be empty".into()));
        }
        if me.mysql_addr.is_none() && m.socket.is_none() {
            return Err(invalid(
                "mariadb.socket",
                format!(
                    "set mariadb.socket or peers[{me_index}].mysql_addr: the local server must be \
                     reachable"
                ),
            ));
        }
    }
    if let Some(f) = &config.phpfpm {
        timing("phpfpm.timing", f.timing.resolve(&config.probes))?;
        parse_fcgi_addr(&f.address).map_err(|e| invalid("phpfpm.address", e))?;
        in_range(
            path,
            "phpfpm.queue_bound",
            f.queue_bound,
            0,
            100_000,
            "a listen queue above it counts as queueing",
        )?;
        in_range(
            path,
            "phpfpm.queue_for",
            f.queue_for,
            Duration::ZERO,
            Duration::from_secs(600),
            "a pool queueing this long is saturated",
        )?;
        for (key, p) in [
            ("phpfpm.ping_path", &f.ping_path),
            ("phpfpm.status_path", &f.status_path),
        ] {
            if !p.starts_with('/') {
                return Err(invalid(key, format!("`{p}` must start with /")));
            }
        }
    }
    if let Some(g) = &config.gluster {
        timing("gluster.timing", g.volume_timing(&config.probes))?;
        timing(
            "gluster.mount_timing",
            g.mount_timing.resolve(&config.probes),
        )?;
        if g.volume.trim().is_empty() {
            return Err(invalid("gluster.volume", "must not be empty".into()));
        }
        if g.bricks.is_empty() {
            return Err(invalid(
                "gluster.bricks",
                "list every brick as host:/path".into(),
            ));
        }
        for (i, b) in g.bricks.iter().enumerate() {
            if !b
                .split_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.starts_with('/'))
            {
                return Err(invalid(
                    &format!("gluster.bricks[{i}]"),
                    format!("`{b}` is not host:/path"),
                ));
            }
        }
        if let Some(l) = &g.local_brick {
            if !g.bricks.contains(l) {
                return Err(invalid(
                    "gluster.local_brick",
                    format!("`{l}` is not in gluster.bricks"),
                ));
            }
        }
        if g.command.is_empty() || g.command[0].trim().is_empty() {
            return Err(invalid(
                "gluster.command",
                "must name the gluster program".into(),
            ));
        }
        if let Some(unit) = &g.heal_unit {
            check_unit_name(
                path,
                "gluster.heal_unit",
                unit,
                "triad-gluster-heal@shop.service",
            )?;
        }
        for (i, m) in g.mounts.iter().enumerate() {
            if !m.is_absolute() {
                return Err(invalid(
                    &format!("gluster.mounts[{i}]"),
                    format!("{} must be an absolute path", m.display()),
                ));
            }
        }
        if let Some(r) = &g.remount_command {
            if r.first().is_none_or(|p| p.trim().is_empty()) {
                return Err(invalid(
                    "gluster.remount_command",
                    "must name a program (with its arguments; `{mount}` is the mount point), \
                     or leave the key out: broken mounts are then only drained"
                        .into(),
                ));
            }
            if g.mounts.is_empty() {
                return Err(invalid(
                    "gluster.remount_command",
                    "there is nothing to remount: gluster.mounts is empty".into(),
                ));
            }
        }
    }
    Ok(())
}

fn validate_failover(path: &Path, config: &Config) -> Result<(), ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        file: path.to_path_buf(),
        key: key.to_string(),
        message,
    };
    let f = &config.failover;
    // Every timer is bounded first, so that the arithmetic below (and the agent's, which turns
    // them into milliseconds and adds them) stays far from overflow.
    let one_s = Duration::from_secs(1);
    for (key, value, min, max, why) in [
        (
            "failover.freshness",
            f.freshness,
            // The lower bound (above 1s and a few intervals) is checked below.
            Duration::ZERO,
            MAX_FAILOVER_TIMER,
            "reports this old still count",
        ),
        (
            "failover.lease",
            f.lease,
            // The lower bound (above 1s and a few intervals) is checked below.
            Duration::ZERO,
            MAX_FAILOVER_TIMER,
            "a cut-off agent keeps serving that long",
        ),
        (
            "failover.clock_margin",
            f.clock_margin,
            Duration::ZERO,
            MAX_FAILOVER_TIMER,
            "the silent path waits lease + clock_margin",
        ),
        (
            "failover.hold_down",
            f.hold_down,
            Duration::ZERO,
            MAX_HOLD_DOWN,
            "no automatic failover for that long after a change",
        ),
        (
            "failover.link_stale_after",
            f.link_stale_after,
            // The lower bound (above 1s plus the probe interval) is checked below.
            Duration::ZERO,
            MAX_FAILOVER_TIMER,
            "a replica's link counts as lost after that long",
        ),
        (
            "failover.redis_min_replicas_max_lag",
            f.redis_min_replicas_max_lag,
            one_s,
            MAX_FAILOVER_TIMER,
            "Redis takes it in whole seconds as an int",
        ),
        (
            "failover.hung_after",
            f.hung_after,
            // The lower bound (twice the probe timeout) is checked below.
            Duration::ZERO,
            MAX_FAILOVER_TIMER,
            "a master its own agent has had no answer from for that long is hung",
        ),
    ] {
        in_range(path, key, value, min, max, why)?;
    }
    for (key, value) in [
        ("failover.reconcile_interval", f.reconcile_interval),
        ("failover.action_timeout", f.action_timeout),
    ] {
        in_range(
            path,
            key,
            value,
            MIN_RECONCILE,
            MAX_RECONCILE,
            "the old master's agent fences it within max(reconcile_interval, 2 * action_timeout)",
        )?;
    }
    // Bounded by validate's [raft] checks; checked all the same.
    let ping = u32::try_from(config.raft.ping_ticks)
        .ok()
        .and_then(|n| config.raft.tick_interval.checked_mul(n))
        .ok_or_else(|| {
            invalid(
                "raft.ping_ticks",
                "raft.tick_interval * raft.ping_ticks (the ping interval) overflows".into(),
            )
        })?;
    let three_pings = ping.checked_mul(3).ok_or_else(|| {
        invalid(
            "failover.lease",
            format!("three ping intervals ({ping:?} each) overflow"),
        )
    })?;
    if f.lease <= one_s || f.lease < three_pings {
        return Err(invalid(
            "failover.lease",
            format!(
                "{:?} is too short: it must exceed 1s (the longest gap between two reports) and \
                 three ping intervals ({three_pings:?})",
                f.lease,
            ),
        ));
    }
    // The part of the lease an agent acts on (see `reconcile::usable_lease`).
    let usable = f
        .action_timeout
        .checked_mul(2)
        .and_then(|cycle| f.lease.checked_sub(cycle));
    if usable.is_none_or(|u| u < three_pings) {
        return Err(invalid(
            "failover.lease",
            format!(
                "{:?} leaves too little usable: an agent acts on its lease only while more than \
                 2 * action_timeout ({:?}) of it is left, and that usable part must span three \
                 ping intervals ({three_pings:?}), or one late pong fences a healthy master. \
                 Raise lease or lower action_timeout",
                f.lease,
                f.action_timeout.saturating_mul(2),
            ),
        ));
    }
    // The worst case from a lapsed lease to HAProxy out of service and Redis fenced (see
    // FailoverSection's timing invariant).
    let needed = f
        .action_timeout
        .checked_mul(2)
        .map(|cycle| cycle.max(f.reconcile_interval))
        .and_then(|fenced| fenced.checked_add(ping.checked_mul(2)?))
        .ok_or_else(|| {
            invalid(
                "failover.clock_margin",
                "max(failover.reconcile_interval, 2 * failover.action_timeout) + two ping \
                 intervals (raft.tick_interval * raft.ping_ticks) overflows"
                    .into(),
            )
        })?;
    if f.clock_margin < needed {
        return Err(invalid(
            "failover.clock_margin",
            format!(
                "{:?} breaks the timing invariant: it must cover max(reconcile_interval, 2 * \
                 action_timeout) + two ping intervals ({needed:?}), the longest a cut-off agent \
                 takes to stop routing to its Redis and fence it after its lease lapsed; \
                 otherwise a cut-off master could still accept writes when the majority \
                 promotes another. Raise clock_margin or lower action_timeout",
                f.clock_margin
            ),
        ));
    }
    let probe_timeout = config
        .redis
        .as_ref()
        .map(|r| r.effective_timing(&config.probes).timeout);
    if let Some(timeout) = probe_timeout {
        if !f.hung_after.is_zero() && f.hung_after < timeout.saturating_mul(2) {
            return Err(invalid(
                "failover.hung_after",
                format!(
                    "{:?} is too short: it must be at least twice the Redis probe timeout \
                     ({timeout:?}), so that one slow answer never makes a master hung; or `0s` \
                     to turn the hung path off",
                    f.hung_after
                ),
            ));
        }
    }
    let probe = config
        .redis
        .as_ref()
        .map(|r| r.effective_timing(&config.probes).interval)
        .unwrap_or(one_s);
    let two_probes = probe.checked_mul(2).ok_or_else(|| {
        invalid(
            "redis.timing.interval",
            format!("twice the Redis probe interval ({probe:?}) overflows"),
        )
    })?;
    if f.freshness <= one_s || f.freshness < two_probes {
        return Err(invalid(
            "failover.freshness",
            format!(
                "{:?} is too short: it must exceed 1s and twice the Redis probe interval \
                 ({two_probes:?})",
                f.freshness,
            ),
        ));
    }
    let lag = f.redis_min_replicas_max_lag;
    if lag < one_s || lag.subsec_nanos() != 0 {
        return Err(invalid(
            "failover.redis_min_replicas_max_lag",
            "must be a whole number of seconds, at least 1s (Redis counts whole seconds)".into(),
        ));
    }
    // The master's pings move a healthy replica's offset every second at best
    // (`repl-ping-replica-period 1`), and its agent sees that only at its next check.
    let quiet_floor = one_s.saturating_add(probe);
    if config.redis.is_some() && f.link_stale_after <= quiet_floor {
        return Err(invalid(
            "failover.link_stale_after",
            format!(
                "{:?} is too short: it must exceed 1s (the shortest repl-ping-replica-period, \
                 how often an idle master's pings move a replica's offset) plus the Redis probe \
                 interval ({probe:?}), or a healthy idle link would look lost",
                f.link_stale_after
            ),
        ));
    }
    Ok(())
}

/// `[haproxy]`, after the default backends were filled in.
fn validate_haproxy(path: &Path, config: &Config) -> Result<(), ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        file: path.to_path_buf(),
        key: key.to_string(),
        message,
    };
    let Some(h) = &config.haproxy else {
        return Ok(());
    };
    if !h.admin_socket.is_absolute() {
        return Err(invalid(
            "haproxy.admin_socket",
            format!("{} must be an absolute path", h.admin_socket.display()),
        ));
    }
    let mut names = BTreeMap::new();
    let mut roles = BTreeMap::new();
    for (i, b) in h.backends().iter().enumerate() {
        let key = format!("haproxy.backends[{i}]");
        for (field, name) in [("name", &b.name), ("server_prefix", &b.server_prefix)] {
            if !is_haproxy_name(name) {
                return Err(invalid(
                    &format!("{key}.{field}"),
                    format!(
                        "{name:?} is not a HAProxy name: use only letters, digits, '-', '_', '.' \
                         and ':'"
                    ),
                ));
            }
        }
        if let Some(first) = names.insert(b.name.as_str(), i) {
            return Err(invalid(
                &format!("{key}.name"),
                format!(
                    "backend {:?} is already haproxy.backends[{first}]: give each backend one \
                     table",
                    b.name
                ),
            ));
        }
        if let Some(first) = roles.insert(b.role, i) {
            return Err(invalid(
                &format!("{key}.role"),
                format!(
                    "role {} already has a backend (haproxy.backends[{first}]): Triad keeps at \
                     most one backend per role; remove one of them",
                    b.role
                ),
            ));
        }
        if !b.role.is_served_by(config) {
            return Err(invalid(
                &key,
                format!(
                    "the {} backend {:?} needs {}: add {} or remove this backend",
                    b.role,
                    b.name,
                    b.role.needs(),
                    b.role.needs()
                ),
            ));
        }
    }
    Ok(())
}

/// `[web]`: needs `[phpfpm]` (the evidence), a sane freshness.
fn validate_web(path: &Path, config: &Config) -> Result<(), ConfigError> {
    let Some(w) = &config.web else {
        return Ok(());
    };
    if config.phpfpm.is_none() {
        return Err(ConfigError::Invalid {
            file: path.to_path_buf(),
            key: "web".into(),
            message: "the web rotation judges each node by its PHP-FPM checks: add [phpfpm] \
                      or remove [web]"
                .into(),
        });
    }
    in_range(
        path,
        "web.freshness",
        w.freshness,
        Duration::from_secs(1),
        Duration::from_secs(3600),
        "a report older than this leaves its node as the rotation has it",
    )?;
    in_range(
        path,
        "web.readmit_after",
        w.readmit_after,
        Duration::ZERO,
        Duration::from_secs(3600),
        "a drained node waits this long, healthy, before it is readmitted",
    )?;
    in_range(
        path,
        "web.restarts_per_hour",
        w.restarts_per_hour,
        1,
        100,
        "past the cap a node stays drained until an operator repairs it",
    )?;
    in_range(
        path,
        "web.restart_backoff",
        w.restart_backoff,
        Duration::from_secs(1),
        Duration::from_secs(3600),
        "the wait after a restart before the next, doubled with each one in the hour",
    )
}

/// `[hooks]`: absolute programs, a bounded timeout, a webhook URL Triad can reach.
fn validate_hooks(path: &Path, config: &Config) -> Result<(), ConfigError> {
    let Some(h) = &config.hooks else {
        return Ok(());
    };
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        file: path.to_path_buf(),
        key: key.to_string(),
        message,
    };
    for (key, argv) in [("hooks.pre", &h.pre), ("hooks.post", &h.post)] {
        let Some(argv) = argv else { continue };
        match argv.first() {
            None => {
                return Err(invalid(
                    key,
                    "must not be empty: name the program and its arguments, or leave the key \
                     out"
                    .into(),
                ))
            }
            Some(program) if !Path::new(program).is_absolute() => {
                return Err(invalid(
                    &format!("{key}[0]"),
                    format!(
                        "{program:?} must be an absolute path (the agent's PATH is not the \
                         shell's)"
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    in_range(
        path,
        "hooks.timeout",
        h.timeout,
        Duration::from_millis(100),
        Duration::from_secs(600),
        "a hook still running then is killed (a pre hook's timeout vetoes)",
    )?;
    in_range(
        path,
        "hooks.max_age",
        h.max_age,
        Duration::from_secs(60),
        Duration::from_secs(7 * 24 * 3600),
        "older events' post hooks are skipped",
    )?;
    if let Some(url) = &h.webhook {
        let https = url.starts_with("https://");
        if !https && !url.starts_with("http://") {
            return Err(invalid(
                "hooks.webhook",
                format!("{url:?} is not an http:// or https:// URL"),
            ));
        }
        if reqwest::Url::parse(url).is_err() {
            return Err(invalid(
                "hooks.webhook",
                format!("{url:?} is not a valid URL"),
            ));
        }
        match &h.webhook_ca_file {
            Some(f) if !f.is_file() => {
                return Err(invalid(
                    "hooks.webhook_ca_file",
                    format!("{} does not exist or is not a file", f.display()),
                ))
            }
            Some(_) => {}
            None if https => {
                return Err(invalid(
                    "hooks.webhook_ca_file",
                    "required for an https:// webhook: the CA certificates (PEM) its \
                     certificate chains to"
                        .into(),
                ))
            }
            None => {}
        }
    } else if h.webhook_ca_file.is_some() {
        return Err(invalid(
            "hooks.webhook_ca_file",
            "set without hooks.webhook: add the webhook or remove the key".into(),
        ));
    }
    Ok(())
}

const MIN_STOP_TIMEOUT: Duration = Duration::from_millis(100);
const MAX_STOP_TIMEOUT: Duration = Duration::from_secs(3600);

/// `[services]`: known names, units that `systemctl` cannot take for options, and with
/// `control = "process"` a complete, absolute spec for every service this node probes.
fn validate_galera(path: &Path, config: &Config) -> Result<(), ConfigError> {
    let Some(g) = &config.galera else {
        return Ok(());
    };
    if let Some(f) = &g.admin_password_file {
        check_secret_file(path, f, "galera.admin_password_file")?;
    }
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        file: path.to_path_buf(),
        key: key.to_string(),
        message,
    };
    let hour = Duration::from_secs(3600);
    let day = Duration::from_secs(86_400);
    for (key, value, min, max, why) in [
        (
            "galera.freshness",
            g.freshness,
            Duration::from_secs(1),
            hour,
            "a report older than this is not evidence; reports come at least every second",
        ),
        (
            "galera.open_after_stopped",
            g.open_after_stopped,
            Duration::ZERO,
            hour,
            "an outage opens only after no Primary was seen for that long",
        ),
        (
            "galera.open_after_non_primary",
            g.open_after_non_primary,
            Duration::from_secs(1),
            day,
            "Galera needs a few seconds to re-form a Primary after a short partition",
        ),
        (
            "galera.rebootstrap_after",
            g.rebootstrap_after,
            Duration::from_secs(1),
            hour,
            "a bootstrap is given up only once its node has stayed stopped that long",
        ),
        (
            "galera.restart_non_primary_after",
            g.restart_non_primary_after,
            Duration::from_secs(1),
            day,
            "a non-Primary node is restarted only after this long",
        ),
        (
            "galera.restart_backoff",
            g.restart_backoff,
            Duration::from_secs(1),
            hour,
            "the wait between restarts doubles from this",
        ),
        (
            "galera.reconcile_interval",
            g.reconcile_interval,
            Duration::from_millis(50),
            Duration::from_secs(60),
            "the local recovery runs this often",
        ),
        (
            "galera.writer_interval",
            g.writer_interval,
            Duration::from_millis(50),
            Duration::from_secs(10),
            "the writer's own agent answers HAProxy's check from a cycle this recent",
        ),
        (
            "galera.recover_timeout",
            g.recover_timeout,
            Duration::from_secs(1),
            hour,
            "--wsrep-recover is killed past it",
        ),
    ] {
        in_range(path, key, value, min, max, why)?;
    }
    for (key, value, why) in [
        (
            "galera.join_retrans_period",
            g.join_retrans_period,
            "Galera retransmits membership JOIN messages this often (0s: leave it alone)",
        ),
        (
            "galera.keepalive_period",
            g.keepalive_period,
            "a quiet Galera member signals it is alive this often (0s: leave it alone)",
        ),
    ] {
        if !value.is_zero() {
            in_range(
                path,
                key,
                value,
                Duration::from_millis(10),
                Duration::from_secs(10),
                why,
            )?;
        }
    }
    if let Some(unit) = &g.recover_unit {
        check_unit_name(
            path,
            "galera.recover_unit",
            unit,
            "triad-wsrep-recover.service",
        )?;
    }
    if g.rebootstrap_after < g.open_after_stopped {
        return Err(invalid(
            "galera.rebootstrap_after",
            format!(
                "{} is shorter than galera.open_after_stopped ({}): a bootstrap must be given \
                 at least the time an outage waits before it opens; raise it",
                humantime::format_duration(g.rebootstrap_after),
                humantime::format_duration(g.open_after_stopped)
            ),
        ));
    }
    in_range(
        path,
        "galera.restarts_per_hour",
        g.restarts_per_hour,
        1,
        100,
        "a node that keeps failing must stay down for an operator",
    )?;
    in_range(
        path,
        "galera.auto_increment_increment",
        g.auto_increment_increment,
        0,
        65_535,
        "MariaDB's auto_increment_increment is 1 to 65535 (0 turns the check off)",
    )?;
    let Some(db) = &config.mariadb else {
        return Err(invalid(
            "galera",
            "needs [mariadb] (the probe reports the evidence): add it or remove [galera]".into(),
        ));
    };
    if db.datadir.is_none() {
        return Err(invalid(
            "mariadb.datadir",
            "[galera] needs it to read grastate.dat: set it to the server's datadir \
             (Debian: /var/lib/mysql)"
                .into(),
        ));
    }
    if g.admin_user.trim().is_empty() {
        return Err(invalid("galera.admin_user", "must not be empty".into()));
    }
    if config.services.control == ServiceControlKind::None && g.rejoin {
        return Err(invalid(
            "galera.rejoin",
            "needs a service control to start mariadb: set [services] control (systemd or \
             process), or rejoin = false"
                .into(),
        ));
    }
    Ok(())
}

fn validate_services(path: &Path, config: &Config) -> Result<(), ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        file: path.to_path_buf(),
        key: key.to_string(),
        message,
    };
    let s = &config.services;
    in_range(
        path,
        "services.stop_timeout",
        s.stop_timeout,
        MIN_STOP_TIMEOUT,
        MAX_STOP_TIMEOUT,
        "a stop waits that long before it kills, and a systemctl command is cut at it",
    )?;
    let control = s.control.as_str();
    for (table, map_keys, used_with) in [
        (
            "units",
            s.units.keys().collect::<Vec<_>>(),
            ServiceControlKind::Systemd,
        ),
        (
            "process",
            s.process.keys().collect(),
            ServiceControlKind::Process,
        ),
    ] {
        for name in map_keys {
            let key = format!("services.{table}.{name}");
            if ServiceName::parse(name).is_none() {
                return Err(invalid(
                    &key,
                    format!(
                        "unknown service {name:?}; known services: {}",
                        ServiceName::known()
                    ),
                ));
            }
            if s.control != used_with {
                return Err(invalid(
                    &key,
                    format!(
                        "only used with services.control = \"{}\" (it is \"{control}\"): \
                         remove [services.{table}] or set services.control = \"{}\"",
                        used_with.as_str(),
                        used_with.as_str()
                    ),
                ));
            }
        }
    }
    for (name, unit) in &s.units {
        let example = ServiceName::parse(name).map_or("mariadb.service", ServiceName::default_unit);
        check_unit_name(path, &format!("services.units.{name}"), unit, example)?;
    }
    if let Some(unit) = &s.bootstrap_unit {
        check_unit_name(
            path,
            "services.bootstrap_unit",
            unit,
            "triad-galera-bootstrap.service",
        )?;
    }
    if s.control == ServiceControlKind::Process {
        for name in config.managed_services() {
            if !s.process.contains_key(name.as_str()) {
                return Err(invalid(
                    &format!("services.process.{name}"),
                    format!(
                        "required with services.control = \"process\" because [{name}] is \
                         configured: add a [services.process.{name}] table with argv, pidfile \
                         and log, or use control = \"none\""
                    ),
                ));
            }
        }
        let mut pidfiles = BTreeMap::new();
        for (name, spec) in &s.process {
            let key = format!("services.process.{name}");
            match spec.argv.first() {
                None => {
                    return Err(invalid(
                        &format!("{key}.argv"),
                        "must not be empty: name the program and its arguments".into(),
                    ))
                }
                Some(program) if !Path::new(program).is_absolute() => {
                    return Err(invalid(
                        &format!("{key}.argv[0]"),
                        format!(
                            "{program:?} must be an absolute path (the agent's PATH is not the \
                             shell's)"
                        ),
                    ))
                }
                Some(_) => {}
            }
            for (field, p) in [("pidfile", &spec.pidfile), ("log", &spec.log)] {
                if !p.is_absolute() {
                    return Err(invalid(
                        &format!("{key}.{field}"),
                        format!("{} must be an absolute path", p.display()),
                    ));
                }
            }
            if let Some(other) = pidfiles.insert(&spec.pidfile, name) {
                return Err(invalid(
                    &format!("{key}.pidfile"),
                    format!(
                        "{} is also services.process.{other}.pidfile: give each service its own",
                        spec.pidfile.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Reads a bearer token file: one non-empty line, surrounding whitespace ignored.
pub fn read_token(path: &Path) -> Result<String, ConfigError> {
    read_secret(path, "api.token_file")
}

/// Reads a secret file (token or password) named by config key `key`: one non-empty line,
/// surrounding whitespace ignored. The secret itself never appears in errors.
pub fn read_secret(path: &Path, key: &str) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    let secret = text.trim();
    if secret.is_empty() {
        let what = if key == "api.token_file" {
            "token"
        } else {
            "secret"
        };
        return Err(ConfigError::Invalid {
            file: path.to_path_buf(),
            key: key.into(),
            message: format!("{what} file is empty; write the {what} into it"),
        });
    }
    Ok(secret.to_string())
}

/// The timings the safety argument assumes equal on every node, by config key, as text: the
/// Raft timing (election and heartbeat, and the lease pings) and the failover policy (report
/// freshness, the lease and its clock margin, the hung and link-loss bounds, the hold-down,
/// the lag bound, and whether failover is automatic). Agents exchange them when they connect
/// and refuse a peer whose values differ. Local pacing (`reconcile_interval`,
/// `action_timeout`) and storage (`snapshot_entries`, `max_frame_bytes`) may differ.
pub fn safety_timings(config: &Config) -> BTreeMap<String, String> {
    let r = &config.raft;
    let f = &config.failover;
    let d = |v: Duration| humantime::format_duration(v).to_string();
    [
        ("raft.tick_interval", d(r.tick_interval)),
        ("raft.election_ticks", r.election_ticks.to_string()),
        ("raft.heartbeat_ticks", r.heartbeat_ticks.to_string()),
        ("raft.ping_ticks", r.ping_ticks.to_string()),
        ("failover.automatic", f.automatic.to_string()),
        ("failover.freshness", d(f.freshness)),
        ("failover.lease", d(f.lease)),
        ("failover.clock_margin", d(f.clock_margin)),
        ("failover.hold_down", d(f.hold_down)),
        ("failover.max_lag_bytes", f.max_lag_bytes.to_string()),
        ("failover.link_stale_after", d(f.link_stale_after)),
        ("failover.hung_after", d(f.hung_after)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Where two nodes' [`safety_timings`] differ: one line per key, `key: ours X, theirs Y`
/// (empty when they agree).
pub fn safety_timings_diff(
    ours: &BTreeMap<String, String>,
    theirs: &BTreeMap<String, String>,
) -> Vec<String> {
    let keys: BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (a, b) = (ours.get(k), theirs.get(k));
            (a != b).then(|| {
                let show = |v: Option<&String>| v.map_or("(none)".to_string(), Clone::clone);
                format!("{k}: ours {}, theirs {}", show(a), show(b))
            })
        })
        .collect()
}

/// Checks a secret file named by config key `key` as the agent will use it: a regular file,
/// readable by its owner only (mode 0600 or stricter; the error gives the `chmod`), holding one
/// non-empty line. The secret itself never appears in errors.
pub fn check_secret_file(config_file: &Path, path: &Path, key: &str) -> Result<(), ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        file: config_file.to_path_buf(),
        key: key.to_string(),
        message,
    };
    let meta = std::fs::metadata(path)
        .ok()
        .filter(std::fs::Metadata::is_file)
        .ok_or_else(|| {
            invalid(format!(
                "{} does not exist or is not a file",
                path.display()
            ))
        })?;
    if let Some(mode) = crate::secret::exposed_mode(&meta) {
        return Err(invalid(crate::secret::exposed_problem(path, mode)));
    }
    read_secret(path, key).map(|_| ()).map_err(|e| match e {
        ConfigError::Invalid { message, .. } => invalid(format!("{}: {message}", path.display())),
        other => invalid(other.to_string()),
    })
}

/// Whether `name` is a valid HAProxy backend or server name: letters, digits, `-`, `_`, `.`
/// and `:` only, as HAProxy itself requires. Anything else could split or inject admin-socket
/// commands (`;`, spaces, newlines, `/`), so config validation and the HAProxy actuator both
/// refuse it.
pub fn is_haproxy_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
id = 2
data_dir = "/tmp/x"

[[peers]]
id = 1
raft_addr = "127.0.0.1:7201"
api_addr = "127.0.0.1:7101"
[[peers]]
id = 2
raft_addr = "127.0.0.1:7202"
api_addr = "127.0.0.1:7102"
[[peers]]
id = 3
raft_addr = "127.0.0.1:7203"
api_addr = "127.0.0.1:7103"

[api]
listen = "127.0.0.1:7102"

[raft]
tick_interval = "20ms"
"#;

    /// Validates `text`; a text without `[tls]` has plaintext peers, so that these tests of
    /// other sections need no certificate files (`tls_tests` covers `[tls]`).
    fn check(text: &str) -> Result<Validated, ConfigError> {
        let path = Path::new("test.toml");
        let mut config = parse(path, text)?;
        if !text.contains("[tls]") {
            config.tls.insecure_plaintext_peers = true;
        }
        validate(path, config)
    }

    #[test]
    fn good_config_validates_with_defaults() {
        let v = check(GOOD).expect("valid");
        assert_eq!(v.node_id(), NodeId(2));
        assert_eq!(v.raft_listen.to_string(), "127.0.0.1:7202");
        assert_eq!(v.config.raft.tick_interval, Duration::from_millis(20));
        assert_eq!(v.config.raft.election_ticks, 10);
        assert_eq!(v.config.api.proposal_timeout, Duration::from_secs(5));
        assert_eq!(v.members.len(), 3);
    }

    /// Each bad input and the words its error must contain.
    #[test]
    fn bad_configs_name_the_key_and_problem() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("id = 2", "id = 9", &["node.id", "not among [[peers]]"]),
            ("id = 2", "id = 0", &["node.id", "positive"]),
            (
                "listen = \"127.0.0.1:7102\"",
                "listen = \"127.0.0.1:7102\"\ntls_cert_file = \"api.crt\"",
                &["api.tls_key_file", "set both, or neither"],
            ),
            (
                "listen = \"127.0.0.1:7102\"",
                "listen = \"127.0.0.1:7102\"\ntls_ca_file = \"ca.crt\"",
                &["api.tls_ca_file", "only with api.tls_cert_file"],
            ),
            (
                "listen = \"127.0.0.1:7102\"",
                "listen = \"127.0.0.1:7102\"\ntls_cert_file = \"/nonexistent/api.crt\"\n\
                 tls_key_file = \"/nonexistent/api.key\"",
                &["api.tls_cert_file", "/nonexistent/api.crt"],
            ),
            ("[raft]", "[raft]\nbogus = 1", &["unknown field", "bogus"]),
            (
                "tick_interval = \"20ms\"",
                "tick_interval = \"20ms\"\nelection_ticks = 2",
                &["raft.election_ticks", "greater than raft.heartbeat_ticks"],
            ),
            (
                "raft_addr = \"127.0.0.1:7203\"",
                "raft_addr = \"127.0.0.1:7202\"",
                &["peers[2].raft_addr", "used twice"],
            ),
            (
                "raft_addr = \"127.0.0.1:7201\"",
                "raft_addr = \"localhost\"",
                &["peers[0].raft_addr", "not an IP:port"],
            ),
            ("id = 3", "id = 1", &["peers[2].id", "duplicate"]),
            (
                "listen = \"127.0.0.1:7102\"",
                "listen = \"127.0.0.1:7102\"\ntoken_file = \"/nonexistent/token\"",
                &["api.token_file", "does not exist"],
            ),
            (
                "tick_interval = \"20ms\"",
                "tick_interval = \"soon\"",
                &["tick_interval"],
            ),
            (
                "[raft]",
                "[failover]\nclock_margin = \"200ms\"\n[raft]",
                &[
                    "failover.clock_margin",
                    "timing invariant",
                    "cut-off master",
                ],
            ),
            (
                "[raft]",
                "[failover]\nlease = \"800ms\"\n[raft]",
                &["failover.lease", "too short"],
            ),
            // Below twice the Redis probe timeout (250ms): one slow answer would be "hung".
            (
                "api_addr = \"127.0.0.1:7102\"",
                "api_addr = \"127.0.0.1:7102\"\nredis_addr = \"127.0.0.1:6379\"\n[redis]\n\
                 [failover]\nhung_after = \"400ms\"",
                &[
                    "failover.hung_after",
                    "twice the Redis probe timeout",
                    "`0s`",
                ],
            ),
            // The old check summed reconcile_interval + action_timeout + two pings (950ms
            // here) and accepted this; a cycle of two sides takes up to 2 * action_timeout,
            // so the worst case is max(250ms, 1s) + 200ms.
            (
                "tick_interval = \"20ms\"",
                "tick_interval = \"50ms\"\nping_ticks = 2\n[failover]\n\
                 clock_margin = \"1s\"\nreconcile_interval = \"250ms\"\n\
                 action_timeout = \"500ms\"\n",
                &[
                    "failover.clock_margin",
                    "max(reconcile_interval, 2 * action_timeout)",
                    "1.2s",
                ],
            ),
            (
                "[raft]",
                "[failover]\nredis_min_replicas_max_lag = \"1500ms\"\n[raft]",
                &[
                    "failover.redis_min_replicas_max_lag",
                    "whole number of seconds",
                ],
            ),
            // 1s + the Redis probe interval (300ms by default) is the floor.
            (
                "api_addr = \"127.0.0.1:7102\"",
                "api_addr = \"127.0.0.1:7102\"\nredis_addr = \"127.0.0.1:6379\"\n[redis]\n\
                 [failover]\nlink_stale_after = \"1300ms\"",
                &[
                    "failover.link_stale_after",
                    "too short",
                    "repl-ping-replica-period",
                ],
            ),
            // 1.2s - 2 * 300ms leaves 600ms: fine with 20ms ticks, but not with 250ms pings.
            (
                "tick_interval = \"20ms\"",
                "tick_interval = \"125ms\"\nping_ticks = 2\n[failover]\nlease = \"1200ms\"\n\
                 clock_margin = \"2s\"\n",
                &["failover.lease", "usable", "three ping intervals (750ms)"],
            ),
            // HAProxy without [redis] is fine (see haproxy_backends_resolve); a backend that
            // follows the Redis master is not.
            (
                "[raft]",
                "[haproxy]\nadmin_socket = \"/run/haproxy/admin.sock\"\n\
                 [[haproxy.backends]]\nname = \"be_redis\"\nrole = \"redis-master\"\n\
                 server_prefix = \"redis\"\n[raft]",
                &[
                    "haproxy.backends[0]: ",
                    "needs [redis]",
                    "add [redis] or remove this backend",
                ],
            ),
            (
                "[raft]",
                "[haproxy]\nadmin_socket = \"admin.sock\"\n[raft]",
                &["haproxy.admin_socket", "absolute"],
            ),
        ];
        for (from, to, wants) in cases {
            assert!(GOOD.contains(from), "case pattern {from:?} not in GOOD");
            let text = GOOD.replacen(from, to, 1);
            let err = match check(&text) {
                Ok(_) => panic!("expected an error for {to:?}"),
                Err(e) => e.to_string(),
            };
            assert!(err.starts_with("test.toml: "), "{err}");
            for want in *wants {
                assert!(err.contains(want), "error {err:?} lacks {want:?}");
            }
        }
    }

    const PROBES: &str = r#"
[redis]
[redis.timing]
interval = "250ms"
timeout = "200ms"

[mariadb]
user = "triad_monitor"
socket = "/run/mysqld/mysqld.sock"
datadir = "/var/lib/mysql"

[phpfpm]
address = "unix:/run/php/fpm.sock"

[gluster]
volume = "shop"
bricks = ["10.0.0.1:/b", "10.0.0.2:/b", "10.0.0.3:/b"]
local_brick = "10.0.0.2:/b"
mounts = ["/mnt/shop"]
"#;

    fn with_probes(text: &str) -> String {
        let mut s = text.to_string();
        for i in 1..=3 {
            s = s.replacen(
                &format!("api_addr = \"127.0.0.1:710{i}\"\n"),
                &format!("api_addr = \"127.0.0.1:710{i}\"\nredis_addr = \"127.0.0.1:637{i}\"\n"),
                1,
            );
        }
        s + PROBES
    }

    #[test]
    fn probe_sections_validate_and_resolve_timing() {
        let v = check(&with_probes(GOOD)).expect("valid");
        let r = v.config.redis.as_ref().expect("redis");
        let t = r.effective_timing(&v.config.probes);
        assert_eq!(t.interval, Duration::from_millis(250));
        assert_eq!((t.rise, t.fall), (2, 2));
        let g = v.config.gluster.as_ref().expect("gluster");
        assert_eq!(
            g.volume_timing(&v.config.probes).interval,
            Duration::from_secs(5)
        );
        assert_eq!(v.members[0].redis_addr.map(|a| a.port()), Some(6371));
        assert_eq!(
            parse_fcgi_addr("unix:/run/php/fpm.sock").expect("unix"),
            FcgiAddr::Unix("/run/php/fpm.sock".into())
        );
    }

    /// `[hooks]`: valid as documented; a relative program, an empty command, a webhook that is
    /// no URL or an https one without its CA, and a timeout out of range each name the key.
    #[test]
    fn hooks_validate_and_bad_ones_name_the_key() {
        let hooks = |body: &str| format!("{GOOD}\n[hooks]\n{body}\n");
        let v = check(&hooks(
            "pre = [\"/usr/local/bin/hook\", \"pre\"]\npost = [\"/usr/local/bin/hook\"]\n\
             webhook = \"http://127.0.0.1:9099/triad\"",
        ))
        .expect("valid hooks");
        let h = v.config.hooks.expect("hooks");
        assert_eq!(h.timeout, Duration::from_secs(10));
        assert_eq!(h.max_age, Duration::from_secs(900));
        let cases: &[(&str, &[&str])] = &[
            ("pre = [\"hook.sh\"]", &["hooks.pre[0]", "absolute path"]),
            ("post = []", &["hooks.post", "must not be empty"]),
            ("timeout = \"1ms\"", &["hooks.timeout"]),
            ("webhook = \"ftp://x/y\"", &["hooks.webhook", "not an http:// or https:// URL"]),
            (
                "webhook = \"https://ops.example/triad\"",
                &["hooks.webhook_ca_file", "required for an https:// webhook"],
            ),
            (
                "webhook = \"https://ops.example/triad\"\nwebhook_ca_file = \"/nonexistent/ca.pem\"",
                &["hooks.webhook_ca_file", "does not exist"],
            ),
            (
                "webhook_ca_file = \"/etc/hostname\"",
                &["hooks.webhook_ca_file", "without hooks.webhook"],
            ),
            ("prehook = []", &["unknown field", "prehook"]),
        ];
        for (body, wants) in cases {
            let err = match check(&hooks(body)) {
                Ok(_) => panic!("expected an error for {body:?}"),
                Err(e) => e.to_string(),
            };
            for want in *wants {
                assert!(err.contains(want), "error {err:?} lacks {want:?}");
            }
        }
    }

    #[test]
    fn bad_probe_sections_name_the_key() {
        let good = with_probes(GOOD);
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "timeout = \"200ms\"",
                "timeout = \"300ms\"",
                &["redis.timing.timeout", "below the interval"],
            ),
            (
                "redis_addr = \"127.0.0.1:6372\"\n",
                "",
                &["peers[1].redis_addr", "required"],
            ),
            (
                "local_brick = \"10.0.0.2:/b\"",
                "local_brick = \"10.0.0.9:/b\"",
                &["gluster.local_brick", "not in gluster.bricks"],
            ),
            (
                "\"10.0.0.3:/b\"]",
                "\"nopath\"]",
                &["gluster.bricks[2]", "host:/path"],
            ),
            (
                "address = \"unix:/run/php/fpm.sock\"",
                "address = \"unix:relative\"",
                &["phpfpm.address", "absolute"],
            ),
            (
                "socket = \"/run/mysqld/mysqld.sock\"\n",
                "",
                &["mariadb.socket", "mysql_addr"],
            ),
            ("[redis.timing]", "[redis.timing]\nrise = 0", &["rise"]),
            (
                "user = \"triad_monitor\"",
                "user = \"m\"\npassword_file = \"/nonexistent\"",
                &["mariadb.password_file", "does not exist"],
            ),
            (
                "[phpfpm]",
                "[phpfpm]\nbogus = 1",
                &["unknown field", "bogus"],
            ),
        ];
        for (from, to, wants) in cases {
            assert!(good.contains(from), "case pattern {from:?} not in config");
            let err = match check(&good.replacen(from, to, 1)) {
                Ok(_) => panic!("expected an error for {to:?}"),
                Err(e) => e.to_string(),
            };
            for want in *wants {
                assert!(err.contains(want), "error {err:?} lacks {want:?}");
            }
        }
    }

    /// Absurd numbers (zero, huge, or truncated by a later `as u32`) are config errors naming
    /// the key and the allowed range, never a panic and never accepted. Each case runs under
    /// `catch_unwind` so that one report lists every case that panicked or slipped through.
    #[test]
    fn absurd_numbers_are_rejected_naming_the_key() {
        let good = with_probes(GOOD);
        // Just below u64::MAX seconds: any doubling or sum overflows a Duration.
        let huge = "\"10000000000000000000s\"";
        let max = "\"18446744073709551615s\"";
        let raft = |kv: &str| ("[raft]\n", format!("[raft]\n{kv}\n"));
        let section = |name: &str, kv: &str| ("[raft]\n", format!("[{name}]\n{kv}\n[raft]\n"));
        let cases: Vec<((&str, String), &str)> = vec![
            (
                (
                    "tick_interval = \"20ms\"",
                    format!("tick_interval = {huge}"),
                ),
                "raft.tick_interval",
            ),
            (
                ("tick_interval = \"20ms\"", "tick_interval = \"11s\"".into()),
                "raft.tick_interval",
            ),
            (
                raft("heartbeat_ticks = 4294967296\nelection_ticks = 4294967297"),
                "raft.heartbeat_ticks",
            ),
            (
                raft("heartbeat_ticks = 101\nelection_ticks = 1000"),
                "raft.heartbeat_ticks",
            ),
            (raft("ping_ticks = 0"), "raft.ping_ticks"),
            (raft("ping_ticks = 4294967296"), "raft.ping_ticks"),
            (
                raft("election_ticks = 9223372036854775807"),
                "raft.election_ticks",
            ),
            (raft("election_ticks = 1001"), "raft.election_ticks"),
            (
                raft("snapshot_entries = 9223372036854775807"),
                "raft.snapshot_entries",
            ),
            (
                raft("max_frame_bytes = 9223372036854775807"),
                "raft.max_frame_bytes",
            ),
            (
                (
                    "listen = \"127.0.0.1:7102\"",
                    format!("listen = \"127.0.0.1:7102\"\nproposal_timeout = {huge}"),
                ),
                "api.proposal_timeout",
            ),
            (
                section("probes", &format!("interval = {huge}")),
                "probes.interval",
            ),
            (section("probes", "rise = 4294967295"), "probes.rise"),
            (section("probes", "fall = 1000"), "probes.fall"),
            (
                ("interval = \"250ms\"", format!("interval = {huge}")),
                "redis.timing.interval",
            ),
            (
                section("failover", &format!("lease = {huge}")),
                "failover.lease",
            ),
            (
                section("failover", &format!("clock_margin = {max}")),
                "failover.clock_margin",
            ),
            (
                section("failover", &format!("hold_down = {huge}")),
                "failover.hold_down",
            ),
            (
                section("failover", &format!("freshness = {huge}")),
                "failover.freshness",
            ),
            (
                section("failover", &format!("reconcile_interval = {huge}")),
                "failover.reconcile_interval",
            ),
            (
                section("failover", "reconcile_interval = \"61s\""),
                "failover.reconcile_interval",
            ),
            (
                section("failover", &format!("action_timeout = {max}")),
                "failover.action_timeout",
            ),
            (
                section("failover", &format!("link_stale_after = {huge}")),
                "failover.link_stale_after",
            ),
            (
                section("failover", &format!("hung_after = {huge}")),
                "failover.hung_after",
            ),
            (
                section(
                    "failover",
                    &format!(
                        "redis_min_replicas_to_write = 0\nredis_min_replicas_max_lag = {huge}"
                    ),
                ),
                "failover.redis_min_replicas_max_lag",
            ),
        ];
        let mut bad = vec![];
        for ((from, to), key) in &cases {
            assert!(good.contains(from), "case pattern {from:?} not in config");
            let text = good.replacen(from, to, 1);
            let outcome = std::panic::catch_unwind(|| check(&text).map(|_| ()));
            match outcome {
                Err(_) => bad.push(format!("{key}: panicked on {to:?}")),
                Ok(Ok(())) => bad.push(format!("{key}: accepted {to:?}")),
                Ok(Err(e)) => {
                    let e = e.to_string();
                    if !e.contains(&format!("{key}: ")) || !e.contains("allowed") {
                        bad.push(format!("{key}: wrong error for {to:?}: {e}"));
                    }
                }
            }
        }
        assert!(
            bad.is_empty(),
            "{} cases failed:\n{}",
            bad.len(),
            bad.join("\n")
        );
    }

    const HAPROXY: &str = "\n[haproxy]\nadmin_socket = \"/run/haproxy/admin.sock\"\n";

    fn backend(name: &str, role: &str, prefix: &str) -> String {
        format!(
            "[[haproxy.backends]]\nname = \"{name}\"\nrole = \"{role}\"\nserver_prefix = \
             \"{prefix}\"\n"
        )
    }

    /// With and without [redis], backends omitted, empty or written: the backends that result
    /// (name, role, node 3's server).
    #[test]
    fn haproxy_backends_resolve() {
        let with_redis = with_probes(GOOD);
        let be = |name: &str| (name.to_string(), BackendRole::RedisMaster);
        type Backends = Vec<(String, BackendRole)>;
        let cases: Vec<(&str, String, Backends, Option<&str>)> = vec![
            (
                "omitted with [redis]: the default",
                format!("{with_redis}{HAPROXY}"),
                vec![be("be_redis")],
                Some("redis3"),
            ),
            (
                "omitted without [redis]: none",
                format!("{GOOD}{HAPROXY}"),
                vec![],
                None,
            ),
            (
                "explicitly empty with [redis]: none",
                format!("{with_redis}{HAPROXY}backends = []\n"),
                vec![],
                None,
            ),
            (
                "written",
                format!(
                    "{with_redis}{HAPROXY}{}",
                    backend("be_cache", "redis-master", "cache-")
                ),
                vec![be("be_cache")],
                Some("cache-3"),
            ),
        ];
        for (what, text, want, server3) in cases {
            let v = check(&text).unwrap_or_else(|e| panic!("{what}: {e}"));
            let h = v.config.haproxy.as_ref().expect("haproxy");
            let got: Backends = h
                .backends()
                .iter()
                .map(|b| (b.name.clone(), b.role))
                .collect();
            assert_eq!(got, want, "{what}");
            assert_eq!(
                h.backend(BackendRole::RedisMaster)
                    .map(|b| b.server(NodeId(3)))
                    .as_deref(),
                server3,
                "{what}"
            );
        }
    }

    /// Each bad `[haproxy]` (appended to a config with [redis]) and the words its error must
    /// contain.
    #[test]
    fn bad_haproxy_backends_name_the_key_and_say_what_to_do() {
        let good = format!("{}{HAPROXY}", with_probes(GOOD));
        let redis = backend("be_redis", "redis-master", "redis");
        let cases: Vec<(String, &[&str])> = vec![
            (
                backend("be_web", "web-farm", "php"),
                &[
                    "haproxy.backends[0].role",
                    "unknown role \"web-farm\"",
                    "known roles: redis-master, galera-writer, web-pool",
                ],
            ),
            (
                backend("be_web", "web-pool", "php"),
                &[
                    "haproxy.backends[0]",
                    "the web-pool backend \"be_web\" needs [web]",
                ],
            ),
            (
                format!("{redis}{}", backend("be_redis", "redis-master", "r")),
                &["haproxy.backends[1].name", "already haproxy.backends[0]"],
            ),
            (
                format!("{redis}{}", backend("be_redis2", "redis-master", "r")),
                &[
                    "haproxy.backends[1].role",
                    "redis-master already has a backend",
                    "at most one backend per role",
                ],
            ),
            (
                backend("be_redis;disable server x", "redis-master", "redis"),
                &[
                    "haproxy.backends[0].name",
                    "not a HAProxy name",
                    "letters, digits",
                ],
            ),
            (
                backend("be_redis", "redis-master", "redis 1"),
                &["haproxy.backends[0].server_prefix", "not a HAProxy name"],
            ),
            (
                "[[haproxy.backends]]\nname = \"be_redis\"\nrole = \"redis-master\"\n".into(),
                &["missing field `server_prefix`"],
            ),
            (
                "redis_backend = \"be_redis\"\n".into(),
                &[
                    "unknown field `redis_backend`",
                    "hint: ",
                    "[[haproxy.backends]]",
                    "role = \"redis-master\"",
                ],
            ),
            (
                "redis_server_prefix = \"redis\"\n".into(),
                &[
                    "unknown field `redis_server_prefix`",
                    "server_prefix in the [[haproxy.backends]] table",
                ],
            ),
        ];
        for (add, wants) in cases {
            let err = match check(&format!("{good}{add}")) {
                Ok(_) => panic!("expected an error for {add:?}"),
                Err(e) => e.to_string(),
            };
            assert!(err.starts_with("test.toml: "), "{err}");
            for want in wants {
                assert!(err.contains(want), "error {err:?} lacks {want:?}");
            }
        }
    }

    #[test]
    fn backend_roles_round_trip_through_their_names() {
        for &role in BackendRole::ALL {
            assert_eq!(BackendRole::parse(role.as_str()), Some(role));
            let json = serde_json::to_string(&role).expect("encode");
            assert_eq!(
                json,
                format!("\"{}\"", role.as_str()),
                "serde and as_str agree"
            );
        }
        for name in ServiceName::ALL {
            assert_eq!(ServiceName::parse(name.as_str()), Some(name));
            let json = serde_json::to_string(&name).expect("encode");
            assert_eq!(
                json,
                format!("\"{}\"", name.as_str()),
                "serde and as_str agree"
            );
        }
        // Where a probe and a service control name the same thing, they name it alike.
        for (probe, control) in [
            (crate::observation::Service::Mariadb, ServiceName::Mariadb),
            (crate::observation::Service::Redis, ServiceName::Redis),
            (crate::observation::Service::Phpfpm, ServiceName::Phpfpm),
        ] {
            assert_eq!(probe.as_str(), control.as_str());
        }
    }

    const PROCESS: &str = r#"
[services]
control = "process"
stop_timeout = "5s"
[services.process.redis]
argv = ["/usr/bin/redis-server", "/etc/redis/redis.conf"]
pidfile = "/run/triad/redis.pid"
log = "/var/log/triad/redis.log"
[services.process.mariadb]
argv = ["/usr/sbin/mariadbd"]
rejoin_args = ["--wsrep_start_position={position}"]
bootstrap_args = ["--wsrep-new-cluster"]
pidfile = "/run/triad/mariadb.pid"
log = "/var/log/triad/mariadb.log"
[services.process.phpfpm]
argv = ["/usr/sbin/php-fpm8.2", "--nodaemonize"]
pidfile = "/run/triad/phpfpm.pid"
log = "/var/log/triad/phpfpm.log"
"#;

    /// `[services]` as written and the control, stop timeout and units or specs that result.
    #[test]
    fn services_resolve() {
        let v = check(GOOD).expect("omitted");
        let s = &v.config.services;
        assert_eq!(s.control, ServiceControlKind::Systemd);
        assert_eq!(s.stop_timeout, Duration::from_secs(30));
        let units = s.systemd_units();
        assert_eq!(
            units.values().map(String::as_str).collect::<Vec<_>>(),
            [
                "glusterd.service",
                "haproxy.service",
                "mariadb.service",
                "php8.2-fpm.service",
                "redis-server.service"
            ]
        );
        let v = check(&format!(
            "{GOOD}[services]\n[services.units]\nredis = \"redis-server@shop.service\"\n"
        ))
        .expect("a unit overridden");
        let units = v.config.services.systemd_units();
        assert_eq!(units["redis"], "redis-server@shop.service");
        assert_eq!(
            units["mariadb"], "mariadb.service",
            "the others keep their default"
        );

        let v = check(&format!("{}{PROCESS}", with_probes(GOOD))).expect("process");
        let s = &v.config.services;
        assert_eq!(s.control, ServiceControlKind::Process);
        assert_eq!(s.stop_timeout, Duration::from_secs(5));
        assert_eq!(s.process["mariadb"].bootstrap_args, ["--wsrep-new-cluster"]);
        assert_eq!(
            v.config.managed_services(),
            [
                ServiceName::Mariadb,
                ServiceName::Redis,
                ServiceName::Phpfpm
            ]
        );

        let v = check(&format!(
            "{}[services]\ncontrol = \"none\"\n",
            with_probes(GOOD)
        ))
        .expect("none");
        assert_eq!(v.config.services.control, ServiceControlKind::None);
    }

    const SYSTEMD: &str = r#"
[services]
control = "systemd"
[services.units]
redis = "redis-server.service"
"#;

    /// Each bad `[services]` (an edit of PROCESS or SYSTEMD after a config with every probe
    /// section) and the words its error must contain.
    #[test]
    fn bad_services_name_the_key_and_say_what_to_do() {
        let cases: &[(&str, &str, &str, &[&str])] = &[
            (
                PROCESS,
                "[services.process.phpfpm]",
                "[services.process.nginx]",
                &[
                    "services.process.nginx",
                    "unknown service \"nginx\"",
                    "known services: mariadb, redis, phpfpm, haproxy, glusterd",
                ],
            ),
            (
                PROCESS,
                "argv = [\"/usr/sbin/php-fpm8.2\", \"--nodaemonize\"]",
                "argv = []",
                &["services.process.phpfpm.argv", "must not be empty"],
            ),
            (
                PROCESS,
                "argv = [\"/usr/sbin/php-fpm8.2\", \"--nodaemonize\"]",
                "argv = [\"php-fpm8.2\"]",
                &["services.process.phpfpm.argv[0]", "absolute path"],
            ),
            (
                PROCESS,
                "pidfile = \"/run/triad/phpfpm.pid\"",
                "pidfile = \"phpfpm.pid\"",
                &["services.process.phpfpm.pidfile", "absolute"],
            ),
            (
                PROCESS,
                "pidfile = \"/run/triad/phpfpm.pid\"",
                "pidfile = \"/run/triad/redis.pid\"",
                &[
                    "services.process.redis.pidfile",
                    "also services.process.phpfpm.pidfile",
                    "its own",
                ],
            ),
            (
                PROCESS,
                "log = \"/var/log/triad/phpfpm.log\"",
                "log = \"phpfpm.log\"",
                &["services.process.phpfpm.log", "absolute"],
            ),
            (
                PROCESS,
                "[services.process.phpfpm]",
                "[services.process.haproxy]",
                &[
                    "services.process.phpfpm: ",
                    "required with services.control = \"process\" because [phpfpm]",
                    "add a [services.process.phpfpm] table",
                ],
            ),
            (
                PROCESS,
                "control = \"process\"",
                "control = \"systemd\"",
                &[
                    "services.process.mariadb",
                    "only used with services.control = \"process\" (it is \"systemd\")",
                    "remove [services.process] or set",
                ],
            ),
            (
                PROCESS,
                "control = \"process\"",
                "control = \"runit\"",
                &["unknown variant `runit`", "systemd", "process", "none"],
            ),
            (
                PROCESS,
                "stop_timeout = \"5s\"",
                "stop_timeout = \"2h\"",
                &["services.stop_timeout", "allowed"],
            ),
            (
                PROCESS,
                "log = \"/var/log/triad/redis.log\"",
                "log = \"/var/log/triad/redis.log\"\nuser = \"redis\"",
                &["unknown field `user`"],
            ),
            (
                SYSTEMD,
                "control = \"systemd\"",
                "control = \"none\"",
                &[
                    "services.units.redis",
                    "only used with services.control = \"systemd\"",
                ],
            ),
            (
                SYSTEMD,
                "redis = \"redis-server.service\"",
                "redis = \"--now\"",
                &[
                    "services.units.redis",
                    "not a systemd unit name",
                    "for example \"redis-server.service\"",
                ],
            ),
            (
                SYSTEMD,
                "redis = \"redis-server.service\"",
                "redis = \"redis server\"",
                &["services.units.redis", "not a systemd unit name"],
            ),
            (
                SYSTEMD,
                "redis = \"redis-server.service\"",
                "nginx = \"nginx.service\"",
                &["services.units.nginx", "unknown service"],
            ),
        ];
        for (base, from, to, wants) in cases {
            assert!(base.contains(from), "case pattern {from:?} not in config");
            let text = format!("{}{}", with_probes(GOOD), base.replacen(from, to, 1));
            let err = match check(&text) {
                Ok(_) => panic!("expected an error for {to:?}"),
                Err(e) => e.to_string(),
            };
            for want in *wants {
                assert!(err.contains(want), "error {err:?} lacks {want:?}");
            }
        }
    }

    /// `[galera]`: valid with its defaults and explained; each problem named by its key.
    #[test]
    fn galera_section_validates_and_is_explained() {
        let base = with_probes(GOOD);
        let v = check(&format!("{base}\n[galera]\n")).expect("valid");
        let g = v.config.galera.as_ref().expect("galera");
        assert!(g.rejoin);
        assert_eq!(g.settings().open_after_stopped_ms, 1000);
        assert_eq!(g.auto_increment_increment, 3);
        assert_eq!(g.join_retrans_period, Duration::from_millis(100));
        let kept = check(&format!(
            "{base}\n[galera]\njoin_retrans_period = \"0s\"\nkeepalive_period = \"0s\"\n"
        ))
        .expect("0s leaves Galera's setting alone");
        let text = Explanation::of(&kept).lines().join("\n");
        assert!(
            text.contains("galera EVS timing: left as each node configures it"),
            "explanation:\n{text}"
        );
        let off = check(&format!("{base}\n[galera]\nauto_increment_increment = 0\n"))
            .expect("0 turns the check off");
        let text = Explanation::of(&off).lines().join("\n");
        assert!(
            text.contains("galera auto-increment: not checked"),
            "explanation:\n{text}"
        );
        let text = Explanation::of(&v).lines().join("\n");
        for want in [
            "used by the Galera recovery",
            "galera recovery: a fallen mariadbd is restarted from its position while a \
             majority is Primary (back-off from 5s, at most 6 per hour)",
            "a bootstrapped node that falls again before anyone joined it: the next outage \
             after 10s",
            "--wsrep-recover reads /etc/mysql/my.cnf",
            "galera auto-increment: every node increment 3 with its own offset in 1..=3, \
             wsrep_auto_increment_control OFF; a serving node that differs is degraded",
            "galera EVS timing: evs.join_retrans_period 100ms, evs.keepalive_period 100ms, set \
             on each node by its agent",
        ] {
            assert!(text.contains(want), "explanation lacks {want:?}:\n{text}");
        }
        let cases: &[(&str, &str, &str)] = &[
            ("datadir = \"/var/lib/mysql\"\n", "", "mariadb.datadir"),
            (
                "[galera]\n",
                "[galera]\nrestarts_per_hour = 0\n",
                "galera.restarts_per_hour",
            ),
            (
                "[galera]\n",
                "[galera]\nfreshness = \"100ms\"\n",
                "galera.freshness",
            ),
            (
                "[galera]\n",
                "[galera]\nauto_increment_increment = 65536\n",
                "galera.auto_increment_increment",
            ),
            (
                "[galera]\n",
                "[galera]\nadmin_user = \" \"\n",
                "galera.admin_user",
            ),
            (
                "[galera]\n",
                "[galera]\nrecover_timeout = \"9999999h\"\n",
                "galera.recover_timeout",
            ),
            (
                "[galera]\n",
                "[galera]\nopen_after_stopped = \"20s\"\nrebootstrap_after = \"10s\"\n",
                "galera.rebootstrap_after",
            ),
            (
                "[galera]\n",
                "[galera]\njoin_retrans_period = \"5ms\"\n",
                "galera.join_retrans_period",
            ),
            (
                "[galera]\n",
                "[galera]\njoin_retrans_period = \"11s\"\n",
                "galera.join_retrans_period",
            ),
            (
                "[galera]\n",
                "[galera]\nkeepalive_period = \"1ms\"\n",
                "galera.keepalive_period",
            ),
            ("[galera]\n", "[galera]\nbogus = 1\n", "bogus"),
            (
                "[galera]\n",
                "[galera]\nrecover_unit = \"-x.service\"\n",
                "galera.recover_unit",
            ),
            (
                "[galera]\n",
                "[log]\nlevel = \"triad=loud\"\n[galera]\n",
                "log.level",
            ),
            (
                "[galera]\n",
                "[services]\ncontrol = \"none\"\n[galera]\n",
                "galera.rejoin",
            ),
        ];
        for (from, to, key) in cases {
            let text = format!("{base}\n[galera]\n").replacen(from, to, 1);
            let err = match check(&text) {
                Ok(_) => panic!("expected an error naming {key}"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(key), "error {err:?} lacks {key:?}");
        }
        // Without [mariadb] at all.
        let err = check(&format!("{GOOD}\n[galera]\n")).expect_err("no mariadb");
        assert!(err.to_string().contains("needs [mariadb]"), "{err}");
    }

    /// check-config's explanation of a full configuration, line by line, and of an empty one.
    #[test]
    fn explanation_says_what_the_agent_will_do() {
        let full = format!(
            "{}{HAPROXY}state_file = \"/var/lib/haproxy/server-state\"\n",
            with_probes(GOOD)
        );
        let lines = Explanation::of(&check(&full).expect("valid")).lines();
        let text = lines.join("\n");
        for want in [
            "cluster triad: members n1, n2, n3",
            "probe redis: on n1, n2, n3 every 250ms (timeout 200ms, rise 2, fall 2)",
            "probe mariadb: on n2 every 500ms",
            "probe phpfpm: unix:/run/php/fpm.sock on n2 every 1s",
            "probe gluster: shop on n2 every 5s",
            "probe gluster_mount: /mnt/shop on n2 every 1s",
            "redis failover: automatic (hold-down 30s",
            "haproxy: admin socket /run/haproxy/admin.sock, state saved to \
             /var/lib/haproxy/server-state",
            "haproxy backend be_redis (redis-master): only the committed Redis master in \
             service (servers redis1..redis3)",
            "service control: systemd (stop timeout 30s): glusterd = glusterd.service, ",
            "mariadb = mariadb.service, phpfpm = php8.2-fpm.service, redis = \
             redis-server.service; not acted on (no [galera])",
            "galera recovery: off (no [galera]; MariaDB is only probed)",
            "raft timing: tick 20ms, election timeout 200ms to 400ms, ping every 80ms",
            "failover timing: lease 1s 400ms, clock margin 1s, fencing bound 600ms",
            "silent-path promotion 2s 400ms after the old master's last lease renewal",
        ] {
            assert!(text.contains(want), "explanation lacks {want:?}:\n{text}");
        }
        // mariadb has no peer addresses here, so only this node's server is probed.
        assert!(!text.contains("probe mariadb: on n1"), "{text}");

        let text = Explanation::of(&check(GOOD).expect("valid"))
            .lines()
            .join("\n");
        for want in [
            "probes: none",
            "redis failover: off (no [redis])",
            "haproxy: not managed (no [haproxy])",
        ] {
            assert!(text.contains(want), "explanation lacks {want:?}:\n{text}");
        }
        assert!(!text.contains("failover timing"), "{text}");

        let text = Explanation::of(
            &check(&format!(
                "{}[services]\ncontrol = \"none\"\n[failover]\nautomatic = false\n",
                with_probes(GOOD)
            ))
            .expect("valid"),
        )
        .lines()
        .join("\n");
        assert!(text.contains("redis failover: manual"), "{text}");
        assert!(text.contains("service control: none"), "{text}");
    }

    #[test]
    fn explanation_as_json_carries_the_same_facts() {
        let full = format!("{}{HAPROXY}", with_probes(GOOD));
        let e = Explanation::of(&check(&full).expect("valid"));
        let j = serde_json::to_value(&e).expect("encode");
        assert_eq!(j["valid"], true);
        assert_eq!(j["node"], 2);
        assert_eq!(j["members"], serde_json::json!([1, 2, 3]));
        assert_eq!(j["redis_failover"]["mode"], "automatic");
        assert_eq!(j["haproxy"]["backends"][0]["name"], "be_redis");
        assert_eq!(j["haproxy"]["backends"][0]["role"], "redis-master");
        assert_eq!(
            j["haproxy"]["backends"][0]["servers"],
            serde_json::json!(["redis1", "redis2", "redis3"])
        );
        assert_eq!(j["service_control"]["kind"], "systemd");
        assert_eq!(j["service_control"]["active"], false);
        assert_eq!(j["timing"]["lease_ms"], 1400);
        assert_eq!(j["timing"]["fencing_bound_ms"], 600);
        assert_eq!(j["timing"]["silent_promotion_ms"], 2400);
        assert_eq!(j["probes"][0]["service"], "redis");
        assert_eq!(j["probes"][0]["interval_ms"], 250);
    }

    #[test]
    fn shipped_example_config_is_valid() {
        use std::os::unix::fs::PermissionsExt as _;
        // Installed as an operator would: /etc/triad/ is a directory of its own here, with
        // the secret files and node 1's certificates the template names.
        let etc = tempfile::tempdir().expect("tempdir");
        let text = include_str!("../../systemd/triad.toml.example")
            .replace("/etc/triad/", &format!("{}/", etc.path().display()));
        for secret in [
            "token",
            "redis-password",
            "mariadb-password",
            "restic.pass",
            "mysql-backup.pass",
        ] {
            let f = etc.path().join(secret);
            std::fs::write(&f, "secret\n").expect("write");
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let tls = etc.path().join("tls");
        crate::tls::init_ca(&tls, "shop-prod", 1).expect("CA");
        crate::tls::issue(&tls, &tls, "shop-prod", NodeId(1), 1).expect("certificate");
        let path = etc.path().join("triad.toml");
        let config = parse(&path, &text).expect("example parses");
        let v = validate(&path, config).expect("example validates");
        assert_eq!(v.members.len(), 3);
        // A complete template: every service is managed.
        let c = &v.config;
        assert!(c.redis.is_some() && c.mariadb.is_some() && c.phpfpm.is_some());
        assert!(c.gluster.is_some() && c.galera.is_some() && c.backup.is_some());
        assert!(c.web.is_some());
        let roles: Vec<BackendRole> = c
            .haproxy
            .as_ref()
            .map(|h| h.backends().iter().map(|b| b.role).collect())
            .unwrap_or_default();
        assert_eq!(roles, BackendRole::ALL, "one backend per role");
        assert!(!c.tls.insecure_plaintext_peers);
        // The units it spells out are the defaults.
        assert!(!v.config.services.units.is_empty());
        for (name, unit) in &v.config.services.units {
            let default = ServiceName::parse(name).map(ServiceName::default_unit);
            assert_eq!(default, Some(unit.as_str()), "services.units.{name}");
        }
    }

    #[test]
    fn empty_token_file_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "\n  \n").expect("write");
        let err = read_token(&path).expect_err("empty");
        assert!(err.to_string().contains("token file is empty"));
        std::fs::write(&path, " secret \n").expect("write");
        assert_eq!(read_token(&path).expect("token"), "secret");
    }
}

#[cfg(test)]
mod backup_tests {
    use super::*;

    /// Validates `text`; a text without `[tls]` has plaintext peers, so that these tests of
    /// other sections need no certificate files (`tls_tests` covers `[tls]`).
    fn check(text: &str) -> Result<Validated, ConfigError> {
        let path = Path::new("test.toml");
        let mut config = parse(path, text)?;
        if !text.contains("[tls]") {
            config.tls.insecure_plaintext_peers = true;
        }
        validate(path, config)
    }

    const BASE: &str = r#"
[node]
id = 1
data_dir = "/tmp/x"

[[peers]]
id = 1
raft_addr = "127.0.0.1:7201"
api_addr = "127.0.0.1:7101"

[api]
listen = "127.0.0.1:7101"
"#;

    /// `[backup]` validates with its defaults, and each bad value names its key and the fix.
    #[test]
    fn backup_section_validates_and_bad_values_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pass = dir.path().join("restic.pass");
        std::fs::write(&pass, "secret\n").expect("write");
        let empty = dir.path().join("empty.pass");
        std::fs::write(&empty, "\n").expect("write");
        // Secret files are readable by their owner only (see `check_secret_file`).
        for f in [&pass, &empty] {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let section = |extra: &str| {
            format!(
                "{BASE}\n[backup]\nrepository = \"/srv/restic\"\npassword_file = {:?}\n{extra}",
                pass.display().to_string()
            )
        };
        let v = check(&section("")).expect("valid with defaults");
        let b = v.config.backup.as_ref().expect("backup");
        assert_eq!(b.schedule, "0 */6 * * *");
        assert_eq!(b.max_duration, Duration::from_secs(7200));
        assert!(Explanation::of(&v)
            .lines()
            .iter()
            .any(|l| l.starts_with("backup `0 */6 * * *` (UTC)")));
        let cases: Vec<(String, &str)> = vec![
            (
                section("schedule = \"0 */6 * *\""),
                "backup.schedule: `0 */6 * *` has 4 fields",
            ),
            (section("schedule = \"0 25 * * *\""), "backup.schedule"),
            (
                section("schedule = \"0 0 0 1 1 * 2001\""),
                "backup.schedule: `0 0 0 1 1 * 2001` never fires again",
            ),
            (
                format!(
                    "{BASE}\n[backup]\nrepository = \"/r\"\npassword_file = {:?}\n",
                    empty.display().to_string()
                ),
                "is empty; write the repository's password in it",
            ),
            (
                format!("{BASE}\n[backup]\nrepository = \"/r\"\npassword_file = \"/nope/x\"\n"),
                "backup.password_file: cannot read /nope/x",
            ),
            (
                section("").replace("\"/srv/restic\"", "\" \""),
                "backup.repository",
            ),
            (
                section("max_duration = \"10s\""),
                "backup.max_duration: 10s is outside 1m to 1day",
            ),
            (section("silence = \"1s\""), "backup.silence"),
            (
                section("files = [\"var\"]"),
                "backup.files[0]: var must be absolute",
            ),
            (
                section("[backup.retention]\nkeep_within_weekly = \"6w\""),
                "`6w` is not a restic duration",
            ),
            (section("unknown = 1"), "unknown field `unknown`"),
        ];
        for (text, want) in cases {
            let err = check(&text)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(want), "want `{want}`, got `{err}`");
        }
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    const BASE: &str = "[node]\nid = 1\ndata_dir = \"data\"\n[[peers]]\nid = 1\n\
                        raft_addr = \"127.0.0.1:7201\"\napi_addr = \"127.0.0.1:7101\"\n\
                        redis_addr = \"127.0.0.1:6379\"\n[tls]\ninsecure_plaintext_peers = true\n";

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("{e}"));
        p
    }

    /// Secret files are read at validation (so `check-config` finds what `run` would refuse),
    /// must be readable by their owner only, and relative paths start at the config file's
    /// directory, for every secret alike.
    #[test]
    fn secret_files_are_checked_and_found_beside_the_config() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = d.path();
        let config = |api: &str, redis: &str| {
            let text =
                format!("{BASE}[api]\nlisten = \"127.0.0.1:7101\"\n{api}\n[redis]\n{redis}\n");
            write(dir, "triad.toml", &text, 0o644)
        };
        let err = |path: &Path| {
            load(path, None)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        write(dir, "token", "s3cret\n", 0o600);
        write(dir, "redis.pass", "hunter2\n", 0o600);
        // Relative to the config file, whatever the working directory.
        let ok = config("token_file = \"token\"", "password_file = \"redis.pass\"");
        let v = load(&ok, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.config.api.token_file, Some(dir.join("token")));
        assert_eq!(
            v.config
                .redis
                .as_ref()
                .and_then(|r| r.password_file.clone()),
            Some(dir.join("redis.pass"))
        );
        // Readable by others: refused with the fix, for the token and the Redis password.
        write(dir, "token", "s3cret\n", 0o644);
        let e = err(&ok);
        assert!(
            e.contains("api.token_file")
                && e.contains("mode 644")
                && e.contains(&format!("chmod 600 {}", dir.join("token").display())),
            "{e}"
        );
        write(dir, "token", "s3cret\n", 0o600);
        write(dir, "redis.pass", "hunter2\n", 0o640);
        let e = err(&ok);
        assert!(
            e.contains("redis.password_file") && e.contains("chmod 600"),
            "{e}"
        );
        // Empty: refused at validation, not only when the agent starts.
        write(dir, "redis.pass", "hunter2\n", 0o600);
        write(dir, "token", "\n", 0o600);
        let e = err(&ok);
        assert!(
            e.contains("api.token_file") && e.contains("is empty"),
            "{e}"
        );
        // The secret never appears in an error.
        write(dir, "token", "s3cret\n", 0o666);
        assert!(!err(&ok).contains("s3cret"));
    }
}

#[cfg(test)]
mod safety_timing_tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// What two nodes' timings differ in, key by key, both ways, sorted.
    #[test]
    fn differences_name_the_keys_and_both_values() {
        let ours = map(&[("failover.lease", "2s"), ("raft.election_ticks", "10")]);
        let cases: [(BTreeMap<String, String>, &[&str]); 4] = [
            (ours.clone(), &[]),
            (
                map(&[("failover.lease", "3s"), ("raft.election_ticks", "10")]),
                &["failover.lease: ours 2s, theirs 3s"],
            ),
            (
                map(&[("raft.election_ticks", "10")]),
                &["failover.lease: ours 2s, theirs (none)"],
            ),
            (
                map(&[
                    ("failover.lease", "2s"),
                    ("raft.election_ticks", "12"),
                    ("raft.tick_interval", "50ms"),
                ]),
                &[
                    "raft.election_ticks: ours 10, theirs 12",
                    "raft.tick_interval: ours (none), theirs 50ms",
                ],
            ),
        ];
        for (theirs, want) in cases {
            assert_eq!(safety_timings_diff(&ours, &theirs), want, "{theirs:?}");
        }
    }

    /// Every key the safety argument names is exchanged, and local pacing is not.
    #[test]
    fn the_exchanged_timings_are_the_safety_ones() {
        let text = "[node]\nid = 1\ndata_dir = \"/tmp/x\"\n[[peers]]\nid = 1\n\
                    raft_addr = \"127.0.0.1:7201\"\napi_addr = \"127.0.0.1:7101\"\n\
                    [api]\nlisten = \"127.0.0.1:7101\"\n";
        let c = parse(Path::new("t.toml"), text).unwrap_or_else(|e| panic!("{e}"));
        let t = safety_timings(&c);
        assert_eq!(
            t.get("raft.tick_interval").map(String::as_str),
            Some("50ms")
        );
        for key in [
            "failover.lease",
            "failover.clock_margin",
            "raft.election_ticks",
        ] {
            assert!(t.contains_key(key), "{key}: {t:?}");
        }
        for key in ["failover.reconcile_interval", "raft.snapshot_entries"] {
            assert!(!t.contains_key(key), "{key}: {t:?}");
        }
    }
}
