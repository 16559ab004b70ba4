//! The API's JSON, typed: every response and request body. The server renders these, and
//! `opengslb-cli` and the tests parse them, so a renamed field breaks the build, not an
//! operator's script. Field names are OpenGSLB's where it has them.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

pub use crate::cluster::node::{ClusterStatus, MemberStatus};

/// Every error: `{"error": "..."}` with an HTTP status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What is wrong, naming the field or value.
    pub error: String,
}

/// One backend with every status layer and the effective result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backend {
    /// Service (the domain it belongs to).
    pub service: String,
    /// Address.
    pub address: IpAddr,
    /// Port.
    pub port: u16,
    /// Weight used for routing.
    pub weight: u32,
    /// Region.
    pub region: String,
    /// The agent that reports it.
    pub agent_id: Option<String>,
    /// Other agents that speak for it now and are not believed (a conflict).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contested_by: Vec<String>,
    /// healthy | unhealthy | stale | draining.
    pub effective_status: String,
    /// Why, in words.
    pub effective_reason: String,
    /// When the effective status last changed (RFC 3339).
    pub last_change: String,
    /// The agent's health claim.
    pub agent_healthy: Option<bool>,
    /// When the agent last reported (RFC 3339).
    pub agent_last_seen: Option<String>,
    /// ready | drain | maint | left.
    pub agent_admin: Option<String>,
    /// The agent is quiet or down in gossip.
    pub agent_stale: Option<bool>,
    /// In the config file (false: known from an agent only).
    pub configured: bool,
    /// Validation verdict; null when disabled or not checked yet.
    pub validation_healthy: Option<bool>,
    /// disabled | pending | healthy | unhealthy.
    pub validation_state: String,
    /// Last validation check (RFC 3339).
    pub validation_last_check: Option<String>,
    /// Last validation error.
    pub validation_error: Option<String>,
    /// Smoothed probe RTT, milliseconds.
    pub rtt_ms: Option<f64>,
    /// The operator override in force: forced in (true) or out (false).
    pub override_status: Option<bool>,
    /// Its reason.
    pub override_reason: Option<String>,
    /// Its author (an `api.tokens` name).
    pub override_author: Option<String>,
}

/// `GET /api/v1/overwatch/backends`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendList {
    /// The matching backends.
    pub backends: Vec<Backend>,
    /// How many.
    pub total: usize,
}

/// One server of `GET /api/v1/health/servers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Server {
    /// Service.
    pub service: String,
    /// Address.
    pub address: IpAddr,
    /// Port.
    pub port: u16,
    /// Region.
    pub region: String,
    /// In DNS answers.
    pub healthy: bool,
    /// healthy | unhealthy | stale | draining.
    pub status: String,
    /// Last validation check (RFC 3339).
    pub last_check: Option<String>,
    /// Last validation error.
    pub last_error: Option<String>,
}

/// `GET /api/v1/health/servers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerList {
    /// Every backend.
    pub servers: Vec<Server>,
}

/// Per-service counts in [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCount {
    /// Backends.
    pub total: usize,
    /// Of which in rotation.
    pub healthy: usize,
}

/// `GET /api/v1/overwatch/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Backends known.
    pub total_backends: usize,
    /// In rotation.
    pub healthy_backends: usize,
    /// Out: a check or claim says down.
    pub unhealthy_backends: usize,
    /// Out: agent quiet.
    pub stale_backends: usize,
    /// Out: drain or maint.
    pub draining_backends: usize,
    /// Agents reporting (not stale, not left).
    pub active_agents: usize,
    /// Agents pinned here.
    pub registered_agents: usize,
    /// Backends in the replicated registry.
    pub registry_backends: usize,
    /// Pins in the replicated state.
    pub pinned_agents: usize,
    /// Overrides in force.
    pub active_overrides: usize,
    /// `overwatch.validation.enabled`.
    pub validation_enabled: bool,
    /// Per service.
    pub services: BTreeMap<String, ServiceCount>,
}

/// One domain of `GET /api/v1/domains`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Domain {
    /// The name.
    pub name: String,
    /// Its routing algorithm.
    pub routing_algorithm: String,
    /// Its regions, in priority order.
    pub regions: Vec<String>,
    /// Answer TTL, seconds.
    pub ttl: u32,
    /// Most records in one answer.
    pub max_records: usize,
    /// What DNS does when none is healthy.
    pub when_all_unhealthy: String,
    /// Backends in its regions.
    pub total_backends: usize,
    /// Of which in rotation.
    pub healthy_backends: usize,
    /// Their addresses.
    pub healthy_addresses: Vec<IpAddr>,
    /// What DNS answers now (not every healthy address: failover answers one region).
    #[serde(flatten)]
    pub answers: DomainAnswerSets,
}

/// A domain's answers now, per algorithm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainAnswerSets {
    /// The addresses an answer holds now (for a client in no particular region).
    pub answer: Vec<IpAddr>,
    /// Whether clients get different answers (geolocation, learned latency).
    pub depends_on_client: bool,
    /// Then: what a client located in each of the domain's regions gets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub answer_by_region: BTreeMap<String, Vec<IpAddr>>,
    /// How answers are drawn from these.
    #[serde(rename = "answer_how")]
    pub how: String,
}

/// `GET /api/v1/explain`: what this node answers one client now, and why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// The name asked.
    pub name: String,
    /// A or AAAA.
    #[serde(rename = "type")]
    pub qtype: String,
    /// The client routing sees (the ECS address, or the resolver's).
    pub client: Option<IpAddr>,
    /// Whether the query carries the client in ECS.
    pub ecs: bool,
    /// The response code.
    pub rcode: String,
    /// The zone the name is in.
    pub zone: Option<String>,
    /// The domain's routing settings.
    pub domain: Option<ExplainDomain>,
    /// How the records were chosen (`healthy`, `geo_fallback`, or the all-down policy).
    pub outcome: Option<String>,
    /// One answer's records, in order.
    pub answer: Vec<IpAddr>,
    /// Every address an answer to this client can hold now (round-robin and weighted draw
    /// per query; otherwise the same as `answer`).
    pub possible: Vec<IpAddr>,
    /// The ECS scope prefix the answer carries.
    pub ecs_scope: Option<u8>,
    /// The region geolocation placed the client in, when geolocation decides.
    pub client_region: Option<String>,
    /// Leading client-address bits that placed it.
    pub location_prefix: Option<u8>,
    /// The region agents learned is fastest for the client (`learned_latency`).
    pub learned_region: Option<String>,
    /// Every server of the domain for this family, with its state and whether chosen.
    pub candidates: Vec<ExplainCandidate>,
    /// How the answer came about, in a sentence.
    pub why: String,
}

/// A domain's routing settings in an explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplainDomain {
    /// Routing algorithm.
    pub algorithm: String,
    /// Regions in priority order.
    pub regions: Vec<String>,
    /// Most records per answer.
    pub max_records: usize,
    /// The all-down policy.
    pub when_all_unhealthy: String,
    /// Answer TTL, seconds.
    pub ttl: u32,
}

/// One server in an explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplainCandidate {
    /// Its address.
    pub address: IpAddr,
    /// Its region.
    pub region: String,
    /// In rotation (healthy after every layer).
    pub in_rotation: bool,
    /// Configured weight.
    pub weight: u32,
    /// Smoothed probe RTT, if measured.
    pub rtt_ms: Option<f64>,
    /// In this answer.
    pub chosen: bool,
    /// Its effective status, as `servers` shows it.
    pub effective_status: Option<String>,
    /// Why it has that status.
    pub reason: Option<String>,
}

/// `GET /api/v1/domains`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainList {
    /// Every configured domain.
    pub domains: Vec<Domain>,
}

/// One row of `GET /api/v1/overwatch/latency`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyEntry {
    /// Client subnet.
    pub subnet: String,
    /// Region the figures are for.
    pub region: String,
    /// `learned_latency` domains that route by it.
    pub domains: Vec<String>,
    /// Smoothed RTT, milliseconds.
    pub rtt_ms: f64,
    /// Connections sampled.
    pub samples: u32,
    /// Agents whose figures were merged.
    pub agents: u16,
    /// Last report (RFC 3339).
    pub last_updated: String,
}

/// `GET /api/v1/overwatch/latency`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyList {
    /// At most `limit` rows.
    pub entries: Vec<LatencyEntry>,
    /// Every match.
    pub total: usize,
    /// The limit applied.
    pub limit: usize,
}

/// One backend status change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// When (RFC 3339).
    pub at: String,
    /// `service/address:port`.
    pub backend: String,
    /// Region.
    pub region: String,
    /// Status before.
    pub from: String,
    /// Status after.
    pub to: String,
    /// Why.
    pub reason: String,
}

/// `GET /api/v1/overwatch/changes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeList {
    /// Newest first.
    pub changes: Vec<Change>,
    /// How many.
    pub total: usize,
}

/// A pinned agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// `{region}-{12 hex}`.
    pub agent_id: String,
    /// Its region.
    pub region: String,
    /// Pinned certificate fingerprint (SHA-256, hex).
    pub fingerprint: String,
    /// Services it reports.
    pub services: Vec<String>,
    /// Backends in its last report.
    pub backends: usize,
    /// Last report (RFC 3339).
    pub last_seen: Option<String>,
    /// Quiet or down in gossip.
    pub stale: bool,
    /// Announced its departure.
    pub left: bool,
    /// Newest report version.
    pub version: u64,
}

/// `GET /api/v1/overwatch/agents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentList {
    /// Every pinned agent.
    pub agents: Vec<Agent>,
    /// How many.
    pub total: usize,
}

/// `GET /api/v1/overwatch/agents/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentDetail {
    /// The agent.
    pub agent: Agent,
    /// The backends it reports.
    pub backends: Vec<Backend>,
}

/// `DELETE /api/v1/overwatch/agents/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentDeleted {
    /// The agent whose pin was dropped.
    pub deleted: String,
}

/// An operator override.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideEntry {
    /// Service.
    pub service: String,
    /// `IP:PORT`.
    pub address: SocketAddr,
    /// Forced in (true) or out (false).
    pub healthy: bool,
    /// Why.
    pub reason: String,
    /// Who (an `api.tokens` name).
    pub author: String,
    /// When it was set (RFC 3339).
    pub set_at: String,
    /// When it ends (RFC 3339); none: until cleared.
    pub expires_at: Option<String>,
    /// In force now.
    pub active: bool,
}

/// `GET /api/v1/overrides`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideList {
    /// The overrides in force.
    pub overrides: Vec<OverrideEntry>,
    /// How many.
    pub total: usize,
}

/// `PUT /api/v1/overrides/{service}/{address}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideBody {
    /// Force in (true) or out (false).
    pub healthy: bool,
    /// Why (shown to every operator).
    pub reason: String,
    /// `"1h"`, `"90s"`, or a number of seconds; none: until cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Ttl>,
    /// Set it although no node knows the server (yet): without it, an override for an
    /// unknown server is refused, since it would change nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// An override's lifetime as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ttl {
    /// Seconds.
    Seconds(u64),
    /// A duration like `90s`, `30m`, `1h`.
    Text(String),
}

/// The key of a cleared override.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideKeyJson {
    /// Service.
    pub service: String,
    /// `IP:PORT`.
    pub address: SocketAddr,
}

/// `DELETE /api/v1/overrides/{service}/{address}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideCleared {
    /// Which.
    pub cleared: OverrideKeyJson,
}

/// `POST /api/v1/cluster/members` body, and what it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberBody {
    /// The new node's `cluster.node_id`.
    pub id: u64,
    /// `HOST:PORT` of its `cluster.listen`.
    pub address: String,
}

/// `POST /api/v1/cluster/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAdded {
    /// The member added.
    pub added: MemberBody,
}

/// `DELETE /api/v1/cluster/members/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRemoved {
    /// Its node id.
    pub removed: u64,
}

/// `GET /api/v1/ready` and `/api/v1/live`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// `ready` or `live`.
    pub status: String,
}

/// `GET /api/v1/overwatch/traffic`: this node's answer counters since it started (the
/// status page charts their rates).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Traffic {
    /// Milliseconds since the Unix epoch when read.
    pub at_ms: u64,
    /// DNS queries answered.
    pub queries_total: u64,
    /// Per domain and backend: times it was in an answer.
    pub answers: Vec<TrafficAnswers>,
}

/// One row of [`Traffic`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficAnswers {
    /// The domain.
    pub domain: String,
    /// The backend's address.
    pub address: IpAddr,
    /// Times in an answer.
    pub total: u64,
}

/// `GET /api/v1/overwatch/alerts`: what an operator must not miss, now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alerts {
    /// Most severe first.
    pub alerts: Vec<Alert>,
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `no_quorum`, `no_leader`, `stale_agents`, `disk_low`, `not_synced`.
    pub kind: String,
    /// `critical` or `warning`.
    pub severity: String,
    /// What it means and what to do.
    pub message: String,
}

/// `GET /api/v1/auth/check`: the token is valid on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCheck {
    /// The `api.tokens` entry it matched (recorded as the author of changes).
    pub token_name: String,
}

/// `GET /api/v1/version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The release.
    pub version: String,
    /// The program.
    pub name: String,
}

/// `GET /api/v1/health/regions` (OpenGSLB's shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionHealthList {
    /// Every configured region.
    pub regions: Vec<RegionHealth>,
    /// When computed (RFC 3339).
    pub generated_at: String,
}

/// One region of [`RegionHealthList`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionHealth {
    /// Region name.
    pub name: String,
    /// Servers in it (configured and announced).
    pub total_servers: usize,
    /// In rotation.
    pub healthy_count: usize,
    /// Out of rotation.
    pub unhealthy_count: usize,
    /// `healthy_count` of `total_servers`, in percent (two decimals).
    pub health_percent: f64,
}

/// OpenGSLB's answer to an action: `{success, message}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// It was done.
    pub success: bool,
    /// What was done.
    pub message: String,
}

/// `GET /api/v1/dnssec/status`: the cluster's keys (never their private halves), what
/// the parent needs, and what this node's answers carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnssecStatus {
    /// `overwatch.dnssec.enabled`.
    pub enabled: bool,
    /// Algorithm new keys get.
    pub algorithm: String,
    /// This node's answers to DO=1 queries carry signatures now.
    pub signing: bool,
    /// RRSIGs in this node's current snapshot.
    pub rrsigs: usize,
    /// Every key.
    pub keys: Vec<DnssecKeyStatus>,
    /// Per zone: the DS and DNSKEY records to give the parent (or a resolver's trust
    /// anchor).
    pub zones: Vec<DnssecZone>,
}

/// One key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnssecKeyStatus {
    /// Cluster id.
    pub id: u32,
    /// `KSK` or `ZSK`.
    pub role: String,
    /// `pending`, `published`, `active`, `retired`.
    pub state: String,
    /// Key tag.
    pub tag: u16,
    /// Algorithm number.
    pub algorithm: u8,
    /// Since (RFC 3339).
    pub since: String,
    /// What happens next, in words.
    pub next: String,
}

/// One zone's records for the parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnssecZone {
    /// Apex.
    pub zone: String,
    /// DS records (SHA-256), presentation form.
    pub ds: Vec<String>,
    /// DNSKEY records of the same keys, presentation form.
    pub dnskey: Vec<String>,
}

/// `POST /api/v1/dnssec/rollover` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloverRequest {
    /// `zsk` or `ksk`.
    pub key: String,
    /// KSK only: the parent publishes the new DS; the new KSK takes over.
    #[serde(default)]
    pub complete: bool,
}
