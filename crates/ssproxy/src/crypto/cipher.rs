//! The AEAD primitives behind one uniform in-place interface, and the nonce counter.

use std::fmt;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use super::{Error, Method, TAG_LEN};

/// An AEAD keyed with a session subkey (or, for SIP022 chacha UDP, the PSK).
#[expect(
    clippy::large_enum_variant,
    reason = "ring's key (the common case) dominates; boxing it would allocate per UDP packet"
)]
pub(crate) enum Aead {
    /// AES-128/256-GCM and ChaCha20-Poly1305 from ring.
    Ring(LessSafeKey),
    /// XChaCha20-Poly1305 from RustCrypto.
    XChaCha(XChaCha20Poly1305),
}

impl Aead {
    /// The AEAD of a stream/packet of `method` keyed with `key` (`method.key_len()` bytes).
    pub(crate) fn new(method: Method, key: &[u8]) -> Aead {
        let alg = match method {
            Method::Aes128Gcm | Method::Blake3Aes128Gcm => &AES_128_GCM,
            Method::Aes256Gcm | Method::Blake3Aes256Gcm => &AES_256_GCM,
            Method::Chacha20IetfPoly1305 | Method::Blake3Chacha20Poly1305 => &CHACHA20_POLY1305,
            Method::Xchacha20IetfPoly1305 => return Aead::new_xchacha(key),
        };
        let unbound = UnboundKey::new(alg, key).expect("key length matches the method");
        Aead::Ring(LessSafeKey::new(unbound))
    }

    /// XChaCha20-Poly1305 keyed with a 32-byte key.
    pub(crate) fn new_xchacha(key: &[u8]) -> Aead {
        Aead::XChaCha(XChaCha20Poly1305::new_from_slice(key).expect("32-byte XChaCha key"))
    }

    /// Encrypts `buf[start..]` in place and appends the tag.
    pub(crate) fn seal_tail(&self, nonce: &[u8], buf: &mut Vec<u8>, start: usize) {
        let len = buf.len() - start;
        buf.resize(buf.len() + TAG_LEN, 0);
        self.seal_in(nonce, &mut buf[start..], len);
    }

    /// Encrypts `buf[..len]` in place and writes the tag into `buf[len..len + TAG_LEN]`, for
    /// payload that was read straight into its place in an output buffer.
    pub(crate) fn seal_in(&self, nonce: &[u8], buf: &mut [u8], len: usize) {
        let (data, rest) = buf.split_at_mut(len);
        let tag_out = &mut rest[..TAG_LEN];
        match self {
            Aead::Ring(key) => {
                let nonce = Nonce::try_assume_unique_for_key(nonce).expect("12-byte nonce");
                let t = key
                    .seal_in_place_separate_tag(nonce, Aad::empty(), data)
                    .expect("chunk is far below the AEAD's maximum length");
                tag_out.copy_from_slice(t.as_ref());
            }
            Aead::XChaCha(c) => {
                let t = c
                    .encrypt_in_place_detached(XNonce::from_slice(nonce), b"", data)
                    .expect("chunk is far below the AEAD's maximum length");
                tag_out.copy_from_slice(&t);
            }
        }
    }

    /// Decrypts the ciphertext and tag at `buf[src..]`, leaving the plaintext at the front of
    /// `buf`; returns its length. ring's ciphers shift while they decrypt, so a chunk opened
    /// this way lands next to the plaintext before it without a separate copy.
    pub(crate) fn open_within(&self, nonce: &[u8], buf: &mut [u8], src: usize) -> Result<usize, Error> {
        let len = match (buf.len() - src).checked_sub(TAG_LEN) {
            Some(len) => len,
            None => return Err(Error::PacketTooShort(buf.len() - src)),
        };
        match self {
            Aead::Ring(key) => {
                let nonce = Nonce::try_assume_unique_for_key(nonce).expect("12-byte nonce");
                key.open_within(nonce, Aad::empty(), buf, src..)
                    .map_err(|_| Error::Authentication)?;
            }
            Aead::XChaCha(_) => {
                self.open(nonce, &mut buf[src..])?;
                buf.copy_within(src..src + len, 0);
            }
        }
        Ok(len)
    }

    /// Decrypts `buf` (ciphertext followed by the tag) in place; returns the plaintext length,
    /// the plaintext being `buf[..len]`.
    pub(crate) fn open(&self, nonce: &[u8], buf: &mut [u8]) -> Result<usize, Error> {
        let Some(len) = buf.len().checked_sub(TAG_LEN) else {
            return Err(Error::PacketTooShort(buf.len()));
        };
        match self {
            Aead::Ring(key) => {
                let nonce = Nonce::try_assume_unique_for_key(nonce).expect("12-byte nonce");
                key.open_in_place(nonce, Aad::empty(), buf)
                    .map_err(|_| Error::Authentication)?;
            }
            Aead::XChaCha(c) => {
                let (data, tag) = buf.split_at_mut(len);
                let tag = chacha20poly1305::Tag::from_slice(tag);
                c.decrypt_in_place_detached(XNonce::from_slice(nonce), b"", data, tag)
                    .map_err(|_| Error::Authentication)?;
            }
        }
        Ok(len)
    }
}

impl fmt::Debug for Aead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Aead::Ring(key) => write!(f, "Aead({:?}, <redacted>)", key.algorithm()),
            Aead::XChaCha(_) => f.write_str("Aead(XChaCha20-Poly1305, <redacted>)"),
        }
    }
}

/// A little-endian nonce counter of 12 or 24 bytes, starting at zero.
#[derive(Debug, Clone)]
pub(crate) struct NonceCounter {
    bytes: [u8; 24],
    len: usize,
}

impl NonceCounter {
    /// A zero nonce of `len` bytes.
    pub(crate) fn new(len: usize) -> NonceCounter {
        NonceCounter { bytes: [0; 24], len }
    }

    /// The current nonce.
    pub(crate) fn get(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Adds one (little-endian, wrapping).
    pub(crate) fn increment(&mut self) {
        for b in &mut self.bytes[..self.len] {
            *b = b.wrapping_add(1);
            if *b != 0 {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_counts_little_endian() {
        let mut n = NonceCounter::new(12);
        assert_eq!(n.get(), &[0; 12]);
        n.increment();
        assert_eq!(n.get(), &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        for _ in 0..255 {
            n.increment();
        }
        assert_eq!(n.get(), &[0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut n = NonceCounter::new(24);
        n.bytes[..24].fill(0xff);
        n.increment();
        assert_eq!(n.get(), &[0; 24]);
    }

    #[test]
    fn aes_gcm_known_answer() {
        // python3 cryptography: AESGCM(bytes(range(16))).encrypt(bytes(12), b"hello", None)
        let aead = Aead::new(Method::Aes128Gcm, &(0u8..16).collect::<Vec<_>>());
        let mut buf = b"hello".to_vec();
        aead.seal_tail(&[0; 12], &mut buf, 0);
        assert_eq!(hex::encode(&buf), AES128_KAT);
        let n = aead.open(&[0; 12], &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
    }

    #[test]
    fn sealing_into_place_and_opening_with_a_shift() {
        for m in [
            Method::Aes128Gcm,
            Method::Chacha20IetfPoly1305,
            Method::Xchacha20IetfPoly1305,
        ] {
            let aead = Aead::new(m, &[7; 32][..m.key_len()]);
            let nonce = vec![1u8; m.nonce_len()];
            let mut expected = b"payload".to_vec();
            aead.seal_tail(&nonce, &mut expected, 0);
            let mut buf = vec![0u8; 5 + 7 + TAG_LEN];
            buf[5..12].copy_from_slice(b"payload");
            aead.seal_in(&nonce, &mut buf[5..], 7);
            assert_eq!(&buf[5..], &expected[..], "{m}");
            assert_eq!(aead.open_within(&nonce, &mut buf, 5), Ok(7), "{m}");
            assert_eq!(&buf[..7], b"payload", "{m}");
            buf[5..].copy_from_slice(&expected);
            buf[6] ^= 1;
            assert_eq!(aead.open_within(&nonce, &mut buf, 5), Err(Error::Authentication), "{m}");
            assert_eq!(
                aead.open_within(&nonce, &mut buf, 20),
                Err(Error::PacketTooShort(8)),
                "{m}"
            );
        }
    }

    const AES128_KAT: &str = "21b3eb3ff6d5da0429e8cdfe3e7c225048a22ae7c0";

    #[test]
    fn open_rejects_tampering_and_short_input() {
        for m in [
            Method::Aes256Gcm,
            Method::Chacha20IetfPoly1305,
            Method::Xchacha20IetfPoly1305,
        ] {
            let aead = Aead::new(m, &[9; 32]);
            let nonce = vec![3u8; m.nonce_len()];
            let mut buf = vec![0xEE; 5];
            buf.extend_from_slice(b"abc");
            aead.seal_tail(&nonce, &mut buf, 5);
            assert_eq!(&buf[..5], &[0xEE; 5]);
            let mut ct = buf[5..].to_vec();
            ct[1] ^= 1;
            assert_eq!(aead.open(&nonce, &mut ct), Err(Error::Authentication), "{m}");
            let mut ct = buf[5..].to_vec();
            assert_eq!(aead.open(&nonce, &mut ct), Ok(3));
            assert_eq!(&ct[..3], b"abc");
            assert_eq!(aead.open(&nonce, &mut [0; 15]), Err(Error::PacketTooShort(15)));
        }
    }
}
