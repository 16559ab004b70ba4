//! Where the agent-check listening socket comes from: our own bind, or systemd.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::{TcpListener, TcpSocket};

/// Pending connections the kernel queues for us: many haproxy processes may check at once.
const BACKLOG: u32 = 1024;

/// Why there is no listening socket.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Binding failed (port in use, address not on this host, no permission for a low port).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address we tried.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// `-systemd` was given but systemd passed no socket.
    #[error(
        "-systemd: no listening socket was passed by systemd socket activation \
         (LISTEN_FDS is unset or LISTEN_PID names another process); start the agent \
         through opengslb-agent.socket, or use -port N instead"
    )]
    NoSystemdSocket,
    /// `-systemd` on a system without systemd.
    #[error(
        "-systemd: socket activation is systemd's, and this system has none; use -port N \
         (or, on Windows, run the agent as a service with --service)"
    )]
    NoSystemd,
    /// systemd passed something that is not a TCP listening socket.
    #[error("-systemd: the socket passed by systemd (fd 3) is unusable: {0}")]
    SystemdSocket(io::Error),
}

/// Binds `listen:port`; without an address, all IPv6 and IPv4 addresses (one dual-stack
/// socket, as Go's `:port`), or all IPv4 addresses on a host without IPv6.
pub fn bind(listen: Option<IpAddr>, port: u16) -> Result<TcpListener, ListenError> {
    match listen {
        Some(ip) => bind_one(SocketAddr::new(ip, port)),
        None => match bind_one(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)) {
            Err(ListenError::Bind { source, .. })
                if source.raw_os_error() == Some(EAFNOSUPPORT)
                    || source.kind() == io::ErrorKind::AddrNotAvailable =>
            {
                tracing::info!("IPv6 is not available on this host; listening on IPv4 only");
                bind_one(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
            }
            other => other,
        },
    }
}

/// EAFNOSUPPORT: the kernel was built or booted without IPv6 (Linux), or the IPv6 stack
/// is not installed (Windows' WSAEAFNOSUPPORT).
#[cfg(not(windows))]
const EAFNOSUPPORT: i32 = 97;
#[cfg(windows)]
const EAFNOSUPPORT: i32 = 10047;

fn bind_one(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    let bind = || -> io::Result<TcpListener> {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        // Restarting the agent must not wait for old connections in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(BACKLOG)
    };
    bind().map_err(|source| ListenError::Bind { addr, source })
}

/// Takes the first socket systemd passed (`LISTEN_FDS`, `LISTEN_PID`).
#[cfg(windows)]
pub fn from_systemd() -> Result<TcpListener, ListenError> {
    Err(ListenError::NoSystemd)
}

/// Takes the first socket systemd passed (`LISTEN_FDS`, `LISTEN_PID`).
#[cfg(unix)]
pub fn from_systemd() -> Result<TcpListener, ListenError> {
    let mut fds = listenfd::ListenFd::from_env();
    let listener = fds
        .take_tcp_listener(0)
        .map_err(ListenError::SystemdSocket)?
        .ok_or(ListenError::NoSystemdSocket)?;
    listener
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(listener))
        .map_err(ListenError::SystemdSocket)
}
