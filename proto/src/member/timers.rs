//! foca's timers, fired in deadline order from a heap (ties in submission order).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::Duration;

use foca::Timer;
use tokio::time::Instant;

use super::MemberId;

/// A due foca timer; ordered by deadline, then by submission order.
struct Due {
    at: Instant,
    seq: u64,
    timer: Timer<MemberId>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Pending timers.
#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<Due>>,
    seq: u64,
}

impl Timers {
    /// Schedules `timer` `delay` after `now`.
    pub(crate) fn schedule(&mut self, now: Instant, delay: Duration, timer: Timer<MemberId>) {
        self.seq += 1;
        self.heap.push(Reverse(Due {
            at: now + delay,
            seq: self.seq,
            timer,
        }));
    }

    /// The earliest deadline, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(d)| d.at)
    }

    /// Removes and returns the earliest timer if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Timer<MemberId>> {
        if self.heap.peek().is_some_and(|Reverse(d)| d.at <= now) {
            self.heap.pop().map(|Reverse(d)| d.timer)
        } else {
            None
        }
    }
}
