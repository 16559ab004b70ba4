//! The cluster on an operator's bad day (issue 15), with three real overwatch processes:
//! restarts in the worst order after a wiped disk, a node that joins a cluster with the
//! data of a cluster of one, a wrong secret, and a snapshot larger than an HTTP body.
//! Every acknowledged write survives; what cannot work says so, once, by name.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use opengslb_tests::cluster::{TEST_TIMING, TestCluster};
use opengslb_tests::overwatch::{Overwatch, http_get, query_packet, rcode, udp_exchange};
use opengslb_tests::{TempDir, poll_until, poll_until_explained};

const BODY: &str = "dns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [gslb.test]\nregions:\n  - name: eu\n    servers: [{address: 192.0.2.1, service: app}]\ndomains:\n  - name: app.gslb.test\n    routing_algorithm: round-robin\n    services: [app]\n    regions: [eu]\n    ttl: 1\n";

/// Writes `count` overrides through node `via`; every one must be acknowledged. Returns
/// what the cluster must keep.
fn write_overrides(
    cluster: &TestCluster,
    via: usize,
    count: u32,
    reason: &str,
) -> BTreeMap<String, bool> {
    for i in 0..count {
        let address = format!("10.15.{}.{}:80", i / 200, i % 200 + 1);
        let (code, body) = cluster.set_override(via, "app", &address, false, reason);
        assert_eq!(code, 200, "write {i} acknowledged: {body}");
    }
    cluster.overrides(via)
}

/// The rcode node `i` answers for the test domain.
fn dns_rcode(node: &Overwatch) -> Option<u8> {
    udp_exchange(
        node.dns,
        &query_packet(7, "app.gslb.test", 1, false),
        Duration::from_secs(1),
    )
    .map(|r| rcode(&r))
}

/// Node `i`'s Raft state (leader, follower, candidate, learner).
fn state_of(cluster: &TestCluster, i: usize) -> String {
    cluster.status(i)["state"]
        .as_str()
        .unwrap_or("?")
        .to_owned()
}

#[test]
fn a_wiped_node_restarted_first_cannot_hand_the_cluster_to_a_stale_node() {
    let mut cluster = TestCluster::start("bad-order", BODY, TEST_TIMING);
    let l = cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
    let (n, b) = ((l + 1) % 3, (l + 2) % 3);

    // B goes down; L and N acknowledge writes B never sees.
    cluster.kill(b);
    let kept = write_overrides(&cluster, l, 30, "acknowledged while B was down");
    assert_eq!(kept.len(), 30);
    poll_until(Duration::from_secs(5), "N has every write", || {
        (cluster.overrides(n) == kept).then_some(())
    });

    // L and N go down; N loses its disk. N comes back first, alone, then stale B.
    cluster.kill(l);
    cluster.wipe(n);
    cluster.restart(n);
    cluster.node(n).process.wait_for_line(
        "no data and no quorum of cluster.peers reachable",
        Duration::from_secs(10),
    );
    cluster.restart(b);
    cluster.node(n).process.wait_for_line(
        "peers already run a cluster: rejoining",
        Duration::from_secs(10),
    );
    // With N refusing its vote, B (which lacks the 30 writes) cannot lead: watch for ten
    // election timeouts (400 ms each).
    let watch_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < watch_until {
        assert_ne!(state_of(&cluster, b), "leader", "stale B must not lead");
        assert_eq!(
            dns_rcode(cluster.node(n)),
            Some(2),
            "N answers SERVFAIL until it has caught up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, body) = http_get(cluster.node(n).api.expect("api"), "/api/v1/ready");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("catching up with the cluster"), "{body}");

    // L returns: it has every write, so it leads, and brings both others up to date.
    cluster.restart(l);
    let leader = cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
    assert_eq!(leader, l, "only L holds every acknowledged write");
    for i in [l, n, b] {
        poll_until(
            Duration::from_secs(10),
            "every acknowledged write on every node",
            || (cluster.overrides(i) == kept).then_some(()),
        );
    }
    // Should N not catch up, the failure shows what every node has applied.
    poll_until_explained(
        Duration::from_secs(10),
        "N caught up with the cluster",
        || {
            let log = cluster.node(n).process.output();
            if log.contains("caught up with the cluster: voting and answering DNS") {
                return Ok(());
            }
            let status = |i: usize| cluster.node(i).get("/api/v1/cluster/status").1;
            let ready = http_get(cluster.node(n).api.expect("api"), "/api/v1/ready").1;
            Err(format!(
                "N's /ready: {ready}\nN's cluster status: {}\nL's: {}",
                status(n),
                status(l)
            ))
        },
    );
    poll_until(Duration::from_secs(5), "N answers again", || {
        (dns_rcode(cluster.node(n)) == Some(0)).then_some(())
    });
    poll_until(Duration::from_secs(5), "N's synced gauge", || {
        (cluster.node(n).metric("opengslb_cluster_synced") == 1.0).then_some(())
    });
    for i in [l, n, b] {
        let log = cluster.node(i).process.output();
        assert!(!log.contains("panicked"), "node {i} panicked:\n{log}");
    }
}

#[test]
fn a_fresh_node_founds_a_cluster_only_with_a_quorum_of_its_peers() {
    let mut cluster = TestCluster::prepare("quorum-first", "", BODY, TEST_TIMING);
    // Alone it cannot tell a first start from a wiped disk: it waits, and says why.
    cluster.restart(0);
    cluster.node(0).process.wait_for_line(
        "no data and no quorum of cluster.peers reachable",
        Duration::from_secs(10),
    );
    assert_eq!(
        dns_rcode(cluster.node(0)),
        Some(2),
        "SERVFAIL while it waits"
    );
    let (code, _) = http_get(cluster.node(0).api.expect("api"), "/api/v1/ready");
    assert_eq!(code, 503);
    // A second fresh peer makes a quorum: they found the cluster and answer.
    cluster.restart(1);
    cluster.leader_among(&[0, 1], Duration::from_secs(15));
    for i in [0, 1] {
        poll_until(Duration::from_secs(5), "answering", || {
            (dns_rcode(cluster.node(i)) == Some(0)).then_some(())
        });
    }
    // The third, started later, joins the running cluster and catches up.
    let kept = write_overrides(&cluster, 0, 3, "before the third node");
    cluster.restart(2);
    poll_until(
        Duration::from_secs(10),
        "the late node has every write",
        || (cluster.overrides(2) == kept).then_some(()),
    );
}

#[test]
fn a_wrong_secret_is_named_once_and_retried_with_backoff() {
    let mut cluster = TestCluster::start("bad-secret", BODY, TEST_TIMING);
    let leader = cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
    let wrong = (leader + 1) % 3;
    cluster.kill(wrong);
    let yaml = cluster
        .yaml(wrong)
        .replace(&cluster.secret, "a-wrong-secret-0123456789");
    cluster.nodes[wrong] = Some(Overwatch::start(&cluster.dirs[wrong], &yaml));
    let line = cluster
        .node(leader)
        .process
        .wait_for_line("refused the cluster secret", Duration::from_secs(10));
    assert!(
        line.contains("cluster.secret differs between the nodes"),
        "{line}"
    );
    let before = cluster.node(leader).process.output().lines().count();
    // Five seconds of a misconfigured peer: a handful of lines, not hundreds of thousands
    // (retried after 1 s, 2 s, 4 s ...: a dozen lines, openraft's own included).
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
    }
    let output = cluster.node(leader).process.output();
    let added: Vec<&str> = output.lines().skip(before).collect();
    assert!(
        added.len() < 50,
        "{} log lines in 5 s:\n{}",
        added.len(),
        added.join("\n")
    );
}

#[test]
fn the_data_of_a_cluster_of_one_cannot_join_a_cluster_unnoticed() {
    let dir = TempDir::new("one-then-many");
    let single = format!(
        "overwatch:\n  identity: {{node_id: ow1}}\n  validation: {{enabled: false}}\n{BODY}"
    );
    let node = Overwatch::start(&dir, &single);
    drop(node);
    let cluster = TestCluster::start("one-then-many-peers", BODY, TEST_TIMING);
    let yaml = cluster.yaml(0);
    std::fs::write(dir.join("overwatch.yaml"), &yaml).expect("config");
    let out = std::process::Command::new(opengslb_tests::overwatch::overwatch_binary())
        .arg("--config")
        .arg(dir.join("overwatch.yaml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused to start: {stderr}");
    assert!(
        stderr.contains("was written by this node running without a `cluster:` section"),
        "{stderr}"
    );
}

#[test]
fn a_snapshot_larger_than_an_http_body_reaches_a_wiped_node() {
    let mut cluster = TestCluster::start(
        "big-snapshot",
        BODY,
        &format!("{TEST_TIMING}  snapshot_logs: 20\n"),
    );
    let leader = cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
    // About 3 MB of replicated state: 2,800 overrides with 1 KB reasons (the most a
    // reason may carry), written by 8 clients at once.
    let api = cluster.node(leader).api.expect("api");
    let writers: Vec<_> = (0..8u32)
        .map(|w| {
            std::thread::spawn(move || {
                let body = format!(
                    r#"{{"healthy": false, "reason": "{}", "force": true}}"#,
                    "r".repeat(1024)
                );
                for n in (w..2_800).step_by(8) {
                    let path =
                        format!("/api/v1/overrides/app/10.15.{}.{}:80", n / 200, n % 200 + 1);
                    let (code, text) = opengslb_tests::overwatch::http_request(
                        api,
                        "PUT",
                        &path,
                        Some(opengslb_tests::gslb::API_TOKEN),
                        Some(&body),
                    );
                    assert_eq!(code, 200, "write {n}: {text}");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer");
    }
    let kept = cluster.overrides(leader);
    assert_eq!(kept.len(), 2_800);
    let wiped = (leader + 1) % 3;
    cluster.wipe(wiped);
    cluster.restart(wiped);
    cluster.node(wiped).process.wait_for_line(
        "installed a snapshot from the leader",
        Duration::from_secs(30),
    );
    poll_until(
        Duration::from_secs(15),
        "the wiped node has everything",
        || (cluster.overrides(wiped) == kept).then_some(()),
    );
    let log = cluster.node(leader).process.output();
    assert!(
        !log.contains("Payload Too Large"),
        "no body limit hit:\n{log}"
    );
}

#[test]
fn an_unreachable_new_member_stays_a_learner_and_costs_no_quorum() {
    let mut cluster = TestCluster::start("learner", BODY, TEST_TIMING);
    let leader = cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
    let nowhere = format!("127.0.0.1:{}", opengslb_tests::cluster::free_port());
    let api = format!("http://{}", cluster.node(leader).api.expect("api"));
    let out = std::process::Command::new(opengslb_tests::overwatch::cli_binary())
        .args(["cluster", "add-member", "4", &nowhere])
        .args(["--api", &api, "--token", opengslb_tests::gslb::API_TOKEN])
        .output()
        .expect("cli");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("was added as a learner but has not caught up"),
        "{stderr}"
    );
    let status = cluster.status(leader);
    let members = status["members"].as_array().cloned().unwrap_or_default();
    let voters = members.iter().filter(|m| m["voter"] == true).count();
    let learner = members
        .iter()
        .find(|m| m["id"] == 4)
        .expect("node 4 listed");
    assert_eq!(
        (voters, learner["voter"].as_bool()),
        (3, Some(false)),
        "{status}"
    );
    let shown = std::process::Command::new(opengslb_tests::overwatch::cli_binary())
        .args(["cluster", "status", "--api", &api])
        .output()
        .expect("cli");
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("node 4 is a learner, so it does not vote: it is unreachable"),
        "{text}"
    );

    // Losing one real node leaves two of three voters: writes go on.
    let other = (leader + 1) % 3;
    cluster.kill(other);
    let (code, body) = cluster.set_override(leader, "app", "10.15.9.9:80", false, "quorum kept");
    assert_eq!(code, 200, "{body}");
}

#[test]
fn a_paused_follower_that_resumes_deposes_nobody() {
    let cluster = TestCluster::start("prevote", BODY, TEST_TIMING);
    let leader = cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
    let paused = (leader + 1) % 3;
    let term = cluster.status(leader)["term"].as_u64().expect("term");
    // Paused for many election timeouts: its timers all fire at once when it resumes.
    cluster.node(paused).process.signal(libc::SIGSTOP);
    let (code, body) = cluster.set_override(leader, "app", "10.15.1.1:80", false, "while paused");
    assert_eq!(code, 200, "two of three write on: {body}");
    std::thread::sleep(Duration::from_secs(3));
    cluster.node(paused).process.signal(libc::SIGCONT);
    // Writes right after it resumes are not held up by an election...
    let started = Instant::now();
    for i in 0..10 {
        let (code, body) = cluster.set_override(
            leader,
            "app",
            &format!("10.15.2.{}:80", i + 1),
            false,
            "after",
        );
        assert_eq!(code, 200, "{body}");
    }
    let took = started.elapsed();
    // ...and for ten election timeouts nobody deposes the leader or raises the term.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let status = cluster.status(leader);
        assert_eq!(status["state"].as_str(), Some("leader"), "{status}");
        assert_eq!(status["term"].as_u64(), Some(term), "no election: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("10 writes right after the resume took {took:?}");
    poll_until(Duration::from_secs(5), "the resumed node caught up", || {
        (cluster.overrides(paused) == cluster.overrides(leader)).then_some(())
    });
}

/// A small tmpfs at `dir` (root only); `None` with the reason when it cannot be made.
fn small_disk(dir: &std::path::Path, size: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output()
        .map_err(|e| format!("mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "cannot mount a tmpfs (needs root and CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Writes a file into `dir` that leaves `spare` bytes free in its file system.
fn fill_but(dir: &std::path::Path, spare: u64) {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).expect("path");
    let mut stat: libc::statvfs = unsafe_zeroed();
    #[allow(unsafe_code)]
    // SAFETY: statvfs writes only the struct it is given; the path is NUL-terminated.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &raw mut stat) };
    assert_eq!(rc, 0, "statvfs {}", dir.display());
    let free = stat.f_bavail * stat.f_frsize;
    let filler = free.saturating_sub(spare);
    let file = std::fs::File::create(dir.join("filler")).expect("filler");
    std::io::Write::write_all(
        &mut std::io::BufWriter::new(file),
        &vec![0u8; usize::try_from(filler).expect("size")],
    )
    .expect("fill the disk");
}

/// A zeroed `statvfs`.
fn unsafe_zeroed() -> libc::statvfs {
    #[allow(unsafe_code)]
    // SAFETY: statvfs is plain old data; all zeroes is a valid value.
    unsafe {
        std::mem::zeroed()
    }
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_stops_the_node_loudly_and_it_recovers_when_space_returns() {
    let mut cluster = TestCluster::prepare("full-disk", "", BODY, TEST_TIMING);
    let small = 2;
    let data = cluster.dirs[small].join("data");
    if let Err(reason) = small_disk(&data, "3m") {
        eprintln!("SKIPPED full disk: {reason}");
        return;
    }
    let _mounted = Mounted(data.clone());
    for i in 0..3 {
        cluster.restart(i);
    }
    cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
    // Something else fills the disk but 256 KiB; then overrides of 1 KB each, fsynced on
    // each node, use up the rest.
    fill_but(&data, 256 * 1024);
    let reason = "f".repeat(1024);
    let leader = cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
    let writer = if leader == small {
        (small + 1) % 3
    } else {
        leader
    };
    let mut written = 0u32;
    let exited = poll_until(
        Duration::from_secs(60),
        "the node with the full disk exits",
        || {
            written += 1;
            let address = format!("10.16.{}.{}:80", written / 250, written % 250 + 1);
            let (code, _) = cluster.set_override(writer, "app", &address, false, &reason);
            assert!(code == 200 || code == 503, "HTTP {code}");
            cluster.nodes[small]
                .as_mut()
                .and_then(|n| n.process.try_exit())
        },
    );
    assert!(
        !exited.success(),
        "a non-zero exit for the supervisor: {exited:?}"
    );
    let log = cluster.nodes[small]
        .as_ref()
        .expect("node")
        .process
        .output();
    assert!(log.contains("the Raft core stopped"), "{log}");
    // The other two keep writing.
    let (code, body) =
        cluster.set_override(writer, "app", "10.16.250.1:80", false, "still writing");
    assert_eq!(code, 200, "{body}");
    // Space returns (the operator frees some): restarted, it catches up.
    let grown = std::process::Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&data)
        .status()
        .expect("remount");
    assert!(grown.success());
    cluster.restart(small);
    let reference = cluster.overrides(writer);
    poll_until(
        Duration::from_secs(20),
        "the node caught up after the disk grew",
        || (cluster.overrides(small) == reference).then_some(()),
    );
}
