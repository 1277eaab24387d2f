//! What `ssserver` and `sslocal` share: from a loaded [`Config`] to running
//! workers, and signal handling on the main thread.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use evloop::{EventLoop, POLL_IN};

use crate::config::{Config, Host, Role as ConfigRole};
use crate::crypto::{Key, Method, PingPongBloom, SaltPool};
use crate::dns::{AddressOrder, ResolverConfig};
use crate::protocol::Address;
use crate::relay::udp::UdpShared;
use crate::relay::worker::{self, Command, DEFAULT_GRACE, Listen, WorkerHandle};
use crate::relay::{Role, Shared};

/// The longest a connect to a destination may take.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Salts remembered for replay protection (per filter of the pair), and the
/// false-positive rate: about 2 × 3.4 MiB, as shadowsocks-libev's, resident from
/// start-up on a SIP004 server (see [`PingPongBloom::make_resident`]).
const REPLAY_CAPACITY: usize = 1_000_000;
const REPLAY_FP_RATE: f64 = 1e-6;

/// The whole of `ssserver` and `sslocal`: parse the flags, load the
/// configuration (a bad one exits with status 2, naming the field), run.
pub fn main<A: clap::Parser + crate::config::ProgramArgs>(program: &str) -> std::process::ExitCode {
    let args = A::parse();
    let config = match Config::load(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{program}: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    init_logging(config.verbose);
    match run(config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{program}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Set up logging: `-v` for debug, `-vv` for trace; `RUST_LOG` overrides.
pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_millis()
        .init();
}

fn resolve_host(host: &Host, port: u16) -> io::Result<Vec<SocketAddr>> {
    match host {
        Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, port)]),
        // Start-up only: blocking here is fine, the loops are not running yet.
        Host::Name(name) => (name.as_str(), port)
            .to_socket_addrs()
            .map(|addrs| addrs.collect())
            .map_err(|e| io::Error::new(e.kind(), format!("resolving {name}: {e}"))),
    }
}

/// sslocal's SOCKS5 has no authentication (nor has a tunnel): listening beyond loopback lets
/// anyone who can reach the port use the server, and its key, as their own.
fn warn_if_open_to_others(listen: &[SocketAddr], tunnel: Option<&Address>) {
    for addr in listen.iter().filter(|a| !a.ip().to_canonical().is_loopback()) {
        let what = match tunnel {
            Some(t) => format!("a tunnel to {t}"),
            None => "SOCKS5 without authentication".to_owned(),
        };
        log::warn!(
            "sslocal listens on {addr}, which is not a loopback address, and offers {what}: anyone \
             who can reach that port can use your server; bind to 127.0.0.1 (-b / local_address) \
             unless that is what you want"
        );
    }
}

/// Build everything from the configuration and run until a signal ends it.
pub fn run(config: Config) -> io::Result<()> {
    config.log_warnings();
    let method: Method = config.method.parse().map_err(io::Error::from)?;
    let key = Key::new(method, &config.password).map_err(io::Error::from)?;
    let (role, listen_addrs) = match config.role {
        ConfigRole::Server => {
            let mut addrs = Vec::new();
            for host in &config.server {
                addrs.extend(resolve_host(host, config.server_port)?);
            }
            (Role::Server, addrs)
        }
        ConfigRole::Local => {
            let server = resolve_host(&config.server[0], config.server_port)?
                .into_iter()
                .next()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the server has no address"))?;
            let local = config
                .local_address
                .clone()
                .expect("sslocal configs have local_address");
            let listen = resolve_host(&local, config.local_port.expect("sslocal configs have local_port"))?;
            (
                Role::Local {
                    server,
                    tunnel: config.tunnel_address.clone(),
                },
                listen,
            )
        }
    };
    if let Role::Local { tunnel, .. } = &role {
        warn_if_open_to_others(&listen_addrs, tunnel.as_ref());
    }
    let mut resolver = ResolverConfig::default();
    if !config.nameservers.is_empty() {
        resolver.nameservers = config.nameservers.clone();
    } else if matches!(role, Role::Local { .. }) {
        // The local never resolves destinations (the server does); do not depend
        // on the machine's resolv.conf for a resolver that will stay unused.
        resolver.nameservers = vec![SocketAddr::from(([127, 0, 0, 1], 53))];
    }
    if config.ipv6_first {
        resolver.order = AddressOrder::Ipv6First;
    }
    if let Some(ttl) = config.dns_cache_max_ttl {
        resolver.cache_max_ttl = ttl;
    }
    if let Some(cap) = config.dns_max_queries_per_client {
        resolver.max_queries_per_client = cap;
    }
    let mut replay = PingPongBloom::new(REPLAY_CAPACITY, REPLAY_FP_RATE);
    // SIP022 salts go to the salt pool instead; where the filter is never consulted its
    // zeroed pages stay untouched and cost nothing. A local records its own salts and checks
    // the server's, one per stream: its pages fill in slowly, so it is left lazy.
    if matches!(role, Role::Server) && !method.is_2022() {
        replay.make_resident();
    }
    let shared = Arc::new(Shared {
        role: role.clone(),
        key,
        idle_timeout: config.timeout,
        connect_timeout: config.timeout.min(MAX_CONNECT_TIMEOUT),
        forbidden: config.forbidden_ip.clone(),
        replay: Mutex::new(replay),
        salt_pool: Mutex::new(SaltPool::default()),
        udp: config.mode.udp_enabled(),
        udp_shared: UdpShared::new(config.udp_max_associations),
        tcp: config.mode.tcp_enabled(),
        grace: DEFAULT_GRACE,
    });

    // Signals first: the signalfd blocks them in this thread, and the workers
    // spawned below inherit that mask, so every signal comes to this loop.
    let mut lp: EventLoop<Vec<WorkerHandle>> = EventLoop::new()?;
    lp.add_signals(&[libc::SIGINT, libc::SIGTERM, libc::SIGQUIT], |cx, signal| {
        let command = if signal == libc::SIGQUIT {
            Command::Drain
        } else {
            Command::Stop
        };
        log::info!(
            "signal {signal}: {}",
            if command == Command::Drain {
                "draining"
            } else {
                "stopping"
            }
        );
        for worker in cx.data.iter_mut() {
            worker.send(command);
        }
    })?;

    let workers = config
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let listen = Listen {
        addrs: listen_addrs.clone(),
        resolver,
    };
    let mut handles = Vec::with_capacity(workers);
    for index in 0..workers {
        let handle = worker::spawn(index, Arc::clone(&shared), &listen)?;
        // A worker's end of the control socket closes when its thread ends.
        let watch = handle.control_watch()?;
        lp.add(
            watch,
            POLL_IN,
            move |cx, watch: &mut std::os::unix::net::UnixStream, me, _| {
                let mut byte = [0u8; 1];
                match io::Read::read(watch, &mut byte) {
                    Ok(0) | Err(_) => {
                        log::debug!("worker {index} ended");
                        cx.lp.remove(me)?;
                        // What is left registered is the signal source: every worker ended.
                        if cx.lp.len() <= 1 {
                            cx.lp.stop();
                        }
                    }
                    Ok(_) => {}
                }
                Ok(())
            },
        )?;
        handles.push(handle);
    }
    let what = match &role {
        Role::Server => "ssserver".to_string(),
        Role::Local { server, tunnel: None } => format!("sslocal (SOCKS5) via {server}"),
        Role::Local {
            server,
            tunnel: Some(t),
        } => format!("sslocal (tunnel to {t}) via {server}"),
    };
    let addrs: Vec<String> = listen_addrs.iter().map(|a| Address::from(*a).to_string()).collect();
    log::info!(
        "{what} listening on {} ({}, {}, {workers} workers, {})",
        addrs.join(", "),
        config.mode.as_str(),
        method,
        lp.backend()
    );
    lp.run(&mut handles)?;
    let mut result = Ok(());
    for handle in &mut handles {
        handle.send(Command::Stop);
    }
    for handle in &mut handles {
        if let Err(e) = handle.join() {
            result = Err(e);
        }
    }
    log::info!("{what} stopped");
    result
}
