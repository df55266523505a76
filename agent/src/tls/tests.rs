//! Certificates made by `triad cert`, loaded, and used in real TLS handshakes over loopback:
//! the good case and every refusal the transport names.

use super::*;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const CLUSTER: &str = "shop";

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
}

fn files(dir: &Path, id: u64) -> TlsFiles {
    TlsFiles {
        ca: dir.join("ca.crt"),
        cert: dir.join(format!("n{id}.crt")),
        key: dir.join(format!("n{id}.key")),
    }
}

/// A CA and nodes 1..=3 of `cluster` in `dir`.
fn pki(dir: &Path, cluster: &str) {
    init_ca(dir, cluster, 30).unwrap_or_else(|e| panic!("{e}"));
    for id in 1..=3 {
        issue(dir, dir, cluster, NodeId(id), 30).unwrap_or_else(|e| panic!("{e}"));
    }
}

fn load(dir: &Path, id: u64) -> Result<PeerTls, String> {
    PeerTls::load(&files(dir, id), CLUSTER, NodeId(id)).map_err(|e| e.to_string())
}

#[test]
fn made_files_load_with_private_keys() {
    let d = tmp();
    pki(d.path(), CLUSTER);
    for id in 1..=3 {
        load(d.path(), id).unwrap_or_else(|e| panic!("n{id}: {e}"));
    }
    for key in ["ca.key", "n1.key"] {
        let mode = std::fs::metadata(d.path().join(key))
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or_default();
        assert_eq!(mode, 0o600, "{key}");
    }
    // Never overwritten.
    let again = init_ca(d.path(), CLUSTER, 30).err().map(|e| e.to_string());
    assert!(again.is_some_and(|e| e.contains("exists already")));
}

#[test]
fn bad_files_are_named_with_the_fix() {
    let d = tmp();
    pki(d.path(), CLUSTER);
    // n2's files on n1.
    let e = PeerTls::load(&files(d.path(), 2), CLUSTER, NodeId(1))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("is for [n2.shop.triad], not n1.shop.triad") && e.contains("n2.crt"),
        "{e}"
    );
    // A key others can read.
    std::fs::set_permissions(
        d.path().join("n3.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let e = load(d.path(), 3).err().unwrap_or_default();
    assert!(e.contains("chmod 600") && e.contains("n3.key"), "{e}");
    // Another cluster's CA.
    let other = tmp();
    init_ca(other.path(), "other", 30).unwrap_or_else(|e| panic!("{e}"));
    let e = issue(other.path(), other.path(), CLUSTER, NodeId(1), 30)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("is this the CA of cluster `shop`"), "{e}");
    // n1's certificate with another cluster's CA file.
    std::fs::copy(other.path().join("ca.crt"), d.path().join("ca.crt"))
        .unwrap_or_else(|e| panic!("{e}"));
    let e = load(d.path(), 1).err().unwrap_or_default();
    assert!(e.contains("not signed by the CA in tls.ca_file"), "{e}");
    // Not PEM at all.
    std::fs::write(d.path().join("ca.crt"), "hello").unwrap_or_else(|e| panic!("{e}"));
    let e = load(d.path(), 1).err().unwrap_or_default();
    assert!(e.contains("ca.crt") && e.contains("PEM"), "{e}");
    // A cluster name that cannot be a DNS label.
    let e = init_ca(&d.path().join("x"), "shop_prod", 30)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("`shop_prod` cannot stand in peer certificate names"),
        "{e}"
    );
}

#[test]
fn identity_comes_from_the_certificate_name() {
    let d = tmp();
    pki(d.path(), CLUSTER);
    let cert = read_certs(&d.path().join("n2.crt"), "x").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(client_identity(CLUSTER, &cert[0]), Ok(NodeId(2)));
    let other = client_identity("other", &cert[0]);
    assert!(
        matches!(&other, Err((Refusal::WrongCluster, d)) if d.contains("n2.shop.triad")),
        "{other:?}"
    );
}

/// One handshake: the server side's outcome (the identity, or the refusal) and the client's.
async fn handshake(
    server: &PeerTls,
    client: tokio_rustls::TlsConnector,
    dial: NodeId,
) -> (Result<NodeId, Refusal>, Result<(), Refusal>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let acceptor = server.acceptor();
    let cluster = server.cluster().to_string();
    let serving = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.map_err(|_| Refusal::Handshake)?;
        let mut tls = acceptor
            .accept(stream)
            .await
            .map_err(|e| Refusal::of_io(&e))?;
        let cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first().cloned())
            .ok_or(Refusal::NoCertificate)?;
        let id = client_identity(&cluster, &cert).map_err(|(r, _)| r)?;
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf)
            .await
            .map_err(|_| Refusal::Handshake)?;
        Ok(id)
    });
    let name = server.server_name(dial).unwrap_or_else(|e| panic!("{e}"));
    let stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = match client.connect(name, stream).await {
        Ok(mut tls) => {
            let _ = tls.write_all(b"hello").await;
            let _ = tls.flush().await;
            Ok(())
        }
        Err(e) => Err(Refusal::of_io(&e)),
    };
    let server = serving.await.unwrap_or(Err(Refusal::Handshake));
    (server, client)
}

#[tokio::test]
async fn handshakes_accept_members_and_refuse_the_rest() {
    let d = tmp();
    pki(d.path(), CLUSTER);
    let n1 = load(d.path(), 1).unwrap_or_else(|e| panic!("{e}"));
    let n2 = load(d.path(), 2).unwrap_or_else(|e| panic!("{e}"));

    // n2 dials n1: both sides agree, and n1 learns it is n2.
    let (server, client) = handshake(&n1, n2.connector(), NodeId(1)).await;
    assert_eq!((server, client), (Ok(NodeId(2)), Ok(())));

    // n2 dials what it thinks is n3 but reaches n1: the client refuses the name.
    let (_, client) = handshake(&n1, n2.connector(), NodeId(3)).await;
    assert_eq!(client, Err(Refusal::WrongNode));

    // A client of another CA: n1 refuses an unknown CA (and that client refuses n1's).
    let other = tmp();
    pki(other.path(), CLUSTER);
    let f = files(other.path(), 2);
    let stranger = super::raw_connector(&d.path().join("ca.crt"), &f.cert, &f.key);
    let (server, _) = handshake(&n1, stranger, NodeId(1)).await;
    assert_eq!(server, Err(Refusal::UnknownCa));

    // An expired certificate from the right CA.
    let expired = tmp();
    let e = issue_between(
        d.path(),
        expired.path(),
        CLUSTER,
        NodeId(2),
        time::OffsetDateTime::now_utc() - time::Duration::days(10),
        time::OffsetDateTime::now_utc() - time::Duration::days(1),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let old = super::raw_connector(&d.path().join("ca.crt"), &e.cert, &e.key);
    let (server, _) = handshake(&n1, old, NodeId(1)).await;
    assert_eq!(server, Err(Refusal::Expired));

    // A certificate of the same CA for another cluster's name.
    let foreign = tmp();
    let w = issue_unchecked(d.path(), foreign.path(), CLUSTER, "n2.other.triad")
        .unwrap_or_else(|e| panic!("{e}"));
    let wrong = super::raw_connector(&d.path().join("ca.crt"), &w.cert, &w.key);
    let (server, _) = handshake(&n1, wrong, NodeId(1)).await;
    assert_eq!(server, Err(Refusal::WrongCluster));
}
