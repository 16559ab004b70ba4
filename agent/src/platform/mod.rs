//! What differs between the agent's platforms: how it is told to stop or reload, how it
//! tells its service manager it is ready, and where CPU, memory and connection RTT come
//! from. Everything above this module is the same on Linux and on Windows.
//!
//! - Linux (and the other Unixes): SIGTERM/SIGINT stop, SIGHUP reloads, systemd hears
//!   `READY=1` through `NOTIFY_SOCKET`; CPU from `/proc/stat`, RTT from netlink
//!   `sock_diag` ([`crate::latency::collector`]).
//! - Windows: Ctrl+C, Ctrl+Break, closing the console, system shutdown and the service
//!   control manager's Stop stop; there is no reload; CPU from `GetSystemTimes`, memory
//!   from `GlobalMemoryStatusEx`, RTT from `GetPerTcpConnectionEStats`.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;

#[cfg(windows)]
pub mod windows;
#[cfg(windows)]
use windows as imp;

use std::io;

/// What the operator or the service manager asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Stop gracefully; the name of what asked (`SIGTERM`, `CTRL_C`, `service stop`).
    Stop(&'static str),
    /// Read the configuration again (SIGHUP; never on Windows).
    Reload,
}

/// The stop and reload requests the agent listens to.
#[derive(Debug)]
pub struct Signals(imp::Signals);

impl Signals {
    /// Installs the handlers. Done before anything else runs, so that a stop request
    /// right after start-up is a clean stop, not a kill.
    pub fn install() -> io::Result<Signals> {
        imp::Signals::install().map(Signals)
    }

    /// The next request.
    pub async fn next(&mut self) -> Event {
        self.0.next().await
    }
}

/// Tells the service manager the agent is serving (systemd `READY=1`; on Windows the
/// service is reported running before the runtime starts, so nothing is left to say).
pub fn notify_ready() {
    imp::notify_ready();
}

/// Tells the service manager the agent is stopping.
pub fn notify_stopping() {
    imp::notify_stopping();
}
