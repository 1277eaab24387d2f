//! Ciphers and framing: SIP004 AEAD streams and packets, SIP022, replay protection.
//!
//! Everything here is sans-I/O: pure state machines over byte buffers that the relay feeds
//! with whatever the event loop read and drains into whatever it will write. Ciphertext and
//! plaintext are appended to caller-provided `Vec<u8>`s (reuse them: no allocation happens
//! per chunk once they have grown), and AEAD operations run in place in those buffers.
//! For bulk data the relay skips even that copy: once a stream's headers are out,
//! [`ChunkSealer`] seals plaintext that was read straight into the gaps of the output buffer,
//! and the decryptors' `open_in_place` open ciphertext where it was read, leaving plaintext
//! behind it.
//!
//! The primitives come from audited crates (ring for AES-GCM and ChaCha20-Poly1305, RustCrypto
//! for XChaCha20-Poly1305 and the raw AES block cipher, md-5, blake3, ring's HKDF-SHA1); this
//! module only writes the framing.
//!
//! # Map
//!
//! | wire format | module | types |
//! |---|---|---|
//! | methods, keys | [`method`], [`key`] | [`Method`], [`Key`] |
//! | SIP004 TCP stream | [`aead`] | [`Encryptor`], [`Decryptor`] |
//! | SIP004 UDP packet | [`udp`] | [`encrypt_packet`], [`decrypt_packet`] |
//! | SIP022 TCP stream | [`sip022`] | [`RequestEncryptor`], [`RequestDecryptor`], [`ResponseEncryptor`], [`ResponseDecryptor`] |
//! | SIP022 UDP packet | [`udp2022`] | [`UdpCipher`], [`UdpSender`], [`UdpReceiver`] |
//! | replay protection | [`replay`] | [`PingPongBloom`] (SIP004 salts), [`SaltPool`] (SIP022 salts), [`ReplayWindow`] (SIP022 packet ids) |
//!
//! # Replay hooks
//!
//! Stream decryptors accept an optional [`SaltHook`]: a closure called once per stream with
//! the peer's salt, after the first chunk authenticated (and, for SIP022, after the header's
//! timestamp was checked, as the spec orders it). It returns `true` when the salt is fresh
//! (and records it); `false` fails the stream with [`Error::ReplayedSalt`]. The filters in
//! [`replay`] all use the same convention, so a hook is typically
//! `Box::new(move |salt| filter.borrow_mut().check_and_insert(salt))`.

pub mod aead;
mod cipher;
pub mod key;
pub mod method;
pub mod replay;
pub mod sip022;
pub mod udp;
pub mod udp2022;

use std::fmt;
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

pub use aead::{CHUNK_OVERHEAD, ChunkSealer, Decryptor, Encryptor};
pub use key::Key;
pub use method::Method;
pub use replay::{PingPongBloom, ReplayWindow, SaltPool};
pub use sip022::{RequestDecryptor, RequestEncryptor, ResponseDecryptor, ResponseEncryptor};
pub use udp::{decrypt_packet, encrypt_packet, encrypt_packet_in_place, encrypt_packet_recording};
pub use udp2022::{UdpCipher, UdpEnvelope, UdpMessage, UdpReceiver, UdpSender};

/// Length of every AEAD tag used by shadowsocks.
pub const TAG_LEN: usize = 16;
/// Largest key (and salt) length of any supported method.
pub const MAX_KEY_LEN: usize = 32;
/// Largest payload of one SIP004 chunk.
pub const SIP004_MAX_PAYLOAD: usize = 0x3FFF;
/// Largest payload of one SIP022 chunk.
pub const SIP022_MAX_PAYLOAD: usize = 0xFFFF;
/// SIP022: largest accepted difference, in seconds, between a header's timestamp and our clock.
pub const MAX_TIME_DIFF: u64 = 30;

/// Called with the peer's salt once per stream; returns `true` if the salt is fresh (and
/// records it), `false` if it is a replay. See the module documentation.
pub type SaltHook = Box<dyn FnMut(&[u8]) -> bool>;

/// A clock giving the current Unix time in seconds; [`unix_time`] unless replaced (tests).
pub type Clock = fn() -> u64;

/// The current Unix time in whole seconds (0 if the system clock is before 1970).
pub fn unix_time() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What went wrong in a crypto or framing check. Converts into [`io::Error`] of kind
/// [`io::ErrorKind::InvalidData`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The method name is not one we support.
    UnknownMethod(String),
    /// The key (or password) is unusable; the text says why (never contains key material).
    InvalidKey(String),
    /// The operation does not apply to this method (e.g. SIP004 framing with a 2022 key).
    WrongMethod {
        /// The method the key was made for.
        method: Method,
        /// What was attempted.
        operation: &'static str,
    },
    /// The system random number generator failed.
    Random,
    /// An AEAD tag did not verify: wrong key, corrupted or forged data.
    Authentication,
    /// A SIP004 length chunk announced more than 0x3FFF bytes.
    ChunkTooLong(usize),
    /// A packet is shorter than its fixed parts (salt/header plus tag).
    PacketTooShort(usize),
    /// SIP022: the header type byte is not the one expected for this direction.
    HeaderType {
        /// The type this direction requires.
        expected: u8,
        /// The type received.
        got: u8,
    },
    /// SIP022: the header timestamp differs from our clock by more than 30 seconds.
    Timestamp {
        /// The peer's timestamp.
        theirs: u64,
        /// Our clock.
        ours: u64,
    },
    /// SIP022: the response does not echo our request salt.
    SaltMismatch,
    /// The peer's salt was seen before (replay filter).
    ReplayedSalt,
    /// SIP022 UDP: the packet id is a duplicate or too old for the sliding window.
    ReplayedPacket(u64),
    /// SIP022 UDP: the packet belongs to another session than this receiver's.
    SessionMismatch,
    /// A header is malformed; the text says which field.
    BadHeader(&'static str),
    /// Something to send does not fit the wire format; the text says what.
    TooLong(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownMethod(name) => {
                write!(f, "unknown method {name:?}; valid methods are: ")?;
                for (i, m) in Method::ALL.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(m.name())?;
                }
                Ok(())
            }
            Error::InvalidKey(why) => write!(f, "invalid key: {why}"),
            Error::WrongMethod { method, operation } => write!(f, "{operation} is not possible with method {method}"),
            Error::Random => f.write_str("the system random number generator failed"),
            Error::Authentication => f.write_str("AEAD authentication failed (wrong key or corrupted data)"),
            Error::ChunkTooLong(n) => write!(f, "chunk length {n:#x} exceeds the SIP004 maximum 0x3fff"),
            Error::PacketTooShort(n) => write!(f, "packet of {n} bytes is too short"),
            Error::HeaderType { expected, got } => write!(f, "header type {got}, expected {expected}"),
            Error::Timestamp { theirs, ours } => write!(
                f,
                "header timestamp {theirs} is more than {MAX_TIME_DIFF} s away from our clock {ours}"
            ),
            Error::SaltMismatch => f.write_str("response header does not echo the request salt"),
            Error::ReplayedSalt => f.write_str("replayed salt"),
            Error::ReplayedPacket(id) => write!(f, "packet id {id} is replayed or outside the window"),
            Error::SessionMismatch => f.write_str("packet belongs to another session"),
            Error::BadHeader(what) => write!(f, "malformed header: {what}"),
            Error::TooLong(what) => write!(f, "too long: {what}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// Checks a SIP022 timestamp against `now`.
pub(crate) fn check_timestamp(theirs: u64, now: u64) -> Result<(), Error> {
    if theirs.abs_diff(now) > MAX_TIME_DIFF {
        return Err(Error::Timestamp { theirs, ours: now });
    }
    Ok(())
}

/// Length of the SOCKS5 address (ATYP, address, port) at the start of `buf`, if complete and
/// well-formed enough to delimit. The protocol module does the real parsing; this only finds
/// where the address ends inside a decrypted header.
pub(crate) fn socks_addr_len(buf: &[u8]) -> Option<usize> {
    let len = match *buf.first()? {
        1 => 1 + 4 + 2,
        4 => 1 + 16 + 2,
        3 => 1 + 1 + usize::from(*buf.get(1)?) + 2,
        _ => return None,
    };
    (buf.len() >= len).then_some(len)
}

/// Fills `buf` from the system RNG.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), Error> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new().fill(buf).map_err(|_| Error::Random)
}

/// Salts drawn at most by [`fill_recorded_salt`] before it gives up: a random salt the replay
/// filter calls seen is a Bloom false positive (about one in a million), so several in a row
/// mean the filter or the RNG is broken.
const SALT_DRAWS: usize = 4;

/// Fills `salt` from the system RNG with a salt that `record` accepted. `record` is a replay
/// filter's check-and-insert: a relay records its own salts so that what it sent, captured and
/// sent back to it, is refused as a replay instead of being taken for a peer's (SIP004
/// reflection); a salt it refuses is drawn again. [`Error::ReplayedSalt`] if it refuses every
/// draw.
pub(crate) fn fill_recorded_salt(salt: &mut [u8], record: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), Error> {
    for _ in 0..SALT_DRAWS {
        fill_random(salt)?;
        if record(salt) {
            return Ok(());
        }
    }
    Err(Error::ReplayedSalt)
}

/// A uniformly-enough random padding length in 1..=900 (SIP022 `MaxPaddingLength`).
pub(crate) fn random_padding_len() -> Result<usize, Error> {
    let mut b = [0u8; 2];
    fill_random(&mut b)?;
    Ok(1 + usize::from(u16::from_le_bytes(b)) % 900)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_converts_to_invalid_data() {
        let e: io::Error = Error::Authentication.into();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("authentication"));
    }

    #[test]
    fn socks_addr_lengths() {
        assert_eq!(socks_addr_len(&[1, 127, 0, 0, 1, 0, 80, 9]), Some(7));
        assert_eq!(socks_addr_len(&[1, 127, 0, 0, 1, 0]), None);
        assert_eq!(socks_addr_len(&[3, 3, b'a', b'b', b'c', 0, 80]), Some(7));
        assert_eq!(socks_addr_len(&[4; 19]), Some(19));
        assert_eq!(socks_addr_len(&[9, 0, 0]), None);
        assert_eq!(socks_addr_len(&[]), None);
    }

    #[test]
    fn timestamp_window() {
        assert!(check_timestamp(1000, 1030).is_ok());
        assert!(check_timestamp(1030, 1000).is_ok());
        assert_eq!(
            check_timestamp(1000, 1031),
            Err(Error::Timestamp {
                theirs: 1000,
                ours: 1031
            })
        );
        assert!(check_timestamp(1031, 1000).is_err());
    }

    #[test]
    fn padding_in_range() {
        for _ in 0..200 {
            let n = random_padding_len().unwrap();
            assert!((1..=900).contains(&n));
        }
    }
}
