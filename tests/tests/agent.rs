//! End to end: the built `opengslb-agent` binary, as an operator and HAProxy see it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use opengslb_tests::process::Spawned;
use opengslb_tests::{
    AgentHost, TempDir, agent_binary, agent_check, listening_addr, parse_reply, poll_until, remove,
    start_agent, touch,
};

const STARTUP: Duration = Duration::from_secs(10);

fn one_shot(args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(agent_binary());
    command.args(args);
    let (status, stdout, all) =
        Spawned::start("opengslb-agent one-shot", command).finish(Duration::from_secs(30));
    (status.code().unwrap_or(-1), stdout, all)
}

fn state_of(reply: &str) -> &str {
    parse_reply(reply)
        .unwrap_or_else(|| panic!("not an agent reply: {reply:?}"))
        .1
}

#[test]
fn one_shot_prints_exactly_one_line_and_exits_0() {
    let (code, stdout, all) = one_shot(&["-timeframe", "100"]);
    assert_eq!(code, 0, "{all}");
    assert!(
        parse_reply(&stdout).is_some(),
        "stdout must be exactly `NN% ready\\n`, got {stdout:?}"
    );
    assert_eq!(state_of(&stdout), "ready");
}

#[test]
fn one_shot_measures_the_timeframe_it_was_given_not_the_average_since_boot() {
    // Keep both cores busy for the whole measurement: a real timeframe sees it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let burners: Vec<_> = (0..2)
        .map(|_| {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();
    // Give the burners time to be running on both cores before the window opens.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(200) {
        std::hint::spin_loop();
    }
    let started = Instant::now();
    let (code, stdout, all) = one_shot(&["-timeframe", "600"]);
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for burner in burners {
        burner.join().expect("burner");
    }
    assert_eq!(code, 0, "{all}");
    let (pct, _) = parse_reply(&stdout).unwrap_or_else(|| panic!("{stdout:?}"));
    assert!(
        took >= Duration::from_millis(600),
        "one-shot must measure a whole timeframe, took {took:?}"
    );
    assert!(
        pct <= 40,
        "both cores were busy during the timeframe, yet the weight is {pct}%"
    );
}

#[test]
fn one_shot_state_follows_the_files_maint_winning_in_either_order() {
    let dir = TempDir::new("oneshot-files");
    let (drain, maint) = (dir.join("drain"), dir.join("maint"));
    let (drain_arg, maint_arg) = (drain.display().to_string(), maint.display().to_string());
    let state = || {
        let (code, stdout, all) = one_shot(&[
            "-timeframe",
            "20",
            "-drain-file",
            &drain_arg,
            "--maint-file",
            &maint_arg,
        ]);
        assert_eq!(code, 0, "{all}");
        state_of(&stdout).to_owned()
    };
    assert_eq!(state(), "ready");
    touch(&drain);
    assert_eq!(state(), "drain");
    touch(&maint);
    assert_eq!(state(), "maint", "maint wins over drain");
    remove(&drain);
    assert_eq!(state(), "maint");
    touch(&drain);
    remove(&maint);
    assert_eq!(state(), "drain");
    remove(&drain);
    assert_eq!(state(), "ready");
}

#[test]
fn server_replies_once_per_connection_and_follows_files_at_once() {
    let dir = TempDir::new("server-files");
    let AgentHost {
        agent,
        drain,
        maint,
    } = AgentHost::start(&dir, "host", 500);
    let reply = agent_check(agent.addr, b"").expect("check");
    assert_eq!(state_of(&reply), "ready", "{reply:?}");

    let wait_state = |want: &str| {
        let since = Instant::now();
        poll_until(
            Duration::from_secs(2),
            &format!("reply state {want}"),
            || {
                let reply = agent_check(agent.addr, b"").expect("check");
                (state_of(&reply) == want).then_some(())
            },
        );
        since.elapsed()
    };
    touch(&maint);
    wait_state("maint");
    touch(&drain);
    // Still maint while both exist: check a few replies, not just one.
    for _ in 0..5 {
        assert_eq!(
            state_of(&agent_check(agent.addr, b"").expect("check")),
            "maint"
        );
    }
    remove(&maint);
    wait_state("drain");
    remove(&drain);
    wait_state("ready");
}

#[test]
fn agent_send_bytes_are_read_and_the_close_is_clean() {
    let agent = start_agent(&["-port", "0", "--listen", "127.0.0.1", "-timeframe", "100"]);
    for send in [&b"hello agent\n"[..], &[b'x'; 16 * 1024][..]] {
        let mut stream = TcpStream::connect(agent.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        // Like haproxy's agent-send: data arrives before the agent has replied.
        stream.write_all(send).expect("send");
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).expect("reply, then FIN");
        let reply = String::from_utf8(reply).expect("utf-8");
        assert!(parse_reply(&reply).is_some(), "{reply:?}");
        // An agent that closes with our bytes unread makes the kernel send a reset right
        // after its FIN; the reset shows up as a socket error here. The agent keeps the
        // connection until we close (up to its 1 s linger), so none may arrive meanwhile.
        let watch = Instant::now();
        while watch.elapsed() < Duration::from_millis(300) {
            assert!(
                matches!(stream.take_error(), Ok(None)),
                "the agent reset the connection instead of closing it cleanly"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[test]
fn listens_on_ipv6_loopback_and_all_addresses_by_default() {
    let v6 = start_agent(&["-port", "0", "--listen", "::1", "-timeframe", "100"]);
    assert!(v6.addr.is_ipv6(), "{}", v6.addr);
    assert!(parse_reply(&agent_check(v6.addr, b"").expect("v6 check")).is_some());

    // No --listen: one dual-stack socket, reachable over both IPv4 and IPv6 loopback.
    let any = start_agent(&["-port", "0", "-timeframe", "100"]);
    for ip in ["127.0.0.1", "::1"] {
        let addr = SocketAddr::new(ip.parse().expect("ip"), any.addr.port());
        assert!(
            parse_reply(&agent_check(addr, b"").expect("check")).is_some(),
            "{addr}"
        );
    }
}

#[test]
fn log_requests_logs_peer_and_reply() {
    let agent = start_agent(&[
        "-port",
        "0",
        "--listen",
        "127.0.0.1",
        "-log-requests",
        "-timeframe",
        "100",
    ]);
    let reply = agent_check(agent.addr, b"").expect("check");
    let line = agent.process.wait_for_line("agent-check", STARTUP);
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
    assert!(
        line.contains(&format!("reply=\"{}\"", reply.trim_end())),
        "{line} vs {reply:?}"
    );
}

#[test]
fn without_log_requests_nothing_is_logged_per_request() {
    let agent = start_agent(&["-port", "0", "--listen", "127.0.0.1", "-timeframe", "100"]);
    let mut agent = agent;
    for _ in 0..3 {
        agent_check(agent.addr, b"").expect("check");
    }
    // After a clean exit every line the agent wrote has been read.
    agent.process.signal(libc::SIGTERM);
    agent.process.wait_exit(STARTUP);
    let output = agent.process.output();
    assert!(output.contains("stopped"), "{output}");
    assert!(!output.contains("agent-check"), "{output}");
}

/// Hands the binary a listening socket as fd 3, as systemd does.
fn socket_activated(listen_pid: &str) -> (Spawned, SocketAddr) {
    socket_activated_with(listen_pid, &["-systemd", "-timeframe", "100"])
}

fn socket_activated_with(listen_pid: &str, args: &[&str]) -> (Spawned, SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let fd = listener.as_raw_fd();
    // sh sets LISTEN_PID to its own pid ($$), then execs the agent, which keeps that pid.
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("LISTEN_PID={listen_pid} exec \"$0\" \"$@\""))
        .arg(agent_binary())
        .args(args)
        .env("LISTEN_FDS", "1");
    #[allow(unsafe_code)]
    // SAFETY: dup2 is async-signal-safe; the fd stays valid because `listener` outlives spawn.
    unsafe {
        command.pre_exec(move || {
            // dup2 onto itself is a no-op that would leave FD_CLOEXEC set.
            let rc = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let process = Spawned::start("opengslb-agent -systemd", command);
    drop(listener); // the child has its own copy as fd 3
    (process, addr)
}

#[test]
fn systemd_socket_activation_serves_the_passed_socket() {
    let (process, addr) = socket_activated("$$");
    let logged = listening_addr(&process);
    assert_eq!(logged, addr, "serves the socket it was given");
    let reply = agent_check(addr, b"").expect("check");
    assert_eq!(state_of(&reply), "ready");
}

#[test]
fn systemd_mode_without_a_socket_for_this_process_exits_2() {
    // LISTEN_PID names another process: the sockets are not ours.
    let (mut process, _addr) = socket_activated("1");
    let status = process.wait_exit(STARTUP);
    assert_eq!(status.code(), Some(2));
    assert!(
        process.output().contains("-systemd: no listening socket"),
        "{}",
        process.output()
    );

    let (code, _, all) = one_shot(&["-systemd"]);
    assert_eq!(code, 2);
    assert!(all.contains("LISTEN_FDS"), "{all}");
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    for (args, names) in [
        (&["-port", "70000"][..], "--port"),
        (&["-timeframe", "abc"][..], "--timeframe"),
        (&["-timeframe", "0"][..], "--timeframe"),
        (&["-no-such-flag"][..], "--no-such-flag"),
        (&["--listen", "nowhere", "-port", "1"][..], "--listen"),
    ] {
        let (code, stdout, all) = one_shot(args);
        assert_eq!(code, 2, "{args:?}: {all}");
        assert!(all.contains(names), "{args:?} must name {names}: {all}");
        assert!(
            stdout.is_empty(),
            "{args:?}: nothing on stdout, got {stdout:?}"
        );
    }
}

#[test]
fn help_and_version_exit_0() {
    let (code, stdout, _) = one_shot(&["--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--drain-file",
        "--maint-file",
        "--port",
        "--systemd",
        "--timeframe",
        "--log-requests",
        "--listen",
    ] {
        assert!(stdout.contains(flag), "help mentions {flag}: {stdout}");
    }
    let (code, stdout, _) = one_shot(&["-version"]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        format!("opengslb-agent {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let (code, _, all) = one_shot(&["-port", &port, "--listen", "127.0.0.1"]);
    assert_eq!(code, 1, "{all}");
    assert!(
        all.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{all}"
    );
}

#[test]
fn sigterm_finishes_replies_in_flight_then_exits_0() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut agent = start_agent(&["-port", "0", "--listen", "127.0.0.1", "-timeframe", "100"]);
        // A checker that has connected but not yet read or closed: a reply in flight.
        let mut in_flight = TcpStream::connect(agent.addr).expect("connect");
        in_flight
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        poll_until(STARTUP, "the connection to be accepted", || {
            // the reply is written at accept; peeking says it arrived
            let mut byte = [0u8; 1];
            in_flight.peek(&mut byte).ok().filter(|n| *n > 0)
        });
        agent.process.signal(signal);
        let status = agent.process.wait_exit(STARTUP);
        assert_eq!(status.code(), Some(0), "{}", agent.process.output());
        let mut reply = String::new();
        in_flight
            .read_to_string(&mut reply)
            .expect("in-flight reply completes with a clean close");
        assert!(parse_reply(&reply).is_some(), "{reply:?}");
        let refused = TcpStream::connect_timeout(&agent.addr, Duration::from_secs(1));
        assert!(refused.is_err(), "no longer accepting after exit");
    }
}

#[test]
fn out_of_file_descriptors_is_survived() {
    // 16 descriptors: stdio, the runtime's few, the listener; then only a handful of
    // connections fit. A crowd of checkers that do not close exhausts them.
    let mut command = Command::new(agent_binary());
    command.args(["-port", "0", "--listen", "127.0.0.1", "-timeframe", "100"]);
    #[allow(unsafe_code)]
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 16,
                rlim_max: 16,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let agent = Spawned::start("opengslb-agent (16 fds)", command);
    let addr = listening_addr(&agent);
    let crowd: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(addr).expect("the kernel queues the connection"))
        .collect();
    agent.wait_for_line("accept failed", STARTUP);
    drop(crowd);
    // Once the crowd is gone, checks are answered again by the same process.
    let reply = poll_until(
        Duration::from_secs(15),
        "a reply after fd exhaustion",
        || {
            agent_check(addr, b"")
                .ok()
                .filter(|r| parse_reply(r).is_some())
        },
    );
    assert_eq!(state_of(&reply), "ready");
    assert!(
        agent.output().contains("still serving"),
        "{}",
        agent.output()
    );
}

#[test]
fn checkers_that_reset_at_once_do_not_hurt_the_agent() {
    // haproxy timing out a check closes with a reset; a port scanner does the same.
    let agent = start_agent(&["-port", "0", "--listen", "127.0.0.1", "-timeframe", "100"]);
    for _ in 0..200 {
        let stream = TcpStream::connect(agent.addr).expect("connect");
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        #[allow(unsafe_code)]
        // SAFETY: setsockopt on a socket we own, with a correctly sized linger struct.
        let rc = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_LINGER");
        drop(stream); // close with linger 0 = RST
    }
    let reply = agent_check(agent.addr, b"").expect("still answering");
    assert!(parse_reply(&reply).is_some(), "{reply:?}");
}

fn daemon_config(dir: &TempDir, key_line: &str) -> std::path::PathBuf {
    let config = dir.join("agent.yaml");
    let yaml = format!(
        "identity:\n  service_token: app-token-0123456789\n  region: eu\n  cert_path: {d}/a.crt\n  key_path: {d}/a.key\nbackends:\n  - service: app\n    address: 127.0.0.1\n    port: 1\ngossip:\n{key_line}  overwatch_nodes: [\"127.0.0.1:9\"]\n  bind_address: \"127.0.0.1:0\"\nagent_check:\n  listen: \"127.0.0.1:1\"\n",
        d = dir.path().display()
    );
    std::fs::write(&config, yaml).expect("write config");
    config
}

#[test]
fn daemon_mode_refuses_to_gossip_without_a_key() {
    let dir = TempDir::new("daemon-nokey");
    let config = daemon_config(&dir, "");
    let (code, stdout, all) = one_shot(&["--config", config.to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{all}");
    assert!(stdout.is_empty());
    assert!(all.contains("gossip.encryption_key is missing"), "{all}");
    let config = daemon_config(&dir, "  encryption_key: \"c2hvcnQ=\"\n");
    let (code, _, all) = one_shot(&["--config", config.to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{all}");
    assert!(
        all.contains("gossip.encryption_key must decode to 32 bytes, got 5"),
        "{all}"
    );
    assert!(
        !dir.join("a.key").exists(),
        "nothing is created before the configuration is usable"
    );
}

#[test]
fn single_dash_flags_override_the_daemon_config() {
    let dir = TempDir::new("daemon-flags");
    let config = daemon_config(
        &dir,
        "  encryption_key: \"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\"\n",
    );
    let drain = dir.join("drain");
    // The file says 127.0.0.1:1 (privileged, unusable here); the flags say a free port.
    let agent = start_agent(&[
        "--config",
        config.to_str().expect("utf-8"),
        "-port",
        "0",
        "--listen",
        "127.0.0.1",
        "-drain-file",
        drain.to_str().expect("utf-8"),
    ]);
    assert_ne!(agent.addr.port(), 1);
    touch(&drain);
    poll_until(Duration::from_secs(2), "the flag's drain file", || {
        let reply = agent_check(agent.addr, b"").ok()?;
        reply.contains(" drain").then_some(())
    });
}

/// A daemon config whose one backend has a TCP health check against `target`.
fn checked_daemon_config(dir: &TempDir, target: SocketAddr) -> std::path::PathBuf {
    let config = dir.join("agent.yaml");
    let yaml = format!(
        "identity:\n  service_token: app-token-0123456789\n  region: eu\n  cert_path: {d}/a.crt\n  key_path: {d}/a.key\nbackends:\n  - service: app\n    address: {ip}\n    port: {port}\n    health_check:\n      type: tcp\n      interval: 5s\n      timeout: 1s\ngossip:\n  encryption_key: \"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\"\n  overwatch_nodes: [\"127.0.0.1:9\"]\n  bind_address: \"127.0.0.1:0\"\n",
        d = dir.path().display(),
        ip = target.ip(),
        port = target.port(),
    );
    std::fs::write(&config, yaml).expect("write config");
    config
}

#[test]
fn a_socket_activated_daemon_never_answers_up_before_its_first_check() {
    // The connection that starts the agent is answered by what the check found, not by
    // an optimistic `up`: three starts against a closed port, then one against an open one.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    for run in 0..3 {
        let dir = TempDir::new("daemon-first-check");
        let config = checked_daemon_config(&dir, closed);
        let (process, addr) = socket_activated_with(
            "$$",
            &["--config", config.to_str().expect("utf-8"), "-systemd"],
        );
        let reply = agent_check(addr, b"").expect("first check");
        assert!(
            reply.contains(&format!("% ready down #app {closed}: ")),
            "run {run}: the first reply must say the backend is down: {reply:?}\n{}",
            process.output()
        );
        assert!(!reply.contains("pending"), "run {run}: {reply:?}");
    }
    let open = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dir = TempDir::new("daemon-first-check-up");
    let config = checked_daemon_config(&dir, open.local_addr().expect("addr"));
    let (process, addr) = socket_activated_with(
        "$$",
        &["--config", config.to_str().expect("utf-8"), "-systemd"],
    );
    let reply = agent_check(addr, b"").expect("first check");
    assert!(
        reply.ends_with(" ready up\n"),
        "{reply:?}\n{}",
        process.output()
    );
}

#[test]
fn a_sighup_is_answered_not_fatal_in_flag_mode_and_port_yields_to_systemd() {
    let agent = start_agent(&["-port", "0", "--listen", "127.0.0.1"]);
    agent.process.signal(libc::SIGHUP);
    agent
        .process
        .wait_for_line("SIGHUP: nothing to reload in flag mode", STARTUP);
    let reply = agent_check(agent.addr, b"").expect("still serving after SIGHUP");
    assert_eq!(state_of(&reply), "ready");

    // haproxy_agent's units pass both: the socket systemd passed is served.
    let (process, addr) = socket_activated_with("$$", &["-systemd", "-port", "7777"]);
    let reply = agent_check(addr, b"").expect("check");
    assert_eq!(state_of(&reply), "ready", "{}", process.output());
    process.wait_for_line("-port is ignored under -systemd", STARTUP);
}
