//! Passive latency learning, on this machine's real TCP stack.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;

use opengslb_agent::latency::collector;

/// `ss -tin` for the established sockets on local `port`: client port → rtt in ms.
fn ss_rtts(port: u16) -> BTreeMap<u16, f64> {
    let out = Command::new("ss")
        .args(["-tinH", "state", "established"])
        .arg(format!("( sport = :{port} )"))
        .output()
        .expect("ss (iproute2)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut rtts = BTreeMap::new();
    let mut peer_port = None;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        // Socket line: Recv-Q Send-Q Local:Port Peer:Port; info line: "... rtt:0.05/0.025 ..."
        if words.len() >= 4 && !line.starts_with(char::is_whitespace) {
            peer_port = words[3]
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok());
        }
        if let Some(rtt) = words.iter().find_map(|w| w.strip_prefix("rtt:")) {
            let ms = rtt.split('/').next().and_then(|v| v.parse::<f64>().ok());
            if let (Some(p), Some(ms)) = (peer_port.take(), ms) {
                rtts.insert(p, ms);
            }
        }
    }
    rtts
}

/// The collector sees exactly the live loopback connections `ss -ti` sees, with the
/// same smoothed RTT.
#[test]
fn collector_rtts_agree_with_ss() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut clients = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..5 {
        let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (mut s, _) = listener.accept().expect("accept");
        // A few round trips so the kernel has RTT samples on the server side.
        for _ in 0..20 {
            s.write_all(b"ping").expect("write");
            let mut buf = [0u8; 4];
            c.read_exact(&mut buf).expect("read");
            c.write_all(b"pong").expect("write");
            s.read_exact(&mut buf).expect("read");
        }
        clients.push(c);
        servers.push(s);
    }
    let client_ports: HashSet<u16> = clients
        .iter()
        .map(|c| c.local_addr().expect("addr").port())
        .collect();

    let found = collector::established(&HashSet::from([port])).expect("sock_diag");
    let expected = ss_rtts(port);
    let seen: HashSet<u16> = found.iter().map(|c| c.peer_port).collect();
    assert_eq!(
        seen, client_ports,
        "the collector sees every client connection, only them"
    );
    assert_eq!(
        expected.keys().copied().collect::<HashSet<u16>>(),
        client_ports,
        "ss sees the same ones"
    );
    for c in &found {
        assert_eq!(c.local_port, port);
        assert_eq!(c.peer.to_string(), "127.0.0.1");
        let ms = c.rtt.as_secs_f64() * 1e3;
        let ss = expected[&c.peer_port];
        // Both read the same idle socket's srtt; ss prints it in ms with 3 decimals.
        assert!(
            (ms - ss).abs() <= 0.002 + ss * 0.01,
            "port {}: collector {ms} ms, ss {ss} ms",
            c.peer_port
        );
    }
}

/// Two client namespaces reach two backends over links that add 20 ms and 120 ms: the
/// agents learn each client subnet's RTT from the kernel, overwatch shows it, and a
/// `learned_latency` domain answers each subnet with its nearer backend.
/// `dig lat.gslb.test A` inside `ns` from `source`, with ECS when given: (A records,
/// dig's output).
fn dig_in(
    ns: &opengslb_tests::netns::Netns,
    dns: std::net::SocketAddr,
    source: &str,
    ecs: Option<&str>,
) -> (Vec<String>, String) {
    let mut args = vec![
        format!("@{}", dns.ip()),
        "-p".into(),
        dns.port().to_string(),
        "-b".into(),
        source.into(),
        "lat.gslb.test".into(),
        "A".into(),
        "+noall".into(),
        "+answer".into(),
        "+comments".into(),
    ];
    if let Some(subnet) = ecs {
        args.push(format!("+subnet={subnet}"));
    }
    let out = ns.command("dig").args(&args).output().expect("dig");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let answers = text
        .lines()
        .filter(|l| !l.starts_with(';') && l.contains("\tA\t"))
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .collect();
    (answers, text)
}

/// `latency-peer get` inside `ns`: (exit success, body).
fn ow_get(
    ns: &opengslb_tests::netns::Netns,
    peer: &std::path::Path,
    api: std::net::SocketAddr,
    path: &str,
) -> (bool, String) {
    let out = ns
        .command(peer)
        .args(["get", &api.to_string(), path])
        .output()
        .expect("latency-peer get");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn learned_latency_routes_each_subnet_to_its_nearer_region() {
    use std::collections::HashMap;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use opengslb_tests::gslb::{TOKEN, cluster_key};
    use opengslb_tests::netns::{Link, Netns, unavailable};
    use opengslb_tests::overwatch::{Overwatch, cli_binary};
    use opengslb_tests::process::Spawned;
    use opengslb_tests::{TempDir, agent_binary, built_binary, poll_until};

    if let Some(reason) = unavailable() {
        eprintln!("SKIPPED learned_latency end to end: {reason}");
        return;
    }
    let srv = Netns::new("srv");
    let c1 = Netns::new("c1");
    let c2 = Netns::new("c2");
    let (near, far) = (Duration::from_millis(20), Duration::from_millis(120));
    let a: Ipv4Addr = "10.100.0.1".parse().expect("ip");
    let b: Ipv4Addr = "10.100.0.2".parse().expect("ip");
    srv.ip(&["addr", "add", "10.100.0.1/32", "dev", "lo"]);
    srv.ip(&["addr", "add", "10.100.0.2/32", "dev", "lo"]);
    let _l1 = Link::new(
        &c1,
        &srv,
        1,
        "10.201.1.2".parse().expect("ip"),
        "10.100.0.0/24",
        HashMap::from([(a, near), (b, far)]),
    );
    let _l2 = Link::new(
        &c2,
        &srv,
        2,
        "10.202.1.2".parse().expect("ip"),
        "10.100.0.0/24",
        HashMap::from([(a, far), (b, near)]),
    );

    let peer = built_binary("latency-peer", "tests");
    let in_ns = |ns: &Netns, name: &str, args: &[&str]| {
        let mut c = ns.command(&peer);
        c.args(args);
        Spawned::start(name, c)
    };
    let _backend_a = in_ns(&srv, "backend a", &["serve", "10.100.0.1:8081"]);
    let _backend_b = in_ns(&srv, "backend b", &["serve", "10.100.0.2:8082"]);

    let dir = TempDir::new("learned-latency");
    let key = cluster_key(3);
    let yaml = format!(
        "overwatch:\n  agent_tokens: {{app: {TOKEN}}}\n  validation: {{enabled: false}}\n  geolocation: {{default_region: b, ecs_enabled: true}}\n  gossip: {{bind_address: \"127.0.0.1:0\", encryption_key: \"{key}\"}}\ndns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [gslb.test]\nregions:\n  - name: a\n  - name: b\ndomains:\n  - name: lat.gslb.test\n    routing_algorithm: learned_latency\n    services: [app]\n    regions: [a, b]\n    latency_config: {{min_samples: 3}}\napi:\n  address: 127.0.0.1:0\nmetrics:\n  address: 127.0.0.1:0\n"
    );
    let mut ow = Overwatch::start_in(&dir, &yaml, Some(&srv.name));
    let gossip = ow.gossip.expect("gossip");
    let agent = |region: &str,
                 ip: Ipv4Addr,
                 port: u16,
                 gossip: std::net::SocketAddr,
                 learn: bool| {
        let config = dir.join(&format!("agent-{region}.yaml"));
        std::fs::write(
            &config,
            format!(
                "identity:\n  service_token: {TOKEN}\n  region: {region}\n  cert_path: {d}/{region}.crt\n  key_path: {d}/{region}.key\nbackends:\n  - {{service: app, address: {ip}, port: {port}}}\ngossip:\n  encryption_key: \"{key}\"\n  overwatch_nodes: [\"{gossip}\"]\n  bind_address: \"127.0.0.1:0\"\nheartbeat:\n  interval: 1s\nlatency_learning:\n  enabled: true\n  poll_interval: 500ms\n  min_connection_age: 1s\n  report_interval: 1s\n  min_samples: 2\n",
                d = dir.path().display()
            )
            .replace("  enabled: true\n", &format!("  enabled: {learn}\n")
            ),
        )
        .expect("agent config");
        let mut c = srv.command(agent_binary());
        c.arg("--config").arg(&config);
        Spawned::start(&format!("agent {region}"), c)
    };
    let agent_a = agent("a", a, 8081, gossip, true);
    let agent_b = agent("b", b, 8082, gossip, true);
    let _clients1 = in_ns(
        &c1,
        "clients 1",
        &["client", "10.100.0.1:8081", "10.100.0.2:8082"],
    );
    let _clients2 = in_ns(
        &c2,
        "clients 2",
        &["client", "10.100.0.1:8081", "10.100.0.2:8082"],
    );

    let api = format!("http://{}", ow.api.expect("api"));
    let table = || -> HashMap<(String, String), f64> {
        let out = srv
            .command(cli_binary())
            .args(["--api", &api, "--json", "latency"])
            .output()
            .expect("cli");
        let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        body["entries"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| {
                (
                    (
                        e["subnet"].as_str().unwrap_or("").to_owned(),
                        e["region"].as_str().unwrap_or("").to_owned(),
                    ),
                    e["rtt_ms"].as_f64().unwrap_or(0.0),
                )
            })
            .collect()
    };
    let expected = [
        ("10.201.1.0/24", "a", 20.0),
        ("10.201.1.0/24", "b", 120.0),
        ("10.202.1.0/24", "a", 120.0),
        ("10.202.1.0/24", "b", 20.0),
    ];
    let learned = poll_until(
        Duration::from_secs(40),
        "both subnets learned in both regions within 20 %",
        || {
            let t = table();
            expected
                .iter()
                .all(|(subnet, region, ms)| {
                    t.get(&((*subnet).to_owned(), (*region).to_owned()))
                        .is_some_and(|rtt| (rtt - ms).abs() <= ms * 0.2)
                })
                .then_some(t)
        },
    );
    eprintln!("learned: {learned:?}");

    let dig_from = |source: &str, ecs: Option<&str>| dig_in(&srv, ow.dns, source, ecs);
    let dig = |subnet: &str| dig_from("127.0.0.1", Some(subnet));
    let (answers, text) = dig("10.201.1.0/24");
    assert_eq!(answers, ["10.100.0.1"], "{text}");
    assert!(
        text.contains("CLIENT-SUBNET: 10.201.1.0/24/24"),
        "scope = the learned prefix: {text}"
    );
    let (answers, text) = dig("10.202.1.0/24");
    assert_eq!(answers, ["10.100.0.2"], "{text}");
    // A subnet nobody learned: geolocation decides (default region b).
    let (answers, text) = dig("10.203.7.0/24");
    assert_eq!(answers, ["10.100.0.2"], "{text}");

    // A resolver (127.0.0.3) whose ECS clients all went to region a is routed like them
    // when it asks without ECS; before that, geolocation decides (region b).
    let (answers, text) = dig_from("127.0.0.3", None);
    assert_eq!(answers, ["10.100.0.2"], "not mapped yet: {text}");
    poll_until(
        Duration::from_secs(15),
        "the resolver mapped to region a",
        || {
            for _ in 0..16 {
                dig_from("127.0.0.3", Some("10.201.1.0/24"));
            }
            (dig_from("127.0.0.3", None).0 == ["10.100.0.1"]).then_some(())
        },
    );

    let (_, metrics) = ow_get(&srv, &peer, ow.metrics.expect("metrics"), "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("opengslb_routing_decisions_total")
                && l.contains("outcome=\"geo_fallback\"")),
        "{metrics}"
    );

    // Learned latency lives in memory: a restarted node with no agent reporting yet has no
    // data, and geolocation answers (region b) even for the subnet that was learned.
    drop((agent_a, agent_b));
    ow.process.signal(libc::SIGTERM);
    assert!(ow.process.wait_exit(Duration::from_secs(10)).success());
    let ow = Overwatch::start_in(&dir, &yaml, Some(&srv.name));
    let gossip = ow.gossip.expect("gossip");
    // The same agents report again, this time without learning latency.
    let _agents = (
        agent("a", a, 8081, gossip, false),
        agent("b", b, 8082, gossip, false),
    );
    let answers = |ecs: &str| dig_in(&srv, ow.dns, "127.0.0.1", Some(ecs)).0;
    poll_until(
        Duration::from_secs(15),
        "both backends healthy again",
        || {
            let (_, body) = ow_get(&srv, &peer, ow.api.expect("api"), "/api/v1/overwatch/stats");
            body.contains("\"healthy_backends\":2").then_some(())
        },
    );
    poll_until(
        Duration::from_secs(5),
        "DNS answering from the new state",
        || (!answers("10.202.1.0/24").is_empty()).then_some(()),
    );
    assert_eq!(
        answers("10.201.1.0/24"),
        ["10.100.0.2"],
        "geo fallback after a restart"
    );
}
