//! The mio 1.x variant: the same shape as evloop (a slab of boxed handlers,
//! dispatched by token), written the way a practised mio user writes it: edge
//! triggered, so every handler reads until `WouldBlock` or a short read.

use std::io::{self, Write};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use slab::Slab;

use crate::common::{Budget, EchoServer, Measured, READ_BUF, bounce, cpu_time, idle_sockets, message, repeat_timed};

type Handlers<D> = Slab<Option<Box<dyn MioHandler<D>>>>;

/// What a handler gets: the registry, the slab (to add registrations), the data.
pub struct MioCtx<'a, D> {
    pub registry: &'a Registry,
    pub handlers: &'a mut Handlers<D>,
    pub data: &'a mut D,
    pub stop: bool,
}

pub trait MioHandler<D> {
    /// Handle an event; `Ok(false)` drops the registration (and its source).
    fn ready(&mut self, cx: &mut MioCtx<'_, D>, token: Token, event: &Event) -> io::Result<bool>;
}

/// The dispatch loop: poll, then hand each event to its handler, taken out of the
/// slab while it runs so that it may add registrations.
fn run<D>(poll: &mut Poll, handlers: &mut Handlers<D>, data: &mut D, deadline: Option<Instant>) -> io::Result<()> {
    let mut events = Events::with_capacity(1024);
    let timeout = deadline.map(|_| Duration::from_millis(100));
    let mut iteration: u64 = 0;
    loop {
        iteration += 1;
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut cx = MioCtx {
            registry: poll.registry(),
            handlers: &mut *handlers,
            data: &mut *data,
            stop: false,
        };
        for event in events.iter() {
            let key = event.token().0;
            let Some(mut handler) = cx.handlers.get_mut(key).and_then(Option::take) else {
                continue;
            };
            let keep = match handler.ready(&mut cx, event.token(), event) {
                Ok(keep) => keep,
                Err(e) => {
                    log::error!("mio handler {key}: {e}");
                    false
                }
            };
            if keep {
                cx.handlers[key] = Some(handler);
            } else {
                cx.handlers.remove(key);
            }
        }
        let look_at_clock = events.is_empty() || iteration & 255 == 0;
        if cx.stop || (look_at_clock && deadline.is_some_and(|d| Instant::now() >= d)) {
            return Ok(());
        }
    }
}

struct PingPong {
    budget: Budget,
    buf: Vec<u8>,
}

struct Bouncer {
    sock: UnixStream,
}

impl MioHandler<PingPong> for Bouncer {
    fn ready(&mut self, cx: &mut MioCtx<'_, PingPong>, _: Token, _: &Event) -> io::Result<bool> {
        let d = &mut *cx.data;
        loop {
            match bounce(self.sock.as_raw_fd(), &mut d.buf) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    if n < d.buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if d.budget.tick() {
            cx.stop = true;
        }
        Ok(true)
    }
}

struct Idle {
    _sock: mio::net::UdpSocket,
}

impl<D> MioHandler<D> for Idle {
    fn ready(&mut self, _: &mut MioCtx<'_, D>, _: Token, _: &Event) -> io::Result<bool> {
        Ok(true)
    }
}

/// W1 and W2 on mio.
pub fn ping_pong(pairs: u64, size: usize, idle_count: u64, limit: u64, max_time: Duration) -> io::Result<Measured> {
    let mut poll = Poll::new()?;
    let mut handlers: Handlers<PingPong> = Slab::new();
    for sock in idle_sockets(idle_count)? {
        let mut sock = mio::net::UdpSocket::from_std(sock);
        let entry = handlers.vacant_entry();
        poll.registry()
            .register(&mut sock, Token(entry.key()), Interest::READABLE)?;
        entry.insert(Some(Box::new(Idle { _sock: sock })));
    }
    let msg = message(size);
    let mut seeds = Vec::new();
    for _ in 0..pairs {
        let (a, b) = std::os::unix::net::UnixStream::pair()?;
        a.set_nonblocking(true)?;
        b.set_nonblocking(true)?;
        seeds.push(a.try_clone()?);
        for s in [a, b] {
            let mut sock = UnixStream::from_std(s);
            let entry = handlers.vacant_entry();
            poll.registry()
                .register(&mut sock, Token(entry.key()), Interest::READABLE)?;
            entry.insert(Some(Box::new(Bouncer { sock })));
        }
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
    run(&mut poll, &mut handlers, &mut data, None)?;
    Ok(Measured {
        events: data.budget.count,
        elapsed: start.elapsed(),
        cpu: cpu_time() - cpu_start,
    })
}

struct Shared {
    _sock: Rc<UdpSocket>,
}

impl MioHandler<()> for Shared {
    fn ready(&mut self, _: &mut MioCtx<'_, ()>, _: Token, _: &Event) -> io::Result<bool> {
        Ok(true)
    }
}

/// W3 on mio: register a shared socket with a boxed handler, then deregister it.
pub fn churn(ops: u64, max_time: Duration) -> io::Result<Measured> {
    let poll = Poll::new()?;
    let mut handlers: Handlers<()> = Slab::new();
    let sock = Rc::new(idle_sockets(1)?.pop().expect("one socket"));
    let fd = sock.as_raw_fd();
    repeat_timed(ops, max_time, || {
        let entry = handlers.vacant_entry();
        let key = entry.key();
        poll.registry()
            .register(&mut SourceFd(&fd), Token(key), Interest::READABLE)?;
        entry.insert(Some(Box::new(Shared {
            _sock: Rc::clone(&sock),
        })));
        poll.registry().deregister(&mut SourceFd(&fd))?;
        drop(handlers.remove(key));
        Ok(())
    })
}

struct Acceptor {
    listener: TcpListener,
}

impl MioHandler<EchoServer> for Acceptor {
    fn ready(&mut self, cx: &mut MioCtx<'_, EchoServer>, _: Token, _: &Event) -> io::Result<bool> {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nodelay(true)?;
                    let entry = cx.handlers.vacant_entry();
                    cx.registry
                        .register(&mut stream, Token(entry.key()), Interest::READABLE)?;
                    entry.insert(Some(Box::new(Client { stream })));
                    cx.data.accepted += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) => return Err(e),
            }
        }
    }
}

struct Client {
    stream: TcpStream,
}

impl MioHandler<EchoServer> for Client {
    fn ready(&mut self, cx: &mut MioCtx<'_, EchoServer>, _: Token, _: &Event) -> io::Result<bool> {
        let d = &mut *cx.data;
        let open = loop {
            match bounce(self.stream.as_raw_fd(), &mut d.buf) {
                Ok(0) => break false,
                Ok(n) => {
                    d.served += 1;
                    if n < d.buf.len() {
                        break true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                Err(_) => break false,
            }
        };
        if !open && d.client_closed() {
            cx.stop = true;
        }
        Ok(open)
    }
}

/// W4 on mio.
pub fn echo_server(listener: std::net::TcpListener, expected: u64, max_time: Duration) -> io::Result<u64> {
    let mut poll = Poll::new()?;
    let mut handlers: Handlers<EchoServer> = Slab::new();
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let entry = handlers.vacant_entry();
    poll.registry()
        .register(&mut listener, Token(entry.key()), Interest::READABLE)?;
    entry.insert(Some(Box::new(Acceptor { listener })));
    let mut data = EchoServer::new(expected);
    run(&mut poll, &mut handlers, &mut data, Some(Instant::now() + max_time))?;
    Ok(data.served)
}
