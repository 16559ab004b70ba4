//! The gossip member: one task owns a foca instance (SWIM membership) and the UDP socket.
//!
//! Everything reaches the task over a bounded channel of a closed `Command` enum; timers
//! fire in deadline order from a heap; every packet in or out goes through `Envelope`.
//! Reports ride as foca custom broadcasts (newer versions invalidate older ones) and,
//! on each change, are also sent straight to every overwatch member.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use foca::{
    AccumulatingRuntime, BroadcastHandler, Config, Foca, Invalidates, OwnedNotification,
    PostcardCodec, Timer,
};
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::seal::{ClusterKey, Envelope, OVERHEAD};
use super::wire::{
    Message, MessageV1, SignedLatency, SignedReport, StatusReport, WireError, supersedes,
};

/// Largest packet we send: below a 1500-byte Ethernet MTU with IP/UDP headers to spare.
pub const MAX_PACKET: usize = 1400;
/// Packet kinds, the first byte inside the seal.
const KIND_FOCA: u8 = 0;
const KIND_DIRECT: u8 = 1;
/// A signed latency part, sent straight to overwatch members (never gossiped on).
const KIND_LATENCY: u8 = 2;

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
    /// The cluster key.
    pub key: ClusterKey,
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
        key: ClusterKey,
        role: Role,
        name: String,
    ) -> Self {
        GossipSettings {
            bind,
            advertise: None,
            seeds,
            key,
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
}

/// What the member learned (overwatch consumes these).
#[derive(Debug, Clone)]
pub enum Event {
    /// A report newer than any seen before from its agent (not yet verified).
    Report(SignedReport),
    /// A latency part from an agent (not yet verified).
    Latency(SignedLatency),
    /// A member joined or came back.
    MemberUp(MemberId),
    /// A member is down (failed probes, or it left).
    MemberDown(MemberId),
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

/// Binds the socket and starts the member task.
pub async fn start(
    settings: GossipSettings,
    shutdown: CancellationToken,
) -> io::Result<GossipHandle> {
    let socket = bind_udp(settings.bind)?;
    let local = socket.local_addr()?;
    let addr = match settings.advertise {
        Some(addr) => addr,
        None => routable(local, &settings.seeds),
    };
    if addr.ip().is_unspecified() {
        tracing::warn!(%addr, "gossip is bound to all addresses and no seed shows which one others reach; set the advertise address");
    }
    let identity = MemberId {
        addr,
        role: settings.role,
        name: settings.name.clone(),
        bump: now_ms(),
    };
    let (command_tx, command_rx) = mpsc::channel(64);
    let (event_tx, event_rx) = mpsc::channel(4096);
    let member = Member::new(identity.clone(), &settings, socket, event_tx);
    let task = tokio::spawn(member.run(command_rx, shutdown));
    Ok(GossipHandle {
        commands: command_tx,
        events: event_rx,
        identity,
        task,
    })
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

/// Receive buffer asked for: a fleet changing status at once sends one report per agent in
/// the same instant; with Linux's default (~208 KiB, ~100 sealed reports) the kernel drops
/// most of such a burst (measured: 2,450 drops for 1,000 agents), and convergence waits for
/// heartbeats. The kernel caps the request at `net.core.rmem_max`.
const RECEIVE_BUFFER: usize = 4 << 20;

fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if let Err(err) = socket.set_recv_buffer_size(RECEIVE_BUFFER) {
        tracing::warn!(error = %err, "cannot enlarge the gossip receive buffer");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Broadcast key: the newest version of an agent's report invalidates older ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportKey {
    agent_id: String,
    version: u64,
}

impl Invalidates for ReportKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.agent_id == other.agent_id && self.version >= other.version
    }
}

/// Decides which reports are new, and queues those for delivery.
struct Reports {
    latest: HashMap<String, u64>,
    deliver: bool,
    /// foca owns the handler and offers no way back to it, so new reports are handed to
    /// the member task through this queue. Only that task touches it: never contended.
    delivered: Arc<Mutex<Vec<SignedReport>>>,
}

impl BroadcastHandler<MemberId> for Reports {
    type Key = ReportKey;
    type Error = WireError;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&MemberId>,
    ) -> Result<Option<ReportKey>, WireError> {
        let Message::V1(MessageV1::Report(signed)) = Message::decode(data)? else {
            return Err(WireError::Decode("not a status report".into()));
        };
        // Relaying needs only the key; overwatch verifies the signature before applying.
        let report: StatusReport =
            postcard::from_bytes(&signed.report).map_err(|e| WireError::Decode(e.to_string()))?;
        if !supersedes(report.version, self.latest.get(&report.agent_id).copied()) {
            return Ok(None);
        }
        self.latest.insert(report.agent_id.clone(), report.version);
        if self.deliver {
            self.delivered
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(signed);
        }
        Ok(Some(ReportKey {
            agent_id: report.agent_id,
            version: report.version,
        }))
    }

    fn should_add_broadcast_data(&self, member: &MemberId) -> bool {
        // Reports are for overwatch; agents have no use for each other's.
        member.role == Role::Overwatch
    }
}

/// A due foca timer; ordered by deadline, then by submission order.
struct Due {
    at: Instant,
    seq: u64,
    timer: Timer<MemberId>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct Member {
    foca: Foca<MemberId, PostcardCodec, rand::rngs::StdRng, Reports>,
    runtime: AccumulatingRuntime<MemberId>,
    envelope: Envelope,
    socket: UdpSocket,
    events: mpsc::Sender<Event>,
    timers: BinaryHeap<Reverse<Due>>,
    seq: u64,
    seeds: Vec<SocketAddr>,
    decrypt_failures: u64,
    last_failure_log: Option<std::time::Instant>,
    delivered: Arc<Mutex<Vec<SignedReport>>>,
}

impl Member {
    fn new(
        identity: MemberId,
        settings: &GossipSettings,
        socket: UdpSocket,
        events: mpsc::Sender<Event>,
    ) -> Member {
        let mut config = Config::new_lan(NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN));
        config.probe_period = settings.probe_period;
        config.probe_rtt = settings.probe_timeout;
        config.suspect_to_down_after = settings.suspect_to_down;
        config.max_packet_size = std::num::NonZeroUsize::new(MAX_PACKET - OVERHEAD - 1)
            .unwrap_or(std::num::NonZeroUsize::MIN);
        // Keep announcing to the seeds: a restarted overwatch relearns every agent quickly.
        config.periodic_announce = Some(foca::PeriodicParams {
            frequency: Duration::from_secs(5),
            num_members: std::num::NonZeroUsize::MIN,
        });
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let reports = Reports {
            latest: HashMap::new(),
            deliver: settings.role == Role::Overwatch,
            delivered: Arc::clone(&delivered),
        };
        let rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(
            now_ms() ^ u64::from(std::process::id()),
        );
        Member {
            foca: Foca::with_custom_broadcast(identity, config, rng, PostcardCodec, reports),
            runtime: AccumulatingRuntime::new(),
            envelope: Envelope::new(&settings.key, settings.replay_window),
            socket,
            events,
            timers: BinaryHeap::new(),
            seq: 0,
            seeds: settings.seeds.clone(),
            decrypt_failures: 0,
            last_failure_log: None,
            delivered,
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        self.announce_to_seeds().await;
        let mut buf = vec![0u8; 65_536];
        let mut reannounce = tokio::time::interval(Duration::from_secs(2));
        loop {
            let next_timer = self.timers.peek().map(|Reverse(d)| d.at);
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(command) = commands.recv() => match command {
                    Command::Publish(signed) => self.publish(signed).await,
                    Command::Leave(signed) => {
                        self.publish(signed).await;
                        break;
                    }
                    Command::Latency(parts) => self.send_latency(parts).await,
                },
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((n, from)) => self.receive(&buf[..n], from),
                    Err(err) => tracing::debug!(error = %err, "gossip receive failed"),
                },
                () = sleep_until(next_timer) => self.fire_due_timers(),
                _ = reannounce.tick(), if self.foca.num_members() == 0 => self.announce_to_seeds().await,
            }
            self.flush().await;
        }
        // Graceful leave: tell the cluster we are going, so nobody waits for a timeout.
        if let Err(err) = self.foca.leave_cluster(&mut self.runtime) {
            tracing::debug!(error = %err, "leaving the gossip cluster");
        }
        self.flush().await;
    }

    async fn announce_to_seeds(&mut self) {
        for seed in self.seeds.clone() {
            // The seed's real identity is learned from its answer; this one only routes.
            let probe = MemberId {
                addr: seed,
                role: Role::Overwatch,
                name: String::new(),
                bump: 0,
            };
            if let Err(err) = self.foca.announce(probe, &mut self.runtime) {
                tracing::debug!(error = %err, %seed, "announce failed");
            }
        }
        self.flush().await;
    }

    async fn publish(&mut self, signed: SignedReport) {
        let bytes = Message::V1(MessageV1::Report(signed)).encode();
        match self.foca.add_broadcast(&bytes) {
            Ok(_) => {}
            Err(foca::Error::DataTooBig) => tracing::warn!(
                bytes = bytes.len(),
                "report too big to gossip; sent directly only"
            ),
            Err(err) => tracing::warn!(error = %err, "cannot disseminate the report"),
        }
        let packet = seal_direct(&self.envelope, &bytes);
        for target in self.overwatch_targets() {
            self.send(&packet, target).await;
        }
    }

    /// Every overwatch member (and the seeds, before membership converged).
    fn overwatch_targets(&self) -> Vec<SocketAddr> {
        let mut targets: Vec<SocketAddr> = self
            .foca
            .iter_members()
            .filter(|m| m.id().role == Role::Overwatch)
            .map(|m| m.id().addr)
            .collect();
        for seed in &self.seeds {
            if !targets.contains(seed) {
                targets.push(*seed);
            }
        }
        targets
    }

    async fn send_latency(&mut self, parts: Vec<SignedLatency>) {
        let targets = self.overwatch_targets();
        for signed in parts {
            let packet = seal_latency(&self.envelope, signed);
            for target in &targets {
                self.send(&packet, *target).await;
            }
        }
    }

    fn receive(&mut self, packet: &[u8], from: SocketAddr) {
        let payload = match self.envelope.open(packet, now_ms()) {
            Ok(payload) => payload,
            Err(err) => {
                self.decrypt_failures += 1;
                metrics::counter!("opengslb_gossip_decrypt_failures_total").increment(1);
                let now = std::time::Instant::now();
                if self
                    .last_failure_log
                    .is_none_or(|t| now.duration_since(t) > Duration::from_secs(10))
                {
                    tracing::warn!(%from, error = %err, total = self.decrypt_failures, "dropped a gossip packet that did not open");
                    self.last_failure_log = Some(now);
                }
                return;
            }
        };
        metrics::counter!("opengslb_gossip_packets_total", "direction" => "in").increment(1);
        let result = match payload.split_first() {
            Some((&KIND_FOCA, data)) => self.foca.handle_data(data, &mut self.runtime),
            Some((&KIND_DIRECT, data)) => self.foca.add_broadcast(data).map(drop),
            Some((&KIND_LATENCY, data)) => {
                match Message::decode(data) {
                    Ok(Message::V1(MessageV1::Latency(signed))) => {
                        self.emit(Event::Latency(signed));
                    }
                    _ => tracing::debug!(%from, "undecodable latency packet"),
                }
                Ok(())
            }
            _ => {
                tracing::debug!(%from, "unknown gossip packet kind");
                Ok(())
            }
        };
        if let Err(err) = result {
            tracing::debug!(%from, error = %err, "gossip packet not applied");
        }
    }

    fn fire_due_timers(&mut self) {
        let now = Instant::now();
        while self.timers.peek().is_some_and(|Reverse(d)| d.at <= now) {
            if let Some(Reverse(due)) = self.timers.pop() {
                if let Err(err) = self.foca.handle_timer(due.timer, &mut self.runtime) {
                    tracing::debug!(error = %err, "gossip timer");
                }
            }
        }
    }

    /// Sends what foca queued, schedules its timers, and forwards notifications.
    async fn flush(&mut self) {
        while let Some((to, data)) = self.runtime.to_send() {
            let mut payload = Vec::with_capacity(data.len() + 1);
            payload.push(KIND_FOCA);
            payload.extend_from_slice(&data);
            let packet = self.envelope.seal(&payload, now_ms());
            self.send(&packet, to.addr).await;
        }
        let now = Instant::now();
        while let Some((delay, timer)) = self.runtime.to_schedule() {
            self.seq += 1;
            self.timers.push(Reverse(Due {
                at: now + delay,
                seq: self.seq,
                timer,
            }));
        }
        while let Some(notification) = self.runtime.to_notify() {
            let event = match notification {
                OwnedNotification::MemberUp(id) => Some(Event::MemberUp(id)),
                OwnedNotification::MemberDown(id) => Some(Event::MemberDown(id)),
                OwnedNotification::Idle => {
                    tracing::debug!("no gossip members reachable");
                    None
                }
                _ => None,
            };
            if let Some(event) = event {
                self.emit(event);
            }
        }
        let delivered = std::mem::take(
            &mut *self
                .delivered
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for signed in delivered {
            self.emit(Event::Report(signed));
        }
    }

    fn emit(&mut self, event: Event) {
        if self.events.try_send(event).is_err() {
            // The consumer is behind or gone; membership keeps converging without it, and
            // the next periodic report repairs what it missed.
            tracing::debug!("gossip event dropped: consumer is not keeping up");
        }
    }

    async fn send(&self, packet: &[u8], to: SocketAddr) {
        metrics::counter!("opengslb_gossip_packets_total", "direction" => "out").increment(1);
        if let Err(err) = self.socket.send_to(packet, to).await {
            tracing::debug!(%to, error = %err, "gossip send failed");
        }
    }
}

/// Seals one latency part as sent straight to an overwatch node.
pub fn seal_latency(envelope: &Envelope, signed: SignedLatency) -> Vec<u8> {
    let message = Message::V1(MessageV1::Latency(signed)).encode();
    let mut payload = Vec::with_capacity(message.len() + 1);
    payload.push(KIND_LATENCY);
    payload.extend_from_slice(&message);
    envelope.seal(&payload, now_ms())
}

/// A sealed packet carrying one encoded `Message` straight to a member (not through
/// foca): how reports reach overwatch at once.
pub fn seal_direct(envelope: &Envelope, message: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(message.len() + 1);
    payload.push(KIND_DIRECT);
    payload.extend_from_slice(message);
    envelope.seal(&payload, now_ms())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Microseconds since the Unix epoch (report versions).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::identity::AgentIdentity;
    use crate::gossip::wire::VersionClock;

    fn settings(role: Role, name: &str, seeds: Vec<SocketAddr>, key: u8) -> GossipSettings {
        let mut s = GossipSettings::lan(
            "127.0.0.1:0".parse().expect("addr"),
            seeds,
            ClusterKey::from_bytes([key; 32]),
            role,
            name.into(),
        );
        s.probe_period = Duration::from_millis(200);
        s.probe_timeout = Duration::from_millis(100);
        s.suspect_to_down = Duration::from_millis(400);
        s
    }

    /// Starts a member with test timers; panics naming it if it cannot bind.
    async fn member(
        role: Role,
        name: &str,
        seeds: Vec<SocketAddr>,
        key: u8,
        stop: CancellationToken,
    ) -> GossipHandle {
        start(settings(role, name, seeds, key), stop)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn identity(name: &str) -> AgentIdentity {
        let d =
            std::env::temp_dir().join(format!("opengslb-runtime-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        AgentIdentity::load_or_create(&d.join("a.crt"), &d.join("a.key"), "eu").expect("identity")
    }

    fn report(agent: &AgentIdentity, version: u64) -> SignedReport {
        let report = StatusReport {
            agent_id: agent.agent_id().into(),
            region: "eu".into(),
            version,
            backends: Vec::new(),
            leaving: false,
        };
        SignedReport::sign(&report, agent, "token-0123456789abcdef")
    }

    async fn publish(member: &GossipHandle, report: &SignedReport) {
        member
            .commands
            .send(Command::Publish(report.clone()))
            .await
            .expect("publish");
    }

    /// The next report delivered within 2 s.
    async fn next_report(events: &mut mpsc::Receiver<Event>) -> Option<SignedReport> {
        match next_event(events, Duration::from_secs(2), |e| {
            matches!(e, Event::Report(_))
        })
        .await
        {
            Some(Event::Report(r)) => Some(r),
            _ => None,
        }
    }

    /// The next event matching `want`, within `limit`.
    async fn next_event(
        events: &mut mpsc::Receiver<Event>,
        limit: Duration,
        want: impl Fn(&Event) -> bool,
    ) -> Option<Event> {
        tokio::time::timeout(limit, async {
            while let Some(event) = events.recv().await {
                if want(&event) {
                    return Some(event);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }

    #[test]
    fn an_all_addresses_bind_announces_the_address_that_reaches_the_seeds() {
        let any: SocketAddr = "0.0.0.0:7946".parse().expect("addr");
        let seed: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        assert_eq!(
            routable(any, &[seed]),
            "127.0.0.1:7946".parse::<SocketAddr>().expect("addr")
        );
        let bound: SocketAddr = "127.0.0.5:7000".parse().expect("addr");
        assert_eq!(
            routable(bound, &[seed]),
            bound,
            "a specific bind is announced as it is"
        );
        assert_eq!(
            routable(any, &[]),
            any,
            "no seed to tell: unchanged (and a warning)"
        );
    }

    #[tokio::test]
    async fn reports_reach_overwatch_and_a_leaving_agent_is_down_at_once() {
        let shutdown = CancellationToken::new();
        let mut overwatch = member(Role::Overwatch, "ow-1", vec![], 7, shutdown.clone()).await;
        let agent_stop = shutdown.child_token();
        let agent = member(
            Role::Agent,
            "eu-agent",
            vec![overwatch.identity.addr],
            7,
            agent_stop.clone(),
        )
        .await;
        let up = next_event(
            &mut overwatch.events,
            Duration::from_secs(5),
            |e| matches!(e, Event::MemberUp(id) if id.name == "eu-agent"),
        )
        .await;
        assert!(up.is_some(), "the agent joins through its seed");

        let me = identity("reach");
        let mut clock = VersionClock::default();
        let first = report(&me, clock.next(now_us()));
        publish(&agent, &first).await;
        assert_eq!(
            next_report(&mut overwatch.events).await,
            Some(first.clone()),
            "delivered as sent"
        );
        // Sending the same version again delivers nothing new; the newer one arrives.
        publish(&agent, &first).await;
        let newer = report(&me, clock.next(now_us()));
        publish(&agent, &newer).await;
        assert_eq!(
            next_report(&mut overwatch.events).await,
            Some(newer),
            "the duplicate was not delivered"
        );

        let left = std::time::Instant::now();
        agent_stop.cancel();
        agent.task.await.expect("agent task ends after leaving");
        let down = next_event(
            &mut overwatch.events,
            Duration::from_secs(5),
            |e| matches!(e, Event::MemberDown(id) if id.name == "eu-agent"),
        )
        .await;
        assert!(down.is_some(), "a graceful leave is seen");
        assert!(
            left.elapsed() < Duration::from_millis(400),
            "at once, not after the suspicion timeout: {:?}",
            left.elapsed()
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_dead_member_is_detected_and_a_wrong_key_never_joins() {
        let shutdown = CancellationToken::new();
        let mut overwatch = member(Role::Overwatch, "ow-1", vec![], 7, shutdown.clone()).await;
        let stranger = member(
            Role::Agent,
            "stranger",
            vec![overwatch.identity.addr],
            8,
            shutdown.clone(),
        )
        .await;
        let dead = CancellationToken::new();
        let agent = member(
            Role::Agent,
            "mortal",
            vec![overwatch.identity.addr],
            7,
            dead.clone(),
        )
        .await;
        let up = next_event(
            &mut overwatch.events,
            Duration::from_secs(5),
            |e| matches!(e, Event::MemberUp(id) if id.name == "mortal"),
        )
        .await;
        assert!(up.is_some());
        // Kill without leaving: abort the task (no leave message is sent).
        agent.task.abort();
        let died = std::time::Instant::now();
        let down = next_event(
            &mut overwatch.events,
            Duration::from_secs(5),
            |e| matches!(e, Event::MemberDown(id) if id.name == "mortal"),
        )
        .await;
        assert!(down.is_some(), "failed probes declare it down");
        eprintln!("dead member detected after {:?}", died.elapsed());
        // Everything above ran with the stranger knocking with another key.
        let strangers = next_event(
            &mut overwatch.events,
            Duration::from_millis(300),
            |e| matches!(e, Event::MemberUp(id) if id.name == "stranger"),
        )
        .await;
        assert!(
            strangers.is_none(),
            "a member with another key never appears"
        );
        drop(stranger);
        shutdown.cancel();
    }
}
