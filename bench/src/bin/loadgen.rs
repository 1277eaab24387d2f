//! W4's load generator: `conns` TCP connections to an echo server, each sending a
//! `size`-byte request and waiting for the whole echo before the next; latencies
//! of the requests answered after `warmup` seconds, for `secs` seconds at most and
//! `max` requests at most. Prints one JSON line.
//!
//! ```text
//! loadgen addr=127.0.0.1:7007 conns=100 size=64 secs=2 warmup=0.3 max=5000000
//! ```

// A benchmark harness, not the library: its variants make the same raw libc
// calls (`bounce`, the floor's epoll loop), which the workspace's `unsafe_code`
// lint would refuse. Each block still carries its `// SAFETY:` line.
#![allow(unsafe_code)]

use std::io::{self, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

struct Conn {
    stream: TcpStream,
    sent_at: Instant,
    got: usize,
}

fn arg(name: &str, default: &str) -> String {
    std::env::args()
        .skip(1)
        .find_map(|a| a.strip_prefix(&format!("{name}=")).map(str::to_string))
        .unwrap_or_else(|| default.to_string())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank] as f64 / 1000.0
}

fn main() -> io::Result<()> {
    let addr = arg("addr", "127.0.0.1:7007");
    let conns: usize = arg("conns", "100").parse().map_err(io::Error::other)?;
    let size: usize = arg("size", "64").parse().map_err(io::Error::other)?;
    let secs: f64 = arg("secs", "2").parse().map_err(io::Error::other)?;
    let warmup: f64 = arg("warmup", "0.3").parse().map_err(io::Error::other)?;
    let max: u64 = arg("max", "5000000").parse().map_err(io::Error::other)?;

    // SAFETY: plain syscall; checked below.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epfd < 0 {
        return Err(io::Error::last_os_error());
    }
    let request: Vec<u8> = (0..size).map(|i| b'A' + (i % 26) as u8).collect();
    let mut all = Vec::with_capacity(conns);
    for i in 0..conns {
        let stream = TcpStream::connect(&addr)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: valid epoll fd, socket and event.
        if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, stream.as_raw_fd(), &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        all.push(Conn {
            stream,
            sent_at: Instant::now(),
            got: 0,
        });
    }
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(warmup);
    let end = measure_from + Duration::from_secs_f64(secs);
    for c in &mut all {
        c.sent_at = Instant::now();
        c.stream.write_all(&request)?;
    }
    let mut latencies: Vec<u64> = Vec::with_capacity(1 << 20);
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; conns];
    let mut buf = vec![0u8; 64 * 1024];
    let mut measured_start = None;
    let mut total: u64 = 0;
    'run: loop {
        // SAFETY: the buffer holds `conns` events.
        let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), conns as libc::c_int, 1000) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let now = Instant::now();
        if now >= end || total >= max {
            break;
        }
        if n == 0 {
            return Err(io::Error::other("the server answered nothing for a second"));
        }
        for ev in &events[..n as usize] {
            let c = &mut all[ev.u64 as usize];
            // SAFETY: buf is valid for writes of its length.
            let got = unsafe { libc::read(c.stream.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if got <= 0 {
                let e = io::Error::last_os_error();
                if got < 0 && e.kind() == io::ErrorKind::WouldBlock {
                    continue;
                }
                return Err(io::Error::other(format!("connection closed by the server: {e}")));
            }
            c.got += got as usize;
            if c.got < size {
                continue;
            }
            c.got -= size;
            let done = Instant::now();
            if done >= measure_from {
                measured_start.get_or_insert(done);
                latencies.push((done - c.sent_at).as_nanos() as u64);
                total += 1;
                if total >= max {
                    break 'run;
                }
            }
            c.sent_at = done;
            c.stream.write_all(&request)?;
        }
    }
    let elapsed = measured_start.map_or(Duration::ZERO, |s| s.elapsed()).as_secs_f64();
    drop(all);
    // SAFETY: our epoll descriptor, closed once.
    unsafe { libc::close(epfd) };
    latencies.sort_unstable();
    println!(
        "{{\"requests\": {}, \"secs\": {:.6}, \"per_sec\": {:.1}, \"p50_us\": {:.2}, \"p99_us\": {:.2}, \"max_us\": {:.2}}}",
        total,
        elapsed,
        total as f64 / elapsed.max(1e-9),
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().map_or(0.0, |&m| m as f64 / 1000.0),
    );
    Ok(())
}
