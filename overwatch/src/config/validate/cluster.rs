//! `cluster:` — Raft ids, addresses, the secret and timing.

use std::time::Duration;

use super::{Collector, MIN_CLUSTER_SECRET_LEN, is_host_port, listen_address, positive};
use crate::cluster::tls::{ClusterTls, TlsKey, TlsPaths};
use crate::config::schema::RawCluster;
use crate::config::settings::ClusterSettings;

/// `cluster`: ids, addresses, secret and Raft timing.
pub(super) fn cluster_settings(c: &mut Collector, raw: &RawCluster) -> Option<ClusterSettings> {
    let node_id = raw.node_id.value;
    if node_id == 0 {
        c.at(&raw.node_id, "cluster.node_id: must be 1 or more");
    }
    let listen = listen_address(c, &raw.listen, "cluster.listen");
    if raw.secret.value.trim().chars().count() < MIN_CLUSTER_SECRET_LEN {
        c.at(&raw.secret, format!("cluster.secret: must be at least {MIN_CLUSTER_SECRET_LEN} characters; generate one with `head -c 24 /dev/urandom | base64`"));
    }
    let mut peers = std::collections::BTreeMap::new();
    for (id, addr) in &raw.peers {
        let text = addr.value.trim();
        if *id == 0 {
            c.at(addr, "cluster.peers: node ids start at 1");
        } else if !is_host_port(text) {
            c.at(
                addr,
                format!("cluster.peers.{id}: {text:?} is not HOST:PORT"),
            );
        }
        peers.insert(*id, text.to_owned());
    }
    // What can be checked without the peers: two ids at one address (the nodes would
    // take each other's messages), and this node's own entry pointing elsewhere than
    // where it listens (every peer would call the wrong port).
    let mut seen: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for (id, addr) in &raw.peers {
        let text = addr.value.trim();
        if let Some(other) = seen.insert(text, *id) {
            c.at(addr, format!("cluster.peers.{id}: {text} is also node {other}'s address; each node needs its own"));
        }
    }
    if let (Some(own), Some(listen)) = (raw.peers.get(&node_id), &listen) {
        let own_port = own
            .value
            .trim()
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok());
        let own_ip = own
            .value
            .trim()
            .rsplit_once(':')
            .and_then(|(h, _)| h.trim_matches(['[', ']']).parse::<std::net::IpAddr>().ok());
        if listen.port() != 0
            && own_port.is_some_and(|p| p != listen.port())
            && raw.advertise.is_none()
        {
            c.at(own, format!("cluster.peers.{node_id}: this node listens on port {} (cluster.listen) but its own peers entry says {}: the other nodes would call the wrong port", listen.port(), own.value.trim()));
        } else if !listen.ip().is_unspecified()
            && own_ip.is_some_and(|ip| ip != listen.ip())
            && raw.advertise.is_none()
        {
            c.at(own, format!("cluster.peers.{node_id}: this node listens on {} (cluster.listen) but its own peers entry says {}: the other nodes would call an address it does not listen on", listen.ip(), own.value.trim()));
        }
    }
    let advertise = match (&raw.advertise, peers.get(&node_id)) {
        (Some(a), _) => a.value.trim().to_owned(),
        (None, Some(own)) => own.clone(),
        (None, None) => {
            c.at(&raw.node_id, format!("cluster.peers: has no entry for this node ({node_id}); list every initial member, this one included, or set cluster.advertise"));
            String::new()
        }
    };
    let heartbeat_interval = positive(
        c,
        &raw.heartbeat_interval,
        "cluster.heartbeat_interval",
        Duration::from_millis(100),
    );
    let election_timeout = positive(
        c,
        &raw.election_timeout,
        "cluster.election_timeout",
        Duration::from_millis(500),
    );
    let write_timeout = positive(
        c,
        &raw.write_timeout,
        "cluster.write_timeout",
        Duration::from_secs(3),
    );
    if election_timeout < heartbeat_interval * 2 {
        if let Some(e) = &raw.election_timeout {
            c.at(
                e,
                "cluster.election_timeout: must be at least twice cluster.heartbeat_interval",
            );
        } else if let Some(h) = &raw.heartbeat_interval {
            c.at(h, "cluster.heartbeat_interval: must be at most half of cluster.election_timeout (500ms unless set)");
        }
    }
    let snapshot_logs = raw.snapshot_logs.as_ref().map_or(5000, |n| n.value);
    if let Some(n) = raw.snapshot_logs.as_ref().filter(|n| n.value == 0) {
        c.at(n, "cluster.snapshot_logs: must be 1 or more");
    }
    let tls = match (
        &raw.tls,
        raw.insecure_plaintext.as_ref().filter(|i| i.value),
    ) {
        (Some(_), Some(insecure)) => {
            c.at(
                insecure,
                "cluster.insecure_plaintext: cannot be true with cluster.tls; remove one",
            );
            None
        }
        (Some(t), None) => {
            let paths = TlsPaths {
                ca: t.ca.value.trim().into(),
                cert: t.cert.value.trim().into(),
                key: t.key.value.trim().into(),
            };
            // What a node will load at start is checked now: the files, the certificate
            // naming this node, signed by the CA, and the key that goes with it.
            if node_id > 0
                && let Err((key, why)) = ClusterTls::load(&paths, node_id)
            {
                let at = match key {
                    TlsKey::Ca => &t.ca,
                    TlsKey::Cert => &t.cert,
                    TlsKey::Key => &t.key,
                };
                c.at(at, format!("{}: {why}", key.name()));
            }
            Some(paths)
        }
        (None, Some(_)) => None,
        (None, None) => {
            c.at(&raw.node_id, "cluster: the Raft RPC needs `tls: {ca, cert, key}` (make them with `opengslb-cli cluster certs --out DIR --node 1 --node 2 --node 3`) or, knowingly, `insecure_plaintext: true`, which sends the secret and every write across the network readable");
            None
        }
    };
    Some(ClusterSettings {
        node_id,
        listen: listen?,
        advertise,
        secret: raw.secret.value.trim().to_owned(),
        peers,
        heartbeat_interval,
        election_timeout,
        write_timeout,
        snapshot_logs,
        tls,
    })
}
