//! The SOCKS5/shadowsocks address parser, as the server runs it on decrypted headers and UDP
//! packets. Checks: consumed length in bounds and equal to `serialized_len`; the address
//! re-serialises to exactly the bytes it came from; every proper prefix of a complete address
//! says "need more"; the crypto module's own delimiter (`socks_addr_len`, via a SIP022 target)
//! agrees. The textual parser gets the bytes too, and whatever it accepts must serialise.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssproxy::protocol::Address;

fuzz_target!(|data: &[u8]| {
    let whole = Address::parse(data);
    match &whole {
        Ok(Some((addr, n))) => {
            assert!(*n <= data.len());
            assert_eq!(addr.serialized_len(), *n);
            assert_eq!(
                addr.to_bytes(),
                data[..*n],
                "address does not re-serialise to its bytes"
            );
            for k in 0..*n {
                assert_eq!(
                    Address::parse(&data[..k]),
                    Ok(None),
                    "prefix of {k} bytes is not 'need more'"
                );
            }
            // Display, then back: must not panic (a domain may legitimately read back as an IP).
            let text = addr.to_string();
            if let Ok(back) = text.parse::<Address>() {
                let _ = back.to_bytes();
            }
            let _ = (addr.port(), addr.socket_addr(), addr.ip());
        }
        Ok(None) => {
            for k in 0..data.len() {
                assert_eq!(Address::parse(&data[..k]), Ok(None));
            }
        }
        Err(e) => {
            for k in 0..data.len() {
                match Address::parse(&data[..k]) {
                    Ok(None) => {}
                    Err(p) => assert_eq!(&p, e, "a prefix fails differently from the whole"),
                    Ok(Some(_)) => panic!("prefix of {k} bytes complete but the whole is an error"),
                }
            }
            let _ = e.to_string();
        }
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(addr) = text.parse::<Address>()
    {
        let bytes = addr.to_bytes();
        let (back, n) = Address::parse(&bytes)
            .expect("serialised address parses")
            .expect("complete");
        assert_eq!(n, bytes.len());
        assert_eq!(back, addr, "text address does not survive the wire form");
    }
});
