//! The select(2) backend: the fallback that exists everywhere, with its limits.
//!
//! As in the original, `POLL_IN` puts a descriptor in the read set, `POLL_OUT` in
//! the write set and `POLL_ERR` in the exceptional set, and what the three sets
//! report is merged into one `(fd, events)` pair per descriptor.
//!
//! # What select cannot do
//!
//! - **Descriptors at or above `FD_SETSIZE`** (1024 on Linux) do not fit in an
//!   `fd_set`; setting one writes outside it, which is undefined behaviour in C.
//!   [`register`](Poller::register) and [`modify`](Poller::modify) refuse them with
//!   `ErrorKind::InvalidInput` instead, as they refuse negative numbers.
//! - **Errors and hang-ups are seen only as readiness.** select has no `POLLERR` or
//!   `POLLHUP`: a socket that received an RST, or whose peer hung up, is reported
//!   *readable* (and writable, if asked), and the read or write that follows
//!   returns the error or end-of-file. The exceptional set does not report errors
//!   either: on Linux it means TCP urgent (out-of-band) data, which the original
//!   mapped to `POLL_ERR` and so does this backend. `POLL_HUP` is never reported,
//!   and a descriptor registered with `POLL_NULL` is in no set, so it sees nothing.
//! - **A closed descriptor fails the whole call** with `EBADF`. So that one stale
//!   registration never breaks the poll (contract point 4), the poller then probes
//!   every registered descriptor, marks the closed ones, reports each alone as
//!   `POLL_NVAL`, and selects again at once without them for the others' readiness.
//!   A marked descriptor is probed again on each poll, so it costs no extra failed
//!   select; if its number has been reused by a new file meanwhile, it is watched
//!   again, as poll(2) would.
//!
//! Cost: the three sets the kernel reads are kept up to date by
//! register/unregister/modify, so a poll copies them (3 × 128 bytes) and walks the
//! descriptors up to the highest registered one, never more than `FD_SETSIZE`.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use super::{Backend, PollEvent, Poller, PollerError, fd_is_open, refuse_closed};
use crate::events::{Events, POLL_ERR, POLL_IN, POLL_NVAL, POLL_OUT};
use crate::token::Token;

/// A poller on select(2), for descriptors below `FD_SETSIZE`. Holds no kernel
/// object, so dropping it closes nothing.
///
/// ```
/// use evloop::poller::{PollEvent, Poller, select::Select};
/// use evloop::{POLL_IN, Token};
/// use std::os::fd::AsRawFd;
///
/// let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
/// let mut select = Select::new();
/// select.register(a.as_raw_fd(), Token::from_u64(7), POLL_IN)?;
/// std::io::Write::write_all(&mut b, b"x")?;
/// let mut ready = Vec::new();
/// select.poll(None, &mut ready)?;
/// assert_eq!(ready, [PollEvent::new(Token::from_u64(7), POLL_IN)]);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Select {
    /// `entries[fd]` is fd's registration; indexed by fd, never longer than `FD_SETSIZE`.
    entries: Vec<Option<Entry>>,
    /// The sets as the registrations ask for them, copied for each call because
    /// select(2) overwrites its arguments with the results.
    read: libc::fd_set,
    write: libc::fd_set,
    except: libc::fd_set,
    /// The highest registered fd, or -1: select(2) scans `0..=max_fd`, and so do we.
    max_fd: RawFd,
    /// How many registered fds are known to be closed (see [`Entry::closed`]).
    closed: usize,
}

#[derive(Clone, Copy)]
struct Entry {
    /// What the fd's reports carry.
    token: Token,
    /// Found closed behind our back: left out of select(2) and reported as
    /// `POLL_NVAL` until unregistered, or until its number is open again.
    closed: bool,
}

impl Default for Select {
    fn default() -> Select {
        Select::new()
    }
}

impl Select {
    /// A new, empty poller.
    pub fn new() -> Select {
        Select {
            entries: Vec::new(),
            read: empty_set(),
            write: empty_set(),
            except: empty_set(),
            max_fd: -1,
            closed: 0,
        }
    }

    /// How many descriptors are registered.
    pub fn len(&self) -> usize {
        self.entries.iter().flatten().count()
    }

    /// True when no descriptor is registered.
    pub fn is_empty(&self) -> bool {
        self.max_fd < 0
    }

    fn entry(&self, fd: RawFd) -> Option<Entry> {
        let slot = usize::try_from(fd).ok()?;
        self.entries.get(slot).copied().flatten()
    }

    /// Put `fd` in exactly the sets `mode` asks for. `fd` is below FD_SETSIZE.
    fn set_mode(&mut self, fd: RawFd, mode: Events) {
        for (set, event) in [
            (&mut self.read, POLL_IN),
            (&mut self.write, POLL_OUT),
            (&mut self.except, POLL_ERR),
        ] {
            if mode.contains(event) {
                add(set, fd);
            } else {
                remove(set, fd);
            }
        }
    }

    /// Registered fds in ascending order, with their registrations.
    fn registered(&self) -> impl Iterator<Item = (RawFd, Entry)> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(fd, entry)| entry.map(|entry| (fd as RawFd, entry)))
    }

    /// Unmark the closed fds whose numbers are open again: they name a new file now,
    /// and select(2) will watch it, as poll(2) would.
    fn recheck_closed(&mut self) {
        for fd in 0..=self.max_fd {
            if let Some(entry) = self.entries[fd as usize].as_mut()
                && entry.closed
                && fd_is_open(fd)
            {
                entry.closed = false;
                self.closed -= 1;
            }
        }
    }

    /// After select(2) failed with EBADF: probe the fds it was given and mark the
    /// closed ones. Returns how many it newly found.
    fn find_closed(&mut self) -> usize {
        let mut found = 0;
        for fd in 0..=self.max_fd {
            if let Some(entry) = self.entries[fd as usize].as_mut()
                && !entry.closed
                && !fd_is_open(fd)
            {
                log::warn!("select: fd {fd} was closed while registered; reporting POLL_NVAL until it is unregistered");
                entry.closed = true;
                found += 1;
            }
        }
        self.closed += found;
        found
    }
}

/// Whether an `fd_set` has a bit for `fd`.
fn fits(fd: RawFd) -> bool {
    (0..libc::FD_SETSIZE as RawFd).contains(&fd)
}

/// The error for an fd an `fd_set` cannot hold, or `None` if it fits.
fn out_of_range(fd: RawFd, op: &'static str) -> Option<io::Error> {
    if fits(fd) {
        return None;
    }
    Some(PollerError::custom(
        Backend::Select,
        op,
        Some(fd),
        io::ErrorKind::InvalidInput,
        format!(
            "select(2) can only watch fds 0 to {} (below FD_SETSIZE = {}); use the poll or epoll backend",
            libc::FD_SETSIZE - 1,
            libc::FD_SETSIZE
        ),
    ))
}

fn empty_set() -> libc::fd_set {
    // SAFETY: fd_set is a plain array of integers, for which all-zero bits are a
    // valid value: the empty set, exactly what FD_ZERO would produce.
    unsafe { std::mem::zeroed() }
}

fn add(set: &mut libc::fd_set, fd: RawFd) {
    debug_assert!(fits(fd));
    // SAFETY: `set` is a valid fd_set and fd is in 0..FD_SETSIZE (checked at
    // register/modify), so the bit written lies inside it.
    unsafe { libc::FD_SET(fd, set) }
}

fn remove(set: &mut libc::fd_set, fd: RawFd) {
    debug_assert!(fits(fd));
    // SAFETY: as in `add`: a valid set and an fd inside its bounds.
    unsafe { libc::FD_CLR(fd, set) }
}

fn contains(set: &libc::fd_set, fd: RawFd) -> bool {
    // SAFETY: as in `add`: a valid set and an fd inside its bounds.
    unsafe { libc::FD_ISSET(fd, set) }
}

/// The `timeval` for a timeout: rounded up to the microsecond, never down, and
/// clamped to the largest time select(2) accepts.
fn timeval_for(timeout: Duration) -> libc::timeval {
    let mut secs = timeout.as_secs();
    let mut micros = timeout.subsec_nanos().div_ceil(1_000);
    if micros == 1_000_000 {
        secs = secs.saturating_add(1);
        micros = 0;
    }
    libc::timeval {
        tv_sec: secs.min(libc::time_t::MAX as u64) as libc::time_t,
        tv_usec: micros as libc::suseconds_t,
    }
}

impl Poller for Select {
    fn register(&mut self, fd: RawFd, token: Token, mode: Events) -> io::Result<()> {
        if let Some(err) = out_of_range(fd, "register") {
            return Err(err);
        }
        refuse_closed(Backend::Select, fd)?;
        if self.entry(fd).is_some() {
            return Err(PollerError::already_registered(Backend::Select, fd));
        }
        let slot = fd as usize;
        if slot >= self.entries.len() {
            self.entries.resize(slot + 1, None);
        }
        self.entries[slot] = Some(Entry { token, closed: false });
        self.set_mode(fd, mode);
        self.max_fd = self.max_fd.max(fd);
        Ok(())
    }

    fn unregister(&mut self, fd: RawFd) -> io::Result<()> {
        let Some(entry) = self.entry(fd) else {
            return Err(PollerError::not_registered(Backend::Select, "unregister", fd));
        };
        self.entries[fd as usize] = None;
        self.set_mode(fd, Events::default());
        if entry.closed {
            self.closed -= 1;
        }
        if fd == self.max_fd {
            self.max_fd = self.registered().last().map_or(-1, |(fd, _)| fd);
            // Keeps the walk in `poll` and the next max search short.
            self.entries.truncate((self.max_fd + 1) as usize);
        }
        Ok(())
    }

    fn modify(&mut self, fd: RawFd, token: Token, mode: Events) -> io::Result<()> {
        if let Some(err) = out_of_range(fd, "modify") {
            return Err(err);
        }
        let Some(entry) = self.entries.get_mut(fd as usize).and_then(Option::as_mut) else {
            return Err(PollerError::not_registered(Backend::Select, "modify", fd));
        };
        entry.token = token;
        self.set_mode(fd, mode);
        Ok(())
    }

    fn poll(&mut self, timeout: Option<Duration>, out: &mut Vec<PollEvent>) -> io::Result<()> {
        out.clear();
        if self.closed > 0 {
            self.recheck_closed();
        }
        let (read, write, except, ready) = loop {
            let mut read = self.read;
            let mut write = self.write;
            let mut except = self.except;
            let mut wait = timeout.map(timeval_for);
            if self.closed > 0 {
                for (fd, _) in self.registered().filter(|(_, entry)| entry.closed) {
                    remove(&mut read, fd);
                    remove(&mut write, fd);
                    remove(&mut except, fd);
                }
                // There is news to report already: the closed fds.
                wait = Some(timeval_for(Duration::ZERO));
            }
            let wait_ptr = wait
                .as_mut()
                .map_or(std::ptr::null_mut(), |tv| tv as *mut libc::timeval);
            // SAFETY: the three sets and the timeval are live locals, exclusively
            // borrowed for the call; every fd in the sets is below max_fd + 1 and
            // below FD_SETSIZE, so the kernel reads and writes only inside them.
            let n = unsafe { libc::select(self.max_fd + 1, &mut read, &mut write, &mut except, wait_ptr) };
            if n >= 0 {
                break (read, write, except, n as usize);
            }
            let err = io::Error::last_os_error();
            // Each retry needs a newly found closed fd, so this loops at most once per
            // registered fd (in practice: once).
            if err.raw_os_error() != Some(libc::EBADF) || self.find_closed() == 0 {
                return Err(PollerError::os(Backend::Select, "poll", None, err));
            }
        };
        if ready == 0 && self.closed == 0 {
            return Ok(());
        }
        for (fd, entry) in self.registered() {
            if entry.closed {
                out.push(PollEvent::new(entry.token, POLL_NVAL));
                continue;
            }
            let mut events = Events::default();
            for (set, event) in [(&read, POLL_IN), (&write, POLL_OUT), (&except, POLL_ERR)] {
                if contains(set, fd) {
                    events |= event;
                }
            }
            if !events.is_empty() {
                out.push(PollEvent::new(entry.token, events));
            }
        }
        Ok(())
    }

    fn reset(&mut self) -> io::Result<()> {
        *self = Select::new();
        Ok(())
    }

    fn backend(&self) -> Backend {
        Backend::Select
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::POLL_HUP;
    use crate::poller::poll::tests::{
        HIGH_FD_FLOOR, closed_behind_our_back_is_nval_until_unregistered, dup_at_least, fd_token, high_fd,
        lock_fd_numbers, low_fd_numbers, poll_sorted, raise_nofile_limit, reset, skip_loudly,
    };
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;
    use std::time::Instant;

    const LONG: Option<Duration> = Some(Duration::from_secs(5));

    fn poll_once(poller: &mut Select, timeout: Option<Duration>) -> Vec<(RawFd, Events)> {
        poll_sorted(poller, timeout)
    }

    #[test]
    fn unregistering_the_highest_fd_brings_max_fd_down() {
        let _fds = low_fd_numbers();
        let (a, _b) = UnixStream::pair().unwrap();
        let (c, _d) = UnixStream::pair().unwrap();
        let mut poller = Select::new();
        poller
            .register(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_IN)
            .unwrap();
        poller
            .register(c.as_raw_fd(), fd_token(c.as_raw_fd()), POLL_OUT)
            .unwrap();
        let (low, high) = (a.as_raw_fd().min(c.as_raw_fd()), a.as_raw_fd().max(c.as_raw_fd()));
        poller.unregister(high).unwrap();
        assert_eq!(poller.max_fd, low);
        poller.unregister(low).unwrap();
        assert!(poller.is_empty());
    }

    // The rest of the contract's error cases are in `poller::contract_tests`.
    #[test]
    fn out_of_range_fds_are_not_found_when_unregistered() {
        let mut poller = Select::new();
        assert_eq!(poller.unregister(-1).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(poller.unregister(100_000).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn negative_fd_is_refused_as_invalid_input() {
        let mut poller = Select::new();
        let err = poller.register(-1, fd_token(-1), POLL_IN).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("FD_SETSIZE"), "{err}");
    }

    #[test]
    fn fd_at_or_above_fd_setsize_is_refused_never_set() {
        let _guard = lock_fd_numbers();
        let wanted = libc::FD_SETSIZE as u64 + 64;
        let reached = raise_nofile_limit(wanted);
        if reached < wanted {
            let why = format!("the RLIMIT_NOFILE hard limit is {reached}: no fd can reach FD_SETSIZE");
            skip_loudly("fd_at_or_above_fd_setsize_is_refused_never_set", &why);
            return;
        }
        let (a, _b) = UnixStream::pair().unwrap();
        let big = dup_at_least(a.as_raw_fd(), libc::FD_SETSIZE as RawFd).unwrap();
        let fd = big.as_raw_fd();
        assert!(fd >= libc::FD_SETSIZE as RawFd);
        let mut poller = Select::new();
        let err = poller.register(fd, fd_token(fd), POLL_IN).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("FD_SETSIZE"), "{err}");
        assert_eq!(PollerError::of(&err).unwrap().fd, Some(fd));
        let err = poller.modify(fd, fd_token(fd), POLL_OUT).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(poller.is_empty());

        // The last fd that fits is accepted and watched.
        let last = libc::FD_SETSIZE as RawFd - 1;
        let edge = dup_at_least(a.as_raw_fd(), last).unwrap();
        if edge.as_raw_fd() == last {
            poller.register(last, fd_token(last), POLL_OUT).unwrap();
            assert_eq!(poll_once(&mut poller, LONG), [(last, POLL_OUT)]);
        } else {
            skip_loudly(
                "fd_at_or_above_fd_setsize_is_refused_never_set (edge)",
                "fd 1023 is in use",
            );
        }
        drop(edge);
        drop(big);
    }

    #[test]
    fn fd_closed_behind_our_back_is_nval_and_others_still_reported() {
        // Select also counts the closed fds it watches (the reason it polls at once).
        closed_behind_our_back_is_nval_until_unregistered(Select::new(), |poller, registered| {
            assert_eq!(poller.closed, usize::from(registered));
        });
    }

    #[test]
    fn closed_fd_makes_poll_return_at_once_instead_of_blocking() {
        let _guard = lock_fd_numbers();
        let (a, _b) = UnixStream::pair().unwrap();
        let (c, _d) = UnixStream::pair().unwrap();
        let a = {
            let high = high_fd(&a);
            drop(a);
            high
        };
        let mut poller = Select::new();
        let stale = a.as_raw_fd();
        poller.register(stale, fd_token(stale), POLL_IN).unwrap();
        poller
            .register(c.as_raw_fd(), fd_token(c.as_raw_fd()), POLL_IN)
            .unwrap();
        drop(a);
        for _ in 0..2 {
            let start = Instant::now();
            assert_eq!(poll_once(&mut poller, None), [(stale, POLL_NVAL)]);
            assert!(start.elapsed() < Duration::from_secs(1), "waited {:?}", start.elapsed());
        }
    }

    #[test]
    fn closed_fd_whose_number_is_reused_is_watched_again() {
        let _guard = lock_fd_numbers();
        let (a, _b) = UnixStream::pair().unwrap();
        let (c, mut d) = UnixStream::pair().unwrap();
        let a = high_fd(&a);
        let number = a.as_raw_fd();
        let mut poller = Select::new();
        poller.register(number, fd_token(number), POLL_IN).unwrap();
        drop(a);
        assert_eq!(poll_once(&mut poller, LONG), [(number, POLL_NVAL)]);
        // SAFETY: `number` is closed and, under the fd-number lock, used by no one;
        // dup2 makes it a second descriptor of c's socket, owned by `reused`.
        let reused = unsafe {
            assert_eq!(libc::dup2(c.as_raw_fd(), number), number);
            OwnedFd::from_raw_fd(number)
        };
        d.write_all(b"x").unwrap();
        assert_eq!(poll_once(&mut poller, LONG), [(number, POLL_IN)]);
        assert_eq!(poller.closed, 0);
        drop(reused);
    }

    #[test]
    fn peer_hang_up_is_seen_only_as_readable() {
        let _fds = low_fd_numbers();
        let (a, b) = UnixStream::pair().unwrap();
        let mut poller = Select::new();
        poller
            .register(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_IN | POLL_ERR)
            .unwrap();
        drop(b);
        let events = poll_once(&mut poller, LONG);
        assert_eq!(events, [(a.as_raw_fd(), POLL_IN)]);
        assert!(!events[0].1.contains(POLL_HUP));
    }

    #[test]
    fn tcp_reset_is_seen_only_as_readable() {
        let _fds = low_fd_numbers();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        reset(server);
        let mut poller = Select::new();
        poller
            .register(client.as_raw_fd(), fd_token(client.as_raw_fd()), POLL_IN | POLL_ERR)
            .unwrap();
        assert_eq!(poll_once(&mut poller, LONG), [(client.as_raw_fd(), POLL_IN)]);
    }

    #[test]
    fn tcp_urgent_data_lands_in_the_exceptional_set_as_poll_err() {
        let _fds = low_fd_numbers();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        // SAFETY: send reads one byte from a live static buffer.
        let sent = unsafe { libc::send(client.as_raw_fd(), b"!".as_ptr().cast(), 1, libc::MSG_OOB) };
        assert_eq!(sent, 1, "send MSG_OOB: {}", io::Error::last_os_error());
        let mut poller = Select::new();
        poller
            .register(server.as_raw_fd(), fd_token(server.as_raw_fd()), POLL_ERR)
            .unwrap();
        assert_eq!(poll_once(&mut poller, LONG), [(server.as_raw_fd(), POLL_ERR)]);
    }

    #[test]
    fn timeouts_round_up_to_the_microsecond() {
        let tv = timeval_for(Duration::ZERO);
        assert_eq!((tv.tv_sec, tv.tv_usec), (0, 0));
        let tv = timeval_for(Duration::from_nanos(1));
        assert_eq!((tv.tv_sec, tv.tv_usec), (0, 1));
        let tv = timeval_for(Duration::new(2, 999_999_001));
        assert_eq!((tv.tv_sec, tv.tv_usec), (3, 0));
        let tv = timeval_for(Duration::MAX);
        assert_eq!(tv.tv_sec, libc::time_t::MAX);
        assert!((0..1_000_000).contains(&tv.tv_usec));
    }

    #[test]
    fn huge_timeout_is_accepted_by_the_kernel() {
        let _fds = low_fd_numbers();
        let (a, _b) = UnixStream::pair().unwrap();
        let mut poller = Select::new();
        poller
            .register(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_OUT)
            .unwrap();
        assert_eq!(poll_once(&mut poller, Some(Duration::MAX)), [(a.as_raw_fd(), POLL_OUT)]);
    }

    #[test]
    fn many_fds_up_to_the_set_limit_are_watched() {
        let _guard = lock_fd_numbers();
        let reached = raise_nofile_limit(libc::FD_SETSIZE as u64);
        if reached < libc::FD_SETSIZE as u64 {
            let why = format!("RLIMIT_NOFILE is {reached}: only fds below it are tried");
            skip_loudly("many_fds_up_to_the_set_limit_are_watched (in part)", &why);
        }
        let top = (libc::FD_SETSIZE as u64).min(reached) as RawFd;
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut dups = Vec::new();
        let mut poller = Select::new();
        // Duplicates spread over the upper part of the set, across several words.
        for min in (HIGH_FD_FLOOR..top - 8).step_by(61) {
            let dup = dup_at_least(a.as_raw_fd(), min).unwrap();
            poller
                .register(dup.as_raw_fd(), fd_token(dup.as_raw_fd()), POLL_IN)
                .unwrap();
            dups.push(dup);
        }
        b.write_all(b"x").unwrap();
        let expected: Vec<_> = dups.iter().map(|dup| (dup.as_raw_fd(), POLL_IN)).collect();
        assert_eq!(poll_once(&mut poller, LONG), expected);
    }
}
