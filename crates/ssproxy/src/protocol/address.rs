//! The target address shared by SOCKS5 (RFC 1928 §4/§5) and the shadowsocks header.
//!
//! ```text
//! +------+----------+----------+
//! | ATYP | DST.ADDR | DST.PORT |
//! +------+----------+----------+
//! |  1   | Variable |    2     |
//! +------+----------+----------+
//! ATYP 1: 4-byte IPv4; 3: 1-byte length then that many domain bytes; 4: 16-byte IPv6.
//! The port is big-endian.
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::str::FromStr;

/// ATYP byte for an IPv4 address.
pub const ATYP_IPV4: u8 = 0x01;
/// ATYP byte for a domain name.
pub const ATYP_DOMAIN: u8 = 0x03;
/// ATYP byte for an IPv6 address.
pub const ATYP_IPV6: u8 = 0x04;

/// Longest domain name the one-byte length field can carry.
pub const MAX_DOMAIN_LEN: usize = 255;

/// Largest encoded address: ATYP + length byte + 255 domain bytes + port.
pub const MAX_SERIALIZED_LEN: usize = 1 + 1 + MAX_DOMAIN_LEN + 2;

/// A target address: an IP socket address or a domain name with a port.
///
/// A `Domain` must be 1 to 255 bytes of printable UTF-8 to be serialised; [`Address::domain`]
/// checks that, and [`Address::parse`] only ever produces such names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// ATYP 1.
    Ipv4(SocketAddrV4),
    /// ATYP 4 (flow info and scope id are not carried on the wire and parse as 0).
    Ipv6(SocketAddrV6),
    /// ATYP 3: a name to resolve, and a port.
    Domain(String, u16),
}

/// Why bytes (or a string) are not a valid address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressError {
    /// The ATYP byte is not 1, 3 or 4.
    UnknownType(u8),
    /// ATYP 3 with a zero length byte (or an empty name given to [`Address::domain`]).
    EmptyDomain,
    /// A domain name longer than 255 bytes (only from [`Address::domain`] / [`FromStr`]).
    DomainTooLong(usize),
    /// The domain bytes are not UTF-8.
    DomainNotUtf8,
    /// The domain contains a control character (including NUL), whitespace, or brackets.
    DomainBadChar(char),
    /// A textual address (for [`FromStr`]) that is not `ip:port`, `[ipv6]:port` or `host:port`.
    BadSyntax(String),
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressError::UnknownType(b) => write!(f, "unknown address type 0x{b:02x} (expected 1, 3 or 4)"),
            AddressError::EmptyDomain => f.write_str("empty domain name"),
            AddressError::DomainTooLong(n) => write!(f, "domain name of {n} bytes is longer than 255"),
            AddressError::DomainNotUtf8 => f.write_str("domain name is not valid UTF-8"),
            AddressError::DomainBadChar(c) => write!(f, "domain name contains the character {c:?}"),
            AddressError::BadSyntax(s) => {
                write!(
                    f,
                    "{s:?} is not an address (expected ip:port, [ipv6]:port or host:port)"
                )
            }
        }
    }
}

impl std::error::Error for AddressError {}

/// Checks a domain name for the wire: 1..=255 bytes, no control characters, no whitespace.
fn check_domain(name: &str) -> Result<(), AddressError> {
    if name.is_empty() {
        return Err(AddressError::EmptyDomain);
    }
    if name.len() > MAX_DOMAIN_LEN {
        return Err(AddressError::DomainTooLong(name.len()));
    }
    if let Some(c) = name.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(AddressError::DomainBadChar(c));
    }
    Ok(())
}

impl Address {
    /// A checked domain address: the name must be 1..=255 bytes with no control characters
    /// or whitespace.
    pub fn domain(name: impl Into<String>, port: u16) -> Result<Address, AddressError> {
        let name = name.into();
        check_domain(&name)?;
        Ok(Address::Domain(name, port))
    }

    /// Parses one address from the front of `buf`.
    ///
    /// * `Ok(None)`: `buf` is a proper prefix of an address; read more and call again.
    /// * `Ok(Some((address, n)))`: the address took the first `n` bytes.
    /// * `Err(_)`: the bytes can never become an address. Errors are reported as early as the
    ///   bytes allow (an unknown ATYP after one byte, a zero domain length after two).
    pub fn parse(buf: &[u8]) -> Result<Option<(Address, usize)>, AddressError> {
        let Some(&atyp) = buf.first() else {
            return Ok(None);
        };
        match atyp {
            ATYP_IPV4 => {
                const LEN: usize = 1 + 4 + 2;
                if buf.len() < LEN {
                    return Ok(None);
                }
                let ip = Ipv4Addr::new(buf[1], buf[2], buf[3], buf[4]);
                let port = u16::from_be_bytes([buf[5], buf[6]]);
                Ok(Some((Address::Ipv4(SocketAddrV4::new(ip, port)), LEN)))
            }
            ATYP_IPV6 => {
                const LEN: usize = 1 + 16 + 2;
                if buf.len() < LEN {
                    return Ok(None);
                }
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&buf[1..17]);
                let port = u16::from_be_bytes([buf[17], buf[18]]);
                Ok(Some((
                    Address::Ipv6(SocketAddrV6::new(Ipv6Addr::from(octets), port, 0, 0)),
                    LEN,
                )))
            }
            ATYP_DOMAIN => {
                let Some(&len) = buf.get(1) else {
                    return Ok(None);
                };
                let len = usize::from(len);
                if len == 0 {
                    return Err(AddressError::EmptyDomain);
                }
                let total = 2 + len + 2;
                if buf.len() < total {
                    return Ok(None);
                }
                let name = std::str::from_utf8(&buf[2..2 + len]).map_err(|_| AddressError::DomainNotUtf8)?;
                check_domain(name)?;
                let port = u16::from_be_bytes([buf[2 + len], buf[3 + len]]);
                Ok(Some((Address::Domain(name.to_owned(), port), total)))
            }
            other => Err(AddressError::UnknownType(other)),
        }
    }

    /// Appends the wire form (ATYP, address, big-endian port) to `out`.
    ///
    /// # Panics
    /// If a `Domain` is empty or longer than 255 bytes (build domains with [`Address::domain`]).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Address::Ipv4(sa) => {
                out.push(ATYP_IPV4);
                out.extend_from_slice(&sa.ip().octets());
                out.extend_from_slice(&sa.port().to_be_bytes());
            }
            Address::Ipv6(sa) => {
                out.push(ATYP_IPV6);
                out.extend_from_slice(&sa.ip().octets());
                out.extend_from_slice(&sa.port().to_be_bytes());
            }
            Address::Domain(name, port) => {
                let len = u8::try_from(name.len())
                    .ok()
                    .filter(|&l| l > 0)
                    .unwrap_or_else(|| panic!("Address::Domain of {} bytes cannot be serialised", name.len()));
                out.push(ATYP_DOMAIN);
                out.push(len);
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(&port.to_be_bytes());
            }
        }
    }

    /// The wire form as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.serialized_len());
        self.write_to(&mut v);
        v
    }

    /// Number of bytes [`Address::write_to`] appends.
    pub fn serialized_len(&self) -> usize {
        match self {
            Address::Ipv4(_) => 1 + 4 + 2,
            Address::Ipv6(_) => 1 + 16 + 2,
            Address::Domain(name, _) => 1 + 1 + name.len() + 2,
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            Address::Ipv4(sa) => sa.port(),
            Address::Ipv6(sa) => sa.port(),
            Address::Domain(_, port) => *port,
        }
    }

    /// The socket address, if this is an IP address (no resolution is done).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Address::Ipv4(sa) => Some(SocketAddr::V4(*sa)),
            Address::Ipv6(sa) => Some(SocketAddr::V6(*sa)),
            Address::Domain(..) => None,
        }
    }

    /// The IP address, if this is not a domain.
    pub fn ip(&self) -> Option<IpAddr> {
        self.socket_addr().map(|sa| sa.ip())
    }
}

impl From<SocketAddr> for Address {
    fn from(sa: SocketAddr) -> Address {
        match sa {
            SocketAddr::V4(v4) => Address::Ipv4(v4),
            SocketAddr::V6(v6) => Address::Ipv6(v6),
        }
    }
}

impl From<SocketAddrV4> for Address {
    fn from(sa: SocketAddrV4) -> Address {
        Address::Ipv4(sa)
    }
}

impl From<SocketAddrV6> for Address {
    fn from(sa: SocketAddrV6) -> Address {
        Address::Ipv6(sa)
    }
}

impl From<(IpAddr, u16)> for Address {
    fn from((ip, port): (IpAddr, u16)) -> Address {
        Address::from(SocketAddr::new(ip, port))
    }
}

impl fmt::Display for Address {
    /// `1.2.3.4:80`, `[::1]:80`, `example.com:443`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ipv4(sa) => write!(f, "{}:{}", sa.ip(), sa.port()),
            Address::Ipv6(sa) => write!(f, "[{}]:{}", sa.ip(), sa.port()),
            Address::Domain(name, port) => write!(f, "{name}:{port}"),
        }
    }
}

impl FromStr for Address {
    type Err = AddressError;

    /// Parses `1.2.3.4:80`, `[::1]:80` or `example.com:443`; an IP literal becomes an IP
    /// address, anything else a domain.
    fn from_str(s: &str) -> Result<Address, AddressError> {
        let bad = || AddressError::BadSyntax(s.to_owned());
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(Address::from(sa));
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.starts_with('[') || host.contains(':') {
            // Bracketed but not a valid IPv6 literal, or an unbracketed IPv6 with a port.
            return Err(bad());
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Address::from((ip, port)));
        }
        if host.contains(['[', ']', '/']) {
            return Err(bad());
        }
        Address::domain(host, port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<(Address, Vec<u8>)> {
        vec![
            (
                Address::Ipv4(SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 2), 8080)),
                vec![1, 192, 168, 1, 2, 0x1f, 0x90],
            ),
            (
                Address::Ipv6(SocketAddrV6::new("2001:db8::1".parse().unwrap(), 443, 0, 0)),
                {
                    let mut v = vec![4, 0x20, 0x01, 0x0d, 0xb8];
                    v.extend_from_slice(&[0; 11]);
                    v.push(1);
                    v.extend_from_slice(&[0x01, 0xbb]);
                    v
                },
            ),
            (Address::Domain("example.com".into(), 80), {
                let mut v = vec![3, 11];
                v.extend_from_slice(b"example.com");
                v.extend_from_slice(&[0, 80]);
                v
            }),
        ]
    }

    #[test]
    fn round_trip_all_types() {
        for (addr, bytes) in samples() {
            assert_eq!(addr.to_bytes(), bytes, "{addr}");
            assert_eq!(addr.serialized_len(), bytes.len());
            assert_eq!(Address::parse(&bytes).unwrap(), Some((addr.clone(), bytes.len())));
            // Trailing payload is left alone.
            let mut with_tail = bytes.clone();
            with_tail.extend_from_slice(b"GET / HTTP/1.1");
            assert_eq!(Address::parse(&with_tail).unwrap(), Some((addr, bytes.len())));
        }
    }

    #[test]
    fn every_prefix_is_incomplete() {
        for (_, bytes) in samples() {
            for cut in 0..bytes.len() {
                assert_eq!(Address::parse(&bytes[..cut]), Ok(None), "prefix {cut} of {bytes:?}");
            }
        }
        // The longest domain too.
        let long = Address::domain("a".repeat(255), 1).unwrap();
        let bytes = long.to_bytes();
        assert_eq!(bytes.len(), MAX_SERIALIZED_LEN);
        for cut in 0..bytes.len() {
            assert_eq!(Address::parse(&bytes[..cut]), Ok(None));
        }
        assert_eq!(Address::parse(&bytes).unwrap().unwrap().1, MAX_SERIALIZED_LEN);
    }

    #[test]
    fn unknown_type_names_the_byte() {
        assert_eq!(Address::parse(&[0x05]), Err(AddressError::UnknownType(5)));
        assert_eq!(Address::parse(&[0x00, 1, 2]), Err(AddressError::UnknownType(0)));
        assert_eq!(
            AddressError::UnknownType(0x7f).to_string(),
            "unknown address type 0x7f (expected 1, 3 or 4)"
        );
    }

    #[test]
    fn bad_domains() {
        assert_eq!(Address::parse(&[3, 0]), Err(AddressError::EmptyDomain));
        assert_eq!(Address::parse(&[3, 0, 0, 80]), Err(AddressError::EmptyDomain));
        assert_eq!(
            Address::parse(&[3, 2, 0xff, 0xfe, 0, 80]),
            Err(AddressError::DomainNotUtf8)
        );
        assert_eq!(
            Address::parse(&[3, 3, b'a', 0, b'b', 0, 80]),
            Err(AddressError::DomainBadChar('\0'))
        );
        assert_eq!(
            Address::parse(&[3, 2, b'a', b'\n', 0, 80]),
            Err(AddressError::DomainBadChar('\n'))
        );
        assert_eq!(
            Address::parse(&[3, 3, b'a', b' ', b'b', 0, 80]),
            Err(AddressError::DomainBadChar(' '))
        );
        // Incomplete wins until the bad bytes are all there.
        assert_eq!(Address::parse(&[3, 2, 0xff]), Ok(None));
        assert_eq!(Address::domain("", 1), Err(AddressError::EmptyDomain));
        assert_eq!(
            Address::domain("a".repeat(256), 1),
            Err(AddressError::DomainTooLong(256))
        );
        assert_eq!(
            Address::domain("a\u{7f}", 1),
            Err(AddressError::DomainBadChar('\u{7f}'))
        );
        // Non-ASCII but printable UTF-8 is allowed (IDNs are normally punycode, but be lenient).
        assert!(Address::domain("bücher.de", 1).is_ok());
    }

    #[test]
    fn display() {
        let s: Vec<String> = samples().iter().map(|(a, _)| a.to_string()).collect();
        assert_eq!(s, ["192.168.1.2:8080", "[2001:db8::1]:443", "example.com:80"]);
    }

    #[test]
    fn from_socket_addr_and_accessors() {
        let sa: SocketAddr = "[::1]:53".parse().unwrap();
        let a = Address::from(sa);
        assert_eq!(a, Address::Ipv6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 53, 0, 0)));
        assert_eq!(a.port(), 53);
        assert_eq!(a.socket_addr(), Some(sa));
        assert_eq!(a.ip(), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        let d = Address::Domain("x.org".into(), 1);
        assert_eq!(d.socket_addr(), None);
        assert_eq!(
            Address::from(("10.0.0.1".parse::<IpAddr>().unwrap(), 9)).to_string(),
            "10.0.0.1:9"
        );
    }

    #[test]
    fn from_str() {
        assert_eq!("1.2.3.4:80".parse::<Address>().unwrap().to_string(), "1.2.3.4:80");
        assert_eq!("[::1]:80".parse::<Address>().unwrap().to_string(), "[::1]:80");
        assert_eq!(
            "example.com:443".parse::<Address>().unwrap(),
            Address::Domain("example.com".into(), 443)
        );
        for bad in [
            "example.com",
            "example.com:",
            "example.com:70000",
            "::1:80",
            "[::1:80",
            "[x]:80",
            ":80",
            "a b:1",
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
    }

    #[test]
    #[should_panic(expected = "cannot be serialised")]
    fn write_overlong_domain_panics() {
        Address::Domain("a".repeat(256), 1).to_bytes();
    }
}
