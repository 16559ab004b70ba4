//! Gossip trust, attacked with the built binaries: a host that holds the cluster key (a
//! compromised agent host) forges reports. Nothing unverified may change what DNS
//! answers, and the operator sees each attempt counted by reason and logged at a rate
//! limit.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use opengslb_proto::identity::AgentIdentity;
use opengslb_proto::member::seal_direct;
use opengslb_proto::seal::{ClusterKey, Envelope};
use opengslb_proto::wire::{Message, MessageV2, SignedReport, StatusReport};
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

/// A compromised host: it holds the cluster key, so it can seal whatever it likes and
/// send it straight to a node's gossip port.
struct Attacker {
    envelope: Envelope,
    socket: UdpSocket,
    target: SocketAddr,
}

impl Attacker {
    fn new(key: &str, target: SocketAddr) -> Attacker {
        Attacker {
            envelope: Envelope::new(
                &ClusterKey::from_base64(Some(key)).expect("key"),
                Duration::from_secs(60),
            ),
            socket: UdpSocket::bind("127.0.0.1:0").expect("bind"),
            target,
        }
    }

    fn send(&self, signed: &SignedReport) {
        let message = Message::V2(MessageV2::Report(signed.clone())).encode();
        self.socket
            .send_to(&seal_direct(&self.envelope, &message), self.target)
            .expect("send");
    }
}

#[test]
fn forged_reports_with_a_victims_id_change_nothing_and_are_counted() {
    let dir = TempDir::new("trust-forged");
    let key = cluster_key(21);
    let node = Overwatch::start(&dir, &overwatch_yaml("ow-trust", &key, &[]));
    let gossip = node.gossip.expect("gossip");
    let backend = Backend::start("127.0.0.1");
    let victim = AgentDaemon::start(&dir, "victim", backend.addr, &[gossip], &key, TOKEN);
    let here: BTreeSet<Ipv4Addr> = [Ipv4Addr::LOCALHOST].into();
    poll_until(
        Duration::from_secs(10),
        "the victim's backend in DNS",
        || (answers(&node) == here).then_some(()),
    );

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
        let report = StatusReport {
            agent_id: me.agent_id().into(),
            region: "eu".into(),
            version: 1,
            backends: Vec::new(),
            leaving: false,
        };
        attacker.send(&SignedReport::sign(&report, &me, "not-a-token-anyone-knows").expect("sign"));
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
