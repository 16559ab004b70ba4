//! Raft RPC between overwatch nodes: HTTP/JSON on `cluster.listen`, every call carrying
//! the cluster secret as a bearer token; a call without it is refused (401).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
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

/// Creates connections to peers.
#[derive(Debug, Clone)]
pub struct Network {
    client: reqwest::Client,
    secret: Arc<String>,
    /// Misconfiguration found on a call, logged at most every 10 s.
    misconfigured: Arc<std::sync::Mutex<LogLimit>>,
}

impl Network {
    /// A network that authenticates with `secret`.
    pub fn new(secret: &str) -> Result<Network, reqwest::Error> {
        crate::crypto::install_provider();
        Ok(Network {
            client: reqwest::Client::builder().no_proxy().build()?,
            secret: Arc::new(secret.to_owned()),
            misconfigured: Arc::new(std::sync::Mutex::new(LogLimit::every(
                std::time::Duration::from_secs(10),
            ))),
        })
    }
}

/// One peer.
#[derive(Debug)]
pub struct Connection {
    network: Network,
    target: NodeId,
    node: BasicNode,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            network: self.clone(),
            target,
            node: node.clone(),
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
        let url = format!("http://{}/raft/{path}", self.node.addr);
        let response = self
            .network
            .client
            .post(&url)
            .bearer_auth(self.network.secret.as_str())
            .header(TARGET_HEADER, self.target.to_string())
            .timeout(option.hard_ttl())
            .json(request)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::MISDIRECTED_REQUEST {
            // Not a network fault but a configuration one: say what is wrong, and report
            // the peer unreachable so Raft backs off instead of retrying at once.
            let problem = if status == StatusCode::UNAUTHORIZED {
                format!(
                    "node {} at {} refused the cluster secret: cluster.secret differs between the nodes",
                    self.target, self.node.addr
                )
            } else {
                let said = response.text().await.unwrap_or_default();
                format!(
                    "the peer at {} is not node {} ({said}): two nodes share a cluster.node_id, or cluster.peers points at the wrong address",
                    self.node.addr, self.target
                )
            };
            let ready = self
                .network
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
            let err = std::io::Error::other(problem);
            return Err(RPCError::Unreachable(Unreachable::new(&err)));
        }
        if !status.is_success() {
            let err = std::io::Error::other(format!("{url}: {status}"));
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
pub type VoteGate = Arc<std::sync::atomic::AtomicU64>;

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

/// The Raft id a call is meant for: a node refuses calls for another id (a peer list that
/// points at the wrong address must not feed one node another's messages).
pub const TARGET_HEADER: &str = "x-opengslb-raft-target";

/// The RPC endpoints a peer calls, for `raft` (node `id`), refusing calls without `secret`
/// or meant for another node before anything else looks at the request.
pub fn router(
    raft: Raft<TypeConfig>,
    id: NodeId,
    secret: &str,
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
    require_secret(routes, secret)
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

/// `router` with every route answering 401 to a call without the cluster secret.
pub fn require_secret<S>(router: Router<S>, secret: &str) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.route_layer(axum::middleware::from_fn_with_state(
        Arc::new(secret.to_owned()),
        check_secret,
    ))
}

async fn check_secret(
    State(secret): State<Arc<String>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if authorized(&secret, request.headers()) {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({ "error": "cluster secret missing or wrong" })),
        )
            .into_response()
    }
}

/// Whether the request's bearer token is the secret (compared in constant time).
fn authorized(secret: &str, headers: &HeaderMap) -> bool {
    crate::auth::bearer_token(headers)
        .is_some_and(|p| crate::auth::constant_time_eq(p.as_bytes(), secret.as_bytes()))
}

async fn append(
    State(state): State<RpcState>,
    Json(rpc): Json<AppendEntriesRequest<TypeConfig>>,
) -> Response {
    if let Some(commit) = rpc.leader_commit {
        // A leader (elected by a quorum) says what it has committed: that is what this
        // node must hold before it votes. Only the first such word counts.
        let _ = state.gate.compare_exchange(
            UNKNOWN,
            commit.index,
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
        );
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

async fn vote(State(state): State<RpcState>, Json(rpc): Json<VoteRequest<NodeId>>) -> Response {
    let needed = state.gate.load(std::sync::atomic::Ordering::Acquire);
    if needed > 0 {
        let applied = state
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index);
        let why = if needed == UNKNOWN {
            "started without data and has not heard from a leader yet: no vote until it has caught up".to_owned()
        } else {
            format!(
                "rejoining after losing its data: no vote until index {needed} is applied (now {applied})"
            )
        };
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
    Json(rpc): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Response {
    Json(state.raft.install_snapshot(rpc).await).into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use openraft::Config;

    use super::*;
    use crate::cluster::store::{StateMachineStore, open};
    use crate::model::machine::{Override, OverrideKey, Request, RequestV1};

    const SECRET: &str = "cluster-secret-0123456789";

    struct Node {
        raft: Raft<TypeConfig>,
        machine: StateMachineStore,
        server: tokio::task::JoinHandle<()>,
    }

    async fn start(id: NodeId, dir: &std::path::Path, listener: tokio::net::TcpListener) -> Node {
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
            Network::new(SECRET).expect("network"),
            logs,
            machine.clone(),
        )
        .await
        .expect("raft");
        let app = router(
            raft.clone(),
            id,
            SECRET,
            VoteGate::default(),
            Contact::new(),
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
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

        // An unauthenticated peer is refused.
        let denied = reqwest::Client::new()
            .post(format!("http://{}/raft/vote", addrs[&first]))
            .json(&serde_json::json!({}))
            .send()
            .await
            .expect("http");
        assert_eq!(denied.status(), reqwest::StatusCode::UNAUTHORIZED);
        // A call with the secret but meant for another node is refused too.
        let misdirected = reqwest::Client::new()
            .post(format!("http://{}/raft/vote", addrs[&first]))
            .bearer_auth(SECRET)
            .header(TARGET_HEADER, (first % 3 + 1).to_string())
            .json(&serde_json::json!({}))
            .send()
            .await
            .expect("http");
        assert_eq!(
            misdirected.status(),
            reqwest::StatusCode::MISDIRECTED_REQUEST
        );

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
}
