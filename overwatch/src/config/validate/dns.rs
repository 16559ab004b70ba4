//! `dns:` — zones, their SOA and NS, the listener and UDP workers.

use super::{Collector, MAX_UDP_WORKERS, dns_name, is_within, listen_address, ttl};
use crate::config::Problem;
use crate::config::schema::RawConfig;
use crate::config::settings::{DnsSettings, ZoneSettings};
use std::net::SocketAddr;

/// What the other sections need of `dns:`.
pub(super) struct Dns {
    /// Zone apexes, in file order.
    pub(super) zones: Vec<String>,
    /// `dns.default_ttl`, when valid.
    pub(super) default_ttl: Option<u32>,
    /// The settings.
    pub(super) settings: DnsSettings,
}

pub(super) fn dns(c: &mut Collector, raw: &RawConfig) -> Dns {
    let mut zones: Vec<String> = Vec::new();
    for zone in &raw.dns.zones {
        let Some(apex) = dns_name(c, zone, "dns.zones") else {
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
        // As OpenGSLB allows: each domain's parent is a zone (the outermost of nested ones).
        let mut parents: Vec<String> = raw
            .domains
            .iter()
            .filter_map(|d| {
                // Bad names are reported by the domains room.
                dns_name(&mut Collector::default(), &d.name, "domains[].name")
            })
            .map(|name| {
                name.split_once('.')
                    .map_or(name.clone(), |(_, parent)| parent.to_owned())
            })
            .collect();
        parents.sort_by_key(|z| (z.matches('.').count(), z.clone()));
        for parent in parents {
            if !zones.iter().any(|z| is_within(&parent, z)) {
                zones.push(parent);
            }
        }
        if zones.is_empty() {
            c.problems.push(Problem {
                line: 1,
                column: 1,
                message: "dns.zones: at least one zone is needed (or a domain to derive it from)"
                    .into(),
            });
        } else {
            c.warnings.push(format!(
                "dns.zones is not set: authoritative for {} (each domain's parent); list the zones to be explicit",
                zones.join(", ")
            ));
        }
    }
    let default_ttl = ttl(c, &raw.dns.default_ttl, "dns.default_ttl");
    let mut ns_names = Vec::new();
    for ns in &raw.dns.nameservers {
        if let Some(name) = dns_name(c, ns, "dns.nameservers") {
            ns_names.push(name);
        }
    }
    let hostmaster = raw
        .dns
        .hostmaster
        .as_ref()
        .and_then(|h| dns_name(c, h, "dns.hostmaster"));
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
    let listen = listen_address(c, &raw.dns.listen_address, "dns.listen_address");
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
    Dns {
        zones,
        default_ttl,
        settings: DnsSettings {
            listen: listen.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 53))),
            udp_workers,
            zones: zone_settings,
            cookies: raw.dns.cookies,
            rate_limit: raw.dns.rate_limit.as_ref().map(|r| {
                if r.responses_per_second.value == 0 {
                    c.at(&r.responses_per_second, "dns.rate_limit.responses_per_second: must be 1 or more (remove dns.rate_limit to turn it off)");
                }
                let v4 = r.ipv4_prefix.as_ref().map_or(24, |p| p.value);
                if let Some(p) = r.ipv4_prefix.as_ref().filter(|p| p.value > 32) {
                    c.at(p, "dns.rate_limit.ipv4_prefix: at most 32");
                }
                let v6 = r.ipv6_prefix.as_ref().map_or(56, |p| p.value);
                if let Some(p) = r.ipv6_prefix.as_ref().filter(|p| p.value > 128) {
                    c.at(p, "dns.rate_limit.ipv6_prefix: at most 128");
                }
                crate::dns::rrl::RateLimitSettings {
                    responses_per_second: r.responses_per_second.value,
                    slip: r.slip.as_ref().map_or(2, |s| s.value),
                    ipv4_prefix: v4,
                    ipv6_prefix: v6,
                    dry_run: r.dry_run,
                }
            }),
            cookie_rotation: super::positive(
                c,
                &raw.dns.cookie_rotation,
                "dns.cookie_rotation",
                std::time::Duration::from_secs(crate::dns::cookie::PERIOD),
            ),
        },
    }
}
