//! Faults from outside the program, on every backend this machine has
//! (`epoll::…`, `poll::…`, `select::…` in the test names):
//!
//! - **A signal storm**: another thread sends signals to the loop's thread as fast
//!   as it can for a few seconds while a ping-pong runs over a socket pair. No
//!   message may be lost or changed, and the periodic callbacks (precision 1 h, so
//!   that only an interrupted poll can run them) must run, promptly, after EINTR.
//! - **Descriptor exhaustion**: a listener whose `accept` fails with EMFILE stays
//!   readable, so a handler that just returns the error makes a level-triggered loop
//!   spin. The documented way, which the proxy's accept handler follows and the
//!   handler here shows: *rest* the listener (`modify` it to `POLL_NULL`) and set a
//!   100 ms timer that watches it again. The test checks that the loop thread stays
//!   nearly idle while the table is full, and that accepting resumes once
//!   descriptors are free. It lowers `RLIMIT_NOFILE` and fills the table, which
//!   would starve the other tests of this process, so it runs in a child process:
//!   the test re-executes this binary on itself alone (`--exact <name>`), with
//!   `EVLOOP_FAULTS_CHILD=<name>` telling the child to do the real work.
//!
//! Registering an fd at or above select's `FD_SETSIZE` fails cleanly: see the
//! conformance case `select_refuses_fd_at_or_above_fd_setsize`.
//!
//! Every test of this file holds a handful of descriptors in this process, so none
//! needs the fd table to itself. Run with `--nocapture` to see the figures.

#![allow(unsafe_code)] // a test: it calls libc directly (fds, signals, limits)

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use evloop::{Backend, Builder, Ctx, EventLoop, POLL_IN, POLL_NULL, Token};

/// Set in the child process to the name of the test it must run for real.
const CHILD_ENV: &str = "EVLOOP_FAULTS_CHILD";

/// How long the signal storm lasts (`EVLOOP_STORM_SECS` overrides; default 5).
fn storm_duration() -> Duration {
    let secs = std::env::var("EVLOOP_STORM_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(5.0);
    Duration::from_secs_f64(secs.clamp(0.1, 600.0))
}

/// The most signals one storm sends, and the most messages one ping-pong exchanges.
const MAX_SIGNALS: u64 = 2_000_000;
const MAX_MESSAGES: u64 = 10_000_000;
const MESSAGE: usize = 64;

/// The `n`-th ping-pong message: its number, then bytes derived from it.
fn message(n: u64) -> [u8; MESSAGE] {
    let mut msg = [0u8; MESSAGE];
    msg[..8].copy_from_slice(&n.to_le_bytes());
    for (i, b) in msg[8..].iter_mut().enumerate() {
        *b = (n as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
    msg
}

/// Installs no-op handlers (they only set a flag) for the storm's signals, once.
fn install_noop_handlers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [libc::SIGURG, libc::SIGUSR1] {
            signal_hook::flag::register(signal, Arc::clone(&flag)).expect("install a signal handler");
        }
    });
}

/// The thread that sends the storm; stopped and joined when dropped, so that it
/// never signals a thread that has gone (even if the test panics).
struct Storm {
    running: Arc<AtomicBool>,
    sender: Option<JoinHandle<u64>>,
}

impl Storm {
    /// Start signalling the calling thread. Each signal that is sent while no
    /// earlier one is waiting to be "served" by a periodic run stamps
    /// `first_unserved` with its time (ns since `epoch`, plus 1).
    fn start(epoch: Instant, first_unserved: Arc<AtomicU64>) -> Storm {
        // SAFETY: pthread_self has no preconditions.
        let target = unsafe { libc::pthread_self() } as usize;
        let running = Arc::new(AtomicBool::new(true));
        let go = Arc::clone(&running);
        let sender = std::thread::spawn(move || {
            let mut sent = 0u64;
            while go.load(Ordering::Relaxed) && sent < MAX_SIGNALS {
                let signal = if sent % 4 == 3 { libc::SIGUSR1 } else { libc::SIGURG };
                let stamp = epoch.elapsed().as_nanos() as u64 + 1;
                let _ = first_unserved.compare_exchange(0, stamp, Ordering::Relaxed, Ordering::Relaxed);
                // SAFETY: `target` is the test's thread, which joins this one (Storm's
                // drop) before it can exit; both signals have handlers installed.
                let rc = unsafe { libc::pthread_kill(target as libc::pthread_t, signal) };
                assert_eq!(rc, 0, "pthread_kill: {}", io::Error::from_raw_os_error(rc));
                sent += 1;
                // Short enough for tens of thousands of signals a second, long enough
                // to leave the loop's thread some time to run between them.
                std::thread::sleep(Duration::from_micros(20));
            }
            sent
        });
        Storm {
            running,
            sender: Some(sender),
        }
    }

    /// Stop sending; returns how many signals were sent.
    fn stop(mut self) -> u64 {
        self.running.store(false, Ordering::Relaxed);
        self.sender
            .take()
            .map_or(0, |s| s.join().expect("the signal sender panicked"))
    }
}

impl Drop for Storm {
    fn drop(&mut self) {
        self.running.store(false, Ordering::Relaxed);
        if let Some(sender) = self.sender.take() {
            let _ = sender.join();
        }
    }
}

/// The ping-pong's state: the loop's data.
#[derive(Default)]
struct PingPong {
    sent: u64,
    received: u64,
    inbuf: Vec<u8>,
    winding_down: bool,
    errors: Vec<String>,
    periodic_runs: u64,
    /// For each periodic run after a stamped signal: how long after that signal.
    delays: Vec<Duration>,
    epoch: Option<Instant>,
    first_unserved: Arc<AtomicU64>,
}

impl PingPong {
    fn send_next(&mut self, sock: &mut UnixStream) -> io::Result<()> {
        // 64 bytes into an empty socket buffer (one message in flight) never block.
        sock.write_all(&message(self.sent))?;
        self.sent += 1;
        Ok(())
    }
}

fn on_reply(cx: &mut Ctx<'_, PingPong>, sock: &mut UnixStream, _: Token, _: evloop::Events) -> io::Result<()> {
    let pp = &mut *cx.data;
    let mut buf = [0u8; 4 * MESSAGE];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => {
                pp.errors.push("the echo side hung up".into());
                cx.lp.stop();
                return Ok(());
            }
            Ok(n) => pp.inbuf.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    while pp.inbuf.len() >= MESSAGE {
        let reply: Vec<u8> = pp.inbuf.drain(..MESSAGE).collect();
        if reply != message(pp.received) {
            pp.errors
                .push(format!("reply {} is not message {}", pp.received, pp.received));
        }
        pp.received += 1;
        if pp.received != pp.sent {
            pp.errors
                .push(format!("{} replies for {} messages", pp.received, pp.sent));
        }
    }
    if pp.winding_down || pp.sent >= MAX_MESSAGES {
        if pp.received == pp.sent {
            cx.lp.stop();
        }
    } else if pp.received == pp.sent {
        pp.send_next(sock)?;
    }
    Ok(())
}

/// The echo side, in its own thread, with blocking sockets (its thread gets no
/// signals): returns how many messages it echoed.
fn echo(mut sock: UnixStream) -> u64 {
    let mut echoed = 0;
    let mut msg = [0u8; MESSAGE];
    while sock.read_exact(&mut msg).is_ok() {
        if sock.write_all(&msg).is_err() {
            break;
        }
        echoed += 1;
    }
    echoed
}

fn signal_storm(backend: Backend) {
    install_noop_handlers();
    let duration = storm_duration();
    let mut lp: EventLoop<PingPong> = Builder::new()
        .backend(backend)
        .timeout_precision(Duration::from_secs(3600))
        .build()
        .unwrap();
    let (mut mine, theirs) = UnixStream::pair().unwrap();
    mine.set_nonblocking(true).unwrap();
    let echoer = std::thread::spawn(move || echo(theirs));
    let epoch = Instant::now();
    let mut pp = PingPong {
        epoch: Some(epoch),
        ..PingPong::default()
    };
    pp.send_next(&mut mine).unwrap();
    let token = lp.add(mine, POLL_IN, on_reply).unwrap();
    lp.add_periodic(|cx| {
        let pp = &mut *cx.data;
        pp.periodic_runs += 1;
        let stamp = pp.first_unserved.swap(0, Ordering::Relaxed);
        if stamp != 0 {
            let now = pp.epoch.expect("set").elapsed().as_nanos() as u64 + 1;
            pp.delays.push(Duration::from_nanos(now.saturating_sub(stamp)));
        }
    });
    lp.add_timer(duration, |cx| cx.data.winding_down = true);
    lp.add_timer(duration + Duration::from_secs(10), |cx| {
        cx.data
            .errors
            .push("the ping-pong did not finish 10 s after the storm".into());
        cx.lp.stop();
    });

    let storm = Storm::start(epoch, Arc::clone(&pp.first_unserved));
    let result = lp.run(&mut pp);
    let signals = storm.stop();
    let elapsed = epoch.elapsed();
    drop(lp.take::<UnixStream>(token).unwrap()); // the echo thread sees EOF
    let echoed = echoer.join().expect("the echo thread panicked");
    result.unwrap();

    let mut delays = pp.delays.clone();
    delays.sort();
    let pct = |p: usize| {
        delays
            .get((delays.len() * p / 100).min(delays.len().saturating_sub(1)))
            .copied()
    };
    eprintln!(
        "{backend}: signal storm of {elapsed:.2?}: {signals} signals sent; {} messages exchanged ({} echoed), \
         {} periodic runs; delay from the first unserved signal to the periodic run: \
         median {:?}, p99 {:?}, max {:?}",
        pp.received,
        echoed,
        pp.periodic_runs,
        pct(50).unwrap_or_default(),
        pct(99).unwrap_or_default(),
        delays.last().copied().unwrap_or_default(),
    );
    assert!(pp.errors.is_empty(), "{backend}: {:?}", pp.errors);
    assert!(
        pp.sent > 0 && pp.received == pp.sent,
        "{backend}: {} sent, {} received",
        pp.sent,
        pp.received
    );
    assert_eq!(echoed, pp.sent, "{backend}: the echo side saw a different count");
    assert!(signals > 1000, "{backend}: only {signals} signals sent");
    assert!(pp.periodic_runs > 0, "{backend}: no periodic run after EINTR");
    let median = pct(50).expect("at least one delay measured");
    assert!(
        median < Duration::from_millis(20),
        "{backend}: periodic callbacks ran late after EINTR: median {median:?}"
    );
}

/// CPU time used by the calling thread.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, exclusively borrowed timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime: {}", io::Error::last_os_error());
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The accept side's state: the loop's data.
#[derive(Default)]
struct Accepts {
    accepted: Vec<TcpStream>,
    /// Times the listener was rested after EMFILE / ENFILE.
    rests: u64,
    resting: bool,
    /// Accepts that failed for lack of descriptors.
    exhausted: u64,
}

fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// How long a listener rests after running out of descriptors.
const REST: Duration = Duration::from_millis(100);

/// The documented way to accept: when the process is out of descriptors, stop
/// watching the listener (`POLL_NULL`) and look again after a rest, instead of
/// returning the error and being woken at once for the same pending connection.
fn accept_or_rest(
    cx: &mut Ctx<'_, Accepts>,
    listener: &mut TcpListener,
    me: Token,
    _: evloop::Events,
) -> io::Result<()> {
    for _ in 0..64 {
        match listener.accept() {
            Ok((sock, _)) => cx.data.accepted.push(sock),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if out_of_descriptors(&e) => {
                cx.data.exhausted += 1;
                if !cx.data.resting {
                    cx.data.resting = true;
                    cx.data.rests += 1;
                    cx.lp.modify(me, POLL_NULL)?;
                    cx.lp.add_timer(REST, move |cx| {
                        cx.data.resting = false;
                        if let Err(e) = cx.lp.modify(me, POLL_IN) {
                            log::error!("re-watching the listener: {e}");
                        }
                    });
                }
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The naive way, for comparison: return the error and stay watched.
fn accept_or_fail(
    cx: &mut Ctx<'_, Accepts>,
    listener: &mut TcpListener,
    _: Token,
    _: evloop::Events,
) -> io::Result<()> {
    match listener.accept() {
        Ok((sock, _)) => cx.data.accepted.push(sock),
        Err(e) if out_of_descriptors(&e) => {
            cx.data.exhausted += 1;
            return Err(e);
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Run the loop for `wall` and measure the loop thread's CPU time and iterations.
fn measure(lp: &mut EventLoop<Accepts>, data: &mut Accepts, wall: Duration) -> (Duration, Duration, u64) {
    let start = Instant::now();
    let cpu = thread_cpu_time();
    let mut iterations = 0;
    while start.elapsed() < wall {
        lp.run_once(Some(Duration::from_millis(50)), data).expect("run_once");
        iterations += 1;
    }
    (thread_cpu_time() - cpu, start.elapsed(), iterations)
}

const CLIENTS: usize = 4;

/// The child's work (see the module docs).
fn emfile_child(backend: Backend) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    // Connected before the table fills: they wait in the listen queue.
    let clients: Vec<TcpStream> = (0..CLIENTS).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut lp: EventLoop<Accepts> = Builder::new().backend(backend).build().unwrap();
    let token = lp.add(listener, POLL_IN, accept_or_rest).unwrap();
    let mut data = Accepts::default();

    // A small table, then fill it.
    let (_, hard) = rlimit::Resource::NOFILE.get().unwrap();
    let limit = 256.min(hard);
    rlimit::Resource::NOFILE.set(limit, hard).unwrap();
    let null = File::open("/dev/null").unwrap();
    let mut filler: Vec<OwnedFd> = Vec::new();
    loop {
        match null.try_clone() {
            Ok(f) => filler.push(f.into()),
            Err(e) if out_of_descriptors(&e) => break,
            Err(e) => panic!("filling the fd table: {e}"),
        }
        assert!(filler.len() <= limit as usize, "the fd table never filled");
    }
    assert!(
        filler.iter().all(|fd| fd.as_raw_fd() < libc::FD_SETSIZE as i32),
        "all below FD_SETSIZE: select can watch the listener"
    );

    let (cpu, wall, iterations) = measure(&mut lp, &mut data, Duration::from_secs(1));
    let share = cpu.as_secs_f64() / wall.as_secs_f64();
    eprintln!(
        "{backend}: EMFILE with the listener rested: loop thread CPU {cpu:.2?} over {wall:.2?} = {:.2}%, \
         {iterations} iterations, {} rests, {} failed accepts",
        share * 100.0,
        data.rests,
        data.exhausted,
    );
    assert!(data.accepted.is_empty(), "accepted with a full table?");
    assert!(data.exhausted > 0 && data.rests > 0, "accept never hit EMFILE");

    // For comparison, the naive handler: the same pending connection wakes the loop
    // at once, every time.
    let rested_iterations = iterations;
    lp.set_handler::<TcpListener, _>(token, POLL_IN, accept_or_fail)
        .unwrap();
    let (naive_cpu, naive_wall, naive_iterations) = measure(&mut lp, &mut data, Duration::from_millis(300));
    eprintln!(
        "{backend}: EMFILE with the naive handler: loop thread CPU {naive_cpu:.2?} over {naive_wall:.2?} = {:.2}%, \
         {naive_iterations} iterations",
        naive_cpu.as_secs_f64() / naive_wall.as_secs_f64() * 100.0,
    );
    lp.set_handler::<TcpListener, _>(token, POLL_IN, accept_or_rest)
        .unwrap();

    assert!(
        share < 0.20,
        "{backend}: the loop used {:.1}% CPU while out of fds",
        share * 100.0
    );
    assert!(
        naive_iterations > 10 * rested_iterations,
        "{backend}: the measurement cannot tell spinning ({naive_iterations} iterations in 0.3 s) \
         from resting ({rested_iterations} in 1 s)"
    );

    // Rest again, then free the table: accepting resumes when the rest is over.
    let deadline = Instant::now() + Duration::from_secs(2);
    while lp.registration(token).map(|(_, mode)| mode) != Some(POLL_NULL) && Instant::now() < deadline {
        lp.run_once(Some(Duration::from_millis(20)), &mut data).unwrap();
    }
    assert_eq!(
        lp.registration(token).map(|(_, mode)| mode),
        Some(POLL_NULL),
        "the listener did not rest"
    );
    drop(filler);
    let freed = Instant::now();
    while data.accepted.len() < CLIENTS && freed.elapsed() < Duration::from_secs(3) {
        lp.run_once(Some(Duration::from_millis(20)), &mut data).unwrap();
    }
    eprintln!(
        "{backend}: descriptors freed: {} of {CLIENTS} clients accepted in {:.2?}",
        data.accepted.len(),
        freed.elapsed()
    );
    assert_eq!(data.accepted.len(), CLIENTS, "{backend}: accepting did not resume");
    assert!(
        freed.elapsed() <= REST + Duration::from_millis(500),
        "{backend}: the rest lasted too long"
    );
    drop(clients);
}

/// Run `name` (this very test) in a child process with `CHILD_ENV` set, and relay
/// its output.
fn run_in_child(name: &str) {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprint!("{stderr}");
    assert!(
        out.status.success(),
        "child for {name} failed: {}\n{stdout}",
        out.status
    );
    assert!(
        stdout.contains("1 passed"),
        "the child did not run {name} (test name mismatch?):\n{stdout}"
    );
}

/// The test's name as the harness knows it (without the crate's name).
fn test_name(module: &str, function: &str) -> String {
    let module = module.split_once("::").map_or("", |(_, rest)| rest);
    format!("{module}::{function}")
}

/// Generates one module per backend with every fault test.
macro_rules! fault_tests {
    ($($module:ident => $backend:ident),* $(,)?) => {$(
        mod $module {
            use super::*;

            const BACKEND: Backend = Backend::$backend;

            /// No message lost or changed, and periodic callbacks run promptly
            /// after EINTR, while signals hammer the loop's thread.
            #[test]
            fn ping_pong_survives_a_signal_storm() {
                if BACKEND.is_available() {
                    signal_storm(BACKEND);
                }
            }

            /// A listener out of descriptors rests instead of spinning the CPU, and
            /// accepting resumes when descriptors are free (in a child process).
            #[test]
            fn accept_under_emfile_rests_instead_of_spinning() {
                if !BACKEND.is_available() {
                    return;
                }
                let name = test_name(module_path!(), "accept_under_emfile_rests_instead_of_spinning");
                if std::env::var(CHILD_ENV).as_deref() == Ok(name.as_str()) {
                    emfile_child(BACKEND);
                } else {
                    run_in_child(&name);
                }
            }
        }
    )*};
}

fault_tests!(epoll => Epoll, poll => Poll, select => Select);
