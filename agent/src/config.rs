//! The agent's configuration: a TOML file, parsed strictly and then validated.
//!
//! Parsing rejects unknown keys (`deny_unknown_fields`) so a typo never silently falls back to
//! a default. Validation runs after parsing and checks what types cannot: the node's own id is
//! among the peers, ids and addresses are unique and parse, the Raft timing is coherent, and
//! referenced files exist. Every error names the file, the key path and what is wrong, and
//! `triad check-config` exits 64 (EX_USAGE) on any of them.
//!
//! Caveats: membership is fixed by this file (no runtime membership change yet); a node whose
//! stored Raft membership differs from the configured peers refuses to start.

use std::collections::BTreeSet;
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
    /// How long a mutating request waits for its command to be committed and applied on this
    /// node before answering 503. Default `5s`.
    #[serde(default = "default_proposal_timeout", with = "humantime_serde")]
    pub proposal_timeout: Duration,
}

/// `[raft]`: consensus timing. The election timeout is `tick_interval * election_ticks`
/// (randomised by Raft between one and two times that).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RaftSection {
    /// Period of one Raft tick. Default `50ms`.
    #[serde(default = "default_tick", with = "humantime_serde")]
    pub tick_interval: Duration,
    /// Ticks without a leader's heartbeat before a follower campaigns. Must exceed
    /// `heartbeat_ticks`. Default 10.
    #[serde(default = "default_election_ticks")]
    pub election_ticks: usize,
    /// Ticks between the leader's heartbeats. At least 1. Default 2.
    #[serde(default = "default_heartbeat_ticks")]
    pub heartbeat_ticks: usize,
    /// Take a snapshot of the cluster state and compact the log once this many entries were
    /// applied since the last snapshot. At least 1. Default 1000.
    #[serde(default = "default_snapshot_entries")]
    pub snapshot_entries: u64,
    /// Largest peer frame accepted, in bytes; a larger one closes the connection. Default 8 MiB.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
}

impl Default for RaftSection {
    fn default() -> Self {
        RaftSection {
            tick_interval: default_tick(),
            election_ticks: default_election_ticks(),
            heartbeat_ticks: default_heartbeat_ticks(),
            snapshot_entries: default_snapshot_entries(),
            max_frame_bytes: default_max_frame_bytes(),
        }
    }
}

fn default_cluster_name() -> String {
    "triad".to_string()
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
fn default_snapshot_entries() -> u64 {
    1000
}
fn default_max_frame_bytes() -> usize {
    8 * 1024 * 1024
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
}

impl Validated {
    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.config.node.id
    }
}

/// Reads, parses and validates a configuration file. `data_dir_override` replaces
/// `node.data_dir` before validation.
pub fn load(path: &Path, data_dir_override: Option<&Path>) -> Result<Validated, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    let mut config = parse(path, &text)?;
    // Relative paths in the file are relative to the file's directory, not the working one.
    let base = path.parent().unwrap_or(Path::new("."));
    if config.node.data_dir.is_relative() {
        config.node.data_dir = base.join(&config.node.data_dir);
    }
    if let Some(tf) = &config.api.token_file {
        if tf.is_relative() {
            config.api.token_file = Some(base.join(tf));
        }
    }
    if let Some(dir) = data_dir_override {
        config.node.data_dir = dir.to_path_buf();
    }
    validate(path, config)
}

/// Parses TOML text into a [`Config`] without validating it.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    toml::from_str(text).map_err(|err| ConfigError::Parse {
        file: path.to_path_buf(),
        message: err.to_string().trim_end().to_string(),
    })
}

/// Validates a parsed configuration; see the module docs for the rules.
pub fn validate(path: &Path, config: Config) -> Result<Validated, ConfigError> {
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
        members.push(Member {
            id: peer.id,
            raft_addr,
            api_addr,
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
        if !token_file.is_file() {
            return Err(invalid(
                "api.token_file",
                format!("{} does not exist or is not a file", token_file.display()),
            ));
        }
    }
    if config.api.proposal_timeout.is_zero() {
        return Err(invalid(
            "api.proposal_timeout",
            "must be greater than zero".into(),
        ));
    }
    let raft = &config.raft;
    if raft.tick_interval < Duration::from_millis(1) {
        return Err(invalid("raft.tick_interval", "must be at least 1ms".into()));
    }
    if raft.heartbeat_ticks == 0 {
        return Err(invalid("raft.heartbeat_ticks", "must be at least 1".into()));
    }
    if raft.election_ticks <= raft.heartbeat_ticks {
        return Err(invalid(
            "raft.election_ticks",
            format!(
                "must be greater than raft.heartbeat_ticks ({} <= {})",
                raft.election_ticks, raft.heartbeat_ticks
            ),
        ));
    }
    if raft.snapshot_entries == 0 {
        return Err(invalid(
            "raft.snapshot_entries",
            "must be at least 1".into(),
        ));
    }
    if raft.max_frame_bytes < 64 * 1024 {
        return Err(invalid(
            "raft.max_frame_bytes",
            "must be at least 65536".into(),
        ));
    }
    Ok(Validated {
        file: path.to_path_buf(),
        config,
        api_listen,
        raft_listen,
        members,
    })
}

/// Reads a bearer token file: one non-empty line, surrounding whitespace ignored.
pub fn read_token(path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ConfigError::Invalid {
            file: path.to_path_buf(),
            key: "api.token_file".into(),
            message: "token file is empty; write a random token into it".into(),
        });
    }
    Ok(token.to_string())
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

    fn check(text: &str) -> Result<Validated, ConfigError> {
        let path = Path::new("test.toml");
        validate(path, parse(path, text)?)
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

    #[test]
    fn shipped_example_config_is_valid() {
        let path = Path::new("systemd/triad.toml.example");
        let text = include_str!("../../systemd/triad.toml.example");
        let mut config = parse(path, text).expect("example parses");
        // The token file is a production path; everything else must validate as shipped.
        config.api.token_file = None;
        let v = validate(path, config).expect("example validates");
        assert_eq!(v.members.len(), 3);
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
