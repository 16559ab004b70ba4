use std::net::IpAddr;
use std::time::Duration;

use super::*;

const GOOD: &str = r#"
overwatch:
  identity:
    node_id: ow-1
  validation:
    enabled: true
    check_interval: 2s
    check_timeout: 1s
  geolocation:
    default_region: us-east
    custom_mappings:
      - cidr: 10.1.0.0/16
        region: eu-west
        comment: office
dns:
  listen_address: "127.0.0.1:5353"
  default_ttl: 30
  zones: [GSLB.Example.com.]
regions:
  - name: us-east
    servers:
      - address: 127.0.0.1
        port: 8081
      - address: "::1"
        port: 8082
        weight: 0
        service: app
    health_check:
      type: http
      path: /healthz
      interval: 1s
      timeout: 500ms
      failure_threshold: 2
      success_threshold: 1
    countries: [us, ca]
    continents: [NA]
  - name: eu-west
    servers:
      - address: 127.0.0.2
domains:
  - name: App.gslb.example.com
    routing_algorithm: failover
    regions: [us-east, eu-west]
    ttl: 10
    max_records: 2
    when_all_unhealthy: return_all
  - name: geo.gslb.example.com
    routing_algorithm: geolocation
    regions: [eu-west, us-east]
api:
  address: 127.0.0.1:0
metrics:
  enabled: false
"#;

fn problems(text: &str) -> Vec<String> {
    match parse("ow.yaml", text) {
        Ok(_) => panic!("should be rejected:\n{text}"),
        Err(e) => e.to_string().lines().map(str::to_owned).collect(),
    }
}

#[test]
fn a_good_file_becomes_settings_with_defaults_applied() {
    let s = parse("ow.yaml", GOOD).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.node_id, "ow-1");
    assert_eq!(s.dns.listen, "127.0.0.1:5353".parse().expect("addr"));
    assert_eq!(s.dns.zones[0].apex, "gslb.example.com");
    assert_eq!(s.dns.zones[0].nameservers, ["ns1.gslb.example.com"]);
    assert_eq!(s.dns.zones[0].hostmaster, "hostmaster.gslb.example.com");
    let us = &s.regions[0];
    assert_eq!(us.servers[1].address, "::1".parse::<IpAddr>().expect("ip"));
    assert_eq!(
        us.servers[0].service, "us-east",
        "service defaults to the region"
    );
    assert_eq!(us.servers[1].weight, 0);
    assert_eq!(us.countries, ["US", "CA"]);
    let check = us.check.as_ref().expect("check");
    assert_eq!(
        (check.kind, check.interval, check.timeout),
        (
            CheckKind::Http,
            Duration::from_secs(1),
            Duration::from_millis(500)
        )
    );
    assert_eq!(
        (check.fall, check.rise, check.path.as_str()),
        (2, 1, "/healthz")
    );
    let eu_check = s.regions[1].check.as_ref().expect("default check");
    assert_eq!(
        (eu_check.kind, eu_check.interval),
        (CheckKind::Http, Duration::from_secs(2)),
        "validation defaults apply: OpenGSLB's HTTP GET /health"
    );
    let app = &s.domains[0];
    assert_eq!(app.name, "app.gslb.example.com");
    assert_eq!(
        (app.algorithm, app.ttl, app.max_records),
        (Algorithm::Failover, 10, 2)
    );
    assert_eq!(app.regions, [0, 1]);
    assert_eq!(app.when_all_unhealthy, AllDownPolicy::ReturnAll);
    assert_eq!(s.domains[1].ttl, 30, "dns.default_ttl");
    assert_eq!(s.domains[1].max_records, 8);
    assert_eq!(s.domains[1].when_all_unhealthy, AllDownPolicy::ServFail);
    assert_eq!(s.geo.default_region, Some(0));
    assert_eq!(
        s.geo.custom_mappings,
        [("10.1.0.0/16".parse().expect("net"), 1)]
    );
    assert!(s.metrics.is_none());
    assert_eq!(
        s.api.expect("api").allowed_networks.len(),
        2,
        "loopback by default"
    );
}

#[test]
fn unknown_keys_are_rejected_at_their_line_and_column() {
    let text = GOOD.replace("    ttl: 10\n", "    ttl: 10\n    tll: 5\n");
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("ow.yaml:45:5: unknown field `tll`, expected one of name,"),
        "{p:?}"
    );
    assert!(
        !p[0].contains("at line"),
        "the location is said once, first: {p:?}"
    );
}

#[test]
fn wrong_types_name_the_position() {
    let p = problems(&GOOD.replace("default_ttl: 30", "default_ttl: thirty"));
    assert_eq!(p, ["ow.yaml:17:16: invalid u32"]);
    let p = problems(&GOOD.replace("interval: 1s", "interval: 1 second"));
    assert!(
        p[0].starts_with("ow.yaml:31:17: invalid duration \"1 second\""),
        "{p:?}"
    );
}

#[test]
fn every_validation_problem_is_reported_with_its_place() {
    let text = GOOD
        .replace("cidr: 10.1.0.0/16", "cidr: 10.1.0.0/33")
        .replace("regions: [us-east, eu-west]", "regions: [us-east, nowhere]")
        .replace("    ttl: 10\n", "    ttl: 0\n")
        .replace(
            "routing_algorithm: geolocation",
            "routing_algorithm: nearest",
        )
        .replace("  - name: eu-west\n", "  - name: us-east\n")
        .replace("type: http", "type: icmp")
        .replace("countries: [us, ca]", "countries: [usa]");
    let p = problems(&text);
    let expect = [
        "ow.yaml:12:15: overwatch.geolocation.custom_mappings: \"10.1.0.0/33\" is not a CIDR",
        "ow.yaml:13:17: overwatch.geolocation.custom_mappings[].region: no region named \"eu-west\"",
        "ow.yaml:29:13: regions[us-east].health_check.type: \"icmp\" is not http, https or tcp",
        "ow.yaml:35:17: regions[us-east].countries: \"usa\" is not a two-letter",
        "ow.yaml:37:11: regions: region \"us-east\" is defined twice",
        "ow.yaml:43:24: domains[app.gslb.example.com].regions: no region named \"nowhere\"",
        "ow.yaml:44:10: domains[app.gslb.example.com].ttl: must be 1 to",
        "ow.yaml:48:24: domains[geo.gslb.example.com].routing_algorithm: \"nearest\" is not one of round-robin",
        "ow.yaml:49:15: domains[geo.gslb.example.com].regions: no region named \"eu-west\"",
    ];
    assert_eq!(p.len(), expect.len(), "{p:#?}");
    for (got, want) in p.iter().zip(expect) {
        assert!(got.starts_with(want), "\n got: {got}\nwant: {want}…");
    }
}

#[test]
fn names_outside_the_zones_and_duplicates_are_rejected() {
    let p = problems(&GOOD.replace("name: geo.gslb.example.com", "name: geo.other.example"));
    assert!(
        p[0].contains("\"geo.other.example\" is not inside any of dns.zones"),
        "{p:?}"
    );
    let p = problems(&GOOD.replace("name: geo.gslb.example.com", "name: app.gslb.example.com."));
    assert!(
        p[0].contains("domains: \"app.gslb.example.com\" is defined twice"),
        "{p:?}"
    );
    let p = problems(&GOOD.replace(
        "zones: [GSLB.Example.com.]",
        "zones: [gslb.example.com, sub.gslb.example.com]",
    ));
    assert!(p[0].contains("overlap"), "{p:?}");
    let p = problems(&GOOD.replace("zones: [GSLB.Example.com.]", "zones: [\"bad..name\"]"));
    assert!(p[0].contains("is not a valid DNS name"), "{p:?}");
}

#[test]
fn addresses_and_networks_are_checked() {
    let p = problems(&GOOD.replace("address: 127.0.0.2", "address: 127.0.0.300"));
    assert!(
        p[0].contains("\"127.0.0.300\" is not an IP address or a host name"),
        "{p:?}"
    );
    let p = problems(&GOOD.replace(
        "listen_address: \"127.0.0.1:5353\"",
        "listen_address: localhost:53",
    ));
    assert!(
        p[0].contains("dns.listen_address: \"localhost:53\" is not :PORT"),
        "{p:?}"
    );
    let p = problems(&GOOD.replace(
        "address: 127.0.0.1:0",
        "address: 127.0.0.1:0\n  allowed_networks: [10.0.0.0/99]",
    ));
    assert!(p[0].contains("api.allowed_networks"), "{p:?}");
}

#[test]
fn missing_sections_and_unreadable_files_are_clear() {
    let p = problems("regions: []\n");
    assert!(p[0].contains("missing field `dns`"), "{p:?}");
    let err = load(std::path::Path::new("/nonexistent/ow.yaml")).expect_err("missing file");
    assert!(
        err.to_string()
            .starts_with("/nonexistent/ow.yaml:0:0: cannot read the file"),
        "{err}"
    );
}

#[test]
fn geolocation_needs_its_inputs() {
    let text = GOOD.replace(
        "  geolocation:\n    default_region: us-east\n    custom_mappings:\n      - cidr: 10.1.0.0/16\n        region: eu-west\n        comment: office\n",
        "",
    );
    let p = problems(&text);
    assert!(
        p[0].contains("geolocation needs overwatch.geolocation"),
        "{p:?}"
    );
}

#[test]
fn agent_tokens_are_read_and_short_ones_rejected() {
    let text = GOOD.replace(
        "overwatch:\n",
        "overwatch:\n  agent_tokens:\n    app: app-token-0123456789\n    db: short\n",
    );
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with(
            "ow.yaml:5:9: overwatch.agent_tokens.db: a token must be at least 16 characters"
        ),
        "{p:?}"
    );
    let ok = parse(
        "ow.yaml",
        &text.replace("db: short", "db: db-token-0123456789"),
    )
    .expect("valid");
    assert_eq!(ok.agent_tokens["app"], "app-token-0123456789");
}

#[test]
fn gossip_needs_a_valid_key_and_stale_defaults_apply() {
    let text = GOOD.replace(
        "overwatch:\n",
        "overwatch:\n  gossip:\n    bind_address: 127.0.0.1:0\n",
    );
    let p = problems(&text);
    assert!(
        p[0].contains("overwatch.gossip.encryption_key is missing"),
        "{p:?}"
    );
    let p = problems(&text.replace(
        "bind_address: 127.0.0.1:0\n",
        "bind_address: 127.0.0.1:0\n    encryption_key: c2hvcnQ=\n",
    ));
    assert!(
        p[0].starts_with(
            "ow.yaml:5:21: overwatch.gossip.encryption_key must decode to 32 bytes, got 5"
        ),
        "{p:?}"
    );
    let key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    let s = parse(
        "ow.yaml",
        &text.replace(
            "bind_address: 127.0.0.1:0\n",
            &format!("bind_address: 127.0.0.1:0\n    encryption_key: {key}\n"),
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let g = s.gossip.expect("gossip");
    assert_eq!(
        (g.bind, g.probe_interval),
        ("127.0.0.1:0".parse().expect("addr"), Duration::from_secs(1))
    );
    assert_eq!(
        (s.stale.threshold, s.stale.remove_after),
        (Duration::from_secs(30), Duration::from_secs(300))
    );
}

#[test]
fn the_shipped_example_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/overwatch.yaml");
    load(&path).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn udp_workers_default_to_the_cpus_and_are_bounded() {
    let s = parse("ow.yaml", GOOD).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        s.dns.udp_workers, None,
        "default: one per CPU, decided at start"
    );
    let four = GOOD.replace("  default_ttl: 30", "  default_ttl: 30\n  udp_workers: 4");
    let s = parse("ow.yaml", &four).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.dns.udp_workers, Some(4));
    for bad in ["0", "257"] {
        let p = problems(&GOOD.replace(
            "  default_ttl: 30",
            &format!("  default_ttl: 30\n  udp_workers: {bad}"),
        ));
        assert!(
            p[0].contains(&format!(
                "ow.yaml:18:16: dns.udp_workers: {bad} is not between 1 and 256"
            )),
            "{p:?}"
        );
    }
}

#[test]
fn cluster_peers_that_cannot_work_are_named_offline() {
    let cluster = |peers: &str| {
        format!(
            "{GOOD}cluster:\n  node_id: 1\n  listen: \"10.0.0.1:7947\"\n  secret: cluster-secret-0123456789\n  insecure_plaintext: true\n  peers:\n{peers}"
        )
    };
    let p = problems(&cluster(
        "    1: \"10.0.0.1:7947\"\n    2: \"10.0.0.2:7947\"\n    3: \"10.0.0.2:7947\"\n",
    ));
    assert!(
        p.iter().any(|l| l.ends_with(
            "cluster.peers.3: 10.0.0.2:7947 is also node 2's address; each node needs its own"
        )),
        "{p:?}"
    );
    let p = problems(&cluster(
        "    1: \"10.0.0.1:7000\"\n    2: \"10.0.0.2:7947\"\n    3: \"10.0.0.3:7947\"\n",
    ));
    assert!(
        p.iter().any(|l| l.contains("cluster.peers.1: this node listens on port 7947 (cluster.listen) but its own peers entry says 10.0.0.1:7000")),
        "{p:?}"
    );
    let p = problems(&cluster(
        "    1: \"10.0.0.9:7947\"\n    2: \"10.0.0.2:7947\"\n    3: \"10.0.0.3:7947\"\n",
    ));
    assert!(
        p.iter().any(|l| l.contains("cluster.peers.1: this node listens on 10.0.0.1 (cluster.listen) but its own peers entry says 10.0.0.9:7947")),
        "{p:?}"
    );
    parse(
        "ow.yaml",
        &cluster("    1: \"10.0.0.1:7947\"\n    2: \"10.0.0.2:7947\"\n    3: \"10.0.0.3:7947\"\n"),
    )
    .unwrap_or_else(|e| panic!("a good peer list: {e}"));
}

/// The Raft RPC is mutual TLS or, said in so many words, plain HTTP; the TLS files are
/// checked offline the way the node loads them.
#[test]
fn cluster_rpc_security_is_chosen_and_its_files_are_checked_offline() {
    let dir = std::env::temp_dir().join(format!("opengslb-config-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    crate::cluster::tls::issue(&dir, &[1, 2], 30).expect("certificates");
    let config = |security: &str| {
        format!(
            "{GOOD}cluster:\n  node_id: 1\n  listen: \"10.0.0.1:7947\"\n  secret: cluster-secret-0123456789\n{security}  peers:\n    1: \"10.0.0.1:7947\"\n    2: \"10.0.0.2:7947\"\n"
        )
    };
    let tls = |cert: &str| {
        format!(
            "  tls:\n    ca: {d}/ca.crt\n    cert: {d}/{cert}.crt\n    key: {d}/{cert}.key\n",
            d = dir.display()
        )
    };
    let p = problems(&config(""));
    assert!(
        p.iter().any(
            |l| l.contains("cluster: the Raft RPC needs `tls: {ca, cert, key}`")
                && l.contains("opengslb-cli cluster certs")
        ),
        "{p:?}"
    );
    let p = problems(&config(&format!(
        "{}  insecure_plaintext: true\n",
        tls("node-1")
    )));
    assert!(
        p.iter()
            .any(|l| l.contains("cluster.insecure_plaintext: cannot be true with cluster.tls")),
        "{p:?}"
    );
    let p = problems(&config(&tls("node-2")));
    assert!(
        p.iter().any(|l| l.contains("cluster.tls.cert:")
            && l.contains("is not a certificate for node 1 (node-1.opengslb.invalid)")),
        "{p:?}"
    );
    let p = problems(&config(&tls("node-3")));
    assert!(
        p.iter()
            .any(|l| l.contains("cluster.tls.cert:") && l.contains("cannot read")),
        "{p:?}"
    );
    let settings =
        parse("ow.yaml", &config(&tls("node-1"))).unwrap_or_else(|e| panic!("good TLS: {e}"));
    let tls = settings.cluster.and_then(|c| c.tls).expect("tls paths");
    assert_eq!(tls.cert, dir.join("node-1.crt"));
    parse("ow.yaml", &config("  insecure_plaintext: true\n"))
        .unwrap_or_else(|e| panic!("knowingly plain: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn opengslb_v1_shapes_load_with_their_no_op_keys_warned_by_name() {
    let text = format!(
        "mode: overwatch\n{}",
        GOOD.replace("  zones: [GSLB.Example.com.]\n", "")
            .replace("routing_algorithm: failover", "routing_algorithm: Active-Standby")
            .replace("routing_algorithm: geolocation", "routing_algorithm: GEO")
            .replace("      type: http\n", "")
            .replace("      timeout: 500ms\n", "      timeout: 3s\n")
            .replace(
                "  geolocation:\n",
                "  dnssec:\n    enabled: true\n    algorithm: ECDSAP256SHA256\n    key_sync: {peers: [\"10.0.0.2:8080\"], poll_interval: 1h, timeout: 30s}\n  geolocation:\n"
            )
    );
    let s = parse("ow.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.dns.zones.len(), 1);
    assert_eq!(
        s.dns.zones[0].apex, "gslb.example.com",
        "derived from the domains"
    );
    assert_eq!(s.domains[0].algorithm, Algorithm::Failover);
    assert_eq!(s.domains[1].algorithm, Algorithm::Geolocation);
    let check = s.regions[0].check.as_ref().expect("check");
    assert_eq!(check.kind, CheckKind::Http, "untyped is http");
    assert_eq!(
        check.timeout,
        Duration::from_secs(3),
        "kept, with a warning"
    );
    let eu = s.regions[1].check.as_ref().expect("default check");
    assert_eq!((eu.kind, eu.path.as_str()), (CheckKind::Http, "/health"));
    let warnings = s.warnings.join("\n");
    for needle in [
        "dns.zones is not set: authoritative for gslb.example.com",
        "overwatch.dnssec.key_sync is accepted and unnecessary: the cluster generates the keys and Raft replicates them",
        "regions[us-east].health_check.timeout 3s is longer than its interval",
    ] {
        assert!(warnings.contains(needle), "{needle}: {warnings}");
    }
    assert_eq!(
        s.dnssec,
        DnssecSettings {
            enabled: true,
            algorithm: 13
        }
    );
    let good = parse("ow.yaml", GOOD).expect("good").warnings;
    assert!(
        good.iter()
            .all(|w| w.contains("have no service: they answer for every domain")),
        "only servers without a service are worth a word: {good:?}"
    );
}

#[test]
fn a_domain_answers_its_own_service_unless_it_shares_explicitly() {
    let text = r#"
dns:
  listen_address: "127.0.0.1:0"
  zones: [gslb.example.com]
regions:
  - name: east
    servers:
      - {address: 192.0.2.1, service: webapp.gslb.example.com}
      - {address: 192.0.2.2, service: api.gslb.example.com}
      - {address: 192.0.2.3}
domains:
  - {name: webapp.gslb.example.com, routing_algorithm: round-robin, regions: [east]}
  - {name: api.gslb.example.com, routing_algorithm: failover, regions: [east]}
  - name: both.gslb.example.com
    routing_algorithm: round-robin
    regions: [east]
    services: [webapp.gslb.example.com, api.gslb.example.com]
api:
  address: 127.0.0.1:0
metrics:
  enabled: false
"#;
    let s = parse("ow.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    let answered = |d: usize| -> Vec<String> {
        let domain = &s.domains[d];
        s.regions[0]
            .servers
            .iter()
            .filter(|x| s.serves(domain, 0, &x.service, x.address, x.port))
            .map(|x| x.address.to_string())
            .collect()
    };
    assert_eq!(
        answered(0),
        ["192.0.2.1", "192.0.2.3"],
        "its own, and the unnamed one"
    );
    assert_eq!(answered(1), ["192.0.2.2", "192.0.2.3"]);
    assert_eq!(
        answered(2),
        ["192.0.2.1", "192.0.2.2", "192.0.2.3"],
        "shared, explicitly"
    );
    assert_eq!(
        s.domains[1].max_records, 1,
        "failover is active/standby: one record"
    );
    assert_eq!(s.domains[0].max_records, 8);
    let lines = problems(&text.replace(
        "    services: [webapp.gslb.example.com, api.gslb.example.com]",
        "    services: []",
    ));
    assert!(
        lines[0].contains("an empty list answers nothing"),
        "{lines:?}"
    );
}

#[test]
fn an_agent_file_or_an_unknown_algorithm_is_refused_by_name() {
    let lines = problems(&format!("mode: agent\n{GOOD}"));
    assert!(
        lines[0].starts_with("ow.yaml:1:7: mode: \"agent\": this file is for opengslb-agent"),
        "{lines:?}"
    );
    let lines =
        problems(&GOOD.replace("routing_algorithm: failover", "routing_algorithm: fastest"));
    assert!(
        lines[0].contains("\"fastest\" is not one of round-robin (rr)"),
        "{lines:?}"
    );
}

#[test]
fn an_empty_gossip_bind_address_turns_gossip_off() {
    let text = GOOD.replace(
        "  geolocation:\n",
        "  gossip:\n    bind_address: \"\"\n    encryption_key: \"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\"\n  geolocation:\n",
    );
    let s = parse("ow.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    assert!(s.gossip.is_none());
    assert!(
        s.warnings.iter().any(|w| w.contains("gossip is off")),
        "{:?}",
        s.warnings
    );
}

#[test]
fn dnssec_is_on_by_default_and_off_only_with_an_acknowledgment() {
    let with = |dnssec: &str| {
        GOOD.replace(
            "  geolocation:\n",
            &format!("  dnssec:\n{dnssec}  geolocation:\n"),
        )
    };
    assert_eq!(
        parse("ow.yaml", GOOD).expect("good").dnssec,
        DnssecSettings::default()
    );
    assert!(DnssecSettings::default().enabled);
    let ed = parse("ow.yaml", &with("    algorithm: ED25519\n")).expect("ed25519");
    assert_eq!(ed.dnssec.algorithm, 15);
    let err = parse("ow.yaml", &with("    algorithm: RSASHA1\n")).expect_err("rsa");
    assert!(
        err.to_string().contains(
            "overwatch.dnssec.algorithm: \"RSASHA1\" is not supported: use ECDSAP256SHA256"
        ),
        "{err}"
    );
    let err = parse("ow.yaml", &with("    enabled: false\n")).expect_err("unacknowledged");
    assert!(
        err.to_string().contains(
            "overwatch.dnssec.enabled: false needs overwatch.dnssec.security_acknowledgment"
        ),
        "{err}"
    );
    let off = parse(
        "ow.yaml",
        &with("    enabled: false\n    security_acknowledgment: \"no parent DS; resolvers here do not validate\"\n"),
    )
    .expect("acknowledged");
    assert!(!off.dnssec.enabled);
}
