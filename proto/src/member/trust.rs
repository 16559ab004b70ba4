//! Which members are overwatch nodes: proven, not claimed.
//!
//! A member's role is its own word, and any holder of the cluster key can join saying
//! "overwatch". So a member treats another as overwatch (sends it reports and latency,
//! relays reports to it) only once it answered a challenge with a proof keyed by a
//! service token the challenger holds (`wire::Proof`). Overwatch holds every service's
//! token, an agent only its own: an agent host that is compromised can pass as overwatch
//! only to agents of its own service, whose token it already has and whose reports carry
//! nothing it could not read anyway.
//!
//! Configured seeds are trusted by configuration and need no proof.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};

use super::{MemberId, Role};
use crate::log_limit::LogLimit;
use crate::wire::{Challenge, Proof};

/// Members proven to be overwatch nodes, shared between the member task and foca's
/// broadcast handler (which decides who is sent reports). Only the member task writes it.
#[derive(Clone, Default)]
pub(crate) struct Proven(Arc<Mutex<HashSet<MemberId>>>);

impl Proven {
    pub(crate) fn contains(&self, member: &MemberId) -> bool {
        self.lock().contains(member)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<MemberId>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Overwatch members proven, and members that claimed the role but did not prove it.
pub const OVERWATCH_PROVEN: &str = "opengslb_gossip_overwatch_proven";
/// Proofs that did not hold (a member claiming overwatch with a wrong proof).
pub const OVERWATCH_PROOFS_FAILED: &str = "opengslb_gossip_overwatch_proofs_failed_total";

/// A challenge not answered yet.
struct Pending {
    nonce: [u8; 16],
    asked: u32,
    warned: bool,
}

/// Challenges out, proofs in, and the tokens both are keyed by.
pub(crate) struct Trust {
    role: Role,
    /// Service → token: an agent's own services, or overwatch's `agent_tokens`.
    tokens: BTreeMap<String, String>,
    proven: Proven,
    pending: HashMap<MemberId, Pending>,
    rng: SystemRandom,
    failures: LogLimit,
}

/// Challenges unanswered this many times are worth a warning (once per member).
const WARN_AFTER: u32 = 3;

impl Trust {
    pub(crate) fn new(role: Role, tokens: BTreeMap<String, String>, proven: Proven) -> Trust {
        Trust {
            role,
            tokens,
            proven,
            pending: HashMap::new(),
            rng: SystemRandom::new(),
            failures: LogLimit::every(Duration::from_secs(10)),
        }
    }

    /// New tokens (a configuration reload). Proofs already accepted stand: they showed
    /// the member held a token when asked.
    pub(crate) fn set_tokens(&mut self, tokens: BTreeMap<String, String>) {
        self.tokens = tokens;
    }

    /// A member claims overwatch (it came up, or is still unproven): the challenge to
    /// send it, or `None` when it is proven or we hold no token to check a proof with.
    pub(crate) fn challenge(&mut self, member: &MemberId) -> Option<Challenge> {
        if member.role != Role::Overwatch || self.tokens.is_empty() || self.is_proven(member) {
            return None;
        }
        let mut nonce = [0u8; 16];
        self.rng
            .fill(&mut nonce)
            .expect("the operating system's random number generator failed");
        let pending = self.pending.entry(member.clone()).or_insert(Pending {
            nonce,
            asked: 0,
            warned: false,
        });
        pending.nonce = nonce;
        pending.asked += 1;
        if pending.asked > WARN_AFTER && !pending.warned {
            pending.warned = true;
            tracing::warn!(member = ?member, challenges = pending.asked - 1, "a member claims to be overwatch and has not proven it; it is sent no reports");
        }
        Some(Challenge {
            nonce,
            services: self.tokens.keys().cloned().collect(),
        })
    }

    /// Our proof for a challenge, if we are overwatch and hold a token it names.
    pub(crate) fn answer(&self, challenge: &Challenge, me: &MemberId) -> Option<Proof> {
        if self.role != Role::Overwatch {
            return None;
        }
        let (service, token) = challenge
            .services
            .iter()
            .find_map(|s| self.tokens.get_key_value(s))?;
        Some(Proof::make(challenge.nonce, service, token, &encode(me)))
    }

    /// A proof arrived: the member whose challenge it answers is proven if it holds.
    pub(crate) fn accept(&mut self, proof: &Proof) -> Option<MemberId> {
        let (member, nonce) = self
            .pending
            .iter()
            .find(|(_, p)| p.nonce == proof.nonce)
            .map(|(m, p)| (m.clone(), p.nonce))?;
        let holds = self
            .tokens
            .get(&proof.service)
            .is_some_and(|token| proof.holds(&nonce, token, &encode(&member)));
        if !holds {
            metrics::counter!(OVERWATCH_PROOFS_FAILED).increment(1);
            if let Some(skipped) = self.failures.ready(Instant::now()) {
                tracing::warn!(member = ?member, service = %proof.service, not_logged_since_last = skipped, "a member claiming to be overwatch sent a proof that does not hold; it is sent no reports");
            }
            return None;
        }
        self.pending.remove(&member);
        self.proven.lock().insert(member.clone());
        self.record();
        tracing::debug!(member = ?member, "overwatch member proven");
        Some(member)
    }

    /// A member is gone: a new incarnation proves itself again.
    pub(crate) fn forget(&mut self, member: &MemberId) {
        self.pending.remove(member);
        if self.proven.lock().remove(member) {
            self.record();
        }
    }

    pub(crate) fn is_proven(&self, member: &MemberId) -> bool {
        self.proven.contains(member)
    }

    fn record(&self) {
        metrics::gauge!(OVERWATCH_PROVEN).set(self.proven.lock().len() as f64);
    }
}

fn encode(member: &MemberId) -> Vec<u8> {
    postcard::to_allocvec(member).expect("postcard encodes a MemberId into a Vec")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(role: Role, name: &str) -> MemberId {
        MemberId {
            addr: "127.0.0.1:7946".parse().expect("addr"),
            role,
            name: name.into(),
            bump: 1,
        }
    }

    fn tokens(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(s, t)| ((*s).to_owned(), (*t).to_owned()))
            .collect()
    }

    const APP: &str = "app-token-0123456789";

    #[test]
    fn an_overwatch_holding_the_token_is_proven_and_a_claimant_is_not() {
        let all = tokens(&[("app", APP), ("db", "db-token-0123456789x")]);
        let mut agent = Trust::new(Role::Agent, tokens(&[("app", APP)]), Proven::default());
        let real = Trust::new(Role::Overwatch, all, Proven::default());
        let real_id = member(Role::Overwatch, "ow1");
        let challenge = agent.challenge(&real_id).expect("challenge");
        let proof = real.answer(&challenge, &real_id).expect("answer");
        assert_eq!(agent.accept(&proof), Some(real_id.clone()));
        assert!(agent.is_proven(&real_id));
        assert!(agent.challenge(&real_id).is_none(), "proven once is enough");

        // A holder of the db token only (another service's agent) claims overwatch.
        let liar_id = member(Role::Overwatch, "ow-fake");
        let liar = Trust::new(
            Role::Overwatch,
            tokens(&[("db", "db-token-0123456789x")]),
            Proven::default(),
        );
        let challenge = agent.challenge(&liar_id).expect("challenge");
        assert!(
            liar.answer(&challenge, &liar_id).is_none(),
            "holds no app token"
        );
        // Relaying the real node's proof: bound to the real node's identity.
        let relayed = real.answer(&challenge, &real_id).expect("answer");
        assert_eq!(agent.accept(&relayed), None);
        // Guessing.
        let guessed = Proof::make(
            challenge.nonce,
            "app",
            "app-token-guess-0000",
            &encode(&liar_id),
        );
        assert_eq!(agent.accept(&guessed), None);
        assert!(!agent.is_proven(&liar_id));

        agent.forget(&real_id);
        assert!(
            !agent.is_proven(&real_id),
            "a member that went away proves itself again"
        );
    }

    #[test]
    fn agents_answer_no_challenge_and_members_without_tokens_ask_none() {
        let agent = Trust::new(Role::Agent, tokens(&[("app", APP)]), Proven::default());
        let challenge = Challenge {
            nonce: [1; 16],
            services: vec!["app".into()],
        };
        assert!(
            agent
                .answer(&challenge, &member(Role::Agent, "a"))
                .is_none(),
            "an agent never proves overwatch, even holding the token"
        );
        let mut empty = Trust::new(Role::Overwatch, BTreeMap::new(), Proven::default());
        assert!(empty.challenge(&member(Role::Overwatch, "ow2")).is_none());
        let mut agent = agent;
        assert!(
            agent.challenge(&member(Role::Agent, "b")).is_none(),
            "only overwatch claims are checked"
        );
    }
}
