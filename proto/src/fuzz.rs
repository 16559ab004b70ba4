//! Every decoder of bytes a gossip peer controls, fed random and mutated input: none may
//! panic, and nothing that is not a valid signed report may verify. (A compromised host
//! holds the cluster key, so whatever survives the seal is attacker-chosen.)

use proptest::prelude::*;

use crate::identity::AgentIdentity;
use crate::member::packet::Kind;
use crate::seal::{ClusterKey, Envelope};
use crate::wire::{Message, MessageV1, ReceivedReport, SignedLatency, SignedReport, StatusReport};

fn valid_report_bytes() -> Vec<u8> {
    let me = AgentIdentity::generate("eu").expect("identity");
    let report = StatusReport {
        agent_id: me.agent_id().into(),
        region: "eu".into(),
        version: 7,
        backends: Vec::new(),
        leaving: false,
    };
    let signed = SignedReport::sign(&report, &me, "token-0123456789abcdef").expect("sign");
    Message::V1(MessageV1::Report(signed)).encode()
}

/// Runs bytes through every decode path a received packet can take.
fn decode_everything(bytes: &[u8]) {
    let key = ClusterKey::from_bytes([9; 32]);
    let mut envelope = Envelope::new(&key, std::time::Duration::from_secs(60));
    let _ = envelope.open(bytes, 1_000);
    let _ = Kind::split(bytes);
    if let Ok(Message::V1(message)) = Message::decode(bytes) {
        match message {
            MessageV1::Report(signed) => {
                if let Ok(received) = ReceivedReport::decode(signed) {
                    let _ = received.verify();
                }
            }
            MessageV1::Latency(part) => {
                let _ = part.claimed_agent();
                let _ = part.open(&[0u8; 64]);
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
            if let Ok(Message::V1(MessageV1::Report(signed))) = Message::decode(&bytes) {
                if let Ok(received) = ReceivedReport::decode(signed) {
                    // Flips that only touch encoding slack could leave the signed bytes,
                    // certificate and signature intact; anything else must not verify.
                    if let Ok(verified) = received.verify() {
                        let again = Message::V1(MessageV1::Report(verified.signed().clone())).encode();
                        prop_assert_eq!(again, original, "a changed report verified");
                    }
                }
            }
        }
    }
}
