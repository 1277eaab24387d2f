//! The TCP relay: one [`Conn`] per client connection, owning both sockets.
//!
//! A connection moves through [`Stage`]s: the server reads the encrypted header
//! (the target address), the local reads the SOCKS5 handshake; then the
//! destination is resolved and connected without blocking; then bytes are
//! pumped both ways. The original's rules hold:
//!
//! - **Back-pressure**: a side is not read while the other side's queue is full
//!   (`POLL_IN` dropped), and `POLL_OUT` is watched only while a queue is non-empty.
//! - **Half-close is relayed**: end-of-file from one side becomes a `shutdown(Write)`
//!   on the other once its queue drains; the connection ends when both directions have.
//! - **Idle timeout**: one loop timer per connection, re-armed lazily: activity only
//!   records the time, and the timer, when it fires early, re-arms itself for the rest.
//! - **Probes learn nothing**: a client that fails authentication is read and
//!   ignored, then closed one idle timeout after it was accepted, whatever it sent
//!   and whenever: the close time is the same whether authentication failed on the
//!   first byte, on a late one, or never could (too few bytes), so it does not tell
//!   how many bytes the server needed (which would name the method and salt size).
//! - **Bulk bytes are not copied in user space**: once a direction carries bulk
//!   traffic ([`Pending::note_read`]), plaintext is read (`readv`) straight into the
//!   payload slots of the queue it is sealed in, and ciphertext into the queue it is
//!   opened in; small reads go through the worker's scratch buffer, so that quiet
//!   connections hold no large buffers.

use std::io::{self, IoSliceMut, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use evloop::{Ctx, EventLoop, Events, POLL_IN, POLL_NULL, POLL_OUT, TimerId, Token, get_sock_error};
use socket2::{Domain, Socket, Type};

use super::buffer::{Pending, READ_LEN};
use super::codec::{LocalCodec, ServerCodec};
use super::udp::AssociateGrant;
use super::worker::Worker;
use super::{Role, SharedRef};
use crate::crypto::ChunkSealer;
use crate::dns::{Client, QueryId, Resolver};
use crate::protocol::Address;
use crate::protocol::socks5::{self, Command, Reply};

/// How many connections one readiness event of a listener accepts at most, so
/// that a flood of connects cannot starve established connections.
const ACCEPT_BATCH: usize = 64;
/// After `EMFILE`/`ENFILE` the listener rests this long instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Names a connection across its lifetime: a slab key plus a serial number, so
/// that a late callback for a closed connection never touches its successor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnId {
    key: usize,
    serial: u64,
}

/// Which socket of a connection an event is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Client,
    Remote,
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Server: reading the encrypted request until the target address is known.
    ServerHeader,
    /// Local: waiting for the SOCKS5 greeting.
    SocksGreeting,
    /// Local: waiting for the SOCKS5 request.
    SocksRequest,
    /// Local: a UDP ASSOCIATE's control connection, held open until the client closes it.
    UdpAssociate,
    /// Resolving the destination's name.
    Resolving,
    /// Connecting to the destination (server) or to the ssserver (local).
    Connecting,
    /// Relaying both ways.
    Streaming,
    /// Server: the client failed authentication; read and ignore until the timeout.
    Draining,
    /// Local: a SOCKS5 error reply is being flushed; close once it is out.
    Closing,
}

enum Codec {
    None,
    Server(Box<ServerCodec>),
    Local(Box<LocalCodec>),
}

/// One relayed TCP connection.
pub struct Conn {
    serial: u64,
    client: Rc<TcpStream>,
    client_token: Token,
    peer: SocketAddr,
    remote: Option<Rc<TcpStream>>,
    remote_token: Option<Token>,
    stage: Stage,
    codec: Codec,
    /// Bytes for the destination side, in its wire format.
    up: Pending,
    /// Bytes for the client side, in its wire format.
    down: Pending,
    /// Local: the SOCKS5 handshake bytes read so far.
    handshake: Vec<u8>,
    target: Option<Address>,
    client_eof: bool,
    remote_eof: bool,
    client_write_shut: bool,
    remote_write_shut: bool,
    last_active: Instant,
    /// When the client was accepted: a server's pre-authentication deadline counts from
    /// here, through the drain state, so that no byte the client sends can move it.
    accepted: Instant,
    stage_started: Instant,
    timer: Option<TimerId>,
    query: Option<QueryId>,
    /// Local: the UDP ASSOCIATE this control connection holds, given up when it closes.
    udp_grant: Option<AssociateGrant>,
}

impl Conn {
    fn deadline(&self, shared: &SharedRef) -> Instant {
        match self.stage {
            Stage::Resolving | Stage::Connecting => {
                (self.stage_started + shared.connect_timeout).min(self.last_active + shared.idle_timeout)
            }
            // Before authentication the deadline is fixed at accept: a failed client
            // cannot keep itself alive by sending more junk, a header must be complete
            // within the timeout however it trickles in (slowloris), and failing
            // authentication (entering Draining) must not restart the clock, or the close
            // time would tell how many bytes the check needed.
            Stage::Draining | Stage::ServerHeader => self.accepted + shared.idle_timeout,
            // The local's SOCKS5 handshake: the same rule per step.
            Stage::SocksGreeting | Stage::SocksRequest => self.stage_started + shared.idle_timeout,
            _ => self.last_active + shared.idle_timeout,
        }
    }

    fn set_stage(&mut self, stage: Stage) {
        self.stage = stage;
        self.stage_started = Instant::now();
    }

    fn describe(&self) -> String {
        match &self.target {
            Some(t) => format!("{} -> {t}", self.peer),
            None => self.peer.to_string(),
        }
    }
}

/// Register a listener on `lp`: every accepted client becomes a [`Conn`].
pub fn add_listener(lp: &mut EventLoop<Worker>, listener: TcpListener) -> io::Result<Token> {
    listener.set_nonblocking(true)?;
    lp.add(listener, POLL_IN, on_accept)
}

fn on_accept(cx: &mut Ctx<'_, Worker>, listener: &mut TcpListener, me: Token, _: Events) -> io::Result<()> {
    for _ in 0..ACCEPT_BATCH {
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Err(e) = open_conn(cx, stream, peer) {
                    log::warn!("tcp: accepting {peer}: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted || e.kind() == io::ErrorKind::ConnectionAborted => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                ) =>
            {
                // Out of descriptors: the pending connection stays queued and the
                // listener stays readable. Rest instead of spinning on it.
                log::warn!(
                    "tcp: accept on {}: {e}; pausing accepts for {ACCEPT_BACKOFF:?}",
                    listener_name(listener)
                );
                cx.lp.modify(me, POLL_NULL)?;
                cx.lp.add_timer(ACCEPT_BACKOFF, move |cx| {
                    if cx.lp.contains(me) && !cx.data.shutting_down() {
                        let _ = cx.lp.modify(me, POLL_IN);
                    }
                });
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn listener_name(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map_or_else(|_| "listener".to_string(), |a| a.to_string())
}

fn open_conn(cx: &mut Ctx<'_, Worker>, stream: TcpStream, peer: SocketAddr) -> io::Result<()> {
    stream.set_nonblocking(true)?;
    stream.set_nodelay(true)?;
    let shared = cx.data.shared.clone();
    let (stage, codec, target) = match &shared.role {
        Role::Server => {
            let check = shared.clone();
            let codec = ServerCodec::new(&shared.key, Box::new(move |salt| check.fresh_salt(salt)))?;
            (Stage::ServerHeader, Codec::Server(Box::new(codec)), None)
        }
        Role::Local { tunnel: None, .. } => (Stage::SocksGreeting, Codec::None, None),
        Role::Local {
            tunnel: Some(target), ..
        } => (Stage::Connecting, Codec::None, Some(target.clone())),
    };
    let client = Rc::new(stream);
    let serial = cx.data.next_serial();
    let entry = cx.data.conns.vacant_entry();
    let id = ConnId {
        key: entry.key(),
        serial,
    };
    let client_token = cx.lp.add(
        Rc::clone(&client),
        POLL_IN,
        move |cx: &mut Ctx<'_, Worker>, _: &mut Rc<TcpStream>, _, ev| on_event(cx, id, Side::Client, ev),
    )?;
    let now = Instant::now();
    entry.insert(Conn {
        serial,
        client,
        client_token,
        peer,
        remote: None,
        remote_token: None,
        stage,
        codec,
        up: Pending::default(),
        down: Pending::default(),
        handshake: Vec::new(),
        target: target.clone(),
        client_eof: false,
        remote_eof: false,
        client_write_shut: false,
        remote_write_shut: false,
        last_active: now,
        accepted: now,
        stage_started: now,
        timer: None,
        query: None,
        udp_grant: None,
    });
    log::debug!("tcp: {peer} connected ({})", id.key);
    arm_timer(cx.lp, cx.data, id, shared.idle_timeout);
    if let Some(target) = target {
        // Tunnel mode: the destination is fixed, go straight to the server.
        start_local_stream(cx, id, target, Vec::new());
    }
    Ok(())
}

fn conn_mut(worker: &mut Worker, id: ConnId) -> Option<&mut Conn> {
    worker.conns.get_mut(id.key).filter(|c| c.serial == id.serial)
}

fn arm_timer(lp: &mut EventLoop<Worker>, worker: &mut Worker, id: ConnId, after: Duration) {
    let Some(conn) = conn_mut(worker, id) else { return };
    conn.timer = Some(lp.add_timer(after, move |cx| on_timer(cx, id)));
}

fn on_timer(cx: &mut Ctx<'_, Worker>, id: ConnId) {
    let shared = cx.data.shared.clone();
    let Some(conn) = conn_mut(cx.data, id) else { return };
    conn.timer = None;
    let deadline = conn.deadline(&shared);
    let now = Instant::now();
    if now >= deadline {
        let why = match conn.stage {
            Stage::Resolving | Stage::Connecting => "connect timed out",
            Stage::Draining => "authentication failed earlier; idle timeout",
            _ => "idle timeout",
        };
        if conn.stage == Stage::Connecting && matches!(shared.role, Role::Local { .. }) {
            socks_fail(cx, id, Reply::HostUnreachable, why);
        } else {
            close(cx, id, why);
        }
    } else {
        // A stream that went quiet right after bulk traffic still holds its hot
        // queues' storage: an idle connection should hold none.
        conn.up.release_now();
        conn.down.release_now();
        arm_timer(cx.lp, cx.data, id, deadline - now);
    }
}

/// Tear a connection down: unregister and close both sockets, cancel its timer
/// and any pending lookup.
pub fn close(cx: &mut Ctx<'_, Worker>, id: ConnId, why: &str) {
    let Some(conn) = conn_mut(cx.data, id) else { return };
    log::debug!("tcp: {} closed: {why}", conn.describe());
    let conn = cx.data.conns.remove(id.key);
    let _ = cx.lp.remove(conn.client_token);
    if let Some(t) = conn.remote_token {
        let _ = cx.lp.remove(t);
    }
    if let Some(timer) = conn.timer {
        cx.lp.cancel_timer(timer);
    }
    if let Some(q) = conn.query {
        cx.data.resolver.cancel(q);
    }
    if cx.data.conns.is_empty() {
        // After a burst, give the connection table's memory back.
        cx.data.conns.shrink_to_fit();
    }
    if cx.data.shutting_down() && cx.data.conns.is_empty() {
        log::info!("worker: last connection closed; stopping");
        cx.lp.stop();
    }
}

fn on_event(cx: &mut Ctx<'_, Worker>, id: ConnId, side: Side, events: Events) -> io::Result<()> {
    let Some(conn) = conn_mut(cx.data, id) else {
        return Ok(());
    };
    conn.last_active = Instant::now();
    let outcome = match (side, conn.stage) {
        (Side::Remote, Stage::Connecting) => finish_connect(cx, id, events),
        (Side::Client, _) => read_client(cx, id, events),
        (Side::Remote, _) => read_remote(cx, id, events),
    };
    match outcome {
        Ok(()) => settle(cx, id),
        Err(e) => close(cx, id, &e.to_string()),
    }
    Ok(())
}

/// Read what one socket has into `buf`. Returns the bytes read, `Some(0)` at
/// end-of-file, `None` when the socket had nothing.
fn read_some(stream: &TcpStream, buf: &mut [u8]) -> io::Result<Option<usize>> {
    retrying(|| (&*stream).read(buf))
}

/// As [`read_some`], into several buffers in turn (one `readv`).
fn read_some_vectored(stream: &TcpStream, bufs: &mut [IoSliceMut<'_>]) -> io::Result<Option<usize>> {
    retrying(|| (&*stream).read_vectored(bufs))
}

/// Run `read` again while a signal interrupts it; `None` when it would block.
fn retrying(mut read: impl FnMut() -> io::Result<usize>) -> io::Result<Option<usize>> {
    loop {
        match read() {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// How much to read at once from a side whose bytes get encrypted: whole chunks
/// only, so a read never ends in a tiny extra chunk (64 KiB would be four SIP004
/// chunks of 0x3FFF plus 4 bytes, or one SIP022 chunk of 0xFFFF plus 1 byte).
fn sealing_read_len(scratch: usize, max_payload: usize) -> usize {
    (scratch / max_payload).max(1) * max_payload.min(scratch)
}

/// One read's outcome: bytes read (0 at end-of-file) and how many were asked for.
struct Got {
    n: usize,
    asked: usize,
}

/// Count one read of a direction's read loop into `total`. False when the loop is
/// done: the read would have blocked, met end-of-file (noted in `eof`), or came
/// back short (the socket is drained).
fn tally(got: Option<Got>, total: &mut usize, eof: &mut bool) -> bool {
    let Some(Got { n, asked }) = got else { return false };
    if n == 0 {
        *eof = true;
        return false;
    }
    *total += n;
    n >= asked
}

/// Read ciphertext into `queue`'s raw bytes, straight into its storage when the
/// stream is busy (else through `scratch`: small reads should not make every
/// connection hold a large buffer). Opening it is the caller's.
fn read_ciphertext(stream: &TcpStream, scratch: &mut [u8], queue: &mut Pending) -> io::Result<Option<Got>> {
    if queue.is_hot() {
        let room = &mut queue.room(READ_LEN)[..READ_LEN];
        let Some(n) = read_some(stream, room)? else {
            return Ok(None);
        };
        queue.add_raw(n);
        return Ok(Some(Got { n, asked: READ_LEN }));
    }
    read_through(stream, scratch, |data| {
        queue.push_raw(data);
        Ok(())
    })
}

/// Read plaintext that `sealer` seals into `queue`: into the payload slots of the
/// queue's storage, then sealed where it landed, so that the bytes are not copied.
fn read_sealing(stream: &TcpStream, queue: &mut Pending, mut sealer: ChunkSealer<'_>) -> io::Result<Option<Got>> {
    let asked = sealing_read_len(READ_LEN, sealer.max_payload());
    let sealed_len = sealer.sealed_len(asked);
    let room = &mut queue.room(sealed_len)[..sealed_len];
    let mut slots = sealer.slots(room);
    let Some(n) = read_some_vectored(stream, &mut slots)? else {
        return Ok(None);
    };
    drop(slots);
    let produced = sealer.seal_read(room, n);
    queue.commit(produced);
    Ok(Some(Got { n, asked }))
}

/// Read through `scratch` and hand the bytes to `take`.
fn read_through(
    stream: &TcpStream,
    scratch: &mut [u8],
    take: impl FnOnce(&[u8]) -> io::Result<()>,
) -> io::Result<Option<Got>> {
    let Some(n) = read_some(stream, scratch)? else {
        return Ok(None);
    };
    take(&scratch[..n])?;
    Ok(Some(Got {
        n,
        asked: scratch.len(),
    }))
}

/// Read what the client sent, at most two reads per event (fairness).
fn read_client(cx: &mut Ctx<'_, Worker>, id: ConnId, events: Events) -> io::Result<()> {
    let worker = &mut *cx.data;
    let seal_len = sealing_read_len(worker.scratch.len(), worker.shared.key.method().max_payload());
    let Some(conn) = worker.conns.get_mut(id.key).filter(|c| c.serial == id.serial) else {
        return Ok(());
    };
    if !(events.is_readable() || events.is_hup() || events.is_error()) || conn.client_eof {
        return Ok(());
    }
    let mut total = 0;
    for _ in 0..2 {
        if conn.up.is_full() {
            break;
        }
        let stream = &*conn.client;
        let got = match conn.stage {
            Stage::Draining | Stage::Closing => read_through(stream, &mut worker.scratch, |_| Ok(()))?,
            Stage::SocksGreeting | Stage::SocksRequest | Stage::UdpAssociate => {
                read_through(stream, &mut worker.scratch, |data| {
                    conn.handshake.extend_from_slice(data);
                    Ok(())
                })?
            }
            _ => match &mut conn.codec {
                Codec::Server(codec) => {
                    let got = read_ciphertext(stream, &mut worker.scratch, &mut conn.up)?;
                    if let Err(e) = conn.up.transform_raw(|buf, out, raw| codec.up(buf, out, raw)) {
                        if conn.stage != Stage::ServerHeader {
                            // Authenticated before: an error now is tampering, not a probe.
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("from the client: {e}"),
                            ));
                        }
                        // A probe: say nothing, change nothing it can see; read and ignore
                        // until the timeout.
                        log::debug!("tcp: {}: {e}; ignoring it until the timeout", conn.peer);
                        worker.rejected.streams += 1;
                        conn.set_stage(Stage::Draining);
                        conn.up = Pending::default();
                        conn.down = Pending::default();
                    }
                    got
                }
                Codec::Local(codec) => match codec.up_sealer().filter(|_| conn.up.is_hot()) {
                    Some(sealer) => read_sealing(stream, &mut conn.up, sealer)?,
                    None => read_through(stream, &mut worker.scratch[..seal_len], |data| {
                        conn.up.append_with(|out| codec.up(data, out)).map_err(io::Error::from)
                    })?,
                },
                // Tunnel mode before the codec exists cannot happen: it is made at accept.
                Codec::None => read_through(stream, &mut worker.scratch, |data| {
                    conn.handshake.extend_from_slice(data);
                    Ok(())
                })?,
            },
        };
        if !tally(got, &mut total, &mut conn.client_eof) {
            break;
        }
    }
    conn.up.note_read(total, conn.client_eof);
    match conn.stage {
        Stage::ServerHeader => parse_server_header(cx, id),
        Stage::SocksGreeting | Stage::SocksRequest => parse_socks(cx, id),
        Stage::UdpAssociate => {
            conn.handshake.clear();
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Read what the destination (server) or the ssserver (local) sent, at most two
/// reads per event.
fn read_remote(cx: &mut Ctx<'_, Worker>, id: ConnId, events: Events) -> io::Result<()> {
    let worker = &mut *cx.data;
    let Some(conn) = worker.conns.get_mut(id.key).filter(|c| c.serial == id.serial) else {
        return Ok(());
    };
    if !(events.is_readable() || events.is_hup() || events.is_error()) || conn.remote_eof {
        return Ok(());
    }
    let Some(remote) = conn.remote.clone() else {
        return Ok(());
    };
    let seal_len = sealing_read_len(worker.scratch.len(), worker.shared.key.method().max_payload());
    let mut total = 0;
    for _ in 0..2 {
        if conn.down.is_full() {
            break;
        }
        let got = match &mut conn.codec {
            Codec::Server(codec) => match codec.down_sealer().filter(|_| conn.down.is_hot()) {
                Some(sealer) => read_sealing(&remote, &mut conn.down, sealer)?,
                None => read_through(&remote, &mut worker.scratch[..seal_len], |data| {
                    let shared = &worker.shared;
                    conn.down
                        .append_with(|out| codec.down(&shared.key, &mut |salt| shared.fresh_salt(salt), data, out))
                        .map_err(io::Error::from)
                })?,
            },
            Codec::Local(codec) => {
                let got = read_ciphertext(&remote, &mut worker.scratch, &mut conn.down)?;
                conn.down
                    .transform_raw(|buf, out, raw| codec.down(buf, out, raw))
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("from the server: {e}")))?;
                got
            }
            Codec::None => read_through(&remote, &mut worker.scratch, |_| Ok(()))?,
        };
        if !tally(got, &mut total, &mut conn.remote_eof) {
            break;
        }
    }
    conn.down.note_read(total, conn.remote_eof);
    Ok(())
}

fn parse_server_header(cx: &mut Ctx<'_, Worker>, id: ConnId) -> io::Result<()> {
    let Some(conn) = conn_mut(cx.data, id) else {
        return Ok(());
    };
    let Codec::Server(codec) = &conn.codec else {
        return Ok(());
    };
    let parsed = if codec.target_in_stream() {
        match Address::parse(conn.up.as_slice()) {
            Ok(Some((addr, n))) => {
                conn.up.consume(n);
                Some(addr)
            }
            Ok(None) => None,
            Err(e) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad target address: {e}"),
                ));
            }
        }
    } else {
        match codec.header_target().map(Address::parse) {
            Some(Ok(Some((addr, _)))) => Some(addr),
            Some(Ok(None)) => return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated target address")),
            Some(Err(e)) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad target address: {e}"),
                ));
            }
            None => None,
        }
    };
    if let Some(target) = parsed {
        conn.target = Some(target.clone());
        log::debug!("tcp: {} requests {target}", conn.peer);
        connect_target(cx, id, target);
    }
    Ok(())
}

fn parse_socks(cx: &mut Ctx<'_, Worker>, id: ConnId) -> io::Result<()> {
    let Some(conn) = conn_mut(cx.data, id) else {
        return Ok(());
    };
    if conn.stage == Stage::SocksGreeting {
        let Some((greeting, n)) = socks5::parse_greeting(&conn.handshake).map_err(invalid)? else {
            return Ok(());
        };
        conn.handshake.drain(..n);
        let method = greeting.choose_method();
        conn.down.append_with(|out| socks5::write_method_selection(method, out));
        if method == socks5::METHOD_NO_ACCEPTABLE {
            conn.set_stage(Stage::Closing);
            return Ok(());
        }
        conn.set_stage(Stage::SocksRequest);
    }
    let parsed = match socks5::parse_request(&conn.handshake) {
        Ok(parsed) => parsed,
        Err(e) => {
            let reply = e.reply();
            log::info!("tcp: {}: {e}", conn.peer);
            match reply {
                Some(reply) => {
                    conn.down
                        .append_with(|out| socks5::write_reply(reply, &socks5::UNSPECIFIED_BIND, out));
                    conn.set_stage(Stage::Closing);
                    return Ok(());
                }
                None => return Err(invalid(e)),
            }
        }
    };
    let Some((request, n)) = parsed else { return Ok(()) };
    let rest = conn.handshake.split_off(n);
    conn.handshake = Vec::new();
    match request.command {
        Command::Connect => {
            conn.target = Some(request.address.clone());
            start_local_stream(cx, id, request.address, rest);
        }
        Command::UdpAssociate => {
            let bind = cx.data.udp_bind.map(Address::from);
            let shared = cx.data.shared.clone();
            let Some(conn) = conn_mut(cx.data, id) else {
                return Ok(());
            };
            match bind {
                Some(bind) => {
                    conn.down
                        .append_with(|out| socks5::write_reply(Reply::Succeeded, &bind, out));
                    conn.set_stage(Stage::UdpAssociate);
                    conn.udp_grant = Some(AssociateGrant::new(&shared, conn.peer.ip()));
                }
                None => {
                    conn.down.append_with(|out| {
                        socks5::write_reply(Reply::CommandNotSupported, &socks5::UNSPECIFIED_BIND, out)
                    });
                    conn.set_stage(Stage::Closing);
                }
            }
        }
        Command::Bind => {
            conn.down
                .append_with(|out| socks5::write_reply(Reply::CommandNotSupported, &socks5::UNSPECIFIED_BIND, out));
            conn.set_stage(Stage::Closing);
        }
    }
    Ok(())
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Local: make the codec for `target`, queue the request (with any bytes the
/// client already sent), and connect to the ssserver.
fn start_local_stream(cx: &mut Ctx<'_, Worker>, id: ConnId, target: Address, early: Vec<u8>) {
    let Role::Local { server, .. } = cx.data.shared.role.clone() else {
        return;
    };
    let shared = cx.data.shared.clone();
    let check = shared.clone();
    let codec = LocalCodec::new(
        &shared.key,
        target.to_bytes(),
        Box::new(move |salt| check.fresh_salt(salt)),
    );
    let Some(conn) = conn_mut(cx.data, id) else { return };
    let mut codec = match codec {
        Ok(codec) => codec,
        Err(e) => return socks_fail(cx, id, Reply::GeneralFailure, &e.to_string()),
    };
    if let Err(e) = conn.up.append_with(|out| codec.up(&early, out)) {
        return socks_fail(cx, id, Reply::GeneralFailure, &e.to_string());
    }
    conn.codec = Codec::Local(Box::new(codec));
    connect_to(cx, id, server);
}

/// Server: resolve the target if it is a name, then connect.
fn connect_target(cx: &mut Ctx<'_, Worker>, id: ConnId, target: Address) {
    match target {
        Address::Domain(name, port) => {
            if let Some(conn) = conn_mut(cx.data, id) {
                conn.set_stage(Stage::Resolving);
            }
            let query = Resolver::resolve(cx, Client::Stream(id.serial), &name, move |cx, result| {
                if let Some(conn) = conn_mut(cx.data, id) {
                    conn.query = None;
                }
                match result {
                    Ok(addrs) => connect_to(cx, id, SocketAddr::new(addrs[0], port)),
                    Err(e) => close(cx, id, &e.to_string()),
                }
            });
            if let (Some(q), Some(conn)) = (query, conn_mut(cx.data, id)) {
                conn.query = Some(q);
            }
        }
        other => match other.socket_addr() {
            Some(addr) => connect_to(cx, id, addr),
            None => close(cx, id, "unusable target address"),
        },
    }
}

fn connect_to(cx: &mut Ctx<'_, Worker>, id: ConnId, addr: SocketAddr) {
    // Info, not warn: one line per refused connection, and only key holders can ask.
    if let Some(why) = cx.data.shared.forbidden_reason(addr) {
        log::info!("tcp: {why}");
        return close(cx, id, "forbidden destination");
    }
    let stream = match start_connect(addr) {
        Ok(stream) => Rc::new(stream),
        Err(e) => {
            let reply = Reply::from_io_error(&e);
            return socks_fail(cx, id, reply, &format!("connect to {addr}: {e}"));
        }
    };
    let token = cx.lp.add(
        Rc::clone(&stream),
        POLL_OUT,
        move |cx: &mut Ctx<'_, Worker>, _: &mut Rc<TcpStream>, _, ev| on_event(cx, id, Side::Remote, ev),
    );
    let Some(conn) = conn_mut(cx.data, id) else {
        if let Ok(t) = token {
            let _ = cx.lp.remove(t);
        }
        return;
    };
    match token {
        Ok(token) => {
            conn.remote = Some(stream);
            conn.remote_token = Some(token);
            conn.set_stage(Stage::Connecting);
        }
        Err(e) => socks_fail(cx, id, Reply::GeneralFailure, &e.to_string()),
    }
}

fn start_connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking().cloexec(), None)?;
    socket.set_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

fn finish_connect(cx: &mut Ctx<'_, Worker>, id: ConnId, events: Events) -> io::Result<()> {
    let Some(conn) = conn_mut(cx.data, id) else {
        return Ok(());
    };
    let Some(remote) = conn.remote.clone() else {
        return Ok(());
    };
    if !(events.is_writable() || events.is_error() || events.is_hup()) {
        return Ok(());
    }
    if let Some(e) = get_sock_error(&*remote)? {
        let reply = Reply::from_io_error(&e);
        socks_fail(cx, id, reply, &format!("connect: {e}"));
        return Ok(());
    }
    conn.set_stage(Stage::Streaming);
    if let Codec::Local(_) = conn.codec
        && conn.target.is_some()
        && matches!(&cx.data.shared.role, Role::Local { tunnel: None, .. })
    {
        let bind = remote
            .local_addr()
            .map(Address::from)
            .unwrap_or(socks5::UNSPECIFIED_BIND);
        let conn = conn_mut(cx.data, id).expect("checked above");
        conn.down
            .append_with(|out| socks5::write_reply(Reply::Succeeded, &bind, out));
    }
    Ok(())
}

/// Local: tell the SOCKS5 client why (if it is still in the handshake), then close.
fn socks_fail(cx: &mut Ctx<'_, Worker>, id: ConnId, reply: Reply, why: &str) {
    let local_socks = matches!(&cx.data.shared.role, Role::Local { tunnel: None, .. });
    let Some(conn) = conn_mut(cx.data, id) else { return };
    if local_socks && conn.stage != Stage::Streaming {
        log::info!("tcp: {}: {why}", conn.describe());
        conn.down
            .append_with(|out| socks5::write_reply(reply, &socks5::UNSPECIFIED_BIND, out));
        if let Some(t) = conn.remote_token.take() {
            conn.remote = None;
            let _ = cx.lp.remove(t);
        }
        let Some(conn) = conn_mut(cx.data, id) else { return };
        conn.up = Pending::default();
        conn.set_stage(Stage::Closing);
        settle(cx, id);
    } else {
        close(cx, id, why);
    }
}

/// After any event: flush both queues, relay half-closes, decide whether the
/// connection is finished, and watch exactly the events it now needs.
fn settle(cx: &mut Ctx<'_, Worker>, id: ConnId) {
    let Some(conn) = conn_mut(cx.data, id) else { return };
    if let Err(e) = flush(conn) {
        return close(cx, id, &e.to_string());
    }
    let finished = match conn.stage {
        Stage::Streaming => conn.client_eof && conn.remote_eof && conn.up.is_empty() && conn.down.is_empty(),
        Stage::Closing => conn.down.is_empty() || conn.client_eof,
        // Before the destination exists, a client that leaves ends it.
        _ => conn.client_eof,
    };
    if finished {
        return close(cx, id, "done");
    }
    let streaming = conn.stage == Stage::Streaming;
    if streaming {
        if conn.client_eof && conn.up.is_empty() && !conn.remote_write_shut {
            conn.remote_write_shut = true;
            if let Some(r) = &conn.remote {
                let _ = r.shutdown(Shutdown::Write);
            }
        }
        if conn.remote_eof && conn.down.is_empty() && !conn.client_write_shut {
            conn.client_write_shut = true;
            let _ = conn.client.shutdown(Shutdown::Write);
        }
    }
    let reading_client = !conn.client_eof && !conn.up.is_full() && conn.stage != Stage::Closing;
    let mut client_mode = if reading_client { POLL_IN } else { POLL_NULL };
    if !conn.down.is_empty() {
        client_mode |= POLL_OUT;
    }
    let remote_mode = match conn.stage {
        Stage::Connecting => POLL_OUT,
        Stage::Streaming => {
            let mut mode = if !conn.remote_eof && !conn.down.is_full() {
                POLL_IN
            } else {
                POLL_NULL
            };
            if !conn.up.is_empty() {
                mode |= POLL_OUT;
            }
            mode
        }
        _ => POLL_NULL,
    };
    if conn.up.is_empty() {
        conn.up.release();
    }
    if conn.down.is_empty() {
        conn.down.release();
    }
    let (client_token, remote_token) = (conn.client_token, conn.remote_token);
    let mut result = cx.lp.modify(client_token, client_mode);
    if let Some(t) = remote_token {
        result = result.and(cx.lp.modify(t, remote_mode));
    }
    if let Err(e) = result {
        close(cx, id, &e.to_string());
    }
}

fn flush(conn: &mut Conn) -> io::Result<()> {
    if !conn.down.is_empty() {
        conn.down.flush_to(&*conn.client)?;
    }
    if conn.stage == Stage::Streaming
        && !conn.up.is_empty()
        && let Some(remote) = &conn.remote
    {
        conn.up.flush_to(&**remote)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::sealing_read_len;

    #[test]
    fn reads_to_be_sealed_are_whole_chunks() {
        assert_eq!(sealing_read_len(65_536, 0x3FFF), 4 * 0x3FFF);
        assert_eq!(sealing_read_len(65_536, 0xFFFF), 0xFFFF);
        assert_eq!(sealing_read_len(1_000, 0xFFFF), 1_000);
    }
}
