//! The gossip member: SWIM membership (foca) plus status reports, over a [`Transport`].
//!
//! `actor` is the task that owns foca and the transport; `broadcast` decides which reports
//! are new and who gets them; `timers` fires foca's timers in deadline order; `packet` is
//! what travels inside a seal; `transport` is UDP in production and an in-memory network
//! in tests (partitions, paused time).

mod actor;
mod broadcast;
pub(crate) mod packet;
mod timers;
pub mod transport;
pub(crate) mod trust;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use broadcast::ReportKey;
pub use packet::{KEY_MISMATCH_NOTICE, MAX_PACKET, now_ms, now_us, seal_direct, seal_latency};
pub use transport::{MemNetwork, MemTransport, Transport, UdpTransport};
pub use trust::{OVERWATCH_PROOFS_FAILED, OVERWATCH_PROVEN};

use crate::seal::ClusterKey;
use crate::wire::{Ack, SignedLatency, SignedReport, VerifiedReport};

/// Sealed gossip packets, by `direction` (in, out); recorded by the member.
pub const GOSSIP_PACKETS: &str = "opengslb_gossip_packets_total";
/// Packets that did not open under the cluster key; recorded by the member.
pub const GOSSIP_DECRYPT_FAILURES: &str = "opengslb_gossip_decrypt_failures_total";
/// Reports rejected, by `reason`: the member counts those that do not decode or verify,
/// overwatch those that verify but may not speak (token, pin).
pub const REPORTS_REJECTED: &str = "opengslb_gossip_reports_rejected_total";

/// What kind of member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// An agent beside an application server.
    Agent,
    /// An overwatch node.
    Overwatch,
}

/// A member's identity in the cluster.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberId {
    /// Where it listens for gossip.
    pub addr: SocketAddr,
    /// Agent or overwatch.
    pub role: Role,
    /// The agent id or overwatch node id.
    pub name: String,
    /// Incarnation: a restarted or renewed member wins over its older self.
    pub bump: u64,
}

impl std::fmt::Debug for MemberId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}:{}@{}", self.role, self.name, self.addr)
    }
}

impl foca::Identity for MemberId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(MemberId {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}

/// How to run the member.
#[derive(Debug, Clone)]
pub struct GossipSettings {
    /// UDP address to bind.
    pub bind: SocketAddr,
    /// Address to announce (default: the bound address; set it when binding 0.0.0.0).
    pub advertise: Option<SocketAddr>,
    /// Overwatch nodes to join through.
    pub seeds: Vec<SocketAddr>,
    /// The cluster keys: the first seals, every one opens (at least one).
    pub keys: Vec<ClusterKey>,
    /// Service → token: an agent's own services, or overwatch's `agent_tokens`. Members
    /// claiming the overwatch role prove a token before they are sent reports.
    pub tokens: BTreeMap<String, String>,
    /// Our role.
    pub role: Role,
    /// Agent id or node id.
    pub name: String,
    /// SWIM probe period (OpenGSLB `probe_interval`, default 1 s).
    pub probe_period: Duration,
    /// Time to wait for a probe's answer (`probe_timeout`, default 500 ms).
    pub probe_timeout: Duration,
    /// A suspect member is declared down after this long.
    pub suspect_to_down: Duration,
    /// Accepted clock difference for sealed packets.
    pub replay_window: Duration,
}

impl GossipSettings {
    /// Defaults for a LAN cluster: a dead member is found within a probe period or two,
    /// then suspected for 1.5 s (indirect probes through other members guard against a
    /// lost packet), so it is declared down within about 4 s (README, "Performance").
    pub fn lan(
        bind: SocketAddr,
        seeds: Vec<SocketAddr>,
        keys: Vec<ClusterKey>,
        role: Role,
        name: String,
    ) -> Self {
        GossipSettings {
            bind,
            advertise: None,
            seeds,
            keys,
            tokens: BTreeMap::new(),
            role,
            name,
            probe_period: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            suspect_to_down: Duration::from_millis(1500),
            replay_window: Duration::from_secs(60),
        }
    }
}

/// Requests to the member.
#[derive(Debug)]
pub enum Command {
    /// Disseminate our (new) report and send it to every overwatch member now.
    Publish(SignedReport),
    /// Send this (leaving) report to every overwatch member, leave the cluster, stop.
    Leave(SignedReport),
    /// Send these latency parts straight to every overwatch member.
    Latency(Vec<SignedLatency>),
    /// New cluster keys (first seals, all open) and service tokens: a reload.
    Rekey(Vec<ClusterKey>, BTreeMap<String, String>),
    /// Overwatch: send this verdict to the agent member it names (if it is a member).
    Ack(Ack),
    /// The seeds' addresses changed (host names resolved again): use these.
    Seeds(Vec<SocketAddr>),
}

/// What the member learned (overwatch consumes these).
#[derive(Debug, Clone)]
pub enum Event {
    /// A report newer than any seen before from its agent, its signature and agent id
    /// verified (not yet its token or pin: that is overwatch's decision).
    Report(VerifiedReport),
    /// A latency part from an agent (not yet verified).
    Latency(SignedLatency),
    /// A member joined or came back.
    MemberUp(MemberId),
    /// A member is down (failed probes, or it left).
    MemberDown(MemberId),
    /// Agent: an overwatch node's verdict on one of our reports, from `from`.
    Ack(Ack, SocketAddr),
    /// Agent: a configured overwatch address could not open our packets (its cluster key
    /// is not one of ours).
    KeyMismatch(SocketAddr),
}

/// The running member.
#[derive(Debug)]
pub struct GossipHandle {
    /// Send commands.
    pub commands: mpsc::Sender<Command>,
    /// Receive events.
    pub events: mpsc::Receiver<Event>,
    /// Our identity (with the address actually bound).
    pub identity: MemberId,
    /// The task; it ends after `shutdown` (having left the cluster).
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds the UDP socket (`settings.bind`) and starts the member task.
pub async fn start(
    settings: GossipSettings,
    shutdown: CancellationToken,
) -> io::Result<GossipHandle> {
    let transport = UdpTransport::bind(settings.bind)?;
    let advertise = settings
        .advertise
        .unwrap_or_else(|| routable(transport.local_addr(), &settings.seeds));
    if advertise.ip().is_unspecified() {
        tracing::warn!(addr = %advertise, "gossip is bound to all addresses and no seed shows which one others reach; set the advertise address");
    }
    Ok(spawn(transport, advertise, settings, shutdown))
}

/// Starts the member task on `transport`, announcing itself at `advertise`.
pub fn spawn<T: Transport>(
    transport: T,
    advertise: SocketAddr,
    settings: GossipSettings,
    shutdown: CancellationToken,
) -> GossipHandle {
    let identity = MemberId {
        addr: advertise,
        role: settings.role,
        name: settings.name.clone(),
        bump: now_ms(),
    };
    let (command_tx, command_rx) = mpsc::channel(64);
    let (event_tx, event_rx) = mpsc::channel(4096);
    let member = actor::Member::new(identity.clone(), &settings, transport, event_tx);
    let task = tokio::spawn(member.run(command_rx, shutdown));
    GossipHandle {
        commands: command_tx,
        events: event_rx,
        identity,
        task,
    }
}

/// The address members should use for us: the bound one, or (when bound to all
/// addresses) the local address the kernel picks to reach the first seed, with our port.
/// Announcing 0.0.0.0 would make every other host talk to itself.
fn routable(local: SocketAddr, seeds: &[SocketAddr]) -> SocketAddr {
    if !local.ip().is_unspecified() {
        return local;
    }
    let picked = seeds.first().and_then(|seed| {
        let probe = std::net::UdpSocket::bind(SocketAddr::new(local.ip(), 0)).ok()?;
        probe.connect(seed).ok()?;
        probe.local_addr().ok()
    });
    picked.map_or(local, |p| SocketAddr::new(p.ip(), local.port()))
}

#[cfg(test)]
mod tests;
