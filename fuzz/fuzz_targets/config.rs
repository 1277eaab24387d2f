//! Configuration parsing: `Config::from_json` for both roles (what ssserver/sslocal do with
//! `-c file`) and `parse_ss_url` (`--server-url`). Whatever is accepted must format back to
//! an SIP002 URL that parses to the same server.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssproxy::config::{Config, Role, parse_ss_url, to_ss_url};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for role in [Role::Server, Role::Local] {
        if let Ok(config) = Config::from_json(role, &text) {
            let _ = format!("{config:?}");
            let _ = (
                config.server_addresses(),
                config.local_listen_address(),
                config.key_2022(),
            );
            let url = config.to_ss_url();
            let back = parse_ss_url(&url).unwrap_or_else(|e| panic!("{url:?} from a valid config: {e}"));
            assert_eq!(back.method, config.method);
            assert_eq!(back.password, *config.password);
            assert_eq!(back.host, config.server[0]);
            assert_eq!(back.port, config.server_port);
        }
    }
    if let Ok(url) = parse_ss_url(&text) {
        let _ = format!("{url:?}");
        let again = to_ss_url(&url);
        let back = parse_ss_url(&again).unwrap_or_else(|e| panic!("{again:?} does not parse back: {e}"));
        assert!(back == url, "{again:?} parses to another server");
    }
});
