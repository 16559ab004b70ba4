//! The agent's YAML exactly as operators write it (OpenGSLB key names); unknown keys are
//! errors. `validate` turns it into `AgentConfig`.

use std::path::PathBuf;

use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    /// OpenGSLB v1.1: `agent` (checked against the binary).
    #[serde(default)]
    pub(super) mode: Option<Spanned<String>>,
    /// OpenGSLB v1.1's shape: every agent key under `agent:`, with `metrics` and
    /// `logging` beside it.
    #[serde(default)]
    pub(super) agent: Option<Box<Raw>>,
    #[serde(default)]
    pub(super) logging: Option<RawLogging>,
    #[serde(default)]
    pub(super) identity: Option<RawIdentity>,
    #[serde(default)]
    pub(super) backends: Vec<RawBackend>,
    #[serde(default)]
    pub(super) predictive: RawPredictive,
    #[serde(default)]
    pub(super) gossip: Option<RawGossip>,
    #[serde(default)]
    pub(super) heartbeat: RawHeartbeat,
    #[serde(default)]
    pub(super) agent_check: RawAgentCheck,
    #[serde(default)]
    pub(super) latency_learning: Option<RawLatency>,
    #[serde(default)]
    pub(super) metrics: Option<RawMetrics>,
}

/// `logging:` (OpenGSLB's key).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLogging {
    #[serde(default)]
    pub(super) level: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) format: Option<Spanned<String>>,
}

/// `metrics:` (OpenGSLB's key): the agent's own Prometheus endpoint.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    #[serde(default)]
    pub(super) enabled: bool,
    #[serde(default)]
    pub(super) address: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLatency {
    #[serde(default)]
    pub(super) enabled: bool,
    #[serde(default)]
    pub(super) poll_interval: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) min_connection_age: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) ipv4_prefix: Option<Spanned<u8>>,
    #[serde(default)]
    pub(super) ipv6_prefix: Option<Spanned<u8>>,
    #[serde(default)]
    pub(super) ewma_alpha: Option<Spanned<f64>>,
    #[serde(default)]
    pub(super) max_subnets: Option<Spanned<usize>>,
    #[serde(default)]
    pub(super) subnet_ttl: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) min_samples: Option<u32>,
    #[serde(default)]
    pub(super) report_interval: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {
    pub(super) service_token: Spanned<String>,
    pub(super) region: Spanned<String>,
    #[serde(default)]
    pub(super) cert_path: Option<PathBuf>,
    #[serde(default)]
    pub(super) key_path: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub(super) service: Spanned<String>,
    pub(super) address: Spanned<String>,
    pub(super) port: Spanned<u16>,
    #[serde(default = "default_weight")]
    pub(super) weight: u32,
    #[serde(default)]
    pub(super) health_check: Option<RawCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    /// Absent: http, as in OpenGSLB.
    #[serde(default, rename = "type")]
    pub(super) kind: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) interval: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) path: Option<String>,
    #[serde(default)]
    pub(super) host: Option<String>,
    #[serde(default = "default_fall")]
    pub(super) failure_threshold: u32,
    #[serde(default = "default_rise")]
    pub(super) success_threshold: u32,
    #[serde(default)]
    pub(super) tls_skip_verify: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPredictive {
    #[serde(default)]
    pub(super) enabled: bool,
    #[serde(default)]
    pub(super) cpu: Option<RawThreshold>,
    #[serde(default)]
    pub(super) memory: Option<RawThreshold>,
    #[serde(default)]
    pub(super) error_rate: Option<RawErrorRate>,
    /// OpenGSLB's evaluation period; ours evaluates on every CPU sample (warned).
    #[serde(default)]
    pub(super) check_interval: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawThreshold {
    pub(super) threshold: Spanned<f64>,
    /// Parsed and unused by OpenGSLB (warned).
    #[serde(default)]
    pub(super) bleed_duration: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawErrorRate {
    pub(super) threshold: Spanned<f64>,
    #[serde(default)]
    pub(super) window: Option<Spanned<String>>,
    /// Parsed and unused by OpenGSLB (warned).
    #[serde(default)]
    pub(super) bleed_duration: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGossip {
    #[serde(default)]
    pub(super) encryption_key: Option<Spanned<opengslb_proto::seal::KeyText>>,
    #[serde(default)]
    pub(super) overwatch_nodes: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) bind_address: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) advertise_address: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeartbeat {
    #[serde(default)]
    pub(super) interval: Option<Spanned<String>>,
    /// Accepted for OpenGSLB compatibility; overwatch's `stale.threshold` decides when an
    /// agent that stopped reporting is stale.
    #[serde(default, rename = "missed_threshold")]
    pub(super) _missed_threshold: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgentCheck {
    #[serde(default)]
    pub(super) port: Option<u16>,
    #[serde(default)]
    pub(super) listen: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) drain_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) maint_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) timeframe: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) log_requests: bool,
}

pub(super) fn default_weight() -> u32 {
    100
}
pub(super) fn default_fall() -> u32 {
    3
}
pub(super) fn default_rise() -> u32 {
    2
}
