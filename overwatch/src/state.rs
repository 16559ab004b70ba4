//! The one owner of backend state: applies check results, agent reports, membership
//! changes and config reloads, and publishes an immutable `View` whenever something an
//! answer or the API depends on changed.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use opengslb_proto::log_limit::LogLimit;
use opengslb_proto::member::{Event, Role};
use opengslb_proto::wire::{Ack, StatusReport, Verdict};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::health::CheckReport;
use crate::model::admission::{Admitted, AgentBook, Pin, Policy};
use crate::model::check::CheckState;
use crate::model::compute::{self, AgentReport, Inputs};
use crate::model::deadlines::{Deadlines, Due};
use crate::model::geo::GeoDb;
use crate::model::latency::{LatencyIndex, LatencyTable, Merged, ResolverSeen, Resolvers};
use crate::model::machine::{Machine, RequestV1};
use crate::model::status::Effective;
use crate::model::view::{
    BackendKey, BackendView, Change, LastSeen, View, backend_keys, update_last_healthy, wall_ms,
};
use crate::telemetry;

/// How often the cheap periodic duties run: a pending RTT or latency publication, the
/// latency expiry, and (on the leader) a registry proposal. Statuses change on deadlines.
const TICK: Duration = Duration::from_millis(250);
/// How often a changed smoothed RTT alone (no status change) is published.
const RTT_PUBLISH_PERIOD: Duration = Duration::from_secs(1);
/// Recent status changes kept for the status page and the API.
const RECENT_CHANGES: usize = 200;
/// How often expired latency figures are dropped.
const LATENCY_EXPIRY_PERIOD: Duration = Duration::from_secs(60);

/// Readers' handle on the latest view.
pub type ViewRx = watch::Receiver<Arc<View>>;

/// How the owner reaches the Raft cluster without knowing its runtime: the applied state
/// to follow, whether this node leads, and a channel for what the registry lacks. The
/// proposer at the other end (wired in `app`) writes one batch at a time and clears
/// `in_flight` when the write ended, so the next tick sees its result before proposing.
pub struct Replication {
    /// The applied state machine, as it changes.
    pub applied: watch::Receiver<Arc<Machine>>,
    /// Whether this node leads now (a cheap read of Raft's metrics).
    pub leading: Box<dyn Fn() -> bool + Send>,
    /// Set by the owner when it sends a batch, cleared by the proposer when it is written.
    pub in_flight: Arc<std::sync::atomic::AtomicBool>,
    /// Batches of registry changes to write.
    pub proposals: mpsc::Sender<Vec<RequestV1>>,
    /// False while this node, started without data, has not caught up with the cluster.
    pub synced: watch::Receiver<bool>,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication").finish_non_exhaustive()
    }
}

/// Messages to the owner.
#[derive(Debug)]
pub enum Command {
    /// A validated configuration (and its geolocation database) replaces the running one.
    Reload(Arc<Settings>, Option<Arc<GeoDb>>),
    /// Something gossip learned.
    Gossip(Event),
    /// Drop an agent's pin and its backends; answers whether it existed.
    ForgetAgent(String, oneshot::Sender<bool>),
}

/// The owner. `run` is its task.
#[derive(Debug)]
pub struct StateOwner {
    settings: Arc<Settings>,
    geo: Option<Arc<GeoDb>>,
    checks: HashMap<BackendKey, CheckState>,
    book: AgentBook,
    agents: BTreeMap<String, AgentReport>,
    changes: HashMap<BackendKey, (Effective, SystemTime)>,
    last_healthy: HashMap<String, Vec<IpAddr>>,
    generation: u64,
    rtt_dirty: bool,
    last_rtt_publish: Instant,
    tx: watch::Sender<Arc<View>>,
    replication: Option<Replication>,
    replicated: Arc<Machine>,
    expired_agents: std::collections::HashSet<String>,
    started: Instant,
    latency: LatencyTable,
    latency_dirty: bool,
    latency_index: Arc<LatencyIndex>,
    latency_cells: Arc<Vec<Merged>>,
    latency_expired: Instant,
    resolvers: Resolvers,
    observations: Option<mpsc::Receiver<ResolverSeen>>,
    recent: std::collections::VecDeque<Change>,
    /// The board published with the current view; heartbeats refresh it in place.
    seen: Arc<LastSeen>,
    /// When statuses change with no message arriving.
    deadlines: Deadlines,
    /// Where report verdicts go back to agents (with gossip).
    acks: Option<mpsc::Sender<Ack>>,
    /// The view or the replicated state changed since the leader last found the registry
    /// complete: only then is the registry diff worth computing.
    registry_dirty: bool,
    /// Rejected reports are logged at most every 10 s (each is counted).
    rejection_log: LogLimit,
    /// This node holds the cluster's state (see [`Replication::synced`]).
    synced: bool,
    /// Backends several live agents speak for, as last published.
    conflicts: HashMap<BackendKey, Vec<String>>,
    /// New conflicts are logged at most every 10 s (the gauge counts them all).
    conflict_log: LogLimit,
}

impl StateOwner {
    /// An owner for `settings`, with every backend not yet checked; publishes at once.
    pub fn new(settings: Arc<Settings>, geo: Option<Arc<GeoDb>>) -> (StateOwner, ViewRx) {
        // Generation 0 and no backends: what readiness reads as "nothing published yet".
        let placeholder = Arc::new(View {
            backends: Vec::new(),
            last_healthy: HashMap::new(),
            generation: 0,
            ..View::from_config(settings.clone(), geo.clone())
        });
        let (tx, rx) = watch::channel(placeholder);
        let mut owner = StateOwner {
            settings,
            geo,
            checks: HashMap::new(),
            book: AgentBook::default(),
            agents: BTreeMap::new(),
            changes: HashMap::new(),
            last_healthy: HashMap::new(),
            generation: 0,
            rtt_dirty: false,
            last_rtt_publish: Instant::now(),
            tx,
            replication: None,
            replicated: Arc::default(),
            expired_agents: std::collections::HashSet::new(),
            started: Instant::now(),
            latency: LatencyTable::default(),
            latency_dirty: false,
            latency_index: Arc::default(),
            latency_cells: Arc::default(),
            latency_expired: Instant::now(),
            resolvers: Resolvers::default(),
            observations: None,
            recent: std::collections::VecDeque::new(),
            seen: Arc::default(),
            deadlines: Deadlines::default(),
            registry_dirty: true,
            rejection_log: LogLimit::every(Duration::from_secs(10)),
            synced: true,
            conflicts: HashMap::new(),
            conflict_log: LogLimit::every(Duration::from_secs(10)),
            acks: None,
        };
        let forget = owner.started + owner.settings.stale.remove_after;
        owner.deadlines.at(forget, Due::ForgetRemembered);
        owner.sync_checks();
        owner.publish();
        (owner, rx)
    }

    /// Follows the replicated state (overrides, pins, registry) and, while this node
    /// leads, proposes registry transitions and new pins through `replication`.
    pub fn with_replication(mut self, replication: Replication) -> StateOwner {
        let machine = replication.applied.borrow().clone();
        self.synced = *replication.synced.borrow();
        self.replication = Some(replication);
        self.replicate(machine);
        self.publish();
        self
    }

    /// Sends each report's verdict (accepted, or rejected and why) back to its agent
    /// through `acks` (the gossip member's commands).
    pub fn acknowledging(mut self, acks: mpsc::Sender<Ack>) -> StateOwner {
        self.acks = Some(acks);
        self
    }

    /// Tells the agent what became of its report; dropped when the member is behind (the
    /// next report's verdict follows a heartbeat later).
    fn acknowledge(&self, agent_id: &str, version: u64, verdict: Verdict) {
        if let Some(acks) = &self.acks {
            let _ = acks.try_send(Ack {
                node: self.settings.node_id.clone(),
                agent_id: agent_id.to_owned(),
                version,
                verdict,
            });
        }
    }

    /// Also takes in the DNS server's learned decisions per resolver.
    pub fn observing(mut self, observations: mpsc::Receiver<ResolverSeen>) -> StateOwner {
        self.observations = Some(observations);
        self
    }

    /// Applies reports and commands until `shutdown`.
    pub async fn run(
        mut self,
        mut reports: mpsc::Receiver<CheckReport>,
        mut commands: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
    ) {
        let mut machine_rx = self.replication.as_ref().map(|r| r.applied.clone());
        let mut synced_rx = self.replication.as_ref().map(|r| r.synced.clone());
        let mut observations = self.observations.take();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A burst (a thousand agents changing at once, a round of checks) is applied as one
        // batch and published once: publishing rebuilds every backend's view and the DNS
        // snapshot, so once per message would be quadratic in a burst.
        loop {
            let dirty = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                Some(command) = commands.recv() => {
                    let mut dirty = self.command(command);
                    while let Ok(command) = commands.try_recv() {
                        dirty |= self.command(command);
                    }
                    dirty
                }
                Some(report) = reports.recv() => {
                    let mut dirty = self.apply_check(&report);
                    while let Ok(report) = reports.try_recv() {
                        dirty |= self.apply_check(&report);
                    }
                    dirty
                }
                Some(seen) = next_observation(&mut observations) => {
                    self.latency_dirty |= self.resolvers.record(seen.resolver, seen.region, Instant::now());
                    false
                }
                Some(synced) = next_synced(&mut synced_rx) => {
                    let changed = synced != self.synced;
                    self.synced = synced;
                    changed
                }
                Some(machine) = next_machine(&mut machine_rx) => {
                    self.replicate(machine);
                    true
                }
                () = sleep_until(self.deadlines.next()) => {
                    self.expire(Instant::now());
                    false
                }
                _ = tick.tick() => {
                    self.periodic(Instant::now());
                    self.propose();
                    false
                }
            };
            if dirty {
                self.publish();
            }
        }
    }

    /// Applies one command; true when a publication is due.
    fn command(&mut self, command: Command) -> bool {
        match command {
            Command::Reload(settings, geo) => {
                self.settings = settings;
                self.geo = geo;
                // The thresholds may have changed: every agent's deadlines move.
                let (threshold, remove_after) = (
                    self.settings.stale.threshold,
                    self.settings.stale.remove_after,
                );
                for (id, a) in &self.agents {
                    self.deadlines
                        .agent_reported(id, a.received, threshold, remove_after);
                }
                // And when remembered backends are forgotten (a spare deadline is harmless).
                self.deadlines
                    .at(self.started + remove_after, Due::ForgetRemembered);
                self.sync_checks();
                self.latency_dirty = true; // region indexes may have moved
                true
            }
            Command::Gossip(event) => self.gossip(event, Instant::now(), SystemTime::now()),
            Command::ForgetAgent(agent_id, reply) => {
                let existed = self.book.forget(&agent_id);
                let had_backends = self.agents.remove(&agent_id).is_some();
                self.deadlines.forget_agent(&agent_id);
                if existed || had_backends {
                    tracing::info!(%agent_id, "agent forgotten: pin dropped, it may register again");
                    // Published before answering, so the caller's next read sees it gone.
                    self.publish();
                }
                let _ = reply.send(existed);
                false
            }
        }
    }

    /// Applies a gossip event; true when something visible changed.
    fn gossip(&mut self, event: Event, now: Instant, wall: SystemTime) -> bool {
        match event {
            Event::Report(verified) => {
                let claimed = verified.report().agent_id.clone();
                let version = verified.report().version;
                match self.book.admit(verified, &Policy::of(&self.settings), wall) {
                    Ok(Admitted::New(report)) => {
                        self.acknowledge(&report.agent_id, version, Verdict::Accepted);
                        let stale = &self.settings.stale;
                        self.deadlines.agent_reported(
                            &report.agent_id,
                            now,
                            stale.threshold,
                            stale.remove_after,
                        );
                        if self.heartbeat(&report, now, wall) {
                            return false;
                        }
                        if report.leaving {
                            tracing::info!(agent_id = %report.agent_id, "agent left: its backends leave DNS now");
                        }
                        self.agents.insert(
                            report.agent_id.clone(),
                            AgentReport {
                                report,
                                received: now,
                                received_at: wall,
                                member_down: false,
                            },
                        );
                        true
                    }
                    Ok(Admitted::Duplicate) => false,
                    Err(rejection) => {
                        self.acknowledge(
                            &claimed,
                            version,
                            Verdict::Rejected {
                                cause: rejection.cause(),
                                detail: rejection.to_string(),
                            },
                        );
                        metrics::counter!(telemetry::REPORTS_REJECTED, "reason" => rejection.reason()).increment(1);
                        if let Some(skipped) = self.rejection_log.ready(Instant::now()) {
                            tracing::warn!(agent_id = %claimed, reason = %rejection, not_logged_since_last = skipped, "agent report rejected");
                        }
                        false
                    }
                }
            }
            Event::Latency(signed) => {
                self.latency_report(&signed, wall);
                false
            }
            Event::MemberDown(id) if id.role == Role::Agent => {
                self.agents.get_mut(&id.name).is_some_and(|a| {
                    let changed = !a.member_down;
                    a.member_down = true;
                    changed
                })
            }
            Event::MemberUp(id) if id.role == Role::Agent => {
                self.agents.get_mut(&id.name).is_some_and(|a| {
                    let changed = a.member_down;
                    a.member_down = false;
                    changed
                })
            }
            // Agents' business: an overwatch member never emits them.
            Event::MemberUp(_) | Event::MemberDown(_) | Event::Ack(..) | Event::KeyMismatch(_) => {
                false
            }
        }
    }

    /// A report that says what the agent's last one said, from an agent that is neither
    /// stale nor down: only its arrival is new. Refreshes the entry and the last-seen
    /// board in place and returns true; nothing visible changed, so nothing is published.
    fn heartbeat(&mut self, report: &StatusReport, now: Instant, wall: SystemTime) -> bool {
        let threshold = self.settings.stale.threshold;
        let Some(entry) = self.agents.get_mut(&report.agent_id) else {
            return false;
        };
        let unchanged = !entry.member_down
            && now.duration_since(entry.received) <= threshold
            && entry.report.region == report.region
            && entry.report.leaving == report.leaving
            && entry.report.backends == report.backends;
        if !unchanged || !self.seen.touch(&report.agent_id, wall) {
            return false;
        }
        entry.report.version = report.version;
        entry.received = now;
        entry.received_at = wall;
        true
    }

    /// What time alone changes, at `now`: deadlines that fell due (stale, removed,
    /// override ended), then the periodic duties. Publishes when something visible changed.
    pub fn tick(&mut self, now: Instant) {
        self.expire(now);
        self.periodic(now);
    }

    /// Applies the deadlines due at `now`; recomputes the views only if one fell due.
    fn expire(&mut self, now: Instant) {
        let due = self.deadlines.pop_due(now);
        if due.is_empty() {
            return;
        }
        let remove_after = self.settings.stale.remove_after;
        let mut removed = false;
        for what in due {
            let Due::Remove(id) = what else { continue };
            if self
                .agents
                .get(&id)
                .is_some_and(|a| now.duration_since(a.received) >= remove_after)
            {
                tracing::info!(agent_id = %id, "agent removed after remove_after without a report");
                self.agents.remove(&id);
                self.expired_agents.insert(id);
                removed = true;
            }
        }
        let views = self.compute(now);
        let status_changed = views.iter().any(|b| {
            self.changes
                .get(&b.key)
                .is_none_or(|(e, _)| *e != b.effective)
        });
        if removed || status_changed {
            self.publish_views(views);
        }
    }

    /// The cheap periodic duties: latency expiry, and a pending RTT or latency
    /// publication at most once per [`RTT_PUBLISH_PERIOD`].
    fn periodic(&mut self, now: Instant) {
        if now.duration_since(self.latency_expired) >= LATENCY_EXPIRY_PERIOD {
            self.latency_expired = now;
            let before = self.latency.len();
            let pins = self.book.pins();
            self.latency
                .expire(SystemTime::now(), &|id: &str| pins.contains_key(id));
            self.latency_dirty |= self.latency.len() != before;
            self.latency_dirty |= self.resolvers.expire(now);
        }
        let rtt_due = (self.rtt_dirty || self.latency_dirty)
            && self.last_rtt_publish.elapsed() >= RTT_PUBLISH_PERIOD;
        if rtt_due {
            self.publish();
        }
    }

    /// Takes in a latency part if it verifies against the agent's pinned certificate.
    fn latency_report(&mut self, signed: &opengslb_proto::wire::SignedLatency, wall: SystemTime) {
        let verified = signed.claimed_agent().ok().and_then(|agent_id| {
            let pin = self.book.pins().get(&agent_id)?;
            let report = signed.open(&pin.certificate).ok()?;
            (report.region == pin.region).then_some((agent_id, report))
        });
        let Some((agent_id, report)) = verified else {
            metrics::counter!(telemetry::REPORTS_REJECTED, "reason" => "latency_unverified")
                .increment(1);
            return;
        };
        // An agent measures its own clients at its own prefix length: a shorter prefix
        // (0.0.0.0/0 at the extreme) would speak for clients it never saw.
        let bound = self.settings.latency_prefixes;
        if let Some(wide) = report.samples.iter().find(|s| {
            s.subnet.prefix
                < if s.subnet.addr.is_ipv4() {
                    bound.ipv4
                } else {
                    bound.ipv6
                }
        }) {
            metrics::counter!(telemetry::REPORTS_REJECTED, "reason" => "latency_prefix")
                .increment(1);
            if let Some(skipped) = self.rejection_log.ready(Instant::now()) {
                tracing::warn!(%agent_id, subnet = %wide.subnet, ipv4_prefix = bound.ipv4, ipv6_prefix = bound.ipv6, not_logged_since_last = skipped, "latency report rejected: a subnet is wider than overwatch.latency_learning allows");
            }
            return;
        }
        self.latency.apply(&agent_id, &report, wall);
        self.latency_dirty = true;
        metrics::gauge!(telemetry::LATENCY_SUBNETS).set(self.latency.len() as f64);
    }

    /// Applies one check result; true when the verdict of the check changed.
    pub fn apply_check(&mut self, report: &CheckReport) -> bool {
        let Some(region) = self
            .settings
            .regions
            .iter()
            .find(|r| r.name == report.key.region)
        else {
            return false;
        };
        let Some(check) = &region.check else {
            return false;
        };
        let Some(state) = self.checks.get_mut(&report.key) else {
            return false;
        };
        self.rtt_dirty |= report.outcome.is_ok();
        state.record(&report.outcome, check.rise, check.fall, report.at)
    }

    /// Keeps check state of backends still configured; new ones start unchecked.
    fn sync_checks(&mut self) {
        let mut next = HashMap::new();
        for (_, key, _) in backend_keys(&self.settings) {
            let state = self.checks.remove(&key).unwrap_or_default();
            next.insert(key, state);
        }
        self.checks = next;
    }

    /// What [`compute::backends`] reads, borrowed from the owner.
    fn inputs(&self, now: Instant) -> Inputs<'_> {
        Inputs {
            settings: &self.settings,
            checks: &self.checks,
            agents: &self.agents,
            replicated: &self.replicated,
            pins: self.book.pins(),
            expired_agents: &self.expired_agents,
            changes: &self.changes,
            forget_remembered: now.duration_since(self.started) >= self.settings.stale.remove_after,
        }
    }

    /// Every backend with its layers, at `now`.
    fn compute(&self, now: Instant) -> Vec<BackendView> {
        compute::backends(&self.inputs(now), now, SystemTime::now())
    }

    /// What the leader must write so the registry and pins match `views`.
    fn registry_changes(&self, views: &[BackendView]) -> Vec<RequestV1> {
        compute::registry_changes(&self.replicated, self.book.pins(), views)
    }

    /// Takes in a newly applied replicated state: pins follow it (a revoked pin is dropped
    /// with its agent's backends; a pin held only here waits for the leader to write it).
    fn replicate(&mut self, machine: Arc<Machine>) {
        for (agent_id, record) in &machine.pins {
            let replace = self
                .book
                .pins()
                .get(agent_id)
                .is_none_or(|p| p.fingerprint != record.fingerprint);
            if replace {
                if self.book.pins().contains_key(agent_id) {
                    tracing::warn!(%agent_id, "the cluster pinned this agent to another certificate: its reports here are dropped");
                    self.agents.remove(agent_id);
                }
                self.book.insert(
                    agent_id.clone(),
                    Pin {
                        fingerprint: record.fingerprint.clone(),
                        region: record.region.clone(),
                        services: record.services.clone(),
                        pinned_at: SystemTime::UNIX_EPOCH
                            + Duration::from_millis(record.pinned_at_ms),
                        version: 0,
                        certificate: Vec::new(),
                    },
                );
            }
        }
        // Pinned in the state replaced now, gone from the new one: revoked.
        let revoked: Vec<String> = self
            .replicated
            .pins
            .keys()
            .filter(|id| !machine.pins.contains_key(*id))
            .cloned()
            .collect();
        for agent_id in revoked {
            if self.book.forget(&agent_id) | self.agents.remove(&agent_id).is_some() {
                tracing::info!(%agent_id, "agent pin revoked: it may register again");
            }
        }
        self.expired_agents.retain(|id| {
            machine
                .backends
                .values()
                .any(|b| b.agent_id.as_deref() == Some(id))
        });
        self.replicated = machine;
        self.registry_dirty = true;
        self.schedule_override_ends();
    }

    /// Deadlines at which the replicated overrides in force end.
    fn schedule_override_ends(&mut self) {
        let (now, wall) = (Instant::now(), wall_ms(SystemTime::now()));
        let ends: Vec<Instant> = self
            .replicated
            .overrides
            .values()
            .filter_map(|o| o.expires_at_ms.filter(|end| *end > wall))
            .map(|end| now + Duration::from_millis(end - wall))
            .collect();
        self.deadlines.overrides_end(ends);
    }

    /// While this node leads: writes what the replicated state lacks (new pins, status
    /// transitions, backends gone). One proposal at a time; the next tick sees its result.
    fn propose(&mut self) {
        use std::sync::atomic::Ordering;
        let Some(replication) = &self.replication else {
            return;
        };
        if !self.registry_dirty
            || !(replication.leading)()
            || replication.in_flight.load(Ordering::Acquire)
        {
            return;
        }
        let changes = self.registry_changes(&self.tx.borrow().backends);
        if changes.is_empty() {
            // Nothing to write until the view or the replicated state changes again.
            self.registry_dirty = false;
            return;
        }
        replication.in_flight.store(true, Ordering::Release);
        if replication.proposals.try_send(changes).is_err() {
            // The proposer is gone (shutting down): nothing will clear the flag.
            tracing::debug!("registry proposal not sent: the proposer stopped");
        }
    }

    fn publish(&mut self) {
        let views = self.compute(Instant::now());
        self.publish_views(views);
    }

    /// Warns about a backend that another live agent now also speaks for.
    fn log_new_conflicts(&mut self, backends: &[BackendView]) {
        let now: HashMap<BackendKey, Vec<String>> = backends
            .iter()
            .filter_map(|b| {
                let agent = b.agent.as_ref().filter(|a| !a.contested_by.is_empty())?;
                Some((b.key.clone(), agent.contested_by.clone()))
            })
            .collect();
        for (key, others) in &now {
            if self.conflicts.get(key) == Some(others) {
                continue;
            }
            if let Some(skipped) = self.conflict_log.ready(Instant::now()) {
                let believed = backends
                    .iter()
                    .find(|b| &b.key == key)
                    .and_then(|b| b.agent.as_ref())
                    .map(|a| a.agent_id.clone());
                tracing::warn!(backend = %crate::model::view::display_key(key), believed = ?believed, also_claimed_by = ?others, not_logged_since_last = skipped, "more than one agent speaks for a backend; the agent pinned first is believed");
            }
        }
        self.conflicts = now;
    }

    /// Publishes views already computed (the tick computes them to see whether to publish).
    fn publish_views(&mut self, backends: Vec<BackendView>) {
        self.generation += 1;
        self.registry_dirty = true;
        self.rtt_dirty = false;
        if self.latency_dirty {
            self.latency_dirty = false;
            let cells = self.latency.merged();
            let regions = &self.settings.regions;
            self.latency_index = Arc::new(
                LatencyIndex::build(&cells, &|name: &str| {
                    regions.iter().position(|r| r.name == name)
                })
                .with_resolvers(self.resolvers.mapped()),
            );
            self.latency_cells = Arc::new(cells);
        }
        self.last_rtt_publish = Instant::now();
        let wall = SystemTime::now();
        let (changes, news) = compute::status_changes(&self.changes, &backends, wall);
        self.changes = changes;
        for change in news {
            tracing::info!(backend = %change.backend, status = change.to, reason = %change.reason, "backend status changed");
            self.recent.push_front(change);
        }
        self.recent.truncate(RECENT_CHANGES);
        update_last_healthy(&mut self.last_healthy, &self.settings, &backends);
        let agents = compute::agent_views(
            self.book.pins(),
            &self.agents,
            Instant::now(),
            self.settings.stale.threshold,
        );
        self.log_new_conflicts(&backends);
        telemetry::record_view(
            &self.settings,
            &backends,
            &agents,
            self.replicated.active_overrides(wall_ms(wall)).count(),
        );
        self.seen = Arc::new(LastSeen::new(
            self.agents
                .iter()
                .map(|(id, a)| (id.as_str(), a.received_at)),
        ));
        self.tx.send_replace(Arc::new(View {
            settings: self.settings.clone(),
            geo: self.geo.clone(),
            backends,
            agents,
            last_healthy: self.last_healthy.clone(),
            generation: self.generation,
            replicated: self.replicated.clone(),
            latency: self.latency_index.clone(),
            latency_cells: self.latency_cells.clone(),
            recent: Arc::new(self.recent.iter().cloned().collect()),
            seen: Arc::clone(&self.seen),
            synced: self.synced,
        }));
    }
}

/// Sleeps until `at`; never resolves without a deadline.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Waits for the next change of the synced flag; never resolves without a cluster.
async fn next_synced(rx: &mut Option<watch::Receiver<bool>>) -> Option<bool> {
    match rx {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(*rx.borrow_and_update()),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Waits for the next applied replicated state; never resolves without a cluster.
async fn next_machine(rx: &mut Option<watch::Receiver<Arc<Machine>>>) -> Option<Arc<Machine>> {
    match rx {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(rx.borrow_and_update().clone()),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Waits for the next DNS observation; never resolves without an observer.
async fn next_observation(rx: &mut Option<mpsc::Receiver<ResolverSeen>>) -> Option<ResolverSeen> {
    match rx {
        Some(rx) => match rx.recv().await {
            Some(seen) => Some(seen),
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::machine::{Override, OverrideKey};
    use opengslb_proto::identity::AgentIdentity;
    use opengslb_proto::member::MemberId;
    use opengslb_proto::status::{Admin, Health};
    use opengslb_proto::wire::{BackendReport, ReceivedReport, SignedReport};

    const TOKEN: &str = "app-token-0123456789";

    fn owner() -> StateOwner {
        let yaml = format!(
            "overwatch:\n  agent_tokens: {{app: {TOKEN}}}\n  gossip: {{bind_address: \"127.0.0.1:0\", encryption_key: \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\"}}\n  stale: {{threshold: 10s, remove_after: 60s}}\ndns:\n  zones: [t.test]\nregions:\n  - name: eu\ndomains:\n  - {{name: app.t.test, routing_algorithm: round-robin, regions: [eu]}}\n"
        );
        let settings =
            Arc::new(crate::config::parse("t.yaml", &yaml).unwrap_or_else(|e| panic!("{e}")));
        StateOwner::new(settings, None).0
    }

    fn agent() -> AgentIdentity {
        AgentIdentity::generate("eu").expect("identity")
    }

    fn report(agent: &AgentIdentity, version: u64, admin: Admin, leaving: bool) -> Event {
        let backends = vec![BackendReport {
            service: "app".into(),
            address: "10.0.0.1".parse().expect("ip"),
            port: 80,
            weight: 100,
            weight_pct: 50,
            admin,
            health: Health::Up,
        }];
        let r = StatusReport {
            agent_id: agent.agent_id().into(),
            region: "eu".into(),
            version,
            backends,
            leaving,
        };
        Event::Report(
            ReceivedReport::decode(SignedReport::sign(&r, agent, TOKEN).expect("sign"))
                .and_then(ReceivedReport::verify)
                .expect("verifies"),
        )
    }

    fn member(agent: &AgentIdentity) -> MemberId {
        MemberId {
            addr: "127.0.0.1:1".parse().expect("addr"),
            role: Role::Agent,
            name: agent.agent_id().into(),
            bump: 0,
        }
    }

    fn status(owner: &StateOwner, at: Instant) -> Vec<(Effective, u32)> {
        owner
            .compute(at)
            .iter()
            .map(|b| (b.effective, b.weight))
            .collect()
    }

    #[test]
    fn a_heartbeat_that_changes_nothing_publishes_nothing_but_is_seen() {
        let (mut o, a, t0, wall) = (owner(), agent(), Instant::now(), SystemTime::now());
        assert!(o.gossip(report(&a, 1, Admin::Ready, false), t0, wall));
        o.publish();
        let generation = o.tx.borrow().generation;
        let (t1, wall1) = (t0 + Duration::from_secs(8), wall + Duration::from_secs(8));
        assert!(
            !o.gossip(report(&a, 2, Admin::Ready, false), t1, wall1),
            "the same backends at a newer version: nothing visible changed"
        );
        let view = o.tx.borrow().clone();
        assert_eq!(view.generation, generation, "no new view was published");
        assert_eq!(
            view.seen.get(a.agent_id()).map(wall_ms),
            Some(wall_ms(wall1)),
            "the published view shows the heartbeat's arrival all the same"
        );
        assert_eq!(
            status(&o, t0 + Duration::from_secs(15)),
            [(Effective::Healthy, 50)],
            "the heartbeat keeps the agent fresh past the first report's threshold"
        );
        assert!(
            o.gossip(
                report(&a, 3, Admin::Ready, false),
                t1 + Duration::from_secs(11),
                wall1
            ),
            "a report that revives a stale agent is visible"
        );
        assert!(
            o.gossip(
                report(&a, 4, Admin::Drain, false),
                t1 + Duration::from_secs(11),
                wall1
            ),
            "a drain is visible"
        );
    }

    #[test]
    fn a_second_agent_speaking_for_a_backend_is_a_conflict_and_the_first_keeps_it() {
        let (mut o, first, t0, wall) = (owner(), agent(), Instant::now(), SystemTime::now());
        let second = agent();
        assert!(o.gossip(report(&first, 1, Admin::Ready, false), t0, wall));
        // Pinned later, with the same token: it says the first agent's backend drains.
        let later = wall + Duration::from_secs(1);
        assert!(o.gossip(report(&second, 1, Admin::Drain, false), t0, later));
        let views = o.compute(t0);
        assert_eq!(views.len(), 1, "one backend, not one per claimant");
        let layer = views[0].agent.as_ref().expect("an agent layer");
        assert_eq!(
            (layer.agent_id.as_str(), views[0].effective),
            (first.agent_id(), Effective::Healthy),
            "the agent pinned first is believed; the newer report does not win"
        );
        assert_eq!(layer.contested_by, [second.agent_id().to_owned()]);
        // Once the first leaves, the second speaks for the backend and nobody contests.
        assert!(o.gossip(report(&first, 2, Admin::Ready, true), t0, wall));
        let views = o.compute(t0);
        let layer = views[0].agent.as_ref().expect("an agent layer");
        assert_eq!(
            (layer.agent_id.as_str(), views[0].effective),
            (second.agent_id(), Effective::Draining)
        );
        assert!(layer.contested_by.is_empty());
    }

    #[test]
    fn a_view_republished_without_a_dns_change_needs_no_new_snapshot() {
        use crate::dns::DnsSnapshot;
        let (mut o, a, t0, wall) = (owner(), agent(), Instant::now(), SystemTime::now());
        o.gossip(report(&a, 1, Admin::Ready, false), t0, wall);
        o.publish();
        let first = o.tx.borrow().clone();
        // What the same transition coming back through Raft does: publish again.
        o.publish();
        let again = o.tx.borrow().clone();
        assert!(again.generation > first.generation);
        assert!(DnsSnapshot::same_inputs(&first, &again));
        o.gossip(report(&a, 2, Admin::Drain, false), t0, wall);
        o.publish();
        let drained = o.tx.borrow().clone();
        assert!(
            !DnsSnapshot::same_inputs(&again, &drained),
            "a backend leaving rotation changes the answers"
        );
    }

    #[test]
    fn agent_backends_go_stale_drain_and_leave_the_registry_on_time() {
        let (mut o, a, t0, wall) = (owner(), agent(), Instant::now(), SystemTime::now());
        assert!(o.gossip(report(&a, 1, Admin::Ready, false), t0, wall));
        assert_eq!(
            status(&o, t0),
            [(Effective::Healthy, 50)],
            "in rotation, weight scaled by the CPU percentage"
        );
        assert_eq!(
            status(&o, t0 + Duration::from_secs(9)),
            [(Effective::Healthy, 50)]
        );
        assert_eq!(
            status(&o, t0 + Duration::from_secs(11)),
            [(Effective::Stale, 50)],
            "no report within the threshold"
        );
        assert!(o.gossip(Event::MemberDown(member(&a)), t0, wall));
        assert_eq!(
            status(&o, t0),
            [(Effective::Stale, 50)],
            "gossip says down: stale at once"
        );
        assert!(o.gossip(Event::MemberUp(member(&a)), t0, wall));
        assert_eq!(status(&o, t0), [(Effective::Healthy, 50)]);
        assert!(
            !o.gossip(report(&a, 1, Admin::Drain, false), t0, wall),
            "the same version again changes nothing"
        );
        assert!(o.gossip(report(&a, 2, Admin::Drain, false), t0, wall));
        assert_eq!(status(&o, t0)[0].0, Effective::Draining);
        assert!(o.gossip(report(&a, 3, Admin::Ready, true), t0, wall));
        assert_eq!(
            status(&o, t0)[0].0,
            Effective::Draining,
            "a leaving agent's backends are out at once"
        );
        o.tick(t0 + Duration::from_secs(61));
        assert!(
            status(&o, t0 + Duration::from_secs(61)).is_empty(),
            "gone after remove_after"
        );
        assert_eq!(o.book.pins().len(), 1, "the pin stays until deleted");
    }

    /// Replicated state reaches the owner: an override outranks the agent; the pin the
    /// leader must write, then the registry transitions, come out of `registry_changes`
    /// until the replicated state holds them; a revoked pin drops the agent here too.
    #[test]
    fn overrides_outrank_agents_and_the_registry_follows_the_view() {
        let (mut o, a, t0, wall) = (owner(), agent(), Instant::now(), SystemTime::now());
        assert!(o.gossip(report(&a, 1, Admin::Ready, false), t0, wall));
        let mut machine = Machine::default();
        let changes = o.registry_changes(&o.compute(t0));
        assert!(
            matches!(&changes[..], [RequestV1::PinAgent { agent_id, .. }, RequestV1::RecordBackend { record, .. }]
                if agent_id == a.agent_id() && record.status == "healthy"),
            "{changes:?}"
        );
        for change in changes {
            machine.apply(&crate::model::machine::Request::V1(change));
        }
        o.replicate(Arc::new(machine.clone()));
        assert!(
            o.registry_changes(&o.compute(t0)).is_empty(),
            "nothing left to write"
        );

        let key = OverrideKey {
            service: "app".into(),
            address: "10.0.0.1:80".parse().expect("addr"),
        };
        let forced_out = Override {
            healthy: false,
            reason: "disk".into(),
            author: "ops".into(),
            set_at_ms: wall_ms(wall),
            expires_at_ms: Some(wall_ms(wall) + 60_000),
        };
        machine.apply(&crate::model::machine::Request::V1(
            RequestV1::SetOverride {
                key: key.clone(),
                value: forced_out.clone(),
            },
        ));
        o.replicate(Arc::new(machine.clone()));
        let view = &o.compute(t0)[0];
        assert_eq!(
            view.effective,
            Effective::Unhealthy,
            "the agent says up; the operator wins"
        );
        assert_eq!(view.reason, "operator override: disk (by ops)");
        let transition = o.registry_changes(&o.compute(t0));
        assert!(
            matches!(&transition[..], [RequestV1::RecordBackend { record, .. }] if record.status == "unhealthy"),
            "{transition:?}"
        );

        // An expired override no longer applies.
        let mut expired = machine.clone();
        expired.overrides.insert(
            key,
            Override {
                expires_at_ms: Some(1),
                ..forced_out
            },
        );
        o.replicate(Arc::new(expired));
        assert_eq!(o.compute(t0)[0].effective, Effective::Healthy);

        // The pin is revoked cluster-wide: this node forgets the agent and its backend.
        machine.apply(&crate::model::machine::Request::V1(
            RequestV1::RevokeAgent {
                agent_id: a.agent_id().into(),
            },
        ));
        o.replicate(Arc::new(machine));
        assert!(o.book.pins().is_empty());
        assert!(o.agents.is_empty());
        assert!(o.compute(t0).is_empty(), "not even remembered");
        assert!(
            matches!(
                &o.registry_changes(&o.compute(t0))[..],
                [RequestV1::RemoveBackend { .. }]
            ),
            "the leader removes it from the registry"
        );
    }
}
