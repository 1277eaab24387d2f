//! The shadowsocks proxy on evloop: the protocol, the crypto and the relays behind
//! the `ssserver` and `sslocal` binaries.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod acl;
pub mod app;
pub mod config;
pub mod crypto;
pub mod dns;
pub mod protocol;
pub mod relay;
