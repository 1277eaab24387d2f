//! SIP004 AEAD UDP packets: `[salt][payload + tag]`, one session subkey per packet (derived
//! from that packet's salt) and an all-zero nonce. The plaintext is the target SOCKS address
//! followed by the datagram payload; this module does not look inside it.
//!
//! For replay protection (shadowsocks-libev checks UDP salts too), the salt is
//! `packet[..method.salt_len()]`: feed it to a [`crate::crypto::PingPongBloom`] after
//! [`decrypt_packet`] succeeded.

use super::cipher::Aead;
use super::{Error, Key, TAG_LEN, fill_random};

/// The all-zero nonce of SIP004 packets (12 or 24 bytes).
const ZERO_NONCE: [u8; 24] = [0; 24];

fn require_sip004(key: &Key) -> Result<(), Error> {
    if key.method().is_2022() {
        return Err(Error::WrongMethod {
            method: key.method(),
            operation: "SIP004 packet encryption",
        });
    }
    Ok(())
}

/// Appends one encrypted packet (fresh random salt, then `plaintext` sealed) to `out`.
/// Fails for SIP022 keys or if the RNG fails.
pub fn encrypt_packet(key: &Key, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    encrypt_packet_recording(key, plaintext, out, |_| true)
}

/// [`encrypt_packet`], offering each salt drawn to `record` first (a replay filter's
/// check-and-insert): a salt it refuses is drawn again. A relay records its own salts so that
/// a packet it sent, captured and sent back to it, is refused as a replay instead of being
/// taken for a peer's (SIP004 reflection). Fails for SIP022 keys, if the RNG fails, or with
/// [`Error::ReplayedSalt`] if `record` refuses every salt drawn.
pub fn encrypt_packet_recording(
    key: &Key,
    plaintext: &[u8],
    out: &mut Vec<u8>,
    mut record: impl FnMut(&[u8]) -> bool,
) -> Result<(), Error> {
    require_sip004(key)?;
    let salt_len = key.method().salt_len();
    let start = out.len();
    out.reserve(salt_len + plaintext.len() + TAG_LEN);
    out.resize(start + salt_len, 0);
    if let Err(e) = super::fill_recorded_salt(&mut out[start..], &mut record) {
        out.truncate(start);
        return Err(e);
    }
    out.extend_from_slice(plaintext);
    seal_after_salt(key, out, start);
    Ok(())
}

/// Encrypts a packet in place, without copying the payload: `buf` must hold `salt_len`
/// bytes of room (any content) followed by the plaintext. The room receives a fresh salt, the
/// plaintext is encrypted in place and the tag appended. Lets a relay write the address and
/// payload after a gap and send `buf` as is. Fails for SIP022 keys, if `buf` is shorter than a
/// salt, or if the RNG fails.
pub fn encrypt_packet_in_place(key: &Key, buf: &mut Vec<u8>) -> Result<(), Error> {
    require_sip004(key)?;
    let salt_len = key.method().salt_len();
    if buf.len() < salt_len {
        return Err(Error::PacketTooShort(buf.len()));
    }
    fill_random(&mut buf[..salt_len])?;
    seal_after_salt(key, buf, 0);
    Ok(())
}

/// Seals `buf[start + salt_len..]` with the subkey of the salt at `buf[start..]`.
fn seal_after_salt(key: &Key, buf: &mut Vec<u8>, start: usize) {
    let method = key.method();
    let salt_end = start + method.salt_len();
    let subkey = key.subkey(&buf[start..salt_end]);
    Aead::new(method, subkey.bytes()).seal_tail(&ZERO_NONCE[..method.nonce_len()], buf, salt_end);
}

/// Decrypts one packet in place and returns its plaintext (a sub-slice of `packet`). Fails
/// with [`Error::PacketTooShort`] below salt + tag, [`Error::Authentication`] if the tag does
/// not verify, [`Error::WrongMethod`] for SIP022 keys.
pub fn decrypt_packet<'a>(key: &Key, packet: &'a mut [u8]) -> Result<&'a mut [u8], Error> {
    require_sip004(key)?;
    let method = key.method();
    let salt_len = method.salt_len();
    if packet.len() < salt_len + TAG_LEN {
        return Err(Error::PacketTooShort(packet.len()));
    }
    let (salt, body) = packet.split_at_mut(salt_len);
    let subkey = key.subkey(salt);
    let n = Aead::new(method, subkey.bytes()).open(&ZERO_NONCE[..method.nonce_len()], body)?;
    Ok(&mut body[..n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Method;

    const SIP004: [Method; 4] = [
        Method::Aes128Gcm,
        Method::Aes256Gcm,
        Method::Chacha20IetfPoly1305,
        Method::Xchacha20IetfPoly1305,
    ];

    #[test]
    fn round_trip_every_method() {
        for m in SIP004 {
            let key = Key::new(m, "udp password").unwrap();
            for size in [0, 1, 7, 1500, 65_000] {
                let msg: Vec<u8> = (0..size).map(|i| i as u8).collect();
                let mut out = vec![0xAA; 3]; // appends after existing content
                encrypt_packet(&key, &msg, &mut out).unwrap();
                assert_eq!(out.len(), 3 + m.salt_len() + size + 16);
                let plain = decrypt_packet(&key, &mut out[3..]).unwrap();
                assert_eq!(plain, &msg[..], "{m} {size}");
            }
        }
    }

    #[test]
    fn recording_offers_each_salt_and_draws_again_on_refusal() {
        let key = Key::new(Method::Aes256Gcm, "pw").unwrap();
        let mut offered: Vec<Vec<u8>> = Vec::new();
        let mut out = Vec::new();
        encrypt_packet_recording(&key, b"\x01\x7f\x00\x00\x01\x00\x35x", &mut out, |salt| {
            offered.push(salt.to_vec());
            offered.len() > 1 // the first salt is "seen before"
        })
        .unwrap();
        assert_eq!(offered.len(), 2);
        assert_ne!(offered[0], offered[1]);
        assert_eq!(&out[..32], &offered[1][..], "the packet carries the salt recorded");
        assert_eq!(
            decrypt_packet(&key, &mut out).unwrap(),
            b"\x01\x7f\x00\x00\x01\x00\x35x"
        );
        let mut out = vec![9];
        assert_eq!(
            encrypt_packet_recording(&key, b"x", &mut out, |_| false),
            Err(Error::ReplayedSalt)
        );
        assert_eq!(out, [9], "nothing appended on failure");
    }

    #[test]
    fn in_place_round_trip() {
        for m in SIP004 {
            let key = Key::new(m, "pw").unwrap();
            let mut buf = vec![0; m.salt_len()];
            buf.extend_from_slice(b"\x01\x7f\x00\x00\x01\x00\x35payload");
            encrypt_packet_in_place(&key, &mut buf).unwrap();
            assert_eq!(
                decrypt_packet(&key, &mut buf).unwrap(),
                b"\x01\x7f\x00\x00\x01\x00\x35payload"
            );
            assert_eq!(
                encrypt_packet_in_place(&key, &mut vec![0; 3]),
                Err(Error::PacketTooShort(3))
            );
        }
    }

    #[test]
    fn known_answer_against_python_cryptography() {
        // AES-128-GCM(HKDF-SHA1(EVP("foobar"), salt = 0..16, "ss-subkey"), nonce 0).
        let key = Key::new(Method::Aes128Gcm, "foobar").unwrap();
        let mut buf: Vec<u8> = (0..16).collect();
        buf.extend_from_slice(b"\x01\x7f\x00\x00\x01\x00\x35hello");
        seal_after_salt(&key, &mut buf, 0);
        assert_eq!(hex::encode(&buf), KAT_UDP_AES128);
    }

    const KAT_UDP_AES128: &str =
        "000102030405060708090a0b0c0d0e0ff9316b061987775be3d09b0ea84863ef6160c50404e781fa7f4d70d7";

    #[test]
    fn rejects_tampering_short_packets_and_2022_keys() {
        let key = Key::new(Method::Aes256Gcm, "pw").unwrap();
        let mut pkt = Vec::new();
        encrypt_packet(&key, b"data", &mut pkt).unwrap();
        for pos in 0..pkt.len() {
            let mut bad = pkt.clone();
            bad[pos] ^= 1;
            assert_eq!(decrypt_packet(&key, &mut bad), Err(Error::Authentication), "byte {pos}");
        }
        assert_eq!(decrypt_packet(&key, &mut pkt[..47]), Err(Error::PacketTooShort(47)));
        assert_eq!(decrypt_packet(&key, &mut pkt[..48]), Err(Error::Authentication));
        let k2022 = Key::new(Method::Blake3Aes128Gcm, "AAECAwQFBgcICQoLDA0ODw==").unwrap();
        assert!(matches!(
            encrypt_packet(&k2022, b"x", &mut Vec::new()),
            Err(Error::WrongMethod { .. })
        ));
        assert!(matches!(
            decrypt_packet(&k2022, &mut [0; 64]),
            Err(Error::WrongMethod { .. })
        ));
    }
}
