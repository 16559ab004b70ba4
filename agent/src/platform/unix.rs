//! Unix: signals, and systemd's readiness protocol.

use std::io;

use tokio::signal::unix::{Signal, SignalKind, signal};

use super::Event;

#[derive(Debug)]
pub(super) struct Signals {
    term: Signal,
    int: Signal,
    // SIGHUP's default action kills the process (exit 129); reloads are habitual, so it
    // is always answered, even where there is nothing to reload.
    hup: Signal,
}

impl Signals {
    pub(super) fn install() -> io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    pub(super) async fn next(&mut self) -> Event {
        tokio::select! {
            _ = self.term.recv() => Event::Stop("SIGTERM"),
            _ = self.int.recv() => Event::Stop("SIGINT"),
            _ = self.hup.recv() => Event::Reload,
        }
    }
}

pub(super) fn notify_ready() {
    notify(&[sd_notify::NotifyState::Ready]);
}

pub(super) fn notify_stopping() {
    notify(&[sd_notify::NotifyState::Stopping]);
}

/// Tells systemd about our state when it asked (`NOTIFY_SOCKET`); a no-op otherwise.
fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(false, state) {
        tracing::warn!(error = %err, "cannot notify systemd");
    }
}
