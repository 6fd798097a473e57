//! Optional authenticated encryption of every datagram and frame (XChaCha20-Poly1305).
//!
//! A [`Keyring`] holds shared 32-byte keys: the first (primary) encrypts, every key decrypts,
//! so keys rotate without downtime, as memberlist does: add the new key everywhere, make it
//! primary everywhere, then remove the old one.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

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

    /// Parses 64 hexadecimal digits into a key (for configuration files and flags); anything
    /// else (a sign, a space or a `0x` inside, another length) is `None`.
    pub fn parse_key(hex: &str) -> Option<[u8; 32]> {
        let hex = hex.trim();
        // `from_str_radix` alone would take "+f" as a byte: digits only.
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
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

    /// The 4-byte id of each key, primary first: what sealed packets carry to name their key.
    /// Nodes can print and compare them to check that they hold the same keys without
    /// showing the keys (an id reveals nothing usable about its key).
    pub fn key_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.iter().map(key_id)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material; the ids are what packets carry anyway.
        let ids: Vec<String> = self.key_ids().map(|id| format!("{id:08x}")).collect();
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

/// The counter bit that marks a nonce sealed for a stream frame (clear: a datagram). The
/// nonce is authenticated, so a datagram cannot pass as a frame or a frame as a datagram: a
/// captured 100-byte Syn replayed as a frame was answered with a whole state (hundreds of
/// kilobytes) before the channel was sealed in.
const STREAM_BIT: u64 = 1 << 63;

/// This sender's nonces: tag (8) ‖ counter (8) ‖ salt (8), each little-endian, the counter's
/// top bit saying the channel. Unique per message as long as no two processes share a tag
/// and a salt: the runtime draws the salt from the operating system (a restart under the same
/// name and generation, or a second process given the same seed, gets another), the
/// simulator from its seeded generator. A new keyring keeps the sequence going.
#[derive(Clone, Debug)]
pub(crate) struct NonceSeq {
    sender: u64,
    salt: u64,
    counter: u64,
}

impl NonceSeq {
    pub(crate) fn new(sender: u64, salt: u64) -> Self {
        Self {
            sender,
            salt,
            counter: 0,
        }
    }

    /// Starts a new sequence under `salt`.
    pub(crate) fn set_salt(&mut self, salt: u64) {
        self.salt = salt;
        self.counter = 0;
    }

    fn next(&mut self, stream: bool) -> [u8; 24] {
        self.counter += 1;
        let word = self.counter | if stream { STREAM_BIT } else { 0 };
        let mut nonce = [0u8; 24];
        nonce[..8].copy_from_slice(&self.sender.to_le_bytes());
        nonce[8..16].copy_from_slice(&word.to_le_bytes());
        nonce[16..].copy_from_slice(&self.salt.to_le_bytes());
        nonce
    }
}

/// The ciphers of a keyring.
pub(crate) struct Sealer {
    ciphers: Vec<(u32, XChaCha20Poly1305)>,
}

impl Sealer {
    pub(crate) fn new(keyring: &Keyring) -> Self {
        Self {
            ciphers: keyring
                .keys
                .iter()
                .map(|k| (key_id(k), XChaCha20Poly1305::new(&Key::from(*k))))
                .collect(),
        }
    }

    /// Appends `[key id][nonce][ciphertext][tag]` of `plain` to `out`, authenticating
    /// everything already in `out` (the envelope header) as associated data. The nonce is the
    /// next of `nonces`, marked for a stream frame if `stream`.
    pub(crate) fn seal(
        &self,
        out: &mut Vec<u8>,
        plain: &[u8],
        nonces: &mut NonceSeq,
        stream: bool,
    ) {
        let Some((id, cipher)) = self.ciphers.first() else {
            return;
        };
        let nonce = nonces.next(stream);
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

    /// Opens what `seal` appended after `header_len` bytes of `packet`, and says which nonce
    /// it was sealed with. `None` if no key matches or authentication fails.
    pub(crate) fn open(&self, packet: &[u8], header_len: usize) -> Option<(Vec<u8>, Nonce)> {
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
                return Some((plain, Nonce::parse(&nonce)));
            }
        }
        None
    }
}

/// The parts of a sealed packet's nonce (see [`Sealer`]), read once the packet authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Nonce {
    /// The sending incarnation's tag.
    pub(crate) sender: u64,
    /// The sender's packet counter: 1 for its first sealed packet, then one more per packet
    /// (datagrams and frames together).
    pub(crate) counter: u64,
    /// Sealed for a stream frame (else for a datagram).
    pub(crate) stream: bool,
    /// Random per codec: a restart, a second process given the same tag, or a new keyring
    /// starts a new counter under a new salt.
    pub(crate) salt: u64,
}

impl Nonce {
    fn parse(bytes: &[u8; 24]) -> Self {
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[i..i + 8]);
            u64::from_le_bytes(w)
        };
        Self {
            sender: word(0),
            counter: word(8) & !STREAM_BIT,
            stream: word(8) & STREAM_BIT != 0,
            salt: word(16),
        }
    }
}

/// Counters a sender may run ahead of an older packet of its that is still accepted: a
/// datagram (or frame) overtaken by more than this many later packets of the same sender to the
/// same channel is dropped as if replayed. At about 100 sealed packets a second (a node's
/// idle rate at a 100 ms interval) that is 20 s of reordering.
pub(crate) const REPLAY_WINDOW: u64 = 2048;
const WORDS: usize = (REPLAY_WINDOW / 64) as usize;

/// Which counters of one sender (tag and salt) on one channel were accepted: the highest, and
/// a bitmap of the `REPLAY_WINDOW` counters up to it (bit `c % REPLAY_WINDOW` for counter
/// `c`), as IPsec and WireGuard keep.
#[derive(Clone, Debug)]
struct Window {
    top: u64,
    seen: [u64; WORDS],
    last_seen: Instant,
}

impl Window {
    /// A window for a sender whose earlier window was forgotten with `floor` its highest
    /// counter: every counter up to `floor` reads as seen, and `counter` is accepted.
    fn resume(floor: u64, counter: u64, now: Instant) -> Self {
        let mut w = Self {
            top: floor,
            seen: [u64::MAX; WORDS],
            last_seen: now,
        };
        w.accept(counter, now);
        w
    }

    fn new(counter: u64, now: Instant) -> Self {
        let mut w = Self {
            top: counter,
            seen: [0; WORDS],
            last_seen: now,
        };
        w.mark(counter);
        w
    }

    /// The word and the bit of `counter`'s slot.
    fn slot(counter: u64) -> (usize, u64) {
        let bit = counter % REPLAY_WINDOW;
        ((bit / 64) as usize, 1 << (bit % 64))
    }

    fn mark(&mut self, counter: u64) {
        let (word, bit) = Self::slot(counter);
        self.seen[word] |= bit;
    }

    fn is_marked(&self, counter: u64) -> bool {
        let (word, bit) = Self::slot(counter);
        self.seen[word] & bit != 0
    }

    /// Records `counter` and says whether it is new.
    fn accept(&mut self, counter: u64, now: Instant) -> bool {
        if counter > self.top {
            if counter - self.top >= REPLAY_WINDOW {
                self.seen = [0; WORDS];
            } else {
                // The slots of the skipped counters held counters a window older.
                for c in self.top + 1..counter {
                    let (word, bit) = Self::slot(c);
                    self.seen[word] &= !bit;
                }
            }
            self.top = counter;
            self.mark(counter);
        } else if self.top - counter >= REPLAY_WINDOW || self.is_marked(counter) {
            return false;
        } else {
            self.mark(counter);
        }
        self.last_seen = now;
        true
    }
}

/// Drops sealed packets a node has already accepted: a captured packet sent again, or the
/// network's duplicate. Keyed by the authenticated nonce's sender and salt, one window per
/// channel (a frame's counter is taken when it is sealed, and a large frame may arrive after
/// many later datagrams). Only packets that authenticated reach it, so only key holders can
/// add senders; it still holds at most `max_senders` windows, forgetting the longest idle.
#[derive(Debug)]
pub(crate) struct ReplayGuard {
    windows: BTreeMap<SenderKey, Window>,
    /// The highest counter of each window forgotten (idle, or the longest idle when full),
    /// and when it was retired (a sequence number): a sender's counters only grow, so one at
    /// or below it is a replay however long ago it was captured. Forgetting the window alone
    /// let a captured frame in again every `forget_after`, each time drawing a reply of up to
    /// a whole frame of state. At most `max_senders`, the first retired forgotten first.
    retired: BTreeMap<SenderKey, (u64, u64)>,
    retired_order: BTreeMap<u64, SenderKey>,
    next_retired: u64,
    max_senders: usize,
}

/// A nonce's sender tag, salt and channel (true: stream).
type SenderKey = (u64, u64, bool);

impl ReplayGuard {
    pub(crate) fn new(max_senders: usize) -> Self {
        Self {
            windows: BTreeMap::new(),
            retired: BTreeMap::new(),
            retired_order: BTreeMap::new(),
            next_retired: 0,
            max_senders: max_senders.max(1),
        }
    }

    fn retire(&mut self, key: SenderKey, top: u64) {
        let seq = self.next_retired;
        self.next_retired += 1;
        if let Some((_, old)) = self.retired.insert(key, (top, seq)) {
            self.retired_order.remove(&old);
        }
        self.retired_order.insert(seq, key);
        while self.retired.len() > self.max_senders {
            let Some((_, k)) = self.retired_order.pop_first() else {
                break;
            };
            self.retired.remove(&k);
        }
    }

    /// Records an authenticated packet's nonce; `false` if it was accepted before (or is older
    /// than the window).
    pub(crate) fn accept(&mut self, now: Instant, nonce: Nonce) -> bool {
        let key = (nonce.sender, nonce.salt, nonce.stream);
        if let Some(w) = self.windows.get_mut(&key) {
            return w.accept(nonce.counter, now);
        }
        let mut floor = None;
        if let Some(&(top, seq)) = self.retired.get(&key) {
            if nonce.counter <= top {
                return false;
            }
            self.retired.remove(&key);
            self.retired_order.remove(&seq);
            floor = Some(top);
        }
        if self.windows.len() >= self.max_senders {
            // Full only if a key holder invents senders, or after a lot of churn: forget
            // the one heard from longest ago (a scan, but only when full).
            let oldest = self
                .windows
                .iter()
                .min_by_key(|(k, w)| (w.last_seen, **k))
                .map(|(k, _)| *k);
            if let Some((k, w)) = oldest.and_then(|k| Some((k, self.windows.remove(&k)?))) {
                self.retire(k, w.top);
            }
        }
        let window = match floor {
            Some(top) => Window::resume(top, nonce.counter, now),
            None => Window::new(nonce.counter, now),
        };
        self.windows.insert(key, window);
        true
    }

    /// Forgets the windows of senders not heard from for `idle`, keeping their highest
    /// counters (see `retired`).
    pub(crate) fn forget_idle(&mut self, now: Instant, idle: Duration) {
        let idle: Vec<SenderKey> = self
            .windows
            .iter()
            .filter(|(_, w)| now.saturating_duration_since(w.last_seen) >= idle)
            .map(|(k, _)| *k)
            .collect();
        for k in idle {
            if let Some(w) = self.windows.remove(&k) {
                self.retire(k, w.top);
            }
        }
    }

    /// Senders (per channel) currently remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.windows.len()
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
        let sender = Sealer::new(&Keyring::new(old));
        let mut seq = NonceSeq::new(7, 9);
        let mut packet = header.clone();
        sender.seal(&mut packet, b"hello", &mut seq, false);
        assert_eq!(packet.len(), header.len() + 5 + SEAL_OVERHEAD);
        let rotating = Sealer::new(&Keyring::new(new).with_key(old));
        let (plain, nonce) = rotating.open(&packet, 3).unwrap();
        assert_eq!(plain, b"hello");
        assert_eq!(
            nonce,
            Nonce {
                sender: 7,
                counter: 1,
                stream: false,
                salt: 9
            }
        );
        // A frame takes the next counter, marked as a frame's.
        let mut frame = header.clone();
        sender.seal(&mut frame, b"hello", &mut seq, true);
        let (_, nonce) = rotating.open(&frame, 3).unwrap();
        assert_eq!((nonce.counter, nonce.stream), (2, true));
        let stranger = Sealer::new(&Keyring::new(new));
        assert_eq!(stranger.open(&packet, 3), None);
        // Any flipped bit, header included, fails authentication.
        for i in 0..packet.len() {
            let mut forged = packet.clone();
            forged[i] ^= 1;
            assert_eq!(rotating.open(&forged, 3), None, "bit flip at {i} accepted");
        }
        assert_eq!(rotating.open(&packet[..packet.len() - 1], 3), None);
    }

    /// The three steps of a rotation: add the new key, make it primary (packets are then
    /// sealed with it, so a node holding only the new key reads them), retire the old one.
    /// (A mutation review found `with_primary` unpinned: appended, the rotation did nothing
    /// and the old key could never be retired.)
    #[test]
    fn a_rotation_seals_with_the_new_primary_and_retires_the_old_key() {
        let (old, new) = ([1u8; 32], [2u8; 32]);
        let rotated = Keyring::new(old).with_key(new).with_primary(new);
        let mut packet = b"hdr".to_vec();
        Sealer::new(&rotated).seal(&mut packet, b"hi", &mut NonceSeq::new(1, 1), false);
        let only_new = Sealer::new(&Keyring::new(new));
        assert_eq!(
            only_new.open(&packet, 3).map(|(p, _)| p),
            Some(b"hi".to_vec())
        );
        assert_eq!(Sealer::new(&Keyring::new(old)).open(&packet, 3), None);
        // The old key still opens what laggards seal with it, until it is retired.
        let mut late = b"hdr".to_vec();
        Sealer::new(&Keyring::new(old)).seal(&mut late, b"hi", &mut NonceSeq::new(2, 1), false);
        assert!(Sealer::new(&rotated).open(&late, 3).is_some());
        let retired = rotated
            .clone()
            .without_key(&old)
            .expect("the old key is no longer primary");
        assert_eq!(Sealer::new(&retired).open(&late, 3), None);
        assert!(
            rotated.without_key(&new).is_none(),
            "the primary was removed"
        );
    }

    /// Key ids come primary first, are the ids sealed packets carry (a packet sealed with a
    /// key names that key's id right after the header), and differ between keys.
    #[test]
    fn key_ids_are_the_ids_packets_carry_primary_first() {
        let (old, new) = ([1u8; 32], [2u8; 32]);
        let ring = Keyring::new(old).with_key(new).with_primary(new);
        let ids: Vec<u32> = ring.key_ids().collect();
        assert_eq!(ids.len(), 2);
        assert_ne!(ids[0], ids[1]);
        let mut packet = b"hdr".to_vec();
        Sealer::new(&ring).seal(&mut packet, b"hi", &mut NonceSeq::new(1, 1), false);
        let carried = u32::from_be_bytes(packet[3..7].try_into().unwrap());
        assert_eq!(carried, ids[0]);
        let only_old: Vec<u32> = Keyring::new(old).key_ids().collect();
        assert_eq!(only_old, [ids[1]]);
        assert!(format!("{ring:?}").contains(&format!("{:08x}", ids[0])));
    }

    #[test]
    fn nonces_never_repeat_for_one_sender() {
        // Over both channels, a key change and a new salt with the counter started again.
        let mut s = Sealer::new(&Keyring::new([3u8; 32]));
        let mut seq = NonceSeq::new(1, 1);
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..3000 {
            if i == 1000 {
                s = Sealer::new(&Keyring::new([4u8; 32]).with_key([3u8; 32]));
            }
            if i == 2000 {
                seq.set_salt(2);
            }
            let mut p = Vec::new();
            s.seal(&mut p, b"x", &mut seq, i % 3 == 0);
            assert!(seen.insert(p[4..28].to_vec()), "nonce {i} repeated");
        }
    }

    fn nonce(sender: u64, counter: u64, salt: u64) -> Nonce {
        Nonce {
            sender,
            counter,
            stream: false,
            salt,
        }
    }

    #[test]
    fn a_nonce_is_accepted_once_within_the_window_and_never_when_older() {
        let t = Instant::now();
        let mut g = ReplayGuard::new(16);
        assert!(g.accept(t, nonce(1, 10, 5)));
        assert!(!g.accept(t, nonce(1, 10, 5)), "same nonce twice");
        // Reordered: older counters inside the window, each once.
        for c in [7, 3, 9] {
            assert!(g.accept(t, nonce(1, c, 5)), "counter {c}");
            assert!(!g.accept(t, nonce(1, c, 5)), "counter {c} again");
        }
        // The other channel, another salt (a restart) and another sender keep their own.
        assert!(g.accept(
            t,
            Nonce {
                stream: true,
                ..nonce(1, 10, 5)
            }
        ));
        assert!(g.accept(t, nonce(1, 10, 6)));
        assert!(g.accept(t, nonce(2, 10, 5)));
        // A jump ahead inside the window keeps what it covered; past the window nothing older
        // is accepted.
        let top = 10 + REPLAY_WINDOW - 1;
        assert!(g.accept(t, nonce(1, top, 5)));
        assert!(!g.accept(t, nonce(1, 10, 5)), "10 was seen");
        assert!(g.accept(t, nonce(1, 11, 5)), "11 is at the window's edge");
        assert!(!g.accept(t, nonce(1, 10, 5)));
        assert!(g.accept(t, nonce(1, top + 1, 5)));
        assert!(
            !g.accept(t, nonce(1, 5, 5)),
            "5, never seen, is a window old"
        );
        assert!(g.accept(t, nonce(1, 12, 5)), "12 is still in it, unseen");
        // A jump of more than a window clears every slot, so old bits never read as seen.
        let far = top + 1 + 3 * REPLAY_WINDOW + 17;
        assert!(g.accept(t, nonce(1, far, 5)));
        for c in far - REPLAY_WINDOW + 1..far {
            assert!(g.accept(t, nonce(1, c, 5)), "counter {c} unseen");
        }
        for c in far - REPLAY_WINDOW + 1..=far {
            assert!(!g.accept(t, nonce(1, c, 5)), "counter {c} seen");
        }
    }

    #[test]
    fn every_order_of_a_window_of_counters_is_accepted_once_each() {
        use rand::seq::SliceRandom;
        use rand::{SeedableRng, rngs::Xoshiro256PlusPlus};
        let t = Instant::now();
        for seed in 0..20 {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let mut g = ReplayGuard::new(4);
            let mut counters: Vec<u64> = (1..=3 * REPLAY_WINDOW).collect();
            // Shuffle within blocks of half a window: reordered, never by a window or more.
            for block in counters.chunks_mut((REPLAY_WINDOW / 2) as usize) {
                block.shuffle(&mut rng);
            }
            for &c in &counters {
                assert!(g.accept(t, nonce(9, c, 1)), "seed {seed}: {c}");
            }
            for &c in &counters {
                assert!(!g.accept(t, nonce(9, c, 1)), "seed {seed}: {c} again");
            }
        }
    }

    #[test]
    fn the_guard_is_bounded_and_forgets_idle_senders() {
        let t = Instant::now();
        let mut g = ReplayGuard::new(3);
        for s in 0..3 {
            assert!(g.accept(t + Duration::from_secs(s), nonce(s, 1, 0)));
        }
        // Sender 0 is refreshed, so sender 1 is the longest idle when a fourth comes.
        assert!(g.accept(t + Duration::from_secs(5), nonce(0, 2, 0)));
        assert!(g.accept(t + Duration::from_secs(6), nonce(3, 1, 0)));
        assert_eq!(g.len(), 3);
        assert!(!g.accept(t + Duration::from_secs(6), nonce(0, 2, 0)));
        assert!(!g.accept(t + Duration::from_secs(6), nonce(2, 1, 0)));
        // 1's window is gone, its highest counter kept: what it sent stays refused, what it
        // sends next is taken.
        assert!(
            !g.accept(t + Duration::from_secs(6), nonce(1, 1, 0)),
            "1's old packet"
        );
        assert!(
            g.accept(t + Duration::from_secs(6), nonce(1, 2, 0)),
            "1's next packet"
        );
        assert_eq!(g.len(), 3);
        g.forget_idle(t + Duration::from_secs(10), Duration::from_secs(5));
        // Left: 3 and 1 (6 s); 0 (last accepted at 5 s) has been idle for 5 s.
        assert_eq!(g.len(), 2);
        assert!(
            !g.accept(t + Duration::from_secs(10), nonce(0, 2, 0)),
            "0's old packet, after its window was forgotten"
        );
        assert!(
            !g.accept(t + Duration::from_secs(10), nonce(3, 1, 0)),
            "3 kept"
        );
    }

    /// A sender whose window was forgotten (idle for `forget_after`) is refused every counter
    /// up to its highest, however long after; its later packets, even reordered ones, are
    /// taken once each. The highest counters kept are bounded too.
    #[test]
    fn a_forgotten_window_keeps_refusing_what_it_saw() {
        let t = Instant::now();
        let mut g = ReplayGuard::new(2);
        for c in [3, 1, 10, 7] {
            assert!(g.accept(t, nonce(1, c, 5)));
        }
        for k in 1..=3 {
            g.forget_idle(t + Duration::from_secs(600 * k), Duration::from_secs(600));
            assert_eq!(g.len(), 0);
            for c in [1, 2, 5, 9, 10] {
                assert!(!g.accept(t, nonce(1, c, 5)), "round {k}: counter {c}");
            }
        }
        let later = t + Duration::from_secs(2000);
        assert!(g.accept(later, nonce(1, 13, 5)));
        assert!(
            g.accept(later, nonce(1, 11, 5)),
            "reordered, after the old top"
        );
        for c in [8, 10, 11, 13] {
            assert!(!g.accept(later, nonce(1, c, 5)), "counter {c}");
        }
        // Bounded: with two retired already, a third retirement forgets the first.
        g.forget_idle(later + Duration::from_secs(600), Duration::from_secs(600));
        for s in [2, 3] {
            assert!(g.accept(later, nonce(s, 4, 5)));
            g.forget_idle(later + Duration::from_secs(600), Duration::from_secs(600));
        }
        assert_eq!(g.retired.len(), 2);
        assert!(
            g.accept(later, nonce(1, 13, 5)),
            "the first retired, forgotten"
        );
        assert!(!g.accept(later, nonce(3, 4, 5)), "the last retired, kept");
    }

    /// When the guard is full, the window forgotten is the one heard from longest ago, not
    /// any other: a busy sender keeps its window, so its reordered packets are still taken.
    #[test]
    fn a_full_guard_forgets_the_longest_idle_window() {
        let t = Instant::now();
        let mut g = ReplayGuard::new(2);
        assert!(g.accept(t, nonce(2, 1, 0)));
        assert!(g.accept(t + Duration::from_secs(1), nonce(1, 10, 0)));
        assert!(g.accept(t + Duration::from_secs(2), nonce(3, 1, 0)));
        assert_eq!(g.len(), 2);
        assert!(
            g.accept(t + Duration::from_secs(2), nonce(1, 5, 0)),
            "sender 1's reordered packet: its window was kept"
        );
        assert!(!g.accept(t + Duration::from_secs(2), nonce(2, 1, 0)));
    }

    /// A sender that comes back after its window was forgotten leaves the retired list: its
    /// stale entry there would count against the bound and push out another sender's floor,
    /// letting that sender's old packets in again.
    #[test]
    fn a_sender_back_from_retirement_takes_no_room_among_the_retired() {
        let t = Instant::now();
        let secs = Duration::from_secs;
        let mut g = ReplayGuard::new(2);
        assert!(g.accept(t, nonce(1, 5, 0)));
        g.forget_idle(t + secs(10), secs(5));
        assert!(g.accept(t + secs(10), nonce(2, 5, 0)));
        g.forget_idle(t + secs(20), secs(5));
        // 1 and 2 retired; 2 comes back, and stays busy while 3 goes idle.
        assert!(g.accept(t + secs(20), nonce(2, 6, 0)));
        assert!(g.accept(t + secs(20), nonce(3, 1, 0)));
        assert!(g.accept(t + secs(35), nonce(2, 7, 0)));
        g.forget_idle(t + secs(40), secs(10));
        assert_eq!(g.len(), 1);
        assert_eq!(g.retired.len(), 2);
        assert!(
            !g.accept(t + secs(40), nonce(1, 5, 0)),
            "1's old packet: its floor is one of the two kept"
        );
        assert!(!g.accept(t + secs(40), nonce(3, 1, 0)));
    }

    /// Anything shorter than a key id, a nonce and a tag after the header opens to nothing
    /// (and never slices past its end).
    #[test]
    fn a_packet_shorter_than_the_seal_opens_to_nothing() {
        let sealer = Sealer::new(&Keyring::new([1u8; 32]));
        let mut sealed = b"hdr".to_vec();
        sealer.seal(&mut sealed, b"", &mut NonceSeq::new(1, 1), false);
        assert_eq!(sealed.len(), 3 + SEAL_OVERHEAD);
        assert!(sealer.open(&sealed, 3).is_some(), "an empty payload opens");
        for len in 0..3 + SEAL_OVERHEAD {
            assert_eq!(sealer.open(&sealed[..len], 3), None, "{len} bytes");
        }
        assert_eq!(sealer.open(&sealed, sealed.len() + 1), None);
    }

    /// A key is held once however often it is added or made primary, so a rotation's old
    /// key is gone after one removal.
    #[test]
    fn a_key_added_twice_is_held_once() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let ring = Keyring::new(a).with_key(b).with_key(b).with_key(a);
        assert_eq!(ring.len(), 2);
        let rotated = ring.with_primary(b).with_primary(b);
        assert_eq!(rotated.len(), 2);
        let retired = rotated.without_key(&a).expect("a is not primary");
        assert_eq!(retired.len(), 1);
        let mut packet = b"hdr".to_vec();
        Sealer::new(&Keyring::new(a)).seal(&mut packet, b"x", &mut NonceSeq::new(1, 1), false);
        assert_eq!(Sealer::new(&retired).open(&packet, 3), None);
    }

    #[test]
    fn keys_parse_from_hex_and_debug_hides_them() {
        let hex = "00".repeat(31) + "ff";
        let key = Keyring::parse_key(&hex).unwrap();
        assert_eq!(key[31], 0xff);
        assert_eq!(Keyring::parse_key("zz"), None);
        assert_eq!(
            Keyring::parse_key(&"+f".repeat(32)),
            None,
            "a sign is not a digit"
        );
        assert_eq!(
            Keyring::parse_key(&("0x".to_owned() + &"00".repeat(31))),
            None
        );
        assert_eq!(
            Keyring::parse_key(&format!(" {hex}\n")),
            Some(key),
            "trimmed"
        );
        let ring = Keyring::new(key);
        assert!(!format!("{ring:?}").contains("255"));
        assert_eq!(ring.clone().without_key(&key), None);
        assert_eq!(ring.with_primary([5; 32]).len(), 2);
    }
}
