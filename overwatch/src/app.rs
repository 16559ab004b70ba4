//! Wiring of one overwatch node: config → state owner ← checks; state → DNS snapshots →
//! DNS server; state → API; metrics; signals (SIGHUP reload, SIGTERM/SIGINT stop).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opengslb_proto::member;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, ApiState};
use crate::cluster::node::{Cluster, Write};
use crate::config::{self, ConfigError, Problem, Settings};
use crate::dns::{self, DnsSnapshot};
use crate::health::{CheckTarget, Prober, spawn_checks};
use crate::model::geo::GeoDb;
use crate::model::machine::{Request, RequestV1};
use crate::model::view::backend_keys;
use crate::state::{Command, Replication, StateOwner, ViewRx};
use crate::telemetry;

/// Buckets for the DNS and check duration histograms (seconds).
const LATENCY_BUCKETS: [f64; 12] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.05, 0.25, 1.0,
];
/// How long in-flight work may take after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A configuration ready to run: settings and the geolocation database they name.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Validated settings.
    pub settings: Arc<Settings>,
    /// The opened database, if configured.
    pub geo: Option<Arc<GeoDb>>,
}

/// Loads, validates and opens everything a config file names.
pub fn prepare(path: &Path) -> Result<Prepared, ConfigError> {
    let settings = config::load(path)?;
    let geo = match &settings.geo.database {
        Some(db) => Some(Arc::new(GeoDb::open(db).map_err(|e| ConfigError {
            file: path.display().to_string(),
            problems: vec![Problem {
                line: 0,
                column: 0,
                message: format!("overwatch.geolocation.database_path: {e}"),
            }],
            included: Vec::new(),
        })?)),
        None => None,
    };
    Ok(Prepared {
        settings: Arc::new(settings),
        geo,
    })
}

/// File descriptors the listeners' caps can take together, with room to spare.
const OPEN_FILES_WANTED: u64 = 4096;

/// Why the node could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A listener could not be bound.
    #[error("{what}: cannot listen on {addr}: {source}")]
    Bind {
        /// Which listener (config key).
        what: &'static str,
        /// Address.
        addr: SocketAddr,
        /// OS error.
        source: io::Error,
    },
    /// Something else at start-up.
    #[error("{0}")]
    Startup(String),
    /// The Raft core stopped while running (a storage error such as a full disk): the
    /// node exits non-zero so its supervisor restarts it, instead of serving a frozen
    /// copy that looks healthy.
    #[error("{0}")]
    RaftStopped(String),
}

/// Runs the node until SIGTERM or SIGINT. `data_dir` (the `--data-dir` flag) replaces
/// `overwatch.data_dir` from the file, now and on every reload.
pub async fn run(
    config_path: PathBuf,
    prepared: Prepared,
    data_dir: Option<PathBuf>,
) -> Result<(), RunError> {
    let with_data_dir = |settings: Arc<Settings>| match &data_dir {
        Some(dir) => {
            let mut settings = (*settings).clone();
            settings.data_dir = dir.clone();
            Arc::new(settings)
        }
        None => settings,
    };
    let settings = with_data_dir(prepared.settings.clone());
    log_warnings(&config_path, &settings);
    let metrics = install_metrics()?;
    match crate::listener::raise_open_files_limit() {
        // Caps of 512 + 512 + 256 HTTP connections, DNS over TCP and the data files.
        Some(limit) if limit < OPEN_FILES_WANTED => tracing::warn!(
            limit,
            wanted = OPEN_FILES_WANTED,
            "the open files limit is low: a connection flood could exhaust it before the listeners' caps turn it away; raise LimitNOFILE"
        ),
        Some(limit) => tracing::debug!(limit, "open files limit"),
        None => {}
    }
    let prober = Prober::new()
        .map_err(|e| RunError::Startup(format!("cannot build the HTTP client for checks: {e}")))?;
    let mut sighup =
        signal(SignalKind::hangup()).map_err(|e| RunError::Startup(format!("signals: {e}")))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| RunError::Startup(format!("signals: {e}")))?;
    let mut sigint =
        signal(SignalKind::interrupt()).map_err(|e| RunError::Startup(format!("signals: {e}")))?;

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (cluster, _rpc) = Cluster::start(
        settings.cluster.as_ref(),
        &settings.data_dir,
        &shutdown,
        &tracker,
    )
    .await
    .map_err(RunError::Startup)?;
    let (owner, view_rx) = StateOwner::new(settings.clone(), prepared.geo.clone());
    // Learned decisions per resolver, from DNS to the owner; DNS drops them when full.
    let (observer_tx, observer_rx) = mpsc::channel(1024);
    // Report verdicts, from the owner back to agents through the gossip member.
    let (ack_tx, ack_rx) = mpsc::channel(1024);
    let owner = owner
        .with_replication(replication(&cluster, &tracker, shutdown.clone()))
        .observing(observer_rx)
        .acknowledging(ack_tx);
    let (report_tx, report_rx) = mpsc::channel(1024);
    // Room for a burst of gossip events (each agent's report is one) between batches.
    let (command_tx, command_rx) = mpsc::channel(4096);
    tracker.spawn(owner.run(report_rx, command_rx, shutdown.clone()));
    let mut checks = shutdown.child_token();
    // Bumped by `POST /api/v1/overwatch/validate`: every check runs at once.
    let (validate_now, validate_rx) = watch::channel(0u64);
    let validate_now = Arc::new(validate_now);
    spawn_checks(
        check_targets(&settings),
        prober.clone(),
        settings.validation.max_concurrent,
        report_tx.clone(),
        validate_rx.clone(),
        checks.clone(),
        &tracker,
    );

    let gossip_commands = match &settings.gossip {
        Some(gossip) => Some(
            start_gossip(
                gossip,
                &settings.node_id,
                &settings.agent_tokens,
                command_tx.clone(),
                ack_rx,
                shutdown.clone(),
                &tracker,
            )
            .await?,
        ),
        None => None,
    };

    let (dns_tx, dns_rx) = watch::channel(Arc::new(DnsSnapshot::build(&view_rx.borrow())));
    metrics::counter!(telemetry::DNS_SNAPSHOT_BUILDS).increment(1);
    tracker.spawn(publish_snapshots(view_rx.clone(), dns_tx, shutdown.clone()));
    tracker.spawn(manage_keys(
        cluster.clone(),
        view_rx.clone(),
        shutdown.clone(),
    ));

    let udp_workers = settings
        .dns
        .udp_workers
        .unwrap_or_else(dns::default_udp_workers);
    let sockets = dns::bind(settings.dns.listen, udp_workers)
        .await
        .map_err(|source| RunError::Bind {
            what: "dns.listen_address",
            addr: settings.dns.listen,
            source,
        })?;
    let dns_addr = sockets
        .local_addr()
        .map_err(|e| RunError::Startup(e.to_string()))?;
    // Every node of a cluster derives the same cookie secrets from the cluster secret; a
    // node alone makes its own.
    let cookies = if settings.dns.cookies {
        let keys = match &settings.cluster {
            Some(c) => dns::cookie::CookieKeys::derived_from(&c.secret),
            None => dns::cookie::CookieKeys::random().map_err(RunError::Startup)?,
        };
        Some(keys.rotating_every(settings.dns.cookie_rotation))
    } else {
        None
    };
    let limiter = settings.dns.rate_limit.map(|r| {
        tracing::info!(
            responses_per_second = r.responses_per_second,
            slip = r.slip,
            dry_run = r.dry_run,
            "dns response rate limiting on"
        );
        Arc::new(dns::rrl::RateLimiter::new(r))
    });
    let mut dns_server = dns::serve(sockets, dns_rx.clone(), Some(observer_tx), cookies, limiter)
        .map_err(|e| RunError::Startup(format!("dns workers: {e}")))?;
    tracing::info!(addr = %dns_addr, udp_workers, zones = settings.dns.zones.len(), domains = settings.domains.len(), "dns listening (udp+tcp)");

    if let Some(api_settings) = &settings.api {
        let state = ApiState {
            cluster: cluster.clone(),
            tokens: Arc::new(api_settings.tokens.clone()),
            commands: command_tx.clone(),
            view: view_rx.clone(),
            dns: dns_rx.clone(),
            allowed: Arc::new(api_settings.allowed_networks.clone()),
            trust_proxy_headers: api_settings.trust_proxy_headers,
            trusted_proxies: Arc::new(api_settings.trusted_proxies.clone()),
            max_overrides: api_settings.max_overrides,
            validate_now: validate_now.clone(),
        };
        serve_http(
            "api",
            "api.address",
            api_settings.address,
            api::router(state),
            &shutdown,
            &tracker,
        )
        .await?;
    }
    if let Some(metrics_settings) = &settings.metrics {
        let render = metrics.clone();
        let app = Router::new()
            .route("/health", get(|| async { "ok\n" }))
            .route(
                "/metrics",
                get(move || {
                    let render = render.clone();
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4",
                            )],
                            render.render(),
                        )
                    }
                }),
            );
        let app = crate::listener::allow_networks(
            app,
            Arc::new(metrics_settings.allowed_networks.clone()),
            "metrics.allowed_networks",
        );
        serve_http(
            "metrics",
            "metrics.address",
            metrics_settings.address,
            app,
            &shutdown,
            &tracker,
        )
        .await?;
    }
    let upkeep = metrics.clone();
    let stop = shutdown.clone();
    let data_dir = settings.data_dir.clone();
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {
                    upkeep.run_upkeep();
                    telemetry::record_disk(&data_dir);
                }
            }
        }
    });

    let mut running = settings;
    let mut outcome = Ok(());
    let raft_stopped = cluster.stopped();
    tokio::pin!(raft_stopped);
    // Servers given by host name are resolved again this often; a change is applied as a
    // reload would apply it.
    let mut resolve_again = tokio::time::interval(RESOLVE_EVERY);
    resolve_again.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resolve_again.reset();
    loop {
        let reloaded = tokio::select! {
            why = &mut raft_stopped => {
                tracing::error!(error = %why, "the Raft core stopped: exiting so the supervisor restarts this node");
                outcome = Err(RunError::RaftStopped(format!("cluster: the Raft core stopped: {why}")));
                break;
            }
            _ = sigterm.recv() => { tracing::info!(signal = "SIGTERM", "stopping"); break; }
            _ = sigint.recv() => { tracing::info!(signal = "SIGINT", "stopping"); break; }
            _ = sighup.recv() => prepare_off_runtime(&config_path).await,
            _ = resolve_again.tick(), if running.resolves_hostnames => match prepare_off_runtime(&config_path).await {
                Ok(next) if servers(&next.settings) != servers(&running) => {
                    tracing::info!("a server's host name resolves differently now: reloading the file, as SIGHUP would");
                    Ok(next)
                }
                // Unchanged, or the file no longer loads (SIGHUP reports that).
                _ => continue,
            },
        };
        match reloaded {
            Ok(mut next) => {
                next.settings = with_data_dir(next.settings);
                log_warnings(&config_path, &next.settings);
                warn_restart_needed(&running, &next.settings);
                if let Err(err) =
                    rekey_gossip(gossip_commands.as_ref(), &running, &next.settings).await
                {
                    tracing::error!(error = %err, "gossip keys not reloaded");
                }
                checks.cancel();
                checks = shutdown.child_token();
                spawn_checks(
                    check_targets(&next.settings),
                    prober.clone(),
                    next.settings.validation.max_concurrent,
                    report_tx.clone(),
                    validate_rx.clone(),
                    checks.clone(),
                    &tracker,
                );
                running = next.settings.clone();
                if command_tx
                    .send(Command::Reload(next.settings, next.geo))
                    .await
                    .is_err()
                {
                    break;
                }
                metrics::counter!(telemetry::CONFIG_RELOADS, "result" => "success").increment(1);
                tracing::info!(file = %config_path.display(), "configuration reloaded");
            }
            Err(err) => {
                metrics::counter!(telemetry::CONFIG_RELOADS, "result" => "failure").increment(1);
                tracing::error!(
                    "configuration reload failed; the running configuration stays:\n{err}"
                );
            }
        }
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, dns_server.shutdown_gracefully()).await;
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("tasks still running after the shutdown grace period");
    }
    tracing::info!("stopped");
    outcome
}

/// The configured cluster keys (validated when the file was loaded).
fn cluster_keys(
    gossip: &crate::config::GossipSettings,
) -> Result<Vec<opengslb_proto::seal::ClusterKey>, RunError> {
    opengslb_proto::seal::KeyText::Many(gossip.encryption_keys.clone())
        .keys()
        .map_err(|e| RunError::Startup(format!("overwatch.{e}")))
}

/// Joins the gossip cluster and forwards what it learns to the state owner; returns the
/// member's command channel (reloads send it new keys and tokens).
async fn start_gossip(
    gossip: &crate::config::GossipSettings,
    node_id: &str,
    agent_tokens: &std::collections::BTreeMap<String, String>,
    commands: mpsc::Sender<Command>,
    mut acks: mpsc::Receiver<opengslb_proto::wire::Ack>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> Result<mpsc::Sender<member::Command>, RunError> {
    let keys = cluster_keys(gossip)?;
    let mut settings = member::GossipSettings::lan(
        gossip.bind,
        gossip.seeds.clone(),
        keys,
        member::Role::Overwatch,
        node_id.to_owned(),
    );
    settings.tokens = agent_tokens.clone();
    settings.advertise = gossip.advertise;
    settings.probe_period = gossip.probe_interval;
    settings.probe_timeout = gossip.probe_timeout;
    let mut handle = member::start(settings, shutdown.clone())
        .await
        .map_err(|source| RunError::Bind {
            what: "overwatch.gossip.bind_address",
            addr: gossip.bind,
            source,
        })?;
    tracing::info!(addr = %handle.identity.addr, keys = gossip.encryption_keys.len(), "gossip listening");
    let member_commands = handle.commands.clone();
    let to_member = handle.commands.clone();
    tracker.spawn(async move {
        while let Some(ack) = acks.recv().await {
            if to_member.send(member::Command::Ack(ack)).await.is_err() {
                return;
            }
        }
    });
    tracker.spawn(async move {
        while let Some(event) = handle.events.recv().await {
            if commands.send(Command::Gossip(event)).await.is_err() {
                return;
            }
        }
    });
    Ok(member_commands)
}

/// Hands the gossip member the reloaded keys and tokens (a key rotation step, or a token
/// added for a new service), when they changed.
async fn rekey_gossip(
    member: Option<&mpsc::Sender<member::Command>>,
    old: &Settings,
    new: &Settings,
) -> Result<(), RunError> {
    let (Some(member), Some(gossip)) = (member, &new.gossip) else {
        return Ok(());
    };
    let keys_changed =
        old.gossip.as_ref().map(|g| &g.encryption_keys) != Some(&gossip.encryption_keys);
    if !keys_changed && old.agent_tokens == new.agent_tokens {
        return Ok(());
    }
    let keys = cluster_keys(gossip)?;
    if member
        .send(member::Command::Rekey(keys, new.agent_tokens.clone()))
        .await
        .is_ok()
        && keys_changed
    {
        tracing::info!(
            keys = gossip.encryption_keys.len(),
            "gossip keys reloaded: the first seals, all open"
        );
    }
    Ok(())
}

/// The owner's link to the cluster: the applied state, leadership, and a proposer task
/// that writes each batch of registry changes through the leader.
fn replication(
    cluster: &Cluster,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Replication {
    let (proposals, mut batches) = mpsc::channel::<Vec<RequestV1>>(1);
    let in_flight = Arc::new(AtomicBool::new(false));
    let (writer, done) = (cluster.clone(), Arc::clone(&in_flight));
    tracker.spawn(async move {
        loop {
            let batch = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                Some(batch) = batches.recv() => batch,
                else => return,
            };
            let count = batch.len();
            let write = Write::Request(Request::V1(RequestV1::Batch(batch)));
            if let Err(e) = writer.write(write).await {
                tracing::warn!(changes = count, error = %e, "registry update not written; retried on the next tick");
            }
            done.store(false, Ordering::Release);
        }
    });
    let leader = cluster.clone();
    Replication {
        applied: cluster.machine(),
        leading: Box::new(move || leader.is_leader()),
        in_flight,
        proposals,
        synced: cluster.synced(),
    }
}

/// Rebuilds the DNS snapshot whenever the view changes what DNS answers, and when
/// signatures near their end.
async fn publish_snapshots(
    mut view_rx: ViewRx,
    dns_tx: watch::Sender<Arc<DnsSnapshot>>,
    shutdown: CancellationToken,
) {
    let mut built_from = view_rx.borrow_and_update().clone();
    let mut signing = Some(Signing::default());
    loop {
        let refresh = signing
            .as_ref()
            .and_then(|s| s.cache.next_refresh())
            .map(|at| {
                let wait = u64::from(at.saturating_sub(handler_now()));
                tokio::time::Instant::now() + Duration::from_secs(wait)
            });
        let view = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            changed = view_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                let view = view_rx.borrow_and_update().clone();
                // The first real view is always built: readiness waits for a snapshot
                // built from a view that saw the replicated state (generation > 0).
                if built_from.generation > 0 && DnsSnapshot::same_inputs(&built_from, &view) {
                    continue;
                }
                view
            }
            () = sleep_until_opt(refresh) => built_from.clone(),
        };
        // Signing can take a while (every core, the first time): off the runtime.
        let state = signing.take().unwrap_or_default();
        let job_view = view.clone();
        let (snapshot, state) = match tokio::task::spawn_blocking(move || {
            build_snapshot(&job_view, state)
        })
        .await
        {
            Ok((snapshot, state)) => (snapshot, Some(state)),
            Err(e) => {
                tracing::error!(error = %e, "the DNS snapshot build failed: answering unsigned");
                (DnsSnapshot::build(&view), None)
            }
        };
        signing = state.or_else(|| Some(Signing::default()));
        dns_tx.send_replace(Arc::new(snapshot));
        metrics::counter!(telemetry::DNS_SNAPSHOT_BUILDS).increment(1);
        built_from = view;
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn handler_now() -> u32 {
    crate::dns::handler::unix_now()
}

/// What signing keeps between snapshots: the keys as last read, and the signatures.
#[derive(Default)]
struct Signing {
    keys: std::collections::BTreeMap<u32, crate::model::machine::DnssecKey>,
    keyring: Arc<crate::dns::dnssec::keys::Keyring>,
    cache: crate::dns::dnssec::sign::SignatureCache,
}

/// Builds one snapshot, signed when DNSSEC is on and the cluster has keys.
fn build_snapshot(view: &crate::model::view::View, mut signing: Signing) -> (DnsSnapshot, Signing) {
    let started = std::time::Instant::now();
    if !view.settings.dnssec.enabled {
        return (DnsSnapshot::build(view), Signing::default());
    }
    if view.replicated.dnssec_keys != signing.keys {
        let (keyring, problems) =
            crate::dns::dnssec::keys::Keyring::read(&view.replicated.dnssec_keys);
        for problem in problems {
            tracing::error!(problem = %problem, "a replicated DNSSEC key cannot be used");
        }
        signing.keys = view.replicated.dnssec_keys.clone();
        signing.keyring = Arc::new(keyring);
    }
    let (snapshot, signed) =
        DnsSnapshot::build_signed(view, &signing.keyring, &mut signing.cache, handler_now());
    match signed {
        Ok(signed) => {
            metrics::counter!(telemetry::DNSSEC_SIGNATURES).increment(signed.made);
            metrics::gauge!(telemetry::DNSSEC_RRSIGS).set(signed.rrsigs as f64);
            let expiration = signing
                .cache
                .next_refresh()
                .filter(|_| signed.rrsigs > 0)
                .map_or(0, |at| {
                    at.saturating_add(crate::dns::dnssec::sign::REFRESH_BEFORE)
                });
            metrics::gauge!(telemetry::DNSSEC_EXPIRATION).set(f64::from(expiration));
            if signed.made > 0 {
                tracing::debug!(
                    made = signed.made,
                    rrsigs = signed.rrsigs,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "dns snapshot signed"
                );
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "DNSSEC signing failed: this snapshot answers unsigned")
        }
    }
    metrics::gauge!(telemetry::DNS_SNAPSHOT_BUILD_SECONDS).set(started.elapsed().as_secs_f64());
    (snapshot, signing)
}

/// While this node leads: makes the cluster's first DNSSEC keys and moves ZSK rollovers
/// along (design.md: keys generated by the cluster, replicated by Raft).
async fn manage_keys(cluster: Cluster, view_rx: ViewRx, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let machine = cluster.machine();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !cluster.is_leader() {
            continue;
        }
        let settings = view_rx.borrow().settings.clone();
        let keys = machine.borrow().dnssec_keys.clone();
        let wait = crate::dns::dnssec::lifecycle::MARGIN_MS + u64::from(max_ttl(&settings)) * 1000;
        let now = crate::model::view::wall_ms(std::time::SystemTime::now());
        let step =
            match crate::dns::dnssec::lifecycle::next_step(&keys, &settings.dnssec, wait, now) {
                Ok(Some(step)) => step,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "cannot make DNSSEC keys");
                    continue;
                }
            };
        let what = describe_step(&step);
        match cluster.write(Write::Request(Request::V1(step))).await {
            Ok(written) if written.response == crate::model::machine::Response::Applied => {
                tracing::info!(step = what, "DNSSEC keys: {what}");
            }
            Ok(written) => {
                tracing::debug!(response = ?written.response, "DNSSEC key step not applied")
            }
            Err(e) => {
                tracing::warn!(error = %e, step = what, "DNSSEC key step not written; retried in a second")
            }
        }
    }
}

fn describe_step(step: &RequestV1) -> &'static str {
    match step {
        RequestV1::Batch(parts)
            if parts
                .iter()
                .all(|p| matches!(p, RequestV1::AddDnssecKey { .. })) =>
        {
            "made the first keys"
        }
        RequestV1::Batch(_) => "the new ZSK signs now; the old one is retired",
        RequestV1::RemoveDnssecKey { .. } => "removed the retired ZSK",
        _ => "key change",
    }
}

/// The largest TTL the zones answer with: how long a cache may hold what a rollover
/// step replaces.
pub fn max_ttl(settings: &Settings) -> u32 {
    settings
        .dns
        .zones
        .iter()
        .map(|z| z.ttl)
        .chain(settings.domains.iter().map(|d| d.ttl))
        .max()
        .unwrap_or(0)
}

/// [`prepare`] on the blocking pool: it reads files and resolves host names, which must
/// not stall the runtime's threads (DNS among them).
async fn prepare_off_runtime(path: &Path) -> Result<Prepared, ConfigError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || prepare(&owned))
        .await
        .unwrap_or_else(|e| {
            Err(ConfigError {
                file: path.display().to_string(),
                problems: vec![Problem {
                    line: 0,
                    column: 0,
                    message: format!("the configuration could not be read: {e}"),
                }],
                included: Vec::new(),
            })
        })
}

/// How often servers given by host name are resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(30);

/// Every configured server's address and port, per region: what a host name's
/// resolution can change.
fn servers(settings: &Settings) -> Vec<Vec<(std::net::IpAddr, u16)>> {
    settings
        .regions
        .iter()
        .map(|r| r.servers.iter().map(|s| (s.address, s.port)).collect())
        .collect()
}

/// What the file holds that changes nothing here, or that was assumed: one WARN each.
fn log_warnings(path: &Path, settings: &Settings) {
    for warning in &settings.warnings {
        tracing::warn!(file = %path.display(), "{warning}");
    }
}

fn check_targets(settings: &Settings) -> Vec<CheckTarget> {
    backend_keys(settings)
        .into_iter()
        .filter_map(|(region, key, _)| {
            let mut check = settings.regions[region].check.clone()?;
            // A server's own `host` (OpenGSLB's key) names it in its check.
            if let Some(host) = settings.regions[region]
                .servers
                .iter()
                .find(|s| {
                    s.address == key.address && s.port == key.port && s.service == key.service
                })
                .and_then(|s| s.host.clone())
            {
                check.host = Some(host);
            }
            Some(CheckTarget {
                addr: SocketAddr::new(key.address, key.port),
                key,
                check,
            })
        })
        .collect()
}

fn warn_restart_needed(old: &Settings, new: &Settings) {
    let without_keys = |g: &crate::config::GossipSettings| crate::config::GossipSettings {
        encryption_keys: Vec::new(),
        ..g.clone()
    };
    let api = |s: &Settings| s.api.as_ref().map(|a| a.address);
    for (key, changed) in [
        ("dns.listen_address", old.dns.listen != new.dns.listen),
        (
            "dns.udp_workers",
            old.dns.udp_workers != new.dns.udp_workers,
        ),
        ("api.address / api.enabled", api(old) != api(new)),
        (
            "metrics.address / metrics.enabled",
            old.metrics != new.metrics,
        ),
        ("logging", old.logging != new.logging),
        (
            "overwatch.gossip (other than encryption_key)",
            old.gossip.as_ref().map(without_keys) != new.gossip.as_ref().map(without_keys),
        ),
        ("overwatch.data_dir", old.data_dir != new.data_dir),
        ("cluster", old.cluster != new.cluster),
        (
            "api.tokens",
            old.api.as_ref().map(|a| &a.tokens) != new.api.as_ref().map(|a| &a.tokens),
        ),
    ] {
        if changed {
            tracing::warn!(key, "changed in the file; it takes effect after a restart");
        }
    }
}

/// Binds `addr` (config key `key`) and serves `app` there until shutdown, under the
/// listener limits; clients' socket addresses reach the handlers (checked against
/// allowed_networks).
async fn serve_http(
    name: &'static str,
    key: &'static str,
    addr: SocketAddr,
    app: Router,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<(), RunError> {
    let listener = bind_tcp(key, addr).await?;
    tracing::info!(addr = %local(&listener), "{name} listening");
    tracker.spawn(crate::listener::serve(
        listener,
        app,
        None,
        crate::listener::Limits::http(name),
        shutdown.clone(),
    ));
    Ok(())
}

async fn bind_tcp(what: &'static str, addr: SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { what, addr, source })
}

fn local(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string())
}

fn install_metrics() -> Result<PrometheusHandle, RunError> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&LATENCY_BUCKETS)
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| RunError::Startup(format!("metrics: {e}")))?;
    telemetry::describe();
    Ok(handle)
}
