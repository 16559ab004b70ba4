//! The protocol agents and overwatch share: wire types, sealing, identity and signature
//! checks, client subnets, and the gossip member (design.md, "Gossip").
//!
//! Deliberately light: no netlink, no HTTP, no DNS. `seal` encrypts and authenticates
//! every packet under the cluster key; `identity` parses, signs and verifies (creating a
//! key is behind the `keygen` feature); `wire` is the versioned, signed messages (`token` proves service tokens without
//! sending them);
//! `member` runs foca over a transport (UDP, or in memory for tests); `status` is the
//! admin and health vocabulary both sides speak.

pub mod identity;
pub mod log_limit;
pub mod member;
pub mod seal;
pub mod status;
pub mod subnet;
mod token;
pub mod wire;

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
