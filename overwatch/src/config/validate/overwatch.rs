//! `overwatch:` — the node's identity, agent tokens, gossip and staleness.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Collector, MIN_TOKEN_LEN, listen_address, positive};
use crate::config::Problem;
use crate::config::schema::RawConfig;
use crate::config::settings::{
    GossipSettings, LatencyPrefixes, RegistrationSettings, StaleSettings,
};
use ipnet::IpNet;
use opengslb_proto::seal::KeyText;

/// What `overwatch:` says beyond validation and geolocation.
pub(super) struct Overwatch {
    pub(super) node_id: String,
    pub(super) agent_tokens: BTreeMap<String, String>,
    pub(super) agent_networks: BTreeMap<String, Vec<IpNet>>,
    pub(super) agent_registration: RegistrationSettings,
    pub(super) latency_prefixes: LatencyPrefixes,
    pub(super) gossip: Option<GossipSettings>,
    pub(super) stale: StaleSettings,
}

pub(super) fn overwatch(c: &mut Collector, raw: &RawConfig) -> Overwatch {
    let node_id = match &raw.overwatch.identity {
        Some(identity) if identity.node_id.value.trim().is_empty() => {
            c.at(
                &identity.node_id,
                "overwatch.identity.node_id: must not be empty",
            );
            String::new()
        }
        Some(identity) => identity.node_id.value.trim().to_owned(),
        None => "overwatch".to_owned(),
    };
    if let Some(region) = raw
        .overwatch
        .identity
        .as_ref()
        .and_then(|i| i.region.as_deref())
    {
        c.warnings.push(format!(
            "overwatch.identity.region ({region}) is accepted and has no effect: every node answers for every region"
        ));
    }

    let mut agent_tokens = BTreeMap::new();
    for (service, token) in &raw.overwatch.agent_tokens {
        if token.value.trim().chars().count() < MIN_TOKEN_LEN {
            c.at(token, format!("overwatch.agent_tokens.{service}: a token must be at least {MIN_TOKEN_LEN} characters"));
        }
        agent_tokens.insert(service.clone(), token.value.trim().to_owned());
    }

    let mut agent_networks = BTreeMap::new();
    for (service, nets) in &raw.overwatch.agent_networks {
        if !agent_tokens.contains_key(service) {
            if let Some(first) = nets.first() {
                c.at(first, format!("overwatch.agent_networks.{service}: no overwatch.agent_tokens entry for {service:?}, so no agent can report it"));
            }
        }
        let mut parsed = Vec::new();
        for net in nets {
            match super::parse_net_or_ip(&net.value) {
                Some(n) => parsed.push(n),
                None => c.at(
                    net,
                    format!(
                        "overwatch.agent_networks.{service}: {:?} is not an IP address or CIDR",
                        net.value
                    ),
                ),
            }
        }
        if nets.is_empty() {
            c.problems.push(Problem { line: 0, column: 0, message: format!("overwatch.agent_networks.{service}: an empty list would refuse every backend; remove the entry to allow any address") });
        }
        agent_networks.insert(service.clone(), parsed);
    }
    let registration = &raw.overwatch.agent_registration;
    if registration.burst.value == 0 {
        c.at(
            &registration.burst,
            "overwatch.agent_registration.burst: must be at least 1",
        );
    }
    if !(registration.per_second.value.is_finite() && registration.per_second.value > 0.0) {
        c.at(
            &registration.per_second,
            "overwatch.agent_registration.per_second: must be more than 0",
        );
    }
    let agent_registration = RegistrationSettings {
        burst: registration.burst.value,
        per_second: registration.per_second.value,
    };
    let learning = &raw.overwatch.latency_learning;
    for (value, max, key) in [
        (&learning.ipv4_prefix, 32, "ipv4_prefix"),
        (&learning.ipv6_prefix, 128, "ipv6_prefix"),
    ] {
        if value.value == 0 || value.value > max {
            c.at(
                value,
                format!("overwatch.latency_learning.{key}: must be 1 to {max}"),
            );
        }
    }
    let latency_prefixes = LatencyPrefixes {
        ipv4: learning.ipv4_prefix.value,
        ipv6: learning.ipv6_prefix.value,
    };

    // OpenGSLB turns gossip off with an empty bind address: no agents, only checks.
    let gossip_off = raw
        .overwatch
        .gossip
        .as_ref()
        .is_some_and(|g| g.bind_address.value.trim().is_empty());
    if gossip_off {
        c.warnings.push("overwatch.gossip.bind_address is empty: gossip is off, no agent can report; backends are judged by validation checks alone".into());
    }
    if let Some(interval) = raw
        .overwatch
        .gossip
        .as_ref()
        .and_then(|g| g._gossip_interval.as_ref())
    {
        c.warnings.push(format!("overwatch.gossip.gossip_interval ({}) is accepted and has no effect: reports go to overwatch at once and membership gossip follows probe_interval", interval.value));
    }
    let gossip = raw.overwatch.gossip.as_ref().filter(|_| !gossip_off).and_then(|g| {
        let key = match &g.encryption_key {
            None => {
                c.problems.push(Problem { line: 0, column: 0, message: "overwatch.gossip.encryption_key is missing: gossip is always encrypted; generate one with `head -c 32 /dev/urandom | base64`".into() });
                None
            }
            Some(k) => match k.value.keys() {
                Ok(_) => Some(match &k.value {
                    KeyText::One(text) => vec![text.trim().to_owned()],
                    KeyText::Many(texts) => texts.iter().map(|t| t.trim().to_owned()).collect(),
                }),
                Err(e) => {
                    c.at(k, format!("overwatch.{e}"));
                    None
                }
            },
        };
        let bind = listen_address(c, &g.bind_address, "overwatch.gossip.bind_address");
        let advertise = g.advertise_address.as_ref().and_then(|a| listen_address(c, a, "overwatch.gossip.advertise_address"));
        let mut seeds = Vec::new();
        for seed in &g.seeds {
            match std::net::ToSocketAddrs::to_socket_addrs(seed.value.as_str()).map(|mut a| a.next()) {
                Ok(Some(addr)) => seeds.push(addr),
                _ => c.at(seed, format!("overwatch.gossip.seeds: {:?} is not HOST:PORT", seed.value)),
            }
        }
        let probe_interval = positive(c, &g.probe_interval, "overwatch.gossip.probe_interval", Duration::from_secs(1));
        let probe_timeout = positive(c, &g.probe_timeout, "overwatch.gossip.probe_timeout", Duration::from_millis(500));
        Some(GossipSettings { bind: bind?, advertise, encryption_keys: key?, probe_interval, probe_timeout, seeds })
    });
    let stale = StaleSettings {
        threshold: raw.overwatch.stale.threshold.value.0,
        remove_after: raw.overwatch.stale.remove_after.value.0,
    };
    if stale.threshold.is_zero() {
        c.at(
            &raw.overwatch.stale.threshold,
            "overwatch.stale.threshold: must be more than 0",
        );
    }
    if stale.remove_after < stale.threshold {
        c.at(
            &raw.overwatch.stale.remove_after,
            "overwatch.stale.remove_after: must not be shorter than the threshold",
        );
    }
    Overwatch {
        node_id,
        agent_tokens,
        agent_networks,
        agent_registration,
        latency_prefixes,
        gossip,
        stale,
    }
}
