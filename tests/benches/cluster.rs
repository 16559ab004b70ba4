//! Overwatch cluster benchmark (a program, not a test): three real nodes on loopback with
//! the default Raft timing (heartbeat 100 ms, election timeout 500 ms).
//!
//! Run: `cargo build --release --bins && cargo bench -p opengslb-tests --bench cluster`
//! Knobs: `BENCH_WRITES` (writes per path, default 500), `BENCH_FAILOVERS` (kill -9
//! trials, default 20), `BENCH_BACKENDS` (registry size for the restart, default 10000).
//!
//! 1. Override write latency through the leader and through a follower (which forwards).
//! 2. Failover: `kill -9` the leader → time until the survivors agree on a new leader, and
//!    until the first write through a survivor is acknowledged.
//! 3. Restart catch-up: a registry of N backends; a follower is stopped, 100 overrides
//!    are written, and it is restarted on its data dir → time until it has applied
//!    everything the leader had.
//! 4. Snapshot install: a second cluster's replicated state grows to `BENCH_SNAPSHOT_MB`
//!    (default 50) of override reasons; a follower loses its data dir and restarts →
//!    time until it has applied everything (through the leader's snapshot, in chunks).

// A benchmark's output is its figures.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use opengslb_tests::bench::{knob, percentile as pct};
use opengslb_tests::cluster::TestCluster;
use opengslb_tests::overwatch::http_request;
use opengslb_tests::poll_until;

const BODY: &str = "dns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [gslb.test]\nregions:\n  - name: eu\n    servers: [{address: 192.0.2.1, service: app}]\ndomains:\n  - name: app.gslb.test\n    routing_algorithm: round-robin\n    services: [app]\n    regions: [eu]\n";

fn write_ms(cluster: &TestCluster, node: usize, n: u64) -> (u16, f64) {
    let started = Instant::now();
    let address = format!("10.{}.{}.{}:80", n / 65536 % 256, n / 256 % 256, n % 256);
    let (code, _) = cluster.set_override(node, "app", &address, false, "bench");
    (code, started.elapsed().as_secs_f64() * 1e3)
}

fn applied(cluster: &TestCluster, node: usize) -> u64 {
    let (code, body) = http_request(
        cluster.node(node).api.expect("api"),
        "GET",
        "/api/v1/cluster/status",
        None,
        None,
    );
    if code != 200 {
        return 0;
    }
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|s| s["last_applied_index"].as_u64())
        .unwrap_or(0)
}

fn summary(name: &str, values: &mut [f64]) {
    values.sort_by(f64::total_cmp);
    println!(
        "{name:<44} n={:<4} p50 {:>8.1} ms  p99 {:>8.1} ms  max {:>8.1} ms",
        values.len(),
        pct(values, 50.0),
        pct(values, 99.0),
        values.last().copied().unwrap_or(0.0)
    );
}

fn main() {
    let writes = knob("BENCH_WRITES", 500);
    let failovers = knob("BENCH_FAILOVERS", 20) as usize;
    let backends = knob("BENCH_BACKENDS", 10_000);

    println!(
        "three overwatch nodes on loopback, default Raft timing (heartbeat 100ms, election 500ms)\n"
    );
    let mut cluster = TestCluster::start("bench-raft", BODY, "");
    let mut leader = cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
    let mut serial = 0u64;

    // 1. Write latency.
    for (path, node) in [
        ("leader", leader),
        ("follower (forwarded)", (leader + 1) % 3),
    ] {
        let mut times = Vec::new();
        for _ in 0..writes {
            serial += 1;
            let (code, ms) = write_ms(&cluster, node, serial);
            assert_eq!(code, 200, "write through the {path}");
            times.push(ms);
        }
        summary(&format!("override write through the {path}"), &mut times);
    }

    // 2. Failover.
    let (mut to_leader, mut to_write) = (Vec::new(), Vec::new());
    for _ in 0..failovers {
        let killed_at = Instant::now();
        cluster.kill(leader);
        let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
        let next = cluster.leader_among(&survivors, Duration::from_secs(10));
        to_leader.push(killed_at.elapsed().as_secs_f64() * 1e3);
        loop {
            serial += 1;
            if write_ms(&cluster, survivors[0], serial).0 == 200 {
                break;
            }
        }
        to_write.push(killed_at.elapsed().as_secs_f64() * 1e3);
        let target = applied(&cluster, next);
        cluster.restart(leader);
        poll_until(Duration::from_secs(20), "the killed node caught up", || {
            (applied(&cluster, leader) >= target).then_some(())
        });
        leader = cluster.leader_among(&[0, 1, 2], Duration::from_secs(10));
    }
    summary("kill -9 leader → new leader agreed", &mut to_leader);
    summary("kill -9 leader → first acknowledged write", &mut to_write);
    drop(cluster);

    // 3. Restart catch-up with a large registry.
    let servers: String = (0..backends)
        .map(|i| {
            format!(
                "      - {{address: 10.{}.{}.{}, service: app}}\n",
                100 + i / 65536,
                i / 256 % 256,
                i % 256
            )
        })
        .collect();
    let body = format!(
        "dns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [gslb.test]\nregions:\n  - name: eu\n    servers:\n{servers}domains:\n  - name: app.gslb.test\n    routing_algorithm: round-robin\n    services: [app]\n    regions: [eu]\n    max_records: 8\n"
    );
    let mut cluster = TestCluster::start("bench-raft-registry", &body, "");
    let leader = cluster.leader_among(&[0, 1, 2], Duration::from_secs(30));
    let registry = |c: &TestCluster, node: usize| {
        c.node(node).get("/api/v1/overwatch/stats").1["registry_backends"]
            .as_u64()
            .unwrap_or(0)
    };
    let filled = Instant::now();
    poll_until(Duration::from_secs(120), "the registry filled", || {
        (0..3)
            .all(|i| registry(&cluster, i) == backends)
            .then_some(())
    });
    println!(
        "{:<44} {backends} backends in every node's registry after {:.1} s",
        "registry written by the leader",
        filled.elapsed().as_secs_f64()
    );
    let follower = (leader + 1) % 3;
    if let Some(mut node) = cluster.nodes[follower].take() {
        node.process.signal(libc::SIGTERM);
        node.process.wait_exit(Duration::from_secs(10));
    }
    for _ in 0..100 {
        serial += 1;
        assert_eq!(write_ms(&cluster, leader, serial).0, 200);
    }
    let target = applied(&cluster, leader);
    let restarted = Instant::now();
    cluster.restart(follower);
    let listening = restarted.elapsed();
    poll_until(
        Duration::from_secs(60),
        "the restarted node caught up",
        || {
            (applied(&cluster, follower) >= target && registry(&cluster, follower) == backends)
                .then_some(())
        },
    );
    println!(
        "{:<44} {:.0} ms (listening after {:.0} ms; {backends} backends, 100 writes missed)",
        "restart → caught up with the leader",
        restarted.elapsed().as_secs_f64() * 1e3,
        listening.as_secs_f64() * 1e3
    );
    drop(cluster);
    snapshot_install();
}

/// Phase 4: a replicated state of `BENCH_SNAPSHOT_MB` megabytes (overrides with 1 KB
/// reasons, the most the API takes, written by 8 clients at once), a cluster that snapshots every 500 entries,
/// and a follower that lost its data dir: how long until it has applied everything.
fn snapshot_install() {
    let megabytes = knob("BENCH_SNAPSHOT_MB", 50);
    let mut cluster = TestCluster::prepare(
        "bench-snapshot",
        "",
        BODY,
        "  snapshot_logs: 500\n  write_timeout: 10s\n",
    );
    cluster.api_extra = "  max_overrides: 1000000\n".into();
    for i in 0..3 {
        cluster.restart(i);
    }
    let leader = cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
    let overrides = megabytes * 1000; // 1 KB each
    let api = cluster.node(leader).api.expect("api");
    let growing = Instant::now();
    let writers: Vec<_> = (0..8u64)
        .map(|w| {
            std::thread::spawn(move || {
                let reason = "s".repeat(1024);
                let body = format!(r#"{{"healthy": false, "reason": "{reason}", "force": true}}"#);
                for n in (w..overrides).step_by(8) {
                    let address = format!(
                        "10.{}.{}.{}:80",
                        200 + n / 62_500,
                        n / 250 % 250,
                        n % 250 + 1
                    );
                    let (code, text) = http_request(
                        api,
                        "PUT",
                        &format!("/api/v1/overrides/app/{address}"),
                        Some(opengslb_tests::gslb::API_TOKEN),
                        Some(&body),
                    );
                    assert_eq!(code, 200, "{text}");
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    let grown = growing.elapsed();
    let target = applied(&cluster, leader);
    let wiped = (leader + 2) % 3;
    if let Some(mut node) = cluster.nodes[wiped].take() {
        node.process.signal(libc::SIGTERM);
        node.process.wait_exit(Duration::from_secs(10));
    }
    std::fs::remove_dir_all(cluster.dirs[wiped].join("data")).expect("wipe");
    let restarted = Instant::now();
    cluster.restart(wiped);
    poll_until(Duration::from_secs(300), "the wiped node caught up", || {
        (applied(&cluster, wiped) >= target).then_some(())
    });
    let took = restarted.elapsed();
    let installed = cluster
        .node(wiped)
        .process
        .output()
        .contains("installed a snapshot from the leader");
    println!(
        "{:<44} {:.1} s for {megabytes} MB of overrides ({overrides} written by 8 clients in {:.0} s; through a snapshot: {installed})",
        "wiped follower → caught up",
        took.as_secs_f64(),
        grown.as_secs_f64()
    );
}
