//! OpenGSLB's API paths that scripts and probes already use, answering with the field
//! names its documentation shows, over the same handlers and rules as ours (overrides
//! still need a bearer token: OpenGSLB's had none).

use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::{ApiError, ApiState, render, types, writes};

/// `GET /api/v1/version` (outside `api.allowed_networks`).
pub(super) async fn version() -> Json<types::Version> {
    Json(types::Version {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        name: "opengslb-overwatch".to_owned(),
    })
}

/// `GET /api/v1/health/regions`: servers per region and how many are in rotation.
pub(super) async fn health_regions(State(state): State<ApiState>) -> Json<types::RegionHealthList> {
    let view = state.view.borrow().clone();
    let regions = view
        .settings
        .regions
        .iter()
        .enumerate()
        .map(|(i, region)| {
            let members: Vec<_> = view.backends.iter().filter(|b| b.region == i).collect();
            let healthy = members.iter().filter(|b| b.effective.in_rotation()).count();
            let total = members.len();
            types::RegionHealth {
                name: region.name.clone(),
                total_servers: total,
                healthy_count: healthy,
                unhealthy_count: total - healthy,
                health_percent: if total == 0 {
                    0.0
                } else {
                    (healthy as f64 * 10_000.0 / total as f64).round() / 100.0
                },
            }
        })
        .collect();
    Json(types::RegionHealthList {
        regions,
        generated_at: render::rfc3339(SystemTime::now()),
    })
}

/// `POST /api/v1/overwatch/validate[?service=&address=&port=]`: every validation check
/// runs now (a named backend must exist; checks run for all, they are cheap).
pub(super) async fn validate(
    State(state): State<ApiState>,
    Query(target): Query<ValidateTarget>,
) -> Result<Json<types::Done>, ApiError> {
    let view = state.view.borrow().clone();
    if !view.settings.validation.enabled {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "validation is disabled (overwatch.validation.enabled: false)".into(),
        ));
    }
    let message = match (&target.service, &target.address, target.port) {
        (None, None, None) => "Validation triggered for all backends".to_owned(),
        (Some(service), Some(address), Some(port)) => {
            let ip: IpAddr = address.parse().map_err(|_| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("address {address:?} is not an IP address"),
                )
            })?;
            if !view
                .backends
                .iter()
                .any(|b| b.key.service == *service && b.key.address == ip && b.key.port == port)
            {
                return Err(ApiError(
                    StatusCode::NOT_FOUND,
                    format!("backend not found: {service} {}", SocketAddr::new(ip, port)),
                ));
            }
            format!(
                "Validation triggered for specific backend {service} {} (and every other)",
                SocketAddr::new(ip, port)
            )
        }
        _ => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "service, address and port go together (or none of them)".into(),
            ));
        }
    };
    state.validate_now.send_modify(|n| *n = n.wrapping_add(1));
    Ok(Json(types::Done {
        success: true,
        message,
    }))
}

/// The query of [`validate`].
#[derive(Debug, Deserialize)]
pub(super) struct ValidateTarget {
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    port: Option<u16>,
}

/// OpenGSLB's override body: both fields optional.
#[derive(Debug, Default, Deserialize)]
pub(super) struct BackendOverride {
    #[serde(default)]
    healthy: bool,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /api/v1/overwatch/backends/{service}/{address}/{port}/override`: our override
/// (replicated, for a server the cluster knows) under OpenGSLB's path and answer.
pub(super) async fn set_backend_override(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((service, address, port)): Path<(String, String, u16)>,
    body: Result<Json<BackendOverride>, JsonRejection>,
) -> Result<Json<types::Done>, ApiError> {
    let body = match body {
        Ok(Json(body)) => body,
        // OpenGSLB's body is optional: none means "out of DNS".
        Err(JsonRejection::MissingJsonContentType(_)) => BackendOverride::default(),
        Err(e) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("request body: {}", e.body_text()),
            ));
        }
    };
    let server = server(&address, port)?;
    let request = types::OverrideBody {
        healthy: body.healthy,
        reason: body
            .reason
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| {
                "set through /api/v1/overwatch/backends/…/override without a reason".into()
            }),
        ttl: None,
        force: false,
    };
    let _set = writes::put_override(
        State(state),
        headers,
        Path((service, server.to_string())),
        Ok(Json(request)),
    )
    .await?;
    Ok(Json(types::Done {
        success: true,
        message: format!(
            "Override set: backend marked as {}",
            if body.healthy { "healthy" } else { "unhealthy" }
        ),
    }))
}

/// `DELETE /api/v1/overwatch/backends/{service}/{address}/{port}/override`.
pub(super) async fn clear_backend_override(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((service, address, port)): Path<(String, String, u16)>,
) -> Result<Json<types::Done>, ApiError> {
    let server = server(&address, port)?;
    let _cleared =
        writes::delete_override(State(state), headers, Path((service, server.to_string()))).await?;
    Ok(Json(types::Done {
        success: true,
        message: "Override cleared".into(),
    }))
}

fn server(address: &str, port: u16) -> Result<SocketAddr, ApiError> {
    address
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, port))
        .map_err(|_| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("address {address:?} is not an IP address"),
            )
        })
}
