//! Well-formed gossip messages (Syn / SynAck / Ack with digests and node deltas), encoded with
//! the crate's real codec, fed to one node interleaved with timeouts and local commands, with
//! the node's invariants checked after every step through the public API.
//!
//! Checks after every step (see RELIABILITY_FUZZ.md):
//! - every `Stats` counter only grows;
//! - members have distinct names, each name finds its own incarnation, at most `max_nodes`;
//!   `num_live()` equals the live members counted; peers' states stay within the key and byte
//!   limits;
//! - for a member whose generation is unchanged, `heartbeat` never decreases, and
//!   `max_version` never decreases except through a reset delta for that incarnation that
//!   proves the copy missed purged tombstones (its `gc_version` is above the old
//!   `max_version`): the one rollback the protocol allows;
//! - our own state (`local_state()`) is never changed by a received message;
//! - every packet the node sends fits its channel and decodes for a peer;
//! - every message we encode decodes back to itself (codec round trip).
//!
//! `TIDINGS_FUZZ_TRACE=1` prints the steps in the trace format of `cluster::run_trace`, which
//! is how a finding becomes a regression test in tests/fuzz_regressions.rs.
#![no_main]

#[path = "../common/cluster.rs"]
mod cluster;
#[path = "../common/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use tidings::NodeId;
use tidings::fuzzing::{Digest, DigestEntry, KeyEntry, Message, NodeDelta, tag_of};

const NAMES: [&str; 8] = ["me", "a", "b", "c", "d", "e", "f", "g"];
const POOL: usize = 16;
const MAX_STEPS: usize = 48;

/// Pool identity `i`: a name of `NAMES`, generation 1 or 2. Index 0 is our node, 8 a newer
/// incarnation of our name.
fn pool_id(i: u8) -> NodeId {
    let i = usize::from(i) % POOL;
    NodeId::new(
        NAMES[i % NAMES.len()],
        1 + (i / NAMES.len()) as u64,
        pool_addr(i as u8),
    )
}

fn pool_addr(i: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7100 + u16::from(i) % POOL as u16))
}

#[derive(Arbitrary, Debug)]
struct Input {
    keyed: bool,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug)]
enum Step {
    Send {
        from: u8,
        stream: bool,
        msg: AMsg,
    },
    /// The same message built and sent 1 to 16 times: values relative to what the node holds
    /// (`Held`) advance each time, e.g. a run of growing heartbeats.
    Repeat {
        times: u8,
        from: u8,
        stream: bool,
        msg: AMsg,
    },
    Tick {
        ms: u16,
    },
    /// 1 to 32 timeouts `ms % 600 + 1` apart: time passes without looking like a pause, so
    /// peers go down, expire and are forgotten.
    Ticks {
        n: u8,
        ms: u16,
    },
    Jump {
        secs: u8,
    },
    Set {
        key: u8,
        len: u8,
    },
    Delete {
        key: u8,
    },
    Ready(bool),
    /// Leaves only for one value in 256: a left node ignores everything after.
    Leave(u8),
}

#[derive(Arbitrary, Debug)]
enum AMsg {
    Syn {
        from: ATag,
        fp: AFp,
        digest: ADigest,
    },
    SynAck {
        from: ATag,
        fp: AFp,
        digest: ADigest,
        delta: Vec<ADelta>,
    },
    Ack {
        from: ATag,
        delta: Vec<ADelta>,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum ATag {
    Pool(u8),
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
enum AFp {
    /// The fingerprint the node last sent (so indexed digests can be readable).
    Latest,
    Raw(u64),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum AU64 {
    Small(u8),
    /// `u64::MAX - n`.
    Near(u8),
    Raw(u64),
}

impl AU64 {
    fn get(self) -> u64 {
        match self {
            Self::Small(n) => u64::from(n),
            Self::Near(n) => u64::MAX - u64::from(n),
            Self::Raw(n) => n,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct ADigest {
    indexed: bool,
    cover: ACover,
    entries: Vec<AEntry>,
    beats: ABeats,
}

/// A digest's heartbeat-only news: `(position, heartbeat)` pairs encoded as a node does, or
/// raw bytes.
#[derive(Arbitrary, Debug)]
enum ABeats {
    None,
    Items(Vec<(u8, AHb)>),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum ACover {
    None,
    Full,
    Range(AU64, AU64),
}

#[derive(Arbitrary, Debug)]
struct AEntry {
    /// In an indexed digest, `Pool(i)` is position `i`.
    tag: ATag,
    heartbeat: AHb,
    max_version: AVer,
    gc_version: AU64,
}

/// A value relative to what the node holds for the entry's member, or absolute.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum AHb {
    Held(i8),
    Abs(AU64),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum AVer {
    Held(i8),
    Abs(AU64),
}

#[derive(Arbitrary, Debug)]
struct ADelta {
    tag: ATag,
    id: AId,
    heartbeat: AHb,
    reset: bool,
    gc_version: AU64,
    versions: AVersions,
    entries: Vec<AKey>,
}

#[derive(Arbitrary, Debug)]
enum AId {
    None,
    /// The identity the tag was made from (if the tag is a pool tag).
    Own,
    Pool(u8),
    Custom {
        name: AName,
        generation: AU64,
        v6: bool,
        port: u16,
    },
}

#[derive(Arbitrary, Debug)]
enum AName {
    Pool(u8),
    Empty,
    Long(u16),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum AVersions {
    /// Builds on what the node holds (`from` = its max, or 0 for a reset), entries numbered
    /// in order from `from + 1 + skip`, `max` = the last entry's plus `extra`.
    Coherent {
        from_offset: i8,
        skip: u8,
        extra: u8,
    },
    Raw {
        from: AU64,
        max: AU64,
        versions: Vec<AU64>,
    },
}

#[derive(Arbitrary, Debug)]
struct AKey {
    key: AKeyName,
    value: AValue,
}

#[derive(Arbitrary, Debug)]
enum AKeyName {
    Small(u8),
    Ready,
    Left,
    Weight,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum AValue {
    Tombstone,
    Bytes(Vec<u8>),
    /// `n * 8` bytes: around the value and state limits.
    Big(u8),
    Zero,
    Weight(u8),
}

fn trace_on() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("TIDINGS_FUZZ_TRACE").is_some())
}

/// What the node holds of a member, by tag.
fn held(node: &tidings::Node, tag: u64) -> Option<(u64, u64)> {
    node.members()
        .find(|m| tag_of(&m.id.name, m.id.generation.0) == tag)
        .and_then(|m| node.node_state(&m.id.name))
        .map(|s| (s.heartbeat().0, s.max_version().0))
}

fn rel(base: u64, d: i8) -> u64 {
    base.saturating_add_signed(i64::from(d))
}

struct Builder<'a> {
    node: &'a tidings::Node,
    fp: u64,
}

impl Builder<'_> {
    fn tag(&self, t: ATag) -> u64 {
        match t {
            ATag::Pool(i) => {
                let id = pool_id(i);
                tag_of(&id.name, id.generation.0)
            }
            ATag::Raw(t) => t,
        }
    }

    fn digest(&self, d: &ADigest) -> Digest {
        let entries = d
            .entries
            .iter()
            .map(|e| {
                let tag = self.tag(e.tag);
                let (hb, max) = held(self.node, tag).unwrap_or((0, 0));
                DigestEntry {
                    tag: match (d.indexed, e.tag) {
                        (true, ATag::Pool(i)) => u64::from(i),
                        _ => tag,
                    },
                    heartbeat: match e.heartbeat {
                        AHb::Held(x) => rel(hb, x),
                        AHb::Abs(v) => v.get(),
                    },
                    max_version: match e.max_version {
                        AVer::Held(x) => rel(max, x),
                        AVer::Abs(v) => v.get(),
                    },
                    gc_version: e.gc_version.get(),
                }
            })
            .collect();
        let cover = match d.cover {
            ACover::None => None,
            ACover::Full => Some((0, u64::MAX)),
            ACover::Range(a, b) => Some((a.get(), b.get())),
        };
        let beats = match &d.beats {
            ABeats::None => Vec::new(),
            ABeats::Items(items) => {
                // Position p names the p-th member in tag order, as the node sorts them.
                let mut order: Vec<(u64, u64)> = self
                    .node
                    .members()
                    .map(|m| {
                        let hb = self
                            .node
                            .node_state(&m.id.name)
                            .map_or(0, |s| s.heartbeat().0);
                        (tag_of(&m.id.name, m.id.generation.0), hb)
                    })
                    .collect();
                order.sort_unstable();
                let mut items: Vec<(u32, u64)> = items
                    .iter()
                    .map(|(p, hb)| {
                        let held = order.get(usize::from(*p)).map_or(0, |o| o.1);
                        let hb = match hb {
                            AHb::Held(x) => rel(held, *x),
                            AHb::Abs(v) => v.get(),
                        };
                        (u32::from(*p), hb)
                    })
                    .collect();
                items.sort_unstable_by_key(|i| i.0);
                items.dedup_by_key(|i| i.0);
                tidings::fuzzing::encode_beats(&mut items)
            }
            ABeats::Raw(b) => b.clone(),
        };
        Digest {
            indexed: d.indexed,
            cover,
            entries,
            beats,
        }
    }

    fn fp(&self, f: &AFp) -> u64 {
        match f {
            AFp::Latest => self.fp,
            AFp::Raw(v) => *v,
        }
    }

    fn deltas(&self, ds: &[ADelta]) -> Vec<NodeDelta> {
        ds.iter().map(|d| self.delta(d)).collect()
    }

    fn delta(&self, d: &ADelta) -> NodeDelta {
        let tag = self.tag(d.tag);
        let (hb, max) = held(self.node, tag).unwrap_or((0, 0));
        let id = match &d.id {
            AId::None => None,
            AId::Own => match d.tag {
                ATag::Pool(i) => Some(pool_id(i)),
                ATag::Raw(_) => None,
            },
            AId::Pool(i) => Some(pool_id(*i)),
            AId::Custom {
                name,
                generation,
                v6,
                port,
            } => {
                let name = match name {
                    AName::Pool(i) => NAMES[usize::from(*i) % NAMES.len()].to_owned(),
                    AName::Empty => String::new(),
                    // At most 255 bytes: longer names are refused by the decoder (a
                    // well-formed message never carries one).
                    AName::Long(n) => "n".repeat(usize::from(*n) % 256),
                    AName::Raw(s) => s.chars().take(64).collect(),
                };
                let ip: std::net::IpAddr = if *v6 {
                    std::net::Ipv6Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv4Addr::LOCALHOST.into()
                };
                Some(NodeId::new(
                    name,
                    generation.get(),
                    SocketAddr::new(ip, *port),
                ))
            }
        };
        let key = |k: &AKeyName| match k {
            AKeyName::Small(i) => format!("k{}", i % 12),
            AKeyName::Ready => "tidings:ready".to_owned(),
            AKeyName::Left => "tidings:left".to_owned(),
            AKeyName::Weight => "tidings:weight".to_owned(),
            AKeyName::Raw(s) => s.chars().take(48).collect(),
        };
        let value = |v: &AValue| match v {
            AValue::Tombstone => None,
            AValue::Bytes(b) => Some(b.iter().copied().take(300).collect()),
            AValue::Big(n) => Some(vec![b'x'; usize::from(*n) * 8]),
            AValue::Zero => Some(b"0".to_vec()),
            AValue::Weight(w) => Some(format!("{}.5", w % 8).into_bytes()),
        };
        let (from_version, max_version, entries) = match &d.versions {
            AVersions::Coherent {
                from_offset,
                skip,
                extra,
            } => {
                let from = if d.reset { 0 } else { rel(max, *from_offset) };
                let mut v = from.saturating_add(u64::from(*skip));
                let entries: Vec<KeyEntry> = d
                    .entries
                    .iter()
                    .map(|k| {
                        v = v.saturating_add(1);
                        KeyEntry {
                            key: key(&k.key),
                            version: v,
                            value: value(&k.value),
                        }
                    })
                    .collect();
                (from, v.saturating_add(u64::from(*extra)), entries)
            }
            AVersions::Raw {
                from,
                max,
                versions,
            } => {
                let entries = d
                    .entries
                    .iter()
                    .zip(versions.iter().chain(std::iter::repeat(&AU64::Small(1))))
                    .map(|(k, v)| KeyEntry {
                        key: key(&k.key),
                        version: v.get(),
                        value: value(&k.value),
                    })
                    .collect();
                (from.get(), max.get(), entries)
            }
        };
        NodeDelta {
            tag,
            id,
            heartbeat: match d.heartbeat {
                AHb::Held(x) => rel(hb, x),
                AHb::Abs(v) => v.get(),
            },
            reset: d.reset,
            gc_version: d.gc_version.get(),
            from_version,
            max_version,
            entries,
        }
    }

    fn message(&self, m: &AMsg) -> Message {
        match m {
            AMsg::Syn { from, fp, digest } => Message::Syn {
                from: self.tag(*from),
                fp: self.fp(fp),
                digest: self.digest(digest),
            },
            AMsg::SynAck {
                from,
                fp,
                digest,
                delta,
            } => Message::SynAck {
                from: self.tag(*from),
                fp: self.fp(fp),
                digest: self.digest(digest),
                delta: self.deltas(delta),
            },
            AMsg::Ack { from, delta } => Message::Ack {
                from: self.tag(*from),
                delta: self.deltas(delta),
            },
        }
    }
}

/// Per member name: (generation, heartbeat, max_version).
fn progress(node: &tidings::Node) -> BTreeMap<String, (u64, u64, u64)> {
    node.members()
        .filter_map(|m| {
            let s = node.node_state(&m.id.name)?;
            Some((
                m.id.name.clone(),
                (m.id.generation.0, s.heartbeat().0, s.max_version().0),
            ))
        })
        .collect()
}

/// Our own state, whole (reserved keys included).
fn own(node: &tidings::Node) -> String {
    format!("{:?}", node.local_state())
}

/// Builds `msg` against the node's current view, encodes it, checks the round trip, and
/// delivers it; notes the reset deltas it carries (tag -> largest gc_version) in `resets`.
#[allow(clippy::too_many_arguments)]
fn send(
    node: &mut tidings::Node,
    codec: &mut tidings::fuzzing::WireCodec,
    now: std::time::Instant,
    fp: u64,
    from: u8,
    stream: bool,
    msg: &AMsg,
    resets: &mut BTreeMap<u64, u64>,
) {
    let msg = Builder { node, fp }.message(msg);
    if let Message::SynAck { delta, .. } | Message::Ack { delta, .. } = &msg {
        for d in delta.iter().filter(|d| d.reset) {
            let g = resets.entry(d.tag).or_insert(0);
            *g = (*g).max(d.gc_version);
        }
    }
    let bytes = codec.encode(&msg, stream);
    assert_eq!(codec.decode(&bytes).as_ref(), Ok(&msg), "codec round trip");
    let from = pool_addr(from);
    if trace_on() {
        let c = if stream { 'F' } else { 'D' };
        let ms = (now - cluster::origin()).as_millis();
        eprintln!("{c} {ms} {from} {}", cluster::hex(&bytes));
    }
    if stream {
        node.handle_stream_frame(now, from, &bytes);
    } else {
        node.handle_datagram(now, from, &bytes);
    }
}

fn run(input: Input) {
    let keyed = input.keyed;
    let mut node = cluster::small_node(keyed);
    let mut codec = harness::codec(keyed);
    let t0 = cluster::origin();
    let mut now = t0;
    let mut fp = 0;
    let mut stats = node.stats();
    let mut prev = progress(&node);
    for step in input.steps.iter().take(MAX_STEPS) {
        let ms = (now - t0).as_millis();
        // Resets in this step, by tag: the largest gc_version claimed.
        let mut resets: BTreeMap<u64, u64> = BTreeMap::new();
        let mut own_before = None;
        match step {
            Step::Send { from, stream, msg } => {
                own_before = Some(own(&node));
                send(
                    &mut node,
                    &mut codec,
                    now,
                    fp,
                    *from,
                    *stream,
                    msg,
                    &mut resets,
                );
            }
            Step::Repeat {
                times,
                from,
                stream,
                msg,
            } => {
                own_before = Some(own(&node));
                for _ in 0..=times % 16 {
                    send(
                        &mut node,
                        &mut codec,
                        now,
                        fp,
                        *from,
                        *stream,
                        msg,
                        &mut resets,
                    );
                    if let Some(f) = harness::drain(&mut node, &codec) {
                        fp = f;
                    }
                }
            }
            Step::Tick { ms: d } => {
                now += Duration::from_millis(u64::from(*d));
                if trace_on() {
                    eprintln!("T {}", (now - t0).as_millis());
                }
                node.handle_timeout(now);
            }
            Step::Ticks { n, ms: d } => {
                for _ in 0..=n % 32 {
                    now += Duration::from_millis(u64::from(*d % 600) + 1);
                    if trace_on() {
                        eprintln!("T {}", (now - t0).as_millis());
                    }
                    node.handle_timeout(now);
                    harness::check_node(&node);
                    if let Some(f) = harness::drain(&mut node, &codec) {
                        fp = f;
                    }
                }
            }
            Step::Jump { secs } => {
                now += Duration::from_secs(u64::from(*secs));
                if trace_on() {
                    eprintln!("T {}", (now - t0).as_millis());
                }
                node.handle_timeout(now);
            }
            Step::Set { key, len } => {
                let key = format!("k{}", key % 12);
                if trace_on() {
                    eprintln!("S {ms} {key} {len}");
                }
                let _ = node.set(now, &key, vec![b'v'; usize::from(*len)]);
            }
            Step::Delete { key } => {
                let key = format!("k{}", key % 12);
                if trace_on() {
                    eprintln!("X {ms} {key}");
                }
                let _ = node.delete(now, &key);
            }
            Step::Ready(r) => {
                if trace_on() {
                    eprintln!("R {ms} {}", u8::from(*r));
                }
                let _ = node.set_ready(now, *r);
            }
            Step::Leave(x) => {
                if *x == 0xA5 {
                    if trace_on() {
                        eprintln!("L {ms}");
                    }
                    node.leave(now);
                }
            }
        }
        // Invariants.
        let s = node.stats();
        harness::check_stats_grow(&stats, &s);
        stats = s;
        harness::check_node(&node);
        if let Some(before) = own_before {
            assert_eq!(
                own(&node),
                before,
                "a received message changed our own state"
            );
        }
        let next = progress(&node);
        for (name, &(gen1, hb1, max1)) in &next {
            let Some(&(gen0, hb0, max0)) = prev.get(name) else {
                continue;
            };
            if gen0 != gen1 {
                continue;
            }
            assert!(hb1 >= hb0, "heartbeat of {name} went back: {hb0} -> {hb1}");
            if max1 < max0 {
                let allowed = resets.get(&tag_of(name, gen1)).is_some_and(|&gc| gc > max0);
                assert!(
                    allowed,
                    "max_version of {name}#{gen1} went back {max0} -> {max1} without a reset"
                );
            }
        }
        prev = next;
        if let Some(f) = harness::drain(&mut node, &codec) {
            fp = f;
        }
    }
}

libfuzzer_sys::fuzz_target!(|input: Input| {
    run(input);
});
