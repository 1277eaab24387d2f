//! Wire compatibility: our sslocal and ssserver against each other and against
//! shadowsocks-libev's ss-local and ss-server (Debian's package, installed by
//! scripts/setup.sh), for every AEAD cipher; SIP022 ours to ours (libev lacks it).
//!
//! Each pairing fetches a small page and a 1 MiB random file with
//! `curl --socks5-hostname` from a loopback HTTP server, checked by SHA-256, and
//! echoes UDP datagrams through SOCKS5 UDP ASSOCIATE.

mod common;

use common::*;

fn tcp_through(local_port: u16, http: &HttpServer) {
    let small = curl_socks(local_port, &format!("http://127.0.0.1:{}/small", http.port));
    assert_eq!(small, *http.small);
    // By name too: the server resolves "localhost" (from /etc/hosts) on its loop.
    let blob = curl_socks(local_port, &format!("http://localhost:{}/blob", http.port));
    assert_eq!(sha256(&blob), sha256(&http.blob), "1 MiB file corrupted");
}

fn udp_through(local_port: u16) {
    let echo = UdpEcho::start();
    let datagrams: Vec<Vec<u8>> = (0..8).map(|i| random_bytes(1 + i * 150, i as u64 + 7)).collect();
    let got = udp_echo_via_socks(local_port, echo.addr, &datagrams);
    assert_eq!(got, datagrams, "every datagram echoed intact");
}

fn pairing(local_impl: Impl, server_impl: Impl, method: &str, password: &str, udp: bool) {
    let http = HttpServer::start();
    let (server_port, local_port) = (free_port(), free_port());
    let _server = server(server_impl, method, password, server_port, udp);
    let _local = local(local_impl, method, password, server_port, local_port, udp);
    tcp_through(local_port, &http);
    if udp {
        udp_through(local_port);
    }
}

macro_rules! aead_pairings {
    ($($name:ident: $method:expr;)*) => {
        $(
            mod $name {
                use super::*;

                #[test]
                fn ours_local_to_ours_server() {
                    pairing(Impl::Ours, Impl::Ours, $method, "interop-secret", true);
                }

                #[test]
                fn ours_local_to_libev_server() {
                    pairing(Impl::Ours, Impl::Libev, $method, "interop-secret", true);
                }

                #[test]
                fn libev_local_to_ours_server() {
                    pairing(Impl::Libev, Impl::Ours, $method, "interop-secret", true);
                }
            }
        )*
    };
}

aead_pairings! {
    aes_128_gcm: AEAD_METHODS[0];
    aes_256_gcm: AEAD_METHODS[1];
    chacha20_ietf_poly1305: AEAD_METHODS[2];
    xchacha20_ietf_poly1305: AEAD_METHODS[3];
}

#[test]
fn sip022_ours_to_ours_tcp_and_udp() {
    for (method, key) in SIP022_METHODS {
        pairing(Impl::Ours, Impl::Ours, method, key, true);
    }
}

#[test]
fn wrong_password_gets_nothing_through() {
    let http = HttpServer::start();
    let (server_port, local_port) = (free_port(), free_port());
    let _server = server(Impl::Ours, "aes-256-gcm", "right", server_port, false);
    let _local = local(Impl::Ours, "aes-256-gcm", "wrong", server_port, local_port, false);
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "3",
            "--socks5-hostname",
            &format!("127.0.0.1:{local_port}"),
        ])
        .arg(format!("http://127.0.0.1:{}/small", http.port))
        .output()
        .unwrap();
    assert!(!out.status.success(), "a wrong password must not fetch the page");
    assert!(out.stdout.is_empty());
}
