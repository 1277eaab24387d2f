//! Poller backends: one file per system interface, one contract for all.
//!
//! # The contract every backend meets
//!
//! A poller watches file descriptors, each registered with a [`Token`] of the
//! caller's choosing and a *mode* (an [`Events`] mask of `POLL_IN` and/or
//! `POLL_OUT`), and reports which are ready, each report carrying the token the fd
//! was registered with. The operations are the original's:
//! [`register`](Poller::register), [`unregister`](Poller::unregister),
//! [`modify`](Poller::modify), [`poll`](Poller::poll); closing is `Drop`.
//!
//! 1. **Events carry tokens.** epoll keeps the token in the kernel's event data,
//!    poll and select keep it beside the fd in their own tables, kqueue in its fd
//!    table beside the mode. A caller resolves a token to whatever it registered,
//!    so a reused fd number cannot divert an event to the wrong owner.
//! 2. **Level-triggered.** A descriptor that is ready is reported by every poll
//!    until the condition is cleared (the socket drained, the buffer filled).
//! 3. **One entry per descriptor per poll.** Conditions that a backend learns from
//!    several places (kqueue's read and write filters, select's three sets) are
//!    merged into one [`PollEvent`].
//! 4. **`POLL_ERR` and `POLL_HUP` are reported whether asked for or not**, as epoll
//!    does, wherever the backend can see them (epoll, poll and kqueue can; select
//!    sees an error or hang-up only as readiness for reading or writing).
//!    `POLL_NULL` is a valid mode: it watches for errors and hang-ups alone.
//! 5. **A closed descriptor never breaks the poll.** Where the backend can see it
//!    (poll, select, kqueue at registration) the descriptor is reported alone with
//!    `POLL_NVAL`; epoll drops it silently (the kernel forgets a closed file).
//!    One case no backend can undo by number: epoll keys its entries by the open
//!    file, so an fd closed while a `dup` of it stays open keeps reporting under
//!    its token, and neither `unregister` nor `modify` can reach it (the number no
//!    longer names that file). [`reset`](Poller::reset) drops every entry, those
//!    included; the caller registers again what it still watches.
//! 6. **Timeouts.** `None` blocks until an event; `Some(0)` returns at once; any
//!    other duration is rounded *up* to the backend's precision, never down.
//!    A signal interrupting the wait is returned as `ErrorKind::Interrupted`.
//! 7. **The same errors everywhere**, each an [`io::Error`] whose inner value is a
//!    [`PollerError`] naming the backend, the operation and the fd:
//!    - registering an fd that is already registered: `ErrorKind::AlreadyExists`;
//!    - unregistering or modifying an fd that is not registered: `ErrorKind::NotFound`;
//!    - registering a closed fd: `ErrorKind::InvalidInput`, with `EBADF` as its errno;
//!    - an fd the backend cannot watch (select: at or above `FD_SETSIZE`; epoll: a
//!      regular file or a directory): `ErrorKind::InvalidInput`, saying which
//!      backend can.
//!
//! The conformance suite (`tests/conformance.rs`) checks every point on every
//! backend that runs on the machine, through the loop; `contract_tests.rs` checks
//! the pollers alone.

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::events::Events;
use crate::token::Token;

#[cfg(epoll)]
pub mod epoll;
#[cfg(kqueue)]
pub mod kqueue;
pub mod poll;
pub mod select;

#[cfg(test)]
mod contract_tests;

/// One readiness report: the token of the fd it concerns, and what happened.
///
/// Where there is epoll this is epoll's own record, so that the kernel writes a
/// poll's reports straight into the caller's buffer; elsewhere a struct of the
/// same two fields.
#[cfg(epoll)]
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct PollEvent(libc::epoll_event);

/// One readiness report: the token of the fd it concerns, and what happened.
#[cfg(not(epoll))]
#[derive(Clone, Copy)]
pub struct PollEvent {
    events: u32,
    token: u64,
}

impl PollEvent {
    /// A report of `events` for the fd registered with `token`.
    #[cfg(epoll)]
    #[inline]
    pub fn new(token: Token, events: Events) -> PollEvent {
        PollEvent(libc::epoll_event {
            events: events.bits(),
            u64: token.as_u64(),
        })
    }

    /// A report of `events` for the fd registered with `token`.
    #[cfg(not(epoll))]
    #[inline]
    pub fn new(token: Token, events: Events) -> PollEvent {
        PollEvent {
            events: events.bits(),
            token: token.as_u64(),
        }
    }

    /// The token the fd was registered with.
    #[inline(always)]
    pub fn token(&self) -> Token {
        #[cfg(epoll)]
        let token = self.0.u64;
        #[cfg(not(epoll))]
        let token = self.token;
        Token::from_u64(token)
    }

    /// What happened.
    #[inline(always)]
    pub fn events(&self) -> Events {
        #[cfg(epoll)]
        let events = self.0.events;
        #[cfg(not(epoll))]
        let events = self.events;
        Events::from_bits(events)
    }

    /// Add `events` to the report (backends that learn of one fd's conditions in
    /// several places merge them into one report).
    #[cfg_attr(not(kqueue), allow(dead_code))]
    pub(crate) fn merge(&mut self, events: Events) {
        *self = PollEvent::new(self.token(), self.events() | events);
    }
}

impl PartialEq for PollEvent {
    fn eq(&self, other: &PollEvent) -> bool {
        (self.token(), self.events()) == (other.token(), other.events())
    }
}

impl Eq for PollEvent {}

impl fmt::Debug for PollEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({:?}, {})", self.token(), self.events())
    }
}

/// The interface every backend implements. See the [module docs](self) for the contract.
pub trait Poller {
    /// Start watching `fd` for the conditions in `mode`; its events will carry `token`.
    fn register(&mut self, fd: RawFd, token: Token, mode: Events) -> io::Result<()>;

    /// Stop watching `fd`. The caller passes no mode: the poller remembers it.
    fn unregister(&mut self, fd: RawFd) -> io::Result<()>;

    /// Change the conditions `fd` is watched for, and the token its events carry.
    fn modify(&mut self, fd: RawFd, token: Token, mode: Events) -> io::Result<()>;

    /// Wait for events, at most `timeout` (`None`: until one happens), and replace
    /// the contents of `out` with them, one entry per descriptor.
    fn poll(&mut self, timeout: Option<Duration>, out: &mut Vec<PollEvent>) -> io::Result<()>;

    /// Drop every registration at once, including any the kernel keeps for a file
    /// closed behind the poller's back (contract point 5). The poller is empty
    /// afterwards, as if new.
    fn reset(&mut self) -> io::Result<()>;

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

    /// Whether the kernel itself refuses to unregister or modify an fd number
    /// that no longer names the file it was registered with (closed, or reused by
    /// another file), so that the result of those calls proves the number is
    /// still the registration's. True for epoll, whose entries are keyed by file
    /// and number. Not for poll and select (their tables are the poller's own,
    /// by number), nor for kqueue as this backend drives it (changes wait for the
    /// next `kevent`, and a `POLL_NULL` registration has no filter to check): the
    /// loop records and compares the file's identity there instead
    /// (see `file_id`).
    pub(crate) const fn kernel_checks_identity(self) -> bool {
        matches!(self, Backend::Epoll)
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
        Ok(Box::new(AnyPoller::open(self)?))
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

/// Any one backend, chosen at run time: what [`Backend::open`] boxes, and what the
/// loop polls with. An enum rather than a `Box<dyn Poller>`, so that the loop's
/// calls are direct (and epoll's wait inlined) with no per-call indirection.
/// `repr(u8)`: a plain tag byte, one compare to read, where the niche the
/// compiler would otherwise hide it in took ten instructions per poll.
#[repr(u8)]
pub(crate) enum AnyPoller {
    #[cfg(epoll)]
    Epoll(epoll::Epoll),
    #[cfg(kqueue)]
    Kqueue(kqueue::Kqueue),
    Poll(poll::Poll),
    /// Boxed: its three `fd_set`s would make every variant 400 bytes.
    Select(Box<select::Select>),
}

/// `AnyPoller`'s forwarding: one match, the same for every method.
macro_rules! forward {
    ($self:ident, $p:ident => $call:expr) => {
        match $self {
            #[cfg(epoll)]
            AnyPoller::Epoll($p) => $call,
            #[cfg(kqueue)]
            AnyPoller::Kqueue($p) => $call,
            AnyPoller::Poll($p) => $call,
            AnyPoller::Select($p) => $call,
        }
    };
}

impl AnyPoller {
    /// Open a poller of the `backend` kind.
    pub(crate) fn open(backend: Backend) -> io::Result<AnyPoller> {
        match backend {
            #[cfg(epoll)]
            Backend::Epoll => Ok(AnyPoller::Epoll(epoll::Epoll::new()?)),
            #[cfg(kqueue)]
            Backend::Kqueue => Ok(AnyPoller::Kqueue(kqueue::Kqueue::new()?)),
            Backend::Poll => Ok(AnyPoller::Poll(poll::Poll::new())),
            Backend::Select => Ok(AnyPoller::Select(Box::default())),
            #[allow(unreachable_patterns)]
            other => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("the {} backend does not exist on this platform", other.name()),
            )),
        }
    }
}

impl Poller for AnyPoller {
    #[inline]
    fn register(&mut self, fd: RawFd, token: Token, mode: Events) -> io::Result<()> {
        forward!(self, p => p.register(fd, token, mode))
    }

    #[inline]
    fn unregister(&mut self, fd: RawFd) -> io::Result<()> {
        forward!(self, p => p.unregister(fd))
    }

    #[inline]
    fn modify(&mut self, fd: RawFd, token: Token, mode: Events) -> io::Result<()> {
        forward!(self, p => p.modify(fd, token, mode))
    }

    #[inline(always)]
    fn poll(&mut self, timeout: Option<Duration>, out: &mut Vec<PollEvent>) -> io::Result<()> {
        forward!(self, p => p.poll(timeout, out))
    }

    fn reset(&mut self) -> io::Result<()> {
        forward!(self, p => p.reset())
    }

    fn backend(&self) -> Backend {
        forward!(self, p => p.backend())
    }
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
