//! A real haproxy under test, and what its runtime API says about its servers.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::poll_until;
use crate::process::Spawned;

/// `srv_admin_state` bit: maintenance forced (by the agent or an operator).
pub const ADMIN_FMAINT: u32 = 0x01;
/// `srv_admin_state` bit: drain forced.
pub const ADMIN_FDRAIN: u32 = 0x08;
/// `srv_op_state`: running.
pub const OP_RUNNING: u32 = 2;

/// The `haproxy` executable; panics with how to install it when it is missing (the test
/// command installs it, see scripts/test.sh).
pub fn binary() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("haproxy"))
            .find(|p| p.is_file())
    });
    found.expect("haproxy is not installed: run scripts/test.sh (installs it as root) or apt-get install haproxy")
}

/// One server's row of `show servers state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    /// `srv_op_state`: 0 stopped, 2 running.
    pub op_state: u32,
    /// `srv_admin_state` bits (see the `ADMIN_*` constants).
    pub admin_state: u32,
    /// `srv_uweight`: the effective (user) weight.
    pub uweight: u32,
    /// `srv_iweight`: the configured weight.
    pub iweight: u32,
}

/// A running haproxy with an admin-level stats socket.
#[derive(Debug)]
pub struct Haproxy {
    process: Spawned,
    stats_socket: PathBuf,
}

impl Haproxy {
    /// Writes `config` to `dir/haproxy.cfg` and runs haproxy in the foreground. The config
    /// must declare `stats socket <dir>/admin.sock level admin`.
    pub fn start(dir: &Path, config: &str) -> Haproxy {
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, config).expect("write haproxy.cfg");
        let stats_socket = dir.join("admin.sock");
        let mut command = Command::new(binary());
        command.arg("-db").arg("-f").arg(&cfg);
        let process = Spawned::start("haproxy", command);
        let haproxy = Haproxy {
            process,
            stats_socket,
        };
        poll_until(Duration::from_secs(10), "haproxy's stats socket", || {
            haproxy.try_command("show info").ok()
        });
        haproxy
    }

    /// Everything haproxy printed (health-check log lines included).
    pub fn output(&self) -> String {
        self.process.output()
    }

    fn try_command(&self, command: &str) -> std::io::Result<String> {
        let mut stream = UnixStream::connect(&self.stats_socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(format!("{command}\n").as_bytes())?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        Ok(reply)
    }

    /// Runs a runtime API command and returns its reply.
    pub fn command(&self, command: &str) -> String {
        self.try_command(command)
            .unwrap_or_else(|e| panic!("haproxy runtime API `{command}`: {e}\n{}", self.output()))
    }

    /// `show servers state BACKEND`, by server name.
    pub fn servers(&self, backend: &str) -> HashMap<String, ServerState> {
        let reply = self.command(&format!("show servers state {backend}"));
        let mut lines = reply.lines().filter(|l| !l.trim().is_empty());
        let _version = lines.next();
        let header: Vec<&str> = lines
            .next()
            .and_then(|h| h.strip_prefix("# "))
            .unwrap_or_else(|| panic!("no header in show servers state:\n{reply}"))
            .split(' ')
            .collect();
        let column = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
        };
        let (name, op, admin, uweight, iweight) = (
            column("srv_name"),
            column("srv_op_state"),
            column("srv_admin_state"),
            column("srv_uweight"),
            column("srv_iweight"),
        );
        lines
            .map(|line| {
                let f: Vec<&str> = line.split(' ').collect();
                let num = |i: usize| -> u32 {
                    f.get(i)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or_else(|| panic!("bad field {i} in {line:?}"))
                };
                (
                    f[name].to_owned(),
                    ServerState {
                        op_state: num(op),
                        admin_state: num(admin),
                        uweight: num(uweight),
                        iweight: num(iweight),
                    },
                )
            })
            .collect()
    }

    /// `show stat` fields of one server (e.g. `status` = "DRAIN (agent)", `agent_status`).
    pub fn stat(&self, backend: &str, server: &str) -> HashMap<String, String> {
        let reply = self.command("show stat");
        let mut lines = reply.lines();
        let header: Vec<String> = lines
            .next()
            .and_then(|h| h.strip_prefix("# "))
            .unwrap_or_else(|| panic!("no header in show stat:\n{reply}"))
            .split(',')
            .map(str::to_owned)
            .collect();
        lines
            .map(|l| l.split(',').map(str::to_owned).collect::<Vec<_>>())
            .find(|f| {
                f.first().map(String::as_str) == Some(backend)
                    && f.get(1).map(String::as_str) == Some(server)
            })
            .map(|fields| header.into_iter().zip(fields).collect())
            .unwrap_or_else(|| panic!("no stat row for {backend}/{server}:\n{reply}"))
    }
}

/// Sends one HTTP/1.0 request to a unix-socket frontend; returns the response body.
pub fn http_get_unix(socket: &Path) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or(response))
}
