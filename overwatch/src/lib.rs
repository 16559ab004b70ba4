//! opengslb-overwatch: health-checked, authoritative GSLB DNS.
//!
//! See ARCHITECTURE.md for the map: `config` → `health` → `state` → `dns` snapshot.

pub mod config;
