//! The node's own answer counters, for the status page's live chart: queries answered,
//! and how often each backend was in an answer, per domain. Both DNS paths add to them;
//! the UDP workers once per batch (never per query, never contending), the hickory path
//! per query. Not Prometheus series: a backend address is no metrics label (unbounded as
//! agents come and go); here the table is capped instead.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};

use metrics::SharedString;

/// (domain, backend) pairs counted at most; answers for further pairs count in `dropped`.
pub const MAX_PAIRS: usize = 10_000;

/// The counters.
#[derive(Debug, Default)]
pub struct Traffic {
    queries: AtomicU64,
    answers: Mutex<HashMap<(SharedString, IpAddr), u64>>,
    dropped: AtomicU64,
}

/// This process's counters.
pub static TRAFFIC: LazyLock<Traffic> = LazyLock::new(Traffic::default);

impl Traffic {
    /// Adds `queries` answered and, per (domain, backend), the times it was in an answer.
    pub fn add(
        &self,
        queries: u64,
        answers: impl IntoIterator<Item = (SharedString, IpAddr, u64)>,
    ) {
        self.queries.fetch_add(queries, Ordering::Relaxed);
        let mut table = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        for (domain, ip, n) in answers {
            let full = table.len() >= MAX_PAIRS;
            match table.get_mut(&(domain.clone(), ip)) {
                Some(count) => *count += n,
                None if full => {
                    self.dropped.fetch_add(n, Ordering::Relaxed);
                }
                None => {
                    table.insert((domain, ip), n);
                }
            }
        }
    }

    /// Queries answered since start, and every (domain, backend, answers) since start.
    pub fn totals(&self) -> (u64, Vec<(String, IpAddr, u64)>) {
        let table = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        let mut rows: Vec<(String, IpAddr, u64)> = table
            .iter()
            .map(|((domain, ip), n)| (domain.to_string(), *ip, *n))
            .collect();
        rows.sort();
        (self.queries.load(Ordering::Relaxed), rows)
    }
}

/// The address an A or AAAA record holds.
pub fn record_ip(record: &hickory_proto::rr::Record) -> Option<IpAddr> {
    match &record.data {
        hickory_proto::rr::RData::A(a) => Some(IpAddr::V4(a.0)),
        hickory_proto::rr::RData::AAAA(a) => Some(IpAddr::V6(a.0)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_and_the_table_is_capped() {
        let t = Traffic::default();
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        t.add(3, [(SharedString::from("a.test"), ip, 2)]);
        t.add(1, [(SharedString::from("a.test"), ip, 1)]);
        assert_eq!(t.totals(), (4, vec![("a.test".to_owned(), ip, 3)]));
        let many = (0..MAX_PAIRS as u32 + 5).map(|i| {
            (
                SharedString::from("b.test"),
                IpAddr::from(std::net::Ipv4Addr::from(i)),
                1,
            )
        });
        t.add(0, many);
        assert_eq!(t.totals().1.len(), MAX_PAIRS);
        assert_eq!(t.dropped.load(Ordering::Relaxed), 6);
    }
}
