//! The status vocabulary every part speaks: the agent renders it for HAProxy and reports
//! it to overwatch, overwatch turns it into DNS answers. One set of words, so HAProxy and
//! DNS can never be told two different things. Variants only ever get added, and the
//! wire encoding (postcard, by variant index) keeps their order.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Administrative state, decided by the operator (drain and maint files, predictive
/// thresholds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Admin {
    /// In rotation.
    Ready,
    /// No new connections; existing ones (and persistence) continue.
    Drain,
    /// Out of rotation entirely.
    Maint,
}

impl Admin {
    /// The agent-check word HAProxy understands for this state.
    pub fn word(self) -> &'static str {
        match self {
            Admin::Ready => "ready",
            Admin::Drain => "drain",
            Admin::Maint => "maint",
        }
    }
}

impl fmt::Display for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// Operational health from local health checks of the application.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Health {
    /// No local health check is configured: the agent says nothing about up/down,
    /// exactly like `haproxy_agent` (HAProxy's own `check` decides).
    Unchecked,
    /// Local checks pass.
    Up,
    /// Local checks fail, with a human-readable reason.
    Down(String),
}
