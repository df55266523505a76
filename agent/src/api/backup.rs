//! The backup endpoints: `GET /v1/backups` (schedule, next due time, the running backup's
//! progress, the last success per component, the last failure, the catalog), `GET
//! /v1/backups/{id}` (one run), and `POST /v1/backup` (ask for a backup now; token).
//!
//! Everything shown is the committed backup authority as this node applied it, plus the
//! running backup's progress from its runner's latest health report as this node received it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{error, json_request, propose, MAX_REASON};
use crate::cluster::{BackupLease, BackupRecord, Command, Component};
use crate::codec::BackupRun;
use crate::decide::backup::{next_due, BackupSchedule};
use crate::ids::UnixMillis;
use crate::status::{CoreStatus, Handles};

/// The running backup, with its runner's progress.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunningBackup {
    /// The lease.
    pub lease: BackupLease,
    /// What its runner last reported (absent before its first report).
    pub progress: Option<BackupRunView>,
}

/// A runner's report, for display.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackupRunView {
    /// The phase.
    pub phase: String,
    /// Bytes so far.
    pub bytes: u64,
    /// Elapsed, by the runner's clock.
    pub elapsed_ms: u64,
    /// Whether it is over (the leader commits the end next).
    pub done: bool,
    /// Its verdict when over.
    pub reason: String,
}

impl From<&BackupRun> for BackupRunView {
    fn from(r: &BackupRun) -> Self {
        BackupRunView {
            phase: r.phase.clone(),
            bytes: r.bytes,
            elapsed_ms: r.elapsed_ms,
            done: r.done,
            reason: r.reason.clone(),
        }
    }
}

/// `GET /v1/backups`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackupsBody {
    /// The cron schedule (UTC).
    pub schedule: String,
    /// When the schedule was armed (absent before the first leader decided).
    pub armed_at: Option<UnixMillis>,
    /// When the next window opens, or the one due now.
    pub next_due: Option<UnixMillis>,
    /// The running backup.
    pub running: Option<RunningBackup>,
    /// An operator's request waiting for its lease.
    pub requested: Option<crate::cluster::BackupRequest>,
    /// A retry owed after a failed first attempt.
    pub retry: Option<crate::cluster::BackupRetry>,
    /// The newest verified run holding each component.
    pub last_success: BTreeMap<String, BackupRecord>,
    /// The newest failed run, if newer than the newest verified one.
    pub last_failure: Option<BackupRecord>,
    /// Finished runs, newest first.
    pub catalog: Vec<BackupRecord>,
}

/// Builds the backups view from a published status; `None` without `[backup]`.
pub fn backups_body(h: &Handles, core: &CoreStatus) -> Option<BackupsBody> {
    let section = h.config.config.backup.as_ref()?;
    let b = &core.cluster.backup;
    let now = crate::probe::runner::now_millis();
    let next_due = BackupSchedule::parse(&section.schedule)
        .ok()
        .and_then(|s| next_due(&s, b, now));
    let running = b.lease.as_ref().map(|l| {
        let progress = core.health.lock().ok().and_then(|h| {
            h.backup_runs()
                .get(&l.node)
                .filter(|r| r.id == l.id)
                .map(BackupRunView::from)
        });
        RunningBackup {
            lease: l.clone(),
            progress,
        }
    });
    let mut last_success = BTreeMap::new();
    for c in Component::ALL {
        if let Some(r) = b
            .catalog
            .iter()
            .filter(|r| r.verified)
            .find(|r| r.summary.components.iter().any(|s| s.component == c))
        {
            last_success.insert(c.as_str().to_string(), r.clone());
        }
    }
    let last_failure = b.catalog.iter().take_while(|r| !r.verified).next().cloned();
    Some(BackupsBody {
        schedule: section.schedule.clone(),
        armed_at: b.armed_at,
        next_due,
        running,
        requested: b.request.clone(),
        retry: b.retry.clone(),
        last_success,
        last_failure,
        catalog: b.catalog.iter().cloned().collect(),
    })
}

fn not_configured() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "backups are not configured on this node (no [backup] section)",
    )
}

/// `GET /v1/backups`.
pub(super) async fn list(State(h): State<Arc<Handles>>) -> Response {
    let core = h.status.borrow().clone();
    match backups_body(&h, &core) {
        Some(b) => Json(b).into_response(),
        None => not_configured(),
    }
}

/// `GET /v1/backups/{id}` (`b7` or `7`).
pub(super) async fn show(State(h): State<Arc<Handles>>, Path(id): Path<String>) -> Response {
    if h.config.config.backup.is_none() {
        return not_configured();
    }
    let Ok(n) = id.trim_start_matches('b').parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("`{id}` is not a backup id (like b7 or 7)"),
        );
    };
    let core = h.status.borrow().clone();
    let b = &core.cluster.backup;
    if let Some(r) = b.catalog.iter().find(|r| r.id.0 == n) {
        return Json(serde_json::json!({ "record": r })).into_response();
    }
    if let Some(l) = b.lease.as_ref().filter(|l| l.id.0 == n) {
        let running = backups_body(&h, &core).and_then(|v| v.running);
        return Json(serde_json::json!({ "running": running.map_or_else(
            || serde_json::json!({ "lease": l }),
            |r| serde_json::json!(r)
        ) }))
        .into_response();
    }
    error(
        StatusCode::NOT_FOUND,
        format!(
            "no backup b{n} in the catalog (it keeps the newest {}; older snapshots are in the \
             repository: restic snapshots --tag triad)",
            crate::cluster::CATALOG_LIMIT
        ),
    )
}

/// Body of `POST /v1/backup`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupNowRequest {
    /// Why (recorded in the history).
    #[serde(default)]
    reason: String,
}

/// `POST /v1/backup`: commits a request for a backup now; the leader leases it to a node.
pub(super) async fn now(State(h): State<Arc<Handles>>, headers: HeaderMap, body: Body) -> Response {
    let req: BackupNowRequest = match json_request(
        &h,
        &headers,
        body,
        Some(BackupNowRequest::default()),
        "{\"reason\": \"...\"}",
    )
    .await
    {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if h.config.config.backup.is_none() {
        return not_configured();
    }
    let reason = match req.reason.trim() {
        "" => "backup now".to_string(),
        r if r.len() > MAX_REASON => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("reason is longer than {MAX_REASON} bytes"),
            )
        }
        r => r.to_string(),
    };
    propose(
        &h,
        Command::RequestBackup {
            by: format!("api@{}", h.config.node_id()),
            reason,
        },
    )
    .await
}
