//! End to end, both halves: agents in daemon mode beside their HTTP backends, gossiping to
//! two overwatch nodes, with a real haproxy checking the same agents.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use opengslb_tests::gslb::{AgentDaemon, TOKEN, cluster_key, overwatch_yaml};
use opengslb_tests::haproxy::{ADMIN_FDRAIN, Haproxy, OP_RUNNING};
use opengslb_tests::overwatch::{Backend, Overwatch, http_get};
use opengslb_tests::{TempDir, poll_until, poll_until_explained, remove, touch};

/// What `app.gslb.test A` answers on a node.
fn answers(node: &Overwatch) -> BTreeSet<String> {
    node.dig(&["app.gslb.test", "A"])
        .data("A")
        .into_iter()
        .collect()
}

fn set(ips: &[&str]) -> BTreeSet<String> {
    ips.iter().map(|s| (*s).to_owned()).collect()
}

fn haproxy_config(dir: &TempDir, agents: &[&AgentDaemon], backends: &[&Backend]) -> String {
    let servers: String = agents
        .iter()
        .zip(backends)
        .enumerate()
        .map(|(i, (a, b))| {
            format!(
                "    server s{} {} weight 100 check inter 300ms agent-check agent-addr 127.0.0.1 agent-port {} agent-inter 300ms\n",
                i + 1,
                b.addr,
                a.agent_check.port()
            )
        })
        .collect();
    format!(
        "global\n    stats socket {d}/admin.sock level admin\ndefaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\nfrontend fe\n    bind unix@{d}/fe.sock\n    default_backend app\nbackend app\n    balance roundrobin\n{servers}",
        d = dir.path().display()
    )
}

#[test]
fn one_status_reaches_haproxy_and_every_overwatch() {
    let dir = TempDir::new("gslb");
    let key = cluster_key(7);
    let ow1 = Overwatch::start(&dir, &overwatch_yaml("ow-1", &key, &[]));
    let dir2 = TempDir::new("gslb-ow2");
    let mut ow2 = Overwatch::start(
        &dir2,
        &overwatch_yaml("ow-2", &key, &[ow1.gossip.expect("gossip")]),
    );
    let seeds = [ow1.gossip.expect("gossip"), ow2.gossip.expect("gossip")];
    let backends = [
        Backend::start("127.0.0.1"),
        Backend::start("127.0.0.2"),
        Backend::start("127.0.0.3"),
    ];
    let agents: Vec<AgentDaemon> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| AgentDaemon::start(&dir, &format!("a{}", i + 1), b.addr, &seeds, &key, TOKEN))
        .collect();
    let all = set(&["127.0.0.1", "127.0.0.2", "127.0.0.3"]);
    for node in [&ow1, &ow2] {
        poll_until(
            Duration::from_secs(15),
            "every agent's backend in the answers",
            || (answers(node) == all).then_some(()),
        );
    }
    let haproxy = Haproxy::start(
        dir.path(),
        &haproxy_config(
            &dir,
            &[&agents[0], &agents[1], &agents[2]],
            &[&backends[0], &backends[1], &backends[2]],
        ),
    );
    // L7OK: haproxy parsed the agent's "NN% ready up" as a successful agent check.
    poll_until(
        Duration::from_secs(10),
        "haproxy: all servers UP, agent checks L7OK",
        || {
            let servers = haproxy.servers("app");
            let up = servers.len() == 3
                && servers
                    .values()
                    .all(|s| s.op_state == OP_RUNNING && s.admin_state == 0);
            (up && ["s1", "s2", "s3"]
                .iter()
                .all(|s| haproxy.stat("app", s)["agent_status"] == "L7OK"))
            .then_some(())
        },
    );

    // Drain agent 1: out of every overwatch's answers and DRAIN in haproxy, while the
    // application itself still answers 200.
    touch(&agents[0].drain);
    let t = Instant::now();
    for node in [&ow1, &ow2] {
        poll_until(Duration::from_secs(3), "drained backend out of DNS", || {
            (answers(node) == set(&["127.0.0.2", "127.0.0.3"])).then_some(())
        });
    }
    eprintln!("drain left DNS on both nodes after {:?}", t.elapsed());
    poll_until(Duration::from_secs(3), "haproxy shows s1 DRAIN", || {
        (haproxy.servers("app")["s1"].admin_state & ADMIN_FDRAIN != 0).then_some(())
    });
    assert_eq!(
        http_get(backends[0].addr, "/").0,
        200,
        "the drained server still serves"
    );
    let (_, drained) = ow1.get("/api/v1/overwatch/backends?status=draining");
    assert_eq!(drained["backends"][0]["address"], "127.0.0.1");
    assert_eq!(drained["backends"][0]["agent_admin"], "drain");
    assert_eq!(
        drained["backends"][0]["agent_id"],
        agents[0].agent_id.as_str()
    );
    remove(&agents[0].drain);
    for node in [&ow1, &ow2] {
        poll_until(Duration::from_secs(3), "undrained backend back", || {
            (answers(node) == all).then_some(())
        });
    }
    poll_until(Duration::from_secs(3), "haproxy s1 READY again", || {
        (haproxy.servers("app")["s1"].admin_state == 0).then_some(())
    });

    // The application behind agent 3 fails its local check: haproxy DOWN, overwatch out.
    backends[2].set_healthy(false);
    poll_until(
        Duration::from_secs(3),
        "haproxy s3 DOWN by the agent",
        || (haproxy.servers("app")["s3"].op_state != OP_RUNNING).then_some(()),
    );
    // `down #reason`: haproxy keeps the text after `#` as the last agent check's contents.
    let stat = haproxy.stat("app", "s3");
    let last = &stat["last_agt"];
    assert!(
        last.starts_with("via agent : down (app 127.0.0.3:")
            && last.ends_with("http /: 503 Service Unavailable)"),
        "{last:?}"
    );
    assert_eq!(stat["agent_status"], "L7STS", "the agent's `down`");
    for node in [&ow1, &ow2] {
        poll_until(Duration::from_secs(3), "unhealthy backend out", || {
            (answers(node) == set(&["127.0.0.1", "127.0.0.2"])).then_some(())
        });
    }
    backends[2].set_healthy(true);
    for node in [&ow1, &ow2] {
        poll_until(Duration::from_secs(3), "healthy again", || {
            (answers(node) == all).then_some(())
        });
    }

    // Intruders: a wrong cluster key never joins; a wrong token is rejected and counted.
    let wrong_key = AgentDaemon::start(
        &dir,
        "intruder-key",
        backends[0].addr,
        &seeds,
        &cluster_key(8),
        TOKEN,
    );
    let wrong_token = AgentDaemon::start(
        &dir,
        "intruder-token",
        backends[1].addr,
        &seeds,
        &key,
        "not-the-app-token-xx",
    );

    // kill -9 agent 2: its backend goes stale and leaves DNS within the detection time.
    agents[1].process.signal(libc::SIGKILL);
    let t = Instant::now();
    for node in [&ow1, &ow2] {
        poll_until(Duration::from_secs(8), "dead agent's backend out", || {
            (answers(node) == set(&["127.0.0.1", "127.0.0.3"])).then_some(())
        });
    }
    eprintln!("dead agent removed from DNS after {:?}", t.elapsed());
    let (_, stale) = ow1.get("/api/v1/overwatch/backends?status=stale");
    assert_eq!(stale["backends"][0]["address"], "127.0.0.2", "{stale}");
    let (_, stats) = ow1.get("/api/v1/overwatch/stats");
    assert_eq!(
        (
            stats["stale_backends"].as_u64(),
            stats["active_agents"].as_u64(),
            stats["registered_agents"].as_u64()
        ),
        (Some(1), Some(2), Some(3)),
        "{stats}"
    );

    let (_, listed) = ow1.get("/api/v1/overwatch/agents");
    let ids: BTreeSet<String> = listed["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| a["agent_id"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        ids,
        agents.iter().map(|a| a.agent_id.clone()).collect(),
        "intruders never appear"
    );
    assert!(!ids.contains(&wrong_key.agent_id) && !ids.contains(&wrong_token.agent_id));
    let (_, metrics) = http_get(ow1.metrics.expect("metrics"), "/metrics");
    assert!(
        metrics.contains("opengslb_gossip_reports_rejected_total{reason=\"token\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("opengslb_gossip_decrypt_failures_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("opengslb_overwatch_agents_registered 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("opengslb_overwatch_stale_agents 1"),
        "{metrics}"
    );

    // The CLI lists the agents and deletes the dead one's pin.
    let api = format!("http://{}", ow1.api.expect("api"));
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(opengslb_tests::overwatch::cli_binary())
            .args(args)
            .args(["--api", &api])
            .output()
            .expect("cli");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, table, _) = cli(&["agents", "list"]);
    assert_eq!(code, Some(0));
    let dead_row = table
        .lines()
        .find(|l| l.starts_with(&agents[1].agent_id))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(dead_row.contains(" stale "), "{table}");
    assert_eq!(
        table.lines().filter(|l| l.contains(" active ")).count(),
        2,
        "{table}"
    );
    let (code, _, err) = cli(&["agents", "delete", &agents[1].agent_id]);
    assert_eq!(code, Some(1), "a change without a token is refused");
    assert!(err.contains("needs a token"), "{err}");
    let (code, _, err) = cli(&[
        "agents",
        "delete",
        &agents[1].agent_id,
        "--token",
        "not-the-token-0123456789",
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("401") && err.contains("unknown API token"),
        "{err}"
    );
    let with_token = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--token", opengslb_tests::gslb::API_TOKEN]);
        cli(&all)
    };
    let (code, out, err) = with_token(&["agents", "delete", &agents[1].agent_id]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&format!("deleted agent {}", agents[1].agent_id)),
        "{out}"
    );
    let (code, _, err) = with_token(&["agents", "delete", &agents[1].agent_id]);
    assert_eq!(code, Some(1), "a second delete finds nothing");
    assert!(err.contains("404") && err.contains("no agent"), "{err}");
    let (_, table, _) = cli(&["agents", "list"]);
    assert!(!table.contains(&agents[1].agent_id), "{table}");

    // Restart overwatch 2 with its config: it relearns every live agent.
    ow2.process.signal(libc::SIGTERM);
    ow2.process.wait_exit(Duration::from_secs(10));
    let yaml = std::fs::read_to_string(&ow2.config).expect("config");
    let restarted = restart_on(&dir2, &yaml, seeds[1]);
    poll_until(
        Duration::from_secs(15),
        "restarted node relearns the live agents",
        || (answers(&restarted) == set(&["127.0.0.1", "127.0.0.3"])).then_some(()),
    );

    // SIGTERM agent 3: it leaves at once (not after a timeout) and exits 0.
    let mut agents = agents;
    let mut leaving = agents.pop().expect("agent 3"); // the others stay alive (dropping one stops it)
    leaving.process.signal(libc::SIGTERM);
    let t = Instant::now();
    for (name, node) in [
        ("overwatch 1", &ow1),
        ("the restarted overwatch 2", &restarted),
    ] {
        poll_until_explained(
            Duration::from_secs(2),
            &format!("the leaving agent's backend out of {name}'s answers"),
            || {
                let now = answers(node);
                if now == set(&["127.0.0.1"]) {
                    Ok(())
                } else {
                    Err(format!(
                        "{now:?}; its log:\n{}\nthe leaving agent's log:\n{}",
                        node.process.output(),
                        leaving.process.output()
                    ))
                }
            },
        );
    }
    eprintln!("graceful leave left DNS after {:?}", t.elapsed());
    let status = leaving.process.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{}", leaving.process.output());
    drop((ow2, agents));
}

/// Starts a node again on the same gossip port, so agents that know it find it.
/// The registry and pins are replicated state: a node restarted while its agent is gone
/// still knows the agent's pin and its backend, shown stale (out of DNS) until the agent
/// reports again.
#[test]
fn a_restarted_node_remembers_pins_and_backends_as_stale_until_agents_report() {
    let dir = TempDir::new("gslb-remember");
    let key = cluster_key(9);
    let yaml = overwatch_yaml("ow-1", &key, &[]);
    let mut ow = Overwatch::start(&dir, &yaml);
    let backend = Backend::start("127.0.0.1");
    // The same name in the same dir: the same identity files, so the same agent.
    let start_agent = |ow: &Overwatch| {
        AgentDaemon::start(
            &dir,
            "a1",
            backend.addr,
            &[ow.gossip.expect("gossip")],
            &key,
            TOKEN,
        )
    };
    let agent = start_agent(&ow);
    let agent_id = agent.agent_id.clone();
    poll_until(
        Duration::from_secs(15),
        "the agent's backend in DNS",
        || (answers(&ow) == set(&["127.0.0.1"])).then_some(()),
    );
    poll_until(
        Duration::from_secs(5),
        "backend and pin written to the registry",
        || {
            let (_, stats) = ow.get("/api/v1/overwatch/stats");
            (stats["registry_backends"] == 1 && stats["pinned_agents"] == 1).then_some(())
        },
    );

    let mut agent = agent;
    agent.process.signal(libc::SIGKILL);
    agent.process.wait_exit(Duration::from_secs(5));
    ow.process.signal(libc::SIGTERM);
    assert!(ow.process.wait_exit(Duration::from_secs(10)).success());
    drop(ow);

    let ow = Overwatch::start(&dir, &yaml);
    let (_, agents) = ow.get("/api/v1/overwatch/agents");
    assert!(
        agents.to_string().contains(&agent_id),
        "pin restored: {agents}"
    );
    let (_, backends) = ow.get("/api/v1/overwatch/backends");
    let list = backends["backends"].as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 1, "{backends}");
    assert_eq!(list[0]["address"], "127.0.0.1", "{backends}");
    assert_eq!(list[0]["effective_status"], "stale", "{backends}");
    assert_eq!(list[0]["agent_id"], agent_id.as_str(), "{backends}");
    assert!(!answers(&ow).contains("127.0.0.1"));

    // The same agent (same identity files) reports again: healthy and back in DNS.
    let _agent = start_agent(&ow);
    poll_until(
        Duration::from_secs(15),
        "the agent's backend back in DNS",
        || (answers(&ow) == set(&["127.0.0.1"])).then_some(()),
    );
}

fn restart_on(dir: &TempDir, yaml: &str, gossip: std::net::SocketAddr) -> Overwatch {
    let pinned = yaml.replace(
        "bind_address: \"127.0.0.1:0\"",
        &format!("bind_address: \"{gossip}\""),
    );
    poll_until(
        Duration::from_secs(5),
        "the old gossip port to be free",
        || std::net::UdpSocket::bind(gossip).ok().map(drop),
    );
    Overwatch::start(dir, &pinned)
}

/// What the client saw.
#[derive(Debug, Default)]
struct ClientLog {
    ok: u64,
    failed: Vec<String>,
    /// When the cached answer was last fetched, and what it held.
    resolved: Option<(Instant, Vec<std::net::Ipv4Addr>)>,
    per_backend: std::collections::BTreeMap<std::net::Ipv4Addr, u64>,
}

#[test]
fn zero_failed_requests_while_a_backend_is_drained_then_stopped() {
    use opengslb_tests::overwatch::{a_records, query_packet, udp_exchange};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let dir = TempDir::new("gslb-zero");
    let key = cluster_key(9);
    let ow = Overwatch::start(&dir, &overwatch_yaml("ow-1", &key, &[]));
    let seeds = [ow.gossip.expect("gossip")];
    let backends = [Backend::start("127.0.0.1"), Backend::start("127.0.0.2")];
    let agents: Vec<AgentDaemon> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| AgentDaemon::start(&dir, &format!("z{i}"), b.addr, &seeds, &key, TOKEN))
        .collect();
    let both = set(&["127.0.0.1", "127.0.0.2"]);
    poll_until(Duration::from_secs(15), "both backends in DNS", || {
        (answers(&ow) == both).then_some(())
    });

    // The client: resolve through overwatch, keep the answer for its TTL (1 s), send each
    // request to the next cached address. Test backends listen on free ports, so the
    // client maps an answered address to its backend's port (a real client uses :80).
    let ports: std::collections::BTreeMap<std::net::Ipv4Addr, u16> = backends
        .iter()
        .map(|b| match b.addr.ip() {
            std::net::IpAddr::V4(ip) => (ip, b.addr.port()),
            std::net::IpAddr::V6(_) => unreachable!("IPv4 backends"),
        })
        .collect();
    let log = Arc::new(Mutex::new(ClientLog::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (log, stop, dns) = (log.clone(), stop.clone(), ow.dns);
        std::thread::spawn(move || {
            let (mut cached, mut fetched, mut next, mut id) = (
                Vec::new(),
                Instant::now() - Duration::from_secs(10),
                0usize,
                0u16,
            );
            while !stop.load(Ordering::Relaxed) {
                if fetched.elapsed() >= Duration::from_secs(1) || cached.is_empty() {
                    id = id.wrapping_add(1);
                    if let Some(reply) = udp_exchange(
                        dns,
                        &query_packet(id, "app.gslb.test", 1, false),
                        Duration::from_secs(1),
                    ) {
                        cached = a_records(&reply);
                        fetched = Instant::now();
                        log.lock().expect("log").resolved = Some((fetched, cached.clone()));
                    }
                    if cached.is_empty() {
                        log.lock()
                            .expect("log")
                            .failed
                            .push("no answer from DNS".into());
                        continue;
                    }
                }
                next = (next + 1) % cached.len();
                let ip = cached[next];
                let addr = std::net::SocketAddr::from((ip, ports[&ip]));
                let result = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                    .and_then(|mut s| {
                        use std::io::{Read, Write};
                        s.set_read_timeout(Some(Duration::from_secs(2)))?;
                        s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
                        let mut response = String::new();
                        s.read_to_string(&mut response)?;
                        Ok(response)
                    });
                let mut log = log.lock().expect("log");
                match result {
                    Ok(r) if r.starts_with("HTTP/1.1 200") => {
                        log.ok += 1;
                        *log.per_backend.entry(ip).or_default() += 1;
                    }
                    Ok(r) => log
                        .failed
                        .push(format!("{addr}: {}", r.lines().next().unwrap_or(""))),
                    Err(e) => log.failed.push(format!("{addr}: {e}")),
                }
            }
        })
    };
    let requests = || log.lock().expect("log").ok;
    poll_until(Duration::from_secs(5), "the client to be busy", || {
        (requests() > 100).then_some(())
    });

    touch(&agents[0].drain);
    let drained_at = poll_until(Duration::from_secs(3), "127.0.0.1 out of DNS", || {
        (answers(&ow) == set(&["127.0.0.2"])).then(Instant::now)
    });
    // Stop the drained server only once the client's cached answer is one fetched after
    // the drain, i.e. after one TTL: no client still has its address.
    poll_until(
        Duration::from_secs(5),
        "the client's cache to expire past the drain",
        || {
            let log = log.lock().expect("log");
            log.resolved
                .as_ref()
                .filter(|(at, ips)| {
                    *at > drained_at && !ips.contains(&std::net::Ipv4Addr::new(127, 0, 0, 1))
                })
                .map(drop)
        },
    );
    backends[0].stop();
    let before = requests();
    poll_until(
        Duration::from_secs(5),
        "more requests after the stop",
        || (requests() > before + 200).then_some(()),
    );
    stop.store(true, Ordering::Relaxed);
    client.join().expect("client");

    let log = log.lock().expect("log");
    eprintln!(
        "{} requests, {} failed, per backend {:?}",
        log.ok,
        log.failed.len(),
        log.per_backend
    );
    assert!(log.failed.is_empty(), "failed requests: {:?}", log.failed);
    assert!(
        log.per_backend.values().all(|&n| n > 50),
        "both backends served before the drain: {:?}",
        log.per_backend
    );
    drop(agents);
}
