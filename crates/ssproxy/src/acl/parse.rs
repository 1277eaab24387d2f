//! What one line of an ACL file says: a section header, a rule, or nothing. No state
//! here: the builder in `mod.rs` keeps track of the current section.

use std::net::IpAddr;

use super::Decision;
use super::ranges::{CidrBounds, cidr_bounds};

/// The lists a rule can be added to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListKind {
    /// `[bypass_list]` / `[black_list]`: connect directly.
    Bypass,
    /// `[proxy_list]` / `[white_list]`: connect through the server.
    Proxy,
    /// `[outbound_block_list]`: destinations ssserver refuses.
    OutboundBlock,
}

/// A rule line, as written (before any matching structure is built).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rule<'a> {
    /// An address or a CIDR.
    Cidr(CidrBounds),
    /// `||example.com`: the name and every name under it (lowercased, no trailing dot).
    Suffix(String),
    /// `|example.com`: this name only (lowercased, no trailing dot).
    Exact(String),
    /// Anything else: a regular expression searched for in the name.
    Regex(&'a str),
}

/// What a line means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Line<'a> {
    /// Blank or a comment.
    Nothing,
    /// `[proxy_all]`, `[bypass_all]` and their synonyms: the decision when no rule matches.
    Mode(Decision),
    /// A list header: the rules below it go to that list.
    List(ListKind),
    /// A rule for the current list.
    Rule(Rule<'a>),
}

/// Classifies one line (without its line ending). `Err` carries the reason, without the
/// position, which the caller knows.
pub(crate) fn parse_line(raw: &str) -> Result<Line<'_>, String> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(Line::Nothing);
    }
    if let Some(section) = section_name(line) {
        return match section {
            "proxy_all" | "accept_all" => Ok(Line::Mode(Decision::Proxy)),
            "bypass_all" | "reject_all" => Ok(Line::Mode(Decision::Bypass)),
            "bypass_list" | "black_list" => Ok(Line::List(ListKind::Bypass)),
            "proxy_list" | "white_list" => Ok(Line::List(ListKind::Proxy)),
            "outbound_block_list" => Ok(Line::List(ListKind::OutboundBlock)),
            _ => Err(format!("unknown section [{section}]")),
        };
    }
    if let Some(domain) = line.strip_prefix("||") {
        return Ok(Line::Rule(Rule::Suffix(domain_rule(domain, "||")?)));
    }
    if let Some(domain) = line.strip_prefix('|') {
        return Ok(Line::Rule(Rule::Exact(domain_rule(domain, "|")?)));
    }
    if let Some(cidr) = address_rule(line)? {
        return Ok(Line::Rule(Rule::Cidr(cidr)));
    }
    Ok(Line::Rule(Rule::Regex(line)))
}

/// `[name]` with a name of lowercase letters and underscores, the shape of every section
/// both peers know. Anything else in brackets (`[a-z]+\.cn`) stays a regex.
fn section_name(line: &str) -> Option<&str> {
    let name = line.strip_prefix('[')?.strip_suffix(']')?;
    let plain = !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    plain.then_some(name)
}

/// The domain of a `||` or `|` rule, in the form names are compared in.
fn domain_rule(domain: &str, form: &str) -> Result<String, String> {
    let domain = domain.trim_end_matches('.');
    if domain.is_empty() {
        return Err(format!("`{form}` without a domain"));
    }
    if let Some(bad) = domain.chars().find(|c| c.is_whitespace() || *c == '/') {
        return Err(format!("`{form}{domain}`: {bad:?} cannot be part of a domain"));
    }
    Ok(domain.to_ascii_lowercase())
}

/// An address (`192.0.2.1`, `2001:db8::1`) or CIDR (`10.0.0.0/8`) line; `Ok(None)` when
/// the line is not one (a regex may contain `/`: only a line whose part before the last
/// `/` is an address is a CIDR, as in both peers).
fn address_rule(line: &str) -> Result<Option<CidrBounds>, String> {
    let (host, prefix) = match line.rsplit_once('/') {
        Some((host, prefix)) => (host, Some(prefix)),
        None => (line, None),
    };
    let Ok(addr) = host.parse::<IpAddr>() else {
        return Ok(None);
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(text) => match text.parse::<u8>() {
            Ok(bits) if bits <= max => bits,
            _ => return Err(format!("bad CIDR `{line}`: the prefix length must be 0..={max}")),
        },
    };
    Ok(cidr_bounds(addr, prefix))
}

/// The domain a regex rule is exactly equivalent to, so that it can join the hash sets
/// instead of the regex set: `(^|\.)example\.com$` is `||example.com`, `^example\.com$`
/// is `|example.com` (names are compared lowercased, with the regexes case-insensitive,
/// so the equivalence holds for every name). `None` for any other regex.
pub(crate) fn regex_as_domain_rule(regex: &str) -> Option<Rule<'static>> {
    let suffix_body = ["(^|\\.)", "(?:^|\\.)"]
        .iter()
        .find_map(|prefix| regex.strip_prefix(prefix)?.strip_suffix('$'));
    if let Some(domain) = suffix_body.and_then(escaped_domain) {
        return Some(Rule::Suffix(domain));
    }
    let exact_body = regex.strip_prefix('^')?.strip_suffix('$')?;
    escaped_domain(exact_body).map(Rule::Exact)
}

/// `example\.com` as `example.com`: labels of letters, digits, `-` and `_` joined by
/// escaped dots, nothing else.
fn escaped_domain(body: &str) -> Option<String> {
    let mut domain = String::with_capacity(body.len());
    for label in body.split("\\.") {
        let plain = !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !plain {
            return None;
        }
        if !domain.is_empty() {
            domain.push('.');
        }
        domain.push_str(label);
    }
    Some(domain.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(line: &str) -> Rule<'_> {
        match parse_line(line) {
            Ok(Line::Rule(rule)) => rule,
            other => panic!("{line:?} is not a rule: {other:?}"),
        }
    }

    #[test]
    fn sections_and_their_synonyms() {
        assert_eq!(parse_line("[proxy_all]"), Ok(Line::Mode(Decision::Proxy)));
        assert_eq!(parse_line(" [accept_all] "), Ok(Line::Mode(Decision::Proxy)));
        assert_eq!(parse_line("[bypass_all]"), Ok(Line::Mode(Decision::Bypass)));
        assert_eq!(parse_line("[reject_all]"), Ok(Line::Mode(Decision::Bypass)));
        assert_eq!(parse_line("[bypass_list]"), Ok(Line::List(ListKind::Bypass)));
        assert_eq!(parse_line("[black_list]"), Ok(Line::List(ListKind::Bypass)));
        assert_eq!(parse_line("[proxy_list]"), Ok(Line::List(ListKind::Proxy)));
        assert_eq!(parse_line("[white_list]"), Ok(Line::List(ListKind::Proxy)));
        assert_eq!(
            parse_line("[outbound_block_list]"),
            Ok(Line::List(ListKind::OutboundBlock))
        );
        assert!(
            parse_line("[outbound_allow_list]")
                .unwrap_err()
                .contains("unknown section")
        );
        // A character class is a regex, not a section.
        assert_eq!(rule("[a-z]+\\.cn$"), Rule::Regex("[a-z]+\\.cn$"));
    }

    #[test]
    fn comments_and_blank_lines_say_nothing() {
        for line in ["", "   ", "# a comment", "   # indented comment", "\t"] {
            assert_eq!(parse_line(line), Ok(Line::Nothing), "{line:?}");
        }
    }

    #[test]
    fn addresses_and_cidrs_of_both_families() {
        assert_eq!(rule("192.0.2.1"), Rule::Cidr(CidrBounds::V4(0xc000_0201, 0xc000_0201)));
        assert_eq!(
            rule("10.9.0.32/16"),
            Rule::Cidr(CidrBounds::V4(0x0a09_0000, 0x0a09_ffff))
        );
        assert_eq!(rule("::1"), Rule::Cidr(CidrBounds::V6(1, 1)));
        assert_eq!(
            rule("2001:db8::/32"),
            Rule::Cidr(CidrBounds::V6(
                0x2001_0db8 << 96,
                (0x2001_0db8 << 96) | (u128::MAX >> 32)
            ))
        );
    }

    #[test]
    fn bad_cidr_prefixes_are_errors_not_regexes() {
        for line in ["10.0.0.0/33", "10.0.0.0/abc", "10.0.0.0/", "::/129", "10.0.0.0/-1"] {
            let err = parse_line(line).unwrap_err();
            assert!(err.contains("bad CIDR"), "{line}: {err}");
        }
    }

    #[test]
    fn a_regex_with_a_slash_stays_a_regex() {
        assert_eq!(rule("^ab/cd"), Rule::Regex("^ab/cd"));
        assert_eq!(rule("fe80::1%eth0"), Rule::Regex("fe80::1%eth0"));
    }

    #[test]
    fn suffix_and_exact_forms_are_lowercased_without_trailing_dot() {
        assert_eq!(rule("||Example.COM."), Rule::Suffix("example.com".into()));
        assert_eq!(rule("|www.Example.com"), Rule::Exact("www.example.com".into()));
        assert!(parse_line("||").is_err());
        assert!(parse_line("|.").is_err());
        assert!(parse_line("||a b").is_err());
    }

    #[test]
    fn only_exactly_equivalent_regexes_become_domain_rules() {
        assert_eq!(
            regex_as_domain_rule("(^|\\.)google\\.com$"),
            Some(Rule::Suffix("google.com".into()))
        );
        assert_eq!(
            regex_as_domain_rule("(?:^|\\.)Google\\.com$"),
            Some(Rule::Suffix("google.com".into()))
        );
        assert_eq!(
            regex_as_domain_rule("^www\\.google\\.com$"),
            Some(Rule::Exact("www.google.com".into()))
        );
        for regex in [
            "(^|\\.)google\\.com",
            "\\.google\\.com$",
            "(^|\\.)goo.le\\.com$",
            "^google\\.com",
            "(^|\\.)a\\.\\.b$",
            "^$",
            "(^|\\.)$",
        ] {
            assert_eq!(regex_as_domain_rule(regex), None, "{regex}");
        }
    }
}
