//! DNSSEC end to end: a real validating resolver (Unbound, our DS as its trust anchor)
//! resolving through an overwatch node validates every routing algorithm's answers,
//! NODATA, NXDOMAIN and the apex; keeps validating while a server fails and the answer
//! set changes; and validates throughout a ZSK rollover and a double-DS KSK rollover
//! performed with `opengslb-cli`. `delv` checks each answer set of the rotating domains,
//! over UDP (the fast path) and TCP (the hickory path). Answers without DO are unchanged.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use opengslb_tests::overwatch::{Backend, Dig, Overwatch, cli_binary, http_get, http_request};
use opengslb_tests::unbound::Unbound;
use opengslb_tests::{TempDir, poll_until};

const TOKEN: &str = "dnssec-test-token-0123456789";

fn server(backend: &Backend) -> String {
    format!(
        "{{address: {}, port: {}, service: app}}",
        backend.addr.ip(),
        backend.addr.port()
    )
}

/// Every routing algorithm over regions a (two servers) and b (one), an empty
/// non-terminal, TTLs of a second; `dnssec` is the `overwatch.dnssec` block, if any.
fn config(a: &[&Backend], b: &Backend, dnssec: &str) -> String {
    let a: Vec<String> = a.iter().map(|s| server(s)).collect();
    format!(
        "overwatch:\n{dnssec}  geolocation:\n    default_region: a\n    custom_mappings:\n      - {{cidr: 10.1.0.0/16, region: b}}\ndns:\n  listen_address: \"127.0.0.1:0\"\n  default_ttl: 1\n  zones: [gslb.test]\nregions:\n  - name: a\n    servers: [{a}]\n    health_check: {{type: http, path: /, interval: 200ms, timeout: 150ms, failure_threshold: 1, success_threshold: 1}}\n  - name: b\n    servers: [{b}]\n    health_check: {{type: http, path: /, interval: 200ms, timeout: 150ms, failure_threshold: 1, success_threshold: 1}}\ndomains:\n  - {{services: [app], name: rr.gslb.test, routing_algorithm: round-robin, regions: [a, b], ttl: 1, max_records: 2}}\n  - {{services: [app], name: w.gslb.test, routing_algorithm: weighted, regions: [a, b], ttl: 1, max_records: 1}}\n  - {{services: [app], name: fo.gslb.test, routing_algorithm: failover, regions: [b, a], ttl: 1}}\n  - {{services: [app], name: geo.gslb.test, routing_algorithm: geolocation, regions: [a, b], ttl: 1}}\n  - {{services: [app], name: lat.gslb.test, routing_algorithm: latency, regions: [a, b], ttl: 1}}\n  - {{services: [app], name: learned.gslb.test, routing_algorithm: learned_latency, regions: [a, b], ttl: 1}}\n  - {{services: [app], name: deep.ent.gslb.test, routing_algorithm: round-robin, regions: [a], ttl: 1}}\napi:\n  address: 127.0.0.1:0\n  tokens: {{ops: {TOKEN}}}\nmetrics:\n  address: 127.0.0.1:0\n",
        a = a.join(", "),
        b = server(b),
    )
}

/// Two servers for region a and one for region b, on 127.0.0.1–3.
fn backends() -> (Backend, Backend, Backend) {
    (
        Backend::start("127.0.0.1"),
        Backend::start("127.0.0.2"),
        Backend::start("127.0.0.3"),
    )
}

/// `opengslb-cli ARGS` against the node: stdout, or a panic with what it said.
fn cli(node: &Overwatch, args: &[&str]) -> String {
    let output = std::process::Command::new(cli_binary())
        .arg("--api")
        .arg(format!("http://{}", node.api.expect("api")))
        .args(["--token", TOKEN])
        .args(args)
        .output()
        .expect("run opengslb-cli");
    assert!(
        output.status.success(),
        "opengslb-cli {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The node signs (its first keys are made and a snapshot signed with them); its DS.
fn signing(node: &Overwatch) -> Vec<String> {
    poll_until(
        Duration::from_secs(20),
        "the node to sign its answers",
        || {
            let (_, status) = node.get("/api/v1/dnssec/status");
            (status["signing"] == true).then_some(())
        },
    );
    let ds: Vec<String> = cli(node, &["dnssec", "ds"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(ds.len(), 1, "one KSK, one DS: {ds:?}");
    assert!(ds[0].starts_with("gslb.test. IN DS "), "{ds:?}");
    ds
}

/// Asks the resolver; the answer must be validated (AD) with `status`.
fn validated(unbound: &Unbound, name: &str, qtype: &str, status: &str) -> Dig {
    let answer = unbound.dig(&[name, qtype]);
    assert_eq!(
        answer.status,
        status,
        "{name} {qtype} through the validating resolver: {}\nunbound said: {}",
        answer.raw,
        unbound.process.output()
    );
    assert!(
        answer.flags.iter().any(|f| f == "ad"),
        "{name} {qtype}: not validated (no AD): {}",
        answer.raw
    );
    answer
}

/// `delv` with the node's KSK as the trust anchor: "fully validated", and the A data.
fn delv(node: &Overwatch, anchor: &TempDir, name: &str, tcp: bool) -> BTreeSet<String> {
    let dnskey = cli(node, &["dnssec", "ds", "--dnskey"]);
    let fields: Vec<&str> = dnskey.split_whitespace().collect();
    // owner IN DNSKEY flags protocol algorithm key
    let file = anchor.join("delv-anchor.conf");
    std::fs::write(
        &file,
        format!(
            "trust-anchors {{ {} static-key {} {} {} \"{}\"; }};\n",
            fields[0], fields[3], fields[4], fields[5], fields[6]
        ),
    )
    .expect("anchor");
    let mut command = std::process::Command::new("delv");
    command
        .arg(format!("@{}", node.dns.ip()))
        .args(["-p", &node.dns.port().to_string()])
        .arg("-a")
        .arg(&file)
        .args(["+root=gslb.test", name, "A"]);
    if tcp {
        command.arg("+tcp");
    }
    let output = command.output().expect("delv is part of dnsutils");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        text.contains("; fully validated"),
        "delv {name} (tcp {tcp}): {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text.lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && f[3] == "A").then(|| f[4].to_owned())
        })
        .collect()
}

#[test]
fn a_validating_resolver_trusts_every_answer_and_every_denial_through_a_health_change() {
    let dir = TempDir::new("dnssec-answers");
    let (a1, a2, b) = backends();
    let node = Overwatch::start(&dir, &config(&[&a1, &a2], &b, ""));
    let ds = signing(&node);
    poll_until(Duration::from_secs(10), "every backend healthy", || {
        (node.dig(&["fo.gslb.test", "A"]).data("A") == ["127.0.0.3"]).then_some(())
    });
    let unbound = Unbound::start(&dir, "gslb.test", node.dns, &ds);

    // Positive answers for every routing algorithm.
    let all: BTreeSet<String> = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
        .map(str::to_owned)
        .into();
    for name in [
        "rr.gslb.test",
        "w.gslb.test",
        "fo.gslb.test",
        "geo.gslb.test",
        "lat.gslb.test",
        "learned.gslb.test",
        "deep.ent.gslb.test",
    ] {
        let answer = validated(&unbound, name, "A", "NOERROR");
        let got: BTreeSet<String> = answer.data("A").into_iter().collect();
        assert!(
            !got.is_empty() && got.is_subset(&all),
            "{name}: {}",
            answer.raw
        );
        assert_eq!(answer.data("RRSIG").len(), 1, "{name}: {}", answer.raw);
    }
    // Every set the rotating domains answer with validates, on both paths (delv has no
    // cache: each run checks the signature anew).
    for (name, per_answer) in [("rr.gslb.test", 2), ("w.gslb.test", 1)] {
        let mut seen = BTreeSet::new();
        for i in 0..12 {
            let set = delv(&node, &dir, name, i % 2 == 1);
            assert_eq!(set.len(), per_answer, "{name}: {set:?}");
            seen.insert(set);
        }
        assert!(seen.len() >= 2, "{name}: the answers rotate: {seen:?}");
    }

    // The apex, NODATA (a name with other types, an empty non-terminal) and NXDOMAIN.
    let soa = validated(&unbound, "gslb.test", "SOA", "NOERROR");
    assert_eq!(soa.data("SOA").len(), 1, "{}", soa.raw);
    validated(&unbound, "gslb.test", "NS", "NOERROR");
    let keys = validated(&unbound, "gslb.test", "DNSKEY", "NOERROR");
    assert_eq!(
        keys.data("DNSKEY").len(),
        2,
        "a KSK and a ZSK: {}",
        keys.raw
    );
    let cds = validated(&unbound, "gslb.test", "CDS", "NOERROR");
    let squeeze = |text: &str| text.split_whitespace().collect::<Vec<_>>().join("");
    assert_eq!(
        cds.data("CDS")
            .iter()
            .map(|c| squeeze(c))
            .collect::<Vec<_>>(),
        [squeeze(ds[0].split(" IN DS ").nth(1).expect("ds data"))]
    );
    for (name, qtype) in [
        ("rr.gslb.test", "AAAA"),
        ("rr.gslb.test", "MX"),
        ("gslb.test", "TXT"),
        ("ent.gslb.test", "A"),
    ] {
        let nodata = validated(&unbound, name, qtype, "NOERROR");
        assert!(nodata.answer.is_empty(), "{name} {qtype}: {}", nodata.raw);
    }
    for name in ["nope.gslb.test", "x.rr.gslb.test", "a.b.deep.ent.gslb.test"] {
        validated(&unbound, name, "A", "NXDOMAIN");
    }
    // Straight from the node: the NXDOMAIN proof is NSEC, not an empty authority.
    let proof = node.dig(&["nope.gslb.test", "A", "+dnssec"]);
    assert_eq!(proof.status, "NXDOMAIN", "{}", proof.raw);
    assert!(
        proof.authority.iter().any(|r| r.2 == "NSEC"),
        "{}",
        proof.raw
    );
    // Type RRSIG: the signatures of the name's fixed RRsets; type NSEC: its NSEC.
    let covered = |name: &str| -> BTreeSet<String> {
        let answer = node.dig(&[name, "RRSIG"]);
        answer
            .data("RRSIG")
            .iter()
            .filter_map(|r| r.split_whitespace().next().map(str::to_owned))
            .collect()
    };
    assert_eq!(
        covered("gslb.test"),
        ["CDNSKEY", "CDS", "DNSKEY", "NS", "NSEC", "SOA"]
            .map(str::to_owned)
            .into()
    );
    assert_eq!(covered("rr.gslb.test"), ["NSEC".to_owned()].into());
    let nsec = node.dig(&["rr.gslb.test", "NSEC"]).data("NSEC");
    assert_eq!(nsec.len(), 1, "{nsec:?}");
    assert!(nsec[0].ends_with("A RRSIG NSEC"), "{nsec:?}");
    // Without DO: no DNSSEC records, as before.
    let plain = node.dig(&["rr.gslb.test", "A"]);
    assert!(plain.answer.iter().all(|r| r.2 == "A"), "{}", plain.raw);
    let plain = node.dig(&["nope.gslb.test", "A"]);
    assert!(
        plain.authority.iter().all(|r| r.2 == "SOA"),
        "{}",
        plain.raw
    );

    // A health change: region b's server fails, failover moves to region a. Every answer
    // on the way validates; the new set arrives signed.
    // Signatures run 14 days; the node says when its first one ends (the alert's input).
    let expires = node.metric("opengslb_dnssec_earliest_expiration_timestamp_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    assert!(
        (expires - now - 14.0 * 86_400.0).abs() < 600.0,
        "expires {expires}, now {now}"
    );
    let made_before = node.metric("opengslb_dnssec_signatures_made_total");
    b.stop();
    let started = Instant::now();
    let mut answers = 0;
    let moved = poll_until(Duration::from_secs(10), "failover to region a", || {
        answers += 1;
        let answer = validated(&unbound, "fo.gslb.test", "A", "NOERROR");
        let got = answer.data("A");
        (got == ["127.0.0.1"] || got == ["127.0.0.2"]).then_some(got)
    });
    assert!(!moved.is_empty());
    let made = node.metric("opengslb_dnssec_signatures_made_total") - made_before;
    assert!(made >= 1.0, "the new sets were signed: {made}");
    assert_eq!(
        node.metric("opengslb_dnssec_online_signatures_total"),
        0.0,
        "no set was signed on the query path"
    );
    eprintln!(
        "failover validated after {:?} ({answers} resolver answers, all validated; {made} signatures made)",
        started.elapsed()
    );
    for name in ["rr.gslb.test", "geo.gslb.test", "lat.gslb.test"] {
        let answer = validated(&unbound, name, "A", "NOERROR");
        assert!(
            !answer.data("A").contains(&"127.0.0.3".to_owned()),
            "{name}: {}",
            answer.raw
        );
    }
}

#[test]
fn the_resolver_keeps_validating_through_a_zsk_and_a_ksk_rollover() {
    let dir = TempDir::new("dnssec-rollover");
    let (a1, a2, b) = backends();
    let node = Overwatch::start(&dir, &config(&[&a1, &a2], &b, ""));
    let old_ds = signing(&node);
    let unbound = Unbound::start(&dir, "gslb.test", node.dns, &old_ds);
    let zsk_tag = |node: &Overwatch| -> String {
        let answer = node.dig(&["rr.gslb.test", "A", "+dnssec"]);
        let rrsig = answer.data("RRSIG");
        // RRSIG: covered, algorithm, labels, ttl, expiration, inception, key tag, ...
        rrsig
            .first()
            .and_then(|r| r.split_whitespace().nth(6))
            .unwrap_or_else(|| panic!("no RRSIG: {}", answer.raw))
            .to_owned()
    };
    // Queries throughout: every one validated.
    let check_all = |what: &str| {
        for (name, qtype, status) in [
            ("rr.gslb.test", "A", "NOERROR"),
            ("nope.gslb.test", "A", "NXDOMAIN"),
            ("gslb.test", "DNSKEY", "NOERROR"),
        ] {
            let answer = unbound.dig(&[name, qtype]);
            assert!(
                answer.status == status && answer.flags.iter().any(|f| f == "ad"),
                "{what}: {name} {qtype}: {}\nunbound: {}",
                answer.raw,
                unbound.process.output()
            );
        }
    };
    check_all("before");

    // Bad requests get a clear refusal and change nothing.
    let api = node.api.expect("api");
    let unchanged = zsk_tag(&node);
    for (token, body, status, says) in [
        (None, r#"{"key": "zsk"}"#, 401, "Bearer"),
        (
            Some(TOKEN),
            r#"{"key": "csk"}"#,
            400,
            "is not a key kind: use",
        ),
        (
            Some(TOKEN),
            r#"{"key": "zsk", "complete": true}"#,
            400,
            "finishes on its own",
        ),
        (
            Some(TOKEN),
            r#"{"key": "ksk", "complete": true}"#,
            409,
            "no KSK rollover is under way",
        ),
        (Some(TOKEN), r#"{"kee": "zsk"}"#, 400, "request body"),
    ] {
        let (got, text) = http_request(api, "POST", "/api/v1/dnssec/rollover", token, Some(body));
        assert_eq!(got, status, "{body}: {text}");
        assert!(text.contains(says), "{body}: {text}");
    }
    assert_eq!(
        zsk_tag(&node),
        unchanged,
        "the refused requests rolled nothing"
    );
    assert_eq!(node.dig(&["gslb.test", "DNSKEY"]).data("DNSKEY").len(), 2);

    // ZSK: pre-publish, then the new key signs, then the old one leaves, on its own.
    let before = zsk_tag(&node);
    let said = cli(&node, &["dnssec", "rollover", "zsk"]);
    assert!(said.contains("ZSK rollover started"), "{said}");
    assert!(said.contains("published"), "{said}");
    let status = cli(&node, &["dnssec", "status"]);
    assert!(status.contains("signs from"), "{status}");
    let refused = std::process::Command::new(cli_binary())
        .arg("--api")
        .arg(format!("http://{}", node.api.expect("api")))
        .args(["--token", TOKEN, "dnssec", "rollover", "zsk"])
        .output()
        .expect("cli");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("a ZSK rollover is under way"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let after = poll_until(Duration::from_secs(30), "the new ZSK to sign", || {
        check_all("during the ZSK rollover");
        let tag = zsk_tag(&node);
        (tag != before).then_some(tag)
    });
    poll_until(Duration::from_secs(30), "the old ZSK to leave", || {
        check_all("after the ZSK swap");
        let keys = node.dig(&["gslb.test", "DNSKEY"]).data("DNSKEY");
        (keys.len() == 2).then_some(())
    });
    check_all("after the ZSK rollover");
    assert_ne!(before, after);

    // KSK, double-DS: the new DS goes to the parent (here: the resolver's anchors) beside
    // the old one; then the new KSK takes over; then the old DS goes.
    let said = cli(&node, &["dnssec", "rollover", "ksk"]);
    assert!(said.contains("KSK rollover started"), "{said}");
    let both: Vec<String> = cli(&node, &["dnssec", "ds"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(both.len(), 2, "old and new DS: {both:?}");
    assert!(both.contains(&old_ds[0]), "{both:?}");
    let cds = node.dig(&["gslb.test", "CDS"]).data("CDS");
    assert_eq!(cds.len(), 2, "CDS names both: {cds:?}");
    check_all("with the new KSK pending");
    unbound.set_anchors(&both);
    check_all("with both DS at the parent");
    let said = cli(&node, &["dnssec", "rollover", "ksk", "--complete"]);
    assert!(said.contains("KSK rollover complete"), "{said}");
    for _ in 0..5 {
        check_all("after the KSK swap, both DS at the parent");
    }
    let new_ds: Vec<String> = cli(&node, &["dnssec", "ds"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(new_ds.len(), 1);
    assert_ne!(new_ds, old_ds);
    unbound.set_anchors(&new_ds);
    check_all("with only the new DS at the parent");
}

#[test]
fn ed25519_keys_validate_and_an_acknowledged_off_switch_signs_nothing() {
    let dir = TempDir::new("dnssec-ed25519");
    let (a1, a2, b) = backends();
    let node = Overwatch::start(
        &dir,
        &config(&[&a1, &a2], &b, "  dnssec:\n    algorithm: ED25519\n"),
    );
    let ds = signing(&node);
    assert!(
        ds[0].contains(" DS ") && ds[0].split_whitespace().nth(4) == Some("15"),
        "{ds:?}"
    );
    let unbound = Unbound::start(&dir, "gslb.test", node.dns, &ds);
    validated(&unbound, "rr.gslb.test", "A", "NOERROR");
    validated(&unbound, "nope.gslb.test", "A", "NXDOMAIN");
    validated(&unbound, "rr.gslb.test", "AAAA", "NOERROR");

    let off_dir = TempDir::new("dnssec-off");
    let off = Overwatch::start(
        &off_dir,
        &config(
            &[&a1, &a2],
            &b,
            "  dnssec:\n    enabled: false\n    security_acknowledgment: \"no parent DS\"\n",
        ),
    );
    poll_until(
        Duration::from_secs(10),
        "the unsigned node to answer",
        || (!off.dig(&["rr.gslb.test", "A"]).data("A").is_empty()).then_some(()),
    );
    let answer = off.dig(&["rr.gslb.test", "A", "+dnssec"]);
    assert!(answer.data("RRSIG").is_empty(), "{}", answer.raw);
    let keys = off.dig(&["gslb.test", "DNSKEY", "+dnssec"]);
    assert!(keys.answer.is_empty(), "{}", keys.raw);
    let (status, body) = http_get(off.api.expect("api"), "/api/v1/dnssec/status");
    assert_eq!(status, 200);
    assert!(body.contains("\"enabled\":false"), "{body}");
}

/// The DNSKEY RRset a node answers, sorted (its RRSIG left out: ECDSA signatures differ
/// from one signing to the next).
fn dnskeys(node: &Overwatch) -> Vec<String> {
    node.dig(&["gslb.test", "DNSKEY", "+dnssec"]).data("DNSKEY")
}

#[test]
fn every_node_of_a_cluster_signs_with_the_same_replicated_keys_and_a_wiped_node_gets_them_back() {
    use opengslb_tests::cluster::{TEST_TIMING, TestCluster};
    let body = "dns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [gslb.test]\nregions:\n  - name: eu\n    servers: [{address: 192.0.2.1, service: app}, {address: 192.0.2.2, service: app}]\ndomains:\n  - {name: app.gslb.test, routing_algorithm: round-robin, services: [app], regions: [eu], ttl: 1}\n";
    let mut cluster = TestCluster::start("dnssec-keys", body, TEST_TIMING);
    cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
    let keys = poll_until(
        Duration::from_secs(20),
        "every node to sign with the same keys",
        || {
            let all: Vec<Vec<String>> = (0..3).map(|i| dnskeys(cluster.node(i))).collect();
            (all[0].len() == 2 && all.iter().all(|k| *k == all[0])).then(|| all[0].clone())
        },
    );
    let ds = cli(cluster.node(0), &["dnssec", "ds"]);
    for i in [1, 2] {
        assert_eq!(cli(cluster.node(i), &["dnssec", "ds"]), ds, "node {i}'s DS");
    }
    // The keys never reach the API or the log: the status shows public data only.
    let (_, status) = cluster.node(0).get("/api/v1/dnssec/status");
    assert!(!status.to_string().contains("pkcs8"), "{status}");
    for i in 0..3 {
        let output = cluster.node(i).process.output();
        assert!(
            !output.to_lowercase().contains("pkcs8"),
            "node {i}: {output}"
        );
    }

    // The store that holds them is the node's alone.
    {
        use std::os::unix::fs::PermissionsExt;
        let store = cluster.dirs[0].join("data").join("overwatch-raft.redb");
        let mode = std::fs::metadata(&store)
            .expect("store")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", store.display());
    }

    // A lost disk: node 3 comes back empty, catches up, and signs with the same keys.
    cluster.wipe(2);
    cluster.restart(2);
    poll_until(
        Duration::from_secs(30),
        "the wiped node to sign again",
        || {
            let answer = cluster.node(2).dig(&["app.gslb.test", "A", "+dnssec"]);
            (answer.status == "NOERROR" && !answer.data("RRSIG").is_empty()).then_some(())
        },
    );
    assert_eq!(
        dnskeys(cluster.node(2)),
        keys,
        "the replicated keys, not new ones"
    );
    assert_eq!(cli(cluster.node(2), &["dnssec", "ds"]), ds);
}
