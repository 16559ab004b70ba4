//! Routing decisions: which of a domain's servers go into one answer. Pure functions over
//! candidates, so every algorithm is tested without sockets.

use std::time::Duration;

use smallvec::SmallVec;

use crate::config::Algorithm;

/// Most picks (and healthy candidates) a decision holds without touching the heap. The
/// UDP fast path answers only families this small, so it never allocates.
pub const INLINE_PICKS: usize = 32;

/// Chosen candidate indexes, in answer order.
pub type Picks = SmallVec<[usize; INLINE_PICKS]>;

/// One server of a domain, for one address family, as routing sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Position of its region in the domain's `regions` list (the priority order).
    pub region_pos: usize,
    /// In rotation.
    pub healthy: bool,
    /// Configured weight (0 = standby).
    pub weight: u32,
    /// Smoothed probe RTT and how many samples it rests on.
    pub rtt: Option<(Duration, u32)>,
}

/// What a decision needs besides the candidates.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    /// Most records in the answer.
    pub max_records: usize,
    /// Per-answer entropy (rotation, weighted draws).
    pub entropy: u64,
    /// `geolocation`: position in the domain's regions of the client's region, if it is one
    /// of them, and the prefix that decided it.
    pub client_region: Option<usize>,
    /// Prefix length the location depended on.
    pub client_prefix: u8,
    /// `latency`: RTT limit and samples needed.
    pub max_latency: Option<Duration>,
    /// `latency`: samples needed.
    pub min_samples: u32,
    /// `learned_latency`: position in the domain's regions of the region agents learned is
    /// fastest for the client's subnet (`None`: nothing learned, geolocation decides).
    pub learned_region: Option<usize>,
    /// The learned subnet's prefix length.
    pub learned_prefix: u8,
}

/// Indexes into the candidates, in answer order, and the ECS scope the choice deserves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Chosen candidates.
    pub chosen: Picks,
    /// Leading client-address bits the choice depended on (0: not client-dependent).
    pub scope: u8,
}

/// Chooses healthy candidates by `algorithm`. An empty `chosen` means none is healthy.
pub fn decide(algorithm: Algorithm, candidates: &[Candidate], q: &Query) -> Decision {
    decide_among(algorithm, candidates, &healthy_indices(candidates), q)
}

/// The indexes of the healthy candidates, in order: computed once per snapshot, not per
/// query.
pub fn healthy_indices(candidates: &[Candidate]) -> Vec<usize> {
    (0..candidates.len())
        .filter(|&i| candidates[i].healthy)
        .collect()
}

/// [`decide`] with the healthy indexes already known.
pub fn decide_among(
    algorithm: Algorithm,
    candidates: &[Candidate],
    healthy: &[usize],
    q: &Query,
) -> Decision {
    let not_client_dependent = |chosen| Decision { chosen, scope: 0 };
    if healthy.is_empty() {
        return not_client_dependent(Picks::new());
    }
    match algorithm {
        Algorithm::RoundRobin => not_client_dependent(rotate(healthy, q.entropy, q.max_records)),
        Algorithm::Weighted => {
            not_client_dependent(weighted(candidates, healthy, q.entropy, q.max_records))
        }
        Algorithm::Failover => not_client_dependent(first_healthy_region(
            candidates,
            healthy,
            None,
            q.max_records,
        )),
        Algorithm::Geolocation => {
            let chosen = first_healthy_region(candidates, healthy, q.client_region, q.max_records);
            Decision {
                chosen,
                scope: q.client_prefix,
            }
        }
        Algorithm::LearnedLatency => match q.learned_region {
            Some(region) => Decision {
                chosen: first_healthy_region(candidates, healthy, Some(region), q.max_records),
                scope: q.learned_prefix,
            },
            None => Decision {
                chosen: first_healthy_region(candidates, healthy, q.client_region, q.max_records),
                scope: q.client_prefix,
            },
        },
        Algorithm::Latency => not_client_dependent(
            fastest_region(candidates, healthy, q)
                .unwrap_or_else(|| rotate(healthy, q.entropy, q.max_records)),
        ),
    }
}

/// All of `items`, starting at `entropy % len`, at most `max`.
fn rotate(items: &[usize], entropy: u64, max: usize) -> Picks {
    let start = (entropy % items.len() as u64) as usize;
    items
        .iter()
        .cycle()
        .skip(start)
        .take(items.len().min(max))
        .copied()
        .collect()
}

/// Weighted draws without replacement; weight-0 servers only when no weighted one is healthy.
fn weighted(candidates: &[Candidate], healthy: &[usize], entropy: u64, max: usize) -> Picks {
    let mut pool: SmallVec<[(usize, u64); INLINE_PICKS]> = healthy
        .iter()
        .filter(|&&i| candidates[i].weight > 0)
        .map(|&i| (i, u64::from(candidates[i].weight)))
        .collect();
    if pool.is_empty() {
        return rotate(healthy, entropy, max); // standbys, equally
    }
    let mut rng = SplitMix(entropy);
    let mut chosen = Picks::new();
    while chosen.len() < max && !pool.is_empty() {
        let total: u64 = pool.iter().map(|(_, w)| w).sum();
        let mut ticket = rng.next() % total;
        let pick = pool
            .iter()
            .position(|&(_, w)| {
                if ticket < w {
                    true
                } else {
                    ticket -= w;
                    false
                }
            })
            .unwrap_or(pool.len() - 1);
        chosen.push(pool.swap_remove(pick).0);
    }
    chosen
}

/// The healthy servers of the preferred region if it has any, else of the first region
/// (in the domain's priority order) that has.
fn first_healthy_region(
    candidates: &[Candidate],
    healthy: &[usize],
    preferred: Option<usize>,
    max: usize,
) -> Picks {
    let region = preferred
        .filter(|p| healthy.iter().any(|&i| candidates[i].region_pos == *p))
        .unwrap_or_else(|| {
            healthy
                .iter()
                .map(|&i| candidates[i].region_pos)
                .min()
                .unwrap_or(0)
        });
    healthy
        .iter()
        .copied()
        .filter(|&i| candidates[i].region_pos == region)
        .take(max)
        .collect()
}

/// The region whose best healthy server has the lowest RTT (enough samples, under the
/// limit); its healthy servers fastest first. `None` when no server qualifies yet.
fn fastest_region(candidates: &[Candidate], healthy: &[usize], q: &Query) -> Option<Picks> {
    let qualifies = |i: usize| {
        candidates[i]
            .rtt
            .filter(|&(rtt, samples)| {
                samples >= q.min_samples && q.max_latency.is_none_or(|max| rtt <= max)
            })
            .map(|(rtt, _)| rtt)
    };
    let best = healthy
        .iter()
        .copied()
        .filter_map(|i| Some((qualifies(i)?, i)))
        .min()?;
    let region = candidates[best.1].region_pos;
    let mut members: SmallVec<[(Duration, usize); INLINE_PICKS]> = healthy
        .iter()
        .copied()
        .filter(|&i| candidates[i].region_pos == region)
        .filter_map(|i| Some((qualifies(i)?, i)))
        .collect();
    members.sort_unstable();
    Some(
        members
            .into_iter()
            .map(|(_, i)| i)
            .take(q.max_records)
            .collect(),
    )
}

/// SplitMix64: a tiny, fast generator; good enough to spread weighted draws.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(region_pos: usize, healthy: bool, weight: u32) -> Candidate {
        Candidate {
            region_pos,
            healthy,
            weight,
            rtt: None,
        }
    }

    fn q(max_records: usize, entropy: u64) -> Query {
        Query {
            max_records,
            entropy,
            client_region: None,
            client_prefix: 0,
            max_latency: None,
            min_samples: 1,
            learned_region: None,
            learned_prefix: 0,
        }
    }

    #[test]
    fn learned_latency_uses_the_learned_region_else_geolocation() {
        let cands = [c(0, true, 1), c(1, true, 1), c(1, false, 1)];
        let learned = Query {
            learned_region: Some(1),
            learned_prefix: 24,
            client_region: Some(0),
            client_prefix: 16,
            ..q(8, 0)
        };
        let d = decide(Algorithm::LearnedLatency, &cands, &learned);
        assert_eq!(
            (d.chosen.to_vec(), d.scope),
            (vec![1], 24),
            "learned wins, scope = learned prefix"
        );
        let fallback = Query {
            learned_region: None,
            ..learned
        };
        let d = decide(Algorithm::LearnedLatency, &cands, &fallback);
        assert_eq!(
            (d.chosen.to_vec(), d.scope),
            (vec![0], 16),
            "geolocation decides without data"
        );
        let down = [c(0, true, 1), c(1, false, 1)];
        let d = decide(Algorithm::LearnedLatency, &down, &learned);
        assert_eq!(
            d.chosen.to_vec(),
            vec![0],
            "a learned region with nothing healthy is skipped"
        );
    }

    #[test]
    fn round_robin_rotates_over_healthy_only_and_caps() {
        let cands = [c(0, true, 1), c(0, false, 1), c(1, true, 1), c(1, true, 1)];
        let firsts: std::collections::BTreeSet<usize> = (0..12)
            .map(|e| decide(Algorithm::RoundRobin, &cands, &q(8, e)).chosen[0])
            .collect();
        assert_eq!(
            firsts,
            [0, 2, 3].into(),
            "every healthy server leads some answer, the sick one none"
        );
        assert_eq!(
            decide(Algorithm::RoundRobin, &cands, &q(8, 1))
                .chosen
                .to_vec(),
            [2, 3, 0]
        );
        assert_eq!(
            decide(Algorithm::RoundRobin, &cands, &q(2, 0)).chosen.len(),
            2
        );
        assert_eq!(decide(Algorithm::RoundRobin, &cands, &q(8, 0)).scope, 0);
    }

    #[test]
    fn weighted_follows_the_weights_within_tolerance() {
        let cands = [c(0, true, 100), c(0, true, 300), c(1, true, 600)];
        let mut counts = [0u32; 3];
        let n = 100_000;
        for e in 0..n {
            counts[decide(Algorithm::Weighted, &cands, &q(1, e)).chosen[0]] += 1;
        }
        for (i, want) in [0.1, 0.3, 0.6].into_iter().enumerate() {
            let got = f64::from(counts[i]) / n as f64;
            assert!(
                (got - want).abs() < 0.01,
                "server {i}: {got:.3} of answers, want {want}"
            );
        }
    }

    #[test]
    fn weight_zero_is_standby() {
        let cands = [c(0, true, 0), c(0, true, 100), c(1, false, 100)];
        for e in 0..1000 {
            assert_eq!(
                decide(Algorithm::Weighted, &cands, &q(8, e))
                    .chosen
                    .to_vec(),
                [1],
                "standby stays out while a weighted server is up"
            );
        }
        let only_standby = [c(0, true, 0), c(0, false, 100)];
        assert_eq!(
            decide(Algorithm::Weighted, &only_standby, &q(8, 0))
                .chosen
                .to_vec(),
            [0]
        );
    }

    #[test]
    fn weighted_draws_distinct_servers() {
        let cands = [c(0, true, 1), c(0, true, 1000), c(0, true, 1)];
        for e in 0..1000 {
            let mut chosen = decide(Algorithm::Weighted, &cands, &q(3, e)).chosen;
            chosen.sort();
            assert_eq!(chosen.as_slice(), [0, 1, 2]);
        }
    }

    #[test]
    fn failover_keeps_a_stable_priority_order() {
        let mut cands = vec![c(0, true, 1), c(0, true, 1), c(1, true, 1), c(2, true, 1)];
        for e in 0..10 {
            assert_eq!(
                decide(Algorithm::Failover, &cands, &q(8, e))
                    .chosen
                    .to_vec(),
                [0, 1],
                "same answer every time"
            );
        }
        cands[0].healthy = false;
        assert_eq!(
            decide(Algorithm::Failover, &cands, &q(8, 3))
                .chosen
                .to_vec(),
            [1]
        );
        cands[1].healthy = false;
        assert_eq!(
            decide(Algorithm::Failover, &cands, &q(8, 3))
                .chosen
                .to_vec(),
            [2],
            "next region"
        );
        cands[2].healthy = false;
        assert_eq!(
            decide(Algorithm::Failover, &cands, &q(8, 3))
                .chosen
                .to_vec(),
            [3]
        );
    }

    #[test]
    fn geolocation_answers_the_clients_region_with_its_scope() {
        let cands = [c(0, true, 1), c(1, true, 1), c(1, true, 1)];
        let mut query = q(8, 0);
        query.client_region = Some(1);
        query.client_prefix = 16;
        assert_eq!(
            decide(Algorithm::Geolocation, &cands, &query),
            Decision {
                chosen: Picks::from_slice(&[1, 2]),
                scope: 16
            }
        );
        // Its region down: the first healthy region in priority order, still client-dependent.
        let down = [c(0, true, 1), c(1, false, 1)];
        assert_eq!(
            decide(Algorithm::Geolocation, &down, &query),
            Decision {
                chosen: Picks::from_slice(&[0]),
                scope: 16
            }
        );
        // A client from no region of this domain.
        query.client_region = None;
        assert_eq!(
            decide(Algorithm::Geolocation, &cands, &query)
                .chosen
                .to_vec(),
            [0]
        );
    }

    #[test]
    fn latency_picks_the_fastest_region_under_the_limit() {
        let ms = Duration::from_millis;
        let cands = [
            Candidate {
                region_pos: 0,
                healthy: true,
                weight: 1,
                rtt: Some((ms(80), 5)),
            },
            Candidate {
                region_pos: 1,
                healthy: true,
                weight: 1,
                rtt: Some((ms(30), 5)),
            },
            Candidate {
                region_pos: 1,
                healthy: true,
                weight: 1,
                rtt: Some((ms(20), 5)),
            },
            Candidate {
                region_pos: 2,
                healthy: false,
                weight: 1,
                rtt: Some((ms(1), 5)),
            },
        ];
        let mut query = q(8, 0);
        query.min_samples = 3;
        assert_eq!(
            decide(Algorithm::Latency, &cands, &query).chosen.to_vec(),
            [2, 1],
            "region 1, fastest first; the sick one never"
        );
        query.max_latency = Some(ms(10));
        let fallback = decide(Algorithm::Latency, &cands, &query).chosen;
        assert_eq!(
            fallback.len(),
            3,
            "nobody under the limit: all healthy, rotated"
        );
        query.max_latency = None;
        query.min_samples = 6;
        assert_eq!(
            decide(Algorithm::Latency, &cands, &query).chosen.len(),
            3,
            "not enough samples yet"
        );
    }

    #[test]
    fn nothing_healthy_means_nothing_chosen() {
        let cands = [c(0, false, 1), c(1, false, 1)];
        for algorithm in [
            Algorithm::RoundRobin,
            Algorithm::Weighted,
            Algorithm::Failover,
            Algorithm::Geolocation,
            Algorithm::Latency,
        ] {
            assert!(
                decide(algorithm, &cands, &q(8, 0)).chosen.is_empty(),
                "{algorithm:?}"
            );
        }
    }
}
