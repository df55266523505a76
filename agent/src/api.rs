//! The operator HTTP API: status, health, metrics and operator actions (axum on hyper 1).
//!
//! Endpoints:
//! - `GET /v1/status`: this node's Raft view, members with reachability, the replicated
//!   cluster state and its audit history (newest first), and the last decision's verdict.
//! - `GET /live`: 200 while the event loop ran within 6 Raft tick intervals (3 of its ticker's
//!   wake-ups), else 503.
//! - `GET /ready`: 200 once storage is loaded and a leader is known, else 503.
//! - `GET /health`: the shop load balancer's check (Patroni's style): 200 while the loop runs,
//!   a leader is known and a majority renews this agent's lease, else 503 saying which.
//!
//! With `[api] tls_cert_file` the listener speaks only TLS (server authentication; tokens
//! authenticate clients). Its role-check path then reads the first bytes after the handshake
//! instead of peeking them, and hands anything else to hyper with those bytes put back.
//!
//! - `GET /metrics`: Prometheus text format.
//! - `GET /openapi.json`: the OpenAPI document of this API (open).
//! - `GET /redis/master`: 200 when this node's Redis may take writes (committed master, not
//!   suspected, this agent holds a usable lease, and a recent cycle found the local Redis a
//!   trusted, unfenced master), else 503 with the reason. Every HAProxy's Redis backend checks
//!   each server against its own agent with it (`option httpchk`, `check port` of the API):
//!   a server whose agent says no, is dead or is cut off leaves every HAProxy, also those
//!   whose own agent is dead. Unauthenticated, like `/live`: it reveals one bit.
//! - `GET /galera/writer`: 200 when this node may take MySQL writes (the committed Galera
//!   writer, not evicted, and its writer reconciler's recent cycle found the local node
//!   Synced, Primary, ready and caught up for this epoch), else 503 with the reason. Every
//!   HAProxy's MySQL backend checks each server against its own agent with it, like
//!   `/redis/master`. `GET /v1/galera/writer`: the writer part of status.
//! - `POST /v1/redis/failover` `{"to": N, "reason": "..."}` (token): the operator's forced
//!   Redis failover (see `switchover::failover`): refused unless the old master is fenced
//!   (it is, first, when it answers) or down from a majority; answers the steps.
//! - `POST /v1/galera/switchover` `{}` or `{"to": N}` (token): moves the Galera writer (see
//!   `switchover::galera`); answers the steps and the write pause.
//! - `POST /v1/maintenance` `{"enabled": bool, "reason": "..."}`: commits through Raft and
//!   answers once applied on this node.
//! - `GET /v1/backups`, `GET /v1/backups/{id}`, `POST /v1/backup` `{"reason": "..."}`
//!   (token): backups (see [`backup`]).
//!
//! Tokens have two scopes. Mutating endpoints need the admin token, `Authorization: Bearer
//! TOKEN` (from `api.token_file`): without a configured token they answer 403, with a
//! missing or wrong token 401. Read endpoints (`GET /v1/...`, `/metrics`) need the read token
//! (`api.read_token_file`) or the admin token, unless `api.open_reads`. `/live`, `/ready` and
//! the role checks are always open. Tokens are compared in constant time. Mutating requests
//! are rate limited (see [`crate::ratelimit`]): 429 with `Retry-After` past `api.mutation_burst` at once
//! and `api.mutations_per_minute`, and past `api.auth_failure_burst` failed authentications
//! (one more every 10 s). Bad JSON answers 400
//! with the parser's message, a body over 64 KiB 413, an unknown path 404, a wrong method 405.
//! Every error body is
//! `{"error": "..."}` naming the problem and what to do.
//!
//! HAProxy's role checks (`GET /redis/master`, `GET /galera/writer`, whole in the first segment)
//! are answered by the same handlers without hyper's per-connection machinery (see
//! `answer_role_check`); every other request is served by hyper.
//!
//! The API never touches Raft directly: it reads the status the event loop publishes and sends
//! requests into the loop through a bounded channel.
//!
//! Caveats: plain HTTP for now (TLS in the security wave); bind it to loopback or a private
//! address.

pub mod backup;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::cluster::{AuditEntry, Command, Maintenance, MemberInfo};
use crate::decide::galera::{
    self, evidence_from_reports, GaleraEvidence, GaleraInputs, GaleraPlan,
};
use crate::driver::ProposeError;
use crate::health::HealthStore;
use crate::ids::{LogIndex, NodeId, Term, UnixMillis};
use crate::probe::{summarize, FailureKind, Status};
use crate::status::Handles;

/// Errors starting the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The listen address could not be bound.
    #[error("cannot listen for the API on {addr}: {source} (is another agent running, or is api.listen wrong?)")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// `[api] tls_cert_file` / `tls_key_file` do not load.
    #[error(transparent)]
    Tls(#[from] crate::config::ConfigError),
}

/// A member as shown in status.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Node id.
    pub id: NodeId,
    /// Raft peer address.
    pub raft_addr: String,
    /// API address.
    pub api_addr: String,
    /// Whether this node heard from it recently (always true for itself).
    pub reachable: bool,
    /// Milliseconds since this node last heard from it (0 for itself, null if never).
    pub last_contact_ms: Option<u64>,
    /// Latest ping round trip in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Whether it is the node answering.
    pub is_self: bool,
    /// Whether it is the leader known to the node answering.
    pub is_leader: bool,
    /// Why the node answering refused this member's last connection, when it did and the
    /// member has not connected since (its safety timings differ, say).
    #[serde(default)]
    pub refused: Option<String>,
}

/// The replicated part of status.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterView {
    /// Replicated membership view.
    pub members: BTreeMap<NodeId, MemberInfo>,
    /// Maintenance flag.
    pub maintenance: Maintenance,
}

/// Body of `GET /v1/status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusBody {
    /// The answering node.
    pub node_id: NodeId,
    /// Cluster name.
    pub cluster_name: String,
    /// Its role.
    pub role: String,
    /// Current term.
    pub term: Term,
    /// Leader known to it, or null.
    pub leader_id: Option<NodeId>,
    /// Commit index.
    pub commit_index: LogIndex,
    /// Applied index.
    pub applied_index: LogIndex,
    /// Last log index.
    pub last_index: LogIndex,
    /// Latest snapshot index.
    pub snapshot_index: LogIndex,
    /// The last decision's verdict.
    pub verdict: String,
    /// Members, sorted by id.
    pub members: Vec<MemberStatus>,
    /// The replicated cluster state.
    pub cluster: ClusterView,
    /// Audit history, newest first.
    pub history: VecDeque<AuditEntry>,
    /// Probed services per node (the node's own view first; every observer in `seen_by`).
    #[serde(default)]
    pub nodes: BTreeMap<NodeId, Vec<ServiceStatus>>,
    /// Redis failover: the committed authority, the leader's decision, this node's lease and
    /// reconciliation. Absent when Redis is not managed.
    #[serde(default)]
    pub redis: Option<RedisStatus>,
    /// Galera recovery: the committed outage, the leader's decision, every node's evidence
    /// as known here, and this node's local recovery. Absent without `[galera]`.
    #[serde(default)]
    pub galera: Option<GaleraStatusBody>,
    /// The Galera writer: the committed writer, its epoch, last change and evictions, the
    /// ranking (the leader's, or a dry run from the reports known here on a follower), and
    /// this node's writer reconciliation. Absent without `[galera]`.
    #[serde(default)]
    pub galera_writer: Option<WriterStatus>,
    /// Backups: the schedule, the next due time, the running backup's progress, the last
    /// success per component and the last failure (the catalog is in `GET /v1/backups`).
    /// Absent without `[backup]`.
    #[serde(default)]
    pub backup: Option<backup::BackupsBody>,
    /// The web rotation: who is drained and why, the sick node kept in service, each node's
    /// web health (the leader's, or a dry run from the reports known here on a follower), and
    /// this node's HAProxy web backend. Absent without `[web]`.
    #[serde(default)]
    pub web: Option<WebStatus>,
    /// Remediations: the one in force, why a node's repair waits (the leader's), the newest
    /// finished ones, and what this node's task reports. Absent when remediations are off.
    #[serde(default)]
    pub remedy: Option<RemedyStatus>,
}

/// The remediation part of status.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemedyStatus {
    /// The remediation in force.
    pub lease: Option<crate::cluster::RemedyLease>,
    /// The leader's latest verdict (null on followers: ask the leader).
    pub verdict: Option<String>,
    /// Why a node's repair waits (hourly cap, back-off, backup lease), the leader's view.
    pub held: BTreeMap<NodeId, String>,
    /// The newest finished remediations, newest first (at most 10).
    pub recent: Vec<crate::cluster::RemedyRecord>,
    /// What this node's remediation task reports.
    pub local: Option<crate::cluster::RemedyRun>,
}

/// The web part of status (also `GET /v1/web`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WebStatus {
    /// The rotation's epoch.
    pub epoch: crate::ids::Epoch,
    /// Nodes out of the rotation, with why and since when.
    pub drained: BTreeMap<NodeId, crate::cluster::WebDrain>,
    /// The sick node kept in service because every other one is drained.
    pub kept: Option<crate::cluster::WebKept>,
    /// The newest change.
    pub change: Option<crate::cluster::WebChange>,
    /// The leader's latest verdict (null on followers: ask the leader).
    pub verdict: Option<String>,
    /// Each member's web health, one line each.
    pub nodes: BTreeMap<NodeId, String>,
    /// This node's web reconciliation.
    pub local: crate::status::LocalWebView,
}

/// The Galera writer part of status (also `GET /v1/galera/writer`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WriterStatus {
    /// The committed writer (null before the first).
    pub writer: Option<NodeId>,
    /// Its epoch.
    pub epoch: crate::ids::Epoch,
    /// The last change of writer.
    pub change: Option<crate::cluster::MasterChange>,
    /// Nodes evicted from the component, with the gcomm UUID.
    pub evicted: BTreeMap<NodeId, crate::cluster::GaleraEviction>,
    /// The leader's latest verdict (null on followers: ask the leader).
    pub verdict: Option<String>,
    /// Every member, best first, with why (the leader's ranking, or this node's dry run).
    pub ranking: Vec<crate::decide::galera_writer::WriterRank>,
    /// This node's writer reconciliation.
    pub local: crate::status::LocalWriterView,
}

/// The Galera part of status (also `GET /v1/galera`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GaleraStatusBody {
    /// The newest outage and its bootstrap, as committed.
    pub authority: crate::cluster::GaleraAuthority,
    /// The leader's latest verdict (null on followers: ask the leader).
    pub verdict: Option<String>,
    /// What a bootstrap would choose now, from the evidence known here (the dry run).
    pub next: GaleraPlan,
    /// Every member's evidence as the reports known here tell it (absent: silent).
    pub evidence: BTreeMap<NodeId, GaleraEvidence>,
    /// This node's local recovery.
    pub local: crate::status::LocalGaleraView,
}

/// The Redis part of status.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RedisStatus {
    /// Who is master at which epoch, the suspicion if any, and the last change.
    pub authority: crate::cluster::RedisAuthority,
    /// The leader's latest verdict (null on followers: ask the leader).
    pub verdict: Option<String>,
    /// The candidate ranking of the leader's latest decision, when it considered a failover.
    pub candidates: Vec<crate::decide::redis::Candidate>,
    /// Peers whose lease this node does not renew (suspected, or behind the newest decision).
    pub lease_embargo: Vec<NodeId>,
    /// This node's lease and local reconciliation.
    pub local: crate::status::LocalRedisView,
}

/// One probed service instance as shown in status.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Service name (`mariadb`, `redis`, `phpfpm`, `gluster`, `gluster_mount`).
    pub service: String,
    /// Instance within the node (volume name, mount path, or empty).
    pub target: String,
    /// Status after rise/fall.
    pub status: Status,
    /// The node whose probe this view comes from.
    pub observer: NodeId,
    /// Age of the observation on the answering node, in milliseconds.
    pub age_ms: u64,
    /// The observer's wall clock at the check.
    pub observed_at: UnixMillis,
    /// Check duration in milliseconds.
    pub latency_ms: f64,
    /// Failure kind of the last check.
    pub failure: Option<FailureKind>,
    /// Reason of the last check when not healthy.
    pub error: Option<String>,
    /// One-line summary of the details.
    pub summary: String,
    /// Service-specific details of the last check.
    pub details: serde_json::Value,
    /// Every observer's status of this instance.
    pub seen_by: BTreeMap<NodeId, Status>,
}

/// Body of `POST /v1/maintenance`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceRequest {
    enabled: bool,
    reason: String,
}

const MAX_REASON: usize = 1024;
/// Largest request body accepted (checked after authorization).
const MAX_BODY: usize = 64 * 1024;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// Builds the router (exposed for tests).
pub fn router(h: Handles) -> Router {
    router_of(Arc::new(h))
}

fn router_of(h: Arc<Handles>) -> Router {
    // Reads: the read or the admin token, unless `api.open_reads`.
    let reads = Router::new()
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .route("/v1/galera", get(galera_status))
        .route("/v1/galera/writer", get(galera_writer_status))
        .route("/v1/web", get(web_status))
        .route("/v1/backups", get(backup::list))
        .route("/v1/backups/{id}", get(backup::show))
        .route_layer(axum::middleware::from_fn_with_state(
            h.clone(),
            require_read,
        ));
    // Always open: liveness, readiness and the role checks (HAProxy, systemd). Mutating
    // endpoints check the admin token themselves, before reading the body.
    Router::new()
        .merge(reads)
        .route("/live", get(live))
        .route("/ready", get(ready))
        .route("/health", get(health))
        .route("/openapi.json", get(openapi))
        .route("/redis/master", get(redis_master))
        .route("/galera/synced", get(galera_synced))
        .route("/galera/writer", get(galera_writer))
        .route("/v1/maintenance", post(maintenance))
        .route("/v1/redis/switchover", post(redis_switchover))
        .route("/v1/redis/failover", post(redis_failover))
        .route("/v1/galera/switchover", post(galera_switchover))
        .route("/v1/galera/bootstrap", post(galera_bootstrap))
        .route("/v1/backup", post(backup::now))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(h)
}

/// The OpenAPI document of this API (`agent/openapi.json`; a test checks it against the
/// routes here, and a schema-driven client runs it against a live agent).
pub const OPENAPI: &str = include_str!("../openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// The read endpoints' guard: with `api.open_reads` everyone passes; otherwise the read or
/// the admin token (compared in constant time), 401 without or with a wrong one, 403 when no
/// token is configured at all.
async fn require_read(
    State(h): State<Arc<Handles>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if h.config.config.api.open_reads {
        return next.run(req).await;
    }
    let tokens: Vec<Arc<str>> = [&h.token, &h.read_token]
        .iter()
        .filter_map(|c| c.read().ok().and_then(|t| t.clone()))
        .collect();
    if tokens.is_empty() {
        return error(
            StatusCode::FORBIDDEN,
            "reads need a token and none is configured on this node: set api.read_token_file \
             (or api.token_file), or api.open_reads = true",
        );
    }
    match bearer(req.headers()) {
        Some(g)
            if tokens
                .iter()
                .any(|t| constant_time_eq(g.as_bytes(), t.as_bytes())) =>
        {
            next.run(req).await
        }
        Some(_) => unauthorized("wrong bearer token"),
        None => unauthorized(
            "missing `Authorization: Bearer TOKEN` header (the read token from \
             api.read_token_file, or the admin token)",
        ),
    }
}

/// The bearer token of a request, if it has one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // The scheme name is case-insensitive (RFC 9110 section 11.1).
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(rest)
        })
        .map(str::trim)
}

/// Binds the API and serves it until `shutdown`; returns the server task.
pub async fn serve(
    h: Handles,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, ApiError> {
    let addr = h.config.api_listen;
    let tls = crate::config::api_tls(&h.config.file, &h.config.config.api)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ApiError::Bind { addr, source })?;
    let h = Arc::new(h);
    // Routes are made into services once, here: axum would otherwise rebuild every route for
    // each connection.
    let app = router_of(h.clone()).with_state::<()>(());
    Ok(tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, _)) => match &tls {
                    None => {
                        tokio::spawn(connection(stream, h.clone(), app.clone(), shutdown.clone()));
                    }
                    Some(acceptor) => {
                        tokio::spawn(tls_connection(
                            stream,
                            acceptor.clone(),
                            h.clone(),
                            app.clone(),
                            shutdown.clone(),
                        ));
                    }
                },
                Err(err) => {
                    // Out of descriptors, mostly: wait a little instead of spinning.
                    tracing::warn!(%err, "API: accepting a connection failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
                    }
                }
            }
        }
    }))
}

/// The two role checks that every HAProxy sends each server's agent every `inter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RoleCheck {
    RedisMaster,
    GaleraWriter,
    Health,
}

/// Largest request head the role-check path looks at; anything longer goes through hyper.
/// HAProxy's check is under 100 bytes; the buffers are part of every connection's task.
const ROLE_CHECK_HEAD: usize = 512;

/// Serves one API connection. A role check (`GET /redis/master` or `GET /galera/writer`, the
/// whole request in its first segment, as HAProxy sends it) is answered by
/// [`answer_role_check`] with the same handler and closed; everything else is served by
/// hyper (HTTP/1.1, keep-alive) until it ends or `shutdown`.
async fn connection(
    stream: tokio::net::TcpStream,
    h: Arc<Handles>,
    app: Router,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let mut head = [0u8; ROLE_CHECK_HEAD];
    // The first bytes, left in the socket for hyper unless they are a whole role check. A
    // client that connects and stays silent is hyper's to time out, as before.
    let peeked = tokio::select! {
        _ = shutdown.cancelled() => return,
        p = stream.peek(&mut head) => p.unwrap_or(0),
    };
    if let Some((check, len, http10)) = role_check(&head[..peeked]) {
        answer_role_check(stream, &h, check, len, http10).await;
        return;
    }
    serve_http(stream, app, shutdown).await;
}

/// Serves one connection with hyper (HTTP/1.1, keep-alive) until it ends or `shutdown`.
async fn serve_http<S>(stream: S, app: Router, shutdown: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    // Boxed: the role checks' tasks need not carry hyper's connection state.
    let mut conn = Box::pin(
        hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
    );
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(err) = r {
                tracing::debug!(%err, "API connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// How long a TLS client has for its handshake and first request bytes.
const TLS_FIRST_BYTES: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves one API connection over TLS (`[api] tls_cert_file`): the handshake, then the same
/// split as [`connection`]: a whole role check in the first read is answered at once, and
/// anything else goes to hyper with those bytes put back in front of the stream.
async fn tls_connection(
    stream: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    h: Arc<Handles>,
    app: Router,
    shutdown: CancellationToken,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.set_nodelay(true);
    let remote = stream.peer_addr().ok();
    let first = async {
        let mut tls = acceptor.accept(stream).await?;
        let mut head = vec![0u8; ROLE_CHECK_HEAD];
        let n = tls.read(&mut head).await?;
        head.truncate(n);
        Ok::<_, std::io::Error>((tls, head))
    };
    let (mut tls, head) = tokio::select! {
        _ = shutdown.cancelled() => return,
        r = tokio::time::timeout(TLS_FIRST_BYTES, first) => match r {
            Ok(Ok(x)) => x,
            Ok(Err(err)) => {
                tracing::debug!(?remote, %err, "API: TLS handshake or first read failed");
                return;
            }
            Err(_) => {
                tracing::debug!(?remote, "API: no TLS request within {TLS_FIRST_BYTES:?}");
                return;
            }
        },
    };
    if head.is_empty() {
        return;
    }
    if let Some((check, _, http10)) = role_check(&head) {
        let bytes = role_check_response(role_check_answer(&h, check).await, http10).await;
        let _ = tls.write_all(&bytes).await;
        let _ = tls.shutdown().await;
        return;
    }
    serve_http(Prefixed::new(head, tls), app, shutdown).await;
}

/// A stream whose first bytes were already read: they are read again first.
struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let from = self.at;
            buf.put_slice(&self.prefix[from..from + n]);
            self.at += n;
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Whether `bytes` hold one complete role-check request and nothing else that matters: a
/// `GET` of a role path, no query, no body. Returns the check, the head's length and whether
/// it is HTTP/1.0. Anything else (partial, other paths, bodies, parse errors) is `None`, and
/// hyper serves it.
fn role_check(bytes: &[u8]) -> Option<(RoleCheck, usize, bool)> {
    let mut headers = [httparse::EMPTY_HEADER; 24];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = req.parse(bytes).ok()? else {
        return None;
    };
    if req.method != Some("GET") || len != bytes.len() {
        return None;
    }
    let check = match req.path? {
        "/redis/master" => RoleCheck::RedisMaster,
        "/galera/writer" => RoleCheck::GaleraWriter,
        "/health" => RoleCheck::Health,
        _ => return None,
    };
    let body = req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            || (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
            || h.name.eq_ignore_ascii_case("expect")
            || h.name.eq_ignore_ascii_case("upgrade")
    });
    if body {
        return None;
    }
    Some((check, len, req.version == Some(0)))
}

/// Answers a role check with the route's own handler, in one write, and closes the
/// connection. HAProxy opens one connection per check, 20 a second on the node of the Redis
/// master and the Galera writer. Hyper's per-connection machinery was about a fifth of a
/// check's CPU (lab, isolated checks: ~165 µs through hyper, ~130 µs here; the rest is the
/// wake-up and the kernel's TCP work), so this path parses the request with `httparse` and
/// writes the response itself.
async fn answer_role_check(
    mut stream: tokio::net::TcpStream,
    h: &Arc<Handles>,
    check: RoleCheck,
    len: usize,
    http10: bool,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Consume the request (it was only peeked): closing with unread bytes would reset the
    // connection instead of ending it.
    let mut request = [0u8; ROLE_CHECK_HEAD];
    if stream.read_exact(&mut request[..len]).await.is_err() {
        return;
    }
    let bytes = role_check_response(role_check_answer(h, check).await, http10).await;
    let _ = stream.write_all(&bytes).await;
    let _ = stream.shutdown().await;
}

/// The route's own answer to a role check.
async fn role_check_answer(h: &Arc<Handles>, check: RoleCheck) -> Response {
    match check {
        RoleCheck::RedisMaster => redis_master(State(h.clone())).await,
        RoleCheck::GaleraWriter => galera_writer(State(h.clone())).await,
        RoleCheck::Health => health(State(h.clone())).await,
    }
}

/// The HTTP/1.x bytes of a handler's response, with `Connection: close`.
async fn role_check_response(response: Response, http10: bool) -> Vec<u8> {
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .unwrap_or_default();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/plain; charset=utf-8");
    let mut out = format!(
        "{} {} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        if http10 { "HTTP/1.0" } else { "HTTP/1.1" },
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Builds the status body from the published core status and transport view.
pub fn status_body(h: &Handles) -> StatusBody {
    let core = h.status.borrow().clone();
    let peers = h.transport.peers();
    let me = h.config.node_id();
    let members = h
        .config
        .members
        .iter()
        .map(|m| {
            let is_self = m.id == me;
            let view = peers.get(&m.id);
            MemberStatus {
                id: m.id,
                raft_addr: m.raft_addr.to_string(),
                api_addr: m.api_addr.to_string(),
                reachable: is_self || view.is_some_and(|v| v.reachable),
                last_contact_ms: if is_self {
                    Some(0)
                } else {
                    view.and_then(|v| v.last_contact_ms)
                },
                rtt_ms: view.and_then(|v| v.rtt_ms),
                is_self,
                is_leader: core.raft.leader == Some(m.id),
                refused: view.and_then(|v| v.refused.clone()),
            }
        })
        .collect();
    StatusBody {
        node_id: me,
        cluster_name: h.config.config.cluster_name.clone(),
        role: core.raft.role.to_string(),
        term: core.raft.term,
        leader_id: core.raft.leader,
        commit_index: core.raft.commit,
        applied_index: core.raft.applied,
        last_index: core.raft.last_index,
        snapshot_index: core.raft.snapshot_index,
        verdict: core.verdict.clone(),
        members,
        cluster: ClusterView {
            members: core.cluster.members.clone(),
            maintenance: core.cluster.maintenance.clone(),
        },
        history: core.cluster.history.clone(),
        nodes: core
            .health
            .lock()
            .map(|health| nodes_view(&health, h.liveness.mono_ms()))
            .unwrap_or_default(),
        redis: core.services.redis.as_ref().map(|r| RedisStatus {
            authority: core.cluster.redis.clone(),
            verdict: r.plan.as_ref().map(|p| p.verdict.clone()),
            candidates: r
                .plan
                .as_ref()
                .map(|p| p.candidates.clone())
                .unwrap_or_default(),
            lease_embargo: r.embargo.clone(),
            local: r.local.lock().map(|l| l.clone()).unwrap_or_default(),
        }),
        galera: galera_body(h, &core),
        galera_writer: writer_body(h, &core),
        backup: backup::backups_body(h, &core).map(|mut b| {
            b.catalog.clear();
            b
        }),
        web: web_body(h, &core),
        remedy: core.services.remedy.as_ref().map(|r| RemedyStatus {
            lease: core.cluster.remedy.lease.clone(),
            verdict: r.plan.as_ref().map(|p| p.verdict.clone()),
            held: r.plan.as_ref().map(|p| p.held.clone()).unwrap_or_default(),
            recent: core
                .cluster
                .remedy
                .records
                .iter()
                .take(10)
                .cloned()
                .collect(),
            local: r.local.lock().ok().and_then(|l| l.clone()),
        }),
    }
}

/// What a follower judges a service from when it has no leader's plan to show: the members,
/// the reports this node holds and its monotonic time.
fn local_evidence(
    h: &Handles,
    core: &crate::status::CoreStatus,
) -> (Vec<NodeId>, Vec<crate::health::Seen>, u64) {
    let members: Vec<NodeId> = h.config.members.iter().map(|m| m.id).collect();
    let now = h.liveness.mono_ms();
    let seen = core
        .health
        .lock()
        .map(|health| health.all(now))
        .unwrap_or_default();
    (members, seen, now)
}

fn web_body(h: &Handles, core: &crate::status::CoreStatus) -> Option<WebStatus> {
    let w = core.services.web.as_ref()?;
    let settings = h.config.config.web.as_ref()?.settings();
    let a = &core.cluster.web;
    let nodes = match &w.plan {
        Some(p) => p.nodes.clone(),
        None => {
            let (members, seen, _) = local_evidence(h, core);
            crate::decide::web::web_health_from_reports(&members, &seen, settings.freshness_ms)
                .into_iter()
                .map(|(n, health)| (n, health.describe()))
                .collect()
        }
    };
    Some(WebStatus {
        epoch: a.epoch,
        drained: a.drained.clone(),
        kept: a.kept.clone(),
        change: a.last_change.clone(),
        verdict: w.plan.as_ref().map(|p| p.verdict.clone()),
        nodes,
        local: w.local.lock().map(|l| l.clone()).unwrap_or_default(),
    })
}

async fn web_status(State(h): State<Arc<Handles>>) -> Response {
    let core = h.status.borrow().clone();
    match web_body(&h, &core) {
        Some(body) => Json(body).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "the web rotation is not managed on this node (no [web] section)",
        ),
    }
}

fn writer_body(h: &Handles, core: &crate::status::CoreStatus) -> Option<WriterStatus> {
    use crate::decide::galera_writer as gw;
    let w = core.services.galera_writer.as_ref()?;
    let settings = h.config.config.galera.as_ref()?.writer_settings();
    let a = &core.cluster.galera_writer;
    let ranking = match &w.plan {
        Some(p) => p.ranking.clone(),
        None => {
            let (members, seen, now) = local_evidence(h, core);
            gw::rank_from_reports(&members, &seen, &core.cluster, now, settings)
        }
    };
    Some(WriterStatus {
        writer: a.writer,
        epoch: a.epoch,
        change: a.last_change.clone(),
        evicted: a.evicted.clone(),
        verdict: w.plan.as_ref().map(|p| p.verdict.clone()),
        ranking,
        local: w.local.lock().map(|l| l.clone()).unwrap_or_default(),
    })
}

/// `GET /galera/writer`: 200 when this node may take MySQL writes: the committed writer, not
/// evicted, and its writer reconciler's recent cycle found the local node Synced, Primary and
/// ready and caught up for this epoch. Every HAProxy's MySQL backend checks each server
/// against its own agent with it, so a server leaves every HAProxy as soon as its own agent
/// says no, is dead or is cut off.
async fn galera_writer(State(h): State<Arc<Handles>>) -> Response {
    let core = h.status.borrow().clone();
    let Some((g, w)) = h
        .config
        .config
        .galera
        .as_ref()
        .zip(core.services.galera_writer.as_ref())
    else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the Galera writer is not managed on this agent (no [galera] section, or no \
             [mariadb] socket)",
        );
    };
    let (view, at) = match w.local.lock() {
        Ok(v) => (v.last_cycle.clone(), v.last_cycle_at),
        Err(_) => (None, None),
    };
    // A cycle every writer_interval, each bounded by action_timeout: allow two of each.
    let max_age = g.writer_interval.saturating_mul(2)
        + h.config.config.failover.action_timeout.saturating_mul(2);
    let last = view.as_ref().zip(at.map(|t| t.elapsed()));
    match crate::reconcile::galera_writer::serving_writer(
        h.config.node_id(),
        &core.cluster.galera_writer,
        last,
        max_age,
    ) {
        Ok(()) => (StatusCode::OK, "writer\n").into_response(),
        Err(why) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not the writer: {why}"),
        ),
    }
}

async fn galera_writer_status(State(h): State<Arc<Handles>>) -> Response {
    let core = h.status.borrow().clone();
    match writer_body(&h, &core) {
        Some(body) => Json(body).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "the Galera writer is not managed on this node (no [galera] section)",
        ),
    }
}

/// What the dry run and an operator's override decide from: the settings, every member's
/// evidence as this node's health store tells it, and every agent's report age.
struct GaleraNow {
    members: Vec<NodeId>,
    settings: crate::decide::galera::GaleraSettings,
    evidence: BTreeMap<NodeId, GaleraEvidence>,
    ages: BTreeMap<NodeId, u64>,
}

impl GaleraNow {
    /// `None` without `[galera]`.
    fn read(h: &Handles, core: &crate::status::CoreStatus) -> Option<Self> {
        let settings = h.config.config.galera.as_ref()?.settings();
        let members: Vec<NodeId> = h.config.members.iter().map(|m| m.id).collect();
        let now = h.liveness.mono_ms();
        let (seen, ages) = core
            .health
            .lock()
            .map(|health| (health.all(now), health.report_ages(now)))
            .unwrap_or_default();
        let evidence = evidence_from_reports(&members, &seen, settings.freshness_ms);
        Some(GaleraNow {
            members,
            settings,
            evidence,
            ages,
        })
    }

    /// The decision's inputs against the committed state (no timers: a dry run or an
    /// override never opens an outage on its own).
    fn inputs<'a>(&'a self, core: &'a crate::status::CoreStatus) -> GaleraInputs<'a> {
        GaleraInputs {
            members: &self.members,
            authority: &core.cluster.galera,
            evidence: &self.evidence,
            report_age_ms: &self.ages,
            no_primary_ms: None,
            bootstrap_fallen_ms: None,
            bootstrap_fallen_running: false,
            maintenance: core.cluster.maintenance.enabled,
            in_flight: false,
            settings: self.settings,
        }
    }
}

fn galera_body(h: &Handles, core: &crate::status::CoreStatus) -> Option<GaleraStatusBody> {
    let g = core.services.galera.as_ref()?;
    let now = GaleraNow::read(h, core)?;
    let next = galera::dry_run(&now.inputs(core));
    Some(GaleraStatusBody {
        authority: core.cluster.galera.clone(),
        verdict: g.plan.as_ref().map(|p| p.verdict.clone()),
        next,
        evidence: now.evidence,
        local: g.local.lock().map(|l| l.clone()).unwrap_or_default(),
    })
}

/// `GET /galera/synced`: the readiness signal of this node's MariaDB for HAProxy's
/// `httpchk` (and the Galera writer's routing): 200 only while this agent's own fresh check
/// sees it Synced in a Primary component; 503 with why otherwise (a rejoining node is not
/// routed to until Synced).
async fn galera_synced(State(h): State<Arc<Handles>>) -> Response {
    let core = h.status.borrow().clone();
    let me = h.config.node_id();
    let Some(db) = &h.config.config.mariadb else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "[mariadb] is not configured on this agent",
        );
    };
    let id = crate::observation::ProbeId {
        subject: me,
        service: crate::observation::Service::Mariadb,
        target: String::new(),
    };
    // Three intervals of the local probe as it runs now (a reload may change it).
    let interval = h
        .probe_timings
        .borrow()
        .get(&id)
        .map(|t| t.interval)
        .unwrap_or_else(|| db.effective_timing(&h.config.config.probes).interval);
    let fresh = interval.saturating_mul(3);
    let fresh_ms = u64::try_from(fresh.as_millis()).unwrap_or(u64::MAX);
    let own = core.health.lock().ok().and_then(|health| {
        health
            .of(&id, h.liveness.mono_ms())
            .into_iter()
            .find(|s| s.observer == me)
    });
    let Some(own) = own else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no check of the local MariaDB yet",
        );
    };
    if own.age_ms > fresh_ms {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: the last check of the local MariaDB is {} ms old",
                own.age_ms
            ),
        );
    }
    let e = galera::evidence_of(&own.observation);
    if e.primary && e.local_state.as_deref() == Some("Synced") {
        return (StatusCode::OK, "synced\n").into_response();
    }
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "not ready: {}",
            own.observation
                .last
                .error
                .clone()
                .unwrap_or_else(|| format!("state {}", e.local_state.unwrap_or_default()))
        ),
    )
}

async fn galera_status(State(h): State<Arc<Handles>>) -> Response {
    let core = h.status.borrow().clone();
    match galera_body(&h, &core) {
        Some(b) => Json(b).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "Galera recovery is not configured on this node (no [galera] section)",
        ),
    }
}

/// Body of `POST /v1/galera/bootstrap`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GaleraBootstrapRequest {
    /// Only show the choice and the evidence.
    #[serde(default)]
    dry_run: bool,
    /// The node to bootstrap (the override).
    #[serde(default)]
    node: Option<NodeId>,
    /// The operator accepts losing commits a missing node may hold.
    #[serde(default)]
    accept_data_loss: bool,
    /// Who asks.
    #[serde(default)]
    by: String,
    /// Why.
    #[serde(default)]
    reason: String,
}

async fn galera_bootstrap(
    State(h): State<Arc<Handles>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // The token before the body, as for every mutating endpoint (a dry run included).
    let req: GaleraBootstrapRequest = match json_request(
        &h,
        &headers,
        body,
        None,
        "{\"dry_run\": true} or {\"node\": N, \"accept_data_loss\": true, \"by\": \"...\", \
         \"reason\": \"...\"}",
    )
    .await
    {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let core = h.status.borrow().clone();
    let Some(now) = GaleraNow::read(&h, &core) else {
        return error(
            StatusCode::NOT_FOUND,
            "Galera recovery is not configured on this node (no [galera] section)",
        );
    };
    let inputs = now.inputs(&core);
    if req.dry_run {
        if req.node.is_some() || req.accept_data_loss {
            return error(
                StatusCode::BAD_REQUEST,
                "dry_run shows the automatic choice: drop node and accept_data_loss",
            );
        }
        return Json(serde_json::json!({
            "dry_run": galera::dry_run(&inputs),
            "evidence": &now.evidence,
        }))
        .into_response();
    }
    let Some(node) = req.node else {
        return error(
            StatusCode::BAD_REQUEST,
            "say which node to bootstrap (\"node\": N), or ask for a dry run (\"dry_run\": true)",
        );
    };
    if req.by.len() > MAX_REASON || req.reason.len() > MAX_REASON {
        return error(
            StatusCode::BAD_REQUEST,
            format!("by and reason must be at most {MAX_REASON} bytes"),
        );
    }
    let command = match galera::operator_override(
        &inputs,
        node,
        req.accept_data_loss,
        req.by.trim(),
        req.reason.trim(),
    ) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::CONFLICT, e.to_string()),
    };
    tracing::warn!(node = %node, by = %req.by, reason = %req.reason,
        "operator galera bootstrap requested");
    propose(&h, command).await
}

fn nodes_view(health: &HealthStore, now_ms: u64) -> BTreeMap<NodeId, Vec<ServiceStatus>> {
    let mut out: BTreeMap<NodeId, Vec<ServiceStatus>> = BTreeMap::new();
    for v in health.summary(now_ms) {
        let o = &v.primary.observation;
        out.entry(v.id.subject).or_default().push(ServiceStatus {
            service: v.id.service.as_str().to_string(),
            target: v.id.target.clone(),
            status: o.status,
            observer: v.primary.observer,
            age_ms: v.primary.age_ms,
            observed_at: o.observed_at,
            latency_ms: o.latency_us as f64 / 1000.0,
            failure: o.last.failure,
            error: o.last.error.clone(),
            summary: summarize(v.id.service, &o.last.details),
            details: o.last.details.clone(),
            seen_by: v.seen_by,
        });
    }
    out
}

async fn status(State(h): State<Arc<Handles>>) -> Response {
    Json(status_body(&h)).into_response()
}

async fn live(State(h): State<Arc<Handles>>) -> Response {
    let since = h.liveness.since_last();
    if h.liveness.is_live() {
        (StatusCode::OK, "live\n").into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "event loop last ran {} ms ago (limit {} ms)",
                since.as_millis(),
                h.liveness.max_gap.as_millis()
            ),
        )
    }
}

async fn ready(State(h): State<Arc<Handles>>) -> Response {
    let core = h.status.borrow().clone();
    match core.raft.leader {
        Some(leader) if core.storage_loaded => {
            (StatusCode::OK, format!("ready: leader {leader}\n")).into_response()
        }
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no leader known yet",
        ),
    }
}

/// `GET /health`: whether this agent can vouch for its node from current committed state, in
/// Patroni's style, for the shop's load balancer: its event loop runs, it knows a leader, and
/// a majority of agents renewed its lease (so what it has applied is current, and a node cut
/// off from the majority, whose Redis is fenced, is taken out of rotation). 503 says which
/// failed. The web tier's committed routing (issue 17) will add whether the node serves.
async fn health(State(h): State<Arc<Handles>>) -> Response {
    if !h.liveness.is_live() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "unhealthy: the event loop last ran {} ms ago",
                h.liveness.since_last().as_millis()
            ),
        );
    }
    let core = h.status.borrow().clone();
    let Some(leader) = core.raft.leader.filter(|_| core.storage_loaded) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unhealthy: no leader known (no quorum, or still starting)",
        );
    };
    let c = &h.config.config;
    let quorum = h.config.members.len() / 2 + 1;
    let lease = h.transport.lease(c.failover.lease, quorum - 1);
    if !crate::reconcile::usable_lease(lease.valid, lease.remaining, c.failover.action_timeout) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "unhealthy: no lease from a majority (fewer than {} peers answered within {:?}): \
                 this node is cut off",
                quorum - 1,
                c.failover.lease
            ),
        );
    }
    (
        StatusCode::OK,
        format!("healthy: leader {leader}, in touch with a majority\n"),
    )
        .into_response()
}

async fn redis_master(State(h): State<Arc<Handles>>) -> Response {
    let core = h.status.borrow().clone();
    let c = &h.config.config;
    let Some(redis) = &core.services.redis else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "[redis] is not configured on this agent",
        );
    };
    let (view, at) = match redis.local.lock() {
        Ok(v) => (v.last_cycle.clone(), v.last_cycle_at),
        Err(_) => (None, None),
    };
    // The lease as of now, not as of the last cycle.
    let quorum = h.config.members.len() / 2 + 1;
    let lease = h.transport.lease(c.failover.lease, quorum - 1);
    let lease_valid =
        crate::reconcile::usable_lease(lease.valid, lease.remaining, c.failover.action_timeout);
    // A quiet reconciler runs a full cycle every 4th period; allow one cycle's deadlines more.
    let fresh_for = c.failover.reconcile_interval.saturating_mul(4)
        + c.failover.action_timeout.saturating_mul(2);
    let recent = at.filter(|t| t.elapsed() <= fresh_for).and(view);
    let stale = at.is_some() && recent.is_none();
    match crate::reconcile::redis::serving_master(
        h.config.node_id(),
        &core.cluster.redis,
        lease_valid,
        recent.as_ref(),
    ) {
        Ok(()) => (StatusCode::OK, "master\n").into_response(),
        Err(why) if stale => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not serving: the last reconciliation cycle is older than {fresh_for:?} ({why})"
            ),
        ),
        Err(why) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not serving: {why}"),
        ),
    }
}

async fn metrics(State(h): State<Arc<Handles>>) -> Response {
    // Refresh peer gauges before rendering.
    h.transport.peers();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        h.metrics.render(),
    )
        .into_response()
}

async fn not_found(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} not allowed on {}", uri.path()),
    )
}

/// Checks the admin token and the rate limits (see [`crate::ratelimit`]); `Err` is the response to send.
fn authorize(h: &Handles, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let token = h.token.read().ok().and_then(|t| t.clone());
    let Some(token) = token else {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "mutating endpoints are disabled on this node: no api.token_file is configured",
        )));
    };
    let now = h.liveness.mono_ms();
    let mut limits = match h.limits.lock() {
        Ok(l) => l,
        Err(p) => p.into_inner(),
    };
    if let Some(ms) = limits.failures.wait_ms(now) {
        return Err(Box::new(too_many(
            ms,
            "too many failed authentications on this node (api.auth_failure_burst)",
        )));
    }
    match bearer(headers) {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => {
            limits.mutations.take(now).map_err(|ms| {
                Box::new(too_many(
                    ms,
                    &format!(
                        "too many mutating requests on this node (at most {} at once, {} a \
                         minute: api.mutation_burst, api.mutations_per_minute)",
                        h.config.config.api.mutation_burst,
                        h.config.config.api.mutations_per_minute
                    ),
                ))
            })
        }
        given => {
            let _ = limits.failures.take(now);
            Err(Box::new(match given {
                Some(_) => unauthorized("wrong bearer token"),
                None => unauthorized(
                    "missing `Authorization: Bearer TOKEN` header (token from api.token_file)",
                ),
            }))
        }
    }
}

/// 429 with `Retry-After` (whole seconds, at least 1).
fn too_many(wait_ms: u64, why: &str) -> Response {
    let secs = wait_ms.div_ceil(1000).clamp(1, 86_400);
    let mut r = error(
        StatusCode::TOO_MANY_REQUESTS,
        format!("{why}; retry in {secs} s"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

fn unauthorized(msg: &str) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, msg);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads a request body of at most [`MAX_BODY`] bytes, after authorization.
async fn read_body(body: Body) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {MAX_BODY} bytes or could not be read"),
        )
    })
}

/// A mutating request: the token first (before the body is read), then a JSON body of at
/// most [`MAX_BODY`] bytes. An empty body is `empty` when given, else invalid; the error names
/// the problem and the `expected` shape.
async fn json_request<T: serde::de::DeserializeOwned>(
    h: &Handles,
    headers: &HeaderMap,
    body: Body,
    empty: Option<T>,
    expected: &str,
) -> Result<T, Response> {
    authorize(h, headers).map_err(|r| *r)?;
    let body = read_body(body).await?;
    if let Some(e) = empty.filter(|_| body.iter().all(u8::is_ascii_whitespace)) {
        return Ok(e);
    }
    serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("invalid JSON body: {e}; expected {expected}"),
        )
    })
}

async fn maintenance(State(h): State<Arc<Handles>>, headers: HeaderMap, body: Body) -> Response {
    let req: MaintenanceRequest = match json_request(
        &h,
        &headers,
        body,
        None,
        "{\"enabled\": true|false, \"reason\": \"...\"}",
    )
    .await
    {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let reason = req.reason.trim();
    if reason.is_empty() {
        return error(StatusCode::BAD_REQUEST, "reason must not be empty");
    }
    if reason.len() > MAX_REASON {
        return error(
            StatusCode::BAD_REQUEST,
            format!("reason is longer than {MAX_REASON} bytes"),
        );
    }
    let command = Command::SetMaintenance {
        enabled: req.enabled,
        reason: reason.to_string(),
        by: format!("api@{}", h.config.node_id()),
    };
    propose(&h, command).await
}

/// Body of `POST /v1/redis/switchover` (an empty body is `{}`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchoverRequest {
    /// The target node id; absent: the best-ranked replica.
    #[serde(default)]
    to: Option<NodeId>,
}

async fn redis_switchover(
    State(h): State<Arc<Handles>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    use crate::switchover::redis::{self, RequestError, SwitchoverError};
    let req: SwitchoverRequest = match json_request(
        &h,
        &headers,
        body,
        Some(SwitchoverRequest::default()),
        "{} or {\"to\": NODE_ID}",
    )
    .await
    {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match redis::request(&h, req.to).await {
        Ok(report) => Json(report).into_response(),
        Err(RequestError::BadRequest(why)) => error(StatusCode::BAD_REQUEST, why),
        Err(RequestError::Conflict(why)) => error(StatusCode::CONFLICT, why),
        Err(RequestError::Internal(why)) => error(StatusCode::INTERNAL_SERVER_ERROR, why),
        Err(RequestError::Forced(e)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(RequestError::Failed(e)) => {
            let code = match &e {
                SwitchoverError::Precondition(_) | SwitchoverError::CatchUp { .. } => {
                    StatusCode::CONFLICT
                }
                SwitchoverError::Redis(_) => StatusCode::BAD_GATEWAY,
                SwitchoverError::Commit(_) => StatusCode::SERVICE_UNAVAILABLE,
                // Past the pause and not cleanly finished: the body says where the old
                // master stands, with every step.
                SwitchoverError::OutcomeUnknown { .. } => StatusCode::GATEWAY_TIMEOUT,
                SwitchoverError::Superseded { .. } => StatusCode::CONFLICT,
                SwitchoverError::FenceFailed { .. } => StatusCode::BAD_GATEWAY,
            };
            let steps = e.steps();
            if steps.is_empty() {
                error(code, e.to_string())
            } else {
                let body = serde_json::json!({ "error": e.to_string(), "steps": steps });
                (code, Json(body)).into_response()
            }
        }
    }
}

/// Body of `POST /v1/redis/failover`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailoverRequest {
    /// The node to promote.
    to: NodeId,
    /// Why (audit history).
    reason: String,
}

async fn redis_failover(State(h): State<Arc<Handles>>, headers: HeaderMap, body: Body) -> Response {
    use crate::switchover::failover::{self, FailoverError};
    use crate::switchover::redis::RequestError;
    let req: FailoverRequest = match json_request(
        &h,
        &headers,
        body,
        None,
        "{\"to\": NODE_ID, \"reason\": \"why\"}",
    )
    .await
    {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match failover::request(&h, req.to, &req.reason).await {
        Ok(report) => Json(report).into_response(),
        Err(RequestError::BadRequest(why)) => error(StatusCode::BAD_REQUEST, why),
        Err(RequestError::Conflict(why)) => error(StatusCode::CONFLICT, why),
        Err(RequestError::Internal(why)) => error(StatusCode::INTERNAL_SERVER_ERROR, why),
        Err(RequestError::Forced(FailoverError::Refused(why))) => error(StatusCode::CONFLICT, why),
        Err(RequestError::Forced(FailoverError::Commit(why))) => {
            error(StatusCode::SERVICE_UNAVAILABLE, why)
        }
        Err(RequestError::Failed(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn galera_switchover(
    State(h): State<Arc<Handles>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    use crate::switchover::galera::{self, GaleraSwitchoverError as E};
    let req: SwitchoverRequest = match json_request(
        &h,
        &headers,
        body,
        Some(SwitchoverRequest::default()),
        "{} or {\"to\": NODE_ID}",
    )
    .await
    {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match galera::request(&h, req.to).await {
        Ok(report) => Json(report).into_response(),
        Err(e @ E::BadRequest(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ E::Conflict(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e @ E::Commit(_)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e @ E::NotServing { .. }) => error(StatusCode::GATEWAY_TIMEOUT, e.to_string()),
    }
}

async fn propose(h: &Handles, command: Command) -> Response {
    match h.propose(command).await {
        Ok(applied) => Json(serde_json::json!({
            "applied_index": applied.index,
            "outcome": applied.outcome.name(),
            "rejected": match &applied.outcome {
                crate::cluster::Outcome::Rejected(why) => Some(why.clone()),
                _ => None,
            },
            "maintenance": applied.maintenance,
        }))
        .into_response(),
        Err(e @ (ProposeError::NoLeader | ProposeError::Timeout { .. })) => {
            let leader = h.status.borrow().raft.leader;
            let mut body = serde_json::json!({ "error": e.to_string(), "leader_id": leader });
            if let Some(l) = leader.and_then(|l| h.config.members.iter().find(|m| m.id == l)) {
                body["leader_api"] = serde_json::json!(l.api_addr.to_string());
            }
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The routes this file builds, as (method, path), from its own source: every
    /// `.route("PATH", get(..))` or `post(..)`.
    fn routes_in_source() -> std::collections::BTreeSet<(String, String)> {
        let source = include_str!("api.rs");
        let mut out = std::collections::BTreeSet::new();
        for line in source.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix(".route(\"") else {
                continue;
            };
            let Some((path, handler)) = rest.split_once("\", ") else {
                continue;
            };
            let method = handler.split('(').next().unwrap_or_default();
            out.insert((method.to_string(), path.to_string()));
        }
        out
    }

    /// The OpenAPI document names exactly the routes the router has, with their methods (the
    /// paths' `{id}` as axum writes it).
    #[test]
    fn openapi_document_matches_the_routes() {
        let doc: serde_json::Value =
            serde_json::from_str(OPENAPI).unwrap_or_else(|e| panic!("openapi.json: {e}"));
        let mut documented = std::collections::BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().into_iter().flatten() {
            for method in ops.as_object().into_iter().flatten().map(|(m, _)| m) {
                documented.insert((method.clone(), path.clone()));
            }
        }
        let routes = routes_in_source();
        assert!(routes.len() >= 15, "few routes found in api.rs: {routes:?}");
        assert_eq!(documented, routes, "openapi.json against the router");
        // Every operation has a summary and responses, and every response names its type.
        for (path, ops) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in ops.as_object().into_iter().flatten() {
                assert!(op["summary"].is_string(), "{method} {path}: no summary");
                let responses = op["responses"].as_object();
                assert!(responses.is_some_and(|r| !r.is_empty()), "{method} {path}");
            }
        }
    }

    /// Table: which first segments take the role-check path (check, head length, HTTP/1.0);
    /// everything else goes to hyper.
    #[test]
    fn only_whole_role_checks_take_the_short_path() {
        let haproxy = "GET /redis/master HTTP/1.0\r\n\r\n";
        let curl = "GET /galera/writer HTTP/1.1\r\nHost: db1\r\nConnection: close\r\n\r\n";
        let empty_body = "GET /galera/writer HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        let lb = "GET /health HTTP/1.1\r\nHost: 10.0.0.11\r\n\r\n";
        type Parsed = Option<(RoleCheck, usize, bool)>;
        let cases: &[(&str, Parsed)] = &[
            (haproxy, Some((RoleCheck::RedisMaster, haproxy.len(), true))),
            (curl, Some((RoleCheck::GaleraWriter, curl.len(), false))),
            (lb, Some((RoleCheck::Health, lb.len(), false))),
            (
                empty_body,
                Some((RoleCheck::GaleraWriter, empty_body.len(), false)),
            ),
            // Partial, or more than one request, or a body: hyper.
            ("GET /redis/master HTTP/1.0\r\n", None),
            ("GET /redis/mas", None),
            ("", None),
            (
                "GET /redis/master HTTP/1.1\r\n\r\nGET /live HTTP/1.1\r\n\r\n",
                None,
            ),
            (
                "GET /redis/master HTTP/1.1\r\nContent-Length: 2\r\n\r\n",
                None,
            ),
            (
                "GET /redis/master HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                None,
            ),
            (
                "GET /redis/master HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
                None,
            ),
            // Other methods, paths and queries: hyper.
            ("HEAD /redis/master HTTP/1.0\r\n\r\n", None),
            ("POST /redis/master HTTP/1.0\r\n\r\n", None),
            ("GET /redis/master?x=1 HTTP/1.0\r\n\r\n", None),
            ("GET /redis/master/ HTTP/1.0\r\n\r\n", None),
            ("GET /v1/status HTTP/1.0\r\n\r\n", None),
            ("\u{1}\u{2}garbage\r\n\r\n", None),
        ];
        for (request, expected) in cases {
            assert_eq!(role_check(request.as_bytes()), *expected, "{request:?}");
        }
    }

    /// The role-check path writes a complete HTTP/1.x response in the request's version.
    #[tokio::test]
    async fn role_check_responses_are_complete_http() {
        let ok = role_check_response((StatusCode::OK, "master\n").into_response(), true).await;
        assert_eq!(
            String::from_utf8_lossy(&ok),
            "HTTP/1.0 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 7\r\n\
             connection: close\r\n\r\nmaster\n"
        );
        let no = role_check_response(
            error(StatusCode::SERVICE_UNAVAILABLE, "not the master"),
            false,
        )
        .await;
        let text = String::from_utf8_lossy(&no);
        let body = r#"{"error":"not the master"}"#;
        assert_eq!(
            text,
            format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
        );
    }
}
