//! sslocal: the shadowsocks local (SOCKS5 server and tunnel) on evloop.

fn main() -> std::process::ExitCode {
    ssproxy::app::main::<ssproxy::config::LocalArgs>("sslocal")
}
