//! SIP022 ("Shadowsocks 2022 Edition") TCP streams.
//!
//! ```text
//! request:  [salt][fixed header + tag][variable header + tag][len + tag][payload + tag]...
//!   fixed:    type 0 (u8) | timestamp (u64 BE) | variable header length (u16 BE)
//!   variable: SOCKS address | padding length (u16 BE) | padding | initial payload
//! response: [salt][fixed header + tag][payload + tag][len + tag][payload + tag]...
//!   fixed:    type 1 (u8) | timestamp (u64 BE) | request salt | first payload length (u16 BE)
//! ```
//!
//! Chunks are sealed as in SIP004 (little-endian nonce counter from zero, one increment per
//! chunk) with the BLAKE3-derived session subkey, and carry up to 0xFFFF bytes. Timestamps more
//! than 30 s away from our clock are rejected.
//!
//! The spec also asks relays for things outside these state machines: send the salt and the
//! request headers in one write (each `encrypt` call appends them together, so write `out` at
//! once), and on a bad header do not close in a way that reveals how many bytes were consumed
//! (drain, or set `SO_LINGER` 0).

use std::fmt;
use std::mem;

use super::aead::{ChunkReader, ChunkSealer, Framed, Gather, Opener, SMALL, Salt, Sealer, process_copying};
use super::{
    Clock, Error, Key, SIP022_MAX_PAYLOAD, SaltHook, TAG_LEN, check_timestamp, random_padding_len, socks_addr_len,
    unix_time,
};

/// Header type of request (client-to-server) streams.
const TYPE_CLIENT: u8 = 0;
/// Header type of response (server-to-client) streams.
const TYPE_SERVER: u8 = 1;
/// Plaintext length of the request fixed header.
const REQUEST_FIXED_LEN: usize = 1 + 8 + 2;

fn require_2022(key: &Key, operation: &'static str) -> Result<(), Error> {
    if !key.method().is_2022() {
        return Err(Error::WrongMethod {
            method: key.method(),
            operation,
        });
    }
    Ok(())
}

/// Opens a fixed header (request or response) into `buf` and checks the two fields
/// both start with: the header type, then the timestamp against `clock`. Returns the
/// header's plaintext length.
fn open_fixed_header(
    opener: &mut Opener,
    unit: &[u8],
    buf: &mut [u8; SMALL],
    expected: u8,
    clock: Clock,
) -> Result<usize, Error> {
    let n = opener.open_small(unit, buf)?;
    if buf[0] != expected {
        return Err(Error::HeaderType { expected, got: buf[0] });
    }
    let timestamp = u64::from_be_bytes(buf[1..9].try_into().expect("8 bytes"));
    check_timestamp(timestamp, clock())?;
    Ok(n)
}

/// Asks the replay hook, if any, whether the peer's salt is new: after the header
/// authenticated and its timestamp passed, as the spec orders the checks.
fn admit_salt(hook: &mut Option<SaltHook>, salt: &Option<Salt>) -> Result<(), Error> {
    if let (Some(hook), Some(salt)) = (hook, salt)
        && !hook(salt.get())
    {
        return Err(Error::ReplayedSalt);
    }
    Ok(())
}

/// Plaintext length of the response fixed header for this salt length.
fn response_fixed_len(salt_len: usize) -> usize {
    1 + 8 + salt_len + 2
}

/// The client's request stream (sslocal to ssserver): writes the headers, with the target
/// address and as much of the first data as fits as initial payload, then data chunks.
#[derive(Debug)]
pub struct RequestEncryptor {
    sealer: Sealer,
    salt: Salt,
    target: Vec<u8>,
    header_sent: bool,
    clock: Clock,
}

impl RequestEncryptor {
    /// A request stream to `target`, a SOCKS5 address (ATYP, address, port), with a fresh
    /// random salt. Fails for SIP004 keys, malformed addresses, or if the RNG fails.
    pub fn new(key: &Key, target: &[u8]) -> Result<RequestEncryptor, Error> {
        require_2022(key, "SIP022 request encryption")?;
        let salt = Salt::random(key.method().salt_len())?;
        RequestEncryptor::build(key, salt, target)
    }

    /// As [`RequestEncryptor::new`] with a given salt (tests; never reuse salts on the wire).
    /// Panics if `salt` is not `salt_len` bytes.
    pub fn with_salt(key: &Key, salt: &[u8], target: &[u8]) -> Result<RequestEncryptor, Error> {
        require_2022(key, "SIP022 request encryption")?;
        assert_eq!(salt.len(), key.method().salt_len(), "salt length");
        RequestEncryptor::build(key, Salt::new(salt), target)
    }

    fn build(key: &Key, salt: Salt, target: &[u8]) -> Result<RequestEncryptor, Error> {
        if socks_addr_len(target) != Some(target.len()) {
            return Err(Error::BadHeader("target is not one SOCKS5 address"));
        }
        Ok(RequestEncryptor {
            sealer: Sealer::new(key, salt.get()),
            salt,
            target: target.to_vec(),
            header_sent: false,
            clock: unix_time,
        })
    }

    /// Replaces the clock used for the header timestamp.
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// This stream's salt; the response must echo it (give it to [`ResponseDecryptor::new`]).
    pub fn salt(&self) -> &[u8] {
        self.salt.get()
    }

    /// Whether the headers have been written.
    pub fn header_sent(&self) -> bool {
        self.header_sent
    }

    /// Once the headers are out, the sealer for reading plaintext straight into place.
    pub fn steady(&mut self) -> Option<ChunkSealer<'_>> {
        self.header_sent.then(|| self.sealer.chunks(SIP022_MAX_PAYLOAD))
    }

    /// Appends the encryption of `plaintext` to `out`. The first call always writes the salt
    /// and both header chunks, with up to 0xFFFF bytes of `plaintext` (less the address) as
    /// initial payload, or, if `plaintext` is empty, 1 to 900 bytes of padding as the spec
    /// requires; the rest follows as data chunks. Later calls with empty `plaintext` append
    /// nothing. Fails only if the RNG fails.
    pub fn encrypt(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        let rest = if self.header_sent {
            plaintext
        } else {
            let room = SIP022_MAX_PAYLOAD - self.target.len() - 2;
            let (initial, rest) = plaintext.split_at(plaintext.len().min(room));
            let padding = if initial.is_empty() { random_padding_len()? } else { 0 };
            let var_len = self.target.len() + 2 + padding + initial.len();
            out.reserve(self.salt.get().len() + REQUEST_FIXED_LEN + var_len + 2 * TAG_LEN);
            out.extend_from_slice(self.salt.get());

            let mut fixed = [0u8; REQUEST_FIXED_LEN];
            fixed[0] = TYPE_CLIENT;
            fixed[1..9].copy_from_slice(&(self.clock)().to_be_bytes());
            fixed[9..11].copy_from_slice(&(var_len as u16).to_be_bytes());
            self.sealer.seal(&fixed, out);

            let start = out.len();
            out.extend_from_slice(&self.target);
            out.extend_from_slice(&(padding as u16).to_be_bytes());
            out.resize(out.len() + padding, 0);
            out.extend_from_slice(initial);
            self.sealer.seal_tail(out, start);
            self.header_sent = true;
            rest
        };
        self.sealer.seal_chunks(rest, SIP022_MAX_PAYLOAD, out);
        Ok(())
    }
}

/// Parser states of [`RequestDecryptor`].
enum RequestState {
    Salt,
    Fixed(Opener),
    Variable(Opener, usize),
    Data(ChunkReader),
    /// Transient, while a unit is processed (and after a failure).
    Failed,
}

struct RequestIn {
    key: Key,
    state: RequestState,
    salt: Option<Salt>,
    target: Option<Vec<u8>>,
    hook: Option<SaltHook>,
    clock: Clock,
    allow_empty: bool,
}

impl RequestIn {
    /// Parses the decrypted variable header at `out[start..]`, keeps the address, and leaves
    /// only the initial payload there.
    fn take_variable_header(&mut self, out: &mut Vec<u8>, start: usize) -> Result<(), Error> {
        let header = &out[start..];
        let addr_len = socks_addr_len(header).ok_or(Error::BadHeader("target address"))?;
        let Some(pad_field) = header.get(addr_len..addr_len + 2) else {
            return Err(Error::BadHeader("padding length missing"));
        };
        let padding = usize::from(u16::from_be_bytes([pad_field[0], pad_field[1]]));
        let skip = addr_len + 2 + padding;
        if skip > header.len() {
            return Err(Error::BadHeader("padding extends beyond the header chunk"));
        }
        if skip == header.len() && padding == 0 && !self.allow_empty {
            return Err(Error::BadHeader("neither padding nor initial payload"));
        }
        self.target = Some(header[..addr_len].to_vec());
        out.drain(start..start + skip);
        Ok(())
    }
}

impl Framed for RequestIn {
    fn need(&self) -> usize {
        match &self.state {
            RequestState::Salt => self.key.method().salt_len(),
            RequestState::Fixed(_) => REQUEST_FIXED_LEN + TAG_LEN,
            RequestState::Variable(_, len) => len + TAG_LEN,
            RequestState::Data(reader) => reader.need(),
            RequestState::Failed => 1,
        }
    }

    fn process(&mut self, unit: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        self.state = match mem::replace(&mut self.state, RequestState::Failed) {
            RequestState::Salt => {
                self.salt = Some(Salt::new(unit));
                RequestState::Fixed(Opener::new(&self.key, unit))
            }
            RequestState::Fixed(mut opener) => {
                let mut buf = [0u8; SMALL];
                open_fixed_header(&mut opener, unit, &mut buf, TYPE_CLIENT, self.clock)?;
                admit_salt(&mut self.hook, &self.salt)?;
                let len = usize::from(u16::from_be_bytes([buf[9], buf[10]]));
                if len == 0 {
                    return Err(Error::BadHeader("empty variable-length header"));
                }
                RequestState::Variable(opener, len)
            }
            RequestState::Variable(mut opener, _) => {
                let start = out.len();
                opener.open_append(unit, out)?;
                if let Err(e) = self.take_variable_header(out, start) {
                    out.truncate(start);
                    return Err(e);
                }
                RequestState::Data(ChunkReader::new(opener, SIP022_MAX_PAYLOAD))
            }
            RequestState::Data(mut reader) => {
                reader.process(unit, out)?;
                RequestState::Data(reader)
            }
            RequestState::Failed => unreachable!("a failed stream is never fed again"),
        };
        Ok(())
    }

    fn process_at(&mut self, buf: &mut [u8], out: usize, unit: usize) -> Result<usize, Error> {
        if let RequestState::Data(reader) = &mut self.state {
            return reader.process_at(buf, out, unit);
        }
        process_copying(self, buf, out, unit)
    }
}

/// The server's view of a request stream (ssserver reading from sslocal), push-style like
/// [`crate::crypto::Decryptor`]: it checks the fixed header (type 0, timestamp within 30 s,
/// then the salt against the replay hook, in the spec's order), parses the variable header,
/// makes the target address available through [`RequestDecryptor::target`], and appends the
/// initial payload and then all data to the plaintext output. Any failure is final.
pub struct RequestDecryptor {
    gather: Gather,
    inner: RequestIn,
}

impl RequestDecryptor {
    /// A request decryptor. Fails for SIP004 keys.
    pub fn new(key: &Key) -> Result<RequestDecryptor, Error> {
        require_2022(key, "SIP022 request decryption")?;
        Ok(RequestDecryptor {
            gather: Gather::default(),
            inner: RequestIn {
                key: key.clone(),
                state: RequestState::Salt,
                salt: None,
                target: None,
                hook: None,
                clock: unix_time,
                allow_empty: false,
            },
        })
    }

    /// Installs the salt replay check (use a [`crate::crypto::SaltPool`]: the spec forbids
    /// Bloom filters for SIP022), called once after the fixed header authenticated and its
    /// timestamp passed.
    pub fn set_salt_hook(&mut self, hook: SaltHook) {
        self.inner.hook = Some(hook);
    }

    /// Replaces the clock used to check the header timestamp.
    pub fn set_clock(&mut self, clock: Clock) {
        self.inner.clock = clock;
    }

    /// The spec says servers MUST reject a request header with neither padding nor initial
    /// payload, and that is the default. shadowsocks-rust clients pick a padding length of
    /// `random % 900`, so about 1 in 900 of their requests without initial payload is
    /// rejected; `allow(true)` accepts those.
    pub fn allow_empty_request(&mut self, allow: bool) {
        self.inner.allow_empty = allow;
    }

    /// Consumes `input`; appends the initial payload and data to `out`. See
    /// [`crate::crypto::Decryptor::feed`].
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        self.gather.feed(&mut self.inner, input, out)
    }

    /// Decrypts in place; see [`crate::crypto::Decryptor::open_in_place`].
    pub fn open_in_place(&mut self, buf: &mut [u8], out: &mut usize, raw: &mut usize) -> Result<(), Error> {
        self.gather.open_in_place(&mut self.inner, buf, out, raw)
    }

    /// The target SOCKS5 address (ATYP, address, port) once the header is parsed.
    pub fn target(&self) -> Option<&[u8]> {
        self.inner.target.as_deref()
    }

    /// The client's salt, once received; [`ResponseEncryptor::new`] must echo it.
    pub fn salt(&self) -> Option<&[u8]> {
        self.inner.salt.as_ref().map(Salt::get)
    }

    /// Bytes received but not yet decrypted.
    pub fn buffered(&self) -> usize {
        self.gather.buffered()
    }

    /// The error this stream failed with, if it did.
    pub fn error(&self) -> Option<&Error> {
        self.gather.failed()
    }
}

impl fmt::Debug for RequestDecryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestDecryptor")
            .field("method", &self.inner.key.method())
            .field("salt", &self.inner.salt)
            .field("header_parsed", &self.inner.target.is_some())
            .field("buffered", &self.gather.buffered())
            .field("failed", &self.gather.failed())
            .finish_non_exhaustive()
    }
}

/// The server's response stream (ssserver to sslocal). The fixed header (type 1, timestamp,
/// the request salt, first chunk length) goes out with the first data, as the spec requires.
#[derive(Debug)]
pub struct ResponseEncryptor {
    sealer: Sealer,
    salt: Salt,
    request_salt: Salt,
    header_sent: bool,
    clock: Clock,
}

impl ResponseEncryptor {
    /// A response stream to the request whose salt is `request_salt`, with a fresh random
    /// salt. Fails for SIP004 keys, a wrong-length request salt, or if the RNG fails.
    pub fn new(key: &Key, request_salt: &[u8]) -> Result<ResponseEncryptor, Error> {
        require_2022(key, "SIP022 response encryption")?;
        let salt = Salt::random(key.method().salt_len())?;
        ResponseEncryptor::build(key, salt, request_salt)
    }

    /// As [`ResponseEncryptor::new`] with a given salt (tests). Panics if `salt` is not
    /// `salt_len` bytes.
    pub fn with_salt(key: &Key, salt: &[u8], request_salt: &[u8]) -> Result<ResponseEncryptor, Error> {
        require_2022(key, "SIP022 response encryption")?;
        assert_eq!(salt.len(), key.method().salt_len(), "salt length");
        ResponseEncryptor::build(key, Salt::new(salt), request_salt)
    }

    fn build(key: &Key, salt: Salt, request_salt: &[u8]) -> Result<ResponseEncryptor, Error> {
        if request_salt.len() != key.method().salt_len() {
            return Err(Error::BadHeader("request salt length"));
        }
        Ok(ResponseEncryptor {
            sealer: Sealer::new(key, salt.get()),
            salt,
            request_salt: Salt::new(request_salt),
            header_sent: false,
            clock: unix_time,
        })
    }

    /// Replaces the clock used for the header timestamp.
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// This stream's salt.
    pub fn salt(&self) -> &[u8] {
        self.salt.get()
    }

    /// Once the header is out, the sealer for reading plaintext straight into place.
    pub fn steady(&mut self) -> Option<ChunkSealer<'_>> {
        self.header_sent.then(|| self.sealer.chunks(SIP022_MAX_PAYLOAD))
    }

    /// Appends the encryption of `plaintext` to `out`; the first non-empty call writes the
    /// salt and fixed header first. Empty `plaintext` appends nothing.
    pub fn encrypt(&mut self, plaintext: &[u8], out: &mut Vec<u8>) {
        if plaintext.is_empty() {
            return;
        }
        let rest = if self.header_sent {
            plaintext
        } else {
            let (first, rest) = plaintext.split_at(plaintext.len().min(SIP022_MAX_PAYLOAD));
            let salt_len = self.salt.get().len();
            let fixed_len = response_fixed_len(salt_len);
            out.reserve(salt_len + fixed_len + first.len() + 2 * TAG_LEN);
            out.extend_from_slice(self.salt.get());
            let mut fixed = [0u8; SMALL];
            fixed[0] = TYPE_SERVER;
            fixed[1..9].copy_from_slice(&(self.clock)().to_be_bytes());
            fixed[9..9 + salt_len].copy_from_slice(self.request_salt.get());
            fixed[9 + salt_len..fixed_len].copy_from_slice(&(first.len() as u16).to_be_bytes());
            self.sealer.seal(&fixed[..fixed_len], out);
            self.sealer.seal(first, out);
            self.header_sent = true;
            rest
        };
        self.sealer.seal_chunks(rest, SIP022_MAX_PAYLOAD, out);
    }
}

/// Parser states of [`ResponseDecryptor`].
enum ResponseState {
    Salt,
    Fixed(Opener),
    Data(ChunkReader),
    Failed,
}

struct ResponseIn {
    key: Key,
    request_salt: Salt,
    state: ResponseState,
    salt: Option<Salt>,
    hook: Option<SaltHook>,
    clock: Clock,
}

impl Framed for ResponseIn {
    fn need(&self) -> usize {
        match &self.state {
            ResponseState::Salt => self.key.method().salt_len(),
            ResponseState::Fixed(_) => response_fixed_len(self.key.method().salt_len()) + TAG_LEN,
            ResponseState::Data(reader) => reader.need(),
            ResponseState::Failed => 1,
        }
    }

    fn process(&mut self, unit: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        self.state = match mem::replace(&mut self.state, ResponseState::Failed) {
            ResponseState::Salt => {
                self.salt = Some(Salt::new(unit));
                ResponseState::Fixed(Opener::new(&self.key, unit))
            }
            ResponseState::Fixed(mut opener) => {
                let mut buf = [0u8; SMALL];
                let n = open_fixed_header(&mut opener, unit, &mut buf, TYPE_SERVER, self.clock)?;
                let salt_len = self.request_salt.get().len();
                if buf[9..9 + salt_len] != *self.request_salt.get() {
                    return Err(Error::SaltMismatch);
                }
                admit_salt(&mut self.hook, &self.salt)?;
                let len = usize::from(u16::from_be_bytes([buf[n - 2], buf[n - 1]]));
                ResponseState::Data(ChunkReader::with_payload(opener, SIP022_MAX_PAYLOAD, len))
            }
            ResponseState::Data(mut reader) => {
                reader.process(unit, out)?;
                ResponseState::Data(reader)
            }
            ResponseState::Failed => unreachable!("a failed stream is never fed again"),
        };
        Ok(())
    }

    fn process_at(&mut self, buf: &mut [u8], out: usize, unit: usize) -> Result<usize, Error> {
        if let ResponseState::Data(reader) = &mut self.state {
            return reader.process_at(buf, out, unit);
        }
        process_copying(self, buf, out, unit)
    }
}

/// The client's view of a response stream (sslocal reading from ssserver), push-style: checks
/// the fixed header (type 1, timestamp within 30 s, our request salt echoed, then the optional
/// salt replay hook) and appends all data to the plaintext output. Any failure is final.
pub struct ResponseDecryptor {
    gather: Gather,
    inner: ResponseIn,
}

impl ResponseDecryptor {
    /// A decryptor for the response to the request stream whose salt is `request_salt`
    /// ([`RequestEncryptor::salt`]). Fails for SIP004 keys or a wrong-length salt.
    pub fn new(key: &Key, request_salt: &[u8]) -> Result<ResponseDecryptor, Error> {
        require_2022(key, "SIP022 response decryption")?;
        if request_salt.len() != key.method().salt_len() {
            return Err(Error::BadHeader("request salt length"));
        }
        Ok(ResponseDecryptor {
            gather: Gather::default(),
            inner: ResponseIn {
                key: key.clone(),
                request_salt: Salt::new(request_salt),
                state: ResponseState::Salt,
                salt: None,
                hook: None,
                clock: unix_time,
            },
        })
    }

    /// Installs the salt replay check for the server's salt (the spec asks clients to store
    /// incoming salts too), called once after the header verified.
    pub fn set_salt_hook(&mut self, hook: SaltHook) {
        self.inner.hook = Some(hook);
    }

    /// Replaces the clock used to check the header timestamp.
    pub fn set_clock(&mut self, clock: Clock) {
        self.inner.clock = clock;
    }

    /// Consumes `input`, appending data to `out`. See [`crate::crypto::Decryptor::feed`].
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        self.gather.feed(&mut self.inner, input, out)
    }

    /// Decrypts in place; see [`crate::crypto::Decryptor::open_in_place`].
    pub fn open_in_place(&mut self, buf: &mut [u8], out: &mut usize, raw: &mut usize) -> Result<(), Error> {
        self.gather.open_in_place(&mut self.inner, buf, out, raw)
    }

    /// The server's salt, once received.
    pub fn salt(&self) -> Option<&[u8]> {
        self.inner.salt.as_ref().map(Salt::get)
    }

    /// Whether the response header has been verified.
    pub fn header_verified(&self) -> bool {
        matches!(self.inner.state, ResponseState::Data(_))
    }

    /// Bytes received but not yet decrypted.
    pub fn buffered(&self) -> usize {
        self.gather.buffered()
    }

    /// The error this stream failed with, if it did.
    pub fn error(&self) -> Option<&Error> {
        self.gather.failed()
    }
}

impl fmt::Debug for ResponseDecryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseDecryptor")
            .field("method", &self.inner.key.method())
            .field("salt", &self.inner.salt)
            .field("header_verified", &self.header_verified())
            .field("buffered", &self.gather.buffered())
            .field("failed", &self.gather.failed())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;
    use crate::crypto::{Method, SaltPool};

    const SIP022: [Method; 3] = [
        Method::Blake3Aes128Gcm,
        Method::Blake3Aes256Gcm,
        Method::Blake3Chacha20Poly1305,
    ];
    const TARGET: &[u8] = b"\x03\x0bexample.com\x01\xbb";

    fn key(m: Method) -> Key {
        Key::from_bytes(m, &[0x42; 32][..m.key_len()]).unwrap()
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 13 + i / 256) as u8).collect()
    }

    fn past() -> u64 {
        unix_time() - 31
    }

    fn future() -> u64 {
        unix_time() + 31
    }

    fn nearly_past() -> u64 {
        unix_time() - 29
    }

    /// Client request + server response round trip; returns what each side decrypted.
    fn exchange(m: Method, request: &[u8], response: &[u8], step: usize) -> (Vec<u8>, Vec<u8>) {
        let k = key(m);
        let mut req_enc = RequestEncryptor::new(&k, TARGET).unwrap();
        let mut wire = Vec::new();
        req_enc.encrypt(request, &mut wire).unwrap();
        req_enc.encrypt(b"+second", &mut wire).unwrap();
        let mut req_dec = RequestDecryptor::new(&k).unwrap();
        let mut got_req = Vec::new();
        for piece in wire.chunks(step) {
            req_dec.feed(piece, &mut got_req).unwrap();
        }
        assert_eq!(req_dec.target(), Some(TARGET));
        assert_eq!(req_dec.salt(), Some(req_enc.salt()));

        let mut resp_enc = ResponseEncryptor::new(&k, req_dec.salt().unwrap()).unwrap();
        let mut wire = Vec::new();
        resp_enc.encrypt(response, &mut wire);
        resp_enc.encrypt(b"+more", &mut wire);
        let mut resp_dec = ResponseDecryptor::new(&k, req_enc.salt()).unwrap();
        let mut got_resp = Vec::new();
        for piece in wire.chunks(step) {
            resp_dec.feed(piece, &mut got_resp).unwrap();
        }
        assert!(resp_dec.header_verified());
        assert_eq!(resp_dec.salt(), Some(resp_enc.salt()));
        (got_req, got_resp)
    }

    #[test]
    fn steady_sealers_and_in_place_opening() {
        use crate::crypto::aead::tests::{open_pieces, seal_steady};
        for m in SIP022 {
            let k = key(m);
            let msg = data(200_000);
            let salt = vec![9u8; m.salt_len()];
            // Request: header through encrypt, then steady chunks, as the relay sends it.
            let mut a = RequestEncryptor::with_salt(&k, &salt, TARGET).unwrap();
            let mut b = RequestEncryptor::with_salt(&k, &salt, TARGET).unwrap();
            a.set_clock(|| 1_000);
            b.set_clock(|| 1_000);
            assert!(a.steady().is_none());
            let (mut wa, mut wb) = (Vec::new(), Vec::new());
            // With initial payload there is no (random) padding: both write the same header.
            a.encrypt(b"first", &mut wa).unwrap();
            b.encrypt(b"first", &mut wb).unwrap();
            a.encrypt(&msg, &mut wa).unwrap();
            wb.extend(seal_steady(&mut b.steady().unwrap(), &msg[..3 * 0xFFFF], 4 * 0xFFFF));
            wb.extend(seal_steady(&mut b.steady().unwrap(), &msg[3 * 0xFFFF..], 4 * 0xFFFF));
            assert_eq!(wa, wb, "{m}");
            for step in [1000, 65_570, 65_571, 150_000, 300_000] {
                let mut dec = RequestDecryptor::new(&k).unwrap();
                dec.set_clock(|| 1_000);
                let plain = open_pieces(&wa, step, |buf, o, r| dec.open_in_place(buf, o, r)).unwrap();
                assert_eq!(&plain[..5], b"first", "{m} {step}");
                assert_eq!(&plain[5..], &msg[..], "{m} {step}");
                assert_eq!(dec.target(), Some(TARGET));
            }
            // Response: the same, from the server's side.
            let mut enc = ResponseEncryptor::new(&k, &salt).unwrap();
            assert!(enc.steady().is_none());
            let mut wire = Vec::new();
            enc.encrypt(b"first", &mut wire);
            wire.extend(seal_steady(&mut enc.steady().unwrap(), &msg[..100_000], 4 * 0xFFFF));
            for step in [7, 65_551, 65_552, 65_553, 200_000] {
                let mut dec = ResponseDecryptor::new(&k, &salt).unwrap();
                let plain = open_pieces(&wire, step, |buf, o, r| dec.open_in_place(buf, o, r)).unwrap();
                assert_eq!(&plain[..5], b"first", "{m} {step}");
                assert_eq!(&plain[5..], &msg[..100_000], "{m} {step}");
            }
        }
    }

    #[test]
    fn round_trip_every_method_and_size() {
        for m in SIP022 {
            for size in [0, 1, 1000, 0xFFFF - TARGET.len() - 2, 0xFFFF, 200_000] {
                let (req, resp) = exchange(m, &data(size), &data(size), 1 << 20);
                assert_eq!(&req[..size], &data(size)[..], "{m} {size}");
                assert_eq!(&req[size..], b"+second");
                assert_eq!(&resp[..size], &data(size)[..], "{m} {size}");
                assert_eq!(&resp[size..], b"+more");
            }
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        for m in SIP022 {
            let (req, resp) = exchange(m, b"GET / HTTP/1.1", &data(70_000), 1);
            assert_eq!(req, b"GET / HTTP/1.1+second");
            assert_eq!(&resp[..70_000], &data(70_000)[..]);
        }
        let (req, _) = exchange(Method::Blake3Aes128Gcm, b"", b"x", 7);
        assert_eq!(req, b"+second");
    }

    #[test]
    fn request_layout() {
        let k = key(Method::Blake3Aes128Gcm);
        let mut enc = RequestEncryptor::with_salt(&k, &[9; 16], TARGET).unwrap();
        let mut wire = Vec::new();
        enc.encrypt(b"hello", &mut wire).unwrap();
        // salt, fixed header 11 + tag, variable header (address, u16 0, "hello") + tag.
        assert_eq!(wire.len(), 16 + 27 + TARGET.len() + 2 + 5 + 16);
        assert!(enc.header_sent());
        // Nothing more for empty writes after the header.
        enc.encrypt(b"", &mut wire).unwrap();
        assert_eq!(wire.len(), 16 + 27 + TARGET.len() + 2 + 5 + 16);
        // Without initial payload: padding 1..=900.
        let mut enc = RequestEncryptor::new(&k, TARGET).unwrap();
        let mut wire = Vec::new();
        enc.encrypt(b"", &mut wire).unwrap();
        let padding = wire.len() - (16 + 27 + TARGET.len() + 2 + 16);
        assert!((1..=900).contains(&padding), "{padding}");
        // Response: salt, fixed header 1 + 8 + 16 + 2 + tag, data + tag.
        let mut enc = ResponseEncryptor::new(&k, &[9; 16]).unwrap();
        let mut wire = Vec::new();
        enc.encrypt(b"", &mut wire);
        assert!(wire.is_empty());
        enc.encrypt(b"hi", &mut wire);
        assert_eq!(wire.len(), 16 + 27 + 16 + 2 + 16);
    }

    #[test]
    fn known_answer_against_python() {
        // Python: blake3 subkey + cryptography AESGCM, framing written from the spec.
        let k = Key::from_bytes(Method::Blake3Aes128Gcm, &(0u8..16).collect::<Vec<_>>()).unwrap();
        let salt: Vec<u8> = (16u8..32).collect();
        let mut enc = RequestEncryptor::with_salt(&k, &salt, b"\x01\x7f\x00\x00\x01\x00\x50").unwrap();
        enc.set_clock(|| 1_700_000_000);
        let mut wire = Vec::new();
        enc.encrypt(b"hello", &mut wire).unwrap();
        assert_eq!(hex::encode(&wire), KAT_REQUEST);
        let mut resp = ResponseEncryptor::with_salt(&k, &[0x33; 16], &salt).unwrap();
        resp.set_clock(|| 1_700_000_001);
        let mut wire = Vec::new();
        resp.encrypt(b"world", &mut wire);
        assert_eq!(hex::encode(&wire), KAT_RESPONSE);
    }

    const KAT_REQUEST: &str = "101112131415161718191a1b1c1d1e1ff62b42ac395d4aead07a7d7df3d4be6fc83f9a3aba16ae8798b6e7e3ea6945a048111957628ff34e4c2fe5c87bea3fc8d555220ab4021347c0";
    const KAT_RESPONSE: &str = "333333333333333333333333333333338bc65ecece8e15b20031ae79523f918217814046776f90a72808648feedd102eafe2dcde2463727e8f212c4773b128399ca1d724edfd3501f79af3d4517f3d22";

    fn request_wire(k: &Key, clock: Clock, payload: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut enc = RequestEncryptor::new(k, TARGET).unwrap();
        enc.set_clock(clock);
        let mut wire = Vec::new();
        enc.encrypt(payload, &mut wire).unwrap();
        (enc.salt().to_vec(), wire)
    }

    fn serve(k: &Key, wire: &[u8]) -> Result<Vec<u8>, Error> {
        let mut dec = RequestDecryptor::new(k).unwrap();
        let mut out = Vec::new();
        dec.feed(wire, &mut out).map(|()| out)
    }

    #[test]
    fn request_timestamp_window() {
        let k = key(Method::Blake3Aes256Gcm);
        for clock in [past as Clock, future] {
            let (_, wire) = request_wire(&k, clock, b"x");
            assert!(matches!(serve(&k, &wire), Err(Error::Timestamp { .. })));
        }
        let (_, wire) = request_wire(&k, nearly_past, b"x");
        assert_eq!(serve(&k, &wire).unwrap(), b"x");
    }

    #[test]
    fn response_timestamp_and_echoed_salt() {
        let k = key(Method::Blake3Aes128Gcm);
        let request_salt = [1u8; 16];
        let respond = |clock: Clock, echoed: &[u8]| {
            let mut enc = ResponseEncryptor::new(&k, echoed).unwrap();
            enc.set_clock(clock);
            let mut wire = Vec::new();
            enc.encrypt(b"data", &mut wire);
            let mut dec = ResponseDecryptor::new(&k, &request_salt).unwrap();
            let mut out = Vec::new();
            dec.feed(&wire, &mut out).map(|()| out)
        };
        assert_eq!(respond(unix_time, &request_salt).unwrap(), b"data");
        assert!(matches!(respond(past, &request_salt), Err(Error::Timestamp { .. })));
        assert!(matches!(respond(future, &request_salt), Err(Error::Timestamp { .. })));
        assert_eq!(respond(unix_time, &[2u8; 16]), Err(Error::SaltMismatch));
    }

    #[test]
    fn header_types_are_checked() {
        // A request stream replayed back at the client as a response, and vice versa.
        let k = key(Method::Blake3Aes128Gcm);
        let (salt, req_wire) = request_wire(&k, unix_time, b"x");
        let mut dec = ResponseDecryptor::new(&k, &salt).unwrap();
        let err = dec.feed(&req_wire, &mut Vec::new()).unwrap_err();
        // The response fixed header is longer, so the request's bytes fail authentication
        // (or type); either way it is rejected.
        assert!(matches!(err, Error::Authentication | Error::HeaderType { .. }), "{err}");

        // Craft a response-sized header with type 0 using the internal sealer.
        let mut sealer = Sealer::new(&k, &[5; 16]);
        let mut wire = vec![5; 16];
        let mut fixed = vec![TYPE_CLIENT];
        fixed.extend_from_slice(&unix_time().to_be_bytes());
        fixed.extend_from_slice(&salt);
        fixed.extend_from_slice(&1u16.to_be_bytes());
        sealer.seal(&fixed, &mut wire);
        let mut dec = ResponseDecryptor::new(&k, &salt).unwrap();
        assert_eq!(
            dec.feed(&wire, &mut Vec::new()),
            Err(Error::HeaderType { expected: 1, got: 0 })
        );

        let mut sealer = Sealer::new(&k, &[6; 16]);
        let mut wire = vec![6; 16];
        let mut fixed = vec![TYPE_SERVER];
        fixed.extend_from_slice(&unix_time().to_be_bytes());
        fixed.extend_from_slice(&9u16.to_be_bytes());
        sealer.seal(&fixed, &mut wire);
        assert_eq!(serve(&k, &wire), Err(Error::HeaderType { expected: 0, got: 1 }));
    }

    /// A request whose variable header is `var` verbatim (salt 16 bytes of 7).
    pub(crate) fn raw_request(k: &Key, var: &[u8]) -> Vec<u8> {
        let mut sealer = Sealer::new(k, &[7; 16]);
        let mut wire = vec![7; 16];
        let mut fixed = vec![TYPE_CLIENT];
        fixed.extend_from_slice(&unix_time().to_be_bytes());
        fixed.extend_from_slice(&(var.len() as u16).to_be_bytes());
        sealer.seal(&fixed, &mut wire);
        sealer.seal(var, &mut wire);
        wire
    }

    #[test]
    fn variable_header_checks() {
        let k = key(Method::Blake3Aes128Gcm);
        let addr = b"\x01\x0a\x00\x00\x01\x00\x16";
        // Padding 0 and no payload: rejected by default (spec), accepted when allowed.
        let var = [&addr[..], &[0, 0]].concat();
        assert_eq!(
            serve(&k, &raw_request(&k, &var)),
            Err(Error::BadHeader("neither padding nor initial payload"))
        );
        let mut dec = RequestDecryptor::new(&k).unwrap();
        dec.allow_empty_request(true);
        dec.feed(&raw_request(&k, &var), &mut Vec::new()).unwrap();
        assert_eq!(dec.target(), Some(&addr[..]));
        // Padding only.
        let var = [&addr[..], &[0, 3, 0, 0, 0]].concat();
        assert_eq!(serve(&k, &raw_request(&k, &var)).unwrap(), b"");
        // Padding and payload.
        let var = [&addr[..], &[0, 2, 0xEE, 0xEE], b"payload"].concat();
        assert_eq!(serve(&k, &raw_request(&k, &var)).unwrap(), b"payload");
        // Padding beyond the chunk.
        let var = [&addr[..], &[0, 4, 0, 0, 0]].concat();
        assert_eq!(
            serve(&k, &raw_request(&k, &var)),
            Err(Error::BadHeader("padding extends beyond the header chunk"))
        );
        // Truncated address / missing padding length / bad ATYP.
        assert_eq!(
            serve(&k, &raw_request(&k, &addr[..5])),
            Err(Error::BadHeader("target address"))
        );
        assert_eq!(
            serve(&k, &raw_request(&k, addr)),
            Err(Error::BadHeader("padding length missing"))
        );
        assert_eq!(
            serve(&k, &raw_request(&k, &[5, 0, 0, 0])),
            Err(Error::BadHeader("target address"))
        );
    }

    #[test]
    fn salt_replay_through_pool() {
        let k = key(Method::Blake3Aes256Gcm);
        let pool = Rc::new(RefCell::new(SaltPool::default()));
        let (_, wire) = request_wire(&k, unix_time, b"hello");
        let run = |input: &[u8]| {
            let p = pool.clone();
            let mut dec = RequestDecryptor::new(&k).unwrap();
            dec.set_salt_hook(Box::new(move |salt| p.borrow_mut().check_and_insert(salt, unix_time())));
            let mut out = Vec::new();
            dec.feed(input, &mut out).map(|()| out)
        };
        assert_eq!(run(&wire).unwrap(), b"hello");
        assert_eq!(run(&wire), Err(Error::ReplayedSalt));
        // A stale request does not even reach the pool.
        let (salt, old) = request_wire(&k, past, b"hello");
        assert!(matches!(run(&old), Err(Error::Timestamp { .. })));
        assert!(pool.borrow_mut().check_and_insert(&salt, unix_time()));
    }

    #[test]
    fn tampering_truncation_and_failure_is_final() {
        let k = key(Method::Blake3Chacha20Poly1305);
        let (_, wire) = request_wire(&k, unix_time, b"hello");
        for pos in 0..wire.len() {
            let mut bad = wire.clone();
            bad[pos] ^= 0x80;
            assert_eq!(serve(&k, &bad), Err(Error::Authentication), "byte {pos}");
        }
        let mut dec = RequestDecryptor::new(&k).unwrap();
        let mut out = Vec::new();
        dec.feed(&wire[..wire.len() - 1], &mut out).unwrap();
        assert!(out.is_empty() && dec.target().is_none() && dec.error().is_none());
        let mut bad = wire.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(dec.feed(&bad[bad.len() - 1..], &mut out), Err(Error::Authentication));
        assert_eq!(dec.feed(&wire[wire.len() - 1..], &mut out), Err(Error::Authentication));
        assert!(out.is_empty());
    }

    #[test]
    fn wrong_edition_and_bad_arguments() {
        let old = Key::new(Method::Aes128Gcm, "pw").unwrap();
        assert!(matches!(
            RequestEncryptor::new(&old, TARGET),
            Err(Error::WrongMethod { .. })
        ));
        assert!(matches!(RequestDecryptor::new(&old), Err(Error::WrongMethod { .. })));
        assert!(matches!(
            ResponseEncryptor::new(&old, &[0; 16]),
            Err(Error::WrongMethod { .. })
        ));
        assert!(matches!(
            ResponseDecryptor::new(&old, &[0; 16]),
            Err(Error::WrongMethod { .. })
        ));
        let k = key(Method::Blake3Aes128Gcm);
        assert!(RequestEncryptor::new(&k, b"\x01\x00").is_err());
        assert!(ResponseDecryptor::new(&k, &[0; 32]).is_err());
        assert!(ResponseEncryptor::new(&k, &[0; 15]).is_err());
    }
}
