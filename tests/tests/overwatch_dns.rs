//! End to end: the built `opengslb-overwatch` answering real `dig`, with backends the test
//! makes healthy and sick.

use std::time::{Duration, Instant};

use opengslb_tests::overwatch::{Backend, Overwatch, query_packet, rcode, udp_exchange};
use opengslb_tests::{TempDir, poll_until};

const INTERVAL_MS: u64 = 300;
const FALL: u64 = 2;
const RISE: u64 = 2;

/// Three regions of one server each, HTTP-checked every 300 ms; domains with each policy.
fn config(b: &[&Backend; 3]) -> String {
    format!(
        r#"
dns:
  listen_address: "127.0.0.1:0"
  default_ttl: 30
  zones: [gslb.test]
regions:
  - name: r1
    servers: [{{address: "{a1}", port: {p1}, service: app}}]
    health_check: {{type: http, path: /health, interval: {INTERVAL_MS}ms, timeout: 200ms, failure_threshold: {FALL}, success_threshold: {RISE}}}
  - name: r2
    servers: [{{address: "{a2}", port: {p2}, service: app}}]
    health_check: {{type: http, path: /health, interval: {INTERVAL_MS}ms, timeout: 200ms, failure_threshold: {FALL}, success_threshold: {RISE}}}
  - name: r3
    servers: [{{address: "{a3}", port: {p3}, service: app}}]
    health_check: {{type: tcp, interval: {INTERVAL_MS}ms, timeout: 200ms, failure_threshold: {FALL}, success_threshold: {RISE}}}
domains:
  - name: app.gslb.test
    routing_algorithm: round-robin
    services: [app]
    regions: [r1, r2, r3]
  - name: lasthealthy.gslb.test
    routing_algorithm: round-robin
    services: [app]
    regions: [r1, r2]
    when_all_unhealthy: return_last_healthy
  - name: all.gslb.test
    routing_algorithm: round-robin
    services: [app]
    regions: [r1, r2]
    when_all_unhealthy: return_all
  - name: failfast.gslb.test
    routing_algorithm: round-robin
    services: [app]
    regions: [r1, r2]
  - name: primary.gslb.test
    routing_algorithm: failover
    services: [app]
    regions: [r2, r1]
  - name: deep.eu.gslb.test
    routing_algorithm: round-robin
    services: [app]
    regions: [r3]
{LISTENERS}"#,
        a1 = b[0].addr.ip(),
        p1 = b[0].addr.port(),
        a2 = b[1].addr.ip(),
        p2 = b[1].addr.port(),
        a3 = b[2].addr.ip(),
        p3 = b[2].addr.port(),
    )
}

/// API and metrics on free ports (their defaults, 8080 and 9090, may be taken).
const LISTENERS: &str = "api:\n  address: 127.0.0.1:0\nmetrics:\n  address: 127.0.0.1:0\n";

fn setup(label: &str) -> (TempDir, [Backend; 3], Overwatch) {
    let dir = TempDir::new(label);
    let backends = [
        Backend::start("127.0.0.1"),
        Backend::start("127.0.0.2"),
        Backend::start("127.0.0.3"),
    ];
    let node = Overwatch::start(&dir, &config(&[&backends[0], &backends[1], &backends[2]]));
    // Wait for the first round of checks: all three answer.
    poll_until(
        Duration::from_secs(10),
        "all three backends in the answer",
        || (node.dig(&["app.gslb.test", "A"]).data("A").len() == 3).then_some(()),
    );
    (dir, backends, node)
}

#[test]
fn answers_follow_backend_health_within_interval_times_fall() {
    let (_dir, backends, node) = setup("dns-health");
    assert_eq!(
        node.dig(&["app.gslb.test", "A"]).data("A"),
        ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    );

    backends[1].set_healthy(false);
    let t = Instant::now();
    let limit = Duration::from_millis(INTERVAL_MS * (FALL + 1)) + Duration::from_millis(500);
    poll_until(limit, "127.0.0.2 gone from answers", || {
        let a = node.dig(&["app.gslb.test", "A"]).data("A");
        (a == ["127.0.0.1", "127.0.0.3"]).then_some(())
    });
    eprintln!(
        "removed after {:?} (interval {INTERVAL_MS} ms x fall {FALL})",
        t.elapsed()
    );
    // Many answers in a row: never the sick one.
    for _ in 0..20 {
        assert!(
            !node
                .dig(&["app.gslb.test", "A"])
                .data("A")
                .contains(&"127.0.0.2".to_owned())
        );
    }
    // Failover moves to the next region in its order.
    assert_eq!(
        node.dig(&["primary.gslb.test", "A"]).data("A"),
        ["127.0.0.1"]
    );

    backends[1].set_healthy(true);
    let t = Instant::now();
    poll_until(
        Duration::from_millis(INTERVAL_MS * (RISE + 1)) + Duration::from_millis(500),
        "127.0.0.2 back",
        || (node.dig(&["app.gslb.test", "A"]).data("A").len() == 3).then_some(()),
    );
    eprintln!("back after {:?}", t.elapsed());
    assert_eq!(
        node.dig(&["primary.gslb.test", "A"]).data("A"),
        ["127.0.0.2"],
        "failover returns to its first region"
    );
}

#[test]
fn all_down_follows_each_domains_policy() {
    let (_dir, backends, node) = setup("dns-alldown");
    // r1 fails first, then r2: the last healthy set is r2's server alone.
    backends[0].set_healthy(false);
    poll_until(Duration::from_secs(5), "r1 down", || {
        (node.dig(&["failfast.gslb.test", "A"]).data("A") == ["127.0.0.2"]).then_some(())
    });
    backends[1].set_healthy(false);
    poll_until(Duration::from_secs(5), "r1 and r2 down", || {
        (node.dig(&["failfast.gslb.test", "A"]).status == "SERVFAIL").then_some(())
    });
    let last = node.dig(&["lasthealthy.gslb.test", "A"]);
    assert_eq!(
        (last.status.as_str(), last.data("A")),
        ("NOERROR", vec!["127.0.0.2".to_owned()]),
        "{}",
        last.raw
    );
    let all = node.dig(&["all.gslb.test", "A"]);
    assert_eq!(
        (all.status.as_str(), all.data("A").len()),
        ("NOERROR", 2),
        "{}",
        all.raw
    );
    // Round-robin with one region left healthy still answers.
    assert_eq!(node.dig(&["app.gslb.test", "A"]).data("A"), ["127.0.0.3"]);
}

#[test]
fn authoritative_protocol_behaviour() {
    let (_dir, _backends, node) = setup("dns-protocol");
    let soa = node.dig(&["gslb.test", "SOA"]);
    assert_eq!(soa.status, "NOERROR");
    assert!(
        soa.flags.contains(&"aa".to_owned()),
        "authoritative: {:?}",
        soa.flags
    );
    assert!(
        soa.data("SOA")[0].starts_with("ns1.gslb.test. hostmaster.gslb.test. "),
        "{}",
        soa.raw
    );
    assert_eq!(
        node.dig(&["gslb.test", "NS"]).data("NS"),
        ["ns1.gslb.test."]
    );

    // RFC 3225 §3: the DO bit is copied into the response (UDP fast path and TCP).
    for transport in ["+notcp", "+tcp"] {
        let secure = node.dig(&["app.gslb.test", "A", "+dnssec", transport]);
        assert_eq!(
            secure.edns.as_deref(),
            Some("version: 0, flags: do; udp: 1232"),
            "{transport}: {}",
            secure.raw
        );
        let plain = node.dig(&["app.gslb.test", "A", transport]);
        assert_eq!(
            plain.edns.as_deref(),
            Some("version: 0, flags:; udp: 1232"),
            "{transport}: {}",
            plain.raw
        );
    }

    let nx = node.dig(&["missing.gslb.test", "A"]);
    assert_eq!(nx.status, "NXDOMAIN");
    assert_eq!(
        nx.authority.first().map(|r| r.2.as_str()),
        Some("SOA"),
        "SOA in authority: {}",
        nx.raw
    );

    let nodata = node.dig(&["app.gslb.test", "AAAA"]);
    assert_eq!(
        (nodata.status.as_str(), nodata.answer.len()),
        ("NOERROR", 0),
        "{}",
        nodata.raw
    );
    assert_eq!(nodata.authority.first().map(|r| r.2.as_str()), Some("SOA"));
    let mx = node.dig(&["app.gslb.test", "MX"]);
    assert_eq!((mx.status.as_str(), mx.answer.len()), ("NOERROR", 0));

    // A name that exists only because a domain is below it: NODATA, not NXDOMAIN.
    let ent = node.dig(&["eu.gslb.test", "A"]);
    assert_eq!(
        (ent.status.as_str(), ent.answer.len()),
        ("NOERROR", 0),
        "{}",
        ent.raw
    );
    assert_eq!(
        node.dig(&["deep.eu.gslb.test", "A"]).data("A"),
        ["127.0.0.3"]
    );

    assert_eq!(node.dig(&["example.com", "A"]).status, "REFUSED");
    assert_eq!(node.dig(&["gslb.test.example.com", "A"]).status, "REFUSED");
    assert_eq!(
        node.dig(&["app.gslb.test", "A", "-c", "CH"]).status,
        "REFUSED"
    );

    let mixed = node.dig(&["ApP.GsLb.TeSt", "A"]);
    assert_eq!(
        mixed.data("A").len(),
        3,
        "names are case-insensitive: {}",
        mixed.raw
    );

    let tcp = node.dig(&["app.gslb.test", "A", "+tcp"]);
    assert_eq!(tcp.data("A").len(), 3, "TCP: {}", tcp.raw);
    assert_eq!(tcp.answer[0].1, 30, "default TTL");

    let edns = node.dig(&["app.gslb.test", "A"]);
    assert!(
        edns.edns
            .as_deref()
            .is_some_and(|e| e.contains("udp: 1232")),
        "EDNS answered: {:?}",
        edns.edns
    );
    let noedns = node.dig(&["app.gslb.test", "A", "+noedns"]);
    assert_eq!((noedns.edns.as_ref(), noedns.data("A").len()), (None, 3));
    assert_eq!(
        node.dig(&["app.gslb.test", "A", "+edns=1", "+noednsneg"])
            .status,
        "BADVERS"
    );

    // ANY gets one RRset (RFC 8482): a domain's addresses, the apex's SOA.
    let any = node.dig(&["app.gslb.test", "ANY"]);
    assert_eq!(
        (any.status.as_str(), any.data("A").len()),
        ("NOERROR", 3),
        "{}",
        any.raw
    );
    let any = node.dig(&["gslb.test", "ANY"]);
    assert_eq!(any.data("SOA").len(), 1, "{}", any.raw);
    // Zone transfers are refused, over UDP and TCP (RFC 5936 §2.2.1).
    let axfr = udp_exchange(
        node.dns,
        &query_packet(3, "gslb.test", 252, false),
        Duration::from_secs(2),
    )
    .expect("an answer");
    assert_eq!(rcode(&axfr), 5, "AXFR over UDP: REFUSED");
    let axfr = node.dig(&["gslb.test", "AXFR"]);
    assert!(axfr.raw.contains("Transfer failed"), "{}", axfr.raw);
    let ixfr = udp_exchange(
        node.dns,
        &query_packet(3, "gslb.test", 251, false),
        Duration::from_secs(2),
    )
    .expect("an answer");
    assert_eq!(rcode(&ixfr), 5, "IXFR over UDP: REFUSED");
    // A compression pointer in the question: FORMERR without the question echoed.
    let mut pointer = query_packet(4, "x", 1, false);
    pointer.splice(12..15, [0xC0, 0x04]);
    let reply = udp_exchange(node.dns, &pointer, Duration::from_secs(2)).expect("an answer");
    assert_eq!(
        (rcode(&reply), &reply[4..6]),
        (1, &[0u8, 0][..]),
        "{reply:02x?}"
    );
    // A FORMERR for a bad EDNS option still carries an OPT (RFC 6891 §7).
    let bad_ecs = node.dig(&["app.gslb.test", "A", "+ednsopt=8:00012100c0a80001ff"]);
    assert_eq!(bad_ecs.status, "FORMERR", "{}", bad_ecs.raw);
    assert!(
        bad_ecs.edns.is_some(),
        "an OPT in the FORMERR: {}",
        bad_ecs.raw
    );
}

#[test]
fn large_answers_truncate_over_udp_and_complete_over_tcp() {
    let dir = TempDir::new("dns-truncation");
    let servers: String = (1..=60)
        .map(|i| format!("      - {{address: 127.0.1.{i}, port: 80}}\n"))
        .collect();
    let node = Overwatch::start(
        &dir,
        &format!(
            "overwatch:\n  validation:\n    enabled: false\ndns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [big.test]\nregions:\n  - name: many\n    servers:\n{servers}domains:\n  - name: www.big.test\n    routing_algorithm: round-robin\n    services: [app]\n    regions: [many]\n    max_records: 60\n  - name: few.big.test\n    routing_algorithm: round-robin\n    services: [app]\n    regions: [many]\n    max_records: 4\n{LISTENERS}"
        ),
    );
    let udp = node.dig(&["www.big.test", "A", "+noedns"]);
    assert!(
        udp.flags.contains(&"tc".to_owned()),
        "TC over 512-byte UDP: {:?}\n{}",
        udp.flags,
        udp.raw
    );
    assert!(
        udp.answer.is_empty() && udp.status == "NOERROR",
        "a truncated reply carries no records (RFC 2181 §9): {}",
        udp.raw
    );
    // The requestor's EDNS payload: sizes under 512 count as 512 (RFC 6891 §6.2.5);
    // ~1 kB fits 1232 and 4096 (our own limit, 1232, applies).
    for (bufsize, truncated) in [
        ("100", true),
        ("512", true),
        ("1232", false),
        ("4096", false),
    ] {
        let answer = node.dig(&["www.big.test", "A", &format!("+bufsize={bufsize}")]);
        assert_eq!(
            answer.flags.contains(&"tc".to_owned()),
            truncated,
            "bufsize {bufsize}: {}",
            answer.raw
        );
        assert_eq!(
            answer.answer.len(),
            if truncated { 0 } else { 60 },
            "{}",
            answer.raw
        );
        assert!(answer.edns.is_some(), "an OPT either way: {}", answer.raw);
    }
    let tcp = node.dig(&["www.big.test", "A", "+tcp"]);
    assert_eq!(tcp.data("A").len(), 60, "all over TCP");
    assert!(!tcp.flags.contains(&"tc".to_owned()));
    assert_eq!(
        node.dig(&["few.big.test", "A"]).data("A").len(),
        4,
        "max_records"
    );
}

#[test]
fn malformed_packets_get_formerr_or_nothing_and_never_stop_the_server() {
    let dir = TempDir::new("dns-malformed");
    let node = Overwatch::start(
        &dir,
        &format!(
            "overwatch:\n  validation:\n    enabled: false\ndns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [m.test]\nregions:\n  - name: r\n    servers: [{{address: 127.0.0.9}}]\ndomains:\n  - name: a.m.test\n    routing_algorithm: round-robin\n    services: [app]\n    regions: [r]\n{LISTENERS}"
        ),
    );
    let good = query_packet(7, "a.m.test", 1, false);
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated header", good[..5].to_vec()),
        ("header only, one question promised", good[..12].to_vec()),
        ("question cut in the name", good[..16].to_vec()),
    ];
    let mut bad_label = good.clone();
    bad_label[12] = 70; // a label length over 63 and past the end
    cases.push(("bad label length", bad_label));
    let mut self_loop = good[..12].to_vec();
    self_loop.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]); // a pointer to itself
    cases.push(("compression loop", self_loop));
    let mut two_questions = good.clone();
    two_questions[5] = 2; // QDCOUNT 2, one question present
    cases.push(("wrong question count", two_questions));
    let mut answer_count = good.clone();
    answer_count[7] = 3; // ANCOUNT 3, no answers present
    cases.push(("wrong answer count", answer_count));
    cases.push((
        "random bytes",
        (0..200u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect(),
    ));
    for (what, packet) in cases {
        if let Some(reply) = udp_exchange(node.dns, &packet, Duration::from_millis(300)) {
            assert_eq!(
                rcode(&reply),
                1,
                "{what}: a reply must be FORMERR, got rcode {}",
                rcode(&reply)
            );
            assert_eq!(&reply[..2], &packet[..2], "{what}: same id");
        }
        let ok = udp_exchange(node.dns, &good, Duration::from_secs(2))
            .unwrap_or_else(|| panic!("no answer after {what}"));
        assert_eq!(rcode(&ok), 0, "still answering after {what}");
    }
}

#[test]
fn ipv6_backends_are_checked_and_answered_as_aaaa_with_the_domains_ttl() {
    let dir = TempDir::new("dns-ipv6");
    let v6 = Backend::start("::1");
    let node = Overwatch::start(
        &dir,
        &format!(
            "dns:\n  listen_address: \"[::1]:0\"\n  zones: [six.test]\nregions:\n  - name: r\n    servers: [{{address: \"::1\", port: {port}}}, {{address: 127.0.0.1, port: {port}}}]\n    health_check: {{type: http, path: /, interval: 200ms, timeout: 150ms, failure_threshold: 1, success_threshold: 1}}\ndomains:\n  - name: www.six.test\n    routing_algorithm: round-robin\n    services: [app]\n    regions: [r]\n    ttl: 7\n{LISTENERS}",
            port = v6.addr.port()
        ),
    );
    assert!(node.dns.is_ipv6(), "DNS over IPv6: {}", node.dns);
    let aaaa = poll_until(Duration::from_secs(5), "AAAA ::1", || {
        let d = node.dig(&["www.six.test", "AAAA"]);
        (d.data("AAAA") == ["::1"]).then_some(d)
    });
    assert_eq!(aaaa.answer[0].1, 7, "the domain's TTL");
    // Nothing listens on 127.0.0.1 at that port: its check fails, so no A record — and
    // with no healthy server of that family the default policy is SERVFAIL.
    poll_until(Duration::from_secs(5), "A: SERVFAIL", || {
        (node.dig(&["www.six.test", "A"]).status == "SERVFAIL").then_some(())
    });
    v6.set_healthy(false);
    poll_until(Duration::from_secs(5), "AAAA gone", || {
        (node.dig(&["www.six.test", "AAAA"]).status == "SERVFAIL").then_some(())
    });
}

/// RFC 7766 and issue 16: queries pipelined on one connection are answered in order; one
/// address holding connections open is capped (16) without touching other clients or UDP;
/// idle connections are closed.
#[test]
fn tcp_is_pipelined_capped_per_client_and_never_blocks_udp() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let (_dir, _backends, node) = setup("dns-tcp");
    let framed = |id: u16, name: &str| {
        let q = query_packet(id, name, 1, false);
        let mut f = (q.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(&q);
        f
    };
    // Three queries in one write; three answers, in order.
    let mut conn = TcpStream::connect(node.dns).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let pipelined = [
        framed(1, "app.gslb.test"),
        framed(2, "missing.gslb.test"),
        framed(3, "gslb.test"),
    ]
    .concat();
    conn.write_all(&pipelined).expect("send");
    for (id, want) in [(1u16, 0u8), (2, 3), (3, 0)] {
        let mut len = [0u8; 2];
        conn.read_exact(&mut len).expect("length");
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        conn.read_exact(&mut answer).expect("answer");
        assert_eq!(
            (u16::from_be_bytes([answer[0], answer[1]]), rcode(&answer)),
            (id, want)
        );
    }
    // 16 idle connections from this address are held; the next ones are closed at once.
    // Each is answered once first, so the server has accepted it (not only the kernel):
    // under load, an unaccepted one would not count yet.
    let held: Vec<TcpStream> = (0..15u16)
        .map(|i| {
            let mut held = TcpStream::connect(node.dns).expect("connect");
            held.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            held.write_all(&framed(100 + i, "app.gslb.test"))
                .expect("send");
            let mut len = [0u8; 2];
            held.read_exact(&mut len).expect("accepted and answered");
            let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
            held.read_exact(&mut answer).expect("answer");
            held
        })
        .chain(std::iter::once(conn))
        .collect();
    let mut extra = TcpStream::connect(node.dns).expect("connect");
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = extra.write_all(&framed(4, "app.gslb.test"));
    let mut buf = [0u8; 2];
    assert!(
        matches!(extra.read(&mut buf), Ok(0) | Err(_)),
        "the 17th connection from one address is closed"
    );
    node.process.wait_for_line(
        "dns tcp: connection refused: 16 connections already open from 127.0.0.1",
        Duration::from_secs(5),
    );
    // Another address still gets TCP answers, and UDP never waited.
    let other = node.dig(&["app.gslb.test", "A", "+tcp", "-b", "127.0.0.2"]);
    assert_eq!(other.data("A").len(), 3, "{}", other.raw);
    assert_eq!(node.dig(&["app.gslb.test", "A"]).data("A").len(), 3);
    // Idle ones are closed after 10 s, and the address can connect again.
    let started = std::time::Instant::now();
    let mut first = held.into_iter().next().expect("one");
    first
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    assert!(matches!(first.read(&mut buf), Ok(0) | Err(_)));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    poll_until(
        Duration::from_secs(5),
        "TCP from this address again",
        || (node.dig(&["app.gslb.test", "A", "+tcp"]).data("A").len() == 3).then_some(()),
    );
}
