//! The validated configuration the daemon runs with: every default applied.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

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
    /// Cluster keys, base64: one, or a list during a rotation (the first seals, all
    /// open). Checked when gossip starts, to say precisely what is wrong; reloaded on
    /// SIGHUP.
    pub encryption_key: Option<opengslb_proto::seal::KeyText>,
    /// Overwatch nodes.
    pub overwatch_nodes: Vec<String>,
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
    /// `metrics.address` when `metrics.enabled`: `/metrics` and `/health` over HTTP.
    pub metrics: Option<SocketAddr>,
    /// `logging`.
    pub logging: Logging,
    /// Keys accepted that change nothing here, each named with why: logged at WARN.
    pub warnings: Vec<String>,
}

/// `logging:` (level and format; `RUST_LOG` still wins for the level).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logging {
    /// error, warn, info, debug or trace.
    pub level: String,
    /// JSON lines instead of text.
    pub json: bool,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            level: "info".into(),
            json: false,
        }
    }
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

/// `gossip.overwatch_nodes` resolved now: the addresses, and the entries that did not
/// resolve (retried later).
pub fn resolve_overwatch_nodes(nodes: &[String]) -> (Vec<SocketAddr>, Vec<String>) {
    let mut found = Vec::new();
    let mut unresolved = Vec::new();
    for node in nodes {
        match std::net::ToSocketAddrs::to_socket_addrs(node.as_str()) {
            Ok(addrs) => {
                let before = found.len();
                for addr in addrs {
                    if !found.contains(&addr) {
                        found.push(addr);
                    }
                }
                if found.len() == before {
                    unresolved.push(node.clone());
                }
            }
            Err(_) => unresolved.push(node.clone()),
        }
    }
    (found, unresolved)
}
