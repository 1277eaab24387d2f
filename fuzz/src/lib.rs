//! What the fuzz targets and the seed generator share: the fixed keys and clock, and the
//! layout of the inputs (a few leading control bytes, then the bytes under test).
//!
//! Input layouts (all targets tolerate any input; missing bytes read as zero):
//!
//! - `aead_chunks`: `[method][mode][k][k × u16 LE piece lengths][stream]`; mode bit 0 clear:
//!   `stream` is ciphertext for [`Decryptor`](ssproxy::crypto::Decryptor); set: `stream` is
//!   plaintext, encrypted and decrypted again.
//! - `sip022_header`: `[method][flags][k][k × u16 LE piece lengths][stream]`; flags bit 0:
//!   allow empty requests, bit 1: the stream is a response (`ResponseDecryptor`) instead of a
//!   request (`RequestDecryptor`).
//! - `sip022_open_in_place`: the `sip022_header` layout (and seeds); flags bit 2: the
//!   plaintext is taken off the queue after every read instead of staying in front.
//! - `udp_packet`: `[method][flags][packets: u16 LE length, bytes]...`; methods 0..4 are SIP004
//!   (`decrypt_packet`), 4..7 SIP022 (`UdpCipher::open` then `UdpReceiver::open`); flags bit 0:
//!   receive as a client (server packets) instead of as a server.
//! - `dns_answer`: `[order][DNS message]`, `order % 4` picking an [`AddressOrder`](ssproxy::dns::AddressOrder).
//! - `socks5`, `address`, `config`: the raw bytes.

use ssproxy::crypto::{Error, Key, Method, RequestDecryptor, ResponseDecryptor};

/// The clock every decoder runs with, so that seeds with SIP022 timestamps stay valid.
pub const NOW: u64 = 1_700_000_000;

/// [`NOW`] as a [`ssproxy::crypto::Clock`].
pub fn fixed_clock() -> u64 {
    NOW
}

/// The SIP004 methods, selected by `byte % 4`.
pub const SIP004: [Method; 4] = [
    Method::Aes128Gcm,
    Method::Aes256Gcm,
    Method::Chacha20IetfPoly1305,
    Method::Xchacha20IetfPoly1305,
];

/// The SIP022 methods, selected by `byte % 3`.
pub const SIP022: [Method; 3] = [
    Method::Blake3Aes128Gcm,
    Method::Blake3Aes256Gcm,
    Method::Blake3Chacha20Poly1305,
];

/// The password of the SIP004 keys.
pub const PASSWORD: &str = "fuzz-password";

/// The fixed key for `method`: [`PASSWORD`] for SIP004, bytes 0, 1, 2, ... for SIP022.
pub fn key(method: Method) -> Key {
    if method.is_2022() {
        let bytes: Vec<u8> = (0..method.key_len() as u8).collect();
        Key::from_bytes(method, &bytes).expect("key of the method's length")
    } else {
        Key::new(method, PASSWORD).expect("non-empty password")
    }
}

/// The request salt SIP022 response streams must echo (`salt_len` bytes of 0x11).
pub fn request_salt(method: Method) -> Vec<u8> {
    vec![0x11; method.salt_len()]
}

/// The client session id SIP022 server packets must echo.
pub const CLIENT_SESSION_ID: u64 = 0x0123_4567_89ab_cdef;

/// Reads the `[k][k × u16 LE]` piece lengths at the front of `data`; returns them and the rest.
pub fn read_pieces(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&k, mut rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let mut pieces = Vec::new();
    for _ in 0..usize::from(k % 16) {
        if rest.len() < 2 {
            break;
        }
        pieces.push(usize::from(u16::from_le_bytes([rest[0], rest[1]])));
        rest = &rest[2..];
    }
    (pieces, rest)
}

/// The `[k][k × u16 LE]` encoding of `pieces` (for seeds).
pub fn write_pieces(pieces: &[u16], out: &mut Vec<u8>) {
    out.push(pieces.len() as u8);
    for p in pieces {
        out.extend_from_slice(&p.to_le_bytes());
    }
}

/// Cuts `data` into consecutive pieces of the given lengths (clamped), the rest last.
pub fn split<'a>(data: &'a [u8], pieces: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(pieces.len() + 1);
    let mut rest = data;
    for &len in pieces {
        let (piece, tail) = rest.split_at(len.min(rest.len()));
        out.push(piece);
        rest = tail;
    }
    out.push(rest);
    out
}

/// Reads `[u16 LE length][bytes]` records until the input ends (a short last record is kept
/// as is), at most `max` of them.
pub fn read_records(mut data: &[u8], max: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 2 && out.len() < max {
        let len = usize::from(u16::from_le_bytes([data[0], data[1]]));
        let body = &data[2..];
        let (record, rest) = body.split_at(len.min(body.len()));
        out.push(record);
        data = rest;
    }
    out
}

/// Appends one `[u16 LE length][bytes]` record (for seeds).
pub fn write_record(record: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(record.len() as u16).to_le_bytes());
    out.extend_from_slice(record);
}

/// A SIP022 stream decoder as the `sip022_*` targets select it from their flags byte: bit 1
/// clear, ssserver's request decoder (bit 0: empty requests allowed); set, sslocal's response
/// decoder for [`request_salt`]. Both run on the fixed key and clock, with a salt hook that
/// counts its calls in `hook_calls` and calls every salt fresh except one starting with 0xEE
/// (the replay path).
pub enum Sip022Decoder {
    /// ssserver's side.
    Request(RequestDecryptor),
    /// sslocal's side.
    Response(ResponseDecryptor),
}

impl Sip022Decoder {
    /// The decoder `flags` selects, for `method`.
    pub fn new(flags: u8, method: Method, hook_calls: std::rc::Rc<std::cell::Cell<u32>>) -> Sip022Decoder {
        let key = key(method);
        let hook = Box::new(move |salt: &[u8]| {
            hook_calls.set(hook_calls.get() + 1);
            salt[0] != 0xEE
        });
        if flags & 2 == 0 {
            let mut d = RequestDecryptor::new(&key).expect("a SIP022 key");
            d.set_clock(fixed_clock);
            d.allow_empty_request(flags & 1 == 1);
            d.set_salt_hook(hook);
            Sip022Decoder::Request(d)
        } else {
            let mut d = ResponseDecryptor::new(&key, &request_salt(method)).expect("a SIP022 key");
            d.set_clock(fixed_clock);
            d.set_salt_hook(hook);
            Sip022Decoder::Response(d)
        }
    }

    /// `feed` of the decoder.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        match self {
            Sip022Decoder::Request(d) => d.feed(input, out),
            Sip022Decoder::Response(d) => d.feed(input, out),
        }
    }

    /// `open_in_place` of the decoder.
    pub fn open_in_place(&mut self, buf: &mut [u8], out: &mut usize, raw: &mut usize) -> Result<(), Error> {
        match self {
            Sip022Decoder::Request(d) => d.open_in_place(buf, out, raw),
            Sip022Decoder::Response(d) => d.open_in_place(buf, out, raw),
        }
    }

    /// Ciphertext held for the next call.
    pub fn buffered(&self) -> usize {
        match self {
            Sip022Decoder::Request(d) => d.buffered(),
            Sip022Decoder::Response(d) => d.buffered(),
        }
    }

    /// The request's target address, once decrypted (requests only).
    pub fn target(&self) -> Option<Vec<u8>> {
        match self {
            Sip022Decoder::Request(d) => d.target().map(<[u8]>::to_vec),
            Sip022Decoder::Response(_) => None,
        }
    }
}
