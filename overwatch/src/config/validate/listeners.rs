//! `api:`, `metrics:` and `logging:` — the HTTP listeners and the log format.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde_saphyr::Spanned;

use super::{Collector, MIN_TOKEN_LEN, listen_address, parse_net_or_ip};
use crate::config::schema::RawConfig;
use crate::config::settings::{ApiSettings, LoggingSettings};

/// The API (if enabled), the metrics listener (if enabled), and logging.
pub(super) fn listeners(
    c: &mut Collector,
    raw: &RawConfig,
) -> (Option<ApiSettings>, Option<SocketAddr>, LoggingSettings) {
    let api = if raw.api.enabled {
        let address = listen_address(c, &raw.api.address, "api.address");
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
        let tokens = api_tokens(c, &raw.api.tokens);
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
        listen_address(c, &raw.metrics.address, "metrics.address")
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
