//! `regions:` and `overwatch.validation` — servers, their health checks, and the
//! defaults checks take from validation.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::Collector;

/// Continent codes MaxMind uses.
const CONTINENTS: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];
use crate::config::schema::{RawConfig, RawHealthCheck, RawRegion};
use crate::config::settings::*;

/// The regions in file order, and their index by name.
pub(super) fn regions(
    c: &mut Collector,
    raw: &RawConfig,
) -> (Vec<RegionSettings>, HashMap<String, usize>) {
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
            c,
            region,
            &name,
            validation.enabled,
            default_interval,
            default_timeout,
            &mut seen_servers,
        ));
    }
    (regions, region_index)
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
        let text = server.address.value.trim();
        let addresses: Vec<IpAddr> = match text.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            // A host name, as OpenGSLB allows: resolved now, on every reload, and every
            // 30 s after (app.rs); one that does not resolve is left out until it does.
            Err(_) if is_hostname(text) => {
                c.hostnames = true;
                let resolved = resolve(text, server.port.value);
                if resolved.is_empty() {
                    c.warnings.push(format!(
                        "regions[{name}].servers[].address {text}: does not resolve now; left out of answers until it does (resolved again every 30 s)"
                    ));
                }
                resolved
            }
            Err(_) => {
                c.at(
                    &server.address,
                    format!(
                        "regions[{name}].servers[].address: {:?} is not an IP address or a host name",
                        server.address.value
                    ),
                );
                continue;
            }
        };
        for address in addresses {
            if server.port.value == 0 {
                c.at(
                    &server.port,
                    format!("regions[{name}].servers[].port: must be 1 to 65535"),
                );
            }
            let named = server
                .service
                .as_ref()
                .is_some_and(|s| !s.trim().is_empty());
            let service = server
                .service
                .clone()
                .filter(|_| named)
                .unwrap_or_else(|| name.to_owned());
            if !seen_servers.insert((address, server.port.value, service.clone())) {
                c.at(&server.address, format!("regions[{name}].servers: {address} port {} of service {service:?} is listed twice", server.port.value));
            }
            servers.push(ServerSettings {
                address,
                port: server.port.value,
                weight: server.weight.value,
                service,
                host: server.host.clone().filter(|h| !h.trim().is_empty()),
                named,
            });
        }
    }
    let unnamed: Vec<String> = servers
        .iter()
        .filter(|s| !s.named)
        .map(|s| SocketAddr::new(s.address, s.port).to_string())
        .collect();
    if !unnamed.is_empty() {
        c.warnings.push(format!(
            "regions[{name}].servers {} have no service: they answer for every domain listing region {name} (OpenGSLB 1.0's rule); set service: <domain name> to tie each to its domain",
            unnamed.join(", ")
        ));
    }
    let check = match (&region.health_check, validation_enabled) {
        (_, false) => None,
        (Some(hc), true) => check_settings(c, hc, name, default_interval, default_timeout),
        // OpenGSLB's default check: HTTP GET /health.
        (None, true) => Some(CheckSettings {
            kind: CheckKind::Http,
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
    let kind = match hc
        .kind
        .as_ref()
        .map(|k| k.value.trim().to_ascii_lowercase())
        .as_deref()
    {
        Some("tcp") => CheckKind::Tcp,
        None | Some("http") => CheckKind::Http,
        Some("https") => CheckKind::Https,
        Some(other) => {
            if let Some(kind) = &hc.kind {
                c.at(
                    kind,
                    format!(
                        "regions[{region}].health_check.type: {other:?} is not http, https or tcp"
                    ),
                );
            }
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
            // OpenGSLB's demos do this: a slow check delays the next one.
            c.warnings.push(format!(
                "regions[{region}].health_check.timeout {} is longer than its interval {:?}: a slow check delays the next one",
                t.value, interval
            ));
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

/// Whether `text` is a DNS host name (letters, digits and hyphens in dot-separated labels).
fn is_hostname(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        && !text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// The addresses `host` resolves to now, in the order the resolver gave, without repeats.
fn resolve(host: &str, port: u16) -> Vec<IpAddr> {
    let mut found: Vec<IpAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map(|addrs| addrs.map(|a| a.ip()).collect())
        .unwrap_or_default();
    let mut seen = HashSet::new();
    found.retain(|ip| seen.insert(*ip));
    found
}
