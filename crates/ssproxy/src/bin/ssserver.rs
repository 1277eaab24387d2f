//! ssserver: the shadowsocks server on evloop.

// glibc's malloc keeps what a burst of connections freed in the worker's arena; jemalloc,
// configured in .cargo/config.toml, gives it back to the system.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    ssproxy::app::main::<ssproxy::config::ServerArgs>("ssserver")
}
