//! An agent knows whether overwatch hears it: each overwatch node answers every report
//! with a verdict, a node that cannot open the agent's packets says so, and silence is
//! noticed. The agent says which, at WARN, on its own metrics endpoint, and in its
//! agent-check log: one agent per cause (a wrong gossip key, a wrong service token, no
//! overwatch at all) beside one that is heard.

use std::net::SocketAddr;
use std::time::Duration;

use opengslb_tests::gslb::{AgentDaemon, TOKEN, cluster_key, overwatch_yaml};
use opengslb_tests::overwatch::{Backend, Overwatch, http_get};
use opengslb_tests::{TempDir, agent_check, poll_until};

const METRICS: &str = "metrics:\n  enabled: true\n  address: \"127.0.0.1:0\"\n";

/// The agent's metrics endpoint, from its log line.
fn metrics_addr(agent: &AgentDaemon) -> SocketAddr {
    let line = agent
        .process
        .wait_for_line("metrics listening", Duration::from_secs(10));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no addr in {line:?}"))
}

/// One series' value on the agent's `/metrics`.
fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Waits for the agent's WARN naming `cause`, and for the metric to say the same.
fn expect_problem(agent: &AgentDaemon, cause: &str, words: &[&str]) {
    let line = agent
        .process
        .wait_for_line(&format!("cause=\"{cause}\""), Duration::from_secs(20));
    assert!(line.contains("WARN"), "{line}");
    for word in words {
        assert!(line.contains(word), "{word:?} not in {line}");
    }
    let addr = metrics_addr(agent);
    poll_until(Duration::from_secs(5), "the problem on /metrics", || {
        (metric(
            addr,
            &format!("opengslb_agent_overwatch_problem{{cause=\"{cause}\"}}"),
        ) == Some(1.0))
        .then_some(())
    });
    assert_eq!(metric(addr, "opengslb_agent_overwatch_heard"), Some(0.0));
    assert!(
        !agent
            .process
            .output()
            .contains("overwatch hears this agent"),
        "{}",
        agent.process.output()
    );
}

#[test]
fn the_agent_says_whether_overwatch_hears_it_and_why_not() {
    let dir = TempDir::new("hearing");
    let key = cluster_key(21);
    let overwatch = Overwatch::start(&dir, &overwatch_yaml("ow-1", &key, &[]));
    let seed = overwatch.gossip.expect("gossip");
    let backends = [
        Backend::start("127.0.0.1"),
        Backend::start("127.0.0.2"),
        Backend::start("127.0.0.3"),
    ];
    let start = |name: &str, backend: &Backend, seeds: &[SocketAddr], key: &str, token: &str| {
        AgentDaemon::start_with(&dir, name, backend.addr, seeds, key, token, METRICS)
    };

    // Heard: the agent says so once, and every problem gauge is 0.
    let heard = start("heard", &backends[0], &[seed], &key, TOKEN);
    heard
        .process
        .wait_for_line("overwatch hears this agent", Duration::from_secs(15));
    let addr = metrics_addr(&heard);
    poll_until(Duration::from_secs(5), "heard on /metrics", || {
        (metric(addr, "opengslb_agent_overwatch_heard") == Some(1.0)).then_some(())
    });
    assert_eq!(
        metric(addr, "opengslb_agent_overwatch_nodes_accepting"),
        Some(1.0)
    );
    for cause in ["key", "token", "pin", "unreachable"] {
        assert_eq!(
            metric(
                addr,
                &format!("opengslb_agent_overwatch_problem{{cause=\"{cause}\"}}")
            ),
            Some(0.0),
            "{cause}"
        );
    }
    let (status, body) = http_get(addr, "/health");
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    // A wrong service token: overwatch refuses the reports and says why.
    let wrong_token = start(
        "wrong-token",
        &backends[1],
        &[seed],
        &key,
        "not-the-app-token-0123456789",
    );
    expect_problem(
        &wrong_token,
        "token",
        &[
            "refused",
            "identity.service_token",
            "overwatch.agent_tokens",
        ],
    );
    let counted = metric(
        metrics_addr(&wrong_token),
        "opengslb_agent_reports_rejected_total{cause=\"token\"}",
    );
    assert!(counted.is_some_and(|n| n >= 1.0), "{counted:?}");

    // A wrong gossip key: overwatch cannot open the packets and says only that.
    let wrong_key = start("wrong-key", &backends[2], &[seed], &cluster_key(22), TOKEN);
    expect_problem(
        &wrong_key,
        "key",
        &["decrypt failed", "gossip.encryption_key", &seed.to_string()],
    );

    // No overwatch at all: a port nothing listens on.
    let nobody = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free port");
    let alone = start("alone", &backends[0], &[nobody], &key, TOKEN);
    expect_problem(
        &alone,
        "unreachable",
        &["timeout", "gossip.overwatch_nodes", &nobody.to_string()],
    );

    // Overwatch only ever admitted the heard agent's backend.
    let (_, body) = http_get(overwatch.api.expect("api"), "/api/v1/overwatch/backends");
    let backends_seen: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(backends_seen["total"], 1, "{backends_seen}");
    assert_eq!(
        backends_seen["backends"][0]["agent_id"],
        heard.agent_id.as_str()
    );
}

#[test]
fn the_agent_check_log_says_whether_overwatch_hears_the_agent() {
    let dir = TempDir::new("hearing-log");
    let key = cluster_key(23);
    let overwatch = Overwatch::start(&dir, &overwatch_yaml("ow-1", &key, &[]));
    let backend = Backend::start("127.0.0.1");
    let agent = AgentDaemon::start_with(
        &dir,
        "logged",
        backend.addr,
        &[overwatch.gossip.expect("gossip")],
        &key,
        "not-the-app-token-0123456789",
        "",
    );
    // log_requests through the config file.
    let config = std::fs::read_to_string(&agent.config).expect("config");
    assert!(config.contains("agent_check:\n"), "{config}");
    drop(agent);
    let config = config.replace("agent_check:\n", "agent_check:\n  log_requests: true\n");
    std::fs::write(dir.join("logged.yaml"), &config).expect("write");
    let mut command = std::process::Command::new(opengslb_tests::agent_binary());
    command.arg("--config").arg(dir.join("logged.yaml"));
    let process = opengslb_tests::process::Spawned::start("agent logged", command);
    let addr = opengslb_tests::listening_addr(&process);
    process.wait_for_line("cause=\"token\"", Duration::from_secs(20));
    agent_check(addr, b"").expect("agent-check");
    let line = process.wait_for_line("agent-check", Duration::from_secs(5));
    assert!(line.contains("overwatch=\"token\""), "{line}");
}
