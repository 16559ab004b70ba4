//! The user-space cost of one DNS answer: the UDP fast path against the hickory path it
//! stands in front of, on the same snapshot and the same queries, in one process (no
//! sockets, no metrics recorder). `cargo bench -p opengslb-overwatch --bench dns_paths`.
//!
//! What the kernel adds per query (about 5 µs on loopback here) is the same for both and
//! is measured by `bench/dns.sh` against gdnsd.

use std::hint::black_box;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use opengslb_overwatch::dns::dnssec::{keys::Keyring, lifecycle, sign::SignatureCache};
use opengslb_overwatch::dns::fast::{self, MAX_RESPONSE};
use opengslb_overwatch::dns::{DnsSnapshot, Handler, answer_udp};
use opengslb_overwatch::model::machine::{Machine, Request};
use opengslb_overwatch::model::status::Effective;
use opengslb_overwatch::model::view::View;

/// bench/overwatch-dns.yaml's zone and domains, without health checks (all healthy).
const CONFIG: &str = r#"
overwatch:
  validation: {enabled: false}
  geolocation:
    default_region: dc1
    custom_mappings: [{cidr: 10.0.0.0/8, region: dc2}]
dns:
  zones: [demo.local]
regions:
  - {name: dc1, servers: [{address: 127.0.0.21}, {address: 127.0.0.22}]}
  - {name: dc2, servers: [{address: 127.0.0.23}]}
domains:
  - {name: app.demo.local, routing_algorithm: round-robin, regions: [dc1, dc2]}
  - {name: geo.demo.local, routing_algorithm: geolocation, regions: [dc1, dc2]}
"#;

/// A query with an OPT record (payload 1232) and the DO bit: a validating resolver's.
fn query_do(name: &str, qtype: u16) -> Vec<u8> {
    let mut p = query(name, qtype, false);
    p[11] = 1;
    p.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0x80, 0, 0, 0]);
    p
}

/// The cluster's first keys (a KSK and a ZSK, ECDSA P-256), read.
fn keyring() -> Arc<Keyring> {
    let mut machine = Machine::default();
    let first = lifecycle::next_step(
        &machine.dnssec_keys,
        &opengslb_overwatch::config::DnssecSettings::default(),
        0,
        0,
    )
    .expect("keys")
    .expect("first keys");
    machine.apply(&Request::V1(first));
    Arc::new(Keyring::read(&machine.dnssec_keys).0)
}

fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

fn query(name: &str, qtype: u16, ecs: bool) -> Vec<u8> {
    let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(ecs)];
    for label in name.split('.') {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.extend_from_slice(&[0, (qtype >> 8) as u8, qtype as u8, 0, 1]);
    if ecs {
        p.extend_from_slice(&[
            0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 11, 0, 8, 0, 7, 0, 1, 24, 0, 10, 1, 2,
        ]);
    }
    p
}

fn main() {
    let settings =
        Arc::new(opengslb_overwatch::config::parse("bench.yaml", CONFIG).expect("config"));
    let view = View::from_config(settings, None);
    let unsigned = Arc::new(DnsSnapshot::build(&view));
    let keys = keyring();
    let (signed, result) =
        DnsSnapshot::build_signed(&view, &keys, &mut SignatureCache::default(), now());
    result.expect("signed");
    let signed = Arc::new(signed);
    let (_tx, rx) = tokio::sync::watch::channel(Arc::clone(&unsigned));
    let (_signed_tx, signed_rx) = tokio::sync::watch::channel(Arc::clone(&signed));
    let handlers = [Handler::new(rx), Handler::new(signed_rx)];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let src: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    // (label, queries, on the signed snapshot)
    let sets: [(&str, Vec<Vec<u8>>, bool); 9] = [
        (
            "round-robin A",
            vec![query("app.demo.local", 1, false)],
            false,
        ),
        (
            "geolocation A + ECS",
            vec![query("geo.demo.local", 1, true)],
            false,
        ),
        (
            "mix (8 A, 1 AAAA, 1 NXDOMAIN)",
            [1, 1, 1, 1, 28, 1, 1, 1, 1]
                .iter()
                .map(|&t| query("app.demo.local", t, false))
                .chain([query("nxd-missing.demo.local", 1, false)])
                .collect(),
            false,
        ),
        ("apex SOA", vec![query("demo.local", 6, false)], false),
        // DNSSEC: the same queries with OPT, DO=0 and DO=1, on a signed snapshot.
        (
            "round-robin A, OPT, DO=0, signed zone",
            vec![{
                let mut q = query_do("app.demo.local", 1);
                let at = q.len() - 4;
                q[at] = 0;
                q
            }],
            true,
        ),
        (
            "round-robin A, DO=1 (+RRSIG)",
            vec![query_do("app.demo.local", 1)],
            true,
        ),
        (
            "geolocation A, DO=1 (+RRSIG)",
            vec![query_do("geo.demo.local", 1)],
            true,
        ),
        (
            "apex SOA, DO=1 (+RRSIG)",
            vec![query_do("demo.local", 6)],
            true,
        ),
        (
            "mix, DO=1 (NODATA/NXDOMAIN +NSEC)",
            [1, 1, 1, 1, 28, 1, 1, 1, 1]
                .iter()
                .map(|&t| query_do("app.demo.local", t))
                .chain([query_do("nxd-missing.demo.local", 1)])
                .collect(),
            true,
        ),
    ];
    const FAST: usize = 2_000_000;
    const SLOW: usize = 200_000;
    let mut out = vec![format!(
        "{:<32} {:>14} {:>16} {:>8}",
        "queries", "fast path ns", "hickory path ns", "ratio"
    )];
    let mut buf = [0u8; MAX_RESPONSE];
    for (label, queries, on_signed) in &sets {
        let snapshot = if *on_signed { &signed } else { &unsigned };
        let handler = &handlers[usize::from(*on_signed)];
        for q in queries {
            let fast =
                fast::answer(snapshot, q, src, 0, None, &mut buf).map(|a| buf[..a.len].to_vec());
            handler.set_next_entropy(0);
            let slow = runtime.block_on(answer_udp(handler, q, src));
            // A signed denial is the hickory path's (it looks up the NSEC chain).
            if fast.is_some() {
                assert_eq!(fast, slow, "both paths answer {label} alike");
            }
        }
        let started = Instant::now();
        for i in 0..FAST {
            let q = &queries[i % queries.len()];
            // Declined queries go to the hickory path, as on the server.
            if fast::answer(snapshot, black_box(q), src, i as u64, None, &mut buf).is_none() {
                black_box(runtime.block_on(answer_udp(handler, q, src)));
            }
        }
        let fast_ns = started.elapsed().as_nanos() as f64 / FAST as f64;
        let started = Instant::now();
        for i in 0..SLOW {
            let q = &queries[i % queries.len()];
            black_box(runtime.block_on(answer_udp(handler, black_box(q), src)));
        }
        let slow_ns = started.elapsed().as_nanos() as f64 / SLOW as f64;
        out.push(format!(
            "{label:<32} {fast_ns:>14.0} {slow_ns:>16.0} {:>7.1}x",
            slow_ns / fast_ns
        ));
    }
    // What the fast path adds to every snapshot rebuild (health change, reload): a large
    // configuration: 320 servers in 20 regions, 200 domains of 32 servers each (the most
    // the fast path answers for; larger domains go to the hickory path).
    let mut big = String::from(
        "overwatch:\n  validation: {enabled: false}\ndns:\n  zones: [big.test]\nregions:\n",
    );
    for r in 0..20 {
        big.push_str(&format!("  - name: r{r}\n    servers:\n"));
        for s in 0..16 {
            big.push_str(&format!(
                "      - {{address: 10.{r}.{}.{}}}\n",
                s / 250,
                s % 250 + 1
            ));
        }
    }
    big.push_str("domains:\n");
    for d in 0..200 {
        big.push_str(&format!(
            "  - {{name: d{d}.big.test, routing_algorithm: round-robin, regions: [r{}, r{}]}}\n",
            d % 20,
            (d + 1) % 20
        ));
    }
    let settings =
        Arc::new(opengslb_overwatch::config::parse("big.yaml", &big).expect("big config"));
    let view = View::from_config(settings, None);
    const BUILDS: u32 = 20;
    let started = Instant::now();
    for _ in 0..BUILDS {
        black_box(DnsSnapshot::build(&view));
    }
    let whole = started.elapsed() / BUILDS;
    let snapshot = DnsSnapshot::build(&view);
    let started = Instant::now();
    for _ in 0..BUILDS {
        black_box(fast::FastTables::build(
            &snapshot.zones,
            &snapshot.names,
            &snapshot.domains,
        ));
    }
    let tables = started.elapsed() / BUILDS;
    out.push(String::new());
    out.push(format!(
        "snapshot build, 200 domains x 32 servers: {:.1} ms, of which fast-path pieces {:.1} ms",
        whole.as_secs_f64() * 1e3,
        tables.as_secs_f64() * 1e3
    ));

    // DNSSEC: the same configuration signed. Round-robin over 32 servers with the default
    // 8 records per answer has 32 answer sets per domain: 6,400 RRsets, the NSEC chain
    // and the apex. First build (every signature made, on every core), a rebuild with
    // nothing changed (all from the cache but the SOA, whose serial moves), then one
    // server failing (every domain that answers it gets new sets).
    let mut cache = SignatureCache::default();
    let started = Instant::now();
    let (_, result) = DnsSnapshot::build_signed(&view, &keys, &mut cache, now());
    let first = started.elapsed();
    let made_first = result.expect("signed").made;
    let started = Instant::now();
    let (_, result) = DnsSnapshot::build_signed(&view, &keys, &mut cache, now());
    let again = started.elapsed();
    let made_again = result.expect("signed").made;
    let mut failed = view.clone();
    failed.backends[0].effective = Effective::Unhealthy;
    let started = Instant::now();
    let (_, result) = DnsSnapshot::build_signed(&failed, &keys, &mut cache, now());
    let change = started.elapsed();
    let made_change = result.expect("signed");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    out.push(format!(
        "signed snapshot build, 200 domains x 32 servers ({} RRSIGs, {cores} cores): first {:.0} ms ({made_first} signatures), unchanged {:.1} ms ({made_again}), one server down {:.1} ms ({} signatures)",
        made_change.rrsigs,
        first.as_secs_f64() * 1e3,
        again.as_secs_f64() * 1e3,
        change.as_secs_f64() * 1e3,
        made_change.made,
    ));
    let mut stdout = std::io::stdout().lock();
    for line in out {
        let _ = writeln!(stdout, "{line}");
    }
}
