//! The timer queue: a binary heap of deadlines over a slab of timers.
//!
//! Scheduling and firing cost O(log n); cancelling is O(1): it frees the slab slot
//! and leaves the heap entry behind as a tombstone, which is skipped when it
//! surfaces. When tombstones are three quarters of the heap it is rebuilt once
//! (before the next insertion), so a program that schedules and cancels a timeout
//! per request keeps the heap within four times its live timers.
//!
//! The queue is generic over the value stored with each timer; the loop stores its
//! callbacks there and takes each one out while it runs, so that a callback can
//! cancel itself or schedule others.
//!
//! A one-shot timer with a boxed callback takes 40 bytes: a 24-byte slot in the
//! slab and a 16-byte heap entry, which alone holds its deadline. Repeating timers
//! add an entry in a small map of intervals and deadlines.
//!
//! The deadline is not kept beside the slot as well, although that would make
//! [`TimerQueue::deadline`] O(1) for one-shot timers (it searches the heap instead):
//! the 8 bytes it cost were a sixth of the memory a timer takes, and with the page
//! faults and cache misses they brought, scheduling and cancelling 100 000 timers
//! took 14 % longer (`bench/`, W5 schedule+cancel). Programs schedule and cancel a
//! timeout per request; asking a timer for its deadline is rare, and its owner,
//! which chose the delay, can keep it if it needs it often.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::time::{Duration, Instant};

use crate::shrink::{NO_FREE, Shrink, SlabSlot};

/// Names a scheduled timer; stays unique even after the timer is gone.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    index: u32,
    generation: u32,
}

impl fmt::Debug for TimerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TimerId({}v{})", self.index, self.generation)
    }
}

/// The smallest interval a repeating timer may have: a zero interval would fire
/// in every iteration and starve the poll.
pub const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// A heap entry: 16 bytes, so that a heap of 100 000 timers stays in 1.6 MB.
/// Deadlines are nanoseconds since the queue's epoch; ties fire in the order
/// they were scheduled (`seq`). An entry is live while its slot is pending with
/// the same `seq`: cancelling just frees the slot and leaves a tombstone here.
#[derive(Clone, Copy, PartialEq, Eq)]
struct HeapEntry {
    when: u64,
    seq: u32,
    index: u32,
}

impl Ord for HeapEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.when, self.seq).cmp(&(other.when, other.seq))
    }
}

impl PartialOrd for HeapEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// What a firing slot holds in `seq` (its value is with the caller of
/// [`TimerQueue::pop_expired`]): never a free-list link, since slot indices stay
/// below it and the end of the list is [`NO_FREE`].
const FIRING: u32 = NO_FREE - 1;

/// A timer, 24 bytes for a boxed callback, with no tag of its own: its state is
/// told by its fields.
///
/// | state   | `value` | `seq`                       |
/// |---------|---------|-----------------------------|
/// | pending | `Some`  | its live heap entry's `seq` |
/// | firing  | `None`  | [`FIRING`]                  |
/// | vacant  | `None`  | the next vacant slot        |
///
/// What cancelling a timer needs, and only that, is here: it touches one slot
/// chosen at random among many, and the fewer bytes the slots take, the more of
/// them stay in the cache. The deadline lives in the timer's heap entry (and a
/// repeating timer's interval and deadline in [`TimerQueue::repeating`]), so that
/// one-shot timers, by far the most, carry nothing more.
struct Slot<T> {
    /// Bumped when the slot is freed: ids issued for it go stale, and a vacant
    /// slot's generation was never issued, so a matching id means pending or firing.
    generation: u32,
    seq: u32,
    value: Option<T>,
}

impl<T> Slot<T> {
    /// Put the slot on the free list ahead of `next_free`; returns its value if it
    /// was pending. Cancelling touches nothing but the slot: its heap entry stays
    /// behind as a tombstone.
    fn vacate(&mut self, next_free: u32) -> Option<T> {
        self.generation = self.generation.wrapping_add(1);
        self.seq = next_free;
        self.value.take()
    }

    /// The slot's link in the free list, when vacant.
    fn next_free(&self) -> u32 {
        self.seq
    }
}

impl<T> SlabSlot for Slot<T> {
    fn is_vacant(&self) -> bool {
        self.value.is_none() && self.seq != FIRING
    }

    fn generation(&self) -> u32 {
        self.generation
    }

    fn link_free(&mut self, next: u32) {
        self.seq = next;
    }
}

/// The monotonic clock in nanoseconds: the clock `Instant` reads, without its
/// 16-byte arithmetic, which dominated scheduling a timer. Internal: the loop
/// reads it once per iteration; the public methods take `Instant`s.
#[inline]
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the struct we own;
    // CLOCK_MONOTONIC exists on every platform this crate builds for.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// Below this many tombstones the heap is never compacted: a rebuild would cost
/// more than the entries it saves.
const COMPACT_FLOOR: usize = 1024;

/// A queue of one-shot and repeating timers, each carrying a value of type `T`.
///
/// Times are kept as nanoseconds of the monotonic clock; the public methods take
/// and give `Instant`s and convert.
pub struct TimerQueue<T> {
    /// An `Instant` and the same moment in nanoseconds, to convert between them.
    epoch: Instant,
    epoch_ns: u64,
    heap: BinaryHeap<Reverse<HeapEntry>>,
    slots: Vec<Slot<T>>,
    free_head: u32,
    live: usize,
    /// Heap entries whose timer was cancelled, not yet popped.
    tombstones: usize,
    next_seq: u32,
    /// Each repeating timer (pending or firing), by slot index. Few programs have
    /// more than a handful; while there are none, firing and cancelling look no
    /// further than `is_empty`.
    repeating: BTreeMap<u32, Repeat>,
    /// When the slab gives back what a burst of timers left behind.
    shrink: Shrink,
}

impl<T> Default for TimerQueue<T> {
    fn default() -> Self {
        TimerQueue {
            epoch: Instant::now(),
            epoch_ns: monotonic_ns(),
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            free_head: NO_FREE,
            live: 0,
            tombstones: 0,
            next_seq: 0,
            repeating: BTreeMap::new(),
            shrink: Shrink::default(),
        }
    }
}

/// What a repeating timer has beyond a one-shot one, in nanoseconds: its period,
/// and the deadline it is armed for (or, while it fires, was due at), from which
/// the next one is counted so that it does not drift.
#[derive(Clone, Copy)]
struct Repeat {
    interval: u64,
    deadline: u64,
}

/// A duration in nanoseconds, saturating (584 years).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl<T> TimerQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many timers are scheduled (firing ones included).
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when no timer is scheduled.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn ticks(&self, at: Instant) -> u64 {
        match at.checked_duration_since(self.epoch) {
            Some(after) => self.epoch_ns.saturating_add(nanos(after)),
            None => self.epoch_ns.saturating_sub(nanos(self.epoch - at)),
        }
    }

    fn instant(&self, ticks: u64) -> Instant {
        if ticks >= self.epoch_ns {
            self.epoch + Duration::from_nanos(ticks - self.epoch_ns)
        } else {
            self.epoch - Duration::from_nanos(self.epoch_ns - ticks)
        }
    }

    /// Schedule `value` to fire at `deadline`, then every `interval` if given.
    pub fn insert(&mut self, deadline: Instant, interval: Option<Duration>, value: T) -> TimerId {
        self.insert_at(self.ticks(deadline), interval, value)
    }

    /// Schedule `value` to fire `delay` from now, then every `interval` if given.
    // Inlined, as `insert_at` and `cancel` are, into the caller (the loop's
    // `add_timer`): the call and the registers it saved were a tenth of the cost
    // of scheduling a timer, and a constant `interval` of `None` folds away.
    // Always: with a plain `#[inline]`, a caller that schedules timers in two
    // places got out-of-line calls instead, 28 more instructions a timer and 14 %
    // slower over 100 000 schedule+cancel (W5, by hand).
    #[inline(always)]
    pub fn insert_after(&mut self, delay: Duration, interval: Option<Duration>, value: T) -> TimerId {
        self.insert_at(monotonic_ns().saturating_add(nanos(delay)), interval, value)
    }

    #[inline(always)]
    fn insert_at(&mut self, when: u64, interval: Option<Duration>, value: T) -> TimerId {
        if self.tombstones > COMPACT_FLOOR {
            self.compact_if_mostly_tombstones();
        }
        let seq = self.take_seq();
        // NO_FREE is past the end of any slab (indices stay below it), so one
        // lookup both tests the free list and finds its head.
        let (index, generation) = match self.slots.get_mut(self.free_head as usize) {
            Some(slot) => {
                let index = self.free_head;
                self.free_head = slot.next_free();
                slot.seq = seq;
                slot.value = Some(value);
                (index, slot.generation)
            }
            None => {
                let index = u32::try_from(self.slots.len())
                    .ok()
                    .filter(|&index| index < FIRING)
                    .expect("fewer than 2^32 - 2 timers");
                self.shrink.growing(self.slots.len());
                let generation = self.shrink.new_generation();
                self.slots.push(Slot {
                    generation,
                    seq,
                    value: Some(value),
                });
                (index, generation)
            }
        };
        if let Some(interval) = interval {
            self.set_interval(index, interval, when);
        }
        self.live += 1;
        self.heap.push(Reverse(HeapEntry { when, seq, index }));
        TimerId { index, generation }
    }

    /// The `seq` of the next heap entry. The counter never wraps: were it to, a
    /// tombstone still in the heap could share its slot's `seq` with a later timer
    /// there and be taken for it (firing it early), and ties would fire out of
    /// scheduling order. So on its last value the heap is renumbered first.
    #[inline(always)]
    fn take_seq(&mut self) -> u32 {
        if self.next_seq == u32::MAX {
            self.renumber();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Drop the heap's tombstones and number the live entries again from 0, in
    /// the order they will fire. Once per 2^32 schedulings and re-arms: O(n log n).
    #[cold]
    #[inline(never)]
    fn renumber(&mut self) {
        let slots = &mut self.slots;
        let mut live: Vec<HeapEntry> = std::mem::take(&mut self.heap)
            .into_iter()
            .map(|Reverse(entry)| entry)
            .filter(|entry| is_live(slots, entry))
            .collect();
        live.sort_unstable();
        for (seq, entry) in live.iter_mut().enumerate() {
            // Fewer live entries than slots, and slot indices stay below FIRING.
            entry.seq = seq as u32;
            slots[entry.index as usize].seq = entry.seq;
        }
        self.next_seq = live.len() as u32;
        self.tombstones = 0;
        self.heap = live.into_iter().map(Reverse).collect();
    }

    // Out of line, with `forget_interval`: one-shot timers, the most, go without
    // them, and scheduling and cancelling them stays small enough to inline.
    #[cold]
    fn set_interval(&mut self, index: u32, interval: Duration, deadline: u64) {
        let interval = nanos(interval.max(MIN_INTERVAL));
        self.repeating.insert(index, Repeat { interval, deadline });
    }

    #[cold]
    fn forget_interval(&mut self, index: u32) {
        self.repeating.remove(&index);
    }

    fn slot(&self, id: TimerId) -> Option<&Slot<T>> {
        self.slots
            .get(id.index as usize)
            .filter(|s| s.generation == id.generation)
    }

    /// Whether `id` is still scheduled (or firing and not cancelled).
    pub fn contains(&self, id: TimerId) -> bool {
        self.slot(id).is_some_and(|s| !s.is_vacant())
    }

    /// When `id` fires next, if it is pending.
    ///
    /// O(n) in the heap's entries for a one-shot timer, whose deadline only its
    /// heap entry holds (see the module's docs); O(log r) in the r repeating timers
    /// for a repeating one.
    pub fn deadline(&self, id: TimerId) -> Option<Instant> {
        let slot = self.slot(id).filter(|s| s.value.is_some())?;
        let when = match self.repeating.get(&id.index) {
            Some(repeat) => repeat.deadline,
            None => {
                let Reverse(entry) = self
                    .heap
                    .iter()
                    .find(|Reverse(e)| e.index == id.index && e.seq == slot.seq)?;
                entry.when
            }
        };
        Some(self.instant(when))
    }

    /// Cancel a timer: true if it was scheduled. A pending timer's value is
    /// dropped; a timer firing right now will not repeat (its value is with the
    /// caller of `pop_expired`). Unknown and stale ids return false.
    #[inline(always)] // see `insert_after`
    pub fn cancel(&mut self, id: TimerId) -> bool {
        // A vacant slot's generation moved on when it was freed, so a matching
        // generation means pending or firing.
        let Some(slot) = slot_mut(&mut self.slots, id) else {
            return false;
        };
        let value = slot.vacate(self.free_head);
        if value.is_some() {
            // Its heap entry stays behind until it surfaces or the heap is compacted.
            self.tombstones += 1;
        }
        self.free_head = id.index;
        self.live -= 1;
        if !self.repeating.is_empty() {
            self.forget_interval(id.index);
        }
        // Dropped now, not when the tombstone surfaces: the value may hold
        // resources (a socket, a buffer) its owner expects to be released.
        drop(value);
        true
    }

    /// How many timer slots the queue has room for (live ones and vacant).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.slots.capacity()
    }

    /// True when most of the queue's tables are vacant after a burst of timers:
    /// time to [`shrink`](Self::shrink) them.
    pub fn is_sparse(&self) -> bool {
        self.shrink.is_due(self.live)
    }

    /// Give back the memory a burst of timers left behind: the heap loses its
    /// tombstones, vacant slots at the end of the slab are cut off, and both
    /// return their spare capacity. Ids stay valid (and stale ones stale).
    pub fn shrink(&mut self) {
        let slots = &self.slots;
        // Tombstones point at slots that may be cut off below.
        self.heap.retain(|Reverse(e)| is_live(slots, e));
        self.tombstones = 0;
        self.heap.shrink_to_fit();
        self.free_head = self.shrink.shrink(&mut self.slots, self.live);
    }

    /// Rebuild the heap without its tombstones once they are three quarters of
    /// it. Called before the heap grows, so it never holds more than four times
    /// its live timers (plus 1024) beyond the size it had already reached; the
    /// O(n) rebuild is paid once per O(n) cancels.
    #[cold]
    fn compact_if_mostly_tombstones(&mut self) {
        if self.tombstones > COMPACT_FLOOR && self.tombstones > self.heap.len() / 4 * 3 {
            let slots = &self.slots;
            self.heap.retain(|Reverse(e)| is_live(slots, e));
            self.tombstones = 0;
        }
    }

    /// The earliest deadline of a pending timer.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.next_deadline_ns().map(|when| self.instant(when))
    }

    /// The earliest deadline of a pending timer, in [`monotonic_ns`] time.
    pub(crate) fn next_deadline_ns(&mut self) -> Option<u64> {
        self.live_top().map(|e| e.when)
    }

    /// Pop the tombstones off the top of the heap; returns the live entry left
    /// there, if any.
    fn live_top(&mut self) -> Option<HeapEntry> {
        while let Some(&Reverse(top)) = self.heap.peek() {
            if is_live(&self.slots, &top) {
                return Some(top);
            }
            self.heap.pop();
            self.tombstones -= 1;
        }
        None
    }

    /// How many timers one firing round may take at most: those scheduled before
    /// it started. A callback that re-arms itself with a zero delay therefore
    /// cannot keep the loop from polling.
    pub fn round(&self) -> usize {
        self.heap.len()
    }

    /// Take out the earliest timer due at `now`. The caller runs it, then hands it
    /// back with [`finish`](Self::finish).
    pub fn pop_expired(&mut self, now: Instant) -> Option<(TimerId, T)> {
        self.pop_expired_ns(self.ticks(now))
    }

    /// [`pop_expired`](Self::pop_expired) in [`monotonic_ns`] time.
    pub(crate) fn pop_expired_ns(&mut self, now: u64) -> Option<(TimerId, T)> {
        let top = self.live_top()?;
        if top.when > now {
            return None;
        }
        self.heap.pop();
        let slot = &mut self.slots[top.index as usize];
        let value = slot.value.take()?;
        slot.seq = FIRING;
        let id = TimerId {
            index: top.index,
            generation: slot.generation,
        };
        Some((id, value))
    }

    /// Hand back a timer taken by `pop_expired`: a repeating timer is re-armed one
    /// interval after its deadline (or after `now`, if it fell more than an interval
    /// behind); a one-shot timer, or one cancelled while firing, is dropped.
    pub fn finish(&mut self, id: TimerId, value: T, now: Instant) {
        self.finish_ns(id, value, self.ticks(now));
    }

    /// [`finish`](Self::finish) in [`monotonic_ns`] time.
    pub(crate) fn finish_ns(&mut self, id: TimerId, value: T, now: u64) {
        // Stale when cancelled while firing (cancel moved the generation on).
        let Some(slot) = slot_mut(&mut self.slots, id) else {
            return;
        };
        if slot.value.is_some() {
            // Pending, not firing: `id` was not taken by `pop_expired`.
            return;
        }
        let repeat = if self.repeating.is_empty() {
            None
        } else {
            self.repeating.get_mut(&id.index)
        };
        let Some(repeat) = repeat else {
            slot.vacate(self.free_head);
            self.free_head = id.index;
            self.live -= 1;
            return;
        };
        let mut next = repeat.deadline.saturating_add(repeat.interval);
        if next <= now {
            next = now.saturating_add(repeat.interval);
        }
        repeat.deadline = next;
        let seq = self.take_seq();
        // Taken after `take_seq`, which may renumber the pending slots (not this
        // firing one).
        let slot = &mut self.slots[id.index as usize];
        slot.seq = seq;
        slot.value = Some(value);
        self.heap.push(Reverse(HeapEntry {
            when: next,
            seq,
            index: id.index,
        }));
    }
}

/// `id`'s slot, if the id is not stale. A free function, so that the queue's other
/// fields stay usable while the slot is borrowed.
fn slot_mut<T>(slots: &mut [Slot<T>], id: TimerId) -> Option<&mut Slot<T>> {
    slots
        .get_mut(id.index as usize)
        .filter(|s| s.generation == id.generation)
}

fn is_live<T>(slots: &[Slot<T>], entry: &HeapEntry) -> bool {
    let slot = &slots[entry.index as usize];
    slot.seq == entry.seq && slot.value.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fire_all(q: &mut TimerQueue<u32>, now: Instant) -> Vec<u32> {
        let mut fired = Vec::new();
        for _ in 0..q.round() {
            let Some((id, v)) = q.pop_expired(now) else { break };
            fired.push(v);
            q.finish(id, v, now);
        }
        fired
    }

    #[test]
    fn fires_in_deadline_order_then_insertion_order() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        q.insert(t0 + Duration::from_millis(30), None, 3);
        q.insert(t0 + Duration::from_millis(10), None, 1);
        q.insert(t0 + Duration::from_millis(20), None, 2);
        q.insert(t0 + Duration::from_millis(20), None, 22);
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(fire_all(&mut q, t0 + Duration::from_millis(25)), [1, 2, 22]);
        assert_eq!(q.len(), 1);
        assert_eq!(fire_all(&mut q, t0 + Duration::from_millis(30)), [3]);
        assert!(q.is_empty());
    }

    #[test]
    fn never_fires_before_its_deadline() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        q.insert(t0 + Duration::from_millis(5), None, 1);
        assert!(fire_all(&mut q, t0 + Duration::from_micros(4999)).is_empty());
        assert_eq!(fire_all(&mut q, t0 + Duration::from_millis(5)), [1]);
    }

    #[test]
    fn cancel_reports_scheduled_timers_and_stale_ids_do_nothing() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        let a = q.insert(t0, None, 1);
        assert!(q.cancel(a));
        assert!(!q.cancel(a));
        // The slot is reused with a new generation: the old id must not touch it.
        let b = q.insert(t0, None, 2);
        assert!(!q.cancel(a));
        assert!(q.contains(b));
        assert_eq!(fire_all(&mut q, t0), [2]);
    }

    #[test]
    fn repeating_timer_rearms_without_drift_and_cancel_while_firing_stops_it() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut q = TimerQueue::new();
        let id = q.insert(t0 + ms(10), Some(ms(10)), 7);
        assert_eq!(fire_all(&mut q, t0 + ms(12)), [7]);
        assert_eq!(q.deadline(id), Some(t0 + ms(20)));
        // Far behind: re-armed from now, not fired once per missed interval.
        assert_eq!(fire_all(&mut q, t0 + ms(95)), [7]);
        assert_eq!(q.deadline(id), Some(t0 + ms(105)));
        let (fired, v) = q.pop_expired(t0 + ms(105)).unwrap();
        assert!(q.cancel(fired), "a firing timer can be cancelled");
        q.finish(fired, v, t0 + ms(105));
        assert!(q.is_empty());
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn a_reused_slots_deadline_is_its_own_not_its_tombstones() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut q = TimerQueue::new();
        let old = q.insert(t0 + ms(10), None, 1);
        assert_eq!(q.deadline(old), Some(t0 + ms(10)));
        assert!(q.cancel(old));
        assert_eq!(q.deadline(old), None);
        // The same slot again: the heap now holds its tombstone (10 ms) as well.
        let new = q.insert(t0 + ms(30), None, 2);
        assert_eq!(new.index, old.index);
        assert_eq!(q.deadline(new), Some(t0 + ms(30)));
        let (firing, v) = q.pop_expired(t0 + ms(30)).unwrap();
        assert_eq!(q.deadline(firing), None, "a firing one-shot timer has no next deadline");
        q.finish(firing, v, t0 + ms(30));
        assert_eq!(q.deadline(new), None);
    }

    #[test]
    fn a_tombstone_outliving_the_seq_counter_is_not_taken_for_its_slots_next_timer() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut q = TimerQueue::new();
        // As if 2^32 - 1 timers had been scheduled before this one.
        q.next_seq = u32::MAX - 1;
        let old = q.insert(t0 + ms(10), None, 1);
        assert!(q.cancel(old));
        // Same slot, next seq: were the counter to wrap, the tombstone's (index,
        // seq) would come round to a later timer in this slot.
        let new = q.insert(t0 + ms(30), None, 2);
        assert_eq!(new.index, old.index);
        assert_eq!(q.heap.len(), 1, "the tombstone was dropped when the counter ran out");
        assert_eq!(q.deadline(new), Some(t0 + ms(30)));
        assert!(fire_all(&mut q, t0 + ms(10)).is_empty(), "fired 20 ms early");
        assert_eq!(fire_all(&mut q, t0 + ms(30)), [2]);
    }

    #[test]
    fn ties_fire_in_scheduling_order_across_a_renumbering() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut q = TimerQueue::new();
        q.next_seq = u32::MAX - 3;
        q.insert(t0 + ms(20), None, 1);
        let gone = q.insert(t0 + ms(5), None, 0);
        let repeating = q.insert(t0 + ms(20), Some(ms(20)), 2);
        q.cancel(gone);
        // The counter's last value: renumbered before it is handed out.
        q.insert(t0 + ms(20), None, 3);
        assert_eq!(q.next_seq, 3);
        q.insert(t0 + ms(10), None, 4);
        assert_eq!(fire_all(&mut q, t0 + ms(20)), [4, 1, 2, 3]);
        assert_eq!(q.deadline(repeating), Some(t0 + ms(40)));
    }

    #[test]
    fn a_round_is_bounded_by_the_timers_scheduled_before_it() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        q.insert(t0, Some(MIN_INTERVAL), 1);
        // A due repeating timer fires once per round, however far behind it is.
        assert_eq!(fire_all(&mut q, t0 + Duration::from_secs(1)), [1]);
        assert_eq!(fire_all(&mut q, t0 + Duration::from_secs(2)), [1]);
    }

    #[test]
    fn a_slot_freed_by_a_repeating_timer_does_not_make_the_next_one_repeat() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut q = TimerQueue::new();
        let repeating = q.insert(t0 + ms(10), Some(ms(10)), 1);
        assert!(q.cancel(repeating));
        // The same slot, by the free list: one-shot this time.
        let once = q.insert(t0 + ms(10), None, 2);
        assert_eq!(fire_all(&mut q, t0 + ms(10)), [2]);
        assert!(!q.contains(once));
        assert!(q.is_empty());
        assert_eq!(q.deadline(repeating), None);
    }

    #[test]
    fn shrinking_while_a_timer_fires_keeps_its_slot() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut q = TimerQueue::new();
        let ids: Vec<_> = (0..16).map(|i| q.insert(t0 + ms(10 + i), None, i as u32)).collect();
        let last = q.insert(t0 + ms(5), Some(ms(100)), 99);
        for id in &ids {
            q.cancel(*id);
        }
        let (fired, v) = q.pop_expired(t0 + ms(5)).unwrap();
        assert_eq!((fired, v), (last, 99));
        // The firing slot is the last one: it must be neither cut off nor reused.
        q.shrink();
        let other = q.insert(t0 + ms(50), None, 7);
        assert_ne!(other, fired);
        assert!(q.contains(fired));
        q.finish(fired, v, t0 + ms(5));
        assert_eq!(q.deadline(fired), Some(t0 + ms(105)));
        assert_eq!(fire_all(&mut q, t0 + ms(105)), [7, 99]);
        for id in &ids {
            assert!(!q.cancel(*id), "stale {id:?} cancelled something");
        }
    }

    #[test]
    fn cancelling_most_timers_compacts_the_heap() {
        // Smaller under Miri, which interprets every instruction; still above the
        // 1024-tombstone floor, so compaction happens.
        let n: u32 = if cfg!(miri) { 2_000 } else { 10_000 };
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        let ids: Vec<_> = (0..n)
            .map(|i| q.insert(t0 + Duration::from_secs(300), None, i))
            .collect();
        for id in &ids[..(n as usize) * 9 / 10] {
            q.cancel(*id);
        }
        q.insert(t0 + Duration::from_secs(300), None, n);
        assert_eq!(q.len(), n as usize / 10 + 1);
        // Tombstones are at most three quarters of the heap (beyond a floor of 1024).
        assert!(
            q.heap.len() <= 4 * q.len() + 1024,
            "heap kept {} entries for {} timers",
            q.heap.len(),
            q.len()
        );
        assert!(q.heap.len() < n as usize, "never compacted");
    }
}
