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
/// errors only. openraft's line per failed call to a down peer (several a second) is left
/// out unless `RUST_LOG` names openraft: the cluster network logs one WARN when a peer
/// becomes unreachable and one INFO when it answers again.
fn init_logging(logging: &LoggingSettings) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let default = format!(
        "{},hickory_server=warn,hickory_proto=warn,hickory_net=warn,openraft=warn",
        logging.level
    );
    let env = std::env::var("RUST_LOG").ok();
    let raft_asked = env.as_deref().is_some_and(|v| v.contains("openraft"));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let quiet =
        tracing_subscriber::filter::filter_fn(move |meta| raft_asked || !is_raft_retry_noise(meta));
    let layer = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(std::io::stderr);
    let layer = if logging.json {
        layer.json().with_filter(filter).with_filter(quiet).boxed()
    } else {
        layer
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter)
            .with_filter(quiet)
            .boxed()
    };
    tracing_subscriber::registry().with(layer).init();
}

/// openraft's events that repeat on every retry to a peer that is down or slow: its
/// replication task's errors, the progress and heartbeat warnings they cause, a failed
/// vote request (the event with a `target` field in the core), and a late vote reply.
/// Also its ERROR "Can not initialize" (fields `last_log_id` and `vote`), which founders
/// starting together hit when another founder's entry arrived first: `node.rs` expects
/// that answer and carries on.
fn is_raft_retry_noise(meta: &tracing::Metadata<'_>) -> bool {
    let target = meta.target();
    if !target.starts_with("openraft") || !meta.is_event() {
        return false;
    }
    let fields = meta.fields();
    (target == "openraft::engine::engine_impl"
        && fields.field("last_log_id").is_some()
        && fields.field("vote").is_some())
        || target.starts_with("openraft::replication")
        || target.starts_with("openraft::engine::handler::replication_handler")
        || (target == "openraft::core::raft_core"
            && (meta.fields().field("target").is_some() || *meta.level() == tracing::Level::WARN))
}
