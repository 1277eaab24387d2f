//! The epoll backend (Linux): the original's `select.epoll`, used directly.
//!
//! Masks pass straight through: `POLL_IN`, `POLL_OUT`, `POLL_ERR` and `POLL_HUP`
//! have the values of `EPOLLIN`, `EPOLLOUT`, `EPOLLERR` and `EPOLLHUP`. The kernel
//! always reports errors and hang-ups, and forgets a descriptor once its file is
//! closed, so a closed fd vanishes silently (contract point 4).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::{Backend, PollEvent, Poller, PollerError, timeout_ms};
use crate::events::Events;

/// How many events one `epoll_wait` fetches at most; more wait for the next poll.
const DEFAULT_MAX_EVENTS: usize = 1024;

/// A poller on an epoll instance. Closed on drop.
///
/// ```
/// use evloop::poller::{Poller, epoll::Epoll};
/// use evloop::POLL_IN;
/// use std::os::fd::AsRawFd;
///
/// let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
/// let mut epoll = Epoll::new()?;
/// epoll.register(a.as_raw_fd(), POLL_IN)?;
/// std::io::Write::write_all(&mut b, b"x")?;
/// let mut ready = Vec::new();
/// epoll.poll(None, &mut ready)?;
/// assert_eq!(ready, [(a.as_raw_fd(), POLL_IN)]);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Epoll {
    epfd: OwnedFd,
    /// Filled by [`wait`](Self::wait); allocated on first use, so that the loop,
    /// which waits into a buffer of its own ([`wait_into`](Self::wait_into)),
    /// never pays for it.
    buffer: Vec<libc::epoll_event>,
    max_events: usize,
}

impl Epoll {
    /// Open a new epoll instance (close-on-exec).
    pub fn new() -> io::Result<Epoll> {
        Epoll::with_max_events(DEFAULT_MAX_EVENTS)
    }

    /// Open a new epoll instance that fetches at most `max_events` per poll.
    pub fn with_max_events(max_events: usize) -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes only flags and returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(PollerError::os(
                Backend::Epoll,
                "open",
                None,
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: fd was just returned by epoll_create1 and is owned by no one else.
        let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll {
            epfd,
            buffer: Vec::new(),
            max_events: max_events.max(1),
        })
    }

    /// Wait for events and keep them in the poller's own buffer, returning how
    /// many there are; [`event`](Self::event) reads them.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        if self.buffer.is_empty() {
            self.buffer = vec![libc::epoll_event { events: 0, u64: 0 }; self.max_events];
        }
        wait_into(&self.epfd, timeout, &mut self.buffer)
    }

    /// Wait for events into `out` (at most `out.len()`, which must not be 0),
    /// returning how many it holds: the loop dispatches straight from such a
    /// buffer, without a copy.
    #[inline]
    pub fn wait_into(&self, timeout: Option<Duration>, out: &mut [libc::epoll_event]) -> io::Result<usize> {
        wait_into(&self.epfd, timeout, out)
    }

    /// Event `i` of the last [`wait`](Self::wait) (`i` below what it returned):
    /// the key its fd was registered with, and the events.
    #[inline]
    pub fn event(&self, i: usize) -> (u64, Events) {
        let event = self.buffer[i];
        (event.u64, Events::from_bits(event.events))
    }

    /// Register `fd` with a key of the caller's choosing, reported by
    /// [`event`](Self::event) instead of the fd (the loop's tokens).
    #[inline]
    pub fn register_with_key(&mut self, fd: RawFd, mode: Events, key: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, mode, key, "register")
    }

    /// Change the mode of an fd registered with a key (the key is given again).
    #[inline]
    pub fn modify_with_key(&mut self, fd: RawFd, mode: Events, key: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, mode, key, "modify")
    }

    #[inline]
    fn ctl(&mut self, op: libc::c_int, fd: RawFd, mode: Events, key: u64, name: &'static str) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: mode.bits(),
            u64: key,
        };
        // SAFETY: epfd is our open epoll descriptor and `event` lives across the call;
        // the kernel validates `fd` itself.
        let rc = unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut event) };
        if rc < 0 {
            return Err(PollerError::os(
                Backend::Epoll,
                name,
                Some(fd),
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }
}

/// `epoll_wait` on `epfd` into `out`: a function of the descriptor alone, so that
/// [`Epoll::wait`] can lend it the poller's own buffer.
#[inline]
fn wait_into(epfd: &OwnedFd, timeout: Option<Duration>, out: &mut [libc::epoll_event]) -> io::Result<usize> {
    let capacity = out.len().min(libc::c_int::MAX as usize) as libc::c_int;
    // SAFETY: `out` is valid for `capacity` events and the kernel writes at most that many.
    let n = unsafe { libc::epoll_wait(epfd.as_raw_fd(), out.as_mut_ptr(), capacity, timeout_ms(timeout)) };
    if n < 0 {
        return Err(PollerError::os(
            Backend::Epoll,
            "poll",
            None,
            io::Error::last_os_error(),
        ));
    }
    Ok(n as usize)
}

impl Poller for Epoll {
    fn register(&mut self, fd: RawFd, mode: Events) -> io::Result<()> {
        self.register_with_key(fd, mode, fd as u64)
    }

    fn unregister(&mut self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, Events::default(), 0, "unregister")
    }

    fn modify(&mut self, fd: RawFd, mode: Events) -> io::Result<()> {
        self.modify_with_key(fd, mode, fd as u64)
    }

    fn poll(&mut self, timeout: Option<Duration>, out: &mut Vec<PollEvent>) -> io::Result<()> {
        out.clear();
        let n = self.wait(timeout)?;
        // Registered through the trait, every key is the fd itself.
        out.extend((0..n).map(|i| {
            let (key, events) = self.event(i);
            (key as RawFd, events)
        }));
        Ok(())
    }

    fn backend(&self) -> Backend {
        Backend::Epoll
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.epfd.as_raw_fd()
    }
}
