//! The PHP-FPM probe: over FastCGI (TCP or UNIX socket), the pool's ping path must answer the
//! configured response, then `status?json` is read and judged.
//!
//! Status: `healthy`; `degraded` when requests queue on two consecutive checks or the pool hit
//! `pm.max_children` since the previous check; `down` when the ping answer is wrong or the
//! status page is not PHP-FPM's; `unreachable` when FastCGI cannot be spoken.

use std::sync::Mutex;

use fastcgi_client::{Client, Params, Request};

use super::phpfpm_status::{degradation, parse_status, FpmStatus};
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
    previous: Mutex<Option<FpmStatus>>,
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
            previous: Mutex::new(None),
        }
    }

    async fn request(&self, path: &str, query: &str) -> Result<Vec<u8>, Failure> {
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
        let out = match &self.addr {
            FcgiAddr::Tcp(a) => {
                let stream = tokio::net::TcpStream::connect(a)
                    .await
                    .map_err(|e| Failure(FailureKind::of_io(&e), format!("php-fpm {a}: {e}")))?;
                Client::new_tokio(stream)
                    .execute_once(Request::new_tokio(params, tokio::io::empty()))
                    .await
            }
            FcgiAddr::Unix(p) => {
                let stream = tokio::net::UnixStream::connect(p).await.map_err(|e| {
                    Failure(
                        FailureKind::of_io(&e),
                        format!("php-fpm {}: {e}", p.display()),
                    )
                })?;
                Client::new_tokio(stream)
                    .execute_once(Request::new_tokio(params, tokio::io::empty()))
                    .await
            }
        };
        let out = out.map_err(|e| {
            let kind = match &e {
                fastcgi_client::ClientError::Io(io) => FailureKind::of_io(io),
                _ => FailureKind::Protocol,
            };
            Failure(kind, format!("php-fpm {}: {e}", self.addr))
        })?;
        let stdout = out.stdout.unwrap_or_default();
        Ok(body_of(&stdout).to_vec())
    }

    async fn run(&self) -> CheckResult {
        let ping = match self.request(&self.ping_path, "").await {
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
        let body = match self.request(&self.status_path, "json").await {
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
                let why = degradation(prev.as_ref(), &status);
                *prev = Some(status);
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
