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

pub use handler::{Handler, ResolverSeen};
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
pub fn serve(
    sockets: Sockets,
    snapshots: watch::Receiver<Arc<DnsSnapshot>>,
    observer: Option<tokio::sync::mpsc::Sender<handler::ResolverSeen>>,
) -> Server<Handler> {
    let handler = Handler::new(snapshots);
    let handler = match observer {
        Some(o) => handler.with_observer(o),
        None => handler,
    };
    let mut server = Server::new(handler);
    server.register_socket(sockets.udp);
    server.register_listener(sockets.tcp, TCP_IDLE, 64);
    server
}

/// Collects the encoded response instead of sending it.
#[derive(Clone, Default)]
struct Capture(Arc<std::sync::Mutex<Option<Vec<u8>>>>);

#[async_trait::async_trait]
impl hickory_server::server::ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: hickory_server::zone_handler::MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
        >,
    ) -> Result<hickory_server::server::ResponseInfo, hickory_server::net::NetError> {
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = hickory_proto::serialize::binary::BinEncoder::new(&mut bytes);
        // The UDP limit without EDNS: what the server would enforce on that path.
        encoder.set_max_size(u16::MAX);
        let info = response.destructive_emit(&mut encoder)?;
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(bytes);
        Ok(info)
    }
}

/// Answers one packet through the same handler the server runs, without sockets: the
/// reference path for fuzzing and differential tests. `None` when the bytes are not a
/// DNS message hickory can parse (the server then answers FORMERR or nothing).
pub async fn answer_packet(handler: &Handler, packet: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
    use hickory_server::server::RequestHandler;
    let request = hickory_server::server::Request::from_bytes(
        packet.to_vec(),
        src,
        hickory_server::net::xfer::Protocol::Udp,
    )
    .ok()?;
    let capture = Capture::default();
    handler
        .handle_request::<_, hickory_server::net::runtime::TokioTime>(&request, capture.clone())
        .await;
    capture
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
}

#[cfg(test)]
mod fuzz;
