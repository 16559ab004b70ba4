//! Where the member's packets go: a real UDP socket, or an in-memory network on which a
//! test can cut links (partitions, one-way loss) and run with paused time.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// A datagram transport. Both methods are cancel-safe (the member polls `recv_from` in a
/// `select!` beside its commands and timers).
pub trait Transport: Send + Sync + 'static {
    /// The address this transport receives on.
    fn local_addr(&self) -> SocketAddr;
    /// Sends one datagram (best effort, like UDP: a lost packet is not an error).
    fn send_to(&self, packet: &[u8], to: SocketAddr)
    -> impl Future<Output = io::Result<()>> + Send;
    /// Receives one datagram into `buf`: its length and sender.
    fn recv_from(
        &mut self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;
}

/// Receive buffer asked for: a fleet changing status at once sends one report per agent in
/// the same instant; with Linux's default (~208 KiB, ~100 sealed reports) the kernel drops
/// most of such a burst (measured: 2,450 drops for 1,000 agents), and convergence waits for
/// heartbeats. The kernel caps the request at `net.core.rmem_max`.
const RECEIVE_BUFFER: usize = 4 << 20;

/// The production transport: one UDP socket.
#[derive(Debug)]
pub struct UdpTransport {
    socket: UdpSocket,
    local: SocketAddr,
}

impl UdpTransport {
    /// Binds `addr` with a large receive buffer.
    pub fn bind(addr: SocketAddr) -> io::Result<UdpTransport> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        if let Err(err) = socket.set_recv_buffer_size(RECEIVE_BUFFER) {
            tracing::warn!(error = %err, "cannot enlarge the gossip receive buffer");
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        let socket = UdpSocket::from_std(socket.into())?;
        let local = socket.local_addr()?;
        Ok(UdpTransport { socket, local })
    }
}

impl Transport for UdpTransport {
    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    async fn send_to(&self, packet: &[u8], to: SocketAddr) -> io::Result<()> {
        self.socket.send_to(packet, to).await.map(drop)
    }

    async fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.socket.recv_from(buf).await
    }
}

type Datagram = (Vec<u8>, SocketAddr);

/// An in-memory datagram network for tests: addresses are handed out like ports, links
/// can be cut in one direction or both, and delivery is immediate (so a test with paused
/// time sees only the protocol's own timers).
#[derive(Debug, Clone, Default)]
pub struct MemNetwork {
    /// One lock for the whole network: tests send a few packets per simulated millisecond;
    /// no await happens while it is held.
    inner: Arc<Mutex<MemInner>>,
}

#[derive(Debug, Default)]
struct MemInner {
    ports: HashMap<SocketAddr, mpsc::UnboundedSender<Datagram>>,
    cut: HashSet<(SocketAddr, SocketAddr)>,
    next_port: u16,
}

impl MemNetwork {
    /// A new, empty network.
    pub fn new() -> MemNetwork {
        MemNetwork::default()
    }

    /// Binds `addr` (port 0: the next free port on that IP).
    pub fn bind(&self, addr: SocketAddr) -> io::Result<MemTransport> {
        let mut inner = self.lock();
        let mut addr = addr;
        if addr.port() == 0 {
            loop {
                inner.next_port = inner.next_port.wrapping_add(1).max(1);
                addr.set_port(inner.next_port);
                if !inner.ports.contains_key(&addr) {
                    break;
                }
            }
        }
        if inner.ports.contains_key(&addr) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr} is already bound on this in-memory network"),
            ));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        inner.ports.insert(addr, tx);
        Ok(MemTransport {
            local: addr,
            network: self.clone(),
            inbox: rx,
        })
    }

    /// Drops every packet from `from` to `to` until healed (a one-way fault).
    pub fn cut(&self, from: SocketAddr, to: SocketAddr) {
        self.lock().cut.insert((from, to));
    }

    /// Cuts both directions between `a` and `b`.
    pub fn partition(&self, a: SocketAddr, b: SocketAddr) {
        self.cut(a, b);
        self.cut(b, a);
    }

    /// Restores every cut link.
    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    fn deliver(&self, from: SocketAddr, to: SocketAddr, packet: &[u8]) {
        let inner = self.lock();
        if inner.cut.contains(&(from, to)) {
            return;
        }
        if let Some(inbox) = inner.ports.get(&to) {
            // A closed inbox is a member that stopped: the packet is lost, as on UDP.
            let _ = inbox.send((packet.to_vec(), from));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One bound address on a [`MemNetwork`]; unbinds on drop.
#[derive(Debug)]
pub struct MemTransport {
    local: SocketAddr,
    network: MemNetwork,
    inbox: mpsc::UnboundedReceiver<Datagram>,
}

impl Drop for MemTransport {
    fn drop(&mut self) {
        self.network.lock().ports.remove(&self.local);
    }
}

impl Transport for MemTransport {
    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    async fn send_to(&self, packet: &[u8], to: SocketAddr) -> io::Result<()> {
        self.network.deliver(self.local, to, packet);
        Ok(())
    }

    async fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match self.inbox.recv().await {
            Some((packet, from)) => {
                let n = packet.len().min(buf.len());
                buf[..n].copy_from_slice(&packet[..n]);
                Ok((n, from))
            }
            // The network holds a sender while we are bound, so this does not happen;
            // if it did, waiting forever is what a silent UDP socket does.
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[tokio::test]
    async fn packets_arrive_until_a_link_is_cut_one_way() {
        let net = MemNetwork::new();
        let mut a = net.bind(addr("10.0.0.1:0")).expect("a");
        let mut b = net.bind(addr("10.0.0.2:7946")).expect("b");
        assert!(net.bind(addr("10.0.0.2:7946")).is_err(), "taken");
        let mut buf = [0u8; 16];
        a.send_to(b"hi", b.local_addr()).await.expect("send");
        assert_eq!(
            b.recv_from(&mut buf).await.expect("recv"),
            (2, a.local_addr())
        );
        net.cut(a.local_addr(), b.local_addr());
        a.send_to(b"lost", b.local_addr()).await.expect("send");
        b.send_to(b"back", a.local_addr()).await.expect("send");
        assert_eq!(a.recv_from(&mut buf).await.expect("recv").0, 4);
        assert_eq!(&buf[..4], b"back", "the other direction still works");
        net.heal();
        a.send_to(b"again", b.local_addr()).await.expect("send");
        assert_eq!(b.recv_from(&mut buf).await.expect("recv").0, 5);
        assert_eq!(&buf[..5], b"again", "the cut packet was lost, not delayed");
    }
}
