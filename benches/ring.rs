//! Hot paths of `tidings::ring` at 1,000 members: owner lookups for integer and 27-byte string
//! keys, 3 distinct replicas, a build from scratch, and the new ring after one member leaves or
//! joins (and both at once with `Ring::rebuild`), for the default config (256 vnodes, 2^18 partitions, bounded load c = 1.08) and for
//! the uncapped ring (`bounded_load: None`).
//!
//! Lookups cycle through 65,536 random keys so that the lookup table is read at random places,
//! as a service would; each iteration is one lookup. Consecutive lookups are independent, so the
//! CPU overlaps their cache misses: these are throughput figures, not the latency of a lone
//! lookup.
//!
//! ```text
//! cargo bench --bench ring                 # full run (about 1 min)
//! cargo bench --bench ring -- --test       # compile-and-run check, as in CI
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use tidings::ring::{Ring, RingConfig};

const MEMBERS: usize = 1000;
const KEYS: usize = 1 << 16;

fn names() -> Vec<String> {
    (0..MEMBERS).map(|i| format!("member-{i:05}")).collect()
}

fn configs() -> Vec<(&'static str, RingConfig)> {
    let mut uncapped = RingConfig::default();
    uncapped.bounded_load = None;
    vec![("default", RingConfig::default()), ("uncapped", uncapped)]
}

fn lookups(c: &mut Criterion) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0x60551);
    let int_keys: Vec<u64> = (0..KEYS).map(|_| rng.random()).collect();
    // "tenant-XXXX/object-YYYYYYYY": 27 bytes.
    let str_keys: Vec<String> = (0..KEYS)
        .map(|_| {
            format!(
                "tenant-{:04}/object-{:08}",
                rng.random_range(0..10_000u32),
                rng.random_range(0..100_000_000u32)
            )
        })
        .collect();
    let names = names();
    for (label, config) in configs() {
        let ring = match Ring::new(config, names.iter().map(String::as_str)) {
            Ok(ring) => ring,
            Err(e) => panic!("ring: {e}"),
        };
        let mut group = c.benchmark_group(format!("ring_{label}"));
        let mut i = 0usize;
        group.bench_function("owner_u64", |b| {
            b.iter(|| {
                i = (i + 1) & (KEYS - 1);
                black_box(ring.owner_u64(black_box(int_keys[i])))
            })
        });
        group.bench_function("owner_str27", |b| {
            b.iter(|| {
                i = (i + 1) & (KEYS - 1);
                black_box(ring.owner(black_box(str_keys[i].as_bytes())))
            })
        });
        group.bench_function("owners3_u64", |b| {
            b.iter(|| {
                i = (i + 1) & (KEYS - 1);
                let mut it = ring.owners_u64(black_box(int_keys[i]), 3);
                (it.next(), it.next(), it.next())
            })
        });
        group.bench_function("owners3_str27", |b| {
            b.iter(|| {
                i = (i + 1) & (KEYS - 1);
                let mut it = ring.owners(black_box(str_keys[i].as_bytes()), 3);
                (it.next(), it.next(), it.next())
            })
        });
        group.finish();
    }
}

fn rebuild(c: &mut Criterion) {
    let names = names();
    for (label, config) in configs() {
        let ring = match Ring::new(config.clone(), names.iter().map(String::as_str)) {
            Ok(ring) => ring,
            Err(e) => panic!("ring: {e}"),
        };
        let mut group = c.benchmark_group(format!("ring_{label}"));
        group.sample_size(20);
        // From scratch: hash and sort 1,000 x 256 vnodes, assign the partitions.
        group.bench_function("build_1000", |b| {
            b.iter(|| Ring::new(config.clone(), names.iter().map(String::as_str)))
        });
        // After a membership change, from the previous ring (same result as from scratch).
        group.bench_function("leave_1000", |b| {
            b.iter(|| ring.without_member("member-00500"))
        });
        group.bench_function("join_1000", |b| b.iter(|| ring.with_member("member-01000")));
        // Two changes at once (one leaves, one joins), as `Node` sees after a settle delay.
        let next: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|&n| n != "member-00500")
            .chain(["member-01000"])
            .collect();
        group.bench_function("rebuild_1000", |b| {
            b.iter(|| ring.rebuild(next.iter().copied()))
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = lookups, rebuild
}
criterion_main!(benches);
