//! SOCKS5 load generator for the proxy benchmark. Every mode is bounded in
//! time (and count) and prints one `key=value` line on stdout.
//!
//! load bulk     --socks A --target T --bytes N [--timeout 300]
//! load rr       --socks A --target T --conns 100 --size 64 --secs 5 [--max-reqs 50000000]
//! load connrate --socks A --target T --concurrency 32 --size 64 --secs 5 [--max-conns 1000000]
//! load idle     --socks A --target T --conns 5000 --concurrency 200 [--hold 120]
//!     opens the connections (handshake + one echo each), prints `READY ...`, then
//!     holds them until stdin has a line or is closed, or --hold seconds pass.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use proxybench::{
    ERR, Epoll, IN, OUT, SOCKS_GREETING, arg, connect_nonblocking, parse_args, quantile, raise_nofile, raw,
    socks_reply_len, socks_request,
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first().cloned() else {
        eprintln!("usage: load bulk|rr|connrate|idle --socks ADDR --target ADDR ...");
        std::process::exit(2);
    };
    let a = parse_args(&args[1..]);
    raise_nofile();
    let result = match mode.as_str() {
        "bulk" => bulk(&a),
        "rr" => engine(&a, Kind::Rr),
        "connrate" => engine(&a, Kind::ConnRate),
        "idle" => engine(&a, Kind::Idle),
        m => {
            eprintln!("unknown mode {m}");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("load {mode}: {e}");
        std::process::exit(1);
    }
}

/// Blocking SOCKS5 CONNECT through `socks` to `target`.
fn socks_connect(socks: SocketAddr, target: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&socks, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    s.write_all(&SOCKS_GREETING)?;
    let mut m = [0u8; 2];
    s.read_exact(&mut m)?;
    if m != [5, 0] {
        return Err(io::Error::other(format!("SOCKS5 method reply {m:?}")));
    }
    s.write_all(&socks_request(target))?;
    let mut rep = Vec::new();
    let mut b = [0u8; 64];
    loop {
        if let Some(len) = socks_reply_len(&rep)? {
            if rep.len() != len {
                return Err(io::Error::other("bytes after the SOCKS5 reply"));
            }
            return Ok(s);
        }
        let n = s.read(&mut b)?;
        if n == 0 {
            return Err(io::Error::other("EOF in SOCKS5 reply"));
        }
        rep.extend_from_slice(&b[..n]);
    }
}

fn bulk(a: &HashMap<String, String>) -> io::Result<()> {
    let socks: SocketAddr = arg(a, "socks", None);
    let target: SocketAddr = arg(a, "target", None);
    let bytes: u64 = arg(a, "bytes", None);
    let timeout = Duration::from_secs(arg(a, "timeout", Some(300)));
    let chunk: usize = arg(a, "chunk", Some(64 * 1024));
    let mut s = socks_connect(socks, target, timeout)?;
    let start = Instant::now();
    let mut hdr = vec![b'D'];
    hdr.extend_from_slice(&bytes.to_le_bytes());
    s.write_all(&hdr)?;
    let buf: Vec<u8> = (0..chunk).map(|i| (i * 131 % 251) as u8).collect();
    let mut left = bytes;
    while left > 0 {
        if start.elapsed() > timeout {
            return Err(io::Error::other("bulk: timed out"));
        }
        let n = left.min(chunk as u64) as usize;
        s.write_all(&buf[..n])?;
        left -= n as u64;
    }
    let mut ack = [0u8; 8];
    s.read_exact(&mut ack)?;
    let secs = start.elapsed().as_secs_f64();
    if u64::from_le_bytes(ack) != bytes {
        return Err(io::Error::other("bulk: wrong acknowledgement"));
    }
    println!("bytes={bytes} secs={secs:.4} mbps={:.2}", bytes as f64 / secs / 1e6);
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rr,
    ConnRate,
    Idle,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum St {
    Connecting,
    WaitMethod,
    WaitReply,
    WaitEcho,
    Idle,
}

struct Conn {
    s: TcpStream,
    st: St,
    rx: Vec<u8>,
    /// When the current request (rr) or connection (connrate) started.
    t0: Instant,
    first: bool,
}

const STDIN_KEY: u64 = u64::MAX;

/// Event-driven engine shared by rr, connrate and idle.
fn engine(a: &HashMap<String, String>, kind: Kind) -> io::Result<()> {
    let socks: SocketAddr = arg(a, "socks", None);
    let target: SocketAddr = arg(a, "target", None);
    let size: usize = arg(a, "size", Some(64));
    let secs: f64 = arg(a, "secs", Some(5.0));
    let (total_conns, concurrency) = match kind {
        Kind::Rr => {
            let n: usize = arg(a, "conns", Some(100));
            (n, n)
        }
        Kind::ConnRate => (arg(a, "max-conns", Some(1_000_000usize)), arg(a, "concurrency", Some(32usize))),
        Kind::Idle => (arg(a, "conns", Some(1000usize)), arg(a, "concurrency", Some(200usize))),
    };
    let max_reqs: u64 = arg(a, "max-reqs", Some(50_000_000));
    let hold = Duration::from_secs(arg(a, "hold", Some(120)));
    // Setting up connections must not take forever either.
    let setup_limit = Duration::from_secs(arg(a, "setup-timeout", Some(120)));
    let size = size.max(1);
    let mut payload: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    payload[0] = b'E';
    let request = socks_request(target);

    let mut ep = Epoll::new()?;
    let mut conns: HashMap<u64, Conn> = HashMap::new();
    let mut next_key = 0u64;
    let mut started = 0usize; // connections opened
    let mut established = 0usize; // connections that completed handshake + first echo (idle/rr)
    let mut done_conns = 0u64; // connrate: completed connections
    let mut reqs = 0u64;
    let mut errors = 0u64;
    let mut lat: Vec<u32> = Vec::with_capacity(1 << 20);
    let begin = Instant::now();
    // rr: the measured window starts once all connections are ready.
    let mut window_start: Option<Instant> = if kind == Kind::ConnRate { Some(begin) } else { None };
    let mut ready_printed = false;
    let mut buf = vec![0u8; 64 * 1024];
    let mut last_err = String::new();

    let open = |ep: &Epoll, conns: &mut HashMap<u64, Conn>, next_key: &mut u64| -> io::Result<()> {
        let s = connect_nonblocking(socks)?;
        *next_key += 1;
        ep.add(raw(&s), OUT, *next_key)?;
        conns.insert(
            *next_key,
            Conn {
                s,
                st: St::Connecting,
                rx: Vec::new(),
                t0: Instant::now(),
                first: true,
            },
        );
        Ok(())
    };

    loop {
        let now = Instant::now();
        // Bounds: time and count.
        let finished = match kind {
            Kind::Rr => match window_start {
                Some(w) => now - w >= Duration::from_secs_f64(secs) || reqs >= max_reqs,
                None => now - begin > setup_limit,
            },
            Kind::ConnRate => now - begin >= Duration::from_secs_f64(secs) || done_conns as usize >= total_conns,
            Kind::Idle => match window_start {
                Some(w) => now - w >= hold,
                None => now - begin > setup_limit,
            },
        };
        if finished {
            break;
        }
        // Keep `concurrency` connections in progress.
        let in_progress = conns.values().filter(|c| c.st != St::Idle).count();
        let mut to_open = concurrency.saturating_sub(in_progress);
        if kind != Kind::ConnRate {
            to_open = to_open.min(total_conns - started);
        }
        for _ in 0..to_open {
            match open(&ep, &mut conns, &mut next_key) {
                Ok(()) => started += 1,
                Err(e) => {
                    errors += 1;
                    last_err = e.to_string();
                    break;
                }
            }
        }
        if kind == Kind::Rr && window_start.is_none() && established == total_conns {
            // All connected and warmed by one echo each: start the clock and
            // fire one request on every connection.
            let w = Instant::now();
            window_start = Some(w);
            for c in conns.values_mut() {
                c.t0 = w;
                (&c.s).write_all(&payload)?;
                c.st = St::WaitEcho;
            }
            lat.clear();
        }
        if kind == Kind::Idle && !ready_printed && established + errors as usize >= total_conns {
            println!(
                "READY established={established} errors={errors} setup_secs={:.3}",
                begin.elapsed().as_secs_f64()
            );
            io::stdout().flush()?;
            ready_printed = true;
            window_start = Some(Instant::now());
            let _ = ep.add(0, IN, STDIN_KEY);
        }
        let events = ep.wait(Duration::from_millis(50))?;
        for (key, ev) in events {
            if key == STDIN_KEY {
                // A line or EOF on stdin releases an idle hold.
                let _ = io::stdin().read(&mut buf);
                println!("idle: released; held {established} connections");
                return Ok(());
            }
            let Some(c) = conns.get_mut(&key) else { continue };
            let was_connecting = c.st == St::Connecting;
            let outcome = step(c, ev, kind, &payload, &request, &mut buf);
            if was_connecting && c.st != St::Connecting {
                ep.modify(raw(&c.s), IN, key)?;
            }
            match outcome {
                Ok(Step::Continue) => {}
                Ok(Step::Echoed) => {
                    let us = c.t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
                    match kind {
                        Kind::Rr => {
                            if c.first {
                                c.first = false;
                                established += 1;
                                c.st = St::Idle;
                            } else {
                                reqs += 1;
                                lat.push(us);
                                c.t0 = Instant::now();
                                (&c.s).write_all(&payload)?;
                                c.st = St::WaitEcho;
                            }
                        }
                        Kind::ConnRate => {
                            done_conns += 1;
                            lat.push(us);
                            ep.delete(raw(&c.s));
                            conns.remove(&key);
                        }
                        Kind::Idle => {
                            established += 1;
                            c.st = St::Idle;
                            c.rx = Vec::new();
                        }
                    }
                }
                Err(e) => {
                    errors += 1;
                    last_err = format!("{:?}: {e}", c.st);
                    ep.delete(raw(&c.s));
                    conns.remove(&key);
                    if kind != Kind::ConnRate {
                        // rr and idle need exactly their connections: report and stop.
                        if kind == Kind::Rr && window_start.is_none() {
                            return Err(io::Error::other(format!("connection setup failed: {last_err}")));
                        }
                    }
                }
            }
        }
    }
    let elapsed = window_start.map_or(0.0, |w| w.elapsed().as_secs_f64());
    lat.sort_unstable();
    match kind {
        Kind::Rr => println!(
            "reqs={reqs} secs={elapsed:.4} rps={:.1} p50_us={} p99_us={} p999_us={} errors={errors} last_error={:?}",
            reqs as f64 / elapsed.max(1e-9),
            quantile(&lat, 0.5),
            quantile(&lat, 0.99),
            quantile(&lat, 0.999),
            last_err
        ),
        Kind::ConnRate => println!(
            "conns={done_conns} secs={elapsed:.4} cps={:.1} p50_us={} p99_us={} errors={errors} last_error={:?}",
            done_conns as f64 / elapsed.max(1e-9),
            quantile(&lat, 0.5),
            quantile(&lat, 0.99),
            last_err
        ),
        Kind::Idle => {
            if !ready_printed {
                println!("READY established={established} errors={errors} setup_secs=timeout last_error={last_err:?}");
            }
            println!("idle: hold ended; held {established} connections");
        }
    }
    Ok(())
}

enum Step {
    Continue,
    /// A full echo of the payload arrived.
    Echoed,
}

fn step(c: &mut Conn, ev: u32, kind: Kind, payload: &[u8], request: &[u8], buf: &mut [u8]) -> io::Result<Step> {
    if c.st == St::Connecting {
        if ev & (OUT | ERR) == 0 {
            return Ok(Step::Continue);
        }
        if let Some(e) = c.s.take_error()? {
            return Err(e);
        }
        (&c.s).write_all(&SOCKS_GREETING)?;
        c.st = St::WaitMethod;
        return Ok(Step::Continue);
    }
    // Read what is there.
    loop {
        match (&c.s).read(buf) {
            Ok(0) => return Err(io::Error::other("closed by the proxy")),
            Ok(n) => {
                c.rx.extend_from_slice(&buf[..n]);
                if n < buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    loop {
        match c.st {
            St::Connecting => unreachable!(),
            St::WaitMethod => {
                if c.rx.len() < 2 {
                    return Ok(Step::Continue);
                }
                if c.rx[..2] != [5, 0] {
                    return Err(io::Error::other(format!("SOCKS5 method reply {:?}", &c.rx[..2])));
                }
                c.rx.drain(..2);
                (&c.s).write_all(request)?;
                c.st = St::WaitReply;
            }
            St::WaitReply => {
                let Some(len) = socks_reply_len(&c.rx)? else {
                    return Ok(Step::Continue);
                };
                c.rx.drain(..len);
                // Every mode's first exchange: one echo of the payload.
                if kind == Kind::Rr {
                    c.t0 = Instant::now();
                }
                (&c.s).write_all(payload)?;
                c.st = St::WaitEcho;
            }
            St::WaitEcho => {
                if c.rx.len() < payload.len() {
                    return Ok(Step::Continue);
                }
                if c.rx[..payload.len()] != *payload {
                    return Err(io::Error::other("echo mismatch"));
                }
                c.rx.drain(..payload.len());
                return Ok(Step::Echoed);
            }
            St::Idle => {
                if !c.rx.is_empty() {
                    return Err(io::Error::other("unexpected bytes on an idle connection"));
                }
                return Ok(Step::Continue);
            }
        }
    }
}
