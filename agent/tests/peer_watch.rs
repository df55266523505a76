//! The peer connection watch (`local::spawn_peer_watch`) against a real redis-server on
//! loopback: it keeps one idle connection, notifies nothing while the server runs (Redis sends
//! nothing unasked), notifies as soon as the server is killed (its kernel closes the
//! connection), and goes on watching the restarted server. A missing redis-server fails in CI
//! and is skipped elsewhere with a reason.

// Drives real processes on real time; see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{binary, RealRedis};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[test]
fn a_killed_peer_redis_is_noticed_at_once() {
    let Some(bin) = binary("redis-server", &["/usr/bin/redis-server"]) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut redis = RealRedis::start(bin, None);
    let addr = ([127, 0, 0, 1], redis.port).into();
    let kick = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    rt.block_on(async {
        triad::local::spawn_peer_watch(vec![(addr, vec![kick.clone()])], &shutdown);
        // Running: no kick (the watch's idle connection gets nothing).
        let quiet = tokio::time::timeout(Duration::from_millis(700), kick.notified()).await;
        assert!(quiet.is_err(), "kicked while the server runs");
        // Killed: kicked (bounded wait; the kernel closes the connection at the exit).
        redis.proc.kill();
        tokio::time::timeout(Duration::from_secs(10), kick.notified())
            .await
            .expect("kicked after the kill");
        // Restarted on the same port: watched again, and kicked at its next kill.
        redis.spawn();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        redis.proc.kill();
        tokio::time::timeout(Duration::from_secs(10), kick.notified())
            .await
            .expect("kicked after the second kill");
        shutdown.cancel();
    });
}
