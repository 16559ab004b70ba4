//! Network namespaces joined by TUN links that add real delay, for latency tests on one
//! machine. This kernel has no `tc netem`; a userspace forwarder holding packets keeps
//! every TCP connection end to end (a TCP proxy would terminate it and hide the RTT).
//!
//! Each link joins a client namespace to the server namespace: a TUN device on each side,
//! and two threads copying raw IP packets between them. Packets towards the server wait
//! for the delay configured for their destination address; replies pass at once, so the
//! added round-trip time is exactly that delay.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Why these tests cannot run here (they need root, `ip` and `/dev/net/tun`).
pub fn unavailable() -> Option<String> {
    #[allow(unsafe_code)]
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        return Some("not root: network namespaces need CAP_SYS_ADMIN".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("no `ip` command (iproute2)".into()),
    }
}

/// Runs `ip ARGS`, panicking with its output on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    /// Its name.
    pub name: String,
}

impl Netns {
    /// Creates `name` (unique per test process) with loopback up.
    pub fn new(label: &str) -> Netns {
        let name = format!("ogs-{label}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Netns { name }
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

/// Opens a TUN device `name` in namespace `ns` (from the calling thread, which moves
/// into that namespace).
fn open_tun(ns: &str, name: &str) -> File {
    let handle = File::open(format!("/run/netns/{ns}")).expect("netns handle");
    #[allow(unsafe_code)]
    // SAFETY: setns with a valid namespace fd changes only this thread's namespace.
    let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .expect("/dev/net/tun");
    let mut ifreq = [0u8; 40];
    ifreq[..name.len()].copy_from_slice(name.as_bytes());
    ifreq[16..18].copy_from_slice(&(IFF_TUN | IFF_NO_PI).to_ne_bytes());
    #[allow(unsafe_code)]
    // SAFETY: TUNSETIFF reads and writes a struct ifreq (40 bytes), which the buffer is.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, ifreq.as_mut_ptr()) };
    assert_eq!(
        rc,
        0,
        "TUNSETIFF {name}: {}",
        std::io::Error::last_os_error()
    );
    tun
}

/// A delaying link between a client namespace and the server namespace.
#[derive(Debug)]
pub struct Link {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Destination address of an IPv4 packet.
fn destination(packet: &[u8]) -> Option<Ipv4Addr> {
    (packet.len() >= 20 && packet[0] >> 4 == 4)
        .then(|| Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]))
}

impl Link {
    /// Joins `client` (address `client_ip`/24 on its TUN) to `server`, where the client's
    /// /24 is routed back over this link; `server_net` (e.g. `10.100.0.0/24`) is routed
    /// from the client over it. Packets to each address in `delays` wait that long.
    pub fn new(
        client: &Netns,
        server: &Netns,
        index: u8,
        client_ip: Ipv4Addr,
        server_net: &str,
        delays: HashMap<Ipv4Addr, Duration>,
    ) -> Link {
        let (client_dev, server_dev) = (format!("tc{index}"), format!("ts{index}"));
        let (cn, sn) = (client.name.clone(), server.name.clone());
        let (cd, sd) = (client_dev.clone(), server_dev.clone());
        // Opening both devices moves the opening thread into each namespace in turn.
        let (client_tun, server_tun) =
            std::thread::spawn(move || (open_tun(&cn, &cd), open_tun(&sn, &sd)))
                .join()
                .expect("open tun devices");
        let octets = client_ip.octets();
        let client_net = format!("{}.{}.{}.0/24", octets[0], octets[1], octets[2]);
        client.ip(&[
            "addr",
            "add",
            &format!("{client_ip}/24"),
            "dev",
            &client_dev,
        ]);
        client.ip(&["link", "set", &client_dev, "up"]);
        client.ip(&["route", "add", server_net, "dev", &client_dev]);
        server.ip(&["link", "set", &server_dev, "up"]);
        server.ip(&["route", "add", &client_net, "dev", &server_dev]);
        for ns in [client, server] {
            let _ = ns
                .command("sysctl")
                .args(["-qw", "net.ipv4.conf.all.rp_filter=0"])
                .output();
        }

        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        // Towards the server: held for the destination's delay (FIFO per destination,
        // so one writer thread per delay keeps order).
        let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
        let mut upstream_reader = client_tun.try_clone().expect("clone tun");
        let delays = Arc::new(delays);
        {
            let stop = Arc::clone(&stop);
            let delays = Arc::clone(&delays);
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(n) = upstream_reader.read(&mut buf) else {
                        return;
                    };
                    let packet = buf[..n].to_vec();
                    let delay = destination(&packet)
                        .and_then(|d| delays.get(&d).copied())
                        .unwrap_or_default();
                    if tx.send((Instant::now() + delay, packet)).is_err() {
                        return;
                    }
                }
            }));
        }
        {
            let mut server_writer = server_tun.try_clone().expect("clone tun");
            threads.push(std::thread::spawn(move || {
                // Packets with different delays leave in due order: a small heap.
                let mut pending: std::collections::BinaryHeap<
                    std::cmp::Reverse<(Instant, u64, Vec<u8>)>,
                > = std::collections::BinaryHeap::new();
                let mut seq = 0u64;
                loop {
                    let wait = pending.peek().map(|std::cmp::Reverse((at, _, _))| {
                        at.saturating_duration_since(Instant::now())
                    });
                    let received = match wait {
                        Some(w) => rx.recv_timeout(w),
                        None => rx
                            .recv()
                            .map_err(|_| std::sync::mpsc::RecvTimeoutError::Disconnected),
                    };
                    match received {
                        Ok((at, packet)) => {
                            seq += 1;
                            pending.push(std::cmp::Reverse((at, seq, packet)));
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                    while pending
                        .peek()
                        .is_some_and(|std::cmp::Reverse((at, _, _))| *at <= Instant::now())
                    {
                        if let Some(std::cmp::Reverse((_, _, packet))) = pending.pop() {
                            let _ = server_writer.write_all(&packet);
                        }
                    }
                }
            }));
        }
        // Back to the client: at once.
        {
            let stop = Arc::clone(&stop);
            let mut server_reader = server_tun;
            let mut client_writer = client_tun;
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(n) = server_reader.read(&mut buf) else {
                        return;
                    };
                    let _ = client_writer.write_all(&buf[..n]);
                }
            }));
        }
        Link { stop, threads }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // The reader threads block in read(); deleting the namespaces (which removes the
        // devices) ends those reads with an error. The threads are detached here.
        self.stop.store(true, Ordering::Relaxed);
        self.threads.clear();
    }
}
