//! Network partitions between processes on loopback, without root: each node reaches
//! each peer through its own TCP relay (a [`Link`]), named in that node's `cluster.peers`.
//! Cutting a link is what a partition does to TCP: open connections die, and new ones
//! are accepted but never answered (a black hole, so callers wait for their timeouts, as
//! across a real partition) until the link heals.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Default)]
struct State {
    cut: AtomicBool,
    stop: AtomicBool,
    /// Both sides of every relayed connection, to kill them when the link is cut.
    open: Mutex<Vec<TcpStream>>,
    /// Connections accepted while cut, held unanswered.
    held: Mutex<Vec<TcpStream>>,
    /// The first [`CAPTURE`] bytes relayed, both directions: what a sniffer on the path
    /// would see.
    seen: Mutex<Vec<u8>>,
}

/// How much of the traffic a link keeps for [`Link::seen`].
const CAPTURE: usize = 8 * 1024 * 1024;

/// One direction of reachability: connections made to [`Link::addr`] reach the target
/// while the link is up.
#[derive(Debug)]
pub struct Link {
    /// Where the caller connects.
    pub addr: SocketAddr,
    state: Arc<State>,
}

fn relay(mut from: TcpStream, mut to: TcpStream, state: &State) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                {
                    let mut seen = state.seen.lock().expect("lock");
                    let room = CAPTURE.saturating_sub(seen.len()).min(n);
                    seen.extend_from_slice(&buf[..room]);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Link {
    /// A link to `target`, up.
    pub fn new(target: SocketAddr) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a link");
        let addr = listener.local_addr().expect("link address");
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if shared.stop.load(Ordering::Acquire) {
                    return;
                }
                let Ok(client) = client else { continue };
                if shared.cut.load(Ordering::Acquire) {
                    shared.held.lock().expect("lock").push(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) else {
                    continue; // the target is down: the caller sees the connection close
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
                    client.try_clone(),
                    server.try_clone(),
                    client.try_clone(),
                    server.try_clone(),
                ) else {
                    continue;
                };
                shared.open.lock().expect("lock").extend([c3, s3]);
                let (one, two) = (Arc::clone(&shared), Arc::clone(&shared));
                std::thread::spawn(move || relay(client, server, &one));
                std::thread::spawn(move || relay(s2, c2, &two));
            }
        });
        Link { addr, state }
    }

    /// Every byte relayed so far (up to 8 MiB), both directions.
    pub fn seen(&self) -> Vec<u8> {
        self.state.seen.lock().expect("lock").clone()
    }

    /// Partitioned: open connections are reset, new ones are held unanswered.
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::Release);
        for stream in self.state.open.lock().expect("lock").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Up again; the connections held meanwhile are closed (their callers gave up).
    pub fn heal(&self) {
        self.state.cut.store(false, Ordering::Release);
        for stream in self.state.held.lock().expect("lock").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        self.heal();
        for stream in self.state.open.lock().expect("lock").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Links between every ordered pair of `n` nodes: `links[i][j]` is how node `i` reaches
/// node `j` (`None` on the diagonal).
#[derive(Debug)]
pub struct Mesh {
    links: Vec<Vec<Option<Link>>>,
}

impl Mesh {
    /// Links to the nodes listening at `targets`.
    pub fn new(targets: &[SocketAddr]) -> Mesh {
        let links = (0..targets.len())
            .map(|i| {
                targets
                    .iter()
                    .enumerate()
                    .map(|(j, t)| (i != j).then(|| Link::new(*t)))
                    .collect()
            })
            .collect();
        Mesh { links }
    }

    /// Where node `i` calls node `j`.
    pub fn addr(&self, i: usize, j: usize) -> Option<SocketAddr> {
        self.links[i][j].as_ref().map(|l| l.addr)
    }

    /// What a sniffer between node `i` and node `j` saw of node `i`'s calls.
    pub fn seen(&self, i: usize, j: usize) -> Vec<u8> {
        self.links[i][j]
            .as_ref()
            .map(Link::seen)
            .unwrap_or_default()
    }

    /// Cuts every link between `side` and the other nodes, both ways.
    pub fn isolate(&self, side: &[usize]) {
        self.each_across(side, Link::cut);
    }

    /// Cuts only node `from`'s calls to node `to` (`to` still reaches `from`).
    pub fn cut_one_way(&self, from: usize, to: usize) {
        if let Some(link) = &self.links[from][to] {
            link.cut();
        }
    }

    /// Every link up again.
    pub fn heal(&self) {
        for link in self.links.iter().flatten().flatten() {
            link.heal();
        }
    }

    fn each_across(&self, side: &[usize], f: impl Fn(&Link)) {
        for (i, row) in self.links.iter().enumerate() {
            for (j, link) in row.iter().enumerate() {
                if side.contains(&i) != side.contains(&j)
                    && let Some(link) = link
                {
                    f(link);
                }
            }
        }
    }
}
