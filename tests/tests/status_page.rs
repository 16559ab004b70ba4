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
    let body = "dns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [gslb.test]\nregions:\n  - name: eu\ndomains:\n  - name: app.gslb.test\n    routing_algorithm: round-robin\n    services: [app]\n    regions: [eu]\n";
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

#[test]
fn the_page_cannot_miss_an_alarm_checks_the_token_and_keeps_a_selection() {
    let key = cluster_key(12);
    let gossip = format!(
        "  agent_tokens: {{app: {TOKEN}}}\n  gossip: {{bind_address: \"127.0.0.1:0\", encryption_key: \"{key}\"}}\n  stale: {{threshold: 2s, remove_after: 5m}}\n"
    );
    let body = "dns:\n  listen_address: \"127.0.0.1:0\"\n  zones: [gslb.test]\nregions:\n  - name: eu\ndomains:\n  - name: app.gslb.test\n    routing_algorithm: round-robin\n    services: [app]\n    regions: [eu]\n";
    let mut cluster = TestCluster::start_with("page-alarms", &gossip, body, TEST_TIMING);
    cluster.leader_among(&[0, 1, 2], Duration::from_secs(15));
    let seeds: Vec<_> = (0..3)
        .map(|i| cluster.node(i).gossip.expect("gossip"))
        .collect();
    let dir = TempDir::new("page-alarms-agent");
    let backend = Backend::start("127.0.0.1");
    let mut agent = AgentDaemon::start(&dir, "a1", backend.addr, &seeds, &key, TOKEN);
    let node = cluster.node(0);
    let api = node.api.expect("api");

    let browser = Browser::start();
    browser.open(&format!("http://{api}/"));
    let js = |script: &str| browser.run(script);
    let text = |css: &str| {
        js(&format!(
            "const e = document.querySelector('{css}'); return e ? e.textContent : null;"
        ))
        .as_str()
        .map(str::to_owned)
    };
    poll_until(Duration::from_secs(20), "the agent on the page", || {
        (js("return document.querySelectorAll('#agent-table tbody tr').length") == 1).then_some(())
    });

    // Read-only: the override form is not shown.
    let form_shown =
        "return getComputedStyle(document.getElementById('override-form')).display !== 'none'";
    assert_eq!(js(form_shown), false, "read-only shows no override form");
    assert_eq!(
        js("return document.querySelectorAll('#alerts .alert').length"),
        0
    );

    // A wrong token is checked with the node and refused; the error stays until dismissed.
    browser.type_into("#token", "not-a-token-of-this-cluster");
    browser.click("#use-token");
    let refused = poll_until(Duration::from_secs(5), "the refusal", || {
        text("#errors .error span").filter(|t| t.contains("refused"))
    });
    assert!(refused.contains("unknown API token"), "{refused}");
    assert_eq!(text("#token-state").as_deref(), Some("read-only"));
    assert_eq!(js(form_shown), false);
    // Three refreshes later it is still there.
    let shown_at = Instant::now();
    poll_until(Duration::from_secs(10), "three refreshes", || {
        (shown_at.elapsed() >= Duration::from_secs(3)).then_some(())
    });
    assert_eq!(
        js("return document.querySelectorAll('#errors .error').length"),
        1
    );
    browser.click("#errors .error button.dismiss");
    assert_eq!(
        js("return document.querySelectorAll('#errors .error').length"),
        0
    );

    // The right token: checked, named, and the form appears.
    js("document.getElementById('token').value = ''; return null;");
    browser.type_into("#token", API_TOKEN);
    browser.click("#use-token");
    poll_until(Duration::from_secs(5), "changes enabled", || {
        (text("#token-state").as_deref() == Some("changes enabled as ops")).then_some(())
    });
    assert_eq!(js(form_shown), true);

    // A selection in a table survives the refreshes (the agent's last-seen time changes
    // every second): an agent id can be copied.
    let selected = js(
        "const cell = document.querySelector('#agent-table tbody tr td');
         const range = document.createRange(); range.selectNodeContents(cell);
         const s = window.getSelection(); s.removeAllRanges(); s.addRange(range);
         return s.toString();",
    );
    assert_eq!(selected, agent.agent_id.as_str());
    let since = Instant::now();
    poll_until(Duration::from_secs(10), "three refreshes", || {
        (since.elapsed() >= Duration::from_secs(3)).then_some(())
    });
    assert_eq!(
        js("return window.getSelection().toString()"),
        agent.agent_id.as_str(),
        "the selection survived the refreshes"
    );
    js("window.getSelection().removeAllRanges(); return null;");

    // The live chart, from the node's own counters: queries per second and the backend.
    for _ in 0..50 {
        node.dig(&["app.gslb.test", "A"]);
    }
    poll_until(Duration::from_secs(10), "the chart's rates", || {
        let note = text("#qps-note")?;
        let legend = text("#answers-legend")?;
        (js("return Number(document.getElementById('qps-chart').dataset.points)")
            .as_u64()
            .is_some_and(|n| n >= 2)
            && legend.contains(&format!("app.gslb.test {}", backend.addr.ip()))
            && !note.contains(": 0.0 now"))
        .then_some(())
        .or_else(|| {
            // Keep the queries coming while the page samples them.
            node.dig(&["app.gslb.test", "A"]);
            None
        })
    });

    // Stale agents: an alert that cannot be missed.
    agent.process.signal(libc::SIGKILL);
    agent.process.wait_exit(Duration::from_secs(5));
    poll_until(Duration::from_secs(15), "the stale agents alert", || {
        text("#alerts .alert[data-alert=stale_agents]").filter(|t| t.contains("1 agent(s) stale"))
    });

    // No quorum: the two other nodes die. A red alert, and the header says it.
    cluster.kill(1);
    cluster.kill(2);
    let alarm = poll_until(Duration::from_secs(15), "the quorum alarm", || {
        let alert = text("#alerts .alert.critical")?;
        (alert.contains("no quorum") || alert.contains("knows no leader")).then_some(alert)
    });
    let header = text("#header-alarm").unwrap_or_default();
    assert!(
        header == "NO QUORUM" || header == "NO LEADER",
        "{header:?} for {alarm}"
    );
    assert_eq!(
        js(
            "return getComputedStyle(document.querySelector('#alerts .alert.critical')).backgroundColor"
        ),
        "rgb(207, 34, 46)",
        "red"
    );
    let summary = text("#summary").unwrap_or_default();
    assert!(
        summary.contains("NO LEADER") || summary.contains("without quorum"),
        "the header never says plain 'leader' without quorum: {summary}"
    );
    let out_dir = workspace_root().join("target/test-output");
    std::fs::create_dir_all(&out_dir).expect("output dir");
    std::fs::write(out_dir.join("status-page-alarms.png"), browser.screenshot())
        .expect("screenshot");
    // The one error the browser logs is the wrong token's 401, which the test caused.
    let errors = browser.console_errors();
    assert!(
        errors
            .iter()
            .all(|e| e.contains("/api/v1/auth/check") && e.contains("401")),
        "console errors: {errors:?}"
    );
}
