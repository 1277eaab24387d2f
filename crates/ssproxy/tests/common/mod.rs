//! Test support: run our binaries and shadowsocks-libev's, a loopback HTTP server,
//! a UDP echo server, and SOCKS5 clients. Everything listens on 127.0.0.1.

#![allow(dead_code)] // each test file uses a different part
#![allow(unsafe_code)] // a test: it calls libc directly (fds, signals, limits)

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use ssproxy::protocol::Address;
use ssproxy::protocol::socks5::{self, Command as SocksCommand};

/// The AEAD ciphers shadowsocks-libev shares with us.
pub const AEAD_METHODS: [&str; 4] = [
    "aes-128-gcm",
    "aes-256-gcm",
    "chacha20-ietf-poly1305",
    "xchacha20-ietf-poly1305",
];

/// The SIP022 methods, with a valid base64 key for each.
pub const SIP022_METHODS: [(&str, &str); 3] = [
    ("2022-blake3-aes-128-gcm", "AAECAwQFBgcICQoLDA0ODw=="),
    (
        "2022-blake3-aes-256-gcm",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    ),
    (
        "2022-blake3-chacha20-poly1305",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    ),
];

/// A port nothing listens on right now (the kernel's choice, then released).
pub fn free_port() -> u16 {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    // Also free for UDP, since the relays bind both.
    match UdpSocket::bind(("127.0.0.1", port)) {
        Ok(_) => port,
        Err(_) => free_port(),
    }
}

/// A child process, killed when dropped; its output goes to a log file that is
/// printed if the test fails while it runs.
pub struct Proc {
    child: Child,
    pub name: String,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, program: &str, args: &[&str]) -> Proc {
        // Tests of one binary run in parallel: each process gets a log of its own.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let log = std::env::temp_dir().join(format!("ssproxy-test-{}-{}-{n}.log", name, std::process::id()));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e} (run scripts/setup.sh to install the peers)"));
        Proc {
            child,
            name: name.to_string(),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Send a signal and wait (bounded) for the process to exit; its exit status.
    pub fn signal_and_wait(&mut self, signal: i32, within: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: kill only sends a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.name, self.log_text());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// IPv4 loopback, where the helpers listen unless told otherwise.
pub const V4: &str = "127.0.0.1";
/// IPv6 loopback.
pub const V6: &str = "::1";

/// Wait until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16) {
    wait_for(V4, port);
}

/// Wait until something accepts TCP connections on `host`:`port`.
pub fn wait_for(host: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect((host, port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on {host} port {port} after 10 s");
}

pub fn ours(binary: &str) -> String {
    match binary {
        "ssserver" => env!("CARGO_BIN_EXE_ssserver").to_string(),
        "sslocal" => env!("CARGO_BIN_EXE_sslocal").to_string(),
        other => panic!("unknown binary {other}"),
    }
}

/// Which implementation plays a part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    Ours,
    Libev,
}

/// Our ssserver on 127.0.0.1:`port`, one worker, no forbidden addresses, with
/// `extra` flags (`-t 3`, `-u`, `-v`).
pub fn our_server(name: &str, method: &str, password: &str, port: u16, extra: &[&str]) -> Proc {
    our_server_on(V4, name, method, password, port, extra)
}

/// [`our_server`] on `host` ([`V4`] or [`V6`]).
pub fn our_server_on(host: &str, name: &str, method: &str, password: &str, port: u16, extra: &[&str]) -> Proc {
    let extra = [&["--forbidden-ip", "", "--workers", "1"], extra].concat();
    let program = ours("ssserver");
    spawn_server(
        &format!("{name}-ssserver"),
        &program,
        host,
        method,
        password,
        port,
        &extra,
    )
}

/// `program`, a server that takes shadowsocks-libev's flags, on `host`:`port`, with
/// `extra` flags; returns once it listens.
fn spawn_server(
    name: &str,
    program: &str,
    host: &str,
    method: &str,
    password: &str,
    port: u16,
    extra: &[&str],
) -> Proc {
    let port_text = port.to_string();
    let mut args = vec!["-s", host, "-p", &port_text, "-k", password, "-m", method];
    args.extend_from_slice(extra);
    let p = Proc::spawn(name, program, &args);
    wait_for(host, port);
    p
}

/// Our sslocal on 127.0.0.1:`local_port` relaying to `server_port`, one worker,
/// with `extra` flags.
pub fn our_local(name: &str, method: &str, password: &str, server_port: u16, local_port: u16, extra: &[&str]) -> Proc {
    our_local_on(V4, name, method, password, server_port, local_port, extra)
}

/// [`our_local`] with both the server and the local on `host` ([`V4`] or [`V6`]).
pub fn our_local_on(
    host: &str,
    name: &str,
    method: &str,
    password: &str,
    server_port: u16,
    local_port: u16,
    extra: &[&str],
) -> Proc {
    let extra = [&["--workers", "1"], extra].concat();
    let program = ours("sslocal");
    let ports = (server_port, local_port);
    spawn_local(
        &format!("{name}-sslocal"),
        &program,
        host,
        method,
        password,
        ports,
        &extra,
    )
}

/// `program`, a local that takes shadowsocks-libev's flags, on `host`:`local_port`
/// relaying to `server_port` on `host`, with `extra` flags; returns once it listens.
fn spawn_local(
    name: &str,
    program: &str,
    host: &str,
    method: &str,
    password: &str,
    (server_port, local_port): (u16, u16),
    extra: &[&str],
) -> Proc {
    let (sp, lp) = (server_port.to_string(), local_port.to_string());
    let mut args = vec![
        "-s", host, "-p", &sp, "-k", password, "-m", method, "-b", host, "-l", &lp,
    ];
    args.extend_from_slice(extra);
    let p = Proc::spawn(name, program, &args);
    wait_for(host, local_port);
    p
}

/// Start a server of `which` on `port`.
pub fn server(which: Impl, method: &str, password: &str, port: u16, udp: bool) -> Proc {
    let udp_flag: &[&str] = if udp { &["-u"] } else { &[] };
    match which {
        Impl::Ours => our_server("ours", method, password, port, &[udp_flag, &["-v"]].concat()),
        Impl::Libev => spawn_server("libev-ss-server", "ss-server", V4, method, password, port, udp_flag),
    }
}

/// Start a local of `which` listening for SOCKS5 on `local_port`, relaying to `server_port`.
pub fn local(which: Impl, method: &str, password: &str, server_port: u16, local_port: u16, udp: bool) -> Proc {
    let udp_flag: &[&str] = if udp { &["-u"] } else { &[] };
    match which {
        Impl::Ours => our_local(
            "ours",
            method,
            password,
            server_port,
            local_port,
            &[udp_flag, &["-v"]].concat(),
        ),
        Impl::Libev => spawn_local(
            "libev-ss-local",
            "ss-local",
            V4,
            method,
            password,
            (server_port, local_port),
            udp_flag,
        ),
    }
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn sha256(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// A tiny HTTP/1.0 server on loopback: `GET /small` and `GET /blob` (1 MiB).
pub struct HttpServer {
    pub port: u16,
    pub blob: Arc<Vec<u8>>,
    pub small: Arc<Vec<u8>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    pub fn start() -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let blob = Arc::new(random_bytes(1 << 20, 0x5eed));
        let small = Arc::new(b"<html><body>hello through the proxy</body></html>\n".to_vec());
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s, st) = (Arc::clone(&blob), Arc::clone(&small), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (b, s) = (Arc::clone(&b), Arc::clone(&s));
                        std::thread::spawn(move || serve_http(conn, &b, &s));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
                    Err(_) => break,
                }
            }
        });
        HttpServer {
            port,
            blob,
            small,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_http(conn: TcpStream, blob: &[u8], small: &[u8]) {
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    let body = if request.starts_with("GET /blob") { blob } else { small };
    let mut conn = conn;
    let head = format!(
        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes()).and_then(|_| conn.write_all(body));
}

/// Fetch a URL with curl through a SOCKS5 proxy (names resolved by the proxy).
pub fn curl_socks(socks_port: u16, url: &str) -> Vec<u8> {
    let out = Command::new("curl")
        .args([
            "-s",
            "--fail",
            "--max-time",
            "30",
            "--socks5-hostname",
            &format!("127.0.0.1:{socks_port}"),
            url,
        ])
        .output()
        .expect("curl (run scripts/setup.sh)");
    assert!(
        out.status.success(),
        "curl {url} via socks port {socks_port}: {:?}",
        out.status
    );
    out.stdout
}

/// A UDP echo server on loopback, in a thread, for a bounded time.
pub struct UdpEcho {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    pub fn start() -> UdpEcho {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !st.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], from);
                }
            }
        });
        UdpEcho {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A SOCKS5 client handshake on a fresh connection; returns the stream and the
/// bound address of the reply.
pub fn socks_request(socks_port: u16, command: SocksCommand, target: &Address) -> io::Result<(TcpStream, Address)> {
    let mut s = TcpStream::connect(("127.0.0.1", socks_port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut out = Vec::new();
    socks5::write_greeting(&[socks5::METHOD_NO_AUTH], &mut out);
    socks5::write_request(command, target, &mut out);
    s.write_all(&out)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    // Method selection (2 bytes), then the reply.
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "socks server closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() < 2 {
            continue;
        }
        if let Some((reply, _)) = socks5::parse_reply(&buf[2..]).map_err(|e| io::Error::other(e.to_string()))? {
            if reply.reply != socks5::Reply::Succeeded {
                return Err(io::Error::other(format!("socks reply {}", reply.reply)));
            }
            return Ok((s, reply.bind));
        }
    }
}

/// Send `datagrams` to the echo server through SOCKS5 UDP ASSOCIATE; return
/// the payloads that came back (bounded wait).
pub fn udp_echo_via_socks(socks_port: u16, echo: SocketAddr, datagrams: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let (control, bind) = socks_request(socks_port, SocksCommand::UdpAssociate, &Address::from(echo)).unwrap();
    let relay = bind.socket_addr().expect("UDP relay address");
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    for d in datagrams {
        // Retry a lost datagram a few times (UDP): the first one may race the
        // association's creation on a busy machine.
        for _ in 0..5 {
            socket
                .send_to(&socks5::build_udp_packet(&Address::from(echo), d), relay)
                .unwrap();
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                let packet = socks5::parse_udp_packet(&buf[..n]).expect("a SOCKS5 UDP reply");
                assert_eq!(
                    packet.address,
                    Address::from(echo),
                    "reply names the echo server as its source"
                );
                got.push(packet.payload.to_vec());
                break;
            }
        }
    }
    drop(control);
    got
}
