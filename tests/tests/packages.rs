//! The Debian packages (issue 20): `scripts/package.sh` builds them with cargo-deb, `dpkg -i`
//! installs them on this machine, and the test checks what an operator gets: files,
//! owners and modes, a system user per service, units that systemd accepts and that
//! nothing enabled, the installed binaries running with the packaged configs (overwatch
//! answering DNS inside a network namespace of its own), an upgrade that keeps an edited
//! conffile, and a purge that leaves nothing of ours behind.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use opengslb_tests::netns::{Netns, unavailable};
use opengslb_tests::process::Spawned;
use opengslb_tests::{TempDir, workspace_root};

const PACKAGES: [&str; 2] = ["opengslb-overwatch", "opengslb-agent"];

/// Runs a command: its stdout, or a panic with everything it said.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {args:?}: {text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `scripts/package.sh --profile dev --no-build` into `out`: the binaries the suite runs
/// (checked current; building them here could relink them under the other tests).
fn build(out: &Path, version: &str) -> Vec<String> {
    for (binary, crate_dir) in [
        ("opengslb-overwatch", "overwatch"),
        ("opengslb-cli", "overwatch"),
        ("opengslb-agent", "agent"),
    ] {
        opengslb_tests::built_binary(binary, crate_dir);
    }
    let script = workspace_root().join("scripts/package.sh");
    let listed = run(
        "bash",
        &[
            script.to_str().expect("path"),
            "--profile",
            "dev",
            "--no-build",
            "--deb-version",
            version,
            "--out",
            out.to_str().expect("path"),
        ],
    );
    let debs: Vec<String> = listed
        .lines()
        .filter(|l| l.ends_with(".deb"))
        .map(str::to_owned)
        .collect();
    assert_eq!(debs.len(), 2, "{listed}");
    debs
}

fn mode_owner_group(path: &str) -> (u32, String, String) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let name = |db: &str, id: u32| {
        run("getent", &[db, &id.to_string()])
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    (
        meta.permissions().mode() & 0o7777,
        name("passwd", meta.uid()),
        name("group", meta.gid()),
    )
}

fn installed(package: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status} ${Version}", package])
        .output()
        .expect("dpkg-query");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.strip_prefix("installed ").map(str::to_owned)
}

#[test]
fn packages_install_run_upgrade_over_an_edited_conffile_and_purge_cleanly() {
    if let Some(why) = unavailable() {
        // dpkg -i and network namespaces need root: scripts/test.sh runs as root in CI.
        eprintln!("skipped: {why}");
        return;
    }
    let dir = TempDir::new("packages");
    // A run that failed half way leaves them installed: start clean.
    let _ = Command::new("dpkg").arg("--purge").args(PACKAGES).output();
    let first = build(&dir.join("v1"), "0.1.0-1");
    let second = build(&dir.join("v2"), "0.1.0-2");

    let mut install = vec!["-i"];
    install.extend(first.iter().map(String::as_str));
    run("dpkg", &install);
    for package in PACKAGES {
        assert_eq!(installed(package).as_deref(), Some("0.1.0-1"), "{package}");
    }

    // Files, owners and modes.
    for binary in ["opengslb-overwatch", "opengslb-cli", "opengslb-agent"] {
        assert_eq!(
            mode_owner_group(&format!("/usr/bin/{binary}")),
            (0o755, "root".into(), "root".into())
        );
    }
    for (config, user) in [
        ("/etc/opengslb/overwatch.yaml", "opengslb-overwatch"),
        ("/etc/opengslb/agent.yaml", "opengslb-agent"),
    ] {
        // Secrets inside: readable by root and the service's group only.
        assert_eq!(
            mode_owner_group(config),
            (0o640, "root".into(), user.into()),
            "{config}"
        );
        let account = run("getent", &["passwd", user]);
        let fields: Vec<&str> = account.trim().split(':').collect();
        let uid: u32 = fields[2].parse().expect("uid");
        assert!(uid < 1000, "{user} is a system user: {account}");
        assert!(
            fields[6].ends_with("nologin"),
            "{user} cannot log in: {account}"
        );
    }
    for unit in [
        "opengslb-overwatch.service",
        "opengslb-agent.service",
        "opengslb-agent.socket",
    ] {
        let path = format!("/usr/lib/systemd/system/{unit}");
        assert_eq!(
            mode_owner_group(&path),
            (0o644, "root".into(), "root".into())
        );
        // Installing enables nothing.
        for wants in ["multi-user.target.wants", "sockets.target.wants"] {
            assert!(
                !Path::new(&format!("/etc/systemd/system/{wants}/{unit}")).exists(),
                "{unit} was enabled by the package"
            );
        }
    }
    run(
        "systemd-analyze",
        &[
            "verify",
            "/usr/lib/systemd/system/opengslb-overwatch.service",
            "/usr/lib/systemd/system/opengslb-agent.service",
            "/usr/lib/systemd/system/opengslb-agent.socket",
        ],
    );
    let conffiles = run(
        "dpkg-query",
        &["-W", "-f=${Conffiles}", "opengslb-overwatch"],
    );
    assert!(
        conffiles.contains("/etc/opengslb/overwatch.yaml"),
        "{conffiles}"
    );
    for help in [
        "/usr/share/doc/opengslb-overwatch/opengslb-overwatch.help.txt",
        "/usr/share/doc/opengslb-overwatch/opengslb-cli.help.txt",
        "/usr/share/doc/opengslb-agent/opengslb-agent.help.txt",
    ] {
        let text = std::fs::read_to_string(help).expect(help);
        assert!(text.contains("Usage:"), "{help}: {text}");
    }

    // The installed binaries with the packaged configs.
    let valid = run(
        "/usr/bin/opengslb-cli",
        &["config", "validate", "/etc/opengslb/overwatch.yaml"],
    );
    assert!(valid.contains("valid (1 zones"), "{valid}");
    let reply = run("/usr/bin/opengslb-agent", &[]);
    assert!(reply.ends_with("ready\n"), "one-shot mode: {reply:?}");
    {
        // overwatch on the packaged config's port 53, in a namespace of its own.
        let ns = Netns::new("pkg");
        let data = dir.join("overwatch-data");
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &ns.name, "/usr/bin/opengslb-overwatch"]);
        command.args(["--config", "/etc/opengslb/overwatch.yaml", "--data-dir"]);
        command.arg(&data);
        let node = Spawned::start("installed opengslb-overwatch", command);
        node.wait_for_line("dns listening", Duration::from_secs(15));
        let soa = opengslb_tests::poll_until(
            Duration::from_secs(15),
            "the packaged config's zone to answer",
            || {
                let out = Command::new("ip")
                    .args(["netns", "exec", &ns.name, "dig", "+time=1", "+tries=1"])
                    .args(["@127.0.0.1", "gslb.example", "SOA"])
                    .output()
                    .ok()?;
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.contains("status: NOERROR").then_some(text)
            },
        );
        assert!(soa.contains("gslb.example."), "{soa}");
    }

    // Upgrade over an edited conffile: the operator's edit stays.
    let edited = format!(
        "{}# edited by the operator\n",
        std::fs::read_to_string("/etc/opengslb/overwatch.yaml").expect("config")
    );
    std::fs::write("/etc/opengslb/overwatch.yaml", &edited).expect("edit");
    let mut upgrade = vec!["--force-confold", "-i"];
    upgrade.extend(second.iter().map(String::as_str));
    run("dpkg", &upgrade);
    for package in PACKAGES {
        assert_eq!(installed(package).as_deref(), Some("0.1.0-2"), "{package}");
    }
    assert_eq!(
        std::fs::read_to_string("/etc/opengslb/overwatch.yaml").expect("config"),
        edited
    );
    assert_eq!(
        mode_owner_group("/etc/opengslb/overwatch.yaml"),
        (0o640, "root".into(), "opengslb-overwatch".into())
    );

    // Purge: nothing of ours is left.
    let mut purge = vec!["--purge"];
    purge.extend(PACKAGES);
    run("dpkg", &purge);
    for package in PACKAGES {
        assert_eq!(installed(package), None, "{package}");
    }
    for gone in [
        "/usr/bin/opengslb-overwatch",
        "/usr/bin/opengslb-cli",
        "/usr/bin/opengslb-agent",
        "/etc/opengslb",
        "/usr/lib/systemd/system/opengslb-overwatch.service",
        "/usr/lib/systemd/system/opengslb-agent.socket",
        "/usr/lib/sysusers.d/opengslb-overwatch.conf",
        "/usr/share/doc/opengslb-overwatch",
        "/var/lib/opengslb",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} survived the purge");
    }
    let overrides = run("dpkg-statoverride", &["--list"]);
    assert!(!overrides.contains("/etc/opengslb"), "{overrides}");
}
