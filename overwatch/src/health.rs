//! Validation health checks: overwatch's own view of each server (tcp, http, https),
//! with rise/fall thresholds and a smoothed round-trip time for the `latency` algorithm.
//!
//! The verdict (thresholds, EWMA) is `model::check::CheckState`; `Prober` runs checks; `spawn_checks`
//! schedules them, bounded by a semaphore, and reports every result on a channel to the
//! state owner.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{CheckKind, CheckSettings};
use crate::model::check::CheckOutcome;
use crate::model::view::BackendKey;
use crate::telemetry;

/// One result on its way to the state owner.
#[derive(Debug)]
pub struct CheckReport {
    /// Which backend.
    pub key: BackendKey,
    /// What happened.
    pub outcome: CheckOutcome,
    /// When it finished.
    pub at: SystemTime,
}

/// HTTP clients, built once: one that verifies certificates, one that does not.
#[derive(Debug, Clone)]
pub struct Prober {
    verified: reqwest::Client,
    unverified: reqwest::Client,
}

impl Prober {
    /// Builds the clients.
    pub fn new() -> Result<Prober, reqwest::Error> {
        crate::crypto::install_provider();
        let base = || {
            reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(0) // each check measures a fresh connection
                .user_agent(concat!("opengslb-overwatch/", env!("CARGO_PKG_VERSION")))
        };
        Ok(Prober {
            verified: base().build()?,
            unverified: base().tls_danger_accept_invalid_certs(true).build()?,
        })
    }

    /// Runs one check against `addr`; `Ok(rtt)` when it passes.
    pub async fn check(&self, addr: SocketAddr, check: &CheckSettings) -> CheckOutcome {
        let start = Instant::now();
        let outcome = tokio::time::timeout(check.timeout, self.check_inner(addr, check)).await;
        match outcome {
            Ok(Ok(())) => Ok(start.elapsed()),
            Ok(Err(reason)) => Err(reason),
            Err(_) => Err(format!("timed out after {:?}", check.timeout)),
        }
    }

    async fn check_inner(&self, addr: SocketAddr, check: &CheckSettings) -> Result<(), String> {
        let scheme = match check.kind {
            CheckKind::Tcp => {
                return tokio::net::TcpStream::connect(addr)
                    .await
                    .map(drop)
                    .map_err(|e| format!("tcp connect: {e}"));
            }
            CheckKind::Http => "http",
            CheckKind::Https => "https",
        };
        let client = if check.tls_skip_verify {
            &self.unverified
        } else {
            &self.verified
        };
        let url = format!("{scheme}://{addr}{}", check.path);
        let mut request = client.get(&url);
        if let Some(host) = &check.host {
            request = request.header(reqwest::header::HOST, host);
        }
        let response = request.send().await.map_err(|e| describe(&e))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("{scheme} {status}"))
        }
    }
}

/// reqwest's Display stops at the outermost layer ("error sending request"); the cause
/// an operator needs (refused, reset, certificate) is further down the chain.
fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// One server to check.
#[derive(Debug, Clone)]
pub struct CheckTarget {
    /// Which backend.
    pub key: BackendKey,
    /// Where.
    pub addr: SocketAddr,
    /// How.
    pub check: CheckSettings,
}

/// Starts one task per target; each checks at once, then every interval, holding one of
/// `max_concurrent` permits while a check runs. Stops on `shutdown`.
pub fn spawn_checks(
    targets: Vec<CheckTarget>,
    prober: Prober,
    max_concurrent: usize,
    reports: mpsc::Sender<CheckReport>,
    now: tokio::sync::watch::Receiver<u64>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(max_concurrent));
    for target in targets {
        let (prober, permits, reports, shutdown, mut now) = (
            prober.clone(),
            permits.clone(),
            reports.clone(),
            shutdown.clone(),
            now.clone(),
        );
        tracker.spawn(async move {
            let mut ticker = tokio::time::interval(target.check.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    _ = ticker.tick() => {}
                    // `POST /api/v1/overwatch/validate`: every check runs now.
                    Ok(()) = now.changed() => ticker.reset(),
                }
                let outcome = {
                    let Ok(_permit) = permits.acquire().await else { return };
                    let started = Instant::now();
                    let outcome = tokio::select! {
                        biased;
                        () = shutdown.cancelled() => return,
                        outcome = prober.check(target.addr, &target.check) => outcome,
                    };
                    let kind = match target.check.kind {
                        CheckKind::Tcp => "tcp",
                        CheckKind::Http => "http",
                        CheckKind::Https => "https",
                    };
                    let result = if outcome.is_ok() { "success" } else { "failure" };
                    metrics::counter!(telemetry::VALIDATION_CHECKS, "type" => kind, "result" => result).increment(1);
                    metrics::counter!(
                        telemetry::HEALTH_CHECK_RESULTS,
                        "region" => target.key.region.clone(),
                        "server" => target.addr.to_string(),
                        "result" => if outcome.is_ok() { "healthy" } else { "unhealthy" },
                    )
                    .increment(1);
                    metrics::histogram!(telemetry::VALIDATION_CHECK_DURATION, "type" => kind)
                        .record(started.elapsed().as_secs_f64());
                    outcome
                };
                let report = CheckReport { key: target.key.clone(), outcome, at: SystemTime::now() };
                if reports.send(report).await.is_err() {
                    return; // the state owner is gone: shutting down
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn tcp_and_http_checks_against_real_sockets() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let prober = Prober::new().expect("prober");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]).to_string();
                    let status = if head.starts_with("GET /ok ") {
                        "200 OK"
                    } else {
                        "503 Service Unavailable"
                    };
                    let _ = s.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes()).await;
                });
            }
        });
        let settings = |kind, path: &str| CheckSettings {
            kind,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            path: path.into(),
            host: Some("app.example".into()),
            fall: 1,
            rise: 1,
            tls_skip_verify: false,
        };
        assert!(
            prober
                .check(addr, &settings(CheckKind::Tcp, "/"))
                .await
                .is_ok()
        );
        assert!(
            prober
                .check(addr, &settings(CheckKind::Http, "/ok"))
                .await
                .is_ok()
        );
        let err = prober
            .check(addr, &settings(CheckKind::Http, "/bad"))
            .await
            .expect_err("503");
        assert!(err.contains("503"), "{err}");
        let closed: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let err = prober
            .check(closed, &settings(CheckKind::Tcp, "/"))
            .await
            .expect_err("refused");
        assert!(err.contains("refused"), "{err}");
        let err = prober
            .check(closed, &settings(CheckKind::Http, "/ok"))
            .await
            .expect_err("refused");
        assert!(err.to_lowercase().contains("refused"), "{err}");
    }

    #[tokio::test]
    async fn https_checks_verify_certificates_unless_told_not_to() {
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        crate::crypto::install_provider();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into()),
            )
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = [0u8; 1024];
                    let _ = tls.read(&mut buf).await;
                    let _ = tls
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        let prober = Prober::new().expect("prober");
        let mut check = CheckSettings {
            kind: CheckKind::Https,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            path: "/health".into(),
            host: None,
            fall: 1,
            rise: 1,
            tls_skip_verify: false,
        };
        let err = prober
            .check(addr, &check)
            .await
            .expect_err("a self-signed certificate is not trusted");
        assert!(
            err.to_lowercase().contains("certificate"),
            "the reason names the certificate: {err}"
        );
        check.tls_skip_verify = true;
        prober
            .check(addr, &check)
            .await
            .unwrap_or_else(|e| panic!("tls_skip_verify accepts it: {e}"));
    }
}
