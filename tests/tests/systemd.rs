//! The shipped systemd units: valid for systemd, hardened, and their command line works
//! under systemd's own socket-activation code.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use opengslb_tests::process::Spawned;
use opengslb_tests::{
    TempDir, agent_binary, agent_check, parse_reply, poll_until, touch, workspace_root,
};

fn unit(name: &str) -> String {
    let path = workspace_root().join("systemd").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The value of `Key=` in a unit (first occurrence).
fn key<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

fn tool(name: &str) -> PathBuf {
    let path = Path::new("/usr/bin").join(name);
    assert!(
        path.is_file(),
        "{name} is missing: run scripts/test.sh (installs the systemd package as root)"
    );
    path
}

#[test]
fn units_pass_systemd_analyze_verify_without_warnings() {
    let dir = TempDir::new("units");
    // verify checks that ExecStart exists: point it at the binary we built.
    let service = unit("opengslb-agent.service").replace(
        "/usr/bin/opengslb-agent",
        agent_binary().to_str().expect("utf-8"),
    );
    std::fs::write(dir.join("opengslb-agent.service"), service).expect("write");
    std::fs::write(
        dir.join("opengslb-agent.socket"),
        unit("opengslb-agent.socket"),
    )
    .expect("write");
    let overwatch = unit("opengslb-overwatch.service")
        .replace(
            "/usr/bin/opengslb-overwatch",
            opengslb_tests::overwatch::overwatch_binary()
                .to_str()
                .expect("utf-8"),
        )
        .replace(
            "/usr/bin/opengslb-cli",
            opengslb_tests::overwatch::cli_binary()
                .to_str()
                .expect("utf-8"),
        );
    std::fs::write(dir.join("opengslb-overwatch.service"), overwatch).expect("write");
    let output = Command::new(tool("systemd-analyze"))
        .args([
            "verify",
            "--man=no",
            "./opengslb-agent.socket",
            "./opengslb-agent.service",
            "./opengslb-overwatch.service",
        ])
        .current_dir(dir.path())
        .output()
        .expect("systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    // Unknown or misspelled keys are only warnings for verify: there must be none.
    assert!(
        text.trim().is_empty(),
        "systemd-analyze verify warned:\n{text}"
    );
}

#[test]
fn units_are_socket_activated_unprivileged_and_hardened() {
    let socket = unit("opengslb-agent.socket");
    assert_eq!(key(&socket, "ListenStream"), Some("7777"));
    let service = unit("opengslb-agent.service");
    assert_eq!(
        key(&service, "Type"),
        Some("notify"),
        "the agent sends READY=1"
    );
    let exec = key(&service, "ExecStart").expect("ExecStart");
    for part in [
        "-systemd",
        "-drain-file /etc/opengslb/",
        "-maint-file /etc/opengslb/",
    ] {
        assert!(exec.contains(part), "ExecStart has {part}: {exec}");
    }
    for (k, v) in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        (
            "RestrictAddressFamilies",
            "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        ),
    ] {
        assert_eq!(key(&service, k), Some(v), "{k}");
    }
    // /proc/stat is how the weight is measured: it must stay visible.
    assert!(
        key(&service, "ProcSubset").is_none(),
        "ProcSubset=pid would hide /proc/stat"
    );
}

#[test]
fn the_units_command_line_works_under_systemd_socket_activate() {
    let dir = TempDir::new("socket-activate");
    let service = unit("opengslb-agent.service");
    let exec = key(&service, "ExecStart").expect("ExecStart");
    // The unit's own flags, with its paths moved into the test directory.
    let args: Vec<String> = exec
        .replace("/etc/opengslb/", &format!("{}/", dir.path().display()))
        .split_whitespace()
        .skip(1)
        .map(str::to_owned)
        .collect();
    // systemd-socket-activate cannot bind port 0: take a free port, retry on a race.
    let (process, addr) = (0..5)
        .find_map(|_| {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
            let mut command = Command::new(tool("systemd-socket-activate"));
            command
                .arg("-l")
                .arg(addr.to_string())
                .arg(agent_binary())
                .args(&args);
            let process = Spawned::start("systemd-socket-activate opengslb-agent", command);
            let line = process.wait_for_line("Listening on", Duration::from_secs(10));
            (!line.contains("Failed")).then_some((process, addr))
        })
        .expect("systemd-socket-activate could bind a port");
    // The first connection makes systemd-socket-activate exec the agent with the socket.
    let reply = agent_check(addr, b"").expect("first check");
    assert_eq!(
        parse_reply(&reply).map(|(_, s)| s),
        Some("ready"),
        "{reply:?}"
    );
    touch(&dir.join("drain"));
    poll_until(
        Duration::from_secs(2),
        "drain through the unit's -drain-file",
        || {
            let reply = agent_check(addr, b"").ok()?;
            (parse_reply(&reply)?.1 == "drain").then_some(())
        },
    );
    touch(&dir.join("maint"));
    poll_until(
        Duration::from_secs(2),
        "maint through the unit's -maint-file",
        || {
            let reply = agent_check(addr, b"").ok()?;
            (parse_reply(&reply)?.1 == "maint").then_some(())
        },
    );
    drop(process);
}
