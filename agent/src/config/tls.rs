//! `[tls]`: mutual TLS between agents, on by default.
//!
//! Every path is relative to the config file's directory when relative. The defaults fit the
//! layout `triad cert` writes: `tls/ca.crt`, and `tls/n<id>.crt` and `tls/n<id>.key` for this
//! node. Validation loads the files as the agent will (see [`crate::tls::PeerTls::load`]), so
//! `triad check-config` finds a missing, foreign, expired or misissued certificate, and a key
//! that others can read, before `triad run` does.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};
use crate::ids::NodeId;
use crate::tls::{check_cluster_name, PeerTls, TlsError, TlsFiles};

/// `[tls]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The cluster CA bundle (PEM): the CA from `triad cert init`, or the old and the new CA
    /// during a CA rotation. Default `tls/ca.crt`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// This node's certificate (PEM) from `triad cert issue --node <id>`, for the name
    /// `n<id>.<cluster_name>.triad`. Default `tls/n<id>.crt`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM, mode 0600 or stricter). Default `tls/n<id>.key`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Peers speak plaintext without authentication: anything that reaches the Raft port can
    /// join the group and decide for the cluster. Only for throwaway test clusters; the agent
    /// warns at every start. Default `false`.
    #[serde(default)]
    pub insecure_plaintext_peers: bool,
}

impl TlsSection {
    /// The files of node `me`, with `config_dir` (the config file's directory) for relative
    /// paths and defaults.
    pub fn files(&self, config_dir: &Path, me: NodeId) -> TlsFiles {
        let at = |p: &Option<PathBuf>, default: String| {
            let p = p.clone().unwrap_or_else(|| PathBuf::from(default));
            if p.is_relative() {
                config_dir.join(p)
            } else {
                p
            }
        };
        TlsFiles {
            ca: at(&self.ca_file, "tls/ca.crt".into()),
            cert: at(&self.cert_file, format!("tls/n{}.crt", me.get())),
            key: at(&self.key_file, format!("tls/n{}.key", me.get())),
        }
    }
}

/// The directory relative paths of a config file start from.
pub fn config_dir(file: &Path) -> &Path {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Loads this node's TLS setup; `None` with plaintext peers. Errors name the key.
pub fn load(path: &Path, config: &Config) -> Result<Option<PeerTls>, ConfigError> {
    let t = &config.tls;
    if t.insecure_plaintext_peers {
        return Ok(None);
    }
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        file: path.to_path_buf(),
        key: key.to_string(),
        message,
    };
    check_cluster_name(&config.cluster_name).map_err(|m| invalid("cluster_name", m))?;
    let files = t.files(config_dir(path), config.node.id);
    PeerTls::load(&files, &config.cluster_name, config.node.id)
        .map(Some)
        .map_err(|e| {
            let file = match &e {
                TlsError::Io { path, .. } | TlsError::Content { path, .. } => Some(path.clone()),
                TlsError::Crypto { .. } => None,
            };
            let key = match file {
                Some(f) if f == files.ca => "tls.ca_file",
                Some(f) if f == files.key => "tls.key_file",
                _ => "tls.cert_file",
            };
            let hint = match &e {
                TlsError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                    format!(
                        " (create the CA once with `triad cert init --dir DIR`, then each \
                         node's certificate with `triad cert issue --dir DIR --node {}`, and \
                         copy ca.crt, n{0}.crt and n{0}.key here; or set tls.insecure_plaintext_peers \
                         for a throwaway test cluster)",
                        config.node.id.get()
                    )
                }
                _ => String::new(),
            };
            invalid(key, format!("{e}{hint}"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(cluster: &str, tls: &str) -> String {
        format!(
            "cluster_name = {cluster:?}\n[node]\nid = 1\ndata_dir = \"/tmp/x\"\n\
             [[peers]]\nid = 1\nraft_addr = \"127.0.0.1:7201\"\napi_addr = \"127.0.0.1:7101\"\n\
             [api]\nlisten = \"127.0.0.1:7101\"\n{tls}"
        )
    }

    fn check(dir: &Path, text: &str) -> Result<(), String> {
        let path = dir.join("triad.toml");
        crate::config::parse(&path, text)
            .and_then(|c| crate::config::validate(&path, c))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The defaults find `tls/` beside the config file; what is missing or wrong is named by
    /// its key, with the commands that make it.
    #[test]
    fn tls_files_default_beside_the_config_and_errors_name_the_key() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let e = check(d.path(), &config("shop", ""))
            .err()
            .unwrap_or_default();
        assert!(
            e.contains("tls.ca_file")
                && e.contains("tls/ca.crt")
                && e.contains("triad cert init --dir DIR"),
            "{e}"
        );
        let tls = d.path().join("tls");
        crate::tls::init_ca(&tls, "shop", 1).unwrap_or_else(|e| panic!("{e}"));
        let e = check(d.path(), &config("shop", ""))
            .err()
            .unwrap_or_default();
        assert!(e.contains("tls.cert_file") && e.contains("n1.crt"), "{e}");
        crate::tls::issue(&tls, &tls, "shop", NodeId(1), 1).unwrap_or_else(|e| panic!("{e}"));
        check(d.path(), &config("shop", "")).unwrap_or_else(|e| panic!("{e}"));
        // Explicit paths, relative to the config file.
        std::fs::rename(&tls, d.path().join("pki")).unwrap_or_else(|e| panic!("{e}"));
        let explicit = "[tls]\nca_file = \"pki/ca.crt\"\ncert_file = \"pki/n1.crt\"\n\
                        key_file = \"pki/n1.key\"\n";
        check(d.path(), &config("shop", explicit)).unwrap_or_else(|e| panic!("{e}"));
        // The certificate is for cluster `shop`, the config says `shop2`.
        let e = check(d.path(), &config("shop2", explicit))
            .err()
            .unwrap_or_default();
        assert!(
            e.contains("tls.cert_file") && e.contains("n1.shop2.triad"),
            "{e}"
        );
        // A cluster name that cannot be in a certificate.
        let e = check(d.path(), &config("shop_prod", explicit))
            .err()
            .unwrap_or_default();
        assert!(
            e.contains("cluster_name") && e.contains("insecure_plaintext_peers"),
            "{e}"
        );
        // Plaintext peers need no files at all.
        let insecure = "[tls]\ninsecure_plaintext_peers = true\n";
        check(d.path(), &config("shop_prod", insecure)).unwrap_or_else(|e| panic!("{e}"));
    }
}
