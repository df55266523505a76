//! Forced Redis failover: an operator makes a named replica the master when the cluster will
//! not do it by itself (automatic failover off, maintenance, hold-down, or a dead master the
//! decision is still waiting on). Runs in the agent that received `POST /v1/redis/failover`
//! ([`request`]); `triad failover redis --to N` calls it.
//!
//! Unlike a switchover, nothing is paused and nothing waits for the target to catch up: the
//! old master is assumed broken. What keeps it safe is the old master's side:
//! 1. Check: a master is committed, the target is another member whose Redis answers here.
//! 2. The old master must not take writes once the new one exists:
//!    - it answers here: it is fenced first (`min-replicas-to-write` raised), so it refuses
//!      writes from then on whatever its agent does (its agent keeps it fenced: it is no
//!      longer the committed master);
//!    - it does not answer here: refused unless a majority of fresh agents see it down too
//!      (a master unreachable from this node only may be serving the others).
//! 3. Commit `SetRedisMaster { to, epoch + 1, Forced }` with the operator's reason and the
//!    evidence. Automatic decisions named the epoch they saw, so one that raced this change is
//!    rejected when it applies; a forced change arms no hold-down (the operator chose).
//! 4. Promote the target (`REPLICAOF NO ONE`) and point every other Redis that answers at it,
//!    as the agents do (they do not change roles in maintenance, when an operator is most
//!    likely to need this; both actions are idempotent, so racing an agent is harmless).
//! 5. Wait (bounded) until the target's Redis is a master and writable: its agent unfences it
//!    and every agent points its HAProxy at it.
//!
//! Every step is reported with its time since the start, and the change is in the audit
//! history with who asked, why and on what evidence.
//!
//! Caveats: writes the old master acknowledged and had not replicated to the target are lost,
//! as in any failover of an asynchronous replica (step 1 shows the target's offset).

// Reads the clock (adapter: a failover waits on real time); see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::actuator::redis::{RedisAction, RedisControl, RedisServer};
use crate::cluster::{ChangeKind, Command, Outcome};
use crate::driver::ProposeError;
use crate::ids::{Epoch, LogIndex, NodeId};
use crate::probe::redis_info::RedisRole;
use crate::status::Handles;

use super::redis::RequestError;

/// What to do.
#[derive(Clone, Debug)]
pub struct FailoverSpec {
    /// The committed master.
    pub from: NodeId,
    /// The node to promote.
    pub to: NodeId,
    /// Its Redis address, as the others follow it.
    pub to_addr: std::net::SocketAddr,
    /// The committed epoch (the change commits at `epoch + 1`).
    pub epoch: Epoch,
    /// The operator's reason (audit).
    pub reason: String,
    /// Who asked (audit).
    pub by: String,
    /// How many fresh agents see the old master down, of how many members.
    pub down_from: (usize, usize),
    /// Longest wait for the target to become a writable master after the commit.
    pub promote_wait: Duration,
}

/// What happened, step by step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FailoverReport {
    /// The old master.
    pub from: NodeId,
    /// The new master.
    pub to: NodeId,
    /// The new epoch.
    pub epoch: Epoch,
    /// Log index of the committed change.
    pub index: LogIndex,
    /// How the old master was kept from taking writes (`fenced`, or `down from k/n agents`).
    pub old_master: String,
    /// Whether the target was seen as a writable master before the answer.
    pub promoted: bool,
    /// One line per step, in order, with its time since the start.
    pub steps: Vec<String>,
}

/// Why a forced failover did not happen.
#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    /// Refused in the current state; nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// The change was not committed (or the outcome is in doubt: the message says which).
    #[error("{0}")]
    Commit(String),
}

fn step(start: Instant, steps: &mut Vec<String>, s: impl Into<String>) {
    let line = format!(
        "{:>6.1} ms  {}",
        start.elapsed().as_secs_f64() * 1000.0,
        s.into()
    );
    tracing::info!(step = %line, "forced failover");
    steps.push(line);
}

/// Runs a forced failover; `propose` commits a command and answers its log index once applied
/// here, or why not.
pub async fn run<P, F>(
    spec: &FailoverSpec,
    master: &dyn RedisControl,
    target: &dyn RedisControl,
    others: &[(NodeId, &dyn RedisControl)],
    propose: P,
) -> Result<FailoverReport, FailoverError>
where
    P: FnOnce(Command) -> F,
    F: Future<Output = Result<LogIndex, ProposeError>>,
{
    let start = Instant::now();
    let mut steps = Vec::new();
    // 1. The target answers.
    let t = target.info().await.map_err(|e| {
        FailoverError::Refused(format!(
            "target {}'s Redis does not answer ({e}); pick a replica that runs",
            spec.to
        ))
    })?;
    step(
        start,
        &mut steps,
        format!(
            "checked: {}'s Redis answers ({}, offset {})",
            spec.to,
            t.role.map_or("unknown role", |r| r.as_str()),
            t.slave_repl_offset
                .or(t.master_repl_offset)
                .map_or_else(|| "unknown".into(), |o| o.to_string())
        ),
    );
    // 2. The old master takes no more writes.
    let (down, members) = spec.down_from;
    let quorum = members / 2 + 1;
    let old_master = match master.info().await {
        Ok(_) => {
            master
                .apply(&RedisAction::Fence, spec.epoch)
                .await
                .map_err(|e| {
                    FailoverError::Refused(format!(
                        "old master {} answers but could not be fenced ({e}); nothing changed",
                        spec.from
                    ))
                })?;
            step(
                start,
                &mut steps,
                format!(
                    "fenced old master {} (it answers: writes refused)",
                    spec.from
                ),
            );
            "fenced".to_string()
        }
        Err(e) if down >= quorum => {
            step(
                start,
                &mut steps,
                format!(
                    "old master {} does not answer here ({e}) and is down as seen from \
                     {down}/{members} agents",
                    spec.from
                ),
            );
            format!("down from {down}/{members} agents")
        }
        Err(e) => {
            return Err(FailoverError::Refused(format!(
                "old master {} does not answer here ({e}), but only {down}/{members} agents see \
                 it down (a majority must): it may be serving the others; nothing changed",
                spec.from
            )))
        }
    };
    // 3. Commit.
    let epoch = spec.epoch.next();
    let command = Command::SetRedisMaster {
        node: spec.to,
        epoch,
        kind: ChangeKind::Forced,
        suspect: None,
        reason: format!(
            "forced by {}: {}; old master {} {old_master}",
            spec.by, spec.reason, spec.from
        ),
    };
    let index = match propose(command).await {
        Ok(i) => i,
        Err(ProposeError::Timeout { after, leader }) => {
            return Err(FailoverError::Commit(format!(
                "outcome unknown: not applied here within {after:?} (leader {leader}); it may \
                 still commit; old master {} {old_master}; check `triad status` before retrying",
                spec.from
            )))
        }
        Err(e) => {
            return Err(FailoverError::Commit(format!(
                "the change was not committed: {e}; old master {} {old_master}",
                spec.from
            )))
        }
    };
    step(
        start,
        &mut steps,
        format!(
            "committed: {} master at epoch {epoch} (index {index})",
            spec.to
        ),
    );
    // 4. Promote the target, point the others at it.
    match target.apply(&RedisAction::Promote, epoch).await {
        Ok(()) => step(start, &mut steps, format!("promoted {}", spec.to)),
        Err(e) => step(
            start,
            &mut steps,
            format!("promoting {} failed ({e}); its agent retries", spec.to),
        ),
    }
    let follow = RedisAction::Follow(spec.to_addr);
    for (n, server) in std::iter::once((spec.from, master)).chain(others.iter().copied()) {
        if server.info().await.is_err() {
            continue;
        }
        match server.apply(&follow, epoch).await {
            Ok(()) => step(start, &mut steps, format!("{n} follows {}", spec.to)),
            Err(e) => step(
                start,
                &mut steps,
                format!("{n} could not follow {} ({e}); its agent retries", spec.to),
            ),
        }
    }
    // 5. The target's agent unfences it.
    let deadline = Instant::now() + spec.promote_wait;
    let promoted = loop {
        let writable = match (target.info().await, target.is_fenced().await) {
            (Ok(i), Ok(fenced)) => i.role == Some(RedisRole::Master) && !fenced,
            _ => false,
        };
        if writable || Instant::now() >= deadline {
            break writable;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    step(
        start,
        &mut steps,
        if promoted {
            format!("{} is master and takes writes", spec.to)
        } else {
            format!(
                "{} is not a writable master yet after {:?} (its agent unfences it once it \
                 applied the change; check `triad status`)",
                spec.to, spec.promote_wait
            )
        },
    );
    Ok(FailoverReport {
        from: spec.from,
        to: spec.to,
        epoch,
        index,
        old_master,
        promoted,
        steps,
    })
}

/// Serves `POST /v1/redis/failover`: checks the request against the committed state and the
/// health store, then [`run`]s it. One switchover or failover at a time per agent.
pub async fn request(
    h: &Arc<Handles>,
    to: NodeId,
    reason: &str,
) -> Result<FailoverReport, RequestError> {
    use RequestError::{BadRequest, Conflict, Internal};
    let cfg = &h.config.config;
    let (rcfg, core, authority, from) = super::redis::committed_master(h)?;
    let reason = reason.trim();
    if reason.is_empty() || reason.len() > 200 {
        return Err(BadRequest(
            "reason: say why, in 1 to 200 characters (it goes into the audit history)".into(),
        ));
    }
    let addr_of = |n: NodeId| h.config.members.iter().find(|m| m.id == n)?.redis_addr;
    if to == from {
        return Err(Conflict(format!("{to} is already the Redis master")));
    }
    let (Some(from_addr), Some(to_addr)) = (addr_of(from), addr_of(to)) else {
        return Err(BadRequest(format!(
            "{to} is not a member with a Redis address (peers[].redis_addr)"
        )));
    };
    let members: Vec<NodeId> = h.config.members.iter().map(|m| m.id).collect();
    let freshness = cfg.failover.settings().freshness_ms;
    let now = h.liveness.mono_ms();
    let down = match core.health.lock() {
        Ok(hs) => {
            crate::decide::redis::down_count(&hs.all(now), &hs.report_ages(now), from, freshness)
        }
        // Unknown: nobody counts as seeing it down (the refusal errs towards no action).
        Err(_) => 0,
    };
    if h.switchover_busy.swap(true, Ordering::SeqCst) {
        return Err(Conflict(
            "a switchover or failover is already running through this agent; wait for it".into(),
        ));
    }
    let _busy = super::redis::Busy(h.switchover_busy.clone());
    let fo = &cfg.failover;
    let server = |addr| RedisServer::from_config(addr, rcfg, fo);
    let (master, target) = match (server(from_addr), server(to_addr)) {
        (Ok(m), Ok(t)) => (m, t),
        (Err(e), _) | (_, Err(e)) => return Err(Internal(e.to_string())),
    };
    let mut others = Vec::new();
    for m in h
        .config
        .members
        .iter()
        .filter(|m| m.id != from && m.id != to)
    {
        if let Some(addr) = m.redis_addr {
            others.push((m.id, server(addr).map_err(|e| Internal(e.to_string()))?));
        }
    }
    let others: Vec<(NodeId, &dyn RedisControl)> = others
        .iter()
        .map(|(n, s)| (*n, s as &dyn RedisControl))
        .collect();
    let spec = FailoverSpec {
        from,
        to,
        to_addr,
        epoch: authority.epoch,
        reason: reason.to_string(),
        by: format!("api@{}", h.config.node_id()),
        down_from: (down, members.len()),
        promote_wait: Duration::from_secs(5),
    };
    let handles = h.clone();
    let propose = |command: Command| async move {
        let applied = handles.propose(command).await?;
        match applied.outcome {
            Outcome::Rejected(why) => Err(ProposeError::Refused(format!("rejected: {why}"))),
            _ => Ok(applied.index),
        }
    };
    let result = run(&spec, &master, &target, &others, propose).await;
    match &result {
        Ok(r) => tracing::warn!(%from, %to, epoch = %r.epoch, reason = %spec.reason,
            old_master = %r.old_master, "forced failover committed"),
        Err(e) => tracing::warn!(%from, %to, error = %e, "forced failover refused or failed"),
    }
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuator::redis::SimRedis;
    use crate::probe::redis_info::RedisInfo;

    fn spec(down: usize) -> FailoverSpec {
        FailoverSpec {
            from: NodeId(1),
            to: NodeId(2),
            to_addr: "10.0.0.2:6379".parse().expect("addr"),
            epoch: Epoch(4),
            reason: "test".into(),
            by: "test".into(),
            down_from: (down, 3),
            promote_wait: Duration::from_millis(100),
        }
    }

    fn replica() -> SimRedis {
        SimRedis::new(RedisInfo {
            role: Some(RedisRole::Replica),
            slave_repl_offset: Some(90),
            ..RedisInfo::default()
        })
    }

    fn master() -> SimRedis {
        SimRedis::new(RedisInfo {
            role: Some(RedisRole::Master),
            master_repl_offset: Some(100),
            ..RedisInfo::default()
        })
    }

    /// (old master answers, agents that see it down, target answers) -> committed?, and what
    /// the refusal or the answer says.
    #[tokio::test]
    async fn old_master_is_fenced_or_down_from_a_majority_before_anything_commits() {
        let cases: [(bool, usize, bool, Result<&str, &str>); 5] = [
            (true, 0, true, Ok("fenced")),
            (false, 2, true, Ok("down from 2/3 agents")),
            (false, 1, true, Err("only 1/3 agents see it down")),
            (true, 3, false, Err("target n2's Redis does not answer")),
            (false, 3, false, Err("target n2's Redis does not answer")),
        ];
        for (answers, down, target_up, expected) in cases {
            let old = master();
            if !answers {
                old.with(|s| s.down = true);
            }
            let target = replica();
            if !target_up {
                target.with(|s| s.down = true);
            }
            let third = replica();
            let mut proposed = None;
            let r = run(&spec(down), &old, &target, &[(NodeId(3), &third)], |c| {
                proposed = Some(c);
                async { Ok(LogIndex(9)) }
            })
            .await;
            match (r, expected) {
                (Ok(report), Ok(how)) => {
                    assert_eq!(report.old_master, how);
                    assert_eq!(report.epoch, Epoch(5));
                    assert_eq!(report.index, LogIndex(9));
                    assert_eq!(
                        old.snapshot().fenced,
                        answers,
                        "fenced only when it answers"
                    );
                    let t = target.snapshot();
                    assert_eq!(
                        t.info.role,
                        Some(RedisRole::Master),
                        "the target is promoted"
                    );
                    let follows = |s: &SimRedis| s.snapshot().info.master_host;
                    assert_eq!(follows(&third).as_deref(), Some("10.0.0.2"));
                    assert_eq!(
                        follows(&old).as_deref(),
                        answers.then_some("10.0.0.2"),
                        "the old master follows when it answers"
                    );
                    match proposed {
                        Some(Command::SetRedisMaster {
                            node,
                            epoch,
                            kind,
                            reason,
                            ..
                        }) => {
                            assert_eq!(
                                (node, epoch, kind),
                                (NodeId(2), Epoch(5), ChangeKind::Forced)
                            );
                            assert!(reason.contains("forced by test: test"), "{reason}");
                        }
                        other => panic!("proposed {other:?}"),
                    }
                }
                (Err(e), Err(why)) => {
                    assert!(e.to_string().contains(why), "{e}");
                    assert!(proposed.is_none(), "nothing commits when refused");
                    assert!(!old.snapshot().fenced, "refused before any fence: {e}");
                }
                (r, e) => panic!("expected {e:?}, got {r:?}"),
            }
        }
    }
}
