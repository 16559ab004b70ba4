//! What agents learned about client latency: per (client subnet, region) the RTT merged
//! over the region's agents, with expiry and a memory bound; and the read-only index DNS
//! consults for `learned_latency`.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opengslb_proto::subnet::Subnet;
use opengslb_proto::wire::LatencyReport;

/// A resolver asked, with a learned ECS subnet, and the answer went to `region`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolverSeen {
    /// The resolver's address (the query's source).
    pub resolver: IpAddr,
    /// Index into `settings.regions`.
    pub region: usize,
}

/// An agent's figure for a subnet not refreshed for this long is dropped. Agents re-send
/// every subnet at least every ten report intervals (5 minutes by default).
pub const ENTRY_TTL: Duration = Duration::from_secs(3600);
/// Most (subnet, region) cells kept; new subnets beyond it are refused until some expire.
pub const MAX_CELLS: usize = 500_000;

/// One agent's figure for a cell: 16 bytes, names interned.
#[derive(Debug, Clone, Copy)]
struct Figure {
    agent: u32,
    rtt_us: u32,
    samples: u32,
    /// Seconds since the epoch.
    at: u32,
}

/// The table, owned by the state owner. Region and agent names are interned, so a cell is
/// its key and one or a few 16-byte figures (most subnets are reached by one agent per
/// region).
#[derive(Debug, Default)]
pub struct LatencyTable {
    cells: HashMap<(Subnet, u16), smallvec::SmallVec<[Figure; 1]>>,
    regions: Vec<String>,
    agents: Vec<String>,
    agent_ids: HashMap<String, u32>,
    refused: u64,
}

/// One merged cell, for the API and the index.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    /// Client subnet.
    pub subnet: Subnet,
    /// Region name.
    pub region: Arc<str>,
    /// Sample-weighted mean RTT of the region's agents.
    pub rtt: Duration,
    /// Samples across them.
    pub samples: u32,
    /// Newest contribution.
    pub last_updated: SystemTime,
    /// Agents contributing.
    pub agents: u16,
}

fn epoch_secs(t: SystemTime) -> u32 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

impl LatencyTable {
    fn intern_region(&mut self, region: &str) -> u16 {
        match self.regions.iter().position(|r| r == region) {
            Some(i) => i as u16,
            None => {
                self.regions.push(region.to_owned());
                (self.regions.len() - 1) as u16
            }
        }
    }

    fn intern_agent(&mut self, agent_id: &str) -> u32 {
        if let Some(&i) = self.agent_ids.get(agent_id) {
            return i;
        }
        let i = self.agents.len() as u32;
        self.agents.push(agent_id.to_owned());
        self.agent_ids.insert(agent_id.to_owned(), i);
        i
    }

    /// Takes in one verified report part from `agent_id` in `region`.
    pub fn apply(&mut self, agent_id: &str, report: &LatencyReport, now: SystemTime) {
        let region = self.intern_region(&report.region);
        let agent = self.intern_agent(agent_id);
        let at = epoch_secs(now);
        for sample in &report.samples {
            let key = (sample.subnet, region);
            if !self.cells.contains_key(&key) && self.cells.len() >= MAX_CELLS {
                self.refused += 1;
                continue;
            }
            let figure = Figure {
                agent,
                rtt_us: sample.rtt_us,
                samples: sample.samples,
                at,
            };
            let figures = self.cells.entry(key).or_default();
            match figures.iter_mut().find(|f| f.agent == agent) {
                Some(f) => *f = figure,
                None => figures.push(figure),
            }
        }
    }

    /// Drops figures older than [`ENTRY_TTL`] and what agents no longer pinned said.
    pub fn expire(&mut self, now: SystemTime, pinned: &dyn Fn(&str) -> bool) {
        let oldest = epoch_secs(now).saturating_sub(ENTRY_TTL.as_secs() as u32);
        let gone: Vec<bool> = self.agents.iter().map(|a| !pinned(a)).collect();
        self.cells.retain(|_, figures| {
            figures.retain(|f| !gone[f.agent as usize] && f.at > oldest);
            !figures.is_empty()
        });
        self.cells.shrink_to_fit();
    }

    /// New subnets refused at the bound so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Cells now.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// Every cell, merged across agents, sorted by subnet then region.
    pub fn merged(&self) -> Vec<Merged> {
        let names: Vec<Arc<str>> = self.regions.iter().map(|r| Arc::from(r.as_str())).collect();
        let mut out: Vec<Merged> = self
            .cells
            .iter()
            .map(|((subnet, region), figures)| {
                let samples: u64 = figures.iter().map(|f| u64::from(f.samples)).sum();
                let weight = |f: &Figure| f64::from(f.samples.max(1));
                let weighted: f64 = figures
                    .iter()
                    .map(|f| f64::from(f.rtt_us) * weight(f))
                    .sum();
                let weights: f64 = figures.iter().map(weight).sum();
                Merged {
                    subnet: *subnet,
                    region: Arc::clone(&names[*region as usize]),
                    rtt: Duration::from_micros((weighted / weights.max(1.0)).round() as u64),
                    samples: u32::try_from(samples).unwrap_or(u32::MAX),
                    last_updated: SystemTime::UNIX_EPOCH
                        + Duration::from_secs(u64::from(
                            figures.iter().map(|f| f.at).max().unwrap_or(0),
                        )),
                    agents: figures.len() as u16,
                }
            })
            .collect();
        out.sort_by(|a, b| (a.subnet, &a.region).cmp(&(b.subnet, &b.region)));
        out
    }
}

/// One region's learned RTT for a subnet, as DNS reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionRtt {
    /// Index into `settings.regions`.
    pub region: usize,
    /// Merged RTT.
    pub rtt: Duration,
    /// Samples.
    pub samples: u32,
}

/// Immutable lookup structure: the learned prefix lengths per family, longest first, and
/// the cells by subnet. A query masks the client address once per prefix length in use
/// (normally one), so a lookup is one or two hash probes.
#[derive(Debug, Default)]
pub struct LatencyIndex {
    v4_prefixes: Vec<u8>,
    v6_prefixes: Vec<u8>,
    by_subnet: HashMap<Subnet, smallvec::SmallVec<[RegionRtt; 2]>>,
    resolvers: HashMap<IpAddr, usize>,
}

impl LatencyIndex {
    /// Builds the index from merged cells; `region_index` maps names to `settings.regions`.
    pub fn build(merged: &[Merged], region_index: &dyn Fn(&str) -> Option<usize>) -> LatencyIndex {
        let mut by_subnet: HashMap<Subnet, smallvec::SmallVec<[RegionRtt; 2]>> = HashMap::new();
        let (mut v4, mut v6) = (BTreeSet::new(), BTreeSet::new());
        for m in merged {
            let Some(region) = region_index(&m.region) else {
                continue;
            };
            if m.subnet.addr.is_ipv4() {
                v4.insert(m.subnet.prefix);
            } else {
                v6.insert(m.subnet.prefix);
            }
            by_subnet.entry(m.subnet).or_default().push(RegionRtt {
                region,
                rtt: m.rtt,
                samples: m.samples,
            });
        }
        LatencyIndex {
            v4_prefixes: v4.into_iter().rev().collect(),
            v6_prefixes: v6.into_iter().rev().collect(),
            by_subnet,
            resolvers: HashMap::new(),
        }
    }

    /// Adds the resolvers mapped to one region ([`Resolvers::mapped`]).
    pub fn with_resolvers(mut self, resolvers: HashMap<IpAddr, usize>) -> LatencyIndex {
        self.resolvers = resolvers;
        self
    }

    /// The region a resolver's ECS clients all went to, if it is mapped.
    pub fn resolver_region(&self, resolver: IpAddr) -> Option<usize> {
        self.resolvers.get(&resolver).copied()
    }

    /// The most specific learned subnet containing `ip`, with its regions.
    pub fn lookup(&self, ip: IpAddr) -> Option<(&[RegionRtt], u8)> {
        let ip = match ip {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let prefixes = if ip.is_ipv4() {
            &self.v4_prefixes
        } else {
            &self.v6_prefixes
        };
        prefixes.iter().find_map(|&p| {
            self.by_subnet
                .get(&Subnet::of(ip, p, p))
                .map(|cells| (cells.as_slice(), p))
        })
    }

    /// Subnets indexed.
    pub fn len(&self) -> usize {
        self.by_subnet.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.by_subnet.is_empty()
    }
}

/// Learned decisions per resolver, to route a resolver that sends no ECS like the clients
/// it served with ECS: only if at least [`Resolvers::MIN_SEEN`] sampled decisions all went
/// to one region. Bounded; a resolver not seen for [`ENTRY_TTL`] is forgotten.
#[derive(Debug, Default)]
pub struct Resolvers {
    seen: HashMap<IpAddr, Tally>,
}

#[derive(Debug, Clone, Copy)]
struct Tally {
    region: usize,
    count: u32,
    mixed: bool,
    last: std::time::Instant,
}

impl Resolvers {
    /// Sampled decisions needed before a resolver is mapped.
    pub const MIN_SEEN: u32 = 5;
    /// Most resolvers tracked.
    pub const MAX: usize = 100_000;

    /// Records one decision; true when the resolver's mapping changed.
    pub fn record(&mut self, resolver: IpAddr, region: usize, now: std::time::Instant) -> bool {
        if !self.seen.contains_key(&resolver) && self.seen.len() >= Self::MAX {
            return false;
        }
        let t = self.seen.entry(resolver).or_insert(Tally {
            region,
            count: 0,
            mixed: false,
            last: now,
        });
        let before = t.count >= Self::MIN_SEEN && !t.mixed;
        t.mixed |= t.region != region;
        t.count = t.count.saturating_add(1);
        t.last = now;
        before != (t.count >= Self::MIN_SEEN && !t.mixed)
    }

    /// Forgets resolvers quiet for [`ENTRY_TTL`]; true if a mapped one went.
    pub fn expire(&mut self, now: std::time::Instant) -> bool {
        let before = self.mapped().len();
        self.seen
            .retain(|_, t| now.duration_since(t.last) < ENTRY_TTL);
        self.mapped().len() != before
    }

    /// Resolvers whose sampled decisions all went to one region.
    pub fn mapped(&self) -> HashMap<IpAddr, usize> {
        self.seen
            .iter()
            .filter(|(_, t)| t.count >= Self::MIN_SEEN && !t.mixed)
            .map(|(ip, t)| (*ip, t.region))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opengslb_proto::wire::LatencySample;

    fn report(region: &str, samples: &[(&str, u8, u32, u32)]) -> LatencyReport {
        LatencyReport {
            agent_id: format!("{region}-000000000000"),
            region: region.into(),
            version: 1,
            full: false,
            part: 0,
            parts: 1,
            samples: samples
                .iter()
                .map(|(ip, prefix, rtt_us, n)| LatencySample {
                    subnet: Subnet::of(ip.parse().expect("ip"), *prefix, *prefix),
                    rtt_us: *rtt_us,
                    samples: *n,
                })
                .collect(),
        }
    }

    #[test]
    fn agents_of_a_region_merge_weighted_by_samples_and_expire() {
        let mut t = LatencyTable::default();
        let t0 = SystemTime::now();
        t.apply("eu-a", &report("eu", &[("10.0.0.0", 24, 10_000, 3)]), t0);
        t.apply("eu-b", &report("eu", &[("10.0.0.0", 24, 20_000, 1)]), t0);
        t.apply("us-a", &report("us", &[("10.0.0.0", 24, 90_000, 5)]), t0);
        let m = t.merged();
        assert_eq!(m.len(), 2);
        let eu = m.iter().find(|c| &*c.region == "eu").expect("eu");
        assert_eq!(eu.rtt, Duration::from_micros(12_500));
        assert_eq!((eu.samples, eu.agents), (4, 2));
        assert_eq!(&*eu.region, "eu");
        t.expire(t0 + Duration::from_secs(10), &|id| id != "eu-b");
        assert_eq!(
            t.merged()
                .iter()
                .find(|c| &*c.region == "eu")
                .expect("eu")
                .agents,
            1,
            "unpinned agent dropped"
        );
        t.expire(t0 + ENTRY_TTL + Duration::from_secs(1), &|_| true);
        assert!(t.is_empty());
    }

    #[test]
    fn the_index_finds_the_most_specific_subnet_for_v4_v6_and_mapped_clients() {
        let mut t = LatencyTable::default();
        let now = SystemTime::now();
        t.apply(
            "eu-a",
            &report(
                "eu",
                &[
                    ("10.1.2.0", 24, 5_000, 9),
                    ("10.1.0.0", 16, 50_000, 9),
                    ("2001:db8:1::", 48, 7_000, 9),
                ],
            ),
            now,
        );
        t.apply("us-a", &report("us", &[("10.1.2.0", 24, 80_000, 9)]), now);
        t.apply("xx-a", &report("nowhere", &[("10.9.9.0", 24, 1, 9)]), now);
        let region = |name: &str| ["eu", "us"].iter().position(|r| *r == name);
        let index = LatencyIndex::build(&t.merged(), &region);
        let (cells, prefix) = index.lookup("10.1.2.77".parse().expect("ip")).expect("hit");
        assert_eq!((cells.len(), prefix), (2, 24));
        let (cells, prefix) = index.lookup("10.1.9.1".parse().expect("ip")).expect("hit");
        assert_eq!((cells[0].region, prefix), (0, 16));
        assert!(
            index
                .lookup("::ffff:10.1.2.1".parse().expect("ip"))
                .is_some_and(|(_, p)| p == 24)
        );
        assert!(
            index
                .lookup("2001:db8:1:5::1".parse().expect("ip"))
                .is_some_and(|(_, p)| p == 48)
        );
        assert!(
            index.lookup("10.9.9.9".parse().expect("ip")).is_none(),
            "unknown region ignored"
        );
        assert!(index.lookup("192.0.2.1".parse().expect("ip")).is_none());
    }

    #[test]
    fn a_resolver_is_mapped_only_when_all_its_clients_went_to_one_region() {
        let mut r = Resolvers::default();
        let now = std::time::Instant::now();
        let (one, two): (IpAddr, IpAddr) = (
            "192.0.2.53".parse().expect("ip"),
            "198.51.100.53".parse().expect("ip"),
        );
        for i in 0..Resolvers::MIN_SEEN {
            let changed = r.record(one, 1, now);
            assert_eq!(changed, i + 1 == Resolvers::MIN_SEEN);
            r.record(two, 0, now);
        }
        assert!(r.record(two, 1, now), "a second region unmaps it");
        assert_eq!(r.mapped(), HashMap::from([(one, 1)]));
        assert!(r.expire(now + ENTRY_TTL));
        assert!(r.mapped().is_empty());
    }

    #[test]
    fn the_table_is_bounded() {
        let mut t = LatencyTable::default();
        let now = SystemTime::now();
        let samples: Vec<(String, u8, u32, u32)> = (0..(MAX_CELLS as u32 + 10))
            .map(|i| (std::net::Ipv4Addr::from(i << 8).to_string(), 24, 1000, 5))
            .collect();
        let refs: Vec<(&str, u8, u32, u32)> = samples
            .iter()
            .map(|(a, p, r, n)| (a.as_str(), *p, *r, *n))
            .collect();
        t.apply("eu-a", &report("eu", &refs), now);
        assert_eq!(t.len(), MAX_CELLS);
        assert_eq!(t.refused(), 10);
    }
}
