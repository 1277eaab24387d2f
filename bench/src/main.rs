//! The loop benchmark harness: one process per measurement, one JSON line out.
//!
//! ```text
//! evloop-bench pingpong variant=evloop-epoll pairs=1 size=1 idle=0 events=2000000 secs=0.5
//! evloop-bench churn variant=mio ops=2000000 secs=0.5
//! evloop-bench echo-server variant=floor conns=100 secs=30
//! evloop-bench timers impl=evloop mode=fire n=100000
//! ```
//!
//! Variants: `evloop-epoll`, `evloop-poll`, `evloop-select`, `mio`, `floor` (the
//! Python original is driven by `bench/original.py`). `bash bench/run.sh` runs
//! them all and writes the report; see `bench/README.md`.

// A benchmark harness, not the library: its variants make the same raw libc
// calls (`bounce`, the floor's epoll loop), which the workspace's `unsafe_code`
// lint would refuse. Each block still carries its `// SAFETY:` line.
#![allow(unsafe_code)]

mod common;
mod evl;
mod floor;
mod mio_loop;
mod timers;

use std::io::{self, Write};
use std::net::TcpListener;

use evloop::Backend;

use crate::common::{Args, Report, raise_nofile_limit};

enum Variant {
    Evloop(Backend),
    Mio,
    Floor,
}

fn variant(name: &str) -> io::Result<Variant> {
    match name {
        "mio" => Ok(Variant::Mio),
        "floor" => Ok(Variant::Floor),
        _ => match name.strip_prefix("evloop-") {
            Some(backend) => Ok(Variant::Evloop(backend.parse()?)),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown variant {name:?}"),
            )),
        },
    }
}

fn run(command: &str, args: &Args) -> io::Result<()> {
    match command {
        "pingpong" => {
            let pairs = args.num("pairs", 1);
            let size = args.num("size", 1) as usize;
            let idle = args.num("idle", 0);
            let limit = args.num("events", 2_000_000);
            let secs = args.secs("secs", 0.5);
            let measured = match variant(&args.str("variant", "evloop-epoll"))? {
                Variant::Evloop(b) => evl::ping_pong(b, pairs, size, idle, limit, secs)?,
                Variant::Mio => mio_loop::ping_pong(pairs, size, idle, limit, secs)?,
                Variant::Floor => floor::ping_pong(pairs, size, idle, limit, secs)?,
            };
            measured.report().print();
        }
        "churn" => {
            let ops = args.num("ops", 2_000_000);
            let secs = args.secs("secs", 0.5);
            let measured = match variant(&args.str("variant", "evloop-epoll"))? {
                Variant::Evloop(b) => evl::churn(b, ops, secs)?,
                Variant::Mio => mio_loop::churn(ops, secs)?,
                Variant::Floor => floor::churn(ops, secs)?,
            };
            measured.report().print();
        }
        "echo-server" => {
            let conns = args.num("conns", 100);
            let secs = args.secs("secs", 30.0);
            let listener = TcpListener::bind("127.0.0.1:0")?;
            Report::default().num("port", listener.local_addr()?.port()).print();
            io::stdout().flush()?;
            let served = match variant(&args.str("variant", "evloop-epoll"))? {
                Variant::Evloop(b) => evl::echo_server(b, listener, conns, secs)?,
                Variant::Mio => mio_loop::echo_server(listener, conns, secs)?,
                Variant::Floor => floor::echo_server(listener, conns, secs)?,
            };
            Report::default().num("served", served as f64).print();
        }
        "timers" => {
            let n = args.num("n", 100_000);
            let seed = args.num("seed", 1);
            let imp = args.str("impl", "evloop");
            match args.str("mode", "fire").as_str() {
                "fire" => {
                    let (scheduled, fired_in, fired) = match imp.as_str() {
                        "evloop" => evl::timers_fire(n, seed)?,
                        "heap" => timers::heap_fire(n, seed)?,
                        other => return Err(io::Error::other(format!("unknown impl {other}"))),
                    };
                    let total = (scheduled + fired_in).as_secs_f64();
                    Report::default()
                        .num("timers", fired as f64)
                        .num("schedule_secs", scheduled.as_secs_f64())
                        .num("fire_secs", fired_in.as_secs_f64())
                        .num("per_sec", n as f64 / total)
                        .print();
                }
                "cancel" => {
                    let elapsed = match imp.as_str() {
                        "evloop" => evl::timers_cancel(n, seed)?,
                        "heap" => timers::heap_cancel(n, seed)?,
                        other => return Err(io::Error::other(format!("unknown impl {other}"))),
                    };
                    Report::default()
                        .num("timers", n as f64)
                        .num("secs", elapsed.as_secs_f64())
                        .num("per_sec", n as f64 / elapsed.as_secs_f64())
                        .print();
                }
                other => return Err(io::Error::other(format!("unknown mode {other}"))),
            }
        }
        other => return Err(io::Error::other(format!("unknown command {other:?}"))),
    }
    Ok(())
}

fn main() {
    let mut argv = std::env::args().skip(1);
    let command = argv.next().unwrap_or_default();
    let outcome = Args::parse(argv).and_then(|args| {
        raise_nofile_limit()?;
        run(&command, &args)
    });
    if let Err(e) = outcome {
        // A refusal (select and fds >= FD_SETSIZE) is a result to report, not a crash.
        Report::default()
            .text("error", &e.to_string())
            .text("kind", &format!("{:?}", e.kind()))
            .print();
        std::process::exit(2);
    }
}
