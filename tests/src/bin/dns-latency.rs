//! Latency under load, for bench/dns.sh: sends one query for NAME/A at a fixed rate to
//! 127.0.0.1:PORT for SECONDS while dnsperf loads the server, and prints the response
//! time percentiles of those queries:
//!
//! `dns-latency PORT NAME RATE SECONDS` →
//! `LATENCY sent=.. answered=.. p50_us=.. p90_us=.. p99_us=.. max_us=..`

use std::io::Write;
use std::net::UdpSocket;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [port, name, rate, seconds] = args.as_slice() else {
        eprintln!("usage: dns-latency PORT NAME RATE SECONDS");
        return ExitCode::from(2);
    };
    let (Ok(port), Ok(rate), Ok(seconds)) = (
        port.parse::<u16>(),
        rate.parse::<u32>(),
        seconds.parse::<u64>(),
    ) else {
        eprintln!("dns-latency: PORT, RATE and SECONDS must be numbers");
        return ExitCode::from(2);
    };
    match run(port, name, rate.max(1), Duration::from_secs(seconds)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dns-latency: {e}");
            ExitCode::FAILURE
        }
    }
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.extend_from_slice(&[0, 0, 1, 0, 1]);
    p
}

fn run(port: u16, name: &str, rate: u32, length: Duration) -> std::io::Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(("127.0.0.1", port))?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    // Send time by query ID (IDs wrap only after 65,536 queries: longer than any run).
    let sent_at: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; 65_536]));
    let receiver = {
        let socket = socket.try_clone()?;
        let sent_at = Arc::clone(&sent_at);
        std::thread::spawn(move || {
            let mut rtts = Vec::new();
            let mut buf = [0u8; 1500];
            let stop = Instant::now() + length + Duration::from_secs(1);
            while Instant::now() < stop {
                let Ok(n) = socket.recv(&mut buf) else {
                    continue;
                };
                if n < 12 {
                    continue;
                }
                let id = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
                let sent = sent_at.lock().unwrap_or_else(|e| e.into_inner())[id].take();
                if let Some(sent) = sent {
                    rtts.push(sent.elapsed());
                }
            }
            rtts
        })
    };
    let interval = Duration::from_secs(1) / rate;
    let start = Instant::now();
    let mut sent = 0u32;
    while start.elapsed() < length {
        let due = start + interval * sent;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let id = (sent % 65_536) as u16;
        sent_at.lock().unwrap_or_else(|e| e.into_inner())[usize::from(id)] = Some(Instant::now());
        socket.send(&query(id, name))?;
        sent += 1;
    }
    let mut rtts = receiver
        .join()
        .map_err(|_| std::io::Error::other("receiver panicked"))?;
    rtts.sort();
    let pct = |p: f64| {
        rtts.get(((rtts.len() as f64 * p) as usize).min(rtts.len().saturating_sub(1)))
            .map_or(0, |d| d.as_micros())
    };
    writeln!(
        std::io::stdout(),
        "LATENCY sent={sent} answered={} p50_us={} p90_us={} p99_us={} max_us={}",
        rtts.len(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        rtts.last().map_or(0, |d| d.as_micros())
    )?;
    Ok(())
}
