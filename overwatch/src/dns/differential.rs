//! Differential tests: the same queries through the UDP fast path and the hickory path.
//! Whatever the fast path answers must be byte for byte what the hickory path sends;
//! anything else it must decline. The standard queries must not be declined.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use proptest::prelude::*;
use tokio::sync::watch;

use super::cookie::CookieKeys;
use super::fast::{self, CookieTime, MAX_RESPONSE};
use super::test_support::{ecs, query, signed_snapshot, snapshot};
use super::{DnsSnapshot, Handler, answer_udp};

/// Every algorithm, several servers per family (rotation), a weight-0 standby, an empty
/// non-terminal, two zones, NS records, IPv6 without and with servers.
const CONFIG: &str = r#"
overwatch:
  validation: {enabled: false}
  geolocation:
    default_region: a
    custom_mappings: [{cidr: 10.0.0.0/8, region: b}, {cidr: "2001:db8:b::/48", region: b}]
dns:
  zones: [diff.test, second.test]
  nameservers: [ns1.diff.test, ns2.diff.test]
regions:
  - name: a
    servers: [{address: 192.0.2.1}, {address: 192.0.2.2}, {address: 192.0.2.3, weight: 5}, {address: "2001:db8::1"}, {address: "2001:db8::2"}]
  - name: b
    servers: [{address: 198.51.100.1, weight: 0}, {address: 198.51.100.2}]
  - name: c
    servers: [BIG]
domains:
  - {name: rr.diff.test, routing_algorithm: round-robin, regions: [a, b]}
  - {name: geo.diff.test, routing_algorithm: geolocation, regions: [a, b]}
  - {name: w.diff.test, routing_algorithm: weighted, regions: [a, b]}
  - {name: f.diff.test, routing_algorithm: failover, regions: [b, a]}
  - {name: l.diff.test, routing_algorithm: latency, regions: [a, b]}
  - {name: ll.diff.test, routing_algorithm: learned_latency, regions: [a, b]}
  - {name: deep.down.diff.test, routing_algorithm: round-robin, regions: [b]}
  - {name: one.diff.test, routing_algorithm: round-robin, regions: [a], max_records: 1}
  - {name: x.second.test, routing_algorithm: round-robin, regions: [a, b]}
  - {name: big.diff.test, routing_algorithm: round-robin, regions: [c], max_records: 32}
"#;

/// Region c: 32 IPv6 servers, so that big.diff.test's AAAA answer (928 bytes) fits our
/// payload but not 512 bytes.
fn config() -> String {
    let big: Vec<String> = (1..=32)
        .map(|i| format!("{{address: \"2001:db8:c::{i:x}\"}}"))
        .collect();
    CONFIG.replace("BIG", &big.join(", "))
}

const NAMES: [&str; 16] = [
    "rr.diff.test",
    "geo.diff.test",
    "w.diff.test",
    "f.diff.test",
    "l.diff.test",
    "ll.diff.test",
    "deep.down.diff.test",
    "down.diff.test",
    "one.diff.test",
    "x.second.test",
    "second.test",
    "diff.test",
    "nx.diff.test",
    "a.b.c.nx.second.test",
    "elsewhere.test",
    "diff.test.example",
];

static SNAPSHOT: LazyLock<Arc<DnsSnapshot>> = LazyLock::new(|| snapshot("diff.yaml", &config()));
/// The same zones signed (DNSSEC), as a node with keys answers DO=1 queries.
static SIGNED: LazyLock<Arc<DnsSnapshot>> =
    LazyLock::new(|| signed_snapshot("diff.yaml", &config(), 13, NOW));

/// The time both paths make and judge cookies at.
const NOW: u32 = 1_700_000_000;

fn keys() -> CookieKeys {
    CookieKeys::derived_from("differential-cookie-secret")
}

static COOKIE_TIME: LazyLock<CookieTime> = LazyLock::new(|| CookieTime {
    secrets: keys().at(NOW),
    now: NOW,
});

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    /// One handler per test thread: its entropy counter is set before each query, so tests
    /// running in parallel must not share it.
    static HANDLER: Handler = {
        let handler = Handler::new(watch::channel(Arc::clone(&SNAPSHOT)).1).with_cookies(Some(keys()));
        handler.set_now(NOW);
        handler
    };
    static SIGNED_HANDLER: Handler = {
        let handler = Handler::new(watch::channel(Arc::clone(&SIGNED)).1).with_cookies(Some(keys()));
        handler.set_now(NOW);
        handler
    };
}

/// The fast path's answer (`None`: declined) and the hickory path's, with the same entropy.
fn both(packet: &[u8], src: SocketAddr, entropy: u64) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    both_on(&SNAPSHOT, &HANDLER, packet, src, entropy)
}

/// [`both`] on the signed snapshot.
fn both_signed(packet: &[u8], src: SocketAddr, entropy: u64) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    both_on(&SIGNED, &SIGNED_HANDLER, packet, src, entropy)
}

fn both_on(
    snapshot: &DnsSnapshot,
    handler: &'static std::thread::LocalKey<Handler>,
    packet: &[u8],
    src: SocketAddr,
    entropy: u64,
) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let mut out = [0u8; MAX_RESPONSE];
    let fast = fast::answer(snapshot, packet, src, entropy, Some(&COOKIE_TIME), &mut out)
        .map(|answered| out[..answered.len].to_vec());
    let reference = handler.with(|handler| {
        handler.set_next_entropy(entropy);
        RUNTIME.with(|rt| rt.block_on(answer_udp(handler, packet, src)))
    });
    (fast, reference)
}

/// Fails unless the fast path declined or answered exactly as the hickory path did.
fn check(packet: &[u8], src: SocketAddr, entropy: u64) -> Result<bool, TestCaseError> {
    check_on(both(packet, src, entropy), packet, src, entropy)
}

fn check_on(
    answers: (Option<Vec<u8>>, Option<Vec<u8>>),
    packet: &[u8],
    src: SocketAddr,
    entropy: u64,
) -> Result<bool, TestCaseError> {
    match answers {
        (None, _) => Ok(false),
        (Some(fast), reference) => {
            prop_assert_eq!(
                Some(&fast),
                reference.as_ref(),
                "query {:02x?} from {} entropy {}",
                packet,
                src,
                entropy
            );
            Ok(true)
        }
    }
}

/// A client cookie (RFC 7873), as BIND and Unbound send with every query.
const COOKIE: [u8; 12] = [0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];

fn src(v: u8) -> SocketAddr {
    match v % 4 {
        0 => "127.0.0.1:5300".parse(),
        1 => "10.9.8.7:40000".parse(),
        2 => "[2001:db8:b::5]:53".parse(),
        _ => "[::1]:9".parse(),
    }
    .expect("addr")
}

/// Mixed case, as resolvers using 0x20 randomisation send names.
fn mixed_case(name: &str, mask: u64) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

#[test]
fn standard_queries_take_the_fast_path_and_match() {
    let mut answered = 0;
    for (n, name) in NAMES.iter().enumerate() {
        for qtype in [1u16, 28, 6, 2] {
            for edns in 0..5 {
                let options = match edns {
                    0 => None,
                    1 | 4 => Some(COOKIE.to_vec()),
                    2 => Some([&ecs(1, 24, &[10, 1, 2], 0)[..], &COOKIE].concat()),
                    _ => Some(ecs(2, 56, &[0x20, 0x01, 0x0d, 0xb8, 0, 0x0b, 0], 0)),
                };
                for entropy in 0..4 {
                    let mut packet = query(
                        0x4242,
                        0x0120,
                        &mixed_case(name, 0x5a5a_5a5a ^ entropy),
                        qtype,
                        1,
                        options.as_deref(),
                    );
                    if edns == 4 {
                        // The DO bit: the OPT's flags follow root, type, class, rcode, version.
                        let opt = packet.len() - COOKIE.len() - 11;
                        packet[opt + 7] |= 0x80;
                        let (fast, _) = both(&packet, src(1), entropy);
                        if let Some(response) = fast {
                            // OPT: root, type 41, payload 1232, rcode 0, version 0, DO.
                            assert!(
                                response
                                    .windows(8)
                                    .any(|w| w == [0, 0, 41, 0x04, 0xD0, 0, 0, 0x80]),
                                "{name} type {qtype}: DO copied into the response (RFC 3225 §3)"
                            );
                        }
                    }
                    let source = src(n as u8 + entropy as u8);
                    let took = check(&packet, source, entropy).map_err(|e| e.to_string());
                    let took = took.expect("fast path and hickory path disagree");
                    let in_zone = !name.ends_with("elsewhere.test") && !name.ends_with(".example");
                    assert_eq!(
                        took, in_zone,
                        "{name} type {qtype} edns {edns}: the fast path answers exactly the in-zone names"
                    );
                    answered += usize::from(took);
                }
            }
        }
    }
    assert!(answered > 700, "{answered} answered by the fast path");
}

/// Record types per section (answer, authority) of a response.
fn types(response: &[u8]) -> (Vec<u16>, Vec<u16>) {
    let message = hickory_proto::op::Message::from_vec(response).expect("a response hickory reads");
    let of = |records: &[hickory_proto::rr::Record]| -> Vec<u16> {
        records.iter().map(|r| u16::from(r.record_type())).collect()
    };
    (of(&message.answers), of(&message.authorities))
}

#[test]
fn signed_queries_take_the_fast_path_and_match() {
    const RRSIG: u16 = 46;
    const NSEC: u16 = 47;
    let (mut answered, mut denied) = (0, 0);
    for (n, name) in NAMES.iter().enumerate() {
        for qtype in [1u16, 28, 6, 2] {
            for edns in 0..3 {
                let options = match edns {
                    0 => Vec::new(),
                    1 => COOKIE.to_vec(),
                    _ => [&ecs(1, 24, &[10, 1, 2], 0)[..], &COOKIE].concat(),
                };
                // Every weighted draw a DO=1 query can get, and then some.
                for entropy in 0..(super::dnssec::SIGNED_DRAWS + 3) {
                    let mut packet = query(
                        0x4243,
                        0x0100,
                        &mixed_case(name, 0x3c3c_3c3c ^ entropy),
                        qtype,
                        1,
                        Some(&options),
                    );
                    let opt = packet.len() - options.len() - 11;
                    packet[opt + 7] |= 0x80;
                    let source = src(n as u8 + entropy as u8);
                    let (fast, reference) = both_signed(&packet, source, entropy);
                    let reference = reference.expect("the hickory path answers");
                    let [_, answers, _, _] = counts(&reference);
                    let rcode = reference[3] & 0x0F;
                    let (answer_types, authority_types) = types(&reference);
                    if rcode == 0 && answers > 0 {
                        // Each RRset is signed, by a signature made ahead: the fast path
                        // answers it (it declines a set that was not signed ahead).
                        assert_eq!(
                            answer_types.iter().filter(|&&t| t == RRSIG).count(),
                            1,
                            "{name} type {qtype} entropy {entropy}: {answer_types:?}"
                        );
                        let fast = fast.unwrap_or_else(|| {
                            panic!("{name} type {qtype} entropy {entropy}: declined")
                        });
                        assert_eq!(fast, reference, "{name} type {qtype} entropy {entropy}");
                        answered += 1;
                    } else if (rcode == 0 || rcode == 3)
                        && !name.ends_with("example")
                        && *name != "elsewhere.test"
                    {
                        // Denial in our zones: proven with NSEC, signed.
                        assert!(
                            authority_types.contains(&NSEC) && authority_types.contains(&RRSIG),
                            "{name} type {qtype}: {authority_types:?}"
                        );
                        // Rendered ahead: the fast path answers it.
                        let fast = fast.unwrap_or_else(|| {
                            panic!("{name} type {qtype}: signed denial declined")
                        });
                        assert_eq!(fast, reference, "{name} type {qtype}");
                        denied += 1;
                    } else if let Some(fast) = fast {
                        assert_eq!(fast, reference, "{name} type {qtype}");
                    }
                    // Without DO, the signed snapshot answers exactly as the unsigned one.
                    packet[opt + 7] &= !0x80;
                    let (_, plain) = both_signed(&packet, source, entropy);
                    let (_, unsigned) = both(&packet, source, entropy);
                    assert_eq!(plain, unsigned, "{name} type {qtype}: DO=0 unchanged");
                }
            }
        }
    }
    assert!(
        answered > 1_000,
        "signed answers on the fast path: {answered}"
    );
    assert!(denied > 500, "signed denials on the fast path: {denied}");
}

#[test]
fn unusual_queries_are_declined() {
    let plain = query(1, 0x0100, "rr.diff.test", 1, 1, None);
    let mut cases = vec![
        query(1, 0x0100, "rr.diff.test", 16, 1, None),  // TXT
        query(1, 0x0100, "rr.diff.test", 255, 1, None), // ANY
        query(1, 0x0100, "rr.diff.test", 1, 3, None),   // class CH
        query(1, 0x2800, "rr.diff.test", 1, 1, None),   // opcode UPDATE
        query(1, 0x8100, "rr.diff.test", 1, 1, None),   // a response
        query(1, 0x0100, "rr.diff.test", 1, 1, Some(&[0, 3, 0, 0])), // NSID
        query(
            1,
            0x0100,
            "rr.diff.test",
            1,
            1,
            Some(&ecs(1, 33, &[1, 2, 3, 4, 5], 0)),
        ),
        plain[..plain.len() - 1].to_vec(),
        [plain.as_slice(), &[0]].concat(),
    ];
    let mut two_questions = plain.clone();
    two_questions[5] = 2;
    cases.push(two_questions);
    let mut version_1 = query(1, 0x0100, "rr.diff.test", 1, 1, Some(&[]));
    let at = version_1.len() - 6;
    version_1[at] = 1;
    cases.push(version_1);
    for packet in cases {
        let (fast, reference) = both(&packet, src(0), 7);
        assert!(
            fast.is_none(),
            "declined: {packet:02x?} (hickory says {reference:02x?})"
        );
    }
}

/// `packet` (a query with an OPT) advertising `payload`.
fn with_payload(mut packet: Vec<u8>, options: usize, payload: u16) -> Vec<u8> {
    let opt = packet.len() - options - 11;
    packet[opt + 3..opt + 5].copy_from_slice(&payload.to_be_bytes());
    packet
}

fn counts(response: &[u8]) -> [u16; 4] {
    [4, 6, 8, 10].map(|i| u16::from_be_bytes([response[i], response[i + 1]]))
}

/// RFC 6891 §6.2.3 and §6.2.5, RFC 2181 §9: an answer larger than the requestor takes is
/// cut to header, question and OPT with TC set — never a partial record — and sizes below
/// 512 count as 512.
#[test]
fn answers_fit_the_requestors_payload_or_are_truncated_whole() {
    let name = "big.diff.test";
    let question_end = 12 + name.len() + 2 + 4;
    for (payload, fits) in [
        (None, false),
        (Some(0), false),
        (Some(511), false),
        (Some(512), false),
        (Some(1000), true),
        (Some(1232), true),
        (Some(4096), true),
    ] {
        let packet = match payload {
            None => query(9, 0x0100, name, 28, 1, None),
            Some(p) => with_payload(query(9, 0x0100, name, 28, 1, Some(&[])), 0, p),
        };
        let (fast, reference) = both(&packet, src(0), 3);
        let reference = reference.expect("answered");
        let opt = usize::from(payload.is_some()) * 11;
        if fits {
            assert_eq!(fast.as_ref(), Some(&reference), "payload {payload:?}");
            assert_eq!(counts(&reference), [1, 32, 0, u16::from(payload.is_some())]);
            assert_eq!(reference[2] & 0x02, 0, "payload {payload:?}: not truncated");
        } else {
            assert!(
                fast.is_none(),
                "payload {payload:?}: the fast path declines what does not fit"
            );
            assert_eq!(reference[2] & 0x02, 0x02, "payload {payload:?}: TC");
            assert_eq!(counts(&reference), [1, 0, 0, u16::from(payload.is_some())]);
            assert_eq!(
                reference.len(),
                question_end + opt,
                "payload {payload:?}: header, question and OPT only"
            );
        }
    }
}

/// Signed, the 32-server answer carries its RRSIG: it still fits our payload (1,232
/// bytes), and where it does not fit the requestor's it is truncated whole (TC, no
/// records: the resolver asks again over TCP), never sent without its signature.
#[test]
fn signed_answers_fit_the_requestors_payload_or_are_truncated_whole() {
    let name = "big.diff.test";
    for (payload, fits) in [(512, false), (1000, false), (1232, true), (4096, true)] {
        let mut packet = with_payload(query(9, 0x0100, name, 28, 1, Some(&[])), 0, payload);
        let opt = packet.len() - 11;
        packet[opt + 7] |= 0x80;
        let (fast, reference) = both_signed(&packet, src(0), 3);
        let reference = reference.expect("answered");
        if fits {
            assert_eq!(fast.as_ref(), Some(&reference), "payload {payload}");
            assert_eq!(counts(&reference), [1, 33, 0, 1], "32 AAAA and their RRSIG");
            assert!(
                reference.len() > 1000 && reference.len() <= 1232,
                "{}",
                reference.len()
            );
            assert_eq!(reference[2] & 0x02, 0, "payload {payload}: not truncated");
        } else {
            assert!(
                fast.is_none(),
                "payload {payload}: declined, it does not fit"
            );
            assert_eq!(reference[2] & 0x02, 0x02, "payload {payload}: TC");
            assert_eq!(counts(&reference), [1, 0, 0, 1], "payload {payload}");
        }
    }
}

/// RFC 8482 for ANY, RFC 5936 for transfers, RFC 1035 §4.1.4 for a pointer in the
/// question, RFC 6891 §7 for FORMERR with an OPT.
#[test]
fn any_transfers_bad_questions_and_formerr_follow_the_rfcs() {
    let answer = |packet: &[u8]| both(packet, src(0), 0).1.expect("answered");
    // ANY at a domain: its addresses (one RRset); at the apex: the SOA.
    let r = answer(&query(1, 0x0100, "rr.diff.test", 255, 1, None));
    assert_eq!(r[3] & 0x0F, 0);
    assert_eq!(counts(&r)[1], 5, "the A RRset");
    let r = answer(&query(1, 0x0100, "diff.test", 255, 1, None));
    assert_eq!(counts(&r), [1, 1, 0, 0], "the SOA");
    // A domain with IPv6 servers only: its AAAA RRset.
    let r = answer(&query(1, 0x0100, "big.diff.test", 255, 1, Some(&[])));
    assert_eq!(counts(&r)[1], 32);
    // AXFR and IXFR of a zone we serve: refused.
    for qtype in [252u16, 251] {
        let r = answer(&query(1, 0x0100, "diff.test", qtype, 1, None));
        assert_eq!(r[3] & 0x0F, 5, "type {qtype}: REFUSED");
        assert_eq!(counts(&r)[1..], [0, 0, 0]);
    }
    // A compression pointer in the question (to the header): FORMERR, question not echoed.
    let mut pointer = query(1, 0x0100, "x", 1, 1, None);
    pointer.splice(12..15, [0xC0, 0x04]);
    let r = answer(&pointer);
    assert_eq!(r[3] & 0x0F, 1, "FORMERR: {r:02x?}");
    assert_eq!(counts(&r)[0], 0, "no question echoed");
    // An ECS option hickory cannot parse (wrong address length): FORMERR with an OPT,
    // the DO bit copied.
    let bad = ecs(1, 33, &[1, 2, 3, 4, 5], 0);
    let mut packet = query(1, 0x0100, "rr.diff.test", 1, 1, Some(&bad));
    let opt = packet.len() - bad.len() - 11;
    packet[opt + 7] |= 0x80;
    let r = answer(&packet);
    assert_eq!(r[3] & 0x0F, 1, "FORMERR: {r:02x?}");
    assert_eq!(counts(&r)[3], 1, "an OPT: {r:02x?}");
    assert_eq!(r[12..], super::wire::opt_record(1232, true));
}

/// RFC 7873 / RFC 9018 on both paths: a client cookie gets a server cookie; that one,
/// sent back, is valid (the fast path answers it, the same bytes as the hickory path); a
/// server cookie we did not make gets BADCOOKIE with a fresh one; a malformed one FORMERR.
#[test]
fn cookies_round_trip_on_both_paths() {
    let source = src(1);
    let client = [1u8, 2, 3, 4, 5, 6, 7, 8];
    let option = |data: &[u8]| [&[0u8, 10, 0, data.len() as u8][..], data].concat();
    let (fast, reference) = both(
        &query(5, 0x0100, "rr.diff.test", 1, 1, Some(&option(&client))),
        source,
        1,
    );
    let first = fast.expect("the fast path answers a client cookie");
    assert_eq!(Some(&first), reference.as_ref());
    // The response's cookie: the last 24 bytes (it follows every other option).
    let returned = first[first.len() - 24..].to_vec();
    assert_eq!(returned[..8], client);
    assert_eq!(returned[8], 1, "an RFC 9018 version 1 server cookie");
    let (fast, reference) = both(
        &query(6, 0x0100, "rr.diff.test", 1, 1, Some(&option(&returned))),
        source,
        1,
    );
    let again = fast.expect("the fast path answers a valid server cookie");
    assert_eq!(Some(&again), reference.as_ref());
    assert_eq!(again[3] & 0x0F, 0);
    assert_eq!(counts(&again)[1], 5, "answered");
    // From another address, the same cookie is not valid: BADCOOKIE (23: 1 in the OPT's
    // extended rcode, 7 in the header) with a fresh cookie, no answer.
    let (fast, reference) = both(
        &query(7, 0x0100, "rr.diff.test", 1, 1, Some(&option(&returned))),
        src(0),
        1,
    );
    assert!(
        fast.is_none(),
        "the fast path leaves BADCOOKIE to the hickory path"
    );
    let bad = reference.expect("answered");
    assert_eq!(
        (bad[3] & 0x0F, counts(&bad)),
        (7, [1, 0, 0, 1]),
        "{bad:02x?}"
    );
    let opt = 12 + "rr.diff.test".len() + 2 + 4;
    assert_eq!(bad[opt + 5], 1, "extended rcode high bits");
    assert_eq!(
        bad[bad.len() - 24..bad.len() - 16],
        client,
        "a fresh cookie for the client"
    );
    // Malformed (7 bytes): FORMERR.
    let (fast, reference) = both(
        &query(8, 0x0100, "rr.diff.test", 1, 1, Some(&option(&client[..7]))),
        source,
        1,
    );
    assert!(fast.is_none());
    assert_eq!(reference.expect("answered")[3] & 0x0F, 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn fast_path_matches_or_declines(
        id in any::<u16>(),
        flags in prop_oneof![Just(0x0100u16), Just(0x0120), Just(0x0110), Just(0), any::<u16>()],
        name in 0..NAMES.len(),
        extra_label in proptest::option::of("[a-zA-Z0-9-]{1,12}"),
        case_mask in any::<u64>(),
        qtype in prop_oneof![Just(1u16), Just(28), Just(6), Just(2), any::<u16>()],
        qclass in prop_oneof![Just(1u16), Just(1), Just(1), any::<u16>()],
        payload in prop_oneof![Just(4096u16), Just(512), Just(0), Just(700), any::<u16>()],
        edns in prop_oneof![
            Just(None),
            Just(Some(Vec::new())),
            (0u8..=32, proptest::collection::vec(any::<u8>(), 4), any::<u8>())
                .prop_map(|(source, addr, scope)| Some(ecs(1, source, &addr, scope))),
            (0u8..=128, proptest::collection::vec(any::<u8>(), 16), any::<u8>())
                .prop_map(|(source, addr, scope)| Some(ecs(2, source, &addr, scope))),
            proptest::collection::vec(any::<u8>(), 0..24).prop_map(Some),
            // Well-formed options the fast path reads past (cookie, padding, any code),
            // before or after an ECS option.
            (prop_oneof![Just(10u16), Just(12), Just(3), any::<u16>()], proptest::collection::vec(any::<u8>(), 0..40), any::<bool>(), 0u8..=32)
                .prop_map(|(code, data, with_ecs, source)| {
                    let mut o = code.to_be_bytes().to_vec();
                    o.extend_from_slice(&(data.len() as u16).to_be_bytes());
                    o.extend_from_slice(&data);
                    if with_ecs {
                        o.extend_from_slice(&ecs(1, source, &[10, 200, 3, 4], 0));
                    }
                    Some(o)
                }),
        ],
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        cut in proptest::option::weighted(0.1, any::<prop::sample::Index>()),
        source in any::<u8>(),
        entropy in any::<u64>(),
        dnssec_ok in any::<bool>(),
        signed in any::<bool>(),
    ) {
        let base = NAMES[name];
        let name = match extra_label {
            Some(label) => format!("{label}.{base}"),
            None => base.to_string(),
        };
        let mut packet = query(id, flags, &mixed_case(&name, case_mask), qtype, qclass, edns.as_deref());
        if let Some(options) = &edns {
            packet = with_payload(packet, options.len(), payload);
            if dnssec_ok {
                let opt = packet.len() - options.len() - 11;
                packet[opt + 7] |= 0x80;
            }
        }
        for (at, byte) in flips {
            let i = at.index(packet.len());
            packet[i] ^= byte;
        }
        if let Some(cut) = cut {
            packet.truncate(cut.index(packet.len() + 1));
        }
        if signed {
            check_on(both_signed(&packet, src(source), entropy), &packet, src(source), entropy)?;
        } else {
            check(&packet, src(source), entropy)?;
        }
    }

    #[test]
    fn random_bytes_match_or_decline(packet in proptest::collection::vec(any::<u8>(), 0..300), entropy in any::<u64>()) {
        check(&packet, src(entropy as u8), entropy)?;
    }
}
