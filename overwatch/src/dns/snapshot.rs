//! The immutable DNS snapshot: everything a query needs, precomputed from a `View` —
//! records built, names classified, candidates with their health. Rebuilt only when the
//! view changes; queries never compute more than a routing decision.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_proto::rr::{Name, RData, Record};

use crate::config::{Algorithm, AllDownPolicy, GeoSettings, RegionSettings, is_within};
use crate::geo::GeoDb;
use crate::routing::Candidate;
use crate::state::View;

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
    /// Apex, lower case, no trailing dot.
    pub apex: String,
    /// The SOA record.
    pub soa: Record,
    /// NS records at the apex.
    pub ns: Vec<Record>,
}

/// One address family of a domain.
#[derive(Debug, Default)]
pub struct Family {
    /// One record per server, in config order.
    pub records: Vec<Record>,
    /// Routing view of the same servers.
    pub candidates: Vec<Candidate>,
    /// Indexes of the servers that were in rotation most recently.
    pub last_healthy: Vec<usize>,
}

/// One domain, ready to answer.
#[derive(Debug)]
pub struct DomainAnswers {
    /// Name (also the metrics label).
    pub name: String,
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

/// The snapshot.
#[derive(Debug)]
pub struct DnsSnapshot {
    /// Zones, longest apex first (so the most specific zone matches first).
    pub zones: Vec<Zone>,
    /// Every name that exists in our zones.
    pub names: HashMap<String, NameKind>,
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
}

impl DnsSnapshot {
    /// Builds the snapshot for a view.
    pub fn build(view: &View) -> DnsSnapshot {
        let settings = &view.settings;
        let serial = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_secs() as u32);
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
                    apex: z.apex.clone(),
                    soa: Record::from_rdata(apex.clone(), z.ttl, RData::SOA(soa)),
                    ns: ns_names
                        .into_iter()
                        .map(|n| Record::from_rdata(apex.clone(), z.ttl, RData::NS(NS(n))))
                        .collect(),
                };
                (i, zone)
            })
            .collect();
        let mut names = HashMap::new();
        for (i, zone) in &zones {
            names.insert(zone.apex.clone(), NameKind::Apex(*i));
        }
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
                    .entry(rest.to_owned())
                    .or_insert(NameKind::EmptyNonTerminal(domain.zone));
                parent = rest;
            }
            names.insert(domain.name.clone(), NameKind::Domain(d, domain.zone));

            let owner = fqdn(&domain.name);
            let last = view.last_healthy.get(&domain.name);
            let (mut v4, mut v6) = (Family::default(), Family::default());
            for b in view
                .backends
                .iter()
                .filter(|b| domain.regions.contains(&b.region))
            {
                let region_pos = domain
                    .regions
                    .iter()
                    .position(|r| *r == b.region)
                    .unwrap_or(0);
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
            // Candidates must follow the domain's region priority, not config order.
            sort_by_region(&mut v4);
            sort_by_region(&mut v6);
            domains.push(DomainAnswers {
                name: domain.name.clone(),
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
        zones.sort_by_key(|(_, z)| std::cmp::Reverse(z.apex.len()));
        DnsSnapshot {
            zones: zones.into_iter().map(|(_, z)| z).collect(),
            names,
            domains,
            geo: settings.geo.clone(),
            geo_db: view.geo.clone(),
            regions: settings.regions.clone(),
            generation: view.generation,
        }
    }

    /// The zone a name (lower case, no trailing dot) belongs to.
    pub fn zone_of(&self, name: &str) -> Option<&Zone> {
        self.zones.iter().find(|z| is_within(name, &z.apex))
    }
}

fn sort_by_region(family: &mut Family) {
    let mut order: Vec<usize> = (0..family.records.len()).collect();
    order.sort_by_key(|&i| family.candidates[i].region_pos); // stable: config order within a region
    let position: Vec<usize> = {
        let mut p = vec![0; order.len()];
        for (new, &old) in order.iter().enumerate() {
            p[old] = new;
        }
        p
    };
    family.records = order.iter().map(|&i| family.records[i].clone()).collect();
    family.candidates = order
        .iter()
        .map(|&i| family.candidates[i].clone())
        .collect();
    family.last_healthy = family.last_healthy.iter().map(|&i| position[i]).collect();
    family.last_healthy.sort_unstable();
}

/// A validated name as an absolute DNS name. Names were checked by config validation.
fn fqdn(name: &str) -> Name {
    Name::from_ascii(format!("{name}.")).unwrap_or_else(|_| Name::root())
}
