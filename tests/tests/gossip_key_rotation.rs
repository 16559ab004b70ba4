//! Rotating the gossip key with the built binaries, the way the README tells operators to
//! (add the new key everywhere, make it first everywhere, remove the old one), each step
//! applied with SIGHUP: no backend leaves DNS, no agent goes stale, every agent keeps
//! being heard, and afterwards the old key opens nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opengslb_proto::identity::AgentIdentity;
use opengslb_proto::status::Admin;
use opengslb_tests::attacker::Attacker;
use opengslb_tests::gslb::{AgentDaemon, TOKEN, cluster_key, overwatch_yaml};
use opengslb_tests::overwatch::{Backend, Overwatch, a_set};
use opengslb_tests::process::Spawned;
use opengslb_tests::{TempDir, poll_until};

/// Rewrites the `encryption_key:` line of a config file to `keys` (a list).
fn set_keys(config: &Path, keys: &[&str]) {
    let text = std::fs::read_to_string(config).expect("read config");
    let list: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    let rewritten: Vec<String> = text
        .lines()
        .map(|line| match line.find("encryption_key:") {
            Some(at) => format!("{}encryption_key: [{}]", &line[..at], list.join(", ")),
            None => line.to_owned(),
        })
        .collect();
    std::fs::write(config, rewritten.join("\n") + "\n").expect("write config");
}

/// Sends SIGHUP and waits for the `count`-th line containing `applied`.
fn reload(process: &Spawned, applied: &str, count: usize) {
    process.signal(libc::SIGHUP);
    poll_until(Duration::from_secs(5), applied, || {
        (process.output().matches(applied).count() >= count).then_some(())
    });
}

/// When each agent's last report was accepted (the API reads it live; heartbeats that
/// change nothing publish no new view, so the pinned version can lag).
fn last_seen(node: &Overwatch) -> BTreeMap<String, String> {
    let (_, list) = node.get("/api/v1/overwatch/agents");
    list["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| {
            (
                a["agent_id"].as_str().expect("id").to_owned(),
                a["last_seen"].as_str().expect("last_seen").to_owned(),
            )
        })
        .collect()
}

/// Waits until every agent has been heard (a newer report accepted) since now.
fn every_agent_heard_again(node: &Overwatch, agents: usize) {
    let before = last_seen(node);
    assert_eq!(before.len(), agents, "{before:?}");
    poll_until(
        Duration::from_secs(5),
        "a fresh report from every agent",
        || {
            let now = last_seen(node);
            before
                .iter()
                .all(|(id, seen)| now.get(id).is_some_and(|n| n != seen))
                .then_some(())
        },
    );
}

#[test]
fn a_key_rotation_in_three_reloads_keeps_every_agent_heard_and_in_dns() {
    let dir = TempDir::new("key-rotation");
    let (old, new) = (cluster_key(31), cluster_key(32));
    let node = Overwatch::start(&dir, &overwatch_yaml("ow-rotate", &old, &[]));
    let gossip = node.gossip.expect("gossip");
    let backends = [Backend::start("127.0.0.1"), Backend::start("127.0.0.2")];
    let agents: Vec<AgentDaemon> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| AgentDaemon::start(&dir, &format!("rot{i}"), b.addr, &[gossip], &old, TOKEN))
        .collect();
    let both: BTreeSet<Ipv4Addr> = ["127.0.0.1", "127.0.0.2"]
        .iter()
        .map(|a| a.parse().expect("ip"))
        .collect();
    poll_until(Duration::from_secs(10), "both backends in DNS", || {
        (a_set(node.dns, "app.gslb.test") == both).then_some(())
    });

    // Watch DNS and staleness for the whole rotation.
    let (stop, misses, stale) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let watcher = {
        let (stop, misses, stale) = (stop.clone(), misses.clone(), stale.clone());
        let (dns, metrics) = (node.dns, node.metrics.expect("metrics"));
        let both = both.clone();
        std::thread::spawn(move || {
            let mut polls = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if a_set(dns, "app.gslb.test") != both {
                    misses.fetch_add(1, Ordering::Relaxed);
                }
                let (_, text) = opengslb_tests::overwatch::http_get(metrics, "/metrics");
                if !text.contains("\nopengslb_overwatch_stale_agents 0\n") {
                    stale.fetch_add(1, Ordering::Relaxed);
                }
                polls += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            polls
        })
    };

    let steps: [&[&str]; 3] = [&[&old, &new], &[&new, &old], &[&new]];
    for (step, keys) in steps.iter().enumerate() {
        set_keys(&node.config, keys);
        reload(&node.process, "gossip keys reloaded", step + 1);
        for agent in &agents {
            set_keys(&agent.config, keys);
            reload(&agent.process, "gossip keys applied", step + 1);
        }
        every_agent_heard_again(&node, agents.len());
    }
    // And once more after the last step, on the new key alone.
    every_agent_heard_again(&node, agents.len());
    stop.store(true, Ordering::Relaxed);
    let polls = watcher.join().expect("watcher");
    assert!(polls > 10, "the watcher ran ({polls} polls)");
    assert_eq!(
        (
            misses.load(Ordering::Relaxed),
            stale.load(Ordering::Relaxed)
        ),
        (0, 0),
        "DNS answered both backends and no agent was stale at any of {polls} polls"
    );
    for agent in &agents {
        assert!(
            !agent.process.output().contains("restart"),
            "a key change needs no restart: {}",
            agent.process.output()
        );
    }

    // The old key opens nothing any more: a report sealed with it is dropped and counted.
    let before = node.metric("opengslb_gossip_decrypt_failures_total");
    let me = AgentIdentity::generate("eu").expect("identity");
    Attacker::new(&old, gossip).report(&me, 1, &["127.0.0.9"], Admin::Ready, TOKEN);
    poll_until(Duration::from_secs(5), "the old-key packet refused", || {
        (node.metric("opengslb_gossip_decrypt_failures_total") > before).then_some(())
    });
}
