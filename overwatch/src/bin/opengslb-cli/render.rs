//! The API's answers as tables and lines for a terminal.

use opengslb_overwatch::api::types::{
    AgentList, BackendList, ClusterStatus, DomainList, Explanation, LatencyList, OverrideList,
    Stats,
};

/// `-` for nothing, the value otherwise.
fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A float as JSON writes it (`2.0`, `1.234`), as the tables always showed it.
fn float(value: f64) -> String {
    serde_json::to_string(&value).unwrap_or_else(|_| value.to_string())
}

/// `opengslb-cli servers`.
pub(crate) fn servers(list: &BackendList) -> String {
    let rows: Vec<Vec<String>> = list
        .backends
        .iter()
        .map(|b| {
            vec![
                b.service.clone(),
                format!("{}:{}", b.address, b.port),
                b.region.clone(),
                b.effective_status.clone(),
                b.validation_state.clone(),
                opt(b.rtt_ms.map(float)),
                b.last_change.clone(),
                b.effective_reason.clone(),
            ]
        })
        .collect();
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

/// Addresses joined by `separator`, or `-` for none.
fn addresses(ips: &[std::net::IpAddr], separator: &str) -> String {
    if ips.is_empty() {
        return "-".to_owned();
    }
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(separator)
}

/// `opengslb-cli domains`: what DNS answers now, per region where it depends on the
/// client.
pub(crate) fn domains(list: &DomainList) -> String {
    let join = |ips: &[std::net::IpAddr]| addresses(ips, ",");
    let rows: Vec<Vec<String>> = list
        .domains
        .iter()
        .map(|d| {
            let answer = if d.answers.depends_on_client {
                d.answers
                    .answer_by_region
                    .iter()
                    .map(|(region, ips)| format!("{region}:{}", join(ips)))
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                join(&d.answers.answer)
            };
            vec![
                d.name.clone(),
                d.routing_algorithm.clone(),
                format!("{}/{}", d.healthy_backends, d.total_backends),
                d.ttl.to_string(),
                answer,
            ]
        })
        .collect();
    table(&["DOMAIN", "ALGORITHM", "HEALTHY", "TTL", "ANSWER"], &rows)
}

/// `opengslb-cli explain NAME`.
pub(crate) fn explain(e: &Explanation) -> String {
    let ips = |ips: &[std::net::IpAddr]| addresses(ips, " ");
    let mut out = format!(
        "{} {} for client {}{}: {}\n",
        e.name,
        e.qtype,
        opt(e.client),
        if e.ecs { " (in ECS)" } else { "" },
        e.rcode
    );
    if let Some(d) = &e.domain {
        out.push_str(&format!(
            "algorithm {} over regions {} (max_records {}, ttl {}, when_all_unhealthy {})\n",
            d.algorithm,
            d.regions.join(","),
            d.max_records,
            d.ttl,
            d.when_all_unhealthy
        ));
    }
    out.push_str(&format!("answer:   {}\n", ips(&e.answer)));
    if e.possible != e.answer {
        out.push_str(&format!("possible: {}\n", ips(&e.possible)));
    }
    if let Some(region) = &e.client_region {
        out.push_str(&format!(
            "client region: {region} (first {} bits)\n",
            opt(e.location_prefix)
        ));
    }
    if let Some(region) = &e.learned_region {
        out.push_str(&format!("learned region: {region}\n"));
    }
    if let Some(scope) = e.ecs_scope {
        out.push_str(&format!("ecs scope: /{scope}\n"));
    }
    out.push_str(&format!("why: {}\n", e.why));
    if !e.candidates.is_empty() {
        let rows: Vec<Vec<String>> = e
            .candidates
            .iter()
            .map(|c| {
                vec![
                    c.address.to_string(),
                    c.region.clone(),
                    opt(c.effective_status.clone()),
                    c.weight.to_string(),
                    opt(c.rtt_ms.map(float)),
                    if c.chosen { "yes" } else { "-" }.to_owned(),
                    opt(c.reason.clone()),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &[
                "ADDRESS", "REGION", "STATUS", "WEIGHT", "RTT_MS", "ANSWERED", "REASON",
            ],
            &rows,
        ));
    }
    out
}

/// `opengslb-cli agents list`.
pub(crate) fn agents(list: &AgentList) -> String {
    let rows: Vec<Vec<String>> = list
        .agents
        .iter()
        .map(|a| {
            let state = if a.left {
                "left"
            } else if a.stale {
                "stale"
            } else {
                "active"
            };
            vec![
                a.agent_id.clone(),
                a.region.clone(),
                state.to_owned(),
                a.backends.to_string(),
                opt(a.last_seen.as_deref()),
                a.fingerprint.chars().take(16).collect(),
            ]
        })
        .collect();
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

/// `opengslb-cli stats`.
pub(crate) fn stats(s: &Stats) -> String {
    [
        ("total_backends", s.total_backends.to_string()),
        ("healthy_backends", s.healthy_backends.to_string()),
        ("unhealthy_backends", s.unhealthy_backends.to_string()),
        ("stale_backends", s.stale_backends.to_string()),
        ("draining_backends", s.draining_backends.to_string()),
        ("active_agents", s.active_agents.to_string()),
        ("registered_agents", s.registered_agents.to_string()),
        ("active_overrides", s.active_overrides.to_string()),
        ("validation_enabled", s.validation_enabled.to_string()),
    ]
    .iter()
    .map(|(k, v)| format!("{k:<20} {v}\n"))
    .collect()
}

/// `opengslb-cli latency`.
pub(crate) fn latency(list: &LatencyList) -> String {
    let rows: Vec<Vec<String>> = list
        .entries
        .iter()
        .map(|e| {
            vec![
                e.subnet.clone(),
                e.region.clone(),
                float(e.rtt_ms),
                e.samples.to_string(),
                e.agents.to_string(),
                e.last_updated.clone(),
            ]
        })
        .collect();
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

/// `opengslb-cli overrides list`.
pub(crate) fn overrides(list: &OverrideList) -> String {
    let rows: Vec<Vec<String>> = list
        .overrides
        .iter()
        .map(|o| {
            vec![
                o.service.clone(),
                o.address.to_string(),
                if o.healthy { "in" } else { "out" }.to_owned(),
                o.author.clone(),
                o.set_at.clone(),
                opt(o.expires_at.as_deref()),
                o.reason.clone(),
            ]
        })
        .collect();
    table(
        &[
            "SERVICE", "ADDRESS", "DNS", "AUTHOR", "SET_AT", "EXPIRES", "REASON",
        ],
        &rows,
    )
}

/// `opengslb-cli dnssec status`.
pub(crate) fn dnssec(status: &opengslb_overwatch::api::types::DnssecStatus) -> String {
    let mut out = format!(
        "DNSSEC {}, {}; answers to DO=1 queries are {} ({} RRSIGs)\n\n",
        if status.enabled { "on" } else { "off" },
        status.algorithm,
        if status.signing { "signed" } else { "unsigned" },
        status.rrsigs
    );
    let rows: Vec<Vec<String>> = status
        .keys
        .iter()
        .map(|k| {
            vec![
                k.id.to_string(),
                k.role.clone(),
                k.state.clone(),
                k.tag.to_string(),
                k.algorithm.to_string(),
                k.since.clone(),
                k.next.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["ID", "ROLE", "STATE", "TAG", "ALG", "SINCE", "NEXT"],
        &rows,
    ));
    for zone in &status.zones {
        out.push_str(&format!("\nDS for the parent of {}:\n", zone.zone));
        for ds in &zone.ds {
            out.push_str(&format!("  {ds}\n"));
        }
    }
    out
}

/// `opengslb-cli cluster status`.
pub(crate) fn cluster(status: &ClusterStatus) -> String {
    let mut out = format!(
        "node {} is {}; leader {}; term {}; quorum {}\n",
        status.node_id,
        status.state,
        opt(status.leader),
        status.term,
        status.quorum
    );
    let rows: Vec<Vec<String>> = status
        .members
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                m.address.clone(),
                if m.voter { "voter" } else { "learner" }.to_owned(),
                if m.reachable { "yes" } else { "NO" }.to_owned(),
                opt(m.state.as_deref()),
                opt(m.last_applied_index),
            ]
        })
        .collect();
    out.push_str(&table(
        &["ID", "ADDRESS", "ROLE", "REACHABLE", "STATE", "APPLIED"],
        &rows,
    ));
    for m in status.members.iter().filter(|m| !m.voter) {
        let why = if m.reachable {
            "it is being caught up"
        } else {
            "it is unreachable"
        };
        out.push_str(&format!(
            "node {} is a learner, so it does not vote: {why}; once it runs and has caught up, `cluster add-member {} {}` makes it a voter\n",
            m.id, m.id, m.address
        ));
    }
    out
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
