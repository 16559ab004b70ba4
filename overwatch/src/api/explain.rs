//! `GET /api/v1/explain?name=&type=&client=&ecs=`: exactly what this node's DNS would
//! answer that client now, and why. It runs the DNS server's own code (`dns::handler`'s
//! placement, plan and choice) on the snapshot the server answers from, so it cannot
//! disagree with `dig`. Also the per-domain answer sets of `GET /api/v1/domains`.

use std::net::IpAddr;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use hickory_proto::rr::{LowerName, Name, Record, RecordType};
use serde::Deserialize;

use super::{ApiError, ApiState, types};
use crate::config::Algorithm;
use crate::dns::DnsSnapshot;
use crate::dns::handler::{Client, Placement, Plan, choose, place, plan};
use crate::dns::snapshot::NameKind;
use crate::model::routing::{Query as RoutingQuery, healthy_indices};
use crate::model::view::View;

/// The query string.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExplainQuery {
    name: String,
    #[serde(default, rename = "type")]
    qtype: Option<String>,
    #[serde(default)]
    client: Option<String>,
    #[serde(default)]
    ecs: Option<bool>,
}

/// `GET /api/v1/explain`.
pub(super) async fn explain(
    State(state): State<ApiState>,
    query: Result<Query<ExplainQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<types::Explanation>, ApiError> {
    let Query(q) = query.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "{}: GET /api/v1/explain?name=NAME[&type=A|AAAA][&client=IP][&ecs=false]",
                e.body_text()
            ),
        )
    })?;
    let qtype = match q.qtype.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("A") => RecordType::A,
        Some("AAAA") => RecordType::AAAA,
        Some(other) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("type {other:?}: explain covers A and AAAA (the routed records)"),
            ));
        }
    };
    let client_ip: IpAddr = match q.client.as_deref() {
        None => IpAddr::from([0, 0, 0, 0]),
        Some(text) => text.parse().map_err(|_| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("client {text:?} is not an IP address"),
            )
        })?,
    };
    let name = Name::from_ascii(format!("{}.", q.name.trim_end_matches('.'))).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("name {:?} is not a DNS name: {e}", q.name),
        )
    })?;
    // As a resolver sends it: the client's address in ECS with its full length, unless
    // the caller says the query comes without ECS (then `client` is the resolver).
    let ecs = q.ecs.unwrap_or(q.client.is_some());
    let full = if client_ip.is_ipv4() { 32 } else { 128 };
    let client = Client::new(client_ip, ecs.then_some((client_ip, full)));
    let snapshot = state.dns.borrow().clone();
    let view = state.view.borrow().clone();
    let mut out = explanation(&snapshot, &view, &LowerName::new(&name), qtype, client, ecs);
    if q.client.is_none() {
        out.client = None;
    }
    Ok(Json(out))
}

/// The explanation of one question.
fn explanation(
    snapshot: &DnsSnapshot,
    view: &View,
    name: &LowerName,
    qtype: RecordType,
    client: Client,
    ecs: bool,
) -> types::Explanation {
    let mut out = types::Explanation {
        name: name.to_string().trim_end_matches('.').to_owned(),
        qtype: qtype.to_string(),
        client: Some(client.ip),
        ecs,
        ..types::Explanation::default()
    };
    let (zone, kind) = match place(snapshot, name) {
        Placement::Outside => {
            out.rcode = "REFUSED".into();
            out.why = "the name is in none of this node's zones".into();
            return out;
        }
        Placement::In(zone, kind) => (zone, kind),
    };
    out.zone = Some(snapshot.zones[zone].label.to_string());
    let d = match kind {
        Some(NameKind::Domain(d, _)) => d,
        None => {
            out.rcode = "NXDOMAIN".into();
            out.why = "no domain of this name is configured in the zone".into();
            return out;
        }
        Some(_) => {
            out.rcode = "NOERROR".into();
            out.why = "the name exists (the zone apex, or above a domain) but has no routed records: NODATA".into();
            return out;
        }
    };
    if !snapshot.synced {
        out.rcode = "SERVFAIL".into();
        out.why = "this node is still catching up with the cluster; it answers SERVFAIL so that resolvers ask another node".into();
        return out;
    }
    let domain = &snapshot.domains[d];
    let settings = view.settings.domains.iter().find(|s| s.name == out.name);
    let v6 = qtype == RecordType::AAAA;
    let family = domain.family(v6);
    out.domain = Some(types::ExplainDomain {
        algorithm: domain.algorithm.name().to_owned(),
        regions: region_names(snapshot, &domain.regions),
        max_records: domain.max_records,
        when_all_unhealthy: domain.policy.name().to_owned(),
        ttl: settings.map_or(0, |s| s.ttl),
    });
    if family.records.is_empty() {
        out.rcode = "NOERROR".into();
        out.why = format!("no {qtype} server is configured for this domain: NODATA");
        return out;
    }
    let plan = plan(snapshot, d, v6, client, 0);
    let (chosen, outcome, scope) = choose(snapshot, d, v6, &plan);
    out.outcome = Some(outcome.name().to_owned());
    out.rcode = if chosen.is_empty() {
        "SERVFAIL"
    } else {
        "NOERROR"
    }
    .into();
    out.answer = chosen
        .iter()
        .filter_map(|&i| ip(&family.records[i]))
        .collect();
    out.possible = possible(snapshot, d, v6, &plan, &chosen)
        .iter()
        .filter_map(|&i| ip(&family.records[i]))
        .collect();
    out.ecs_scope = ecs.then_some(scope);
    out.client_region = plan
        .located
        .and_then(|l| l.region)
        .map(|r| snapshot.regions[r].name.clone());
    out.location_prefix = plan.located.map(|l| l.prefix);
    out.learned_region = plan
        .learned
        .map(|(pos, _)| snapshot.regions[domain.regions[pos]].name.clone());
    out.candidates = family
        .candidates
        .iter()
        .zip(&family.records)
        .enumerate()
        .filter_map(|(i, (c, record))| {
            let address = ip(record)?;
            let region = domain.regions[c.region_pos];
            let backend = view
                .backends
                .iter()
                .find(|b| b.key.address == address && b.region == region);
            Some(types::ExplainCandidate {
                address,
                region: snapshot.regions[region].name.clone(),
                in_rotation: c.healthy,
                weight: c.weight,
                rtt_ms: c.rtt.map(|(rtt, _)| rtt.as_secs_f64() * 1000.0),
                chosen: chosen.contains(&i),
                effective_status: backend.map(|b| b.effective.name().to_owned()),
                reason: backend.map(|b| b.reason.clone()),
            })
        })
        .collect();
    out.why = why(snapshot, d, v6, &plan, outcome.name(), &out);
    out
}

/// Every record index an answer to this client can hold now: the algorithm's pool when
/// it draws per query (round-robin, weighted), else the one answer.
fn possible(
    snapshot: &DnsSnapshot,
    d: usize,
    v6: bool,
    plan: &Plan,
    chosen: &[usize],
) -> Vec<usize> {
    let domain = &snapshot.domains[d];
    let family = domain.family(v6);
    if family.healthy.is_empty() {
        return chosen.to_vec();
    }
    match domain.algorithm {
        Algorithm::RoundRobin => family.healthy.clone(),
        Algorithm::Weighted => {
            let weighted: Vec<usize> = family
                .healthy
                .iter()
                .copied()
                .filter(|&i| family.candidates[i].weight > 0)
                .collect();
            if weighted.is_empty() {
                family.healthy.clone()
            } else {
                weighted
            }
        }
        // No RTT qualifies yet: latency rotates over every healthy server.
        Algorithm::Latency => {
            let rotated = Plan {
                query: RoutingQuery {
                    entropy: 1,
                    ..plan.query
                },
                ..*plan
            };
            if choose(snapshot, d, v6, &rotated).0.as_slice() == chosen {
                chosen.to_vec()
            } else {
                family.healthy.clone()
            }
        }
        _ => chosen.to_vec(),
    }
}

/// One sentence on how the answer came about.
fn why(
    snapshot: &DnsSnapshot,
    d: usize,
    v6: bool,
    plan: &Plan,
    outcome: &str,
    out: &types::Explanation,
) -> String {
    let domain = &snapshot.domains[d];
    let family = domain.family(v6);
    let healthy = family.healthy.len();
    let total = family.records.len();
    if healthy == 0 {
        return match outcome {
            "servfail" => format!(
                "none of the {total} servers is in rotation and when_all_unhealthy is servfail: SERVFAIL"
            ),
            policy => format!(
                "none of the {total} servers is in rotation; when_all_unhealthy is {policy}"
            ),
        };
    }
    let region = |pos: usize| snapshot.regions[domain.regions[pos]].name.clone();
    let answered_region = out
        .candidates
        .iter()
        .find(|c| c.chosen)
        .map(|c| c.region.clone())
        .unwrap_or_default();
    match domain.algorithm {
        Algorithm::RoundRobin => format!(
            "round-robin over the {healthy} servers in rotation (of {total}), at most {} per answer; the order rotates with each query",
            domain.max_records
        ),
        Algorithm::Weighted => format!(
            "weighted draws among the {} servers in rotation with a weight, at most {} per answer; each query draws anew",
            out.possible.len(),
            domain.max_records
        ),
        Algorithm::Failover if domain.max_records == 1 => format!(
            "failover (active/standby): the first server in rotation, regions in priority order ({answered_region}); the same for every client"
        ),
        Algorithm::Failover => format!(
            "failover: up to {} servers in rotation of the first region in priority order that has one ({answered_region}); the same for every client",
            domain.max_records
        ),
        Algorithm::Latency => {
            if out.possible.len() > out.answer.len() {
                "latency: no server has enough RTT samples under the limit yet, so the answer rotates over every server in rotation".to_owned()
            } else {
                format!(
                    "latency: the region whose best server has the lowest probe RTT ({answered_region}), fastest first"
                )
            }
        }
        Algorithm::Geolocation => match (&out.client_region, plan.query.client_region) {
            (Some(r), Some(pos)) if region(pos) == answered_region => format!(
                "geolocation: the client is in region {r} (decided by its first {} bits), which has servers in rotation",
                plan.query.client_prefix
            ),
            (Some(r), _) => format!(
                "geolocation: the client is in region {r}, which has no server in rotation for this domain; the first region in priority order that has one ({answered_region}) answers"
            ),
            (None, _) => format!(
                "geolocation: the client matches no region (no custom mapping, database entry or default_region); the first region in priority order with a server in rotation ({answered_region}) answers"
            ),
        },
        Algorithm::LearnedLatency => match plan.learned {
            Some((pos, prefix)) => format!(
                "learned_latency: agents learned that region {} is fastest for this client's /{prefix}",
                region(pos)
            ),
            None => format!(
                "learned_latency: nothing learned for this client yet (geo_fallback): geolocation chose {answered_region}"
            ),
        },
    }
}

/// The answer sets of a domain as `GET /api/v1/domains` shows them: one set when every
/// client gets the same, else one per region a client may be located in.
pub(super) fn domain_answers(snapshot: &DnsSnapshot, d: usize) -> types::DomainAnswerSets {
    let domain = &snapshot.domains[d];
    let v6 = domain.v4.records.is_empty();
    let family = domain.family(v6);
    let set = |client_region: Option<usize>| -> Vec<IpAddr> {
        let query = RoutingQuery {
            max_records: domain.max_records,
            entropy: 0,
            client_region,
            client_prefix: 0,
            max_latency: domain.max_latency,
            min_samples: domain.min_samples,
            learned_region: None,
            learned_prefix: 0,
        };
        let plan = Plan {
            query,
            located: None,
            learned: None,
        };
        let (chosen, ..) = choose(snapshot, d, v6, &plan);
        possible(snapshot, d, v6, &plan, &chosen)
            .iter()
            .filter_map(|&i| ip(&family.records[i]))
            .collect()
    };
    let depends_on_client = matches!(
        domain.algorithm,
        Algorithm::Geolocation | Algorithm::LearnedLatency
    ) && !healthy_indices(&family.candidates).is_empty();
    let by_region = if depends_on_client {
        domain
            .regions
            .iter()
            .enumerate()
            .map(|(pos, &r)| (snapshot.regions[r].name.clone(), set(Some(pos))))
            .collect()
    } else {
        Default::default()
    };
    let per_answer = match domain.algorithm {
        Algorithm::RoundRobin | Algorithm::Weighted => {
            "rotates per query over these, at most max_records per answer"
        }
        Algorithm::Failover => "every client gets these",
        Algorithm::Latency => "every client gets these (fastest region)",
        Algorithm::Geolocation => {
            "depends on the client's region (answer_by_region); a client in no region gets the first"
        }
        Algorithm::LearnedLatency => {
            "depends on the client's learned or located region (answer_by_region)"
        }
    };
    types::DomainAnswerSets {
        answer: set(None),
        depends_on_client,
        answer_by_region: by_region,
        how: per_answer.to_owned(),
    }
}

fn region_names(snapshot: &DnsSnapshot, regions: &[usize]) -> Vec<String> {
    regions
        .iter()
        .map(|&r| snapshot.regions[r].name.clone())
        .collect()
}

fn ip(record: &Record) -> Option<IpAddr> {
    crate::dns::traffic::record_ip(record)
}
