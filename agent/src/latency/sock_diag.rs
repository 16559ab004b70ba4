//! Reads the kernel's smoothed RTT (`tcpi_rtt`) of every established TCP connection to
//! the backends' ports, through netlink `sock_diag` (`NETLINK_SOCK_DIAG`, IPv4 and IPv6).
//!
//! Permissions: dumping `tcp_info` of sockets needs no capability on Linux. A process
//! sees the sockets of its network namespace; an unprivileged one sees them all there
//! (what `ss -ti` shows without root). Only socket *kill* and some BPF filters need
//! CAP_NET_ADMIN, and neither is used here.

use std::collections::HashSet;
use std::io;
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::nlas::Nla;
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr};

use super::collector::Connection;

/// Every established TCP connection whose local port is in `ports`.
pub fn established(ports: &HashSet<u16>) -> io::Result<Vec<Connection>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut found = Vec::new();
    // One dump per port and family: the kernel skips sockets of other local ports itself
    // (inet_diag compares the request's source port while walking its hash table), so a
    // busy host's client-side and unrelated sockets are never copied out and parsed.
    for &port in ports {
        for family in [AF_INET, AF_INET6] {
            dump(&mut socket, family, port, &mut found)?;
        }
    }
    Ok(found)
}

fn dump(socket: &mut Socket, family: u8, port: u16, found: &mut Vec<Connection>) -> io::Result<()> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut socket_id = if family == AF_INET {
        SocketId::new_v4()
    } else {
        SocketId::new_v6()
    };
    socket_id.source_port = port;
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::INFO,
            states: StateFlags::ESTABLISHED,
            socket_id,
        })
        .into(),
    );
    packet.finalize();
    let mut request = vec![0; packet.buffer_len()];
    packet.serialize(&mut request);
    socket.send(&request, 0)?;

    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let size = socket.recv(&mut &mut buffer[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let message = NetlinkMessage::<SockDiagMessage>::deserialize(&buffer[offset..size])
                .map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {e}"))
                })?;
            let length = message.header.length as usize;
            match message.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => {
                    return Err(io::Error::other(format!("sock_diag: {e}")));
                }
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                    let id = &response.header.socket_id;
                    if id.source_port == port {
                        let rtt = response.nlas.iter().find_map(|nla| match nla {
                            Nla::TcpInfo(info) => Some(Duration::from_micros(u64::from(info.rtt))),
                            _ => None,
                        });
                        if let Some(rtt) = rtt {
                            found.push(Connection {
                                peer: id.destination_address,
                                peer_port: id.destination_port,
                                local_port: id.source_port,
                                rtt,
                                cookie: u64::from_ne_bytes(id.cookie),
                            });
                        }
                    }
                }
                _ => {}
            }
            if length == 0 {
                break;
            }
            offset += length;
        }
    }
}
