//! The supported encryption methods and their parameters.

use std::fmt;
use std::str::FromStr;

use super::Error;

/// A shadowsocks encryption method, named on the command line and in config files exactly as
/// shadowsocks-libev and shadowsocks-rust name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `aes-128-gcm` (SIP004).
    Aes128Gcm,
    /// `aes-256-gcm` (SIP004).
    Aes256Gcm,
    /// `chacha20-ietf-poly1305` (SIP004).
    Chacha20IetfPoly1305,
    /// `xchacha20-ietf-poly1305` (SIP004, 24-byte nonce).
    Xchacha20IetfPoly1305,
    /// `2022-blake3-aes-128-gcm` (SIP022).
    Blake3Aes128Gcm,
    /// `2022-blake3-aes-256-gcm` (SIP022).
    Blake3Aes256Gcm,
    /// `2022-blake3-chacha20-poly1305` (SIP022; XChaCha20-Poly1305 for UDP).
    Blake3Chacha20Poly1305,
}

impl Method {
    /// Every supported method, in the order error messages list them.
    pub const ALL: [Method; 7] = [
        Method::Aes128Gcm,
        Method::Aes256Gcm,
        Method::Chacha20IetfPoly1305,
        Method::Xchacha20IetfPoly1305,
        Method::Blake3Aes128Gcm,
        Method::Blake3Aes256Gcm,
        Method::Blake3Chacha20Poly1305,
    ];

    /// The method's canonical name.
    pub const fn name(self) -> &'static str {
        match self {
            Method::Aes128Gcm => "aes-128-gcm",
            Method::Aes256Gcm => "aes-256-gcm",
            Method::Chacha20IetfPoly1305 => "chacha20-ietf-poly1305",
            Method::Xchacha20IetfPoly1305 => "xchacha20-ietf-poly1305",
            Method::Blake3Aes128Gcm => "2022-blake3-aes-128-gcm",
            Method::Blake3Aes256Gcm => "2022-blake3-aes-256-gcm",
            Method::Blake3Chacha20Poly1305 => "2022-blake3-chacha20-poly1305",
        }
    }

    /// Key length in bytes: 16 for the AES-128 methods, 32 otherwise.
    pub const fn key_len(self) -> usize {
        match self {
            Method::Aes128Gcm | Method::Blake3Aes128Gcm => 16,
            _ => 32,
        }
    }

    /// Salt length in bytes; equal to the key length for every method (SIP004 and SIP022).
    pub const fn salt_len(self) -> usize {
        self.key_len()
    }

    /// Nonce length of the stream/packet AEAD: 24 for `xchacha20-ietf-poly1305`, 12 otherwise.
    /// (SIP022 UDP with `2022-blake3-chacha20-poly1305` uses a 24-byte XChaCha nonce on the
    /// wire; that is specific to [`crate::crypto::udp2022`].)
    pub const fn nonce_len(self) -> usize {
        match self {
            Method::Xchacha20IetfPoly1305 => 24,
            _ => 12,
        }
    }

    /// AEAD tag length in bytes (16 for every method).
    pub const fn tag_len(self) -> usize {
        super::TAG_LEN
    }

    /// Whether this is a Shadowsocks 2022 (SIP022) method.
    pub const fn is_2022(self) -> bool {
        matches!(
            self,
            Method::Blake3Aes128Gcm | Method::Blake3Aes256Gcm | Method::Blake3Chacha20Poly1305
        )
    }

    /// Largest payload of one stream chunk: 0x3FFF for SIP004, 0xFFFF for SIP022.
    pub const fn max_payload(self) -> usize {
        if self.is_2022() {
            super::SIP022_MAX_PAYLOAD
        } else {
            super::SIP004_MAX_PAYLOAD
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for Method {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| Error::UnknownMethod(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in Method::ALL {
            assert_eq!(m.name().parse::<Method>().unwrap(), m);
            assert_eq!(m.to_string(), m.name());
            assert_eq!(format!("{m:>30}").trim_start(), m.name());
        }
    }

    #[test]
    fn unknown_method_error_lists_valid_ones() {
        let e = "aes-128-cfb".parse::<Method>().unwrap_err();
        assert_eq!(e, Error::UnknownMethod("aes-128-cfb".into()));
        let text = e.to_string();
        assert!(text.contains("\"aes-128-cfb\""), "{text}");
        for m in Method::ALL {
            assert!(text.contains(m.name()), "{text}");
        }
        // Exact names only.
        assert!("AES-128-GCM".parse::<Method>().is_err());
    }

    #[test]
    fn parameters() {
        use Method::*;
        let table = [
            (Aes128Gcm, 16, 12, false, 0x3FFF),
            (Aes256Gcm, 32, 12, false, 0x3FFF),
            (Chacha20IetfPoly1305, 32, 12, false, 0x3FFF),
            (Xchacha20IetfPoly1305, 32, 24, false, 0x3FFF),
            (Blake3Aes128Gcm, 16, 12, true, 0xFFFF),
            (Blake3Aes256Gcm, 32, 12, true, 0xFFFF),
            (Blake3Chacha20Poly1305, 32, 12, true, 0xFFFF),
        ];
        for (m, key, nonce, is2022, max) in table {
            assert_eq!(m.key_len(), key, "{m}");
            assert_eq!(m.salt_len(), key, "{m}");
            assert_eq!(m.nonce_len(), nonce, "{m}");
            assert_eq!(m.tag_len(), 16, "{m}");
            assert_eq!(m.is_2022(), is2022, "{m}");
            assert_eq!(m.max_payload(), max, "{m}");
        }
    }
}
