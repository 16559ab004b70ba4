//! Which agents may speak, and for what: service tokens and certificate pins.
//!
//! Pure rules over signed reports. An unknown agent is admitted only with a token that
//! `overwatch.agent_tokens` lists for every service it reports; its id is then pinned to
//! its certificate's fingerprint and every later report must come from that certificate.
//! Deleting the pin (API, CLI) lets the agent register again, e.g. with a new identity.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use opengslb_proto::identity::fingerprint;
use opengslb_proto::wire::{StatusReport, VerifiedReport, supersedes};

/// A pinned agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// SHA-256 of its certificate, hex.
    pub fingerprint: String,
    /// Its region.
    pub region: String,
    /// Services it reported last.
    pub services: BTreeSet<String>,
    /// When it was pinned.
    pub pinned_at: SystemTime,
    /// Newest report version accepted.
    pub version: u64,
    /// The certificate (DER) of its last admitted report: latency reports, which carry
    /// none, are verified with it. Empty until this node admits a report.
    pub certificate: Vec<u8>,
}

/// Why a verified report was not accepted (one that does not verify never gets here:
/// the gossip member drops and counts it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The token is not the one configured for a service it reports (or none is).
    #[error("token not valid for service {service:?}")]
    Token {
        /// The service.
        service: String,
    },
    /// An agent that is not pinned reports no backend, so its token proves no service:
    /// it is not pinned (no token, no pin).
    #[error(
        "no backend, so no service token is proven; an agent is pinned only with a backend of a service its token allows"
    )]
    NoService,
    /// The certificate is not the one pinned for this agent id.
    #[error("certificate {presented} does not match the pinned {pinned}")]
    PinMismatch {
        /// Pinned fingerprint (first 12 hex).
        pinned: String,
        /// Presented fingerprint (first 12 hex).
        presented: String,
    },
}

impl Rejection {
    /// Metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Token { .. } => "token",
            Rejection::NoService => "no_service",
            Rejection::PinMismatch { .. } => "pin_mismatch",
        }
    }
}

/// What admitting a report did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    /// A newer status: apply it.
    New(StatusReport),
    /// Already known (gossip repeats itself): nothing to do.
    Duplicate,
}

/// The pins, keyed by agent id.
#[derive(Debug, Clone, Default)]
pub struct AgentBook {
    pins: BTreeMap<String, Pin>,
}

impl AgentBook {
    /// Decides about one verified report. `tokens` is `overwatch.agent_tokens`.
    pub fn admit(
        &mut self,
        verified: VerifiedReport,
        tokens: &BTreeMap<String, String>,
        now: SystemTime,
    ) -> Result<Admitted, Rejection> {
        let (report, signed) = verified.into_parts();
        let services: BTreeSet<String> =
            report.backends.iter().map(|b| b.service.clone()).collect();
        for service in &services {
            let allowed = tokens
                .get(service)
                .is_some_and(|t| constant_time_eq(t.as_bytes(), signed.token.as_bytes()));
            if !allowed {
                return Err(Rejection::Token {
                    service: service.clone(),
                });
            }
        }
        let presented = fingerprint(&signed.certificate);
        match self.pins.get_mut(&report.agent_id) {
            Some(pin) if pin.fingerprint != presented => Err(Rejection::PinMismatch {
                pinned: pin.fingerprint[..12].to_owned(),
                presented: presented[..12].to_owned(),
            }),
            Some(pin) if !supersedes(report.version, Some(pin.version)) => Ok(Admitted::Duplicate),
            Some(pin) => {
                pin.version = report.version;
                pin.services = services;
                if pin.certificate.is_empty() {
                    pin.certificate = signed.certificate.clone();
                }
                Ok(Admitted::New(report))
            }
            None if services.is_empty() => Err(Rejection::NoService),
            None => {
                tracing::info!(agent_id = %report.agent_id, fingerprint = &presented[..12], "agent registered and pinned");
                self.pins.insert(
                    report.agent_id.clone(),
                    Pin {
                        fingerprint: presented,
                        region: report.region.clone(),
                        services,
                        pinned_at: now,
                        version: report.version,
                        certificate: signed.certificate.clone(),
                    },
                );
                Ok(Admitted::New(report))
            }
        }
    }

    /// Sets a pin the cluster agreed on (replacing one held only here).
    pub fn insert(&mut self, agent_id: String, pin: Pin) {
        self.pins.insert(agent_id, pin);
    }

    /// Drops a pin; `false` if there was none.
    pub fn forget(&mut self, agent_id: &str) -> bool {
        self.pins.remove(agent_id).is_some()
    }

    /// The pins.
    pub fn pins(&self) -> &BTreeMap<String, Pin> {
        &self.pins
    }
}

/// Compares secrets without an early exit that would leak how much of a guess matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use opengslb_proto::identity::AgentIdentity;
    use opengslb_proto::status::{Admin, Health};
    use opengslb_proto::wire::{BackendReport, ReceivedReport, SignedReport, WireError};

    const TOKEN: &str = "app-token-0123456789";

    fn identity(name: &str) -> AgentIdentity {
        AgentIdentity::generate("eu").unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn signed(
        agent: &AgentIdentity,
        version: u64,
        services: &[&str],
        token: &str,
    ) -> VerifiedReport {
        let report = StatusReport {
            agent_id: agent.agent_id().to_owned(),
            region: "eu".into(),
            version,
            backends: services
                .iter()
                .map(|s| BackendReport {
                    service: (*s).into(),
                    address: "10.0.0.1".parse().expect("ip"),
                    port: 80,
                    weight: 100,
                    weight_pct: 100,
                    admin: Admin::Ready,
                    health: Health::Up,
                })
                .collect(),
            leaving: false,
        };
        verified(SignedReport::sign(&report, agent, token).expect("sign"))
    }

    fn received(signed: SignedReport) -> ReceivedReport {
        ReceivedReport::decode(signed).expect("decode")
    }

    fn verified(signed: SignedReport) -> VerifiedReport {
        received(signed).verify().expect("verifies")
    }

    fn tokens() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app".to_owned(), TOKEN.to_owned()),
            ("db".to_owned(), "db-token-0123456789x".to_owned()),
        ])
    }

    #[test]
    fn an_unknown_agent_needs_the_token_of_every_service_then_is_pinned() {
        let agent = identity("pin");
        let mut book = AgentBook::default();
        let now = SystemTime::now();
        assert_eq!(
            book.admit(
                signed(&agent, 1, &["app"], "wrong-token-000000000"),
                &tokens(),
                now
            ),
            Err(Rejection::Token {
                service: "app".into()
            })
        );
        assert_eq!(
            book.admit(signed(&agent, 1, &["app", "db"], TOKEN), &tokens(), now),
            Err(Rejection::Token {
                service: "db".into()
            }),
            "the app token does not cover db"
        );
        assert_eq!(
            book.admit(signed(&agent, 1, &["web"], TOKEN), &tokens(), now),
            Err(Rejection::Token {
                service: "web".into()
            }),
            "no token configured for web"
        );
        assert!(book.pins().is_empty(), "nothing pinned by rejected reports");
        assert!(matches!(
            book.admit(signed(&agent, 1, &["app"], TOKEN), &tokens(), now),
            Ok(Admitted::New(_))
        ));
        let pin = &book.pins()[agent.agent_id()];
        assert_eq!(pin.fingerprint, fingerprint(agent.certificate()));
        assert_eq!(pin.services, BTreeSet::from(["app".to_owned()]));
    }

    #[test]
    fn later_reports_must_come_from_the_pinned_certificate_and_be_newer() {
        let agent = identity("later");
        let imposter = identity("imposter");
        let mut book = AgentBook::default();
        let now = SystemTime::now();
        book.admit(signed(&agent, 5, &["app"], TOKEN), &tokens(), now)
            .expect("first");
        assert_eq!(
            book.admit(signed(&agent, 5, &["app"], TOKEN), &tokens(), now),
            Ok(Admitted::Duplicate)
        );
        assert_eq!(
            book.admit(signed(&agent, 4, &["app"], TOKEN), &tokens(), now),
            Ok(Admitted::Duplicate),
            "older never replaces newer"
        );
        assert!(
            matches!(book.admit(signed(&agent, 6, &["app"], TOKEN), &tokens(), now), Ok(Admitted::New(r)) if r.version == 6)
        );
        // The imposter signs a report claiming the pinned id: its certificate implies
        // another id, so it never verifies and can never reach admission.
        let mut report = signed(&imposter, 7, &["app"], TOKEN).report().clone();
        report.agent_id = agent.agent_id().to_owned();
        let forged = received(SignedReport::sign(&report, &imposter, TOKEN).expect("sign"));
        assert!(matches!(forged.verify(), Err(WireError::IdMismatch { .. })));
        // A pinned agent may not add a service its token does not cover.
        assert_eq!(
            book.admit(signed(&agent, 8, &["app", "db"], TOKEN), &tokens(), now),
            Err(Rejection::Token {
                service: "db".into()
            })
        );
    }

    #[test]
    fn a_different_certificate_for_a_pinned_id_is_rejected_until_the_pin_is_deleted() {
        // Same region and a certificate with the same 12-hex prefix cannot be made, so
        // simulate a re-created identity by pinning under a fingerprint that differs.
        let agent = identity("repin");
        let mut book = AgentBook::default();
        let now = SystemTime::now();
        book.admit(signed(&agent, 1, &["app"], TOKEN), &tokens(), now)
            .expect("first");
        book.pins
            .get_mut(agent.agent_id())
            .expect("pin")
            .fingerprint = "0".repeat(64);
        let err = book
            .admit(signed(&agent, 2, &["app"], TOKEN), &tokens(), now)
            .expect_err("pin mismatch");
        assert_eq!(
            err,
            Rejection::PinMismatch {
                pinned: "0".repeat(12),
                presented: fingerprint(agent.certificate())[..12].to_owned()
            }
        );
        assert!(book.forget(agent.agent_id()));
        assert!(!book.forget(agent.agent_id()));
        assert!(
            matches!(
                book.admit(signed(&agent, 2, &["app"], TOKEN), &tokens(), now),
                Ok(Admitted::New(_))
            ),
            "registers again"
        );
    }

    #[test]
    fn a_report_without_backends_proves_no_token_and_is_not_pinned() {
        let mut book = AgentBook::default();
        let now = SystemTime::now();
        let stranger = identity("stranger");
        assert_eq!(
            book.admit(
                signed(&stranger, 1, &[], "any-token-at-all-xxxx"),
                &tokens(),
                now
            ),
            Err(Rejection::NoService)
        );
        assert!(book.pins().is_empty(), "no token, no pin");
        // A pinned agent may report no backend (it removed them all).
        let agent = identity("agent");
        assert!(matches!(
            book.admit(signed(&agent, 1, &["app"], TOKEN), &tokens(), now),
            Ok(Admitted::New(_))
        ));
        assert!(matches!(
            book.admit(signed(&agent, 2, &[], TOKEN), &tokens(), now),
            Ok(Admitted::New(r)) if r.backends.is_empty()
        ));
    }

    #[test]
    fn constant_time_eq_compares_whole_secrets() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
