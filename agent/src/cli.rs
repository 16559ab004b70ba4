//! Command-line flags, compatible with the Go `haproxy_agent` (single dash) and GNU (double dash).

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};

use crate::admin_files::AdminFiles;

/// The agent's flags. Every long flag may also be written with one dash (`-port 7777`),
/// as the Go `haproxy_agent` spelled them, and with `=` (`-port=7777`).
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "opengslb-agent",
    version,
    about = "HAProxy agent-check responder: says \"NN% ready|drain|maint\" from CPU idleness and drain/maint files.",
    long_about = "HAProxy agent-check responder, a drop-in replacement for haproxy_agent.\n\n\
        It replies to every TCP connection with one line such as \"98% ready\": the weight is \
        floor(100 - CPU busy %) over the last timeframe (never below 1), and the state is \
        \"maint\" while the maint file exists, else \"drain\" while the drain file exists, else \
        \"ready\".\n\n\
        Modes: with neither -port nor -systemd it measures one timeframe, prints the line and \
        exits; -port N serves TCP; -systemd serves the socket systemd passes (socket activation).\n\n\
        Flags may be written with one dash or two (-port 7777, --port=7777)."
)]
pub struct Args {
    /// Daemon mode: backends, local checks and gossip to overwatch from this YAML file
    /// (flags given too override its agent_check settings).
    #[arg(long, value_name = "FILE", allow_hyphen_values = true)]
    pub config: Option<PathBuf>,

    /// While this file exists, reply "drain" (no new connections).
    #[arg(long = "drain-file", value_name = "PATH", allow_hyphen_values = true)]
    pub drain_file: Option<PathBuf>,

    /// While this file exists, reply "maint" (out of rotation); wins over the drain file.
    #[arg(long = "maint-file", value_name = "PATH", allow_hyphen_values = true)]
    pub maint_file: Option<PathBuf>,

    /// Serve agent-check on this TCP port (0: a free port, logged at start). With
    /// -systemd the passed socket is served and this is ignored, as haproxy_agent does.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub port: Option<u16>,

    /// Address to listen on with -port (default: all IPv6 and IPv4 addresses).
    #[arg(
        long,
        value_name = "ADDR",
        requires = "port",
        allow_hyphen_values = true
    )]
    pub listen: Option<IpAddr>,

    /// Serve the listening socket passed by systemd socket activation (LISTEN_FDS).
    #[arg(
        long,
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub systemd: bool,

    /// CPU measurement window in milliseconds, 10 to 3600000 (default 2000).
    #[arg(
        long,
        value_name = "MS",
        allow_hyphen_values = true,
        value_parser = clap::value_parser!(u64).range(10..=3_600_000)
    )]
    pub timeframe: Option<u64>,

    /// Log every request: peer address and the reply.
    #[arg(
        long = "log-requests",
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub log_requests: bool,

    /// Run under the Windows service control manager (as registered with `sc.exe create
    /// opengslb-agent binPath= "...\opengslb-agent.exe --service --config FILE"`).
    #[cfg(windows)]
    #[arg(long)]
    pub service: bool,

    /// Append logs to this file instead of stderr (a service has no console).
    #[cfg(windows)]
    #[arg(long = "log-file", value_name = "PATH", allow_hyphen_values = true)]
    pub log_file: Option<PathBuf>,
}

/// `-timeframe` when not given (haproxy_agent's default).
pub const DEFAULT_TIMEFRAME_MS: u64 = 2000;

/// How the agent runs, decided by the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Measure once, print the line, exit.
    OneShot,
    /// Serve TCP on an address we bind (`None`: all addresses).
    Tcp {
        /// Bind address.
        listen: Option<IpAddr>,
        /// Port, 0 for any.
        port: u16,
    },
    /// Serve the socket systemd passed.
    Systemd,
}

impl Args {
    /// Parses `argv` (program name first) in either flag style.
    pub fn try_parse_from_go_style<I, T>(argv: I) -> Result<Args, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let mut command = Args::command();
        let argv = normalize_go_flags(&command, argv.into_iter().map(Into::into).collect());
        let matches = command.try_get_matches_from_mut(argv)?;
        Args::from_arg_matches(&matches).map_err(|e| e.format(&mut command))
    }

    /// The mode the flags select.
    pub fn mode(&self) -> Mode {
        match (self.port, self.systemd) {
            (_, true) => Mode::Systemd,
            (Some(port), false) => Mode::Tcp {
                listen: self.listen,
                port,
            },
            (None, false) => Mode::OneShot,
        }
    }

    /// The CPU window.
    pub fn timeframe(&self) -> Duration {
        Duration::from_millis(self.timeframe.unwrap_or(DEFAULT_TIMEFRAME_MS))
    }

    /// The drain and maint files.
    pub fn admin_files(&self) -> AdminFiles {
        AdminFiles {
            drain: self.drain_file.clone(),
            maint: self.maint_file.clone(),
        }
    }
}

/// Rewrites Go-style `-name` and `-name=value` into `--name…` so clap parses both styles.
///
/// Only words in flag position are touched: the word after a flag that takes a separate
/// value is a value (a path may start with a dash), and everything after `--` is left
/// alone. Single-letter flags (`-h`, `-V`) stay short flags.
fn normalize_go_flags(command: &clap::Command, argv: Vec<OsString>) -> Vec<OsString> {
    let takes_separate_value = |name: &str| {
        command.get_arguments().any(|arg| {
            arg.get_long() == Some(name)
                && arg.get_action().takes_values()
                && !arg.is_require_equals_set()
        })
    };
    let mut out = Vec::with_capacity(argv.len());
    let mut args = argv.into_iter();
    out.extend(args.next()); // program name
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if text == "--" {
            out.push(arg);
            out.extend(args.by_ref());
            break;
        }
        let (long, rewritten) = if let Some(rest) = text.strip_prefix("--") {
            (rest, arg.clone())
        } else if let Some(rest) = text.strip_prefix('-').filter(|r| r.len() > 1) {
            (rest, OsString::from(format!("-{text}")))
        } else {
            out.push(arg);
            continue;
        };
        let has_inline_value = long.contains('=');
        out.push(rewritten);
        if !has_inline_value && takes_separate_value(long) {
            out.extend(args.next());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from_go_style(std::iter::once("opengslb-agent").chain(args.iter().copied()))
    }

    fn ok(args: &[&str]) -> Args {
        parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn err(args: &[&str]) -> String {
        let e = parse(args).expect_err("should fail");
        assert_eq!(e.exit_code(), 2, "usage errors exit 2: {e}");
        e.to_string()
    }

    #[test]
    fn go_style_and_gnu_style_parse_the_same() {
        let go = ok(&[
            "-drain-file",
            "/tmp/d",
            "-maint-file",
            "/tmp/m",
            "-port",
            "7777",
            "-timeframe",
            "500",
            "-log-requests",
        ]);
        let gnu = ok(&[
            "--drain-file=/tmp/d",
            "--maint-file",
            "/tmp/m",
            "--port=7777",
            "--timeframe",
            "500",
            "--log-requests",
        ]);
        let mixed = ok(&[
            "-drain-file=/tmp/d",
            "--maint-file",
            "/tmp/m",
            "-port=7777",
            "--timeframe=500",
            "-log-requests=true",
        ]);
        assert_eq!(go, gnu);
        assert_eq!(go, mixed);
        assert_eq!(go.port, Some(7777));
        assert_eq!(go.timeframe(), Duration::from_millis(500));
        assert!(go.log_requests);
        assert_eq!(go.admin_files().drain, Some(PathBuf::from("/tmp/d")));
    }

    #[test]
    fn defaults_match_haproxy_agent() {
        let args = ok(&[]);
        assert_eq!(args.mode(), Mode::OneShot);
        assert_eq!(args.timeframe(), Duration::from_millis(2000));
        assert!(!args.log_requests);
        assert_eq!(args.admin_files(), AdminFiles::default());
    }

    #[test]
    fn modes() {
        assert_eq!(ok(&["-systemd"]).mode(), Mode::Systemd);
        assert_eq!(ok(&["-systemd=false"]).mode(), Mode::OneShot);
        assert_eq!(
            ok(&["-port", "0", "--listen", "::1"]).mode(),
            Mode::Tcp {
                listen: Some("::1".parse().expect("ip")),
                port: 0
            }
        );
        assert_eq!(
            ok(&["-port", "7777"]).mode(),
            Mode::Tcp {
                listen: None,
                port: 7777
            }
        );
    }

    #[test]
    fn values_that_start_with_a_dash_are_values() {
        let args = ok(&["-drain-file", "-odd-name", "-maint-file", "--weird"]);
        assert_eq!(args.drain_file, Some(PathBuf::from("-odd-name")));
        assert_eq!(args.maint_file, Some(PathBuf::from("--weird")));
    }

    #[test]
    fn systemd_wins_over_port_as_haproxy_agent_does() {
        assert_eq!(ok(&["-port", "7777", "-systemd"]).mode(), Mode::Systemd);
        assert_eq!(ok(&["-systemd", "-port", "7777"]).mode(), Mode::Systemd);
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (args, flag) in [
            (&["-port", "70000"][..], "--port"),
            (&["-port", "-1"][..], "--port"),
            (&["-port", "x"][..], "--port"),
            (&["-timeframe", "abc"][..], "--timeframe"),
            (&["-timeframe", "0"][..], "--timeframe"),
            (&["-timeframe", "9"][..], "--timeframe"),
            (&["-port", "1", "--listen", "localhost"][..], "--listen"),
            (&["-systemd=maybe"][..], "--systemd"),
        ] {
            let msg = err(args);
            assert!(msg.contains(flag), "{args:?}: {msg}");
        }
    }

    #[test]
    fn unknown_flags_are_named() {
        let msg = err(&["-bogus"]);
        assert!(msg.contains("--bogus"), "{msg}");
        let msg = err(&["--port", "1", "extra"]);
        assert!(msg.contains("extra"), "{msg}");
    }

    #[test]
    fn listen_needs_port() {
        let msg = err(&["--listen", "127.0.0.1"]);
        assert!(msg.contains("--port"), "{msg}");
    }

    #[test]
    fn missing_values_are_named() {
        let msg = err(&["-port"]);
        assert!(msg.contains("--port"), "{msg}");
    }

    #[test]
    fn help_and_version_are_not_errors() {
        for args in [&["--help"][..], &["-help"][..], &["-h"][..]] {
            let e = parse(args).expect_err("help is reported as an early exit");
            assert_eq!(e.kind(), ErrorKind::DisplayHelp);
            assert_eq!(e.exit_code(), 0);
        }
        for args in [&["--version"][..], &["-version"][..], &["-V"][..]] {
            let e = parse(args).expect_err("version is reported as an early exit");
            assert_eq!(e.kind(), ErrorKind::DisplayVersion);
        }
    }

    #[test]
    fn everything_after_double_dash_is_positional() {
        let msg = err(&["--", "-port", "1"]);
        assert!(msg.contains("-port"), "{msg}");
    }
}
