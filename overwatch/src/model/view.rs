//! The view: every backend with each status layer, the pinned agents and what DNS and
//! the API are computed from, at one moment. Immutable once published; no I/O, no
//! serialization (the API turns it into JSON).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use opengslb_proto::status::{Admin, Health};

use crate::config::Settings;
use crate::model::check::CheckState;
use crate::model::geo::GeoDb;
use crate::model::latency::{LatencyIndex, Merged};
use crate::model::machine::{Machine, Override, RegistryKey};
use crate::model::status::{Effective, Validation};

/// A backend's identity, stable across reloads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey {
    /// Region name.
    pub region: String,
    /// Service name.
    pub service: String,
    /// Address.
    pub address: IpAddr,
    /// Port.
    pub port: u16,
}

/// What an agent says about one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentLayer {
    /// The reporting agent.
    pub agent_id: String,
    /// Its admin state (or leaving).
    pub admin: Admin,
    /// Its health claim.
    pub health: Health,
    /// CPU weight percentage.
    pub weight_pct: u8,
    /// When its last report arrived.
    pub last_seen: SystemTime,
    /// No fresh report, or gossip declared it down.
    pub stale: bool,
    /// It announced its departure.
    pub left: bool,
    /// Other agents that speak for this backend now and were not believed (a conflict:
    /// two agents configured for one backend, or one impersonating it).
    pub contested_by: Vec<String>,
}

/// One backend with every status layer.
#[derive(Debug, Clone)]
pub struct BackendView {
    /// Identity.
    pub key: BackendKey,
    /// Index into `settings.regions`.
    pub region: usize,
    /// Weight used for routing: configured weight scaled by the agent's CPU percentage.
    pub weight: u32,
    /// Validation check thresholds and last results.
    pub check: CheckState,
    /// The validation layer.
    pub validation: Validation,
    /// The agent layer, if an agent reports this backend.
    pub agent: Option<AgentLayer>,
    /// Configured in the file (false: known from an agent only).
    pub configured: bool,
    /// What DNS makes of it.
    pub effective: Effective,
    /// Why, in words.
    pub reason: String,
    /// When `effective` last changed (or the backend appeared).
    pub last_change: SystemTime,
    /// The operator override in force, if any.
    pub override_: Option<Override>,
    /// Known only from the replicated registry: no report since this node started.
    pub remembered: bool,
}

/// A known agent, for the API.
#[derive(Debug, Clone)]
pub struct AgentView {
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
    /// When its last report arrived.
    pub last_seen: Option<SystemTime>,
    /// Stale (quiet or down).
    pub stale: bool,
    /// Announced its departure.
    pub left: bool,
    /// Newest report version.
    pub version: u64,
}

/// Everything answers and the API are computed from, at one moment.
#[derive(Debug, Clone)]
pub struct View {
    /// The configuration in force.
    pub settings: Arc<Settings>,
    /// The geolocation database in force.
    pub geo: Option<Arc<GeoDb>>,
    /// Backends: configured ones in config order, then agent-only ones.
    pub backends: Vec<BackendView>,
    /// Pinned agents.
    pub agents: Vec<AgentView>,
    /// Per domain, the addresses that were in rotation most recently (for
    /// `return_last_healthy`).
    pub last_healthy: HashMap<String, Vec<IpAddr>>,
    /// Increases with every publication.
    pub generation: u64,
    /// The replicated state this view was computed with.
    pub replicated: Arc<Machine>,
    /// Learned client latency, for `learned_latency` answers.
    pub latency: Arc<LatencyIndex>,
    /// The same, merged per (subnet, region), for the API.
    pub latency_cells: Arc<Vec<Merged>>,
    /// The latest backend status changes, newest first.
    pub recent: Arc<Vec<Change>>,
    /// Agents' last report times, live (see [`LastSeen`]).
    pub seen: Arc<LastSeen>,
    /// This node holds the cluster's state. False only while a node started without data
    /// catches up: DNS answers SERVFAIL (resolvers ask another nameserver) rather than
    /// answer without the overrides it has not received yet.
    pub synced: bool,
}

/// When each agent's last report arrived, refreshed in place on every report.
///
/// A heartbeat that changes nothing must not publish a new view (that would rebuild every
/// reader's state), yet operators want to see it arrive: the owner stores the time here
/// and readers load it. One writer (the owner), relaxed atomics: a reader may see a time
/// a moment old, never a torn one.
#[derive(Debug, Default)]
pub struct LastSeen(HashMap<String, AtomicU64>);

impl LastSeen {
    /// A board with these agents and times.
    pub fn new<'a>(agents: impl IntoIterator<Item = (&'a str, SystemTime)>) -> LastSeen {
        LastSeen(
            agents
                .into_iter()
                .map(|(id, t)| (id.to_owned(), AtomicU64::new(wall_ms(t))))
                .collect(),
        )
    }

    /// Records a report from `agent_id` at `t`; false if the agent is not on this board.
    pub fn touch(&self, agent_id: &str, t: SystemTime) -> bool {
        self.0
            .get(agent_id)
            .map(|at| at.store(wall_ms(t), Ordering::Relaxed))
            .is_some()
    }

    /// When `agent_id` last reported, if it is on this board.
    pub fn get(&self, agent_id: &str) -> Option<SystemTime> {
        self.0.get(agent_id).map(|at| {
            SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(at.load(Ordering::Relaxed))
        })
    }
}

/// Per domain, the addresses in rotation now; a domain with none keeps the set it had
/// (for `return_last_healthy`), and domains no longer configured are dropped.
pub fn update_last_healthy(
    last: &mut HashMap<String, Vec<IpAddr>>,
    settings: &Settings,
    backends: &[BackendView],
) {
    for domain in &settings.domains {
        let healthy: Vec<IpAddr> = backends
            .iter()
            .filter(|b| {
                b.effective.in_rotation()
                    && settings.serves(domain, b.region, &b.key.service, b.key.address, b.key.port)
            })
            .map(|b| b.key.address)
            .collect();
        if !healthy.is_empty() {
            last.insert(domain.name.clone(), healthy);
        }
    }
    last.retain(|name, _| settings.domains.iter().any(|d| &d.name == name));
}

/// One backend status change.
#[derive(Debug, Clone)]
pub struct Change {
    /// When it happened.
    pub at: SystemTime,
    /// `service/address:port`.
    pub backend: String,
    /// Region.
    pub region: String,
    /// Status before.
    pub from: &'static str,
    /// Status after.
    pub to: &'static str,
    /// Why, in words.
    pub reason: String,
}

/// The keys of every configured backend, in config order, with their region index.
pub fn backend_keys(settings: &Settings) -> Vec<(usize, BackendKey, u32)> {
    settings
        .regions
        .iter()
        .enumerate()
        .flat_map(|(i, region)| {
            region.servers.iter().map(move |s| {
                let key = BackendKey {
                    region: region.name.clone(),
                    service: s.service.clone(),
                    address: s.address,
                    port: s.port,
                };
                (i, key, s.weight)
            })
        })
        .collect()
}

/// Milliseconds since the epoch.
pub fn wall_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The registry key of a backend.
pub fn registry_key(key: &BackendKey) -> RegistryKey {
    RegistryKey {
        region: key.region.clone(),
        service: key.service.clone(),
        address: std::net::SocketAddr::new(key.address, key.port),
    }
}

/// `service/address:port` for logs.
pub fn display_key(key: &BackendKey) -> String {
    format!(
        "{}/{}",
        key.service,
        std::net::SocketAddr::new(key.address, key.port)
    )
}

/// Per service: (total, healthy).
pub fn service_counts(backends: &[BackendView]) -> BTreeMap<String, (usize, usize)> {
    let mut counts = BTreeMap::new();
    for b in backends {
        let e: &mut (usize, usize) = counts.entry(b.key.service.clone()).or_default();
        e.0 += 1;
        e.1 += usize::from(b.effective.in_rotation());
    }
    counts
}
