//! The agent's upward voice: encrypted gossip to overwatch (design.md, "Gossip").
//!
//! `seal` encrypts and authenticates every packet under the cluster key; `identity` is
//! the agent's key, certificate and id; `wire` the versioned, signed messages. Overwatch
//! imports this module; nothing else is shared between the two crates.

pub mod identity;
pub mod runtime;
pub mod seal;
pub mod wire;
