//! Master keys and session subkeys.
//!
//! * SIP004: the master key is OpenSSL's `EVP_BytesToKey(MD5, no salt, 1 iteration)` of the
//!   password; the session subkey is `HKDF-SHA1(ikm = master key, salt, info = "ss-subkey")`.
//! * SIP022: the pre-shared key is given as standard padded base64 of exactly `key_len` bytes;
//!   the session subkey is `blake3::derive_key("shadowsocks 2022 session subkey", key || salt)`
//!   truncated to `key_len`.

use std::fmt;

use base64::{DecodeError, Engine};
use md5::{Digest, Md5};
use ring::hkdf;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{Error, MAX_KEY_LEN, Method};

/// BLAKE3 key-derivation context of SIP022 session subkeys.
const SIP022_SUBKEY_CONTEXT: &str = "shadowsocks 2022 session subkey";

/// A method's master key (SIP004) or pre-shared key (SIP022). Its `Debug` output redacts the
/// key bytes, and the bytes are zeroized on drop (`zeroize`: volatile writes the optimizer
/// keeps). Copies made by the AEAD libraries from session subkeys (ring's expanded AES and
/// ChaCha keys) are theirs to wipe, and are not covered.
#[derive(Clone)]
pub struct Key {
    method: Method,
    bytes: [u8; MAX_KEY_LEN],
}

impl Key {
    /// The key from a config-file/command-line `password`: for SIP022 methods the base64 PSK
    /// ([`Key::from_base64`]), for SIP004 methods the password ([`Key::from_password`]).
    pub fn new(method: Method, password: &str) -> Result<Key, Error> {
        if method.is_2022() {
            Key::from_base64(method, password)
        } else {
            Key::from_password(method, password.as_bytes())
        }
    }

    /// SIP004: derives the master key from a password with `EVP_BytesToKey` (MD5). SIP022
    /// forbids password-derived keys, so this fails for 2022 methods.
    pub fn from_password(method: Method, password: &[u8]) -> Result<Key, Error> {
        if method.is_2022() {
            return Err(Error::InvalidKey(format!(
                "{method} needs a base64 key of {} bytes, not a password (try `openssl rand -base64 {}`)",
                method.key_len(),
                method.key_len()
            )));
        }
        if password.is_empty() {
            return Err(Error::InvalidKey("empty password".into()));
        }
        let mut key = Key {
            method,
            bytes: [0; MAX_KEY_LEN],
        };
        evp_bytes_to_key(password, &mut key.bytes[..method.key_len()]);
        Ok(key)
    }

    /// Decodes a standard-alphabet, padded base64 key that must be exactly `key_len` bytes.
    pub fn from_base64(method: Method, encoded: &str) -> Result<Key, Error> {
        if encoded.contains(':') {
            return Err(Error::InvalidKey(
                "multiple keys separated by ':' (SIP022 identity headers) are not supported".into(),
            ));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map(Zeroizing::new)
            .map_err(|e| Error::InvalidKey(format!("not valid base64 ({})", describe_base64_error(&e))))?;
        Key::from_bytes(method, &decoded)
    }

    /// A key from raw bytes; the length must be the method's `key_len`.
    pub fn from_bytes(method: Method, bytes: &[u8]) -> Result<Key, Error> {
        if bytes.len() != method.key_len() {
            return Err(Error::InvalidKey(format!(
                "{method} needs a key of {} bytes, got {} bytes",
                method.key_len(),
                bytes.len()
            )));
        }
        let mut key = Key {
            method,
            bytes: [0; MAX_KEY_LEN],
        };
        key.bytes[..bytes.len()].copy_from_slice(bytes);
        Ok(key)
    }

    /// The method this key is for.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The key bytes (`key_len` of them).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes[..self.method.key_len()]
    }

    /// The session subkey for `salt` (SIP004: HKDF-SHA1; SIP022: BLAKE3, where `salt` is the
    /// stream salt or, for UDP, the 8-byte session id).
    pub(crate) fn subkey(&self, salt: &[u8]) -> Subkey {
        let len = self.method.key_len();
        let mut out = Subkey {
            bytes: [0; MAX_KEY_LEN],
            len,
        };
        if self.method.is_2022() {
            let mut hasher = blake3::Hasher::new_derive_key(SIP022_SUBKEY_CONTEXT);
            hasher.update(self.bytes());
            hasher.update(salt);
            let derived = hasher.finalize();
            out.bytes[..len].copy_from_slice(&derived.as_bytes()[..len]);
        } else {
            hkdf_sha1(self.bytes(), salt, b"ss-subkey", &mut out.bytes[..len]);
        }
        out
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("method", &self.method)
            .field("bytes", &"<redacted>")
            .finish()
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl ZeroizeOnDrop for Key {}

/// A derived session subkey; redacted in `Debug`, wiped on drop.
pub(crate) struct Subkey {
    bytes: [u8; MAX_KEY_LEN],
    len: usize,
}

impl Subkey {
    /// The subkey bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl fmt::Debug for Subkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Subkey(<redacted>)")
    }
}

impl Drop for Subkey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl ZeroizeOnDrop for Subkey {}

/// Why a key is not valid base64, without echoing any of its characters: base64's own
/// message quotes the offending byte, and a key with one typo is still mostly the key.
pub(crate) fn describe_base64_error(e: &DecodeError) -> String {
    match e {
        DecodeError::InvalidByte(offset, _) => format!("the character at offset {offset} is not base64"),
        DecodeError::InvalidLength(len) => format!("{len} symbols is not a base64 length"),
        DecodeError::InvalidLastSymbol(offset, _) => {
            format!("the last symbol, at offset {offset}, has bits set that must be zero")
        }
        DecodeError::InvalidPadding => "the padding is wrong".to_owned(),
    }
}

/// OpenSSL `EVP_BytesToKey` with MD5, no salt and one iteration: `D_1 = MD5(password)`,
/// `D_i = MD5(D_{i-1} || password)`, concatenated and truncated to `out.len()`.
pub fn evp_bytes_to_key(password: &[u8], out: &mut [u8]) {
    let mut prev: Option<[u8; 16]> = None;
    for block in out.chunks_mut(16) {
        let mut md5 = Md5::new();
        if let Some(p) = &prev {
            md5.update(p);
        }
        md5.update(password);
        let digest: [u8; 16] = md5.finalize().into();
        block.copy_from_slice(&digest[..block.len()]);
        prev = Some(digest);
    }
}

/// Output-length type for ring's HKDF.
struct OkmLen(usize);

impl hkdf::KeyType for OkmLen {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA1 (RFC 5869): fills `out` (at most 255 * 20 bytes) from `ikm`, `salt` and `info`.
pub(crate) fn hkdf_sha1(ikm: &[u8], salt: &[u8], info: &[u8], out: &mut [u8]) {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA1_FOR_LEGACY_USE_ONLY, salt).extract(ikm);
    let info = [info];
    let okm = prk
        .expand(&info, OkmLen(out.len()))
        .expect("HKDF-SHA1 output length is within 255 * 20 bytes");
    okm.fill(out).expect("HKDF-SHA1 fill of the requested length");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    #[test]
    fn evp_bytes_to_key_matches_openssl() {
        // `echo -n | openssl enc -aes-256-cbc -k foobar -P -nosalt -md md5`
        let mut k32 = [0u8; 32];
        evp_bytes_to_key(b"foobar", &mut k32);
        assert_eq!(
            k32.to_vec(),
            hex("3858f62230ac3c915f300c664312c63f568378529614d22ddb49237d2f60bfdf")
        );
        let mut k16 = [0u8; 16];
        evp_bytes_to_key(b"foobar", &mut k16);
        assert_eq!(k16.to_vec(), hex("3858f62230ac3c915f300c664312c63f"));
        let key = Key::from_password(Method::Aes256Gcm, b"foobar").unwrap();
        assert_eq!(key.bytes(), &k32[..]);
        let key = Key::new(Method::Aes128Gcm, "foobar").unwrap();
        assert_eq!(key.bytes(), &k16[..]);
    }

    #[test]
    fn hkdf_sha1_rfc5869_test_cases_4_to_7() {
        let mut okm = [0u8; 42];
        // A.4: basic test case with SHA-1.
        hkdf_sha1(
            &[0x0b; 11],
            &hex("000102030405060708090a0b0c"),
            &hex("f0f1f2f3f4f5f6f7f8f9"),
            &mut okm,
        );
        assert_eq!(
            okm.to_vec(),
            hex("085a01ea1b10f36933068b56efa5ad81a4f14b822f5b091568a9cdd4f155fda2c22e422478d305f3f896")
        );
        // A.5: longer inputs/outputs.
        let ikm: Vec<u8> = (0x00..=0x4f).collect();
        let salt: Vec<u8> = (0x60..=0xaf).collect();
        let info: Vec<u8> = (0xb0..=0xff).collect();
        let mut okm82 = [0u8; 82];
        hkdf_sha1(&ikm, &salt, &info, &mut okm82);
        assert_eq!(
            okm82.to_vec(),
            hex(concat!(
                "0bd770a74d1160f7c9f12cd5912a06ebff6adcae899d92191fe4305673ba2ffe",
                "8fa3f1a4e5ad79f3f334b3b202b2173c486ea37ce3d397ed034c7f9dfeb15c5e",
                "927336d0441f4c4300e2cff0d0900b52d3b4"
            ))
        );
        // A.6: zero-length salt and info.
        hkdf_sha1(&[0x0b; 22], &[], &[], &mut okm);
        assert_eq!(
            okm.to_vec(),
            hex("0ac1af7002b3d761d1e55298da9d0506b9ae52057220a306e07b6b87e8df21d0ea00033de03984d34918")
        );
        // A.7: salt not provided (HashLen zero bytes), zero-length info.
        hkdf_sha1(&[0x0c; 22], &[0; 20], &[], &mut okm);
        assert_eq!(
            okm.to_vec(),
            hex("2c91117204d745f3500d636a62f64f0ab3bae548aa53d423b0d1f27ebba6f5e5673a081d70cce7acfc48")
        );
    }

    #[test]
    fn sip004_subkey_is_hkdf_of_master_key() {
        let key = Key::new(Method::Aes256Gcm, "foobar").unwrap();
        let salt = [7u8; 32];
        let mut expected = [0u8; 32];
        hkdf_sha1(key.bytes(), &salt, b"ss-subkey", &mut expected);
        assert_eq!(key.subkey(&salt).bytes(), &expected[..]);
    }

    #[test]
    fn sip022_keys() {
        let b64_16 = "AAECAwQFBgcICQoLDA0ODw==";
        let k = Key::new(Method::Blake3Aes128Gcm, b64_16).unwrap();
        assert_eq!(k.bytes(), &(0u8..16).collect::<Vec<_>>()[..]);
        // Wrong length for the method.
        let e = Key::new(Method::Blake3Aes256Gcm, b64_16).unwrap_err();
        assert!(e.to_string().contains("32 bytes, got 16"), "{e}");
        // Invalid base64, unpadded base64.
        assert!(matches!(
            Key::new(Method::Blake3Aes128Gcm, "not base64!"),
            Err(Error::InvalidKey(_))
        ));
        assert!(matches!(
            Key::new(Method::Blake3Aes128Gcm, "AAECAwQFBgcICQoLDA0ODw"),
            Err(Error::InvalidKey(_))
        ));
        // Passwords are refused for 2022 methods.
        assert!(Key::from_password(Method::Blake3Aes256Gcm, b"foobar").is_err());
        // Multi-user keys are refused with a clear message.
        let e = Key::new(Method::Blake3Aes128Gcm, &format!("{b64_16}:{b64_16}")).unwrap_err();
        assert!(e.to_string().contains("identity headers"), "{e}");
    }

    #[test]
    fn sip022_subkey_known_answer() {
        // python3: blake3.blake3(bytes(range(32)) + bytes([0xaa]*32),
        //   derive_key_context="shadowsocks 2022 session subkey").hexdigest()
        let key = Key::from_bytes(Method::Blake3Aes256Gcm, &(0u8..32).collect::<Vec<_>>()).unwrap();
        let sub = key.subkey(&[0xaa; 32]);
        let expected = blake3::derive_key(
            SIP022_SUBKEY_CONTEXT,
            &[&(0u8..32).collect::<Vec<_>>()[..], &[0xaa; 32]].concat(),
        );
        assert_eq!(sub.bytes(), &expected[..]);
        assert_eq!(sub.bytes().to_vec(), hex(SUBKEY_KAT_256));
        let key16 = Key::from_bytes(Method::Blake3Aes128Gcm, &[0x11; 16]).unwrap();
        assert_eq!(key16.subkey(&[0x22; 16]).bytes().to_vec(), hex(SUBKEY_KAT_128));
    }

    // Computed with the Python `blake3` package (see the test above).
    const SUBKEY_KAT_256: &str = "998819ee2a98ddfb4b506f1e7dd7b3c226982f191a9db5fdd5bccee92d0975aa";
    const SUBKEY_KAT_128: &str = "5f5af8d1711a0cf862c59d7ebe86365f";

    #[test]
    fn debug_redacts_key_material() {
        let key = Key::from_bytes(Method::Aes128Gcm, &[0xab; 16]).unwrap();
        let text = format!("{key:?}");
        assert!(text.contains("redacted") && text.contains("Aes128Gcm"), "{text}");
        assert!(!text.contains("171") && !text.to_lowercase().contains("ab, "), "{text}");
        let sub = key.subkey(&[0; 16]);
        assert_eq!(format!("{sub:?}"), "Subkey(<redacted>)");
    }

    #[test]
    fn keys_and_subkeys_are_zeroized_on_drop() {
        fn zeroized_on_drop<T: ZeroizeOnDrop>() {}
        zeroized_on_drop::<Key>();
        zeroized_on_drop::<Subkey>();
    }

    #[test]
    fn invalid_base64_key_is_reported_without_its_characters() {
        // '$' is byte 36, '~' byte 126: neither may appear, in any form.
        for (bad, offset) in [
            ("AAEC$wQFBgcICQoLDA0ODw==", "offset 4"),
            ("AAECAwQFBgcICQoLDA0OD~==", "offset 21"),
        ] {
            let e = Key::new(Method::Blake3Aes128Gcm, bad).unwrap_err().to_string();
            assert!(e.contains(offset), "{e}");
            for leak in ["$", "~", "36", "126", "AAEC", "0x24", "0x7e"] {
                assert!(!e.contains(leak), "{leak:?} leaked: {e}");
            }
        }
        let e = Key::new(Method::Blake3Aes128Gcm, "AAECAwQFBgcICQoLDA0OD").unwrap_err();
        assert!(e.to_string().contains("base64"), "{e}");
    }
}
