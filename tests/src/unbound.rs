//! A real validating resolver: Unbound (Debian's), on a loopback port, with a stub zone
//! pointing at an overwatch node and our DS records as its trust anchor.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::TempDir;
use crate::cluster::free_port;
use crate::overwatch::{Dig, dig};
use crate::process::Spawned;

/// Unbound's binary (Debian installs it in /usr/sbin).
fn binary(name: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin"]
        .iter()
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{name} is not installed: run scripts/test.sh (installs unbound as root)")
        })
}

/// A running Unbound.
pub struct Unbound {
    /// The process.
    pub process: Spawned,
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
    config: PathBuf,
    anchors: PathBuf,
}

impl Unbound {
    /// Starts Unbound in `dir`, validating `zone` (served by `server`) with `anchors`
    /// (DS or DNSKEY records in zone-file form) as trust anchors. Answers are cached at
    /// most a second, so each test step sees what the server answers now.
    pub fn start(dir: &TempDir, zone: &str, server: SocketAddr, anchors: &[String]) -> Unbound {
        let port = free_port();
        let control = free_port();
        let anchors_file = dir.join("unbound-anchors.txt");
        std::fs::write(&anchors_file, anchors.join("\n") + "\n").expect("write anchors");
        let config = dir.join("unbound.conf");
        let text = format!(
            r#"server:
  interface: 127.0.0.1
  port: {port}
  do-ip6: no
  do-daemonize: no
  use-syslog: no
  logfile: ""
  verbosity: 1
  val-log-level: 2
  chroot: ""
  username: ""
  directory: "{dir}"
  pidfile: ""
  num-threads: 1
  so-reuseport: no
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  module-config: "validator iterator"
  # .test is served locally by default (RFC 6761); ours comes from the stub.
  local-zone: "{tld}." nodefault
  trust-anchor-file: "{anchors}"
  qname-minimisation: no
  minimal-responses: yes
  prefetch: no
  cache-max-ttl: 1
  cache-max-negative-ttl: 1
  infra-host-ttl: 1
  edns-buffer-size: 1232
remote-control:
  control-enable: yes
  control-interface: 127.0.0.1
  control-port: {control}
  control-use-cert: no
stub-zone:
  name: "{zone}"
  stub-addr: {ip}@{server_port}
"#,
            dir = dir.path().display(),
            tld = zone.rsplit('.').next().unwrap_or(zone),
            anchors = anchors_file.display(),
            ip = server.ip(),
            server_port = server.port(),
        );
        std::fs::write(&config, text).expect("write unbound.conf");
        let checked = Command::new(binary("unbound-checkconf"))
            .arg(&config)
            .output()
            .expect("unbound-checkconf");
        assert!(
            checked.status.success(),
            "unbound.conf: {}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
        let mut command = Command::new(binary("unbound"));
        command.arg("-d").arg("-c").arg(&config);
        let process = Spawned::start("unbound", command);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let unbound = Unbound {
            process,
            addr,
            config,
            anchors: anchors_file,
        };
        crate::poll_until(Duration::from_secs(15), "unbound to answer", || {
            let d = unbound.control(&["status"]);
            d.contains("is running").then_some(())
        });
        unbound
    }

    /// `unbound-control ARGS`: its output.
    pub fn control(&self, args: &[&str]) -> String {
        let output = Command::new(binary("unbound-control"))
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("unbound-control");
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    /// Replaces the trust anchors (as the parent's DS RRset changing would) and reloads:
    /// Unbound rereads them and starts with an empty cache.
    pub fn set_anchors(&self, anchors: &[String]) {
        std::fs::write(&self.anchors, anchors.join("\n") + "\n").expect("write anchors");
        let said = self.control(&["reload"]);
        assert!(said.contains("ok"), "unbound-control reload: {said}");
    }

    /// Asks Unbound (recursion desired, DNSSEC records shown).
    pub fn dig(&self, args: &[&str]) -> Dig {
        let mut all = vec!["+dnssec"];
        all.extend_from_slice(args);
        dig(self.addr, &all)
    }
}
