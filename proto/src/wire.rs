//! What agents say to overwatch, versioned from day one, encoded with postcard (foca's
//! own codec: compact, and one encoding for the whole packet).
//!
//! Version 2 proves the service token instead of sending it ([`crate::token`]); a
//! version 1 message (its token in clear) is refused by name, so an agent that was not
//! upgraded is told so rather than ignored.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::identity::{self, AgentIdentity, SignError};
use crate::status::{Admin, Health};
use crate::subnet::Subnet;
use crate::token;

/// Every message on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Version 1: retired (it carried service tokens in clear). Never sent; decoding one
    /// is [`WireError::Retired`].
    V1(Retired),
    /// Version 2.
    V2(MessageV2),
}

/// What is left of a version 1 message: its number, so it can be refused by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired;

/// Version 2 messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageV2 {
    /// An agent's signed status of all its backends.
    Report(SignedReport),
    /// Part of an agent's learned client latency, signed.
    Latency(SignedLatency),
    /// "Prove you are overwatch": a member asks one that claims the overwatch role.
    Challenge(Challenge),
    /// The answer: a token proof over the challenge and the prover's member identity.
    Proof(Proof),
    /// An overwatch node's verdict on one report, sent back to its agent.
    Ack(Ack),
}

/// An overwatch node's answer to a report: whether it was accepted, and if not, why.
///
/// Sealed under the cluster key like everything else, and only diagnostic: it changes
/// nothing in the agent's status, it tells the operator whether overwatch hears the agent.
/// (A holder of the cluster key could forge one; the worst it does is a wrong log line.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The overwatch node that decided.
    pub node: String,
    /// The agent the report came from.
    pub agent_id: String,
    /// The report's version.
    pub version: u64,
    /// Accepted, or rejected and why.
    pub verdict: Verdict,
}

/// What overwatch did with a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Its status counts.
    Accepted,
    /// Not admitted.
    Rejected {
        /// The kind of problem.
        cause: RejectCause,
        /// Overwatch's words for it.
        detail: String,
    },
}

/// Why overwatch refused a report, in words an agent can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RejectCause {
    /// The service token is not the one overwatch holds for the service.
    Token,
    /// The agent id is pinned to another certificate.
    Pin,
    /// A backend lies outside the networks allowed for its service.
    Network,
    /// New agents arrive faster than overwatch admits them; retried.
    RegistrationRate,
    /// The report has no backend, so no token is proven.
    NoService,
}

impl RejectCause {
    /// The metrics label, and the word in log lines.
    pub fn label(self) -> &'static str {
        match self {
            RejectCause::Token => "token",
            RejectCause::Pin => "pin",
            RejectCause::Network => "network",
            RejectCause::RegistrationRate => "registration_rate",
            RejectCause::NoService => "no_service",
        }
    }
}

/// A challenge to a member that claims to be overwatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// Fresh random bytes: a proof is good for one challenge.
    pub nonce: [u8; 16],
    /// Services whose token the challenger holds (names only); the prover proves one.
    pub services: Vec<String>,
}

/// An overwatch member's answer to a [`Challenge`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// The challenge's nonce.
    pub nonce: [u8; 16],
    /// The service whose token keyed the proof.
    pub service: String,
    /// HMAC-SHA256 keyed by that token over the nonce and the prover's encoded member
    /// identity: good for that identity only, so relaying it from a real node does not
    /// make another member overwatch.
    pub mac: Vec<u8>,
}

impl Proof {
    /// The proof that the holder of `token` for `service` is the member `prover`
    /// (postcard encoding of its identity), answering `nonce`.
    pub fn make(nonce: [u8; 16], service: &str, token: &str, prover: &[u8]) -> Proof {
        Proof {
            nonce,
            service: service.to_owned(),
            mac: token::prove(
                token,
                token::OVERWATCH,
                &[&nonce, service.as_bytes(), prover],
            ),
        }
    }

    /// Whether this proves that `prover` holds `token` (of `self.service`) for `nonce`.
    pub fn holds(&self, nonce: &[u8; 16], token: &str, prover: &[u8]) -> bool {
        &self.nonce == nonce
            && token::check(
                token,
                token::OVERWATCH,
                &[nonce, self.service.as_bytes(), prover],
                &self.mac,
            )
    }
}

/// Learned RTT of one client subnet.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencySample {
    /// The client subnet.
    pub subnet: Subnet,
    /// Smoothed RTT, microseconds.
    pub rtt_us: u32,
    /// Connections sampled.
    pub samples: u32,
}

/// One part of an agent's latency report (a report is split so no packet exceeds the
/// path MTU).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyReport {
    /// `{region}-{12 hex}`.
    pub agent_id: String,
    /// The agent's region.
    pub region: String,
    /// Increases with every report; all parts of one report share it.
    pub version: u64,
    /// A full refresh (every subnet) rather than the changed ones.
    pub full: bool,
    /// This part's number, from 0.
    pub part: u16,
    /// How many parts the report has.
    pub parts: u16,
    /// Subnets.
    pub samples: Vec<LatencySample>,
}

/// A latency report signed by the agent. It carries no certificate (that would take a
/// third of every packet): overwatch verifies it with the certificate of the agent's
/// admitted status reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedLatency {
    /// postcard encoding of the `LatencyReport`, exactly as signed.
    pub report: Vec<u8>,
    /// ECDSA P-256 over the domain tag and `report`.
    pub signature: Vec<u8>,
}

/// Separates latency signatures from status signatures.
const LATENCY_DOMAIN: &[u8] = b"opengslb-latency-v1\0";

impl SignedLatency {
    /// Signs one part.
    pub fn sign(
        report: &LatencyReport,
        identity: &AgentIdentity,
    ) -> Result<SignedLatency, SignError> {
        let bytes = encode(report);
        let mut message = LATENCY_DOMAIN.to_vec();
        message.extend_from_slice(&bytes);
        Ok(SignedLatency {
            signature: identity.sign(&message)?,
            report: bytes,
        })
    }

    /// The agent it claims to come from (unverified), to find its certificate.
    pub fn claimed_agent(&self) -> Result<String, WireError> {
        postcard::from_bytes::<LatencyReport>(&self.report)
            .map(|r| r.agent_id)
            .map_err(|e| WireError::Decode(e.to_string()))
    }

    /// Verifies against the agent's `certificate` (DER) and decodes.
    pub fn open(&self, certificate: &[u8]) -> Result<LatencyReport, WireError> {
        let mut message = LATENCY_DOMAIN.to_vec();
        message.extend_from_slice(&self.report);
        if !identity::verify(certificate, &message, &self.signature) {
            return Err(WireError::BadSignature);
        }
        let report: LatencyReport =
            postcard::from_bytes(&self.report).map_err(|e| WireError::Decode(e.to_string()))?;
        let expected = identity::agent_id(&report.region, certificate);
        if report.agent_id != expected {
            return Err(WireError::IdMismatch {
                claimed: report.agent_id,
                expected,
            });
        }
        Ok(report)
    }
}

/// Splits `samples` into signed parts whose sealed packets stay under the path MTU.
pub fn latency_parts(
    samples: &[LatencySample],
    identity: &AgentIdentity,
    region: &str,
    version: u64,
    full: bool,
) -> Result<Vec<SignedLatency>, SignError> {
    /// Bytes of samples per part: with the header, the signature (≤ 72), the message
    /// framing and the seal (≈ 50), a part stays well under 1,200 bytes.
    const SAMPLE_BUDGET: usize = 900;
    let mut chunks: Vec<Vec<LatencySample>> = vec![Vec::new()];
    let mut used = 0;
    for sample in samples {
        let size = encode(sample).len();
        if used + size > SAMPLE_BUDGET && !chunks.last().is_none_or(Vec::is_empty) {
            chunks.push(Vec::new());
            used = 0;
        }
        used += size;
        if let Some(last) = chunks.last_mut() {
            last.push(*sample);
        }
    }
    // At 900 bytes a part, u16::MAX parts would be 59 MB of samples: far past any
    // configured `max_subnets`; the rest is dropped rather than numbered wrongly.
    let parts = u16::try_from(chunks.len()).unwrap_or(u16::MAX);
    chunks
        .into_iter()
        .take(usize::from(parts))
        .enumerate()
        .map(|(i, samples)| {
            SignedLatency::sign(
                &LatencyReport {
                    agent_id: identity.agent_id().to_owned(),
                    region: region.to_owned(),
                    version,
                    full,
                    part: u16::try_from(i).expect("at most u16::MAX parts are taken"),
                    parts,
                    samples,
                },
                identity,
            )
        })
        .collect()
}

/// One backend the agent speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendReport {
    /// Service name.
    pub service: String,
    /// Address clients use.
    pub address: IpAddr,
    /// Port.
    pub port: u16,
    /// Configured weight.
    pub weight: u32,
    /// CPU-derived weight percentage (1..=100).
    pub weight_pct: u8,
    /// Ready, drain or maint.
    pub admin: Admin,
    /// Up, down or unchecked.
    pub health: Health,
}

/// An agent's whole status at one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// `{region}-{12 hex}`.
    pub agent_id: String,
    /// The agent's region.
    pub region: String,
    /// Strictly increasing per agent, also across restarts ([`VersionClock`]).
    pub version: u64,
    /// Every backend.
    pub backends: Vec<BackendReport>,
    /// The agent is leaving the cluster (SIGTERM): drop its backends now.
    pub leaving: bool,
}

/// A report with what proves who sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReport {
    /// postcard encoding of the `StatusReport`, exactly as signed.
    pub report: Vec<u8>,
    /// The agent's certificate (DER); overwatch pins its fingerprint.
    pub certificate: Vec<u8>,
    /// HMAC-SHA256 keyed by the agent's service token over `report`: proves the agent
    /// holds the token of its services without sending it.
    pub token_proof: Vec<u8>,
    /// ECDSA P-256 over the domain tag and `report`.
    pub signature: Vec<u8>,
}

/// Separates report signatures from latency signatures.
const REPORT_DOMAIN: &[u8] = b"opengslb-report-v2\0";

/// Why a message is not accepted as it stands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not a message of this format.
    #[error("undecodable message: {0}")]
    Decode(String),
    /// The signature does not verify against the enclosed certificate.
    #[error("bad signature")]
    BadSignature,
    /// The report's agent id is not the one its certificate implies.
    #[error("agent id {claimed} does not match its certificate ({expected})")]
    IdMismatch {
        /// What the report says.
        claimed: String,
        /// What the certificate implies.
        expected: String,
    },
    /// A version 1 message: the sender predates token proofs and must be upgraded.
    #[error(
        "wire version 1 (service token sent in clear) is no longer accepted; upgrade the sender"
    )]
    Retired,
}

impl WireError {
    /// The metrics label for a report rejected for this reason.
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::Decode(_) => "decode",
            WireError::BadSignature => "bad_signature",
            WireError::IdMismatch { .. } => "id_mismatch",
            WireError::Retired => "retired_version",
        }
    }
}

impl Message {
    /// Encodes for the wire.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes bytes that opened under the cluster key; a retired version is an error.
    pub fn decode(bytes: &[u8]) -> Result<MessageV2, WireError> {
        match postcard::from_bytes(bytes).map_err(|e| WireError::Decode(e.to_string()))? {
            Message::V1(Retired) => Err(WireError::Retired),
            Message::V2(message) => Ok(message),
        }
    }
}

impl SignedReport {
    /// Signs `report` with the agent's identity.
    pub fn sign(
        report: &StatusReport,
        identity: &AgentIdentity,
        token: &str,
    ) -> Result<SignedReport, SignError> {
        let bytes = encode(report);
        let signature = identity.sign(&signed_bytes(&bytes))?;
        Ok(SignedReport {
            token_proof: token::prove(token, token::REPORT, &[&bytes]),
            report: bytes,
            certificate: identity.certificate().to_vec(),
            signature,
        })
    }

    /// Whether the agent holds `token` (its proof over the report verifies with it).
    pub fn proves(&self, token: &str) -> bool {
        token::check(token, token::REPORT, &[&self.report], &self.token_proof)
    }

    /// Verifies the signature and the id-to-certificate binding, then decodes the report.
    /// Whether this agent may speak (token, pin) is overwatch's decision.
    pub fn open(&self) -> Result<StatusReport, WireError> {
        ReceivedReport::decode(self.clone())?
            .verify()
            .map(|verified| verified.report)
    }
}

/// A signed report as it arrived: decoded once, not yet verified. What it claims is good
/// for a relay key and for logs; only [`ReceivedReport::verify`] makes it a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedReport {
    signed: SignedReport,
    claimed: StatusReport,
}

impl ReceivedReport {
    /// Decodes the report inside `signed`.
    pub fn decode(signed: SignedReport) -> Result<ReceivedReport, WireError> {
        let claimed =
            postcard::from_bytes(&signed.report).map_err(|e| WireError::Decode(e.to_string()))?;
        Ok(ReceivedReport { signed, claimed })
    }

    /// What the report says, unverified.
    pub fn claimed(&self) -> &StatusReport {
        &self.claimed
    }

    /// The signed form, as it arrived.
    pub fn signed(&self) -> &SignedReport {
        &self.signed
    }

    /// Checks the signature over the bytes as received and that the agent id is the one
    /// its certificate implies; then the decoded report is the agent's word.
    pub fn verify(self) -> Result<VerifiedReport, WireError> {
        let signed = &self.signed;
        if !identity::verify(
            &signed.certificate,
            &signed_bytes(&signed.report),
            &signed.signature,
        ) {
            return Err(WireError::BadSignature);
        }
        let expected = identity::agent_id(&self.claimed.region, &signed.certificate);
        if self.claimed.agent_id != expected {
            return Err(WireError::IdMismatch {
                claimed: self.claimed.agent_id,
                expected,
            });
        }
        Ok(VerifiedReport {
            fingerprint: identity::fingerprint(&signed.certificate),
            report: self.claimed,
            signed: self.signed,
        })
    }
}

/// A report whose signature verified against its certificate and whose agent id is the
/// one that certificate implies. Only [`ReceivedReport::verify`] makes one, so code that
/// takes a `VerifiedReport` cannot be handed an unverified report. Whether the agent may
/// speak for its services (token, pin) is still overwatch's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedReport {
    report: StatusReport,
    signed: SignedReport,
    fingerprint: String,
}

impl VerifiedReport {
    /// SHA-256 of the certificate that signed it, hex.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The report.
    pub fn report(&self) -> &StatusReport {
        &self.report
    }

    /// The signed form (certificate, token proof) as it arrived.
    pub fn signed(&self) -> &SignedReport {
        &self.signed
    }

    /// The report and its signed form.
    pub fn into_parts(self) -> (StatusReport, SignedReport) {
        (self.report, self.signed)
    }
}

/// postcard into a `Vec` fails only for sequences of unknown length or a failing custom
/// `Serialize`; the wire types are derived structs, enums, `Vec`s and `String`s, so
/// encoding them cannot fail.
fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("postcard encodes the derived wire types into a Vec")
}

fn signed_bytes(report: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(REPORT_DOMAIN.len() + report.len());
    message.extend_from_slice(REPORT_DOMAIN);
    message.extend_from_slice(report);
    message
}

/// Issues report versions: microseconds since the epoch, bumped so each is larger than
/// the last. A restarted agent starts from its clock, so its first report is newer than
/// anything it sent before (as long as clocks do not run backwards by more than uptime).
#[derive(Debug, Default)]
pub struct VersionClock {
    last: u64,
}

impl VersionClock {
    /// The next version at `now_us`.
    pub fn next(&mut self, now_us: u64) -> u64 {
        self.last = now_us.max(self.last + 1);
        self.last
    }
}

/// Whether a report of version `incoming` replaces what is known (`known`): only a
/// strictly newer one does, so a delayed or re-gossiped older report never wins.
pub fn supersedes(incoming: u64, known: Option<u64>) -> bool {
    known.is_none_or(|k| incoming > k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(name: &str, region: &str) -> AgentIdentity {
        AgentIdentity::generate(region).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn report(agent: &AgentIdentity, version: u64) -> StatusReport {
        StatusReport {
            agent_id: agent.agent_id().to_owned(),
            region: "eu".into(),
            version,
            backends: vec![BackendReport {
                service: "app".into(),
                address: "10.0.0.1".parse().expect("ip"),
                port: 8080,
                weight: 100,
                weight_pct: 97,
                admin: Admin::Drain,
                health: Health::Down("http 503".into()),
            }],
            leaving: false,
        }
    }

    #[test]
    fn a_signed_report_round_trips_through_the_wire() {
        let agent = identity("roundtrip", "eu");
        let signed =
            SignedReport::sign(&report(&agent, 7), &agent, "token-app-0123456789").expect("sign");
        let bytes = Message::V2(MessageV2::Report(signed.clone())).encode();
        assert!(
            bytes.len() < 1200,
            "a one-backend report fits a packet: {} bytes",
            bytes.len()
        );
        let MessageV2::Report(back) = Message::decode(&bytes).expect("decode") else {
            panic!("not a report")
        };
        assert_eq!(back, signed);
        assert_eq!(back.open().expect("verifies"), report(&agent, 7));
    }

    #[test]
    fn the_token_is_proven_never_sent() {
        let agent = identity("proof", "eu");
        let token = "token-app-0123456789";
        let signed = SignedReport::sign(&report(&agent, 7), &agent, token).expect("sign");
        let bytes = Message::V2(MessageV2::Report(signed.clone())).encode();
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "the token is not in the message"
        );
        assert!(signed.proves(token));
        assert!(!signed.proves("token-app-012345678X"));
        let mut changed = signed.clone();
        changed.report = encode(&report(&agent, 8));
        assert!(
            !changed.proves(token),
            "a proof does not carry over to other bytes"
        );
    }

    #[test]
    fn a_version_1_message_is_refused_by_name() {
        // Variant 0 (V1), then whatever a version 1 report held.
        let old = [0u8, 0, 3, 1, 2, 3];
        assert_eq!(Message::decode(&old), Err(WireError::Retired));
        assert_eq!(WireError::Retired.reason(), "retired_version");
    }

    #[test]
    fn an_overwatch_proof_holds_for_its_nonce_token_and_member_only() {
        let token = "token-app-0123456789";
        let proof = Proof::make([7; 16], "app", token, b"member-a");
        assert!(proof.holds(&[7; 16], token, b"member-a"));
        assert!(
            !proof.holds(&[8; 16], token, b"member-a"),
            "another challenge"
        );
        assert!(!proof.holds(&[7; 16], "token-db-0123456789x", b"member-a"));
        assert!(
            !proof.holds(&[7; 16], token, b"member-b"),
            "relayed for another member"
        );
        let mut renamed = proof.clone();
        renamed.service = "db".into();
        assert!(!renamed.holds(&[7; 16], token, b"member-a"));
    }

    #[test]
    fn tampering_with_report_or_certificate_is_detected() {
        let agent = identity("tamper", "eu");
        let other = identity("tamper-other", "eu");
        let signed =
            SignedReport::sign(&report(&agent, 7), &agent, "token-app-0123456789").expect("sign");
        let mut changed = signed.clone();
        let last = changed.report.len() - 1;
        changed.report[last] ^= 1;
        assert_eq!(changed.open(), Err(WireError::BadSignature));
        let mut cert = signed.clone();
        cert.certificate = other.certificate().to_vec();
        assert_eq!(cert.open(), Err(WireError::BadSignature));
        // A valid signature by another agent over a report claiming this agent's id.
        let forged =
            SignedReport::sign(&report(&agent, 8), &other, "token-app-0123456789").expect("sign");
        assert!(matches!(forged.open(), Err(WireError::IdMismatch { .. })));
        assert!(matches!(
            Message::decode(b"\xff\xff\xff"),
            Err(WireError::Decode(_))
        ));
    }

    #[test]
    fn versions_only_move_forward() {
        let mut clock = VersionClock::default();
        let a = clock.next(1_000);
        let b = clock.next(1_000);
        let c = clock.next(999);
        assert!(a < b && b < c, "{a} {b} {c}");
        assert!(supersedes(5, None));
        assert!(supersedes(6, Some(5)));
        assert!(
            !supersedes(5, Some(5)),
            "the same version again changes nothing"
        );
        assert!(
            !supersedes(4, Some(5)),
            "an older report never replaces a newer one"
        );
    }

    #[test]
    fn latency_reports_split_under_the_mtu_and_verify_only_with_their_certificate() {
        use crate::seal::{ClusterKey, Envelope};
        let agent = identity("lat", "eu");
        let other = identity("lat-other", "eu");
        let samples: Vec<LatencySample> = (0..1000u32)
            .map(|i| LatencySample {
                subnet: if i % 2 == 0 {
                    Subnet::of(std::net::Ipv4Addr::from(i << 8).into(), 24, 48)
                } else {
                    Subnet::of(std::net::Ipv6Addr::from(u128::from(i) << 80).into(), 24, 48)
                },
                rtt_us: 20_000 + i,
                samples: 7,
            })
            .collect();
        let parts = latency_parts(&samples, &agent, "eu", 42, true).expect("sign");
        assert!(parts.len() > 1);
        let key = ClusterKey::from_base64(Some("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="))
            .expect("key");
        let envelope = Envelope::new(&key, std::time::Duration::from_secs(30));
        let mut back = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let wire = Message::V2(MessageV2::Latency(part.clone())).encode();
            let sealed = envelope.seal(&wire, 1);
            assert!(sealed.len() <= 1232, "part {i}: {} bytes", sealed.len());
            let report = part.open(agent.certificate()).expect("verifies");
            assert_eq!(
                (report.part as usize, report.parts as usize, report.version),
                (i, parts.len(), 42)
            );
            assert!(
                part.open(other.certificate()).is_err(),
                "another agent's certificate"
            );
            back.extend(report.samples);
        }
        assert_eq!(back, samples, "every sample once, in order");
        let mut tampered = parts[0].clone();
        tampered.report[5] ^= 1;
        assert!(tampered.open(agent.certificate()).is_err());
    }
}
