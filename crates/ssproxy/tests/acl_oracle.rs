//! Oracle for the ACL matcher (issue 16): shadowsocks-libev's `ss-local --acl` and our
//! `Acl::decide_ip` must decide alike on the same generated file, for a few hundred
//! loopback addresses (127.0.0.0/8 and ::1, so that nothing leaves the machine and no
//! name needs resolving).
//!
//! How libev's decision is observed: ss-local's server is a plain listener of ours (no
//! shadowsocks server is needed: we only watch where the connection lands). Each
//! destination address has a listener of its own. A SOCKS5 CONNECT to an address that
//! libev bypasses reaches that address's listener directly; one it proxies reaches the
//! fake server instead.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{Proc, free_port, wait_for_port};
use ssproxy::acl::{Acl, Decision};

/// Deterministic xorshift, so that a failure reproduces.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Destinations: spread over a few /16s of 127.0.0.0/8 so that the rules' CIDRs cut
/// through them, plus ::1.
fn destinations(rng: &mut Rng, count: usize) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = vec![IpAddr::V6(Ipv6Addr::LOCALHOST)];
    while out.len() < count {
        let ip = Ipv4Addr::new(
            127,
            10 + rng.below(4) as u8,
            rng.below(8) as u8,
            1 + rng.below(254) as u8,
        );
        if !out.contains(&IpAddr::V4(ip)) {
            out.push(IpAddr::V4(ip));
        }
    }
    out
}

/// A file of mixed rules over those ranges: both lists, single addresses, CIDRs of many
/// lengths (some overlapping across the lists), name rules that IP destinations must
/// ignore, comments.
fn acl_file(rng: &mut Rng, mode: &str, destinations: &[IpAddr]) -> String {
    let mut text = format!("# generated oracle file\n{mode}\n");
    for list in ["[bypass_list]", "[proxy_list]", "[bypass_list]"] {
        text.push_str(list);
        text.push('\n');
        for _ in 0..10 {
            let line = match rng.below(5) {
                0 => destinations[rng.below(destinations.len() as u64) as usize].to_string(),
                1 => format!("127.{}.0.0/{}", 10 + rng.below(4), 21 + rng.below(2)),
                2 => format!("127.{}.{}.0/{}", 10 + rng.below(4), rng.below(8), 22 + rng.below(3)),
                3 => format!(
                    "127.{}.{}.{}/{}",
                    10 + rng.below(4),
                    rng.below(8),
                    rng.below(256),
                    25 + rng.below(8)
                ),
                _ => {
                    ["(^|\\.)example\\.com$", "^127\\.", "localhost", "# a comment"][rng.below(4) as usize].to_string()
                }
            };
            text.push_str(&line);
            text.push('\n');
        }
    }
    if rng.below(2) == 0 {
        text.push_str("[proxy_list]\n::1\n");
    }
    text
}

/// Accepts one connection within `until`, if any arrives.
fn accept_by(listener: &TcpListener, until: Instant) -> Option<TcpStream> {
    while Instant::now() < until {
        if let Ok((stream, _)) = listener.accept() {
            return Some(stream);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// Where libev's ss-local sent a CONNECT to `target`: `Bypass` if `target_listener`
/// got the connection, `Proxy` if `fake_server` did.
fn libev_decision(
    socks_port: u16,
    target: SocketAddr,
    target_listener: &TcpListener,
    fake_server: &TcpListener,
) -> Decision {
    let mut client = TcpStream::connect(("127.0.0.1", socks_port)).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut request = vec![5, 1, 0, 5, 1, 0];
    match target.ip() {
        IpAddr::V4(v4) => {
            request.push(1);
            request.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            request.push(4);
            request.extend_from_slice(&v6.octets());
        }
    }
    request.extend_from_slice(&target.port().to_be_bytes());
    client.write_all(&request).unwrap();
    // Method selection (2 bytes) and the reply (at least 10): libev replies before it
    // connects, then connects once the first payload arrives.
    let mut reply = [0u8; 12];
    client.read_exact(&mut reply).unwrap();
    assert_eq!(reply[3], 0, "SOCKS5 reply for {target}: {reply:?}");
    client.write_all(b"x").unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if accept_by(target_listener, Instant::now() + Duration::from_millis(5)).is_some() {
            return Decision::Bypass;
        }
        if accept_by(fake_server, Instant::now() + Duration::from_millis(5)).is_some() {
            return Decision::Proxy;
        }
    }
    panic!("ss-local connected {target} neither directly nor through the server within 5 s");
}

fn oracle_run(mode: &str, seed: u64) {
    let mut rng = Rng(seed);
    let destinations = destinations(&mut rng, 150);
    let text = acl_file(&mut rng, mode, &destinations);
    let ours = Acl::parse(&text).unwrap_or_else(|err| panic!("{err}\n{text}"));
    let path = std::env::temp_dir().join(format!("ssproxy-acl-oracle-{}-{seed}.acl", std::process::id()));
    std::fs::write(&path, &text).unwrap();

    let fake_server = TcpListener::bind("127.0.0.1:0").unwrap();
    fake_server.set_nonblocking(true).unwrap();
    let server_port = fake_server.local_addr().unwrap().port().to_string();
    let socks_port = free_port();
    let local_port = socks_port.to_string();
    let acl_path = path.to_str().unwrap();
    let _local = Proc::spawn(
        "libev-ss-local-acl",
        "ss-local",
        &[
            "-s",
            "127.0.0.1",
            "-p",
            &server_port,
            "-k",
            "oracle",
            "-m",
            "aes-256-gcm",
            "-b",
            "127.0.0.1",
            "-l",
            &local_port,
            "--acl",
            acl_path,
        ],
    );
    wait_for_port(socks_port);
    // wait_for_port's probe connection is harmless: it sends no request.

    let mut disagreements = Vec::new();
    let mut bypassed = 0;
    for ip in &destinations {
        let listener = TcpListener::bind((*ip, 0)).unwrap_or_else(|err| panic!("binding {ip}: {err}"));
        listener.set_nonblocking(true).unwrap();
        let target = listener.local_addr().unwrap();
        let theirs = libev_decision(socks_port, target, &listener, &fake_server);
        bypassed += usize::from(theirs == Decision::Bypass);
        if theirs != ours.decide_ip(*ip) {
            disagreements.push(format!("{ip}: libev {theirs:?}, ours {:?}", ours.decide_ip(*ip)));
        }
    }
    std::fs::remove_file(&path).ok();
    // Both outcomes must occur, or the comparison proves little.
    let proxied = destinations.len() - bypassed;
    eprintln!("{mode}: libev bypassed {bypassed}, proxied {proxied}");
    assert!(
        bypassed >= 10 && proxied >= 10,
        "libev bypassed {bypassed}, proxied {proxied}\n{text}"
    );
    assert!(
        disagreements.is_empty(),
        "{} of {} differ:\n{}\nfile:\n{text}",
        disagreements.len(),
        destinations.len(),
        disagreements.join("\n")
    );
}

#[test]
fn libev_ss_local_and_decide_ip_agree_under_proxy_all() {
    oracle_run("[proxy_all]", 0x0dd5_eed1);
}

#[test]
fn libev_ss_local_and_decide_ip_agree_under_bypass_all() {
    oracle_run("[bypass_all]", 0x0bad_cafe);
}
