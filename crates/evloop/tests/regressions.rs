//! Bugs found by the model test (tests/model.rs), each minimized to a focused case
//! and named after what it pins.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;

use evloop::{Backend, Ctx, EventLoop, POLL_NULL};

/// A duplicate of `fd` numbered at least `min`, so that no parallel test reuses
/// the number once it is closed.
fn dup_at_least(fd: RawFd, min: RawFd) -> RawFd {
    // SAFETY: F_DUPFD_CLOEXEC only creates a new descriptor; `fd` is open.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    assert!(new >= min, "F_DUPFD_CLOEXEC: {}", io::Error::last_os_error());
    new
}

/// `take` of a registration whose fd was closed behind the loop's back panics
/// with "idle entries are returned" (event_loop.rs, `take`): `detach` forgets the
/// source of a closed fd and returns `Ok(None)`, which `take` `expect`s to be
/// `Some`. Every backend. The loop must not panic on this misuse (it handles it
/// everywhere else: remove, poll, re-add); `take` should return an error (and the
/// registration be gone), as `remove` returns `Ok` for it.
///
/// Found by the model as: AddBorrowed(POLL_NULL), CloseBehind(0), Take(0).
fn take_of_fd_closed_behind_loops_back_returns_an_error(backend: Backend, min: RawFd) {
    let mut lp: EventLoop = EventLoop::with_backend(backend).unwrap();
    let (sock, _peer) = UnixStream::pair().unwrap();
    let fd = dup_at_least(sock.as_raw_fd(), min);
    drop(sock);
    // SAFETY: `fd` is open until the close below; after it the loop holds a
    // dangling number, which is the misuse under test.
    let borrowed: BorrowedFd<'static> = unsafe { BorrowedFd::borrow_raw(fd) };
    let token = lp
        .add(borrowed, POLL_NULL, |_: &mut Ctx, _: &mut BorrowedFd<'static>, _, _| {
            Ok(())
        })
        .unwrap();
    // SAFETY: `fd` is ours (dup_at_least) and closed exactly once.
    unsafe { libc::close(fd) };
    // This used to panic ("idle entries are returned").
    let err = lp.take::<BorrowedFd<'static>>(token).map(|_| ()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{backend}: {err}");
    assert!(!lp.contains(token));
    assert!(lp.is_empty());
}

#[test]
fn epoll_take_of_fd_closed_behind_loops_back_returns_an_error() {
    if Backend::Epoll.is_available() {
        take_of_fd_closed_behind_loops_back_returns_an_error(Backend::Epoll, 900);
    }
}

#[test]
fn poll_take_of_fd_closed_behind_loops_back_returns_an_error() {
    take_of_fd_closed_behind_loops_back_returns_an_error(Backend::Poll, 920);
}

#[test]
fn select_take_of_fd_closed_behind_loops_back_returns_an_error() {
    take_of_fd_closed_behind_loops_back_returns_an_error(Backend::Select, 940);
}
