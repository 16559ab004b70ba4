//! The pure model of a GSLB node: no tokio, no sockets, no HTTP, no DNS server. Every
//! decision overwatch makes is here, as plain functions and structs with unit tests; the
//! shells around it (`state`, `health`, `dns`, `cluster`, `api`) own time, I/O and tasks.
//!
//! - `view`: the published `View` (backends with every layer, agents, recent changes).
//! - `compute`: from agent reports, checks and the replicated state to backend views,
//!   and the registry diff the Raft leader writes.
//! - `status`: the effective-status rules over the layers.
//! - `check`: validation thresholds and smoothed RTT.
//! - `deadlines`: when statuses change with no message (stale, removal, override ends).
//! - `admission`: who may speak (tokens, pins) and "only newer wins".
//! - `routing`: the algorithms over candidates; `geo`: client → region.
//! - `latency`: learned client latency and the index DNS reads.
//! - `machine`: the replicated state machine Raft applies.

pub mod admission;
pub mod check;
pub mod compute;
pub mod deadlines;
pub mod geo;
pub mod latency;
pub mod machine;
pub mod routing;
pub mod status;
pub mod view;
