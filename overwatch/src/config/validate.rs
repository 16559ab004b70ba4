//! Raw schema → `Settings`, collecting every problem with the line and column it is at.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde_saphyr::Spanned;

use super::Problem;
use super::schema::{RawCluster, RawConfig, RawDomain, RawHealthCheck, RawRegion};
use super::settings::*;

/// Continent codes MaxMind uses.
const CONTINENTS: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];
/// Default `max_records`.
const DEFAULT_MAX_RECORDS: u32 = 8;
/// Largest `max_records`: more would not fit a 64 KiB TCP answer anyway.
const MAX_MAX_RECORDS: u32 = 1000;
/// Shortest service token accepted (OpenGSLB's rule).
const MIN_TOKEN_LEN: usize = 16;
/// Shortest cluster secret accepted.
const MIN_CLUSTER_SECRET_LEN: usize = 16;
/// Largest TTL allowed by RFC 2181 (2^31 - 1).
const MAX_TTL: u32 = 2_147_483_647;

struct Collector {
    problems: Vec<Problem>,
}

impl Collector {
    fn at<T>(&mut self, spanned: &Spanned<T>, message: impl Into<String>) {
        self.problems.push(Problem {
            line: spanned.referenced.line(),
            column: spanned.referenced.column(),
            message: message.into(),
        });
    }
}

/// Checks everything `serde` cannot and builds `Settings`; `Err` lists every problem.
pub fn validate(raw: &RawConfig) -> Result<Settings, Vec<Problem>> {
    let mut c = Collector {
        problems: Vec::new(),
    };

    // Zones.
    let mut zones: Vec<String> = Vec::new();
    for zone in &raw.dns.zones {
        let Some(apex) = dns_name(&mut c, zone, "dns.zones") else {
            continue;
        };
        if let Some(other) = zones
            .iter()
            .find(|z| is_within(&apex, z) || is_within(z, &apex))
        {
            let message = if *other == apex {
                format!("dns.zones: zone {apex:?} is listed twice")
            } else {
                format!("dns.zones: zones {apex:?} and {other:?} overlap; list only the outer one")
            };
            c.at(zone, message);
            continue;
        }
        zones.push(apex);
    }
    if raw.dns.zones.is_empty() {
        c.problems.push(Problem {
            line: 1,
            column: 1,
            message: "dns.zones: at least one zone is needed".into(),
        });
    }
    let default_ttl = ttl(&mut c, &raw.dns.default_ttl, "dns.default_ttl");
    let mut ns_names = Vec::new();
    for ns in &raw.dns.nameservers {
        if let Some(name) = dns_name(&mut c, ns, "dns.nameservers") {
            ns_names.push(name);
        }
    }
    let hostmaster = raw
        .dns
        .hostmaster
        .as_ref()
        .and_then(|h| dns_name(&mut c, h, "dns.hostmaster"));
    let zone_settings = zones
        .iter()
        .map(|apex| ZoneSettings {
            apex: apex.clone(),
            nameservers: if ns_names.is_empty() {
                vec![format!("ns1.{apex}")]
            } else {
                ns_names.clone()
            },
            hostmaster: hostmaster
                .clone()
                .unwrap_or_else(|| format!("hostmaster.{apex}")),
            ttl: default_ttl.unwrap_or(60),
        })
        .collect();
    let listen = listen_address(&mut c, &raw.dns.listen_address, "dns.listen_address");
    let udp_workers = raw.dns.udp_workers.as_ref().and_then(|w| {
        if (1..=MAX_UDP_WORKERS).contains(&w.value) {
            Some(w.value as usize)
        } else {
            c.at(
                w,
                format!(
                    "dns.udp_workers: {} is not between 1 and {MAX_UDP_WORKERS}",
                    w.value
                ),
            );
            None
        }
    });

    // Regions.
    let validation = &raw.overwatch.validation;
    let default_interval = validation.check_interval.value.0;
    let default_timeout = validation.check_timeout.value.0;
    if default_interval.is_zero() {
        c.at(
            &validation.check_interval,
            "overwatch.validation.check_interval: must be more than 0",
        );
    }
    if default_timeout.is_zero() {
        c.at(
            &validation.check_timeout,
            "overwatch.validation.check_timeout: must be more than 0",
        );
    }
    if validation.max_concurrent.value == 0 {
        c.at(
            &validation.max_concurrent,
            "overwatch.validation.max_concurrent: must be at least 1",
        );
    }
    let mut region_index: HashMap<String, usize> = HashMap::new();
    let mut regions = Vec::new();
    let mut seen_servers = HashSet::new();
    for region in &raw.regions {
        let name = region.name.value.trim().to_owned();
        if name.is_empty() {
            c.at(&region.name, "regions[].name: must not be empty");
        } else if region_index.insert(name.clone(), regions.len()).is_some() {
            c.at(
                &region.name,
                format!("regions: region {name:?} is defined twice"),
            );
        }
        regions.push(region_settings(
            &mut c,
            region,
            &name,
            validation.enabled,
            default_interval,
            default_timeout,
            &mut seen_servers,
        ));
    }

    // Geolocation.
    let mut geo = GeoSettings {
        ecs_enabled: true,
        ..GeoSettings::default()
    };
    if let Some(g) = &raw.overwatch.geolocation {
        geo.ecs_enabled = g.ecs_enabled;
        if let Some(path) = &g.database_path {
            if !path.value.is_file() {
                c.at(
                    path,
                    format!(
                        "overwatch.geolocation.database_path: {} is not a readable file",
                        path.value.display()
                    ),
                );
            }
            geo.database = Some(path.value.clone());
        }
        if let Some(region) = &g.default_region {
            geo.default_region = region_ref(
                &mut c,
                &region_index,
                region,
                "overwatch.geolocation.default_region",
            );
        }
        for mapping in &g.custom_mappings {
            let net = match mapping.cidr.value.trim().parse::<IpNet>() {
                Ok(net) => Some(net.trunc()),
                Err(_) => {
                    c.at(&mapping.cidr, format!("overwatch.geolocation.custom_mappings: {:?} is not a CIDR such as 10.0.0.0/8 or 2001:db8::/32", mapping.cidr.value));
                    None
                }
            };
            let region = region_ref(
                &mut c,
                &region_index,
                &mapping.region,
                "overwatch.geolocation.custom_mappings[].region",
            );
            if let (Some(net), Some(region)) = (net, region) {
                geo.custom_mappings.push((net, region));
            }
        }
    }

    // Domains.
    let mut domains = Vec::new();
    let mut seen_domains = HashSet::new();
    for domain in &raw.domains {
        if let Some(d) = domain_settings(
            &mut c,
            domain,
            &zones,
            &region_index,
            &regions,
            default_ttl.unwrap_or(60),
            raw.dns.return_last_healthy,
            &geo,
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

    // API, metrics, logging.
    let api = if raw.api.enabled {
        let address = listen_address(&mut c, &raw.api.address, "api.address");
        let mut allowed = Vec::new();
        for net in &raw.api.allowed_networks {
            match parse_net_or_ip(&net.value) {
                Some(n) => allowed.push(n),
                None => c.at(
                    net,
                    format!(
                        "api.allowed_networks: {:?} is not an IP address or CIDR",
                        net.value
                    ),
                ),
            }
        }
        let tokens = api_tokens(&mut c, &raw.api.tokens);
        address.map(|address| ApiSettings {
            address,
            allowed_networks: allowed,
            trust_proxy_headers: raw.api.trust_proxy_headers,
            tokens,
        })
    } else {
        None
    };
    let metrics = if raw.metrics.enabled {
        listen_address(&mut c, &raw.metrics.address, "metrics.address")
    } else {
        None
    };
    let level = raw.logging.level.value.to_ascii_lowercase();
    if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
        c.at(
            &raw.logging.level,
            format!(
                "logging.level: {:?} is not one of error, warn, info, debug, trace",
                raw.logging.level.value
            ),
        );
    }
    let json = match raw.logging.format.value.as_str() {
        "json" => true,
        "text" => false,
        other => {
            c.at(
                &raw.logging.format,
                format!("logging.format: {other:?} is not text or json"),
            );
            false
        }
    };
    let node_id = match &raw.overwatch.identity {
        Some(identity) if identity.node_id.value.trim().is_empty() => {
            c.at(
                &identity.node_id,
                "overwatch.identity.node_id: must not be empty",
            );
            String::new()
        }
        Some(identity) => identity.node_id.value.trim().to_owned(),
        None => "overwatch".to_owned(),
    };

    let mut agent_tokens = std::collections::BTreeMap::new();
    for (service, token) in &raw.overwatch.agent_tokens {
        if token.value.trim().chars().count() < MIN_TOKEN_LEN {
            c.at(token, format!("overwatch.agent_tokens.{service}: a token must be at least {MIN_TOKEN_LEN} characters"));
        }
        agent_tokens.insert(service.clone(), token.value.trim().to_owned());
    }

    let gossip = raw.overwatch.gossip.as_ref().and_then(|g| {
        let key = match &g.encryption_key {
            None => {
                c.problems.push(Problem { line: 0, column: 0, message: "overwatch.gossip.encryption_key is missing: gossip is always encrypted; generate one with `head -c 32 /dev/urandom | base64`".into() });
                None
            }
            Some(k) => match opengslb_proto::seal::ClusterKey::from_base64(Some(&k.value)) {
                Ok(_) => Some(k.value.trim().to_owned()),
                Err(e) => {
                    c.at(k, format!("overwatch.{e}"));
                    None
                }
            },
        };
        let bind = listen_address(&mut c, &g.bind_address, "overwatch.gossip.bind_address");
        let advertise = g.advertise_address.as_ref().and_then(|a| listen_address(&mut c, a, "overwatch.gossip.advertise_address"));
        let mut seeds = Vec::new();
        for seed in &g.seeds {
            match std::net::ToSocketAddrs::to_socket_addrs(seed.value.as_str()).map(|mut a| a.next()) {
                Ok(Some(addr)) => seeds.push(addr),
                _ => c.at(seed, format!("overwatch.gossip.seeds: {:?} is not HOST:PORT", seed.value)),
            }
        }
        let positive = |c: &mut Collector, d: &Option<Spanned<super::HumanDuration>>, key: &str, default: Duration| match d {
            Some(v) if v.value.0.is_zero() => {
                c.at(v, format!("{key}: must be more than 0"));
                default
            }
            Some(v) => v.value.0,
            None => default,
        };
        let probe_interval = positive(&mut c, &g.probe_interval, "overwatch.gossip.probe_interval", Duration::from_secs(1));
        let probe_timeout = positive(&mut c, &g.probe_timeout, "overwatch.gossip.probe_timeout", Duration::from_millis(500));
        Some(GossipSettings { bind: bind?, advertise, encryption_key: key?, probe_interval, probe_timeout, seeds })
    });
    let stale = StaleSettings {
        threshold: raw.overwatch.stale.threshold.value.0,
        remove_after: raw.overwatch.stale.remove_after.value.0,
    };
    if stale.threshold.is_zero() {
        c.at(
            &raw.overwatch.stale.threshold,
            "overwatch.stale.threshold: must be more than 0",
        );
    }
    if stale.remove_after < stale.threshold {
        c.at(
            &raw.overwatch.stale.remove_after,
            "overwatch.stale.remove_after: must not be shorter than the threshold",
        );
    }

    let cluster = raw
        .cluster
        .as_ref()
        .and_then(|raw| cluster_settings(&mut c, raw));

    if !c.problems.is_empty() {
        c.problems.sort_by_key(|p| (p.line, p.column));
        return Err(c.problems);
    }
    Ok(Settings {
        node_id,
        data_dir: raw
            .overwatch
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/lib/opengslb")),
        validation: ValidationSettings {
            enabled: validation.enabled,
            max_concurrent: validation.max_concurrent.value as usize,
        },
        geo,
        agent_tokens,
        gossip,
        stale,
        dns: DnsSettings {
            listen: listen.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 53))),
            udp_workers,
            zones: zone_settings,
        },
        regions,
        domains,
        api,
        metrics,
        logging: LoggingSettings { level, json },
        cluster,
    })
}

/// `api.tokens`: long enough, and no two names sharing a token (the name is the author).
fn api_tokens(
    c: &mut Collector,
    raw: &std::collections::BTreeMap<String, Spanned<String>>,
) -> std::collections::BTreeMap<String, String> {
    let mut tokens = std::collections::BTreeMap::new();
    let mut seen: std::collections::BTreeMap<&str, &str> = std::collections::BTreeMap::new();
    for (name, token) in raw {
        let value = token.value.trim();
        if value.chars().count() < MIN_TOKEN_LEN {
            c.at(
                token,
                format!("api.tokens.{name}: a token must be at least {MIN_TOKEN_LEN} characters"),
            );
        } else if let Some(other) = seen.insert(value, name) {
            c.at(token, format!("api.tokens.{name}: the same token as api.tokens.{other}; each name needs its own, since the name is recorded as the author"));
        }
        tokens.insert(name.clone(), value.to_owned());
    }
    tokens
}

/// `cluster`: ids, addresses, secret and Raft timing.
fn cluster_settings(c: &mut Collector, raw: &RawCluster) -> Option<ClusterSettings> {
    let node_id = raw.node_id.value;
    if node_id == 0 {
        c.at(&raw.node_id, "cluster.node_id: must be 1 or more");
    }
    let listen = listen_address(c, &raw.listen, "cluster.listen");
    if raw.secret.value.trim().chars().count() < MIN_CLUSTER_SECRET_LEN {
        c.at(&raw.secret, format!("cluster.secret: must be at least {MIN_CLUSTER_SECRET_LEN} characters; generate one with `head -c 24 /dev/urandom | base64`"));
    }
    let mut peers = std::collections::BTreeMap::new();
    for (id, addr) in &raw.peers {
        let text = addr.value.trim();
        if *id == 0 {
            c.at(addr, "cluster.peers: node ids start at 1");
        } else if !is_host_port(text) {
            c.at(
                addr,
                format!("cluster.peers.{id}: {text:?} is not HOST:PORT"),
            );
        }
        peers.insert(*id, text.to_owned());
    }
    let advertise = match (&raw.advertise, peers.get(&node_id)) {
        (Some(a), _) => a.value.trim().to_owned(),
        (None, Some(own)) => own.clone(),
        (None, None) => {
            c.at(&raw.node_id, format!("cluster.peers: has no entry for this node ({node_id}); list every initial member, this one included, or set cluster.advertise"));
            String::new()
        }
    };
    let duration = |c: &mut Collector,
                    d: &Option<Spanned<super::HumanDuration>>,
                    key: &str,
                    default: Duration| match d {
        Some(v) if v.value.0.is_zero() => {
            c.at(v, format!("{key}: must be more than 0"));
            default
        }
        Some(v) => v.value.0,
        None => default,
    };
    let heartbeat_interval = duration(
        c,
        &raw.heartbeat_interval,
        "cluster.heartbeat_interval",
        Duration::from_millis(100),
    );
    let election_timeout = duration(
        c,
        &raw.election_timeout,
        "cluster.election_timeout",
        Duration::from_millis(500),
    );
    let write_timeout = duration(
        c,
        &raw.write_timeout,
        "cluster.write_timeout",
        Duration::from_secs(3),
    );
    if election_timeout < heartbeat_interval * 2 {
        if let Some(e) = &raw.election_timeout {
            c.at(
                e,
                "cluster.election_timeout: must be at least twice cluster.heartbeat_interval",
            );
        } else if let Some(h) = &raw.heartbeat_interval {
            c.at(h, "cluster.heartbeat_interval: must be at most half of cluster.election_timeout (500ms unless set)");
        }
    }
    let snapshot_logs = raw.snapshot_logs.as_ref().map_or(5000, |n| n.value);
    if let Some(n) = raw.snapshot_logs.as_ref().filter(|n| n.value == 0) {
        c.at(n, "cluster.snapshot_logs: must be 1 or more");
    }
    Some(ClusterSettings {
        node_id,
        listen: listen?,
        advertise,
        secret: raw.secret.value.trim().to_owned(),
        peers,
        heartbeat_interval,
        election_timeout,
        write_timeout,
        snapshot_logs,
    })
}

#[allow(clippy::too_many_arguments)]
fn region_settings(
    c: &mut Collector,
    region: &RawRegion,
    name: &str,
    validation_enabled: bool,
    default_interval: Duration,
    default_timeout: Duration,
    seen_servers: &mut HashSet<(IpAddr, u16, String)>,
) -> RegionSettings {
    let mut servers = Vec::new();
    for server in &region.servers {
        let address = match server.address.value.trim().parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => {
                c.at(
                    &server.address,
                    format!(
                        "regions[{name}].servers[].address: {:?} is not an IPv4 or IPv6 address",
                        server.address.value
                    ),
                );
                continue;
            }
        };
        if server.port.value == 0 {
            c.at(
                &server.port,
                format!("regions[{name}].servers[].port: must be 1 to 65535"),
            );
        }
        let service = server.service.clone().unwrap_or_else(|| name.to_owned());
        if !seen_servers.insert((address, server.port.value, service.clone())) {
            c.at(&server.address, format!("regions[{name}].servers: {address} port {} of service {service:?} is listed twice", server.port.value));
        }
        servers.push(ServerSettings {
            address,
            port: server.port.value,
            weight: server.weight.value,
            service,
        });
    }
    let check = match (&region.health_check, validation_enabled) {
        (_, false) => None,
        (Some(hc), true) => check_settings(c, hc, name, default_interval, default_timeout),
        (None, true) => Some(CheckSettings {
            kind: CheckKind::Tcp,
            interval: default_interval,
            timeout: default_timeout,
            path: "/health".into(),
            host: None,
            fall: 3,
            rise: 2,
            tls_skip_verify: false,
        }),
    };
    let mut countries = Vec::new();
    for country in &region.countries {
        let code = country.value.trim().to_ascii_uppercase();
        if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_alphabetic()) {
            c.at(
                country,
                format!(
                    "regions[{name}].countries: {:?} is not a two-letter ISO 3166 country code",
                    country.value
                ),
            );
        } else {
            countries.push(code);
        }
    }
    let mut continents = Vec::new();
    for continent in &region.continents {
        let code = continent.value.trim().to_ascii_uppercase();
        if !CONTINENTS.contains(&code.as_str()) {
            c.at(
                continent,
                format!(
                    "regions[{name}].continents: {:?} is not one of {}",
                    continent.value,
                    CONTINENTS.join(", ")
                ),
            );
        } else {
            continents.push(code);
        }
    }
    RegionSettings {
        name: name.to_owned(),
        servers,
        check,
        countries,
        continents,
    }
}

fn check_settings(
    c: &mut Collector,
    hc: &RawHealthCheck,
    region: &str,
    default_interval: Duration,
    default_timeout: Duration,
) -> Option<CheckSettings> {
    let kind = match hc.kind.value.as_str() {
        "tcp" => CheckKind::Tcp,
        "http" => CheckKind::Http,
        "https" => CheckKind::Https,
        other => {
            c.at(
                &hc.kind,
                format!("regions[{region}].health_check.type: {other:?} is not http, https or tcp"),
            );
            return None;
        }
    };
    let interval = hc.interval.as_ref().map_or(default_interval, |i| i.value.0);
    let timeout = hc.timeout.as_ref().map_or(default_timeout, |t| t.value.0);
    if let Some(i) = &hc.interval {
        if i.value.0.is_zero() {
            c.at(
                i,
                format!("regions[{region}].health_check.interval: must be more than 0"),
            );
        }
    }
    if let Some(t) = &hc.timeout {
        if t.value.0.is_zero() {
            c.at(
                t,
                format!("regions[{region}].health_check.timeout: must be more than 0"),
            );
        } else if t.value.0 > interval {
            c.at(
                t,
                format!(
                    "regions[{region}].health_check.timeout: {} is longer than the interval {:?}",
                    t.value, interval
                ),
            );
        }
    }
    if !hc.path.value.starts_with('/') {
        c.at(
            &hc.path,
            format!(
                "regions[{region}].health_check.path: {:?} must start with /",
                hc.path.value
            ),
        );
    }
    for (value, key) in [
        (&hc.failure_threshold, "failure_threshold"),
        (&hc.success_threshold, "success_threshold"),
    ] {
        if value.value == 0 || value.value > 100 {
            c.at(
                value,
                format!("regions[{region}].health_check.{key}: must be 1 to 100"),
            );
        }
    }
    Some(CheckSettings {
        kind,
        interval,
        timeout,
        path: hc.path.value.clone(),
        host: hc.host.clone(),
        fall: hc.failure_threshold.value,
        rise: hc.success_threshold.value,
        tls_skip_verify: hc.tls_skip_verify,
    })
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
    let algorithm = match domain.routing_algorithm.value.as_str() {
        "round-robin" | "round_robin" | "roundrobin" => Some(Algorithm::RoundRobin),
        "weighted" => Some(Algorithm::Weighted),
        "failover" => Some(Algorithm::Failover),
        "geolocation" => Some(Algorithm::Geolocation),
        "latency" => Some(Algorithm::Latency),
        "learned_latency" => Some(Algorithm::LearnedLatency),
        other => {
            c.at(&domain.routing_algorithm, format!("domains[{name}].routing_algorithm: {other:?} is not one of round-robin, weighted, failover, geolocation, latency, learned_latency"));
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
        None => DEFAULT_MAX_RECORDS,
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

fn region_ref(
    c: &mut Collector,
    index: &HashMap<String, usize>,
    name: &Spanned<String>,
    key: &str,
) -> Option<usize> {
    let found = index.get(name.value.trim()).copied();
    if found.is_none() {
        let mut known: Vec<&str> = index.keys().map(String::as_str).collect();
        known.sort_unstable();
        let known = if known.is_empty() {
            "no regions are defined".to_owned()
        } else {
            format!("regions: {}", known.join(", "))
        };
        c.at(
            name,
            format!("{key}: no region named {:?} ({known})", name.value),
        );
    }
    found
}

fn ttl(c: &mut Collector, value: &Spanned<u32>, key: &str) -> Option<u32> {
    if value.value == 0 || value.value > MAX_TTL {
        c.at(value, format!("{key}: must be 1 to {MAX_TTL} seconds"));
        return None;
    }
    Some(value.value)
}

/// A DNS name: lower case, no trailing dot, labels of 1–63 letters, digits, `-`, `_`.
fn dns_name(c: &mut Collector, value: &Spanned<String>, key: &str) -> Option<String> {
    let name = value
        .value
        .trim()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !valid {
        c.at(
            value,
            format!("{key}: {:?} is not a valid DNS name", value.value),
        );
        return None;
    }
    Some(name)
}

/// `name` equals `zone` or is below it.
pub(crate) fn is_within(name: &str, zone: &str) -> bool {
    name == zone
        || name
            .strip_suffix(zone)
            .is_some_and(|prefix| prefix.ends_with('.'))
}

/// `HOST:PORT` with a non-empty host (a name or an address) and a port above 0: how
/// peers' RPC addresses are written.
pub fn is_host_port(text: &str) -> bool {
    text.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
}

/// `":53"` (all addresses) or `host:port` with an IP host.
/// More UDP workers than this would be a typo, not a machine.
const MAX_UDP_WORKERS: u32 = 256;

fn listen_address(c: &mut Collector, value: &Spanned<String>, key: &str) -> Option<SocketAddr> {
    let text = value.value.trim();
    let parsed = match text.strip_prefix(':') {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .map(|p| SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), p)),
        None => text.parse::<SocketAddr>().ok(),
    };
    if parsed.is_none() {
        c.at(
            value,
            format!("{key}: {text:?} is not :PORT, IP:PORT or [IPv6]:PORT"),
        );
    }
    parsed
}

fn parse_net_or_ip(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}
