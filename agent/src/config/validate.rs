//! `Raw` → `AgentConfig`: every check serde cannot make, every default applied, every
//! problem collected with its line and column.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_saphyr::Spanned;

use super::schema::*;
use super::settings::*;
use super::{Problem, parse_duration};

/// Problems found so far, each at its place.
pub(super) struct Collector(pub(super) Vec<Problem>);

impl Collector {
    fn at<T>(&mut self, s: &Spanned<T>, message: impl Into<String>) {
        self.0.push(Problem {
            line: s.referenced.line(),
            column: s.referenced.column(),
            message: message.into(),
        });
    }

    fn duration(&mut self, s: &Option<Spanned<String>>, key: &str, default: Duration) -> Duration {
        match s {
            None => default,
            Some(v) => match parse_duration(&v.value) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    self.at(v, format!("{key}: must be more than 0"));
                    default
                }
                Err(e) => {
                    self.at(v, format!("{key}: {e}"));
                    default
                }
            },
        }
    }
}

/// Validates a parsed file: our flat shape, or OpenGSLB's (`mode: agent`, every key
/// under `agent:`, `metrics` and `logging` beside it).
pub(super) fn validate(file: Raw) -> Result<AgentConfig, Vec<Problem>> {
    let mut c = Collector(Vec::new());
    let mut warnings = Vec::new();
    if let Some(mode) = &file.mode
        && mode.value.trim() != "agent"
    {
        c.at(
            mode,
            format!(
                "mode: {:?}: this file is for opengslb-overwatch, not opengslb-agent (an agent file says mode: agent)",
                mode.value
            ),
        );
    }
    let (raw, metrics, logging) = match file.agent {
        Some(inner) => {
            if file.identity.is_some()
                || file.gossip.is_some()
                || !file.backends.is_empty()
                || inner.mode.is_some()
                || inner.agent.is_some()
            {
                c.0.push(Problem {
                    line: 0,
                    column: 0,
                    message: "agent: the file has agent keys both under agent: and outside it; put them all under agent: (OpenGSLB's shape) or none".into(),
                });
            }
            let mut inner = *inner;
            let metrics = file.metrics.or(inner.metrics.take());
            let logging = file.logging.or(inner.logging.take());
            (inner, metrics, logging)
        }
        None => {
            let metrics = file.metrics;
            let logging = file.logging;
            (
                Raw {
                    metrics: None,
                    logging: None,
                    ..file
                },
                metrics,
                logging,
            )
        }
    };
    let (Some(identity), Some(gossip)) = (&raw.identity, &raw.gossip) else {
        c.0.push(Problem {
            line: 0,
            column: 0,
            message: format!(
                "{} missing: an agent file needs identity (service_token, region) and gossip (encryption_key, overwatch_nodes)",
                match (&raw.identity, &raw.gossip) {
                    (None, None) => "identity and gossip are",
                    (None, _) => "identity is",
                    _ => "gossip is",
                }
            ),
        });
        return Err(c.0);
    };
    let logging = logging_settings(&mut c, logging.as_ref());
    let token = identity.service_token.value.trim().to_owned();
    if token.chars().count() < 16 {
        c.at(
            &identity.service_token,
            "identity.service_token: must be at least 16 characters",
        );
    }
    let region = identity.region.value.trim().to_owned();
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        c.at(
            &identity.region,
            format!("identity.region: {region:?} must be letters, digits, - or _"),
        );
    }
    let mut backends = Vec::new();
    for b in &raw.backends {
        let address = match b.address.value.trim().parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => {
                c.at(
                    &b.address,
                    format!(
                        "backends[].address: {:?} is not an IPv4 or IPv6 address",
                        b.address.value
                    ),
                );
                continue;
            }
        };
        if b.port.value == 0 {
            c.at(&b.port, "backends[].port: must be 1 to 65535");
        }
        if b.service.value.trim().is_empty() {
            c.at(&b.service, "backends[].service: must not be empty");
        }
        let check = b.health_check.as_ref().and_then(|h| {
            // No type: http, as OpenGSLB reads it.
            let kind = match h.kind.as_ref().map(|k| k.value.to_ascii_lowercase()).as_deref() {
                Some("tcp") => CheckKind::Tcp,
                None | Some("http") => CheckKind::Http,
                Some("https") => CheckKind::Https,
                Some(other) => {
                    if let Some(kind) = &h.kind {
                        c.at(
                            kind,
                            format!(
                                "backends[].health_check.type: {other:?} is not http, https or tcp"
                            ),
                        );
                    }
                    return None;
                }
            };
            let interval = c.duration(
                &h.interval,
                "backends[].health_check.interval",
                Duration::from_secs(30),
            );
            let timeout = c.duration(
                &h.timeout,
                "backends[].health_check.timeout",
                Duration::from_secs(5),
            );
            if timeout > interval {
                // OpenGSLB's demos do this; the next check waits for the slow one.
                warnings.push(format!(
                    "backends[] {}:{}: health_check.timeout {timeout:?} is longer than its interval {interval:?}: a slow check delays the next one",
                    b.address.value, b.port.value
                ));
            }
            Some(LocalCheck {
                kind,
                interval,
                timeout,
                path: h.path.clone().unwrap_or_else(|| "/health".into()),
                host: h.host.clone(),
                fall: h.failure_threshold.max(1),
                rise: h.success_threshold.max(1),
                tls_skip_verify: h.tls_skip_verify,
            })
        });
        backends.push(Backend {
            service: b.service.value.trim().to_owned(),
            address,
            port: b.port.value,
            weight: b.weight,
            check,
        });
    }
    let mut predictive = Predictive {
        error_window: Duration::from_secs(60),
        ..Predictive::default()
    };
    let unused = |warnings: &mut Vec<String>, key: &str, s: &Option<Spanned<String>>, why: &str| {
        if let Some(v) = s {
            warnings.push(format!(
                "{key} ({}) is accepted and has no effect: {why}",
                v.value
            ));
        }
    };
    let bleed = "OpenGSLB parses it and never uses it; a threshold drains the host at once";
    if let Some(missed) = raw.heartbeat._missed_threshold {
        warnings.push(format!(
            "heartbeat.missed_threshold ({missed}) is accepted and has no effect: overwatch's stale.threshold decides when a silent agent is stale"
        ));
    }
    if let Some(t) = &raw.predictive.cpu {
        unused(
            &mut warnings,
            "predictive.cpu.bleed_duration",
            &t.bleed_duration,
            bleed,
        );
    }
    if let Some(t) = &raw.predictive.memory {
        unused(
            &mut warnings,
            "predictive.memory.bleed_duration",
            &t.bleed_duration,
            bleed,
        );
    }
    if let Some(t) = &raw.predictive.error_rate {
        unused(
            &mut warnings,
            "predictive.error_rate.bleed_duration",
            &t.bleed_duration,
            bleed,
        );
    }
    unused(
        &mut warnings,
        "predictive.check_interval",
        &raw.predictive.check_interval,
        "the thresholds are checked on every CPU sample (agent_check.timeframe / 10)",
    );
    if raw.predictive.enabled {
        let mut percent = |t: &Spanned<f64>, key: &str| {
            if !(0.0..=100.0).contains(&t.value) {
                c.at(t, format!("{key}: a percentage from 0 to 100"));
            }
            Some(t.value)
        };
        predictive.cpu = raw
            .predictive
            .cpu
            .as_ref()
            .and_then(|t| percent(&t.threshold, "predictive.cpu.threshold"));
        predictive.memory = raw
            .predictive
            .memory
            .as_ref()
            .and_then(|t| percent(&t.threshold, "predictive.memory.threshold"));
        predictive.error_rate = raw
            .predictive
            .error_rate
            .as_ref()
            .and_then(|t| percent(&t.threshold, "predictive.error_rate.threshold"));
        if let Some(e) = &raw.predictive.error_rate {
            predictive.error_window = c.duration(
                &e.window,
                "predictive.error_rate.window",
                Duration::from_secs(60),
            );
        }
    }
    let mut overwatch_nodes = Vec::new();
    // HOST:PORT as written: a host name is resolved when gossip uses it (at start and
    // every 30 s), so one that does not resolve yet is not fatal here.
    for node in &gossip.overwatch_nodes {
        let text = node.value.trim();
        let port = text
            .rsplit_once(':')
            .filter(|(host, _)| !host.is_empty())
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .filter(|p| *p > 0);
        if port.is_some() {
            overwatch_nodes.push(text.to_owned());
        } else {
            c.at(
                node,
                format!("gossip.overwatch_nodes: {:?} is not HOST:PORT", node.value),
            );
        }
    }
    if gossip.overwatch_nodes.is_empty() {
        c.0.push(Problem {
            line: 0,
            column: 0,
            message: "gossip.overwatch_nodes: at least one overwatch node is needed".into(),
        });
    }
    let addr = |c: &mut Collector,
                s: &Option<Spanned<String>>,
                key: &str,
                default: &str|
     -> Option<SocketAddr> {
        let text = s.as_ref().map_or(default, |v| v.value.as_str());
        let parsed = match text.strip_prefix(':') {
            Some(port) => port
                .parse::<u16>()
                .ok()
                .map(|p| SocketAddr::from(([0, 0, 0, 0], p))),
            None => text.parse().ok(),
        };
        if parsed.is_none() {
            if let Some(v) = s {
                c.at(v, format!("{key}: {text:?} is not :PORT or IP:PORT"));
            }
        }
        parsed
    };
    let gossip_bind = addr(
        &mut c,
        &gossip.bind_address,
        "gossip.bind_address",
        "0.0.0.0:7946",
    );
    let gossip_advertise = gossip.advertise_address.as_ref().and_then(|_| {
        addr(
            &mut c,
            &gossip.advertise_address,
            "gossip.advertise_address",
            "",
        )
    });
    let heartbeat = c.duration(
        &raw.heartbeat.interval,
        "heartbeat.interval",
        Duration::from_secs(10),
    );
    let agent_check = match (&raw.agent_check.listen, raw.agent_check.port) {
        (Some(_), _) => addr(&mut c, &raw.agent_check.listen, "agent_check.listen", ""),
        (None, Some(port)) => Some(SocketAddr::from(([0, 0, 0, 0], port))),
        (None, None) => None,
    };
    let timeframe = c.duration(
        &raw.agent_check.timeframe,
        "agent_check.timeframe",
        Duration::from_millis(2000),
    );
    // OpenGSLB's port; on loopback unless the file says otherwise, as overwatch's.
    let metrics = metrics
        .filter(|m| m.enabled)
        .and_then(|m| addr(&mut c, &m.address, "metrics.address", "127.0.0.1:9090"));
    let latency = raw
        .latency_learning
        .as_ref()
        .filter(|l| l.enabled)
        .map(|l| latency_learning(&mut c, l));
    if !c.0.is_empty() {
        c.0.sort_by_key(|p| (p.line, p.column));
        return Err(c.0);
    }
    Ok(AgentConfig {
        service_token: token,
        region,
        cert_path: identity
            .cert_path
            .clone()
            .unwrap_or_else(|| "/var/lib/opengslb/agent.crt".into()),
        key_path: identity
            .key_path
            .clone()
            .unwrap_or_else(|| "/var/lib/opengslb/agent.key".into()),
        backends,
        predictive,
        encryption_key: gossip.encryption_key.as_ref().map(|k| k.value.clone()),
        overwatch_nodes,
        gossip_bind: gossip_bind.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 7946))),
        gossip_advertise,
        heartbeat,
        agent_check,
        drain_file: raw.agent_check.drain_file,
        maint_file: raw.agent_check.maint_file,
        timeframe,
        log_requests: raw.agent_check.log_requests,
        latency,
        metrics,
        logging,
        warnings,
    })
}

/// `logging.level` and `logging.format` (json or text).
fn logging_settings(c: &mut Collector, raw: Option<&RawLogging>) -> Logging {
    let mut logging = Logging::default();
    let Some(raw) = raw else {
        return logging;
    };
    if let Some(level) = &raw.level {
        let value = level.value.trim().to_ascii_lowercase();
        if ["error", "warn", "info", "debug", "trace"].contains(&value.as_str()) {
            logging.level = value;
        } else {
            c.at(
                level,
                format!(
                    "logging.level: {:?} is not one of error, warn, info, debug, trace",
                    level.value
                ),
            );
        }
    }
    if let Some(format) = &raw.format {
        match format.value.trim().to_ascii_lowercase().as_str() {
            "json" => logging.json = true,
            "text" => logging.json = false,
            _ => c.at(
                format,
                format!("logging.format: {:?} is not json or text", format.value),
            ),
        }
    }
    logging
}

fn latency_learning(c: &mut Collector, l: &RawLatency) -> LatencyLearning {
    let prefix =
        |c: &mut Collector, v: &Option<Spanned<u8>>, key: &str, max: u8, default: u8| match v {
            Some(p) if p.value == 0 || p.value > max => {
                c.at(p, format!("latency_learning.{key}: must be 1 to {max}"));
                default
            }
            Some(p) => p.value,
            None => default,
        };
    let ipv4_prefix = prefix(c, &l.ipv4_prefix, "ipv4_prefix", 32, 24);
    let ipv6_prefix = prefix(c, &l.ipv6_prefix, "ipv6_prefix", 128, 48);
    let ewma_alpha = match &l.ewma_alpha {
        Some(a) if !(a.value > 0.0 && a.value <= 1.0) => {
            c.at(
                a,
                "latency_learning.ewma_alpha: must be more than 0 and at most 1",
            );
            0.3
        }
        Some(a) => a.value,
        None => 0.3,
    };
    let max_subnets = match &l.max_subnets {
        Some(m) if m.value == 0 => {
            c.at(m, "latency_learning.max_subnets: must be 1 or more");
            100_000
        }
        Some(m) => m.value,
        None => 100_000,
    };
    LatencyLearning {
        poll_interval: c.duration(
            &l.poll_interval,
            "latency_learning.poll_interval",
            Duration::from_secs(10),
        ),
        min_connection_age: c.duration(
            &l.min_connection_age,
            "latency_learning.min_connection_age",
            Duration::from_secs(5),
        ),
        table: crate::latency::table::TableSettings {
            ipv4_prefix,
            ipv6_prefix,
            ewma_alpha,
            max_subnets,
            subnet_ttl: c.duration(
                &l.subnet_ttl,
                "latency_learning.subnet_ttl",
                Duration::from_secs(168 * 3600),
            ),
        },
        min_samples: l.min_samples.unwrap_or(5),
        report_interval: c.duration(
            &l.report_interval,
            "latency_learning.report_interval",
            Duration::from_secs(30),
        ),
    }
}
