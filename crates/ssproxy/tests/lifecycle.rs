//! The programs as a user runs them: configuration errors, signals, URLs, logs.

#![allow(unsafe_code)] // a test: it calls libc directly (fds, signals, limits)

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use ssproxy::protocol::Address;
use ssproxy::protocol::socks5::Command as SocksCommand;

#[test]
fn bad_config_names_the_field_and_exits_2() {
    let cases: [(&[&str], &str); 3] = [
        (
            &["-p", "70000", "-k", "x", "-m", "aes-256-gcm"],
            "\"server_port\": 70000 is not a port",
        ),
        (
            &["-p", "8388", "-k", "x", "-m", "rc4-md5"],
            "\"method\": unknown cipher \"rc4-md5\"",
        ),
        (
            &["-p", "8388", "-k", "short", "-m", "2022-blake3-aes-128-gcm"],
            "\"password\"",
        ),
    ];
    for (args, expected) in cases {
        let out = Command::new(ours("ssserver")).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let config = std::env::temp_dir().join(format!("ssproxy-bad-{}.json", std::process::id()));
    std::fs::write(&config, "{\"server_port\": 8388,\n \"password\": }").unwrap();
    let out = Command::new(ours("ssserver")).arg("-c").arg(&config).output().unwrap();
    let _ = std::fs::remove_file(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("line 2"), "JSON errors give the line: {stderr}");
}

#[test]
fn sigterm_stops_promptly() {
    let port = free_port();
    let mut server = server(Impl::Ours, "aes-128-gcm", "pw", port, true);
    let start = Instant::now();
    let status = server
        .signal_and_wait(libc::SIGTERM, Duration::from_secs(5))
        .expect("exited after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
}

/// SIGQUIT: stop accepting, let the live connection finish, then exit.
#[test]
fn sigquit_drains_live_connections() {
    let dest = TcpListener::bind("127.0.0.1:0").unwrap();
    let dest_port = dest.local_addr().unwrap().port();
    let (server_port, local_port) = (free_port(), free_port());
    let mut server = server(Impl::Ours, "aes-256-gcm", "pw", server_port, false);
    let _local = local(Impl::Ours, "aes-256-gcm", "pw", server_port, local_port, false);

    let target = Address::from(dest.local_addr().unwrap());
    let (mut client, _) = socks_request(local_port, SocksCommand::Connect, &target).unwrap();
    client.write_all(b"ping").unwrap();
    let (mut upstream, _) = dest.accept().unwrap();
    let mut buf = [0u8; 4];
    upstream.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");

    // SAFETY: kill only signals our own child.
    unsafe { libc::kill(server.pid() as i32, libc::SIGQUIT) };
    // The listener closes: new connections to the server are refused...
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", server_port)).is_ok() {
        assert!(Instant::now() < deadline, "still accepting 5 s after SIGQUIT");
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...but the live connection still works both ways.
    upstream.write_all(b"pong").unwrap();
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
    let _ = dest_port;
    drop(upstream);
    drop(client);
    let status = server
        .signal_and_wait(0, Duration::from_secs(10))
        .expect("exited once the connection ended");
    assert!(status.success(), "{status:?}");
}

#[test]
fn password_never_reaches_the_logs() {
    let http = HttpServer::start();
    let password = "very-secret-password-1234";
    let (server_port, local_port) = (free_port(), free_port());
    let server = our_server("trace", "aes-128-gcm", password, server_port, &["-vv"]);
    let local = our_local("trace", "aes-128-gcm", password, server_port, local_port, &["-vv"]);
    let page = curl_socks(local_port, &format!("http://127.0.0.1:{}/small", http.port));
    assert_eq!(page, *http.small);
    for p in [&server, &local] {
        let log = p.log_text();
        assert!(log.contains("listening"), "{} logged: {log}", p.name);
        assert!(!log.contains(password), "{} logged the password", p.name);
    }
}

#[test]
fn sip002_url_configures_the_local() {
    let http = HttpServer::start();
    let (server_port, local_port) = (free_port(), free_port());
    let _server = server(Impl::Ours, "chacha20-ietf-poly1305", "url-pw", server_port, false);
    // base64url("chacha20-ietf-poly1305:url-pw"), as SIP002 writes it.
    use base64::Engine;
    let userinfo = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("chacha20-ietf-poly1305:url-pw");
    let url = format!("ss://{userinfo}@127.0.0.1:{server_port}#test");
    let _local = Proc::spawn(
        "sslocal-url",
        &ours("sslocal"),
        &["--server-url", &url, "-l", &local_port.to_string()],
    );
    wait_for_port(local_port);
    let page = curl_socks(local_port, &format!("http://127.0.0.1:{}/small", http.port));
    assert_eq!(page, *http.small);
}

#[test]
fn forbidden_destination_is_refused_by_default() {
    let http = HttpServer::start();
    let (server_port, local_port) = (free_port(), free_port());
    let sp = server_port.to_string();
    // No --forbidden-ip: loopback destinations are refused.
    let _server = Proc::spawn(
        "ssserver-default",
        &ours("ssserver"),
        &["-s", "127.0.0.1", "-p", &sp, "-k", "pw", "-m", "aes-128-gcm", "-v"],
    );
    wait_for_port(server_port);
    let _local = local(Impl::Ours, "aes-128-gcm", "pw", server_port, local_port, false);
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            "--socks5-hostname",
            &format!("127.0.0.1:{local_port}"),
        ])
        .arg(format!("http://127.0.0.1:{}/small", http.port))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "a loopback destination was reached");
}

#[test]
fn tunnel_mode_relays_to_the_fixed_destination() {
    let http = HttpServer::start();
    let (server_port, local_port) = (free_port(), free_port());
    let _server = server(Impl::Ours, "aes-256-gcm", "pw", server_port, false);
    let (sp, lp, dest) = (
        server_port.to_string(),
        local_port.to_string(),
        format!("127.0.0.1:{}", http.port),
    );
    let _local = Proc::spawn(
        "sslocal-tunnel",
        &ours("sslocal"),
        &[
            "-s",
            "127.0.0.1",
            "-p",
            &sp,
            "-k",
            "pw",
            "-m",
            "aes-256-gcm",
            "-l",
            &lp,
            "--tunnel",
            &dest,
        ],
    );
    wait_for_port(local_port);
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", &format!("http://127.0.0.1:{lp}/blob")])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(sha256(&out.stdout), sha256(&http.blob));
}

/// A half-close is relayed, not turned into a teardown: the client shuts down its
/// sending side, the destination sees end-of-file, and its answer still arrives.
#[test]
fn half_close_is_relayed_both_ways() {
    let dest = TcpListener::bind("127.0.0.1:0").unwrap();
    let (server_port, local_port) = (free_port(), free_port());
    let _server = server(Impl::Ours, "chacha20-ietf-poly1305", "pw", server_port, false);
    let _local = local(
        Impl::Ours,
        "chacha20-ietf-poly1305",
        "pw",
        server_port,
        local_port,
        false,
    );
    let (mut client, _) = socks_request(
        local_port,
        SocksCommand::Connect,
        &Address::from(dest.local_addr().unwrap()),
    )
    .unwrap();
    let request = random_bytes(300_000, 11);
    client.write_all(&request).unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();

    let (mut upstream, _) = dest.accept().unwrap();
    upstream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    upstream.read_to_end(&mut got).unwrap(); // ends only if the FIN was relayed
    assert_eq!(sha256(&got), sha256(&request));
    let answer = random_bytes(500_000, 12);
    upstream.write_all(&answer).unwrap();
    drop(upstream);

    let mut back = Vec::new();
    client.read_to_end(&mut back).unwrap();
    assert_eq!(
        sha256(&back),
        sha256(&answer),
        "the answer after the half-close arrived intact"
    );
}

/// IPv6: the server and the local on ::1, destinations over IPv6 and IPv4.
#[test]
fn ipv6_listeners_and_destinations() {
    let Ok(dest6) = TcpListener::bind("[::1]:0") else {
        panic!("this machine has no IPv6 loopback; the IPv6 test cannot run");
    };
    let http = HttpServer::start();
    let (server_port, local_port) = (free_port(), free_port());
    let _server = our_server_on(V6, "v6", "aes-128-gcm", "pw", server_port, &["-v"]);
    let _local = our_local_on(V6, "v6", "aes-128-gcm", "pw", server_port, local_port, &["-v"]);
    // An IPv4 destination through an all-IPv6 proxy.
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "10",
            "--socks5-hostname",
            &format!("[::1]:{local_port}"),
        ])
        .arg(format!("http://127.0.0.1:{}/small", http.port))
        .output()
        .unwrap();
    assert_eq!(out.stdout, *http.small);
    // An IPv6 destination.
    let target = Address::from(dest6.local_addr().unwrap());
    let mut control = TcpStream::connect(("::1", local_port)).unwrap();
    control.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut hello = Vec::new();
    ssproxy::protocol::socks5::write_greeting(&[ssproxy::protocol::socks5::METHOD_NO_AUTH], &mut hello);
    ssproxy::protocol::socks5::write_request(SocksCommand::Connect, &target, &mut hello);
    control.write_all(&hello).unwrap();
    let mut reply = [0u8; 2 + 10];
    control.read_exact(&mut reply[..2]).unwrap();
    let (mut upstream, from) = dest6.accept().unwrap();
    assert!(from.is_ipv6());
    upstream.write_all(b"over v6").unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64];
    while !buf.ends_with(b"over v6") {
        let n = control.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before the data arrived");
        buf.extend_from_slice(&chunk[..n]);
    }
}
