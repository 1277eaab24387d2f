//! Names the platforms of each kernel poller once, as `cfg(epoll)` and `cfg(kqueue)`,
//! instead of a list of operating systems at every place the poller chooses its
//! backends. (signalfd and eventfd, Linux features rather than epoll ones, keep
//! their own `target_os` test in `signal.rs` and `waker.rs`.)

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(epoll, kqueue)");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if matches!(os.as_str(), "linux" | "android") {
        println!("cargo::rustc-cfg=epoll");
    }
    if matches!(
        os.as_str(),
        "macos" | "ios" | "freebsd" | "netbsd" | "openbsd" | "dragonfly"
    ) {
        println!("cargo::rustc-cfg=kqueue");
    }
}
