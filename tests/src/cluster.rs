//! Three real overwatch processes forming a Raft cluster on loopback.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::gslb::API_TOKEN;
use crate::links::Mesh;
use crate::overwatch::{Overwatch, cli_binary, http_request};
use crate::{TempDir, poll_until};

/// Raft timing for tests: elections after 400 ms instead of the default 500 ms.
pub const TEST_TIMING: &str = "  heartbeat_interval: 100ms\n  election_timeout: 400ms\n";

/// The first part of every test cluster's secret; each cluster adds its own suffix, so
/// two clusters of concurrently running tests can never talk to each other.
pub const SECRET: &str = "cluster-secret-0123456789";

/// A cluster under test: node `i` (Raft id `i + 1`) runs in `dirs[i]`.
#[derive(Debug)]
pub struct TestCluster {
    /// The running nodes (`None`: stopped or killed).
    pub nodes: Vec<Option<Overwatch>>,
    /// Each node's directory (config and data).
    pub dirs: Vec<TempDir>,
    /// Each node's Raft RPC address.
    pub rpc: Vec<SocketAddr>,
    /// The part of the config every node shares (regions, domains, ...).
    pub body: String,
    /// Extra `cluster:` keys (indented two spaces), e.g. [`TEST_TIMING`].
    pub cluster_extra: String,
    /// Extra `overwatch:` keys (indented two spaces), e.g. gossip for agents.
    pub overwatch_extra: String,
    /// This cluster's secret.
    pub secret: String,
    /// The cluster CA and the certificates of nodes 1–4, made by `opengslb-cli cluster
    /// certs` (node 4 for tests that add a member).
    pub certs: TempDir,
    /// The relays every call between nodes passes through, when the test partitions the
    /// network ([`TestCluster::partitionable`]).
    pub mesh: Option<Mesh>,
    /// Plain HTTP between the nodes (`cluster.insecure_plaintext: true`) instead of TLS.
    pub plaintext: bool,
    /// Extra `api:` keys (indented two spaces), e.g. `max_overrides`.
    pub api_extra: String,
}

/// Makes a CA and certificates for nodes 1..=4 in `dir` with the CLI, as an operator
/// would.
pub fn make_certs(dir: &TempDir) {
    let out = std::process::Command::new(cli_binary())
        .args(["cluster", "certs", "--out"])
        .arg(dir.path())
        .args(["--node", "1", "--node", "2", "--node", "3", "--node", "4"])
        .output()
        .expect("run opengslb-cli cluster certs");
    assert!(
        out.status.success(),
        "opengslb-cli cluster certs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A loopback TCP port that was free a moment ago, for a Raft listener the peers must
/// know in advance. Taken below the kernel's ephemeral range (32768–60999), where
/// nothing else in the suite binds (everything else binds port 0), spread by process id
/// so concurrent test processes start far apart.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = std::process::id().wrapping_mul(97);
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = 20_000 + (base.wrapping_add(n) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl TestCluster {
    /// Starts three nodes with `body` (dns zones, regions, domains) and `cluster_extra`.
    pub fn start(label: &str, body: &str, cluster_extra: &str) -> TestCluster {
        TestCluster::start_with(label, "", body, cluster_extra)
    }

    /// [`TestCluster::start`] with extra `overwatch:` keys.
    pub fn start_with(
        label: &str,
        overwatch_extra: &str,
        body: &str,
        cluster_extra: &str,
    ) -> TestCluster {
        let mut cluster = TestCluster::prepare(label, overwatch_extra, body, cluster_extra);
        for i in 0..3 {
            cluster.restart(i);
        }
        cluster
    }

    /// A cluster with its directories, ports and secret chosen and no node started yet
    /// (start them with [`TestCluster::restart`]).
    pub fn prepare(
        label: &str,
        overwatch_extra: &str,
        body: &str,
        cluster_extra: &str,
    ) -> TestCluster {
        let mut cluster = TestCluster {
            nodes: Vec::new(),
            dirs: (0..3)
                .map(|i| TempDir::new(&format!("{label}-{i}")))
                .collect(),
            rpc: (0..3)
                .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
                .collect(),
            body: body.to_owned(),
            cluster_extra: cluster_extra.to_owned(),
            overwatch_extra: overwatch_extra.to_owned(),
            secret: format!("{SECRET}-{label}-{}", std::process::id()),
            certs: TempDir::new(&format!("{label}-certs")),
            mesh: None,
            plaintext: false,
            api_extra: String::new(),
        };
        make_certs(&cluster.certs);
        cluster.nodes = (0..3).map(|_| None).collect();
        cluster
    }

    /// [`TestCluster::start`] with every call between nodes relayed, so that the test can
    /// cut the network between them (`cluster.mesh`).
    pub fn partitionable(label: &str, body: &str, cluster_extra: &str) -> TestCluster {
        let mut cluster = TestCluster::prepare(label, "", body, cluster_extra);
        cluster.mesh = Some(Mesh::new(&cluster.rpc));
        for i in 0..3 {
            cluster.restart(i);
        }
        cluster
    }

    /// The `tls:` keys (indented two spaces) of node `id`.
    pub fn tls_yaml(&self, id: usize) -> String {
        format!(
            "  tls:\n    ca: {d}/ca.crt\n    cert: {d}/node-{id}.crt\n    key: {d}/node-{id}.key\n",
            d = self.certs.path().display()
        )
    }

    /// The config of node `i`.
    pub fn yaml(&self, i: usize) -> String {
        let peers: String = self
            .rpc
            .iter()
            .enumerate()
            .map(|(j, a)| {
                let via = self.mesh.as_ref().and_then(|m| m.addr(i, j)).unwrap_or(*a);
                format!("    {}: \"{via}\"\n", j + 1)
            })
            .collect();
        format!(
            "overwatch:\n  identity:\n    node_id: ow{n}\n  validation:\n    enabled: false\n{overwatch_extra}{body}api:\n  address: 127.0.0.1:0\n{api_extra}  tokens:\n    ops: {API_TOKEN}\nmetrics:\n  address: 127.0.0.1:0\ncluster:\n  node_id: {n}\n  listen: \"{listen}\"\n  secret: {secret}\n{tls}{extra}  peers:\n{peers}",
            n = i + 1,
            body = self.body,
            overwatch_extra = self.overwatch_extra,
            secret = self.secret,
            listen = self.rpc[i],
            extra = self.cluster_extra,
            api_extra = self.api_extra,
            tls = if self.plaintext {
                "  insecure_plaintext: true\n".to_owned()
            } else {
                self.tls_yaml(i + 1)
            },
        )
    }

    /// (Re)starts node `i` on its directory (its data dir kept).
    pub fn restart(&mut self, i: usize) {
        let yaml = self.yaml(i);
        self.nodes[i] = Some(Overwatch::start(&self.dirs[i], &yaml));
    }

    /// Node `i`, which must be running.
    pub fn node(&self, i: usize) -> &Overwatch {
        self.nodes[i].as_ref().expect("node running")
    }

    /// `kill -9` node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut node) = self.nodes[i].take() {
            node.process.signal(libc::SIGKILL);
            node.process.wait_exit(Duration::from_secs(5));
        }
    }

    /// `kill -9` node `i` and delete its data dir: a lost disk. Restart it with
    /// [`TestCluster::restart`].
    pub fn wipe(&mut self, i: usize) {
        self.kill(i);
        std::fs::remove_dir_all(self.dirs[i].join("data")).expect("wipe the data dir");
    }

    /// The running nodes' indexes.
    pub fn running(&self) -> Vec<usize> {
        (0..3).filter(|i| self.nodes[*i].is_some()).collect()
    }

    /// `/api/v1/cluster/status` of node `i`.
    pub fn status(&self, i: usize) -> serde_json::Value {
        self.node(i).get("/api/v1/cluster/status").1
    }

    /// Waits until every node in `among` names the same leader, itself in `among`; returns
    /// its index.
    pub fn leader_among(&self, among: &[usize], timeout: Duration) -> usize {
        poll_until(timeout, "one leader agreed by the running nodes", || {
            let leaders: Vec<Option<u64>> = among
                .iter()
                .map(|i| {
                    let (code, body) = http_request(
                        self.node(*i).api.expect("api"),
                        "GET",
                        "/api/v1/cluster/status",
                        None,
                        None,
                    );
                    (code == 200)
                        .then(|| serde_json::from_str::<serde_json::Value>(&body).ok())
                        .flatten()
                        .and_then(|s| s["leader"].as_u64())
                })
                .collect();
            let first = leaders[0]?;
            let index = usize::try_from(first - 1).ok()?;
            (leaders.iter().all(|l| *l == Some(first)) && among.contains(&index)).then_some(index)
        })
    }

    /// `PUT /api/v1/overrides/{service}/{address}` on node `i`: (status, JSON body).
    /// Forced: the cluster tests use overrides as their replicated writes, mostly for
    /// servers that no node knows (an unforced one would be refused).
    pub fn set_override(
        &self,
        i: usize,
        service: &str,
        address: &str,
        healthy: bool,
        reason: &str,
    ) -> (u16, serde_json::Value) {
        let body =
            serde_json::json!({ "healthy": healthy, "reason": reason, "force": true }).to_string();
        let (code, text) = http_request(
            self.node(i).api.expect("api"),
            "PUT",
            &format!("/api/v1/overrides/{service}/{address}"),
            Some(API_TOKEN),
            Some(&body),
        );
        (
            code,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Node `i`'s overrides: `service address` → healthy.
    pub fn overrides(&self, i: usize) -> BTreeMap<String, bool> {
        let (_, body) = self.node(i).get("/api/v1/overrides");
        let list = body["overrides"].as_array().cloned().unwrap_or_default();
        let map: BTreeMap<String, bool> = list
            .iter()
            .map(|o| {
                (
                    format!(
                        "{} {}",
                        o["service"].as_str().unwrap_or("?"),
                        o["address"].as_str().unwrap_or("?")
                    ),
                    o["healthy"] == true,
                )
            })
            .collect();
        assert_eq!(map.len(), list.len(), "an override listed twice: {body}");
        map
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // A stopped (SIGSTOP) node must run again to hear SIGTERM.
        for node in self.nodes.iter_mut().flatten() {
            node.process.signal_if_running(libc::SIGCONT);
        }
    }
}
