//! The UDP relay: datagrams, each carrying its own target address.
//!
//! Both programs keep one *association* per client address: an outbound socket
//! of its own, so that replies can be told apart and routed back. On the server
//! a client is a shadowsocks peer and the outbound socket talks to destinations;
//! on the local a client is a SOCKS5 application and the outbound socket talks
//! to the ssserver (connected to it, so that nobody else can reach it).
//! Associations idle for longer than the timeout are swept; when a worker holds
//! its maximum, the least recently active one makes room for a new client.
//!
//! Bad datagrams (wrong key, replayed salt, malformed address, forbidden
//! destination) are dropped with a debug line each and counted for the worker's
//! periodic summary; nothing is sent back.
//!
//! Replays and reflection: SIP004 salts we send enter the replay filter as
//! well as those we receive, so that a packet of ours sent back to us is a
//! replay. SIP022 packet ids are checked in one window per session: on the
//! server in [`SessionWindows`], shared by the workers; on the local one per
//! server session, so that two server sessions cannot replay each other.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::rc::Rc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use evloop::{Ctx, EventLoop, Events, POLL_IN, Token};
use slab::Slab;

use super::session_windows::{self, SessionWindows};
use super::worker::Worker;
use super::{Role, SharedRef};
use crate::crypto::{self, UdpCipher, UdpReceiver, UdpSender};
use crate::dns::{Client, Resolver};
use crate::protocol::Address;
use crate::protocol::socks5;

/// Datagrams handled per readiness event at most (fairness to other sockets).
const RECV_BATCH: usize = 64;
/// Largest datagram: the UDP maximum.
const MAX_DATAGRAM: usize = 65_536;
/// How often idle associations are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Local: server sessions (each with its replay window) kept per client session. One is the
/// rule; a server restart or a client address change starts another.
const MAX_SERVER_SESSIONS: usize = 8;

/// UDP state shared by all workers of one program.
pub struct UdpShared {
    /// Associations per worker at most (`udp_max_associations`).
    pub max_associations: usize,
    /// Server, SIP022: the replay windows of client sessions.
    pub sessions: SessionWindows,
    /// Local: the client addresses holding a UDP ASSOCIATE, with how many each holds.
    holders: Mutex<HashMap<IpAddr, usize>>,
}

impl UdpShared {
    /// At most `max_associations` associations per worker.
    pub fn new(max_associations: usize) -> UdpShared {
        UdpShared {
            max_associations,
            // A window outlives its association (see `session_windows`): room for a few
            // workers' worth of sessions.
            sessions: SessionWindows::new(max_associations.saturating_mul(4)),
            holders: Mutex::new(HashMap::new()),
        }
    }

    fn holders(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.holders.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Local: whether `ip` holds a UDP ASSOCIATE (a live control connection). Only such a
    /// client's datagrams are relayed, so that the UDP port is no open relay for anyone who
    /// can reach it.
    pub fn holds_association(&self, ip: IpAddr) -> bool {
        self.holders().contains_key(&ip)
    }
}

/// Local: a client's UDP ASSOCIATE, held by its control connection; the client's datagrams
/// are refused once the last one it holds is dropped.
pub struct AssociateGrant {
    shared: SharedRef,
    ip: IpAddr,
}

impl AssociateGrant {
    /// Grants `ip` UDP relaying until the grant is dropped.
    pub fn new(shared: &SharedRef, ip: IpAddr) -> AssociateGrant {
        *shared.udp_shared.holders().entry(ip).or_insert(0) += 1;
        AssociateGrant {
            shared: SharedRef::clone(shared),
            ip,
        }
    }
}

impl Drop for AssociateGrant {
    fn drop(&mut self) {
        let mut holders = self.shared.udp_shared.holders();
        if let Some(count) = holders.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                holders.remove(&self.ip);
            }
        }
    }
}

/// What an association is keyed by: the client's address, or (SIP022 server)
/// the client's session id, so that a client whose address changes keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Peer {
    Addr(SocketAddr),
    Session(u64),
}

/// SIP022: one client session's sending and receiving state.
struct Session2022 {
    sender: UdpSender,
    /// Server: the client's session (one; its replay window is in [`UdpShared::sessions`]).
    /// Local: each server session that has answered, with its own replay window.
    receivers: Vec<Receiver2022>,
}

/// A SIP022 session we receive from.
struct Receiver2022 {
    receiver: UdpReceiver,
    last_accepted: Instant,
}

/// One client's association.
struct Association {
    peer: Peer,
    /// Where the client is (its latest address).
    client: SocketAddr,
    /// SIP022 state; `None` for SIP004.
    session: Option<Box<Session2022>>,
    /// The socket clients talk to (ours), to send replies from.
    listener: Rc<UdpSocket>,
    /// The outbound socket.
    outbound: Rc<UdpSocket>,
    token: Token,
    last_active: Instant,
}

/// A worker's UDP state.
#[derive(Default)]
pub struct UdpRelay {
    associations: Slab<Association>,
    by_peer: HashMap<Peer, usize>,
    /// SIP022: the PSK's cipher, made on first use.
    cipher: Option<Rc<UdpCipher>>,
    packet: Vec<u8>,
    out: Vec<u8>,
}

/// Register a UDP socket that clients send to.
pub fn add_listener(lp: &mut EventLoop<Worker>, _worker: &mut Worker, socket: UdpSocket) -> io::Result<Token> {
    let socket = Rc::new(socket);
    let listener = Rc::clone(&socket);
    lp.add(
        socket,
        POLL_IN,
        move |cx: &mut Ctx<'_, Worker>, _: &mut Rc<UdpSocket>, _, _: Events| on_client_datagrams(cx, &listener),
    )
}

/// Sweep idle associations once a second.
pub fn start_sweeper(lp: &mut EventLoop<Worker>, worker: &Worker) {
    if !worker.shared.udp {
        return;
    }
    lp.add_repeating_timer(SWEEP_EVERY, |cx| {
        let timeout = cx.data.shared.idle_timeout;
        let now = Instant::now();
        cx.data.shared.udp_shared.sessions.sweep(now);
        let idle: Vec<usize> = cx
            .data
            .udp
            .associations
            .iter()
            .filter(|(_, a)| now.duration_since(a.last_active) >= timeout)
            .map(|(k, _)| k)
            .collect();
        for key in idle {
            remove_association(cx, key);
        }
    });
}

fn remove_association(cx: &mut Ctx<'_, Worker>, key: usize) {
    if let Some(a) = cx.data.udp.associations.try_remove(key) {
        cx.data.udp.by_peer.remove(&a.peer);
        let _ = cx.lp.remove(a.token);
        log::debug!("udp: association of {} closed", a.client);
    }
}

fn on_client_datagrams(cx: &mut Ctx<'_, Worker>, listener: &Rc<UdpSocket>) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    for _ in 0..RECV_BATCH {
        let (n, client) = match listener.recv_from(&mut buf) {
            Ok(received) => received,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // ICMP errors from earlier sends surface here; they concern one peer.
                log::debug!("udp: recv: {e}");
                continue;
            }
        };
        let shared = cx.data.shared.clone();
        match &shared.role {
            Role::Server => server_from_client(cx, listener, client, &mut buf[..n]),
            Role::Local { server, tunnel } => local_from_client(cx, listener, client, &buf[..n], *server, tunnel),
        }
    }
    Ok(())
}

fn cipher_2022(cx: &mut Ctx<'_, Worker>) -> Option<Rc<UdpCipher>> {
    if let Some(cipher) = &cx.data.udp.cipher {
        return Some(Rc::clone(cipher));
    }
    match UdpCipher::new(&cx.data.shared.key) {
        Ok(cipher) => {
            let cipher = Rc::new(cipher);
            cx.data.udp.cipher = Some(Rc::clone(&cipher));
            Some(cipher)
        }
        Err(e) => {
            log::error!("udp: {e}");
            None
        }
    }
}

/// A datagram's destination, once decrypted on the server.
struct Inbound {
    peer: Peer,
    target: Address,
    payload: Vec<u8>,
    /// SIP022: the session state to keep if this is a new client session.
    new_session: Option<Box<Session2022>>,
}

/// Server: decrypt, check, resolve, forward to the destination.
fn server_from_client(cx: &mut Ctx<'_, Worker>, listener: &Rc<UdpSocket>, client: SocketAddr, packet: &mut [u8]) {
    let inbound = if cx.data.shared.key.method().is_2022() {
        open_2022_from_client(cx, packet)
    } else {
        open_aead_from_client(cx, client, packet)
    };
    let inbound = match inbound {
        Ok(inbound) => inbound,
        Err(why) => {
            // Anyone can send these: one line each would let them fill the logs.
            log::debug!("udp: {client}: {why}; datagram dropped");
            cx.data.rejected.datagrams += 1;
            return;
        }
    };
    let Inbound {
        peer,
        target,
        payload,
        new_session,
    } = inbound;
    let mut new_session = new_session;
    match target {
        Address::Domain(name, port) => {
            let listener = Rc::clone(listener);
            Resolver::resolve(cx, Client::Datagrams(client), &name, move |cx, result| match result {
                Ok(addrs) => {
                    let dest = SocketAddr::new(addrs[0], port);
                    forward(cx, &listener, peer, client, dest, &payload, new_session.take());
                }
                Err(e) => log::info!("udp: {client}: {e}; datagram dropped"),
            });
        }
        other => {
            if let Some(dest) = other.socket_addr() {
                forward(cx, listener, peer, client, dest, &payload, new_session);
            }
        }
    }
}

fn split_target(plain: &[u8]) -> Result<(Address, Vec<u8>), String> {
    match Address::parse(plain) {
        Ok(Some((target, n))) => Ok((target, plain[n..].to_vec())),
        Ok(None) => Err("truncated target address".to_string()),
        Err(e) => Err(format!("bad target address: {e}")),
    }
}

/// SIP004: decrypt a peer's packet and check its salt against the replay filter, which also
/// holds the salts we sent (so our own packets, sent back to us, are refused too).
fn open_sip004<'a>(shared: &SharedRef, packet: &'a mut [u8]) -> Result<&'a mut [u8], String> {
    let salt_len = shared.key.method().salt_len();
    let salt = packet
        .get(..salt_len)
        .map(<[u8]>::to_vec)
        .ok_or("datagram shorter than a salt")?;
    let plain = crypto::decrypt_packet(&shared.key, packet).map_err(|e| e.to_string())?;
    // Only authenticated salts enter the filter, so forgeries cannot fill it.
    if !shared.fresh_salt(&salt) {
        return Err("replayed salt".to_string());
    }
    Ok(plain)
}

/// SIP004: encrypt a packet of ours, its salt recorded in the replay filter (see
/// [`open_sip004`]).
fn seal_sip004(shared: &SharedRef, plain: &[u8], out: &mut Vec<u8>) -> Result<(), crypto::Error> {
    crypto::encrypt_packet_recording(&shared.key, plain, out, |salt| shared.fresh_salt(salt))
}

fn open_aead_from_client(cx: &mut Ctx<'_, Worker>, client: SocketAddr, packet: &mut [u8]) -> Result<Inbound, String> {
    let plain = open_sip004(&cx.data.shared, packet)?;
    let (target, payload) = split_target(plain)?;
    Ok(Inbound {
        peer: Peer::Addr(client),
        target,
        payload,
        new_session: None,
    })
}

fn open_2022_from_client(cx: &mut Ctx<'_, Worker>, packet: &mut [u8]) -> Result<Inbound, String> {
    let cipher = cipher_2022(cx).ok_or("no SIP022 cipher")?;
    let envelope = cipher.open(packet).map_err(|e| e.to_string())?;
    let session_id = envelope.session_id();
    let peer = Peer::Session(session_id);
    let known = cx.data.udp.by_peer.get(&peer).copied();
    // A new session: keep nothing for it until its body authenticates.
    let mut new_receiver = None;
    let receiver = match known {
        Some(key) => {
            let session = cx.data.udp.associations[key]
                .session
                .as_ref()
                .ok_or("session without SIP022 state")?;
            &session.receivers.first().ok_or("session without a receiver")?.receiver
        }
        None => new_receiver.insert(UdpReceiver::from_client(&cipher, session_id)),
    };
    let message = receiver.verify(envelope).map_err(|e| e.to_string())?;
    // The window is the server's, not this worker's: the same packet from another source
    // port may reach another worker.
    let now = Instant::now();
    if !cx
        .data
        .shared
        .udp_shared
        .sessions
        .check_and_insert(session_id, message.packet_id, now)
    {
        return Err(crypto::Error::ReplayedPacket(message.packet_id).to_string());
    }
    let (target, _) = split_target(message.address)?;
    let payload = message.payload.to_vec();
    let new_session = match new_receiver {
        Some(receiver) => Some(Box::new(Session2022 {
            sender: UdpSender::server(&cipher, session_id).map_err(|e| e.to_string())?,
            receivers: vec![Receiver2022 {
                receiver,
                last_accepted: now,
            }],
        })),
        None => None,
    };
    Ok(Inbound {
        peer,
        target,
        payload,
        new_session,
    })
}

/// Local: unwrap SOCKS5 (or take the tunnel's target), encrypt, send to the server.
fn local_from_client(
    cx: &mut Ctx<'_, Worker>,
    listener: &Rc<UdpSocket>,
    client: SocketAddr,
    datagram: &[u8],
    server: SocketAddr,
    tunnel: &Option<Address>,
) {
    // Tunnel mode has no SOCKS5, hence no UDP ASSOCIATE: its port is the client's choice.
    if tunnel.is_none() && !cx.data.shared.udp_shared.holds_association(client.ip()) {
        log::debug!("udp: {client}: holds no UDP ASSOCIATE; datagram dropped");
        cx.data.rejected.datagrams += 1;
        return;
    }
    let (target, payload) = match tunnel {
        Some(target) => (target.clone(), datagram),
        None => match socks5::parse_udp_packet(datagram) {
            Ok(p) => (p.address, p.payload),
            Err(e) => {
                log::info!("udp: {client}: {e}; datagram dropped");
                return;
            }
        },
    };
    let peer = Peer::Addr(client);
    let key = match cx.data.udp.by_peer.get(&peer) {
        Some(&key) => key,
        None => {
            let session = if cx.data.shared.key.method().is_2022() {
                let Some(cipher) = cipher_2022(cx) else { return };
                match UdpSender::client(&cipher) {
                    Ok(sender) => Some(Box::new(Session2022 {
                        sender,
                        receivers: Vec::new(),
                    })),
                    Err(e) => return log::error!("udp: {e}"),
                }
            } else {
                None
            };
            match open_association(cx, listener, peer, client, session) {
                Ok(key) => key,
                Err(e) => return log::warn!("udp: {client}: {e}"),
            }
        }
    };
    let mut sealed = std::mem::take(&mut cx.data.udp.out);
    sealed.clear();
    let target_bytes = target.to_bytes();
    let result = match cx.data.udp.associations[key].session.as_mut() {
        Some(session) => session.sender.seal(&target_bytes, payload, &mut sealed),
        None => {
            let mut plain = target_bytes;
            plain.extend_from_slice(payload);
            seal_sip004(&cx.data.shared, &plain, &mut sealed)
        }
    };
    match result {
        Ok(()) => send_outbound(cx, key, client, server, &sealed),
        Err(e) => log::error!("udp: encrypt: {e}"),
    }
    cx.data.udp.out = sealed;
}

/// Server: send `payload` to `dest` from the peer's association, creating it if needed.
fn forward(
    cx: &mut Ctx<'_, Worker>,
    listener: &Rc<UdpSocket>,
    peer: Peer,
    client: SocketAddr,
    dest: SocketAddr,
    payload: &[u8],
    new_session: Option<Box<Session2022>>,
) {
    let shared = cx.data.shared.clone();
    if let Some(why) = shared.forbidden_reason(dest) {
        // Per datagram, so not above debug: a key holder must not set the log volume.
        log::debug!("udp: {client}: {why}");
        return;
    }
    let key = match cx.data.udp.by_peer.get(&peer) {
        Some(&key) => key,
        None => match open_association(cx, listener, peer, client, new_session) {
            Ok(key) => key,
            Err(e) => return log::warn!("udp: {client}: {e}"),
        },
    };
    send_outbound(cx, key, client, dest, payload);
}

fn send_outbound(cx: &mut Ctx<'_, Worker>, key: usize, client: SocketAddr, dest: SocketAddr, payload: &[u8]) {
    let connected = matches!(cx.data.shared.role, Role::Local { .. });
    let assoc = &mut cx.data.udp.associations[key];
    assoc.last_active = Instant::now();
    assoc.client = client;
    let sent = if connected {
        // The local's outbound socket is connected to the server (`dest`).
        assoc.outbound.send(payload)
    } else {
        let dest = match (dest, assoc.outbound.local_addr()) {
            // The outbound socket is IPv6: reach IPv4 destinations through mapped addresses.
            (SocketAddr::V4(v4), Ok(SocketAddr::V6(_))) => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            _ => dest,
        };
        assoc.outbound.send_to(payload, dest)
    };
    if let Err(e) = sent {
        log::debug!("udp: {client} -> {dest}: {e}");
    }
}

fn open_association(
    cx: &mut Ctx<'_, Worker>,
    listener: &Rc<UdpSocket>,
    peer: Peer,
    client: SocketAddr,
    session: Option<Box<Session2022>>,
) -> io::Result<usize> {
    if cx.data.udp.associations.len() >= cx.data.shared.udp_shared.max_associations {
        evict_least_recently_active(cx);
    }
    let outbound = match cx.data.shared.role {
        Role::Server => {
            // A dual-stack outbound socket reaches IPv4 and IPv6 destinations alike.
            match UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)) {
                Ok(s) => s,
                Err(_) => UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?,
            }
        }
        Role::Local { server, .. } => {
            // Only the server talks to this socket: connected, the kernel drops datagrams
            // from anyone else, and the local address narrows to the route's.
            let any: IpAddr = match server {
                SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
                SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
            };
            let socket = UdpSocket::bind((any, 0))?;
            socket
                .connect(server)
                .map_err(|e| io::Error::new(e.kind(), format!("connecting to the server {server}: {e}")))?;
            socket
        }
    };
    outbound.set_nonblocking(true)?;
    let outbound = Rc::new(outbound);
    let entry = cx.data.udp.associations.vacant_entry();
    let key = entry.key();
    let reader = Rc::clone(&outbound);
    let token = cx.lp.add(
        Rc::clone(&outbound),
        POLL_IN,
        move |cx: &mut Ctx<'_, Worker>, _: &mut Rc<UdpSocket>, _, _| on_outbound_datagrams(cx, key, &reader),
    )?;
    entry.insert(Association {
        peer,
        client,
        session,
        listener: Rc::clone(listener),
        outbound,
        token,
        last_active: Instant::now(),
    });
    cx.data.udp.by_peer.insert(peer, key);
    log::debug!("udp: association for {client}");
    Ok(key)
}

/// A full table: the association idle the longest makes room (as shadowsocks-libev does), so
/// that a key holder filling the table cannot lock new clients out. A scan, paid only when
/// the table is full.
fn evict_least_recently_active(cx: &mut Ctx<'_, Worker>) {
    let oldest = cx
        .data
        .udp
        .associations
        .iter()
        .min_by_key(|(_, a)| a.last_active)
        .map(|(key, _)| key);
    if let Some(key) = oldest {
        log::debug!("udp: association table full; evicting the least recently active");
        remove_association(cx, key);
    }
}

fn on_outbound_datagrams(cx: &mut Ctx<'_, Worker>, key: usize, outbound: &Rc<UdpSocket>) -> io::Result<()> {
    let shared: SharedRef = cx.data.shared.clone();
    let mut packet = std::mem::take(&mut cx.data.udp.packet);
    packet.resize(MAX_DATAGRAM, 0);
    let cipher = if shared.key.method().is_2022() {
        cipher_2022(cx)
    } else {
        None
    };
    for _ in 0..RECV_BATCH {
        let (n, from) = match outbound.recv_from(&mut packet) {
            Ok(received) => received,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                log::debug!("udp: outbound recv: {e}");
                continue;
            }
        };
        let Some(assoc) = cx.data.udp.associations.get_mut(key) else {
            break;
        };
        if !Rc::ptr_eq(&assoc.outbound, outbound) {
            break; // the association was replaced; this socket is on its way out
        }
        let mut reply = Vec::with_capacity(n + 64);
        let result = match &shared.role {
            Role::Server => seal_for_client(&shared, assoc, unmap(from), &packet[..n], &mut reply),
            Role::Local { tunnel, .. } => open_from_server(
                &shared,
                cipher.as_deref(),
                assoc,
                &mut packet[..n],
                tunnel.is_none(),
                &mut reply,
            ),
        };
        if let Err(why) = result {
            // Local: the connected socket only hears from the server's address, which is
            // spoofable; one line each would let a flood fill the logs.
            log::debug!("udp: datagram from {from}: {why}; dropped");
            cx.data.rejected.datagrams += 1;
            continue;
        }
        assoc.last_active = Instant::now();
        if let Err(e) = assoc.listener.send_to(&reply, assoc.client) {
            log::debug!("udp: reply to {}: {e}", assoc.client);
        }
    }
    cx.data.udp.packet = packet;
    Ok(())
}

/// Server: wrap a destination's datagram as [source address][payload] for the client.
fn seal_for_client(
    shared: &SharedRef,
    assoc: &mut Association,
    source: SocketAddr,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let source = Address::from(source).to_bytes();
    match assoc.session.as_mut() {
        Some(session) => session.sender.seal(&source, payload, out).map_err(|e| e.to_string()),
        None => {
            let mut plain = source;
            plain.extend_from_slice(payload);
            seal_sip004(shared, &plain, out).map_err(|e| e.to_string())
        }
    }
}

/// Local: unwrap the server's datagram; with SOCKS5, add the UDP request header.
fn open_from_server(
    shared: &SharedRef,
    cipher: Option<&UdpCipher>,
    assoc: &mut Association,
    packet: &mut [u8],
    socks: bool,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let (source, payload) = match (assoc.session.as_mut(), cipher) {
        (Some(session), Some(cipher)) => {
            let envelope = cipher.open(packet).map_err(|e| e.to_string())?;
            let message = open_from_server_session(session, cipher, envelope)?;
            let (source, _) = split_target(message.address)?;
            (source, message.payload.to_vec())
        }
        _ => split_target(open_sip004(shared, packet)?)?,
    };
    if socks {
        socks5::write_udp_header(&source, out);
    }
    out.extend_from_slice(&payload);
    Ok(())
}

/// Local, SIP022: check a server packet in its server session's own window. The server may
/// start a new session (after a restart, or when our address changed and another worker
/// answers): it gets a window of its own once its packet authenticates, and the others keep
/// theirs, so that packets of one session cannot be replayed between packets of another.
fn open_from_server_session<'a>(
    session: &mut Session2022,
    cipher: &UdpCipher,
    envelope: crypto::UdpEnvelope<'a>,
) -> Result<crypto::UdpMessage<'a>, String> {
    let now = Instant::now();
    let server_session = envelope.session_id();
    if let Some(known) = session
        .receivers
        .iter_mut()
        .find(|r| r.receiver.session_id() == server_session)
    {
        let message = known.receiver.open(envelope).map_err(|e| e.to_string())?;
        known.last_accepted = now;
        return Ok(message);
    }
    if session.receivers.len() >= MAX_SERVER_SESSIONS {
        // Only windows past their retention may go: a live one forgotten would accept its
        // session's packets again.
        session
            .receivers
            .retain(|r| now.duration_since(r.last_accepted) < session_windows::RETENTION);
        if session.receivers.len() >= MAX_SERVER_SESSIONS {
            return Err(format!("more than {MAX_SERVER_SESSIONS} live server sessions"));
        }
    }
    let mut receiver = UdpReceiver::from_server(cipher, server_session, session.sender.session_id());
    let message = receiver.open(envelope).map_err(|e| e.to_string())?;
    session.receivers.push(Receiver2022 {
        receiver,
        last_accepted: now,
    });
    Ok(message)
}

/// An IPv4-mapped IPv6 source (from a dual-stack socket) as plain IPv4.
fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}
