//! Invariant checks shared by the fuzz targets, and the raw-bytes harness of `datagram` and
//! `stream_frame`.
#![allow(dead_code)]

use std::cell::RefCell;
use std::time::{Duration, Instant};

use tidings::fuzzing::{Drop, Message, WireCodec, tag_of, user_usage};
use tidings::{Channel, Keyring, Member, Node, Stats};

use crate::cluster::{self, CLUSTER, KEY};

/// Every counter of `Stats`, by name (all of them only grow; `max_datagram` is a maximum).
pub fn counters(s: &Stats) -> [(&'static str, u64); 34] {
    [
        ("tx_datagrams", s.tx_datagrams),
        ("tx_datagram_bytes", s.tx_datagram_bytes),
        ("tx_frames", s.tx_frames),
        ("tx_frame_bytes", s.tx_frame_bytes),
        ("rx_datagrams", s.rx_datagrams),
        ("rx_datagram_bytes", s.rx_datagram_bytes),
        ("rx_frames", s.rx_frames),
        ("rx_frame_bytes", s.rx_frame_bytes),
        ("max_datagram", s.max_datagram),
        ("rx_malformed", s.rx_malformed),
        ("rx_bad_version", s.rx_bad_version),
        ("rx_foreign_cluster", s.rx_foreign_cluster),
        ("rx_auth_failed", s.rx_auth_failed),
        ("rx_plaintext_refused", s.rx_plaintext_refused),
        ("rx_replayed", s.rx_replayed),
        ("rx_oversized", s.rx_oversized),
        ("rx_own_tag", s.rx_own_tag),
        ("gossip_rounds", s.gossip_rounds),
        ("stream_syncs", s.stream_syncs),
        ("deltas_applied", s.deltas_applied),
        ("deltas_ignored", s.deltas_ignored),
        ("deltas_rejected", s.deltas_rejected),
        ("entries_applied", s.entries_applied),
        ("heartbeats_learned", s.heartbeats_learned),
        ("nodes_refused", s.nodes_refused),
        ("pauses_detected", s.pauses_detected),
        ("downs", s.downs),
        ("tombstones_purged", s.tombstones_purged),
        ("oversized_entries", s.oversized_entries),
        ("digests_unreadable", s.digests_unreadable),
        ("digests_malformed", s.digests_malformed),
        ("beats_implausible", s.beats_implausible),
        ("identity_conflicts", s.identity_conflicts),
        ("identity_rebases", s.identity_rebases),
    ]
}

/// Counters only grow.
pub fn check_stats_grow(before: &Stats, after: &Stats) {
    for ((name, a), (_, b)) in counters(before).iter().zip(counters(after).iter()) {
        assert!(b >= a, "counter {name} went down: {a} -> {b}");
    }
}

/// The tag a message names as its sender.
fn sender(msg: &Message) -> u64 {
    match msg {
        Message::Syn { from, .. } | Message::SynAck { from, .. } | Message::Ack { from, .. } => {
            *from
        }
    }
}

/// The drop counters, in `Drop` order.
fn drops(s: &Stats) -> [u64; 5] {
    [
        s.rx_malformed,
        s.rx_bad_version,
        s.rx_foreign_cluster,
        s.rx_auth_failed,
        s.rx_plaintext_refused,
    ]
}

fn drop_index(d: Drop) -> usize {
    match d {
        Drop::Malformed => 0,
        Drop::BadVersion => 1,
        Drop::ForeignCluster => 2,
        Drop::AuthFailed => 3,
        Drop::PlaintextRefused => 4,
    }
}

/// One member as seen: identity and status, heartbeat, max and gc versions, bytes, live keys.
type MemberView = (Member, u64, u64, u64, usize, Vec<(String, Vec<u8>)>);

/// Everything observable of a node's view, to show a dropped packet changed nothing.
#[derive(Debug, PartialEq)]
pub struct View {
    members: Vec<MemberView>,
    num_live: usize,
}

impl View {
    pub fn of(node: &Node) -> Self {
        let members = node
            .members()
            .map(|m| {
                let s = node.node_state(&m.id.name).expect("member has a state");
                let keys = s.iter().map(|(k, v)| (k.to_owned(), v.to_vec())).collect();
                (
                    m.clone(),
                    s.heartbeat().0,
                    s.max_version().0,
                    s.gc_version().0,
                    s.size_bytes(),
                    keys,
                )
            })
            .collect();
        Self {
            members,
            num_live: node.num_live(),
        }
    }
}

/// Structural invariants of a node's view, through the public API.
pub fn check_node(node: &Node) {
    let members: Vec<Member> = node.members().collect();
    assert_eq!(members.len(), node.num_members());
    assert!(
        members.len() <= node.config().limits.max_nodes,
        "{} members over max_nodes {}",
        members.len(),
        node.config().limits.max_nodes
    );
    let mut names: Vec<&str> = members.iter().map(|m| m.id.name.as_str()).collect();
    names.sort_unstable();
    let n = names.len();
    names.dedup();
    assert_eq!(names.len(), n, "two members share a name: {members:?}");
    assert_eq!(
        node.num_live(),
        node.live_members().count(),
        "num_live disagrees with the live members"
    );
    let limits = &node.config().limits;
    for m in &members {
        let s = node
            .node_state(&m.id.name)
            .expect("a member's name finds its state");
        assert_eq!(s.id(), &m.id, "name index points to another incarnation");
        if m.id != *node.id() {
            let (keys, bytes) = user_usage(s);
            assert!(keys <= limits.max_keys_per_node, "too many keys held");
            assert!(
                bytes <= limits.max_state_bytes_per_node,
                "state of {} over the byte limit: {bytes}",
                m.id,
            );
        }
    }
}

/// Drains the node's outputs, checking that datagrams fit and every payload decodes for a peer
/// with the same settings. Returns the last membership fingerprint the node sent.
pub fn drain(node: &mut Node, peer: &WireCodec) -> Option<u64> {
    let mut fp = None;
    let max_datagram = node.config().max_datagram_size;
    let max_frame = node.config().max_frame_size;
    while let Some(t) = node.poll_transmit() {
        match t.channel {
            Channel::Datagram => assert!(
                t.payload.len() <= max_datagram,
                "datagram of {} bytes",
                t.payload.len()
            ),
            Channel::Stream => assert!(t.payload.len() <= max_frame, "oversized frame"),
        }
        match peer.decode(&t.payload) {
            Ok(Message::Syn { fp: f, .. } | Message::SynAck { fp: f, .. }) => fp = Some(f),
            Ok(Message::Ack { .. }) => {}
            Err(e) => panic!("the node sent a packet a peer drops: {e:?}"),
        }
    }
    while node.poll_event().is_some() {}
    fp
}

/// A codec with the settings of `cluster::config(keyed)`.
pub fn codec(keyed: bool) -> WireCodec {
    let ring = Keyring::new(KEY);
    WireCodec::new(CLUSTER, keyed.then_some(&ring), false, true)
        .with_max_nodes(cluster::config(keyed).limits.max_nodes)
}

thread_local! {
    /// A replayed node per keyring setting, kept while inputs are dropped at decode.
    static SPARE: RefCell<[Option<(Node, Instant)>; 2]> = const { RefCell::new([None, None]) };
}

/// A node in the replayed start state. Building one is most of the cost of an input (the ring
/// table `Node::new` builds even when ownership is off), so a node that only saw dropped
/// packets is reused: `run_raw` checks that such a packet changed nothing but counters, and
/// counters do not steer the node.
fn take_node(keyed: bool) -> (Node, Instant) {
    SPARE
        .with(|s| s.borrow_mut()[usize::from(keyed)].take())
        .unwrap_or_else(|| cluster::replay(keyed))
}

fn give_back(keyed: bool, node: Node, now: Instant) {
    SPARE.with(|s| s.borrow_mut()[usize::from(keyed)] = Some((node, now)));
}

/// The `datagram` / `stream_frame` harness. Byte 0 selects the case, the rest is the payload:
/// - bit 0: the keyed node (keyring, accept_plaintext) instead of the plaintext one;
/// - bits 1-2: 1 wraps the payload (`[kind][body]`) in a valid plaintext envelope, 2 seals it
///   with the cluster key (so mutations reach the body decoder behind authentication), else
///   the payload is the whole packet;
/// - bit 3: sent from an address no member has, instead of n1's;
/// - bit 4: then a `handle_timeout` one second later.
pub fn run_raw(data: &[u8], channel: Channel) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let keyed = mode & 1 == 1;
    let from = if mode & 8 != 0 {
        cluster::stranger()
    } else {
        cluster::addr(1)
    };
    let peer = codec(keyed);
    let packet = match (mode >> 1) & 3 {
        1 => peer.plain_raw(rest),
        2 => codec(true)
            .seal_raw(rest, matches!(channel, Channel::Stream))
            .expect("keyed"),
        _ => rest.to_vec(),
    };
    let (mut node, now) = take_node(keyed);
    let view = View::of(&node);
    let local = format!("{:?}", node.local_state());
    let s0 = node.stats();
    let expected = peer.decode(&packet);
    let oversized = match channel {
        Channel::Datagram => {
            node.handle_datagram(now, from, &packet);
            packet.len() > 65_507
        }
        Channel::Stream => {
            node.handle_stream_frame(now, from, &packet);
            packet.len() > node.config().max_frame_size
        }
    };
    let s1 = node.stats();
    check_stats_grow(&s0, &s1);
    let (d0, d1) = (drops(&s0), drops(&s1));
    if oversized {
        assert_eq!(s1.rx_oversized, s0.rx_oversized + 1);
        assert_eq!(d0, d1);
    } else {
        match &expected {
            Err(e) => {
                let mut want = d0;
                want[drop_index(*e)] += 1;
                assert_eq!(d1, want, "a packet dropped as {e:?} was counted wrong");
                assert_eq!(View::of(&node), view, "a dropped packet changed the view");
                assert!(
                    node.poll_transmit().is_none(),
                    "a dropped packet got a reply"
                );
            }
            Ok(msg) => {
                assert_eq!(d0, d1, "a decodable packet was counted as dropped");
                // A message naming this node as its sender is dropped and counted as such,
                // unless it was dropped as a replay first.
                let id = node.id();
                let own = sender(msg) == tag_of(&id.name, id.generation.0);
                let replayed = s1.rx_replayed > s0.rx_replayed;
                let want = s0.rx_own_tag + u64::from(own && !replayed);
                assert_eq!(s1.rx_own_tag, want, "own-tag drops counted wrong");
            }
        }
    }
    assert_eq!(
        format!("{:?}", node.local_state()),
        local,
        "a packet changed our own state"
    );
    check_node(&node);
    if expected.is_err() && !oversized && mode & 16 == 0 {
        // Dropped at decode: the checks above showed it changed nothing but counters.
        give_back(keyed, node, now);
        return;
    }
    drain(&mut node, &peer);
    if mode & 16 != 0 {
        node.handle_timeout(now + Duration::from_secs(1));
        check_stats_grow(&s1, &node.stats());
        check_node(&node);
        drain(&mut node, &peer);
    }
}
