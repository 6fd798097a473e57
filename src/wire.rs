//! The wire format: an envelope (magic, version, cluster id, kind) around a MessagePack body.
//!
//! ```text
//!  0      2     3      4            4+n    5+n
//!  +------+-----+------+------------+------+-------------------------------+
//!  |magic |ver  |n     |cluster id  |kind  | body: MessagePack, compact    |
//!  |7D 15 |0x01 |u8    |n bytes     |u8    | (structs as arrays)           |
//!  +------+-----+------+------------+------+-------------------------------+
//! ```
//!
//! The same envelope is a UDP datagram's payload and a TCP frame's payload; TCP adds a 4-byte
//! big-endian length before it (see the runtime). Bodies are MessagePack in rmp-serde's compact
//! encoding (structs as arrays): design.md records the measurement behind that choice. The
//! message's fields and its digest are written and read by hand (`mp`), in exactly those
//! bytes; deltas go through rmp-serde.
//!
//! The exchange, after van Renesse et al. (2008):
//!
//! ```text
//!   A                                   B
//!   | Syn { digest_A }                  |   A's view: (tag, heartbeat, max_version, gc)
//!   |---------------------------------->|   per node, a window of its nodes
//!   |      SynAck { digest_B, delta_B } |   digest_B: only the entries where B is behind A
//!   |<----------------------------------|   (or fresher in heartbeat); delta_B: what A lacks
//!   | Ack { delta_A }                   |
//!   |---------------------------------->|   delta_A: what B asked for in digest_B
//! ```

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::id::{NodeId, Tag};

mod mp;

/// Largest datagram accepted from the network, in bytes (the largest UDP payload over IPv4).
pub(crate) const MAX_DATAGRAM_RECV: usize = 65_507;

pub(crate) const MAGIC: [u8; 2] = [0x7D, 0x15];
pub(crate) const VERSION: u8 = 1;

/// What one node knows of another, in a digest.
///
/// On the wire: `[node, heartbeat, max_version]`, with a fourth element `gc_version` only when
/// it is not 0 (it rarely is), so the common entry costs one byte less.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DigestEntry {
    /// The node's tag; in an indexed digest, its position in the sorted membership instead.
    pub(crate) tag: Tag,
    /// 0 means "I do not know this node: send it whole, identity included".
    pub(crate) heartbeat: u64,
    pub(crate) max_version: u64,
    pub(crate) gc_version: u64,
}

// rmp-serde's shapes for digests, kept as the reference the hand codec (`mp`) is tested
// against.
#[cfg(test)]
impl Serialize for DigestEntry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let n = if self.gc_version == 0 { 3 } else { 4 };
        let mut t = s.serialize_tuple(n)?;
        t.serialize_element(&self.tag.0)?;
        t.serialize_element(&self.heartbeat)?;
        t.serialize_element(&self.max_version)?;
        if self.gc_version != 0 {
            t.serialize_element(&self.gc_version)?;
        }
        t.end()
    }
}

#[cfg(test)]
impl<'de> Deserialize<'de> for DigestEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = DigestEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a digest entry of 3 or 4 integers")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<DigestEntry, A::Error> {
                use serde::de::Error;
                let tag: u64 = a
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(0, &self))?;
                let heartbeat = a
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(1, &self))?;
                let max_version = a
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(2, &self))?;
                let gc_version: u64 = a.next_element()?.unwrap_or(0);
                if a.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(A::Error::invalid_length(5, &self));
                }
                Ok(DigestEntry {
                    tag: Tag(tag),
                    heartbeat,
                    max_version,
                    gc_version,
                })
            }
        }
        d.deserialize_tuple(4, V)
    }
}

/// A list of digest entries, with an optional completeness claim.
///
/// On the wire: `[indexed, cover, entries, beats]`, `cover` nil or `[start, end]`, `beats` a
/// bin (see `mp`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(test, derive(Serialize, Deserialize))]
pub(crate) struct Digest {
    /// Entries name nodes by position in the sender's membership sorted by tag, which is valid
    /// because the sender's membership fingerprint (in the message) equals the receiver's: the
    /// sender saw it in the receiver's last message. A position costs 1 to 3 bytes, a tag 9.
    pub(crate) indexed: bool,
    /// `Some((start, end))`: the sender knows no node with a tag in `start..=end` (wrapping past
    /// `u64::MAX` when `start > end`) other than those in `entries`, so a receiver can tell which
    /// of its nodes the sender has never heard of. `None`: no such claim.
    pub(crate) cover: Option<(u64, u64)>,
    pub(crate) entries: Vec<DigestEntry>,
    /// Heartbeat-only news, in indexed digests only (see [`Beats`]).
    pub(crate) beats: Beats,
}

/// Heartbeat news in about 2 bytes a node instead of 8: for nodes in ascending position order,
/// the position as a varint delta from the previous one, then the low byte of the heartbeat.
/// The receiver rebuilds the full heartbeat from the one it holds (`rebuild_heartbeat`), which
/// is exact while it lags less than 128 beats; a larger lag is caught by full entries.
/// Carries no versions: state news travels in full entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(test, derive(Serialize, Deserialize), serde(transparent))]
pub(crate) struct Beats(pub(crate) Bytes);

/// The pairs of a [`Beats`], decoded as they are read.
pub(crate) struct BeatsIter<'a> {
    bytes: &'a [u8],
    at: usize,
    pos: u32,
    first: bool,
    malformed: bool,
}

impl BeatsIter<'_> {
    /// Whether reading stopped at a malformed byte (a varint too long or cut short, a
    /// position past `u32`, a heartbeat byte missing) rather than at the end.
    pub(crate) fn malformed(&self) -> bool {
        self.malformed
    }

    /// Whether every byte was read.
    pub(crate) fn finished(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn fail(&mut self) -> Option<(u32, u8)> {
        self.malformed = true;
        self.at = self.bytes.len();
        None
    }
}

impl Iterator for BeatsIter<'_> {
    type Item = (u32, u8);

    fn next(&mut self) -> Option<(u32, u8)> {
        if self.finished() {
            return None;
        }
        let mut delta = 0u32;
        let mut shift = 0;
        loop {
            let Some(&byte) = self.bytes.get(self.at) else {
                return self.fail();
            };
            self.at += 1;
            delta |= u32::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 21 {
                return self.fail();
            }
        }
        let Some(&low) = self.bytes.get(self.at) else {
            return self.fail();
        };
        self.at += 1;
        let pos = if self.first {
            delta
        } else {
            match self.pos.checked_add(delta) {
                Some(p) => p,
                None => return self.fail(),
            }
        };
        self.pos = pos;
        self.first = false;
        Some((pos, low))
    }
}

/// Worst-case bytes of one beat: a 2-byte varint delta and the heartbeat byte. A delta of
/// 16,384 or more takes a third varint byte; deltas add up to less than the node count, so a
/// message has at most `nodes / 16,384` of them: `beats_room` sets that many bytes aside
/// (`max_nodes` may be up to 65,536).
pub(crate) const MAX_BEAT_LEN: usize = 3;

/// How many beats fit in `bytes` among `nodes` nodes, at worst.
pub(crate) fn beats_room(bytes: usize, nodes: usize) -> usize {
    bytes.saturating_sub(nodes >> 14) / MAX_BEAT_LEN
}

/// When beats are encoded, positions below this (clusters of up to 4,096 nodes) are ordered
/// with a bitset on the stack (4.5 KB); larger ones are sorted.
const STACK_POSITIONS: usize = 1 << 12;

impl Beats {
    /// Encodes `(position, heartbeat)` pairs (positions distinct) in position order.
    pub(crate) fn encode(items: &mut [(u32, u64)]) -> Self {
        let mut out = Vec::with_capacity(items.len() * 2);
        let mut prev = 0u32;
        let mut push = |pos: u32, low: u8| {
            let mut delta = pos - prev;
            loop {
                let byte = (delta & 0x7f) as u8;
                delta >>= 7;
                if delta == 0 {
                    out.push(byte);
                    break;
                }
                out.push(byte | 0x80);
            }
            out.push(low);
            prev = pos;
        };
        let max = items.iter().map(|&(p, _)| p).max().unwrap_or(0) as usize;
        if max < STACK_POSITIONS {
            // Positions index our own table: order them with a bitset on the stack, linear in
            // the table size. Sorting the pairs was about 3 % of a 200-node process's idle CPU,
            // and allocating the bitset about as much again.
            let mut bits = [0u64; STACK_POSITIONS / 64];
            let mut low = [0u8; STACK_POSITIONS];
            for &(p, hb) in items.iter() {
                bits[p as usize / 64] |= 1 << (p % 64);
                low[p as usize] = hb as u8;
            }
            for (w, &word) in bits[..=max / 64].iter().enumerate() {
                let mut word = word;
                while word != 0 {
                    let pos = w * 64 + word.trailing_zeros() as usize;
                    word &= word - 1;
                    // pos <= max < STACK_POSITIONS.
                    push(pos as u32, low[pos]);
                }
            }
        } else {
            items.sort_unstable_by_key(|(p, _)| *p);
            for &(pos, hb) in items.iter() {
                push(pos, hb as u8);
            }
        }
        Self(Bytes::from(out))
    }

    /// The `(position, heartbeat low byte)` pairs; stops at the first malformed byte, which
    /// [`BeatsIter::malformed`] then reports.
    pub(crate) fn decode(&self) -> BeatsIter<'_> {
        BeatsIter {
            bytes: &self.0,
            at: 0,
            pos: 0,
            first: true,
            malformed: false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// The heartbeat whose low byte is `low` and which is nearest to `known`.
pub(crate) fn rebuild_heartbeat(known: u64, low: u8) -> u64 {
    let base = known & !0xff;
    let mut cand = base | u64::from(low);
    // Saturating: heartbeats near u64::MAX are peer input and must not overflow.
    if cand.saturating_add(128) < known {
        cand = cand.saturating_add(256);
    } else if cand > known.saturating_add(128) && cand >= 256 {
        cand -= 256;
    }
    cand
}

/// One key of a node's state, live or deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyEntry {
    /// Shared with the sender's state (no copy per delta built) and, once applied, with the
    /// receiver's: a MessagePack string on the wire.
    #[serde(with = "arc_str")]
    pub(crate) key: Arc<str>,
    pub(crate) version: u64,
    /// `None` is a tombstone.
    pub(crate) value: Option<Bytes>,
}

/// `Arc<str>` as a plain string, decoded with one allocation (serde's own `Arc<str>` goes
/// through a `String` first).
mod arc_str {
    use std::fmt;
    use std::sync::Arc;

    use serde::de::{self, Unexpected, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(s: &Arc<str>, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Arc<str>, D::Error> {
        struct ArcStr;
        impl Visitor<'_> for ArcStr {
            type Value = Arc<str>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Arc<str>, E> {
                Ok(Arc::from(v))
            }
            // rmp-serde hands over a string that is not UTF-8 as bytes; `String` refuses it
            // the same way.
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Arc<str>, E> {
                std::str::from_utf8(v)
                    .map(Arc::from)
                    .map_err(|_| E::invalid_value(Unexpected::Bytes(v), &self))
            }
        }
        de.deserialize_str(ArcStr)
    }
}

/// The part of one node's state that a peer lacks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NodeDelta {
    pub(crate) tag: Tag,
    /// Present when the receiver does not know the node yet.
    pub(crate) id: Option<NodeId>,
    pub(crate) heartbeat: u64,
    /// The receiver must drop what it holds of this node first: it is too far behind for the
    /// sender's purged tombstones.
    pub(crate) reset: bool,
    pub(crate) gc_version: u64,
    /// The receiver's `max_version` this delta was built on; a receiver below it ignores the
    /// delta rather than open a gap.
    pub(crate) from_version: u64,
    /// The receiver's `max_version` once applied: the sender's own if every entry fit, else the
    /// version of the last entry carried. Never a version the delta does not carry.
    pub(crate) max_version: u64,
    /// Entries with versions in `from_version+1..=max_version`, in version order.
    pub(crate) entries: Vec<KeyEntry>,
}

/// A gossip message. See the module docs for the exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Message {
    Syn {
        from: Tag,
        /// The sender's membership fingerprint.
        fp: u64,
        digest: Digest,
    },
    SynAck {
        from: Tag,
        fp: u64,
        digest: Digest,
        delta: Vec<NodeDelta>,
    },
    Ack {
        from: Tag,
        delta: Vec<NodeDelta>,
    },
}

impl Message {
    pub(crate) fn from(&self) -> Tag {
        match self {
            Self::Syn { from, .. } | Self::SynAck { from, .. } | Self::Ack { from, .. } => *from,
        }
    }

    /// The heartbeat the sender states for itself (its own digest entry, named by tag, or its
    /// own node delta), if the message carries one.
    pub(crate) fn own_heartbeat(&self) -> Option<u64> {
        let from = self.from();
        let in_digest = |d: &Digest| {
            (!d.indexed)
                .then(|| {
                    d.entries
                        .iter()
                        .find(|e| e.tag == from)
                        .map(|e| e.heartbeat)
                })
                .flatten()
        };
        let in_delta = |delta: &[NodeDelta]| {
            delta
                .iter()
                .find(|nd| nd.tag == from)
                .map(|nd| nd.heartbeat)
        };
        match self {
            Self::Syn { digest, .. } => in_digest(digest),
            Self::SynAck { digest, delta, .. } => in_digest(digest).or_else(|| in_delta(delta)),
            Self::Ack { delta, .. } => in_delta(delta),
        }
    }
}

/// In the kind slot: the rest is sealed (see `crypto`); the real kind is inside.
const KIND_SEALED: u8 = 0xA5;
const KIND_SYN: u8 = 1;
const KIND_SYNACK: u8 = 2;
const KIND_ACK: u8 = 3;

/// Why a packet was dropped. Never returned to the user: it becomes a counter and a debug log.
#[derive(Debug, PartialEq, Eq, Clone, Copy, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("packet too short")]
    Truncated,
    #[error("bad magic number")]
    BadMagic,
    #[error("unsupported protocol version {0}")]
    Version(u8),
    #[error("packet of another cluster")]
    ForeignCluster,
    #[error("unknown message kind {0}")]
    Kind(u8),
    #[error("malformed body")]
    Body,
    #[error("trailing bytes after the body")]
    Trailing,
    #[error("sealed packet that no key opens (forged, corrupted, or another keyring)")]
    Auth,
    #[error("plaintext packet refused: this node requires encryption")]
    Plaintext,
}

/// Encodes and decodes envelopes for one cluster, sealing them when a keyring is set.
pub(crate) struct Codec {
    cluster_id: Vec<u8>,
    sealer: Option<crate::crypto::Sealer>,
    /// Kept across keyrings (and while there is none), so a key change never restarts it.
    nonces: crate::crypto::NonceSeq,
    send_plaintext: bool,
    accept_plaintext: bool,
    /// Most entries of a digest kept (`Limits::max_nodes` and the sender), the rest read past:
    /// decoded entries take about eight times the bytes they arrive in (an 8-MiB frame of them
    /// was 64 MB in memory before the node looked at it), yet an honest peer in a larger
    /// cluster lists more, so a longer digest is cut, not refused (see `Digest::read`).
    max_digest_entries: usize,
}

impl Digest {
    fn write(&self, out: &mut Vec<u8>) {
        mp::put_array_len(out, 4);
        mp::put_bool(out, self.indexed);
        match self.cover {
            None => out.push(mp::NIL),
            Some((start, end)) => {
                mp::put_array_len(out, 2);
                mp::put_uint(out, start);
                mp::put_uint(out, end);
            }
        }
        mp::put_array_len(out, self.entries.len());
        for e in &self.entries {
            mp::put_array_len(out, if e.gc_version == 0 { 3 } else { 4 });
            mp::put_uint(out, e.tag.0);
            mp::put_uint(out, e.heartbeat);
            mp::put_uint(out, e.max_version);
            if e.gc_version != 0 {
                mp::put_uint(out, e.gc_version);
            }
        }
        mp::put_bin(out, &self.beats.0);
    }

    /// Keeps at most `max_entries` entries; also returns how many the digest listed. A node
    /// whose `max_nodes` is below its peers' cluster gets digests longer than its table: until
    /// 2026-12-07 they were dropped whole as malformed, and such a node heard its peers only in
    /// answers to its own Syns. The sender puts its own entry and its freshest news first, so
    /// the cut keeps those. The rest are still read, as an entry's length is known only once
    /// read, and checked: whether a packet is malformed does not depend on the reader's limit.
    fn read(r: &mut mp::Reader<'_>, max_entries: usize) -> Option<(Self, usize)> {
        if r.array_len()? != 4 {
            return None;
        }
        let indexed = r.bool()?;
        let cover = if r.nil() {
            None
        } else {
            if r.array_len()? != 2 {
                return None;
            }
            Some((r.uint()?, r.uint()?))
        };
        let n = r.array_len()?;
        let kept = n.min(max_entries);
        // An entry takes at least 4 bytes: a claimed count cannot reserve more than the packet
        // holds.
        let mut entries = Vec::with_capacity(kept.min(r.rest().len() / 4));
        for i in 0..n {
            let len = r.array_len()?;
            if !(3..=4).contains(&len) {
                return None;
            }
            let e = DigestEntry {
                tag: Tag(r.uint()?),
                heartbeat: r.uint()?,
                max_version: r.uint()?,
                gc_version: if len == 4 { r.uint()? } else { 0 },
            };
            if i < kept {
                entries.push(e);
            }
        }
        // The cover claims the entries list every node the sender holds in its range; those
        // past the cut were not kept, and the receiver would take them for nodes the sender
        // lacks (and send them whole).
        let cover = if kept < n { None } else { cover };
        let beats = Beats(Bytes::copy_from_slice(r.bin()?));
        Some((
            Self {
                indexed,
                cover,
                entries,
                beats,
            },
            n,
        ))
    }
}

impl Codec {
    pub(crate) fn new(cluster_id: &str) -> Self {
        Self {
            cluster_id: cluster_id.as_bytes().to_vec(),
            sealer: None,
            nonces: crate::crypto::NonceSeq::new(0, 0),
            send_plaintext: true,
            accept_plaintext: true,
            max_digest_entries: usize::MAX,
        }
    }

    /// Keeps of a digest at most the entries of the sender and a table of `max_nodes`
    /// (`Limits::max_nodes`; see `Codec::max_digest_entries`).
    pub(crate) fn with_max_nodes(mut self, max_nodes: usize) -> Self {
        self.max_digest_entries = max_nodes.saturating_add(1);
        self
    }

    /// Seals outgoing packets with the keyring's primary key (unless `send_plaintext`) and
    /// requires incoming ones to be sealed (unless `accept_plaintext`). `sender` and `salt`
    /// make nonces unique (see `crypto::NonceSeq`).
    pub(crate) fn with_keyring(
        mut self,
        keyring: Option<&crate::crypto::Keyring>,
        send_plaintext: bool,
        accept_plaintext: bool,
        sender: u64,
        salt: u64,
    ) -> Self {
        self.nonces = crate::crypto::NonceSeq::new(sender, salt);
        self.set_keyring(keyring, send_plaintext, accept_plaintext);
        self
    }

    /// Replaces the keyring and the plaintext settings; the nonce sequence goes on.
    pub(crate) fn set_keyring(
        &mut self,
        keyring: Option<&crate::crypto::Keyring>,
        send_plaintext: bool,
        accept_plaintext: bool,
    ) {
        self.sealer = keyring.map(crate::crypto::Sealer::new);
        self.send_plaintext = keyring.is_none() || send_plaintext;
        self.accept_plaintext = keyring.is_none() || accept_plaintext;
    }

    /// Starts a new nonce sequence under `salt` (see `crypto::NonceSeq`).
    pub(crate) fn set_nonce_salt(&mut self, salt: u64) {
        self.nonces.set_salt(salt);
    }

    fn header_len(&self) -> usize {
        MAGIC.len() + 1 + 1 + self.cluster_id.len()
    }

    /// Bytes of envelope around a body.
    pub(crate) fn overhead(&self) -> usize {
        let seal = if self.send_plaintext {
            0
        } else {
            1 + crate::crypto::SEAL_OVERHEAD
        };
        self.header_len() + 1 + seal
    }

    /// Encodes (and seals, unless sending plaintext) `msg` for a datagram or, if `stream`, a
    /// stream frame: a sealed packet authenticates which, so it is accepted only there.
    pub(crate) fn encode(&mut self, msg: &Message, stream: bool) -> Vec<u8> {
        // Sized exactly: stream frames run to megabytes, and growing the buffer by doubling
        // copied each about twice (and, past glibc's mmap threshold, faulted in fresh zeroed
        // pages for every step).
        let body = 1 + size::message(msg);
        let mut out = Vec::with_capacity(self.overhead() + body);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        // validate() bounds the cluster id to 64 bytes, so its length fits a u8.
        out.push(self.cluster_id.len() as u8);
        out.extend_from_slice(&self.cluster_id);
        match self.sealer.as_ref() {
            Some(sealer) if !self.send_plaintext => {
                let mut plain = Vec::with_capacity(body);
                Self::encode_body(msg, &mut plain);
                out.push(KIND_SEALED);
                sealer.seal(&mut out, &plain, &mut self.nonces, stream);
            }
            _ => Self::encode_body(msg, &mut out),
        }
        out
    }

    /// Appends `[kind][MessagePack body]`: the message's fields as an array, the digest by
    /// hand (`mp`) and the deltas by rmp-serde.
    fn encode_body(msg: &Message, out: &mut Vec<u8>) {
        let delta = match msg {
            Message::Syn { from, fp, digest } => {
                out.push(KIND_SYN);
                mp::put_array_len(out, 3);
                mp::put_uint(out, from.0);
                mp::put_uint(out, *fp);
                digest.write(out);
                return;
            }
            Message::SynAck {
                from,
                fp,
                digest,
                delta,
            } => {
                out.push(KIND_SYNACK);
                mp::put_array_len(out, 4);
                mp::put_uint(out, from.0);
                mp::put_uint(out, *fp);
                digest.write(out);
                delta
            }
            Message::Ack { from, delta } => {
                out.push(KIND_ACK);
                mp::put_array_len(out, 2);
                mp::put_uint(out, from.0);
                delta
            }
        };
        let written = rmp_serde::encode::write(out, delta);
        // Writing plain data into a Vec cannot fail: every type here serializes infallibly.
        debug_assert!(written.is_ok());
    }

    /// Decodes a packet (the fuzzing harness and tests; a node uses `decode_with_nonce`).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn decode(&self, bytes: &[u8]) -> Result<Message, DecodeError> {
        self.decode_with_nonce(bytes).map(|(msg, _)| msg)
    }

    /// Decodes a packet; for a sealed one, also the nonce it authenticated with (what the
    /// receiver's replay guard checks).
    pub(crate) fn decode_with_nonce(
        &self,
        bytes: &[u8],
    ) -> Result<(Message, Option<crate::crypto::Nonce>), DecodeError> {
        let rest = self.open(bytes)?;
        let (&kind, _) = rest.split_first().ok_or(DecodeError::Truncated)?;
        if kind == KIND_SEALED {
            let sealer = self.sealer.as_ref().ok_or(DecodeError::Auth)?;
            let (plain, nonce) = sealer
                .open(bytes, self.header_len() + 1)
                .ok_or(DecodeError::Auth)?;
            return self.decode_body(&plain).map(|msg| (msg, Some(nonce)));
        }
        if !self.accept_plaintext {
            return Err(DecodeError::Plaintext);
        }
        self.decode_body(rest).map(|msg| (msg, None))
    }

    /// Decodes `[kind][MessagePack body]`.
    fn decode_body(&self, rest: &[u8]) -> Result<Message, DecodeError> {
        let (&kind, body) = rest.split_first().ok_or(DecodeError::Truncated)?;
        let mut r = mp::Reader::new(body);
        let fields = match kind {
            KIND_SYN => 3,
            KIND_SYNACK => 4,
            KIND_ACK => 2,
            other => return Err(DecodeError::Kind(other)),
        };
        if r.array_len() != Some(fields) {
            return Err(DecodeError::Body);
        }
        let from = Tag(r.uint().ok_or(DecodeError::Body)?);
        let mut listed = 0;
        let (fp, digest) = if kind == KIND_ACK {
            (0, Digest::default())
        } else {
            let fp = r.uint().ok_or(DecodeError::Body)?;
            let (digest, n) =
                Digest::read(&mut r, self.max_digest_entries).ok_or(DecodeError::Body)?;
            listed = n;
            (fp, digest)
        };
        let mut rest = r.rest();
        let msg = if kind == KIND_SYN {
            Message::Syn { from, fp, digest }
        } else {
            let mut de = rmp_serde::Deserializer::new(&mut rest);
            let delta = Vec::<NodeDelta>::deserialize(&mut de).map_err(|_| DecodeError::Body)?;
            if kind == KIND_SYNACK {
                Message::SynAck {
                    from,
                    fp,
                    digest,
                    delta,
                }
            } else {
                Message::Ack { from, delta }
            }
        };
        if !rest.is_empty() {
            return Err(DecodeError::Trailing);
        }
        if let Message::Syn { digest, .. } | Message::SynAck { digest, .. } = &msg
            && listed > digest.entries.len()
        {
            debug!(
                ?from,
                listed,
                kept = digest.entries.len(),
                "digest longer than this node's table: the rest not kept, nor its cover"
            );
        }
        Ok(msg)
    }

    /// Checks the envelope and returns what follows the cluster id.
    fn open<'a>(&self, bytes: &'a [u8]) -> Result<&'a [u8], DecodeError> {
        if bytes.len() < MAGIC.len() + 2 {
            return Err(DecodeError::Truncated);
        }
        if bytes[..2] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if bytes[2] != VERSION {
            return Err(DecodeError::Version(bytes[2]));
        }
        let n = usize::from(bytes[3]);
        let cluster = bytes.get(4..4 + n).ok_or(DecodeError::Truncated)?;
        if cluster != self.cluster_id.as_slice() {
            return Err(DecodeError::ForeignCluster);
        }
        Ok(&bytes[4 + n..])
    }
}

// Exact MessagePack sizes of the compact encoding, so messages are filled to a budget without
// encoding twice. `sizes_match_the_encoder` (tests) pins them to rmp-serde.
pub(crate) mod size {
    use super::*;

    pub(crate) fn uint(v: u64) -> usize {
        match v {
            0..=0x7f => 1,
            0x80..=0xff => 2,
            0x100..=0xffff => 3,
            0x1_0000..=0xffff_ffff => 5,
            _ => 9,
        }
    }

    pub(crate) fn str(n: usize) -> usize {
        n + match n {
            0..=31 => 1,
            32..=0xff => 2,
            0x100..=0xffff => 3,
            _ => 5,
        }
    }

    pub(crate) fn bin(n: usize) -> usize {
        n + match n {
            0..=0xff => 2,
            0x100..=0xffff => 3,
            _ => 5,
        }
    }

    pub(crate) fn array(n: usize) -> usize {
        match n {
            0..=15 => 1,
            16..=0xffff => 3,
            _ => 5,
        }
    }

    pub(crate) fn digest_entry(e: &DigestEntry) -> usize {
        let gc = if e.gc_version == 0 {
            0
        } else {
            uint(e.gc_version)
        };
        1 + uint(e.tag.0) + uint(e.heartbeat) + uint(e.max_version) + gc
    }

    pub(crate) fn cover(c: Option<(u64, u64)>) -> usize {
        match c {
            None => 1,
            Some((a, b)) => 1 + uint(a) + uint(b),
        }
    }

    /// A digest holding no entries yet (the array header is counted for `n` entries).
    pub(crate) fn digest_frame(cover_: Option<(u64, u64)>, n: usize, beats: usize) -> usize {
        1 + 1 + cover(cover_) + array(n) + bin(beats)
    }

    pub(crate) fn node_id(id: &NodeId) -> usize {
        let ip = if id.addr.is_ipv4() { 4 } else { 16 };
        1 + str(id.name.len()) + uint(id.generation.0) + bin(ip) + uint(u64::from(id.addr.port()))
    }

    pub(crate) fn key_entry(key_len: usize, version: u64, value: Option<usize>) -> usize {
        1 + str(key_len) + uint(version) + value.map_or(1, bin)
    }

    /// A node delta with no entries; the entries' array header is counted for `n` entries.
    pub(crate) fn node_delta_frame(d: &NodeDelta, n: usize) -> usize {
        1 + uint(d.tag.0)
            + d.id.as_ref().map_or(1, node_id)
            + uint(d.heartbeat)
            + 1
            + uint(d.gc_version)
            + uint(d.from_version)
            + uint(d.max_version)
            + array(n)
    }

    pub(crate) fn node_delta(d: &NodeDelta) -> usize {
        node_delta_frame(d, d.entries.len())
            + d.entries
                .iter()
                .map(|e| key_entry(e.key.len(), e.version, e.value.as_ref().map(Bytes::len)))
                .sum::<usize>()
    }

    pub(crate) fn digest(d: &Digest) -> usize {
        digest_frame(d.cover, d.entries.len(), d.beats.len())
            + d.entries.iter().map(digest_entry).sum::<usize>()
    }

    /// Body of a message (kind byte excluded).
    pub(crate) fn message(m: &Message) -> usize {
        match m {
            Message::Syn {
                from,
                fp,
                digest: d,
            } => 1 + uint(from.0) + uint(*fp) + digest(d),
            Message::SynAck {
                from,
                fp,
                digest: d,
                delta,
            } => {
                1 + uint(from.0)
                    + uint(*fp)
                    + digest(d)
                    + array(delta.len())
                    + delta.iter().map(node_delta).sum::<usize>()
            }
            Message::Ack { from, delta } => {
                1 + uint(from.0) + array(delta.len()) + delta.iter().map(node_delta).sum::<usize>()
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    pub(crate) fn arb_node_id() -> impl Strategy<Value = NodeId> {
        (
            "[a-z0-9-]{1,40}",
            any::<u64>(),
            any::<bool>(),
            any::<u32>(),
            any::<u128>(),
            any::<u16>(),
        )
            .prop_map(|(name, g, v4, a4, a6, port)| {
                let ip: std::net::IpAddr = if v4 {
                    std::net::Ipv4Addr::from(a4).into()
                } else {
                    std::net::Ipv6Addr::from(a6).into()
                };
                NodeId::new(name, g, std::net::SocketAddr::new(ip, port))
            })
    }

    fn arb_u64() -> impl Strategy<Value = u64> {
        // The edges of MessagePack's integer forms, too.
        let edges = [0x7f, 0xff, 0xffff, 0xffff_ffff, u64::MAX]
            .into_iter()
            .flat_map(|e: u64| [e, e.wrapping_add(1)])
            .collect::<Vec<_>>();
        prop_oneof![
            0..200u64,
            0..70_000u64,
            0..5_000_000_000u64,
            any::<u64>(),
            prop::sample::select(edges)
        ]
    }

    fn arb_digest() -> impl Strategy<Value = Digest> {
        (
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::option::of((arb_u64(), arb_u64())),
            proptest::collection::vec(
                (any::<u64>(), arb_u64(), arb_u64(), arb_u64()).prop_map(|(t, h, m, g)| {
                    DigestEntry {
                        tag: Tag(t),
                        heartbeat: h,
                        max_version: m,
                        gc_version: g,
                    }
                }),
                0..40,
            ),
        )
            .prop_map(|(indexed, beats, cover, entries)| Digest {
                indexed,
                cover,
                entries,
                beats: Beats(Bytes::from(beats)),
            })
    }

    fn arb_key_entry() -> impl Strategy<Value = KeyEntry> {
        (
            "[a-z/]{0,300}",
            arb_u64(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..400)),
        )
            .prop_map(|(key, version, value)| KeyEntry {
                key: key.into(),
                version,
                value: value.map(Bytes::from),
            })
    }

    fn arb_node_delta() -> impl Strategy<Value = NodeDelta> {
        (
            any::<u64>(),
            proptest::option::of(arb_node_id()),
            arb_u64(),
            any::<bool>(),
            (arb_u64(), arb_u64(), arb_u64()),
            proptest::collection::vec(arb_key_entry(), 0..20),
        )
            .prop_map(|(t, id, hb, reset, (g, f, m), entries)| NodeDelta {
                tag: Tag(t),
                id,
                heartbeat: hb,
                reset,
                gc_version: g,
                from_version: f,
                max_version: m,
                entries,
            })
    }

    pub(crate) fn arb_message() -> impl Strategy<Value = Message> {
        let deltas = || proptest::collection::vec(arb_node_delta(), 0..20);
        prop_oneof![
            (any::<u64>(), any::<u64>(), arb_digest()).prop_map(|(f, fp, digest)| Message::Syn {
                from: Tag(f),
                fp,
                digest
            }),
            (any::<u64>(), any::<u64>(), arb_digest(), deltas()).prop_map(
                |(f, fp, digest, delta)| Message::SynAck {
                    from: Tag(f),
                    fp,
                    digest,
                    delta,
                }
            ),
            (any::<u64>(), deltas()).prop_map(|(f, delta)| Message::Ack {
                from: Tag(f),
                delta
            }),
        ]
    }

    // The codec before digests were written by hand: rmp-serde over tuple structs.
    #[derive(Serialize)]
    struct SynRef<'a>(Tag, u64, &'a Digest);
    #[derive(Serialize)]
    struct SynAckRef<'a>(Tag, u64, &'a Digest, &'a [NodeDelta]);
    #[derive(Serialize)]
    struct AckRef<'a>(Tag, &'a [NodeDelta]);
    #[derive(Deserialize)]
    struct SynOwned(Tag, u64, Digest);
    #[derive(Deserialize)]
    struct SynAckOwned(Tag, u64, Digest, Vec<NodeDelta>);
    #[derive(Deserialize)]
    struct AckOwned(Tag, Vec<NodeDelta>);

    fn reference_body(msg: &Message) -> Vec<u8> {
        match msg {
            Message::Syn { from, fp, digest } => rmp_serde::to_vec(&SynRef(*from, *fp, digest)),
            Message::SynAck {
                from,
                fp,
                digest,
                delta,
            } => rmp_serde::to_vec(&SynAckRef(*from, *fp, digest, delta)),
            Message::Ack { from, delta } => rmp_serde::to_vec(&AckRef(*from, delta)),
        }
        .unwrap()
    }

    fn reference_decode(kind: u8, body: &[u8]) -> Option<Message> {
        match kind {
            KIND_SYN => rmp_serde::from_slice(body)
                .ok()
                .map(|SynOwned(from, fp, digest)| Message::Syn { from, fp, digest }),
            KIND_SYNACK => {
                rmp_serde::from_slice(body)
                    .ok()
                    .map(|SynAckOwned(from, fp, digest, delta)| Message::SynAck {
                        from,
                        fp,
                        digest,
                        delta,
                    })
            }
            KIND_ACK => rmp_serde::from_slice(body)
                .ok()
                .map(|AckOwned(from, delta)| Message::Ack { from, delta }),
            _ => None,
        }
    }

    proptest! {
        /// Nodes on either side of the change to a hand-written digest codec read each other:
        /// the bytes are rmp-serde's, and what the hand decoder accepts, rmp-serde reads the
        /// same way.
        #[test]
        fn hand_codec_matches_rmp_serde(
            msg in arb_message(),
            flip in any::<prop::sample::Index>(),
            to in any::<u8>(),
        ) {
            let mut codec = Codec::new("c");
            let bytes = codec.encode(&msg, false);
            let at = codec.overhead();
            let (kind, body) = (bytes[at - 1], &bytes[at..]);
            let reference = reference_body(&msg);
            prop_assert_eq!(body, reference.as_slice());
            prop_assert_eq!(reference_decode(kind, body), Some(msg));
            let mut bent = bytes.clone();
            let i = at + flip.index(body.len().max(1)).min(body.len().saturating_sub(1));
            if let Some(b) = bent.get_mut(i) {
                *b = to;
            }
            if let Ok(m) = codec.decode(&bent) {
                prop_assert_eq!(reference_decode(bent[at - 1], &bent[at..]), Some(m));
            }
        }

        #[test]
        fn every_message_round_trips(msg in arb_message()) {
            let mut codec = Codec::new("test-cluster");
            let bytes = codec.encode(&msg, false);
            prop_assert_eq!(codec.decode(&bytes), Ok(msg));
        }

        #[test]
        fn sizes_match_the_encoder(msg in arb_message()) {
            let mut codec = Codec::new("c");
            let bytes = codec.encode(&msg, false);
            prop_assert_eq!(bytes.len(), codec.overhead() + size::message(&msg));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let codec = Codec::new("c");
            let _ = codec.decode(&bytes);
            // Also behind a valid envelope, so the body decoder sees the junk.
            let mut framed = vec![0x7D, 0x15, VERSION, 1, b'c'];
            framed.extend_from_slice(&bytes);
            let _ = codec.decode(&framed);
        }

        #[test]
        fn truncated_messages_are_errors(msg in arb_message(), cut in any::<prop::sample::Index>()) {
            let mut codec = Codec::new("c");
            let bytes = codec.encode(&msg, false);
            let at = cut.index(bytes.len());
            prop_assert!(codec.decode(&bytes[..at]).is_err());
        }
    }

    /// Beats far apart take a third varint byte each; `beats_room` keeps room for them (found
    /// by review: a budget of three bytes a beat assumed positions below 16,384).
    #[test]
    fn beats_far_apart_fit_the_room_set_aside() {
        let nodes = 65_536;
        let mut items: Vec<(u32, u64)> = (0..3).map(|i| (20_000 * i + 19_999, 7)).collect();
        let beats = Beats::encode(&mut items);
        // Three bytes of position each, and the heartbeat byte.
        assert_eq!(beats.len(), 3 * 4);
        // The room three beats are given holds them.
        let given = 3 * MAX_BEAT_LEN + (nodes >> 14);
        assert_eq!(beats_room(given, nodes), 3);
        assert!(beats.len() <= given);
        assert_eq!(beats_room(3 * MAX_BEAT_LEN, 100), 3);
    }

    proptest! {
        #[test]
        fn beats_round_trip(
            (sorted, mut items) in prop_oneof![Just(4_096u32), Just(16_384u32), Just(65_536u32), Just(200_000u32)]
                .prop_flat_map(|bound| proptest::collection::btree_map(0..bound, any::<u64>(), 0..400))
                .prop_map(|m| m.into_iter().collect::<Vec<_>>())
                .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))
        ) {
            // Given in any order (the bitset on the stack, or the sort), encoded in position
            // order.
            let beats = Beats::encode(&mut items);
            // Within the room `beats_room` leaves, for clusters up to `max_nodes`' limit.
            let nodes = sorted.last().map_or(0, |&(p, _)| p as usize + 1);
            if nodes <= 65_536 {
                prop_assert!(beats.len() <= sorted.len() * MAX_BEAT_LEN + (nodes >> 14));
            }
            let mut it = beats.decode();
            let back: Vec<(u32, u8)> = it.by_ref().collect();
            prop_assert!(it.finished() && !it.malformed());
            let want: Vec<(u32, u8)> = sorted.iter().map(|(p, h)| (*p, *h as u8)).collect();
            prop_assert_eq!(back, want);
        }

        #[test]
        fn heartbeats_rebuild_from_their_low_byte_within_127(known in 0u64..1 << 40, ahead in -127i64..=127) {
            let actual = (known as i64 + ahead).max(0) as u64;
            prop_assert_eq!(rebuild_heartbeat(known, actual as u8), actual);
        }

        #[test]
        fn malformed_beats_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let beats = Beats(Bytes::from(bytes));
            let mut it = beats.decode();
            let n = it.by_ref().count();
            prop_assert!(n <= 64);
            // Read to the end, or stopped at a fault that it reports.
            prop_assert!(it.finished());
        }

        #[test]
        fn beats_cut_short_are_reported_malformed(
            items in proptest::collection::btree_map(0..70_000u32, any::<u64>(), 1..50),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut items: Vec<(u32, u64)> = items.into_iter().collect();
            let beats = Beats::encode(&mut items);
            // Every proper prefix ends inside a varint or before a heartbeat byte, or exactly
            // at the end of a pair.
            let at = cut.index(beats.len());
            let cut = Beats(beats.0.slice(..at));
            let mut it = cut.decode();
            let read = it.by_ref().count();
            let whole_pairs = Beats::encode(&mut items[..read].to_vec()).len() == at;
            prop_assert_eq!(it.malformed(), !whole_pairs);
        }
    }

    /// The per-entry sizes design.md quotes.
    #[test]
    fn digest_entry_sizes_match_design() {
        let e = |tag: u64, heartbeat: u64| DigestEntry {
            tag: Tag(tag),
            heartbeat,
            max_version: 12,
            gc_version: 0,
        };
        let len = |e: DigestEntry| rmp_serde::to_vec(&e).unwrap().len();
        assert_eq!(len(e(0x9e37_79b9_7f4a_7c15, 40_000)), 14);
        assert_eq!(len(e(0x9e37_79b9_7f4a_7c15, 70_000)), 16);
        assert_eq!(len(e(100, 40_000)), 6);
        assert_eq!(len(e(9_000, 40_000)), 8);
        let with_gc = DigestEntry {
            gc_version: 3,
            ..e(100, 40_000)
        };
        assert_eq!(len(with_gc), 7);
        assert_eq!(size::digest_entry(&with_gc), 7);
    }

    #[test]
    fn foreign_cluster_and_bad_envelopes_are_rejected() {
        let msg = Message::Ack {
            from: Tag(7),
            delta: vec![],
        };
        let bytes = Codec::new("a").encode(&msg, false);
        let keyed = |accept| {
            Codec::new("a").with_keyring(
                Some(&crate::crypto::Keyring::new([9; 32])),
                false,
                accept,
                1,
                2,
            )
        };
        // A keyed node refuses plaintext unless migrating, and a plain node cannot read sealed.
        assert_eq!(keyed(false).decode(&bytes), Err(DecodeError::Plaintext));
        assert_eq!(keyed(true).decode(&bytes), Ok(msg.clone()));
        let sealed = keyed(false).encode(&msg, false);
        assert_eq!(keyed(false).decode(&sealed), Ok(msg.clone()));
        assert_eq!(Codec::new("a").decode(&sealed), Err(DecodeError::Auth));
        assert_eq!(sealed.len(), bytes.len() + 1 + crate::crypto::SEAL_OVERHEAD);
        assert_eq!(
            Codec::new("b").decode(&bytes),
            Err(DecodeError::ForeignCluster)
        );
        let mut bad = bytes.clone();
        bad[0] = 0;
        assert_eq!(Codec::new("a").decode(&bad), Err(DecodeError::BadMagic));
        let mut bad = bytes.clone();
        bad[2] = 9;
        assert_eq!(Codec::new("a").decode(&bad), Err(DecodeError::Version(9)));
        let mut bad = bytes.clone();
        bad.push(0);
        assert_eq!(Codec::new("a").decode(&bad), Err(DecodeError::Trailing));
        let mut bad = bytes;
        bad[5] = 99;
        assert_eq!(Codec::new("a").decode(&bad), Err(DecodeError::Kind(99)));
    }

    #[test]
    fn a_key_that_is_not_utf8_is_a_malformed_body() {
        let delta = |key: &str| NodeDelta {
            tag: Tag(3),
            id: None,
            heartbeat: 1,
            reset: false,
            gc_version: 0,
            from_version: 0,
            max_version: 1,
            entries: vec![KeyEntry {
                key: key.into(),
                version: 1,
                value: Some(Bytes::from_static(b"v")),
            }],
        };
        let msg = Message::Ack {
            from: Tag(7),
            delta: vec![delta("k\u{e9}y")],
        };
        let mut bytes = Codec::new("a").encode(&msg, false);
        assert_eq!(Codec::new("a").decode(&bytes), Ok(msg));
        // The key as MessagePack: a 4-byte fixstr, "k", then U+00E9 as C3 A9, then "y".
        let at = bytes
            .windows(5)
            .position(|w| w == [0xa4, b'k', 0xc3, 0xa9, b'y'])
            .unwrap();
        bytes[at + 2] = 0xff;
        assert_eq!(Codec::new("a").decode(&bytes), Err(DecodeError::Body));
    }

    #[test]
    fn integers_in_signed_forms_are_read_as_rmp_serde_reads_them() {
        // A Syn from tag 5, fingerprint 6, with one entry [7, 8, 9]: the tag as int8, the
        // fingerprint as int16, the entry's heartbeat as int64, all non-negative.
        let body = [
            0x93, 0xd0, 5, 0xd1, 0, 6, 0x94, 0xc2, 0xc0, 0x91, 0x93, 7, 0xd3, 0, 0, 0, 0, 0, 0, 0,
            8, 9, 0xc4, 0,
        ];
        let mut bytes = vec![0x7D, 0x15, VERSION, 1, b'c', KIND_SYN];
        bytes.extend_from_slice(&body);
        let want = Message::Syn {
            from: Tag(5),
            fp: 6,
            digest: Digest {
                entries: vec![DigestEntry {
                    tag: Tag(7),
                    heartbeat: 8,
                    max_version: 9,
                    gc_version: 0,
                }],
                ..Digest::default()
            },
        };
        assert_eq!(Codec::new("c").decode(&bytes), Ok(want.clone()));
        assert_eq!(reference_decode(KIND_SYN, &body), Some(want));
        // A negative one is no u64.
        let at = bytes.len() - 12;
        assert_eq!(bytes[at], 0xd3);
        bytes[at + 1] = 0xff;
        assert_eq!(Codec::new("c").decode(&bytes), Err(DecodeError::Body));
    }

    #[test]
    fn a_huge_claimed_length_does_not_allocate_it() {
        // An Ack whose delta array claims 2^32-1 elements in a 20-byte packet.
        let mut bytes = vec![0x7D, 0x15, VERSION, 1, b'c', KIND_ACK, 0x92, 0x01, 0xdd];
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(Codec::new("c").decode(&bytes), Err(DecodeError::Body));
        // A Syn whose digest claims 2^32-1 entries.
        let mut bytes = vec![
            0x7D, 0x15, VERSION, 1, b'c', KIND_SYN, 0x93, 1, 2, 0x94, 0xc2,
        ];
        bytes.extend_from_slice(&[0xc0, 0xdd, 0xff, 0xff, 0xff, 0xff, 0x93, 1, 2, 3]);
        assert_eq!(Codec::new("c").decode(&bytes), Err(DecodeError::Body));
        // Also where the entries past a node's table are read without being kept.
        let capped = Codec::new("c").with_max_nodes(4);
        assert_eq!(capped.decode(&bytes), Err(DecodeError::Body));
    }

    /// A digest longer than the table a node may hold (`with_max_nodes`) is read whole but kept
    /// only up to it, without its cover, and the rest of the message is read as usual; the
    /// entries past the cut must still be well formed.
    #[test]
    fn a_digest_past_the_table_is_cut_and_loses_its_cover() {
        let entries = (1..=6).map(|t| DigestEntry {
            tag: Tag(t),
            heartbeat: 7,
            max_version: 8,
            gc_version: t % 2,
        });
        let delta = vec![NodeDelta {
            tag: Tag(9),
            id: None,
            heartbeat: 3,
            reset: false,
            gc_version: 0,
            from_version: 0,
            max_version: 0,
            entries: Vec::new(),
        }];
        for indexed in [false, true] {
            let msg = |n: usize, cover| Message::SynAck {
                from: Tag(5),
                fp: 6,
                digest: Digest {
                    indexed,
                    cover,
                    entries: entries.clone().take(n).collect(),
                    beats: Beats(Bytes::from_static(&[1, 2, 3, 4])),
                },
                delta: delta.clone(),
            };
            let bytes = Codec::new("c").encode(&msg(6, Some((1, 6))), false);
            let capped = Codec::new("c").with_max_nodes(3);
            assert_eq!(capped.decode(&bytes), Ok(msg(4, None)), "indexed {indexed}");
            let fits = Codec::new("c").encode(&msg(4, Some((1, 6))), false);
            assert_eq!(capped.decode(&fits), Ok(msg(4, Some((1, 6)))));
        }
        // A Syn from 5, fingerprint 6, digest [false, [0, 9], four entries, bin ""], cut at 3:
        // the fourth entry is still checked, and so are the bytes after the digest.
        let body = |last: &[u8], tail: &[u8]| {
            let mut b = vec![0x93, 5, 6, 0x94, 0xc2, 0x92, 0, 9, 0x94];
            b.extend_from_slice(&[0x93, 1, 1, 1, 0x93, 2, 1, 1, 0x93, 3, 1, 1]);
            b.extend_from_slice(last);
            b.extend_from_slice(&[0xc4, 0]);
            b.extend_from_slice(tail);
            framed(KIND_SYN, &b)
        };
        let capped = Codec::new("c").with_max_nodes(2);
        let Ok(Message::Syn { digest, .. }) = capped.decode(&body(&[0x93, 4, 1, 1], &[])) else {
            panic!("a well-formed Syn refused");
        };
        assert_eq!(
            digest.entries.iter().map(|e| e.tag.0).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(digest.cover, None);
        for (last, tail) in [
            (&[0x92, 4, 1][..], &[][..]),
            (&[0x95, 4, 1, 1, 1, 1][..], &[][..]),
            (&[0x93, 4, 1][..], &[][..]),
            (&[0x93, 4, 1, 0xc0][..], &[][..]),
        ] {
            assert_eq!(
                capped.decode(&body(last, tail)),
                Err(DecodeError::Body),
                "{last:02x?}"
            );
        }
        assert_eq!(
            capped.decode(&body(&[0x93, 4, 1, 1], &[0])),
            Err(DecodeError::Trailing)
        );
    }

    /// `body` framed as a plaintext packet of kind `kind` for cluster "c".
    fn framed(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0x7D, 0x15, VERSION, 1, b'c', kind];
        bytes.extend_from_slice(body);
        bytes
    }

    /// The exact bytes of each kind of message, as peers of this protocol version send and
    /// expect them: the envelope (magic 7D 15, version 1, the cluster id's length and bytes,
    /// the kind: 1 Syn, 2 SynAck, 3 Ack, A5 sealed) and the compact MessagePack body.
    #[test]
    fn messages_encode_to_the_documented_bytes() {
        let mut codec = Codec::new("c");
        let syn = Message::Syn {
            from: Tag(5),
            fp: 0x1234,
            digest: Digest {
                indexed: true,
                cover: Some((1, 200)),
                entries: vec![
                    DigestEntry {
                        tag: Tag(7),
                        heartbeat: 8,
                        max_version: 9,
                        gc_version: 0,
                    },
                    DigestEntry {
                        tag: Tag(1),
                        heartbeat: 2,
                        max_version: 3,
                        gc_version: 4,
                    },
                ],
                beats: Beats(Bytes::from_static(&[1, 0xaa])),
            },
        };
        #[rustfmt::skip]
        let want = [
            0x7D, 0x15, 0x01, 0x01, b'c', 0x01,
            // [from, fp, [indexed, [start, end], [[7, 8, 9], [1, 2, 3, 4]], bin]]
            0x93, 0x05, 0xcd, 0x12, 0x34,
            0x94, 0xc3, 0x92, 0x01, 0xcc, 200, 0x92, 0x93, 7, 8, 9, 0x94, 1, 2, 3, 4,
            0xc4, 0x02, 1, 0xaa,
        ];
        assert_eq!(codec.encode(&syn, false), want);
        let synack = Message::SynAck {
            from: Tag(5),
            fp: 0,
            digest: Digest::default(),
            delta: vec![],
        };
        #[rustfmt::skip]
        let want = [
            0x7D, 0x15, 0x01, 0x01, b'c', 0x02,
            0x94, 0x05, 0x00, 0x94, 0xc2, 0xc0, 0x90, 0xc4, 0x00, 0x90,
        ];
        assert_eq!(codec.encode(&synack, false), want);
        let ack = Message::Ack {
            from: Tag(5),
            delta: vec![NodeDelta {
                tag: Tag(3),
                id: Some(NodeId::new("n", 2, "127.0.0.1:9".parse().unwrap())),
                heartbeat: 4,
                reset: true,
                gc_version: 0,
                from_version: 1,
                max_version: 2,
                entries: vec![
                    KeyEntry {
                        key: "k".into(),
                        version: 1,
                        value: None,
                    },
                    KeyEntry {
                        key: "k2".into(),
                        version: 2,
                        value: Some(Bytes::from_static(b"v")),
                    },
                ],
            }],
        };
        #[rustfmt::skip]
        let want = [
            0x7D, 0x15, 0x01, 0x01, b'c', 0x03,
            0x92, 0x05, 0x91,
            // [tag, [name, generation, ip, port], heartbeat, reset, gc, from, max, entries]
            0x98, 0x03, 0x94, 0xa1, b'n', 0x02, 0xc4, 0x04, 127, 0, 0, 1, 0x09,
            0x04, 0xc3, 0x00, 0x01, 0x02,
            0x92, 0x93, 0xa1, b'k', 0x01, 0xc0, 0x93, 0xa2, b'k', b'2', 0x02, 0xc4, 0x01, b'v',
        ];
        assert_eq!(codec.encode(&ack, false), want);
        // Sealed: the same envelope, then the sealed kind and the seal around kind and body.
        let mut keyed = Codec::new("c").with_keyring(
            Some(&crate::crypto::Keyring::new([9; 32])),
            false,
            false,
            1,
            2,
        );
        let sealed = keyed.encode(&ack, false);
        assert_eq!(sealed[..6], [0x7D, 0x15, 0x01, 0x01, b'c', 0xA5]);
        assert_eq!(sealed.len(), want.len() + 1 + crate::crypto::SEAL_OVERHEAD);
    }

    /// Every byte of the envelope is checked: both magic bytes, the version (an older one
    /// too), and the whole cluster id (one that is a prefix of ours, or ours a prefix of it,
    /// is foreign).
    #[test]
    fn each_envelope_byte_is_checked() {
        let msg = Message::Ack {
            from: Tag(7),
            delta: vec![],
        };
        let bytes = Codec::new("ab").encode(&msg, false);
        assert_eq!(Codec::new("ab").decode(&bytes), Ok(msg.clone()));
        let mut bad = bytes.clone();
        bad[1] ^= 1;
        assert_eq!(Codec::new("ab").decode(&bad), Err(DecodeError::BadMagic));
        let mut bad = bytes.clone();
        bad[2] = 0;
        assert_eq!(Codec::new("ab").decode(&bad), Err(DecodeError::Version(0)));
        assert_eq!(
            Codec::new("a").decode(&bytes),
            Err(DecodeError::ForeignCluster)
        );
        assert_eq!(
            Codec::new("abc").decode(&bytes),
            Err(DecodeError::ForeignCluster)
        );
        let short = Codec::new("a").encode(&msg, false);
        assert_eq!(
            Codec::new("ab").decode(&short),
            Err(DecodeError::ForeignCluster)
        );
        // A cluster id running past the end of the packet.
        assert_eq!(
            Codec::new("ab").decode(&bytes[..5]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            Codec::new("ab").decode(&bytes[..3]),
            Err(DecodeError::Truncated)
        );
    }

    /// Bodies whose arrays have the wrong number of elements are malformed, even when what
    /// follows would read as a message: the message's fields, the digest's, the cover's, a
    /// digest entry's (3 or 4 only). rmp-serde refuses them too.
    #[test]
    fn arrays_of_the_wrong_length_are_malformed() {
        // A Syn from 5, fingerprint 6, digest [false, nil, [[7, 8, 9]], bin ""].
        let good = [0x93, 5, 6, 0x94, 0xc2, 0xc0, 0x91, 0x93, 7, 8, 9, 0xc4, 0];
        assert!(Codec::new("c").decode(&framed(KIND_SYN, &good)).is_ok());
        let bad: [&[u8]; 10] = [
            // The message claims 4 or 2 fields.
            &[0x94, 5, 6, 0x94, 0xc2, 0xc0, 0x91, 0x93, 7, 8, 9, 0xc4, 0],
            &[0x92, 5, 6, 0x94, 0xc2, 0xc0, 0x91, 0x93, 7, 8, 9, 0xc4, 0],
            // The digest claims 3 or 5 fields.
            &[0x93, 5, 6, 0x93, 0xc2, 0xc0, 0x91, 0x93, 7, 8, 9, 0xc4, 0],
            &[0x93, 5, 6, 0x95, 0xc2, 0xc0, 0x91, 0x93, 7, 8, 9, 0xc4, 0],
            // The cover claims 1 or 3 bounds.
            &[0x93, 5, 6, 0x94, 0xc2, 0x91, 1, 2, 0x90, 0xc4, 0],
            &[0x93, 5, 6, 0x94, 0xc2, 0x93, 1, 2, 0x90, 0xc4, 0],
            // An entry of 2 elements, the next byte read as its third.
            &[0x93, 5, 6, 0x94, 0xc2, 0xc0, 0x91, 0x92, 7, 8, 9, 0xc4, 0],
            // An entry claiming 5 elements, its fourth an array that reads as a second entry.
            &[
                0x93, 5, 6, 0x94, 0xc2, 0xc0, 0x92, 0x95, 7, 8, 9, 0x93, 1, 2, 3, 0xc4, 0,
            ],
            // `indexed` is nil, not a bool.
            &[0x93, 5, 6, 0x94, 0xc0, 0xc0, 0x90, 0xc4, 0],
            // An entry that is not an array.
            &[0x93, 5, 6, 0x94, 0xc2, 0xc0, 0x91, 7, 0xc4, 0],
        ];
        for body in bad {
            assert_eq!(
                Codec::new("c").decode(&framed(KIND_SYN, body)),
                Err(DecodeError::Body),
                "{body:02x?}"
            );
            assert_eq!(reference_decode(KIND_SYN, body), None, "{body:02x?}");
        }
        // The same for the other kinds' field counts.
        let ack = [0x93, 7, 0x90];
        assert_eq!(
            Codec::new("c").decode(&framed(KIND_ACK, &ack)),
            Err(DecodeError::Body)
        );
        let synack = [0x93, 5, 6, 0x94, 0xc2, 0xc0, 0x90, 0xc4, 0, 0x90];
        assert_eq!(
            Codec::new("c").decode(&framed(KIND_SYNACK, &synack)),
            Err(DecodeError::Body)
        );
    }

    /// A byte after the body is refused for every kind, the Syn (whose body the hand codec
    /// reads alone) included.
    #[test]
    fn trailing_bytes_are_refused_for_every_kind() {
        let msgs = [
            Message::Syn {
                from: Tag(5),
                fp: 6,
                digest: Digest::default(),
            },
            Message::SynAck {
                from: Tag(5),
                fp: 6,
                digest: Digest::default(),
                delta: vec![],
            },
            Message::Ack {
                from: Tag(5),
                delta: vec![],
            },
        ];
        for msg in msgs {
            let mut bytes = Codec::new("c").encode(&msg, false);
            assert_eq!(Codec::new("c").decode(&bytes), Ok(msg.clone()));
            bytes.push(0xc0);
            assert_eq!(
                Codec::new("c").decode(&bytes),
                Err(DecodeError::Trailing),
                "{msg:?}"
            );
        }
    }

    /// Negative integers in any signed form are no `u64`; non-negative ones in every signed
    /// form are read, as rmp-serde reads them.
    #[test]
    fn signed_integer_forms_are_read_only_when_not_negative() {
        let digest = [0x94, 0xc2, 0xc0, 0x90, 0xc4, 0];
        let syn = |from: &[u8]| {
            let mut body = vec![0x93];
            body.extend_from_slice(from);
            body.push(6);
            body.extend_from_slice(&digest);
            body
        };
        let positive: [&[u8]; 4] = [
            &[0xd0, 5],
            &[0xd1, 0, 5],
            &[0xd2, 0, 0, 0, 5],
            &[0xd3, 0, 0, 0, 0, 0, 0, 0, 5],
        ];
        for from in positive {
            let body = syn(from);
            let got = Codec::new("c").decode(&framed(KIND_SYN, &body));
            assert_eq!(got.as_ref().map(Message::from), Ok(Tag(5)), "{from:02x?}");
            assert_eq!(reference_decode(KIND_SYN, &body), got.ok());
        }
        let negative: [&[u8]; 4] = [
            &[0xd0, 0xff],
            &[0xd1, 0xff, 0xfb],
            &[0xd2, 0x80, 0, 0, 0],
            &[0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ];
        for from in negative {
            let body = syn(from);
            assert_eq!(
                Codec::new("c").decode(&framed(KIND_SYN, &body)),
                Err(DecodeError::Body),
                "{from:02x?}"
            );
            assert_eq!(reference_decode(KIND_SYN, &body), None);
        }
    }

    /// Lengths and integers in forms longer than needed (valid MessagePack, which rmp-serde
    /// reads) are read the same: a 32-bit array header and bin length, a 16-bit ones, a
    /// 64-bit integer.
    #[test]
    fn longer_than_needed_forms_are_read_as_rmp_serde_reads_them() {
        #[rustfmt::skip]
        let body = [
            0x93, 0xcf, 0, 0, 0, 0, 0, 0, 0, 5, 6,
            0x94, 0xc2,
            0xdc, 0, 2, 1, 0xcc, 200,
            0xdd, 0, 0, 0, 2,
            0xdc, 0, 3, 7, 8, 9,
            0x93, 1, 2, 3,
            0xc6, 0, 0, 0, 2, 1, 0xaa,
        ];
        let want = Message::Syn {
            from: Tag(5),
            fp: 6,
            digest: Digest {
                indexed: false,
                cover: Some((1, 200)),
                entries: vec![
                    DigestEntry {
                        tag: Tag(7),
                        heartbeat: 8,
                        max_version: 9,
                        gc_version: 0,
                    },
                    DigestEntry {
                        tag: Tag(1),
                        heartbeat: 2,
                        max_version: 3,
                        gc_version: 0,
                    },
                ],
                beats: Beats(Bytes::from_static(&[1, 0xaa])),
            },
        };
        assert_eq!(
            Codec::new("c").decode(&framed(KIND_SYN, &body)),
            Ok(want.clone())
        );
        assert_eq!(reference_decode(KIND_SYN, &body), Some(want.clone()));
        // The beats as a bin16.
        let mut body16 = body[..body.len() - 7].to_vec();
        body16.extend_from_slice(&[0xc5, 0, 2, 1, 0xaa]);
        assert_eq!(
            Codec::new("c").decode(&framed(KIND_SYN, &body16)),
            Ok(want.clone())
        );
        assert_eq!(reference_decode(KIND_SYN, &body16), Some(want));
    }

    /// Array, bin and string headers at the edges of their forms, up to 2^16 elements, are
    /// rmp-serde's, `size` counts them, and the reader reads them back.
    #[test]
    fn length_headers_at_their_edges_match_rmp_serde() {
        for n in [0, 15, 16, 31, 32, 0xff, 0x100, 0xffff, 0x1_0000] {
            let mut out = Vec::new();
            mp::put_array_len(&mut out, n);
            let reference = rmp_serde::to_vec(&vec![0u8; n]).unwrap();
            assert_eq!(out, reference[..reference.len() - n], "array of {n}");
            assert_eq!(size::array(n), out.len(), "array of {n}");
            assert_eq!(mp::Reader::new(&out).array_len(), Some(n));
            let bytes = vec![7u8; n];
            let mut out = Vec::new();
            mp::put_bin(&mut out, &bytes);
            let reference = rmp_serde::to_vec(&Bytes::from(bytes.clone())).unwrap();
            assert_eq!(out, reference, "bin of {n}");
            assert_eq!(size::bin(n), out.len(), "bin of {n}");
            assert_eq!(mp::Reader::new(&out).bin(), Some(&bytes[..]));
            let s = "x".repeat(n);
            assert_eq!(
                size::str(n),
                rmp_serde::to_vec(&s).unwrap().len(),
                "str of {n}"
            );
        }
    }

    /// The codec's stated overhead is exact for every keyring setting (budgets are filled to
    /// it): sealed, keyed but sending plaintext (a migration), and without a keyring whatever
    /// the plaintext flags say (the default configuration sets both to false).
    #[test]
    fn overhead_is_exact_for_every_keyring_setting() {
        let ring = crate::crypto::Keyring::new([9; 32]);
        let msg = Message::Ack {
            from: Tag(7),
            delta: vec![],
        };
        for (keyring, send, accept, sealed) in [
            (Some(&ring), false, false, true),
            (Some(&ring), true, true, false),
            (None, false, false, false),
            (None, true, true, false),
        ] {
            let mut codec = Codec::new("a").with_keyring(keyring, send, accept, 1, 2);
            let bytes = codec.encode(&msg, false);
            let case = (keyring.is_some(), send, accept);
            assert_eq!(
                bytes.len(),
                codec.overhead() + size::message(&msg),
                "{case:?}"
            );
            assert_eq!(bytes[5] == KIND_SEALED, sealed, "{case:?}");
            // Plaintext goes to nodes without keys; without a keyring it is also accepted.
            let plain = Codec::new("a").decode(&bytes);
            assert_eq!(plain.is_ok(), !sealed, "{case:?}");
            if keyring.is_none() {
                let from_plain = Codec::new("a").encode(&msg, false);
                assert_eq!(codec.decode(&from_plain), Ok(msg.clone()), "{case:?}");
            }
        }
    }

    /// Beat positions take varints of up to four bytes (positions below 2^28), whether the
    /// positions are ordered on the stack (below 4,096) or sorted; a fifth byte is malformed.
    #[test]
    fn beat_positions_round_trip_up_to_four_varint_bytes() {
        for set in [
            vec![(4_095, 1), (0, 2)],
            vec![(4_096, 1), (4_095, 2)],
            vec![(4_096, 3)],
            vec![(1 << 21, 4), (3, 5), ((1 << 28) - 1, 6)],
        ] {
            let mut items: Vec<(u32, u64)> = set.clone();
            let beats = Beats::encode(&mut items);
            let mut want: Vec<(u32, u8)> = set.iter().map(|&(p, h)| (p, h as u8)).collect();
            want.sort_unstable();
            let mut it = beats.decode();
            assert_eq!(it.by_ref().collect::<Vec<_>>(), want);
            assert!(it.finished() && !it.malformed(), "{set:?}");
        }
        let five = Beats(Bytes::from_static(&[0x81, 0x80, 0x80, 0x80, 0x01, 7]));
        let mut it = five.decode();
        assert_eq!(it.next(), None);
        assert!(it.malformed());
    }

    /// Positions adding up past `u32::MAX` are malformed, not wrapped around to small ones.
    #[test]
    fn beat_positions_past_u32_are_malformed() {
        // Deltas of 2^28 - 1: sixteen of them stay below 2^32, the seventeenth does not.
        let pair = [0xff, 0xff, 0xff, 0x7f, 9];
        let bytes: Vec<u8> = pair.iter().copied().cycle().take(17 * pair.len()).collect();
        let beats = Beats(Bytes::from(bytes));
        let mut it = beats.decode();
        let read: Vec<(u32, u8)> = it.by_ref().collect();
        assert_eq!(read.len(), 16);
        assert_eq!(read[15], (16 * ((1 << 28) - 1), 9));
        assert!(it.malformed() && it.finished());
    }

    /// The beats `beats_room` allows in a budget fit it at worst, among 65,536 nodes (the most
    /// `max_nodes` allows), where three deltas can take three varint bytes and the rest two.
    #[test]
    fn beats_room_holds_the_worst_case_in_a_large_cluster() {
        let nodes = 65_536;
        let worst = |k: usize| -> usize {
            let mut items: Vec<(u32, u64)> = (0..k as u32)
                .map(|i| {
                    if i < 3 {
                        (16_384 * (i + 1), 0)
                    } else {
                        (49_152 + 128 * (i - 2), 0)
                    }
                })
                .collect();
            Beats::encode(&mut items).len()
        };
        assert_eq!(worst(3), 12);
        for budget in 0..=64 {
            let room = beats_room(budget, nodes);
            assert!(worst(room) <= budget, "budget {budget}: {room} beats");
        }
    }

    /// A rebuilt heartbeat never wraps around: near 0 it is taken as is, near `u64::MAX` it
    /// saturates.
    #[test]
    fn rebuilt_heartbeats_never_wrap() {
        assert_eq!(rebuild_heartbeat(10, 200), 200);
        assert_eq!(rebuild_heartbeat(0, 255), 255);
        assert_eq!(rebuild_heartbeat(u64::MAX - 10, 0), u64::MAX);
        assert_eq!(rebuild_heartbeat(u64::MAX, 0), u64::MAX);
    }

    /// The heartbeat a sender states for itself is found by its tag: in a digest that names
    /// nodes by tag (not in an indexed one, where a position may equal the tag), else in its
    /// own node delta.
    #[test]
    fn own_heartbeat_is_found_by_tag() {
        let entry = DigestEntry {
            tag: Tag(5),
            heartbeat: 9,
            max_version: 1,
            gc_version: 0,
        };
        let digest = |indexed| Digest {
            indexed,
            entries: vec![entry],
            ..Digest::default()
        };
        let delta = |tag| NodeDelta {
            tag: Tag(tag),
            id: None,
            heartbeat: 11,
            reset: false,
            gc_version: 0,
            from_version: 0,
            max_version: 0,
            entries: vec![],
        };
        let syn = |indexed| Message::Syn {
            from: Tag(5),
            fp: 0,
            digest: digest(indexed),
        };
        assert_eq!(syn(false).own_heartbeat(), Some(9));
        assert_eq!(syn(true).own_heartbeat(), None);
        let synack = |indexed, tag| Message::SynAck {
            from: Tag(5),
            fp: 0,
            digest: digest(indexed),
            delta: vec![delta(tag)],
        };
        assert_eq!(synack(false, 5).own_heartbeat(), Some(9));
        assert_eq!(synack(true, 5).own_heartbeat(), Some(11));
        assert_eq!(synack(true, 6).own_heartbeat(), None);
        let ack = |tag| Message::Ack {
            from: Tag(5),
            delta: vec![delta(6), delta(tag)],
        };
        assert_eq!(ack(5).own_heartbeat(), Some(11));
        assert_eq!(ack(7).own_heartbeat(), None);
    }
}
