//! Ciphers and framing: SIP004 AEAD streams and packets, SIP022, replay protection.
