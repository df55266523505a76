//! The PHP-FPM probe: over FastCGI (TCP or UNIX socket), the pool's ping path must answer the
//! configured response, then `status?json` is read and judged. Both requests of a check share
//! one connection (FastCGI keep-alive), closed when the check ends: kept between checks, an idle
//! connection would hold one of the pool's workers.
//!
//! Status: `healthy`; `degraded` when the listen queue is above `[phpfpm] queue_bound` on two
//! consecutive checks and for `queue_for` (default: any queue on two checks), or the pool hit
//! `pm.max_children` since the previous check; `down` when the ping answer is wrong or the
//! status page is not PHP-FPM's; `unreachable` when FastCGI cannot be spoken.

// Reads the clock (adapter: how long the listen queue has been over its bound); see
// agent/.clippy.toml.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::sync::Mutex;

use fastcgi_client::conn::KeepAlive;
use fastcgi_client::{Client, Params, Request};

use super::phpfpm_status::{degradation, parse_status, FpmStatus, Saturation};
use super::{CheckResult, FailureKind, ProbeId};
use crate::config::{FcgiAddr, ProbeTiming};

/// Probes one PHP-FPM pool.
pub struct PhpfpmProbe {
    id: ProbeId,
    addr: FcgiAddr,
    ping_path: String,
    ping_response: String,
    status_path: String,
    timing: ProbeTiming,
    saturation: Saturation,
    /// The previous sample, and since when the listen queue has been above the bound.
    previous: Mutex<(Option<FpmStatus>, Option<std::time::Instant>)>,
}

/// A failed FastCGI exchange.
struct Failure(FailureKind, String);

impl PhpfpmProbe {
    /// A probe of the pool at `addr`.
    pub fn new(
        id: ProbeId,
        addr: FcgiAddr,
        ping_path: String,
        ping_response: String,
        status_path: String,
        timing: ProbeTiming,
    ) -> Self {
        PhpfpmProbe {
            id,
            addr,
            ping_path,
            ping_response,
            status_path,
            timing,
            saturation: Saturation::default(),
            previous: Mutex::new((None, None)),
        }
    }

    /// When the pool counts as saturated (default: any queue on two consecutive checks).
    pub fn with_saturation(mut self, saturation: Saturation) -> Self {
        self.saturation = saturation;
        self
    }

    /// One FastCGI request on `client`'s connection; the body of its stdout.
    async fn request<S>(
        &self,
        client: &mut Client<S, KeepAlive>,
        path: &str,
        query: &str,
    ) -> Result<Vec<u8>, Failure>
    where
        S: futures::io::AsyncRead + futures::io::AsyncWrite + Unpin,
    {
        let params = Params::default()
            .request_method("GET")
            .script_name(path.to_string())
            .script_filename(path.to_string())
            .request_uri(if query.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{query}")
            })
            .query_string(query.to_string())
            .server_name("triad")
            .remote_addr("127.0.0.1")
            .content_length(0);
        let out = client
            .execute(Request::new(params, futures::io::empty()))
            .await
            .map_err(|e| {
                let kind = match &e {
                    fastcgi_client::ClientError::Io(io) => FailureKind::of_io(io),
                    _ => FailureKind::Protocol,
                };
                Failure(kind, format!("php-fpm {}: {e}", self.addr))
            })?;
        let stdout = out.stdout.unwrap_or_default();
        Ok(body_of(&stdout).to_vec())
    }

    /// Connects to the pool and runs the check's requests on that one connection (FastCGI
    /// keep-alive, closed when the check ends: an idle kept connection would hold a worker).
    async fn run(&self) -> CheckResult {
        let r = self.connect_and_run().await;
        if !r.status.is_up() {
            // A pool that failed (killed, restarted) starts its saturation count afresh: its
            // next sample is compared with none, and its queue dated from then.
            if let Ok(mut prev) = self.previous.lock() {
                *prev = (None, None);
            }
        }
        r
    }

    async fn connect_and_run(&self) -> CheckResult {
        match &self.addr {
            FcgiAddr::Tcp(a) => match tokio::net::TcpStream::connect(a).await {
                Ok(stream) => {
                    // The client writes a request in several small writes: on a connection
                    // with a request already answered, Nagle's algorithm would hold them for
                    // the server's delayed ACK (40 ms).
                    let _ = stream.set_nodelay(true);
                    self.run_on(Client::new_keep_alive_tokio(stream)).await
                }
                Err(e) => {
                    CheckResult::unreachable(FailureKind::of_io(&e), format!("php-fpm {a}: {e}"))
                }
            },
            FcgiAddr::Unix(p) => match tokio::net::UnixStream::connect(p).await {
                Ok(stream) => self.run_on(Client::new_keep_alive_tokio(stream)).await,
                Err(e) => CheckResult::unreachable(
                    FailureKind::of_io(&e),
                    format!("php-fpm {}: {e}", p.display()),
                ),
            },
        }
    }

    async fn run_on<S>(&self, mut client: Client<S, KeepAlive>) -> CheckResult
    where
        S: futures::io::AsyncRead + futures::io::AsyncWrite + Unpin,
    {
        let ping = match self.request(&mut client, &self.ping_path, "").await {
            Ok(b) => b,
            Err(Failure(kind, msg)) => return CheckResult::unreachable(kind, msg),
        };
        let answer = String::from_utf8_lossy(&ping);
        if answer.trim() != self.ping_response {
            return CheckResult::down(
                serde_json::Value::Null,
                format!(
                    "{} answered {:?}, expected {:?} (is ping.path set in the pool?)",
                    self.ping_path,
                    truncate(answer.trim(), 80),
                    self.ping_response
                ),
            );
        }
        let body = match self.request(&mut client, &self.status_path, "json").await {
            Ok(b) => b,
            Err(Failure(kind, msg)) => return CheckResult::unreachable(kind, msg),
        };
        let status = match parse_status(&body) {
            Ok(s) => s,
            Err(e) => {
                return CheckResult::down(
                    serde_json::Value::Null,
                    format!("{}: {e} (is pm.status_path set?)", self.status_path),
                )
            }
        };
        let details = serde_json::to_value(&status).unwrap_or_default();
        let why = match self.previous.lock() {
            Ok(mut prev) => {
                let (sample, since) = &mut *prev;
                let queued_for = if status.listen_queue > self.saturation.queue_bound {
                    since.get_or_insert_with(std::time::Instant::now).elapsed()
                } else {
                    *since = None;
                    std::time::Duration::ZERO
                };
                let why = degradation(sample.as_ref(), &status, &self.saturation, queued_for);
                *sample = Some(status);
                why
            }
            Err(_) => None,
        };
        match why {
            Some(w) => CheckResult::degraded(details, w),
            None => CheckResult::healthy(details),
        }
    }
}

/// Strips the CGI headers from a FastCGI stdout stream.
fn body_of(stdout: &[u8]) -> &[u8] {
    for sep in [&b"\r\n\r\n"[..], b"\n\n"] {
        if let Some(i) = stdout.windows(sep.len()).position(|w| w == sep) {
            return &stdout[i + sep.len()..];
        }
    }
    stdout
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

super::impl_probe!(PhpfpmProbe);

#[cfg(test)]
mod tests {
    use super::body_of;

    #[test]
    fn strips_cgi_headers() {
        assert_eq!(body_of(b"Content-type: text/plain\r\n\r\npong"), b"pong");
        assert_eq!(body_of(b"X: y\n\n{}"), b"{}");
        assert_eq!(body_of(b"no headers"), b"no headers");
    }
}
