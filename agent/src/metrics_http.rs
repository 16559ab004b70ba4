//! The agent's own metrics endpoint (`metrics.enabled`, `metrics.address`): `GET /metrics`
//! in Prometheus text, `GET /health` for container health checks. A few lines of HTTP/1.1
//! on a TCP listener: two read-only paths do not need a web framework in the agent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// A request head larger than this is refused.
const MAX_HEAD: usize = 8 * 1024;
/// A client has this long to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
const MAX_CONNECTIONS: usize = 64;

/// Installs the process's metrics recorder; its handle renders `/metrics`.
pub fn install() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("metrics: {e}"))
}

/// Binds `addr`; the error names the key.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("metrics.address {addr}: {e}"))
}

/// Serves until `shutdown`.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            () = shutdown.cancelled() => return,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let handle = handle.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(HEAD_TIMEOUT * 2, answer(stream, &handle)).await;
                    drop(slot);
                });
            }
            Err(err) => {
                tracing::debug!(error = %err, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, handle: &PrometheusHandle) {
    let Ok(Some(head)) = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await else {
        return;
    };
    let (status, content_type, body) = respond(&head, handle);
    let reply = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The request head (up to the blank line), or `None` if it is too big or cut short.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(head).ok()
}

/// Status line, content type and body for a request head.
fn respond(head: &str, handle: &PrometheusHandle) -> (&'static str, &'static str, String) {
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", handle.render()),
        ("GET", "/health") => ("200 OK", "text/plain", "ok\n".into()),
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            format!("no such path {path:?}: GET /metrics or /health\n"),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET is served\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_methods() {
        let handle = PrometheusBuilder::new().build_recorder().handle();
        assert_eq!(respond("GET /health HTTP/1.1\r\n\r\n", &handle).0, "200 OK");
        assert_eq!(
            respond("GET /metrics?x HTTP/1.1\r\n\r\n", &handle).0,
            "200 OK"
        );
        assert_eq!(
            respond("GET /nope HTTP/1.1\r\n\r\n", &handle).0,
            "404 Not Found"
        );
        assert_eq!(
            respond("POST /metrics HTTP/1.1\r\n\r\n", &handle).0,
            "405 Method Not Allowed"
        );
        assert_eq!(respond("", &handle).0, "405 Method Not Allowed");
    }
}
