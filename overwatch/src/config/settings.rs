//! The validated configuration the rest of overwatch runs on: typed, cross-referenced by
//! index, with every default applied. Only `validate` constructs it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

/// Everything overwatch needs to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Node name (defaults to the host name part "overwatch").
    pub node_id: String,
    /// Keys accepted that change nothing here, and assumptions made (derived zones), each
    /// named with why: logged at WARN at start and on reload.
    pub warnings: Vec<String>,
    /// Some server is given by host name: the file is resolved again every 30 s.
    pub resolves_hostnames: bool,
    /// Durable state directory.
    pub data_dir: PathBuf,
    /// Validation health checks.
    pub validation: ValidationSettings,
    /// Geolocation inputs.
    pub geo: GeoSettings,
    /// Service → the token agents must prove for it.
    pub agent_tokens: std::collections::BTreeMap<String, String>,
    /// Service → networks its agent-announced backends must lie in (absent: anywhere).
    pub agent_networks: std::collections::BTreeMap<String, Vec<IpNet>>,
    /// How fast new agents may be pinned, per token.
    pub agent_registration: RegistrationSettings,
    /// The shortest client prefixes agents may report latency for.
    pub latency_prefixes: LatencyPrefixes,
    /// Gossip with agents (`None`: not configured; agents then cannot report).
    pub gossip: Option<GossipSettings>,
    /// Staleness of agents.
    pub stale: StaleSettings,
    /// DNS server and zones.
    pub dns: DnsSettings,
    /// Regions, in file order; domains refer to them by index.
    pub regions: Vec<RegionSettings>,
    /// Load-balanced names, in file order.
    pub domains: Vec<DomainSettings>,
    /// HTTP API (`None`: disabled).
    pub api: Option<ApiSettings>,
    /// Metrics listener (`None`: disabled).
    pub metrics: Option<MetricsSettings>,
    /// Logging.
    pub logging: LoggingSettings,
    /// The Raft cluster (`None`: a cluster of one, no RPC listener).
    pub cluster: Option<ClusterSettings>,
    /// DNSSEC signing.
    pub dnssec: DnssecSettings,
}

/// `overwatch.dnssec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnssecSettings {
    /// Answers to DO=1 queries are signed (default true).
    pub enabled: bool,
    /// Algorithm of keys the cluster generates: 13 (ECDSA P-256) or 15 (Ed25519).
    pub algorithm: u8,
}

impl Default for DnssecSettings {
    fn default() -> Self {
        DnssecSettings {
            enabled: true,
            algorithm: crate::dns::dnssec::keys::ECDSAP256SHA256,
        }
    }
}

impl Settings {
    /// Whether `domain` answers the server `(service, address, port)` of region `region`:
    /// the region is one of the domain's, and its service is one the domain answers (its
    /// own name by default, OpenGSLB 1.1's rule), or the file gave it no service.
    pub fn serves(
        &self,
        domain: &DomainSettings,
        region: usize,
        service: &str,
        address: std::net::IpAddr,
        port: u16,
    ) -> bool {
        domain.regions.contains(&region)
            && (domain.services.iter().any(|s| s == service)
                || self.regions.get(region).is_some_and(|r| {
                    r.servers.iter().any(|s| {
                        !s.named && s.service == service && s.address == address && s.port == port
                    })
                }))
    }
}

/// `cluster`
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSettings {
    /// This node's Raft id.
    pub node_id: u64,
    /// RPC listen address.
    pub listen: SocketAddr,
    /// The address peers call this node at.
    pub advertise: String,
    /// Shared RPC secret.
    pub secret: String,
    /// Initial members: id → RPC address.
    pub peers: std::collections::BTreeMap<u64, String>,
    /// Leader heartbeat period.
    pub heartbeat_interval: Duration,
    /// Minimum election timeout (the maximum is 1.25× this).
    pub election_timeout: Duration,
    /// How long a write waits for a quorum.
    pub write_timeout: Duration,
    /// Log entries between snapshots.
    pub snapshot_logs: u64,
    /// Mutual TLS files (`None`: plain HTTP, with `cluster.insecure_plaintext: true`).
    pub tls: Option<crate::cluster::tls::TlsPaths>,
}

/// `overwatch.gossip`
#[derive(Debug, Clone, PartialEq)]
pub struct GossipSettings {
    /// UDP bind address.
    pub bind: SocketAddr,
    /// Announced address.
    pub advertise: Option<SocketAddr>,
    /// The cluster keys, base64 (checked by validation): the first seals, all open.
    /// Changing them takes effect on reload (SIGHUP), so a rotation needs no restart.
    pub encryption_keys: Vec<String>,
    /// Probe period.
    pub probe_interval: Duration,
    /// Probe timeout.
    pub probe_timeout: Duration,
    /// Other overwatch nodes.
    pub seeds: Vec<SocketAddr>,
}

/// `overwatch.agent_registration`: a token bucket per token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegistrationSettings {
    /// New pins at once.
    pub burst: u32,
    /// Refill, pins a second.
    pub per_second: f64,
}

/// `overwatch.latency_learning`: the shortest prefixes accepted per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyPrefixes {
    /// IPv4.
    pub ipv4: u8,
    /// IPv6.
    pub ipv6: u8,
}

/// `overwatch.stale`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleSettings {
    /// No fresh report for this long → stale.
    pub threshold: Duration,
    /// Stale for this long → removed.
    pub remove_after: Duration,
}

/// `overwatch.validation`
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationSettings {
    /// When false, no checks run and every server counts as healthy (static GSLB).
    pub enabled: bool,
    /// Checks in flight at once.
    pub max_concurrent: usize,
}

/// `overwatch.geolocation`
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GeoSettings {
    /// MaxMind database, if configured.
    pub database: Option<PathBuf>,
    /// Region index for clients that match nothing.
    pub default_region: Option<usize>,
    /// CIDR → region index, consulted first (longest prefix wins).
    pub custom_mappings: Vec<(IpNet, usize)>,
    /// Use EDNS Client Subnet.
    pub ecs_enabled: bool,
}

/// `dns`
#[derive(Debug, Clone, PartialEq)]
pub struct DnsSettings {
    /// UDP and TCP listen address.
    pub listen: SocketAddr,
    /// UDP worker threads (`None`: one per CPU).
    pub udp_workers: Option<usize>,
    /// Zones we answer for.
    pub zones: Vec<ZoneSettings>,
    /// DNS cookies on.
    pub cookies: bool,
    /// How long one cookie secret makes new cookies.
    pub cookie_rotation: std::time::Duration,
    /// UDP response rate limiting (`None`: off).
    pub rate_limit: Option<crate::dns::rrl::RateLimitSettings>,
}

/// One authoritative zone.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneSettings {
    /// Apex, lower case, no trailing dot (`gslb.example.com`).
    pub apex: String,
    /// NS names at the apex.
    pub nameservers: Vec<String>,
    /// SOA RNAME.
    pub hostmaster: String,
    /// SOA MINIMUM and the TTL of SOA/NS records: the negative-caching TTL.
    pub ttl: u32,
}

/// A region.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionSettings {
    /// Unique name.
    pub name: String,
    /// Its servers.
    pub servers: Vec<ServerSettings>,
    /// How they are checked (`None`: validation disabled).
    pub check: Option<CheckSettings>,
    /// Upper-case ISO country codes.
    pub countries: Vec<String>,
    /// Upper-case continent codes.
    pub continents: Vec<String>,
}

/// A server (backend).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerSettings {
    /// Its address (A or AAAA in answers).
    pub address: IpAddr,
    /// Port checked.
    pub port: u16,
    /// Weight for `weighted`; 0 = standby.
    pub weight: u32,
    /// Service name.
    pub service: String,
    /// Host and SNI name for its HTTP(S) check, over the region's `health_check.host`.
    pub host: Option<String>,
    /// The file named its service; without one (OpenGSLB 1.0 files), `service` is the
    /// region's name and the server answers for every domain listing its region.
    pub named: bool,
}

/// Check protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// TCP connect.
    Tcp,
    /// HTTP GET, 2xx expected.
    Http,
    /// HTTPS GET, 2xx expected.
    Https,
}

/// One region's health check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CheckSettings {
    /// Protocol.
    pub kind: CheckKind,
    /// Between checks of one server.
    pub interval: Duration,
    /// One check's limit.
    pub timeout: Duration,
    /// HTTP path.
    pub path: String,
    /// HTTP Host header.
    pub host: Option<String>,
    /// Failures to go down.
    pub fall: u32,
    /// Successes to come back up.
    pub rise: u32,
    /// https: accept any certificate.
    pub tls_skip_verify: bool,
}

/// Routing algorithm of a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// All healthy servers, rotated per answer.
    RoundRobin,
    /// Servers drawn by weight; weight 0 only when nothing else is healthy.
    Weighted,
    /// The first region (in the domain's order) with a healthy server.
    Failover,
    /// The client's region by location.
    Geolocation,
    /// The region with the lowest probe RTT.
    Latency,
    /// The region with the lowest RTT agents learned from real clients of the asking
    /// subnet; geolocation when nothing is learned for it.
    LearnedLatency,
}

impl Algorithm {
    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round-robin",
            Algorithm::Weighted => "weighted",
            Algorithm::Failover => "failover",
            Algorithm::Geolocation => "geolocation",
            Algorithm::Latency => "latency",
            Algorithm::LearnedLatency => "learned_latency",
        }
    }
}

/// What to answer when no server of a domain is healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AllDownPolicy {
    /// SERVFAIL: resolvers try elsewhere and do not cache a dead address.
    ServFail,
    /// The servers that were healthy last.
    ReturnLastHealthy,
    /// Every configured server.
    ReturnAll,
}

impl AllDownPolicy {
    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            AllDownPolicy::ServFail => "servfail",
            AllDownPolicy::ReturnLastHealthy => "return_last_healthy",
            AllDownPolicy::ReturnAll => "return_all",
        }
    }
}

/// A load-balanced name.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainSettings {
    /// Lower case, no trailing dot.
    pub name: String,
    /// The services whose servers answer for it: its own name unless `services` says
    /// otherwise (servers with no service answer for every domain of their region).
    pub services: Vec<String>,
    /// Index into `dns.zones`.
    pub zone: usize,
    /// How answers are chosen.
    pub algorithm: Algorithm,
    /// Region indexes, in priority order.
    pub regions: Vec<usize>,
    /// Answer TTL.
    pub ttl: u32,
    /// Most A/AAAA records per answer.
    pub max_records: usize,
    /// All-unhealthy policy.
    pub when_all_unhealthy: AllDownPolicy,
    /// `latency`: servers above this RTT are not chosen.
    pub max_latency: Option<Duration>,
    /// `latency`: samples before an RTT counts.
    pub min_samples: u32,
}

/// `api`
#[derive(Debug, Clone, PartialEq)]
pub struct ApiSettings {
    /// Listen address.
    pub address: SocketAddr,
    /// Allowed client networks.
    pub allowed_networks: Vec<IpNet>,
    /// Use X-Forwarded-For.
    pub trust_proxy_headers: bool,
    /// Whose X-Forwarded-For to believe.
    pub trusted_proxies: Vec<IpNet>,
    /// Name → bearer token for mutations.
    pub tokens: std::collections::BTreeMap<String, String>,
    /// Overrides the cluster holds at most.
    pub max_overrides: usize,
}

/// `metrics`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Listen address.
    pub address: SocketAddr,
    /// Client networks allowed to scrape.
    pub allowed_networks: Vec<IpNet>,
}

/// `logging`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingSettings {
    /// tracing filter directive.
    pub level: String,
    /// JSON lines instead of text.
    pub json: bool,
}
