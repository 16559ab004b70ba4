//! Daemon mode (`--config agent.yaml`): the same status said to HAProxy (agent-check) and to
//! overwatch (signed reports over encrypted gossip).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use opengslb_proto::identity::{AgentIdentity, SignError};
use opengslb_proto::member::{self, Command, GossipSettings, Role, now_us};
use opengslb_proto::seal::{ClusterKey, KeyError, KeyText};
use opengslb_proto::wire::{BackendReport, SignedReport, StatusReport, VersionClock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::admin_files::AdminFiles;
use crate::agent_check::{self, ServerConfig};
use crate::cli::Args;
use crate::config::{self, AgentConfig};
use crate::identity_files;
use crate::listener;
use crate::monitor::{
    Monitor, MonitorConfig, Snapshot, SnapshotRx, first_result_within, wait_settled,
};
use crate::platform::{self, Event, Signals};
use crate::status::Health;

/// How long SIGTERM waits for the leaving report and the graceful leave to go out.
const LEAVE_GRACE: Duration = Duration::from_secs(3);

/// Why the daemon stopped with an error; `exit_code` says which code.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The file is unusable (exit 2).
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    /// The cluster key is missing or malformed: no gossip without encryption (exit 2).
    #[error("{0}")]
    Key(#[from] opengslb_proto::seal::KeyError),
    /// Identity files unusable (exit 1).
    #[error("{0}")]
    Identity(#[from] crate::identity_files::IdentityFileError),
    /// Anything else at start-up (exit 1).
    #[error("{0}")]
    Startup(String),
}

impl DaemonError {
    /// 2 for what the operator must fix in the file, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Config(_) | DaemonError::Key(_) => 2,
            _ => 1,
        }
    }
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(path: &Path, mut cfg: AgentConfig, args: &Args) -> Result<(), DaemonError> {
    for warning in &cfg.warnings {
        tracing::warn!(file = %path.display(), "{warning}");
    }
    apply_flag_overrides(&mut cfg, args);
    let keys = cluster_keys(&cfg)?;
    let identity = Arc::new(identity_files::load_or_create(
        &cfg.cert_path,
        &cfg.key_path,
        &cfg.region,
    )?);
    tracing::info!(
        agent_id = identity.agent_id(),
        backends = cfg.backends.len(),
        "agent identity"
    );

    let mut signals =
        Signals::install().map_err(|e| DaemonError::Startup(format!("signals: {e}")))?;
    let shutdown = CancellationToken::new();

    let monitor_config = MonitorConfig {
        backends: cfg.backends.clone(),
        predictive: cfg.predictive.clone(),
        ..MonitorConfig::flags(
            cfg.timeframe,
            AdminFiles {
                drain: cfg.drain_file.clone(),
                maint: cfg.maint_file.clone(),
            },
        )
    };
    let (monitor, snapshots) = Monitor::start(monitor_config)
        .await
        .map_err(|e| DaemonError::Startup(e.to_string()))?;
    let (outcome_tx, outcome_rx) = mpsc::channel(256);
    crate::local_checks::spawn(&cfg.backends, outcome_tx, shutdown.clone())
        .map_err(DaemonError::Startup)?;
    let monitor_task = tokio::spawn(monitor.run(Some(outcome_rx), shutdown.clone()));

    let gossip_stop = CancellationToken::new();
    // Host names are resolved now and every 30 s (`follow_overwatch_nodes`); one that does
    // not resolve yet is not fatal.
    let (seeds, unresolved) = config::resolve_overwatch_nodes(&cfg.overwatch_nodes);
    for node in &unresolved {
        tracing::warn!(node = %node, "gossip.overwatch_nodes entry does not resolve now; retried every 30 s");
    }
    let mut settings = GossipSettings::lan(
        cfg.gossip_bind,
        seeds.clone(),
        keys,
        Role::Agent,
        identity.agent_id().to_owned(),
    );
    settings.tokens = service_tokens(&cfg);
    settings.advertise = cfg.gossip_advertise;
    // The metrics endpoint first: a port in use stops the start, before anything joins.
    let metrics = match cfg.metrics {
        Some(addr) => {
            let handle = crate::metrics_http::install().map_err(DaemonError::Startup)?;
            let listener = crate::metrics_http::bind(addr)
                .await
                .map_err(DaemonError::Startup)?;
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "metrics listening");
            }
            Some(tokio::spawn(crate::metrics_http::serve(
                listener,
                handle,
                shutdown.clone(),
            )))
        }
        None => None,
    };
    let mut gossip = member::start(settings, gossip_stop.clone())
        .await
        .map_err(|e| {
            DaemonError::Startup(format!("gossip.bind_address {}: {e}", cfg.gossip_bind))
        })?;
    tracing::info!(addr = %gossip.identity.addr, overwatch = ?cfg.overwatch_nodes, "gossip started");
    let (hearing, heard) = crate::hearing::Hearing::new(
        identity.agent_id().to_owned(),
        cfg.overwatch_nodes.clone(),
        cfg.heartbeat,
    );
    let events = std::mem::replace(&mut gossip.events, mpsc::channel(1).1);
    let resolver_task = tokio::spawn(follow_overwatch_nodes(
        cfg.overwatch_nodes.clone(),
        seeds,
        gossip.commands.clone(),
        shutdown.clone(),
    ));
    let hearing_task = tokio::spawn(hearing.run(events, shutdown.clone()));
    let publisher = tokio::spawn(publish_reports(
        snapshots.clone(),
        cfg.clone(),
        identity.clone(),
        gossip.commands.clone(),
        shutdown.clone(),
    ));

    let latency_task = cfg.latency.clone().map(|settings| {
        let ports = cfg.backends.iter().map(|b| b.port).collect();
        tracing::info!(poll = ?settings.poll_interval, "latency learning on");
        tokio::spawn(crate::latency::run(
            settings,
            ports,
            identity.clone(),
            cfg.region.clone(),
            gossip.commands.clone(),
            shutdown.clone(),
        ))
    });

    let server = match cfg.agent_check {
        Some(addr) if !args.systemd => Some(
            listener::bind(
                Some(addr.ip()).filter(|ip| !ip.is_unspecified()),
                addr.port(),
            )
            .map_err(|e| DaemonError::Startup(e.to_string()))?,
        ),
        _ if args.systemd => {
            Some(listener::from_systemd().map_err(|e| DaemonError::Startup(e.to_string()))?)
        }
        _ => None,
    };
    let server_task = server.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, reply = snapshots.borrow().line.trim_end(), "listening");
        }
        let config = ServerConfig {
            log_requests: cfg.log_requests,
            first_result_within: first_result_within(&cfg.backends),
            overwatch: Some(heard.clone()),
            ..ServerConfig::default()
        };
        tokio::spawn(agent_check::serve(
            listener,
            snapshots.clone(),
            config,
            shutdown.clone(),
        ))
    });
    platform::notify_ready();

    let signal_name = loop {
        match signals.next().await {
            Event::Stop(name) => break name,
            Event::Reload => reload(path, args, &cfg, &gossip.commands).await,
        }
    };
    tracing::info!(signal = signal_name, "leaving the cluster and stopping");
    platform::notify_stopping();
    shutdown.cancel();
    let _ = publisher.await;
    if let Some(task) = latency_task {
        let _ = task.await;
    }
    // Say goodbye with a signed report, so overwatch drops our backends at once.
    let leaving = build_report(
        &snapshots.borrow(),
        &cfg,
        &identity,
        VersionClock::default().next(now_us()),
        true,
    );
    let left = match leaving {
        Ok(leaving) => gossip.commands.send(Command::Leave(leaving)).await.is_ok(),
        Err(err) => {
            tracing::error!(error = %err, "cannot sign the leaving report; overwatch will find this agent gone when its probes fail");
            false
        }
    };
    if !left {
        gossip_stop.cancel();
    }
    if tokio::time::timeout(LEAVE_GRACE, gossip.task)
        .await
        .is_err()
    {
        tracing::warn!("gossip did not finish leaving in time");
    }
    if let Some(task) = server_task {
        let _ = task.await;
    }
    let _ = monitor_task.await;
    let _ = hearing_task.await;
    let _ = resolver_task.await;
    if let Some(task) = metrics {
        let _ = task.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// How often `gossip.overwatch_nodes` are resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(30);

/// Resolves the overwatch nodes every [`RESOLVE_EVERY`] and hands the member the new
/// addresses when they change (a host name that resolves now, or differently).
async fn follow_overwatch_nodes(
    nodes: Vec<String>,
    mut current: Vec<SocketAddr>,
    member: mpsc::Sender<Command>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(RESOLVE_EVERY);
    tick.reset();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let lookup = nodes.clone();
        let Ok((seeds, _)) =
            tokio::task::spawn_blocking(move || config::resolve_overwatch_nodes(&lookup)).await
        else {
            continue;
        };
        if seeds != current && !seeds.is_empty() {
            tracing::info!(overwatch = ?seeds, "gossip.overwatch_nodes resolve to new addresses");
            if member.send(Command::Seeds(seeds.clone())).await.is_err() {
                return;
            }
            current = seeds;
        }
    }
}

/// The configured cluster keys (the first seals, all open).
fn cluster_keys(cfg: &AgentConfig) -> Result<Vec<ClusterKey>, KeyError> {
    cfg.encryption_key
        .as_ref()
        .ok_or(KeyError::Missing)
        .and_then(KeyText::keys)
}

/// Service → token for the gossip member: the agent's one token for each of its
/// services (what it challenges overwatch members to prove).
fn service_tokens(cfg: &AgentConfig) -> BTreeMap<String, String> {
    cfg.backends
        .iter()
        .map(|b| (b.service.clone(), cfg.service_token.clone()))
        .collect()
}

/// SIGHUP: reads the file again and applies the gossip keys (a rotation step needs no
/// restart, so no backend leaves DNS); anything else that changed waits for a restart,
/// and says so.
async fn reload(path: &Path, args: &Args, running: &AgentConfig, member: &mpsc::Sender<Command>) {
    let mut next = match config::load(path) {
        Ok(next) => next,
        Err(err) => {
            tracing::error!("configuration reload failed; the running configuration stays:\n{err}");
            return;
        }
    };
    apply_flag_overrides(&mut next, args);
    let keys = match cluster_keys(&next) {
        Ok(keys) => keys,
        Err(err) => {
            tracing::error!(error = %err, "configuration reload failed; the running gossip keys stay");
            return;
        }
    };
    let count = keys.len();
    if member
        .send(Command::Rekey(keys, service_tokens(running)))
        .await
        .is_ok()
    {
        tracing::info!(file = %path.display(), keys = count, "configuration reloaded: gossip keys applied (the first seals, all open)");
    }
    let waiting = needs_restart(running, &next);
    if !waiting.is_empty() {
        tracing::warn!(
            changed = %waiting.join(", "),
            "these settings changed in the file and take effect after a restart (gossip.encryption_key applies now)"
        );
    }
    for warning in &next.warnings {
        tracing::warn!(file = %path.display(), "{warning}");
    }
}

/// The keys whose new values a running agent cannot take: everything but the gossip keys.
fn needs_restart(running: &AgentConfig, next: &AgentConfig) -> Vec<&'static str> {
    let checks: [(&'static str, bool); 15] = [
        (
            "identity.service_token",
            running.service_token != next.service_token,
        ),
        ("identity.region", running.region != next.region),
        (
            "identity.cert_path/key_path",
            running.cert_path != next.cert_path || running.key_path != next.key_path,
        ),
        ("backends", running.backends != next.backends),
        ("predictive", running.predictive != next.predictive),
        (
            "gossip.overwatch_nodes",
            running.overwatch_nodes != next.overwatch_nodes,
        ),
        (
            "gossip.bind_address/advertise_address",
            running.gossip_bind != next.gossip_bind
                || running.gossip_advertise != next.gossip_advertise,
        ),
        ("heartbeat.interval", running.heartbeat != next.heartbeat),
        (
            "agent_check.listen/port",
            running.agent_check != next.agent_check,
        ),
        (
            "agent_check.drain_file/maint_file",
            running.drain_file != next.drain_file || running.maint_file != next.maint_file,
        ),
        ("agent_check.timeframe", running.timeframe != next.timeframe),
        (
            "agent_check.log_requests",
            running.log_requests != next.log_requests,
        ),
        ("latency_learning", running.latency != next.latency),
        ("metrics", running.metrics != next.metrics),
        ("logging", running.logging != next.logging),
    ];
    checks
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
}

/// Flags given with `--config` override its agent-check settings.
fn apply_flag_overrides(cfg: &mut AgentConfig, args: &Args) {
    if let Some(port) = args.port {
        let ip = args
            .listen
            .unwrap_or(std::net::Ipv6Addr::UNSPECIFIED.into());
        cfg.agent_check = Some(SocketAddr::new(ip, port));
    }
    if args.drain_file.is_some() {
        cfg.drain_file = args.drain_file.clone();
    }
    if args.maint_file.is_some() {
        cfg.maint_file = args.maint_file.clone();
    }
    if args.log_requests {
        cfg.log_requests = true;
    }
    if args.timeframe.is_some() {
        cfg.timeframe = args.timeframe();
    }
}

/// Publishes a report whenever the status changes, and again every heartbeat.
async fn publish_reports(
    mut snapshots: SnapshotRx,
    cfg: AgentConfig,
    identity: Arc<AgentIdentity>,
    commands: mpsc::Sender<Command>,
    shutdown: CancellationToken,
) {
    let mut clock = VersionClock::default();
    let mut heartbeat = tokio::time::interval(cfg.heartbeat);
    // Overwatch hears nothing before every check has answered once: an unchecked backend
    // would count as healthy there, and a down one would flap out of DNS and back.
    tokio::select! {
        () = shutdown.cancelled() => return,
        _ = wait_settled(&mut snapshots, first_result_within(&cfg.backends)) => {}
    }
    loop {
        let published = Arc::clone(&snapshots.borrow_and_update());
        match build_report(&published, &cfg, &identity, clock.next(now_us()), false) {
            Ok(signed) => {
                if commands.send(Command::Publish(signed)).await.is_err() {
                    return;
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot sign the status report; overwatch will see this agent as stale")
            }
        }
        // The heartbeat bounds the time since the last report, whatever sent it.
        heartbeat.reset();
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if worth_publishing(&published, &snapshots.borrow()) {
                        break;
                    }
                }
                _ = heartbeat.tick() => break,
            }
        }
    }
}

/// A CPU weight that moved by less than this since the last report waits for the next
/// heartbeat: the weight wanders by a point or two all the time, and every report costs
/// each overwatch node a signature check. HAProxy still hears every point at once.
const WEIGHT_HYSTERESIS: u8 = 5;

/// Whether `now` differs from the last published status enough to report at once: any
/// admin or health change does, a weight change only past the hysteresis.
fn worth_publishing(last: &Snapshot, now: &Snapshot) -> bool {
    last.status.admin != now.status.admin
        || last.backends != now.backends
        || last.status.weight.get().abs_diff(now.status.weight.get()) >= WEIGHT_HYSTERESIS
}

fn build_report(
    snapshot: &Snapshot,
    cfg: &AgentConfig,
    identity: &AgentIdentity,
    version: u64,
    leaving: bool,
) -> Result<SignedReport, SignError> {
    let backends = cfg
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| BackendReport {
            service: b.service.clone(),
            address: b.address,
            port: b.port,
            weight: b.weight,
            weight_pct: snapshot.status.weight.get(),
            // The same words HAProxy hears: one vocabulary (opengslb_proto::status).
            admin: snapshot.status.admin,
            health: snapshot
                .backends
                .get(i)
                .cloned()
                .unwrap_or(Health::Unchecked),
        })
        .collect();
    let report = StatusReport {
        agent_id: identity.agent_id().to_owned(),
        region: cfg.region.clone(),
        version,
        backends,
        leaving,
    };
    SignedReport::sign(&report, identity, &cfg.service_token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Admin, Status, WeightPct};

    fn snapshot(weight: u64, admin: Admin, backends: Vec<Health>) -> Snapshot {
        let status = Status {
            weight: WeightPct::clamped(weight),
            admin,
            health: Health::Up,
        };
        Snapshot::new(status, backends, None)
    }

    #[test]
    fn a_reload_names_every_setting_that_waits_for_a_restart() {
        let text = "identity:\n  service_token: app-token-0123456789\n  region: eu\nbackends:\n  - {service: app, address: 127.0.0.1, port: 80}\ngossip:\n  encryption_key: AAAA\n  overwatch_nodes: [\"127.0.0.1:7946\"]\n";
        let running = config::parse("a.yaml", text).expect("valid");
        let keys_only = config::parse("a.yaml", &text.replace("AAAA", "BBBB")).expect("valid");
        assert!(
            needs_restart(&running, &keys_only).is_empty(),
            "keys apply now"
        );
        let more = config::parse(
            "a.yaml",
            &format!(
                "{}heartbeat:\n  interval: 3s\nmetrics:\n  enabled: true\n",
                text.replace("port: 80", "port: 81")
            ),
        )
        .expect("valid");
        assert_eq!(
            needs_restart(&running, &more),
            ["backends", "heartbeat.interval", "metrics"]
        );
    }

    #[test]
    fn small_weight_moves_wait_for_the_heartbeat_and_state_changes_do_not() {
        let last = snapshot(80, Admin::Ready, vec![Health::Up]);
        assert!(!worth_publishing(
            &last,
            &snapshot(76, Admin::Ready, vec![Health::Up])
        ));
        assert!(!worth_publishing(
            &last,
            &snapshot(84, Admin::Ready, vec![Health::Up])
        ));
        assert!(worth_publishing(
            &last,
            &snapshot(75, Admin::Ready, vec![Health::Up])
        ));
        assert!(
            worth_publishing(&last, &snapshot(80, Admin::Drain, vec![Health::Up])),
            "a drain goes out at once"
        );
        assert!(
            worth_publishing(
                &last,
                &snapshot(80, Admin::Ready, vec![Health::Down("refused".into())])
            ),
            "a failing backend goes out at once"
        );
    }
}
