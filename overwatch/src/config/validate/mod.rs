//! Raw schema → `Settings`, collecting every problem with the line and column it is at.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde_saphyr::Spanned;

use super::Problem;
use super::schema::RawConfig;
use super::settings::*;

mod cluster;
mod dns;
mod domains;
mod geo;
mod listeners;
mod overwatch;
mod regions;

/// Shortest service token accepted (OpenGSLB's rule).
const MIN_TOKEN_LEN: usize = 16;
/// Shortest cluster secret accepted.
const MIN_CLUSTER_SECRET_LEN: usize = 16;
/// Largest TTL allowed by RFC 2181 (2^31 - 1).
const MAX_TTL: u32 = 2_147_483_647;

#[derive(Default)]
struct Collector {
    problems: Vec<Problem>,
    /// Keys accepted that change nothing (or assumptions made), each named with why.
    warnings: Vec<String>,
    /// Some server is given by host name.
    hostnames: bool,
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
/// Each YAML section has its own room; they run in file order so the sections after
/// `dns` and `regions` can check names against them.
pub fn validate(raw: &RawConfig) -> Result<Settings, Vec<Problem>> {
    let mut c = Collector::default();
    if let Some(mode) = &raw.mode
        && mode.value.trim() != "overwatch"
    {
        c.at(
            mode,
            format!(
                "mode: {:?}: this file is for opengslb-agent, not opengslb-overwatch (an overwatch file says mode: overwatch)",
                mode.value
            ),
        );
    }
    let dnssec = dnssec_settings(&mut c, raw.overwatch.dnssec.as_ref());
    let c = &mut c;
    let dns = dns::dns(c, raw);
    let (regions, region_index) = regions::regions(c, raw);
    let geo = geo::geolocation(c, raw, &region_index);
    let domains = domains::domains(
        c,
        raw,
        &domains::Context {
            zones: &dns.zones,
            region_index: &region_index,
            regions: &regions,
            default_ttl: dns.default_ttl.unwrap_or(60),
            geo: &geo,
        },
    );
    let (api, metrics, logging) = listeners::listeners(c, raw);
    let overwatch = overwatch::overwatch(c, raw);
    let cluster = raw
        .cluster
        .as_ref()
        .and_then(|raw| cluster::cluster_settings(c, raw));

    if !c.problems.is_empty() {
        let mut problems = std::mem::take(&mut c.problems);
        problems.sort_by_key(|p| (p.line, p.column));
        return Err(problems);
    }
    let validation = &raw.overwatch.validation;
    Ok(Settings {
        node_id: overwatch.node_id,
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
        agent_tokens: overwatch.agent_tokens,
        agent_networks: overwatch.agent_networks,
        agent_registration: overwatch.agent_registration,
        latency_prefixes: overwatch.latency_prefixes,
        gossip: overwatch.gossip,
        stale: overwatch.stale,
        dns: dns.settings,
        regions,
        domains,
        api,
        metrics,
        logging,
        cluster,
        dnssec,
        warnings: std::mem::take(&mut c.warnings),
        resolves_hostnames: c.hostnames,
    })
}

/// `overwatch.dnssec`: OpenGSLB's keys with their meaning. On unless turned off, and
/// turning it off needs `security_acknowledgment` (as in OpenGSLB).
fn dnssec_settings(
    c: &mut Collector,
    raw: Option<&super::schema::RawDnssec>,
) -> super::settings::DnssecSettings {
    let mut settings = super::settings::DnssecSettings::default();
    let Some(raw) = raw else {
        return settings;
    };
    if raw.key_sync.is_some() {
        c.warnings.push(
            "overwatch.dnssec.key_sync is accepted and unnecessary: the cluster generates the keys and Raft replicates them to every node".to_owned(),
        );
    }
    if let Some(algorithm) = &raw.algorithm {
        match crate::dns::dnssec::keys::algorithm_number(&algorithm.value) {
            Some(number) => settings.algorithm = number,
            None => c.at(
                algorithm,
                format!(
                    "overwatch.dnssec.algorithm: {:?} is not supported: use ECDSAP256SHA256 (13, the default) or ED25519 (15)",
                    algorithm.value
                ),
            ),
        }
    }
    if let Some(enabled) = &raw.enabled {
        settings.enabled = enabled.value;
        let acknowledged = raw
            .security_acknowledgment
            .as_deref()
            .is_some_and(|a| !a.trim().is_empty());
        if !enabled.value && !acknowledged {
            c.at(
                enabled,
                "overwatch.dnssec.enabled: false needs overwatch.dnssec.security_acknowledgment (any text saying why): answers would go unsigned, and a zone whose parent holds our DS would fail to validate",
            );
        }
    }
    settings
}

/// A duration that must be more than 0; `default` when absent (or after reporting a zero).
fn positive(
    c: &mut Collector,
    value: &Option<Spanned<super::HumanDuration>>,
    key: &str,
    default: Duration,
) -> Duration {
    match value {
        Some(v) if v.value.0.is_zero() => {
            c.at(v, format!("{key}: must be more than 0"));
            default
        }
        Some(v) => v.value.0,
        None => default,
    }
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

/// More UDP workers than this would be a typo, not a machine.
const MAX_UDP_WORKERS: u32 = 256;

/// `":53"` (all addresses) or `host:port` with an IP host.
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
