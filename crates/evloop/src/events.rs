//! Event masks: the original's `POLL_*` constants, as a small bit-set type.

use std::fmt;
use std::ops::{BitAnd, BitAndAssign, BitOr, BitOrAssign, Not};

/// A set of readiness conditions on one descriptor.
///
/// The bit values are the original's, which equal Linux's `EPOLLIN`, `EPOLLOUT`,
/// `EPOLLERR`, `EPOLLHUP` and `POLLNVAL`. The same type is both the *mode* a
/// descriptor is watched with and the *events* a poll reports for it.
///
/// It prints by name, as the original's `EVENT_NAMES`:
///
/// ```
/// use evloop::{POLL_ERR, POLL_IN, POLL_NULL};
/// assert_eq!((POLL_IN | POLL_ERR).to_string(), "POLL_IN|POLL_ERR");
/// assert_eq!(POLL_NULL.to_string(), "POLL_NULL");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Events(u32);

/// No event; the start value when OR-ing events together.
pub const POLL_NULL: Events = Events(0x00);
/// Readable: data can be read, or a connection is waiting to be accepted.
pub const POLL_IN: Events = Events(0x01);
/// Writable: a write would not block (also: a non-blocking connect finished).
pub const POLL_OUT: Events = Events(0x04);
/// An asynchronous error is pending on the descriptor (TCP: an RST was sent or received).
pub const POLL_ERR: Events = Events(0x08);
/// Hang-up: the peer is gone (TCP: FIN sent and received).
pub const POLL_HUP: Events = Events(0x10);
/// The descriptor is not open.
pub const POLL_NVAL: Events = Events(0x20);

/// Every named event with its name, in bit order: the original's `EVENT_NAMES`.
pub const EVENT_NAMES: [(Events, &str); 5] = [
    (POLL_IN, "POLL_IN"),
    (POLL_OUT, "POLL_OUT"),
    (POLL_ERR, "POLL_ERR"),
    (POLL_HUP, "POLL_HUP"),
    (POLL_NVAL, "POLL_NVAL"),
];

const ALL_BITS: u32 = 0x01 | 0x04 | 0x08 | 0x10 | 0x20;

impl Events {
    /// The mask from its raw bits; bits that name no event are dropped.
    pub const fn from_bits(bits: u32) -> Events {
        Events(bits & ALL_BITS)
    }

    /// The raw bits, equal to the original's integer values.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// True when no event is set (`POLL_NULL`).
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when every event of `other` is set in `self`.
    pub const fn contains(self, other: Events) -> bool {
        self.0 & other.0 == other.0
    }

    /// True when `self` and `other` share at least one event.
    pub const fn intersects(self, other: Events) -> bool {
        self.0 & other.0 != 0
    }

    /// `POLL_IN` is set.
    pub const fn is_readable(self) -> bool {
        self.intersects(POLL_IN)
    }

    /// `POLL_OUT` is set.
    pub const fn is_writable(self) -> bool {
        self.intersects(POLL_OUT)
    }

    /// `POLL_ERR` is set.
    pub const fn is_error(self) -> bool {
        self.intersects(POLL_ERR)
    }

    /// `POLL_HUP` is set.
    pub const fn is_hup(self) -> bool {
        self.intersects(POLL_HUP)
    }

    /// `POLL_NVAL` is set.
    pub const fn is_invalid(self) -> bool {
        self.intersects(POLL_NVAL)
    }
}

impl BitOr for Events {
    type Output = Events;
    fn bitor(self, rhs: Events) -> Events {
        Events(self.0 | rhs.0)
    }
}

impl BitOrAssign for Events {
    fn bitor_assign(&mut self, rhs: Events) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for Events {
    type Output = Events;
    fn bitand(self, rhs: Events) -> Events {
        Events(self.0 & rhs.0)
    }
}

impl BitAndAssign for Events {
    fn bitand_assign(&mut self, rhs: Events) {
        self.0 &= rhs.0;
    }
}

impl Not for Events {
    type Output = Events;
    fn not(self) -> Events {
        Events(!self.0 & ALL_BITS)
    }
}

impl fmt::Display for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("POLL_NULL");
        }
        let mut first = true;
        for (event, name) in EVENT_NAMES {
            if self.contains(event) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_the_original() {
        assert_eq!(POLL_NULL.bits(), 0x00);
        assert_eq!(POLL_IN.bits(), 0x01);
        assert_eq!(POLL_OUT.bits(), 0x04);
        assert_eq!(POLL_ERR.bits(), 0x08);
        assert_eq!(POLL_HUP.bits(), 0x10);
        assert_eq!(POLL_NVAL.bits(), 0x20);
    }

    #[test]
    fn prints_by_name() {
        assert_eq!(POLL_NULL.to_string(), "POLL_NULL");
        assert_eq!((POLL_IN | POLL_ERR).to_string(), "POLL_IN|POLL_ERR");
        assert_eq!(format!("{:?}", POLL_HUP | POLL_OUT), "POLL_OUT|POLL_HUP");
        assert_eq!(
            Events::from_bits(0xff).to_string(),
            "POLL_IN|POLL_OUT|POLL_ERR|POLL_HUP|POLL_NVAL"
        );
    }

    #[test]
    fn unknown_bits_are_dropped() {
        assert_eq!(Events::from_bits(0x02 | 0x40), POLL_NULL);
        assert_eq!(!POLL_IN, POLL_OUT | POLL_ERR | POLL_HUP | POLL_NVAL);
    }
}
