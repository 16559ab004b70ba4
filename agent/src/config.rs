//! Daemon mode's configuration (`/etc/opengslb/agent.yaml`), OpenGSLB key names.
//!
//! Parsed with serde-saphyr (unknown keys rejected), then validated into `AgentConfig`;
//! every problem is reported as `FILE:LINE:COLUMN: message`.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

/// One problem at a place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line (0: no particular place).
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// What is wrong, naming the key.
    pub message: String,
}

/// A config file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// Every problem found.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self
            .problems
            .iter()
            .map(|p| format!("{}:{}:{}: {}", self.file, p.line, p.column, p.message))
            .collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    identity: RawIdentity,
    #[serde(default)]
    backends: Vec<RawBackend>,
    #[serde(default)]
    predictive: RawPredictive,
    gossip: RawGossip,
    #[serde(default)]
    heartbeat: RawHeartbeat,
    #[serde(default)]
    agent_check: RawAgentCheck,
    #[serde(default)]
    latency_learning: Option<RawLatency>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLatency {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    poll_interval: Option<Spanned<String>>,
    #[serde(default)]
    min_connection_age: Option<Spanned<String>>,
    #[serde(default)]
    ipv4_prefix: Option<Spanned<u8>>,
    #[serde(default)]
    ipv6_prefix: Option<Spanned<u8>>,
    #[serde(default)]
    ewma_alpha: Option<Spanned<f64>>,
    #[serde(default)]
    max_subnets: Option<Spanned<usize>>,
    #[serde(default)]
    subnet_ttl: Option<Spanned<String>>,
    #[serde(default)]
    min_samples: Option<u32>,
    #[serde(default)]
    report_interval: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    service_token: Spanned<String>,
    region: Spanned<String>,
    #[serde(default)]
    cert_path: Option<PathBuf>,
    #[serde(default)]
    key_path: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    service: Spanned<String>,
    address: Spanned<String>,
    port: Spanned<u16>,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default)]
    health_check: Option<RawCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    #[serde(rename = "type")]
    kind: Spanned<String>,
    #[serde(default)]
    interval: Option<Spanned<String>>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default = "default_fall")]
    failure_threshold: u32,
    #[serde(default = "default_rise")]
    success_threshold: u32,
    #[serde(default)]
    tls_skip_verify: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPredictive {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    cpu: Option<RawThreshold>,
    #[serde(default)]
    memory: Option<RawThreshold>,
    #[serde(default)]
    error_rate: Option<RawErrorRate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThreshold {
    threshold: Spanned<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawErrorRate {
    threshold: Spanned<f64>,
    #[serde(default)]
    window: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGossip {
    #[serde(default)]
    encryption_key: Option<Spanned<String>>,
    #[serde(default)]
    overwatch_nodes: Vec<Spanned<String>>,
    #[serde(default)]
    bind_address: Option<Spanned<String>>,
    #[serde(default)]
    advertise_address: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeartbeat {
    #[serde(default)]
    interval: Option<Spanned<String>>,
    /// Accepted for OpenGSLB compatibility; overwatch's `stale.threshold` decides when an
    /// agent that stopped reporting is stale.
    #[serde(default, rename = "missed_threshold")]
    _missed_threshold: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgentCheck {
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    listen: Option<Spanned<String>>,
    #[serde(default)]
    drain_file: Option<PathBuf>,
    #[serde(default)]
    maint_file: Option<PathBuf>,
    #[serde(default)]
    timeframe: Option<Spanned<String>>,
    #[serde(default)]
    log_requests: bool,
}

fn default_weight() -> u32 {
    100
}
fn default_fall() -> u32 {
    3
}
fn default_rise() -> u32 {
    2
}

/// Local check protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// TCP connect.
    Tcp,
    /// HTTP GET, 2xx.
    Http,
    /// HTTPS GET, 2xx.
    Https,
}

/// A backend's local health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCheck {
    /// Protocol.
    pub kind: CheckKind,
    /// Between checks.
    pub interval: Duration,
    /// One check's limit.
    pub timeout: Duration,
    /// HTTP path.
    pub path: String,
    /// HTTP Host header.
    pub host: Option<String>,
    /// Failures to go down.
    pub fall: u32,
    /// Successes to come up.
    pub rise: u32,
    /// https: accept any certificate.
    pub tls_skip_verify: bool,
}

/// A backend the agent speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Service.
    pub service: String,
    /// Address clients use.
    pub address: IpAddr,
    /// Port.
    pub port: u16,
    /// Weight.
    pub weight: u32,
    /// Local check, if any.
    pub check: Option<LocalCheck>,
}

/// Predictive drain thresholds (percentages); `None` disables one.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Predictive {
    /// CPU busy % above which the host drains.
    pub cpu: Option<f64>,
    /// Memory used % above which the host drains.
    pub memory: Option<f64>,
    /// Failed local checks % over `error_window` above which the host drains.
    pub error_rate: Option<f64>,
    /// Window for the error rate.
    pub error_window: Duration,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// Token proving the agent may report its services.
    pub service_token: String,
    /// Region (part of the agent id).
    pub region: String,
    /// Certificate file.
    pub cert_path: PathBuf,
    /// Key file.
    pub key_path: PathBuf,
    /// Backends.
    pub backends: Vec<Backend>,
    /// Predictive drain.
    pub predictive: Predictive,
    /// Cluster key, base64 (checked when gossip starts, to say precisely what is wrong).
    pub encryption_key: Option<String>,
    /// Overwatch nodes.
    pub overwatch_nodes: Vec<SocketAddr>,
    /// Gossip bind address.
    pub gossip_bind: SocketAddr,
    /// Address announced to the cluster.
    pub gossip_advertise: Option<SocketAddr>,
    /// Re-publish period.
    pub heartbeat: Duration,
    /// Agent-check server: listen address, if serving.
    pub agent_check: Option<SocketAddr>,
    /// Drain file.
    pub drain_file: Option<PathBuf>,
    /// Maint file.
    pub maint_file: Option<PathBuf>,
    /// CPU timeframe.
    pub timeframe: Duration,
    /// Log each agent-check request.
    pub log_requests: bool,
    /// Passive latency learning (`None`: off).
    pub latency: Option<LatencyLearning>,
}

/// `latency_learning`
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyLearning {
    /// Between socket dumps.
    pub poll_interval: Duration,
    /// Connections younger than this are not sampled.
    pub min_connection_age: Duration,
    /// Subnet table settings.
    pub table: crate::latency::table::TableSettings,
    /// Subnets with fewer samples are not reported.
    pub min_samples: u32,
    /// Between reports of the changed subnets.
    pub report_interval: Duration,
}

struct Collector(Vec<Problem>);

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

/// Go-style durations: `500ms`, `30s`, `5m`, `1h`, `1m30s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?}: expected e.g. 500ms, 30s, 5m, 1h");
    let mut rest = text.trim();
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .filter(|&d| d > 0)
            .ok_or_else(bad)?;
        let value: u32 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "h" => Duration::from_secs(3600),
            "m" => Duration::from_secs(60),
            "s" => Duration::from_secs(1),
            "ms" => Duration::from_millis(1),
            _ => return Err(bad()),
        };
        total = unit
            .checked_mul(value)
            .and_then(|d| total.checked_add(d))
            .ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Reads and validates a file.
pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        problems: vec![Problem {
            line: 0,
            column: 0,
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    parse(&file, &text)
}

/// Parses and validates config text.
pub fn parse(file: &str, text: &str) -> Result<AgentConfig, ConfigError> {
    let fail = |problems| ConfigError {
        file: file.to_owned(),
        problems,
    };
    let raw: Raw = serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        let text = e.without_snippet().to_string();
        let text = text.strip_prefix("error: ").unwrap_or(&text);
        let text = text
            .strip_prefix("line ")
            .and_then(|r| r.split_once(": "))
            .map_or(text, |(_, m)| m);
        let text = text.rfind(" at line ").map_or(text, |at| &text[..at]);
        fail(vec![Problem {
            line,
            column,
            message: text.trim().to_owned(),
        }])
    })?;
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
    let latency = raw
        .latency_learning
        .as_ref()
        .filter(|l| l.enabled)
        .map(|l| latency_learning(&mut c, l));
    if !c.0.is_empty() {
        c.0.sort_by_key(|p| (p.line, p.column));
        return Err(fail(c.0));
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

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "identity:\n  service_token: app-token-0123456789\n  region: eu-west\n  cert_path: /tmp/a.crt\n  key_path: /tmp/a.key\nbackends:\n  - service: app\n    address: 127.0.0.1\n    port: 8080\n    health_check:\n      type: http\n      path: /healthz\n      interval: 1s\n      timeout: 500ms\n      failure_threshold: 2\n      success_threshold: 1\npredictive:\n  enabled: true\n  cpu:\n    threshold: 90\n  memory:\n    threshold: 85\ngossip:\n  encryption_key: AAAA\n  overwatch_nodes: [\"127.0.0.1:7946\"]\n  bind_address: \"127.0.0.1:0\"\nheartbeat:\n  interval: 2s\nagent_check:\n  listen: \"127.0.0.1:7777\"\n  drain_file: /tmp/drain\n  timeframe: 500ms\n";

    #[test]
    fn a_good_file_is_read_with_defaults() {
        let c = parse("agent.yaml", GOOD).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((c.region.as_str(), c.backends.len()), ("eu-west", 1));
        let check = c.backends[0].check.as_ref().expect("check");
        assert_eq!(
            (
                check.kind,
                check.interval,
                check.timeout,
                check.fall,
                check.rise
            ),
            (
                CheckKind::Http,
                Duration::from_secs(1),
                Duration::from_millis(500),
                2,
                1
            )
        );
        assert_eq!(
            (
                c.predictive.cpu,
                c.predictive.memory,
                c.predictive.error_rate
            ),
            (Some(90.0), Some(85.0), None)
        );
        assert_eq!(
            c.overwatch_nodes,
            ["127.0.0.1:7946".parse::<SocketAddr>().expect("addr")]
        );
        assert_eq!(c.heartbeat, Duration::from_secs(2));
        assert_eq!(c.agent_check, Some("127.0.0.1:7777".parse().expect("addr")));
        assert_eq!(c.timeframe, Duration::from_millis(500));
        assert_eq!(c.backends[0].weight, 100);
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/agent.yaml");
        let c = load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (c.region.as_str(), c.backends.len(), c.overwatch_nodes.len()),
            ("us-east", 1, 3)
        );
        assert!(c.predictive.cpu.is_some() && c.predictive.error_rate.is_some());
        opengslb_proto::seal::ClusterKey::from_base64(c.encryption_key.as_deref())
            .expect("the example key is well-formed");
        let l = c.latency.expect("latency learning on in the example");
        assert_eq!(
            (
                l.table.ipv4_prefix,
                l.table.ipv6_prefix,
                l.table.max_subnets,
                l.min_samples
            ),
            (24, 48, 100_000, 5)
        );
        assert_eq!(l.table.subnet_ttl, Duration::from_secs(168 * 3600));
    }

    #[test]
    fn latency_learning_values_are_checked_at_their_place() {
        let text = format!(
            "{GOOD}latency_learning:\n  enabled: true\n  ipv4_prefix: 33\n  ewma_alpha: 0\n  max_subnets: 0\n  poll_interval: soon\n"
        );
        let err = parse("a.yaml", &text).expect_err("bad values");
        let text = err.to_string();
        for needle in [
            "latency_learning.ipv4_prefix: must be 1 to 32",
            "latency_learning.ewma_alpha: must be more than 0 and at most 1",
            "latency_learning.max_subnets: must be 1 or more",
            "latency_learning.poll_interval: invalid duration",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        let off = parse(
            "a.yaml",
            &format!("{GOOD}latency_learning:\n  enabled: false\n"),
        )
        .expect("valid");
        assert!(off.latency.is_none());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "5", "5d", "ms", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn problems_are_reported_at_their_place() {
        let text = GOOD
            .replace("app-token-0123456789", "short")
            .replace("address: 127.0.0.1", "address: nowhere")
            .replace("type: http", "type: icmp");
        let err = parse("agent.yaml", &text).expect_err("bad");
        let lines: Vec<String> = err.to_string().lines().map(str::to_owned).collect();
        assert!(
            lines[0].starts_with("agent.yaml:2:18: identity.service_token: must be at least 16"),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("agent.yaml:8:14: backends[].address: \"nowhere\""),
            "{lines:?}"
        );
        let err = parse("agent.yaml", &GOOD.replace("heartbeat:", "heartbeet:"))
            .expect_err("unknown key");
        assert!(
            err.to_string()
                .starts_with("agent.yaml:27:1: unknown field `heartbeet`"),
            "{err}"
        );
    }
}
