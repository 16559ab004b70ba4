//! An overwatch node under test, real `dig` as its client, and backends whose health the
//! test switches.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::process::Spawned;
use crate::{TempDir, built_binary};

/// The built `opengslb-overwatch`.
pub fn overwatch_binary() -> PathBuf {
    built_binary("opengslb-overwatch", "overwatch")
}

/// The built `opengslb-cli`.
pub fn cli_binary() -> PathBuf {
    built_binary("opengslb-cli", "overwatch")
}

/// A running node and the addresses it logged.
#[derive(Debug)]
pub struct Overwatch {
    /// The process.
    pub process: Spawned,
    /// DNS (UDP and TCP).
    pub dns: SocketAddr,
    /// API, if enabled.
    pub api: Option<SocketAddr>,
    /// Metrics, if enabled.
    pub metrics: Option<SocketAddr>,
    /// Gossip (UDP), if configured.
    pub gossip: Option<SocketAddr>,
    /// The config file (rewrite it, then SIGHUP).
    pub config: PathBuf,
}

impl Overwatch {
    /// Writes `yaml` to `dir/overwatch.yaml` and starts the node; waits for its listeners.
    /// Use port 0 everywhere: the harness reads the real addresses from the log.
    pub fn start(dir: &TempDir, yaml: &str) -> Overwatch {
        Overwatch::start_in(dir, yaml, None)
    }

    /// [`Overwatch::start`] inside network namespace `netns` (`ip netns exec`).
    pub fn start_in(dir: &TempDir, yaml: &str, netns: Option<&str>) -> Overwatch {
        let config = dir.join("overwatch.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(overwatch_binary());
                c
            }
            None => Command::new(overwatch_binary()),
        };
        command
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.join("data"))
            // The binary's own default levels, as operators run it.
            .env_remove("RUST_LOG");
        let process = Spawned::start("opengslb-overwatch", command);
        let addr_of = |needle: &str| {
            let line = process.wait_for_line(needle, Duration::from_secs(15));
            line.split_whitespace()
                .find_map(|w| w.strip_prefix("addr="))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no addr= in {line:?}"))
        };
        let dns = addr_of("dns listening");
        let api = yaml.contains("\napi:").then(|| addr_of("api listening"));
        let metrics = yaml
            .contains("\nmetrics:")
            .then(|| addr_of("metrics listening"));
        let gossip = yaml
            .contains("\n  gossip:")
            .then(|| addr_of("gossip listening"));
        Overwatch {
            gossip,
            process,
            dns,
            api,
            metrics,
            config,
        }
    }

    /// `dig @dns -p port ARGS`.
    pub fn dig(&self, args: &[&str]) -> Dig {
        dig(self.dns, args)
    }

    /// GET on the API: (status, JSON body).
    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let api = self.api.expect("api enabled");
        let (status, body) = http_get(api, path);
        let json = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
        (status, json)
    }

    /// The value of one `/metrics` series (`name{labels}` exactly as exported); 0 when the
    /// node does not export it (yet).
    pub fn metric(&self, series: &str) -> f64 {
        let (_, text) = http_get(self.metrics.expect("metrics enabled"), "/metrics");
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    }
}

/// The A records `dns` answers for `name` now (empty when it does not answer).
pub fn a_set(dns: SocketAddr, name: &str) -> std::collections::BTreeSet<std::net::Ipv4Addr> {
    udp_exchange(
        dns,
        &query_packet(1, name, 1, false),
        Duration::from_secs(1),
    )
    .map(|r| a_records(&r).into_iter().collect())
    .unwrap_or_default()
}

/// A minimal HTTP/1.0 GET: (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, None, None)
}

/// A minimal HTTP/1.0 request with an optional bearer token and JSON body: (status, body).
/// Status 0: the connection failed or was cut.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // HTTP/1.1 with Connection: close (chromedriver does not speak 1.0); the body is read
    // to the end of the connection.
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        request.push_str("\r\n");
    }
    // One write: a request sent in pieces can reach a server that answers the first piece.
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    // Until the server closes, or the body its Content-Length announces is complete (a
    // server may keep the connection open despite Connection: close).
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(_) => return (0, String::new()),
        }
        if complete(&raw) {
            break;
        }
    }
    let response = String::from_utf8_lossy(&raw).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

/// Whether `raw` holds the headers and the whole body their Content-Length announces.
fn complete(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|len| raw.len() >= end + 4 + len)
}

/// The payload of a chunked HTTP/1.1 body.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// What dig printed, parsed.
#[derive(Debug, Clone, Default)]
pub struct Dig {
    /// `NOERROR`, `NXDOMAIN`, … (empty if no answer).
    pub status: String,
    /// Header flags (`qr`, `aa`, `tc`, …).
    pub flags: Vec<String>,
    /// Answer section: (name, ttl, type, data).
    pub answer: Vec<(String, u32, String, String)>,
    /// Authority section, same shape.
    pub authority: Vec<(String, u32, String, String)>,
    /// `; CLIENT-SUBNET: addr/source/scope`.
    pub client_subnet: Option<String>,
    /// `; EDNS: version: 0, flags:; udp: N`.
    pub edns: Option<String>,
    /// The whole output, for failure messages.
    pub raw: String,
}

impl Dig {
    /// The data of answer records of `rtype`, sorted.
    pub fn data(&self, rtype: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .answer
            .iter()
            .filter(|r| r.2 == rtype)
            .map(|r| r.3.clone())
            .collect();
        v.sort();
        v
    }
}

/// Runs real `dig` against `server`.
pub fn dig(server: SocketAddr, args: &[&str]) -> Dig {
    let output = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .args(["+time=2", "+tries=1", "+ignore"])
        .args(args)
        .output()
        .expect("dig is not installed: run scripts/test.sh (installs dnsutils as root)");
    let raw = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut dig = Dig {
        raw: raw.clone(),
        ..Dig::default()
    };
    let mut section = "";
    for line in raw.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            dig.status = rest.split(',').next().unwrap_or("").to_owned();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            dig.flags = rest
                .split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_owned)
                .collect();
        } else if let Some(rest) = line.strip_prefix("; CLIENT-SUBNET: ") {
            dig.client_subnet = Some(rest.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("; EDNS: ") {
            dig.edns = Some(rest.trim().to_owned());
        } else if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
        } else if line.starts_with(";;") || line.trim().is_empty() {
            if line.trim().is_empty() {
                section = "";
            }
        } else if !line.starts_with(';') && !section.is_empty() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 5 {
                let record = (
                    f[0].to_owned(),
                    f[1].parse().unwrap_or(0),
                    f[3].to_owned(),
                    f[4..].join(" "),
                );
                if section == "answer" {
                    dig.answer.push(record)
                } else {
                    dig.authority.push(record)
                }
            }
        }
    }
    dig
}

/// An HTTP backend on `ip` answering 200 while healthy, 503 otherwise; `stop` closes its
/// listener so further connections are refused.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    running: Arc<AtomicBool>,
}

impl Backend {
    /// Starts one on `ip` (any 127.x address) and a free port.
    pub fn start(ip: &str) -> Backend {
        let listener = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}"));
        let addr = listener.local_addr().expect("addr");
        let healthy = Arc::new(AtomicBool::new(true));
        let running = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&healthy);
        let alive = Arc::clone(&running);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                // stop() clears `alive`, then connects once to wake this accept.
                if !alive.load(Ordering::Relaxed) {
                    break; // dropping the listener: further connections are refused
                }
                let Ok(mut stream) = stream else { continue };
                let up = flag.load(Ordering::Relaxed);
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                    if !crate::read_request_head(&mut stream) {
                        return; // a TCP check: connected and closed
                    }
                    let status = if up {
                        "200 OK"
                    } else {
                        "503 Service Unavailable"
                    };
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                });
            }
        });
        Backend {
            addr,
            healthy,
            running,
        }
    }

    /// Stops it: the listener closes and further connections are refused.
    pub fn stop(&self) {
        self.running.store(false, Ordering::Relaxed);
        let _ = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        crate::poll_until(
            Duration::from_secs(2),
            "the backend's listener to close",
            || {
                std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(100))
                    .is_err()
                    .then_some(())
            },
        );
    }

    /// Makes its health endpoint pass or fail.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }
}

/// A DNS query in wire format: one question, optional OPT record.
pub fn query_packet(id: u16, name: &str, qtype: u16, edns: bool) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
    for label in name.trim_end_matches('.').split('.') {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    if edns {
        p.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    }
    p
}

/// [`query_packet`] with an OPT record carrying one EDNS option, `code` with `data`
/// (e.g. 10, a DNS cookie).
pub fn query_with_option(id: u16, name: &str, qtype: u16, code: u16, data: &[u8]) -> Vec<u8> {
    let mut q = query_packet(id, name, qtype, true);
    let at = q.len() - 2;
    q[at..].copy_from_slice(&((4 + data.len()) as u16).to_be_bytes());
    q.extend_from_slice(&code.to_be_bytes());
    q.extend_from_slice(&(data.len() as u16).to_be_bytes());
    q.extend_from_slice(data);
    q
}

/// Sends `packet` over UDP and waits up to `timeout` for one reply.
pub fn udp_exchange(server: SocketAddr, packet: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind(if server.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    })
    .expect("bind");
    socket.set_read_timeout(Some(timeout)).expect("timeout");
    socket.send_to(packet, server).expect("send");
    let mut buf = [0u8; 4096];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

/// The A records of a response (in order); empty for anything it cannot follow.
pub fn a_records(response: &[u8]) -> Vec<std::net::Ipv4Addr> {
    let count = |at: usize| {
        response
            .get(at..at + 2)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]) as usize)
    };
    let (questions, answers) = (count(4), count(6));
    let skip_name = |mut at: usize| -> Option<usize> {
        loop {
            let len = *response.get(at)? as usize;
            if len == 0 {
                return Some(at + 1);
            }
            if len & 0xc0 == 0xc0 {
                return Some(at + 2);
            }
            at += 1 + len;
        }
    };
    let mut at = 12;
    for _ in 0..questions {
        let Some(end) = skip_name(at) else {
            return Vec::new();
        };
        at = end + 4;
    }
    let mut out = Vec::new();
    for _ in 0..answers {
        let Some(end) = skip_name(at) else { break };
        let rtype = count(end);
        let rdlen = count(end + 8);
        let data = end + 10;
        if rtype == 1 && rdlen == 4 {
            if let Some(ip) = response.get(data..data + 4) {
                out.push(std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]));
            }
        }
        at = data + rdlen;
    }
    out
}

/// The RCODE of a response (low 4 bits of byte 3).
pub fn rcode(response: &[u8]) -> u8 {
    response.get(3).map_or(255, |b| b & 0x0f)
}
