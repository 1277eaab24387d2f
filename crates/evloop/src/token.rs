//! [`Token`]: what a registration is called, by the loop and by the pollers.
//!
//! Its own module because both sides need it: a poller carries the token it was
//! given at registration back with each event (epoll in the kernel's event data,
//! poll and select beside the fd, kqueue in its fd table), and the loop resolves
//! it to a registration. Neither imports the other for it.

use std::fmt;

/// Names one registration. A token is never reused for another registration: after
/// `remove`, the same slot comes back with a new generation, so a stale token (or a
/// stale event carrying it) matches nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl Token {
    /// The token as one integer (for logs, as a map key, or as a poller's key when
    /// a backend is used without the loop).
    pub const fn as_u64(self) -> u64 {
        (self.generation as u64) << 32 | self.index as u64
    }

    /// The token of [`as_u64`](Self::as_u64)'s integer.
    pub const fn from_u64(value: u64) -> Token {
        Token {
            index: value as u32,
            generation: (value >> 32) as u32,
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}v{})", self.index, self.generation)
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
