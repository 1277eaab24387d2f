//! What every variant shares: arguments, the result line, descriptor limits, idle sources.

use std::collections::HashMap;
use std::io;
use std::net::UdpSocket;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// `key=value` arguments after the sub-command.
pub struct Args {
    values: HashMap<String, String>,
}

impl Args {
    pub fn parse(args: impl Iterator<Item = String>) -> io::Result<Args> {
        let mut values = HashMap::new();
        for arg in args {
            let (k, v) = arg.split_once('=').ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("expected key=value, got {arg:?}"))
            })?;
            values.insert(k.trim_start_matches('-').to_string(), v.to_string());
        }
        Ok(Args { values })
    }

    pub fn str(&self, key: &str, default: &str) -> String {
        self.values.get(key).cloned().unwrap_or_else(|| default.to_string())
    }

    pub fn num(&self, key: &str, default: u64) -> u64 {
        self.values
            .get(key)
            .and_then(|v| v.replace('_', "").parse().ok())
            .unwrap_or(default)
    }

    pub fn secs(&self, key: &str, default: f64) -> Duration {
        Duration::from_secs_f64(self.values.get(key).and_then(|v| v.parse().ok()).unwrap_or(default))
    }
}

/// One JSON object on stdout, built by hand (numbers and plain strings only).
#[derive(Default)]
pub struct Report {
    fields: Vec<(String, String)>,
}

impl Report {
    pub fn num(mut self, key: &str, value: impl Into<f64>) -> Self {
        let v: f64 = value.into();
        let text = if v.fract() == 0.0 && v.abs() < 1e15 {
            format!("{}", v as i64)
        } else {
            format!("{v:.6}")
        };
        self.fields.push((key.to_string(), text));
        self
    }

    pub fn text(mut self, key: &str, value: &str) -> Self {
        let escaped: String = value
            .chars()
            .flat_map(|c| match c {
                '"' => vec!['\\', '"'],
                '\\' => vec!['\\', '\\'],
                c if c.is_control() => vec![' '],
                c => vec![c],
            })
            .collect();
        self.fields.push((key.to_string(), format!("\"{escaped}\"")));
        self
    }

    pub fn print(self) {
        let body: Vec<String> = self.fields.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
        println!("{{{}}}", body.join(", "));
    }
}

/// The outcome of a timed event-dispatch run.
pub struct Measured {
    pub events: u64,
    pub elapsed: Duration,
    /// The process's user+system CPU time over the same span.
    pub cpu: Duration,
}

impl Measured {
    pub fn report(&self) -> Report {
        let secs = self.elapsed.as_secs_f64();
        Report::default()
            .num("events", self.events as f64)
            .num("secs", secs)
            .num("per_sec", self.events as f64 / secs)
            .num("cpu_ns_per_op", self.cpu.as_nanos() as f64 / self.events.max(1) as f64)
    }
}

/// User+system CPU time this process has used so far. On a shared VM it is less
/// disturbed by other tenants than the wall clock (time stolen by the hypervisor
/// is not charged to the process when the guest kernel accounts steal time).
pub fn cpu_time() -> Duration {
    // SAFETY: rusage is plain data; all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes the struct we pass.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Raise the soft descriptor limit to the hard one (20 000 here).
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim.rlim_cur)
}

/// `n` UDP sockets on 127.0.0.1 that nobody sends to: registered, never ready.
pub fn idle_sockets(n: u64) -> io::Result<Vec<UdpSocket>> {
    (0..n)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0")?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .collect()
}

/// The shared stop rule of every dispatch loop: a count, and a deadline looked at
/// every 64 events (reading the clock per event would cost more than some loops).
pub struct Budget {
    pub count: u64,
    pub limit: u64,
    pub deadline: Instant,
}

impl Budget {
    pub fn new(limit: u64, max_time: Duration) -> Budget {
        Budget {
            count: 0,
            limit,
            deadline: Instant::now() + max_time,
        }
    }

    /// Count one event; true when the run should stop.
    #[inline]
    pub fn tick(&mut self) -> bool {
        self.count += 1;
        self.count >= self.limit || (self.count & 63 == 0 && Instant::now() >= self.deadline)
    }
}

/// The work of one ping-pong or echo event, the same code in every variant so that
/// what differs between them is the loop alone: one `read(2)`, then one `write(2)` of
/// what it returned, straight through libc. (std's `Read`/`Write` and `write_all` add
/// some 40 instructions per event of their own: the same in each variant, but they
/// would dilute the loops' difference in the instruction counts.)
///
/// Returns the bytes echoed, 0 at end of file; a failed read (`WouldBlock` included)
/// or write is the error.
#[inline(always)]
pub fn bounce(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of its length.
    let got = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if got <= 0 {
        return if got == 0 {
            Ok(0)
        } else {
            Err(io::Error::last_os_error())
        };
    }
    let got = got as usize;
    // SAFETY: the first `got` bytes of buf were just filled by read.
    let put = unsafe { libc::write(fd, buf.as_ptr().cast(), got) };
    if put as usize != got {
        return Err(short_write(put));
    }
    Ok(got)
}

#[cold]
#[inline(never)]
fn short_write(put: isize) -> io::Error {
    if put < 0 {
        io::Error::last_os_error()
    } else {
        // Messages are far smaller than an empty socket buffer: this would be a bug.
        io::Error::other(format!("short write of {put} bytes"))
    }
}

/// W3's measurement, the same for every variant: `op` (one add and one remove)
/// `ops` times, or until `max_time` has passed (the clock is read every 1024 ops).
#[inline(always)]
pub fn repeat_timed(ops: u64, max_time: Duration, mut op: impl FnMut() -> io::Result<()>) -> io::Result<Measured> {
    let deadline = Instant::now() + max_time;
    let start = Instant::now();
    let cpu_start = cpu_time();
    let mut done = 0;
    while done < ops {
        op()?;
        done += 1;
        if done & 1023 == 0 && Instant::now() >= deadline {
            break;
        }
    }
    Ok(Measured {
        events: done,
        elapsed: start.elapsed(),
        cpu: cpu_time() - cpu_start,
    })
}

/// W4's echo server state, the same for every Rust variant.
pub struct EchoServer {
    pub accepted: u64,
    pub closed: u64,
    /// Clients to serve before stopping.
    pub expected: u64,
    pub served: u64,
    pub buf: Vec<u8>,
}

impl EchoServer {
    pub fn new(expected: u64) -> EchoServer {
        EchoServer {
            accepted: 0,
            closed: 0,
            expected,
            served: 0,
            buf: vec![0; READ_BUF],
        }
    }

    /// Count a client gone; true when every expected client has come and gone.
    pub fn client_closed(&mut self) -> bool {
        self.closed += 1;
        self.closed >= self.expected && self.closed == self.accepted
    }
}

/// A message of `size` bytes.
pub fn message(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// The read buffer of every ping-pong handler: larger than any message, so one
/// read drains what a single write put in (a short read means drained).
pub const READ_BUF: usize = 64 * 1024;

/// xorshift64: cheap reproducible pseudo-random numbers for timer delays.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}
