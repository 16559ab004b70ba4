//! `opengslb-cli`: what operators type. Reads and changes state through the overwatch API
//! (typed by `opengslb_overwatch::api::types`); validates config files offline.
//!
//! `args` is the command line, `client` one request to the API, `render` the tables.

mod args;
mod client;
mod render;

use std::process::ExitCode;

use clap::Parser;
use opengslb_overwatch::api::types::{self, MemberBody, OverrideBody, Ttl};
use opengslb_overwatch::app;
use reqwest::Method;

use args::{
    AgentsCommand, Cli, ClusterCommand, Command, ConfigCommand, DnssecCommand, OverridesCommand,
};
use client::{Client, segment, typed};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Config {
        command: ConfigCommand::Validate { file, config },
    } = &cli.command
    {
        // clap requires one of the two.
        if let Some(file) = file.as_ref().or(config.as_ref()) {
            return validate(file);
        }
    }
    if let Command::Cluster {
        command: ClusterCommand::Certs { out, nodes, days },
    } = &cli.command
    {
        return certs(out, nodes, *days);
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
            for warning in &s.warnings {
                eprintln!("warning: {warning}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::from(2)
        }
    }
}

fn certs(out: &std::path::Path, nodes: &[u64], days: u32) -> ExitCode {
    match opengslb_overwatch::cluster::tls::issue(out, nodes, days) {
        Ok(written) => {
            let mut text = String::new();
            for file in &written {
                text.push_str(&format!("wrote {}\n", file.display()));
            }
            let dir = out.display();
            text.push_str(&format!(
                "\nOn node N, with {dir}/ca.crt, node-N.crt and node-N.key copied to /etc/opengslb/cluster/:\n\ncluster:\n  tls:\n    ca: /etc/opengslb/cluster/ca.crt\n    cert: /etc/opengslb/cluster/node-N.crt\n    key: /etc/opengslb/cluster/node-N.key\n\nKeep {dir}/ca.key off the nodes: it makes members.\n"
            ));
            print(&text);
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("opengslb-cli: cluster certs: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> Result<String, String> {
    let client = Client::new(&cli.api, cli.timeout)?;
    if let Command::Dnssec { command } = &cli.command {
        return dnssec(&client, cli, command).await;
    }
    if let Some(change) = change(cli) {
        let Change {
            method,
            path,
            body,
            done,
        } = change?;
        let token = cli.token.as_deref().ok_or(
            "a change needs a token: --token TOKEN or $OPENGSLB_TOKEN (a value from api.tokens)",
        )?;
        let answer = client.change(method, &path, body.as_ref(), token).await?;
        return Ok(if cli.json {
            format!("{answer}\n")
        } else {
            done
        });
    }
    let (path, query): (&str, Vec<(&str, &str)>) = match &cli.command {
        Command::Servers {
            status,
            service,
            region,
            ..
        } => (
            "/api/v1/overwatch/backends",
            [("status", status), ("service", service), ("region", region)]
                .into_iter()
                .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
                .collect(),
        ),
        Command::Stats => ("/api/v1/overwatch/stats", Vec::new()),
        Command::Status => return status(&client, cli.json).await,
        Command::Domains => ("/api/v1/domains", Vec::new()),
        Command::Explain {
            name,
            client,
            qtype,
            no_ecs,
        } => {
            let mut query = vec![("name", name.as_str()), ("type", qtype.as_str())];
            if let Some(client) = client {
                query.push(("client", client.as_str()));
            }
            if *no_ecs {
                query.push(("ecs", "false"));
            }
            ("/api/v1/explain", query)
        }
        Command::Agents { .. } => ("/api/v1/overwatch/agents", Vec::new()),
        Command::Overrides { .. } => ("/api/v1/overrides", Vec::new()),
        Command::Latency { region } => (
            "/api/v1/overwatch/latency",
            region.iter().map(|r| ("region", r.as_str())).collect(),
        ),
        Command::Cluster {
            command: ClusterCommand::Certs { .. },
        }
        | Command::Config { .. } => return Err("config and certs commands run offline".into()),
        Command::Cluster { .. } => ("/api/v1/cluster/status", Vec::new()),
        Command::Dnssec { .. } => return Err("dnssec commands are answered above".into()),
    };
    let body = client.get(path, &query).await?;
    if cli.json {
        let pretty = serde_json::to_string_pretty(&body)
            .map_err(|e| format!("{path}: cannot print the answer: {e}"))?;
        return Ok(format!("{pretty}\n"));
    }
    Ok(match &cli.command {
        Command::Servers { .. } => render::servers(&typed(body, "servers")?),
        Command::Stats => render::stats(&typed(body, "stats")?),
        Command::Status => String::new(),
        Command::Domains => render::domains(&typed(body, "domains")?),
        Command::Explain { .. } => render::explain(&typed(body, "explanation")?),
        Command::Agents { .. } => render::agents(&typed(body, "agents")?),
        Command::Overrides { .. } => render::overrides(&typed(body, "overrides")?),
        Command::Latency { .. } => render::latency(&typed(body, "latency")?),
        Command::Cluster { .. } => render::cluster(&typed(body, "cluster status")?),
        Command::Config { .. } | Command::Dnssec { .. } => String::new(),
    })
}

/// `status`: the alerts, the cluster and the backend counts, from three reads.
async fn dnssec(client: &Client, cli: &Cli, command: &DnssecCommand) -> Result<String, String> {
    let body = match command {
        DnssecCommand::Status | DnssecCommand::Ds { .. } => {
            client.get("/api/v1/dnssec/status", &[]).await?
        }
        DnssecCommand::Rollover { key, complete } => {
            let token = cli.token.as_deref().ok_or(
                "a change needs a token: --token TOKEN or $OPENGSLB_TOKEN (a value from api.tokens)",
            )?;
            let request = types::RolloverRequest {
                key: key.clone(),
                complete: *complete,
            };
            client
                .change(
                    Method::POST,
                    "/api/v1/dnssec/rollover",
                    Some(&request),
                    token,
                )
                .await?
        }
    };
    if cli.json {
        return serde_json::to_string_pretty(&body)
            .map(|text| format!("{text}\n"))
            .map_err(|e| format!("cannot print the answer: {e}"));
    }
    let status: types::DnssecStatus = typed(body, "dnssec status")?;
    Ok(match command {
        DnssecCommand::Status => render::dnssec(&status),
        DnssecCommand::Ds { dnskey } => status
            .zones
            .iter()
            .flat_map(|z| if *dnskey { &z.dnskey } else { &z.ds })
            .map(|line| format!("{line}\n"))
            .collect(),
        DnssecCommand::Rollover { key, complete } => {
            let said = match (key.as_str(), complete) {
                ("ksk", false) => {
                    "KSK rollover started: give the parent the new DS below (keep the old one until --complete)"
                }
                ("ksk", true) => {
                    "KSK rollover complete: the new KSK signs the DNSKEY RRset; the parent may drop the old DS"
                }
                _ => {
                    "ZSK rollover started: the new ZSK is published now and signs once every cache can know it"
                }
            };
            format!("{said}\n\n{}", render::dnssec(&status))
        }
    })
}

async fn status(client: &Client, json: bool) -> Result<String, String> {
    let alerts = client.get("/api/v1/overwatch/alerts", &[]).await?;
    let cluster = client.get("/api/v1/cluster/status", &[]).await?;
    let stats = client.get("/api/v1/overwatch/stats", &[]).await?;
    if json {
        let all =
            serde_json::json!({ "alerts": alerts["alerts"], "cluster": cluster, "stats": stats });
        return serde_json::to_string_pretty(&all)
            .map(|text| format!("{text}\n"))
            .map_err(|e| format!("cannot print the answer: {e}"));
    }
    let alerts: types::Alerts = typed(alerts, "alerts")?;
    let mut out = String::new();
    if alerts.alerts.is_empty() {
        out.push_str("no alerts\n");
    }
    for alert in &alerts.alerts {
        out.push_str(&format!(
            "{}: {}\n",
            alert.severity.to_uppercase(),
            alert.message
        ));
    }
    out.push('\n');
    out.push_str(&render::cluster(&typed(cluster, "cluster status")?));
    out.push('\n');
    out.push_str(&render::stats(&typed(stats, "stats")?));
    Ok(out)
}

/// The body of a change, typed as the API takes it.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Body {
    Override(OverrideBody),
    Member(MemberBody),
}

/// A change: method, path, body, and what to print when it is done.
struct Change {
    method: Method,
    path: String,
    body: Option<Body>,
    done: String,
}

/// The request a changing command makes; `None` for reads.
fn change(cli: &Cli) -> Option<Result<Change, String>> {
    let server = |service: &str, address: &str| -> Result<String, String> {
        let parsed: std::net::SocketAddr = address
            .parse()
            .map_err(|_| format!("{address:?} is not IP:PORT or [IPv6]:PORT"))?;
        Ok(format!(
            "/api/v1/overrides/{}/{}",
            segment(service),
            segment(&parsed.to_string())
        ))
    };
    Some(match &cli.command {
        Command::Agents {
            command: AgentsCommand::Delete { agent_id },
        } => Ok(Change {
            method: Method::DELETE,
            path: format!("/api/v1/overwatch/agents/{}", segment(agent_id)),
            body: None,
            done: format!("deleted agent {agent_id}; it registers again with its next report\n"),
        }),
        Command::Overrides {
            command:
                OverridesCommand::Set {
                    service,
                    address,
                    healthy,
                    reason,
                    ttl,
                    force,
                },
        } => server(service, address).map(|path| {
            let state = if *healthy { "in DNS" } else { "out of DNS" };
            Change {
                method: Method::PUT,
                path,
                body: Some(Body::Override(OverrideBody {
                    healthy: *healthy,
                    reason: reason.clone(),
                    ttl: ttl.map(|t| Ttl::Seconds(t.as_secs().max(1))),
                    force: *force,
                })),
                done: format!("override set: {service} {address} forced {state} on every node\n"),
            }
        }),
        Command::Overrides {
            command: OverridesCommand::Clear { service, address },
        } => server(service, address).map(|path| Change {
            method: Method::DELETE,
            path,
            body: None,
            done: format!("override cleared: {service} {address}\n"),
        }),
        Command::Cluster {
            command: ClusterCommand::AddMember { id, address },
        } => Ok(Change {
            method: Method::POST,
            path: "/api/v1/cluster/members".into(),
            body: Some(Body::Member(types::MemberBody {
                id: *id,
                address: address.clone(),
            })),
            done: format!("node {id} ({address}) is a voting member\n"),
        }),
        Command::Cluster {
            command: ClusterCommand::RemoveMember { id },
        } => Ok(Change {
            method: Method::DELETE,
            path: format!("/api/v1/cluster/members/{id}"),
            body: None,
            done: format!("node {id} removed from the cluster\n"),
        }),
        _ => return None,
    })
}
