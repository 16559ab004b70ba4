//! Whether overwatch hears this agent: each overwatch node answers every report with a
//! verdict (accepted, or rejected and why), and a node that cannot open our packets says
//! so. This task turns those answers, and their absence, into log lines an operator finds
//! (`journalctl -u opengslb-agent | grep -E "(error|fail|timeout|refused)"`), metrics, and
//! a word for the agent-check log.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use opengslb_proto::member::Event;
use opengslb_proto::wire::{Ack, RejectCause, Verdict};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Gauge: 1 while some overwatch node accepted a report lately.
pub const HEARD: &str = "opengslb_agent_overwatch_heard";
/// Gauge: overwatch nodes whose latest verdict accepted our report.
pub const NODES_ACCEPTING: &str = "opengslb_agent_overwatch_nodes_accepting";
/// Gauge per `cause`: 1 for the reason overwatch does not hear us, 0 for the others.
pub const PROBLEM: &str = "opengslb_agent_overwatch_problem";
/// Counter per `cause`: verdicts that rejected a report.
pub const REJECTED: &str = "opengslb_agent_reports_rejected_total";

/// A problem repeats in the log this often while it lasts.
const REPEAT: Duration = Duration::from_secs(300);

/// Why overwatch does not hear us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A node refused our reports.
    Rejected(RejectCause),
    /// A configured overwatch address could not open our packets.
    Key,
    /// No answer at all.
    Unreachable,
}

impl Problem {
    /// The metrics label and the agent-check log word.
    pub fn label(&self) -> &'static str {
        match self {
            Problem::Rejected(cause) => cause.label(),
            Problem::Key => "key",
            Problem::Unreachable => "unreachable",
        }
    }

    const ALL: [Problem; 7] = [
        Problem::Key,
        Problem::Unreachable,
        Problem::Rejected(RejectCause::Token),
        Problem::Rejected(RejectCause::Pin),
        Problem::Rejected(RejectCause::Network),
        Problem::Rejected(RejectCause::RegistrationRate),
        Problem::Rejected(RejectCause::NoService),
    ];
}

/// What to do about a rejection, in the operator's words.
fn remedy(cause: RejectCause) -> &'static str {
    match cause {
        RejectCause::Token => {
            "identity.service_token is not the token overwatch.agent_tokens holds for the service"
        }
        RejectCause::Pin => {
            "this agent id is pinned to another certificate (the key changed, or another host uses this id); if this host was re-imaged, remove the old pin: opengslb-cli agents delete <agent id>"
        }
        RejectCause::Network => {
            "a backend address lies outside overwatch.agent_networks for its service"
        }
        RejectCause::RegistrationRate => {
            "new agents arrive faster than overwatch.agent_registration admits them; retried with the next report"
        }
        RejectCause::NoService => "the report has no backend, so no service token is proven",
    }
}

/// One overwatch node's latest verdict.
#[derive(Debug)]
struct Node {
    at: Instant,
    verdict: Verdict,
    from: SocketAddr,
    logged: Option<Instant>,
}

/// The state the task keeps.
#[derive(Debug)]
pub struct Hearing {
    agent_id: String,
    /// `gossip.overwatch_nodes` as configured, for the log.
    seeds: Vec<String>,
    /// A verdict or notice older than this no longer counts.
    window: Duration,
    started: Instant,
    nodes: BTreeMap<String, Node>,
    key_mismatch: BTreeMap<SocketAddr, Instant>,
    /// The problem logged last and when (None: heard, or not yet decided).
    current: Option<(Problem, Instant)>,
    /// Whether overwatch was heard since start (for the "heard again" line).
    heard_once: bool,
    words: watch::Sender<&'static str>,
}

impl Hearing {
    /// A tracker for `agent_id`'s reports to `seeds`, published every `heartbeat`: no
    /// answer within three heartbeats is a problem.
    pub fn new(
        agent_id: String,
        seeds: Vec<String>,
        heartbeat: Duration,
    ) -> (Hearing, watch::Receiver<&'static str>) {
        let (words, rx) = watch::channel("waiting");
        let hearing = Hearing {
            agent_id,
            seeds,
            window: (heartbeat * 3).max(Duration::from_secs(3)),
            started: Instant::now(),
            nodes: BTreeMap::new(),
            key_mismatch: BTreeMap::new(),
            current: None,
            heard_once: false,
            words,
        };
        for problem in Problem::ALL {
            metrics::gauge!(PROBLEM, "cause" => problem.label()).set(0.0);
        }
        metrics::gauge!(HEARD).set(0.0);
        (hearing, rx)
    }

    /// Runs until `shutdown`, reading the gossip member's events.
    pub async fn run(mut self, mut events: mpsc::Receiver<Event>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                event = events.recv() => match event {
                    Some(Event::Ack(ack, from)) => self.ack(ack, from, Instant::now()),
                    Some(Event::KeyMismatch(from)) => {
                        self.key_mismatch.insert(from, Instant::now());
                    }
                    Some(_) => continue,
                    None => return,
                },
                _ = tick.tick() => {}
            }
            self.evaluate(Instant::now());
        }
    }

    fn ack(&mut self, ack: Ack, from: SocketAddr, now: Instant) {
        if ack.agent_id != self.agent_id {
            return;
        }
        if let Verdict::Rejected { cause, .. } = &ack.verdict {
            metrics::counter!(REJECTED, "cause" => cause.label()).increment(1);
        }
        let node = self.nodes.entry(ack.node.clone()).or_insert(Node {
            at: now,
            verdict: Verdict::Accepted,
            from,
            logged: None,
        });
        let changed = node.verdict != ack.verdict || node.logged.is_none();
        let repeat = node
            .logged
            .is_some_and(|at| now.duration_since(at) >= REPEAT);
        node.at = now;
        node.from = from;
        node.verdict = ack.verdict;
        if changed || (repeat && node.verdict != Verdict::Accepted) {
            node.logged = Some(now);
            match &node.verdict {
                Verdict::Accepted => tracing::info!(
                    node = %ack.node,
                    %from,
                    "overwatch node accepts this agent's reports"
                ),
                Verdict::Rejected { cause, detail } => tracing::warn!(
                    node = %ack.node,
                    %from,
                    cause = cause.label(),
                    overwatch_said = %detail,
                    "overwatch node refused this agent's report: {}",
                    remedy(*cause)
                ),
            }
        }
    }

    /// The problem now, if overwatch does not hear us (or `None` before the first window).
    fn problem(&self, now: Instant) -> Option<Problem> {
        let fresh = |at: &Instant| now.duration_since(*at) < self.window;
        if self
            .nodes
            .values()
            .any(|n| fresh(&n.at) && n.verdict == Verdict::Accepted)
        {
            return None;
        }
        if let Some(cause) = self.nodes.values().find_map(|n| match &n.verdict {
            Verdict::Rejected { cause, .. } if fresh(&n.at) => Some(*cause),
            _ => None,
        }) {
            return Some(Problem::Rejected(cause));
        }
        if self.key_mismatch.values().any(fresh) {
            return Some(Problem::Key);
        }
        let last_heard = self.nodes.values().map(|n| n.at).max();
        let silent_since = last_heard.unwrap_or(self.started);
        (now.duration_since(silent_since) >= self.window).then_some(Problem::Unreachable)
    }

    fn evaluate(&mut self, now: Instant) {
        let accepting = self
            .nodes
            .values()
            .filter(|n| now.duration_since(n.at) < self.window && n.verdict == Verdict::Accepted)
            .count();
        metrics::gauge!(NODES_ACCEPTING).set(accepting as f64);
        let problem = self.problem(now);
        let heard = accepting > 0;
        metrics::gauge!(HEARD).set(if heard { 1.0 } else { 0.0 });
        for p in Problem::ALL {
            let on = problem.as_ref() == Some(&p);
            metrics::gauge!(PROBLEM, "cause" => p.label()).set(if on { 1.0 } else { 0.0 });
        }
        let word = match (&problem, heard) {
            (Some(p), _) => p.label(),
            (None, true) => "heard",
            (None, false) => "waiting",
        };
        self.words.send_if_modified(|w| {
            let changed = *w != word;
            *w = word;
            changed
        });
        match problem {
            None if heard => {
                if self.current.take().is_some() {
                    tracing::info!("overwatch hears this agent again");
                } else if !self.heard_once {
                    tracing::info!(nodes = accepting, "overwatch hears this agent");
                }
                self.heard_once = true;
            }
            None => {}
            Some(problem) => {
                let due = match &self.current {
                    Some((logged, at)) => *logged != problem || now.duration_since(*at) >= REPEAT,
                    None => true,
                };
                if due {
                    self.log(&problem);
                    self.current = Some((problem, now));
                }
            }
        }
    }

    fn log(&self, problem: &Problem) {
        let seeds = self.seeds.join(", ");
        match problem {
            Problem::Rejected(cause) => tracing::warn!(
                cause = cause.label(),
                "overwatch refused every report of this agent for {:?}: its backends are not in DNS: {}",
                self.window,
                remedy(*cause)
            ),
            Problem::Key => {
                let at = self
                    .key_mismatch
                    .keys()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                tracing::warn!(
                    cause = "key",
                    overwatch = %at,
                    "overwatch cannot open this agent's packets (decrypt failed): gossip.encryption_key differs from overwatch's; its backends are not in DNS"
                );
            }
            Problem::Unreachable => tracing::warn!(
                cause = "unreachable",
                overwatch_nodes = %seeds,
                "no overwatch node acknowledged a report for {:?} (timeout): check gossip.overwatch_nodes, that overwatch runs, and that UDP reaches it; its backends are not in DNS",
                self.window
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(node: &str, verdict: Verdict) -> Ack {
        Ack {
            node: node.into(),
            agent_id: "eu-abc".into(),
            version: 1,
            verdict,
        }
    }

    fn hearing() -> Hearing {
        Hearing::new(
            "eu-abc".into(),
            vec!["127.0.0.1:7946".to_owned()],
            Duration::from_secs(1),
        )
        .0
    }

    #[tokio::test(start_paused = true)]
    async fn silence_then_a_key_notice_then_a_rejection_then_acceptance() {
        let mut h = hearing();
        let from: SocketAddr = "127.0.0.1:7946".parse().expect("addr");
        let t0 = h.started;
        assert_eq!(
            h.problem(t0),
            None,
            "nothing is decided within the first window"
        );
        assert_eq!(
            h.problem(t0 + Duration::from_secs(3)),
            Some(Problem::Unreachable)
        );
        h.key_mismatch.insert(from, t0 + Duration::from_secs(3));
        assert_eq!(h.problem(t0 + Duration::from_secs(4)), Some(Problem::Key));
        let rejected = Verdict::Rejected {
            cause: RejectCause::Token,
            detail: "token not valid".into(),
        };
        h.ack(ack("ow-1", rejected), from, t0 + Duration::from_secs(4));
        assert_eq!(
            h.problem(t0 + Duration::from_secs(5)),
            Some(Problem::Rejected(RejectCause::Token)),
            "a verdict says more than a notice"
        );
        h.ack(
            ack("ow-2", Verdict::Accepted),
            from,
            t0 + Duration::from_secs(5),
        );
        assert_eq!(
            h.problem(t0 + Duration::from_secs(6)),
            None,
            "one node hears us"
        );
        assert_eq!(
            h.problem(t0 + Duration::from_secs(9)),
            Some(Problem::Unreachable),
            "answers older than the window do not count"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn another_agents_verdict_is_ignored() {
        let mut h = hearing();
        let mut other = ack("ow-1", Verdict::Accepted);
        other.agent_id = "eu-other".into();
        h.ack(other, "127.0.0.1:7946".parse().expect("addr"), h.started);
        assert!(h.nodes.is_empty());
    }
}
