//! opengslb-overwatch: health-checked, authoritative GSLB DNS.
//!
//! See ARCHITECTURE.md for the map: `config` → `health` → `state` → `dns` snapshot.

pub mod agents;
#[cfg(test)]
mod alloc_count;
pub mod api;
pub mod app;
pub mod cluster;
pub mod config;
pub mod dns;
pub mod geo;
pub mod health;
pub mod latency;
pub mod routing;
pub mod state;
pub mod status;
