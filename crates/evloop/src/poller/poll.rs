//! The poll(2) backend: any number of descriptors, everywhere POSIX exists.
//!
//! The poller owns the `pollfd` array that poll(2) reads, so a poll is a single
//! system call with no per-call setup: registering appends to the array,
//! unregistering swap-removes from it, and an index from fd number to array
//! position keeps all three operations O(1). Each fd's token sits beside it, at
//! the same position of a parallel array, and goes out with its reports. The cost poll(2) does pay is that the
//! kernel scans the whole array on every call, so a poll is O(registered fds).
//!
//! Masks are translated bit by bit rather than passed through: the `POLL*`
//! constants differ between platforms, and only epoll's values are the original's.
//! `POLL_IN` asks for `POLLIN | POLLPRI` (urgent data is still data to read) and
//! `POLL_OUT` for `POLLOUT`. The kernel always reports `POLLERR`, `POLLHUP` and
//! `POLLNVAL`, so contract point 3 holds with nothing requested: a `POLL_NULL` mode
//! is a `pollfd` with `events == 0`, which still sees errors and hang-ups.
//!
//! A descriptor closed behind the poller's back is reported by the kernel as
//! `POLLNVAL` alone, and becomes a `POLL_NVAL` report here (contract point 5). It is
//! reported on every poll until it is unregistered. If its number is reused by a
//! new file before then, poll(2) cannot tell, and watches the new file instead.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use super::{Backend, PollEvent, Poller, PollerError, refuse_closed, timeout_ms};
use crate::events::{Events, POLL_ERR, POLL_HUP, POLL_IN, POLL_NVAL, POLL_OUT};
use crate::token::Token;

/// A poller on poll(2). Holds no kernel object, so dropping it closes nothing.
///
/// ```
/// use evloop::poller::{PollEvent, Poller, poll::Poll};
/// use evloop::{POLL_IN, Token};
/// use std::os::fd::AsRawFd;
///
/// let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
/// let mut poll = Poll::new();
/// poll.register(a.as_raw_fd(), Token::from_u64(7), POLL_IN)?;
/// std::io::Write::write_all(&mut b, b"x")?;
/// let mut ready = Vec::new();
/// poll.poll(None, &mut ready)?;
/// assert_eq!(ready, [PollEvent::new(Token::from_u64(7), POLL_IN)]);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Default)]
pub struct Poll {
    /// Handed to poll(2) as is; order is arbitrary (swap-remove reorders it).
    fds: Vec<libc::pollfd>,
    /// `tokens[i]` is the token of `fds[i]`.
    tokens: Vec<Token>,
    /// `index[fd]` is fd's position in `fds`. Indexed by fd number, because fd
    /// numbers are small and dense; its length follows the highest fd registered.
    index: Vec<Option<usize>>,
}

impl Poll {
    /// A new, empty poller.
    pub fn new() -> Poll {
        Poll::default()
    }

    /// How many descriptors are registered.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// True when no descriptor is registered.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    fn position(&self, fd: RawFd) -> Option<usize> {
        let slot = usize::try_from(fd).ok()?;
        self.index.get(slot).copied().flatten()
    }
}

/// The `events` field for a mode. Error and hang-up bits are never requested:
/// poll(2) reports them unasked and ignores them in `events`.
fn poll_events(mode: Events) -> libc::c_short {
    let mut events = 0;
    if mode.contains(POLL_IN) {
        events |= libc::POLLIN | libc::POLLPRI;
    }
    if mode.contains(POLL_OUT) {
        events |= libc::POLLOUT;
    }
    events
}

/// The contract's events for a `revents` field.
fn from_revents(revents: libc::c_short) -> Events {
    // The kernel reports POLLNVAL alone already; returning early makes "alone" part
    // of our contract rather than an accident of the platform.
    if revents & libc::POLLNVAL != 0 {
        return POLL_NVAL;
    }
    let mut events = Events::default();
    if revents & (libc::POLLIN | libc::POLLPRI) != 0 {
        events |= POLL_IN;
    }
    if revents & libc::POLLOUT != 0 {
        events |= POLL_OUT;
    }
    if revents & libc::POLLERR != 0 {
        events |= POLL_ERR;
    }
    if revents & libc::POLLHUP != 0 {
        events |= POLL_HUP;
    }
    events
}

impl Poller for Poll {
    fn register(&mut self, fd: RawFd, token: Token, mode: Events) -> io::Result<()> {
        refuse_closed(Backend::Poll, fd)?;
        if self.position(fd).is_some() {
            return Err(PollerError::already_registered(Backend::Poll, fd));
        }
        // refuse_closed let it through, so fd is not negative.
        let slot = fd as usize;
        if slot >= self.index.len() {
            self.index.resize(slot + 1, None);
        }
        self.index[slot] = Some(self.fds.len());
        self.fds.push(libc::pollfd {
            fd,
            events: poll_events(mode),
            revents: 0,
        });
        self.tokens.push(token);
        Ok(())
    }

    fn unregister(&mut self, fd: RawFd) -> io::Result<()> {
        let Some(pos) = self.position(fd) else {
            return Err(PollerError::not_registered(Backend::Poll, "unregister", fd));
        };
        self.index[fd as usize] = None;
        self.fds.swap_remove(pos);
        self.tokens.swap_remove(pos);
        if let Some(moved) = self.fds.get(pos) {
            self.index[moved.fd as usize] = Some(pos);
        }
        Ok(())
    }

    fn modify(&mut self, fd: RawFd, token: Token, mode: Events) -> io::Result<()> {
        let Some(pos) = self.position(fd) else {
            return Err(PollerError::not_registered(Backend::Poll, "modify", fd));
        };
        self.fds[pos].events = poll_events(mode);
        self.tokens[pos] = token;
        Ok(())
    }

    fn poll(&mut self, timeout: Option<Duration>, out: &mut Vec<PollEvent>) -> io::Result<()> {
        out.clear();
        // SAFETY: `fds` is a live, exclusively borrowed array of exactly `len` pollfds;
        // the kernel writes only their `revents` fields.
        let n = unsafe {
            libc::poll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                timeout_ms(timeout),
            )
        };
        if n < 0 {
            return Err(PollerError::os(Backend::Poll, "poll", None, io::Error::last_os_error()));
        }
        // poll(2) returns how many entries have non-zero revents, so the scan can
        // stop at the last one instead of walking the whole array.
        let mut remaining = n as usize;
        for (pollfd, &token) in self.fds.iter().zip(&self.tokens) {
            if remaining == 0 {
                break;
            }
            if pollfd.revents != 0 {
                remaining -= 1;
                let events = from_revents(pollfd.revents);
                if !events.is_empty() {
                    out.push(PollEvent::new(token, events));
                }
            }
        }
        Ok(())
    }

    fn reset(&mut self) -> io::Result<()> {
        *self = Poll::new();
        Ok(())
    }

    fn backend(&self) -> Backend {
        Backend::Poll
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Also home of the helpers the select backend's tests share: a lock for tests
    //! that depend on fd *numbers*, the RLIMIT_NOFILE raise, and signal delivery.

    use super::*;
    use crate::events::POLL_NULL;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

    const LONG: Option<Duration> = Some(Duration::from_secs(5));

    /// Guards fd *numbers* between tests, which run in parallel in one process and
    /// so share one descriptor table, where `open` hands out the lowest free number.
    ///
    /// Exclusive ([`lock_fd_numbers`]): tests that close an fd behind a poller's back
    /// (another test could be handed the number before the poll that should find it
    /// closed) or that fill the table (the 10 000-fd test).
    /// Shared ([`low_fd_numbers`]): tests whose fds must stay below `FD_SETSIZE`.
    static FD_NUMBERS: RwLock<()> = RwLock::new(());

    /// Take [`FD_NUMBERS`] exclusively; a test that failed while holding it does not
    /// poison it.
    pub(crate) fn lock_fd_numbers() -> RwLockWriteGuard<'static, ()> {
        FD_NUMBERS.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Take [`FD_NUMBERS`] shared: no fd-hungry test runs until the guard drops.
    pub(crate) fn low_fd_numbers() -> RwLockReadGuard<'static, ()> {
        FD_NUMBERS.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The lowest free fd number at or above `min`, as a duplicate of `fd`.
    ///
    /// Tests that close fds behind a poller's back use numbers far above those the
    /// rest of the suite opens, so that no ordinary test can be handed the number.
    pub(crate) fn dup_at_least(fd: RawFd, min: RawFd) -> io::Result<OwnedFd> {
        // SAFETY: F_DUPFD_CLOEXEC creates a new descriptor and touches no memory.
        let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
        if new < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `new` was just created by fcntl and belongs to no one else.
        Ok(unsafe { OwnedFd::from_raw_fd(new) })
    }

    /// Where [`high_fd`] numbers start: below `FD_SETSIZE`, so that select can watch
    /// them, and far above what the suite's ordinary tests open at once.
    pub(crate) const HIGH_FD_FLOOR: RawFd = 700;

    /// A duplicate of `fd` numbered at least [`HIGH_FD_FLOOR`]. Callers hold
    /// [`lock_fd_numbers`], since only the lock keeps the fd-hungry tests away.
    pub(crate) fn high_fd(fd: &impl AsRawFd) -> OwnedFd {
        raise_nofile_limit(HIGH_FD_FLOOR as u64 + 64);
        dup_at_least(fd.as_raw_fd(), HIGH_FD_FLOOR).expect("a high-numbered fd")
    }

    /// Raise the soft RLIMIT_NOFILE towards `wanted`, as far as the hard limit lets
    /// it go; returns the soft limit reached.
    pub(crate) fn raise_nofile_limit(wanted: u64) -> u64 {
        let (soft, hard) = rlimit::Resource::NOFILE.get().expect("getrlimit");
        if soft >= wanted {
            return soft;
        }
        let target = wanted.min(hard);
        match rlimit::Resource::NOFILE.set(target, hard) {
            Ok(()) => target,
            Err(_) => soft,
        }
    }

    /// Say that a test was skipped, on the real stderr: the harness captures
    /// `eprintln!` of passing tests, and a skip must not pass unseen.
    pub(crate) fn skip_loudly(test: &str, why: &str) {
        let _ = writeln!(io::stderr(), "SKIPPED {test}: {why}");
    }

    extern "C" fn ignore_signal(_: libc::c_int) {}

    /// Run `wait` on this thread while another thread keeps sending it SIGUSR1,
    /// so that a blocking call inside `wait` is interrupted.
    pub(crate) fn interrupted<T>(wait: impl FnOnce() -> T) -> T {
        // SAFETY: an all-zero sigaction is a valid "no flags, empty mask" value and the
        // handler does nothing, so it is async-signal-safe. SA_RESTART is left out, as
        // an event loop would, so the wait returns EINTR.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            assert_eq!(libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()), 0);
        }
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        let done = Arc::new(AtomicBool::new(false));
        let killer = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                // Keep signalling: a signal that lands before the call blocks is lost.
                while !done.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                    if !done.load(Ordering::SeqCst) {
                        // SAFETY: `me` is alive: it joins this thread before it returns.
                        unsafe { libc::pthread_kill(me, libc::SIGUSR1) };
                    }
                }
            })
        };
        let result = wait();
        done.store(true, Ordering::SeqCst);
        killer.join().unwrap();
        result
    }

    /// Close `server`'s end of a TCP connection with an RST instead of a FIN.
    pub(crate) fn reset(server: TcpStream) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt reads a linger struct of the size we pass from our own stack.
        let rc = unsafe {
            libc::setsockopt(
                server.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
        drop(server);
    }

    /// The token the pollers' own tests register `fd` with: the fd itself, so
    /// that a report names its fd.
    pub(crate) fn fd_token(fd: RawFd) -> Token {
        Token::from_u64(u64::from(fd as u32))
    }

    /// Reports as `(fd, events)`, for fds registered with [`fd_token`].
    pub(crate) fn as_fds(out: &[PollEvent]) -> Vec<(RawFd, Events)> {
        out.iter()
            .map(|ev| (ev.token().as_u64() as u32 as RawFd, ev.events()))
            .collect()
    }

    /// One poll, as `(fd, events)` sorted by fd so that tests can compare whole lists.
    pub(crate) fn poll_sorted(poller: &mut dyn Poller, timeout: Option<Duration>) -> Vec<(RawFd, Events)> {
        let mut out = Vec::new();
        poller.poll(timeout, &mut out).expect("poll");
        let mut out = as_fds(&out);
        out.sort_by_key(|&(fd, _)| fd);
        out
    }

    /// The case both table-keeping backends (poll, select) meet, which epoll and
    /// kqueue do not (the kernel forgets a closed fd there): an fd closed behind the
    /// poller's back is reported as `POLL_NVAL` alone, level-triggered until it is
    /// unregistered, while the others are still reported. `check` sees the poller
    /// after each poll, and whether the closed fd was still registered then.
    pub(crate) fn closed_behind_our_back_is_nval_until_unregistered<P: Poller>(
        mut poller: P,
        check: impl Fn(&P, bool),
    ) {
        let _guard = lock_fd_numbers();
        let (a, mut b) = UnixStream::pair().unwrap();
        let (c, mut d) = UnixStream::pair().unwrap();
        // The only descriptor of a's socket left is the high-numbered one.
        let a = {
            let high = high_fd(&a);
            drop(a);
            high
        };
        let stale = a.as_raw_fd();
        poller.register(stale, fd_token(stale), POLL_IN | POLL_OUT).unwrap();
        poller
            .register(c.as_raw_fd(), fd_token(c.as_raw_fd()), POLL_IN)
            .unwrap();
        b.write_all(b"x").unwrap();
        d.write_all(b"x").unwrap();
        drop(a);
        let expected = [(c.as_raw_fd(), POLL_IN), (stale, POLL_NVAL)];
        for _ in 0..2 {
            assert_eq!(poll_sorted(&mut poller, LONG), expected);
            check(&poller, true);
        }
        // Unregistering it must still work.
        poller.unregister(stale).unwrap();
        assert_eq!(poll_sorted(&mut poller, LONG), [(c.as_raw_fd(), POLL_IN)]);
        check(&poller, false);
    }

    fn poll_once(poller: &mut Poll, timeout: Option<Duration>) -> Vec<(RawFd, Events)> {
        poll_sorted(poller, timeout)
    }

    fn kind_and_errno(err: &io::Error) -> (io::ErrorKind, Option<i32>) {
        let inner = PollerError::of(err).expect("a PollerError inside");
        assert_eq!(inner.backend, Backend::Poll);
        (err.kind(), inner.errno)
    }

    #[test]
    fn unregister_fixes_the_index_of_the_swapped_in_fd() {
        let pairs: Vec<_> = (0..3).map(|_| UnixStream::pair().unwrap()).collect();
        let mut poller = Poll::new();
        for (a, _) in &pairs {
            poller
                .register(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_IN)
                .unwrap();
        }
        // The last entry moves into the first one's place; it must still be found.
        poller.unregister(pairs[0].0.as_raw_fd()).unwrap();
        poller
            .modify(pairs[2].0.as_raw_fd(), fd_token(pairs[2].0.as_raw_fd()), POLL_OUT)
            .unwrap();
        poller.unregister(pairs[1].0.as_raw_fd()).unwrap();
        assert_eq!(poller.len(), 1);
        assert_eq!(poll_once(&mut poller, LONG), [(pairs[2].0.as_raw_fd(), POLL_OUT)]);
        poller.unregister(pairs[2].0.as_raw_fd()).unwrap();
        assert!(poller.is_empty());
    }

    // The rest of the contract's error cases are in `poller::contract_tests`.
    #[test]
    fn negative_fds_are_never_registered() {
        let mut poller = Poll::new();
        // Never registered, and must not index out of bounds.
        assert_eq!(poller.unregister(-1).unwrap_err().kind(), io::ErrorKind::NotFound);
        let err = poller.register(-1, fd_token(-1), POLL_IN).unwrap_err();
        assert_eq!(kind_and_errno(&err), (io::ErrorKind::InvalidInput, Some(libc::EBADF)));
        assert!(poller.is_empty());
    }

    #[test]
    fn fd_closed_behind_our_back_is_reported_alone_as_nval() {
        closed_behind_our_back_is_nval_until_unregistered(Poll::new(), |_, _| {});
    }

    #[test]
    fn peer_hang_up_is_reported() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut poller = Poll::new();
        poller
            .register(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_IN)
            .unwrap();
        drop(b);
        let events = poll_once(&mut poller, LONG);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].0, a.as_raw_fd());
        assert!(events[0].1.contains(POLL_HUP), "{:?}", events[0].1);
        assert!(
            events[0].1.contains(POLL_IN),
            "end of file is readable: {:?}",
            events[0].1
        );
    }

    #[test]
    fn null_mode_sees_hang_up_but_not_data() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut poller = Poll::new();
        poller
            .register(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_NULL)
            .unwrap();
        b.write_all(b"x").unwrap();
        assert_eq!(poll_once(&mut poller, Some(Duration::ZERO)), []);
        drop(b);
        assert_eq!(poll_once(&mut poller, LONG), [(a.as_raw_fd(), POLL_HUP)]);
    }

    #[test]
    fn tcp_reset_is_reported_as_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        reset(server);
        let mut poller = Poll::new();
        poller
            .register(client.as_raw_fd(), fd_token(client.as_raw_fd()), POLL_IN)
            .unwrap();
        let events = poll_once(&mut poller, LONG);
        assert_eq!(events.len(), 1);
        assert!(events[0].1.contains(POLL_ERR), "{:?}", events[0].1);
    }

    #[test]
    fn output_vec_is_reused_without_reallocating() {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"x").unwrap();
        let mut poller = Poll::new();
        poller
            .register(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_IN)
            .unwrap();
        let mut out = Vec::with_capacity(8);
        out.push(PollEvent::new(fd_token(99), POLL_OUT));
        let ptr = out.as_ptr();
        poller.poll(LONG, &mut out).unwrap();
        assert_eq!(as_fds(&out), [(a.as_raw_fd(), POLL_IN)], "old contents are replaced");
        assert_eq!(out.as_ptr(), ptr);
    }

    #[test]
    fn ten_thousand_fds_are_watched() {
        const FDS: usize = 10_000;
        let _guard = lock_fd_numbers();
        // Headroom for stdio, the test harness and tests running alongside.
        let wanted = FDS as u64 + 256;
        let reached = raise_nofile_limit(wanted);
        if reached < wanted {
            let why = format!("the RLIMIT_NOFILE hard limit allows {reached} fds, the test needs {wanted}");
            skip_loudly("ten_thousand_fds_are_watched", &why);
            return;
        }
        let pairs: Vec<_> = (0..FDS / 2).map(|_| UnixStream::pair().unwrap()).collect();
        let mut poller = Poll::new();
        for (a, b) in &pairs {
            poller
                .register(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_IN)
                .unwrap();
            poller
                .register(b.as_raw_fd(), fd_token(b.as_raw_fd()), POLL_IN)
                .unwrap();
        }
        assert_eq!(poller.len(), FDS);
        let highest = pairs.last().unwrap().1.as_raw_fd();
        assert!(highest >= FDS as RawFd, "fd numbers reach {highest}");

        let mut expected = Vec::new();
        for (i, (a, b)) in pairs.iter().enumerate().step_by(499) {
            (&*b).write_all(b"x").unwrap();
            expected.push((a.as_raw_fd(), POLL_IN));
            if i % 2 == 0 {
                (&*a).write_all(b"x").unwrap();
                expected.push((b.as_raw_fd(), POLL_IN));
            }
        }
        expected.sort_by_key(|&(fd, _)| fd);
        assert_eq!(poll_once(&mut poller, LONG), expected);

        // Unregister every other pair: swap-remove reshuffles the array, and the
        // survivors must still be found and reported.
        for (a, b) in pairs.iter().skip(1).step_by(2) {
            poller.unregister(a.as_raw_fd()).unwrap();
            poller.unregister(b.as_raw_fd()).unwrap();
        }
        assert_eq!(poller.len(), FDS / 2);
        let mut survivors: Vec<_> = pairs
            .iter()
            .step_by(2)
            .flat_map(|(a, b)| [a.as_raw_fd(), b.as_raw_fd()])
            .collect();
        survivors.sort_unstable();
        for &fd in &survivors {
            poller.modify(fd, fd_token(fd), POLL_OUT).unwrap();
        }
        let reported: Vec<_> = poll_once(&mut poller, LONG);
        assert_eq!(reported.len(), survivors.len());
        assert!(reported.iter().map(|&(fd, _)| fd).eq(survivors.iter().copied()));
        assert!(reported.iter().all(|&(_, ev)| ev.contains(POLL_OUT)));
    }
}
