//! The UDP fast path: standard queries for names in our zones (opcode QUERY, one
//! question, class IN, type A/AAAA/SOA/NS, with or without an OPT record carrying ECS)
//! answered from wire-format pieces rendered per snapshot by hickory's own encoder.
//!
//! Answering is: parse the question without allocating, decide with the same
//! [`handler::resolve`] the hickory path uses, copy the pieces, patch the ID, flags,
//! compression pointers and ECS scope. Everything else is declined (`None`) and goes to
//! the hickory path, which stays the reference: the differential tests require both to
//! produce the same bytes for every query the fast path answers.
//!
//! Why the pieces are position-independent: hickory copies the question verbatim and
//! never uses it as a compression target, so the records after it compress only against
//! each other. A section rendered at offset 0 is correct at any offset once its
//! pointers are moved by that offset.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use super::cookie::{self, OPTION_COOKIE, Secrets, Verdict};
use super::handler::{self, Client, EDNS_PAYLOAD, Label, Outcome, Placement, Section};
use super::snapshot::{DnsSnapshot, DomainAnswers, Family, NameKind, SignedSets, Zone};
use crate::model::routing::INLINE_PICKS;

/// The largest response the fast path writes: the EDNS payload we advertise.
pub const MAX_RESPONSE: usize = EDNS_PAYLOAD as usize;
/// Without EDNS a UDP response is limited to 512 bytes (RFC 1035 §4.2.1).
const PLAIN_LIMIT: usize = 512;
const HEADER: usize = 12;
/// Longest name in wire form (RFC 1035 §3.1).
const MAX_NAME: usize = 255;
const TYPE_OPT: u16 = 41;
const OPTION_NSID: u16 = 3;
const OPTION_ECS: u16 = 8;

/// A response section in wire form. Compression pointers in `bytes` are relative to
/// the section's first byte; `pointers` lists where they are.
#[derive(Debug)]
struct Piece {
    bytes: Box<[u8]>,
    pointers: Box<[u16]>,
    records: u16,
}

impl Piece {
    /// Renders `records` with hickory's encoder, exactly as a response would carry them
    /// right after the question.
    fn render(records: &[&Record]) -> Option<Piece> {
        let mut bytes = Vec::new();
        let mut encoder = BinEncoder::new(&mut bytes);
        for record in records {
            // Validated names and addresses always encode; if one did not, the hickory
            // path answers (its SERVFAIL), never a piece with a hole.
            record.emit(&mut encoder).ok()?;
        }
        let pointers = pointers_in(&bytes, records.len());
        Some(Piece {
            bytes: bytes.into_boxed_slice(),
            pointers: pointers.into_boxed_slice(),
            records: records.len() as u16,
        })
    }

    /// Writes the piece at `at`, moving its pointers; the new end, or `None` if it does
    /// not fit.
    fn write(&self, out: &mut [u8], at: usize) -> Option<usize> {
        let end = at.checked_add(self.bytes.len())?;
        out.get_mut(at..end)?.copy_from_slice(&self.bytes);
        for &p in self.pointers.iter() {
            let p = at + usize::from(p);
            let target = usize::from(u16::from_be_bytes([out[p], out[p + 1]]) & 0x3FFF) + at;
            if target >= 0x3FFF {
                return None;
            }
            out[p..p + 2].copy_from_slice(&(0xC000 | target as u16).to_be_bytes());
        }
        Some(end)
    }
}

/// Offsets of the compression pointers in `count` rendered records (owner names and the
/// names inside NS and SOA data: the only names our records carry).
fn pointers_in(bytes: &[u8], count: usize) -> Vec<u16> {
    fn skip_name(bytes: &[u8], mut i: usize, pointers: &mut Vec<u16>) -> usize {
        loop {
            let len = bytes[i];
            if len == 0 {
                return i + 1;
            }
            if len & 0xC0 == 0xC0 {
                pointers.push(i as u16);
                return i + 2;
            }
            i += 1 + usize::from(len);
        }
    }
    let mut pointers = Vec::new();
    let mut i = 0;
    for _ in 0..count {
        i = skip_name(bytes, i, &mut pointers);
        let rtype = u16::from_be_bytes([bytes[i], bytes[i + 1]]);
        let rdlen = usize::from(u16::from_be_bytes([bytes[i + 8], bytes[i + 9]]));
        let rdata = i + 10;
        match RecordType::from(rtype) {
            RecordType::NS => {
                skip_name(bytes, rdata, &mut pointers);
            }
            RecordType::SOA => {
                let after_mname = skip_name(bytes, rdata, &mut pointers);
                skip_name(bytes, after_mname, &mut pointers);
            }
            _ => {}
        }
        i = rdata + rdlen;
    }
    pointers
}

/// One address family of a domain: the owner name and each server's record without it.
/// The first record of an answer carries the name, the others point at it. When signed,
/// the RRSIG of each set of servers, also without its name (it points at the first).
#[derive(Debug)]
struct FamilyWire {
    owner: Box<[u8]>,
    rest: Vec<Box<[u8]>>,
    /// The family's signatures; their rendering is made once and shared by every
    /// snapshot in which the family is unchanged.
    signed: Arc<SignedSets>,
}

impl FamilyWire {
    fn render(family: &Family) -> Option<FamilyWire> {
        let mut wire = FamilyWire::render_records(&family.records)?;
        let first_end = wire.owner.len() + wire.rest[0].len();
        let signed = &family.signatures;
        signed.wire.get_or_init(|| {
            let mut rendered = HashMap::with_capacity(signed.rrsigs.len());
            for (set, rrsig) in &signed.rrsigs {
                // As an answer carries it after the first record: a pointer to its name.
                let bytes = Piece::render(&[&family.records[0], rrsig])?.bytes;
                if bytes.get(first_end..first_end + 2)? != [0xC0, 0x00] {
                    return None;
                }
                rendered.insert(set.clone(), bytes[first_end + 2..].into());
            }
            Some(rendered)
        });
        wire.signed = Arc::clone(signed);
        Some(wire)
    }

    /// The RRSIG (without its name) over `chosen`, in any order.
    fn signature(&self, chosen: &[usize]) -> Option<&[u8]> {
        let mut key = [0u16; INLINE_PICKS];
        for (k, &i) in key.iter_mut().zip(chosen) {
            *k = i as u16;
        }
        let key = &mut key[..chosen.len().min(INLINE_PICKS)];
        key.sort_unstable();
        self.signed.wire.get()?.as_ref()?.get(&*key).map(|b| &**b)
    }

    fn render_records(records: &[Record]) -> Option<FamilyWire> {
        if records.is_empty() || records.len() > INLINE_PICKS {
            return None;
        }
        // One pass of the encoder: the first record carries the owner name, every later
        // one a pointer to it (offset 0), exactly as in an answer.
        let all: Vec<&Record> = records.iter().collect();
        let bytes = Piece::render(&all)?.bytes;
        let name_end = bytes.iter().position(|&b| b == 0)? + 1;
        let mut rest = Vec::with_capacity(records.len());
        let mut i = name_end;
        for n in 0..records.len() {
            if n > 0 {
                if bytes.get(i..i + 2)? != [0xC0, 0x00] {
                    return None;
                }
                i += 2;
            }
            let rdlen = usize::from(u16::from_be_bytes([*bytes.get(i + 8)?, *bytes.get(i + 9)?]));
            let end = i + 10 + rdlen;
            rest.push(bytes.get(i..end)?.into());
            i = end;
        }
        Some(FamilyWire {
            owner: bytes[..name_end].into(),
            rest,
            signed: Arc::default(),
        })
    }
}

/// One zone: its apex (lower case, wire form), its SOA and its NS set (`None`: could
/// not be rendered; the hickory path answers); when signed, each with its RRSIG.
#[derive(Debug)]
struct ZoneWire {
    apex: Box<[u8]>,
    soa: Option<Piece>,
    ns: Option<Piece>,
    soa_signed: Option<Piece>,
    ns_signed: Option<Piece>,
}

/// Per snapshot: everything the fast path needs besides the snapshot's routing data.
#[derive(Debug, Default)]
pub struct FastTables {
    /// Every name that exists in our zones, lower case, wire form.
    names: HashMap<Box<[u8]>, NameKind>,
    /// By `snapshot.zones` index.
    zones: Vec<ZoneWire>,
    /// By domain: A and AAAA (`None`: not answered here).
    families: Vec<[Option<FamilyWire>; 2]>,
    /// Signed zones' denials (DO=1), rendered whole; see [`Denials`].
    denials: Denials,
}

/// Signed negative answers: the authority section (SOA, its RRSIG, one or two NSEC and
/// their RRSIGs) of every denial the NSEC chains can give, rendered as the hickory path
/// renders it. NODATA is one per existing name; NXDOMAIN depends on the two links that
/// cover the query name and the wildcard at its closest encloser, so every pair a query
/// under each existing name can need is rendered.
#[derive(Debug, Default)]
struct Denials {
    /// An existing name: its NODATA authority, and the chain link covering the wildcard
    /// below it (for NXDOMAIN under it).
    at: HashMap<Box<[u8]>, (Piece, u32)>,
    /// Per zone: the chain's owners in canonical order.
    chains: Vec<Vec<WireName>>,
    /// (zone, covering link, wildcard link) → NXDOMAIN authority.
    nxdomain: HashMap<(u32, u32, u32), Piece>,
}

impl Denials {
    fn build(
        zones: &[Zone],
        names: &HashMap<hickory_proto::rr::LowerName, NameKind>,
        wire: &dyn Fn(&hickory_proto::rr::Name) -> Box<[u8]>,
    ) -> Denials {
        use hickory_proto::rr::{LowerName, Name};
        let mut denials = Denials {
            chains: zones
                .iter()
                .map(|z| {
                    z.signed.as_ref().map_or_else(Vec::new, |s| {
                        s.chain
                            .iter()
                            .map(|l| {
                                let w = wire(&l.owner);
                                let offsets = label_offsets(&w);
                                (w, offsets)
                            })
                            .collect()
                    })
                })
                .collect(),
            ..Denials::default()
        };
        let zone_of = |name: &LowerName| zones.iter().position(|z| z.apex.zone_of(name));
        let authority = |z: usize, links: &[usize]| -> Option<Piece> {
            let zone = &zones[z];
            let signed = zone.signed.as_ref()?;
            let mut records: Vec<&Record> = vec![&zone.soa, &signed.soa_sig];
            for &i in links {
                records.push(&signed.chain.get(i)?.nsec);
                records.push(&signed.chain[i].sig);
            }
            Piece::render(&records)
        };
        for (name, kind) in names {
            let Some(z) = zone_of(name) else { continue };
            let Some(signed) = zones[z].signed.as_ref() else {
                continue;
            };
            let owner = Name::from(name);
            let nodata = signed.denial(names, &owner, Some(*kind));
            let Ok(wildcard) = owner.prepend_label("*") else {
                continue;
            };
            let wild = signed.covering(&wildcard);
            if let Some(piece) = authority(z, &nodata) {
                denials.at.insert(wire(&owner), (piece, wild as u32));
            }
            // A name under this one that does not exist is covered by the link at or
            // before this name, or by one of its descendants' links.
            let below = (0..signed.chain.len()).filter(|&i| {
                signed.chain[i].owner != owner && owner.zone_of(&signed.chain[i].owner)
            });
            for cover in std::iter::once(signed.covering(&owner)).chain(below) {
                let links: Vec<usize> = if cover == wild {
                    vec![cover]
                } else {
                    vec![cover, wild]
                };
                if let Some(piece) = authority(z, &links) {
                    denials
                        .nxdomain
                        .insert((z as u32, cover as u32, wild as u32), piece);
                }
            }
        }
        denials
    }

    /// The link of zone `z`'s chain that covers `name` (lower case, wire form, labels at
    /// `labels`): the last owner at or before it in canonical order (RFC 4034 §6.1).
    fn covering(&self, z: usize, name: &[u8], labels: &[u8]) -> Option<usize> {
        let chain = self.chains.get(z)?;
        let after = chain.partition_point(|(owner, offsets)| {
            canonical_cmp(owner, offsets, name, labels) != std::cmp::Ordering::Greater
        });
        after.checked_sub(1)
    }
}

/// A name, lower case, wire form, and where each of its labels starts.
type WireName = (Box<[u8]>, Box<[u8]>);

/// Where each non-root label of a wire-form name starts.
fn label_offsets(name: &[u8]) -> Box<[u8]> {
    let mut offsets = Vec::new();
    let mut i = 0;
    while let Some(&len) = name.get(i) {
        if len == 0 {
            break;
        }
        offsets.push(i as u8);
        i += 1 + usize::from(len);
    }
    offsets.into_boxed_slice()
}

/// Canonical DNS name order (RFC 4034 §6.1) of two lower-case wire-form names given
/// their label offsets: label by label from the root, each as an octet string.
fn canonical_cmp(a: &[u8], a_labels: &[u8], b: &[u8], b_labels: &[u8]) -> std::cmp::Ordering {
    fn label(name: &[u8], at: u8) -> &[u8] {
        let at = usize::from(at);
        let len = usize::from(name[at]);
        &name[at + 1..at + 1 + len]
    }
    for (x, y) in a_labels.iter().rev().zip(b_labels.iter().rev()) {
        match label(a, *x).cmp(label(b, *y)) {
            std::cmp::Ordering::Equal => {}
            other => return other,
        }
    }
    a_labels.len().cmp(&b_labels.len())
}

impl FastTables {
    /// Renders the tables for a snapshot's zones, names and domains.
    pub fn build(
        zones: &[Zone],
        names: &HashMap<hickory_proto::rr::LowerName, NameKind>,
        domains: &[DomainAnswers],
    ) -> FastTables {
        let wire = |name: &hickory_proto::rr::Name| -> Box<[u8]> {
            let mut bytes = Vec::new();
            let mut encoder = BinEncoder::new(&mut bytes);
            let _ = name.to_lowercase().emit(&mut encoder);
            bytes.into_boxed_slice()
        };
        FastTables {
            denials: Denials::build(zones, names, &|n| {
                wire(&hickory_proto::rr::LowerName::from(n))
            }),
            names: names.iter().map(|(n, k)| (wire(n), *k)).collect(),
            zones: zones
                .iter()
                .map(|z| {
                    let ns: Vec<&Record> = z.ns.iter().collect();
                    let signed = z.signed.as_ref();
                    ZoneWire {
                        apex: wire(&z.apex),
                        soa: Piece::render(&[&z.soa]),
                        ns: Piece::render(&ns),
                        soa_signed: signed.and_then(|s| Piece::render(&[&z.soa, &s.soa_sig])),
                        ns_signed: signed.and_then(|s| {
                            let mut all = ns.clone();
                            all.push(&s.ns_sig);
                            Piece::render(&all)
                        }),
                    }
                })
                .collect(),
            families: domains
                .iter()
                .map(|d| [FamilyWire::render(&d.v4), FamilyWire::render(&d.v6)])
                .collect(),
        }
    }
}

/// The client subnet option of a query.
#[derive(Debug, Clone, Copy)]
struct Ecs {
    addr: IpAddr,
    source: u8,
    /// The option's bytes in the query (code, length, family, prefixes, address).
    at: usize,
    len: usize,
}

/// A query the fast path can answer, parsed in place.
struct Parsed {
    /// End of the question (after QCLASS).
    question_end: usize,
    qtype: RecordType,
    /// The name, lower case, wire form.
    name: [u8; MAX_NAME],
    name_len: usize,
    /// Offsets in `name` where labels start.
    labels: [u8; MAX_NAME / 2 + 1],
    label_count: usize,
    /// `Some` when the query has an OPT record; inside, its ECS option if any.
    edns: Option<Option<Ecs>>,
    /// The query's OPT has the DO bit (copied into the response's OPT, RFC 3225 §3).
    dnssec_ok: bool,
    /// The largest response the requestor takes: its EDNS payload, at least 512 and at
    /// most ours (RFC 6891 §6.2.5); 512 without EDNS.
    limit: usize,
    /// The first COOKIE option's data: offset and length in the query.
    cookie: Option<(usize, usize)>,
}

/// Parses a query the fast path can answer; `None` for anything else.
fn parse(q: &[u8]) -> Option<Parsed> {
    let header = q.get(..HEADER)?;
    // QR = 0 and opcode QUERY; one question, no answer or authority records.
    if header[2] & 0xF8 != 0 || header[4..10] != [0, 1, 0, 0, 0, 0] {
        return None;
    }
    let additional = u16::from_be_bytes([header[10], header[11]]);
    if additional > 1 {
        return None;
    }
    let mut parsed = Parsed {
        question_end: 0,
        qtype: RecordType::A,
        name: [0; MAX_NAME],
        name_len: 0,
        labels: [0; MAX_NAME / 2 + 1],
        label_count: 0,
        edns: None,
        dnssec_ok: false,
        limit: PLAIN_LIMIT,
        cookie: None,
    };
    let mut i = HEADER;
    loop {
        let len = usize::from(*q.get(i)?);
        if len > 63 {
            return None; // compression pointers and extended label types
        }
        let end = parsed.name_len + 1 + len;
        if end > MAX_NAME {
            return None;
        }
        let label = q.get(i..i + 1 + len)?;
        if len > 0 {
            parsed.labels[parsed.label_count] = parsed.name_len as u8;
            parsed.label_count += 1;
        }
        for (dst, src) in parsed.name[parsed.name_len..end].iter_mut().zip(label) {
            *dst = src.to_ascii_lowercase();
        }
        parsed.name_len = end;
        i += 1 + len;
        if len == 0 {
            break;
        }
    }
    let fixed = q.get(i..i + 4)?;
    parsed.qtype = RecordType::from(u16::from_be_bytes([fixed[0], fixed[1]]));
    if u16::from_be_bytes([fixed[2], fixed[3]]) != u16::from(DNSClass::IN) {
        return None;
    }
    i += 4;
    parsed.question_end = i;
    if additional == 1 {
        // OPT: root owner, type 41, class = payload, TTL = extended rcode, version, flags.
        let opt = q.get(i..i + 11)?;
        if opt[0] != 0 || u16::from_be_bytes([opt[1], opt[2]]) != TYPE_OPT {
            return None;
        }
        if opt[5] != 0 || opt[6] != 0 {
            return None; // extended rcode or a version we do not speak: BADVERS there
        }
        let rdlen = usize::from(u16::from_be_bytes([opt[9], opt[10]]));
        i += 11;
        if q.len() != i + rdlen {
            return None;
        }
        let mut ecs = None;
        while i < q.len() {
            let option = q.get(i..i + 4)?;
            let code = u16::from_be_bytes([option[0], option[1]]);
            let len = usize::from(u16::from_be_bytes([option[2], option[3]]));
            let data = q.get(i + 4..i + 4 + len)?;
            match code {
                // Parsed by hickory (and so able to fail there): the hickory path decides.
                OPTION_NSID => return None,
                OPTION_ECS if ecs.is_some() => return None,
                OPTION_ECS => ecs = Some(parse_ecs(data, i)?),
                // Only the first COOKIE counts (RFC 7873 §5.2); it is judged when answering.
                OPTION_COOKIE if parsed.cookie.is_none() => parsed.cookie = Some((i + 4, len)),
                // Cookies, padding and the rest: read as opaque and not echoed by either path.
                _ => {}
            }
            i += 4 + len;
        }
        parsed.edns = Some(ecs);
        parsed.dnssec_ok = opt[7] & 0x80 != 0;
        parsed.limit =
            usize::from(u16::from_be_bytes([opt[3], opt[4]])).clamp(PLAIN_LIMIT, MAX_RESPONSE);
    } else if i != q.len() {
        return None;
    }
    Some(parsed)
}

/// A client subnet option's data (RFC 7871 §6), when it is exactly well-formed.
fn parse_ecs(data: &[u8], at: usize) -> Option<Ecs> {
    let (family, source) = (
        u16::from_be_bytes([*data.first()?, *data.get(1)?]),
        *data.get(2)?,
    );
    let address = data.get(4..)?;
    if address.len() != usize::from(source).div_ceil(8) {
        return None;
    }
    let addr = match family {
        1 if source <= 32 => {
            let mut octets = [0; 4];
            octets[..address.len()].copy_from_slice(address);
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        2 if source <= 128 => {
            let mut octets = [0; 16];
            octets[..address.len()].copy_from_slice(address);
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(Ecs {
        addr,
        source,
        at,
        len: 4 + data.len(),
    })
}

/// What DNS cookies need at the time of a query: this period's secrets and the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieTime {
    /// The server secrets.
    pub secrets: Secrets,
    /// Unix seconds.
    pub now: u32,
}

/// What an answered query counts as, for the metrics the hickory path keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    /// Bytes written.
    pub len: usize,
    /// The configured name it counts under.
    pub(crate) label: Label,
    /// Query type.
    pub qtype: RecordType,
    /// Response code.
    pub rcode: ResponseCode,
    /// The routing decision: domain and outcome.
    pub(crate) decision: Option<(usize, Outcome)>,
    /// A learned ECS decision's region, for the resolver observer.
    pub learned: Option<usize>,
    /// The query carried a valid server cookie (its source address is proven).
    pub cookie_valid: bool,
    /// The routed records answered: domain, AAAA or not, and the chosen servers.
    pub(crate) records: Option<(usize, bool, crate::model::routing::Picks)>,
}

/// Answers `query` from `src` into `out` (at least [`MAX_RESPONSE`] bytes), or declines.
/// With `cookies` (DNS cookies on), a query's client or valid server cookie is answered
/// with a fresh server cookie; an invalid or malformed one is declined (the hickory path
/// answers BADCOOKIE or FORMERR). Never allocates.
pub fn answer(
    snapshot: &DnsSnapshot,
    query: &[u8],
    src: SocketAddr,
    entropy: u64,
    cookies: Option<&CookieTime>,
    out: &mut [u8],
) -> Option<Answered> {
    let tables = &snapshot.fast;
    let parsed = parse(query)?;
    let (cookie, cookie_valid) = match (cookies, parsed.cookie) {
        (Some(c), Some((at, len))) => {
            let data = &query[at..at + len];
            let valid = match cookie::judge(&c.secrets, data, src.ip(), c.now) {
                Verdict::ClientOnly => false,
                Verdict::Valid => true,
                Verdict::Invalid | Verdict::Malformed => return None,
            };
            (
                Some(cookie::response(&c.secrets, data, src.ip(), c.now)),
                valid,
            )
        }
        _ => (None, false),
    };
    if !matches!(
        parsed.qtype,
        RecordType::A | RecordType::AAAA | RecordType::SOA | RecordType::NS
    ) {
        return None;
    }
    let name = &parsed.name[..parsed.name_len];
    // The most specific zone, as `DnsSnapshot::zone_of` finds it.
    let zone = tables.zones.iter().position(|ZoneWire { apex, .. }| {
        name.len() >= apex.len()
            && name[name.len() - apex.len()..] == apex[..]
            && (apex.len() == 1
                || parsed.labels[..parsed.label_count]
                    .iter()
                    .any(|&l| usize::from(l) == name.len() - apex.len()))
    })?;
    let kind = tables.names.get(name).copied();
    if let Some(NameKind::Domain(d, _)) = kind
        && matches!(parsed.qtype, RecordType::A | RecordType::AAAA)
        && tables.families[d][usize::from(parsed.qtype == RecordType::AAAA)].is_none()
        && !snapshot.domains[d]
            .family(parsed.qtype == RecordType::AAAA)
            .records
            .is_empty()
    {
        return None; // too many servers to route without allocating
    }
    let ecs = parsed.edns.flatten().filter(|_| snapshot.geo.ecs_enabled);
    let client = Client::new(src.ip(), ecs.map(|e| (e.addr, e.source)));
    let resolved = handler::resolve(
        snapshot,
        Placement::In(zone, kind),
        parsed.qtype,
        DNSClass::IN,
        client,
        entropy,
        parsed.dnssec_ok,
    );
    let signed = resolved.signed;

    // What does not fit is declined: the hickory path truncates it.
    let limit = out.len().min(parsed.limit);
    let out = &mut out[..limit];
    let base = parsed.question_end;
    out.get_mut(..base)?.copy_from_slice(&query[..base]);
    let (mut end, answers, authority) = match &resolved.section {
        Section::Nothing => (base, 0, 0),
        // A signed denial: rendered ahead, found by the query's place in the NSEC chain.
        Section::Negative(z) if signed => {
            let piece = denial(tables, *z, name, &parsed.labels[..parsed.label_count], kind)?;
            (piece.write(out, base)?, 0, piece.records)
        }
        Section::Negative(z) => {
            let soa = tables.zones[*z].soa.as_ref()?;
            (soa.write(out, base)?, 0, soa.records)
        }
        Section::Soa(z) => {
            let zone = &tables.zones[*z];
            let soa = if signed {
                zone.soa_signed.as_ref()
            } else {
                zone.soa.as_ref()
            }?;
            (soa.write(out, base)?, soa.records, 0)
        }
        Section::Ns(z) => {
            let zone = &tables.zones[*z];
            let ns = if signed {
                zone.ns_signed.as_ref()
            } else {
                zone.ns.as_ref()
            }?;
            (ns.write(out, base)?, ns.records, 0)
        }
        Section::Keys(..) | Section::Nsec(..) | Section::Rrsigs(..) => return None,
        Section::Records { domain, v6, chosen } => {
            let family = tables.families[*domain][usize::from(*v6)].as_ref()?;
            let mut end = put(out, base, &family.owner)?;
            for (n, &i) in chosen.iter().enumerate() {
                if n > 0 {
                    end = put(out, end, &(0xC000 | base as u16).to_be_bytes())?;
                }
                end = put(out, end, &family.rest[i])?;
            }
            let mut count = chosen.len() as u16;
            if signed {
                // Not signed ahead: the hickory path signs it (and counts it).
                let rrsig = family.signature(chosen)?;
                end = put(out, end, &(0xC000 | base as u16).to_be_bytes())?;
                end = put(out, end, rrsig)?;
                count += 1;
            }
            (end, count, 0)
        }
    };
    if let Some(request_ecs) = parsed.edns {
        let option_len = request_ecs.map_or(0, |e| e.len) + cookie.map_or(0, |c| 4 + c.len());
        let mut opt = [0u8; 11];
        opt[1..3].copy_from_slice(&TYPE_OPT.to_be_bytes());
        opt[3..5].copy_from_slice(&EDNS_PAYLOAD.to_be_bytes());
        opt[5] = resolved.rcode.high();
        if parsed.dnssec_ok {
            opt[7] = 0x80; // DO echoed (RFC 3225 §3); no other flag is ours to set
        }
        opt[9..11].copy_from_slice(&(option_len as u16).to_be_bytes());
        end = put(out, end, &opt)?;
        if let Some(e) = request_ecs {
            let option = end;
            end = put(out, end, &query[e.at..e.at + e.len])?;
            // Echo the subnet with the scope the answer deserves (RFC 7871 §7.2.1).
            let scope = resolved
                .ecs_scope
                .unwrap_or(0)
                .min(handler::max_prefix(e.addr));
            out[option + 7] = scope;
        }
        if let Some(c) = cookie {
            let mut head = [0u8; 4];
            head[..2].copy_from_slice(&OPTION_COOKIE.to_be_bytes());
            head[2..].copy_from_slice(&(c.len() as u16).to_be_bytes());
            end = put(out, end, &head)?;
            end = put(out, end, &c)?;
        }
    }
    // Header: the query's ID, QR, opcode QUERY, AA for answers we own, RD and CD echoed.
    let authoritative = matches!(
        resolved.rcode,
        ResponseCode::NoError | ResponseCode::NXDomain
    );
    out[2] = 0x80 | if authoritative { 0x04 } else { 0 } | (query[2] & 0x01);
    out[3] = (query[3] & 0x10) | (resolved.rcode.low() & 0x0F);
    out[4..6].copy_from_slice(&1u16.to_be_bytes());
    out[6..8].copy_from_slice(&answers.to_be_bytes());
    out[8..10].copy_from_slice(&authority.to_be_bytes());
    out[10..12].copy_from_slice(&u16::from(parsed.edns.is_some()).to_be_bytes());
    Some(Answered {
        len: end,
        label: resolved.label,
        qtype: parsed.qtype,
        rcode: resolved.rcode,
        decision: resolved.decision,
        learned: resolved.learned,
        cookie_valid,
        records: match resolved.section {
            Section::Records { domain, v6, chosen } => Some((domain, v6, chosen)),
            _ => None,
        },
    })
}

/// The rendered authority section denying `name` (lower case, wire form, labels at
/// `labels`) in signed zone `z`; `None` when it was not rendered (the hickory path
/// answers).
fn denial<'t>(
    tables: &'t FastTables,
    z: usize,
    name: &[u8],
    labels: &[u8],
    kind: Option<NameKind>,
) -> Option<&'t Piece> {
    if kind.is_some() {
        return tables.denials.at.get(name).map(|(piece, _)| piece);
    }
    // The closest encloser: the longest existing suffix of the name.
    let (_, wild) = labels
        .iter()
        .skip(1)
        .find_map(|&at| tables.denials.at.get(&name[usize::from(at)..]))?;
    let cover = tables.denials.covering(z, name, labels)?;
    tables
        .denials
        .nxdomain
        .get(&(z as u32, cover as u32, *wild))
}

/// Copies `bytes` to `out[at..]`; the new end, or `None` if it does not fit.
fn put(out: &mut [u8], at: usize, bytes: &[u8]) -> Option<usize> {
    let end = at.checked_add(bytes.len())?;
    out.get_mut(at..end)?.copy_from_slice(bytes);
    Some(end)
}
