//! Membership and reports on the in-memory network with paused time (deterministic:
//! only foca's own timers move the clock), plus one run over real UDP.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::identity::AgentIdentity;
use crate::wire::{StatusReport, VersionClock};

const TOKEN: &str = "token-0123456789abcdef";

fn settings(role: Role, name: &str, seeds: Vec<SocketAddr>, key: u8) -> GossipSettings {
    let mut s = GossipSettings::lan(
        "127.0.0.1:0".parse().expect("addr"),
        seeds,
        vec![ClusterKey::from_bytes([key; 32])],
        role,
        name.into(),
    );
    s.tokens = BTreeMap::from([("app".to_owned(), TOKEN.to_owned())]);
    s.probe_period = Duration::from_millis(200);
    s.probe_timeout = Duration::from_millis(100);
    s.suspect_to_down = Duration::from_millis(400);
    s
}

/// A member on the in-memory network at `ip`.
fn mem_member(
    net: &MemNetwork,
    ip: &str,
    role: Role,
    name: &str,
    seeds: Vec<SocketAddr>,
    key: u8,
    stop: CancellationToken,
) -> GossipHandle {
    let transport = net
        .bind(format!("{ip}:7946").parse().expect("addr"))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let addr = transport.local_addr();
    spawn(transport, addr, settings(role, name, seeds, key), stop)
}

/// The overwatch member every test's agents join through (key 7).
fn overwatch(net: &MemNetwork, stop: CancellationToken) -> GossipHandle {
    mem_member(net, "10.0.0.1", Role::Overwatch, "ow-1", vec![], 7, stop)
}

/// An agent with key 7 that joins through `seed`.
fn agent(
    net: &MemNetwork,
    ip: &str,
    name: &str,
    seed: SocketAddr,
    stop: CancellationToken,
) -> GossipHandle {
    mem_member(net, ip, Role::Agent, name, vec![seed], 7, stop)
}

fn report(agent: &AgentIdentity, version: u64) -> SignedReport {
    let report = StatusReport {
        agent_id: agent.agent_id().into(),
        region: "eu".into(),
        version,
        backends: Vec::new(),
        leaving: false,
    };
    SignedReport::sign(&report, agent, TOKEN).expect("sign")
}

async fn publish(member: &GossipHandle, report: &SignedReport) {
    member
        .commands
        .send(Command::Publish(report.clone()))
        .await
        .expect("publish");
}

/// The next report delivered within 2 s.
async fn next_report(events: &mut mpsc::Receiver<Event>) -> Option<SignedReport> {
    match next_event(events, Duration::from_secs(2), |e| {
        matches!(e, Event::Report(_))
    })
    .await
    {
        Some(Event::Report(r)) => Some(r.signed().clone()),
        _ => None,
    }
}

/// The next event matching `want`, within `limit`.
async fn next_event(
    events: &mut mpsc::Receiver<Event>,
    limit: Duration,
    want: impl Fn(&Event) -> bool,
) -> Option<Event> {
    tokio::time::timeout(limit, async {
        while let Some(event) = events.recv().await {
            if want(&event) {
                return Some(event);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

fn is_up(name: &'static str) -> impl Fn(&Event) -> bool {
    move |e| matches!(e, Event::MemberUp(id) if id.name == name)
}

fn is_down(name: &'static str) -> impl Fn(&Event) -> bool {
    move |e| matches!(e, Event::MemberDown(id) if id.name == name)
}

#[test]
fn an_all_addresses_bind_announces_the_address_that_reaches_the_seeds() {
    let any: SocketAddr = "0.0.0.0:7946".parse().expect("addr");
    let seed: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    assert_eq!(
        routable(any, &[seed]),
        "127.0.0.1:7946".parse::<SocketAddr>().expect("addr")
    );
    let bound: SocketAddr = "127.0.0.5:7000".parse().expect("addr");
    assert_eq!(
        routable(bound, &[seed]),
        bound,
        "a specific bind is announced as it is"
    );
    assert_eq!(
        routable(any, &[]),
        any,
        "no seed to tell: unchanged (and a warning)"
    );
}

#[tokio::test(start_paused = true)]
async fn reports_reach_overwatch_and_a_leaving_agent_is_down_at_once() {
    let net = MemNetwork::new();
    let shutdown = CancellationToken::new();
    let mut overwatch = overwatch(&net, shutdown.clone());
    let agent_stop = shutdown.child_token();
    let agent = agent(
        &net,
        "10.0.1.1",
        "eu-agent",
        overwatch.identity.addr,
        agent_stop.clone(),
    );
    let up = next_event(
        &mut overwatch.events,
        Duration::from_secs(5),
        is_up("eu-agent"),
    )
    .await;
    assert!(up.is_some(), "the agent joins through its seed");

    let me = AgentIdentity::generate("eu").expect("identity");
    let mut clock = VersionClock::default();
    let first = report(&me, clock.next(now_us()));
    publish(&agent, &first).await;
    assert_eq!(
        next_report(&mut overwatch.events).await,
        Some(first.clone()),
        "delivered as sent"
    );
    // Sending the same version again delivers nothing new; the newer one arrives.
    publish(&agent, &first).await;
    let newer = report(&me, clock.next(now_us()));
    publish(&agent, &newer).await;
    assert_eq!(
        next_report(&mut overwatch.events).await,
        Some(newer),
        "the duplicate was not delivered"
    );

    let left = Instant::now();
    agent_stop.cancel();
    agent.task.await.expect("agent task ends after leaving");
    let down = next_event(
        &mut overwatch.events,
        Duration::from_secs(5),
        is_down("eu-agent"),
    )
    .await;
    assert!(down.is_some(), "a graceful leave is seen");
    // Virtual time: only foca's timers advance it, so this is exact, not a race.
    assert!(
        left.elapsed() < Duration::from_millis(100),
        "at once, not after a probe and the suspicion timeout: {:?}",
        left.elapsed()
    );
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_dead_member_is_detected_and_a_wrong_key_never_joins() {
    let net = MemNetwork::new();
    let shutdown = CancellationToken::new();
    let mut overwatch = overwatch(&net, shutdown.clone());
    let _stranger = mem_member(
        &net,
        "10.0.9.9",
        Role::Agent,
        "stranger",
        vec![overwatch.identity.addr],
        8,
        shutdown.clone(),
    );
    let agent = agent(
        &net,
        "10.0.1.1",
        "mortal",
        overwatch.identity.addr,
        CancellationToken::new(),
    );
    assert!(
        next_event(
            &mut overwatch.events,
            Duration::from_secs(5),
            is_up("mortal")
        )
        .await
        .is_some()
    );
    // Kill without leaving: abort the task (no leave message is sent).
    agent.task.abort();
    let died = Instant::now();
    assert!(
        next_event(
            &mut overwatch.events,
            Duration::from_secs(5),
            is_down("mortal")
        )
        .await
        .is_some(),
        "failed probes declare it down"
    );
    // A probe period or two to notice, then the suspicion timeout (test settings).
    let took = died.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(1500),
        "declared down after the suspicion timeout, within a few probe periods: {took:?}"
    );
    // Everything above ran with the stranger knocking with another key.
    assert!(
        next_event(
            &mut overwatch.events,
            Duration::from_millis(300),
            is_up("stranger")
        )
        .await
        .is_none(),
        "a member with another key never appears"
    );
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_partitioned_agent_goes_down_and_comes_back_when_the_link_heals() {
    let net = MemNetwork::new();
    let shutdown = CancellationToken::new();
    let mut overwatch = overwatch(&net, shutdown.clone());
    let agent = agent(
        &net,
        "10.0.1.1",
        "island",
        overwatch.identity.addr,
        shutdown.clone(),
    );
    assert!(
        next_event(
            &mut overwatch.events,
            Duration::from_secs(5),
            is_up("island")
        )
        .await
        .is_some()
    );
    net.partition(overwatch.identity.addr, agent.identity.addr);
    assert!(
        next_event(
            &mut overwatch.events,
            Duration::from_secs(5),
            is_down("island")
        )
        .await
        .is_some(),
        "a partitioned agent is declared down"
    );
    net.heal();
    // The agent re-announces to its seed while it sees no members, or is renewed.
    assert!(
        next_event(
            &mut overwatch.events,
            Duration::from_secs(30),
            is_up("island")
        )
        .await
        .is_some(),
        "after the partition heals the agent is back"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn over_real_udp_a_report_reaches_overwatch() {
    let shutdown = CancellationToken::new();
    let mut overwatch = start(
        settings(Role::Overwatch, "ow-udp", vec![], 7),
        shutdown.clone(),
    )
    .await
    .expect("bind overwatch");
    let agent = start(
        settings(Role::Agent, "udp-agent", vec![overwatch.identity.addr], 7),
        shutdown.clone(),
    )
    .await
    .expect("bind agent");
    let me = AgentIdentity::generate("eu").expect("identity");
    let signed = report(&me, 1);
    publish(&agent, &signed).await;
    assert_eq!(
        next_report(&mut overwatch.events).await,
        Some(signed),
        "the report crossed a real socket sealed and opened"
    );
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_forged_report_with_the_largest_version_cannot_silence_its_victim() {
    let net = MemNetwork::new();
    let shutdown = CancellationToken::new();
    let mut overwatch = overwatch(&net, shutdown.clone());
    let victim = agent(
        &net,
        "10.0.1.1",
        "victim",
        overwatch.identity.addr,
        shutdown.clone(),
    );
    // The attacker holds the cluster key (a compromised agent host).
    let attacker = agent(
        &net,
        "10.0.6.6",
        "attacker",
        overwatch.identity.addr,
        shutdown.clone(),
    );
    let me = AgentIdentity::generate("eu").expect("identity");
    let thief = AgentIdentity::generate("eu").expect("identity");

    // Unsigned: the victim's id and version, a signature of zeros.
    let mut unsigned = report(&me, u64::MAX);
    unsigned.signature = vec![0; 64];
    // Signed, but by the attacker's own key while claiming the victim's id.
    let claim = StatusReport {
        agent_id: me.agent_id().into(),
        region: "eu".into(),
        version: u64::MAX,
        backends: Vec::new(),
        leaving: true,
    };
    let impostor = SignedReport::sign(&claim, &thief, TOKEN).expect("sign");
    publish(&attacker, &unsigned).await;
    publish(&attacker, &impostor).await;

    let real = report(&me, 1);
    publish(&victim, &real).await;
    assert_eq!(
        next_report(&mut overwatch.events).await,
        Some(real),
        "the victim's own report is delivered; neither forgery was, nor did it raise the version"
    );
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_member_that_only_claims_overwatch_is_sent_no_report() {
    let net = MemNetwork::new();
    let shutdown = CancellationToken::new();
    let mut real = overwatch(&net, shutdown.clone());
    // Holds the cluster key but no service token of the agent's: it can say
    // "overwatch", it cannot prove it.
    let mut pretender = {
        let transport = net
            .bind("10.0.6.6:7946".parse().expect("addr"))
            .expect("bind");
        let addr = transport.local_addr();
        let mut s = settings(Role::Overwatch, "ow-fake", vec![real.identity.addr], 7);
        s.tokens = BTreeMap::from([("other".to_owned(), "other-token-0123456789".to_owned())]);
        spawn(transport, addr, s, shutdown.clone())
    };
    let agent = agent(
        &net,
        "10.0.1.1",
        "agent",
        real.identity.addr,
        shutdown.clone(),
    );
    assert!(
        next_event(
            &mut pretender.events,
            Duration::from_secs(10),
            is_up("agent")
        )
        .await
        .is_some(),
        "the pretender is a member: it sees the agent"
    );
    // Give the agent time to challenge both, then publish a run of reports.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let me = AgentIdentity::generate("eu").expect("identity");
    let sent: Vec<SignedReport> = (1..=5).map(|version| report(&me, version)).collect();
    for signed in &sent {
        publish(&agent, signed).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut heard = Vec::new();
    while let Some(signed) = next_report(&mut real.events).await {
        heard.push(signed);
    }
    assert_eq!(heard, sent, "the proven overwatch hears every report");
    assert!(
        next_event(&mut pretender.events, Duration::from_secs(5), |e| matches!(
            e,
            Event::Report(_)
        ))
        .await
        .is_none(),
        "the unproven one is sent none, directly or by gossip"
    );
    shutdown.cancel();
}
