//! An asynchronous DNS resolver that runs on the event loop and never blocks it:
//! the job of the original's `asyncdns.py`.
//!
//! A lookup goes through, in order:
//!
//! 1. IP literals (`192.0.2.1`, `2001:db8::1`, `[2001:db8::1]`): answered at once.
//! 2. The hosts file (`/etc/hosts` by default), read once at construction.
//! 3. The cache, which honours the answers' TTLs (clamped to
//!    [`ResolverConfig::min_ttl`] ..= [`ResolverConfig::max_ttl`]) and also keeps
//!    negative answers (NXDOMAIN, no addresses) for a short while.
//! 4. The nameservers (from `/etc/resolv.conf` unless configured): an `A` and an
//!    `AAAA` query are sent in parallel over one non-blocking UDP socket per
//!    address family, retransmitted with a doubling interval while rotating through
//!    the nameservers, until an overall timeout.
//!
//! Building and parsing DNS messages is hickory-proto's job; the transport,
//! retransmission, cache and the file parsing are here.
//!
//! # Wiring it into a loop
//!
//! The resolver lives inside the loop's data `D`, which implements [`HasResolver`]
//! so that the resolver's socket handlers and timers can find it again:
//!
//! ```
//! use std::net::IpAddr;
//! use evloop::{Ctx, EventLoop};
//! use ssproxy::dns::{HasResolver, Resolver, ResolverConfig};
//!
//! struct Worker {
//!     resolver: Resolver<Worker>,
//!     resolved: Option<Vec<IpAddr>>,
//! }
//!
//! impl HasResolver for Worker {
//!     fn resolver(&mut self) -> &mut Resolver<Self> {
//!         &mut self.resolver
//!     }
//! }
//!
//! let config = ResolverConfig { nameservers: vec!["127.0.0.1:53".parse().unwrap()], ..Default::default() };
//! let mut worker = Worker { resolver: Resolver::new(config)?, resolved: None };
//! let mut lp: EventLoop<Worker> = EventLoop::new()?;
//! // Inside a handler one has a `Ctx`; here we make one by hand.
//! let cx = &mut Ctx { lp: &mut lp, data: &mut worker };
//! let pending = Resolver::resolve(cx, "192.0.2.7", |cx: &mut Ctx<'_, Worker>, result| {
//!     cx.data.resolved = Some(result.expect("a literal always resolves"));
//! });
//! assert!(pending.is_none()); // answered at once: the callback has already run
//! assert_eq!(worker.resolved, Some(vec!["192.0.2.7".parse().unwrap()]));
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # When the callback runs
//!
//! Answers known without asking the network (literals, hosts entries, cache hits,
//! invalid names, and a failure to send to every nameserver) are delivered
//! **immediately**: the callback runs inside [`Resolver::resolve`], which then
//! returns `None`. Everything else is delivered later from the loop and `resolve`
//! returns `Some(QueryId)`, which [`Resolver::cancel`] takes. So put a connection's
//! state in place *before* calling `resolve`, so that its callback finds it. This
//! is re-entrant: the callback gets the same `&mut Ctx` and may resolve again,
//! cancel other queries or close connections.
//!
//! # Limits
//!
//! No TCP fallback (a truncated answer is used as far as it goes), no EDNS, no
//! search domains (every name is taken as fully qualified), no DNSSEC. The files
//! are read once. The UDP source port is chosen once per socket, so spoofing
//! resistance rests on the 16-bit random id, the question name and type, and the
//! source address, which must be one of the nameservers.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use evloop::{Ctx, EventLoop, Events, POLL_IN, TimerId, Token};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use ring::rand::{SecureRandom, SystemRandom};

/// The DNS port, for nameservers read from `resolv.conf`.
pub const DNS_PORT: u16 = 53;

/// The longest name accepted (without the trailing dot).
const MAX_NAME_LEN: usize = 253;
/// How many CNAME hops an answer may take from the question to the addresses.
const MAX_CNAME_HOPS: usize = 8;
/// How many datagrams one readiness event drains before yielding to the loop.
const MAX_DATAGRAMS_PER_EVENT: usize = 64;
/// Receive buffer: answers without EDNS fit in 512 bytes; be generous.
const RECV_BUF_LEN: usize = 4096;

/// Implemented by the loop's data type, so that the resolver (which lives inside
/// it) can be reached from its own socket handlers and timers.
pub trait HasResolver: Sized + 'static {
    /// The resolver of this loop.
    fn resolver(&mut self) -> &mut Resolver<Self>;
}

/// Which address families to ask for, and in which order to return them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AddressOrder {
    /// `A` and `AAAA`; IPv4 addresses first (the default).
    #[default]
    Ipv4First,
    /// `A` and `AAAA`; IPv6 addresses first.
    Ipv6First,
    /// Only `A`.
    Ipv4Only,
    /// Only `AAAA`.
    Ipv6Only,
}

impl AddressOrder {
    fn record_types(self) -> &'static [RecordType] {
        match self {
            AddressOrder::Ipv4First => &[RecordType::A, RecordType::AAAA],
            AddressOrder::Ipv6First => &[RecordType::AAAA, RecordType::A],
            AddressOrder::Ipv4Only => &[RecordType::A],
            AddressOrder::Ipv6Only => &[RecordType::AAAA],
        }
    }

    /// Keep the wanted families, in the wanted order (stable within a family).
    fn arrange(self, addrs: &[IpAddr]) -> Vec<IpAddr> {
        let v4 = addrs.iter().copied().filter(IpAddr::is_ipv4);
        let v6 = addrs.iter().copied().filter(IpAddr::is_ipv6);
        match self {
            AddressOrder::Ipv4First => v4.chain(v6).collect(),
            AddressOrder::Ipv6First => v6.chain(v4).collect(),
            AddressOrder::Ipv4Only => v4.collect(),
            AddressOrder::Ipv6Only => v6.collect(),
        }
    }
}

/// Settings for a [`Resolver`]. `Default` gives the system files and the usual
/// timings.
#[derive(Clone, Debug)]
pub struct ResolverConfig {
    /// Nameservers to ask. Empty (the default): those of [`resolv_conf`](Self::resolv_conf).
    pub nameservers: Vec<SocketAddr>,
    /// Where to read `nameserver` lines (default `/etc/resolv.conf`).
    pub resolv_conf: PathBuf,
    /// The hosts file, consulted before the network (default `/etc/hosts`). A
    /// missing file counts as empty.
    pub hosts: PathBuf,
    /// Which families to query, and their order in results.
    pub order: AddressOrder,
    /// Give up on a lookup after this long (default 5 s).
    pub timeout: Duration,
    /// First retransmission after this long, then twice as long each time,
    /// moving to the next nameserver each time (default 1 s).
    pub retransmit: Duration,
    /// Once one family has addresses, wait at most this long for the other
    /// (default 100 ms): a nameserver that drops `AAAA` queries costs this, not the
    /// whole timeout.
    pub family_grace: Duration,
    /// Cache answers at least this long (default 1 s).
    pub min_ttl: Duration,
    /// Cache answers at most this long (default 1 h).
    pub max_ttl: Duration,
    /// Cache negative answers (NXDOMAIN, no addresses) at most this long
    /// (default 10 s).
    pub negative_ttl: Duration,
    /// At most this many names in the cache (default 1024; 0 disables it). When
    /// full, expired entries go first, then those closest to expiry.
    pub cache_size: usize,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            nameservers: Vec::new(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            hosts: PathBuf::from("/etc/hosts"),
            order: AddressOrder::default(),
            timeout: Duration::from_secs(5),
            retransmit: Duration::from_secs(1),
            family_grace: Duration::from_millis(100),
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(10),
            cache_size: 1024,
        }
    }
}

/// Names one pending [`Resolver::resolve`] call, for [`Resolver::cancel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QueryId(u64);

type Callback<D> = Box<dyn FnOnce(&mut Ctx<'_, D>, io::Result<Vec<IpAddr>>)>;

struct Waiter<D> {
    lookup: u64,
    callback: Callback<D>,
}

/// A failure, kept in a form that can be cached and handed to several waiters.
#[derive(Clone, Debug)]
struct Failure {
    kind: io::ErrorKind,
    message: Rc<str>,
}

impl Failure {
    fn new(kind: io::ErrorKind, name: &str, what: impl fmt::Display) -> Self {
        Failure {
            kind,
            message: format!("dns: {name}: {what}").into(),
        }
    }

    fn to_error(&self) -> io::Error {
        io::Error::new(self.kind, self.message.to_string())
    }
}

type Outcome = Result<Vec<IpAddr>, Failure>;

fn to_io(outcome: &Outcome) -> io::Result<Vec<IpAddr>> {
    outcome.clone().map_err(|f| f.to_error())
}

/// Results to hand to waiters once the resolver is no longer borrowed.
struct Delivery {
    waiters: Vec<QueryId>,
    outcome: Outcome,
}

#[derive(Debug)]
enum SubState {
    Pending,
    /// A usable answer (possibly without addresses: NODATA), with its TTL.
    Answered {
        addrs: Vec<IpAddr>,
        ttl: u32,
    },
    /// The name does not exist, with the negative TTL.
    NxDomain {
        ttl: u32,
    },
    /// Every nameserver failed this question; why (`SERVFAIL`, ...).
    Failed(String),
}

/// One question (`A` or `AAAA`) of a lookup.
struct Sub {
    rtype: RecordType,
    id: u16,
    packet: Vec<u8>,
    state: SubState,
    /// Nameservers that answered SERVFAIL, REFUSED and the like.
    failed_servers: Vec<SocketAddr>,
}

/// One name being looked up, shared by all its waiters.
struct Lookup {
    name: String,
    qname: Name,
    subs: Vec<Sub>,
    waiters: Vec<QueryId>,
    attempt: u32,
    retransmit_timer: Option<TimerId>,
    timeout_timer: Option<TimerId>,
    grace_timer: Option<TimerId>,
}

struct CacheEntry {
    outcome: Outcome,
    expires: Instant,
    seq: u64,
}

/// Names with their answers, bounded, evicting the entries closest to expiry.
struct Cache {
    capacity: usize,
    entries: HashMap<String, CacheEntry>,
    by_expiry: BTreeMap<(Instant, u64), String>,
    seq: u64,
}

impl Cache {
    fn new(capacity: usize) -> Self {
        Cache {
            capacity,
            entries: HashMap::new(),
            by_expiry: BTreeMap::new(),
            seq: 0,
        }
    }

    fn get(&mut self, name: &str, now: Instant) -> Option<Outcome> {
        let entry = self.entries.get(name)?;
        if entry.expires > now {
            return Some(entry.outcome.clone());
        }
        self.remove(name);
        None
    }

    fn remove(&mut self, name: &str) {
        if let Some(old) = self.entries.remove(name) {
            self.by_expiry.remove(&(old.expires, old.seq));
        }
    }

    fn insert(&mut self, name: &str, outcome: Outcome, ttl: Duration, now: Instant) {
        if self.capacity == 0 || ttl.is_zero() {
            return;
        }
        self.remove(name);
        if self.entries.len() >= self.capacity {
            // Expired entries first (all of them), then whatever expires soonest.
            while let Some(entry) = self.by_expiry.first_entry() {
                if entry.key().0 > now && self.entries.len() < self.capacity {
                    break;
                }
                let victim = entry.remove();
                self.entries.remove(&victim);
            }
        }
        let expires = now + ttl;
        self.seq += 1;
        self.by_expiry.insert((expires, self.seq), name.to_string());
        self.entries.insert(
            name.to_string(),
            CacheEntry {
                outcome,
                expires,
                seq: self.seq,
            },
        );
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.by_expiry.clear();
    }
}

/// A lazily opened UDP socket for one address family.
struct Socket {
    sock: Rc<UdpSocket>,
    token: Token,
}

/// What [`Resolver::start`] decided.
enum Start {
    Now(Outcome),
    Waiting(u64),
}

/// The resolver. See the [module documentation](self) for how it works and how
/// to wire it into a loop.
pub struct Resolver<D> {
    config: ResolverConfig,
    nameservers: Vec<SocketAddr>,
    hosts: HashMap<String, Vec<IpAddr>>,
    cache: Cache,
    lookups: HashMap<u64, Lookup>,
    by_name: HashMap<String, u64>,
    /// DNS message id -> (lookup, index of the sub-query).
    by_id: HashMap<u16, (u64, usize)>,
    waiters: HashMap<QueryId, Waiter<D>>,
    next_query: u64,
    next_lookup: u64,
    v4: Option<Socket>,
    v6: Option<Socket>,
    rng: SystemRandom,
    sent: u64,
}

impl<D> fmt::Debug for Resolver<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("nameservers", &self.nameservers)
            .field("hosts", &self.hosts.len())
            .field("cached", &self.cache.entries.len())
            .field("lookups", &self.lookups.len())
            .field("waiters", &self.waiters.len())
            .finish()
    }
}

impl<D> Resolver<D> {
    /// Read the nameservers (unless configured) and the hosts file. Fails if no
    /// nameserver is left: a resolver that can only time out is a configuration
    /// error worth reporting at start-up. Opens no socket: those are opened on the
    /// first query that needs them.
    pub fn new(config: ResolverConfig) -> io::Result<Self> {
        let nameservers = if config.nameservers.is_empty() {
            let text = fs::read_to_string(&config.resolv_conf).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("dns: no nameservers: {}: {e}", config.resolv_conf.display()),
                )
            })?;
            parse_resolv_conf(&text)
        } else {
            config.nameservers.clone()
        };
        if nameservers.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "dns: no nameservers: none configured and no nameserver line in {}",
                    config.resolv_conf.display()
                ),
            ));
        }
        let hosts = read_hosts(&config.hosts)?;
        log::debug!(
            "dns: nameservers {nameservers:?}, {} names in {}",
            hosts.len(),
            config.hosts.display()
        );
        Ok(Resolver {
            cache: Cache::new(config.cache_size),
            config,
            nameservers,
            hosts,
            lookups: HashMap::new(),
            by_name: HashMap::new(),
            by_id: HashMap::new(),
            waiters: HashMap::new(),
            next_query: 0,
            next_lookup: 0,
            v4: None,
            v6: None,
            rng: SystemRandom::new(),
            sent: 0,
        })
    }

    /// The nameservers asked, in order.
    pub fn nameservers(&self) -> &[SocketAddr] {
        &self.nameservers
    }

    /// The settings this resolver runs with.
    pub fn config(&self) -> &ResolverConfig {
        &self.config
    }

    /// How many names are being looked up on the network right now.
    pub fn pending(&self) -> usize {
        self.lookups.len()
    }

    /// How many names are cached (expired entries included until they are noticed).
    pub fn cached(&self) -> usize {
        self.cache.entries.len()
    }

    /// How many DNS query datagrams have been sent, retransmissions included.
    pub fn queries_sent(&self) -> u64 {
        self.sent
    }

    /// Forget every cached answer (the hosts file stays).
    pub fn clear_cache(&mut self) {
        self.cache.clear();
    }

    /// Drop the callback of a pending query without calling it (its connection
    /// closed). True if it was pending. When a lookup's last waiter goes, the
    /// lookup is abandoned: late answers to it are ignored, and its timers find
    /// nothing to do when they fire.
    pub fn cancel(&mut self, id: QueryId) -> bool {
        let Some(waiter) = self.waiters.remove(&id) else {
            return false;
        };
        if let Some(lookup) = self.lookups.get_mut(&waiter.lookup) {
            lookup.waiters.retain(|w| *w != id);
            if lookup.waiters.is_empty() {
                self.forget_lookup(waiter.lookup);
            }
        }
        true
    }

    /// Remove a lookup from every index; returns it so its timers can be cancelled.
    fn forget_lookup(&mut self, lookup_id: u64) -> Option<Lookup> {
        let lookup = self.lookups.remove(&lookup_id)?;
        self.by_name.remove(&lookup.name);
        for sub in &lookup.subs {
            if self.by_id.get(&sub.id).is_some_and(|(l, _)| *l == lookup_id) {
                self.by_id.remove(&sub.id);
            }
        }
        Some(lookup)
    }

    fn random_id(&self) -> io::Result<u16> {
        for _ in 0..64 {
            let mut bytes = [0u8; 2];
            self.rng
                .fill(&mut bytes)
                .map_err(|_| io::Error::other("dns: the system random generator failed"))?;
            let id = u16::from_ne_bytes(bytes);
            if !self.by_id.contains_key(&id) {
                return Ok(id);
            }
        }
        Err(io::Error::other("dns: too many queries in flight"))
    }
}

impl<D: HasResolver> Resolver<D> {
    /// Resolve `name` and hand the addresses (in the configured order, never
    /// empty) or an error to `callback`.
    ///
    /// Returns `None` if the callback has already run (an IP literal, a hosts
    /// entry, a cached answer or an immediate failure), or the id of the pending
    /// query otherwise. Callers asking for a name already being looked up share
    /// its query. Errors carry the name and the cause:
    /// `dns: example.com: NXDOMAIN` ([`NotFound`](io::ErrorKind::NotFound)),
    /// `dns: example.com: timed out after 5 s` ([`TimedOut`](io::ErrorKind::TimedOut)),
    /// `dns: example.com: SERVFAIL`, `dns: example.com: no addresses`, or
    /// `dns: ...: invalid hostname` ([`InvalidInput`](io::ErrorKind::InvalidInput)).
    pub fn resolve<F>(cx: &mut Ctx<'_, D>, name: &str, callback: F) -> Option<QueryId>
    where
        F: FnOnce(&mut Ctx<'_, D>, io::Result<Vec<IpAddr>>) + 'static,
    {
        let resolver = cx.data.resolver();
        match resolver.start(cx.lp, name) {
            Start::Now(outcome) => {
                callback(cx, outcome.map_err(|f| f.to_error()));
                None
            }
            Start::Waiting(lookup_id) => {
                let id = QueryId(resolver.next_query);
                resolver.next_query += 1;
                resolver.waiters.insert(
                    id,
                    Waiter {
                        lookup: lookup_id,
                        callback: Box::new(callback),
                    },
                );
                if let Some(lookup) = resolver.lookups.get_mut(&lookup_id) {
                    lookup.waiters.push(id);
                }
                Some(id)
            }
        }
    }

    /// Close the resolver's sockets and cancel its timers; pending callbacks are
    /// dropped without being called. The resolver stays usable: sockets are
    /// opened again on the next query.
    pub fn close(&mut self, lp: &mut EventLoop<D>) {
        let ids: Vec<u64> = self.lookups.keys().copied().collect();
        for id in ids {
            if let Some(lookup) = self.forget_lookup(id) {
                cancel_timers(lp, &lookup);
            }
        }
        self.waiters.clear();
        for socket in [self.v4.take(), self.v6.take()].into_iter().flatten() {
            if let Err(e) = lp.remove(socket.token) {
                log::debug!("dns: closing socket: {e}");
            }
        }
    }

    fn start(&mut self, lp: &mut EventLoop<D>, name: &str) -> Start {
        let literal = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name);
        if let Ok(ip) = literal.parse::<IpAddr>() {
            return Start::Now(Ok(vec![ip]));
        }
        let Some(key) = normalize(name) else {
            return Start::Now(Err(Failure::new(io::ErrorKind::InvalidInput, name, "invalid hostname")));
        };
        if let Some(addrs) = self.hosts.get(&key) {
            let addrs = self.config.order.arrange(addrs);
            if !addrs.is_empty() {
                return Start::Now(Ok(addrs));
            }
        }
        if let Some(outcome) = self.cache.get(&key, Instant::now()) {
            return Start::Now(outcome);
        }
        if let Some(&lookup_id) = self.by_name.get(&key) {
            return Start::Waiting(lookup_id);
        }
        match self.new_lookup(lp, key.clone()) {
            Ok(lookup_id) => Start::Waiting(lookup_id),
            Err(e) => Start::Now(Err(Failure::new(e.kind(), &key, e))),
        }
    }

    fn new_lookup(&mut self, lp: &mut EventLoop<D>, name: String) -> io::Result<u64> {
        let qname = Name::from_ascii(format!("{name}."))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("invalid hostname: {e}")))?;
        let lookup_id = self.next_lookup;
        self.next_lookup += 1;
        let mut subs: Vec<Sub> = Vec::new();
        for &rtype in self.config.order.record_types() {
            let sub = self.random_id().and_then(|id| {
                let mut message = Message::new();
                message
                    .set_id(id)
                    .set_message_type(MessageType::Query)
                    .set_op_code(OpCode::Query)
                    .set_recursion_desired(true)
                    .add_query(Query::query(qname.clone(), rtype));
                let packet = message
                    .to_vec()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
                Ok(Sub {
                    rtype,
                    id,
                    packet,
                    state: SubState::Pending,
                    failed_servers: Vec::new(),
                })
            });
            match sub {
                Ok(sub) => {
                    // Reserve the id now, so that the next sub-query draws another one.
                    self.by_id.insert(sub.id, (lookup_id, subs.len()));
                    subs.push(sub);
                }
                Err(e) => {
                    for sub in &subs {
                        self.by_id.remove(&sub.id);
                    }
                    return Err(e);
                }
            }
        }
        self.by_name.insert(name.clone(), lookup_id);
        self.lookups.insert(
            lookup_id,
            Lookup {
                name,
                qname,
                subs,
                waiters: Vec::new(),
                attempt: 0,
                retransmit_timer: None,
                timeout_timer: None,
                grace_timer: None,
            },
        );
        let mut sent = Ok(());
        for index in 0..self.lookups[&lookup_id].subs.len() {
            sent = sent.and(self.send_sub(lp, lookup_id, index));
        }
        if let Err(e) = sent {
            self.forget_lookup(lookup_id);
            return Err(e);
        }
        let retransmit = self.config.retransmit;
        let timeout = self.config.timeout;
        let lookup = self.lookups.get_mut(&lookup_id).expect("just inserted");
        lookup.retransmit_timer = Some(lp.add_timer(retransmit, move |cx| Self::on_retransmit(cx, lookup_id)));
        lookup.timeout_timer = Some(lp.add_timer(timeout, move |cx| Self::on_timeout(cx, lookup_id)));
        Ok(lookup_id)
    }

    /// Send (or resend) one sub-query to the nameserver its attempt number picks,
    /// skipping nameservers that failed it, and moving on to the next one if
    /// sending fails. A full socket buffer counts as a lost datagram.
    fn send_sub(&mut self, lp: &mut EventLoop<D>, lookup_id: u64, index: usize) -> io::Result<()> {
        let Some(lookup) = self.lookups.get(&lookup_id) else {
            return Ok(());
        };
        let sub = &lookup.subs[index];
        let n = self.nameservers.len();
        let mut last_error = None;
        for k in 0..n {
            let server = self.nameservers[(lookup.attempt as usize + k) % n];
            if sub.failed_servers.contains(&server) {
                continue;
            }
            let slot = if server.is_ipv4() { &mut self.v4 } else { &mut self.v6 };
            let sock = match open_socket(slot, lp, server) {
                Ok(sock) => sock,
                Err(e) => {
                    last_error = Some(io::Error::new(e.kind(), format!("socket for {server}: {e}")));
                    continue;
                }
            };
            match sock.send_to(&sub.packet, server) {
                Ok(_) => {
                    self.sent += 1;
                    log::trace!("dns: {} {} (id {}) to {server}", lookup.name, sub.rtype, sub.id);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => {
                    log::debug!("dns: {}: send to {server}: {e}", lookup.name);
                    last_error = Some(io::Error::new(e.kind(), format!("send to {server}: {e}")));
                }
            }
        }
        match last_error {
            Some(e) => Err(e),
            // Every nameserver failed this sub-query already; `on_response` settles it.
            None => Ok(()),
        }
    }

    fn on_retransmit(cx: &mut Ctx<'_, D>, lookup_id: u64) {
        let resolver = cx.data.resolver();
        let Some(lookup) = resolver.lookups.get_mut(&lookup_id) else {
            return;
        };
        lookup.attempt += 1;
        let attempt = lookup.attempt;
        let pending: Vec<usize> = (0..lookup.subs.len())
            .filter(|&i| matches!(lookup.subs[i].state, SubState::Pending))
            .collect();
        log::debug!(
            "dns: {}: no answer yet, retransmitting (attempt {})",
            lookup.name,
            attempt + 1
        );
        for index in pending {
            if let Err(e) = resolver.send_sub(cx.lp, lookup_id, index) {
                log::debug!("dns: retransmit: {e}");
            }
        }
        let delay = resolver.config.retransmit.saturating_mul(1u32 << attempt.min(16));
        let timer = cx.lp.add_timer(delay, move |cx| Self::on_retransmit(cx, lookup_id));
        if let Some(lookup) = resolver.lookups.get_mut(&lookup_id) {
            lookup.retransmit_timer = Some(timer);
        }
    }

    fn on_timeout(cx: &mut Ctx<'_, D>, lookup_id: u64) {
        let resolver = cx.data.resolver();
        let Some(lookup) = resolver.lookups.get_mut(&lookup_id) else {
            return;
        };
        lookup.timeout_timer = None;
        let delivery = resolver.settle(cx.lp, lookup_id, true);
        Self::deliver(cx, delivery);
    }

    fn on_grace(cx: &mut Ctx<'_, D>, lookup_id: u64) {
        let resolver = cx.data.resolver();
        let Some(lookup) = resolver.lookups.get_mut(&lookup_id) else {
            return;
        };
        lookup.grace_timer = None;
        let delivery = resolver.settle(cx.lp, lookup_id, true);
        Self::deliver(cx, delivery);
    }

    fn on_readable(cx: &mut Ctx<'_, D>, sock: &UdpSocket, buf: &mut [u8]) -> io::Result<()> {
        for _ in 0..MAX_DATAGRAMS_PER_EVENT {
            let (len, from) = match sock.recv_from(buf) {
                Ok(received) => received,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors and the like: the query they belong to is retransmitted.
                    log::debug!("dns: receive: {e}");
                    continue;
                }
            };
            let delivery = cx.data.resolver().on_datagram(cx.lp, from, &buf[..len]);
            Self::deliver(cx, delivery);
        }
        Ok(())
    }

    /// Hand results to their waiters, each taken out of the table just before its
    /// call, so that a callback cancelling another waiter is honoured.
    fn deliver(cx: &mut Ctx<'_, D>, delivery: Option<Delivery>) {
        let Some(delivery) = delivery else { return };
        for id in delivery.waiters {
            let Some(waiter) = cx.data.resolver().waiters.remove(&id) else {
                continue;
            };
            (waiter.callback)(cx, to_io(&delivery.outcome));
        }
    }

    /// Check one datagram; anything that is not the answer to a question we asked,
    /// from a nameserver we asked, is dropped.
    fn on_datagram(&mut self, lp: &mut EventLoop<D>, from: SocketAddr, data: &[u8]) -> Option<Delivery> {
        if !self.nameservers.contains(&from) {
            log::debug!("dns: ignoring {} bytes from {from}: not a nameserver", data.len());
            return None;
        }
        let message = match Message::from_vec(data) {
            Ok(message) => message,
            Err(e) => {
                log::debug!("dns: ignoring malformed message from {from}: {e}");
                return None;
            }
        };
        let Some(&(lookup_id, index)) = self.by_id.get(&message.id()) else {
            log::debug!("dns: ignoring an answer from {from} with unknown id {}", message.id());
            return None;
        };
        let lookup = self.lookups.get_mut(&lookup_id)?;
        let sub = lookup.subs.get_mut(index)?;
        let matches = message.message_type() == MessageType::Response
            && message.op_code() == OpCode::Query
            && message.queries().len() == 1
            && message.queries()[0].name() == &lookup.qname
            && message.queries()[0].query_type() == sub.rtype
            && message.queries()[0].query_class() == DNSClass::IN;
        if !matches {
            log::debug!(
                "dns: ignoring an answer from {from} (id {}) to another question",
                message.id()
            );
            return None;
        }
        if !matches!(sub.state, SubState::Pending) {
            return None; // a duplicate: the answer to a retransmission
        }
        let code = message.response_code();
        let (addrs, ttl) = match code {
            ResponseCode::NoError => extract_addresses(&message, &lookup.qname, sub.rtype),
            _ => (Vec::new(), 0),
        };
        let problem = match code {
            // Without TCP, a truncated answer is only good for the addresses it has.
            ResponseCode::NoError if message.truncated() && addrs.is_empty() => {
                Some("truncated answer (no TCP fallback)".to_string())
            }
            ResponseCode::NoError | ResponseCode::NXDomain => None,
            _ => Some(rcode_name(code)),
        };
        match problem {
            None if code == ResponseCode::NXDomain => {
                sub.state = SubState::NxDomain {
                    ttl: negative_ttl(&message).unwrap_or(u32::MAX),
                };
            }
            None => {
                let ttl = if addrs.is_empty() {
                    negative_ttl(&message).unwrap_or(u32::MAX)
                } else {
                    ttl
                };
                sub.state = SubState::Answered { addrs, ttl };
            }
            Some(problem) => {
                log::debug!("dns: {}: {problem} from {from}", lookup.name);
                if !sub.failed_servers.contains(&from) {
                    sub.failed_servers.push(from);
                }
                if self.nameservers.iter().all(|ns| sub.failed_servers.contains(ns)) {
                    sub.state = SubState::Failed(problem);
                } else {
                    // Ask another nameserver right away rather than at the next retransmission.
                    if let Err(e) = self.send_sub(lp, lookup_id, index) {
                        log::debug!("dns: {e}");
                    }
                    return None;
                }
            }
        }
        self.settle(lp, lookup_id, false)
    }

    /// Finish the lookup if its answers allow (or if `force`, with what there is),
    /// or arm the grace timer when one family has addresses and the other is late.
    fn settle(&mut self, lp: &mut EventLoop<D>, lookup_id: u64, force: bool) -> Option<Delivery> {
        let lookup = self.lookups.get_mut(&lookup_id)?;
        let config = &self.config;
        let clamp = |ttl: u32, max: Duration| Duration::from_secs(ttl.into()).min(max).max(config.min_ttl);
        let name = lookup.name.clone();
        let mut addrs = Vec::new();
        let mut pending = false;
        let mut ttl = u32::MAX;
        let mut failure = None;
        for sub in &lookup.subs {
            match &sub.state {
                SubState::Pending => pending = true,
                SubState::Answered { addrs: found, ttl: t } => {
                    addrs.extend_from_slice(found);
                    ttl = ttl.min(*t);
                }
                SubState::NxDomain { ttl: t } => {
                    let outcome = Err(Failure::new(io::ErrorKind::NotFound, &name, "NXDOMAIN"));
                    let ttl = clamp(*t, config.negative_ttl);
                    return Some(self.finish(lp, lookup_id, outcome, ttl));
                }
                SubState::Failed(problem) => failure = Some(problem.clone()),
            }
        }
        let (outcome, cache_ttl) = if !addrs.is_empty() {
            if pending && !force {
                if lookup.grace_timer.is_none() {
                    lookup.grace_timer =
                        Some(lp.add_timer(config.family_grace, move |cx| Self::on_grace(cx, lookup_id)));
                }
                return None;
            }
            let mut cache_ttl = clamp(ttl, config.max_ttl);
            if pending {
                // A family is missing (cut short by the grace period or the timeout):
                // keep this only briefly, so that the next lookup may find it.
                cache_ttl = cache_ttl.min(config.negative_ttl.max(config.min_ttl));
            }
            (Ok(config.order.arrange(&addrs)), cache_ttl)
        } else if pending && !force {
            return None;
        } else if pending {
            let after = fmt_duration(config.timeout);
            let what = match failure {
                Some(problem) => format!("timed out after {after} (and {problem})"),
                None => format!("timed out after {after}"),
            };
            (Err(Failure::new(io::ErrorKind::TimedOut, &name, what)), Duration::ZERO)
        } else if let Some(problem) = failure {
            (Err(Failure::new(io::ErrorKind::Other, &name, problem)), Duration::ZERO)
        } else {
            let failure = Failure::new(io::ErrorKind::NotFound, &name, "no addresses");
            (Err(failure), clamp(ttl, config.negative_ttl))
        };
        Some(self.finish(lp, lookup_id, outcome, cache_ttl))
    }

    fn finish(&mut self, lp: &mut EventLoop<D>, lookup_id: u64, outcome: Outcome, ttl: Duration) -> Delivery {
        let lookup = self.forget_lookup(lookup_id).expect("finishing a live lookup");
        cancel_timers(lp, &lookup);
        match &outcome {
            Ok(addrs) => log::debug!("dns: {}: {addrs:?} (cached {ttl:?})", lookup.name),
            Err(failure) => log::debug!("{} (cached {ttl:?})", failure.message),
        }
        self.cache.insert(&lookup.name, outcome.clone(), ttl, Instant::now());
        Delivery {
            waiters: lookup.waiters,
            outcome,
        }
    }
}

fn cancel_timers<D: 'static>(lp: &mut EventLoop<D>, lookup: &Lookup) {
    for timer in [lookup.retransmit_timer, lookup.timeout_timer, lookup.grace_timer]
        .into_iter()
        .flatten()
    {
        lp.cancel_timer(timer);
    }
}

/// The socket for `server`'s family, opened and registered on first use.
fn open_socket<D: HasResolver>(
    slot: &mut Option<Socket>,
    lp: &mut EventLoop<D>,
    server: SocketAddr,
) -> io::Result<Rc<UdpSocket>> {
    if let Some(socket) = slot {
        return Ok(socket.sock.clone());
    }
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = Rc::new(UdpSocket::bind(bind)?);
    sock.set_nonblocking(true)?;
    let mut buf = vec![0u8; RECV_BUF_LEN];
    let token = lp.add(
        sock.clone(),
        POLL_IN,
        move |cx: &mut Ctx<'_, D>, sock: &mut Rc<UdpSocket>, _: Token, _: Events| {
            Resolver::<D>::on_readable(cx, sock, &mut buf)
        },
    )?;
    log::debug!("dns: opened {} for queries", sock.local_addr()?);
    *slot = Some(Socket {
        sock: sock.clone(),
        token,
    });
    Ok(sock)
}

/// The addresses of type `rtype` that `qname` leads to (following CNAMEs within
/// the answer section), and the smallest TTL on the way.
fn extract_addresses(message: &Message, qname: &Name, rtype: RecordType) -> (Vec<IpAddr>, u32) {
    let answers = message.answers();
    let mut names: Vec<&Name> = vec![qname];
    let mut ttl = u32::MAX;
    for _ in 0..MAX_CNAME_HOPS {
        let mut grown = false;
        for record in answers {
            if let RData::CNAME(target) = record.data()
                && names.contains(&record.name())
                && !names.contains(&&target.0)
            {
                names.push(&target.0);
                ttl = ttl.min(record.ttl());
                grown = true;
            }
        }
        if !grown {
            break;
        }
    }
    let mut addrs = Vec::new();
    for record in answers.iter().filter(|r| names.contains(&r.name())) {
        let addr = match (rtype, record.data()) {
            (RecordType::A, RData::A(a)) => IpAddr::V4(a.0),
            (RecordType::AAAA, RData::AAAA(aaaa)) => IpAddr::V6(aaaa.0),
            _ => continue,
        };
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
        ttl = ttl.min(record.ttl());
    }
    (addrs, ttl)
}

/// The negative-caching TTL of an answer without addresses (RFC 2308): the SOA
/// record's own TTL or its MINIMUM field, whichever is smaller.
fn negative_ttl(message: &Message) -> Option<u32> {
    message
        .name_servers()
        .iter()
        .find_map(|record: &Record| match record.data() {
            RData::SOA(soa) => Some(record.ttl().min(soa.minimum())),
            _ => None,
        })
}

fn rcode_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => format!("response code {}", u16::from(other)),
    }
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// The cache and hosts key for a host name: lower case, without the trailing dot;
/// `None` unless it is a valid name (labels of 1 to 63 letters, digits, `-` and
/// `_`, not starting or ending with `-`; 253 characters at most).
fn normalize(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return None;
    }
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    name.split('.').all(valid_label).then(|| name.to_ascii_lowercase())
}

/// An address as written in `resolv.conf` or `hosts`: IPv4, IPv6, or IPv6 with a
/// numeric zone (`fe80::1%2`). Named zones are not supported.
fn parse_addr(text: &str) -> Option<(IpAddr, u32)> {
    match text.split_once('%') {
        Some((addr, zone)) => Some((IpAddr::V6(addr.parse().ok()?), zone.parse().ok()?)),
        None => Some((text.parse().ok()?, 0)),
    }
}

/// The `nameserver` lines of a `resolv.conf`, on port 53.
fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut servers = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(word) = words.next() else { continue };
        let server = match parse_addr(word) {
            Some((IpAddr::V6(ip), scope)) => SocketAddr::V6(SocketAddrV6::new(ip, DNS_PORT, 0, scope)),
            Some((ip, _)) => SocketAddr::new(ip, DNS_PORT),
            None => {
                log::warn!("dns: resolv.conf: ignoring nameserver {word:?}");
                continue;
            }
        };
        if !servers.contains(&server) {
            servers.push(server);
        }
    }
    servers
}

/// A hosts file: `address name [aliases...]` lines, `#` comments. Names are keyed
/// as [`normalize`] does; each keeps its addresses in file order.
fn parse_hosts(text: &str) -> HashMap<String, Vec<IpAddr>> {
    let mut hosts: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        // A zone is dropped: a hosts entry names the address, not the interface.
        let Some((ip, _)) = parse_addr(first) else { continue };
        for name in words {
            let Some(key) = normalize(name) else { continue };
            let addrs = hosts.entry(key).or_default();
            if !addrs.contains(&ip) {
                addrs.push(ip);
            }
        }
    }
    hosts
}

fn read_hosts(path: &Path) -> io::Result<HashMap<String, Vec<IpAddr>>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(parse_hosts(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            log::debug!("dns: no hosts file at {}", path.display());
            Ok(HashMap::new())
        }
        Err(e) => Err(io::Error::new(e.kind(), format!("dns: {}: {e}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA};
    use std::sync::atomic::{AtomicUsize, Ordering};

    type Res = Result<Vec<IpAddr>, (io::ErrorKind, String)>;

    const EVIL_V4: Ipv4Addr = Ipv4Addr::new(6, 6, 6, 6);
    const EVIL_V6: Ipv6Addr = Ipv6Addr::new(6, 6, 6, 6, 6, 6, 6, 6);

    /// What the fake server knows about one name.
    #[derive(Clone, Default)]
    struct Zone {
        a: Vec<Ipv4Addr>,
        aaaa: Vec<Ipv6Addr>,
        ttl: u32,
        rcode: Option<ResponseCode>,
        /// Answer with a CNAME to this name, then the addresses under it.
        cname: Option<&'static str>,
        /// Never answer AAAA questions (a broken middlebox).
        drop_aaaa: bool,
        /// Answer with the TC bit and no records.
        truncate: bool,
    }

    /// The fake nameserver's state; it runs on the test's loop.
    #[derive(Default)]
    struct Server {
        zones: HashMap<String, Zone>,
        /// Every question received, by any fake server.
        queries: Vec<(String, RecordType)>,
        /// Drop this many queries before answering.
        drop_next: usize,
        /// Never answer.
        silent: bool,
        /// Precede each answer with junk and near misses.
        hostile: bool,
        /// Precede each answer with this many mutated copies of it.
        mutants: usize,
        spoofer: Option<UdpSocket>,
        rng_state: u64,
    }

    struct Data {
        resolver: Resolver<Data>,
        server: Server,
        results: Vec<(String, Res)>,
        /// Cancel this query from the next callback.
        cancel_from_callback: Option<QueryId>,
    }

    impl HasResolver for Data {
        fn resolver(&mut self) -> &mut Resolver<Self> {
            &mut self.resolver
        }
    }

    struct TempFile(PathBuf);

    impl TempFile {
        fn new(content: &str) -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("ssproxy-dns-test-{}-{n}", std::process::id()));
            fs::write(&path, content).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = fs::remove_file(&self.0);
        }
    }

    struct Harness {
        lp: EventLoop<Data>,
        data: Data,
        server: SocketAddr,
        _hosts: TempFile,
    }

    fn fast_config() -> ResolverConfig {
        ResolverConfig {
            timeout: Duration::from_millis(1500),
            retransmit: Duration::from_millis(50),
            family_grace: Duration::from_millis(50),
            min_ttl: Duration::ZERO,
            max_ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(10),
            cache_size: 16,
            resolv_conf: PathBuf::from("/nonexistent/resolv.conf"),
            ..ResolverConfig::default()
        }
    }

    fn zone(a: &[&str], aaaa: &[&str], ttl: u32) -> Zone {
        Zone {
            a: a.iter().map(|s| s.parse().unwrap()).collect(),
            aaaa: aaaa.iter().map(|s| s.parse().unwrap()).collect(),
            ttl,
            ..Zone::default()
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    impl Harness {
        fn new(hosts: &str, configure: impl FnOnce(&mut ResolverConfig)) -> Self {
            Self::with_servers(hosts, &[], configure)
        }

        /// `extra`: nameservers to list before the fake server.
        fn with_servers(hosts: &str, extra: &[SocketAddr], configure: impl FnOnce(&mut ResolverConfig)) -> Self {
            let hosts = TempFile::new(hosts);
            let mut lp: EventLoop<Data> = EventLoop::new().unwrap();
            let server = add_server(&mut lp, false);
            let mut config = fast_config();
            config.hosts = hosts.0.clone();
            config.nameservers = extra.iter().copied().chain([server]).collect();
            configure(&mut config);
            let data = Data {
                resolver: Resolver::new(config).unwrap(),
                server: Server {
                    rng_state: 0x9e37_79b9_7f4a_7c15,
                    ..Server::default()
                },
                results: Vec::new(),
                cancel_from_callback: None,
            };
            Harness {
                lp,
                data,
                server,
                _hosts: hosts,
            }
        }

        fn zone(&mut self, name: &str, zone: Zone) {
            self.data.server.zones.insert(name.to_string(), zone);
        }

        fn resolve(&mut self, name: &str) -> Option<QueryId> {
            let cx = &mut Ctx {
                lp: &mut self.lp,
                data: &mut self.data,
            };
            let key = name.to_string();
            Resolver::resolve(cx, name, move |cx: &mut Ctx<'_, Data>, result| {
                if let Some(other) = cx.data.cancel_from_callback.take() {
                    cx.data.resolver.cancel(other);
                }
                cx.data
                    .results
                    .push((key, result.map_err(|e| (e.kind(), e.to_string()))));
            })
        }

        fn run_until(&mut self, limit: Duration, done: impl Fn(&Data) -> bool) -> bool {
            let end = Instant::now() + limit;
            while !done(&self.data) {
                if Instant::now() > end {
                    return false;
                }
                self.lp
                    .run_once(Some(Duration::from_millis(5)), &mut self.data)
                    .unwrap();
            }
            true
        }

        fn run_for(&mut self, time: Duration) {
            let end = Instant::now() + time;
            self.run_until(time + Duration::from_secs(1), |_| Instant::now() >= end);
        }

        /// Resolve and wait for the answer.
        fn lookup(&mut self, name: &str) -> Res {
            let before = self.data.results.len();
            self.resolve(name);
            assert!(
                self.run_until(Duration::from_secs(5), |d| d.results.len() > before),
                "no answer for {name}"
            );
            self.data.results.last().unwrap().1.clone()
        }

        fn queries(&self) -> usize {
            self.data.server.queries.len()
        }
    }

    /// Register a fake nameserver on the loop; `servfail`: it answers every question so.
    fn add_server(lp: &mut EventLoop<Data>, servfail: bool) -> SocketAddr {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        let addr = sock.local_addr().unwrap();
        lp.add(
            sock,
            POLL_IN,
            move |cx: &mut Ctx<'_, Data>, sock: &mut UdpSocket, _: Token, _: Events| serve(cx, sock, servfail),
        )
        .unwrap();
        addr
    }

    fn serve(cx: &mut Ctx<'_, Data>, sock: &mut UdpSocket, servfail: bool) -> io::Result<()> {
        let mut buf = [0u8; 1500];
        loop {
            let (len, from) = match sock.recv_from(&mut buf) {
                Ok(received) => received,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            };
            let query = Message::from_vec(&buf[..len]).expect("the resolver sends valid queries");
            assert_eq!(query.queries().len(), 1);
            assert!(query.recursion_desired());
            let question = query.queries()[0].clone();
            let name = question.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
            let server = &mut cx.data.server;
            server.queries.push((name.clone(), question.query_type()));
            if server.silent {
                continue;
            }
            if server.drop_next > 0 {
                server.drop_next -= 1;
                continue;
            }
            let zone = server.zones.get(&name).cloned();
            if question.query_type() == RecordType::AAAA && zone.as_ref().is_some_and(|z| z.drop_aaaa) {
                continue;
            }
            let mut reply = answer(&query, zone.as_ref());
            if servfail {
                reply.take_answers();
                reply.set_response_code(ResponseCode::ServFail);
            }
            let bytes = reply.to_vec().unwrap();
            if server.hostile {
                for junk in near_misses(&query, &reply) {
                    sock.send_to(&junk, from)?;
                }
                if let Some(spoofer) = &server.spoofer {
                    // A perfect answer, but from an address that is not a nameserver.
                    spoofer.send_to(&evil(&reply).to_vec().unwrap(), from)?;
                }
            }
            for _ in 0..server.mutants {
                let mut mutant = bytes.clone();
                for _ in 0..1 + xorshift(&mut server.rng_state) % 4 {
                    let at = (xorshift(&mut server.rng_state) as usize) % mutant.len();
                    mutant[at] = xorshift(&mut server.rng_state) as u8;
                }
                let cut = (xorshift(&mut server.rng_state) as usize) % (mutant.len() + 1);
                mutant.truncate(cut.max(mutant.len() / 2));
                sock.send_to(&mutant, from)?;
            }
            sock.send_to(&bytes, from)?;
        }
    }

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    fn answer(query: &Message, zone: Option<&Zone>) -> Message {
        let question = &query.queries()[0];
        let mut reply = Message::new();
        reply
            .set_id(query.id())
            .set_message_type(MessageType::Response)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .set_recursion_available(true)
            .add_query(question.clone());
        let Some(zone) = zone else {
            reply.set_response_code(ResponseCode::NXDomain);
            reply.add_name_server(soa_record(question.name(), 300, 2));
            return reply;
        };
        if let Some(code) = zone.rcode {
            reply.set_response_code(code);
            return reply;
        }
        if zone.truncate {
            reply.set_truncated(true);
            return reply;
        }
        let mut owner = question.name().clone();
        if let Some(target) = zone.cname {
            let target = Name::from_ascii(format!("{target}.")).unwrap();
            reply.add_answer(Record::from_rdata(owner, zone.ttl, RData::CNAME(CNAME(target.clone()))));
            owner = target;
        }
        match question.query_type() {
            RecordType::A => {
                for &ip in &zone.a {
                    reply.add_answer(Record::from_rdata(owner.clone(), zone.ttl, RData::A(A(ip))));
                }
            }
            RecordType::AAAA => {
                for &ip in &zone.aaaa {
                    reply.add_answer(Record::from_rdata(owner.clone(), zone.ttl, RData::AAAA(AAAA(ip))));
                }
            }
            _ => {}
        }
        if reply.answers().is_empty() {
            reply.add_name_server(soa_record(question.name(), 300, 2));
        }
        reply
    }

    fn soa_record(name: &Name, ttl: u32, minimum: u32) -> Record {
        let soa = SOA::new(name.clone(), name.clone(), 1, 3600, 600, 86400, minimum);
        Record::from_rdata(name.clone(), ttl, RData::SOA(soa))
    }

    /// The reply with every address replaced by an attacker's.
    fn evil(reply: &Message) -> Message {
        let mut evil = reply.clone();
        evil.set_response_code(ResponseCode::NoError);
        evil.take_answers();
        let question = &reply.queries()[0];
        let rdata = match question.query_type() {
            RecordType::AAAA => RData::AAAA(AAAA(EVIL_V6)),
            _ => RData::A(A(EVIL_V4)),
        };
        evil.add_answer(Record::from_rdata(question.name().clone(), 3600, rdata));
        evil
    }

    /// Datagrams that must all be ignored.
    fn near_misses(query: &Message, reply: &Message) -> Vec<Vec<u8>> {
        let question = &query.queries()[0];
        let good = reply.to_vec().unwrap();
        let mut out = vec![Vec::new(), vec![0xff; 7], good[..good.len().min(20)].to_vec()];
        // Wrong id.
        let mut m = evil(reply);
        m.set_id(query.id().wrapping_add(1));
        out.push(m.to_vec().unwrap());
        // Right id, another name.
        let mut m = evil(reply);
        let other = Name::from_ascii("evil.example.").unwrap();
        m.queries_mut()[0].set_name(other.clone());
        m.take_answers();
        m.add_answer(Record::from_rdata(other, 3600, RData::A(A(EVIL_V4))));
        out.push(m.to_vec().unwrap());
        // Right id and name, the other type.
        let mut m = evil(reply);
        let other_type = if question.query_type() == RecordType::A {
            RecordType::AAAA
        } else {
            RecordType::A
        };
        m.queries_mut()[0].set_query_type(other_type);
        out.push(m.to_vec().unwrap());
        // A query, not a response.
        let mut m = evil(reply);
        m.set_message_type(MessageType::Query);
        out.push(m.to_vec().unwrap());
        // Two questions.
        let mut m = evil(reply);
        m.add_query(question.clone());
        out.push(m.to_vec().unwrap());
        // The right header, garbage after it.
        let mut m = good[..12].to_vec();
        m.extend_from_slice(&[0xc0, 0x0c, 0xc0, 0x0c, 0xff, 0xff, 0x3f]);
        out.push(m);
        out
    }

    #[test]
    fn answer_delivered_in_configured_order() {
        let mut h = Harness::new("", |_| {});
        h.zone(
            "www.example.com",
            zone(&["192.0.2.1", "192.0.2.2"], &["2001:db8::1"], 60),
        );
        let start = Instant::now();
        assert_eq!(
            h.lookup("WWW.Example.com."),
            Ok(ips(&["192.0.2.1", "192.0.2.2", "2001:db8::1"]))
        );
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "answered without waiting for a timer"
        );
        let mut types: Vec<RecordType> = h.data.server.queries.iter().map(|q| q.1).collect();
        types.sort();
        assert_eq!(types, [RecordType::A, RecordType::AAAA]);
        assert_eq!(h.data.resolver.pending(), 0);

        let mut h = Harness::new("", |c| c.order = AddressOrder::Ipv6First);
        h.zone(
            "www.example.com",
            zone(&["192.0.2.1"], &["2001:db8::1", "2001:db8::2"], 60),
        );
        assert_eq!(
            h.lookup("www.example.com"),
            Ok(ips(&["2001:db8::1", "2001:db8::2", "192.0.2.1"]))
        );

        let mut h = Harness::new("", |c| c.order = AddressOrder::Ipv4Only);
        h.zone("www.example.com", zone(&["192.0.2.1"], &["2001:db8::1"], 60));
        assert_eq!(h.lookup("www.example.com"), Ok(ips(&["192.0.2.1"])));
        assert_eq!(h.data.server.queries, [("www.example.com".to_string(), RecordType::A)]);
    }

    #[test]
    fn cache_hit_sends_no_query() {
        let mut h = Harness::new("", |_| {});
        h.zone("www.example.com", zone(&["192.0.2.1"], &["2001:db8::1"], 60));
        h.lookup("www.example.com").unwrap();
        assert_eq!(h.queries(), 2);
        assert_eq!(h.resolve("www.EXAMPLE.com"), None, "answered from the cache, at once");
        assert_eq!(h.data.results.len(), 2);
        assert_eq!(h.data.results[1].1, Ok(ips(&["192.0.2.1", "2001:db8::1"])));
        h.run_for(Duration::from_millis(30));
        assert_eq!(h.queries(), 2);
        assert_eq!(h.data.resolver.queries_sent(), 2);
        assert_eq!(h.data.resolver.cached(), 1);
        h.data.resolver.clear_cache();
        assert!(h.resolve("www.example.com").is_some());
    }

    #[test]
    fn ttl_expiry_requeries() {
        let mut h = Harness::new("", |_| {});
        h.zone("short.example", zone(&["192.0.2.1"], &["2001:db8::1"], 1));
        h.lookup("short.example").unwrap();
        h.run_for(Duration::from_millis(500));
        assert_eq!(h.resolve("short.example"), None, "still cached at half the TTL");
        assert_eq!(h.queries(), 2);
        h.run_for(Duration::from_millis(600));
        assert!(h.resolve("short.example").is_some(), "expired after the TTL");
        assert!(h.run_until(Duration::from_secs(2), |d| d.results.len() == 3));
        assert_eq!(h.queries(), 4);
    }

    #[test]
    fn ttls_are_clamped() {
        let mut h = Harness::new("", |c| c.max_ttl = Duration::from_millis(100));
        h.zone("long.example", zone(&["192.0.2.1"], &[], 86400));
        h.lookup("long.example").unwrap();
        assert_eq!(h.resolve("long.example"), None);
        h.run_for(Duration::from_millis(150));
        assert!(h.resolve("long.example").is_some(), "the maximum TTL caps a long one");

        let mut h = Harness::new("", |c| c.min_ttl = Duration::from_secs(60));
        h.zone("zero.example", zone(&["192.0.2.1"], &[], 0));
        h.lookup("zero.example").unwrap();
        assert_eq!(
            h.resolve("zero.example"),
            None,
            "the minimum TTL keeps a zero TTL a while"
        );
        assert_eq!(h.queries(), 2);
    }

    #[test]
    fn cache_is_bounded() {
        let mut h = Harness::new("", |c| c.cache_size = 3);
        for i in 0..6 {
            let name = format!("n{i}.example");
            h.zone(&name, zone(&["192.0.2.1"], &[], 60 + i));
            h.lookup(&name).unwrap();
            assert!(h.data.resolver.cached() <= 3);
        }
        // The ones closest to expiry went first.
        assert_eq!(h.resolve("n5.example"), None);
        assert!(h.resolve("n0.example").is_some());
    }

    #[test]
    fn retransmits_after_a_lost_query() {
        let mut h = Harness::new("", |_| {});
        h.zone("lossy.example", zone(&["192.0.2.1"], &["2001:db8::1"], 60));
        h.data.server.drop_next = 2;
        let start = Instant::now();
        assert_eq!(h.lookup("lossy.example"), Ok(ips(&["192.0.2.1", "2001:db8::1"])));
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert_eq!(h.queries(), 4);
    }

    #[test]
    fn retransmission_rotates_nameservers() {
        let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
        dead.set_nonblocking(true).unwrap();
        let mut h = Harness::with_servers("", &[dead.local_addr().unwrap()], |_| {});
        h.zone("www.example.com", zone(&["192.0.2.1"], &["2001:db8::1"], 60));
        assert_eq!(h.lookup("www.example.com"), Ok(ips(&["192.0.2.1", "2001:db8::1"])));
        assert_eq!(h.queries(), 2, "the live server got only the retransmissions");
        let mut buf = [0; 512];
        let mut dead_got = 0;
        while dead.recv_from(&mut buf).is_ok() {
            dead_got += 1;
        }
        assert_eq!(dead_got, 2, "the first nameserver got the first attempt");
    }

    #[test]
    fn times_out_when_nobody_answers() {
        let mut h = Harness::new("", |c| c.timeout = Duration::from_millis(300));
        h.data.server.silent = true;
        let start = Instant::now();
        let err = h.lookup("slow.example").unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert_eq!(
            err,
            (
                io::ErrorKind::TimedOut,
                "dns: slow.example: timed out after 300 ms".to_string()
            )
        );
        assert!(h.queries() >= 4, "retransmitted before giving up: {}", h.queries());
        assert_eq!(h.data.resolver.pending(), 0);
        assert!(h.resolve("slow.example").is_some(), "timeouts are not cached");
        assert_eq!(fmt_duration(Duration::from_secs(5)), "5 s");
    }

    #[test]
    fn nxdomain_is_an_error_and_cached_briefly() {
        let mut h = Harness::new("", |c| c.negative_ttl = Duration::from_millis(100));
        let err = h.lookup("nope.example").unwrap_err();
        assert_eq!(
            err,
            (io::ErrorKind::NotFound, "dns: nope.example: NXDOMAIN".to_string())
        );
        let queries = h.queries();
        assert_eq!(h.resolve("nope.example"), None, "negative answers are cached");
        assert_eq!(h.data.results.last().unwrap().1, Err(err));
        h.run_for(Duration::from_millis(150));
        assert!(h.resolve("nope.example").is_some(), "but briefly");
        assert!(h.run_until(Duration::from_secs(2), |d| d.results.len() == 3));
        assert!(h.queries() > queries);
    }

    #[test]
    fn servfail_fails_over_then_fails() {
        let mut h = Harness::new("", |_| {});
        h.zone(
            "broken.example",
            Zone {
                rcode: Some(ResponseCode::ServFail),
                ..zone(&["192.0.2.1"], &[], 60)
            },
        );
        let start = Instant::now();
        let err = h.lookup("broken.example").unwrap_err();
        assert_eq!(err, (io::ErrorKind::Other, "dns: broken.example: SERVFAIL".to_string()));
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "no need to wait for the timeout"
        );
        assert!(h.resolve("broken.example").is_some(), "server failures are not cached");

        // A nameserver that fails everything, listed first: the next one is asked at once.
        let mut lp_servers = Harness::new("", |_| {});
        let failing = add_server(&mut lp_servers.lp, true);
        let good = lp_servers.server;
        lp_servers.data.resolver.nameservers = vec![failing, good];
        lp_servers.data.resolver.config.retransmit = Duration::from_secs(10);
        lp_servers.zone("www.example.com", zone(&["192.0.2.1"], &["2001:db8::1"], 60));
        let start = Instant::now();
        assert_eq!(
            lp_servers.lookup("www.example.com"),
            Ok(ips(&["192.0.2.1", "2001:db8::1"]))
        );
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(lp_servers.queries(), 4);
    }

    #[test]
    fn missing_family_waits_only_the_grace_period() {
        let mut h = Harness::new("", |c| {
            c.timeout = Duration::from_secs(3);
            c.negative_ttl = Duration::from_millis(100);
        });
        h.zone(
            "v4only.example",
            Zone {
                drop_aaaa: true,
                ..zone(&["192.0.2.1"], &["2001:db8::1"], 60)
            },
        );
        let start = Instant::now();
        assert_eq!(h.lookup("v4only.example"), Ok(ips(&["192.0.2.1"])));
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(h.resolve("v4only.example"), None, "cached");
        h.run_for(Duration::from_millis(150));
        assert!(
            h.resolve("v4only.example").is_some(),
            "a partial answer is cached only briefly despite its TTL of 60 s"
        );

        // An empty answer (NODATA) for one family needs no wait at all.
        let mut h = Harness::new("", |c| c.family_grace = Duration::from_secs(3));
        h.zone("nodata.example", zone(&[], &["2001:db8::1"], 60));
        let start = Instant::now();
        assert_eq!(h.lookup("nodata.example"), Ok(ips(&["2001:db8::1"])));
        assert!(start.elapsed() < Duration::from_secs(1));

        // No addresses at all: an error.
        h.zone("empty.example", zone(&[], &[], 60));
        assert_eq!(
            h.lookup("empty.example"),
            Err((io::ErrorKind::NotFound, "dns: empty.example: no addresses".into()))
        );
    }

    #[test]
    fn follows_cnames() {
        let mut h = Harness::new("", |_| {});
        h.zone(
            "alias.example",
            Zone {
                cname: Some("target.example"),
                ..zone(&["192.0.2.7"], &["2001:db8::7"], 60)
            },
        );
        assert_eq!(h.lookup("alias.example"), Ok(ips(&["192.0.2.7", "2001:db8::7"])));
    }

    #[test]
    fn hostile_and_mismatched_responses_are_ignored() {
        let mut h = Harness::new("", |_| {});
        let spoofer = UdpSocket::bind("127.0.0.1:0").unwrap();
        h.data.server.spoofer = Some(spoofer);
        h.data.server.hostile = true;
        h.zone("www.example.com", zone(&["192.0.2.1"], &["2001:db8::1"], 60));
        assert_eq!(h.lookup("www.example.com"), Ok(ips(&["192.0.2.1", "2001:db8::1"])));
        h.run_for(Duration::from_millis(30));
        assert_eq!(h.data.results.len(), 1);
        // Late junk for a finished lookup is ignored too, and the resolver still works.
        h.zone("two.example", zone(&["192.0.2.2"], &[], 60));
        assert_eq!(h.lookup("two.example"), Ok(ips(&["192.0.2.2"])));
    }

    #[test]
    fn mutated_responses_never_panic() {
        let mut h = Harness::new("", |_| {});
        h.data.server.mutants = 50;
        for i in 0..20 {
            let name = format!("m{i}.example");
            h.zone(
                &name,
                Zone {
                    cname: Some("t.example"),
                    ..zone(&["192.0.2.1"], &["2001:db8::1"], 60)
                },
            );
            // A mutant may survive as a different but well-formed answer; any result will do.
            let _ = h.lookup(&name);
        }
    }

    #[test]
    fn hosts_entries_win() {
        let hosts = "# comment line\n127.0.0.1 localhost\n\
                     192.0.2.50  www.example.com\tAlias.Example. # trailing comment\n\
                     2001:db8::50 www.example.com\n\n   ::1 ip6-localhost\nnot-an-address foo.example\n";
        let mut h = Harness::new(hosts, |_| {});
        h.zone("www.example.com", zone(&["192.0.2.1"], &["2001:db8::1"], 60));
        assert_eq!(h.resolve("www.example.com"), None);
        assert_eq!(h.resolve("alias.example"), None);
        assert_eq!(h.resolve("ip6-localhost"), None);
        let results: Vec<Res> = h.data.results.iter().map(|r| r.1.clone()).collect();
        assert_eq!(
            results,
            [
                Ok(ips(&["192.0.2.50", "2001:db8::50"])),
                Ok(ips(&["192.0.2.50"])),
                Ok(ips(&["::1"]))
            ]
        );
        assert_eq!(h.lp.len(), 1, "no resolver socket was opened");
        h.run_for(Duration::from_millis(20));
        assert_eq!(h.queries(), 0);
        // Only-IPv6 lookups skip a name the hosts file knows only by IPv4.
        let mut h = Harness::new(hosts, |c| c.order = AddressOrder::Ipv6Only);
        h.zone("alias.example", zone(&[], &["2001:db8::1"], 60));
        assert_eq!(h.lookup("alias.example"), Ok(ips(&["2001:db8::1"])));
    }

    #[test]
    fn parses_hosts_files() {
        let hosts = parse_hosts(
            "127.0.0.1\tlocalhost localhost.localdomain\n#192.0.2.1 commented.example\n\
             192.0.2.2 multi.example # c\n192.0.2.3 MULTI.example.\nfe80::1%2 link.example\n\
             192.0.2.2 multi.example\n999.1.1.1 bad.example\n192.0.2.4\n192.0.2.5 under_score.example -bad.example\n",
        );
        assert_eq!(hosts["localhost"], ips(&["127.0.0.1"]));
        assert_eq!(hosts["localhost.localdomain"], ips(&["127.0.0.1"]));
        assert_eq!(hosts["multi.example"], ips(&["192.0.2.2", "192.0.2.3"]));
        assert_eq!(hosts["link.example"], ips(&["fe80::1"]));
        assert_eq!(hosts["under_score.example"], ips(&["192.0.2.5"]));
        assert!(!hosts.contains_key("commented.example"));
        assert!(!hosts.contains_key("bad.example"));
        assert!(!hosts.contains_key("-bad.example"));
        assert_eq!(hosts.len(), 5);
    }

    #[test]
    fn ip_literals_need_no_query() {
        let mut h = Harness::new("", |_| {});
        for (name, ip) in [
            ("192.0.2.9", "192.0.2.9"),
            ("2001:db8::9", "2001:db8::9"),
            ("[::1]", "::1"),
        ] {
            assert_eq!(h.resolve(name), None);
            assert_eq!(h.data.results.last().unwrap().1, Ok(ips(&[ip])));
        }
        assert_eq!(h.lp.len(), 1, "no resolver socket was opened");
        h.run_for(Duration::from_millis(20));
        assert_eq!(h.queries(), 0);
    }

    #[test]
    fn invalid_names_fail_at_once() {
        let mut h = Harness::new("", |_| {});
        let long_label = format!("{}.example", "x".repeat(64));
        let long_name = vec!["abcdefghi"; 26].join(".");
        for name in [
            "",
            ".",
            "-bad.example",
            "bad-.example",
            "a..b",
            "exa mple.com",
            "ex\u{e4}mple.com",
            "a/b",
        ] {
            assert_eq!(h.resolve(name), None, "{name:?}");
            let (kind, message) = h.data.results.last().unwrap().1.clone().unwrap_err();
            assert_eq!(kind, io::ErrorKind::InvalidInput, "{name:?}");
            assert!(message.ends_with("invalid hostname"), "{message}");
        }
        for name in [long_label.as_str(), long_name.as_str()] {
            assert_eq!(h.resolve(name), None);
            assert_eq!(
                h.data.results.last().unwrap().1.clone().unwrap_err().0,
                io::ErrorKind::InvalidInput
            );
        }
        assert_eq!(h.queries(), 0);
    }

    #[test]
    fn cancel_prevents_the_callback() {
        let mut h = Harness::new("", |_| {});
        h.zone("www.example.com", zone(&["192.0.2.1"], &[], 60));
        let id = h.resolve("www.example.com").unwrap();
        assert!(h.data.resolver.cancel(id));
        assert!(!h.data.resolver.cancel(id));
        assert_eq!(
            h.data.resolver.pending(),
            0,
            "the lookup was abandoned with its last waiter"
        );
        h.run_for(Duration::from_millis(100));
        assert!(h.data.results.is_empty());

        // Cancelling one waiter leaves the other.
        let first = h.resolve("www.example.com").unwrap();
        h.resolve("www.example.com").unwrap();
        assert!(h.data.resolver.cancel(first));
        assert!(h.run_until(Duration::from_secs(2), |d| !d.results.is_empty()));
        h.run_for(Duration::from_millis(20));
        assert_eq!(h.data.results.len(), 1);
    }

    #[test]
    fn a_callback_may_cancel_another_waiter() {
        let mut h = Harness::new("", |_| {});
        h.zone("www.example.com", zone(&["192.0.2.1"], &[], 60));
        h.resolve("www.example.com").unwrap();
        let second = h.resolve("www.example.com").unwrap();
        h.data.cancel_from_callback = Some(second);
        assert!(h.run_until(Duration::from_secs(2), |d| !d.results.is_empty()));
        h.run_for(Duration::from_millis(20));
        assert_eq!(
            h.data.results.len(),
            1,
            "the second waiter was cancelled by the first's callback"
        );
    }

    #[test]
    fn callbacks_may_resolve_again() {
        let mut h = Harness::new("", |_| {});
        h.zone("www.example.com", zone(&["192.0.2.1"], &[], 60));
        h.zone("next.example", zone(&["192.0.2.2"], &[], 60));
        let cx = &mut Ctx {
            lp: &mut h.lp,
            data: &mut h.data,
        };
        Resolver::resolve(cx, "www.example.com", |cx: &mut Ctx<'_, Data>, first| {
            cx.data
                .results
                .push(("first".into(), first.map_err(|e| (e.kind(), e.to_string()))));
            // From the cache, inside this callback.
            Resolver::resolve(cx, "www.example.com", |cx: &mut Ctx<'_, Data>, again| {
                cx.data
                    .results
                    .push(("again".into(), again.map_err(|e| (e.kind(), e.to_string()))));
            });
            // And a new query, started from inside this callback.
            Resolver::resolve(cx, "next.example", |cx: &mut Ctx<'_, Data>, next| {
                cx.data
                    .results
                    .push(("next".into(), next.map_err(|e| (e.kind(), e.to_string()))));
            });
        });
        assert!(h.run_until(Duration::from_secs(2), |d| d.results.len() == 3));
        let names: Vec<&str> = h.data.results.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(names, ["first", "again", "next"]);
        assert_eq!(h.data.results[2].1, Ok(ips(&["192.0.2.2"])));
    }

    #[test]
    fn two_waiters_share_one_query() {
        let mut h = Harness::new("", |_| {});
        h.zone("www.example.com", zone(&["192.0.2.1"], &["2001:db8::1"], 60));
        let a = h.resolve("www.example.com").unwrap();
        let b = h.resolve("WWW.EXAMPLE.COM.").unwrap();
        assert_ne!(a, b);
        assert_eq!(h.data.resolver.pending(), 1);
        assert!(h.run_until(Duration::from_secs(2), |d| d.results.len() == 2));
        assert_eq!(h.queries(), 2);
        for (_, result) in &h.data.results {
            assert_eq!(result, &Ok(ips(&["192.0.2.1", "2001:db8::1"])));
        }
    }

    #[test]
    fn close_drops_sockets_and_waiters() {
        let mut h = Harness::new("", |_| {});
        h.data.server.silent = true;
        h.resolve("www.example.com").unwrap();
        assert_eq!(h.lp.len(), 2, "the IPv4 socket was opened on first use");
        h.data.resolver.close(&mut h.lp);
        assert_eq!(h.lp.len(), 1);
        assert_eq!(h.lp.timer_count(), 0);
        h.run_for(Duration::from_millis(50));
        assert!(h.data.results.is_empty());
    }

    #[test]
    fn reads_resolv_conf() {
        let text = "# generated\nsearch example.com\nnameserver 192.0.2.53\n; nameserver 192.0.2.99\n\
                    nameserver 2001:db8::53 # comment\nnameserver fe80::1%2\nnameserver fe80::1%eth0\n\
                    options rotate timeout:1\nnameserver\nnameserver 192.0.2.53\n  nameserver   192.0.2.54  \n";
        let expected: Vec<SocketAddr> = vec![
            "192.0.2.53:53".parse().unwrap(),
            "[2001:db8::53]:53".parse().unwrap(),
            SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 53, 0, 2)),
            "192.0.2.54:53".parse().unwrap(),
        ];
        assert_eq!(parse_resolv_conf(text), expected);

        let file = TempFile::new(text);
        let config = ResolverConfig {
            resolv_conf: file.0.clone(),
            ..fast_config()
        };
        let resolver = Resolver::<Data>::new(config).unwrap();
        assert_eq!(resolver.nameservers(), expected);

        // A configured list wins over the file.
        let configured: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        let config = ResolverConfig {
            resolv_conf: file.0.clone(),
            nameservers: vec![configured],
            ..fast_config()
        };
        assert_eq!(Resolver::<Data>::new(config).unwrap().nameservers(), [configured]);

        let empty = TempFile::new("# nothing here\nsearch example.com\n");
        let err = Resolver::<Data>::new(ResolverConfig {
            resolv_conf: empty.0.clone(),
            ..fast_config()
        })
        .unwrap_err();
        assert!(err.to_string().contains("no nameservers"), "{err}");

        let err = Resolver::<Data>::new(fast_config()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/resolv.conf"), "{err}");
    }

    #[test]
    fn truncated_empty_answers_are_not_nodata() {
        let mut h = Harness::new("", |_| {});
        h.zone(
            "big.example",
            Zone {
                truncate: true,
                ..zone(&["192.0.2.1"], &[], 60)
            },
        );
        let err = h.lookup("big.example").unwrap_err();
        assert_eq!(
            err,
            (
                io::ErrorKind::Other,
                "dns: big.example: truncated answer (no TCP fallback)".to_string()
            )
        );
        assert!(h.resolve("big.example").is_some(), "not cached as a negative answer");
    }
}
