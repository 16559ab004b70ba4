//! A one-source UDP flood against overwatch with response rate limiting on (a program, not
//! a test; issue 16).
//!
//! Run: `cargo build --release --bins && cargo bench -p opengslb-tests --bench dns_flood`
//! Knob: `BENCH_FLOOD_SECS` (default 8).
//!
//! dnsperf floods from 127.0.0.1 as fast as it can (its own rate on this machine) while two
//! well-behaved clients ask at 1,000 q/s each: one from another /24 (127.0.1.1) and one
//! from the flood's own /24 that sends a valid DNS cookie (127.0.0.2). Printed: the share
//! of their queries answered, and for the flood the bytes the server sent per byte it
//! received (what a forged source would get from us: ≤ 1 means no amplification).

// A benchmark's output is its figures.
#![allow(clippy::print_stdout)]

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use opengslb_tests::TempDir;
use opengslb_tests::bench::knob;
use opengslb_tests::overwatch::{Overwatch, query_packet};

const CONFIG: &str = "overwatch:\n  validation: {enabled: false}\ndns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [demo.local]\n  rate_limit: {responses_per_second: 20, slip: 2}\nregions:\n  - name: dc1\n    servers: [{address: 127.0.0.21}, {address: 127.0.0.22}, {address: 127.0.0.23}]\ndomains:\n  - {name: app.demo.local, routing_algorithm: round-robin, regions: [dc1], ttl: 30}\napi: {address: \"127.0.0.1:0\"}\nmetrics: {address: \"127.0.0.1:0\"}\n";

/// A query for app.demo.local with an OPT carrying `cookie` (if any).
fn query(id: u16, cookie: Option<&[u8]>) -> Vec<u8> {
    let mut q = query_packet(id, "app.demo.local", 1, true);
    if let Some(c) = cookie {
        let at = q.len() - 2;
        q[at..].copy_from_slice(&((4 + c.len()) as u16).to_be_bytes());
        q.extend_from_slice(&[0, 10, 0, c.len() as u8]);
        q.extend_from_slice(c);
    }
    q
}

/// Sends a query every millisecond from `source` until `stop`; (sent, answered in full).
fn steady(
    source: &str,
    server: SocketAddr,
    cookie: Option<Vec<u8>>,
    stop: &AtomicBool,
) -> (u64, u64) {
    let socket = UdpSocket::bind(source).expect("bind a client");
    socket.connect(server).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_millis(1)))
        .expect("timeout");
    let (mut sent, mut answered) = (0u64, 0u64);
    let mut buf = [0u8; 1500];
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let q = query(sent as u16, cookie.as_deref());
        let _ = socket.send(&q);
        sent += 1;
        while let Ok(n) = socket.recv(&mut buf) {
            if n > 12 && buf[7] > 0 {
                answered += 1;
            }
        }
        let next = started + Duration::from_millis(sent);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    // Late answers.
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    while let Ok(n) = socket.recv(&mut buf) {
        if n > 12 && buf[7] > 0 {
            answered += 1;
        }
    }
    (sent, answered)
}

fn number(text: &str, label: &str, index: usize) -> f64 {
    text.lines()
        .find(|l| l.trim_start().starts_with(label))
        .and_then(|l| l.split_whitespace().nth(index))
        .and_then(|v| v.trim_end_matches(',').parse().ok())
        .unwrap_or(0.0)
}

fn main() {
    let secs: u64 = knob("BENCH_FLOOD_SECS", 8);
    let dir = TempDir::new("bench-flood");
    let node = Overwatch::start(&dir, CONFIG);
    // The cookie client learns its server cookie first.
    let cookie_socket = UdpSocket::bind("127.0.0.2:0").expect("bind");
    cookie_socket.connect(node.dns).expect("connect");
    cookie_socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    cookie_socket.send(&query(1, Some(&[7; 8]))).expect("send");
    let mut buf = [0u8; 1500];
    let n = cookie_socket.recv(&mut buf).expect("a cookie");
    let cookie = buf[n - 24..n].to_vec();
    drop(cookie_socket);

    let queries = dir.join("flood.txt");
    std::fs::write(&queries, "app.demo.local A\n").expect("queries");
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = [("127.0.1.1:0", None), ("127.0.0.2:0", Some(cookie))]
        .into_iter()
        .map(|(source, cookie)| {
            let (stop, server) = (Arc::clone(&stop), node.dns);
            std::thread::spawn(move || steady(source, server, cookie, &stop))
        })
        .collect();
    let flood = Command::new("dnsperf")
        .args(["-s", "127.0.0.1", "-p", &node.dns.port().to_string(), "-d"])
        .arg(&queries)
        .args(["-l", &secs.to_string(), "-c", "4", "-T", "2", "-q", "500"])
        .output()
        .expect("run dnsperf (apt-get install dnsperf)");
    stop.store(true, Ordering::Relaxed);
    let results: Vec<(u64, u64)> = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect();
    let text = String::from_utf8_lossy(&flood.stdout);
    let sent = number(&text, "Queries sent:", 2);
    let completed = number(&text, "Queries completed:", 2);
    let request = number(&text, "Average packet size:", 4);
    let response = number(&text, "Average packet size:", 6);
    let slipped = node.metric("opengslb_dns_rate_limited_total{action=\"slipped\"}");
    let dropped = node.metric("opengslb_dns_rate_limited_total{action=\"dropped\"}");
    println!("one-source UDP flood, response rate limiting 20/s per /24, slip 2, {secs} s");
    println!(
        "flood (dnsperf from 127.0.0.1)     {:>10.0} q/s sent, {:.0} answered ({:.0} slipped, {:.0} dropped by the server)",
        sent / secs as f64,
        completed,
        slipped,
        dropped
    );
    println!(
        "flood bytes out / bytes in         {:>10.3}   ({:.0} B x {:.0} replies / {:.0} B x {:.0} queries)",
        (completed * response) / (sent * request).max(1.0),
        response,
        completed,
        request,
        sent
    );
    for ((label, _), (sent, answered)) in [
        ("another /24 (127.0.1.1), no cookie", ()),
        ("the flood's /24 with a cookie", ()),
    ]
    .iter()
    .zip(&results)
    {
        println!(
            "{label:<35} {:>9.2} % answered in full ({answered} of {sent})",
            *answered as f64 * 100.0 / (*sent).max(1) as f64
        );
    }
    if !flood.status.success() {
        println!("dnsperf failed: {}", String::from_utf8_lossy(&flood.stderr));
    }
}
