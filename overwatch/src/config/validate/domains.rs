//! `domains:` — names inside the zones, their algorithm, regions, TTL and policies.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::{Collector, dns_name, is_within, region_ref, ttl};
use crate::config::schema::{RawConfig, RawDomain};
use crate::config::settings::*;

/// Default `max_records`.
const DEFAULT_MAX_RECORDS: u32 = 8;
/// Largest `max_records`: more would not fit a 64 KiB TCP answer anyway.
const MAX_MAX_RECORDS: u32 = 1000;

/// What domains are checked against.
pub(super) struct Context<'a> {
    pub(super) zones: &'a [String],
    pub(super) region_index: &'a HashMap<String, usize>,
    pub(super) regions: &'a [RegionSettings],
    pub(super) default_ttl: u32,
    pub(super) geo: &'a GeoSettings,
}

pub(super) fn domains(c: &mut Collector, raw: &RawConfig, cx: &Context<'_>) -> Vec<DomainSettings> {
    let mut domains = Vec::new();
    let mut seen_domains = HashSet::new();
    for domain in &raw.domains {
        if let Some(d) = domain_settings(
            c,
            domain,
            cx.zones,
            cx.region_index,
            cx.regions,
            cx.default_ttl,
            raw.dns.return_last_healthy,
            cx.geo,
            raw.overwatch.gossip.is_some(),
        ) {
            if !seen_domains.insert(d.name.clone()) {
                c.at(
                    &domain.name,
                    format!("domains: {:?} is defined twice", d.name),
                );
                continue;
            }
            domains.push(d);
        }
    }
    domains
}

#[allow(clippy::too_many_arguments)]
fn domain_settings(
    c: &mut Collector,
    domain: &RawDomain,
    zones: &[String],
    region_index: &HashMap<String, usize>,
    regions: &[RegionSettings],
    default_ttl: u32,
    return_last_healthy: bool,
    geo: &GeoSettings,
    agents_may_report: bool,
) -> Option<DomainSettings> {
    let name = dns_name(c, &domain.name, "domains[].name")?;
    let zone = zones.iter().position(|z| is_within(&name, z));
    if zone.is_none() {
        c.at(
            &domain.name,
            format!(
                "domains[].name: {name:?} is not inside any of dns.zones ({})",
                zones.join(", ")
            ),
        );
    }
    // OpenGSLB's names and aliases, in any case.
    let algorithm = match domain
        .routing_algorithm
        .value
        .trim()
        .to_ascii_lowercase()
        .replace('_', "-")
        .as_str()
    {
        "round-robin" | "roundrobin" | "rr" => Some(Algorithm::RoundRobin),
        "weighted" | "weight" => Some(Algorithm::Weighted),
        "failover" | "active-standby" => Some(Algorithm::Failover),
        "geolocation" | "geo" => Some(Algorithm::Geolocation),
        "latency" => Some(Algorithm::Latency),
        "learned-latency" => Some(Algorithm::LearnedLatency),
        _ => {
            c.at(&domain.routing_algorithm, format!("domains[{name}].routing_algorithm: {:?} is not one of round-robin (rr), weighted (weight), failover (active-standby), geolocation (geo), latency, learned_latency (learned-latency)", domain.routing_algorithm.value));
            None
        }
    };
    let mut region_ids = Vec::new();
    for region in &domain.regions {
        if let Some(i) = region_ref(c, region_index, region, &format!("domains[{name}].regions")) {
            if region_ids.contains(&i) {
                c.at(
                    region,
                    format!(
                        "domains[{name}].regions: {:?} is listed twice",
                        region.value
                    ),
                );
            }
            region_ids.push(i);
        }
    }
    if domain.regions.is_empty() {
        c.at(
            &domain.name,
            format!("domains[{name}].regions: at least one region is needed"),
        );
    } else if !agents_may_report
        && !region_ids.is_empty()
        && region_ids.iter().all(|&i| regions[i].servers.is_empty())
    {
        c.at(
            &domain.regions[0],
            format!("domains[{name}].regions: none of them has a server (and without overwatch.gossip no agent can report one)"),
        );
    }
    if algorithm == Some(Algorithm::Geolocation)
        && geo.database.is_none()
        && geo.custom_mappings.is_empty()
        && geo.default_region.is_none()
    {
        c.at(&domain.routing_algorithm, format!("domains[{name}].routing_algorithm: geolocation needs overwatch.geolocation (database_path, custom_mappings or default_region)"));
    }
    let ttl_value = match &domain.ttl {
        Some(t) => ttl(c, t, &format!("domains[{name}].ttl"))?,
        None => default_ttl,
    };
    let max_records = match &domain.max_records {
        Some(m) if m.value == 0 || m.value > MAX_MAX_RECORDS => {
            c.at(
                m,
                format!("domains[{name}].max_records: must be 1 to {MAX_MAX_RECORDS}"),
            );
            1
        }
        Some(m) => m.value,
        // OpenGSLB's failover is active/standby: one record. Ask for more explicitly.
        None if algorithm == Some(Algorithm::Failover) => 1,
        None => DEFAULT_MAX_RECORDS,
    };
    let services = match &domain.services {
        None => vec![name.clone()],
        Some(list) => {
            let mut services = Vec::new();
            for s in list {
                let service = s.value.trim();
                if service.is_empty() {
                    c.at(
                        s,
                        format!("domains[{name}].services: a service name must not be empty"),
                    );
                } else if !services.iter().any(|x: &String| x == service) {
                    services.push(service.to_owned());
                }
            }
            if list.is_empty() {
                c.at(&domain.name, format!("domains[{name}].services: an empty list answers nothing; leave it out to answer the servers of service {name:?}"));
            }
            services
        }
    };
    let when_all_unhealthy = match &domain.when_all_unhealthy {
        Some(p) => match p.value.as_str() {
            "servfail" => AllDownPolicy::ServFail,
            "return_last_healthy" => AllDownPolicy::ReturnLastHealthy,
            "return_all" => AllDownPolicy::ReturnAll,
            other => {
                c.at(p, format!("domains[{name}].when_all_unhealthy: {other:?} is not servfail, return_last_healthy or return_all"));
                AllDownPolicy::ServFail
            }
        },
        None if return_last_healthy => AllDownPolicy::ReturnLastHealthy,
        None => AllDownPolicy::ServFail,
    };
    let (mut max_latency, mut min_samples) = (None, 3);
    if let Some(l) = &domain.latency_config {
        if let Some(alpha) = &l.smoothing_factor {
            c.warnings.push(format!(
                "domains[{name}].latency_config.smoothing_factor ({}) is accepted and has no effect: OpenGSLB parses it and never uses it; RTTs are smoothed with a fixed EWMA",
                alpha.value
            ));
        }
        if !matches!(
            algorithm,
            Some(Algorithm::Latency | Algorithm::LearnedLatency)
        ) {
            c.at(
                &domain.routing_algorithm,
                format!("domains[{name}].latency_config: only used by routing_algorithm latency or learned_latency"),
            );
        }
        if let Some(m) = &l.max_latency_ms {
            if m.value == 0 {
                c.at(
                    m,
                    format!("domains[{name}].latency_config.max_latency_ms: must be more than 0"),
                );
            }
            max_latency = Some(Duration::from_millis(u64::from(m.value)));
        }
        if let Some(s) = &l.min_samples {
            if s.value == 0 {
                c.at(
                    s,
                    format!("domains[{name}].latency_config.min_samples: must be at least 1"),
                );
            }
            min_samples = s.value;
        }
    }
    Some(DomainSettings {
        services,
        name,
        zone: zone?,
        algorithm: algorithm?,
        regions: region_ids,
        ttl: ttl_value,
        max_records: max_records as usize,
        when_all_unhealthy,
        max_latency,
        min_samples,
    })
}
