//! The epoll backend (Linux): the original's `select.epoll`, used directly.
//!
//! Masks pass straight through: `POLL_IN`, `POLL_OUT`, `POLL_ERR` and `POLL_HUP`
//! have the values of `EPOLLIN`, `EPOLLOUT`, `EPOLLERR` and `EPOLLHUP`, and the
//! token rides in the event's data, so the kernel writes each poll's reports
//! straight into the caller's buffer. The kernel always reports errors and
//! hang-ups, and forgets a descriptor once its file is closed, so a closed fd
//! vanishes silently (contract point 5).
//!
//! The kernel keys an entry by the open file *and* the fd number it was added
//! with, and only the two together name it. An fd closed while a `dup` keeps its
//! file open leaves an entry that no later call can reach: `EPOLL_CTL_DEL` or
//! `EPOLL_CTL_MOD` on the number reach the number's new file (or fail with
//! `EBADF`), and the same file under another number is another entry. The only
//! ways to silence it are to close every descriptor of that file, which is not
//! ours to do, or to close the epoll instance, which [`reset`](Poller::reset)
//! does (as libev does on the same kernel behaviour).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::{Backend, PollEvent, Poller, PollerError, timeout_ms};
use crate::events::Events;
use crate::token::Token;

/// How many events one `epoll_wait` fetches at most; more wait for the next poll.
const DEFAULT_MAX_EVENTS: usize = 1024;

/// A poller on an epoll instance. Closed on drop.
///
/// ```
/// use evloop::poller::{PollEvent, Poller, epoll::Epoll};
/// use evloop::{POLL_IN, Token};
/// use std::os::fd::AsRawFd;
///
/// let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
/// let mut epoll = Epoll::new()?;
/// epoll.register(a.as_raw_fd(), Token::from_u64(7), POLL_IN)?;
/// std::io::Write::write_all(&mut b, b"x")?;
/// let mut ready = Vec::new();
/// epoll.poll(None, &mut ready)?;
/// assert_eq!(ready, [PollEvent::new(Token::from_u64(7), POLL_IN)]);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Epoll {
    epfd: OwnedFd,
    max_events: usize,
}

/// A new epoll descriptor (close-on-exec).
fn epoll_create() -> io::Result<OwnedFd> {
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
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Epoll {
    /// Open a new epoll instance (close-on-exec).
    pub fn new() -> io::Result<Epoll> {
        Epoll::with_max_events(DEFAULT_MAX_EVENTS)
    }

    /// Open a new epoll instance that fetches at most `max_events` per poll into
    /// an empty buffer (it reserves that much; a buffer that comes with room
    /// already is filled up to its capacity).
    pub fn with_max_events(max_events: usize) -> io::Result<Epoll> {
        Ok(Epoll {
            epfd: epoll_create()?,
            max_events: max_events.clamp(1, libc::c_int::MAX as usize),
        })
    }

    #[inline]
    fn ctl(&mut self, op: libc::c_int, fd: RawFd, token: Token, mode: Events, name: &'static str) -> io::Result<()> {
        let mut event = PollEvent::new(token, mode).0;
        // SAFETY: epfd is our open epoll descriptor and `event` lives across the call;
        // the kernel validates `fd` itself.
        let rc = unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut event) };
        if rc < 0 {
            return Err(ctl_error(name, fd, io::Error::last_os_error()));
        }
        Ok(())
    }
}

/// Make room for `events` reports in `out` (once: callers keep their buffer).
#[cold]
#[inline(never)]
fn reserve(out: &mut Vec<PollEvent>, events: usize) {
    out.clear();
    out.reserve(events);
}

/// The error of a failed `epoll_ctl`: `EPERM` is epoll's way of saying that the
/// file cannot be polled at all (a regular file or a directory), which its text
/// ("Operation not permitted") does not say.
#[cold]
#[inline(never)]
fn ctl_error(op: &'static str, fd: RawFd, err: io::Error) -> io::Error {
    if err.raw_os_error() != Some(libc::EPERM) {
        return PollerError::os(Backend::Epoll, op, Some(fd), err);
    }
    io::Error::new(
        io::ErrorKind::InvalidInput,
        PollerError {
            backend: Backend::Epoll,
            op,
            fd: Some(fd),
            errno: Some(libc::EPERM),
            reason: "epoll cannot watch regular files or directories (EPERM); \
                     the poll and select backends can (they report them always ready)"
                .to_string(),
        },
    )
}

impl Poller for Epoll {
    #[inline]
    fn register(&mut self, fd: RawFd, token: Token, mode: Events) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, mode, "register")
    }

    #[inline]
    fn unregister(&mut self, fd: RawFd) -> io::Result<()> {
        self.ctl(
            libc::EPOLL_CTL_DEL,
            fd,
            Token::from_u64(0),
            Events::default(),
            "unregister",
        )
    }

    #[inline]
    fn modify(&mut self, fd: RawFd, token: Token, mode: Events) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, mode, "modify")
    }

    #[inline(always)]
    fn poll(&mut self, timeout: Option<Duration>, out: &mut Vec<PollEvent>) -> io::Result<()> {
        if out.capacity() == 0 {
            reserve(out, self.max_events);
        }
        // The buffer's room is the limit: `max_events` for a buffer this poller
        // sized, the caller's choice for one that came with room. The cast keeps
        // the kernel inside it: it truncates to a smaller count, or to a negative
        // one that the kernel refuses (EINVAL).
        let room = out.capacity() as libc::c_int;
        // SAFETY: `out` has room for `capacity()` events, PollEvent is a transparent
        // epoll_event, and the kernel writes at most `room` of them, which is no
        // more than that.
        let n = unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                out.as_mut_ptr().cast::<libc::epoll_event>(),
                room,
                timeout_ms(timeout),
            )
        };
        if n < 0 {
            out.clear();
            return Err(PollerError::os(
                Backend::Epoll,
                "poll",
                None,
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: the kernel initialised the first `n` (at most `max_events`) entries;
        // those past them, if any, are plain data and need no drop.
        unsafe { out.set_len(n as usize) };
        Ok(())
    }

    /// A new epoll instance replaces this one; closing the old one is what drops
    /// the entries no fd number reaches any more.
    fn reset(&mut self) -> io::Result<()> {
        self.epfd = epoll_create()?;
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
