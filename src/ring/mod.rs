//! Consistent-hash ring: which live member owns a key, derived locally with no coordination.
//!
//! Every node builds a [`Ring`] from the member set it currently sees as live. The ring is a pure
//! function of that set (names, weights) and the [`RingConfig`]: two nodes that agree on the set
//! compute bit-identical rings and the same owner for every key, whatever order members joined or
//! left in. [`Ring::fingerprint`] is a 64-bit digest of the inputs that two services can exchange
//! to check that they agree.
//!
//! # Hashing (fixed, reproducible in other languages)
//!
//! All hashing is XXH3-64 from the published xxHash spec (`XXH3_64bits`,
//! `XXH3_64bits_withSeed`), over explicit bytes; std's `Hash`/`RandomState` is never used.
//!
//! - A key's hash is [`hash_key`]`(key) = XXH3_64(key bytes)`, seed 0. An integer key `k` is
//!   hashed by its 8 little-endian bytes ([`hash_u64`]), so `owner_u64(k) == owner(&k.to_le_bytes())`.
//! - Member `name` with weight `w` gets `max(1, round(vnodes * w / 100))` virtual nodes (round
//!   half up); vnode `i` has token `XXH3_64_withSeed(i as u32 little-endian, seed =
//!   XXH3_64(name UTF-8 bytes))` ([`vnode_token`]) and sits at ring position `token >> 32`.
//!   Tokens depend on the name only, so a restarted process with the same name gets the same
//!   preferences. Vnodes are ordered by position, then member name (byte order); a member's
//!   repeated position counts once.
//!
//! # Partitions and preference lists
//!
//! The key-hash space is cut into `P = 2^bits` partitions (`bits` =
//! [`RingConfig::partition_bits`], default 18): partition `p` holds the hashes whose top `bits`
//! bits are `p` ([`partition_of_hash`]) and starts at ring position `point(p) = p << (32 -
//! bits)`. Ownership is assigned a partition at a time, and a lookup is a table read:
//! `table[hash >> (64 - bits)]`.
//!
//! Partition `p`'s preference list is the distinct members in the order of their *nearest*
//! vnode to `point(p)`, either way round the ring. Precisely, it walks outward from the point:
//! the vnodes clockwise from the first at a position `>= point(p)` (distance `(position -
//! point(p)) mod 2^32`) and counter-clockwise from the one before it (distance `(point(p) -
//! position) mod 2^32`), merged by distance, the clockwise one first on a tie, until every
//! vnode is taken once; each member is listed where its first vnode is met, at distance `d(p,
//! m)`. Its first choice is the member of the vnode nearest the point: each vnode owns the
//! points nearer to it than to any other, two half-gaps of the ring instead of the one gap
//! before it of a classic vnode ring, which spreads the members' shares less (at 1,000
//! members, the shares' standard deviation is 5.1 % of the mean at the defaults instead of 6.8
//! % for the classic rule).
//!
//! # Assignment
//!
//! - **Uncapped** (`bounded_load: None`): every partition goes to its first choice. Keys move
//!   only to a joining member or away from a leaving one (the ideal `1/N`), and a replica set
//!   changes only if it contains the changed member. Balance is that of random vnodes sampled at
//!   `P` points: at 1,000 members the largest holds about 1.14 times the mean.
//! - **Bounded load** (`bounded_load: Some(c)`, the default with `c = 1.08`; after Mirrokni,
//!   Thorup and Zadimoghaddam, "Consistent Hashing with Bounded Loads", 2018): member `m` of
//!   weight `w` (all weights sum to `W`) may hold at most `cap(m)` partitions, computed exactly
//!   in integers with `c_ppm = round(c * 10^6)` and `u = XXH3_64(name) mod 2^32`:
//!
//!   ```text
//!   cap(m) = min(P, max(ceil(P * w / W),
//!                       floor((c_ppm * P * w * 2^32 + u * W * 10^6) / (W * 10^6 * 2^32))))
//!   ```
//!
//!   that is about `c * P * w / W`, never below the fair share rounded up. (The dither `u / 2^32`
//!   spreads the membership sizes at which capacities round to the next integer, instead of
//!   every member's flipping at the same size.) The owners are the unique stable assignment in
//!   which partitions and members both prefer a smaller distance (ties: the smaller partition
//!   index): no partition would rather have a member (earlier in its preference list) that has
//!   room left or holds a partition at a larger `(distance, index)`. Deferred acceptance
//!   computes it: each partition asks the members of its preference list in order; a member
//!   keeps the `cap` nearest partitions that asked it and turns away the rest; the result does
//!   not depend on the order of asking. Capacities add up to at least `P`, so every partition
//!   finds a member. A change moves partitions beyond the ideal along chains of full members
//!   and as capacities follow `P / N`; BENCHMARKS.md, section 3, has the figures.
//!
//! `owners(key, n)` yields the partition's owner, then the rest of its preference list in
//! order. Under bounded load a replica list can therefore change without containing the
//! changed member (when its partition changes owner along a chain): at 1,000 members and
//! `c = 1.08`, about 0.01 % of 3-replica lists per change, nearly all of them the same members
//! with another first owner (the new owner was second or third in the list); the set of
//! members itself changed for none of 3.2 million sampled at N = 1,000, and for 11 of 16
//! million over N = 990..1,008 (BENCHMARKS.md, section 3).
//!
//! # Lookup cost
//!
//! The table has one 8-byte row per partition: the owner and the next 3 members of `owners`
//! (2 MiB at the default 2^18). `owner` and `owners(key, n <= 4)` read one row; more members
//! walk the sorted vnodes (6 bytes each, 1.5 MiB at 1,000 members x 256) outward from the
//! partition's point. Under bounded load the ring also keeps one byte per partition: where the
//! owner stands in the preference list.
//!
//! # Membership changes
//!
//! [`Ring::new`] builds from scratch; [`Ring::with_member`], [`Ring::without_member`] and
//! [`Ring::rebuild`] derive the next ring from the previous one and give the same ring as a
//! build from scratch. They neither hash nor sort the unchanged vnodes, and they patch the
//! previous preference rows instead of walking every partition again: a row changes only if a
//! vnode that came or went lies nearer its point than the row's last member, so each changed
//! vnode's neighbourhood is walked again, outward until a row ends nearer than that vnode
//! (the rows further out end nearer still). The partitions are then assigned again.
//!
//! # Hand-off
//!
//! Ownership is described as ranges of key hashes ([`KeyRange`]), runs of whole partitions.
//! [`Ring::handoff`] compares two rings for one member and lists the ranges it acquired (and
//! from whom) and relinquished (and to whom); [`KeyRange::contains`] tells a service whether
//! one of its keys falls in a range, and [`KeyRange::partitions`] which of `2^bits` fixed
//! partitions (see [`partition_of_hash`]) overlap it, for services that bucket their keys by
//! partition.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::ops::RangeInclusive;

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use assign::{Outward, Previous, assign_partitions};
use handoff::push_range;

mod assign;
mod handoff;

/// Weight of a member that states none: 100, i.e. one share of `vnodes` virtual nodes.
pub const DEFAULT_WEIGHT: u32 = 100;

/// Largest accepted member weight (100 times the default).
pub const MAX_WEIGHT: u32 = 10_000;

/// Largest number of members on one ring (member indices are 16-bit in the lookup table).
pub const MAX_MEMBERS: usize = 1 << 16;

/// Smallest accepted bounded-load factor: 1.0, every member capped at its fair share rounded
/// up to whole partitions. At 1,000 members that gives 1.044 peak-to-mean over 10M keys, but
/// a join moved 10x the ideal `1/N` of the keys and the rebuild took up to 20 ms (BENCHMARKS.md,
/// section 3).
pub const MIN_LOAD_FACTOR: f64 = 1.0;

/// Largest number of virtual nodes on one ring, all members together.
pub const MAX_VNODES: usize = 1 << 28;

/// Largest accepted [`RingConfig::partition_bits`] (16 million partitions, 128 MiB of table).
pub const MAX_PARTITION_BITS: u8 = 24;

/// Tunables of a [`Ring`]. Start from [`RingConfig::default()`] and change fields.
///
/// Every node that must agree on ownership MUST use the same config; it is part of
/// [`Ring::fingerprint`]. Figures for each choice are in BENCHMARKS.md, section 3.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RingConfig {
    /// Virtual nodes per member at weight 100 (count). Default: 256.
    ///
    /// They make the members' preference lists: more vnodes give each member a share of first
    /// choices closer to its fair one, so fewer members are at capacity and a membership change
    /// moves fewer keys beyond the ideal. Cost: 6 bytes each and build time linear in
    /// `members * vnodes`.
    pub vnodes: NonZeroU32,
    /// The hash space is cut into `P = 2^partition_bits` partitions (the top bits of a key's
    /// hash), and ownership is assigned a partition at a time. Default: 18. Allowed: 1 to
    /// [`MAX_PARTITION_BITS`].
    ///
    /// Every member should own many partitions (262 each at the default and 1,000 members):
    /// first choices are random samples of the ring at `P` points, so fewer partitions per
    /// member spread the first choices wider, put more members at capacity and move more keys
    /// per change (at 1,000 members and `c = 1.08`: 1.14x the ideal with 2^18, 1.26-1.29x with
    /// 2^17). The table costs 8 bytes per partition (9 under bounded load), and rebuild time
    /// linear in `P`.
    pub partition_bits: u8,
    /// Bounded-load factor `c` (ratio): `Some(c)` caps every member at about `c * P * weight /
    /// total_weight` partitions (rounded as the module docs say); `None` gives every partition
    /// its first choice (the member of the vnode nearest to it), a plain consistent-hash
    /// ring. Default: `Some(1.08)`. Allowed: 1.0 to 100.0, rounded to 6
    /// decimals.
    ///
    /// Smaller `c` gives tighter balance but moves more keys on a membership change (a
    /// partition turned away by a full member asks the next one, which may turn away another)
    /// and breaks "a replica set changes only if it contains the changed member" more often.
    pub bounded_load: Option<f64>,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            vnodes: NonZeroU32::new(256).unwrap_or(NonZeroU32::MIN),
            partition_bits: 18,
            bounded_load: Some(1.08),
        }
    }
}

impl RingConfig {
    /// Checks the fields; [`Ring::new`] calls this, so an invalid config never builds a ring.
    ///
    /// # Errors
    ///
    /// [`RingError::LoadFactor`] if the bounded-load factor is not a finite number in
    /// 1.0..=100.0; [`RingError::PartitionBits`] if `partition_bits` is outside
    /// 1..=[`MAX_PARTITION_BITS`].
    pub fn validate(&self) -> Result<(), RingError> {
        if let Some(c) = self.bounded_load
            && !(c.is_finite() && (MIN_LOAD_FACTOR..=100.0).contains(&c))
        {
            return Err(RingError::LoadFactor { factor: c });
        }
        if !(1..=MAX_PARTITION_BITS).contains(&self.partition_bits) {
            return Err(RingError::PartitionBits {
                bits: self.partition_bits,
            });
        }
        Ok(())
    }

    /// Virtual nodes a member of `weight` takes: `vnodes * weight / 100`, rounded, at least 1.
    /// A ring holds at most [`MAX_VNODES`] of them in all.
    pub fn vnodes_for(&self, weight: u32) -> u64 {
        vnode_count(self, weight)
    }

    /// The bounded-load factor in parts per million, or 0 when bounded load is off.
    fn load_ppm(&self) -> u64 {
        // Validated to lie in [1, 100], so the product is in [1e6, 1e8] and the cast is exact.
        self.bounded_load
            .map_or(0, |c| (c * 1_000_000.0).round() as u64)
    }
}

/// A member to place on the ring: its name and relative weight.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    /// Unique name; the member's tokens derive from its UTF-8 bytes only.
    pub name: String,
    /// Relative weight; [`DEFAULT_WEIGHT`] (100) is one share. Allowed: 1 to [`MAX_WEIGHT`].
    pub weight: u32,
}

impl Member {
    /// A member with the default weight (100).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            weight: DEFAULT_WEIGHT,
        }
    }

    /// The same member with `weight` (100 = one share).
    #[must_use]
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }
}

impl From<&str> for Member {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl From<&String> for Member {
    fn from(name: &String) -> Self {
        Self::new(name.as_str())
    }
}

impl From<String> for Member {
    fn from(name: String) -> Self {
        Self::new(name)
    }
}

/// Why a ring could not be built or changed. The ring (if any) is left unchanged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// The bounded-load factor is not a finite number in 1.0..=100.0. No ring was built.
    #[error("bounded-load factor {factor} is outside 1.0..=100.0")]
    LoadFactor {
        /// The rejected value.
        factor: f64,
    },
    /// `partition_bits` is outside 1..=[`MAX_PARTITION_BITS`]. No ring was built.
    #[error("partition_bits {bits} is outside 1..={MAX_PARTITION_BITS}")]
    PartitionBits {
        /// The rejected value.
        bits: u8,
    },
    /// The same name was given twice. No ring was built.
    #[error("member {name:?} is listed twice")]
    DuplicateMember {
        /// The repeated name.
        name: String,
    },
    /// A weight is 0 or above [`MAX_WEIGHT`]. No ring was built.
    #[error("member {name:?} has weight {weight}, outside 1..={MAX_WEIGHT}")]
    Weight {
        /// The member's name.
        name: String,
        /// The rejected weight.
        weight: u32,
    },
    /// More than [`MAX_MEMBERS`] members. No ring was built.
    #[error("{count} members exceed the limit of {MAX_MEMBERS}")]
    TooManyMembers {
        /// How many members were given.
        count: usize,
    },
    /// More than [`MAX_VNODES`] virtual nodes in total. No ring was built.
    #[error("{count} virtual nodes exceed the limit of {MAX_VNODES}")]
    TooManyVnodes {
        /// How many virtual nodes the members and config call for.
        count: u64,
    },
}

/// A 64-bit digest of everything a ring is built from: the sorted member names and weights and
/// the [`RingConfig`]. Equal fingerprints mean equal rings (up to XXH3 collisions).
///
/// It is `XXH3_64` (seed 0) of: the bytes `tidings-ring-v3`, `vnodes` (u32 LE),
/// `partition_bits` (one byte), the bounded-load factor in parts per million (u64 LE, 0 when
/// off), the member count (u32 LE), then per member in name order: name length (u32 LE), name
/// bytes, weight (u32 LE). (`ring::tests::the_fingerprint_is_the_documented_digest` pins it.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(pub u64);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// An inclusive range `start..=end` of key hashes (see [`hash_key`]); never wraps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyRange {
    /// First key hash in the range.
    pub start: u64,
    /// Last key hash in the range (inclusive).
    pub end: u64,
}

impl KeyRange {
    /// Whether the hash of `key` ([`hash_key`]) falls in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.contains_hash(hash_key(key))
    }

    /// Whether a key hash falls in the range.
    pub fn contains_hash(&self, hash: u64) -> bool {
        self.start <= hash && hash <= self.end
    }

    /// Number of key hashes in the range (up to 2^64, hence `u128`); 0 for a range built with
    /// `start > end` (the ring never makes one).
    pub fn len(&self) -> u128 {
        if self.is_empty() {
            return 0;
        }
        u128::from(self.end - self.start) + 1
    }

    /// Whether the range holds no hash: only one built with `start > end` (every range the
    /// ring makes holds at least one).
    pub fn is_empty(&self) -> bool {
        self.start > self.end
    }

    /// The partitions (of `2^bits`, bits clamped to 1..=32) that overlap the range, for services
    /// that bucket their keys by [`partition_of_hash`]. The partitions at the two ends may overlap
    /// only in part: check keys there with [`KeyRange::contains_hash`]. Empty for an empty
    /// range.
    pub fn partitions(&self, bits: u8) -> RangeInclusive<u32> {
        if self.is_empty() {
            // An empty inclusive range (start past end), as the signature needs.
            return RangeInclusive::new(1, 0);
        }
        partition_of_hash(self.start, bits)..=partition_of_hash(self.end, bits)
    }
}

/// Key ranges that change owner between two rings, with the other party.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transfer {
    /// The previous owner (in [`Handoff::acquired`]) or the next owner (in
    /// [`Handoff::relinquished`]); `None` when the other ring is empty, or, in an
    /// `Event::Ownership` of a node's ring built over an empty one, when the previous owner held
    /// no ring of its own (design.md, section 6).
    pub peer: Option<String>,
    /// Sorted, disjoint, maximal ranges of key hashes.
    pub ranges: Vec<KeyRange>,
}

impl Transfer {
    /// Whether the hash of `key` falls in one of the ranges (binary search).
    pub fn contains(&self, key: &[u8]) -> bool {
        self.contains_hash(hash_key(key))
    }

    /// Whether a key hash falls in one of the ranges (binary search).
    pub fn contains_hash(&self, hash: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.end < hash);
        self.ranges.get(i).is_some_and(|r| r.contains_hash(hash))
    }

    /// Number of key hashes covered, all ranges together.
    pub fn num_hashes(&self) -> u128 {
        self.ranges.iter().map(KeyRange::len).sum()
    }
}

/// What one member must take over and give away when the ring changes (see [`Ring::handoff`]).
///
/// For two members A and B, the ranges A relinquishes to B are exactly the ranges B acquires from
/// A (the same `Vec<KeyRange>`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Handoff {
    /// Ranges the member owns in the new ring but not in the old one, one entry per previous
    /// owner, sorted by peer (`None` first).
    pub acquired: Vec<Transfer>,
    /// Ranges the member owned in the old ring but not in the new one, one entry per next owner,
    /// sorted by peer (`None` first).
    pub relinquished: Vec<Transfer>,
}

impl Handoff {
    /// Whether nothing changes hands.
    pub fn is_empty(&self) -> bool {
        self.acquired.is_empty() && self.relinquished.is_empty()
    }

    /// The ranges acquired from `peer`, if any.
    pub fn acquired_from(&self, peer: &str) -> Option<&Transfer> {
        self.acquired
            .iter()
            .find(|t| t.peer.as_deref() == Some(peer))
    }

    /// The ranges relinquished to `peer`, if any.
    pub fn relinquished_to(&self, peer: &str) -> Option<&Transfer> {
        self.relinquished
            .iter()
            .find(|t| t.peer.as_deref() == Some(peer))
    }
}

/// A consistent-hash ring over a set of named, weighted members. See the [module docs](self).
///
/// Immutable once built; [`Ring::insert`] and [`Ring::remove`] rebuild it from the new member
/// set, with the same result as [`Ring::new`] on that set.
#[derive(Clone, PartialEq)]
pub struct Ring {
    config: RingConfig,
    /// Member names in byte order; a member's index is its position here.
    names: Vec<Box<str>>,
    /// Weights, parallel to `names`.
    weights: Vec<u32>,
    /// Distinct vnodes in ring order. Read to walk a preference list past the first `ROW`
    /// members and to derive the next ring.
    vnodes: Vnodes,
    /// One row per partition: its owner, then the next members of its preference list. Only
    /// the first `min(ROW, members)` entries are meaningful. Empty when the ring is.
    table: Vec<[u16; ROW]>,
    /// Where each partition's owner stands in its preference list (`assign::BEYOND` past the
    /// row), so that the next rebuild can restore the list's order; empty when the load is
    /// unbounded (every owner is then its partition's first choice).
    ranks: Vec<u8>,
    /// `64 - partition_bits`: a key hash's partition is `hash >> shift`.
    shift: u32,
    fingerprint: Fingerprint,
}

impl Ring {
    /// Builds the ring for `members` (in any order).
    ///
    /// # Errors
    ///
    /// An invalid `config`, a repeated name, a weight outside 1..=[`MAX_WEIGHT`], or too many
    /// members or vnodes.
    pub fn new<I, M>(config: RingConfig, members: I) -> Result<Self, RingError>
    where
        I: IntoIterator<Item = M>,
        M: Into<Member>,
    {
        Self::build(config, member_set(members)?)
    }

    /// An empty ring: every lookup answers `None`.
    ///
    /// # Errors
    ///
    /// An invalid `config`.
    pub fn empty(config: RingConfig) -> Result<Self, RingError> {
        Self::build(config, BTreeMap::new())
    }

    /// A new ring with `member` added (or its weight changed, if the name is present).
    ///
    /// Reuses this ring's sorted vnodes instead of hashing and sorting them again; the result
    /// equals [`Ring::new`] on the new member set.
    ///
    /// # Errors
    ///
    /// A weight outside 1..=[`MAX_WEIGHT`] or too many members or vnodes.
    pub fn with_member(&self, member: impl Into<Member>) -> Result<Self, RingError> {
        let Member { name, weight } = member.into();
        if !(1..=MAX_WEIGHT).contains(&weight) {
            return Err(RingError::Weight { name, weight });
        }
        let r = match self.names.binary_search_by(|n| (**n).cmp(&*name)) {
            Ok(i) if self.weights[i] == weight => return Ok(self.clone()),
            Ok(_) => {
                let mut set = self.member_map();
                set.insert(name, weight);
                return Self::build(self.config.clone(), set);
            }
            Err(r) => r,
        };
        if self.names.len() >= MAX_MEMBERS {
            return Err(RingError::TooManyMembers {
                count: self.names.len() + 1,
            });
        }
        let count = vnode_count(&self.config, weight);
        // Counted as `check_size` counts for `Ring::new`, before duplicate positions are
        // dropped, so that both accept the same member sets.
        let held: u64 = self
            .weights
            .iter()
            .map(|&w| vnode_count(&self.config, w))
            .sum();
        let total = held + count;
        if total > MAX_VNODES as u64 {
            return Err(RingError::TooManyVnodes { count: total });
        }
        let seed = xxh3_64(name.as_bytes());
        let mut added: Vec<u64> = (0..count)
            // i < count <= MAX_VNODES < 2^32; r <= names.len() < MAX_MEMBERS = 2^16.
            .map(|i| u64::from(vnode_position(seed, i as u32)) << 32 | r as u64)
            .collect();
        added.sort_unstable();
        // A member whose two vnodes share a position keeps one of them.
        added.dedup();
        // Members from index r on move up by one.
        let r = r as u64;
        let renumber = |v: u64| v + u64::from(v & MEMBER_MASK >= r);
        let changed = added.iter().map(|&v| position_of(v)).collect();
        let merged = merge_vnodes(self.vnodes.packed().map(renumber), self.vnodes.len(), added);
        let mut names = self.names.clone();
        let mut weights = self.weights.clone();
        // r <= names.len().
        names.insert(r as usize, name.into_boxed_str());
        weights.insert(r as usize, weight);
        // Old indices < names.len() < MAX_MEMBERS, so the new ones fit u16.
        let renumber: Vec<Option<u16>> = (0..self.names.len() as u64)
            .map(|m| Some((m + u64::from(m >= r)) as u16))
            .collect();
        Ok(self.derived(names, weights, merged, &renumber, changed))
    }

    /// A new ring without the member called `name` (a copy of this one if it is absent).
    ///
    /// Reuses this ring's sorted vnodes instead of hashing and sorting them again; the result
    /// equals [`Ring::new`] on the new member set.
    pub fn without_member(&self, name: &str) -> Self {
        let Some(r) = self.member_index(name) else {
            return self.clone();
        };
        let r = u64::from(r);
        // Members after r move down by one.
        let sorted: Vnodes = self
            .vnodes
            .packed()
            .filter(|&v| v & MEMBER_MASK != r)
            .map(|v| v - u64::from(v & MEMBER_MASK > r))
            .collect();
        let mut names = self.names.clone();
        let mut weights = self.weights.clone();
        // r < names.len().
        names.remove(r as usize);
        weights.remove(r as usize);
        let renumber: Vec<Option<u16>> = (0..self.names.len() as u64)
            .map(|m| (m != r).then(|| (m - u64::from(m > r)) as u16))
            .collect();
        let changed = self
            .vnodes
            .packed()
            .filter(|&v| v & MEMBER_MASK == r)
            .map(position_of)
            .collect();
        self.derived(names, weights, sorted, &renumber, changed)
    }

    /// The ring for `members` (in any order) with this ring's config: equal to [`Ring::new`] on
    /// them, but reusing the sorted vnodes of the members that stay with the same weight, so a
    /// few changes at once cost about as much as one [`Ring::with_member`].
    ///
    /// # Errors
    ///
    /// A repeated name, a weight outside 1..=[`MAX_WEIGHT`], or too many members or vnodes.
    pub fn rebuild<I, M>(&self, members: I) -> Result<Self, RingError>
    where
        I: IntoIterator<Item = M>,
        M: Into<Member>,
    {
        let set = member_set(members)?;
        check_size(&self.config, &set)?;
        // New index of each old member that stays with its weight: one merge walk, as both
        // name lists are sorted.
        let mut renumber: Vec<Option<u64>> = vec![None; self.names.len()];
        let mut added = Vec::new();
        let mut j = 0;
        for (i, (name, &weight)) in set.iter().enumerate() {
            while j < self.names.len() && *self.names[j] < **name {
                j += 1;
            }
            if j < self.names.len() && *self.names[j] == **name && self.weights[j] == weight {
                // i < set.len() <= MAX_MEMBERS = 2^16.
                renumber[j] = Some(i as u64);
                continue;
            }
            let seed = xxh3_64(name.as_bytes());
            for v in 0..vnode_count(&self.config, weight) {
                // v < count <= MAX_VNODES < 2^32.
                added.push(u64::from(vnode_position(seed, v as u32)) << 32 | i as u64);
            }
        }
        let kept = self
            .vnodes
            .packed()
            .filter_map(|v| renumber[usize::from(member_of(v))].map(|m| v & !MEMBER_MASK | m));
        added.sort_unstable();
        // A member whose two vnodes share a position keeps one of them.
        added.dedup();
        let changed: Vec<u32> = self
            .vnodes
            .packed()
            .filter(|&v| renumber[usize::from(member_of(v))].is_none())
            .chain(added.iter().copied())
            .map(position_of)
            .collect();
        let merged = merge_vnodes(kept, self.vnodes.len(), added);
        let mut names = Vec::with_capacity(set.len());
        let mut weights = Vec::with_capacity(set.len());
        for (name, weight) in set {
            names.push(name.into_boxed_str());
            weights.push(weight);
        }
        // New indices < set.len() <= MAX_MEMBERS = 2^16.
        let renumber: Vec<Option<u16>> = renumber.iter().map(|m| m.map(|m| m as u16)).collect();
        Ok(self.derived(names, weights, merged, &renumber, changed))
    }

    /// Adds `member` (or changes its weight if the name is present); see
    /// [`Ring::with_member`].
    ///
    /// # Errors
    ///
    /// A weight outside 1..=[`MAX_WEIGHT`] or too many members or vnodes; `self` is unchanged.
    pub fn insert(&mut self, member: impl Into<Member>) -> Result<(), RingError> {
        *self = self.with_member(member)?;
        Ok(())
    }

    /// Removes the member called `name`; returns whether it was present. See
    /// [`Ring::without_member`].
    pub fn remove(&mut self, name: &str) -> bool {
        if !self.contains(name) {
            return false;
        }
        *self = self.without_member(name);
        true
    }

    /// The config the ring was built with.
    pub fn config(&self) -> &RingConfig {
        &self.config
    }

    /// Number of members.
    pub fn num_members(&self) -> usize {
        self.names.len()
    }

    /// Number of distinct virtual nodes, all members together.
    pub fn num_vnodes(&self) -> usize {
        self.vnodes.len()
    }

    /// Number of partitions (`2^partition_bits`); keys are assigned to members a partition at
    /// a time.
    pub fn num_partitions(&self) -> usize {
        1 << (64 - self.shift)
    }

    /// Whether the ring has no members.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Whether a member called `name` is on the ring.
    pub fn contains(&self, name: &str) -> bool {
        self.member_index(name).is_some()
    }

    /// The members and their weights, in name (byte) order.
    pub fn members(&self) -> impl ExactSizeIterator<Item = (&str, u32)> + '_ {
        self.names
            .iter()
            .zip(&self.weights)
            .map(|(name, &weight)| (&**name, weight))
    }

    /// Digest of the member set and config; see [`Fingerprint`].
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Heap bytes held by the ring (vector capacities and names).
    pub fn memory_bytes(&self) -> usize {
        self.vnodes.memory_bytes()
            + self.table.capacity() * size_of::<[u16; ROW]>()
            + self.ranks.capacity()
            + self.weights.capacity() * size_of::<u32>()
            + self.names.capacity() * size_of::<Box<str>>()
            + self.names.iter().map(|n| n.len()).sum::<usize>()
    }

    /// The member that owns `key`, or `None` if the ring is empty.
    #[inline]
    pub fn owner(&self, key: &[u8]) -> Option<&str> {
        self.owner_of_hash(hash_key(key))
    }

    /// The member that owns integer key `key` (hashed by its little-endian bytes, so equal to
    /// `owner(&key.to_le_bytes())`), or `None` if the ring is empty.
    #[inline]
    pub fn owner_u64(&self, key: u64) -> Option<&str> {
        self.owner_of_hash(hash_u64(key))
    }

    /// The member that owns key hash `hash` (see [`hash_key`]), or `None` if the ring is empty.
    #[inline]
    pub fn owner_of_hash(&self, hash: u64) -> Option<&str> {
        let row = self.row(hash)?;
        Some(self.name(row[0]))
    }

    /// Whether `member` owns `key`.
    pub fn is_owner(&self, key: &[u8], member: &str) -> bool {
        self.owner(key) == Some(member)
    }

    /// Up to `n` distinct members for `key`: the owner, then the rest of its partition's
    /// preference list (the members met walking clockwise from the partition's point; see the
    /// module docs). Yields `min(n, num_members())` names; does not allocate.
    ///
    /// The first 4 come from the partition's row of the table (one memory access). Past that,
    /// the iterator walks the vnodes and checks that a member is new by re-walking, so asking
    /// for most of a large ring costs quadratic time.
    #[inline]
    pub fn owners(&self, key: &[u8], n: usize) -> Owners<'_> {
        self.owners_of_hash(hash_key(key), n)
    }

    /// [`Ring::owners`] for an integer key hashed as in [`Ring::owner_u64`].
    #[inline]
    pub fn owners_u64(&self, key: u64, n: usize) -> Owners<'_> {
        self.owners_of_hash(hash_u64(key), n)
    }

    /// [`Ring::owners`] for a key hash.
    #[inline]
    pub fn owners_of_hash(&self, hash: u64, n: usize) -> Owners<'_> {
        let (row, wanted) = match self.row(hash) {
            Some(&row) => (row, n.min(self.names.len())),
            None => ([0; ROW], 0),
        };
        Owners {
            ring: self,
            row,
            hash,
            walk: None,
            num_yielded: 0,
            wanted,
        }
    }

    /// Groups `keys` by owner (name order); empty if the ring is empty.
    pub fn partition<K, I>(&self, keys: I) -> BTreeMap<&str, Vec<K>>
    where
        K: AsRef<[u8]>,
        I: IntoIterator<Item = K>,
    {
        let mut by_index: BTreeMap<u16, Vec<K>> = BTreeMap::new();
        for key in keys {
            if let Some(row) = self.row(hash_key(key.as_ref())) {
                by_index.entry(row[0]).or_default().push(key);
            }
        }
        by_index
            .into_iter()
            .map(|(m, keys)| (self.name(m), keys))
            .collect()
    }

    /// The sorted, disjoint, maximal ranges of key hashes that `member` owns (empty if absent).
    pub fn ranges(&self, member: &str) -> Vec<KeyRange> {
        let mut out = Vec::new();
        let Some(m) = self.member_index(member) else {
            return out;
        };
        for (range, owner) in self.arcs() {
            if owner == m {
                push_range(&mut out, range);
            }
        }
        out
    }

    /// Share of the hash space each member owns, in name order (sums to 1; empty if the ring is).
    pub fn shares(&self) -> Vec<(&str, f64)> {
        let mut owned = vec![0usize; self.names.len()];
        for row in &self.table {
            owned[usize::from(row[0])] += 1;
        }
        let total = self.table.len() as f64;
        self.names
            .iter()
            .zip(owned)
            .map(|(name, n)| (&**name, n as f64 / total))
            .collect()
    }

    fn build(config: RingConfig, set: BTreeMap<String, u32>) -> Result<Self, RingError> {
        config.validate()?;
        // total <= MAX_VNODES = 2^28.
        let total = check_size(&config, &set)? as usize;
        let counts: Vec<u64> = set.values().map(|&w| vnode_count(&config, w)).collect();

        // Positions in generation order, counted per bucket of the top SORT_BITS bits.
        let buckets = 1usize << SORT_BITS;
        let mut positions = Vec::with_capacity(total);
        let mut start = vec![0u32; buckets + 1];
        for (name, &count) in set.keys().zip(&counts) {
            let seed = xxh3_64(name.as_bytes());
            for i in 0..count {
                // i < count <= MAX_VNODES < 2^32.
                let position = vnode_position(seed, i as u32);
                positions.push(position);
                start[(position >> (32 - SORT_BITS)) as usize + 1] += 1;
            }
        }
        for b in 0..buckets {
            start[b + 1] += start[b];
        }

        // Counting sort by bucket, then sort each (small) bucket: vnodes in ring order.
        let mut next: Vec<u32> = start[..buckets].to_vec();
        let mut sorted = vec![0u64; total];
        let mut generated = positions.iter();
        for (m, &count) in counts.iter().enumerate() {
            // count fits usize: total does; m < MAX_MEMBERS = 2^16.
            for &position in generated.by_ref().take(count as usize) {
                let b = (position >> (32 - SORT_BITS)) as usize;
                sorted[next[b] as usize] = u64::from(position) << 32 | m as u64;
                next[b] += 1;
            }
        }
        drop(next);
        drop(positions);
        for b in 0..buckets {
            sort_bucket(&mut sorted[start[b] as usize..start[b + 1] as usize]);
        }
        drop(start);
        // A member whose two vnodes share a position keeps one of them.
        sorted.dedup();

        let mut names = Vec::with_capacity(set.len());
        let mut weights = Vec::with_capacity(set.len());
        for (name, weight) in set {
            names.push(name.into_boxed_str());
            weights.push(weight);
        }
        Ok(Self::finish(
            config,
            names,
            weights,
            sorted.into_iter().collect(),
            None,
        ))
    }

    /// The ring for `names`, `weights` and `vnodes` derived from this one: its preference rows,
    /// renumbered by `renumber` (new index of each of its members, `None` for one gone), are
    /// patched around the vnodes at `changed` (positions that came or went).
    fn derived(
        &self,
        names: Vec<Box<str>>,
        weights: Vec<u32>,
        vnodes: Vnodes,
        renumber: &[Option<u16>],
        changed: Vec<u32>,
    ) -> Self {
        let previous = Previous {
            table: &self.table,
            ranks: &self.ranks,
            members: self.names.len(),
            renumber,
            changed,
        };
        Self::finish(self.config.clone(), names, weights, vnodes, Some(previous))
    }

    /// Completes a ring from its members and their distinct vnodes `sorted` in ring order:
    /// assigns the partitions.
    fn finish(
        config: RingConfig,
        names: Vec<Box<str>>,
        weights: Vec<u32>,
        sorted: Vnodes,
        previous: Option<Previous<'_>>,
    ) -> Self {
        let (table, ranks) = if names.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            let assignment = assign_partitions(&config, &sorted, &names, &weights, previous);
            (assignment.table, assignment.ranks)
        };
        let fingerprint = fingerprint(
            &config,
            names.iter().map(|n| &**n).zip(weights.iter().copied()),
        );
        Self {
            shift: 64 - u32::from(config.partition_bits),
            config,
            names,
            weights,
            vnodes: sorted,
            table,
            ranks,
            fingerprint,
        }
    }

    /// The table row of the partition holding `hash`, or `None` if the ring is empty.
    #[inline]
    fn row(&self, hash: u64) -> Option<&[u16; ROW]> {
        // shift >= 64 - MAX_PARTITION_BITS, so the index fits usize and is below table.len()
        // whenever the table is not empty.
        self.table.get((hash >> self.shift) as usize)
    }

    #[inline]
    fn name(&self, m: u16) -> &str {
        &self.names[usize::from(m)]
    }

    fn member_index(&self, name: &str) -> Option<u16> {
        // names.len() <= MAX_MEMBERS = 2^16, so positions fit in u16.
        self.names
            .binary_search_by(|n| (**n).cmp(name))
            .ok()
            .map(|i| i as u16)
    }

    fn member_map(&self) -> BTreeMap<String, u32> {
        self.members()
            .map(|(name, weight)| (name.to_owned(), weight))
            .collect()
    }

    /// The ring as `(range of key hashes, owner)` covering the whole hash space, in hash order,
    /// one entry per run of partitions with the same owner (nothing if the ring is empty).
    fn arcs(&self) -> impl Iterator<Item = (KeyRange, u16)> + '_ {
        let shift = self.shift;
        let mut p = 0usize;
        std::iter::from_fn(move || {
            let owner = self.table.get(p)?[0];
            let first = p;
            while self.table.get(p).is_some_and(|row| row[0] == owner) {
                p += 1;
            }
            // p <= table.len() = 2^bits. For the last run, p << shift = 2^64 shifts out to 0,
            // and 0 - 1 wraps to u64::MAX, the end of the hash space.
            let range = KeyRange {
                start: (first as u64) << shift,
                end: ((p as u64) << shift).wrapping_sub(1),
            };
            Some((range, owner))
        })
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("members", &self.names.len())
            .field("vnodes", &self.vnodes.len())
            .field("partitions", &self.table.len())
            .field("config", &self.config)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

/// Iterator over the distinct members for a key; see [`Ring::owners`]. Does not allocate.
#[derive(Clone, Debug)]
pub struct Owners<'a> {
    ring: &'a Ring,
    /// The key's partition row: owner first.
    row: [u16; ROW],
    /// The key's hash, to find its partition's point when the walk starts.
    hash: u64,
    /// The walk outward from the partition's point, once past the row.
    walk: Option<Outward>,
    num_yielded: usize,
    /// Members to yield in all.
    wanted: usize,
}

impl Owners<'_> {
    /// Walks on to the next vnode of a member not yielded yet and returns that member.
    fn find_next(&mut self) -> Option<u16> {
        let Vnodes { positions, members } = &self.ring.vnodes;
        let len = positions.len();
        let at = |i: usize| positions[i];
        let walk = self.walk.get_or_insert_with(|| {
            let point = partition_point_position(self.hash, self.ring.shift);
            let s = positions.partition_point(|&p| p < point);
            Outward::new(len, if s == len { 0 } else { s }, point)
        });
        loop {
            let before = *walk;
            let (i, _) = walk.next(at, len)?;
            let m = members[i];
            // Yielded already: in the row, or met earlier in the walk.
            let seen = self.row.contains(&m) || before.taken(len).any(|j| members[j] == m);
            if !seen {
                return Some(m);
            }
        }
    }
}

impl<'a> Iterator for Owners<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        if self.num_yielded >= self.wanted {
            return None;
        }
        let m = if self.num_yielded < ROW {
            self.row[self.num_yielded]
        } else {
            let Some(m) = self.find_next() else {
                // Unreachable: every member has a vnode, so a full turn meets them all.
                self.wanted = self.num_yielded;
                return None;
            };
            m
        };
        self.num_yielded += 1;
        Some(self.ring.name(m))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.wanted - self.num_yielded;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Owners<'_> {}

/// The hash of `key`: XXH3-64 (seed 0) of its bytes. Its top `partition_bits` bits are its
/// partition.
#[inline]
pub fn hash_key(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// The hash of integer key `key`: XXH3-64 (seed 0) of its 8 little-endian bytes.
#[inline]
pub fn hash_u64(key: u64) -> u64 {
    xxh3_64(&key.to_le_bytes())
}

/// The token of vnode `vnode` of member `name`: XXH3-64 of `vnode` as 4 little-endian bytes,
/// seeded with XXH3-64 (seed 0) of the name's UTF-8 bytes. The vnode's ring position is its top
/// 32 bits.
pub fn vnode_token(name: &str, vnode: u32) -> u64 {
    xxh3_64_with_seed(&vnode.to_le_bytes(), xxh3_64(name.as_bytes()))
}

/// The partition (of `2^bits`, bits clamped to 1..=32) that a key hash falls in: its top `bits`
/// bits. With `bits` = the ring's `partition_bits`, this is the partition a [`Ring`] assigns
/// the key by.
pub fn partition_of_hash(hash: u64, bits: u8) -> u32 {
    let bits = u32::from(bits.clamp(1, 32));
    (hash >> (64 - bits)) as u32
}

impl Ring {
    /// The fingerprint [`Ring::new`] gives `members`, without building the ring: `None` where
    /// it would refuse them (the config aside).
    pub(crate) fn fingerprint_of(config: &RingConfig, members: &[Member]) -> Option<Fingerprint> {
        let set = member_set(members.iter().cloned()).ok()?;
        check_size(config, &set).ok()?;
        Some(fingerprint(
            config,
            set.iter().map(|(n, &w)| (n.as_str(), w)),
        ))
    }
}

/// The 32-bit ring position of the first hash of the partition holding `hash`.
#[inline]
fn partition_point_position(hash: u64, shift: u32) -> u32 {
    ((hash >> shift << shift) >> 32) as u32
}

fn fingerprint<'a>(
    config: &RingConfig,
    members: impl ExactSizeIterator<Item = (&'a str, u32)>,
) -> Fingerprint {
    let mut buf = Vec::with_capacity(64 + members.len() * 24);
    buf.extend_from_slice(b"tidings-ring-v3");
    buf.extend_from_slice(&config.vnodes.get().to_le_bytes());
    buf.push(config.partition_bits);
    buf.extend_from_slice(&config.load_ppm().to_le_bytes());
    // Counts and lengths fit u32 (MAX_MEMBERS; names longer than 4 GiB would only weaken the
    // digest, never break determinism).
    buf.extend_from_slice(&(members.len() as u32).to_le_bytes());
    for (name, weight) in members {
        buf.extend_from_slice(&(name.len() as u32).to_le_bytes());
        buf.extend_from_slice(name.as_bytes());
        buf.extend_from_slice(&weight.to_le_bytes());
    }
    Fingerprint(xxh3_64(&buf))
}

/// The vnodes `kept` (in ring order, at most `kept_len`) and `added` (sorted) together, in
/// ring order.
fn merge_vnodes(kept: impl Iterator<Item = u64>, kept_len: usize, added: Vec<u64>) -> Vnodes {
    let mut kept = kept.peekable();
    let mut merged = Vnodes::with_capacity(kept_len + added.len());
    for a in added {
        while let Some(v) = kept.next_if(|&v| v < a) {
            merged.push(v);
        }
        merged.push(a);
    }
    for v in kept {
        merged.push(v);
    }
    merged
}

/// Members by name, refusing a weight outside 1..=[`MAX_WEIGHT`] and a repeated name.
fn member_set<I, M>(members: I) -> Result<BTreeMap<String, u32>, RingError>
where
    I: IntoIterator<Item = M>,
    M: Into<Member>,
{
    let mut set = BTreeMap::new();
    for member in members {
        let Member { name, weight } = member.into();
        if !(1..=MAX_WEIGHT).contains(&weight) {
            return Err(RingError::Weight { name, weight });
        }
        if set.contains_key(&name) {
            return Err(RingError::DuplicateMember { name });
        }
        set.insert(name, weight);
    }
    Ok(set)
}

/// Refuses more than [`MAX_MEMBERS`] members or [`MAX_VNODES`] vnodes; returns the vnodes.
fn check_size(config: &RingConfig, set: &BTreeMap<String, u32>) -> Result<u64, RingError> {
    if set.len() > MAX_MEMBERS {
        return Err(RingError::TooManyMembers { count: set.len() });
    }
    let count: u64 = set.values().map(|&w| vnode_count(config, w)).sum();
    if count > MAX_VNODES as u64 {
        return Err(RingError::TooManyVnodes { count });
    }
    Ok(count)
}

/// Number of vnodes of a member of weight `weight`: `max(1, round(vnodes * weight / 100))`.
fn vnode_count(config: &RingConfig, weight: u32) -> u64 {
    ((u64::from(config.vnodes.get()) * u64::from(weight) + 50) / 100).max(1)
}

/// Ring position of vnode `i` of the member whose name hashes to `seed`.
#[inline]
fn vnode_position(seed: u64, i: u32) -> u32 {
    (xxh3_64_with_seed(&i.to_le_bytes(), seed) >> 32) as u32
}

/// Sorts a bucket in place. Buckets hold a handful of vnodes at ordinary settings, which
/// insertion sort does fastest; the most vnodes validation allows put hundreds in each, where
/// its quadratic cost made `Ring::new` twice as slow as `Ring::rebuild`.
fn sort_bucket(v: &mut [u64]) {
    if v.len() > 32 {
        v.sort_unstable();
        return;
    }
    for i in 1..v.len() {
        let x = v[i];
        let mut j = i;
        while j > 0 && v[j - 1] > x {
            v[j] = v[j - 1];
            j -= 1;
        }
        v[j] = x;
    }
}

/// The distinct vnodes of a ring in ring order: by position, then by member index at one
/// position. Kept as two arrays, 6 bytes a vnode (a packed `u64` would take 8, and the 2 MiB
/// this saves at 1,000 members keeps the ring within 4 MiB at 2^18 partitions).
#[derive(Clone, Debug, Default, PartialEq)]
struct Vnodes {
    positions: Vec<u32>,
    members: Vec<u16>,
}

impl Vnodes {
    fn with_capacity(n: usize) -> Self {
        Self {
            positions: Vec::with_capacity(n),
            members: Vec::with_capacity(n),
        }
    }

    #[inline]
    fn push(&mut self, packed: u64) {
        self.positions.push(position_of(packed));
        self.members.push(member_of(packed));
    }

    #[inline]
    fn len(&self) -> usize {
        self.positions.len()
    }

    /// The vnodes as `position << 32 | member`, in ring order.
    fn packed(&self) -> impl Iterator<Item = u64> + '_ {
        self.positions
            .iter()
            .zip(&self.members)
            .map(|(&p, &m)| u64::from(p) << 32 | u64::from(m))
    }

    fn memory_bytes(&self) -> usize {
        self.positions.capacity() * size_of::<u32>() + self.members.capacity() * size_of::<u16>()
    }
}

impl FromIterator<u64> for Vnodes {
    fn from_iter<I: IntoIterator<Item = u64>>(packed: I) -> Self {
        let packed = packed.into_iter();
        let mut vnodes = Self::with_capacity(packed.size_hint().0);
        for v in packed {
            vnodes.push(v);
        }
        vnodes
    }
}

/// The ring position of a packed vnode.
#[inline]
fn position_of(vnode: u64) -> u32 {
    (vnode >> 32) as u32
}

/// The member of a packed vnode.
#[inline]
fn member_of(vnode: u64) -> u16 {
    (vnode & MEMBER_MASK) as u16
}

const MEMBER_MASK: u64 = 0xffff;
/// Members per table row: the owner and 3 more, so that `owners(key, n)` for n <= 4 reads one
/// 8-byte row.
const ROW: usize = 4;
/// Bits of the position used for the counting sort in `build`.
const SORT_BITS: u32 = 16;

#[cfg(test)]
mod tests;
