//! The timer queue: a binary heap of deadlines over a slab of timers.
//!
//! Scheduling and firing cost O(log n); cancelling is O(1): it frees the slab slot
//! and leaves the heap entry behind as a tombstone, which is skipped when it
//! surfaces. When tombstones outnumber live entries the heap is rebuilt once, so a
//! program that schedules and cancels a timeout per request keeps the heap small.
//!
//! The queue is generic over the value stored with each timer; the loop stores its
//! callbacks there and takes each one out while it runs, so that a callback can
//! cancel itself or schedule others.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fmt;
use std::time::{Duration, Instant};

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

#[derive(Clone, Copy, PartialEq, Eq)]
struct HeapEntry {
    deadline: Instant,
    /// Order of scheduling, so that timers with equal deadlines fire in the order
    /// they were set, and so that a firing round never picks up a timer armed in it.
    seq: u64,
    index: u32,
    generation: u32,
}

impl Ord for HeapEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

impl PartialOrd for HeapEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

enum SlotState<T> {
    Vacant {
        next_free: u32,
    },
    Pending(T),
    /// Taken out by [`TimerQueue::pop_expired`]; comes back through [`TimerQueue::finish`].
    Firing,
}

struct Slot<T> {
    generation: u32,
    interval: Option<Duration>,
    deadline: Instant,
    state: SlotState<T>,
}

const NO_FREE: u32 = u32::MAX;

/// A queue of one-shot and repeating timers, each carrying a value of type `T`.
pub struct TimerQueue<T> {
    heap: BinaryHeap<Reverse<HeapEntry>>,
    slots: Vec<Slot<T>>,
    free_head: u32,
    live: usize,
    /// Heap entries whose timer was cancelled, not yet popped.
    tombstones: usize,
    next_seq: u64,
}

impl<T> Default for TimerQueue<T> {
    fn default() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            free_head: NO_FREE,
            live: 0,
            tombstones: 0,
            next_seq: 0,
        }
    }
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

    /// Schedule `value` to fire at `deadline`, then every `interval` if given.
    pub fn insert(&mut self, deadline: Instant, interval: Option<Duration>, value: T) -> TimerId {
        let interval = interval.map(|i| i.max(MIN_INTERVAL));
        let index = if self.free_head != NO_FREE {
            let index = self.free_head;
            let slot = &mut self.slots[index as usize];
            if let SlotState::Vacant { next_free } = slot.state {
                self.free_head = next_free;
            }
            slot.state = SlotState::Pending(value);
            slot.interval = interval;
            slot.deadline = deadline;
            index
        } else {
            let index = u32::try_from(self.slots.len()).expect("fewer than 2^32 timers");
            self.slots.push(Slot {
                generation: 0,
                interval,
                deadline,
                state: SlotState::Pending(value),
            });
            index
        };
        self.live += 1;
        let generation = self.slots[index as usize].generation;
        self.push(deadline, index, generation);
        TimerId { index, generation }
    }

    fn push(&mut self, deadline: Instant, index: u32, generation: u32) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse(HeapEntry {
            deadline,
            seq,
            index,
            generation,
        }));
    }

    fn slot(&self, id: TimerId) -> Option<&Slot<T>> {
        self.slots
            .get(id.index as usize)
            .filter(|s| s.generation == id.generation)
    }

    /// Whether `id` is still scheduled (or firing and not cancelled).
    pub fn contains(&self, id: TimerId) -> bool {
        self.slot(id)
            .is_some_and(|s| !matches!(s.state, SlotState::Vacant { .. }))
    }

    /// When `id` fires next, if it is pending.
    pub fn deadline(&self, id: TimerId) -> Option<Instant> {
        self.slot(id)
            .filter(|s| matches!(s.state, SlotState::Pending(_)))
            .map(|s| s.deadline)
    }

    /// Cancel a timer. Returns its value if it was pending; a timer that is firing
    /// right now is cancelled too (it will not repeat) but its value is with the
    /// caller of `pop_expired`, so `None` comes back. Unknown ids return `None`.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        let slot = self
            .slots
            .get_mut(id.index as usize)
            .filter(|s| s.generation == id.generation)?;
        let state = std::mem::replace(
            &mut slot.state,
            SlotState::Vacant {
                next_free: self.free_head,
            },
        );
        if let SlotState::Vacant { .. } = state {
            slot.state = state;
            return None;
        }
        self.release(id.index);
        match state {
            SlotState::Pending(value) => {
                self.tombstones += 1;
                self.compact_if_mostly_tombstones();
                Some(value)
            }
            _ => None,
        }
    }

    /// Free a slot whose state is already `Vacant { next_free: free_head }`.
    fn release(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        slot.generation = slot.generation.wrapping_add(1);
        self.free_head = index;
        self.live -= 1;
    }

    fn compact_if_mostly_tombstones(&mut self) {
        if self.tombstones > 64 && self.tombstones > self.heap.len() / 2 {
            let slots = &self.slots;
            self.heap.retain(|Reverse(e)| is_live(slots, e));
            self.tombstones = 0;
        }
    }

    /// The earliest deadline of a pending timer.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.drop_dead_top();
        self.heap.peek().map(|Reverse(e)| e.deadline)
    }

    fn drop_dead_top(&mut self) {
        while let Some(Reverse(top)) = self.heap.peek() {
            if is_live(&self.slots, top) {
                break;
            }
            self.heap.pop();
            self.tombstones -= 1;
        }
    }

    /// A marker for [`pop_expired`](Self::pop_expired): timers scheduled after this
    /// point do not fire in the current round, so a callback that re-arms itself
    /// with a zero delay cannot keep the loop from polling.
    pub fn round(&self) -> u64 {
        self.next_seq
    }

    /// Take out the earliest timer due at `now` and scheduled before `round`.
    /// The caller runs it, then hands it back with [`finish`](Self::finish).
    pub fn pop_expired(&mut self, now: Instant, round: u64) -> Option<(TimerId, T)> {
        self.drop_dead_top();
        let Reverse(top) = *self.heap.peek()?;
        if top.deadline > now || top.seq >= round {
            return None;
        }
        self.heap.pop();
        let slot = &mut self.slots[top.index as usize];
        match std::mem::replace(&mut slot.state, SlotState::Firing) {
            SlotState::Pending(value) => Some((
                TimerId {
                    index: top.index,
                    generation: top.generation,
                },
                value,
            )),
            _ => unreachable!("a live heap entry points at a pending slot"),
        }
    }

    /// Hand back a timer taken by `pop_expired`: a repeating timer is re-armed one
    /// interval after its deadline (or after `now`, if it fell more than an interval
    /// behind); a one-shot timer, or one cancelled while firing, is dropped.
    pub fn finish(&mut self, id: TimerId, value: T, now: Instant) {
        let Some(slot) = self
            .slots
            .get_mut(id.index as usize)
            .filter(|s| s.generation == id.generation)
        else {
            return;
        };
        if !matches!(slot.state, SlotState::Firing) {
            return;
        }
        match slot.interval {
            Some(interval) => {
                let mut next = slot.deadline + interval;
                if next <= now {
                    next = now + interval;
                }
                slot.deadline = next;
                slot.state = SlotState::Pending(value);
                self.push(next, id.index, id.generation);
            }
            None => {
                slot.state = SlotState::Vacant {
                    next_free: self.free_head,
                };
                self.release(id.index);
            }
        }
    }
}

fn is_live<T>(slots: &[Slot<T>], entry: &HeapEntry) -> bool {
    let slot = &slots[entry.index as usize];
    slot.generation == entry.generation && matches!(slot.state, SlotState::Pending(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fire_all(q: &mut TimerQueue<u32>, now: Instant) -> Vec<u32> {
        let round = q.round();
        let mut fired = Vec::new();
        while let Some((id, v)) = q.pop_expired(now, round) {
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
    fn cancel_returns_value_and_stale_ids_do_nothing() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        let a = q.insert(t0, None, 1);
        assert_eq!(q.cancel(a), Some(1));
        assert_eq!(q.cancel(a), None);
        // The slot is reused with a new generation: the old id must not touch it.
        let b = q.insert(t0, None, 2);
        assert_eq!(q.cancel(a), None);
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
        let round = q.round();
        let (fired, v) = q.pop_expired(t0 + ms(105), round).unwrap();
        assert_eq!(q.cancel(fired), None);
        q.finish(fired, v, t0 + ms(105));
        assert!(q.is_empty());
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn a_timer_armed_during_a_round_waits_for_the_next_round() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        q.insert(t0, None, 1);
        let round = q.round();
        let (id, v) = q.pop_expired(t0, round).unwrap();
        q.insert(t0, None, 2);
        q.finish(id, v, t0);
        assert!(q.pop_expired(t0, round).is_none());
        assert_eq!(fire_all(&mut q, t0), [2]);
    }

    #[test]
    fn cancelling_most_timers_compacts_the_heap() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        let ids: Vec<_> = (0..10_000)
            .map(|i| q.insert(t0 + Duration::from_secs(300), None, i))
            .collect();
        for id in &ids[..9_000] {
            q.cancel(*id);
        }
        assert_eq!(q.len(), 1_000);
        assert!(
            q.heap.len() <= 2_000,
            "heap kept {} entries for 1000 timers",
            q.heap.len()
        );
    }
}
