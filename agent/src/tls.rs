//! Mutual TLS between agents: the cluster CA, node certificates and their identities.
//!
//! **Identity.** A node's certificate carries the DNS name `n<id>.<cluster>.triad` (see
//! [`node_name`]) and is signed by the cluster's CA. A dialling agent verifies the listener's
//! certificate for the name of the peer it meant to reach, as any TLS client verifies a host
//! name; a listening agent requires a client certificate from the CA, reads the node id from
//! its name ([`client_identity`]), and the transport then requires the connection's `Hello`
//! to claim that same id. So a peer can only speak as the node its key was issued for.
//!
//! **Policy.** TLS 1.3 only (every peer is a Triad agent; nothing older needs to connect), the
//! ring provider, ECDSA P-256 keys from `triad cert`. No session tickets: connections are
//! long-lived and one-way, and a resumed session would skip nothing worth skipping.
//!
//! **Refusals** are named by [`Refusal`], which the transport counts in
//! `triad_peer_refused_total{reason}` and logs with the detail.
//!
//! **Certificates** (`triad cert init`, `triad cert issue`) are made here with rcgen: a CA
//! whose subject is `triad CA <cluster>`, and node certificates for both TLS client and server
//! use. Issuing reconstructs the CA's issuer data from the cluster name and checks the new
//! certificate against the CA file before writing it, so a CA of another cluster is refused
//! rather than producing certificates that would not verify.
//!
//! Caveats: no revocation lists; a compromised node key is retired by rotating the CA (a
//! bundle of old and new CA during the rotation, then the new one alone). Reloading files
//! without a restart is the transport's [`crate::raft::transport::Transport::set_tls`].

// Reads the clock (adapter: a certificate's validity is judged at load and issue time).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier as _;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};

use crate::ids::NodeId;

/// The last label of every node name.
pub const DOMAIN: &str = "triad";

/// The DNS name a node's certificate carries: `n<id>.<cluster>.triad`.
pub fn node_name(cluster: &str, id: NodeId) -> String {
    format!("n{}.{cluster}.{DOMAIN}", id.get())
}

/// Checks that `cluster` can stand in a certificate name: one DNS label (letters, digits and
/// `-`, not at either end, at most 63 characters).
pub fn check_cluster_name(cluster: &str) -> Result<(), String> {
    let ok = !cluster.is_empty()
        && cluster.len() <= 63
        && cluster
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !cluster.starts_with('-')
        && !cluster.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{cluster}` cannot stand in peer certificate names (n1.{cluster}.{DOMAIN}): use \
             letters, digits and `-` (at most 63), or set tls.insecure_plaintext_peers"
        ))
    }
}

/// Where a node's TLS files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA bundle: one certificate, or the old and the new during a CA rotation.
    pub ca: PathBuf,
    /// This node's certificate (PEM; a chain is allowed).
    pub cert: PathBuf,
    /// Its private key (PEM, mode 0600 or stricter).
    pub key: PathBuf,
}

/// Why TLS files could not be used; every message names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file does not hold what it should.
    #[error("{path}: {detail}")]
    Content {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        detail: String,
    },
    /// rustls or rcgen refused the material.
    #[error("{what}: {detail}")]
    Crypto {
        /// What was being built.
        what: String,
        /// Their error.
        detail: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn crypto(what: &str) -> impl FnOnce(String) -> TlsError + '_ {
    move |detail| TlsError::Crypto {
        what: what.to_string(),
        detail,
    }
}

/// The crypto provider every TLS object here uses: ring. rustls marks it deprecated because
/// ring has no post-quantum key exchange; the alternative, aws-lc-rs, builds a C library with
/// cmake on every CI run, and the peers' traffic is short-lived cluster state on a private
/// network. Revisit when ring or a pure-Rust provider gains ML-KEM.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Content {
            path: path.to_path_buf(),
            detail: format!("not PEM certificates ({e}); give the {what} in PEM"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Content {
            path: path.to_path_buf(),
            detail: format!("holds no certificate; give the {what} in PEM"),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if let Some(mode) = crate::secret::exposed_mode(&meta) {
        return Err(TlsError::Content {
            path: path.to_path_buf(),
            detail: crate::secret::exposed_problem(path, mode),
        });
    }
    let bytes = std::fs::read(path).map_err(io(path))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Content {
        path: path.to_path_buf(),
        detail: format!(
            "no PEM private key in it ({e}); give the node's key from `triad cert issue`"
        ),
    })
}

/// This node's TLS setup for peer connections, built from its files.
#[derive(Clone, Debug)]
pub struct PeerTls {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    cluster: String,
}

impl PeerTls {
    /// Loads the files of node `me` of `cluster`, and checks that its certificate is valid now,
    /// signed by the CA and issued for `me`.
    pub fn load(files: &TlsFiles, cluster: &str, me: NodeId) -> Result<PeerTls, TlsError> {
        let cas = read_certs(&files.ca, "cluster CA (ca.crt from `triad cert init`)")?;
        let chain = read_certs(&files.cert, "node certificate (from `triad cert issue`)")?;
        let key = read_key(&files.key)?;
        let mut roots = RootCertStore::empty();
        for ca in cas {
            roots.add(ca).map_err(|e| TlsError::Content {
                path: files.ca.clone(),
                detail: format!("not a usable CA certificate: {e}"),
            })?;
        }
        let roots = Arc::new(roots);
        let provider = provider();
        let own = node_name(cluster, me);
        check_own(&roots, &provider, &chain, &own, UnixTime::now()).map_err(|detail| {
            TlsError::Content {
                path: files.cert.clone(),
                detail,
            }
        })?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| crypto("the client certificate verifier")(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| crypto("TLS 1.3")(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| TlsError::Content {
                path: files.key.clone(),
                detail: format!("does not go with {}: {e}", files.cert.display()),
            })?;
        server.send_tls13_tickets = 0;
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| crypto("TLS 1.3")(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain.clone(), key)
            .map_err(|e| TlsError::Content {
                path: files.key.clone(),
                detail: format!("does not go with {}: {e}", files.cert.display()),
            })?;
        Ok(PeerTls {
            server: Arc::new(server),
            client: Arc::new(client),
            cluster: cluster.to_string(),
        })
    }

    /// The acceptor for the peer listener.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server.clone())
    }

    /// The connector for dialling peers.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.client.clone())
    }

    /// The client side's rustls configuration (for tests that speak to an agent as a member).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }

    /// The name to verify when dialling `peer`.
    pub fn server_name(&self, peer: NodeId) -> Result<ServerName<'static>, String> {
        ServerName::try_from(node_name(&self.cluster, peer)).map_err(|e| e.to_string())
    }

    /// The cluster this setup is for.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }
}

/// The HTTP API's TLS (`[api] tls_cert_file`, `tls_key_file`): server authentication only
/// (clients are authenticated by their bearer tokens), TLS 1.2 and 1.3 for the API's varied
/// clients (HAProxy's checks, Prometheus, curl), ALPN `http/1.1` and `http/1.0`. The certificate is the
/// operator's, for the names and addresses clients use.
pub fn api_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let chain = read_certs(cert, "API certificate chain")?;
    let key_der = read_key(key)?;
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| crypto("TLS versions")(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| TlsError::Content {
            path: key.to_path_buf(),
            detail: format!("does not go with {}: {e}", cert.display()),
        })?;
    // Both: rustls ends a handshake whose client offers ALPN with no protocol in common
    // (curl --http1.0 offers only http/1.0).
    server.alpn_protocols = vec![b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
}

/// Verifies this node's own certificate as a peer would; the error says what to do.
fn check_own(
    roots: &Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
    chain: &[CertificateDer<'static>],
    own: &str,
    at: UnixTime,
) -> Result<(), String> {
    let Some((leaf, rest)) = chain.split_first() else {
        return Err("holds no certificate".into());
    };
    let verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(own.to_string()).map_err(|e| e.to_string())?;
    match verifier.verify_server_cert(leaf, rest, &name, &[], at) {
        Ok(_) => Ok(()),
        Err(e) => {
            let names = dns_names(leaf).join(", ");
            Err(match Refusal::of_tls(&e) {
                Refusal::Expired => "this node's certificate has expired; issue a new one with \
                                     `triad cert issue`"
                    .to_string(),
                Refusal::NotYetValid => {
                    "this node's certificate is not valid yet; check the clock".to_string()
                }
                Refusal::UnknownCa => "this node's certificate is not signed by the CA in \
                                       tls.ca_file; issue it from that CA with `triad cert issue`"
                    .to_string(),
                Refusal::WrongNode | Refusal::WrongCluster => format!(
                    "this node's certificate is for [{names}], not {own}; issue one for this \
                     node with `triad cert issue --node <id>`"
                ),
                _ => format!("this node's certificate does not verify: {e}"),
            })
        }
    }
}

/// The DNS names of a certificate (empty when it does not parse).
pub fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    webpki::EndEntityCert::try_from(cert)
        .map(|c| c.valid_dns_names().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Why a peer connection was refused (in its TLS handshake, for its certificate's identity or
/// for its safety timings): the `reason` label of `triad_peer_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// The first bytes were not a TLS handshake.
    Plaintext,
    /// The certificate is not from this cluster's CA.
    UnknownCa,
    /// The certificate has expired.
    Expired,
    /// The certificate is not valid yet.
    NotYetValid,
    /// The certificate is for another node than the one claimed or dialled.
    WrongNode,
    /// The certificate is for another cluster, or carries no node name.
    WrongCluster,
    /// The peer sent no certificate.
    NoCertificate,
    /// The other side refused us (its alert names why; see its log).
    PeerAlert,
    /// No handshake within the bound.
    Timeout,
    /// Anything else in the handshake.
    Handshake,
    /// The peer's safety timings differ from ours (`config::safety_timings`).
    SafetyTimings,
}

impl Refusal {
    /// Every reason, for the metric's label set.
    pub const ALL: [Refusal; 11] = [
        Refusal::Plaintext,
        Refusal::UnknownCa,
        Refusal::Expired,
        Refusal::NotYetValid,
        Refusal::WrongNode,
        Refusal::WrongCluster,
        Refusal::NoCertificate,
        Refusal::PeerAlert,
        Refusal::Timeout,
        Refusal::Handshake,
        Refusal::SafetyTimings,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Plaintext => "plaintext",
            Refusal::UnknownCa => "unknown_ca",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::WrongNode => "wrong_node",
            Refusal::WrongCluster => "wrong_cluster",
            Refusal::NoCertificate => "no_certificate",
            Refusal::PeerAlert => "peer_alert",
            Refusal::Timeout => "timeout",
            Refusal::Handshake => "handshake",
            Refusal::SafetyTimings => "safety_timings",
        }
    }

    /// The reason for a rustls error.
    pub fn of_tls(e: &rustls::Error) -> Refusal {
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    Refusal::UnknownCa
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    Refusal::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    Refusal::NotYetValid
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => Refusal::WrongNode,
                _ => Refusal::Handshake,
            },
            rustls::Error::NoCertificatesPresented => Refusal::NoCertificate,
            rustls::Error::AlertReceived(_) => Refusal::PeerAlert,
            _ => Refusal::Handshake,
        }
    }

    /// The reason for an I/O error from a TLS handshake (tokio-rustls wraps rustls' error).
    pub fn of_io(e: &std::io::Error) -> Refusal {
        if e.kind() == std::io::ErrorKind::TimedOut {
            return Refusal::Timeout;
        }
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map_or(Refusal::Handshake, Refusal::of_tls)
    }
}

/// The node a verified client certificate is for: the id in its `n<id>.<cluster>.triad` name,
/// confirmed with webpki's own name check.
pub fn client_identity(
    cluster: &str,
    cert: &CertificateDer<'_>,
) -> Result<NodeId, (Refusal, String)> {
    let names = dns_names(cert);
    let suffix = format!(".{cluster}.{DOMAIN}");
    let id = names.iter().find_map(|n| {
        n.strip_suffix(&suffix)
            .and_then(|head| head.strip_prefix('n'))
            .and_then(|digits| digits.parse::<u64>().ok())
            .filter(|&n| n != 0)
            .map(NodeId)
    });
    let Some(id) = id else {
        return Err((
            Refusal::WrongCluster,
            format!(
                "certificate names [{}], none of them n<id>{suffix}",
                names.join(", ")
            ),
        ));
    };
    let name = ServerName::try_from(node_name(cluster, id))
        .map_err(|e| (Refusal::Handshake, e.to_string()))?;
    let end =
        webpki::EndEntityCert::try_from(cert).map_err(|e| (Refusal::Handshake, e.to_string()))?;
    end.verify_is_valid_for_subject_name(&name)
        .map_err(|e| (Refusal::WrongNode, e.to_string()))?;
    Ok(id)
}

/// Whether a connection's first byte starts a TLS handshake record.
pub fn is_tls_handshake(first: u8) -> bool {
    first == 0x16
}

/// Writes `text` to `path` with `mode`, refusing to overwrite an existing file.
fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), TlsError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                TlsError::Content {
                    path: path.to_path_buf(),
                    detail: "exists already; remove it first to replace it (or write \
                             elsewhere with --out)"
                        .into(),
                }
            } else {
                TlsError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
    f.write_all(text.as_bytes()).map_err(io(path))?;
    // `mode` is masked by the umask at creation; make sure it is exactly what was asked.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))
}

fn ca_params(cluster: &str) -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, format!("triad CA {cluster}"));
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    p
}

/// What `triad cert` wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Written {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key (mode 0600).
    pub key: PathBuf,
    /// The name it carries (node certificates) or its subject (the CA).
    pub name: String,
    /// Days it is valid for.
    pub days: u32,
}

/// Creates a cluster CA in `dir`: `ca.crt` and `ca.key` (0600). Refuses to overwrite.
pub fn init_ca(dir: &Path, cluster: &str, days: u32) -> Result<Written, TlsError> {
    check_cluster_name(cluster).map_err(|detail| TlsError::Content {
        path: dir.to_path_buf(),
        detail,
    })?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let key = rcgen::KeyPair::generate().map_err(|e| crypto("a CA key")(e.to_string()))?;
    let mut params = ca_params(cluster);
    (params.not_before, params.not_after) = validity(days);
    let cert = params
        .self_signed(&key)
        .map_err(|e| crypto("the CA certificate")(e.to_string()))?;
    let written = Written {
        cert: dir.join("ca.crt"),
        key: dir.join("ca.key"),
        name: format!("triad CA {cluster}"),
        days,
    };
    write_new(&written.key, &key.serialize_pem(), 0o600)?;
    write_new(&written.cert, &cert.pem(), 0o644)?;
    Ok(written)
}

/// Validity of a new certificate: from an hour ago (clock skew) for `days`.
fn validity(days: u32) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (
        now - time::Duration::hours(1),
        now + time::Duration::days(i64::from(days)),
    )
}

/// Issues node `id`'s certificate from the CA in `ca_dir` into `out`: `n<id>.crt` and
/// `n<id>.key` (0600). The new certificate is verified against `ca.crt` before it is written.
pub fn issue(
    ca_dir: &Path,
    out: &Path,
    cluster: &str,
    id: NodeId,
    days: u32,
) -> Result<Written, TlsError> {
    let (from, until) = validity(days);
    let mut w = issue_between(ca_dir, out, cluster, id, from, until)?;
    w.days = days;
    Ok(w)
}

/// A node certificate and its key, signed by the CA in `ca_dir` for `name`.
fn sign(
    ca_dir: &Path,
    cluster: &str,
    name: &str,
    from: time::OffsetDateTime,
    until: time::OffsetDateTime,
) -> Result<(rcgen::Certificate, rcgen::KeyPair), TlsError> {
    check_cluster_name(cluster).map_err(|detail| TlsError::Content {
        path: ca_dir.to_path_buf(),
        detail,
    })?;
    let ca_key_path = ca_dir.join("ca.key");
    let ca_key_pem = std::fs::read_to_string(&ca_key_path).map_err(io(&ca_key_path))?;
    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem).map_err(|e| TlsError::Content {
        path: ca_key_path.clone(),
        detail: format!("not a CA key from `triad cert init`: {e}"),
    })?;
    let issuer = rcgen::Issuer::new(ca_params(cluster), ca_key);
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])
        .map_err(|e| crypto("the node certificate")(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name.to_string());
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    (params.not_before, params.not_after) = (from, until);
    let key = rcgen::KeyPair::generate().map_err(|e| crypto("a node key")(e.to_string()))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| crypto("the node certificate")(e.to_string()))?;
    Ok((cert, key))
}

/// Writes a node's certificate and key into `out` as `<stem>.crt` and `<stem>.key`.
fn write_pair(
    out: &Path,
    stem: &str,
    name: String,
    cert: &rcgen::Certificate,
    key: &rcgen::KeyPair,
    days: u32,
) -> Result<Written, TlsError> {
    std::fs::create_dir_all(out).map_err(io(out))?;
    let written = Written {
        cert: out.join(format!("{stem}.crt")),
        key: out.join(format!("{stem}.key")),
        name,
        days,
    };
    write_new(&written.key, &key.serialize_pem(), 0o600)?;
    write_new(&written.cert, &cert.pem(), 0o644)?;
    Ok(written)
}

/// [`issue`] with explicit validity dates.
fn issue_between(
    ca_dir: &Path,
    out: &Path,
    cluster: &str,
    id: NodeId,
    from: time::OffsetDateTime,
    until: time::OffsetDateTime,
) -> Result<Written, TlsError> {
    let name = node_name(cluster, id);
    let (cert, key) = sign(ca_dir, cluster, &name, from, until)?;
    // The CA file must be the one that key signs for this cluster: check, within the new
    // certificate's validity, before writing anything.
    let ca_path = ca_dir.join("ca.crt");
    let mut roots = RootCertStore::empty();
    for ca in read_certs(&ca_path, "cluster CA")? {
        let _ = roots.add(ca);
    }
    let middle = (from.unix_timestamp() + until.unix_timestamp()) / 2;
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(middle).unwrap_or(0),
    ));
    check_own(
        &Arc::new(roots),
        &provider(),
        &[cert.der().clone()],
        &name,
        at,
    )
    .map_err(|_| TlsError::Content {
        path: ca_path.clone(),
        detail: format!(
            "a certificate issued with {} for cluster `{cluster}` does not verify \
                 against it: is this the CA of cluster `{cluster}` (`triad cert init \
                 --cluster {cluster}`)?",
            ca_dir.join("ca.key").display()
        ),
    })?;
    let days = u32::try_from((until - from).whole_days()).unwrap_or(0);
    write_pair(out, &format!("n{}", id.get()), name, &cert, &key, days)
}

/// A certificate of the CA in `ca_dir` for any `name`, unchecked: what a misissued or foreign
/// certificate looks like to a peer.
#[cfg(test)]
fn issue_unchecked(
    ca_dir: &Path,
    out: &Path,
    cluster: &str,
    name: &str,
) -> Result<Written, TlsError> {
    let (from, until) = validity(1);
    let (cert, key) = sign(ca_dir, cluster, name, from, until)?;
    write_pair(out, "foreign", name.to_string(), &cert, &key, 1)
}

#[cfg(test)]
/// Tests: a client made straight from files, without [`PeerTls::load`]'s own-certificate check, so
/// that a test can present what a bad peer would.
pub(crate) fn raw_connector(ca: &Path, cert: &Path, key: &Path) -> tokio_rustls::TlsConnector {
    let mut roots = RootCertStore::empty();
    for c in read_certs(ca, "ca").unwrap_or_else(|e| panic!("{e}")) {
        roots.add(c).unwrap_or_else(|e| panic!("{e}"));
    }
    let chain = read_certs(cert, "cert").unwrap_or_else(|e| panic!("{e}"));
    let key = read_key(key).unwrap_or_else(|e| panic!("{e}"));
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .and_then(|b| {
            b.with_root_certificates(roots)
                .with_client_auth_cert(chain, key)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[cfg(test)]
mod tests;
