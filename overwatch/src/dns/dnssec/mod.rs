//! DNSSEC for GSLB answers, signed ahead (design.md, "DNS").
//!
//! When a snapshot is built, every RRset it can answer is signed: each set of servers a
//! domain's routing can put in one answer ([`answer_sets`]), the SOA, NS, DNSKEY,
//! CDS and CDNSKEY RRsets, and an NSEC chain over the zone's names. Signatures come from
//! a cache keyed by canonical content ([`sign::SignatureCache`]), so a health change signs
//! only the new sets; queries only copy signatures.
//!
//! Denial of existence is a plain NSEC chain (RFC 4034), not online "black lies": a
//! zone's names change only when the configuration does, so the whole chain is signed
//! ahead like everything else, NXDOMAIN stays NXDOMAIN, and resolvers can cache the
//! denial aggressively (RFC 8198). The chain shows only names that already answer.

pub mod keys;
pub mod lifecycle;
pub mod sign;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use hickory_proto::rr::rdata::NULL;
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use self::keys::{Keyring, ZoneKey, canonical_name};
use self::sign::{Job, Rrset, SignatureCache};
use super::snapshot::{DnsSnapshot, NameKind};
use crate::config::{Algorithm, AllDownPolicy};
use crate::model::machine::KeyRole;
use crate::model::routing::{Picks, Query, decide_among};

/// Weighted draws for DO=1 queries use this many entropy values, so the sets they can
/// produce are known and signed ahead (answers without DO draw as before). Each server
/// still appears in proportion to its weight, over 64 draws instead of 2^64.
pub const SIGNED_DRAWS: u64 = 64;

/// Every set of servers (candidate indexes, sorted) that routing can put in one answer
/// for this family now: the same `decide_among` the query path runs, over every entropy
/// and region it can be given, and the all-down policy's set when nothing is healthy.
pub fn answer_sets(
    domain: &super::snapshot::DomainAnswers,
    family: &super::snapshot::Family,
) -> Vec<Picks> {
    let rotations = family.healthy.len().max(1) as u64;
    let (draws, by_region) = match domain.algorithm {
        Algorithm::RoundRobin | Algorithm::Latency => (rotations, false),
        Algorithm::Weighted => (SIGNED_DRAWS.max(rotations), false),
        Algorithm::Failover => (1, false),
        Algorithm::Geolocation | Algorithm::LearnedLatency => (1, true),
    };
    let regions = if by_region { domain.regions.len() } else { 0 };
    let mut sets = std::collections::BTreeSet::new();
    for region in std::iter::once(None).chain((0..regions).map(Some)) {
        for entropy in 0..draws {
            let query = Query {
                max_records: domain.max_records,
                entropy,
                client_region: region,
                client_prefix: 0,
                max_latency: domain.max_latency,
                min_samples: domain.min_samples,
                learned_region: region,
                learned_prefix: 0,
            };
            let decision = decide_among(
                domain.algorithm,
                &family.candidates,
                &family.healthy,
                &query,
            );
            let mut set = decision.chosen;
            set.sort_unstable();
            if !set.is_empty() {
                sets.insert(set);
            }
        }
    }
    if family.healthy.is_empty() {
        let mut fallback = super::handler::all_down(domain, family);
        fallback.sort_unstable();
        if !fallback.is_empty() {
            sets.insert(fallback);
        }
    }
    sets.into_iter().collect()
}

/// What a zone answers when signed, besides the RRSIGs of its domains' answers.
#[derive(Debug)]
pub struct ZoneSigned {
    /// RRSIG over the SOA.
    pub soa_sig: Arc<Record>,
    /// RRSIG over the NS RRset.
    pub ns_sig: Arc<Record>,
    /// The DNSKEY RRset and its RRSIG (by the KSK).
    pub dnskey: Vec<Record>,
    /// RRSIG over the DNSKEY RRset.
    pub dnskey_sig: Arc<Record>,
    /// CDS RRset (RFC 7344): the DS records the parent should hold.
    pub cds: Vec<Record>,
    /// RRSIG over the CDS RRset (by the KSK).
    pub cds_sig: Arc<Record>,
    /// CDNSKEY RRset.
    pub cdnskey: Vec<Record>,
    /// RRSIG over the CDNSKEY RRset (by the KSK).
    pub cdnskey_sig: Arc<Record>,
    /// The NSEC chain, in canonical order (the apex first).
    pub chain: Vec<Link>,
}

/// One NSEC record of a chain and its signature.
#[derive(Debug)]
pub struct Link {
    /// Owner.
    pub owner: Name,
    /// The NSEC record.
    pub nsec: Record,
    /// Its RRSIG.
    pub sig: Arc<Record>,
}

/// Which of the apex's key RRsets a query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySet {
    /// DNSKEY.
    Dnskey,
    /// CDS.
    Cds,
    /// CDNSKEY.
    Cdnskey,
}

impl ZoneSigned {
    /// The records and signature of one of the apex's key RRsets.
    pub fn key_set(&self, set: KeySet) -> (&[Record], &Record) {
        match set {
            KeySet::Dnskey => (&self.dnskey, &self.dnskey_sig),
            KeySet::Cds => (&self.cds, &self.cds_sig),
            KeySet::Cdnskey => (&self.cdnskey, &self.cdnskey_sig),
        }
    }

    /// The link whose owner is `name`.
    pub fn at(&self, name: &Name) -> Option<usize> {
        self.chain.binary_search_by(|l| l.owner.cmp(name)).ok()
    }

    /// The link that covers `name`: the last owner at or before it in canonical order.
    /// The apex comes first and sorts before every name in the zone.
    pub fn covering(&self, name: &Name) -> usize {
        self.chain
            .partition_point(|l| l.owner <= *name)
            .saturating_sub(1)
    }

    /// The NSEC links proving a negative answer for `name` (RFC 4035 §3.1.3): NODATA at
    /// an existing name is its own NSEC; at an empty non-terminal, the NSEC covering it;
    /// NXDOMAIN, the NSEC covering the name and the one covering the wildcard at its
    /// closest encloser.
    pub fn denial(
        &self,
        names: &HashMap<LowerName, NameKind>,
        name: &Name,
        kind: Option<NameKind>,
    ) -> smallvec::SmallVec<[usize; 2]> {
        let mut links = smallvec::SmallVec::new();
        match kind {
            Some(NameKind::Apex(_) | NameKind::Domain(..)) => {
                links.extend(self.at(name).or_else(|| Some(self.covering(name))));
            }
            Some(NameKind::EmptyNonTerminal(_)) => links.push(self.covering(name)),
            None => {
                links.push(self.covering(name));
                let mut encloser = name.base_name();
                while !encloser.is_root() && !names.contains_key(&LowerName::from(&encloser)) {
                    encloser = encloser.base_name();
                }
                if let Ok(wildcard) = encloser.prepend_label("*") {
                    let covering = self.covering(&wildcard);
                    if !links.contains(&covering) {
                        links.push(covering);
                    }
                }
            }
        }
        links
    }
}

/// The NSEC type bitmap for `types` (RFC 4034 §4.1.2), window by window.
fn type_bitmap(types: &[RecordType]) -> Vec<u8> {
    let mut codes: Vec<u16> = types.iter().map(|t| u16::from(*t)).collect();
    codes.sort_unstable();
    codes.dedup();
    let mut out = Vec::new();
    let mut window = 0u16;
    let mut bits: Vec<u8> = Vec::new();
    let flush = |window: u16, bits: &mut Vec<u8>, out: &mut Vec<u8>| {
        if !bits.is_empty() {
            out.push(window as u8);
            out.push(bits.len() as u8);
            out.append(bits);
        }
    };
    for code in codes {
        let (w, low) = (code >> 8, (code & 0xFF) as usize);
        if w != window {
            flush(window, &mut bits, &mut out);
            window = w;
        }
        if bits.len() <= low / 8 {
            bits.resize(low / 8 + 1, 0);
        }
        bits[low / 8] |= 0x80 >> (low % 8);
    }
    flush(window, &mut bits, &mut out);
    out
}

/// What decides a family's answer sets and their RRsets: while all of it is equal, the
/// signatures made for it last time are reused without looking at a record.
#[derive(Debug)]
struct FamilyInputs {
    records: Vec<Record>,
    candidates: Vec<crate::model::routing::Candidate>,
    healthy: Vec<usize>,
    last_healthy: Vec<usize>,
    algorithm: Algorithm,
    max_records: usize,
    policy: AllDownPolicy,
    regions: Vec<usize>,
    max_latency: Option<std::time::Duration>,
    min_samples: u32,
    zsk: u32,
}

impl FamilyInputs {
    fn of(
        domain: &super::snapshot::DomainAnswers,
        family: &super::snapshot::Family,
        zsk: u32,
    ) -> FamilyInputs {
        FamilyInputs {
            records: family.records.clone(),
            candidates: family.candidates.clone(),
            healthy: family.healthy.clone(),
            last_healthy: family.last_healthy.clone(),
            algorithm: domain.algorithm,
            max_records: domain.max_records,
            policy: domain.policy,
            regions: domain.regions.clone(),
            max_latency: domain.max_latency,
            min_samples: domain.min_samples,
            zsk,
        }
    }

    /// Whether these are `family`'s inputs now (compared in place: most families of a
    /// rebuild are unchanged, and copying them to compare would cost what reuse saves).
    fn describe(
        &self,
        domain: &super::snapshot::DomainAnswers,
        family: &super::snapshot::Family,
        zsk: u32,
    ) -> bool {
        self.zsk == zsk
            && self.algorithm == domain.algorithm
            && self.max_records == domain.max_records
            && self.policy == domain.policy
            && self.max_latency == domain.max_latency
            && self.min_samples == domain.min_samples
            && self.regions == domain.regions
            && self.healthy == family.healthy
            && self.last_healthy == family.last_healthy
            && self.candidates == family.candidates
            && self.records == family.records
    }
}

/// A family's signed sets as last built (see [`sign::SignatureCache`]).
#[derive(Debug)]
pub(crate) struct FamilyMemo {
    inputs: FamilyInputs,
    sets: Arc<super::snapshot::SignedSets>,
    /// The earliest expiration among its signatures.
    expiration: u32,
}

/// What signing a snapshot did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Signed {
    /// RRSIGs the snapshot holds.
    pub rrsigs: usize,
    /// Of those, made for this snapshot (the rest came from the cache).
    pub made: u64,
}

enum Dest {
    Soa(usize),
    Ns(usize),
    Keys(usize, KeySet),
    Link(usize, usize),
    Answer(usize, Box<[u16]>),
}

/// A family signed anew in this build: where its signatures go, and its memo's inputs.
struct Fresh {
    domain: usize,
    v6: bool,
    inputs: FamilyInputs,
    sets: super::snapshot::SignedSets,
    expiration: u32,
}

/// Signs `snapshot` with `keyring` at `now` (Unix seconds). Unless the keyring has an
/// active KSK and ZSK, nothing is signed and DO=1 queries get unsigned answers (an
/// insecure zone: no parent can hold a DS for keys that never existed).
pub fn sign_snapshot(
    snapshot: &mut DnsSnapshot,
    keyring: &Keyring,
    cache: &mut SignatureCache,
    now: u32,
) -> Result<Signed, String> {
    let (Some(ksk), Some(zsk)) = (keyring.active(KeyRole::Ksk), keyring.active(KeyRole::Zsk))
    else {
        return Ok(Signed::default());
    };
    let apexes: Vec<Name> = snapshot.zones.iter().map(|z| Name::from(&z.apex)).collect();
    let mut jobs: Vec<Job<'_>> = Vec::new();
    let mut dests: Vec<Dest> = Vec::new();
    fn push<'a>(
        jobs: &mut Vec<Job<'a>>,
        dests: &mut Vec<Dest>,
        dest: Dest,
        key: &'a ZoneKey,
        rrset: Rrset,
        signer: &'a Name,
    ) {
        jobs.push(Job { key, rrset, signer });
        dests.push(dest);
    }

    // Per zone: SOA, NS, the key RRsets, and the NSEC chain.
    let mut key_sets: Vec<[Vec<Record>; 3]> = Vec::new();
    let mut chains: Vec<Vec<(Name, Record)>> = Vec::new();
    let mut types: Vec<BTreeMap<Name, Vec<RecordType>>> =
        vec![BTreeMap::new(); snapshot.zones.len()];
    for (name, kind) in &snapshot.names {
        let owned = match kind {
            NameKind::Apex(_) => vec![
                RecordType::SOA,
                RecordType::NS,
                RecordType::DNSKEY,
                RecordType::CDS,
                RecordType::CDNSKEY,
            ],
            NameKind::Domain(d, _) => {
                let domain = &snapshot.domains[*d];
                let mut t = Vec::new();
                if !domain.v4.records.is_empty() {
                    t.push(RecordType::A);
                }
                if !domain.v6.records.is_empty() {
                    t.push(RecordType::AAAA);
                }
                t
            }
            NameKind::EmptyNonTerminal(_) => continue,
        };
        if let Some(z) = snapshot.zone_of(name) {
            types[z].entry(Name::from(name)).or_default().extend(owned);
        }
    }
    for (z, zone) in snapshot.zones.iter().enumerate() {
        let apex = &apexes[z];
        let ttl = zone.soa.ttl;
        let rrset = |records: &[&Record]| {
            Rrset::of(records.iter().copied())
                .ok_or_else(|| format!("zone {apex}: a record could not be encoded"))
        };
        push(
            &mut jobs,
            &mut dests,
            Dest::Soa(z),
            zsk,
            rrset(&[&zone.soa])?,
            apex,
        );
        let ns: Vec<&Record> = zone.ns.iter().collect();
        push(&mut jobs, &mut dests, Dest::Ns(z), zsk, rrset(&ns)?, apex);
        let raw = |rtype, rdatas: Vec<Vec<u8>>| -> (Vec<Record>, Rrset) {
            let rrset = Rrset::raw(apex.clone(), rtype, ttl, rdatas);
            let records = rrset
                .rdatas
                .iter()
                .map(|r| unknown(apex.clone(), ttl, rtype, r.clone()))
                .collect();
            (records, rrset)
        };
        let (dnskey, dnskey_set) = raw(
            RecordType::DNSKEY,
            keyring.published().map(|k| k.dnskey.clone()).collect(),
        );
        let (cds, cds_set) = raw(
            RecordType::CDS,
            keyring.for_parent().map(|k| k.ds(apex)).collect(),
        );
        let (cdnskey, cdnskey_set) = raw(
            RecordType::CDNSKEY,
            keyring.for_parent().map(|k| k.dnskey.clone()).collect(),
        );
        push(
            &mut jobs,
            &mut dests,
            Dest::Keys(z, KeySet::Dnskey),
            ksk,
            dnskey_set,
            apex,
        );
        push(
            &mut jobs,
            &mut dests,
            Dest::Keys(z, KeySet::Cds),
            ksk,
            cds_set,
            apex,
        );
        push(
            &mut jobs,
            &mut dests,
            Dest::Keys(z, KeySet::Cdnskey),
            ksk,
            cdnskey_set,
            apex,
        );
        key_sets.push([dnskey, cds, cdnskey]);

        // The chain: every name with records, in canonical order, the last pointing back
        // to the apex. NSEC TTL: the SOA's minimum, which is its TTL here (RFC 9077).
        let owners: Vec<(&Name, &Vec<RecordType>)> = types[z].iter().collect();
        let mut chain = Vec::with_capacity(owners.len());
        for (i, (owner, owned)) in owners.iter().enumerate() {
            let next = owners.get(i + 1).map_or(apex, |(n, _)| *n);
            let mut t = (*owned).clone();
            t.extend([RecordType::RRSIG, RecordType::NSEC]);
            let mut rdata = canonical_name(next);
            rdata.extend_from_slice(&type_bitmap(&t));
            let nsec = unknown((*owner).clone(), ttl, RecordType::NSEC, rdata.clone());
            let set = Rrset::raw((*owner).clone(), RecordType::NSEC, ttl, vec![rdata]);
            push(&mut jobs, &mut dests, Dest::Link(z, i), zsk, set, apex);
            chain.push(((*owner).clone(), nsec));
        }
        chains.push(chain);
    }

    // Per domain and family: every set of servers routing can answer with; a family
    // whose inputs did not change keeps the sets it had.
    let mut fresh: Vec<Fresh> = Vec::new();
    let mut kept: HashMap<(String, bool), FamilyMemo> = HashMap::new();
    let mut reused = 0;
    let domain_zones: Vec<Option<usize>> = snapshot
        .domains
        .iter()
        .map(|d| snapshot.zone_of(&LowerName::from(domain_owner(d))))
        .collect();
    for ((d, domain), z) in snapshot.domains.iter_mut().enumerate().zip(domain_zones) {
        let Some(z) = z else {
            continue;
        };
        for v6 in [false, true] {
            if domain.family(v6).records.is_empty() {
                continue;
            }
            let memo_key = (domain.label.to_string(), v6);
            if let Some(memo) = cache.families.remove(&memo_key)
                && memo.inputs.describe(domain, domain.family(v6), zsk.id)
                && memo.expiration >= now.saturating_add(sign::REFRESH_BEFORE)
            {
                let family = if v6 { &mut domain.v6 } else { &mut domain.v4 };
                family.signatures = Arc::clone(&memo.sets);
                reused += memo.sets.rrsigs.len();
                kept.insert(memo_key, memo);
                continue;
            }
            fresh.push(Fresh {
                domain: d,
                v6,
                inputs: FamilyInputs::of(domain, domain.family(v6), zsk.id),
                sets: super::snapshot::SignedSets::default(),
                expiration: u32::MAX,
            });
            let fresh_at = fresh.len() - 1;
            let domain = &*domain;
            let family = domain.family(v6);
            for set in answer_sets(domain, family) {
                let records: Vec<&Record> = set.iter().map(|&i| &family.records[i]).collect();
                let rrset = Rrset::of(records.iter().copied()).ok_or_else(|| {
                    format!("domain {}: a record could not be encoded", domain.label)
                })?;
                let key: Box<[u16]> = set.iter().map(|&i| i as u16).collect();
                push(
                    &mut jobs,
                    &mut dests,
                    Dest::Answer(fresh_at, key),
                    zsk,
                    rrset,
                    &apexes[z],
                );
            }
        }
    }

    let made_before = cache.made;
    let sigs = cache.sign_all(jobs, now)?;
    let rrsigs = sigs.len() + reused;
    let mut signed: Vec<Partial> = (0..snapshot.zones.len())
        .map(|_| Partial::default())
        .collect();
    for (dest, (sig, expiration)) in dests.into_iter().zip(sigs) {
        match dest {
            Dest::Soa(z) => signed[z].soa = Some(sig),
            Dest::Ns(z) => signed[z].ns = Some(sig),
            Dest::Keys(z, set) => signed[z].keys[set as usize] = Some(sig),
            Dest::Link(z, i) => signed[z].links.push((i, sig)),
            Dest::Answer(at, key) => {
                let family = &mut fresh[at];
                family.sets.rrsigs.insert(key, sig);
                family.expiration = family.expiration.min(expiration);
            }
        }
    }
    for family in fresh {
        let sets = Arc::new(family.sets);
        let domain = &mut snapshot.domains[family.domain];
        let target = if family.v6 {
            &mut domain.v6
        } else {
            &mut domain.v4
        };
        target.signatures = Arc::clone(&sets);
        kept.insert(
            (domain.label.to_string(), family.v6),
            FamilyMemo {
                inputs: family.inputs,
                sets,
                expiration: family.expiration,
            },
        );
    }
    // Families gone from the configuration are forgotten.
    cache.families = kept;
    for (((zone, partial), [dnskey, cds, cdnskey]), chain) in snapshot
        .zones
        .iter_mut()
        .zip(signed)
        .zip(key_sets)
        .zip(chains)
    {
        let missing = || format!("zone {}: a signature is missing", zone.apex);
        let mut sigs: HashMap<usize, Arc<Record>> = partial.links.into_iter().collect();
        let [dnskey_sig, cds_sig, cdnskey_sig] = partial.keys;
        zone.signed = Some(ZoneSigned {
            soa_sig: partial.soa.ok_or_else(missing)?,
            ns_sig: partial.ns.ok_or_else(missing)?,
            dnskey,
            dnskey_sig: dnskey_sig.ok_or_else(missing)?,
            cds,
            cds_sig: cds_sig.ok_or_else(missing)?,
            cdnskey,
            cdnskey_sig: cdnskey_sig.ok_or_else(missing)?,
            chain: chain
                .into_iter()
                .enumerate()
                .map(|(i, (owner, nsec))| {
                    Ok(Link {
                        owner,
                        nsec,
                        sig: sigs.remove(&i).ok_or_else(missing)?,
                    })
                })
                .collect::<Result<_, String>>()?,
        });
    }
    Ok(Signed {
        rrsigs,
        made: cache.made - made_before,
    })
}

#[derive(Default)]
struct Partial {
    soa: Option<Arc<Record>>,
    ns: Option<Arc<Record>>,
    keys: [Option<Arc<Record>>; 3],
    links: Vec<(usize, Arc<Record>)>,
}

fn domain_owner(domain: &super::snapshot::DomainAnswers) -> Name {
    domain
        .v4
        .records
        .first()
        .or(domain.v6.records.first())
        .map_or_else(Name::root, |r| r.name.clone())
}

/// A record of a type hickory is not asked to understand, from its wire RDATA.
fn unknown(owner: Name, ttl: u32, rtype: RecordType, rdata: Vec<u8>) -> Record {
    Record::from_rdata(
        owner,
        ttl,
        RData::Unknown {
            code: rtype,
            rdata: NULL::with(rdata),
        },
    )
}

/// The keys a zone's parent needs, in presentation form.
pub fn ds_records<'k>(keyring: &'k Keyring, apex: &Name) -> Vec<(&'k ZoneKey, String, String)> {
    keyring
        .for_parent()
        .map(|k| (k, k.ds_text(apex), k.dnskey_text(apex)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::snapshot::{DomainAnswers, Family};
    use crate::model::routing::Candidate;
    use proptest::prelude::*;

    const ALGORITHMS: [Algorithm; 6] = [
        Algorithm::RoundRobin,
        Algorithm::Weighted,
        Algorithm::Failover,
        Algorithm::Geolocation,
        Algorithm::Latency,
        Algorithm::LearnedLatency,
    ];

    proptest! {
        /// Whatever a DO=1 query's routing decides (any entropy, located region, learned
        /// region) is one of the sets signed ahead: no signature on the query path.
        #[test]
        fn every_decision_is_a_set_signed_ahead(
            algorithm in 0..ALGORITHMS.len(),
            servers in proptest::collection::vec((0..3usize, any::<bool>(), 0..4u32, proptest::option::of((1..200u64, 0..5u32))), 1..14),
            max_records in 1..6usize,
            min_samples in 0..4u32,
            policy in 0..3usize,
            queries in proptest::collection::vec((any::<u64>(), proptest::option::of(0..3usize), proptest::option::of(0..3usize)), 1..40),
        ) {
            let candidates: Vec<Candidate> = servers
                .iter()
                .map(|&(region_pos, healthy, weight, rtt)| Candidate {
                    region_pos,
                    healthy,
                    weight,
                    rtt: rtt.map(|(ms, samples)| (std::time::Duration::from_millis(ms), samples)),
                })
                .collect();
            let records = (0..candidates.len())
                .map(|i| unknown(Name::root(), 1, RecordType::A, vec![10, 0, 0, i as u8]))
                .collect();
            let family = Family {
                records,
                healthy: crate::model::routing::healthy_indices(&candidates),
                last_healthy: (0..candidates.len()).step_by(2).collect(),
                candidates,
                signatures: Arc::default(),
            };
            let domain = DomainAnswers {
                label: metrics::SharedString::const_str("d"),
                algorithm: ALGORITHMS[algorithm],
                max_records,
                policy: [AllDownPolicy::ServFail, AllDownPolicy::ReturnLastHealthy, AllDownPolicy::ReturnAll][policy],
                regions: vec![0, 1, 2],
                max_latency: Some(std::time::Duration::from_millis(150)),
                min_samples,
                v4: Family::default(),
                v6: Family::default(),
            };
            let sets = answer_sets(&domain, &family);
            for (entropy, client_region, learned_region) in queries {
                let entropy = if domain.algorithm == Algorithm::Weighted { entropy % SIGNED_DRAWS } else { entropy };
                let query = Query {
                    max_records,
                    entropy,
                    client_region,
                    client_prefix: 24,
                    max_latency: domain.max_latency,
                    min_samples,
                    learned_region,
                    learned_prefix: 24,
                };
                let mut chosen = decide_among(domain.algorithm, &family.candidates, &family.healthy, &query).chosen;
                if chosen.is_empty() {
                    // As `handler::choose` falls back.
                    chosen = crate::dns::handler::all_down(&domain, &family);
                }
                chosen.sort_unstable();
                if !chosen.is_empty() {
                    prop_assert!(sets.contains(&chosen), "{:?} {:?} not in {:?}", domain.algorithm, chosen, sets);
                }
            }
        }
    }

    #[test]
    fn an_unchanged_family_keeps_its_signatures_and_a_changed_one_is_signed_anew() {
        use crate::model::machine::{Machine, Request};
        use crate::model::view::View;
        let yaml = "overwatch:\n  validation: {enabled: false}\ndns:\n  zones: [t.test]\nregions:\n  - {name: a, servers: [{address: 192.0.2.1}, {address: 192.0.2.2}, {address: 192.0.2.3}]}\n  - {name: b, servers: [{address: 198.51.100.1}, {address: 198.51.100.2}]}\ndomains:\n  - {name: x.t.test, routing_algorithm: round-robin, regions: [a], max_records: 2}\n  - {name: y.t.test, routing_algorithm: round-robin, regions: [b], max_records: 1}\n";
        let view = View::from_config(
            Arc::new(crate::config::parse("t.yaml", yaml).expect("config")),
            None,
        );
        let mut machine = Machine::default();
        let first = lifecycle::next_step(
            &machine.dnssec_keys,
            &crate::config::DnssecSettings::default(),
            0,
            0,
        )
        .expect("keys")
        .expect("first");
        machine.apply(&Request::V1(first));
        let keyring = Arc::new(Keyring::read(&machine.dnssec_keys).0);
        let mut cache = SignatureCache::default();
        let now = 1_800_000_000;
        let build = |view: &View, cache: &mut SignatureCache, at| {
            let (snapshot, signed) = DnsSnapshot::build_signed(view, &keyring, cache, at);
            (snapshot, signed.expect("signed"))
        };
        let (one, signed) = build(&view, &mut cache, now);
        // x: 3 rotations of 2; y: 2 of 1; SOA, NS, DNSKEY, CDS, CDNSKEY, 3 NSEC.
        assert_eq!((signed.rrsigs, signed.made), (13, 13));
        let (two, signed) = build(&view, &mut cache, now + 10);
        assert_eq!(
            (signed.rrsigs, signed.made),
            (13, 1),
            "only the SOA (its serial moved)"
        );
        for d in 0..2 {
            assert!(Arc::ptr_eq(
                &one.domains[d].v4.signatures,
                &two.domains[d].v4.signatures
            ));
        }
        let mut down = view.clone();
        let at = down
            .backends
            .iter()
            .position(|b| b.key.address.to_string() == "192.0.2.1")
            .expect("server");
        down.backends[at].effective = crate::model::status::Effective::Unhealthy;
        let (three, signed) = build(&down, &mut cache, now + 20);
        // x now has one set (its two healthy servers, a set it had signed before, so the
        // cache has it); y is untouched; the SOA again.
        assert_eq!((signed.rrsigs, signed.made), (11, 1));
        assert!(!Arc::ptr_eq(
            &two.domains[0].v4.signatures,
            &three.domains[0].v4.signatures
        ));
        assert!(Arc::ptr_eq(
            &two.domains[1].v4.signatures,
            &three.domains[1].v4.signatures
        ));
        assert_eq!(three.domains[0].v4.signatures.rrsigs.len(), 1);
        // Near the signatures' end, everything is signed again.
        assert_eq!(
            cache.next_refresh(),
            Some(now + sign::VALIDITY - sign::REFRESH_BEFORE)
        );
        let (_, signed) = build(
            &down,
            &mut cache,
            now + sign::VALIDITY - sign::REFRESH_BEFORE + 1,
        );
        assert_eq!(signed.made, 11);
    }

    #[test]
    fn a_family_larger_than_the_fast_path_finds_its_signature_too() {
        let servers: Vec<String> = (1..=40)
            .map(|i| format!("{{address: 10.0.0.{i}}}"))
            .collect();
        let yaml = format!(
            "overwatch:\n  validation: {{enabled: false}}\ndns:\n  zones: [t.test]\nregions:\n  - {{name: a, servers: [{}]}}\ndomains:\n  - {{name: big.t.test, routing_algorithm: failover, regions: [a], max_records: 40}}\n",
            servers.join(", ")
        );
        let snapshot =
            crate::dns::test_support::signed_snapshot("t.yaml", &yaml, 13, 1_800_000_000);
        let family = &snapshot.domains[0].v4;
        let all: Vec<usize> = (0..40).rev().collect();
        assert!(
            family.signature(&all).is_some(),
            "the one set of 40, in any order"
        );
        assert!(
            family.signature(&all[..39]).is_none(),
            "a set routing never gives"
        );
    }

    #[test]
    fn type_bitmaps_follow_rfc_4034() {
        // RFC 4034 §4.3: A MX RRSIG NSEC TYPE1234.
        let bitmap = type_bitmap(&[
            RecordType::A,
            RecordType::MX,
            RecordType::RRSIG,
            RecordType::NSEC,
            RecordType::Unknown(1234),
        ]);
        let mut expected = vec![0x00, 0x06, 0x40, 0x01, 0x00, 0x00, 0x00, 0x03, 0x04, 0x1b];
        expected.extend(std::iter::repeat_n(0, 26));
        expected.push(0x20);
        assert_eq!(bitmap, expected);
    }
}
