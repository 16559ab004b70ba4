//! The replicated state machine: the only durable state of an overwatch cluster
//! (design.md, "Raft cluster"). Pure: `apply` is deterministic (no clocks, no I/O), so
//! every node that applies the same log holds the same state.
//!
//! It holds operator overrides, agent pins (and their revocation), and the backend
//! registry with each backend's last effective status transition. Heartbeats never come
//! here; transitions do.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// An override's target: a service's server, `address:port` as operators write it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OverrideKey {
    /// Service name.
    pub service: String,
    /// Server address and port.
    pub address: SocketAddr,
}

/// An operator's decision about one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    /// Forced healthy (true) or unhealthy (false).
    pub healthy: bool,
    /// Why, in the operator's words.
    pub reason: String,
    /// Who: the API token's name, never a header a client can set.
    pub author: String,
    /// When it was written (ms since the epoch, stamped by the node that accepted it).
    pub set_at_ms: u64,
    /// When it stops applying, if ever.
    pub expires_at_ms: Option<u64>,
}

impl Override {
    /// Whether it applies at `now_ms`. Expiry is read, not applied, so `apply` stays pure.
    pub fn active(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_none_or(|end| now_ms < end)
    }
}

/// An agent pinned to its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinRecord {
    /// SHA-256 of the certificate, hex.
    pub fingerprint: String,
    /// The agent's region.
    pub region: String,
    /// Services it was admitted for.
    pub services: BTreeSet<String>,
    /// When it was pinned (ms since the epoch).
    pub pinned_at_ms: u64,
}

/// A backend registry entry's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RegistryKey {
    /// Region name.
    pub region: String,
    /// Service name.
    pub service: String,
    /// Address and port.
    pub address: SocketAddr,
}

/// A backend as the cluster remembers it across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryRecord {
    /// Configured or reported weight.
    pub weight: u32,
    /// The agent that reports it, if any.
    pub agent_id: Option<String>,
    /// Last effective status: healthy, unhealthy, stale, draining.
    pub status: String,
    /// When that status began (ms since the epoch).
    pub changed_at_ms: u64,
}

/// A change to the replicated state: what the Raft log carries. Versioned from day one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Version 1.
    V1(RequestV1),
}

/// Version 1 requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestV1 {
    /// Set (or replace) an override.
    SetOverride {
        /// Target.
        key: OverrideKey,
        /// Decision.
        value: Override,
    },
    /// Remove an override.
    ClearOverride {
        /// Target.
        key: OverrideKey,
    },
    /// Pin an agent id to a certificate (first pin wins until revoked).
    PinAgent {
        /// The agent id.
        agent_id: String,
        /// The pin.
        pin: PinRecord,
    },
    /// Drop an agent's pin, so it may register again.
    RevokeAgent {
        /// The agent id.
        agent_id: String,
    },
    /// Record a backend and its status transition.
    RecordBackend {
        /// Identity.
        key: RegistryKey,
        /// State.
        record: RegistryRecord,
    },
    /// Remove a backend from the registry (stale for `remove_after`).
    RemoveBackend {
        /// Identity.
        key: RegistryKey,
    },
    /// Several changes in one entry (the leader's registry and pin reconciliation).
    Batch(Vec<RequestV1>),
    /// Add a DNSSEC key the leader generated. Refused when the id is taken, or when the
    /// key would be a second active key of its role (two leaders racing to make the first
    /// keys: the first entry wins everywhere).
    AddDnssecKey {
        /// The key.
        key: DnssecKey,
    },
    /// Move a DNSSEC key to another state of its rollover.
    SetDnssecKeyState {
        /// Key id.
        id: u32,
        /// New state.
        state: KeyState,
        /// When (ms since the epoch, stamped by the leader).
        at_ms: u64,
    },
    /// Remove a DNSSEC key at the end of its rollover.
    RemoveDnssecKey {
        /// Key id.
        id: u32,
    },
}

/// What a DNSSEC key signs (design.md, "DNS": a KSK/ZSK split).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum KeyRole {
    /// Key-signing key: signs the DNSKEY RRset; the parent's DS names it.
    Ksk,
    /// Zone-signing key: signs every other RRset.
    Zsk,
}

impl KeyRole {
    /// `KSK` or `ZSK`, as operators write them.
    pub fn name(self) -> &'static str {
        match self {
            KeyRole::Ksk => "KSK",
            KeyRole::Zsk => "ZSK",
        }
    }
}

/// Where a DNSSEC key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum KeyState {
    /// A new KSK whose DS the parent must publish first (double-DS): in CDS and CDNSKEY
    /// and in `dnssec ds`, not yet in the DNSKEY RRset.
    Pending,
    /// A new ZSK in the DNSKEY RRset, not signing yet (pre-publish): resolvers learn it
    /// before any signature needs it.
    Published,
    /// Signing.
    Active,
    /// An old ZSK still in the DNSKEY RRset, no longer signing, until every signature
    /// it made has expired from caches.
    Retired,
}

/// One DNSSEC key as the cluster holds it. The private half is replicated through Raft,
/// so every node signs with the same keys and a node that loses its disk gets them back;
/// it never reaches a log line or the API.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnssecKey {
    /// Cluster-wide id (not the key tag, which can collide).
    pub id: u32,
    /// KSK or ZSK.
    pub role: KeyRole,
    /// DNSSEC algorithm number: 13 (ECDSA P-256 SHA-256) or 15 (Ed25519).
    pub algorithm: u8,
    /// The private key, PKCS#8 (as ring reads it).
    pub pkcs8: Vec<u8>,
    /// Rollover state.
    pub state: KeyState,
    /// When it entered that state (ms since the epoch).
    pub since_ms: u64,
}

impl std::fmt::Debug for DnssecKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnssecKey")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("algorithm", &self.algorithm)
            .field("pkcs8", &"<redacted>")
            .field("state", &self.state)
            .field("since_ms", &self.since_ms)
            .finish()
    }
}

/// What applying a request did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Applied.
    Applied,
    /// Nothing to remove or revoke.
    NotFound,
    /// Refused, deterministically on every node.
    Conflict(String),
}

/// The state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// Operator overrides.
    pub overrides: BTreeMap<OverrideKey, Override>,
    /// Agent pins.
    pub pins: BTreeMap<String, PinRecord>,
    /// Backend registry.
    pub backends: BTreeMap<RegistryKey, RegistryRecord>,
    /// DNSSEC keys, by id.
    pub dnssec_keys: BTreeMap<u32, DnssecKey>,
}

/// The machine as version 1 snapshots hold it (before DNSSEC keys).
#[derive(Serialize, Deserialize)]
struct MachineV1 {
    overrides: BTreeMap<OverrideKey, Override>,
    pins: BTreeMap<String, PinRecord>,
    backends: BTreeMap<RegistryKey, RegistryRecord>,
}

/// Snapshot encoding, versioned like the log. Only the newest version is written.
#[derive(Serialize, Deserialize)]
enum Snapshot {
    V1(MachineV1),
    V2(Machine),
}

/// Why a snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable state machine snapshot: {0}")]
pub struct SnapshotError(String);

impl Machine {
    /// Applies one request. Deterministic: the same log gives the same state everywhere.
    pub fn apply(&mut self, request: &Request) -> Response {
        let Request::V1(request) = request;
        self.apply_v1(request)
    }

    fn apply_v1(&mut self, request: &RequestV1) -> Response {
        match request {
            RequestV1::Batch(requests) => {
                // Each part applies on its own; the batch reports the first refusal.
                let mut response = Response::Applied;
                for part in requests {
                    if let (Response::Applied, Response::Conflict(why)) =
                        (&response, self.apply_v1(part))
                    {
                        response = Response::Conflict(why);
                    }
                }
                response
            }
            RequestV1::SetOverride { key, value } => {
                self.overrides.insert(key.clone(), value.clone());
                Response::Applied
            }
            RequestV1::ClearOverride { key } => removed(self.overrides.remove(key).is_some()),
            RequestV1::PinAgent { agent_id, pin } => match self.pins.get(agent_id) {
                Some(existing) if existing.fingerprint != pin.fingerprint => {
                    Response::Conflict(format!(
                        "agent {agent_id} is pinned to another certificate ({}); revoke it first",
                        &existing.fingerprint[..existing.fingerprint.len().min(12)]
                    ))
                }
                _ => {
                    self.pins.insert(agent_id.clone(), pin.clone());
                    Response::Applied
                }
            },
            RequestV1::RevokeAgent { agent_id } => removed(self.pins.remove(agent_id).is_some()),
            RequestV1::RecordBackend { key, record } => {
                self.backends.insert(key.clone(), record.clone());
                Response::Applied
            }
            RequestV1::RemoveBackend { key } => removed(self.backends.remove(key).is_some()),
            RequestV1::AddDnssecKey { key } => {
                if self.dnssec_keys.contains_key(&key.id) {
                    return Response::Conflict(format!("DNSSEC key {} exists", key.id));
                }
                if key.state == KeyState::Active
                    && self
                        .dnssec_keys
                        .values()
                        .any(|k| k.role == key.role && k.state == KeyState::Active)
                {
                    return Response::Conflict(format!(
                        "an active {} exists; a new one starts a rollover",
                        key.role.name()
                    ));
                }
                self.dnssec_keys.insert(key.id, key.clone());
                Response::Applied
            }
            RequestV1::SetDnssecKeyState { id, state, at_ms } => {
                match self.dnssec_keys.get_mut(id) {
                    Some(key) => {
                        key.state = *state;
                        key.since_ms = *at_ms;
                        Response::Applied
                    }
                    None => Response::NotFound,
                }
            }
            RequestV1::RemoveDnssecKey { id } => removed(self.dnssec_keys.remove(id).is_some()),
        }
    }

    /// The overrides in force at `now_ms`.
    pub fn active_overrides(&self, now_ms: u64) -> impl Iterator<Item = (&OverrideKey, &Override)> {
        self.overrides.iter().filter(move |(_, o)| o.active(now_ms))
    }

    /// Encodes the whole state.
    pub fn snapshot(&self) -> Vec<u8> {
        // Maps and sets of derived structs and strings: every length is known, nothing
        // custom can fail, so postcard into a Vec cannot.
        postcard::to_allocvec(&Snapshot::V2(self.clone()))
            .expect("postcard encodes the derived machine types into a Vec")
    }

    /// Decodes a snapshot.
    pub fn restore(bytes: &[u8]) -> Result<Machine, SnapshotError> {
        match postcard::from_bytes::<Snapshot>(bytes) {
            Ok(Snapshot::V1(old)) => Ok(Machine {
                overrides: old.overrides,
                pins: old.pins,
                backends: old.backends,
                dnssec_keys: BTreeMap::new(),
            }),
            Ok(Snapshot::V2(machine)) => Ok(machine),
            Err(e) => Err(SnapshotError(e.to_string())),
        }
    }
}

fn removed(existed: bool) -> Response {
    if existed {
        Response::Applied
    } else {
        Response::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(service: &str, addr: &str) -> OverrideKey {
        OverrideKey {
            service: service.into(),
            address: addr.parse().expect("addr"),
        }
    }

    fn set(k: OverrideKey, healthy: bool, expires: Option<u64>) -> Request {
        Request::V1(RequestV1::SetOverride {
            key: k,
            value: Override {
                healthy,
                reason: "maintenance".into(),
                author: "ops".into(),
                set_at_ms: 1_000,
                expires_at_ms: expires,
            },
        })
    }

    fn pin(agent: &str, fingerprint: &str) -> Request {
        Request::V1(RequestV1::PinAgent {
            agent_id: agent.into(),
            pin: PinRecord {
                fingerprint: fingerprint.into(),
                region: "eu".into(),
                services: BTreeSet::from(["app".into()]),
                pinned_at_ms: 1,
            },
        })
    }

    #[test]
    fn a_batch_applies_every_part_and_reports_the_first_refusal() {
        let mut m = Machine::default();
        let Request::V1(first) = pin("eu-a", "aaaa");
        let Request::V1(clash) = pin("eu-a", "bbbb");
        let Request::V1(other) = set(key("app", "10.0.0.1:80"), false, None);
        let response = m.apply(&Request::V1(RequestV1::Batch(vec![first, clash, other])));
        assert!(
            matches!(response, Response::Conflict(ref why) if why.contains("eu-a")),
            "{response:?}"
        );
        assert_eq!(
            m.pins["eu-a"].fingerprint, "aaaa",
            "the clashing pin is refused"
        );
        assert_eq!(
            m.overrides.len(),
            1,
            "the part after the refusal still applies"
        );
        let restored = Machine::restore(&m.snapshot()).expect("restore");
        assert_eq!(restored, m);
    }

    #[test]
    fn overrides_are_set_replaced_cleared_and_expire_on_read() {
        let mut m = Machine::default();
        let k = key("app", "10.0.1.10:8080");
        assert_eq!(m.apply(&set(k.clone(), false, None)), Response::Applied);
        assert_eq!(
            m.apply(&set(k.clone(), true, Some(5_000))),
            Response::Applied,
            "replace"
        );
        assert!(m.overrides[&k].healthy);
        assert_eq!(m.active_overrides(4_999).count(), 1);
        assert_eq!(
            m.active_overrides(5_000).count(),
            0,
            "expired overrides stop applying"
        );
        assert_eq!(
            m.overrides.len(),
            1,
            "…but stay until cleared, identically on every node"
        );
        assert_eq!(
            m.apply(&Request::V1(RequestV1::ClearOverride { key: k.clone() })),
            Response::Applied
        );
        assert_eq!(
            m.apply(&Request::V1(RequestV1::ClearOverride { key: k })),
            Response::NotFound
        );
    }

    #[test]
    fn the_first_pin_wins_until_revoked() {
        let mut m = Machine::default();
        assert_eq!(m.apply(&pin("eu-abc", "aaaa")), Response::Applied);
        assert_eq!(
            m.apply(&pin("eu-abc", "aaaa")),
            Response::Applied,
            "re-pinning the same certificate is harmless"
        );
        assert!(
            matches!(m.apply(&pin("eu-abc", "bbbb")), Response::Conflict(msg) if msg.contains("revoke it first"))
        );
        assert_eq!(m.pins["eu-abc"].fingerprint, "aaaa");
        assert_eq!(
            m.apply(&Request::V1(RequestV1::RevokeAgent {
                agent_id: "eu-abc".into()
            })),
            Response::Applied
        );
        assert_eq!(m.apply(&pin("eu-abc", "bbbb")), Response::Applied);
        assert_eq!(
            m.apply(&Request::V1(RequestV1::RevokeAgent {
                agent_id: "nobody".into()
            })),
            Response::NotFound
        );
    }

    #[test]
    fn a_snapshot_from_before_dnssec_keys_restores_without_them() {
        let mut m = Machine::default();
        m.apply(&set(key("app", "10.0.0.1:80"), false, None));
        let old = postcard::to_allocvec(&Snapshot::V1(MachineV1 {
            overrides: m.overrides.clone(),
            pins: m.pins.clone(),
            backends: m.backends.clone(),
        }))
        .expect("encode");
        let restored = Machine::restore(&old).expect("restore a version 1 snapshot");
        assert_eq!(restored, m);
        assert!(restored.dnssec_keys.is_empty());
    }

    #[test]
    fn dnssec_keys_replicate_without_showing_their_private_half() {
        let mut m = Machine::default();
        let key = DnssecKey {
            id: 1,
            role: KeyRole::Zsk,
            algorithm: 13,
            pkcs8: vec![0xA5; 40],
            state: KeyState::Active,
            since_ms: 5,
        };
        let add = Request::V1(RequestV1::AddDnssecKey { key: key.clone() });
        assert_eq!(m.apply(&add), Response::Applied);
        assert!(
            matches!(m.apply(&add), Response::Conflict(_)),
            "the id is taken"
        );
        assert!(
            !format!("{m:?}").contains("165"),
            "Debug redacts the key: {m:?}"
        );
        let restored = Machine::restore(&m.snapshot()).expect("restore");
        assert_eq!(restored.dnssec_keys[&1], key);
    }

    #[test]
    fn snapshots_round_trip_and_garbage_is_refused() {
        let mut m = Machine::default();
        m.apply(&set(key("app", "10.0.1.10:8080"), false, Some(9)));
        m.apply(&pin("eu-abc", "aaaa"));
        m.apply(&Request::V1(RequestV1::RecordBackend {
            key: RegistryKey {
                region: "eu".into(),
                service: "app".into(),
                address: "10.0.1.10:8080".parse().expect("addr"),
            },
            record: RegistryRecord {
                weight: 100,
                agent_id: Some("eu-abc".into()),
                status: "draining".into(),
                changed_at_ms: 7,
            },
        }));
        let restored = Machine::restore(&m.snapshot()).expect("restore");
        assert_eq!(restored, m);
        assert!(Machine::restore(b"\xff\x00garbage").is_err());
    }

    fn arbitrary_request() -> impl Strategy<Value = Request> {
        let addr = (0u8..4, 1u16..3).prop_map(|(h, p)| SocketAddr::from(([10, 0, 0, h], p)));
        let service = prop_oneof![Just("app".to_owned()), Just("db".to_owned())];
        let agent = prop_oneof![Just("eu-a".to_owned()), Just("eu-b".to_owned())];
        let fp = prop_oneof![Just("aa".to_owned()), Just("bb".to_owned())];
        prop_oneof![
            (
                service.clone(),
                addr.clone(),
                any::<bool>(),
                proptest::option::of(0u64..100)
            )
                .prop_map(|(s, a, h, e)| set(
                    OverrideKey {
                        service: s,
                        address: a
                    },
                    h,
                    e
                )),
            (service.clone(), addr.clone()).prop_map(|(s, a)| Request::V1(
                RequestV1::ClearOverride {
                    key: OverrideKey {
                        service: s,
                        address: a
                    }
                }
            )),
            (agent.clone(), fp).prop_map(|(a, f)| pin(&a, &f)),
            agent.prop_map(|a| Request::V1(RequestV1::RevokeAgent { agent_id: a })),
            (service.clone(), addr.clone(), 0u64..100).prop_map(|(s, a, t)| Request::V1(
                RequestV1::RecordBackend {
                    key: RegistryKey {
                        region: "eu".into(),
                        service: s,
                        address: a
                    },
                    record: RegistryRecord {
                        weight: 100,
                        agent_id: None,
                        status: "healthy".into(),
                        changed_at_ms: t
                    },
                }
            )),
            (service, addr).prop_map(|(s, a)| Request::V1(RequestV1::RemoveBackend {
                key: RegistryKey {
                    region: "eu".into(),
                    service: s,
                    address: a
                }
            })),
        ]
    }

    proptest! {
        /// Two nodes applying the same log agree; a node restored from a snapshot taken
        /// part-way and then applying the rest of the log agrees too.
        #[test]
        fn same_log_same_state_also_through_a_snapshot(log in proptest::collection::vec(arbitrary_request(), 0..60), cut in any::<prop::sample::Index>()) {
            let (mut a, mut b) = (Machine::default(), Machine::default());
            let responses_a: Vec<Response> = log.iter().map(|r| a.apply(r)).collect();
            let responses_b: Vec<Response> = log.iter().map(|r| b.apply(r)).collect();
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(responses_a, responses_b);
            let cut = cut.index(log.len() + 1);
            let mut early = Machine::default();
            for r in &log[..cut] {
                early.apply(r);
            }
            let mut joined = Machine::restore(&early.snapshot()).expect("restore");
            for r in &log[cut..] {
                joined.apply(r);
            }
            prop_assert_eq!(joined, a);
        }
    }
}
