//! The agent's config files as operators write them, good and bad.

use std::net::SocketAddr;

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
    assert_eq!(
        c.overwatch_nodes,
        ["127.0.0.1:7946".parse::<SocketAddr>().expect("addr")]
    );
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
