//! Balance, movement and build figures for `tidings::ring`.
//!
//! ```text
//! cargo run --release --example ring_report                      # full size: 1,000 members, 10M keys
//! cargo run --example ring_report -- --members 50 --keys 20000   # CI smoke test
//! ```
//!
//! Options: `--members N` (1000), `--keys K` (10,000,000; keys are the integers `0..K` looked
//! up with `owner_u64`), `--move-keys K` (min(keys, 2,000,000); keys sampled per churn trial),
//! `--trials T` (8 joins and 8 leaves per mode), `--vnodes V` (256), `--bits B` (partition
//! bits, default that of `RingConfig::default()`), `--loads c1,c2` (bounded-load factors to
//! report besides the uncapped ring; default `1.02,1.05,1.08,1.1`), `--seed S`.
//!
//! For each mode it prints: the best of 5 builds from scratch, the fastest rebuild after one
//! leave and one join (from the previous ring) over the trials, and ring memory at N members;
//! the peak-to-mean share of the hash space (what infinitely many keys would see), its standard
//! deviation relative to the mean and the fraction of members at capacity, and the
//! peak-to-mean count over K keys; the mean and worst fraction of keys that change owner when
//! one member leaves or joins, in units of the ideal `1/N` (leave) or `1/(N+1)` (join); and how
//! many 3-replica sets changed without containing the changed member, as sets (other members)
//! and, in brackets, as ordered lists (also the same members with another first owner).
//!
//! Capacities round differently at different N, so movement under bounded load varies with N:
//! run several `--members` values (BENCHMARKS.md uses 990 to 1,008) for a fair mean.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use tidings::ring::{Ring, RingConfig};

struct Args {
    members: usize,
    keys: u64,
    move_keys: Option<u64>,
    trials: usize,
    vnodes: u32,
    bits: u8,
    loads: Vec<f64>,
    seed: u64,
}

const USAGE: &str = "\
usage: ring_report [--members N] [--keys K] [--move-keys K] [--trials T] [--vnodes V]
                   [--bits B] [--loads c1,c2,...] [--seed S]
Balance, movement and build figures of the ring (the module docs of examples/ring_report.rs
say what each figure is; defaults: 1,000 members, 10M keys, 8 trials, 256 vnodes).";

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        members: 1000,
        keys: 10_000_000,
        move_keys: None,
        trials: 8,
        vnodes: 256,
        bits: RingConfig::default().partition_bits,
        loads: vec![1.02, 1.05, 1.08, 1.1],
        seed: 0x60551,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--members" => args.members = value.parse()?,
            "--keys" => args.keys = value.parse()?,
            "--move-keys" => args.move_keys = Some(value.parse()?),
            "--trials" => args.trials = value.parse()?,
            "--vnodes" => args.vnodes = value.parse()?,
            "--bits" => args.bits = value.parse()?,
            "--seed" => args.seed = value.parse()?,
            "--loads" => {
                args.loads = value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            _ => bail!("unknown option {flag}"),
        }
    }
    if args.members < 2 {
        bail!("--members must be at least 2");
    }
    Ok(args)
}

/// Member index of an owner name returned by `ring` (names are borrowed from the ring).
struct Indexer {
    by_ptr: Vec<(usize, usize)>,
}

impl Indexer {
    fn new(ring: &Ring) -> Self {
        let mut by_ptr: Vec<(usize, usize)> = ring
            .members()
            .enumerate()
            .map(|(i, (name, _))| (name.as_ptr() as usize, i))
            .collect();
        by_ptr.sort_unstable();
        Self { by_ptr }
    }

    fn index(&self, name: &str) -> usize {
        let p = name.as_ptr() as usize;
        let i = self.by_ptr.partition_point(|&(q, _)| q < p);
        self.by_ptr[i].1
    }
}

// Wall-clock timing is what this report measures; the ring itself never reads a clock.
#[allow(clippy::disallowed_methods)]
fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

fn peak_to_mean(counts: &[f64]) -> f64 {
    let mean = counts.iter().sum::<f64>() / counts.len() as f64;
    counts.iter().copied().fold(0.0, f64::max) / mean
}

fn moved_fraction(old: &Ring, new: &Ring, keys: u64, offset: u64) -> f64 {
    let moved = (offset..offset + keys)
        .filter(|&k| old.owner_u64(k) != new.owner_u64(k))
        .count();
    moved as f64 / keys as f64
}

/// Replica sets (n = 3) that changed although they do not contain `changed` (in either ring):
/// as sets (other members now hold the data), and as ordered lists (the same members, but
/// another first owner, counts too).
fn replica_violations(old: &Ring, new: &Ring, changed: &str, keys: u64, offset: u64) -> (u64, u64) {
    let (mut as_sets, mut in_order) = (0, 0);
    for k in offset..offset + keys {
        let mut a: Vec<&str> = old.owners_u64(k, 3).collect();
        let mut b: Vec<&str> = new.owners_u64(k, 3).collect();
        if a != b && !a.contains(&changed) && !b.contains(&changed) {
            in_order += 1;
            a.sort_unstable();
            b.sort_unstable();
            if a != b {
                as_sets += 1;
            }
        }
    }
    (as_sets, in_order)
}

fn report(args: &Args, label: &str, config: &RingConfig) -> anyhow::Result<()> {
    let names: Vec<String> = (0..args.members)
        .map(|i| format!("member-{i:05}"))
        .collect();
    let (ring, _) = time(|| Ring::new(config.clone(), names.iter().map(String::as_str)));
    let ring = ring?;
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let (r, t) = time(|| Ring::new(config.clone(), names.iter().map(String::as_str)));
        r?;
        best = best.min(t);
    }
    let shares: Vec<f64> = ring.shares().into_iter().map(|(_, s)| s).collect();
    let n = args.members as f64;
    let sd = (shares.iter().map(|s| (s * n - 1.0).powi(2)).sum::<f64>() / n).sqrt();
    // Capacities are floor(c * P / N + dither) >= floor(c * P / N) partitions: members at or
    // above that many are (about) at capacity.
    let partitions = ring.num_partitions() as f64;
    let at_cap = config.bounded_load.map_or(0.0, |c| {
        let floor = (c * partitions / n).floor();
        shares.iter().filter(|&&s| s * partitions >= floor).count() as f64 / n
    });
    let indexer = Indexer::new(&ring);
    let mut counts = vec![0f64; ring.num_members()];
    for k in 0..args.keys {
        if let Some(owner) = ring.owner_u64(k) {
            counts[indexer.index(owner)] += 1.0;
        }
    }

    let mut rng = Xoshiro256PlusPlus::seed_from_u64(args.seed);
    let move_keys = args.move_keys.unwrap_or_else(|| args.keys.min(2_000_000));
    let (mut leave, mut join) = (Vec::new(), Vec::new());
    let (mut leave_time, mut join_time) = (Duration::MAX, Duration::MAX);
    let (mut violations, mut reordered, mut checked) = (0u64, 0u64, 0u64);
    for t in 0..args.trials {
        let offset = 1 << 40 | (t as u64) << 32;
        let gone = &names[rng.random_range(0..names.len())];
        let (smaller, dt) = time(|| ring.without_member(gone));
        leave_time = leave_time.min(dt);
        leave.push(moved_fraction(&ring, &smaller, move_keys, offset) * n);
        let joiner = format!("joiner-{t}-{}", rng.random::<u32>());
        let (bigger, dt) = time(|| ring.with_member(joiner.as_str()));
        let bigger = bigger?;
        join_time = join_time.min(dt);
        join.push(moved_fraction(&ring, &bigger, move_keys, offset) * (n + 1.0));
        let sample = move_keys.min(200_000);
        for (sets, order) in [
            replica_violations(&ring, &smaller, gone, sample, offset),
            replica_violations(&ring, &bigger, &joiner, sample, offset),
        ] {
            violations += sets;
            reordered += order;
        }
        checked += 2 * sample;
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    println!(
        "{label:<14} build {:>7.2} ms  leave {:>5.2} ms  join {:>5.2} ms  memory {:>5.2} MiB  share peak/mean {:.3} (sd {:.3}, {:.0} % at capacity)  \
         keys peak/mean {:.3}  leave moved {:.3}/N (max {:.3})  join moved {:.3}/N (max {:.3})  \
         replica sets changed without the changed member {violations}/{checked} ({reordered} in order)",
        best.as_secs_f64() * 1e3,
        leave_time.as_secs_f64() * 1e3,
        join_time.as_secs_f64() * 1e3,
        ring.memory_bytes() as f64 / (1 << 20) as f64,
        peak_to_mean(&shares),
        sd,
        at_cap * 100.0,
        peak_to_mean(&counts),
        mean(&leave),
        max(&leave),
        mean(&join),
        max(&join),
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    println!(
        "members {}  vnodes {}  partitions 2^{}  keys {}  churn trials {} x (leave, join)",
        args.members, args.vnodes, args.bits, args.keys, args.trials
    );
    let mut config = RingConfig::default();
    config.vnodes = NonZeroU32::new(args.vnodes).context("--vnodes must be positive")?;
    config.partition_bits = args.bits;
    config.bounded_load = None;
    report(&args, "uncapped", &config)?;
    for &c in &args.loads {
        config.bounded_load = Some(c);
        report(&args, &format!("bounded c={c}"), &config)?;
    }
    Ok(())
}
