//! The floor: a minimal loop straight on `epoll_wait` (libc), level-triggered,
//! the event's fd in its data word, the work done inline: no tokens, no handler
//! indirection, no allocation. Nothing built on epoll can do less per event.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::common::{Budget, Measured, READ_BUF, bounce, cpu_time, idle_sockets, message, repeat_timed};

struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll {
            fd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 1024],
        })
    }

    #[inline]
    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: fd as u64 };
        // SAFETY: valid epoll fd and event struct.
        if unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Wait; returns how many entries of `self.events` are filled.
    #[inline]
    fn wait(&mut self, timeout_ms: libc::c_int) -> io::Result<usize> {
        // SAFETY: the buffer holds `len` events.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                timeout_ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(e)
            };
        }
        Ok(n as usize)
    }
}

/// W1 and W2 on the floor.
pub fn ping_pong(pairs: u64, size: usize, idle_count: u64, limit: u64, max_time: Duration) -> io::Result<Measured> {
    let mut ep = Epoll::new()?;
    let idle = idle_sockets(idle_count)?;
    for s in &idle {
        ep.ctl(libc::EPOLL_CTL_ADD, s.as_raw_fd(), libc::EPOLLIN as u32)?;
    }
    let msg = message(size);
    let mut socks = Vec::new();
    for _ in 0..pairs {
        let (a, b) = UnixStream::pair()?;
        a.set_nonblocking(true)?;
        b.set_nonblocking(true)?;
        ep.ctl(libc::EPOLL_CTL_ADD, a.as_raw_fd(), libc::EPOLLIN as u32)?;
        ep.ctl(libc::EPOLL_CTL_ADD, b.as_raw_fd(), libc::EPOLLIN as u32)?;
        socks.push((a, b));
    }
    for (a, _) in &mut socks {
        a.write_all(&msg)?;
    }
    let mut buf = vec![0u8; READ_BUF];
    let mut budget = Budget::new(limit, max_time);
    let start = Instant::now();
    let cpu_start = cpu_time();
    'outer: loop {
        let n = ep.wait(-1)?;
        for i in 0..n {
            let fd = ep.events[i].u64 as RawFd;
            // A failed read (WouldBlock) still counts, as in the other variants.
            let _ = bounce(fd, &mut buf);
            if budget.tick() {
                break 'outer;
            }
        }
    }
    Ok(Measured {
        events: budget.count,
        elapsed: start.elapsed(),
        cpu: cpu_time() - cpu_start,
    })
}

/// W3 on the floor: EPOLL_CTL_ADD then EPOLL_CTL_DEL.
pub fn churn(ops: u64, max_time: Duration) -> io::Result<Measured> {
    let ep = Epoll::new()?;
    let sock = idle_sockets(1)?.pop().expect("one socket");
    let fd = sock.as_raw_fd();
    repeat_timed(ops, max_time, || {
        ep.ctl(libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN as u32)?;
        ep.ctl(libc::EPOLL_CTL_DEL, fd, 0)
    })
}

/// W4 on the floor: the listener's fd tells accepts from client data.
pub fn echo_server(listener: std::net::TcpListener, expected: u64, max_time: Duration) -> io::Result<u64> {
    let mut ep = Epoll::new()?;
    listener.set_nonblocking(true)?;
    let lfd = listener.as_raw_fd();
    ep.ctl(libc::EPOLL_CTL_ADD, lfd, libc::EPOLLIN as u32)?;
    let mut buf = vec![0u8; READ_BUF];
    let (mut accepted, mut closed, mut served) = (0u64, 0u64, 0u64);
    let deadline = Instant::now() + max_time;
    let one: libc::c_int = 1;
    loop {
        let n = ep.wait(100)?;
        if n == 0 && Instant::now() >= deadline {
            return Ok(served);
        }
        for i in 0..n {
            let fd = ep.events[i].u64 as RawFd;
            if fd == lfd {
                loop {
                    // SAFETY: accept4 on our listener; null address pointers are allowed.
                    let c = unsafe {
                        libc::accept4(
                            lfd,
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        )
                    };
                    if c < 0 {
                        break;
                    }
                    // SAFETY: c is a fresh socket; the option value lives across the call.
                    unsafe {
                        libc::setsockopt(
                            c,
                            libc::IPPROTO_TCP,
                            libc::TCP_NODELAY,
                            (&one as *const libc::c_int).cast(),
                            size_of::<libc::c_int>() as libc::socklen_t,
                        );
                    }
                    ep.ctl(libc::EPOLL_CTL_ADD, c, libc::EPOLLIN as u32)?;
                    accepted += 1;
                }
                continue;
            }
            let open = match bounce(fd, &mut buf) {
                Ok(0) => false,
                Ok(_) => {
                    served += 1;
                    true
                }
                Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            };
            if !open {
                // SAFETY: fd is a client socket this loop accepted and nobody else owns.
                unsafe { libc::close(fd) };
                closed += 1;
                if closed >= expected && closed == accepted {
                    return Ok(served);
                }
            }
        }
    }
}
