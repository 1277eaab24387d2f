//! Issue 12, TCP and start-up: reflection of our own streams, what a probe learns from close
//! timing, forbidden destinations, a shared port, an open sslocal, and secrets.
//!
//! Clients are built from the crate's own crypto; destinations are small loopback listeners
//! in this file. Everything talks to 127.0.0.1 only, every wait is bounded, and every process
//! is killed when its `Proc` drops.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use ssproxy::crypto::{
    Decryptor, Encryptor, Error as CryptoError, Key, Method, RequestDecryptor, RequestEncryptor, ResponseDecryptor,
};
use ssproxy::protocol::Address;
use ssproxy::protocol::socks5::Command as SocksCommand;

const SIP022_METHOD: &str = "2022-blake3-aes-256-gcm";
const SIP022_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

// =============================================================================================
// Destinations
// =============================================================================================

/// A loopback listener that counts connections and keeps every byte it receives: the
/// destination an attacker wants to reach through the server.
struct Sink {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, received, stop) = (Arc::default(), Arc::default(), Arc::default());
        let (count, bytes, st): (Arc<AtomicUsize>, Arc<Mutex<Vec<u8>>>, Arc<AtomicBool>) =
            (Arc::clone(&accepted), Arc::clone(&received), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok((conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let bytes = Arc::clone(&bytes);
                std::thread::spawn(move || {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = (&conn).read(&mut buf) {
                        bytes.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
        Sink {
            addr,
            accepted,
            received,
            stop,
            thread: Some(thread),
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn received(&self) -> Vec<u8> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A destination under the attacker's control: reads the request, answers `reply`, closes.
fn replying_destination(reply: Vec<u8>) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else { return };
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        let _ = conn.read(&mut buf);
        let _ = conn.write_all(&reply);
    });
    (addr, thread)
}

/// Reads until `s` closes or `limit` passes: the bytes, and how it closed (`Ok(())` for a
/// FIN, the error for a reset) with when, counted from `since`.
fn read_until_close(s: &mut TcpStream, since: Instant, limit: Duration) -> (Vec<u8>, Option<(Duration, bool)>) {
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while since.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return (got, Some((since.elapsed(), false))),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (got, Some((since.elapsed(), e.kind() == io::ErrorKind::ConnectionReset))),
        }
    }
    (got, None)
}

/// Sends `bytes` on a new connection to `server` and waits a while: what came back.
fn send_as_new_client(server: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(server).unwrap();
    s.write_all(bytes).unwrap();
    read_until_close(&mut s, Instant::now(), Duration::from_millis(1500)).0
}

fn local_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

// =============================================================================================
// Reflection (issue item 1, TCP)
// =============================================================================================

/// What the attacker's destination answers: a request for the sink, then data for it.
fn forged_request_for(sink: &Sink) -> Vec<u8> {
    let mut reply = Address::from(sink.addr).to_bytes();
    reply.extend_from_slice(b"FORGED REQUEST DATA");
    reply
}

/// The server→client stream of one genuine SIP004 connection to a destination that answers
/// with `reply`, as an on-path observer captures it; checked to be `reply` encrypted.
fn capture_sip004_response(server: SocketAddr, key: &Key, reply: &[u8]) -> Vec<u8> {
    let (dest, dest_thread) = replying_destination(reply.to_vec());
    let mut request = Address::from(dest).to_bytes();
    request.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
    let mut wire = Vec::new();
    Encryptor::new(key).unwrap().encrypt(&request, &mut wire);
    let mut s = TcpStream::connect(server).unwrap();
    s.write_all(&wire).unwrap();
    let (captured, closed) = read_until_close(&mut s, Instant::now(), Duration::from_secs(5));
    assert!(closed.is_some(), "the server did not end the response stream");
    dest_thread.join().unwrap();
    let mut plain = Vec::new();
    Decryptor::new(key).unwrap().feed(&captured, &mut plain).unwrap();
    assert_eq!(plain, reply, "the capture is the destination's reply, encrypted");
    captured
}

/// Issue 12 item 1: a captured server→client SIP004 stream, sent back to the server as a new
/// connection, decrypts as a request (the server's response salt and key are the same kind as
/// a client's). Unless the server recorded its own salt, it connects to whatever address the
/// destination's reply began with and delivers the rest: blind request forgery, and certain
/// identification of the server. Every SIP004 method.
#[test]
fn sip004_server_response_reflected_as_a_request_is_refused() {
    for method in AEAD_METHODS {
        let port = free_port();
        let _server = our_server(&format!("reflect-{method}"), method, "reflection", port, &["-t", "5"]);
        let key = Key::new(method.parse::<Method>().unwrap(), "reflection").unwrap();
        let sink = Sink::start();
        let reply = forged_request_for(&sink);
        let captured = capture_sip004_response(local_addr(port), &key, &reply);
        // Without the server's own record, these bytes are a valid request for the sink.
        let mut as_request = Vec::new();
        Decryptor::new(&key).unwrap().feed(&captured, &mut as_request).unwrap();
        assert_eq!(as_request, reply);

        let back = send_as_new_client(local_addr(port), &captured);
        assert!(
            back.is_empty(),
            "{method}: the reflection got {} bytes back",
            back.len()
        );
        assert_eq!(
            (sink.accepted(), sink.received()),
            (0, Vec::new()),
            "{method}: the reflected response reached the address its plaintext began with"
        );
    }
}

/// Issue 12 item 1, confirmed unaffected: a SIP022 response header differs from a request's
/// (type 1, not 0, and it carries the request salt), so a reflected SIP022 response never
/// authenticates as a request.
#[test]
fn sip022_server_response_reflected_as_a_request_is_refused() {
    let port = free_port();
    let _server = our_server("reflect-2022", SIP022_METHOD, SIP022_KEY, port, &["-t", "5"]);
    let key = Key::new(Method::Blake3Aes256Gcm, SIP022_KEY).unwrap();
    let sink = Sink::start();
    let reply = forged_request_for(&sink);
    let (dest, dest_thread) = replying_destination(reply.clone());
    let mut enc = RequestEncryptor::new(&key, &Address::from(dest).to_bytes()).unwrap();
    let mut wire = Vec::new();
    enc.encrypt(b"GET / HTTP/1.0\r\n\r\n", &mut wire).unwrap();
    let mut s = TcpStream::connect(local_addr(port)).unwrap();
    s.write_all(&wire).unwrap();
    let (captured, _) = read_until_close(&mut s, Instant::now(), Duration::from_secs(5));
    dest_thread.join().unwrap();
    let mut plain = Vec::new();
    ResponseDecryptor::new(&key, enc.salt())
        .unwrap()
        .feed(&captured, &mut plain)
        .unwrap();
    assert_eq!(plain, reply, "the capture is the destination's reply, encrypted");
    // The response's fixed header is longer than a request's (it echoes the request salt), so
    // its first AEAD block does not even line up with a request's: it fails authentication.
    assert_eq!(
        RequestDecryptor::new(&key).unwrap().feed(&captured, &mut Vec::new()),
        Err(CryptoError::Authentication),
        "a SIP022 response must not parse as a request"
    );

    let back = send_as_new_client(local_addr(port), &captured);
    assert!(back.is_empty(), "the reflection got {} bytes back", back.len());
    assert_eq!((sink.accepted(), sink.received()), (0, Vec::new()));
}

/// Issue 12 item 1, the local's side: sslocal's request stream, captured and played back to
/// it as the server's response on another connection, would decrypt (same key, same kind of
/// salt) and hand the application its own request as the answer, unless the local recorded
/// its request salt and checks the response's.
#[test]
fn sslocal_request_reflected_as_a_response_is_refused() {
    const SECRET: &[u8] = b"SECRET REQUEST BODY";
    for method in AEAD_METHODS {
        let m: Method = method.parse().unwrap();
        // The "server" is this test: it records the first stream and replays it on the second.
        let fake_server = TcpListener::bind("127.0.0.1:0").unwrap();
        let local_port = free_port();
        let server_port = fake_server.local_addr().unwrap().port();
        let _local = our_local(&format!("reflect-{method}"), method, "pw", server_port, local_port, &[]);
        let target = Address::from(SocketAddr::from(([192, 0, 2, 1], 80)));

        let (mut first, _) = socks_request(local_port, SocksCommand::Connect, &target).unwrap();
        first.write_all(SECRET).unwrap();
        let (mut upstream, _) = fake_server.accept().unwrap();
        // Salt, then the address chunk and the data chunk (length and payload, each tagged).
        let chunk = |len: usize| 2 + 16 + len + 16;
        let mut recorded = vec![0u8; m.salt_len() + chunk(target.to_bytes().len()) + chunk(SECRET.len())];
        upstream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        upstream.read_exact(&mut recorded).unwrap();
        drop((first, upstream));

        let (mut second, _) = socks_request(local_port, SocksCommand::Connect, &target).unwrap();
        let (mut upstream, _) = fake_server.accept().unwrap();
        upstream.write_all(&recorded).unwrap();
        let (got, _) = read_until_close(&mut second, Instant::now(), Duration::from_millis(1500));
        assert!(
            !got.windows(SECRET.len()).any(|w| w == SECRET),
            "{method}: the local accepted its own request as the server's response ({} bytes)",
            got.len()
        );
    }
}

// =============================================================================================
// Probe timing (issue item 3)
// =============================================================================================

/// When and how the server closes a connection that gets `first` at once and then, after
/// `delay`, `late`: counted from the connect, FIN or reset.
fn close_after(server: SocketAddr, first: Vec<u8>, late: Option<(Duration, Vec<u8>)>) -> JoinHandle<(Duration, bool)> {
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(server).unwrap();
        let opened = Instant::now();
        s.write_all(&first).unwrap();
        if let Some((delay, late)) = late {
            std::thread::sleep(delay);
            s.write_all(&late).unwrap();
        }
        let (got, closed) = read_until_close(&mut s, opened, Duration::from_secs(8));
        assert!(got.is_empty(), "a probe got {} bytes back", got.len());
        closed.expect("the server never closed the probe")
    })
}

/// Issue 12 item 3: a server that restarts the deadline when authentication fails closes
/// `bytes_to_fail - 1` bytes one timeout after accept, but the same bytes plus one late byte
/// one timeout after that byte: comparing the two tells how many bytes the check needs, which
/// names the protocol and the salt size. All probes must close alike: same time from accept,
/// same way.
fn probe_close_time_case(name: &str, method: &str, password: &str, bytes_to_fail: usize) {
    let timeout = Duration::from_secs(2);
    let port = free_port();
    let _server = our_server(name, method, password, port, &["-t", "2"]);
    let server = local_addr(port);
    let junk = random_bytes(bytes_to_fail + 100, bytes_to_fail as u64);
    let short = junk[..bytes_to_fail - 1].to_vec();
    let late_byte = vec![junk[bytes_to_fail - 1]];
    let cases = [
        ("one byte short, nothing more", close_after(server, short.clone(), None)),
        (
            "one byte short, the last one 1 s late",
            close_after(server, short.clone(), Some((Duration::from_secs(1), late_byte.clone()))),
        ),
        (
            "one byte short, the last one 1.6 s late",
            close_after(server, short, Some((Duration::from_millis(1600), late_byte))),
        ),
        ("enough to fail at once", close_after(server, junk.clone(), None)),
    ];
    let results: Vec<(&str, Duration, bool)> = cases
        .into_iter()
        .map(|(what, t)| {
            let (when, reset) = t.join().unwrap();
            eprintln!(
                "{method}: {what}: closed after {when:?} by {}",
                if reset { "reset" } else { "FIN" }
            );
            (what, when, reset)
        })
        .collect();
    let (_, first_when, first_reset) = results[0];
    for &(what, when, reset) in &results {
        assert!(
            when + Duration::from_millis(250) >= timeout && when <= timeout + Duration::from_millis(600),
            "{method}: {what}: closed after {when:?}, not at the timeout {timeout:?} from accept"
        );
        assert!(
            when.abs_diff(first_when) <= Duration::from_millis(400),
            "{method}: {what}: closed after {when:?}, the first probe after {first_when:?}: \
             the close time tells when authentication failed"
        );
        assert_eq!(
            reset, first_reset,
            "{method}: {what}: closed another way than the first probe"
        );
    }
}

#[test]
fn probe_close_time_does_not_tell_when_authentication_failed_sip004() {
    // aes-256-gcm: a 32-byte salt and an 18-byte length chunk.
    probe_close_time_case("timing004", "aes-256-gcm", "timing", 32 + 18);
}

#[test]
fn probe_close_time_does_not_tell_when_authentication_failed_sip022() {
    // 2022-blake3-aes-128-gcm: a 16-byte salt and the 11-byte fixed header with its tag.
    probe_close_time_case(
        "timing022",
        "2022-blake3-aes-128-gcm",
        "AAECAwQFBgcICQoLDA0ODw==",
        16 + 11 + 16,
    );
}

// =============================================================================================
// Forbidden destinations
// =============================================================================================

/// A valid SIP004 request for `target` with some data.
fn sip004_request(key: &Key, target: SocketAddr) -> Vec<u8> {
    let mut plain = Address::from(target).to_bytes();
    plain.extend_from_slice(b"hello");
    let mut wire = Vec::new();
    Encryptor::new(key).unwrap().encrypt(&plain, &mut wire);
    wire
}

/// An ssserver with the default `forbidden_ip` (the common helpers allow everything).
fn default_server(name: &str, method: &str, password: &str, port: u16) -> Proc {
    let p = port.to_string();
    let server = Proc::spawn(
        name,
        &ours("ssserver"),
        &["-s", V4, "-p", &p, "-k", password, "-m", method, "--workers", "1"],
    );
    wait_for_port(port);
    server
}

/// Waits (bounded) for `needle` in `proc`'s log.
fn log_shows(proc: &Proc, needle: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if proc.log_text().contains(needle) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A refused destination is logged once, not as a warning, with the `forbidden_ip` rule it
/// matched and how to allow it: an operator whose private destination stopped working with
/// the new default must find out why from one line.
#[test]
fn forbidden_destination_refusal_names_the_rule_and_how_to_allow_it() {
    let port = free_port();
    let server = default_server("forbidden-rule", "aes-128-gcm", "pw", port);
    let sink = Sink::start();
    let key = Key::new(Method::Aes128Gcm, "pw").unwrap();
    let back = send_as_new_client(local_addr(port), &sip004_request(&key, sink.addr));
    assert!(back.is_empty());
    assert_eq!(sink.accepted(), 0, "a loopback destination was reached");
    let wanted = format!("refusing to relay to {}: it is in 127.0.0.0/8", sink.addr);
    assert!(
        log_shows(&server, &wanted, Duration::from_secs(2)),
        "{}",
        server.log_text()
    );
    let log = server.log_text();
    let line = log.lines().find(|l| l.contains(&wanted)).unwrap();
    assert!(line.contains("INFO") && line.contains("forbidden_ip"), "{line}");
}

/// sslocal's `--tunnel` target given as a name is resolved by the server, and the server's
/// `forbidden_ip` check applies to what the name resolves to: `localhost` is refused by
/// default, and reached once the operator allows loopback.
#[test]
fn tunnel_to_a_name_resolving_to_a_forbidden_address_is_refused() {
    let sink = Sink::start();
    let tunnel = format!("localhost:{}", sink.addr.port());
    let run = |server_port: u16| {
        let local_port = free_port();
        let (sp, lp) = (server_port.to_string(), local_port.to_string());
        let _local = Proc::spawn(
            "tunnel-name-sslocal",
            &ours("sslocal"),
            &[
                "-s",
                V4,
                "-p",
                &sp,
                "-k",
                "pw",
                "-m",
                "aes-128-gcm",
                "-l",
                &lp,
                "--tunnel",
                &tunnel,
                "--workers",
                "1",
            ],
        );
        wait_for_port(local_port);
        let mut s = TcpStream::connect(local_addr(local_port)).unwrap();
        s.write_all(b"through the tunnel").unwrap();
        read_until_close(&mut s, Instant::now(), Duration::from_millis(1500));
    };
    let port = free_port();
    let server = default_server("tunnel-name-default", "aes-128-gcm", "pw", port);
    run(port);
    assert_eq!(sink.accepted(), 0, "the tunnel's name reached a loopback destination");
    let wanted = format!("refusing to relay to 127.0.0.1:{}", sink.addr.port());
    assert!(
        log_shows(&server, &wanted, Duration::from_secs(2)),
        "{}",
        server.log_text()
    );
    drop(server);

    // The same tunnel works where the server allows loopback: the refusal above was the check.
    let port = free_port();
    let _server = our_server("tunnel-name-allowed", "aes-128-gcm", "pw", port, &[]);
    run(port);
    assert_eq!(sink.accepted(), 1);
    assert_eq!(sink.received(), b"through the tunnel");
}

// =============================================================================================
// Start-up checks
// =============================================================================================

/// Waits (bounded) for `proc` to exit on its own; its status.
fn exits_within(proc: &mut Proc, within: Duration) -> Option<std::process::ExitStatus> {
    // Signal 0 checks the process without disturbing it.
    proc.signal_and_wait(0, within)
}

/// sslocal's flags for SOCKS5 on `bind`:`port` (its server, never contacted here, on 8388).
fn sslocal_args<'a>(bind: &'a str, port: &'a str, workers: &'a str) -> Vec<&'a str> {
    let server = ["-s", V4, "-p", "8388", "-k", "pw", "-m", "aes-128-gcm"];
    [&server[..], &["-b", bind, "-l", port, "--workers", workers]].concat()
}

/// Starts `program` with `args` and waits (bounded) until it says it listens.
fn spawn_listening(name: &str, program: &str, args: &[&str]) -> Proc {
    let proc = Proc::spawn(name, &ours(program), args);
    let started = log_shows(&proc, "listening on", Duration::from_secs(10));
    assert!(started, "{name} did not start: {}", proc.log_text());
    proc
}

/// Two servers on one port would share it silently through `SO_REUSEPORT`, and the kernel
/// would spread clients over both; the second must exit with a clear error instead. TCP, UDP
/// only, and sslocal.
#[test]
fn second_program_on_an_occupied_port_exits_instead_of_sharing_it() {
    let cases: [(&str, &[&str]); 3] = [("ssserver", &[]), ("ssserver", &["-U"]), ("sslocal", &[])];
    for (program, extra) in cases {
        let port = free_port();
        let p = port.to_string();
        let mut args = match program {
            "sslocal" => sslocal_args(V4, &p, "2"),
            _ => vec!["-s", V4, "-p", &p, "-k", "pw", "-m", "aes-128-gcm", "--workers", "2"],
        };
        args.extend_from_slice(extra);
        let first = spawn_listening(&format!("first-{program}"), program, &args);
        let mut second = Proc::spawn(&format!("second-{program}"), &ours(program), &args);
        let status = exits_within(&mut second, Duration::from_secs(5));
        let log = second.log_text();
        assert!(
            status.is_some_and(|s| !s.success()),
            "{program} {extra:?}: a second instance on port {port} kept running ({status:?}): {log}"
        );
        let proto = if extra.contains(&"-U") { "udp" } else { "tcp" };
        assert!(
            log.contains(&format!("{proto} port 127.0.0.1:{port} is already in use")),
            "{program} {extra:?}: {log}"
        );
        assert!(first.log_text().contains("listening on"));
    }
}

/// sslocal's SOCKS5 has no authentication: bound beyond loopback it is an open proxy into the
/// server, which deserves a warning at start (and only then).
#[test]
fn sslocal_on_a_non_loopback_address_warns_at_start() {
    for (bind, warns) in [("0.0.0.0", true), (V4, false)] {
        let p = free_port().to_string();
        let local = spawn_listening("open-sslocal", "sslocal", &sslocal_args(bind, &p, "1"));
        let log = local.log_text();
        assert_eq!(
            log.contains("not a loopback address") && log.contains("WARN"),
            warns,
            "bound to {bind}: {log}"
        );
    }
}

// =============================================================================================
// Secrets
// =============================================================================================

/// A config file that holds the password hands the server to anyone who can read it: warn
/// when its mode lets other users read it, and not when it is private.
#[test]
fn config_file_with_a_password_readable_by_others_warns() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("ssproxy-security-tcp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (mode, warns) in [(0o644, true), (0o640, true), (0o600, false)] {
        let port = free_port();
        let path = dir.join(format!("server-{mode:o}.json"));
        let json = format!(
            r#"{{"server": "127.0.0.1", "server_port": {port}, "password": "file-secret", "method": "aes-128-gcm", "workers": 1}}"#
        );
        std::fs::write(&path, json).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let server = spawn_listening("config-mode", "ssserver", &["-c", path.to_str().unwrap()]);
        let log = server.log_text();
        assert_eq!(log.contains("readable by other users"), warns, "mode {mode:o}: {log}");
        assert!(!log.contains("file-secret"), "the password reached the log: {log}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A SIP022 key with a typo is still most of the key: the error must say what is wrong and
/// where, without quoting the key or the offending character (base64's own message quotes the
/// character's byte value).
#[test]
fn invalid_base64_key_is_reported_without_its_characters() {
    let bad = "AAECAwQFBgcI$QoLDA0ODw=="; // '$' is byte 36, at offset 12
    let out = std::process::Command::new(ours("ssserver"))
        .args(["-s", V4, "-p", "1", "-m", "2022-blake3-aes-128-gcm", "-k", bad])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("not valid base64") && text.contains("offset 12"),
        "{text}"
    );
    for leak in ["$", "36", "AAEC", "QoLDA"] {
        assert!(!text.contains(leak), "{leak:?} leaked: {text}");
    }
}
