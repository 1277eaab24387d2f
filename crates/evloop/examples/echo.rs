//! A TCP echo server on evloop.
//!
//! ```text
//! cargo run -p evloop --example echo -- 127.0.0.1:7007
//! ```
//!
//! Every connection echoes what it receives. A client that stops reading gets
//! back-pressure, as the original proxy does it: the server stops reading from it
//! (drops `POLL_IN`) until the pending bytes are written (`POLL_OUT`). Idle
//! connections are swept by a periodic callback; SIGINT or SIGTERM stops the
//! server cleanly. Set `EVLOOP_BACKEND=poll` (or `select`) to try another backend.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use evloop::{Builder, Ctx, EventLoop, Events, POLL_IN, POLL_OUT, Token};

/// Close connections idle for longer than this.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Stop reading from a client once this much is waiting to be written back.
const MAX_PENDING: usize = 256 * 1024;

#[derive(Default)]
struct Server {
    connections: HashMap<Token, Connection>,
}

#[derive(Default)]
struct Connection {
    pending: Vec<u8>,
    last_active: Option<Instant>,
}

fn on_accept(cx: &mut Ctx<'_, Server>, listener: &mut TcpListener, _: Token, _: Events) -> io::Result<()> {
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        };
        stream.set_nonblocking(true)?;
        let token = cx.lp.add(stream, POLL_IN, on_client)?;
        log::info!("{peer} connected as {token}");
        cx.data.connections.insert(
            token,
            Connection {
                pending: Vec::new(),
                last_active: Some(Instant::now()),
            },
        );
    }
}

fn on_client(cx: &mut Ctx<'_, Server>, stream: &mut TcpStream, token: Token, events: Events) -> io::Result<()> {
    let Some(conn) = cx.data.connections.get_mut(&token) else {
        return cx.lp.remove(token);
    };
    conn.last_active = Some(Instant::now());
    let mut open = true;
    if events.is_readable() || events.is_hup() || events.is_error() {
        let mut buf = [0u8; 16 * 1024];
        while conn.pending.len() < MAX_PENDING {
            match stream.read(&mut buf) {
                Ok(0) => {
                    open = false;
                    break;
                }
                Ok(n) => conn.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::info!("{token}: {e}");
                    open = false;
                    break;
                }
            }
        }
    }
    while !conn.pending.is_empty() {
        match stream.write(&conn.pending) {
            Ok(n) => {
                conn.pending.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                log::info!("{token}: {e}");
                open = false;
                break;
            }
        }
    }
    if !open {
        cx.data.connections.remove(&token);
        log::info!("{token} closed");
        return cx.lp.remove(token);
    }
    // Back-pressure: while bytes wait, watch for room to write instead of reading more.
    let mode = if conn.pending.len() >= MAX_PENDING {
        POLL_OUT
    } else if conn.pending.is_empty() {
        POLL_IN
    } else {
        POLL_IN | POLL_OUT
    };
    cx.lp.modify(token, mode)
}

fn sweep_idle(cx: &mut Ctx<'_, Server>) {
    let now = Instant::now();
    let idle: Vec<Token> = cx
        .data
        .connections
        .iter()
        .filter(|(_, c)| c.last_active.is_some_and(|t| now - t > IDLE_TIMEOUT))
        .map(|(t, _)| *t)
        .collect();
    for token in idle {
        log::info!("{token} idle for over {IDLE_TIMEOUT:?}: closing");
        cx.data.connections.remove(&token);
        let _ = cx.lp.remove(token);
    }
}

fn main() -> io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7007".to_string());
    let mut lp: EventLoop<Server> = Builder::new().timeout_precision(Duration::from_secs(1)).build()?;
    lp.add_signals(&[libc::SIGINT, libc::SIGTERM], |cx, signal| {
        log::info!(
            "signal {signal}: stopping with {} connections open",
            cx.data.connections.len()
        );
        cx.lp.stop();
    })?;
    let listener = TcpListener::bind(&addr)?;
    listener.set_nonblocking(true)?;
    log::info!("echo server on {} using {}", listener.local_addr()?, lp.backend());
    lp.add(listener, POLL_IN, on_accept)?;
    lp.add_periodic(sweep_idle);
    lp.run(&mut Server::default())
}
