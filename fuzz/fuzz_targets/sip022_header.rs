//! SIP022 stream decoding: `crypto::RequestDecryptor` (what ssserver runs on every client's
//! first bytes: salt, fixed header with type and timestamp, variable header with the target
//! address and padding) and `crypto::ResponseDecryptor` (sslocal), with the clock fixed so
//! that seeds made with the fixed key stay valid. Same checks as `aead_chunks`: fragmentation
//! changes nothing, errors are final, the salt hook runs at most once; plus: a target, once
//! known, is exactly one well-formed SOCKS5 address.
#![no_main]

use std::cell::Cell;
use std::rc::Rc;

use libfuzzer_sys::fuzz_target;
use ssproxy::crypto::{Error, SIP022_MAX_PAYLOAD, TAG_LEN};
use ssproxy::protocol::Address;
use ssproxy_fuzz::{SIP022, Sip022Decoder as Dec, read_pieces, split};

fn decode(dec: &mut Dec, pieces: &[&[u8]]) -> (Vec<u8>, Option<Error>, Option<Vec<u8>>) {
    let mut out = Vec::new();
    for piece in pieces {
        if let Err(e) = dec.feed(piece, &mut out) {
            let before = out.len();
            assert_eq!(dec.feed(b"more", &mut out), Err(e.clone()));
            assert_eq!(out.len(), before);
            return (out, Some(e), dec.target());
        }
        if let Some(target) = dec.target() {
            match Address::parse(&target) {
                Ok(Some((_, n))) => assert_eq!(n, target.len(), "target is not exactly one address"),
                other => panic!("target {target:?} does not parse: {other:?}"),
            }
        }
        // The largest unit: a variable header or chunk of 0xFFFF bytes plus its tag.
        assert!(dec.buffered() < SIP022_MAX_PAYLOAD + TAG_LEN);
    }
    (out, None, dec.target())
}

fuzz_target!(|data: &[u8]| {
    let [method, flags, rest @ ..] = data else { return };
    let method = SIP022[usize::from(*method % 3)];
    let (lengths, stream) = read_pieces(rest);

    let calls = Rc::new(Cell::new(0u32));
    let mut whole = Dec::new(*flags, method, Rc::clone(&calls));
    let a = decode(&mut whole, &[stream]);
    assert!(calls.get() <= 1, "salt hook ran {} times", calls.get());
    if !a.0.is_empty() || a.2.is_some() {
        assert_eq!(calls.get(), 1, "header accepted before the replay check");
    }

    let mut cut = Dec::new(*flags, method, Rc::new(Cell::new(0)));
    let b = decode(&mut cut, &split(stream, &lengths));
    assert_eq!(a.0, b.0, "fragmentation changed the plaintext");
    assert_eq!(a.1, b.1, "fragmentation changed the error");
    assert_eq!(a.2, b.2, "fragmentation changed the target");
});
