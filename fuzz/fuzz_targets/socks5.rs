//! SOCKS5 server-side parsing as sslocal does it: the greeting, then the request, from bytes
//! that may arrive in any fragmentation. Checks that parsing is consistent on every prefix
//! (a complete message never looks malformed or complete earlier), that the consumed length
//! is in bounds, and that a parsed request re-serialises to the bytes it came from (RSV
//! aside). The client-side parsers (method selection, reply, UDP header) get the same input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssproxy::protocol::socks5::{self, Socks5Error};

/// `parse` on every proper prefix of a message that parsed (or failed) on the whole buffer
/// must say "need more" (or fail the same way, for errors detected early).
fn check_prefixes<T>(
    buf: &[u8],
    whole: &Result<Option<(T, usize)>, Socks5Error>,
    parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, Socks5Error>,
) {
    let end = match whole {
        Ok(Some((_, n))) => *n,
        Ok(None) => buf.len(),
        Err(_) => buf.len(),
    };
    for k in 0..end {
        match (parse(&buf[..k]), whole) {
            (Ok(None), _) => {}
            (Err(e), Err(w)) => assert_eq!(&e, w, "a prefix fails differently from the whole"),
            (Ok(Some(_)), _) => panic!("prefix of {k} bytes parsed as complete; the whole needs {end}"),
            (Err(e), Ok(_)) => panic!("prefix of {k} bytes is an error ({e}) but the whole is not"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let greeting = socks5::parse_greeting(data);
    check_prefixes(data, &greeting, socks5::parse_greeting);
    let rest = match &greeting {
        Ok(Some((g, n))) => {
            assert!(*n <= data.len());
            assert_eq!(*n, 2 + g.methods.len());
            assert!(!g.methods.is_empty());
            let chosen = g.choose_method();
            assert!(chosen == socks5::METHOD_NO_AUTH || chosen == socks5::METHOD_NO_ACCEPTABLE);
            &data[*n..]
        }
        _ => data,
    };

    let request = socks5::parse_request(rest);
    check_prefixes(rest, &request, socks5::parse_request);
    match &request {
        Ok(Some((req, n))) => {
            assert!(*n <= rest.len());
            let mut again = Vec::new();
            socks5::write_request(req.command, &req.address, &mut again);
            assert_eq!(again.len(), *n);
            assert_eq!(again[..2], rest[..2]);
            assert_eq!(again[3..], rest[3..*n], "request does not re-serialise to its bytes");
        }
        Ok(None) => {}
        Err(e) => {
            // What sslocal answers before closing: a reply, or nothing for a non-SOCKS5 peer.
            let _ = e.reply();
            let _ = e.to_string();
        }
    }

    // Client-side parsers, for completeness.
    let _ = socks5::parse_method_selection(data, &[socks5::METHOD_NO_AUTH]);
    if let Ok(Some((reply, n))) = socks5::parse_reply(data) {
        assert!(n <= data.len());
        let _ = reply.reply.to_string();
    }
    if let Ok(packet) = socks5::parse_udp_packet(data) {
        let header = socks5::udp_header_len(&packet.address);
        assert_eq!(header + packet.payload.len(), data.len());
        let rebuilt = socks5::build_udp_packet(&packet.address, packet.payload);
        assert_eq!(rebuilt.len(), data.len());
    }
});
