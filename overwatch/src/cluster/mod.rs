//! The three-node overwatch cluster (design.md, "Raft cluster").
//!
//! The Raft runtime around the replicated state machine (`model::machine`, pure and
//! deterministic): `store` is openraft storage on redb, `network` the RPC between nodes,
//! `node` starting, bootstrapping, writing and membership, `transport` the HTTPS (or
//! knowingly plain HTTP) calls between nodes, and `tls` the cluster's certificates.

pub mod network;
pub mod node;
pub mod store;
pub mod tls;
pub mod transport;
