//! Harness for the end-to-end tests and benchmarks: runs the built binaries and real
//! third-party programs (haproxy), reads what they log, and cleans every process up.

pub mod attacker;
pub mod bench;
pub mod browser;
pub mod cluster;
pub mod gslb;
pub mod haproxy;
pub mod links;
pub mod netns;
pub mod overwatch;
pub mod process;
pub mod unbound;
pub mod windows;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Polls `probe` until it returns `Some`, or panics with `what` after `timeout`.
///
/// The one way tests wait: never sleep-and-hope, always a condition and a deadline.
pub fn poll_until<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    poll_until_explained(timeout, what, || probe().ok_or_else(String::new))
}

/// [`poll_until`] whose probe says what it saw instead; a timeout reports the last of it.
pub fn poll_until_explained<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = match probe() {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}{}{seen}",
            if seen.is_empty() { "" } else { "; last seen: " }
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The workspace root (where `Cargo.toml` with `[workspace]` is).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives inside the workspace")
        .to_path_buf()
}

/// Path of a binary built from this workspace, in the same profile as the running test
/// (`target/debug` for tests, `target/release` for benchmarks).
///
/// Panics with instructions when the binary is missing or older than its sources, so a
/// test never silently exercises a stale build.
pub fn built_binary(name: &str, crate_dir: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary> → target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps");
    let bin = profile_dir.join(name);
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} does not exist: build it first (scripts/test.sh does: cargo build --workspace --bins)",
                bin.display()
            )
        });
    let newest_source = newest_mtime(&workspace_root().join(crate_dir).join("src"), name);
    assert!(
        newest_source <= built,
        "{} is older than the sources in {crate_dir}/src: rebuild it (cargo build --workspace --bins)",
        bin.display()
    );
    bin
}

/// The newest source file that `binary` is built from: everything under `dir` except the
/// entry files of the crate's *other* binaries (`src/bin/OTHER.rs`), which cargo rightly
/// does not relink this binary for.
pub(crate) fn newest_mtime(dir: &Path, binary: &str) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return newest;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let other_binary = dir.file_name().is_some_and(|d| d == "bin")
            && path.file_stem().is_some_and(|stem| stem != binary);
        if other_binary {
            continue;
        }
        let mtime = if path.is_dir() {
            newest_mtime(&path, binary)
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH)
        };
        newest = newest.max(mtime);
    }
    newest
}

/// A directory under the system temp dir, removed on drop (kept, and printed, when the
/// test fails, so its logs and configs can be inspected).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh, uniquely named directory.
    pub fn new(label: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("opengslb-test-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Creates (or truncates) a file, like `touch`.
pub fn touch(path: &Path) {
    std::fs::write(path, b"").unwrap_or_else(|e| panic!("touch {}: {e}", path.display()));
}

/// Removes a file that must exist.
pub fn remove(path: &Path) {
    std::fs::remove_file(path).unwrap_or_else(|e| panic!("rm {}: {e}", path.display()));
}

/// One agent-check exchange as HAProxy does it: connect, optionally send `agent-send`
/// bytes, read everything until the agent closes. Returns the bytes as text.
pub fn agent_check(addr: SocketAddr, send: &[u8]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    if !send.is_empty() {
        stream.write_all(send)?;
    }
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// The built `opengslb-agent`.
pub fn agent_binary() -> PathBuf {
    built_binary("opengslb-agent", "agent")
}

/// An agent in server mode and the address it listens on (read from its log).
#[derive(Debug)]
pub struct RunningAgent {
    /// The process.
    pub process: process::Spawned,
    /// Where it accepts agent-check connections.
    pub addr: SocketAddr,
}

/// An agent serving on loopback with its own drain and maint files (not yet created).
#[derive(Debug)]
pub struct AgentHost {
    /// The agent.
    pub agent: RunningAgent,
    /// Its drain file.
    pub drain: PathBuf,
    /// Its maint file.
    pub maint: PathBuf,
}

impl AgentHost {
    /// Starts an agent on 127.0.0.1 (free port) with `dir/NAME.drain` and `dir/NAME.maint`.
    pub fn start(dir: &TempDir, name: &str, timeframe_ms: u32) -> AgentHost {
        let (drain, maint) = (
            dir.join(&format!("{name}.drain")),
            dir.join(&format!("{name}.maint")),
        );
        let timeframe = timeframe_ms.to_string();
        let agent = start_agent(&[
            "-port",
            "0",
            "--listen",
            "127.0.0.1",
            "-timeframe",
            &timeframe,
            "-drain-file",
            drain.to_str().expect("utf-8 path"),
            "-maint-file",
            maint.to_str().expect("utf-8 path"),
        ]);
        AgentHost {
            agent,
            drain,
            maint,
        }
    }
}

/// A GeoLite2-Country-shaped MaxMind database: 1.0.0.0/16 US (NA), 2.0.0.0/8 DE (EU),
/// 2001:db8::/32 JP (AS). Written with mmdb-writer, so tests need no downloaded database.
pub fn country_mmdb() -> Vec<u8> {
    use mmdb_writer::{Value, Writer};
    let mut writer = Writer::new("GeoLite2-Country");
    for (net, country, continent) in [
        ("1.0.0.0/16", "US", "NA"),
        ("2.0.0.0/8", "DE", "EU"),
        ("2001:db8::/32", "JP", "AS"),
    ] {
        let entry = Value::map([
            ("country", Value::map([("iso_code", Value::from(country))])),
            ("continent", Value::map([("code", Value::from(continent))])),
        ]);
        writer
            .insert_value(net.parse::<ipnet::IpNet>().expect("fixture network"), entry)
            .expect("insert");
    }
    writer.to_bytes().expect("mmdb bytes")
}

/// Starts `opengslb-agent` with `args`, which must make it listen (`-port 0 --listen
/// 127.0.0.1`, …), and waits until it logs its address.
pub fn start_agent(args: &[&str]) -> RunningAgent {
    let mut command = std::process::Command::new(agent_binary());
    command.args(args);
    let process = process::Spawned::start("opengslb-agent", command);
    let addr = listening_addr(&process);
    RunningAgent { process, addr }
}

/// The `addr=` of the agent's "listening" log line (its agent-check listener's; not the
/// "metrics listening" line a daemon with `metrics.enabled` logs first).
pub fn listening_addr(process: &process::Spawned) -> SocketAddr {
    let line = process.wait_for_line_where(
        "listening (agent-check)",
        |l| l.contains("listening") && !l.contains("metrics listening"),
        Duration::from_secs(10),
    );
    line.split_whitespace()
        .find_map(|word| word.strip_prefix("addr="))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no addr= in {line:?}"))
}

/// Reads an HTTP request head to its blank line; false if the client closed first (a TCP
/// health check) or the read failed. Answering before the whole request is read would
/// close the socket with unread input, which resets the client's connection.
pub fn read_request_head(stream: &mut impl Read) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// A minimal HTTP server on 127.0.0.1 that answers every request with `name` as the body.
/// It lives on a thread until the test process ends.
pub fn http_backend(name: &str) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind http backend");
    let addr = listener.local_addr().expect("local addr");
    let body = name.to_owned();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let body = body.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                if !read_request_head(&mut stream) {
                    return;
                }
                let _ = write!(
                    stream,
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    addr
}

/// Splits an agent reply `"NN% state\n"` into (NN, state); `None` if it is not exactly that.
pub fn parse_reply(reply: &str) -> Option<(u8, &str)> {
    let line = reply.strip_suffix('\n')?;
    let (pct, state) = line.split_once("% ")?;
    let pct: u8 = pct.parse().ok()?;
    let valid = (1..=100).contains(&pct)
        && matches!(state, "ready" | "drain" | "maint")
        && !pct_has_leading_zero(line);
    valid.then_some((pct, state))
}

fn pct_has_leading_zero(line: &str) -> bool {
    line.starts_with('0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reply_accepts_only_the_exact_format() {
        assert_eq!(parse_reply("98% ready\n"), Some((98, "ready")));
        assert_eq!(parse_reply("1% maint\n"), Some((1, "maint")));
        assert_eq!(parse_reply("100% drain\n"), Some((100, "drain")));
        for bad in [
            "98% ready",
            "98% ready\n\n",
            "0% ready\n",
            "101% ready\n",
            "098% ready\n",
            "98 ready\n",
            "98% up\n",
            "98%  ready\n",
        ] {
            assert_eq!(parse_reply(bad), None, "{bad:?}");
        }
    }
}
