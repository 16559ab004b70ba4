//! Status reports as foca custom broadcasts: a newer version of an agent's report
//! invalidates older ones, and only overwatch members are sent them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use foca::{BroadcastHandler, Invalidates};

use super::{MemberId, Role};
use crate::wire::{Message, MessageV1, SignedReport, StatusReport, WireError, supersedes};

/// Broadcast key: the newest version of an agent's report invalidates older ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportKey {
    agent_id: String,
    version: u64,
}

impl Invalidates for ReportKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.agent_id == other.agent_id && self.version >= other.version
    }
}

/// Reports handed from foca's handler to the member task.
///
/// foca owns the handler and offers no way back to it, so new reports go through this
/// queue. Only the member task touches it: a std `Mutex`, never contended.
#[derive(Clone, Default)]
pub(crate) struct Delivered(Arc<Mutex<Vec<SignedReport>>>);

impl Delivered {
    fn push(&self, signed: SignedReport) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(signed);
    }

    /// Everything delivered since the last call.
    pub(crate) fn take(&self) -> Vec<SignedReport> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Decides which reports are new, and queues those for delivery.
pub(crate) struct Reports {
    latest: HashMap<String, u64>,
    deliver: bool,
    delivered: Delivered,
}

impl Reports {
    /// A handler that also delivers new reports (overwatch) or only relays them (agents).
    pub(crate) fn new(deliver: bool, delivered: Delivered) -> Reports {
        Reports {
            latest: HashMap::new(),
            deliver,
            delivered,
        }
    }
}

impl BroadcastHandler<MemberId> for Reports {
    type Key = ReportKey;
    type Error = WireError;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&MemberId>,
    ) -> Result<Option<ReportKey>, WireError> {
        let Message::V1(MessageV1::Report(signed)) = Message::decode(data)? else {
            return Err(WireError::Decode("not a status report".into()));
        };
        // Relaying needs only the key; overwatch verifies the signature before applying.
        let report: StatusReport =
            postcard::from_bytes(&signed.report).map_err(|e| WireError::Decode(e.to_string()))?;
        if !supersedes(report.version, self.latest.get(&report.agent_id).copied()) {
            return Ok(None);
        }
        self.latest.insert(report.agent_id.clone(), report.version);
        if self.deliver {
            self.delivered.push(signed);
        }
        Ok(Some(ReportKey {
            agent_id: report.agent_id,
            version: report.version,
        }))
    }

    fn should_add_broadcast_data(&self, member: &MemberId) -> bool {
        // Reports are for overwatch; agents have no use for each other's.
        member.role == Role::Overwatch
    }
}
