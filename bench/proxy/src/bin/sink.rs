//! The benchmark's destination: a single-threaded epoll server on loopback.
//! A stream starting with `D` + u64 LE length is discarded and acknowledged;
//! a stream starting with `E` is echoed back. See the crate docs.
//!
//! Usage: sink --listen 127.0.0.1:PORT [--max-secs 3600]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use proxybench::{ERR, Epoll, IN, OUT, arg, parse_args, raise_nofile, raw};

enum Mode {
    Unknown,
    /// Collecting the 8 length bytes.
    DiscardHeader(Vec<u8>),
    /// Bytes still to discard, and the total to acknowledge.
    Discard { left: u64, total: u64 },
    Echo,
    /// Everything read; only writing remains (ack).
    Done,
}

struct Conn {
    stream: TcpStream,
    mode: Mode,
    out: Vec<u8>,
    out_pos: usize,
}

const LISTENER: u64 = u64::MAX;

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = parse_args(&args);
    let listen: String = arg(&a, "listen", None);
    let max_secs: u64 = arg(&a, "max-secs", Some(3600));
    raise_nofile();
    let listener = TcpListener::bind(&listen)?;
    listener.set_nonblocking(true)?;
    let mut ep = Epoll::new()?;
    ep.add(raw(&listener), IN, LISTENER)?;
    let mut conns: HashMap<u64, Conn> = HashMap::new();
    let mut next_key: u64 = 0;
    let mut buf = vec![0u8; 256 * 1024];
    let end = Instant::now() + Duration::from_secs(max_secs);
    println!("sink listening on {}", listener.local_addr()?);
    while Instant::now() < end {
        for (key, events) in ep.wait(Duration::from_millis(500))? {
            if key == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((s, _)) => {
                            s.set_nonblocking(true)?;
                            s.set_nodelay(true)?;
                            next_key += 1;
                            ep.add(raw(&s), IN, next_key)?;
                            conns.insert(
                                next_key,
                                Conn {
                                    stream: s,
                                    mode: Mode::Unknown,
                                    out: Vec::new(),
                                    out_pos: 0,
                                },
                            );
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            eprintln!("sink: accept: {e}");
                            break;
                        }
                    }
                }
                continue;
            }
            let Some(c) = conns.get_mut(&key) else { continue };
            let close = match service(c, events, &mut buf) {
                Ok(close) => close,
                Err(_) => true,
            };
            if close {
                ep.delete(raw(&c.stream));
                conns.remove(&key);
            } else {
                let want = if c.out_pos < c.out.len() { OUT } else { IN };
                ep.modify(raw(&c.stream), want, key)?;
            }
        }
    }
    Ok(())
}

/// Handle readiness; returns true when the connection should be closed.
fn service(c: &mut Conn, events: u32, buf: &mut [u8]) -> io::Result<bool> {
    if events & OUT != 0 || c.out_pos < c.out.len() {
        if !flush(c)? {
            return Ok(false);
        }
    }
    if events & (IN | ERR) == 0 {
        return Ok(false);
    }
    for _ in 0..4 {
        let n = match (&c.stream).read(buf) {
            Ok(0) => return Ok(true),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut data = &buf[..n];
        while !data.is_empty() {
            match &mut c.mode {
                Mode::Unknown => {
                    match data[0] {
                        b'D' => {
                            c.mode = Mode::DiscardHeader(Vec::new());
                            data = &data[1..];
                        }
                        b'E' => c.mode = Mode::Echo,
                        _ => return Ok(true),
                    }
                }
                Mode::DiscardHeader(h) => {
                    let take = (8 - h.len()).min(data.len());
                    h.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if h.len() == 8 {
                        let total = u64::from_le_bytes(h[..8].try_into().unwrap());
                        c.mode = Mode::Discard { left: total, total };
                        if total == 0 {
                            c.out.extend_from_slice(&0u64.to_le_bytes());
                            c.mode = Mode::Done;
                        }
                    }
                }
                Mode::Discard { left, total } => {
                    let take = (*left).min(data.len() as u64) as usize;
                    *left -= take as u64;
                    data = &data[take..];
                    if *left == 0 {
                        c.out.extend_from_slice(&total.to_le_bytes());
                        c.mode = Mode::Done;
                    }
                }
                Mode::Echo => {
                    c.out.extend_from_slice(data);
                    data = &[];
                }
                Mode::Done => data = &[],
            }
        }
        if c.out_pos < c.out.len() && !flush(c)? {
            return Ok(false);
        }
        if n < buf.len() {
            break;
        }
    }
    Ok(false)
}

/// Write queued bytes; true when all are out.
fn flush(c: &mut Conn) -> io::Result<bool> {
    while c.out_pos < c.out.len() {
        match (&c.stream).write(&c.out[c.out_pos..]) {
            Ok(n) => c.out_pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    c.out.clear();
    c.out_pos = 0;
    Ok(true)
}
