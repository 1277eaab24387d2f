//! The kqueue backend (macOS, iOS, FreeBSD, NetBSD, OpenBSD, DragonFly): the
//! original's `KqueueLoop`, with its changes batched.
//!
//! # Mapping
//!
//! kqueue watches *filters*, not masks. As the original's `_control(fd, mode, flags)`,
//! a mode becomes one kevent per filter:
//!
//! | mode bit   | filter         |
//! |------------|----------------|
//! | `POLL_IN`  | `EVFILT_READ`  |
//! | `POLL_OUT` | `EVFILT_WRITE` |
//!
//! added with `EV_ADD` (level-triggered: no `EV_CLEAR`) and removed with `EV_DELETE`.
//! The poller remembers `fd -> (mode, token)` (the original's `_fds`, with the
//! token each report carries beside the mode), so that
//! [`unregister`](Poller::unregister) deletes exactly the filters that were added and
//! [`modify`](Poller::modify) touches only the filters that differ: it adds the new
//! ones and deletes the dropped ones, never delete-all then re-add.
//!
//! What a poll fetches is merged per descriptor, starting from `POLL_NULL`:
//! `EVFILT_READ` -> `POLL_IN`, `EVFILT_WRITE` -> `POLL_OUT`, `EV_EOF` -> also
//! `POLL_HUP`, and `EV_EOF` with an error in `fflags` (a socket's pending error) ->
//! also `POLL_ERR`. Both filters firing yield one report, with the fd's token.
//!
//! The token stays in that table rather than in each kevent's `udata`: `udata` is
//! pointer-sized (32 bits on 32-bit BSDs, where the 64-bit token does not fit), the
//! table is consulted for every event anyway (for the mode, and to merge the two
//! filters), and `udata` already tells a failed add from a failed delete.
//!
//! # Batched changes
//!
//! [`register`](Poller::register), [`modify`](Poller::modify) and
//! [`unregister`](Poller::unregister) make no system call: they validate against
//! the map (and `register` checks that the descriptor is open), then queue kevents
//! in a changelist, which the next [`poll`](Poller::poll) hands to the same
//! `kevent()` call that waits. An add queued and then deleted before the next poll
//! is dropped from the changelist instead of being sent twice.
//!
//! A change that the kernel refuses at submission (for instance the descriptor was
//! closed between `register` and `poll`) comes back as an `EV_ERROR` entry in the
//! event list. For a refused add, the descriptor is reported as `POLL_NVAL` (errno
//! `EBADF`) or `POLL_ERR` (any other errno), dropped from the map with a warning,
//! and its other filters are queued for deletion. A refused delete means the filter
//! is gone already, which is what was wanted: it is only logged at debug level.
//! (When a change fails, the kernel returns at once without waiting for events;
//! the next poll waits as usual.) `EV_RECEIPT` is not used, because a receipt for
//! every change would likewise cut every wait short.
//!
//! Every change that fails needs room for its `EV_ERROR` entry, or the kernel fails
//! the whole call and drops the rest of the changelist. So a poll fetches up to
//! `max_events` events, or as many as there are queued changes if that is more.
//!
//! # Limits
//!
//! kqueue learns of errors and hang-ups only through a filter: a descriptor watched
//! with `POLL_NULL` has no filter, so nothing is reported for it (contract point 3
//! holds for any mode with `POLL_IN` or `POLL_OUT`). A descriptor closed while
//! registered loses its filters silently, as on epoll; one closed before its
//! registration reaches the kernel is reported as `POLL_NVAL` (contract point 4).
//!
//! # Testing
//!
//! This backend is compiled and linted here (`.ci/cross-check.sh` runs clippy for
//! `x86_64-unknown-freebsd` and `aarch64-apple-darwin`), but it is not executed:
//! no BSD or macOS machine runs the tests below.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::time::Duration;

use super::{Backend, PollEvent, Poller, PollerError, fd_is_open};
use crate::events::{Events, POLL_ERR, POLL_HUP, POLL_IN, POLL_NULL, POLL_NVAL, POLL_OUT};
use crate::token::Token;

/// How many events one `kevent()` fetches at most (the original's `MAX_EVENTS`).
const DEFAULT_MAX_EVENTS: usize = 1024;

/// The type of `kevent.filter` (and of the `EVFILT_*` constants) on this system.
#[cfg(target_os = "netbsd")]
type Filter = u32;
/// The type of `kevent.filter` (and of the `EVFILT_*` constants) on this system.
#[cfg(not(target_os = "netbsd"))]
type Filter = i16;

/// The type of `kevent.flags` (and of the `EV_*` constants) on this system.
#[cfg(target_os = "netbsd")]
type Flags = u32;
/// The type of `kevent.flags` (and of the `EV_*` constants) on this system.
#[cfg(not(target_os = "netbsd"))]
type Flags = u16;

/// Each mode bit and the filter that watches it: the original's `_control` mapping.
const FILTERS: [(Events, Filter); 2] = [(POLL_IN, libc::EVFILT_READ), (POLL_OUT, libc::EVFILT_WRITE)];

/// `udata` of a queued delete: tells its `EV_ERROR` entry apart from an add's,
/// since FreeBSD overwrites `flags` with `EV_ERROR` in the entry.
const TAG_DELETE: usize = 0;
/// `udata` of a queued add.
const TAG_ADD: usize = 1;

/// A kevent for `fd` and `filter`; every other field is zero.
fn make_kevent(fd: RawFd, filter: Filter, flags: Flags, tag: usize) -> libc::kevent {
    // SAFETY: `kevent` is a plain C struct of integers and a raw pointer, all of which
    // are valid when zeroed (the zeroing also covers FreeBSD's `ext` array).
    let mut ev: libc::kevent = unsafe { std::mem::zeroed() };
    ev.ident = fd as _;
    ev.filter = filter;
    ev.flags = flags;
    ev.udata = tag as _;
    ev
}

/// A poller on a kqueue. Closed on drop (queued changes that no poll submitted are
/// dropped with it).
///
/// ```
/// use evloop::poller::{PollEvent, Poller, kqueue::Kqueue};
/// use evloop::{POLL_IN, Token};
/// use std::os::fd::AsRawFd;
///
/// let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
/// let mut kqueue = Kqueue::new()?;
/// kqueue.register(a.as_raw_fd(), Token::from_u64(7), POLL_IN)?;
/// std::io::Write::write_all(&mut b, b"x")?;
/// let mut ready = Vec::new();
/// kqueue.poll(None, &mut ready)?;
/// assert_eq!(ready, [PollEvent::new(Token::from_u64(7), POLL_IN)]);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Kqueue {
    kq: OwnedFd,
    /// Each registered descriptor, its mode and its token: the original's `_fds`.
    fds: HashMap<RawFd, (Events, Token)>,
    /// Changes queued for the next `kevent()` call.
    changes: Vec<libc::kevent>,
    /// Where `kevent()` writes what it fetched; at least `max_events` long.
    events: Vec<libc::kevent>,
    /// How many events a poll fetches at most (more only to fit a long changelist).
    max_events: usize,
    /// Scratch for merging: fd -> its index in the poll's output. Cleared, not
    /// reallocated, on every poll.
    slots: HashMap<RawFd, usize>,
}

impl Kqueue {
    /// Open a new kqueue (close-on-exec) that fetches at most 1024 events per poll.
    pub fn new() -> io::Result<Kqueue> {
        Kqueue::with_max_events(DEFAULT_MAX_EVENTS)
    }

    /// Open a new kqueue (close-on-exec) that fetches at most `max_events` per poll
    /// (at least 1); events beyond that wait for the next poll.
    pub fn with_max_events(max_events: usize) -> io::Result<Kqueue> {
        let max_events = max_events.clamp(1, libc::c_int::MAX as usize);
        // SAFETY: kqueue() takes no arguments and returns a new descriptor or -1.
        let fd = unsafe { libc::kqueue() };
        if fd < 0 {
            return Err(PollerError::os(
                Backend::Kqueue,
                "open",
                None,
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: fd was just returned by kqueue() and is owned by no one else.
        let kq = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: F_SETFD on our own open descriptor only sets its close-on-exec flag.
        if unsafe { libc::fcntl(kq.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            return Err(PollerError::os(
                Backend::Kqueue,
                "open",
                None,
                io::Error::last_os_error(),
            ));
        }
        Ok(Kqueue {
            kq,
            fds: HashMap::new(),
            changes: Vec::new(),
            events: vec![make_kevent(0, 0, 0, TAG_DELETE); max_events],
            max_events,
            slots: HashMap::new(),
        })
    }

    /// Queue `EV_ADD` of `filter` on `fd`.
    fn queue_add(&mut self, fd: RawFd, filter: Filter) {
        self.changes.push(make_kevent(fd, filter, libc::EV_ADD, TAG_ADD));
    }

    /// Queue `EV_DELETE` of `filter` on `fd`, or, if an add of that filter is still
    /// queued (it never reached the kernel), drop the add instead.
    fn queue_delete(&mut self, fd: RawFd, filter: Filter) {
        let pending_add = self
            .changes
            .iter()
            .position(|ev| ev.ident == fd as usize && ev.filter == filter && ev.udata as usize == TAG_ADD);
        match pending_add {
            Some(index) => {
                self.changes.remove(index);
            }
            None => self.changes.push(make_kevent(fd, filter, libc::EV_DELETE, TAG_DELETE)),
        }
    }

    /// Queue the changes that turn watching `old` into watching `new` on `fd`: adds
    /// for the filters only `new` has, deletes for those only `old` has.
    fn queue_diff(&mut self, fd: RawFd, old: Events, new: Events) {
        for (bit, filter) in FILTERS {
            match (old.intersects(bit), new.intersects(bit)) {
                (false, true) => self.queue_add(fd, filter),
                (true, false) => self.queue_delete(fd, filter),
                _ => {}
            }
        }
    }

    /// Merge `events` for `fd` (registered with `token`) into `out`: OR-ed into the
    /// fd's entry if this poll has one already, else appended as a new entry.
    fn merge(&mut self, out: &mut Vec<PollEvent>, fd: RawFd, token: Token, events: Events) {
        match self.slots.entry(fd) {
            Entry::Occupied(slot) => out[*slot.get()].merge(events),
            Entry::Vacant(slot) => {
                slot.insert(out.len());
                out.push(PollEvent::new(token, events));
            }
        }
    }

    /// Turn the first `n` entries that `kevent()` wrote into `out`, one entry per fd.
    fn collect(&mut self, n: usize, out: &mut Vec<PollEvent>) {
        out.clear();
        self.slots.clear();
        for i in 0..n {
            let ev = self.events[i];
            let fd = ev.ident as RawFd;
            if ev.flags & libc::EV_ERROR != 0 {
                self.change_failed(out, fd, ev);
                continue;
            }
            let Some(&(mode, token)) = self.fds.get(&fd) else {
                log::debug!("kqueue: event on fd {fd}, which is not registered: ignored");
                continue;
            };
            let mut events = POLL_NULL;
            for (bit, filter) in FILTERS {
                if ev.filter == filter {
                    events |= bit & mode;
                }
            }
            if ev.flags & libc::EV_EOF != 0 {
                events |= POLL_HUP;
                if ev.fflags != 0 {
                    events |= POLL_ERR;
                }
            }
            if !events.is_empty() {
                self.merge(out, fd, token, events);
            }
        }
    }

    /// Handle the `EV_ERROR` entry of a change the kernel refused at submission.
    fn change_failed(&mut self, out: &mut Vec<PollEvent>, fd: RawFd, ev: libc::kevent) {
        let errno = ev.data as i32;
        if errno == 0 {
            // A receipt, not an error (none are asked for; harmless if one comes).
            return;
        }
        let err = io::Error::from_raw_os_error(errno);
        if ev.udata as usize == TAG_DELETE {
            log::debug!(
                "kqueue: deleting filter {} of fd {fd} failed: {err} (already gone)",
                ev.filter
            );
            return;
        }
        let events = if errno == libc::EBADF { POLL_NVAL } else { POLL_ERR };
        if let Some((mode, token)) = self.fds.remove(&fd) {
            log::warn!("kqueue: fd {fd} dropped: adding filter {} failed: {err}", ev.filter);
            // Delete whatever other filter of the fd did reach the kernel; deleting one
            // that failed too fails harmlessly.
            for (bit, filter) in FILTERS {
                if mode.intersects(bit) && filter != ev.filter {
                    self.queue_delete(fd, filter);
                }
            }
            self.merge(out, fd, token, events);
        } else if let Some(&at) = self.slots.get(&fd) {
            // The fd's other filter failed too: already dropped and reported.
            out[at].merge(events);
        }
    }
}

impl Poller for Kqueue {
    fn register(&mut self, fd: RawFd, token: Token, mode: Events) -> io::Result<()> {
        if self.fds.contains_key(&fd) {
            return Err(PollerError::already_registered(Backend::Kqueue, fd));
        }
        if !fd_is_open(fd) {
            return Err(PollerError::os(
                Backend::Kqueue,
                "register",
                Some(fd),
                io::Error::from_raw_os_error(libc::EBADF),
            ));
        }
        self.fds.insert(fd, (mode, token));
        self.queue_diff(fd, POLL_NULL, mode);
        Ok(())
    }

    fn unregister(&mut self, fd: RawFd) -> io::Result<()> {
        let Some((old, _)) = self.fds.remove(&fd) else {
            return Err(PollerError::not_registered(Backend::Kqueue, "unregister", fd));
        };
        self.queue_diff(fd, old, POLL_NULL);
        Ok(())
    }

    fn modify(&mut self, fd: RawFd, token: Token, mode: Events) -> io::Result<()> {
        let Some(slot) = self.fds.get_mut(&fd) else {
            return Err(PollerError::not_registered(Backend::Kqueue, "modify", fd));
        };
        let (old, _) = std::mem::replace(slot, (mode, token));
        self.queue_diff(fd, old, mode);
        Ok(())
    }

    fn poll(&mut self, timeout: Option<Duration>, out: &mut Vec<PollEvent>) -> io::Result<()> {
        out.clear();
        // Room for an EV_ERROR entry per change, so that no change is ever lost.
        let capacity = self.max_events.max(self.changes.len());
        if self.events.len() < capacity {
            self.events.resize(capacity, make_kevent(0, 0, 0, TAG_DELETE));
        }
        // Capped at i32::MAX seconds (68 years): some kernels refuse larger values.
        let timespec = timeout.map(|d| libc::timespec {
            tv_sec: d.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: d.subsec_nanos() as _,
        });
        let timespec_ptr = timespec.as_ref().map_or(ptr::null(), |ts| ts as *const libc::timespec);
        // SAFETY: kq is our open kqueue; the changelist is valid for `changes.len()`
        // entries and the event list for `capacity` writable entries, both living
        // across the call; the timespec is null (block) or points to a local.
        let n = unsafe {
            libc::kevent(
                self.kq.as_raw_fd(),
                self.changes.as_ptr(),
                self.changes.len() as _,
                self.events.as_mut_ptr(),
                capacity as _,
                timespec_ptr,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            // The changes were applied before the wait was interrupted (EINTR); for
            // any other failure, resubmitting them would only fail again.
            self.changes.clear();
            return Err(PollerError::os(Backend::Kqueue, "poll", None, err));
        }
        self.changes.clear();
        self.collect(n as usize, out);
        Ok(())
    }

    /// A new kqueue replaces this one, and the table and queued changes go with
    /// the old one. (kqueue drops a closed fd's filters itself, dups or not, so
    /// the loop has no reason to call this; it is here for the contract.)
    fn reset(&mut self) -> io::Result<()> {
        *self = Kqueue::with_max_events(self.max_events)?;
        Ok(())
    }

    fn backend(&self) -> Backend {
        Backend::Kqueue
    }
}

impl AsRawFd for Kqueue {
    fn as_raw_fd(&self) -> RawFd {
        self.kq.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poller::poll::tests::{as_fds, fd_token};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::Instant;

    fn pair() -> (UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    fn poll_now(kq: &mut Kqueue) -> Vec<(RawFd, Events)> {
        let mut out = Vec::new();
        kq.poll(Some(Duration::ZERO), &mut out).unwrap();
        as_fds(&out)
    }

    /// The queued changes as `(fd, filter, is_add)`.
    fn queued(kq: &Kqueue) -> Vec<(RawFd, Filter, bool)> {
        kq.changes
            .iter()
            .map(|ev| (ev.ident as RawFd, ev.filter, ev.flags & libc::EV_ADD != 0))
            .collect()
    }

    #[test]
    fn readable() {
        let (a, mut b) = pair();
        let mut kq = Kqueue::new().unwrap();
        kq.register(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_IN).unwrap();
        assert_eq!(poll_now(&mut kq), []);
        b.write_all(b"x").unwrap();
        let mut out = Vec::new();
        kq.poll(None, &mut out).unwrap();
        assert_eq!(as_fds(&out), [(a.as_raw_fd(), POLL_IN)]);
    }

    #[test]
    fn writable() {
        let (a, _b) = pair();
        let mut kq = Kqueue::new().unwrap();
        kq.register(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_OUT).unwrap();
        assert_eq!(poll_now(&mut kq), [(a.as_raw_fd(), POLL_OUT)]);
    }

    #[test]
    fn both_filters_merge_into_one_entry() {
        let (a, mut b) = pair();
        let mut kq = Kqueue::new().unwrap();
        kq.register(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_IN | POLL_OUT)
            .unwrap();
        b.write_all(b"x").unwrap();
        assert_eq!(poll_now(&mut kq), [(a.as_raw_fd(), POLL_IN | POLL_OUT)]);
    }

    #[test]
    fn level_triggered_until_drained() {
        let (mut a, mut b) = pair();
        let mut kq = Kqueue::new().unwrap();
        kq.register(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_IN).unwrap();
        b.write_all(b"xy").unwrap();
        assert_eq!(poll_now(&mut kq), [(a.as_raw_fd(), POLL_IN)]);
        assert_eq!(poll_now(&mut kq), [(a.as_raw_fd(), POLL_IN)]);
        let mut buf = [0u8; 8];
        assert_eq!(a.read(&mut buf).unwrap(), 2);
        assert_eq!(poll_now(&mut kq), []);
    }

    #[test]
    fn hang_up_is_reported() {
        let (a, b) = pair();
        let mut kq = Kqueue::new().unwrap();
        kq.register(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_IN).unwrap();
        drop(b);
        let out = poll_now(&mut kq);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, a.as_raw_fd());
        assert!(out[0].1.contains(POLL_IN | POLL_HUP), "{:?}", out[0].1);
    }

    #[test]
    fn modify_changes_only_the_differing_filter() {
        let (a, mut b) = pair();
        let fd = a.as_raw_fd();
        let mut kq = Kqueue::new().unwrap();
        kq.register(fd, fd_token(fd), POLL_IN | POLL_OUT).unwrap();
        assert_eq!(
            queued(&kq),
            [(fd, libc::EVFILT_READ, true), (fd, libc::EVFILT_WRITE, true)]
        );
        poll_now(&mut kq);
        assert!(kq.changes.is_empty());

        kq.modify(fd, fd_token(fd), POLL_OUT).unwrap();
        assert_eq!(queued(&kq), [(fd, libc::EVFILT_READ, false)]);
        b.write_all(b"x").unwrap();
        assert_eq!(poll_now(&mut kq), [(fd, POLL_OUT)]);

        kq.modify(fd, fd_token(fd), POLL_IN).unwrap();
        assert_eq!(
            queued(&kq),
            [(fd, libc::EVFILT_READ, true), (fd, libc::EVFILT_WRITE, false)]
        );
        assert_eq!(poll_now(&mut kq), [(fd, POLL_IN)]);

        kq.modify(fd, fd_token(fd), POLL_IN | POLL_ERR).unwrap();
        assert!(kq.changes.is_empty(), "no filter differs");
    }

    #[test]
    fn an_add_deleted_before_the_poll_is_never_sent() {
        let (a, _b) = pair();
        let fd = a.as_raw_fd();
        let mut kq = Kqueue::new().unwrap();
        kq.register(fd, fd_token(fd), POLL_IN).unwrap();
        kq.modify(fd, fd_token(fd), POLL_OUT).unwrap();
        assert_eq!(queued(&kq), [(fd, libc::EVFILT_WRITE, true)]);
        kq.unregister(fd).unwrap();
        assert!(kq.changes.is_empty());
        assert_eq!(poll_now(&mut kq), []);
    }

    #[test]
    fn unregister_stops_the_reports() {
        let (a, mut b) = pair();
        let fd = a.as_raw_fd();
        let mut kq = Kqueue::new().unwrap();
        kq.register(fd, fd_token(fd), POLL_IN | POLL_OUT).unwrap();
        b.write_all(b"x").unwrap();
        assert_eq!(poll_now(&mut kq), [(fd, POLL_IN | POLL_OUT)]);
        kq.unregister(fd).unwrap();
        assert_eq!(
            queued(&kq),
            [(fd, libc::EVFILT_READ, false), (fd, libc::EVFILT_WRITE, false)]
        );
        assert_eq!(poll_now(&mut kq), []);
        kq.register(fd, fd_token(fd), POLL_IN).unwrap();
        assert_eq!(poll_now(&mut kq), [(fd, POLL_IN)]);
    }

    #[test]
    fn errors_follow_the_contract() {
        let (a, _b) = pair();
        let fd = a.as_raw_fd();
        let mut kq = Kqueue::new().unwrap();
        kq.register(fd, fd_token(fd), POLL_IN).unwrap();

        let err = kq.register(fd, fd_token(fd), POLL_OUT).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        let inner = PollerError::of(&err).unwrap();
        assert_eq!(
            (inner.backend, inner.op, inner.fd),
            (Backend::Kqueue, "register", Some(fd))
        );

        kq.unregister(fd).unwrap();
        let err = kq.unregister(fd).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(PollerError::of(&err).unwrap().op, "unregister");
        let err = kq.modify(fd, fd_token(fd), POLL_IN).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(PollerError::of(&err).unwrap().op, "modify");
        assert!(!kq.fds.contains_key(&fd), "a failed modify registers nothing");

        for closed in [-1, i32::MAX / 2] {
            let err = kq.register(closed, fd_token(closed), POLL_IN).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            assert_eq!(PollerError::of(&err).unwrap().errno, Some(libc::EBADF));
        }
        assert!(kq.changes.is_empty());
    }

    #[test]
    fn refused_add_is_reported_once_and_dropped() {
        let (a, _b) = pair();
        let fd = a.as_raw_fd();
        let mut kq = Kqueue::new().unwrap();
        kq.register(fd, fd_token(fd), POLL_IN | POLL_OUT).unwrap();
        kq.changes.clear();
        // What the kernel writes when both adds fail with EBADF.
        for (i, filter) in [libc::EVFILT_READ, libc::EVFILT_WRITE].into_iter().enumerate() {
            let mut ev = make_kevent(fd, filter, libc::EV_ERROR, TAG_ADD);
            ev.data = libc::EBADF as _;
            kq.events[i] = ev;
        }
        let mut out = Vec::new();
        kq.collect(2, &mut out);
        assert_eq!(as_fds(&out), [(fd, POLL_NVAL)]);
        assert!(!kq.fds.contains_key(&fd));
        assert_eq!(queued(&kq), [(fd, libc::EVFILT_WRITE, false)]);
    }

    #[test]
    fn refused_delete_is_ignored() {
        let mut kq = Kqueue::new().unwrap();
        let mut ev = make_kevent(7, libc::EVFILT_READ, libc::EV_ERROR, TAG_DELETE);
        ev.data = libc::ENOENT as _;
        kq.events[0] = ev;
        let mut out = Vec::new();
        kq.collect(1, &mut out);
        assert_eq!(as_fds(&out), []);
    }

    #[test]
    fn eof_with_an_error_is_reported_as_error() {
        let (a, _b) = pair();
        let fd = a.as_raw_fd();
        let mut kq = Kqueue::new().unwrap();
        kq.register(fd, fd_token(fd), POLL_OUT).unwrap();
        let mut ev = make_kevent(fd, libc::EVFILT_WRITE, libc::EV_EOF, TAG_ADD);
        ev.fflags = libc::ECONNRESET as _;
        kq.events[0] = ev;
        let mut out = Vec::new();
        kq.collect(1, &mut out);
        assert_eq!(as_fds(&out), [(fd, POLL_OUT | POLL_HUP | POLL_ERR)]);
    }

    #[test]
    fn max_events_limits_one_poll() {
        let (a, _b) = pair();
        let (c, _d) = pair();
        let mut kq = Kqueue::with_max_events(1).unwrap();
        kq.register(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_OUT).unwrap();
        kq.register(c.as_raw_fd(), fd_token(c.as_raw_fd()), POLL_OUT).unwrap();
        // Two changes queued: room for both, whatever max_events says.
        let first = poll_now(&mut kq);
        assert!(!first.is_empty());
        assert_eq!(poll_now(&mut kq).len(), 1);
    }

    #[test]
    fn timeout_waits_at_least_as_asked() {
        let mut kq = Kqueue::new().unwrap();
        let start = Instant::now();
        let mut out = Vec::new();
        kq.poll(Some(Duration::from_millis(20)), &mut out).unwrap();
        assert!(out.is_empty());
        assert!(start.elapsed() >= Duration::from_millis(20));
    }
}
