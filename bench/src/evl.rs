//! The evloop variants: the loop under test, on the backend given.

use std::io::{self, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

use evloop::{Backend, Builder, Ctx, EventLoop, Events, POLL_IN, Token};

use crate::common::{
    Budget, EchoServer, Measured, READ_BUF, Rng, bounce, cpu_time, idle_sockets, message, repeat_timed,
};

struct PingPong {
    budget: Budget,
    buf: Vec<u8>,
}

#[inline]
fn on_readable(cx: &mut Ctx<'_, PingPong>, sock: &mut UnixStream, _: Token, _: Events) -> io::Result<()> {
    let d = &mut *cx.data;
    match bounce(sock.as_raw_fd(), &mut d.buf) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
        Err(e) => return Err(e),
    }
    if d.budget.tick() {
        cx.lp.stop();
    }
    Ok(())
}

fn idle(_: &mut Ctx<'_, PingPong>, _: &mut UdpSocket, _: Token, _: Events) -> io::Result<()> {
    Ok(())
}

/// W1 and W2: `pairs` socketpairs with a message of `size` bytes bouncing in each,
/// plus `idle` registered sources that never fire.
pub fn ping_pong(
    backend: Backend,
    pairs: u64,
    size: usize,
    idle_count: u64,
    limit: u64,
    max_time: Duration,
) -> io::Result<Measured> {
    let mut lp: EventLoop<PingPong> = Builder::new().backend(backend).build()?;
    for sock in idle_sockets(idle_count)? {
        lp.add(sock, POLL_IN, idle)?;
    }
    let msg = message(size);
    let mut seeds = Vec::new();
    for _ in 0..pairs {
        let (a, b) = UnixStream::pair()?;
        a.set_nonblocking(true)?;
        b.set_nonblocking(true)?;
        seeds.push(a.try_clone()?);
        lp.add(a, POLL_IN, on_readable)?;
        lp.add(b, POLL_IN, on_readable)?;
    }
    for mut s in seeds {
        s.write_all(&msg)?;
    }
    let mut data = PingPong {
        budget: Budget::new(limit, max_time),
        buf: vec![0; READ_BUF],
    };
    let start = Instant::now();
    let cpu_start = cpu_time();
    lp.run(&mut data)?;
    Ok(Measured {
        events: data.budget.count,
        elapsed: start.elapsed(),
        cpu: cpu_time() - cpu_start,
    })
}

fn never(_: &mut Ctx<'_, ()>, _: &mut Rc<UdpSocket>, _: Token, _: Events) -> io::Result<()> {
    Ok(())
}

/// W3: add a registration and remove it, `ops` times. The source is an `Rc` clone
/// of one socket (the way the loop's docs share a socket), so `remove` drops a
/// reference and closes nothing; mio's variant does the same.
pub fn churn(backend: Backend, ops: u64, max_time: Duration) -> io::Result<Measured> {
    let mut lp: EventLoop<()> = Builder::new().backend(backend).build()?;
    let sock = Rc::new(idle_sockets(1)?.pop().expect("one socket"));
    repeat_timed(ops, max_time, || {
        let token = lp.add(Rc::clone(&sock), POLL_IN, never)?;
        lp.remove(token)
    })
}

fn on_accept(cx: &mut Ctx<'_, EchoServer>, listener: &mut TcpListener, _: Token, _: Events) -> io::Result<()> {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(true)?;
                stream.set_nodelay(true)?;
                cx.lp.add(stream, POLL_IN, on_client)?;
                cx.data.accepted += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

#[inline]
fn on_client(cx: &mut Ctx<'_, EchoServer>, stream: &mut TcpStream, token: Token, _: Events) -> io::Result<()> {
    let d = &mut *cx.data;
    match bounce(stream.as_raw_fd(), &mut d.buf) {
        Ok(0) => {}
        Ok(_) => {
            d.served += 1;
            return Ok(());
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
        Err(_) => {}
    }
    if d.client_closed() {
        cx.lp.stop();
    }
    cx.lp.remove(token)
}

/// W4: an echo server; stops when `expected` clients have come and gone, or at `max_time`.
pub fn echo_server(backend: Backend, listener: TcpListener, expected: u64, max_time: Duration) -> io::Result<u64> {
    let mut lp: EventLoop<EchoServer> = Builder::new().backend(backend).build()?;
    listener.set_nonblocking(true)?;
    lp.add(listener, POLL_IN, on_accept)?;
    lp.add_timer(max_time, |cx| cx.lp.stop());
    let mut data = EchoServer::new(expected);
    lp.run(&mut data)?;
    Ok(data.served)
}

#[derive(Default)]
struct Fired {
    count: u64,
}

/// W5 on the loop's timers: schedule `n` timers due within 1 ms, then fire them all
/// with one `run_once`. Returns (schedule time, fire time, fired).
pub fn timers_fire(n: u64, seed: u64) -> io::Result<(Duration, Duration, u64)> {
    let mut lp: EventLoop<Fired> = Builder::new().backend(Backend::Epoll).build()?;
    let mut rng = Rng::new(seed);
    let start = Instant::now();
    for _ in 0..n {
        let delay = Duration::from_micros(rng.next() % 1000);
        lp.add_timer(delay, |cx| cx.data.count += 1);
    }
    let scheduled = start.elapsed();
    std::thread::sleep(Duration::from_millis(2).saturating_sub(scheduled));
    let mut data = Fired::default();
    let start = Instant::now();
    while data.count < n {
        lp.run_once(Some(Duration::ZERO), &mut data)?;
    }
    Ok((scheduled, start.elapsed(), data.count))
}

/// W5: schedule `n` timers (due in 60 s or so), then cancel them all in a shuffled order.
pub fn timers_cancel(n: u64, seed: u64) -> io::Result<Duration> {
    let mut lp: EventLoop<Fired> = Builder::new().backend(Backend::Epoll).build()?;
    let mut rng = Rng::new(seed);
    let order = crate::timers::shuffled(n, seed ^ 0x5eed);
    let start = Instant::now();
    let ids: Vec<_> = (0..n)
        .map(|_| {
            lp.add_timer(Duration::from_millis(60_000 + rng.next() % 1000), |cx| {
                cx.data.count += 1
            })
        })
        .collect();
    for &i in &order {
        lp.cancel_timer(ids[i as usize]);
    }
    let elapsed = start.elapsed();
    if lp.timer_count() != 0 {
        return Err(io::Error::other(format!(
            "{} timers left after cancelling all",
            lp.timer_count()
        )));
    }
    Ok(elapsed)
}
