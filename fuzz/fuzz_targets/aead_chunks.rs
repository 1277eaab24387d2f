//! SIP004 stream decoding (`crypto::Decryptor`), as ssserver and sslocal feed it: whatever
//! arrived, in any fragmentation. Mode 0 feeds arbitrary bytes (seeds are valid streams made
//! with the fixed key) once whole and once cut at the input's split points, and checks that
//! both give the same plaintext and the same error, that an error is final, that the salt hook
//! runs at most once and only before any plaintext, and that no unauthenticated byte comes
//! out; and that opening the same pieces in place (the relay's bulk path) gives the same
//! plaintext and error. Mode 1 encrypts arbitrary plaintext in pieces and checks it decrypts
//! back.
#![no_main]

use std::cell::Cell;
use std::rc::Rc;

use libfuzzer_sys::fuzz_target;
use ssproxy::crypto::{Decryptor, Encryptor, Error, SIP004_MAX_PAYLOAD, TAG_LEN};
use ssproxy_fuzz::{SIP004, key, read_pieces, split};

/// Feeds `pieces` in order; the plaintext, the first error, and how often the hook ran.
fn decode(dec: &mut Decryptor, pieces: &[&[u8]]) -> (Vec<u8>, Option<Error>) {
    let mut out = Vec::new();
    for piece in pieces {
        if let Err(e) = dec.feed(piece, &mut out) {
            // Final: feeding more returns the same error and appends nothing.
            let before = out.len();
            assert_eq!(dec.feed(b"more", &mut out), Err(e.clone()));
            assert_eq!(out.len(), before);
            assert_eq!(dec.error(), Some(&e));
            return (out, Some(e));
        }
        assert!(
            dec.buffered() < SIP004_MAX_PAYLOAD + TAG_LEN,
            "buffers more than one unit"
        );
    }
    (out, None)
}

/// As [`decode`], through [`Decryptor::open_in_place`]: each piece is appended to one buffer
/// behind the ciphertext still waiting there, and the plaintext taken from its front.
fn decode_in_place(dec: &mut Decryptor, pieces: &[&[u8]]) -> (Vec<u8>, Option<Error>) {
    let mut plain = Vec::new();
    let mut buf = Vec::new();
    let (mut out, mut raw) = (0, 0);
    for piece in pieces {
        buf.extend_from_slice(piece);
        let result = dec.open_in_place(&mut buf, &mut out, &mut raw);
        assert!(out <= raw && raw <= buf.len(), "out {out} raw {raw} len {}", buf.len());
        plain.extend_from_slice(&buf[..out]);
        if let Err(e) = result {
            return (plain, Some(e));
        }
        buf.drain(..raw);
        (out, raw) = (0, 0);
    }
    (plain, None)
}

fuzz_target!(|data: &[u8]| {
    let [method, mode, rest @ ..] = data else { return };
    let method = SIP004[usize::from(*method % 4)];
    let key = key(method);
    let (lengths, stream) = read_pieces(rest);

    if mode & 1 == 0 {
        let calls = Rc::new(Cell::new(0u32));
        let mut whole = Decryptor::new(&key).unwrap();
        let c = Rc::clone(&calls);
        // Every salt is "fresh" except one starting with 0xEE: exercises the replay path.
        whole.set_salt_hook(Box::new(move |salt| {
            c.set(c.get() + 1);
            salt[0] != 0xEE
        }));
        let (plain_a, err_a) = decode(&mut whole, &[stream]);
        assert!(calls.get() <= 1, "salt hook ran {} times", calls.get());
        if !plain_a.is_empty() {
            assert_eq!(calls.get(), 1, "plaintext before the replay check");
        }
        // Each chunk costs salt-less 2 + 2 tags of overhead: plaintext is always shorter.
        assert!(plain_a.len() + method.salt_len() <= stream.len() || plain_a.is_empty());

        let mut cut = Decryptor::new(&key).unwrap();
        cut.set_salt_hook(Box::new(|salt| salt[0] != 0xEE));
        let (plain_b, err_b) = decode(&mut cut, &split(stream, &lengths));
        assert_eq!(plain_a, plain_b, "fragmentation changed the plaintext");
        assert_eq!(err_a, err_b, "fragmentation changed the error");

        // The relay's bulk path: the same pieces read into one buffer and opened in place.
        let mut in_place = Decryptor::new(&key).unwrap();
        in_place.set_salt_hook(Box::new(|salt| salt[0] != 0xEE));
        let (plain_c, err_c) = decode_in_place(&mut in_place, &split(stream, &lengths));
        assert_eq!(plain_b, plain_c, "opening in place changed the plaintext");
        assert_eq!(err_b, err_c, "opening in place changed the error");
        if err_a.is_none() {
            assert_eq!(whole.salt(), cut.salt());
            assert_eq!(whole.buffered(), cut.buffered());
        }
    } else {
        let salt = vec![0x5a; method.salt_len()];
        let mut enc = Encryptor::with_salt(&key, &salt).unwrap();
        let mut wire = Vec::new();
        for piece in split(stream, &lengths) {
            enc.encrypt(piece, &mut wire);
        }
        let mut dec = Decryptor::new(&key).unwrap();
        // Decrypt cut at the same lengths reversed: other boundaries than the encryption's.
        let mut reversed = lengths.clone();
        reversed.reverse();
        let (plain, err) = decode(&mut dec, &split(&wire, &reversed));
        assert_eq!(err, None);
        assert_eq!(plain, stream, "round trip lost data");
        assert_eq!(dec.buffered(), 0);
        if !stream.is_empty() {
            assert_eq!(dec.salt(), Some(&salt[..]));
        }
    }
});
