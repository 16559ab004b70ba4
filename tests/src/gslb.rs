//! The two halves together: agent daemons gossiping to overwatch nodes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::process::Spawned;
use crate::{TempDir, agent_binary, listening_addr};

/// The service token the test clusters accept for `app`.
pub const TOKEN: &str = "app-token-0123456789";
/// The operators' API token in test configs (`api.tokens.ops`).
pub const API_TOKEN: &str = "ops-token-0123456789abcdef";

/// A cluster key (base64 of 32 bytes, all `byte`) for tests.
pub fn cluster_key(byte: u8) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

/// An agent in daemon mode beside one HTTP backend.
#[derive(Debug)]
pub struct AgentDaemon {
    /// The process.
    pub process: Spawned,
    /// Its agent-check (HAProxy) address.
    pub agent_check: SocketAddr,
    /// Its drain file.
    pub drain: PathBuf,
    /// Its agent id.
    pub agent_id: String,
    /// Its config file (rewrite it, then SIGHUP).
    pub config: PathBuf,
}

impl AgentDaemon {
    /// Starts an agent for `backend` (service `app`, region `eu`, http check on `/`)
    /// reporting to `overwatch` with `key` and `token`.
    pub fn start(
        dir: &TempDir,
        name: &str,
        backend: SocketAddr,
        overwatch: &[SocketAddr],
        key: &str,
        token: &str,
    ) -> AgentDaemon {
        AgentDaemon::start_with(dir, name, backend, overwatch, key, token, "")
    }

    /// The same, with `extra` YAML (top-level keys) appended to its config.
    pub fn start_with(
        dir: &TempDir,
        name: &str,
        backend: SocketAddr,
        overwatch: &[SocketAddr],
        key: &str,
        token: &str,
        extra: &str,
    ) -> AgentDaemon {
        let program = Command::new(agent_binary());
        AgentDaemon::start_program(dir, name, backend, overwatch, key, token, extra, program)
    }

    /// The same, run by `program` (the agent binary, or Wine with the Windows agent), to
    /// which `--config FILE` is appended.
    #[allow(clippy::too_many_arguments)]
    pub fn start_program(
        dir: &TempDir,
        name: &str,
        backend: SocketAddr,
        overwatch: &[SocketAddr],
        key: &str,
        token: &str,
        extra: &str,
        mut program: Command,
    ) -> AgentDaemon {
        let drain = dir.join(&format!("{name}.drain"));
        let nodes: Vec<String> = overwatch.iter().map(|a| format!("\"{a}\"")).collect();
        let yaml = format!(
            "identity:\n  service_token: {token}\n  region: eu\n  cert_path: {d}/{name}.crt\n  key_path: {d}/{name}.key\nbackends:\n  - service: app\n    address: {ip}\n    port: {port}\n    health_check: {{type: http, path: /, interval: 300ms, timeout: 250ms, failure_threshold: 1, success_threshold: 1}}\ngossip:\n  encryption_key: \"{key}\"\n  overwatch_nodes: [{nodes}]\n  bind_address: \"127.0.0.1:0\"\nheartbeat:\n  interval: 1s\nagent_check:\n  listen: \"127.0.0.1:0\"\n  drain_file: {drain}\n  timeframe: 60s\n",
            d = dir.path().display(),
            ip = backend.ip(),
            port = backend.port(),
            nodes = nodes.join(", "),
            drain = drain.display(),
        );
        let config = dir.join(&format!("{name}.yaml"));
        std::fs::write(&config, yaml + extra).expect("write agent config");
        program.arg("--config").arg(&config);
        let process = Spawned::start(&format!("agent {name}"), program);
        let line = process.wait_for_line("agent identity agent_id=", Duration::from_secs(20));
        let agent_id = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("agent_id="))
            .map(|id| id.trim_matches('"').to_owned())
            .unwrap_or_else(|| panic!("no agent_id in {line:?}"));
        let agent_check = listening_addr(&process);
        AgentDaemon {
            process,
            agent_check,
            drain,
            agent_id,
            config,
        }
    }
}

/// An overwatch config with gossip for agents of region `eu` reporting service `app`;
/// `seeds` are other overwatch gossip addresses. Tests probe twice as often as the
/// defaults and call an agent stale after 10 s without a report.
pub fn overwatch_yaml(node: &str, key: &str, seeds: &[SocketAddr]) -> String {
    overwatch_yaml_defaults(node, key, seeds)
        .replace(
            "    seeds:",
            "    probe_interval: 500ms\n    probe_timeout: 250ms\n    seeds:",
        )
        .replace(
            "  stale:\n    threshold: 30s\n",
            "  stale:\n    threshold: 10s\n",
        )
}

/// The same with overwatch's default gossip timings (probe every 1 s, stale after 30 s).
pub fn overwatch_yaml_defaults(node: &str, key: &str, seeds: &[SocketAddr]) -> String {
    let seeds: Vec<String> = seeds.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "overwatch:\n  identity:\n    node_id: {node}\n  agent_tokens:\n    app: {TOKEN}\n  gossip:\n    bind_address: \"127.0.0.1:0\"\n    encryption_key: \"{key}\"\n    seeds: [{seeds}]\n  stale:\n    threshold: 30s\n    remove_after: 60s\ndns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [gslb.test]\nregions:\n  - name: eu\ndomains:\n  - name: app.gslb.test\n    routing_algorithm: round-robin\n    services: [app]\n    regions: [eu]\n    ttl: 1\napi:\n  address: 127.0.0.1:0\n  tokens:\n    ops: {API_TOKEN}\nmetrics:\n  address: 127.0.0.1:0\n",
        seeds = seeds.join(", ")
    )
}
