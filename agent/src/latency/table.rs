//! Client subnets and their smoothed RTT: EWMA per subnet, sample counts, expiry after
//! `subnet_ttl`, and a hard bound with least-recently-updated eviction.
//!
//! Eviction and expiry never scan the table: updates append `(subnet, stamp)` to a queue
//! in time order, and the oldest live entry is found by popping stale queue items (lazy
//! deletion). The queue is compacted when it holds more than twice the live entries, so
//! both stay O(entries) in memory and O(1) amortized per update.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub use opengslb_proto::subnet::Subnet;

/// One subnet's learned RTT.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Learned {
    /// Smoothed RTT in microseconds.
    pub rtt_us: f64,
    /// Connections sampled (one per connection per poll).
    pub samples: u64,
    /// Last update.
    pub updated: Instant,
    /// Changed since the last report.
    pub dirty: bool,
    stamp: u64,
}

/// The table's limits and smoothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TableSettings {
    /// IPv4 prefix length.
    pub ipv4_prefix: u8,
    /// IPv6 prefix length.
    pub ipv6_prefix: u8,
    /// Weight of a new sample (0 < α ≤ 1).
    pub ewma_alpha: f64,
    /// Most subnets kept.
    pub max_subnets: usize,
    /// A subnet not updated for this long is dropped.
    pub subnet_ttl: Duration,
}

/// The table.
#[derive(Debug)]
pub struct SubnetTable {
    settings: TableSettings,
    entries: HashMap<Subnet, Learned>,
    order: VecDeque<(Subnet, u64)>,
    next_stamp: u64,
    evicted: u64,
}

impl SubnetTable {
    /// An empty table.
    pub fn new(settings: TableSettings) -> SubnetTable {
        SubnetTable {
            settings,
            entries: HashMap::new(),
            order: VecDeque::new(),
            next_stamp: 0,
            evicted: 0,
        }
    }

    /// Records one connection's RTT from client `ip`.
    pub fn record(&mut self, ip: IpAddr, rtt: Duration, now: Instant) {
        let subnet = Subnet::of(ip, self.settings.ipv4_prefix, self.settings.ipv6_prefix);
        let sample = rtt.as_secs_f64() * 1e6;
        self.next_stamp += 1;
        let stamp = self.next_stamp;
        match self.entries.get_mut(&subnet) {
            Some(e) => {
                let a = self.settings.ewma_alpha;
                e.rtt_us = a * sample + (1.0 - a) * e.rtt_us;
                e.samples += 1;
                e.updated = now;
                e.dirty = true;
                e.stamp = stamp;
            }
            None => {
                if self.entries.len() >= self.settings.max_subnets {
                    self.evict_oldest();
                }
                self.entries.insert(
                    subnet,
                    Learned {
                        rtt_us: sample,
                        samples: 1,
                        updated: now,
                        dirty: true,
                        stamp,
                    },
                );
            }
        }
        self.order.push_back((subnet, stamp));
        if self.order.len() > 2 * self.entries.len() + 64 {
            self.compact();
        }
    }

    /// Drops subnets not updated within `subnet_ttl` of `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        while let Some(&(subnet, stamp)) = self.order.front() {
            match self.entries.get(&subnet) {
                Some(e) if e.stamp == stamp => {
                    if now.duration_since(e.updated) < self.settings.subnet_ttl {
                        break;
                    }
                    self.entries.remove(&subnet);
                    dropped += 1;
                }
                _ => {} // superseded by a later update: lazy deletion
            }
            self.order.pop_front();
        }
        dropped
    }

    fn evict_oldest(&mut self) {
        while let Some((subnet, stamp)) = self.order.pop_front() {
            if self.entries.get(&subnet).is_some_and(|e| e.stamp == stamp) {
                self.entries.remove(&subnet);
                self.evicted += 1;
                return;
            }
        }
    }

    fn compact(&mut self) {
        let entries = &self.entries;
        self.order
            .retain(|(subnet, stamp)| entries.get(subnet).is_some_and(|e| e.stamp == *stamp));
    }

    /// Subnets now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Subnets evicted at the bound so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// One subnet.
    pub fn get(&self, subnet: &Subnet) -> Option<&Learned> {
        self.entries.get(subnet)
    }

    /// Every subnet (for a full refresh), clearing the dirty marks.
    pub fn take_all(&mut self) -> Vec<(Subnet, Learned)> {
        self.entries
            .iter_mut()
            .map(|(s, e)| {
                e.dirty = false;
                (*s, *e)
            })
            .collect()
    }

    /// Subnets changed since the last report, clearing the marks.
    pub fn take_dirty(&mut self) -> Vec<(Subnet, Learned)> {
        self.entries
            .iter_mut()
            .filter(|(_, e)| e.dirty)
            .map(|(s, e)| {
                e.dirty = false;
                (*s, *e)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max: usize) -> TableSettings {
        TableSettings {
            ipv4_prefix: 24,
            ipv6_prefix: 48,
            ewma_alpha: 0.5,
            max_subnets: max,
            subnet_ttl: Duration::from_secs(60),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn ewma_and_samples() {
        let mut t = SubnetTable::new(settings(10));
        let now = Instant::now();
        t.record(ip("10.0.0.1"), Duration::from_millis(100), now);
        t.record(ip("10.0.0.2"), Duration::from_millis(20), now);
        let e = t.get(&Subnet::of(ip("10.0.0.9"), 24, 48)).expect("entry");
        assert!((e.rtt_us - 60_000.0).abs() < 1e-6, "{}", e.rtt_us);
        assert_eq!(e.samples, 2);
        assert_eq!(t.take_dirty().len(), 1);
        assert!(t.take_dirty().is_empty(), "reported once");
        t.record(ip("10.0.0.3"), Duration::from_millis(60), now);
        assert_eq!(t.take_dirty().len(), 1);
        assert_eq!(t.take_all().len(), 1);
    }

    #[test]
    fn the_bound_evicts_the_least_recently_updated() {
        let mut t = SubnetTable::new(settings(3));
        let now = Instant::now();
        for i in 1..=3 {
            t.record(ip(&format!("10.0.{i}.1")), Duration::from_millis(10), now);
        }
        // Refresh the first: the second is now the least recently updated.
        t.record(ip("10.0.1.2"), Duration::from_millis(10), now);
        t.record(ip("10.0.4.1"), Duration::from_millis(10), now);
        assert_eq!(t.len(), 3);
        assert_eq!(t.evicted(), 1);
        assert!(t.get(&Subnet::of(ip("10.0.2.0"), 24, 48)).is_none());
        assert!(t.get(&Subnet::of(ip("10.0.1.0"), 24, 48)).is_some());
        // Many updates of one subnet keep the queue bounded.
        for _ in 0..10_000 {
            t.record(ip("10.0.1.2"), Duration::from_millis(10), now);
        }
        assert!(t.order.len() <= 2 * t.len() + 65, "{}", t.order.len());
    }

    #[test]
    fn subnets_expire_after_the_ttl() {
        let mut t = SubnetTable::new(settings(10));
        let t0 = Instant::now();
        t.record(ip("10.0.1.1"), Duration::from_millis(10), t0);
        t.record(
            ip("10.0.2.1"),
            Duration::from_millis(10),
            t0 + Duration::from_secs(30),
        );
        assert_eq!(t.expire(t0 + Duration::from_secs(59)), 0);
        assert_eq!(t.expire(t0 + Duration::from_secs(61)), 1);
        assert_eq!(t.len(), 1);
        t.record(
            ip("10.0.2.1"),
            Duration::from_millis(10),
            t0 + Duration::from_secs(80),
        );
        assert_eq!(t.expire(t0 + Duration::from_secs(100)), 0, "refreshed");
        assert_eq!(t.expire(t0 + Duration::from_secs(141)), 1);
        assert!(t.is_empty());
    }
}
