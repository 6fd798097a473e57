//! Optional authenticated encryption of every datagram and frame (XChaCha20-Poly1305).
//!
//! A [`Keyring`] holds shared 32-byte keys: the first (primary) encrypts, every key decrypts,
//! so keys rotate without downtime, as memberlist does: add the new key everywhere, make it
//! primary everywhere, then remove the old one.

use std::fmt;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

/// Shared cluster keys. The primary key (the first) encrypts; all keys decrypt.
#[derive(Clone, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<[u8; 32]>,
}

impl Keyring {
    /// A keyring with one key, which is primary.
    pub fn new(primary: [u8; 32]) -> Self {
        Self {
            keys: vec![primary],
        }
    }

    /// The same keyring, also accepting `key` for decryption (if not already present).
    #[must_use]
    pub fn with_key(mut self, key: [u8; 32]) -> Self {
        if !self.keys.contains(&key) {
            self.keys.push(key);
        }
        self
    }

    /// The same keyring with `key` as primary (added if missing); the old primary still
    /// decrypts.
    #[must_use]
    pub fn with_primary(mut self, key: [u8; 32]) -> Self {
        self.keys.retain(|k| *k != key);
        self.keys.insert(0, key);
        self
    }

    /// The same keyring without `key`. The primary key cannot be removed; returns `None` then.
    pub fn without_key(mut self, key: &[u8; 32]) -> Option<Self> {
        if self.keys.first() == Some(key) {
            return None;
        }
        self.keys.retain(|k| k != key);
        Some(self)
    }

    /// Parses 64 hexadecimal digits into a key (for configuration files and flags).
    pub fn parse_key(hex: &str) -> Option<[u8; 32]> {
        let hex = hex.trim();
        if hex.len() != 64 {
            return None;
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(key)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: a keyring has a primary key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material; the ids are what packets carry anyway.
        let ids: Vec<String> = self
            .keys
            .iter()
            .map(|k| format!("{:08x}", key_id(k)))
            .collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

/// The 4-byte key id carried in sealed packets: the first bytes of xxh3 over the key. It only
/// selects which key to try; it reveals nothing usable about the key.
fn key_id(key: &[u8; 32]) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(key) >> 32) as u32
}

/// Bytes a sealed payload adds: key id, nonce, tag.
pub(crate) const SEAL_OVERHEAD: usize = 4 + 24 + 16;

/// The ciphers of a keyring, and the nonce state of this sender.
pub(crate) struct Sealer {
    ciphers: Vec<(u32, XChaCha20Poly1305)>,
    /// Nonce = sender tag (8) ‖ counter (8) ‖ salt (8): unique per incarnation and message
    /// even if two processes were given the same RNG seed (their tags differ).
    sender: u64,
    counter: u64,
    salt: u64,
}

impl Sealer {
    pub(crate) fn new(keyring: &Keyring, sender: u64, salt: u64) -> Self {
        Self {
            ciphers: keyring
                .keys
                .iter()
                .map(|k| (key_id(k), XChaCha20Poly1305::new(&Key::from(*k))))
                .collect(),
            sender,
            counter: 0,
            salt,
        }
    }

    /// Appends `[key id][nonce][ciphertext][tag]` of `plain` to `out`, authenticating
    /// everything already in `out` (the envelope header) as associated data.
    pub(crate) fn seal(&mut self, out: &mut Vec<u8>, plain: &[u8]) {
        let Some((id, cipher)) = self.ciphers.first() else {
            return;
        };
        self.counter += 1;
        let mut nonce = [0u8; 24];
        nonce[..8].copy_from_slice(&self.sender.to_le_bytes());
        nonce[8..16].copy_from_slice(&self.counter.to_le_bytes());
        nonce[16..].copy_from_slice(&self.salt.to_le_bytes());
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&nonce);
        let aad_len = out.len();
        out.extend_from_slice(plain);
        let (aad, msg) = out.split_at_mut(aad_len);
        // Encryption into a buffer we own cannot fail for messages under 256 GiB.
        if let Ok(tag) = cipher.encrypt_inout_detached(&XNonce::from(nonce), aad, msg.into()) {
            out.extend_from_slice(&tag);
        }
    }

    /// Opens what `seal` appended after `header_len` bytes of `packet`. `None` if no key
    /// matches or authentication fails.
    pub(crate) fn open(&self, packet: &[u8], header_len: usize) -> Option<Vec<u8>> {
        let rest = packet.get(header_len..)?;
        if rest.len() < SEAL_OVERHEAD {
            return None;
        }
        let id = u32::from_be_bytes(rest[..4].try_into().ok()?);
        let nonce: [u8; 24] = rest[4..28].try_into().ok()?;
        let aad = &packet[..header_len + 28];
        let (body, tag) = rest[28..].split_at(rest.len() - 28 - 16);
        let tag: [u8; 16] = tag.try_into().ok()?;
        for (_, cipher) in self.ciphers.iter().filter(|(k, _)| *k == id) {
            let mut plain = body.to_vec();
            let ok = cipher.decrypt_inout_detached(
                &XNonce::from(nonce),
                aad,
                plain.as_mut_slice().into(),
                &tag.into(),
            );
            if ok.is_ok() {
                return Some(plain);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_payloads_open_with_any_key_of_the_ring_and_only_then() {
        let old = [1u8; 32];
        let new = [2u8; 32];
        let header = b"hdr".to_vec();
        let mut sender = Sealer::new(&Keyring::new(old), 7, 9);
        let mut packet = header.clone();
        sender.seal(&mut packet, b"hello");
        assert_eq!(packet.len(), header.len() + 5 + SEAL_OVERHEAD);
        let rotating = Sealer::new(&Keyring::new(new).with_key(old), 8, 1);
        assert_eq!(rotating.open(&packet, 3).as_deref(), Some(&b"hello"[..]));
        let stranger = Sealer::new(&Keyring::new(new), 8, 1);
        assert_eq!(stranger.open(&packet, 3), None);
        // Any flipped bit, header included, fails authentication.
        for i in 0..packet.len() {
            let mut forged = packet.clone();
            forged[i] ^= 1;
            assert_eq!(rotating.open(&forged, 3), None, "bit flip at {i} accepted");
        }
        assert_eq!(rotating.open(&packet[..packet.len() - 1], 3), None);
    }

    #[test]
    fn nonces_never_repeat_for_one_sender() {
        let mut s = Sealer::new(&Keyring::new([3u8; 32]), 1, 1);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..1000 {
            let mut p = Vec::new();
            s.seal(&mut p, b"x");
            assert!(seen.insert(p[4..28].to_vec()));
        }
    }

    #[test]
    fn keys_parse_from_hex_and_debug_hides_them() {
        let hex = "00".repeat(31) + "ff";
        let key = Keyring::parse_key(&hex).unwrap();
        assert_eq!(key[31], 0xff);
        assert_eq!(Keyring::parse_key("zz"), None);
        let ring = Keyring::new(key);
        assert!(!format!("{ring:?}").contains("255"));
        assert_eq!(ring.clone().without_key(&key), None);
        assert_eq!(ring.with_primary([5; 32]).len(), 2);
    }
}
