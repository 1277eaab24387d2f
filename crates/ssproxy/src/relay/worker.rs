//! Worker threads: one event loop each, with its own `SO_REUSEPORT` listeners,
//! steered by the main thread through a control socket.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use evloop::{Ctx, EventLoop, Events, POLL_IN, Token};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};

use super::SharedRef;
use super::tcp::{self, Conn};
use super::udp::{self, UdpRelay};
use crate::dns::{HasResolver, Resolver, ResolverConfig};

/// Size of the buffer each read goes into: large reads mean few system calls per
/// byte relayed.
const SCRATCH_LEN: usize = 256 * 1024;

/// A worker's loop data: everything its handlers share.
pub struct Worker {
    /// Settings shared by all workers.
    pub shared: SharedRef,
    /// The live TCP connections.
    pub conns: Slab<Conn>,
    /// The buffer small reads go into before they are transformed (a busy stream reads
    /// straight into its queue instead; see [`Pending`](super::buffer::Pending)).
    pub scratch: Box<[u8]>,
    /// Name resolution on the loop.
    pub resolver: Resolver<Worker>,
    /// The UDP relay's state.
    pub udp: UdpRelay,
    /// Local: the address UDP ASSOCIATE replies name.
    pub udp_bind: Option<SocketAddr>,
    /// Clients refused since the last summary, logged once per period rather than
    /// one line each, so that a flood cannot fill the logs.
    pub rejected: Rejected,
    listeners: Vec<Token>,
    shutdown_deadline: Option<Instant>,
    serial: u64,
}

impl HasResolver for Worker {
    fn resolver(&mut self) -> &mut Resolver<Self> {
        &mut self.resolver
    }
}

impl Worker {
    /// A serial number for a new connection.
    pub fn next_serial(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    /// Whether a graceful shutdown is under way.
    pub fn shutting_down(&self) -> bool {
        self.shutdown_deadline.is_some()
    }
}

/// Counts of refused clients, for the periodic summary.
#[derive(Default, Debug)]
pub struct Rejected {
    /// TCP clients that failed authentication (or replayed a salt).
    pub streams: u64,
    /// UDP datagrams dropped (wrong key, replay, malformed).
    pub datagrams: u64,
}

/// What the main thread tells a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Stop now, closing every connection (SIGINT, SIGTERM).
    Stop,
    /// Stop accepting, let live connections finish within the grace period (SIGQUIT).
    Drain,
}

impl Command {
    fn byte(self) -> u8 {
        match self {
            Command::Stop => b's',
            Command::Drain => b'q',
        }
    }
}

/// The main thread's end of one worker.
pub struct WorkerHandle {
    control: UnixStream,
    thread: Option<JoinHandle<io::Result<()>>>,
    /// The worker's number, for logs.
    pub index: usize,
}

impl WorkerHandle {
    /// Send a command; a worker that already ended is not an error.
    pub fn send(&mut self, command: Command) {
        if let Err(e) = self.control.write_all(&[command.byte()])
            && e.kind() != io::ErrorKind::BrokenPipe
        {
            log::warn!("worker {}: sending {command:?}: {e}", self.index);
        }
    }

    /// A second handle on the control socket, readable (end-of-file) once the
    /// worker's thread has ended.
    pub fn control_watch(&self) -> io::Result<UnixStream> {
        let watch = self.control.try_clone()?;
        watch.set_nonblocking(true)?;
        Ok(watch)
    }

    /// Wait for the worker's thread to end, returning its outcome.
    pub fn join(&mut self) -> io::Result<()> {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other(format!("worker {} panicked", self.index))),
            None => Ok(()),
        }
    }
}

/// Where a worker listens.
#[derive(Clone, Debug)]
pub struct Listen {
    /// TCP and/or UDP on these addresses.
    pub addrs: Vec<SocketAddr>,
    /// Resolver settings for the worker.
    pub resolver: ResolverConfig,
}

/// A non-blocking socket bound with `SO_REUSEPORT`, so that every worker has its
/// own and the kernel spreads the traffic over them.
fn bind_reuseport(addr: SocketAddr, kind: Type, protocol: Protocol, what: &str) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), kind.cloexec(), Some(protocol))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket
        .bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("{what} bind {addr}: {e}")))?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Fails if another socket already holds `addr`, so that a second ssserver or sslocal on the
/// same port exits instead of silently sharing it: the workers' `SO_REUSEPORT` binds succeed
/// beside any other `SO_REUSEPORT` socket of the same user, and the kernel would then spread
/// clients over both programs. A bind without `SO_REUSEPORT` conflicts with every socket
/// there. The TCP probe sets `SO_REUSEADDR`, so that connections of a previous run still in
/// `TIME_WAIT` do not count (a listener still does); the UDP probe does not, since on UDP
/// that option alone would let it share the port too.
fn ensure_port_unused(addr: SocketAddr, kind: Type, protocol: Protocol, what: &str) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), kind.cloexec(), Some(protocol))?;
    probe.set_reuse_address(kind == Type::STREAM)?;
    if addr.is_ipv6() {
        probe.set_only_v6(true)?;
    }
    match probe.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            e.kind(),
            format!(
                "{what} port {addr} is already in use by another program (another ssserver or sslocal?); \
                 refusing to share it: stop that program or choose another port"
            ),
        )),
        Err(e) => Err(io::Error::new(e.kind(), format!("{what} bind {addr}: {e}"))),
    }
}

/// A TCP listener of one worker.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = bind_reuseport(addr, Type::STREAM, Protocol::TCP, "tcp")?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// A UDP socket of one worker.
pub fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    Ok(bind_reuseport(addr, Type::DGRAM, Protocol::UDP, "udp")?.into())
}

/// Start a worker thread. Its sockets are bound before this returns, so a bind
/// error (port in use) is reported here, not later.
pub fn spawn(index: usize, shared: SharedRef, listen: &Listen) -> io::Result<WorkerHandle> {
    let mut tcp_listeners = Vec::new();
    let mut udp_sockets = Vec::new();
    for &addr in &listen.addrs {
        let tcp = shared.tcp || matches!(shared.role, super::Role::Local { tunnel: None, .. });
        // The first worker checks that the port is ours alone; the others join it.
        if index == 0 && tcp {
            ensure_port_unused(addr, Type::STREAM, Protocol::TCP, "tcp")?;
        }
        if index == 0 && shared.udp {
            ensure_port_unused(addr, Type::DGRAM, Protocol::UDP, "udp")?;
        }
        if tcp {
            tcp_listeners.push(bind_tcp(addr)?);
        }
        if shared.udp {
            udp_sockets.push(bind_udp(addr)?);
        }
    }
    let udp_bind = udp_sockets.first().and_then(|s| s.local_addr().ok());
    let (control, worker_end) = UnixStream::pair()?;
    let resolver_config = listen.resolver.clone();
    let thread = std::thread::Builder::new()
        .name(format!("worker-{index}"))
        .spawn(move || {
            let result = run_worker(
                shared,
                tcp_listeners,
                udp_sockets,
                udp_bind,
                worker_end,
                resolver_config,
            );
            if let Err(e) = &result {
                log::error!("worker {index}: {e}");
            }
            result
        })?;
    Ok(WorkerHandle {
        control,
        thread: Some(thread),
        index,
    })
}

fn run_worker(
    shared: SharedRef,
    tcp_listeners: Vec<TcpListener>,
    udp_sockets: Vec<UdpSocket>,
    udp_bind: Option<SocketAddr>,
    control: UnixStream,
    resolver_config: ResolverConfig,
) -> io::Result<()> {
    let mut lp: EventLoop<Worker> = EventLoop::new()?;
    let resolver = Resolver::new(resolver_config)?;
    let mut worker = Worker {
        shared,
        conns: Slab::new(),
        scratch: vec![0u8; SCRATCH_LEN].into_boxed_slice(),
        resolver,
        udp: UdpRelay::default(),
        udp_bind,
        rejected: Rejected::default(),
        listeners: Vec::new(),
        shutdown_deadline: None,
        serial: 0,
    };
    for listener in tcp_listeners {
        let token = tcp::add_listener(&mut lp, listener)?;
        worker.listeners.push(token);
    }
    for socket in udp_sockets {
        let token = udp::add_listener(&mut lp, &mut worker, socket)?;
        worker.listeners.push(token);
    }
    control.set_nonblocking(true)?;
    lp.add(control, POLL_IN, on_control)?;
    udp::start_sweeper(&mut lp, &worker);
    lp.add_periodic(|cx| {
        let r = std::mem::take(&mut cx.data.rejected);
        if r.streams > 0 || r.datagrams > 0 {
            log::warn!(
                "refused {} TCP clients that failed authentication and dropped {} bad UDP datagrams \
                 since the last report (-v shows each)",
                r.streams,
                r.datagrams
            );
        }
    });
    lp.run(&mut worker)?;
    let open = worker.conns.len();
    if open > 0 {
        log::info!("worker: closing {open} connections");
    }
    worker.resolver.close(&mut lp);
    Ok(())
}

fn on_control(cx: &mut Ctx<'_, Worker>, control: &mut UnixStream, me: Token, _: Events) -> io::Result<()> {
    let mut buf = [0u8; 16];
    let n = match control.read(&mut buf) {
        Ok(0) => {
            // The main thread is gone: nobody can steer us any more.
            cx.lp.remove(me)?;
            cx.lp.stop();
            return Ok(());
        }
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
        Err(e) => return Err(e),
    };
    for &byte in &buf[..n] {
        match byte {
            b's' => cx.lp.stop(),
            b'q' => drain(cx),
            other => log::warn!("worker: unknown control byte {other:#x}"),
        }
    }
    Ok(())
}

/// Stop accepting; stop the loop when the last connection ends or the grace
/// period is over, whichever comes first.
fn drain(cx: &mut Ctx<'_, Worker>) {
    if cx.data.shutting_down() {
        return;
    }
    let grace = cx.data.shared.grace;
    cx.data.shutdown_deadline = Some(Instant::now() + grace);
    for token in std::mem::take(&mut cx.data.listeners) {
        let _ = cx.lp.remove(token);
    }
    let open = cx.data.conns.len();
    if open == 0 {
        cx.lp.stop();
        return;
    }
    log::info!("worker: no longer accepting; waiting up to {grace:?} for {open} connections");
    cx.lp.add_timer(grace, |cx| {
        log::warn!(
            "worker: grace period over with {} connections open; closing them",
            cx.data.conns.len()
        );
        cx.lp.stop();
    });
}

/// The grace period before a drained worker gives up on live connections.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
