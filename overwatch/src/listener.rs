//! Every HTTP listener of a node (API, metrics, Raft RPC) under the same limits: a cap on
//! connections in total and per client address, a deadline for the TLS handshake and for
//! each request's headers (which also closes idle keep-alive connections), and a log line
//! (rate-limited) and a counter when a limit turns a connection away. A flood of idle
//! connections to one listener therefore cannot use up the process's file descriptors
//! and take DNS over TCP, the API or Raft down with it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use rustls::pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use opengslb_proto::log_limit::LogLimit;

use crate::telemetry;

/// The caller's certificate on a TLS connection (`None` on plain HTTP).
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub Option<Arc<CertificateDer<'static>>>);

/// One listener's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Its name in logs and in the counter's `listener` label.
    pub name: &'static str,
    /// Open connections at most.
    pub connections: usize,
    /// Open connections from one client address at most.
    pub per_client: usize,
    /// A request's headers must arrive within this after the connection opens or the
    /// previous response; an idle connection is closed after it.
    pub header_timeout: Duration,
}

impl Limits {
    /// The API's and the metrics listener's.
    pub const fn http(name: &'static str) -> Limits {
        Limits {
            name,
            connections: 512,
            per_client: 64,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Caps on open connections, in total and per client address: what every TCP listener
/// of a node (HTTP and DNS) admits.
#[derive(Debug, Clone)]
pub struct Admission {
    total: Arc<tokio::sync::Semaphore>,
    limit: usize,
    per_client: usize,
    clients: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Why a connection was not admitted: its counter label and the log text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// `total` or `per_client`.
    pub reason: &'static str,
    /// What to log.
    pub why: String,
}

impl Admission {
    /// At most `total` connections, `per_client` from one address.
    pub fn new(total: usize, per_client: usize) -> Admission {
        Admission {
            total: Arc::new(tokio::sync::Semaphore::new(total)),
            limit: total,
            per_client,
            clients: Arc::default(),
        }
    }

    /// A place for a connection from `ip`, given back when the [`Slot`] drops.
    pub fn admit(&self, ip: IpAddr) -> Result<Slot, Refused> {
        let Ok(permit) = self.total.clone().try_acquire_owned() else {
            return Err(Refused {
                reason: "total",
                why: format!("{} connections already open", self.limit),
            });
        };
        let ip = ip.to_canonical();
        let mut map = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(ip).or_default();
        if *n >= self.per_client {
            return Err(Refused {
                reason: "per_client",
                why: format!("{} connections already open from {ip}", self.per_client),
            });
        }
        *n += 1;
        Ok(Slot {
            clients: self.clients.clone(),
            ip,
            _total: permit,
        })
    }
}

/// The next connection `admission` admits on `listener`, or `None` once `shutdown` is
/// cancelled. Connections refused by a cap, and failed accepts (out of descriptors, most
/// likely: it backs off instead of spinning), go to `refused(reason, peer, why)`.
pub async fn next_admitted(
    listener: &TcpListener,
    admission: &Admission,
    shutdown: &CancellationToken,
    mut refused: impl FnMut(&'static str, Option<SocketAddr>, String),
) -> Option<(TcpStream, SocketAddr, Slot)> {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return None,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => match admission.admit(peer.ip()) {
                Ok(slot) => return Some((stream, peer, slot)),
                Err(r) => refused(r.reason, Some(peer), r.why),
            },
            Err(e) => {
                refused("accept", None, format!("cannot accept: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A connection's place in the counts, given back when it closes.
#[derive(Debug)]
pub struct Slot {
    clients: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
    _total: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

struct Refusals {
    limits: Limits,
    log: Mutex<LogLimit>,
}

impl Refusals {
    fn refuse(&self, reason: &'static str, peer: Option<SocketAddr>, why: &str) {
        metrics::counter!(telemetry::HTTP_CONNECTIONS_REFUSED, "listener" => self.limits.name, "reason" => reason).increment(1);
        let ready = self
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ready(Instant::now());
        if let Some(skipped) = ready {
            let peer = peer.map_or_else(String::new, |p| p.to_string());
            tracing::warn!(
                %peer,
                not_logged_since_last = skipped,
                "{} listener: connection refused: {why}",
                self.limits.name
            );
        }
    }
}

/// Serves `app` on `listener` until `shutdown` under `limits`, over TLS when `tls` is
/// given. Each request carries the client's [`ConnectInfo`] and, under TLS, its
/// [`PeerCertificate`].
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let admission = Admission::new(limits.connections, limits.per_client);
    let refusals = Arc::new(Refusals {
        limits,
        log: Mutex::new(LogLimit::every(Duration::from_secs(10))),
    });
    while let Some((stream, peer, slot)) =
        next_admitted(&listener, &admission, &shutdown, |reason, peer, why| {
            refusals.refuse(reason, peer, &why);
        })
        .await
    {
        let (app, tls, stop, refusals) =
            (app.clone(), tls.clone(), shutdown.clone(), refusals.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let Some(acceptor) = tls else {
                connection(stream, app, peer, PeerCertificate(None), limits, stop).await;
                return;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let cert = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| Arc::new(c.clone().into_owned()));
                    connection(stream, app, peer, PeerCertificate(cert), limits, stop).await;
                }
                Ok(Err(e)) => {
                    let text = e.to_string();
                    let hint = if text.contains("InvalidContentType")
                        || text.contains("corrupt message")
                    {
                        " (not TLS: that node may run with cluster.insecure_plaintext)"
                    } else {
                        ""
                    };
                    refusals.refuse(
                        "handshake",
                        Some(peer),
                        &format!("TLS handshake failed: {e}{hint}"),
                    );
                }
                Err(_) => refusals.refuse(
                    "handshake",
                    Some(peer),
                    &format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"),
                ),
            }
        });
    }
}

async fn connection<I>(
    io: I,
    app: Router,
    peer: SocketAddr,
    cert: PeerCertificate,
    limits: Limits,
    stop: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let app = app
        .layer(axum::Extension(cert))
        .layer(axum::Extension(ConnectInfo(peer)));
    let service = hyper_util::service::TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// `router` answering 403 to a client outside `networks` (config key `key`), by its
/// socket address.
pub fn allow_networks(
    router: Router,
    networks: Arc<Vec<ipnet::IpNet>>,
    key: &'static str,
) -> Router {
    router.layer(axum::middleware::from_fn(
        move |ConnectInfo(peer): ConnectInfo<SocketAddr>,
              request: axum::extract::Request,
              next: axum::middleware::Next| {
            let networks = networks.clone();
            async move {
                let client = peer.ip().to_canonical();
                if networks.iter().any(|n| n.contains(&client)) {
                    next.run(request).await
                } else {
                    use axum::response::IntoResponse;
                    (
                        axum::http::StatusCode::FORBIDDEN,
                        axum::Json(serde_json::json!({ "error": format!("client {client} is not in {key}") })),
                    )
                        .into_response()
                }
            }
        },
    ))
}

/// Raises the soft limit on open files to the hard limit, so that the listeners' caps,
/// not the process's descriptors, are what turns a flood away. Returns the limit now.
pub fn raise_open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: getrlimit/setrlimit read and write the struct passed, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_caps_per_client_and_in_total_and_gives_places_back() {
        let admission = Admission::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let first = admission.admit(a).expect("first");
        let _second = admission.admit(mapped).expect("the same client, mapped");
        let refused = admission.admit(a).expect_err("a third from one client");
        assert_eq!(refused.reason, "per_client");
        assert_eq!(refused.why, "2 connections already open from 192.0.2.1");
        let _third = admission.admit(b).expect("another client");
        assert_eq!(admission.admit(b).expect_err("total").reason, "total");
        drop(first);
        admission.admit(a).expect("a place came back");
    }
}
