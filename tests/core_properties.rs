//! Properties of the sans-IO core driven by hand, without the simulator: two nodes that
//! exchange without loss converge; datagrams always fit the budget; the largest UDP payload is
//! read.
// The tests only need an arbitrary origin for the instants they pass in.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use proptest::prelude::*;
use tidings::{Channel, Config, Node, NodeId, Transmit};

fn addr(i: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + i))
}

fn node(i: u16, config: &Config, t0: Instant) -> Node {
    let id = NodeId::new(format!("n{i}"), 1, addr(i));
    Node::new(id, config.clone(), u64::from(i), t0).expect("valid config")
}

/// Delivers every pending transmit between the nodes (no loss), checking each datagram's
/// size, until nothing is in flight. Returns the largest datagram seen.
fn pump(nodes: &mut [Node], now: Instant, max: usize) -> usize {
    let mut largest = 0;
    loop {
        let mut flight: Vec<(usize, Transmit)> = Vec::new();
        for (i, n) in nodes.iter_mut().enumerate() {
            while let Some(t) = n.poll_transmit() {
                flight.push((i, t));
            }
            while n.poll_event().is_some() {}
        }
        if flight.is_empty() {
            return largest;
        }
        for (from, t) in flight {
            if t.channel == Channel::Datagram {
                assert!(
                    t.payload.len() <= max,
                    "datagram of {} bytes",
                    t.payload.len()
                );
                largest = largest.max(t.payload.len());
            }
            let from_addr = nodes[from].id().addr;
            let Some(to) = nodes.iter().position(|n| n.id().addr == t.to) else {
                continue;
            };
            match t.channel {
                Channel::Datagram => nodes[to].handle_datagram(now, from_addr, &t.payload),
                Channel::Stream => {
                    nodes[to].handle_stream_frame(now, from_addr, &t.payload);
                }
            }
        }
    }
}

/// What `viewer` holds of `owner`: key -> value.
fn view(viewer: &Node, owner: &str) -> BTreeMap<String, Bytes> {
    viewer
        .node_state(owner)
        .map(|s| s.iter().map(|(k, v)| (k.to_owned(), v.clone())).collect())
        .unwrap_or_default()
}

fn writes() -> impl Strategy<Value = Vec<(u8, String, Option<Vec<u8>>)>> {
    proptest::collection::vec(
        (
            0u8..3,
            "[a-e]{1,3}",
            proptest::option::weighted(0.8, proptest::collection::vec(any::<u8>(), 0..3000)),
        ),
        0..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// (a) Nodes that complete exchanges with no loss end with identical views, whatever was
    /// written (values up to twice the datagram budget included) and however writes interleave
    /// with gossip.
    #[test]
    fn lossless_exchanges_converge_to_identical_views(ops in writes(), stride in 1usize..8) {
        let config = Config::default();
        let t0 = Instant::now();
        let mut nodes: Vec<Node> = (0..3).map(|i| node(i, &config, t0)).collect();
        let seeds = [addr(0)];
        for n in nodes.iter_mut().skip(1) {
            n.join(t0, seeds);
        }
        let mut now = t0;
        for (k, (who, key, value)) in ops.iter().enumerate() {
            let n = &mut nodes[usize::from(*who)];
            match value {
                Some(v) => n.set(now, key, v.clone()).unwrap(),
                None => n.delete(now, key).unwrap(),
            }
            if k % stride == 0 {
                now += config.gossip_interval;
                for n in nodes.iter_mut() {
                    n.handle_timeout(now);
                }
                pump(&mut nodes, now, config.max_datagram_size);
            }
        }
        for _ in 0..40 {
            now += config.gossip_interval;
            for n in nodes.iter_mut() {
                n.handle_timeout(now);
            }
            pump(&mut nodes, now, config.max_datagram_size);
        }
        for owner in 0..3 {
            let name = format!("n{owner}");
            let truth = view(&nodes[owner], &name);
            for viewer in 0..3 {
                prop_assert_eq!(&view(&nodes[viewer], &name), &truth, "n{} viewing {}", viewer, name);
                prop_assert_eq!(
                    nodes[viewer].node_state(&name).map(|s| s.max_version()),
                    Some(nodes[owner].local_state().max_version())
                );
            }
        }
    }

    /// (c) Every datagram fits the budget for any state: many keys, values near and above the
    /// budget, keys near the key limit.
    #[test]
    fn every_datagram_fits_the_budget(
        keys in 1usize..60,
        value_len in prop_oneof![0usize..100, 1200usize..1500, 1300usize..5000],
        key_len in prop_oneof![1usize..10, 400usize..512],
        budget in prop_oneof![Just(1400usize), 512usize..2000],
    ) {
        let mut config = Config::default();
        config.max_datagram_size = budget;
        let t0 = Instant::now();
        let mut nodes: Vec<Node> = (0..4).map(|i| node(i, &config, t0)).collect();
        for (i, n) in nodes.iter_mut().enumerate() {
            for k in 0..keys {
                let key = format!("{k:0>width$}", width = key_len);
                n.set(t0, key, vec![i as u8; value_len]).unwrap();
            }
            n.join(t0, [addr(0)]);
        }
        let mut now = t0;
        let mut largest = 0;
        for _ in 0..10 {
            now += config.gossip_interval;
            for n in nodes.iter_mut() {
                n.handle_timeout(now);
            }
            largest = largest.max(pump(&mut nodes, now, budget));
        }
        prop_assert!(largest <= budget);
        for n in &nodes {
            prop_assert!(n.stats().max_datagram as usize <= budget);
            prop_assert_eq!(n.num_live(), 4);
        }
    }
}

#[test]
fn an_entry_larger_than_any_datagram_travels_by_stream() {
    let config = Config::default();
    let t0 = Instant::now();
    let mut nodes: Vec<Node> = (0..2).map(|i| node(i, &config, t0)).collect();
    nodes[1].join(t0, [addr(0)]);
    let mut now = t0;
    for _ in 0..5 {
        now += config.gossip_interval;
        for n in nodes.iter_mut() {
            n.handle_timeout(now);
        }
        pump(&mut nodes, now, config.max_datagram_size);
    }
    let big = vec![7u8; 20_000];
    nodes[0].set(now, "big", big.clone()).unwrap();
    for _ in 0..20 {
        now += config.gossip_interval;
        for n in nodes.iter_mut() {
            n.handle_timeout(now);
        }
        pump(&mut nodes, now, config.max_datagram_size);
    }
    assert_eq!(nodes[1].get("n0", "big").map(|b| b.len()), Some(20_000));
    assert!(nodes[0].stats().oversized_entries > 0);
    assert!(nodes[0].stats().tx_frames > 0);
}

/// How long observer `n0` takes to mark `n1` down after `n1` stops, when `n0`'s own rounds
/// each run `lag` late (an overloaded host).
fn time_to_conviction(lag: std::time::Duration) -> std::time::Duration {
    use std::time::Duration;
    let config = Config::default();
    let interval = config.gossip_interval;
    let t0 = Instant::now();
    let mut nodes = vec![node(0, &config, t0), node(1, &config, t0)];
    nodes[0].join(t0, [addr(1)]);
    let step = Duration::from_millis(5);
    let mut now = t0;
    let crash_at = t0 + Duration::from_secs(30);
    let mut due0 = nodes[0].poll_timeout();
    while now < t0 + Duration::from_secs(120) {
        now += step;
        if due0.is_some_and(|d| now >= d + lag) {
            nodes[0].handle_timeout(now);
            due0 = nodes[0].poll_timeout();
        }
        if now < crash_at {
            if nodes[1].poll_timeout().is_some_and(|d| now >= d) {
                nodes[1].handle_timeout(now);
            }
            pump(&mut nodes, now, 1400);
        } else {
            while nodes[1].poll_transmit().is_some() {}
            if nodes[0].status("n1") == Some(tidings::MemberStatus::Down) {
                return now - crash_at;
            }
            while nodes[0].poll_transmit().is_some() {}
        }
        assert!(
            now >= crash_at || nodes[0].status("n1") == Some(tidings::MemberStatus::Alive),
            "n1 convicted while alive (lag {lag:?}, interval {interval:?})"
        );
    }
    panic!("n1 never convicted (lag {lag:?})");
}

/// Local health: a node whose own rounds run late hears heartbeats late for the same reason,
/// so it waits longer before convicting, and still convicts a peer that really stopped.
#[test]
fn an_overloaded_observer_waits_longer_before_convicting() {
    let interval = Config::default().gossip_interval;
    let punctual = time_to_conviction(std::time::Duration::ZERO);
    let late = time_to_conviction(interval * 3 / 2);
    assert!(
        late >= punctual * 3,
        "punctual {punctual:?}, rounds 1.5 intervals late {late:?}"
    );
}

/// The largest UDP payload over IPv4.
const MAX_UDP_PAYLOAD: usize = 65_507;

/// A datagram of 65,507 bytes is read (here: dropped as malformed); one byte more is dropped
/// unread as oversized. A node may be configured to send the largest.
#[test]
fn datagrams_up_to_the_largest_udp_payload_are_read() {
    let t0 = Instant::now();
    let mut node = Node::new(NodeId::new("n0", 1, addr(0)), Config::default(), 0, t0).unwrap();
    node.handle_datagram(t0, addr(1), &vec![0u8; MAX_UDP_PAYLOAD]);
    let s = node.stats();
    assert_eq!((s.rx_malformed, s.rx_oversized), (1, 0), "{s:?}");
    node.handle_datagram(t0, addr(1), &vec![0u8; MAX_UDP_PAYLOAD + 1]);
    let s = node.stats();
    assert_eq!((s.rx_malformed, s.rx_oversized), (1, 1), "{s:?}");
    let mut config = Config::default();
    config.max_datagram_size = MAX_UDP_PAYLOAD;
    config.max_frame_size = config.max_frame_size.max(MAX_UDP_PAYLOAD);
    assert!(Node::new(NodeId::new("n1", 1, addr(1)), config.clone(), 1, t0).is_ok());
    config.max_datagram_size = MAX_UDP_PAYLOAD + 1;
    config.max_frame_size = config.max_frame_size.max(MAX_UDP_PAYLOAD + 1);
    assert!(Node::new(NodeId::new("n1", 1, addr(1)), config, 1, t0).is_err());
}
