//! c-ares on the loop: its channel, its sockets registered with the loop with the
//! interest it asks for, and its next timeout as a loop timer.
//!
//! c-ares calls back from inside its own functions (`process_fd`,
//! `getaddrinfo`): to say which sockets to watch, and with finished lookups.
//! Those callbacks only write to an [`Inbox`]; [`Driver::sync_loop`] and
//! [`Driver::next_finished`] read it once c-ares has returned, so neither the loop
//! nor a waiter's callback ever runs inside c-ares.
//!
//! c-ares owns its sockets and closes them itself, so the loop watches them as
//! foreign descriptors ([`EventLoop::add_foreign`]): it never closes them, and a
//! registration is removed once c-ares says its socket is gone. As those
//! announcements are read after c-ares returns, c-ares may have closed a socket
//! by then, and even opened a new one on its number: the old registration is
//! removed (which touches nothing of the newcomer) and the number registered
//! again, once, for the new socket ([`net_changes`]).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use c_ares::{AddrInfoFlags, AddrInfoHints, Channel, Flags, Options};
use evloop::{Ctx, EventLoop, Events, ForeignFd, POLL_ERR, POLL_HUP, POLL_IN, POLL_OUT, TimerId, Token};

use super::{AddressOrder, ResolverConfig, lock};

/// A c-ares socket, as c-ares names it (its descriptor number).
pub(crate) type Socket = c_ares::Socket;

/// What c-ares' callbacks leave for the loop.
#[derive(Default)]
pub(crate) struct Inbox {
    /// Interest changes, in the order c-ares announced them: socket, read,
    /// write; neither means the socket is being closed.
    sockets: Vec<(Socket, bool, bool)>,
    /// Finished lookups: their id and c-ares' addresses or status.
    finished: VecDeque<(u64, Result<Vec<IpAddr>, c_ares::Error>)>,
}

/// One c-ares channel and its registrations on one loop.
pub(super) struct Driver {
    /// `None` once closed.
    channel: Option<Channel>,
    inbox: Arc<Mutex<Inbox>>,
    /// The loop's registration of each c-ares socket.
    registered: HashMap<Socket, Token>,
    /// The loop timer for c-ares' next timeout, and when it fires.
    timer: Option<(TimerId, Instant)>,
    /// Lookups answered (so possibly cached) since the cache was last emptied,
    /// and how many make it empty it again.
    answered: usize,
    cache_max_names: usize,
}

impl Driver {
    /// A channel with `config`'s settings.
    pub(super) fn new(config: &ResolverConfig) -> io::Result<Driver> {
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let channel = open_channel(config, &inbox)?;
        Ok(Driver {
            channel: Some(channel),
            inbox,
            registered: HashMap::new(),
            timer: None,
            answered: 0,
            cache_max_names: config.cache_max_names,
        })
    }

    /// The nameservers c-ares asks (none once closed).
    pub(super) fn nameservers(&self) -> Vec<String> {
        self.channel.as_ref().map(Channel::servers).unwrap_or_default()
    }

    /// Ask c-ares for `name`'s addresses; the answer comes back as lookup
    /// `lookup_id` from [`next_finished`](Self::next_finished), possibly at once
    /// (hosts file, cache, or a closed resolver).
    pub(super) fn start_lookup(&mut self, lookup_id: u64, name: &str, order: AddressOrder) {
        let Some(channel) = &mut self.channel else {
            lock(&self.inbox)
                .finished
                .push_back((lookup_id, Err(c_ares::Error::EDESTRUCTION)));
            return;
        };
        let hints = AddrInfoHints {
            // The order is ours to set (see AddressOrder::arrange): c-ares' RFC 6724
            // sort would cost a socket per address.
            flags: AddrInfoFlags::NOSORT,
            family: order.family(),
            ..AddrInfoHints::default()
        };
        let inbox = Arc::clone(&self.inbox);
        channel.get_addrinfo(name, None, &hints, move |result| {
            let addrs = result.map(|info| info.nodes().filter_map(|node| node.ip_addr()).collect());
            lock(&inbox).finished.push_back((lookup_id, addrs));
        });
    }

    /// Let c-ares handle `events` on `socket`.
    pub(super) fn process_socket(&mut self, socket: Socket, events: Events) {
        if let Some(channel) = &mut self.channel {
            let read = events.intersects(POLL_IN | POLL_ERR | POLL_HUP).then_some(socket);
            let write = events.intersects(POLL_OUT | POLL_ERR).then_some(socket);
            channel.process_fd(read, write);
        }
    }

    /// Let c-ares handle its timeouts (retries, failover, giving up); the timer
    /// that called this has fired and is gone.
    pub(super) fn process_timeouts(&mut self) {
        self.timer = None;
        if let Some(channel) = &mut self.channel {
            channel.process_fd(None, None);
        }
    }

    /// The next finished lookup, if any.
    pub(super) fn next_finished(&mut self) -> Option<(u64, Result<Vec<IpAddr>, c_ares::Error>)> {
        let finished = lock(&self.inbox).finished.pop_front()?;
        if matches!(finished.1, Ok(_) | Err(c_ares::Error::ENOTFOUND)) {
            self.answered += 1;
            if self.answered >= self.cache_max_names {
                self.empty_cache();
            }
        }
        Some(finished)
    }

    /// Empty c-ares' cache, which has no size limit of its own. `reinit` is the
    /// call that does it: it also reads the system files again (in a thread of
    /// c-ares' own, so the loop does not wait for the disk), keeping configured
    /// nameservers.
    fn empty_cache(&mut self) {
        self.answered = 0;
        if let Some(channel) = &mut self.channel {
            log::debug!(
                "dns: {} lookups answered since the cache was emptied: emptying it",
                self.cache_max_names
            );
            if let Err(e) = channel.reinit() {
                log::warn!("dns: emptying the cache: {e}");
            }
        }
    }

    /// Bring the loop up to date with c-ares: register, re-interest and drop its
    /// sockets as it asked, and set the timer to its next timeout.
    pub(super) fn sync_loop<D: 'static>(
        &mut self,
        lp: &mut EventLoop<D>,
        on_socket: fn(&mut Ctx<'_, D>, Socket, Events),
        on_timer: fn(&mut Ctx<'_, D>),
    ) {
        let changes = std::mem::take(&mut lock(&self.inbox).sockets);
        for (socket, closed, mode) in net_changes(&changes) {
            if closed && let Some(token) = self.registered.remove(&socket) {
                // c-ares has closed it, or is about to: the loop forgets the number
                // and closes nothing (a new socket may have it already).
                if let Err(e) = lp.remove(token) {
                    log::debug!("dns: unregistering c-ares socket {socket}: {e}");
                }
            }
            if mode.is_empty() {
                continue;
            }
            if let Some(&token) = self.registered.get(&socket) {
                if let Err(e) = lp.modify(token, mode) {
                    log::warn!("dns: watching c-ares socket {socket}: {e}");
                }
                continue;
            }
            let registered = lp.add_foreign(
                socket,
                mode,
                move |cx: &mut Ctx<'_, D>, _: &mut ForeignFd, _, events| {
                    on_socket(cx, socket, events);
                    Ok(())
                },
            );
            match registered {
                Ok(token) => {
                    self.registered.insert(socket, token);
                }
                // Its queries then fail by timeout; nothing a client sends leads here.
                Err(e) => log::warn!("dns: cannot watch c-ares socket {socket}: {e}"),
            }
        }
        self.rearm_timer(lp, on_timer);
    }

    /// One timer, at c-ares' next timeout. An earlier timer is kept (firing early
    /// costs one `process_fd` that finds nothing due), a later one is replaced.
    fn rearm_timer<D: 'static>(&mut self, lp: &mut EventLoop<D>, on_timer: fn(&mut Ctx<'_, D>)) {
        let next = self.channel.as_ref().and_then(|channel| channel.timeout(None));
        let Some(delay) = next else {
            if let Some((timer, _)) = self.timer.take() {
                lp.cancel_timer(timer);
            }
            return;
        };
        // c-ares' timeouts are in milliseconds: round up so as not to wake just before one.
        let delay = delay + Duration::from_millis(1);
        let due = Instant::now() + delay;
        if let Some((timer, at)) = self.timer {
            if at <= due {
                return;
            }
            lp.cancel_timer(timer);
        }
        let timer = lp.add_timer(delay, move |cx: &mut Ctx<'_, D>| on_timer(cx));
        self.timer = Some((timer, due));
    }

    /// Destroy the channel (c-ares closes its sockets; pending lookups end
    /// unanswered) and drop its registrations and timer. Lookups started after
    /// this fail at once.
    pub(super) fn close<D: 'static>(&mut self, lp: &mut EventLoop<D>) {
        self.channel = None;
        for (_, token) in self.registered.drain() {
            let _ = lp.remove(token);
        }
        if let Some((timer, _)) = self.timer.take() {
            lp.cancel_timer(timer);
        }
        let mut inbox = lock(&self.inbox);
        inbox.sockets.clear();
        inbox.finished.clear();
    }
}

/// c-ares' announcements folded per socket, in first-seen order: whether it was
/// closed at some point (so that a registration made before belongs to a
/// descriptor that is gone, even if c-ares reused the number since), and the
/// interest it ends with.
fn net_changes(changes: &[(Socket, bool, bool)]) -> Vec<(Socket, bool, Events)> {
    let mut net: Vec<(Socket, bool, Events)> = Vec::new();
    for &(socket, read, write) in changes {
        let mut mode = Events::from_bits(0);
        if read {
            mode |= POLL_IN;
        }
        if write {
            mode |= POLL_OUT;
        }
        match net.iter_mut().find(|(s, _, _)| *s == socket) {
            Some(entry) => {
                entry.1 |= mode.is_empty();
                entry.2 = mode;
            }
            None => net.push((socket, mode.is_empty(), mode)),
        }
    }
    net
}

/// The channel: `config`'s files, nameservers, timings and cache, and the
/// defences c-ares has (EDNS, DNS 0x20, a fresh source port every
/// `udp_max_queries` queries).
fn open_channel(config: &ResolverConfig, inbox: &Arc<Mutex<Inbox>>) -> io::Result<Channel> {
    let context = |what: &str, e: c_ares::Error| io::Error::other(format!("dns: {what}: {e}"));
    let path = |p: &std::path::Path| {
        p.to_str()
            .map(str::to_string)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("dns: {}: not UTF-8", p.display())))
    };
    let mut flags = Flags::EDNS | Flags::DNS_0X20;
    if config.nameservers.is_empty() {
        // Without nameservers in resolv.conf, c-ares would ask 127.0.0.1: say so instead.
        flags |= Flags::NO_DFLT_SVR;
    }
    let sockets = Arc::clone(inbox);
    let mut options = Options::new();
    options
        .set_flags(flags)
        .set_socket_state_callback(move |socket, read, write| {
            lock(&sockets).sockets.push((socket, read, write));
        })
        .set_timeout(config.timeout)
        .set_max_timeout(config.timeout.saturating_mul(4))
        .set_tries(config.tries)
        .set_udp_max_queries((config.udp_max_queries > 0).then_some(config.udp_max_queries))
        .set_query_cache_max_ttl(u32::try_from(config.cache_max_ttl.as_secs()).unwrap_or(u32::MAX));
    options
        .set_resolvconf_path(&path(&config.resolv_conf)?)
        .map_err(|e| context("resolv_conf path", e))?;
    options
        .set_hosts_path(&path(&config.hosts)?)
        .map_err(|e| context("hosts path", e))?;
    let mut channel = Channel::with_options(options).map_err(|e| match e {
        c_ares::Error::ENOSERVER => io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "dns: no nameservers: none configured and none in {}",
                config.resolv_conf.display()
            ),
        ),
        e => context("starting c-ares", e),
    })?;
    if !config.nameservers.is_empty() {
        let servers: Vec<String> = config.nameservers.iter().map(ToString::to_string).collect();
        channel
            .set_servers(&servers)
            .map_err(|e| context(&format!("nameservers {servers:?}"), e))?;
    }
    Ok(channel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_closed_and_reopened_in_one_batch_is_registered_anew() {
        let changes = [
            (7, true, false),
            (7, false, false),
            (7, true, false),
            (8, true, true),
            (9, true, false),
            (9, false, false),
        ];
        let net = net_changes(&changes);
        assert_eq!(
            net,
            [
                (7, true, POLL_IN),
                (8, false, POLL_IN | POLL_OUT),
                (9, true, Events::from_bits(0))
            ]
        );
    }

    /// c-ares closes a socket and opens a new one on its number within one call;
    /// the loop hears of both only afterwards. The number must end up registered
    /// once, for the new socket, with the new socket's interest: its events reach
    /// c-ares, and the old registration is gone.
    #[test]
    fn a_socket_number_reused_before_the_loop_hears_ends_registered_once_for_the_new_socket() {
        use std::io::Write;
        use std::os::fd::{AsRawFd, OwnedFd};
        use std::os::unix::net::UnixStream;

        type Seen = Vec<(Socket, Events)>;
        let on_socket = |cx: &mut Ctx<'_, Seen>, socket: Socket, events: Events| cx.data.push((socket, events));
        let on_timer = |_: &mut Ctx<'_, Seen>| {};
        let config = ResolverConfig {
            nameservers: vec!["127.0.0.1:53".parse().unwrap()],
            ..ResolverConfig::default()
        };
        let mut driver = Driver::new(&config).unwrap();
        let mut lp: EventLoop<Seen> = EventLoop::new().unwrap();

        let (old, _old_peer) = UnixStream::pair().unwrap();
        let mut socket_at_number = OwnedFd::from(old);
        let number = socket_at_number.as_raw_fd();
        lock(&driver.inbox).sockets.push((number, true, false));
        driver.sync_loop(&mut lp, on_socket, on_timer);
        let first = driver.registered[&number];

        // The close and the reopen at once: `number` names the new socket now.
        let (new, mut new_peer) = UnixStream::pair().unwrap();
        rustix::io::dup2(&new, &mut socket_at_number).unwrap();
        drop(new);
        lock(&driver.inbox)
            .sockets
            .extend([(number, false, false), (number, true, true)]);
        driver.sync_loop(&mut lp, on_socket, on_timer);

        assert!(!lp.contains(first), "the closed socket's registration is gone");
        assert_eq!(lp.len(), 1, "one registration for the number");
        let token = driver.registered[&number];
        assert_eq!(lp.registration(token), Some((number, POLL_IN | POLL_OUT)));
        new_peer.write_all(b"x").unwrap();
        let mut seen = Seen::new();
        lp.run_once(Some(Duration::from_secs(1)), &mut seen).unwrap();
        assert_eq!(seen, [(number, POLL_IN | POLL_OUT)]);
        driver.close(&mut lp);
        assert!(lp.is_empty());
        assert!(
            rustix::io::fcntl_getfd(&socket_at_number).is_ok(),
            "the loop closed c-ares' socket {number}"
        );
    }
}
