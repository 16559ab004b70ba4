//! `overwatch:` — the node's identity, agent tokens, gossip and staleness.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Collector, MIN_TOKEN_LEN, listen_address, positive};
use crate::config::Problem;
use crate::config::schema::RawConfig;
use crate::config::settings::{GossipSettings, StaleSettings};

/// What `overwatch:` says beyond validation and geolocation.
pub(super) struct Overwatch {
    pub(super) node_id: String,
    pub(super) agent_tokens: BTreeMap<String, String>,
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

    let mut agent_tokens = BTreeMap::new();
    for (service, token) in &raw.overwatch.agent_tokens {
        if token.value.trim().chars().count() < MIN_TOKEN_LEN {
            c.at(token, format!("overwatch.agent_tokens.{service}: a token must be at least {MIN_TOKEN_LEN} characters"));
        }
        agent_tokens.insert(service.clone(), token.value.trim().to_owned());
    }

    let gossip = raw.overwatch.gossip.as_ref().and_then(|g| {
        let key = match &g.encryption_key {
            None => {
                c.problems.push(Problem { line: 0, column: 0, message: "overwatch.gossip.encryption_key is missing: gossip is always encrypted; generate one with `head -c 32 /dev/urandom | base64`".into() });
                None
            }
            Some(k) => match opengslb_proto::seal::ClusterKey::from_base64(Some(&k.value)) {
                Ok(_) => Some(k.value.trim().to_owned()),
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
        Some(GossipSettings { bind: bind?, advertise, encryption_key: key?, probe_interval, probe_timeout, seeds })
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
        gossip,
        stale,
    }
}
