//! Gossip trust, attacked with the built binaries: a host that holds the cluster key (a
//! compromised agent host, often with its service token too) forges reports, pretends to
//! be overwatch, floods registrations, claims latency and backends that are not its own.
//! Nothing it does may change what DNS answers beyond what its own backends may say, and
//! the operator sees each attempt counted by reason and logged at a rate limit.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opengslb_proto::identity::AgentIdentity;
use opengslb_proto::member::{self, GossipSettings, Role, Transport, UdpTransport};
use opengslb_proto::seal::{ClusterKey, Envelope};
use opengslb_proto::status::{Admin, Health};
use opengslb_proto::subnet::Subnet;
use opengslb_proto::wire::{BackendReport, LatencySample, SignedReport, StatusReport};
use opengslb_tests::attacker::Attacker;
use opengslb_tests::gslb::{AgentDaemon, TOKEN, cluster_key, overwatch_yaml};
use opengslb_tests::overwatch::Backend;
use opengslb_tests::overwatch::{Overwatch, a_set};
use opengslb_tests::{TempDir, poll_until};

/// The A records the node answers for the test domain now.
fn answers(node: &Overwatch) -> BTreeSet<Ipv4Addr> {
    a_set(node.dns, "app.gslb.test")
}

/// How many reports the node rejected for `reason`.
fn rejected(node: &Overwatch, reason: &str) -> u64 {
    node.metric(&format!(
        "opengslb_gossip_reports_rejected_total{{reason=\"{reason}\"}}"
    )) as u64
}

/// Polls until the node's log has a line containing `needle`; returns it.
fn log_line(node: &Overwatch, needle: &str) -> String {
    poll_until(Duration::from_secs(5), needle, || {
        node.process
            .output()
            .lines()
            .find(|l| l.contains(needle))
            .map(str::to_owned)
    })
}

/// A node and one honest agent whose backend (127.0.0.1) is in DNS.
struct Victim {
    node: Overwatch,
    gossip: SocketAddr,
    backend: Backend,
    agent: AgentDaemon,
    here: BTreeSet<Ipv4Addr>,
}

impl Victim {
    fn start(dir: &TempDir, key: &str) -> Victim {
        let node = Overwatch::start(dir, &overwatch_yaml("ow-trust", key, &[]));
        let gossip = node.gossip.expect("gossip");
        let backend = Backend::start("127.0.0.1");
        let agent = AgentDaemon::start(dir, "victim", backend.addr, &[gossip], key, TOKEN);
        let here: BTreeSet<Ipv4Addr> = [Ipv4Addr::LOCALHOST].into();
        poll_until(
            Duration::from_secs(10),
            "the victim's backend in DNS",
            || (answers(&node) == here).then_some(()),
        );
        Victim {
            node,
            gossip,
            backend,
            agent,
            here,
        }
    }
}

#[test]
fn forged_reports_with_a_victims_id_change_nothing_and_are_counted() {
    let dir = TempDir::new("trust-forged");
    let key = cluster_key(21);
    let Victim {
        node,
        gossip,
        agent: victim,
        here,
        ..
    } = Victim::start(&dir, &key);

    // The attacker: the cluster key and the service token from a compromised host, its
    // own identity, and the victim's agent id (from its reports or the API).
    let attacker = Attacker::new(&key, gossip);
    let thief = AgentIdentity::generate("eu").expect("identity");
    let claim = StatusReport {
        agent_id: victim.agent_id.clone(),
        region: "eu".into(),
        version: u64::MAX,
        backends: Vec::new(),
        leaving: true,
    };
    // 1. Signed with the attacker's key: the id is not the one its certificate implies.
    let impostor = SignedReport::sign(&claim, &thief, TOKEN).expect("sign");
    // 2. Unsigned: the victim's own certificate is public, the signature is zeros.
    let mut unsigned = impostor.clone();
    unsigned.signature = vec![0; 64];
    for _ in 0..25 {
        attacker.send(&impostor);
        attacker.send(&unsigned);
    }
    poll_until(Duration::from_secs(5), "every forgery counted", || {
        (rejected(&node, "id_mismatch") >= 25 && rejected(&node, "bad_signature") >= 25)
            .then_some(())
    });
    assert_eq!(
        answers(&node),
        here,
        "a forged 'leaving' report with the largest version did not take the backend out"
    );

    // The victim is not silenced: its own drain, at a version far below u64::MAX, is heard.
    std::fs::write(&victim.drain, "").expect("drain");
    poll_until(Duration::from_secs(3), "the victim's drain heard", || {
        answers(&node).is_empty().then_some(())
    });
    std::fs::remove_file(&victim.drain).expect("undrain");
    poll_until(Duration::from_secs(3), "the victim back", || {
        (answers(&node) == here).then_some(())
    });

    // What the operator sees: one warning naming the claimed agent, not one per packet.
    let log = node.process.output();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("dropped a gossip report that does not verify"))
        .collect();
    assert!(
        !warnings.is_empty() && warnings.len() <= 2,
        "50 forgeries logged at a rate limit, not per packet: {warnings:#?}"
    );
    assert!(
        warnings[0].contains(&victim.agent_id),
        "the warning names the claimed agent: {}",
        warnings[0]
    );
}

#[test]
fn reports_without_a_backend_pin_nothing() {
    let dir = TempDir::new("trust-pins");
    let key = cluster_key(22);
    let node = Overwatch::start(&dir, &overwatch_yaml("ow-pins", &key, &[]));
    let gossip = node.gossip.expect("gossip");
    let attacker = Attacker::new(&key, gossip);
    // Each a valid, signed report from a fresh identity, with no backend and no token
    // overwatch knows: before, every one of them was pinned and replicated for good.
    const FLOOD: u64 = 200;
    for i in 0..FLOOD {
        let me = AgentIdentity::generate("eu").expect("identity");
        attacker.report(&me, 1, &[], Admin::Ready, "not-a-token-anyone-knows");
        if i % 50 == 49 {
            // Let the node drain its socket between bursts, as agents' heartbeats would.
            poll_until(Duration::from_secs(5), "the burst handled", || {
                (rejected(&node, "no_service") > i).then_some(())
            });
        }
    }
    poll_until(Duration::from_secs(5), "every report rejected", || {
        (rejected(&node, "no_service") == FLOOD).then_some(())
    });
    let (_, stats) = node.get("/api/v1/overwatch/stats");
    assert_eq!(
        (
            stats["registered_agents"].as_u64(),
            stats["pinned_agents"].as_u64()
        ),
        (Some(0), Some(0)),
        "no token, no pin: {stats}"
    );
    assert_eq!(node.metric("opengslb_overwatch_agents_registered"), 0.0);
}

#[test]
fn new_agents_are_pinned_no_faster_than_the_registration_rate() {
    let dir = TempDir::new("trust-rate");
    let key = cluster_key(23);
    let yaml = overwatch_yaml("ow-rate", &key, &[]).replace(
        "  stale:\n",
        "  agent_registration: {burst: 5, per_second: 0.01}\n  stale:\n",
    );
    let node = Overwatch::start(&dir, &yaml);
    let attacker = Attacker::new(&key, node.gossip.expect("gossip"));
    // The attacker holds the app token: each identity it makes can prove it.
    const FLOOD: u64 = 30;
    for i in 0..FLOOD {
        let me = AgentIdentity::generate("eu").expect("identity");
        attacker.report(&me, 1, &["127.0.0.9"], Admin::Ready, TOKEN);
        if i % 10 == 9 {
            poll_until(Duration::from_secs(5), "the burst handled", || {
                (rejected(&node, "registration_rate") + 5 > i).then_some(())
            });
        }
    }
    poll_until(
        Duration::from_secs(5),
        "every report past the burst refused",
        || (rejected(&node, "registration_rate") == FLOOD - 5).then_some(()),
    );
    // Pins are replicated through Raft: wait for them, then check nothing more came.
    let stats = poll_until(
        Duration::from_secs(5),
        "the burst pinned and replicated",
        || {
            let (_, stats) = node.get("/api/v1/overwatch/stats");
            (stats["pinned_agents"].as_u64() == Some(5)).then_some(stats)
        },
    );
    assert_eq!(
        stats["registered_agents"].as_u64(),
        Some(5),
        "only the burst was pinned: {stats}"
    );
    let line = log_line(&node, "faster than overwatch.agent_registration allows");
    assert!(line.contains("agent report rejected"), "{line}");
    let warnings = node
        .process
        .output()
        .lines()
        .filter(|l| l.contains("agent report rejected"))
        .count();
    assert!(
        warnings <= 2,
        "25 rejections logged at a rate limit: {warnings} lines"
    );
}

#[test]
fn agent_announced_backends_outside_the_services_networks_are_refused() {
    let dir = TempDir::new("trust-nets");
    let key = cluster_key(24);
    let yaml = overwatch_yaml("ow-nets", &key, &[]).replace(
        "  stale:\n",
        "  agent_networks:\n    app: [127.0.0.0/8]\n  stale:\n",
    );
    let node = Overwatch::start(&dir, &yaml);
    let attacker = Attacker::new(&key, node.gossip.expect("gossip"));
    let me = AgentIdentity::generate("eu").expect("identity");
    // Holding the token, it announces an address of its choosing for the service.
    attacker.report(&me, 1, &["203.0.113.66"], Admin::Ready, TOKEN);
    poll_until(Duration::from_secs(5), "the report refused", || {
        (rejected(&node, "network") == 1).then_some(())
    });
    assert!(answers(&node).is_empty(), "203.0.113.66 is not answered");
    let line = log_line(&node, "agent report rejected");
    assert!(
        line.contains(
            "backend 203.0.113.66 of service \"app\" is outside overwatch.agent_networks.app"
        ),
        "{line}"
    );
    // Inside the networks it is an ordinary agent (so the refusal above was the fence).
    attacker.report(&me, 2, &["127.0.0.66"], Admin::Ready, TOKEN);
    let inside: BTreeSet<Ipv4Addr> = ["127.0.0.66".parse().expect("ip")].into();
    poll_until(
        Duration::from_secs(5),
        "the backend inside answered",
        || (answers(&node) == inside).then_some(()),
    );
}

#[test]
fn a_second_agent_cannot_drain_a_backend_another_agent_speaks_for() {
    let dir = TempDir::new("trust-claims");
    let key = cluster_key(25);
    let Victim {
        node,
        gossip,
        backend,
        agent: victim,
        here,
    } = Victim::start(&dir, &key);

    // Another host with the same token registers and says the victim's backend drains.
    let attacker = Attacker::new(&key, gossip);
    let me = AgentIdentity::generate("eu").expect("identity");
    for version in 1..=3 {
        let report = StatusReport {
            agent_id: me.agent_id().into(),
            region: "eu".into(),
            version,
            backends: vec![BackendReport {
                service: "app".into(),
                address: backend.addr.ip(),
                port: backend.addr.port(),
                weight: 100,
                weight_pct: 100,
                admin: Admin::Drain,
                health: Health::Down("attacker".into()),
            }],
            leaving: false,
        };
        attacker.send(&SignedReport::sign(&report, &me, TOKEN).expect("sign"));
    }
    poll_until(Duration::from_secs(5), "the conflict counted", || {
        (node.metric("opengslb_backend_claim_conflicts") == 1.0).then_some(())
    });
    assert_eq!(answers(&node), here, "the victim's backend stays in DNS");
    let (_, list) = node.get("/api/v1/overwatch/backends");
    let entry = &list["backends"][0];
    assert_eq!(
        entry["agent_id"].as_str(),
        Some(victim.agent_id.as_str()),
        "{list}"
    );
    assert_eq!(
        entry["contested_by"][0].as_str(),
        Some(me.agent_id()),
        "{list}"
    );
    let line = log_line(&node, "more than one agent speaks for a backend");
    assert!(line.contains(me.agent_id()), "{line}");

    // The victim's own drain still works.
    std::fs::write(&victim.drain, "").expect("drain");
    poll_until(Duration::from_secs(3), "the victim's drain heard", || {
        answers(&node).is_empty().then_some(())
    });
}

#[test]
fn learned_latency_claims_wider_than_the_configured_prefix_are_refused() {
    let dir = TempDir::new("trust-latency");
    let key = cluster_key(26);
    let yaml = format!(
        "overwatch:\n  agent_tokens: {{app: {TOKEN}}}\n  validation: {{enabled: false}}\n  geolocation: {{default_region: b}}\n  gossip: {{bind_address: \"127.0.0.1:0\", encryption_key: \"{key}\"}}\ndns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [gslb.test]\nregions:\n  - name: a\n    servers: [{{address: 127.0.0.10, service: app}}]\n  - name: b\n    servers: [{{address: 127.0.0.20, service: app}}]\ndomains:\n  - name: lat.gslb.test\n    routing_algorithm: learned_latency\n    services: [app]\n    regions: [a, b]\n    ttl: 1\n    latency_config: {{min_samples: 3}}\napi:\n  address: 127.0.0.1:0\nmetrics:\n  address: 127.0.0.1:0\n"
    );
    let node = Overwatch::start(&dir, &yaml);
    let lat = |node: &Overwatch| a_set(node.dns, "lat.gslb.test");
    let fallback: BTreeSet<Ipv4Addr> = ["127.0.0.20".parse().expect("ip")].into();
    poll_until(
        Duration::from_secs(5),
        "geolocation's default region",
        || (lat(&node) == fallback).then_some(()),
    );

    // A pinned agent of region a (its token, its own backend)...
    let attacker = Attacker::new(&key, node.gossip.expect("gossip"));
    let me = AgentIdentity::generate("a").expect("identity");
    attacker.report(&me, 1, &["127.0.0.10"], Admin::Ready, TOKEN);
    poll_until(Duration::from_secs(5), "the agent pinned", || {
        (node.metric("opengslb_overwatch_agents_registered") == 1.0).then_some(())
    });
    // ...claims every client on the Internet is 1 ms from region a.
    let everyone = LatencySample {
        subnet: Subnet::of(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0, 0),
        rtt_us: 1_000,
        samples: 100,
    };
    attacker.latency(&me, "a", 1, &[everyone]);
    poll_until(Duration::from_secs(5), "the claim refused", || {
        (rejected(&node, "latency_prefix") == 1).then_some(())
    });
    assert_eq!(lat(&node), fallback, "DNS unchanged by the /0 claim");
    assert_eq!(node.metric("opengslb_overwatch_latency_subnets"), 0.0);
    let line = log_line(&node, "wider than overwatch.latency_learning allows");
    assert!(line.contains("0.0.0.0/0"), "{line}");

    // What the agent may claim, its clients' /24, is heard: the bound was the refusal.
    let own = LatencySample {
        subnet: Subnet::of(IpAddr::V4(Ipv4Addr::LOCALHOST), 24, 48),
        rtt_us: 1_000,
        samples: 100,
    };
    attacker.latency(&me, "a", 2, &[own]);
    let near: BTreeSet<Ipv4Addr> = ["127.0.0.10".parse().expect("ip")].into();
    poll_until(Duration::from_secs(5), "the /24 learned", || {
        (lat(&node) == near).then_some(())
    });
}

/// Datagrams received, with their senders.
type Datagrams = Arc<Mutex<Vec<(Vec<u8>, SocketAddr)>>>;

/// A transport that keeps a copy of every datagram it receives.
struct Recording {
    inner: UdpTransport,
    seen: Datagrams,
}

impl Transport for Recording {
    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    async fn send_to(&self, packet: &[u8], to: SocketAddr) -> std::io::Result<()> {
        self.inner.send_to(packet, to).await
    }

    async fn recv_from(&mut self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        let (n, from) = self.inner.recv_from(buf).await?;
        self.seen
            .lock()
            .expect("not poisoned")
            .push((buf[..n].to_vec(), from));
        Ok((n, from))
    }
}

#[test]
fn a_member_claiming_to_be_overwatch_is_sent_no_token_and_no_report() {
    let dir = TempDir::new("trust-pretender");
    let key = cluster_key(27);
    let node = Overwatch::start(&dir, &overwatch_yaml("ow-real", &key, &[]));
    let gossip = node.gossip.expect("gossip");
    let backend = Backend::start("127.0.0.1");
    let agent = AgentDaemon::start(&dir, "honest", backend.addr, &[gossip], &key, TOKEN);
    let here: BTreeSet<Ipv4Addr> = [Ipv4Addr::LOCALHOST].into();
    poll_until(
        Duration::from_secs(10),
        "the agent's backend in DNS",
        || (answers(&node) == here).then_some(()),
    );

    // A host with the cluster key (and another service's token) joins as "overwatch".
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut pretender = runtime.block_on(async {
        let transport = Recording {
            inner: UdpTransport::bind("127.0.0.1:0".parse().expect("addr")).expect("bind"),
            seen: Arc::clone(&seen),
        };
        let addr = transport.local_addr();
        let mut settings = GossipSettings::lan(
            addr,
            vec![gossip],
            vec![ClusterKey::from_base64(Some(&key)).expect("key")],
            Role::Overwatch,
            "ow-evil".into(),
        );
        settings.tokens = BTreeMap::from([("db".to_owned(), "db-token-0123456789x".to_owned())]);
        member::spawn(transport, addr, settings, stop.clone())
    });

    // While it is a member, the agent drains and comes back: reports flow to the real node.
    let agent_log = |needle: &str| agent.process.output().lines().any(|l| l.contains(needle));
    poll_until(
        Duration::from_secs(15),
        "the agent refusing the pretender",
        || agent_log("claims to be overwatch and has not proven it").then_some(()),
    );
    std::fs::write(&agent.drain, "").expect("drain");
    poll_until(Duration::from_secs(3), "the drain heard", || {
        answers(&node).is_empty().then_some(())
    });
    std::fs::remove_file(&agent.drain).expect("undrain");
    poll_until(Duration::from_secs(3), "back in DNS", || {
        (answers(&node) == here).then_some(())
    });

    let reports = runtime.block_on(async {
        let mut reports = 0;
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(200), pretender.events.recv()).await
        {
            if matches!(event, member::Event::Report(_)) {
                reports += 1;
            }
        }
        reports
    });
    assert_eq!(reports, 0, "no report reached the pretender");
    // Everything it was sent, opened with the key it holds: no token anywhere.
    let mut envelope = Envelope::new(
        &ClusterKey::from_base64(Some(&key)).expect("key"),
        Duration::from_secs(600),
    );
    let packets = seen.lock().expect("not poisoned").clone();
    let opened: Vec<Vec<u8>> = packets
        .iter()
        .filter_map(|(p, _)| envelope.open(p, member::now_ms()).ok())
        .collect();
    assert!(
        opened.len() > 5,
        "the pretender was a member and was sent gossip ({} packets)",
        opened.len()
    );
    assert!(
        !opened
            .iter()
            .any(|p| p.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes())),
        "no packet carried the service token"
    );
    assert_eq!(node.metric("opengslb_gossip_overwatch_proven"), 0.0);
    stop.cancel();
}
