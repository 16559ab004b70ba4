//! A one-source UDP flood against overwatch with response rate limiting on (a program, not
//! a test; issue 16).
//!
//! Run: `cargo build --release --bins && cargo bench -p opengslb-tests --bench dns_flood`
//! Knobs: `BENCH_FLOOD_SECS` (default 8), `BENCH_FLOOD_QPS` (default 300,000: about what
//! dnsperf reaches against a server on this machine).
//!
//! Two threads flood from 127.0.0.1 at that rate without waiting for replies (as a
//! reflection attack with a forged source would), while well-behaved clients ask within
//! the rate: ten from ten other /24s at 10 q/s each, and one from the flood's own /24 at
//! 200 q/s that sends a valid DNS cookie. Printed: the share of their queries answered in
//! full, and for the flood the bytes the server sent per byte it received (what a forged
//! source gets from us: at most 1 means no amplification).

// A benchmark's output is its figures.
#![allow(clippy::print_stdout)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use opengslb_tests::TempDir;
use opengslb_tests::bench::knob;
use opengslb_tests::overwatch::{Overwatch, query_packet, query_with_option};

const CONFIG: &str = "overwatch:\n  validation: {enabled: false}\ndns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [demo.local]\n  rate_limit: {responses_per_second: 20, slip: 2}\nregions:\n  - name: dc1\n    servers: [{address: 127.0.0.21}, {address: 127.0.0.22}, {address: 127.0.0.23}]\ndomains:\n  - {services: [app], name: app.demo.local, routing_algorithm: round-robin, regions: [dc1], ttl: 30}\napi: {address: \"127.0.0.1:0\"}\nmetrics: {address: \"127.0.0.1:0\"}\n";

/// A query for app.demo.local with an OPT carrying `cookie` (if any).
fn query(id: u16, cookie: Option<&[u8]>) -> Vec<u8> {
    match cookie {
        Some(c) => query_with_option(id, "app.demo.local", 1, 10, c),
        None => query_packet(id, "app.demo.local", 1, true),
    }
}

/// Sends `per_second` queries a second from `source` until `stop`; (sent, answered in
/// full).
fn steady(
    source: &str,
    server: SocketAddr,
    per_second: u64,
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
    let gap = Duration::from_micros(1_000_000 / per_second);
    while !stop.load(Ordering::Relaxed) {
        let q = query(sent as u16, cookie.as_deref());
        let _ = socket.send(&q);
        sent += 1;
        while let Ok(n) = socket.recv(&mut buf) {
            if n > 12 && buf[7] > 0 {
                answered += 1;
            }
        }
        if let Some(wait) = (started + gap * sent as u32).checked_duration_since(Instant::now()) {
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

/// Floods from 127.0.0.1 at `per_second` until `stop`: (queries, bytes sent, replies,
/// bytes received).
fn flood(server: SocketAddr, per_second: u64, stop: &AtomicBool) -> (u64, u64, u64, u64) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the flood");
    socket.connect(server).expect("connect");
    socket.set_nonblocking(true).expect("nonblocking");
    let q = query(0x4242, None);
    let (mut sent, mut out, mut got, mut back) = (0u64, 0u64, 0u64, 0u64);
    let mut buf = [0u8; 1500];
    let mut drain = |got: &mut u64, back: &mut u64| {
        while let Ok(n) = socket.recv(&mut buf) {
            *got += 1;
            *back += n as u64;
        }
    };
    let started = Instant::now();
    let mut attempts = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..64 {
            attempts += 1;
            if socket.send(&q).is_ok() {
                sent += 1;
                out += q.len() as u64;
            }
        }
        drain(&mut got, &mut back);
        let due = started + Duration::from_secs_f64(attempts as f64 / per_second as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    drain(&mut got, &mut back);
    (sent, out, got, back)
}

fn main() {
    let secs: u64 = knob("BENCH_FLOOD_SECS", 8);
    let rate: u64 = knob("BENCH_FLOOD_QPS", 300_000);
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

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for n in 0..10 {
        let (stop, server) = (Arc::clone(&stop), node.dns);
        let source = format!("127.0.{}.1:0", n + 1);
        clients.push(std::thread::spawn(move || {
            steady(&source, server, 10, None, &stop)
        }));
    }
    let with_cookie = {
        let (stop, server) = (Arc::clone(&stop), node.dns);
        std::thread::spawn(move || steady("127.0.0.2:0", server, 200, Some(cookie), &stop))
    };
    let floods: Vec<_> = (0..2)
        .map(|_| {
            let (stop, server) = (Arc::clone(&stop), node.dns);
            std::thread::spawn(move || flood(server, rate / 2, &stop))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let (mut sent, mut out, mut got, mut back) = (0, 0, 0, 0);
    for f in floods {
        let (s, o, g, b) = f.join().expect("flood");
        (sent, out, got, back) = (sent + s, out + o, got + g, back + b);
    }
    let others = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .fold((0, 0), |(s, a), (s2, a2)| (s + s2, a + a2));
    let cookie_client = with_cookie.join().expect("client");
    let slipped = node.metric("opengslb_dns_rate_limited_total{action=\"slipped\"}");
    let dropped = node.metric("opengslb_dns_rate_limited_total{action=\"dropped\"}");
    println!("one-source UDP flood, response rate limiting 20/s per /24, slip 2, {secs} s");
    println!(
        "flood from 127.0.0.1                 {:>10.0} q/s sent, {got} replies ({slipped:.0} slipped, {dropped:.0} dropped by the server)",
        sent as f64 / secs as f64
    );
    // What the server sent the flood, from its own counts: the rate in full, a
    // header-and-question reply per slip, nothing per drop (the flood's socket cannot
    // read every reply at this rate, so its own count is lower).
    let flood_query = query(0x4242, None);
    let slip_len = 12 + "app.demo.local".len() + 2 + 4;
    let received = slipped + dropped + (20 * secs) as f64;
    let full_len = back as f64 / got.max(1) as f64;
    let server_out = slipped * slip_len as f64 + (20 * secs) as f64 * full_len.max(slip_len as f64);
    println!(
        "flood bytes out / bytes in           {:>10.3}   (server side: {:.0} B for {:.0} B received; {:.3} as the flood's socket saw it)",
        server_out / (received * flood_query.len() as f64).max(1.0),
        server_out,
        received * flood_query.len() as f64,
        back as f64 / out.max(1) as f64
    );
    for (label, (sent, answered)) in [
        ("ten other /24s, 10 q/s each", others),
        ("the flood's /24, with a cookie", cookie_client),
    ] {
        println!(
            "{label:<36} {:>9.2} % answered in full ({answered} of {sent})",
            answered as f64 * 100.0 / sent.max(1) as f64
        );
    }
}
