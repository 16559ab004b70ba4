//! Validation check state: rise/fall thresholds and a smoothed RTT. Pure; the prober
//! that feeds it lives in `health`.

use std::time::{Duration, SystemTime};

/// Weight of a new RTT sample in the smoothed RTT (like TCP's SRTT, 1/8).
const RTT_ALPHA: f64 = 0.125;

/// The outcome of one check.
pub type CheckOutcome = Result<Duration, String>;

/// Health as the thresholds see it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckState {
    /// Current verdict; `None` until the first check completed.
    pub healthy: Option<bool>,
    /// Successes in a row.
    pub ok_streak: u32,
    /// Failures in a row.
    pub fail_streak: u32,
    /// Why the last failed check failed.
    pub last_error: Option<String>,
    /// When the last check completed.
    pub last_check: Option<SystemTime>,
    /// Smoothed RTT of successful checks.
    pub srtt: Option<Duration>,
    /// Successful samples behind `srtt`.
    pub samples: u32,
}

impl CheckState {
    /// Before any check.
    pub fn new() -> Self {
        CheckState {
            healthy: None,
            ok_streak: 0,
            fail_streak: 0,
            last_error: None,
            last_check: None,
            srtt: None,
            samples: 0,
        }
    }

    /// Records one outcome; returns true when the verdict changed.
    ///
    /// The first outcome decides at once (a server never seen up need not fail `fall`
    /// times first); after that it takes `fall` failures in a row to go down and `rise`
    /// successes in a row to come back.
    pub fn record(&mut self, outcome: &CheckOutcome, rise: u32, fall: u32, at: SystemTime) -> bool {
        self.last_check = Some(at);
        let before = self.healthy;
        match outcome {
            Ok(rtt) => {
                self.ok_streak = self.ok_streak.saturating_add(1);
                self.fail_streak = 0;
                self.last_error = None;
                self.srtt = Some(match self.srtt {
                    None => *rtt,
                    Some(s) => s.mul_f64(1.0 - RTT_ALPHA) + rtt.mul_f64(RTT_ALPHA),
                });
                self.samples = self.samples.saturating_add(1);
                if self.healthy.is_none() || (self.healthy == Some(false) && self.ok_streak >= rise)
                {
                    self.healthy = Some(true);
                }
            }
            Err(reason) => {
                self.fail_streak = self.fail_streak.saturating_add(1);
                self.ok_streak = 0;
                self.last_error = Some(reason.clone());
                if self.healthy.is_none()
                    || (self.healthy == Some(true) && self.fail_streak >= fall)
                {
                    self.healthy = Some(false);
                }
            }
        }
        before != self.healthy
    }
}

impl Default for CheckState {
    fn default() -> Self {
        CheckState::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(ms: u64) -> CheckOutcome {
        Ok(Duration::from_millis(ms))
    }
    fn fail() -> CheckOutcome {
        Err("refused".into())
    }

    #[test]
    fn first_result_decides_then_thresholds_apply() {
        let now = SystemTime::now();
        let mut s = CheckState::new();
        assert!(
            s.record(&ok(10), 2, 3, now),
            "first success: healthy at once"
        );
        assert_eq!(s.healthy, Some(true));
        assert!(!s.record(&fail(), 2, 3, now));
        assert!(!s.record(&fail(), 2, 3, now));
        assert_eq!(s.healthy, Some(true), "two failures < fall 3");
        assert!(s.record(&fail(), 2, 3, now));
        assert_eq!(s.healthy, Some(false));
        assert_eq!(s.last_error.as_deref(), Some("refused"));
        assert!(!s.record(&ok(10), 2, 3, now));
        assert!(
            !s.record(&fail(), 2, 3, now),
            "a failure resets the rise streak"
        );
        assert!(!s.record(&ok(10), 2, 3, now));
        assert!(s.record(&ok(10), 2, 3, now), "rise 2 in a row");
        assert_eq!(s.healthy, Some(true));

        let mut down_first = CheckState::new();
        assert!(
            down_first.record(&fail(), 2, 3, now),
            "first failure: unhealthy at once"
        );
        assert_eq!(down_first.healthy, Some(false));
    }

    #[test]
    fn rtt_is_smoothed() {
        let now = SystemTime::now();
        let mut s = CheckState::new();
        s.record(&ok(100), 1, 1, now);
        assert_eq!(s.srtt, Some(Duration::from_millis(100)));
        s.record(&ok(20), 1, 1, now);
        assert_eq!(s.srtt, Some(Duration::from_millis(90)));
        s.record(&fail(), 1, 1, now);
        assert_eq!(
            s.srtt,
            Some(Duration::from_millis(90)),
            "failures carry no RTT"
        );
        assert_eq!(s.samples, 2);
    }
}
