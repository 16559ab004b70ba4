//! Status reports as foca custom broadcasts: a newer version of an agent's report
//! invalidates older ones, and only overwatch members are sent them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use foca::{BroadcastHandler, Invalidates};

use super::{MemberId, Role};
use crate::wire::{Message, MessageV1, ReceivedReport, WireError, supersedes};

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
pub(crate) struct Delivered(Arc<Mutex<Vec<ReceivedReport>>>);

impl Delivered {
    fn push(&self, report: ReceivedReport) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(report);
    }

    /// Everything delivered since the last call.
    pub(crate) fn take(&self) -> Vec<ReceivedReport> {
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
        // Decoded here, once; relaying needs only the key, and overwatch verifies the
        // signature before applying.
        let received = ReceivedReport::decode(signed)?;
        let (agent_id, version) = (&received.claimed().agent_id, received.claimed().version);
        if !supersedes(version, self.latest.get(agent_id).copied()) {
            return Ok(None);
        }
        self.latest.insert(agent_id.clone(), version);
        let key = ReportKey {
            agent_id: agent_id.clone(),
            version,
        };
        if self.deliver {
            self.delivered.push(received);
        }
        Ok(Some(key))
    }

    fn should_add_broadcast_data(&self, member: &MemberId) -> bool {
        // Reports are for overwatch; agents have no use for each other's.
        member.role == Role::Overwatch
    }
}
