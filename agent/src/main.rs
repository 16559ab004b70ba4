//! `opengslb-agent`: parse flags, set up logging and the runtime, run, map errors to exit codes.

use std::process::ExitCode;

use opengslb_agent::app;
use opengslb_agent::cli::Args;
use tracing_subscriber::EnvFilter;

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
    init_logging(&logging);
    // One thread is plenty for one line per connection, and keeps the sidecar small.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("opengslb-agent: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(app::run(args, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("opengslb-agent: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

/// Logs go to stderr (stdout carries the one-shot reply). `RUST_LOG` overrides the level;
/// under systemd the journal adds timestamps, so we do not. `logging.format: json` (daemon
/// mode) writes one JSON object per line.
fn init_logging(logging: &opengslb_agent::config::Logging) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(logging.level.as_str()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    if logging.json {
        builder.json().init();
    } else if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().with_ansi(false).init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}
