//! `opengslb-agent`: parse flags, set up logging and the runtime, run, map errors to exit codes.

use std::process::ExitCode;

use opengslb_agent::app;
use opengslb_agent::cli::Args;
use opengslb_agent::config::{AgentConfig, ConfigError};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

fn main() -> ExitCode {
    let args = match Args::try_parse_from_go_style(std::env::args_os()) {
        Ok(args) => args,
        Err(err) => err.exit(), // usage errors: message on stderr, exit 2; --help: exit 0
    };
    // The daemon's file, read once: it says how to log, and the daemon runs with it (its
    // problems are reported once logging is set up).
    let config = args.config.as_deref().map(opengslb_agent::config::load);
    let logging = config
        .as_ref()
        .and_then(|loaded| loaded.as_ref().ok())
        .map(|c| c.logging.clone())
        .unwrap_or_default();
    #[cfg(windows)]
    {
        let log_file = match args.log_file.as_deref().map(open_log_file).transpose() {
            Ok(file) => file,
            Err(err) => {
                eprintln!("opengslb-agent: {err}");
                return ExitCode::from(2);
            }
        };
        let to_file = log_file.is_some();
        match log_file {
            Some(file) => init_logging(&logging, BoxMakeWriter::new(file), false),
            None => init_logging(&logging, BoxMakeWriter::new(std::io::stderr), stderr_ansi()),
        }
        if args.service {
            return run_as_service(args, config, to_file);
        }
    }
    #[cfg(not(windows))]
    init_logging(&logging, BoxMakeWriter::new(std::io::stderr), stderr_ansi());
    ExitCode::from(run(args, config, false))
}

/// Runs the agent on a new runtime; returns the exit code. Errors are printed on stderr,
/// and also logged when `log_errors` (a service's stderr goes nowhere).
fn run(args: Args, config: Option<Result<AgentConfig, ConfigError>>, log_errors: bool) -> u8 {
    // One thread is plenty for one line per connection, and keeps the sidecar small.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("opengslb-agent: cannot start the runtime: {err}");
            if log_errors {
                tracing::error!(error = %err, "cannot start the runtime");
            }
            return 1;
        }
    };
    match runtime.block_on(app::run(args, config)) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("opengslb-agent: {err}");
            if log_errors {
                tracing::error!("{err}");
            }
            err.exit_code()
        }
    }
}

/// `--service`: the same agent, started and stopped by the service control manager.
#[cfg(windows)]
fn run_as_service(
    args: Args,
    config: Option<Result<AgentConfig, ConfigError>>,
    logs_to_file: bool,
) -> ExitCode {
    if !logs_to_file {
        tracing::warn!(
            "--service without --log-file: a service has no console, so its logs are lost"
        );
    }
    match opengslb_agent::platform::windows::service::run(move || run(args, config, true)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!(
                "opengslb-agent: --service: cannot connect to the service control manager \
                 ({err}); --service is for the service's command line (sc.exe create), \
                 not for a console"
            );
            ExitCode::from(2)
        }
    }
}

/// Opens `--log-file` for appending, creating it if needed.
#[cfg(windows)]
fn open_log_file(path: &std::path::Path) -> Result<std::sync::Mutex<std::fs::File>, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(std::sync::Mutex::new)
        .map_err(|err| format!("--log-file {}: {err}", path.display()))
}

/// Colours only on a terminal, and never under the journal (`JOURNAL_STREAM`), which adds
/// its own timestamps too.
fn stderr_ansi() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stderr())
}

/// Logs go to stderr (stdout carries the one-shot reply) or `--log-file`. `RUST_LOG`
/// overrides the level; under systemd the journal adds timestamps, so we do not.
/// `logging.format: json` (daemon mode) writes one JSON object per line.
fn init_logging(logging: &opengslb_agent::config::Logging, writer: BoxMakeWriter, ansi: bool) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(logging.level.as_str()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(writer);
    if logging.json {
        builder.json().init();
    } else if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().with_ansi(false).init();
    } else {
        builder.with_ansi(ansi).init();
    }
}
