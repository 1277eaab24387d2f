//! The relays: one event loop per worker thread, each with its own listeners
//! (`SO_REUSEPORT`), carrying TCP streams and UDP datagrams between clients and
//! destinations.
//!
//! Everything a worker owns lives in its [`Worker`](worker::Worker), the loop's shared data; the
//! handlers registered for each socket find their connection there by id.

pub mod buffer;
pub mod codec;
pub mod session_windows;
pub mod tcp;
pub mod udp;
pub mod worker;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::IpSet;
use crate::crypto::{Key, PingPongBloom, SaltPool};
use crate::protocol::Address;

/// What a worker does with accepted connections.
#[derive(Clone, Debug)]
pub enum Role {
    /// ssserver: decrypt, connect to the requested destination, relay.
    Server,
    /// sslocal: speak SOCKS5 to applications and relay through `server`.
    Local {
        /// The ssserver to relay through.
        server: SocketAddr,
        /// Tunnel mode (ss-tunnel): every connection goes to this destination,
        /// without SOCKS5.
        tunnel: Option<Address>,
    },
}

/// Settings and state shared by all workers of one program.
pub struct Shared {
    /// Server or local.
    pub role: Role,
    /// The cipher and its key.
    pub key: Key,
    /// Close a connection idle for this long.
    pub idle_timeout: Duration,
    /// Give up on a destination that has not accepted the connection by then.
    pub connect_timeout: Duration,
    /// Destinations the server refuses to relay to.
    pub forbidden: IpSet,
    /// Salts seen recently (SIP004 streams and packets): a replayed one is refused.
    /// Shared by all workers, since a replay may arrive at any of them.
    pub replay: Mutex<PingPongBloom>,
    /// SIP022 salts: kept exactly (no false positives), as that specification asks.
    pub salt_pool: Mutex<SaltPool>,
    /// Accept UDP too.
    pub udp: bool,
    /// The UDP relay's state shared by the workers (session windows, association holders).
    pub udp_shared: udp::UdpShared,
    /// Accept TCP.
    pub tcp: bool,
    /// How long a graceful shutdown (SIGQUIT) waits for live connections.
    pub grace: Duration,
}

impl Shared {
    /// Record a salt; false if it was seen before (a replay). Both the peers' salts and our
    /// own SIP004 ones go through here, so that a stream we sent, captured and sent back to
    /// us, is refused like any replay (reflection).
    pub fn fresh_salt(&self, salt: &[u8]) -> bool {
        if self.key.method().is_2022() {
            let now = crate::crypto::unix_time();
            self.salt_pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .check_and_insert(salt, now)
        } else {
            self.replay
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .check_and_insert(salt)
        }
    }

    /// Server: why relaying to `dest` is refused (the `forbidden_ip` rule it matched and how
    /// to allow it), or `None` if it is allowed. Locals relay anywhere their server will.
    pub fn forbidden_reason(&self, dest: SocketAddr) -> Option<String> {
        if !matches!(self.role, Role::Server) {
            return None;
        }
        let rule = self.forbidden.matching(dest.ip())?;
        Some(format!(
            "refusing to relay to {dest}: it is in {rule}, a forbidden_ip network \
             (to allow it, set forbidden_ip / --forbidden-ip to a list without {rule}; \"\" allows all)"
        ))
    }
}

/// A handle on the shared settings, cheap to clone into handlers.
pub type SharedRef = Arc<Shared>;
