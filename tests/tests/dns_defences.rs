//! DNS on the open Internet (issue 16), against real overwatch processes and `dig`: DNS
//! cookies that any node of the cluster accepts, rotate, and are refused from another
//! address; response rate limiting that slips and drops a flood from one source while
//! clients with a valid cookie, and other sources, are answered.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opengslb_tests::cluster::{TEST_TIMING, TestCluster};
use opengslb_tests::overwatch::Overwatch;

const BODY: &str = "dns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [gslb.test]\n  cookie_rotation: 2s\nregions:\n  - name: eu\n    servers: [{address: 192.0.2.1, service: app}]\ndomains:\n  - name: app.gslb.test\n    routing_algorithm: round-robin\n    services: [app]\n    regions: [eu]\n    ttl: 1\n";

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
    // later it does not. The period is the one the node made the cookie in: its
    // timestamp (RFC 9018 §4.3), not the moment the query left (a loaded machine can
    // answer in the next period).
    let stamped = u32::from_str_radix(&cookie[24..32], 16).expect("timestamp");
    assert!(
        (f64::from(stamped) - made).abs() < 5.0,
        "the cookie's time is the node's clock: {raw}"
    );
    let period = (f64::from(stamped) / 2.0).floor();
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

/// A query for app.gslb.test with the COOKIE option `cookie`.
fn with_cookie(id: u16, cookie: &[u8]) -> Vec<u8> {
    opengslb_tests::overwatch::query_with_option(id, "app.gslb.test", 1, 10, cookie)
}

/// Every reply `socket` gets until 500 ms pass without one.
fn drain(socket: &UdpSocket) -> Vec<Vec<u8>> {
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut replies = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(n) = socket.recv(&mut buf) {
        replies.push(buf[..n].to_vec());
    }
    replies
}

fn ancount(reply: &[u8]) -> u16 {
    u16::from_be_bytes([reply[6], reply[7]])
}

use std::net::UdpSocket;

#[test]
fn rate_limiting_slips_and_drops_a_flood_but_not_cookies_or_other_sources() {
    let dir = opengslb_tests::TempDir::new("rrl");
    let config = |dry: bool| {
        format!(
            "overwatch:\n  validation: {{enabled: false}}\n{}  rate_limit: {{responses_per_second: 20, slip: 2, dry_run: {dry}}}\nregions:\n  - name: eu\n    servers: [{{address: 192.0.2.1}}, {{address: 192.0.2.2}}, {{address: 192.0.2.3}}]\ndomains:\n  - {{services: [app], name: app.gslb.test, routing_algorithm: round-robin, regions: [eu]}}\napi: {{address: \"127.0.0.1:0\"}}\nmetrics: {{address: \"127.0.0.1:0\"}}\n",
            "dns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [gslb.test]\n"
        )
    };
    let node = Overwatch::start(&dir, &config(false));
    // A resolver with a cookie learns its server cookie first.
    let resolver = UdpSocket::bind("127.0.0.1:0").expect("bind");
    resolver.connect(node.dns).expect("connect");
    resolver
        .send(&with_cookie(1, &[9, 9, 9, 9, 9, 9, 9, 9]))
        .expect("send");
    let first = drain(&resolver);
    let server_cookie = first[0][first[0].len() - 24..].to_vec();
    assert_eq!(server_cookie[..8], [9; 8]);

    // One source floods: 400 queries at once, forged or not, from 127.0.0.1.
    let flood = UdpSocket::bind("127.0.0.1:0").expect("bind");
    flood.connect(node.dns).expect("connect");
    let query = opengslb_tests::overwatch::query_packet(2, "app.gslb.test", 1, true);
    // The limit counts per second: the whole burst goes out early in one.
    until(now().floor() + 1.05);
    for _ in 0..400 {
        flood.send(&query).expect("send");
    }
    // During it, the same /24 with a valid cookie, and another address, are answered.
    for id in 0..20 {
        resolver
            .send(&with_cookie(100 + id, &server_cookie))
            .expect("send");
    }
    let other = UdpSocket::bind("127.0.1.2:0").expect("bind 127.0.1.2 (another /24)");
    other.connect(node.dns).expect("connect");
    for id in 0..20u16 {
        other
            .send(&opengslb_tests::overwatch::query_packet(
                200 + id,
                "app.gslb.test",
                1,
                false,
            ))
            .expect("send");
    }
    let flooded = drain(&flood);
    let full: Vec<&Vec<u8>> = flooded.iter().filter(|r| ancount(r) > 0).collect();
    let slipped: Vec<&Vec<u8>> = flooded.iter().filter(|r| r[2] & 0x02 != 0).collect();
    assert!(
        full.len() <= 20,
        "at most the rate answered in full: {}",
        full.len()
    );
    assert!(
        (150..=210).contains(&slipped.len()),
        "about every second limited response slips: {} of {}",
        slipped.len(),
        flooded.len()
    );
    assert!(
        slipped
            .iter()
            .all(|r| ancount(r) == 0 && r.len() < query.len()),
        "slips carry no records"
    );
    let limited_out: usize = flooded
        .iter()
        .filter(|r| ancount(r) == 0)
        .map(Vec::len)
        .sum();
    let limited_in = query.len() * (400 - full.len());
    assert!(
        limited_out <= limited_in,
        "limited traffic: {limited_out} bytes out for {limited_in} in"
    );
    let with_cookie_answers = drain(&resolver);
    assert_eq!(with_cookie_answers.len(), 20, "every cookie query answered");
    assert!(
        with_cookie_answers.iter().all(|r| ancount(r) == 3),
        "in full"
    );
    let other_answers = drain(&other);
    assert_eq!(
        other_answers.iter().filter(|r| ancount(r) == 3).count(),
        20,
        "another source in full"
    );
    let slipped_total = node.metric("opengslb_dns_rate_limited_total{action=\"slipped\"}");
    let dropped_total = node.metric("opengslb_dns_rate_limited_total{action=\"dropped\"}");
    assert!(
        slipped_total >= 150.0 && dropped_total >= 150.0,
        "{slipped_total} {dropped_total}"
    );

    // Dry run: everything answered, what would have been limited counted.
    let dry_dir = opengslb_tests::TempDir::new("rrl-dry");
    let dry = Overwatch::start(&dry_dir, &config(true));
    let flood = UdpSocket::bind("127.0.0.1:0").expect("bind");
    flood.connect(dry.dns).expect("connect");
    until(now().floor() + 1.05);
    for _ in 0..100 {
        flood.send(&query).expect("send");
    }
    let answers = drain(&flood);
    assert_eq!(answers.iter().filter(|r| ancount(r) == 3).count(), 100);
    assert!(dry.metric("opengslb_dns_rate_limited_total{action=\"dry_run\"}") >= 70.0);
}
