//! Poller backends: one file per system interface, one contract for all.
//!
//! # The contract every backend meets
//!
//! A poller watches file descriptors, each with a *mode* (an [`Events`] mask of
//! `POLL_IN` and/or `POLL_OUT`), and reports which are ready. The operations are
//! the original's: [`register`](Poller::register), [`unregister`](Poller::unregister),
//! [`modify`](Poller::modify), [`poll`](Poller::poll); closing is `Drop`.
//!
//! 1. **Level-triggered.** A descriptor that is ready is reported by every poll
//!    until the condition is cleared (the socket drained, the buffer filled).
//! 2. **One entry per descriptor per poll.** Conditions that a backend learns from
//!    several places (kqueue's read and write filters, select's three sets) are
//!    merged into one `(fd, events)` pair.
//! 3. **`POLL_ERR` and `POLL_HUP` are reported whether asked for or not**, as epoll
//!    does, wherever the backend can see them (epoll, poll and kqueue can; select
//!    sees an error or hang-up only as readiness for reading or writing).
//!    `POLL_NULL` is a valid mode: it watches for errors and hang-ups alone.
//! 4. **A closed descriptor never breaks the poll.** Where the backend can see it
//!    (poll, select, kqueue at registration) the descriptor is reported alone with
//!    `POLL_NVAL`; epoll drops it silently (the kernel forgets a closed file).
//! 5. **Timeouts.** `None` blocks until an event; `Some(0)` returns at once; any
//!    other duration is rounded *up* to the backend's precision, never down.
//!    A signal interrupting the wait is returned as `ErrorKind::Interrupted`.
//! 6. **The same errors everywhere**, each an [`io::Error`] whose inner value is a
//!    [`PollerError`] naming the backend, the operation and the fd:
//!    - registering an fd that is already registered: `ErrorKind::AlreadyExists`;
//!    - unregistering or modifying an fd that is not registered: `ErrorKind::NotFound`;
//!    - registering a closed fd: `ErrorKind::InvalidInput`, with `EBADF` as its errno;
//!    - an fd the backend cannot watch (select: at or above `FD_SETSIZE`):
//!      `ErrorKind::InvalidInput`.
//!
//! The conformance suite (`tests/conformance.rs`) checks every point on every
//! backend that runs on the machine.

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::event_loop::Token;
use crate::events::Events;

#[cfg(epoll)]
pub mod epoll;
#[cfg(kqueue)]
pub mod kqueue;
pub mod poll;
pub mod select;

#[cfg(test)]
mod contract_tests;

/// One readiness report: the descriptor and what happened on it.
pub type PollEvent = (RawFd, Events);

/// The interface every backend implements. See the [module docs](self) for the contract.
pub trait Poller {
    /// Start watching `fd` for the conditions in `mode`.
    fn register(&mut self, fd: RawFd, mode: Events) -> io::Result<()>;

    /// Stop watching `fd`. The caller passes no mode: the poller remembers it.
    fn unregister(&mut self, fd: RawFd) -> io::Result<()>;

    /// Change the conditions `fd` is watched for.
    fn modify(&mut self, fd: RawFd, mode: Events) -> io::Result<()>;

    /// Wait for events, at most `timeout` (`None`: until one happens), and replace
    /// the contents of `out` with them, one entry per descriptor.
    fn poll(&mut self, timeout: Option<Duration>, out: &mut Vec<PollEvent>) -> io::Result<()>;

    /// Which backend this is.
    fn backend(&self) -> Backend;
}

/// The poller backends, in the order [`Backend::auto`] prefers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Linux `epoll(7)`.
    Epoll,
    /// BSD and macOS `kqueue(2)`.
    Kqueue,
    /// POSIX `poll(2)`: any number of descriptors.
    Poll,
    /// POSIX `select(2)`: descriptors below `FD_SETSIZE` only.
    Select,
}

/// The environment variable that overrides the automatic choice of backend.
pub const BACKEND_ENV: &str = "EVLOOP_BACKEND";

impl Backend {
    /// Every backend, in order of preference.
    pub const ALL: [Backend; 4] = [Backend::Epoll, Backend::Kqueue, Backend::Poll, Backend::Select];

    /// The name used in logs and in `EVLOOP_BACKEND`.
    pub const fn name(self) -> &'static str {
        match self {
            Backend::Epoll => "epoll",
            Backend::Kqueue => "kqueue",
            Backend::Poll => "poll",
            Backend::Select => "select",
        }
    }

    /// Whether this backend exists on the platform the crate was built for.
    pub const fn is_available(self) -> bool {
        match self {
            Backend::Epoll => cfg!(epoll),
            Backend::Kqueue => cfg!(kqueue),
            Backend::Poll | Backend::Select => true,
        }
    }

    /// The backends this platform has, in order of preference.
    pub fn available() -> impl Iterator<Item = Backend> {
        Backend::ALL.into_iter().filter(|b| b.is_available())
    }

    /// The backend named by `EVLOOP_BACKEND` if set, else the first available of
    /// epoll, kqueue, poll, select (the original's order, with poll(2) added).
    pub fn auto() -> io::Result<Backend> {
        match std::env::var(BACKEND_ENV) {
            Ok(name) if !name.trim().is_empty() => {
                let backend: Backend = name.parse()?;
                if !backend.is_available() {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!(
                            "{BACKEND_ENV}={name}: the {} backend does not exist on this platform",
                            backend.name()
                        ),
                    ));
                }
                Ok(backend)
            }
            _ => Ok(Backend::available().next().expect("poll and select exist everywhere")),
        }
    }

    /// Open a poller of this kind.
    pub fn open(self) -> io::Result<Box<dyn Poller>> {
        match self {
            #[cfg(epoll)]
            Backend::Epoll => Ok(Box::new(epoll::Epoll::new()?)),
            #[cfg(kqueue)]
            Backend::Kqueue => Ok(Box::new(kqueue::Kqueue::new()?)),
            Backend::Poll => Ok(Box::new(poll::Poll::new())),
            Backend::Select => Ok(Box::new(select::Select::new())),
            #[allow(unreachable_patterns)]
            other => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("the {} backend does not exist on this platform", other.name()),
            )),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backend {
    type Err = io::Error;

    fn from_str(s: &str) -> io::Result<Backend> {
        Backend::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("unknown event model {s:?}: expected one of epoll, kqueue, poll, select"),
                )
            })
    }
}

/// The loop's poller. It reports loop tokens rather than fds, resolved before
/// any handler runs, so that a number reused during dispatch cannot divert an
/// event: epoll carries the token in the kernel's event data and waits straight
/// into `batch`; the other backends go through the trait and their fds are turned
/// into tokens in `batch` right after the poll. Either way the dispatch loop reads
/// one buffer, with no per-event question of which backend filled it.
pub(crate) struct LoopPoller {
    inner: Inner,
    /// The last wait's events: each a token (as `u64`) and its event bits.
    batch: Vec<RawEvent>,
    /// The trait backends' output, before it becomes tokens.
    polled: Vec<PollEvent>,
}

/// One event of a batch: epoll's own record where there is epoll, so that the
/// kernel fills the batch directly.
#[cfg(epoll)]
pub(crate) type RawEvent = libc::epoll_event;

#[cfg(not(epoll))]
#[derive(Clone, Copy)]
pub(crate) struct RawEvent {
    events: u32,
    u64: u64,
}

/// How many events one wait of the loop dispatches at most (epoll); the rest wait
/// for the next round.
#[cfg(epoll)]
const LOOP_BATCH: usize = 1024;

enum Inner {
    #[cfg(epoll)]
    Epoll(epoll::Epoll),
    Other(Box<dyn Poller>),
}

impl LoopPoller {
    pub(crate) fn open(backend: Backend) -> io::Result<LoopPoller> {
        let (inner, batch) = match backend {
            #[cfg(epoll)]
            Backend::Epoll => (
                Inner::Epoll(epoll::Epoll::new()?),
                vec![RawEvent { events: 0, u64: 0 }; LOOP_BATCH],
            ),
            other => (Inner::Other(other.open()?), Vec::new()),
        };
        Ok(LoopPoller {
            inner,
            batch,
            polled: Vec::new(),
        })
    }

    // Only epoll uses the token; elsewhere the fd is the key.
    #[cfg_attr(not(epoll), allow(unused_variables))]
    #[inline]
    pub(crate) fn register(&mut self, fd: RawFd, mode: Events, token: Token) -> io::Result<()> {
        match &mut self.inner {
            #[cfg(epoll)]
            Inner::Epoll(e) => e.register_with_key(fd, mode, token.as_u64()),
            Inner::Other(p) => p.register(fd, mode),
        }
    }

    #[cfg_attr(not(epoll), allow(unused_variables))]
    #[inline]
    pub(crate) fn modify(&mut self, fd: RawFd, mode: Events, token: Token) -> io::Result<()> {
        match &mut self.inner {
            #[cfg(epoll)]
            Inner::Epoll(e) => e.modify_with_key(fd, mode, token.as_u64()),
            Inner::Other(p) => p.modify(fd, mode),
        }
    }

    #[inline]
    pub(crate) fn unregister(&mut self, fd: RawFd) -> io::Result<()> {
        match &mut self.inner {
            #[cfg(epoll)]
            Inner::Epoll(e) => e.unregister(fd),
            Inner::Other(p) => p.unregister(fd),
        }
    }

    /// Poll; the events are then read with [`event`](Self::event). `owners` maps
    /// fd numbers to the tokens registered for them.
    #[inline(always)]
    pub(crate) fn wait(&mut self, timeout: Option<Duration>, owners: &[Token]) -> io::Result<usize> {
        match &mut self.inner {
            #[cfg(epoll)]
            Inner::Epoll(e) => e.wait_into(timeout, &mut self.batch),
            Inner::Other(_) => self.wait_other(timeout, owners),
        }
    }

    #[inline(never)]
    #[allow(irrefutable_let_patterns)] // without epoll, `Other` is the only variant
    fn wait_other(&mut self, timeout: Option<Duration>, owners: &[Token]) -> io::Result<usize> {
        let Inner::Other(p) = &mut self.inner else {
            unreachable!("only called for trait backends")
        };
        p.poll(timeout, &mut self.polled)?;
        self.batch.clear();
        for &(fd, events) in &self.polled {
            if let Some(&token) = owners.get(fd as usize) {
                self.batch.push(RawEvent {
                    events: events.bits(),
                    u64: token.as_u64(),
                });
            }
        }
        Ok(self.batch.len())
    }

    /// Event `i` of the last wait: whose, and what.
    #[inline(always)]
    pub(crate) fn event(&self, i: usize) -> (Token, Events) {
        decode(&self.batch[i])
    }

    /// Lend out the last wait's events for dispatch (`take_batch()[..n]`, `n` what
    /// the wait returned); [`put_batch`](Self::put_batch) gives them back. Handlers
    /// cannot wait meanwhile (the loop refuses `run_once` inside a callback), and
    /// walking a local slice spares a bounds check per event.
    #[inline(always)]
    pub(crate) fn take_batch(&mut self) -> Vec<RawEvent> {
        std::mem::take(&mut self.batch)
    }

    /// Give back what [`take_batch`](Self::take_batch) lent. (If a handler panics
    /// instead, the batch is gone, but so is the loop: it refuses to run again.)
    #[inline(always)]
    pub(crate) fn put_batch(&mut self, batch: Vec<RawEvent>) {
        // What it replaces is the empty `Vec` that `take` left: nothing to free.
        std::mem::forget(std::mem::replace(&mut self.batch, batch));
    }
}

/// Whose event it is, and what happened.
#[inline(always)]
pub(crate) fn decode(event: &RawEvent) -> (Token, Events) {
    let RawEvent { events, u64: key } = *event;
    (Token::from_u64(key), Events::from_bits(events))
}

/// What a poller operation failed on: carried inside the `io::Error` it returns.
#[derive(Debug)]
pub struct PollerError {
    /// Which backend failed.
    pub backend: Backend,
    /// The operation: `"register"`, `"unregister"`, `"modify"` or `"poll"`.
    pub op: &'static str,
    /// The descriptor concerned, if the operation had one.
    pub fd: Option<RawFd>,
    /// The system's error number, if the failure came from the system.
    pub errno: Option<i32>,
    /// What went wrong.
    pub reason: String,
}

impl fmt::Display for PollerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.backend, self.op)?;
        if let Some(fd) = self.fd {
            write!(f, " fd {fd}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for PollerError {}

impl PollerError {
    /// An error with a reason of the poller's own (not from a system call).
    #[cold]
    #[inline(never)]
    pub fn custom(
        backend: Backend,
        op: &'static str,
        fd: Option<RawFd>,
        kind: io::ErrorKind,
        reason: impl Into<String>,
    ) -> io::Error {
        io::Error::new(
            kind,
            PollerError {
                backend,
                op,
                fd,
                errno: None,
                reason: reason.into(),
            },
        )
    }

    /// Wrap a failed system call's error, mapping its errno to the contract's kinds.
    #[cold]
    #[inline(never)]
    pub fn os(backend: Backend, op: &'static str, fd: Option<RawFd>, err: io::Error) -> io::Error {
        let errno = err.raw_os_error();
        let kind = match errno {
            Some(libc::EEXIST) => io::ErrorKind::AlreadyExists,
            Some(libc::ENOENT) => io::ErrorKind::NotFound,
            Some(libc::EBADF) => io::ErrorKind::InvalidInput,
            _ => err.kind(),
        };
        let reason = match errno {
            Some(libc::EEXIST) => "already registered".to_string(),
            Some(libc::ENOENT) => "not registered".to_string(),
            Some(libc::EBADF) => "not an open descriptor (EBADF)".to_string(),
            _ => err.to_string(),
        };
        io::Error::new(
            kind,
            PollerError {
                backend,
                op,
                fd,
                errno,
                reason,
            },
        )
    }

    /// The contract's error for an fd registered twice.
    pub fn already_registered(backend: Backend, fd: RawFd) -> io::Error {
        PollerError::os(
            backend,
            "register",
            Some(fd),
            io::Error::from_raw_os_error(libc::EEXIST),
        )
    }

    /// The contract's error for an fd the poller does not know.
    pub fn not_registered(backend: Backend, op: &'static str, fd: RawFd) -> io::Error {
        PollerError::os(backend, op, Some(fd), io::Error::from_raw_os_error(libc::ENOENT))
    }

    /// The `PollerError` inside an `io::Error`, if it has one.
    pub fn of(err: &io::Error) -> Option<&PollerError> {
        err.get_ref().and_then(|inner| inner.downcast_ref::<PollerError>())
    }
}

/// Milliseconds for a poll timeout, rounded up so that a wait is never shorter than
/// asked; `-1` (block) for `None`; clamped to `i32::MAX`.
#[inline]
pub(crate) fn timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            ms.min(libc::c_int::MAX as u128) as libc::c_int
        }
    }
}

/// Refuse to register a closed `fd`, with the error epoll's `EPOLL_CTL_ADD` gives
/// (EBADF): poll(2) would accept it and report `POLLNVAL` forever after, select(2)
/// would fail later, for every fd at once.
pub(crate) fn refuse_closed(backend: Backend, fd: RawFd) -> io::Result<()> {
    if fd_is_open(fd) {
        return Ok(());
    }
    Err(PollerError::os(
        backend,
        "register",
        Some(fd),
        io::Error::from_raw_os_error(libc::EBADF),
    ))
}

/// Whether `fd` is an open descriptor (`fcntl(F_GETFD)` succeeds).
pub(crate) fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags; any integer is a valid argument.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up() {
        assert_eq!(timeout_ms(None), -1);
        assert_eq!(timeout_ms(Some(Duration::ZERO)), 0);
        assert_eq!(timeout_ms(Some(Duration::from_nanos(1))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_micros(1500))), 2);
        assert_eq!(timeout_ms(Some(Duration::from_secs(u64::MAX))), i32::MAX);
    }

    #[test]
    fn backend_names_parse() {
        for b in Backend::ALL {
            assert_eq!(b.name().parse::<Backend>().unwrap(), b);
        }
        assert_eq!("SELECT".parse::<Backend>().unwrap(), Backend::Select);
        assert!("iocp".parse::<Backend>().is_err());
    }

    #[test]
    fn errors_carry_context() {
        let err = PollerError::already_registered(Backend::Poll, 7);
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(err.to_string(), "poll: register fd 7: already registered");
        let inner = PollerError::of(&err).unwrap();
        assert_eq!(inner.fd, Some(7));
        assert_eq!(inner.errno, Some(libc::EEXIST));
    }
}
