//! What operators look at besides the page: alert rules, the dashboard, and the
//! agent-disconnection runbook, against real nodes.

use std::collections::BTreeSet;
use std::time::Duration;

use opengslb_tests::cluster::{TEST_TIMING, TestCluster};
use opengslb_tests::gslb::{API_TOKEN, AgentDaemon, TOKEN, cluster_key};
use opengslb_tests::overwatch::{Backend, cli_binary, http_get};
use opengslb_tests::{TempDir, poll_until, workspace_root};

/// `opengslb_…` names in `text` (PromQL), histogram series mapped to their family.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("opengslb_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(family.to_owned());
        rest = &tail[end..];
    }
    names
}

fn body() -> (String, String) {
    let key = cluster_key(12);
    (
        format!(
            "  agent_tokens: {{app: {TOKEN}}}\n  gossip: {{bind_address: \"127.0.0.1:0\", encryption_key: \"{key}\"}}\n  stale: {{threshold: 3s, remove_after: 10m}}\n"
        ),
        key,
    )
}

const DNS: &str = "dns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [gslb.test]\nregions:\n  - name: eu\ndomains:\n  - name: app.gslb.test\n    routing_algorithm: round-robin\n    services: [app]\n    regions: [eu]\n    ttl: 1\n";

#[test]
fn alert_rules_check_and_every_metric_they_and_the_dashboard_use_is_exported() {
    let rules = workspace_root().join("examples/prometheus/alerts.yml");
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool (Debian package prometheus)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("SUCCESS: 13 rules found"), "{text}");

    let dashboard =
        std::fs::read_to_string(workspace_root().join("examples/grafana/opengslb.json"))
            .expect("dashboard");
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard JSON");
    assert!(
        parsed["panels"].as_array().is_some_and(|p| p.len() >= 10),
        "panels"
    );
    let mut used = metric_names(&std::fs::read_to_string(&rules).expect("rules"));
    used.extend(metric_names(&dashboard));
    for required in [
        "opengslb_overwatch_stale_agents",
        "opengslb_overwatch_agents_registered",
        "opengslb_cluster_has_leader",
        "opengslb_dns_queries_total",
        "opengslb_cluster_term",
        "opengslb_overrides_active",
        "opengslb_gossip_packets_total",
        "opengslb_dnssec_earliest_expiration_timestamp_seconds",
    ] {
        assert!(used.contains(required), "{required} is used");
    }

    // A running node (one of a cluster) that has answered a query exports every one.
    let (extra, _) = body();
    // One configured server, so per-service and routing series exist too.
    let with_server = DNS.replace(
        "  - name: eu\n",
        "  - name: eu\n    servers: [{address: 192.0.2.10, service: app}]\n",
    );
    let cluster = TestCluster::start_with("observability", &extra, &with_server, TEST_TIMING);
    cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
    let node = cluster.node(0);
    assert_eq!(node.dig(&["app.gslb.test", "A"]).data("A"), ["192.0.2.10"]);
    let exported = poll_until(Duration::from_secs(5), "cluster gauges exported", || {
        let (_, text) = http_get(node.metrics.expect("metrics"), "/metrics");
        text.contains("opengslb_cluster_quorum 1").then_some(text)
    });
    let exported: BTreeSet<String> = exported
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(metric_names)
        .collect();
    let missing: Vec<&String> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "used but not exported: {missing:?}\nexported: {exported:?}"
    );
}

/// The runbook "an agent disconnected", as README's operations section writes it.
#[test]
fn the_agent_disconnection_runbook_works_as_written() {
    let (extra, key) = body();
    let cluster = TestCluster::start_with("runbook", &extra, DNS, TEST_TIMING);
    cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
    let seeds: Vec<_> = (0..3)
        .map(|i| cluster.node(i).gossip.expect("gossip"))
        .collect();
    let dir = TempDir::new("runbook-agents");
    let backends = [Backend::start("127.0.0.1"), Backend::start("127.0.0.2")];
    let mut agents: Vec<AgentDaemon> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| AgentDaemon::start(&dir, &format!("a{i}"), b.addr, &seeds, &key, TOKEN))
        .collect();
    let api = cluster.node(1).api.expect("api");
    let url = format!("http://{api}");
    let run = |args: &[&str]| {
        std::process::Command::new(cli_binary())
            .args(args)
            .env("OPENGSLB_API", &url)
            .env("OPENGSLB_TOKEN", API_TOKEN)
            .output()
            .expect("cli")
    };
    let cli = |args: &[&str]| {
        let out = run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    poll_until(Duration::from_secs(15), "both backends healthy", || {
        (cli(&["servers", "--status", "healthy"]).lines().count() == 3).then_some(())
    });

    // The agent's host dies.
    let dead = agents.remove(1);
    let dead_id = dead.agent_id.clone();
    let dead_addr = backends[1].addr.to_string();
    let mut dead = dead;
    dead.process.signal(libc::SIGKILL);
    dead.process.wait_exit(Duration::from_secs(5));

    // 1. Which backends are stale? (CLI, then API)
    let table = poll_until(
        Duration::from_secs(15),
        "the dead agent's backend stale",
        || {
            let t = cli(&["servers", "--status", "stale"]);
            t.contains(&dead_addr).then_some(t)
        },
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains(&dead_addr) && l.contains("stale")),
        "{table}"
    );
    assert!(
        cli(&["servers"])
            .lines()
            .filter(|l| l.contains("stale"))
            .count()
            == 1
    );
    let (status, body) = http_get(api, "/api/v1/overwatch/backends?status=stale");
    assert_eq!(status, 200);
    let stale: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(stale["total"], 1, "{stale}");
    assert_eq!(
        stale["backends"][0]["agent_id"],
        dead_id.as_str(),
        "{stale}"
    );
    assert_eq!(stale["backends"][0]["effective_status"], "stale", "{stale}");
    // 2. The stats operators alert on.
    let (_, body) = http_get(api, "/api/v1/overwatch/stats");
    let stats: serde_json::Value = serde_json::from_str(&body).expect("json");
    for (field, value) in [
        ("total_backends", 2),
        ("healthy_backends", 1),
        ("stale_backends", 1),
        ("active_agents", 1),
    ] {
        assert_eq!(stats[field], value, "{field}: {stats}");
    }
    assert!(stats.get("active_overrides").is_some() && stats.get("validation_enabled").is_some());
    // A typo in the address is refused, naming the server it was probably meant for;
    // --force sets it in advance on purpose.
    let typo = format!("{}:{}", backends[1].addr.ip(), backends[1].addr.port() + 1);
    let set_typo = |force: bool| {
        let mut args = vec![
            "overrides",
            "set",
            "app",
            &typo,
            "--healthy=true",
            "--reason",
            "typo",
        ];
        if force {
            args.push("--force");
        }
        run(&args)
    };
    let refused = set_typo(false);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("no server app {typo} is known to this cluster"))
            && said.contains(&format!("did you mean app {dead_addr}"))
            && said.contains("--force"),
        "{said}"
    );
    assert!(!cli(&["overrides", "list"]).contains(&typo));
    let forced = set_typo(true);
    assert!(forced.status.success(), "{forced:?}");
    assert!(cli(&["overrides", "list"]).contains(&typo));
    cli(&["overrides", "clear", "app", &typo]);
    // 3. The app on that host is fine (checked by hand): force it back in, with a reason.
    let out = cli(&[
        "overrides",
        "set",
        "app",
        &dead_addr,
        "--healthy=true",
        "--reason",
        "agent host down; app verified by hand",
        "--ttl",
        "1h",
    ]);
    assert!(out.contains("in DNS"), "{out}");
    poll_until(
        Duration::from_secs(5),
        "the backend back in DNS on every node",
        || {
            (0..3)
                .all(|i| cluster.node(i).dig(&["app.gslb.test", "A"]).data("A").len() == 2)
                .then_some(())
        },
    );
    assert!(cli(&["overrides", "list"]).contains("agent host down"));
    // 4. The host is re-imaged with a new identity: drop the old pin.
    let out = cli(&["agents", "delete", &dead_id]);
    assert!(out.contains(&format!("deleted agent {dead_id}")), "{out}");
    poll_until(Duration::from_secs(5), "the pin gone on every node", || {
        (0..3)
            .all(|i| {
                !cluster
                    .node(i)
                    .get("/api/v1/overwatch/agents")
                    .1
                    .to_string()
                    .contains(&dead_id)
            })
            .then_some(())
    });
    // 5. Done: clear the override.
    cli(&["overrides", "clear", "app", &dead_addr]);
    assert!(!cli(&["overrides", "list"]).contains(&dead_addr));
}
