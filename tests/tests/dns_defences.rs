//! DNS on the open Internet (issue 16), against real overwatch processes and `dig`: DNS
//! cookies that any node of the cluster accepts, rotate, and are refused from another
//! address; response rate limiting that slips and drops a flood from one source while
//! clients with a valid cookie, and other sources, are answered.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opengslb_tests::cluster::{TEST_TIMING, TestCluster};
use opengslb_tests::overwatch::Overwatch;

const BODY: &str = "dns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [gslb.test]\n  cookie_rotation: 2s\nregions:\n  - name: eu\n    servers: [{address: 192.0.2.1, service: app}]\ndomains:\n  - name: app.gslb.test\n    routing_algorithm: round-robin\n    regions: [eu]\n    ttl: 1\n";

/// The COOKIE dig printed (client and server cookie, hex), and whether the server said
/// BADCOOKIE first.
fn cookie_exchange(node: &Overwatch, cookie: &str, source: &str) -> (String, bool, String) {
    let answer = node.dig(&[
        "app.gslb.test",
        "A",
        &format!("+cookie={cookie}"),
        "-b",
        source,
    ]);
    let returned = answer
        .raw
        .lines()
        .find_map(|l| l.strip_prefix("; COOKIE: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default()
        .to_owned();
    (
        returned,
        answer.raw.contains("BADCOOKIE, retrying"),
        answer.raw,
    )
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Sleeps until `at` (Unix seconds).
fn until(at: f64) {
    let left = at - now();
    if left > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(left));
    }
}

#[test]
fn cookies_are_good_at_every_node_rotate_and_bind_to_the_client_address() {
    let cluster = TestCluster::start("cookies", BODY, TEST_TIMING);
    cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
    // A client cookie alone: node 1 answers and hands out an RFC 9018 server cookie.
    let made = now();
    let (cookie, bad, raw) = cookie_exchange(cluster.node(0), "0102030405060708", "127.0.0.1");
    assert!(!bad, "{raw}");
    assert_eq!(cookie.len(), 48, "client (8) and server (16) cookie: {raw}");
    assert!(cookie.starts_with("010203040506070801000000"), "{raw}");
    // The other nodes accept it (one secret, derived from the cluster's).
    for i in [1, 2] {
        let (_, bad, raw) = cookie_exchange(cluster.node(i), &cookie, "127.0.0.1");
        assert!(!bad && raw.contains("192.0.2.1"), "node {i}: {raw}");
    }
    // From another address it is not valid: BADCOOKIE, and dig retries with a new one.
    let (fresh, bad, raw) = cookie_exchange(cluster.node(1), &cookie, "127.0.0.2");
    assert!(bad, "{raw}");
    assert_ne!(fresh, cookie);
    // Rotation every 2 s: in the next period the previous secret still holds; one period
    // later it does not.
    let period = (made / 2.0).floor();
    until((period + 1.0) * 2.0 + 0.3);
    let (_, bad, raw) = cookie_exchange(cluster.node(2), &cookie, "127.0.0.1");
    assert!(
        !bad,
        "the previous secret is accepted for one period: {raw}"
    );
    until((period + 2.0) * 2.0 + 0.3);
    let (_, bad, raw) = cookie_exchange(cluster.node(2), &cookie, "127.0.0.1");
    assert!(bad, "two rotations later the cookie is refused: {raw}");
}
