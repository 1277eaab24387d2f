//! The shadowsocks configuration: JSON file, command-line flags and `ss://` URLs.
