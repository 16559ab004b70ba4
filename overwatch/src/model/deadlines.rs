//! When a status changes with no message arriving: an agent goes stale after
//! `stale.threshold` and is removed after `stale.remove_after` without a report, an
//! override expires, remembered backends are forgotten. Kept in time order (like
//! mini-redis's expirations), so the owner sleeps until the next one instead of
//! recomputing every backend on a timer.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// What falls due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// This agent has sent nothing for `stale.threshold`.
    Stale(String),
    /// This agent has sent nothing for `stale.remove_after`.
    Remove(String),
    /// An override ends.
    OverrideEnds,
    /// Remembered backends whose agent never reported are forgotten.
    ForgetRemembered,
}

type Key = (Instant, u64);

/// The pending deadlines.
#[derive(Debug, Default)]
pub struct Deadlines {
    queue: BTreeMap<Key, Due>,
    /// Each agent's (stale, remove) entries, so a new report moves them.
    agents: HashMap<String, [Key; 2]>,
    overrides: Vec<Key>,
    seq: u64,
}

/// A deadline is due strictly after a threshold ("more than `threshold` ago"), so it is
/// set this much later; a millisecond is below every configured duration's resolution.
const AFTER: Duration = Duration::from_millis(1);

impl Deadlines {
    fn insert(&mut self, at: Instant, due: Due) -> Key {
        self.seq += 1;
        let key = (at, self.seq);
        self.queue.insert(key, due);
        key
    }

    /// An agent reported at `at`: its stale and remove deadlines move there.
    pub fn agent_reported(
        &mut self,
        agent_id: &str,
        at: Instant,
        threshold: Duration,
        remove_after: Duration,
    ) {
        self.forget_agent(agent_id);
        let stale = self.insert(at + threshold + AFTER, Due::Stale(agent_id.to_owned()));
        let remove = self.insert(at + remove_after, Due::Remove(agent_id.to_owned()));
        self.agents.insert(agent_id.to_owned(), [stale, remove]);
    }

    /// The agent is gone: nothing of it falls due.
    pub fn forget_agent(&mut self, agent_id: &str) {
        if let Some(keys) = self.agents.remove(agent_id) {
            for key in keys {
                self.queue.remove(&key);
            }
        }
    }

    /// The overrides in force end at these moments (replacing the ones known before).
    pub fn overrides_end(&mut self, ends: impl IntoIterator<Item = Instant>) {
        for key in std::mem::take(&mut self.overrides) {
            self.queue.remove(&key);
        }
        for end in ends {
            let key = self.insert(end + AFTER, Due::OverrideEnds);
            self.overrides.push(key);
        }
    }

    /// Something else falls due at `at`.
    pub fn at(&mut self, at: Instant, due: Due) {
        self.insert(at, due);
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.queue.keys().next().map(|(at, _)| *at)
    }

    /// Everything due at `now`, earliest first.
    pub fn pop_due(&mut self, now: Instant) -> Vec<Due> {
        let mut due = Vec::new();
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (key, what) = entry.remove_entry();
            match &what {
                Due::Remove(id) => {
                    self.agents.remove(id);
                }
                Due::OverrideEnds => self.overrides.retain(|k| *k != key),
                Due::Stale(_) | Due::ForgetRemembered => {}
            }
            due.push(what);
        }
        due
    }

    /// How many deadlines are pending.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether none is pending.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_new_report_moves_the_agents_deadlines() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        d.agent_reported("a", t0, S(10), S(60));
        assert_eq!(d.next(), Some(t0 + S(10) + AFTER));
        d.agent_reported("a", t0 + S(5), S(10), S(60));
        assert_eq!(d.len(), 2, "the old deadlines are gone, not duplicated");
        assert!(
            d.pop_due(t0 + S(10) + AFTER).is_empty(),
            "no longer due then"
        );
        assert_eq!(
            d.pop_due(t0 + S(15) + AFTER),
            [Due::Stale("a".into())],
            "due a threshold after the newest report, not at it"
        );
        assert!(d.pop_due(t0 + S(15)).is_empty(), "each falls due once");
        assert_eq!(d.pop_due(t0 + S(65)), [Due::Remove("a".into())]);
        assert!(d.is_empty());
        d.agent_reported("b", t0, S(10), S(60));
        d.forget_agent("b");
        assert!(d.is_empty(), "a forgotten agent leaves nothing behind");
    }

    #[test]
    fn overrides_are_replaced_as_a_set_and_fire_in_time_order() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        d.overrides_end([t0 + S(30), t0 + S(20)]);
        d.at(t0 + S(25), Due::ForgetRemembered);
        d.overrides_end([t0 + S(40)]);
        assert_eq!(d.len(), 2, "the earlier set was replaced");
        assert_eq!(
            d.pop_due(t0 + S(50)),
            [Due::ForgetRemembered, Due::OverrideEnds]
        );
    }
}
