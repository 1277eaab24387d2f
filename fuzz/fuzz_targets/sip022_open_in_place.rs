//! SIP022 stream decoding in place, as the relay runs it on untrusted bytes: ssserver opens a
//! client's request stream (`RequestDecryptor::open_in_place`) and sslocal the server's
//! response stream (`ResponseDecryptor::open_in_place`) inside the connection's queue, where
//! ciphertext is read behind the plaintext still waiting to be sent and opened where it lies.
//!
//! Input: the `sip022_header` layout, `[method][flags][k][k × u16 LE piece lengths][stream]`;
//! flags bit 0: allow empty requests (ssserver does), bit 1: a response stream, bit 2: the
//! plaintext is sent (taken off the front of the queue) after every read instead of waiting
//! there. The pieces are the reads. Checked against decoding the whole stream with `feed`:
//! the same plaintext, error and target; the indexes stay in order and inside the buffer; no
//! byte comes out after an error; an error is final; the salt hook runs at most once, and
//! before any plaintext or target.
#![no_main]

use std::cell::Cell;
use std::rc::Rc;

use libfuzzer_sys::fuzz_target;
use ssproxy::crypto::Error;
use ssproxy::protocol::Address;
use ssproxy_fuzz::{SIP022, Sip022Decoder as Dec, read_pieces, split};

/// The reference: the whole stream through `feed`.
fn decode_whole(dec: &mut Dec, stream: &[u8]) -> (Vec<u8>, Option<Error>, Option<Vec<u8>>) {
    let mut out = Vec::new();
    let err = dec.feed(stream, &mut out).err();
    (out, err, dec.target())
}

/// The relay's way: each piece is read into the queue behind what is there (plaintext, then
/// ciphertext left over from the last read), opened in place, and the queue compacted once
/// no ciphertext is left, as `Pending::transform_raw` does. With `send`, the plaintext is
/// taken off the front after every read.
fn decode_in_place(dec: &mut Dec, pieces: &[&[u8]], send: bool) -> (Vec<u8>, Option<Error>, Option<Vec<u8>>) {
    let mut sent = Vec::new();
    let mut buf = Vec::new();
    let (mut out, mut raw) = (0, 0);
    for piece in pieces {
        buf.extend_from_slice(piece);
        let before = out;
        let result = dec.open_in_place(&mut buf, &mut out, &mut raw);
        assert!(
            before <= out && out <= raw && raw <= buf.len(),
            "indexes out of order: out {before}..{out}, raw {raw}, len {}",
            buf.len()
        );
        if let Err(e) = result {
            sent.extend_from_slice(&buf[..out]);
            // Final: the same error again, and nothing more comes out.
            let (mut out2, mut raw2) = (out, raw);
            buf.extend_from_slice(b"more");
            assert_eq!(dec.open_in_place(&mut buf, &mut out2, &mut raw2), Err(e.clone()));
            assert_eq!(out2, out, "plaintext after an error");
            return (sent, Some(e), dec.target());
        }
        if let Some(target) = dec.target() {
            match Address::parse(&target) {
                Ok(Some((_, n))) => assert_eq!(n, target.len(), "target is not exactly one address"),
                other => panic!("target {target:?} does not parse: {other:?}"),
            }
        }
        if raw == buf.len() {
            buf.truncate(out);
            raw = out;
        }
        if send {
            sent.extend_from_slice(&buf[..out]);
            buf.drain(..out);
            raw -= out;
            out = 0;
        }
    }
    sent.extend_from_slice(&buf[..out]);
    (sent, None, dec.target())
}

fuzz_target!(|data: &[u8]| {
    let [method, flags, rest @ ..] = data else { return };
    let method = SIP022[usize::from(*method % 3)];
    let (lengths, stream) = read_pieces(rest);

    let mut whole = Dec::new(*flags, method, Rc::new(Cell::new(0)));
    let a = decode_whole(&mut whole, stream);

    let calls = Rc::new(Cell::new(0u32));
    let mut in_place = Dec::new(*flags, method, Rc::clone(&calls));
    let b = decode_in_place(&mut in_place, &split(stream, &lengths), flags & 4 == 4);
    assert!(calls.get() <= 1, "salt hook ran {} times", calls.get());
    if !b.0.is_empty() || b.2.is_some() {
        assert_eq!(calls.get(), 1, "plaintext or target before the replay check");
    }
    assert_eq!(a.0, b.0, "opening in place changed the plaintext");
    assert_eq!(a.1, b.1, "opening in place changed the error");
    assert_eq!(a.2, b.2, "opening in place changed the target");
});
