//! Tests only: a snapshot from a config text, and queries in wire form.

use std::sync::Arc;

use super::DnsSnapshot;
use crate::model::view::View;

/// The snapshot a node with config `yaml` (named `file` in errors) starts with.
pub(crate) fn snapshot(file: &str, yaml: &str) -> Arc<DnsSnapshot> {
    let settings = Arc::new(crate::config::parse(file, yaml).expect("test config"));
    // A fixed time (the SOA serial), so snapshots built apart compare equal.
    Arc::new(DnsSnapshot::build_at(
        &View::from_config(settings, None),
        1_700_000_000,
    ))
}

/// The same snapshot, signed with freshly made keys (a KSK and a ZSK of `algorithm`) at
/// `now` (Unix seconds).
pub(crate) fn signed_snapshot(file: &str, yaml: &str, algorithm: u8, now: u32) -> Arc<DnsSnapshot> {
    use crate::dns::dnssec::{keys::Keyring, lifecycle, sign::SignatureCache};
    use crate::model::machine::{Machine, Request};
    let settings = Arc::new(crate::config::parse(file, yaml).expect("test config"));
    let mut machine = Machine::default();
    let dnssec = crate::config::DnssecSettings {
        enabled: true,
        algorithm,
    };
    let first = lifecycle::next_step(&machine.dnssec_keys, &dnssec, 0, 0)
        .expect("keys")
        .expect("first keys");
    machine.apply(&Request::V1(first));
    let (keyring, problems) = Keyring::read(&machine.dnssec_keys);
    assert!(problems.is_empty(), "{problems:?}");
    let (snapshot, signed) = DnsSnapshot::build_signed(
        &View::from_config(settings, None),
        &Arc::new(keyring),
        &mut SignatureCache::default(),
        now,
    );
    signed.expect("signed");
    Arc::new(snapshot)
}

/// A query: header flags, name, type, class, and optionally an OPT record with options.
pub(crate) fn query(
    id: u16,
    flags: u16,
    name: &str,
    qtype: u16,
    qclass: u16,
    opt: Option<&[u8]>,
) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&flags.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(opt.is_some())]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&qclass.to_be_bytes());
    if let Some(options) = opt {
        p.extend_from_slice(&[0, 0, 41, 0x10, 0x00, 0, 0, 0, 0]);
        p.extend_from_slice(&(options.len() as u16).to_be_bytes());
        p.extend_from_slice(options);
    }
    p
}

/// An ECS option for `addr`/`source` (family 1 or 2), the address cut to the prefix.
pub(crate) fn ecs(family: u16, source: u8, addr: &[u8], scope: u8) -> Vec<u8> {
    let n = usize::from(source).div_ceil(8).min(addr.len());
    let mut o = Vec::new();
    o.extend_from_slice(&8u16.to_be_bytes());
    o.extend_from_slice(&((4 + n) as u16).to_be_bytes());
    o.extend_from_slice(&family.to_be_bytes());
    o.extend_from_slice(&[source, scope]);
    o.extend_from_slice(&addr[..n]);
    o
}
