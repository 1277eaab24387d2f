//! The contract's cases that read the same on every backend, written once and
//! run on each backend this platform has (`poller::contract_tests::epoll::…`).
//! What only one backend does (poll's index repair, select's sets and
//! `FD_SETSIZE`) stays in that backend's own tests.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::poll::tests::{fd_token, high_fd, interrupted, lock_fd_numbers, low_fd_numbers, poll_sorted};
use super::{Backend, PollEvent, Poller, PollerError};
use crate::events::{POLL_ERR, POLL_IN, POLL_NULL, POLL_OUT};
use crate::token::Token;

const LONG: Option<Duration> = Some(Duration::from_secs(5));

fn open(backend: Backend) -> Box<dyn Poller> {
    backend.open().unwrap_or_else(|e| panic!("{backend}: {e}"))
}

fn kind_and_errno(backend: Backend, err: &io::Error) -> (io::ErrorKind, Option<i32>) {
    let inner = PollerError::of(err).expect("a PollerError inside");
    assert_eq!(inner.backend, backend);
    (err.kind(), inner.errno)
}

pub(super) fn readable_when_peer_wrote(backend: Backend) {
    let _fds = low_fd_numbers();
    let (a, mut b) = UnixStream::pair().unwrap();
    let mut poller = open(backend);
    poller
        .register(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_IN)
        .unwrap();
    assert_eq!(poll_sorted(poller.as_mut(), Some(Duration::ZERO)), []);
    b.write_all(b"x").unwrap();
    assert_eq!(poll_sorted(poller.as_mut(), LONG), [(a.as_raw_fd(), POLL_IN)]);
}

pub(super) fn writable_when_send_buffer_has_room(backend: Backend) {
    let _fds = low_fd_numbers();
    let (a, _b) = UnixStream::pair().unwrap();
    let mut poller = open(backend);
    poller
        .register(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_OUT)
        .unwrap();
    assert_eq!(poll_sorted(poller.as_mut(), LONG), [(a.as_raw_fd(), POLL_OUT)]);
}

pub(super) fn level_triggered_reports_again_until_drained(backend: Backend) {
    let _fds = low_fd_numbers();
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let mut poller = open(backend);
    poller
        .register(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_IN)
        .unwrap();
    b.write_all(b"xy").unwrap();
    assert_eq!(poll_sorted(poller.as_mut(), LONG), [(a.as_raw_fd(), POLL_IN)]);
    assert_eq!(poll_sorted(poller.as_mut(), LONG), [(a.as_raw_fd(), POLL_IN)]);
    let mut buf = [0u8; 2];
    a.read_exact(&mut buf).unwrap();
    assert_eq!(poll_sorted(poller.as_mut(), Some(Duration::ZERO)), []);
}

pub(super) fn register_twice_is_already_exists(backend: Backend) {
    let _fds = low_fd_numbers();
    let (a, _b) = UnixStream::pair().unwrap();
    let mut poller = open(backend);
    poller
        .register(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_IN)
        .unwrap();
    let err = poller
        .register(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_OUT)
        .unwrap_err();
    assert_eq!(
        kind_and_errno(backend, &err),
        (io::ErrorKind::AlreadyExists, Some(libc::EEXIST))
    );
    assert_eq!(PollerError::of(&err).unwrap().fd, Some(a.as_raw_fd()));
    assert_eq!(PollerError::of(&err).unwrap().op, "register");
}

pub(super) fn unregister_or_modify_unknown_fd_is_not_found(backend: Backend) {
    let _fds = low_fd_numbers();
    let (a, _b) = UnixStream::pair().unwrap();
    let mut poller = open(backend);
    let err = poller.unregister(a.as_raw_fd()).unwrap_err();
    assert_eq!(
        kind_and_errno(backend, &err),
        (io::ErrorKind::NotFound, Some(libc::ENOENT))
    );
    assert_eq!(PollerError::of(&err).unwrap().op, "unregister");
    let err = poller
        .modify(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_IN)
        .unwrap_err();
    assert_eq!(
        kind_and_errno(backend, &err),
        (io::ErrorKind::NotFound, Some(libc::ENOENT))
    );
    assert_eq!(PollerError::of(&err).unwrap().op, "modify");
}

pub(super) fn register_closed_fd_is_invalid_input_ebadf(backend: Backend) {
    let _guard = lock_fd_numbers();
    let (a, _b) = UnixStream::pair().unwrap();
    let closed = high_fd(&a);
    let fd = closed.as_raw_fd();
    drop(closed);
    let mut poller = open(backend);
    let err = poller.register(fd, fd_token(fd), POLL_IN).unwrap_err();
    assert_eq!(
        kind_and_errno(backend, &err),
        (io::ErrorKind::InvalidInput, Some(libc::EBADF))
    );
    // Nothing was registered: the same number, open again, registers fine.
    let reopened = high_fd(&a);
    assert_eq!(reopened.as_raw_fd(), fd, "the freed number is handed out again");
    poller.register(fd, fd_token(fd), POLL_IN).unwrap();
}

/// Both conditions come in one entry; `POLL_ERR` in the mode reports nothing while
/// there is no error (select's exceptional set included).
pub(super) fn in_and_out_are_merged_into_one_entry(backend: Backend) {
    let _fds = low_fd_numbers();
    let (a, mut b) = UnixStream::pair().unwrap();
    b.write_all(b"x").unwrap();
    let mut poller = open(backend);
    poller
        .register(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_IN | POLL_OUT | POLL_ERR)
        .unwrap();
    assert_eq!(
        poll_sorted(poller.as_mut(), LONG),
        [(a.as_raw_fd(), POLL_IN | POLL_OUT)]
    );
}

pub(super) fn modify_changes_the_watched_conditions(backend: Backend) {
    let _fds = low_fd_numbers();
    let (a, _b) = UnixStream::pair().unwrap();
    let mut poller = open(backend);
    poller
        .register(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_IN)
        .unwrap();
    assert_eq!(poll_sorted(poller.as_mut(), Some(Duration::ZERO)), []);
    poller.modify(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_OUT).unwrap();
    assert_eq!(poll_sorted(poller.as_mut(), LONG), [(a.as_raw_fd(), POLL_OUT)]);
    poller
        .modify(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_NULL)
        .unwrap();
    assert_eq!(poll_sorted(poller.as_mut(), Some(Duration::ZERO)), []);
    // A POLL_NULL fd stays registered: it can be modified back.
    poller.modify(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_OUT).unwrap();
    assert_eq!(poll_sorted(poller.as_mut(), LONG), [(a.as_raw_fd(), POLL_OUT)]);
}

pub(super) fn unregistered_fd_is_no_longer_reported(backend: Backend) {
    let _fds = low_fd_numbers();
    let (a, mut b) = UnixStream::pair().unwrap();
    b.write_all(b"x").unwrap();
    let mut poller = open(backend);
    poller
        .register(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_IN)
        .unwrap();
    poller.unregister(a.as_raw_fd()).unwrap();
    assert_eq!(poll_sorted(poller.as_mut(), Some(Duration::ZERO)), []);
    // Registering again after unregistering is allowed.
    poller
        .register(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_IN)
        .unwrap();
    assert_eq!(poll_sorted(poller.as_mut(), LONG), [(a.as_raw_fd(), POLL_IN)]);
}

pub(super) fn tcp_listener_is_readable_with_a_pending_connection(backend: Backend) {
    let _fds = low_fd_numbers();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut poller = open(backend);
    poller
        .register(listener.as_raw_fd(), fd_token(listener.as_raw_fd()), POLL_IN)
        .unwrap();
    assert_eq!(poll_sorted(poller.as_mut(), Some(Duration::ZERO)), []);
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    assert_eq!(poll_sorted(poller.as_mut(), LONG), [(listener.as_raw_fd(), POLL_IN)]);
    poller
        .register(client.as_raw_fd(), fd_token(client.as_raw_fd()), POLL_OUT)
        .unwrap();
    let mut expected = vec![(listener.as_raw_fd(), POLL_IN), (client.as_raw_fd(), POLL_OUT)];
    expected.sort_by_key(|&(fd, _)| fd);
    assert_eq!(poll_sorted(poller.as_mut(), LONG), expected);
}

/// A timeout below the backend's unit (epoll's and poll's millisecond) is rounded
/// up, never down to a busy zero.
pub(super) fn sub_millisecond_timeout_waits_at_least_that_long(backend: Backend) {
    let _fds = low_fd_numbers();
    let (a, _b) = UnixStream::pair().unwrap();
    let mut poller = open(backend);
    poller
        .register(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_IN)
        .unwrap();
    let wait = Duration::from_micros(300);
    let start = Instant::now();
    assert_eq!(poll_sorted(poller.as_mut(), Some(wait)), []);
    assert!(start.elapsed() >= wait, "returned after {:?}", start.elapsed());
}

pub(super) fn signal_during_wait_is_interrupted(backend: Backend) {
    let _fds = low_fd_numbers();
    let (a, _b) = UnixStream::pair().unwrap();
    let mut poller = open(backend);
    poller
        .register(a.as_raw_fd(), fd_token(a.as_raw_fd()), POLL_IN)
        .unwrap();
    let mut out = Vec::new();
    let err = interrupted(|| poller.poll(Some(Duration::from_secs(30)), &mut out)).unwrap_err();
    assert_eq!(
        kind_and_errno(backend, &err),
        (io::ErrorKind::Interrupted, Some(libc::EINTR))
    );
}

/// Contract point 1: a report carries the token given at registration (any 64
/// bits, not the fd), and `modify` can change it.
pub(super) fn events_carry_the_registered_token(backend: Backend) {
    let _fds = low_fd_numbers();
    let (a, mut b) = UnixStream::pair().unwrap();
    let mut poller = open(backend);
    let first = Token::from_u64(0xDEAD_BEEF_0000_0007);
    poller.register(a.as_raw_fd(), first, POLL_IN).unwrap();
    b.write_all(b"x").unwrap();
    let mut out = Vec::new();
    poller.poll(LONG, &mut out).unwrap();
    assert_eq!(out, [PollEvent::new(first, POLL_IN)]);
    let second = Token::from_u64(42);
    poller.modify(a.as_raw_fd(), second, POLL_IN).unwrap();
    poller.poll(LONG, &mut out).unwrap();
    assert_eq!(out, [PollEvent::new(second, POLL_IN)]);
}

/// Contract point 5: `reset` drops every registration, including what epoll keeps
/// for an fd closed while a dup holds its file open (which no `unregister` can
/// reach), and the poller takes registrations again as if new.
pub(super) fn reset_drops_every_registration_even_a_closed_fds(backend: Backend) {
    let _guard = lock_fd_numbers();
    let (sock, mut peer) = UnixStream::pair().unwrap();
    let (c, mut d) = UnixStream::pair().unwrap();
    let closed = high_fd(&sock);
    let mut poller = open(backend);
    poller
        .register(closed.as_raw_fd(), fd_token(closed.as_raw_fd()), POLL_IN)
        .unwrap();
    poller
        .register(c.as_raw_fd(), fd_token(c.as_raw_fd()), POLL_IN)
        .unwrap();
    peer.write_all(b"x").unwrap();
    d.write_all(b"x").unwrap();
    drop(closed); // `sock` keeps the file open
    poll_sorted(poller.as_mut(), Some(Duration::ZERO));
    poller.reset().unwrap();
    assert_eq!(poll_sorted(poller.as_mut(), Some(Duration::ZERO)), []);
    poller
        .register(c.as_raw_fd(), fd_token(c.as_raw_fd()), POLL_IN)
        .unwrap();
    assert_eq!(poll_sorted(poller.as_mut(), LONG), [(c.as_raw_fd(), POLL_IN)]);
    drop(sock);
}

/// One module per backend of this platform, each running every case.
macro_rules! contract_cases {
    ($($case:ident),* $(,)?) => {
        contract_cases!(@backend #[cfg(epoll)] epoll, Epoll, $($case),*);
        contract_cases!(@backend #[cfg(kqueue)] kqueue, Kqueue, $($case),*);
        contract_cases!(@backend #[cfg(all())] poll, Poll, $($case),*);
        contract_cases!(@backend #[cfg(all())] select, Select, $($case),*);
    };
    (@backend #[$on:meta] $module:ident, $backend:ident, $($case:ident),*) => {
        #[$on]
        mod $module {
            $(
                #[test]
                fn $case() {
                    super::$case(super::Backend::$backend);
                }
            )*
        }
    };
}

contract_cases!(
    readable_when_peer_wrote,
    writable_when_send_buffer_has_room,
    level_triggered_reports_again_until_drained,
    register_twice_is_already_exists,
    unregister_or_modify_unknown_fd_is_not_found,
    register_closed_fd_is_invalid_input_ebadf,
    in_and_out_are_merged_into_one_entry,
    modify_changes_the_watched_conditions,
    unregistered_fd_is_no_longer_reported,
    tcp_listener_is_readable_with_a_pending_connection,
    sub_millisecond_timeout_waits_at_least_that_long,
    signal_during_wait_is_interrupted,
    events_carry_the_registered_token,
    reset_drops_every_registration_even_a_closed_fds,
);
