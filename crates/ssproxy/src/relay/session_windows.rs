//! SIP022 UDP on the server: the replay windows of client sessions, shared by all workers.
//!
//! Each worker has its own `SO_REUSEPORT` socket, and the kernel picks a worker by the
//! datagram's source address. The session id, which is what a SIP022 session is, sits inside
//! the encrypted separate header, so the kernel cannot steer by it: a packet replayed from other
//! source ports reaches other workers. Each worker therefore keeps its own sockets and
//! association (its receiving cipher, its outbound socket) but checks packet ids in the one
//! window per session kept here.
//!
//! The table is split into shards, each behind its own lock, so that workers receiving
//! different sessions rarely wait for each other; a check is one lock, one hash lookup and a
//! bit test.
//!
//! A window is kept for [`RETENTION`] after the session's last accepted packet, whatever the
//! relay's idle timeout: a packet is only accepted within 30 s of its timestamp, so a packet
//! accepted at time `t` can be replayed until about `t + 60 s`, and its window must outlive
//! that (the SIP022 specification asks for 60 s). When the table is full, the least recently
//! active session of the shard makes room: only a key holder can fill it, and a key holder can
//! forge packets anyway.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::crypto::{MAX_TIME_DIFF, ReplayWindow};

/// How long a session's window outlives its last accepted packet: twice the timestamp
/// tolerance, plus two seconds because timestamps are whole seconds.
pub const RETENTION: Duration = Duration::from_secs(2 * MAX_TIME_DIFF + 2);

/// Shards of the table (a power of two; session ids are random, so the low bits spread them).
const SHARDS: usize = 16;
/// Shards swept per call of [`SessionWindows::sweep`].
const SWEEP_SHARDS: usize = 4;

/// One client session's replay state.
struct Tracked {
    window: ReplayWindow,
    last_accepted: Instant,
}

type Shard = HashMap<u64, Tracked>;

/// The replay windows of all live SIP022 client sessions of one server.
pub struct SessionWindows {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    next_sweep: AtomicUsize,
}

impl SessionWindows {
    /// A table holding at most about `capacity` sessions.
    pub fn new(capacity: usize) -> SessionWindows {
        SessionWindows {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            next_sweep: AtomicUsize::new(0),
        }
    }

    fn shard(&self, session_id: u64) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[session_id as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Records packet `packet_id` of client session `session_id`, received at `now`; false if
    /// it was accepted before or is too old for the window (a replay). Call it only for packets
    /// that authenticated.
    pub fn check_and_insert(&self, session_id: u64, packet_id: u64, now: Instant) -> bool {
        let mut shard = self.shard(session_id);
        if let Some(tracked) = shard.get_mut(&session_id) {
            // An expired window the sweep has not reached yet still holds: it only ever
            // refuses packets whose timestamps are stale by now.
            if !tracked.window.check_and_insert(packet_id) {
                return false;
            }
            tracked.last_accepted = now;
            return true;
        }
        if shard.len() >= self.per_shard {
            make_room(&mut shard, now);
        }
        let mut window = ReplayWindow::new();
        window.check_and_insert(packet_id);
        shard.insert(
            session_id,
            Tracked {
                window,
                last_accepted: now,
            },
        );
        true
    }

    /// Forgets the windows of sessions silent for [`RETENTION`], in the next few shards: each
    /// worker calls this once a second, so every shard is swept every few seconds.
    pub fn sweep(&self, now: Instant) {
        for _ in 0..SWEEP_SHARDS {
            let index = self.next_sweep.fetch_add(1, Ordering::Relaxed) % SHARDS;
            let mut shard = self.shards[index].lock().unwrap_or_else(|e| e.into_inner());
            shard.retain(|_, t| now.duration_since(t.last_accepted) < RETENTION);
        }
    }

    /// Number of sessions tracked.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Whether no session is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A full shard: drop the expired windows, or else the least recently active one.
fn make_room(shard: &mut Shard, now: Instant) {
    let before = shard.len();
    shard.retain(|_, t| now.duration_since(t.last_accepted) < RETENTION);
    if shard.len() < before {
        return;
    }
    let oldest = shard.iter().min_by_key(|(_, t)| t.last_accepted).map(|(&id, _)| id);
    if let Some(id) = oldest {
        shard.remove(&id);
        log::debug!("udp: session table full; forgot the window of the least recently active session");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_window_per_session_whoever_asks() {
        let windows = SessionWindows::new(1024);
        let now = Instant::now();
        assert!(windows.check_and_insert(7, 0, now));
        assert!(!windows.check_and_insert(7, 0, now), "duplicate");
        assert!(windows.check_and_insert(7, 1, now));
        assert!(
            windows.check_and_insert(8, 0, now),
            "another session has its own window"
        );
        assert_eq!(windows.len(), 2);
        std::thread::scope(|s| {
            let accepted: usize = (0..4)
                .map(|_| s.spawn(|| (0..100).filter(|&id| windows.check_and_insert(9, id, now)).count()))
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| t.join().unwrap())
                .sum();
            assert_eq!(accepted, 100, "each id accepted once across threads");
        });
    }

    #[test]
    fn windows_outlive_a_short_idle_timeout_and_then_go() {
        let windows = SessionWindows::new(1024);
        let start = Instant::now();
        assert!(windows.check_and_insert(7, 0, start));
        let later = start + RETENTION - Duration::from_secs(1);
        for _ in 0..SHARDS {
            windows.sweep(later);
        }
        assert!(!windows.check_and_insert(7, 0, later), "kept for the retention period");
        let after = later + RETENTION;
        for _ in 0..SHARDS {
            windows.sweep(after);
        }
        assert!(windows.is_empty());
    }

    #[test]
    fn a_full_shard_forgets_the_least_recently_active() {
        let windows = SessionWindows::new(SHARDS * 2); // two sessions per shard
        let t0 = Instant::now();
        let id = |n: u64| n * SHARDS as u64; // all in shard 0
        assert!(windows.check_and_insert(id(1), 0, t0));
        assert!(windows.check_and_insert(id(2), 0, t0 + Duration::from_secs(1)));
        assert!(windows.check_and_insert(id(1), 1, t0 + Duration::from_secs(2)));
        assert!(windows.check_and_insert(id(3), 0, t0 + Duration::from_secs(3)));
        assert_eq!(windows.len(), 2);
        assert!(!windows.check_and_insert(id(1), 1, t0 + Duration::from_secs(4)), "kept");
        assert!(
            windows.check_and_insert(id(2), 0, t0 + Duration::from_secs(4)),
            "evicted"
        );
    }
}
