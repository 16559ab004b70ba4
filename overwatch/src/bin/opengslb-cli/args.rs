//! The command line: what operators type (OpenGSLB's verbs, flags and environment).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use opengslb_overwatch::config::parse_duration;

/// Command-line client for OpenGSLB overwatch.
#[derive(Debug, Parser)]
#[command(name = "opengslb-cli", version)]
pub(crate) struct Cli {
    /// Overwatch API base URL.
    #[arg(
        long,
        global = true,
        env = "OPENGSLB_API",
        default_value = "http://localhost:8080"
    )]
    pub(crate) api: String,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Bearer token for changes (a value from the server's api.tokens).
    #[arg(long, global = true, env = "OPENGSLB_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Request timeout, e.g. 5s or 500ms; a bare number is seconds (OpenGSLB's CLI).
    #[arg(long, global = true, default_value = "5s", value_parser = timeout)]
    pub(crate) timeout: Duration,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Backends with every status layer.
    Servers {
        /// `list` (OpenGSLB's spelling): the same table.
        #[arg(value_parser = ["list"], hide = true)]
        list: Option<String>,
        /// Only this effective status: healthy, unhealthy, stale, draining.
        #[arg(long)]
        status: Option<String>,
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
        /// Only this region.
        #[arg(long)]
        region: Option<String>,
    },
    /// Counts of backends by status.
    Stats,
    /// The node at a glance: alerts, the cluster, the backend counts.
    Status,
    /// Load-balanced names and what they answer now.
    Domains,
    /// Exactly what the node answers a client for a name now, and why.
    Explain {
        /// The name asked, e.g. app.gslb.example.com.
        name: String,
        /// The client's address (sent in ECS, as a resolver does); default: none.
        #[arg(long)]
        client: Option<String>,
        /// A or AAAA.
        #[arg(long = "type", default_value = "A")]
        qtype: String,
        /// The query carries no ECS: --client is then the resolver's own address.
        #[arg(long)]
        no_ecs: bool,
    },
    /// Client latency agents learned, per subnet and region.
    Latency {
        /// Only this region.
        #[arg(long)]
        region: Option<String>,
    },
    /// Agents and their certificate pins.
    Agents {
        #[command(subcommand)]
        command: AgentsCommand,
    },
    /// Operator overrides (replicated; they outrank everything an agent says).
    Overrides {
        #[command(subcommand)]
        command: OverridesCommand,
    },
    /// DNSSEC: the cluster's keys, the DS records for the parent, rollovers.
    Dnssec {
        #[command(subcommand)]
        command: DnssecCommand,
    },
    /// The Raft cluster of overwatch nodes.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DnssecCommand {
    /// Keys, their states and what happens next; whether answers are signed.
    Status,
    /// The DS records to give the parent zone, one per line (also the DNSKEYs with
    /// --dnskey, for a resolver's trust anchor).
    Ds {
        /// Print the DNSKEY records instead.
        #[arg(long)]
        dnskey: bool,
    },
    /// Roll a key: `zsk` (pre-publish; finishes on its own) or `ksk` (double-DS: give the
    /// parent the new DS, then run again with --complete).
    Rollover {
        /// zsk or ksk.
        #[arg(value_parser = ["zsk", "ksk"])]
        key: String,
        /// KSK: the parent publishes the new DS now; the new KSK takes over.
        #[arg(long)]
        complete: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AgentsCommand {
    /// Every pinned agent.
    List,
    /// Drop an agent's pin (and its backends) so it can register again.
    Delete {
        /// The agent id (`{region}-{12 hex}`).
        agent_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum OverridesCommand {
    /// Every override in force.
    List,
    /// Force a server in (`--healthy=true`) or out (`--healthy=false`) of DNS.
    Set {
        /// Service name.
        service: String,
        /// Server, `IP:PORT`.
        address: String,
        /// true: always in DNS; false: never.
        #[arg(long, required = true, action = clap::ArgAction::Set)]
        healthy: bool,
        /// Why (shown to every operator).
        #[arg(long, required = true)]
        reason: String,
        /// Expire after this long, e.g. 30m or 1h (default: until cleared).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        /// Set it although no node knows the server yet (it applies once the server is
        /// configured or announced); without it such an override is refused.
        #[arg(long)]
        force: bool,
    },
    /// Remove an override.
    Clear {
        /// Service name.
        service: String,
        /// Server, `IP:PORT`.
        address: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// Leader, term, and every member's state and applied index.
    Status,
    /// Add a voting member (it is caught up first).
    AddMember {
        /// Its cluster.node_id.
        id: u64,
        /// Its cluster.listen address as peers reach it, `HOST:PORT`.
        address: String,
    },
    /// Remove a member.
    RemoveMember {
        /// Its cluster.node_id.
        id: u64,
    },
    /// Make the certificates for mutual TLS on the Raft RPC (offline): a cluster CA in
    /// OUT (made once, reused for later nodes) and, per node, `node-ID.crt` and
    /// `node-ID.key`. Existing files are never overwritten. Copy `ca.crt` and a node's
    /// two files to that node, and keep `ca.key` off the nodes.
    Certs {
        /// The directory to write to.
        #[arg(long)]
        out: PathBuf,
        /// A node id (its cluster.node_id); repeat for each node.
        #[arg(long = "node", required = true, value_name = "ID")]
        nodes: Vec<u64>,
        /// How long the node certificates are valid, in days (the CA: 3650).
        #[arg(long, default_value_t = 1825)]
        days: u32,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Check a file offline with the same checks the server runs.
    Validate {
        /// The file.
        #[arg(required_unless_present = "config")]
        file: Option<PathBuf>,
        /// The file, as OpenGSLB's CLI takes it (`-c FILE`).
        #[arg(short = 'c', long = "config", conflicts_with = "file")]
        config: Option<PathBuf>,
    },
}

/// `--timeout`: a duration (`5s`, `500ms`) or a number of seconds (`10`).
fn timeout(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err("--timeout must be more than 0".into()),
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => parse_duration(text),
    }
}
