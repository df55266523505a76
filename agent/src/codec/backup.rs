//! Wire forms of the backup commands and of a runner's [`BackupRun`] report, with the checks
//! a decoded value must pass (node ids, component names, digests, attempts).

use triad_proto::v1 as pb;

use super::{node_id, CodecError};
use crate::cluster::{
    BackupRun, BackupSummary, BackupTrigger, Command, Component, ComponentSummary,
};
use crate::ids::{BackupId, LogIndex, NodeId, UnixMillis};

/// Longest text accepted in a backup report's or command's free-text fields.
const MAX_TEXT: usize = 4096;

fn bad(field: &'static str, problem: String) -> CodecError {
    CodecError::Field { field, problem }
}

pub(super) fn encode_trigger(t: &BackupTrigger) -> pb::BackupTrigger {
    pb::BackupTrigger {
        kind: Some(match t {
            BackupTrigger::Scheduled { window } => pb::backup_trigger::Kind::WindowMs(window.0),
            BackupTrigger::Manual { request } => pb::backup_trigger::Kind::RequestIndex(request.0),
        }),
    }
}

fn decode_trigger(t: Option<pb::BackupTrigger>) -> Result<BackupTrigger, CodecError> {
    const F: &str = "command.grant_backup_lease.trigger";
    match t.and_then(|t| t.kind) {
        Some(pb::backup_trigger::Kind::WindowMs(w)) => Ok(BackupTrigger::Scheduled {
            window: UnixMillis(w),
        }),
        Some(pb::backup_trigger::Kind::RequestIndex(0)) => {
            Err(bad(F, "request index 0 is not a log index".into()))
        }
        Some(pb::backup_trigger::Kind::RequestIndex(i)) => Ok(BackupTrigger::Manual {
            request: LogIndex(i),
        }),
        None => Err(bad(F, "missing".into())),
    }
}

pub(super) fn encode_summary(s: &BackupSummary) -> pb::BackupSummary {
    pb::BackupSummary {
        components: s
            .components
            .iter()
            .map(|c| pb::ComponentSummary {
                component: c.component.as_str().to_string(),
                bytes: c.bytes,
                sha256: c.sha256.clone(),
                duration_ms: c.duration_ms,
                snapshot: c.snapshot.clone(),
            })
            .collect(),
        galera_position: s.galera_position.clone(),
        redis_offset: s.redis_offset,
        version: s.version.clone(),
        duration_ms: s.duration_ms,
    }
}

/// Whether `s` is a SHA-256 digest as written here: 64 lowercase hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn text(field: &'static str, s: String) -> Result<String, CodecError> {
    if s.len() > MAX_TEXT {
        return Err(bad(field, format!("{} bytes, at most {MAX_TEXT}", s.len())));
    }
    Ok(s)
}

fn decode_summary(
    s: Option<pb::BackupSummary>,
    field: &'static str,
) -> Result<BackupSummary, CodecError> {
    let Some(s) = s else {
        return Ok(BackupSummary::default());
    };
    let mut components: Vec<ComponentSummary> = Vec::with_capacity(s.components.len());
    for c in s.components {
        let component = Component::parse(&c.component)
            .ok_or_else(|| bad(field, format!("unknown component `{}`", c.component)))?;
        if components.iter().any(|k| k.component == component) {
            return Err(bad(field, format!("component {component} listed twice")));
        }
        if !is_sha256(&c.sha256) {
            return Err(bad(
                field,
                format!("{component}: `{}` is not a SHA-256 digest", c.sha256),
            ));
        }
        components.push(ComponentSummary {
            component,
            bytes: c.bytes,
            sha256: c.sha256,
            duration_ms: c.duration_ms,
            snapshot: text(field, c.snapshot)?,
        });
    }
    Ok(BackupSummary {
        components,
        galera_position: text(field, s.galera_position)?,
        redis_offset: s.redis_offset,
        version: text(field, s.version)?,
        duration_ms: s.duration_ms,
    })
}

fn backup_id(raw: u64, field: &'static str) -> Result<BackupId, CodecError> {
    if raw == 0 {
        return Err(bad(field, "0 is not a backup id".into()));
    }
    Ok(BackupId(raw))
}

/// The wire form of `ArmBackupSchedule`.
pub(super) fn encode_arm(since: UnixMillis) -> pb::command::Kind {
    pb::command::Kind::ArmBackupSchedule(pb::ArmBackupSchedule { since_ms: since.0 })
}

/// The wire form of `RequestBackup`.
pub(super) fn encode_request(by: &str, reason: &str) -> pb::command::Kind {
    pb::command::Kind::RequestBackup(pb::RequestBackup {
        by: by.to_string(),
        reason: reason.to_string(),
    })
}

/// The wire form of `GrantBackupLease`.
pub(super) fn encode_grant(
    id: BackupId,
    node: NodeId,
    trigger: &BackupTrigger,
    attempt: u32,
    max_duration_ms: u64,
    reason: &str,
) -> pb::command::Kind {
    pb::command::Kind::GrantBackupLease(pb::GrantBackupLease {
        id: id.0,
        node: node.get(),
        trigger: Some(encode_trigger(trigger)),
        attempt,
        max_duration_ms,
        reason: reason.to_string(),
    })
}

/// The wire form of `FinishBackup`.
pub(super) fn encode_finish(
    id: BackupId,
    verified: bool,
    expired: bool,
    reason: &str,
    summary: &BackupSummary,
) -> pb::command::Kind {
    pb::command::Kind::FinishBackup(pb::FinishBackup {
        id: id.0,
        verified,
        expired,
        reason: reason.to_string(),
        summary: Some(encode_summary(summary)),
    })
}

/// Decodes a backup command's wire form; `Ok(None)` for the other commands.
pub(super) fn decode_command(kind: &pb::command::Kind) -> Result<Option<Command>, CodecError> {
    use pb::command::Kind;
    Ok(Some(match kind.clone() {
        Kind::ArmBackupSchedule(m) => Command::ArmBackupSchedule {
            since: UnixMillis(m.since_ms),
        },
        Kind::RequestBackup(m) => {
            if m.by.is_empty() {
                return Err(bad(
                    "command.request_backup.by",
                    "a request must say who asked".into(),
                ));
            }
            Command::RequestBackup {
                by: text("command.request_backup.by", m.by)?,
                reason: text("command.request_backup.reason", m.reason)?,
            }
        }
        Kind::GrantBackupLease(m) => Command::GrantBackupLease {
            id: backup_id(m.id, "command.grant_backup_lease.id")?,
            node: node_id(m.node, "command.grant_backup_lease.node")?,
            trigger: decode_trigger(m.trigger)?,
            attempt: m.attempt,
            max_duration_ms: m.max_duration_ms,
            reason: m.reason,
        },
        Kind::FinishBackup(m) => Command::FinishBackup {
            id: backup_id(m.id, "command.finish_backup.id")?,
            verified: m.verified && !m.expired,
            expired: m.expired,
            reason: text("command.finish_backup.reason", m.reason)?,
            summary: decode_summary(m.summary, "command.finish_backup.summary")?,
        },
        _ => return Ok(None),
    }))
}

/// The wire form of a runner's report.
pub fn encode_run(r: &BackupRun) -> pb::BackupRun {
    pb::BackupRun {
        id: r.id.0,
        phase: r.phase.clone(),
        bytes: r.bytes,
        elapsed_ms: r.elapsed_ms,
        done: r.done,
        verified: r.verified,
        reason: r.reason.clone(),
        summary: Some(encode_summary(&r.summary)),
    }
}

/// Decodes and checks a runner's report.
pub fn decode_run(r: pb::BackupRun) -> Result<BackupRun, CodecError> {
    Ok(BackupRun {
        id: backup_id(r.id, "health_report.backup_run.id")?,
        phase: text("health_report.backup_run.phase", r.phase)?,
        bytes: r.bytes,
        elapsed_ms: r.elapsed_ms,
        done: r.done,
        verified: r.verified && r.done,
        reason: text("health_report.backup_run.reason", r.reason)?,
        summary: decode_summary(r.summary, "health_report.backup_run.summary")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_entry, encode_entry, Proposal, ProposalId};
    use crate::ids::NodeId;

    fn summary() -> BackupSummary {
        BackupSummary {
            components: vec![ComponentSummary {
                component: Component::Db,
                bytes: 12_345,
                sha256: "ab".repeat(32),
                duration_ms: 4_000,
                snapshot: "1a2b3c4d".into(),
            }],
            galera_position: "6d5c7e2a-0000-11ef-8000-0242ac120002:1234".into(),
            redis_offset: Some(99),
            version: "0.1.0".into(),
            duration_ms: 9_000,
        }
    }

    fn roundtrip(command: Command) -> Result<Command, CodecError> {
        let p = Proposal {
            id: ProposalId {
                node: NodeId(1),
                seq: 7,
            },
            at: UnixMillis(1_000),
            command,
        };
        decode_entry(&encode_entry(&p)).map(|p| p.command)
    }

    /// Every backup command survives the wire unchanged.
    #[test]
    fn commands_roundtrip() {
        let commands = [
            Command::ArmBackupSchedule {
                since: UnixMillis(1_796_493_600_000),
            },
            Command::RequestBackup {
                by: "api@n2".into(),
                reason: "before the upgrade".into(),
            },
            Command::GrantBackupLease {
                id: BackupId(3),
                node: NodeId(2),
                trigger: BackupTrigger::Scheduled {
                    window: UnixMillis(1_796_493_600_000),
                },
                attempt: 2,
                max_duration_ms: 7_200_000,
                reason: "retry".into(),
            },
            Command::GrantBackupLease {
                id: BackupId(4),
                node: NodeId(3),
                trigger: BackupTrigger::Manual {
                    request: LogIndex(42),
                },
                attempt: 1,
                max_duration_ms: 60_000,
                reason: "now".into(),
            },
            Command::FinishBackup {
                id: BackupId(4),
                verified: true,
                expired: false,
                reason: "verified: 3 components".into(),
                summary: summary(),
            },
            Command::FinishBackup {
                id: BackupId(5),
                verified: false,
                expired: true,
                reason: "lease expired".into(),
                summary: BackupSummary::default(),
            },
        ];
        for c in commands {
            assert_eq!(roundtrip(c.clone()).ok(), Some(c));
        }
    }

    /// Bad fields are refused, naming the field.
    #[test]
    fn bad_fields_are_named() {
        let mut bad_digest = summary();
        bad_digest.components[0].sha256 = "xyz".into();
        let mut twice = summary();
        twice.components.push(twice.components[0].clone());
        let cases = [
            (
                Command::GrantBackupLease {
                    id: BackupId(0),
                    node: NodeId(2),
                    trigger: BackupTrigger::Scheduled {
                        window: UnixMillis(1),
                    },
                    attempt: 1,
                    max_duration_ms: 1,
                    reason: String::new(),
                },
                "command.grant_backup_lease.id",
            ),
            (
                Command::GrantBackupLease {
                    id: BackupId(1),
                    node: NodeId(0),
                    trigger: BackupTrigger::Manual {
                        request: LogIndex(3),
                    },
                    attempt: 1,
                    max_duration_ms: 1,
                    reason: String::new(),
                },
                "command.grant_backup_lease.node",
            ),
            (
                Command::FinishBackup {
                    id: BackupId(1),
                    verified: true,
                    expired: false,
                    reason: String::new(),
                    summary: bad_digest,
                },
                "is not a SHA-256 digest",
            ),
            (
                Command::FinishBackup {
                    id: BackupId(1),
                    verified: true,
                    expired: false,
                    reason: String::new(),
                    summary: twice,
                },
                "listed twice",
            ),
            (
                Command::RequestBackup {
                    by: String::new(),
                    reason: "x".into(),
                },
                "must say who asked",
            ),
        ];
        for (c, needle) in cases {
            let e = roundtrip(c.clone())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(needle), "{c:?}: `{e}`");
        }
    }

    /// A runner's report survives the wire; a bad one is refused.
    #[test]
    fn run_reports_roundtrip() {
        let run = BackupRun {
            id: BackupId(3),
            phase: "done".into(),
            bytes: 10,
            elapsed_ms: 5_000,
            done: true,
            verified: true,
            reason: "verified".into(),
            summary: summary(),
        };
        assert_eq!(decode_run(encode_run(&run)).ok(), Some(run));
        let mut bad = encode_run(&BackupRun::default());
        bad.id = 0;
        assert!(decode_run(bad).is_err());
        // `verified` without `done` is not a result.
        let mut early = encode_run(&BackupRun {
            id: BackupId(1),
            ..BackupRun::default()
        });
        early.verified = true;
        assert_eq!(decode_run(early).map(|r| r.verified).ok(), Some(false));
    }
}
