//! A compromised host, as the trust tests play it: it holds the cluster key (and often a
//! service token), so it can seal whatever it likes and send it straight to a node.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use opengslb_proto::identity::AgentIdentity;
use opengslb_proto::member::{seal_direct, seal_latency};
use opengslb_proto::seal::{ClusterKey, Envelope};
use opengslb_proto::status::{Admin, Health};
use opengslb_proto::wire::{
    BackendReport, LatencySample, Message, MessageV2, SignedReport, StatusReport, latency_parts,
};

/// A compromised host: it holds the cluster key, so it can seal whatever it likes and
/// send it straight to a node's gossip port.
pub struct Attacker {
    envelope: Envelope,
    socket: UdpSocket,
    target: SocketAddr,
}

impl Attacker {
    /// An attacker sealing with `key` (base64) and sending to `target`.
    pub fn new(key: &str, target: SocketAddr) -> Attacker {
        Attacker {
            envelope: Envelope::new(
                &ClusterKey::from_base64(Some(key)).expect("key"),
                Duration::from_secs(60),
            ),
            socket: UdpSocket::bind("127.0.0.1:0").expect("bind"),
            target,
        }
    }

    /// Sends a signed report, sealed, as a direct gossip packet.
    pub fn send(&self, signed: &SignedReport) {
        let message = Message::V2(MessageV2::Report(signed.clone())).encode();
        self.socket
            .send_to(&seal_direct(&self.envelope, &message), self.target)
            .expect("send");
    }

    /// A report from `me` (its own, valid identity) holding `token`, for `backends` of
    /// service `app` at port 80 with `admin`.
    pub fn report(
        &self,
        me: &AgentIdentity,
        version: u64,
        addresses: &[&str],
        admin: Admin,
        token: &str,
    ) {
        let report = StatusReport {
            agent_id: me.agent_id().into(),
            region: me.agent_id().split('-').next().expect("region").into(),
            version,
            backends: addresses
                .iter()
                .map(|a| BackendReport {
                    service: "app".into(),
                    address: a.parse().expect("ip"),
                    port: 80,
                    weight: 100,
                    weight_pct: 100,
                    admin,
                    health: Health::Up,
                })
                .collect(),
            leaving: false,
        };
        self.send(&SignedReport::sign(&report, me, token).expect("sign"));
    }

    /// Latency parts signed by `me`, sent straight to the node.
    pub fn latency(
        &self,
        me: &AgentIdentity,
        region: &str,
        version: u64,
        samples: &[LatencySample],
    ) {
        for part in latency_parts(samples, me, region, version, true).expect("sign") {
            self.socket
                .send_to(&seal_latency(&self.envelope, part), self.target)
                .expect("send");
        }
    }
}
