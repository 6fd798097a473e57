//! A small converged cluster, built with the public API only, shared by the fuzz targets and by
//! `tests/fuzz_regressions.rs` (which includes this file with `#[path]`).
//!
//! `capture` runs three nodes, hand-pumping every transmit between them without loss, and
//! records each packet node 0 receives. `replay` feeds that history to a fresh node 0, which
//! then knows its two peers and their keys: a fuzz input starts from that state, so every input
//! is reproducible on its own (no state carries over between inputs).
// Tests and harnesses only need an arbitrary origin for the instants they pass in.
#![allow(clippy::disallowed_methods, dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tidings::{Channel, Config, Keyring, Node, NodeId};

/// Cluster id of every fuzzed node.
pub const CLUSTER: &str = "fuzz";
/// The key of the keyed cluster.
pub const KEY: [u8; 32] = [7; 32];
/// Rounds the capture runs.
const ROUNDS: u64 = 12;

/// Gossip address of node `i`.
pub fn addr(i: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + i))
}

/// An address no member has.
pub fn stranger() -> SocketAddr {
    SocketAddr::from(([10, 9, 8, 7], 7999))
}

/// The instant every harness starts at.
pub fn origin() -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

/// Default config in cluster `fuzz`; keyed: a keyring, sealing, still accepting plaintext.
pub fn config(keyed: bool) -> Config {
    let mut c = Config::default();
    c.cluster_id = CLUSTER.into();
    // No ring: building it (even with few vnodes: its slot table has a fixed size) was most of
    // the cost of an input, and these targets exercise the receive path, not the ring
    // (tests/ring_properties.rs does). The `structured` target keeps a small one.
    c.ring = None;
    if keyed {
        c.keyring = Some(Keyring::new(KEY));
        c.accept_plaintext = true;
    }
    c
}

/// Node `i` of the capture cluster.
pub fn node(i: u16, keyed: bool, now: Instant) -> Node {
    let id = NodeId::new(format!("n{i}"), 1, addr(i));
    Node::new(id, config(keyed), u64::from(i) + 1, now).expect("valid config")
}

/// One packet some node received during the capture.
#[derive(Clone, Debug)]
pub struct Packet {
    /// Receiver index.
    pub to: usize,
    pub from: SocketAddr,
    pub channel: Channel,
    pub payload: Vec<u8>,
    /// Offset from the origin.
    pub at: Duration,
}

/// Runs a three-node cluster for a few rounds with a few writes, deletes, a large value (so
/// stream frames flow), readiness and weight, and returns every packet delivered, in order.
pub fn capture(keyed: bool) -> Vec<Packet> {
    let t0 = origin();
    let mut nodes: Vec<Node> = (0..3).map(|i| node(i, keyed, t0)).collect();
    nodes[1].join(t0, [addr(0)]);
    nodes[2].join(t0, [addr(0)]);
    let mut out = Vec::new();
    for round in 0..ROUNDS {
        let at = Duration::from_millis(100 * round);
        let now = t0 + at;
        match round {
            1 => {
                nodes[0].set(now, "zero", &b"0"[..]).unwrap();
                nodes[1].set(now, "alpha", &b"a"[..]).unwrap();
                nodes[1].set(now, "beta", vec![b'b'; 40]).unwrap();
                nodes[2].set_ready(now, false).unwrap();
            }
            3 => {
                nodes[1].delete(now, "alpha").unwrap();
                nodes[2].set(now, "big", vec![b'x'; 3000]).unwrap();
                nodes[2].set_weight(now, 2.5).unwrap();
            }
            6 => {
                nodes[1].set(now, "gamma", &b"g"[..]).unwrap();
                nodes[0].delete(now, "zero").unwrap();
            }
            _ => {}
        }
        for n in nodes.iter_mut() {
            n.handle_timeout(now);
        }
        pump(&mut nodes, now, at, &mut out);
    }
    out
}

fn pump(nodes: &mut [Node], now: Instant, at: Duration, out: &mut Vec<Packet>) {
    loop {
        let mut flight = Vec::new();
        for (i, n) in nodes.iter_mut().enumerate() {
            while let Some(t) = n.poll_transmit() {
                flight.push((i, t));
            }
            while n.poll_event().is_some() {}
        }
        if flight.is_empty() {
            return;
        }
        for (from, t) in flight {
            let Some(to) = nodes.iter().position(|n| n.id().addr == t.to) else {
                continue;
            };
            let from = nodes[from].id().addr;
            match t.channel {
                Channel::Datagram => nodes[to].handle_datagram(now, from, &t.payload),
                Channel::Stream => {
                    nodes[to].handle_stream_frame(now, from, &t.payload);
                }
            }
            out.push(Packet {
                to,
                from,
                channel: t.channel,
                payload: t.payload.to_vec(),
                at,
            });
        }
    }
}

/// The history node 0 received in the capture (computed once per process).
pub fn history(keyed: bool) -> &'static [Packet] {
    static PLAIN: OnceLock<Vec<Packet>> = OnceLock::new();
    static KEYED: OnceLock<Vec<Packet>> = OnceLock::new();
    let cell = if keyed { &KEYED } else { &PLAIN };
    cell.get_or_init(|| capture(keyed).into_iter().filter(|p| p.to == 0).collect())
}

/// A fresh node 0 that received its capture history: it knows `n1` and `n2` and their keys.
/// Returns the node and the instant of its last packet.
pub fn replay(keyed: bool) -> (Node, Instant) {
    let t0 = origin();
    let mut n = node(0, keyed, t0);
    let mut now = t0;
    for p in history(keyed) {
        now = t0 + p.at;
        match p.channel {
            Channel::Datagram => n.handle_datagram(now, p.from, &p.payload),
            Channel::Stream => {
                n.handle_stream_frame(now, p.from, &p.payload);
            }
        }
    }
    while n.poll_transmit().is_some() {}
    while n.poll_event().is_some() {}
    (n, now)
}

/// The node the `structured` target drives: small limits and short graces, so limits, expiry,
/// tombstone purges and burials are reached within a short input.
pub fn small_config(keyed: bool) -> Config {
    let mut c = config(keyed);
    let mut ring = tidings::ring::RingConfig::default();
    ring.vnodes = std::num::NonZeroU32::new(8).expect("8 > 0");
    // A small table: building the default 2^18 partitions for every input would take most of
    // the fuzzer's time (52 inputs per second instead of hundreds).
    ring.partition_bits = 8;
    c.ring = Some(ring);
    c.dead_grace = Duration::from_secs(1);
    c.left_grace = Duration::from_secs(1);
    // `left_grace` must cover the leave's gossip and four intervals (`Config::validate`).
    c.leave_timeout = Duration::from_millis(200);
    c.forget_after = Duration::from_secs(3);
    c.tombstone_grace = Duration::from_secs(1);
    c.limits.max_nodes = 6;
    c.limits.max_keys_per_node = 8;
    c.limits.max_key_len = 32;
    c.limits.max_value_len = 256;
    c.limits.max_state_bytes_per_node = 1024;
    c
}

/// The `structured` target's node: `me#1` at 127.0.0.1:7100.
pub fn small_node(keyed: bool) -> Node {
    let id = NodeId::new("me", 1, SocketAddr::from(([127, 0, 0, 1], 7100)));
    Node::new(id, small_config(keyed), 42, origin()).expect("valid config")
}

/// One step of a trace, as the `structured` target prints it with `TIDINGS_FUZZ_TRACE=1`:
///
/// ```text
/// D <ms> <from> <hex>   datagram at origin + ms
/// F <ms> <from> <hex>   stream frame
/// T <ms>                handle_timeout
/// S <ms> <key> <len>    set(key, len bytes of b'v')
/// X <ms> <key>          delete(key)
/// R <ms> <0|1>          set_ready
/// L <ms>                leave
/// ```
pub fn run_trace(node: &mut Node, trace: &str) {
    let t0 = origin();
    for line in trace.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let w: Vec<&str> = line.split_whitespace().collect();
        let now = t0 + Duration::from_millis(w[1].parse().expect("ms"));
        match w[0] {
            "D" => node.handle_datagram(now, w[2].parse().expect("addr"), &unhex(w[3])),
            "F" => {
                node.handle_stream_frame(now, w[2].parse().expect("addr"), &unhex(w[3]));
            }
            "T" => node.handle_timeout(now),
            "S" => {
                let _ = node.set(now, w[2], vec![b'v'; w[3].parse().expect("len")]);
            }
            "X" => {
                let _ = node.delete(now, w[2]);
            }
            "R" => {
                let _ = node.set_ready(now, w[2] == "1");
            }
            "L" => node.leave(now),
            other => panic!("unknown trace step {other}"),
        }
        while node.poll_transmit().is_some() {}
        while node.poll_event().is_some() {}
    }
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parses `hex`.
pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}
