//! The write endpoints: each needs a bearer token from `api.tokens` (its name is the
//! author) and is acknowledged only once committed through Raft.

use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};

use super::{ApiError, ApiState, override_key, render, types};
use crate::cluster::node::{Write, WriteError};
use crate::model::machine::{
    Override, OverrideKey, Request as RaftRequest, RequestV1, Response as RaftResponse,
};
use crate::model::view::wall_ms;

/// `DELETE /api/v1/overwatch/agents/{id}`: drops the pin cluster-wide.
pub(super) async fn delete_agent(
    State(state): State<ApiState>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<types::AgentDeleted>, ApiError> {
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
            Ok(Json(types::AgentDeleted { deleted: id }))
        }
        Ok(_) => Err(ApiError(StatusCode::NOT_FOUND, format!("no agent {id:?}"))),
        Err(_) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down".into(),
        )),
    }
}

/// `GET /api/v1/auth/check`: whether the bearer token would be accepted for changes, and
/// its name (the status page checks a pasted token before it offers changes).
pub(super) async fn check_token(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<types::TokenCheck>, ApiError> {
    authorize(&state, &headers).map(|token_name| Json(types::TokenCheck { token_name }))
}

/// The name of the `api.tokens` entry whose token the request carries.
pub(super) fn authorize(state: &ApiState, headers: &HeaderMap) -> Result<String, ApiError> {
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
pub(super) async fn commit(state: &ApiState, request: RequestV1) -> Result<RaftResponse, ApiError> {
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

pub(super) fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    // 413 for a body over the limit; 400 for anything else wrong with it.
    body.map(|Json(b)| b).map_err(|e| {
        let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError(status, format!("request body: {}", e.body_text()))
    })
}

/// `PUT /api/v1/overrides/{service}/{address}`.
pub(super) async fn put_override(
    State(state): State<ApiState>,
    headers: HeaderMap,
    axum::extract::Path((service, address)): axum::extract::Path<(String, String)>,
    request: Result<Json<types::OverrideBody>, JsonRejection>,
) -> Result<Json<types::OverrideEntry>, ApiError> {
    let author = authorize(&state, &headers)?;
    let key = override_key(&service, &address)?;
    let request = body(request)?;
    if request.reason.trim().is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "reason must say why (it is shown to every operator)".into(),
        ));
    }
    if request.reason.trim().len() > super::MAX_REASON {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "reason: {} bytes, at most {}: say why in a sentence and link to the details",
                request.reason.trim().len(),
                super::MAX_REASON
            ),
        ));
    }
    if !request.force {
        let view = state.view.borrow().clone();
        let known = known_servers(&view);
        if !known.contains(&key) {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                unknown_server_message(&key, &known),
            ));
        }
    }
    {
        // Checked against this node's applied state: writes racing from several nodes
        // may pass it by a few, never by a flood.
        let machine = state.cluster.machine();
        let overrides = &machine.borrow().overrides;
        if !overrides.contains_key(&key) && overrides.len() >= state.max_overrides {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!(
                    "api.max_overrides ({}) reached: clear overrides that are no longer needed, or raise the limit",
                    state.max_overrides
                ),
            ));
        }
    }
    let ttl = match request.ttl {
        None => None,
        Some(types::Ttl::Seconds(0)) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "ttl must be more than 0".into(),
            ));
        }
        Some(types::Ttl::Seconds(s)) => Some(Duration::from_secs(s)),
        Some(types::Ttl::Text(text)) => Some(
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
    Ok(Json(render::override_entry(&key, &value, now)))
}

/// `DELETE /api/v1/overrides/{service}/{address}`.
pub(super) async fn delete_override(
    State(state): State<ApiState>,
    headers: HeaderMap,
    axum::extract::Path((service, address)): axum::extract::Path<(String, String)>,
) -> Result<Json<types::OverrideCleared>, ApiError> {
    let author = authorize(&state, &headers)?;
    let key = override_key(&service, &address)?;
    match commit(&state, RequestV1::ClearOverride { key: key.clone() }).await? {
        RaftResponse::NotFound => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no override for {service} {address}"),
        )),
        _ => {
            tracing::info!(service = %key.service, address = %key.address, %author, "override cleared");
            Ok(Json(types::OverrideCleared {
                cleared: types::OverrideKeyJson {
                    service: key.service,
                    address: key.address,
                },
            }))
        }
    }
}

/// `POST /api/v1/cluster/members`: adds a voter (caught up as a learner first).
pub(super) async fn add_member(
    State(state): State<ApiState>,
    headers: HeaderMap,
    request: Result<Json<types::MemberBody>, JsonRejection>,
) -> Result<Json<types::MemberAdded>, ApiError> {
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
    Ok(Json(types::MemberAdded { added: request }))
}

/// `DELETE /api/v1/cluster/members/{id}`.
pub(super) async fn remove_member(
    State(state): State<ApiState>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<u64>,
) -> Result<Json<types::MemberRemoved>, ApiError> {
    let author = authorize(&state, &headers)?;
    state
        .cluster
        .write(Write::RemoveMember { id })
        .await
        .map_err(write_error)?;
    tracing::info!(node = id, %author, "cluster member removed");
    Ok(Json(types::MemberRemoved { removed: id }))
}

/// Every server this cluster knows, as override keys: the configured ones, those agents
/// announce, and those the replicated registry remembers.
fn known_servers(view: &crate::model::view::View) -> std::collections::BTreeSet<OverrideKey> {
    let announced = view.backends.iter().map(|b| OverrideKey {
        service: b.key.service.clone(),
        address: std::net::SocketAddr::new(b.key.address, b.key.port),
    });
    let registered = view.replicated.backends.keys().map(|k| OverrideKey {
        service: k.service.clone(),
        address: k.address,
    });
    announced.chain(registered).collect()
}

/// Why an override for an unknown server is refused, with the known servers most like it.
fn unknown_server_message(
    key: &OverrideKey,
    known: &std::collections::BTreeSet<OverrideKey>,
) -> String {
    let near = near_matches(key, known, 3);
    let hint = if near.is_empty() {
        ".".to_owned()
    } else {
        format!("; did you mean {}?", near.join(", "))
    };
    format!(
        "no server {} {} is known to this cluster (configured, announced by an agent, or registered){hint} An override for it would change nothing in DNS. To set one before the server exists, add --force (API: \"force\": true)",
        key.service, key.address
    )
}

/// Up to `n` known servers closest to `key`: the same address under another service or
/// port first, then by edit distance of `service address`.
fn near_matches(
    key: &OverrideKey,
    known: &std::collections::BTreeSet<OverrideKey>,
    n: usize,
) -> Vec<String> {
    let wanted = format!("{} {}", key.service, key.address);
    let mut scored: Vec<(usize, String)> = known
        .iter()
        .map(|k| {
            let text = format!("{} {}", k.service, k.address);
            let score = if k.address == key.address
                || (k.service == key.service && k.address.ip() == key.address.ip())
            {
                0
            } else {
                edit_distance(&wanted, &text)
            };
            (score, text)
        })
        .filter(|(score, _)| *score <= (wanted.len() / 3).max(3))
        .collect();
    scored.sort();
    scored.into_iter().take(n).map(|(_, text)| text).collect()
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(service: &str, address: &str) -> OverrideKey {
        OverrideKey {
            service: service.into(),
            address: address.parse().expect("address"),
        }
    }

    #[test]
    fn near_matches_put_the_same_address_first_then_small_typos() {
        let known = [
            key("app", "10.0.1.11:8080"),
            key("app", "10.0.1.12:8080"),
            key("api", "10.0.1.10:9090"),
            key("web", "192.168.7.7:443"),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            near_matches(&key("app", "10.0.1.10:8080"), &known, 3),
            [
                "app 10.0.1.11:8080",
                "app 10.0.1.12:8080",
                "api 10.0.1.10:9090"
            ]
        );
        assert_eq!(
            near_matches(&key("ap", "10.0.1.12:8080"), &known, 3)[0],
            "app 10.0.1.12:8080"
        );
        assert_eq!(
            near_matches(&key("api", "10.0.1.10:9091"), &known, 3)[0],
            "api 10.0.1.10:9090"
        );
        assert!(near_matches(&key("db", "172.16.0.1:5432"), &known, 3).is_empty());
    }

    #[test]
    fn edit_distance_counts_characters() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
