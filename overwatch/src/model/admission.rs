//! Which agents may speak, and for what: service tokens, certificate pins, networks.
//!
//! Pure rules over signed reports. An unknown agent is admitted only when its report
//! proves the token `overwatch.agent_tokens` lists for every service it reports (the
//! token itself never travels: `SignedReport::proves`), and only as fast as
//! `overwatch.agent_registration` allows per token; its id is then pinned to its
//! certificate's fingerprint and every later report must come from that certificate.
//! Where `overwatch.agent_networks` lists networks for a service, every backend an agent
//! announces for it must lie in one. Deleting the pin (API, CLI) lets the agent register
//! again, e.g. with a new identity.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use opengslb_proto::wire::{RejectCause, StatusReport, VerifiedReport, supersedes};

use crate::config::{RegistrationSettings, Settings};

/// What admission checks reports against, borrowed from the settings.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// `overwatch.agent_tokens`: service → token.
    pub tokens: &'a BTreeMap<String, String>,
    /// `overwatch.agent_networks`: service → where its agent-announced backends may be.
    pub networks: &'a BTreeMap<String, Vec<IpNet>>,
    /// `overwatch.agent_registration`: how fast new agents may be pinned per token.
    pub registration: RegistrationSettings,
}

impl<'a> Policy<'a> {
    /// The policy the settings configure.
    pub fn of(settings: &'a Settings) -> Policy<'a> {
        Policy {
            tokens: &settings.agent_tokens,
            networks: &settings.agent_networks,
            registration: settings.agent_registration,
        }
    }
}

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
    /// The report does not prove the token configured for a service it reports (or
    /// none is configured).
    #[error("token not valid for service {service:?}")]
    Token {
        /// The service.
        service: String,
    },
    /// A backend lies outside the networks `overwatch.agent_networks` allows its service.
    #[error(
        "backend {address} of service {service:?} is outside overwatch.agent_networks.{service}"
    )]
    Network {
        /// The service.
        service: String,
        /// The backend address announced.
        address: IpAddr,
    },
    /// Too many new agents with this token lately (`overwatch.agent_registration`): the
    /// agent is pinned on a later report.
    #[error(
        "new agents for service {service:?} arrive faster than overwatch.agent_registration allows; retried with its next report"
    )]
    RegistrationRate {
        /// A service of the token.
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
    /// The cause an agent is told.
    pub fn cause(&self) -> RejectCause {
        match self {
            Rejection::Token { .. } => RejectCause::Token,
            Rejection::Network { .. } => RejectCause::Network,
            Rejection::RegistrationRate { .. } => RejectCause::RegistrationRate,
            Rejection::NoService => RejectCause::NoService,
            Rejection::PinMismatch { .. } => RejectCause::Pin,
        }
    }

    /// Metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Token { .. } => "token",
            Rejection::Network { .. } => "network",
            Rejection::RegistrationRate { .. } => "registration_rate",
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

/// The pins, keyed by agent id, and the registration budget of each token.
#[derive(Debug, Clone, Default)]
pub struct AgentBook {
    pins: BTreeMap<String, Pin>,
    /// Token → new pins it may still make now (a token bucket; in memory only).
    budgets: HashMap<String, Budget>,
}

/// A token bucket of new pins.
#[derive(Debug, Clone, Copy)]
struct Budget {
    left: f64,
    at: SystemTime,
}

impl AgentBook {
    /// Decides about one verified report.
    pub fn admit(
        &mut self,
        verified: VerifiedReport,
        policy: &Policy<'_>,
        now: SystemTime,
    ) -> Result<Admitted, Rejection> {
        let presented = verified.fingerprint().to_owned();
        let (report, signed) = verified.into_parts();
        let services: BTreeSet<String> =
            report.backends.iter().map(|b| b.service.clone()).collect();
        for service in &services {
            if !policy.tokens.get(service).is_some_and(|t| signed.proves(t)) {
                return Err(Rejection::Token {
                    service: service.clone(),
                });
            }
        }
        for backend in &report.backends {
            let Some(networks) = policy.networks.get(&backend.service) else {
                continue;
            };
            if !networks.iter().any(|n| n.contains(&backend.address)) {
                return Err(Rejection::Network {
                    service: backend.service.clone(),
                    address: backend.address,
                });
            }
        }
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
                // Every service of the report is proven by the same token (an agent has
                // one), so its budget is that token's.
                let first = services.first().expect("not empty: checked above");
                let token = &policy.tokens[first];
                if !self.spend(token, policy.registration, now) {
                    return Err(Rejection::RegistrationRate {
                        service: first.clone(),
                    });
                }
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

    /// Takes one new pin from `token`'s budget, refilled at `per_second` up to `burst`.
    fn spend(&mut self, token: &str, rate: RegistrationSettings, now: SystemTime) -> bool {
        let budget = self.budgets.entry(token.to_owned()).or_insert(Budget {
            left: f64::from(rate.burst),
            at: now,
        });
        // A clock that steps back refills nothing.
        let elapsed = now.duration_since(budget.at).unwrap_or(Duration::ZERO);
        budget.left =
            (budget.left + elapsed.as_secs_f64() * rate.per_second).min(f64::from(rate.burst));
        budget.at = now;
        if budget.left < 1.0 {
            return false;
        }
        budget.left -= 1.0;
        true
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::LazyLock;

    use opengslb_proto::identity::{AgentIdentity, fingerprint};
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

    static TOKENS: LazyLock<BTreeMap<String, String>> = LazyLock::new(|| {
        BTreeMap::from([
            ("app".to_owned(), TOKEN.to_owned()),
            ("db".to_owned(), "db-token-0123456789x".to_owned()),
        ])
    });
    static ANYWHERE: LazyLock<BTreeMap<String, Vec<IpNet>>> = LazyLock::new(BTreeMap::new);
    static APP_IN_10_8: LazyLock<BTreeMap<String, Vec<IpNet>>> = LazyLock::new(|| {
        BTreeMap::from([("app".to_owned(), vec!["10.0.0.0/8".parse().expect("net")])])
    });

    fn policy() -> Policy<'static> {
        Policy {
            tokens: &TOKENS,
            networks: &ANYWHERE,
            registration: RegistrationSettings {
                burst: 1_000,
                per_second: 1.0,
            },
        }
    }

    #[test]
    fn agent_announced_backends_must_lie_in_the_services_networks() {
        let agent = identity("net");
        let mut book = AgentBook::default();
        let now = SystemTime::now();
        let fenced = Policy {
            networks: &APP_IN_10_8,
            ..policy()
        };
        // `signed` announces 10.0.0.1: inside.
        assert!(matches!(
            book.admit(signed(&agent, 1, &["app"], TOKEN), &fenced, now),
            Ok(Admitted::New(_))
        ));
        let mut outside = signed(&agent, 2, &["app"], TOKEN).report().clone();
        outside.backends[0].address = "192.0.2.9".parse().expect("ip");
        let outside = verified(SignedReport::sign(&outside, &agent, TOKEN).expect("sign"));
        assert_eq!(
            book.admit(outside, &fenced, now),
            Err(Rejection::Network {
                service: "app".into(),
                address: "192.0.2.9".parse().expect("ip")
            })
        );
        assert_eq!(
            Rejection::Network {
                service: "app".into(),
                address: "192.0.2.9".parse().expect("ip")
            }
            .to_string(),
            "backend 192.0.2.9 of service \"app\" is outside overwatch.agent_networks.app"
        );
    }

    #[test]
    fn new_pins_per_token_are_rate_limited_and_pinned_agents_are_not() {
        let mut book = AgentBook::default();
        let t0 = SystemTime::now();
        let slow = Policy {
            registration: RegistrationSettings {
                burst: 3,
                per_second: 0.5,
            },
            ..policy()
        };
        let agents: Vec<AgentIdentity> = (0..5).map(|i| identity(&format!("r{i}"))).collect();
        for agent in &agents[..3] {
            assert!(matches!(
                book.admit(signed(agent, 1, &["app"], TOKEN), &slow, t0),
                Ok(Admitted::New(_))
            ));
        }
        assert_eq!(
            book.admit(signed(&agents[3], 1, &["app"], TOKEN), &slow, t0),
            Err(Rejection::RegistrationRate {
                service: "app".into()
            }),
            "the burst is spent"
        );
        assert!(
            matches!(
                book.admit(signed(&agents[0], 2, &["app"], TOKEN), &slow, t0),
                Ok(Admitted::New(_))
            ),
            "an agent already pinned keeps reporting"
        );
        assert!(
            matches!(
                book.admit(
                    signed(&agents[4], 1, &["db"], "db-token-0123456789x"),
                    &slow,
                    t0
                ),
                Ok(Admitted::New(_))
            ),
            "another token has its own budget"
        );
        let later = t0 + Duration::from_secs(2);
        assert!(
            matches!(
                book.admit(signed(&agents[3], 1, &["app"], TOKEN), &slow, later),
                Ok(Admitted::New(_))
            ),
            "refilled at per_second"
        );
        assert_eq!(book.pins().len(), 5);
    }

    #[test]
    fn an_unknown_agent_needs_the_token_of_every_service_then_is_pinned() {
        let agent = identity("pin");
        let mut book = AgentBook::default();
        let now = SystemTime::now();
        assert_eq!(
            book.admit(
                signed(&agent, 1, &["app"], "wrong-token-000000000"),
                &policy(),
                now
            ),
            Err(Rejection::Token {
                service: "app".into()
            })
        );
        assert_eq!(
            book.admit(signed(&agent, 1, &["app", "db"], TOKEN), &policy(), now),
            Err(Rejection::Token {
                service: "db".into()
            }),
            "the app token does not cover db"
        );
        assert_eq!(
            book.admit(signed(&agent, 1, &["web"], TOKEN), &policy(), now),
            Err(Rejection::Token {
                service: "web".into()
            }),
            "no token configured for web"
        );
        assert!(book.pins().is_empty(), "nothing pinned by rejected reports");
        assert!(matches!(
            book.admit(signed(&agent, 1, &["app"], TOKEN), &policy(), now),
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
        book.admit(signed(&agent, 5, &["app"], TOKEN), &policy(), now)
            .expect("first");
        assert_eq!(
            book.admit(signed(&agent, 5, &["app"], TOKEN), &policy(), now),
            Ok(Admitted::Duplicate)
        );
        assert_eq!(
            book.admit(signed(&agent, 4, &["app"], TOKEN), &policy(), now),
            Ok(Admitted::Duplicate),
            "older never replaces newer"
        );
        assert!(
            matches!(book.admit(signed(&agent, 6, &["app"], TOKEN), &policy(), now), Ok(Admitted::New(r)) if r.version == 6)
        );
        // The imposter signs a report claiming the pinned id: its certificate implies
        // another id, so it never verifies and can never reach admission.
        let mut report = signed(&imposter, 7, &["app"], TOKEN).report().clone();
        report.agent_id = agent.agent_id().to_owned();
        let forged = received(SignedReport::sign(&report, &imposter, TOKEN).expect("sign"));
        assert!(matches!(forged.verify(), Err(WireError::IdMismatch { .. })));
        // A pinned agent may not add a service its token does not cover.
        assert_eq!(
            book.admit(signed(&agent, 8, &["app", "db"], TOKEN), &policy(), now),
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
        book.admit(signed(&agent, 1, &["app"], TOKEN), &policy(), now)
            .expect("first");
        book.pins
            .get_mut(agent.agent_id())
            .expect("pin")
            .fingerprint = "0".repeat(64);
        let err = book
            .admit(signed(&agent, 2, &["app"], TOKEN), &policy(), now)
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
                book.admit(signed(&agent, 2, &["app"], TOKEN), &policy(), now),
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
                &policy(),
                now
            ),
            Err(Rejection::NoService)
        );
        assert!(book.pins().is_empty(), "no token, no pin");
        // A pinned agent may report no backend (it removed them all).
        let agent = identity("agent");
        assert!(matches!(
            book.admit(signed(&agent, 1, &["app"], TOKEN), &policy(), now),
            Ok(Admitted::New(_))
        ));
        assert!(matches!(
            book.admit(signed(&agent, 2, &[], TOKEN), &policy(), now),
            Ok(Admitted::New(r)) if r.backends.is_empty()
        ));
    }
}
