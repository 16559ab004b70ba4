//! Coming from OpenGSLB v1.1: its file shapes load in the built binaries (fixtures in
//! tests/fixtures/opengslb, written by us in its documented shape), an agent and an
//! overwatch configured that way put a backend in DNS, and the paths, commands and metric
//! names its operators script against answer.

use std::process::Command;
use std::time::Duration;

use opengslb_tests::overwatch::{Backend, Overwatch, cli_binary, http_get, http_request};
use opengslb_tests::process::Spawned;
use opengslb_tests::{TempDir, agent_binary, poll_until, workspace_root};

fn fixture(name: &str) -> String {
    let path = workspace_root().join("tests/fixtures/opengslb").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const TOKEN: &str = "ops-token-0123456789";

#[test]
fn opengslb_files_load_and_put_an_agents_backend_in_dns() {
    let dir = TempDir::new("compat");
    // `config validate -c`, OpenGSLB's spelling: valid, with each no-op key named.
    let path = workspace_root().join("tests/fixtures/opengslb/overwatch.yaml");
    let out = Command::new(cli_binary())
        .args(["config", "validate", "-c"])
        .arg(&path)
        .output()
        .expect("cli");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("valid (1 zones, 2 regions, 3 servers, 6 domains)"),
        "{stdout}"
    );
    for warned in [
        "overwatch.dnssec.key_sync is accepted and unnecessary",
        "dns.zones is not set",
        "timeout 10s is longer than its interval 5s",
        "smoothing_factor",
        "gossip_interval",
        "overwatch.identity.region (us-east-1)",
    ] {
        assert!(stderr.contains(warned), "{warned}: {stderr}");
    }

    let node = Overwatch::start(&dir, &fixture("overwatch.yaml"));
    let output = node.process.output();
    assert!(
        output.contains("WARN") && output.contains("overwatch.dnssec.key_sync is accepted"),
        "{output}"
    );
    // OpenGSLB's `dnssec: {enabled: true, algorithm: ECDSAP256SHA256}` means it here:
    // only `key_sync` is warned (dnssec.rs checks the signing).
    assert!(
        !output.contains("overwatch.dnssec (")
            && !output.contains("algorithm: \"ECDSAP256SHA256\" is not"),
        "{output}"
    );

    // The agent, in OpenGSLB's shape: mode, agent: nesting, JSON logs, its metrics.
    let backend = Backend::start("127.0.0.1");
    let agent_yaml = fixture("agent.yaml")
        .replace("@DIR@", &dir.path().display().to_string())
        .replace("@BACKEND_PORT@", &backend.addr.port().to_string())
        .replace("@OVERWATCH@", &node.gossip.expect("gossip").to_string())
        // Ours only: loopback and a free port, beside the other tests.
        .replace(
            "    overwatch_nodes:",
            "    bind_address: \"127.0.0.1:0\"\n    overwatch_nodes:",
        );
    let agent_file = dir.join("agent.yaml");
    std::fs::write(&agent_file, agent_yaml).expect("write");
    let mut command = Command::new(agent_binary());
    command.arg("--config").arg(&agent_file);
    let agent = Spawned::start("agent (OpenGSLB shape)", command);
    let first = agent.wait_for_line("\"message\":\"agent identity\"", Duration::from_secs(10));
    let line: serde_json::Value =
        serde_json::from_str(&first).unwrap_or_else(|e| panic!("not JSON ({e}): {first}"));
    assert_eq!(line["level"], "INFO", "{line}");
    assert!(
        line["fields"]["agent_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("us-east-1-")),
        "{line}"
    );
    let output = agent.output();
    for warned in [
        "predictive.check_interval (10s)",
        "predictive.cpu.bleed_duration (30s)",
        "heartbeat.missed_threshold (3)",
    ] {
        assert!(output.contains(warned), "{warned}: {output}");
    }
    agent.wait_for_line("overwatch hears this agent", Duration::from_secs(15));
    // SIGHUP: the agent reloads, names what waits for a restart, and keeps running.
    let reloaded = std::fs::read_to_string(&agent_file).expect("read").replace(
        "    interval: 1s\n    missed_threshold",
        "    interval: 2s\n    missed_threshold",
    );
    std::fs::write(&agent_file, reloaded).expect("write");
    agent.signal(libc::SIGHUP);
    let line = agent.wait_for_line("take effect after a restart", Duration::from_secs(10));
    assert!(line.contains("heartbeat.interval"), "{line}");
    poll_until(
        Duration::from_secs(15),
        "the agent's backend in DNS",
        || (node.dig(&["webapp.gslb.example.com", "A"]).data("A") == ["127.0.0.1"]).then_some(()),
    );

    // Probes answer outside api.allowed_networks (10.0.0.0/8 here); the rest does not.
    let api = node.api.expect("api");
    for probe in ["/api/v1/ready", "/api/v1/live", "/api/v1/version"] {
        let (status, body) = http_get(api, probe);
        assert_eq!(status, 200, "{probe}: {body}");
    }
    let (_, version) = http_get(api, "/api/v1/version");
    let version: serde_json::Value = serde_json::from_str(&version).expect("json");
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    let (status, body) = http_get(api, "/api/v1/health/servers");
    assert_eq!(status, 403, "{body}");
    // The metrics port's health check, and OpenGSLB's metric names beside ours.
    let metrics = node.metrics.expect("metrics");
    assert_eq!(http_get(metrics, "/health"), (200, "ok\n".to_owned()));
    let (_, text) = http_get(metrics, "/metrics");
    for series in [
        "opengslb_healthy_servers{region=\"us-east-1\"} 1",
        "opengslb_configured_servers 3",
        "opengslb_configured_domains 6",
        "opengslb_app_info{version=",
        "opengslb_overwatch_stale_agents_total 0",
        "opengslb_overwatch_backends_total 4",
        "opengslb_overwatch_backends_healthy 1",
        "opengslb_overwatch_agent_certs_pinned 1",
        "opengslb_health_check_results_total{region=\"us-east-1\",server=\"192.0.2.10:80\",result=\"unhealthy\"}",
    ] {
        assert!(text.contains(series), "{series} not in /metrics");
    }
}

#[test]
fn opengslb_paths_and_commands_answer_as_documented() {
    let dir = TempDir::new("compat-api");
    let backend = Backend::start("127.0.0.1");
    backend.set_healthy(false);
    let yaml = fixture("overwatch.yaml")
        .replace("allowed_networks: [\"10.0.0.0/8\"]", "allowed_networks: [\"127.0.0.0/8\"]\n  tokens:\n    ops: ops-token-0123456789")
        .replace(
            "      - address: 192.0.2.20\n",
            &format!(
                "      - address: 127.0.0.1\n        port: {}\n        service: webapp.gslb.example.com\n      - address: 192.0.2.20\n",
                backend.addr.port()
            ),
        )
        .replace(
            "      type: tcp\n      interval: 15s\n",
            "      type: http\n      interval: 1h\n",
        );
    let node = Overwatch::start(&dir, &yaml);
    let api = node.api.expect("api");
    let url = format!("http://{api}");
    let cli = |args: &[&str]| {
        let out = Command::new(cli_binary())
            .args(args)
            .env("OPENGSLB_API", &url)
            .env("OPENGSLB_TOKEN", TOKEN)
            .output()
            .expect("cli");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let server = format!("127.0.0.1:{}", backend.addr.port());
    let status_of = || {
        cli(&["servers", "list", "--timeout", "10"])
            .lines()
            .find(|l| l.contains(&server))
            .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
    };
    // The eu-west-1 check runs at start, then once an hour: the failing first result
    // takes the backend out, and only `validate` brings it back soon (two passes: rise 2).
    poll_until(Duration::from_secs(10), "out after the first check", || {
        (status_of().as_deref() == Some("unhealthy")).then_some(())
    });
    backend.set_healthy(true);
    poll_until(Duration::from_secs(10), "validated into rotation", || {
        let (status, body) = http_request(api, "POST", "/api/v1/overwatch/validate", None, None);
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"success\":true"), "{body}");
        (status_of().as_deref() == Some("healthy")).then_some(())
    });

    let (status, body) = http_get(api, "/api/v1/health/regions");
    assert_eq!(status, 200, "{body}");
    let regions: serde_json::Value = serde_json::from_str(&body).expect("json");
    let eu = regions["regions"]
        .as_array()
        .and_then(|r| r.iter().find(|x| x["name"] == "eu-west-1"))
        .cloned()
        .expect("eu-west-1");
    let (total, healthy) = (
        eu["total_servers"].as_u64().expect("total"),
        eu["healthy_count"].as_u64().expect("healthy"),
    );
    assert_eq!(total, 2, "{regions}");
    assert!(healthy >= 1, "the validated backend counts: {regions}");
    assert_eq!(eu["unhealthy_count"].as_u64(), Some(total - healthy));
    assert_eq!(
        eu["health_percent"].as_f64(),
        Some(healthy as f64 * 100.0 / total as f64),
        "{regions}"
    );

    // OpenGSLB's override path: a token is still needed; the answer is its shape.
    let path = format!(
        "/api/v1/overwatch/backends/webapp.gslb.example.com/127.0.0.1/{}/override",
        backend.addr.port()
    );
    let (status, _) = http_request(
        api,
        "POST",
        &path,
        None,
        Some(r#"{"healthy": false, "reason": "deploy"}"#),
    );
    assert_eq!(status, 401);
    let (status, body) = http_request(
        api,
        "POST",
        &path,
        Some(TOKEN),
        Some(r#"{"healthy": false, "reason": "deploy"}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).expect("json"),
        serde_json::json!({"success": true, "message": "Override set: backend marked as unhealthy"})
    );
    assert!(cli(&["overrides", "list"]).contains("deploy"));
    let unknown = "/api/v1/overwatch/backends/webapp.gslb.example.com/192.0.2.99/80/override";
    let (status, body) = http_request(
        api,
        "POST",
        unknown,
        Some(TOKEN),
        Some(r#"{"healthy": true}"#),
    );
    assert_eq!(status, 404, "{body}");
    let (status, body) = http_request(api, "DELETE", &path, Some(TOKEN), None);
    assert_eq!(
        (status, body.contains("Override cleared")),
        (200, true),
        "{body}"
    );

    // `status`, and `--timeout` in whole seconds as OpenGSLB's CLI takes it.
    let status = cli(&["status", "--timeout", "10"]);
    assert!(
        status.contains("no alerts")
            && status.contains("quorum true")
            && status.contains("total_backends"),
        "{status}"
    );
}

/// An agent file in OpenGSLB's shape for `service` beside `backend`.
fn opengslb_agent(
    dir: &TempDir,
    name: &str,
    service: &str,
    backend: &Backend,
    seed: &str,
) -> Spawned {
    let yaml = format!(
        "mode: agent\nagent:\n  identity:\n    service_token: demo-token-0123456789\n    region: us-east-1\n    cert_path: {d}/{name}.crt\n    key_path: {d}/{name}.key\n  backends:\n    - service: {service}\n      address: {ip}\n      port: {port}\n      health_check:\n        type: http\n        path: /health\n        interval: 300ms\n        timeout: 250ms\n        failure_threshold: 1\n        success_threshold: 1\n  gossip:\n    encryption_key: \"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\"\n    overwatch_nodes: [\"{seed}\"]\n    bind_address: \"127.0.0.1:0\"\n  heartbeat:\n    interval: 1s\nlogging:\n  level: info\n  format: text\n",
        d = dir.path().display(),
        ip = backend.addr.ip(),
        port = backend.addr.port(),
    );
    let file = dir.join(&format!("{name}.yaml"));
    std::fs::write(&file, yaml).expect("write");
    let mut command = Command::new(agent_binary());
    command.arg("--config").arg(&file);
    Spawned::start(&format!("agent {name}"), command)
}

#[test]
fn three_agents_of_one_service_behind_one_overwatch_answer_by_opengslbs_rules() {
    // The seed's Demo 2, with OpenGSLB's key names: agents report `service: app.demo.local`,
    // and a domain answers the servers of its own service only.
    let dir = TempDir::new("compat-demo2");
    let overwatch = "mode: overwatch\noverwatch:\n  identity:\n    node_id: overwatch-1\n  agent_tokens:\n    app.demo.local: demo-token-0123456789\n    api.demo.local: demo-token-0123456789\n  gossip:\n    bind_address: \"127.0.0.1:0\"\n    encryption_key: \"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\"\n  validation:\n    enabled: false\n  stale:\n    threshold: 10s\n    remove_after: 5m\ndns:\n  listen_address: \"127.0.0.1:0\"\n  default_ttl: 5\nregions:\n  - name: us-east-1\ndomains:\n  - name: app.demo.local\n    routing_algorithm: round-robin\n    regions: [us-east-1]\n  - name: api.demo.local\n    routing_algorithm: round-robin\n    regions: [us-east-1]\n  - name: primary.demo.local\n    routing_algorithm: active-standby\n    regions: [us-east-1]\n    services: [app.demo.local]\napi:\n  address: 127.0.0.1:0\nmetrics:\n  address: 127.0.0.1:0\n";
    let node = Overwatch::start(&dir, overwatch);
    let seed = node.gossip.expect("gossip").to_string();
    let app = [
        Backend::start("127.0.0.1"),
        Backend::start("127.0.0.2"),
        Backend::start("127.0.0.3"),
    ];
    let api = Backend::start("127.0.0.4");
    let _agents: Vec<Spawned> = app
        .iter()
        .enumerate()
        .map(|(i, b)| opengslb_agent(&dir, &format!("app{i}"), "app.demo.local", b, &seed))
        .chain(std::iter::once(opengslb_agent(
            &dir,
            "api",
            "api.demo.local",
            &api,
            &seed,
        )))
        .collect();
    let answer = |name: &str| node.dig(&[name, "A"]).data("A");
    poll_until(
        Duration::from_secs(20),
        "three app servers, one api server",
        || {
            (answer("app.demo.local") == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
                && answer("api.demo.local") == ["127.0.0.4"])
            .then_some(())
        },
    );
    // Active/standby: one record, the first in rotation, for a domain that shares app's
    // servers because its file says so.
    let primary = answer("primary.demo.local");
    assert_eq!(primary.len(), 1, "{primary:?}");
    assert!(["127.0.0.1", "127.0.0.2", "127.0.0.3"].contains(&primary[0].as_str()));
    // The active server fails: the standby answers, and app.demo.local loses it.
    let active: usize = primary[0]
        .rsplit('.')
        .next()
        .and_then(|n| n.parse::<usize>().ok())
        .expect("ip")
        - 1;
    app[active].set_healthy(false);
    poll_until(Duration::from_secs(10), "the standby answers", || {
        let now = answer("primary.demo.local");
        (now.len() == 1 && now != primary).then_some(())
    });
    poll_until(Duration::from_secs(10), "two app servers left", || {
        (answer("app.demo.local").len() == 2).then_some(())
    });
    assert_eq!(
        answer("api.demo.local"),
        ["127.0.0.4"],
        "api never answers app's servers"
    );
}

#[test]
fn includes_merge_other_files_and_their_problems_name_them() {
    let dir = TempDir::new("compat-includes");
    let source = workspace_root().join("tests/fixtures/opengslb/includes");
    for file in [
        "overwatch.yaml",
        "regions/us.yaml",
        "regions/eu.yaml",
        "domains/www.yaml",
        "domains/eu/geo.yaml",
    ] {
        let to = dir.join(file);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("dirs");
        std::fs::copy(source.join(file), &to).expect("copy");
    }
    let validate = || {
        let out = Command::new(cli_binary())
            .args(["config", "validate", "-c"])
            .arg(dir.join("overwatch.yaml"))
            .output()
            .expect("cli");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = validate();
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("(1 zones, 2 regions, 2 servers, 2 domains)"),
        "{stdout}"
    );

    // The merged file answers: both included regions' servers for www.
    let node = Overwatch::start(
        &dir,
        &std::fs::read_to_string(dir.join("overwatch.yaml")).expect("read"),
    );
    assert_eq!(
        node.dig(&["www.split.example", "A"]).data("A"),
        ["192.0.2.1", "192.0.2.2"]
    );
    drop(node);

    // A problem in an included file names that file and its own line.
    std::fs::write(
        dir.join("domains/www.yaml"),
        "domains:\n  - name: www.split.example\n    routing_algorithm: round-robin\n    regions: [us, nowhere]\n",
    )
    .expect("write");
    let (code, _, stderr) = validate();
    assert_eq!(code, Some(2), "{stderr}");
    let www = dir.join("domains/www.yaml").display().to_string();
    assert!(
        stderr.starts_with(&format!(
            "{www}:4:19: domains[www.split.example].regions: no region named \"nowhere\""
        )),
        "{stderr}"
    );
    // Keys only the main file may set are refused in an included one, by name.
    std::fs::write(dir.join("domains/www.yaml"), "dns:\n  default_ttl: 5\n").expect("write");
    let (code, _, stderr) = validate();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.starts_with(&format!("{www}:1:1: unknown field `dns`")),
        "{stderr}"
    );
}

#[test]
fn servers_named_by_host_name_are_resolved_and_an_unresolvable_one_is_not_fatal() {
    let dir = TempDir::new("compat-hostnames");
    let backend = Backend::start("127.0.0.1");
    let yaml = format!(
        "mode: overwatch\noverwatch:\n  validation: {{enabled: false}}\ndns:\n  listen_address: \"127.0.0.1:0\"\nregions:\n  - name: r\n    servers:\n      - {{address: localhost, port: {port}, service: app.names.test}}\n      - {{address: no-such-host.invalid, port: 80, service: app.names.test}}\ndomains:\n  - name: app.names.test\n    routing_algorithm: rr\n    regions: [r]\napi:\n  address: 127.0.0.1:0\nmetrics:\n  address: 127.0.0.1:0\n",
        port = backend.addr.port()
    );
    let node = Overwatch::start(&dir, &yaml);
    assert_eq!(node.dig(&["app.names.test", "A"]).data("A"), ["127.0.0.1"]);
    let output = node.process.output();
    assert!(
        output.contains(
            "no-such-host.invalid: does not resolve now; left out of answers until it does"
        ),
        "{output}"
    );
    // Not a host name either: a clear error, exit 2.
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        yaml.replace("address: localhost", "address: \"not a host!\""),
    )
    .expect("write");
    let out = Command::new(cli_binary())
        .args(["config", "validate"])
        .arg(&bad)
        .output()
        .expect("cli");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not an IP address or a host name"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn overwatch_nodes_by_host_name_are_resolved_when_used_and_never_fatal() {
    let dir = TempDir::new("compat-agent-names");
    let overwatch = "mode: overwatch\noverwatch:\n  agent_tokens:\n    app.demo.local: demo-token-0123456789\n  gossip:\n    bind_address: \"127.0.0.1:0\"\n    encryption_key: \"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\"\n  validation:\n    enabled: false\ndns:\n  listen_address: \"127.0.0.1:0\"\nregions:\n  - name: us-east-1\ndomains:\n  - name: app.demo.local\n    routing_algorithm: rr\n    regions: [us-east-1]\napi:\n  address: 127.0.0.1:0\nmetrics:\n  address: 127.0.0.1:0\n";
    let node = Overwatch::start(&dir, overwatch);
    let port = node.gossip.expect("gossip").port();
    let backend = Backend::start("127.0.0.1");
    // `localhost:PORT`, as OpenGSLB files name overwatch nodes by host name.
    let named = opengslb_agent(
        &dir,
        "named",
        "app.demo.local",
        &backend,
        &format!("localhost:{port}"),
    );
    named.wait_for_line("overwatch hears this agent", Duration::from_secs(15));
    poll_until(Duration::from_secs(10), "its backend in DNS", || {
        (node.dig(&["app.demo.local", "A"]).data("A") == ["127.0.0.1"]).then_some(())
    });
    // A name that does not resolve: the agent runs, says so, and keeps trying.
    let other = Backend::start("127.0.0.2");
    let lost = opengslb_agent(
        &dir,
        "lost",
        "app.demo.local",
        &other,
        "no-such-host.invalid:7946",
    );
    let line = lost.wait_for_line("does not resolve now", Duration::from_secs(10));
    assert!(
        line.contains("WARN") && line.contains("no-such-host.invalid:7946"),
        "{line}"
    );
    lost.wait_for_line("cause=\"unreachable\"", Duration::from_secs(15));
}
