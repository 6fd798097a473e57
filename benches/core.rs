//! Hot paths of the sans-IO core, measured through its public API on a converged simulated
//! cluster: handling one incoming Syn (decode, digest comparison, SynAck built and encoded), a
//! whole gossip round of one node, and the same Syn sealed with XChaCha20-Poly1305 (the
//! per-datagram cost of encryption). `codec/*` encodes and decodes one and the same captured
//! Syn with a plain and a sealed codec, which isolates what sealing costs per datagram.
//! Convergence speed is a simulator figure, not a bench.
//!
//! ```text
//! cargo bench --features sim,fuzzing --bench core
//! cargo bench --features sim,fuzzing --bench core -- --test    # compile-and-run check, as in CI
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tidings::fuzzing::WireCodec;
use tidings::sim::{NetConfig, Sim};
use tidings::{Channel, Config, Keyring, Transmit};

/// A converged cluster of `n` nodes and one Syn that node 1 sent to node 0.
fn cluster(n: usize, keyring: Option<Keyring>) -> (Sim, Transmit) {
    let mut config = Config::default();
    config.gossip_interval = Duration::from_millis(100);
    config.ring = None;
    config.keyring = keyring;
    let mut sim = Sim::new(1, config, NetConfig::default());
    for _ in 0..n {
        sim.add_node();
    }
    sim.join_all_via(&[0, 1, 2]);
    let _ = sim.run_until_sampled(Duration::from_secs(60), Duration::from_millis(50), |s| {
        s.all_see_live(n)
    });
    sim.run_for(Duration::from_secs(5));
    let to0 = sim.nodes[0].addr;
    // Capture Syns node 1 sends until one goes to node 0.
    loop {
        let syn = sim.with_node(1, |node, now| {
            node.handle_timeout(now + Duration::from_millis(100));
            let mut found = None;
            while let Some(t) = node.poll_transmit() {
                if t.to == to0 && t.channel == Channel::Datagram && found.is_none() {
                    found = Some(t);
                }
            }
            found
        });
        if let Some(t) = syn {
            return (sim, t);
        }
        sim.run_for(Duration::from_millis(100));
    }
}

fn handle_syn(c: &mut Criterion) {
    let mut g = c.benchmark_group("core");
    g.measurement_time(Duration::from_secs(3));
    for (label, keyring) in [("plain", None), ("sealed", Some(Keyring::new([7; 32])))] {
        for n in [100, 500] {
            let (mut sim, syn) = cluster(n, keyring.clone());
            let from = sim.nodes[1].addr;
            let bytes = syn.payload.clone();
            g.bench_function(
                format!("handle_syn/{label}/{n}_nodes/{}_bytes", bytes.len()),
                |b| {
                    b.iter(|| {
                        sim.with_node(0, |node, now| {
                            node.handle_datagram(now, from, black_box(&bytes));
                            while let Some(t) = node.poll_transmit() {
                                let _ = black_box(t);
                            }
                        })
                    })
                },
            );
        }
    }
    let (mut sim, _) = cluster(500, None);
    let mut t = Duration::ZERO;
    g.bench_function("gossip_round/plain/500_nodes", |b| {
        b.iter(|| {
            t += Duration::from_millis(100);
            sim.with_node(0, |node, now| {
                node.handle_timeout(now + t);
                while let Some(tx) = node.poll_transmit() {
                    let _ = black_box(tx);
                }
                while node.poll_event().is_some() {}
            })
        })
    });
    g.finish();
}

/// One captured 500-node Syn, encoded then decoded by the real codec, plain and sealed.
fn codec(c: &mut Criterion) {
    let (_sim, syn) = cluster(500, None);
    let plain = WireCodec::new("tidings", None, true, true);
    let msg = plain
        .decode(&syn.payload)
        .unwrap_or_else(|d| panic!("a Syn the core sent must decode: {d:?}"));
    let keyring = Keyring::new([7; 32]);
    let mut g = c.benchmark_group("codec");
    g.measurement_time(Duration::from_secs(3));
    for (label, mut codec) in [
        ("plain", WireCodec::new("tidings", None, true, true)),
        (
            "sealed",
            WireCodec::new("tidings", Some(&keyring), false, false),
        ),
    ] {
        let len = codec.encode(&msg, false).len();
        g.bench_function(format!("encode_decode/{label}/{len}_bytes"), |b| {
            b.iter(|| {
                let bytes = codec.encode(black_box(&msg), false);
                black_box(codec.decode(&bytes).is_ok())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, handle_syn, codec);
criterion_main!(benches);
