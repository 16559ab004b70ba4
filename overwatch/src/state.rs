//! The one owner of backend state: applies check results and config reloads, and publishes
//! an immutable `View` whenever something an answer depends on changed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::geo::GeoDb;
use crate::health::{CheckReport, CheckState};
use crate::status::{Effective, Layers, Validation, effective};

/// How often a changed smoothed RTT alone (no health change) is published.
const RTT_PUBLISH_PERIOD: Duration = Duration::from_secs(1);

/// A backend's identity, stable across reloads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
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

/// One backend with every status layer.
#[derive(Debug, Clone)]
pub struct BackendView {
    /// Identity.
    pub key: BackendKey,
    /// Index into `settings.regions`.
    pub region: usize,
    /// Configured weight.
    pub weight: u32,
    /// Check thresholds and last results.
    pub check: CheckState,
    /// The validation layer.
    pub validation: Validation,
    /// What DNS makes of it.
    pub effective: Effective,
    /// Why, in words.
    pub reason: String,
    /// When `effective` last changed (or the backend appeared).
    pub last_change: SystemTime,
}

/// Everything answers and the API are computed from, at one moment.
#[derive(Debug, Clone)]
pub struct View {
    /// The configuration in force.
    pub settings: Arc<Settings>,
    /// The geolocation database in force.
    pub geo: Option<Arc<GeoDb>>,
    /// Backends in config order (regions, then servers).
    pub backends: Vec<BackendView>,
    /// Per domain, the addresses that were in rotation most recently (for
    /// `return_last_healthy`).
    pub last_healthy: HashMap<String, Vec<IpAddr>>,
    /// Increases with every publication.
    pub generation: u64,
}

/// Readers' handle on the latest view.
pub type ViewRx = watch::Receiver<Arc<View>>;

/// Messages to the owner.
#[derive(Debug)]
pub enum Command {
    /// A validated configuration (and its geolocation database) replaces the running one.
    Reload(Arc<Settings>, Option<Arc<GeoDb>>),
}

#[derive(Debug, Clone)]
struct Entry {
    check: CheckState,
    effective: Effective,
    last_change: SystemTime,
}

/// The owner. `run` is its task.
#[derive(Debug)]
pub struct StateOwner {
    settings: Arc<Settings>,
    geo: Option<Arc<GeoDb>>,
    entries: HashMap<BackendKey, Entry>,
    last_healthy: HashMap<String, Vec<IpAddr>>,
    generation: u64,
    rtt_dirty: bool,
    tx: watch::Sender<Arc<View>>,
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

impl StateOwner {
    /// An owner for `settings`, with every backend not yet checked; publishes at once.
    pub fn new(settings: Arc<Settings>, geo: Option<Arc<GeoDb>>) -> (StateOwner, ViewRx) {
        let placeholder = Arc::new(View {
            settings: settings.clone(),
            geo: geo.clone(),
            backends: Vec::new(),
            last_healthy: HashMap::new(),
            generation: 0,
        });
        let (tx, rx) = watch::channel(placeholder);
        let mut owner = StateOwner {
            settings,
            geo,
            entries: HashMap::new(),
            last_healthy: HashMap::new(),
            generation: 0,
            rtt_dirty: false,
            tx,
        };
        owner.sync_entries();
        owner.publish();
        (owner, rx)
    }

    /// Applies reports and commands until `shutdown`.
    pub async fn run(
        mut self,
        mut reports: mpsc::Receiver<CheckReport>,
        mut commands: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
    ) {
        let mut rtt_tick = tokio::time::interval(RTT_PUBLISH_PERIOD);
        rtt_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                Some(command) = commands.recv() => match command {
                    Command::Reload(settings, geo) => {
                        self.settings = settings;
                        self.geo = geo;
                        self.sync_entries();
                        self.publish();
                    }
                },
                Some(report) = reports.recv() => {
                    if self.apply(&report) {
                        self.publish();
                    }
                }
                _ = rtt_tick.tick() => {
                    if self.rtt_dirty {
                        self.publish();
                    }
                }
            }
        }
    }

    /// Applies one check result; true when the effective status of the backend changed.
    pub fn apply(&mut self, report: &CheckReport) -> bool {
        let Some(region) = self
            .settings
            .regions
            .iter()
            .find(|r| r.name == report.key.region)
        else {
            return false; // a check of a backend that a reload removed
        };
        let Some(check) = &region.check else {
            return false;
        };
        let Some(entry) = self.entries.get_mut(&report.key) else {
            return false;
        };
        let changed = entry
            .check
            .record(&report.outcome, check.rise, check.fall, report.at);
        self.rtt_dirty |= report.outcome.is_ok();
        if changed {
            let (effective, reason) = effective(&layers(&entry.check, true));
            if effective != entry.effective {
                tracing::info!(backend = %display_key(&report.key), status = effective.name(), %reason, "backend status changed");
                entry.effective = effective;
                entry.last_change = report.at;
                return true;
            }
        }
        false
    }

    /// Adds entries for new backends, drops removed ones, keeps the rest as they were.
    fn sync_entries(&mut self) {
        let now = SystemTime::now();
        let mut next = HashMap::new();
        for (region, key, _) in backend_keys(&self.settings) {
            let checked = self.settings.regions[region].check.is_some();
            let entry = self.entries.remove(&key).unwrap_or_else(|| {
                let check = CheckState::new();
                Entry {
                    effective: effective(&layers(&check, checked)).0,
                    check,
                    last_change: now,
                }
            });
            next.insert(key, entry);
        }
        self.entries = next;
    }

    fn publish(&mut self) {
        self.generation += 1;
        self.rtt_dirty = false;
        let backends: Vec<BackendView> = backend_keys(&self.settings)
            .into_iter()
            .filter_map(|(region, key, weight)| {
                let entry = self.entries.get(&key)?;
                let checked = self.settings.regions[region].check.is_some();
                let l = layers(&entry.check, checked);
                let (effective, reason) = effective(&l);
                Some(BackendView {
                    key,
                    region,
                    weight,
                    check: entry.check.clone(),
                    validation: l.validation,
                    effective,
                    reason,
                    last_change: entry.last_change,
                })
            })
            .collect();
        for domain in &self.settings.domains {
            let healthy: Vec<IpAddr> = backends
                .iter()
                .filter(|b| domain.regions.contains(&b.region) && b.effective.in_rotation())
                .map(|b| b.key.address)
                .collect();
            if !healthy.is_empty() {
                self.last_healthy.insert(domain.name.clone(), healthy);
            }
        }
        self.last_healthy
            .retain(|name, _| self.settings.domains.iter().any(|d| &d.name == name));
        for (service, (total, healthy)) in service_counts(&backends) {
            metrics::gauge!("opengslb_backends_total", "service" => service.clone())
                .set(total as f64);
            metrics::gauge!("opengslb_backends_healthy", "service" => service).set(healthy as f64);
        }
        self.tx.send_replace(Arc::new(View {
            settings: self.settings.clone(),
            geo: self.geo.clone(),
            backends,
            last_healthy: self.last_healthy.clone(),
            generation: self.generation,
        }));
    }
}

fn layers(check: &CheckState, checked: bool) -> Layers {
    let validation = match (checked, check.healthy) {
        (false, _) => Validation::Disabled,
        (true, None) => Validation::Pending,
        (true, Some(true)) => Validation::Healthy,
        (true, Some(false)) => {
            Validation::Unhealthy(check.last_error.clone().unwrap_or_else(|| "failing".into()))
        }
    };
    Layers {
        override_: None,
        agent: None,
        validation,
    }
}

/// `service/address:port` for logs.
pub fn display_key(key: &BackendKey) -> String {
    let addr = std::net::SocketAddr::new(key.address, key.port);
    format!("{}/{}", key.service, addr)
}

/// Per service: (total, healthy).
pub fn service_counts(
    backends: &[BackendView],
) -> std::collections::BTreeMap<String, (usize, usize)> {
    let mut counts = std::collections::BTreeMap::new();
    for b in backends {
        let e: &mut (usize, usize) = counts.entry(b.key.service.clone()).or_default();
        e.0 += 1;
        e.1 += usize::from(b.effective.in_rotation());
    }
    counts
}
