//! Regression tests for what the fuzz targets in `fuzz/` found, through the public API only
//! (plain `cargo test`, no feature needed), and the seed-corpus dump for those targets.
//!
//! Each finding is a minimized input replayed against the same node the target builds
//! (`fuzz/common/cluster.rs`, shared with `#[path]`), asserting that it is dropped or
//! handled without a panic, and counted where it is dropped.
// The tests only need an arbitrary origin for the instants they pass in.
#![allow(clippy::disallowed_methods)]

#[path = "../fuzz/common/cluster.rs"]
mod cluster;

use std::path::Path;

use tidings::{Channel, Node, Stats};

/// Feeds `bytes` to a replayed node of the `datagram` / `stream_frame` target and returns
/// its stats before and after.
fn feed(keyed: bool, channel: Channel, bytes: &[u8]) -> (Node, Stats, Stats) {
    let (mut node, now) = cluster::replay(keyed);
    let before = node.stats();
    match channel {
        Channel::Datagram => node.handle_datagram(now, cluster::addr(1), bytes),
        Channel::Stream => {
            node.handle_stream_frame(now, cluster::addr(1), bytes);
        }
    }
    let after = node.stats();
    while node.poll_transmit().is_some() {}
    while node.poll_event().is_some() {}
    (node, before, after)
}

/// The replayed node the targets start from knows both peers (if it did not, the targets
/// would fuzz a lonely node).
#[test]
fn the_fuzz_start_state_knows_its_peers() {
    for keyed in [false, true] {
        let (node, _) = cluster::replay(keyed);
        assert_eq!(node.num_members(), 3, "keyed: {keyed}");
        assert_eq!(node.get("n1", "gamma").map(|b| &b[..]), Some(&b"g"[..]));
        assert!(
            node.get("n2", "big").is_some(),
            "the large value came by stream (keyed: {keyed})"
        );
        let s = node.stats();
        assert_eq!(
            s.rx_malformed + s.rx_auth_failed + s.rx_plaintext_refused,
            0,
            "keyed: {keyed}"
        );
    }
}

/// Every prefix of every captured packet is dropped as malformed (or, for a sealed packet,
/// as failing authentication), never panics, and changes nothing.
#[test]
fn truncated_captured_packets_are_dropped_and_counted() {
    for keyed in [false, true] {
        let packets = cluster::history(keyed);
        for p in packets.iter().take(6) {
            for cut in [0, 1, 3, 5, p.payload.len() / 2, p.payload.len() - 1] {
                let (_, before, after) = feed(keyed, p.channel, &p.payload[..cut]);
                let dropped = (after.rx_malformed - before.rx_malformed)
                    + (after.rx_auth_failed - before.rx_auth_failed);
                assert_eq!(dropped, 1, "keyed {keyed}, cut at {cut}");
            }
        }
    }
}

/// Writes the seed corpora of the `datagram` and `stream_frame` targets from a live exchange:
/// `cargo test --test fuzz_regressions -- --ignored dump_fuzz_seeds`. The seeds are checked in
/// under fuzz/seeds/; rerun this after a wire format change.
#[test]
#[ignore = "writes fuzz/seeds/; run by hand"]
fn dump_fuzz_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let header = 4 + cluster::CLUSTER.len();
    let mut written = 0;
    for (dir, channel) in [
        ("datagram", Channel::Datagram),
        ("stream_frame", Channel::Stream),
    ] {
        let dir = root.join(dir);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut seeds: Vec<Vec<u8>> = Vec::new();
        for keyed in [false, true] {
            let all = cluster::capture(keyed);
            let mine: Vec<_> = all.iter().filter(|p| p.channel == channel).collect();
            // Spread over the run: early (joins, full syncs) to late (steady state).
            let step = (mine.len() / 24).max(1);
            for (i, p) in mine.iter().enumerate().filter(|(i, _)| i % step == 0) {
                let tick = if i % 3 == 0 { 16 } else { 0 };
                let stranger = if i % 5 == 0 { 8 } else { 0 };
                // Mode byte (fuzz/common/harness.rs): the whole packet to the node it suits.
                let mut raw = vec![u8::from(keyed) | tick | stranger];
                raw.extend_from_slice(&p.payload);
                seeds.push(raw);
                if !keyed {
                    // `[kind][body]` alone: wrapped in a plaintext envelope (2), or sealed for
                    // the keyed node (1 | 4).
                    for mode in [2u8, 5] {
                        let mut wrapped = vec![mode | tick];
                        wrapped.extend_from_slice(&p.payload[header..]);
                        seeds.push(wrapped);
                    }
                }
            }
        }
        seeds.sort();
        seeds.dedup();
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:03}")), s).unwrap();
            written += 1;
        }
    }
    eprintln!("wrote {written} seeds under {}", root.display());
    assert!(written > 0);
}

// ----- Panics on peer input found while building the targets (review of the receive path
// against the targets' invariants), each confirmed by a trace in the `structured` target's
// format (`cluster::run_trace`), replayed against its node (`cluster::small_node`: limits
// 8 keys / 1 KiB / 6 nodes). Each panicked under overflow checks (debug and test builds,
// cargo-fuzz builds) before its fix; RELIABILITY.md has the diagnosis and the fix of each. -----

/// Runs a trace against the `structured` target's node, returning it.
fn run_structured(trace: &str) -> Node {
    let mut node = cluster::small_node(false);
    cluster::run_trace(&mut node, trace);
    node
}

/// Bytes of user keys and values `name` holds live (what `size_bytes` counts, without
/// tombstones and reserved keys).
fn live_bytes(node: &Node, name: &str) -> usize {
    node.node_state(name)
        .map(|s| s.iter().map(|(k, v)| k.len() + v.len()).sum())
        .unwrap_or(0)
}

/// F1: a node delta naming the same key twice (`k1` at versions 3 and 4, both empty, over a
/// 100-byte `k1`) made the byte accounting in `NodeState::apply` subtract the old value once
/// per repetition: `attempt to subtract with overflow` at src/state.rs (a panic wherever
/// overflow checks are on, a spurious `Invalid` in release). An honest sender never repeats a
/// key; the delta must be rejected (counted) or applied with exact accounting, never panic.
#[test]
fn f1_repeated_key_in_one_delta_is_handled() {
    const TRACE: &str = r"
D 0 127.0.0.1:7101 7d15010466757a7a0392cf3860be17d744ad3a9198cf3860be17d744ad3a94a16101c4047f000001cd1bbd01c30000029293a26b3101c4647878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787893a26b3202c40178
D 0 127.0.0.1:7101 7d15010466757a7a0392cf3860be17d744ad3a9198cf3860be17d744ad3ac002c20002049293a26b3103c40093a26b3104c400
";
    let mut lines = TRACE.trim().lines();
    let first = lines.next().unwrap();
    let mut node = run_structured(first);
    assert_eq!(live_bytes(&node, "a"), 2 + 100 + 2 + 1);
    let before = node.stats();
    cluster::run_trace(&mut node, lines.next().unwrap());
    let after = node.stats();
    let state = node.node_state("a").unwrap();
    if after.deltas_rejected == before.deltas_rejected + 1 {
        assert_eq!(
            live_bytes(&node, "a"),
            105,
            "a rejected delta changed the state"
        );
    } else {
        assert_eq!(after.deltas_applied, before.deltas_applied + 1);
        assert_eq!(
            state.size_bytes(),
            live_bytes(&node, "a"),
            "byte accounting drifted"
        );
        assert_eq!(node.get("a", "k1").map(|v| v.len()), Some(0));
    }
}

/// F2: a peer convicted down at heartbeat `u64::MAX - 1` that then sends `u64::MAX`: the
/// come-back test `hb >= down_heartbeat + UP_BEATS` (src/node/liveness.rs, `learn_heartbeat_at`)
/// overflows. Heartbeats are peer input: near-`u64::MAX` values must not panic.
#[test]
fn f2_heartbeat_at_u64_max_after_down_is_handled() {
    const TRACE: &str = r"
D 0 127.0.0.1:7101 7d15010466757a7a0392cf3860be17d744ad3a9198cf3860be17d744ad3a94a16101c4047f000001cd1bbdcffffffffffffffffec300000090
T 200
T 400
T 600
T 800
T 1000
T 1200
T 1400
T 1600
T 1800
D 1800 127.0.0.1:7101 7d15010466757a7a0392cf3860be17d744ad3a9198cf3860be17d744ad3ac0cfffffffffffffffffc200000090
";
    let node = run_structured(TRACE);
    assert_eq!(
        node.node_state("a").map(|s| s.heartbeat().0),
        Some(u64::MAX)
    );
    assert_eq!(node.stats().downs, 1);
}

/// F3: eight or more successive heartbeats at or above 2^63 from one peer: the detector casts
/// them to `i64` (negative), its phase saturates at `i64::MAX`, and the phase-shift test
/// `self.phase + PHASE_SHIFT_INTERVALS * interval_ns` (src/detector.rs) overflows.
#[test]
fn f3_heartbeats_above_2_pow_63_are_handled() {
    const TRACE: &str = r"
D 0 127.0.0.1:7101 7d15010466757a7a0392cf3860be17d744ad3a9198cf3860be17d744ad3a94a16101c4047f000001cd1bbdcf8000000000000000c300000090
D 10 127.0.0.1:7101 7d15010466757a7a0392cf3860be17d744ad3a9198cf3860be17d744ad3ac0cf8000000000000001c200000090
D 20 127.0.0.1:7101 7d15010466757a7a0392cf3860be17d744ad3a9198cf3860be17d744ad3ac0cf8000000000000002c200000090
D 30 127.0.0.1:7101 7d15010466757a7a0392cf3860be17d744ad3a9198cf3860be17d744ad3ac0cf8000000000000003c200000090
D 40 127.0.0.1:7101 7d15010466757a7a0392cf3860be17d744ad3a9198cf3860be17d744ad3ac0cf8000000000000004c200000090
D 50 127.0.0.1:7101 7d15010466757a7a0392cf3860be17d744ad3a9198cf3860be17d744ad3ac0cf8000000000000005c200000090
D 60 127.0.0.1:7101 7d15010466757a7a0392cf3860be17d744ad3a9198cf3860be17d744ad3ac0cf8000000000000006c200000090
D 70 127.0.0.1:7101 7d15010466757a7a0392cf3860be17d744ad3a9198cf3860be17d744ad3ac0cf8000000000000007c200000090
D 80 127.0.0.1:7101 7d15010466757a7a0392cf3860be17d744ad3a9198cf3860be17d744ad3ac0cf8000000000000008c200000090
D 90 127.0.0.1:7101 7d15010466757a7a0392cf3860be17d744ad3a9198cf3860be17d744ad3ac0cf8000000000000009c200000090
D 100 127.0.0.1:7101 7d15010466757a7a0392cf3860be17d744ad3a9198cf3860be17d744ad3ac0cf800000000000000ac200000090
D 110 127.0.0.1:7101 7d15010466757a7a0392cf3860be17d744ad3a9198cf3860be17d744ad3ac0cf800000000000000bc200000090
";
    let node = run_structured(TRACE);
    assert_eq!(
        node.node_state("a").map(|s| s.heartbeat().0),
        Some((1 << 63) + 11)
    );
    assert_eq!(node.status("a"), Some(tidings::MemberStatus::Alive));
}

/// F5: a peer whose heartbeat we hold near `u64::MAX` (here `u64::MAX - 10`), then an indexed
/// Syn whose beats carry its low byte 0: `rebuild_heartbeat` (src/wire.rs) computes
/// `cand + 256` past `u64::MAX`. (Found by review of the beats commit d87d5b8 while fuzzing;
/// the `structured` target generates beats since.)
#[test]
fn f5_beats_next_to_u64_max_are_handled() {
    const TRACE: &str = r"
D 0 127.0.0.1:7101 7d15010466757a7a0392cf3860be17d744ad3a9198cf3860be17d744ad3a94a16101c4047f000001cd1bbdcffffffffffffffff5c300000090
T 200
D 200 127.0.0.1:7101 7d15010466757a7a0193cf3860be17d744ad3acfe096a846424872da94c3c090c4020000
";
    let node = run_structured(TRACE);
    let hb = node.node_state("a").map(|s| s.heartbeat().0);
    assert!(hb >= Some(u64::MAX - 10), "{hb:?}");
}
