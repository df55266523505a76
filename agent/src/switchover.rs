//! Planned Redis switchover: move the master to another node without losing an acknowledged
//! write. Runs in the agent that received `POST /v1/redis/switchover` (an adapter: it talks to
//! the two Redis servers and proposes one command).
//!
//! Steps:
//! 1. Check: a master is committed, the target is another member whose Redis is a replica of
//!    the master with its link up.
//! 2. `CLIENT PAUSE WRITE` on the master, bounded by `pause`: clients' writes wait, nothing
//!    new is acknowledged from here on.
//! 3. Wait until the target's replication offset reaches the master's (bounded by
//!    `catch_up`); on timeout, unpause and fail: nothing changed.
//! 4. Commit `SetRedisMaster { to, epoch + 1, Switchover }`. On failure, unpause: nothing
//!    changed (or, when the commit only timed out, the agents converge on whatever committed).
//! 5. Fence the old master (`min-replicas-to-write`), so that even if its agent is slow, the
//!    writes held by the pause are refused once the pause ends. Its own agent then turns it
//!    into a replica of the target (and cuts its clients), the target's agent promotes it, and
//!    every HAProxy moves to the target.
//! 6. Wait (bounded by `demote_wait`) until the old master is a replica, then unpause it.
//!
//! Every write acknowledged before step 2 is on the target by step 3; every write held by the
//! pause fails (fenced or `READONLY`) and is never acknowledged; clients reconnect through
//! HAProxy to the new master.
//!
//! Caveats: one switchover at a time per agent is enforced by the API; two operators asking two
//! agents at once race on the epoch compare-and-set, and the loser's command is rejected (its
//! pause is lifted).

use std::future::Future;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::actuator::redis::{RedisAction, RedisControl};
use crate::cluster::{ChangeKind, Command};
use crate::ids::{Epoch, LogIndex, NodeId};
use crate::probe::redis_info::RedisRole;

/// What to do.
#[derive(Clone, Debug)]
pub struct SwitchoverSpec {
    /// The committed master.
    pub from: NodeId,
    /// The target.
    pub to: NodeId,
    /// The committed epoch (the change commits at `epoch + 1`).
    pub epoch: Epoch,
    /// Address of the master as replicas name it (`host`, `port`).
    pub from_addr: std::net::SocketAddr,
    /// Longest write pause.
    pub pause: Duration,
    /// Longest wait for the target to catch up.
    pub catch_up: Duration,
    /// Longest wait for the old master to become a replica.
    pub demote_wait: Duration,
    /// Who asked (for the audit history).
    pub by: String,
}

/// What happened, step by step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SwitchoverReport {
    /// The old master.
    pub from: NodeId,
    /// The new master.
    pub to: NodeId,
    /// The new epoch.
    pub epoch: Epoch,
    /// Log index of the committed change.
    pub index: LogIndex,
    /// The replication offset the target reached before the change.
    pub offset: i64,
    /// How long client writes were paused, in milliseconds.
    pub paused_ms: u64,
    /// Whether the old master was seen as a replica before the pause was lifted.
    pub old_master_demoted: bool,
    /// One line per step, in order, with its time since the start.
    pub steps: Vec<String>,
}

/// Why a switchover did not happen (or did not finish cleanly).
#[derive(Debug, thiserror::Error)]
pub enum SwitchoverError {
    /// The request cannot be satisfied in the current state; nothing was changed.
    #[error("{0}")]
    Precondition(String),
    /// A Redis server failed; the pause (if any) was lifted; nothing was committed.
    #[error("{0}")]
    Redis(String),
    /// The target did not catch up in time; the pause was lifted; nothing was committed.
    #[error(
        "target {to} reached offset {reached} but the master is at {want} after {after:?}; \
         writes resumed, nothing changed; retry when replication is idle"
    )]
    CatchUp {
        /// The target.
        to: NodeId,
        /// Its offset.
        reached: i64,
        /// The master's.
        want: i64,
        /// The wait.
        after: Duration,
    },
    /// The change was not committed; the pause was lifted.
    #[error("the change was not committed: {0}; writes resumed on the old master")]
    Commit(String),
}

struct Clock {
    start: Instant,
    steps: Vec<String>,
}

impl Clock {
    fn step(&mut self, s: impl Into<String>) {
        let line = format!(
            "{:>6.1} ms  {}",
            self.start.elapsed().as_secs_f64() * 1000.0,
            s.into()
        );
        tracing::info!(step = %line, "switchover");
        self.steps.push(line);
    }
}

/// Runs a switchover; `propose` commits a command and answers its log index or why not.
pub async fn run<P, F>(
    spec: &SwitchoverSpec,
    master: &dyn RedisControl,
    target: &dyn RedisControl,
    propose: P,
) -> Result<SwitchoverReport, SwitchoverError>
where
    P: FnOnce(Command) -> F,
    F: Future<Output = Result<LogIndex, String>>,
{
    let mut clock = Clock {
        start: Instant::now(),
        steps: Vec::new(),
    };
    let redis = |who: NodeId, e: crate::actuator::redis::RedisActionError| {
        SwitchoverError::Redis(format!("{who}: {e}"))
    };
    // 1. The target replicates the master with its link up.
    let t = target.info().await.map_err(|e| redis(spec.to, e))?;
    let follows = t.role == Some(RedisRole::Replica)
        && t.master_host.as_deref() == Some(&spec.from_addr.ip().to_string())
        && t.master_port == Some(spec.from_addr.port())
        && t.master_link_up == Some(true);
    if !follows {
        return Err(SwitchoverError::Precondition(format!(
            "target {} is not a linked replica of master {} ({:?} of {:?}:{:?}, link {:?}); \
             wait until it is, or pick another target",
            spec.to, spec.from, t.role, t.master_host, t.master_port, t.master_link_up
        )));
    }
    clock.step(format!(
        "checked: {} replicates {} with its link up",
        spec.to, spec.from
    ));
    // 2. Pause writes.
    let pause_ms = spec.pause.as_millis() as u64;
    master
        .pause_writes(pause_ms)
        .await
        .map_err(|e| redis(spec.from, e))?;
    let paused_at = Instant::now();
    clock.step(format!(
        "paused writes on {} (at most {pause_ms} ms)",
        spec.from
    ));
    let resume = |why: &'static str| async move {
        if let Err(e) = master.unpause().await {
            tracing::warn!(error = %e, why, "switchover: unpausing the master failed; the pause ends by itself");
        }
    };
    // 3. Wait for the target to catch up.
    let want = match master.info().await {
        Ok(i) => i.master_repl_offset.unwrap_or(0),
        Err(e) => {
            resume("master info failed").await;
            return Err(redis(spec.from, e));
        }
    };
    let deadline = Instant::now() + spec.catch_up;
    let reached = loop {
        let got = match target.info().await {
            Ok(i) => i.slave_repl_offset.unwrap_or(-1),
            Err(e) => {
                resume("target info failed").await;
                return Err(redis(spec.to, e));
            }
        };
        if got >= want {
            break got;
        }
        if Instant::now() >= deadline {
            resume("catch-up timed out").await;
            return Err(SwitchoverError::CatchUp {
                to: spec.to,
                reached: got,
                want,
                after: spec.catch_up,
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    clock.step(format!("{} caught up: offset {reached} >= {want}", spec.to));
    // 4. Commit.
    let epoch = spec.epoch.next();
    let command = Command::SetRedisMaster {
        node: spec.to,
        epoch,
        kind: ChangeKind::Switchover,
        suspect: None,
        reason: format!(
            "switchover asked by {}: {} caught up at offset {reached}",
            spec.by, spec.to
        ),
    };
    let index = match propose(command).await {
        Ok(i) => i,
        Err(e) => {
            resume("commit failed").await;
            return Err(SwitchoverError::Commit(e));
        }
    };
    clock.step(format!(
        "committed: {} is master at epoch {epoch} (index {index})",
        spec.to
    ));
    // 5. Fence the old master, whatever its agent does next.
    if let Err(e) = master.apply(&RedisAction::Fence, epoch).await {
        clock.step(format!(
            "could not fence {} ({e}); its agent will",
            spec.from
        ));
    } else {
        clock.step(format!("fenced {}", spec.from));
    }
    // 6. Wait for the old master's agent to make it a replica, then lift the pause.
    let deadline = Instant::now() + spec.demote_wait;
    let mut demoted = false;
    while Instant::now() < deadline {
        if let Ok(i) = master.info().await {
            if i.role == Some(RedisRole::Replica) {
                demoted = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    resume("done").await;
    let paused_ms = paused_at.elapsed().as_millis() as u64;
    clock.step(if demoted {
        format!(
            "{} is a replica; writes resumed after {paused_ms} ms",
            spec.from
        )
    } else {
        format!(
            "{} not yet a replica after {:?}; it stays fenced; writes resumed after {paused_ms} ms",
            spec.from, spec.demote_wait
        )
    });
    Ok(SwitchoverReport {
        from: spec.from,
        to: spec.to,
        epoch,
        index,
        offset: reached,
        paused_ms,
        old_master_demoted: demoted,
        steps: clock.steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuator::redis::SimRedis;
    use crate::probe::redis_info::RedisInfo;

    fn spec() -> SwitchoverSpec {
        SwitchoverSpec {
            from: NodeId(1),
            to: NodeId(2),
            epoch: Epoch(4),
            from_addr: "10.0.0.1:6379".parse().expect("addr"),
            pause: Duration::from_secs(2),
            catch_up: Duration::from_millis(50),
            demote_wait: Duration::from_millis(50),
            by: "test".into(),
        }
    }

    fn servers(target_offset: i64) -> (SimRedis, SimRedis) {
        let master = SimRedis::new(RedisInfo {
            role: Some(RedisRole::Master),
            master_repl_offset: Some(100),
            ..RedisInfo::default()
        });
        let target = SimRedis::new(RedisInfo {
            role: Some(RedisRole::Replica),
            master_host: Some("10.0.0.1".into()),
            master_port: Some(6379),
            master_link_up: Some(true),
            slave_repl_offset: Some(target_offset),
            ..RedisInfo::default()
        });
        (master, target)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn caught_up_target_is_committed_and_old_master_fenced_and_unpaused() {
        let (master, target) = servers(100);
        let mut proposed = None;
        let r = rt().block_on(run(&spec(), &master, &target, |c| {
            proposed = Some(c);
            async { Ok(LogIndex(42)) }
        }));
        let r = r.expect("switchover");
        assert_eq!(
            (r.to, r.epoch, r.index),
            (NodeId(2), Epoch(5), LogIndex(42))
        );
        assert!(matches!(
            proposed,
            Some(Command::SetRedisMaster {
                node: NodeId(2),
                epoch: Epoch(5),
                kind: ChangeKind::Switchover,
                ..
            })
        ));
        let m = master.snapshot();
        assert!(m.fenced && !m.paused, "{m:?}");
        // Nobody demoted the sim master: reported, not hidden.
        assert!(!r.old_master_demoted);
    }

    #[test]
    fn lagging_target_changes_nothing_and_resumes_writes() {
        let (master, target) = servers(90);
        let mut called = false;
        let r = rt().block_on(run(&spec(), &master, &target, |_| {
            called = true;
            async { Ok(LogIndex(1)) }
        }));
        let e = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.contains("reached offset 90") && e.contains("at 100"),
            "{e}"
        );
        assert!(!called);
        let m = master.snapshot();
        assert!(!m.paused && !m.fenced, "{m:?}");
    }

    #[test]
    fn failed_commit_resumes_writes() {
        let (master, target) = servers(100);
        let r = rt().block_on(run(&spec(), &master, &target, |_| async {
            Err("no leader".to_string())
        }));
        assert!(matches!(r, Err(SwitchoverError::Commit(_))));
        assert!(!master.snapshot().paused);
    }

    #[test]
    fn target_not_following_is_refused_before_any_pause() {
        let (master, target) = servers(100);
        target.with(|s| s.info.master_link_up = Some(false));
        let r = rt().block_on(run(&spec(), &master, &target, |_| async {
            Ok(LogIndex(1))
        }));
        assert!(matches!(r, Err(SwitchoverError::Precondition(_))));
        assert!(master.snapshot().log.is_empty());
    }
}
