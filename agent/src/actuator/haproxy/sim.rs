//! [`SimHaproxy`]: an in-memory HAProxy for tests and the simulator, passing the same contract
//! suite as the real socket (`agent/tests/haproxy_contract.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;

use super::{
    check_name, parse_servers_state, read_servers_state, render_servers_state, AdminMode,
    AdminState, Haproxy, HaproxyError, HaproxyInfo, OpState, ServerRow,
};

/// How a simulated server is configured (what haproxy.cfg would say).
#[derive(Clone, Debug)]
struct SimSpec {
    backend: String,
    server: String,
    port: u16,
    disabled: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SimReach {
    Up,
    Down,
    Hung,
}

#[derive(Debug)]
struct SimInner {
    specs: Vec<SimSpec>,
    /// Admin state per (backend, server).
    admin: BTreeMap<(String, String), AdminState>,
    /// Established sessions per (backend, server).
    sessions: BTreeMap<(String, String), u32>,
    /// The server-state file's content.
    saved: Option<String>,
    reach: SimReach,
    pid: u32,
}

impl SimInner {
    fn config_admin(spec: &SimSpec) -> AdminState {
        if spec.disabled {
            AdminState(AdminState::CONFIGURED_MAINT | AdminState::FORCED_MAINT)
        } else {
            AdminState(0)
        }
    }

    fn rows(&self, backend: Option<&str>) -> Vec<ServerRow> {
        let mut backend_ids: BTreeMap<&str, u32> = BTreeMap::new();
        let mut server_ids: BTreeMap<&str, u32> = BTreeMap::new();
        let mut rows = Vec::new();
        for spec in &self.specs {
            let next_be = backend_ids.len() as u32 + 1;
            let be_id = *backend_ids.entry(&spec.backend).or_insert(next_be);
            let srv_id = server_ids.entry(&spec.backend).or_insert(0);
            *srv_id += 1;
            if backend.is_some_and(|b| b != spec.backend) {
                continue;
            }
            let admin = self
                .admin
                .get(&(spec.backend.clone(), spec.server.clone()))
                .copied()
                .unwrap_or_default();
            rows.push(ServerRow {
                backend_id: be_id,
                backend: spec.backend.clone(),
                server_id: *srv_id,
                server: spec.server.clone(),
                addr: "127.0.0.1".into(),
                port: spec.port,
                // No health checks in the sim: up unless in maintenance.
                op_state: if admin.is_maint() {
                    OpState::Stopped
                } else {
                    OpState::Running
                },
                admin_state: admin,
                weight: 1,
            });
        }
        rows
    }

    /// HAProxy's answer when `backend/server` does not exist, if it does not.
    fn lookup(&self, backend: &str, server: &str) -> Result<(String, String), &'static str> {
        if !self.specs.iter().any(|s| s.backend == backend) {
            return Err("No such backend.");
        }
        if !self
            .specs
            .iter()
            .any(|s| s.backend == backend && s.server == server)
        {
            return Err("No such server.");
        }
        Ok((backend.to_string(), server.to_string()))
    }

    /// A reload: configuration state, then the state file, where the configured `disabled`
    /// keyword agrees with the file (HAProxy 2.6 lets a changed configuration win).
    fn reload(&mut self) {
        self.admin = self
            .specs
            .iter()
            .map(|s| ((s.backend.clone(), s.server.clone()), Self::config_admin(s)))
            .collect();
        let saved = self
            .saved
            .as_deref()
            .and_then(|t| parse_servers_state(t).ok())
            .unwrap_or_default();
        for row in saved {
            let Some(spec) = self
                .specs
                .iter()
                .find(|s| s.backend == row.backend && s.server == row.server)
            else {
                continue;
            };
            let configured = Self::config_admin(spec).0 & AdminState::CONFIGURED_MAINT;
            if row.admin_state.0 & AdminState::CONFIGURED_MAINT == configured {
                let forced =
                    row.admin_state.0 & (AdminState::FORCED_MAINT | AdminState::FORCED_DRAIN);
                self.admin.insert(
                    (row.backend.clone(), row.server.clone()),
                    AdminState(configured | forced),
                );
            }
        }
        self.pid += 1;
    }
}

/// An in-memory HAProxy for tests and the simulator: backends and servers as configured with
/// [`SimHaproxy::add_server`], admin states changed by the same commands with HAProxy 2.6's
/// flag semantics and refusal texts, a state file kept in memory, a reload, established
/// sessions, and switches to make it down or hung. Clones share the same instance.
#[derive(Clone, Debug)]
pub struct SimHaproxy {
    inner: Arc<Mutex<SimInner>>,
    timeout: Duration,
    path: PathBuf,
}

impl SimHaproxy {
    /// An empty, reachable HAProxy; a hung one fails its calls with a timeout after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        SimHaproxy {
            inner: Arc::new(Mutex::new(SimInner {
                specs: Vec::new(),
                admin: BTreeMap::new(),
                sessions: BTreeMap::new(),
                saved: None,
                reach: SimReach::Up,
                pid: 1000,
            })),
            timeout,
            path: PathBuf::from("sim:haproxy.sock"),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SimInner> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a server to the configuration (as a line in haproxy.cfg; `disabled` like the
    /// keyword), in its configuration state.
    pub fn add_server(&self, backend: &str, server: &str, port: u16, disabled: bool) {
        let mut inner = self.lock();
        let spec = SimSpec {
            backend: backend.into(),
            server: server.into(),
            port,
            disabled,
        };
        inner.admin.insert(
            (backend.into(), server.into()),
            SimInner::config_admin(&spec),
        );
        inner.specs.push(spec);
    }

    /// Makes HAProxy stopped (`false`: calls fail as connection refused) or running again.
    pub fn set_running(&self, running: bool) {
        self.lock().reach = if running {
            SimReach::Up
        } else {
            SimReach::Down
        };
    }

    /// Makes HAProxy hang (calls time out) or answer again.
    pub fn set_hung(&self, hung: bool) {
        self.lock().reach = if hung { SimReach::Hung } else { SimReach::Up };
    }

    /// Reloads: back to the configuration, then restores what the state file holds.
    pub fn reload(&self) {
        self.lock().reload();
    }

    /// A client connects through the frontend; it reaches the server only if the server is
    /// ready (returns whether a session was established).
    pub fn open_session(&self, backend: &str, server: &str) -> bool {
        let mut inner = self.lock();
        let key = (backend.to_string(), server.to_string());
        let ready = inner.admin.get(&key).is_some_and(|a| a.is_ready());
        if ready && inner.reach == SimReach::Up {
            *inner.sessions.entry(key).or_insert(0) += 1;
        }
        ready
    }

    /// Established sessions on a server.
    pub fn sessions(&self, backend: &str, server: &str) -> u32 {
        self.lock()
            .sessions
            .get(&(backend.to_string(), server.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Runs `f` on the state if reachable; otherwise the error a real socket would give.
    async fn call<T>(
        &self,
        command: String,
        f: impl FnOnce(&mut SimInner) -> Result<T, HaproxyError>,
    ) -> Result<T, HaproxyError> {
        let reach = self.lock().reach;
        match reach {
            SimReach::Up => f(&mut self.lock()),
            SimReach::Down => Err(HaproxyError::Down {
                path: self.path.clone(),
                source: std::io::ErrorKind::ConnectionRefused.into(),
            }),
            SimReach::Hung => {
                tokio::time::sleep(self.timeout).await;
                Err(HaproxyError::Timeout {
                    path: self.path.clone(),
                    command,
                    timeout: self.timeout,
                })
            }
        }
    }
}

fn refused(command: &str, message: &str) -> HaproxyError {
    HaproxyError::Refused {
        command: command.to_string(),
        message: message.to_string(),
    }
}

impl Haproxy for SimHaproxy {
    fn show_servers_state<'a>(
        &'a self,
        backend: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<ServerRow>, HaproxyError>> {
        Box::pin(async move {
            if let Some(b) = backend {
                check_name("backend", b)?;
            }
            let command = match backend {
                Some(b) => format!("show servers state {b}"),
                None => "show servers state".to_string(),
            };
            self.call(command.clone(), move |inner| {
                if let Some(b) = backend {
                    if !inner.specs.iter().any(|s| s.backend == b) {
                        return Err(refused(&command, "Can't find backend."));
                    }
                }
                // Through the text format, as the real one, so the sim exercises the parser.
                read_servers_state(backend, &render_servers_state(&inner.rows(backend)))
            })
            .await
        })
    }

    fn set_server_state<'a>(
        &'a self,
        backend: &'a str,
        server: &'a str,
        mode: AdminMode,
    ) -> BoxFuture<'a, Result<(), HaproxyError>> {
        Box::pin(async move {
            check_name("backend", backend)?;
            check_name("server", server)?;
            let command = format!("set server {backend}/{server} state {mode}");
            self.call(command.clone(), move |inner| {
                let key = inner
                    .lookup(backend, server)
                    .map_err(|m| refused(&command, m))?;
                let admin = inner.admin.entry(key).or_default();
                let (fm, fd) = (AdminState::FORCED_MAINT, AdminState::FORCED_DRAIN);
                admin.0 = match mode {
                    AdminMode::Ready => admin.0 & !(fm | fd),
                    AdminMode::Drain => (admin.0 & !fm) | fd,
                    AdminMode::Maint => (admin.0 & !fd) | fm,
                };
                Ok(())
            })
            .await
        })
    }

    fn shutdown_sessions<'a>(
        &'a self,
        backend: &'a str,
        server: &'a str,
    ) -> BoxFuture<'a, Result<(), HaproxyError>> {
        Box::pin(async move {
            check_name("backend", backend)?;
            check_name("server", server)?;
            let command = format!("shutdown sessions server {backend}/{server}");
            self.call(command.clone(), move |inner| {
                let key = inner
                    .lookup(backend, server)
                    .map_err(|m| refused(&command, m))?;
                inner.sessions.remove(&key);
                Ok(())
            })
            .await
        })
    }

    fn force_health_up<'a>(
        &'a self,
        backend: &'a str,
        server: &'a str,
    ) -> BoxFuture<'a, Result<(), HaproxyError>> {
        Box::pin(async move {
            check_name("backend", backend)?;
            check_name("server", server)?;
            let command = format!("set server {backend}/{server} health up");
            // The sim has no health checks: a server in service is always up.
            self.call(command.clone(), move |inner| {
                inner
                    .lookup(backend, server)
                    .map(|_| ())
                    .map_err(|m| refused(&command, m))
            })
            .await
        })
    }

    fn show_info(&self) -> BoxFuture<'_, Result<HaproxyInfo, HaproxyError>> {
        Box::pin(self.call("show info".into(), |inner| {
            Ok(HaproxyInfo {
                version: "sim".into(),
                pid: inner.pid,
                uptime_sec: 0,
                node: "sim".into(),
            })
        }))
    }

    fn save_server_state(&self) -> BoxFuture<'_, Result<usize, HaproxyError>> {
        Box::pin(self.call("show servers state".into(), |inner| {
            let rows = inner.rows(None);
            inner.saved = Some(render_servers_state(&rows));
            Ok(rows.len())
        }))
    }
}
