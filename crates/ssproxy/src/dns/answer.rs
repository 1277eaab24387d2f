//! What a lookup hands its waiters: c-ares' addresses in the configured family
//! order, or an error naming the host and the reason.

use std::io;
use std::net::IpAddr;

use super::AddressOrder;

/// The longest name accepted (without the trailing dot).
const MAX_NAME_LEN: usize = 253;

impl AddressOrder {
    /// The family c-ares is asked for: `None` for both.
    pub(super) fn family(self) -> Option<c_ares::AddressFamily> {
        match self {
            AddressOrder::Ipv4First | AddressOrder::Ipv6First => None,
            AddressOrder::Ipv4Only => Some(c_ares::AddressFamily::INET),
            AddressOrder::Ipv6Only => Some(c_ares::AddressFamily::INET6),
        }
    }

    /// Keep the wanted families, in the wanted order (stable within a family),
    /// each address once.
    pub(super) fn arrange(self, addrs: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
        let mut unique: Vec<IpAddr> = Vec::new();
        for addr in addrs {
            if !unique.contains(&addr) {
                unique.push(addr);
            }
        }
        let v4 = unique.iter().copied().filter(IpAddr::is_ipv4);
        let v6 = unique.iter().copied().filter(IpAddr::is_ipv6);
        match self {
            AddressOrder::Ipv4First => v4.chain(v6).collect(),
            AddressOrder::Ipv6First => v6.chain(v4).collect(),
            AddressOrder::Ipv4Only => v4.collect(),
            AddressOrder::Ipv6Only => v6.collect(),
        }
    }
}

/// `dns: NAME: WHAT`, of `kind`.
pub(super) fn failure(kind: io::ErrorKind, name: &str, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(kind, format!("dns: {name}: {what}"))
}

/// A finished lookup as its waiters get it: never an empty list.
pub(super) fn outcome(
    name: &str,
    order: AddressOrder,
    result: Result<Vec<IpAddr>, c_ares::Error>,
) -> io::Result<Vec<IpAddr>> {
    let addrs = order.arrange(result.map_err(|e| from_ares(name, e))?);
    if addrs.is_empty() {
        return Err(failure(io::ErrorKind::NotFound, name, "no addresses"));
    }
    Ok(addrs)
}

/// c-ares' status as an error of the right kind, with the reason in DNS's terms.
fn from_ares(name: &str, error: c_ares::Error) -> io::Error {
    use c_ares::Error;
    let (kind, what) = match error {
        Error::ENOTFOUND => (io::ErrorKind::NotFound, "NXDOMAIN".to_string()),
        Error::ENODATA => (io::ErrorKind::NotFound, "no addresses".to_string()),
        Error::ETIMEOUT => (io::ErrorKind::TimedOut, "timed out".to_string()),
        Error::ESERVFAIL => (io::ErrorKind::Other, "SERVFAIL".to_string()),
        Error::EREFUSED => (io::ErrorKind::Other, "REFUSED".to_string()),
        Error::EBADNAME => (io::ErrorKind::InvalidInput, "invalid hostname".to_string()),
        Error::ECONNREFUSED => (io::ErrorKind::ConnectionRefused, "no nameserver reachable".to_string()),
        Error::ECANCELLED | Error::EDESTRUCTION => (io::ErrorKind::Interrupted, "resolver closed".to_string()),
        other => (io::ErrorKind::Other, other.to_string()),
    };
    failure(kind, name, what)
}

/// Whether `name` may be looked up: labels of 1 to 63 letters, digits, `-` and
/// `_`, not starting or ending with `-`; 253 characters at most, plus an optional
/// trailing dot. Anything else is refused before it reaches a nameserver.
pub(super) fn is_hostname(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    !name.is_empty() && name.len() <= MAX_NAME_LEN && name.split('.').all(valid_label)
}

/// The addresses in a DNS answer message, read by c-ares' parser (the one it
/// runs on every answer a lookup gets) as an `A` and as an `AAAA` answer, then
/// arranged as a lookup's are. The resolver itself never sees the bytes; this is
/// the entry point of the `dns_answer` fuzz target.
pub fn addresses_in_answer(order: AddressOrder, answer: &[u8]) -> Result<Vec<IpAddr>, c_ares::Error> {
    let v4 = c_ares::AResults::parse_from(answer).map(|r| r.iter().map(|a| IpAddr::V4(a.ipv4())).collect::<Vec<_>>());
    let v6 =
        c_ares::AAAAResults::parse_from(answer).map(|r| r.iter().map(|a| IpAddr::V6(a.ipv6())).collect::<Vec<_>>());
    match (v4, v6) {
        (Err(e), Err(_)) => Err(e),
        (v4, v6) => Ok(order.arrange(v4.unwrap_or_default().into_iter().chain(v6.unwrap_or_default()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn family_order_is_kept_and_duplicates_dropped() {
        let mixed = ips(&["2001:db8::1", "192.0.2.1", "192.0.2.2", "2001:db8::1", "192.0.2.1"]);
        assert_eq!(
            AddressOrder::Ipv4First.arrange(mixed.clone()),
            ips(&["192.0.2.1", "192.0.2.2", "2001:db8::1"])
        );
        assert_eq!(
            AddressOrder::Ipv6First.arrange(mixed.clone()),
            ips(&["2001:db8::1", "192.0.2.1", "192.0.2.2"])
        );
        assert_eq!(AddressOrder::Ipv6Only.arrange(mixed), ips(&["2001:db8::1"]));
    }

    #[test]
    fn errors_name_the_host_and_the_reason() {
        let err = outcome("gone.example", AddressOrder::Ipv4First, Err(c_ares::Error::ENOTFOUND)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(err.to_string(), "dns: gone.example: NXDOMAIN");
        let err = outcome("slow.example", AddressOrder::Ipv4First, Err(c_ares::Error::ETIMEOUT)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        // Addresses only of the family not asked for: none left.
        let err = outcome("v6.example", AddressOrder::Ipv4Only, Ok(ips(&["2001:db8::1"]))).unwrap_err();
        assert_eq!(err.to_string(), "dns: v6.example: no addresses");
    }

    #[test]
    fn hostnames_are_checked_before_asking() {
        for good in ["example.com", "EXAMPLE.com.", "_srv.x-y.example", "a"] {
            assert!(is_hostname(good), "{good}");
        }
        let long_label = format!("{}.example", "x".repeat(64));
        let long_name = vec!["abcdefghi"; 26].join(".");
        for bad in [
            "",
            ".",
            "-bad.example",
            "bad-.example",
            "a..b",
            "exa mple.com",
            "ex\u{e4}mple.com",
            "a/b",
        ] {
            assert!(!is_hostname(bad), "{bad:?}");
        }
        assert!(!is_hostname(&long_label));
        assert!(!is_hostname(&long_name));
    }

    #[test]
    fn answers_are_read_by_c_ares() {
        // id 1, response, 1 question (a.example A IN), 1 answer (pointer to it, A, TTL 60, 192.0.2.9).
        let mut message = vec![0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        message.extend_from_slice(b"\x01a\x07example\x00\x00\x01\x00\x01");
        message.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 9]);
        assert_eq!(
            addresses_in_answer(AddressOrder::Ipv4First, &message),
            Ok(ips(&["192.0.2.9"]))
        );
        assert!(addresses_in_answer(AddressOrder::Ipv4First, &message[..20]).is_err());
    }
}
