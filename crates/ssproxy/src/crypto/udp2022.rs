//! SIP022 UDP packets.
//!
//! `2022-blake3-aes-*-gcm`:
//!
//! ```text
//! [AES-ECB(PSK, session id (8) | packet id (u64 BE))][AES-GCM(subkey, nonce = header[4..16], body)]
//! subkey = blake3::derive_key("shadowsocks 2022 session subkey", PSK || session id)
//! ```
//!
//! `2022-blake3-chacha20-poly1305`:
//!
//! ```text
//! [random nonce (24)][XChaCha20-Poly1305(PSK, nonce, session id | packet id | body)]
//! ```
//!
//! Body: `type (0 client, 1 server) | timestamp (u64 BE) | [server: client session id (8)] |
//! padding length (u16 BE) | padding | SOCKS address | payload`.
//!
//! Receiving is two steps so that the relay can route by session id before it has a session:
//! [`UdpCipher::open`] (shared, per PSK) decrypts the separate header (AES) or the whole
//! packet (XChaCha) and yields a [`UdpEnvelope`] naming the session; the session's
//! [`UdpReceiver`] (cached subkey cipher and sliding replay window) then authenticates the body
//! (AES), checks type, timestamp and packet id, and yields the [`UdpMessage`]. Note that for
//! the AES methods the separate header is not authenticated until [`UdpReceiver::open`]
//! succeeds: do not keep a NAT entry made for an unknown session id until then.

use std::fmt;

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use aes::{Aes128, Aes256, Block};

use super::cipher::Aead;
use super::replay::ReplayWindow;
use super::{
    Clock, Error, Key, Method, TAG_LEN, check_timestamp, fill_random, random_padding_len, socks_addr_len, unix_time,
};

/// Body type of client-to-server packets.
const TYPE_CLIENT: u8 = 0;
/// Body type of server-to-client packets.
const TYPE_SERVER: u8 = 1;
/// Length of the separate header (session id, packet id).
const SEPARATE_HEADER_LEN: usize = 16;
/// Length of the XChaCha20 nonce leading chacha packets.
const XNONCE_LEN: usize = 24;

/// The PSK-keyed part: AES block cipher for separate headers, or XChaCha20-Poly1305 (boxed:
/// made once per session, the key schedules are hundreds of bytes).
enum PskCipher {
    Aes128(Box<Aes128>),
    Aes256(Box<Aes256>),
    XChaCha(Box<Aead>),
}

impl PskCipher {
    fn new(key: &Key) -> PskCipher {
        match key.method() {
            Method::Blake3Aes128Gcm => {
                PskCipher::Aes128(Box::new(Aes128::new_from_slice(key.bytes()).expect("16-byte key")))
            }
            Method::Blake3Aes256Gcm => {
                PskCipher::Aes256(Box::new(Aes256::new_from_slice(key.bytes()).expect("32-byte key")))
            }
            _ => PskCipher::XChaCha(Box::new(Aead::new_xchacha(key.bytes()))),
        }
    }

    /// The session AEAD for AES methods (`None` for XChaCha, which uses the PSK directly).
    fn session_aead(key: &Key, session_id: u64) -> Option<Aead> {
        match key.method() {
            Method::Blake3Aes128Gcm | Method::Blake3Aes256Gcm => {
                let subkey = key.subkey(&session_id.to_be_bytes());
                Some(Aead::new(key.method(), subkey.bytes()))
            }
            _ => None,
        }
    }
}

fn require_2022(key: &Key) -> Result<(), Error> {
    if !key.method().is_2022() {
        return Err(Error::WrongMethod {
            method: key.method(),
            operation: "SIP022 UDP",
        });
    }
    Ok(())
}

/// The per-PSK state for SIP022 UDP; share one per server/client configuration.
pub struct UdpCipher {
    key: Key,
    psk: PskCipher,
}

impl UdpCipher {
    /// The UDP cipher of a SIP022 key. Fails for SIP004 keys.
    pub fn new(key: &Key) -> Result<UdpCipher, Error> {
        require_2022(key)?;
        Ok(UdpCipher {
            key: key.clone(),
            psk: PskCipher::new(key),
        })
    }

    /// The method.
    pub fn method(&self) -> Method {
        self.key.method()
    }

    /// First step of receiving `packet` (decrypted in place): for AES methods, decrypts the
    /// separate header (nothing is authenticated yet); for chacha, authenticates and decrypts
    /// the whole packet. Either way the envelope names the session and packet id.
    pub fn open<'a>(&self, packet: &'a mut [u8]) -> Result<UdpEnvelope<'a>, Error> {
        match &self.psk {
            PskCipher::Aes128(_) | PskCipher::Aes256(_) => {
                if packet.len() < SEPARATE_HEADER_LEN + TAG_LEN {
                    return Err(Error::PacketTooShort(packet.len()));
                }
                let block = Block::from_mut_slice(&mut packet[..SEPARATE_HEADER_LEN]);
                match &self.psk {
                    PskCipher::Aes128(c) => c.decrypt_block(block),
                    PskCipher::Aes256(c) => c.decrypt_block(block),
                    PskCipher::XChaCha(_) => unreachable!(),
                }
                let (session_id, packet_id) = read_ids(packet);
                Ok(UdpEnvelope {
                    session_id,
                    packet_id,
                    buf: packet,
                    body: Body::Sealed,
                })
            }
            PskCipher::XChaCha(aead) => {
                if packet.len() < XNONCE_LEN + SEPARATE_HEADER_LEN + TAG_LEN {
                    return Err(Error::PacketTooShort(packet.len()));
                }
                let (nonce, rest) = packet.split_at_mut(XNONCE_LEN);
                let n = aead.open(nonce, rest)?;
                let (session_id, packet_id) = read_ids(rest);
                let body = XNONCE_LEN + SEPARATE_HEADER_LEN..XNONCE_LEN + n;
                Ok(UdpEnvelope {
                    session_id,
                    packet_id,
                    buf: packet,
                    body: Body::Open(body.start, body.end),
                })
            }
        }
    }
}

impl fmt::Debug for UdpCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpCipher")
            .field("method", &self.key.method())
            .finish_non_exhaustive()
    }
}

/// Session id and packet id from the first 16 bytes.
fn read_ids(buf: &[u8]) -> (u64, u64) {
    let session_id = u64::from_be_bytes(buf[..8].try_into().expect("8 bytes"));
    let packet_id = u64::from_be_bytes(buf[8..16].try_into().expect("8 bytes"));
    (session_id, packet_id)
}

/// Where an envelope's body is.
#[derive(Debug)]
enum Body {
    /// AES: still encrypted, `buf[16..]`.
    Sealed,
    /// XChaCha: decrypted and authenticated, `buf[start..end]`.
    Open(usize, usize),
}

/// A received packet whose session is known but whose body is not verified yet; hand it to
/// that session's [`UdpReceiver::open`].
#[derive(Debug)]
pub struct UdpEnvelope<'a> {
    session_id: u64,
    packet_id: u64,
    buf: &'a mut [u8],
    body: Body,
}

impl UdpEnvelope<'_> {
    /// The sender's session id (8 bytes on the wire, read big-endian).
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// The packet id (not yet checked against the replay window).
    pub fn packet_id(&self) -> u64 {
        self.packet_id
    }
}

/// A verified packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpMessage<'a> {
    /// The sender's session id.
    pub session_id: u64,
    /// The packet id (accepted by the replay window).
    pub packet_id: u64,
    /// The sender's timestamp (within 30 s of our clock).
    pub timestamp: u64,
    /// Server-to-client packets: the client session id they answer.
    pub client_session_id: Option<u64>,
    /// The SOCKS5 address (ATYP, address, port): target for client packets, source for
    /// server packets.
    pub address: &'a [u8],
    /// The datagram payload, right after `address`.
    pub payload: &'a [u8],
    /// Offset of `address` in the packet buffer given to [`UdpCipher::open`] (the payload
    /// follows it to the end of the plaintext), for relays that rewrite headers in place.
    pub offset: usize,
}

/// One direction of one session as received: the cached session AEAD (AES methods), the
/// sliding replay window, and what the packets must say.
pub struct UdpReceiver {
    session_id: u64,
    aead: Option<Aead>,
    window: ReplayWindow,
    expected_type: u8,
    /// For packets from a server: our client session id, which they must echo.
    client_session_id: Option<u64>,
    clock: Clock,
}

impl UdpReceiver {
    /// Server side: receives the packets of client session `client_session_id`.
    pub fn from_client(cipher: &UdpCipher, client_session_id: u64) -> UdpReceiver {
        UdpReceiver::build(cipher, client_session_id, TYPE_CLIENT, None)
    }

    /// Client side: receives the packets of server session `server_session_id`, which must
    /// answer our client session `client_session_id`.
    pub fn from_server(cipher: &UdpCipher, server_session_id: u64, client_session_id: u64) -> UdpReceiver {
        UdpReceiver::build(cipher, server_session_id, TYPE_SERVER, Some(client_session_id))
    }

    fn build(cipher: &UdpCipher, session_id: u64, expected_type: u8, client_session_id: Option<u64>) -> UdpReceiver {
        UdpReceiver {
            session_id,
            aead: PskCipher::session_aead(&cipher.key, session_id),
            window: ReplayWindow::new(),
            expected_type,
            client_session_id,
            clock: unix_time,
        }
    }

    /// The session this receiver accepts.
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// Replaces the clock used to check timestamps.
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// Second step of receiving: authenticates the body (AES), checks session, type,
    /// timestamp, echoed client session id, then the packet id against this receiver's replay
    /// window.
    pub fn open<'a>(&mut self, envelope: UdpEnvelope<'a>) -> Result<UdpMessage<'a>, Error> {
        let message = self.verify(envelope)?;
        if !self.window.check_and_insert(message.packet_id) {
            return Err(Error::ReplayedPacket(message.packet_id));
        }
        Ok(message)
    }

    /// [`UdpReceiver::open`] without the replay window: for a relay that keeps the session's
    /// window elsewhere (shared by threads that each receive some of the session's packets).
    /// The caller must check the message's `packet_id` against that window before acting on
    /// it.
    pub fn verify<'a>(&self, envelope: UdpEnvelope<'a>) -> Result<UdpMessage<'a>, Error> {
        if envelope.session_id != self.session_id {
            return Err(Error::SessionMismatch);
        }
        let UdpEnvelope {
            session_id,
            packet_id,
            buf,
            body,
        } = envelope;
        let (start, end) = match body {
            Body::Open(start, end) => (start, end),
            Body::Sealed => {
                let Some(aead) = &self.aead else {
                    return Err(Error::WrongMethod {
                        method: Method::Blake3Chacha20Poly1305,
                        operation: "AES packet",
                    });
                };
                let (header, sealed) = buf.split_at_mut(SEPARATE_HEADER_LEN);
                let n = aead.open(&header[4..SEPARATE_HEADER_LEN], sealed)?;
                (SEPARATE_HEADER_LEN, SEPARATE_HEADER_LEN + n)
            }
        };
        let buf: &'a [u8] = buf;
        let body = &buf[start..end];

        let mut pos = 1 + 8;
        if body.len() < pos {
            return Err(Error::BadHeader("packet body too short"));
        }
        if body[0] != self.expected_type {
            return Err(Error::HeaderType {
                expected: self.expected_type,
                got: body[0],
            });
        }
        let timestamp = u64::from_be_bytes(body[1..9].try_into().expect("8 bytes"));
        check_timestamp(timestamp, (self.clock)())?;
        let mut echoed = None;
        if let Some(ours) = self.client_session_id {
            let field = body
                .get(pos..pos + 8)
                .ok_or(Error::BadHeader("client session id missing"))?;
            let theirs = u64::from_be_bytes(field.try_into().expect("8 bytes"));
            if theirs != ours {
                return Err(Error::SessionMismatch);
            }
            echoed = Some(theirs);
            pos += 8;
        }
        let field = body
            .get(pos..pos + 2)
            .ok_or(Error::BadHeader("padding length missing"))?;
        pos += 2 + usize::from(u16::from_be_bytes([field[0], field[1]]));
        let rest = body
            .get(pos..)
            .ok_or(Error::BadHeader("padding extends beyond the packet"))?;
        let addr_len = socks_addr_len(rest).ok_or(Error::BadHeader("address"))?;
        Ok(UdpMessage {
            session_id,
            packet_id,
            timestamp,
            client_session_id: echoed,
            address: &rest[..addr_len],
            payload: &rest[addr_len..],
            offset: start + pos,
        })
    }
}

impl fmt::Debug for UdpReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpReceiver")
            .field("session_id", &format_args!("{:016x}", self.session_id))
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

/// One direction of one session as sent: session id, packet counter, session AEAD.
pub struct UdpSender {
    method: Method,
    psk: PskCipher,
    aead: Option<Aead>,
    session_id: u64,
    next_packet_id: u64,
    /// Server senders: the client session they answer.
    client_session_id: Option<u64>,
    clock: Clock,
}

impl UdpSender {
    /// Client side: a new client session with a random session id.
    pub fn client(cipher: &UdpCipher) -> Result<UdpSender, Error> {
        let mut id = [0u8; 8];
        fill_random(&mut id)?;
        Ok(UdpSender::with_session_id(cipher, u64::from_be_bytes(id), None))
    }

    /// Server side: a new server session (random id, never the client's) answering client
    /// session `client_session_id`.
    pub fn server(cipher: &UdpCipher, client_session_id: u64) -> Result<UdpSender, Error> {
        let mut id = [0u8; 8];
        loop {
            fill_random(&mut id)?;
            if u64::from_be_bytes(id) != client_session_id {
                break;
            }
        }
        Ok(UdpSender::with_session_id(
            cipher,
            u64::from_be_bytes(id),
            Some(client_session_id),
        ))
    }

    /// A sender with a chosen session id (tests); `client_session_id` is `Some` for server
    /// senders.
    pub fn with_session_id(cipher: &UdpCipher, session_id: u64, client_session_id: Option<u64>) -> UdpSender {
        UdpSender {
            method: cipher.method(),
            psk: PskCipher::new(&cipher.key),
            aead: PskCipher::session_aead(&cipher.key, session_id),
            session_id,
            next_packet_id: 0,
            client_session_id,
            clock: unix_time,
        }
    }

    /// This session's id.
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// The id the next packet will carry (starts at 0).
    pub fn next_packet_id(&self) -> u64 {
        self.next_packet_id
    }

    /// Replaces the clock used for timestamps.
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// Appends one packet carrying `payload` for/from `address` (a SOCKS5 address: the target
    /// for client packets, the source for server packets) to `out`. Empty payloads get 1 to
    /// 900 bytes of padding. Fails only if the RNG fails or `address` is malformed.
    pub fn seal(&mut self, address: &[u8], payload: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        if socks_addr_len(address) != Some(address.len()) {
            return Err(Error::BadHeader("address is not one SOCKS5 address"));
        }
        let padding = if payload.is_empty() { random_padding_len()? } else { 0 };
        let start = out.len();
        let lead = if self.aead.is_some() { 0 } else { XNONCE_LEN };
        out.reserve(lead + SEPARATE_HEADER_LEN + 1 + 8 + 8 + 2 + padding + address.len() + payload.len() + TAG_LEN);
        if lead > 0 {
            out.resize(start + lead, 0);
            if let Err(e) = fill_random(&mut out[start..]) {
                out.truncate(start);
                return Err(e);
            }
        }
        let header = out.len();
        out.extend_from_slice(&self.session_id.to_be_bytes());
        out.extend_from_slice(&self.next_packet_id.to_be_bytes());
        let body = out.len();
        out.push(if self.client_session_id.is_some() {
            TYPE_SERVER
        } else {
            TYPE_CLIENT
        });
        out.extend_from_slice(&(self.clock)().to_be_bytes());
        if let Some(id) = self.client_session_id {
            out.extend_from_slice(&id.to_be_bytes());
        }
        out.extend_from_slice(&(padding as u16).to_be_bytes());
        out.resize(out.len() + padding, 0);
        out.extend_from_slice(address);
        out.extend_from_slice(payload);

        match (&self.aead, &self.psk) {
            (Some(aead), psk) => {
                let mut nonce = [0u8; 12];
                nonce.copy_from_slice(&out[header + 4..body]);
                aead.seal_tail(&nonce, out, body);
                let block = Block::from_mut_slice(&mut out[header..body]);
                match psk {
                    PskCipher::Aes128(c) => c.encrypt_block(block),
                    PskCipher::Aes256(c) => c.encrypt_block(block),
                    PskCipher::XChaCha(_) => unreachable!("AES methods have an AES PSK cipher"),
                }
            }
            (None, PskCipher::XChaCha(aead)) => {
                let mut nonce = [0u8; XNONCE_LEN];
                nonce.copy_from_slice(&out[start..header]);
                aead.seal_tail(&nonce, out, header);
            }
            (None, _) => unreachable!("AES methods have a session AEAD"),
        }
        self.next_packet_id += 1;
        Ok(())
    }
}

impl fmt::Debug for UdpSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSender")
            .field("method", &self.method)
            .field("session_id", &format_args!("{:016x}", self.session_id))
            .field("next_packet_id", &self.next_packet_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIP022: [Method; 3] = [
        Method::Blake3Aes128Gcm,
        Method::Blake3Aes256Gcm,
        Method::Blake3Chacha20Poly1305,
    ];
    const TARGET: &[u8] = b"\x01\x08\x08\x08\x08\x00\x35";
    const SOURCE: &[u8] = b"\x04\x20\x01\x48\x60\x48\x60\0\0\0\0\0\0\0\0\x88\x88\x00\x35";

    fn cipher(m: Method) -> UdpCipher {
        UdpCipher::new(&Key::from_bytes(m, &[0x5a; 32][..m.key_len()]).unwrap()).unwrap()
    }

    fn receive<'a>(c: &UdpCipher, r: &mut UdpReceiver, packet: &'a mut [u8]) -> Result<UdpMessage<'a>, Error> {
        let env = c.open(packet)?;
        r.open(env)
    }

    #[test]
    fn round_trip_both_directions() {
        for m in SIP022 {
            let c = cipher(m);
            let mut client = UdpSender::client(&c).unwrap();
            let mut server_rx: Option<UdpReceiver> = None;
            let mut server_tx: Option<UdpSender> = None;
            let mut client_rx: Option<UdpReceiver> = None;
            for (i, payload) in [&b"query"[..], b"", &[7; 1400][..]].into_iter().enumerate() {
                let mut pkt = Vec::new();
                client.seal(TARGET, payload, &mut pkt).unwrap();
                // Server: route by session id, create the session on first sight.
                let env = c.open(&mut pkt).unwrap();
                assert_eq!(env.session_id(), client.session_id());
                assert_eq!(env.packet_id(), i as u64);
                let rx = server_rx.get_or_insert_with(|| UdpReceiver::from_client(&c, env.session_id()));
                let msg = rx.open(env).unwrap();
                assert_eq!(
                    (msg.address, msg.payload, msg.packet_id),
                    (TARGET, payload, i as u64),
                    "{m}"
                );
                assert_eq!(msg.client_session_id, None);
                let offset = msg.offset;
                assert_eq!(&pkt[offset..offset + TARGET.len()], TARGET);

                let tx = server_tx.get_or_insert_with(|| UdpSender::server(&c, client.session_id()).unwrap());
                assert_ne!(tx.session_id(), client.session_id());
                let mut reply = Vec::new();
                tx.seal(SOURCE, b"answer", &mut reply).unwrap();
                let env = c.open(&mut reply).unwrap();
                let rx = client_rx
                    .get_or_insert_with(|| UdpReceiver::from_server(&c, env.session_id(), client.session_id()));
                let msg = rx.open(env).unwrap();
                assert_eq!((msg.address, msg.payload), (SOURCE, &b"answer"[..]), "{m}");
                assert_eq!(msg.client_session_id, Some(client.session_id()));
            }
        }
    }

    #[test]
    fn packet_layout() {
        for m in SIP022 {
            let c = cipher(m);
            let mut s = UdpSender::with_session_id(&c, 1, None);
            let mut pkt = Vec::new();
            s.seal(TARGET, b"abc", &mut pkt).unwrap();
            let lead = if m == Method::Blake3Chacha20Poly1305 { 24 } else { 0 };
            assert_eq!(pkt.len(), lead + 16 + 1 + 8 + 2 + TARGET.len() + 3 + 16, "{m}");
            let mut s = UdpSender::with_session_id(&c, 1, Some(2));
            let mut pkt = Vec::new();
            s.seal(TARGET, b"abc", &mut pkt).unwrap();
            assert_eq!(pkt.len(), lead + 16 + 1 + 8 + 8 + 2 + TARGET.len() + 3 + 16, "{m}");
            assert_eq!(s.next_packet_id(), 1);
        }
    }

    #[test]
    fn aes_known_answer_against_python() {
        // Python: AES-ECB(psk, sid|pid) + AESGCM(blake3 subkey(psk || sid), header[4..16]).
        let key = Key::from_bytes(Method::Blake3Aes128Gcm, &(0u8..16).collect::<Vec<_>>()).unwrap();
        let c = UdpCipher::new(&key).unwrap();
        let mut s = UdpSender::with_session_id(&c, 0x0102_0304_0506_0708, None);
        s.set_clock(|| 1_700_000_000);
        let mut pkt = Vec::new();
        s.seal(b"\x01\x7f\x00\x00\x01\x00\x35", b"hello", &mut pkt).unwrap();
        assert_eq!(hex::encode(&pkt), KAT_UDP2022_AES128);
        let mut r = UdpReceiver::from_client(&c, 0x0102_0304_0506_0708);
        r.set_clock(|| 1_700_000_010);
        assert_eq!(receive(&c, &mut r, &mut pkt).unwrap().payload, b"hello");
    }

    const KAT_UDP2022_AES128: &str = "18ba69bb4661fee5a7cc9ec1a731e2780f887748f59fbaddc74035aa8ff890411910937ae673253bef33e7f3d4a4073b02911466187521";

    #[test]
    fn replay_window_per_session() {
        for m in SIP022 {
            let c = cipher(m);
            let mut tx = UdpSender::client(&c).unwrap();
            let mut rx = UdpReceiver::from_client(&c, tx.session_id());
            let mut packets: Vec<Vec<u8>> = Vec::new();
            for _ in 0..3000 {
                let mut p = Vec::new();
                tx.seal(TARGET, b"x", &mut p).unwrap();
                packets.push(p);
            }
            // Out of order within the window is fine; duplicates are not.
            for id in [1usize, 0, 2, 5, 3] {
                let mut p = packets[id].clone();
                assert!(receive(&c, &mut rx, &mut p).is_ok(), "{m} {id}");
                let mut p = packets[id].clone();
                assert_eq!(receive(&c, &mut rx, &mut p), Err(Error::ReplayedPacket(id as u64)));
            }
            let mut p = packets[2999].clone();
            receive(&c, &mut rx, &mut p).unwrap();
            // 4 was never received but is now too old.
            let mut p = packets[4].clone();
            assert_eq!(receive(&c, &mut rx, &mut p), Err(Error::ReplayedPacket(4)));
            let mut p = packets[2999 - 2047].clone();
            assert!(receive(&c, &mut rx, &mut p).is_ok());
        }
    }

    #[test]
    fn verify_leaves_the_window_to_the_caller() {
        let c = cipher(Method::Blake3Aes128Gcm);
        let mut tx = UdpSender::client(&c).unwrap();
        let mut rx = UdpReceiver::from_client(&c, tx.session_id());
        let mut p = Vec::new();
        tx.seal(TARGET, b"x", &mut p).unwrap();
        for _ in 0..2 {
            let mut copy = p.clone();
            let msg = rx.verify(c.open(&mut copy).unwrap()).unwrap();
            assert_eq!((msg.packet_id, msg.payload), (0, &b"x"[..]));
        }
        // open still refuses the duplicate: verify recorded nothing, open records once.
        assert!(receive(&c, &mut rx, &mut p.clone()).is_ok());
        assert_eq!(receive(&c, &mut rx, &mut p), Err(Error::ReplayedPacket(0)));
    }

    #[test]
    fn timestamp_type_and_session_checks() {
        for m in SIP022 {
            let c = cipher(m);
            let mut tx = UdpSender::with_session_id(&c, 77, None);
            // Stale and future timestamps.
            for clock in [(|| unix_time() - 31) as Clock, || unix_time() + 31] {
                tx.set_clock(clock);
                let mut p = Vec::new();
                tx.seal(TARGET, b"x", &mut p).unwrap();
                let mut rx = UdpReceiver::from_client(&c, 77);
                assert!(
                    matches!(receive(&c, &mut rx, &mut p), Err(Error::Timestamp { .. })),
                    "{m}"
                );
            }
            tx.set_clock(unix_time);
            let mut p = Vec::new();
            tx.seal(TARGET, b"x", &mut p).unwrap();
            // Wrong session for this receiver.
            let mut rx = UdpReceiver::from_client(&c, 78);
            assert_eq!(receive(&c, &mut rx, &mut p.clone()), Err(Error::SessionMismatch));
            // A client packet where a server packet is expected.
            let mut rx = UdpReceiver::from_server(&c, 77, 1);
            assert_eq!(
                receive(&c, &mut rx, &mut p.clone()),
                Err(Error::HeaderType { expected: 1, got: 0 })
            );
            // A server packet answering another client session.
            let mut stx = UdpSender::with_session_id(&c, 90, Some(2));
            let mut sp = Vec::new();
            stx.seal(SOURCE, b"y", &mut sp).unwrap();
            let mut rx = UdpReceiver::from_server(&c, 90, 1);
            assert_eq!(receive(&c, &mut rx, &mut sp), Err(Error::SessionMismatch));
        }
    }

    #[test]
    fn tampering_and_short_packets() {
        for m in SIP022 {
            let c = cipher(m);
            let mut tx = UdpSender::with_session_id(&c, 5, None);
            let mut p = Vec::new();
            tx.seal(TARGET, b"payload", &mut p).unwrap();
            for pos in 0..p.len() {
                let mut bad = p.clone();
                bad[pos] ^= 4;
                let mut rx = UdpReceiver::from_client(&c, 5);
                let err = receive(&c, &mut rx, &mut bad).unwrap_err();
                // A corrupted AES separate header names another session (or a wrong nonce).
                assert!(
                    matches!(err, Error::Authentication | Error::SessionMismatch),
                    "{m} byte {pos}: {err}"
                );
            }
            let min = if m == Method::Blake3Chacha20Poly1305 { 56 } else { 32 };
            assert_eq!(c.open(&mut p[..min - 1]).unwrap_err(), Error::PacketTooShort(min - 1));
            // Another PSK.
            let other = UdpCipher::new(&Key::from_bytes(m, &[1; 32][..m.key_len()]).unwrap()).unwrap();
            let mut rx = UdpReceiver::from_client(&other, 5);
            assert!(receive(&other, &mut rx, &mut p).is_err());
        }
        assert!(UdpCipher::new(&Key::new(Method::Aes128Gcm, "pw").unwrap()).is_err());
        let c = cipher(Method::Blake3Aes128Gcm);
        assert!(
            UdpSender::client(&c)
                .unwrap()
                .seal(b"\x01\x00", b"", &mut Vec::new())
                .is_err()
        );
    }
}
