//! Attacks on the UDP relays (issue 12): reflection of our own packets, replays across workers
//! and after the idle timeout, replays between two server sessions, junk aimed at sslocal's
//! outbound socket, a full association table, and datagrams from clients that never asked for
//! a UDP ASSOCIATE.
//!
//! Hostile peers are built from the crate's own crypto: a test plays the client of our ssserver
//! (capturing what it sends back) or the server of our sslocal (a plain UDP socket the sslocal
//! is pointed at). Everything talks to 127.0.0.0/8 only; every wait is bounded.

mod common;

use std::collections::HashSet;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use ssproxy::crypto::{self, Key, Method, UdpCipher, UdpReceiver, UdpSender};
use ssproxy::protocol::Address;
use ssproxy::protocol::socks5::{self, Command as SocksCommand};

const PASSWORD: &str = "udp-attack-secret";
const SIP022_METHOD: &str = "2022-blake3-aes-256-gcm";
const SIP022_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

// =============================================================================================
// Helpers
// =============================================================================================

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A UDP socket on 127.0.0.1 that gives up reading after `wait`.
fn udp_socket(wait: Duration) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s
}

/// Every datagram `socket` receives until it has been quiet for its read timeout or `within`
/// has passed.
fn drain(socket: &UdpSocket, within: Duration) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let started = Instant::now();
    while started.elapsed() < within {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => got.push((buf[..n].to_vec(), from)),
            Err(_) => break,
        }
    }
    got
}

fn key(method: &str, password: &str) -> Key {
    Key::new(method.parse::<Method>().unwrap(), password).unwrap()
}

/// A SIP004 client packet for `target`.
fn sip004_packet(key: &Key, target: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut plain = Address::from(target).to_bytes();
    plain.extend_from_slice(payload);
    let mut out = Vec::new();
    crypto::encrypt_packet(key, &plain, &mut out).unwrap();
    out
}

/// Send `packet` to `server` until `dest` receives something (the first datagram may race the
/// association's creation); the payload and the address it came from.
fn deliver(client: &UdpSocket, packet: &[u8], server: SocketAddr, dest: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 65_536];
    for _ in 0..10 {
        client.send_to(packet, server).unwrap();
        if let Ok((n, from)) = dest.recv_from(&mut buf) {
            return (buf[..n].to_vec(), from);
        }
    }
    panic!("the destination never received the client's datagram");
}

fn warn_lines(p: &Proc) -> Vec<String> {
    p.log_text()
        .lines()
        .filter(|l| l.contains(" WARN "))
        .map(str::to_owned)
        .collect()
}

/// The ports of a process's UDP sockets on IPv4 or IPv6 (its descriptors' inodes looked up in
/// /proc/net/udp{,6}).
fn udp_ports(pid: u32) -> HashSet<u16> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut ports = HashSet::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 9 && inodes.contains(fields[9]) {
                let port = fields[1].rsplit(':').next().unwrap();
                ports.insert(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

/// An sslocal whose "server" is a UDP socket of the test, with one UDP ASSOCIATE open and the
/// first datagram through it already captured.
struct FakeServerRig {
    /// Plays the ssserver.
    fake: UdpSocket,
    local: Proc,
    /// The SOCKS5 application's socket, and where the sslocal relays it.
    app: UdpSocket,
    relay: SocketAddr,
    _control: TcpStream,
    /// The first packet the sslocal sent to the server, and the address it came from.
    first: Vec<u8>,
    outbound: SocketAddr,
    /// The target the application named.
    target: SocketAddr,
}

impl FakeServerRig {
    fn start(name: &str, method: &str, password: &str) -> FakeServerRig {
        let fake = udp_socket(Duration::from_secs(2));
        let local_port = free_port();
        let local = our_local(
            name,
            method,
            password,
            fake.local_addr().unwrap().port(),
            local_port,
            &["-u", "-v"],
        );
        let target = loopback(9); // never contacted: the fake server answers in its name
        let (control, bind) = socks_request(local_port, SocksCommand::UdpAssociate, &Address::from(target)).unwrap();
        let relay = bind.socket_addr().unwrap();
        let app = udp_socket(Duration::from_millis(700));
        app.send_to(&socks5::build_udp_packet(&Address::from(target), b"ping"), relay)
            .unwrap();
        let mut buf = vec![0u8; 65_536];
        let (n, outbound) = fake.recv_from(&mut buf).expect("the sslocal's request");
        FakeServerRig {
            fake,
            local,
            app,
            relay,
            _control: control,
            first: buf[..n].to_vec(),
            outbound,
            target,
        }
    }

    /// The payloads the application receives (SOCKS5 header removed) until it is quiet.
    fn app_payloads(&self) -> Vec<Vec<u8>> {
        drain(&self.app, Duration::from_secs(5))
            .into_iter()
            .map(|(d, _)| socks5::parse_udp_packet(&d).unwrap().payload.to_vec())
            .collect()
    }
}

// =============================================================================================
// Item 1: SIP004 reflection
// =============================================================================================

#[test]
fn sip004_reply_reflected_to_the_server_is_refused() {
    for method in AEAD_METHODS {
        let dest = udp_socket(Duration::from_secs(1));
        let dest_addr = dest.local_addr().unwrap();
        let port = free_port();
        let _server = our_server("reflect004", method, PASSWORD, port, &["-u", "-t", "30"]);
        let key = key(method, PASSWORD);
        let client = udp_socket(Duration::from_secs(2));
        let (got, via) = deliver(&client, &sip004_packet(&key, dest_addr, b"ping"), loopback(port), &dest);
        assert_eq!(got, b"ping");
        dest.send_to(b"pong", via).unwrap();
        let mut buf = vec![0u8; 65_536];
        let n = client.recv_from(&mut buf).expect("the server's reply").0;
        let captured = buf[..n].to_vec();
        assert_eq!(
            crypto::decrypt_packet(&key, &mut buf[..n]).unwrap(),
            &[Address::from(dest_addr).to_bytes(), b"pong".to_vec()].concat()[..],
            "{method}: the reply names the destination, then its payload"
        );
        // The captured reply, sent back as a request, names the destination as its target.
        let attacker = udp_socket(Duration::from_secs(1));
        for _ in 0..3 {
            attacker.send_to(&captured, loopback(port)).unwrap();
        }
        let reflected = drain(&dest, Duration::from_secs(3));
        assert!(
            reflected.is_empty(),
            "{method}: the server relayed its own reply packet as a request: {reflected:?}"
        );
        assert!(drain(&attacker, Duration::from_secs(1)).is_empty(), "{method}");
    }
}

#[test]
fn sip004_request_reflected_to_the_local_is_refused() {
    for method in AEAD_METHODS {
        let rig = FakeServerRig::start("reflect004-local", method, PASSWORD);
        let key = key(method, PASSWORD);
        // A genuine reply gets through...
        let mut plain = Address::from(rig.target).to_bytes();
        plain.extend_from_slice(b"pong");
        let mut reply = Vec::new();
        crypto::encrypt_packet(&key, &plain, &mut reply).unwrap();
        rig.fake.send_to(&reply, rig.outbound).unwrap();
        // ...the sslocal's own request, sent back from the server's address, does not.
        for _ in 0..3 {
            rig.fake.send_to(&rig.first, rig.outbound).unwrap();
        }
        assert_eq!(
            rig.app_payloads(),
            vec![b"pong".to_vec()],
            "{method}: the sslocal delivered its own request as a reply"
        );
        let _ = (&rig.local, rig.relay);
    }
}

#[test]
fn sip022_reply_reflected_to_the_server_is_refused() {
    // SIP022 is not open to reflection: a server packet has another type byte than a client
    // packet, and its session is not a client session. Pinned so that it stays that way.
    for (method, psk) in SIP022_METHODS {
        let dest = udp_socket(Duration::from_secs(1));
        let dest_addr = dest.local_addr().unwrap();
        let port = free_port();
        let _server = our_server("reflect022", method, psk, port, &["-u", "-t", "30"]);
        let cipher = UdpCipher::new(&key(method, psk)).unwrap();
        let mut sender = UdpSender::client(&cipher).unwrap();
        let mut packet = Vec::new();
        sender
            .seal(&Address::from(dest_addr).to_bytes(), b"ping", &mut packet)
            .unwrap();
        let client = udp_socket(Duration::from_secs(2));
        let (_, via) = deliver(&client, &packet, loopback(port), &dest);
        dest.send_to(b"pong", via).unwrap();
        let mut buf = vec![0u8; 65_536];
        let n = client.recv_from(&mut buf).expect("the server's reply").0;
        let attacker = udp_socket(Duration::from_secs(1));
        for _ in 0..3 {
            attacker.send_to(&buf[..n], loopback(port)).unwrap();
        }
        assert!(drain(&dest, Duration::from_secs(3)).is_empty(), "{method}");
    }
}

// =============================================================================================
// Items 2 and 4: SIP022 replays on the server
// =============================================================================================

/// A SIP022 client session against our server, delivering to `dest`.
struct Sip022Client {
    sender: UdpSender,
    dest: UdpSocket,
    dest_addr: SocketAddr,
}

impl Sip022Client {
    fn new() -> Sip022Client {
        let cipher = UdpCipher::new(&key(SIP022_METHOD, SIP022_KEY)).unwrap();
        let dest = udp_socket(Duration::from_secs(1));
        let dest_addr = dest.local_addr().unwrap();
        Sip022Client {
            sender: UdpSender::client(&cipher).unwrap(),
            dest,
            dest_addr,
        }
    }

    fn packet(&mut self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.sender
            .seal(&Address::from(self.dest_addr).to_bytes(), payload, &mut out)
            .unwrap();
        out
    }
}

#[test]
fn sip022_replay_from_other_ports_is_refused_by_every_worker() {
    let port = free_port();
    // Four workers (our_server runs one), each with its own socket on the port.
    let port_text = port.to_string();
    let args = [
        "-s",
        V4,
        "-p",
        &port_text,
        "-k",
        SIP022_KEY,
        "-m",
        SIP022_METHOD,
        "--forbidden-ip",
        "",
        "--workers",
        "4",
        "-u",
        "-t",
        "30",
    ];
    let _server = Proc::spawn("replay-workers-ssserver", &ours("ssserver"), &args);
    wait_for_port(port);
    let mut c = Sip022Client::new();
    let packet = c.packet(b"once");
    let client = udp_socket(Duration::from_secs(1));
    assert_eq!(deliver(&client, &packet, loopback(port), &c.dest).0, b"once");
    // The same packet from 24 other source ports: the kernel spreads them over the workers.
    let attackers: Vec<UdpSocket> = (0..24).map(|_| udp_socket(Duration::from_millis(200))).collect();
    for a in &attackers {
        a.send_to(&packet, loopback(port)).unwrap();
    }
    let replayed = drain(&c.dest, Duration::from_secs(3));
    assert!(
        replayed.is_empty(),
        "{} replays of one packet were delivered",
        replayed.len()
    );
    // The session itself keeps working.
    let next = c.packet(b"twice");
    assert_eq!(deliver(&client, &next, loopback(port), &c.dest).0, b"twice");
}

#[test]
fn sip022_replay_after_the_idle_timeout_is_refused() {
    let port = free_port();
    let _server = our_server("replay-timeout", SIP022_METHOD, SIP022_KEY, port, &["-u", "-t", "1"]);
    let mut c = Sip022Client::new();
    let packet = c.packet(b"once");
    let client = udp_socket(Duration::from_secs(1));
    assert_eq!(deliver(&client, &packet, loopback(port), &c.dest).0, b"once");
    // The association is swept after 1 s idle; the packet is still within its 30 s.
    std::thread::sleep(Duration::from_millis(3500));
    let attacker = udp_socket(Duration::from_millis(200));
    for _ in 0..3 {
        attacker.send_to(&packet, loopback(port)).unwrap();
    }
    let replayed = drain(&c.dest, Duration::from_secs(2));
    assert!(replayed.is_empty(), "replayed after the timeout: {replayed:?}");
    // The client's next packet still gets through, after the timeout as before.
    let next = c.packet(b"again");
    assert_eq!(deliver(&client, &next, loopback(port), &c.dest).0, b"again");
}

// =============================================================================================
// Item 5: two server sessions on sslocal
// =============================================================================================

#[test]
fn sip022_alternating_server_sessions_cannot_replay_each_other() {
    let rig = FakeServerRig::start("two-sessions", SIP022_METHOD, SIP022_KEY);
    let cipher = UdpCipher::new(&key(SIP022_METHOD, SIP022_KEY)).unwrap();
    let mut first = rig.first.clone();
    let client_session = cipher.open(&mut first).unwrap().session_id();
    let source = Address::from(rig.target).to_bytes();
    let sealed = |payload: &[u8]| {
        let mut server = UdpSender::server(&cipher, client_session).unwrap();
        let mut out = Vec::new();
        server.seal(&source, payload, &mut out).unwrap();
        out
    };
    let (a, b) = (sealed(b"from A"), sealed(b"from B"));
    for _ in 0..3 {
        rig.fake.send_to(&a, rig.outbound).unwrap();
        rig.fake.send_to(&b, rig.outbound).unwrap();
    }
    assert_eq!(
        rig.app_payloads(),
        vec![b"from A".to_vec(), b"from B".to_vec()],
        "packets of two server sessions replayed each other"
    );
    // A receiver check for the test itself: the captured client packet was well formed.
    let mut first = rig.first.clone();
    let env = cipher.open(&mut first).unwrap();
    assert!(UdpReceiver::from_client(&cipher, client_session).open(env).is_ok());
}

// =============================================================================================
// Item 6: junk at sslocal's outbound socket
// =============================================================================================

#[test]
fn junk_flood_at_the_local_outbound_socket_is_not_logged_per_datagram() {
    let echo = UdpEcho::start();
    let (server_port, local_port) = (free_port(), free_port());
    let _server = our_server("junk-out", "aes-256-gcm", PASSWORD, server_port, &["-u"]);
    let local = our_local("junk-out", "aes-256-gcm", PASSWORD, server_port, local_port, &["-u"]);
    let (control, bind) = socks_request(local_port, SocksCommand::UdpAssociate, &Address::from(echo.addr)).unwrap();
    let relay = bind.socket_addr().unwrap();
    let app = udp_socket(Duration::from_millis(500));
    let echo_once = |payload: &[u8]| -> bool {
        for _ in 0..10 {
            app.send_to(&socks5::build_udp_packet(&Address::from(echo.addr), payload), relay)
                .unwrap();
            let mut buf = vec![0u8; 65_536];
            if let Ok((n, _)) = app.recv_from(&mut buf) {
                return socks5::parse_udp_packet(&buf[..n]).unwrap().payload == payload;
            }
        }
        false
    };
    // The association's outbound socket is the one the first datagram opens.
    let ports_before = udp_ports(local.pid());
    assert!(echo_once(b"before"));
    let outbound: Vec<u16> = udp_ports(local.pid()).difference(&ports_before).copied().collect();
    assert_eq!(outbound.len(), 1, "one outbound socket: {outbound:?}");
    let junk = random_bytes(64 * 1024, 7);
    let flooder = udp_socket(Duration::from_millis(100));
    for i in 0..2000usize {
        let len = 1 + (i * 7919) % 1400;
        let at = (i * 104_729) % (junk.len() - len);
        let _ = flooder.send_to(&junk[..][at..at + len], loopback(outbound[0]));
    }
    assert!(echo_once(b"after"), "the association stopped working after the flood");
    std::thread::sleep(Duration::from_millis(300));
    let warns = warn_lines(&local);
    assert!(warns.is_empty(), "{} WARN lines, e.g. {:?}", warns.len(), warns.first());
    drop(control);
}

#[test]
fn junk_from_the_server_address_is_counted_not_warned() {
    // Junk that does come from the server's address (spoofed, or a broken server) reaches the
    // sslocal's checks: it is dropped with a debug line each, and at most one summary.
    let rig = FakeServerRig::start("junk-server", "aes-256-gcm", PASSWORD);
    let junk = random_bytes(64 * 1024, 11);
    for i in 0..500usize {
        let len = 1 + (i * 7919) % 1400;
        let at = (i * 104_729) % (junk.len() - len);
        rig.fake.send_to(&junk[at..at + len], rig.outbound).unwrap();
    }
    // Let the junk be read first: the genuine reply must not be lost to a full receive buffer.
    std::thread::sleep(Duration::from_millis(500));
    let mut plain = Address::from(rig.target).to_bytes();
    plain.extend_from_slice(b"genuine");
    let mut reply = Vec::new();
    crypto::encrypt_packet(&key("aes-256-gcm", PASSWORD), &plain, &mut reply).unwrap();
    rig.fake.send_to(&reply, rig.outbound).unwrap();
    assert_eq!(rig.app_payloads(), vec![b"genuine".to_vec()]);
    let warns = warn_lines(&rig.local);
    assert!(warns.len() <= 1, "{} WARN lines, e.g. {:?}", warns.len(), warns.first());
}

// =============================================================================================
// Hardening: a full association table, datagrams without an association
// =============================================================================================

#[test]
fn full_association_table_evicts_the_least_recently_used() {
    let echo = UdpEcho::start();
    let port = free_port();
    let _server = our_server(
        "lru",
        "aes-256-gcm",
        PASSWORD,
        port,
        &["-u", "-t", "60", "--udp-max-associations", "2"],
    );
    let key = key("aes-256-gcm", PASSWORD);
    let clients: Vec<UdpSocket> = (0..3).map(|_| udp_socket(Duration::from_millis(500))).collect();
    let echoed = |client: &UdpSocket, payload: &[u8]| -> bool {
        let mut buf = vec![0u8; 65_536];
        for _ in 0..6 {
            client
                .send_to(&sip004_packet(&key, echo.addr, payload), loopback(port))
                .unwrap();
            if let Ok((n, _)) = client.recv_from(&mut buf) {
                let plain = crypto::decrypt_packet(&key, &mut buf[..n]).unwrap();
                return plain.ends_with(payload);
            }
        }
        false
    };
    assert!(echoed(&clients[0], b"first"));
    assert!(echoed(&clients[1], b"second"));
    // The table is full: the third client takes the place of the least recently active.
    assert!(
        echoed(&clients[2], b"third"),
        "a new client was locked out by a full table"
    );
    assert!(echoed(&clients[1], b"second again"));
}

#[test]
fn udp_datagrams_without_an_associate_are_refused() {
    let echo = UdpEcho::start();
    let (server_port, local_port) = (free_port(), free_port());
    let _server = our_server("no-assoc", "aes-256-gcm", PASSWORD, server_port, &["-u"]);
    let _local = our_local(
        "no-assoc",
        "aes-256-gcm",
        PASSWORD,
        server_port,
        local_port,
        &["-u", "-v"],
    );
    let relay = loopback(local_port);
    let datagram = socks5::build_udp_packet(&Address::from(echo.addr), b"uninvited");
    let refused = |socket: &UdpSocket| {
        for _ in 0..3 {
            socket.send_to(&datagram, relay).unwrap();
        }
        drain(socket, Duration::from_secs(2)).is_empty()
    };
    // Nobody holds an association.
    let app = udp_socket(Duration::from_millis(500));
    assert!(refused(&app), "relayed with no UDP ASSOCIATE at all");
    // 127.0.0.1 holds one: 127.0.0.2 still gets nothing.
    let (control, _) = socks_request(local_port, SocksCommand::UdpAssociate, &Address::from(echo.addr)).unwrap();
    let other = UdpSocket::bind("127.0.0.2:0").unwrap();
    other.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    assert!(refused(&other), "relayed for an address that holds no association");
    let invited = socks5::build_udp_packet(&Address::from(echo.addr), b"invited");
    let mut buf = vec![0u8; 65_536];
    let echoed = (0..10).any(|_| {
        app.send_to(&invited, relay).unwrap();
        app.recv_from(&mut buf).is_ok()
    });
    assert!(echoed, "the client holding the association was not relayed");
    // Once the control connection is closed, the client's datagrams are refused again.
    drop(control);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        refused(&app),
        "relayed after the association's control connection closed"
    );
}
