//! DNSSEC propagation: from a health change to the first answer with the new set of
//! servers that validates (a program, not a test; issue 19).
//!
//! Run: `cargo build --release --bins && cargo bench -p opengslb-tests --bench dnssec`
//! Knob: `BENCH_TRIALS` (default 20).
//!
//! One overwatch node (release build) with a large signed configuration: 200 round-robin
//! domains of 32 servers (8 per answer: 32 answer sets each, 6,400 signed RRsets) and 20
//! failover domains over their own two regions. Each trial takes the serving failover
//! server out with an override (the API call returns once Raft has applied it) and polls
//! one failover domain over UDP with DO=1 until the answer names the next server *and*
//! its RRSIG verifies against the zone's DNSKEY (checked here with ring, independently of
//! overwatch's signer). Printed: time from the API call to that answer, the signatures
//! each change made, and the node's snapshot build time.

// A benchmark's output is its figures.
#![allow(clippy::print_stdout)]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
use opengslb_tests::TempDir;
use opengslb_tests::bench::{knob, percentile};
use opengslb_tests::overwatch::{Overwatch, http_request};

const TOKEN: &str = "dnssec-bench-token-0123456789";

fn config() -> String {
    let mut yaml = String::from(
        "overwatch:\n  validation: {enabled: false}\ndns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [big.test]\nregions:\n",
    );
    for r in 0..20 {
        yaml.push_str(&format!("  - name: r{r}\n    servers:\n"));
        for s in 1..=16 {
            yaml.push_str(&format!("      - {{address: 10.{r}.0.{s}}}\n"));
        }
    }
    for (region, net) in [("fa", 250), ("fb", 251)] {
        yaml.push_str(&format!("  - name: {region}\n    servers:\n"));
        for s in 1..=30 {
            yaml.push_str(&format!("      - {{address: 10.{net}.0.{s}}}\n"));
        }
    }
    yaml.push_str("domains:\n");
    for d in 0..200 {
        yaml.push_str(&format!(
            "  - {{name: d{d}.big.test, routing_algorithm: round-robin, regions: [r{}, r{}], ttl: 30}}\n",
            d % 20,
            (d + 1) % 20
        ));
    }
    for f in 0..20 {
        yaml.push_str(&format!(
            "  - {{name: f{f}.big.test, routing_algorithm: failover, regions: [fa, fb], ttl: 30}}\n"
        ));
    }
    yaml.push_str(&format!(
        "api:\n  address: 127.0.0.1:0\n  tokens: {{ops: {TOKEN}}}\nmetrics:\n  address: 127.0.0.1:0\n"
    ));
    yaml
}

/// A query with DO=1 (payload 1232).
fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 1]);
    for label in name.split('.') {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0]);
    p
}

fn ask(socket: &UdpSocket, name: &str, qtype: u16) -> Option<Message> {
    let mut buf = [0u8; 1500];
    let id = rand_id();
    socket.send(&query(id, name, qtype)).ok()?;
    let n = socket.recv(&mut buf).ok()?;
    Message::from_vec(&buf[..n])
        .ok()
        .filter(|m| m.metadata.id == id)
}

fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn raw(record: &Record) -> Vec<u8> {
    match &record.data {
        RData::Unknown { rdata, .. } => rdata.anything.clone(),
        other => {
            let mut bytes = Vec::new();
            let mut encoder = BinEncoder::new(&mut bytes);
            encoder.set_canonical_form(true);
            let _ = other.emit(&mut encoder);
            bytes
        }
    }
}

fn canonical_name(name: &Name) -> Vec<u8> {
    let mut bytes = Vec::new();
    {
        let mut encoder = BinEncoder::new(&mut bytes);
        let mut encoder = encoder.with_name_encoding(NameEncoding::UncompressedLowercase);
        let _ = name.emit(&mut encoder);
    }
    bytes
}

/// Whether `rrsig` (raw RDATA) over `records` verifies with one of `dnskeys` (raw RDATA,
/// algorithm 13), at `now`: RFC 4034 §3.1.8.1 and §6, done here from the RFC.
fn verifies(rrsig: &[u8], records: &[&Record], dnskeys: &[Vec<u8>], now: u32) -> bool {
    let expiration = u32::from_be_bytes([rrsig[8], rrsig[9], rrsig[10], rrsig[11]]);
    let inception = u32::from_be_bytes([rrsig[12], rrsig[13], rrsig[14], rrsig[15]]);
    if now < inception || now > expiration || rrsig[2] != 13 {
        return false;
    }
    let tag = u16::from_be_bytes([rrsig[16], rrsig[17]]);
    let signer_end = 18 + rrsig[18..].iter().position(|&b| b == 0).unwrap_or(0) + 1;
    let (head, signature) = rrsig.split_at(signer_end);
    let Some(first) = records.first() else {
        return false;
    };
    let owner = canonical_name(&first.name);
    let ttl = u32::from_be_bytes([rrsig[4], rrsig[5], rrsig[6], rrsig[7]]);
    let mut rdatas: Vec<Vec<u8>> = records.iter().map(|r| raw(r)).collect();
    rdatas.sort();
    let mut data = head.to_vec();
    for rdata in rdatas {
        data.extend_from_slice(&owner);
        data.extend_from_slice(&u16::from(first.record_type()).to_be_bytes());
        data.extend_from_slice(&1u16.to_be_bytes());
        data.extend_from_slice(&ttl.to_be_bytes());
        data.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        data.extend_from_slice(&rdata);
    }
    dnskeys.iter().any(|key| {
        let key_tag = {
            let mut acc: u32 = 0;
            for (i, b) in key.iter().enumerate() {
                acc += if i & 1 == 0 {
                    u32::from(*b) << 8
                } else {
                    u32::from(*b)
                };
            }
            ((acc + ((acc >> 16) & 0xFFFF)) & 0xFFFF) as u16
        };
        let mut public = vec![4u8];
        public.extend_from_slice(&key[4..]);
        key_tag == tag
            && ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_FIXED,
                &public,
            )
            .verify(&data, signature)
            .is_ok()
    })
}

/// The A addresses of a validated answer for `name`, or `None` (no answer, or an
/// RRSIG that does not verify).
fn validated_a(socket: &UdpSocket, name: &str, dnskeys: &[Vec<u8>]) -> Option<Vec<String>> {
    let message = ask(socket, name, 1)?;
    let a: Vec<&Record> = message
        .answers
        .iter()
        .filter(|r| r.record_type() == RecordType::A)
        .collect();
    let rrsig = message
        .answers
        .iter()
        .find(|r| r.record_type() == RecordType::RRSIG)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32);
    verifies(&raw(rrsig), &a, dnskeys, now).then(|| {
        a.iter()
            .filter_map(|r| match &r.data {
                RData::A(ip) => Some(ip.to_string()),
                _ => None,
            })
            .collect()
    })
}

fn main() {
    let trials = knob("BENCH_TRIALS", 20).min(29) as usize;
    let dir = TempDir::new("bench-dnssec");
    let started = Instant::now();
    let node = Overwatch::start(&dir, &config());
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.connect(node.dns).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    // Signing starts once the first keys are written and the first signed snapshot is built.
    let dnskeys: Vec<Vec<u8>> =
        opengslb_tests::poll_until(Duration::from_secs(60), "the node to sign", || {
            let message = ask(&socket, "big.test", 48)?;
            let keys: Vec<Vec<u8>> = message
                .answers
                .iter()
                .filter(|r| r.record_type() == RecordType::DNSKEY)
                .map(raw)
                .collect();
            (!keys.is_empty()).then_some(keys)
        });
    let first_signed = started.elapsed();
    assert!(
        validated_a(&socket, "f0.big.test", &dnskeys).is_some(),
        "a signed answer validates"
    );
    let api: SocketAddr = node.api.expect("api");
    let metric = |name: &str| node.metric(name);
    let mut waits = Vec::new();
    let mut made = Vec::new();
    let mut builds = Vec::new();
    for k in 1..=trials {
        let down = format!("10.250.0.{k}");
        let next = format!("10.250.0.{}", k + 1);
        let domain = format!("f{}.big.test", k % 20);
        let before = metric("opengslb_dnssec_signatures_made_total");
        let t0 = Instant::now();
        let (status, body) = http_request(
            api,
            "PUT",
            &format!("/api/v1/overrides/fa/{down}:80"),
            Some(TOKEN),
            Some(r#"{"healthy": false, "reason": "bench", "force": true}"#),
        );
        assert_eq!(status, 200, "{body}");
        let answered = opengslb_tests::poll_until(
            Duration::from_secs(10),
            "the new server in a validating answer",
            || {
                let got = validated_a(&socket, &domain, &dnskeys)?;
                (got == [next.clone()]).then(|| t0.elapsed())
            },
        );
        waits.push(answered.as_secs_f64() * 1e3);
        made.push(metric("opengslb_dnssec_signatures_made_total") - before);
        builds.push(metric("opengslb_dns_snapshot_build_seconds") * 1e3);
    }
    let rrsigs = metric("opengslb_dnssec_rrsigs");
    println!(
        "signed configuration: 200 round-robin domains x 32 servers + 20 failover domains, {rrsigs} RRSIGs"
    );
    println!(
        "start → first signed answer (election, first keys, first signed build): {:.0} ms",
        first_signed.as_secs_f64() * 1e3
    );
    println!(
        "health change (override written through Raft) → first validating answer with the new server, {trials} trials: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&waits, 50.0),
        percentile(&waits, 99.0),
        waits.iter().copied().fold(0.0, f64::max)
    );
    println!(
        "signatures made per change: median {:.0} (the 20 failover domains' new sets and the SOA); snapshot build with signing: median {:.1} ms",
        percentile(&made, 50.0),
        percentile(&builds, 50.0)
    );
}
