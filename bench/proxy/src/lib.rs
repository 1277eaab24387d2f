//! Small shared pieces of the proxy benchmark tools: a thin epoll wrapper,
//! non-blocking connect, descriptor limits, argument parsing and percentiles.
//!
//! Wire protocol spoken with `sink` (after the SOCKS5 handshake):
//! - `D` + u64 little-endian length: the sink discards that many bytes, then
//!   answers with the same u64 (8 bytes). Used for bulk throughput; needs no
//!   half-close support from the proxy.
//! - `E` as the first byte of the stream: the sink echoes every byte it reads,
//!   the `E` included, until the client closes.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::Duration;

/// Raise the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 0;
        }
        rl.rlim_cur = rl.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        rl.rlim_cur as u64
    }
}

/// A level-triggered epoll instance.
pub struct Epoll {
    fd: RawFd,
    events: Vec<libc::epoll_event>,
}

pub const IN: u32 = libc::EPOLLIN as u32;
pub const OUT: u32 = libc::EPOLLOUT as u32;
pub const ERR: u32 = (libc::EPOLLERR | libc::EPOLLHUP) as u32;

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll {
            fd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 1024],
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, interest: u32, key: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: interest, u64: key };
        if unsafe { libc::epoll_ctl(self.fd, op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn add(&self, fd: RawFd, interest: u32, key: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, interest, key)
    }

    pub fn modify(&self, fd: RawFd, interest: u32, key: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, interest, key)
    }

    pub fn delete(&self, fd: RawFd) {
        let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
    }

    /// Wait up to `timeout`; returns (key, events) pairs.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<Vec<(u64, u32)>> {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let n = unsafe { libc::epoll_wait(self.fd, self.events.as_mut_ptr(), self.events.len() as i32, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(Vec::new());
            }
            return Err(e);
        }
        Ok(self.events[..n as usize].iter().map(|e| (e.u64, e.events)).collect())
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        unsafe { libc::close(self.fd) };
    }
}

/// Start a non-blocking TCP connect to an IPv4 address (TCP_NODELAY set).
pub fn connect_nonblocking(addr: SocketAddr) -> io::Result<TcpStream> {
    let SocketAddr::V4(v4) = addr else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "IPv4 only"));
    };
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        stream.set_nodelay(true)?;
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            &sin as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        Ok(stream)
    }
}

pub fn raw(s: &impl AsRawFd) -> RawFd {
    s.as_raw_fd()
}

/// SOCKS5 greeting: version 5, one method, no authentication.
pub const SOCKS_GREETING: [u8; 3] = [5, 1, 0];

/// SOCKS5 CONNECT request for an IPv4 target.
pub fn socks_request(target: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(v4) = target else {
        panic!("IPv4 target only")
    };
    let mut r = vec![5, 1, 0, 1];
    r.extend_from_slice(&v4.ip().octets());
    r.extend_from_slice(&v4.port().to_be_bytes());
    r
}

/// Length of a complete SOCKS5 reply at the front of `buf`, if there is one.
/// Errors on a malformed or unsuccessful reply.
pub fn socks_reply_len(buf: &[u8]) -> io::Result<Option<usize>> {
    if buf.len() < 5 {
        return Ok(None);
    }
    if buf[0] != 5 || buf[1] != 0 {
        return Err(io::Error::other(format!("SOCKS5 reply {:?}", &buf[..2])));
    }
    let len = match buf[3] {
        1 => 10,
        4 => 22,
        3 => 7 + buf[4] as usize,
        t => return Err(io::Error::other(format!("SOCKS5 reply address type {t}"))),
    };
    Ok(if buf.len() >= len { Some(len) } else { None })
}

/// `--key value` arguments into a map (flags without value get "1").
pub fn parse_args(args: &[String]) -> HashMap<String, String> {
    let mut m = HashMap::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if let Some(k) = a.strip_prefix("--") {
            if i + 1 < args.len() && !args[i + 1].starts_with("--") {
                m.insert(k.to_string(), args[i + 1].clone());
                i += 2;
            } else {
                m.insert(k.to_string(), "1".to_string());
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    m
}

pub fn arg<T: std::str::FromStr>(m: &HashMap<String, String>, k: &str, default: Option<T>) -> T {
    match m.get(k) {
        Some(v) => v.parse().unwrap_or_else(|_| panic!("bad value for --{k}: {v}")),
        None => default.unwrap_or_else(|| panic!("--{k} is required")),
    }
}

/// The q-quantile (0..=1) of sorted values.
pub fn quantile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}
