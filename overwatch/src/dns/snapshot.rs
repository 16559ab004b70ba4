//! The immutable DNS snapshot: everything a query needs, precomputed from a `View` —
//! records built, names classified, candidates with their health. Rebuilt only when the
//! view changes; queries never compute more than a routing decision.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record};
use metrics::SharedString;

use crate::config::{Algorithm, AllDownPolicy, GeoSettings, RegionSettings, is_within};
use crate::model::geo::GeoDb;
use crate::model::routing::{Candidate, healthy_indices};
use crate::model::view::View;

/// SOA timers (seconds): refresh, retry, expire. There are no secondaries to use them;
/// they are the conventional values.
const SOA_REFRESH: i32 = 3600;
const SOA_RETRY: i32 = 600;
const SOA_EXPIRE: i32 = 86_400;

/// What a name in one of our zones is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A zone apex (SOA, NS).
    Apex(usize),
    /// A load-balanced domain (A, AAAA), and its zone.
    Domain(usize, usize),
    /// A name that exists only because a domain is below it (RFC 8020): NODATA, not NXDOMAIN.
    EmptyNonTerminal(usize),
}

/// One zone's fixed records.
#[derive(Debug)]
pub struct Zone {
    /// Apex, as queries name it (lower case).
    pub apex: LowerName,
    /// Apex as a metrics label (shared: no allocation per query).
    pub label: SharedString,
    /// The SOA record.
    pub soa: Record,
    /// NS records at the apex.
    pub ns: Vec<Record>,
    /// Signatures, keys and the NSEC chain, when the zone is signed.
    pub signed: Option<super::dnssec::ZoneSigned>,
}

/// One address family of a domain.
#[derive(Debug, Default)]
pub struct Family {
    /// One record per server, in the domain's region priority order (then config order).
    pub records: Vec<Record>,
    /// Routing view of the same servers.
    pub candidates: Vec<Candidate>,
    /// Indexes of the candidates in rotation now: computed here, not per query.
    pub healthy: Vec<usize>,
    /// Indexes of the servers that were in rotation most recently.
    pub last_healthy: Vec<usize>,
    /// When signed: the RRSIG of every set of servers routing can answer with.
    pub signatures: Arc<SignedSets>,
}

/// The RRSIGs of a family's answer sets, by the set's indexes (sorted). Shared by every
/// snapshot in which the family is unchanged, with the fast path's rendering of them,
/// made once.
#[derive(Debug, Default)]
pub struct SignedSets {
    /// RRSIG by set.
    pub rrsigs: HashMap<Box<[u16]>, Arc<Record>>,
    /// The same, as the fast path writes them (`None`: could not be rendered).
    pub(crate) wire: std::sync::OnceLock<Option<RenderedSets>>,
}

/// RRSIGs by set in wire form, without their owner name (see `fast::FamilyWire`).
pub(crate) type RenderedSets = HashMap<Box<[u16]>, Box<[u8]>>;

impl Family {
    /// The RRSIG over the records `chosen` (in any order), if signed.
    pub fn signature(&self, chosen: &[usize]) -> Option<&Record> {
        if self.signatures.rrsigs.is_empty() {
            return None;
        }
        if chosen.len() > crate::model::routing::INLINE_PICKS {
            // A large family: the hickory path answers it, and may allocate.
            let mut key: Vec<u16> = chosen.iter().map(|&i| i as u16).collect();
            key.sort_unstable();
            return self.signatures.rrsigs.get(&*key).map(|r| &**r);
        }
        let mut key = [0u16; crate::model::routing::INLINE_PICKS];
        for (k, &i) in key.iter_mut().zip(chosen) {
            *k = i as u16;
        }
        let key = &mut key[..chosen.len()];
        key.sort_unstable();
        self.signatures.rrsigs.get(&*key).map(|r| &**r)
    }
}

/// One domain, ready to answer.
#[derive(Debug)]
pub struct DomainAnswers {
    /// Name as a metrics label (shared: no allocation per query).
    pub label: SharedString,
    /// Routing algorithm.
    pub algorithm: Algorithm,
    /// Most records per answer.
    pub max_records: usize,
    /// All-unhealthy policy.
    pub policy: AllDownPolicy,
    /// Region indexes in priority order (for geolocation).
    pub regions: Vec<usize>,
    /// `latency` settings.
    pub max_latency: Option<std::time::Duration>,
    /// `latency` settings.
    pub min_samples: u32,
    /// A records.
    pub v4: Family,
    /// AAAA records.
    pub v6: Family,
}

impl DomainAnswers {
    /// The AAAA family when `v6`, else the A family.
    pub fn family(&self, v6: bool) -> &Family {
        if v6 { &self.v6 } else { &self.v4 }
    }
}

/// The snapshot.
#[derive(Debug)]
pub struct DnsSnapshot {
    /// Zones, longest apex first (so the most specific zone matches first).
    pub zones: Vec<Zone>,
    /// Every name that exists in our zones, keyed as queries carry it.
    pub names: HashMap<LowerName, NameKind>,
    /// Domains by index.
    pub domains: Vec<DomainAnswers>,
    /// Geolocation inputs.
    pub geo: GeoSettings,
    /// The database, if any.
    pub geo_db: Option<Arc<GeoDb>>,
    /// Regions (for geolocation).
    pub regions: Vec<RegionSettings>,
    /// The view generation this was built from.
    pub generation: u64,
    /// Learned client latency (`learned_latency`).
    pub latency: Arc<crate::model::latency::LatencyIndex>,
    /// Wire-format pieces for the UDP fast path.
    pub(crate) fast: super::fast::FastTables,
    /// The node holds the cluster's state; when false every in-zone query gets SERVFAIL
    /// (see `View::synced`).
    pub synced: bool,
    /// The keys that signed this snapshot (for a set of servers not signed ahead).
    pub keyring: Option<Arc<super::dnssec::keys::Keyring>>,
}

impl DnsSnapshot {
    /// Whether a snapshot built from `built_from` answers exactly as one built from `next`
    /// would: the same settings, geolocation database and learned-latency index (by
    /// identity: each is replaced, never changed in place), the same last-healthy sets,
    /// and the same backends as `build` reads them (address, region, in rotation, weight,
    /// smoothed RTT). A heartbeat, a last-seen time, a reason or a transition that comes
    /// back through Raft already shown changes none of these.
    pub fn same_inputs(built_from: &View, next: &View) -> bool {
        let same_geo = match (&built_from.geo, &next.geo) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        // The service and port decide which domains a backend answers for.
        fn answered(
            b: &crate::model::view::BackendView,
        ) -> (
            IpAddr,
            u16,
            &str,
            usize,
            bool,
            u32,
            Option<std::time::Duration>,
            u32,
        ) {
            (
                b.key.address,
                b.key.port,
                b.key.service.as_str(),
                b.region,
                b.effective.in_rotation(),
                b.weight,
                b.check.srtt,
                b.check.samples,
            )
        }
        Arc::ptr_eq(&built_from.settings, &next.settings)
            && built_from.synced == next.synced
            && built_from.replicated.dnssec_keys == next.replicated.dnssec_keys
            && same_geo
            && Arc::ptr_eq(&built_from.latency, &next.latency)
            && built_from.last_healthy == next.last_healthy
            && built_from.backends.len() == next.backends.len()
            && built_from
                .backends
                .iter()
                .zip(&next.backends)
                .all(|(a, b)| answered(a) == answered(b))
    }

    /// Builds the snapshot for a view, unsigned.
    pub fn build(view: &View) -> DnsSnapshot {
        DnsSnapshot::build_at(view, unix_now())
    }

    /// [`DnsSnapshot::build`] at `now` (Unix seconds: the SOA serial).
    pub fn build_at(view: &View, now: u32) -> DnsSnapshot {
        let mut snapshot = DnsSnapshot::build_unrendered(view, now);
        snapshot.render();
        snapshot
    }

    /// Builds the snapshot for a view, signed with `keyring` (when it has active keys)
    /// through `cache` at `now` (Unix seconds). A signing failure leaves the snapshot
    /// unsigned and is returned beside it.
    pub fn build_signed(
        view: &View,
        keyring: &Arc<super::dnssec::keys::Keyring>,
        cache: &mut super::dnssec::sign::SignatureCache,
        now: u32,
    ) -> (DnsSnapshot, Result<super::dnssec::Signed, String>) {
        let mut snapshot = DnsSnapshot::build_unrendered(view, now);
        let signed = if view.synced {
            super::dnssec::sign_snapshot(&mut snapshot, keyring, cache, now)
        } else {
            Ok(super::dnssec::Signed::default())
        };
        if signed.is_ok() {
            snapshot.keyring = Some(keyring.clone());
        } else {
            for zone in &mut snapshot.zones {
                zone.signed = None;
            }
            for domain in &mut snapshot.domains {
                domain.v4.signatures = Arc::default();
                domain.v6.signatures = Arc::default();
            }
        }
        snapshot.render();
        (snapshot, signed)
    }

    /// Renders the fast path's tables (after signing: they carry the signatures).
    fn render(&mut self) {
        // Not synced: nothing for the fast path, every query goes to the path that
        // answers SERVFAIL.
        if self.synced {
            self.fast = super::fast::FastTables::build(&self.zones, &self.names, &self.domains);
        }
    }

    /// Whether answers to DO=1 queries in zone `z` carry signatures.
    pub fn signed(&self, z: usize) -> bool {
        self.zones.get(z).is_some_and(|zone| zone.signed.is_some())
    }

    fn build_unrendered(view: &View, now: u32) -> DnsSnapshot {
        let settings = &view.settings;
        let serial = now.max(1);
        let mut zones: Vec<(usize, Zone)> = settings
            .dns
            .zones
            .iter()
            .enumerate()
            .map(|(i, z)| {
                let apex = fqdn(&z.apex);
                let ns_names: Vec<Name> = z.nameservers.iter().map(|n| fqdn(n)).collect();
                let mname = ns_names.first().cloned().unwrap_or_else(|| apex.clone());
                let soa = SOA::new(
                    mname,
                    fqdn(&z.hostmaster),
                    serial,
                    SOA_REFRESH,
                    SOA_RETRY,
                    SOA_EXPIRE,
                    z.ttl,
                );
                let zone = Zone {
                    label: SharedString::from_shared(Arc::from(z.apex.as_str())),
                    soa: Record::from_rdata(apex.clone(), z.ttl, RData::SOA(soa)),
                    apex: LowerName::from(apex.clone()),
                    ns: ns_names
                        .into_iter()
                        .map(|n| Record::from_rdata(apex.clone(), z.ttl, RData::NS(NS(n))))
                        .collect(),
                    signed: None,
                };
                (i, zone)
            })
            .collect();
        let mut names = HashMap::new();
        for (i, zone) in &zones {
            names.insert(zone.apex.clone(), NameKind::Apex(*i));
        }
        let lower = |name: &str| LowerName::from(fqdn(name));
        let mut domains = Vec::new();
        for (d, domain) in settings.domains.iter().enumerate() {
            let zone_apex = &settings.dns.zones[domain.zone].apex;
            // Every name between the domain and its apex exists (empty non-terminals).
            let mut parent = domain.name.as_str();
            while let Some((_, rest)) = parent.split_once('.') {
                if !is_within(rest, zone_apex) || rest == zone_apex.as_str() {
                    break;
                }
                names
                    .entry(lower(rest))
                    .or_insert(NameKind::EmptyNonTerminal(domain.zone));
                parent = rest;
            }
            names.insert(lower(&domain.name), NameKind::Domain(d, domain.zone));

            let owner = fqdn(&domain.name);
            let last = view.last_healthy.get(&domain.name);
            let (mut v4, mut v6) = (Family::default(), Family::default());
            // Region by region in the domain's priority order: routing relies on it.
            for (region_pos, region) in domain.regions.iter().enumerate() {
                for b in view.backends.iter().filter(|b| {
                    b.region == *region
                        && settings.serves(
                            domain,
                            b.region,
                            &b.key.service,
                            b.key.address,
                            b.key.port,
                        )
                }) {
                    let family = if b.key.address.is_ipv4() {
                        &mut v4
                    } else {
                        &mut v6
                    };
                    let rdata = match b.key.address {
                        IpAddr::V4(ip) => RData::A(A(ip)),
                        IpAddr::V6(ip) => RData::AAAA(AAAA(ip)),
                    };
                    if last.is_some_and(|l| l.contains(&b.key.address)) {
                        family.last_healthy.push(family.records.len());
                    }
                    family
                        .records
                        .push(Record::from_rdata(owner.clone(), domain.ttl, rdata));
                    family.candidates.push(Candidate {
                        region_pos,
                        healthy: b.effective.in_rotation(),
                        weight: b.weight,
                        rtt: b.check.srtt.map(|rtt| (rtt, b.check.samples)),
                    });
                }
            }
            v4.healthy = healthy_indices(&v4.candidates);
            v6.healthy = healthy_indices(&v6.candidates);
            domains.push(DomainAnswers {
                label: SharedString::from_shared(Arc::from(domain.name.as_str())),
                algorithm: domain.algorithm,
                max_records: domain.max_records,
                policy: domain.when_all_unhealthy,
                regions: domain.regions.clone(),
                max_latency: domain.max_latency,
                min_samples: domain.min_samples,
                v4,
                v6,
            });
        }
        zones.sort_by_key(|(_, z)| std::cmp::Reverse(z.apex.num_labels()));
        let zones: Vec<Zone> = zones.into_iter().map(|(_, z)| z).collect();
        DnsSnapshot {
            fast: super::fast::FastTables::default(),
            keyring: None,
            synced: view.synced,
            zones,
            names,
            domains,
            geo: settings.geo.clone(),
            geo_db: view.geo.clone(),
            regions: settings.regions.clone(),
            generation: view.generation,
            latency: view.latency.clone(),
        }
    }

    /// The zone a query name belongs to (the most specific one), as a `zones` index.
    pub fn zone_of(&self, name: &LowerName) -> Option<usize> {
        self.zones.iter().position(|z| z.apex.zone_of(name))
    }
}

fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() as u32)
}

/// A validated name as an absolute DNS name. Names were checked by config validation.
fn fqdn(name: &str) -> Name {
    Name::from_ascii(format!("{name}.")).unwrap_or_else(|_| Name::root())
}
