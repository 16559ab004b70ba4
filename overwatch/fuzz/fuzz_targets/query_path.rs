//! libFuzzer target: any bytes through overwatch's DNS query path (hickory parse, our
//! handler, response encoding). Run: `cd overwatch/fuzz && cargo fuzz run query_path`.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use opengslb_overwatch::dns::{DnsSnapshot, Handler, answer_udp};
use opengslb_overwatch::model::view::View;

const CONFIG: &str = "overwatch:\n  validation: {enabled: false}\n  geolocation:\n    default_region: a\n    custom_mappings: [{cidr: 10.0.0.0/8, region: b}]\ndns:\n  zones: [fuzz.test]\nregions:\n  - {name: a, servers: [{address: 192.0.2.1}, {address: \"2001:db8::1\"}]}\n  - {name: b, servers: [{address: 192.0.2.2, weight: 0}]}\ndomains:\n  - {name: rr.fuzz.test, routing_algorithm: round-robin, regions: [a, b]}\n  - {name: geo.fuzz.test, routing_algorithm: geolocation, regions: [a, b]}\n  - {name: w.fuzz.test, routing_algorithm: weighted, regions: [a, b]}\n";

static HANDLER: LazyLock<Handler> = LazyLock::new(|| {
    let settings = Arc::new(opengslb_overwatch::config::parse("fuzz.yaml", CONFIG).expect("config"));
    let view = View::from_config(settings, None);
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(DnsSnapshot::build(&view)));
    Handler::new(rx)
});

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
}

fuzz_target!(|data: &[u8]| {
    let src: SocketAddr = "127.0.0.1:5300".parse().expect("addr");
    RUNTIME.with(|rt| rt.block_on(answer_udp(&HANDLER, data, src)));
});
