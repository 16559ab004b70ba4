//! Signatures made ahead of queries and kept by canonical content.
//!
//! An RRSIG covers the canonical RRset (RFC 4034 §6.3: owner lower case, records sorted
//! by their canonical RDATA), so the order an answer lists its records in needs no new
//! signature; only a different set does. The cache is keyed by the signing key and the
//! canonical RRset, and outlives snapshots: a health change signs only the sets it has
//! never signed (or whose signatures near their end).

use std::collections::HashMap;
use std::sync::Arc;

use hickory_proto::rr::rdata::NULL;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use super::keys::{ZoneKey, canonical_name};

/// Signatures start this long before they are made, for resolvers whose clocks lag.
pub const INCEPTION_SKEW: u32 = 3600;
/// How long a signature is valid.
pub const VALIDITY: u32 = 14 * 86_400;
/// A cached signature with less than this left is made again.
pub const REFRESH_BEFORE: u32 = 7 * 86_400;
/// A cached signature no snapshot used for this long is dropped.
const UNUSED_FOR: u32 = 3600;
/// Misses signed on one thread below this many; above, on every core.
const PARALLEL_FROM: usize = 64;

/// An RRset to sign: owner, type, TTL and its records' canonical RDATA, sorted and
/// without duplicates (RFC 4034 §6.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rrset {
    /// Owner, as answers carry it.
    pub owner: Name,
    /// Type.
    pub rtype: RecordType,
    /// TTL of the records (the RRSIG's original TTL and its own TTL).
    pub ttl: u32,
    /// Canonical RDATA, sorted.
    pub rdatas: Vec<Vec<u8>>,
}

impl Rrset {
    /// The RRset of `records` (one owner and type: the first record's).
    pub fn of<'a>(records: impl IntoIterator<Item = &'a Record>) -> Option<Rrset> {
        let mut records = records.into_iter().peekable();
        let first = records.peek()?;
        let (owner, rtype, ttl) = (first.name.clone(), first.record_type(), first.ttl);
        let rdatas = records
            .map(|r| {
                let mut bytes = Vec::new();
                let mut encoder = BinEncoder::new(&mut bytes);
                encoder.set_canonical_form(true);
                let emitted = r.data.emit(&mut encoder);
                emitted.map(|()| bytes)
            })
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        Some(Rrset::raw(owner, rtype, ttl, rdatas))
    }

    /// The RRset of records already in canonical wire form.
    pub fn raw(owner: Name, rtype: RecordType, ttl: u32, mut rdatas: Vec<Vec<u8>>) -> Rrset {
        rdatas.sort();
        rdatas.dedup();
        Rrset {
            owner,
            rtype,
            ttl,
            rdatas,
        }
    }

    /// The records as signed data holds them: owner, type, class, TTL, length, RDATA.
    fn canonical(&self) -> Vec<u8> {
        let owner = canonical_name(&self.owner);
        let mut out =
            Vec::with_capacity(self.rdatas.iter().map(|r| owner.len() + 10 + r.len()).sum());
        for rdata in &self.rdatas {
            out.extend_from_slice(&owner);
            out.extend_from_slice(&u16::from(self.rtype).to_be_bytes());
            out.extend_from_slice(&u16::from(DNSClass::IN).to_be_bytes());
            out.extend_from_slice(&self.ttl.to_be_bytes());
            out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            out.extend_from_slice(rdata);
        }
        out
    }
}

/// The RRSIG RDATA before its signature (RFC 4034 §3.1).
fn rrsig_head(
    key: &ZoneKey,
    rrset: &Rrset,
    signer: &Name,
    inception: u32,
    expiration: u32,
) -> Vec<u8> {
    let mut head = Vec::with_capacity(18 + signer.len() + 2);
    head.extend_from_slice(&u16::from(rrset.rtype).to_be_bytes());
    head.push(key.algorithm);
    head.push(rrset.owner.num_labels());
    head.extend_from_slice(&rrset.ttl.to_be_bytes());
    head.extend_from_slice(&expiration.to_be_bytes());
    head.extend_from_slice(&inception.to_be_bytes());
    head.extend_from_slice(&key.tag.to_be_bytes());
    head.extend_from_slice(&canonical_name(signer));
    head
}

/// One RRSIG record over `rrset` by `key`, valid from `inception` to `expiration`.
pub fn sign(
    key: &ZoneKey,
    rrset: &Rrset,
    signer: &Name,
    inception: u32,
    expiration: u32,
) -> Result<Record, String> {
    let mut rdata = rrsig_head(key, rrset, signer, inception, expiration);
    let mut data = rdata.clone();
    data.extend_from_slice(&rrset.canonical());
    rdata.extend_from_slice(&key.sign(&data)?);
    Ok(Record::from_rdata(
        rrset.owner.clone(),
        rrset.ttl,
        RData::Unknown {
            code: RecordType::RRSIG,
            rdata: NULL::with(rdata),
        },
    ))
}

#[derive(Debug)]
struct Cached {
    rrsig: Arc<Record>,
    expiration: u32,
    used_at: u32,
}

/// Signatures by (key id, canonical RRset), across snapshots.
#[derive(Debug, Default)]
pub struct SignatureCache {
    entries: HashMap<(u32, Vec<u8>), Cached>,
    /// Signatures made since the cache was created.
    pub made: u64,
    /// When the last snapshot was signed (Unix seconds).
    last_build: u32,
    /// Per domain and family (AAAA or not): the signed sets of the last snapshot and what
    /// they were made from, reused while nothing that decides them changes.
    pub(super) families: HashMap<(String, bool), super::FamilyMemo>,
}

/// One signature wanted: the key, the RRset, the zone apex that signs.
pub struct Job<'a> {
    /// Signing key.
    pub key: &'a ZoneKey,
    /// What it signs.
    pub rrset: Rrset,
    /// The zone apex (the RRSIG's signer name).
    pub signer: &'a Name,
}

impl SignatureCache {
    /// The RRSIG for every job at `now` (Unix seconds), from the cache where one is still
    /// fresh, else made now (on every core when there are many). Entries unused for an
    /// hour are dropped.
    pub fn sign_all(
        &mut self,
        jobs: Vec<Job<'_>>,
        now: u32,
    ) -> Result<Vec<(Arc<Record>, u32)>, String> {
        let keys: Vec<(u32, Vec<u8>)> = jobs
            .iter()
            .map(|j| {
                let mut content = u16::from(j.rrset.rtype).to_be_bytes().to_vec();
                content.extend_from_slice(&canonical_name(j.signer));
                content.extend_from_slice(&j.rrset.canonical());
                (j.key.id, content)
            })
            .collect();
        let mut out: Vec<Option<(Arc<Record>, u32)>> = Vec::with_capacity(jobs.len());
        let mut misses = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            match self.entries.get_mut(key) {
                Some(c) if c.expiration >= now.saturating_add(REFRESH_BEFORE) => {
                    c.used_at = now;
                    out.push(Some((c.rrsig.clone(), c.expiration)));
                }
                _ => {
                    out.push(None);
                    misses.push(i);
                }
            }
        }
        let (inception, expiration) = (
            now.saturating_sub(INCEPTION_SKEW),
            now.saturating_add(VALIDITY),
        );
        let sign_one = |i: &usize| {
            let job = &jobs[*i];
            sign(job.key, &job.rrset, job.signer, inception, expiration)
        };
        let made: Vec<Result<Record, String>> = if misses.len() < PARALLEL_FROM {
            misses.iter().map(sign_one).collect()
        } else {
            let threads = std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(16);
            let chunk = misses.len().div_ceil(threads);
            std::thread::scope(|scope| {
                let handles: Vec<_> = misses
                    .chunks(chunk)
                    .map(|part| scope.spawn(move || part.iter().map(sign_one).collect::<Vec<_>>()))
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| {
                        h.join()
                            .unwrap_or_else(|_| vec![Err("a signing thread panicked".to_owned())])
                    })
                    .collect()
            })
        };
        for (i, rrsig) in misses.iter().zip(made) {
            let rrsig = Arc::new(rrsig?);
            self.made += 1;
            self.entries.insert(
                keys[*i].clone(),
                Cached {
                    rrsig: rrsig.clone(),
                    expiration,
                    used_at: now,
                },
            );
            out[*i] = Some((rrsig, expiration));
        }
        self.entries
            .retain(|_, c| c.used_at.saturating_add(UNUSED_FOR) >= now);
        self.last_build = now;
        Ok(out.into_iter().flatten().collect())
    }

    /// The earliest time a signature the last snapshot uses needs making again (Unix
    /// seconds). Entries kept only in case a set comes back do not count: they are
    /// remade if and when they are used again.
    pub fn next_refresh(&self) -> Option<u32> {
        self.entries
            .values()
            .filter(|c| c.used_at == self.last_build)
            .map(|c| c.expiration)
            .chain(self.families.values().map(|f| f.expiration))
            .map(|expiration| expiration.saturating_sub(REFRESH_BEFORE))
            .min()
    }

    /// Cached signatures.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::dnssec::keys::{ECDSAP256SHA256, ED25519, generate};
    use crate::model::machine::{DnssecKey, KeyRole, KeyState};
    use hickory_proto::rr::rdata::A;

    fn zsk(algorithm: u8) -> ZoneKey {
        ZoneKey::read(&DnssecKey {
            id: 7,
            role: KeyRole::Zsk,
            algorithm,
            pkcs8: generate(algorithm).expect("generate"),
            state: KeyState::Active,
            since_ms: 0,
        })
        .expect("read")
    }

    fn a(owner: &str, ip: [u8; 4]) -> Record {
        Record::from_rdata(
            Name::from_ascii(owner).expect("name"),
            30,
            RData::A(A(std::net::Ipv4Addr::from(ip))),
        )
    }

    #[test]
    fn order_and_case_do_not_change_the_rrset_and_a_subset_does() {
        let one = [
            a("App.Example.", [10, 0, 0, 2]),
            a("app.example.", [10, 0, 0, 1]),
        ];
        let two = [
            a("app.example.", [10, 0, 0, 1]),
            a("APP.example.", [10, 0, 0, 2]),
        ];
        let x = Rrset::of(&one).expect("rrset");
        let y = Rrset::of(&two).expect("rrset");
        assert_eq!(x.canonical(), y.canonical());
        assert_eq!(x.rdatas, vec![vec![10, 0, 0, 1], vec![10, 0, 0, 2]]);
        let z = Rrset::of(&one[..1]).expect("rrset");
        assert_ne!(x.canonical(), z.canonical());
    }

    #[test]
    fn the_cache_signs_each_canonical_rrset_once_until_it_nears_expiry() {
        for algorithm in [ECDSAP256SHA256, ED25519] {
            let key = zsk(algorithm);
            let apex = Name::from_ascii("example.").expect("apex");
            let mut cache = SignatureCache::default();
            let rrset = |records: &[Record]| Rrset::of(records).expect("rrset");
            let both = [
                a("app.example.", [10, 0, 0, 1]),
                a("app.example.", [10, 0, 0, 2]),
            ];
            let reversed = [both[1].clone(), both[0].clone()];
            let job = |r| Job {
                key: &key,
                rrset: r,
                signer: &apex,
            };
            let now = 1_800_000_000;
            let first = cache.sign_all(vec![job(rrset(&both))], now).expect("sign");
            let again = cache
                .sign_all(
                    vec![job(rrset(&reversed)), job(rrset(&both[..1]))],
                    now + 60,
                )
                .expect("sign");
            assert_eq!(cache.made, 2, "the reordered set reused its signature");
            assert!(Arc::ptr_eq(&first[0].0, &again[0].0));
            assert_eq!(first[0].1, now + VALIDITY, "the expiration comes with it");
            let RData::Unknown { code, rdata } = &again[0].0.data else {
                panic!("rrsig");
            };
            assert_eq!(*code, RecordType::RRSIG);
            let bytes = &rdata.anything;
            assert_eq!(bytes[..4], [0, 1, algorithm, 2], "covers A, 2 labels");
            assert_eq!(
                u32::from_be_bytes(bytes[12..16].try_into().expect("4")),
                now - INCEPTION_SKEW
            );
            assert_eq!(
                u32::from_be_bytes(bytes[8..12].try_into().expect("4")),
                now + VALIDITY
            );
            assert_eq!(cache.next_refresh(), Some(now + VALIDITY - REFRESH_BEFORE));
            // Only what the last snapshot uses decides the next refresh.
            cache
                .sign_all(vec![job(rrset(&both[..1]))], now + 120)
                .expect("sign");
            assert_eq!(cache.made, 2);
            assert_eq!(
                cache.next_refresh(),
                Some(now + 60 + VALIDITY - REFRESH_BEFORE),
                "the pair, unused by that build, no longer counts"
            );
            // Near its end, it is made again; an entry unused for an hour is dropped.
            let later = now + VALIDITY - REFRESH_BEFORE + 1;
            cache
                .sign_all(vec![job(rrset(&both))], later)
                .expect("sign");
            assert_eq!(cache.made, 3);
            assert_eq!(
                cache.len(),
                1,
                "the single-record set was unused for an hour"
            );
        }
    }

    #[test]
    fn many_misses_are_signed_in_parallel_in_order() {
        let key = zsk(ECDSAP256SHA256);
        let apex = Name::from_ascii("example.").expect("apex");
        let jobs: Vec<Job<'_>> = (0..200u8)
            .map(|i| Job {
                key: &key,
                rrset: Rrset::of(&[a("app.example.", [10, 0, 1, i])]).expect("rrset"),
                signer: &apex,
            })
            .collect();
        let sigs = SignatureCache::default()
            .sign_all(jobs, 1_800_000_000)
            .expect("sign");
        assert_eq!(sigs.len(), 200);
        assert!(
            sigs.iter()
                .all(|s| s.0.name == Name::from_ascii("app.example.").expect("name"))
        );
    }
}
