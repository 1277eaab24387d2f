//! W5's baseline: a plain `std::collections::BinaryHeap` timer queue with boxed
//! callbacks, cancelled lazily (the callback is dropped, the heap entry is skipped).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::io;
use std::time::{Duration, Instant};

use crate::common::Rng;

type Callback = Box<dyn FnMut(&mut u64)>;

#[derive(PartialEq, Eq)]
struct Entry {
    deadline: Instant,
    seq: u64,
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and we want the earliest first.
        (other.deadline, other.seq).cmp(&(self.deadline, self.seq))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Default)]
struct HeapTimers {
    heap: BinaryHeap<Entry>,
    callbacks: Vec<Option<Callback>>,
}

impl HeapTimers {
    fn add(&mut self, delay: Duration, callback: Callback) -> u64 {
        let seq = self.callbacks.len() as u64;
        self.callbacks.push(Some(callback));
        self.heap.push(Entry {
            deadline: Instant::now() + delay,
            seq,
        });
        seq
    }

    fn cancel(&mut self, id: u64) -> bool {
        self.callbacks.get_mut(id as usize).and_then(Option::take).is_some()
    }

    fn fire_due(&mut self, data: &mut u64) {
        let now = Instant::now();
        while let Some(top) = self.heap.peek() {
            if top.deadline > now {
                break;
            }
            let seq = top.seq;
            self.heap.pop();
            if let Some(mut cb) = self.callbacks[seq as usize].take() {
                cb(data);
            }
        }
    }
}

/// 0..n in a reproducible shuffled order.
pub fn shuffled(n: u64, seed: u64) -> Vec<u64> {
    let mut rng = Rng::new(seed);
    let mut v: Vec<u64> = (0..n).collect();
    for i in (1..v.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// The heap's W5 fire run: as `evl::timers_fire`.
pub fn heap_fire(n: u64, seed: u64) -> io::Result<(Duration, Duration, u64)> {
    let mut q = HeapTimers::default();
    let mut rng = Rng::new(seed);
    let start = Instant::now();
    for _ in 0..n {
        let delay = Duration::from_micros(rng.next() % 1000);
        q.add(delay, Box::new(|count: &mut u64| *count += 1));
    }
    let scheduled = start.elapsed();
    std::thread::sleep(Duration::from_millis(2).saturating_sub(scheduled));
    let mut fired = 0;
    let start = Instant::now();
    while fired < n {
        q.fire_due(&mut fired);
    }
    Ok((scheduled, start.elapsed(), fired))
}

/// The heap's W5 cancel run: as `evl::timers_cancel`.
pub fn heap_cancel(n: u64, seed: u64) -> io::Result<Duration> {
    let mut q = HeapTimers::default();
    let mut rng = Rng::new(seed);
    let order = shuffled(n, seed ^ 0x5eed);
    let start = Instant::now();
    let ids: Vec<u64> = (0..n)
        .map(|_| {
            q.add(
                Duration::from_millis(60_000 + rng.next() % 1000),
                Box::new(|count: &mut u64| *count += 1),
            )
        })
        .collect();
    let mut cancelled = 0;
    for &i in &order {
        cancelled += u64::from(q.cancel(ids[i as usize]));
    }
    let elapsed = start.elapsed();
    if cancelled != n {
        return Err(io::Error::other(format!("cancelled {cancelled} of {n}")));
    }
    Ok(elapsed)
}
