//! Local health checks of the application beside the agent (http, https, tcp).
//!
//! One task per checked backend sends each outcome to the monitor, which owns the
//! rise/fall state (`CheckTracker`) like it owns everything else in the status.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Backend, CheckKind, LocalCheck};

/// One outcome: the backend's index and `Err(reason)` on failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    /// Index into the configured backends.
    pub backend: usize,
    /// Passed, or why not.
    pub result: Result<(), String>,
}

/// Rise/fall state of one backend, and its recent outcomes for the error rate.
#[derive(Debug, Clone, Default)]
pub struct CheckTracker {
    /// `None` until the first outcome.
    pub up: Option<bool>,
    ok_streak: u32,
    fail_streak: u32,
    /// Why the last failing check failed.
    pub last_error: Option<String>,
    history: VecDeque<(Instant, bool)>,
}

impl CheckTracker {
    /// Records an outcome; true when up/down changed. The first outcome decides at once.
    pub fn record(
        &mut self,
        result: &Result<(), String>,
        check: &LocalCheck,
        at: Instant,
        window: Duration,
    ) -> bool {
        let before = self.up;
        match result {
            Ok(()) => {
                self.ok_streak += 1;
                self.fail_streak = 0;
                if self.up.is_none() || (self.up == Some(false) && self.ok_streak >= check.rise) {
                    self.up = Some(true);
                    self.last_error = None;
                }
            }
            Err(reason) => {
                self.fail_streak += 1;
                self.ok_streak = 0;
                self.last_error = Some(reason.clone());
                if self.up.is_none() || (self.up == Some(true) && self.fail_streak >= check.fall) {
                    self.up = Some(false);
                }
            }
        }
        self.history.push_back((at, result.is_ok()));
        while self
            .history
            .front()
            .is_some_and(|(t, _)| at.duration_since(*t) > window)
        {
            self.history.pop_front();
        }
        before != self.up
    }

    /// Failed checks in the window, in percent (0 with no checks).
    pub fn error_rate(&self) -> f64 {
        if self.history.is_empty() {
            return 0.0;
        }
        let failed = self.history.iter().filter(|(_, ok)| !ok).count();
        100.0 * failed as f64 / self.history.len() as f64
    }
}

/// Starts one checking task per backend that has a check.
pub fn spawn(
    backends: &[Backend],
    outcomes: mpsc::Sender<CheckOutcome>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    install_crypto_provider();
    let base = || {
        reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
    };
    let verified = base()
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let unverified = base()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    for (index, backend) in backends.iter().enumerate() {
        let Some(check) = backend.check.clone() else {
            continue;
        };
        let addr = SocketAddr::new(backend.address, backend.port);
        let client = if check.tls_skip_verify {
            unverified.clone()
        } else {
            verified.clone()
        };
        let (outcomes, shutdown) = (outcomes.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(check.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let result =
                    match tokio::time::timeout(check.timeout, run(&client, addr, &check)).await {
                        Ok(result) => result,
                        Err(_) => Err(format!("timed out after {:?}", check.timeout)),
                    };
                if outcomes
                    .send(CheckOutcome {
                        backend: index,
                        result,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
    Ok(())
}

/// Makes ring the process's rustls provider (the one crypto backend, design.md).
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err only if a provider was installed first; then ring is not needed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

async fn run(client: &reqwest::Client, addr: SocketAddr, check: &LocalCheck) -> Result<(), String> {
    let scheme = match check.kind {
        CheckKind::Tcp => {
            return tokio::net::TcpStream::connect(addr)
                .await
                .map(drop)
                .map_err(|e| format!("tcp: {e}"));
        }
        CheckKind::Http => "http",
        CheckKind::Https => "https",
    };
    let mut request = client.get(format!("{scheme}://{addr}{}", check.path));
    if let Some(host) = &check.host {
        request = request.header(reqwest::header::HOST, host);
    }
    let response = request.send().await.map_err(|e| {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text = cause.to_string();
            source = cause.source();
        }
        format!("{scheme}: {text}")
    })?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("{scheme} {}: {}", check.path, response.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rise: u32, fall: u32) -> LocalCheck {
        LocalCheck {
            kind: CheckKind::Tcp,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            path: "/".into(),
            host: None,
            fall,
            rise,
            tls_skip_verify: false,
        }
    }

    #[test]
    fn rise_and_fall_with_the_first_outcome_deciding() {
        let (t0, w) = (Instant::now(), Duration::from_secs(60));
        let c = check(2, 2);
        let mut t = CheckTracker::default();
        assert!(
            t.record(&Err("refused".into()), &c, t0, w),
            "first outcome decides: down"
        );
        assert_eq!(t.up, Some(false));
        assert!(!t.record(&Ok(()), &c, t0, w));
        assert!(t.record(&Ok(()), &c, t0, w), "two successes: up");
        assert!(!t.record(&Err("x".into()), &c, t0, w));
        assert!(
            t.record(&Err("503".into()), &c, t0, w),
            "two failures: down"
        );
        assert_eq!(t.last_error.as_deref(), Some("503"));
    }

    #[test]
    fn error_rate_covers_the_window_only() {
        let (t0, w) = (Instant::now(), Duration::from_secs(10));
        let c = check(1, 1);
        let mut t = CheckTracker::default();
        for i in 0..10u64 {
            let r = if i < 3 { Err("x".into()) } else { Ok(()) };
            t.record(&r, &c, t0 + Duration::from_secs(i), w);
        }
        assert!((t.error_rate() - 30.0).abs() < 1e-9, "{}", t.error_rate());
        t.record(&Ok(()), &c, t0 + Duration::from_secs(30), w);
        assert_eq!(t.error_rate(), 0.0, "old failures left the window");
    }
}
