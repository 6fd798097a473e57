//! Hot paths of `tidings::ring` at 1,000 members x 256 vnodes (the default config): owner
//! lookups for integer and ~24-byte string keys, 3 distinct replicas, and a rebuild after one
//! member leaves, for the plain ring and for bounded load (c = 1.05).
//!
//! Lookups cycle through 65,536 random keys so that the index and vnode arrays are read at
//! random places, as a service would; each iteration is one lookup.
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
    let plain = RingConfig::default();
    let mut bounded = RingConfig::default();
    bounded.bounded_load = Some(1.05);
    vec![("plain", plain), ("bounded1.05", bounded)]
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
        group.bench_function("TMP_owners1_u64", |b| {
            b.iter(|| {
                i = (i + 1) & (KEYS - 1);
                let mut it = ring.owners_u64(black_box(int_keys[i]), 1);
                it.next()
            })
        });
        group.bench_function("TMP_owners2_u64", |b| {
            b.iter(|| {
                i = (i + 1) & (KEYS - 1);
                let mut it = ring.owners_u64(black_box(int_keys[i]), 2);
                (it.next(), it.next())
            })
        });
        group.bench_function("TMP_owners3_count", |b| {
            b.iter(|| {
                i = (i + 1) & (KEYS - 1);
                ring.owners_u64(black_box(int_keys[i]), 3).len()
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
        let mut group = c.benchmark_group(format!("ring_{label}"));
        group.sample_size(20);
        // The 999 survivors after one member leaves, rebuilt from scratch.
        group.bench_function("rebuild_999", |b| {
            b.iter(|| Ring::new(config.clone(), names[1..].iter().map(String::as_str)))
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
