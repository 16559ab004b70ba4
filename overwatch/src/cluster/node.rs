//! One overwatch node's Raft runtime: storage under `data_dir`, the RPC listener,
//! bootstrap from the peer list, and writes that reach the leader from any node.
//!
//! Writes never succeed silently: a write is acknowledged only once the leader has
//! committed and applied it; without a quorum it fails with [`WriteError::NoQuorum`]
//! after `cluster.write_timeout`. Reads (DNS, the API) use the local applied state and
//! never wait for Raft.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers, Config, Raft, RaftMetrics, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::network::{Contact, Network, UNKNOWN, VoteGate, router as raft_router};
use super::store::{NodeId, TypeConfig, open};
use super::tls::ClusterTls;
use super::transport::{Caller, PeerAuth, Transport, require_peer};
use crate::config::ClusterSettings;
use crate::model::machine::{Machine, Request, Response};
use crate::telemetry;

/// The storage file's name under `data_dir`.
pub const STORE_FILE: &str = "overwatch-raft.redb";
/// How long a peer's status may take before it counts as unreachable.
const PEER_STATUS_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a node without data waits for a quorum of its peers before it says so.
const QUIET_WAIT: Duration = Duration::from_secs(3);
/// Bytes of snapshot per install RPC.
const SNAPSHOT_CHUNK: u64 = 256 * 1024;
/// Pause between attempts while a write looks for a reachable leader.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// A change a client asks the cluster for; forwarded as is from a follower to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Write {
    /// A state machine request.
    Request(Request),
    /// Add a voting member (it is first caught up as a learner).
    AddMember {
        /// Its Raft id.
        id: NodeId,
        /// Its RPC address, `HOST:PORT`.
        address: String,
    },
    /// Remove a member.
    RemoveMember {
        /// Its Raft id.
        id: NodeId,
    },
}

/// Why a write was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WriteError {
    /// No leader with a quorum answered in time: the write is not acknowledged (HTTP 503).
    #[error("{0}")]
    NoQuorum(String),
    /// The request is not acceptable (HTTP 400/409).
    #[error("{0}")]
    Invalid(String),
    /// A forwarded write reached a node that is no longer the leader (retried).
    #[error("node {0} is not the leader")]
    NotLeader(NodeId),
}

/// An acknowledged write: what the state machine said, and the log index it holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Written {
    /// The state machine's answer.
    pub response: Response,
    /// The committed log index.
    pub index: u64,
}

/// What one node says about itself (`/cluster/local` on the RPC port).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalStatus {
    /// Raft id.
    pub id: NodeId,
    /// leader, follower, candidate or learner.
    pub state: String,
    /// Current term.
    pub term: u64,
    /// The leader it follows.
    pub leader: Option<NodeId>,
    /// Last log index it holds.
    pub last_log_index: Option<u64>,
    /// Last index it applied.
    pub last_applied_index: Option<u64>,
    /// Whether it belongs to a cluster yet.
    pub initialized: bool,
}

/// One member in `/api/v1/cluster/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Raft id.
    pub id: NodeId,
    /// RPC address.
    pub address: String,
    /// Votes (false: a learner being caught up).
    pub voter: bool,
    /// Answered this node's status call just now.
    pub reachable: bool,
    /// Its Raft state, when reachable.
    pub state: Option<String>,
    /// Its last applied index, when reachable.
    pub last_applied_index: Option<u64>,
    /// Its term, when reachable.
    pub term: Option<u64>,
}

/// `/api/v1/cluster/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The node that answered.
    pub node_id: NodeId,
    /// Its Raft state.
    pub state: String,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// Its last applied index.
    pub last_applied_index: Option<u64>,
    /// Whether the leader currently has a quorum (as far as this node can tell).
    pub quorum: bool,
    /// Every member.
    pub members: Vec<MemberStatus>,
}

/// A running Raft node. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    raft: Raft<TypeConfig>,
    id: NodeId,
    machine: watch::Receiver<Arc<Machine>>,
    /// Calls to peers.
    transport: Arc<Transport>,
    write_timeout: Duration,
    quorum_grace: Duration,
    vote_gate: VoteGate,
    /// False while this node, started without data, has not caught up with the cluster
    /// once: it must not answer from a state that may lack every override.
    synced: Arc<watch::Sender<bool>>,
    /// When this node last heard from a leader (pre-vote asks it).
    contact: Contact,
    /// `cluster.election_timeout`.
    election_timeout: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("id", &self.id).finish()
    }
}

/// The settings of a cluster of one (no `cluster:` section): same storage and write path,
/// no RPC listener.
fn single(secret: String) -> ClusterSettings {
    ClusterSettings {
        node_id: 1,
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        advertise: "local".into(),
        secret,
        peers: BTreeMap::from([(1, "local".into())]),
        heartbeat_interval: Duration::from_millis(100),
        election_timeout: Duration::from_millis(500),
        write_timeout: Duration::from_secs(3),
        snapshot_logs: 5000,
        tls: None,
    }
}

/// A data dir made by a cluster of one (no `cluster:` section) cannot join a cluster, and a
/// cluster member's data dir cannot run alone: either way Raft would wait for members that
/// never answer, with every write refused. Said at start, naming the file.
fn check_data_dir_matches(
    raft: &Raft<TypeConfig>,
    clustered: bool,
    path: &Path,
) -> Result<(), String> {
    let membership = raft.metrics().borrow().membership_config.clone();
    let alone = membership
        .membership()
        .nodes()
        .all(|(_, node)| node.addr == single(String::new()).advertise);
    match (clustered, alone) {
        (true, true) => Err(format!(
            "overwatch.data_dir: {} was written by this node running without a `cluster:` section (a cluster of one); it cannot join a cluster with that state: move the file away to join as a new member, or remove `cluster:` again",
            path.display()
        )),
        (false, false) => Err(format!(
            "overwatch.data_dir: {} belongs to a cluster member, but the configuration has no `cluster:` section; add the node's `cluster:` section back, or move the file away to run alone",
            path.display()
        )),
        _ => Ok(()),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Cluster {
    /// Opens `data_dir`, starts Raft, serves RPC on `cluster.listen` (when clustered) and
    /// bootstraps a fresh cluster from the peer list. Returns the bound RPC address.
    pub async fn start(
        settings: Option<&ClusterSettings>,
        data_dir: &Path,
        shutdown: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<(Cluster, Option<SocketAddr>), String> {
        let clustered = settings.is_some();
        // A cluster of one calls no peer and serves no RPC: its secret is never used.
        let settings = settings
            .cloned()
            .unwrap_or_else(|| single("no-rpc-in-a-cluster-of-one".into()));
        std::fs::create_dir_all(data_dir).map_err(|e| {
            format!(
                "overwatch.data_dir: cannot create {}: {e}",
                data_dir.display()
            )
        })?;
        let path = data_dir.join(STORE_FILE);
        let (logs, store) = open(&path).map_err(|e| format!("overwatch.data_dir: {e}"))?;
        let machine = store.subscribe();
        let config = Config {
            cluster_name: "opengslb".into(),
            heartbeat_interval: ms(settings.heartbeat_interval),
            election_timeout_min: ms(settings.election_timeout),
            // openraft's followers refuse votes until the leader lease (= the maximum)
            // runs out, so a first election before it mostly fails and the second wins: a
            // narrow window keeps failover near twice the timeout instead of up to four times.
            election_timeout_max: ms(settings.election_timeout) * 5 / 4,
            install_snapshot_timeout: 10_000,
            // A snapshot travels in chunks whatever its size; a chunk's JSON (bytes as
            // numbers, up to 4 characters each) stays well under the RPC body limit.
            snapshot_max_chunk_size: SNAPSHOT_CHUNK,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_logs),
            max_in_snapshot_log_to_keep: settings.snapshot_logs.min(1000),
            // Elections are started by `campaign` after a pre-vote, never by openraft's
            // own timer: a node cut off from the leader must not raise its term and, when
            // it comes back, depose a healthy leader.
            enable_elect: false,
            ..Config::default()
        }
        .validate()
        .map_err(|e| format!("cluster: {e}"))?;
        let tls = match &settings.tls {
            Some(paths) => Some(Arc::new(
                ClusterTls::load(paths, settings.node_id)
                    .map_err(|(key, why)| format!("{}: {why}", key.name()))?,
            )),
            None => None,
        };
        if clustered && tls.is_none() {
            tracing::warn!(
                "cluster RPC is plain HTTP (cluster.insecure_plaintext: true): the cluster secret and every write cross the network readable, and anyone who learns the secret can change the cluster's state; set cluster.tls instead"
            );
        }
        metrics::gauge!(telemetry::CLUSTER_RPC_TLS).set(if tls.is_some() { 1.0 } else { 0.0 });
        let transport = Arc::new(
            Transport::new(
                settings.node_id,
                &settings.secret,
                tls.clone(),
                settings.peers.clone(),
            )
            .map_err(|e| format!("cluster: {e}"))?,
        );
        let network = Network::new(transport.clone());
        let raft = Raft::new(settings.node_id, Arc::new(config), network, logs, store)
            .await
            .map_err(|e| format!("cluster: cannot start Raft: {e}"))?;
        let cluster = Cluster {
            raft: raft.clone(),
            id: settings.node_id,
            machine,
            transport,
            write_timeout: settings.write_timeout,
            quorum_grace: settings.election_timeout * 2,
            vote_gate: VoteGate::default(),
            synced: Arc::new(watch::channel(true).0),
            contact: Contact::new(),
            election_timeout: settings.election_timeout,
        };
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| format!("cluster: {e}"))?;
        if initialized {
            check_data_dir_matches(&raft, clustered, &path)?;
            tracing::info!(
                node_id = settings.node_id,
                "cluster state restored from the data dir"
            );
        } else if clustered {
            // No data: a first start or a wiped disk, which this node cannot tell apart.
            // It neither votes nor answers DNS until it founds a cluster with a quorum of
            // fresh peers or a leader has brought it up to date.
            cluster.vote_gate.set(UNKNOWN);
            cluster.synced.send_replace(false);
        }

        let mut bound = None;
        if clustered {
            let listener = tokio::net::TcpListener::bind(settings.listen)
                .await
                .map_err(|e| {
                    format!("cluster.listen: cannot listen on {}: {e}", settings.listen)
                })?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            tracing::info!(%addr, node_id = settings.node_id, "cluster rpc listening");
            bound = Some(addr);
            let app = cluster.rpc_router(PeerAuth::new(&settings.secret, tls.clone()));
            tracker.spawn(crate::listener::serve(
                listener,
                app,
                tls.map(|t| t.acceptor()),
                super::transport::RPC_LIMITS,
                shutdown.clone(),
            ));
        }
        if !initialized {
            if clustered {
                tracker.spawn(
                    cluster
                        .clone()
                        .bootstrap(settings.clone(), shutdown.clone()),
                );
            } else {
                cluster.initialize(&settings).await?;
            }
        }
        tracker.spawn(cluster.clone().watch_gate(shutdown.clone()));
        tracker.spawn(cluster.clone().campaign(shutdown.clone()));
        tracker.spawn(export_metrics(cluster.clone(), shutdown.clone()));
        let stop = shutdown.clone();
        let raft_for_stop = raft.clone();
        tracker.spawn(async move {
            stop.cancelled().await;
            if let Err(e) = raft_for_stop.shutdown().await {
                tracing::warn!(error = %e, "raft did not stop cleanly");
            }
        });
        Ok((cluster, bound))
    }

    /// Initializes a cluster from the peer list (the same list on every founding node, so
    /// founders that initialize at once agree).
    async fn initialize(&self, settings: &ClusterSettings) -> Result<(), String> {
        let members: BTreeMap<NodeId, BasicNode> = settings
            .peers
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => {
                tracing::info!(
                    members = settings.peers.len(),
                    "cluster initialized from the peer list"
                );
                Ok(())
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(format!("cluster: cannot initialize: {e}")),
        }
    }

    /// A node started without data decides, from what its peers say, whether it founds a
    /// new cluster or rejoins a running one, and asks again until it can tell:
    ///
    /// - a reachable peer has applied entries: a cluster runs and this node lost its data;
    ///   it stays gated (no vote, no DNS answers) until a leader has brought it up to date;
    /// - a quorum of the peer list (this node included) is reachable and none has applied
    ///   anything: a first start; it initializes the cluster with them;
    /// - otherwise it waits: founding a cluster alone (or with a minority) could elect a
    ///   node that lacks committed entries and lose them.
    async fn bootstrap(self, settings: ClusterSettings, shutdown: CancellationToken) {
        let mut pause = Duration::from_millis(200);
        let mut log = opengslb_proto::log_limit::LogLimit::every(Duration::from_secs(30));
        // Nodes of a cluster started together find each other within a probe or two: say
        // nothing unless the wait lasts.
        let started = std::time::Instant::now();
        loop {
            if self.raft.metrics().borrow().last_applied.is_some() {
                return; // a leader reached this node first
            }
            let mut reachable = 1; // this node
            let mut applied = 0;
            for (id, address) in &settings.peers {
                if *id == self.id {
                    continue;
                }
                if let Some(peer) = self.peer_status(*id, address).await {
                    reachable += 1;
                    applied = applied.max(peer.last_applied_index.unwrap_or(0));
                }
            }
            if applied > 0 {
                tracing::info!(
                    peers_applied = applied,
                    "peers already run a cluster: rejoining with an empty data dir; no vote and no DNS answers until a leader has brought this node up to date"
                );
                return;
            }
            if reachable * 2 > settings.peers.len() {
                match self.initialize(&settings).await {
                    Ok(()) => {
                        self.vote_gate.set(0);
                        self.synced.send_replace(true);
                    }
                    Err(e) => tracing::error!(error = %e, "cluster not initialized"),
                }
                return;
            }
            if started.elapsed() >= QUIET_WAIT && log.ready(std::time::Instant::now()).is_some() {
                tracing::warn!(
                    reachable,
                    peers = settings.peers.len(),
                    "no data and no quorum of cluster.peers reachable: waiting for a majority before founding a cluster (a node that lost its data waits for the running cluster instead)"
                );
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// Lifts the vote gate once the index a leader named is applied, and marks the node
    /// synced: from then on it votes and answers DNS.
    async fn watch_gate(self, shutdown: CancellationToken) {
        let mut metrics = self.raft.metrics();
        loop {
            let needed = self.vote_gate.needed();
            let applied = metrics.borrow().last_applied.map_or(0, |l| l.index);
            if needed == 0 || (needed != UNKNOWN && applied >= needed) {
                if needed != 0 {
                    self.vote_gate.set(0);
                    tracing::info!(
                        applied,
                        "caught up with the cluster: voting and answering DNS"
                    );
                }
                self.synced.send_replace(true);
                return;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = metrics.changed() => if changed.is_err() { return },
                // The index may be named after it was applied (a snapshot first): look again.
                () = self.vote_gate.named() => {}
            }
        }
    }

    /// How long without a leader before an election: openraft's leader lease (its
    /// `election_timeout_max`, 5/4 of ours), so that voters no longer refuse for the lease.
    fn lease(&self) -> Duration {
        self.election_timeout * 5 / 4
    }

    /// Starts elections, and only after a pre-vote (Raft thesis §9.6): when this voter has
    /// not heard from a leader for a randomized lease-and-a-bit, it asks every voter
    /// whether it would vote for a node with its log; only if a majority would (none of
    /// them hears a leader either, and none has a longer log) does it raise its term. A
    /// node cut off from the cluster never passes, so it comes back with the cluster's
    /// term and deposes nobody.
    async fn campaign(self, shutdown: CancellationToken) {
        // Fine enough that the random part of the wait is not rounded away: two voters
        // that lost their leader at the same moment must not campaign in the same tick.
        let tick = self.election_timeout / 20;
        loop {
            // A fresh randomized wait each round, so two voters rarely campaign at once.
            let jitter = self.election_timeout.mul_f64(unit_random() / 4.0);
            let wait = self.lease() + jitter;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(tick) => {}
            }
            let m = self.raft.metrics().borrow().clone();
            let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
            if m.state == ServerState::Leader
                || !voters.contains(&self.id)
                || self.vote_gate.needed() != 0
                || self.contact.since() < wait
            {
                continue;
            }
            let mut granted = 1; // this node
            let mut calls = tokio::task::JoinSet::new();
            for (id, node) in m.membership_config.membership().nodes() {
                if *id == self.id || !voters.contains(id) {
                    continue;
                }
                let (me, id, address, last) =
                    (self.clone(), *id, node.addr.clone(), m.last_log_index);
                calls.spawn(async move { me.ask_prevote(id, &address, last).await });
            }
            // A majority is enough: waiting for a voter that does not answer (cut off by a
            // partition) would hold every candidate until the same timeout, in step.
            while let Some(answer) = calls.join_next().await {
                granted += usize::from(answer.unwrap_or(false));
                if granted * 2 > voters.len() {
                    calls.abort_all();
                    break;
                }
            }
            if granted * 2 > voters.len() {
                tracing::info!(
                    term = m.current_term,
                    "no leader heard and a majority agrees: starting an election"
                );
                self.contact.touch(); // give this election a full timeout
                if let Err(e) = self.raft.trigger().elect().await {
                    tracing::warn!(error = %e, "election not started");
                }
            }
        }
    }

    /// One voter's pre-vote (false when it says no or does not answer in time).
    async fn ask_prevote(&self, id: NodeId, address: &str, last_index: Option<u64>) -> bool {
        let request = PreVote {
            candidate: self.id,
            last_index,
        };
        let Ok(call) = self
            .transport
            .request(false, id, address, "/cluster/prevote")
        else {
            return false;
        };
        let response = call
            .timeout(self.election_timeout)
            .json(&request)
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => {
                r.json::<PreVoteAnswer>().await.is_ok_and(|a| a.granted)
            }
            _ => false,
        }
    }

    /// Resolves when the Raft core has stopped on its own (a fatal storage or internal
    /// error), with the reason; never while it runs.
    pub async fn stopped(&self) -> String {
        let mut metrics = self.raft.metrics();
        loop {
            if let Err(fatal) = &metrics.borrow_and_update().running_state {
                return fatal.to_string();
            }
            if metrics.changed().await.is_err() {
                return "the Raft core ended".into();
            }
        }
    }

    /// Whether this node holds the cluster's state (false only while a node started
    /// without data catches up).
    pub fn synced(&self) -> watch::Receiver<bool> {
        self.synced.subscribe()
    }

    /// Why this node does not vote yet, in words, or `None` when it does.
    pub fn catching_up(&self) -> Option<String> {
        self.vote_gate.catching_up(&self.raft)
    }

    /// The RPC endpoints: Raft's own, the write forwarding target and the local status,
    /// all behind `auth` (the cluster secret and, under TLS, the caller's certificate).
    fn rpc_router(&self, auth: PeerAuth) -> Router {
        let routes = Router::new()
            .route("/cluster/write", post(forwarded_write))
            .route("/cluster/local", get(local_status))
            .route("/cluster/prevote", post(prevote));
        let local: Router = require_peer(routes, auth.clone()).with_state(self.clone());
        raft_router(
            self.raft.clone(),
            self.id,
            auth,
            self.vote_gate.clone(),
            self.contact.clone(),
        )
        .merge(local)
    }

    /// This node's Raft id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The applied state, updated after every applied batch.
    pub fn machine(&self) -> watch::Receiver<Arc<Machine>> {
        self.machine.clone()
    }

    /// Raft's metrics (leader, term, membership).
    pub fn metrics(&self) -> watch::Receiver<RaftMetrics<NodeId, BasicNode>> {
        self.raft.metrics()
    }

    /// Whether this node leads now.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    /// Commits `write` through the leader, wherever it is, within `cluster.write_timeout`.
    pub async fn write(&self, write: Write) -> Result<Written, WriteError> {
        let deadline = Instant::now() + self.write_timeout;
        let mut last_problem = String::from("no leader elected");
        loop {
            let metrics = self.raft.metrics().borrow().clone();
            match metrics.current_leader {
                Some(leader) if leader == self.id => match self.lead(write.clone(), deadline).await
                {
                    Err(WriteError::NotLeader(_)) => {}
                    other => return other,
                },
                Some(leader) => {
                    let address = metrics
                        .membership_config
                        .membership()
                        .get_node(&leader)
                        .map(|n| n.addr.clone());
                    match address {
                        Some(address) => {
                            match self.forward(leader, &address, &write, deadline).await {
                                Ok(result) => match result {
                                    Err(WriteError::NotLeader(_)) => {
                                        last_problem =
                                            format!("node {leader} is no longer the leader");
                                    }
                                    other => return other,
                                },
                                Err(Forward::Unreachable(why)) => {
                                    last_problem =
                                        format!("the leader (node {leader}) is unreachable: {why}");
                                }
                                Err(Forward::Unknown(why)) => {
                                    // The request may have reached the leader before its
                                    // connection failed (a pooled connection to a leader that
                                    // just died fails this way): the outcome is unknown.
                                    return Err(WriteError::NoQuorum(format!(
                                        "no quorum confirmed the write: the leader (node {leader}) gave no answer ({why}); it may still be applied if it was committed, so read it back before retrying"
                                    )));
                                }
                            }
                        }
                        None => last_problem = format!("leader {leader} has no address"),
                    }
                }
                None => {}
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(WriteError::NoQuorum(format!(
                    "no quorum: the write was not accepted within {:?} ({last_problem}); nothing was changed",
                    self.write_timeout
                )));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Commits `write` as the leader.
    async fn lead(&self, write: Write, deadline: Instant) -> Result<Written, WriteError> {
        let quorum_lost = {
            let m = self.raft.metrics().borrow().clone();
            let voters = m.membership_config.membership().voter_ids().count();
            // A leader just elected has no acknowledgement yet, but a quorum elected it:
            // its first write waits for the commit instead of being refused.
            voters > 1
                && m.millis_since_quorum_ack
                    .is_some_and(|ack| ack > ms(self.quorum_grace))
        };
        if quorum_lost {
            return Err(WriteError::NoQuorum(format!(
                "no quorum: this leader (node {}) has not heard from a majority for over {:?}; nothing was changed",
                self.id, self.quorum_grace
            )));
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let result = tokio::time::timeout(remaining, self.apply_as_leader(write)).await;
        match result {
            Ok(r) => r,
            Err(_) => Err(WriteError::NoQuorum(format!(
                "no quorum: the write was not committed within {:?}; it stays in this node's log and may still be applied if a quorum returns, so read it back before retrying",
                self.write_timeout
            ))),
        }
    }

    async fn apply_as_leader(&self, write: Write) -> Result<Written, WriteError> {
        let not_leader = |e: &ClientWriteError<NodeId, BasicNode>| match e {
            ClientWriteError::ForwardToLeader(f) => Some(f.leader_id.unwrap_or(0)),
            ClientWriteError::ChangeMembershipError(_) => None,
        };
        let map = |e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>| match e {
            RaftError::APIError(e) => match not_leader(&e) {
                Some(leader) => WriteError::NotLeader(leader),
                None => WriteError::Invalid(e.to_string()),
            },
            RaftError::Fatal(f) => WriteError::NoQuorum(format!("raft stopped: {f}")),
        };
        match write {
            Write::Request(request) => {
                let r = self.raft.client_write(request).await.map_err(map)?;
                Ok(Written {
                    response: r.data,
                    index: r.log_id.index,
                })
            }
            Write::AddMember { id, address } => {
                let members = self.raft.metrics().borrow().membership_config.clone();
                if members.membership().voter_ids().any(|v| v == id) {
                    return Err(WriteError::Invalid(format!(
                        "node {id} is already a member"
                    )));
                }
                self.raft
                    .add_learner(id, BasicNode::new(address.clone()), false)
                    .await
                    .map_err(map)?;
                // A voter that cannot be reached counts towards the quorum all the same:
                // one more such member and losing one real node stops every write. So the
                // new node votes only once it holds the leader's log.
                // Half the write timeout: the answer must arrive before the write's own.
                let limit = self.write_timeout / 2;
                if !self.caught_up(id, limit).await {
                    tracing::warn!(node = id, %address, "added as a learner but not caught up: it does not vote until `cluster add-member` is run again once it is reachable");
                    return Err(WriteError::Invalid(format!(
                        "node {id} ({address}) was added as a learner but has not caught up with the leader within {limit:?} (unreachable, or not running?): it does not vote; start it and run add-member again, or remove it"
                    )));
                }
                let r = self
                    .raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                    .map_err(map)?;
                tracing::info!(node = id, "member added");
                Ok(Written {
                    response: Response::Applied,
                    index: r.log_id.index,
                })
            }
            Write::RemoveMember { id } => {
                let members = self.raft.metrics().borrow().membership_config.clone();
                let voters: BTreeSet<NodeId> = members.membership().voter_ids().collect();
                if !voters.contains(&id) {
                    return Err(WriteError::Invalid(format!("node {id} is not a member")));
                }
                if voters.len() == 1 {
                    return Err(WriteError::Invalid(format!(
                        "node {id} is the only member; a cluster needs at least one"
                    )));
                }
                let r = self
                    .raft
                    .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                    .await
                    .map_err(map)?;
                tracing::info!(node = id, "member removed");
                Ok(Written {
                    response: Response::Applied,
                    index: r.log_id.index,
                })
            }
        }
    }

    /// Whether the leader's replication to `id` has reached the leader's last log entry
    /// within `limit`.
    async fn caught_up(&self, id: NodeId, limit: Duration) -> bool {
        let mut metrics = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            {
                let m = metrics.borrow_and_update();
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).copied().flatten())
                    .map(|l| l.index);
                if matched.is_some() && matched >= m.last_log_index {
                    return true;
                }
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return false,
            }
        }
    }

    async fn forward(
        &self,
        leader: NodeId,
        address: &str,
        write: &Write,
        deadline: Instant,
    ) -> Result<Result<Written, WriteError>, Forward> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let response = self
            .transport
            .request(false, leader, address, "/cluster/write")
            .map_err(|e| Forward::Unreachable(e.to_string()))?
            .timeout(remaining)
            .json(write)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    Forward::Unreachable(e.to_string())
                } else {
                    Forward::Unknown(e.to_string())
                }
            })?;
        if !response.status().is_success() {
            return Err(Forward::Unknown(format!("HTTP {}", response.status())));
        }
        response
            .json()
            .await
            .map_err(|e| Forward::Unknown(e.to_string()))
    }

    /// Waits until this node has applied `index` (a write's read-your-writes point), at most
    /// `limit`; false if it has not by then.
    pub async fn wait_applied(&self, index: u64, limit: Duration) -> bool {
        self.raft
            .wait(Some(limit))
            .applied_index_at_least(Some(index), "read your write")
            .await
            .is_ok()
    }

    fn local(&self) -> LocalStatus {
        let m = self.raft.metrics().borrow().clone();
        LocalStatus {
            id: self.id,
            state: state_name(m.state).into(),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            last_applied_index: m.last_applied.map(|l| l.index),
            initialized: m
                .membership_config
                .membership()
                .voter_ids()
                .next()
                .is_some(),
        }
    }

    async fn peer_status(&self, id: NodeId, address: &str) -> Option<LocalStatus> {
        let response = self
            .transport
            .request(true, id, address, "/cluster/local")
            .ok()?
            .timeout(PEER_STATUS_TIMEOUT)
            .send()
            .await
            .ok()?;
        response.error_for_status().ok()?.json().await.ok()
    }

    /// Leader, term, and every member as it answers now.
    pub async fn status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut calls = tokio::task::JoinSet::new();
        for (id, node) in membership.nodes() {
            let (id, address, me) = (*id, node.addr.clone(), self.clone());
            calls.spawn(async move {
                let status = if id == me.id {
                    Some(me.local())
                } else {
                    me.peer_status(id, &address).await
                };
                (id, address, status)
            });
        }
        let mut members = Vec::new();
        while let Some(Ok((id, address, status))) = calls.join_next().await {
            members.push(MemberStatus {
                id,
                address,
                voter: voters.contains(&id),
                reachable: status.is_some(),
                state: status.as_ref().map(|s| s.state.clone()),
                last_applied_index: status.as_ref().and_then(|s| s.last_applied_index),
                term: status.as_ref().map(|s| s.term),
            });
        }
        members.sort_by_key(|m| m.id);
        let reachable_voters = members.iter().filter(|m| m.voter && m.reachable).count();
        ClusterStatus {
            node_id: self.id,
            state: state_name(m.state).into(),
            leader: m.current_leader,
            term: m.current_term,
            last_applied_index: m.last_applied.map(|l| l.index),
            quorum: m.current_leader.is_some() && reachable_voters * 2 > voters.len(),
            members,
        }
    }
}

/// Raft state as Prometheus gauges: leader known, this node leading, quorum, term,
/// applied index, and leader changes.
async fn export_metrics(cluster: Cluster, shutdown: CancellationToken) {
    let mut metrics = cluster.raft.metrics();
    let mut last_leader = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = metrics.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
        let m = metrics.borrow_and_update().clone();
        if m.current_leader != last_leader {
            if last_leader.is_some() || m.current_leader.is_some() {
                metrics::counter!(telemetry::CLUSTER_LEADER_CHANGES).increment(1);
            }
            last_leader = m.current_leader;
        }
        let voters = m.membership_config.membership().voter_ids().count();
        let quorum = match m.current_leader {
            None => false,
            Some(l) if l == cluster.id => {
                voters <= 1
                    || m.millis_since_quorum_ack
                        .is_some_and(|ack| ack <= ms(cluster.quorum_grace))
            }
            Some(_) => true,
        };
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        metrics::gauge!(telemetry::CLUSTER_HAS_LEADER).set(flag(m.current_leader.is_some()));
        metrics::gauge!(telemetry::CLUSTER_IS_LEADER)
            .set(flag(m.current_leader == Some(cluster.id)));
        metrics::gauge!(telemetry::CLUSTER_QUORUM).set(flag(quorum));
        metrics::gauge!(telemetry::CLUSTER_TERM).set(m.current_term as f64);
        metrics::gauge!(telemetry::CLUSTER_MEMBERS).set(voters as f64);
        metrics::gauge!(telemetry::CLUSTER_SYNCED).set(flag(*cluster.synced.borrow()));
        metrics::gauge!(telemetry::CLUSTER_LAST_APPLIED)
            .set(m.last_applied.map_or(0.0, |l| l.index as f64));
    }
}

/// "Would you vote for me?" without raising anyone's term. The log is compared by its
/// last index only (openraft's metrics carry no last log term): a filter, not the vote;
/// the election that follows checks the log fully.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PreVote {
    candidate: NodeId,
    last_index: Option<u64>,
}

/// A number in [0, 1) from the standard library's per-process random hasher keys.
fn unit_random() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The answer to a [`PreVote`].
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PreVoteAnswer {
    granted: bool,
}

/// Grants a pre-vote when this node hears no leader either (a leader with a live quorum,
/// or a follower that heard its leader within the lease, says no) and the candidate's log
/// is at least as long as this node's.
async fn prevote(State(cluster): State<Cluster>, Json(ask): Json<PreVote>) -> HttpResponse {
    let m = cluster.raft.metrics().borrow().clone();
    let leader_alive = match m.state {
        // A leader just elected has no acknowledgement yet: it counts as alive for a lease
        // from its campaign, not as a leader nobody hears.
        ServerState::Leader => m.millis_since_quorum_ack.map_or_else(
            || cluster.contact.since() < cluster.lease(),
            |ack| ack < ms(cluster.lease()),
        ),
        _ => cluster.contact.since() < cluster.lease(),
    };
    let granted =
        !leader_alive && cluster.vote_gate.needed() == 0 && ask.last_index >= m.last_log_index;
    if granted {
        // Give that candidate its election before campaigning against it.
        cluster.contact.touch();
    }
    tracing::debug!(candidate = ask.candidate, granted, "pre-vote");
    Json(PreVoteAnswer { granted }).into_response()
}

/// A forward that did not produce an answer.
enum Forward {
    /// Never reached the leader: safe to retry.
    Unreachable(String),
    /// Reached it, outcome unknown.
    Unknown(String),
}

fn state_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

/// A write forwarded by a follower: applied here only if this node leads (no second hop).
/// The follower verified the API token and named its author; under TLS the follower is
/// known by its certificate, so only a cluster member can forward a write.
async fn forwarded_write(
    State(cluster): State<Cluster>,
    axum::Extension(caller): axum::Extension<Caller>,
    Json(write): Json<Write>,
) -> HttpResponse {
    tracing::debug!(from = ?caller.id, verified = caller.verified, "forwarded write");
    let result = if cluster.is_leader() {
        let deadline = Instant::now() + cluster.write_timeout;
        cluster.lead(write, deadline).await
    } else {
        Err(WriteError::NotLeader(cluster.id))
    };
    Json(result).into_response()
}

async fn local_status(State(cluster): State<Cluster>) -> HttpResponse {
    (StatusCode::OK, Json(cluster.local())).into_response()
}
