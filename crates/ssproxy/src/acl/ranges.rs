//! Address rules as sorted, disjoint ranges: a lookup is one binary search, whatever the
//! number of CIDRs (thousands in a geo-IP list).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An unsigned integer an address converts to (`u32` for IPv4, `u128` for IPv6).
pub(crate) trait Bound: Copy + Ord {
    /// The next value, or `None` at the top of the range.
    fn successor(self) -> Option<Self>;
}

impl Bound for u32 {
    fn successor(self) -> Option<Self> {
        self.checked_add(1)
    }
}

impl Bound for u128 {
    fn successor(self) -> Option<Self> {
        self.checked_add(1)
    }
}

/// Inclusive ranges, sorted by start, with overlapping and adjacent ones merged.
#[derive(Debug, Clone, Default)]
pub(crate) struct RangeSet<T> {
    starts: Vec<T>,
    ends: Vec<T>,
}

impl<T: Bound> RangeSet<T> {
    /// Builds the set from ranges in any order, overlapping or not.
    pub(crate) fn from_ranges(mut ranges: Vec<(T, T)>) -> Self {
        ranges.sort_unstable();
        let mut starts: Vec<T> = Vec::with_capacity(ranges.len());
        let mut ends: Vec<T> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            if let Some(last_end) = ends.last_mut() {
                // Merge when the range overlaps or touches the previous one.
                let touches = last_end.successor().is_none_or(|next| start <= next);
                if touches {
                    *last_end = (*last_end).max(end);
                    continue;
                }
            }
            starts.push(start);
            ends.push(end);
        }
        RangeSet { starts, ends }
    }

    /// Whether `value` lies in one of the ranges.
    pub(crate) fn contains(&self, value: T) -> bool {
        let after = self.starts.partition_point(|start| *start <= value);
        after > 0 && value <= self.ends[after - 1]
    }

    /// Whether the set holds no range.
    pub(crate) fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }
}

/// The first and last address of `addr/prefix` as integers; `None` when the prefix is
/// longer than the address.
pub(crate) fn cidr_bounds(addr: IpAddr, prefix: u8) -> Option<CidrBounds> {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let host_bits = 32u32.checked_sub(u32::from(prefix))?;
            let host_mask = u32::MAX.checked_shr(32 - host_bits).unwrap_or(0);
            Some(CidrBounds::V4(bits & !host_mask, bits | host_mask))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let host_bits = 128u32.checked_sub(u32::from(prefix))?;
            let host_mask = u128::MAX.checked_shr(128 - host_bits).unwrap_or(0);
            Some(CidrBounds::V6(bits & !host_mask, bits | host_mask))
        }
    }
}

/// A CIDR as an inclusive integer range, per address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CidrBounds {
    /// An IPv4 range.
    V4(u32, u32),
    /// An IPv6 range.
    V6(u128, u128),
}

/// The IPv4 and IPv6 ranges of one list.
#[derive(Debug, Clone, Default)]
pub(crate) struct AddressSet {
    v4: RangeSet<u32>,
    v6: RangeSet<u128>,
}

impl AddressSet {
    /// Builds the set from CIDR bounds of both families.
    pub(crate) fn new(cidrs: &[CidrBounds]) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for cidr in cidrs {
            match *cidr {
                CidrBounds::V4(start, end) => v4.push((start, end)),
                CidrBounds::V6(start, end) => v6.push((start, end)),
            }
        }
        AddressSet {
            v4: RangeSet::from_ranges(v4),
            v6: RangeSet::from_ranges(v6),
        }
    }

    /// Whether `ip` is in the set. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) and its
    /// IPv4 address are the same destination, so each is also looked up as the other.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self.contains_v4(v4) || self.contains_v6(v4.to_ipv6_mapped()),
            IpAddr::V6(v6) => self.contains_v6(v6) || v6.to_ipv4_mapped().is_some_and(|v4| self.contains_v4(v4)),
        }
    }

    fn contains_v4(&self, ip: Ipv4Addr) -> bool {
        self.v4.contains(u32::from(ip))
    }

    fn contains_v6(&self, ip: Ipv6Addr) -> bool {
        self.v6.contains(u128::from(ip))
    }

    /// Whether the set holds no address at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_and_adjacent_ranges_merge_and_gaps_stay_out() {
        let set = RangeSet::from_ranges(vec![(10u32, 20), (21, 30), (15, 25), (40, 50), (0, 0)]);
        assert_eq!(set.starts, vec![0, 10, 40]);
        assert_eq!(set.ends, vec![0, 30, 50]);
        for (value, inside) in [
            (0, true),
            (1, false),
            (10, true),
            (30, true),
            (31, false),
            (45, true),
            (51, false),
        ] {
            assert_eq!(set.contains(value), inside, "{value}");
        }
    }

    #[test]
    fn a_range_ending_at_the_top_does_not_overflow() {
        let set = RangeSet::from_ranges(vec![(u32::MAX - 1, u32::MAX), (5, u32::MAX)]);
        assert!(set.contains(u32::MAX) && set.contains(5) && !set.contains(4));
    }

    #[test]
    fn cidr_bounds_mask_host_bits_and_refuse_long_prefixes() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            cidr_bounds(ip("10.9.0.32"), 16),
            Some(CidrBounds::V4(0x0a09_0000, 0x0a09_ffff))
        );
        assert_eq!(cidr_bounds(ip("1.2.3.4"), 0), Some(CidrBounds::V4(0, u32::MAX)));
        assert_eq!(
            cidr_bounds(ip("1.2.3.4"), 32),
            Some(CidrBounds::V4(0x0102_0304, 0x0102_0304))
        );
        assert_eq!(cidr_bounds(ip("1.2.3.4"), 33), None);
        assert_eq!(cidr_bounds(ip("::1"), 128), Some(CidrBounds::V6(1, 1)));
        assert_eq!(cidr_bounds(ip("::1"), 0), Some(CidrBounds::V6(0, u128::MAX)));
        assert_eq!(cidr_bounds(ip("::1"), 129), None);
    }

    #[test]
    fn ipv4_rules_match_ipv4_mapped_ipv6_destinations_and_back() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let set = AddressSet::new(&[
            cidr_bounds(ip("10.0.0.0"), 8).unwrap(),
            cidr_bounds(ip("::ffff:192.168.0.0"), 112).unwrap(),
        ]);
        assert!(set.contains(ip("::ffff:10.1.2.3")));
        assert!(set.contains(ip("192.168.7.7")));
        assert!(!set.contains(ip("::10.1.2.3")));
        assert!(!set.contains(ip("11.0.0.1")));
    }
}
