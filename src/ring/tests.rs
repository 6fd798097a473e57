use std::collections::BTreeSet;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::assign::*;
use super::*;

fn rng() -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(0x60551)
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("node-{i:03}")).collect()
}

fn ring(n: usize) -> Ring {
    Ring::new(RingConfig::default(), names(n)).expect("valid ring")
}

fn bounded(c: Option<f64>) -> RingConfig {
    RingConfig {
        bounded_load: c,
        ..RingConfig::default()
    }
}

fn uncapped() -> RingConfig {
    bounded(None)
}

#[test]
fn a_ring_of_one_takes_the_shortcut_to_the_same_table() {
    for config in [RingConfig::default(), uncapped()] {
        let one = Ring::new(config.clone(), ["solo"]).expect("valid ring");
        let general = assign_by_preference(&config, &one.vnodes, &one.names, &one.weights, None);
        assert_eq!(one.table, general.table);
    }
}

/// All vnodes of `members` as `(position, member name)` in ring order, by brute force.
fn reference_vnodes(ring: &Ring) -> Vec<(u32, String)> {
    let vnodes = ring.config().vnodes.get();
    let mut tokens: Vec<(u32, String)> = ring
        .members()
        .flat_map(|(m, w)| {
            let count = (u64::from(vnodes) * u64::from(w)).div_ceil(100);
            let count = if (u64::from(vnodes) * u64::from(w)) % 100 < 50
                && (u64::from(vnodes) * u64::from(w)) % 100 != 0
            {
                count - 1
            } else {
                count
            };
            // At least one, also when the share rounds down to none.
            let count = count.max(1);
            (0..count as u32).map(move |i| ((vnode_token(m, i) >> 32) as u32, m.to_owned()))
        })
        .collect();
    tokens.sort_unstable();
    tokens
}

/// A partition's preference list by brute force: the distinct members in order of their
/// nearest vnode's distance from its point, either way round, with that distance. Vnodes sort
/// by distance, then clockwise before counter-clockwise (a vnode exactly opposite counts as
/// clockwise), then in the order met going that way from the point.
fn reference_preferences(vnodes: &[(u32, String)], point: u32) -> Vec<(String, u32)> {
    let len = vnodes.len();
    let start = vnodes.partition_point(|v| v.0 < point);
    let mut order: Vec<(u32, bool, usize, &String)> = vnodes
        .iter()
        .enumerate()
        .map(|(k, (position, m))| {
            let clockwise = position.wrapping_sub(point);
            let counter = point.wrapping_sub(*position);
            if clockwise <= counter {
                (clockwise, false, (k + len - start) % len, m)
            } else {
                (counter, true, (start + len - 1 - k) % len, m)
            }
        })
        .collect();
    order.sort();
    let mut out: Vec<(String, u32)> = Vec::new();
    for (distance, _, _, m) in order {
        if !out.iter().any(|o| &o.0 == m) {
            out.push((m.clone(), distance));
        }
    }
    out
}

/// Partitions owned by each member, in name order.
fn partition_counts(ring: &Ring) -> Vec<usize> {
    let mut counts = vec![0; ring.num_members()];
    for row in &ring.table {
        counts[usize::from(row[0])] += 1;
    }
    counts
}

fn point_of(ring: &Ring, hash: u64) -> u32 {
    let bits = ring.config().partition_bits;
    partition_point(partition_of_hash(hash, bits) as usize, u32::from(bits))
}

#[test]
fn hash_functions_are_pinned() {
    // XXH3-64 reference values; a change here moves every key of every deployment.
    assert_eq!(hash_key(b""), 0x2d06_8005_38d3_94c2);
    assert_eq!(hash_key(b"alpha"), GOLDEN_ALPHA);
    assert_eq!(hash_u64(42), GOLDEN_U64_42);
    assert_eq!(hash_u64(42), hash_key(&42u64.to_le_bytes()));
    assert_eq!(vnode_token("node-a", 0), GOLDEN_TOKEN_A0);
    assert_eq!(vnode_token("node-a", 7), GOLDEN_TOKEN_A7);
    assert_eq!(
        partition_of_hash(GOLDEN_ALPHA, 16),
        (GOLDEN_ALPHA >> 48) as u32
    );
}

#[test]
fn owners_of_a_fixed_member_set_are_pinned() {
    let members = ["node-a", "node-b", "node-c", "node-d", "node-e"];
    let keys = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    ];
    let default = Ring::new(RingConfig::default(), members).expect("valid ring");
    let owners = keys.map(|k| default.owner(k.as_bytes()).expect("non-empty"));
    assert_eq!(owners, GOLDEN_DEFAULT_OWNERS);
    let replicas: Vec<&str> = default.owners(b"alpha", 3).collect();
    assert_eq!(replicas, GOLDEN_ALPHA_REPLICAS);
    assert_eq!(default.fingerprint(), Fingerprint(GOLDEN_FINGERPRINT));

    let plain = Ring::new(uncapped(), members).expect("valid ring");
    let owners = keys.map(|k| plain.owner(k.as_bytes()).expect("non-empty"));
    assert_eq!(owners, GOLDEN_UNCAPPED_OWNERS);
    assert_eq!(partition_counts(&default), GOLDEN_DEFAULT_PARTITIONS);
    let tight = Ring::new(bounded(Some(1.0)), members).expect("valid ring");
    assert_eq!(partition_counts(&tight), GOLDEN_TIGHT_PARTITIONS);
}

#[test]
fn uncapped_owner_is_the_member_of_the_nearest_vnode() {
    let config = RingConfig {
        vnodes: NonZeroU32::new(32).expect("non-zero"),
        partition_bits: 12,
        bounded_load: None,
    };
    let ring = Ring::new(config, names(40)).expect("valid ring");
    let vnodes = reference_vnodes(&ring);
    assert_eq!(vnodes.len(), ring.num_vnodes());
    let mut rng = rng();
    let hashes = (0..2_000).map(|_| rng.random()).chain([0, 1, u64::MAX]);
    for hash in hashes {
        let expected = &reference_preferences(&vnodes, point_of(&ring, hash))[0].0;
        assert_eq!(ring.owner_of_hash(hash), Some(expected.as_str()));
    }
}

#[test]
fn bounded_assignment_is_stable_and_within_capacity() {
    // Stable: no partition would rather have a member (earlier in its preference list)
    // that has room for it or holds a partition it likes less (farther away).
    for (c, n_members, weighted) in [(1.0, 7, false), (1.05, 30, true), (1.3, 12, false)] {
        let config = RingConfig {
            vnodes: NonZeroU32::new(16).expect("non-zero"),
            partition_bits: 10,
            bounded_load: Some(c),
        };
        let members = names(n_members).into_iter().enumerate().map(|(i, n)| {
            let weight = if weighted {
                40 + 37 * (i as u32 % 5)
            } else {
                100
            };
            Member::new(n).with_weight(weight)
        });
        let ring = Ring::new(config.clone(), members).expect("valid ring");
        let vnodes = reference_vnodes(&ring);
        let capacity = capacities(&config, &ring.names, &ring.weights, ring.num_partitions());
        let mut held: BTreeMap<String, Vec<(u32, usize)>> = BTreeMap::new();
        let mut prefs = Vec::new();
        for p in 0..ring.num_partitions() {
            let point = partition_point(p, 10);
            let pref = reference_preferences(&vnodes, point);
            let owner = ring.name(ring.table[p][0]).to_owned();
            let d = pref.iter().find(|x| x.0 == owner).expect("in the list").1;
            held.entry(owner).or_default().push((d, p));
            prefs.push(pref);
        }
        for (i, (name, _)) in ring.members().enumerate() {
            let n = held.get(name).map_or(0, Vec::len);
            assert!(
                n <= capacity[i] as usize,
                "{name} holds {n} > {}",
                capacity[i]
            );
        }
        for (p, pref) in prefs.iter().enumerate() {
            let owner = ring.name(ring.table[p][0]);
            for (m, d) in pref.iter().take_while(|x| x.0 != owner) {
                let i = ring.member_index(m).map_or(0, usize::from);
                let theirs = held.get(m).map_or(&[][..], Vec::as_slice);
                assert_eq!(theirs.len(), capacity[i] as usize, "{m} has room for {p}");
                assert!(
                    theirs.iter().all(|&h| h < (*d, p)),
                    "{m} prefers partition {p} (c = {c})"
                );
            }
        }
    }
}

#[test]
fn empty_ring_answers_none() {
    let ring = Ring::empty(RingConfig::default()).expect("valid config");
    assert!(ring.is_empty());
    assert_eq!(ring.owner(b"k"), None);
    assert_eq!(ring.owner_u64(7), None);
    assert_eq!(ring.owners(b"k", 3).count(), 0);
    assert!(!ring.is_owner(b"k", "a"));
    assert!(ring.partition([b"k"]).is_empty());
    assert!(ring.shares().is_empty());
    assert!(ring.ranges("a").is_empty());
}

#[test]
fn a_single_member_owns_everything() {
    for config in [RingConfig::default(), uncapped(), bounded(Some(1.0))] {
        let ring = Ring::new(config, ["solo"]).expect("valid ring");
        assert_eq!(ring.owner(b"anything"), Some("solo"));
        assert_eq!(ring.owners(b"anything", 5).collect::<Vec<_>>(), ["solo"]);
        assert_eq!(
            ring.ranges("solo"),
            [KeyRange {
                start: 0,
                end: u64::MAX
            }]
        );
    }
}

#[test]
fn owner_u64_hashes_little_endian_bytes() {
    let ring = ring(20);
    let mut rng = rng();
    for _ in 0..1_000 {
        let k: u64 = rng.random();
        assert_eq!(ring.owner_u64(k), ring.owner(&k.to_le_bytes()));
        assert_eq!(
            ring.owners_u64(k, 3).collect::<Vec<_>>(),
            ring.owners(&k.to_le_bytes(), 3).collect::<Vec<_>>()
        );
    }
}

#[test]
fn owners_are_the_owner_then_the_preference_list() {
    let mut rng = rng();
    for config in [RingConfig::default(), uncapped(), bounded(Some(1.0))] {
        for n_members in [1, 2, 3, 4, 5, 12, 60] {
            let ring = Ring::new(config.clone(), names(n_members)).expect("valid ring");
            let vnodes = reference_vnodes(&ring);
            let ends = [0, 1 << 48, u64::MAX, u64::MAX - (1 << 48)];
            for hash in (0..100).map(|_| rng.random()).chain(ends) {
                let owner = ring.owner_of_hash(hash).expect("non-empty");
                let mut expected = vec![owner.to_owned()];
                for (m, _) in reference_preferences(&vnodes, point_of(&ring, hash)) {
                    if m != owner {
                        expected.push(m);
                    }
                }
                for n in [0, 1, 2, 3, 4, 5, 9, 13, 100] {
                    let got: Vec<&str> = ring.owners_of_hash(hash, n).collect();
                    assert_eq!(got.len(), n.min(n_members));
                    assert_eq!(got, expected[..n.min(n_members)]);
                    assert_eq!(ring.owners_of_hash(hash, n).len(), got.len());
                }
            }
        }
    }
}

#[test]
fn ranges_partition_the_hash_space() {
    for config in [RingConfig::default(), uncapped()] {
        let ring = Ring::new(config, names(30)).expect("valid ring");
        let mut all: Vec<(KeyRange, &str)> = Vec::new();
        for (name, _) in ring.members() {
            all.extend(ring.ranges(name).into_iter().map(|r| (r, name)));
        }
        all.sort_unstable();
        assert_eq!(all.first().map(|r| r.0.start), Some(0));
        assert_eq!(all.last().map(|r| r.0.end), Some(u64::MAX));
        for pair in all.windows(2) {
            assert_eq!(pair[0].0.end + 1, pair[1].0.start);
        }
        let mut rng = rng();
        for (range, name) in all.iter().take(200) {
            let hash = rng.random_range(range.start..=range.end);
            assert_eq!(ring.owner_of_hash(hash), Some(*name));
        }
        let total: f64 = ring.shares().iter().map(|s| s.1).sum();
        assert!((total - 1.0).abs() < 1e-9);
    }
}

#[test]
fn partition_groups_keys_by_owner() {
    let ring = ring(10);
    let keys: Vec<String> = (0..500).map(|i| format!("key-{i}")).collect();
    let groups = ring.partition(keys.iter().map(String::as_str));
    assert_eq!(groups.values().map(Vec::len).sum::<usize>(), keys.len());
    for (owner, keys) in &groups {
        for key in keys {
            assert_eq!(ring.owner(key.as_bytes()), Some(*owner));
            assert!(ring.is_owner(key.as_bytes(), owner));
        }
    }
}

#[test]
fn weights_scale_vnodes_and_shares() {
    let members = [
        Member::new("light").with_weight(50),
        Member::new("normal"),
        Member::new("heavy").with_weight(300),
    ];
    let ring = Ring::new(uncapped(), members.clone()).expect("valid ring");
    assert_eq!(ring.num_vnodes(), 128 + 256 + 768);
    let shares: BTreeMap<&str, f64> = ring.shares().into_iter().collect();
    assert!(shares["heavy"] > 2.0 * shares["normal"]);
    assert!(shares["light"] < shares["normal"]);
    let capped = Ring::new(bounded(Some(1.0)), members).expect("valid ring");
    let shares: BTreeMap<&str, f64> = capped.shares().into_iter().collect();
    for (name, weight) in [("light", 50.0), ("normal", 100.0), ("heavy", 300.0)] {
        let fair = weight / 450.0;
        assert!(
            (shares[name] - fair).abs() < 0.001,
            "{name}: {}",
            shares[name]
        );
    }
}

#[test]
fn bounded_load_caps_every_share() {
    for c in [MIN_LOAD_FACTOR, 1.02, 1.1] {
        let ring = Ring::new(bounded(Some(c)), names(100)).expect("valid ring");
        let cap = (c * ring.num_partitions() as f64 / 100.0).ceil();
        for (name, share) in ring.shares() {
            let owned = share * ring.num_partitions() as f64;
            assert!(owned <= cap + 1e-9, "{name}: {owned} with c = {c}");
        }
    }
}

#[test]
fn incremental_changes_equal_a_fresh_build() {
    let mut rng = rng();
    for config in [RingConfig::default(), uncapped()] {
        let pool = names(40);
        let mut ring = Ring::new(config.clone(), &pool[..25]).expect("valid ring");
        for _ in 0..30 {
            let name = &pool[rng.random_range(0..pool.len())];
            if ring.contains(name) && rng.random_bool(0.7) {
                assert!(ring.remove(name));
            } else {
                let weight = if rng.random_bool(0.3) {
                    rng.random_range(1..400)
                } else {
                    100
                };
                ring.insert(Member::new(name.as_str()).with_weight(weight))
                    .expect("valid member");
            }
            let fresh = Ring::new(
                config.clone(),
                ring.members().map(|(n, w)| Member::new(n).with_weight(w)),
            )
            .expect("valid ring");
            assert_eq!(ring, fresh);
        }
        assert!(!ring.remove("absent"));
        assert_eq!(ring.without_member("absent"), ring);
    }
}

#[test]
fn rebuild_equals_a_fresh_build() {
    let mut rng = rng();
    let pool = names(40);
    for config in [RingConfig::default(), uncapped()] {
        let mut ring = Ring::new(config.clone(), &pool[..20]).expect("valid ring");
        for _ in 0..20 {
            let mut members = Vec::new();
            for n in &pool {
                if rng.random_bool(0.5) {
                    let weight = if rng.random_bool(0.2) { 50 } else { 100 };
                    members.push(Member::new(n.as_str()).with_weight(weight));
                }
            }
            let fresh = Ring::new(config.clone(), members.clone()).expect("valid ring");
            ring = ring.rebuild(members).expect("valid members");
            assert_eq!(ring, fresh);
        }
        assert!(ring.rebuild(["a", "a"]).is_err());
    }
}

#[test]
fn fingerprint_depends_on_set_weights_and_config_only() {
    let a = Ring::new(RingConfig::default(), ["x", "y", "z"]).expect("valid ring");
    let b = Ring::new(RingConfig::default(), ["z", "x", "y"]).expect("valid ring");
    assert_eq!(a.fingerprint(), b.fingerprint());
    assert_eq!(a, b);
    let heavier = Ring::new(
        RingConfig::default(),
        [Member::new("x").with_weight(101), "y".into(), "z".into()],
    )
    .expect("valid ring");
    assert_ne!(a.fingerprint(), heavier.fingerprint());
    let capped = Ring::new(bounded(Some(1.25)), ["x", "y", "z"]).expect("valid ring");
    assert_ne!(a.fingerprint(), capped.fingerprint());
    let coarser = RingConfig {
        partition_bits: 16,
        ..RingConfig::default()
    };
    let coarser = Ring::new(coarser, ["x", "y", "z"]).expect("valid ring");
    assert_ne!(a.fingerprint(), coarser.fingerprint());
    let fewer = Ring::new(RingConfig::default(), ["x", "y"]).expect("valid ring");
    assert_ne!(a.fingerprint(), fewer.fingerprint());
    assert_eq!(format!("{}", Fingerprint(0xab)), "00000000000000ab");
}

#[test]
fn bad_input_is_rejected() {
    let config = RingConfig::default();
    assert_eq!(
        Ring::new(config.clone(), ["a", "a"]).err(),
        Some(RingError::DuplicateMember { name: "a".into() })
    );
    assert_eq!(
        Ring::new(config.clone(), [Member::new("a").with_weight(0)]).err(),
        Some(RingError::Weight {
            name: "a".into(),
            weight: 0
        })
    );
    assert!(
        Ring::new(
            config.clone(),
            [Member::new("a").with_weight(MAX_WEIGHT + 1)]
        )
        .is_err()
    );
    for c in [0.999, f64::NAN, f64::INFINITY, 101.0] {
        assert!(matches!(
            Ring::new(bounded(Some(c)), ["a"]),
            Err(RingError::LoadFactor { .. })
        ));
    }
    for bits in [0, MAX_PARTITION_BITS + 1] {
        let config = RingConfig {
            partition_bits: bits,
            ..RingConfig::default()
        };
        assert_eq!(
            Ring::new(config, ["a"]).err(),
            Some(RingError::PartitionBits { bits })
        );
    }
    let mut ring = Ring::new(config, ["a"]).expect("valid ring");
    assert!(ring.insert(Member::new("b").with_weight(0)).is_err());
    assert_eq!(ring.num_members(), 1);
}

#[test]
fn errors_are_send_sync_and_static() {
    fn check<T: Send + Sync + 'static + std::error::Error>() {}
    check::<RingError>();
}

#[test]
fn handoff_on_join_goes_to_the_new_member_only_when_uncapped() {
    let old = Ring::new(uncapped(), names(10)).expect("valid ring");
    let new = old.with_member("node-new").expect("valid member");
    let joined = Ring::handoff(&old, &new, "node-new");
    assert!(joined.relinquished.is_empty());
    let acquired: u128 = joined.acquired.iter().map(Transfer::num_hashes).sum();
    let share = new
        .shares()
        .into_iter()
        .find(|s| s.0 == "node-new")
        .map(|s| s.1);
    assert_eq!(Some(acquired as f64 / 2f64.powi(64)), share);
    for (name, _) in old.members() {
        let h = Ring::handoff(&old, &new, name);
        assert!(h.acquired.is_empty());
        for t in &h.relinquished {
            assert_eq!(t.peer.as_deref(), Some("node-new"));
            let mirror = joined.acquired_from(name).expect("mirror transfer");
            assert_eq!(t.ranges, mirror.ranges);
            assert_eq!(h.relinquished_to("node-new"), Some(t));
        }
    }
    assert!(Ring::handoff(&old, &new, "stranger").is_empty());
    let empty = Ring::empty(uncapped()).expect("valid config");
    let boot = Ring::handoff(&empty, &old, "node-003");
    assert_eq!(boot.acquired.len(), 1);
    assert_eq!(boot.acquired[0].peer, None);
    assert_eq!(boot.acquired[0].ranges, old.ranges("node-003"));
}

#[test]
fn handoff_by_partition_equals_the_walk_over_arcs() {
    let mut rng = rng();
    let bits = |b: u8| RingConfig {
        partition_bits: b,
        ..RingConfig::default()
    };
    // Same tables, and tables of different sizes (the comparison runs on the finer one).
    let pairs = [
        (RingConfig::default(), RingConfig::default()),
        (uncapped(), uncapped()),
        (bits(12), RingConfig::default()),
        (RingConfig::default(), bits(10)),
    ];
    for (old_config, new_config) in pairs {
        for trial in 0..12 {
            let pick = |rng: &mut Xoshiro256PlusPlus| -> Vec<String> {
                let n = rng.random_range(1..40usize);
                names(60)
                    .into_iter()
                    .filter(|_| rng.random_range(0..60usize) < n)
                    .collect()
            };
            let (mut a, mut b) = (pick(&mut rng), pick(&mut rng));
            // An empty ring on either side, once each.
            match trial {
                0 => a.clear(),
                1 => b.clear(),
                _ => {}
            }
            let old = Ring::new(old_config.clone(), a.clone()).expect("valid ring");
            let new = Ring::new(new_config.clone(), b.clone()).expect("valid ring");
            for local in a.iter().chain(&b).chain(["stranger".to_owned()].iter()) {
                let fast = Ring::handoff(&old, &new, local);
                let walked = Ring::handoff_by_arcs(
                    &old,
                    &new,
                    old.member_index(local),
                    new.member_index(local),
                );
                assert_eq!(
                    fast,
                    walked,
                    "local {local}, {} -> {} members",
                    a.len(),
                    b.len()
                );
            }
        }
    }
}

#[test]
fn handoffs_mirror_each_other_under_bounded_load() {
    let old = ring(30);
    let new = old.without_member("node-007");
    let all: Vec<(&str, Handoff)> = old
        .members()
        .map(|(m, _)| (m, Ring::handoff(&old, &new, m)))
        .collect();
    let mut moved = 0u128;
    for (a, ha) in &all {
        for t in &ha.relinquished {
            let b = t.peer.as_deref().expect("the new ring is not empty");
            let hb = &all.iter().find(|x| x.0 == b).expect("a member").1;
            assert_eq!(hb.acquired_from(a).map(|t| &t.ranges), Some(&t.ranges));
            moved += t.num_hashes();
        }
    }
    let gone: u128 = old.ranges("node-007").iter().map(KeyRange::len).sum();
    assert!(moved >= gone);
}

#[test]
fn key_ranges_answer_membership_and_partitions() {
    let r = KeyRange {
        start: 5 << 48,
        end: (7 << 48) + 3,
    };
    assert!(r.contains_hash(5 << 48) && r.contains_hash((7 << 48) + 3));
    assert!(!r.contains_hash((5 << 48) - 1) && !r.contains_hash((7 << 48) + 4));
    assert_eq!(r.partitions(16), 5..=7);
    assert_eq!(r.len(), (2u128 << 48) + 4);
    let t = Transfer {
        peer: None,
        ranges: vec![
            r,
            KeyRange {
                start: 9 << 48,
                end: 10 << 48,
            },
        ],
    };
    assert!(t.contains_hash(6 << 48) && t.contains_hash(9 << 48) && !t.contains_hash(8 << 48));
    assert_eq!(t.contains(b"alpha"), t.contains_hash(hash_key(b"alpha")));
    assert!(!r.is_empty());
    let whole = KeyRange {
        start: 0,
        end: u64::MAX,
    };
    assert_eq!(whole.len(), 1u128 << 64);
    // The fields are public: a range built backwards is empty, not a panic or a huge length
    // (found by review: `len` subtracted with overflow).
    let backwards = KeyRange { start: 10, end: 5 };
    assert!(backwards.is_empty() && !backwards.contains_hash(7));
    assert_eq!(backwards.len(), 0);
    assert!(backwards.partitions(16).is_empty());
}

#[test]
fn memory_stays_within_budget_at_a_thousand_members() {
    let ring = ring(1000);
    assert!(
        ring.memory_bytes() < 4 << 20,
        "{} bytes",
        ring.memory_bytes()
    );
}

// Cross-checked against the reference C xxHash (through the Python `xxhash` binding):
// xxh3_64(b"alpha"), xxh3_64(42u64 LE), xxh3_64(0u32 LE / 7u32 LE, seed = xxh3_64(b"node-a")).
const GOLDEN_ALPHA: u64 = 0xbe69_03b5_f625_ab5a;
const GOLDEN_U64_42: u64 = 0xd5a6_f8c8_38df_27c8;
const GOLDEN_TOKEN_A0: u64 = 0xa3c9_b216_d6f7_6ea3;
const GOLDEN_TOKEN_A7: u64 = 0x5d63_dbd5_daaa_df6c;
const GOLDEN_FINGERPRINT: u64 = 0xe335_3859_9e0b_9bb0;
const GOLDEN_DEFAULT_OWNERS: [&str; 8] = [
    "node-c", "node-b", "node-a", "node-b", "node-e", "node-b", "node-a", "node-a",
];
const GOLDEN_UNCAPPED_OWNERS: [&str; 8] = [
    "node-c", "node-b", "node-a", "node-b", "node-e", "node-b", "node-a", "node-a",
];
const GOLDEN_ALPHA_REPLICAS: [&str; 3] = ["node-c", "node-d", "node-a"];
// No member reaches its capacity (about 56,623) at 5 members.
const GOLDEN_DEFAULT_PARTITIONS: [usize; 5] = [51_376, 53_326, 52_441, 50_383, 54_618];
// Capacity max(ceil(262,144 / 5), floor(52,428.8 + u)) = 52,429 each; node-d takes the rest.
const GOLDEN_TIGHT_PARTITIONS: [usize; 5] = [52_429, 52_429, 52_429, 52_428, 52_429];

#[test]
#[ignore = "prints the golden values to paste above"]
fn print_golden_values() {
    let members = ["node-a", "node-b", "node-c", "node-d", "node-e"];
    let keys = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    ];
    let default = Ring::new(RingConfig::default(), members).expect("valid ring");
    let plain = Ring::new(uncapped(), members).expect("valid ring");
    let tight = Ring::new(bounded(Some(1.0)), members).expect("valid ring");
    println!("fingerprint {:#x}", default.fingerprint().0);
    println!("default {:?}", keys.map(|k| default.owner(k.as_bytes())));
    println!("uncapped {:?}", keys.map(|k| plain.owner(k.as_bytes())));
    println!(
        "replicas {:?}",
        default.owners(b"alpha", 3).collect::<Vec<_>>()
    );
    println!("default partitions {:?}", partition_counts(&default));
    println!("tight partitions {:?}", partition_counts(&tight));
}

/// The fingerprint is the digest its docs spell out, byte for byte, so another language can
/// compute it.
#[test]
fn the_fingerprint_is_the_documented_digest() {
    let config = RingConfig {
        vnodes: NonZeroU32::new(64).unwrap(),
        partition_bits: 12,
        bounded_load: Some(1.25),
    };
    let ring = Ring::new(
        config,
        [Member::new("b").with_weight(250), Member::new("a")],
    )
    .unwrap();
    let mut spec = b"tidings-ring-v3".to_vec();
    spec.extend_from_slice(&64u32.to_le_bytes());
    spec.push(12);
    spec.extend_from_slice(&1_250_000u64.to_le_bytes());
    spec.extend_from_slice(&2u32.to_le_bytes());
    for (name, weight) in [("a", 100u32), ("b", 250)] {
        spec.extend_from_slice(&(name.len() as u32).to_le_bytes());
        spec.extend_from_slice(name.as_bytes());
        spec.extend_from_slice(&weight.to_le_bytes());
    }
    assert_eq!(ring.fingerprint(), Fingerprint(xxh3_64(&spec)));
}

/// Capacities round down or up member by member (by a hash of the name), so they add up to
/// about `c * P` and do not all flip at the same membership size. Without the dither every
/// member of 100 here rounds 2,620.3 down alike, 30 partitions short of `c * P` in all.
#[test]
fn capacities_round_per_member_and_add_up_to_c_times_p() {
    let names: Vec<Box<str>> = names(100).into_iter().map(Into::into).collect();
    let config = bounded(Some(2.0));
    // c * P / N = 2 * 131,072 / 100 = 2,621.44.
    let caps = capacities(&config, &names, &[100; 100], 1 << 17);
    let (low, high) = (caps.iter().min().copied(), caps.iter().max().copied());
    assert_eq!((low, high), (Some(2621), Some(2622)), "{caps:?}");
    let sum: i64 = caps.iter().map(|&c| i64::from(c)).sum();
    assert!((sum - 262_144).abs() <= 20, "sum {sum}");
    // Weighted: twice the weight, twice the capacity (give or take the rounding).
    let mut weights = [100; 100];
    weights[7] = 200;
    let caps = capacities(&config, &names, &weights, 1 << 17);
    assert!((5_188..=5_192).contains(&caps[7]), "{}", caps[7]);
    // Never below a fair share, never above P.
    let tight = capacities(&bounded(Some(1.0)), &names, &[100; 100], 1 << 17);
    assert!(tight.iter().all(|&c| c >= 1311), "{tight:?}");
    let loose = capacities(&bounded(Some(100.0)), &names[..2], &[100; 2], 1 << 17);
    assert_eq!(loose, [1 << 17; 2]);
}

/// `nth_choice` skips members met again, past the 16 it keeps inline too.
#[test]
fn nth_choice_counts_each_member_once_past_sixteen() {
    // Members 0..=16, 15 again, 17, 17 again, 18, then 0 again (positions in order).
    let order: Vec<u16> = (0..=16).chain([15, 17, 17, 18, 0]).collect();
    let vnodes: Vnodes = order
        .iter()
        .enumerate()
        .map(|(i, &m)| (i as u64 * 1000) << 32 | u64::from(m))
        .collect();
    let len = vnodes.len();
    // From point 0 every vnode lies nearer clockwise than the last one does the other way.
    for rank in 0..=18usize {
        let (m, at) = nth_choice(&vnodes, Outward::new(len, 0, 0), rank).expect("a member");
        assert_eq!(usize::from(m), rank);
        let first = order.iter().position(|&o| usize::from(o) == rank);
        assert_eq!(first.map(|i| i as u32 * 1000), Some(at), "rank {rank}");
    }
    assert_eq!(nth_choice(&vnodes, Outward::new(len, 0, 0), 19), None);
    // Just before the ring's end, the walk wraps around clockwise.
    let late = Outward::new(len, 0, 500u32.wrapping_neg());
    assert_eq!(nth_choice(&vnodes, late, 1), Some((1, 1500)));
    // Between two vnodes it alternates, nearer first: 10 (400 back), 11 (600 on), 9, 12.
    let middle = Outward::new(len, 11, 10_400);
    let met: Vec<_> = (0..4)
        .map(|rank| nth_choice(&vnodes, middle, rank).expect("a member"))
        .collect();
    assert_eq!(met, [(10, 400), (11, 600), (9, 1400), (12, 1600)]);
}

/// The walk outward takes every vnode once, nearest first, clockwise on a tie.
#[test]
fn the_walk_outward_takes_each_vnode_once_nearest_first() {
    let positions = [100u32, 200, 300, 4_000_000_000];
    let at = |i: usize| positions[i];
    let mut walk = Outward::new(4, 2, 250);
    let taken: Vec<_> = std::iter::from_fn(|| walk.next(at, 4)).collect();
    // 300 and 200 both lie 50 away: clockwise first. The last lies nearer counter-clockwise
    // (wrapping) than 100 does clockwise.
    assert_eq!(
        taken,
        [
            (2, 50),
            (1, 50),
            (0, 150),
            (3, 250 + (u32::MAX - 4_000_000_000) + 1)
        ]
    );
    assert_eq!(walk.taken(4).count(), 4);
    // A lone vnode behind the point is taken counter-clockwise.
    let mut one = Outward::new(1, 0, 7);
    assert_eq!(one.next(|_| 5, 1), Some((0, 2)));
    assert_eq!(one.next(|_| 5, 1), None);
}

/// The bounded-load assignment's working room is about `P` entries whatever `c` is: at
/// `c = 100` the capacities add up to about 100 P, which it once allocated in full.
#[test]
fn bounded_load_works_in_room_for_p_entries_at_any_factor() {
    let config = RingConfig {
        partition_bits: 18,
        ..bounded(Some(100.0))
    };
    let ring = Ring::new(config.clone(), names(200)).expect("valid ring");
    let bits = u32::from(config.partition_bits);
    let starts = starts(&ring.vnodes, bits);
    let prefs = preferences(&ring.vnodes, bits, &starts, ROW);
    let capacity = capacities(&config, &ring.names, &ring.weights, starts.len());
    let total: u64 = capacity.iter().map(|&c| u64::from(c)).sum();
    assert!(total > 90 << bits, "capacities add up to {total}");
    let room: usize = first_round(&ring.vnodes, bits, &starts, &prefs, capacity.len())
        .iter()
        .map(Vec::capacity)
        .sum();
    assert!(room <= starts.len() + 200, "room for {room} entries");
    // And the result is the plain ring's: nobody reaches a capacity of 100 shares.
    let plain = Ring::new(uncapped_with(18), names(200)).expect("valid ring");
    assert_eq!(ring.table, plain.table);
}

fn uncapped_with(partition_bits: u8) -> RingConfig {
    RingConfig {
        partition_bits,
        ..uncapped()
    }
}

/// Vnode counts round half up and never fall below one (`max(1, round(vnodes * w / 100))`, as
/// the module docs specify for other implementations): a member too light for a whole vnode
/// still sits on the ring and in every full preference list.
#[test]
fn vnode_counts_round_half_up_and_never_fall_below_one() {
    let with_vnodes = |vnodes: u32| RingConfig {
        vnodes: NonZeroU32::new(vnodes).expect("non-zero"),
        ..uncapped()
    };
    // 3 * 50 / 100 = 1.5 and 1 * 150 / 100 = 1.5 round up; 1.47 and 1.49 round down.
    assert_eq!(with_vnodes(3).vnodes_for(50), 2);
    assert_eq!(with_vnodes(3).vnodes_for(49), 1);
    assert_eq!(with_vnodes(1).vnodes_for(150), 2);
    assert_eq!(with_vnodes(1).vnodes_for(149), 1);
    // 16 * 1 / 100 = 0.16 rounds to 0, raised to 1.
    assert_eq!(with_vnodes(16).vnodes_for(1), 1);
    let ring = Ring::new(
        with_vnodes(16),
        [Member::new("feather").with_weight(1), Member::new("anvil")],
    )
    .expect("valid ring");
    assert_eq!(ring.num_vnodes(), 17);
    assert_eq!(reference_vnodes(&ring).len(), 17);
    let mut both: Vec<&str> = ring.owners(b"k", 2).collect();
    both.sort_unstable();
    assert_eq!(both, ["anvil", "feather"]);
}

/// The bounded-load factor counts to 6 decimals, rounded (not truncated): two configs that
/// differ only below that build the same ring with the same fingerprint. `1.005 * 10^6` is
/// `1_004_999.999...` in floating point, which truncation would turn into another ring.
#[test]
fn load_factors_equal_to_six_decimals_give_the_same_ring() {
    let ring = |c: f64| Ring::new(bounded(Some(c)), names(3)).expect("valid ring");
    let (a, b) = (ring(1.005), ring(1.005_000_000_4));
    assert_eq!(a.fingerprint(), b.fingerprint());
    assert_eq!(a.table, b.table);
    assert_ne!(a.fingerprint(), ring(1.005_001).fingerprint());
}

/// The documented limits are inclusive: `partition_bits` 1 and [`MAX_PARTITION_BITS`], and
/// weight [`MAX_WEIGHT`] are accepted by every way of building a ring.
#[test]
fn limits_are_inclusive() {
    for bits in [1, MAX_PARTITION_BITS] {
        let config = RingConfig {
            partition_bits: bits,
            ..RingConfig::default()
        };
        assert_eq!(config.validate(), Ok(()));
        let empty = Ring::empty(config).expect("valid config");
        assert_eq!(empty.num_partitions(), 1 << bits);
    }
    let config = RingConfig {
        vnodes: NonZeroU32::MIN,
        ..uncapped()
    };
    let heavy = || Member::new("heavy").with_weight(MAX_WEIGHT);
    let ring = Ring::new(config.clone(), [heavy()]).expect("MAX_WEIGHT is allowed");
    assert_eq!(ring.members().collect::<Vec<_>>(), [("heavy", MAX_WEIGHT)]);
    let light = Ring::new(config, ["light"]).expect("valid ring");
    let grown = light.with_member(heavy()).expect("MAX_WEIGHT is allowed");
    assert_eq!(light.rebuild([heavy(), "light".into()]), Ok(grown));
}

/// A ring holds [`MAX_MEMBERS`] members (indices are 16-bit) and refuses one more, whether
/// built by `new`, grown by `with_member` or replaced by `rebuild`.
#[test]
fn a_ring_holds_max_members_and_refuses_one_more() {
    let config = RingConfig {
        vnodes: NonZeroU32::MIN,
        partition_bits: 1,
        bounded_load: None,
    };
    let pool = names(MAX_MEMBERS + 1);
    let full = Ring::new(config.clone(), &pool[..MAX_MEMBERS]).expect("MAX_MEMBERS fit");
    assert_eq!(full.num_members(), MAX_MEMBERS);
    let too_many = Some(RingError::TooManyMembers {
        count: MAX_MEMBERS + 1,
    });
    assert_eq!(Ring::new(config, &pool).err(), too_many);
    assert_eq!(full.with_member(&pool[MAX_MEMBERS]).err(), too_many);
    assert_eq!(full.rebuild(&pool).err(), too_many);
}

/// Inserting a present member with another weight re-weights it: the ring equals a fresh
/// build with the new weight. (The history tests compare with a build from the ring's own
/// member list, so they would not see the weight change dropped.)
#[test]
fn inserting_a_present_member_with_another_weight_reweights_it() {
    let ring = ring(5);
    let heavier = Member::new("node-002").with_weight(300);
    let changed = ring.with_member(heavier.clone()).expect("valid member");
    let fresh = Ring::new(
        RingConfig::default(),
        names(5).into_iter().map(|n| {
            let weight = if n == "node-002" { 300 } else { 100 };
            Member::new(n).with_weight(weight)
        }),
    )
    .expect("valid ring");
    assert_eq!(changed, fresh);
    assert_ne!(changed.fingerprint(), ring.fingerprint());
    let mut inserted = ring.clone();
    inserted.insert(heavier).expect("valid member");
    assert_eq!(inserted, fresh);
    // The same weight again changes nothing.
    assert_eq!(ring.with_member("node-002"), Ok(ring.clone()));
}

/// A member whose vnodes repeat a position keeps one vnode there ("a member's repeated position
/// counts once"), however the ring is built: `new`, `with_member` and `rebuild` give equal
/// rings, and `num_vnodes` counts the distinct positions.
#[test]
fn repeated_vnode_positions_count_once_however_the_ring_is_built() {
    // At 2^16 vnodes a name repeats a position with probability about 0.4 (2^31 pairs of
    // 2^32 positions); one of the first 20 names does.
    let config = RingConfig {
        vnodes: NonZeroU32::new(1 << 16).expect("non-zero"),
        partition_bits: 8,
        bounded_load: None,
    };
    let distinct = |name: &str| {
        let mut positions: Vec<u32> = (0..1 << 16)
            .map(|i| (vnode_token(name, i) >> 32) as u32)
            .collect();
        positions.sort_unstable();
        positions.dedup();
        positions.len()
    };
    let name = names(20)
        .into_iter()
        .find(|n| distinct(n) < 1 << 16)
        .expect("a name with a repeated position");
    let fresh = Ring::new(config.clone(), [name.as_str(), "other"]).expect("valid ring");
    assert_eq!(fresh.num_vnodes(), distinct(&name) + distinct("other"));
    let other = Ring::new(config, ["other"]).expect("valid ring");
    assert_eq!(other.with_member(name.as_str()), Ok(fresh.clone()));
    assert_eq!(other.rebuild([name.as_str(), "other"]), Ok(fresh));
}

/// Past the table row, `owners` walks the whole ring from the partition's point. Pinned with
/// one vnode per member (a walk one vnode short misses a member) and on a coarse grid (many
/// vnodes lie between a partition's point and a key's hash, so a walk from the hash yields
/// another order); the default config hides both.
#[test]
fn owners_past_the_row_walk_the_whole_ring_from_the_partition_point() {
    let mut rng = rng();
    for (vnodes, bits) in [(1, 17), (16, 3)] {
        let config = RingConfig {
            vnodes: NonZeroU32::new(vnodes).expect("non-zero"),
            partition_bits: bits,
            bounded_load: None,
        };
        let ring = Ring::new(config, names(12)).expect("valid ring");
        let reference = reference_vnodes(&ring);
        for hash in (0..100).map(|_| rng.random()) {
            // Uncapped, the owner is the first choice: the owners are the preference list.
            let expected: Vec<String> = reference_preferences(&reference, point_of(&ring, hash))
                .into_iter()
                .map(|(m, _)| m)
                .collect();
            let got: Vec<&str> = ring.owners_of_hash(hash, 12).collect();
            assert_eq!(
                got, expected,
                "hash {hash:#x}, {vnodes} vnodes, {bits} bits"
            );
        }
    }
}

/// Range ends are inclusive everywhere: a one-hash range holds one hash, a range ending on a
/// partition's first hash overlaps that partition, and a transfer holds the last hash of each
/// of its ranges (its binary search must not pass over a range ending at the hash).
#[test]
fn key_range_ends_are_inclusive() {
    let one = KeyRange {
        start: 9 << 48,
        end: 9 << 48,
    };
    assert!(!one.is_empty() && one.contains_hash(9 << 48));
    assert_eq!(one.len(), 1);
    assert_eq!(one.partitions(16), 9..=9);
    let into_next = KeyRange {
        start: 5 << 48,
        end: 8 << 48,
    };
    assert_eq!(into_next.partitions(16), 5..=8);
    let t = Transfer {
        peer: None,
        ranges: vec![
            KeyRange {
                start: 1 << 48,
                end: (2 << 48) - 1,
            },
            into_next,
        ],
    };
    assert!(t.contains_hash((2 << 48) - 1) && t.contains_hash(8 << 48));
    assert!(!t.contains_hash(2 << 48) && !t.contains_hash((8 << 48) + 1));
}

/// `partition_of_hash` clamps `bits` to 1..=32 as documented: 32 bits are the top half of the
/// hash, more are the same, 0 is 1.
#[test]
fn partition_of_hash_clamps_bits_to_one_through_thirty_two() {
    let h = GOLDEN_ALPHA;
    assert_eq!(partition_of_hash(h, 32), (h >> 32) as u32);
    assert_eq!(partition_of_hash(h, 40), (h >> 32) as u32);
    assert_eq!(partition_of_hash(h, 0), (h >> 63) as u32);
    let whole = KeyRange {
        start: 0,
        end: u64::MAX,
    };
    assert_eq!(whole.partitions(32), 0..=u32::MAX);
}

/// A hand-off is empty only when nothing changes hands: a joiner that only acquires and a
/// leaver that only relinquishes have non-empty ones (the node emits `Event::Ownership` only
/// for a non-empty hand-off).
#[test]
fn a_one_sided_handoff_is_not_empty() {
    let old = Ring::new(uncapped(), names(5)).expect("valid ring");
    let new = old.with_member("node-new").expect("valid member");
    let joiner = Ring::handoff(&old, &new, "node-new");
    assert!(joiner.relinquished.is_empty() && !joiner.acquired.is_empty());
    assert!(!joiner.is_empty());
    let leaver = Ring::handoff(&new, &old, "node-new");
    assert!(leaver.acquired.is_empty() && !leaver.relinquished.is_empty());
    assert!(!leaver.is_empty());
    assert!(Ring::handoff(&old, &old, "node-001").is_empty());
}

/// Buckets are sorted whatever their size: a handful of vnodes (insertion sort) or hundreds
/// (the most vnodes validation allows).
#[test]
fn buckets_of_any_size_are_sorted() {
    let mut r = rng();
    for len in [0, 1, 2, 31, 32, 33, 300] {
        let mut v: Vec<u64> = (0..len).map(|_| r.random::<u64>() % 1000).collect();
        let mut want = v.clone();
        want.sort_unstable();
        sort_bucket(&mut v);
        assert_eq!(v, want, "{len} vnodes");
    }
}

/// Rows patched around the changed vnodes equal rows walked from scratch. Few vnodes make the
/// windows around each change wide; tight loads put owners deep in their lists (ranks to
/// restore) and past their rows (rows to walk again); joins, leaves, weight changes and several
/// changes at once.
#[test]
fn patched_rows_equal_rows_walked_from_scratch() {
    let mut rng = rng();
    let pool = names(300);
    for (vnodes, bits, c) in [(8, 14, Some(1.0)), (64, 16, Some(1.03)), (16, 12, None)] {
        let config = RingConfig {
            vnodes: NonZeroU32::new(vnodes).expect("non-zero"),
            partition_bits: bits,
            bounded_load: c,
        };
        let mut ring = Ring::new(config.clone(), &pool[..200]).expect("valid ring");
        let (mut restored, mut walked) = (0, 0);
        for step in 0..12 {
            restored += ring.ranks.iter().filter(|&&r| r > 0 && r != BEYOND).count();
            walked += ring.ranks.iter().filter(|&&r| r == BEYOND).count();
            let weight = if rng.random_bool(0.3) {
                rng.random_range(1..400)
            } else {
                100
            };
            let present: Vec<String> = ring.members().map(|(n, _)| n.to_owned()).collect();
            let next = match step % 3 {
                0 => {
                    let name = &pool[rng.random_range(0..pool.len())];
                    ring.with_member(Member::new(name.as_str()).with_weight(weight))
                        .expect("valid member")
                }
                1 => ring.without_member(&present[rng.random_range(0..present.len())]),
                _ => {
                    // Three leave, three join, two change weight.
                    let mut members: Vec<Member> = ring
                        .members()
                        .map(|(n, w)| Member::new(n).with_weight(w))
                        .collect();
                    for _ in 0..3 {
                        members.swap_remove(rng.random_range(0..members.len()));
                    }
                    for _ in 0..2 {
                        let i = rng.random_range(0..members.len());
                        members[i].weight = rng.random_range(1..400);
                    }
                    for name in pool.iter().filter(|n| !ring.contains(n)).take(3) {
                        members.push(Member::new(name.as_str()));
                    }
                    ring.rebuild(members).expect("valid members")
                }
            };
            let fresh = Ring::new(
                config.clone(),
                next.members().map(|(n, w)| Member::new(n).with_weight(w)),
            )
            .expect("valid ring");
            assert_eq!(next, fresh, "step {step} with {config:?}");
            ring = next;
        }
        if c.is_some() {
            assert!(
                restored > 0 && walked > 0,
                "{restored} restored, {walked} walked again"
            );
        }
    }
}

/// A join is patched, not walked again: `patched` answers, with the rows of a fresh walk.
#[test]
fn a_join_patches_the_rows_around_its_vnodes() {
    let config = RingConfig {
        partition_bits: 14,
        ..bounded(Some(1.02))
    };
    let ring = Ring::new(config.clone(), names(100)).expect("valid ring");
    let joined = ring.with_member("node-0500").expect("valid member");
    let r = joined.member_index("node-0500").expect("a member");
    let renumber: Vec<Option<u16>> = (0..100u16).map(|m| Some(m + u16::from(m >= r))).collect();
    let changed: Vec<u32> = joined
        .vnodes
        .packed()
        .filter(|&v| member_of(v) == r)
        .map(position_of)
        .collect();
    assert_eq!(changed.len(), 256);
    let bits = u32::from(config.partition_bits);
    let starts = starts(&joined.vnodes, bits);
    let previous = Previous {
        table: &ring.table,
        ranks: &ring.ranks,
        members: ring.names.len(),
        renumber: &renumber,
        changed,
    };
    let rows = patched(&joined.vnodes, bits, &starts, ROW, previous).expect("patched");
    assert_eq!(rows, preferences(&joined.vnodes, bits, &starts, ROW));
}

/// Rows shared between nearby points (up to a walk's slack) equal rows walked point by point,
/// with few vnodes (long gaps, much sharing) and many (little).
#[test]
fn shared_rows_equal_rows_walked_at_every_point() {
    for (members, vnodes, bits) in [(5, 4, 12), (7, 1, 16), (40, 32, 12), (300, 64, 14)] {
        let config = RingConfig {
            vnodes: NonZeroU32::new(vnodes).expect("non-zero"),
            partition_bits: bits,
            bounded_load: None,
        };
        let ring = Ring::new(config, names(members)).expect("valid ring");
        let bits = u32::from(bits);
        let starts = starts(&ring.vnodes, bits);
        let depth = ROW.min(members);
        let each: Vec<[u16; ROW]> = (0..starts.len())
            .map(|p| {
                let walk = Outward::new(
                    ring.vnodes.len(),
                    starts[p] as usize,
                    partition_point(p, bits),
                );
                row_of(&ring.vnodes, walk, depth).0
            })
            .collect();
        assert_eq!(
            preferences(&ring.vnodes, bits, &starts, depth),
            each,
            "{members} x {vnodes}"
        );
    }
    // A tie on a point: partition 1 (at 2^28 of 16) lies 3 * 2^27 from both vnodes, so it
    // takes the clockwise one first, where partition 0 took the other.
    let vnodes: Vnodes = [((1u64 << 32) - (1 << 27)) << 32, (5u64 << 27) << 32 | 1]
        .into_iter()
        .rev()
        .collect();
    let starts = starts(&vnodes, 4);
    let rows = preferences(&vnodes, 4, &starts, 2);
    assert_eq!(rows[0][..2], [0, 1]);
    assert_eq!(rows[1][..2], [1, 0]);
}

/// Review: crafted vnode sets with many ties (positions on a coarse grid, at partition points,
/// at 0 and `u32::MAX`, two members at one position), tiny partition counts and 1 to 4 vnodes
/// per member. For random before/after member sets (joins, leaves, weight changes as other
/// vnodes), the assignment patched from the previous one equals the one walked from scratch,
/// and the shared full walk equals the brute-force rule at every point.
#[test]
fn review_patched_assignment_equals_fresh_on_crafted_tie_heavy_vnodes() {
    let mut rng = rng();
    let universe = 12usize;
    let all_names: Vec<Box<str>> = (0..universe)
        .map(|i| format!("m{i:02}").into_boxed_str())
        .collect();
    let mut patched_count = 0usize;
    let cases: usize = std::env::var("REVIEW_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6000);
    for case in 0..cases {
        let bits: u32 = rng.random_range(1..=6);
        let grid: u32 = rng.random_range(1..=8);
        let pick_position = |rng: &mut Xoshiro256PlusPlus| -> u32 {
            match rng.random_range(0..6) {
                0 => 0,
                1 => u32::MAX,
                2 => rng.random_range(0..(1u32 << grid)) << (32 - grid),
                3 => (rng.random_range(0..(1u32 << grid)) << (32 - grid)).wrapping_sub(1),
                4 => (rng.random_range(0..(1u32 << grid)) << (32 - grid)).wrapping_add(1),
                _ => rng.random(),
            }
        };
        // Two vnode sets per member: the second stands for another weight.
        let sets: Vec<[Vec<u32>; 2]> = (0..universe)
            .map(|_| {
                [0, 1].map(|_| {
                    let n = rng.random_range(1..=4);
                    let mut v: Vec<u32> = (0..n).map(|_| pick_position(&mut rng)).collect();
                    v.sort_unstable();
                    v.dedup();
                    v
                })
            })
            .collect();
        let choose = |rng: &mut Xoshiro256PlusPlus| -> Vec<(usize, usize)> {
            let mut out = Vec::new();
            for m in 0..universe {
                if rng.random_bool(0.5) {
                    out.push((m, usize::from(rng.random_bool(0.2))));
                }
            }
            out
        };
        let old = choose(&mut rng);
        let mut new = old.clone();
        match rng.random_range(0..4) {
            0 => {
                // One join.
                if let Some(m) = (0..universe).find(|m| !new.iter().any(|x| x.0 == *m)) {
                    new.push((m, rng.random_range(0..2)));
                    new.sort_unstable();
                }
            }
            1 => {
                if !new.is_empty() {
                    new.remove(rng.random_range(0..new.len()));
                }
            }
            _ => new = choose(&mut rng),
        }
        if old.len() < 2 || new.len() < 2 {
            continue;
        }
        let vnodes_of = |set: &[(usize, usize)]| -> Vnodes {
            let mut packed: Vec<u64> = set
                .iter()
                .enumerate()
                .flat_map(|(i, &(m, s))| {
                    sets[m][s]
                        .iter()
                        .map(move |&p| u64::from(p) << 32 | i as u64)
                })
                .collect();
            packed.sort_unstable();
            packed.into_iter().collect()
        };
        let names_of = |set: &[(usize, usize)]| -> Vec<Box<str>> {
            set.iter().map(|x| all_names[x.0].clone()).collect()
        };
        let weights_of =
            |set: &[(usize, usize)]| -> Vec<u32> { set.iter().map(|x| 100 + x.1 as u32).collect() };
        let (old_vnodes, new_vnodes) = (vnodes_of(&old), vnodes_of(&new));
        let c = [None, Some(1.0), Some(1.05), Some(1.3)][rng.random_range(0..4)];
        let config = RingConfig {
            vnodes: NonZeroU32::new(4).expect("non-zero"),
            partition_bits: bits as u8,
            bounded_load: c,
        };
        // Brute force against the shared full walk, with ties.
        {
            let starts = starts(&new_vnodes, bits);
            let depth = ROW.min(new.len());
            let rows = preferences(&new_vnodes, bits, &starts, depth);
            let reference: Vec<(u32, String)> = new_vnodes
                .packed()
                .map(|v| (position_of(v), format!("{:05}", member_of(v))))
                .collect();
            for (p, row) in rows.iter().enumerate() {
                let pref = reference_preferences(&reference, partition_point(p, bits));
                let want: Vec<u16> = pref
                    .iter()
                    .take(depth)
                    .map(|x| x.0.parse().expect("index"))
                    .collect();
                assert_eq!(&row[..depth], &want[..], "case {case} partition {p}");
            }
        }
        let old_assignment = assign_by_preference(
            &config,
            &old_vnodes,
            &names_of(&old),
            &weights_of(&old),
            None,
        );
        let renumber: Vec<Option<u16>> = old
            .iter()
            .map(|x| new.iter().position(|y| y == x).map(|i| i as u16))
            .collect();
        let mut changed: Vec<u32> = old
            .iter()
            .enumerate()
            .filter(|(i, _)| renumber[*i].is_none())
            .flat_map(|(_, &(m, s))| sets[m][s].iter().copied())
            .collect();
        changed.extend(
            new.iter()
                .filter(|x| !old.contains(x))
                .flat_map(|&(m, s)| sets[m][s].iter().copied()),
        );
        let starts = starts(&new_vnodes, bits);
        let depth = ROW.min(new.len());
        let fresh_rows = preferences(&new_vnodes, bits, &starts, depth);
        let previous = Previous {
            table: &old_assignment.table,
            ranks: &old_assignment.ranks,
            members: old.len(),
            renumber: &renumber,
            changed: changed.clone(),
        };
        if let Some(rows) = patched(&new_vnodes, bits, &starts, depth, previous) {
            patched_count += 1;
            assert_eq!(
                rows, fresh_rows,
                "case {case}: bits {bits} old {old:?} new {new:?} c {c:?}"
            );
        }
        let previous = Previous {
            table: &old_assignment.table,
            ranks: &old_assignment.ranks,
            members: old.len(),
            renumber: &renumber,
            changed,
        };
        let (names, weights) = (names_of(&new), weights_of(&new));
        let via = assign_by_preference(&config, &new_vnodes, &names, &weights, Some(previous));
        let fresh = assign_by_preference(&config, &new_vnodes, &names, &weights, None);
        assert_eq!(via.table, fresh.table, "case {case}");
        assert_eq!(via.ranks, fresh.ranks, "case {case}");
    }
    assert!(patched_count > 500, "{patched_count} patched");
}

/// Review: member indices at the top of u16 (65,534 and 65,535) through joins, leaves and a
/// rebuild that patch the rows (one vnode each, so one change is few), bounded and not.
#[test]
fn review_patches_at_the_largest_member_indices_equal_a_fresh_build() {
    for c in [None, Some(1.0)] {
        let config = RingConfig {
            vnodes: NonZeroU32::MIN,
            partition_bits: 12,
            bounded_load: c,
        };
        let pool = names(MAX_MEMBERS);
        let ring = Ring::new(config.clone(), &pool[..MAX_MEMBERS - 1]).expect("valid ring");
        let fresh = |r: &Ring| {
            Ring::new(
                config.clone(),
                r.members().map(|(n, w)| Member::new(n).with_weight(w)),
            )
            .expect("valid ring")
        };
        // Joins at the last index and at index 0 (every other member renumbered up).
        let last = ring.with_member(&pool[MAX_MEMBERS - 1]).expect("fits");
        assert!(last == fresh(&last), "join at 65,535 ({c:?})");
        let left = last.without_member(&pool[0]);
        assert!(left == fresh(&left), "leave at 0 ({c:?})");
        let back = left.with_member(&pool[0]).expect("fits");
        assert!(back == last, "join at 0 ({c:?})");
        let gone = last.without_member(&pool[MAX_MEMBERS - 1]);
        assert!(gone == ring, "leave at 65,535 ({c:?})");
        let mut set: Vec<Member> = pool[3..].iter().map(Member::from).collect();
        set.push(Member::new(pool[1].as_str()).with_weight(300));
        let rebuilt = last.rebuild(set).expect("fits");
        assert!(rebuilt == fresh(&rebuilt), "rebuild ({c:?})");
    }
}

/// Review: on tiny crafted rings with many equal distances (up to 8 partitions, 2 to 4
/// members), deferred acceptance gives a stable assignment within capacity, and it is the only
/// one (every assignment enumerated).
#[test]
fn review_bounded_assignment_is_the_unique_stable_one_with_ties() {
    let mut rng = rng();
    let mut multiple = Vec::new();
    for case in 0..3000 {
        let bits: u32 = rng.random_range(1..=3);
        let members = rng.random_range(2..=4usize);
        let grid = rng.random_range(1..=4u32);
        let mut packed: Vec<u64> = (0..members)
            .flat_map(|m| {
                let n = rng.random_range(1..=3);
                (0..n)
                    .map(|_| {
                        let p = rng.random_range(0..(1u32 << grid)) << (32 - grid);
                        u64::from(p) << 32 | m as u64
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        packed.sort_unstable();
        packed.dedup();
        let vnodes: Vnodes = packed.iter().copied().collect();
        if (0..members).any(|m| !vnodes.members.contains(&(m as u16))) {
            continue;
        }
        let names: Vec<Box<str>> = (0..members)
            .map(|m| format!("{m:05}").into_boxed_str())
            .collect();
        let weights = vec![100; members];
        let c = [1.0, 1.3][rng.random_range(0..2)];
        let config = RingConfig {
            vnodes: NonZeroU32::MIN,
            partition_bits: bits as u8,
            bounded_load: Some(c),
        };
        let got = assign_by_preference(&config, &vnodes, &names, &weights, None);
        let partitions = 1usize << bits;
        let capacity = capacities(&config, &names, &weights, partitions);
        let reference: Vec<(u32, String)> = vnodes
            .packed()
            .map(|v| (position_of(v), format!("{:05}", member_of(v))))
            .collect();
        // prefs[p] = (member, distance) in preference order.
        let prefs: Vec<Vec<(usize, u32)>> = (0..partitions)
            .map(|p| {
                reference_preferences(&reference, partition_point(p, bits))
                    .into_iter()
                    .map(|(m, d)| (m.parse().expect("index"), d))
                    .collect()
            })
            .collect();
        let stable = |owner: &[usize]| -> bool {
            let mut held = vec![Vec::new(); members];
            for (p, &m) in owner.iter().enumerate() {
                let d = prefs[p].iter().find(|x| x.0 == m).expect("listed").1;
                held[m].push((d, p));
            }
            if held
                .iter()
                .enumerate()
                .any(|(m, h)| h.len() > capacity[m] as usize)
            {
                return false;
            }
            for (p, &m) in owner.iter().enumerate() {
                for &(better, d) in prefs[p].iter().take_while(|x| x.0 != m) {
                    let h = &held[better];
                    if h.len() < capacity[better] as usize || h.iter().any(|&x| x > (d, p)) {
                        return false;
                    }
                }
            }
            true
        };
        let owners: Vec<usize> = got.table.iter().map(|r| usize::from(r[0])).collect();
        assert!(stable(&owners), "case {case}: not stable {owners:?}");
        let mut all = Vec::new();
        for code in 0..members.pow(partitions as u32) {
            let mut x = code;
            let owner: Vec<usize> = (0..partitions)
                .map(|_| {
                    let m = x % members;
                    x /= members;
                    m
                })
                .collect();
            if stable(&owner) {
                all.push(owner);
            }
        }
        if all.len() != 1 {
            multiple.push((case, packed.clone(), all));
        }
    }
    assert!(
        multiple.is_empty(),
        "{} cases, first {:?}",
        multiple.len(),
        multiple.first()
    );
}

/// Review: where the owner stands past the row (`BEYOND`) or inside it, `owners(key, all)` is
/// the owner, then the rest of the documented preference list in order.
#[test]
fn review_owners_past_a_beyond_row_follow_the_preference_list() {
    let config = RingConfig {
        vnodes: NonZeroU32::new(8).expect("non-zero"),
        partition_bits: 12,
        bounded_load: Some(1.0),
    };
    let ring = Ring::new(config, names(60)).expect("valid ring");
    let vnodes = reference_vnodes(&ring);
    let mut beyond = 0;
    for p in 0..ring.num_partitions() {
        let rank = ring.ranks[p];
        beyond += usize::from(rank == BEYOND);
        let hash = (p as u64) << ring.shift;
        let owner = ring.owner_of_hash(hash).expect("an owner");
        let list = reference_preferences(&vnodes, partition_point(p, 12));
        let at = list.iter().position(|x| x.0 == owner).expect("listed");
        assert_eq!(
            usize::from(rank),
            if at < ROW { at } else { 255 },
            "partition {p}"
        );
        let mut want = vec![owner];
        want.extend(list.iter().map(|x| x.0.as_str()).filter(|m| *m != owner));
        let got: Vec<&str> = ring.owners_of_hash(hash, usize::MAX).collect();
        assert_eq!(got, want, "partition {p} (rank {rank})");
    }
    assert!(beyond > 0, "no owner past its row");
}

/// Review: capacities are the module docs' formula to the integer, with the dither `u` the low
/// 32 bits of the name's hash: `min(P, max(ceil(P w / W), floor((c_ppm P w 2^32 + u W 10^6) /
/// (W 10^6 2^32))))`. Other languages must reproduce it; the spread and sum checks above pass
/// with another dither as well (the hash's high half, or half the dither).
#[test]
fn review_capacities_are_the_documented_formula() {
    let documented = |c_ppm: u128, p: u128, w: u128, total: u128, name: &str| {
        let u = u128::from(xxh3_64(name.as_bytes())) % (1 << 32);
        let fair = (p * w).div_ceil(total);
        let dithered =
            (c_ppm * p * w * (1 << 32) + u * total * 1_000_000) / (total * 1_000_000 * (1 << 32));
        u32::try_from(p.min(fair.max(dithered))).expect("at most P")
    };
    let names: Vec<Box<str>> = names(100).into_iter().map(Into::into).collect();
    let mut rng = rng();
    for (c, bits, n, weighted) in [
        (1.08, 17, 100, false),
        (1.08, 17, 100, true),
        (1.0, 12, 37, true),
        (1.234_567, 18, 64, false),
        (3.5, 10, 9, true),
    ] {
        let config = RingConfig {
            partition_bits: bits,
            ..bounded(Some(c))
        };
        let weights: Vec<u32> = (0..n)
            .map(|_| {
                if weighted {
                    rng.random_range(1..=MAX_WEIGHT)
                } else {
                    DEFAULT_WEIGHT
                }
            })
            .collect();
        let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
        let p = 1usize << bits;
        let caps = capacities(&config, &names[..n], &weights, p);
        let expected: Vec<u32> = names[..n]
            .iter()
            .zip(&weights)
            .map(|(name, &w)| {
                documented(
                    u128::from(config.load_ppm()),
                    p as u128,
                    u128::from(w),
                    total,
                    name,
                )
            })
            .collect();
        assert_eq!(caps, expected, "c = {c}, 2^{bits} partitions, {n} members");
    }
}

/// Review: a ring without bounded load keeps no rank byte per partition (8 bytes of table per
/// partition, 9 under bounded load, as `RingConfig::partition_bits` says), however it was
/// built; the same members under bounded load keep exactly one byte more per partition.
#[test]
fn review_only_bounded_rings_keep_a_rank_byte_per_partition() {
    let config = RingConfig {
        partition_bits: 12,
        ..uncapped()
    };
    let plain = Ring::new(config.clone(), names(20)).expect("valid ring");
    let joined = plain.with_member("node-new").expect("valid member");
    let left = joined.without_member("node-003");
    let rebuilt = left.rebuild(names(25)).expect("valid members");
    for ring in [&plain, &joined, &left, &rebuilt] {
        assert!(ring.ranks.is_empty(), "{} rank bytes", ring.ranks.len());
    }
    let bounded = Ring::new(
        RingConfig {
            bounded_load: Some(1.08),
            ..config
        },
        names(20),
    )
    .expect("valid ring");
    assert_eq!(bounded.ranks.len(), 1 << 12);
    assert_eq!(bounded.memory_bytes() - plain.memory_bytes(), 1 << 12);
}

/// Review: `patched` falls back to walking every row past one changed vnode in 8 of the new
/// ring's, or one in 2 partitions (the module docs' thresholds), and patches up to them, with
/// the rows of a fresh walk.
#[test]
fn review_patching_gives_way_to_a_full_walk_past_the_documented_thresholds() {
    // (vnodes per member, partition bits): many vnodes and few partitions reach the
    // partitions' threshold first; few vnodes and many partitions the vnodes'.
    for (vnodes, bits) in [(256, 10), (16, 16)] {
        let config = RingConfig {
            vnodes: NonZeroU32::new(vnodes).expect("non-zero"),
            partition_bits: bits,
            bounded_load: None,
        };
        let ring = Ring::new(config, names(100)).expect("valid ring");
        let bits = u32::from(bits);
        let starts = starts(&ring.vnodes, bits);
        let len = ring.vnodes.len();
        let limit = (len / 8).min(starts.len() / 2);
        let renumber: Vec<Option<u16>> = (0..100u16).map(Some).collect();
        let previous = |changed: usize| Previous {
            table: &ring.table,
            ranks: &ring.ranks,
            members: ring.names.len(),
            renumber: &renumber,
            // Spread over the ring: the windows stay short.
            changed: (0..changed)
                .map(|k| ring.vnodes.positions[k * len / changed])
                .collect(),
        };
        let at_limit = patched(&ring.vnodes, bits, &starts, ROW, previous(limit));
        assert_eq!(
            at_limit.as_deref(),
            Some(&ring.table[..]),
            "{limit} changed of {len} vnodes, 2^{bits} partitions"
        );
        let past = patched(&ring.vnodes, bits, &starts, ROW, previous(limit + 1));
        assert!(past.is_none(), "{} changed of {len}", limit + 1);
    }
}

/// `Ring::fingerprint_of` (what a node compares its peers' gossiped rings against) is the
/// fingerprint of the ring `Ring::new` builds, in any member order, weights included, and
/// for no members.
#[test]
fn fingerprint_of_is_the_built_rings_fingerprint() {
    let config = RingConfig::default();
    let sets: [Vec<Member>; 4] = [
        Vec::new(),
        vec![Member::new("a")],
        vec![
            Member::new("c"),
            Member::new("a").with_weight(250),
            Member::new("b"),
        ],
        (0..40)
            .rev()
            .map(|i| Member::new(format!("node-{i}")))
            .collect(),
    ];
    for members in sets {
        let built = Ring::new(config.clone(), members.clone())
            .unwrap()
            .fingerprint();
        assert_eq!(
            Ring::fingerprint_of(&config, &members),
            Some(built),
            "{members:?}"
        );
    }
    let twice = [Member::new("a"), Member::new("a")];
    assert_eq!(Ring::fingerprint_of(&config, &twice), None);
}

/// `Handoff::acquired_from_nobody_of` moves what was acquired from the named peers to the
/// `None` transfer, which comes first and holds the union of its own ranges and theirs, sorted
/// and merged where they touch; the other peers' transfers and what was relinquished stay as
/// they were, and nothing changes when none of the names was a previous owner.
#[test]
fn acquired_from_nobody_of_merges_the_named_peers_into_the_first_transfer() {
    let r = |start: u64, end: u64| KeyRange { start, end };
    let t = |peer: Option<&str>, ranges: Vec<KeyRange>| Transfer {
        peer: peer.map(str::to_owned),
        ranges,
    };
    let relinquished = vec![t(Some("b"), vec![r(200, 209)])];
    let mut handoff = Handoff {
        acquired: vec![
            t(None, vec![r(0, 9), r(100, 109)]),
            t(Some("a"), vec![r(10, 19), r(60, 69)]),
            t(Some("b"), vec![r(20, 29), r(110, 119)]),
            t(Some("c"), vec![r(30, 49), r(90, 99)]),
        ],
        relinquished: relinquished.clone(),
    };
    let peers: BTreeSet<String> = ["b", "c", "z"].map(str::to_owned).into();
    handoff.acquired_from_nobody_of(&peers);
    assert_eq!(
        handoff.acquired,
        vec![
            t(None, vec![r(0, 9), r(20, 49), r(90, 119)]),
            t(Some("a"), vec![r(10, 19), r(60, 69)]),
        ]
    );
    assert_eq!(handoff.relinquished, relinquished);

    // No `None` transfer before: one is made, first; names that were no previous owner, or
    // none at all, change nothing.
    let mut handoff = Handoff {
        acquired: vec![t(Some("a"), vec![r(0, 9)]), t(Some("b"), vec![r(10, 19)])],
        relinquished: Vec::new(),
    };
    let unchanged = handoff.clone();
    handoff.acquired_from_nobody_of(&["z".to_owned()].into());
    handoff.acquired_from_nobody_of(&BTreeSet::new());
    assert_eq!(handoff, unchanged);
    handoff.acquired_from_nobody_of(&["b".to_owned()].into());
    assert_eq!(
        handoff.acquired,
        vec![t(None, vec![r(10, 19)]), t(Some("a"), vec![r(0, 9)])]
    );

    // On a real hand-off (a fifth member joining four), the result keeps the invariants and
    // covers what it covered, the re-attributed peers' hashes now from nobody.
    let (old, new) = (ring(4), ring(5));
    let joiner = names(5).pop().unwrap();
    let mut handoff = Ring::handoff(&old, &new, &joiner);
    let peers: Vec<String> = handoff
        .acquired
        .iter()
        .filter_map(|t| t.peer.clone())
        .collect();
    assert_eq!(peers, names(4), "{handoff:?}");
    let total: u128 = handoff.acquired.iter().map(Transfer::num_hashes).sum();
    let moved: u128 = handoff.acquired[..2].iter().map(Transfer::num_hashes).sum();
    let kept = handoff.acquired[2..].to_vec();
    handoff.acquired_from_nobody_of(&peers[..2].iter().cloned().collect());
    assert_eq!(handoff.acquired[0].peer, None);
    assert_eq!(handoff.acquired[0].num_hashes(), moved);
    assert_eq!(handoff.acquired[1..], kept);
    assert_eq!(
        handoff
            .acquired
            .iter()
            .map(Transfer::num_hashes)
            .sum::<u128>(),
        total
    );
    for t in &handoff.acquired {
        for w in t.ranges.windows(2) {
            assert!(
                w[0].end.checked_add(1).is_some_and(|e| e < w[1].start),
                "{t:?}"
            );
        }
    }
}
