//! The MariaDB/Galera probe: connects (UNIX socket for the local server when configured, TCP
//! otherwise), reads `SHOW GLOBAL STATUS LIKE 'wsrep_%'` and a few variables, and judges the
//! node by Galera's own state: only Synced, Primary and ready counts as healthy.
//!
//! When the server cannot be reached and this is the local node's probe with a `datadir`,
//! `grastate.dat` is read and attached (uuid, seqno, safe_to_bootstrap): what a later Galera
//! recovery needs to choose a bootstrap node (`grastate_missing` when there is none), with the
//! local recovery's notes ([`LocalGaleraNotes`]: the process state, the recovered position).
//!
//! The details of an answered check are the [`GaleraStatus`] as JSON, among them the node's
//! `gcomm_uuid` (what `evs.evict` needs, readable only while the node answers) and its
//! auto-increment settings (`auto_increment_increment`, `auto_increment_offset`,
//! `auto_increment_control`). A node that serves but breaks the platform's auto-increment
//! convention ([`GaleraStatus::auto_increment_problem`]) is reported degraded with the
//! reason; a node that does not serve stays down, whatever its settings.
//!
//! The connection is kept between checks; when it fails, the same check retries on a fresh
//! connection, so a server that died is classified as refused (or timed out) at once.
//!
//! Caveats: a node outside the primary component still answers `SELECT 1` (only table access
//! fails with ERROR 1047), so the probe never relies on `SELECT 1` alone.

use std::path::PathBuf;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};

use super::galera_status::{self, GaleraStatus};
use super::grastate;
use super::{CheckResult, FailureKind, ProbeId};
use crate::cluster::OutageId;
use crate::config::ProbeTiming;
use crate::decide::galera::GaleraPosition;

/// Where the server listens.
#[derive(Clone, Debug)]
pub enum MysqlTarget {
    /// TCP address.
    Tcp(std::net::SocketAddr),
    /// UNIX socket path.
    Socket(PathBuf),
}

impl std::fmt::Display for MysqlTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MysqlTarget::Tcp(a) => write!(f, "{a}"),
            MysqlTarget::Socket(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Probes one MariaDB server.
pub struct MariadbProbe {
    id: ProbeId,
    target: MysqlTarget,
    user: String,
    password: Option<String>,
    datadir: Option<PathBuf>,
    timing: ProbeTiming,
    /// `galera.auto_increment_increment`: every node's expected increment (0: not checked).
    expected_increment: u64,
    /// The connection kept between checks (authentication per check would cost more CPU than
    /// the rest of the agent); dropped on any error so the next check reconnects and
    /// classifies a dead server as refused.
    conn: tokio::sync::Mutex<Option<Conn>>,
    notes: Option<GaleraNotes>,
}

/// What the local Galera recovery adds to the local probe's report while mariadbd does not
/// answer: service control's word on the process, and the position `--wsrep-recover` found.
/// The leader's full-outage decision reads them from the report (health stays out of the log).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalGaleraNotes {
    /// `running` or `stopped`, as service control last said; `None` when not known.
    pub service: Option<&'static str>,
    /// The position recovered since mariadbd last ran.
    pub recovered: Option<GaleraPosition>,
    /// The outage whose committed bootstrap this agent carried out (since it started): the
    /// leader supersedes an outage whose bootstrap node says so while it stays stopped.
    pub bootstrapped: Option<OutageId>,
}

impl LocalGaleraNotes {
    /// Adds the notes to a failed check's details (`service`, `recovered`, `bootstrapped`),
    /// as the local probe reports them.
    pub fn add_to(&self, details: &mut serde_json::Value) {
        let Some(d) = details.as_object_mut() else {
            return;
        };
        if let Some(svc) = self.service {
            d.insert("service".into(), svc.into());
        }
        if let Some(p) = &self.recovered {
            d.insert(
                "recovered".into(),
                serde_json::to_value(p).unwrap_or_default(),
            );
        }
        if let Some(o) = self.bootstrapped {
            d.insert("bootstrapped".into(), o.0.into());
        }
    }
}

impl LocalGaleraNotes {
    /// Adds the `bootstrapped` note to an answered check's details: a bootstrap node that
    /// runs non-Primary (alone after the node that joined it died) has fallen as surely as a
    /// stopped one, and the leader needs to know it carried its bootstrap out.
    pub fn add_bootstrapped_to(&self, details: &mut serde_json::Value) {
        if let (Some(o), Some(d)) = (self.bootstrapped, details.as_object_mut()) {
            d.insert("bootstrapped".into(), o.0.into());
        }
    }
}

/// The notes, shared between the local recovery (writer) and the local probe (reader).
pub type GaleraNotes = std::sync::Arc<std::sync::Mutex<LocalGaleraNotes>>;

impl MariadbProbe {
    /// A probe; `datadir` only for the local server. The auto-increment settings are not
    /// checked until [`MariadbProbe::with_expected_increment`].
    pub fn new(
        id: ProbeId,
        target: MysqlTarget,
        user: String,
        password: Option<String>,
        datadir: Option<PathBuf>,
        timing: ProbeTiming,
    ) -> Self {
        MariadbProbe {
            id,
            target,
            user,
            password,
            datadir,
            timing,
            expected_increment: 0,
            conn: tokio::sync::Mutex::new(None),
            notes: None,
        }
    }

    /// Reports a serving node whose auto-increment settings break the convention (every
    /// node `increment` with its own offset, Galera's auto-control OFF) as degraded; `0`: no
    /// check.
    pub fn with_expected_increment(mut self, increment: u64) -> Self {
        self.expected_increment = increment;
        self
    }

    /// Attaches the local recovery's notes to every failed check's details (and its
    /// `bootstrapped` note to answered ones).
    pub fn with_notes(mut self, notes: GaleraNotes) -> Self {
        self.notes = Some(notes);
        self
    }

    /// A copy of the local recovery's notes, when attached.
    fn notes_now(&self) -> Option<LocalGaleraNotes> {
        self.notes
            .as_ref()
            .and_then(|n| n.lock().ok().map(|n| n.clone()))
    }

    async fn run(&self) -> CheckResult {
        match self.query().await {
            Ok(g) => {
                let mut r = judge(g, self.expected_increment);
                if let Some(n) = self.notes_now() {
                    n.add_bootstrapped_to(&mut r.details);
                }
                r
            }
            Err(e) => {
                let mut r = classify(&e, &self.target);
                if let Some(dir) = &self.datadir {
                    r.details = grastate_details(dir);
                }
                if let Some(n) = self.notes_now() {
                    n.add_to(&mut r.details);
                }
                r
            }
        }
    }

    async fn query(&self) -> Result<GaleraStatus, mysql_async::Error> {
        let mut slot = self.conn.lock().await;
        if let Some(mut c) = slot.take() {
            if let Ok(status) = Self::read(&mut c).await {
                *slot = Some(c);
                return Ok(status);
            }
            // The kept connection broke: judge the server by a fresh one (refused, timeout).
        }
        let mut conn = self.connect().await?;
        let status = Self::read(&mut conn).await?;
        // Only a connection that just worked is kept.
        *slot = Some(conn);
        Ok(status)
    }

    async fn connect(&self) -> Result<Conn, mysql_async::Error> {
        let mut opts = OptsBuilder::default()
            .user(Some(self.user.clone()))
            .pass(self.password.clone())
            .stmt_cache_size(0)
            .prefer_socket(false);
        opts = match &self.target {
            MysqlTarget::Tcp(a) => opts.ip_or_hostname(a.ip().to_string()).tcp_port(a.port()),
            MysqlTarget::Socket(p) => opts.socket(Some(p.to_string_lossy().into_owned())),
        };
        Conn::new(opts).await
    }

    async fn read(conn: &mut Conn) -> Result<GaleraStatus, mysql_async::Error> {
        // Only what `galera_status::from_rows` reads (all of `wsrep_%` is ~70 rows, read twice
        // a second), status and variables in one round trip (two statements, two result
        // sets). A row that is not two strings is skipped rather than trusted.
        let mut result = conn
            .query_iter(format!(
                "{}; {}",
                galera_status::show_query("STATUS", galera_status::STATUS_NAMES),
                galera_status::show_query("VARIABLES", galera_status::VARIABLE_NAMES),
            ))
            .await?;
        let status = result.try_collect::<(String, String)>().await?;
        let vars = result.try_collect::<(String, String)>().await?;
        result.drop_result().await?;
        let rows = status
            .iter()
            .chain(vars.iter())
            .filter_map(|r| r.as_ref().ok())
            .map(|(k, v)| (k.as_str(), v.as_str()));
        Ok(galera_status::from_rows(rows))
    }
}

/// The result of a check the server answered, from what it answered: down when the node
/// should not take traffic; otherwise degraded when Galera is not enabled or the
/// auto-increment settings are wrong for `expected_increment` (0: not checked), else healthy.
/// Pure: the whole-cluster simulation builds its MariaDB reports with it.
pub fn judge(g: GaleraStatus, expected_increment: u64) -> CheckResult {
    let details = serde_json::to_value(&g).unwrap_or_default();
    if g.local_state.is_none() && g.cluster_status.is_none() {
        return CheckResult::degraded(details, "wsrep status empty: Galera is not enabled");
    }
    if let Some(p) = g.problem() {
        return CheckResult::down(details, p);
    }
    match g.auto_increment_problem(expected_increment) {
        None => CheckResult::healthy(details),
        Some(p) => CheckResult::degraded(details, p),
    }
}

fn grastate_details(dir: &std::path::Path) -> serde_json::Value {
    grastate_json(&grastate::read_grastate(dir).map_err(|e| e.to_string()))
}

/// The details of a failed local check: `grastate.dat` as read (`grastate`,
/// `grastate_missing` or `grastate_error`); the notes come on top ([`LocalGaleraNotes::add_to`]).
/// Pure: the whole-cluster simulation builds its MariaDB reports with it.
pub fn grastate_json(grastate: &Result<Option<grastate::Grastate>, String>) -> serde_json::Value {
    match grastate {
        Ok(Some(g)) => serde_json::json!({ "grastate": g }),
        Ok(None) => serde_json::json!({ "grastate_missing": true }),
        Err(e) => serde_json::json!({ "grastate_error": e }),
    }
}

fn classify(e: &mysql_async::Error, target: &MysqlTarget) -> CheckResult {
    let kind = match e {
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => FailureKind::of_io(io),
        #[allow(unreachable_patterns)]
        mysql_async::Error::Io(_) => FailureKind::Io,
        // 1045 access denied, 1044 no database access, 1698 (unix_socket plugin) denied.
        mysql_async::Error::Server(s) if matches!(s.code, 1044 | 1045 | 1698) => FailureKind::Auth,
        mysql_async::Error::Server(s) => {
            return CheckResult::down(
                serde_json::Value::Null,
                format!("mariadb {target}: server error {}: {}", s.code, s.message),
            )
        }
        mysql_async::Error::Driver(_) => FailureKind::Protocol,
        _ => FailureKind::Io,
    };
    CheckResult::unreachable(kind, format!("mariadb {target}: {e}"))
}

super::impl_probe!(MariadbProbe);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observation::Status;

    /// The captured Synced node (status and variables of node 2), with `vars` over it.
    fn synced(vars: &[(&str, &str)]) -> GaleraStatus {
        let status = crate::probe::fixture("galera", "status_synced_size2.tsv");
        let variables = crate::probe::fixture("galera", "variables.tsv");
        let mut rows = galera_status::parse_tsv(&status);
        rows.extend(galera_status::parse_tsv(&variables));
        rows.extend(vars.iter().copied());
        galera_status::from_rows(rows)
    }

    /// (variables over the Synced capture, expected increment) -> status and reason.
    #[test]
    fn judged_by_state_then_auto_increment() {
        type Case<'a> = (&'a [(&'a str, &'a str)], u64, Status, &'a str);
        let cases: &[Case] = &[
            (&[], 3, Status::Healthy, ""),
            (&[], 0, Status::Healthy, ""),
            (
                &[("wsrep_auto_increment_control", "ON")],
                3,
                Status::Degraded,
                "wsrep_auto_increment_control is ON",
            ),
            (
                &[("auto_increment_increment", "1")],
                3,
                Status::Degraded,
                "auto_increment_increment is 1, expected 3",
            ),
            (&[("auto_increment_increment", "1")], 0, Status::Healthy, ""),
            // A node that does not serve is down for that, whatever its settings.
            (
                &[
                    ("wsrep_cluster_status", "non-Primary"),
                    ("wsrep_auto_increment_control", "ON"),
                ],
                3,
                Status::Down,
                "cluster status non-Primary (not Primary)",
            ),
            (
                &[
                    ("wsrep_local_state", "2"),
                    ("wsrep_local_state_comment", "Donor/Desynced"),
                    ("auto_increment_increment", "1"),
                ],
                3,
                Status::Down,
                "local state 2 (Donor/Desynced)",
            ),
        ];
        for (vars, expected, status, why) in cases {
            let r = judge(synced(vars), *expected);
            assert_eq!(r.status, *status, "{vars:?}: {r:?}");
            let error = r.error.as_deref().unwrap_or("");
            assert!(error.starts_with(why), "{vars:?}: {error:?} is not {why:?}");
            assert_eq!(error.is_empty(), why.is_empty(), "{vars:?}: {error:?}");
            if *status == Status::Degraded {
                assert_eq!(r.failure, None, "degraded is not a failure");
            }
        }
    }

    /// The details carry the gcomm id and the auto-increment settings under these keys.
    #[test]
    fn details_keys() {
        let d = judge(synced(&[]), 3).details;
        let want = serde_json::json!({
            "gcomm_uuid": "de9c8213-ebe1-11f1-99b5-eea5fd5db039",
            "state_uuid": "de5b593b-ebe1-11f1-b996-0bbce3f5b979",
            "last_committed": 11,
            "auto_increment_increment": 3,
            "auto_increment_offset": 2,
            "auto_increment_control": false,
        });
        for (k, v) in want.as_object().into_iter().flatten() {
            assert_eq!(d.get(k), Some(v), "details[{k}] in {d}");
        }
    }
}
