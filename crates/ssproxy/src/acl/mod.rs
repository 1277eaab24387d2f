//! Access control lists: the shadowsocks ACL file format (as shadowsocks-libev and
//! shadowsocks-rust read it) and a matcher that decides, for a destination, whether
//! sslocal connects directly (bypass) or through the server (proxy), and whether
//! ssserver refuses it (`[outbound_block_list]`).
//!
//! This module does no I/O besides reading the file in [`Acl::from_file`]: it resolves
//! no names and opens no sockets, so a route can call it from the event loop.
//!
//! # The format
//!
//! One item a line; surrounding whitespace is ignored; blank lines and lines starting
//! with `#` are comments.
//!
//! - `[proxy_all]` (synonym `[accept_all]`): what matches no rule is proxied. The
//!   default when the file names no mode.
//! - `[bypass_all]` (synonym `[reject_all]`): what matches no rule is bypassed.
//! - `[bypass_list]` (synonym `[black_list]`): the rules below connect directly. Rules
//!   before any list header belong here.
//! - `[proxy_list]` (synonym `[white_list]`): the rules below go through the server.
//! - `[outbound_block_list]`: the rules below are destinations ssserver refuses.
//!
//! Rules:
//!
//! - an address `192.0.2.1`, `2001:db8::1` or a CIDR `10.0.0.0/8`, `2001:db8::/32`
//!   (host bits are ignored). An IPv4 rule also matches the IPv4-mapped IPv6 form
//!   `::ffff:a.b.c.d` of its addresses, and a rule on mapped addresses matches the IPv4
//!   ones;
//! - `||example.com`: `example.com` and every name under it;
//! - `|example.com`: `example.com` only;
//! - anything else is a regular expression (Rust `regex` syntax, close to PCRE for what
//!   ACL files use), searched anywhere in the name: `(^|\.)example\.com$`.
//!
//! Names are compared ASCII case-insensitively and without trailing dots.
//!
//! # Decisions
//!
//! For an address, [`Acl::decide_ip`]: bypass if a `[bypass_list]` rule matches, else
//! proxy if a `[proxy_list]` rule matches, else the mode's default.
//!
//! For a name, a caller does what libev's `ss-local` does:
//!
//! 1. [`Acl::decide_name`] on the name as the client sent it. `Some(decision)` (a name
//!    rule matched; `[bypass_list]` before `[proxy_list]`) is final.
//! 2. `None`: if [`Acl::resolves_unmatched_names`] is false, no address rule could
//!    change the outcome: take [`Acl::default_decision`] without resolving.
//! 3. Otherwise resolve the name and call [`Acl::decide_ip`] on the address the
//!    connection would use (libev's: the first address, in the resolver's order). If the
//!    name does not resolve, proxy (libev: the server may resolve what the local cannot).
//!
//! ssserver: refuse a destination when [`Acl::is_outbound_blocked_name`] holds for its
//! name, or [`Acl::is_outbound_blocked_ip`] for the address it would connect to.
//!
//! # Where the two peers differ, and what this module does
//!
//! - Name rules in both lists: libev bypasses (it looks at the bypass list first),
//!   shadowsocks-rust proxies. Here: bypass, as libev.
//! - Resolving an unmatched name: libev always resolves and decides on the first
//!   address; rust resolves only when the mode's list has address rules and bypasses
//!   (in `[proxy_all]`) or proxies (in `[bypass_all]`) when *any* address matches. Here:
//!   resolve only when it can change the result (same outcome as libev when the name
//!   resolves), decide on the address the connection uses (libev).
//! - A name that does not resolve: libev proxies, rust takes the default. Here: proxy.
//! - Case: libev's regexes are case-sensitive; rust lowercases each rule's text (a
//!   regex `\D` becomes `\d`) but not the name. Here: rules and names are compared ASCII
//!   case-insensitively.
//! - Trailing dot (`example.com.`): libev matches the name as sent; rust strips it.
//!   Here: stripped, as rust.
//! - `||domain` and `|domain` are rust's forms; libev reads them as regexes (`|x`
//!   matches every name). Here: rust's meaning.
//! - IPv4-mapped IPv6 destinations: matched against IPv4 rules by rust, not by libev.
//!   Here: as rust (a superset).
//! - Comments: libev skips lines whose first non-blank character is `#`, rust only
//!   lines starting with `#`. Here: as libev. Neither strips a `#` after a rule.
//! - Errors: libev logs a regex that does not compile and keeps a rule that never
//!   matches; it reads `10.0.0.0/abc` as `10.0.0.0/0`; both peers read an unknown
//!   `[section]` as a regex. rust refuses a bad regex but reads `10.0.0.0/33` as a
//!   regex. Here: each of these is an error naming the file and line.
//! - Line length: libev splits lines longer than 255 bytes into several rules. Here:
//!   lines have no length limit.
//! - rust's `[outbound_allow_list]`, `[outbound_block_all]` and `[outbound_allow_all]`
//!   are not supported (an error: unknown section); libev has no such sections.
//! - Non-ASCII lines: rust skips them with a warning; libev and this module read them as
//!   regexes.

mod names;
mod parse;
mod ranges;

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use self::names::{NameSet, compile_regexes, normalize_name};
use self::parse::{Line, ListKind, Rule, parse_line, regex_as_domain_rule};
use self::ranges::{AddressSet, CidrBounds};

/// Where a connection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Through the shadowsocks server.
    Proxy,
    /// Directly from sslocal.
    Bypass,
}

/// Why an ACL file was refused: the file (or `<acl>` for text), the 1-based line when
/// one line is at fault, and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclError {
    /// The file's path as given, or `<acl>` for [`Acl::parse`].
    pub source: String,
    /// The line at fault, when there is one.
    pub line: Option<usize>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for AclError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "ACL {}:{line}: {}", self.source, self.reason),
            None => write!(f, "ACL {}: {}", self.source, self.reason),
        }
    }
}

impl std::error::Error for AclError {}

/// The rules of one list.
#[derive(Debug, Clone)]
struct RuleList {
    addresses: AddressSet,
    names: NameSet,
}

/// A loaded ACL file, ready for lookups. Cheap to share read-only.
#[derive(Debug, Clone)]
pub struct Acl {
    default: Decision,
    bypass: RuleList,
    proxy: RuleList,
    outbound_block: RuleList,
}

impl Acl {
    /// Reads and parses an ACL file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Acl, AclError> {
        let path = path.as_ref();
        let source = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|err| AclError {
            source: source.clone(),
            line: None,
            reason: format!("cannot read: {err}"),
        })?;
        let text = String::from_utf8(bytes).map_err(|err| {
            let valid = &err.as_bytes()[..err.utf8_error().valid_up_to()];
            AclError {
                source: source.clone(),
                line: Some(valid.iter().filter(|b| **b == b'\n').count() + 1),
                reason: "not UTF-8".into(),
            }
        })?;
        Self::parse_named(&text, source)
    }

    /// Parses the text of an ACL file.
    pub fn parse(text: &str) -> Result<Acl, AclError> {
        Self::parse_named(text, "<acl>".into())
    }

    fn parse_named(text: &str, source: String) -> Result<Acl, AclError> {
        let mut default = Decision::Proxy;
        let mut lists: [ListBuilder<'_>; 3] = Default::default();
        // Rules before any list header are bypass rules, in both peers.
        let mut current = ListKind::Bypass;
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = parse_line(raw).map_err(|reason| AclError {
                source: source.clone(),
                line: Some(line_no),
                reason,
            })?;
            match line {
                Line::Nothing => {}
                Line::Mode(decision) => default = decision,
                Line::List(kind) => current = kind,
                Line::Rule(rule) => lists[list_index(current)].add(rule, line_no),
            }
        }
        let [bypass, proxy, outbound_block] = lists;
        Ok(Acl {
            default,
            bypass: bypass.build(&source, "[bypass_list]")?,
            proxy: proxy.build(&source, "[proxy_list]")?,
            outbound_block: outbound_block.build(&source, "[outbound_block_list]")?,
        })
    }

    /// The decision for a destination given as an address (or the address a name
    /// resolved to): bypass if a `[bypass_list]` rule matches, else proxy if a
    /// `[proxy_list]` rule matches, else [`Acl::default_decision`].
    pub fn decide_ip(&self, ip: IpAddr) -> Decision {
        if self.bypass.addresses.contains(ip) {
            Decision::Bypass
        } else if self.proxy.addresses.contains(ip) {
            Decision::Proxy
        } else {
            self.default
        }
    }

    /// The decision the name rules take for a destination given as a name: bypass if a
    /// `[bypass_list]` rule matches, else proxy if a `[proxy_list]` rule matches, else
    /// `None`: see the module documentation for what the caller does then.
    pub fn decide_name(&self, name: &str) -> Option<Decision> {
        let name = normalize_name(name);
        if self.bypass.names.matches(&name) {
            Some(Decision::Bypass)
        } else if self.proxy.names.matches(&name) {
            Some(Decision::Proxy)
        } else {
            None
        }
    }

    /// Whether a name that [`Acl::decide_name`] leaves undecided should be resolved and
    /// its address passed to [`Acl::decide_ip`]: only when the list that can overturn
    /// the default (`[bypass_list]` under `[proxy_all]`, `[proxy_list]` under
    /// `[bypass_all]`) has address rules. Otherwise the answer is the default whatever
    /// the address, and the lookup would be wasted.
    pub fn resolves_unmatched_names(&self) -> bool {
        match self.default {
            Decision::Proxy => !self.bypass.addresses.is_empty(),
            Decision::Bypass => !self.proxy.addresses.is_empty(),
        }
    }

    /// The decision for what no rule matches: set by `[proxy_all]` (the default) or
    /// `[bypass_all]`.
    pub fn default_decision(&self) -> Decision {
        self.default
    }

    /// Whether ssserver must refuse to connect to this address.
    pub fn is_outbound_blocked_ip(&self, ip: IpAddr) -> bool {
        self.outbound_block.addresses.contains(ip)
    }

    /// Whether ssserver must refuse a destination given as this name (its resolved
    /// address is checked with [`Acl::is_outbound_blocked_ip`] before connecting).
    pub fn is_outbound_blocked_name(&self, name: &str) -> bool {
        self.outbound_block.names.matches(&normalize_name(name))
    }

    /// How many name rules the file holds, over all lists (for a log line at load).
    pub fn name_rule_count(&self) -> usize {
        [&self.bypass, &self.proxy, &self.outbound_block]
            .iter()
            .map(|list| list.names.len())
            .sum()
    }
}

fn list_index(kind: ListKind) -> usize {
    match kind {
        ListKind::Bypass => 0,
        ListKind::Proxy => 1,
        ListKind::OutboundBlock => 2,
    }
}

/// The rules of one list while the file is read.
#[derive(Default)]
struct ListBuilder<'a> {
    cidrs: Vec<CidrBounds>,
    exact: HashSet<Box<str>>,
    suffixes: HashSet<Box<str>>,
    /// Regexes with their line numbers, for errors.
    regexes: Vec<(usize, &'a str)>,
}

impl<'a> ListBuilder<'a> {
    fn add(&mut self, rule: Rule<'a>, line_no: usize) {
        match rule {
            Rule::Cidr(cidr) => self.cidrs.push(cidr),
            Rule::Suffix(domain) => {
                self.suffixes.insert(domain.into());
            }
            Rule::Exact(domain) => {
                self.exact.insert(domain.into());
            }
            Rule::Regex(regex) => match regex_as_domain_rule(regex) {
                Some(Rule::Suffix(domain)) => {
                    self.suffixes.insert(domain.into());
                }
                Some(Rule::Exact(domain)) => {
                    self.exact.insert(domain.into());
                }
                _ => self.regexes.push((line_no, regex)),
            },
        }
    }

    fn build(self, source: &str, list: &str) -> Result<RuleList, AclError> {
        let regexes = compile_regexes(self.regexes.iter().map(|(_, regex)| *regex)).map_err(|set_err| {
            // The set does not say which pattern failed: find it, to name its line.
            let culprit = self
                .regexes
                .iter()
                .find_map(|(line_no, regex)| compile_regexes([*regex]).err().map(|err| (*line_no, err)));
            match culprit {
                Some((line_no, err)) => AclError {
                    source: source.into(),
                    line: Some(line_no),
                    reason: format!("bad regex: {err}"),
                },
                None => AclError {
                    source: source.into(),
                    line: self.regexes.first().map(|(line_no, _)| *line_no),
                    reason: format!("the regexes of {list} together are too large: {set_err}"),
                },
            }
        })?;
        Ok(RuleList {
            addresses: AddressSet::new(&self.cidrs),
            names: NameSet::new(self.exact, self.suffixes, regexes),
        })
    }
}

#[cfg(test)]
mod tests;
