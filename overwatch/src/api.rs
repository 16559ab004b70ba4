//! The HTTP API (read-only in this release): OpenGSLB's paths, JSON in and out, limited
//! to `api.allowed_networks`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ipnet::IpNet;
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

use crate::dns::DnsSnapshot;
use crate::state::{BackendView, ViewRx, service_counts};
use crate::status::{Effective, Validation};

/// What the handlers read, and where mutations go.
#[derive(Clone)]
pub struct ApiState {
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
}

fn backend_json(b: &BackendView) -> BackendJson {
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
            .map(|a| !matches!(a.health, opengslb_agent::gossip::wire::HealthState::Down(_))),
        agent_last_seen: b.agent.as_ref().map(|a| rfc3339(a.last_seen)),
        agent_admin: b.agent.as_ref().map(|a| {
            if a.left {
                "left"
            } else {
                match a.admin {
                    opengslb_agent::gossip::wire::AdminState::Ready => "ready",
                    opengslb_agent::gossip::wire::AdminState::Drain => "drain",
                    opengslb_agent::gossip::wire::AdminState::Maint => "maint",
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
        override_status: None,
        override_reason: None,
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
        .map(backend_json)
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
        "active_overrides": 0,
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

async fn agents(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let view = state.view.borrow().clone();
    Json(json!({ "agents": view.agents, "total": view.agents.len() }))
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
        .map(backend_json)
        .collect();
    Ok(Json(json!({ "agent": found, "backends": backends })))
}

async fn delete_agent(
    State(state): State<ApiState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    state
        .commands
        .send(crate::state::Command::ForgetAgent(id.clone(), reply))
        .await
        .map_err(|_| ApiError(StatusCode::SERVICE_UNAVAILABLE, "shutting down".into()))?;
    match answer.await {
        Ok(true) => Ok(Json(json!({ "deleted": id }))),
        Ok(false) => Err(ApiError(StatusCode::NOT_FOUND, format!("no agent {id:?}"))),
        Err(_) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down".into(),
        )),
    }
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
