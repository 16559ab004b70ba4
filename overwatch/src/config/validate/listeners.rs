//! `api:`, `metrics:` and `logging:` — the HTTP listeners and the log format.

use std::collections::BTreeMap;

use serde_saphyr::Spanned;

use super::{Collector, MIN_TOKEN_LEN, listen_address, parse_net_or_ip};
use crate::config::schema::RawConfig;
use crate::config::settings::{ApiSettings, LoggingSettings, MetricsSettings};

/// IP addresses or CIDRs under `key`.
fn networks(c: &mut Collector, list: &[Spanned<String>], key: &str) -> Vec<ipnet::IpNet> {
    let mut nets = Vec::new();
    for net in list {
        match parse_net_or_ip(&net.value) {
            Some(n) => nets.push(n),
            None => c.at(
                net,
                format!("{key}: {:?} is not an IP address or CIDR", net.value),
            ),
        }
    }
    nets
}

/// The API (if enabled), the metrics listener (if enabled), and logging.
pub(super) fn listeners(
    c: &mut Collector,
    raw: &RawConfig,
) -> (
    Option<ApiSettings>,
    Option<MetricsSettings>,
    LoggingSettings,
) {
    let api = if raw.api.enabled {
        let address = listen_address(c, &raw.api.address, "api.address");
        let allowed = networks(c, &raw.api.allowed_networks, "api.allowed_networks");
        let trusted_proxies = networks(c, &raw.api.trusted_proxies, "api.trusted_proxies");
        let tokens = api_tokens(c, &raw.api.tokens);
        address.map(|address| ApiSettings {
            address,
            allowed_networks: allowed,
            trust_proxy_headers: raw.api.trust_proxy_headers,
            trusted_proxies,
            tokens,
            max_overrides: raw.api.max_overrides.as_ref().map_or(10_000, |n| {
                if n.value == 0 {
                    c.at(n, "api.max_overrides: must be 1 or more");
                }
                usize::try_from(n.value).unwrap_or(usize::MAX)
            }),
        })
    } else {
        None
    };
    let metrics = if raw.metrics.enabled {
        let allowed_networks =
            networks(c, &raw.metrics.allowed_networks, "metrics.allowed_networks");
        listen_address(c, &raw.metrics.address, "metrics.address").map(|address| MetricsSettings {
            address,
            allowed_networks,
        })
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
    (api, metrics, LoggingSettings { level, json })
}

/// `api.tokens`: long enough, and no two names sharing a token (the name is the author).
fn api_tokens(
    c: &mut Collector,
    raw: &BTreeMap<String, Spanned<String>>,
) -> BTreeMap<String, String> {
    let mut tokens = BTreeMap::new();
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
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
