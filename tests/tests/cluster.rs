//! Three real overwatch processes in one Raft cluster: overrides written anywhere reach
//! every node and DNS, survive the loss of any one node, and fail loudly without quorum.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use opengslb_tests::cluster::{TEST_TIMING, TestCluster};
use opengslb_tests::gslb::API_TOKEN;
use opengslb_tests::overwatch::{cli_binary, http_request};
use opengslb_tests::poll_until;

const BODY: &str = "dns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [gslb.test]\nregions:\n  - name: eu\n    servers: [{address: 192.0.2.1, service: app}, {address: 192.0.2.2, service: app}, {address: 192.0.2.3, service: app}]\ndomains:\n  - name: app.gslb.test\n    routing_algorithm: round-robin\n    services: [app]\n    regions: [eu]\n    ttl: 1\n";

fn answers(cluster: &TestCluster, i: usize) -> BTreeSet<String> {
    cluster
        .node(i)
        .dig(&["app.gslb.test", "A"])
        .data("A")
        .into_iter()
        .collect()
}

fn set(addresses: &[&str]) -> BTreeSet<String> {
    addresses.iter().map(|a| (*a).to_owned()).collect()
}

fn cli(cluster: &TestCluster, i: usize, args: &[&str]) -> (Option<i32>, String, String) {
    let api = format!("http://{}", cluster.node(i).api.expect("api"));
    let out = std::process::Command::new(cli_binary())
        .args(args)
        .args(["--api", &api, "--token", API_TOKEN])
        .output()
        .expect("cli");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn overrides_reach_every_node_and_dns_and_survive_losing_nodes() {
    let mut cluster = TestCluster::start("raft", BODY, TEST_TIMING);
    let all = [0, 1, 2];
    let leader = cluster.leader_among(&all, Duration::from_secs(15));
    let follower = (leader + 1) % 3;
    let everyone = set(&["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
    for i in all {
        assert_eq!(answers(&cluster, i), everyone);
    }

    // The status and the CLI show three reachable voters and the leader.
    let status = cluster.status(follower);
    assert_eq!(
        status["leader"].as_u64(),
        Some(leader as u64 + 1),
        "{status}"
    );
    let members = status["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{status}");
    assert!(
        members
            .iter()
            .all(|m| m["reachable"] == true && m["voter"] == true),
        "{status}"
    );
    let (code, out, err) = cli(&cluster, follower, &["cluster", "status"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&format!("leader {}", leader + 1)), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.contains(" voter ")).count(),
        3,
        "{out}"
    );

    // Bad writes are refused with a reason; nothing is written.
    let api = cluster.node(follower).api.expect("api");
    let body = r#"{"healthy": false, "reason": "disk"}"#;
    let (code, text) = http_request(
        api,
        "PUT",
        "/api/v1/overrides/app/192.0.2.1:80",
        None,
        Some(body),
    );
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("Bearer"), "{text}");
    let (code, text) = http_request(
        api,
        "PUT",
        "/api/v1/overrides/app/192.0.2.1",
        Some(API_TOKEN),
        Some(body),
    );
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("not IP:PORT"), "{text}");
    let (code, text) = http_request(
        api,
        "PUT",
        "/api/v1/overrides/app/192.0.2.1:80",
        Some(API_TOKEN),
        Some(r#"{"healthy": false, "reason": " "}"#),
    );
    assert_eq!(code, 400, "{text}");
    let (code, text) = http_request(
        api,
        "PUT",
        "/api/v1/overrides/app/192.0.2.1:80",
        Some(API_TOKEN),
        Some(r#"{"healthy": false, "reason": "x", "ttl": "soon"}"#),
    );
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("ttl"), "{text}");
    let (code, text) = http_request(
        api,
        "PUT",
        "/api/v1/overrides/app/192.0.2.1:80",
        Some(API_TOKEN),
        Some(r#"{"healthy": "no"}"#),
    );
    assert_eq!(code, 400, "{text}");
    assert!(text.starts_with("{\"error\""), "{text}");
    assert!(cluster.overrides(follower).is_empty());

    // An override written on a follower is on all three nodes and in their DNS.
    let (code, written) =
        cluster.set_override(follower, "app", "192.0.2.1:80", false, "disk failing");
    assert_eq!(code, 200, "{written}");
    assert_eq!(written["author"], "ops", "the author is the token's name");
    for i in all {
        poll_until(
            Duration::from_secs(5),
            "override everywhere and in DNS",
            || {
                (cluster.overrides(i).get("app 192.0.2.1:80") == Some(&false)
                    && answers(&cluster, i) == set(&["192.0.2.2", "192.0.2.3"]))
                .then_some(())
            },
        );
    }
    let (_, backends) = cluster.node(leader).get("/api/v1/overwatch/backends");
    let b = backends["backends"]
        .as_array()
        .and_then(|l| l.iter().find(|b| b["address"] == "192.0.2.1"))
        .cloned()
        .expect("backend");
    assert_eq!(b["effective_status"], "unhealthy", "{b}");
    assert_eq!(b["override_status"], false, "{b}");
    assert_eq!(b["override_reason"], "disk failing", "{b}");
    assert_eq!(b["override_author"], "ops", "{b}");

    // The CLI sets (with a TTL), lists and clears.
    let (code, out, err) = cli(
        &cluster,
        follower,
        &[
            "overrides",
            "set",
            "app",
            "192.0.2.2:80",
            "--healthy=false",
            "--reason",
            "kernel update",
            "--ttl",
            "1h",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("out of DNS"), "{out}");
    let (_, out, _) = cli(&cluster, leader, &["overrides", "list"]);
    assert!(
        out.contains("192.0.2.2:80") && out.contains("kernel update") && out.contains("ops"),
        "{out}"
    );
    let (code, _, err) = cli(
        &cluster,
        leader,
        &["overrides", "clear", "app", "192.0.2.2:80"],
    );
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = cli(
        &cluster,
        leader,
        &["overrides", "clear", "app", "192.0.2.2:80"],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("404"), "{err}");

    // kill -9 the leader: the other two elect a new one within 2 s and take writes.
    let killed_at = Instant::now();
    cluster.kill(leader);
    let survivors: Vec<usize> = all.iter().copied().filter(|i| *i != leader).collect();
    let second = cluster.leader_among(&survivors, Duration::from_secs(2));
    let elected_in = killed_at.elapsed();
    assert_ne!(second, leader);
    eprintln!("new leader after {elected_in:?}");
    let (code, body) = cluster.set_override(survivors[0], "app", "192.0.2.3:80", true, "pinned in");
    assert_eq!(code, 200, "{body}");

    // The killed node restarts from its data dir with every acknowledged override.
    cluster.restart(leader);
    poll_until(Duration::from_secs(10), "restarted node caught up", || {
        let o = cluster.overrides(leader);
        (o.get("app 192.0.2.1:80") == Some(&false) && o.get("app 192.0.2.3:80") == Some(&true))
            .then_some(())
    });
    poll_until(Duration::from_secs(5), "restarted node's DNS", || {
        (answers(&cluster, leader) == set(&["192.0.2.2", "192.0.2.3"])).then_some(())
    });

    // A hung node (SIGSTOP): the other two keep answering and accepting writes.
    let current = cluster.leader_among(&all, Duration::from_secs(10));
    let hung = (current + 1) % 3;
    let other = (current + 2) % 3;
    cluster.node(hung).process.signal(libc::SIGSTOP);
    let (code, body) = cluster.set_override(other, "app", "192.0.2.2:80", false, "while one hangs");
    assert_eq!(code, 200, "{body}");
    assert_eq!(answers(&cluster, other), set(&["192.0.2.3"]));
    assert_eq!(answers(&cluster, current), set(&["192.0.2.3"]));
    cluster.node(hung).process.signal(libc::SIGCONT);
    poll_until(Duration::from_secs(10), "the hung node catches up", || {
        (cluster.overrides(hung).len() == 3).then_some(())
    });

    // Two nodes down: writes fail with 503 and say so; DNS still answers from the last state.
    let survivor = hung;
    cluster.kill(current);
    cluster.kill(other);
    let (code, body) = cluster.set_override(survivor, "app", "192.0.2.3:80", false, "no quorum");
    assert_eq!(code, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("no quorum")),
        "{body}"
    );
    let (code, _, err) = cli(
        &cluster,
        survivor,
        &["overrides", "clear", "app", "192.0.2.1:80"],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("503"), "{err}");
    assert_eq!(answers(&cluster, survivor), set(&["192.0.2.3"]));
    assert_eq!(
        cluster.overrides(survivor).get("app 192.0.2.1:80"),
        Some(&false)
    );
}

/// Writes stream in through the two followers while the leader is killed and restarted:
/// every acknowledged write is then on all three nodes, once. A node whose data dir is
/// wiped rejoins through a snapshot; a member is removed and added back through the CLI.
#[test]
fn acknowledged_writes_survive_a_leader_kill_and_a_wiped_node_rejoins_by_snapshot() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    let mut cluster = TestCluster::start(
        "raft-stream",
        BODY,
        &format!("{TEST_TIMING}  snapshot_logs: 20\n"),
    );
    let leader = cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
    let writers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let apis: Vec<_> = writers
        .iter()
        .map(|i| cluster.node(*i).api.expect("api"))
        .collect();
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let stream = {
        let (acked, count) = (Arc::clone(&acked), Arc::clone(&count));
        std::thread::spawn(move || {
            let mut refused = 0;
            for i in 0..240u32 {
                let address = format!("10.9.{}.{}:80", i / 200, i % 200 + 1);
                let body = format!(r#"{{"healthy": false, "reason": "write {i}", "force": true}}"#);
                let (code, _) = http_request(
                    apis[i as usize % 2],
                    "PUT",
                    &format!("/api/v1/overrides/app/{address}"),
                    Some(API_TOKEN),
                    Some(&body),
                );
                if code == 200 {
                    acked.lock().expect("lock").push(format!("app {address}"));
                    count.fetch_add(1, Ordering::SeqCst);
                } else {
                    refused += 1;
                }
            }
            refused
        })
    };
    poll_until(Duration::from_secs(30), "60 writes acknowledged", || {
        (count.load(Ordering::SeqCst) >= 60).then_some(())
    });
    cluster.kill(leader);
    poll_until(Duration::from_secs(30), "150 writes acknowledged", || {
        (count.load(Ordering::SeqCst) >= 150).then_some(())
    });
    cluster.restart(leader);
    let refused = stream.join().expect("writer");
    let acked = acked.lock().expect("lock").clone();
    eprintln!(
        "{} writes acknowledged, {refused} refused during the failover",
        acked.len()
    );
    assert!(
        acked.len() >= 200,
        "most writes go through: {}",
        acked.len()
    );
    for i in 0..3 {
        poll_until(
            Duration::from_secs(15),
            "every acknowledged write on every node",
            || {
                let present = cluster.overrides(i);
                acked.iter().all(|k| present.contains_key(k)).then_some(())
            },
        );
    }
    let reference = cluster.overrides(writers[0]);
    poll_until(Duration::from_secs(10), "the three nodes agree", || {
        (0..3)
            .all(|i| cluster.overrides(i) == reference)
            .then_some(())
    });

    // A follower loses its data dir: it rejoins and the leader sends it a snapshot.
    let current = cluster.leader_among(&[0, 1, 2], Duration::from_secs(10));
    let wiped = (current + 1) % 3;
    if let Some(mut node) = cluster.nodes[wiped].take() {
        node.process.signal(libc::SIGTERM);
        assert!(node.process.wait_exit(Duration::from_secs(10)).success());
    }
    std::fs::remove_dir_all(cluster.dirs[wiped].join("data")).expect("wipe");
    cluster.restart(wiped);
    cluster.node(wiped).process.wait_for_line(
        "installed a snapshot from the leader",
        Duration::from_secs(15),
    );
    poll_until(
        Duration::from_secs(10),
        "the wiped node has everything",
        || (cluster.overrides(wiped) == reference).then_some(()),
    );

    // Membership through the CLI: remove the node, then add it back.
    let rpc = cluster.rpc[wiped].to_string();
    let id = (wiped + 1).to_string();
    let (code, out, err) = cli(&cluster, current, &["cluster", "remove-member", &id]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("removed"), "{out}");
    let members = cluster.status(current)["members"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(members.len(), 2, "{members:?}");
    let (code, _, err) = cli(&cluster, current, &["cluster", "add-member", &id, &rpc]);
    assert_eq!(code, Some(0), "{err}");
    poll_until(
        Duration::from_secs(10),
        "three reachable voters again",
        || {
            let status = cluster.status(current);
            let members = status["members"].as_array().cloned().unwrap_or_default();
            (members.len() == 3
                && members
                    .iter()
                    .all(|m| m["voter"] == true && m["reachable"] == true))
            .then_some(())
        },
    );
    let (code, _, err) = cli(&cluster, current, &["cluster", "add-member", &id, &rpc]);
    assert_eq!(code, Some(1));
    assert!(err.contains("already a member"), "{err}");
}
