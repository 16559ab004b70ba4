//! What an operator reads when a peer is down: one WARN when it becomes unreachable and
//! one INFO when it answers again, not openraft's line per retry (about ten a second).

use std::time::{Duration, Instant};

use opengslb_tests::cluster::{TEST_TIMING, TestCluster};

const BODY: &str = "dns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [gslb.test]\nregions:\n  - name: eu\n    servers: [{address: 192.0.2.1, service: app}]\ndomains:\n  - name: app.gslb.test\n    routing_algorithm: round-robin\n    services: [app]\n    regions: [eu]\n    ttl: 1\n";

/// A line of the level `WARN` or `ERROR` in the default text format.
fn loud(line: &str) -> bool {
    line.contains(" WARN ") || line.contains(" ERROR ")
}

#[test]
fn a_down_peer_is_one_warn_and_one_info_not_a_stream() {
    let mut cluster = TestCluster::start("peer-down-log", BODY, TEST_TIMING);
    let leader = cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
    let down = (leader + 1) % 3;
    let peer = format!("peer={}", down + 1);
    cluster.kill(down);

    let warned = cluster
        .node(leader)
        .process
        .wait_for_line("cluster peer unreachable", Duration::from_secs(10));
    assert!(
        warned.contains(" WARN ") && warned.contains(&peer),
        "{warned}"
    );

    // Raft retries the dead peer every 500 ms and heartbeats every 100 ms: over 5 s that
    // was about a hundred openraft lines. Now the log stays quiet: checked throughout the
    // window, failing at the first loud line.
    let before = cluster.node(leader).process.output().lines().count();
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(5) {
        let output = cluster.node(leader).process.output();
        let loud_lines: Vec<&str> = output.lines().skip(before).filter(|l| loud(l)).collect();
        assert!(
            loud_lines.is_empty(),
            "WARN/ERROR lines while the peer stayed down:\n{}",
            loud_lines.join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = cluster.node(leader).process.output();
    assert_eq!(
        output.matches("cluster peer unreachable").count(),
        1,
        "{output}"
    );

    cluster.restart(down);
    let back = cluster
        .node(leader)
        .process
        .wait_for_line("cluster peer answers again", Duration::from_secs(15));
    assert!(back.contains(" INFO ") && back.contains(&peer), "{back}");
}
