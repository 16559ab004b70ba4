//! From the published view to the API's JSON types: the one place core types become
//! what operators read. Times become RFC 3339 here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opengslb_proto::status::{Admin, Health};

use super::types;
use crate::model::machine::{Override, OverrideKey};
use crate::model::status::Validation;
use crate::model::view::{AgentView, BackendView, Change, LastSeen};

/// `seen` has the live last-report time of agents that still report (heartbeats do not
/// publish a new view); a remembered backend shows when the registry last changed it.
pub(super) fn backend(b: &BackendView, seen: &LastSeen) -> types::Backend {
    let (validation_healthy, validation_state, validation_error) = match &b.validation {
        Validation::Disabled => (None, "disabled", None),
        Validation::Pending => (None, "pending", None),
        Validation::Healthy => (Some(true), "healthy", None),
        Validation::Unhealthy(reason) => (Some(false), "unhealthy", Some(reason.clone())),
    };
    types::Backend {
        service: b.key.service.clone(),
        address: b.key.address,
        port: b.key.port,
        weight: b.weight,
        region: b.key.region.clone(),
        agent_id: b.agent.as_ref().map(|a| a.agent_id.clone()),
        contested_by: b
            .agent
            .as_ref()
            .map(|a| a.contested_by.clone())
            .unwrap_or_default(),
        effective_status: b.effective.name().to_owned(),
        effective_reason: b.reason.clone(),
        last_change: rfc3339(b.last_change),
        agent_healthy: b
            .agent
            .as_ref()
            .map(|a| !matches!(a.health, Health::Down(_))),
        agent_last_seen: b
            .agent
            .as_ref()
            .map(|a| rfc3339(seen.get(&a.agent_id).unwrap_or(a.last_seen))),
        agent_admin: b.agent.as_ref().map(|a| {
            let word = if a.left {
                "left"
            } else {
                match a.admin {
                    Admin::Ready => "ready",
                    Admin::Drain => "drain",
                    Admin::Maint => "maint",
                }
            };
            word.to_owned()
        }),
        agent_stale: b.agent.as_ref().map(|a| a.stale),
        configured: b.configured,
        validation_healthy,
        validation_state: validation_state.to_owned(),
        validation_last_check: b.check.last_check.map(rfc3339),
        validation_error,
        rtt_ms: b.check.srtt.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3),
        override_status: b.override_.as_ref().map(|o| o.healthy),
        override_reason: b.override_.as_ref().map(|o| o.reason.clone()),
        override_author: b.override_.as_ref().map(|o| o.author.clone()),
    }
}

/// An agent; `seen` has its live last-report time.
pub(super) fn agent(a: &AgentView, seen: &LastSeen) -> types::Agent {
    types::Agent {
        agent_id: a.agent_id.clone(),
        region: a.region.clone(),
        fingerprint: a.fingerprint.clone(),
        services: a.services.clone(),
        backends: a.backends,
        last_seen: seen.get(&a.agent_id).or(a.last_seen).map(rfc3339),
        stale: a.stale,
        left: a.left,
        version: a.version,
    }
}

/// A status change.
pub(super) fn change(c: &Change) -> types::Change {
    types::Change {
        at: rfc3339(c.at),
        backend: c.backend.clone(),
        region: c.region.clone(),
        from: c.from.to_owned(),
        to: c.to.to_owned(),
        reason: c.reason.clone(),
    }
}

/// An override, and whether it is in force at `now_ms`.
pub(super) fn override_entry(key: &OverrideKey, o: &Override, now_ms: u64) -> types::OverrideEntry {
    let at = |ms: u64| rfc3339(UNIX_EPOCH + Duration::from_millis(ms));
    types::OverrideEntry {
        service: key.service.clone(),
        address: key.address,
        healthy: o.healthy,
        reason: o.reason.clone(),
        author: o.author.clone(),
        set_at: at(o.set_at_ms),
        expires_at: o.expires_at_ms.map(at),
        active: o.active(now_ms),
    }
}

/// `2026-11-21T05:33:20Z` (UTC, second precision).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_219_200 + 3661)),
            "2026-11-21T01:01:01Z"
        );
    }
}
