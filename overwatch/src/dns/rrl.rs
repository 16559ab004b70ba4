//! Response rate limiting for UDP, in the style of BIND, Knot and NSD: responses per
//! second per source prefix (/24 for IPv4, /56 for IPv6 by default). Past the rate, every
//! `slip`-th response is a truncated reply (header and question, TC set: a real client
//! retries over TCP, which proves its address) and the rest are dropped, so a forged
//! source gets at most about as many bytes as were sent in its name. Clients with a valid
//! DNS cookie have proven their address and are not limited. `dry_run` counts what would
//! be limited and answers everything.
//!
//! The table is a fixed array of atomic slots shared by every UDP worker: no allocation
//! and no lock per query. Two prefixes that share a slot reset each other's count, which
//! can only let more through, never block a client that is within its rate.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Slots in the table (a power of two): 512 KiB.
const SLOTS: usize = 1 << 16;
const COUNT_BITS: u32 = 24;
const SECOND_BITS: u32 = 16;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;

/// `dns.rate_limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Responses per second per source prefix.
    pub responses_per_second: u32,
    /// Every this many limited responses, one is a truncated reply (0: drop them all).
    pub slip: u32,
    /// IPv4 source prefix length.
    pub ipv4_prefix: u8,
    /// IPv6 source prefix length.
    pub ipv6_prefix: u8,
    /// Count, but answer everything.
    pub dry_run: bool,
}

/// What to do with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send it.
    Answer,
    /// Send a truncated reply instead.
    Slip,
    /// Send nothing.
    Drop,
    /// Send it, though it would have been limited (dry run).
    WouldLimit,
}

/// The limiter shared by the UDP workers.
pub struct RateLimiter {
    settings: RateLimitSettings,
    slots: Box<[AtomicU64]>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter with an empty table.
    pub fn new(settings: RateLimitSettings) -> RateLimiter {
        RateLimiter {
            settings,
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The source prefix `ip` counts under, as one number.
    fn prefix(&self, ip: IpAddr) -> u128 {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let keep = u32::from(self.settings.ipv4_prefix.min(32));
                let masked = if keep == 0 {
                    0
                } else {
                    bits & (u32::MAX << (32 - keep))
                };
                u128::from(masked) | (1 << 127) // apart from IPv6's ::/96
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let keep = u32::from(self.settings.ipv6_prefix.min(128));
                if keep == 0 {
                    0
                } else {
                    bits & (u128::MAX << (128 - keep))
                }
            }
        }
    }

    /// Counts one response to `ip` in second `now` and says what to do with it.
    pub fn check(&self, ip: IpAddr, now: u32) -> Action {
        let prefix = self.prefix(ip);
        // A 64-bit mix of the prefix: the low bits pick the slot, the high ones tag it.
        let hash = ((prefix as u64) ^ ((prefix >> 64) as u64).rotate_left(29))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let slot = &self.slots[(hash as usize) & (SLOTS - 1)];
        let tag = hash >> (COUNT_BITS + SECOND_BITS);
        let second = u64::from(now) & ((1 << SECOND_BITS) - 1);
        let mut old = slot.load(Ordering::Relaxed);
        let count = loop {
            let same = old >> (COUNT_BITS + SECOND_BITS) == tag
                && (old >> COUNT_BITS) & ((1 << SECOND_BITS) - 1) == second;
            let count = if same {
                ((old & COUNT_MAX) + 1).min(COUNT_MAX)
            } else {
                1
            };
            let new = (tag << (COUNT_BITS + SECOND_BITS)) | (second << COUNT_BITS) | count;
            match slot.compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break count,
                Err(current) => old = current,
            }
        };
        let rate = u64::from(self.settings.responses_per_second);
        if count <= rate {
            return Action::Answer;
        }
        if self.settings.dry_run {
            return Action::WouldLimit;
        }
        let slip = u64::from(self.settings.slip);
        if slip > 0 && (count - rate) % slip == 0 {
            Action::Slip
        } else {
            Action::Drop
        }
    }
}

/// The truncated reply to `query` (header and question, QR and TC set, no records) in
/// `out`: its length, or `None` if the query's question cannot be read.
pub fn slip_reply(query: &[u8], out: &mut [u8]) -> Option<usize> {
    let end = super::wire::first_question_end(query)?;
    let reply = out.get_mut(..end)?;
    reply.copy_from_slice(&query[..end]);
    reply[2] = 0x80 | (query[2] & 0x79) | 0x02; // QR, opcode and RD kept, TC
    reply[3] = 0; // RA, Z, AD, CD, rcode: nothing
    reply[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: u32, slip: u32, dry_run: bool) -> RateLimiter {
        RateLimiter::new(RateLimitSettings {
            responses_per_second: rate,
            slip,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            dry_run,
        })
    }

    #[test]
    fn past_the_rate_every_slipth_response_slips_and_the_rest_drop() {
        let rrl = limiter(5, 2, false);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let same_24: IpAddr = "192.0.2.200".parse().expect("ip");
        let other: IpAddr = "198.51.100.1".parse().expect("ip");
        let actions: Vec<Action> = (0..9)
            .map(|i| rrl.check(if i % 2 == 0 { a } else { same_24 }, 100))
            .collect();
        assert_eq!(
            actions,
            [
                Action::Answer,
                Action::Answer,
                Action::Answer,
                Action::Answer,
                Action::Answer,
                Action::Drop,
                Action::Slip,
                Action::Drop,
                Action::Slip
            ]
        );
        assert_eq!(rrl.check(other, 100), Action::Answer, "another prefix");
        assert_eq!(rrl.check(a, 101), Action::Answer, "the next second");
        // IPv6 by /56.
        let v6: IpAddr = "2001:db8:0:ff::1".parse().expect("ip");
        let v6_same: IpAddr = "2001:db8:0:aa::2".parse().expect("ip");
        let rrl = limiter(1, 0, false);
        assert_eq!(rrl.check(v6, 7), Action::Answer);
        assert_eq!(rrl.check(v6_same, 7), Action::Drop, "same /56, slip 0");
        // Dry run.
        let rrl = limiter(1, 2, true);
        assert_eq!(rrl.check(a, 1), Action::Answer);
        assert_eq!(rrl.check(a, 1), Action::WouldLimit);
    }

    #[test]
    fn a_slip_reply_is_header_and_question_with_tc() {
        let query = crate::dns::test_support::query(0x1234, 0x0120, "a.test", 1, 1, Some(&[]));
        let mut out = [0u8; 512];
        let len = slip_reply(&query, &mut out).expect("reply");
        assert_eq!(
            len,
            12 + 8 + 4,
            "no OPT, no records: smaller than the query"
        );
        assert_eq!(&out[..4], &[0x12, 0x34, 0x83, 0]);
        assert_eq!(&out[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&out[12..len], &query[12..len]);
    }
}
