//! Every metric overwatch exports, declared once: its name, kind and HELP text, and the
//! label sets that exist from the start (at 0, so a healthy node exports what the alert
//! rules and the dashboard use, and `rate()` has a first point). Code records with the
//! constants here; `describe` runs once, when the exporter is installed. Label values
//! stay bounded: configured names and fixed words, never a query name.

pub use opengslb_proto::member::{
    GOSSIP_DECRYPT_FAILURES, GOSSIP_PACKETS, OVERWATCH_PROOFS_FAILED, OVERWATCH_PROVEN,
    REPORTS_REJECTED,
};
use opengslb_proto::status::Health;

use crate::config::Settings;
use crate::model::status::Validation;
use crate::model::view::{AgentView, BackendView, service_counts};

/// DNS answers by `domain` (configured names only), `type` and `status` (response code).
pub const DNS_QUERIES: &str = "opengslb_dns_queries_total";
/// Time to answer one query.
pub const DNS_QUERY_DURATION: &str = "opengslb_dns_query_duration_seconds";
/// UDP queries the fast path handed to the hickory path.
pub const DNS_FAST_PATH_DECLINED: &str = "opengslb_dns_fast_path_declined_total";
/// DNS snapshots built.
pub const DNS_SNAPSHOT_BUILDS: &str = "opengslb_dns_snapshot_builds_total";
/// DNSSEC signatures made while building snapshots (the rest come from the cache).
pub const DNSSEC_SIGNATURES: &str = "opengslb_dnssec_signatures_made_total";
/// DNSSEC signatures made on the query path (a set not signed ahead): zero normally.
pub const DNSSEC_ONLINE_SIGNATURES: &str = "opengslb_dnssec_online_signatures_total";
/// Signatures the current snapshot holds.
pub const DNSSEC_RRSIGS: &str = "opengslb_dnssec_rrsigs";
/// When the first signature the current snapshot uses expires (Unix seconds; 0 unsigned).
pub const DNSSEC_EXPIRATION: &str = "opengslb_dnssec_earliest_expiration_timestamp_seconds";
/// Seconds the last snapshot build took (signing included).
pub const DNS_SNAPSHOT_BUILD_SECONDS: &str = "opengslb_dns_snapshot_build_seconds";
/// Routing decisions by `domain`, `algorithm` and `outcome`.
pub const ROUTING_DECISIONS: &str = "opengslb_routing_decisions_total";
/// Validation checks by `type` and `result`.
pub const VALIDATION_CHECKS: &str = "opengslb_validation_checks_total";
/// Validation check time by `type`.
pub const VALIDATION_CHECK_DURATION: &str = "opengslb_validation_check_duration_seconds";
/// Backends whose agent and validation disagree.
pub const VALIDATION_DISAGREEMENTS: &str = "opengslb_validation_agent_disagreements";
/// Backends by `service`.
pub const BACKENDS: &str = "opengslb_backends_total";
/// Backends in rotation by `service`.
pub const BACKENDS_HEALTHY: &str = "opengslb_backends_healthy";
/// Backends by `domain`.
pub const DOMAIN_BACKENDS: &str = "opengslb_domain_backends_total";
/// Backends in rotation by `domain`.
pub const DOMAIN_BACKENDS_HEALTHY: &str = "opengslb_domain_backends_healthy";
/// Operator overrides in force.
pub const OVERRIDES_ACTIVE: &str = "opengslb_overrides_active";
/// Pinned agents (OpenGSLB's name; operators alert on it).
pub const AGENTS_REGISTERED: &str = "opengslb_overwatch_agents_registered";
/// Pinned agents that are stale (OpenGSLB's name; operators alert on it).
pub const STALE_AGENTS: &str = "opengslb_overwatch_stale_agents";
/// Backends that more than one live agent speaks for (one is believed, the rest counted).
pub const BACKEND_CLAIM_CONFLICTS: &str = "opengslb_backend_claim_conflicts";
/// Client subnets with learned latency.
pub const LATENCY_SUBNETS: &str = "opengslb_overwatch_latency_subnets";
/// Configuration reloads by `result`.
pub const CONFIG_RELOADS: &str = "opengslb_config_reloads_total";
/// Raft leader changes seen by this node.
pub const CLUSTER_LEADER_CHANGES: &str = "opengslb_cluster_leader_changes_total";
/// 1 while this node knows a leader.
pub const CLUSTER_HAS_LEADER: &str = "opengslb_cluster_has_leader";
/// 1 while this node leads.
pub const CLUSTER_IS_LEADER: &str = "opengslb_cluster_is_leader";
/// 1 while the leader has a quorum, as far as this node can tell.
pub const CLUSTER_QUORUM: &str = "opengslb_cluster_quorum";
/// The Raft term.
pub const CLUSTER_TERM: &str = "opengslb_cluster_term";
/// Voting members.
pub const CLUSTER_MEMBERS: &str = "opengslb_cluster_members";
/// Bytes free for overwatch in the file system of `overwatch.data_dir`.
pub const DATA_DIR_FREE: &str = "opengslb_data_dir_free_bytes";
/// Size of that file system.
pub const DATA_DIR_SIZE: &str = "opengslb_data_dir_size_bytes";
/// 1 once this node holds the cluster's state; 0 while a node started without data
/// catches up (it answers DNS with SERVFAIL and is not ready meanwhile).
pub const CLUSTER_SYNCED: &str = "opengslb_cluster_synced";
/// Connections an HTTP listener turned away, by listener and reason (total, per_client,
/// handshake, accept).
pub const HTTP_CONNECTIONS_REFUSED: &str = "opengslb_http_connections_refused_total";
/// DNS over TCP connections turned away, by reason (total, per_client, accept).
pub const DNS_TCP_REFUSED: &str = "opengslb_dns_tcp_connections_refused_total";
/// UDP responses rate limiting acted on, by action (slipped, dropped, dry_run).
pub const DNS_RATE_LIMITED: &str = "opengslb_dns_rate_limited_total";
/// 1 when the Raft RPC uses mutual TLS; 0 when plain HTTP (`cluster.insecure_plaintext`).
pub const CLUSTER_RPC_TLS: &str = "opengslb_cluster_rpc_tls";
/// This node's last applied log index.
pub const CLUSTER_LAST_APPLIED: &str = "opengslb_cluster_last_applied_index";

/// OpenGSLB's name: servers in rotation per region (its dashboards and alerts use it).
pub const HEALTHY_SERVERS: &str = "opengslb_healthy_servers";
/// OpenGSLB's name: servers configured across all regions.
pub const CONFIGURED_SERVERS: &str = "opengslb_configured_servers";
/// OpenGSLB's name: domains configured.
pub const CONFIGURED_DOMAINS: &str = "opengslb_configured_domains";
/// OpenGSLB's name: 1, with the version as a label.
pub const APP_INFO: &str = "opengslb_app_info";
/// OpenGSLB's name: validation check results by region, server and result.
pub const HEALTH_CHECK_RESULTS: &str = "opengslb_health_check_results_total";
/// OpenGSLB's overwatch names (gauges, its `_total` included), beside ours.
pub const OW_STALE_AGENTS_TOTAL: &str = "opengslb_overwatch_stale_agents_total";
/// See [`OW_STALE_AGENTS_TOTAL`].
pub const OW_BACKENDS_TOTAL: &str = "opengslb_overwatch_backends_total";
/// See [`OW_STALE_AGENTS_TOTAL`].
pub const OW_BACKENDS_HEALTHY: &str = "opengslb_overwatch_backends_healthy";
/// See [`OW_STALE_AGENTS_TOTAL`].
pub const OW_AGENT_CERTS_PINNED: &str = "opengslb_overwatch_agent_certs_pinned";

/// The gauges a published view sets: backends per service and per domain, agents
/// registered and stale, overrides in force, and agent/validation disagreements.
pub fn record_view(
    settings: &Settings,
    backends: &[BackendView],
    agents: &[AgentView],
    active_overrides: usize,
) {
    for domain in &settings.domains {
        let members = backends.iter().filter(|b| {
            settings.serves(domain, b.region, &b.key.service, b.key.address, b.key.port)
        });
        let (total, healthy) = members.fold((0, 0), |(t, h), b| {
            (t + 1, h + usize::from(b.effective.in_rotation()))
        });
        metrics::gauge!(DOMAIN_BACKENDS, "domain" => domain.name.clone()).set(total as f64);
        metrics::gauge!(DOMAIN_BACKENDS_HEALTHY, "domain" => domain.name.clone())
            .set(healthy as f64);
    }
    for (service, (total, healthy)) in service_counts(backends) {
        metrics::gauge!(BACKENDS, "service" => service.clone()).set(total as f64);
        metrics::gauge!(BACKENDS_HEALTHY, "service" => service).set(healthy as f64);
    }
    // An agent that says its backend is up while overwatch's own check fails (or the
    // reverse): a network path or check to look at.
    let disagreements = backends
        .iter()
        .filter(|b| {
            let agent_up = b
                .agent
                .as_ref()
                .filter(|a| !a.stale)
                .map(|a| !matches!(a.health, Health::Down(_)));
            let check_up = match b.validation {
                Validation::Healthy => Some(true),
                Validation::Unhealthy(_) => Some(false),
                _ => None,
            };
            matches!((agent_up, check_up), (Some(a), Some(c)) if a != c)
        })
        .count();
    metrics::gauge!(VALIDATION_DISAGREEMENTS).set(disagreements as f64);
    metrics::gauge!(OVERRIDES_ACTIVE).set(active_overrides as f64);
    metrics::gauge!(AGENTS_REGISTERED).set(agents.len() as f64);
    metrics::gauge!(BACKEND_CLAIM_CONFLICTS).set(
        backends
            .iter()
            .filter(|b| b.agent.as_ref().is_some_and(|a| !a.contested_by.is_empty()))
            .count() as f64,
    );
    metrics::gauge!(STALE_AGENTS).set(agents.iter().filter(|a| a.stale && !a.left).count() as f64);
    // OpenGSLB's gauges, beside ours.
    for (i, region) in settings.regions.iter().enumerate() {
        let healthy = backends
            .iter()
            .filter(|b| b.region == i && b.effective.in_rotation())
            .count();
        metrics::gauge!(HEALTHY_SERVERS, "region" => region.name.clone()).set(healthy as f64);
    }
    metrics::gauge!(CONFIGURED_SERVERS).set(
        settings
            .regions
            .iter()
            .map(|r| r.servers.len())
            .sum::<usize>() as f64,
    );
    metrics::gauge!(CONFIGURED_DOMAINS).set(settings.domains.len() as f64);
    metrics::gauge!(APP_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let stale = agents.iter().filter(|a| a.stale && !a.left).count();
    metrics::gauge!(OW_STALE_AGENTS_TOTAL).set(stale as f64);
    metrics::gauge!(OW_BACKENDS_TOTAL).set(backends.len() as f64);
    metrics::gauge!(OW_BACKENDS_HEALTHY).set(
        backends
            .iter()
            .filter(|b| b.effective.in_rotation())
            .count() as f64,
    );
    metrics::gauge!(OW_AGENT_CERTS_PINNED).set(agents.len() as f64);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One exported metric.
struct Metric {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    /// Label sets registered at 0 (an empty set: the unlabelled series).
    zero: &'static [&'static [(&'static str, &'static str)]],
}

const UNLABELLED: &[&[(&str, &str)]] = &[&[]];
const NONE: &[&[(&str, &str)]] = &[];

use Kind::{Counter, Gauge, Histogram};

/// Every metric; `describe` and the tests read this table.
const ALL: &[Metric] = &[
    Metric {
        name: DNS_QUERIES,
        kind: Counter,
        help: "DNS queries answered, by configured domain (or zone, other), record type and response code.",
        zero: NONE,
    },
    Metric {
        name: DNS_QUERY_DURATION,
        kind: Histogram,
        help: "Time to answer one DNS query, seconds.",
        zero: NONE,
    },
    Metric {
        name: DNS_FAST_PATH_DECLINED,
        kind: Counter,
        help: "UDP queries the fast path handed to the full DNS path (TCP-sized, other types, EDNS options it does not read).",
        zero: UNLABELLED,
    },
    Metric {
        name: DNS_SNAPSHOT_BUILDS,
        kind: Counter,
        help: "DNS answer snapshots built: one per change to what DNS answers.",
        zero: UNLABELLED,
    },
    Metric {
        name: DNSSEC_SIGNATURES,
        kind: Counter,
        help: "DNSSEC signatures made while building answer snapshots; the rest are reused by canonical content.",
        zero: UNLABELLED,
    },
    Metric {
        name: DNSSEC_ONLINE_SIGNATURES,
        kind: Counter,
        help: "DNSSEC signatures made on the query path because a set of servers was not signed ahead (should stay 0).",
        zero: UNLABELLED,
    },
    Metric {
        name: DNSSEC_RRSIGS,
        kind: Gauge,
        help: "RRSIG records the current answer snapshot holds.",
        zero: UNLABELLED,
    },
    Metric {
        name: DNSSEC_EXPIRATION,
        kind: Gauge,
        help: "When the first signature this node answers with expires, Unix seconds (0: answers unsigned). Signatures are remade 7 days ahead.",
        zero: UNLABELLED,
    },
    Metric {
        name: DNS_SNAPSHOT_BUILD_SECONDS,
        kind: Gauge,
        help: "Seconds the last answer snapshot took to build, signing included.",
        zero: UNLABELLED,
    },
    Metric {
        name: ROUTING_DECISIONS,
        kind: Counter,
        help: "Routing decisions, by domain, algorithm and outcome.",
        zero: NONE,
    },
    Metric {
        name: VALIDATION_CHECKS,
        kind: Counter,
        help: "Overwatch's own health checks, by type and result.",
        zero: NONE,
    },
    Metric {
        name: VALIDATION_CHECK_DURATION,
        kind: Histogram,
        help: "Time of one validation check, seconds, by type.",
        zero: NONE,
    },
    Metric {
        name: VALIDATION_DISAGREEMENTS,
        kind: Gauge,
        help: "Backends whose agent says up while validation says down, or the reverse.",
        zero: UNLABELLED,
    },
    Metric {
        name: REPORTS_REJECTED,
        kind: Counter,
        help: "Agent reports not accepted, by reason (decode, bad_signature, id_mismatch, retired_version, token, network, no_service, registration_rate, pin_mismatch, latency_unverified, latency_prefix).",
        zero: NONE,
    },
    Metric {
        name: GOSSIP_PACKETS,
        kind: Counter,
        help: "Sealed gossip packets, by direction.",
        zero: &[&[("direction", "in")], &[("direction", "out")]],
    },
    Metric {
        name: GOSSIP_DECRYPT_FAILURES,
        kind: Counter,
        help: "Gossip packets that did not open under the cluster key (wrong key, tampered, replayed).",
        zero: UNLABELLED,
    },
    Metric {
        name: OVERWATCH_PROVEN,
        kind: Gauge,
        help: "Other overwatch members that proved their role (members that only claim it are sent no reports).",
        zero: UNLABELLED,
    },
    Metric {
        name: OVERWATCH_PROOFS_FAILED,
        kind: Counter,
        help: "Proofs of the overwatch role that did not hold (a member claiming to be overwatch without its tokens).",
        zero: UNLABELLED,
    },
    Metric {
        name: BACKEND_CLAIM_CONFLICTS,
        kind: Gauge,
        help: "Backends that more than one live agent speaks for; the agent pinned first is believed (see contested_by in the API).",
        zero: UNLABELLED,
    },
    Metric {
        name: BACKENDS,
        kind: Gauge,
        help: "Backends, by service.",
        zero: NONE,
    },
    Metric {
        name: BACKENDS_HEALTHY,
        kind: Gauge,
        help: "Backends in DNS rotation, by service.",
        zero: NONE,
    },
    Metric {
        name: DOMAIN_BACKENDS,
        kind: Gauge,
        help: "Backends a domain can answer, by domain.",
        zero: NONE,
    },
    Metric {
        name: DOMAIN_BACKENDS_HEALTHY,
        kind: Gauge,
        help: "Backends a domain answers now, by domain.",
        zero: NONE,
    },
    Metric {
        name: OVERRIDES_ACTIVE,
        kind: Gauge,
        help: "Operator overrides in force.",
        zero: UNLABELLED,
    },
    Metric {
        name: AGENTS_REGISTERED,
        kind: Gauge,
        help: "Agents pinned to their certificate.",
        zero: UNLABELLED,
    },
    Metric {
        name: STALE_AGENTS,
        kind: Gauge,
        help: "Pinned agents with no fresh report (quiet past stale.threshold, or down in gossip).",
        zero: UNLABELLED,
    },
    Metric {
        name: LATENCY_SUBNETS,
        kind: Gauge,
        help: "Client subnets with learned latency.",
        zero: UNLABELLED,
    },
    Metric {
        name: CONFIG_RELOADS,
        kind: Counter,
        help: "Configuration reloads (SIGHUP), by result.",
        zero: &[&[("result", "success")], &[("result", "failure")]],
    },
    Metric {
        name: CLUSTER_LEADER_CHANGES,
        kind: Counter,
        help: "Raft leader changes seen by this node.",
        zero: UNLABELLED,
    },
    Metric {
        name: CLUSTER_HAS_LEADER,
        kind: Gauge,
        help: "1 while this node knows a Raft leader.",
        zero: NONE,
    },
    Metric {
        name: CLUSTER_IS_LEADER,
        kind: Gauge,
        help: "1 while this node is the Raft leader.",
        zero: NONE,
    },
    Metric {
        name: CLUSTER_QUORUM,
        kind: Gauge,
        help: "1 while the leader has a quorum, as far as this node can tell.",
        zero: NONE,
    },
    Metric {
        name: CLUSTER_TERM,
        kind: Gauge,
        help: "The current Raft term.",
        zero: NONE,
    },
    Metric {
        name: CLUSTER_MEMBERS,
        kind: Gauge,
        help: "Voting members of the Raft cluster.",
        zero: NONE,
    },
    Metric {
        name: DATA_DIR_FREE,
        kind: Gauge,
        help: "Bytes available in the file system of overwatch.data_dir (a full disk stops the Raft core, and the node exits).",
        zero: UNLABELLED,
    },
    Metric {
        name: DATA_DIR_SIZE,
        kind: Gauge,
        help: "Size of the file system of overwatch.data_dir, bytes.",
        zero: UNLABELLED,
    },
    Metric {
        name: CLUSTER_SYNCED,
        kind: Gauge,
        help: "1 once this node holds the cluster's state; 0 while a node started without data catches up (DNS answers SERVFAIL, not ready).",
        zero: UNLABELLED,
    },
    Metric {
        name: HTTP_CONNECTIONS_REFUSED,
        kind: Counter,
        help: "Connections an HTTP listener (api, metrics, cluster) turned away, by reason: total or per_client cap reached, TLS handshake failed, accept failed.",
        zero: NONE,
    },
    Metric {
        name: DNS_TCP_REFUSED,
        kind: Counter,
        help: "DNS over TCP connections turned away: total or per_client cap reached, accept failed.",
        zero: NONE,
    },
    Metric {
        name: DNS_RATE_LIMITED,
        kind: Counter,
        help: "UDP responses rate limiting acted on: slipped (a truncated reply instead), dropped, or dry_run (would have been limited).",
        zero: NONE,
    },
    Metric {
        name: CLUSTER_RPC_TLS,
        kind: Gauge,
        help: "1 when the Raft RPC uses mutual TLS; 0 when it is plain HTTP (cluster.insecure_plaintext).",
        zero: NONE,
    },
    Metric {
        name: CLUSTER_LAST_APPLIED,
        kind: Gauge,
        help: "This node's last applied Raft log index.",
        zero: NONE,
    },
    Metric {
        name: HEALTHY_SERVERS,
        kind: Gauge,
        help: "Servers in rotation per region (OpenGSLB's name).",
        zero: NONE,
    },
    Metric {
        name: CONFIGURED_SERVERS,
        kind: Gauge,
        help: "Servers configured across all regions (OpenGSLB's name).",
        zero: NONE,
    },
    Metric {
        name: CONFIGURED_DOMAINS,
        kind: Gauge,
        help: "Domains configured (OpenGSLB's name).",
        zero: NONE,
    },
    Metric {
        name: APP_INFO,
        kind: Gauge,
        help: "1, with the version as a label (OpenGSLB's name).",
        zero: NONE,
    },
    Metric {
        name: OW_STALE_AGENTS_TOTAL,
        kind: Gauge,
        help: "Pinned agents that are stale, now (OpenGSLB's name: a gauge despite _total).",
        zero: NONE,
    },
    Metric {
        name: OW_BACKENDS_TOTAL,
        kind: Gauge,
        help: "Backends this node knows (OpenGSLB's name).",
        zero: NONE,
    },
    Metric {
        name: OW_BACKENDS_HEALTHY,
        kind: Gauge,
        help: "Backends in rotation (OpenGSLB's name).",
        zero: NONE,
    },
    Metric {
        name: OW_AGENT_CERTS_PINNED,
        kind: Gauge,
        help: "Pinned agent certificates (OpenGSLB's name).",
        zero: NONE,
    },
    Metric {
        name: HEALTH_CHECK_RESULTS,
        kind: Counter,
        help: "Validation check results by region, server (IP:PORT of a configured or announced server) and result: healthy or unhealthy (OpenGSLB's name).",
        zero: NONE,
    },
];

/// Gives every metric its HELP text and registers its label sets at 0. Call once, after
/// the recorder is installed.
pub fn describe() {
    for m in ALL {
        for labels in m.zero {
            let labels: Vec<metrics::Label> = labels
                .iter()
                .map(|(k, v)| metrics::Label::new(*k, *v))
                .collect();
            match m.kind {
                Kind::Counter => metrics::counter!(m.name, labels).increment(0),
                Kind::Gauge => metrics::gauge!(m.name, labels).set(0.0),
                Kind::Histogram => {}
            }
        }
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

/// Sets the data dir's free and total bytes (statvfs); a failure leaves them as they were
/// and is logged at debug level (the directory is checked at start).
pub fn record_disk(data_dir: &std::path::Path) {
    match disk_space(data_dir) {
        Ok((free, size)) => {
            DISK.0.store(free, std::sync::atomic::Ordering::Relaxed);
            DISK.1.store(size, std::sync::atomic::Ordering::Relaxed);
            metrics::gauge!(DATA_DIR_FREE).set(free as f64);
            metrics::gauge!(DATA_DIR_SIZE).set(size as f64);
        }
        Err(err) => tracing::debug!(error = %err, dir = %data_dir.display(), "statvfs"),
    }
}

/// The last reading of the data dir: (free, size) bytes; size 0 before the first.
static DISK: (std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64) = (
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
);

/// The data dir's (free, size) bytes at the last reading, if there was one.
pub fn data_dir_space() -> Option<(u64, u64)> {
    let size = DISK.1.load(std::sync::atomic::Ordering::Relaxed);
    (size > 0).then(|| (DISK.0.load(std::sync::atomic::Ordering::Relaxed), size))
}

/// (available to unprivileged users, total) bytes of the file system holding `path`.
fn disk_space(path: &std::path::Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    #[allow(unsafe_code)]
    // SAFETY: statvfs(3) with a NUL-terminated path and a buffer of the right type; on
    // success it has filled the buffer, which is only read then.
    let stat = unsafe {
        if libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        stat.assume_init()
    };
    // The fields are u64 on 64-bit Linux and narrower elsewhere.
    #[allow(clippy::useless_conversion)]
    let (block, avail, blocks) = (
        u64::from(stat.f_frsize),
        u64::from(stat.f_bavail),
        u64::from(stat.f_blocks),
    );
    Ok((avail.saturating_mul(block), blocks.saturating_mul(block)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_prefixed_and_every_counter_says_total() {
        let mut seen = std::collections::HashSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "{} declared twice", m.name);
            assert!(m.name.starts_with("opengslb_"), "{}", m.name);
            assert!(!m.help.is_empty(), "{} has no HELP", m.name);
            // Gauges named `*_total` (backends, domain backends) keep the names dashboards
            // already use; every counter must say `_total`.
            assert!(
                m.kind != Kind::Counter || m.name.ends_with("_total"),
                "{}: a counter's name ends in _total",
                m.name
            );
        }
    }

    #[test]
    fn every_metric_exports_help_and_its_zero_series() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, describe);
        let text = handle.render();
        for m in ALL.iter().filter(|m| !m.zero.is_empty()) {
            assert!(
                text.contains(&format!("# HELP {} {}", m.name, m.help)),
                "{} has no HELP line:\n{text}",
                m.name
            );
        }
        assert!(text.contains("opengslb_config_reloads_total{result=\"failure\"} 0"));
    }
}
