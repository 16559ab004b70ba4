//! The collector interface: every established TCP connection to the backends' ports with
//! the system's smoothed RTT of it, whatever the platform's way of reading it:
//!
//! - Linux: netlink `sock_diag` ([`super::sock_diag`]);
//! - Windows: the IP Helper's extended TCP statistics ([`super::estats`]);
//! - elsewhere: unavailable, and latency learning says it is off.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// One established connection to a backend port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    /// The client.
    pub peer: IpAddr,
    /// The peer's port.
    pub peer_port: u16,
    /// The backend port it reached.
    pub local_port: u16,
    /// The system's smoothed RTT.
    pub rtt: Duration,
    /// Unique while the connection lives: the kernel's socket cookie on Linux, a hash of
    /// the four-tuple on Windows.
    pub cookie: u64,
}

/// Every established TCP connection whose local port is in `ports`. An error means this
/// system cannot say (no `sock_diag`, no extended TCP statistics, no permission): the
/// caller turns latency learning off and says why.
pub fn established(ports: &HashSet<u16>) -> io::Result<Vec<Connection>> {
    #[cfg(target_os = "linux")]
    return super::sock_diag::established(ports);
    #[cfg(windows)]
    return super::estats::established(ports);
    #[cfg(not(any(target_os = "linux", windows)))]
    {
        let _ = ports;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no way to read connections' RTT on this system",
        ))
    }
}

/// Remembers when each connection was first seen, so only connections older than
/// `min_age` count (a fresh connection's RTT is mostly the handshake's).
#[derive(Debug)]
pub struct AgeFilter {
    min_age: Duration,
    first_seen: HashMap<u64, Instant>,
}

impl AgeFilter {
    /// A filter for `min_age`.
    pub fn new(min_age: Duration) -> AgeFilter {
        AgeFilter {
            min_age,
            first_seen: HashMap::new(),
        }
    }

    /// The connections at least `min_age` old; forgets the ones that are gone.
    pub fn old_enough(&mut self, connections: Vec<Connection>, now: Instant) -> Vec<Connection> {
        let mut next = HashMap::with_capacity(connections.len());
        let mut kept = Vec::new();
        for c in connections {
            let first = self.first_seen.get(&c.cookie).copied().unwrap_or(now);
            next.insert(c.cookie, first);
            if now.duration_since(first) >= self.min_age {
                kept.push(c);
            }
        }
        self.first_seen = next;
        kept
    }
}
