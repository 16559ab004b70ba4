//! The Windows agent (`x86_64-pc-windows-gnu`, cross-built by scripts/windows-agent.sh),
//! run under Wine 8.0 on this Linux machine: the one-shot reply with the CPU weight from
//! `GetSystemTimes`, the agent-check server following drain and maint files named the
//! Windows way, a daemon reporting over encrypted gossip to the Linux overwatch (its
//! backend in the DNS answers, then out on drain, and out at once when Ctrl+C makes it
//! leave), and latency learning saying it is off
//! where `GetPerTcpConnectionEStats` does not exist (Wine has none).
//!
//! What only real Windows shows (README, "Windows agent"): the service control manager,
//! RTT from extended TCP statistics, ACLs on the key file.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opengslb_tests::gslb::{AgentDaemon, TOKEN, cluster_key, overwatch_yaml};
use opengslb_tests::overwatch::{Backend, Overwatch, http_get};
use opengslb_tests::process::Spawned;
use opengslb_tests::windows::{WindowsAgent, wine_path};
use opengslb_tests::{
    TempDir, agent_check, listening_addr, parse_reply, poll_until, remove, touch,
};

fn one_shot(agent: &WindowsAgent, args: &[&str]) -> (i32, String, String) {
    let mut command = agent.command();
    command.args(args);
    let (status, stdout, all) =
        Spawned::start("opengslb-agent.exe one-shot", command).finish(Duration::from_secs(60));
    (status.code().unwrap_or(-1), stdout, all)
}

#[test]
fn one_shot_prints_the_reply_line_with_the_weight_from_get_system_times() {
    let Some(agent) = WindowsAgent::find("one_shot_prints_the_reply_line") else {
        return;
    };
    let (code, stdout, all) = one_shot(&agent, &["-timeframe", "200"]);
    assert_eq!(code, 0, "{all}");
    let (_, state) =
        parse_reply(&stdout).unwrap_or_else(|| panic!("stdout must be `NN% ready\\n`: {stdout:?}"));
    assert_eq!(state, "ready");

    // Both cores busy for the whole window: GetSystemTimes (Wine's is the host's CPU
    // times) must see it, as /proc/stat does for the Linux agent.
    let stop = Arc::new(AtomicBool::new(false));
    let burners: Vec<_> = (0..2)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();
    let busy = one_shot(&agent, &["-timeframe", "1000"]);
    stop.store(true, Ordering::Relaxed);
    for burner in burners {
        burner.join().expect("burner");
    }
    let (code, stdout, all) = busy;
    assert_eq!(code, 0, "{all}");
    let (pct, _) = parse_reply(&stdout).unwrap_or_else(|| panic!("{stdout:?}"));
    assert!(pct <= 40, "both cores were busy, yet the weight is {pct}%");

    // Bad flags: the same usage error as on Linux, exit 2.
    let (code, stdout, all) = one_shot(&agent, &["-timeframe", "5"]);
    assert_eq!(code, 2, "{all}");
    assert!(stdout.is_empty() && all.contains("timeframe"), "{all}");
    // -systemd has no meaning on Windows: said, exit 2.
    let (code, _, all) = one_shot(&agent, &["-systemd"]);
    assert_eq!(code, 2, "{all}");
    assert!(all.contains("this system has none; use -port N"), "{all}");
}

#[test]
fn the_agent_check_reply_follows_drain_and_maint_files() {
    let Some(agent) = WindowsAgent::find("the_agent_check_reply_follows_drain_and_maint_files")
    else {
        return;
    };
    let dir = TempDir::new("win-agent-check");
    let (drain, maint) = (dir.join("drain"), dir.join("maint"));
    let mut command = agent.command();
    command.args([
        "-port",
        "0",
        "-listen",
        "127.0.0.1",
        "-timeframe",
        "200",
        "-drain-file",
        &wine_path(&drain),
        "-maint-file",
        &wine_path(&maint),
    ]);
    let process = Spawned::start("opengslb-agent.exe -port 0", command);
    let addr = listening_addr(&process);
    let state = || {
        let reply = agent_check(addr, b"").expect("agent-check connection");
        let (pct, state) = parse_reply(&reply).unwrap_or_else(|| panic!("reply {reply:?}"));
        assert!((1..=100).contains(&pct), "{reply:?}");
        state.to_owned()
    };
    assert_eq!(state(), "ready");
    let expect = |want: &str| {
        poll_until(Duration::from_secs(5), &format!("reply {want}"), || {
            (state() == want).then_some(())
        });
    };
    touch(&drain);
    expect("drain");
    touch(&maint);
    expect("maint"); // maint wins over drain
    remove(&maint);
    expect("drain");
    remove(&drain);
    expect("ready");
}

/// What `app.gslb.test A` answers.
fn answers(node: &Overwatch) -> BTreeSet<String> {
    node.dig(&["app.gslb.test", "A"])
        .data("A")
        .into_iter()
        .collect()
}

#[test]
fn a_windows_agent_reports_to_a_linux_overwatch_then_drains_out_of_dns() {
    let Some(agent) = WindowsAgent::find("a_windows_agent_reports_to_a_linux_overwatch") else {
        return;
    };
    let dir = TempDir::new("win-gossip");
    let key = cluster_key(11);
    let overwatch = Overwatch::start(&dir, &overwatch_yaml("ow-1", &key, &[]));
    let backend = Backend::start("127.0.0.1");
    // Latency learning on: on Wine there is no GetPerTcpConnectionEStats, so it must say
    // it is off, and everything else must go on.
    let latency = "latency_learning:\n  enabled: true\n  poll_interval: 500ms\n\
                   metrics:\n  enabled: true\n  address: \"127.0.0.1:0\"\n";
    let daemon = AgentDaemon::start_program(
        &dir,
        "win",
        backend.addr,
        &[overwatch.gossip.expect("gossip")],
        &key,
        TOKEN,
        latency,
        agent.command(),
    );
    let ours: BTreeSet<String> = ["127.0.0.1".to_owned()].into();
    poll_until(
        Duration::from_secs(20),
        "the Windows agent's backend in the DNS answers",
        || (answers(&overwatch) == ours).then_some(()),
    );
    let (_, agents) = overwatch.get("/api/v1/overwatch/agents");
    assert!(
        agents.to_string().contains(&daemon.agent_id),
        "overwatch must have pinned the Windows agent {}: {agents}",
        daemon.agent_id
    );

    // Its own /metrics: overwatch hears it, and its status is published.
    let line = daemon
        .process
        .wait_for_line("metrics listening", Duration::from_secs(10));
    let metrics: std::net::SocketAddr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no addr in {line:?}"));
    poll_until(
        Duration::from_secs(5),
        "opengslb_agent_overwatch_heard 1 on the Windows agent's /metrics",
        || {
            let (status, body) = http_get(metrics, "/metrics");
            (status == 200
                && body
                    .lines()
                    .any(|l| l == "opengslb_agent_overwatch_heard 1"))
            .then_some(())
        },
    );

    let off = daemon
        .process
        .wait_for_line("latency learning is off", Duration::from_secs(10));
    assert!(
        off.contains("GetPerTcpConnectionEStats"),
        "the log must name what is missing: {off}"
    );

    // Drain: out of DNS, and HAProxy's reply says drain too.
    touch(&daemon.drain);
    poll_until(Duration::from_secs(5), "drained backend out of DNS", || {
        answers(&overwatch).is_empty().then_some(())
    });
    let reply = agent_check(daemon.agent_check, b"").expect("agent-check");
    // The daemon's reply carries health too: "NN% drain up".
    assert_eq!(reply.split_whitespace().nth(1), Some("drain"), "{reply:?}");
    remove(&daemon.drain);
    poll_until(
        Duration::from_secs(5),
        "undrained backend back in DNS",
        || (answers(&overwatch) == ours).then_some(()),
    );

    // Ctrl+C (Wine turns SIGINT into CTRL_C_EVENT): the signed leaving report takes the
    // backend out of DNS at once, long before the 10 s stale threshold, and the exit is 0.
    let mut daemon = daemon;
    daemon.process.signal(libc::SIGINT);
    poll_until(
        Duration::from_secs(3),
        "the leaving Windows agent's backend out of DNS",
        || answers(&overwatch).is_empty().then_some(()),
    );
    overwatch.process.wait_for_line(
        "agent left: its backends leave DNS now",
        Duration::from_secs(1),
    );
    let status = daemon.process.wait_exit(Duration::from_secs(10));
    let log = daemon.process.output();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("leaving the cluster and stopping signal=\"CTRL_C\""),
        "{log}"
    );
}

/// Runs one of Wine's `sc`/`net` commands to completion; its exit code and output.
fn wine_tool(agent: &WindowsAgent, args: &[&str]) -> (i32, String) {
    let mut command = agent.wine(args[0]);
    command.args(&args[1..]);
    let (status, _, all) = Spawned::start(&format!("wine {}", args.join(" ")), command)
        .finish(Duration::from_secs(60));
    (status.code().unwrap_or(-1), all)
}

/// `sc query NAME`'s STATE, WIN32_EXIT_CODE and SERVICE_EXIT_CODE numbers.
fn service_state(agent: &WindowsAgent, name: &str) -> (u32, u32, u32) {
    let (_, out) = wine_tool(agent, &["sc", "query", name]);
    let field = |key: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(key))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in sc query output:\n{out}"))
    };
    (
        field("STATE"),
        field("WIN32_EXIT_CODE"),
        field("SERVICE_EXIT_CODE"),
    )
}

const SERVICE_STOPPED: u32 = 1;
const SERVICE_RUNNING: u32 = 4;
/// ERROR_SERVICE_SPECIFIC_ERROR: the exit code is in SERVICE_EXIT_CODE.
const SERVICE_SPECIFIC_ERROR: u32 = 1066;

/// A service registered for one test, deleted when dropped.
struct Service<'a> {
    agent: &'a WindowsAgent,
    name: String,
}

impl<'a> Service<'a> {
    fn create(agent: &'a WindowsAgent, label: &str, args: &str) -> Service<'a> {
        let name = format!("opengslb-agent-{label}-{}", std::process::id());
        let bin_path = format!("{} --service {args}", agent.exe_path());
        let (code, out) = wine_tool(agent, &["sc", "create", &name, "binPath=", &bin_path]);
        assert_eq!(code, 0, "sc create: {out}");
        Service { agent, name }
    }
}

impl Drop for Service<'_> {
    fn drop(&mut self) {
        let _ = wine_tool(self.agent, &["net", "stop", &self.name]);
        let _ = wine_tool(self.agent, &["sc", "delete", &self.name]);
    }
}

#[test]
fn runs_as_a_windows_service_and_stops_when_the_service_is_stopped() {
    let Some(agent) = WindowsAgent::find("runs_as_a_windows_service") else {
        return;
    };
    let dir = TempDir::new("win-service");
    // Wine stops its services when no Windows program is left running; a console agent
    // keeps this prefix's Wine up for the test (and shows the two can run side by side).
    let mut keeper = agent.command();
    keeper.args(["-port", "0", "-listen", "127.0.0.1"]);
    let keeper = Spawned::start("opengslb-agent.exe (keeps Wine up)", keeper);
    let _ = listening_addr(&keeper);

    // --service at a console: not a service, said plainly, exit 2.
    let (code, _, all) = one_shot(&agent, &["--service", "-port", "0"]);
    assert_eq!(code, 2, "{all}");
    assert!(
        all.contains("cannot connect to the service control manager"),
        "{all}"
    );

    let log = dir.join("service.log");
    let service = Service::create(
        &agent,
        "ok",
        &format!(
            "-port 0 -listen 127.0.0.1 -timeframe 200 --log-file {}",
            wine_path(&log)
        ),
    );
    let (code, out) = wine_tool(&agent, &["net", "start", &service.name]);
    assert_eq!(code, 0, "net start: {out}");
    let addr: std::net::SocketAddr = poll_until(
        Duration::from_secs(20),
        "the service's listening line in its --log-file",
        || {
            let text = std::fs::read_to_string(&log).ok()?;
            let line = text.lines().find(|l| l.contains("listening"))?;
            line.split_whitespace()
                .find_map(|w| w.strip_prefix("addr="))
                .and_then(|a| a.parse().ok())
        },
    );
    assert_eq!(service_state(&agent, &service.name).0, SERVICE_RUNNING);
    let reply = agent_check(addr, b"").expect("agent-check to the service");
    assert_eq!(parse_reply(&reply).map(|r| r.1), Some("ready"), "{reply:?}");

    let (code, out) = wine_tool(&agent, &["net", "stop", &service.name]);
    assert_eq!(code, 0, "net stop: {out}");
    poll_until(
        Duration::from_secs(10),
        "the service STOPPED, exit 0",
        || (service_state(&agent, &service.name) == (SERVICE_STOPPED, 0, 0)).then_some(()),
    );
    let text = std::fs::read_to_string(&log).expect("service log");
    assert!(
        text.contains("signal=\"service stop\"") && text.contains("stopped"),
        "the stop must be the graceful one, logged: {text}"
    );
    drop(service);

    // A service whose configuration is unusable stops with the agent's exit code (2, as
    // on Linux) as its service-specific code, and logs why.
    let bad_log = dir.join("bad.log");
    let missing = dir.join("missing.yaml");
    let bad = Service::create(
        &agent,
        "bad",
        &format!(
            "--config {} --log-file {}",
            wine_path(&missing),
            wine_path(&bad_log)
        ),
    );
    let _ = wine_tool(&agent, &["net", "start", &bad.name]);
    poll_until(
        Duration::from_secs(20),
        "the misconfigured service STOPPED with service-specific code 2",
        || {
            (service_state(&agent, &bad.name) == (SERVICE_STOPPED, SERVICE_SPECIFIC_ERROR, 2))
                .then_some(())
        },
    );
    let text = std::fs::read_to_string(&bad_log).expect("bad service log");
    assert!(
        text.contains("missing.yaml"),
        "the log must name the file: {text}"
    );
    drop(bad);
    drop(keeper);
}
