//! Real network partitions between three overwatch processes (issue 15): every call
//! between nodes passes through a relay the test cuts, so connections die and new ones
//! hang, as across a broken network. A leader cut off from the others steps aside for a
//! leader the majority elects, writes keep working on the majority side, and nobody is
//! deposed when the network heals; a link broken one way only changes nothing.

use std::time::Duration;

use opengslb_tests::cluster::{TEST_TIMING, TestCluster};
use opengslb_tests::overwatch::{query_packet, rcode, udp_exchange};
use opengslb_tests::poll_until;

const BODY: &str = "dns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [gslb.test]\nregions:\n  - name: eu\n    servers: [{address: 192.0.2.1, service: app}]\ndomains:\n  - name: app.gslb.test\n    routing_algorithm: round-robin\n    services: [app]\n    regions: [eu]\n    ttl: 1\n";

fn term(cluster: &TestCluster, i: usize) -> u64 {
    cluster.status(i)["term"].as_u64().unwrap_or(0)
}

#[test]
fn a_partitioned_leader_steps_aside_and_nobody_is_deposed_when_it_heals() {
    let cluster = TestCluster::partitionable("partition", BODY, TEST_TIMING);
    let mesh = cluster.mesh.as_ref().expect("mesh");
    let old = cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
    let majority: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let (code, body) = cluster.set_override(old, "app", "10.1.0.1:80", false, "before");
    assert_eq!(code, 200, "{body}");

    // The leader is cut off from both followers.
    mesh.isolate(&[old]);
    let new = cluster.leader_among(&majority, Duration::from_secs(10));
    assert_ne!(new, old);
    let (code, body) = cluster.set_override(majority[0], "app", "10.1.0.2:80", false, "majority");
    assert_eq!(code, 200, "the majority side takes writes: {body}");
    let (code, body) = cluster.set_override(old, "app", "10.1.0.3:80", false, "minority");
    assert_eq!(code, 503, "the cut-off node refuses writes: {body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("no quorum")),
        "{body}"
    );
    // Every node still answers DNS, the cut-off one from what it has.
    for i in 0..3 {
        let answer = udp_exchange(
            cluster.node(i).dns,
            &query_packet(9, "app.gslb.test", 1, false),
            Duration::from_secs(1),
        )
        .expect("an answer");
        assert_eq!(rcode(&answer), 0, "node {i} answers during the partition");
    }
    let elected = term(&cluster, new);

    // Healed: the old leader follows the new one, and no election follows.
    mesh.heal();
    poll_until(
        Duration::from_secs(10),
        "the old leader follows the new one",
        || {
            (cluster.leader_among(&[0, 1, 2], Duration::from_secs(5)) == new
                && term(&cluster, old) == elected)
                .then_some(())
        },
    );
    let expected: Vec<String> = ["10.1.0.1:80", "10.1.0.2:80"]
        .iter()
        .map(|a| format!("app {a}"))
        .collect();
    poll_until(Duration::from_secs(10), "three identical nodes", || {
        (0..3)
            .all(|i| cluster.overrides(i).keys().cloned().collect::<Vec<_>>() == expected)
            .then_some(())
    });
    assert_eq!(
        term(&cluster, new),
        elected,
        "nobody was deposed after the heal"
    );

    // One way only: the leader cannot reach a follower, which still reaches the leader.
    // The follower hears no leader, but the others do, so it cannot start an election.
    let leader = new;
    let follower = (leader + 1) % 3;
    mesh.cut_one_way(leader, follower);
    // For longer than a lease and an election, the term never moves (checked throughout,
    // not only at the end).
    let window = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < window {
        assert_eq!(
            term(&cluster, leader),
            elected,
            "the cut follower deposed nobody"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, body) = cluster.set_override(leader, "app", "10.1.0.4:80", false, "one way");
    assert_eq!(code, 200, "writes go on with the other follower: {body}");
    assert_eq!(
        cluster.leader_among(&[0, 1, 2], Duration::from_secs(5)),
        leader
    );
    assert_eq!(
        term(&cluster, leader),
        elected,
        "the cut follower deposed nobody"
    );
    mesh.heal();
    poll_until(Duration::from_secs(10), "the follower caught up", || {
        (cluster.overrides(follower).len() == 3).then_some(())
    });
    assert_eq!(term(&cluster, leader), elected);
}
