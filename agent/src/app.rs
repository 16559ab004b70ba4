//! Wiring: turns parsed flags into a one-shot measurement or a running server.

use std::io::{self, Write};

use tokio_util::sync::CancellationToken;

use crate::agent_check::{self, ServerConfig};
use crate::cli::{Args, Mode};
use crate::cpu::CpuError;
use crate::listener::{self, ListenError};
use crate::monitor::{self, Monitor, MonitorConfig};
use crate::platform::{self, Event, Signals};

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No socket to serve.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// CPU times unreadable at start-up.
    #[error(transparent)]
    Cpu(#[from] CpuError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
    /// One-shot output could not be written.
    #[error("cannot write to stdout: {0}")]
    Stdout(io::Error),
    /// Daemon mode failed.
    #[error(transparent)]
    Daemon(#[from] crate::daemon::DaemonError),
}

impl RunError {
    /// The process exit code: 2 for a usage problem the operator must fix in the command
    /// line or unit file, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Listen(ListenError::NoSystemdSocket | ListenError::NoSystemd) => 2,
            RunError::Daemon(err) => err.exit_code(),
            _ => 1,
        }
    }
}

/// Runs the agent as the flags say; returns when it is done (one-shot) or stopped (signal).
/// `config` is the daemon's file as already loaded from `args.config` (read once, for
/// logging too).
pub async fn run(
    args: Args,
    config: Option<Result<crate::config::AgentConfig, crate::config::ConfigError>>,
) -> Result<(), RunError> {
    if let (Some(path), Some(loaded)) = (&args.config, config) {
        let loaded = loaded.map_err(crate::daemon::DaemonError::from)?;
        return Ok(crate::daemon::run(path, loaded, &args).await?);
    }
    let monitor_config = MonitorConfig::flags(args.timeframe(), args.admin_files());
    let listener = match args.mode() {
        Mode::OneShot => {
            let status = monitor::measure_once(&monitor_config).await?;
            let mut stdout = io::stdout().lock();
            return stdout
                .write_all(status.render().as_bytes())
                .and_then(|()| stdout.flush())
                .map_err(RunError::Stdout);
        }
        Mode::Tcp { listen, port } => listener::bind(listen, port)?,
        Mode::Systemd => {
            if let Some(port) = args.port {
                tracing::info!(
                    port,
                    "-port is ignored under -systemd: serving the socket systemd passed (as haproxy_agent)"
                );
            }
            listener::from_systemd()?
        }
    };

    // Handlers first, so that a SIGTERM right after start-up is a clean stop, not a kill.
    let mut signals = Signals::install().map_err(RunError::Signals)?;

    let (monitor, snapshots) = Monitor::start(monitor_config).await?;
    let shutdown = CancellationToken::new();
    let monitor_task = tokio::spawn(monitor.run(None, shutdown.clone()));

    match listener.local_addr() {
        Ok(addr) => tracing::info!(%addr, reply = snapshots.borrow().line.trim_end(), "listening"),
        Err(err) => tracing::warn!(error = %err, "listening (address unknown)"),
    }
    platform::notify_ready();

    let stop = shutdown.clone();
    tokio::spawn(async move {
        let name = loop {
            match signals.next().await {
                Event::Stop(name) => break name,
                Event::Reload => tracing::info!(
                    "SIGHUP: nothing to reload in flag mode (flags are fixed; the drain and maint files are read continuously)"
                ),
            }
        };
        tracing::info!(
            signal = name,
            "stopping: no new connections, finishing replies in flight"
        );
        platform::notify_stopping();
        stop.cancel();
    });

    let config = ServerConfig {
        log_requests: args.log_requests,
        ..ServerConfig::default()
    };
    agent_check::serve(listener, snapshots, config, shutdown.clone()).await;
    shutdown.cancel();
    let _ = monitor_task.await;
    tracing::info!("stopped");
    Ok(())
}
