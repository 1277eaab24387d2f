//! The UDP relay: datagrams, each carrying its own target address.
//!
//! Both programs keep one *association* per client address: an outbound socket
//! of its own, so that replies can be told apart and routed back. On the server
//! a client is a shadowsocks peer and the outbound socket talks to destinations;
//! on the local a client is a SOCKS5 application and the outbound socket talks
//! to the ssserver. Associations idle for longer than the timeout are swept.
//!
//! Bad datagrams (wrong key, replayed salt, malformed address, forbidden
//! destination) are dropped and logged; nothing is sent back.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::rc::Rc;
use std::time::{Duration, Instant};

use evloop::{Ctx, EventLoop, Events, POLL_IN, Token};
use slab::Slab;

use super::worker::Worker;
use super::{Role, SharedRef};
use crate::crypto;
use crate::dns::Resolver;
use crate::protocol::Address;
use crate::protocol::socks5;

/// Datagrams handled per readiness event at most (fairness to other sockets).
const RECV_BATCH: usize = 64;
/// Largest datagram: the UDP maximum.
const MAX_DATAGRAM: usize = 65_536;
/// How often idle associations are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// At most this many associations per worker; beyond it new clients are dropped.
const MAX_ASSOCIATIONS: usize = 16_384;

/// One client's association.
struct Association {
    /// Where the client is.
    client: SocketAddr,
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
    by_client: HashMap<SocketAddr, usize>,
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
        cx.data.udp.by_client.remove(&a.client);
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

/// Server: decrypt, check, resolve, forward to the destination.
fn server_from_client(cx: &mut Ctx<'_, Worker>, listener: &Rc<UdpSocket>, client: SocketAddr, packet: &mut [u8]) {
    let shared = cx.data.shared.clone();
    if shared.key.method().is_2022() {
        log::debug!("udp: {client}: SIP022 UDP is not relayed by this server; datagram dropped");
        return;
    }
    let salt_len = shared.key.method().salt_len();
    if packet.len() > salt_len && !shared.fresh_salt(&packet[..salt_len]) {
        log::warn!("udp: {client}: replayed salt; datagram dropped");
        return;
    }
    let plain = match crypto::decrypt_packet(&shared.key, packet) {
        Ok(plain) => plain,
        Err(e) => {
            log::warn!("udp: {client}: {e}; datagram dropped");
            return;
        }
    };
    let (target, n) = match Address::parse(plain) {
        Ok(Some(parsed)) => parsed,
        Ok(None) | Err(_) => {
            log::warn!("udp: {client}: malformed target address; datagram dropped");
            return;
        }
    };
    let payload = plain[n..].to_vec();
    match target {
        Address::Domain(name, port) => {
            let listener = Rc::clone(listener);
            Resolver::resolve(cx, &name, move |cx, result| match result {
                Ok(addrs) => forward(cx, &listener, client, SocketAddr::new(addrs[0], port), &payload),
                Err(e) => log::info!("udp: {client}: {e}; datagram dropped"),
            });
        }
        other => {
            if let Some(dest) = other.socket_addr() {
                forward(cx, listener, client, dest, &payload);
            }
        }
    }
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
    if cx.data.shared.key.method().is_2022() {
        log::debug!("udp: {client}: SIP022 UDP is not relayed by this local; datagram dropped");
        return;
    }
    let mut plain = Vec::with_capacity(target.serialized_len() + payload.len());
    target.write_to(&mut plain);
    plain.extend_from_slice(payload);
    let mut sealed = std::mem::take(&mut cx.data.udp.out);
    sealed.clear();
    if let Err(e) = crypto::encrypt_packet(&cx.data.shared.key, &plain, &mut sealed) {
        log::error!("udp: encrypt: {e}");
    } else {
        forward(cx, listener, client, server, &sealed);
    }
    cx.data.udp.out = sealed;
}

/// Send `payload` to `dest` from `client`'s association, creating it if needed.
fn forward(cx: &mut Ctx<'_, Worker>, listener: &Rc<UdpSocket>, client: SocketAddr, dest: SocketAddr, payload: &[u8]) {
    let shared = cx.data.shared.clone();
    if matches!(shared.role, Role::Server) && shared.forbidden.contains(dest.ip()) {
        log::warn!("udp: {client}: refusing to relay to {dest}: forbidden address (see forbidden_ip)");
        return;
    }
    let key = match cx.data.udp.by_client.get(&client) {
        Some(&key) => key,
        None => match open_association(cx, listener, client) {
            Ok(key) => key,
            Err(e) => {
                log::warn!("udp: {client}: {e}");
                return;
            }
        },
    };
    let assoc = &mut cx.data.udp.associations[key];
    assoc.last_active = Instant::now();
    let dest = match (dest, assoc.outbound.local_addr()) {
        // The outbound socket is IPv6: reach IPv4 destinations through mapped addresses.
        (SocketAddr::V4(v4), Ok(SocketAddr::V6(_))) => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
        _ => dest,
    };
    if let Err(e) = assoc.outbound.send_to(payload, dest) {
        log::debug!("udp: {client} -> {dest}: {e}");
    }
}

fn open_association(cx: &mut Ctx<'_, Worker>, listener: &Rc<UdpSocket>, client: SocketAddr) -> io::Result<usize> {
    if cx.data.udp.associations.len() >= MAX_ASSOCIATIONS {
        return Err(io::Error::other("too many UDP associations; datagram dropped"));
    }
    // A dual-stack outbound socket reaches IPv4 and IPv6 destinations alike.
    let outbound = match UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)) {
        Ok(s) => s,
        Err(_) => UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?,
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
        client,
        listener: Rc::clone(listener),
        outbound,
        token,
        last_active: Instant::now(),
    });
    cx.data.udp.by_client.insert(client, key);
    log::debug!("udp: association for {client}");
    Ok(key)
}

fn on_outbound_datagrams(cx: &mut Ctx<'_, Worker>, key: usize, outbound: &Rc<UdpSocket>) -> io::Result<()> {
    let shared: SharedRef = cx.data.shared.clone();
    let mut packet = std::mem::take(&mut cx.data.udp.packet);
    packet.resize(MAX_DATAGRAM, 0);
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
        assoc.last_active = Instant::now();
        let mut reply = Vec::with_capacity(n + 64);
        match &shared.role {
            Role::Server => {
                // From a destination: wrap [source address][payload] for the client.
                let mut plain = Vec::with_capacity(n + 32);
                Address::from(unmap(from)).write_to(&mut plain);
                plain.extend_from_slice(&packet[..n]);
                if let Err(e) = crypto::encrypt_packet(&shared.key, &plain, &mut reply) {
                    log::error!("udp: encrypt: {e}");
                    continue;
                }
            }
            Role::Local { tunnel, .. } => {
                // From the server: unwrap, then hand to the application.
                let plain = match crypto::decrypt_packet(&shared.key, &mut packet[..n]) {
                    Ok(plain) => plain,
                    Err(e) => {
                        log::warn!("udp: from the server {from}: {e}; datagram dropped");
                        continue;
                    }
                };
                let Ok(Some((source, len))) = Address::parse(plain) else {
                    log::warn!("udp: from the server {from}: malformed address; datagram dropped");
                    continue;
                };
                if tunnel.is_none() {
                    socks5::write_udp_header(&source, &mut reply);
                }
                reply.extend_from_slice(&plain[len..]);
            }
        }
        let assoc = &cx.data.udp.associations[key];
        if let Err(e) = assoc.listener.send_to(&reply, assoc.client) {
            log::debug!("udp: reply to {}: {e}", assoc.client);
        }
    }
    cx.data.udp.packet = packet;
    Ok(())
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
