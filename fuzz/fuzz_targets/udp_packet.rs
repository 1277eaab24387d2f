//! UDP packet decoding as the relays run it on every datagram from the network:
//! SIP004 `crypto::decrypt_packet` then the address parser (ssserver's UDP relay), and SIP022
//! `UdpCipher::open` (shared per key, routes by session id before anything is authenticated)
//! then the session's `UdpReceiver::open` (body, type, timestamp, packet id window). The
//! input is a sequence of datagrams, so that sessions and the replay window see several.
//! Checks: plaintext within the packet; a packet id is accepted at most once per session;
//! an accepted message's address parses and its offset points at it in the buffer.
#![no_main]

use std::collections::{HashMap, HashSet};

use libfuzzer_sys::fuzz_target;
use ssproxy::crypto::{self, TAG_LEN, UdpCipher, UdpReceiver};
use ssproxy::protocol::Address;
use ssproxy_fuzz::{CLIENT_SESSION_ID, SIP004, SIP022, fixed_clock, key, read_records};

/// At most this many sessions are tracked (like the relay's association limit, only smaller).
const MAX_SESSIONS: usize = 8;

fuzz_target!(|data: &[u8]| {
    let [method, flags, rest @ ..] = data else { return };
    let packets = read_records(rest, 32);
    let which = usize::from(*method % 7);
    if which < 4 {
        let key = key(SIP004[which]);
        for packet in packets {
            let mut buf = packet.to_vec();
            let len = buf.len();
            if let Ok(plain) = crypto::decrypt_packet(&key, &mut buf) {
                assert_eq!(plain.len() + key.method().salt_len() + TAG_LEN, len);
                if let Ok(Some((addr, n))) = Address::parse(plain) {
                    assert!(n <= plain.len());
                    let _ = addr.to_string();
                }
            }
        }
        return;
    }

    let method = SIP022[which - 4];
    let cipher = UdpCipher::new(&key(method)).unwrap();
    let as_client = flags & 1 == 1;
    let mut receivers: HashMap<u64, UdpReceiver> = HashMap::new();
    let mut accepted: HashSet<(u64, u64)> = HashSet::new();
    for packet in packets {
        let mut buf = packet.to_vec();
        let len = buf.len();
        let Ok(envelope) = cipher.open(&mut buf) else { continue };
        let session = envelope.session_id();
        if !receivers.contains_key(&session) {
            if receivers.len() >= MAX_SESSIONS {
                continue;
            }
            let mut r = if as_client {
                UdpReceiver::from_server(&cipher, session, CLIENT_SESSION_ID)
            } else {
                UdpReceiver::from_client(&cipher, session)
            };
            r.set_clock(fixed_clock);
            receivers.insert(session, r);
        }
        let receiver = receivers.get_mut(&session).expect("inserted above");
        let Ok(msg) = receiver.open(envelope) else { continue };
        assert_eq!(msg.session_id, session);
        assert!(
            accepted.insert((session, msg.packet_id)),
            "packet id {} accepted twice",
            msg.packet_id
        );
        assert!(msg.timestamp.abs_diff(fixed_clock()) <= crypto::MAX_TIME_DIFF);
        if as_client {
            assert_eq!(msg.client_session_id, Some(CLIENT_SESSION_ID));
        }
        let (addr_len, payload) = (msg.address.len(), msg.payload.to_vec());
        let address = msg.address.to_vec();
        let offset = msg.offset;
        match Address::parse(&address) {
            Ok(Some((_, n))) => assert_eq!(n, addr_len),
            // The crypto layer only delimits the address; the relay parses it (and may drop it).
            Ok(None) => panic!("address {address:?} delimited but incomplete"),
            Err(_) => {}
        }
        assert!(offset + addr_len + payload.len() <= len);
        assert_eq!(
            buf[offset..offset + addr_len],
            address[..],
            "offset does not point at the address"
        );
        assert_eq!(buf[offset + addr_len..offset + addr_len + payload.len()], payload[..]);
    }
});
