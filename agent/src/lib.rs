//! opengslb-agent: the health sidecar of an OpenGSLB host.
//!
//! It computes one [`status::Status`] (weight from CPU, ready/drain/maint from files) and
//! says it to HAProxy over the agent-check protocol ([`agent_check`]). See ARCHITECTURE.md.

pub mod admin_files;
pub mod agent_check;
pub mod app;
pub mod cli;
pub mod config;
pub mod cpu;
pub mod daemon;
pub mod hearing;
pub mod identity_files;
pub mod latency;
pub mod listener;
pub mod local_checks;
pub mod metrics_http;
pub mod monitor;
pub mod platform;
pub mod status;
