//! Conversions between the pure core's types and their encodings: log entries as protobuf
//! (`triad-proto`), cluster-state snapshots as versioned JSON.
//!
//! Log entries use protobuf because they cross versions during rolling upgrades and field
//! numbers give a compatibility promise. Snapshots are JSON with a format number: they are
//! written and read by the same agent version in practice, and JSON keeps them inspectable.
//!
//! Decoding never panics; a bad entry becomes a [`CodecError`] that names what is wrong.

use std::collections::BTreeMap;

use prost::Message as _;
use serde::{Deserialize, Serialize};
use triad_proto::v1 as pb;

use crate::cluster::{ClusterState, Command, MemberInfo};
use crate::ids::{NodeId, UnixMillis};

/// Identifies a proposal so the node that proposed it can answer its caller once it applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProposalId {
    /// The proposing node.
    pub node: NodeId,
    /// A per-process sequence number.
    pub seq: u64,
}

/// A command as carried in a log entry, with who proposed it and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// Who proposed it.
    pub id: ProposalId,
    /// The proposer's wall clock.
    pub at: UnixMillis,
    /// The command.
    pub command: Command,
}

/// An entry or snapshot that cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Not a valid protobuf `LogEntry`.
    #[error("log entry is not valid protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// A required field is missing or holds an impossible value.
    #[error("log entry field {field}: {problem}")]
    Field {
        /// The field path.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The snapshot is not valid JSON of a known format.
    #[error("snapshot: {0}")]
    Snapshot(String),
}

/// Encodes a proposal as the data of a Raft log entry.
pub fn encode_entry(p: &Proposal) -> Vec<u8> {
    let command = match &p.command {
        Command::SetMaintenance {
            enabled,
            reason,
            by,
        } => pb::command::Kind::SetMaintenance(pb::SetMaintenance {
            enabled: *enabled,
            reason: reason.clone(),
            by: by.clone(),
        }),
        Command::RegisterMembers { members } => {
            pb::command::Kind::RegisterMembers(pb::RegisterMembers {
                members: members
                    .iter()
                    .map(|(id, m)| pb::Member {
                        id: id.get(),
                        raft_addr: m.raft_addr.clone(),
                        api_addr: m.api_addr.clone(),
                    })
                    .collect(),
            })
        }
    };
    pb::LogEntry {
        proposal: Some(pb::ProposalId {
            node_id: p.id.node.get(),
            seq: p.id.seq,
        }),
        proposed_at_ms: p.at.0,
        command: Some(pb::Command {
            kind: Some(command),
        }),
    }
    .encode_to_vec()
}

/// Decodes the data of a Raft log entry.
pub fn decode_entry(bytes: &[u8]) -> Result<Proposal, CodecError> {
    let entry = pb::LogEntry::decode(bytes)?;
    let missing = |field: &'static str| CodecError::Field {
        field,
        problem: "missing".into(),
    };
    let id = entry.proposal.ok_or_else(|| missing("proposal"))?;
    let kind = entry
        .command
        .and_then(|c| c.kind)
        .ok_or_else(|| missing("command"))?;
    let command = match kind {
        pb::command::Kind::SetMaintenance(m) => Command::SetMaintenance {
            enabled: m.enabled,
            reason: m.reason,
            by: m.by,
        },
        pb::command::Kind::RegisterMembers(r) => {
            let mut members = BTreeMap::new();
            for m in r.members {
                if m.id == 0 {
                    return Err(CodecError::Field {
                        field: "command.register_members.members.id",
                        problem: "0 is not a node id".into(),
                    });
                }
                members.insert(
                    NodeId(m.id),
                    MemberInfo {
                        raft_addr: m.raft_addr,
                        api_addr: m.api_addr,
                    },
                );
            }
            Command::RegisterMembers { members }
        }
    };
    Ok(Proposal {
        id: ProposalId {
            node: NodeId(id.node_id),
            seq: id.seq,
        },
        at: UnixMillis(entry.proposed_at_ms),
        command,
    })
}

const SNAPSHOT_FORMAT: u32 = 1;

#[derive(Serialize)]
struct SnapshotDoc {
    format: u32,
    state: ClusterState,
}

/// Encodes the cluster state as snapshot data.
pub fn encode_state(state: &ClusterState) -> Vec<u8> {
    let doc = SnapshotDoc {
        format: SNAPSHOT_FORMAT,
        state: state.clone(),
    };
    // Serialising plain structs with string keys cannot fail.
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// Decodes snapshot data into a cluster state.
pub fn decode_state(bytes: &[u8]) -> Result<ClusterState, CodecError> {
    #[derive(Deserialize)]
    struct Envelope {
        format: u32,
        state: serde_json::Value,
    }
    let doc: Envelope =
        serde_json::from_slice(bytes).map_err(|e| CodecError::Snapshot(e.to_string()))?;
    if doc.format != SNAPSHOT_FORMAT {
        return Err(CodecError::Snapshot(format!(
            "unknown format {} (this agent reads {SNAPSHOT_FORMAT})",
            doc.format
        )));
    }
    serde_json::from_value(doc.state).map_err(|e| CodecError::Snapshot(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::EntryMeta;
    use crate::ids::{LogIndex, Term};

    #[test]
    fn entries_round_trip() {
        let members = (1..=3)
            .map(|i| {
                (
                    NodeId(i),
                    MemberInfo {
                        raft_addr: format!("10.0.0.{i}:7200"),
                        api_addr: format!("10.0.0.{i}:7100"),
                    },
                )
            })
            .collect();
        for command in [
            Command::SetMaintenance {
                enabled: true,
                reason: "patching".into(),
                by: "api@n3".into(),
            },
            Command::RegisterMembers { members },
        ] {
            let p = Proposal {
                id: ProposalId {
                    node: NodeId(3),
                    seq: 42,
                },
                at: UnixMillis(1_700_000_000_000),
                command,
            };
            assert_eq!(decode_entry(&encode_entry(&p)).expect("decodes"), p);
        }
    }

    #[test]
    fn bad_entries_are_errors_not_panics() {
        assert!(decode_entry(&[0xff, 0xff, 0xff]).is_err());
        let no_command = pb::LogEntry {
            proposal: Some(pb::ProposalId { node_id: 1, seq: 1 }),
            proposed_at_ms: 0,
            command: None,
        }
        .encode_to_vec();
        let err = decode_entry(&no_command).expect_err("no command");
        assert_eq!(err.to_string(), "log entry field command: missing");
    }

    #[test]
    fn snapshot_round_trip_and_format_check() {
        let mut s = ClusterState::default();
        s.apply(
            EntryMeta {
                term: Term(1),
                index: LogIndex(7),
                at: UnixMillis(5),
            },
            &Command::SetMaintenance {
                enabled: true,
                reason: "r".into(),
                by: "b".into(),
            },
        );
        assert_eq!(decode_state(&encode_state(&s)).expect("decodes"), s);
        let err = decode_state(br#"{"format":99,"state":{}}"#).expect_err("format");
        assert!(err.to_string().contains("unknown format 99"));
        assert!(decode_state(b"not json").is_err());
    }
}
