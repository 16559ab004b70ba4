//! The HTTP listeners on a network others reach (issue 16): a flood of idle connections to
//! one listener is capped and logged and takes neither DNS over TCP, nor the API, nor
//! Raft down; idle connections are closed; `/metrics` has an access list; proxy headers
//! are believed only from trusted proxies and read from the right; override fields and
//! counts are bounded.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use opengslb_tests::cluster::{TEST_TIMING, TestCluster};
use opengslb_tests::gslb::API_TOKEN;
use opengslb_tests::overwatch::{Overwatch, http_request};
use opengslb_tests::{TempDir, poll_until};

const BODY: &str = "dns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [gslb.test]\nregions:\n  - name: eu\n    servers: [{address: 192.0.2.1, service: app}]\ndomains:\n  - name: app.gslb.test\n    routing_algorithm: round-robin\n    services: [app]\n    regions: [eu]\n    ttl: 1\n";

#[test]
fn an_idle_connection_flood_is_capped_and_takes_nothing_else_down() {
    let cluster = TestCluster::start("flood", BODY, TEST_TIMING);
    let leader = cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
    let target = (leader + 1) % 3; // a follower: its writes go through Raft to the leader
    let node = cluster.node(target);
    let metrics = node.metrics.expect("metrics");
    // 1,100 idle connections, as in the issue: the first 64 from this address are held,
    // the rest closed at once.
    let mut flood = Vec::new();
    for _ in 0..1_100 {
        if let Ok(s) = TcpStream::connect_timeout(&metrics, Duration::from_secs(1)) {
            flood.push(s);
        }
    }
    let line = node.process.wait_for_line(
        "metrics listener: connection refused: 64 connections already open from 127.0.0.1",
        Duration::from_secs(5),
    );
    assert!(line.contains("metrics"), "{line}");
    // Meanwhile everything else answers: DNS over TCP, the API, a write through Raft.
    let tcp = node.dig(&["app.gslb.test", "A", "+tcp"]);
    assert_eq!(tcp.data("A"), ["192.0.2.1"], "{}", tcp.raw);
    let (code, body) =
        cluster.set_override(target, "app", "192.0.2.1:80", false, "during the flood");
    assert_eq!(code, 200, "{body}");
    let (code, _) = node.get("/api/v1/ready");
    assert_eq!(code, 200);
    // The held ones are idle: closed after the 10 s header timeout.
    let started = Instant::now();
    let mut held = flood.pop().expect("one held");
    held.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut buf = [0u8; 1];
    let closed = held.read(&mut buf);
    assert!(
        matches!(closed, Ok(0) | Err(_)),
        "an idle connection is closed: {closed:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    drop(flood);
    poll_until(Duration::from_secs(15), "refusals counted", || {
        (node.metric(
            "opengslb_http_connections_refused_total{listener=\"metrics\",reason=\"per_client\"}",
        ) > 1000.0)
            .then_some(())
    });
}

#[test]
fn metrics_proxies_and_override_fields_have_limits() {
    let dir = TempDir::new("limits");
    let node = Overwatch::start(
        &dir,
        &format!(
            "overwatch:\n  validation:\n    enabled: false\n{BODY}api:\n  address: 127.0.0.1:0\n  allowed_networks: [10.9.0.0/16, 127.0.0.1/32]\n  trust_proxy_headers: true\n  max_overrides: 2\n  tokens:\n    ops: {API_TOKEN}\nmetrics:\n  address: 127.0.0.1:0\n  allowed_networks: [10.0.0.0/8]\n"
        ),
    );
    // /metrics answers only its allowed networks.
    let (code, body) = http_request(
        node.metrics.expect("metrics"),
        "GET",
        "/metrics",
        None,
        None,
    );
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("client 127.0.0.1 is not in metrics.allowed_networks"),
        "{body}"
    );

    // X-Forwarded-For from a trusted proxy (loopback), read from the right.
    let api = node.api.expect("api");
    let as_client = |forwarded: &str| {
        let request = format!(
            "GET /api/v1/overwatch/stats HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {forwarded}\r\nConnection: close\r\n\r\n"
        );
        let mut stream = TcpStream::connect(api).expect("connect");
        std::io::Write::write_all(&mut stream, request.as_bytes()).expect("send");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    };
    assert!(as_client("10.9.1.1").starts_with("HTTP/1.1 200"));
    let forged = as_client("10.9.1.1, 203.0.113.5");
    assert!(
        forged.starts_with("HTTP/1.1 403")
            && forged.contains("client 203.0.113.5 is not in api.allowed_networks"),
        "a client cannot put an allowed address left of what the proxy saw: {forged}"
    );

    // Override fields and counts.
    let put = |address: &str, reason: &str| {
        let body =
            serde_json::json!({ "healthy": false, "reason": reason, "force": true }).to_string();
        http_request(
            api,
            "PUT",
            &format!("/api/v1/overrides/app/{address}"),
            Some(API_TOKEN),
            Some(&body),
        )
    };
    let (code, body) = put("192.0.2.1:80", &"x".repeat(1025));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("reason: 1025 bytes, at most 1024"), "{body}");
    let long = "s".repeat(300);
    let (code, body) = http_request(
        api,
        "PUT",
        &format!("/api/v1/overrides/{long}/192.0.2.1:80"),
        Some(API_TOKEN),
        Some(r#"{"healthy": false, "reason": "r"}"#),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("service: 300 bytes, at most 253"), "{body}");
    let (code, _) = http_request(
        api,
        "PUT",
        "/api/v1/overrides/app/192.0.2.1:80",
        Some(API_TOKEN),
        Some(&"x".repeat(70_000)),
    );
    assert_eq!(code, 413, "a body over 64 KiB");
    assert_eq!(put("192.0.2.1:80", &"x".repeat(1024)).0, 200);
    assert_eq!(put("192.0.2.2:80", "two").0, 200);
    let (code, body) = put("192.0.2.3:80", "three");
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("api.max_overrides (2) reached"), "{body}");
    assert_eq!(
        put("192.0.2.2:80", "changing an existing one is fine").0,
        200
    );
}
