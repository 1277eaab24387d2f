//! Name resolution on the event loop: a [c-ares](https://c-ares.org) channel per
//! loop, driven by the loop, never blocking it.
//!
//! A lookup goes through, in order:
//!
//! 1. IP literals (`192.0.2.1`, `2001:db8::1`, `[2001:db8::1]`): answered at once.
//! 2. c-ares, which reads `/etc/resolv.conf` (nameservers, `search` domains,
//!    `ndots`, `timeout`, `attempts`, `rotate`) and `/etc/nsswitch.conf` as the C
//!    library would, and then asks, in order: the hosts file (`/etc/hosts`), its
//!    query cache (answers kept for their TTL, at most
//!    [`ResolverConfig::cache_max_ttl`]), and the nameservers, with `A` and
//!    `AAAA` queries in parallel. Configured nameservers (the `nameserver` key,
//!    `-d`) replace those of `resolv.conf`.
//!
//! c-ares does what a resolver facing the Internet needs: EDNS, a TCP retry of
//! truncated answers, server failover and retries, random query ids, DNS 0x20
//! (random letter case in the question, which the answer must echo), a new UDP
//! socket, so a new random source port, every [`ResolverConfig::udp_max_queries`]
//! queries, and answers accepted only from the connected nameserver address,
//! with the query's id and question. Nothing of DNS's wire format is parsed here.
//!
//! How c-ares runs on the loop is the `driver` submodule's job: its sockets are registered
//! with the interest c-ares asks for, readiness calls `process_fd`, and its next
//! timeout is a loop timer.
//!
//! # Wiring it into a loop
//!
//! The resolver lives inside the loop's data `D`, which implements [`HasResolver`]
//! so that the resolver's socket handlers and timer can find it again:
//!
//! ```
//! use std::net::IpAddr;
//! use evloop::{Ctx, EventLoop};
//! use ssproxy::dns::{Client, HasResolver, Resolver, ResolverConfig};
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
//! let pending = Resolver::resolve(cx, Client::Stream(1), "192.0.2.7", |cx: &mut Ctx<'_, Worker>, result| {
//!     cx.data.resolved = Some(result.expect("a literal always resolves"));
//! });
//! assert!(pending.is_none()); // answered at once: the callback has already run
//! assert_eq!(worker.resolved, Some(vec!["192.0.2.7".parse().unwrap()]));
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # When the callback runs
//!
//! Always on the loop's thread, never from inside a c-ares call: c-ares' own
//! callbacks only leave their answers in an inbox, which is emptied once c-ares
//! has returned. Answers known without asking the network (literals, hosts
//! entries, cache hits, invalid names, a client over its cap) are delivered
//! **immediately**: the callback runs inside [`Resolver::resolve`], which then
//! returns `None`. Everything else is delivered later from the loop and `resolve`
//! returns `Some(QueryId)`, which [`Resolver::cancel`] takes. So put a
//! connection's state in place *before* calling `resolve`, so that its callback
//! finds it. This is re-entrant: a callback gets the same `&mut Ctx` and may
//! resolve again, cancel other queries or close connections.
//!
//! # Fairness
//!
//! Each lookup is asked for by a [`Client`] (a TCP connection, a UDP client
//! address). A client may have at most [`ResolverConfig::max_queries_per_client`]
//! lookups in flight; past that its lookups fail at once, so that one key holder
//! asking for many names cannot fill the resolver (and the nameservers' patience)
//! at the expense of everyone else.

mod answer;
mod driver;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use evloop::{Ctx, EventLoop, Events};

pub use answer::addresses_in_answer;
use driver::{Driver, Inbox};

/// Implemented by the loop's data type, so that the resolver (which lives inside
/// it) can be reached from its own socket handlers and timer.
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

/// Settings for a [`Resolver`]. `Default` gives the system files and c-ares'
/// usual timings.
#[derive(Clone, Debug)]
pub struct ResolverConfig {
    /// Nameservers to ask. Empty (the default): those of [`resolv_conf`](Self::resolv_conf).
    pub nameservers: Vec<std::net::SocketAddr>,
    /// The `resolv.conf` c-ares reads (default `/etc/resolv.conf`): nameservers
    /// unless configured, and the search domains and options in any case.
    pub resolv_conf: PathBuf,
    /// The hosts file, consulted before the network (default `/etc/hosts`).
    pub hosts: PathBuf,
    /// Which families to query, and their order in results.
    pub order: AddressOrder,
    /// How long the first try at a nameserver may take (default 1 s); later
    /// rounds wait twice as long each, at most 4 times this.
    pub timeout: Duration,
    /// Tries per nameserver before a lookup fails (default 3).
    pub tries: u32,
    /// Cache answers for their TTL but at most this long; zero turns the cache
    /// off (default 1 h). c-ares caches positive answers and NXDOMAIN; it has no
    /// lower bound: an answer with a TTL of 0 is not cached.
    pub cache_max_ttl: Duration,
    /// Empty the cache after this many answered lookups (default 10 000, about
    /// 30 MB): c-ares' cache has no size limit of its own, so without this a
    /// client asking for ever new names could grow it for `cache_max_ttl`.
    pub cache_max_names: usize,
    /// Queries sent from one UDP socket (one source port) before c-ares opens a
    /// new one (default 1: every query from a fresh random port).
    pub udp_max_queries: u32,
    /// Lookups one [`Client`] may have in flight (default
    /// [`DEFAULT_MAX_QUERIES_PER_CLIENT`]).
    pub max_queries_per_client: usize,
}

/// How many lookups one client may have in flight unless configured: enough for a
/// UDP client that talks to a few dozen names at once.
pub const DEFAULT_MAX_QUERIES_PER_CLIENT: usize = 32;

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            nameservers: Vec::new(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            hosts: PathBuf::from("/etc/hosts"),
            order: AddressOrder::default(),
            timeout: Duration::from_secs(1),
            tries: 3,
            cache_max_ttl: Duration::from_secs(3600),
            cache_max_names: 10_000,
            udp_max_queries: 1,
            max_queries_per_client: DEFAULT_MAX_QUERIES_PER_CLIENT,
        }
    }
}

/// Who asks for a lookup: the unit the in-flight cap applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Client {
    /// A TCP connection, by its serial number.
    Stream(u64),
    /// A UDP client, by its address.
    Datagrams(std::net::SocketAddr),
}

/// Names one pending [`Resolver::resolve`] call, for [`Resolver::cancel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QueryId(u64);

type Callback<D> = Box<dyn FnOnce(&mut Ctx<'_, D>, io::Result<Vec<IpAddr>>)>;

struct Waiter<D> {
    lookup: u64,
    client: Client,
    callback: Callback<D>,
}

/// One name being looked up by c-ares, shared by all its waiters.
struct Lookup {
    name: String,
    waiters: Vec<QueryId>,
}

/// The resolver. See the [module documentation](self) for how it works and how
/// to wire it into a loop.
pub struct Resolver<D> {
    config: ResolverConfig,
    driver: Driver,
    lookups: HashMap<u64, Lookup>,
    /// Lookups in flight by name (as asked, lower case), so that callers asking
    /// for the same name at once share one.
    by_name: HashMap<String, u64>,
    waiters: HashMap<QueryId, Waiter<D>>,
    in_flight: HashMap<Client, usize>,
    next_query: u64,
    next_lookup: u64,
}

impl<D> fmt::Debug for Resolver<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("nameservers", &self.driver.nameservers())
            .field("lookups", &self.lookups.len())
            .field("waiters", &self.waiters.len())
            .finish()
    }
}

impl<D> Resolver<D> {
    /// Set up a c-ares channel with `config`. Fails if c-ares cannot start or no
    /// nameserver is left: a resolver that can only fail is a configuration
    /// error worth reporting at start-up. Opens no socket: c-ares opens them on
    /// the first query that needs them.
    pub fn new(config: ResolverConfig) -> io::Result<Self> {
        let driver = Driver::new(&config)?;
        log::debug!(
            "dns: c-ares {}, nameservers {:?}",
            c_ares::version().0,
            driver.nameservers()
        );
        Ok(Resolver {
            config,
            driver,
            lookups: HashMap::new(),
            by_name: HashMap::new(),
            waiters: HashMap::new(),
            in_flight: HashMap::new(),
            next_query: 0,
            next_lookup: 0,
        })
    }

    /// The nameservers c-ares asks, as it prints them (`127.0.0.1:53`).
    pub fn nameservers(&self) -> Vec<String> {
        self.driver.nameservers()
    }

    /// The settings this resolver runs with.
    pub fn config(&self) -> &ResolverConfig {
        &self.config
    }

    /// How many names are being looked up by c-ares right now (those whose
    /// waiters all cancelled included, until c-ares finishes them).
    pub fn pending(&self) -> usize {
        self.lookups.len()
    }

    /// Drop the callback of a pending query without calling it (its connection
    /// closed). True if it was pending. c-ares cannot cancel one query, so the
    /// lookup runs to its end; its answer then goes to whoever still waits (and
    /// into the cache).
    pub fn cancel(&mut self, id: QueryId) -> bool {
        let Some(waiter) = self.waiters.remove(&id) else {
            return false;
        };
        self.release(waiter.client);
        if let Some(lookup) = self.lookups.get_mut(&waiter.lookup) {
            lookup.waiters.retain(|w| *w != id);
        }
        true
    }

    /// One lookup of `client` ended.
    fn release(&mut self, client: Client) {
        if let Some(count) = self.in_flight.get_mut(&client) {
            *count -= 1;
            if *count == 0 {
                self.in_flight.remove(&client);
            }
        }
    }
}

impl<D: HasResolver> Resolver<D> {
    /// Resolve `name` for `client` and hand the addresses (in the configured
    /// order, never empty) or an error to `callback`.
    ///
    /// Returns `None` if the callback has already run (an IP literal, a hosts
    /// entry, a cached answer or an immediate failure), or the id of the pending
    /// query otherwise. Callers asking for a name already being looked up share
    /// its lookup. Errors carry the name and the cause:
    /// `dns: example.com: NXDOMAIN` ([`NotFound`](io::ErrorKind::NotFound)),
    /// `dns: example.com: timed out` ([`TimedOut`](io::ErrorKind::TimedOut)),
    /// `dns: example.com: SERVFAIL`, `dns: example.com: no addresses`,
    /// `dns: ...: invalid hostname` ([`InvalidInput`](io::ErrorKind::InvalidInput)), or
    /// `dns: ...: too many lookups in flight for this client (at most 32)`.
    pub fn resolve<F>(cx: &mut Ctx<'_, D>, client: Client, name: &str, callback: F) -> Option<QueryId>
    where
        F: FnOnce(&mut Ctx<'_, D>, io::Result<Vec<IpAddr>>) + 'static,
    {
        let literal = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name);
        if let Ok(ip) = literal.parse::<IpAddr>() {
            callback(cx, Ok(vec![ip]));
            return None;
        }
        if !answer::is_hostname(name) {
            callback(
                cx,
                Err(answer::failure(io::ErrorKind::InvalidInput, name, "invalid hostname")),
            );
            return None;
        }
        let resolver = cx.data.resolver();
        let max = resolver.config.max_queries_per_client;
        let count = resolver.in_flight.entry(client).or_insert(0);
        if *count >= max {
            log::debug!("dns: {client:?}: {max} lookups in flight already; refusing {name}");
            let what = format!("too many lookups in flight for this client (at most {max})");
            callback(cx, Err(answer::failure(io::ErrorKind::Other, name, what)));
            return None;
        }
        *count += 1;

        let key = name.to_ascii_lowercase();
        let id = QueryId(resolver.next_query);
        resolver.next_query += 1;
        let (lookup_id, start) = match resolver.by_name.get(&key) {
            Some(&lookup_id) => (lookup_id, false),
            None => {
                let lookup_id = resolver.next_lookup;
                resolver.next_lookup += 1;
                resolver.by_name.insert(key, lookup_id);
                resolver.lookups.insert(
                    lookup_id,
                    Lookup {
                        name: name.to_string(),
                        waiters: Vec::new(),
                    },
                );
                (lookup_id, true)
            }
        };
        resolver.waiters.insert(
            id,
            Waiter {
                lookup: lookup_id,
                client,
                callback: Box::new(callback),
            },
        );
        if let Some(lookup) = resolver.lookups.get_mut(&lookup_id) {
            lookup.waiters.push(id);
        }
        if start {
            let order = resolver.config.order;
            resolver.driver.start_lookup(lookup_id, name, order);
            // Hosts entries and cache hits have been answered inside that call.
            Self::after_ares(cx);
        }
        cx.data.resolver().waiters.contains_key(&id).then_some(id)
    }

    /// Destroy the c-ares channel (closing its sockets), cancel its timer, and
    /// drop pending callbacks without calling them. Lookups after this fail at
    /// once (`resolver closed`); literals still resolve.
    pub fn close(&mut self, lp: &mut EventLoop<D>) {
        self.driver.close(lp);
        self.waiters.clear();
        self.lookups.clear();
        self.by_name.clear();
        self.in_flight.clear();
    }

    /// Readiness of one of c-ares' sockets.
    fn on_socket(cx: &mut Ctx<'_, D>, socket: driver::Socket, events: Events) {
        cx.data.resolver().driver.process_socket(socket, events);
        Self::after_ares(cx);
    }

    /// c-ares' next timeout.
    fn on_timer(cx: &mut Ctx<'_, D>) {
        cx.data.resolver().driver.process_timeouts();
        Self::after_ares(cx);
    }

    /// After any call into c-ares: bring the loop up to date with its sockets and
    /// timeout, then hand finished lookups to their waiters. Each waiter is taken
    /// out of the table just before its call, so that a callback cancelling
    /// another waiter is honoured; each answer is taken from the inbox just
    /// before delivery, so that callbacks that resolve again (and so empty the
    /// inbox themselves) leave nothing behind.
    fn after_ares(cx: &mut Ctx<'_, D>) {
        cx.data
            .resolver()
            .driver
            .sync_loop(cx.lp, Self::on_socket, Self::on_timer);
        while let Some((lookup_id, result)) = cx.data.resolver().driver.next_finished() {
            let resolver = cx.data.resolver();
            let Some(lookup) = resolver.lookups.remove(&lookup_id) else {
                continue;
            };
            let key = lookup.name.to_ascii_lowercase();
            if resolver.by_name.get(&key) == Some(&lookup_id) {
                resolver.by_name.remove(&key);
            }
            let outcome = answer::outcome(&lookup.name, resolver.config.order, result);
            match &outcome {
                Ok(addrs) => log::debug!("dns: {}: {addrs:?}", lookup.name),
                Err(e) => log::debug!("{e}"),
            }
            for id in lookup.waiters {
                let resolver = cx.data.resolver();
                let Some(waiter) = resolver.waiters.remove(&id) else {
                    continue;
                };
                resolver.release(waiter.client);
                let result = match &outcome {
                    Ok(addrs) => Ok(addrs.clone()),
                    Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                };
                (waiter.callback)(cx, result);
            }
        }
    }
}

/// Lock the inbox; a panic while it was held aborted the process already (c-ares
/// callbacks abort on panic), so a poisoned lock still holds consistent data.
fn lock(inbox: &Arc<std::sync::Mutex<Inbox>>) -> std::sync::MutexGuard<'_, Inbox> {
    inbox.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
