//! `Raw` → `AgentConfig`: every check serde cannot make, every default applied, every
//! problem collected with its line and column.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
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

/// Validates a parsed file.
pub(super) fn validate(raw: Raw) -> Result<AgentConfig, Vec<Problem>> {
    let mut c = Collector(Vec::new());
    let token = raw.identity.service_token.value.trim().to_owned();
    if token.chars().count() < 16 {
        c.at(
            &raw.identity.service_token,
            "identity.service_token: must be at least 16 characters",
        );
    }
    let region = raw.identity.region.value.trim().to_owned();
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        c.at(
            &raw.identity.region,
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
            let kind = match h.kind.value.as_str() {
                "tcp" => CheckKind::Tcp,
                "http" => CheckKind::Http,
                "https" => CheckKind::Https,
                other => {
                    c.at(
                        &h.kind,
                        format!(
                            "backends[].health_check.type: {other:?} is not http, https or tcp"
                        ),
                    );
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
                if let Some(t) = &h.timeout {
                    c.at(
                        t,
                        "backends[].health_check.timeout: longer than the interval",
                    );
                }
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
    for node in &raw.gossip.overwatch_nodes {
        match node.value.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(addr)) => overwatch_nodes.push(addr),
            _ => c.at(
                node,
                format!("gossip.overwatch_nodes: {:?} is not HOST:PORT", node.value),
            ),
        }
    }
    if raw.gossip.overwatch_nodes.is_empty() {
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
        &raw.gossip.bind_address,
        "gossip.bind_address",
        "0.0.0.0:7946",
    );
    let gossip_advertise = raw.gossip.advertise_address.as_ref().and_then(|_| {
        addr(
            &mut c,
            &raw.gossip.advertise_address,
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
    let metrics = raw
        .metrics
        .enabled
        .then(|| {
            addr(
                &mut c,
                &raw.metrics.address,
                "metrics.address",
                "127.0.0.1:9090",
            )
        })
        .flatten();
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
        cert_path: raw
            .identity
            .cert_path
            .unwrap_or_else(|| "/var/lib/opengslb/agent.crt".into()),
        key_path: raw
            .identity
            .key_path
            .unwrap_or_else(|| "/var/lib/opengslb/agent.key".into()),
        backends,
        predictive,
        encryption_key: raw.gossip.encryption_key.map(|k| k.value),
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
    })
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
