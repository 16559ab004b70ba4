//! Status reports as foca custom broadcasts: a newer version of an agent's report
//! invalidates older ones, and only overwatch members are sent them.
//!
//! Nothing is believed before it verifies: a report's signature and agent-id binding are
//! checked before its version is recorded, before it is relayed and before it is
//! delivered. A report that does not verify changes nothing, is counted by reason
//! (`opengslb_gossip_reports_rejected_total`) and logged at most every 10 s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use foca::{BroadcastHandler, Invalidates};

use super::trust::Proven;
use super::{MemberId, Role};
use crate::log_limit::LogLimit;
use crate::wire::{Message, MessageV2, ReceivedReport, VerifiedReport, WireError, supersedes};

/// Broadcast key: the newest version of an agent's report invalidates older ones. An
/// agent is its id *and* its certificate: a certificate ground to share a victim's 12-hex
/// id prefix gets versions of its own and cannot silence the victim's reports here
/// (admission then rejects it against the pin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportKey {
    agent: Agent,
    version: u64,
}

/// Agent id and certificate fingerprint.
type Agent = (String, String);

impl Invalidates for ReportKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.agent == other.agent && self.version >= other.version
    }
}

/// Reports handed from foca's handler to the member task.
///
/// foca owns the handler and offers no way back to it, so new reports go through this
/// queue. Only the member task touches it: a std `Mutex`, never contended.
#[derive(Clone, Default)]
pub(crate) struct Delivered(Arc<Mutex<Vec<VerifiedReport>>>);

impl Delivered {
    fn push(&self, report: VerifiedReport) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(report);
    }

    /// Everything delivered since the last call.
    pub(crate) fn take(&self) -> Vec<VerifiedReport> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Decides which reports are new, and queues those for delivery.
pub(crate) struct Reports {
    latest: HashMap<Agent, u64>,
    deliver: bool,
    delivered: Delivered,
    proven: Proven,
    rejections: RejectionLog,
}

/// Rejected reports, logged at most once per 10 s with how many were not logged since: a
/// flood of forgeries cannot flood the log.
struct RejectionLog(LogLimit);

impl Default for RejectionLog {
    fn default() -> Self {
        RejectionLog(LogLimit::every(Duration::from_secs(10)))
    }
}

impl RejectionLog {
    fn record(&mut self, err: &WireError, claimed: Option<&str>, sender: Option<&MemberId>) {
        metrics::counter!(super::REPORTS_REJECTED, "reason" => err.reason()).increment(1);
        if let Some(skipped) = self.0.ready(Instant::now()) {
            tracing::warn!(
                agent_id = claimed.unwrap_or("?"),
                via = ?sender,
                reason = %err,
                not_logged_since_last = skipped,
                "dropped a gossip report that does not verify"
            );
        }
    }
}

impl Reports {
    /// A handler that also delivers new reports (overwatch) or only relays them (agents).
    pub(crate) fn new(deliver: bool, delivered: Delivered, proven: Proven) -> Reports {
        Reports {
            latest: HashMap::new(),
            deliver,
            delivered,
            proven,
            rejections: RejectionLog::default(),
        }
    }
}

impl BroadcastHandler<MemberId> for Reports {
    type Key = ReportKey;
    type Error = WireError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&MemberId>,
    ) -> Result<Option<ReportKey>, WireError> {
        // Decoded once; verified before the version is looked at, so a forged report
        // with a victim's id and the largest version cannot silence the victim.
        let verified = match Message::decode(data).and_then(|message| match message {
            MessageV2::Report(signed) => ReceivedReport::decode(signed),
            _ => Err(WireError::Decode("not a status report".into())),
        }) {
            Ok(received) => {
                let claimed = received.claimed().agent_id.clone();
                received
                    .verify()
                    .inspect_err(|err| self.rejections.record(err, Some(&claimed), sender))?
            }
            Err(err) => {
                self.rejections.record(&err, None, sender);
                return Err(err);
            }
        };
        let agent = (
            verified.report().agent_id.clone(),
            verified.fingerprint().to_owned(),
        );
        let version = verified.report().version;
        if !supersedes(version, self.latest.get(&agent).copied()) {
            return Ok(None);
        }
        self.latest.insert(agent.clone(), version);
        let key = ReportKey { agent, version };
        if self.deliver {
            self.delivered.push(verified);
        }
        Ok(Some(key))
    }

    fn should_add_broadcast_data(&self, member: &MemberId) -> bool {
        // Reports are for overwatch (proven, not claimed); agents have no use for each
        // other's.
        member.role == Role::Overwatch && self.proven.contains(member)
    }
}
