//! Tests only: a snapshot from a config text, and queries in wire form.

use std::sync::Arc;

use super::DnsSnapshot;
use crate::model::view::View;

/// The snapshot a node with config `yaml` (named `file` in errors) starts with.
pub(crate) fn snapshot(file: &str, yaml: &str) -> Arc<DnsSnapshot> {
    let settings = Arc::new(crate::config::parse(file, yaml).expect("test config"));
    Arc::new(DnsSnapshot::build(&View::from_config(settings, None)))
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
