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
    /// Agents and their certificate pins.
    Agents {
        #[command(subcommand)]
        command: AgentsCommand,
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
    opengslb_overwatch::health::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(cli.timeout)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let base = cli.api.trim_end_matches('/');
    if let Command::Agents {
        command: AgentsCommand::Delete { agent_id },
    } = &cli.command
    {
        let url = format!("{base}/api/v1/overwatch/agents/{agent_id}");
        let body = exchange(client.delete(&url), base, &url).await?;
        return Ok(if cli.json {
            format!("{body}\n")
        } else {
            format!("deleted agent {agent_id}; it registers again with its next report\n")
        });
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
        Command::Config { .. } => String::new(),
    })
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
