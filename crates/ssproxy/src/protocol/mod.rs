//! Wire formats: SOCKS5 and the shadowsocks target address.
