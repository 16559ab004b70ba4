//! The status page in a real headless Chromium, against a three-node cluster with an agent.

use std::time::{Duration, Instant};

use opengslb_tests::browser::Browser;
use opengslb_tests::cluster::{TEST_TIMING, TestCluster};
use opengslb_tests::gslb::{API_TOKEN, AgentDaemon, TOKEN, cluster_key};
use opengslb_tests::overwatch::{Backend, cli_binary};
use opengslb_tests::{TempDir, poll_until, touch, workspace_root};

#[test]
fn the_status_page_shows_the_cluster_follows_a_drain_and_sets_overrides() {
    let key = cluster_key(11);
    let gossip = format!(
        "  agent_tokens: {{app: {TOKEN}}}\n  gossip: {{bind_address: \"127.0.0.1:0\", encryption_key: \"{key}\"}}\n"
    );
    let body = "dns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [gslb.test]\nregions:\n  - name: eu\ndomains:\n  - name: app.gslb.test\n    routing_algorithm: round-robin\n    regions: [eu]\n";
    let cluster = TestCluster::start_with("page", &gossip, body, TEST_TIMING);
    cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
    let seeds: Vec<_> = (0..3)
        .map(|i| cluster.node(i).gossip.expect("gossip"))
        .collect();
    let dir = TempDir::new("page-agent");
    let backend = Backend::start("127.0.0.1");
    let agent = AgentDaemon::start(&dir, "a1", backend.addr, &seeds, &key, TOKEN);
    let row = format!("app/127.0.0.1:{}", backend.addr.port());

    let browser = Browser::start();
    let api = cluster.node(1).api.expect("api");
    browser.open(&format!("http://{api}/"));
    let status_of = |row: &str| {
        browser
            .run(&format!(
                "const r = document.querySelector('tr[data-backend=\"{row}\"] .status'); return r ? r.textContent : null;"
            ))
            .as_str()
            .map(str::to_owned)
    };
    poll_until(
        Duration::from_secs(20),
        "the agent's backend healthy on the page",
        || (status_of(&row).as_deref() == Some("healthy")).then_some(()),
    );
    let members = browser.run("return document.querySelectorAll('#members tbody tr').length");
    assert_eq!(members, 3, "three members listed");
    let leader = browser.run("return document.getElementById('summary').textContent");
    assert!(
        leader.as_str().is_some_and(|s| s.contains("leader")),
        "{leader}"
    );

    // A drain shows within 2 s.
    let drained_at = Instant::now();
    touch(&agent.drain);
    poll_until(
        Duration::from_secs(2),
        "the drain on the page within 2 s",
        || (status_of(&row).as_deref() == Some("draining")).then_some(()),
    );
    eprintln!("drain on the page after {:?}", drained_at.elapsed());

    // With a token, an override set from the page is in the cluster.
    browser.type_into("#token", API_TOKEN);
    browser.click("#use-token");
    poll_until(Duration::from_secs(5), "the override form", || {
        (browser.run("return !document.getElementById('override-form').hidden") == true)
            .then_some(())
    });
    browser.type_into("#override-form input[name=service]", "app");
    browser.type_into(
        "#override-form input[name=address]",
        &backend.addr.to_string(),
    );
    browser.type_into(
        "#override-form input[name=reason]",
        "set from the status page",
    );
    browser.click("#override-form button[type=submit]");
    let out = poll_until(Duration::from_secs(5), "the override in the CLI", || {
        let out = std::process::Command::new(cli_binary())
            .args([
                "--api",
                &format!("http://{}", cluster.node(2).api.expect("api")),
                "overrides",
                "list",
            ])
            .output()
            .expect("cli");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("set from the status page").then_some(text)
    });
    assert!(
        out.contains(&backend.addr.to_string()) && out.contains("ops"),
        "{out}"
    );
    poll_until(Duration::from_secs(5), "the override on the page", || {
        (browser.run("return document.querySelectorAll('#override-table tbody tr').length") == 1)
            .then_some(())
    });

    let shot = browser.screenshot();
    assert!(shot.starts_with(b"\x89PNG"), "a PNG");
    let out_dir = workspace_root().join("target/test-output");
    std::fs::create_dir_all(&out_dir).expect("output dir");
    std::fs::write(out_dir.join("status-page.png"), &shot).expect("screenshot");
    // On a phone-sized screen the page itself does not scroll sideways (wide tables scroll
    // inside their sections).
    browser.resize(390, 844);
    poll_until(
        Duration::from_secs(5),
        "no sideways scrolling at phone width",
        || {
            (browser.run("return document.documentElement.scrollWidth <= window.innerWidth + 1")
                == true)
                .then_some(())
        },
    );
    std::fs::write(out_dir.join("status-page-phone.png"), browser.screenshot())
        .expect("screenshot");
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:?}");
}
