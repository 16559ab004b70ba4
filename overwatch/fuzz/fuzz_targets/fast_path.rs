//! libFuzzer target: the UDP fast path against the hickory path. Any bytes, from a few
//! sources, with the same entropy through both: the fast path must decline or produce
//! exactly the bytes the hickory path sends (and never panic).
//! Run: `cd overwatch/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run fast_path`.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use opengslb_overwatch::dns::fast::{self, MAX_RESPONSE};
use opengslb_overwatch::dns::{DnsSnapshot, Handler, answer_udp};
use opengslb_overwatch::model::view::View;

const CONFIG: &str = "overwatch:\n  validation: {enabled: false}\n  geolocation:\n    default_region: a\n    custom_mappings: [{cidr: 10.0.0.0/8, region: b}]\ndns:\n  zones: [fuzz.test, other.test]\n  nameservers: [ns1.fuzz.test, ns2.fuzz.test]\nregions:\n  - {name: a, servers: [{address: 192.0.2.1}, {address: 192.0.2.3}, {address: \"2001:db8::1\"}]}\n  - {name: b, servers: [{address: 192.0.2.2, weight: 0}, {address: 192.0.2.4}]}\ndomains:\n  - {name: rr.fuzz.test, routing_algorithm: round-robin, regions: [a, b]}\n  - {name: geo.fuzz.test, routing_algorithm: geolocation, regions: [a, b]}\n  - {name: w.fuzz.test, routing_algorithm: weighted, regions: [a, b]}\n  - {name: f.fuzz.test, routing_algorithm: failover, regions: [b, a]}\n  - {name: l.fuzz.test, routing_algorithm: latency, regions: [a, b]}\n  - {name: ll.fuzz.test, routing_algorithm: learned_latency, regions: [a, b]}\n  - {name: a.b.other.test, routing_algorithm: round-robin, regions: [b]}\n";

struct Both {
    snapshot: Arc<DnsSnapshot>,
    handler: Handler,
}

static BOTH: LazyLock<Both> = LazyLock::new(|| {
    let settings =
        Arc::new(opengslb_overwatch::config::parse("fuzz.yaml", CONFIG).expect("config"));
    let snapshot = Arc::new(DnsSnapshot::build(&View::from_config(settings, None)));
    let (_tx, rx) = tokio::sync::watch::channel(Arc::clone(&snapshot));
    Both {
        snapshot,
        handler: Handler::new(rx),
    }
});

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
}

fuzz_target!(|data: &[u8]| {
    // First byte: source and entropy; the rest is the datagram.
    let Some((&selector, packet)) = data.split_first() else {
        return;
    };
    let src: SocketAddr = match selector % 3 {
        0 => "127.0.0.1:5300",
        1 => "10.1.2.3:53",
        _ => "[2001:db8::7]:53",
    }
    .parse()
    .expect("addr");
    let entropy = u64::from(selector / 3);
    let both = &*BOTH;
    let mut out = [0u8; MAX_RESPONSE];
    let Some(answered) = fast::answer(&both.snapshot, packet, src, entropy, None, &mut out) else {
        return;
    };
    both.handler.set_next_entropy(entropy);
    let reference = RUNTIME.with(|rt| rt.block_on(answer_udp(&both.handler, packet, src)));
    assert_eq!(
        reference.as_deref(),
        Some(&out[..answered.len]),
        "fast path and hickory path differ for {packet:02x?}"
    );
});
