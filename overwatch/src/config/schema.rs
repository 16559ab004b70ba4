//! The YAML schema exactly as operators write it (OpenGSLB key names), before validation.
//!
//! Every struct rejects unknown keys. Values that `validate` checks are `Spanned` so that
//! a problem found after parsing still points at its line and column.

use std::path::PathBuf;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::duration::HumanDuration;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// OpenGSLB v1.1: `overwatch` (checked against the binary).
    #[serde(default)]
    pub mode: Option<Spanned<String>>,
    /// OpenGSLB's `includes`: globs of files holding more regions, domains, agent tokens
    /// and custom mappings (relative to this file).
    #[serde(default)]
    pub includes: Vec<Spanned<String>>,
    /// Node identity, validation checks, geolocation, data directory.
    #[serde(default)]
    pub overwatch: RawOverwatch,
    /// The authoritative DNS server.
    pub dns: RawDns,
    /// Regions and their servers.
    #[serde(default)]
    pub regions: Vec<RawRegion>,
    /// Load-balanced names.
    #[serde(default)]
    pub domains: Vec<RawDomain>,
    /// HTTP API.
    #[serde(default)]
    pub api: RawApi,
    /// Prometheus metrics.
    #[serde(default)]
    pub metrics: RawMetrics,
    /// Logging.
    #[serde(default)]
    pub logging: RawLogging,
    /// The Raft cluster of overwatch nodes (absent: a cluster of one).
    #[serde(default)]
    pub cluster: Option<RawCluster>,
}

/// `cluster:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// This node's Raft id: a number, unique in the cluster, never reused.
    pub node_id: Spanned<u64>,
    /// Raft RPC address (default `:7947`).
    #[serde(default = "default_cluster_listen")]
    pub listen: Spanned<String>,
    /// The address peers reach this node at (default: `peers[node_id]`).
    #[serde(default)]
    pub advertise: Option<Spanned<String>>,
    /// Shared secret every RPC carries (at least 16 characters).
    pub secret: Spanned<String>,
    /// Every initial member, this node included: id → `HOST:PORT` of its RPC listener.
    #[serde(default)]
    pub peers: std::collections::BTreeMap<u64, Spanned<String>>,
    /// Leader heartbeat period (default 100ms).
    #[serde(default)]
    pub heartbeat_interval: Option<Spanned<HumanDuration>>,
    /// A follower that hears no leader for this long (up to 1.25× as long) starts an
    /// election (default 500ms); failover takes about twice this.
    #[serde(default)]
    pub election_timeout: Option<Spanned<HumanDuration>>,
    /// How long a write may wait for a quorum before it fails with 503 (default 3s).
    #[serde(default)]
    pub write_timeout: Option<Spanned<HumanDuration>>,
    /// Log entries between snapshots (default 5000).
    #[serde(default)]
    pub snapshot_logs: Option<Spanned<u64>>,
    /// Mutual TLS on the Raft RPC: `{ca, cert, key}` (PEM files; make them with
    /// `opengslb-cli cluster certs`).
    #[serde(default)]
    pub tls: Option<RawClusterTls>,
    /// Plain HTTP on the Raft RPC instead of TLS, knowingly: the secret and every write
    /// cross the network readable.
    #[serde(default)]
    pub insecure_plaintext: Option<Spanned<bool>>,
}

/// `cluster.tls`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClusterTls {
    /// The cluster CA certificate.
    pub ca: Spanned<String>,
    /// This node's certificate, naming `node-{node_id}.opengslb.invalid`.
    pub cert: Spanned<String>,
    /// This node's private key.
    pub key: Spanned<String>,
}

fn default_cluster_listen() -> Spanned<String> {
    unplaced(":7947".into())
}

/// `overwatch:`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOverwatch {
    /// `identity: {node_id, region}`.
    #[serde(default)]
    pub identity: Option<RawIdentity>,
    /// Where durable state will live (used by the cluster issue; checked now).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Overwatch's own health checks of the servers.
    #[serde(default)]
    pub validation: RawValidation,
    /// Client location for the `geolocation` algorithm.
    #[serde(default)]
    pub geolocation: Option<RawGeolocation>,
    /// Service → token an agent must prove to report backends of that service.
    #[serde(default)]
    pub agent_tokens: std::collections::BTreeMap<String, Spanned<String>>,
    /// Service → networks (CIDR or address) its agent-announced backends must lie in;
    /// a service not listed may announce any address.
    #[serde(default)]
    pub agent_networks: std::collections::BTreeMap<String, Vec<Spanned<String>>>,
    /// How fast agents new to overwatch may register, per token.
    #[serde(default)]
    pub agent_registration: RawRegistration,
    /// What agents may claim about learned client latency.
    #[serde(default)]
    pub latency_learning: RawLatencyLearning,
    /// Encrypted gossip with agents (and other overwatch nodes).
    #[serde(default)]
    pub gossip: Option<RawGossip>,
    /// When an agent that stopped reporting is stale, and when its backends go.
    #[serde(default)]
    pub stale: RawStale,
    /// DNSSEC: on by default, as in OpenGSLB's schema.
    #[serde(default)]
    pub dnssec: Option<RawDnssec>,
}

/// `overwatch.dnssec` as OpenGSLB documents it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDnssec {
    /// Default true, as in OpenGSLB.
    #[serde(default)]
    pub enabled: Option<Spanned<bool>>,
    /// `ECDSAP256SHA256`.
    #[serde(default)]
    pub algorithm: Option<Spanned<String>>,
    /// Required by OpenGSLB to disable DNSSEC.
    #[serde(default)]
    pub security_acknowledgment: Option<String>,
    /// OpenGSLB's key copy between nodes; Raft would replicate ours.
    #[serde(default)]
    pub key_sync: Option<RawKeySync>,
}

/// `overwatch.dnssec.key_sync`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeySync {
    /// API addresses of the other nodes.
    #[serde(default)]
    pub peers: Vec<String>,
    /// Between polls.
    #[serde(default)]
    pub poll_interval: Option<Spanned<HumanDuration>>,
    /// Per request.
    #[serde(default)]
    pub timeout: Option<Spanned<HumanDuration>>,
}

/// `overwatch.gossip`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGossip {
    /// UDP address (default `0.0.0.0:7946`).
    #[serde(default = "default_gossip_bind")]
    pub bind_address: Spanned<String>,
    /// Address announced to members (default: the bound one).
    #[serde(default)]
    pub advertise_address: Option<Spanned<String>>,
    /// base64 of 32 bytes, or a list of them during a rotation (the first seals, all
    /// open); required: gossip is never plaintext.
    #[serde(default)]
    pub encryption_key: Option<Spanned<opengslb_proto::seal::KeyText>>,
    /// SWIM probe period (default 1s).
    #[serde(default)]
    pub probe_interval: Option<Spanned<HumanDuration>>,
    /// Probe answer timeout (default 500ms).
    #[serde(default)]
    pub probe_timeout: Option<Spanned<HumanDuration>>,
    /// Accepted for OpenGSLB compatibility; foca paces its own gossip.
    #[serde(default, rename = "gossip_interval")]
    pub _gossip_interval: Option<Spanned<HumanDuration>>,
    /// Other overwatch nodes to join through.
    #[serde(default)]
    pub seeds: Vec<Spanned<String>>,
}

/// `overwatch.agent_registration`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegistration {
    /// New agents pinned at once (default 1000: a fresh cluster meeting a fleet that is
    /// already running registers it at once).
    #[serde(default = "default_registration_burst")]
    pub burst: Spanned<u32>,
    /// Then this many a second (default 20).
    #[serde(default = "default_registration_rate")]
    pub per_second: Spanned<f64>,
}

impl Default for RawRegistration {
    fn default() -> Self {
        RawRegistration {
            burst: default_registration_burst(),
            per_second: default_registration_rate(),
        }
    }
}

fn default_registration_burst() -> Spanned<u32> {
    unplaced(1000)
}

fn default_registration_rate() -> Spanned<f64> {
    unplaced(20.0)
}

/// `overwatch.latency_learning`: the shortest prefixes agents may report RTT for (the
/// agents' own `latency_learning.ipv4_prefix`/`ipv6_prefix` default to the same).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLatencyLearning {
    /// Shortest IPv4 prefix accepted (default 24).
    #[serde(default = "default_v4_prefix")]
    pub ipv4_prefix: Spanned<u8>,
    /// Shortest IPv6 prefix accepted (default 48).
    #[serde(default = "default_v6_prefix")]
    pub ipv6_prefix: Spanned<u8>,
}

impl Default for RawLatencyLearning {
    fn default() -> Self {
        RawLatencyLearning {
            ipv4_prefix: default_v4_prefix(),
            ipv6_prefix: default_v6_prefix(),
        }
    }
}

fn default_v4_prefix() -> Spanned<u8> {
    unplaced(24)
}

fn default_v6_prefix() -> Spanned<u8> {
    unplaced(48)
}

/// `overwatch.stale`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStale {
    /// No fresh report for this long → stale (default 30s; gossip failure detection is faster).
    #[serde(default = "default_stale_threshold")]
    pub threshold: Spanned<HumanDuration>,
    /// A stale agent's backends leave the registry after this long (default 5m).
    #[serde(default = "default_remove_after")]
    pub remove_after: Spanned<HumanDuration>,
}

impl Default for RawStale {
    fn default() -> Self {
        RawStale {
            threshold: default_stale_threshold(),
            remove_after: default_remove_after(),
        }
    }
}

fn default_gossip_bind() -> Spanned<String> {
    unplaced("0.0.0.0:7946".into())
}
fn default_stale_threshold() -> Spanned<HumanDuration> {
    unplaced(HumanDuration::secs(30))
}
fn default_remove_after() -> Spanned<HumanDuration> {
    unplaced(HumanDuration::secs(300))
}

/// `overwatch.identity`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    /// This node's name.
    pub node_id: Spanned<String>,
    /// This node's region.
    #[serde(default)]
    pub region: Option<String>,
}

/// `overwatch.validation`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawValidation {
    /// Run health checks at all (default true). Without them every server counts as healthy.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Default interval for regions whose `health_check` has none (default 30s).
    #[serde(default = "default_check_interval")]
    pub check_interval: Spanned<HumanDuration>,
    /// Default timeout (default 5s).
    #[serde(default = "default_check_timeout")]
    pub check_timeout: Spanned<HumanDuration>,
    /// Checks in flight at once across all servers (default 256).
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: Spanned<u32>,
}

impl Default for RawValidation {
    fn default() -> Self {
        RawValidation {
            enabled: true,
            check_interval: default_check_interval(),
            check_timeout: default_check_timeout(),
            max_concurrent: default_max_concurrent(),
        }
    }
}

/// `overwatch.geolocation`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGeolocation {
    /// A MaxMind (GeoLite2/GeoIP2 Country or City) `.mmdb` file.
    #[serde(default)]
    pub database_path: Option<Spanned<PathBuf>>,
    /// Region for clients that match nothing.
    #[serde(default)]
    pub default_region: Option<Spanned<String>>,
    /// CIDR → region, consulted before the database (longest prefix wins).
    #[serde(default)]
    pub custom_mappings: Vec<RawCustomMapping>,
    /// Use the EDNS Client Subnet when a resolver sends one (default true).
    #[serde(default = "yes")]
    pub ecs_enabled: bool,
}

/// One `custom_mappings` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCustomMapping {
    /// e.g. `10.0.0.0/8`.
    pub cidr: Spanned<String>,
    /// A region name.
    pub region: Spanned<String>,
    /// Free text.
    #[serde(default)]
    pub comment: Option<String>,
}

/// `dns:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    /// `":53"`, `"127.0.0.1:5353"`, `"[::1]:5353"`; UDP and TCP.
    #[serde(default = "default_dns_listen")]
    pub listen_address: Spanned<String>,
    /// TTL for domains without their own (default 60).
    #[serde(default = "default_ttl")]
    pub default_ttl: Spanned<u32>,
    /// Zones we are authoritative for; absent: derived from the domains (each domain's
    /// parent), as OpenGSLB allows.
    #[serde(default)]
    pub zones: Vec<Spanned<String>>,
    /// Default all-unhealthy policy: answer with the last healthy set instead of SERVFAIL.
    #[serde(default)]
    pub return_last_healthy: bool,
    /// NS names at every zone apex (default `ns1.<zone>`).
    #[serde(default)]
    pub nameservers: Vec<Spanned<String>>,
    /// SOA RNAME, the zone contact (default `hostmaster.<zone>`).
    #[serde(default)]
    pub hostmaster: Option<Spanned<String>>,
    /// UDP worker threads, each with its own socket (default: one per CPU this process
    /// may run on).
    #[serde(default)]
    pub udp_workers: Option<Spanned<u32>>,
    /// DNS cookies (RFC 7873, RFC 9018 server cookies; default true).
    #[serde(default = "yes")]
    pub cookies: bool,
    /// How long one cookie secret makes new cookies (default 24h; the previous one is
    /// accepted for as long again).
    #[serde(default)]
    pub cookie_rotation: Option<Spanned<HumanDuration>>,
    /// Response rate limiting on UDP (absent: off).
    #[serde(default)]
    pub rate_limit: Option<RawRateLimit>,
}

/// `dns.rate_limit`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Responses per second per source prefix.
    pub responses_per_second: Spanned<u32>,
    /// Every this many limited responses, one truncated reply (default 2; 0: drop all).
    #[serde(default)]
    pub slip: Option<Spanned<u32>>,
    /// IPv4 source prefix (default 24).
    #[serde(default)]
    pub ipv4_prefix: Option<Spanned<u8>>,
    /// IPv6 source prefix (default 56).
    #[serde(default)]
    pub ipv6_prefix: Option<Spanned<u8>>,
    /// Count and log, but answer everything.
    #[serde(default)]
    pub dry_run: bool,
}

/// `regions[]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegion {
    /// Unique name.
    pub name: Spanned<String>,
    /// The servers in this region.
    #[serde(default)]
    pub servers: Vec<RawServer>,
    /// How overwatch checks these servers.
    #[serde(default)]
    pub health_check: Option<RawHealthCheck>,
    /// ISO 3166 country codes routed here by `geolocation`.
    #[serde(default)]
    pub countries: Vec<Spanned<String>>,
    /// Continent codes (AF, AN, AS, EU, NA, OC, SA) routed here by `geolocation`.
    #[serde(default)]
    pub continents: Vec<Spanned<String>>,
}

/// `regions[].servers[]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// IPv4 or IPv6 address.
    pub address: Spanned<String>,
    /// Port checked (default 80).
    #[serde(default = "default_port")]
    pub port: Spanned<u16>,
    /// Relative weight for `weighted` (default 100; 0 = standby).
    #[serde(default = "default_weight")]
    pub weight: Spanned<u32>,
    /// Service name (default: the region name).
    #[serde(default)]
    pub service: Option<String>,
    /// The name its HTTPS check sends (Host and SNI), OpenGSLB's `host`.
    #[serde(default)]
    pub host: Option<String>,
}

/// `regions[].health_check`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// `http`, `https` or `tcp`; absent: http, as OpenGSLB reads it.
    #[serde(default, rename = "type")]
    pub kind: Option<Spanned<String>>,
    /// Between checks of one server.
    #[serde(default)]
    pub interval: Option<Spanned<HumanDuration>>,
    /// One check's time limit.
    #[serde(default)]
    pub timeout: Option<Spanned<HumanDuration>>,
    /// HTTP path (default `/health`).
    #[serde(default = "default_path")]
    pub path: Spanned<String>,
    /// HTTP Host header (default: the server address).
    #[serde(default)]
    pub host: Option<String>,
    /// Consecutive failures before a healthy server is marked unhealthy (default 3).
    #[serde(default = "default_fall")]
    pub failure_threshold: Spanned<u32>,
    /// Consecutive successes before an unhealthy server is healthy again (default 2).
    #[serde(default = "default_rise")]
    pub success_threshold: Spanned<u32>,
    /// https only: accept any certificate (self-signed backends). Default false.
    #[serde(default)]
    pub tls_skip_verify: bool,
}

/// `domains[]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDomain {
    /// Fully qualified name inside one of the zones.
    pub name: Spanned<String>,
    /// `round-robin`, `weighted`, `failover`, `geolocation`, `latency`.
    pub routing_algorithm: Spanned<String>,
    /// Regions whose servers answer for this name, in priority order.
    pub regions: Vec<Spanned<String>>,
    /// The services whose servers answer for this name (default: the name itself, as
    /// OpenGSLB 1.1's ADR-016 has it). Ours: list several to share servers, explicitly.
    #[serde(default)]
    pub services: Option<Vec<Spanned<String>>>,
    /// Answer TTL (default `dns.default_ttl`).
    #[serde(default)]
    pub ttl: Option<Spanned<u32>>,
    /// Most A/AAAA records in one answer (default 8).
    #[serde(default)]
    pub max_records: Option<Spanned<u32>>,
    /// `servfail` (default), `return_last_healthy` or `return_all`.
    #[serde(default)]
    pub when_all_unhealthy: Option<Spanned<String>>,
    /// For `latency`.
    #[serde(default)]
    pub latency_config: Option<RawLatencyConfig>,
}

/// `domains[].latency_config`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLatencyConfig {
    /// OpenGSLB's EMA alpha, parsed and unused there; warned.
    #[serde(default)]
    pub smoothing_factor: Option<Spanned<f64>>,
    /// Servers slower than this are not chosen (default: no limit).
    #[serde(default)]
    pub max_latency_ms: Option<Spanned<u32>>,
    /// Probe samples needed before a server's RTT counts (default 3).
    #[serde(default)]
    pub min_samples: Option<Spanned<u32>>,
}

/// `api:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    /// Serve the API (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Listen address (default `127.0.0.1:8080`).
    #[serde(default = "default_api_address")]
    pub address: Spanned<String>,
    /// Client networks allowed (default loopback only).
    #[serde(default = "default_allowed_networks")]
    pub allowed_networks: Vec<Spanned<String>>,
    /// Take the client address from X-Forwarded-For, when the connection comes from one
    /// of `trusted_proxies`.
    #[serde(default)]
    pub trust_proxy_headers: bool,
    /// The proxies whose X-Forwarded-For is believed (default loopback: a reverse proxy
    /// on the same host). The header is read from the right, skipping these.
    #[serde(default = "default_allowed_networks")]
    pub trusted_proxies: Vec<Spanned<String>>,
    /// Name → bearer token for mutations; the name is recorded as the author.
    #[serde(default)]
    pub tokens: std::collections::BTreeMap<String, Spanned<String>>,
    /// Overrides the cluster holds at most (default 10000); a new one past it gets 409.
    #[serde(default)]
    pub max_overrides: Option<Spanned<u64>>,
}

impl Default for RawApi {
    fn default() -> Self {
        RawApi {
            enabled: true,
            address: default_api_address(),
            allowed_networks: default_allowed_networks(),
            trust_proxy_headers: false,
            trusted_proxies: default_allowed_networks(),
            tokens: std::collections::BTreeMap::new(),
            max_overrides: None,
        }
    }
}

/// `metrics:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Serve `/metrics` (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Listen address (default `127.0.0.1:9090`: loopback, unlike OpenGSLB's `:9090`).
    #[serde(default = "default_metrics_address")]
    pub address: Spanned<String>,
    /// Client networks allowed to scrape (default loopback only).
    #[serde(default = "default_allowed_networks")]
    pub allowed_networks: Vec<Spanned<String>>,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            enabled: true,
            address: default_metrics_address(),
            allowed_networks: default_allowed_networks(),
        }
    }
}

/// `logging:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogging {
    /// `error`, `warn`, `info`, `debug`, `trace` (default info).
    #[serde(default = "default_level")]
    pub level: Spanned<String>,
    /// `text` (default) or `json`.
    #[serde(default = "default_format")]
    pub format: Spanned<String>,
}

impl Default for RawLogging {
    fn default() -> Self {
        RawLogging {
            level: default_level(),
            format: default_format(),
        }
    }
}

/// A default value has no place in the file; it points at line 0.
fn unplaced<T>(value: T) -> Spanned<T> {
    Spanned::new(
        value,
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

fn yes() -> bool {
    true
}
fn default_check_interval() -> Spanned<HumanDuration> {
    unplaced(HumanDuration::secs(30))
}
fn default_check_timeout() -> Spanned<HumanDuration> {
    unplaced(HumanDuration::secs(5))
}
fn default_max_concurrent() -> Spanned<u32> {
    unplaced(256)
}
fn default_dns_listen() -> Spanned<String> {
    unplaced(":53".into())
}
fn default_ttl() -> Spanned<u32> {
    unplaced(60)
}
fn default_port() -> Spanned<u16> {
    unplaced(80)
}
fn default_weight() -> Spanned<u32> {
    unplaced(100)
}
fn default_path() -> Spanned<String> {
    unplaced("/health".into())
}
fn default_fall() -> Spanned<u32> {
    unplaced(3)
}
fn default_rise() -> Spanned<u32> {
    unplaced(2)
}
fn default_api_address() -> Spanned<String> {
    unplaced("127.0.0.1:8080".into())
}
fn default_allowed_networks() -> Vec<Spanned<String>> {
    vec![unplaced("127.0.0.1/32".into()), unplaced("::1/128".into())]
}
fn default_metrics_address() -> Spanned<String> {
    unplaced("127.0.0.1:9090".into())
}
fn default_level() -> Spanned<String> {
    unplaced("info".into())
}
fn default_format() -> Spanned<String> {
    unplaced("text".into())
}
