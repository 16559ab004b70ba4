//! Authoritative DNS: an immutable snapshot (`snapshot`) answered by a hickory-server
//! handler (`handler`) on UDP and TCP (`serve`).

pub mod cookie;
pub mod dnssec;
pub mod fast;
pub mod handler;
pub mod rrl;
pub mod snapshot;
mod tcp;
pub mod traffic;
mod udp;
pub mod wire;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::op::{Header, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use handler::Handler;
pub use snapshot::DnsSnapshot;

/// Bound sockets: one UDP socket per worker (one `SO_REUSEPORT` group) and TCP, on the
/// same port.
#[derive(Debug)]
pub struct Sockets {
    /// UDP, one per worker.
    pub udp: Vec<std::net::UdpSocket>,
    /// TCP.
    pub tcp: TcpListener,
}

impl Sockets {
    /// The address bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// UDP workers for this machine: one per CPU this process may run on.
pub fn default_udp_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Binds `udp_workers` UDP sockets and TCP on `addr`; with port 0, one free port for all.
pub async fn bind(addr: SocketAddr, udp_workers: usize) -> io::Result<Sockets> {
    let mut last_err = None;
    for _ in 0..20 {
        let udp = match udp::bind_group(addr, udp_workers) {
            Ok(udp) => udp,
            // Port 0: the port chosen was taken before the group bound it; try another.
            Err(e) if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => {
                last_err = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        let port = udp[0].local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok(Sockets { udp, tcp }),
            // Port 0: the kernel's free UDP port may be taken for TCP; try another.
            Err(e) if addr.port() == 0 => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("no port free for both UDP and TCP")))
}

/// The DNS server: UDP workers (fast path, hickory path for the rest) and TCP.
pub struct DnsServer {
    udp: Option<udp::UdpWorkers>,
    tcp: Option<tokio::task::JoinHandle<()>>,
    stop_tcp: CancellationToken,
}

impl DnsServer {
    /// Stops both; UDP workers finish their batch first.
    pub async fn shutdown_gracefully(&mut self) {
        if let Some(udp) = self.udp.take() {
            let _ = tokio::task::spawn_blocking(move || udp.stop()).await;
        }
        self.stop_tcp.cancel();
        if let Some(tcp) = self.tcp.take() {
            let _ = tcp.await;
        }
    }
}

/// Starts serving. Must be called inside the Tokio runtime.
pub fn serve(
    sockets: Sockets,
    snapshots: watch::Receiver<Arc<DnsSnapshot>>,
    observer: Option<tokio::sync::mpsc::Sender<crate::model::latency::ResolverSeen>>,
    cookies: Option<cookie::CookieKeys>,
    limiter: Option<Arc<rrl::RateLimiter>>,
) -> io::Result<DnsServer> {
    let handler =
        |observer: &Option<tokio::sync::mpsc::Sender<crate::model::latency::ResolverSeen>>| {
            let handler = Handler::new(snapshots.clone()).with_cookies(cookies.clone());
            match observer {
                Some(o) => handler.with_observer(o.clone()),
                None => handler,
            }
        };
    let udp = udp::UdpWorkers::start(
        sockets.udp,
        &snapshots,
        Arc::new(handler(&observer)),
        observer.clone(),
        limiter,
    )?;
    let stop_tcp = CancellationToken::new();
    let tcp = tokio::spawn(tcp::serve(
        sockets.tcp,
        Arc::new(handler(&observer)),
        stop_tcp.clone(),
    ));
    Ok(DnsServer {
        udp: Some(udp),
        tcp: Some(tcp),
        stop_tcp,
    })
}

/// Collects the encoded response instead of sending it: whole when it fits `limit` (the
/// requestor's payload), else cut to header, question and OPT with TC set.
#[derive(Clone, Default)]
struct Capture {
    response: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    limit: usize,
}

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
        let id = response.metadata().id;
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        // Encoded whole, then cut here if too large: hickory's own truncation leaves the
        // bytes of a record it rolled back in the message.
        encoder.set_max_size(u16::MAX);
        let info = match response.destructive_emit(&mut encoder) {
            Ok(info) => {
                if bytes.len() > self.limit
                    && let Some(cut) = wire::truncated(&bytes)
                {
                    bytes = cut;
                }
                info
            }
            Err(error) => {
                // What hickory sends when a response cannot be encoded: a bare SERVFAIL.
                tracing::warn!(%error, "cannot encode DNS response");
                bytes.clear();
                let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
                metadata.response_code = ResponseCode::ServFail;
                let header = Header {
                    metadata,
                    counts: Default::default(),
                };
                header.emit(&mut BinEncoder::new(&mut bytes))?;
                hickory_server::server::ResponseInfo::from(header)
            }
        };
        *self
            .response
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(bytes);
        Ok(info)
    }
}

/// Answers one UDP datagram the way hickory's server does (no response to fewer than 12
/// bytes or to a response; FORMERR when the message does not parse; the handler
/// otherwise, limited to 512 bytes or our EDNS payload), without sockets. The path for
/// everything the fast path declines, and the reference the differential tests compare
/// the fast path with. `None`: nothing is sent.
pub async fn answer_udp(handler: &Handler, packet: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
    answer(handler, packet, src, Transport::Udp).await
}

/// Which transport a query came over: it decides the largest response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// The requestor's payload, or 512.
    Udp,
    /// Up to 65,535 bytes.
    Tcp,
}

/// [`answer_udp`], for either transport.
pub(crate) async fn answer(
    handler: &Handler,
    packet: &[u8],
    src: SocketAddr,
    transport: Transport,
) -> Option<Vec<u8>> {
    use hickory_server::server::RequestHandler;
    let header = Header::read(&mut BinDecoder::new(packet)).ok()?;
    let protocol = match transport {
        Transport::Udp => hickory_server::net::xfer::Protocol::Udp,
        Transport::Tcp => hickory_server::net::xfer::Protocol::Tcp,
    };
    let request = match hickory_server::server::Request::from_bytes(packet.to_vec(), src, protocol)
    {
        Ok(request) => request,
        Err(_) => {
            if header.metadata.message_type == MessageType::Response {
                return None; // never answer a response: reflection
            }
            let mut metadata = Metadata::response_from_request(&header.metadata);
            metadata.response_code = ResponseCode::FormErr;
            // A query with an OPT gets one back, even in a FORMERR (RFC 6891 §7).
            let opt = wire::query_opt(packet);
            let counts = hickory_proto::op::HeaderCounts {
                additionals: u16::from(opt.is_some()),
                ..Default::default()
            };
            let mut bytes = Vec::with_capacity(HEADER_LEN + 11);
            Header { metadata, counts }
                .emit(&mut BinEncoder::new(&mut bytes))
                .ok()?;
            if let Some(opt) = opt {
                bytes.extend_from_slice(&wire::opt_record(handler::EDNS_PAYLOAD, opt.dnssec_ok));
            }
            return Some(bytes);
        }
    };
    if request.metadata.message_type == MessageType::Response {
        return None; // never answer a response: reflection
    }
    // The requestor's payload, at least 512 (RFC 6891 §6.2.5) and at most ours; 512
    // without EDNS (RFC 1035 §4.2.1).
    let capture = Capture {
        response: Arc::default(),
        limit: match transport {
            Transport::Udp => usize::from(
                request
                    .edns
                    .as_ref()
                    .map_or(512, |e| e.max_payload().clamp(512, handler::EDNS_PAYLOAD)),
            ),
            Transport::Tcp => usize::from(u16::MAX),
        },
    };
    handler
        .handle_request::<_, hickory_server::net::runtime::TokioTime>(&request, capture.clone())
        .await;
    capture
        .response
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
}

/// A DNS header's length.
const HEADER_LEN: usize = 12;

#[cfg(test)]
mod differential;
#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod test_support;

#[cfg(test)]
mod serve_tests {
    use std::net::UdpSocket;
    use std::time::Duration;

    use tokio::sync::watch;

    use super::{bind, serve, test_support};

    const CONFIG: &str = "overwatch:\n  validation: {enabled: false}\ndns:\n  zones: [wild.test]\nregions:\n  - {name: r, servers: [{address: 192.0.2.1}]}\ndomains:\n  - {name: www.wild.test, routing_algorithm: round-robin, regions: [r]}\n";

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_v6_wildcard_answers_v4_and_v6_clients_on_every_worker() {
        let (_tx, rx) = watch::channel(test_support::snapshot("wild.yaml", CONFIG));
        let sockets = bind("[::]:0".parse().expect("addr"), 3)
            .await
            .expect("bind");
        assert_eq!(sockets.udp.len(), 3, "one socket per worker");
        let port = sockets.local_addr().expect("addr").port();
        let mut server = serve(sockets, rx, None, None, None).expect("serve");
        let query = [
            0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'w', b'w', 4, b'w', b'i', b'l',
            b'd', 4, b't', b'e', b's', b't', 0, 0, 1, 0, 1,
        ];
        // Several client sockets, so the kernel spreads them over the workers.
        for (client, server_ip) in [("127.0.0.1:0", "127.0.0.1"), ("[::1]:0", "::1")] {
            for _ in 0..8 {
                let socket = UdpSocket::bind(client).expect("client");
                socket
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                socket.send_to(&query, (server_ip, port)).expect("send");
                let mut buf = [0u8; 512];
                let (n, _) = socket.recv_from(&mut buf).expect("an answer");
                assert_eq!(&buf[..2], &[0xbe, 0xef], "same ID");
                assert_eq!(buf[3] & 0x0f, 0, "NOERROR from {client}");
                assert_eq!(&buf[n - 4..n], &[192, 0, 2, 1], "the A record");
            }
        }
        server.shutdown_gracefully().await;
    }
}
