//! Passive latency learning benchmark (a program, not a test).
//!
//! Run: `cargo build --release --bins && cargo bench -p opengslb-tests --bench latency`
//! Knobs: `BENCH_QUERY_SECS` (seconds of queries per domain, default 5), `BENCH_PARTS`
//! (any of `collector,tables,dns`, default all).
//!
//! 1. Collector: time (median of 5 polls) and memory to dump 10,000 and 50,000
//!    established loopback connections through sock_diag (held by helper processes:
//!    5,000 connections each, both ends, so 100,000 sockets are in the kernel's table
//!    for the larger run).
//! 2. Tables: memory of the agent's subnet table at 100,000 subnets; overwatch's RSS
//!    growth once 100,000 subnets are learned in each of two regions (table + DNS index).
//! 3. DNS: queries/second for a `learned_latency` domain (those 100,000 subnets, ECS from
//!    them) and for a `round-robin` domain with the same ECS queries, same server, run.

// A benchmark's output is its figures.
#![allow(clippy::print_stdout)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opengslb_agent::latency::collector;
use opengslb_agent::latency::table::{Subnet, SubnetTable, TableSettings};
use opengslb_proto::identity::AgentIdentity;
use opengslb_proto::member::{seal_direct, seal_latency};
use opengslb_proto::seal::{ClusterKey, Envelope};
use opengslb_proto::status::{Admin, Health};
use opengslb_proto::wire::{
    BackendReport, LatencySample, Message, MessageV2, SignedReport, StatusReport, VersionClock,
    latency_parts,
};
use opengslb_tests::bench::{knob, memory, percentile};
use opengslb_tests::gslb::{TOKEN, cluster_key};
use opengslb_tests::overwatch::{Overwatch, a_records, http_get};
use opengslb_tests::{TempDir, built_binary, poll_until};

fn rss_kib() -> u64 {
    memory(std::process::id()).0
}

fn main() {
    let query_secs = knob("BENCH_QUERY_SECS", 5);
    let parts = std::env::var("BENCH_PARTS").unwrap_or_else(|_| "collector,tables,dns".into());
    if parts.contains("collector") {
        collector_cost();
    }
    if parts.contains("tables") {
        table_memory();
    }
    if parts.contains("dns") {
        dns_ratio(Duration::from_secs(query_secs));
    }
}

fn collector_cost() {
    println!("collector: sock_diag dump of established connections on the backend ports");
    let peer = built_binary("latency-peer", "tests");
    let mut helpers = Helpers(Vec::new());
    // One backend port, as on a real host; the helpers listen on 127.0.0.N so each has
    // its own ephemeral ports. The port is below the ephemeral range the clients use.
    let port = 22_000u16;
    let ports = HashSet::from([port]);
    for (target, count) in [(10_000usize, 2usize), (50_000, 10)] {
        while helpers.0.len() < count {
            let addr = format!("127.0.0.{}:{port}", helpers.0.len() + 1);
            let mut child = Command::new(&peer)
                .args(["hold", &addr, "5000"])
                .stdout(Stdio::piped())
                .spawn()
                .expect("helper");
            let mut line = String::new();
            BufReader::new(child.stdout.take().expect("stdout"))
                .read_line(&mut line)
                .expect("helper ready");
            assert!(line.starts_with("holding"), "{line}");
            helpers.0.push(child);
        }
        let mut times = Vec::new();
        let before = rss_kib();
        let mut found = 0;
        for _ in 0..5 {
            let started = Instant::now();
            let connections = collector::established(&ports).expect("sock_diag");
            times.push(started.elapsed().as_secs_f64() * 1e3);
            found = connections.len();
        }
        let grown = rss_kib().saturating_sub(before);
        times.sort_by(f64::total_cmp);
        println!(
            "  {target:>6} connections ({} sockets in the table): {found} found, median {:.1} ms, max {:.1} ms, RSS +{grown} KiB",
            2 * helpers.0.len() * 5000,
            percentile(&times, 50.0),
            times.last().copied().unwrap_or(0.0),
        );
    }
}

/// The helper processes, killed however the benchmark ends.
struct Helpers(Vec<std::process::Child>);

impl Drop for Helpers {
    fn drop(&mut self) {
        for h in &mut self.0 {
            let _ = h.kill();
            let _ = h.wait();
        }
    }
}

fn table_memory() {
    println!("tables at 100,000 subnets");
    let before = rss_kib();
    let mut table = SubnetTable::new(TableSettings {
        ipv4_prefix: 24,
        ipv6_prefix: 48,
        ewma_alpha: 0.3,
        max_subnets: 100_000,
        subnet_ttl: Duration::from_secs(3600),
    });
    let now = Instant::now();
    for i in 0..150_000u32 {
        table.record(
            Ipv4Addr::from(0x0a00_0000 + (i << 8) + 7).into(),
            Duration::from_millis(u64::from(i % 200)),
            now,
        );
    }
    println!(
        "  agent subnet table: {} subnets ({} evicted at the bound), RSS +{:.1} MiB",
        table.len(),
        table.evicted(),
        rss_kib().saturating_sub(before) as f64 / 1024.0
    );

    drop(table);
}

/// A query with an ECS option for `subnet`/24.
fn ecs_query(id: u16, name: &str, subnet: Ipv4Addr) -> Vec<u8> {
    let mut p = Vec::with_capacity(80);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]);
    for label in name.split('.') {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.extend_from_slice(&[0, 0, 1, 0, 1]);
    // OPT: root, type 41, udp 1232, rcode/flags 0, rdlen 11; ECS code 8, len 7.
    p.extend_from_slice(&[
        0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 11, 0, 8, 0, 7, 0, 1, 24, 0,
    ]);
    p.extend_from_slice(&subnet.octets()[..3]);
    p
}

fn dns_ratio(duration: Duration) {
    println!("DNS: learned_latency vs round-robin, same server, ECS from learned subnets");
    let key = cluster_key(4);
    let dir = TempDir::new("bench-latency");
    let yaml = format!(
        "overwatch:\n  agent_tokens: {{app: {TOKEN}}}\n  validation: {{enabled: false}}\n  geolocation: {{default_region: a, ecs_enabled: true}}\n  gossip: {{bind_address: \"127.0.0.1:0\", encryption_key: \"{key}\"}}\ndns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [gslb.test]\nregions:\n  - {{name: a, servers: [{{address: 10.0.0.1, service: app}}]}}\n  - {{name: b, servers: [{{address: 10.0.0.2, service: app}}]}}\ndomains:\n  - {{services: [app], name: rr.gslb.test, routing_algorithm: round-robin, regions: [a, b]}}\n  - {{services: [app], name: lat.gslb.test, routing_algorithm: learned_latency, regions: [a, b], latency_config: {{min_samples: 1}}}}\napi:\n  address: 127.0.0.1:0\nmetrics:\n  address: 127.0.0.1:0\n"
    );
    let node = Overwatch::start(&dir, &yaml);
    let gossip = node.gossip.expect("gossip");
    let envelope = Envelope::new(
        &ClusterKey::from_base64(Some(&key)).expect("key"),
        Duration::from_secs(60),
    );
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let subnets = 100_000u32;
    let idle_kib = memory(node.process.pid()).0;
    let mut clock = VersionClock::default();
    for (region, ip, far_in) in [
        ("a", Ipv4Addr::new(10, 0, 0, 1), 0),
        ("b", Ipv4Addr::new(10, 0, 0, 2), 1),
    ] {
        let identity = AgentIdentity::generate(region).expect("identity");
        let report = StatusReport {
            agent_id: identity.agent_id().to_owned(),
            region: region.into(),
            version: clock.next(opengslb_proto::member::now_us()),
            backends: vec![BackendReport {
                service: "app".into(),
                address: ip.into(),
                port: 80,
                weight: 100,
                weight_pct: 100,
                admin: Admin::Ready,
                health: Health::Up,
            }],
            leaving: false,
        };
        let message = Message::V2(MessageV2::Report(
            SignedReport::sign(&report, &identity, TOKEN).expect("sign"),
        ))
        .encode();
        socket
            .send_to(&seal_direct(&envelope, &message), gossip)
            .expect("send");
        poll_until(Duration::from_secs(10), "agent pinned", || {
            let (_, body) = http_get(node.api.expect("api"), "/api/v1/overwatch/agents");
            body.contains(identity.agent_id()).then_some(())
        });
        // Half the subnets are nearer to a, half to b.
        let samples: Vec<LatencySample> = (0..subnets)
            .map(|i| LatencySample {
                subnet: Subnet::of(Ipv4Addr::from(0x0b00_0000 + (i << 8)).into(), 24, 48),
                rtt_us: if i % 2 == far_in { 20_000 } else { 120_000 },
                samples: 10,
            })
            .collect();
        let parts = latency_parts(
            &samples,
            &identity,
            region,
            clock.next(opengslb_proto::member::now_us()),
            true,
        )
        .expect("sign");
        for (i, part) in parts.into_iter().enumerate() {
            socket
                .send_to(&seal_latency(&envelope, part), gossip)
                .expect("send");
            if i % 50 == 49 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    poll_until(
        Duration::from_secs(60),
        "every learned subnet in the API",
        || {
            let (_, body) = http_get(node.api.expect("api"), "/api/v1/overwatch/latency");
            let total = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["total"].as_u64())
                .unwrap_or(0);
            (total == 2 * u64::from(subnets)).then_some(())
        },
    );
    println!(
        "  overwatch with {} learned subnets x 2 regions: RSS +{:.1} MiB (table, API cells and DNS index)",
        subnets,
        memory(node.process.pid()).0.saturating_sub(idle_kib) as f64 / 1024.0
    );
    // Every learned answer goes to the nearer region.
    let probe = UdpSocket::bind("127.0.0.1:0").expect("bind");
    probe
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    for i in [0u32, 1, 2, 3] {
        let subnet = Ipv4Addr::from(0x0b00_0000 + (i << 8));
        probe
            .send_to(&ecs_query(1, "lat.gslb.test", subnet), node.dns)
            .expect("send");
        let mut buf = [0u8; 1500];
        let n = probe.recv(&mut buf).expect("answer");
        let expected = if i % 2 == 0 {
            Ipv4Addr::new(10, 0, 0, 1)
        } else {
            Ipv4Addr::new(10, 0, 0, 2)
        };
        assert_eq!(a_records(&buf[..n]), [expected], "subnet {subnet}");
    }
    let mut rates = Vec::new();
    for name in [
        "rr.gslb.test",
        "lat.gslb.test",
        "rr.gslb.test",
        "lat.gslb.test",
    ] {
        rates.push((name, qps(node.dns, name, subnets, duration)));
    }
    let mean = |n: &str| {
        let v: Vec<f64> = rates
            .iter()
            .filter(|(x, _)| *x == n)
            .map(|(_, q)| *q)
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    for (name, q) in &rates {
        println!("  {name:<14} {q:>9.0} q/s");
    }
    println!(
        "  learned_latency / round-robin: {:.2}× (means of two runs each, interleaved)",
        mean("lat.gslb.test") / mean("rr.gslb.test")
    );
}

/// Answers per second from 4 sockets keeping 16 queries each in flight.
fn qps(server: SocketAddr, name: &str, subnets: u32, duration: Duration) -> f64 {
    let answered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let (answered, stop, name) =
                (Arc::clone(&answered), Arc::clone(&stop), name.to_owned());
            std::thread::spawn(move || {
                let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
                socket
                    .set_read_timeout(Some(Duration::from_millis(200)))
                    .expect("timeout");
                let mut i = t * 7919;
                let send = |i: u32| {
                    let subnet = Ipv4Addr::from(0x0b00_0000 + ((i % subnets) << 8));
                    let _ = socket.send_to(&ecs_query(i as u16, &name, subnet), server);
                };
                for _ in 0..16 {
                    i += 1;
                    send(i);
                }
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    match socket.recv(&mut buf) {
                        Ok(_) => {
                            answered.fetch_add(1, Ordering::Relaxed);
                            i += 1;
                            send(i);
                        }
                        Err(_) => {
                            // A lost datagram: top the window up again.
                            i += 1;
                            send(i);
                        }
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    let before = answered.load(Ordering::Relaxed);
    std::thread::sleep(duration);
    let done = answered.load(Ordering::Relaxed) - before;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    done as f64 / elapsed.as_secs_f64()
}
