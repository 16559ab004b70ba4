//! Every decoder of bytes a gossip peer controls, fed random and mutated input: none may
//! panic, and nothing that is not a valid signed report may verify. (A compromised host
//! holds the cluster key, so whatever survives the seal is attacker-chosen.)

use proptest::prelude::*;

use crate::identity::AgentIdentity;
use std::collections::BTreeMap;

use crate::member::packet::Kind;
use crate::member::trust::{Proven, Trust};
use crate::member::{MemberId, Role};
use crate::seal::{ClusterKey, Envelope};
use crate::wire::{Message, MessageV2, ReceivedReport, SignedLatency, SignedReport, StatusReport};

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

fn claimant() -> MemberId {
    MemberId {
        addr: "127.0.0.1:7946".parse().expect("addr"),
        role: Role::Overwatch,
        name: "ow".into(),
        bump: 1,
    }
}

const TOKEN: &str = "token-0123456789abcdef";

fn tokens() -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_owned(), TOKEN.to_owned())])
}

fn agent_trust() -> Trust {
    Trust::new(Role::Agent, tokens(), Proven::default())
}

fn overwatch_trust() -> Trust {
    Trust::new(Role::Overwatch, tokens(), Proven::default())
}

/// Random bytes never make a proof that holds (the nonce is fresh and secret-keyed).
fn prop_assert_never_proven(proven: Option<MemberId>) {
    assert!(proven.is_none(), "random bytes proved a member overwatch");
}

/// Runs bytes through every decode path a received packet can take.
fn decode_everything(bytes: &[u8]) {
    let key = ClusterKey::from_bytes([9; 32]);
    let mut envelope = Envelope::new(&key, std::time::Duration::from_secs(60));
    let _ = envelope.open(bytes, 1_000);
    let _ = Kind::split(bytes);
    if let Ok(message) = Message::decode(bytes) {
        match message {
            MessageV2::Report(signed) => {
                if let Ok(received) = ReceivedReport::decode(signed) {
                    let _ = received.verify();
                }
            }
            MessageV2::Latency(part) => {
                let _ = part.claimed_agent();
                let _ = part.open(&[0u8; 64]);
            }
            MessageV2::Challenge(challenge) => {
                let _ = overwatch_trust().answer(&challenge, &claimant());
            }
            MessageV2::Proof(proof) => {
                let mut agent = agent_trust();
                let _ = agent.challenge(&claimant());
                prop_assert_never_proven(agent.accept(&proof));
            }
        }
    }
    let part = SignedLatency {
        report: bytes.to_vec(),
        signature: bytes.to_vec(),
    };
    let _ = part.claimed_agent();
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
