//! Passive latency learning, on this machine's real TCP stack.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;

use opengslb_agent::latency::collector;

/// `ss -tin` for the established sockets on local `port`: client port → rtt in ms.
fn ss_rtts(port: u16) -> BTreeMap<u16, f64> {
    let out = Command::new("ss")
        .args(["-tinH", "state", "established"])
        .arg(format!("( sport = :{port} )"))
        .output()
        .expect("ss (iproute2)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut rtts = BTreeMap::new();
    let mut peer_port = None;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        // Socket line: Recv-Q Send-Q Local:Port Peer:Port; info line: "... rtt:0.05/0.025 ..."
        if words.len() >= 4 && !line.starts_with(char::is_whitespace) {
            peer_port = words[3]
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok());
        }
        if let Some(rtt) = words.iter().find_map(|w| w.strip_prefix("rtt:")) {
            let ms = rtt.split('/').next().and_then(|v| v.parse::<f64>().ok());
            if let (Some(p), Some(ms)) = (peer_port.take(), ms) {
                rtts.insert(p, ms);
            }
        }
    }
    rtts
}

/// The collector sees exactly the live loopback connections `ss -ti` sees, with the
/// same smoothed RTT.
#[test]
fn collector_rtts_agree_with_ss() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut clients = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..5 {
        let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (mut s, _) = listener.accept().expect("accept");
        // A few round trips so the kernel has RTT samples on the server side.
        for _ in 0..20 {
            s.write_all(b"ping").expect("write");
            let mut buf = [0u8; 4];
            c.read_exact(&mut buf).expect("read");
            c.write_all(b"pong").expect("write");
            s.read_exact(&mut buf).expect("read");
        }
        clients.push(c);
        servers.push(s);
    }
    let client_ports: HashSet<u16> = clients
        .iter()
        .map(|c| c.local_addr().expect("addr").port())
        .collect();

    let found = collector::established(&HashSet::from([port])).expect("sock_diag");
    let expected = ss_rtts(port);
    let seen: HashSet<u16> = found.iter().map(|c| c.peer_port).collect();
    assert_eq!(
        seen, client_ports,
        "the collector sees every client connection, only them"
    );
    assert_eq!(
        expected.keys().copied().collect::<HashSet<u16>>(),
        client_ports,
        "ss sees the same ones"
    );
    for c in &found {
        assert_eq!(c.local_port, port);
        assert_eq!(c.peer.to_string(), "127.0.0.1");
        let ms = c.rtt.as_secs_f64() * 1e3;
        let ss = expected[&c.peer_port];
        // Both read the same idle socket's srtt; ss prints it in ms with 3 decimals.
        assert!(
            (ms - ss).abs() <= 0.002 + ss * 0.01,
            "port {}: collector {ms} ms, ss {ss} ms",
            c.peer_port
        );
    }
}
