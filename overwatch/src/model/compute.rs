//! From what the owner knows to what it publishes: every backend with each status
//! layer, and what the Raft leader must write so the registry matches. Pure functions of
//! their inputs and the time they are given; the owner (`state`) calls them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use opengslb_proto::status::{Admin, Health};
use opengslb_proto::wire::StatusReport;

use crate::config::Settings;
use crate::model::admission::Pin;
use crate::model::check::CheckState;
use crate::model::geo::GeoDb;
use crate::model::machine::{Machine, OverrideKey, PinRecord, RegistryRecord, RequestV1};
use crate::model::status::{AgentClaim, Effective, Layers, Validation, effective};
use crate::model::view::{
    AgentLayer, AgentView, BackendKey, BackendView, Change, View, backend_keys, display_key,
    registry_key, update_last_healthy, wall_ms,
};

/// Most registry and pin changes the leader proposes in one Raft entry.
pub const MAX_BATCH: usize = 1000;

/// An agent's latest admitted report and how fresh it is.
#[derive(Debug, Clone)]
pub struct AgentReport {
    /// The report.
    pub report: StatusReport,
    /// When it arrived (staleness is measured from here).
    pub received: Instant,
    /// The same moment on the wall clock (shown to operators).
    pub received_at: SystemTime,
    /// Gossip declared the agent down since.
    pub member_down: bool,
}

/// Everything the backend views are computed from.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The configuration in force.
    pub settings: &'a Settings,
    /// Validation check state per configured backend.
    pub checks: &'a HashMap<BackendKey, CheckState>,
    /// Each agent's latest admitted report.
    pub agents: &'a BTreeMap<String, AgentReport>,
    /// The replicated state (overrides, registry).
    pub replicated: &'a Machine,
    /// The agents pinned here.
    pub pins: &'a BTreeMap<String, Pin>,
    /// Agents removed after `remove_after` without a report.
    pub expired_agents: &'a HashSet<String>,
    /// When each backend's effective status last changed.
    pub changes: &'a HashMap<BackendKey, (Effective, SystemTime)>,
    /// This node has run `remove_after` already: remembered backends whose agent never
    /// reported since are forgotten.
    pub forget_remembered: bool,
}

impl<'a> Inputs<'a> {
    /// Inputs of a node that knows only its configuration (no agent, check or cluster
    /// state yet): every configured backend, unchecked.
    pub fn config_only(settings: &'a Settings, empty: &'a Empty) -> Inputs<'a> {
        Inputs {
            settings,
            checks: &empty.checks,
            agents: &empty.agents,
            replicated: &empty.replicated,
            pins: &empty.pins,
            expired_agents: &empty.expired,
            changes: &empty.changes,
            forget_remembered: false,
        }
    }
}

/// Empty collections for [`Inputs::config_only`].
#[derive(Debug, Default)]
pub struct Empty {
    checks: HashMap<BackendKey, CheckState>,
    agents: BTreeMap<String, AgentReport>,
    replicated: Machine,
    pins: BTreeMap<String, Pin>,
    expired: HashSet<String>,
    changes: HashMap<BackendKey, (Effective, SystemTime)>,
}

impl View {
    /// The view of a node that knows only its configuration (and geolocation database):
    /// every configured backend unchecked, no agents, no replicated state. What DNS
    /// tests, benchmarks and fuzz targets answer from, without running an owner.
    pub fn from_config(settings: Arc<Settings>, geo: Option<Arc<GeoDb>>) -> View {
        let empty = Empty::default();
        let backends = backends(
            &Inputs::config_only(&settings, &empty),
            std::time::Instant::now(),
            SystemTime::now(),
        );
        let mut last_healthy = HashMap::new();
        update_last_healthy(&mut last_healthy, &settings, &backends);
        View {
            settings,
            geo,
            backends,
            agents: Vec::new(),
            last_healthy,
            generation: 1,
            replicated: Arc::default(),
            latency: Arc::default(),
            latency_cells: Arc::default(),
            recent: Arc::default(),
            seen: Arc::default(),
            synced: true,
        }
    }
}

/// Every backend with its layers, at `now` (`wall` is the same moment on the wall clock):
/// configured ones in config order, then agent-only ones, then remembered ones.
pub fn backends(inputs: &Inputs<'_>, now: Instant, wall: SystemTime) -> Vec<BackendView> {
    let threshold = inputs.settings.stale.threshold;
    let agent_layer = |a: &AgentReport, i: usize| {
        let b = &a.report.backends[i];
        AgentLayer {
            agent_id: a.report.agent_id.clone(),
            admin: b.admin,
            health: b.health.clone(),
            weight_pct: b.weight_pct,
            last_seen: a.received_at,
            stale: a.member_down || now.duration_since(a.received) > threshold,
            left: a.report.leaving,
            contested_by: Vec::new(),
        }
    };
    // Agent claims by (service, address, port). One agent speaks for a backend; when
    // several do, that is a conflict, never a silent last-writer-wins (see `owner`).
    let mut all: HashMap<ClaimKey, Vec<Claim<'_>>> = HashMap::new();
    for a in inputs.agents.values() {
        for (i, b) in a.report.backends.iter().enumerate() {
            all.entry((b.service.clone(), b.address, b.port))
                .or_default()
                .push((agent_layer(a, i), b.weight, a.report.region.as_str()));
        }
    }
    let mut claims: HashMap<ClaimKey, Claim<'_>> = all
        .into_iter()
        .map(|(key, claimants)| (key, owner(claimants, inputs.pins)))
        .collect();
    let mut views = Vec::new();
    for (region, key, weight) in backend_keys(inputs.settings) {
        let checked = inputs.settings.regions[region].check.is_some();
        let check = inputs.checks.get(&key).cloned().unwrap_or_default();
        let agent = claims
            .remove(&(key.service.clone(), key.address, key.port))
            .map(|(l, _, _)| l);
        views.push(view(
            inputs, wall, key, region, weight, check, checked, agent, true,
        ));
    }
    let mut agent_only: Vec<_> = claims.into_iter().collect();
    agent_only.sort_by(|a, b| a.0.cmp(&b.0));
    for ((service, address, port), (layer, weight, region_name)) in agent_only {
        let Some(region) = inputs
            .settings
            .regions
            .iter()
            .position(|r| r.name == region_name)
        else {
            continue; // an agent in a region this node does not route: not answerable
        };
        let key = BackendKey {
            region: region_name.to_owned(),
            service,
            address,
            port,
        };
        views.push(view(
            inputs,
            wall,
            key,
            region,
            weight,
            CheckState::default(),
            false,
            Some(layer),
            false,
        ));
    }
    remembered(inputs, &mut views, wall);
    views
}

/// A backend as agents name it: service, address, port.
type ClaimKey = (String, IpAddr, u16);

/// One agent's claim: its layer, the configured weight it reports, its region.
type Claim<'a> = (AgentLayer, u32, &'a str);

/// Of several agents claiming one backend, the one believed: among those that speak now
/// (fresh, not leaving), the one pinned first (ties: the smaller id), so an agent that
/// registers later with the same token cannot take over a backend another agent speaks
/// for. If none speaks now, the freshest. The other live claimants are recorded as
/// `contested_by`: counted and shown, not silently dropped.
fn owner<'a>(mut claimants: Vec<Claim<'a>>, pins: &BTreeMap<String, Pin>) -> Claim<'a> {
    let live = |l: &AgentLayer| !l.stale && !l.left;
    let pinned = |l: &AgentLayer| pins.get(&l.agent_id).map(|p| p.pinned_at);
    claimants.sort_by(|(a, _, _), (b, _, _)| {
        live(b)
            .cmp(&live(a))
            .then_with(|| match (live(a), live(b)) {
                (true, true) => pinned(a)
                    .unwrap_or(SystemTime::UNIX_EPOCH)
                    .cmp(&pinned(b).unwrap_or(SystemTime::UNIX_EPOCH)),
                _ => b.last_seen.cmp(&a.last_seen),
            })
            .then_with(|| a.agent_id.cmp(&b.agent_id))
    });
    let contested_by: Vec<String> = claimants
        .iter()
        .skip(1)
        .filter(|(l, _, _)| live(l) && live(&claimants[0].0))
        .map(|(l, _, _)| l.agent_id.clone())
        .collect();
    let (mut layer, weight, region) = claimants.swap_remove(0);
    layer.contested_by = contested_by;
    (layer, weight, region)
}

/// Backends the replicated registry knows and no agent has reported since this node
/// started: shown stale (out of DNS) until their agent reports again or they are
/// forgotten after `remove_after`.
fn remembered(inputs: &Inputs<'_>, views: &mut Vec<BackendView>, wall: SystemTime) {
    if inputs.replicated.backends.is_empty() {
        return;
    }
    let known: std::collections::HashSet<BackendKey> =
        views.iter().map(|v| v.key.clone()).collect();
    for (rk, record) in &inputs.replicated.backends {
        let Some(agent_id) = &record.agent_id else {
            continue;
        };
        // Forgotten: quiet for remove_after, or its pin was revoked.
        let pinned = inputs.pins.contains_key(agent_id);
        if inputs.forget_remembered || !pinned || inputs.expired_agents.contains(agent_id) {
            continue;
        }
        let key = BackendKey {
            region: rk.region.clone(),
            service: rk.service.clone(),
            address: rk.address.ip(),
            port: rk.address.port(),
        };
        let Some(region) = inputs
            .settings
            .regions
            .iter()
            .position(|r| r.name == rk.region)
        else {
            continue;
        };
        if known.contains(&key) {
            continue;
        }
        let layer = AgentLayer {
            agent_id: agent_id.clone(),
            admin: Admin::Ready,
            health: Health::Unchecked,
            weight_pct: 100,
            last_seen: SystemTime::UNIX_EPOCH + Duration::from_millis(record.changed_at_ms),
            stale: true,
            left: false,
            contested_by: Vec::new(),
        };
        let mut view = view(
            inputs,
            wall,
            key,
            region,
            record.weight,
            CheckState::default(),
            false,
            Some(layer),
            false,
        );
        view.remembered = true;
        views.push(view);
    }
}

#[allow(clippy::too_many_arguments)]
fn view(
    inputs: &Inputs<'_>,
    wall: SystemTime,
    key: BackendKey,
    region: usize,
    weight: u32,
    check: CheckState,
    checked: bool,
    agent: Option<AgentLayer>,
    configured: bool,
) -> BackendView {
    let validation = match (checked, check.healthy) {
        (false, _) => Validation::Disabled,
        (true, None) => Validation::Pending,
        (true, Some(true)) => Validation::Healthy,
        (true, Some(false)) => {
            Validation::Unhealthy(check.last_error.clone().unwrap_or_else(|| "failing".into()))
        }
    };
    let claim = agent.as_ref().map(|a| AgentClaim {
        left: a.left,
        draining: a.admin != Admin::Ready,
        healthy: !matches!(a.health, Health::Down(_)),
        fresh: !a.stale,
    });
    let override_ = inputs
        .replicated
        .overrides
        .get(&OverrideKey {
            service: key.service.clone(),
            address: std::net::SocketAddr::new(key.address, key.port),
        })
        .filter(|o| o.active(wall_ms(wall)))
        .cloned();
    let (effective, reason) = effective(&Layers {
        override_: override_.as_ref().map(|o| crate::model::status::Override {
            healthy: o.healthy,
            reason: format!("{} (by {})", o.reason, o.author),
        }),
        agent: claim,
        validation: validation.clone(),
    });
    let reason = match &agent {
        Some(a) if a.stale && effective == Effective::Stale => {
            format!("agent {} stale", a.agent_id)
        }
        _ => reason,
    };
    let weight = match &agent {
        Some(a) if weight > 0 => (u64::from(weight) * u64::from(a.weight_pct) / 100).max(1) as u32,
        _ => weight,
    };
    let last_change = inputs
        .changes
        .get(&key)
        .filter(|(e, _)| *e == effective)
        .map_or(wall, |(_, t)| *t);
    BackendView {
        key,
        region,
        weight,
        check,
        validation,
        agent,
        configured,
        effective,
        reason,
        last_change,
        override_,
        remembered: false,
    }
}

/// The status of each backend and since when, after `backends` (the previous map says
/// what was shown before), and the changes from what was shown, stamped `wall`. A backend
/// seen for the first time is not a change.
pub fn status_changes(
    previous: &HashMap<BackendKey, (Effective, SystemTime)>,
    backends: &[BackendView],
    wall: SystemTime,
) -> (HashMap<BackendKey, (Effective, SystemTime)>, Vec<Change>) {
    let mut now = HashMap::with_capacity(backends.len());
    let mut changed = Vec::new();
    for b in backends {
        match previous.get(&b.key) {
            Some((e, t)) if *e == b.effective => {
                now.insert(b.key.clone(), (*e, *t));
            }
            before => {
                if let Some((before, _)) = before {
                    changed.push(Change {
                        at: wall,
                        backend: display_key(&b.key),
                        region: b.key.region.clone(),
                        from: before.name(),
                        to: b.effective.name(),
                        reason: b.reason.clone(),
                    });
                }
                now.insert(b.key.clone(), (b.effective, b.last_change));
            }
        }
    }
    (now, changed)
}

/// Every pinned agent as the API shows it, at `now`: stale when gossip says it is down
/// or its last report is older than `threshold`.
pub fn agent_views(
    pins: &BTreeMap<String, Pin>,
    agents: &BTreeMap<String, AgentReport>,
    now: Instant,
    threshold: Duration,
) -> Vec<AgentView> {
    pins.iter()
        .map(|(id, pin)| {
            let entry = agents.get(id);
            AgentView {
                agent_id: id.clone(),
                region: pin.region.clone(),
                fingerprint: pin.fingerprint.clone(),
                services: pin.services.iter().cloned().collect(),
                backends: entry.map_or(0, |a| a.report.backends.len()),
                last_seen: entry.map(|a| a.received_at),
                stale: entry
                    .is_none_or(|a| a.member_down || now.duration_since(a.received) > threshold),
                left: entry.is_some_and(|a| a.report.leaving),
                version: pin.version,
            }
        })
        .collect()
}

/// What the leader must write so the replicated registry and pins match `views` (at most
/// [`MAX_BATCH`] changes: the rest follow in the next proposal).
pub fn registry_changes(
    machine: &Machine,
    pins: &BTreeMap<String, Pin>,
    views: &[BackendView],
) -> Vec<RequestV1> {
    let mut changes = Vec::new();
    for (agent_id, pin) in pins {
        if !machine.pins.contains_key(agent_id) {
            changes.push(RequestV1::PinAgent {
                agent_id: agent_id.clone(),
                pin: PinRecord {
                    fingerprint: pin.fingerprint.clone(),
                    region: pin.region.clone(),
                    services: pin.services.clone(),
                    pinned_at_ms: wall_ms(pin.pinned_at),
                },
            });
        }
    }
    let mut shown = std::collections::HashSet::new();
    for view in views {
        let key = registry_key(&view.key);
        let record = RegistryRecord {
            weight: view.weight,
            agent_id: view.agent.as_ref().map(|a| a.agent_id.clone()),
            status: view.effective.name().to_owned(),
            changed_at_ms: wall_ms(view.last_change),
        };
        let same = machine
            .backends
            .get(&key)
            .is_some_and(|r| r.status == record.status && r.agent_id == record.agent_id);
        if !same {
            changes.push(RequestV1::RecordBackend {
                key: key.clone(),
                record,
            });
        }
        shown.insert(key);
    }
    for key in machine.backends.keys() {
        if !shown.contains(key) {
            changes.push(RequestV1::RemoveBackend { key: key.clone() });
        }
    }
    changes.truncate(MAX_BATCH);
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn settings() -> Arc<Settings> {
        let yaml = "dns:\n  zones: [t.test]\nregions:\n  - name: eu\n    servers: [{address: 192.0.2.1, service: app.t.test}]\ndomains:\n  - {name: app.t.test, routing_algorithm: round-robin, regions: [eu]}\n";
        Arc::new(crate::config::parse("t.yaml", yaml).unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn a_first_sighting_is_no_change_and_a_new_status_is_one() {
        let settings = settings();
        let empty = Empty::default();
        let (t0, w0) = (Instant::now(), SystemTime::now());
        let shown = backends(&Inputs::config_only(&settings, &empty), t0, w0);
        let (known, news) = status_changes(&HashMap::new(), &shown, w0);
        assert!(news.is_empty(), "appearing is not changing: {news:?}");
        let (again, news) = status_changes(&known, &shown, w0);
        assert!(news.is_empty() && again == known, "the same statuses again");

        let mut drained = shown.clone();
        drained[0].effective = Effective::Draining;
        drained[0].reason = "agent drain".into();
        let (after, news) = status_changes(&known, &drained, w0);
        assert_eq!(news.len(), 1);
        assert_eq!(
            (news[0].from, news[0].to, news[0].backend.as_str()),
            (
                shown[0].effective.name(),
                "draining",
                "app.t.test/192.0.2.1:80"
            )
        );
        assert_eq!(after[&drained[0].key].0, Effective::Draining);
    }
}
