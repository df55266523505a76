//! The real [`Haproxy`]: HAProxy's admin UNIX socket, one connection per command (HAProxy
//! answers one non-interactive command and closes), each exchange bounded by a timeout; the
//! server-state file written atomically.

// Reads the clock (adapter: bounds socket I/O by deadlines); see agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    check_name, parse_show_info, read_servers_state, AdminMode, Haproxy, HaproxyError, HaproxyInfo,
    ServerRow,
};

/// The largest answer read from the socket; a full `show servers state` is about 150 bytes per
/// server.
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

/// The real HAProxy, over its admin UNIX socket: one connection per command (HAProxy answers
/// one non-interactive command and closes), each exchange bounded by a timeout.
#[derive(Clone, Debug)]
pub struct HaproxySocket {
    path: PathBuf,
    timeout: Duration,
    state_file: Option<PathBuf>,
}

impl HaproxySocket {
    /// A client of the admin socket at `path`; every command must complete within `timeout`.
    pub fn new(path: impl Into<PathBuf>, timeout: Duration) -> Self {
        HaproxySocket {
            path: path.into(),
            timeout,
            state_file: None,
        }
    }

    /// Sets the server-state file [`Haproxy::save_server_state`] writes (haproxy.cfg's
    /// `server-state-file`).
    pub fn with_state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.state_file = Some(path.into());
        self
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends one command line and returns the whole answer.
    async fn command(&self, command: &str) -> Result<String, HaproxyError> {
        let started = Instant::now();
        let exchange = async {
            let mut stream =
                tokio::net::UnixStream::connect(&self.path)
                    .await
                    .map_err(|source| match source.kind() {
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                            HaproxyError::Down {
                                path: self.path.clone(),
                                source,
                            }
                        }
                        _ => self.io(command, source),
                    })?;
            stream
                .write_all(format!("{command}\n").as_bytes())
                .await
                .map_err(|e| self.io(command, e))?;
            let mut answer = Vec::new();
            (&mut stream)
                .take(MAX_ANSWER + 1)
                .read_to_end(&mut answer)
                .await
                .map_err(|e| self.io(command, e))?;
            if answer.len() as u64 > MAX_ANSWER {
                // A truncated state dump could silently lose servers: refuse it whole.
                let too_big =
                    std::io::Error::other(format!("answer larger than {MAX_ANSWER} bytes"));
                return Err(self.io(command, too_big));
            }
            Ok(String::from_utf8_lossy(&answer).into_owned())
        };
        let result = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(HaproxyError::Timeout {
                path: self.path.clone(),
                command: command.to_string(),
                timeout: self.timeout,
            }),
        };
        tracing::debug!(
            socket = %self.path.display(), command,
            elapsed_ms = started.elapsed().as_millis() as u64, ok = result.is_ok(),
            "haproxy command"
        );
        result
    }

    fn io(&self, command: &str, source: std::io::Error) -> HaproxyError {
        HaproxyError::Io {
            path: self.path.clone(),
            command: command.to_string(),
            source,
        }
    }

    /// A command whose success is an empty answer.
    async fn command_empty(&self, command: &str) -> Result<(), HaproxyError> {
        let answer = self.command(command).await?;
        if answer.trim().is_empty() {
            Ok(())
        } else {
            Err(HaproxyError::Refused {
                command: command.to_string(),
                message: answer.trim().to_string(),
            })
        }
    }

    async fn servers_state_text(&self, backend: Option<&str>) -> Result<String, HaproxyError> {
        let command = match backend {
            Some(b) => {
                check_name("backend", b)?;
                format!("show servers state {b}")
            }
            None => "show servers state".to_string(),
        };
        self.command(&command).await
    }

    async fn show_servers_state_impl(
        &self,
        backend: Option<&str>,
    ) -> Result<Vec<ServerRow>, HaproxyError> {
        let text = self.servers_state_text(backend).await?;
        read_servers_state(backend, &text)
    }

    async fn set_server_state_impl(
        &self,
        backend: &str,
        server: &str,
        mode: AdminMode,
    ) -> Result<(), HaproxyError> {
        check_name("backend", backend)?;
        check_name("server", server)?;
        self.command_empty(&format!("set server {backend}/{server} state {mode}"))
            .await
    }

    async fn shutdown_sessions_impl(
        &self,
        backend: &str,
        server: &str,
    ) -> Result<(), HaproxyError> {
        check_name("backend", backend)?;
        check_name("server", server)?;
        self.command_empty(&format!("shutdown sessions server {backend}/{server}"))
            .await
    }

    async fn force_health_up_impl(&self, backend: &str, server: &str) -> Result<(), HaproxyError> {
        check_name("backend", backend)?;
        check_name("server", server)?;
        self.command_empty(&format!("set server {backend}/{server} health up"))
            .await
    }

    async fn show_info_impl(&self) -> Result<HaproxyInfo, HaproxyError> {
        let command = "show info";
        let text = self.command(command).await?;
        if !text.trim_start().starts_with("Name:") {
            return Err(HaproxyError::Refused {
                command: command.into(),
                message: text.trim().to_string(),
            });
        }
        parse_show_info(&text).map_err(|source| HaproxyError::Parse {
            command: command.into(),
            source,
        })
    }

    async fn save_server_state_impl(&self) -> Result<usize, HaproxyError> {
        let path = self.state_file.clone().ok_or(HaproxyError::NoStateFile)?;
        let text = self.servers_state_text(None).await?;
        // Validate before writing: a refusal or garbage must never replace a good file.
        let rows = read_servers_state(None, &text)?;
        write_atomically(&path, text.into_bytes()).await?;
        tracing::info!(file = %path.display(), servers = rows.len(), "haproxy server state saved");
        Ok(rows.len())
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory, synced, then
/// renamed over the target, so HAProxy never loads a half-written file.
async fn write_atomically(path: &Path, bytes: Vec<u8>) -> Result<(), HaproxyError> {
    let path = path.to_path_buf();
    let target = path.clone();
    let work = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        let mut tmp_name = target.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(format!(".triad-tmp.{}", std::process::id()));
        let tmp = target.with_file_name(tmp_name);
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &target)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        // Make the rename itself durable; best effort (some filesystems refuse a directory sync).
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    });
    let result = match work.await {
        Ok(r) => r,
        Err(join) => Err(std::io::Error::other(join.to_string())),
    };
    result.map_err(|source| HaproxyError::StateFile { path, source })
}

impl Haproxy for HaproxySocket {
    fn show_servers_state<'a>(
        &'a self,
        backend: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<ServerRow>, HaproxyError>> {
        Box::pin(self.show_servers_state_impl(backend))
    }

    fn set_server_state<'a>(
        &'a self,
        backend: &'a str,
        server: &'a str,
        mode: AdminMode,
    ) -> BoxFuture<'a, Result<(), HaproxyError>> {
        Box::pin(self.set_server_state_impl(backend, server, mode))
    }

    fn shutdown_sessions<'a>(
        &'a self,
        backend: &'a str,
        server: &'a str,
    ) -> BoxFuture<'a, Result<(), HaproxyError>> {
        Box::pin(self.shutdown_sessions_impl(backend, server))
    }

    fn force_health_up<'a>(
        &'a self,
        backend: &'a str,
        server: &'a str,
    ) -> BoxFuture<'a, Result<(), HaproxyError>> {
        Box::pin(self.force_health_up_impl(backend, server))
    }

    fn show_info(&self) -> BoxFuture<'_, Result<HaproxyInfo, HaproxyError>> {
        Box::pin(self.show_info_impl())
    }

    fn save_server_state(&self) -> BoxFuture<'_, Result<usize, HaproxyError>> {
        Box::pin(self.save_server_state_impl())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuator::haproxy::ErrorKind;

    #[test]
    fn socket_errors_are_classified() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let missing = HaproxySocket::new(dir.path().join("none.sock"), Duration::from_millis(200));
        let e = rt.block_on(missing.show_info()).err().map(|e| e.kind());
        assert_eq!(e, Some(ErrorKind::Down));
        let e = rt
            .block_on(missing.save_server_state())
            .err()
            .map(|e| e.kind());
        assert_eq!(e, Some(ErrorKind::NoStateFile));
        let e = rt
            .block_on(missing.set_server_state("redis", "r1;show info", AdminMode::Ready))
            .err()
            .map(|e| e.kind());
        assert_eq!(e, Some(ErrorKind::BadName));
    }
}
