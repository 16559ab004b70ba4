//! The HTTP API: OpenGSLB's paths, JSON in and out, limited to `api.allowed_networks`.
//! Mutations need a bearer token from `api.tokens`; the token's name is the author.
//! Writes go through the Raft cluster and are acknowledged only once committed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use ipnet::IpNet;
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

use crate::cluster::node::{Cluster, Write, WriteError};
use crate::dns::DnsSnapshot;
use crate::model::machine::{
    Override, OverrideKey, Request as RaftRequest, RequestV1, Response as RaftResponse,
};
use crate::model::status::{Effective, Validation};
use crate::model::view::{AgentView, BackendView, Change, LastSeen, service_counts, wall_ms};
use crate::state::ViewRx;

/// What the handlers read, and where mutations go.
#[derive(Clone)]
pub struct ApiState {
    /// The Raft node: overrides, pins, membership.
    pub cluster: Cluster,
    /// `api.tokens`: name → token.
    pub tokens: Arc<std::collections::BTreeMap<String, String>>,
    /// The state owner's command channel (agent deletion).
    pub commands: tokio::sync::mpsc::Sender<crate::state::Command>,
    /// Backend state.
    pub view: ViewRx,
    /// Whether DNS is serving (ready).
    pub dns: watch::Receiver<Arc<DnsSnapshot>>,
    /// Allowed client networks.
    pub allowed: Arc<Vec<IpNet>>,
    /// Take the client from X-Forwarded-For.
    pub trust_proxy_headers: bool,
}

/// A JSON error: `{"error": "..."}` with a status.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

/// The router with every route and the network check.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/health/servers", get(health_servers))
        .route("/api/v1/overwatch/backends", get(backends))
        .route("/api/v1/overwatch/stats", get(stats))
        .route("/api/v1/domains", get(domains))
        .route("/api/v1/overwatch/agents", get(agents))
        .route(
            "/api/v1/overwatch/agents/{id}",
            get(agent).delete(delete_agent),
        )
        .route("/api/v1/overwatch/latency", get(latency))
        .route("/api/v1/overwatch/changes", get(changes))
        .route("/", get(status_page))
        .route("/status.js", get(status_script))
        .route("/api/v1/overrides", get(overrides))
        .route(
            "/api/v1/overrides/{service}/{address}",
            get(get_override).put(put_override).delete(delete_override),
        )
        .route("/api/v1/cluster/status", get(cluster_status))
        .route("/api/v1/cluster/members", axum::routing::post(add_member))
        .route("/api/v1/cluster/members/{id}", delete(remove_member))
        .route("/api/v1/ready", get(ready))
        .route("/api/v1/live", get(live))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            allow_networks,
        ))
        .with_state(state)
}

async fn allow_networks(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let client = client_ip(peer.ip(), &headers, state.trust_proxy_headers);
    if state.allowed.iter().any(|net| net.contains(&client)) {
        next.run(request).await
    } else {
        ApiError(
            StatusCode::FORBIDDEN,
            format!("client {client} is not in api.allowed_networks"),
        )
        .into_response()
    }
}

fn client_ip(peer: IpAddr, headers: &HeaderMap, trust_proxy_headers: bool) -> IpAddr {
    let peer = peer.to_canonical();
    if !trust_proxy_headers {
        return peer;
    }
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse::<IpAddr>().ok())
        .map_or(peer, |ip| ip.to_canonical())
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", uri.path()),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not allowed on {} (this API is read-only)",
            uri.path()
        ),
    )
}

/// One backend as the API shows it: every layer and the effective result.
#[derive(Debug, Serialize)]
pub struct BackendJson {
    /// Service.
    pub service: String,
    /// Address.
    pub address: IpAddr,
    /// Port.
    pub port: u16,
    /// Weight.
    pub weight: u32,
    /// Region.
    pub region: String,
    /// Agent identity (agents arrive with gossip).
    pub agent_id: Option<String>,
    /// healthy | unhealthy | stale | draining.
    pub effective_status: Effective,
    /// Why.
    pub effective_reason: String,
    /// When the effective status last changed.
    pub last_change: String,
    /// Agent claim (none without gossip).
    pub agent_healthy: Option<bool>,
    /// Agent last seen.
    pub agent_last_seen: Option<String>,
    /// Agent admin state: ready, drain, maint, or left.
    pub agent_admin: Option<&'static str>,
    /// Agent stale (quiet, or down in gossip).
    pub agent_stale: Option<bool>,
    /// In the config file (false: known from an agent only).
    pub configured: bool,
    /// Validation: true/false, null when disabled or not checked yet.
    pub validation_healthy: Option<bool>,
    /// disabled | pending | healthy | unhealthy.
    pub validation_state: &'static str,
    /// Last validation check time.
    pub validation_last_check: Option<String>,
    /// Last validation error.
    pub validation_error: Option<String>,
    /// Smoothed probe RTT in ms.
    pub rtt_ms: Option<f64>,
    /// Operator override (overrides arrive with the cluster).
    pub override_status: Option<bool>,
    /// Override reason.
    pub override_reason: Option<String>,
    /// Who set the override (an `api.tokens` name).
    pub override_author: Option<String>,
}

/// `seen` has the live last-report time of agents that still report (heartbeats do not
/// publish a new view); a remembered backend shows when the registry last changed it.
fn backend_json(b: &BackendView, seen: &LastSeen) -> BackendJson {
    let (validation_healthy, validation_state, validation_error) = match &b.validation {
        Validation::Disabled => (None, "disabled", None),
        Validation::Pending => (None, "pending", None),
        Validation::Healthy => (Some(true), "healthy", None),
        Validation::Unhealthy(reason) => (Some(false), "unhealthy", Some(reason.clone())),
    };
    BackendJson {
        service: b.key.service.clone(),
        address: b.key.address,
        port: b.key.port,
        weight: b.weight,
        region: b.key.region.clone(),
        agent_id: b.agent.as_ref().map(|a| a.agent_id.clone()),
        effective_status: b.effective,
        effective_reason: b.reason.clone(),
        last_change: rfc3339(b.last_change),
        agent_healthy: b
            .agent
            .as_ref()
            .map(|a| !matches!(a.health, opengslb_proto::wire::HealthState::Down(_))),
        agent_last_seen: b
            .agent
            .as_ref()
            .map(|a| rfc3339(seen.get(&a.agent_id).unwrap_or(a.last_seen))),
        agent_admin: b.agent.as_ref().map(|a| {
            if a.left {
                "left"
            } else {
                match a.admin {
                    opengslb_proto::wire::AdminState::Ready => "ready",
                    opengslb_proto::wire::AdminState::Drain => "drain",
                    opengslb_proto::wire::AdminState::Maint => "maint",
                }
            }
        }),
        agent_stale: b.agent.as_ref().map(|a| a.stale),
        configured: b.configured,
        validation_healthy,
        validation_state,
        validation_last_check: b.check.last_check.map(rfc3339),
        validation_error,
        rtt_ms: b.check.srtt.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3),
        override_status: b.override_.as_ref().map(|o| o.healthy),
        override_reason: b.override_.as_ref().map(|o| o.reason.clone()),
        override_author: b.override_.as_ref().map(|o| o.author.clone()),
    }
}

async fn health_servers(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let view = state.view.borrow().clone();
    let servers: Vec<_> = view
        .backends
        .iter()
        .map(|b| {
            json!({
                "service": b.key.service,
                "address": b.key.address,
                "port": b.key.port,
                "region": b.key.region,
                "healthy": b.effective.in_rotation(),
                "status": b.effective,
                "last_check": b.check.last_check.map(rfc3339),
                "last_error": b.check.last_error,
            })
        })
        .collect();
    Json(json!({ "servers": servers }))
}

async fn backends(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    for key in params.keys() {
        if !["status", "service", "region"].contains(&key.as_str()) {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("unknown query parameter {key:?}: use status, service or region"),
            ));
        }
    }
    let status = match params.get("status").map(String::as_str) {
        None => None,
        Some(s) => Some(
            [
                Effective::Healthy,
                Effective::Unhealthy,
                Effective::Stale,
                Effective::Draining,
            ]
            .into_iter()
            .find(|e| e.name() == s)
            .ok_or_else(|| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("status: {s:?} is not one of healthy, unhealthy, stale, draining"),
                )
            })?,
        ),
    };
    let view = state.view.borrow().clone();
    let list: Vec<BackendJson> = view
        .backends
        .iter()
        .filter(|b| status.is_none_or(|s| b.effective == s))
        .filter(|b| params.get("service").is_none_or(|s| &b.key.service == s))
        .filter(|b| params.get("region").is_none_or(|r| &b.key.region == r))
        .map(|b| backend_json(b, &view.seen))
        .collect();
    Ok(Json(json!({ "backends": list, "total": list.len() })))
}

async fn stats(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let view = state.view.borrow().clone();
    let count = |e: Effective| view.backends.iter().filter(|b| b.effective == e).count();
    let services: serde_json::Map<String, serde_json::Value> = service_counts(&view.backends)
        .into_iter()
        .map(|(s, (total, healthy))| (s, json!({ "total": total, "healthy": healthy })))
        .collect();
    Json(json!({
        "total_backends": view.backends.len(),
        "healthy_backends": count(Effective::Healthy),
        "unhealthy_backends": count(Effective::Unhealthy),
        "stale_backends": count(Effective::Stale),
        "draining_backends": count(Effective::Draining),
        "active_agents": view.agents.iter().filter(|a| !a.stale && !a.left).count(),
        "registered_agents": view.agents.len(),
        "registry_backends": view.replicated.backends.len(),
        "pinned_agents": view.replicated.pins.len(),
        "active_overrides": view.replicated.active_overrides(wall_ms(SystemTime::now())).count(),
        "validation_enabled": view.settings.validation.enabled,
        "services": services,
    }))
}

async fn domains(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let view = state.view.borrow().clone();
    let list: Vec<_> = view
        .settings
        .domains
        .iter()
        .map(|d| {
            let members: Vec<&BackendView> = view.backends.iter().filter(|b| d.regions.contains(&b.region)).collect();
            let healthy: Vec<IpAddr> = members.iter().filter(|b| b.effective.in_rotation()).map(|b| b.key.address).collect();
            json!({
                "name": d.name,
                "routing_algorithm": d.algorithm.name(),
                "regions": d.regions.iter().map(|&r| view.settings.regions[r].name.clone()).collect::<Vec<_>>(),
                "ttl": d.ttl,
                "max_records": d.max_records,
                "when_all_unhealthy": d.when_all_unhealthy.name(),
                "total_backends": members.len(),
                "healthy_backends": healthy.len(),
                "healthy_addresses": healthy,
            })
        })
        .collect();
    Json(json!({ "domains": list }))
}

/// One row of `GET /api/v1/overwatch/latency`.
#[derive(Serialize)]
struct LatencyRow<'a> {
    subnet: String,
    region: &'a str,
    domains: &'a [String],
    rtt_ms: f64,
    samples: u32,
    agents: u16,
    last_updated: String,
}

/// Rows returned unless `limit` says otherwise (the table may hold 100,000s).
const LATENCY_DEFAULT_LIMIT: usize = 1000;

/// `GET /api/v1/overwatch/latency?subnet=&region=&limit=`: what agents learned, per
/// client subnet and region, with the `learned_latency` domains that route by it.
/// `total` counts every match; at most `limit` (default 1,000) are listed.
async fn latency(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = match params.get("limit") {
        Some(l) => l.parse::<usize>().map_err(|_| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("limit {l:?} is not a number"),
            )
        })?,
        None => LATENCY_DEFAULT_LIMIT,
    };
    let view = state.view.borrow().clone();
    let domains_of: HashMap<&str, Vec<String>> = view
        .settings
        .regions
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let names = view
                .settings
                .domains
                .iter()
                .filter(|d| {
                    d.algorithm == crate::config::Algorithm::LearnedLatency
                        && d.regions.contains(&i)
                })
                .map(|d| d.name.clone())
                .collect();
            (r.name.as_str(), names)
        })
        .collect();
    let none = Vec::new();
    let matches = view
        .latency_cells
        .iter()
        .filter(|c| params.get("region").is_none_or(|r| *c.region == **r))
        .filter(|c| {
            params
                .get("subnet")
                .is_none_or(|s| c.subnet.to_string() == *s)
        });
    let mut total = 0usize;
    let mut list = Vec::new();
    for c in matches {
        total += 1;
        if list.len() < limit {
            list.push(LatencyRow {
                subnet: c.subnet.to_string(),
                region: &c.region,
                domains: domains_of.get(&*c.region).unwrap_or(&none),
                rtt_ms: (c.rtt.as_secs_f64() * 1e6).round() / 1e3,
                samples: c.samples,
                agents: c.agents,
                last_updated: rfc3339(c.last_updated),
            });
        }
    }
    Ok(Json(
        json!({ "entries": list, "total": total, "limit": limit }),
    ))
}

/// `GET /api/v1/overwatch/changes`: the latest backend status changes, newest first.
async fn changes(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let view = state.view.borrow().clone();
    let changes: Vec<_> = view.recent.iter().map(change_json).collect();
    Json(json!({ "changes": changes, "total": view.recent.len() }))
}

/// The status page: one HTML file and one script, compiled in (no CDN, works offline).
async fn status_page() -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("web/status.html"),
    )
        .into_response()
}

async fn status_script() -> Response {
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/javascript; charset=utf-8",
            ),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("web/status.js"),
    )
        .into_response()
}

async fn agents(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let view = state.view.borrow().clone();
    let agents: Vec<_> = view
        .agents
        .iter()
        .map(|a| agent_json(a, &view.seen))
        .collect();
    Json(json!({ "agents": agents, "total": view.agents.len() }))
}

/// An agent as the API shows it.
fn agent_json(a: &AgentView, seen: &LastSeen) -> serde_json::Value {
    json!({
        "agent_id": a.agent_id,
        "region": a.region,
        "fingerprint": a.fingerprint,
        "services": a.services,
        "backends": a.backends,
        "last_seen": seen.get(&a.agent_id).or(a.last_seen).map(rfc3339),
        "stale": a.stale,
        "left": a.left,
        "version": a.version,
    })
}

/// A status change as the API shows it.
fn change_json(c: &Change) -> serde_json::Value {
    json!({
        "at": rfc3339(c.at),
        "backend": c.backend,
        "region": c.region,
        "from": c.from,
        "to": c.to,
        "reason": c.reason,
    })
}

async fn agent(
    State(state): State<ApiState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let view = state.view.borrow().clone();
    let found = view
        .agents
        .iter()
        .find(|a| a.agent_id == id)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no agent {id:?}")))?;
    let backends: Vec<BackendJson> = view
        .backends
        .iter()
        .filter(|b| b.agent.as_ref().is_some_and(|a| a.agent_id == id))
        .map(|b| backend_json(b, &view.seen))
        .collect();
    Ok(Json(
        json!({ "agent": agent_json(found, &view.seen), "backends": backends }),
    ))
}

async fn delete_agent(
    State(state): State<ApiState>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let author = authorize(&state, &headers)?;
    let revoked = commit(
        &state,
        RequestV1::RevokeAgent {
            agent_id: id.clone(),
        },
    )
    .await?;
    if revoked == RaftResponse::Applied {
        tracing::info!(agent_id = %id, %author, "agent pin revoked");
    }
    // Also drops a pin this node holds that the cluster has not written yet.
    let (reply, answer) = tokio::sync::oneshot::channel();
    state
        .commands
        .send(crate::state::Command::ForgetAgent(id.clone(), reply))
        .await
        .map_err(|_| ApiError(StatusCode::SERVICE_UNAVAILABLE, "shutting down".into()))?;
    match answer.await {
        Ok(existed) if existed || revoked == RaftResponse::Applied => {
            Ok(Json(json!({ "deleted": id })))
        }
        Ok(_) => Err(ApiError(StatusCode::NOT_FOUND, format!("no agent {id:?}"))),
        Err(_) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down".into(),
        )),
    }
}

/// The name of the `api.tokens` entry whose token the request carries.
fn authorize(state: &ApiState, headers: &HeaderMap) -> Result<String, ApiError> {
    if state.tokens.is_empty() {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "changes are disabled: no api.tokens are configured".into(),
        ));
    }
    let presented = crate::auth::bearer_token(headers).ok_or_else(|| {
        ApiError(
            StatusCode::UNAUTHORIZED,
            "a change needs `Authorization: Bearer TOKEN` with a token from api.tokens".into(),
        )
    })?;
    // Every token is compared in full, so timing tells nothing about which one nearly matched.
    let mut found = None;
    for (name, token) in state.tokens.iter() {
        if crate::auth::constant_time_eq(token.as_bytes(), presented.as_bytes()) {
            found = Some(name.clone());
        }
    }
    found.ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "unknown API token".into()))
}

fn write_error(e: WriteError) -> ApiError {
    match e {
        WriteError::NoQuorum(why) => ApiError(StatusCode::SERVICE_UNAVAILABLE, why),
        WriteError::Invalid(why) => ApiError(StatusCode::CONFLICT, why),
        WriteError::NotLeader(id) => ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("node {id} stopped leading during the write; read it back before retrying"),
        ),
    }
}

/// Commits `request` and waits (briefly) until this node has applied it, so the caller's
/// next read here sees it.
async fn commit(state: &ApiState, request: RequestV1) -> Result<RaftResponse, ApiError> {
    let written = state
        .cluster
        .write(Write::Request(RaftRequest::V1(request)))
        .await
        .map_err(write_error)?;
    if !state
        .cluster
        .wait_applied(written.index, Duration::from_secs(2))
        .await
    {
        tracing::warn!(
            index = written.index,
            "committed, but not yet applied on this node"
        );
    }
    match written.response {
        RaftResponse::Conflict(why) => Err(ApiError(StatusCode::CONFLICT, why)),
        other => Ok(other),
    }
}

#[derive(Serialize)]
struct OverrideJson {
    service: String,
    address: SocketAddr,
    healthy: bool,
    reason: String,
    author: String,
    set_at: String,
    expires_at: Option<String>,
    active: bool,
}

fn override_json(key: &OverrideKey, o: &Override, now_ms: u64) -> OverrideJson {
    let at = |ms: u64| rfc3339(UNIX_EPOCH + Duration::from_millis(ms));
    OverrideJson {
        service: key.service.clone(),
        address: key.address,
        healthy: o.healthy,
        reason: o.reason.clone(),
        author: o.author.clone(),
        set_at: at(o.set_at_ms),
        expires_at: o.expires_at_ms.map(at),
        active: o.active(now_ms),
    }
}

async fn overrides(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let machine = state.cluster.machine().borrow().clone();
    let now = wall_ms(SystemTime::now());
    let list: Vec<OverrideJson> = machine
        .overrides
        .iter()
        .filter(|(_, o)| o.active(now))
        .map(|(k, o)| override_json(k, o, now))
        .collect();
    Json(json!({ "overrides": list, "total": list.len() }))
}

fn override_key(service: &str, address: &str) -> Result<OverrideKey, ApiError> {
    if service.trim().is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "service must not be empty".into(),
        ));
    }
    let address = address.parse::<SocketAddr>().map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("address {address:?} is not IP:PORT or [IPv6]:PORT"),
        )
    })?;
    Ok(OverrideKey {
        service: service.trim().to_owned(),
        address,
    })
}

async fn get_override(
    State(state): State<ApiState>,
    axum::extract::Path((service, address)): axum::extract::Path<(String, String)>,
) -> Result<Json<OverrideJson>, ApiError> {
    let key = override_key(&service, &address)?;
    let machine = state.cluster.machine().borrow().clone();
    let now = wall_ms(SystemTime::now());
    machine
        .overrides
        .get(&key)
        .filter(|o| o.active(now))
        .map(|o| Json(override_json(&key, o, now)))
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("no override for {service} {address}"),
            )
        })
}

/// `PUT /api/v1/overrides/{service}/{address}` body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideBody {
    healthy: bool,
    reason: String,
    /// `"1h"`, `"90s"`, or a number of seconds.
    #[serde(default)]
    ttl: Option<Ttl>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum Ttl {
    Seconds(u64),
    Text(String),
}

fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("request body: {}", e.body_text()),
        )
    })
}

async fn put_override(
    State(state): State<ApiState>,
    headers: HeaderMap,
    axum::extract::Path((service, address)): axum::extract::Path<(String, String)>,
    request: Result<Json<OverrideBody>, JsonRejection>,
) -> Result<Json<OverrideJson>, ApiError> {
    let author = authorize(&state, &headers)?;
    let key = override_key(&service, &address)?;
    let request = body(request)?;
    if request.reason.trim().is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "reason must say why (it is shown to every operator)".into(),
        ));
    }
    let ttl = match request.ttl {
        None => None,
        Some(Ttl::Seconds(0)) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "ttl must be more than 0".into(),
            ));
        }
        Some(Ttl::Seconds(s)) => Some(Duration::from_secs(s)),
        Some(Ttl::Text(text)) => Some(
            crate::config::parse_duration(&text)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    ApiError(
                        StatusCode::BAD_REQUEST,
                        format!("ttl {text:?} is not a duration like 90s, 30m or 1h"),
                    )
                })?,
        ),
    };
    let now = wall_ms(SystemTime::now());
    let value = Override {
        healthy: request.healthy,
        reason: request.reason.trim().to_owned(),
        author,
        set_at_ms: now,
        expires_at_ms: ttl
            .map(|t| now.saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX))),
    };
    commit(
        &state,
        RequestV1::SetOverride {
            key: key.clone(),
            value: value.clone(),
        },
    )
    .await?;
    tracing::info!(service = %key.service, address = %key.address, healthy = value.healthy, author = %value.author, reason = %value.reason, "override set");
    Ok(Json(override_json(&key, &value, now)))
}

async fn delete_override(
    State(state): State<ApiState>,
    headers: HeaderMap,
    axum::extract::Path((service, address)): axum::extract::Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let author = authorize(&state, &headers)?;
    let key = override_key(&service, &address)?;
    match commit(&state, RequestV1::ClearOverride { key: key.clone() }).await? {
        RaftResponse::NotFound => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no override for {service} {address}"),
        )),
        _ => {
            tracing::info!(service = %key.service, address = %key.address, %author, "override cleared");
            Ok(Json(
                json!({ "cleared": { "service": key.service, "address": key.address } }),
            ))
        }
    }
}

async fn cluster_status(
    State(state): State<ApiState>,
) -> Json<crate::cluster::node::ClusterStatus> {
    Json(state.cluster.status().await)
}

/// `POST /api/v1/cluster/members` body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberBody {
    id: u64,
    address: String,
}

async fn add_member(
    State(state): State<ApiState>,
    headers: HeaderMap,
    request: Result<Json<MemberBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let author = authorize(&state, &headers)?;
    let request = body(request)?;
    if request.id == 0 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "id: node ids start at 1".into(),
        ));
    }
    if !crate::config::is_host_port(&request.address) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "address {:?} is not HOST:PORT of the node's cluster.listen",
                request.address
            ),
        ));
    }
    state
        .cluster
        .write(Write::AddMember {
            id: request.id,
            address: request.address.clone(),
        })
        .await
        .map_err(write_error)?;
    tracing::info!(node = request.id, address = %request.address, %author, "cluster member added");
    Ok(Json(
        json!({ "added": { "id": request.id, "address": request.address } }),
    ))
}

async fn remove_member(
    State(state): State<ApiState>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<u64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let author = authorize(&state, &headers)?;
    state
        .cluster
        .write(Write::RemoveMember { id })
        .await
        .map_err(write_error)?;
    tracing::info!(node = id, %author, "cluster member removed");
    Ok(Json(json!({ "removed": id })))
}

async fn ready(State(state): State<ApiState>) -> Response {
    if state.dns.borrow().generation > 0 {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "DNS has not loaded its first snapshot yet".into(),
        )
        .into_response()
    }
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "live" }))
}

/// `2026-11-21T05:33:20Z` (UTC, second precision).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_219_200 + 3661)),
            "2026-11-21T01:01:01Z"
        );
    }

    #[test]
    fn forwarded_for_only_when_trusted() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "10.1.2.3, 127.0.0.1".parse().expect("header"),
        );
        let peer: IpAddr = "::ffff:127.0.0.1".parse().expect("ip");
        assert_eq!(
            client_ip(peer, &headers, false),
            "127.0.0.1".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(
            client_ip(peer, &headers, true),
            "10.1.2.3".parse::<IpAddr>().expect("ip")
        );
    }
}
