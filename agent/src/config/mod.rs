//! Daemon mode's configuration (`/etc/opengslb/agent.yaml`), OpenGSLB key names.
//!
//! Parsed with serde-saphyr into `schema` (unknown keys rejected), then `validate`d into
//! `settings::AgentConfig`; every problem is reported as `FILE:LINE:COLUMN: message`.

use std::fmt;
use std::path::Path;
use std::time::Duration;

mod schema;
mod settings;
mod validate;

pub use settings::*;

/// One problem at a place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line (0: no particular place).
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// What is wrong, naming the key.
    pub message: String,
}

/// A config file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// Every problem found.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self
            .problems
            .iter()
            .map(|p| format!("{}:{}:{}: {}", self.file, p.line, p.column, p.message))
            .collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

/// Go-style durations: `500ms`, `30s`, `5m`, `1h`, `1m30s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?}: expected e.g. 500ms, 30s, 5m, 1h");
    let mut rest = text.trim();
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .filter(|&d| d > 0)
            .ok_or_else(bad)?;
        let value: u32 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "h" => Duration::from_secs(3600),
            "m" => Duration::from_secs(60),
            "s" => Duration::from_secs(1),
            "ms" => Duration::from_millis(1),
            _ => return Err(bad()),
        };
        total = unit
            .checked_mul(value)
            .and_then(|d| total.checked_add(d))
            .ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Reads and validates a file.
pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        problems: vec![Problem {
            line: 0,
            column: 0,
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    parse(&file, &text)
}

/// Parses and validates config text.
pub fn parse(file: &str, text: &str) -> Result<AgentConfig, ConfigError> {
    let fail = |problems| ConfigError {
        file: file.to_owned(),
        problems,
    };
    let raw: schema::Raw = serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        let text = e.without_snippet().to_string();
        let text = text.strip_prefix("error: ").unwrap_or(&text);
        let text = text
            .strip_prefix("line ")
            .and_then(|r| r.split_once(": "))
            .map_or(text, |(_, m)| m);
        let text = text.rfind(" at line ").map_or(text, |at| &text[..at]);
        fail(vec![Problem {
            line,
            column,
            message: text.trim().to_owned(),
        }])
    })?;
    validate::validate(raw).map_err(fail)
}

#[cfg(test)]
mod tests;
