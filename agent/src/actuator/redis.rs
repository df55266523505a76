//! The Redis actuator: turns this node's Redis into what the committed authority says (master
//! or replica of the committed master), fences it when this agent lost its lease, and runs the
//! steps of a planned switchover.
//!
//! Fencing mechanism: `CONFIG SET min-replicas-to-write N` with N larger than the number of
//! replicas that can exist. Redis then refuses every write with `NOREPLICAS` at once, keeps its
//! data and its role, and needs no restart; unfencing restores the configured value. Chosen
//! over `CLIENT PAUSE WRITE` (clients would hang instead of failing fast, and a pause has a
//! deadline) and over demotion with `REPLICAOF` (it would start a sync against some master and
//! could discard writes the new master never saw before an operator can look at them).
//!
//! Planning is pure ([`plan_local`]); the [`RedisControl`] trait has a real implementation
//! ([`RedisServer`]) and a simulated one ([`SimRedis`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use crate::cluster::RedisAuthority;
use crate::ids::{Epoch, NodeId};
use crate::probe::redis_info::{RedisInfo, RedisRole};

/// The `min-replicas-to-write` value that fences: more replicas than a cluster can have.
pub const FENCE_MIN_REPLICAS: u32 = 1000;

/// One step towards the committed Redis state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisAction {
    /// `REPLICAOF NO ONE`: this node is the committed master.
    Promote,
    /// `REPLICAOF host port`: follow the committed master.
    Follow(SocketAddr),
    /// Refuse writes (lease lost while master).
    Fence,
    /// Accept writes again with the configured `min-replicas-to-write`.
    Unfence,
}

/// What the local planner needs.
#[derive(Clone, Debug)]
pub struct LocalRedis<'a> {
    /// This node.
    pub me: NodeId,
    /// The committed authority.
    pub authority: &'a RedisAuthority,
    /// Redis address of every member.
    pub addrs: &'a std::collections::BTreeMap<NodeId, SocketAddr>,
    /// The local server as last seen (None when unknown or unreachable).
    pub info: Option<&'a RedisInfo>,
    /// Whether the local server is currently fenced (as last set or read).
    pub fenced: Option<bool>,
    /// Whether this agent holds its lease (in contact with a quorum).
    pub has_lease: bool,
}

/// Plans the actions that bring the local Redis to the committed state. Pure; empty when
/// converged. Order matters: fencing comes first, a promotion unfences only after the role
/// changed. While the master is suspected, the other nodes' Redis detach from it (fenced
/// `REPLICAOF NO ONE`) until the promotion says whom to follow.
pub fn plan_local(l: &LocalRedis<'_>) -> Vec<RedisAction> {
    let Some(info) = l.info else {
        return vec![];
    };
    let mut out = Vec::new();
    let is_master = info.role == Some(RedisRole::Master);
    if !l.has_lease {
        // A minority must never keep a writable master.
        if is_master && l.fenced != Some(true) {
            out.push(RedisAction::Fence);
        }
        return out;
    }
    let Some(master) = l.authority.master else {
        return out;
    };
    if let Some(suspect) = l.authority.suspect.as_ref().filter(|s| s.node == master) {
        if suspect.node != l.me {
            // Detach from a suspected master, fenced: once no replica acknowledges it, the
            // suspect refuses writes by itself (`min-replicas-max-lag`), even if it resumes
            // from a hang while its own agent is dead.
            if l.fenced != Some(true) {
                out.push(RedisAction::Fence);
            }
            if !is_master {
                out.push(RedisAction::Promote);
            }
            return out;
        }
    }
    if master == l.me {
        if !is_master {
            out.push(RedisAction::Promote);
        }
        if l.fenced != Some(false) {
            out.push(RedisAction::Unfence);
        }
        return out;
    }
    let Some(&addr) = l.addrs.get(&master) else {
        return out;
    };
    let follows = !is_master
        && info.master_host.as_deref() == Some(&addr.ip().to_string())
        && info.master_port == Some(addr.port());
    let will_fence = is_master && l.fenced != Some(true);
    if will_fence {
        // Refuse writes before anything else: it is not the committed master.
        out.push(RedisAction::Fence);
    }
    if !follows {
        out.push(RedisAction::Follow(addr));
    }
    if will_fence || l.fenced == Some(true) {
        // Once it follows, it rejects writes as a replica; restore the setting so that a
        // later promotion starts clean.
        out.push(RedisAction::Unfence);
    }
    out
}

/// An actuator failure.
#[derive(Debug, thiserror::Error)]
#[error("redis {addr}: {message}")]
pub struct RedisActionError {
    /// The server.
    pub addr: String,
    /// What went wrong.
    pub message: String,
    /// Whether the connection was refused: nothing listens, so (for the local server) the
    /// process is dead. This is proof that it takes no writes; a timeout is not (a stopped or
    /// busy server answers later, with whatever state it had).
    pub refused: bool,
}

/// Commands the actuator sends to a Redis server.
pub trait RedisControl: Send + Sync + 'static {
    /// Runs one action; `epoch` is logged with it.
    fn apply<'a>(
        &'a self,
        action: &'a RedisAction,
        epoch: Epoch,
    ) -> BoxFuture<'a, Result<(), RedisActionError>>;
    /// Reads whether writes are currently fenced.
    fn is_fenced(&self) -> BoxFuture<'_, Result<bool, RedisActionError>>;
    /// Reads the server's replication state and `run_id` (`INFO`).
    fn info(&self) -> BoxFuture<'_, Result<RedisInfo, RedisActionError>>;
    /// `CLIENT PAUSE ms WRITE`: holds every client write (not reads, not replication) for at
    /// most `ms`; used by a planned switchover.
    fn pause_writes(&self, ms: u64) -> BoxFuture<'_, Result<(), RedisActionError>>;
    /// `CLIENT UNPAUSE`.
    fn unpause(&self) -> BoxFuture<'_, Result<(), RedisActionError>>;
}

/// The real server. One connection is kept between calls (the reconciler reads the server
/// every cycle); a call whose command gets no answer on it (a broken connection: the server
/// restarted, or `CLIENT KILL`) drops it and is retried once on a fresh connection, which
/// also tells a dead server (refused) from a broken link. An error *answered* by the server
/// keeps the connection and is not retried. Every call is bounded by the action timeout,
/// and a call cut by it drops the connection (its state is unknown). Every command sent is
/// idempotent (role changes, `CONFIG SET`, `CLIENT KILL`/`PAUSE`/`UNPAUSE`), so the retry is
/// safe even when the first attempt was carried out before its answer was lost.
pub struct RedisServer {
    addr: SocketAddr,
    username: Option<String>,
    password: Option<String>,
    timeout: Duration,
    /// `min-replicas-to-write` when not fenced.
    normal_min_replicas: u32,
    /// `min-replicas-max-lag` (seconds) kept with it.
    normal_max_lag: u64,
    /// The connection kept between calls.
    kept: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
}

/// A command's failure on a connection.
struct CmdError {
    /// The server answered with an error: the connection is fine.
    answered: bool,
    err: RedisActionError,
}

impl RedisServer {
    /// The Redis server at `addr` as configured: `[redis]` credentials (the password file is
    /// read now) and the `[failover]` action timeout and write guard.
    pub fn from_config(
        addr: SocketAddr,
        redis: &crate::config::RedisSection,
        failover: &crate::config::FailoverSection,
    ) -> Result<Self, crate::config::ConfigError> {
        let password = redis
            .password_file
            .as_deref()
            .map(|p| crate::config::read_secret(p, "redis.password_file"))
            .transpose()?;
        Ok(RedisServer::new(
            addr,
            redis.username.clone(),
            password,
            failover.action_timeout,
            failover.redis_min_replicas_to_write,
            failover.redis_min_replicas_max_lag,
        ))
    }

    /// A handle on the server at `addr`.
    pub fn new(
        addr: SocketAddr,
        username: Option<String>,
        password: Option<String>,
        timeout: Duration,
        normal_min_replicas: u32,
        normal_max_lag: Duration,
    ) -> Self {
        RedisServer {
            addr,
            username,
            password,
            timeout,
            normal_min_replicas,
            normal_max_lag: normal_max_lag.as_secs(),
            kept: tokio::sync::Mutex::new(None),
        }
    }

    fn cmd_err(&self, what: impl std::fmt::Display, e: &redis::RedisError) -> CmdError {
        CmdError {
            answered: e.code().is_some(),
            err: self.err(format!("{what}: {e}")),
        }
    }

    /// Runs `op` on the kept connection (see the type's docs).
    async fn on_conn<'a, T>(
        &'a self,
        op: impl Fn(redis::aio::MultiplexedConnection) -> BoxFuture<'a, Result<T, CmdError>>,
    ) -> Result<T, RedisActionError> {
        let mut slot = self.kept.lock().await;
        // Taken out: a call cut by the timeout drops it.
        if let Some(c) = slot.take() {
            match op(c.clone()).await {
                Ok(v) => {
                    *slot = Some(c);
                    return Ok(v);
                }
                Err(e) if e.answered => {
                    *slot = Some(c);
                    return Err(e.err);
                }
                // No answer on the kept connection: judge the server on a fresh one.
                Err(_) => {}
            }
        }
        let c = self.conn().await?;
        let out = op(c.clone()).await;
        match out {
            Ok(v) => {
                *slot = Some(c);
                Ok(v)
            }
            Err(e) => {
                if e.answered {
                    *slot = Some(c);
                }
                Err(e.err)
            }
        }
    }

    fn err(&self, message: impl Into<String>) -> RedisActionError {
        RedisActionError {
            addr: self.addr.to_string(),
            message: message.into(),
            refused: false,
        }
    }

    async fn conn(&self) -> Result<redis::aio::MultiplexedConnection, RedisActionError> {
        crate::probe::redis::connect(
            self.addr,
            self.username.as_deref(),
            self.password.as_deref(),
            self.timeout,
        )
        .await
        .map_err(|e| RedisActionError {
            refused: e.is_connection_refusal(),
            ..self.err(e.to_string())
        })
    }

    async fn run(&self, action: &RedisAction) -> Result<(), RedisActionError> {
        self.on_conn(|c| Box::pin(self.run_on(c, action))).await
    }

    async fn run_on(
        &self,
        mut c: redis::aio::MultiplexedConnection,
        action: &RedisAction,
    ) -> Result<(), CmdError> {
        let cmd = match action {
            RedisAction::Promote => {
                let mut cmd = redis::cmd("REPLICAOF");
                cmd.arg("NO").arg("ONE");
                cmd
            }
            RedisAction::Follow(a) => {
                let mut cmd = redis::cmd("REPLICAOF");
                cmd.arg(a.ip().to_string()).arg(a.port());
                cmd
            }
            RedisAction::Fence => {
                let mut cmd = redis::cmd("CONFIG");
                cmd.arg("SET")
                    .arg("min-replicas-to-write")
                    .arg(FENCE_MIN_REPLICAS);
                cmd
            }
            RedisAction::Unfence => {
                let mut cmd = redis::cmd("CONFIG");
                cmd.arg("SET")
                    .arg("min-replicas-to-write")
                    .arg(self.normal_min_replicas)
                    .arg("min-replicas-max-lag")
                    .arg(self.normal_max_lag);
                cmd
            }
        };
        let _: redis::Value = cmd
            .query_async(&mut c)
            .await
            .map_err(|e| self.cmd_err(format_args!("{action:?}"), &e))?;
        if matches!(action, RedisAction::Promote | RedisAction::Follow(_)) {
            // Clients of a server that changed role must reconnect (through HAProxy) to the
            // committed master; replication links are of type `master`/`replica` and survive.
            let _: redis::Value = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("normal")
                .arg("SKIPME")
                .arg("yes")
                .query_async(&mut c)
                .await
                .map_err(|e| self.cmd_err("CLIENT KILL", &e))?;
        }
        Ok(())
    }

    async fn read_info(&self) -> Result<RedisInfo, RedisActionError> {
        self.on_conn(|mut c| {
            Box::pin(async move {
                // The default sections: `replication`, and `server` for the run_id that tells
                // a restarted server from the one seen before.
                let text: String = redis::cmd("INFO")
                    .query_async(&mut c)
                    .await
                    .map_err(|e| self.cmd_err("INFO", &e))?;
                Ok(crate::probe::redis_info::parse_info(&text))
            })
        })
        .await
    }

    async fn simple(&self, args: &[String]) -> Result<(), RedisActionError> {
        self.on_conn(|mut c| {
            Box::pin(async move {
                let mut cmd = redis::cmd(&args[0]);
                for a in &args[1..] {
                    cmd.arg(a);
                }
                let _: redis::Value = cmd
                    .query_async(&mut c)
                    .await
                    .map_err(|e| self.cmd_err(args.join(" "), &e))?;
                Ok(())
            })
        })
        .await
    }

    async fn bounded<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, RedisActionError>>,
    ) -> Result<T, RedisActionError> {
        tokio::time::timeout(self.timeout, f)
            .await
            .unwrap_or_else(|_| {
                Err(self.err(format!("{what}: no answer within {:?}", self.timeout)))
            })
    }

    /// Whether the write guard differs from the configured unfenced one: fenced (1000), or not
    /// yet set up (another `min-replicas-to-write` or `min-replicas-max-lag`). Either way an
    /// `Unfence` is what brings it to the configured guard.
    async fn fenced(&self) -> Result<bool, RedisActionError> {
        let v: Vec<String> = self
            .on_conn(|mut c| {
                Box::pin(async move {
                    redis::cmd("CONFIG")
                        .arg("GET")
                        .arg("min-replicas-*")
                        .query_async(&mut c)
                        .await
                        .map_err(|e| self.cmd_err("CONFIG GET", &e))
                })
            })
            .await?;
        let get = |k: &str| -> u64 {
            v.chunks(2)
                .find(|kv| kv.first().map(String::as_str) == Some(k))
                .and_then(|kv| kv.get(1))
                .and_then(|x| x.parse().ok())
                .unwrap_or(0)
        };
        let to_write = get("min-replicas-to-write");
        let lag = get("min-replicas-max-lag");
        Ok(to_write >= u64::from(FENCE_MIN_REPLICAS)
            || to_write != u64::from(self.normal_min_replicas)
            || (self.normal_min_replicas > 0 && lag != self.normal_max_lag))
    }
}

impl RedisControl for RedisServer {
    fn apply<'a>(
        &'a self,
        action: &'a RedisAction,
        epoch: Epoch,
    ) -> BoxFuture<'a, Result<(), RedisActionError>> {
        Box::pin(async move {
            let r = self.bounded(&format!("{action:?}"), self.run(action)).await;
            match &r {
                Ok(()) => tracing::info!(addr = %self.addr, ?action, %epoch, "redis action done"),
                Err(e) => {
                    tracing::warn!(addr = %self.addr, ?action, %epoch, error = %e, "redis action failed")
                }
            }
            r
        })
    }
    fn is_fenced(&self) -> BoxFuture<'_, Result<bool, RedisActionError>> {
        Box::pin(self.bounded("CONFIG GET", self.fenced()))
    }
    fn info(&self) -> BoxFuture<'_, Result<RedisInfo, RedisActionError>> {
        Box::pin(self.bounded("INFO", self.read_info()))
    }
    fn pause_writes(&self, ms: u64) -> BoxFuture<'_, Result<(), RedisActionError>> {
        Box::pin(async move {
            let args = ["CLIENT", "PAUSE", &ms.to_string(), "WRITE"].map(String::from);
            self.bounded("CLIENT PAUSE", self.simple(&args)).await
        })
    }
    fn unpause(&self) -> BoxFuture<'_, Result<(), RedisActionError>> {
        Box::pin(async move {
            let args = ["CLIENT", "UNPAUSE"].map(String::from);
            self.bounded("CLIENT UNPAUSE", self.simple(&args)).await
        })
    }
}

/// A simulated Redis for tests and the simulator.
#[derive(Clone, Debug, Default)]
pub struct SimRedis {
    state: Arc<Mutex<SimRedisState>>,
}

/// The simulated server's state.
#[derive(Clone, Debug, Default)]
pub struct SimRedisState {
    /// Role and replication as INFO would report it.
    pub info: RedisInfo,
    /// Whether writes are fenced.
    pub fenced: bool,
    /// Whether the process is gone: connections are refused.
    pub down: bool,
    /// Whether the process is stopped (SIGSTOP) or hung: connections are accepted by the
    /// kernel but nothing answers, so every request times out and changes nothing.
    pub hung: bool,
    /// Whether client writes are paused.
    pub paused: bool,
    /// Actions applied, in order, with their epochs.
    pub log: Vec<(RedisAction, Epoch)>,
}

impl SimRedis {
    /// A simulated server with the given role.
    pub fn new(info: RedisInfo) -> Self {
        SimRedis {
            state: Arc::new(Mutex::new(SimRedisState {
                info,
                ..SimRedisState::default()
            })),
        }
    }

    /// A copy of the state.
    pub fn snapshot(&self) -> SimRedisState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Changes the state.
    pub fn with<R>(&self, f: impl FnOnce(&mut SimRedisState) -> R) -> Option<R> {
        self.state.lock().ok().map(|mut s| f(&mut s))
    }
}

impl RedisControl for SimRedis {
    fn apply<'a>(
        &'a self,
        action: &'a RedisAction,
        epoch: Epoch,
    ) -> BoxFuture<'a, Result<(), RedisActionError>> {
        let r = self
            .with(|s| {
                if let Some(e) = sim_unavailable(s) {
                    return Err(e);
                }
                match action {
                    RedisAction::Promote => {
                        s.info.role = Some(RedisRole::Master);
                        s.info.master_host = None;
                        s.info.master_port = None;
                    }
                    RedisAction::Follow(a) => {
                        s.info.role = Some(RedisRole::Replica);
                        s.info.master_host = Some(a.ip().to_string());
                        s.info.master_port = Some(a.port());
                    }
                    RedisAction::Fence => s.fenced = true,
                    RedisAction::Unfence => s.fenced = false,
                }
                s.log.push((action.clone(), epoch));
                Ok(())
            })
            .unwrap_or_else(|| Err(sim_error("state poisoned")));
        Box::pin(async move { r })
    }
    fn is_fenced(&self) -> BoxFuture<'_, Result<bool, RedisActionError>> {
        let r = self.read(|s| s.fenced);
        Box::pin(async move { r })
    }
    fn info(&self) -> BoxFuture<'_, Result<RedisInfo, RedisActionError>> {
        let r = self.read(|s| s.info.clone());
        Box::pin(async move { r })
    }
    fn pause_writes(&self, _ms: u64) -> BoxFuture<'_, Result<(), RedisActionError>> {
        let r = self.set_paused(true);
        Box::pin(async move { r })
    }
    fn unpause(&self) -> BoxFuture<'_, Result<(), RedisActionError>> {
        let r = self.set_paused(false);
        Box::pin(async move { r })
    }
}

fn sim_error(message: &str) -> RedisActionError {
    RedisActionError {
        addr: "sim".into(),
        message: message.into(),
        refused: false,
    }
}

/// The error a client gets from a simulated server that is down or hung, if it is.
fn sim_unavailable(s: &SimRedisState) -> Option<RedisActionError> {
    if s.down {
        Some(RedisActionError {
            refused: true,
            ..sim_error("connection refused")
        })
    } else if s.hung {
        Some(sim_error("no answer within the timeout"))
    } else {
        None
    }
}

impl SimRedis {
    /// Reads the state as a client would: refused while the server is down.
    fn read<T>(&self, f: impl FnOnce(&SimRedisState) -> T) -> Result<T, RedisActionError> {
        let s = self.snapshot();
        match sim_unavailable(&s) {
            Some(e) => Err(e),
            None => Ok(f(&s)),
        }
    }

    fn set_paused(&self, paused: bool) -> Result<(), RedisActionError> {
        self.with(|s| {
            if let Some(e) = sim_unavailable(s) {
                return Err(e);
            }
            s.paused = paused;
            Ok(())
        })
        .unwrap_or_else(|| Err(sim_error("state poisoned")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn addrs() -> BTreeMap<NodeId, SocketAddr> {
        (1..=3)
            .map(|i| (NodeId(i), format!("10.0.0.{i}:6379").parse().expect("addr")))
            .collect()
    }

    fn master() -> RedisInfo {
        RedisInfo {
            role: Some(RedisRole::Master),
            ..RedisInfo::default()
        }
    }

    fn replica_of(i: u64) -> RedisInfo {
        RedisInfo {
            role: Some(RedisRole::Replica),
            master_host: Some(format!("10.0.0.{i}")),
            master_port: Some(6379),
            ..RedisInfo::default()
        }
    }

    /// (me, committed master, local info, fenced, lease) -> actions
    #[test]
    fn local_plans() {
        let f = |a: &str| -> SocketAddr { a.parse().expect("addr") };
        type Case = (
            u64,
            Option<u64>,
            RedisInfo,
            Option<bool>,
            bool,
            Vec<RedisAction>,
        );
        let cases: Vec<Case> = vec![
            (1, Some(1), master(), Some(false), true, vec![]),
            (2, Some(1), replica_of(1), Some(false), true, vec![]),
            (
                2,
                Some(2),
                replica_of(1),
                Some(false),
                true,
                vec![RedisAction::Promote],
            ),
            (
                2,
                Some(2),
                master(),
                Some(true),
                true,
                vec![RedisAction::Unfence],
            ),
            (
                3,
                Some(2),
                replica_of(1),
                Some(false),
                true,
                vec![RedisAction::Follow(f("10.0.0.2:6379"))],
            ),
            // The old master comes back: fenced first, then turned into a replica.
            (
                1,
                Some(2),
                master(),
                Some(false),
                true,
                vec![
                    RedisAction::Fence,
                    RedisAction::Follow(f("10.0.0.2:6379")),
                    RedisAction::Unfence,
                ],
            ),
            // Lost lease while master: fence, nothing else.
            (
                1,
                Some(1),
                master(),
                Some(false),
                false,
                vec![RedisAction::Fence],
            ),
            (1, Some(1), master(), Some(true), false, vec![]),
            (2, Some(1), replica_of(1), Some(false), false, vec![]),
            // Nothing committed yet: leave it alone.
            (1, None, master(), Some(false), true, vec![]),
        ];
        let suspected = |me: u64, info: RedisInfo, fenced: Option<bool>| {
            let authority = RedisAuthority {
                master: Some(NodeId(1)),
                suspect: Some(crate::cluster::Suspect {
                    node: NodeId(1),
                    epoch: Epoch(0),
                    index: crate::ids::LogIndex(9),
                    reason: String::new(),
                }),
                ..RedisAuthority::default()
            };
            let a = addrs();
            plan_local(&LocalRedis {
                me: NodeId(me),
                authority: &authority,
                addrs: &a,
                info: Some(&info),
                fenced,
                has_lease: true,
            })
        };
        // A replica of the suspect detaches, fenced; once detached, nothing more.
        assert_eq!(
            suspected(2, replica_of(1), Some(false)),
            [RedisAction::Fence, RedisAction::Promote]
        );
        assert!(suspected(2, master(), Some(true)).is_empty());
        for (me, m, info, fenced, lease, want) in cases {
            let authority = RedisAuthority {
                master: m.map(NodeId),
                ..RedisAuthority::default()
            };
            let a = addrs();
            let got = plan_local(&LocalRedis {
                me: NodeId(me),
                authority: &authority,
                addrs: &a,
                info: Some(&info),
                fenced,
                has_lease: lease,
            });
            assert_eq!(
                got, want,
                "me n{me}, master {m:?}, {info:?}, fenced {fenced:?}, lease {lease}"
            );
        }
    }

    #[test]
    fn unknown_local_state_plans_nothing() {
        let authority = RedisAuthority {
            master: Some(NodeId(1)),
            ..RedisAuthority::default()
        };
        let a = addrs();
        assert!(plan_local(&LocalRedis {
            me: NodeId(2),
            authority: &authority,
            addrs: &a,
            info: None,
            fenced: None,
            has_lease: true,
        })
        .is_empty());
    }
}
