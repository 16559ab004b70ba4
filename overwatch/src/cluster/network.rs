//! Raft RPC between overwatch nodes: JSON over HTTPS with mutual TLS (or plain HTTP when
//! the operator says so) on `cluster.listen`, through [`super::transport`].

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::Serialize;
use serde::de::DeserializeOwned;

use opengslb_proto::log_limit::LogLimit;

use super::store::{NodeId, TypeConfig};
use super::transport::{Caller, PeerAuth, TARGET_HEADER, Transport, require_peer, tls_failure};

/// Creates connections to peers.
#[derive(Debug, Clone)]
pub struct Network {
    transport: Arc<Transport>,
    /// Misconfiguration found on a call, logged at most every 10 s.
    misconfigured: Arc<std::sync::Mutex<LogLimit>>,
    /// Each peer's reachability, logged once per change.
    reachability: Arc<std::sync::Mutex<BTreeMap<NodeId, Reachability>>>,
}

/// Whether a peer answers, as the calls to it found.
#[derive(Debug, Default)]
struct Reachability {
    /// When the current run of failed calls began.
    failing_since: Option<std::time::Instant>,
    /// Whether that run was logged.
    warned: bool,
}

/// A peer failing for less than this is not reported: a node starting or restarting
/// refuses calls for a moment, and Raft retries.
const UNREACHABLE_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

impl Network {
    /// A network that calls peers through `transport`.
    pub fn new(transport: Arc<Transport>) -> Network {
        Network {
            transport,
            misconfigured: Arc::new(std::sync::Mutex::new(LogLimit::every(
                std::time::Duration::from_secs(10),
            ))),
            reachability: Arc::default(),
        }
    }

    /// Records a call's outcome: one WARN when a peer has failed every call for
    /// [`UNREACHABLE_AFTER`], one INFO when it answers again. Raft retries a down peer
    /// every 500 ms; openraft's own line per retry is filtered out (see the binary's
    /// logging set-up), so these two lines are what an operator reads.
    fn record(&self, target: NodeId, address: &str, failure: Option<&dyn std::fmt::Display>) {
        let now = std::time::Instant::now();
        let mut peers = self
            .reachability
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let peer = peers.entry(target).or_default();
        match (failure, peer.failing_since) {
            (None, Some(since)) => {
                if peer.warned {
                    tracing::info!(
                        peer = target,
                        %address,
                        down_for = ?now.duration_since(since),
                        "cluster peer answers again"
                    );
                }
                *peer = Reachability::default();
            }
            (None, None) => {}
            (Some(error), since) => {
                let since = *peer.failing_since.get_or_insert(since.unwrap_or(now));
                if !peer.warned && now.duration_since(since) >= UNREACHABLE_AFTER {
                    peer.warned = true;
                    tracing::warn!(
                        peer = target,
                        %address,
                        %error,
                        "cluster peer unreachable; Raft keeps retrying every 500 ms (logged again when it answers)"
                    );
                }
            }
        }
    }

    /// Logs a configuration problem found on a call, at most every 10 s.
    fn misconfigured(&self, problem: &str) {
        let ready = self
            .misconfigured
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .ready(std::time::Instant::now());
        if let Some(skipped) = ready {
            tracing::error!(
                not_logged_since_last = skipped,
                "cluster misconfigured: {problem}"
            );
        }
    }
}

/// One peer.
#[derive(Debug)]
pub struct Connection {
    network: Network,
    target: NodeId,
    node: BasicNode,
    /// The last failed call failed on configuration (secret, certificate, node id), not
    /// on the network: retried with a growing pause, since nothing changes until an
    /// operator fixes it.
    misconfigured: std::sync::atomic::AtomicBool,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            network: self.clone(),
            target,
            node: node.clone(),
            misconfigured: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Connection {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let result = self.call_once(path, request, option).await;
        let address = self.network.transport.address(self.target, &self.node.addr);
        match &result {
            Ok(_) | Err(RPCError::RemoteError(_)) => {
                self.network.record(self.target, address, None)
            }
            Err(error) => self.network.record(self.target, address, Some(error)),
        }
        result
    }

    async fn call_once<Req, Resp, E>(
        &self,
        path: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let transport = &self.network.transport;
        let address = transport.address(self.target, &self.node.addr).to_owned();
        let response = transport
            .request(false, self.target, &self.node.addr, &format!("/raft/{path}"))
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?
            .timeout(option.hard_ttl())
            .json(request)
            .send()
            .await
            .map_err(|e| {
                if let Some(why) = tls_failure(&e) {
                    // Not a network fault but a configuration one (a certificate from
                    // another CA, or another node's): say so, and back off.
                    let check = if why.contains("InvalidContentType") {
                        "that node does not speak TLS: it runs with cluster.insecure_plaintext, and every node must run the same way".to_owned()
                    } else {
                        format!(
                            "check that both nodes have certificates from the same cluster CA and that cluster.peers points at node {}",
                            self.target
                        )
                    };
                    self.misconfigured
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    self.network.misconfigured(&format!(
                        "TLS with node {} at {address} failed: {why}: {check}",
                        self.target
                    ));
                    RPCError::Unreachable(Unreachable::new(&e))
                } else if e.is_connect() {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        let status = response.status();
        if matches!(
            status,
            StatusCode::UNAUTHORIZED | StatusCode::MISDIRECTED_REQUEST | StatusCode::FORBIDDEN
        ) {
            // Not a network fault but a configuration one: say what is wrong, and report
            // the peer unreachable so Raft backs off instead of retrying at once.
            let said = response.text().await.unwrap_or_default();
            let problem = match status {
                StatusCode::UNAUTHORIZED => format!(
                    "node {} at {address} refused the cluster secret: cluster.secret differs between the nodes",
                    self.target
                ),
                StatusCode::FORBIDDEN => format!(
                    "node {} at {address} refused this node's certificate ({said}): check cluster.tls.cert and cluster.node_id",
                    self.target
                ),
                _ => format!(
                    "the peer at {address} is not node {} ({said}): two nodes share a cluster.node_id, or cluster.peers points at the wrong address",
                    self.target
                ),
            };
            self.misconfigured
                .store(true, std::sync::atomic::Ordering::Relaxed);
            self.network.misconfigured(&problem);
            let err = std::io::Error::other(problem);
            return Err(RPCError::Unreachable(Unreachable::new(&err)));
        }
        if !status.is_success() {
            let err = std::io::Error::other(format!("{address}/raft/{path}: {status}"));
            return Err(RPCError::Network(NetworkError::new(&err)));
        }
        let result: Result<Resp, RaftError<NodeId, E>> = response
            .json()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    /// A peer that is down is retried every 500 ms (openraft's default), so it catches up
    /// soon after it returns; one that refuses this node's configuration is retried after
    /// 1 s, 2 s, 4 s ... up to 30 s.
    fn backoff(&self) -> openraft::network::Backoff {
        if self
            .misconfigured
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            openraft::network::Backoff::new((0..).map(|n: u32| {
                std::time::Duration::from_secs(1 << n.min(5))
                    .min(std::time::Duration::from_secs(30))
            }))
        } else {
            openraft::network::Backoff::new(std::iter::repeat(std::time::Duration::from_millis(
                500,
            )))
        }
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("vote", &rpc, &option).await
    }
}

/// The log index a node that started without data must have applied before it may vote
/// (0: no such restriction; [`UNKNOWN`]: not known yet).
///
/// A node with an empty data dir cannot tell a first start from a wiped disk. A wiped node
/// has forgotten its log and its votes: if it voted at once, it could help a node that
/// lacks committed entries win an election and lose them (a stale node would become
/// leader and the newest writes would be gone). So it starts gated at [`UNKNOWN`]; the
/// first append from a leader tells it the leader's commit index, and it votes again once
/// it has applied that (by then it also knows the current term, so it cannot vote twice in
/// an old one). Founding a fresh cluster with a quorum of fresh peers lifts the gate.
///
/// Naming the index wakes [`VoteGate::named`]: the node may already have applied it (a
/// snapshot installed before the leader's first append), and then nothing else would
/// tell the watcher to look again until the next write.
#[derive(Debug, Clone, Default)]
pub struct VoteGate(Arc<GateState>);

#[derive(Debug, Default)]
struct GateState {
    needed: std::sync::atomic::AtomicU64,
    named: tokio::sync::Notify,
}

impl VoteGate {
    /// The index this node must have applied before it votes (0: none; [`UNKNOWN`]).
    pub fn needed(&self) -> u64 {
        self.0.needed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Sets the gate: [`UNKNOWN`] at a start without data, 0 to lift it.
    pub fn set(&self, needed: u64) {
        self.0
            .needed
            .store(needed, std::sync::atomic::Ordering::Release);
    }

    /// A leader's commit index, as its append says it; only the first word counts.
    pub fn name(&self, index: u64) {
        let first = self.0.needed.compare_exchange(
            UNKNOWN,
            index,
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
        );
        if first.is_ok() {
            // A permit if the watcher is not waiting right now: never lost.
            self.0.named.notify_one();
        }
    }

    /// Why this node does not vote yet, with how far it has applied (`raft`'s), or `None`
    /// when it votes: said by the vote endpoint to candidates and by `/api/v1/ready`.
    pub fn catching_up(&self, raft: &Raft<TypeConfig>) -> Option<String> {
        let applied = raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
        match self.needed() {
            0 => None,
            UNKNOWN => Some(format!(
                "started without data and no leader has named the index to reach yet (applied {applied})"
            )),
            needed => Some(format!(
                "rejoining after losing its data: no vote until index {needed} is applied (applied {applied})"
            )),
        }
    }

    /// Waits until a leader names the index (see [`VoteGate::name`]).
    pub async fn named(&self) {
        self.0.named.notified().await;
    }
}

/// The gate of a node that lost (or never had) its data and has not heard a leader yet.
pub const UNKNOWN: u64 = u64::MAX;

/// When this node last heard from a leader that it accepted (or granted a vote): what
/// pre-vote asks before anyone starts an election. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Contact {
    epoch: std::time::Instant,
    at_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl Contact {
    /// Contact now (a node that just started waits a full timeout before campaigning).
    pub fn new() -> Contact {
        Contact {
            epoch: std::time::Instant::now(),
            at_ms: Arc::default(),
        }
    }

    /// Heard from a leader (or voted) just now.
    pub fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.at_ms.store(ms, std::sync::atomic::Ordering::Release);
    }

    /// How long since.
    pub fn since(&self) -> std::time::Duration {
        let at =
            std::time::Duration::from_millis(self.at_ms.load(std::sync::atomic::Ordering::Acquire));
        self.epoch.elapsed().saturating_sub(at)
    }
}

impl Default for Contact {
    fn default() -> Self {
        Contact::new()
    }
}

#[derive(Clone)]
struct RpcState {
    raft: Raft<TypeConfig>,
    gate: VoteGate,
    contact: Contact,
}

/// The RPC endpoints a peer calls, for `raft` (node `id`), refusing calls that `auth`
/// refuses or that are meant for another node before anything else looks at the request.
pub fn router(
    raft: Raft<TypeConfig>,
    id: NodeId,
    auth: PeerAuth,
    gate: VoteGate,
    contact: Contact,
) -> Router {
    let routes = Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route_layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| async move {
                let target = request
                    .headers()
                    .get(TARGET_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<NodeId>().ok());
                if target == Some(id) {
                    next.run(request).await
                } else {
                    (
                        StatusCode::MISDIRECTED_REQUEST,
                        Json(serde_json::json!({ "error": format!("this is node {id}, not {target:?}: check cluster.peers") })),
                    )
                        .into_response()
                }
            },
        ));
    require_peer(routes, auth)
        .layer(axum::extract::DefaultBodyLimit::max(RPC_BODY_LIMIT))
        .with_state(RpcState {
            raft,
            gate,
            contact,
        })
}

/// Largest Raft RPC body: a batch of appended entries or one snapshot chunk in JSON (the
/// API keeps axum's 2 MiB default).
pub const RPC_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// The refusal (403) of a Raft message that speaks for another node than the certificate
/// that sent it: one node's key must not be enough to campaign or lead as another.
fn speaks_for_caller(caller: Caller, sender: Option<NodeId>) -> Option<Response> {
    match (caller.verified, caller.id, sender) {
        (true, Some(from), Some(sender)) if from != sender => Some(
            (
                StatusCode::FORBIDDEN,
                Json(serde_json::json!({ "error": format!("node {from} cannot send a Raft message for node {sender}") })),
            )
                .into_response(),
        ),
        _ => None,
    }
}

async fn append(
    State(state): State<RpcState>,
    Extension(caller): Extension<Caller>,
    Json(rpc): Json<AppendEntriesRequest<TypeConfig>>,
) -> Response {
    if let Some(refused) = speaks_for_caller(caller, rpc.vote.leader_id().voted_for()) {
        return refused;
    }
    if let Some(commit) = rpc.leader_commit {
        // A leader (elected by a quorum) says what it has committed: that is what this
        // node must hold before it votes. Only the first such word counts.
        state.gate.name(commit.index);
    }
    let result = state.raft.append_entries(rpc).await;
    if matches!(
        result,
        Ok(AppendEntriesResponse::Success
            | AppendEntriesResponse::PartialSuccess(_)
            | AppendEntriesResponse::Conflict)
    ) {
        state.contact.touch(); // a leader this node accepts is alive
    }
    Json(result).into_response()
}

async fn vote(
    State(state): State<RpcState>,
    Extension(caller): Extension<Caller>,
    Json(rpc): Json<VoteRequest<NodeId>>,
) -> Response {
    if let Some(refused) = speaks_for_caller(caller, rpc.vote.leader_id().voted_for()) {
        return refused;
    }
    if let Some(why) = state.gate.catching_up(&state.raft) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": why })),
        )
            .into_response();
    }
    let result = state.raft.vote(rpc).await;
    if result.as_ref().is_ok_and(|r| r.vote_granted) {
        state.contact.touch(); // give the candidate its election before campaigning
    }
    Json(result).into_response()
}

async fn snapshot(
    State(state): State<RpcState>,
    Extension(caller): Extension<Caller>,
    Json(rpc): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Response {
    if let Some(refused) = speaks_for_caller(caller, rpc.vote.leader_id().voted_for()) {
        return refused;
    }
    Json(state.raft.install_snapshot(rpc).await).into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use openraft::Config;

    use super::*;
    use crate::cluster::store::{StateMachineStore, open};
    use crate::cluster::tls::{CA_CERT, ClusterTls, TlsPaths, issue};
    use crate::model::machine::{Override, OverrideKey, Request, RequestV1};

    const SECRET: &str = "cluster-secret-0123456789";

    struct Node {
        raft: Raft<TypeConfig>,
        machine: StateMachineStore,
        server: tokio::task::JoinHandle<()>,
    }

    fn tls(dir: &std::path::Path, id: NodeId) -> Arc<ClusterTls> {
        let paths = TlsPaths {
            ca: dir.join(CA_CERT),
            cert: dir.join(format!("node-{id}.crt")),
            key: dir.join(format!("node-{id}.key")),
        };
        Arc::new(ClusterTls::load(&paths, id).expect("tls"))
    }

    async fn start(id: NodeId, dir: &std::path::Path, listener: tokio::net::TcpListener) -> Node {
        let tls = tls(dir, id);
        let transport = Transport::new(id, SECRET, Some(tls.clone()), BTreeMap::new());
        let config = Arc::new(
            Config {
                heartbeat_interval: 100,
                election_timeout_min: 300,
                election_timeout_max: 600,
                ..Config::default()
            }
            .validate()
            .expect("config"),
        );
        let (logs, machine) = open(&dir.join(format!("node{id}.redb"))).expect("open");
        let raft = Raft::new(
            id,
            config,
            Network::new(Arc::new(transport.expect("transport"))),
            logs,
            machine.clone(),
        )
        .await
        .expect("raft");
        let app = router(
            raft.clone(),
            id,
            PeerAuth::new(SECRET, Some(tls.clone())),
            VoteGate::default(),
            Contact::new(),
        );
        let server = tokio::spawn(crate::listener::serve(
            listener,
            app,
            Some(tls.acceptor()),
            crate::cluster::transport::RPC_LIMITS,
            tokio_util::sync::CancellationToken::new(),
        ));
        Node {
            raft,
            machine,
            server,
        }
    }

    fn set(service: &str, healthy: bool) -> Request {
        Request::V1(RequestV1::SetOverride {
            key: OverrideKey {
                service: service.into(),
                address: "10.0.1.10:8080".parse().expect("addr"),
            },
            value: Override {
                healthy,
                reason: "test".into(),
                author: "ops".into(),
                set_at_ms: 1,
                expires_at_ms: None,
            },
        })
    }

    async fn leader(nodes: &BTreeMap<NodeId, Node>) -> NodeId {
        for _ in 0..100 {
            if let Some(l) = nodes
                .values()
                .find_map(|n| n.raft.metrics().borrow().current_leader)
                .filter(|l| nodes.contains_key(l))
            {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no leader elected within 5 s");
    }

    async fn converged(nodes: &BTreeMap<NodeId, Node>, services: usize) {
        for _ in 0..100 {
            let mut all = true;
            for n in nodes.values() {
                all &= n.machine.machine().await.overrides.len() == services;
            }
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("state machines did not converge on {services} overrides");
    }

    /// Three real Raft nodes over HTTP on loopback: election, replication, failover, and a
    /// restarted node catching up from its own redb file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_nodes_elect_replicate_fail_over_and_catch_up() {
        let dir =
            std::env::temp_dir().join(format!("opengslb-raft-cluster-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        issue(&dir, &[1, 2, 3, 4], 1).expect("certificates");
        let mut addrs = BTreeMap::new();
        let mut listeners = BTreeMap::new();
        for id in 1..=3u64 {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            addrs.insert(id, l.local_addr().expect("addr"));
            listeners.insert(id, l);
        }
        let mut nodes = BTreeMap::new();
        for (id, l) in listeners {
            nodes.insert(id, start(id, &dir, l).await);
        }
        let members: BTreeMap<NodeId, BasicNode> = addrs
            .iter()
            .map(|(id, a)| (*id, BasicNode::new(a.to_string())))
            .collect();
        nodes[&1]
            .raft
            .initialize(members)
            .await
            .expect("initialize");

        let first = leader(&nodes).await;
        nodes[&first]
            .raft
            .client_write(set("app", false))
            .await
            .expect("write through the leader");
        converged(&nodes, 1).await;

        // Plain HTTP, even with the secret, reaches nothing.
        let plain = reqwest::Client::new()
            .post(format!("http://{}/raft/vote", addrs[&first]))
            .bearer_auth(SECRET)
            .json(&serde_json::json!({}))
            .send()
            .await;
        assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
        // A certificate from the CA for node 4, a node that is not a member, saying it is
        // node 4: it passes TLS but must carry the secret, and cannot speak for node 2.
        let outsider = Transport::new(
            4,
            "wrong-secret-0123456789",
            Some(tls(&dir, 4)),
            BTreeMap::new(),
        )
        .expect("transport");
        let address = addrs[&first].to_string();
        let call = |t: &Transport, target: NodeId, body: serde_json::Value| {
            t.request(false, target, &address, "/raft/vote")
                .expect("request")
                .json(&body)
                .send()
        };
        let denied = call(&outsider, first, serde_json::json!({}))
            .await
            .expect("https");
        assert_eq!(denied.status(), reqwest::StatusCode::UNAUTHORIZED);
        let impostor =
            Transport::new(2, SECRET, Some(tls(&dir, 4)), BTreeMap::new()).expect("transport");
        let denied = call(&impostor, first, serde_json::json!({}))
            .await
            .expect("https");
        assert_eq!(denied.status(), reqwest::StatusCode::FORBIDDEN);
        // Node 4's own certificate, with the secret, cannot ask for a vote as node 2.
        let four =
            Transport::new(4, SECRET, Some(tls(&dir, 4)), BTreeMap::new()).expect("transport");
        let forged = serde_json::json!({
            "vote": { "leader_id": { "term": 99, "node_id": 2 }, "committed": false },
            "last_log_id": null
        });
        let denied = call(&four, first, forged).await.expect("https");
        assert_eq!(denied.status(), reqwest::StatusCode::FORBIDDEN);
        // A call meant for another node is refused too.
        let misdirected = four
            .request(false, first % 3 + 1, &address, "/raft/vote")
            .expect("request")
            .json(&serde_json::json!({}))
            .send()
            .await;
        // The callee's certificate is checked against the node meant: the handshake fails.
        assert!(misdirected.is_err(), "{misdirected:?}");
        let err = misdirected.expect_err("refused");
        let why = tls_failure(&err).unwrap_or_else(|| panic!("not a TLS failure: {err:?}"));
        assert!(why.contains("certificate"), "{why}");

        // The leader dies; the other two elect a new one and keep accepting writes.
        let Node {
            raft,
            machine,
            server,
        } = nodes.remove(&first).expect("leader");
        raft.shutdown().await.expect("shutdown");
        server.abort();
        let _ = server.await;
        // redb locks its file: every handle must go before the node restarts on it.
        drop((raft, machine));
        let second = leader(&nodes).await;
        assert_ne!(second, first);
        nodes[&second]
            .raft
            .client_write(set("db", true))
            .await
            .expect("write after failover");
        converged(&nodes, 2).await;

        // The old leader restarts from its redb file and catches up.
        let listener = tokio::net::TcpListener::bind(addrs[&first])
            .await
            .expect("rebind");
        nodes.insert(first, start(first, &dir, listener).await);
        converged(&nodes, 2).await;
        for n in nodes.values() {
            n.raft.shutdown().await.expect("shutdown");
            n.server.abort();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn the_named_index_wakes_the_watcher_even_when_named_before_it_waits() {
        let gate = VoteGate::default();
        assert_eq!(gate.needed(), 0, "no restriction by default");
        gate.set(UNKNOWN);
        // Named while nobody waits (the watcher is busy looking at a snapshot just
        // applied): the wake-up is kept for it.
        gate.name(7);
        tokio::time::timeout(Duration::from_secs(5), gate.named())
            .await
            .expect("the naming was kept for the watcher");
        assert_eq!(gate.needed(), 7);
        // Only a leader's first word counts, and a later one wakes nobody.
        gate.name(9);
        assert_eq!(gate.needed(), 7);
        let woken = tokio::time::timeout(Duration::from_millis(50), gate.named()).await;
        assert!(woken.is_err(), "only the first naming wakes the watcher");
    }
}
