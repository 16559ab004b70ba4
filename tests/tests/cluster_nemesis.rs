//! Fault injection against three real overwatch processes, about a minute: writes go to
//! every node in turn while a nemesis kills the leader, pauses nodes, partitions the
//! network (the leader cut off both ways, and a link broken one way; every call between
//! nodes passes through relays the test cuts), wipes a follower's disk, and takes a quorum
//! down. Then every acknowledged write must be on every node, and the three nodes must
//! hold the same state.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opengslb_tests::cluster::{TEST_TIMING, TestCluster};
use opengslb_tests::gslb::API_TOKEN;
use opengslb_tests::overwatch::http_request;
use opengslb_tests::poll_until;

const BODY: &str = "dns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [gslb.test]\nregions:\n  - name: eu\n    servers: [{address: 192.0.2.1, service: app}]\ndomains:\n  - name: app.gslb.test\n    routing_algorithm: round-robin\n    services: [app]\n    regions: [eu]\n    ttl: 1\n";

/// Each node's API address while it runs (`None`: down).
type Apis = Arc<Mutex<Vec<Option<SocketAddr>>>>;

fn publish(cluster: &TestCluster, apis: &Apis) {
    let now: Vec<Option<SocketAddr>> = (0..3)
        .map(|i| cluster.nodes[i].as_ref().and_then(|n| n.api))
        .collect();
    *apis.lock().expect("lock") = now;
}

/// Pauses for `d` while the writer keeps writing.
fn hold(d: Duration) {
    std::thread::sleep(d);
}

#[test]
fn acknowledged_writes_survive_kills_pauses_partitions_a_wiped_disk_and_a_lost_quorum() {
    let mut cluster = TestCluster::partitionable(
        "nemesis",
        BODY,
        &format!("{TEST_TIMING}  snapshot_logs: 40\n"),
    );
    cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
    let apis: Apis = Arc::new(Mutex::new(Vec::new()));
    publish(&cluster, &apis);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let writer = {
        let (apis, stop, acked) = (Arc::clone(&apis), Arc::clone(&stop), Arc::clone(&acked));
        std::thread::spawn(move || {
            let (mut sent, mut refused) = (0u32, 0u32);
            while !stop.load(Ordering::Relaxed) {
                let target = apis.lock().expect("lock")[sent as usize % 3];
                sent += 1;
                let Some(api) = target else {
                    continue;
                };
                let address = format!(
                    "10.{}.{}.{}:80",
                    sent / 65_000 + 20,
                    sent / 250 % 250,
                    sent % 250 + 1
                );
                let body =
                    format!(r#"{{"healthy": false, "reason": "nemesis {sent}", "force": true}}"#);
                let (code, _) = http_request(
                    api,
                    "PUT",
                    &format!("/api/v1/overrides/app/{address}"),
                    Some(API_TOKEN),
                    Some(&body),
                );
                if code == 200 {
                    acked.lock().expect("lock").push(format!("app {address}"));
                } else {
                    refused += 1;
                }
            }
            (sent, refused)
        })
    };

    for round in 0..2 {
        // 1. kill -9 the leader; a new one takes over; the old one comes back.
        let leader = cluster.leader_among(&cluster.running(), Duration::from_secs(15));
        cluster.kill(leader);
        publish(&cluster, &apis);
        hold(Duration::from_secs(2));
        cluster.restart(leader);
        publish(&cluster, &apis);
        hold(Duration::from_secs(2));

        // 2. Pause a follower, then the leader (cut off, as far as the others can tell).
        let leader = cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
        for paused in [(leader + 1) % 3, leader] {
            cluster.node(paused).process.signal(libc::SIGSTOP);
            hold(Duration::from_secs(2));
            cluster.node(paused).process.signal(libc::SIGCONT);
            hold(Duration::from_secs(1));
        }

        // 3. The network: the leader cut off from both followers, then healed; then the
        // leader's calls to one follower lost (that follower still reaches it).
        let leader = cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
        let mesh = cluster.mesh.as_ref().expect("mesh");
        mesh.isolate(&[leader]);
        hold(Duration::from_secs(3));
        mesh.heal();
        hold(Duration::from_secs(1));
        let leader = cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
        let mesh = cluster.mesh.as_ref().expect("mesh");
        mesh.cut_one_way(leader, (leader + 1 + round) % 3);
        hold(Duration::from_secs(2));
        mesh.heal();
        hold(Duration::from_secs(1));

        // 4. A follower loses its disk and rejoins (by snapshot: the log is compacted).
        let leader = cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
        let wiped = (leader + 2) % 3;
        cluster.wipe(wiped);
        publish(&cluster, &apis);
        cluster.restart(wiped);
        publish(&cluster, &apis);
        hold(Duration::from_secs(3));

        // 5. Two nodes down: no quorum, every write refused; then both come back, the
        // leader last in the second round (the worst order of issue 15).
        let leader = cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
        let other = (leader + 1 + round) % 3;
        cluster.kill(leader);
        cluster.kill(other);
        publish(&cluster, &apis);
        hold(Duration::from_secs(2));
        let order = if round == 0 {
            [leader, other]
        } else {
            [other, leader]
        };
        for i in order {
            cluster.restart(i);
            publish(&cluster, &apis);
            hold(Duration::from_secs(1));
        }
        hold(Duration::from_secs(2));
    }
    stop.store(true, Ordering::Relaxed);
    let (sent, refused) = writer.join().expect("writer");
    let acked: BTreeSet<String> = acked.lock().expect("lock").iter().cloned().collect();
    eprintln!(
        "{sent} writes sent, {} acknowledged, {refused} refused",
        acked.len()
    );
    assert!(
        acked.len() > 100,
        "the cluster kept accepting writes between faults: {}",
        acked.len()
    );

    cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
    let reference = poll_until(Duration::from_secs(20), "the three nodes identical", || {
        let states: Vec<_> = (0..3).map(|i| cluster.overrides(i)).collect();
        (states[0] == states[1] && states[1] == states[2]).then(|| states[0].clone())
    });
    let lost: Vec<&String> = acked
        .iter()
        .filter(|k| !reference.contains_key(*k))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {lost:?}",
        lost.len()
    );
    for i in 0..3 {
        let log = cluster.node(i).process.output();
        assert!(!log.contains("panicked"), "node {i} panicked:\n{log}");
    }
}
