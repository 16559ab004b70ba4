//! Authoritative DNS: an immutable snapshot (`snapshot`) answered by a hickory-server
//! handler (`handler`) on UDP and TCP (`serve`).

pub mod handler;
pub mod snapshot;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

pub use handler::Handler;
pub use snapshot::DnsSnapshot;

/// How long a TCP client may stay idle between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Bound UDP and TCP sockets on the same port.
#[derive(Debug)]
pub struct Sockets {
    /// UDP.
    pub udp: UdpSocket,
    /// TCP.
    pub tcp: TcpListener,
}

/// Binds UDP and TCP on `addr`; with port 0, one free port for both.
pub async fn bind(addr: SocketAddr) -> io::Result<Sockets> {
    let mut last_err = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind(addr).await?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok(Sockets { udp, tcp }),
            // Port 0: the kernel's free UDP port may be taken for TCP; try another.
            Err(e) if addr.port() == 0 => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("no port free for both UDP and TCP")))
}

/// Starts serving; the returned server stops with `shutdown_gracefully`.
pub fn serve(sockets: Sockets, snapshots: watch::Receiver<Arc<DnsSnapshot>>) -> Server<Handler> {
    let mut server = Server::new(Handler::new(snapshots));
    server.register_socket(sockets.udp);
    server.register_listener(sockets.tcp, TCP_IDLE, 64);
    server
}
