//! Wire formats: SOCKS5 and the shadowsocks target address.
//!
//! Everything here is sans-I/O: parsers take the bytes received so far and answer
//! `Ok(None)` (incomplete: read more and call again with the longer buffer),
//! `Ok(Some((value, n)))` (done: the value took the first `n` bytes; the rest belongs to
//! whatever follows), or `Err(_)` (malformed: more bytes will not help). Parsers never
//! panic on any input, and report errors as early as the bytes allow.
//!
//! * [`address`]: the `ATYP | ADDR | PORT` address that starts every shadowsocks stream and
//!   packet and is embedded in SOCKS5 requests, replies and UDP headers.
//! * [`socks5`]: RFC 1928 greeting, request, reply and UDP header, server and client side.

pub mod address;
pub mod socks5;

pub use address::{Address, AddressError};
pub use socks5::{Command, Reply, ReplyMessage, Request, Socks5Error, UdpPacket};
