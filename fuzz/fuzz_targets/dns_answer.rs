//! DNS answer messages, as a nameserver (or anyone racing it) sends them, through the
//! parser the resolver runs on every answer (c-ares') and our arranging of the addresses:
//! the resolver itself parses no DNS bytes (see `ssproxy::dns`). Input: `[order][message]`,
//! `order % 4` picking IPv4 first, IPv6 first, IPv4 only, IPv6 only. Checks: no crash; the
//! addresses are unique, of the families the order allows, grouped in its order.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use ssproxy::dns::{AddressOrder, addresses_in_answer};

const ORDERS: [AddressOrder; 4] = [
    AddressOrder::Ipv4First,
    AddressOrder::Ipv6First,
    AddressOrder::Ipv4Only,
    AddressOrder::Ipv6Only,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, message)) = data.split_first() else {
        return;
    };
    let order = ORDERS[pick as usize % 4];
    let Ok(addrs) = addresses_in_answer(order, message) else {
        return;
    };
    for (i, a) in addrs.iter().enumerate() {
        assert!(!addrs[..i].contains(a), "{a} twice");
    }
    let families: Vec<bool> = addrs.iter().map(IpAddr::is_ipv4).collect();
    match order {
        AddressOrder::Ipv4Only => assert!(families.iter().all(|v4| *v4)),
        AddressOrder::Ipv6Only => assert!(families.iter().all(|v4| !*v4)),
        AddressOrder::Ipv4First => assert!(families.windows(2).all(|w| w[0] || !w[1])),
        AddressOrder::Ipv6First => assert!(families.windows(2).all(|w| !w[0] || w[1])),
    }
});
