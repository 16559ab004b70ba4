//! End to end: what operators see of an overwatch node — ECS geolocation with a real
//! database file, SIGHUP reloads, the API, the CLI, /metrics, and config errors.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opengslb_overwatch::api::types;
use opengslb_tests::overwatch::{
    Backend, Overwatch, cli_binary, http_get, overwatch_binary, query_packet, rcode, udp_exchange,
};
use opengslb_tests::process::Spawned;
use opengslb_tests::{TempDir, poll_until};

const LISTENERS: &str = "api:\n  address: 127.0.0.1:0\nmetrics:\n  address: 127.0.0.1:0\n";

#[test]
fn ecs_from_two_subnets_reaches_two_regions_with_honest_scopes() {
    let dir = TempDir::new("ops-ecs");
    let db = dir.join("country.mmdb");
    std::fs::write(&db, opengslb_tests::country_mmdb()).expect("write mmdb");
    let node = Overwatch::start(
        &dir,
        &format!(
            "overwatch:\n  validation:\n    enabled: false\n  geolocation:\n    database_path: {}\n    default_region: us\ndns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [geo.test]\nregions:\n  - name: us\n    servers: [{{address: 127.0.0.11}}]\n    countries: [US]\n  - name: eu\n    servers: [{{address: 127.0.0.22}}]\n    continents: [EU]\ndomains:\n  - name: www.geo.test\n    routing_algorithm: geolocation\n    services: [app]\n    regions: [us, eu]\n  - name: rr.geo.test\n    routing_algorithm: round-robin\n    services: [app]\n    regions: [us, eu]\n{LISTENERS}",
            db.display()
        ),
    );
    let us = node.dig(&["www.geo.test", "A", "+subnet=1.0.5.0/24"]);
    assert_eq!(us.data("A"), ["127.0.0.11"], "{}", us.raw);
    assert_eq!(
        us.client_subnet.as_deref(),
        Some("1.0.5.0/24/16"),
        "scope = the database network /16"
    );
    let eu = node.dig(&["www.geo.test", "A", "+subnet=2.3.4.0/24"]);
    assert_eq!(eu.data("A"), ["127.0.0.22"], "{}", eu.raw);
    assert_eq!(eu.client_subnet.as_deref(), Some("2.3.4.0/24/8"));
    // Not client-dependent: scope 0.
    let rr = node.dig(&["rr.geo.test", "A", "+subnet=2.3.4.0/24"]);
    assert_eq!(
        rr.client_subnet.as_deref(),
        Some("2.3.4.0/24/0"),
        "{}",
        rr.raw
    );
    // Without ECS the resolver's own address decides (loopback: not in the database → default).
    let plain = node.dig(&["www.geo.test", "A"]);
    assert_eq!(
        (plain.data("A"), plain.client_subnet),
        (vec!["127.0.0.11".to_owned()], None)
    );
}

fn reload_config(extra_domain: bool) -> String {
    let extra = if extra_domain {
        "  - name: b.reload.test\n    routing_algorithm: round-robin\n    services: [app]\n    regions: [r]\n"
    } else {
        ""
    };
    format!(
        "overwatch:\n  validation:\n    enabled: false\ndns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [reload.test]\nregions:\n  - name: r\n    servers: [{{address: 127.0.0.5}}]\ndomains:\n  - name: a.reload.test\n    routing_algorithm: round-robin\n    services: [app]\n    regions: [r]\n{extra}{LISTENERS}"
    )
}

#[test]
fn sighup_swaps_a_good_file_without_dropping_queries_and_keeps_running_on_a_bad_one() {
    let dir = TempDir::new("ops-reload");
    let node = Overwatch::start(&dir, &reload_config(false));
    assert_eq!(node.dig(&["b.reload.test", "A"]).status, "NXDOMAIN");

    // A client querying back to back for the whole reload.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client = {
        let (stop, sent, failed, dns) = (stop.clone(), sent.clone(), failed.clone(), node.dns);
        std::thread::spawn(move || {
            let mut id = 0u16;
            while !stop.load(Ordering::Relaxed) {
                id = id.wrapping_add(1);
                sent.fetch_add(1, Ordering::Relaxed);
                let ok = udp_exchange(
                    dns,
                    &query_packet(id, "a.reload.test", 1, false),
                    Duration::from_secs(1),
                )
                .is_some_and(|r| rcode(&r) == 0 && r[..2] == id.to_be_bytes());
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    poll_until(Duration::from_secs(5), "the client to be querying", || {
        (sent.load(Ordering::Relaxed) > 50).then_some(())
    });

    std::fs::write(&node.config, reload_config(true)).expect("rewrite");
    node.process.signal(libc::SIGHUP);
    poll_until(Duration::from_secs(5), "b.reload.test after reload", || {
        (node.dig(&["b.reload.test", "A"]).data("A") == ["127.0.0.5"]).then_some(())
    });
    node.process
        .wait_for_line("configuration reloaded", Duration::from_secs(5));

    std::fs::write(
        &node.config,
        reload_config(true).replace(
            "  zones: [reload.test]\n",
            "  zones: [reload.test]\n  bogus_key: 1\n",
        ),
    )
    .expect("break");
    node.process.signal(libc::SIGHUP);
    node.process
        .wait_for_line("configuration reload failed", Duration::from_secs(5));
    // The message spans lines: wait for the one that names the place, not just the first.
    let expected = format!("{}:7:3: unknown field `bogus_key`", node.config.display());
    node.process
        .wait_for_line(&expected, Duration::from_secs(5));
    assert_eq!(
        node.dig(&["b.reload.test", "A"]).data("A"),
        ["127.0.0.5"],
        "the running configuration stays"
    );

    stop.store(true, Ordering::Relaxed);
    client.join().expect("client");
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{sent} queries during two reloads, {failed} failed");
    assert_eq!(
        failed, 0,
        "no query may be dropped by a reload ({sent} sent)"
    );

    let (_, metrics) = http_get(node.metrics.expect("metrics"), "/metrics");
    assert!(
        metrics.contains("opengslb_config_reloads_total{result=\"success\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("opengslb_config_reloads_total{result=\"failure\"} 1"),
        "{metrics}"
    );
}

/// One node with three HTTP-checked backends, the second one sick.
fn node_with_a_sick_backend(dir: &TempDir) -> (Overwatch, [Backend; 3]) {
    let backends = [
        Backend::start("127.0.0.1"),
        Backend::start("127.0.0.2"),
        Backend::start("127.0.0.3"),
    ];
    backends[1].set_healthy(false);
    let server = |b: &Backend, service: &str| {
        format!(
            "{{address: \"{}\", port: {}, service: {service}}}",
            b.addr.ip(),
            b.addr.port()
        )
    };
    let yaml = format!(
        "dns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [ops.test]\nregions:\n  - name: east\n    servers: [{}, {}]\n    health_check: {{type: http, path: /health, interval: 200ms, timeout: 150ms}}\n  - name: west\n    servers: [{}]\n    health_check: {{type: tcp, interval: 200ms, timeout: 150ms}}\ndomains:\n  - name: app.ops.test\n    routing_algorithm: weighted\n    services: [web, api]\n    regions: [east, west]\n{LISTENERS}",
        server(&backends[0], "web"),
        server(&backends[1], "web"),
        server(&backends[2], "api"),
    );
    let node = Overwatch::start(dir, &yaml);
    poll_until(
        Duration::from_secs(10),
        "127.0.0.2 marked unhealthy",
        || {
            let (_, body) = node.get("/api/v1/overwatch/backends?status=unhealthy");
            (body["total"] == 1).then_some(())
        },
    );
    (node, backends)
}

#[test]
fn api_shows_every_layer_and_answers_errors_in_json() {
    let dir = TempDir::new("ops-api");
    let (node, _backends) = node_with_a_sick_backend(&dir);

    let (status, all) = node.get("/api/v1/overwatch/backends");
    assert_eq!((status, all["total"].as_u64()), (200, Some(3)));
    let (_, sick) = node.get("/api/v1/overwatch/backends?status=unhealthy");
    let b = &sick["backends"][0];
    assert_eq!(b["address"], "127.0.0.2");
    assert_eq!(b["effective_status"], "unhealthy");
    assert_eq!(b["validation_state"], "unhealthy");
    assert_eq!(b["validation_healthy"], false);
    assert!(
        b["validation_error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{b}"
    );
    assert!(
        b["effective_reason"]
            .as_str()
            .is_some_and(|e| e.starts_with("validation:")),
        "{b}"
    );
    for layer in [
        "agent_id",
        "agent_healthy",
        "agent_last_seen",
        "override_status",
        "override_reason",
        "validation_last_check",
        "last_change",
        "rtt_ms",
    ] {
        assert!(
            b.get(layer).is_some(),
            "every layer is shown: {layer} missing in {b}"
        );
    }
    let (_, web) = node.get("/api/v1/overwatch/backends?service=web&region=east&status=healthy");
    assert_eq!(web["total"], 1);

    // Read as the API's own types (the ones opengslb-cli parses): every field present,
    // every type right.
    let stats: types::Stats = typed(node.get("/api/v1/overwatch/stats"));
    assert_eq!(
        (
            stats.total_backends,
            stats.healthy_backends,
            stats.unhealthy_backends
        ),
        (3, 2, 1)
    );
    assert!(stats.validation_enabled);

    let domains: types::DomainList = typed(node.get("/api/v1/domains"));
    let d = &domains.domains[0];
    assert_eq!(
        (
            d.name.as_str(),
            d.routing_algorithm.as_str(),
            d.healthy_backends
        ),
        ("app.ops.test", "weighted", 2)
    );

    let servers: types::ServerList = typed(node.get("/api/v1/health/servers"));
    assert_eq!(servers.servers.len(), 3);
    let backends: types::BackendList = typed(node.get("/api/v1/overwatch/backends"));
    assert_eq!(
        (backends.total, backends.backends.len()),
        (3, 3),
        "the list the CLI tabulates"
    );
    assert_eq!(
        node.get("/api/v1/ready"),
        (200, serde_json::json!({"status": "ready"}))
    );
    assert_eq!(node.get("/api/v1/live").0, 200);

    let (status, err) = node.get("/api/v1/overwatch/backends?status=bogus");
    assert_eq!(status, 400);
    let err: types::ErrorBody = typed((200, err));
    assert!(
        err.error.contains("\"bogus\" is not one of"),
        "{}",
        err.error
    );
    let (status, err) = node.get("/api/v1/overwatch/backends?colour=red");
    assert_eq!(status, 400, "{err}");
    let (status, err) = node.get("/api/v1/nothing-here");
    assert_eq!(status, 404);
    assert_eq!(err["error"], "no such endpoint: /api/v1/nothing-here");
}

#[test]
fn api_refuses_clients_outside_allowed_networks() {
    let dir = TempDir::new("ops-api-deny");
    let node = Overwatch::start(
        &dir,
        "overwatch:\n  validation:\n    enabled: false\ndns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [deny.test]\nregions:\n  - name: r\n    servers: [{address: 127.0.0.5}]\ndomains: []\napi:\n  address: 127.0.0.1:0\n  allowed_networks: [10.0.0.0/8]\nmetrics:\n  address: 127.0.0.1:0\n",
    );
    let (status, body) = node.get("/api/v1/overwatch/stats");
    assert_eq!(status, 403);
    assert_eq!(
        body["error"],
        "client 127.0.0.1 is not in api.allowed_networks"
    );
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(cli_binary())
        .args(args)
        .env_remove("OPENGSLB_API")
        .output()
        .expect("run opengslb-cli");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_prints_tables_json_and_one_line_errors() {
    let dir = TempDir::new("ops-cli");
    let (node, _backends) = node_with_a_sick_backend(&dir);
    let api = format!("http://{}", node.api.expect("api"));

    let (code, out, err) = cli(&["servers", "--api", &api]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("SERVICE")
            && lines[0].contains("STATUS")
            && lines[0].contains("REASON"),
        "{out}"
    );
    assert_eq!(lines.len(), 4, "header + 3 backends:\n{out}");
    let sick: Vec<&&str> = lines.iter().filter(|l| l.contains("unhealthy")).collect();
    assert_eq!(sick.len(), 1, "{out}");
    assert!(
        sick[0].contains("127.0.0.2:") && sick[0].contains("503"),
        "{out}"
    );

    let (code, out, _) = cli(&["servers", "--api", &api, "--status", "unhealthy"]);
    assert_eq!((code, out.lines().count()), (0, 2), "{out}");
    let (code, out, _) = cli(&["servers", "--api", &api, "--service", "api", "--json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(json["backends"][0]["address"], "127.0.0.3");

    let (code, out, _) = cli(&["stats", "--api", &api]);
    assert_eq!(code, 0);
    assert!(
        out.contains("healthy_backends     2") && out.contains("unhealthy_backends   1"),
        "{out}"
    );
    let (code, out, _) = cli(&["domains", "--api", &api]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("app.ops.test")
                && l.contains("weighted")
                && l.contains("2/3")),
        "{out}"
    );

    // $OPENGSLB_API is the default for --api.
    let out = Command::new(cli_binary())
        .args(["stats"])
        .env("OPENGSLB_API", &api)
        .output()
        .expect("cli");
    assert!(out.status.success());

    let (code, out, err) = cli(&["servers", "--api", &api, "--status", "bogus"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(
        err.contains("400") && err.contains("\"bogus\" is not one of"),
        "{err}"
    );

    let (code, out, err) = cli(&["servers", "--api", "http://127.0.0.1:1"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    assert!(
        err.starts_with("opengslb-cli: cannot reach the API at http://127.0.0.1:1: ")
            && err.to_lowercase().contains("refused"),
        "{err}"
    );
}

#[test]
fn cli_validates_config_files_offline() {
    let dir = TempDir::new("ops-validate");
    let example = opengslb_tests::workspace_root().join("examples/overwatch.yaml");
    let (code, out, err) = cli(&["config", "validate", example.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("valid (1 zones, 2 regions, 3 servers, 5 domains)"),
        "{out}"
    );
    // The demo's cluster files name certificates the demo makes with the CLI: made here
    // in a directory of the test's own, they validate.
    let certs = TempDir::new("ops-validate-certs");
    opengslb_tests::cluster::make_certs(&certs);
    for n in 1..=3 {
        let example =
            opengslb_tests::workspace_root().join(format!("examples/cluster/overwatch-{n}.yaml"));
        let text = std::fs::read_to_string(&example).expect("read the example");
        assert!(
            text.contains("/tmp/opengslb-demo/certs/"),
            "{}",
            example.display()
        );
        let node = dir.join(&format!("overwatch-{n}.yaml"));
        let text = text.replace(
            "/tmp/opengslb-demo/certs",
            &certs.path().display().to_string(),
        );
        std::fs::write(&node, text).expect("write");
        let (code, _, err) = cli(&["config", "validate", node.to_str().expect("utf-8")]);
        assert_eq!(code, 0, "{}: {err}", example.display());
    }
    let cluster = dir.join("cluster.yaml");
    std::fs::write(&cluster, "dns:\n  zones: [ok.test]\napi:\n  tokens:\n    a: same-token-0123456789\n    b: same-token-0123456789\ncluster:\n  node_id: 4\n  secret: short\n  election_timeout: 100ms\n  peers:\n    1: \"10.0.0.1:7947\"\n    2: \"nowhere\"\n").expect("write");
    let (code, _, err) = cli(&["config", "validate", cluster.to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{err}");
    for needle in [
        "api.tokens.b: the same token as api.tokens.a",
        "cluster.secret: must be at least 16 characters",
        "cluster.election_timeout: must be at least twice cluster.heartbeat_interval",
        "cluster.peers.2: \"nowhere\" is not HOST:PORT",
        "cluster.peers: has no entry for this node (4)",
        "cluster: the Raft RPC needs `tls: {ca, cert, key}` (make them with `opengslb-cli cluster certs",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }

    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "dns:\n  zones: [ok.test]\n  default_ttl: 0\ndomains:\n  - name: x.other.test\n    routing_algorithm: magic\n    regions: [nowhere]\n").expect("write");
    let (code, _, err) = cli(&["config", "validate", bad.to_str().expect("utf-8")]);
    assert_eq!(code, 2);
    let file = bad.display().to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "one line per problem:\n{err}");
    assert!(
        lines[0].starts_with(&format!("{file}:3:16: dns.default_ttl: must be 1 to")),
        "{err}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{file}:5:11: domains[].name: \"x.other.test\" is not inside any of dns.zones"
        )),
        "{err}"
    );
    assert!(
        lines[2].starts_with(&format!(
            "{file}:6:24: domains[x.other.test].routing_algorithm: \"magic\" is not one of"
        )),
        "{err}"
    );
    assert!(lines[3].starts_with(&format!("{file}:7:15: domains[x.other.test].regions: no region named \"nowhere\" (no regions are defined)")), "{err}");
}

#[test]
fn the_server_refuses_a_bad_file_with_exit_2() {
    let dir = TempDir::new("ops-badconfig");
    let bad = dir.join("overwatch.yaml");
    std::fs::write(&bad, "dns:\n  zones: [ok.test]\n  listen_adress: \":53\"\n").expect("write");
    let mut command = Command::new(overwatch_binary());
    command.arg("--config").arg(&bad);
    let (status, stdout, all) =
        Spawned::start("opengslb-overwatch (bad config)", command).finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2), "{all}");
    assert!(stdout.is_empty());
    assert!(
        all.starts_with(&format!(
            "{}:3:3: unknown field `listen_adress`",
            bad.display()
        )),
        "{all}"
    );

    // A data dir that cannot be created: exit 1, naming the key and the reason.
    let good = dir.join("good.yaml");
    std::fs::write(&good, "dns:\n  zones: [ok.test]\n  listen_address: \"127.0.0.1:0\"\napi:\n  enabled: false\nmetrics:\n  enabled: false\n").expect("write");
    let blocker = dir.join("a-file");
    std::fs::write(&blocker, "").expect("write");
    let mut command = Command::new(overwatch_binary());
    command
        .arg("--config")
        .arg(&good)
        .arg("--data-dir")
        .arg(blocker.join("state"));
    let (status, _, all) = Spawned::start("opengslb-overwatch (bad data dir)", command)
        .finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "{all}");
    assert!(
        all.contains("overwatch.data_dir: cannot create") && all.contains("a-file/state"),
        "{all}"
    );
}

/// Checks the Prometheus text exposition format line by line; returns the metric names.
fn parse_prometheus(text: &str) -> BTreeSet<String> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut names = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap_or("");
            let name = parts.next().unwrap_or("");
            assert!(valid_name(name), "bad metric name in {line:?}");
            if kind == "TYPE" {
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"]
                        .contains(&parts.next().unwrap_or("")),
                    "{line:?}"
                );
            } else {
                assert_eq!(kind, "HELP", "{line:?}");
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value in {line:?}"
        );
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
                for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("bad label {pair:?} in {line:?}"));
                    assert!(valid_name(k), "bad label name in {line:?}");
                    assert!(!v.trim_end_matches('"').contains('\n'));
                }
                name
            }
            None => series,
        };
        assert!(valid_name(name), "bad metric name in {line:?}");
        names.insert(name.to_owned());
    }
    names
}

#[test]
fn metrics_parse_as_prometheus_text_with_bounded_labels() {
    let dir = TempDir::new("ops-metrics");
    let (node, _backends) = node_with_a_sick_backend(&dir);
    for name in [
        "app.ops.test",
        "random-name-1.ops.test",
        "random-name-2.ops.test",
        "elsewhere.example",
    ] {
        node.dig(&[name, "A"]);
    }
    let (status, text) = http_get(node.metrics.expect("metrics"), "/metrics");
    assert_eq!(status, 200);
    let names = parse_prometheus(&text);
    for want in [
        "opengslb_dns_queries_total",
        "opengslb_dns_query_duration_seconds_bucket",
        "opengslb_routing_decisions_total",
        "opengslb_backends_total",
        "opengslb_backends_healthy",
        "opengslb_validation_checks_total",
        "opengslb_validation_check_duration_seconds_bucket",
    ] {
        assert!(
            names.contains(want),
            "{want} missing from /metrics:\n{text}"
        );
    }
    assert!(
        text.contains(
            "opengslb_dns_queries_total{domain=\"app.ops.test\",type=\"A\",status=\"NOERROR\"}"
        ),
        "{text}"
    );
    assert!(
        text.contains("opengslb_backends_healthy{service=\"web\"} 1"),
        "{text}"
    );
    assert!(
        !text.contains("random-name"),
        "raw query names never become labels"
    );
    assert!(!text.contains("elsewhere.example"));
    // The out-of-zone name is the one query the UDP fast path left to the hickory path.
    assert!(
        text.contains("opengslb_dns_fast_path_declined_total 1\n"),
        "{text}"
    );
}

/// A successful answer as the API type `T`; a failure names the status and the body.
fn typed<T: serde::de::DeserializeOwned>((status, body): (u16, serde_json::Value)) -> T {
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body.clone())
        .unwrap_or_else(|e| panic!("not the API's declared shape: {e}\n{body}"))
}
