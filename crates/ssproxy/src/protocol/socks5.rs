//! SOCKS5 (RFC 1928), sans-I/O: the server side that `sslocal` speaks to applications, and a
//! client side for tests and benchmark tools.
//!
//! Stream messages parse with the same contract as [`Address::parse`]:
//! `Ok(None)` = need more bytes, `Ok(Some((msg, n)))` = done after `n` bytes, `Err(_)` = malformed.
//! UDP datagrams are always whole, so a short datagram is an error ([`Socks5Error::Truncated`]).
//!
//! Server flow: [`parse_greeting`] → [`Greeting::choose_method`] → [`write_method_selection`]
//! (close if it was [`METHOD_NO_ACCEPTABLE`]) → [`parse_request`] → [`write_reply`].

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

use super::address::{Address, AddressError};

/// The protocol version byte.
pub const VERSION: u8 = 0x05;
/// Authentication method: none required.
pub const METHOD_NO_AUTH: u8 = 0x00;
/// Authentication method: GSSAPI (never chosen).
pub const METHOD_GSSAPI: u8 = 0x01;
/// Authentication method: username/password, RFC 1929 (never chosen).
pub const METHOD_USERNAME_PASSWORD: u8 = 0x02;
/// Method selection value meaning "no acceptable methods": the client must close.
pub const METHOD_NO_ACCEPTABLE: u8 = 0xff;

/// Errors from malformed SOCKS5 messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Socks5Error {
    /// The VER byte is not 5 (a SOCKS4 client, or not SOCKS at all).
    BadVersion(u8),
    /// A greeting with NMETHODS = 0: the client offers no authentication method at all.
    NoMethods,
    /// A CMD byte that RFC 1928 does not define (BIND is defined: see [`Command::Bind`]).
    UnknownCommand(u8),
    /// A reply code outside 0..=8 (client side).
    UnknownReply(u8),
    /// The server answered the greeting with 0xFF (client side).
    NoAcceptableMethod,
    /// The server selected a method we did not offer (client side).
    UnexpectedMethod(u8),
    /// A UDP datagram with FRAG != 0: fragmentation is not supported, drop it.
    Fragmented(u8),
    /// A UDP datagram too short for its header.
    Truncated,
    /// The address in a request, reply or UDP header is malformed.
    Address(AddressError),
}

impl fmt::Display for Socks5Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Socks5Error::BadVersion(v) => write!(f, "socks5: version byte is 0x{v:02x}, not 0x05"),
            Socks5Error::NoMethods => f.write_str("socks5: greeting offers no authentication methods"),
            Socks5Error::UnknownCommand(c) => write!(f, "socks5: unknown command 0x{c:02x}"),
            Socks5Error::UnknownReply(r) => write!(f, "socks5: unknown reply code 0x{r:02x}"),
            Socks5Error::NoAcceptableMethod => f.write_str("socks5: server accepts none of the offered methods"),
            Socks5Error::UnexpectedMethod(m) => {
                write!(f, "socks5: server chose method 0x{m:02x}, which was not offered")
            }
            Socks5Error::Fragmented(n) => write!(f, "socks5: fragmented UDP datagram (FRAG {n}) dropped"),
            Socks5Error::Truncated => f.write_str("socks5: UDP datagram shorter than its header"),
            Socks5Error::Address(e) => write!(f, "socks5: {e}"),
        }
    }
}

impl std::error::Error for Socks5Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Socks5Error::Address(e) => Some(e),
            _ => None,
        }
    }
}

impl From<AddressError> for Socks5Error {
    fn from(e: AddressError) -> Socks5Error {
        Socks5Error::Address(e)
    }
}

impl Socks5Error {
    /// The reply to send before closing when [`parse_request`] fails, if one is due:
    /// [`Reply::CommandNotSupported`] for an unknown command, [`Reply::AddressTypeNotSupported`]
    /// for an unknown ATYP, [`Reply::GeneralFailure`] for another bad address; `None` when the
    /// peer does not speak SOCKS5 (bad version) and we should just close.
    pub fn reply(&self) -> Option<Reply> {
        match self {
            Socks5Error::UnknownCommand(_) => Some(Reply::CommandNotSupported),
            Socks5Error::Address(AddressError::UnknownType(_)) => Some(Reply::AddressTypeNotSupported),
            Socks5Error::Address(_) => Some(Reply::GeneralFailure),
            _ => None,
        }
    }
}

fn check_version(buf: &[u8]) -> Result<(), Socks5Error> {
    match buf.first() {
        Some(&v) if v != VERSION => Err(Socks5Error::BadVersion(v)),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Greeting and method selection
// ---------------------------------------------------------------------------------------------

/// The client's first message: `VER | NMETHODS | METHODS...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Greeting {
    /// The offered authentication methods (1 to 255 of them).
    pub methods: Vec<u8>,
}

impl Greeting {
    /// The method we select: [`METHOD_NO_AUTH`] if offered, otherwise [`METHOD_NO_ACCEPTABLE`].
    pub fn choose_method(&self) -> u8 {
        if self.methods.contains(&METHOD_NO_AUTH) {
            METHOD_NO_AUTH
        } else {
            METHOD_NO_ACCEPTABLE
        }
    }
}

/// Server side: parses the greeting.
pub fn parse_greeting(buf: &[u8]) -> Result<Option<(Greeting, usize)>, Socks5Error> {
    check_version(buf)?;
    let Some(&n) = buf.get(1) else {
        return Ok(None);
    };
    if n == 0 {
        return Err(Socks5Error::NoMethods);
    }
    let total = 2 + usize::from(n);
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((
        Greeting {
            methods: buf[2..total].to_vec(),
        },
        total,
    )))
}

/// Server side: the two-byte method selection message `VER | METHOD`.
pub fn write_method_selection(method: u8, out: &mut Vec<u8>) {
    out.extend_from_slice(&[VERSION, method]);
}

/// Client side: appends a greeting offering `methods`.
///
/// # Panics
/// If `methods` is empty or has more than 255 entries.
pub fn write_greeting(methods: &[u8], out: &mut Vec<u8>) {
    let n = u8::try_from(methods.len())
        .ok()
        .filter(|&n| n > 0)
        .expect("a greeting offers 1 to 255 methods");
    out.push(VERSION);
    out.push(n);
    out.extend_from_slice(methods);
}

/// Client side: parses the server's method selection; `offered` is what the greeting offered.
/// 0xFF is [`Socks5Error::NoAcceptableMethod`].
pub fn parse_method_selection(buf: &[u8], offered: &[u8]) -> Result<Option<(u8, usize)>, Socks5Error> {
    check_version(buf)?;
    let Some(&m) = buf.get(1) else {
        return Ok(None);
    };
    if m == METHOD_NO_ACCEPTABLE {
        return Err(Socks5Error::NoAcceptableMethod);
    }
    if !offered.contains(&m) {
        return Err(Socks5Error::UnexpectedMethod(m));
    }
    Ok(Some((m, 2)))
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// The CMD of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// 0x01: a TCP stream to the address.
    Connect,
    /// 0x02: an inbound TCP connection. Not supported: answer [`Reply::CommandNotSupported`].
    Bind,
    /// 0x03: a UDP relay; the address is where the client will send from (often 0.0.0.0:0).
    UdpAssociate,
}

impl Command {
    /// The CMD byte.
    pub fn as_u8(self) -> u8 {
        match self {
            Command::Connect => 0x01,
            Command::Bind => 0x02,
            Command::UdpAssociate => 0x03,
        }
    }

    /// The command for a CMD byte.
    pub fn from_u8(b: u8) -> Option<Command> {
        match b {
            0x01 => Some(Command::Connect),
            0x02 => Some(Command::Bind),
            0x03 => Some(Command::UdpAssociate),
            _ => None,
        }
    }
}

/// A request: `VER | CMD | RSV | ATYP | DST.ADDR | DST.PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// What the client asks for.
    pub command: Command,
    /// The destination (CONNECT) or the client's UDP source (UDP ASSOCIATE).
    pub address: Address,
}

/// Server side: parses a request. The RSV byte is not checked (some clients send garbage).
/// On error, [`Socks5Error::reply`] says what to answer before closing.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, Socks5Error> {
    check_version(buf)?;
    let Some(&cmd) = buf.get(1) else {
        return Ok(None);
    };
    let command = Command::from_u8(cmd).ok_or(Socks5Error::UnknownCommand(cmd))?;
    if buf.len() < 3 {
        return Ok(None);
    }
    match Address::parse(&buf[3..])? {
        None => Ok(None),
        Some((address, n)) => Ok(Some((Request { command, address }, 3 + n))),
    }
}

/// Client side: appends a request.
pub fn write_request(command: Command, address: &Address, out: &mut Vec<u8>) {
    out.extend_from_slice(&[VERSION, command.as_u8(), 0]);
    address.write_to(out);
}

// ---------------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------------

/// The REP field of a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reply {
    /// 0x00.
    Succeeded,
    /// 0x01: general SOCKS server failure.
    GeneralFailure,
    /// 0x02: connection not allowed by ruleset (e.g. a forbidden IP).
    NotAllowed,
    /// 0x03.
    NetworkUnreachable,
    /// 0x04.
    HostUnreachable,
    /// 0x05.
    ConnectionRefused,
    /// 0x06.
    TtlExpired,
    /// 0x07.
    CommandNotSupported,
    /// 0x08.
    AddressTypeNotSupported,
}

impl Reply {
    /// The REP byte.
    pub fn as_u8(self) -> u8 {
        match self {
            Reply::Succeeded => 0,
            Reply::GeneralFailure => 1,
            Reply::NotAllowed => 2,
            Reply::NetworkUnreachable => 3,
            Reply::HostUnreachable => 4,
            Reply::ConnectionRefused => 5,
            Reply::TtlExpired => 6,
            Reply::CommandNotSupported => 7,
            Reply::AddressTypeNotSupported => 8,
        }
    }

    /// The reply for a REP byte.
    pub fn from_u8(b: u8) -> Option<Reply> {
        Some(match b {
            0 => Reply::Succeeded,
            1 => Reply::GeneralFailure,
            2 => Reply::NotAllowed,
            3 => Reply::NetworkUnreachable,
            4 => Reply::HostUnreachable,
            5 => Reply::ConnectionRefused,
            6 => Reply::TtlExpired,
            7 => Reply::CommandNotSupported,
            8 => Reply::AddressTypeNotSupported,
            _ => return None,
        })
    }

    /// The reply for a failed connect (or resolve): by errno first, then by [`io::ErrorKind`].
    pub fn from_io_error(err: &io::Error) -> Reply {
        if let Some(errno) = err.raw_os_error() {
            return Reply::from_errno(errno);
        }
        match err.kind() {
            io::ErrorKind::ConnectionRefused => Reply::ConnectionRefused,
            io::ErrorKind::NetworkUnreachable | io::ErrorKind::NetworkDown => Reply::NetworkUnreachable,
            io::ErrorKind::HostUnreachable | io::ErrorKind::TimedOut | io::ErrorKind::AddrNotAvailable => {
                Reply::HostUnreachable
            }
            io::ErrorKind::PermissionDenied => Reply::NotAllowed,
            _ => Reply::GeneralFailure,
        }
    }

    /// The reply for an errno from `connect`/`SO_ERROR`: ECONNREFUSED → 5, ENETUNREACH and
    /// ENETDOWN → 3, EHOSTUNREACH, EHOSTDOWN and ETIMEDOUT → 4, EACCES/EPERM → 2, else 1.
    pub fn from_errno(errno: i32) -> Reply {
        match errno {
            libc::ECONNREFUSED => Reply::ConnectionRefused,
            libc::ENETUNREACH | libc::ENETDOWN => Reply::NetworkUnreachable,
            libc::EHOSTUNREACH | libc::EHOSTDOWN | libc::ETIMEDOUT => Reply::HostUnreachable,
            libc::EACCES | libc::EPERM => Reply::NotAllowed,
            _ => Reply::GeneralFailure,
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reply::Succeeded => "succeeded",
            Reply::GeneralFailure => "general SOCKS server failure",
            Reply::NotAllowed => "connection not allowed by ruleset",
            Reply::NetworkUnreachable => "network unreachable",
            Reply::HostUnreachable => "host unreachable",
            Reply::ConnectionRefused => "connection refused",
            Reply::TtlExpired => "TTL expired",
            Reply::CommandNotSupported => "command not supported",
            Reply::AddressTypeNotSupported => "address type not supported",
        })
    }
}

/// The BND address for failure replies: 0.0.0.0:0.
pub const UNSPECIFIED_BIND: Address = Address::Ipv4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

/// Server side: appends a reply `VER | REP | RSV | ATYP | BND.ADDR | BND.PORT`.
/// Use [`UNSPECIFIED_BIND`] for failures.
pub fn write_reply(reply: Reply, bind: &Address, out: &mut Vec<u8>) {
    out.extend_from_slice(&[VERSION, reply.as_u8(), 0]);
    bind.write_to(out);
}

/// A parsed reply (client side).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyMessage {
    /// REP.
    pub reply: Reply,
    /// BND.ADDR/BND.PORT: for UDP ASSOCIATE, where to send datagrams.
    pub bind: Address,
}

/// Client side: parses a reply. A failure code is returned as a message, not an error.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(ReplyMessage, usize)>, Socks5Error> {
    check_version(buf)?;
    let Some(&rep) = buf.get(1) else {
        return Ok(None);
    };
    let reply = Reply::from_u8(rep).ok_or(Socks5Error::UnknownReply(rep))?;
    if buf.len() < 3 {
        return Ok(None);
    }
    match Address::parse(&buf[3..])? {
        None => Ok(None),
        Some((bind, n)) => Ok(Some((ReplyMessage { reply, bind }, 3 + n))),
    }
}

// ---------------------------------------------------------------------------------------------
// UDP
// ---------------------------------------------------------------------------------------------

/// A parsed UDP request datagram: `RSV(2) | FRAG | ATYP | DST.ADDR | DST.PORT | DATA`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpPacket<'a> {
    /// The destination (from the client) or the source (to the client).
    pub address: Address,
    /// DATA.
    pub payload: &'a [u8],
}

/// Parses a whole UDP datagram. FRAG != 0 is [`Socks5Error::Fragmented`] (drop the datagram);
/// RSV is not checked.
pub fn parse_udp_packet(datagram: &[u8]) -> Result<UdpPacket<'_>, Socks5Error> {
    if datagram.len() < 3 {
        return Err(Socks5Error::Truncated);
    }
    if datagram[2] != 0 {
        return Err(Socks5Error::Fragmented(datagram[2]));
    }
    match Address::parse(&datagram[3..])? {
        None => Err(Socks5Error::Truncated),
        Some((address, n)) => Ok(UdpPacket {
            address,
            payload: &datagram[3 + n..],
        }),
    }
}

/// Length of the UDP header [`write_udp_header`] writes for `address`.
pub fn udp_header_len(address: &Address) -> usize {
    3 + address.serialized_len()
}

/// Appends a UDP header (RSV 0, FRAG 0, address); the payload goes after it.
pub fn write_udp_header(address: &Address, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0, 0]);
    address.write_to(out);
}

/// A whole UDP datagram: header then `payload`.
pub fn build_udp_packet(address: &Address, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(udp_header_len(address) + payload.len());
    write_udp_header(address, &mut v);
    v.extend_from_slice(payload);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn assert_prefixes_incomplete<T: fmt::Debug>(
        msg: &[u8],
        parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, Socks5Error>,
    ) {
        for cut in 0..msg.len() {
            match parse(&msg[..cut]) {
                Ok(None) => {}
                other => panic!("prefix {cut} of {msg:?}: {other:?}"),
            }
        }
        let (_, n) = parse(msg).unwrap().expect("complete");
        assert_eq!(n, msg.len());
    }

    fn addrs() -> Vec<Address> {
        vec![
            Address::from("127.0.0.1:1080".parse::<SocketAddr>().unwrap()),
            Address::from("[2001:db8::5]:53".parse::<SocketAddr>().unwrap()),
            Address::Domain("www.example.org".into(), 443),
        ]
    }

    #[test]
    fn greeting_happy() {
        let (g, n) = parse_greeting(&[5, 2, 0, 2]).unwrap().unwrap();
        assert_eq!(n, 4);
        assert_eq!(g.methods, [0, 2]);
        assert_eq!(g.choose_method(), METHOD_NO_AUTH);
        let mut out = Vec::new();
        write_method_selection(g.choose_method(), &mut out);
        assert_eq!(out, [5, 0]);
        // Pipelined request bytes after the greeting are not consumed.
        assert_eq!(parse_greeting(&[5, 1, 0, 5, 1, 0]).unwrap().unwrap().1, 3);
    }

    #[test]
    fn greeting_without_no_auth_gets_ff() {
        let (g, _) = parse_greeting(&[5, 1, 2]).unwrap().unwrap();
        assert_eq!(g.choose_method(), METHOD_NO_ACCEPTABLE);
    }

    #[test]
    fn greeting_malformed() {
        assert_eq!(parse_greeting(&[4, 1, 0]), Err(Socks5Error::BadVersion(4)));
        assert_eq!(parse_greeting(&[4]), Err(Socks5Error::BadVersion(4)));
        assert_eq!(parse_greeting(b"GET / HTTP/1.1"), Err(Socks5Error::BadVersion(b'G')));
        assert_eq!(parse_greeting(&[5, 0]), Err(Socks5Error::NoMethods));
        assert_eq!(parse_greeting(&[5, 0, 0]), Err(Socks5Error::NoMethods));
        assert_eq!(
            Socks5Error::BadVersion(4).to_string(),
            "socks5: version byte is 0x04, not 0x05"
        );
    }

    #[test]
    fn greeting_prefixes() {
        let mut msg = Vec::new();
        write_greeting(&[0, 1, 2], &mut msg);
        assert_eq!(msg, [5, 3, 0, 1, 2]);
        assert_prefixes_incomplete(&msg, parse_greeting);
        let all: Vec<u8> = (0..=254).collect();
        let mut msg = Vec::new();
        write_greeting(&all, &mut msg);
        assert_prefixes_incomplete(&msg, parse_greeting);
    }

    #[test]
    fn method_selection_client() {
        assert_eq!(parse_method_selection(&[5, 0], &[0]), Ok(Some((0, 2))));
        assert_eq!(parse_method_selection(&[5], &[0]), Ok(None));
        assert_eq!(parse_method_selection(&[], &[0]), Ok(None));
        assert_eq!(
            parse_method_selection(&[5, 0xff], &[0]),
            Err(Socks5Error::NoAcceptableMethod)
        );
        assert_eq!(
            parse_method_selection(&[5, 2], &[0]),
            Err(Socks5Error::UnexpectedMethod(2))
        );
        assert_eq!(parse_method_selection(&[1, 0], &[0]), Err(Socks5Error::BadVersion(1)));
    }

    #[test]
    fn request_round_trip_and_prefixes() {
        for cmd in [Command::Connect, Command::UdpAssociate, Command::Bind] {
            for addr in addrs() {
                let mut msg = Vec::new();
                write_request(cmd, &addr, &mut msg);
                assert_eq!(&msg[..3], &[5, cmd.as_u8(), 0]);
                let (req, n) = parse_request(&msg).unwrap().unwrap();
                assert_eq!(n, msg.len());
                assert_eq!(
                    req,
                    Request {
                        command: cmd,
                        address: addr
                    }
                );
                assert_prefixes_incomplete(&msg, parse_request);
            }
        }
    }

    #[test]
    fn request_bytes_by_hand() {
        // CONNECT example.com:80
        let mut msg = vec![5, 1, 0, 3, 11];
        msg.extend_from_slice(b"example.com");
        msg.extend_from_slice(&[0, 80, 0xde, 0xad]);
        let (req, n) = parse_request(&msg).unwrap().unwrap();
        assert_eq!(n, msg.len() - 2);
        assert_eq!(req.command, Command::Connect);
        assert_eq!(req.address.to_string(), "example.com:80");
    }

    #[test]
    fn request_malformed() {
        assert_eq!(parse_request(&[4, 1, 0, 1]), Err(Socks5Error::BadVersion(4)));
        let e = parse_request(&[5, 9]).unwrap_err();
        assert_eq!(e, Socks5Error::UnknownCommand(9));
        assert_eq!(e.reply(), Some(Reply::CommandNotSupported));
        let e = parse_request(&[5, 1, 0, 2, 1, 2, 3]).unwrap_err();
        assert_eq!(e, Socks5Error::Address(AddressError::UnknownType(2)));
        assert_eq!(e.reply(), Some(Reply::AddressTypeNotSupported));
        assert_eq!(e.to_string(), "socks5: unknown address type 0x02 (expected 1, 3 or 4)");
        let e = parse_request(&[5, 1, 0, 3, 0]).unwrap_err();
        assert_eq!(e, Socks5Error::Address(AddressError::EmptyDomain));
        assert_eq!(e.reply(), Some(Reply::GeneralFailure));
        assert_eq!(Socks5Error::BadVersion(4).reply(), None);
    }

    #[test]
    fn reply_round_trip_and_prefixes() {
        for code in 0..=8u8 {
            let reply = Reply::from_u8(code).unwrap();
            assert_eq!(reply.as_u8(), code);
            for addr in addrs() {
                let mut msg = Vec::new();
                write_reply(reply, &addr, &mut msg);
                let (m, n) = parse_reply(&msg).unwrap().unwrap();
                assert_eq!(n, msg.len());
                assert_eq!(m, ReplyMessage { reply, bind: addr });
                assert_prefixes_incomplete(&msg, parse_reply);
            }
        }
        assert_eq!(Reply::from_u8(9), None);
        assert_eq!(parse_reply(&[5, 9]), Err(Socks5Error::UnknownReply(9)));
        let mut msg = Vec::new();
        write_reply(Reply::CommandNotSupported, &UNSPECIFIED_BIND, &mut msg);
        assert_eq!(msg, [5, 7, 0, 1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn error_mapping() {
        let os = |e| Reply::from_io_error(&io::Error::from_raw_os_error(e));
        assert_eq!(os(libc::ECONNREFUSED), Reply::ConnectionRefused);
        assert_eq!(os(libc::ENETUNREACH), Reply::NetworkUnreachable);
        assert_eq!(os(libc::EHOSTUNREACH), Reply::HostUnreachable);
        assert_eq!(os(libc::ETIMEDOUT), Reply::HostUnreachable);
        assert_eq!(os(libc::EACCES), Reply::NotAllowed);
        assert_eq!(os(libc::EIO), Reply::GeneralFailure);
        let kind = |k| Reply::from_io_error(&io::Error::from(k));
        assert_eq!(kind(io::ErrorKind::ConnectionRefused), Reply::ConnectionRefused);
        assert_eq!(kind(io::ErrorKind::TimedOut), Reply::HostUnreachable);
        assert_eq!(kind(io::ErrorKind::NetworkUnreachable), Reply::NetworkUnreachable);
        assert_eq!(kind(io::ErrorKind::HostUnreachable), Reply::HostUnreachable);
        assert_eq!(kind(io::ErrorKind::Other), Reply::GeneralFailure);
    }

    #[test]
    fn udp_round_trip() {
        for addr in addrs() {
            let pkt = build_udp_packet(&addr, b"hello");
            assert_eq!(pkt.len(), udp_header_len(&addr) + 5);
            let p = parse_udp_packet(&pkt).unwrap();
            assert_eq!(
                p,
                UdpPacket {
                    address: addr.clone(),
                    payload: b"hello"
                }
            );
            // Empty payload is fine.
            let pkt = build_udp_packet(&addr, b"");
            assert_eq!(parse_udp_packet(&pkt).unwrap().payload, b"");
            // Every strict prefix of the header is truncated, never a panic.
            for cut in 0..pkt.len() {
                assert_eq!(parse_udp_packet(&pkt[..cut]), Err(Socks5Error::Truncated), "cut {cut}");
            }
        }
    }

    #[test]
    fn udp_malformed() {
        let mut pkt = build_udp_packet(&addrs()[0], b"x");
        pkt[2] = 1;
        assert_eq!(parse_udp_packet(&pkt), Err(Socks5Error::Fragmented(1)));
        assert_eq!(
            parse_udp_packet(&[0, 0, 0, 7, 1, 2]),
            Err(Socks5Error::Address(AddressError::UnknownType(7)))
        );
        // Non-zero RSV is tolerated.
        let mut pkt = build_udp_packet(&addrs()[0], b"x");
        pkt[0] = 0xff;
        assert!(parse_udp_packet(&pkt).is_ok());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic fuzz: every parser over many pseudo-random buffers.
        let mut x: u32 = 0x1234_5678;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let len = (x % 24) as usize;
            let mut buf = Vec::with_capacity(len);
            let mut y = x;
            for i in 0..len {
                y = y.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                // Bias towards valid-looking first bytes.
                buf.push(match i {
                    0 => [5, 0, 5, 5][(y >> 16) as usize % 4],
                    3 => [1, 3, 4, 9][(y >> 16) as usize % 4],
                    _ => (y >> 16) as u8,
                });
            }
            let _ = parse_greeting(&buf);
            let _ = parse_request(&buf);
            let _ = parse_reply(&buf);
            let _ = parse_udp_packet(&buf);
            let _ = parse_method_selection(&buf, &[0]);
            let _ = Address::parse(&buf);
        }
    }
}
