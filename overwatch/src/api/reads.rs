//! The read endpoints: what the published view, the replicated state and Raft say now.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState, render, types};
use crate::model::status::Effective;
use crate::model::view::{BackendView, service_counts, wall_ms};

/// `GET /api/v1/health/servers`.
pub(super) async fn health_servers(State(state): State<ApiState>) -> Json<types::ServerList> {
    let view = state.view.borrow().clone();
    let servers = view
        .backends
        .iter()
        .map(|b| types::Server {
            service: b.key.service.clone(),
            address: b.key.address,
            port: b.key.port,
            region: b.key.region.clone(),
            healthy: b.effective.in_rotation(),
            status: b.effective.name().to_owned(),
            last_check: b.check.last_check.map(render::rfc3339),
            last_error: b.check.last_error.clone(),
        })
        .collect();
    Json(types::ServerList { servers })
}

/// `GET /api/v1/overwatch/backends?status=&service=&region=`.
pub(super) async fn backends(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<types::BackendList>, ApiError> {
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
    let backends: Vec<types::Backend> = view
        .backends
        .iter()
        .filter(|b| status.is_none_or(|s| b.effective == s))
        .filter(|b| params.get("service").is_none_or(|s| &b.key.service == s))
        .filter(|b| params.get("region").is_none_or(|r| &b.key.region == r))
        .map(|b| render::backend(b, &view.seen))
        .collect();
    Ok(Json(types::BackendList {
        total: backends.len(),
        backends,
    }))
}

/// `GET /api/v1/overwatch/stats`.
pub(super) async fn stats(State(state): State<ApiState>) -> Json<types::Stats> {
    let view = state.view.borrow().clone();
    let count = |e: Effective| view.backends.iter().filter(|b| b.effective == e).count();
    let services = service_counts(&view.backends)
        .into_iter()
        .map(|(s, (total, healthy))| (s, types::ServiceCount { total, healthy }))
        .collect();
    Json(types::Stats {
        total_backends: view.backends.len(),
        healthy_backends: count(Effective::Healthy),
        unhealthy_backends: count(Effective::Unhealthy),
        stale_backends: count(Effective::Stale),
        draining_backends: count(Effective::Draining),
        active_agents: view.agents.iter().filter(|a| !a.stale && !a.left).count(),
        registered_agents: view.agents.len(),
        registry_backends: view.replicated.backends.len(),
        pinned_agents: view.replicated.pins.len(),
        active_overrides: view
            .replicated
            .active_overrides(wall_ms(SystemTime::now()))
            .count(),
        validation_enabled: view.settings.validation.enabled,
        services,
    })
}

/// `GET /api/v1/domains`.
pub(super) async fn domains(State(state): State<ApiState>) -> Json<types::DomainList> {
    let view = state.view.borrow().clone();
    let snapshot = state.dns.borrow().clone();
    let domains = view
        .settings
        .domains
        .iter()
        .map(|d| {
            let answers = snapshot
                .domains
                .iter()
                .position(|a| &*a.label == d.name.as_str())
                .map(|i| super::explain::domain_answers(&snapshot, i))
                .unwrap_or_else(|| types::DomainAnswerSets {
                    answer: Vec::new(),
                    depends_on_client: false,
                    answer_by_region: Default::default(),
                    how: "not answered yet (DNS starting)".into(),
                });
            let members: Vec<&BackendView> = view
                .backends
                .iter()
                .filter(|b| {
                    view.settings
                        .serves(d, b.region, &b.key.service, b.key.address, b.key.port)
                })
                .collect();
            let healthy: Vec<IpAddr> = members
                .iter()
                .filter(|b| b.effective.in_rotation())
                .map(|b| b.key.address)
                .collect();
            types::Domain {
                name: d.name.clone(),
                routing_algorithm: d.algorithm.name().to_owned(),
                regions: d
                    .regions
                    .iter()
                    .map(|&r| view.settings.regions[r].name.clone())
                    .collect(),
                ttl: d.ttl,
                max_records: d.max_records,
                when_all_unhealthy: d.when_all_unhealthy.name().to_owned(),
                total_backends: members.len(),
                healthy_backends: healthy.len(),
                healthy_addresses: healthy,
                answers,
            }
        })
        .collect();
    Json(types::DomainList { domains })
}

/// Rows returned unless `limit` says otherwise (the table may hold 100,000s).
const LATENCY_DEFAULT_LIMIT: usize = 1000;

/// `GET /api/v1/overwatch/latency?subnet=&region=&limit=`: what agents learned, per
/// client subnet and region, with the `learned_latency` domains that route by it.
/// `total` counts every match; at most `limit` (default 1,000) are listed.
pub(super) async fn latency(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<types::LatencyList>, ApiError> {
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
    let mut entries = Vec::new();
    for c in matches {
        total += 1;
        if entries.len() < limit {
            entries.push(types::LatencyEntry {
                subnet: c.subnet.to_string(),
                region: c.region.to_string(),
                domains: domains_of.get(&*c.region).cloned().unwrap_or_default(),
                rtt_ms: (c.rtt.as_secs_f64() * 1e6).round() / 1e3,
                samples: c.samples,
                agents: c.agents,
                last_updated: render::rfc3339(c.last_updated),
            });
        }
    }
    Ok(Json(types::LatencyList {
        entries,
        total,
        limit,
    }))
}

/// `GET /api/v1/overwatch/changes`: the latest backend status changes, newest first.
pub(super) async fn changes(State(state): State<ApiState>) -> Json<types::ChangeList> {
    let view = state.view.borrow().clone();
    Json(types::ChangeList {
        changes: view.recent.iter().map(render::change).collect(),
        total: view.recent.len(),
    })
}

/// `GET /api/v1/overwatch/agents`.
pub(super) async fn agents(State(state): State<ApiState>) -> Json<types::AgentList> {
    let view = state.view.borrow().clone();
    Json(types::AgentList {
        agents: view
            .agents
            .iter()
            .map(|a| render::agent(a, &view.seen))
            .collect(),
        total: view.agents.len(),
    })
}

/// `GET /api/v1/overwatch/agents/{id}`.
pub(super) async fn agent(
    State(state): State<ApiState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<types::AgentDetail>, ApiError> {
    let view = state.view.borrow().clone();
    let found = view
        .agents
        .iter()
        .find(|a| a.agent_id == id)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no agent {id:?}")))?;
    let backends = view
        .backends
        .iter()
        .filter(|b| b.agent.as_ref().is_some_and(|a| a.agent_id == id))
        .map(|b| render::backend(b, &view.seen))
        .collect();
    Ok(Json(types::AgentDetail {
        agent: render::agent(found, &view.seen),
        backends,
    }))
}

/// `GET /api/v1/overrides`: the overrides in force.
pub(super) async fn overrides(State(state): State<ApiState>) -> Json<types::OverrideList> {
    let machine = state.cluster.machine().borrow().clone();
    let now = wall_ms(SystemTime::now());
    let overrides: Vec<types::OverrideEntry> = machine
        .overrides
        .iter()
        .filter(|(_, o)| o.active(now))
        .map(|(k, o)| render::override_entry(k, o, now))
        .collect();
    Json(types::OverrideList {
        total: overrides.len(),
        overrides,
    })
}

/// `GET /api/v1/overrides/{service}/{address}`.
pub(super) async fn get_override(
    State(state): State<ApiState>,
    axum::extract::Path((service, address)): axum::extract::Path<(String, String)>,
) -> Result<Json<types::OverrideEntry>, ApiError> {
    let key = super::override_key(&service, &address)?;
    let machine = state.cluster.machine().borrow().clone();
    let now = wall_ms(SystemTime::now());
    machine
        .overrides
        .get(&key)
        .filter(|o| o.active(now))
        .map(|o| Json(render::override_entry(&key, o, now)))
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("no override for {service} {address}"),
            )
        })
}

/// `GET /api/v1/cluster/status`.
pub(super) async fn cluster_status(State(state): State<ApiState>) -> Json<types::ClusterStatus> {
    Json(state.cluster.status().await)
}

/// `GET /api/v1/ready`: DNS is serving from a snapshot built from a real view of the
/// cluster's state.
pub(super) async fn ready(State(state): State<ApiState>) -> Response {
    let (generation, synced) = {
        let dns = state.dns.borrow();
        (dns.generation, dns.synced)
    };
    if !synced {
        let progress = state.cluster.catching_up().unwrap_or_default();
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "catching up with the cluster (started without data): DNS answers SERVFAIL until then; {progress}"
            ),
        )
        .into_response()
    } else if generation > 0 {
        Json(types::Probe {
            status: "ready".into(),
        })
        .into_response()
    } else {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "DNS has not loaded its first snapshot yet".into(),
        )
        .into_response()
    }
}

/// `GET /api/v1/live`.
pub(super) async fn live() -> Json<types::Probe> {
    Json(types::Probe {
        status: "live".into(),
    })
}

/// `GET /api/v1/overwatch/traffic`.
pub(super) async fn traffic() -> Json<types::Traffic> {
    let (queries_total, rows) = crate::dns::traffic::TRAFFIC.totals();
    Json(types::Traffic {
        at_ms: wall_ms(SystemTime::now()),
        queries_total,
        answers: rows
            .into_iter()
            .map(|(domain, address, total)| types::TrafficAnswers {
                domain,
                address,
                total,
            })
            .collect(),
    })
}

/// Free space in the data dir below this share of its file system is an alert.
const DISK_LOW_SHARE: f64 = 0.05;

/// `GET /api/v1/overwatch/alerts`: no quorum, no leader, catching up, stale agents, a
/// nearly full data dir.
pub(super) async fn alerts(State(state): State<ApiState>) -> Json<types::Alerts> {
    let cluster = state.cluster.status().await;
    let view = state.view.borrow().clone();
    let synced = state.dns.borrow().synced;
    let stale = view.agents.iter().filter(|a| a.stale && !a.left).count();
    let disk = crate::telemetry::data_dir_space();
    Json(types::Alerts {
        alerts: alert_list(&cluster, synced, stale, disk),
    })
}

fn alert_list(
    cluster: &types::ClusterStatus,
    synced: bool,
    stale: usize,
    disk: Option<(u64, u64)>,
) -> Vec<types::Alert> {
    let alert = |kind: &str, severity: &str, message: String| types::Alert {
        kind: kind.into(),
        severity: severity.into(),
        message,
    };
    let mut alerts = Vec::new();
    if cluster.leader.is_none() {
        alerts.push(alert(
            "no_leader",
            "critical",
            format!(
                "node {} knows no leader: overrides and agent registrations cannot be written; DNS answers from the last state",
                cluster.node_id
            ),
        ));
    } else if !cluster.quorum {
        alerts.push(alert(
            "no_quorum",
            "critical",
            format!(
                "no quorum (leader {}): writes fail until a majority of the members answer; DNS answers from the last state",
                cluster.leader.unwrap_or_default()
            ),
        ));
    }
    if !synced {
        alerts.push(alert(
            "not_synced",
            "critical",
            "this node started without data and has not caught up with the cluster: its DNS answers SERVFAIL".into(),
        ));
    }
    if let Some((free, size)) = disk.filter(|(_, size)| *size > 0) {
        let share = free as f64 / size as f64;
        if share < DISK_LOW_SHARE {
            alerts.push(alert(
                "disk_low",
                "critical",
                format!(
                    "the data dir's file system has {} MiB free ({:.1}%): a full disk stops this node",
                    free / (1024 * 1024),
                    share * 100.0
                ),
            ));
        }
    }
    if stale > 0 {
        alerts.push(alert(
            "stale_agents",
            "warning",
            format!(
                "{stale} agent(s) stale: their backends are out of DNS unless validation vouches for them (servers --status stale)"
            ),
        ));
    }
    alerts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(leader: Option<u64>, quorum: bool) -> types::ClusterStatus {
        types::ClusterStatus {
            node_id: 1,
            state: "Follower".into(),
            leader,
            term: 3,
            last_applied_index: None,
            quorum,
            members: Vec::new(),
        }
    }

    fn kinds(alerts: &[types::Alert]) -> Vec<&str> {
        alerts.iter().map(|a| a.kind.as_str()).collect()
    }

    #[test]
    fn alerts_name_each_condition_most_severe_first() {
        assert!(alert_list(&cluster(Some(2), true), true, 0, Some((50, 100))).is_empty());
        assert_eq!(
            kinds(&alert_list(&cluster(None, false), true, 0, None)),
            ["no_leader"]
        );
        assert_eq!(
            kinds(&alert_list(
                &cluster(Some(2), false),
                false,
                2,
                Some((4, 100))
            )),
            ["no_quorum", "not_synced", "disk_low", "stale_agents"]
        );
        let disk = alert_list(&cluster(Some(2), true), true, 0, Some((3 << 20, 100 << 20)));
        assert!(disk[0].message.contains("3 MiB free (3.0%)"), "{disk:?}");
    }
}
