//! Logging what an attacker can repeat at will (forged packets, bad proofs, rejected
//! reports) at most once per period, with how many were left out: a flood is counted in
//! full by metrics but cannot flood the log.

use std::time::{Duration, Instant};

/// One log line per `period` at most.
#[derive(Debug, Clone)]
pub struct LogLimit {
    period: Duration,
    last: Option<Instant>,
    skipped: u64,
}

impl LogLimit {
    /// A limit of one line per `period`.
    pub const fn every(period: Duration) -> LogLimit {
        LogLimit {
            period,
            last: None,
            skipped: 0,
        }
    }

    /// `Some(lines skipped since the last one)` when a line may be logged now; `None`
    /// (and one more skipped) otherwise.
    pub fn ready(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.period)
        {
            self.skipped += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_and_the_count_of_those_left_out() {
        let mut limit = LogLimit::every(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limit.ready(t0), Some(0));
        assert_eq!(limit.ready(t0 + Duration::from_secs(1)), None);
        assert_eq!(limit.ready(t0 + Duration::from_secs(9)), None);
        assert_eq!(limit.ready(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(limit.ready(t0 + Duration::from_secs(11)), None);
    }
}
