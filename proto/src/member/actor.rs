//! The member task: the one owner of the foca instance and the transport.
//!
//! Everything reaches it over a bounded channel of a closed `Command` enum; foca's timers
//! fire from a deadline heap; every packet in or out goes through the `Envelope`.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use foca::{AccumulatingRuntime, Config, Foca, OwnedNotification, PostcardCodec};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::broadcast::{Delivered, Reports};
use super::packet::{self, Kind, MAX_PACKET, now_ms};
use super::timers::Timers;
use super::transport::Transport;
use super::trust::{Proven, Trust};
use super::{Command, Event, GossipSettings, MemberId, Role};
use crate::log_limit::LogLimit;
use crate::seal::{Envelope, OVERHEAD};
use crate::wire::{Ack, Message, MessageV2, SignedLatency, SignedReport};

/// How often members that claim overwatch and have not proven it are challenged again.
const CHALLENGE_EVERY: Duration = Duration::from_secs(2);

pub(crate) struct Member<T> {
    foca: Foca<MemberId, PostcardCodec, rand::rngs::StdRng, Reports>,
    runtime: AccumulatingRuntime<MemberId>,
    envelope: Envelope,
    transport: T,
    events: mpsc::Sender<Event>,
    timers: Timers,
    seeds: Vec<SocketAddr>,
    decrypt_failures: u64,
    failure_log: LogLimit,
    delivered: Delivered,
    trust: Trust,
    /// Sealed trust packets to send at the next flush.
    outbox: Vec<(Vec<u8>, SocketAddr)>,
    /// Our role.
    role: Role,
    /// Overwatch: when each source was last told its packets do not open (bounded).
    notified: std::collections::HashMap<std::net::IpAddr, std::time::Instant>,
}

/// Overwatch tells one source address at most this often that its key is not ours.
const NOTICE_EVERY: Duration = Duration::from_secs(5);
/// Sources remembered for that; past it, the oldest half is forgotten.
const NOTICE_SOURCES: usize = 4096;

impl<T: Transport> Member<T> {
    pub(crate) fn new(
        identity: MemberId,
        settings: &GossipSettings,
        transport: T,
        events: mpsc::Sender<Event>,
    ) -> Member<T> {
        let mut config = Config::new_lan(NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN));
        config.probe_period = settings.probe_period;
        config.probe_rtt = settings.probe_timeout;
        config.suspect_to_down_after = settings.suspect_to_down;
        config.max_packet_size =
            NonZeroUsize::new(MAX_PACKET - OVERHEAD - 1).unwrap_or(NonZeroUsize::MIN);
        // Keep announcing to the seeds: a restarted overwatch relearns every agent quickly.
        config.periodic_announce = Some(foca::PeriodicParams {
            frequency: Duration::from_secs(5),
            num_members: NonZeroUsize::MIN,
        });
        let delivered = Delivered::default();
        let proven = Proven::default();
        let reports = Reports::new(
            settings.role == Role::Overwatch,
            delivered.clone(),
            proven.clone(),
        );
        let rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(
            now_ms() ^ u64::from(std::process::id()) ^ identity.addr.port() as u64,
        );
        Member {
            foca: Foca::with_custom_broadcast(identity, config, rng, PostcardCodec, reports),
            runtime: AccumulatingRuntime::new(),
            envelope: Envelope::with_keys(&settings.keys, settings.replay_window),
            transport,
            events,
            timers: Timers::default(),
            seeds: settings.seeds.clone(),
            decrypt_failures: 0,
            failure_log: LogLimit::every(Duration::from_secs(10)),
            delivered,
            trust: Trust::new(settings.role, settings.tokens.clone(), proven),
            outbox: Vec::new(),
            role: settings.role,
            notified: std::collections::HashMap::new(),
        }
    }

    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
    ) {
        self.announce_to_seeds().await;
        let mut buf = vec![0u8; 65_536];
        let mut reannounce = tokio::time::interval(Duration::from_secs(2));
        let mut rechallenge = tokio::time::interval(CHALLENGE_EVERY);
        loop {
            let next_timer = self.timers.next_deadline();
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
                    Command::Rekey(keys, tokens) => {
                        self.envelope.set_keys(&keys);
                        self.trust.set_tokens(tokens);
                    }
                    Command::Ack(ack) => self.send_ack(&ack).await,
                    Command::Seeds(seeds) => {
                        self.seeds = seeds;
                        self.announce_to_seeds().await;
                    }
                },
                received = self.transport.recv_from(&mut buf) => match received {
                    Ok((n, from)) => self.receive(&buf[..n], from),
                    Err(err) => tracing::debug!(error = %err, "gossip receive failed"),
                },
                () = sleep_until(next_timer) => self.fire_due_timers(),
                _ = reannounce.tick(), if self.foca.num_members() == 0 => self.announce_to_seeds().await,
                _ = rechallenge.tick() => self.challenge_unproven().await,
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
        let bytes = Message::V2(MessageV2::Report(signed)).encode();
        match self.foca.add_broadcast(&bytes) {
            Ok(_) => {}
            Err(foca::Error::DataTooBig) => tracing::warn!(
                bytes = bytes.len(),
                "report too big to gossip; sent directly only"
            ),
            Err(err) => tracing::warn!(error = %err, "cannot disseminate the report"),
        }
        let packet = packet::seal_direct(&self.envelope, &bytes);
        for target in self.overwatch_targets() {
            self.send(&packet, target).await;
        }
    }

    /// Every member proven to be overwatch, and the configured seeds (trusted by
    /// configuration, and the way in before membership converged).
    fn overwatch_targets(&self) -> Vec<SocketAddr> {
        let mut targets: Vec<SocketAddr> = self
            .foca
            .iter_members()
            .filter(|m| self.trust.is_proven(m.id()))
            .map(|m| m.id().addr)
            .collect();
        for seed in &self.seeds {
            if !targets.contains(seed) {
                targets.push(*seed);
            }
        }
        targets
    }

    /// Sends a verdict to the agent member it names; an agent that is not (yet) a member
    /// hears from the next report's verdict.
    async fn send_ack(&mut self, ack: &Ack) {
        let to = self
            .foca
            .iter_members()
            .map(|m| m.id())
            .find(|id| id.role == Role::Agent && id.name == ack.agent_id)
            .map(|id| id.addr);
        let Some(to) = to else {
            tracing::debug!(agent_id = %ack.agent_id, "no member to acknowledge");
            return;
        };
        let message = Message::V2(MessageV2::Ack(ack.clone())).encode();
        let packet = packet::seal(&self.envelope, Kind::Ack, &message);
        self.send(&packet, to).await;
    }

    /// Overwatch: tells a source whose packet did not open that its key is not ours, at
    /// most every [`NOTICE_EVERY`] per address.
    fn notice_key_mismatch(&mut self, from: SocketAddr) {
        if self.role != Role::Overwatch {
            return;
        }
        let now = std::time::Instant::now();
        if self
            .notified
            .get(&from.ip())
            .is_some_and(|at| now.duration_since(*at) < NOTICE_EVERY)
        {
            return;
        }
        if self.notified.len() >= NOTICE_SOURCES {
            let mut times: Vec<std::time::Instant> = self.notified.values().copied().collect();
            times.sort_unstable();
            let cut = times[times.len() / 2];
            self.notified.retain(|_, at| *at > cut);
        }
        self.notified.insert(from.ip(), now);
        self.outbox
            .push((packet::KEY_MISMATCH_NOTICE.to_vec(), from));
    }

    async fn send_latency(&mut self, parts: Vec<SignedLatency>) {
        let targets = self.overwatch_targets();
        for signed in parts {
            let packet = packet::seal_latency(&self.envelope, signed);
            for target in &targets {
                self.send(&packet, *target).await;
            }
        }
    }

    /// A challenge (answered if we can prove it) or a proof (checked).
    fn trust_message(&mut self, data: &[u8], from: SocketAddr) {
        match Message::decode(data) {
            Ok(MessageV2::Challenge(challenge)) => {
                if let Some(proof) = self.trust.answer(&challenge, self.foca.identity()) {
                    let message = Message::V2(MessageV2::Proof(proof)).encode();
                    self.outbox
                        .push((packet::seal(&self.envelope, Kind::Trust, &message), from));
                }
            }
            Ok(MessageV2::Proof(proof)) => {
                self.trust.accept(&proof);
            }
            _ => tracing::debug!(%from, "undecodable trust packet"),
        }
    }

    /// Challenges every member that claims overwatch and has not proven it yet.
    async fn challenge_unproven(&mut self) {
        let claimants: Vec<MemberId> = self
            .foca
            .iter_members()
            .map(|m| m.id().clone())
            .filter(|id| id.role == Role::Overwatch && !self.trust.is_proven(id))
            .collect();
        for member in claimants {
            self.challenge(&member);
        }
        self.flush().await;
    }

    fn challenge(&mut self, member: &MemberId) {
        if let Some(challenge) = self.trust.challenge(member) {
            let message = Message::V2(MessageV2::Challenge(challenge)).encode();
            self.outbox.push((
                packet::seal(&self.envelope, Kind::Trust, &message),
                member.addr,
            ));
        }
    }

    fn receive(&mut self, sealed: &[u8], from: SocketAddr) {
        if sealed == packet::KEY_MISMATCH_NOTICE {
            if self.role == Role::Agent && self.seeds.contains(&from) {
                self.emit(Event::KeyMismatch(from));
            }
            return;
        }
        let payload = match self.envelope.open(sealed, now_ms()) {
            Ok(payload) => payload,
            Err(err) => {
                self.notice_key_mismatch(from);
                self.decrypt_failures += 1;
                metrics::counter!(super::GOSSIP_DECRYPT_FAILURES).increment(1);
                if self.failure_log.ready(std::time::Instant::now()).is_some() {
                    tracing::warn!(%from, error = %err, total = self.decrypt_failures, "dropped a gossip packet that did not open");
                }
                return;
            }
        };
        metrics::counter!(super::GOSSIP_PACKETS, "direction" => "in").increment(1);
        let result = match Kind::split(&payload) {
            Some((Kind::Foca, data)) => self.foca.handle_data(data, &mut self.runtime),
            Some((Kind::Direct, data)) => self.foca.add_broadcast(data).map(drop),
            Some((Kind::Latency, data)) => {
                match Message::decode(data) {
                    Ok(MessageV2::Latency(signed)) => self.emit(Event::Latency(signed)),
                    _ => tracing::debug!(%from, "undecodable latency packet"),
                }
                Ok(())
            }
            Some((Kind::Trust, data)) => {
                self.trust_message(data, from);
                Ok(())
            }
            Some((Kind::Ack, data)) => {
                match Message::decode(data) {
                    Ok(MessageV2::Ack(ack)) if self.role == Role::Agent => {
                        self.emit(Event::Ack(ack, from));
                    }
                    _ => tracing::debug!(%from, "unexpected acknowledgement packet"),
                }
                Ok(())
            }
            None => {
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
        while let Some(timer) = self.timers.pop_due(now) {
            if let Err(err) = self.foca.handle_timer(timer, &mut self.runtime) {
                tracing::debug!(error = %err, "gossip timer");
            }
        }
    }

    /// Sends what foca queued, schedules its timers, and forwards notifications.
    async fn flush(&mut self) {
        while let Some((to, data)) = self.runtime.to_send() {
            let sealed = packet::seal(&self.envelope, Kind::Foca, &data);
            self.send(&sealed, to.addr).await;
        }
        let now = Instant::now();
        while let Some((delay, timer)) = self.runtime.to_schedule() {
            self.timers.schedule(now, delay, timer);
        }
        while let Some(notification) = self.runtime.to_notify() {
            let event = match notification {
                OwnedNotification::MemberUp(id) => {
                    self.challenge(&id);
                    Some(Event::MemberUp(id))
                }
                OwnedNotification::MemberDown(id) => {
                    self.trust.forget(&id);
                    Some(Event::MemberDown(id))
                }
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
        for received in self.delivered.take() {
            self.emit(Event::Report(received));
        }
        for (packet, to) in std::mem::take(&mut self.outbox) {
            self.send(&packet, to).await;
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
        metrics::counter!(super::GOSSIP_PACKETS, "direction" => "out").increment(1);
        if let Err(err) = self.transport.send_to(packet, to).await {
            tracing::debug!(%to, error = %err, "gossip send failed");
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
