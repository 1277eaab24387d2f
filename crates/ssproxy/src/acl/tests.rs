//! Tests of the whole matcher: each rule form, each precedence case, errors, and a
//! property test against a naive linear scan of the same rules.

use std::net::IpAddr;

use proptest::prelude::*;
use regex::bytes::Regex;

use super::parse::{Line, ListKind, Rule, parse_line};
use super::ranges::CidrBounds;
use super::*;

fn acl(text: &str) -> Acl {
    Acl::parse(text).unwrap_or_else(|err| panic!("{err}"))
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn an_empty_file_proxies_everything_and_resolves_nothing() {
    let acl = acl("");
    assert_eq!(acl.default_decision(), Decision::Proxy);
    assert_eq!(acl.decide_ip(ip("192.0.2.1")), Decision::Proxy);
    assert_eq!(acl.decide_name("example.com"), None);
    assert!(!acl.resolves_unmatched_names());
    assert!(!acl.is_outbound_blocked_ip(ip("127.0.0.1")));
}

#[test]
fn rules_before_any_list_header_are_bypass_rules() {
    let acl = acl("10.0.0.0/8\n||lan\n");
    assert_eq!(acl.decide_ip(ip("10.1.2.3")), Decision::Bypass);
    assert_eq!(acl.decide_name("printer.lan"), Some(Decision::Bypass));
}

#[test]
fn proxy_all_bypasses_only_the_bypass_list() {
    let acl = acl("[proxy_all]\n[bypass_list]\n10.0.0.0/8\n::1\n[proxy_list]\n11.0.0.0/8\n");
    assert_eq!(acl.decide_ip(ip("10.9.9.9")), Decision::Bypass);
    assert_eq!(acl.decide_ip(ip("::1")), Decision::Bypass);
    assert_eq!(acl.decide_ip(ip("11.0.0.1")), Decision::Proxy);
    assert_eq!(acl.decide_ip(ip("12.0.0.1")), Decision::Proxy);
    assert!(acl.resolves_unmatched_names());
}

#[test]
fn bypass_all_proxies_only_the_proxy_list() {
    let acl = acl("[bypass_all]\n[proxy_list]\n8.8.8.0/24\n2001:db8::/32\n");
    assert_eq!(acl.default_decision(), Decision::Bypass);
    assert_eq!(acl.decide_ip(ip("8.8.8.8")), Decision::Proxy);
    assert_eq!(acl.decide_ip(ip("2001:db8::5")), Decision::Proxy);
    assert_eq!(acl.decide_ip(ip("8.8.4.4")), Decision::Bypass);
    assert!(acl.resolves_unmatched_names());
}

#[test]
fn reject_all_and_accept_all_are_synonyms_and_the_last_mode_wins() {
    assert_eq!(acl("[reject_all]").default_decision(), Decision::Bypass);
    assert_eq!(acl("[reject_all]\n[accept_all]").default_decision(), Decision::Proxy);
    assert_eq!(acl("[proxy_all]\n[bypass_all]").default_decision(), Decision::Bypass);
}

#[test]
fn black_list_is_the_bypass_list_and_white_list_the_proxy_list() {
    let acl = acl("[bypass_all]\n[white_list]\n1.1.1.1\n[black_list]\n||blocked.example\n");
    assert_eq!(acl.decide_ip(ip("1.1.1.1")), Decision::Proxy);
    assert_eq!(acl.decide_name("a.blocked.example"), Some(Decision::Bypass));
}

#[test]
fn an_address_in_both_lists_is_bypassed_in_either_mode() {
    for mode in ["[proxy_all]", "[bypass_all]"] {
        let acl = acl(&format!(
            "{mode}\n[proxy_list]\n10.0.0.0/8\n[bypass_list]\n10.1.0.0/16\n"
        ));
        assert_eq!(acl.decide_ip(ip("10.1.2.3")), Decision::Bypass, "{mode}");
        assert_eq!(acl.decide_ip(ip("10.2.0.1")), Decision::Proxy, "{mode}");
    }
}

#[test]
fn a_name_in_both_lists_is_bypassed_as_libev_does() {
    let acl = acl("[proxy_list]\n||example.com\n[bypass_list]\n(^|\\.)example\\.com$\n");
    assert_eq!(acl.decide_name("www.example.com"), Some(Decision::Bypass));
}

#[test]
fn name_rules_decide_against_the_mode() {
    let acl = acl("[bypass_all]\n[proxy_list]\n(^|\\.)google\\.com$\n[bypass_list]\n||cn\n");
    assert_eq!(acl.decide_name("mail.google.com"), Some(Decision::Proxy));
    assert_eq!(acl.decide_name("baidu.cn"), Some(Decision::Bypass));
    assert_eq!(acl.decide_name("example.org"), None);
    // No proxy address rule: nothing can overturn the default, no lookup needed.
    assert!(!acl.resolves_unmatched_names());
}

#[test]
fn suffix_rules_match_the_domain_and_its_subdomains_only() {
    let acl = acl("||example.com\n");
    for name in [
        "example.com",
        "a.example.com",
        "a.b.example.com",
        "EXAMPLE.Com",
        "example.com.",
    ] {
        assert_eq!(acl.decide_name(name), Some(Decision::Bypass), "{name}");
    }
    for name in ["notexample.com", "example.com.evil", "com", "example.co"] {
        assert_eq!(acl.decide_name(name), None, "{name}");
    }
}

#[test]
fn exact_rules_match_the_name_only() {
    let acl = acl("|example.com\n");
    assert_eq!(acl.decide_name("Example.com"), Some(Decision::Bypass));
    assert_eq!(acl.decide_name("www.example.com"), None);
}

#[test]
fn regex_rules_search_anywhere_in_the_name_case_insensitively() {
    let acl = acl("google\n^ad[0-9]+\\.\n");
    assert_eq!(acl.decide_name("www.GOOGLE.co.jp"), Some(Decision::Bypass));
    assert_eq!(acl.decide_name("ad42.tracker.net"), Some(Decision::Bypass));
    assert_eq!(acl.decide_name("bad42.tracker.net"), None);
}

#[test]
fn regexes_converted_to_suffix_rules_keep_their_meaning() {
    let acl = acl("(^|\\.)twitter\\.com$\n^t\\.co$\n");
    assert_eq!(acl.decide_name("api.twitter.com"), Some(Decision::Bypass));
    assert_eq!(acl.decide_name("twitter.com"), Some(Decision::Bypass));
    assert_eq!(acl.decide_name("nottwitter.com"), None);
    assert_eq!(acl.decide_name("t.co"), Some(Decision::Bypass));
    assert_eq!(acl.decide_name("x.t.co"), None);
}

#[test]
fn ip_literals_are_decided_by_address_rules_not_name_rules() {
    // libev and rust look an IP literal up in the address sets only.
    let acl = acl("^10\\.\n");
    assert_eq!(acl.decide_ip(ip("10.0.0.1")), Decision::Proxy);
}

#[test]
fn ipv4_rules_cover_ipv4_mapped_destinations() {
    let acl = acl("[bypass_list]\n192.168.0.0/16\n");
    assert_eq!(acl.decide_ip(ip("::ffff:192.168.1.1")), Decision::Bypass);
}

#[test]
fn outbound_block_list_is_separate_from_the_routing_lists() {
    let acl = acl("[outbound_block_list]\n127.0.0.0/8\n::1\n(^|\\.)internal$\n||corp\n");
    assert!(acl.is_outbound_blocked_ip(ip("127.0.0.53")));
    assert!(acl.is_outbound_blocked_ip(ip("::1")));
    assert!(!acl.is_outbound_blocked_ip(ip("192.0.2.1")));
    assert!(acl.is_outbound_blocked_name("db.internal"));
    assert!(acl.is_outbound_blocked_name("git.Corp."));
    assert!(!acl.is_outbound_blocked_name("example.com"));
    assert_eq!(acl.decide_ip(ip("127.0.0.1")), Decision::Proxy);
    assert_eq!(acl.decide_name("db.internal"), None);
}

#[test]
fn comments_blank_lines_and_crlf_are_ignored() {
    let acl = acl("# header\r\n\r\n  # indented\r\n[bypass_list]\r\n  10.0.0.1  \r\n");
    assert_eq!(acl.decide_ip(ip("10.0.0.1")), Decision::Bypass);
    assert_eq!(acl.name_rule_count(), 0);
}

fn error_of(text: &str) -> AclError {
    Acl::parse(text).expect_err(text)
}

#[test]
fn a_bad_cidr_is_an_error_naming_its_line() {
    let err = error_of("[bypass_list]\n10.0.0.0/8\n10.0.0.0/40\n");
    assert_eq!(err.line, Some(3));
    assert!(err.to_string().starts_with("ACL <acl>:3: bad CIDR"), "{err}");
}

#[test]
fn a_bad_regex_is_an_error_naming_its_line() {
    let err = error_of("[proxy_list]\nfine\\.com\n[bypass_list]\nok\n(unclosed\n");
    assert_eq!(err.line, Some(5));
    assert!(err.reason.contains("bad regex"), "{err}");
}

#[test]
fn an_unknown_section_is_an_error_naming_its_line() {
    let err = error_of("[proxy_all]\n[outbound_allow_list]\n");
    assert_eq!(err.line, Some(2));
    assert!(err.reason.contains("unknown section [outbound_allow_list]"), "{err}");
}

#[test]
fn from_file_errors_name_the_file_and_line() {
    let dir = std::env::temp_dir().join(format!("ssproxy-acl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.acl");
    std::fs::write(&path, "[bypass_list]\n||\n").unwrap();
    let err = Acl::from_file(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("ACL {}:2: `||` without a domain", path.display())
    );
    std::fs::write(&path, b"[bypass_list]\n\xff\n").unwrap();
    assert_eq!(Acl::from_file(&path).unwrap_err().line, Some(2));
    std::fs::write(&path, "[bypass_list]\n10.0.0.0/8\n").unwrap();
    assert_eq!(
        Acl::from_file(&path).unwrap().decide_ip(ip("10.0.0.1")),
        Decision::Bypass
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let missing = Acl::from_file(dir.join("missing.acl")).unwrap_err();
    assert!(
        missing.line.is_none() && missing.reason.starts_with("cannot read"),
        "{missing}"
    );
}

/// The rules of a file kept as written and checked one by one, in file order: what the
/// peers do, without any of the fast structures.
struct NaiveAcl {
    default: Decision,
    rules: Vec<(ListKind, NaiveRule)>,
}

enum NaiveRule {
    Cidr(CidrBounds),
    Suffix(String),
    Exact(String),
    Regex(Regex),
}

impl NaiveAcl {
    fn parse(text: &str) -> NaiveAcl {
        let mut naive = NaiveAcl {
            default: Decision::Proxy,
            rules: Vec::new(),
        };
        let mut current = ListKind::Bypass;
        for raw in text.lines() {
            match parse_line(raw).unwrap() {
                Line::Nothing => {}
                Line::Mode(decision) => naive.default = decision,
                Line::List(kind) => current = kind,
                Line::Rule(rule) => {
                    let rule = match rule {
                        Rule::Cidr(cidr) => NaiveRule::Cidr(cidr),
                        Rule::Suffix(domain) => NaiveRule::Suffix(domain),
                        Rule::Exact(domain) => NaiveRule::Exact(domain),
                        Rule::Regex(regex) => NaiveRule::Regex(
                            regex::bytes::RegexBuilder::new(regex)
                                .case_insensitive(true)
                                .unicode(false)
                                .build()
                                .unwrap(),
                        ),
                    };
                    naive.rules.push((current, rule));
                }
            }
        }
        naive
    }

    fn ip_in(&self, list: ListKind, ip: IpAddr) -> bool {
        let mapped = match ip {
            IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        };
        self.rules.iter().any(|(kind, rule)| {
            *kind == list
                && [Some(ip), mapped]
                    .into_iter()
                    .flatten()
                    .any(|candidate| match (rule, candidate) {
                        (NaiveRule::Cidr(CidrBounds::V4(start, end)), IpAddr::V4(v4)) => {
                            (*start..=*end).contains(&u32::from(v4))
                        }
                        (NaiveRule::Cidr(CidrBounds::V6(start, end)), IpAddr::V6(v6)) => {
                            (*start..=*end).contains(&u128::from(v6))
                        }
                        _ => false,
                    })
        })
    }

    fn name_in(&self, list: ListKind, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.rules.iter().any(|(kind, rule)| {
            *kind == list
                && match rule {
                    NaiveRule::Cidr(_) => false,
                    NaiveRule::Suffix(domain) => name == *domain || name.ends_with(&format!(".{domain}")),
                    NaiveRule::Exact(domain) => name == *domain,
                    NaiveRule::Regex(regex) => regex.is_match(name.as_bytes()),
                }
        })
    }

    fn decide_ip(&self, ip: IpAddr) -> Decision {
        if self.ip_in(ListKind::Bypass, ip) {
            Decision::Bypass
        } else if self.ip_in(ListKind::Proxy, ip) {
            Decision::Proxy
        } else {
            self.default
        }
    }

    fn decide_name(&self, name: &str) -> Option<Decision> {
        if self.name_in(ListKind::Bypass, name) {
            Some(Decision::Bypass)
        } else if self.name_in(ListKind::Proxy, name) {
            Some(Decision::Proxy)
        } else {
            None
        }
    }
}

/// Domains over a tiny alphabet, so that random rules and random names meet often.
fn domain() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "ab", "x-y", "B"]), 1..4)
        .prop_map(|labels| labels.join("."))
}

fn escaped(domain: &str) -> String {
    domain.replace('.', "\\.")
}

/// Addresses in small ranges (10.0.0.0/22, fd00::/118 and their mapped forms).
fn address() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u32..1024).prop_map(|low| IpAddr::V4((0x0a00_0000 | low).into())),
        (0u128..1024).prop_map(|low| IpAddr::V6(((0xfd00u128 << 112) | low).into())),
        (0u32..1024).prop_map(|low| IpAddr::V6(std::net::Ipv4Addr::from(0x0a00_0000 | low).to_ipv6_mapped())),
    ]
}

fn rule_line() -> impl Strategy<Value = String> {
    prop_oneof![
        domain().prop_map(|d| format!("||{d}")),
        domain().prop_map(|d| format!("|{d}")),
        domain().prop_map(|d| format!("(^|\\.){}$", escaped(&d))),
        domain().prop_map(|d| format!("^{}$", escaped(&d))),
        domain().prop_map(|d| escaped(&d)),
        domain().prop_map(|d| format!("\\.{}", escaped(&d))),
        domain().prop_map(|d| format!("^{}", d)),
        (0u32..1024, 20u8..=32)
            .prop_map(|(low, prefix)| format!("{}/{prefix}", std::net::Ipv4Addr::from(0x0a00_0000 | low))),
        (0u32..1024).prop_map(|low| std::net::Ipv4Addr::from(0x0a00_0000 | low).to_string()),
        (0u128..1024, 116u8..=128)
            .prop_map(|(low, prefix)| format!("{}/{prefix}", std::net::Ipv6Addr::from((0xfd00u128 << 112) | low))),
        (0u32..1024, 116u8..=128)
            .prop_map(|(low, prefix)| format!("::ffff:{}/{prefix}", std::net::Ipv4Addr::from(0x0a00_0000 | low))),
        prop::sample::select(vec![
            "[proxy_all]",
            "[bypass_all]",
            "[bypass_list]",
            "[proxy_list]",
            "[outbound_block_list]",
            "# comment",
            ""
        ])
        .prop_map(String::from),
    ]
}

fn name() -> impl Strategy<Value = String> {
    (domain(), prop::option::of(domain()), any::<bool>()).prop_map(|(tail, head, fqdn)| {
        let mut name = match head {
            Some(head) => format!("{head}.{tail}"),
            None => tail,
        };
        if fqdn {
            name.push('.');
        }
        name
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn fast_matcher_agrees_with_a_linear_scan_of_the_same_rules(
        lines in prop::collection::vec(rule_line(), 0..40),
        addresses in prop::collection::vec(address(), 1..30),
        names in prop::collection::vec(name(), 1..30),
    ) {
        let text = lines.join("\n");
        let fast = Acl::parse(&text).unwrap();
        let naive = NaiveAcl::parse(&text);
        prop_assert_eq!(fast.default_decision(), naive.default);
        for ip in addresses {
            prop_assert_eq!(fast.decide_ip(ip), naive.decide_ip(ip), "{}", ip);
            prop_assert_eq!(fast.is_outbound_blocked_ip(ip), naive.ip_in(ListKind::OutboundBlock, ip), "{}", ip);
        }
        for name in names {
            prop_assert_eq!(fast.decide_name(&name), naive.decide_name(&name), "{}", name);
            prop_assert_eq!(fast.is_outbound_blocked_name(&name), naive.name_in(ListKind::OutboundBlock, &name), "{}", name);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "(\\PC|\n|\\[|\\]|/|\\|){0,200}") {
        if let Err(err) = Acl::parse(&text) {
            prop_assert!(err.line.is_some(), "{}", err);
        }
    }
}
