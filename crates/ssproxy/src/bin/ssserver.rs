//! ssserver: the shadowsocks server on evloop.

fn main() -> std::process::ExitCode {
    ssproxy::app::main::<ssproxy::config::ServerArgs>("ssserver")
}
