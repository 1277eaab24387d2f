//! Writes the seed corpora: a few valid inputs per target, encrypted with the fixed keys and
//! clock of `ssproxy_fuzz`. Usage: `gen_corpus <corpus dir>` (see ../gen_corpus.sh).
//! Salts are fixed where the API allows it; SIP004 packets and SIP022 padding are random, so
//! regenerating changes those files but not their validity.

use std::fs;
use std::path::{Path, PathBuf};

use ssproxy::crypto::{Encryptor, RequestEncryptor, ResponseEncryptor, UdpCipher, UdpSender, encrypt_packet};
use ssproxy::protocol::Address;
use ssproxy::protocol::socks5::{self, Command};
use ssproxy_fuzz::{CLIENT_SESSION_ID, SIP004, SIP022, fixed_clock, key, request_salt, write_pieces, write_record};

fn save(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join(name), bytes).unwrap();
}

fn addr(text: &str) -> Address {
    text.parse().unwrap()
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: gen_corpus <corpus dir>"));
    let targets = [addr("127.0.0.1:80"), addr("[::1]:8388"), addr("example.com:443")];

    // socks5: greeting + request, as applications send them.
    for (i, (methods, command, target)) in [
        (&[0u8][..], Command::Connect, &targets[0]),
        (&[0, 2][..], Command::Connect, &targets[2]),
        (&[1, 2, 0][..], Command::UdpAssociate, &targets[1]),
        (&[2][..], Command::Bind, &targets[0]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut b = Vec::new();
        socks5::write_greeting(methods, &mut b);
        socks5::write_request(command, target, &mut b);
        save(&dir, "socks5", &format!("request-{i}"), &b);
    }
    save(&dir, "socks5", "socks4", &[4, 1, 0, 80, 127, 0, 0, 1, 0]);
    save(&dir, "socks5", "udp", &socks5::build_udp_packet(&targets[2], b"ping"));

    // dns_answer: an order byte, then answers as nameservers send them (A; AAAA; a CNAME
    // then an A; NXDOMAIN), each to a query for a.example.
    let question = b"\x01a\x07example\x00";
    let answer = |qtype: u8, rcode: u8, records: &[(u8, &[u8])]| {
        let mut m = vec![0x12, 0x34, 0x81, 0x80 | rcode, 0, 1, 0, records.len() as u8, 0, 0, 0, 0];
        m.extend_from_slice(question);
        m.extend_from_slice(&[0, qtype, 0, 1]);
        for (rtype, data) in records {
            m.extend_from_slice(&[0xc0, 12, 0, *rtype, 0, 1, 0, 0, 0x0e, 0x10, 0, data.len() as u8]);
            m.extend_from_slice(data);
        }
        m
    };
    let v6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let cname = b"\x01b\xc0\x0e";
    for (i, (order, message)) in [
        (0u8, answer(1, 0, &[(1, &[192, 0, 2, 1]), (1, &[192, 0, 2, 2])])),
        (1, answer(28, 0, &[(28, &v6)])),
        (2, answer(1, 0, &[(5, cname), (1, &[192, 0, 2, 3])])),
        (3, answer(1, 3, &[])),
    ]
    .into_iter()
    .enumerate()
    {
        let mut seed = vec![order];
        seed.extend_from_slice(&message);
        save(&dir, "dns_answer", &format!("answer-{i}"), &seed);
    }

    // address
    for (i, t) in targets.iter().enumerate() {
        save(&dir, "address", &format!("addr-{i}"), &t.to_bytes());
    }
    save(&dir, "address", "bad-type", &[2, 1, 2, 3, 4, 0, 80]);

    // aead_chunks: valid streams (mode 0) and plaintexts (mode 1), every SIP004 method.
    let request = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
    for (m, method) in SIP004.iter().enumerate() {
        let key = key(*method);
        let salt: Vec<u8> = (0..method.salt_len() as u8).collect();
        let mut enc = Encryptor::with_salt(&key, &salt).unwrap();
        let mut wire = Vec::new();
        let mut first = targets[2].to_bytes();
        first.extend_from_slice(request);
        enc.encrypt(&first, &mut wire);
        enc.encrypt(b"second chunk", &mut wire);
        let mut seed = vec![m as u8, 0];
        write_pieces(&[5, 1, 20], &mut seed);
        seed.extend_from_slice(&wire);
        save(&dir, "aead_chunks", &format!("stream-{}", method.name()), &seed);

        let mut seed = vec![m as u8, 1];
        write_pieces(&[3, 30], &mut seed);
        seed.extend_from_slice(request);
        save(&dir, "aead_chunks", &format!("plain-{}", method.name()), &seed);
    }
    // One stream with a full 0x3FFF chunk and a short one after it.
    {
        let key = key(SIP004[1]);
        let mut enc = Encryptor::with_salt(&key, &[7; 32]).unwrap();
        let mut wire = Vec::new();
        enc.encrypt(&vec![0x61; 0x3FFF + 100], &mut wire);
        let mut seed = vec![1, 0];
        write_pieces(&[32, 18, 0x3FFF], &mut seed);
        seed.extend_from_slice(&wire);
        save(&dir, "aead_chunks", "stream-max-chunk", &seed);
    }

    // sip022_header: requests (with payload, with padding only) and a response.
    for (m, method) in SIP022.iter().enumerate() {
        let key = key(*method);
        let salt: Vec<u8> = (0..method.salt_len() as u8).map(|b| b ^ 0x40).collect();
        for (i, (target, payload)) in [(&targets[0], &request[..]), (&targets[2], &b""[..])]
            .into_iter()
            .enumerate()
        {
            let mut enc = RequestEncryptor::with_salt(&key, &salt, &target.to_bytes()).unwrap();
            enc.set_clock(fixed_clock);
            let mut wire = Vec::new();
            enc.encrypt(payload, &mut wire).unwrap();
            enc.encrypt(b"more data", &mut wire).unwrap();
            let mut seed = vec![m as u8, 0];
            write_pieces(&[3, 40], &mut seed);
            seed.extend_from_slice(&wire);
            let name = format!("request-{i}-{}", method.name());
            save(&dir, "sip022_header", &name, &seed);
            // The in-place target reads the same layout; flags 5: empty requests allowed (as
            // ssserver runs it), plaintext sent after every read.
            save(&dir, "sip022_open_in_place", &name, &seed);
            seed[1] = 5;
            save(&dir, "sip022_open_in_place", &format!("{name}-sent"), &seed);
        }
        let mut enc = ResponseEncryptor::with_salt(&key, &salt, &request_salt(*method)).unwrap();
        enc.set_clock(fixed_clock);
        let mut wire = Vec::new();
        enc.encrypt(b"HTTP/1.1 200 OK\r\n\r\n", &mut wire);
        enc.encrypt(b"body", &mut wire);
        let mut seed = vec![m as u8, 2];
        write_pieces(&[10], &mut seed);
        seed.extend_from_slice(&wire);
        let name = format!("response-{}", method.name());
        save(&dir, "sip022_header", &name, &seed);
        save(&dir, "sip022_open_in_place", &name, &seed);
    }

    // udp_packet: a few datagrams per input, SIP004 and SIP022 (with a replayed one).
    for (m, method) in SIP004.iter().enumerate() {
        let key = key(*method);
        let mut seed = vec![m as u8, 0];
        for (i, t) in targets.iter().enumerate() {
            let mut plain = t.to_bytes();
            plain.extend_from_slice(&vec![i as u8; 10 * i]);
            let mut packet = Vec::new();
            encrypt_packet(&key, &plain, &mut packet).unwrap();
            write_record(&packet, &mut seed);
        }
        save(&dir, "udp_packet", &format!("sip004-{}", method.name()), &seed);
    }
    for (m, method) in SIP022.iter().enumerate() {
        let cipher = UdpCipher::new(&key(*method)).unwrap();
        for (flags, sender) in [
            (0u8, UdpSender::with_session_id(&cipher, 0x1111, None)),
            (
                1u8,
                UdpSender::with_session_id(&cipher, 0x2222, Some(CLIENT_SESSION_ID)),
            ),
        ] {
            let mut sender = sender;
            sender.set_clock(fixed_clock);
            let mut seed = vec![4 + m as u8, flags];
            let mut first = Vec::new();
            for (i, t) in targets.iter().enumerate() {
                let mut packet = Vec::new();
                sender.seal(&t.to_bytes(), &vec![i as u8; 5 * i], &mut packet).unwrap();
                write_record(&packet, &mut seed);
                if i == 0 {
                    first = packet;
                }
            }
            write_record(&first, &mut seed); // a replay: must be refused
            save(&dir, "udp_packet", &format!("sip022-{flags}-{}", method.name()), &seed);
        }
    }

    // config: JSON files for both roles and SIP002 URLs.
    let configs = [
        r#"{"server":"127.0.0.1","server_port":8388,"password":"secret","method":"aes-256-gcm","timeout":60}"#,
        r#"{"server":["0.0.0.0","::"],"server_port":8388,"password":"AAECAwQFBgcICQoLDA0ODw==","method":"2022-blake3-aes-128-gcm","mode":"tcp_and_udp","forbidden_ip":"10.0.0.0/8,::1"}"#,
        r#"{"server":"example.com","server_port":443,"local_address":"127.0.0.1","local_port":1080,"password":"p@ss:word","method":"chacha20-ietf-poly1305","nameserver":"1.1.1.1:53","workers":2}"#,
        "ss://YWVzLTI1Ni1nY206c2VjcmV0@127.0.0.1:8388/?plugin=obfs-local%3Bobfs%3Dhttp#my%20server",
        "ss://2022-blake3-aes-128-gcm:AAECAwQFBgcICQoLDA0ODw%3D%3D@[::1]:8388#tag",
        "ss://YWVzLTEyOC1nY206cGFzc0BleGFtcGxlLmNvbTo0NDM",
    ];
    for (i, c) in configs.iter().enumerate() {
        save(&dir, "config", &format!("config-{i}"), c.as_bytes());
    }
}
