//! opengslb-overwatch: health-checked, authoritative GSLB DNS.
//!
//! See ARCHITECTURE.md for the map: a pure `model` under thin shells — `config` →
//! `health` and gossip → `state` (the owner) → `dns` snapshot, `api`, `cluster`.

#[cfg(test)]
mod alloc_count;
pub mod api;
pub mod app;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod crypto;
pub mod dns;
pub mod health;
pub mod listener;
pub mod model;
pub mod state;
pub mod telemetry;
