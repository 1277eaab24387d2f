//! The conformance suite: every case runs on every backend this machine has
//! (`epoll::…`, `kqueue::…`, `poll::…`, `select::…` in the test names), through
//! the loop.
//!
//! Sockets are on loopback or socket pairs only.

#![allow(unsafe_code)] // a test: it calls libc directly (fds, signals, limits)

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use evloop::{
    Backend, Builder, Ctx, EventLoop, Events, ForeignFd, POLL_ERR, POLL_HUP, POLL_IN, POLL_NULL, POLL_NVAL, POLL_OUT,
    PollerError, Token, get_sock_error,
};

/// Descriptor numbers are shared by all the tests of this process. Cases that hold
/// thousands of them run alone (write side), so that they stay under RLIMIT_NOFILE
/// and do not push the other cases' fds past select's FD_SETSIZE; the rest share
/// (read side).
static FD_TABLE: RwLock<()> = RwLock::new(());

/// The cases that take the fd table for themselves.
const EXCLUSIVE_CASES: [&str; 3] = [
    "thousands_of_registered_fds",
    "select_refuses_fd_at_or_above_fd_setsize",
    // counts the process's open descriptors
    "foreign_fd_closed_by_its_owner_then_removed_leaks_nothing",
];

fn run_case(name: &str, backend: Backend, case: fn(Backend)) {
    if !backend.is_available() {
        eprintln!("{backend} does not exist on this platform: {name} not run");
        return;
    }
    if EXCLUSIVE_CASES.contains(&name) {
        let _alone = FD_TABLE.write().unwrap_or_else(|e| e.into_inner());
        case(backend)
    } else {
        let _shared = FD_TABLE.read().unwrap_or_else(|e| e.into_inner());
        case(backend)
    }
}

/// A duplicate of `fd` numbered at least `min`: a number the lowest-free rule will
/// not hand to a parallel test in the meantime.
fn dup_high(fd: RawFd, min: RawFd) -> RawFd {
    // SAFETY: F_DUPFD_CLOEXEC only creates a new descriptor; `fd` is open.
    let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    assert!(high >= min, "F_DUPFD: {}", io::Error::last_os_error());
    high
}

/// What a connect's completion handler saw: its events and the socket's error.
type ConnectOutcome = Rc<RefCell<Option<(Events, Option<io::Error>)>>>;

/// Events seen by handlers, in order: (which handler, events).
type Log = Rc<RefCell<Vec<(&'static str, Events)>>>;

fn new_loop<D: 'static>(backend: Backend) -> EventLoop<D> {
    let _ = env_logger::builder().is_test(true).try_init();
    EventLoop::with_backend(backend).unwrap_or_else(|e| panic!("{backend}: {e}"))
}

/// A handler that records its events and does nothing else.
fn recorder<S: 'static>(
    log: &Log,
    name: &'static str,
) -> impl FnMut(&mut Ctx<'_, ()>, &mut S, Token, Events) -> io::Result<()> + 'static {
    let log = Rc::clone(log);
    move |_cx, _source, _token, events| {
        log.borrow_mut().push((name, events));
        Ok(())
    }
}

fn names(log: &Log) -> Vec<&'static str> {
    log.borrow().iter().map(|(n, _)| *n).collect()
}

fn turn(lp: &mut EventLoop, timeout_ms: u64) -> usize {
    lp.run_once(Some(Duration::from_millis(timeout_ms)), &mut ())
        .expect("run_once")
}

fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

/// A loopback address nothing listens on.
fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn raise_fd_limit(needed: u64) {
    let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap();
    if soft < needed {
        assert!(
            hard >= needed,
            "this test needs RLIMIT_NOFILE >= {needed}; the hard limit is {hard}"
        );
        rlimit::Resource::NOFILE.set(needed.max(soft), hard).unwrap();
    }
}

/// Register a socket whose non-blocking connect is under way and turn the loop
/// until it completes: the events it completed with and its pending error.
fn await_connect(lp: &mut EventLoop, sock: socket2::Socket) -> (Events, Option<io::Error>) {
    let result: ConnectOutcome = Default::default();
    let out = Rc::clone(&result);
    lp.add(
        sock,
        POLL_OUT | POLL_ERR,
        move |cx: &mut Ctx, s: &mut socket2::Socket, token, events| {
            *out.borrow_mut() = Some((events, get_sock_error(s)?));
            cx.lp.remove(token)
        },
    )
    .unwrap();
    turn(lp, 2000);
    result.borrow_mut().take().expect("connect completion reported")
}

/// A floor for the high fd numbers of one case on one backend: the three backends
/// run each case at once, and a case that frees a number and expects the next
/// `dup_high` to get it back must not meet the other backends' fds there.
fn floor_for(backend: Backend, base: RawFd) -> RawFd {
    let offset = match backend {
        Backend::Epoll | Backend::Kqueue => 0,
        Backend::Poll => 20,
        Backend::Select => 40,
    };
    base + offset
}

/// The file (device, inode) an fd names, or `None` if it is closed.
fn file_of(fd: RawFd) -> Option<(u64, u64)> {
    // SAFETY: an all-zero stat is a valid value; fstat writes into it or fails.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat only writes the struct we own; any fd number is a valid argument.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    Some((st.st_dev as u64, st.st_ino as u64))
}

/// A dup of `sock` numbered at least `min`, and a `'static` borrow of it for the
/// loop: the test closes it behind the loop's back (`close_behind`) while `sock`
/// keeps the file open.
fn borrowed_dup(sock: &UnixStream, min: RawFd) -> (RawFd, BorrowedFd<'static>) {
    let fd = dup_high(sock.as_raw_fd(), min);
    // SAFETY: `fd` is open until the test's close_behind; the loop then holds a
    // dangling number, which is the misuse under test.
    (fd, unsafe { BorrowedFd::borrow_raw(fd) })
}

/// `sock` moved to a number at least `min`, owned: the number and the owner.
fn owned_high(sock: UnixStream, min: RawFd) -> (RawFd, std::os::fd::OwnedFd) {
    let fd = dup_high(sock.as_raw_fd(), min);
    drop(sock);
    // SAFETY: `fd` was just made by dup_high and belongs to nothing else.
    (fd, unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Close `fd` behind the loop's back (the misuse under test).
fn close_behind(fd: RawFd) {
    // SAFETY: the callers own `fd` (made by dup_high) and close it exactly once;
    // whatever still holds the number is the loop, which is what is tested.
    assert_eq!(unsafe { libc::close(fd) }, 0, "close({fd})");
}

/// Turn the loop with `timeout_ms` waits for `window`, at most `max_turns` times:
/// how many turns it took. A loop that does not spin takes about
/// `window / timeout_ms`; one that spins, `max_turns`.
/// Whether `fd` is open (`fcntl(F_GETFD)` succeeds on it).
fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags; any number is a valid argument.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// How many descriptors this process has open.
fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .or_else(|_| std::fs::read_dir("/dev/fd"))
        .expect("a list of open descriptors")
        .count()
}

/// A foreign fd registered (handler "old"), closed by its owner, and its number
/// taken by a new socket before the registration is removed.
struct ReusedForeignNumber {
    number: RawFd,
    foreign: Token,
    /// The new socket, on `number`.
    newcomer: std::os::fd::OwnedFd,
    newcomer_peer: UnixStream,
    _old_peer: UnixStream,
}

impl ReusedForeignNumber {
    fn new(lp: &mut EventLoop, log: &Log, floor: RawFd) -> Self {
        let (old, old_peer) = UnixStream::pair().unwrap();
        let (newcomer, newcomer_peer) = UnixStream::pair().unwrap();
        let (number, old) = owned_high(old, floor);
        let foreign = lp.add_foreign(number, POLL_IN, recorder(log, "old")).unwrap();
        drop(old);
        let (again, newcomer) = owned_high(newcomer, number);
        assert_eq!(again, number, "the freed number is handed out again");
        ReusedForeignNumber {
            number,
            foreign,
            newcomer,
            newcomer_peer,
            _old_peer: old_peer,
        }
    }
}

fn turns_within(lp: &mut EventLoop, timeout_ms: u64, window: Duration, max_turns: usize) -> usize {
    let start = Instant::now();
    let mut turns = 0;
    while start.elapsed() < window && turns < max_turns {
        turn(lp, timeout_ms);
        turns += 1;
    }
    turns
}

mod cases {
    use super::*;

    pub fn readable_when_data_arrives(backend: Backend) {
        let mut lp = new_loop(backend);
        let log: Log = Default::default();
        let (a, mut b) = UnixStream::pair().unwrap();
        lp.add(a, POLL_IN, recorder(&log, "a")).unwrap();
        assert_eq!(turn(&mut lp, 0), 0, "nothing is readable yet");
        b.write_all(b"x").unwrap();
        assert_eq!(turn(&mut lp, 1000), 1);
        assert_eq!(*log.borrow(), [("a", POLL_IN)]);
    }

    pub fn writable_when_buffer_has_room(backend: Backend) {
        let mut lp = new_loop(backend);
        let log: Log = Default::default();
        let (a, _b) = UnixStream::pair().unwrap();
        lp.add(a, POLL_OUT, recorder(&log, "a")).unwrap();
        turn(&mut lp, 1000);
        assert_eq!(*log.borrow(), [("a", POLL_OUT)]);
    }

    pub fn read_and_write_merge_into_one_event(backend: Backend) {
        let mut lp = new_loop(backend);
        let log: Log = Default::default();
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"x").unwrap();
        lp.add(a, POLL_IN | POLL_OUT, recorder(&log, "a")).unwrap();
        assert_eq!(turn(&mut lp, 1000), 1);
        assert_eq!(*log.borrow(), [("a", POLL_IN | POLL_OUT)]);
    }

    pub fn listener_is_readable_on_pending_accept(backend: Backend) {
        let mut lp = new_loop(backend);
        let accepted = Rc::new(RefCell::new(0));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Rc::clone(&accepted);
        lp.add(
            listener,
            POLL_IN,
            move |_cx: &mut Ctx, l: &mut TcpListener, _, events: Events| {
                assert!(events.is_readable());
                l.accept()?;
                *count.borrow_mut() += 1;
                Ok(())
            },
        )
        .unwrap();
        let _client = TcpStream::connect(addr).unwrap();
        turn(&mut lp, 1000);
        assert_eq!(*accepted.borrow(), 1);
    }

    pub fn nonblocking_connect_completes_with_pollout(backend: Backend) {
        let mut lp = new_loop(backend);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_nonblocking(true).unwrap();
        match sock.connect(&listener.local_addr().unwrap().into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => panic!("connect: {e}"),
        }
        let (events, error) = await_connect(&mut lp, sock);
        assert!(events.is_writable(), "{events}");
        assert!(error.is_none(), "{error:?}");
        assert!(lp.is_empty());
    }

    pub fn refused_connect_reports_the_error(backend: Backend) {
        let mut lp = new_loop(backend);
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_nonblocking(true).unwrap();
        match sock.connect(&closed_port().into()) {
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return, // refused synchronously
            other => panic!("connect to a closed port: {other:?}"),
        }
        let (events, error) = await_connect(&mut lp, sock);
        // select sees the failure only as writability; the others flag POLL_ERR.
        if backend != Backend::Select {
            assert!(events.is_error(), "{events}");
        }
        assert_eq!(error.map(|e| e.kind()), Some(io::ErrorKind::ConnectionRefused));
    }

    pub fn hangup_is_reported_when_peer_closes(backend: Backend) {
        let mut lp = new_loop(backend);
        let log: Log = Default::default();
        let (a, b) = UnixStream::pair().unwrap();
        // Watch for nothing: errors and hang-ups must arrive anyway (except on
        // select, which sees a hang-up only as readability, so it watches POLL_IN).
        let mode = if backend == Backend::Select { POLL_IN } else { POLL_NULL };
        let token = lp.add(a, mode, recorder(&log, "a")).unwrap();
        drop(b);
        turn(&mut lp, 1000);
        let events = log.borrow().first().map(|(_, e)| *e).expect("hang-up reported");
        if backend == Backend::Select {
            assert!(events.is_readable(), "{events}");
        } else {
            assert!(events.is_hup(), "{events}");
        }
        lp.remove(token).unwrap();
    }

    pub fn reset_is_reported_as_error(backend: Backend) {
        let mut lp = new_loop(backend);
        let log: Log = Default::default();
        let (client, server) = tcp_pair();
        let mode = if backend == Backend::Select { POLL_IN } else { POLL_NULL };
        lp.add(client, mode, recorder(&log, "client")).unwrap();
        // Linger 0 turns close into an RST.
        socket2::SockRef::from(&server)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(server);
        turn(&mut lp, 1000);
        let events = log.borrow().first().map(|(_, e)| *e).expect("reset reported");
        if backend == Backend::Select {
            assert!(events.is_readable(), "{events}");
        } else {
            assert!(events.contains(POLL_ERR | POLL_HUP), "{events}");
        }
    }

    pub fn undrained_socket_is_reported_again(backend: Backend) {
        let mut lp = new_loop(backend);
        let log: Log = Default::default();
        let (a, mut b) = UnixStream::pair().unwrap();
        lp.add(a, POLL_IN, recorder(&log, "a")).unwrap();
        b.write_all(b"not read").unwrap();
        for _ in 0..3 {
            assert_eq!(turn(&mut lp, 1000), 1);
        }
        assert_eq!(names(&log), ["a", "a", "a"]);
    }

    pub fn modify_changes_what_is_reported(backend: Backend) {
        let mut lp = new_loop(backend);
        let log: Log = Default::default();
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"x").unwrap();
        let token = lp.add(a, POLL_IN, recorder(&log, "a")).unwrap();
        turn(&mut lp, 1000);
        lp.modify(token, POLL_OUT).unwrap();
        turn(&mut lp, 1000);
        lp.modify(token, POLL_NULL).unwrap();
        assert_eq!(turn(&mut lp, 20), 0, "POLL_NULL watches only errors and hang-ups");
        assert_eq!(*log.borrow(), [("a", POLL_IN), ("a", POLL_OUT)]);
        assert_eq!(lp.registration(token).map(|(_, mode)| mode), Some(POLL_NULL));
    }

    pub fn handler_removes_itself(backend: Backend) {
        let mut lp = new_loop(backend);
        let (a, mut b) = UnixStream::pair().unwrap();
        let calls = Rc::new(RefCell::new(0));
        let c = Rc::clone(&calls);
        lp.add(a, POLL_IN, move |cx: &mut Ctx, a: &mut UnixStream, token, _| {
            *c.borrow_mut() += 1;
            a.read_exact(&mut [0u8; 1])?; // closing with unread data would send a reset
            cx.lp.remove(token)
        })
        .unwrap();
        b.write_all(b"x").unwrap();
        turn(&mut lp, 1000);
        turn(&mut lp, 20);
        assert_eq!(*calls.borrow(), 1);
        assert!(lp.is_empty());
        // The loop closed the socket after unregistering it: the peer sees EOF.
        let mut buf = [0u8; 1];
        assert_eq!(b.read(&mut buf).unwrap(), 0);
    }

    /// Two registrations ready in the same batch: whichever runs first removes the
    /// other, whose already-fetched event must then not be delivered.
    pub fn handler_removes_another_ready_in_same_batch(backend: Backend) {
        let mut lp = new_loop(backend);
        let log: Log = Default::default();
        let tokens: Rc<RefCell<Vec<Token>>> = Default::default();
        let mut peers = Vec::new();
        for name in ["first", "second"] {
            let (a, mut b) = UnixStream::pair().unwrap();
            b.write_all(b"x").unwrap();
            peers.push(b);
            let (log, all) = (Rc::clone(&log), Rc::clone(&tokens));
            let token = lp
                .add(
                    a,
                    POLL_IN,
                    move |cx: &mut Ctx, _: &mut UnixStream, me: Token, events| {
                        log.borrow_mut().push((name, events));
                        for other in all.borrow().iter().filter(|&&t| t != me) {
                            cx.lp.remove(*other)?;
                        }
                        Ok(())
                    },
                )
                .unwrap();
            tokens.borrow_mut().push(token);
        }
        assert_eq!(turn(&mut lp, 1000), 1, "the removed registration's event was dropped");
        assert_eq!(log.borrow().len(), 1);
        assert_eq!(lp.len(), 1);
    }

    /// The original's weakness: handler A's socket is closed and a new socket gets
    /// the same fd number in the same batch; A's stale event must reach no one.
    pub fn fd_reused_within_batch_gets_no_stale_event(backend: Backend) {
        let mut lp = new_loop(backend);
        let log: Log = Default::default();
        let tokens: Rc<RefCell<Vec<(Token, RawFd)>>> = Default::default();
        let reused = Rc::new(RefCell::new(false));
        let mut peers = Vec::new();
        // Each of two ready registrations, if it runs first, removes the other and
        // opens sockets until one lands on the other's old fd number, registering it.
        for name in ["a", "b"] {
            let (s, mut peer) = UnixStream::pair().unwrap();
            peer.write_all(b"x").unwrap();
            peers.push(peer);
            let fd = s.as_raw_fd();
            let (log, all, reused) = (Rc::clone(&log), Rc::clone(&tokens), Rc::clone(&reused));
            let token = lp
                .add(
                    s,
                    POLL_IN,
                    move |cx: &mut Ctx, _: &mut UnixStream, me: Token, events| {
                        log.borrow_mut().push((name, events));
                        let Some(&(other, other_fd)) = all.borrow().iter().find(|(t, _)| *t != me) else {
                            return Ok(());
                        };
                        if !cx.lp.contains(other) {
                            return Ok(());
                        }
                        cx.lp.remove(other)?;
                        let mut spare = Vec::new();
                        for _ in 0..64 {
                            let (x, y) = UnixStream::pair()?;
                            if x.as_raw_fd() == other_fd || y.as_raw_fd() == other_fd {
                                let (mine, keep) = if x.as_raw_fd() == other_fd { (x, y) } else { (y, x) };
                                // Make the newcomer readable too, so that a stale event
                                // would be indistinguishable from a real one.
                                (&keep).write_all(b"y")?;
                                spare.push(keep);
                                cx.lp.add(mine, POLL_IN, recorder(&log, "newcomer"))?;
                                *reused.borrow_mut() = true;
                                break;
                            }
                            spare.push(x);
                            spare.push(y);
                        }
                        std::mem::forget(spare); // keep the peers open for the rest of the test
                        Ok(())
                    },
                )
                .unwrap();
            tokens.borrow_mut().push((token, fd));
        }
        turn(&mut lp, 1000);
        assert!(
            *reused.borrow(),
            "the fd number was not reused; the test proved nothing"
        );
        assert_eq!(log.borrow().len(), 1, "stale event delivered: {:?}", log.borrow());
        // The newcomer gets its own events from the next poll on.
        turn(&mut lp, 1000);
        assert!(names(&log).contains(&"newcomer"), "{:?}", log.borrow());
    }

    pub fn thousands_of_registered_fds(backend: Backend) {
        const IDLE: usize = 10_000;
        raise_fd_limit(IDLE as u64 + 200);
        let mut lp = new_loop(backend);
        let log: Log = Default::default();
        let mut refused = 0;
        for _ in 0..IDLE {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            let fd = sock.as_raw_fd();
            match lp.add(sock, POLL_IN, recorder(&log, "idle")) {
                Ok(_) => {}
                Err(e) if backend == Backend::Select && fd >= libc::FD_SETSIZE as RawFd => {
                    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
                    assert!(e.to_string().contains("FD_SETSIZE"), "{e}");
                    refused += 1;
                }
                Err(e) => panic!("registering fd {fd}: {e}"),
            }
        }
        if backend == Backend::Select {
            assert!(
                refused > 0 && lp.len() < libc::FD_SETSIZE,
                "select must refuse fds >= FD_SETSIZE"
            );
        } else {
            assert_eq!(lp.len(), IDLE);
        }
        // An active socket among them is still found, and only it.
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let active = UdpSocket::bind("127.0.0.1:0").unwrap();
        let active_addr = active.local_addr().unwrap();
        let active_fd = active.as_raw_fd();
        if backend == Backend::Select && active_fd >= libc::FD_SETSIZE as RawFd {
            return; // no room below FD_SETSIZE left; the refusals above are the point
        }
        lp.add(active, POLL_IN, recorder(&log, "active")).unwrap();
        sender.send_to(b"ping", active_addr).unwrap();
        assert_eq!(turn(&mut lp, 1000), 1);
        assert_eq!(names(&log), ["active"]);
    }

    pub fn select_refuses_fd_at_or_above_fd_setsize(backend: Backend) {
        raise_fd_limit(libc::FD_SETSIZE as u64 + 200);
        let mut lp = new_loop(backend);
        let mut held = Vec::new();
        let high = loop {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            if sock.as_raw_fd() >= libc::FD_SETSIZE as RawFd {
                break sock;
            }
            held.push(sock);
            assert!(held.len() < 2 * libc::FD_SETSIZE, "could not reach FD_SETSIZE");
        };
        let fd = high.as_raw_fd();
        match lp.add(high, POLL_IN, |_: &mut Ctx, _: &mut UdpSocket, _, _| Ok(())) {
            Err(e) if backend == Backend::Select => {
                assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
                let inner = PollerError::of(&e).expect("a PollerError inside");
                assert_eq!((inner.backend, inner.fd), (Backend::Select, Some(fd)));
                assert!(lp.is_empty());
            }
            Ok(_) if backend != Backend::Select => {}
            other => panic!("{backend}: registering fd {fd}: {other:?}"),
        }
        // The loop still works after the refusal.
        let log: Log = Default::default();
        drop(held);
        let (a, mut b) = UnixStream::pair().unwrap();
        lp.add(a, POLL_IN, recorder(&log, "a")).unwrap();
        b.write_all(b"x").unwrap();
        turn(&mut lp, 1000);
        assert_eq!(names(&log), ["a"]);
    }

    pub fn poller_errors_are_the_same_everywhere(backend: Backend) {
        let mut poller = backend.open().unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        let token = Token::from_u64(1);
        poller.register(fd, token, POLL_IN).unwrap();
        let kind = |r: io::Result<()>| r.map_err(|e| e.kind()).err();
        assert_eq!(
            kind(poller.register(fd, token, POLL_IN)),
            Some(io::ErrorKind::AlreadyExists)
        );
        poller.unregister(fd).unwrap();
        assert_eq!(kind(poller.unregister(fd)), Some(io::ErrorKind::NotFound));
        assert_eq!(kind(poller.modify(fd, token, POLL_OUT)), Some(io::ErrorKind::NotFound));
        let closed = UnixStream::pair().unwrap().0.into_raw_fd();
        // SAFETY: we own `closed` (into_raw_fd) and close it once; it is then unused.
        unsafe { libc::close(closed) };
        let err = poller.register(closed, token, POLL_IN).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        let inner = PollerError::of(&err).expect("a PollerError inside");
        assert_eq!((inner.backend, inner.fd, inner.op), (backend, Some(closed), "register"));
    }

    /// Closing a registered fd without `remove` must not panic, spin, or disturb
    /// the other registrations; the stale registration is dropped with a warning.
    pub fn fd_closed_behind_loops_back_is_dropped(backend: Backend) {
        let mut lp = new_loop(backend);
        let log: Log = Default::default();
        let (victim, _victim_peer) = UnixStream::pair().unwrap();
        let victim_fd = dup_high(victim.as_raw_fd(), 700);
        drop(victim);
        // SAFETY: victim_fd stays open until the close below; after it, the loop holds
        // a dangling number, which is exactly the misuse under test.
        let borrowed: BorrowedFd<'static> = unsafe { BorrowedFd::borrow_raw(victim_fd) };
        let stale = lp.add(borrowed, POLL_IN, recorder(&log, "victim")).unwrap();
        let (a, mut b) = UnixStream::pair().unwrap();
        lp.add(a, POLL_IN, recorder(&log, "other")).unwrap();
        // SAFETY: victim_fd is ours (dup_high) and closed exactly once.
        unsafe { libc::close(victim_fd) };
        for _ in 0..3 {
            turn(&mut lp, 20);
        }
        let mut keep_open = Vec::new();
        match backend {
            // poll and select see the closed fd: the handler is told, then it is dropped.
            Backend::Poll | Backend::Select => {
                assert_eq!(*log.borrow(), [("victim", POLL_NVAL)]);
                assert!(!lp.contains(stale));
            }
            // epoll forgets a closed file silently; the loop notices when the number
            // comes back in a new source.
            _ => {
                assert!(log.borrow().is_empty());
                let (reuse, peer) = UnixStream::pair().unwrap();
                keep_open.push(peer);
                let reuse_fd = dup_high(reuse.as_raw_fd(), victim_fd);
                assert_eq!(reuse_fd, victim_fd, "the freed number is handed out again");
                drop(reuse);
                // SAFETY: reuse_fd was just created by dup_high and is owned by nothing else.
                let reuse = unsafe { std::os::fd::OwnedFd::from_raw_fd(reuse_fd) };
                lp.add(reuse, POLL_IN, recorder(&log, "reuse")).unwrap();
                assert!(!lp.contains(stale));
            }
        }
        // No spin: an idle poll waits its full timeout.
        log.borrow_mut().clear();
        let start = Instant::now();
        assert_eq!(turn(&mut lp, 50), 0);
        assert!(
            start.elapsed() >= Duration::from_millis(45),
            "poll returned early: {:?}",
            start.elapsed()
        );
        // The other registration still works.
        b.write_all(b"x").unwrap();
        turn(&mut lp, 1000);
        assert_eq!(names(&log), ["other"]);
    }

    /// Issue 13, case 1: a second source with a registered fd (a clone of the
    /// README's `Rc<TcpStream>`) is refused with `AlreadyExists`; the first
    /// registration is untouched and nothing leaks (main accepted it, dropped the
    /// first registration as "closed without remove()" and never dropped its source).
    pub fn same_fd_added_twice_is_already_exists_and_leaks_nothing(backend: Backend) {
        let mut lp = new_loop(backend);
        let log: Log = Default::default();
        let (a, mut b) = UnixStream::pair().unwrap();
        let a = Rc::new(a);
        let first = lp.add(Rc::clone(&a), POLL_IN, recorder(&log, "first")).unwrap();
        let err = lp.add(Rc::clone(&a), POLL_IN, recorder(&log, "second")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        let inner = PollerError::of(&err).expect("a PollerError inside");
        assert_eq!((inner.fd, inner.op), (Some(a.as_raw_fd()), "register"));
        assert_eq!(Rc::strong_count(&a), 2, "the refused clone was dropped");
        assert!(lp.contains(first));
        b.write_all(b"x").unwrap();
        turn(&mut lp, 1000);
        assert_eq!(*log.borrow(), [("first", POLL_IN)]);
        lp.remove(first).unwrap();
        assert_eq!(Rc::strong_count(&a), 1, "remove dropped the first registration's clone");
    }

    /// Issue 13, case 2: an fd closed behind the loop's back while a `dup` keeps its
    /// file open, whose handler then removes itself. epoll keeps the entry (it is
    /// keyed by the open file) and main polled the same stale event forever
    /// (632 000 silent iterations in 300 ms). The loop must go quiet.
    pub fn fd_closed_with_a_dup_open_does_not_spin_after_remove(backend: Backend) {
        let mut lp = new_loop(backend);
        let (sock, mut peer) = UnixStream::pair().unwrap();
        let (victim, borrowed) = borrowed_dup(&sock, floor_for(backend, 760));
        let calls = Rc::new(RefCell::new(0));
        let c = Rc::clone(&calls);
        lp.add(
            borrowed,
            POLL_IN,
            move |cx: &mut Ctx, _: &mut BorrowedFd<'static>, me, _| {
                *c.borrow_mut() += 1;
                cx.lp.remove(me)
            },
        )
        .unwrap();
        peer.write_all(b"x").unwrap(); // `sock` (the dup) stays readable
        close_behind(victim);
        let turns = turns_within(&mut lp, 20, Duration::from_millis(300), 1000);
        assert!(
            turns <= 30,
            "{backend}: {turns} turns of 20 ms in 300 ms: the loop spins"
        );
        assert!(
            *calls.borrow() <= 1,
            "{backend}: the handler ran {} times",
            calls.borrow()
        );
        assert!(lp.is_empty());
        drop(sock);
    }

    /// Issue 13, case 2, the other way: the handler does not remove itself but
    /// fails (its fd is closed: `EBADF`). main logged one ERROR line per iteration,
    /// 167 000 in 300 ms, on epoll. The loop must drop the registration (its fd no
    /// longer names its file) and go quiet.
    pub fn fd_closed_with_a_dup_open_does_not_spin_on_handler_errors(backend: Backend) {
        let mut lp = new_loop(backend);
        let (sock, mut peer) = UnixStream::pair().unwrap();
        let (victim, borrowed) = borrowed_dup(&sock, floor_for(backend, 820));
        let calls = Rc::new(RefCell::new(0));
        let c = Rc::clone(&calls);
        let token = lp
            .add(
                borrowed,
                POLL_IN,
                move |_: &mut Ctx, fd: &mut BorrowedFd<'static>, _, _| {
                    *c.borrow_mut() += 1;
                    let mut byte = 0u8;
                    // SAFETY: reads at most one byte into a local; a bad fd fails with EBADF.
                    let n = unsafe { libc::read(fd.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
                    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
                },
            )
            .unwrap();
        peer.write_all(b"x").unwrap();
        close_behind(victim);
        let turns = turns_within(&mut lp, 20, Duration::from_millis(300), 1000);
        assert!(
            turns <= 30,
            "{backend}: {turns} turns of 20 ms in 300 ms: the loop spins"
        );
        assert!(
            *calls.borrow() <= 2,
            "{backend}: the failing handler ran {} times",
            calls.borrow()
        );
        assert!(
            !lp.contains(token),
            "{backend}: the registration of a closed fd is dropped"
        );
        drop(sock);
    }

    /// Issue 13, case 3: a handler closes its own fd, removes itself and registers
    /// a new socket, which gets the same number. When the handler returned, main
    /// dropped the old source, closing the newcomer's fd.
    pub fn handler_closing_its_fd_does_not_close_the_newcomer_on_that_number(backend: Backend) {
        let mut lp = new_loop(backend);
        let log: Log = Default::default();
        let (old, mut old_peer) = UnixStream::pair().unwrap();
        let (newcomer, mut newcomer_peer) = UnixStream::pair().unwrap();
        let (number, old) = owned_high(old, floor_for(backend, 880));
        let newcomer_fd = newcomer.as_raw_fd();
        let handler_log = Rc::clone(&log);
        lp.add(
            old,
            POLL_IN,
            move |cx: &mut Ctx, _: &mut std::os::fd::OwnedFd, me, _| {
                close_behind(number);
                cx.lp.remove(me)?;
                let again = dup_high(newcomer_fd, number);
                assert_eq!(again, number, "the freed number is handed out again");
                // SAFETY: `again` was just made by dup_high and belongs to nothing else.
                let again = unsafe { std::os::fd::OwnedFd::from_raw_fd(again) };
                cx.lp.add(again, POLL_IN, recorder(&handler_log, "newcomer"))?;
                Ok(())
            },
        )
        .unwrap();
        old_peer.write_all(b"x").unwrap();
        turn(&mut lp, 1000);
        assert_eq!(
            file_of(number),
            file_of(newcomer_fd),
            "{backend}: fd {number} is the newcomer's and still open"
        );
        newcomer_peer.write_all(b"y").unwrap();
        turn(&mut lp, 1000);
        assert_eq!(*log.borrow(), [("newcomer", POLL_IN)]);
    }

    /// Issue 13, case 3, without the loop's help: an fd closed behind its back and
    /// its number taken by a socket nobody registered. On poll and select, main's
    /// `remove(old token)` closed the newcomer.
    pub fn remove_does_not_close_a_newcomer_on_a_closed_fds_number(backend: Backend) {
        let mut lp = new_loop(backend);
        let (old, _old_peer) = UnixStream::pair().unwrap();
        let (newcomer, _newcomer_peer) = UnixStream::pair().unwrap();
        let (number, old) = owned_high(old, floor_for(backend, 940));
        let token = lp.add(old, POLL_IN, recorder(&Default::default(), "old")).unwrap();
        close_behind(number);
        let again = dup_high(newcomer.as_raw_fd(), number);
        assert_eq!(again, number, "the freed number is handed out again");
        lp.remove(token).unwrap();
        assert_eq!(
            file_of(number),
            file_of(newcomer.as_raw_fd()),
            "{backend}: remove closed fd {number}, which is the newcomer's"
        );
        // The test's own: the newcomer's dup at `number`.
        close_behind(number);
    }

    /// A descriptor the loop does not own (c-ares' sockets) gets its readiness
    /// like any other, and its handler is told the number.
    pub fn foreign_fd_gets_its_readiness(backend: Backend) {
        let mut lp = new_loop(backend);
        let (a, mut b) = UnixStream::pair().unwrap();
        let seen = Rc::new(RefCell::new(Vec::new()));
        let s = Rc::clone(&seen);
        let token = lp
            .add_foreign(
                a.as_raw_fd(),
                POLL_IN,
                move |_: &mut Ctx, fd: &mut ForeignFd, _, events| {
                    s.borrow_mut().push((fd.fd(), events));
                    Ok(())
                },
            )
            .unwrap();
        assert_eq!(lp.registration(token), Some((a.as_raw_fd(), POLL_IN)));
        assert_eq!(turn(&mut lp, 20), 0, "{backend}: nothing to read yet");
        b.write_all(b"x").unwrap();
        turn(&mut lp, 1000);
        assert_eq!(*seen.borrow(), [(a.as_raw_fd(), POLL_IN)]);
        lp.modify(token, POLL_OUT).unwrap();
        seen.borrow_mut().clear();
        turn(&mut lp, 1000);
        assert_eq!(*seen.borrow(), [(a.as_raw_fd(), POLL_OUT)]);
    }

    /// `remove` and `take` of a foreign registration unregister it and close
    /// nothing: the owner's descriptor stays open and usable.
    pub fn remove_leaves_a_foreign_fd_open(backend: Backend) {
        let mut lp = new_loop(backend);
        let log: Log = Default::default();
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        let token = lp.add_foreign(fd, POLL_IN, recorder(&log, "foreign")).unwrap();
        lp.remove(token).unwrap();
        assert!(is_open(fd), "{backend}: remove closed the foreign fd {fd}");
        assert!(!lp.contains(token));
        b.write_all(b"x").unwrap();
        assert_eq!(turn(&mut lp, 20), 0, "{backend}: a removed foreign fd still reported");
        let token = lp.add_foreign(fd, POLL_IN, recorder(&log, "foreign")).unwrap();
        let taken: ForeignFd = lp.take(token).unwrap();
        assert_eq!(taken.fd(), fd);
        assert!(is_open(fd), "{backend}: take closed the foreign fd {fd}");
        let mut byte = [0u8];
        a.read_exact(&mut byte).unwrap();
        assert!(log.borrow().is_empty());
    }

    /// The owner closes a foreign fd, then the registration is removed, as c-ares'
    /// socket callback makes the DNS driver do: `remove` succeeds and closes
    /// nothing, and no placeholder is put on the number (nothing would ever close
    /// it: one descriptor leaked per c-ares socket).
    pub fn foreign_fd_closed_by_its_owner_then_removed_leaks_nothing(backend: Backend) {
        let mut lp = new_loop(backend);
        let log: Log = Default::default();
        let (other, mut other_peer) = UnixStream::pair().unwrap();
        lp.add(other, POLL_IN, recorder(&log, "other")).unwrap();
        let before = open_fd_count();
        let (sock, _peer) = UnixStream::pair().unwrap();
        let (number, owner) = owned_high(sock, floor_for(backend, 520));
        let token = lp.add_foreign(number, POLL_IN, recorder(&log, "foreign")).unwrap();
        turn(&mut lp, 10);
        drop(owner);
        turn(&mut lp, 10);
        match lp.remove(token) {
            Ok(()) => {}
            // poll and select drop it themselves on POLL_NVAL; then the token is stale.
            Err(err) => assert_eq!(err.kind(), io::ErrorKind::NotFound, "{backend}: {err}"),
        }
        turn(&mut lp, 10);
        assert!(!is_open(number), "{backend}: something was left open on fd {number}");
        drop(_peer);
        assert_eq!(open_fd_count(), before, "{backend}: descriptors leaked");
        assert!(!lp.contains(token));
        log.borrow_mut().clear();
        other_peer.write_all(b"x").unwrap();
        turn(&mut lp, 1000);
        assert_eq!(names(&log), ["other"], "{backend}: the other registration still works");
    }

    /// The owner closes a foreign fd and a new socket takes its number before the
    /// registration is removed (c-ares closing and opening a socket within one
    /// call): `remove` leaves the newcomer open and untouched, and the number can
    /// then be registered again for the newcomer, which gets its events.
    pub fn foreign_fd_number_reused_before_remove_leaves_the_newcomer_alone(backend: Backend) {
        let mut lp = new_loop(backend);
        let log: Log = Default::default();
        let reused = ReusedForeignNumber::new(&mut lp, &log, floor_for(backend, 580));
        let (number, newcomer_file) = (reused.number, file_of(reused.number));
        lp.remove(reused.foreign).unwrap();
        assert_eq!(
            file_of(number),
            newcomer_file,
            "{backend}: remove touched fd {number}, which is the newcomer's"
        );
        lp.add_foreign(number, POLL_IN, recorder(&log, "newcomer")).unwrap();
        let mut newcomer_peer = reused.newcomer_peer;
        newcomer_peer.write_all(b"y").unwrap();
        turn(&mut lp, 1000);
        assert_eq!(*log.borrow(), [("newcomer", POLL_IN)]);
        drop(reused.newcomer);
    }

    /// The owner closes a foreign fd and the loop is given an owned socket on the
    /// number before the foreign registration is removed: the newcomer is
    /// registered, the foreign registration dropped, and the late `remove` of it
    /// touches nothing.
    pub fn foreign_fd_number_taken_by_an_owned_source_drops_the_foreign_registration(backend: Backend) {
        let mut lp = new_loop(backend);
        let log: Log = Default::default();
        let reused = ReusedForeignNumber::new(&mut lp, &log, floor_for(backend, 640));
        let (number, foreign, mut newcomer_peer) = (reused.number, reused.foreign, reused.newcomer_peer);
        let owned = lp.add(reused.newcomer, POLL_IN, recorder(&log, "newcomer")).unwrap();
        assert!(!lp.contains(foreign));
        assert!(
            lp.remove(foreign).is_err(),
            "{backend}: a dropped token is not registered"
        );
        assert!(is_open(number), "{backend}: fd {number} (the newcomer) was closed");
        newcomer_peer.write_all(b"y").unwrap();
        turn(&mut lp, 1000);
        assert_eq!(*log.borrow(), [("newcomer", POLL_IN)]);
        lp.remove(owned).unwrap();
        assert!(!is_open(number), "{backend}: the loop closes the source it owns");
    }

    /// Issue 13, case 4: `stop()` before `run()` makes `run()` return at once, as
    /// the original's does; main cleared the request and ran on.
    pub fn stop_before_run_returns_at_once(backend: Backend) {
        let mut lp = new_loop(backend);
        let log: Log = Default::default();
        let (a, mut b) = UnixStream::pair().unwrap();
        lp.add(a, POLL_IN, recorder(&log, "a")).unwrap();
        b.write_all(b"x").unwrap();
        // A bound for the old behaviour, so that it fails instead of hanging.
        lp.add_timer(Duration::from_millis(500), |cx| cx.lp.stop());
        lp.stop();
        let start = Instant::now();
        lp.run(&mut ()).unwrap();
        assert!(log.borrow().is_empty(), "{backend}: run dispatched after stop()");
        assert!(start.elapsed() < Duration::from_millis(400));
        // The request is spent: the loop dispatches again.
        assert_eq!(turn(&mut lp, 1000), 1);
        assert_eq!(log.borrow().len(), 1);
    }

    /// Issue 13, case 5: epoll refuses regular files with `EPERM`, which main
    /// reported as "Operation not permitted". The error says what and which
    /// backend can; the others take a regular file (always ready).
    pub fn regular_file_refusal_says_which_backend_can(backend: Backend) {
        let mut lp = new_loop(backend);
        let path = std::env::temp_dir().join(format!("evloop-regular-{}-{backend}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let result = lp.add(file, POLL_IN, recorder(&Default::default(), "file"));
        match backend {
            Backend::Epoll => {
                let err = result.unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
                let text = err.to_string();
                assert!(text.contains("regular files"), "{text}");
                assert!(text.contains("poll and select backends can"), "{text}");
                assert!(!text.contains("Operation not permitted"), "{text}");
            }
            _ => {
                result.unwrap();
            }
        }
    }

    pub fn handler_error_is_logged_and_loop_goes_on(backend: Backend) {
        let mut lp = new_loop(backend);
        let log: Log = Default::default();
        let (a, mut b) = UnixStream::pair().unwrap();
        let (c, mut d) = UnixStream::pair().unwrap();
        lp.add(a, POLL_IN, |_: &mut Ctx, _: &mut UnixStream, _, _| {
            Err(io::Error::other("boom"))
        })
        .unwrap();
        lp.add(c, POLL_IN, recorder(&log, "c")).unwrap();
        b.write_all(b"x").unwrap();
        d.write_all(b"x").unwrap();
        assert_eq!(turn(&mut lp, 1000), 2);
        assert_eq!(names(&log), ["c"]);
        assert_eq!(lp.len(), 2, "a failing handler keeps its registration");
    }

    pub fn handler_panic_leaves_the_loop_refusing_to_run(backend: Backend) {
        let mut lp = new_loop(backend);
        let (a, mut b) = UnixStream::pair().unwrap();
        let (c, mut d) = UnixStream::pair().unwrap();
        lp.add(a, POLL_IN, |_: &mut Ctx, _: &mut UnixStream, _, _| -> io::Result<()> {
            panic!("handler panics on purpose")
        })
        .unwrap();
        lp.add(c, POLL_IN, |_: &mut Ctx, _: &mut UnixStream, _, _| -> io::Result<()> {
            panic!("handler panics on purpose")
        })
        .unwrap();
        // Two ready at once: the panic leaves in the middle of a batch.
        b.write_all(b"x").unwrap();
        d.write_all(b"x").unwrap();
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| turn(&mut lp, 1000)));
        assert!(unwound.is_err(), "the panic is not caught by the loop");
        let err = lp.run_once(Some(Duration::ZERO), &mut ()).unwrap_err();
        assert!(err.to_string().contains("panicked"), "{err}");
    }

    pub fn handler_replaces_its_own_handler(backend: Backend) {
        let mut lp = new_loop(backend);
        let log: Log = Default::default();
        let (a, mut b) = UnixStream::pair().unwrap();
        let log2 = Rc::clone(&log);
        lp.add(a, POLL_IN, move |cx: &mut Ctx, _: &mut UnixStream, me, events| {
            log2.borrow_mut().push(("first", events));
            cx.lp
                .set_handler::<UnixStream, _>(me, POLL_OUT, recorder(&log2, "second"))
        })
        .unwrap();
        b.write_all(b"x").unwrap();
        turn(&mut lp, 1000);
        turn(&mut lp, 1000);
        assert_eq!(*log.borrow(), [("first", POLL_IN), ("second", POLL_OUT)]);
    }

    pub fn take_returns_the_source_open(backend: Backend) {
        let mut lp = new_loop(backend);
        let (a, mut b) = UnixStream::pair().unwrap();
        let token = lp
            .add(a, POLL_IN, |_: &mut Ctx, _: &mut UnixStream, _, _| Ok(()))
            .unwrap();
        assert!(lp.take::<TcpStream>(token).is_err(), "wrong type refused");
        let mut a: UnixStream = lp.take(token).unwrap();
        assert!(lp.is_empty());
        b.write_all(b"still open").unwrap();
        let mut buf = [0u8; 10];
        a.read_exact(&mut buf).unwrap();
        assert_eq!(lp.remove(token).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    pub fn run_once_inside_a_handler_is_refused(backend: Backend) {
        let mut lp = new_loop(backend);
        let (a, mut b) = UnixStream::pair().unwrap();
        let refused = Rc::new(RefCell::new(false));
        let r = Rc::clone(&refused);
        lp.add(a, POLL_IN, move |cx: &mut Ctx, _: &mut UnixStream, token, _| {
            *r.borrow_mut() = cx.lp.run_once(Some(Duration::ZERO), &mut ()).is_err();
            cx.lp.remove(token)
        })
        .unwrap();
        b.write_all(b"x").unwrap();
        turn(&mut lp, 1000);
        assert!(*refused.borrow());
    }

    pub fn timers_fire_in_order_and_never_early(backend: Backend) {
        let mut lp = new_loop(backend);
        let fired: Rc<RefCell<Vec<(u64, Duration)>>> = Default::default();
        let start = Instant::now();
        for ms in [30u64, 10, 20, 1] {
            let fired = Rc::clone(&fired);
            lp.add_timer(Duration::from_millis(ms), move |_| {
                fired.borrow_mut().push((ms, start.elapsed()))
            });
        }
        let cancelled = lp.add_timer(Duration::from_millis(15), |_| panic!("a cancelled timer fired"));
        assert!(lp.cancel_timer(cancelled));
        while fired.borrow().len() < 4 {
            assert!(start.elapsed() < Duration::from_secs(5), "timers did not fire");
            lp.run_once(None, &mut ()).unwrap();
        }
        let fired = fired.borrow();
        assert_eq!(fired.iter().map(|f| f.0).collect::<Vec<_>>(), [1, 10, 20, 30]);
        for &(ms, at) in fired.iter() {
            assert!(
                at >= Duration::from_millis(ms),
                "timer of {ms} ms fired early, at {at:?}"
            );
        }
        assert_eq!(lp.timer_count(), 0);
    }

    pub fn repeating_timer_repeats_until_cancelled(backend: Backend) {
        let mut lp = new_loop(backend);
        let count = Rc::new(RefCell::new(0));
        let c = Rc::clone(&count);
        let start = Instant::now();
        lp.add_repeating_timer(Duration::from_millis(5), move |cx| {
            *c.borrow_mut() += 1;
            if *c.borrow() == 3 {
                cx.lp.stop();
            }
        });
        lp.run(&mut ()).unwrap();
        assert_eq!(*count.borrow(), 3);
        assert!(start.elapsed() >= Duration::from_millis(15));
        assert_eq!(lp.timer_count(), 1, "still armed until cancelled");
    }

    pub fn periodic_callbacks_run_every_precision(backend: Backend) {
        let mut lp: EventLoop = Builder::new()
            .backend(backend)
            .timeout_precision(Duration::from_millis(20))
            .build()
            .unwrap();
        let runs = Rc::new(RefCell::new(Vec::new()));
        let r = Rc::clone(&runs);
        let start = Instant::now();
        let id = lp.add_periodic(move |_| r.borrow_mut().push(start.elapsed()));
        while runs.borrow().len() < 3 {
            assert!(start.elapsed() < Duration::from_secs(5));
            lp.run_once(None, &mut ()).unwrap();
        }
        let runs = runs.borrow().clone();
        for (i, at) in runs.iter().enumerate() {
            assert!(
                *at >= Duration::from_millis(20 * (i as u64 + 1)),
                "run {i} early at {at:?}"
            );
        }
        assert!(lp.remove_periodic(id));
        assert!(!lp.remove_periodic(id));
    }

    /// The original runs the periodic sweep as soon as possible after a poll
    /// interrupted by a signal (EINTR), not only every TIMEOUT_PRECISION.
    pub fn periodic_runs_right_after_eintr(backend: Backend) {
        let flag = std::sync::Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGURG, std::sync::Arc::clone(&flag)).unwrap();
        let mut lp: EventLoop = Builder::new()
            .backend(backend)
            .timeout_precision(Duration::from_secs(3600))
            .build()
            .unwrap();
        let ran = Rc::new(RefCell::new(false));
        let r = Rc::clone(&ran);
        lp.add_periodic(move |cx| {
            *r.borrow_mut() = true;
            cx.lp.stop();
        });
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() } as usize;
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            // SAFETY: `me` is the test thread, alive until it joins this thread.
            unsafe { libc::pthread_kill(me as libc::pthread_t, libc::SIGURG) };
        });
        let start = Instant::now();
        lp.run_once(Some(Duration::from_secs(5)), &mut ()).unwrap();
        killer.join().unwrap();
        assert!(flag.load(Ordering::SeqCst), "the signal was delivered");
        assert!(*ran.borrow(), "the periodic callback ran right after EINTR");
        assert!(start.elapsed() < Duration::from_secs(2), "the poll was not interrupted");
    }

    pub fn cross_thread_stop_wakes_a_blocked_poll(backend: Backend) {
        let mut lp: EventLoop = new_loop(backend);
        let handle = lp.handle().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            tx.send(Instant::now()).unwrap();
            handle.stop();
        });
        lp.run(&mut ()).unwrap(); // no timers, no periodics: blocks with no timeout
        let returned = Instant::now();
        let stopped_at = rx.recv().unwrap();
        stopper.join().unwrap();
        let latency = returned - stopped_at;
        assert!(latency < Duration::from_millis(100), "stop took {latency:?}");
    }

    pub fn signals_arrive_as_loop_events(backend: Backend) {
        let mut lp: EventLoop<Vec<i32>> = new_loop(backend);
        let token = lp
            .add_signals(&[libc::SIGUSR2, libc::SIGWINCH], |cx, signal| {
                cx.data.push(signal);
                if cx.data.len() == 2 {
                    cx.lp.stop();
                }
            })
            .unwrap();
        // SAFETY: raise has no preconditions; the signals are handled by the loop's source.
        unsafe {
            libc::raise(libc::SIGUSR2);
            libc::raise(libc::SIGWINCH);
        }
        let mut got = Vec::new();
        lp.run(&mut got).unwrap();
        got.sort();
        let mut want = vec![libc::SIGUSR2, libc::SIGWINCH];
        want.sort();
        assert_eq!(got, want);
        lp.remove(token).unwrap();
    }

    /// One relay connection owns two sockets: a handler reaches the other through
    /// `source_mut`, the shape the proxy is built on.
    pub fn handler_reaches_its_peer_socket(backend: Backend) {
        let mut lp: EventLoop<Option<Token>> = new_loop(backend);
        let (a, mut a_peer) = UnixStream::pair().unwrap();
        let (b, mut b_peer) = UnixStream::pair().unwrap();
        let mut peer_token = Some(
            lp.add(b, POLL_NULL, |_: &mut Ctx<Option<Token>>, _: &mut UnixStream, _, _| {
                Ok(())
            })
            .unwrap(),
        );
        lp.add(a, POLL_IN, |cx: &mut Ctx<Option<Token>>, a: &mut UnixStream, _, _| {
            let mut buf = [0u8; 16];
            let n = a.read(&mut buf)?;
            let peer = cx.data.expect("peer registered");
            let b = cx.lp.source_mut::<UnixStream>(peer).expect("peer socket");
            b.write_all(&buf[..n])?;
            cx.lp.stop();
            Ok(())
        })
        .unwrap();
        a_peer.write_all(b"relay").unwrap();
        lp.run(&mut peer_token).unwrap();
        let mut buf = [0u8; 5];
        b_peer.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"relay");
    }
}

/// Generates one test module per backend, each running every case.
/// kqueue's module exists only where kqueue does (macOS and the BSDs, which this
/// repository's Linux CI never is: see `.github/workflows/kqueue.yml`).
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        conformance!(@backend #[cfg(all())] epoll, Epoll, $($case),*);
        conformance!(@backend #[cfg(kqueue)] kqueue, Kqueue, $($case),*);
        conformance!(@backend #[cfg(all())] poll, Poll, $($case),*);
        conformance!(@backend #[cfg(all())] select, Select, $($case),*);
    };
    (@backend #[$on:meta] $module:ident, $backend:ident, $($case:ident),*) => {
        #[$on]
        mod $module {
            $(
                #[test]
                fn $case() {
                    super::run_case(stringify!($case), evloop::Backend::$backend, super::cases::$case)
                }
            )*
        }
    };
}

conformance!(
    readable_when_data_arrives,
    writable_when_buffer_has_room,
    read_and_write_merge_into_one_event,
    listener_is_readable_on_pending_accept,
    nonblocking_connect_completes_with_pollout,
    refused_connect_reports_the_error,
    hangup_is_reported_when_peer_closes,
    reset_is_reported_as_error,
    undrained_socket_is_reported_again,
    modify_changes_what_is_reported,
    handler_removes_itself,
    handler_removes_another_ready_in_same_batch,
    fd_reused_within_batch_gets_no_stale_event,
    thousands_of_registered_fds,
    select_refuses_fd_at_or_above_fd_setsize,
    poller_errors_are_the_same_everywhere,
    fd_closed_behind_loops_back_is_dropped,
    handler_error_is_logged_and_loop_goes_on,
    handler_panic_leaves_the_loop_refusing_to_run,
    handler_replaces_its_own_handler,
    take_returns_the_source_open,
    run_once_inside_a_handler_is_refused,
    timers_fire_in_order_and_never_early,
    repeating_timer_repeats_until_cancelled,
    periodic_callbacks_run_every_precision,
    periodic_runs_right_after_eintr,
    cross_thread_stop_wakes_a_blocked_poll,
    signals_arrive_as_loop_events,
    handler_reaches_its_peer_socket,
    same_fd_added_twice_is_already_exists_and_leaks_nothing,
    fd_closed_with_a_dup_open_does_not_spin_after_remove,
    fd_closed_with_a_dup_open_does_not_spin_on_handler_errors,
    handler_closing_its_fd_does_not_close_the_newcomer_on_that_number,
    remove_does_not_close_a_newcomer_on_a_closed_fds_number,
    stop_before_run_returns_at_once,
    regular_file_refusal_says_which_backend_can,
    foreign_fd_gets_its_readiness,
    remove_leaves_a_foreign_fd_open,
    foreign_fd_closed_by_its_owner_then_removed_leaks_nothing,
    foreign_fd_number_reused_before_remove_leaves_the_newcomer_alone,
    foreign_fd_number_taken_by_an_owned_source_drops_the_foreign_registration,
);
