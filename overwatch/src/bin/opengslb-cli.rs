//! `opengslb-cli`: what operators type. Reads the overwatch API; validates config files offline.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use opengslb_overwatch::app;
use opengslb_overwatch::config::parse_duration;
use serde_json::Value;

/// Command-line client for OpenGSLB overwatch.
#[derive(Debug, Parser)]
#[command(name = "opengslb-cli", version)]
struct Cli {
    /// Overwatch API base URL.
    #[arg(
        long,
        global = true,
        env = "OPENGSLB_API",
        default_value = "http://localhost:8080"
    )]
    api: String,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Bearer token for changes (a value from the server's api.tokens).
    #[arg(long, global = true, env = "OPENGSLB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Request timeout, e.g. 5s or 500ms.
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Backends with every status layer.
    Servers {
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
    /// Load-balanced names and what they answer now.
    Domains,
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
enum AgentsCommand {
    /// Every pinned agent.
    List,
    /// Drop an agent's pin (and its backends) so it can register again.
    Delete {
        /// The agent id (`{region}-{12 hex}`).
        agent_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum OverridesCommand {
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
enum ClusterCommand {
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
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check a file offline with the same checks the server runs.
    Validate {
        /// The file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Config {
        command: ConfigCommand::Validate { file },
    } = &cli.command
    {
        return validate(file);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("opengslb-cli: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(text) => {
            print(&text);
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("opengslb-cli: {message}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stdout)] // a CLI's output is its stdout
fn print(text: &str) {
    print!("{text}");
}

fn validate(file: &std::path::Path) -> ExitCode {
    match app::prepare(file) {
        Ok(p) => {
            let s = &p.settings;
            print(&format!(
                "{}: valid ({} zones, {} regions, {} servers, {} domains)\n",
                file.display(),
                s.dns.zones.len(),
                s.regions.len(),
                s.regions.iter().map(|r| r.servers.len()).sum::<usize>(),
                s.domains.len()
            ));
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: &Cli) -> Result<String, String> {
    opengslb_overwatch::crypto::install_provider();
    let client = reqwest::Client::builder()
        .timeout(cli.timeout)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let base = cli.api.trim_end_matches('/');
    if let Some(change) = change(cli, base) {
        let (method, url, request_body, done) = change?;
        let token = cli.token.as_deref().ok_or(
            "a change needs a token: --token TOKEN or $OPENGSLB_TOKEN (a value from api.tokens)",
        )?;
        let mut request = client.request(method, &url).bearer_auth(token);
        if let Some(b) = request_body {
            request = request.json(&b);
        }
        let body = exchange(request, base, &url).await?;
        return Ok(if cli.json { format!("{body}\n") } else { done });
    }
    let (path, query): (&str, Vec<(&str, &String)>) = match &cli.command {
        Command::Servers {
            status,
            service,
            region,
        } => (
            "/api/v1/overwatch/backends",
            [("status", status), ("service", service), ("region", region)]
                .into_iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
                .collect(),
        ),
        Command::Stats => ("/api/v1/overwatch/stats", Vec::new()),
        Command::Domains => ("/api/v1/domains", Vec::new()),
        Command::Agents { .. } => ("/api/v1/overwatch/agents", Vec::new()),
        Command::Overrides { .. } => ("/api/v1/overrides", Vec::new()),
        Command::Latency { region } => (
            "/api/v1/overwatch/latency",
            region.iter().map(|r| ("region", r)).collect(),
        ),
        Command::Cluster { .. } => ("/api/v1/cluster/status", Vec::new()),
        Command::Config { .. } => return Err("config commands run offline".into()),
    };
    let url = format!("{base}{path}");
    let body = exchange(client.get(&url).query(&query), base, &url).await?;
    if cli.json {
        return Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        ));
    }
    Ok(match &cli.command {
        Command::Servers { .. } => servers_table(&body),
        Command::Stats => stats_text(&body),
        Command::Domains => domains_table(&body),
        Command::Agents { .. } => agents_table(&body),
        Command::Overrides { .. } => overrides_table(&body),
        Command::Latency { .. } => latency_table(&body),
        Command::Cluster { .. } => cluster_text(&body),
        Command::Config { .. } => String::new(),
    })
}

/// A change: method, URL, JSON body and what to print when it is done.
type Change = (reqwest::Method, String, Option<Value>, String);

/// The request a changing command makes; `None` for reads.
fn change(cli: &Cli, base: &str) -> Option<Result<Change, String>> {
    use reqwest::Method;
    let server = |service: &str, address: &str| -> Result<String, String> {
        let parsed: std::net::SocketAddr = address
            .parse()
            .map_err(|_| format!("{address:?} is not IP:PORT or [IPv6]:PORT"))?;
        Ok(format!(
            "{base}/api/v1/overrides/{}/{}",
            segment(service),
            segment(&parsed.to_string())
        ))
    };
    Some(match &cli.command {
        Command::Agents {
            command: AgentsCommand::Delete { agent_id },
        } => Ok((
            Method::DELETE,
            format!("{base}/api/v1/overwatch/agents/{}", segment(agent_id)),
            None,
            format!("deleted agent {agent_id}; it registers again with its next report\n"),
        )),
        Command::Overrides {
            command:
                OverridesCommand::Set {
                    service,
                    address,
                    healthy,
                    reason,
                    ttl,
                },
        } => server(service, address).map(|url| {
            let mut body = serde_json::json!({ "healthy": healthy, "reason": reason });
            if let Some(ttl) = ttl {
                body["ttl"] = ttl.as_secs().max(1).into();
            }
            let state = if *healthy { "in DNS" } else { "out of DNS" };
            (
                Method::PUT,
                url,
                Some(body),
                format!("override set: {service} {address} forced {state} on every node\n"),
            )
        }),
        Command::Overrides {
            command: OverridesCommand::Clear { service, address },
        } => server(service, address).map(|url| {
            (
                Method::DELETE,
                url,
                None,
                format!("override cleared: {service} {address}\n"),
            )
        }),
        Command::Cluster {
            command: ClusterCommand::AddMember { id, address },
        } => Ok((
            Method::POST,
            format!("{base}/api/v1/cluster/members"),
            Some(serde_json::json!({ "id": id, "address": address })),
            format!("node {id} ({address}) is a voting member\n"),
        )),
        Command::Cluster {
            command: ClusterCommand::RemoveMember { id },
        } => Ok((
            Method::DELETE,
            format!("{base}/api/v1/cluster/members/{id}"),
            None,
            format!("node {id} removed from the cluster\n"),
        )),
        _ => return None,
    })
}

/// A URL path segment: everything but unreserved characters percent-encoded.
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn latency_table(body: &Value) -> String {
    let rows = rows(body, "entries", |e| {
        vec![
            field(e, "subnet"),
            field(e, "region"),
            field(e, "rtt_ms"),
            field(e, "samples"),
            field(e, "agents"),
            field(e, "last_updated"),
        ]
    });
    table(
        &[
            "SUBNET",
            "REGION",
            "RTT_MS",
            "SAMPLES",
            "AGENTS",
            "LAST_UPDATED",
        ],
        &rows,
    )
}

fn overrides_table(body: &Value) -> String {
    let rows = rows(body, "overrides", |o| {
        vec![
            field(o, "service"),
            field(o, "address"),
            if o["healthy"] == true { "in" } else { "out" }.to_owned(),
            field(o, "author"),
            field(o, "set_at"),
            field(o, "expires_at"),
            field(o, "reason"),
        ]
    });
    table(
        &[
            "SERVICE", "ADDRESS", "DNS", "AUTHOR", "SET_AT", "EXPIRES", "REASON",
        ],
        &rows,
    )
}

fn cluster_text(body: &Value) -> String {
    let mut out = format!(
        "node {} is {}; leader {}; term {}; quorum {}\n",
        field(body, "node_id"),
        field(body, "state"),
        field(body, "leader"),
        field(body, "term"),
        field(body, "quorum")
    );
    let rows = rows(body, "members", |m| {
        vec![
            field(m, "id"),
            field(m, "address"),
            if m["voter"] == true {
                "voter"
            } else {
                "learner"
            }
            .to_owned(),
            if m["reachable"] == true { "yes" } else { "NO" }.to_owned(),
            field(m, "state"),
            field(m, "last_applied_index"),
        ]
    });
    out.push_str(&table(
        &["ID", "ADDRESS", "ROLE", "REACHABLE", "STATE", "APPLIED"],
        &rows,
    ));
    out
}

/// Sends a request; the JSON body of a success, or one line saying what went wrong
/// (unreachable, not JSON, or the API's own error message with the status).
async fn exchange(
    request: reqwest::RequestBuilder,
    base: &str,
    url: &str,
) -> Result<Value, String> {
    let response = request
        .send()
        .await
        .map_err(|e| format!("cannot reach the API at {base}: {}", cause(&e)))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("{url}: the answer is not JSON: {e}"))?;
    if !status.is_success() {
        let message = body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no message");
        return Err(format!("{url}: {status}: {message}"));
    }
    Ok(body)
}

/// The innermost cause, which says what actually went wrong (refused, timed out, DNS).
fn cause(err: &reqwest::Error) -> String {
    let mut text = if err.is_timeout() {
        "timed out".to_owned()
    } else {
        err.to_string()
    };
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        text = inner.to_string();
        source = inner.source();
    }
    text
}

fn field(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The objects of `body[key]`, one table row each.
fn rows(body: &Value, key: &str, row: impl Fn(&Value) -> Vec<String>) -> Vec<Vec<String>> {
    body.get(key)
        .and_then(Value::as_array)
        .map(|list| list.iter().map(row).collect())
        .unwrap_or_default()
}

fn servers_table(body: &Value) -> String {
    let rows = rows(body, "backends", |b| {
        vec![
            field(b, "service"),
            format!("{}:{}", field(b, "address"), field(b, "port")),
            field(b, "region"),
            field(b, "effective_status"),
            field(b, "validation_state"),
            field(b, "rtt_ms"),
            field(b, "last_change"),
            field(b, "effective_reason"),
        ]
    });
    table(
        &[
            "SERVICE",
            "ADDRESS",
            "REGION",
            "STATUS",
            "VALIDATION",
            "RTT_MS",
            "LAST_CHANGE",
            "REASON",
        ],
        &rows,
    )
}

fn domains_table(body: &Value) -> String {
    let rows = rows(body, "domains", |d| {
        let addresses: Vec<&str> = d
            .get("healthy_addresses")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        vec![
            field(d, "name"),
            field(d, "routing_algorithm"),
            format!(
                "{}/{}",
                field(d, "healthy_backends"),
                field(d, "total_backends")
            ),
            field(d, "ttl"),
            if addresses.is_empty() {
                "-".into()
            } else {
                addresses.join(",")
            },
        ]
    });
    table(
        &["DOMAIN", "ALGORITHM", "HEALTHY", "TTL", "IN_ROTATION"],
        &rows,
    )
}

fn agents_table(body: &Value) -> String {
    let rows = rows(body, "agents", |a| {
        let state = if a["left"] == true {
            "left"
        } else if a["stale"] == true {
            "stale"
        } else {
            "active"
        };
        vec![
            field(a, "agent_id"),
            field(a, "region"),
            state.to_owned(),
            field(a, "backends"),
            field(a, "last_seen"),
            field(a, "fingerprint").chars().take(16).collect(),
        ]
    });
    table(
        &[
            "AGENT_ID",
            "REGION",
            "STATE",
            "BACKENDS",
            "LAST_SEEN",
            "PIN",
        ],
        &rows,
    )
}

fn stats_text(body: &Value) -> String {
    [
        "total_backends",
        "healthy_backends",
        "unhealthy_backends",
        "stale_backends",
        "draining_backends",
        "active_agents",
        "registered_agents",
        "active_overrides",
        "validation_enabled",
    ]
    .iter()
    .map(|k| format!("{k:<20} {}\n", field(body, k)))
    .collect()
}

/// Columns padded to their widest cell; the last column is not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}
