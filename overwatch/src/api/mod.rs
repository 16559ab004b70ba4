//! The HTTP API: OpenGSLB's paths, JSON in and out, limited to `api.allowed_networks`.
//!
//! `types` is the JSON (shared with `opengslb-cli` and the tests), `render` turns the
//! published view into it, `reads` and `writes` are the handlers (writes need a bearer
//! token from `api.tokens`, whose name is the author, and are acknowledged only once
//! committed through Raft), `page` is the status page. Only this module makes JSON.

mod compat;
mod dnssec;
mod explain;
mod page;
mod reads;
pub mod render;
pub mod types;
mod writes;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use ipnet::IpNet;
use tokio::sync::watch;

use crate::cluster::node::Cluster;
use crate::dns::DnsSnapshot;
use crate::model::machine::OverrideKey;
use crate::state::ViewRx;

use page::{status_page, status_script};
use reads::{
    agent, agents, backends, changes, cluster_status, domains, get_override, health_servers,
    latency, live, overrides, ready, stats,
};
pub use render::rfc3339;
use writes::{add_member, delete_agent, delete_override, put_override, remove_member};

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
    /// ... when the connection comes from one of these.
    pub trusted_proxies: Arc<Vec<IpNet>>,
    /// `api.max_overrides`.
    pub max_overrides: usize,
    /// Bumped to run every validation check now (`POST /api/v1/overwatch/validate`).
    pub validate_now: Arc<watch::Sender<u64>>,
}

/// An override's reason, at most (bytes): it is replicated to every node and shown on
/// every screen.
pub const MAX_REASON: usize = 1024;
/// A service name in a path, at most (bytes).
pub const MAX_SERVICE: usize = 253;
/// An API request body, at most.
const MAX_BODY: usize = 64 * 1024;

/// A JSON error: `{"error": "..."}` with a status.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(types::ErrorBody { error: self.1 })).into_response()
    }
}

/// The router with every route and the network check.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/health/servers", get(health_servers))
        .route("/api/v1/overwatch/backends", get(backends))
        .route("/api/v1/overwatch/stats", get(stats))
        .route("/api/v1/domains", get(domains))
        .route("/api/v1/explain", get(explain::explain))
        .route("/api/v1/overwatch/agents", get(agents))
        .route(
            "/api/v1/overwatch/agents/{id}",
            get(agent).delete(delete_agent),
        )
        .route("/api/v1/overwatch/latency", get(latency))
        .route("/api/v1/overwatch/changes", get(changes))
        .route("/api/v1/overwatch/traffic", get(reads::traffic))
        .route("/api/v1/overwatch/alerts", get(reads::alerts))
        .route("/api/v1/auth/check", get(writes::check_token))
        .route("/", get(status_page))
        .route("/status.js", get(status_script))
        .route("/api/v1/overrides", get(overrides))
        .route(
            "/api/v1/overrides/{service}/{address}",
            get(get_override).put(put_override).delete(delete_override),
        )
        .route("/api/v1/dnssec/status", get(dnssec::status))
        .route("/api/v1/dnssec/ds", get(dnssec::status))
        .route(
            "/api/v1/dnssec/rollover",
            axum::routing::post(dnssec::rollover),
        )
        .route("/api/v1/cluster/status", get(cluster_status))
        .route("/api/v1/cluster/members", axum::routing::post(add_member))
        .route("/api/v1/cluster/members/{id}", delete(remove_member))
        // OpenGSLB's paths, answering as its docs show.
        .route("/api/v1/health/regions", get(compat::health_regions))
        .route(
            "/api/v1/overwatch/validate",
            axum::routing::post(compat::validate),
        )
        .route(
            "/api/v1/overwatch/backends/{service}/{address}/{port}/override",
            axum::routing::post(compat::set_backend_override)
                .delete(compat::clear_backend_override),
        )
        // Everything above is for `api.allowed_networks` only; the probes below answer
        // anyone who reaches the listener (load balancers, orchestrators), as OpenGSLB's.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            allow_networks,
        ))
        .route("/api/v1/ready", get(ready))
        .route("/api/v1/live", get(live))
        .route("/api/v1/version", get(compat::version))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn allow_networks(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let proxies: &[IpNet] = if state.trust_proxy_headers {
        &state.trusted_proxies
    } else {
        &[]
    };
    let client = client_ip(peer.ip(), &headers, proxies);
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

/// The client a request is from: the connection's peer, or, when the peer is a trusted
/// proxy, the X-Forwarded-For entry nearest to it that is not itself a trusted proxy
/// (read from the right: every entry left of the last trusted hop could be forged by the
/// client).
fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[IpNet]) -> IpAddr {
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|n| n.contains(ip));
    let mut client = peer.to_canonical();
    if !trusted(&client) {
        return client;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip.to_canonical();
                if !trusted(&client) {
                    return client;
                }
            }
            Err(_) => return client, // what a trusted proxy wrote is unreadable: stop there
        }
    }
    client
}

/// The override key of a `/api/v1/overrides/{service}/{address}` path.
fn override_key(service: &str, address: &str) -> Result<OverrideKey, ApiError> {
    if service.trim().is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "service must not be empty".into(),
        ));
    }
    if service.len() > MAX_SERVICE {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("service: {} bytes, at most {MAX_SERVICE}", service.len()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().expect("header"));
        headers
    }

    #[test]
    fn forwarded_for_is_read_from_the_right_and_only_from_trusted_proxies() {
        let loopback: Vec<IpNet> = vec!["127.0.0.0/8".parse().expect("net")];
        let proxy = ip("::ffff:127.0.0.1");
        // Not trusting anyone: the peer.
        assert_eq!(
            client_ip(proxy, &forwarded("10.1.2.3"), &[]),
            ip("127.0.0.1")
        );
        // The proxy appended the client it saw: that one.
        assert_eq!(
            client_ip(proxy, &forwarded("10.1.2.3"), &loopback),
            ip("10.1.2.3")
        );
        // A client that wrote its own header cannot choose: the proxy's entry is the
        // rightmost, and the forged one left of it is never reached.
        assert_eq!(
            client_ip(proxy, &forwarded("127.0.0.1, 203.0.113.9"), &loopback),
            ip("203.0.113.9")
        );
        // Through two trusted proxies.
        assert_eq!(
            client_ip(proxy, &forwarded("203.0.113.9, 127.0.0.2"), &loopback),
            ip("203.0.113.9")
        );
        // A connection from outside the trusted proxies: its header is ignored.
        assert_eq!(
            client_ip(ip("203.0.113.9"), &forwarded("127.0.0.1"), &loopback),
            ip("203.0.113.9")
        );
        // Garbage from a trusted proxy: the last hop read.
        assert_eq!(
            client_ip(proxy, &forwarded("nonsense"), &loopback),
            ip("127.0.0.1")
        );
    }
}
