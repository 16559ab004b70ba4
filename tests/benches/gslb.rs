//! GSLB propagation and scale benchmark (a program, not a test).
//!
//! Run: `cargo build --release --bins && cargo bench -p opengslb-tests --bench gslb`
//! Knobs: `BENCH_TRIALS` (drain trials, default 60), `BENCH_KILLS` (kill -9 trials,
//! default 5), `BENCH_AGENTS` (simulated agents, default 1000).
//!
//! 1. Drain: an agent daemon's drain file is created → time until its backend has left
//!    the DNS answers of both overwatch nodes (default gossip settings).
//! 2. Dead agent: `kill -9` → time until its backend has left both nodes' answers.
//! 3. Scale: one overwatch fed by N simulated agents (one process, real signed and sealed
//!    reports): time until all N backends are in, until all N drains are seen, and until
//!    all are back; overwatch CPU and memory.

// A benchmark's output is its figures.
#![allow(clippy::print_stdout)]

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use opengslb_proto::identity::AgentIdentity;
use opengslb_proto::member::seal_direct;
use opengslb_proto::seal::{ClusterKey, Envelope};
use opengslb_proto::status::{Admin, Health};
use opengslb_proto::wire::{
    BackendReport, Message, MessageV2, SignedReport, StatusReport, VersionClock,
};
use opengslb_tests::bench::{cpu_ms, knob, memory, percentile as pct};
use opengslb_tests::gslb::{AgentDaemon, TOKEN, cluster_key, overwatch_yaml_defaults};
use opengslb_tests::overwatch::{Backend, Overwatch, a_set, http_get};
use opengslb_tests::{TempDir, poll_until, remove, touch};

fn main() {
    let trials = knob("BENCH_TRIALS", 60);
    let kills = knob("BENCH_KILLS", 5);
    let simulated = knob("BENCH_AGENTS", 1000) as usize;

    let key = cluster_key(5);
    let dir = TempDir::new("bench-gslb");
    let ow1 = Overwatch::start(&dir, &overwatch_yaml_defaults("ow-1", &key, &[]));
    let dir2 = TempDir::new("bench-gslb-2");
    let ow2 = Overwatch::start(
        &dir2,
        &overwatch_yaml_defaults("ow-2", &key, &[ow1.gossip.expect("gossip")]),
    );
    let seeds = [ow1.gossip.expect("gossip"), ow2.gossip.expect("gossip")];
    let backend = Backend::start("127.0.0.1");
    let agent = AgentDaemon::start(&dir, "bench", backend.addr, &seeds, &key, TOKEN);
    let target = Ipv4Addr::new(127, 0, 0, 1);
    let in_both = |present: bool| {
        [ow1.dns, ow2.dns]
            .iter()
            .all(|dns| a_set(*dns, "app.gslb.test").contains(&target) == present)
    };
    poll_until(
        Duration::from_secs(20),
        "the agent's backend in both nodes",
        || in_both(true).then_some(()),
    );

    let mut drain = Vec::new();
    for _ in 0..trials {
        let t = Instant::now();
        touch(&agent.drain);
        poll_until(Duration::from_secs(10), "drain seen", || {
            in_both(false).then_some(())
        });
        drain.push(t.elapsed().as_secs_f64() * 1e3);
        remove(&agent.drain);
        poll_until(Duration::from_secs(10), "undrain seen", || {
            in_both(true).then_some(())
        });
    }
    drop(agent);

    let mut dead = Vec::new();
    for i in 0..kills {
        let victim = AgentDaemon::start(
            &dir,
            &format!("victim{i}"),
            backend.addr,
            &seeds,
            &key,
            TOKEN,
        );
        poll_until(Duration::from_secs(20), "victim in both", || {
            in_both(true).then_some(())
        });
        victim.process.signal(libc::SIGKILL);
        let t = Instant::now();
        poll_until(Duration::from_secs(30), "dead agent out of both", || {
            in_both(false).then_some(())
        });
        dead.push(t.elapsed().as_secs_f64() * 1e3);
    }

    let scale = scale(simulated, &key);

    println!();
    println!(
        "GSLB propagation (2 overwatch nodes, default gossip settings: probe 1 s, suspicion 1.5 s; loopback)"
    );
    println!(
        "  drain file → out of both nodes' DNS, {} trials: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        drain.len(),
        pct(&drain, 50.0),
        pct(&drain, 99.0),
        pct(&drain, 100.0)
    );
    println!(
        "  kill -9 agent → out of both nodes' DNS, {} trials: p50 {:.0} ms, max {:.0} ms",
        dead.len(),
        pct(&dead, 50.0),
        pct(&dead, 100.0)
    );
    println!(
        "Scale: one overwatch, {simulated} simulated agents (signed, sealed reports; one backend each)"
    );
    println!("  all registered and in DNS: {:.0} ms", scale.register_ms);
    println!(
        "  all drained (every agent reports drain at once): {:.0} ms",
        scale.drain_ms
    );
    println!("  all back: {:.0} ms", scale.ready_ms);
    println!(
        "  overwatch CPU for the {} status changes: {:.0} ms ({:.1} µs per report)",
        2 * simulated,
        scale.cpu_ms,
        scale.cpu_ms * 1e3 / (2 * simulated) as f64
    );
    println!(
        "  unchanged heartbeats: {:.0} received in {HEARTBEAT_ROUNDS} s, {:.0} DNS snapshot builds ({:.1}/s); overwatch CPU {:.0} ms (idle {:.0} ms) = {:.1} µs per heartbeat",
        scale.heartbeats,
        scale.heartbeat_builds,
        scale.heartbeat_builds / HEARTBEAT_ROUNDS as f64,
        scale.heartbeat_cpu_ms,
        scale.idle_cpu_ms,
        (scale.heartbeat_cpu_ms - scale.idle_cpu_ms).max(0.0) * 1e3 / scale.heartbeats.max(1.0)
    );
    println!(
        "  one agent drains: {:.0} DNS snapshot build(s) (local transition and its Raft echo)",
        scale.transition_builds
    );
    println!(
        "  overwatch memory: RSS {} KiB, peak {} KiB (idle with no agents: {} KiB)",
        scale.rss_kib, scale.hwm_kib, scale.idle_rss_kib
    );
}

/// Seconds of unchanged heartbeats (one round per second).
const HEARTBEAT_ROUNDS: u64 = 5;

struct Scale {
    /// Heartbeat packets overwatch received in the heartbeat window.
    heartbeats: f64,
    /// DNS snapshot builds in that window.
    heartbeat_builds: f64,
    heartbeat_cpu_ms: f64,
    /// CPU over an idle window of the same length.
    idle_cpu_ms: f64,
    /// Snapshot builds for one agent's drain.
    transition_builds: f64,
    register_ms: f64,
    drain_ms: f64,
    ready_ms: f64,
    cpu_ms: f64,
    rss_kib: u64,
    hwm_kib: u64,
    idle_rss_kib: u64,
}

fn scale(n: usize, key_b64: &str) -> Scale {
    let dir = TempDir::new("bench-scale");
    let node = Overwatch::start(&dir, &overwatch_yaml_defaults("ow-scale", key_b64, &[]));
    let pid = node.process.pid();
    let idle_rss_kib = memory(pid).0;
    let gossip = node.gossip.expect("gossip");
    let identities: Vec<AgentIdentity> = (0..n)
        .map(|_| AgentIdentity::generate("eu").expect("identity"))
        .collect();
    let envelope = Envelope::new(
        &ClusterKey::from_base64(Some(key_b64)).expect("key"),
        Duration::from_secs(60),
    );
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut clock = VersionClock::default();
    // Agents `agents` send their one backend with `admin`, each at a new version.
    let send = |clock: &mut VersionClock, agents: std::ops::Range<usize>, admin: Admin| {
        for (i, identity) in identities
            .iter()
            .enumerate()
            .take(agents.end)
            .skip(agents.start)
        {
            let backend = BackendReport {
                service: "app".into(),
                address: std::net::IpAddr::V4(Ipv4Addr::new(
                    10,
                    (i >> 16) as u8,
                    (i >> 8) as u8,
                    i as u8,
                )),
                port: 80,
                weight: 100,
                weight_pct: 100,
                admin,
                health: Health::Up,
            };
            let version = clock.next(opengslb_proto::member::now_us());
            let report = StatusReport {
                agent_id: identity.agent_id().to_owned(),
                region: "eu".into(),
                version,
                backends: vec![backend],
                leaving: false,
            };
            let message = Message::V2(MessageV2::Report(
                SignedReport::sign(&report, identity, TOKEN).expect("sign"),
            ))
            .encode();
            let _ = socket.send_to(&seal_direct(&envelope, &message), gossip);
            // Pace like a real fleet's burst: a little under one report per 50 µs.
            if i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    };
    let send_all = |clock: &mut VersionClock, admin: Admin| send(clock, 0..n, admin);
    let stats = |field: &str| -> u64 {
        let (_, body) = http_get(node.api.expect("api"), "/api/v1/overwatch/stats");
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v[field].as_u64())
            .unwrap_or(0)
    };
    // Like real agents: publish on the change, then again every heartbeat (here 1 s) —
    // UDP may drop part of a burst; the next heartbeat repairs it.
    let converge = |clock: &mut VersionClock, admin: Admin, field: &str, what: &str| {
        let t = Instant::now();
        let mut last_send = Instant::now();
        send_all(clock, admin);
        poll_until(Duration::from_secs(60), what, || {
            if last_send.elapsed() >= Duration::from_secs(1) {
                send_all(clock, admin);
                last_send = Instant::now();
            }
            (stats(field) == n as u64).then_some(())
        });
        t.elapsed().as_secs_f64() * 1e3
    };
    let register_ms = converge(
        &mut clock,
        Admin::Ready,
        "healthy_backends",
        "all simulated agents registered",
    );
    let cpu_before = cpu_ms(pid);
    let drain_ms = converge(&mut clock, Admin::Drain, "draining_backends", "all drained");
    let ready_ms = converge(&mut clock, Admin::Ready, "healthy_backends", "all back");
    let changes_cpu_ms = cpu_ms(pid) - cpu_before;

    // Unchanged heartbeats: every agent says the same again at a newer version, once a
    // second, as real agents do. Against an idle window of the same length.
    let builds = || node.metric("opengslb_dns_snapshot_builds_total");
    let packets_in = || node.metric("opengslb_gossip_packets_total{direction=\"in\"}");
    let window = Duration::from_secs(HEARTBEAT_ROUNDS);
    // The idle baseline starts once the 2,000 transitions above are written to the
    // registry (the leader proposes them in batches after the views change).
    poll_until(
        Duration::from_secs(30),
        "the registry has every backend",
        || (stats("registry_backends") == n as u64).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(2));
    let idle_cpu_before = cpu_ms(pid);
    std::thread::sleep(window);
    let idle_cpu_ms = cpu_ms(pid) - idle_cpu_before;
    let (builds_before, packets_before, heartbeat_cpu_before) =
        (builds(), packets_in(), cpu_ms(pid));
    let started = Instant::now();
    for round in 1..=HEARTBEAT_ROUNDS {
        send_all(&mut clock, Admin::Ready);
        let next = Duration::from_secs(round);
        std::thread::sleep(next.saturating_sub(started.elapsed()));
    }
    let heartbeat_cpu_ms = cpu_ms(pid) - heartbeat_cpu_before;
    let heartbeats = packets_in() - packets_before;
    let heartbeat_builds = builds() - builds_before;
    assert_eq!(
        stats("healthy_backends"),
        n as u64,
        "heartbeats kept every backend in"
    );

    // One transition: exactly one snapshot build, also after it came back through Raft.
    let applied = || -> u64 {
        let (_, body) = http_get(node.api.expect("api"), "/api/v1/cluster/status");
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["last_applied_index"].as_u64())
            .unwrap_or(0)
    };
    let builds_before = builds();
    let applied_before = applied();
    send(&mut clock, 0..1, Admin::Drain);
    poll_until(Duration::from_secs(10), "one agent drained", || {
        (stats("draining_backends") == 1).then_some(())
    });
    // The leader writes the transition to the registry on its next tick; the node then
    // applies it (the echo). Past that point a second build would be a wasted one.
    poll_until(
        Duration::from_secs(10),
        "the drain applied through Raft",
        || (applied() > applied_before).then_some(()),
    );
    // The snapshot task reacts to the applied state within microseconds; a moment's
    // margin lets a build it wrongly made show in the counter.
    std::thread::sleep(Duration::from_millis(500));
    let transition_builds = builds() - builds_before;
    let (rss_kib, hwm_kib) = memory(pid);
    Scale {
        heartbeats,
        heartbeat_builds,
        heartbeat_cpu_ms,
        idle_cpu_ms,
        transition_builds,
        cpu_ms: changes_cpu_ms,
        register_ms,
        drain_ms,
        ready_ms,
        rss_kib,
        hwm_kib,
        idle_rss_kib,
    }
}
