//! Model-based randomized test of the loop, on every backend this machine has.
//!
//! proptest generates sequences of operations (add, modify, replace the handler,
//! remove, take, close an fd behind the loop's back, reuse its number, make a
//! socket readable, drain it, run one iteration, set and cancel timers), with
//! handlers and timer callbacks that themselves change the loop while it
//! dispatches (remove themselves or another registration, add one, modify, replace,
//! take, write, set or cancel timers). A small reference model says what the loop
//! must do, and every step is checked against it:
//!
//! - **no stale event**: a handler runs only for a registration the model has live,
//!   only in its current incarnation (not after `set_handler` replaced it), never
//!   in the iteration that added it, at most once per iteration, and only with
//!   events its mode asked for (`POLL_IN` only with data to read);
//! - **no lost level-triggered readiness**: a registration that was readable (data
//!   waiting, mode with `POLL_IN`) or writable (mode with `POLL_OUT`) when an
//!   iteration began is dispatched in it, unless a handler changed it first;
//! - **no lost or corrupted data**: every drain returns exactly the bytes written
//!   to the peer, in order;
//! - **no leak**: `len()` is the model's count of registrations after every step,
//!   including the ones closed behind the loop's back, which the loop drops by its
//!   backend's rules (poll: at the next poll, with one `POLL_NVAL`; select: the same
//!   when the fd is in a set, and possibly when it is in none; epoll: never by
//!   itself, only when the number is registered again);
//! - **timers** fire exactly once unless cancelled, never early, and in the first
//!   iteration that starts after their deadline; `cancel_timer` says truly whether
//!   the timer was pending; `timer_count()` is the model's count;
//! - **no panic** anywhere in the loop.
//!
//! Each backend runs 256 cases of up to 64 operations (proptest's default; CI runs
//! them). To run more: `PROPTEST_CASES=100000 cargo test -p evloop --test model --release`.
//! A failure prints the shrunk operation list; nothing is written to disk.
//!
//! Descriptors: each case's sockets use low numbers except the registrations the
//! test closes behind the loop's back, which are `dup`'d into a range of numbers of
//! their own per backend (`fd_base`), below select's `FD_SETSIZE`, so that the three
//! backends, running in parallel threads of this process, never reuse each other's
//! closed numbers (a reuse nobody registers would be watched by poll and select in
//! place of the closed file: a misuse the loop cannot see). No test here holds more
//! than a few dozen descriptors, so none needs the fd table to itself.

#![allow(unsafe_code)] // a test: it calls libc directly (fds, signals, limits)

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use evloop::{Backend, Ctx, EventLoop, Events, POLL_IN, POLL_NULL, POLL_NVAL, POLL_OUT, TimerId, Token};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// At most this many registrations at once (handlers that add keep adding).
const MAX_REGS: usize = 24;
/// At most this many open descriptors in a backend's high range at once.
const MAX_HIGH: usize = 16;
/// At most this many timers per case.
const MAX_TIMERS: usize = 32;
/// The backends' ranges of high descriptor numbers: `FD_BASE + RANGE * i` for
/// the `i`-th backend of `Backend::ALL`, `RANGE` wide (all below `FD_SETSIZE`).
const FD_BASE: RawFd = 500;
const RANGE: RawFd = 100;

/// What a handler (or a timer callback) does when it runs. Indices (`usize`) pick
/// among the model's live registrations or timers, modulo their count.
#[derive(Clone, Copy, Debug)]
enum Action {
    Nothing,
    Drain,
    RemoveSelf,
    RemoveOther(usize),
    AddNew(Events),
    ModifySelf(Events),
    ModifyOther(usize, Events),
    ReplaceSelf(Events),
    ReplaceOther(usize, Events),
    WriteOther(usize, u8),
    TakeOther(usize),
    SetTimer(u8),
    CancelTimer(usize),
}

/// One step of a case, run from outside the loop.
#[derive(Clone, Debug)]
enum Op {
    /// A socket pair; the loop owns (and on remove closes) one end.
    AddOwned(Events, Vec<Action>),
    /// A socket pair whose end is dup'd to a high number and registered as a
    /// `BorrowedFd<'static>`: the test owns that number, and may close it behind
    /// the loop's back.
    AddBorrowed(Events, Vec<Action>),
    Modify(usize, Events),
    SetHandler(usize, Events),
    Remove(usize),
    Take(usize),
    /// Close a borrowed registration's number without telling the loop.
    CloseBehind(usize),
    /// Open a new socket on a number closed behind the loop's back, and register it.
    Reopen(usize),
    /// Write to a registration's peer: its socket becomes readable.
    Write(usize, u8),
    /// Read everything waiting on a registration's socket, from outside the loop.
    Drain(usize),
    /// `run_once(Some(ms))`.
    Turn(u8),
    SetTimer {
        delay_ms: u8,
        repeat: bool,
        action: Action,
    },
    CancelTimer(usize),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Owned,
    Borrowed,
}

/// The model of one registration.
struct Reg {
    kind: Kind,
    fd: RawFd,
    /// The other end of the pair (none once closed behind the loop's back).
    peer: Option<UnixStream>,
    mode: Events,
    /// Bytes written to the peer and not yet read: the next byte to write, the
    /// next byte expected, and how many are waiting.
    next_write: u8,
    next_read: u8,
    pending: usize,
    /// Which handler is current (`set_handler` installs a new one).
    handler: u64,
    script: Vec<Action>,
    calls: usize,
    /// Its fd was closed behind the loop's back.
    zombie: bool,
}

struct TimerModel {
    id: TimerId,
    set_at: Instant,
    delay: Duration,
    repeat: bool,
    action: Action,
    fired: u32,
    firing: bool,
    cancelled: bool,
}

impl TimerModel {
    /// Whether the loop must still count (and be able to cancel) it.
    fn pending(&self) -> bool {
        !self.cancelled && (self.repeat || self.fired == 0)
    }
}

/// The reference model; also the loop's data, so that handlers reach it.
struct Model {
    backend: Backend,
    fd_base: RawFd,
    regs: BTreeMap<Token, Reg>,
    timers: Vec<TimerModel>,
    next_handler: u64,
    violations: Vec<String>,
    /// No more actions: the case is winding down.
    finishing: bool,
    in_turn: bool,
    /// Per iteration: modes and pending bytes when it began; who was dispatched;
    /// who was added, or changed by a handler (modify, replace, remove, take).
    snapshot: BTreeMap<Token, (Events, usize)>,
    seen: BTreeSet<Token>,
    added: BTreeSet<Token>,
    disturbed: BTreeSet<Token>,
    /// Borrowed numbers removed while the loop was running, closed after it.
    to_close: Vec<RawFd>,
}

impl Model {
    fn new(backend: Backend) -> Model {
        let index = Backend::ALL
            .iter()
            .position(|&b| b == backend)
            .expect("a known backend");
        Model {
            backend,
            fd_base: FD_BASE + RANGE * index as RawFd,
            regs: BTreeMap::new(),
            timers: Vec::new(),
            next_handler: 0,
            violations: Vec::new(),
            finishing: false,
            in_turn: false,
            snapshot: BTreeMap::new(),
            seen: BTreeSet::new(),
            added: BTreeSet::new(),
            disturbed: BTreeSet::new(),
            to_close: Vec::new(),
        }
    }

    fn fail(&mut self, what: String) {
        self.violations.push(format!("{}: {what}", self.backend));
    }

    fn new_handler_id(&mut self) -> u64 {
        self.next_handler += 1;
        self.next_handler
    }

    /// The `which`-th registration (modulo their count) that passes `filter`, other than `not`.
    fn pick(&self, which: usize, not: Option<Token>, filter: impl Fn(&Reg) -> bool) -> Option<Token> {
        let candidates: Vec<Token> = self
            .regs
            .iter()
            .filter(|(t, r)| Some(**t) != not && filter(r))
            .map(|(t, _)| *t)
            .collect();
        (!candidates.is_empty()).then(|| candidates[which % candidates.len()])
    }

    fn high_in_use(&self) -> usize {
        self.regs.values().filter(|r| r.fd >= self.fd_base && !r.zombie).count() + self.to_close.len()
    }

    /// Check what a drain read against what was written.
    fn check_read(&mut self, token: Token, result: io::Result<Vec<u8>>) {
        let data = match result {
            Ok(data) => data,
            Err(e) => return self.fail(format!("reading {token}: {e}")),
        };
        let Some(reg) = self.regs.get_mut(&token) else {
            return self.fail(format!("read from {token}, which the model does not have"));
        };
        let expected: Vec<u8> = (0..reg.pending).map(|i| reg.next_read.wrapping_add(i as u8)).collect();
        reg.next_read = reg.next_read.wrapping_add(data.len() as u8);
        reg.pending = 0;
        if data != expected {
            let (got, want) = (data.len(), expected.len());
            self.fail(format!(
                "{token}: read {got} bytes, expected the {want} written (or wrong content)"
            ));
        }
    }
}

/// A source the test can drain: the loop-owned socket, or a borrowed number.
trait Source: AsFd + 'static {
    fn kind() -> Kind;
    fn read_all(&mut self) -> io::Result<Vec<u8>>;
}

fn read_all_from(mut sock: &UnixStream) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..256 {
        match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(data)
}

impl Source for UnixStream {
    fn kind() -> Kind {
        Kind::Owned
    }

    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        read_all_from(self)
    }
}

impl Source for BorrowedFd<'static> {
    fn kind() -> Kind {
        Kind::Borrowed
    }

    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        // A short-lived duplicate (a low number) shares the socket; dropping it
        // closes the duplicate only.
        read_all_from(&UnixStream::from(self.try_clone_to_owned()?))
    }
}

/// A duplicate of `fd` numbered at least `min` (the lowest free such number).
fn dup_at_least(fd: RawFd, min: RawFd) -> RawFd {
    // SAFETY: F_DUPFD_CLOEXEC only creates a new descriptor; `fd` is open.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    assert!(new >= min, "F_DUPFD_CLOEXEC: {}", io::Error::last_os_error());
    new
}

fn close_fd(fd: RawFd) {
    // SAFETY: `fd` is a number this test dup'd and owns; every caller closes it
    // once, after the loop stopped using it (or, for CloseBehind, while the loop
    // still has it registered: the misuse under test).
    let rc = unsafe { libc::close(fd) };
    assert_eq!(rc, 0, "close({fd}): {}", io::Error::last_os_error());
}

fn nonblocking_pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).expect("O_NONBLOCK");
    b.set_nonblocking(true).expect("O_NONBLOCK");
    (a, b)
}

type Lp = EventLoop<Model>;

fn handler<S: Source>(id: u64) -> impl FnMut(&mut Ctx<'_, Model>, &mut S, Token, Events) -> io::Result<()> + 'static {
    move |cx, source, me, events| {
        on_event(cx, source, me, events, id);
        Ok(())
    }
}

fn on_event<S: Source>(cx: &mut Ctx<'_, Model>, source: &mut S, me: Token, events: Events, id: u64) {
    let m = &mut *cx.data;
    let backend = m.backend;
    let mut errors = Vec::new();
    if !m.in_turn {
        errors.push(format!("{me} dispatched outside run_once"));
    }
    if m.added.contains(&me) {
        errors.push(format!("{me} got {events} in the iteration that registered it"));
    }
    if !m.seen.insert(me) {
        errors.push(format!("{me} dispatched twice in one iteration"));
    }
    let snapshot = m.snapshot.get(&me).copied();
    let Some(reg) = m.regs.get_mut(&me) else {
        errors.push(format!("{events} delivered to {me}, which is not registered any more"));
        m.violations
            .extend(errors.into_iter().map(|e| format!("{backend}: {e}")));
        return;
    };
    if reg.handler != id {
        errors.push(format!(
            "{me}: a replaced handler ran (handler {id}, current {})",
            reg.handler
        ));
    }
    if reg.zombie {
        // Only poll and select see a closed fd, and report it alone; the loop then
        // drops the registration, so the model does too.
        if backend == Backend::Epoll || events != POLL_NVAL {
            errors.push(format!("{me}: closed behind the loop's back, got {events}"));
        }
        m.regs.remove(&me);
        m.violations
            .extend(errors.into_iter().map(|e| format!("{backend}: {e}")));
        return;
    }
    let (mode_then, pending_then) = snapshot.unwrap_or((reg.mode, reg.pending));
    let allowed = (mode_then | reg.mode) & (POLL_IN | POLL_OUT);
    if events.is_empty() || !allowed.contains(events) {
        errors.push(format!("{me}: got {events}, mode was {mode_then} and is {}", reg.mode));
    }
    if events.contains(POLL_IN) && pending_then == 0 && reg.pending == 0 {
        errors.push(format!("{me}: reported readable with nothing to read"));
    }
    let action = match reg.script.len() {
        0 => Action::Nothing,
        n => reg.script[reg.calls % n],
    };
    reg.calls += 1;
    m.violations
        .extend(errors.into_iter().map(|e| format!("{backend}: {e}")));
    perform(cx, Some((me, source)), action);
}

/// Carry out a handler's (or, with no `me`, a timer's) action.
fn perform<S: Source>(cx: &mut Ctx<'_, Model>, me: Option<(Token, &mut S)>, action: Action) {
    let (lp, m) = (&mut *cx.lp, &mut *cx.data);
    if m.finishing {
        return;
    }
    let me_token = me.as_ref().map(|(t, _)| *t);
    match action {
        Action::Nothing => {}
        Action::Drain => {
            if let Some((t, source)) = me {
                let result = source.read_all();
                m.check_read(t, result);
            }
        }
        Action::RemoveSelf => {
            if let Some(t) = me_token {
                remove(lp, m, t);
            }
        }
        Action::RemoveOther(which) => {
            if let Some(t) = m.pick(which, me_token, |_| true) {
                remove(lp, m, t);
            }
        }
        Action::AddNew(mode) => {
            let script = me_token
                .and_then(|t| m.regs.get(&t))
                .map(|r| {
                    let mut s = r.script.clone();
                    if !s.is_empty() {
                        s.rotate_left(1);
                    }
                    s
                })
                .unwrap_or_default();
            if let Some(t) = add_owned(lp, m, mode, script) {
                m.added.insert(t);
            }
        }
        Action::ModifySelf(mode) => {
            if let Some(t) = me_token {
                modify(lp, m, t, mode);
            }
        }
        Action::ModifyOther(which, mode) => {
            if let Some(t) = m.pick(which, me_token, |_| true) {
                modify(lp, m, t, mode);
            }
        }
        Action::ReplaceSelf(mode) => {
            if let Some(t) = me_token {
                let id = m.new_handler_id();
                match lp.set_handler::<S, _>(t, mode, handler::<S>(id)) {
                    Ok(()) => replaced(m, t, id, mode),
                    Err(e) => m.fail(format!("{t}: set_handler of a running handler failed: {e}")),
                }
            }
        }
        Action::ReplaceOther(which, mode) => {
            if let Some(t) = m.pick(which, me_token, |_| true) {
                set_handler(lp, m, t, mode);
            }
        }
        Action::WriteOther(which, len) => {
            if let Some(t) = m.pick(which, me_token, |r| !r.zombie) {
                write(m, t, len);
            }
        }
        Action::TakeOther(which) => {
            if let Some(t) = m.pick(which, me_token, |_| true) {
                take(lp, m, t);
            }
        }
        Action::SetTimer(ms) => add_timer(lp, m, u64::from(ms), false, Action::Nothing),
        Action::CancelTimer(which) => cancel_timer(lp, m, which),
    }
}

fn add_owned(lp: &mut Lp, m: &mut Model, mode: Events, script: Vec<Action>) -> Option<Token> {
    if m.regs.len() >= MAX_REGS {
        return None;
    }
    let (mine, peer) = nonblocking_pair();
    let fd = mine.as_raw_fd();
    register(lp, m, mine, fd, peer, mode, script)
}

fn add_borrowed(lp: &mut Lp, m: &mut Model, mode: Events, script: Vec<Action>) -> Option<Token> {
    if m.regs.len() >= MAX_REGS || m.high_in_use() >= MAX_HIGH {
        return None;
    }
    let (mine, peer) = nonblocking_pair();
    let fd = dup_at_least(mine.as_raw_fd(), m.fd_base);
    assert!(fd < m.fd_base + RANGE, "{}: the high range is full", m.backend);
    drop(mine);
    // SAFETY: `fd` stays open until the model closes it (remove, take, CloseBehind
    // or the end of the case); after a CloseBehind the loop holds a dangling
    // number, which is exactly the misuse under test.
    let borrowed: BorrowedFd<'static> = unsafe { BorrowedFd::borrow_raw(fd) };
    let token = register(lp, m, borrowed, fd, peer, mode, script);
    if token.is_none() {
        close_fd(fd);
    }
    token
}

/// Open a socket on the number of a registration closed behind the loop's back,
/// and register it (owned): the loop must drop the stale registration.
fn reopen(lp: &mut Lp, m: &mut Model, zombie: Token) {
    let fd = m.regs[&zombie].fd;
    let (mine, peer) = nonblocking_pair();
    let new = dup_at_least(mine.as_raw_fd(), fd);
    assert_eq!(new, fd, "{}: the closed number {fd} was not free", m.backend);
    drop(mine);
    // SAFETY: `new` was just created by dup_at_least and nothing else owns it.
    let sock = UnixStream::from(unsafe { OwnedFd::from_raw_fd(new) });
    register(lp, m, sock, fd, peer, POLL_IN, vec![Action::Drain]);
}

fn register<S: Source>(
    lp: &mut Lp,
    m: &mut Model,
    source: S,
    fd: RawFd,
    peer: UnixStream,
    mode: Events,
    script: Vec<Action>,
) -> Option<Token> {
    let id = m.new_handler_id();
    let token = match lp.add(source, mode, handler::<S>(id)) {
        Ok(t) => t,
        Err(e) => {
            m.fail(format!("add fd {fd} failed: {e}"));
            return None;
        }
    };
    // A registration closed behind the loop's back with the same number is stale:
    // the loop must have dropped it.
    let stale: Vec<Token> = m
        .regs
        .iter()
        .filter(|(_, r)| r.zombie && r.fd == fd)
        .map(|(t, _)| *t)
        .collect();
    for old in stale {
        if lp.contains(old) {
            m.fail(format!(
                "fd {fd} registered again as {token}, but the stale {old} is still there"
            ));
        }
        m.regs.remove(&old);
        m.disturbed.insert(old);
    }
    if m.regs.contains_key(&token) {
        m.fail(format!("add returned {token}, which is still live"));
    }
    m.regs.insert(
        token,
        Reg {
            kind: S::kind(),
            fd,
            peer: Some(peer),
            mode,
            next_write: 0,
            next_read: 0,
            pending: 0,
            handler: id,
            script,
            calls: 0,
            zombie: false,
        },
    );
    Some(token)
}

fn remove(lp: &mut Lp, m: &mut Model, t: Token) {
    if let Err(e) = lp.remove(t) {
        m.fail(format!("remove {t}: {e}"));
    }
    m.disturbed.insert(t);
    if let Some(reg) = m.regs.remove(&t)
        && reg.kind == Kind::Borrowed
        && !reg.zombie
    {
        forget_number(m, reg.fd);
    }
}

/// Close a borrowed number the loop no longer has (after the iteration, if the
/// loop is running: its handler may still hold the `BorrowedFd`).
fn forget_number(m: &mut Model, fd: RawFd) {
    if m.in_turn {
        m.to_close.push(fd);
    } else {
        close_fd(fd);
    }
}

fn modify(lp: &mut Lp, m: &mut Model, t: Token, mode: Events) {
    let result = lp.modify(t, mode);
    let reg = m.regs.get_mut(&t).expect("picked from the model");
    let zombie = reg.zombie;
    // The loop records the new mode even when the poller refuses it (epoll, for a
    // closed fd); for a live registration it must not refuse.
    reg.mode = mode;
    m.disturbed.insert(t);
    if let Err(e) = result
        && !zombie
    {
        m.fail(format!("modify {t} to {mode}: {e}"));
    }
}

fn replaced(m: &mut Model, t: Token, id: u64, mode: Events) {
    let reg = m.regs.get_mut(&t).expect("picked from the model");
    reg.handler = id;
    reg.mode = mode;
    m.disturbed.insert(t);
}

fn set_handler(lp: &mut Lp, m: &mut Model, t: Token, mode: Events) {
    let (kind, zombie) = {
        let reg = &m.regs[&t];
        (reg.kind, reg.zombie)
    };
    let id = m.new_handler_id();
    let result = match kind {
        Kind::Owned => lp.set_handler::<UnixStream, _>(t, mode, handler::<UnixStream>(id)),
        Kind::Borrowed => lp.set_handler::<BorrowedFd<'static>, _>(t, mode, handler::<BorrowedFd<'static>>(id)),
    };
    // The handler is replaced before the poller is told the mode, so even a zombie
    // whose modify fails (epoll) has the new one.
    replaced(m, t, id, mode);
    if let Err(e) = result
        && !zombie
    {
        m.fail(format!("set_handler {t}: {e}"));
    }
    // The wrong source type is refused, and changes nothing.
    if lp
        .set_handler::<TcpStream, _>(t, mode, |_: &mut Ctx<'_, Model>, _: &mut TcpStream, _, _| Ok(()))
        .is_ok()
    {
        m.fail(format!("set_handler {t} accepted the wrong source type"));
    }
}

fn take(lp: &mut Lp, m: &mut Model, t: Token) {
    if lp.take::<TcpStream>(t).is_ok() || !lp.contains(t) {
        m.fail(format!("take {t} as the wrong type succeeded or unregistered it"));
    }
    let (kind, zombie) = (m.regs[&t].kind, m.regs[&t].zombie);
    m.disturbed.insert(t);
    if zombie {
        // Its fd was closed behind the loop's back: nothing to hand back, an error
        // instead (it used to panic: tests/regressions.rs), and the registration is gone.
        match lp.take::<BorrowedFd<'static>>(t) {
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {}
            Err(e) => m.fail(format!("take of {t}, closed behind the loop's back: {e}")),
            Ok(_) => m.fail(format!(
                "take of {t}, closed behind the loop's back, handed back a dangling fd"
            )),
        }
        if lp.contains(t) {
            m.fail(format!(
                "take of {t}, closed behind the loop's back, left it registered"
            ));
        }
        m.regs.remove(&t);
        return;
    }
    match kind {
        Kind::Owned => match lp.take::<UnixStream>(t) {
            Ok(sock) => {
                let data = read_all_from(&sock);
                m.check_read(t, data);
                m.regs.remove(&t);
            }
            Err(e) => m.fail(format!("take {t}: {e}")),
        },
        Kind::Borrowed => match lp.take::<BorrowedFd<'static>>(t) {
            Ok(mut borrowed) => {
                let data = borrowed.read_all();
                m.check_read(t, data);
                let reg = m.regs.remove(&t).expect("picked from the model");
                assert_eq!(borrowed.as_raw_fd(), reg.fd);
                forget_number(m, reg.fd);
            }
            Err(e) => m.fail(format!("take {t}: {e}")),
        },
    }
}

fn write(m: &mut Model, t: Token, len: u8) {
    let reg = m.regs.get_mut(&t).expect("picked from the model");
    let Some(peer) = &mut reg.peer else { return };
    let bytes: Vec<u8> = (0..len).map(|i| reg.next_write.wrapping_add(i)).collect();
    match peer.write(&bytes) {
        Ok(n) => {
            reg.next_write = reg.next_write.wrapping_add(n as u8);
            reg.pending += n;
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => m.fail(format!("write to the peer of {t}: {e}")),
    }
}

fn add_timer(lp: &mut Lp, m: &mut Model, delay_ms: u64, repeat: bool, action: Action) {
    if m.timers.len() >= MAX_TIMERS {
        return;
    }
    let k = m.timers.len();
    let delay = Duration::from_millis(delay_ms);
    let set_at = Instant::now();
    let id = if repeat {
        lp.add_repeating_timer(delay, timer_callback(k))
    } else {
        lp.add_timer(delay, timer_callback(k))
    };
    m.timers.push(TimerModel {
        id,
        set_at,
        delay,
        repeat,
        action,
        fired: 0,
        firing: false,
        cancelled: false,
    });
}

fn timer_callback(k: usize) -> impl FnMut(&mut Ctx<'_, Model>) + 'static {
    move |cx| {
        let now = Instant::now();
        let m = &mut *cx.data;
        let mut errors = Vec::new();
        let t = &mut m.timers[k];
        if t.cancelled {
            errors.push(format!("timer {k} fired after it was cancelled"));
        }
        if !t.repeat && t.fired > 0 {
            errors.push(format!("one-shot timer {k} fired twice"));
        }
        t.fired += 1;
        let earliest = t.set_at + t.delay * t.fired;
        if now < earliest {
            errors.push(format!(
                "timer {k} fired {:?} early (firing {})",
                earliest - now,
                t.fired
            ));
        }
        t.firing = true;
        let action = t.action;
        if !m.in_turn {
            errors.push(format!("timer {k} fired outside run_once"));
        }
        for e in errors {
            m.fail(e);
        }
        perform::<UnixStream>(cx, None, action);
        cx.data.timers[k].firing = false;
    }
}

fn cancel_timer(lp: &mut Lp, m: &mut Model, which: usize) {
    if m.timers.is_empty() {
        return;
    }
    let k = which % m.timers.len();
    let t = &m.timers[k];
    // A timer that is firing right now counts as pending: cancelling it stops its repeats.
    let expected = !t.cancelled && (t.repeat || t.fired == 0 || t.firing);
    let got = lp.cancel_timer(t.id);
    if got {
        m.timers[k].cancelled = true;
    }
    if got != expected {
        m.fail(format!("cancel_timer({k}) returned {got}, expected {expected}"));
    }
}

/// One loop iteration, and the checks that need one.
fn turn(lp: &mut Lp, m: &mut Model, timeout_ms: u8) {
    m.snapshot = m.regs.iter().map(|(t, r)| (*t, (r.mode, r.pending))).collect();
    let must_dispatch: Vec<Token> = m
        .regs
        .iter()
        .filter(|(_, r)| !r.zombie && ((r.mode.contains(POLL_IN) && r.pending > 0) || r.mode.contains(POLL_OUT)))
        .map(|(t, _)| *t)
        .collect();
    let zombies: Vec<(Token, Events)> = m
        .regs
        .iter()
        .filter(|(_, r)| r.zombie)
        .map(|(t, r)| (*t, r.mode))
        .collect();
    let now = Instant::now();
    let due: Vec<(usize, u32)> = m
        .timers
        .iter()
        .enumerate()
        .filter(|(_, t)| t.pending() && lp.timer_deadline(t.id).is_some_and(|d| d <= now))
        .map(|(k, t)| (k, t.fired))
        .collect();
    m.seen.clear();
    m.added.clear();
    m.disturbed.clear();
    m.in_turn = true;
    let result = lp.run_once(Some(Duration::from_millis(timeout_ms.into())), m);
    m.in_turn = false;
    for fd in std::mem::take(&mut m.to_close) {
        close_fd(fd);
    }
    match result {
        Ok(n) if n != m.seen.len() => m.fail(format!("run_once says {n} dispatched, handlers saw {}", m.seen.len())),
        Ok(_) => {}
        Err(e) => m.fail(format!("run_once: {e}")),
    }
    for t in must_dispatch {
        if m.regs.contains_key(&t) && !m.disturbed.contains(&t) && !m.seen.contains(&t) {
            let (mode, pending) = m.snapshot[&t];
            m.fail(format!(
                "lost readiness: {t} (mode {mode}, {pending} bytes waiting) not dispatched"
            ));
        }
    }
    for (z, mode) in zombies {
        if m.disturbed.contains(&z) {
            continue; // removed, modified or replaced by a handler
        }
        if m.regs.contains_key(&z) {
            // Not reported: fine for epoll (never reports), and for select when the
            // fd is in no set (then select(2) itself never sees it).
            let must_report = match m.backend {
                Backend::Poll => true,
                Backend::Select => mode.intersects(POLL_IN | POLL_OUT),
                _ => false,
            };
            if must_report {
                m.fail(format!(
                    "{z} (mode {mode}) closed behind the loop's back, not reported POLL_NVAL"
                ));
            }
        } else if lp.contains(z) {
            m.fail(format!("{z} was reported POLL_NVAL but the loop kept it"));
        }
    }
    for (k, fired_before) in due {
        let t = &m.timers[k];
        if !t.cancelled && t.fired == fired_before {
            m.fail(format!("timer {k} was due before run_once and did not fire in it"));
        }
    }
}

/// What must hold between operations.
fn check_invariants(lp: &Lp, m: &mut Model) {
    if lp.len() != m.regs.len() {
        let (len, model) = (lp.len(), m.regs.len());
        m.fail(format!("len() is {len}, the model has {model} registrations"));
    }
    let mismatched: Vec<String> = m
        .regs
        .iter()
        .filter(|(t, r)| lp.registration(**t) != Some((r.fd, r.mode)))
        .map(|(t, r)| {
            format!(
                "{t}: loop has {:?}, model has fd {} mode {}",
                lp.registration(*t),
                r.fd,
                r.mode
            )
        })
        .collect();
    for e in mismatched {
        m.fail(e);
    }
    let pending = m.timers.iter().filter(|t| t.pending()).count();
    if lp.timer_count() != pending {
        let count = lp.timer_count();
        m.fail(format!("timer_count() is {count}, the model has {pending} pending"));
    }
}

fn apply(lp: &mut Lp, m: &mut Model, op: &Op) {
    match op {
        Op::AddOwned(mode, script) => {
            add_owned(lp, m, *mode, script.clone());
        }
        Op::AddBorrowed(mode, script) => {
            add_borrowed(lp, m, *mode, script.clone());
        }
        Op::Modify(which, mode) => {
            if let Some(t) = m.pick(*which, None, |_| true) {
                modify(lp, m, t, *mode);
            }
        }
        Op::SetHandler(which, mode) => {
            if let Some(t) = m.pick(*which, None, |_| true) {
                set_handler(lp, m, t, *mode);
            }
        }
        Op::Remove(which) => {
            if let Some(t) = m.pick(*which, None, |_| true) {
                remove(lp, m, t);
            }
        }
        Op::Take(which) => {
            if let Some(t) = m.pick(*which, None, |_| true) {
                take(lp, m, t);
            }
        }
        Op::CloseBehind(which) => {
            if let Some(t) = m.pick(*which, None, |r| r.kind == Kind::Borrowed && !r.zombie) {
                let reg = m.regs.get_mut(&t).expect("picked from the model");
                reg.zombie = true;
                reg.peer = None;
                reg.pending = 0;
                close_fd(reg.fd);
            }
        }
        Op::Reopen(which) => {
            if let Some(t) = m.pick(*which, None, |r| r.zombie) {
                reopen(lp, m, t);
            }
        }
        Op::Write(which, len) => {
            if let Some(t) = m.pick(*which, None, |r| !r.zombie) {
                write(m, t, *len);
            }
        }
        Op::Drain(which) => {
            if let Some(t) = m.pick(*which, None, |r| !r.zombie) {
                let data = match m.regs[&t].kind {
                    Kind::Owned => lp.source_mut::<UnixStream>(t).map(|s| s.read_all()),
                    Kind::Borrowed => lp.source_mut::<BorrowedFd<'static>>(t).map(|s| s.read_all()),
                };
                match data {
                    Some(data) => m.check_read(t, data),
                    None => m.fail(format!("source_mut({t}) of an idle registration is None")),
                }
            }
        }
        Op::Turn(ms) => turn(lp, m, *ms),
        Op::SetTimer {
            delay_ms,
            repeat,
            action,
        } => add_timer(lp, m, u64::from(*delay_ms), *repeat, *action),
        Op::CancelTimer(which) => cancel_timer(lp, m, *which),
    }
}

/// Remove everything, let the remaining timers fire, and check the totals.
fn finish(lp: &mut Lp, m: &mut Model) {
    m.finishing = true;
    let tokens: Vec<Token> = m.regs.keys().copied().collect();
    for t in tokens {
        remove(lp, m, t);
    }
    if !lp.is_empty() {
        let len = lp.len();
        m.fail(format!("{len} registrations left after removing all"));
    }
    for k in 0..m.timers.len() {
        if m.timers[k].repeat && !m.timers[k].cancelled {
            cancel_timer(lp, m, k);
        }
    }
    let deadline = Instant::now() + Duration::from_millis(500);
    while m.timers.iter().any(|t| t.pending()) && Instant::now() < deadline {
        m.in_turn = true;
        let result = lp.run_once(Some(Duration::from_millis(2)), m);
        m.in_turn = false;
        if let Err(e) = result {
            m.fail(format!("run_once: {e}"));
            break;
        }
    }
    let unfired: Vec<usize> = (0..m.timers.len()).filter(|&k| m.timers[k].pending()).collect();
    if !unfired.is_empty() {
        m.fail(format!("timers {unfired:?} never fired"));
    }
    if lp.timer_count() != 0 {
        let count = lp.timer_count();
        m.fail(format!("{count} timers left"));
    }
}

/// Closes the borrowed numbers a case still owns, however it ends.
struct Case {
    lp: Lp,
    model: Model,
}

impl Drop for Case {
    fn drop(&mut self) {
        let open = self
            .model
            .regs
            .values()
            .filter(|r| r.kind == Kind::Borrowed && !r.zombie);
        let numbers: Vec<RawFd> = open.map(|r| r.fd).chain(self.model.to_close.drain(..)).collect();
        // The loop keeps only BorrowedFds of them, which close nothing when dropped.
        for fd in numbers {
            close_fd(fd);
        }
    }
}

/// Make sure the soft limit allows the highest range.
fn ensure_fd_limit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let needed = (FD_BASE + RANGE * Backend::ALL.len() as RawFd) as u64 + 64;
        let (soft, hard) = rlimit::Resource::NOFILE.get().expect("getrlimit");
        if soft < needed {
            assert!(
                hard >= needed,
                "the model test needs RLIMIT_NOFILE >= {needed}; the hard limit is {hard}"
            );
            rlimit::Resource::NOFILE.set(needed, hard).expect("setrlimit");
        }
    });
}

fn run_case(backend: Backend, ops: &[Op]) -> Result<(), TestCaseError> {
    ensure_fd_limit();
    let lp = EventLoop::with_backend(backend).map_err(|e| TestCaseError::fail(format!("{backend}: {e}")))?;
    let mut case = Case {
        lp,
        model: Model::new(backend),
    };
    let Case { lp, model } = &mut case;
    for (i, op) in ops.iter().enumerate() {
        apply(lp, model, op);
        check_invariants(lp, model);
        if !model.violations.is_empty() {
            return Err(TestCaseError::fail(format!(
                "after op {i} ({op:?}): {:#?}",
                model.violations
            )));
        }
    }
    finish(lp, model);
    if !model.violations.is_empty() {
        return Err(TestCaseError::fail(format!("at the end: {:#?}", model.violations)));
    }
    Ok(())
}

fn mode() -> impl Strategy<Value = Events> {
    prop_oneof![Just(POLL_NULL), Just(POLL_IN), Just(POLL_OUT), Just(POLL_IN | POLL_OUT)]
}

fn which() -> impl Strategy<Value = usize> {
    0..32usize
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => Just(Action::Drain),
        3 => Just(Action::Nothing),
        1 => Just(Action::RemoveSelf),
        1 => which().prop_map(Action::RemoveOther),
        1 => mode().prop_map(Action::AddNew),
        1 => mode().prop_map(Action::ModifySelf),
        1 => (which(), mode()).prop_map(|(w, m)| Action::ModifyOther(w, m)),
        1 => mode().prop_map(Action::ReplaceSelf),
        1 => (which(), mode()).prop_map(|(w, m)| Action::ReplaceOther(w, m)),
        1 => (which(), 1..32u8).prop_map(|(w, n)| Action::WriteOther(w, n)),
        1 => which().prop_map(Action::TakeOther),
        1 => (0..10u8).prop_map(Action::SetTimer),
        1 => which().prop_map(Action::CancelTimer),
    ]
}

fn script() -> impl Strategy<Value = Vec<Action>> {
    vec(action(), 0..4)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (mode(), script()).prop_map(|(m, s)| Op::AddOwned(m, s)),
        3 => (mode(), script()).prop_map(|(m, s)| Op::AddBorrowed(m, s)),
        2 => (which(), mode()).prop_map(|(w, m)| Op::Modify(w, m)),
        1 => (which(), mode()).prop_map(|(w, m)| Op::SetHandler(w, m)),
        2 => which().prop_map(Op::Remove),
        1 => which().prop_map(Op::Take),
        2 => which().prop_map(Op::CloseBehind),
        2 => which().prop_map(Op::Reopen),
        4 => (which(), 1..64u8).prop_map(|(w, n)| Op::Write(w, n)),
        2 => which().prop_map(Op::Drain),
        9 => (0..3u8).prop_map(Op::Turn),
        2 => (0..15u8, proptest::bool::weighted(0.2), action())
            .prop_map(|(delay_ms, repeat, action)| Op::SetTimer { delay_ms: delay_ms.max(u8::from(repeat)), repeat, action }),
        1 => which().prop_map(Op::CancelTimer),
    ]
}

fn config() -> ProptestConfig {
    // The default number of cases (256) unless PROPTEST_CASES says otherwise; no
    // regression files written into the source tree.
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Generates the model test for each backend, when it exists here.
macro_rules! model_tests {
    ($($module:ident => $backend:ident),* $(,)?) => {$(
        mod $module {
            use super::*;

            proptest! {
                #![proptest_config(config())]

                /// Random operations, and handlers and timers that change the loop
                /// mid-dispatch: no stale event, no lost readiness or data, no
                /// leaked registration, no early, lost or doubled timer, no panic.
                #[test]
                fn random_ops_match_the_reference_model(ops in vec(op(), 1..64)) {
                    if Backend::$backend.is_available() {
                        run_case(Backend::$backend, &ops)?;
                    }
                }
            }
        }
    )*};
}

model_tests!(epoll => Epoll, poll => Poll, select => Select);
