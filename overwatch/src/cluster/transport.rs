//! How a node reaches its peers and is reached by them: HTTPS with mutual TLS
//! (`cluster.tls`), or plain HTTP only when the operator says so
//! (`cluster.insecure_plaintext: true`, logged at every start).
//!
//! Every call carries the cluster secret, the caller's node id ([`FROM_HEADER`]) and the
//! id of the node meant ([`TARGET_HEADER`]). Under TLS the caller's id is checked against
//! its certificate ([`require_peer`]), and the callee's certificate against the id meant.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::store::NodeId;
use super::tls::ClusterTls;
use crate::listener::Limits;
pub use crate::listener::PeerCertificate;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// The Raft id a call is meant for: a node refuses calls for another id (a peer list that
/// points at the wrong address must not feed one node another's messages).
pub const TARGET_HEADER: &str = "x-opengslb-raft-target";
/// The Raft id of the caller (checked against its certificate under TLS).
pub const FROM_HEADER: &str = "x-opengslb-raft-from";

/// A request's headers must arrive within this, and an idle connection is closed after it.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Clients drop idle connections before the server would.
const CLIENT_IDLE: Duration = Duration::from_secs(20);

/// Calls to peers. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Transport {
    id: NodeId,
    secret: String,
    tls: Option<Arc<ClusterTls>>,
    /// `cluster.peers`: how this node reaches each configured member. Preferred over the
    /// address in the membership, which is what the founding node had configured.
    addresses: BTreeMap<NodeId, String>,
    plain: reqwest::Client,
    /// Under TLS, one client per peer: each checks that peer's name.
    secure: Mutex<HashMap<NodeId, reqwest::Client>>,
}

/// Why a call could not be made at all.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cluster rpc client: {0}")]
pub struct ClientError(String);

impl Transport {
    /// Node `id`'s calls, authenticated by `secret` and, when given, by `tls`.
    pub fn new(
        id: NodeId,
        secret: &str,
        tls: Option<Arc<ClusterTls>>,
        addresses: BTreeMap<NodeId, String>,
    ) -> Result<Transport, ClientError> {
        crate::crypto::install_provider();
        Ok(Transport {
            id,
            secret: secret.to_owned(),
            tls,
            addresses,
            plain: client_builder()
                .build()
                .map_err(|e| ClientError(e.to_string()))?,
            secure: Mutex::new(HashMap::new()),
        })
    }

    /// Whether calls use mutual TLS.
    pub fn secure(&self) -> bool {
        self.tls.is_some()
    }

    /// Where to call node `target`, whose membership entry says `member`.
    pub fn address<'a>(&'a self, target: NodeId, member: &'a str) -> &'a str {
        self.addresses.get(&target).map_or(member, String::as_str)
    }

    fn client(&self, target: NodeId) -> Result<reqwest::Client, ClientError> {
        let Some(tls) = &self.tls else {
            return Ok(self.plain.clone());
        };
        let mut clients = self.secure.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = clients.get(&target) {
            return Ok(client.clone());
        }
        let config = tls.client_config(target).map_err(ClientError)?;
        let client = client_builder()
            .use_preconfigured_tls(config)
            .build()
            .map_err(|e| ClientError(e.to_string()))?;
        clients.insert(target, client.clone());
        Ok(client)
    }

    /// A POST (or GET when `get`) of `path` to node `target` at its membership address
    /// `member`, with the secret and both ids set.
    pub fn request(
        &self,
        get: bool,
        target: NodeId,
        member: &str,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        let scheme = if self.secure() { "https" } else { "http" };
        let url = format!("{scheme}://{}{path}", self.address(target, member));
        let client = self.client(target)?;
        let builder = if get {
            client.get(url)
        } else {
            client.post(url)
        };
        Ok(builder
            .bearer_auth(&self.secret)
            .header(FROM_HEADER, self.id.to_string())
            .header(TARGET_HEADER, target.to_string()))
    }
}

fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .pool_idle_timeout(CLIENT_IDLE)
}

/// What went wrong in a failed call's TLS handshake, if that is what failed: a
/// configuration problem, not a network one.
pub fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        // An io::Error's source() skips the error it wraps: look inside it instead.
        next = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// Who called, as [`require_peer`] established it.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// The id in [`FROM_HEADER`].
    pub id: Option<NodeId>,
    /// Whether the caller's certificate proves it (false on plain HTTP).
    pub verified: bool,
}

/// The secret and, under TLS, the caller's certificate that every RPC route requires.
#[derive(Debug, Clone)]
pub struct PeerAuth {
    secret: Arc<String>,
    tls: Option<Arc<ClusterTls>>,
}

impl PeerAuth {
    /// Calls must carry `secret` and, under `tls`, a certificate for their [`FROM_HEADER`].
    pub fn new(secret: &str, tls: Option<Arc<ClusterTls>>) -> PeerAuth {
        PeerAuth {
            secret: Arc::new(secret.to_owned()),
            tls,
        }
    }
}

/// `router` with every route refusing a call without the cluster secret (401) or, under
/// TLS, from a certificate that is not the node the call says it comes from (403); the
/// handlers find the [`Caller`] in the request's extensions.
pub fn require_peer<S>(router: Router<S>, auth: PeerAuth) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.route_layer(axum::middleware::from_fn_with_state(auth, check_peer))
}

fn refuse(status: StatusCode, why: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": why }))).into_response()
}

async fn check_peer(
    State(auth): State<PeerAuth>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !authorized(&auth.secret, request.headers()) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "cluster secret missing or wrong".into(),
        );
    }
    let id = request
        .headers()
        .get(FROM_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<NodeId>().ok());
    let verified = match &auth.tls {
        None => false,
        Some(tls) => {
            let cert = request
                .extensions()
                .get::<PeerCertificate>()
                .and_then(|c| c.0.clone());
            match (id, cert) {
                (Some(id), Some(cert)) if tls.speaks_for(&cert, id) => true,
                (Some(id), Some(_)) => {
                    return refuse(
                        StatusCode::FORBIDDEN,
                        format!("the caller's certificate is not node {id}'s"),
                    );
                }
                (None, _) => {
                    return refuse(
                        StatusCode::FORBIDDEN,
                        format!("the call does not say which node sends it ({FROM_HEADER})"),
                    );
                }
                (_, None) => {
                    return refuse(
                        StatusCode::FORBIDDEN,
                        "the caller presented no certificate".into(),
                    );
                }
            }
        }
    };
    request.extensions_mut().insert(Caller { id, verified });
    next.run(request).await
}

/// Whether the request's bearer token is the secret (compared in constant time).
fn authorized(secret: &str, headers: &HeaderMap) -> bool {
    crate::auth::bearer_token(headers)
        .is_some_and(|p| crate::auth::constant_time_eq(p.as_bytes(), secret.as_bytes()))
}

/// The limits of the RPC listener: three nodes keep a few connections each.
pub const RPC_LIMITS: Limits = Limits {
    name: "cluster",
    connections: 256,
    per_client: 32,
    header_timeout: HEADER_TIMEOUT,
};
