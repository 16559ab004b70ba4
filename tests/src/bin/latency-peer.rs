//! Test helper run inside network namespaces (`ip netns exec NS latency-peer …`):
//!
//! - `serve ADDR`: a TCP echo server (one thread per connection).
//! - `client ADDR…`: three connections to each address, one byte out and its echo back
//!   every 50 ms, so both kernels keep sampling the RTT. Runs until killed.
//! - `get HOST:PORT PATH`: an HTTP/1.0 GET; prints the body, exits 1 on a non-2xx status.
//! - `hold ADDR N`: N established loopback connections to itself on ADDR, each with one
//!   round trip done (so the kernel has an RTT); prints `holding N`, then sleeps.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") if args.len() == 2 => serve(&args[1]),
        Some("client") if args.len() >= 2 => client(&args[1..]),
        Some("get") if args.len() == 3 => get(&args[1], &args[2]),
        Some("hold") if args.len() == 3 => hold(&args[1], &args[2]),
        _ => {
            eprintln!("usage: latency-peer serve ADDR | client ADDR... | get HOST:PORT PATH");
            std::process::exit(2);
        }
    }
}

fn serve(addr: &str) {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| fail(&format!("bind {addr}: {e}")));
    eprintln!("serving {addr}");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let mut stream = stream;
            let mut buf = [0u8; 1024];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 || stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        });
    }
}

fn client(addrs: &[String]) {
    let mut threads = Vec::new();
    for addr in addrs {
        for _ in 0..3 {
            let addr = addr.clone();
            threads.push(std::thread::spawn(move || {
                loop {
                    let Ok(mut stream) = TcpStream::connect(&addr) else {
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let mut buf = [0u8; 1];
                    loop {
                        if stream.write_all(b"x").is_err() || stream.read_exact(&mut buf).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }));
        }
    }
    eprintln!("clients running");
    for t in threads {
        let _ = t.join();
    }
}

fn get(addr: &str, path: &str) {
    let mut stream =
        TcpStream::connect(addr).unwrap_or_else(|e| fail(&format!("connect {addr}: {e}")));
    let _ = stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes());
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let ok = response
        .split_whitespace()
        .nth(1)
        .is_some_and(|s| s.starts_with('2'));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    std::io::stdout()
        .write_all(body.as_bytes())
        .unwrap_or_else(|e| fail(&e.to_string()));
    if !ok {
        std::process::exit(1);
    }
}

fn hold(addr: &str, n: &str) {
    let n: usize = n.parse().unwrap_or_else(|_| fail("N must be a number"));
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| fail(&format!("bind {addr}: {e}")));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| fail(&e.to_string()));
    let mut held = Vec::with_capacity(2 * n);
    for _ in 0..n {
        let mut client =
            TcpStream::connect(addr).unwrap_or_else(|e| fail(&format!("connect: {e}")));
        let (mut server, _) = listener
            .accept()
            .unwrap_or_else(|e| fail(&format!("accept: {e}")));
        let mut byte = [0u8; 1];
        let _ = server.write_all(b"x");
        let _ = client.read_exact(&mut byte);
        let _ = client.write_all(b"y");
        let _ = server.read_exact(&mut byte);
        held.push(client);
        held.push(server);
    }
    let _ = writeln!(std::io::stdout(), "holding {n}");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn fail(message: &str) -> ! {
    eprintln!("latency-peer: {message}");
    std::process::exit(1);
}
