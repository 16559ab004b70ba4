//! The HAProxy agent-check server: one line per TCP connection, then a clean close.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::monitor::{Snapshot, SnapshotRx, wait_settled};

/// Tunables of the server; [`ServerConfig::default`] is what the binary uses.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Log the peer and the reply of every connection.
    pub log_requests: bool,
    /// Connections handled at once; further ones wait in the kernel's backlog. Bounds
    /// memory and file descriptors however many checkers (or scanners) connect.
    pub max_connections: usize,
    /// How long a peer may take to accept the reply line.
    pub write_timeout: Duration,
    /// After the reply, how long we read and discard what the peer sent (HAProxy's
    /// `agent-send`) while waiting for it to close, so that our close is a FIN, not a reset.
    pub linger: Duration,
    /// After SIGTERM, how long in-flight connections may take to finish.
    pub shutdown_grace: Duration,
    /// How long a connection waits for the first result of every local check before it
    /// is answered (then `down #... first check pending`, never an unchecked `up`).
    pub first_result_within: Duration,
    /// Whether overwatch hears this agent, in one word, for the request log (daemon mode).
    pub overwatch: Option<tokio::sync::watch::Receiver<&'static str>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            log_requests: false,
            max_connections: 1024,
            write_timeout: Duration::from_secs(2),
            linger: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(3),
            first_result_within: Duration::ZERO,
            overwatch: None,
        }
    }
}

/// Serves until `shutdown` is cancelled, then stops accepting and lets connections in
/// flight finish (bounded by `shutdown_grace`).
///
/// Accept errors never end the loop: per-connection ones are skipped, resource
/// exhaustion (EMFILE, ENFILE, ENOBUFS, ENOMEM) is logged and retried after a backoff.
pub async fn serve(
    listener: TcpListener,
    snapshots: SnapshotRx,
    config: ServerConfig,
    shutdown: CancellationToken,
) {
    let config = Arc::new(config);
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let tracker = TaskTracker::new();
    let mut backoff = Backoff::new(Duration::from_millis(5), Duration::from_secs(1));
    let mut accept_errors = RateLimitedLog::new(Duration::from_secs(5));
    loop {
        let slot = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_closed) => break, // never closed; ends the loop rather than spinning
            },
        };
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff.reset();
                let mut snapshot = Arc::clone(&snapshots.borrow());
                let config = Arc::clone(&config);
                let mut settling = snapshot.pending.then(|| snapshots.clone());
                tracker.spawn(async move {
                    if let Some(snapshots) = &mut settling {
                        snapshot = wait_settled(snapshots, config.first_result_within).await;
                    }
                    reply(stream, peer, &snapshot, &config).await;
                    drop(slot);
                });
            }
            Err(err) if is_per_connection(&err) => {
                tracing::debug!(error = %err, "connection failed before accept");
            }
            Err(err) => {
                drop(slot);
                let delay = backoff.next();
                if let Some(suppressed) = accept_errors.allow() {
                    tracing::error!(error = %err, retry_in = ?delay, suppressed, "accept failed; still serving");
                }
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(config.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = tracker.len(),
            "connections still open after the shutdown grace period; closing them"
        );
    }
}

/// Writes the line, half-closes, then discards input until the peer closes (bounded).
async fn reply(
    mut stream: TcpStream,
    peer: SocketAddr,
    snapshot: &Snapshot,
    config: &ServerConfig,
) {
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    let line = snapshot.line.as_str();
    let written =
        match tokio::time::timeout(config.write_timeout, stream.write_all(line.as_bytes())).await {
            Ok(result) => result,
            Err(_elapsed) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
        };
    if let Err(err) = written {
        if config.log_requests {
            tracing::info!(%peer, error = %err, "agent-check reply not delivered");
        }
        return;
    }
    if config.log_requests {
        match &config.overwatch {
            Some(heard) => {
                let overwatch = *heard.borrow();
                tracing::info!(%peer, reply = line.trim_end(), overwatch, "agent-check");
            }
            None => tracing::info!(%peer, reply = line.trim_end(), "agent-check"),
        }
    }
    // FIN after the line: "that is the whole answer". Then read whatever the peer sent
    // (agent-send) until it closes: closing a socket with unread input sends a reset,
    // which HAProxy may count as a failed check.
    let _ = stream.shutdown().await;
    let _ = tokio::time::timeout(config.linger, discard_until_eof(&mut stream)).await;
}

async fn discard_until_eof(stream: &mut TcpStream) {
    let mut sink = [0u8; 512];
    while let Ok(n) = stream.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

/// Errors that concern one connection only (the peer gave up before we accepted it).
fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Exponential backoff for a failing accept loop.
#[derive(Debug)]
struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    fn next(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Lets one message through per period and counts the ones it held back.
#[derive(Debug)]
struct RateLimitedLog {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    fn new(period: Duration) -> Self {
        RateLimitedLog {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last one)` when a message may be logged now.
    fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < self.period => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(5), Duration::from_millis(30));
        let delays: Vec<_> = (0..5).map(|_| b.next().as_millis()).collect();
        assert_eq!(delays, [5, 10, 20, 30, 30]);
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(5));
    }

    #[test]
    fn rate_limited_log_counts_what_it_holds_back() {
        let mut log = RateLimitedLog::new(Duration::from_secs(3600));
        assert_eq!(log.allow(), Some(0));
        assert_eq!(log.allow(), None);
        assert_eq!(log.allow(), None);
        log.last = Some(Instant::now() - Duration::from_secs(7200));
        assert_eq!(log.allow(), Some(2));
    }

    #[test]
    fn only_peer_failures_are_per_connection() {
        assert!(is_per_connection(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
        // EMFILE: the process is out of file descriptors; back off, do not spin.
        assert!(!is_per_connection(&io::Error::from_raw_os_error(24)));
    }
}
