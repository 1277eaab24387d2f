//! The loop: registrations, dispatch, timers, periodic callbacks, stop.

use std::any::{Any, TypeId};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant};

use crate::events::{Events, POLL_NVAL};
use crate::file_id::{self, FileId, Identity};
use crate::poller::{AnyPoller, Backend, PollEvent, Poller, PollerError};
use crate::shrink::{NO_FREE, Shrink, SlabSlot};
use crate::signal::{Signal, SignalSource};
use crate::timer::{TimerId, TimerQueue, nanos};
use crate::token::Token;
use crate::waker::{LoopHandle, Waker};

/// The original's `TIMEOUT_PRECISION`: how often periodic callbacks run.
pub const TIMEOUT_PRECISION: Duration = Duration::from_secs(10);

/// What a callback gets besides its own arguments: the loop, to add, remove or
/// modify any registration (its own included), set timers or stop; and the
/// program's shared data `D` (the original's per-port relay objects live here).
///
/// The two are separate fields so that a handler can borrow both at once:
/// `cx.lp.modify(token, POLL_OUT)?` while holding `&mut cx.data.connections[i]`.
pub struct Ctx<'a, D = ()> {
    /// The running loop.
    pub lp: &'a mut EventLoop<D>,
    /// The data passed to [`EventLoop::run`].
    pub data: &'a mut D,
}

/// What a handler is: a closure (or fn) called for the events on one registered
/// source, the original's `handle_event(sock, fd, event)`. It gets the loop and
/// data, its source, its token and the events. [`EventLoop::add`] and
/// [`EventLoop::set_handler`] take one; any such closure is one.
///
/// An error returned by a handler is logged with the fd and the events, and the
/// loop goes on with the next event, as the original does. A panic is not caught,
/// and leaves the loop unusable: `run` and `run_once` refuse to start again.
pub trait Handler<S, D>: FnMut(&mut Ctx<'_, D>, &mut S, Token, Events) -> io::Result<()> + 'static {}

impl<S, D, F> Handler<S, D> for F where F: FnMut(&mut Ctx<'_, D>, &mut S, Token, Events) -> io::Result<()> + 'static {}

/// A registration with its source's type erased, so that one slab holds them all.
trait Entry<D> {
    fn dispatch(&mut self, cx: &mut Ctx<'_, D>, token: Token, events: Events) -> io::Result<()>;
    fn source_mut(&mut self) -> &mut dyn Any;
    fn into_source(self: Box<Self>) -> Box<dyn Any>;
    /// The source's fd number (for logs, after its slot has forgotten it).
    fn raw_fd(&self) -> RawFd;
    /// Whether dropping the source closes its fd: false for a [`ForeignFd`], whose
    /// number the loop only watches. Asked on the cold paths alone (remove, lost).
    fn owns_fd(&self) -> bool;
}

struct Registered<S, H> {
    source: S,
    handler: H,
}

/// What a registration watches: a source the loop owns (any `AsFd`), or a
/// [`ForeignFd`].
trait Watched: 'static {
    /// Whether dropping it closes the number.
    const OWNS_FD: bool = true;
    /// Its fd number.
    fn number(&self) -> RawFd;
}

impl<S: AsFd + 'static> Watched for S {
    fn number(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl<S: Watched, D, H: Handler<S, D>> Entry<D> for Registered<S, H> {
    #[inline]
    fn dispatch(&mut self, cx: &mut Ctx<'_, D>, token: Token, events: Events) -> io::Result<()> {
        (self.handler)(cx, &mut self.source, token, events)
    }

    fn source_mut(&mut self) -> &mut dyn Any {
        &mut self.source
    }

    fn into_source(self: Box<Self>) -> Box<dyn Any> {
        Box::new(self.source)
    }

    fn raw_fd(&self) -> RawFd {
        self.source.number()
    }

    fn owns_fd(&self) -> bool {
        S::OWNS_FD
    }
}

/// A descriptor the loop watches but does not own ([`EventLoop::add_foreign`]):
/// its number, and nothing that could close it or lend it out. It has no `AsFd`
/// on purpose: the number may be closed (and reused) by its owner at any time,
/// so safe code must not turn it into a `BorrowedFd`.
#[derive(Debug, PartialEq, Eq)]
pub struct ForeignFd(RawFd);

impl ForeignFd {
    /// The descriptor number as it was registered.
    pub fn fd(&self) -> RawFd {
        self.0
    }
}

impl Watched for ForeignFd {
    const OWNS_FD: bool = false;

    fn number(&self) -> RawFd {
        self.0
    }
}

type BoxedEntry<D> = Box<dyn Entry<D>>;
/// A `set_handler` that arrived while the handler it replaces was running.
type Replacement<D> = Box<dyn FnOnce(Box<dyn Any>) -> BoxedEntry<D>>;

/// One registration, or a vacant place for one (`fd == VACANT`).
struct Slot<D> {
    generation: u32,
    fd: RawFd,
    mode: Events,
    /// `None` while its handler runs (and while vacant).
    entry: Option<BoxedEntry<D>>,
    /// The source's type, so that `set_handler` and `take` can check it even while
    /// the entry is out running its handler.
    source_type: TypeId,
    next_free: u32,
}

impl<D> Slot<D> {
    fn is_live(&self) -> bool {
        self.fd != VACANT
    }
}

impl<D> SlabSlot for Slot<D> {
    fn is_vacant(&self) -> bool {
        !self.is_live()
    }

    fn generation(&self) -> u32 {
        self.generation
    }

    fn link_free(&mut self, next: u32) {
        self.next_free = next;
    }
}

const VACANT: RawFd = -1;

/// The error for a token that names no live registration; out of line, so that the
/// paths that check a token carry none of its formatting.
#[cold]
#[inline(never)]
fn not_registered(backend: Backend, token: Token) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{backend}: {token} is not registered"))
}

const NO_TOKEN: Token = Token {
    index: u32::MAX,
    generation: u32::MAX,
};

type Callback<D> = Box<dyn FnMut(&mut Ctx<'_, D>)>;

/// Names a periodic callback, for [`EventLoop::remove_periodic`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeriodicId(u64);

struct Periodic<D> {
    id: PeriodicId,
    callback: Option<Callback<D>>,
}

/// Settings for a new loop; [`EventLoop::new`] takes the defaults.
///
/// ```
/// use evloop::{Backend, Builder, EventLoop};
/// use std::time::Duration;
///
/// let lp: EventLoop = Builder::new().backend(Backend::Poll).timeout_precision(Duration::from_secs(1)).build()?;
/// assert_eq!(lp.backend(), Backend::Poll);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Builder {
    backend: Option<Backend>,
    timeout_precision: Duration,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            backend: None,
            timeout_precision: TIMEOUT_PRECISION,
        }
    }
}

impl Builder {
    /// The default settings: automatic backend, 10 s precision.
    pub fn new() -> Self {
        Self::default()
    }

    /// Use this backend instead of choosing one (see [`Backend::auto`]).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = Some(backend);
        self
    }

    /// How often periodic callbacks run (default [`TIMEOUT_PRECISION`], 10 s).
    pub fn timeout_precision(mut self, precision: Duration) -> Self {
        self.timeout_precision = precision.max(Duration::from_millis(1));
        self
    }

    /// Open the poller and build the loop.
    pub fn build<D>(self) -> io::Result<EventLoop<D>> {
        let backend = match self.backend {
            Some(b) => b,
            None => Backend::auto()?,
        };
        let poller = AnyPoller::open(backend)?;
        log::debug!("using event model: {backend}");
        Ok(EventLoop {
            poller,
            batch: Vec::new(),
            backend,
            slots: Vec::new(),
            free_head: NO_FREE,
            registered: 0,
            fd_tokens: Vec::new(),
            files: Vec::new(),
            replacements: Vec::new(),
            timers: TimerQueue::new(),
            periodics: Vec::new(),
            next_periodic: 0,
            precision: self.timeout_precision,
            last_periodic_ns: crate::timer::monotonic_ns(),
            periodic_asap: false,
            running: false,
            waker: None,
            shrink: Shrink::default(),
            pending: 0,
            running_removed: None,
            suspects: Vec::new(),
            unreleased: Vec::new(),
        })
    }
}

/// The event loop: watches registered sources, collects their events, and hands
/// each event to the handler registered for it.
///
/// `D` is the program's shared data, lent to every callback for the length of
/// [`run`](EventLoop::run) (use `()` if there is none).
///
/// ```
/// use evloop::{EventLoop, POLL_IN};
/// use std::io::{Read, Write};
/// use std::os::unix::net::UnixStream;
///
/// let mut lp: EventLoop<Vec<u8>> = EventLoop::new()?;
/// let (a, mut b) = UnixStream::pair()?;
/// lp.add(a, POLL_IN, |cx, sock: &mut UnixStream, token, _events| {
///     let mut buf = [0; 64];
///     let n = sock.read(&mut buf)?;
///     cx.data.extend_from_slice(&buf[..n]);
///     cx.lp.remove(token)?; // unregisters, then closes the socket
///     cx.lp.stop();
///     Ok(())
/// })?;
/// b.write_all(b"hello")?;
/// let mut received = Vec::new();
/// lp.run(&mut received)?;
/// assert_eq!(received, b"hello");
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct EventLoop<D = ()> {
    poller: AnyPoller,
    /// The last poll's events, each carrying the token of its registration.
    batch: Vec<PollEvent>,
    backend: Backend,
    slots: Vec<Slot<D>>,
    free_head: u32,
    registered: usize,
    /// fd number -> the registration that owns it (`NO_TOKEN` if none).
    fd_tokens: Vec<Token>,
    /// Slot index -> the file its fd named at `add`, on backends whose kernel
    /// cannot tell ([`Backend::kernel_checks_identity`]; empty where it can). The
    /// loop closes a source only while its number still names that file. Beside
    /// the slots rather than in them, so that a slot stays 48 bytes: dispatch
    /// indexes the slab once per event.
    files: Vec<Option<FileId>>,
    /// `set_handler` calls for handlers that were running at the time.
    replacements: Vec<(Token, Replacement<D>)>,
    timers: TimerQueue<Callback<D>>,
    periodics: Vec<Periodic<D>>,
    next_periodic: u64,
    precision: Duration,
    /// When the periodic callbacks last ran ([`monotonic_ns`](crate::timer::monotonic_ns)).
    last_periodic_ns: u64,
    periodic_asap: bool,
    running: bool,
    waker: Option<Waker>,
    /// When the registration slab gives back what a burst left behind.
    shrink: Shrink,
    /// What the loop must attend to between two iterations ([`STOP`], [`SHRINK`],
    /// [`RESET`]): one test per iteration covers them all.
    pending: u8,
    /// The registration whose handler is running removed itself: its token, fd and
    /// what says whether the fd is still its own, to check when the handler
    /// returns and its source is to be dropped.
    running_removed: Option<(Token, RawFd, Identity)>,
    /// Registrations dropped because their fd no longer named their file. If one
    /// of these tokens still comes back from a poll, the kernel kept an entry the
    /// loop cannot reach by number (epoll, with a `dup` of the closed fd still
    /// open): the poller is reset.
    suspects: Vec<Token>,
    /// Sources whose fd number names another file: dropping them would close that
    /// file. Each is dropped once its number is free ([`file_id::release`]).
    unreleased: Vec<(RawFd, Box<dyn Any>)>,
}

/// `pending`: [`EventLoop::stop`] was called.
const STOP: u8 = 1;
/// `pending`: registrations or timers fell far below their tables' size; the
/// tables shrink between two iterations, when no handler is out of its slot.
const SHRINK: u8 = 2;
/// `pending`: the poller is to be reset and every live registration registered
/// again (too many [`EventLoop::suspects`] to keep).
const RESET: u8 = 4;
/// `pending`: there are suspects; each poll's tokens are checked against them
/// ([`EventLoop::check_suspects`]), which resets the poller if one comes back.
const SUSPECTS: u8 = 8;
/// `pending`: a suspect was added since the last poll, whose batch (which may
/// well carry its token, legitimately) is not checked: the next one is.
const NEW_SUSPECTS: u8 = 16;

/// How many suspects are kept; one more resets the poller, which clears them.
const MAX_SUSPECTS: usize = 64;

impl<D: 'static> EventLoop<D> {
    /// A loop on the automatically chosen backend (see [`Backend::auto`]).
    pub fn new() -> io::Result<Self> {
        Builder::default().build()
    }

    /// A loop on the given backend.
    pub fn with_backend(backend: Backend) -> io::Result<Self> {
        Builder::default().backend(backend).build()
    }

    /// The backend this loop polls with.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// How many sources are registered (the loop's own wake-up source included).
    pub fn len(&self) -> usize {
        self.registered
    }

    /// True when no source is registered.
    pub fn is_empty(&self) -> bool {
        self.registered == 0
    }

    /// Register `source`, watched for `mode`, with `handler` for its events.
    ///
    /// The loop owns the source from now on: [`remove`](Self::remove) unregisters
    /// it and then drops (closes) it, in that order. To keep using a socket
    /// elsewhere too, register an `Rc<TcpStream>` and keep a clone.
    ///
    /// A source whose fd is registered already (a clone of a registered
    /// `Rc<TcpStream>`, say) is refused with `ErrorKind::AlreadyExists`, and dropped;
    /// the registration it collided with is untouched. If the number is still
    /// registered but now names another file, the older source was closed behind
    /// the loop's back: its registration is dropped with a warning (its source
    /// without closing the number) and the new one takes the number.
    pub fn add<S, H>(&mut self, source: S, mode: Events, handler: H) -> io::Result<Token>
    where
        S: AsFd + 'static,
        H: Handler<S, D>,
    {
        let fd = source.as_fd().as_raw_fd();
        self.add_entry(fd, mode, TypeId::of::<S>(), Box::new(Registered { source, handler }))
    }

    /// Watch `fd`, a descriptor the loop does not own (a library's socket, say),
    /// for `mode`, with `handler` for its events: mio's `SourceFd`. The handler is
    /// given a [`ForeignFd`], which carries the number only.
    ///
    /// The loop never closes `fd`: [`remove`](Self::remove) unregisters it and
    /// drops the handler, and [`take`](Self::take)`::<ForeignFd>` hands the number
    /// back. The contract is the caller's: **remove the registration when the
    /// owner closes the descriptor**. Until then, the number stays registered and
    /// events may still name it, even once the owner has closed it or reused the
    /// number for another descriptor. A `remove` after the owner closed it is
    /// expected and succeeds (logged at debug only); it closes nothing either way,
    /// so a newcomer on the number is left alone. (On epoll, an owner that closes
    /// the descriptor while keeping a `dup` of it open keeps the file watched
    /// until the dup closes too: remove before closing, where the owner can.)
    ///
    /// Errors as for [`add`](Self::add): `EBADF` for a number that names nothing,
    /// `ErrorKind::AlreadyExists` for one registered already.
    pub fn add_foreign<H>(&mut self, fd: RawFd, mode: Events, handler: H) -> io::Result<Token>
    where
        H: Handler<ForeignFd, D>,
    {
        let entry = Box::new(Registered {
            source: ForeignFd(fd),
            handler,
        });
        self.add_entry(fd, mode, TypeId::of::<ForeignFd>(), entry)
    }

    fn add_entry(&mut self, fd: RawFd, mode: Events, source_type: TypeId, entry: BoxedEntry<D>) -> io::Result<Token> {
        let fd_index = usize::try_from(fd).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: add fd {fd}: not a descriptor", self.backend),
            )
        })?;
        // Where the kernel proves identity, nothing is recorded: no `fstat` per add.
        let file = if self.backend.kernel_checks_identity() {
            None
        } else {
            Some(FileId::of(fd).map_err(|err| PollerError::os(self.backend, "register", Some(fd), err))?)
        };
        if let Some(&old) = self.fd_tokens.get(fd_index)
            && old != NO_TOKEN
        {
            if self.still_names_its_file(old) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    PollerError {
                        backend: self.backend,
                        op: "register",
                        fd: Some(fd),
                        errno: Some(libc::EEXIST),
                        reason: format!("already registered, as {old}"),
                    },
                ));
            }
            self.drop_stale(old);
        }
        let index = match self.free_head {
            NO_FREE => u32::try_from(self.slots.len()).expect("fewer than 2^32 registrations"),
            free => free,
        };
        let generation = self
            .slots
            .get(index as usize)
            .map_or(self.shrink.new_generation(), |s| s.generation);
        let token = Token { index, generation };
        self.poller.register(fd, token, mode)?;
        if let Some(slot) = self.slots.get_mut(index as usize) {
            self.free_head = slot.next_free;
            slot.fd = fd;
            slot.mode = mode;
            slot.source_type = source_type;
            slot.entry = Some(entry);
        } else {
            self.shrink.growing(self.slots.len());
            self.slots.push(Slot {
                generation,
                fd,
                mode,
                entry: Some(entry),
                source_type,
                next_free: NO_FREE,
            });
        }
        if self.fd_tokens.len() <= fd_index {
            self.fd_tokens.resize(fd_index + 1, NO_TOKEN);
        }
        self.fd_tokens[fd_index] = token;
        if let Some(file) = file {
            if self.files.len() <= index as usize {
                self.files.resize(index as usize + 1, None);
            }
            self.files[index as usize] = Some(file);
        }
        self.registered += 1;
        Ok(token)
    }

    #[inline]
    fn slot_mut(&mut self, token: Token) -> io::Result<&mut Slot<D>> {
        match self.slots.get_mut(token.index as usize) {
            Some(slot) if slot.generation == token.generation && slot.is_live() => Ok(slot),
            _ => Err(not_registered(self.backend, token)),
        }
    }

    /// Whether `token` names a live registration.
    pub fn contains(&self, token: Token) -> bool {
        self.slots
            .get(token.index as usize)
            .is_some_and(|s| s.generation == token.generation && s.is_live())
    }

    /// The fd and mode of a live registration.
    pub fn registration(&self, token: Token) -> Option<(RawFd, Events)> {
        self.slots
            .get(token.index as usize)
            .filter(|s| s.generation == token.generation && s.is_live())
            .map(|s| (s.fd, s.mode))
    }

    /// Change the events a registration is watched for.
    pub fn modify(&mut self, token: Token, mode: Events) -> io::Result<()> {
        let slot = self.slot_mut(token)?;
        if slot.mode == mode {
            return Ok(());
        }
        let fd = slot.fd;
        slot.mode = mode;
        self.poller.modify(fd, token, mode)
    }

    /// Replace the handler of a registration, and its mode: the original's
    /// `modify(sock, mode, handler)`. `S` must be the type the source was added
    /// with. A handler may replace its own; the new one takes effect after it returns.
    pub fn set_handler<S, H>(&mut self, token: Token, mode: Events, handler: H) -> io::Result<()>
    where
        S: AsFd + 'static,
        H: Handler<S, D>,
    {
        let backend = self.backend;
        let wrong_type = move || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{backend}: {token}: its source is not a {}", std::any::type_name::<S>()),
            )
        };
        let slot = self.slot_mut(token)?;
        if slot.source_type != TypeId::of::<S>() {
            return Err(wrong_type());
        }
        match slot.entry.take() {
            Some(entry) => {
                let source = *entry.into_source().downcast::<S>().expect("source type checked above");
                slot.entry = Some(Box::new(Registered { source, handler }));
            }
            None => {
                // Its handler is running: the new one takes over when it returns.
                self.replacements.retain(|(t, _)| *t != token);
                self.replacements.push((
                    token,
                    Box::new(move |source: Box<dyn Any>| -> BoxedEntry<D> {
                        let source = *source.downcast::<S>().expect("source type checked by set_handler");
                        Box::new(Registered { source, handler })
                    }),
                ));
            }
        }
        self.modify(token, mode)
    }

    /// The source of a registration that is not running its handler right now, if
    /// it is an `S`: how a handler reaches the other socket of its connection.
    pub fn source_mut<S: 'static>(&mut self, token: Token) -> Option<&mut S> {
        self.slot_mut(token)
            .ok()?
            .entry
            .as_mut()?
            .source_mut()
            .downcast_mut::<S>()
    }

    /// Unregister a source, then drop (close) it. A handler may remove any
    /// registration, its own included (its source is dropped when it returns).
    /// Events already fetched for it are not delivered. A source whose fd number
    /// no longer names the file it had at `add` (it was closed behind the loop's
    /// back) is dropped without closing the number.
    pub fn remove(&mut self, token: Token) -> io::Result<()> {
        // Dropping the entry (if it is not running) closes the source, after the unregister.
        drop(self.detach(token)?);
        self.retry_unreleased();
        Ok(())
    }

    /// Unregister a source and hand it back instead of closing it. `S` must be the
    /// type it was added with. Fails for a registration whose handler is running.
    pub fn take<S: 'static>(&mut self, token: Token) -> io::Result<S> {
        let backend = self.backend;
        let slot = self.slot_mut(token)?;
        if slot.source_type != TypeId::of::<S>() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{backend}: {token}: its source is not a {}", std::any::type_name::<S>()),
            ));
        }
        if slot.entry.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{backend}: {token}: cannot take the source of a running handler"),
            ));
        }
        let fd = slot.fd;
        match self.detach(token)? {
            Some(entry) => Ok(*entry.into_source().downcast::<S>().expect("type checked above")),
            // Its fd was closed behind the loop's back: there is nothing left to hand back.
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{backend}: {token}: fd {fd} was closed without remove(); its registration is dropped"),
            )),
        }
    }

    /// Unregister and free the slot; returns the entry, to be dropped, unless its
    /// handler is running (then `put_back` drops it) or its fd no longer names its
    /// file (then the source is let go of without closing the number).
    fn detach(&mut self, token: Token) -> io::Result<Option<BoxedEntry<D>>> {
        let (fd, file, entry) = self.vacate(token)?;
        let unregistered = self.poller.unregister(fd);
        // Where the kernel checks identity, the unregister is the proof (it fails
        // for a number that no longer names the registered file).
        let identity = match file {
            _ if self.backend.kernel_checks_identity() => Identity::Proven(unregistered.is_ok()),
            Some(file) => Identity::Recorded(file),
            None => Identity::Proven(false),
        };
        let Some(entry) = entry else {
            self.running_removed = Some((token, fd, identity));
            return Ok(None);
        };
        if identity.holds_at(fd) {
            if let Err(err) = unregistered {
                log::warn!("{}: {token} fd {fd}: {err}", self.backend);
            }
            return Ok(Some(entry));
        }
        if !entry.owns_fd() {
            // Its owner closed it first: the number is handed back (to `take`) all
            // the same, as the loop never closes it.
            self.foreign_gone(token, fd);
            return Ok(Some(entry));
        }
        self.lost(token, fd, entry);
        Ok(None)
    }

    /// Whether a live registration's fd number still names the file it was added
    /// with: the file recorded at `add` compared (`fstat`), or, where the kernel
    /// checks identity, a modify to the same token and mode (which fails for a
    /// number that names another file or none).
    fn still_names_its_file(&mut self, token: Token) -> bool {
        let slot = &self.slots[token.index as usize];
        let (fd, mode) = (slot.fd, slot.mode);
        if self.backend.kernel_checks_identity() {
            return self.poller.modify(fd, token, mode).is_ok();
        }
        let file = self.files.get(token.index as usize).copied().flatten();
        file.is_some_and(|file| file.is_at(fd))
    }

    /// Free a live slot (its token goes stale) and forget its fd; returns the fd,
    /// its recorded file and the entry, unless its handler is running (then the
    /// caller leaves `running_removed` for `put_back`).
    fn vacate(&mut self, token: Token) -> io::Result<(RawFd, Option<FileId>, Option<BoxedEntry<D>>)> {
        let free_head = self.free_head;
        let slot = self.slot_mut(token)?;
        let fd = std::mem::replace(&mut slot.fd, VACANT);
        let entry = slot.entry.take();
        slot.generation = slot.generation.wrapping_add(1);
        slot.next_free = free_head;
        self.free_head = token.index;
        let file = self.files.get_mut(token.index as usize).and_then(Option::take);
        self.registered -= 1;
        if self.shrink.is_due(self.registered) {
            self.pending |= SHRINK;
        }
        if let Some(t) = self.fd_tokens.get_mut(fd as usize)
            && *t == token
        {
            *t = NO_TOKEN;
        }
        if !self.replacements.is_empty() {
            self.replacements.retain(|(t, _)| *t != token);
        }
        Ok((fd, file, entry))
    }

    /// Give back the memory a burst of connections left behind, between two
    /// iterations (never while a handler is out of its slot): vacant slots at the
    /// end of the slab and unused fd numbers at the end of the fd index are cut
    /// off, both return their spare capacity, and so do the timers' tables.
    /// Tokens stay valid (and stale ones stale); [`Shrink`] says when.
    fn shrink_tables(&mut self) {
        self.pending &= !SHRINK;
        self.free_head = self.shrink.shrink(&mut self.slots, self.registered);
        self.files.truncate(self.slots.len());
        self.files.shrink_to_fit();
        while self.fd_tokens.last() == Some(&NO_TOKEN) {
            self.fd_tokens.pop();
        }
        self.fd_tokens.shrink_to_fit();
        if self.timers.is_sparse() {
            self.timers.shrink();
        }
    }

    /// Drop a registration whose fd no longer names its file (closed behind the
    /// loop's back, perhaps reused), without closing the number.
    fn drop_stale(&mut self, token: Token) {
        let Ok((fd, _, entry)) = self.vacate(token) else { return };
        // The number is no longer this registration's; the poller's entry for it
        // goes (poll and select keep one per number), and errors say only that.
        let _ = self.poller.unregister(fd);
        match entry {
            Some(entry) => self.lost(token, fd, entry),
            None => self.running_removed = Some((token, fd, Identity::Proven(false))),
        }
    }

    /// A registration's fd turned out not to name its file any more: say so once,
    /// remember its token in case the kernel still reports it, and let go of the
    /// source without closing what the number names now.
    #[cold]
    #[inline(never)]
    fn lost(&mut self, token: Token, fd: RawFd, entry: BoxedEntry<D>) {
        if !entry.owns_fd() {
            self.foreign_gone(token, fd);
            return;
        }
        let now = if FileId::of(fd).is_ok() {
            "names another file now"
        } else {
            "is closed"
        };
        log::warn!(
            "{}: fd {fd} ({token}) was closed without remove() and {now}: \
             its registration is dropped, and its source without closing fd {fd}",
            self.backend
        );
        if self.suspects.len() >= MAX_SUSPECTS {
            self.pending |= RESET;
        }
        self.suspects.push(token);
        self.pending |= NEW_SUSPECTS;
        if let Err(source) = file_id::release(fd, entry.into_source()) {
            self.unreleased.push((fd, source));
        }
    }

    /// A [`ForeignFd`]'s number no longer names the file it was registered with:
    /// its owner closed it, as it may (that is the contract of
    /// [`add_foreign`](Self::add_foreign)). Nothing to release or hold back, as
    /// the loop closes nothing of it. Its token is not made a suspect: a foreign
    /// fd closed first is the usual case (c-ares closes its sockets itself), and
    /// suspects are for misuse (each is checked on every poll until the poller is
    /// reset, and 64 of them reset it).
    #[cold]
    #[inline(never)]
    fn foreign_gone(&mut self, token: Token, fd: RawFd) {
        log::debug!(
            "{}: foreign fd {fd} ({token}) was closed by its owner before its registration was dropped",
            self.backend
        );
    }

    /// Drop the sources held back because their numbers named other files, for
    /// each whose number is free now. Called after the loop closed something.
    #[inline]
    fn retry_unreleased(&mut self) {
        if !self.unreleased.is_empty() {
            retry_release(&mut self.unreleased);
        }
    }

    /// Whether the last poll reported a suspect's token: then the kernel holds an
    /// entry the loop can no longer reach by number. (A stale token is otherwise
    /// ordinary: a handler removed the registration after the poll.) Runs between
    /// iterations while there are suspects, so that dispatch pays nothing for it.
    #[cold]
    #[inline(never)]
    fn check_suspects(&mut self) {
        if self.batch.iter().any(|event| self.suspects.contains(&event.token())) {
            self.reset_poller();
        }
    }

    /// Replace the poller's set with the live registrations alone: the way to
    /// silence an entry no fd number reaches (see [`Poller::reset`]). A
    /// registration whose fd no longer names its file is dropped instead.
    #[cold]
    #[inline(never)]
    fn reset_poller(&mut self) {
        self.pending &= !(RESET | SUSPECTS | NEW_SUSPECTS);
        self.suspects.clear();
        // Which registrations still name their files is asked before the reset:
        // where the kernel is the proof, it forgets every entry with it.
        let live: Vec<Token> = (self.slots.iter().enumerate())
            .filter(|(_, slot)| slot.is_live())
            .map(|(index, slot)| Token {
                index: index as u32,
                generation: slot.generation,
            })
            .collect();
        let live: Vec<(Token, bool)> = live
            .into_iter()
            .map(|token| (token, self.still_names_its_file(token)))
            .collect();
        if let Err(err) = self.poller.reset() {
            log::error!("{}: resetting the poller failed: {err}", self.backend);
            return;
        }
        let mut lost = Vec::new();
        let mut kept = 0;
        for (token, ours) in live {
            let slot = &self.slots[token.index as usize];
            if ours && self.poller.register(slot.fd, token, slot.mode).is_ok() {
                kept += 1;
            } else {
                lost.push(token);
            }
        }
        log::warn!(
            "{}: events kept coming for a registration dropped after its fd was closed \
             behind the loop's back (another descriptor keeps the file open): \
             the poller was reset and {kept} registrations registered again",
            self.backend
        );
        for token in lost {
            self.drop_stale(token);
        }
    }

    /// Run `callback` once, `delay` from now (never earlier; millisecond precision).
    pub fn add_timer<F>(&mut self, delay: Duration, callback: F) -> TimerId
    where
        F: FnMut(&mut Ctx<'_, D>) + 'static,
    {
        self.timers.insert_after(delay, None, Box::new(callback))
    }

    /// Run `callback` every `interval` (at least 1 ms), first `interval` from now.
    pub fn add_repeating_timer<F>(&mut self, interval: Duration, callback: F) -> TimerId
    where
        F: FnMut(&mut Ctx<'_, D>) + 'static,
    {
        self.timers.insert_after(interval, Some(interval), Box::new(callback))
    }

    /// Cancel a timer; true if it was pending (or firing, and now won't repeat).
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        let cancelled = self.timers.cancel(id);
        if self.timers.is_sparse() {
            self.pending |= SHRINK;
        }
        cancelled
    }

    /// When a timer fires next, if it is pending.
    ///
    /// For a one-shot timer this searches the timer heap (O(n) in the timers
    /// scheduled), which keeps each timer at 40 bytes; a program that needs the
    /// deadline often keeps it beside the [`TimerId`].
    pub fn timer_deadline(&self, id: TimerId) -> Option<Instant> {
        self.timers.deadline(id)
    }

    /// How many timers are pending.
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// Add a periodic callback: the original's sweep of idle connections. It runs
    /// every `timeout_precision` (10 s by default) and as soon as possible after a
    /// poll interrupted by a signal.
    pub fn add_periodic<F>(&mut self, callback: F) -> PeriodicId
    where
        F: FnMut(&mut Ctx<'_, D>) + 'static,
    {
        let id = PeriodicId(self.next_periodic);
        self.next_periodic += 1;
        self.periodics.push(Periodic {
            id,
            callback: Some(Box::new(callback)),
        });
        id
    }

    /// Remove a periodic callback; true if it existed.
    pub fn remove_periodic(&mut self, id: PeriodicId) -> bool {
        let before = self.periodics.len();
        self.periodics.retain(|p| p.id != id);
        self.periodics.len() != before
    }

    /// Ask [`run`](Self::run) to return after the current iteration.
    pub fn stop(&mut self) {
        self.pending |= STOP;
    }

    /// A handle that wakes or stops this loop from any thread (it registers the
    /// loop's wake-up source on first use).
    pub fn handle(&mut self) -> io::Result<LoopHandle> {
        if let Some(waker) = &self.waker {
            return Ok(waker.handle());
        }
        let (waker, reader) = Waker::new()?;
        self.add(
            reader,
            crate::events::POLL_IN,
            |cx: &mut Ctx<'_, D>, reader: &mut crate::waker::WakeReader, _, _| {
                // A handle's stop request always comes with a wake-up, so the flag is
                // checked here and not on every iteration.
                if reader.drain()? {
                    cx.lp.stop();
                }
                Ok(())
            },
        )?;
        let handle = waker.handle();
        self.waker = Some(waker);
        Ok(handle)
    }

    /// Deliver `signals` (`libc::SIGINT`, `libc::SIGTERM`, ...) to `handler` as loop
    /// events, in the loop's thread. On Linux this uses a signalfd and blocks the
    /// signals in the calling thread: call it before spawning threads (see
    /// [`signal`](crate::signal)). Elsewhere it uses a self-pipe. Remove the
    /// returned token to stop (and, on Linux, unblock the signals again).
    ///
    /// ```no_run
    /// use evloop::EventLoop;
    ///
    /// let mut lp: EventLoop = EventLoop::new()?;
    /// lp.add_signals(&[libc::SIGINT, libc::SIGTERM], |cx, signal| {
    ///     log::info!("signal {signal}: shutting down");
    ///     cx.lp.stop();
    /// })?;
    /// lp.run(&mut ())?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn add_signals<F>(&mut self, signals: &[Signal], handler: F) -> io::Result<Token>
    where
        F: FnMut(&mut Ctx<'_, D>, Signal) + 'static,
    {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let source = crate::signal::SignalFd::new(signals)?;
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let source = crate::signal::SelfPipe::new(signals)?;
        self.add_signal_source(source, handler)
    }

    pub(crate) fn add_signal_source<S, F>(&mut self, source: S, mut handler: F) -> io::Result<Token>
    where
        S: SignalSource + 'static,
        F: FnMut(&mut Ctx<'_, D>, Signal) + 'static,
    {
        let mut arrived = Vec::new();
        self.add(
            source,
            crate::events::POLL_IN,
            move |cx: &mut Ctx<'_, D>, source: &mut S, _, _| {
                arrived.clear();
                source.read_signals(&mut arrived)?;
                for &signal in &arrived {
                    handler(cx, signal);
                }
                Ok(())
            },
        )
    }

    /// Run until [`stop`](Self::stop) is called (from a callback or a
    /// [`LoopHandle`]), or not at all if it was called before. Returns early only
    /// if the poller itself fails.
    pub fn run(&mut self, data: &mut D) -> io::Result<()> {
        self.enter()?;
        let result = if self.pending & STOP != 0 {
            // Stopped before it started: as the original, do not start.
            Ok(())
        } else {
            loop {
                if let Err(e) = self.iterate(None, data) {
                    break Err(e);
                }
                if self.pending != 0 {
                    self.between_iterations();
                    if self.pending & STOP != 0 {
                        break Ok(());
                    }
                }
            }
        };
        self.pending &= !STOP;
        self.running = false;
        result
    }

    /// One iteration: poll for at most `timeout` (`None`: until something happens
    /// or a timer or periodic callback is due), dispatch the events, then fire due
    /// timers and, when due, the periodic callbacks. Returns how many I/O events
    /// were dispatched.
    pub fn run_once(&mut self, timeout: Option<Duration>, data: &mut D) -> io::Result<usize> {
        self.enter()?;
        let result = self.iterate(timeout, data);
        self.between_iterations();
        self.running = false;
        result
    }

    /// What was left for between two iterations, stopping aside (the caller's).
    #[cold]
    fn between_iterations(&mut self) {
        if self.pending & RESET != 0 {
            self.reset_poller();
        } else if self.pending & SUSPECTS != 0 {
            self.check_suspects();
        }
        if self.pending & NEW_SUSPECTS != 0 {
            self.pending = (self.pending & !NEW_SUSPECTS) | SUSPECTS;
        }
        if self.pending & SHRINK != 0 {
            self.shrink_tables();
        }
    }

    fn enter(&mut self) -> io::Result<()> {
        if self.running {
            return Err(io::Error::other(
                "the loop is already running: run or run_once called from inside a callback \
                 (or a callback panicked out of an earlier run, which leaves the loop unusable)",
            ));
        }
        self.running = true;
        Ok(())
    }

    fn iterate(&mut self, timeout: Option<Duration>, data: &mut D) -> io::Result<usize> {
        let mut housekeeping = !self.timers.is_empty() || !self.periodics.is_empty();
        let timeout = if housekeeping {
            self.poll_timeout(timeout)
        } else {
            timeout
        };
        let dispatched = match self.poller.poll(timeout, &mut self.batch) {
            Ok(()) => self.dispatch_polled(data),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {
                // A signal arrived: run the periodic callbacks as soon as possible, as
                // the original does (it may have been the one asking for a sweep).
                self.periodic_asap = true;
                housekeeping = true;
                0
            }
            Err(err) => return Err(err),
        };
        if housekeeping {
            // One clock reading for both: timers and periodics due by now.
            let now = crate::timer::monotonic_ns();
            self.fire_timers(now, data);
            self.run_periodics_if_due(now, data);
            if self.timers.is_sparse() {
                self.pending |= SHRINK;
            }
        }
        Ok(dispatched)
    }

    fn poll_timeout(&mut self, timeout: Option<Duration>) -> Option<Duration> {
        let now = crate::timer::monotonic_ns();
        let mut until_ns = self.timers.next_deadline_ns().map(|when| when.saturating_sub(now));
        if !self.periodics.is_empty() {
            let due_ns = if self.periodic_asap {
                0
            } else {
                self.last_periodic_ns
                    .saturating_add(nanos(self.precision))
                    .saturating_sub(now)
            };
            until_ns = Some(until_ns.map_or(due_ns, |d| d.min(due_ns)));
        }
        let until = until_ns.map(Duration::from_nanos);
        match (timeout, until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Hand each polled event to its registration's handler. Events carry
    /// generation-checked tokens, resolved before any handler ran: a registration
    /// removed earlier in the batch gets nothing, and neither does a newcomer that
    /// reused its slot or its fd number.
    fn dispatch_polled(&mut self, data: &mut D) -> usize {
        let polled = self.batch.len();
        if polled <= 1 {
            // A quiet loop's usual batch: dispatched in place, as lending the
            // batch out costs more than the one bounds check it saves.
            return match self.batch.first() {
                Some(&event) => self.dispatch_one(event.token(), event.events(), data),
                None => 0,
            };
        }
        // Handlers cannot poll meanwhile (the loop refuses `run_once` inside a
        // callback), so the batch is lent out and walked as a local slice. (If a
        // handler panics, the batch is gone, but so is the loop: it refuses to run
        // again.)
        let batch = std::mem::take(&mut self.batch);
        let mut dispatched = 0;
        for event in batch.get(..polled).unwrap_or_default() {
            dispatched += self.dispatch_one(event.token(), event.events(), data);
        }
        // What this replaces is the empty `Vec` that `take` left: nothing to free.
        std::mem::forget(std::mem::replace(&mut self.batch, batch));
        dispatched
    }

    /// Hand one event to its registration's handler, if the registration still
    /// exists; returns how many handlers ran (0 or 1).
    #[inline(always)]
    fn dispatch_one(&mut self, token: Token, events: Events, data: &mut D) -> usize {
        let Some(slot) = self.slots.get_mut(token.index as usize) else {
            return 0;
        };
        if slot.generation != token.generation {
            return 0;
        }
        let Some(mut entry) = slot.entry.take() else { return 0 };
        if let Err(err) = entry.dispatch(&mut Ctx { lp: self, data }, token, events) {
            self.handler_failed(token, &*entry, events, err);
        }
        self.put_back(token, entry, events);
        1
    }

    /// Log a handler's error; if the registration is still live and its fd no longer
    /// names its file (a read on a closed fd fails with `EBADF` on every event),
    /// drop it, without closing the number. Takes the entry and the error as they
    /// are, so that dispatch keeps nothing of the failure in a register: all of it
    /// is read, and the error dropped, out of line.
    #[cold]
    #[inline(never)]
    fn handler_failed(&mut self, token: Token, entry: &dyn Entry<D>, events: Events, err: io::Error) {
        let fd = entry.raw_fd();
        log::error!(
            "{}: handler for fd {fd} ({token}) failed on {events}: {err}",
            self.backend
        );
        if self.contains(token) && !self.still_names_its_file(token) {
            self.drop_stale(token);
        }
    }

    #[inline(always)]
    fn put_back(&mut self, token: Token, mut entry: BoxedEntry<D>, events: Events) {
        let slot = &mut self.slots[token.index as usize];
        if slot.generation != token.generation {
            self.removed_while_running(token, entry);
            return;
        }
        if !self.replacements.is_empty()
            && let Some(at) = self.replacements.iter().position(|(t, _)| *t == token)
        {
            let (_, replace) = self.replacements.swap_remove(at);
            entry = replace(entry.into_source());
        }
        // The slot is empty: its entry is out here, and nothing else fills a live
        // slot. Forgetting the `None` it held spares the compiler's drop check.
        debug_assert!(slot.entry.is_none(), "a live slot was filled while its handler ran");
        std::mem::forget(slot.entry.replace(entry));
        if events.contains(POLL_NVAL) {
            self.drop_closed(token);
        }
    }

    /// The handler removed its own registration: now its source may close, if its
    /// fd still names the file it had at `add` (or the kernel said so at the
    /// unregister).
    #[cold]
    #[inline(never)]
    fn removed_while_running(&mut self, token: Token, entry: BoxedEntry<D>) {
        match self.running_removed.take() {
            Some((removed, fd, identity)) if removed == token && !identity.holds_at(fd) => self.lost(token, fd, entry),
            _ => drop(entry),
        }
        self.retry_unreleased();
    }

    /// The handler has seen `POLL_NVAL`: unless it removed the registration
    /// itself, drop it without closing the (already closed) fd.
    #[cold]
    #[inline(never)]
    fn drop_closed(&mut self, token: Token) {
        if self.contains(token) {
            self.drop_stale(token);
        }
    }

    fn fire_timers(&mut self, now: u64, data: &mut D) {
        if self.timers.is_empty() {
            return;
        }
        // Timers set by these callbacks wait for the next round.
        for _ in 0..self.timers.round() {
            let Some((id, mut callback)) = self.timers.pop_expired_ns(now) else {
                break;
            };
            callback(&mut Ctx { lp: self, data });
            self.timers.finish_ns(id, callback, now);
        }
    }

    fn run_periodics_if_due(&mut self, now: u64, data: &mut D) {
        if self.periodics.is_empty() {
            self.periodic_asap = false;
            return;
        }
        if !self.periodic_asap && now.saturating_sub(self.last_periodic_ns) < nanos(self.precision) {
            return;
        }
        self.periodic_asap = false;
        self.last_periodic_ns = now;
        // Callbacks may add or remove periodics (themselves included): walk a snapshot.
        let ids: Vec<PeriodicId> = self.periodics.iter().map(|p| p.id).collect();
        for id in ids {
            let Some(mut callback) = self
                .periodics
                .iter_mut()
                .find(|p| p.id == id)
                .and_then(|p| p.callback.take())
            else {
                continue;
            };
            callback(&mut Ctx { lp: self, data });
            if let Some(p) = self.periodics.iter_mut().find(|p| p.id == id) {
                p.callback = Some(callback);
            }
        }
    }
}

/// [`file_id::release`] each of `held`, keeping those whose numbers still name
/// other files.
fn retry_release(held: &mut Vec<(RawFd, Box<dyn Any>)>) {
    for (fd, source) in std::mem::take(held) {
        if let Err(source) = file_id::release(fd, source) {
            held.push((fd, source));
        }
    }
}

impl<D> Drop for EventLoop<D> {
    /// The registrations' sources close first; then the sources held back because
    /// their numbers named other files are dropped, where those numbers are free
    /// now. The rest are leaked, with a warning: dropping one would close a file
    /// that is not its own.
    fn drop(&mut self) {
        self.slots.clear();
        if self.unreleased.is_empty() {
            return;
        }
        retry_release(&mut self.unreleased);
        for (fd, source) in self.unreleased.drain(..) {
            log::warn!(
                "{}: a source registered on fd {fd}, closed behind the loop's back, is leaked: \
                 fd {fd} names another file now, which dropping it would close",
                self.backend
            );
            std::mem::forget(source);
        }
    }
}

impl<D> fmt::Debug for EventLoop<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLoop")
            .field("backend", &self.backend)
            .field("registered", &self.registered)
            .field("timers", &self.timers.len())
            .field("periodics", &self.periodics.len())
            .finish()
    }
}

/// Read and clear a socket's pending error (`SO_ERROR`): the original's
/// `get_sock_error`. `Ok(None)` when there is none.
pub fn get_sock_error(sock: &impl AsFd) -> io::Result<Option<io::Error>> {
    socket2::SockRef::from(sock).take_error()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::POLL_IN;
    use std::net::UdpSocket;
    use std::rc::Rc;

    fn idle(_: &mut Ctx<'_, ()>, _: &mut Rc<UdpSocket>, _: Token, _: Events) -> io::Result<()> {
        Ok(())
    }

    proptest::proptest! {
        /// Registrations and timers come and go in bursts, so that the tables grow and
        /// shrink many times: every live token and timer id keeps working, and no
        /// stale one ever matches again.
        #[test]
        fn tokens_and_timer_ids_survive_shrinking(ops in proptest::collection::vec(0u8..6, 1..400)) {
            let _guard = crate::poller::poll::tests::lock_fd_numbers();
            let mut lp: EventLoop = EventLoop::new().unwrap();
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            let (mut live, mut gone) = (Vec::new(), Vec::new());
            let (mut timers, mut fired_or_cancelled) = (Vec::new(), Vec::new());
            for (step, op) in ops.into_iter().enumerate() {
                match op {
                    0 | 1 => {
                        for _ in 0..(1 + step % 7) {
                            live.push(lp.add(Rc::new(sock.try_clone().unwrap()), POLL_IN, idle).unwrap());
                        }
                    }
                    2 => {
                        // Remove most, from the front or the back by turns.
                        let keep = live.len() / 8;
                        let removed: Vec<Token> = if step % 2 == 0 {
                            live.drain(keep..).collect()
                        } else {
                            live.drain(..live.len() - keep).collect()
                        };
                        for token in removed {
                            lp.remove(token).unwrap();
                            gone.push(token);
                        }
                    }
                    3 => timers.push(lp.add_timer(Duration::from_secs(60), |_| {})),
                    4 => {
                        let keep = timers.len() / 8;
                        for id in timers.drain(keep..) {
                            proptest::prop_assert!(lp.cancel_timer(id));
                            fired_or_cancelled.push(id);
                        }
                    }
                    _ => {
                        lp.run_once(Some(Duration::ZERO), &mut ()).unwrap();
                    }
                }
                proptest::prop_assert_eq!(lp.len(), live.len());
                proptest::prop_assert_eq!(lp.timer_count(), timers.len());
            }
            lp.run_once(Some(Duration::ZERO), &mut ()).unwrap();
            for token in &live {
                proptest::prop_assert!(lp.contains(*token));
            }
            for token in &gone {
                proptest::prop_assert!(!lp.contains(*token), "stale {:?} matches", token);
            }
            for id in &timers {
                proptest::prop_assert!(lp.timer_deadline(*id).is_some());
            }
            for id in &fired_or_cancelled {
                proptest::prop_assert!(lp.timer_deadline(*id).is_none());
                proptest::prop_assert!(!lp.cancel_timer(*id), "stale {:?} cancelled something", id);
            }
        }
    }

    #[test]
    fn tables_shrink_after_a_burst_and_stale_tokens_stay_stale() {
        // Thousands of fds: the other tests must not be handed numbers meanwhile.
        let _guard = crate::poller::poll::tests::lock_fd_numbers();
        let mut lp: EventLoop = EventLoop::new().unwrap();
        let keep = Rc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let kept = lp.add(Rc::clone(&keep), POLL_IN, idle).unwrap();
        // One socket registered many times over (each an fd of its own via dup), as a
        // burst of connections would be.
        let burst: Vec<Token> = (0..2000)
            .map(|_| lp.add(Rc::new(keep.try_clone().unwrap()), POLL_IN, idle).unwrap())
            .collect();
        let timers: Vec<TimerId> = (0..2000)
            .map(|_| lp.add_timer(Duration::from_secs(60), |_| {}))
            .collect();
        let (slots, fds) = (lp.slots.capacity(), lp.fd_tokens.capacity());
        for &token in &burst {
            lp.remove(token).unwrap();
        }
        for &id in &timers {
            lp.cancel_timer(id);
        }
        lp.run_once(Some(Duration::ZERO), &mut ()).unwrap();
        assert!(
            lp.slots.capacity() < slots / 8,
            "slots {} of {slots}",
            lp.slots.capacity()
        );
        assert!(
            lp.fd_tokens.capacity() < fds / 8,
            "fd index {} of {fds}",
            lp.fd_tokens.capacity()
        );
        assert!(lp.timers.capacity() < 2000 / 8, "timers {}", lp.timers.capacity());
        assert!(lp.contains(kept), "the registration that stayed is intact");
        // New registrations reuse the cut-off slot numbers with new generations.
        let again: Vec<Token> = (0..2000)
            .map(|_| lp.add(Rc::new(keep.try_clone().unwrap()), POLL_IN, idle).unwrap())
            .collect();
        for token in &burst {
            assert!(!lp.contains(*token), "stale {token:?} matches a new registration");
            assert!(!again.contains(token), "{token:?} issued twice");
        }
        for id in &timers {
            assert!(!lp.cancel_timer(*id), "stale {id:?} cancelled something");
        }
    }
}
