//! Bugs found by the model test (tests/model.rs) or reported in issues, each
//! minimized to a focused case and named after what it pins.

#![allow(unsafe_code)] // a test: it calls libc directly (fds, signals, limits)

use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, Once};
use std::time::Duration;

use evloop::{Backend, Ctx, EventLoop, POLL_IN, POLL_NULL};

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

/// Every log line of this process, for the tests that read what the loop said.
/// (Installed once; the tests of this file run in parallel, so each looks only for
/// lines naming its own fd.)
fn captured_logs() -> &'static Mutex<Vec<String>> {
    struct Capture;
    static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
    static LOGGER: Capture = Capture;
    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            LINES
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("{} {}", record.level(), record.args()));
        }
        fn flush(&self) {}
    }
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&LOGGER).expect("the only logger of this test binary");
        log::set_max_level(log::LevelFilter::Debug);
    });
    &LINES
}

/// Issue 13, case 5: a handler that removes itself and then fails was logged as
/// "handler for fd -1" (the loop looked the fd up in the slot it had just
/// vacated). The line names the fd the handler had.
fn handler_error_after_removing_itself_names_its_fd(backend: Backend, min: RawFd) {
    let logs = captured_logs();
    let mut lp: EventLoop = EventLoop::with_backend(backend).unwrap();
    let (sock, mut peer) = UnixStream::pair().unwrap();
    let fd = dup_at_least(sock.as_raw_fd(), min);
    drop(sock);
    // SAFETY: `fd` was just made by dup_at_least and belongs to nothing else.
    let source = unsafe { OwnedFd::from_raw_fd(fd) };
    lp.add(source, POLL_IN, |cx: &mut Ctx, _: &mut OwnedFd, me, _| {
        cx.lp.remove(me)?;
        Err(io::Error::other("failed after removing itself"))
    })
    .unwrap();
    peer.write_all(b"x").unwrap();
    lp.run_once(Some(Duration::from_secs(1)), &mut ()).unwrap();
    let lines = logs.lock().unwrap_or_else(|e| e.into_inner());
    let line = lines
        .iter()
        .find(|line| {
            line.starts_with(&format!("ERROR {backend}: handler for fd ")) && line.contains("failed after removing")
        })
        .unwrap_or_else(|| panic!("{backend}: no handler error logged: {lines:?}"));
    assert!(line.contains(&format!("handler for fd {fd} ")), "{backend}: {line}");
}

#[test]
fn epoll_handler_error_after_removing_itself_names_its_fd() {
    if Backend::Epoll.is_available() {
        handler_error_after_removing_itself_names_its_fd(Backend::Epoll, 960);
    }
}

#[test]
fn poll_handler_error_after_removing_itself_names_its_fd() {
    handler_error_after_removing_itself_names_its_fd(Backend::Poll, 970);
}

#[test]
fn select_handler_error_after_removing_itself_names_its_fd() {
    handler_error_after_removing_itself_names_its_fd(Backend::Select, 980);
}

/// A foreign fd its owner closed before removing the registration (c-ares closes
/// its sockets itself, and the DNS driver hears of it afterwards) is the expected
/// order for `add_foreign`, not misuse: nothing above debug may be logged about
/// it, whether the number is free or a new socket has it by then (the owned-source
/// path says "closed without remove()" at WARN, once per c-ares socket).
fn foreign_fd_closed_by_its_owner_first_logs_nothing_above_debug(backend: Backend, min: RawFd) {
    let logs = captured_logs();
    let mut lp: EventLoop = EventLoop::with_backend(backend).unwrap();
    // Each owner's socket at `min`, alone (no other descriptor keeps its file
    // open, as none does for c-ares' sockets).
    let owned_at_min = || {
        let (sock, peer) = UnixStream::pair().unwrap();
        let fd = dup_at_least(sock.as_raw_fd(), min);
        // SAFETY: `fd` was just made by dup_at_least and belongs to nothing else.
        (fd, unsafe { OwnedFd::from_raw_fd(fd) }, peer)
    };
    let (fd, first, _first_peer) = owned_at_min();
    let free = lp
        .add_foreign(fd, POLL_IN, |_: &mut Ctx, _: &mut _, _, _| Ok(()))
        .unwrap();
    drop(first);
    lp.remove(free).unwrap();
    // Again, with a new socket on the number by the time of the remove.
    let (again, second, _second_peer) = owned_at_min();
    assert_eq!(again, fd, "the freed number is handed out again");
    let reused = lp
        .add_foreign(fd, POLL_IN, |_: &mut Ctx, _: &mut _, _, _| Ok(()))
        .unwrap();
    drop(second);
    let (again, newcomer, _newcomer_peer) = owned_at_min();
    assert_eq!(again, fd, "the freed number is handed out again");
    lp.remove(reused).unwrap();
    drop(newcomer);
    let lines = logs.lock().unwrap_or_else(|e| e.into_inner());
    let loud: Vec<&String> = lines
        .iter()
        .filter(|line| !line.starts_with("DEBUG") && !line.starts_with("TRACE"))
        .filter(|line| line.contains(&format!("fd {fd} ")))
        .collect();
    assert!(loud.is_empty(), "{backend}: {loud:?}");
}

#[test]
fn epoll_foreign_fd_closed_by_its_owner_first_logs_nothing_above_debug() {
    if Backend::Epoll.is_available() {
        foreign_fd_closed_by_its_owner_first_logs_nothing_above_debug(Backend::Epoll, 995);
    }
}

#[test]
fn poll_foreign_fd_closed_by_its_owner_first_logs_nothing_above_debug() {
    foreign_fd_closed_by_its_owner_first_logs_nothing_above_debug(Backend::Poll, 1005);
}

#[test]
fn select_foreign_fd_closed_by_its_owner_first_logs_nothing_above_debug() {
    foreign_fd_closed_by_its_owner_first_logs_nothing_above_debug(Backend::Select, 1015);
}
