//! DNS over TCP (RFC 7766): length-prefixed messages, several per connection and
//! pipelined (answered in order), under caps so that a client holding connections open
//! cannot starve others: at most [`MAX_CONNECTIONS`] in total and [`MAX_PER_CLIENT`]
//! per client address, and a connection idle for [`IDLE`] is closed (RFC 7766 §6.2.3).
//! UDP runs on its own threads and never waits for any of this.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use opengslb_proto::log_limit::LogLimit;

use super::Handler;
use crate::listener::{Admission, next_admitted};
use crate::telemetry;

/// Open TCP connections at most.
pub(super) const MAX_CONNECTIONS: usize = 1024;
/// Open TCP connections from one client address at most.
pub(super) const MAX_PER_CLIENT: usize = 16;
/// A connection with no query for this long is closed; a query must also arrive whole
/// within it once begun.
pub(super) const IDLE: Duration = Duration::from_secs(10);

/// Serves DNS on `listener` until `shutdown`.
pub(super) async fn serve(
    listener: TcpListener,
    handler: Arc<Handler>,
    shutdown: CancellationToken,
) {
    let admission = Admission::new(MAX_CONNECTIONS, MAX_PER_CLIENT);
    let mut log = LogLimit::every(Duration::from_secs(10));
    let mut refuse = |reason: &'static str, peer: Option<SocketAddr>, why: String| {
        metrics::counter!(telemetry::DNS_TCP_REFUSED, "reason" => reason).increment(1);
        if let Some(skipped) = log.ready(Instant::now()) {
            let peer = peer.map_or_else(String::new, |p| p.to_string());
            tracing::warn!(%peer, not_logged_since_last = skipped, "dns tcp: connection refused: {why}");
        }
    };
    while let Some((stream, peer, slot)) =
        next_admitted(&listener, &admission, &shutdown, &mut refuse).await
    {
        let (handler, stop) = (handler.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _slot = slot;
            tokio::select! {
                () = stop.cancelled() => {}
                () = connection(stream, peer, &handler) => {}
            }
        });
    }
}

/// Answers the queries of one connection in order until it closes, idles or errs.
async fn connection(mut stream: TcpStream, peer: SocketAddr, handler: &Handler) {
    let _ = stream.set_nodelay(true);
    let mut query = Vec::with_capacity(512);
    loop {
        let mut prefix = [0u8; 2];
        let read = tokio::time::timeout(IDLE, async {
            stream.read_exact(&mut prefix).await?;
            let len = usize::from(u16::from_be_bytes(prefix));
            query.resize(len, 0);
            stream.read_exact(&mut query).await
        })
        .await;
        match read {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return, // closed, broken, or idle too long
        }
        let Some(response) = super::answer(handler, &query, peer, super::Transport::Tcp).await
        else {
            continue; // nothing to send (a response was received): read the next one
        };
        let Ok(len) = u16::try_from(response.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(2 + response.len());
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&response);
        if tokio::time::timeout(IDLE, stream.write_all(&framed))
            .await
            .map_or(true, |r| r.is_err())
        {
            return; // a client that does not read its answers is dropped
        }
    }
}
