//! Hostile input and faults: probes, replays, slow and silent clients, malformed SOCKS5,
//! resets, UDP floods, 10 000 concurrent connections, and destinations that refuse, reset or
//! never answer.
//!
//! Every case runs next to a [`Background`] transfer: 1 MiB fetched over and over through our
//! sslocal → ssserver pair, each copy checked by SHA-256, which must keep succeeding while the
//! hostile client does its worst on another connection. Probes that fail authentication must
//! learn nothing: no byte comes back, and the connection is not closed before the idle
//! timeout (SIP004/SIP022 advice against active probing).
//!
//! Hostile clients are built from the crate's own crypto (`Encryptor`, `RequestEncryptor`),
//! and, for what it refuses to produce (a length chunk over 0x3FFF), from ring directly with
//! the session subkey derived as SIP004 specifies. Everything talks to 127.0.0.1 only, and
//! every loop is bounded in count and time.

#![allow(unsafe_code)] // a test: it calls libc directly (fds, signals, limits)

mod common;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use socket2::{Domain, SockRef, Socket, Type};
use ssproxy::crypto::{
    self, Decryptor, Encryptor, Error as CryptoError, Key, Method, RequestEncryptor, ResponseDecryptor,
};
use ssproxy::protocol::Address;
use ssproxy::protocol::socks5::{self, Command as SocksCommand};

const METHOD: &str = "aes-256-gcm";
const PASSWORD: &str = "hostile-secret";
const SIP022_METHOD: &str = "2022-blake3-aes-256-gcm";
const SIP022_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

// =============================================================================================
// Processes and measurements
// =============================================================================================

/// Open descriptors of a process (entries of /proc/<pid>/fd).
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// UDP sockets among a process's descriptors (their inodes looked up in /proc/net/udp{,6}).
fn udp_socket_count(pid: u32) -> usize {
    let mut udp_inodes = std::collections::HashSet::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            if let Some(inode) = line.split_whitespace().nth(9) {
                udp_inodes.insert(format!("socket:[{inode}]"));
            }
        }
    }
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| {
        d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|link| udp_inodes.contains(&*link.to_string_lossy()))
            .count()
    })
}

/// A `kB` field of /proc/<pid>/status (VmRSS, VmHWM...).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The mappings holding most of a process's RSS (from /proc/<pid>/smaps), largest first:
/// "name: rss KiB of size KiB" (anonymous mappings are named by their size), to tell the
/// heap arenas apart from large single allocations such as the replay filters.
fn rss_breakdown(pid: u32, top: usize) -> Vec<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut maps: Vec<(u64, u64, String)> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            let (lo, hi) = first.split_once('-').unwrap();
            let size = (u64::from_str_radix(hi, 16).unwrap() - u64::from_str_radix(lo, 16).unwrap()) / 1024;
            let name = words.nth(4).unwrap_or("[anon]").to_string();
            maps.push((0, size, name));
        } else if first == "Rss:"
            && let Some(m) = maps.last_mut()
        {
            m.0 = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    maps.sort_by_key(|m| std::cmp::Reverse(m.0));
    maps.iter()
        .take(top)
        .map(|(rss, size, name)| format!("{name}: {rss} of {size} KiB"))
        .collect()
}

/// Waits (bounded) until `pid` has at most `fds` descriptors; the count reached.
fn wait_fds_at_most(pid: u32, fds: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let n = fd_count(pid);
        if n <= fds || Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Raise this process's soft RLIMIT_NOFILE to the hard limit; returns the hard limit.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    lim.rlim_max
}

// =============================================================================================
// Destinations
// =============================================================================================

/// A loopback HTTP-ish destination that counts the connections it accepts and answers each
/// with a small fixed response after reading the request head.
struct CountingTarget {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const TARGET_RESPONSE: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello";

impl CountingTarget {
    fn start() -> CountingTarget {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, st) = (Arc::clone(&accepted), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        count.fetch_add(1, Ordering::SeqCst);
                        std::thread::spawn(move || {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                            let mut reader = BufReader::new(&conn);
                            let mut line = String::new();
                            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                                if line == "\r\n" || line == "\n" {
                                    let _ = (&conn).write_all(TARGET_RESPONSE);
                                    break;
                                }
                                line.clear();
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        CountingTarget {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for CountingTarget {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Close `s` with SO_LINGER 0: the peer gets a RST instead of a FIN.
fn reset(s: TcpStream) {
    SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
}

// =============================================================================================
// The background transfer and the rig
// =============================================================================================

/// `GET /blob` through the SOCKS5 port; the body, checked against the server's blob.
fn fetch_blob(socks_port: u16, http: SocketAddr, expected: &str) -> io::Result<()> {
    let (mut s, _) = socks_request(socks_port, SocksCommand::Connect, &Address::from(http))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(b"GET /blob HTTP/1.0\r\n\r\n")?;
    let mut response = Vec::with_capacity((1 << 20) + 200);
    s.read_to_end(&mut response)?;
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| io::Error::other("no HTTP head"))?;
    let body = &response[head_end + 4..];
    if body.len() != 1 << 20 || sha256(body) != expected {
        return Err(io::Error::other(format!("blob corrupted: {} bytes", body.len())));
    }
    Ok(())
}

/// Fetches the 1 MiB blob over and over (at most 200 times, 60 s) until stopped.
struct Background {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<usize, String>>>,
}

impl Background {
    fn start(socks_port: u16, http: &HttpServer) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let st = Arc::clone(&stop);
        let addr = SocketAddr::from(([127, 0, 0, 1], http.port));
        let expected = sha256(&http.blob);
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut done = 0;
            while done < 200 && started.elapsed() < Duration::from_secs(60) {
                fetch_blob(socks_port, addr, &expected).map_err(|e| format!("transfer {done}: {e}"))?;
                done += 1;
                if st.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(30));
            }
            Ok(done)
        });
        Background {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops after the transfer under way; panics unless every transfer was intact.
    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let n = self
            .thread
            .take()
            .unwrap()
            .join()
            .expect("background thread")
            .unwrap_or_else(|e| panic!("background 1 MiB transfer failed: {e}"));
        assert!(n >= 1, "no background transfer completed");
        n
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// An HTTP server, our ssserver and our sslocal, with a background transfer running.
struct Rig {
    http: HttpServer,
    server: Proc,
    local: Proc,
    server_port: u16,
    local_port: u16,
    /// Descriptors of the server and the local once started, before any traffic.
    idle_fds: (usize, usize),
    background: Option<Background>,
}

impl Rig {
    fn new(name: &str, method: &str, password: &str, server_extra: &[&str], local_extra: &[&str]) -> Rig {
        let http = HttpServer::start();
        let (server_port, local_port) = (free_port(), free_port());
        let server = our_server(&format!("hostile-{name}"), method, password, server_port, server_extra);
        let local = our_local(
            &format!("hostile-{name}"),
            method,
            password,
            server_port,
            local_port,
            local_extra,
        );
        // wait_for_port's probe connections must be gone before counting.
        std::thread::sleep(Duration::from_millis(100));
        let idle_fds = (fd_count(server.pid()), fd_count(local.pid()));
        let background = Some(Background::start(local_port, &http));
        Rig {
            http,
            server,
            local,
            server_port,
            local_port,
            idle_fds,
            background,
        }
    }

    fn sip004(name: &str, timeout: &str) -> Rig {
        Rig::new(name, METHOD, PASSWORD, &["-t", timeout], &[])
    }

    fn server_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.server_port))
    }

    /// Stops the background transfer, checking it stayed intact; one more fetch must work.
    fn finish(&mut self) {
        let n = self.background.take().expect("background running").finish();
        let addr = SocketAddr::from(([127, 0, 0, 1], self.http.port));
        fetch_blob(self.local_port, addr, &sha256(&self.http.blob)).expect("a fetch after the attack");
        eprintln!("{} background transfers of 1 MiB intact", n + 1);
        let _ = (&self.server, &self.local);
    }
}

// =============================================================================================
// Hostile clients
// =============================================================================================

/// The first flight of a SIP004 client: salt, then `target` and `payload` encrypted.
fn sip004_request(key: &Key, target: &Address, payload: &[u8]) -> Vec<u8> {
    let mut enc = Encryptor::new(key).unwrap();
    let mut plain = target.to_bytes();
    plain.extend_from_slice(payload);
    let mut out = Vec::new();
    enc.encrypt(&plain, &mut out);
    out
}

fn sip004_key(password: &str) -> Key {
    Key::new(Method::Aes256Gcm, password).unwrap()
}

/// A SIP004 length chunk announcing `len` (may exceed 0x3FFF), as the first chunk of a stream
/// with `salt`: the session subkey is HKDF-SHA1(EVP_BytesToKey(password), salt, "ss-subkey")
/// and the nonce zero, sealed with ring's AES-256-GCM. The crate's encryptor refuses to make
/// such a chunk, so this does it by hand.
fn forged_length_chunk(password: &str, salt: &[u8; 32], len: u16) -> Vec<u8> {
    use ring::{aead, hkdf};
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let mut master = [0u8; 32];
    crypto::key::evp_bytes_to_key(password.as_bytes(), &mut master);
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA1_FOR_LEGACY_USE_ONLY, salt).extract(&master);
    let info = [&b"ss-subkey"[..]];
    let okm = prk.expand(&info, Len(32)).unwrap();
    let mut subkey = [0u8; 32];
    okm.fill(&mut subkey).unwrap();
    let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, &subkey).unwrap());
    let mut chunk = len.to_be_bytes().to_vec();
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key([0; 12]),
        aead::Aad::empty(),
        &mut chunk,
    )
    .unwrap();
    let mut out = salt.to_vec();
    out.extend_from_slice(&chunk);
    out
}

/// Reads until `s` closes (EOF or reset) or `limit` passes; what was received and when it
/// closed (measured from `since`).
fn wait_close(s: &mut TcpStream, since: Instant, limit: Duration) -> (Vec<u8>, Option<Duration>) {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while since.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return (got, Some(since.elapsed())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return (got, Some(since.elapsed())),
        }
    }
    (got, None)
}

/// The probe rule: nothing comes back, and the connection is closed at the idle timeout
/// (counted from the last byte sent, `since`), not before it and not much after.
fn assert_learns_nothing(what: &str, s: &mut TcpStream, since: Instant, timeout: Duration) {
    let (got, closed) = wait_close(s, since, timeout + Duration::from_secs(3));
    assert!(got.is_empty(), "{what}: the server sent {} bytes back", got.len());
    let closed = closed.unwrap_or_else(|| {
        panic!(
            "{what}: still open {:?} after the idle timeout",
            timeout + Duration::from_secs(3)
        )
    });
    assert!(
        closed + Duration::from_millis(250) >= timeout,
        "{what}: closed after {closed:?}, before the idle timeout {timeout:?}"
    );
    assert!(
        closed <= timeout + Duration::from_millis(1500),
        "{what}: closed only after {closed:?} (idle timeout {timeout:?})"
    );
    eprintln!("{what}: nothing sent back, closed after {closed:?} (idle timeout {timeout:?})");
}

/// Sends `bytes` on a fresh connection to the server and checks the probe rule; the target
/// must never be connected to.
fn probe(rig: &Rig, what: &str, bytes: &[u8], target: &CountingTarget, timeout: Duration) {
    let mut s = TcpStream::connect(rig.server_addr()).unwrap();
    s.write_all(bytes).unwrap();
    let sent = Instant::now();
    assert_learns_nothing(what, &mut s, sent, timeout);
    assert_eq!(target.accepted(), 0, "{what}: the server connected to the target");
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[test]
fn wrong_password_learns_nothing() {
    let mut rig = Rig::sip004("wrongpw", "3");
    let target = CountingTarget::start();
    let bytes = sip004_request(
        &sip004_key("not the password"),
        &Address::from(target.addr),
        b"GET / HTTP/1.0\r\n\r\n",
    );
    probe(&rig, "wrong password", &bytes, &target, PROBE_TIMEOUT);
    rig.finish();
}

#[test]
fn random_bytes_learn_nothing() {
    let mut rig = Rig::sip004("random", "3");
    let target = CountingTarget::start();
    // Shorter than salt + length chunk, exactly that, and much longer.
    let cases = [(20, 1u64), (32 + 18, 2), (600, 3)];
    let mut conns = Vec::new();
    for (len, seed) in cases {
        let mut s = TcpStream::connect(rig.server_addr()).unwrap();
        s.write_all(&random_bytes(len, seed)).unwrap();
        conns.push((len, s, Instant::now()));
    }
    for (len, mut s, sent) in conns {
        assert_learns_nothing(&format!("{len} random bytes"), &mut s, sent, PROBE_TIMEOUT);
    }
    assert_eq!(target.accepted(), 0);
    rig.finish();
}

#[test]
fn truncated_chunk_learns_nothing() {
    let mut rig = Rig::sip004("truncated", "3");
    let target = CountingTarget::start();
    let payload = vec![b'x'; 1000];
    let full = sip004_request(&sip004_key(PASSWORD), &Address::from(target.addr), &payload);
    // Salt, length chunk, and half of the payload chunk: the target address is in the part
    // that never comes, so nothing can happen but the idle timeout.
    let cut = 32 + 18 + (full.len() - 32 - 18) / 2;
    probe(&rig, "truncated chunk", &full[..cut], &target, PROBE_TIMEOUT);
    rig.finish();
}

#[test]
fn over_long_length_chunk_learns_nothing() {
    let mut rig = Rig::sip004("overlong", "3");
    let target = CountingTarget::start();
    let salt: [u8; 32] = random_bytes(32, 0x4000).try_into().unwrap();
    let mut bytes = forged_length_chunk(PASSWORD, &salt, 0x4000);
    // The forgery is genuine: our decryptor authenticates it and refuses it for its length
    // only; and the same construction with 0x3FFF is accepted.
    let key = sip004_key(PASSWORD);
    let mut dec = Decryptor::new(&key).unwrap();
    assert_eq!(
        dec.feed(&bytes, &mut Vec::new()),
        Err(CryptoError::ChunkTooLong(0x4000))
    );
    let mut dec = Decryptor::new(&key).unwrap();
    dec.feed(&forged_length_chunk(PASSWORD, &salt, 0x3FFF), &mut Vec::new())
        .unwrap();
    // Then a payload as big as announced (junk), which the server must not wait for.
    bytes.extend_from_slice(&random_bytes(0x4000 + 16, 9));
    probe(&rig, "length 0x4000", &bytes, &target, PROBE_TIMEOUT);
    rig.finish();
}

/// A recording forwarder: accepts one connection, connects to `to`, relays both ways and
/// keeps a copy of what the client sent.
struct Recorder {
    addr: SocketAddr,
    recorded: Arc<Mutex<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl Recorder {
    fn start(to: SocketAddr) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let rec = Arc::clone(&recorded);
        let thread = std::thread::spawn(move || {
            let Ok((client, _)) = listener.accept() else { return };
            let server = TcpStream::connect(to).unwrap();
            for s in [&client, &server] {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            }
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let down = std::thread::spawn(move || {
                let _ = io::copy(&mut &s2, &mut &c2);
                let _ = c2.shutdown(Shutdown::Write);
            });
            let mut buf = [0u8; 16384];
            loop {
                match (&client).read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        rec.lock().unwrap().extend_from_slice(&buf[..n]);
                        if (&server).write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = server.shutdown(Shutdown::Write);
            let _ = down.join();
        });
        Recorder {
            addr,
            recorded,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<u8> {
        let _ = self.thread.take().unwrap().join();
        std::mem::take(&mut *self.recorded.lock().unwrap())
    }
}

/// A client's first flight replayed verbatim: the server must not connect to the target a
/// second time (and, being a replay, it learns nothing either).
fn replay_case(name: &str, method: &str, password: &str) {
    let mut rig = Rig::new(name, method, password, &["-t", "3"], &[]);
    let target = CountingTarget::start();
    // A second local, relaying through the recorder.
    let recorder = Recorder::start(rig.server_addr());
    let local_port = free_port();
    let _local = our_local(
        &format!("{name}-rec"),
        method,
        password,
        recorder.addr.port(),
        local_port,
        &[],
    );
    {
        let (mut s, _) = socks_request(local_port, SocksCommand::Connect, &Address::from(target.addr)).unwrap();
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut response = Vec::new();
        s.read_to_end(&mut response).unwrap();
        assert_eq!(response, TARGET_RESPONSE, "the genuine request works");
    }
    let recorded = recorder.finish();
    assert_eq!(target.accepted(), 1);
    assert!(recorded.len() > 32, "recorded the client's bytes");

    let mut s = TcpStream::connect(rig.server_addr()).unwrap();
    s.write_all(&recorded).unwrap();
    let sent = Instant::now();
    let (got, _) = wait_close(&mut s, sent, Duration::from_millis(1500));
    assert!(got.is_empty(), "{method}: the replay got {} bytes back", got.len());
    assert_eq!(
        target.accepted(),
        1,
        "{method}: the replayed request reached the target"
    );
    rig.finish();
}

#[test]
fn replayed_salt_is_refused_sip004() {
    replay_case("replay004", METHOD, PASSWORD);
}

#[test]
fn replayed_salt_is_refused_sip022() {
    replay_case("replay022", SIP022_METHOD, SIP022_KEY);
}

fn two_minutes_ago() -> u64 {
    crypto::unix_time() - 120
}

fn two_minutes_ahead() -> u64 {
    crypto::unix_time() + 120
}

#[test]
fn sip022_timestamp_outside_the_window_learns_nothing() {
    let mut rig = Rig::new("timestamp", SIP022_METHOD, SIP022_KEY, &["-t", "3"], &[]);
    let target = CountingTarget::start();
    let key = Key::new(Method::Blake3Aes256Gcm, SIP022_KEY).unwrap();
    let target_bytes = Address::from(target.addr).to_bytes();

    // The construction works with the right clock.
    {
        let mut enc = RequestEncryptor::new(&key, &target_bytes).unwrap();
        let mut dec = ResponseDecryptor::new(&key, enc.salt()).unwrap();
        let mut wire = Vec::new();
        enc.encrypt(b"GET / HTTP/1.0\r\n\r\n", &mut wire).unwrap();
        let mut s = TcpStream::connect(rig.server_addr()).unwrap();
        s.write_all(&wire).unwrap();
        let (got, _) = wait_close(&mut s, Instant::now(), Duration::from_secs(5));
        let mut plain = Vec::new();
        dec.feed(&got, &mut plain).unwrap();
        assert_eq!(plain, TARGET_RESPONSE);
        assert_eq!(target.accepted(), 1);
    }

    let mut conns = Vec::new();
    for (what, clock) in [
        ("timestamp 120 s old", two_minutes_ago as fn() -> u64),
        ("timestamp 120 s ahead", two_minutes_ahead as fn() -> u64),
    ] {
        let mut enc = RequestEncryptor::new(&key, &target_bytes).unwrap();
        enc.set_clock(clock);
        let mut wire = Vec::new();
        enc.encrypt(b"GET / HTTP/1.0\r\n\r\n", &mut wire).unwrap();
        let mut s = TcpStream::connect(rig.server_addr()).unwrap();
        s.write_all(&wire).unwrap();
        conns.push((what, s, Instant::now()));
    }
    for (what, mut s, sent) in conns {
        assert_learns_nothing(what, &mut s, sent, PROBE_TIMEOUT);
    }
    assert_eq!(
        target.accepted(),
        1,
        "a request outside the time window reached the target"
    );
    rig.finish();
}

// =============================================================================================
// Slow and silent clients
// =============================================================================================

#[test]
fn slowloris_is_closed_at_the_idle_timeout() {
    let timeout = Duration::from_secs(2);
    let mut rig = Rig::sip004("slowloris", "2");
    let target = CountingTarget::start();
    // A genuine request, one byte per second: it never completes its header in time.
    let bytes = sip004_request(
        &sip004_key(PASSWORD),
        &Address::from(target.addr),
        b"GET / HTTP/1.0\r\n\r\n",
    );
    let mut s = TcpStream::connect(rig.server_addr()).unwrap();
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(1000))).unwrap();
    let mut closed = None;
    let mut buf = [0u8; 64];
    // Bounded: at most timeout + 4 bytes/seconds.
    for &b in bytes.iter().take(timeout.as_secs() as usize + 4) {
        if s.write_all(&[b]).is_err() {
            closed = Some(start.elapsed());
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => {
                closed = Some(start.elapsed());
                break;
            }
            Ok(n) => panic!("slowloris got {n} bytes back"),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(_) => {
                closed = Some(start.elapsed());
                break;
            }
        }
    }
    let closed = closed.unwrap_or_else(|| {
        panic!(
            "a client sending one byte per second is still connected after {:?} (idle timeout {timeout:?}): \
             every byte re-arms the idle timer, so a header that never completes holds the connection forever",
            start.elapsed()
        )
    });
    eprintln!("slowloris closed after {closed:?}");
    assert!(
        closed <= timeout + Duration::from_secs(1),
        "closed only after {closed:?}"
    );
    assert_eq!(target.accepted(), 0);
    rig.finish();
}

#[test]
fn silent_client_is_closed_at_the_idle_timeout() {
    let timeout = Duration::from_secs(2);
    let mut rig = Rig::sip004("silent", "2");
    let mut s = TcpStream::connect(rig.server_addr()).unwrap();
    let opened = Instant::now();
    assert_learns_nothing("silent client", &mut s, opened, timeout);
    rig.finish();
}

// =============================================================================================
// Malformed SOCKS5 to sslocal
// =============================================================================================

/// A malformed SOCKS5 exchange: what, the bytes sent, the acceptable answers before the close.
type SocksCase = (&'static str, Vec<u8>, Vec<Vec<u8>>);

/// Sends `bytes` to the local's SOCKS5 port; what came back before it closed (bounded 3 s).
fn socks_exchange(port: u16, bytes: &[u8]) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(bytes).unwrap();
    let (got, closed) = wait_close(&mut s, Instant::now(), Duration::from_secs(3));
    (got, closed.is_some())
}

#[test]
fn malformed_socks5_is_refused_and_the_local_keeps_serving() {
    let mut rig = Rig::sip004("socks", "10");
    let mut greet = Vec::new();
    socks5::write_greeting(&[socks5::METHOD_NO_AUTH], &mut greet);
    let with_greeting = |rest: &[u8]| {
        let mut v = greet.clone();
        v.extend_from_slice(rest);
        v
    };
    // (what, bytes, acceptable answers before the close)
    let cases: Vec<SocksCase> = vec![
        ("SOCKS4 request", vec![4, 1, 0, 80, 127, 0, 0, 1, 0], vec![vec![]]),
        (
            "HTTP request",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            vec![vec![]],
        ),
        ("no methods", vec![5, 0], vec![vec![], vec![5, 0xff]]),
        ("only username/password", vec![5, 1, 2], vec![vec![5, 0xff]]),
        ("random bytes", random_bytes(300, 77), vec![vec![]]),
        (
            "unknown command",
            with_greeting(&[5, 9, 0, 1, 127, 0, 0, 1, 0, 80]),
            vec![vec![5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0]],
        ),
        (
            "unknown address type",
            with_greeting(&[5, 1, 0, 9, 127, 0, 0, 1, 0, 80]),
            vec![vec![5, 0, 5, 8, 0, 1, 0, 0, 0, 0, 0, 0]],
        ),
        (
            "empty domain",
            with_greeting(&[5, 1, 0, 3, 0, 0, 80]),
            vec![vec![5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0]],
        ),
        (
            "BIND",
            with_greeting(&[5, 2, 0, 1, 127, 0, 0, 1, 0, 80]),
            vec![vec![5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0]],
        ),
    ];
    for (what, bytes, answers) in &cases {
        let (got, closed) = socks_exchange(rig.local_port, bytes);
        assert!(closed, "{what}: the local did not close within 3 s");
        assert!(
            answers.contains(&got),
            "{what}: answered {got:?}, expected one of {answers:?}"
        );
    }
    // A greeting that never completes (255 methods announced, 3 sent) is an idle client.
    let mut s = TcpStream::connect(("127.0.0.1", rig.local_port)).unwrap();
    s.write_all(&[5, 255, 0, 1, 2]).unwrap();
    // The local still serves: a small page, then the background transfer's check.
    let small = curl_socks(rig.local_port, &format!("http://127.0.0.1:{}/small", rig.http.port));
    assert_eq!(small, *rig.http.small);
    drop(s);
    rig.finish();
}

// =============================================================================================
// Resets
// =============================================================================================

/// A destination that sends `before` bytes of data, then resets the connection.
fn resetting_target(before: usize) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    conn.set_nonblocking(false).unwrap();
                    let _ = conn.write_all(&random_bytes(before, 5));
                    std::thread::sleep(Duration::from_millis(100));
                    reset(conn);
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (addr, t)
}

#[test]
fn resets_mid_stream_leave_nothing_behind() {
    let mut rig = Rig::sip004("reset", "30");
    let (server_pid, local_pid) = (rig.server.pid(), rig.local.pid());
    let addr = SocketAddr::from(([127, 0, 0, 1], rig.http.port));

    // The client resets in the middle of a 1 MiB download.
    let (mut s, _) = socks_request(rig.local_port, SocksCommand::Connect, &Address::from(addr)).unwrap();
    s.write_all(b"GET /blob HTTP/1.0\r\n\r\n").unwrap();
    let mut got = vec![0u8; 100_000];
    s.read_exact(&mut got).unwrap();
    reset(s);

    // The destination resets in the middle of a stream.
    let (target, t) = resetting_target(200_000);
    let (mut s, _) = socks_request(rig.local_port, SocksCommand::Connect, &Address::from(target)).unwrap();
    let start = Instant::now();
    let (got, closed) = wait_close(&mut s, start, Duration::from_secs(5));
    let closed = closed.expect("the client sees the destination's reset as a close within 5 s");
    eprintln!(
        "destination reset: client got {} bytes, closed after {closed:?}",
        got.len()
    );
    assert!(got.len() <= 200_000);
    t.join().unwrap();
    drop(s);

    // No connection is left behind on either program once the background stops.
    let n = rig.background.take().unwrap().finish();
    let (server_idle, local_idle) = rig.idle_fds;
    let server_fds = wait_fds_at_most(server_pid, server_idle, Duration::from_secs(3));
    let local_fds = wait_fds_at_most(local_pid, local_idle, Duration::from_secs(3));
    eprintln!(
        "after the resets and {n} transfers: ssserver {server_fds} fds (idle {server_idle}), sslocal {local_fds} (idle {local_idle})"
    );
    assert_eq!(
        server_fds, server_idle,
        "the ssserver keeps descriptors after the resets"
    );
    assert_eq!(local_fds, local_idle, "the sslocal keeps descriptors after the resets");
    rig.background = Some(Background::start(rig.local_port, &rig.http));
    rig.finish();
}

// =============================================================================================
// UDP
// =============================================================================================

/// UDP echo through SOCKS5 UDP ASSOCIATE that tolerates loss: each datagram is re-sent
/// (at most `tries` times, 500 ms apart) until its own echo comes back; stale echoes of
/// earlier tries are skipped. Returns the payloads echoed, in order.
fn udp_echo_lossy(socks_port: u16, echo: SocketAddr, datagrams: &[Vec<u8>], tries: usize) -> Vec<Vec<u8>> {
    let (control, bind) = socks_request(socks_port, SocksCommand::UdpAssociate, &Address::from(echo)).unwrap();
    let relay = bind.socket_addr().expect("UDP relay address");
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    for d in datagrams {
        'tries: for _ in 0..tries {
            socket
                .send_to(&socks5::build_udp_packet(&Address::from(echo), d), relay)
                .unwrap();
            let sent = Instant::now();
            while sent.elapsed() < Duration::from_millis(500) {
                if let Ok((n, _)) = socket.recv_from(&mut buf)
                    && let Ok(packet) = socks5::parse_udp_packet(&buf[..n])
                    && packet.payload == &d[..]
                {
                    got.push(d.clone());
                    break 'tries;
                }
            }
        }
    }
    drop(control);
    got
}

#[test]
fn udp_garbage_flood_does_not_stop_the_relay() {
    let mut rig = Rig::new("udpflood", METHOD, PASSWORD, &["-t", "10", "-u"], &["-u"]);
    let echo = UdpEcho::start();
    let server_pid = rig.server.pid();
    let udp_before = udp_socket_count(server_pid);
    let stop = Arc::new(AtomicBool::new(false));
    let server = rig.server_addr();
    // Two flooders from different ports, about 1000 datagrams a second each of 1 to 1400
    // random bytes (a debug-build server drops roughly 1500 a second while logging each),
    // for as long as the echoes take (at most 15 s).
    let flooders: Vec<JoinHandle<usize>> = (0..2u64)
        .map(|i| {
            let st = Arc::clone(&stop);
            std::thread::spawn(move || {
                let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
                let junk = random_bytes(64 * 1024, 100 + i);
                let started = Instant::now();
                let mut sent = 0;
                while !st.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(15) {
                    let len = 1 + (sent * 7919) % 1400;
                    let at = (sent * 104_729) % (junk.len() - len);
                    if sock.send_to(&junk[at..at + len], server).is_ok() {
                        sent += 1;
                    }
                    if sent % 10 == 0 {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                sent
            })
        })
        .collect();
    // Echo once the flood is in full swing.
    std::thread::sleep(Duration::from_millis(1500));
    let datagrams: Vec<Vec<u8>> = (0..16).map(|i| random_bytes(1 + i * 90, i as u64 + 31)).collect();
    let started = Instant::now();
    let got = udp_echo_lossy(rig.local_port, echo.addr, &datagrams, 10);
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let sent: usize = flooders.into_iter().map(|t| t.join().unwrap()).sum();
    eprintln!(
        "{sent} garbage datagrams sent; {} of {} echoes came back in {took:?}",
        got.len(),
        datagrams.len()
    );
    assert_eq!(
        got.len(),
        datagrams.len(),
        "UDP echoes through the proxy during the flood"
    );
    // Garbage opens no association: the server holds no more UDP sockets than before, plus
    // the one association of the genuine client.
    let udp_after = udp_socket_count(server_pid);
    assert!(
        udp_after <= udp_before + 1,
        "server UDP sockets {udp_before} -> {udp_after} after the flood"
    );
    rig.finish();
}

#[test]
fn udp_garbage_does_not_poison_the_replay_filter() {
    // Unauthenticated datagrams must not reach the salt filter the TCP relay shares: a
    // forged datagram carrying a TCP client's salt must not get that client refused.
    let mut rig = Rig::new("udppoison", METHOD, PASSWORD, &["-t", "5", "-u"], &[]);
    let target = CountingTarget::start();
    let key = sip004_key(PASSWORD);
    let request = sip004_request(&key, &Address::from(target.addr), b"GET / HTTP/1.0\r\n\r\n");
    let mut datagram = request[..32].to_vec();
    datagram.extend_from_slice(&random_bytes(100, 3));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..3 {
        sock.send_to(&datagram, rig.server_addr()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut s = TcpStream::connect(rig.server_addr()).unwrap();
    s.write_all(&request).unwrap();
    let (got, _) = wait_close(&mut s, Instant::now(), Duration::from_secs(3));
    assert_eq!(
        target.accepted(),
        1,
        "the genuine TCP client was refused after forged UDP with its salt"
    );
    assert!(!got.is_empty(), "the genuine client got its response");
    rig.finish();
}

// =============================================================================================
// Faults on the destination side
// =============================================================================================

/// A listener whose accept queue is full: new SYNs to it are dropped, so connects time out.
/// Returns it with the connections filling it (keep both alive).
fn black_hole() -> (Socket, Vec<Socket>, SocketAddr) {
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..3 {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&addr.into());
        fillers.push(s);
        std::thread::sleep(Duration::from_millis(50));
    }
    // The emulation holds: a new connect does not complete within a second.
    let probe = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    assert!(
        probe.connect_timeout(&addr.into(), Duration::from_secs(1)).is_err(),
        "a full accept queue should drop SYNs"
    );
    (listener, fillers, addr)
}

#[test]
fn destination_faults_reach_the_client_within_the_connect_timeout() {
    // Idle (and so connect) timeout 3 s.
    let timeout = Duration::from_secs(3);
    let mut rig = Rig::sip004("dest", "3");
    let refused = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (reset_addr, reset_thread) = resetting_target(0);
    let (_hole, _fillers, hole) = black_hole();

    // Through sslocal: its SOCKS5 reply comes once the ssserver is connected (shadowsocks
    // has no way to report the destination's failure), so the failure shows as a close.
    for (what, addr, within) in [
        ("refused", refused, Duration::from_secs(1)),
        ("reset", reset_addr, Duration::from_secs(1)),
        ("black hole", hole, timeout + Duration::from_secs(1)),
    ] {
        let (mut s, _) = socks_request(rig.local_port, SocksCommand::Connect, &Address::from(addr))
            .unwrap_or_else(|e| panic!("{what}: SOCKS5 request: {e}"));
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let start = Instant::now();
        let (got, closed) = wait_close(&mut s, start, timeout + Duration::from_secs(3));
        let closed =
            closed.unwrap_or_else(|| panic!("{what}: the client is still connected after {:?}", start.elapsed()));
        eprintln!("destination {what}: SOCKS5 client closed after {closed:?}");
        assert!(got.is_empty(), "{what}: got {got:?}");
        assert!(
            closed <= within,
            "{what}: closed only after {closed:?} (expected within {within:?})"
        );
        if what == "black hole" {
            assert!(
                closed + Duration::from_millis(500) >= timeout,
                "{what}: closed after {closed:?}, before the connect timeout"
            );
        }
    }
    reset_thread.join().unwrap();

    // A direct client sees the same: a close, nothing else.
    let key = sip004_key(PASSWORD);
    for (what, addr) in [("refused", refused), ("black hole", hole)] {
        let mut s = TcpStream::connect(rig.server_addr()).unwrap();
        s.write_all(&sip004_request(&key, &Address::from(addr), b"hello"))
            .unwrap();
        let start = Instant::now();
        let (got, closed) = wait_close(&mut s, start, timeout + Duration::from_secs(3));
        assert!(got.is_empty(), "direct, {what}: got {} bytes", got.len());
        let closed = closed.unwrap_or_else(|| panic!("direct, {what}: still connected"));
        // The connect timeout, plus the same slack the probe rule allows.
        assert!(
            closed <= timeout + Duration::from_millis(1500),
            "direct, {what}: closed after {closed:?}"
        );
    }
    rig.finish();
}

// =============================================================================================
// Load: 10 000 concurrent relayed connections
// =============================================================================================

const LOAD_CONNECTIONS: usize = 10_000;
const LOAD_PAYLOAD: usize = 512;

/// The echo destination of the load test, run as a child process (this test binary again,
/// with `LOAD_ECHO_CHILD=1`) so that its 10 000 descriptors do not count against ours.
/// In the ordinary run it does nothing.
#[test]
fn load_echo_child() {
    if std::env::var_os("LOAD_ECHO_CHILD").is_none() {
        return;
    }
    raise_nofile();
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener.set_reuse_address(true).unwrap();
    listener.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    listener.listen(4096).unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener: TcpListener = listener.into();
    println!("PORT {}", listener.local_addr().unwrap().port());
    io::stdout().flush().unwrap();
    // Ends with the parent (its stdin closes), or after three minutes at most.
    std::thread::spawn(|| {
        let _ = io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(180));
        std::process::exit(0);
    });
    echo_loop(listener);
}

/// A single-threaded epoll echo server.
fn echo_loop(listener: TcpListener) {
    use std::os::fd::{AsRawFd, RawFd};
    // SAFETY: plain epoll calls on descriptors this function owns.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0);
    let add = |fd: RawFd| {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: valid epoll fd and event pointer.
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
    };
    let lfd = listener.as_raw_fd();
    add(lfd);
    let mut conns: HashMap<RawFd, TcpStream> = HashMap::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut buf = vec![0u8; 65536];
    loop {
        // SAFETY: the events buffer has room for 1024 entries.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), 1024, 1000) };
        for ev in events.iter().take(n.max(0) as usize) {
            let fd = ev.u64 as RawFd;
            if fd == lfd {
                while let Ok((s, _)) = listener.accept() {
                    s.set_nonblocking(true).unwrap();
                    add(s.as_raw_fd());
                    conns.insert(s.as_raw_fd(), s);
                }
                continue;
            }
            let Some(s) = conns.get_mut(&fd) else { continue };
            let close = loop {
                match s.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(k) => {
                        // Small payloads: the send buffer takes them; spin on the rare full one.
                        let mut out = &buf[..k];
                        let mut tries = 0;
                        while !out.is_empty() && tries < 10_000 {
                            match s.write(out) {
                                Ok(w) => out = &out[w..],
                                Err(_) => {
                                    tries += 1;
                                    std::thread::yield_now();
                                }
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                    Err(_) => break true,
                }
            };
            if close {
                conns.remove(&fd);
            }
        }
    }
}

struct EchoChild {
    child: Child,
    port: u16,
}

impl EchoChild {
    fn start() -> EchoChild {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["load_echo_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("LOAD_ECHO_CHILD", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = loop {
            let line = lines.next().expect("echo child output").unwrap();
            // libtest prints "test load_echo_child ... " before it, on the same line.
            if let Some((_, p)) = line.split_once("PORT ") {
                break p.trim().parse().unwrap();
            }
        };
        EchoChild { child, port }
    }
}

impl Drop for EchoChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How far above its cold level a server's VmRSS may stay once a round has closed and settled
/// (the 10%); settling stops as soon as it is there.
const LOAD_RSS_FACTOR: f64 = 1.10;
/// The SIP004 replay filter pair of a server (2 × 3.6 MB), resident from start-up.
const LOAD_REPLAY_FILTER_KIB: u64 = 7_000;
/// The longest settling waits for the allocator to give freed pages back.
const LOAD_SETTLE: Duration = Duration::from_secs(5);

/// The servers' VmRSS once they have had time to give back what a round freed: as soon as each
/// is within [`LOAD_RSS_FACTOR`] of its `cold` level, else after [`LOAD_SETTLE`].
fn settle_rss(servers: &[(u16, u32)], cold: &[u64]) -> Vec<u64> {
    let deadline = Instant::now() + LOAD_SETTLE;
    loop {
        let rss: Vec<u64> = servers.iter().map(|&(_, pid)| status_kib(pid, "VmRSS")).collect();
        let settled = rss
            .iter()
            .zip(cold)
            .all(|(&r, &c)| r as f64 <= c as f64 * LOAD_RSS_FACTOR);
        if settled || Instant::now() >= deadline {
            return rss;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One round: `LOAD_CONNECTIONS` direct encrypted clients spread over `servers`, all open at
/// once, each echoing a distinct payload through its server; checked, then closed. Returns the
/// servers' descriptor counts at the peak.
fn load_round(servers: &[(u16, u32)], echo: SocketAddr, key: &Key) -> Vec<usize> {
    let target = Address::from(echo);
    let mut conns = Vec::with_capacity(LOAD_CONNECTIONS);
    let started = Instant::now();
    for i in 0..LOAD_CONNECTIONS {
        let (port, _) = servers[i % servers.len()];
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        let payload = random_bytes(LOAD_PAYLOAD, i as u64 + 1);
        let mut enc = Encryptor::new(key).unwrap();
        let mut plain = target.to_bytes();
        plain.extend_from_slice(&payload);
        let mut wire = Vec::new();
        enc.encrypt(&plain, &mut wire);
        s.write_all(&wire).unwrap();
        conns.push((s, payload));
    }
    let connected = started.elapsed();
    for (i, (s, payload)) in conns.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut dec = Decryptor::new(key).unwrap();
        let mut plain = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(30);
        while plain.len() < LOAD_PAYLOAD && Instant::now() < deadline {
            let n = s.read(&mut buf).unwrap_or_else(|e| panic!("connection {i}: {e}"));
            assert!(n > 0, "connection {i} closed after {} bytes", plain.len());
            dec.feed(&buf[..n], &mut plain).unwrap();
        }
        assert_eq!(plain, *payload, "connection {i}: echo corrupted");
    }
    let peak: Vec<usize> = servers.iter().map(|&(_, pid)| fd_count(pid)).collect();
    eprintln!(
        "load: {LOAD_CONNECTIONS} connections opened in {connected:?}, all echoed intact after {:?}; server fds at the peak {peak:?}",
        started.elapsed()
    );
    drop(conns);
    peak
}

#[test]
fn load_ten_thousand_connections() {
    let hard = raise_nofile();
    // Each relayed connection costs the server two descriptors (client and destination), so
    // 10 000 need 20 000 + a few: more than a 20 000 hard limit allows one process. Spread
    // them over as many servers as the limit requires; the test process holds only the client
    // ends, and the destination (an echo server) is a child process with its own limit.
    let needed = 2 * LOAD_CONNECTIONS as u64 + 200;
    let count = needed.div_ceil(hard.max(1)) as usize;
    assert!(
        LOAD_CONNECTIONS as u64 + 500 <= hard,
        "the hard RLIMIT_NOFILE {hard} cannot hold the clients"
    );
    let echo = EchoChild::start();
    let echo_addr = SocketAddr::from(([127, 0, 0, 1], echo.port));
    let key = sip004_key(PASSWORD);
    let procs: Vec<(Proc, u16)> = (0..count)
        .map(|i| {
            let port = free_port();
            (
                our_server(&format!("hostile-load{i}"), METHOD, PASSWORD, port, &["-t", "60"]),
                port,
            )
        })
        .collect();
    let servers: Vec<(u16, u32)> = procs.iter().map(|(p, port)| (*port, p.pid())).collect();

    // Warm the servers up with one connection each, then measure.
    for &(port, _) in &servers {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(&sip004_request(&key, &Address::from(echo_addr), b"warm"))
            .unwrap();
        let mut buf = [0u8; 256];
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(s.read(&mut buf).unwrap() > 0);
    }
    std::thread::sleep(Duration::from_millis(300));
    let base_fds: Vec<usize> = servers.iter().map(|&(_, pid)| fd_count(pid)).collect();
    let base_rss: Vec<u64> = servers.iter().map(|&(_, pid)| status_kib(pid, "VmRSS")).collect();
    eprintln!("load: {count} servers (hard RLIMIT_NOFILE {hard}); before: fds {base_fds:?}, VmRSS {base_rss:?} KiB");
    eprintln!("server 0 before: {:?}", rss_breakdown(servers[0].1, 6));
    for (i, &cold) in base_rss.iter().enumerate() {
        // Else the cold level would leave out the replay filter, which load then pages in.
        assert!(
            cold >= LOAD_REPLAY_FILTER_KIB,
            "server {i}: VmRSS {cold} KiB before the load: the {LOAD_REPLAY_FILTER_KIB} KiB replay filter is not resident"
        );
    }

    let mut rss_rounds = Vec::new();
    for round in 1..=2 {
        let peak = load_round(&servers, echo_addr, &key);
        for (i, (&p, &b)) in peak.iter().zip(&base_fds).enumerate() {
            let per_server = LOAD_CONNECTIONS / servers.len();
            assert!(
                p >= b + 2 * per_server,
                "server {i} held {p} fds at the peak, expected {b} + 2 × {per_server}"
            );
        }
        let after_fds: Vec<usize> = servers
            .iter()
            .zip(&base_fds)
            .map(|(&(_, pid), &b)| wait_fds_at_most(pid, b, Duration::from_secs(15)))
            .collect();
        let rss = settle_rss(&servers, &base_rss);
        let hwm: Vec<u64> = servers.iter().map(|&(_, pid)| status_kib(pid, "VmHWM")).collect();
        eprintln!("load round {round}: after: fds {after_fds:?}, VmRSS {rss:?} KiB (peak VmHWM {hwm:?} KiB)");
        eprintln!("server 0 after round {round}: {:?}", rss_breakdown(servers[0].1, 6));
        assert_eq!(after_fds, base_fds, "descriptors left open after round {round}");
        rss_rounds.push(rss);
    }
    // The issue asks for RSS back within 10% of the cold level. Three things kept the load's
    // peak (about twice the cold level) from coming back, each now dealt with: freed connection
    // memory the allocator kept (jemalloc with a short decay, .cargo/config.toml, gives it back
    // within about two seconds); the event loop's tables (a slot per registration, the fd
    // index, a timer slot and heap entry per connection), which shrink once use falls; and the
    // replay filter, which the salts paged in: it is resident from start-up now
    // (PingPongBloom::make_resident), so it is in the cold figure and adds nothing after (a
    // percentage of the cold figure is therefore about 7 MiB larger in absolute terms: the
    // message gives KiB too). A second round must not add more than 10% to the first either:
    // a leak would grow with every round.
    for (i, &cold) in base_rss.iter().enumerate() {
        let (r1, r2) = (rss_rounds[0][i], rss_rounds[1][i]);
        let pct = |x: u64, of: u64| (x as f64 / of as f64 - 1.0) * 100.0;
        eprintln!(
            "server {i}: VmRSS cold {cold} KiB; after round 1 {r1} KiB ({:+.1}% of cold, {:+} KiB); after round 2 \
             {r2} KiB ({:+.1}% of round 1, {:+.1}% of cold)",
            pct(r1, cold),
            r1 as i64 - cold as i64,
            pct(r2, r1),
            pct(r2, cold)
        );
        for (round, r) in [(1, r1), (2, r2)] {
            assert!(
                r as f64 <= cold as f64 * LOAD_RSS_FACTOR,
                "server {i}: VmRSS {r} KiB after round {round} of 10 000 connections, cold {cold} KiB \
                 (+{} KiB)",
                r.saturating_sub(cold)
            );
        }
        assert!(
            r2 as f64 <= r1 as f64 * 1.10,
            "server {i}: VmRSS grows with every round of 10 000 connections: cold {cold} KiB, {r1} KiB after one, {r2} KiB after two"
        );
    }
    drop(procs);
}
