//! The two directions of one relayed TCP stream, as the relay sees them.
//!
//! *Up* is client to destination, *down* the way back. On the server the client
//! side is ciphertext, so up decrypts and down encrypts; on the local it is the
//! other way round. This module hides which framing (SIP004 or SIP022) is in use.

use crate::crypto::{
    self, ChunkSealer, Decryptor, Encryptor, Key, RequestDecryptor, RequestEncryptor, ResponseDecryptor,
    ResponseEncryptor, SaltHook,
};

/// The server's view: decrypts what the client sends, encrypts what goes back.
pub enum ServerCodec {
    /// SIP004 AEAD.
    Aead {
        /// Client to server.
        up: Decryptor,
        /// Server to client; made with a fresh, recorded salt once there is something to
        /// send, so that probes that never authenticate do not fill the replay filter.
        down: Option<Encryptor>,
    },
    /// SIP022: the response header must echo the request's salt, so the
    /// encryptor exists only once the request header has been read.
    Aead2022 {
        /// Client to server.
        up: RequestDecryptor,
        /// Server to client, once the request salt is known.
        down: Option<ResponseEncryptor>,
    },
}

impl ServerCodec {
    /// A codec for a newly accepted client; `on_salt` is the replay check.
    pub fn new(key: &Key, on_salt: SaltHook) -> Result<ServerCodec, crypto::Error> {
        if key.method().is_2022() {
            let mut up = RequestDecryptor::new(key)?;
            up.set_salt_hook(on_salt);
            // shadowsocks-rust's client may send neither padding nor payload (its
            // padding length is random % 900); refusing those would break 1 in 900.
            up.allow_empty_request(true);
            Ok(ServerCodec::Aead2022 { up, down: None })
        } else {
            let mut up = Decryptor::new(key)?;
            up.set_salt_hook(on_salt);
            Ok(ServerCodec::Aead { up, down: None })
        }
    }

    /// Decrypt bytes from the client in place (see
    /// [`Decryptor::open_in_place`](crypto::Decryptor::open_in_place)). With SIP004 the
    /// plaintext starts with the target address; with SIP022 the address is taken out of
    /// the header (see [`header_target`](Self::header_target)).
    pub fn up(&mut self, buf: &mut [u8], out: &mut usize, raw: &mut usize) -> Result<(), crypto::Error> {
        match self {
            ServerCodec::Aead { up, .. } => up.open_in_place(buf, out, raw),
            ServerCodec::Aead2022 { up, .. } => up.open_in_place(buf, out, raw),
        }
    }

    /// SIP022: the target address from the request header, once decrypted.
    pub fn header_target(&self) -> Option<&[u8]> {
        match self {
            ServerCodec::Aead { .. } => None,
            ServerCodec::Aead2022 { up, .. } => up.target(),
        }
    }

    /// Whether the target address travels in the plaintext stream (SIP004).
    pub fn target_in_stream(&self) -> bool {
        matches!(self, ServerCodec::Aead { .. })
    }

    /// Once the response's salt and header are out: the sealer that lets the destination's
    /// bytes be read straight into their place in the client's queue.
    pub fn down_sealer(&mut self) -> Option<ChunkSealer<'_>> {
        match self {
            ServerCodec::Aead { down, .. } => down.as_mut()?.steady(),
            ServerCodec::Aead2022 { down, .. } => down.as_mut()?.steady(),
        }
    }

    /// Encrypt bytes for the client. `record` is the replay filter's check-and-insert: a
    /// SIP004 response salt goes into it (see [`Encryptor::with_recorded_salt`]). SIP022
    /// response salts need not: a response header differs from a request's (its type, and
    /// the request salt it carries), so a reflected response never authenticates.
    pub fn down(
        &mut self,
        key: &Key,
        record: &mut dyn FnMut(&[u8]) -> bool,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), crypto::Error> {
        match self {
            ServerCodec::Aead { down, .. } => {
                if down.is_none() {
                    *down = Some(Encryptor::with_recorded_salt(key, record)?);
                }
                down.as_mut().expect("made above").encrypt(input, out);
                Ok(())
            }
            ServerCodec::Aead2022 { up, down } => {
                if down.is_none() {
                    let salt = up
                        .salt()
                        .ok_or(crypto::Error::BadHeader("response before the request header"))?;
                    *down = Some(ResponseEncryptor::new(key, salt)?);
                }
                down.as_mut().expect("made above").encrypt(input, out);
                Ok(())
            }
        }
    }
}

/// The local's view: encrypts what the client sends, decrypts what comes back.
pub enum LocalCodec {
    /// SIP004 AEAD.
    Aead {
        /// Client to server.
        up: Encryptor,
        /// Server to client.
        down: Decryptor,
        /// The target address is sent once, before the first payload.
        target: Option<Vec<u8>>,
    },
    /// SIP022.
    Aead2022 {
        /// Client to server; carries the target in its header.
        up: RequestEncryptor,
        /// Server to client; checks the echoed request salt.
        down: ResponseDecryptor,
    },
}

impl LocalCodec {
    /// A codec for a stream to `target` (a SOCKS5-encoded address). `salts` is the replay
    /// filter's check-and-insert: with SIP004 our request salt is recorded in it, and the
    /// server's response salt checked against it, so that a captured request stream sent
    /// back to us as a response is refused (reflection). SIP022 needs neither: its response
    /// header has its own type and echoes our salt.
    pub fn new(key: &Key, target: Vec<u8>, mut salts: SaltHook) -> Result<LocalCodec, crypto::Error> {
        if key.method().is_2022() {
            let up = RequestEncryptor::new(key, &target)?;
            let down = ResponseDecryptor::new(key, up.salt())?;
            Ok(LocalCodec::Aead2022 { up, down })
        } else {
            let up = Encryptor::with_recorded_salt(key, &mut *salts)?;
            let mut down = Decryptor::new(key)?;
            down.set_salt_hook(salts);
            Ok(LocalCodec::Aead {
                up,
                down,
                target: Some(target),
            })
        }
    }

    /// Encrypt bytes from the client for the server. The first call also sends
    /// the target address (and, with SIP022, padding when `input` is empty).
    pub fn up(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), crypto::Error> {
        match self {
            LocalCodec::Aead { up, target, .. } => {
                if let Some(mut header) = target.take() {
                    header.extend_from_slice(input);
                    up.encrypt(&header, out);
                } else if !input.is_empty() {
                    up.encrypt(input, out);
                }
                Ok(())
            }
            LocalCodec::Aead2022 { up, .. } => {
                if input.is_empty() && up.header_sent() {
                    return Ok(());
                }
                up.encrypt(input, out)
            }
        }
    }

    /// Once the request's salt and header are out: the sealer that lets the client's bytes
    /// be read straight into their place in the server's queue.
    pub fn up_sealer(&mut self) -> Option<ChunkSealer<'_>> {
        match self {
            LocalCodec::Aead { up, target: None, .. } => up.steady(),
            LocalCodec::Aead { .. } => None,
            LocalCodec::Aead2022 { up, .. } => up.steady(),
        }
    }

    /// Decrypt bytes from the server in place (see
    /// [`Decryptor::open_in_place`](crypto::Decryptor::open_in_place)).
    pub fn down(&mut self, buf: &mut [u8], out: &mut usize, raw: &mut usize) -> Result<(), crypto::Error> {
        match self {
            LocalCodec::Aead { down, .. } => down.open_in_place(buf, out, raw),
            LocalCodec::Aead2022 { down, .. } => down.open_in_place(buf, out, raw),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Method;
    use crate::crypto::sip022::tests::raw_request;

    /// SIP022 says a server MUST refuse a request header with neither padding nor initial
    /// payload; shadowsocks-rust clients send one whenever their random padding length comes
    /// out 0 (1 in 900 of their connections without early data), so the server accepts it.
    #[test]
    fn server_accepts_a_request_without_padding_or_payload_as_rust_clients_send() {
        let key = Key::from_bytes(Method::Blake3Aes128Gcm, &[3; 16]).unwrap();
        let addr = b"\x01\x0a\x00\x00\x01\x00\x16";
        let mut wire = raw_request(&key, &[&addr[..], &[0, 0]].concat());
        let mut codec = ServerCodec::new(&key, Box::new(|_| true)).unwrap();
        let (mut out, mut raw) = (0, 0);
        codec.up(&mut wire, &mut out, &mut raw).unwrap();
        assert_eq!((out, raw), (0, wire.len()));
        assert_eq!(codec.header_target(), Some(&addr[..]));
    }
}
