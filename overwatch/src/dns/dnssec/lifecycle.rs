//! The keys' lives: the first keys, ZSK pre-publish rollovers that advance on their own,
//! and double-DS KSK rollovers that advance when the operator says the parent has the
//! new DS. Pure functions over the replicated keys: the leader writes what they return.

use std::collections::BTreeMap;

use crate::config::DnssecSettings;
use crate::model::machine::{DnssecKey, KeyRole, KeyState, RequestV1};

use super::keys::generate;

/// Beyond the largest TTL, how long a rollover step waits for every cache to have seen
/// the previous one (clock skew, the time a write takes to reach every node).
pub const MARGIN_MS: u64 = 2_000;

/// Why a rollover cannot start or finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloverError {
    /// A rollover of that kind is under way.
    #[error("{0}")]
    InProgress(String),
    /// Nothing to finish, or no keys yet.
    #[error("{0}")]
    NotReady(String),
    /// A key could not be made.
    #[error("{0}")]
    Keygen(String),
}

fn next_id(keys: &BTreeMap<u32, DnssecKey>) -> u32 {
    keys.keys().max().map_or(1, |id| id + 1)
}

fn new_key(
    id: u32,
    role: KeyRole,
    algorithm: u8,
    state: KeyState,
    now_ms: u64,
) -> Result<DnssecKey, String> {
    Ok(DnssecKey {
        id,
        role,
        algorithm,
        pkcs8: generate(algorithm)?,
        state,
        since_ms: now_ms,
    })
}

/// What the leader writes next, if anything: the first KSK and ZSK (DNSSEC on, none
/// active), a pre-published ZSK made active once every cache can know it (the old one
/// retired), and a retired ZSK removed once its signatures have expired from caches.
/// `wait_ms` is the largest TTL the zones answer with, plus [`MARGIN_MS`].
pub fn next_step(
    keys: &BTreeMap<u32, DnssecKey>,
    settings: &DnssecSettings,
    wait_ms: u64,
    now_ms: u64,
) -> Result<Option<RequestV1>, String> {
    if !settings.enabled {
        return Ok(None);
    }
    let active = |role| {
        keys.values()
            .find(|k| k.role == role && k.state == KeyState::Active)
    };
    let mut first = Vec::new();
    let mut id = next_id(keys);
    for role in [KeyRole::Ksk, KeyRole::Zsk] {
        if active(role).is_none() {
            let key = new_key(id, role, settings.algorithm, KeyState::Active, now_ms)?;
            first.push(RequestV1::AddDnssecKey { key });
            id += 1;
        }
    }
    if !first.is_empty() {
        return Ok(Some(RequestV1::Batch(first)));
    }
    let due = |k: &DnssecKey| k.since_ms.saturating_add(wait_ms) <= now_ms;
    if let Some(new) = keys
        .values()
        .find(|k| k.role == KeyRole::Zsk && k.state == KeyState::Published && due(k))
    {
        let mut steps = vec![RequestV1::SetDnssecKeyState {
            id: new.id,
            state: KeyState::Active,
            at_ms: now_ms,
        }];
        if let Some(old) = active(KeyRole::Zsk) {
            steps.insert(
                0,
                RequestV1::SetDnssecKeyState {
                    id: old.id,
                    state: KeyState::Retired,
                    at_ms: now_ms,
                },
            );
        }
        return Ok(Some(RequestV1::Batch(steps)));
    }
    if let Some(old) = keys
        .values()
        .find(|k| k.state == KeyState::Retired && due(k))
    {
        return Ok(Some(RequestV1::RemoveDnssecKey { id: old.id }));
    }
    Ok(None)
}

/// The write that starts a ZSK rollover: a new ZSK, published before it signs.
pub fn start_zsk(
    keys: &BTreeMap<u32, DnssecKey>,
    algorithm: u8,
    now_ms: u64,
) -> Result<RequestV1, RolloverError> {
    if let Some(k) = keys.values().find(|k| {
        k.role == KeyRole::Zsk && matches!(k.state, KeyState::Published | KeyState::Retired)
    }) {
        return Err(RolloverError::InProgress(format!(
            "a ZSK rollover is under way (key {} is {:?}); it finishes on its own",
            k.id, k.state
        )));
    }
    start(keys, KeyRole::Zsk, KeyState::Published, algorithm, now_ms)
}

/// The write that starts a KSK rollover (double-DS): a new KSK whose DS the parent
/// publishes beside the old one before it is used.
pub fn start_ksk(
    keys: &BTreeMap<u32, DnssecKey>,
    algorithm: u8,
    now_ms: u64,
) -> Result<RequestV1, RolloverError> {
    if let Some(k) = keys.values().find(|k| k.state == KeyState::Pending) {
        return Err(RolloverError::InProgress(format!(
            "KSK {} is pending: once the parent publishes its DS (see `opengslb-cli dnssec ds`), finish with `opengslb-cli dnssec rollover ksk --complete`",
            k.id
        )));
    }
    start(keys, KeyRole::Ksk, KeyState::Pending, algorithm, now_ms)
}

/// A new key of `role` in `state`, beside the active one (which must exist).
fn start(
    keys: &BTreeMap<u32, DnssecKey>,
    role: KeyRole,
    state: KeyState,
    algorithm: u8,
    now_ms: u64,
) -> Result<RequestV1, RolloverError> {
    if !keys
        .values()
        .any(|k| k.role == role && k.state == KeyState::Active)
    {
        return Err(RolloverError::NotReady(format!(
            "no active {} yet: the cluster makes the first keys once a leader is elected",
            role.name()
        )));
    }
    let key =
        new_key(next_id(keys), role, algorithm, state, now_ms).map_err(RolloverError::Keygen)?;
    Ok(RequestV1::AddDnssecKey { key })
}

/// The write that finishes a KSK rollover: the pending KSK signs the DNSKEY RRset in
/// place of the old one, which leaves (the parent may then drop the old DS).
pub fn complete_ksk(
    keys: &BTreeMap<u32, DnssecKey>,
    now_ms: u64,
) -> Result<RequestV1, RolloverError> {
    let pending = keys
        .values()
        .find(|k| k.state == KeyState::Pending)
        .ok_or_else(|| {
            RolloverError::NotReady(
                "no KSK rollover is under way: start one with `opengslb-cli dnssec rollover ksk`"
                    .into(),
            )
        })?;
    let mut steps: Vec<RequestV1> = keys
        .values()
        .filter(|k| k.role == KeyRole::Ksk && k.state == KeyState::Active)
        .map(|k| RequestV1::RemoveDnssecKey { id: k.id })
        .collect();
    steps.push(RequestV1::SetDnssecKeyState {
        id: pending.id,
        state: KeyState::Active,
        at_ms: now_ms,
    });
    Ok(RequestV1::Batch(steps))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::machine::{Machine, Request, Response};

    fn apply(m: &mut Machine, r: RequestV1) {
        assert_eq!(m.apply(&Request::V1(r)), Response::Applied);
    }

    fn states(m: &Machine) -> Vec<(u32, KeyRole, KeyState)> {
        m.dnssec_keys
            .values()
            .map(|k| (k.id, k.role, k.state))
            .collect()
    }

    #[test]
    fn first_keys_then_a_zsk_rollover_that_finishes_on_its_own() {
        let settings = DnssecSettings::default();
        let mut m = Machine::default();
        let first = next_step(&m.dnssec_keys, &settings, 5_000, 1_000).expect("keys");
        apply(&mut m, first.expect("first keys"));
        use KeyRole::{Ksk, Zsk};
        use KeyState::{Active, Published, Retired};
        assert_eq!(states(&m), [(1, Ksk, Active), (2, Zsk, Active)]);
        assert_eq!(next_step(&m.dnssec_keys, &settings, 5_000, 2_000), Ok(None));
        // Two leaders racing to make the first keys: the second batch is refused.
        let again = next_step(&BTreeMap::new(), &settings, 5_000, 1_000)
            .expect("keys")
            .expect("batch");
        assert!(matches!(
            m.apply(&Request::V1(again)),
            Response::Conflict(_)
        ));

        let start = start_zsk(&m.dnssec_keys, 13, 10_000).expect("start");
        apply(&mut m, start);
        assert_eq!(states(&m)[2], (3, Zsk, Published));
        assert!(matches!(
            start_zsk(&m.dnssec_keys, 13, 10_001),
            Err(RolloverError::InProgress(_))
        ));
        assert_eq!(
            next_step(&m.dnssec_keys, &settings, 5_000, 14_999),
            Ok(None)
        );
        let swap = next_step(&m.dnssec_keys, &settings, 5_000, 15_000).expect("step");
        apply(&mut m, swap.expect("swap"));
        assert_eq!(
            states(&m),
            [(1, Ksk, Active), (2, Zsk, Retired), (3, Zsk, Active)]
        );
        assert_eq!(
            next_step(&m.dnssec_keys, &settings, 5_000, 19_999),
            Ok(None)
        );
        let remove = next_step(&m.dnssec_keys, &settings, 5_000, 20_000).expect("step");
        apply(&mut m, remove.expect("remove"));
        assert_eq!(states(&m), [(1, Ksk, Active), (3, Zsk, Active)]);

        let off = DnssecSettings {
            enabled: false,
            ..settings
        };
        assert_eq!(next_step(&BTreeMap::new(), &off, 0, 0), Ok(None));
    }

    #[test]
    fn a_ksk_rollover_waits_for_the_operator_and_swaps_in_one_entry() {
        let mut m = Machine::default();
        assert!(matches!(
            start_ksk(&m.dnssec_keys, 13, 0),
            Err(RolloverError::NotReady(_))
        ));
        let first = next_step(&m.dnssec_keys, &DnssecSettings::default(), 0, 0).expect("keys");
        apply(&mut m, first.expect("first"));
        assert!(matches!(
            complete_ksk(&m.dnssec_keys, 1),
            Err(RolloverError::NotReady(_))
        ));
        let start = start_ksk(&m.dnssec_keys, 13, 1).expect("start");
        apply(&mut m, start);
        let err = start_ksk(&m.dnssec_keys, 13, 2).expect_err("twice");
        assert!(err.to_string().contains("--complete"), "{err}");
        use KeyRole::{Ksk, Zsk};
        use KeyState::{Active, Pending};
        assert_eq!(
            states(&m),
            [(1, Ksk, Active), (2, Zsk, Active), (3, Ksk, Pending)]
        );
        let complete = complete_ksk(&m.dnssec_keys, 3).expect("complete");
        apply(&mut m, complete);
        assert_eq!(states(&m), [(2, Zsk, Active), (3, Ksk, Active)]);
    }
}
