//! Configuration: the YAML file (`schema`), its checks (`validate`) and the result (`settings`).

mod duration;
mod includes;
mod schema;
mod settings;
mod validate;

use std::fmt;
use std::path::Path;

pub use duration::{HumanDuration, parse_duration};
pub use includes::Included;
pub use schema::RawConfig;
pub use settings::*;
pub(crate) use validate::is_within;
pub use validate::{is_host_port, validate};

/// One thing wrong with a config file, at a place in it (line 0: no particular place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// What is wrong, naming the key.
    pub message: String,
}

/// A config file that cannot be used: every problem found, each `FILE:LINE:COLUMN: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// Its problems, in file order.
    pub problems: Vec<Problem>,
    /// Files `includes` merged in: a problem on their lines is shown in them.
    pub included: Vec<includes::Included>,
}

impl ConfigError {
    /// The file and line a problem is at, included files resolved.
    fn place(&self, line: u64) -> (&str, u64) {
        self.included
            .iter()
            .find(|i| (i.first..=i.last).contains(&line))
            .map_or((self.file.as_str(), line), |i| {
                (i.file.as_str(), line - i.first + 1)
            })
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let (file, line) = self.place(p.line);
            write!(f, "{file}:{line}:{}: {}", p.column, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.display().to_string(),
        problems: vec![Problem {
            line: 0,
            column: 0,
            message: format!("cannot read the file: {e}"),
        }],
        included: Vec::new(),
    })?;
    parse_at(path, &text)
}

/// Parses and validates config text; `file` names it in errors. `includes` are read
/// relative to the current directory.
pub fn parse(file: &str, text: &str) -> Result<Settings, ConfigError> {
    parse_at(Path::new(file), text)
}

fn parse_at(path: &Path, text: &str) -> Result<Settings, ConfigError> {
    let mut included = Vec::new();
    let fail = |problems, included: &mut Vec<includes::Included>| ConfigError {
        file: path.display().to_string(),
        problems,
        included: std::mem::take(included),
    };
    let mut raw: RawConfig =
        serde_saphyr::from_str(text).map_err(|e| fail(vec![yaml_problem(&e)], &mut Vec::new()))?;
    includes::merge(&mut raw, path, text.lines().count() as u64, &mut included)
        .map_err(|problems| fail(problems, &mut included))?;
    validate::validate(&raw).map_err(|problems| fail(problems, &mut included))
}

/// A serde-saphyr error as a problem: its location, and its message without the
/// "error: line N column M:" prefix (our format puts the location first).
fn yaml_problem(err: &serde_saphyr::Error) -> Problem {
    let (line, column) = err.location().map_or((0, 0), |l| (l.line(), l.column()));
    let text = err.without_snippet().to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    let message = match text.strip_prefix("line ") {
        Some(rest) => rest.split_once(": ").map_or(text, |(_, m)| m),
        None => text,
    };
    // …and without the trailing " at line N, column M" some messages repeat.
    let message = match message.rfind(" at line ") {
        Some(at) if message[at..].contains(", column ") => &message[..at],
        _ => message,
    };
    Problem {
        line,
        column,
        message: message.trim().to_owned(),
    }
}

#[cfg(test)]
mod tests;
