//! Hooks for the fuzz targets in `fuzz/` (feature `fuzzing`). Not a stable API: it mirrors the
//! crate-private wire types so a fuzzer can build well-formed messages and encode them with the
//! real codec, and decode what a node sends.
//!
//! Everything here goes through the same code the node uses (`wire::Codec`, `crypto::Sealer`);
//! nothing re-implements the format.

#![allow(missing_docs)]

use bytes::Bytes;

use crate::crypto::{Keyring, NonceSeq, Sealer};
use crate::id::{Generation, NodeId, Tag};
use crate::wire::{self, Codec, DecodeError};

/// A digest entry (`wire::DigestEntry`). In an indexed digest `tag` is a position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigestEntry {
    pub tag: u64,
    pub heartbeat: u64,
    pub max_version: u64,
    pub gc_version: u64,
}

/// A digest (`wire::Digest`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Digest {
    pub indexed: bool,
    pub cover: Option<(u64, u64)>,
    pub entries: Vec<DigestEntry>,
    /// Heartbeat-only news (`wire::Beats`), raw; see [`encode_beats`].
    pub beats: Vec<u8>,
}

/// One key of a node delta (`wire::KeyEntry`); `value: None` is a tombstone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEntry {
    pub key: String,
    pub version: u64,
    pub value: Option<Vec<u8>>,
}

/// A node delta (`wire::NodeDelta`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeDelta {
    pub tag: u64,
    pub id: Option<NodeId>,
    pub heartbeat: u64,
    pub reset: bool,
    pub gc_version: u64,
    pub from_version: u64,
    pub max_version: u64,
    pub entries: Vec<KeyEntry>,
}

/// A gossip message (`wire::Message`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Syn {
        from: u64,
        fp: u64,
        digest: Digest,
    },
    SynAck {
        from: u64,
        fp: u64,
        digest: Digest,
        delta: Vec<NodeDelta>,
    },
    Ack {
        from: u64,
        delta: Vec<NodeDelta>,
    },
}

/// Why the codec drops a packet, named after the `Stats` counter a node bumps for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// `rx_malformed`: truncated, bad magic, unknown kind, bad body, trailing bytes.
    Malformed,
    /// `rx_bad_version`.
    BadVersion,
    /// `rx_foreign_cluster`.
    ForeignCluster,
    /// `rx_auth_failed`.
    AuthFailed,
    /// `rx_plaintext_refused`.
    PlaintextRefused,
}

/// The wire tag of an incarnation: what `NodeDelta::tag` and digest entries carry.
pub fn tag_of(name: &str, generation: u64) -> u64 {
    Tag::of(name, Generation(generation)).0
}

/// The entries (live or tombstoned) and bytes of a state's user keys, as the limits count
/// them; reserved keys have a room of their own.
pub fn user_usage(state: &crate::NodeState) -> (usize, usize) {
    let u = state.usage();
    (u.keys, u.bytes)
}

/// Encodes `(position, heartbeat)` pairs as a digest's beats, as a node does.
pub fn encode_beats(items: &mut [(u32, u64)]) -> Vec<u8> {
    wire::Beats::encode(items).0.to_vec()
}

/// The real codec of a node with this cluster id and keyring settings.
pub struct WireCodec {
    codec: Codec,
    cluster_id: Vec<u8>,
    sealer: Option<Sealer>,
    nonces: NonceSeq,
}

impl WireCodec {
    /// As `Node::new` builds it from `Config` (`sender` and `salt` only vary the nonces).
    pub fn new(
        cluster_id: &str,
        keyring: Option<&Keyring>,
        send_plaintext: bool,
        accept_plaintext: bool,
    ) -> Self {
        Self {
            codec: Codec::new(cluster_id).with_keyring(
                keyring,
                send_plaintext,
                accept_plaintext,
                0x5eed,
                0xf022,
            ),
            cluster_id: cluster_id.as_bytes().to_vec(),
            sealer: keyring.map(Sealer::new),
            nonces: NonceSeq::new(0x5eed, 0xba5e),
        }
    }

    /// Keeps at most `max_nodes + 1` entries of a digest (and drops the cover of one it cut),
    /// as a node with that `Limits::max_nodes` does (`Node::new`; without this the codec
    /// keeps them all), so decoding does not round-trip a longer digest.
    pub fn with_max_nodes(mut self, max_nodes: usize) -> Self {
        self.codec = self.codec.with_max_nodes(max_nodes);
        self
    }

    /// Encodes (and seals, unless sending plaintext) a message exactly as a node would, for
    /// a stream frame if `stream` (a sealed packet is accepted only on its channel).
    pub fn encode(&mut self, msg: &Message, stream: bool) -> Vec<u8> {
        self.codec.encode(&to_wire(msg), stream)
    }

    /// Decodes a packet exactly as a node would, or says which counter it would bump.
    pub fn decode(&self, bytes: &[u8]) -> Result<Message, Drop> {
        self.codec
            .decode(bytes)
            .map(|m| from_wire(&m))
            .map_err(|e| match e {
                DecodeError::ForeignCluster => Drop::ForeignCluster,
                DecodeError::Version(_) => Drop::BadVersion,
                DecodeError::Auth => Drop::AuthFailed,
                DecodeError::Plaintext => Drop::PlaintextRefused,
                DecodeError::Truncated
                | DecodeError::BadMagic
                | DecodeError::Kind(_)
                | DecodeError::Body
                | DecodeError::Trailing => Drop::Malformed,
            })
    }

    /// Wraps arbitrary `[kind][body]` bytes in a valid envelope sealed with the primary key
    /// (for a stream frame if `stream`), so a fuzzer mutating plaintext reaches the body
    /// decoder behind authentication. `None` without a keyring.
    pub fn seal_raw(&mut self, kind_and_body: &[u8], stream: bool) -> Option<Vec<u8>> {
        let sealer = self.sealer.as_ref()?;
        let mut out = Vec::with_capacity(
            wire::MAGIC.len() + 3 + self.cluster_id.len() + kind_and_body.len() + 64,
        );
        out.extend_from_slice(&wire::MAGIC);
        out.push(wire::VERSION);
        out.push(self.cluster_id.len() as u8);
        out.extend_from_slice(&self.cluster_id);
        // wire::KIND_SEALED (private there); `seal_raw_round_trips` below pins it.
        out.push(0xA5);
        sealer.seal(&mut out, kind_and_body, &mut self.nonces, stream);
        Some(out)
    }

    /// Wraps arbitrary `[kind][body]` bytes in a valid plaintext envelope.
    pub fn plain_raw(&self, kind_and_body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.cluster_id.len() + kind_and_body.len());
        out.extend_from_slice(&wire::MAGIC);
        out.push(wire::VERSION);
        out.push(self.cluster_id.len() as u8);
        out.extend_from_slice(&self.cluster_id);
        out.extend_from_slice(kind_and_body);
        out
    }
}

fn to_wire(msg: &Message) -> wire::Message {
    let digest = |d: &Digest| wire::Digest {
        indexed: d.indexed,
        cover: d.cover,
        entries: d
            .entries
            .iter()
            .map(|e| wire::DigestEntry {
                tag: Tag(e.tag),
                heartbeat: e.heartbeat,
                max_version: e.max_version,
                gc_version: e.gc_version,
            })
            .collect(),
        beats: wire::Beats(Bytes::copy_from_slice(&d.beats)),
    };
    let deltas = |ds: &[NodeDelta]| {
        ds.iter()
            .map(|d| wire::NodeDelta {
                tag: Tag(d.tag),
                id: d.id.clone(),
                heartbeat: d.heartbeat,
                reset: d.reset,
                gc_version: d.gc_version,
                from_version: d.from_version,
                max_version: d.max_version,
                entries: d
                    .entries
                    .iter()
                    .map(|e| wire::KeyEntry {
                        key: e.key.as_str().into(),
                        version: e.version,
                        value: e.value.clone().map(Bytes::from),
                    })
                    .collect(),
            })
            .collect()
    };
    match msg {
        Message::Syn {
            from,
            fp,
            digest: d,
        } => wire::Message::Syn {
            from: Tag(*from),
            fp: *fp,
            digest: digest(d),
        },
        Message::SynAck {
            from,
            fp,
            digest: d,
            delta,
        } => wire::Message::SynAck {
            from: Tag(*from),
            fp: *fp,
            digest: digest(d),
            delta: deltas(delta),
        },
        Message::Ack { from, delta } => wire::Message::Ack {
            from: Tag(*from),
            delta: deltas(delta),
        },
    }
}

fn from_wire(msg: &wire::Message) -> Message {
    let digest = |d: &wire::Digest| Digest {
        indexed: d.indexed,
        cover: d.cover,
        entries: d
            .entries
            .iter()
            .map(|e| DigestEntry {
                tag: e.tag.0,
                heartbeat: e.heartbeat,
                max_version: e.max_version,
                gc_version: e.gc_version,
            })
            .collect(),
        beats: d.beats.0.to_vec(),
    };
    let deltas = |ds: &[wire::NodeDelta]| {
        ds.iter()
            .map(|d| NodeDelta {
                tag: d.tag.0,
                id: d.id.clone(),
                heartbeat: d.heartbeat,
                reset: d.reset,
                gc_version: d.gc_version,
                from_version: d.from_version,
                max_version: d.max_version,
                entries: d
                    .entries
                    .iter()
                    .map(|e| KeyEntry {
                        key: e.key.to_string(),
                        version: e.version,
                        value: e.value.as_ref().map(|v| v.to_vec()),
                    })
                    .collect(),
            })
            .collect()
    };
    match msg {
        wire::Message::Syn {
            from,
            fp,
            digest: d,
        } => Message::Syn {
            from: from.0,
            fp: *fp,
            digest: digest(d),
        },
        wire::Message::SynAck {
            from,
            fp,
            digest: d,
            delta,
        } => Message::SynAck {
            from: from.0,
            fp: *fp,
            digest: digest(d),
            delta: deltas(delta),
        },
        wire::Message::Ack { from, delta } => Message::Ack {
            from: from.0,
            delta: deltas(delta),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_and_seal_raw_round_trip() {
        let msg = Message::Ack {
            from: tag_of("a", 1),
            delta: vec![NodeDelta {
                tag: tag_of("b", 2),
                id: Some(NodeId::new("b", 2, "127.0.0.1:9".parse().unwrap())),
                heartbeat: 3,
                reset: true,
                gc_version: 0,
                from_version: 0,
                max_version: 1,
                entries: vec![KeyEntry {
                    key: "k".into(),
                    version: 1,
                    value: Some(b"v".to_vec()),
                }],
            }],
        };
        let ring = Keyring::new([7; 32]);
        let mut sealed = WireCodec::new("c", Some(&ring), false, false);
        let bytes = sealed.encode(&msg, false);
        assert_eq!(sealed.decode(&bytes), Ok(msg.clone()));
        let mut plain = WireCodec::new("c", None, true, true);
        let plain_bytes = plain.encode(&msg, false);
        assert_eq!(plain.decode(&plain_bytes), Ok(msg.clone()));
        assert_eq!(sealed.decode(&plain_bytes), Err(Drop::PlaintextRefused));
        // The body behind the 5-byte envelope, sealed by seal_raw, opens to the same message.
        let raw = sealed.seal_raw(&plain_bytes[4 + 1..], false).unwrap();
        assert_eq!(sealed.decode(&raw), Ok(msg.clone()));
        assert_eq!(plain.plain_raw(&plain_bytes[4 + 1..]), plain_bytes);
    }

    /// With `with_max_nodes`, a digest longer than any table is cut to the table, and its
    /// cover dropped, as at a node.
    #[test]
    fn a_codec_with_max_nodes_cuts_digests_longer_than_the_table() {
        let syn = |n: u64, cover| Message::Syn {
            from: tag_of("a", 1),
            fp: 0,
            digest: Digest {
                cover,
                entries: (0..n)
                    .map(|tag| DigestEntry {
                        tag,
                        heartbeat: 1,
                        max_version: 1,
                        gc_version: 0,
                    })
                    .collect(),
                ..Digest::default()
            },
        };
        let all = Some((0, u64::MAX));
        let mut codec = WireCodec::new("c", None, true, true).with_max_nodes(4);
        let within = codec.encode(&syn(5, all), true);
        assert_eq!(codec.decode(&within), Ok(syn(5, all)));
        let over = codec.encode(&syn(6, all), true);
        assert_eq!(codec.decode(&over), Ok(syn(5, None)));
    }
}
