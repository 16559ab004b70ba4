//! End to end with a real haproxy: what its runtime API and its clients see while the agent
//! drains, maintains and readies a server.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use opengslb_tests::haproxy::{
    self, ADMIN_FDRAIN, ADMIN_FMAINT, Haproxy, OP_RUNNING, http_get_unix,
};
use opengslb_tests::{
    AgentHost, TempDir, agent_check, http_backend, parse_reply, poll_until, remove, touch,
    workspace_root,
};

/// haproxy's agent-inter in this test; the issue allows 3 intervals to react.
const AGENT_INTER: Duration = Duration::from_millis(500);

/// The weight the agent says right now.
fn agent_weight(host: &AgentHost) -> u32 {
    let reply = agent_check(host.agent.addr, b"").expect("agent reply");
    u32::from(parse_reply(&reply).unwrap_or_else(|| panic!("{reply:?}")).0)
}

/// Whether both backends answer requests through haproxy's frontend: up to 300
/// requests, stopping once both have. Their weights come from CPU idle time, which a
/// loaded machine can set far apart (say 40 and 3); twenty requests could then all reach
/// one of them while both are in rotation.
fn both_serve(frontend: &std::path::Path) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..300 {
        seen.insert(http_get_unix(frontend).expect("request through haproxy"));
        if seen.len() == 2 {
            break;
        }
    }
    seen
}

/// Which backends answer `n` requests through haproxy's frontend.
fn served_by(frontend: &std::path::Path, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|_| http_get_unix(frontend).expect("request through haproxy"))
        .collect()
}

#[test]
fn haproxy_follows_the_agent_drain_maint_and_ready() {
    let dir = TempDir::new("haproxy");
    // A long timeframe keeps the weight steady enough to compare with haproxy's.
    let (s1, s2) = (
        AgentHost::start(&dir, "s1", 60_000),
        AgentHost::start(&dir, "s2", 60_000),
    );
    let (web1, web2) = (http_backend("s1"), http_backend("s2"));
    let frontend = dir.join("frontend.sock");
    let inter = AGENT_INTER.as_millis();
    let config = format!(
        "global\n\
         \x20   stats socket {dir}/admin.sock level admin\n\
         \x20   log stderr format short local0 info\n\
         defaults\n\
         \x20   mode http\n\
         \x20   log global\n\
         \x20   option log-health-checks\n\
         \x20   timeout connect 1s\n\
         \x20   timeout client 5s\n\
         \x20   timeout server 5s\n\
         frontend fe\n\
         \x20   bind unix@{frontend}\n\
         \x20   default_backend app\n\
         backend app\n\
         \x20   balance roundrobin\n\
         \x20   server s1 {web1} weight 100 check inter {inter}ms agent-check agent-addr 127.0.0.1 agent-port {p1} agent-inter {inter}ms\n\
         \x20   server s2 {web2} weight 100 check inter {inter}ms agent-check agent-addr 127.0.0.1 agent-port {p2} agent-inter {inter}ms\n",
        dir = dir.path().display(),
        frontend = frontend.display(),
        p1 = s1.agent.addr.port(),
        p2 = s2.agent.addr.port(),
    );
    let haproxy = Haproxy::start(dir.path(), &config);
    let settle = Duration::from_secs(10);

    // Both up, each with the weight its agent reports (not haproxy's default).
    for (name, host) in [("s1", &s1), ("s2", &s2)] {
        poll_until(
            settle,
            &format!("{name} UP with its agent's weight"),
            || {
                let state = haproxy.servers("app").remove(name)?;
                let want = agent_weight(host);
                (state.op_state == OP_RUNNING
                    && state.admin_state == 0
                    && state.uweight == want
                    && state.iweight == 100)
                    .then_some(())
            },
        );
    }
    assert_eq!(
        both_serve(&frontend),
        BTreeSet::from(["s1".into(), "s2".into()])
    );

    // Drain file → DRAIN within 3 agent intervals, and no new requests to s1.
    let reaction = 3 * AGENT_INTER;
    touch(&s1.drain);
    let t = Instant::now();
    poll_until(reaction, "s1 in DRAIN", || {
        (haproxy.servers("app")["s1"].admin_state & ADMIN_FDRAIN != 0).then_some(())
    });
    eprintln!("drain seen by haproxy after {:?}", t.elapsed());
    assert_eq!(haproxy.stat("app", "s1")["status"], "DRAIN (agent)");
    assert_eq!(served_by(&frontend, 20), BTreeSet::from(["s2".into()]));

    // Maint file (drain still there) → MAINT: maint wins.
    touch(&s1.maint);
    let t = Instant::now();
    poll_until(reaction, "s1 in MAINT", || {
        (haproxy.servers("app")["s1"].admin_state & ADMIN_FMAINT != 0).then_some(())
    });
    eprintln!("maint seen by haproxy after {:?}", t.elapsed());
    assert_eq!(haproxy.stat("app", "s1")["status"], "MAINT");
    assert_eq!(served_by(&frontend, 20), BTreeSet::from(["s2".into()]));

    // Remove both → back UP with the agent's weight, and s1 serves again.
    remove(&s1.maint);
    remove(&s1.drain);
    poll_until(settle, "s1 back UP with its agent's weight", || {
        let state = haproxy.servers("app").remove("s1")?;
        (state.op_state == OP_RUNNING
            && state.admin_state == 0
            && state.uweight == agent_weight(&s1))
        .then_some(())
    });
    assert_eq!(
        both_serve(&frontend),
        BTreeSet::from(["s1".into(), "s2".into()])
    );

    // Maint from nothing, on the other server: MAINT directly, then ready again.
    touch(&s2.maint);
    poll_until(reaction, "s2 in MAINT", || {
        (haproxy.servers("app")["s2"].admin_state & ADMIN_FMAINT != 0).then_some(())
    });
    assert_eq!(served_by(&frontend, 20), BTreeSet::from(["s1".into()]));
    remove(&s2.maint);
    poll_until(settle, "s2 back UP", || {
        let state = haproxy.servers("app").remove("s2")?;
        (state.op_state == OP_RUNNING && state.admin_state == 0).then_some(())
    });
    let log = haproxy.output();
    for transition in [
        "Server app/s1 enters drain state",
        "Server app/s1 is going DOWN for maintenance",
        "Server app/s1 is UP/READY (leaving forced maintenance)",
    ] {
        assert!(
            log.contains(transition),
            "haproxy logs `{transition}`:\n{log}"
        );
    }
}

#[test]
fn the_shipped_haproxy_example_is_valid() {
    let cfg = workspace_root().join("haproxy/haproxy.cfg");
    let output = Command::new(haproxy::binary())
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .output()
        .expect("run haproxy -c");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "haproxy -c -f {}:\n{text}",
        cfg.display()
    );
    let example = std::fs::read_to_string(&cfg).expect("read example");
    for needed in [
        "weight 100",
        "agent-check",
        "agent-port 7777",
        "agent-inter 2s",
        "stats socket",
    ] {
        assert!(example.contains(needed), "the example must show `{needed}`");
    }
}
