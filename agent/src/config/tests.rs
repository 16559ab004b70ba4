//! The agent's config files as operators write them, good and bad.

use super::*;

const GOOD: &str = "identity:\n  service_token: app-token-0123456789\n  region: eu-west\n  cert_path: /tmp/a.crt\n  key_path: /tmp/a.key\nbackends:\n  - service: app\n    address: 127.0.0.1\n    port: 8080\n    health_check:\n      type: http\n      path: /healthz\n      interval: 1s\n      timeout: 500ms\n      failure_threshold: 2\n      success_threshold: 1\npredictive:\n  enabled: true\n  cpu:\n    threshold: 90\n  memory:\n    threshold: 85\ngossip:\n  encryption_key: AAAA\n  overwatch_nodes: [\"127.0.0.1:7946\"]\n  bind_address: \"127.0.0.1:0\"\nheartbeat:\n  interval: 2s\nagent_check:\n  listen: \"127.0.0.1:7777\"\n  drain_file: /tmp/drain\n  timeframe: 500ms\n";

#[test]
fn a_good_file_is_read_with_defaults() {
    let c = parse("agent.yaml", GOOD).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((c.region.as_str(), c.backends.len()), ("eu-west", 1));
    let check = c.backends[0].check.as_ref().expect("check");
    assert_eq!(
        (
            check.kind,
            check.interval,
            check.timeout,
            check.fall,
            check.rise
        ),
        (
            CheckKind::Http,
            Duration::from_secs(1),
            Duration::from_millis(500),
            2,
            1
        )
    );
    assert_eq!(
        (
            c.predictive.cpu,
            c.predictive.memory,
            c.predictive.error_rate
        ),
        (Some(90.0), Some(85.0), None)
    );
    assert_eq!(c.overwatch_nodes, ["127.0.0.1:7946"]);
    assert_eq!(c.heartbeat, Duration::from_secs(2));
    assert_eq!(c.agent_check, Some("127.0.0.1:7777".parse().expect("addr")));
    assert_eq!(c.timeframe, Duration::from_millis(500));
    assert_eq!(c.backends[0].weight, 100);
}

#[test]
fn the_shipped_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/agent.yaml");
    let c = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (c.region.as_str(), c.backends.len(), c.overwatch_nodes.len()),
        ("us-east", 1, 3)
    );
    assert!(c.predictive.cpu.is_some() && c.predictive.error_rate.is_some());
    c.encryption_key
        .expect("the example has a key")
        .keys()
        .expect("the example key is well-formed");
    let l = c.latency.expect("latency learning on in the example");
    assert_eq!(
        (
            l.table.ipv4_prefix,
            l.table.ipv6_prefix,
            l.table.max_subnets,
            l.min_samples
        ),
        (24, 48, 100_000, 5)
    );
    assert_eq!(l.table.subnet_ttl, Duration::from_secs(168 * 3600));
    assert_eq!(c.metrics, Some("127.0.0.1:9101".parse().expect("addr")));
}

#[test]
fn metrics_are_off_unless_enabled_and_the_address_is_checked() {
    assert_eq!(parse("a.yaml", GOOD).expect("valid").metrics, None);
    let on = parse("a.yaml", &format!("{GOOD}metrics:\n  enabled: true\n")).expect("valid");
    assert_eq!(on.metrics, Some("127.0.0.1:9090".parse().expect("addr")));
    let err = parse(
        "a.yaml",
        &format!("{GOOD}metrics:\n  enabled: true\n  address: nowhere\n"),
    )
    .expect_err("bad address");
    assert!(
        err.to_string()
            .contains("metrics.address: \"nowhere\" is not :PORT or IP:PORT"),
        "{err}"
    );
}

#[test]
fn latency_learning_values_are_checked_at_their_place() {
    let text = format!(
        "{GOOD}latency_learning:\n  enabled: true\n  ipv4_prefix: 33\n  ewma_alpha: 0\n  max_subnets: 0\n  poll_interval: soon\n"
    );
    let err = parse("a.yaml", &text).expect_err("bad values");
    let text = err.to_string();
    for needle in [
        "latency_learning.ipv4_prefix: must be 1 to 32",
        "latency_learning.ewma_alpha: must be more than 0 and at most 1",
        "latency_learning.max_subnets: must be 1 or more",
        "latency_learning.poll_interval: invalid duration",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    let off = parse(
        "a.yaml",
        &format!("{GOOD}latency_learning:\n  enabled: false\n"),
    )
    .expect("valid");
    assert!(off.latency.is_none());
}

#[test]
fn durations() {
    assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    for bad in ["", "5", "5d", "ms", "1.5s"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}

#[test]
fn problems_are_reported_at_their_place() {
    let text = GOOD
        .replace("app-token-0123456789", "short")
        .replace("address: 127.0.0.1", "address: nowhere")
        .replace("type: http", "type: icmp");
    let err = parse("agent.yaml", &text).expect_err("bad");
    let lines: Vec<String> = err.to_string().lines().map(str::to_owned).collect();
    assert!(
        lines[0].starts_with("agent.yaml:2:18: identity.service_token: must be at least 16"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("agent.yaml:8:14: backends[].address: \"nowhere\""),
        "{lines:?}"
    );
    let err =
        parse("agent.yaml", &GOOD.replace("heartbeat:", "heartbeet:")).expect_err("unknown key");
    assert!(
        err.to_string()
            .starts_with("agent.yaml:27:1: unknown field `heartbeet`"),
        "{err}"
    );
}

/// `GOOD` in OpenGSLB v1.1's shape: `mode: agent`, every key under `agent:`.
fn nested(extra_top: &str) -> String {
    let indented: String = GOOD.lines().map(|l| format!("  {l}\n")).collect();
    format!("mode: agent\nagent:\n{indented}{extra_top}")
}

#[test]
fn opengslb_v1_files_load_unchanged() {
    let flat = parse("a.yaml", GOOD).expect("flat");
    let text = nested(
        "metrics:\n  enabled: true\n  address: \"127.0.0.1:9100\"\nlogging:\n  level: debug\n  format: json\n",
    );
    let c = parse("a.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        AgentConfig {
            metrics: None,
            logging: Logging::default(),
            ..c.clone()
        },
        flat,
        "the same agent either way"
    );
    assert_eq!(c.metrics, Some("127.0.0.1:9100".parse().expect("addr")));
    assert_eq!(
        c.logging,
        Logging {
            level: "debug".into(),
            json: true
        }
    );
}

#[test]
fn the_mode_must_be_agent_and_the_shapes_do_not_mix() {
    let err = parse(
        "a.yaml",
        &nested("").replace("mode: agent", "mode: overwatch"),
    )
    .expect_err("overwatch file");
    assert!(
        err.to_string()
            .starts_with("a.yaml:1:7: mode: \"overwatch\": this file is for opengslb-overwatch"),
        "{err}"
    );
    let mixed = format!("{}backends: []\n", nested("")).replace(
        "backends: []\n",
        "identity:\n  service_token: x\n  region: y\n",
    );
    let err = parse("a.yaml", &mixed).expect_err("mixed");
    assert!(
        err.to_string().contains("both under agent: and outside it"),
        "{err}"
    );
    let err = parse("a.yaml", "mode: agent\nagent:\n  backends: []\n").expect_err("empty");
    assert!(
        err.to_string().contains("identity and gossip are missing"),
        "{err}"
    );
    let err = parse("a.yaml", &format!("{GOOD}logging:\n  format: yaml\n")).expect_err("format");
    assert!(
        err.to_string()
            .contains("logging.format: \"yaml\" is not json or text"),
        "{err}"
    );
}

#[test]
fn untyped_checks_are_http_and_no_op_keys_are_warned_by_name() {
    let text = GOOD
        .replace("      type: http\n", "")
        .replace(
            "      interval: 1s\n      timeout: 500ms\n",
            "      interval: 1s\n      timeout: 3s\n",
        )
        .replace(
            "    threshold: 90\n",
            "    threshold: 90\n    bleed_duration: 30s\n",
        )
        .replace(
            "predictive:\n  enabled: true\n",
            "predictive:\n  enabled: true\n  check_interval: 10s\n",
        );
    let c = parse("a.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    let check = c.backends[0].check.as_ref().expect("check");
    assert_eq!(check.kind, CheckKind::Http, "no type: http, as in OpenGSLB");
    assert_eq!(
        check.timeout,
        Duration::from_secs(3),
        "longer than the interval: kept"
    );
    let warnings = c.warnings.join("\n");
    for needle in [
        "health_check.timeout 3s is longer than its interval 1s",
        "predictive.cpu.bleed_duration (30s) is accepted and has no effect",
        "predictive.check_interval (10s) is accepted and has no effect",
    ] {
        assert!(warnings.contains(needle), "{needle}: {warnings}");
    }
    assert!(parse("a.yaml", GOOD).expect("good").warnings.is_empty());
}
