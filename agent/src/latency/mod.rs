//! Passive latency learning: the kernel's RTT of real client connections, per client
//! subnet, reported to overwatch for the `learned_latency` routing algorithm.

pub mod collector;
#[cfg(windows)]
pub mod estats;
#[cfg(target_os = "linux")]
pub mod sock_diag;
pub mod table;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::LatencyLearning;
use opengslb_proto::identity::AgentIdentity;
use opengslb_proto::member::{Command, now_us};
use opengslb_proto::wire::{LatencySample, VersionClock, latency_parts};
use table::SubnetTable;

/// Every how many reports all subnets are re-sent (the others carry changes only).
const FULL_REFRESH_EVERY: u32 = 10;

/// Polls the system and reports learned latency until `shutdown`. On a system that cannot
/// give connections' RTT (no `sock_diag`, no extended TCP statistics) it says so once and
/// stops: the rest of the agent runs on.
pub async fn run(
    settings: LatencyLearning,
    ports: HashSet<u16>,
    identity: Arc<AgentIdentity>,
    region: String,
    commands: mpsc::Sender<Command>,
    shutdown: CancellationToken,
) {
    let ports = Arc::new(ports);
    let mut table = SubnetTable::new(settings.table);
    let mut ages = collector::AgeFilter::new(settings.min_connection_age);
    let mut clock = VersionClock::default();
    let mut poll = tokio::time::interval(settings.poll_interval);
    let mut report = tokio::time::interval(settings.report_interval);
    report.tick().await;
    let mut reports = 0u32;
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            _ = poll.tick() => {
                let ports = Arc::clone(&ports);
                // A dump of tens of thousands of sockets takes milliseconds: off the
                // thread that answers HAProxy.
                let dumped = tokio::task::spawn_blocking(move || collector::established(&ports)).await;
                match dumped {
                    Ok(Ok(connections)) => {
                        let now = Instant::now();
                        for c in ages.old_enough(connections, now) {
                            table.record(c.peer, c.rtt, now);
                        }
                        table.expire(now);
                        metrics::gauge!("opengslb_agent_latency_subnets").set(table.len() as f64);
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "latency learning is off: this system cannot give the RTT of connections");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "latency poll failed");
                    }
                }
            }
            _ = report.tick() => {
                reports = reports.wrapping_add(1);
                let full = reports % FULL_REFRESH_EVERY == 1;
                let learned = if full { table.take_all() } else { table.take_dirty() };
                let samples: Vec<LatencySample> = learned
                    .into_iter()
                    .filter(|(_, l)| l.samples >= u64::from(settings.min_samples))
                    .map(|(subnet, l)| LatencySample {
                        subnet,
                        rtt_us: l.rtt_us.round().min(f64::from(u32::MAX)) as u32,
                        samples: u32::try_from(l.samples).unwrap_or(u32::MAX),
                    })
                    .collect();
                if samples.is_empty() && !full {
                    continue;
                }
                let parts = match latency_parts(&samples, &identity, &region, clock.next(now_us()), full) {
                    Ok(parts) => parts,
                    Err(err) => {
                        tracing::error!(error = %err, "cannot sign the latency report");
                        continue;
                    }
                };
                tracing::debug!(subnets = samples.len(), parts = parts.len(), full, "latency report");
                if commands.send(Command::Latency(parts)).await.is_err() {
                    return;
                }
            }
        }
    }
}
