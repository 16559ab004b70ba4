//! The Windows agent, cross-built by `scripts/windows-agent.sh`, run under Wine.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{newest_mtime, workspace_root};

/// The built `opengslb-agent.exe` and the Wine prefix that runs it.
#[derive(Debug)]
pub struct WindowsAgent {
    exe: PathBuf,
    prefix: PathBuf,
}

impl WindowsAgent {
    /// The exe, or `None` after saying on stderr that the test is skipped, when this
    /// machine has no Windows build (scripts/test.sh makes one when the cross tools are
    /// installed, and installs them as root). Under CI it must exist. Panics when it is
    /// older than the agent's or proto's sources.
    pub fn find(test: &str) -> Option<WindowsAgent> {
        let root = workspace_root();
        let exe = root.join("target/windows/x86_64-pc-windows-gnu/debug/opengslb-agent.exe");
        let built = match std::fs::metadata(&exe).and_then(|m| m.modified()) {
            Ok(built) => built,
            Err(_) if std::env::var("CI").as_deref() == Ok("true") => panic!(
                "{} does not exist; under CI scripts/test.sh builds it (scripts/windows-agent.sh)",
                exe.display()
            ),
            Err(_) => {
                eprintln!(
                    "SKIPPED {test}: no Windows agent at {} (run scripts/windows-agent.sh, \
                     which needs rustc-web, cargo-web, rust-web-src, gcc-mingw-w64-x86-64, \
                     wine and wine64)",
                    exe.display()
                );
                return None;
            }
        };
        for crate_dir in ["agent", "proto"] {
            let newest = newest_mtime(&root.join(crate_dir).join("src"), "opengslb-agent");
            assert!(
                newest <= built,
                "{} is older than the sources in {crate_dir}/src: rebuild it (scripts/windows-agent.sh)",
                exe.display()
            );
        }
        Some(WindowsAgent {
            exe,
            prefix: root.join("target/windows/wineprefix"),
        })
    }

    /// `wine opengslb-agent.exe`, to which the test adds the agent's arguments.
    pub fn command(&self) -> Command {
        self.wine(&self.exe)
    }

    /// `wine PROGRAM` in this prefix (`sc`, `net`: Wine's own tools).
    pub fn wine(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("wine");
        command
            .arg(program)
            .env("WINEPREFIX", &self.prefix)
            // Wine's own diagnostics off: the agent's output is what the tests read.
            .env("WINEDEBUG", "-all");
        command
    }

    /// The exe's path as Windows names it.
    pub fn exe_path(&self) -> String {
        wine_path(&self.exe)
    }
}

/// `path` as a Windows program on Wine names it: drive Z: is the Unix root.
pub fn wine_path(path: &Path) -> String {
    format!("Z:{}", path.display()).replace('/', "\\")
}
