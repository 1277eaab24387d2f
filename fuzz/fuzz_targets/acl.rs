//! ACL files: `Acl::parse` on any text either refuses it with a line number or builds a
//! matcher whose every lookup answers without panicking.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use ssproxy::acl::Acl;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Acl::parse(&text) {
        Ok(acl) => {
            let addresses: [IpAddr; 4] = [
                [127, 0, 0, 1].into(),
                [10, 1, 2, 3].into(),
                "::1".parse().unwrap(),
                "::ffff:192.168.1.1".parse().unwrap(),
            ];
            for ip in addresses {
                let _ = (acl.decide_ip(ip), acl.is_outbound_blocked_ip(ip));
            }
            // The text's own lines as names exercise the suffix walk on odd input.
            for name in text.lines().take(8).chain(["example.com", "", ".", "a..b."]) {
                let _ = (acl.decide_name(name), acl.is_outbound_blocked_name(name));
            }
            let _ = (acl.resolves_unmatched_names(), acl.default_decision(), acl.name_rule_count());
        }
        Err(err) => assert!(err.line.is_some(), "an error without a line: {err}"),
    }
});
