//! `opengslb-overwatch`: one GSLB node (DNS, health checks, API, metrics).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use opengslb_overwatch::app;
use opengslb_overwatch::config::LoggingSettings;
use tracing_subscriber::EnvFilter;

/// Authoritative GSLB DNS that answers with the healthy servers only.
#[derive(Debug, Parser)]
#[command(name = "opengslb-overwatch", version)]
struct Args {
    /// Configuration file (YAML).
    #[arg(
        long,
        short = 'c',
        value_name = "FILE",
        default_value = "/etc/opengslb/overwatch.yaml",
        env = "OPENGSLB_CONFIG"
    )]
    config: PathBuf,
    /// Durable state directory; replaces `overwatch.data_dir` from the file.
    #[arg(long, value_name = "DIR", env = "OPENGSLB_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let prepared = match app::prepare(&args.config) {
        Ok(prepared) => prepared,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
    init_logging(&prepared.settings.logging);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("opengslb-overwatch: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(app::run(args.config, prepared, args.data_dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("opengslb-overwatch: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `RUST_LOG` overrides `logging.level`; logs go to stderr. hickory logs every query at
/// info and openraft every vote and membership step: those crates log warnings and
/// errors only.
fn init_logging(logging: &LoggingSettings) {
    let default = format!(
        "{},hickory_server=warn,hickory_proto=warn,hickory_net=warn,openraft=warn",
        logging.level
    );
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    if logging.json {
        builder.json().init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}
