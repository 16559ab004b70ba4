//! Agent-check benchmark: replies/s, latency p50/p99 and memory of `opengslb-agent`, side by
//! side with a minimal reference responder written for this benchmark, on loopback.
//!
//! Run: `cargo build --release --bins && cargo bench -p opengslb-tests --bench agent_check`
//! Knobs (environment): `BENCH_SECS` (per phase, default 5), `BENCH_CLIENTS` (saturation
//! client threads, default 8).
//!
//! Both servers run as separate processes pinned to CPU 1; the load generator is pinned
//! to CPU 0, so the figures are one server core against one client core.

// A benchmark's output is its figures.
#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use opengslb_tests::bench::{knob, memory, percentile};
use opengslb_tests::process::Spawned;
use opengslb_tests::{
    TempDir, agent_binary, listening_addr, parse_reply, poll_until, remove, touch,
};

const ROLE_ENV: &str = "OPENGSLB_BENCH_ROLE";
const SERVER_CPU: usize = 1;
const CLIENT_CPU: usize = 0;

fn main() {
    if std::env::var(ROLE_ENV).as_deref() == Ok("reference") {
        reference_responder();
        return;
    }
    // cargo bench passes `--bench`; nothing else is accepted.
    let secs = knob("BENCH_SECS", 5);
    let clients = knob("BENCH_CLIENTS", 8) as usize;
    let phase = Duration::from_secs(secs);
    let pinned = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    if pinned {
        pin_to(CLIENT_CPU);
    }

    let dir = TempDir::new("bench");
    let drain = dir.join("drain");
    let mut agent_cmd = Command::new(agent_binary());
    agent_cmd
        .args(["-port", "0", "--listen", "127.0.0.1", "-drain-file"])
        .arg(&drain);
    let mut reference_cmd = Command::new(std::env::current_exe().expect("current_exe"));
    reference_cmd.env(ROLE_ENV, "reference");

    let mut results = Vec::new();
    for (name, command) in [("opengslb-agent", agent_cmd), ("reference", reference_cmd)] {
        let server = start_pinned(name, command, pinned);
        let addr = listening_addr(&server);
        poll_until(Duration::from_secs(5), "first reply", || check(addr).ok());
        let steady = steady_load(addr, 1000, phase);
        let rss_steady = memory(server.pid());
        let saturation = saturation_load(addr, clients, phase);
        let rss_saturation = memory(server.pid());
        results.push((name, steady, rss_steady, saturation, rss_saturation));
    }
    let propagation = drain_propagation(&drain, pinned);

    println!();
    println!(
        "agent-check on loopback: servers pinned to CPU {SERVER_CPU}, load generator on CPU {CLIENT_CPU} ({}), {secs} s per phase",
        if pinned {
            "pinned"
        } else {
            "NOT pinned: fewer than 2 CPUs"
        }
    );
    println!(
        "{:<40} {:>16} {:>16} {:>8}",
        "", results[0].0, results[1].0, "ratio"
    );
    let (a, r) = (&results[0], &results[1]);
    row(
        "steady 1000/s: checks answered per s",
        a.1.rate(),
        r.1.rate(),
    );
    row(
        "steady 1000/s: latency p50 (µs)",
        a.1.pct(50.0),
        r.1.pct(50.0),
    );
    row(
        "steady 1000/s: latency p99 (µs)",
        a.1.pct(99.0),
        r.1.pct(99.0),
    );
    row(
        "steady 1000/s: latency max (µs)",
        a.1.pct(100.0),
        r.1.pct(100.0),
    );
    row(
        "steady 1000/s: errors",
        a.1.errors as f64,
        r.1.errors as f64,
    );
    row(
        &format!("saturation ({clients} clients): replies per s"),
        a.3.rate(),
        r.3.rate(),
    );
    row("saturation: latency p50 (µs)", a.3.pct(50.0), r.3.pct(50.0));
    row("saturation: latency p99 (µs)", a.3.pct(99.0), r.3.pct(99.0));
    row("saturation: errors", a.3.errors as f64, r.3.errors as f64);
    row("RSS after steady load (KiB)", a.2.0 as f64, r.2.0 as f64);
    row("RSS after saturation (KiB)", a.4.0 as f64, r.4.0 as f64);
    row("peak RSS, VmHWM (KiB)", a.4.1 as f64, r.4.1 as f64);
    println!(
        "drain file created/removed → first reply that shows it, {} flips: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        propagation.len(),
        percentile(&propagation, 50.0) / 1000.0,
        percentile(&propagation, 99.0) / 1000.0,
        percentile(&propagation, 100.0) / 1000.0,
    );
}

fn row(label: &str, agent: f64, reference: f64) {
    let ratio = if reference > 0.0 {
        format!("{:.2}", agent / reference)
    } else {
        "-".into()
    };
    println!("{label:<40} {agent:>16.0} {reference:>16.0} {ratio:>8}");
}

/// Latencies of completed checks (µs) and the count of failed ones.
struct Load {
    latencies: Vec<f64>,
    errors: u64,
    elapsed: Duration,
}

impl Load {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> f64 {
        percentile(&self.latencies, p)
    }
}

/// One check as haproxy does it: connect, read one line, close.
fn check(addr: SocketAddr) -> std::io::Result<String> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line)
}

/// Open-loop load: a check is due every 1/rate s; latency counts from when it was due,
/// so a slow server cannot hide its queueing (no coordinated omission).
fn steady_load(addr: SocketAddr, rate: u64, phase: Duration) -> Load {
    let interval = Duration::from_secs(1) / rate as u32;
    let start = Instant::now();
    let mut latencies = Vec::with_capacity((rate * phase.as_secs()) as usize);
    let mut errors = 0;
    let mut due = start;
    while due < start + phase {
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        match check(addr) {
            Ok(line) if parse_reply(&line).is_some() => {
                latencies.push(due.elapsed().as_secs_f64() * 1e6)
            }
            _ => errors += 1,
        }
        due += interval;
    }
    Load {
        latencies,
        errors,
        elapsed: start.elapsed(),
    }
}

/// Closed-loop load: `clients` threads each check back to back.
fn saturation_load(addr: SocketAddr, clients: usize, phase: Duration) -> Load {
    let start = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                while start.elapsed() < phase {
                    let t = Instant::now();
                    match check(addr) {
                        Ok(line) if parse_reply(&line).is_some() => {
                            latencies.push(t.elapsed().as_secs_f64() * 1e6)
                        }
                        _ => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut load = Load {
        latencies: Vec::new(),
        errors: 0,
        elapsed: Duration::ZERO,
    };
    for worker in workers {
        let (latencies, errors) = worker.join().expect("load thread");
        load.latencies.extend(latencies);
        load.errors += errors;
    }
    load.elapsed = start.elapsed();
    load
}

/// Time from creating/removing the drain file to the first reply that shows it (µs).
fn drain_propagation(drain: &std::path::Path, pinned: bool) -> Vec<f64> {
    let mut command = Command::new(agent_binary());
    command
        .args(["-port", "0", "--listen", "127.0.0.1", "-drain-file"])
        .arg(drain);
    let agent = start_pinned("opengslb-agent", command, pinned);
    let addr = listening_addr(&agent);
    let mut samples = Vec::new();
    for flip in 0..40 {
        let want = if flip % 2 == 0 { "drain" } else { "ready" };
        let t = Instant::now();
        if flip % 2 == 0 {
            touch(drain)
        } else {
            remove(drain)
        }
        poll_until(Duration::from_secs(5), want, || {
            check(addr)
                .ok()
                .filter(|l| parse_reply(l).map(|(_, s)| s) == Some(want))
        });
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    samples
}

fn start_pinned(name: &str, mut command: Command, pinned: bool) -> Spawned {
    if pinned {
        use std::os::unix::process::CommandExt;
        #[allow(unsafe_code)]
        // SAFETY: sched_setaffinity is async-signal-safe; the set lives on the stack.
        unsafe {
            command.pre_exec(|| {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(SERVER_CPU, &mut set);
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    Spawned::start(name, command)
}

fn pin_to(cpu: usize) {
    #[allow(unsafe_code)]
    // SAFETY: a zeroed cpu_set_t is valid; sched_setaffinity(0) applies to this thread,
    // and threads spawned later inherit it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The reference: the least a correct agent-check responder must do. Two threads accept
/// on one socket; each connection gets a fixed line, a FIN, and its input read to EOF so
/// that the close is clean (the same protocol work the agent does, nothing else).
fn reference_responder() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    eprintln!("listening addr={}", listener.local_addr().expect("addr"));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let listener = listener.try_clone().expect("clone listener");
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { continue };
                    if stream.write_all(b"100% ready\n").is_err() {
                        continue;
                    }
                    let _ = stream.shutdown(std::net::Shutdown::Write);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                    let mut sink = [0u8; 512];
                    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
}
