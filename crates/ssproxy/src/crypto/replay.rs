//! Replay protection.
//!
//! * [`PingPongBloom`]: SIP004 salts, in bounded memory (as shadowsocks-libev's ppbloom).
//! * [`SaltPool`]: SIP022 salts. The SIP022 spec forbids Bloom filters there ("MUST NOT use
//!   Bloom filters or anything that could return a false positive result") and asks that salts
//!   be stored for 60 seconds, so this one is exact and time-based.
//! * [`ReplayWindow`]: SIP022 UDP packet ids, a per-session sliding window.
//!
//! All three answer `true` for "fresh, accepted and recorded", `false` for "replay".

use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::mem;

use super::MAX_KEY_LEN;

/// One Bloom filter: a bit vector probed with double hashing.
struct Bloom {
    words: Vec<u64>,
    bits: u64,
}

impl Bloom {
    fn new(bits: u64) -> Bloom {
        let words = usize::try_from(bits.div_ceil(64)).expect("filter fits in memory");
        Bloom {
            words: vec![0; words],
            bits: words as u64 * 64,
        }
    }

    /// The `i`th probe position for hashes `(h1, h2)`.
    fn probe(&self, h1: u64, h2: u64, i: u64) -> (usize, u64) {
        let bit = h1.wrapping_add(i.wrapping_mul(h2)) % self.bits;
        ((bit / 64) as usize, 1 << (bit % 64))
    }

    fn contains(&self, h1: u64, h2: u64, k: u32) -> bool {
        (0..u64::from(k)).all(|i| {
            let (w, mask) = self.probe(h1, h2, i);
            self.words[w] & mask != 0
        })
    }

    fn insert(&mut self, h1: u64, h2: u64, k: u32) {
        for i in 0..u64::from(k) {
            let (w, mask) = self.probe(h1, h2, i);
            self.words[w] |= mask;
        }
    }

    fn clear(&mut self) {
        self.words.fill(0);
    }

    /// Write every word, so that every page of the filter is resident.
    fn touch(&mut self) {
        // The allocation is zeroed already: an optimiser that knows this could drop a plain
        // store of zero, and with it the page faults this is for.
        self.words.fill(std::hint::black_box(0));
    }
}

/// A rotating pair of Bloom filters for SIP004 salts, as shadowsocks-libev's `ppbloom`: new
/// salts go into the current filter; when it holds `capacity` entries the other (older) filter
/// is cleared and becomes current. Lookups consult both, so at least the last `capacity` salts
/// (and at most the last `2 * capacity`) are remembered, with no false negatives among them.
///
/// Each filter has `m = -capacity * ln(p) / ln(2)^2` bits and `k = (m / capacity) * ln 2`
/// probes. With the [`Default`] of 1,000,000 entries at a 1e-6 false-positive rate that is
/// about 28.8 Mbit = 3.6 MB and 20 probes per filter, so **about 7.2 MB** in total. It is
/// allocated zeroed, so pages are only touched as bits get set, unless
/// [`PingPongBloom::make_resident`] touches them all up front. Probes use double hashing over two
/// independently, randomly keyed SipHash-1-3 hashes (std's `RandomState`), so peers cannot
/// aim for collisions.
pub struct PingPongBloom {
    filters: [Bloom; 2],
    current: usize,
    count: usize,
    capacity: usize,
    k: u32,
    hash1: RandomState,
    hash2: RandomState,
}

impl PingPongBloom {
    /// Filters sized for `capacity` entries each at false-positive rate `fp_rate` (clamped to
    /// `1e-15..=0.5`; `capacity` at least 1).
    pub fn new(capacity: usize, fp_rate: f64) -> PingPongBloom {
        let capacity = capacity.max(1);
        let p = fp_rate.clamp(1e-15, 0.5);
        let ln2 = std::f64::consts::LN_2;
        let bits = (-(capacity as f64) * p.ln() / (ln2 * ln2)).ceil().max(64.0);
        let k = ((bits / capacity as f64) * ln2).round().clamp(1.0, 64.0) as u32;
        let bits = bits as u64;
        PingPongBloom {
            filters: [Bloom::new(bits), Bloom::new(bits)],
            current: 0,
            count: 0,
            capacity,
            k,
            hash1: RandomState::new(),
            hash2: RandomState::new(),
        }
    }

    /// Returns `true` if `item` was not seen (it is now recorded), `false` if it was (or, with
    /// the configured small probability, collides with recorded items).
    pub fn check_and_insert(&mut self, item: &[u8]) -> bool {
        let h1 = self.hash1.hash_one(item);
        let h2 = self.hash2.hash_one(item) | 1;
        if self.filters.iter().any(|f| f.contains(h1, h2, self.k)) {
            return false;
        }
        self.filters[self.current].insert(h1, h2, self.k);
        self.count += 1;
        if self.count >= self.capacity {
            self.current ^= 1;
            self.filters[self.current].clear();
            self.count = 0;
        }
        true
    }

    /// Touch every page of both filters now.
    ///
    /// Each salt sets `k` bits spread over the whole filter, so a thousand salts or so make
    /// every page of the current filter resident, and the other one follows at the first
    /// rotation (after `capacity` salts): the filters reach their full size early in a server's
    /// life and never shrink. Paying that at start-up keeps resident memory flat under load, so that
    /// growth after start-up means connection state, not salts, and a memory limit too small
    /// for the filters shows at start rather than under load.
    pub fn make_resident(&mut self) {
        for filter in &mut self.filters {
            filter.touch();
        }
    }

    /// Heap memory of both filters, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.filters.iter().map(|f| f.words.len() * 8).sum()
    }

    /// Number of probes per lookup.
    pub fn hashes(&self) -> u32 {
        self.k
    }
}

impl Default for PingPongBloom {
    /// 1,000,000 entries per filter at a 1e-6 false-positive rate: about 7.2 MB.
    fn default() -> Self {
        PingPongBloom::new(1_000_000, 1e-6)
    }
}

impl fmt::Debug for PingPongBloom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PingPongBloom")
            .field("capacity", &self.capacity)
            .field("count", &self.count)
            .field("bits_per_filter", &self.filters[0].bits)
            .field("hashes", &self.k)
            .finish()
    }
}

/// Salt storage key: the salt zero-padded to 32 bytes, then its length.
type SaltKey = [u8; MAX_KEY_LEN + 1];

/// Exact salt storage for SIP022 (no false positives): salts are kept for at least `ttl`
/// seconds (60 by [`Default`], as the spec requires) and at most `2 * ttl`, in two
/// generations that rotate every `ttl` seconds. Memory is proportional to the number of
/// streams accepted in the last two minutes (about 50 bytes per salt in hash-set overhead
/// included); only salts of authenticated, in-time headers ever get here.
#[derive(Debug)]
pub struct SaltPool {
    current: HashSet<SaltKey>,
    previous: HashSet<SaltKey>,
    rotated_at: u64,
    ttl: u64,
}

impl SaltPool {
    /// A pool keeping salts for at least `ttl` seconds.
    pub fn new(ttl: u64) -> SaltPool {
        SaltPool {
            current: HashSet::new(),
            previous: HashSet::new(),
            rotated_at: 0,
            ttl: ttl.max(1),
        }
    }

    /// Returns `true` if `salt` (at most 32 bytes) was not seen in the retention period (it is
    /// now recorded), `false` if it was. `now` is the Unix time in seconds
    /// ([`crate::crypto::unix_time`]).
    pub fn check_and_insert(&mut self, salt: &[u8], now: u64) -> bool {
        let elapsed = now.saturating_sub(self.rotated_at);
        if elapsed >= self.ttl {
            if elapsed >= 2 * self.ttl {
                self.previous.clear();
                self.current.clear();
            } else {
                self.previous = mem::take(&mut self.current);
            }
            self.rotated_at = now;
        }
        let mut key = [0u8; MAX_KEY_LEN + 1];
        let len = salt.len().min(MAX_KEY_LEN);
        key[..len].copy_from_slice(&salt[..len]);
        key[MAX_KEY_LEN] = len as u8;
        if self.previous.contains(&key) {
            return false;
        }
        self.current.insert(key)
    }

    /// Number of salts currently stored.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Whether no salt is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for SaltPool {
    /// Salts kept for 60 seconds, per the SIP022 spec.
    fn default() -> Self {
        SaltPool::new(60)
    }
}

/// Sliding-window filter for SIP022 UDP packet ids, one per session and direction. It accepts
/// each id at most once, and rejects ids [`ReplayWindow::SIZE`] or more below the highest id
/// accepted so far. Call it only for packets that authenticated. 264 bytes.
#[derive(Clone)]
pub struct ReplayWindow {
    /// Highest id accepted; meaningful once `started`.
    top: u64,
    started: bool,
    /// Bit `id % SIZE` records whether `id` (within the window) was seen.
    bits: [u64; Self::WORDS],
}

impl ReplayWindow {
    /// Number of ids the window covers.
    pub const SIZE: u64 = 2048;
    const WORDS: usize = (Self::SIZE / 64) as usize;

    /// An empty window.
    pub fn new() -> ReplayWindow {
        ReplayWindow {
            top: 0,
            started: false,
            bits: [0; Self::WORDS],
        }
    }

    fn slot(id: u64) -> (usize, u64) {
        let bit = id % Self::SIZE;
        ((bit / 64) as usize, 1 << (bit % 64))
    }

    /// Returns `true` if `id` is new and inside the window (it is now recorded), `false` if it
    /// is a duplicate or too old.
    pub fn check_and_insert(&mut self, id: u64) -> bool {
        if !self.started || id > self.top {
            let gap = if self.started { id - self.top } else { u64::MAX };
            if gap >= Self::SIZE {
                self.bits = [0; Self::WORDS];
            } else {
                // Forget the ids that slide out: they share slots with top+1..=id.
                for offset in 1..=gap {
                    let (w, mask) = Self::slot(self.top + offset);
                    self.bits[w] &= !mask;
                }
            }
            self.started = true;
            self.top = id;
        } else if self.top - id >= Self::SIZE {
            return false;
        }
        let (w, mask) = Self::slot(id);
        if self.bits[w] & mask != 0 {
            return false;
        }
        self.bits[w] |= mask;
        true
    }

    /// The highest id accepted so far, if any.
    pub fn highest(&self) -> Option<u64> {
        self.started.then_some(self.top)
    }
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow::new()
    }
}

impl fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("highest", &self.highest())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bloom_default_size() {
        let b = PingPongBloom::default();
        assert_eq!(b.hashes(), 20);
        let mb = b.memory_bytes() as f64 / 1e6;
        assert!((7.1..7.3).contains(&mb), "{mb} MB");
    }

    #[test]
    fn resident_bloom_starts_empty() {
        let mut b = PingPongBloom::new(10_000, 1e-6);
        b.make_resident();
        assert!(b.check_and_insert(b"salt"));
        assert!(!b.check_and_insert(b"salt"));
    }

    #[test]
    fn bloom_has_no_false_negatives() {
        let mut b = PingPongBloom::new(10_000, 1e-6);
        let salts: Vec<[u8; 32]> = (0..10_000u32)
            .map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes())
            .collect();
        for s in &salts[..9_999] {
            assert!(b.check_and_insert(s), "fresh salt rejected (false positive is ~1e-6)");
        }
        for s in &salts[..9_999] {
            assert!(!b.check_and_insert(s), "false negative");
        }
    }

    #[test]
    fn bloom_false_positive_rate_is_low() {
        let mut b = PingPongBloom::new(20_000, 1e-3);
        for i in 0..20_000u32 {
            b.check_and_insert(&i.to_le_bytes());
        }
        let fps = (1_000_000..1_020_000u32)
            .filter(|i| !b.check_and_insert(&i.to_le_bytes()))
            .count();
        // Expected ~ 20 (1e-3 of 20,000, lookups also see the newer filter); allow slack.
        assert!(fps < 100, "{fps} false positives");
    }

    #[test]
    fn bloom_rotation_forgets_oldest_generation_only() {
        let mut b = PingPongBloom::new(100, 1e-9);
        let item = |i: u32| i.to_be_bytes();
        for i in 0..100 {
            assert!(b.check_and_insert(&item(i)));
        }
        // Generation 0 is full: the filters swapped, 0..100 live in the older filter.
        for i in 100..199 {
            assert!(b.check_and_insert(&item(i)));
        }
        assert!(
            !b.check_and_insert(&item(0)),
            "still remembered before the second rotation"
        );
        assert!(!b.check_and_insert(&item(150)));
        // The 100th insert of this generation rotates again and clears 0..100.
        assert!(b.check_and_insert(&item(199)));
        assert!(b.check_and_insert(&item(0)), "oldest generation forgotten");
        assert!(!b.check_and_insert(&item(150)), "previous generation kept");
    }

    #[test]
    fn salt_pool_is_exact_and_expires() {
        let mut p = SaltPool::default();
        let t = 1_700_000_000;
        assert!(p.check_and_insert(&[1; 32], t));
        assert!(!p.check_and_insert(&[1; 32], t + 1));
        assert!(p.check_and_insert(&[1; 16], t + 1), "length is part of the identity");
        assert!(!p.check_and_insert(&[1; 32], t + 59));
        assert!(!p.check_and_insert(&[1; 32], t + 61), "kept at least 60 s");
        assert!(!p.check_and_insert(&[1; 32], t + 119));
        assert_eq!(p.len(), 2);
        assert!(p.check_and_insert(&[1; 32], t + 240), "forgotten after 2 * ttl");
        assert_eq!(p.len(), 1);
        for i in 0..10_000u32 {
            assert!(p.check_and_insert(blake3::hash(&i.to_le_bytes()).as_bytes(), t + 240));
        }
    }

    #[test]
    fn replay_window() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.highest(), None);
        assert!(w.check_and_insert(0));
        assert!(!w.check_and_insert(0), "duplicate");
        assert!(w.check_and_insert(2));
        assert!(w.check_and_insert(1), "reordered, inside the window");
        assert!(!w.check_and_insert(1));
        assert!(w.check_and_insert(5000));
        assert!(!w.check_and_insert(2), "too old");
        assert!(!w.check_and_insert(5000 - 2048), "just outside the window");
        assert!(w.check_and_insert(5000 - 2047), "oldest id inside the window");
        assert!(!w.check_and_insert(5000 - 2047));
        for id in 5001..7000 {
            assert!(w.check_and_insert(id));
        }
        assert!(!w.check_and_insert(6000));
        assert!(w.check_and_insert(6999 - 2047), "never seen, inside the window");
        assert!(!w.check_and_insert(6999 - 2048), "outside the window");
        // Slide by less than the window: ids that slid out are forgotten from their slots,
        // ids still inside are remembered.
        let mut w = ReplayWindow::new();
        for id in 0..2048 {
            assert!(w.check_and_insert(id));
        }
        assert!(w.check_and_insert(2048 + 10));
        assert!(!w.check_and_insert(10), "slid out");
        assert!(!w.check_and_insert(11), "still inside and seen");
        assert!(w.check_and_insert(2048 + 5), "new id in a recycled slot");
        assert_eq!(w.highest(), Some(2058));
        // Extreme ids.
        let mut w = ReplayWindow::new();
        assert!(w.check_and_insert(u64::MAX));
        assert!(!w.check_and_insert(u64::MAX));
        assert!(w.check_and_insert(u64::MAX - 1));
        assert!(!w.check_and_insert(0));
    }
}
