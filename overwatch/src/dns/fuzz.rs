//! Property-based fuzzing of the query path: any bytes, and valid queries with bytes
//! flipped, go through the real handler. It must never panic, and every response it
//! produces must be a well-formed DNS message answering the same ID.

use std::net::SocketAddr;

use hickory_proto::op::Message;
use hickory_proto::serialize::binary::BinDecodable;
use proptest::prelude::*;
use tokio::sync::watch;

use super::{Handler, answer_udp};

const CONFIG: &str = r#"
overwatch:
  validation: {enabled: false}
  geolocation:
    default_region: a
    custom_mappings: [{cidr: 10.0.0.0/8, region: b}]
dns:
  zones: [fuzz.test]
regions:
  - name: a
    servers: [{address: 192.0.2.1}, {address: "2001:db8::1"}]
  - name: b
    servers: [{address: 192.0.2.2, weight: 0}]
domains:
  - {name: rr.fuzz.test, routing_algorithm: round-robin, regions: [a, b]}
  - {name: geo.fuzz.test, routing_algorithm: geolocation, regions: [a, b]}
  - {name: w.fuzz.test, routing_algorithm: weighted, regions: [a, b]}
  - {name: f.fuzz.test, routing_algorithm: failover, regions: [b, a]}
  - {name: l.fuzz.test, routing_algorithm: latency, regions: [a, b]}
"#;

/// A query for `name`/`qtype` with an OPT record carrying ECS 10.1.2.0/24.
fn seed(name: &str, qtype: u16) -> Vec<u8> {
    let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    for label in name.split('.') {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.extend_from_slice(&[0, (qtype >> 8) as u8, qtype as u8, 0, 1]);
    // OPT: root, type 41, payload 1232, rcode/flags 0, rdlen 11, ECS option (8) len 7.
    p.extend_from_slice(&[
        0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 11, 0, 8, 0, 7, 0, 1, 24, 0, 10, 1, 2,
    ]);
    p
}

/// Built once: cases then cost one parse and one answer each.
static HANDLER: std::sync::LazyLock<Handler> = std::sync::LazyLock::new(build_handler);

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
}

fn build_handler() -> Handler {
    let (_tx, rx) = watch::channel(super::test_support::snapshot("fuzz.yaml", CONFIG));
    Handler::new(rx)
}

fn answer(packet: &[u8]) -> Option<Vec<u8>> {
    let src: SocketAddr = "127.0.0.1:5300".parse().expect("addr");
    RUNTIME.with(|rt| rt.block_on(answer_udp(&HANDLER, packet, src)))
}

fn check(packet: &[u8]) -> Result<(), TestCaseError> {
    if let Some(response) = answer(packet) {
        let message = Message::from_bytes(&response)
            .map_err(|e| TestCaseError::fail(format!("unparseable response: {e}")))?;
        prop_assert_eq!(
            message.metadata.id,
            u16::from_be_bytes([packet[0], packet[1]])
        );
        prop_assert!(message.answers.len() <= 8, "max_records");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(packet in proptest::collection::vec(any::<u8>(), 0..600)) {
        check(&packet)?;
    }

    #[test]
    fn mutated_queries_never_panic(
        which in 0usize..7,
        qtype in prop_oneof![Just(1u16), Just(28), Just(6), Just(2), Just(255), any::<u16>()],
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let names = ["rr.fuzz.test", "geo.fuzz.test", "w.fuzz.test", "f.fuzz.test", "l.fuzz.test", "nx.fuzz.test", "fuzz.test"];
        let mut packet = seed(names[which], qtype);
        for (at, byte) in flips {
            let i = at.index(packet.len());
            packet[i] ^= byte;
        }
        if truncate {
            packet.truncate(cut.index(packet.len() + 1));
        }
        check(&packet)?;
    }
}

#[test]
fn seeds_are_answered() {
    let response = answer(&seed("geo.fuzz.test", 1)).expect("answer");
    let message = Message::from_bytes(&response).expect("parse");
    assert_eq!(message.answers.len(), 1, "{message:?}");
    assert_eq!(
        message.answers[0].data.to_string(),
        "192.0.2.2",
        "ECS 10.1.2.0/24 maps to region b"
    );
}
