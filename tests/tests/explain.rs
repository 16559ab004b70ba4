//! `GET /api/v1/explain` and `opengslb-cli explain` say exactly what the node answers a
//! client, and why, for every routing algorithm: checked against real `dig` answers, with
//! and without ECS, before and after a server fails. `domains` shows the real answer set
//! (one address for failover, not every healthy one). Routing decisions are logged at
//! debug, sampled.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use opengslb_tests::overwatch::{
    Backend, Overwatch, cli_binary, http_get, query_packet, udp_exchange,
};
use opengslb_tests::{TempDir, poll_until, poll_until_explained};

fn config(a1: &Backend, a2: &Backend, b: &Backend) -> String {
    let server = |backend: &Backend| {
        format!(
            "{{address: {}, port: {}, service: app}}",
            backend.addr.ip(),
            backend.addr.port()
        )
    };
    format!(
        "overwatch:\n  geolocation:\n    default_region: a\n    ecs_enabled: true\n    custom_mappings:\n      - {{cidr: 10.1.0.0/16, region: b}}\nlogging:\n  level: debug\ndns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [gslb.test]\nregions:\n  - name: a\n    servers: [{a1}, {a2}]\n    health_check: {{type: http, path: /, interval: 300ms, timeout: 250ms, failure_threshold: 1, success_threshold: 1}}\n  - name: b\n    servers: [{b}]\n    health_check: {{type: http, path: /, interval: 300ms, timeout: 250ms, failure_threshold: 1, success_threshold: 1}}\ndomains:\n  - {{services: [app], name: rr.gslb.test, routing_algorithm: round-robin, regions: [a, b], ttl: 1}}\n  - {{services: [app], name: w.gslb.test, routing_algorithm: weighted, regions: [a, b], ttl: 1, max_records: 1}}\n  - {{services: [app], name: fo.gslb.test, routing_algorithm: failover, regions: [b, a], ttl: 1}}\n  - {{services: [app], name: geo.gslb.test, routing_algorithm: geolocation, regions: [a, b], ttl: 1}}\n  - {{services: [app], name: lat.gslb.test, routing_algorithm: latency, regions: [a, b], ttl: 1, latency_config: {{min_samples: 2}}}}\n  - {{services: [app], name: learned.gslb.test, routing_algorithm: learned_latency, regions: [a, b], ttl: 1}}\napi:\n  address: 127.0.0.1:0\nmetrics:\n  address: 127.0.0.1:0\n",
        a1 = server(a1),
        a2 = server(a2),
        b = server(b),
    )
}

fn explain(node: &Overwatch, name: &str, client: Option<&str>) -> serde_json::Value {
    let path = match client {
        Some(c) => format!("/api/v1/explain?name={name}&client={c}"),
        None => format!("/api/v1/explain?name={name}"),
    };
    let (status, body) = http_get(node.api.expect("api"), &path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("json")
}

fn ips(value: &serde_json::Value) -> BTreeSet<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// What real dig gets, as a set.
fn dug(node: &Overwatch, name: &str, client: Option<&str>) -> BTreeSet<String> {
    let subnet = client.map(|c| format!("+subnet={c}/32"));
    let mut args = vec![name, "A"];
    if let Some(s) = &subnet {
        args.push(s);
    }
    node.dig(&args).data("A").into_iter().collect()
}

/// Polls until explain and dig agree for this question (health and RTT move between two
/// questions); returns the explanation they agreed on.
fn agreeing(node: &Overwatch, name: &str, client: Option<&str>) -> serde_json::Value {
    let what = format!("explain and dig to agree on {name} for {client:?}");
    poll_until_explained(Duration::from_secs(10), &what, || {
        let e = explain(node, name, client);
        let got = dug(node, name, client);
        let possible = ips(&e["possible"]);
        let answer = ips(&e["answer"]);
        // A drawing algorithm answers a subset of `possible`; the others exactly `answer`.
        let agrees = match e["domain"]["algorithm"].as_str() {
            Some("weighted") => got.len() == 1 && got.is_subset(&possible),
            Some("round-robin") => got == possible,
            _ => got == answer && answer == possible,
        };
        if agrees {
            Ok(e)
        } else {
            Err(format!("dig {got:?}, explain {e:#}"))
        }
    })
}

#[test]
fn explain_matches_dig_for_every_algorithm_and_says_why() {
    let dir = TempDir::new("explain");
    let (a1, a2, b) = (
        Backend::start("127.0.0.1"),
        Backend::start("127.0.0.2"),
        Backend::start("127.0.0.3"),
    );
    let node = Overwatch::start(&dir, &config(&a1, &a2, &b));
    poll_until(Duration::from_secs(10), "every server healthy", || {
        (dug(&node, "rr.gslb.test", None).len() == 3).then_some(())
    });
    let all: BTreeSet<String> = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
        .map(str::to_owned)
        .into();
    let a: BTreeSet<String> = ["127.0.0.1", "127.0.0.2"].map(str::to_owned).into();
    let only_b: BTreeSet<String> = ["127.0.0.3".to_owned()].into();

    for name in [
        "rr.gslb.test",
        "w.gslb.test",
        "fo.gslb.test",
        "geo.gslb.test",
        "lat.gslb.test",
        "learned.gslb.test",
    ] {
        for client in [None, Some("10.1.2.3"), Some("192.0.2.7")] {
            let e = agreeing(&node, name, client);
            assert_eq!(e["rcode"], "NOERROR", "{e:#}");
            assert!(!e["why"].as_str().unwrap_or("").is_empty(), "{e:#}");
            assert_eq!(e["candidates"].as_array().map(Vec::len), Some(3), "{e:#}");
        }
    }
    // What each algorithm answers, and why, as an operator would check it.
    let rr = explain(&node, "rr.gslb.test", None);
    assert_eq!(ips(&rr["possible"]), all);
    assert!(
        rr["why"].as_str().unwrap_or("").contains("rotates"),
        "{rr:#}"
    );
    let fo = explain(&node, "fo.gslb.test", None);
    assert_eq!(
        ips(&fo["answer"]),
        only_b,
        "failover answers its first region"
    );
    let geo_b = explain(&node, "geo.gslb.test", Some("10.1.2.3"));
    assert_eq!(
        (
            ips(&geo_b["answer"]),
            &geo_b["client_region"],
            &geo_b["ecs_scope"]
        ),
        (
            only_b.clone(),
            &serde_json::json!("b"),
            &serde_json::json!(16)
        ),
        "{geo_b:#}"
    );
    let geo_default = explain(&node, "geo.gslb.test", Some("192.0.2.7"));
    assert_eq!(ips(&geo_default["answer"]), a, "{geo_default:#}");
    assert_eq!(geo_default["client_region"], "a");
    let learned = explain(&node, "learned.gslb.test", Some("10.1.2.3"));
    assert_eq!(learned["outcome"], "geo_fallback", "{learned:#}");
    assert_eq!(ips(&learned["answer"]), only_b);
    assert!(
        learned["why"]
            .as_str()
            .unwrap_or("")
            .contains("nothing learned"),
        "{learned:#}"
    );

    // `domains` shows the real answer: one region for failover, per region for geo.
    let (_, body) = http_get(node.api.expect("api"), "/api/v1/domains");
    let domains: serde_json::Value = serde_json::from_str(&body).expect("json");
    let domain = |name: &str| {
        domains["domains"]
            .as_array()
            .and_then(|d| d.iter().find(|x| x["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {domains:#}"))
    };
    assert_eq!(ips(&domain("fo.gslb.test")["answer"]), only_b);
    assert_eq!(ips(&domain("fo.gslb.test")["healthy_addresses"]), all);
    let geo = domain("geo.gslb.test");
    assert_eq!(geo["depends_on_client"], true, "{geo:#}");
    assert_eq!(ips(&geo["answer_by_region"]["a"]), a);
    assert_eq!(ips(&geo["answer_by_region"]["b"]), only_b);
    assert_eq!(domain("rr.gslb.test")["depends_on_client"], false);

    // The CLI says the same, in lines an operator reads.
    let out = std::process::Command::new(cli_binary())
        .args(["explain", "geo.gslb.test", "--client", "10.1.2.3"])
        .env("OPENGSLB_API", format!("http://{}", node.api.expect("api")))
        .output()
        .expect("cli");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("answer:   127.0.0.3\n") && text.contains("client region: b (first 16 bits)"),
        "{text}"
    );
    let out = std::process::Command::new(cli_binary())
        .args(["domains"])
        .env("OPENGSLB_API", format!("http://{}", node.api.expect("api")))
        .output()
        .expect("cli");
    let text = String::from_utf8_lossy(&out.stdout);
    let fo_line = text
        .lines()
        .find(|l| l.starts_with("fo.gslb.test"))
        .unwrap_or("");
    assert!(fo_line.ends_with(" 127.0.0.3"), "{text}");
    let geo_line = text
        .lines()
        .find(|l| l.starts_with("geo.gslb.test"))
        .unwrap_or("");
    assert!(
        geo_line.contains("a:127.0.0.1,127.0.0.2 b:127.0.0.3"),
        "{text}"
    );

    // Region b fails: failover (active/standby: one record) and geolocation move to a,
    // and explain follows dig.
    let first_of_a: BTreeSet<String> = ["127.0.0.1".to_owned()].into();
    b.stop();
    poll_until(Duration::from_secs(10), "failover to region a", || {
        (dug(&node, "fo.gslb.test", None) == first_of_a).then_some(())
    });
    let fo = agreeing(&node, "fo.gslb.test", None);
    assert_eq!(ips(&fo["answer"]), first_of_a);
    assert!(
        fo["why"].as_str().unwrap_or("").contains("active/standby"),
        "{fo:#}"
    );
    let geo_b = agreeing(&node, "geo.gslb.test", Some("10.1.2.3"));
    assert_eq!(ips(&geo_b["answer"]), a);
    assert!(
        geo_b["why"]
            .as_str()
            .unwrap_or("")
            .contains("has no server in rotation"),
        "{geo_b:#}"
    );
    let down = geo_b["candidates"]
        .as_array()
        .and_then(|c| c.iter().find(|x| x["address"] == "127.0.0.3"))
        .cloned()
        .expect("b's server");
    assert_eq!(
        (down["in_rotation"].clone(), down["chosen"].clone()),
        (serde_json::json!(false), serde_json::json!(false)),
        "{down:#}"
    );
    assert_eq!(down["effective_status"], "unhealthy", "{down:#}");

    // Bad questions get clear errors; names outside the zones are REFUSED.
    let (status, body) = http_get(
        node.api.expect("api"),
        "/api/v1/explain?name=x.gslb.test&type=MX",
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("A and AAAA"), "{body}");
    let (status, body) = http_get(
        node.api.expect("api"),
        "/api/v1/explain?name=x.gslb.test&client=nope",
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not an IP address"), "{body}");
    assert_eq!(explain(&node, "example.org", None)["rcode"], "REFUSED");
    assert_eq!(explain(&node, "nope.gslb.test", None)["rcode"], "NXDOMAIN");

    // Routing decisions at debug, geo_fallback named, and sampled: a burst of queries
    // for one domain adds at most one line a second.
    assert!(
        node.process
            .output()
            .lines()
            .any(|l| l.contains("routing decision") && l.contains("outcome=\"geo_fallback\"")),
        "no geo_fallback decision logged: {}",
        node.process
            .output()
            .lines()
            .filter(|l| l.contains("routing decision"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let decisions = || {
        node.process
            .output()
            .lines()
            .filter(|l| l.contains("routing decision"))
            .count()
    };
    let before = decisions();
    let started = Instant::now();
    for id in 0..2000u16 {
        udp_exchange(
            node.dns,
            &query_packet(id, "rr.gslb.test", 1, false),
            Duration::from_secs(1),
        )
        .expect("answer");
    }
    let seconds = started.elapsed().as_secs() + 2;
    let logged = decisions() - before;
    assert!(
        logged as u64 <= seconds,
        "{logged} decision lines for 2000 queries in {seconds} s"
    );
}
