//! Conversions between the pure core's types and their encodings: log entries as protobuf
//! (`triad-proto`), cluster-state snapshots as versioned JSON.
//!
//! Log entries use protobuf because they cross versions during rolling upgrades and field
//! numbers give a compatibility promise. Snapshots are JSON with a format number: they are
//! written and read by the same agent version in practice, and JSON keeps them inspectable.
//!
//! Decoding never panics; a bad entry becomes a [`CodecError`] that names what is wrong.

mod backup;

use std::collections::BTreeMap;

use prost::Message as _;
use serde::{Deserialize, Serialize};
use triad_proto::v1 as pb;

pub use crate::cluster::{BackupRun, RemedyRun};
pub use backup::{decode_run, encode_run, is_sha256};

use crate::cluster::{
    is_state_uuid, BootstrapKind, BootstrapMode, ChangeKind, ClusterState, Command, MemberInfo,
    OutageId,
};
use crate::ids::{Epoch, LogIndex, NodeId, UnixMillis};

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
        Command::ArmBackupSchedule { since } => backup::encode_arm(*since),
        Command::RequestBackup { by, reason } => backup::encode_request(by, reason),
        Command::GrantBackupLease {
            id,
            node,
            trigger,
            attempt,
            max_duration_ms,
            reason,
        } => backup::encode_grant(*id, *node, trigger, *attempt, *max_duration_ms, reason),
        Command::FinishBackup {
            id,
            verified,
            expired,
            reason,
            summary,
        } => backup::encode_finish(*id, *verified, *expired, reason, summary),
        Command::SetMaintenance {
            enabled,
            reason,
            by,
        } => pb::command::Kind::SetMaintenance(pb::SetMaintenance {
            enabled: *enabled,
            reason: reason.clone(),
            by: by.clone(),
        }),
        Command::SetRedisMaster {
            node,
            epoch,
            kind,
            reason,
            suspect,
        } => pb::command::Kind::SetRedisMaster(pb::SetRedisMaster {
            node: node.get(),
            epoch: epoch.0,
            kind: kind.as_str().to_string(),
            reason: reason.clone(),
            suspect_index: suspect.map_or(0, |i| i.0),
        }),
        Command::SuspectRedisMaster {
            node,
            epoch,
            reason,
        } => pb::command::Kind::SuspectRedisMaster(pb::SuspectRedisMaster {
            node: node.get(),
            epoch: epoch.0,
            reason: reason.clone(),
        }),
        Command::ClearRedisSuspect {
            node,
            epoch,
            reason,
        } => pb::command::Kind::ClearRedisSuspect(pb::ClearRedisSuspect {
            node: node.get(),
            epoch: epoch.0,
            reason: reason.clone(),
        }),
        Command::OpenGaleraOutage { outage, reason } => {
            pb::command::Kind::OpenGaleraOutage(pb::OpenGaleraOutage {
                outage: outage.0,
                reason: reason.clone(),
            })
        }
        Command::BootstrapGalera {
            outage,
            node,
            uuid,
            seqno,
            mode,
            kind,
            by,
            reason,
            evidence,
        } => pb::command::Kind::BootstrapGalera(pb::BootstrapGalera {
            outage: outage.0,
            node: node.get(),
            uuid: uuid.clone().unwrap_or_default(),
            seqno: *seqno,
            mode: mode.as_str().to_string(),
            kind: kind.as_str().to_string(),
            by: by.clone(),
            reason: reason.clone(),
            evidence: evidence.clone(),
        }),
        Command::EndGaleraOutage { outage, reason } => {
            pb::command::Kind::EndGaleraOutage(pb::EndGaleraOutage {
                outage: outage.0,
                reason: reason.clone(),
            })
        }
        Command::SetGaleraWriter {
            node,
            epoch,
            kind,
            reason,
        } => pb::command::Kind::SetGaleraWriter(pb::SetGaleraWriter {
            node: node.get(),
            epoch: epoch.0,
            kind: kind.as_str().to_string(),
            reason: reason.clone(),
        }),
        Command::EvictGaleraNode {
            node,
            gcomm_uuid,
            reason,
        } => pb::command::Kind::EvictGaleraNode(pb::EvictGaleraNode {
            node: node.get(),
            gcomm_uuid: gcomm_uuid.clone(),
            reason: reason.clone(),
        }),
        Command::ClearGaleraEviction {
            node,
            gcomm_uuid,
            reason,
        } => pb::command::Kind::ClearGaleraEviction(pb::ClearGaleraEviction {
            node: node.get(),
            gcomm_uuid: gcomm_uuid.clone(),
            reason: reason.clone(),
        }),
        Command::SetWebRotation {
            epoch,
            drained,
            kept,
            reason,
        } => pb::command::Kind::SetWebRotation(pb::SetWebRotation {
            epoch: epoch.0,
            drained: drained
                .iter()
                .map(|(n, why)| pb::WebDrain {
                    node: n.get(),
                    reason: why.clone(),
                })
                .collect(),
            kept_node: kept.as_ref().map_or(0, |k| k.node.get()),
            kept_reason: kept.as_ref().map_or(String::new(), |k| k.reason.clone()),
            reason: reason.clone(),
        }),
        Command::GrantRemedy {
            id,
            node,
            action,
            target,
            max_duration_ms,
            reason,
        } => pb::command::Kind::GrantRemedy(pb::GrantRemedy {
            id: id.0,
            node: node.get(),
            action: action.as_str().to_string(),
            target: target.clone(),
            max_duration_ms: *max_duration_ms,
            reason: reason.clone(),
        }),
        Command::FinishRemedy {
            id,
            ok,
            expired,
            reason,
        } => pb::command::Kind::FinishRemedy(pb::FinishRemedy {
            id: id.0,
            ok: *ok,
            expired: *expired,
            reason: reason.clone(),
        }),
        Command::RecordHook {
            phase,
            what,
            event,
            outcome,
            detail,
        } => pb::command::Kind::RecordHook(pb::RecordHook {
            phase: phase.as_str().to_string(),
            what: what.as_str().to_string(),
            event_index: event.map_or(0, |e| e.0),
            outcome: outcome.as_str().to_string(),
            detail: detail.clone(),
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

fn node_id(raw: u64, field: &'static str) -> Result<NodeId, CodecError> {
    if raw == 0 {
        return Err(CodecError::Field {
            field,
            problem: "0 is not a node id".into(),
        });
    }
    Ok(NodeId(raw))
}

fn gcomm_uuid(raw: String, field: &'static str) -> Result<String, CodecError> {
    if !crate::cluster::is_gcomm_uuid(&raw) {
        return Err(CodecError::Field {
            field,
            problem: format!("`{raw}` is not a gcomm UUID (8-4-4-4-12 lowercase hex)"),
        });
    }
    Ok(raw)
}

fn outage_id(raw: u64, field: &'static str) -> Result<OutageId, CodecError> {
    if raw == 0 {
        return Err(CodecError::Field {
            field,
            problem: "0 is not an outage number".into(),
        });
    }
    Ok(OutageId(raw))
}

fn decode_bootstrap_galera(m: pb::BootstrapGalera) -> Result<Command, CodecError> {
    let bad = |field: &'static str, problem: String| CodecError::Field { field, problem };
    let uuid = match m.uuid.as_str() {
        "" => None,
        u if is_state_uuid(u) => Some(m.uuid.clone()),
        u => {
            return Err(bad(
                "command.bootstrap_galera.uuid",
                format!("`{u}` is not a state UUID (lowercase 8-4-4-4-12 hex, not nil)"),
            ))
        }
    };
    if let Some(s) = m.seqno.filter(|s| *s < 0) {
        return Err(bad(
            "command.bootstrap_galera.seqno",
            format!("{s} is negative (leave it out when unknown)"),
        ));
    }
    let mode = BootstrapMode::parse(&m.mode).ok_or_else(|| {
        bad(
            "command.bootstrap_galera.mode",
            format!("unknown mode `{}`", m.mode),
        )
    })?;
    let kind = BootstrapKind::parse(&m.kind).ok_or_else(|| {
        bad(
            "command.bootstrap_galera.kind",
            format!("unknown kind `{}`", m.kind),
        )
    })?;
    match kind {
        BootstrapKind::Automatic if uuid.is_none() || m.seqno.is_none() => {
            return Err(bad(
                "command.bootstrap_galera.uuid",
                "an automatic bootstrap needs its uuid and seqno".into(),
            ))
        }
        BootstrapKind::Operator if m.by.is_empty() => {
            return Err(bad(
                "command.bootstrap_galera.by",
                "an operator override must say who asked".into(),
            ))
        }
        _ => {}
    }
    Ok(Command::BootstrapGalera {
        outage: outage_id(m.outage, "command.bootstrap_galera.outage")?,
        node: node_id(m.node, "command.bootstrap_galera.node")?,
        uuid,
        seqno: m.seqno,
        mode,
        kind,
        by: m.by,
        reason: m.reason,
        evidence: m.evidence,
    })
}

/// Longest text accepted in a remediation's free-text fields.
const MAX_REMEDY_TEXT: usize = 4096;

fn decode_remedy_run(r: pb::RemedyRun) -> Result<RemedyRun, CodecError> {
    if r.id == 0 {
        return Err(CodecError::Field {
            field: "health_report.remedy_run.id",
            problem: "0 is not a remediation number".into(),
        });
    }
    if r.detail.len() > MAX_REMEDY_TEXT {
        return Err(CodecError::Field {
            field: "health_report.remedy_run.detail",
            problem: format!("{} bytes (at most {MAX_REMEDY_TEXT})", r.detail.len()),
        });
    }
    Ok(RemedyRun {
        id: crate::ids::RemedyId(r.id),
        done: r.done,
        ok: r.ok,
        detail: r.detail,
    })
}

fn decode_grant_remedy(m: pb::GrantRemedy) -> Result<Command, CodecError> {
    if m.id == 0 {
        return Err(CodecError::Field {
            field: "command.grant_remedy.id",
            problem: "0 is not a remediation number".into(),
        });
    }
    Ok(Command::GrantRemedy {
        id: crate::ids::RemedyId(m.id),
        node: node_id(m.node, "command.grant_remedy.node")?,
        action: crate::cluster::RemedyAction::parse(&m.action).ok_or_else(|| {
            CodecError::Field {
                field: "command.grant_remedy.action",
                problem: format!("unknown action `{}`", m.action),
            }
        })?,
        target: m.target,
        max_duration_ms: m.max_duration_ms,
        reason: m.reason,
    })
}

fn decode_record_hook(m: pb::RecordHook) -> Result<Command, CodecError> {
    use crate::cluster::{EventKind, HookOutcome, HookPhase};
    let unknown = |field: &'static str, v: &str| CodecError::Field {
        field,
        problem: format!("unknown value `{v}`"),
    };
    let phase =
        HookPhase::parse(&m.phase).ok_or_else(|| unknown("command.record_hook.phase", &m.phase))?;
    let event = match (phase, m.event_index) {
        (HookPhase::Post, 0) => {
            return Err(CodecError::Field {
                field: "command.record_hook.event_index",
                problem: "a post hook record names its event (0 given)".into(),
            })
        }
        (HookPhase::Post, i) => Some(LogIndex(i)),
        (HookPhase::Pre, _) => None,
    };
    if m.detail.len() > MAX_REMEDY_TEXT {
        return Err(CodecError::Field {
            field: "command.record_hook.detail",
            problem: format!("{} bytes (at most {MAX_REMEDY_TEXT})", m.detail.len()),
        });
    }
    Ok(Command::RecordHook {
        phase,
        what: EventKind::parse(&m.what)
            .ok_or_else(|| unknown("command.record_hook.what", &m.what))?,
        event,
        outcome: HookOutcome::parse(&m.outcome)
            .ok_or_else(|| unknown("command.record_hook.outcome", &m.outcome))?,
        detail: m.detail,
    })
}

/// The most drained nodes a web rotation may name (more than any cluster has members).
const MAX_WEB_DRAINED: usize = 64;

fn decode_web_rotation(m: pb::SetWebRotation) -> Result<Command, CodecError> {
    if m.drained.len() > MAX_WEB_DRAINED {
        return Err(CodecError::Field {
            field: "command.set_web_rotation.drained",
            problem: format!("{} nodes (at most {MAX_WEB_DRAINED})", m.drained.len()),
        });
    }
    let mut drained = BTreeMap::new();
    for d in m.drained {
        let n = node_id(d.node, "command.set_web_rotation.drained.node")?;
        if drained.insert(n, d.reason).is_some() {
            return Err(CodecError::Field {
                field: "command.set_web_rotation.drained.node",
                problem: format!("{n} named twice"),
            });
        }
    }
    let kept = match m.kept_node {
        0 => None,
        n => Some(crate::cluster::WebKept {
            node: NodeId(n),
            reason: m.kept_reason,
        }),
    };
    Ok(Command::SetWebRotation {
        epoch: Epoch(m.epoch),
        drained,
        kept,
        reason: m.reason,
    })
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
    if let Some(command) = backup::decode_command(&kind)? {
        return Ok(Proposal {
            id: ProposalId {
                node: NodeId(id.node_id),
                seq: id.seq,
            },
            at: UnixMillis(entry.proposed_at_ms),
            command,
        });
    }
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
        pb::command::Kind::SetRedisMaster(m) => Command::SetRedisMaster {
            node: node_id(m.node, "command.set_redis_master.node")?,
            epoch: Epoch(m.epoch),
            kind: ChangeKind::parse(&m.kind).ok_or_else(|| CodecError::Field {
                field: "command.set_redis_master.kind",
                problem: format!("unknown kind `{}`", m.kind),
            })?,
            reason: m.reason,
            suspect: (m.suspect_index != 0).then_some(crate::ids::LogIndex(m.suspect_index)),
        },
        pb::command::Kind::SuspectRedisMaster(m) => Command::SuspectRedisMaster {
            node: node_id(m.node, "command.suspect_redis_master.node")?,
            epoch: Epoch(m.epoch),
            reason: m.reason,
        },
        pb::command::Kind::ClearRedisSuspect(m) => Command::ClearRedisSuspect {
            node: node_id(m.node, "command.clear_redis_suspect.node")?,
            epoch: Epoch(m.epoch),
            reason: m.reason,
        },
        pb::command::Kind::OpenGaleraOutage(m) => Command::OpenGaleraOutage {
            outage: outage_id(m.outage, "command.open_galera_outage.outage")?,
            reason: m.reason,
        },
        pb::command::Kind::BootstrapGalera(m) => decode_bootstrap_galera(m)?,
        pb::command::Kind::EndGaleraOutage(m) => Command::EndGaleraOutage {
            outage: outage_id(m.outage, "command.end_galera_outage.outage")?,
            reason: m.reason,
        },
        pb::command::Kind::SetGaleraWriter(m) => Command::SetGaleraWriter {
            node: node_id(m.node, "command.set_galera_writer.node")?,
            epoch: Epoch(m.epoch),
            kind: ChangeKind::parse(&m.kind).ok_or_else(|| CodecError::Field {
                field: "command.set_galera_writer.kind",
                problem: format!("unknown kind `{}`", m.kind),
            })?,
            reason: m.reason,
        },
        pb::command::Kind::EvictGaleraNode(m) => Command::EvictGaleraNode {
            node: node_id(m.node, "command.evict_galera_node.node")?,
            gcomm_uuid: gcomm_uuid(m.gcomm_uuid, "command.evict_galera_node.gcomm_uuid")?,
            reason: m.reason,
        },
        pb::command::Kind::ClearGaleraEviction(m) => Command::ClearGaleraEviction {
            node: node_id(m.node, "command.clear_galera_eviction.node")?,
            gcomm_uuid: gcomm_uuid(m.gcomm_uuid, "command.clear_galera_eviction.gcomm_uuid")?,
            reason: m.reason,
        },
        pb::command::Kind::SetWebRotation(m) => decode_web_rotation(m)?,
        pb::command::Kind::GrantRemedy(m) => decode_grant_remedy(m)?,
        pb::command::Kind::FinishRemedy(m) => Command::FinishRemedy {
            id: crate::ids::RemedyId(m.id),
            ok: m.ok,
            expired: m.expired,
            reason: m.reason,
        },
        pb::command::Kind::RecordHook(m) => decode_record_hook(m)?,
        // Decoded above.
        pb::command::Kind::ArmBackupSchedule(_)
        | pb::command::Kind::RequestBackup(_)
        | pb::command::Kind::GrantBackupLease(_)
        | pb::command::Kind::FinishBackup(_) => {
            return Err(CodecError::Field {
                field: "command",
                problem: "backup command not decoded".into(),
            })
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
    let state: ClusterState =
        serde_json::from_value(doc.state).map_err(|e| CodecError::Snapshot(e.to_string()))?;
    state.galera.check().map_err(CodecError::Snapshot)?;
    state.galera_writer.check().map_err(CodecError::Snapshot)?;
    state.backup.check().map_err(CodecError::Snapshot)?;
    state.web.check().map_err(CodecError::Snapshot)?;
    state.remedy.check().map_err(CodecError::Snapshot)?;
    Ok(state)
}

/// Whether `bytes` decode as snapshot data of a format this agent reads: the raft core's
/// [`SnapshotValidator`](crate::raft::SnapshotValidator), so a snapshot it cannot install is
/// refused before it is stored.
pub fn validate_state(bytes: &[u8]) -> Result<(), String> {
    decode_state(bytes).map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::EntryMeta;
    use crate::ids::{LogIndex, Term};

    #[test]
    fn entries_round_trip() {
        let members = crate::cluster::fixtures::members(3);
        for command in [
            Command::SetMaintenance {
                enabled: true,
                reason: "patching".into(),
                by: "api@n3".into(),
            },
            Command::RegisterMembers { members },
            Command::SetRedisMaster {
                node: NodeId(2),
                epoch: Epoch(8),
                kind: ChangeKind::Automatic,
                reason: "promote n2".into(),
                suspect: Some(crate::ids::LogIndex(41)),
            },
            Command::SuspectRedisMaster {
                node: NodeId(1),
                epoch: Epoch(7),
                reason: "silent".into(),
            },
            Command::ClearRedisSuspect {
                node: NodeId(1),
                epoch: Epoch(7),
                reason: "back".into(),
            },
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

    fn galera_commands() -> Vec<Command> {
        vec![
            Command::OpenGaleraOutage {
                outage: OutageId(1),
                reason: "no Primary component anywhere for 1.5s".into(),
            },
            Command::BootstrapGalera {
                outage: OutageId(1),
                node: NodeId(3),
                uuid: Some("9eaceb67-efac-11f1-b809-474591e831a5".into()),
                seqno: Some(0),
                mode: BootstrapMode::NewCluster,
                kind: BootstrapKind::Automatic,
                by: String::new(),
                reason: "bootstrap n3".into(),
                evidence: "n1 stopped; n2 stopped; n3 stopped".into(),
            },
            Command::BootstrapGalera {
                outage: OutageId(2),
                node: NodeId(1),
                uuid: None,
                seqno: None,
                mode: BootstrapMode::PcBootstrap,
                kind: BootstrapKind::Operator,
                by: "api@n2".into(),
                reason: "n2 is gone".into(),
                evidence: "n2 never reported".into(),
            },
            Command::EndGaleraOutage {
                outage: OutageId(1),
                reason: "n3 Primary with 3 nodes".into(),
            },
            Command::SetGaleraWriter {
                node: NodeId(2),
                epoch: Epoch(4),
                kind: ChangeKind::Automatic,
                reason: "n1 not Synced".into(),
            },
            Command::EvictGaleraNode {
                node: NodeId(1),
                gcomm_uuid: "0c9e4d3a-efac-11f1-8d3a-2b1f0e3c4d5e".into(),
                reason: "mariadbd gone".into(),
            },
            Command::ClearGaleraEviction {
                node: NodeId(1),
                gcomm_uuid: "0c9e4d3a-efac-11f1-8d3a-2b1f0e3c4d5e".into(),
                reason: "back".into(),
            },
        ]
    }

    /// Web rotations round-trip, with and without a kept node; a bad one names its field.
    #[test]
    fn web_rotations_round_trip_and_bad_ones_name_the_field() {
        for kept in [
            None,
            Some(crate::cluster::WebKept {
                node: NodeId(1),
                reason: "least sick: php-fpm saturated".into(),
            }),
        ] {
            let p = Proposal {
                id: ProposalId {
                    node: NodeId(2),
                    seq: 7,
                },
                at: UnixMillis(1_700_000_000_000),
                command: Command::SetWebRotation {
                    epoch: Epoch(3),
                    drained: [
                        (NodeId(2), "php-fpm down".to_string()),
                        (NodeId(3), "mount /srv/shop/var down".to_string()),
                    ]
                    .into(),
                    kept,
                    reason: "drain n2, n3".into(),
                },
            };
            assert_eq!(decode_entry(&encode_entry(&p)).expect("decodes"), p);
        }
        let entry = |m: pb::SetWebRotation| {
            pb::LogEntry {
                proposal: Some(pb::ProposalId { node_id: 1, seq: 1 }),
                proposed_at_ms: 0,
                command: Some(pb::Command {
                    kind: Some(pb::command::Kind::SetWebRotation(m)),
                }),
            }
            .encode_to_vec()
        };
        let drain = |node| pb::WebDrain {
            node,
            reason: String::new(),
        };
        let cases = [
            (
                vec![drain(0)],
                "field command.set_web_rotation.drained.node: 0 is not a node id",
            ),
            (
                vec![drain(2), drain(2)],
                "field command.set_web_rotation.drained.node: n2 named twice",
            ),
            (
                (1..=65).map(drain).collect(),
                "field command.set_web_rotation.drained: 65 nodes (at most 64)",
            ),
        ];
        for (drained, msg) in cases {
            let err = decode_entry(&entry(pb::SetWebRotation {
                epoch: 1,
                drained,
                ..pb::SetWebRotation::default()
            }))
            .expect_err(msg);
            assert_eq!(err.to_string(), format!("log entry {msg}"));
        }
    }

    /// A peer's writer entry with a bad node, kind or gcomm UUID is an error naming the field.
    #[test]
    fn bad_galera_writer_entries_are_errors_not_panics() {
        let cases = [
            (
                pb::command::Kind::SetGaleraWriter(pb::SetGaleraWriter {
                    node: 0,
                    epoch: 1,
                    kind: "initial".into(),
                    reason: String::new(),
                }),
                "field command.set_galera_writer.node: 0 is not a node id",
            ),
            (
                pb::command::Kind::SetGaleraWriter(pb::SetGaleraWriter {
                    node: 1,
                    epoch: 1,
                    kind: "whim".into(),
                    reason: String::new(),
                }),
                "field command.set_galera_writer.kind: unknown kind `whim`",
            ),
            (
                pb::command::Kind::EvictGaleraNode(pb::EvictGaleraNode {
                    node: 1,
                    gcomm_uuid: "'; DROP".into(),
                    reason: String::new(),
                }),
                "field command.evict_galera_node.gcomm_uuid: `'; DROP` is not a gcomm UUID",
            ),
            (
                pb::command::Kind::ClearGaleraEviction(pb::ClearGaleraEviction {
                    node: 1,
                    gcomm_uuid: String::new(),
                    reason: String::new(),
                }),
                "field command.clear_galera_eviction.gcomm_uuid: `` is not a gcomm UUID",
            ),
        ];
        for (kind, want) in cases {
            let err = decode_entry(&entry(kind)).expect_err("refused");
            assert!(err.to_string().contains(want), "{err} / {want}");
        }
    }

    /// Hook records round-trip (pre without an event, post with one); a bad one names its
    /// field.
    #[test]
    fn hook_records_round_trip_and_bad_ones_name_the_field() {
        use crate::cluster::{EventKind, HookOutcome, HookPhase};
        for (phase, event, outcome) in [
            (HookPhase::Pre, None, HookOutcome::Vetoed),
            (HookPhase::Post, Some(LogIndex(42)), HookOutcome::Failed),
        ] {
            let p = Proposal {
                id: ProposalId {
                    node: NodeId(2),
                    seq: 7,
                },
                at: UnixMillis(1_700_000_000_000),
                command: Command::RecordHook {
                    phase,
                    what: EventKind::Switchover,
                    event,
                    outcome,
                    detail: "exit 1 in 0.1 s: change freeze".into(),
                },
            };
            assert_eq!(decode_entry(&encode_entry(&p)).expect("decodes"), p);
        }
        let good = pb::RecordHook {
            phase: "post".into(),
            what: "failover".into(),
            event_index: 3,
            outcome: "ok".into(),
            detail: String::new(),
        };
        let cases = [
            (
                pb::RecordHook {
                    phase: "during".into(),
                    ..good.clone()
                },
                "field command.record_hook.phase: unknown value `during`",
            ),
            (
                pb::RecordHook {
                    event_index: 0,
                    ..good.clone()
                },
                "field command.record_hook.event_index: a post hook record names its event",
            ),
            (
                pb::RecordHook {
                    what: "reboot".into(),
                    ..good.clone()
                },
                "field command.record_hook.what: unknown value `reboot`",
            ),
            (
                pb::RecordHook {
                    outcome: "maybe".into(),
                    ..good.clone()
                },
                "field command.record_hook.outcome: unknown value `maybe`",
            ),
            (
                pb::RecordHook {
                    detail: "x".repeat(5000),
                    ..good.clone()
                },
                "field command.record_hook.detail: 5000 bytes (at most 4096)",
            ),
        ];
        for (m, want) in cases {
            let err = decode_entry(&entry(pb::command::Kind::RecordHook(m))).expect_err(want);
            assert!(err.to_string().contains(want), "{err} / {want}");
        }
    }

    fn entry(kind: pb::command::Kind) -> Vec<u8> {
        pb::LogEntry {
            proposal: Some(pb::ProposalId { node_id: 1, seq: 1 }),
            proposed_at_ms: 0,
            command: Some(pb::Command { kind: Some(kind) }),
        }
        .encode_to_vec()
    }

    /// The Galera commands round-trip, seqno 0 and an unknown seqno included (explicit
    /// presence: a missing field never reads as seqno 0).
    #[test]
    fn galera_entries_round_trip() {
        for command in galera_commands() {
            let p = Proposal {
                id: ProposalId {
                    node: NodeId(2),
                    seq: 7,
                },
                at: UnixMillis(1_700_000_000_000),
                command,
            };
            assert_eq!(decode_entry(&encode_entry(&p)).expect("decodes"), p);
        }
    }

    /// Every field of a peer's Galera entry is checked, and a bad one is an error naming it.
    #[test]
    fn bad_galera_entries_are_errors_not_panics() {
        let good = || pb::BootstrapGalera {
            outage: 4,
            node: 3,
            uuid: "9eaceb67-efac-11f1-b809-474591e831a5".into(),
            seqno: Some(1234),
            mode: "new-cluster".into(),
            kind: "automatic".into(),
            by: String::new(),
            reason: "r".into(),
            evidence: "e".into(),
        };
        assert!(decode_entry(&entry(pb::command::Kind::BootstrapGalera(good()))).is_ok());
        type Mutation = fn(&mut pb::BootstrapGalera);
        let cases: [(Mutation, &str); 9] = [
            (
                |m| m.outage = 0,
                "field command.bootstrap_galera.outage: 0 is not an outage number",
            ),
            (
                |m| m.node = 0,
                "field command.bootstrap_galera.node: 0 is not a node id",
            ),
            (
                |m| m.uuid = "9EACEB67-EFAC-11F1-B809-474591E831A5".into(),
                "field command.bootstrap_galera.uuid: `9EACEB67",
            ),
            (
                |m| m.uuid = "00000000-0000-0000-0000-000000000000".into(),
                "is not a state UUID",
            ),
            (
                |m| m.seqno = Some(-1),
                "field command.bootstrap_galera.seqno: -1 is negative",
            ),
            (
                |m| m.mode = "yolo".into(),
                "field command.bootstrap_galera.mode: unknown mode `yolo`",
            ),
            (
                |m| m.kind = "manual".into(),
                "field command.bootstrap_galera.kind: unknown kind `manual`",
            ),
            (
                |m| m.seqno = None,
                "an automatic bootstrap needs its uuid and seqno",
            ),
            (
                |m| m.kind = "operator".into(),
                "field command.bootstrap_galera.by: an operator override must say who asked",
            ),
        ];
        for (mutate, want) in cases {
            let mut m = good();
            mutate(&mut m);
            let err = decode_entry(&entry(pb::command::Kind::BootstrapGalera(m)))
                .expect_err(want)
                .to_string();
            assert!(err.contains(want), "{err} lacks {want}");
        }
        for kind in [
            pb::command::Kind::OpenGaleraOutage(pb::OpenGaleraOutage {
                outage: 0,
                reason: String::new(),
            }),
            pb::command::Kind::EndGaleraOutage(pb::EndGaleraOutage {
                outage: 0,
                reason: String::new(),
            }),
        ] {
            let err = decode_entry(&entry(kind)).expect_err("outage 0");
            assert!(
                err.to_string().contains("0 is not an outage number"),
                "{err}"
            );
        }
    }

    /// The Galera authority survives a snapshot, and an impossible one is refused.
    #[test]
    fn galera_snapshot_round_trip_and_check() {
        let mut s = ClusterState::default();
        for (i, command) in galera_commands().iter().take(2).enumerate() {
            s.apply(
                EntryMeta {
                    term: Term(1),
                    index: LogIndex(i as u64 + 1),
                    at: UnixMillis(5),
                },
                command,
            );
        }
        assert!(s.galera.decided().is_some());
        assert_eq!(decode_state(&encode_state(&s)).expect("decodes"), s);
        let mut bad = s.clone();
        if let Some(b) = bad
            .galera
            .outage
            .as_mut()
            .and_then(|o| o.bootstrap.as_mut())
        {
            b.node = NodeId(0);
        }
        let err = decode_state(&encode_state(&bad)).expect_err("node 0");
        assert_eq!(err.to_string(), "snapshot: galera bootstrap node 0");
        // A snapshot from before the Galera authority existed reads as no outage.
        let old = br#"{"format":1,"state":{"members":{},"maintenance":{"enabled":false,"reason":"","by":"","since":null,"index":null},"history":[],"applied":3}}"#;
        assert_eq!(
            decode_state(old).expect("old snapshot").galera,
            crate::cluster::GaleraAuthority::default()
        );
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

/// Most observations accepted in one health report.
pub const MAX_REPORT_OBSERVATIONS: usize = 256;

/// Encodes observations with their current ages as a health report, with the sender's
/// applied and reconciled indexes and, per peer, how long ago it last answered that peer's
/// lease ping (see [`DecodedReport::pongs`]).
pub fn encode_report(
    items: &[(crate::observation::Observation, u64)],
    applied_index: u64,
    reconciled_index: u64,
    pongs: &BTreeMap<NodeId, u64>,
    backup_run: Option<&BackupRun>,
    remedy_run: Option<&RemedyRun>,
) -> pb::HealthReport {
    pb::HealthReport {
        backup_run: backup_run.map(encode_run),
        remedy_run: remedy_run.map(|r| pb::RemedyRun {
            id: r.id.0,
            done: r.done,
            ok: r.ok,
            detail: r.detail.clone(),
        }),
        applied_index,
        reconciled_index,
        pongs: pongs
            .iter()
            .map(|(&node, &age_ms)| pb::PeerPong {
                node: node.get(),
                age_ms,
            })
            .collect(),
        observations: items
            .iter()
            .map(|(o, age_ms)| pb::ProbeObservation {
                subject: o.id.subject.get(),
                service: o.id.service.as_str().to_string(),
                target: o.id.target.clone(),
                status: o.status.as_str().to_string(),
                last_status: o.last.status.as_str().to_string(),
                failure: o
                    .last
                    .failure
                    .map(|f| f.as_str().to_string())
                    .unwrap_or_default(),
                error: o.last.error.clone().unwrap_or_default(),
                failures: o.failures,
                successes: o.successes,
                latency_us: o.latency_us,
                observed_at_ms: o.observed_at.0,
                age_ms: *age_ms,
                details_json: if o.last.details.is_null() {
                    String::new()
                } else {
                    o.last.details.to_string()
                },
            })
            .collect(),
    }
}

fn parse_failure(s: &str) -> Option<crate::observation::FailureKind> {
    use crate::observation::FailureKind as F;
    [
        F::Refused,
        F::Timeout,
        F::Auth,
        F::Protocol,
        F::Io,
        F::State,
    ]
    .into_iter()
    .find(|f| f.as_str() == s)
}

/// A decoded health report.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedReport {
    /// The observations with their ages at receipt.
    pub observations: Vec<crate::health::Received>,
    /// The sender's applied Raft index.
    pub applied_index: u64,
    /// The newest Redis decision the sender's reconciler carried out.
    pub reconciled_index: u64,
    /// Per peer: milliseconds since the sender last answered that peer's lease ping (or since
    /// it started, if it has not), when it sent the report. Every pong the sender decided on
    /// before it reported `applied_index` is counted (the transport records a pong under the
    /// same lock that installs the embargo, which is installed before the report is built).
    pub pongs: BTreeMap<NodeId, u64>,
    /// The backup the sender runs or last ran under a lease, if any.
    pub backup_run: Option<BackupRun>,
    /// The remediation the sender carries out or carried out under the lease in force, if any.
    pub remedy_run: Option<RemedyRun>,
}

/// Decodes and validates a peer's health report. `is_member` says whether a node id belongs
/// to the cluster. The whole report is refused on the first bad observation, naming it.
pub fn decode_report(
    report: pb::HealthReport,
    is_member: impl Fn(NodeId) -> bool,
) -> Result<DecodedReport, CodecError> {
    let applied_index = report.applied_index;
    let reconciled_index = report.reconciled_index;
    let backup_run = report.backup_run.map(decode_run).transpose()?;
    let remedy_run = report.remedy_run.map(decode_remedy_run).transpose()?;
    use crate::observation::{CheckResult, Observation, ProbeId, Service, Status};
    let bad = |field: &'static str, problem: String| CodecError::Field { field, problem };
    let mut pongs = BTreeMap::new();
    for p in &report.pongs {
        let node = NodeId(p.node);
        if !is_member(node) {
            return Err(bad(
                "health_report.pongs.node",
                format!("{node} is not a member"),
            ));
        }
        if pongs.insert(node, p.age_ms).is_some() {
            return Err(bad(
                "health_report.pongs.node",
                format!("{node} is listed twice"),
            ));
        }
    }
    if report.observations.len() > MAX_REPORT_OBSERVATIONS {
        return Err(bad(
            "health_report.observations",
            format!(
                "{} observations, at most {MAX_REPORT_OBSERVATIONS}",
                report.observations.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(report.observations.len());
    for (i, o) in report.observations.into_iter().enumerate() {
        let subject = NodeId(o.subject);
        if !is_member(subject) {
            return Err(bad(
                "health_report.observations.subject",
                format!("observation {i}: {} is not a member", subject),
            ));
        }
        let service = Service::parse(&o.service).ok_or_else(|| {
            bad(
                "health_report.observations.service",
                format!("observation {i}: unknown service `{}`", o.service),
            )
        })?;
        let status = Status::parse(&o.status).ok_or_else(|| {
            bad(
                "health_report.observations.status",
                format!("observation {i}: unknown status `{}`", o.status),
            )
        })?;
        let last_status = Status::parse(&o.last_status).ok_or_else(|| {
            bad(
                "health_report.observations.last_status",
                format!("observation {i}: unknown status `{}`", o.last_status),
            )
        })?;
        let failure = if o.failure.is_empty() {
            None
        } else {
            Some(parse_failure(&o.failure).ok_or_else(|| {
                bad(
                    "health_report.observations.failure",
                    format!("observation {i}: unknown failure `{}`", o.failure),
                )
            })?)
        };
        let details = if o.details_json.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&o.details_json).map_err(|e| {
                bad(
                    "health_report.observations.details_json",
                    format!("observation {i}: {e}"),
                )
            })?
        };
        out.push(crate::health::Received {
            observation: std::sync::Arc::new(Observation {
                id: ProbeId {
                    subject,
                    service,
                    target: o.target,
                },
                status,
                last: CheckResult {
                    status: last_status,
                    failure,
                    error: (!o.error.is_empty()).then_some(o.error),
                    details,
                },
                failures: o.failures,
                successes: o.successes,
                latency_us: o.latency_us,
                observed_at: UnixMillis(o.observed_at_ms),
            }),
            age_at_receipt_ms: o.age_ms,
        });
    }
    Ok(DecodedReport {
        observations: out,
        applied_index,
        reconciled_index,
        pongs,
        backup_run,
        remedy_run,
    })
}

#[cfg(test)]
mod report_tests {
    use super::*;
    use crate::observation::{CheckResult, FailureKind, Observation, ProbeId, Service, Status};

    fn sample() -> Observation {
        Observation {
            id: ProbeId {
                subject: NodeId(2),
                service: Service::Redis,
                target: String::new(),
            },
            status: Status::Unreachable,
            last: CheckResult::unreachable(FailureKind::Refused, "redis 10.0.0.2:6379: refused"),
            failures: 3,
            successes: 0,
            latency_us: 120,
            observed_at: UnixMillis(1_700_000_000_000),
        }
    }

    #[test]
    fn reports_round_trip() {
        let mut healthy = sample();
        healthy.status = Status::Healthy;
        healthy.last = CheckResult::healthy(serde_json::json!({"role": "master"}));
        let pongs = BTreeMap::from([(NodeId(1), 120), (NodeId(3), 5)]);
        let run = RemedyRun {
            id: crate::ids::RemedyId(4),
            done: true,
            ok: true,
            detail: "restarted".into(),
        };
        let pb = encode_report(
            &[(sample(), 40), (healthy.clone(), 7)],
            99,
            42,
            &pongs,
            None,
            Some(&run),
        );
        let back = decode_report(pb, |n| n.get() <= 3).expect("decodes");
        assert_eq!(back.remedy_run, Some(run));
        assert_eq!(back.applied_index, 99);
        assert_eq!(back.reconciled_index, 42);
        assert_eq!(back.pongs, pongs);
        let back = back.observations;
        assert_eq!(back[0].observation, sample().into());
        assert_eq!(back[0].age_at_receipt_ms, 40);
        assert_eq!(back[1].observation, healthy.into());
    }

    #[test]
    fn bad_reports_name_the_field() {
        type Mutation = Box<dyn Fn(&mut pb::ProbeObservation)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|o| o.subject = 9), "not a member"),
            (Box::new(|o| o.service = "nginx".into()), "unknown service"),
            (Box::new(|o| o.status = "fine".into()), "unknown status"),
            (
                Box::new(|o| o.failure = "gremlins".into()),
                "unknown failure",
            ),
            (
                Box::new(|o| o.details_json = "{oops".into()),
                "details_json",
            ),
        ];
        for (mutate, want) in cases {
            let mut pb = encode_report(&[(sample(), 1)], 1, 1, &BTreeMap::new(), None, None);
            mutate(&mut pb.observations[0]);
            let err = decode_report(pb, |n| n.get() <= 3)
                .expect_err(want)
                .to_string();
            assert!(err.contains(want), "{err} lacks {want}");
        }
        let many = pb::HealthReport {
            observations: vec![pb::ProbeObservation::default(); MAX_REPORT_OBSERVATIONS + 1],
            ..Default::default()
        };
        assert!(decode_report(many, |_| true).is_err());
        for (pongs, want) in [
            (vec![(9, 1)], "not a member"),
            (vec![(1, 1), (1, 2)], "listed twice"),
        ] {
            let pb = pb::HealthReport {
                pongs: pongs
                    .into_iter()
                    .map(|(node, age_ms)| pb::PeerPong { node, age_ms })
                    .collect(),
                ..Default::default()
            };
            let err = decode_report(pb, |n| n.get() <= 3)
                .expect_err(want)
                .to_string();
            assert!(
                err.contains(want) && err.contains("pongs"),
                "{err} lacks {want}"
            );
        }
    }
}
