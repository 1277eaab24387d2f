//! The shadowsocks configuration: JSON file, command-line flags and `ss://` URLs.
//!
//! The JSON file uses the keys of shadowsocks-libev (`server`, `server_port`, `password`,
//! `method`, `timeout`, `local_address`, `local_port`, `mode`, `fast_open`, `nameserver`,
//! `forbidden_ip`, `workers`, `tunnel_address`, `ipv6_first`), and ours for the resolver
//! (`dns_cache_max_ttl`, `dns_max_queries_per_client`); `//` and `/* */` comments are allowed, unknown
//! keys are warned about and ignored, and `plugin*` keys are ignored with a warning.
//!
//! [`Config::load`] merges, lowest precedence first: built-in defaults, the file given with `-c`,
//! the `--server-url`, then the individual flags. It then validates everything and returns a
//! typed [`Config`] or a [`ConfigError`] whose message names the offending field, e.g.
//! `config: "server_port": 70000 is not a port (1-65535)`. Non-fatal findings end up in
//! [`Config::warnings`] for the caller to log once logging is set up.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::crypto::Method;
use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose::URL_SAFE_NO_PAD};
use serde::Deserialize;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::protocol::Address;

// =============================================================================================
// Methods
// =============================================================================================

/// The cipher names accepted for `method`, as shadowsocks-libev/-rust spell them:
/// those of [`Method`], joined for messages.
pub fn method_names() -> String {
    Method::ALL.map(Method::name).join(", ")
}

/// For a SIP022 (`2022-blake3-*`) method, the key length its base64 password must decode to.
pub fn key_len_2022(method: &str) -> Option<usize> {
    method
        .parse::<Method>()
        .ok()
        .filter(|m| m.is_2022())
        .map(Method::key_len)
}

/// Whether `method` is a SIP022 (`2022-blake3-*`) method.
pub fn is_2022(method: &str) -> bool {
    key_len_2022(method).is_some()
}

/// Checks a method name (ASCII case-insensitively) and returns its canonical spelling.
fn canonical_method(name: &str) -> Result<&'static str, String> {
    Method::ALL
        .into_iter()
        .map(Method::name)
        .find(|m| m.eq_ignore_ascii_case(name.trim()))
        .ok_or_else(|| format!("unknown cipher {name:?}; expected one of {}", method_names()))
}

/// Base64 as found in SIP022 keys and SIP002 userinfo: padding optional.
const B64_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const B64_URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Checks that `password` is a valid key for a 2022 method; the message never contains the key.
fn check_2022_password(method: &str, password: &str) -> Result<(), String> {
    let Some(want) = key_len_2022(method) else {
        return Ok(());
    };
    if password.contains(':') {
        return Err(format!(
            "{method} takes a single base64 key; multi-user identity keys (iPSK:uPSK) are not supported"
        ));
    }
    let key = B64_STANDARD.decode(password).map(Zeroizing::new).map_err(|e| {
        format!(
            "{method} needs a base64-encoded {want}-byte key, and this is not valid base64 ({})",
            crate::crypto::key::describe_base64_error(&e)
        )
    })?;
    if key.len() != want {
        return Err(format!(
            "{method} needs a base64-encoded {want}-byte key, got {} bytes",
            key.len()
        ));
    }
    Ok(())
}

// =============================================================================================
// Small typed values
// =============================================================================================

/// Which program the configuration is for; it decides defaults and required fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// `ssserver`.
    Server,
    /// `sslocal`.
    Local,
}

/// Which relays run (`mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// `tcp_only` (the default, as in shadowsocks-libev).
    #[default]
    TcpOnly,
    /// `tcp_and_udp` (`-u`).
    TcpAndUdp,
    /// `udp_only` (`-U`).
    UdpOnly,
}

impl Mode {
    /// Whether the TCP relay runs.
    pub fn tcp_enabled(self) -> bool {
        self != Mode::UdpOnly
    }

    /// Whether the UDP relay runs.
    pub fn udp_enabled(self) -> bool {
        self != Mode::TcpOnly
    }

    /// The config-file spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::TcpOnly => "tcp_only",
            Mode::TcpAndUdp => "tcp_and_udp",
            Mode::UdpOnly => "udp_only",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        match s.trim() {
            "tcp_only" => Ok(Mode::TcpOnly),
            "tcp_and_udp" => Ok(Mode::TcpAndUdp),
            "udp_only" => Ok(Mode::UdpOnly),
            _ => Err(format!(
                "unknown mode {s:?}; expected tcp_only, tcp_and_udp or udp_only"
            )),
        }
    }
}

/// A host as written in the configuration: an IP literal or a name to resolve.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IP literal (`0.0.0.0`, `::`, `[::1]`).
    Ip(IpAddr),
    /// A hostname, resolved by the caller.
    Name(String),
}

impl Host {
    /// This host with a port, as a protocol address.
    pub fn to_address(&self, port: u16) -> Address {
        match self {
            Host::Ip(ip) => Address::from((*ip, port)),
            Host::Name(name) => Address::Domain(name.clone(), port),
        }
    }

    /// The IP, if this is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Ip(ip) => Some(*ip),
            Host::Name(_) => None,
        }
    }

    /// The host as it goes in a URL authority (IPv6 in brackets).
    fn url_form(&self) -> String {
        match self {
            Host::Ip(IpAddr::V6(v6)) => format!("[{v6}]"),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for Host {
    /// The bare host (IPv6 without brackets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

impl FromStr for Host {
    type Err = String;

    /// An IP literal (IPv6 optionally in brackets) or a hostname of letters, digits, `-`, `_`
    /// and dots (at most 253 characters, labels of at most 63).
    fn from_str(s: &str) -> Result<Host, String> {
        let t = s.trim();
        let unbracketed = t.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
        if let Some(inner) = unbracketed {
            return inner
                .parse::<Ipv6Addr>()
                .map(|v6| Host::Ip(IpAddr::V6(v6)))
                .map_err(|_| format!("{s:?} is not an IP address or hostname"));
        }
        if let Ok(ip) = t.parse::<IpAddr>() {
            return Ok(Host::Ip(ip));
        }
        let name = t.strip_suffix('.').unwrap_or(t);
        let label_ok = |l: &str| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!("{s:?} is not an IP address or hostname"));
        }
        Ok(Host::Name(t.to_owned()))
    }
}

// =============================================================================================
// IpSet
// =============================================================================================

/// One IP network: an address with its host bits cleared, and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

fn mask_v4(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

fn mask_v6(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    }
}

impl Cidr {
    /// The network `addr/prefix` (host bits are cleared). An IPv4-mapped IPv6 network of
    /// prefix 96 or more becomes the IPv4 network it maps.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, String> {
        match addr {
            IpAddr::V4(v4) => {
                if prefix > 32 {
                    return Err(format!("prefix length {prefix} is too long for IPv4 (at most 32)"));
                }
                let bits = u32::from(v4) & mask_v4(prefix);
                Ok(Cidr {
                    addr: IpAddr::V4(Ipv4Addr::from(bits)),
                    prefix,
                })
            }
            IpAddr::V6(v6) => {
                if prefix > 128 {
                    return Err(format!("prefix length {prefix} is too long for IPv6 (at most 128)"));
                }
                if prefix >= 96
                    && let Some(v4) = v6.to_ipv4_mapped()
                {
                    return Cidr::new(IpAddr::V4(v4), prefix - 96);
                }
                let bits = u128::from(v6) & mask_v6(prefix);
                Ok(Cidr {
                    addr: IpAddr::V6(Ipv6Addr::from(bits)),
                    prefix,
                })
            }
        }
    }

    /// A single address (`/32` or `/128`).
    pub fn host(addr: IpAddr) -> Cidr {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Cidr::new(addr, prefix).expect("full-length prefix is valid")
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in this network (same family only; see [`IpSet::contains`] for mapping).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => u32::from(ip) & mask_v4(self.prefix) == u32::from(net),
            (IpAddr::V6(net), IpAddr::V6(ip)) => u128::from(ip) & mask_v6(self.prefix) == u128::from(net),
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `10.0.0.0/8`, `::1`, `fe80::/10`, `192.168.1.1` (a bare address is a single host).
    fn from_str(s: &str) -> Result<Cidr, String> {
        let t = s.trim();
        let bad = || format!("{t:?} is not an IP address or CIDR");
        match t.split_once('/') {
            None => t.parse::<IpAddr>().map(Cidr::host).map_err(|_| bad()),
            Some((a, p)) => {
                let addr = a.parse::<IpAddr>().map_err(|_| bad())?;
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let prefix: u8 = p.parse().map_err(|_| format!("{t:?}: prefix length {p} is too long"))?;
                Cidr::new(addr, prefix).map_err(|e| format!("{t:?}: {e}"))
            }
        }
    }
}

/// A set of IP networks, used for `forbidden_ip`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    nets: Vec<Cidr>,
}

impl IpSet {
    /// The empty set (contains nothing: forbids nothing).
    pub fn new() -> IpSet {
        IpSet::default()
    }

    /// The default `forbidden_ip`: loopback (127.0.0.0/8, ::1), unspecified ("this network"
    /// 0.0.0.0/8, ::), link-local (169.254.0.0/16, fe80::/10), and the private ranges
    /// (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, carrier-grade NAT 100.64.0.0/10, unique
    /// local fc00::/7), as outline-ss-server does: a server's key holders should not reach
    /// the networks behind it unless its operator says so. IPv4-mapped IPv6 addresses are
    /// covered by [`IpSet::contains`].
    pub fn default_forbidden() -> IpSet {
        "127.0.0.0/8,::1,0.0.0.0/8,::/128,169.254.0.0/16,fe80::/10,\
         10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7"
            .parse()
            .expect("valid default list")
    }

    /// Adds a network.
    pub fn insert(&mut self, net: Cidr) {
        if !self.nets.contains(&net) {
            self.nets.push(net);
        }
    }

    /// Whether `ip` is in any network of the set. An IPv4-mapped IPv6 address
    /// (`::ffff:a.b.c.d`) is also checked as the IPv4 address it maps.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.matching(ip).is_some()
    }

    /// The first network of the set that holds `ip` (as [`IpSet::contains`]): the rule a
    /// refusal names in the log.
    pub fn matching(&self, ip: IpAddr) -> Option<&Cidr> {
        let mapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.nets
            .iter()
            .find(|n| n.contains(ip) || mapped.is_some_and(|m| n.contains(m)))
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// The networks, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &Cidr> {
        self.nets.iter()
    }
}

impl FromStr for IpSet {
    type Err = String;

    /// A comma-separated list of addresses and CIDRs; empty entries are skipped, so `""` is the
    /// empty set.
    fn from_str(s: &str) -> Result<IpSet, String> {
        let mut set = IpSet::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            set.insert(entry.parse()?);
        }
        Ok(set)
    }
}

impl fmt::Display for IpSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.nets.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for IpSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IpSet({self})")
    }
}

// =============================================================================================
// Errors
// =============================================================================================

/// Why the configuration could not be loaded. Display gives a one-line message starting with
/// `config:` that names the field and the reason.
#[derive(Debug)]
pub enum ConfigError {
    /// The file given with `-c` could not be read.
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        error: io::Error,
    },
    /// The file is not valid JSON (or not a JSON object).
    Syntax {
        /// 1-based line (0 if unknown).
        line: usize,
        /// 1-based column (0 if unknown).
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A field has an invalid value, or a required field is missing.
    Invalid {
        /// The JSON key (also used for values that came from flags or the URL).
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The `--server-url` is malformed.
    Url(UrlError),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, error } => write!(f, "config: cannot read {:?}: {error}", path.display()),
            ConfigError::Syntax { line, column, message } => {
                write!(f, "config: invalid JSON at line {line} column {column}: {message}")
            }
            ConfigError::Invalid { field, reason } => write!(f, "config: {field:?}: {reason}"),
            ConfigError::Url(e) => write!(f, "config: \"server_url\": {e}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { error, .. } => Some(error),
            ConfigError::Url(e) => Some(e),
            _ => None,
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

// =============================================================================================
// Field parsers shared by the file, the URL and the flags
// =============================================================================================

/// Formats user text for an error: bare if it looks like a number, quoted otherwise.
fn shown(s: &str) -> String {
    let t = s.trim();
    let digits = t.strip_prefix('-').unwrap_or(t);
    let numeric = digits.starts_with(|c: char| c.is_ascii_digit()) && t.parse::<f64>().is_ok();
    if numeric { t.to_owned() } else { format!("{s:?}") }
}

fn port_from_text(field: &'static str, s: &str) -> Result<u16, ConfigError> {
    match s.trim().parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(invalid(field, format!("{} is not a port (1-65535)", shown(s)))),
    }
}

/// A positive integer no greater than `max`; `what` completes "N is not a ...".
fn count_from_text(field: &'static str, s: &str, what: &str, max: u64) -> Result<u64, ConfigError> {
    match s.trim().parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(invalid(field, format!("{} is not {what} (1-{max})", shown(s)))),
    }
}

fn hosts_from_list<'a>(field: &'static str, items: impl Iterator<Item = &'a str>) -> Result<Vec<Host>, ConfigError> {
    let hosts = items
        .map(|s| s.parse::<Host>().map_err(|e| invalid(field, e)))
        .collect::<Result<Vec<_>, _>>()?;
    if hosts.is_empty() {
        return Err(invalid(field, "the list is empty"));
    }
    Ok(hosts)
}

fn host_from_text(field: &'static str, s: &str) -> Result<Host, ConfigError> {
    s.parse().map_err(|e| invalid(field, e))
}

fn method_from_text(s: &str) -> Result<String, ConfigError> {
    canonical_method(s).map(str::to_owned).map_err(|e| invalid("method", e))
}

fn nameservers_from_text(s: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let parsed = item
            .parse::<SocketAddr>()
            .ok()
            .or_else(|| item.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
            .or_else(|| {
                let inner = item.strip_prefix('[')?.strip_suffix(']')?;
                inner
                    .parse::<Ipv6Addr>()
                    .ok()
                    .map(|ip| SocketAddr::new(IpAddr::V6(ip), 53))
            })
            .filter(|sa| sa.port() != 0);
        match parsed {
            Some(sa) => out.push(sa),
            None => {
                return Err(invalid(
                    "nameserver",
                    format!("{item:?} is not an IP address with optional :port"),
                ));
            }
        }
    }
    Ok(out)
}

fn forbidden_from_text(s: &str) -> Result<IpSet, ConfigError> {
    s.parse().map_err(|e| invalid("forbidden_ip", e))
}

fn tunnel_from_text(s: &str) -> Result<Address, ConfigError> {
    s.trim()
        .parse::<Address>()
        .map_err(|e| invalid("tunnel_address", e.to_string()))
}

fn udp_max_associations_from_text(s: &str) -> Result<usize, ConfigError> {
    let n = count_from_text(
        "udp_max_associations",
        s,
        "a number of associations",
        MAX_UDP_ASSOCIATIONS,
    )?;
    Ok(n as usize)
}

fn mode_from_text(s: &str) -> Result<Mode, ConfigError> {
    s.parse().map_err(|e| invalid("mode", e))
}

// JSON value adapters ---------------------------------------------------------------------

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn json_string<'a>(field: &'static str, v: &'a Value) -> Result<&'a str, ConfigError> {
    v.as_str()
        .ok_or_else(|| invalid(field, format!("expected a string, got {}", json_kind(v))))
}

/// A number or a numeric string, as text (libev accepts both).
fn json_number_text(field: &'static str, v: &Value, what: &str) -> Result<String, ConfigError> {
    match v {
        Value::Number(n) => Ok(n.to_string()),
        Value::String(s) => Ok(s.clone()),
        other => Err(invalid(field, format!("expected {what}, got {}", json_kind(other)))),
    }
}

/// A string or an array of strings.
fn json_string_list<'a>(field: &'static str, v: &'a Value) -> Result<Vec<&'a str>, ConfigError> {
    match v {
        Value::String(s) => Ok(vec![s.as_str()]),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .ok_or_else(|| invalid(field, format!("list entries must be strings, got {}", json_kind(i))))
            })
            .collect(),
        other => Err(invalid(
            field,
            format!("expected a string or an array of strings, got {}", json_kind(other)),
        )),
    }
}

fn json_bool(field: &'static str, v: &Value) -> Result<bool, ConfigError> {
    v.as_bool()
        .ok_or_else(|| invalid(field, format!("expected true or false, got {}", json_kind(v))))
}

// =============================================================================================
// Layers: each source becomes a Layer; layers merge; the result is validated.
// =============================================================================================

/// The file as serde sees it: every known key as a raw JSON value, the rest collected.
#[derive(Deserialize, Default)]
struct RawConfig {
    server: Option<Value>,
    server_port: Option<Value>,
    password: Option<Value>,
    method: Option<Value>,
    timeout: Option<Value>,
    local_address: Option<Value>,
    local_port: Option<Value>,
    mode: Option<Value>,
    fast_open: Option<Value>,
    nameserver: Option<Value>,
    forbidden_ip: Option<Value>,
    workers: Option<Value>,
    tunnel_address: Option<Value>,
    udp_max_associations: Option<Value>,
    ipv6_first: Option<Value>,
    dns_cache_max_ttl: Option<Value>,
    dns_max_queries_per_client: Option<Value>,
    plugin: Option<Value>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

/// Values from one source; `None` = not given there.
#[derive(Default)]
struct Layer {
    server: Option<Vec<Host>>,
    server_port: Option<u16>,
    /// Wiped when dropped: a layer whose password another layer overrides is dropped.
    password: Option<Zeroizing<String>>,
    method: Option<String>,
    timeout: Option<u64>,
    local_address: Option<Host>,
    local_port: Option<u16>,
    mode: Option<Mode>,
    fast_open: Option<bool>,
    nameservers: Option<Vec<SocketAddr>>,
    forbidden_ip: Option<IpSet>,
    workers: Option<usize>,
    tunnel_address: Option<Address>,
    udp_max_associations: Option<usize>,
    ipv6_first: Option<bool>,
    dns_cache_max_ttl: Option<u64>,
    dns_max_queries_per_client: Option<usize>,
}

impl Layer {
    /// Overlays `top` on `self`: every value `top` has wins.
    fn merge(&mut self, top: Layer) {
        macro_rules! take {
            ($($f:ident),*) => { $( if top.$f.is_some() { self.$f = top.$f; } )* };
        }
        take!(
            server,
            server_port,
            password,
            method,
            timeout,
            local_address,
            local_port,
            mode,
            fast_open,
            nameservers,
            forbidden_ip,
            workers,
            tunnel_address,
            udp_max_associations,
            ipv6_first,
            dns_cache_max_ttl,
            dns_max_queries_per_client
        );
    }
}

/// Most seconds accepted for `timeout` (one week).
const MAX_TIMEOUT: u64 = 7 * 24 * 3600;
/// Most worker threads accepted.
const MAX_WORKERS: u64 = 1024;
/// Most UDP associations per worker accepted (each holds a socket).
const MAX_UDP_ASSOCIATIONS: u64 = 1 << 20;
/// Most lookups in flight per client accepted for `dns_max_queries_per_client`.
const MAX_DNS_QUERIES_PER_CLIENT: u64 = 65_536;

/// Replaces `//` and `/* */` comments outside strings with spaces, keeping newlines, so that
/// serde_json's line/column positions still point into the original text.
fn strip_json_comments(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let mut in_string = false;
    while i < b.len() {
        let c = b[i];
        if in_string {
            out.push(c);
            if c == b'\\' && i + 1 < b.len() {
                out.push(b[i + 1]);
                i += 2;
                continue;
            }
            if c == b'"' {
                in_string = false;
            }
            i += 1;
        } else if c == b'"' {
            in_string = true;
            out.push(c);
            i += 1;
        } else if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            out.extend_from_slice(b"  ");
            i += 2;
            while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                out.push(if b[i] == b'\n' { b'\n' } else { b' ' });
                i += 1;
            }
            if i < b.len() {
                out.extend_from_slice(b"  ");
                i += 2;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    // Only ASCII bytes inside comments were replaced (by ASCII), multi-byte sequences elsewhere
    // are copied whole, and a comment's non-ASCII bytes are all replaced: still UTF-8. Comment
    // bytes that are UTF-8 continuation bytes are replaced one by one with spaces, too.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn syntax_error(e: &serde_json::Error) -> ConfigError {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
    ConfigError::Syntax {
        line: e.line(),
        column: e.column(),
        message,
    }
}

/// Parses the JSON file text into a layer, adding warnings.
fn file_layer(text: &str, role: Role, warnings: &mut Vec<String>) -> Result<Layer, ConfigError> {
    let value: Value = serde_json::from_str(&strip_json_comments(text)).map_err(|e| syntax_error(&e))?;
    if !value.is_object() {
        return Err(ConfigError::Syntax {
            line: 1,
            column: 1,
            message: format!("the top level must be an object, got {}", json_kind(&value)),
        });
    }
    let raw: RawConfig = serde_json::from_value(value).map_err(|e| syntax_error(&e))?;

    for key in raw.other.keys() {
        if key.starts_with("plugin") {
            warnings.push(format!("config: {key:?} ignored: plugins are not supported"));
        } else {
            warnings.push(format!("config: unknown key {key:?} ignored"));
        }
    }
    if raw.plugin.as_ref().is_some_and(|p| p.as_str() != Some("")) {
        warnings.push("config: \"plugin\" ignored: plugins are not supported".to_owned());
    }

    let mut l = Layer::default();
    if let Some(v) = &raw.server {
        l.server = Some(hosts_from_list("server", json_string_list("server", v)?.into_iter())?);
    }
    if let Some(v) = &raw.server_port {
        l.server_port = Some(port_from_text(
            "server_port",
            &json_number_text("server_port", v, "a port number")?,
        )?);
    }
    if let Some(v) = &raw.password {
        l.password = Some(Zeroizing::new(json_string("password", v)?.to_owned()));
    }
    if let Some(v) = &raw.method {
        l.method = Some(method_from_text(json_string("method", v)?)?);
    }
    if let Some(v) = &raw.timeout {
        let t = json_number_text("timeout", v, "a number of seconds")?;
        l.timeout = Some(count_from_text("timeout", &t, "a timeout in seconds", MAX_TIMEOUT)?);
    }
    if let Some(v) = &raw.local_address {
        l.local_address = Some(host_from_text("local_address", json_string("local_address", v)?)?);
    }
    if let Some(v) = &raw.local_port {
        l.local_port = Some(port_from_text(
            "local_port",
            &json_number_text("local_port", v, "a port number")?,
        )?);
    }
    if let Some(v) = &raw.mode {
        l.mode = Some(mode_from_text(json_string("mode", v)?)?);
    }
    if let Some(v) = &raw.fast_open {
        l.fast_open = Some(json_bool("fast_open", v)?);
    }
    if let Some(v) = &raw.nameserver {
        l.nameservers = Some(nameservers_from_text(&json_string_list("nameserver", v)?.join(","))?);
    }
    if let Some(v) = &raw.forbidden_ip {
        l.forbidden_ip = Some(forbidden_from_text(&json_string_list("forbidden_ip", v)?.join(","))?);
    }
    if let Some(v) = &raw.workers {
        let t = json_number_text("workers", v, "a number of workers")?;
        l.workers = Some(count_from_text("workers", &t, "a worker count", MAX_WORKERS)? as usize);
    }
    if let Some(v) = &raw.ipv6_first {
        l.ipv6_first = Some(json_bool("ipv6_first", v)?);
    }
    if let Some(v) = &raw.dns_cache_max_ttl {
        let t = json_number_text("dns_cache_max_ttl", v, "a number of seconds")?;
        // 0 is allowed here: it turns the cache off.
        let ttl = t.trim().parse::<u64>().ok().filter(|n| *n <= MAX_TIMEOUT);
        l.dns_cache_max_ttl = Some(ttl.ok_or_else(|| {
            invalid(
                "dns_cache_max_ttl",
                format!("{} is not a number of seconds (0-{MAX_TIMEOUT})", shown(&t)),
            )
        })?);
    }
    if let Some(v) = &raw.dns_max_queries_per_client {
        let field = "dns_max_queries_per_client";
        let t = json_number_text(field, v, "a number of lookups")?;
        l.dns_max_queries_per_client =
            Some(count_from_text(field, &t, "a number of lookups", MAX_DNS_QUERIES_PER_CLIENT)? as usize);
    }
    if let Some(v) = &raw.tunnel_address {
        let s = json_string("tunnel_address", v)?;
        l.tunnel_address = Some(tunnel_from_text(s)?);
        if role == Role::Server {
            warnings.push("config: \"tunnel_address\" is only used by sslocal; ignored".to_owned());
        }
    }
    if let Some(v) = &raw.udp_max_associations {
        let t = json_number_text("udp_max_associations", v, "a number of associations")?;
        l.udp_max_associations = Some(udp_max_associations_from_text(&t)?);
    }
    Ok(l)
}

fn url_layer(url: &str, warnings: &mut Vec<String>) -> Result<Layer, ConfigError> {
    let u = parse_ss_url(url).map_err(ConfigError::Url)?;
    if u.plugin.is_some() {
        warnings.push("config: the server URL's plugin ignored: plugins are not supported".to_owned());
    }
    Ok(Layer {
        server: Some(vec![u.host]),
        server_port: Some(u.port),
        password: Some(Zeroizing::new(u.password)),
        method: Some(u.method),
        ..Layer::default()
    })
}

fn flag_layer(args: &CommonArgs, tunnel: Option<&str>, warnings: &mut Vec<String>) -> Result<Layer, ConfigError> {
    let mut l = Layer::default();
    if !args.server.is_empty() {
        let items = args.server.iter().flat_map(|s| s.split(','));
        l.server = Some(hosts_from_list("server", items)?);
    }
    if let Some(p) = &args.server_port {
        l.server_port = Some(port_from_text("server_port", p)?);
    }
    l.password = args.password.clone().map(Zeroizing::new);
    if let Some(m) = &args.method {
        l.method = Some(method_from_text(m)?);
    }
    if let Some(b) = &args.local_address {
        l.local_address = Some(host_from_text("local_address", b)?);
    }
    if let Some(p) = &args.local_port {
        l.local_port = Some(port_from_text("local_port", p)?);
    }
    if let Some(t) = &args.timeout {
        l.timeout = Some(count_from_text("timeout", t, "a timeout in seconds", MAX_TIMEOUT)?);
    }
    if let Some(m) = &args.mode {
        l.mode = Some(mode_from_text(m)?);
    }
    if args.udp_only {
        l.mode = Some(Mode::UdpOnly);
    } else if args.udp_relay {
        l.mode = Some(Mode::TcpAndUdp);
    }
    if args.fast_open {
        l.fast_open = Some(true);
    }
    if let Some(n) = &args.nameserver {
        l.nameservers = Some(nameservers_from_text(n)?);
    }
    if let Some(f) = &args.forbidden_ip {
        l.forbidden_ip = Some(forbidden_from_text(f)?);
    }
    if let Some(w) = &args.workers {
        l.workers = Some(count_from_text("workers", w, "a worker count", MAX_WORKERS)? as usize);
    }
    if let Some(t) = tunnel {
        l.tunnel_address = Some(tunnel_from_text(t)?);
    }
    if let Some(n) = &args.udp_max_associations {
        l.udp_max_associations = Some(udp_max_associations_from_text(n)?);
    }
    if args.plugin.is_some() {
        warnings.push("config: --plugin ignored: plugins are not supported".to_owned());
    }
    Ok(l)
}

// =============================================================================================
// Command line
// =============================================================================================

/// Flags shared by `ssserver` and `sslocal`, with shadowsocks-libev's letters and meanings.
/// Numbers are taken as text so that their errors read like config-file errors.
#[derive(clap::Args, Clone, Default)]
pub struct CommonArgs {
    /// JSON configuration file; flags override its values.
    #[arg(short = 'c', long = "config", value_name = "CONFIG")]
    pub config: Option<PathBuf>,
    /// Server host (ssserver: address to listen on; sslocal: server to connect to).
    /// Repeatable or comma-separated.
    #[arg(short = 's', long = "server", value_name = "SERVER_ADDR")]
    pub server: Vec<String>,
    /// Server port.
    #[arg(short = 'p', long = "server-port", value_name = "SERVER_PORT")]
    pub server_port: Option<String>,
    /// Password (for 2022-blake3-* methods: a base64 key).
    #[arg(short = 'k', long = "password", value_name = "PASSWORD")]
    pub password: Option<String>,
    /// Cipher.
    #[arg(short = 'm', long = "method", value_name = "METHOD")]
    pub method: Option<String>,
    /// sslocal: address to listen on (default 127.0.0.1). ssserver: local address for
    /// outbound connections.
    #[arg(short = 'b', long = "local-address", value_name = "LOCAL_ADDR")]
    pub local_address: Option<String>,
    /// sslocal: port to listen on.
    #[arg(short = 'l', long = "local-port", value_name = "LOCAL_PORT")]
    pub local_port: Option<String>,
    /// Idle timeout in seconds (default 300).
    #[arg(short = 't', long = "timeout", value_name = "TIMEOUT")]
    pub timeout: Option<String>,
    /// More logging; repeat for more.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Enable the UDP relay too (mode tcp_and_udp).
    #[arg(short = 'u', conflicts_with = "udp_only")]
    pub udp_relay: bool,
    /// Enable the UDP relay and disable TCP (mode udp_only).
    #[arg(short = 'U')]
    pub udp_only: bool,
    /// Relay mode: tcp_only, tcp_and_udp or udp_only.
    #[arg(long = "mode", value_name = "MODE", conflicts_with_all = ["udp_relay", "udp_only"])]
    pub mode: Option<String>,
    /// TCP Fast Open (accepted for compatibility; not supported, ignored with a warning).
    #[arg(long = "fast-open")]
    pub fast_open: bool,
    /// DNS server(s) for resolving targets, `ip[:port]`, comma-separated.
    #[arg(short = 'd', long = "nameserver", value_name = "NAMESERVER")]
    pub nameserver: Option<String>,
    /// IPs/CIDRs the server must not connect to, comma-separated; "" allows all.
    #[arg(long = "forbidden-ip", value_name = "LIST")]
    pub forbidden_ip: Option<String>,
    /// Number of worker threads.
    #[arg(long = "workers", value_name = "N")]
    pub workers: Option<String>,
    /// UDP associations each worker keeps at most; beyond it the least recently active goes.
    #[arg(long = "udp-max-associations", value_name = "N")]
    pub udp_max_associations: Option<String>,
    /// The server as an SIP002 URL (ss://...); individual flags override its parts.
    #[arg(long = "server-url", value_name = "URL")]
    pub server_url: Option<String>,
    /// SIP003 plugin (accepted for compatibility; not supported, ignored with a warning).
    #[arg(long = "plugin", value_name = "PLUGIN")]
    pub plugin: Option<String>,
}

impl fmt::Debug for CommonArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommonArgs")
            .field("config", &self.config)
            .field("server", &self.server)
            .field("server_port", &self.server_port)
            .field("password", &self.password.as_ref().map(|_| Redacted))
            .field("method", &self.method)
            .field("local_address", &self.local_address)
            .field("local_port", &self.local_port)
            .field("timeout", &self.timeout)
            .field("verbose", &self.verbose)
            .field("udp_relay", &self.udp_relay)
            .field("udp_only", &self.udp_only)
            .field("mode", &self.mode)
            .field("fast_open", &self.fast_open)
            .field("nameserver", &self.nameserver)
            .field("forbidden_ip", &self.forbidden_ip)
            .field("workers", &self.workers)
            .field("udp_max_associations", &self.udp_max_associations)
            .field("server_url", &self.server_url.as_ref().map(|_| Redacted))
            .field("plugin", &self.plugin)
            .finish()
    }
}

/// `ssserver` command line.
#[derive(clap::Parser, Clone, Debug, Default)]
#[command(name = "ssserver", version, about = "shadowsocks server")]
pub struct ServerArgs {
    /// The shared flags.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `sslocal` command line.
#[derive(clap::Parser, Clone, Debug, Default)]
#[command(name = "sslocal", version, about = "shadowsocks local SOCKS5 proxy")]
pub struct LocalArgs {
    /// The shared flags.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Tunnel mode: forward every connection on the local port to HOST:PORT via the server
    /// instead of speaking SOCKS5.
    #[arg(long = "tunnel", value_name = "HOST:PORT")]
    pub tunnel: Option<String>,
}

/// What [`Config::load`] needs from a program's parsed command line.
pub trait ProgramArgs {
    /// Which program this is.
    const ROLE: Role;
    /// The shared flags.
    fn common(&self) -> &CommonArgs;
    /// `--tunnel`, if the program has it.
    fn tunnel(&self) -> Option<&str> {
        None
    }
}

impl ProgramArgs for ServerArgs {
    const ROLE: Role = Role::Server;
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

impl ProgramArgs for LocalArgs {
    const ROLE: Role = Role::Local;
    fn common(&self) -> &CommonArgs {
        &self.common
    }
    fn tunnel(&self) -> Option<&str> {
        self.tunnel.as_deref()
    }
}

// =============================================================================================
// Config
// =============================================================================================

/// Default `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Default `udp_max_associations` (per worker).
pub const DEFAULT_UDP_MAX_ASSOCIATIONS: usize = 16_384;

/// The validated configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Which program this configuration is for.
    pub role: Role,
    /// ssserver: hosts to listen on (default `0.0.0.0`). sslocal: the server(s) to connect to
    /// (required; the first is used unless the relay balances). Never empty.
    pub server: Vec<Host>,
    /// The server port (required).
    pub server_port: u16,
    /// The password; for 2022 methods a base64 key already checked for length. Redacted in
    /// Debug, wiped when dropped.
    pub password: Zeroizing<String>,
    /// The cipher, one of [`Method::ALL`] in its canonical spelling.
    pub method: String,
    /// Idle timeout (default 300 s).
    pub timeout: Duration,
    /// sslocal: the host to listen on, always `Some` (default 127.0.0.1).
    /// ssserver: the local address for outbound connections (libev `-b`), `None` unless given.
    pub local_address: Option<Host>,
    /// sslocal: the port to listen on, always `Some` (required). ssserver: unused.
    pub local_port: Option<u16>,
    /// Which relays run (default tcp_only).
    pub mode: Mode,
    /// `fast_open` as given; TFO is not supported, so it only caused a warning.
    pub fast_open: bool,
    /// DNS servers for targets; empty = the system resolver.
    pub nameservers: Vec<SocketAddr>,
    /// Addresses the server must not connect to (checked after resolution, so a name that
    /// resolves into one is refused too).
    pub forbidden_ip: IpSet,
    /// Worker threads, if given.
    pub workers: Option<usize>,
    /// sslocal tunnel mode: the fixed target. `None` = SOCKS5 mode.
    pub tunnel_address: Option<Address>,
    /// UDP associations per worker at most ([`DEFAULT_UDP_MAX_ASSOCIATIONS`] unless given).
    pub udp_max_associations: usize,
    /// `ipv6_first`: connect to a name's IPv6 addresses before its IPv4 ones (default false).
    pub ipv6_first: bool,
    /// `dns_cache_max_ttl`: the longest the resolver caches an answer (0: no cache),
    /// if given.
    pub dns_cache_max_ttl: Option<Duration>,
    /// `dns_max_queries_per_client`: lookups one client may have in flight, if given.
    pub dns_max_queries_per_client: Option<usize>,
    /// `-v` count.
    pub verbose: u8,
    /// Non-fatal findings (unknown keys, ignored options) for the caller to log.
    pub warnings: Vec<String>,
}

struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("role", &self.role)
            .field("server", &self.server)
            .field("server_port", &self.server_port)
            .field("password", &Redacted)
            .field("method", &self.method)
            .field("timeout", &self.timeout)
            .field("local_address", &self.local_address)
            .field("local_port", &self.local_port)
            .field("mode", &self.mode)
            .field("fast_open", &self.fast_open)
            .field("nameservers", &self.nameservers)
            .field("forbidden_ip", &self.forbidden_ip)
            .field("workers", &self.workers)
            .field("tunnel_address", &self.tunnel_address)
            .field("udp_max_associations", &self.udp_max_associations)
            .field("ipv6_first", &self.ipv6_first)
            .field("dns_cache_max_ttl", &self.dns_cache_max_ttl)
            .field("dns_max_queries_per_client", &self.dns_max_queries_per_client)
            .field("verbose", &self.verbose)
            .field("warnings", &self.warnings)
            .finish()
    }
}

impl Config {
    /// Loads the configuration for a program: the `-c` file (if any), then `--server-url`,
    /// then the individual flags, validated.
    pub fn load<A: ProgramArgs>(args: &A) -> Result<Config, ConfigError> {
        let common = args.common();
        let text = match &common.config {
            Some(path) => Some(Zeroizing::new(read_file(path)?)),
            None => None,
        };
        let mut config = Config::build(A::ROLE, text.as_deref().map(String::as_str), common, args.tunnel())?;
        if let (Some(path), Some(text)) = (&common.config, &text)
            && let Some(warning) = exposed_password_warning(path, text, A::ROLE)
        {
            config.warnings.push(warning);
        }
        Ok(config)
    }

    /// Parses and validates a JSON configuration alone (no flags).
    pub fn from_json(role: Role, json: &str) -> Result<Config, ConfigError> {
        Config::build(role, Some(json), &CommonArgs::default(), None)
    }

    /// The merge behind [`Config::load`], with the file's text already read.
    pub fn build(
        role: Role,
        json: Option<&str>,
        args: &CommonArgs,
        tunnel: Option<&str>,
    ) -> Result<Config, ConfigError> {
        let mut warnings = Vec::new();
        let mut merged = Layer::default();
        if let Some(text) = json {
            merged.merge(file_layer(text, role, &mut warnings)?);
        }
        if let Some(url) = &args.server_url {
            merged.merge(url_layer(url, &mut warnings)?);
        }
        merged.merge(flag_layer(args, tunnel, &mut warnings)?);

        let missing = |field: &'static str, flag: &str| {
            invalid(
                field,
                format!("missing (set it in the config file, with {flag} or with --server-url)"),
            )
        };
        let method = merged.method.ok_or_else(|| missing("method", "-m"))?;
        let password = merged.password.ok_or_else(|| missing("password", "-k"))?;
        if password.is_empty() {
            return Err(invalid("password", "must not be empty"));
        }
        check_2022_password(&method, &password).map_err(|e| invalid("password", e))?;
        let server_port = merged.server_port.ok_or_else(|| missing("server_port", "-p"))?;
        let server = match (merged.server, role) {
            (Some(s), _) => s,
            (None, Role::Server) => vec![Host::Ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED))],
            (None, Role::Local) => return Err(missing("server", "-s")),
        };
        let (local_address, local_port) = match role {
            Role::Local => {
                let port = merged.local_port.ok_or_else(|| {
                    invalid(
                        "local_port",
                        "missing (set it in the config file or with -l)".to_owned(),
                    )
                })?;
                let host = merged
                    .local_address
                    .unwrap_or(Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)));
                (Some(host), Some(port))
            }
            Role::Server => (merged.local_address, merged.local_port),
        };
        if role == Role::Server && tunnel.is_some() {
            warnings.push("config: --tunnel is only used by sslocal; ignored".to_owned());
        }
        let fast_open = merged.fast_open.unwrap_or(false);
        if fast_open {
            warnings.push("config: \"fast_open\" ignored: TCP Fast Open is not supported".to_owned());
        }
        Ok(Config {
            role,
            server,
            server_port,
            password,
            method,
            timeout: merged.timeout.map_or(DEFAULT_TIMEOUT, Duration::from_secs),
            local_address,
            local_port,
            mode: merged.mode.unwrap_or_default(),
            fast_open,
            nameservers: merged.nameservers.unwrap_or_default(),
            forbidden_ip: merged.forbidden_ip.unwrap_or_else(IpSet::default_forbidden),
            workers: merged.workers,
            tunnel_address: merged.tunnel_address,
            udp_max_associations: merged.udp_max_associations.unwrap_or(DEFAULT_UDP_MAX_ASSOCIATIONS),
            ipv6_first: merged.ipv6_first.unwrap_or(false),
            dns_cache_max_ttl: merged.dns_cache_max_ttl.map(Duration::from_secs),
            dns_max_queries_per_client: merged.dns_max_queries_per_client,
            verbose: args.verbose,
            warnings,
        })
    }

    /// For a 2022 method, the pre-shared key the password encodes (already validated by
    /// loading); `None` for other methods.
    pub fn key_2022(&self) -> Option<Zeroizing<Vec<u8>>> {
        key_len_2022(&self.method)?;
        B64_STANDARD.decode(self.password.as_bytes()).ok().map(Zeroizing::new)
    }

    /// Every `server` host with `server_port`.
    pub fn server_addresses(&self) -> Vec<Address> {
        self.server.iter().map(|h| h.to_address(self.server_port)).collect()
    }

    /// sslocal: the address to listen on (`local_address:local_port`).
    pub fn local_listen_address(&self) -> Option<Address> {
        Some(self.local_address.as_ref()?.to_address(self.local_port?))
    }

    /// Logs [`Config::warnings`] at warn level.
    pub fn log_warnings(&self) {
        for w in &self.warnings {
            log::warn!("{w}");
        }
    }

    /// The first server as an SIP002 URL (contains the password).
    pub fn to_ss_url(&self) -> String {
        to_ss_url(&ServerUrl {
            method: self.method.clone(),
            password: self.password.to_string(),
            host: self.server[0].clone(),
            port: self.server_port,
            plugin: None,
            tag: None,
        })
    }
}

/// A warning if the config file at `path` holds a password and other users may read it
/// (group or world read permission): they would hold the key to the server.
fn exposed_password_warning(path: &Path, text: &str, role: Role) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    if mode & 0o044 == 0 {
        return None;
    }
    file_layer(text, role, &mut Vec::new()).ok()?.password?;
    Some(format!(
        "config: {} holds the password and is readable by other users (mode {:o}); \
         make it private with `chmod 600 {}`",
        path.display(),
        mode & 0o777,
        path.display()
    ))
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        error,
    })
}

// =============================================================================================
// SIP002 URLs
// =============================================================================================

/// A server described by an SIP002 `ss://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// Cipher, canonical spelling from [`Method::ALL`].
    pub method: String,
    /// Password (redacted in Debug).
    pub password: String,
    /// Server host.
    pub host: Host,
    /// Server port.
    pub port: u16,
    /// The `plugin` query parameter, decoded (not supported by ssproxy, only carried).
    pub plugin: Option<String>,
    /// The `#tag`, decoded.
    pub tag: Option<String>,
}

impl fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerUrl")
            .field("method", &self.method)
            .field("password", &Redacted)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("plugin", &self.plugin)
            .field("tag", &self.tag)
            .finish()
    }
}

/// Why an `ss://` URL could not be parsed. The message never contains the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlError {
    reason: String,
}

impl UrlError {
    fn new(reason: impl Into<String>) -> UrlError {
        UrlError { reason: reason.into() }
    }
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad ss:// URL: {}", self.reason)
    }
}

impl std::error::Error for UrlError {}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`); `None` if malformed.
fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = hex_val(*b.get(i + 1)?)?;
                let lo = hex_val(*b.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn split_method_password(s: &str) -> Result<(String, String), UrlError> {
    let (m, p) = s
        .split_once(':')
        .ok_or_else(|| UrlError::new("userinfo is not method:password"))?;
    let method = canonical_method(m).map_err(UrlError::new)?;
    Ok((method.to_owned(), p.to_owned()))
}

fn decode_base64_text(s: &str) -> Result<String, UrlError> {
    let bytes = B64_URL_SAFE
        .decode(s)
        .or_else(|_| B64_STANDARD.decode(s))
        .map_err(|_| UrlError::new("userinfo is neither method:password nor valid base64"))?;
    String::from_utf8(bytes).map_err(|_| UrlError::new("base64 userinfo is not UTF-8"))
}

fn parse_host_port(s: &str) -> Result<(Host, u16), UrlError> {
    let bad = || UrlError::new(format!("{s:?} is not host:port"));
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once(']').ok_or_else(bad)?;
        (format!("[{h}]"), p.strip_prefix(':').ok_or_else(bad)?)
    } else {
        let (h, p) = s.rsplit_once(':').ok_or_else(bad)?;
        if h.contains(':') {
            return Err(UrlError::new(format!("{s:?}: an IPv6 host must be in brackets")));
        }
        (h.to_owned(), p)
    };
    let port = match port.parse::<u16>() {
        Ok(p) if p != 0 => p,
        _ => return Err(UrlError::new(format!("{} is not a port (1-65535)", shown(port)))),
    };
    let host = host.parse::<Host>().map_err(UrlError::new)?;
    Ok((host, port))
}

/// Parses an SIP002 URL: `ss://USERINFO@HOST:PORT[/][?plugin=...][#tag]`, where USERINFO is
/// base64url (padding optional) of `method:password`, or `method:password` percent-encoded
/// (required by SIP022 for 2022 methods). The legacy form `ss://BASE64(method:password@host:port)`
/// is accepted too. The method must be one of [`Method::ALL`].
pub fn parse_ss_url(url: &str) -> Result<ServerUrl, UrlError> {
    let url = url.trim();
    let rest = match url.get(..5) {
        Some(scheme) if scheme.eq_ignore_ascii_case("ss://") => &url[5..],
        _ => return Err(UrlError::new("does not start with ss://")),
    };
    let (rest, tag) = match rest.split_once('#') {
        Some((r, t)) => (r, Some(percent_decode(t, false).unwrap_or_else(|| t.to_owned()))),
        None => (rest, None),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);

    let (method, password, hostport) = match rest.rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let bad_escape = || UrlError::new("bad %-escape in userinfo");
            let decoded = percent_decode(userinfo, false).ok_or_else(bad_escape)?;
            let (method, password) = if let Some((m, p)) = userinfo.split_once(':') {
                // Plain `method:password`, each part percent-encoded (SIP022 form).
                let m = percent_decode(m, false).ok_or_else(bad_escape)?;
                let p = percent_decode(p, false).ok_or_else(bad_escape)?;
                (canonical_method(&m).map_err(UrlError::new)?.to_owned(), p)
            } else if decoded.contains(':') {
                // Plain, with the colon percent-encoded too.
                split_method_password(&decoded)?
            } else {
                split_method_password(&decode_base64_text(&decoded)?)?
            };
            (method, password, hostport.to_owned())
        }
        None => {
            // Legacy: everything base64.
            let text = decode_base64_text(rest)?;
            let (userinfo, hostport) = text.rsplit_once('@').ok_or_else(|| UrlError::new("no @host:port"))?;
            let (method, password) = split_method_password(userinfo)?;
            (method, password, hostport.to_owned())
        }
    };
    let (host, port) = parse_host_port(&hostport)?;

    let mut plugin = None;
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if let Some(v) = pair.strip_prefix("plugin=") {
            let v = percent_decode(v, true).ok_or_else(|| UrlError::new("bad %-escape in plugin"))?;
            if !v.is_empty() {
                plugin = Some(v);
            }
        }
    }
    Ok(ServerUrl {
        method,
        password,
        host,
        port,
        plugin,
        tag: tag.filter(|t| !t.is_empty()),
    })
}

/// Formats an SIP002 URL: base64url-no-pad userinfo, except percent-encoded `method:password`
/// for 2022 methods (as SIP022 requires); IPv6 hosts in brackets.
pub fn to_ss_url(u: &ServerUrl) -> String {
    let userinfo = if is_2022(&u.method) {
        format!("{}:{}", percent_encode(&u.method), percent_encode(&u.password))
    } else {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", u.method, u.password))
    };
    let mut s = format!("ss://{userinfo}@{}:{}", u.host.url_form(), u.port);
    if let Some(p) = &u.plugin {
        s.push_str("/?plugin=");
        s.push_str(&percent_encode(p));
    }
    if let Some(t) = &u.tag {
        s.push('#');
        s.push_str(&percent_encode(t));
    }
    s
}

// =============================================================================================
// Tests
// =============================================================================================

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    const KEY32: &str = "YctPZ6U7xPPcU+gp3u+OaJbN1c+FIk6bgUDvWgXH1hQ=";
    const KEY16: &str = "AAECAwQFBgcICQoLDA0ODw==";

    fn err(role: Role, json: &str) -> String {
        Config::from_json(role, json).unwrap_err().to_string()
    }

    fn base() -> serde_json::Map<String, Value> {
        serde_json::json!({
            "server": "1.2.3.4", "server_port": 8388, "password": "pw", "method": "aes-256-gcm", "local_port": 1080
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn with(key: &str, v: Value) -> String {
        let mut m = base();
        m.insert(key.to_owned(), v);
        Value::Object(m).to_string()
    }

    #[test]
    fn dns_keys_set_the_family_order_the_cache_and_the_per_client_cap() {
        let c = Config::from_json(Role::Server, &with("ipv6_first", true.into())).unwrap();
        assert!(c.ipv6_first);
        let c = Config::from_json(Role::Server, &with("dns_cache_max_ttl", 0.into())).unwrap();
        assert_eq!(c.dns_cache_max_ttl, Some(Duration::ZERO), "0 turns the cache off");
        let c = Config::from_json(Role::Server, &with("dns_max_queries_per_client", "8".into())).unwrap();
        assert_eq!(c.dns_max_queries_per_client, Some(8));
        assert_eq!(c.dns_cache_max_ttl, None);
        assert_eq!(
            err(Role::Server, &with("dns_cache_max_ttl", (-1).into())),
            r#"config: "dns_cache_max_ttl": -1 is not a number of seconds (0-604800)"#
        );
        assert_eq!(
            err(Role::Server, &with("dns_max_queries_per_client", 0.into())),
            r#"config: "dns_max_queries_per_client": 0 is not a number of lookups (1-65536)"#
        );
    }

    fn without(key: &str) -> String {
        let mut m = base();
        m.remove(key);
        Value::Object(m).to_string()
    }

    #[test]
    fn minimal_local_defaults() {
        let c = Config::from_json(Role::Local, &Value::Object(base()).to_string()).unwrap();
        assert_eq!(c.server, [Host::Ip("1.2.3.4".parse().unwrap())]);
        assert_eq!(c.server_port, 8388);
        assert_eq!(c.method, "aes-256-gcm");
        assert_eq!(*c.password, "pw");
        assert_eq!(c.timeout, Duration::from_secs(300));
        assert_eq!(c.local_address, Some(Host::Ip("127.0.0.1".parse().unwrap())));
        assert_eq!(c.local_port, Some(1080));
        assert_eq!(c.local_listen_address().unwrap().to_string(), "127.0.0.1:1080");
        assert_eq!(c.mode, Mode::TcpOnly);
        assert!(!c.fast_open);
        assert!(c.nameservers.is_empty());
        assert_eq!(c.forbidden_ip, IpSet::default_forbidden());
        assert_eq!(c.workers, None);
        assert_eq!(c.tunnel_address, None);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.server_addresses()[0].to_string(), "1.2.3.4:8388");
    }

    #[test]
    fn full_file() {
        let json = r#"{
            // libev-style comment
            "server": ["0.0.0.0", "::", "example.com"],
            "server_port": "8388",
            "password": "secret",
            "method": "CHACHA20-IETF-POLY1305", /* case-insensitive */
            "timeout": 60,
            "local_address": "::1",
            "local_port": 1080,
            "mode": "tcp_and_udp",
            "fast_open": true,
            "nameserver": "8.8.8.8,[2001:4860:4860::8888]:5353",
            "forbidden_ip": "10.0.0.0/8, ::1",
            "workers": 4,
            "tunnel_address": "example.org:53",
            "plugin": "obfs-local",
            "plugin_opts": "obfs=http",
            "user": "nobody"
        }"#;
        let c = Config::from_json(Role::Local, json).unwrap();
        assert_eq!(
            c.server,
            [
                Host::Ip("0.0.0.0".parse().unwrap()),
                Host::Ip("::".parse().unwrap()),
                Host::Name("example.com".into())
            ]
        );
        assert_eq!(c.server_addresses()[1].to_string(), "[::]:8388");
        assert_eq!(c.method, "chacha20-ietf-poly1305");
        assert_eq!(c.timeout, Duration::from_secs(60));
        assert_eq!(c.local_listen_address().unwrap().to_string(), "[::1]:1080");
        assert_eq!(c.mode, Mode::TcpAndUdp);
        assert!(c.mode.tcp_enabled() && c.mode.udp_enabled());
        assert!(c.fast_open);
        assert_eq!(
            c.nameservers,
            [
                "8.8.8.8:53".parse().unwrap(),
                "[2001:4860:4860::8888]:5353".parse().unwrap()
            ]
        );
        assert_eq!(c.forbidden_ip.to_string(), "10.0.0.0/8,::1/128");
        assert_eq!(c.workers, Some(4));
        assert_eq!(c.tunnel_address, Some(Address::Domain("example.org".into(), 53)));
        let w = c.warnings.join("\n");
        assert!(w.contains("\"plugin\" ignored"), "{w}");
        assert!(w.contains("\"plugin_opts\" ignored"), "{w}");
        assert!(w.contains("unknown key \"user\" ignored"), "{w}");
        assert!(w.contains("fast_open"), "{w}");
    }

    #[test]
    fn server_defaults() {
        let c = Config::from_json(Role::Server, &without("server")).unwrap();
        assert_eq!(c.server, [Host::Ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED))]);
        assert_eq!(c.local_address, None);
        let c = Config::from_json(Role::Server, &without("local_port")).unwrap();
        assert_eq!(c.local_port, None);
    }

    #[test]
    fn field_error_messages() {
        assert_eq!(
            err(Role::Local, &with("server_port", 70000.into())),
            r#"config: "server_port": 70000 is not a port (1-65535)"#
        );
        assert_eq!(
            err(Role::Local, &with("server_port", 0.into())),
            r#"config: "server_port": 0 is not a port (1-65535)"#
        );
        assert_eq!(
            err(Role::Local, &with("server_port", "http".into())),
            r#"config: "server_port": "http" is not a port (1-65535)"#
        );
        assert_eq!(
            err(Role::Local, &with("server_port", serde_json::json!(8388.5))),
            r#"config: "server_port": 8388.5 is not a port (1-65535)"#
        );
        assert_eq!(
            err(Role::Local, &with("server_port", true.into())),
            r#"config: "server_port": expected a port number, got a boolean"#
        );
        assert_eq!(
            err(Role::Local, &with("local_port", (-1).into())),
            r#"config: "local_port": -1 is not a port (1-65535)"#
        );
        assert_eq!(
            err(Role::Local, &with("method", "rc4".into())),
            format!(
                r#"config: "method": unknown cipher "rc4"; expected one of {}"#,
                method_names()
            )
        );
        assert_eq!(
            err(Role::Local, &with("mode", "both".into())),
            r#"config: "mode": unknown mode "both"; expected tcp_only, tcp_and_udp or udp_only"#
        );
        assert_eq!(
            err(Role::Local, &with("timeout", 0.into())),
            r#"config: "timeout": 0 is not a timeout in seconds (1-604800)"#
        );
        assert_eq!(
            err(Role::Local, &with("server", "1.2.3.4:80".into())),
            r#"config: "server": "1.2.3.4:80" is not an IP address or hostname"#
        );
        assert_eq!(
            err(Role::Local, &with("server", serde_json::json!([]))),
            r#"config: "server": the list is empty"#
        );
        assert_eq!(
            err(Role::Local, &with("forbidden_ip", "10.0.0.0/33".into())),
            r#"config: "forbidden_ip": "10.0.0.0/33": prefix length 33 is too long for IPv4 (at most 32)"#
        );
        assert_eq!(
            err(Role::Local, &with("nameserver", "dns.google".into())),
            r#"config: "nameserver": "dns.google" is not an IP address with optional :port"#
        );
        assert_eq!(
            err(Role::Local, &with("workers", 0.into())),
            r#"config: "workers": 0 is not a worker count (1-1024)"#
        );
        assert_eq!(
            err(Role::Local, &with("fast_open", "yes".into())),
            r#"config: "fast_open": expected true or false, got a string"#
        );
        assert_eq!(
            err(Role::Local, &with("password", 1234.into())),
            r#"config: "password": expected a string, got a number"#
        );
        assert_eq!(
            err(Role::Local, &with("password", "".into())),
            r#"config: "password": must not be empty"#
        );
        assert!(err(Role::Local, &with("tunnel_address", "nope".into())).starts_with(r#"config: "tunnel_address": "#));
    }

    #[test]
    fn missing_fields() {
        assert_eq!(
            err(Role::Local, &without("password")),
            r#"config: "password": missing (set it in the config file, with -k or with --server-url)"#
        );
        assert!(err(Role::Local, &without("method")).starts_with(r#"config: "method": missing"#));
        assert!(err(Role::Local, &without("server")).starts_with(r#"config: "server": missing"#));
        assert!(err(Role::Server, &without("server_port")).starts_with(r#"config: "server_port": missing"#));
        assert_eq!(
            err(Role::Local, &without("local_port")),
            r#"config: "local_port": missing (set it in the config file or with -l)"#
        );
    }

    #[test]
    fn json_syntax_errors_have_position() {
        let e = err(
            Role::Local,
            "{\n  \"server\": \"1.2.3.4\",\n  \"server_port\": 8388,\n}",
        );
        assert_eq!(e, "config: invalid JSON at line 4 column 1: trailing comma");
        let e = err(Role::Local, "{\"server\": \"x\"");
        assert!(e.starts_with("config: invalid JSON at line 1 column 14: EOF"), "{e}");
        assert_eq!(
            err(Role::Local, "[1]"),
            "config: invalid JSON at line 1 column 1: the top level must be an object, got an array"
        );
        // Comments keep positions: the error is still on line 3.
        let e = err(Role::Local, "{ // c\n /* a\n b */ \"server\" 1 }");
        assert!(e.starts_with("config: invalid JSON at line 3 column "), "{e}");
        // A comment marker inside a string is not a comment.
        let c = Config::from_json(Role::Local, &with("password", "a//b/*c".into())).unwrap();
        assert_eq!(*c.password, "a//b/*c");
    }

    #[test]
    fn password_2022() {
        let ok = |m: &str, k: &str| {
            let mut j = base();
            j.insert("method".into(), m.into());
            j.insert("password".into(), k.into());
            Config::from_json(Role::Local, &Value::Object(j).to_string())
        };
        assert!(ok("2022-blake3-aes-256-gcm", KEY32).is_ok());
        assert!(ok("2022-blake3-chacha20-poly1305", KEY32).is_ok());
        assert!(ok("2022-blake3-aes-128-gcm", KEY16).is_ok());
        let c = ok("2022-blake3-aes-128-gcm", KEY16).unwrap();
        assert_eq!(*c.key_2022().unwrap(), (0u8..16).collect::<Vec<_>>());
        assert_eq!(
            Config::from_json(Role::Local, &Value::Object(base()).to_string())
                .unwrap()
                .key_2022(),
            None
        );
        assert!(ok("2022-blake3-aes-128-gcm", KEY16.trim_end_matches('=')).is_ok());
        assert_eq!(
            ok("2022-blake3-aes-128-gcm", KEY32).unwrap_err().to_string(),
            r#"config: "password": 2022-blake3-aes-128-gcm needs a base64-encoded 16-byte key, got 32 bytes"#
        );
        assert_eq!(
            ok("2022-blake3-aes-256-gcm", KEY16).unwrap_err().to_string(),
            r#"config: "password": 2022-blake3-aes-256-gcm needs a base64-encoded 32-byte key, got 16 bytes"#
        );
        let e = ok("2022-blake3-aes-256-gcm", "not base64!").unwrap_err().to_string();
        let want = r#"config: "password": 2022-blake3-aes-256-gcm needs a base64-encoded 32-byte key, and this is not"#;
        assert!(e.starts_with(want), "{e}");
        assert!(!e.contains("not base64!"), "the key must not leak: {e}");
        let e = ok("2022-blake3-aes-256-gcm", &format!("{KEY32}:{KEY32}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("iPSK:uPSK"), "{e}");
        // Non-2022 methods take any password.
        assert!(ok("aes-128-gcm", "not base64!").is_ok());
    }

    #[test]
    fn debug_redacts_password() {
        let mut j = base();
        j.insert("password".into(), "hunter2-very-secret".into());
        let c = Config::from_json(Role::Local, &Value::Object(j).to_string()).unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(d.contains("<redacted>"));
        let args = LocalArgs::try_parse_from(["sslocal", "-k", "hunter2", "--server-url", "ss://x"]).unwrap();
        assert!(!format!("{args:?}").contains("hunter2"));
        let u = parse_ss_url("ss://YWVzLTEyOC1nY206aHVudGVyMg@h:1").unwrap();
        assert_eq!(u.password, "hunter2");
        assert!(!format!("{u:?}").contains("hunter2"));
    }

    #[test]
    fn flags_override_file() {
        let dir = std::env::temp_dir().join(format!("ssproxy-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.json");
        std::fs::write(&path, Value::Object(base()).to_string()).unwrap();
        let p = path.to_str().unwrap();
        let flags = "-s 5.6.7.8 -p 9000 -k pw2 -m aes-128-gcm -b 0.0.0.0 -l 1081 -t 30 -vv -u --workers 2";
        let mut argv = vec!["sslocal", "-c", p, "--forbidden-ip", "", "--tunnel", "[::1]:53"];
        argv.extend(flags.split_whitespace());
        let args = LocalArgs::try_parse_from(argv).unwrap();
        let c = Config::load(&args).unwrap();
        assert_eq!(c.server, [Host::Ip("5.6.7.8".parse().unwrap())]);
        assert_eq!(c.server_port, 9000);
        assert_eq!(*c.password, "pw2");
        assert_eq!(c.method, "aes-128-gcm");
        assert_eq!(c.local_listen_address().unwrap().to_string(), "0.0.0.0:1081");
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert_eq!(c.verbose, 2);
        assert_eq!(c.mode, Mode::TcpAndUdp);
        assert!(c.forbidden_ip.is_empty());
        assert!(!c.forbidden_ip.contains("127.0.0.1".parse().unwrap()));
        assert_eq!(c.workers, Some(2));
        assert_eq!(c.tunnel_address.unwrap().to_string(), "[::1]:53");

        // -U is udp_only; the file alone otherwise.
        let args = ServerArgs::try_parse_from(["ssserver", "-c", p, "-U"]).unwrap();
        let c = Config::load(&args).unwrap();
        assert_eq!(c.mode, Mode::UdpOnly);
        assert!(!c.mode.tcp_enabled());
        assert_eq!(c.server_port, 8388);

        // Flag values get the same field-named errors.
        let args = ServerArgs::try_parse_from(["ssserver", "-c", p, "-p", "70000"]).unwrap();
        assert_eq!(
            Config::load(&args).unwrap_err().to_string(),
            r#"config: "server_port": 70000 is not a port (1-65535)"#
        );
        assert!(ServerArgs::try_parse_from(["ssserver", "-u", "-U"]).is_err());

        let args = ServerArgs::try_parse_from(["ssserver", "-c", "/nonexistent/ssproxy.json"]).unwrap();
        let e = Config::load(&args).unwrap_err().to_string();
        assert!(
            e.starts_with("config: cannot read \"/nonexistent/ssproxy.json\": "),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn server_url_merges_under_flags() {
        let args = LocalArgs::try_parse_from([
            "sslocal",
            "--server-url",
            "ss://YWVzLTEyOC1nY206dGVzdA@192.168.100.1:8888#Example1",
            "-l",
            "1080",
            "-p",
            "9999",
        ])
        .unwrap();
        let c = Config::load(&args).unwrap();
        assert_eq!(c.method, "aes-128-gcm");
        assert_eq!(*c.password, "test");
        assert_eq!(c.server_addresses()[0].to_string(), "192.168.100.1:9999");
        let args = LocalArgs::try_parse_from(["sslocal", "--server-url", "http://x", "-l", "1"]).unwrap();
        assert_eq!(
            Config::load(&args).unwrap_err().to_string(),
            "config: \"server_url\": bad ss:// URL: does not start with ss://"
        );
    }

    #[test]
    fn sip002_examples() {
        let u = parse_ss_url("ss://YWVzLTEyOC1nY206dGVzdA@192.168.100.1:8888#Example1").unwrap();
        assert_eq!(u.method, "aes-128-gcm");
        assert_eq!(u.password, "test");
        assert_eq!(u.host, Host::Ip("192.168.100.1".parse().unwrap()));
        assert_eq!(u.port, 8888);
        assert_eq!(u.tag.as_deref(), Some("Example1"));
        assert_eq!(u.plugin, None);
        assert_eq!(to_ss_url(&u), "ss://YWVzLTEyOC1nY206dGVzdA@192.168.100.1:8888#Example1");

        let s = concat!(
            "ss://2022-blake3-aes-256-gcm:YctPZ6U7xPPcU%2Bgp3u%2BOaJbN1c%2BFIk6bgUDvWgXH1hQ%3D",
            "@192.168.100.1:8888#Example3"
        );
        let u = parse_ss_url(s).unwrap();
        assert_eq!(u.method, "2022-blake3-aes-256-gcm");
        assert_eq!(u.password, KEY32);
        assert_eq!(u.tag.as_deref(), Some("Example3"));
        assert_eq!(to_ss_url(&u), s);
    }

    #[test]
    fn sip002_variants() {
        // Padding, plugin, IPv6, hostname, trailing slash, percent-encoded tag.
        let u = parse_ss_url(
            "ss://YWVzLTEyOC1nY206dGVzdA==@[2001:db8::1]:8388/?plugin=obfs-local%3Bobfs%3Dhttp#My%20Server",
        )
        .unwrap();
        assert_eq!(u.host, Host::Ip("2001:db8::1".parse().unwrap()));
        assert_eq!(u.plugin.as_deref(), Some("obfs-local;obfs=http"));
        assert_eq!(u.tag.as_deref(), Some("My Server"));
        let again = to_ss_url(&u);
        assert_eq!(
            again,
            "ss://YWVzLTEyOC1nY206dGVzdA@[2001:db8::1]:8388/?plugin=obfs-local%3Bobfs%3Dhttp#My%20Server"
        );
        assert_eq!(parse_ss_url(&again).unwrap(), u);
        // Plain userinfo for a non-2022 method, hostname host.
        let u = parse_ss_url("ss://aes-256-gcm:p%40ss@example.com:443").unwrap();
        assert_eq!((u.method.as_str(), u.password.as_str()), ("aes-256-gcm", "p@ss"));
        assert_eq!(u.host, Host::Name("example.com".into()));
        // Password with ':' and base64 characters that need the URL-safe alphabet.
        let u = ServerUrl {
            method: "chacha20-ietf-poly1305".into(),
            password: "a:b?>>~".into(),
            host: Host::Name("h.example".into()),
            port: 1,
            plugin: None,
            tag: None,
        };
        assert_eq!(parse_ss_url(&to_ss_url(&u)).unwrap(), u);
        // Fully percent-encoded userinfo, colon included.
        let u = parse_ss_url("ss://aes-128-gcm%3Atest@1.2.3.4:1").unwrap();
        assert_eq!((u.method.as_str(), u.password.as_str()), ("aes-128-gcm", "test"));
        // Base64 userinfo with its padding percent-encoded.
        let u = parse_ss_url("ss://YWVzLTEyOC1nY206dGVzdA%3D%3D@1.2.3.4:1").unwrap();
        assert_eq!(u.password, "test");
        // Legacy whole-base64 form.
        let legacy = format!("ss://{}", URL_SAFE_NO_PAD.encode("aes-128-gcm:test@10.0.0.1:8388"));
        let u = parse_ss_url(&legacy).unwrap();
        assert_eq!((u.password.as_str(), u.port), ("test", 8388));
    }

    #[test]
    fn sip002_errors() {
        let e = |s: &str| parse_ss_url(s).unwrap_err().to_string();
        assert_eq!(e("http://a@b:1"), "bad ss:// URL: does not start with ss://");
        assert!(e("ss://cmM0LW1kNTpwYXNzd2Q@192.168.100.1:8888").contains("unknown cipher \"rc4-md5\""));
        assert_eq!(
            e("ss://YWVzLTEyOC1nY206dGVzdA@1.2.3.4"),
            "bad ss:// URL: \"1.2.3.4\" is not host:port"
        );
        assert_eq!(
            e("ss://YWVzLTEyOC1nY206dGVzdA@1.2.3.4:0"),
            "bad ss:// URL: 0 is not a port (1-65535)"
        );
        assert!(e("ss://YWVzLTEyOC1nY206dGVzdA@::1:80").contains("must be in brackets"));
        assert!(e("ss://!!!@1.2.3.4:1").contains("neither method:password nor valid base64"));
        assert!(e("ss://YWVzLTEyOC1nY20@1.2.3.4:1").contains("not method:password"));
        assert!(e("ss://aes-128-gcm:%zz@1.2.3.4:1").contains("%-escape"));
    }

    #[test]
    fn ip_set() {
        let s: IpSet = "127.0.0.0/8,::1,10.0.0.1".parse().unwrap();
        let has = |ip: &str| s.contains(ip.parse().unwrap());
        assert!(has("127.0.0.1") && has("127.255.255.255") && has("::1") && has("10.0.0.1"));
        assert!(!has("10.0.0.2") && !has("128.0.0.1") && !has("::2"));
        // IPv4-mapped IPv6 is checked as IPv4.
        assert!(has("::ffff:127.0.0.1") && has("::ffff:10.0.0.1"));
        assert!(!has("::ffff:10.0.0.2"));
        // Mapped entries become IPv4 entries; host bits are cleared.
        let s: IpSet = "::ffff:192.168.0.0/112, 172.16.5.4/12".parse().unwrap();
        assert_eq!(s.to_string(), "192.168.0.0/16,172.16.0.0/12");
        assert!(s.contains("192.168.9.9".parse().unwrap()) && s.contains("172.31.0.1".parse().unwrap()));
        // ::/0 still covers mapped addresses via the IPv6 check.
        let all6: IpSet = "::/0".parse().unwrap();
        assert!(all6.contains("::ffff:8.8.8.8".parse().unwrap()) && !all6.contains("8.8.8.8".parse().unwrap()));
        let all: IpSet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!("".parse::<IpSet>().unwrap().is_empty());
        assert!(" , ".parse::<IpSet>().unwrap().is_empty());
        for bad in [
            "300.1.1.1",
            "10.0.0.0/",
            "10.0.0.0/x",
            "::1/129",
            "10.0.0.0/999",
            "example.com",
        ] {
            assert!(bad.parse::<IpSet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn forbidden_ip_defaults() {
        let d = IpSet::default_forbidden();
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "0.0.0.0",
            "::",
            "169.254.169.254",
            "fe80::1",
            "febf::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(d.contains(ip.parse().unwrap()), "{ip} should be forbidden");
        }
        for ip in [
            "8.8.8.8",
            "2001:db8::1",
            "fec0::1",
            "::2",
            "172.32.0.1",
            "100.128.0.1",
            "11.0.0.1",
        ] {
            assert!(!d.contains(ip.parse().unwrap()), "{ip} should be allowed");
        }
        // From the file: array form, string form, and an explicitly empty list.
        let c = Config::from_json(
            Role::Server,
            &with("forbidden_ip", serde_json::json!(["10.0.0.0/8", "::1"])),
        )
        .unwrap();
        assert_eq!(c.forbidden_ip.to_string(), "10.0.0.0/8,::1/128");
        let c = Config::from_json(Role::Server, &with("forbidden_ip", serde_json::json!([]))).unwrap();
        assert!(c.forbidden_ip.is_empty());
        let c = Config::from_json(Role::Server, &with("forbidden_ip", "".into())).unwrap();
        assert!(c.forbidden_ip.is_empty());
        let c = Config::from_json(Role::Server, &with("forbidden_ip", Value::Null)).unwrap();
        assert_eq!(c.forbidden_ip, IpSet::default_forbidden());
    }

    #[test]
    fn private_ranges_are_forbidden_by_default_and_named_when_refused() {
        let d = IpSet::default_forbidden();
        for (ip, rule) in [
            ("10.1.2.3", "10.0.0.0/8"),
            ("172.16.0.1", "172.16.0.0/12"),
            ("172.31.255.254", "172.16.0.0/12"),
            ("192.168.1.1", "192.168.0.0/16"),
            ("100.64.0.1", "100.64.0.0/10"),
            ("100.127.255.254", "100.64.0.0/10"),
            ("fc00::1", "fc00::/7"),
            ("fdff:1234::1", "fc00::/7"),
            ("::ffff:10.0.0.1", "10.0.0.0/8"),
            ("::ffff:172.20.0.1", "172.16.0.0/12"),
            ("::ffff:192.168.0.1", "192.168.0.0/16"),
            ("::ffff:100.100.0.1", "100.64.0.0/10"),
            ("::ffff:169.254.1.1", "169.254.0.0/16"),
            ("::ffff:0.0.0.0", "0.0.0.0/8"),
        ] {
            let matched = d.matching(ip.parse().unwrap()).map(ToString::to_string);
            assert_eq!(matched.as_deref(), Some(rule), "{ip}");
        }
        assert_eq!(d.matching("1.1.1.1".parse().unwrap()), None);
    }

    #[test]
    fn hosts() {
        assert_eq!("[::1]".parse::<Host>().unwrap(), Host::Ip("::1".parse().unwrap()));
        assert_eq!(
            "my-host_1.example.".parse::<Host>().unwrap(),
            Host::Name("my-host_1.example.".into())
        );
        for bad in ["", "a..b", "a b", "[x]", "host:80", &"a".repeat(64)] {
            assert!(bad.parse::<Host>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tunnel_on_server_warns() {
        let c = Config::from_json(Role::Server, &with("tunnel_address", "1.1.1.1:53".into())).unwrap();
        assert!(c.warnings.iter().any(|w| w.contains("tunnel_address")));
    }

    #[test]
    fn udp_max_associations_key_and_flag() {
        let c = Config::from_json(Role::Server, &Value::Object(base()).to_string()).unwrap();
        assert_eq!(c.udp_max_associations, DEFAULT_UDP_MAX_ASSOCIATIONS);
        let c = Config::from_json(Role::Server, &with("udp_max_associations", 512.into())).unwrap();
        assert_eq!(c.udp_max_associations, 512);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(
            err(Role::Server, &with("udp_max_associations", 0.into())),
            r#"config: "udp_max_associations": 0 is not a number of associations (1-1048576)"#
        );
        let args = ServerArgs::try_parse_from(["ssserver", "-k", "pw", "-m", "aes-128-gcm", "-p", "8388"]).unwrap();
        assert_eq!(
            Config::load(&args).unwrap().udp_max_associations,
            DEFAULT_UDP_MAX_ASSOCIATIONS
        );
        let args = ServerArgs::try_parse_from([
            "ssserver",
            "-k",
            "pw",
            "-m",
            "aes-128-gcm",
            "-p",
            "8388",
            "--udp-max-associations",
            "3",
        ])
        .unwrap();
        assert_eq!(Config::load(&args).unwrap().udp_max_associations, 3);
    }
}
