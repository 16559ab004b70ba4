//! The Raft RPC on a network others can reach (issue 15, item 7), with three real
//! overwatch processes: mutual TLS between the nodes, so the cluster secret never crosses
//! the network readable and knowing it changes nothing; a caller without a certificate
//! from the cluster CA is refused and logged; a node with another cluster's certificate
//! is named and kept out; plain HTTP runs only when the operator says so, and says so.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use opengslb_tests::cluster::{TEST_TIMING, TestCluster, make_certs};
use opengslb_tests::overwatch::Overwatch;
use opengslb_tests::{TempDir, poll_until};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const BODY: &str = "dns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [gslb.test]\nregions:\n  - name: eu\n    servers: [{address: 192.0.2.1, service: app}]\ndomains:\n  - name: app.gslb.test\n    routing_algorithm: round-robin\n    services: [app]\n    regions: [eu]\n    ttl: 1\n";

/// What a peer that knows the secret would send to make the leader write an override
/// with any author it likes.
fn forged_write(secret: &str, target: usize) -> Vec<u8> {
    let body = r#"{"Request":{"V1":{"SetOverride":{"key":{"service":"app","address":"192.0.2.66:80"},"value":{"healthy":true,"reason":"forged","author":"somebody-else","set_at_ms":1,"expires_at_ms":null}}}}}"#;
    format!(
        "POST /cluster/write HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\r\nx-opengslb-raft-from: 2\r\nx-opengslb-raft-target: {target}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends `request` over plain TCP; everything the server sent back.
fn plain_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = stream.write_all(request);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

/// Sends `request` over TLS with `config` to node `id`; the plaintext the server sent back
/// (empty when it refused the handshake).
fn tls_exchange(
    addr: SocketAddr,
    id: usize,
    config: rustls::ClientConfig,
    request: &[u8],
) -> Vec<u8> {
    let name = ServerName::try_from(format!("node-{id}.opengslb.invalid")).expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut sock = TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let _ = tls.write_all(request);
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    out
}

fn roots(certs: &Path) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(certs.join("ca.crt")).expect("ca") {
        roots.add(cert.expect("pem")).expect("root");
    }
    roots
}

fn client(certs: &Path, identity: Option<(&Path, usize)>) -> rustls::ClientConfig {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots(certs));
    match identity {
        None => builder.with_no_client_auth(),
        Some((dir, id)) => {
            let chain = CertificateDer::pem_file_iter(dir.join(format!("node-{id}.crt")))
                .expect("cert")
                .collect::<Result<Vec<_>, _>>()
                .expect("pem");
            let key =
                PrivateKeyDer::from_pem_file(dir.join(format!("node-{id}.key"))).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client cert")
        }
    }
}

/// Whether `haystack` contains `needle` anywhere.
fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn the_secret_alone_reaches_nothing_and_never_crosses_the_network_readable() {
    let cluster = TestCluster::partitionable("tls-secret", BODY, TEST_TIMING);
    let l = cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
    let f = (l + 1) % 3;
    assert_eq!(cluster.node(l).metric("opengslb_cluster_rpc_tls"), 1.0);
    let forged = forged_write(&cluster.secret, l + 1);

    // Plain HTTP with the secret: the TLS listener answers no HTTP at all.
    let answer = plain_exchange(cluster.rpc[l], &forged);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP answered: {}",
        String::from_utf8_lossy(&answer)
    );
    // TLS that trusts the cluster CA but presents no certificate: refused in the handshake.
    let answer = tls_exchange(
        cluster.rpc[l],
        l + 1,
        client(cluster.certs.path(), None),
        &forged,
    );
    assert!(
        answer.is_empty(),
        "no certificate answered: {}",
        String::from_utf8_lossy(&answer)
    );
    // A certificate for node 2 from another CA (another cluster's, or a forged one).
    let other = TempDir::new("tls-secret-other-ca");
    make_certs(&other);
    let config = client(cluster.certs.path(), Some((other.path(), 2)));
    let answer = tls_exchange(cluster.rpc[l], l + 1, config, &forged);
    assert!(
        answer.is_empty(),
        "another CA answered: {}",
        String::from_utf8_lossy(&answer)
    );
    let line = cluster.node(l).process.wait_for_line(
        "cluster listener: connection refused: TLS handshake failed",
        Duration::from_secs(5),
    );
    assert!(line.contains("peer"), "{line}");
    // With the cluster's own certificate of node 2 the same bytes are an ordinary
    // forwarded write: membership of the CA is what a write needs, not the secret.
    let config = client(cluster.certs.path(), Some((cluster.certs.path(), 2)));
    let answer = tls_exchange(cluster.rpc[l], l + 1, config, &forged);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains(r#"{"Ok":"#),
        "a member's certificate: {text}"
    );
    let clear = format!(
        "DELETE /api/v1/overrides/app/192.0.2.66:80 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        opengslb_tests::gslb::API_TOKEN
    );
    let answer = plain_exchange(cluster.node(l).api.expect("api"), clear.as_bytes());
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // An operator's write through a follower: forwarded to the leader inside TLS, with
    // the API token's name as its author on every node.
    let reason = "visible-only-inside-tls";
    let (code, body) = cluster.set_override(f, "app", "192.0.2.1:80", false, reason);
    assert_eq!(code, 200, "{body}");
    for i in 0..3 {
        poll_until(Duration::from_secs(5), "the override on every node", || {
            let (_, body) = cluster.node(i).get("/api/v1/overrides");
            let list = body["overrides"].as_array().cloned().unwrap_or_default();
            list.iter()
                .find(|o| o["address"] == "192.0.2.1:80")
                .map(|o| assert_eq!(o["author"], "ops", "node {i}: {o}"))
        });
    }
    // What a sniffer between the nodes saw: neither the secret nor the write.
    let mesh = cluster.mesh.as_ref().expect("mesh");
    let mut seen = Vec::new();
    for i in 0..3 {
        for j in 0..3 {
            seen.extend(mesh.seen(i, j));
        }
    }
    assert!(
        seen.len() > 10_000,
        "the nodes talked through the relays: {} bytes",
        seen.len()
    );
    assert!(
        !contains(&seen, &cluster.secret),
        "the secret crossed the network readable"
    );
    assert!(
        !contains(&seen, reason),
        "a write crossed the network readable"
    );
    assert!(
        !contains(&seen, "SetOverride"),
        "Raft entries crossed the network readable"
    );
}

#[test]
fn a_node_with_another_clusters_certificate_is_named_and_kept_out() {
    let mut cluster = TestCluster::start("tls-foreign", BODY, TEST_TIMING);
    let l = cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
    let odd = (l + 1) % 3;
    cluster.kill(odd);
    let other = TempDir::new("tls-foreign-other-ca");
    make_certs(&other);
    let yaml = cluster.yaml(odd).replace(
        &cluster.certs.path().display().to_string(),
        &other.path().display().to_string(),
    );
    cluster.nodes[odd] = Some(Overwatch::start(&cluster.dirs[odd], &yaml));
    let line = cluster.node(l).process.wait_for_line(
        &format!("cluster misconfigured: TLS with node {}", odd + 1),
        Duration::from_secs(10),
    );
    assert!(
        line.contains("check that both nodes have certificates from the same cluster CA"),
        "{line}"
    );
    cluster.node(odd).process.wait_for_line(
        "cluster listener: connection refused: TLS handshake failed",
        Duration::from_secs(10),
    );
    // Named once per 10 s, not once per heartbeat.
    std::thread::sleep(Duration::from_secs(2));
    let named = cluster
        .node(l)
        .process
        .output()
        .matches("cluster misconfigured: TLS with node")
        .count();
    assert!(named <= 2, "named {named} times in about 2 s");
    // The two good nodes carry on; the odd one learns nothing.
    let (code, body) = cluster.set_override(l, "app", "192.0.2.1:80", false, "while kept out");
    assert_eq!(code, 200, "{body}");
    assert!(
        cluster.overrides(odd).is_empty(),
        "the node with a foreign certificate got the write"
    );
    // With the cluster's certificate again, it catches up.
    cluster.kill(odd);
    cluster.restart(odd);
    poll_until(Duration::from_secs(10), "the node caught up", || {
        (cluster.overrides(odd).len() == 1).then_some(())
    });
}

#[test]
fn plain_http_runs_only_when_asked_and_says_so_at_every_start() {
    let mut cluster = TestCluster::prepare("tls-plain", "", BODY, TEST_TIMING);
    cluster.plaintext = true;
    for i in 0..3 {
        cluster.restart(i);
    }
    let l = cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
    for i in 0..3 {
        let line = cluster.node(i).process.wait_for_line(
            "cluster RPC is plain HTTP (cluster.insecure_plaintext: true)",
            Duration::from_secs(5),
        );
        assert!(line.contains("WARN"), "{line}");
        assert_eq!(cluster.node(i).metric("opengslb_cluster_rpc_tls"), 0.0);
    }
    let (code, body) = cluster.set_override(l, "app", "192.0.2.1:80", false, "plain");
    assert_eq!(code, 200, "{body}");
    // One node switched to TLS while the others are plain: it names what it hears.
    let odd = (l + 1) % 3;
    cluster.kill(odd);
    cluster.plaintext = false;
    cluster.restart(odd);
    let line = cluster.node(odd).process.wait_for_line(
        "cluster listener: connection refused: TLS handshake failed",
        Duration::from_secs(10),
    );
    assert!(
        line.contains("not TLS: that node may run with cluster.insecure_plaintext"),
        "{line}"
    );
}
