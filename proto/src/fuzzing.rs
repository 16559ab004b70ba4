//! Every decoder of bytes a gossip peer controls, as entry points for fuzzers: none may
//! panic, and nothing that is not a valid signed report may verify or prove anything. (A
//! compromised host holds the cluster key, so whatever survives the seal is
//! attacker-chosen.)
//!
//! The same entry points run under proptest in every test run (below) and under libFuzzer
//! with `cargo fuzz` (`proto/fuzz`, README "Fuzzing"); the `fuzzing` feature exposes them.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::member::packet::Kind;
use crate::member::trust::{Proven, Trust};
use crate::member::{MemberId, Role};
use crate::seal::{ClusterKey, Envelope};
use crate::wire::{Message, MessageV2, ReceivedReport, SignedLatency, SignedReport};

const TOKEN: &str = "token-0123456789abcdef";

fn claimant() -> MemberId {
    MemberId {
        addr: "127.0.0.1:7946".parse().expect("addr"),
        role: Role::Overwatch,
        name: "ow".into(),
        bump: 1,
    }
}

fn tokens() -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_owned(), TOKEN.to_owned())])
}

/// A sealed packet as received: opened, then routed by its kind byte like the member
/// does (whatever opens is handed on to [`message`]).
pub fn packet(bytes: &[u8]) {
    let key = ClusterKey::from_bytes([9; 32]);
    let mut envelope = Envelope::with_keys(
        &[ClusterKey::from_bytes([8; 32]), key],
        Duration::from_secs(60),
    );
    if let Ok(payload) = envelope.open(bytes, 1_000) {
        if let Some((_, data)) = Kind::split(&payload) {
            message(data);
        }
    }
    // What a key holder can make the payload be: any bytes after a kind byte.
    if let Some((_, data)) = Kind::split(bytes) {
        message(data);
    }
}

/// A message as opened: decoded and each kind handled the way its receiver does.
pub fn message(bytes: &[u8]) {
    let Ok(message) = Message::decode(bytes) else {
        return;
    };
    match message {
        MessageV2::Report(signed) => report_checks(signed),
        MessageV2::Latency(part) => latency_checks(&part),
        MessageV2::Challenge(challenge) => {
            let overwatch = Trust::new(Role::Overwatch, tokens(), Proven::default());
            let _ = overwatch.answer(&challenge, &claimant());
        }
        MessageV2::Proof(proof) => {
            let mut agent = Trust::new(Role::Agent, tokens(), Proven::default());
            let _ = agent.challenge(&claimant());
            assert!(
                agent.accept(&proof).is_none(),
                "a proof from fuzzed bytes proved a member overwatch"
            );
        }
        // What an agent reads of a verdict: its cause's label and the detail, logged.
        MessageV2::Ack(ack) => {
            if let crate::wire::Verdict::Rejected { cause, detail } = &ack.verdict {
                let _ = format!("{} {detail} {}", cause.label(), ack.node);
            }
        }
    }
}

/// A signed report's own encoding (certificate, proof, signature), decoded and verified.
pub fn report(bytes: &[u8]) {
    if let Ok(signed) = postcard::from_bytes::<SignedReport>(bytes) {
        report_checks(signed);
    }
}

/// A latency part's signed bytes, as claimed and as verified against a certificate.
pub fn latency(bytes: &[u8]) {
    let part = SignedLatency {
        report: bytes.to_vec(),
        signature: bytes.iter().rev().copied().collect(),
    };
    latency_checks(&part);
}

fn report_checks(signed: SignedReport) {
    let _ = signed.proves(TOKEN);
    if let Ok(received) = ReceivedReport::decode(signed) {
        let _ = received.verify();
    }
}

fn latency_checks(part: &SignedLatency) {
    let _ = part.claimed_agent();
    let _ = part.open(&[0u8; 64]);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::identity::AgentIdentity;
    use crate::wire::StatusReport;

    fn valid_report_bytes() -> Vec<u8> {
        let me = AgentIdentity::generate("eu").expect("identity");
        let report = StatusReport {
            agent_id: me.agent_id().into(),
            region: "eu".into(),
            version: 7,
            backends: Vec::new(),
            leaving: false,
        };
        let signed = SignedReport::sign(&report, &me, TOKEN).expect("sign");
        Message::V2(MessageV2::Report(signed)).encode()
    }

    /// Runs bytes through every entry point.
    fn decode_everything(bytes: &[u8]) {
        packet(bytes);
        message(bytes);
        report(bytes);
        latency(bytes);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            decode_everything(&bytes);
        }

        #[test]
        fn a_mutated_signed_report_never_panics_and_never_verifies_changed(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..8),
        ) {
            let original = valid_report_bytes();
            let mut bytes = original.clone();
            for (at, xor) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= xor;
            }
            decode_everything(&bytes);
            if bytes != original {
                if let Ok(MessageV2::Report(signed)) = Message::decode(&bytes) {
                    if let Ok(received) = ReceivedReport::decode(signed) {
                        // The signature covers the report; the token proof is checked on its
                        // own. So what verifies is the original report from the original
                        // certificate, and only an intact proof still proves the token.
                        if let Ok(verified) = received.verify() {
                            let MessageV2::Report(first) = Message::decode(&original).expect("original") else {
                                unreachable!("the original is a report")
                            };
                            let signed = verified.signed();
                            prop_assert_eq!(&signed.report, &first.report, "a changed report verified");
                            prop_assert_eq!(&signed.certificate, &first.certificate);
                            prop_assert_eq!(
                                signed.proves(TOKEN),
                                signed.token_proof == first.token_proof,
                                "a changed proof still proved the token"
                            );
                        }
                    }
                }
            }
        }
    }
}
