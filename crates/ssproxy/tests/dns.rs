//! The resolver against a real nameserver: Debian's dnsmasq, started by each test
//! on a free loopback port with a zone the test writes, and its query log read
//! back to count what reached it. Without dnsmasq (scripts/setup.sh installs it)
//! each test prints why it is skipped and returns.
//!
//! The first tests drive `ssproxy::dns::Resolver` on a loop of their own; the
//! last ones go through a running ssserver (UDP datagrams to names, while a TCP
//! transfer runs).

mod common;

use std::cell::Cell;
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use common::{Proc, UdpEcho, free_port, our_server};
use evloop::{Ctx, EventLoop};
use ssproxy::crypto::{self, Encryptor, Key, Method};
use ssproxy::dns::{AddressOrder, Client, HasResolver, QueryId, Resolver, ResolverConfig};
use ssproxy::protocol::Address;

// =============================================================================================
// dnsmasq
// =============================================================================================

/// A dnsmasq answering for `*.test` from a hosts file and options the test gives,
/// logging every query; killed when dropped.
struct Dnsmasq {
    proc: Proc,
    addr: SocketAddr,
    dir: PathBuf,
}

fn dnsmasq_binary() -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|dir| format!("{dir}/dnsmasq"))
        .find(|candidate| std::path::Path::new(candidate).is_file())
}

/// A fresh directory for one test's files.
fn scratch_dir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ssproxy-dns-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Dnsmasq {
    /// Start one, or `None` (with the reason printed) if dnsmasq is not installed.
    fn start(name: &str, hosts: &str, extra: &[String]) -> Option<Dnsmasq> {
        let Some(binary) = dnsmasq_binary() else {
            eprintln!("SKIPPED {name}: dnsmasq is not installed (scripts/setup.sh installs it)");
            return None;
        };
        let dir = scratch_dir(name);
        let hosts_file = dir.join("zone-hosts");
        std::fs::write(&hosts_file, hosts).unwrap();
        let port = free_port();
        let mut args = vec![
            "--keep-in-foreground".to_string(),
            "--conf-file=/dev/null".to_string(),
            "--no-resolv".to_string(),
            "--no-hosts".to_string(),
            "--listen-address=127.0.0.1".to_string(),
            "--bind-interfaces".to_string(),
            format!("--port={port}"),
            // Authoritative for *.test: anything else there is NXDOMAIN.
            "--local=/test/".to_string(),
            format!("--addn-hosts={}", hosts_file.display()),
            "--local-ttl=300".to_string(),
            "--cache-size=0".to_string(),
            "--log-queries".to_string(),
            "--log-facility=-".to_string(),
            "--pid-file=".to_string(),
        ];
        args.extend_from_slice(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = Proc::spawn(&format!("{name}-dnsmasq"), &binary, &args);
        let ns = Dnsmasq {
            proc,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        ns.wait_ready();
        Some(ns)
    }

    /// Until dnsmasq answers a query (any answer will do).
    fn wait_ready(&self) {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 512];
        while Instant::now() < deadline {
            probe
                .send_to(&query_message(0x5151, "ready.test", 1), self.addr)
                .unwrap();
            if probe.recv(&mut buf).is_ok() {
                return;
            }
        }
        panic!("dnsmasq on {} does not answer after 10 s", self.addr);
    }

    /// How many `qtype` queries for `name` reached dnsmasq (letter case aside:
    /// c-ares randomises it).
    fn queries(&self, qtype: &str, name: &str) -> usize {
        let needle = format!("query[{qtype}] {} from", name.to_ascii_lowercase());
        self.proc
            .log_text()
            .to_ascii_lowercase()
            .lines()
            .filter(|line| line.contains(&needle.to_ascii_lowercase()))
            .count()
    }

    /// The distinct names of `A` queries that reached dnsmasq, lower case.
    fn names_asked(&self) -> HashSet<String> {
        let log = self.proc.log_text().to_ascii_lowercase();
        log.lines()
            .filter_map(|line| line.split("query[a] ").nth(1))
            .filter_map(|rest| rest.split(' ').next())
            .map(str::to_string)
            .collect()
    }

    /// A file in this server's directory, for the resolver's own files.
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A DNS query for `name` of type `qtype`, class IN, recursion desired.
fn query_message(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0]);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    m
}

/// Where the question of a message ends (after QTYPE and QCLASS).
fn question_end(message: &[u8]) -> usize {
    let mut i = 12;
    while message[i] != 0 {
        i += 1 + message[i] as usize;
    }
    i + 5
}

/// An answer to `query` (its id and question, or as given) with one `A` record.
fn forged_answer(id: u16, question: &[u8], ip: [u8; 4]) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    m.extend_from_slice(question);
    m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    m.extend_from_slice(&ip);
    m
}

// =============================================================================================
// A resolver on a loop of the test's own
// =============================================================================================

type Res = Result<Vec<IpAddr>, (io::ErrorKind, String)>;

struct Data {
    resolver: Resolver<Data>,
    results: Vec<(String, Res, ThreadId)>,
}

impl HasResolver for Data {
    fn resolver(&mut self) -> &mut Resolver<Self> {
        &mut self.resolver
    }
}

struct Harness {
    lp: EventLoop<Data>,
    data: Data,
    next_client: u64,
}

impl Harness {
    fn new(config: ResolverConfig) -> Harness {
        Harness {
            lp: EventLoop::new().unwrap(),
            data: Data {
                resolver: Resolver::new(config).unwrap(),
                results: Vec::new(),
            },
            next_client: 0,
        }
    }

    fn resolve_for(&mut self, client: Client, name: &str) -> Option<QueryId> {
        let cx = &mut Ctx {
            lp: &mut self.lp,
            data: &mut self.data,
        };
        let label = name.to_string();
        Resolver::resolve(cx, client, name, move |cx: &mut Ctx<'_, Data>, result| {
            let result = result.map_err(|e| (e.kind(), e.to_string()));
            cx.data.results.push((label, result, thread::current().id()));
        })
    }

    /// Resolve for a client of its own (so that no cap is in the way).
    fn resolve(&mut self, name: &str) -> Option<QueryId> {
        self.next_client += 1;
        self.resolve_for(Client::Stream(self.next_client), name)
    }

    fn run_until(&mut self, limit: Duration, done: impl Fn(&Data) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if done(&self.data) {
                return true;
            }
            self.lp
                .run_once(Some(Duration::from_millis(10)), &mut self.data)
                .unwrap();
        }
        done(&self.data)
    }

    fn run_for(&mut self, time: Duration) {
        self.run_until(time, |_| false);
    }

    /// Resolve `name` and wait (at most 10 s) for the answer.
    fn lookup(&mut self, name: &str) -> Res {
        let before = self.data.results.len();
        self.resolve(name);
        assert!(
            self.run_until(Duration::from_secs(10), |d| d.results.len() > before),
            "no answer for {name} in 10 s"
        );
        let (_, result, thread) = self.data.results.last().unwrap().clone();
        assert_eq!(thread, thread::current().id(), "the callback runs on the loop's thread");
        result
    }
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// The zone most tests use.
const ZONE: &str = "192.0.2.7 both.test\n2001:db8::7 both.test\n192.0.2.8 target.test\n\
                    192.0.2.50 web.corp.test\n192.0.2.80 spoof.test\n";

fn zone_server(name: &str) -> Option<Dnsmasq> {
    Dnsmasq::start(
        name,
        ZONE,
        &[
            "--cname=alias1.test,alias2.test".to_string(),
            "--cname=alias2.test,target.test".to_string(),
            "--host-record=ttl.test,192.0.2.60,2".to_string(),
        ],
    )
}

/// The resolver's settings: this nameserver only, empty system files of its own.
fn config_for(ns: &Dnsmasq) -> ResolverConfig {
    ResolverConfig {
        nameservers: vec![ns.addr],
        resolv_conf: ns.file("resolv.conf", ""),
        hosts: ns.file("hosts", ""),
        timeout: Duration::from_millis(500),
        ..ResolverConfig::default()
    }
}

#[test]
fn a_aaaa_and_cname_chains_resolve_in_the_configured_order() {
    let Some(ns) = zone_server("records") else { return };
    let mut h = Harness::new(config_for(&ns));
    assert_eq!(h.lookup("both.test"), Ok(ips(&["192.0.2.7", "2001:db8::7"])));
    assert_eq!(h.lookup("alias1.test"), Ok(ips(&["192.0.2.8"])));
    let mut h = Harness::new(ResolverConfig {
        order: AddressOrder::Ipv6First,
        ..config_for(&ns)
    });
    assert_eq!(h.lookup("both.test"), Ok(ips(&["2001:db8::7", "192.0.2.7"])));
    let mut h = Harness::new(ResolverConfig {
        order: AddressOrder::Ipv6Only,
        ..config_for(&ns)
    });
    assert_eq!(h.lookup("both.test"), Ok(ips(&["2001:db8::7"])));
}

#[test]
fn nxdomain_names_the_host_and_the_reason() {
    let Some(ns) = zone_server("nxdomain") else { return };
    let mut h = Harness::new(config_for(&ns));
    assert_eq!(
        h.lookup("missing.test"),
        Err((io::ErrorKind::NotFound, "dns: missing.test: NXDOMAIN".to_string()))
    );
}

#[test]
fn truncated_answers_are_fetched_again_over_tcp() {
    // 120 A records: about 2 KB, past both 512 bytes and c-ares' EDNS size, so the
    // UDP answer comes back truncated and only TCP can carry them all.
    let hosts: String = (1..=120).map(|i| format!("198.18.0.{i} big.test\n")).collect();
    let Some(ns) = Dnsmasq::start("tcp-fallback", &hosts, &[]) else {
        return;
    };
    let mut h = Harness::new(config_for(&ns));
    let mut addrs = h.lookup("big.test").expect("big.test resolves");
    addrs.sort();
    let expected: Vec<IpAddr> = (1..=120).map(|i| IpAddr::from([198, 18, 0, i])).collect();
    assert_eq!(addrs, expected, "every address of the truncated answer");
}

#[test]
fn short_names_take_the_search_domain() {
    let Some(ns) = zone_server("search") else { return };
    let mut h = Harness::new(ResolverConfig {
        resolv_conf: ns.file("resolv-search.conf", "search corp.test\noptions ndots:1\n"),
        ..config_for(&ns)
    });
    assert_eq!(h.lookup("web"), Ok(ips(&["192.0.2.50"])));
}

#[test]
fn a_dead_first_nameserver_fails_over_within_the_timeout() {
    let Some(ns) = zone_server("failover") else { return };
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap(); // bound, never read
    let mut h = Harness::new(ResolverConfig {
        nameservers: vec![dead.local_addr().unwrap(), ns.addr],
        timeout: Duration::from_millis(300),
        ..config_for(&ns)
    });
    let start = Instant::now();
    assert_eq!(h.lookup("both.test"), Ok(ips(&["192.0.2.7", "2001:db8::7"])));
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "failover took {:?}",
        start.elapsed()
    );
}

#[test]
fn answers_are_cached_until_their_ttl_expires() {
    let Some(ns) = zone_server("ttl") else { return };
    let mut h = Harness::new(config_for(&ns));
    assert_eq!(h.lookup("ttl.test"), Ok(ips(&["192.0.2.60"])));
    assert_eq!(ns.queries("A", "ttl.test"), 1);
    assert_eq!(h.lookup("ttl.test"), Ok(ips(&["192.0.2.60"])));
    assert_eq!(ns.queries("A", "ttl.test"), 1, "within its TTL of 2 s: from the cache");
    h.run_for(Duration::from_millis(2300));
    assert_eq!(h.lookup("ttl.test"), Ok(ips(&["192.0.2.60"])));
    assert_eq!(ns.queries("A", "ttl.test"), 2, "after its TTL: asked again");
}

#[test]
fn the_cache_is_emptied_once_it_holds_its_most_names() {
    let Some(ns) = zone_server("cache-size") else { return };
    let mut h = Harness::new(ResolverConfig {
        cache_max_names: 3,
        ..config_for(&ns)
    });
    for name in ["both.test", "target.test", "both.test"] {
        assert!(h.lookup(name).is_ok());
    }
    assert_eq!(ns.queries("A", "both.test"), 1, "the second time from the cache");
    // The third answer fills the cache to its most: it is emptied (by a thread of
    // c-ares', so give it a moment), and both.test is asked for again.
    h.run_for(Duration::from_millis(300));
    assert!(h.lookup("both.test").is_ok());
    assert_eq!(ns.queries("A", "both.test"), 2);
}

#[test]
fn hosts_entries_and_literals_are_answered_at_once() {
    let Some(ns) = zone_server("hosts") else { return };
    let mut h = Harness::new(ResolverConfig {
        hosts: ns.file("hosts-with-entry", "192.0.2.99 fromhosts.example\n"),
        ..config_for(&ns)
    });
    assert_eq!(h.resolve("fromhosts.example"), None, "answered inside resolve");
    assert_eq!(h.data.results.last().unwrap().1, Ok(ips(&["192.0.2.99"])));
    for (name, ip) in [("192.0.2.9", "192.0.2.9"), ("[::1]", "::1")] {
        assert_eq!(h.resolve(name), None);
        assert_eq!(h.data.results.last().unwrap().1, Ok(ips(&[ip])));
    }
    h.resolve("exa mple.test");
    let (kind, message) = h.data.results.last().unwrap().1.clone().unwrap_err();
    assert_eq!(kind, io::ErrorKind::InvalidInput);
    assert_eq!(message, "dns: exa mple.test: invalid hostname");
    h.run_for(Duration::from_millis(100));
    assert!(
        ns.names_asked().iter().all(|n| n == "ready.test"),
        "nothing reached the nameserver"
    );
}

/// A callback that records its result under `label`.
fn record(label: &'static str) -> impl FnOnce(&mut Ctx<'_, Data>, io::Result<Vec<IpAddr>>) + 'static {
    move |cx, result| {
        let result = result.map_err(|e| (e.kind(), e.to_string()));
        cx.data
            .results
            .push((label.to_string(), result, thread::current().id()));
    }
}

#[test]
fn callbacks_may_resolve_again_and_cancel_other_waiters() {
    let Some(ns) = zone_server("reentrant") else { return };
    let mut h = Harness::new(config_for(&ns));
    let victim: Rc<Cell<Option<QueryId>>> = Rc::new(Cell::new(None));
    let to_cancel = Rc::clone(&victim);
    let cx = &mut Ctx {
        lp: &mut h.lp,
        data: &mut h.data,
    };
    let first = Resolver::resolve(
        cx,
        Client::Stream(1),
        "both.test",
        move |cx: &mut Ctx<'_, Data>, result| {
            record("first")(cx, result);
            // The other waiter of the same lookup, not called yet: cancelled from here.
            assert!(cx.data.resolver.cancel(to_cancel.get().expect("the victim waits")));
            // The same name again (from the cache now), and a new lookup.
            Resolver::resolve(cx, Client::Stream(2), "both.test", record("again"));
            Resolver::resolve(cx, Client::Stream(3), "target.test", record("next"));
        },
    );
    assert!(first.is_some());
    victim.set(h.resolve("BOTH.test"));
    assert_eq!(h.data.resolver.pending(), 1, "two waiters share one lookup");
    assert!(h.run_until(Duration::from_secs(5), |d| d.results.len() >= 3));
    h.run_for(Duration::from_millis(200));
    let got: Vec<(&str, &Res)> = h.data.results.iter().map(|(l, r, _)| (l.as_str(), r)).collect();
    let both = Ok(ips(&["192.0.2.7", "2001:db8::7"]));
    assert_eq!(
        got,
        [("first", &both), ("again", &both), ("next", &Ok(ips(&["192.0.2.8"])))]
    );
    assert_eq!(ns.queries("A", "both.test"), 1);
}

/// The resolver's settings for a nameserver that never answers (`dead`, bound and
/// never read), with no system files.
fn silent_config(dir: &std::path::Path, dead: &UdpSocket) -> ResolverConfig {
    ResolverConfig {
        nameservers: vec![dead.local_addr().unwrap()],
        resolv_conf: dir.join("none"),
        hosts: dir.join("none"),
        ..ResolverConfig::default()
    }
}

#[test]
fn cancel_drops_the_callback() {
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dir = scratch_dir("cancel");
    let mut h = Harness::new(ResolverConfig {
        timeout: Duration::from_millis(100),
        ..silent_config(&dir, &dead)
    });
    let id = h.resolve("never.test").expect("pending");
    assert!(h.data.resolver.cancel(id));
    assert!(!h.data.resolver.cancel(id));
    h.run_for(Duration::from_millis(1500));
    assert!(h.data.results.is_empty(), "{:?}", h.data.results);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn one_client_cannot_have_more_than_its_cap_of_lookups_in_flight() {
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dir = scratch_dir("cap");
    let mut h = Harness::new(ResolverConfig {
        timeout: Duration::from_secs(2),
        max_queries_per_client: 8,
        ..silent_config(&dir, &dead)
    });
    let greedy = Client::Datagrams("127.0.0.1:4000".parse().unwrap());
    let ids: Vec<QueryId> = (0..8)
        .map(|i| h.resolve_for(greedy, &format!("n{i}.test")).expect("pending"))
        .collect();
    assert_eq!(h.resolve_for(greedy, "n8.test"), None, "refused at once");
    let (name, result, _) = h.data.results.last().unwrap().clone();
    assert_eq!(name, "n8.test");
    assert_eq!(
        result.unwrap_err().1,
        "dns: n8.test: too many lookups in flight for this client (at most 8)"
    );
    // Everyone else is unaffected, and a slot frees up when a lookup ends.
    assert!(h.resolve_for(Client::Stream(7), "other.test").is_some());
    assert!(h.data.resolver.cancel(ids[0]));
    assert!(h.resolve_for(greedy, "n9.test").is_some());
    let _ = std::fs::remove_dir_all(dir);
}

/// Stands between c-ares and dnsmasq: for each `A` query, it first sends forged
/// answers pointing at 6.6.6.6 (from another port; with another id; for another
/// name; with the question's letter case changed), then relays the real answer.
struct Spoofer {
    addr: SocketAddr,
    forged: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Spoofer {
    fn start(upstream: SocketAddr) -> Spoofer {
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        front.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = front.local_addr().unwrap();
        let (forged, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (count, st) = (Arc::clone(&forged), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            let other_port = UdpSocket::bind("127.0.0.1:0").unwrap();
            let back = UdpSocket::bind("127.0.0.1:0").unwrap();
            back.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 4096];
            let deadline = Instant::now() + Duration::from_secs(20);
            while !st.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((n, resolver)) = front.recv_from(&mut buf) else {
                    continue;
                };
                let query = buf[..n].to_vec();
                let id = u16::from_be_bytes([query[0], query[1]]);
                let end = question_end(&query);
                let question = &query[12..end];
                if question[question.len() - 4..question.len() - 2] == [0, 1] {
                    let evil = [6, 6, 6, 6];
                    let mut other_name = question.to_vec();
                    other_name[1] = if other_name[1].eq_ignore_ascii_case(&b'x') {
                        b'y'
                    } else {
                        b'x'
                    };
                    let mut other_case = question.to_vec();
                    for b in &mut other_case[..question.len() - 4] {
                        if b.is_ascii_alphabetic() {
                            *b ^= 0x20;
                        }
                    }
                    let _ = other_port.send_to(&forged_answer(id, question, evil), resolver);
                    let _ = front.send_to(&forged_answer(id ^ 0x8000, question, evil), resolver);
                    let _ = front.send_to(&forged_answer(id, &other_name, evil), resolver);
                    let _ = front.send_to(&forged_answer(id, &other_case, evil), resolver);
                    count.fetch_add(4, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(20));
                }
                back.send_to(&query, upstream).unwrap();
                if let Ok(n) = back.recv(&mut buf) {
                    let _ = front.send_to(&buf[..n], resolver);
                }
            }
        });
        Spoofer {
            addr,
            forged,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Spoofer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn forged_answers_racing_the_real_one_are_ignored() {
    let Some(ns) = zone_server("spoof") else { return };
    let spoofer = Spoofer::start(ns.addr);
    let mut h = Harness::new(ResolverConfig {
        nameservers: vec![spoofer.addr],
        ..config_for(&ns)
    });
    assert_eq!(h.lookup("spoof.test"), Ok(ips(&["192.0.2.80"])));
    assert!(
        spoofer.forged.load(Ordering::SeqCst) >= 4,
        "the forgeries were sent first"
    );
}

// =============================================================================================
// Through ssserver
// =============================================================================================

const PASSWORD: &str = "dns-test-password";

fn key() -> Key {
    Key::new(Method::Aes256Gcm, PASSWORD).unwrap()
}

/// Our ssserver relaying TCP and UDP, resolving with `ns`; and its port.
fn server_asking(ns: &Dnsmasq, name: &str) -> (Proc, u16) {
    let port = free_port();
    let server = our_server(name, "aes-256-gcm", PASSWORD, port, &["-u", "-d", &ns.addr.to_string()]);
    (server, port)
}

/// A SIP004 UDP request to `name`:`port` carrying `payload`.
fn udp_request(key: &Key, name: &str, port: u16, payload: &[u8]) -> Vec<u8> {
    let mut plain = Address::Domain(name.to_string(), port).to_bytes();
    plain.extend_from_slice(payload);
    let mut out = Vec::new();
    crypto::encrypt_packet(key, &plain, &mut out).unwrap();
    out
}

/// The payload of a SIP004 UDP reply (after its source address).
fn udp_reply_payload(key: &Key, packet: &mut [u8]) -> Option<Vec<u8>> {
    let plain = crypto::decrypt_packet(key, packet).ok()?;
    let (_, n) = Address::parse(plain).ok()??;
    Some(plain[n..].to_vec())
}

/// CPU time (user and system) `pid` has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at its closing parenthesis.
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect())
        .unwrap_or_default();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_udp_client_asking_for_many_names_cannot_starve_the_others() {
    // slow.test is forwarded to a nameserver that never answers, so those lookups
    // stay in flight; fast.test is answered.
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
    let forward = format!("--server=/slow.test/127.0.0.1#{}", dead.local_addr().unwrap().port());
    let Some(ns) = Dnsmasq::start("starve", "127.0.0.1 fast.test\n", &[forward]) else {
        return;
    };
    let echo = UdpEcho::start();
    let (server, port) = server_asking(&ns, "starve");
    let key = key();
    let greedy = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..200 {
        let packet = udp_request(&key, &format!("s{i}.slow.test"), echo.addr.port(), b"x");
        greedy.send_to(&packet, ("127.0.0.1", port)).unwrap();
    }
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    other.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let packet = udp_request(&key, "fast.test", echo.addr.port(), b"hello");
    other.send_to(&packet, ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 2048];
    let n = other.recv(&mut buf).expect("another client is still served");
    assert_eq!(udp_reply_payload(&key, &mut buf[..n]).as_deref(), Some(&b"hello"[..]));
    thread::sleep(Duration::from_millis(500));
    let asked = ns.names_asked().iter().filter(|n| n.ends_with(".slow.test")).count();
    assert!(
        (1..=ssproxy::dns::DEFAULT_MAX_QUERIES_PER_CLIENT).contains(&asked),
        "{asked} names of one client reached the nameserver"
    );
    drop(server);
}

/// Bytes relayed through ssserver to a sink, counted as they arrive.
struct Transfer {
    received: Arc<AtomicU64>,
    stalls_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Transfer {
    fn start(server_port: u16) -> Transfer {
        let sink = TcpListener::bind("127.0.0.1:0").unwrap();
        let sink_addr = sink.local_addr().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let stalls_ms = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, longest, st) = (Arc::clone(&received), Arc::clone(&stalls_ms), Arc::clone(&stop));
        let reader = thread::spawn(move || {
            let (mut conn, _) = sink.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            let mut buf = vec![0u8; 256 * 1024];
            let mut last = Instant::now();
            while !st.load(Ordering::Relaxed) {
                match conn.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        count.fetch_add(n as u64, Ordering::Relaxed);
                        let gap = last.elapsed().as_millis() as u64;
                        longest.fetch_max(gap, Ordering::Relaxed);
                        last = Instant::now();
                    }
                    Err(_) => {}
                }
            }
        });
        let st = Arc::clone(&stop);
        let writer = thread::spawn(move || {
            let key = key();
            let mut conn = TcpStream::connect(("127.0.0.1", server_port)).unwrap();
            let mut enc = Encryptor::new(&key).unwrap();
            let mut out = Vec::new();
            enc.encrypt(&Address::from(sink_addr).to_bytes(), &mut out);
            conn.write_all(&out).unwrap();
            let block = vec![0x5au8; 64 * 1024];
            let deadline = Instant::now() + Duration::from_secs(120);
            while !st.load(Ordering::Relaxed) && Instant::now() < deadline {
                out.clear();
                enc.encrypt(&block, &mut out);
                if conn.write_all(&out).is_err() {
                    break;
                }
            }
        });
        Transfer {
            received,
            stalls_ms,
            stop,
            threads: vec![reader, writer],
        }
    }

    fn bytes(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Relay one datagram to each of `names` from one client socket, at most
/// `window` unanswered at a time; the indexes that came back.
fn relay_to_names(server_port: u16, echo_port: u16, names: &[(usize, String)], window: usize) -> HashSet<usize> {
    let key = key();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut back = HashSet::new();
    let mut buf = [0u8; 2048];
    for chunk in names.chunks(window) {
        for attempt in 0..3 {
            let missing: Vec<&(usize, String)> = chunk.iter().filter(|(i, _)| !back.contains(i)).collect();
            if missing.is_empty() {
                break;
            }
            for (i, name) in &missing {
                let packet = udp_request(&key, name, echo_port, &(*i as u64).to_be_bytes());
                socket.send_to(&packet, ("127.0.0.1", server_port)).unwrap();
            }
            let deadline = Instant::now() + Duration::from_millis(500 << attempt);
            while Instant::now() < deadline && chunk.iter().any(|(i, _)| !back.contains(i)) {
                if let Ok(n) = socket.recv(&mut buf)
                    && let Some(payload) = udp_reply_payload(&key, &mut buf[..n])
                    && let Ok(index) = <[u8; 8]>::try_from(payload.as_slice())
                {
                    back.insert(u64::from_be_bytes(index) as usize);
                }
            }
        }
    }
    back
}

#[test]
fn ten_thousand_names_resolve_while_a_transfer_runs() {
    const NAMES: usize = 10_000;
    const CLIENTS: usize = 8;
    let hosts: String = (0..NAMES).map(|i| format!("127.0.0.1 n{i}.load.test\n")).collect();
    let Some(ns) = Dnsmasq::start("load", &hosts, &[]) else {
        return;
    };
    let echo = UdpEcho::start();
    let (server, port) = server_asking(&ns, "load");
    let rss_before = rss_kib(server.pid());

    let transfer = Transfer::start(port);
    thread::sleep(Duration::from_secs(1));
    let quiet_start = (transfer.bytes(), Instant::now());
    thread::sleep(Duration::from_secs(1));
    let quiet_rate = (transfer.bytes() - quiet_start.0) as f64 / quiet_start.1.elapsed().as_secs_f64();

    let busy_start = (transfer.bytes(), Instant::now());
    let cpu_start = cpu_time(server.pid());
    transfer.stalls_ms.store(0, Ordering::Relaxed);
    let workers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let names: Vec<(usize, String)> = (c..NAMES)
                .step_by(CLIENTS)
                .map(|i| (i, format!("n{i}.load.test")))
                .collect();
            let echo_port = echo.addr.port();
            thread::spawn(move || relay_to_names(port, echo_port, &names, 16))
        })
        .collect();
    let mut answered = 0;
    for w in workers {
        answered += w.join().unwrap().len();
    }
    let busy_time = busy_start.1.elapsed();
    let cpu = cpu_time(server.pid()) - cpu_start;
    let busy_rate = (transfer.bytes() - busy_start.0) as f64 / busy_time.as_secs_f64();
    let longest_stall = transfer.stalls_ms.load(Ordering::Relaxed);
    drop(transfer);
    let rss_after = rss_kib(server.pid());
    let asked = ns.names_asked().len();
    println!(
        "dns load: {answered}/{NAMES} names relayed in {busy_time:.1?} ({asked} names asked of dnsmasq), ssserver CPU {cpu:.1?}; \
         transfer {:.0} MB/s before, {:.0} MB/s during, longest gap {longest_stall} ms; \
         ssserver RSS {rss_before} KiB -> {rss_after} KiB",
        quiet_rate / 1e6,
        busy_rate / 1e6,
    );
    assert_eq!(answered, NAMES, "every name was resolved and relayed");
    assert!(busy_rate > 0.0, "the transfer went on");
    assert!(longest_stall < 2000, "the transfer stalled for {longest_stall} ms");
    assert!(
        rss_after < rss_before + 128 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    drop(server);
}
