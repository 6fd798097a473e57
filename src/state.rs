//! One node's versioned key-value state, as held by its owner or by any peer.
//!
//! Invariants (design.md, "Invariants"):
//! - only the owner writes; each write takes the next version, so versions only grow;
//! - every entry (live or tombstone) is stored once, by version, in `by_version`, and `keys`
//!   maps each key to its entry's version (gossip reads entries in version order, readers by
//!   key; storing by version makes the former a plain range scan);
//! - `max_version` is at least every entry's version; `gc_version` only grows, except that a
//!   reset taken sets the sender's (lower only when the reset still reaches ours, so the
//!   copy is whole above it);
//! - a tombstone with version `v` is only purged after the grace period, and purging it raises
//!   `gc_version` to at least `v`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::event::KeyEvents;
use crate::id::{Heartbeat, NodeId, Version};
use crate::wire::{KeyEntry, NodeDelta};

/// Keys with this prefix are reserved for tidings (readiness, leave, ring weight, the ring a
/// node holds, its gossip interval). Users cannot set them directly; [`NodeState::iter`] hides them.
pub const RESERVED_PREFIX: &str = "tidings:";
pub(crate) const KEY_READY: &str = "tidings:ready";
pub(crate) const KEY_LEFT: &str = "tidings:left";
/// Well-known key holding a member's ring weight as a decimal number (default 1).
pub const KEY_WEIGHT: &str = "tidings:weight";
/// The fingerprints of the ring a node held before its last ring change and of the one it
/// holds now, and its heartbeat when it took that one, each as 8 big-endian bytes (design.md,
/// section 6: a node whose ring was empty reads them to name who held what it acquires).
/// Binary, not hex: every node rewrites the key at each ring change, so a join sends N of them
/// to every node, several times over.
pub(crate) const KEY_RING: &str = "tidings:ring";
/// The node's gossip interval in nanoseconds, as a decimal, written once at start: observers
/// date its heartbeats and set its detector's prior at its pace, not theirs (design.md 4.1).
pub(crate) const KEY_INTERVAL: &str = "tidings:interval";

/// The reserved keys a node writes itself; none counts against the user's limits.
const RESERVED_KEYS: [&str; 5] = [KEY_LEFT, KEY_READY, KEY_WEIGHT, KEY_RING, KEY_INTERVAL];
/// Longest reserved key a peer's delta may carry (ours are at most 16 bytes).
pub(crate) const RESERVED_KEY_MAX: usize = 32;
/// Longest value of a reserved key: "0"/"1" for readiness and the leave, a weight's decimal
/// (at most 20 characters between 0.01 and 100), two ring fingerprints and a heartbeat (24
/// bytes), an interval's nanoseconds (at most 17 digits up to 365 days). Nodes
/// of older versions allow no more, so it cannot grow.
pub(crate) const RESERVED_VALUE_MAX: usize = 32;
/// Room every limit leaves for reserved keys, on top of the user's: twice the keys this
/// version writes, each at the longest a peer's delta may carry. The spare half is for later
/// versions: a peer's reserved keys this version does not know are held and relayed like its
/// own, and without room for them a node would refuse, whole, the state of a newer peer whose
/// user keys are at the limit (what a version with one reserved key fewer does to this one's:
/// design.md 10, "Rolling changes").
pub(crate) const RESERVED_ROOM_KEYS: usize = 2 * RESERVED_KEYS.len();
pub(crate) const RESERVED_ROOM_BYTES: usize =
    RESERVED_ROOM_KEYS * (RESERVED_KEY_MAX + RESERVED_VALUE_MAX);

/// A node's ring as it gossips it (`KEY_RING`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RingKey {
    /// The fingerprint of the ring it held before its last ring change.
    pub(crate) prev: u64,
    /// The fingerprint of the ring it holds.
    pub(crate) cur: u64,
    /// Its own heartbeat when it took the ring it holds.
    pub(crate) taken_at: u64,
}

impl RingKey {
    /// The key's value.
    pub(crate) fn encode(&self) -> Bytes {
        let mut v = Vec::with_capacity(24);
        for word in [self.prev, self.cur, self.taken_at] {
            v.extend_from_slice(&word.to_be_bytes());
        }
        Bytes::from(v)
    }

    /// Reads a key's value: `None` unless it is exactly 24 bytes.
    pub(crate) fn decode(value: &[u8]) -> Option<Self> {
        let v: &[u8; 24] = value.try_into().ok()?;
        let word = |i: usize| v[i..i + 8].try_into().ok().map(u64::from_be_bytes);
        Some(Self {
            prev: word(0)?,
            cur: word(8)?,
            taken_at: word(16)?,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    /// `None` is a tombstone.
    pub(crate) value: Option<Bytes>,
    pub(crate) version: u64,
    /// For tombstones: the local time it was written or learned; purged after the grace.
    pub(crate) dead_since: Option<Instant>,
    /// Owner only: when this value turns into a tombstone.
    pub(crate) expires_at: Option<Instant>,
}

/// The highest version `NodeState::rebase` moves a state to: a peer's copy claiming more is
/// a forgery, and following it would leave the node no versions to write with.
pub(crate) const MAX_REBASE_VERSION: u64 = 1 << 48;

/// A node's state as known locally: identity, heartbeat and versioned keys.
// `repr(C)` with the heartbeat last: a peer's record puts its failure detector right after it
// (see `node::Peer`), and learning a heartbeat touches both.
#[derive(Clone)]
#[repr(C)]
pub struct NodeState {
    id: NodeId,
    max_version: u64,
    gc_version: u64,
    /// Key -> version of its entry in `by_version`. The two maps share each key's one
    /// allocation: a peer's state is mostly written by applying deltas, a key at a time.
    keys: BTreeMap<Arc<str>, u64>,
    by_version: ByVersion,
    bytes: usize,
    /// Entries that are tombstones, and owned entries with a TTL: garbage collection scans
    /// the state only when there is something to find.
    /// (Counts of entries, at most `max_keys_per_node`: 32 bits keep the record at 168 bytes
    /// with `cut_heartbeat`.)
    tombstones: u32,
    ttls: u32,
    /// The heartbeat of the last reset taken: the sender held the node at this heartbeat, so
    /// every deletion up to the reset's `gc_version` happened at or before it. Only the
    /// owner's deltas built after it are known to hold those deletions (see `apply_from`).
    cut_heartbeat: u64,
    heartbeat: u64,
}

/// What a user reads: the identity, heartbeat, highest version and the live user keys (the
/// derived form printed the version index and garbage-collection counters).
impl std::fmt::Debug for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        struct Keys<'a>(&'a NodeState);
        impl std::fmt::Debug for Keys<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_map().entries(self.0.iter()).finish()
            }
        }
        f.debug_struct("NodeState")
            .field("id", &self.id)
            .field("heartbeat", &self.heartbeat)
            .field("max_version", &self.max_version)
            .field("keys", &Keys(self))
            .finish()
    }
}

/// A change a delta made to the user-visible keys of a node.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum KeyChange {
    Upserted(String, Bytes),
    Deleted(String),
}

/// Why a peer's node delta was not applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// It builds on a version this node does not have yet.
    Gap,
    /// It is no newer than what this node holds.
    Stale,
    /// It breaks the protocol (versions out of order or beyond the claim) or a limit.
    Invalid,
}

/// Local limits that bound what a delta may make this node store: the user's, for keys
/// without the reserved prefix; reserved keys have `RESERVED_ROOM_KEYS` and
/// `RESERVED_ROOM_BYTES` of their own.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ApplyLimits {
    pub(crate) max_key_len: usize,
    pub(crate) max_value_len: usize,
    pub(crate) max_keys: usize,
    pub(crate) max_bytes: usize,
}

/// Entries (live or tombstoned) and bytes of keys and values, counted apart for user keys
/// and reserved ones, as the limits count them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) keys: usize,
    pub(crate) bytes: usize,
    pub(crate) reserved_keys: usize,
    pub(crate) reserved_bytes: usize,
}

impl Usage {
    /// Counts one more entry of `key` holding `value_len` bytes (0 for a tombstone).
    fn add(&mut self, key: &str, value_len: usize) {
        let (keys, bytes) = self.counts(key);
        *keys += 1;
        *bytes = bytes.saturating_add(key.len() + value_len);
    }

    /// Counts one entry fewer.
    fn remove(&mut self, key: &str, value_len: usize) {
        let (keys, bytes) = self.counts(key);
        *keys = keys.saturating_sub(1);
        *bytes = bytes.saturating_sub(key.len() + value_len);
    }

    fn counts(&mut self, key: &str) -> (&mut usize, &mut usize) {
        if key.starts_with(RESERVED_PREFIX) {
            (&mut self.reserved_keys, &mut self.reserved_bytes)
        } else {
            (&mut self.keys, &mut self.bytes)
        }
    }

    fn within(&self, limits: ApplyLimits) -> bool {
        self.keys <= limits.max_keys
            && self.bytes <= limits.max_bytes
            && self.reserved_keys <= RESERVED_ROOM_KEYS
            && self.reserved_bytes <= RESERVED_ROOM_BYTES
    }
}

impl NodeState {
    pub(crate) fn new(id: NodeId) -> Self {
        Self {
            id,
            heartbeat: 0,
            cut_heartbeat: 0,
            max_version: 0,
            gc_version: 0,
            keys: BTreeMap::new(),
            by_version: ByVersion::default(),
            bytes: 0,
            tombstones: 0,
            ttls: 0,
        }
    }

    /// The node this state belongs to.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// The newest heartbeat known for the node.
    pub fn heartbeat(&self) -> Heartbeat {
        Heartbeat(self.heartbeat)
    }

    /// The highest version of the node's state known here.
    pub fn max_version(&self) -> Version {
        Version(self.max_version)
    }

    /// Versions at or below this have had their tombstones purged.
    pub fn gc_version(&self) -> Version {
        Version(self.gc_version)
    }

    /// The live value of `key`, if any (reserved keys included).
    pub fn get(&self, key: &str) -> Option<&Bytes> {
        self.entry(key).and_then(|e| e.value.as_ref())
    }

    fn entry(&self, key: &str) -> Option<&Entry> {
        let v = self.keys.get(key)?;
        self.by_version.get(v).map(|(_, e)| e)
    }

    /// The live value of `key` as UTF-8, if it is.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The version of `key`'s entry, live or deleted.
    pub fn version_of(&self, key: &str) -> Option<Version> {
        self.keys.get(key).map(|v| Version(*v))
    }

    /// Live user keys and values, in key order (reserved `tidings:` keys are skipped).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Bytes)> + '_ {
        self.keys.iter().filter_map(|(k, v)| {
            let (_, e) = self.by_version.get(v)?;
            match &e.value {
                Some(v) if !k.starts_with(RESERVED_PREFIX) => Some((&**k, v)),
                _ => None,
            }
        })
    }

    /// Number of live user keys.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether the node holds no live user key.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Whether the node has marked itself ready (the default unless it said otherwise).
    pub fn is_ready(&self) -> bool {
        self.get(KEY_READY).is_none_or(|v| v.as_ref() != b"0")
    }

    /// What the node gossips of its ring (`KEY_RING`): the fingerprints of the ring it held
    /// before its last ring change and of the one it holds, and its heartbeat when it took
    /// that one; `None` without the key or with a value of another length than 24 bytes.
    pub(crate) fn ring_key(&self) -> Option<RingKey> {
        RingKey::decode(self.get(KEY_RING)?)
    }

    /// The gossip interval the node says it beats at (`KEY_INTERVAL`); `None` without the key
    /// (a version before it) or with a value that is not a positive whole number of
    /// nanoseconds up to `MAX_DURATION`.
    pub(crate) fn interval(&self) -> Option<Duration> {
        let ns: u64 = self.get_str(KEY_INTERVAL)?.parse().ok()?;
        Some(Duration::from_nanos(ns)).filter(|d| !d.is_zero() && *d <= crate::config::MAX_DURATION)
    }

    /// Whether the node has announced a graceful leave.
    pub fn has_left(&self) -> bool {
        self.get(KEY_LEFT).is_some()
    }

    /// Bytes of keys and values held, tombstone keys included.
    pub fn size_bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn has_tombstones(&self) -> bool {
        self.tombstones > 0
    }

    pub(crate) fn num_entries(&self) -> usize {
        self.keys.len()
    }

    /// What the state holds as the limits count it: reserved keys (this version's and any a
    /// peer of a later one has) apart from the user's. Reserved keys sort together (one
    /// prefix), so only they are visited.
    pub(crate) fn usage(&self) -> Usage {
        let mut u = Usage::default();
        for (k, _) in self
            .keys
            .range::<str, _>((Bound::Included(RESERVED_PREFIX), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(RESERVED_PREFIX))
        {
            u.add(k, self.get(k).map_or(0, Bytes::len));
        }
        u.keys = self.keys.len().saturating_sub(u.reserved_keys);
        u.bytes = self.bytes.saturating_sub(u.reserved_bytes);
        u
    }

    pub(crate) fn set_heartbeat(&mut self, hb: u64) -> bool {
        if hb > self.heartbeat {
            self.heartbeat = hb;
            true
        } else {
            false
        }
    }

    /// Owner write. Returns the new version, or `None` if nothing changed (same value, same
    /// TTL-lessness).
    pub(crate) fn set_local(
        &mut self,
        key: &str,
        value: Bytes,
        expires_at: Option<Instant>,
    ) -> Option<u64> {
        if let Some(v) = self.keys.get(key)
            && let Some((_, e)) = self.by_version.get_mut(v)
            && e.value.as_ref() == Some(&value)
        {
            if e.expires_at == expires_at {
                return None;
            }
            // Same value, new TTL: only the local timer changes; peers see the same data.
            self.ttls =
                self.ttls + u32::from(expires_at.is_some()) - u32::from(e.expires_at.is_some());
            e.expires_at = expires_at;
            return None;
        }
        let version = self.max_version + 1;
        self.put(key, value.into(), version, None, expires_at);
        self.max_version = version;
        Some(version)
    }

    /// Owner delete: writes a tombstone with a new version if the key is live.
    pub(crate) fn delete_local(&mut self, key: &str, now: Instant) -> Option<u64> {
        match self.entry(key) {
            Some(e) if e.value.is_some() => {}
            _ => return None,
        }
        let version = self.max_version + 1;
        self.put(key, None, version, Some(now), None);
        self.max_version = version;
        Some(version)
    }

    /// Owner only: moves every live key to new versions above `past` (and above what this
    /// state holds), in their present order, and marks every version up to the last of them
    /// purged (`gc_version` = `max_version`): a peer holding any copy below that then takes a
    /// reset, which drops keys this state does not hold. (With the purge mark just below the
    /// new versions, a copy of a previous run that reached into them was sent a plain delta
    /// and kept that run's keys for good: found by review.) Tombstones go (the reset carries
    /// their deletions). Used when peers hold a previous run's copy under this node's
    /// identity. Returns the new `gc_version`, or `None` (nothing changed) if the versions
    /// would pass `MAX_REBASE_VERSION`.
    pub(crate) fn rebase(&mut self, past: u64) -> Option<u64> {
        let live = self.keys.len() as u64 - u64::from(self.tombstones);
        let base = past.max(self.max_version).checked_add(1)?;
        let top = base.checked_add(live)?;
        if top > MAX_REBASE_VERSION {
            return None;
        }
        let entries: Vec<Keyed> = std::mem::take(&mut self.by_version)
            .into_values()
            .filter(|(_, e)| e.value.is_some())
            .collect();
        self.keys.clear();
        self.bytes = 0;
        self.tombstones = 0;
        self.ttls = 0;
        self.by_version.reserve(entries.len());
        for (v, (k, e)) in (base + 1..).zip(entries) {
            self.insert(k, e.value, v, None, e.expires_at);
        }
        self.gc_version = top;
        self.max_version = top;
        Some(top)
    }

    /// Owner only: turns values whose TTL has passed into tombstones. Returns the keys.
    pub(crate) fn expire_ttls(&mut self, now: Instant) -> Vec<String> {
        if self.ttls == 0 {
            return Vec::new();
        }
        let due: Vec<String> = self
            .by_version
            .values()
            .filter(|(_, e)| e.value.is_some() && e.expires_at.is_some_and(|t| t <= now))
            .map(|(k, _)| k.to_string())
            .collect();
        for k in &due {
            self.delete_local(k, now);
        }
        due
    }

    /// Purges tombstones older than `grace`, raising `gc_version`. Returns how many.
    pub(crate) fn purge_tombstones(&mut self, now: Instant, grace: Duration) -> usize {
        if self.tombstones == 0 {
            return 0;
        }
        let due: Vec<(Arc<str>, u64)> = self
            .by_version
            .values()
            .filter(|(_, e)| {
                e.dead_since
                    .is_some_and(|t| now.saturating_duration_since(t) >= grace)
            })
            .map(|(k, e)| (k.clone(), e.version))
            .collect();
        for (k, v) in &due {
            self.remove(k);
            self.gc_version = self.gc_version.max(*v);
        }
        due.len()
    }

    /// Entries with a version above `after`, in version order.
    pub(crate) fn entries_after(
        &self,
        after: u64,
    ) -> impl Iterator<Item = (&Arc<str>, &Entry)> + '_ {
        self.by_version.after(after)
    }

    /// The checks of a delta that need no state: versions ascending within
    /// `(from_version, max_version]`, keys and values within their limits, each key once, and
    /// a reset starting at 0. A node runs them before a delta can introduce a peer too, so a
    /// malformed one changes nothing at all.
    pub(crate) fn check_delta(delta: &NodeDelta, limits: ApplyLimits) -> Result<(), Rejected> {
        let mut prev = delta.from_version;
        let mut usage = Usage::default();
        for e in &delta.entries {
            if e.version <= prev || e.version > delta.max_version {
                return Err(Rejected::Invalid);
            }
            // Reserved keys have their own bounds: limits set below them would otherwise
            // refuse every peer that is not ready or has a weight.
            let (max_key_len, max_value_len) = if e.key.starts_with(RESERVED_PREFIX) {
                (
                    limits.max_key_len.max(RESERVED_KEY_MAX),
                    limits.max_value_len.max(RESERVED_VALUE_MAX),
                )
            } else {
                (limits.max_key_len, limits.max_value_len)
            };
            let value_len = e.value.as_ref().map_or(0, Bytes::len);
            if e.key.len() > max_key_len || value_len > max_value_len {
                return Err(Rejected::Invalid);
            }
            usage.add(&e.key, value_len);
            prev = e.version;
        }
        // A reset is the whole state: over a limit, it is refused here, before it can
        // introduce the node (and replace an incarnation held) or change anything else.
        if delta.reset && !usage.within(limits) {
            return Err(Rejected::Invalid);
        }
        // A reset is the whole state, from version 0: one from later would set `max_version`
        // past versions it does not carry, a gap nothing would ever ask for again.
        if delta.from_version > delta.max_version || (delta.reset && delta.from_version != 0) {
            return Err(Rejected::Invalid);
        }
        if delta.entries.len() > 1 {
            // An honest sender names each key once (one entry per key, newest version); a
            // repeated key would break the key and byte accounting of `apply`.
            let mut keys: Vec<&str> = delta.entries.iter().map(|e| &*e.key).collect();
            keys.sort_unstable();
            if keys.windows(2).any(|w| w[0] == w[1]) {
                return Err(Rejected::Invalid);
            }
        }
        Ok(())
    }

    /// Applies a peer's delta for this node, taking its entries (the delta is left without
    /// entries once applied). Returns the user-visible key changes that `wanted` asks for.
    #[cfg(test)]
    pub(crate) fn apply(
        &mut self,
        delta: &mut NodeDelta,
        now: Instant,
        limits: ApplyLimits,
        wanted: &KeyEvents,
    ) -> Result<Vec<KeyChange>, Rejected> {
        self.apply_from(delta, now, limits, wanted, false)
    }

    /// As `apply`; `from_owner` says the node this state belongs to sent the delta itself.
    /// If its heartbeat is also above the last reset's (it was built after the reset's
    /// sender last heard of the owner), its entries are the owner's latest, whatever its
    /// `gc_version`, so a delta of it cut short is not taken for a copy that holds less (see
    /// the rules below).
    pub(crate) fn apply_from(
        &mut self,
        delta: &mut NodeDelta,
        now: Instant,
        limits: ApplyLimits,
        wanted: &KeyEvents,
        from_owner: bool,
    ) -> Result<Vec<KeyChange>, Rejected> {
        // Check the whole delta before touching anything, so a bad one changes nothing.
        Self::check_delta(delta, limits)?;
        let mut changes = Vec::new();
        // In a reset, the visible keys held before it and their values: a key the reset
        // brings back unchanged is no news, and one it drops is a deletion.
        let mut before: Option<BTreeMap<Arc<str>, Bytes>> = None;
        // Whether this delta replaces the copy: a reset does, unless the copy already holds
        // every version up to the sender's gc and is not itself cut short. Such a copy misses
        // no deletion the sender purged, so the reset's entries past it, merged as an
        // ordinary delta, give the sender's state; replacing it instead would drop every key
        // rewritten past the reset's last entry when the reset was cut (an introduction cut
        // to a message, built before the peer learned the node elsewhere: found by review),
        // and report those keys deleted, then written again as the rest came.
        let replaces = delta.reset
            && (self.max_version < delta.gc_version || self.max_version < self.gc_version);
        if delta.reset {
            // A reset is taken when it is newer, or when this copy provably misses tombstones
            // the sender purged (then going back to an older but clean copy is the fix). Not
            // when the sender's copy provably misses tombstones this one purged: it may still
            // hold a value deleted since, and taking it would bring that key back.
            let missing_purged =
                self.gc_version < delta.gc_version && self.max_version < delta.gc_version;
            let sender_missing_purged =
                delta.gc_version < self.gc_version && delta.max_version < self.gc_version;
            if (delta.max_version <= self.max_version && !missing_purged) || sender_missing_purged {
                return Err(Rejected::Stale);
            }
        } else {
            if delta.from_version > self.max_version {
                return Err(Rejected::Gap);
            }
            if delta.max_version <= self.max_version {
                return Err(Rejected::Stale);
            }
            // A copy that took a reset cut short holds the sender's gc `g` but versions only
            // up to some `c < g`: it knows that tombstones up to `g` were purged. A copy
            // that purged less and holds less than `g` may still hold the live value of a key
            // deleted (and purged) since: taking it would bring that key back for good, as
            // nothing newer about it will ever come. Copies holding `g` or more carry the
            // tombstones or the newer values instead; so does the owner, whatever it purged
            // (it holds the latest of every key, and a tombstone until it purges it), which
            // matters because a delta cut short claims only up to its last entry: without
            // the exemption, an owner that purged less than `g` could never fill `(c, g]` in
            // pieces, and a state too large for one message would never catch up. Only a
            // delta the owner built after the reset's sender last heard of it is exempt
            // (heartbeat above `cut_heartbeat`): heartbeats rise once an interval while
            // versions rise with every write, so one built earlier, even in the same
            // interval as a delete, arriving late or replayed, may hold the deleted key.
            let owner_now = from_owner && delta.heartbeat > self.cut_heartbeat;
            if !owner_now
                && delta.gc_version < self.gc_version
                && delta.max_version < self.gc_version
            {
                return Err(Rejected::Stale);
            }
            // The mirror case: a sender that purged tombstones above this copy's version
            // cannot carry those deletions, and taking its later entries would leave the
            // deleted keys alive here. Its senders send a reset instead (`build_delta`); a
            // delta built for an earlier state of this copy, or a forged one, is refused.
            if delta.gc_version > self.gc_version && self.max_version < delta.gc_version {
                return Err(Rejected::Stale);
            }
        }
        let base = if replaces {
            delta.from_version
        } else {
            self.max_version
        };
        // The limits, counted before anything changes. A reset's were checked whole by
        // `check_delta` (it replaces the copy); a delta adds to what is held.
        if !replaces {
            let mut usage = self.usage();
            for e in delta.entries.iter().filter(|e| e.version > base) {
                // Exact: keys are distinct (checked above) and `old` is counted in `usage`.
                if let Some(old) = self.entry(&e.key) {
                    usage.remove(&e.key, old.value.as_ref().map_or(0, Bytes::len));
                }
                usage.add(&e.key, e.value.as_ref().map_or(0, Bytes::len));
            }
            // Tombstones this delta lets us purge (see the end) do not count: a node near its
            // limit that deleted keys, purged them and wrote new ones would otherwise be
            // refused here until this node's own grace had passed.
            if delta.gc_version > self.gc_version
                && self.max_version.max(delta.max_version) >= delta.gc_version
                && !usage.within(limits)
            {
                let rewritten: BTreeSet<&str> = delta
                    .entries
                    .iter()
                    .filter(|e| e.version > base)
                    .map(|e| &*e.key)
                    .collect();
                for (k, _) in self
                    .by_version
                    .up_to(delta.gc_version)
                    .filter(|(k, e)| e.value.is_none() && !rewritten.contains(&***k))
                {
                    usage.remove(k, 0);
                }
            }
            if !usage.within(limits) {
                return Err(Rejected::Invalid);
            }
        }
        if replaces {
            self.keys.clear();
            before = Some(
                std::mem::take(&mut self.by_version)
                    .into_values()
                    .filter(|(k, _)| !k.starts_with(RESERVED_PREFIX) && wanted.wants(k))
                    .filter_map(|(k, e)| Some((k, e.value?)))
                    .collect(),
            );
            self.bytes = 0;
            self.tombstones = 0;
            self.ttls = 0;
            self.cut_heartbeat = delta.heartbeat;
            self.max_version = delta.from_version;
            self.gc_version = delta.gc_version;
        }
        self.by_version.reserve(delta.entries.len());
        // The entries move into the state: their keys and values are not copied again.
        for e in delta.entries.drain(..).filter(|e| e.version > base) {
            let visible = !e.key.starts_with(RESERVED_PREFIX) && wanted.wants(&e.key);
            match e.value {
                Some(v) => {
                    let unchanged = before
                        .as_mut()
                        .and_then(|b| b.remove(&e.key))
                        .is_some_and(|old| old == v);
                    if visible && !unchanged {
                        changes.push(KeyChange::Upserted(e.key.to_string(), v.clone()));
                    }
                    self.put_shared(e.key, Some(v), e.version, None);
                }
                None => {
                    if visible && self.get(&e.key).is_some() {
                        changes.push(KeyChange::Deleted(e.key.to_string()));
                    }
                    self.put_shared(e.key, None, e.version, Some(now));
                }
            }
        }
        // Held before the reset and not live after it (in key order, as a reader iterating
        // the state would see them).
        if let Some(gone) = before {
            changes.extend(gone.into_keys().map(|k| KeyChange::Deleted(k.to_string())));
        }
        self.max_version = self.max_version.max(delta.max_version);
        if delta.gc_version > self.gc_version && self.max_version >= delta.gc_version {
            // The sender purged tombstones up to gc_version; ours up to there can go too.
            let purge: Vec<Arc<str>> = self
                .by_version
                .up_to(delta.gc_version)
                .filter(|(_, e)| e.value.is_none())
                .map(|(k, _)| k.clone())
                .collect();
            for k in purge {
                self.remove(&k);
            }
            self.gc_version = delta.gc_version;
        }
        Ok(changes)
    }

    /// The whole state as one delta from scratch (reset), for tests and snapshots.
    #[cfg(test)]
    pub(crate) fn as_reset_delta(&self) -> NodeDelta {
        NodeDelta {
            tag: self.id.tag(),
            id: Some(self.id.clone()),
            heartbeat: self.heartbeat,
            reset: true,
            gc_version: self.gc_version,
            from_version: 0,
            max_version: self.max_version,
            entries: self
                .entries_after(0)
                .map(|(k, e)| key_entry(k, e))
                .collect(),
        }
    }

    /// Writes `key` (an owner write: a rewrite reuses the key's allocation).
    fn put(
        &mut self,
        key: &str,
        value: Option<Bytes>,
        version: u64,
        dead_since: Option<Instant>,
        expires_at: Option<Instant>,
    ) {
        let key = match self.remove(key) {
            Some(k) => k,
            None => Arc::from(key),
        };
        self.insert(key, value, version, dead_since, expires_at);
    }

    /// Writes a key decoded from a delta, keeping its allocation.
    fn put_shared(
        &mut self,
        key: Arc<str>,
        value: Option<Bytes>,
        version: u64,
        dead_since: Option<Instant>,
    ) {
        self.remove(&key);
        self.insert(key, value, version, dead_since, None);
    }

    /// Adds an entry for a key not held (callers remove it first).
    fn insert(
        &mut self,
        key: Arc<str>,
        value: Option<Bytes>,
        version: u64,
        dead_since: Option<Instant>,
        expires_at: Option<Instant>,
    ) {
        self.bytes += key.len() + value.as_ref().map_or(0, Bytes::len);
        self.tombstones += u32::from(value.is_none());
        self.ttls += u32::from(expires_at.is_some());
        self.keys.insert(Arc::clone(&key), version);
        self.by_version.insert(
            key,
            Entry {
                value,
                version,
                dead_since,
                expires_at,
            },
        );
    }

    /// Removes `key`'s entry; returns the key's shared allocation if it was held.
    fn remove(&mut self, key: &str) -> Option<Arc<str>> {
        let v = self.keys.remove(key)?;
        let (k, old) = self.by_version.remove(&v)?;
        self.bytes -= key.len() + old.value.as_ref().map_or(0, Bytes::len);
        self.tombstones -= u32::from(old.value.is_none());
        self.ttls -= u32::from(old.expires_at.is_some());
        Some(k)
    }
}

/// An entry with its key.
type Keyed = (Arc<str>, Entry);

/// Every entry of a node's state in version order: a vector, since every write takes a
/// version above all those held (the owner's next version; a peer's delta applies in version
/// order above what it holds). A removed entry (its key rewritten, or a tombstone purged) leaves
/// its slot empty until the empty slots are half of them. A `BTreeMap` filled in version order
/// keeps its nodes about half full: with its node overhead it cost about three times the
/// bytes of an entry, and page faults on that memory were a quarter of the CPU of 200 nodes
/// in one process taking 100 keys each.
#[derive(Clone, Debug, Default)]
struct ByVersion {
    /// Ascending versions; `None` where the entry was removed.
    slots: Vec<(u64, Option<Keyed>)>,
    removed: usize,
}

impl ByVersion {
    fn find(&self, version: u64) -> Option<usize> {
        let i = self.count_up_to(version).checked_sub(1)?;
        (self.slots.get(i)?.0 == version).then_some(i)
    }

    /// How many slots hold a version at or below `version` (where the versions above it
    /// start). Versions are distinct integers in ascending order, so slot `i` holds at least
    /// `first + i`: the count is at most `version - first + 1`, and exactly that while no
    /// version in between is missing, the usual case (a node's writes take consecutive
    /// versions, and a peer applies them in order). So one probe, where a binary search over
    /// slots of 96 bytes was a cache miss a step: the start of each delta was a tenth of
    /// building deltas under a state load.
    fn count_up_to(&self, version: u64) -> usize {
        let Some(&(first, _)) = self.slots.first() else {
            return 0;
        };
        if version < first {
            return 0;
        }
        let n = self.slots.len();
        // Every slot from `bound` on holds a version above `version`; bound >= 1.
        let bound = usize::try_from(version - first).map_or(n, |d| d.saturating_add(1).min(n));
        if self.slots[bound - 1].0 <= version {
            bound
        } else {
            self.slots[..bound - 1].partition_point(|s| s.0 <= version)
        }
    }

    fn get(&self, version: &u64) -> Option<&Keyed> {
        self.slots.get(self.find(*version)?)?.1.as_ref()
    }

    fn get_mut(&mut self, version: &u64) -> Option<&mut Keyed> {
        let i = self.find(*version)?;
        self.slots.get_mut(i)?.1.as_mut()
    }

    /// Room for `n` more entries at once (a delta's) rather than a doubling every few; exact
    /// for a first delta, which for most peers is their one reserved key (a vector's smallest
    /// amortized capacity, 4 entries, was a third of the memory a peer costs each node).
    fn reserve(&mut self, n: usize) {
        if self.slots.is_empty() {
            self.slots.reserve_exact(n);
        } else {
            self.slots.reserve(n);
        }
    }

    /// Adds the entry at its version (its slot is reused if that version was removed).
    fn insert(&mut self, key: Arc<str>, e: Entry) {
        let v = e.version;
        match self.slots.last() {
            Some(&(last, _)) if last >= v => {
                // Not a write past every held version; kept correct, if slower.
                let at = self.count_up_to(v);
                match at.checked_sub(1).filter(|&i| self.slots[i].0 == v) {
                    Some(i) => {
                        if self.slots[i].1.is_none() {
                            self.removed -= 1;
                        }
                        self.slots[i].1 = Some((key, e));
                    }
                    None => self.slots.insert(at, (v, Some((key, e)))),
                }
            }
            _ => self.slots.push((v, Some((key, e)))),
        }
    }

    fn remove(&mut self, version: &u64) -> Option<Keyed> {
        let i = self.find(*version)?;
        let taken = self.slots.get_mut(i)?.1.take()?;
        self.removed += 1;
        if self.removed > 16 && self.removed * 2 > self.slots.len() {
            self.slots.retain(|s| s.1.is_some());
            self.removed = 0;
            // A burst of keys written, deleted and purged would otherwise keep its peak room
            // for good, in every node's copy (found by review: 6.3-7 MB a copy, an hour after
            // 20,000 keys were deleted).
            if self.slots.capacity() > 4 * self.slots.len() {
                self.slots.shrink_to(2 * self.slots.len());
            }
        }
        Some(taken)
    }

    fn values(&self) -> impl Iterator<Item = &Keyed> + '_ {
        self.slots.iter().filter_map(|s| s.1.as_ref())
    }

    /// Entries with a version above `version`, in version order.
    fn after(&self, version: u64) -> impl Iterator<Item = (&Arc<str>, &Entry)> + '_ {
        live(&self.slots[self.count_up_to(version)..])
    }

    /// Entries with a version at or below `version`, in version order.
    fn up_to(&self, version: u64) -> impl Iterator<Item = (&Arc<str>, &Entry)> + '_ {
        live(&self.slots[..self.count_up_to(version)])
    }

    fn into_values(self) -> impl Iterator<Item = Keyed> {
        self.slots.into_iter().filter_map(|s| s.1)
    }
}

/// The entries of `slots` that were not removed.
fn live(slots: &[(u64, Option<Keyed>)]) -> impl Iterator<Item = (&Arc<str>, &Entry)> + '_ {
    slots
        .iter()
        .filter_map(|s| s.1.as_ref().map(|(k, e)| (k, e)))
}

/// Builds a [`KeyEntry`] for the wire from a local entry.
pub(crate) fn key_entry(key: &Arc<str>, e: &Entry) -> KeyEntry {
    KeyEntry {
        key: Arc::clone(key),
        version: e.version,
        value: e.value.clone(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn by_version_answers_as_a_sorted_map_does() {
        // Random appends, removals (enough to compact many times) and the odd insert below
        // the newest version, against a BTreeMap.
        let mut log = ByVersion::default();
        let mut model: BTreeMap<u64, Arc<str>> = BTreeMap::new();
        let mut x: u64 = 0x853c_49e6_748f_ea9b;
        let mut next = 1u64;
        let entry = |version| Entry {
            value: None,
            version,
            dead_since: None,
            expires_at: None,
        };
        for step in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 10 {
                0..=4 => {
                    next += 1 + x % 3;
                    let key: Arc<str> = Arc::from(format!("k{next}"));
                    log.insert(key.clone(), entry(next));
                    model.insert(next, key);
                }
                5..=8 => {
                    let pick = (x >> 8) % (next + 1);
                    let got = log.remove(&pick).map(|(k, e)| (e.version, k));
                    assert_eq!(got, model.remove(&pick).map(|k| (pick, k)), "step {step}");
                }
                _ => {
                    // Below the newest: a version never used, or one removed.
                    let v = (x >> 8) % (next + 1);
                    if !model.contains_key(&v) && v % 2 == 1 {
                        let key: Arc<str> = Arc::from(format!("old{v}"));
                        log.insert(key.clone(), entry(v));
                        model.insert(v, key);
                    }
                }
            }
            let probe = (x >> 20) % (next + 2);
            assert_eq!(
                log.get(&probe).map(|(k, _)| k.clone()),
                model.get(&probe).cloned()
            );
            if step % 97 == 0 {
                let after: Vec<u64> = log.after(probe).map(|(_, e)| e.version).collect();
                let want: Vec<u64> = model.range(probe + 1..).map(|(v, _)| *v).collect();
                assert_eq!(after, want, "step {step}");
                let upto: Vec<u64> = log.up_to(probe).map(|(_, e)| e.version).collect();
                let want: Vec<u64> = model.range(..=probe).map(|(v, _)| *v).collect();
                assert_eq!(upto, want, "step {step}");
                assert_eq!(log.values().count(), model.len());
            }
        }
        // Removed slots never outnumber live ones by much.
        assert!(log.removed <= 16 || log.removed * 2 <= log.slots.len());
    }

    #[test]
    fn counting_versions_up_to_one_agrees_with_a_binary_search() {
        // Dense runs (the one-probe path), runs with gaps and removals (the search), and
        // versions at the ends of the range.
        let entry = |version| Entry {
            value: None,
            version,
            dead_since: None,
            expires_at: None,
        };
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for (first, gaps) in [
            (1u64, 0u64),
            (7, 0),
            (1, 3),
            (1_000, 1),
            (u64::MAX - 300, 0),
        ] {
            let mut log = ByVersion::default();
            let mut v = first;
            for _ in 0..200 {
                log.insert(Arc::from("k"), entry(v));
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v = v.saturating_add(1 + if gaps > 0 { x % (gaps + 1) } else { 0 });
            }
            for probe in 0..300 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x % 400) as usize;
                if at < log.slots.len() && probe % 3 == 0 {
                    let version = log.slots[at].0;
                    log.remove(&version);
                }
                let last = log.slots.last().map_or(0, |s| s.0);
                for q in [
                    0,
                    first.saturating_sub(1),
                    first,
                    first.saturating_add(x % 500),
                    last,
                    last.saturating_add(1),
                    u64::MAX,
                ] {
                    let want = log.slots.partition_point(|s| s.0 <= q);
                    assert_eq!(log.count_up_to(q), want, "first {first} gaps {gaps} q {q}");
                    let found = log.slots.binary_search_by_key(&q, |s| s.0).ok();
                    assert_eq!(log.find(q), found, "first {first} gaps {gaps} q {q}");
                }
            }
        }
    }

    use super::*;

    /// An arbitrary origin: the tests use only offsets from it.
    fn origin() -> Instant {
        Instant::now()
    }

    fn id() -> NodeId {
        NodeId::new("a", 1, "127.0.0.1:1".parse().unwrap())
    }

    const LIMITS: ApplyLimits = ApplyLimits {
        max_key_len: 512,
        max_value_len: 1 << 20,
        max_keys: 1000,
        max_bytes: 1 << 20,
    };

    #[test]
    fn set_bumps_version_and_same_value_changes_nothing() {
        let mut s = NodeState::new(id());
        assert_eq!(s.set_local("k", "v".into(), None), Some(1));
        assert_eq!(s.set_local("k", "v".into(), None), None);
        assert_eq!(s.set_local("k", "w".into(), None), Some(2));
        assert_eq!(s.max_version(), Version(2));
        assert_eq!(s.get_str("k"), Some("w"));
    }

    /// `Debug` shows what a user reads (live user keys and values), not the version index,
    /// tombstones or reserved keys.
    #[test]
    fn debug_shows_the_live_user_keys() {
        let mut s = NodeState::new(id());
        s.set_local("http", "10.0.0.1:80".into(), None);
        s.set_local("gone", "x".into(), None);
        s.set_local("tidings:ready", "1".into(), None);
        s.delete_local("gone", origin());
        let shown = format!("{s:?}");
        assert!(shown.starts_with("NodeState { id: "), "{shown}");
        assert!(shown.contains("heartbeat: 0, max_version: 4"), "{shown}");
        assert!(
            shown.ends_with(r#"keys: {"http": b"10.0.0.1:80"} }"#),
            "{shown}"
        );
    }

    #[test]
    fn delete_writes_a_tombstone_hidden_from_readers() {
        let t = origin();
        let mut s = NodeState::new(id());
        s.set_local("k", "v".into(), None);
        assert_eq!(s.delete_local("k", t), Some(2));
        assert_eq!(s.delete_local("k", t), None);
        assert_eq!(s.get("k"), None);
        assert_eq!(s.version_of("k"), Some(Version(2)));
        assert!(s.is_empty());
    }

    #[test]
    fn ttl_turns_into_a_tombstone() {
        let t = origin();
        let mut s = NodeState::new(id());
        s.set_local("k", "v".into(), Some(t + Duration::from_secs(5)));
        assert!(s.expire_ttls(t + Duration::from_secs(4)).is_empty());
        assert_eq!(
            s.expire_ttls(t + Duration::from_secs(5)),
            vec!["k".to_owned()]
        );
        assert_eq!(s.get("k"), None);
    }

    /// A lease renewed with the same value moves its deadline (no new version: peers see the
    /// same data), and a plain `set` of the same value drops the TTL. (A mutation review found
    /// that keeping the first deadline failed no test.)
    #[test]
    fn setting_the_same_value_again_renews_or_drops_its_ttl() {
        let t = origin();
        let secs = Duration::from_secs;
        let mut s = NodeState::new(id());
        assert_eq!(
            s.set_local("lease", "me".into(), Some(t + secs(5))),
            Some(1)
        );
        assert_eq!(s.set_local("lease", "me".into(), Some(t + secs(9))), None);
        assert!(s.expire_ttls(t + secs(6)).is_empty());
        assert_eq!(s.get_str("lease"), Some("me"));
        assert_eq!(s.expire_ttls(t + secs(9)), vec!["lease".to_owned()]);
        s.set_local("kept", "v".into(), Some(t + secs(5)));
        assert_eq!(s.set_local("kept", "v".into(), None), None);
        assert!(s.expire_ttls(t + secs(3600)).is_empty());
        assert_eq!(s.get_str("kept"), Some("v"));
        assert_eq!(s.ttls, 0);
    }

    /// The room of a burst of keys is given back once they are deleted and purged.
    #[test]
    fn a_purged_burst_gives_its_room_back() {
        let t = origin();
        let mut s = NodeState::new(id());
        s.set_local("kept", "1".into(), None);
        for k in 0..20_000 {
            s.set_local(&format!("key-{k}"), "1".into(), None);
        }
        let peak = s.by_version.slots.capacity();
        assert!(peak >= 20_000);
        for k in 0..20_000 {
            s.delete_local(&format!("key-{k}"), t);
        }
        assert_eq!(s.purge_tombstones(t, Duration::ZERO), 20_000);
        assert_eq!(s.num_entries(), 1);
        assert!(
            s.by_version.slots.capacity() <= 64,
            "{} slots of room kept for 1 entry (peak {peak})",
            s.by_version.slots.capacity()
        );
    }

    #[test]
    fn purge_raises_gc_version() {
        let t = origin();
        let mut s = NodeState::new(id());
        s.set_local("a", "1".into(), None);
        s.set_local("b", "1".into(), None);
        s.delete_local("a", t);
        assert_eq!(
            s.purge_tombstones(t + Duration::from_secs(1), Duration::from_secs(2)),
            0
        );
        assert_eq!(
            s.purge_tombstones(t + Duration::from_secs(2), Duration::from_secs(2)),
            1
        );
        assert_eq!(s.gc_version(), Version(3));
        assert_eq!(s.num_entries(), 1);
        assert_eq!(s.max_version(), Version(3));
    }

    #[test]
    fn a_first_delta_takes_exactly_the_room_of_its_entries() {
        // Most peers' states are written by one delta; slack in the vector is memory that
        // every node pays for every peer (see `ByVersion`).
        // One entry (a peer's reserved readiness key, say) is the common case, and the one a
        // vector's amortized growth would round up to four.
        let t = origin();
        for n in [1, 3, 100] {
            let mut owner = NodeState::new(id());
            for k in 0..n {
                owner.set_local(&format!("k{k:03}"), "v".into(), None);
            }
            let mut replica = NodeState::new(id());
            replica
                .apply(&mut owner.as_reset_delta(), t, LIMITS, &KeyEvents::None)
                .unwrap();
            assert_eq!(replica.num_entries(), n);
            assert_eq!(replica.by_version.slots.capacity(), n);
        }
    }

    #[test]
    fn apply_reports_only_the_wanted_changes_but_applies_all() {
        let t = origin();
        let mut owner = NodeState::new(id());
        owner.set_local("svc/a", "1".into(), None);
        owner.set_local("other", "2".into(), None);
        let mut replica = NodeState::new(id());
        let wanted = KeyEvents::Prefixes(vec!["svc/".into()]);
        let changes = replica
            .apply(&mut owner.as_reset_delta(), t, LIMITS, &wanted)
            .unwrap();
        assert_eq!(
            changes,
            vec![KeyChange::Upserted("svc/a".into(), "1".into())]
        );
        assert_eq!(replica.get_str("other"), Some("2"));
        let mut quiet = NodeState::new(id());
        let changes = quiet
            .apply(&mut owner.as_reset_delta(), t, LIMITS, &KeyEvents::None)
            .unwrap();
        assert!(changes.is_empty());
        assert_eq!(quiet.get_str("svc/a"), Some("1"));
    }

    #[test]
    fn reset_delta_replaces_state() {
        let t = origin();
        let mut owner = NodeState::new(id());
        owner.set_local("a", "1".into(), None);
        owner.set_local("b", "2".into(), None);
        let mut replica = NodeState::new(id());
        replica
            .apply(&mut owner.as_reset_delta(), t, LIMITS, &KeyEvents::All)
            .unwrap();
        owner.delete_local("a", t);
        owner.purge_tombstones(t, Duration::ZERO);
        owner.set_local("c", "3".into(), None);
        let changes = replica
            .apply(&mut owner.as_reset_delta(), t, LIMITS, &KeyEvents::All)
            .unwrap();
        // Only what differs: `b` comes back unchanged, so it is no news.
        assert_eq!(
            changes,
            vec![
                KeyChange::Upserted("c".into(), "3".into()),
                KeyChange::Deleted("a".into())
            ]
        );
        assert_eq!(replica.get("a"), None);
        assert_eq!(replica.get_str("b"), Some("2"));
        assert_eq!(replica.get_str("c"), Some("3"));
        assert_eq!(replica.max_version(), owner.max_version());
        assert_eq!(replica.gc_version(), owner.gc_version());
    }

    /// A reset for a copy that already holds every version up to the sender's gc merges as a
    /// delta: cut short (an introduction cut to a message, built before the peer learned the
    /// node elsewhere), it used to replace the copy and drop `k`, rewritten past the cut, and
    /// report it deleted (then upserted again when the rest came).
    #[test]
    fn a_cut_reset_to_a_copy_that_misses_nothing_purged_deletes_nothing() {
        let t = origin();
        let mut owner = NodeState::new(id());
        owner.set_local("k", "old".into(), None);
        owner.set_local("a", "1".into(), None);
        let mut replica = NodeState::new(id());
        replica
            .apply(&mut owner.as_reset_delta(), t, LIMITS, &KeyEvents::All)
            .unwrap();
        owner.set_local("b", "2".into(), None);
        owner.set_local("k", "new".into(), None);
        // The owner's whole state cut after `b` (version 3): `k`, at version 4, is past it.
        let mut cut = owner.as_reset_delta();
        cut.entries.retain(|e| e.version <= 3);
        cut.max_version = 3;
        let changes = replica.apply(&mut cut, t, LIMITS, &KeyEvents::All).unwrap();
        assert_eq!(changes, vec![KeyChange::Upserted("b".into(), "2".into())]);
        assert_eq!(replica.get_str("k"), Some("old"));
        assert_eq!(replica.max_version().0, 3);
        // The whole reset, later, brings the rest as a delta would.
        let changes = replica
            .apply(&mut owner.as_reset_delta(), t, LIMITS, &KeyEvents::All)
            .unwrap();
        assert_eq!(changes, vec![KeyChange::Upserted("k".into(), "new".into())]);
        let held: Vec<_> = replica.iter().collect();
        let owned: Vec<_> = owner.iter().collect();
        assert_eq!(held, owned);
        assert_eq!(replica.max_version(), owner.max_version());
    }

    /// A restart that reused its identity: peers hold the previous run's copy (keys `x`, `y`,
    /// versions up to 5), past this run's (`a` and `b`, `c` deleted: versions up to 4). After
    /// a rebase past 5, every copy, whether it holds the old run's state or this run's, is
    /// caught up by a reset to exactly this run's keys.
    #[test]
    fn a_rebased_state_replaces_a_previous_runs_copy_everywhere() {
        let t = origin();
        let mut old_run = NodeState::new(id());
        for (k, v) in [("x", "1"), ("y", "2"), ("x", "3"), ("y", "4"), ("x", "5")] {
            old_run.set_local(k, v.into(), None);
        }
        let mut stale = NodeState::new(id());
        stale
            .apply(&mut old_run.as_reset_delta(), t, LIMITS, &KeyEvents::All)
            .unwrap();
        // Another peer got two more of the previous run's writes, into the versions the
        // rebase below takes (past the 5 it was told of).
        old_run.set_local("z", "6".into(), None);
        old_run.set_local("x", "7".into(), None);
        let mut further = NodeState::new(id());
        further
            .apply(&mut old_run.as_reset_delta(), t, LIMITS, &KeyEvents::All)
            .unwrap();
        assert_eq!(further.max_version().0, 7);
        let mut owner = NodeState::new(id());
        owner.set_local("a", "1".into(), None);
        owner.set_local("c", "x".into(), None);
        owner.set_local("b", "2".into(), Some(t + Duration::from_secs(60)));
        owner.delete_local("c", t);
        let mut fresh = NodeState::new(id());
        fresh
            .apply(&mut owner.as_reset_delta(), t, LIMITS, &KeyEvents::All)
            .unwrap();
        assert_eq!(owner.rebase(5), Some(8));
        assert_eq!((owner.gc_version().0, owner.max_version().0), (8, 8));
        // Live keys only, in their order, with their TTL; the tombstone went.
        let keys: Vec<(String, u64)> = owner
            .entries_after(0)
            .map(|(k, e)| (k.to_string(), e.version))
            .collect();
        assert_eq!(keys, [("a".to_string(), 7), ("b".to_string(), 8)]);
        assert_eq!(
            owner.entry("b").and_then(|e| e.expires_at),
            Some(t + Duration::from_secs(60))
        );
        assert!(!owner.has_tombstones());
        for copy in [&mut stale, &mut further, &mut fresh] {
            let mut d = catch_up(&owner, copy);
            assert!(d.reset, "a copy below the rebase takes a reset");
            copy.apply(&mut d, t, LIMITS, &KeyEvents::All).unwrap();
            assert_eq!(copy.get_str("a"), Some("1"));
            assert_eq!(copy.get_str("b"), Some("2"));
            assert_eq!(
                (copy.get("x"), copy.get("y"), copy.get("z"), copy.get("c")),
                (None, None, None, None)
            );
            assert_eq!(copy.max_version(), owner.max_version());
        }
        // The next write continues above; a rebase past an absurd version changes nothing.
        assert_eq!(owner.set_local("d", "4".into(), None), Some(9));
        assert_eq!(owner.rebase(MAX_REBASE_VERSION), None);
        assert_eq!((owner.gc_version().0, owner.max_version().0), (8, 9));
    }

    #[test]
    fn a_reset_reports_changed_values_and_deleted_keys_only() {
        let t = origin();
        let mut owner = NodeState::new(id());
        owner.set_local("same", "1".into(), None);
        owner.set_local("changes", "old".into(), None);
        owner.set_local("goes", "x".into(), None);
        let mut replica = NodeState::new(id());
        replica
            .apply(&mut owner.as_reset_delta(), t, LIMITS, &KeyEvents::All)
            .unwrap();
        owner.set_local("changes", "new".into(), None);
        owner.delete_local("goes", t);
        owner.set_local("new", "n".into(), None);
        let changes = replica
            .apply(&mut owner.as_reset_delta(), t, LIMITS, &KeyEvents::All)
            .unwrap();
        // The replica misses nothing purged, so the reset merges as a delta: its changes come
        // in version order.
        assert_eq!(
            changes,
            vec![
                KeyChange::Upserted("changes".into(), "new".into()),
                KeyChange::Deleted("goes".into()),
                KeyChange::Upserted("new".into(), "n".into()),
            ]
        );
        let live: Vec<(&str, &Bytes)> = replica.iter().collect();
        let want: Vec<(&str, &Bytes)> = owner.iter().collect();
        assert_eq!(live, want);
    }

    /// A reset over the key or byte limit is refused before anything changes: the copy held
    /// stays whole (it used to be emptied first, then the reset refused).
    #[test]
    fn a_reset_over_the_limits_leaves_the_copy_as_it_was() {
        let t = origin();
        let mut owner = NodeState::new(id());
        for k in 0..5 {
            owner.set_local(&format!("k{k}"), "v".into(), None);
        }
        let limits = ApplyLimits {
            max_keys: 5,
            ..LIMITS
        };
        let mut replica = NodeState::new(id());
        replica
            .apply(&mut owner.as_reset_delta(), t, limits, &KeyEvents::All)
            .unwrap();
        let before = snapshot(&replica);
        owner.set_local("k5", "v".into(), None);
        assert_eq!(
            replica.apply(&mut owner.as_reset_delta(), t, limits, &KeyEvents::All),
            Err(Rejected::Invalid)
        );
        assert_eq!(snapshot(&replica), before);
        let tight = ApplyLimits {
            max_bytes: replica.bytes,
            ..LIMITS
        };
        owner.set_local("k0", "longer".into(), None);
        assert_eq!(
            replica.apply(&mut owner.as_reset_delta(), t, tight, &KeyEvents::All),
            Err(Rejected::Invalid)
        );
        assert_eq!(snapshot(&replica), before);
    }

    /// A reset claiming to start past version 0 is refused: taken, it would leave the copy
    /// without the versions below its start, for good.
    #[test]
    fn a_reset_that_does_not_start_at_zero_is_refused() {
        let t = origin();
        let mut owner = NodeState::new(id());
        for k in 0..10 {
            owner.set_local(&format!("k{k}"), "v".into(), None);
        }
        let mut replica = NodeState::new(id());
        let mut partial = owner.as_reset_delta();
        partial.from_version = 9;
        partial.entries.retain(|e| e.version > 9);
        assert_eq!(
            replica.apply(&mut partial, t, LIMITS, &KeyEvents::All),
            Err(Rejected::Invalid)
        );
        assert_eq!(replica.max_version().0, 0);
        replica
            .apply(&mut owner.as_reset_delta(), t, LIMITS, &KeyEvents::All)
            .unwrap();
        assert_eq!(snapshot(&replica), snapshot(&owner));
    }

    /// A node at its key limit that deleted keys, purged them and wrote new ones: a replica
    /// still holding the tombstones takes the delta (which lets it purge them), instead of
    /// refusing it until its own grace passes.
    #[test]
    fn tombstones_a_delta_purges_do_not_count_against_the_limit() {
        let t = origin();
        let limits = ApplyLimits {
            max_keys: 5,
            ..LIMITS
        };
        let mut owner = NodeState::new(id());
        for k in 0..5 {
            owner.set_local(&format!("k{k}"), "v".into(), None);
        }
        let mut replica = NodeState::new(id());
        replica
            .apply(&mut owner.as_reset_delta(), t, limits, &KeyEvents::All)
            .unwrap();
        // What the owner wrote since the replica's version.
        let catch_up = |replica: &mut NodeState, owner: &NodeState| {
            let mut delta = delta_from(owner, replica.max_version().0);
            replica.apply(&mut delta, t, limits, &KeyEvents::All)
        };
        for k in 0..3 {
            owner.delete_local(&format!("k{k}"), t);
        }
        catch_up(&mut replica, &owner).unwrap();
        assert_eq!(replica.num_entries(), 5, "2 values and 3 tombstones");
        owner.purge_tombstones(t, Duration::ZERO);
        for k in 0..3 {
            owner.set_local(&format!("n{k}"), "v".into(), None);
        }
        catch_up(&mut replica, &owner).unwrap();
        assert_eq!(snapshot(&replica), snapshot(&owner));
        // Still refused when the delta itself goes past the limit.
        owner.set_local("n3", "v".into(), None);
        assert_eq!(catch_up(&mut replica, &owner), Err(Rejected::Invalid));
    }

    /// A reset from a copy that misses tombstones this one purged (its versions stop below our
    /// gc_version) is refused: it may hold a value deleted since.
    #[test]
    fn a_reset_missing_purged_tombstones_is_refused() {
        let t = origin();
        let mut owner = NodeState::new(id());
        owner.set_local("doomed", "v".into(), None);
        owner.set_local("kept", "v".into(), None);
        // A stale replica: it holds `doomed` alive and nothing newer.
        let mut stale = NodeState::new(id());
        stale
            .apply(&mut owner.as_reset_delta(), t, LIMITS, &KeyEvents::All)
            .unwrap();
        owner.delete_local("doomed", t);
        owner.purge_tombstones(t, Duration::ZERO);
        // A replica that took the owner's purged state, but only its first entries (a reset
        // cut short by the budget): its versions stop below its gc_version.
        let mut cut = owner.as_reset_delta();
        cut.entries.retain(|e| e.version <= 1);
        cut.max_version = 1;
        let mut replica = NodeState::new(id());
        replica.apply(&mut cut, t, LIMITS, &KeyEvents::All).unwrap();
        assert!(replica.max_version() < replica.gc_version());
        // The stale copy gains a version of its own history the replica lacks (as when it
        // learned more of the owner's writes before the delete), then offers a reset.
        let mut offer = stale.as_reset_delta();
        offer.max_version = replica.max_version().0 + 1;
        assert!(offer.max_version < replica.gc_version().0);
        assert_eq!(
            replica.apply(&mut offer, t, LIMITS, &KeyEvents::All),
            Err(Rejected::Stale)
        );
        assert_eq!(replica.get("doomed"), None);
    }

    /// The delta an owner sends to a peer at `from`. Its heartbeat stands for the time it was
    /// built: the owner's version then (both only grow, and a write moves the version).
    fn delta_from(owner: &NodeState, from: u64) -> NodeDelta {
        NodeDelta {
            tag: owner.id().tag(),
            id: None,
            heartbeat: owner.max_version().0,
            reset: false,
            gc_version: owner.gc_version().0,
            from_version: from,
            max_version: owner.max_version().0,
            entries: owner
                .entries_after(from)
                .map(|(k, e)| key_entry(k, e))
                .collect(),
        }
    }

    /// A reset cut short (as a full datagram cuts it) leaves its receiver at (max 1, gc 3).
    /// A copy that never purged (gc 0, max 2) still holds `k`, deleted at 3 and purged since:
    /// its delta must not be taken, or `k` is back for good (found by review: the owner's
    /// next delta starts after 2 and never mentions `k` again).
    #[test]
    fn a_copy_that_purged_less_cannot_fill_in_below_the_gc_of_a_cut_reset() {
        let t = origin();
        let mut owner = NodeState::new(id());
        owner.set_local("x", "1".into(), None); // v1
        owner.set_local("k", "1".into(), None); // v2
        let mut stale = NodeState::new(id());
        stale
            .apply(&mut owner.as_reset_delta(), t, LIMITS, &KeyEvents::None)
            .unwrap();
        owner.delete_local("k", t); // v3
        owner.set_local("y", "1".into(), None); // v4
        owner.purge_tombstones(t, Duration::ZERO);
        assert_eq!(owner.gc_version().0, 3);
        let mut r = NodeState::new(id());
        let mut cut = owner.as_reset_delta();
        cut.entries.truncate(1);
        cut.max_version = cut.entries[0].version;
        r.apply(&mut cut, t, LIMITS, &KeyEvents::None).unwrap();
        assert_eq!((r.max_version().0, r.gc_version().0), (1, 3));
        let mut from_stale = delta_from(&stale, r.max_version().0);
        assert_eq!(
            r.apply(&mut from_stale, t, LIMITS, &KeyEvents::None),
            Err(Rejected::Stale)
        );
        let mut from_owner = delta_from(&owner, r.max_version().0);
        r.apply(&mut from_owner, t, LIMITS, &KeyEvents::None)
            .unwrap();
        assert_eq!(r.max_version(), owner.max_version());
        assert_eq!(r.get("k"), None, "the deleted key stays deleted");
        assert_eq!(r.get("y").map(|v| &v[..]), Some(&b"1"[..]));
        // A copy that purged less but holds everything up to the gc is taken: it carries
        // the tombstones (or newer values) of everything deleted up to there.
        let mut r2 = NodeState::new(id());
        let mut cut = owner.as_reset_delta();
        cut.entries.truncate(1);
        cut.max_version = cut.entries[0].version;
        r2.apply(&mut cut, t, LIMITS, &KeyEvents::None).unwrap();
        let mut full = NodeState::new(id());
        owner.set_local("z", "1".into(), None); // v5
        let mut whole = owner.as_reset_delta();
        whole.gc_version = 0; // as if it came from a copy that never purged
        full.apply(&mut whole, t, LIMITS, &KeyEvents::None).unwrap();
        let mut from_full = delta_from(&full, r2.max_version().0);
        r2.apply(&mut from_full, t, LIMITS, &KeyEvents::None)
            .unwrap();
        assert_eq!(r2.max_version().0, 5);
        assert_eq!(r2.get("k"), None);
    }

    type Snapshot = (u64, u64, Vec<(String, Option<Bytes>, u64)>);

    fn snapshot(s: &NodeState) -> Snapshot {
        (
            s.max_version().0,
            s.gc_version().0,
            s.keys
                .keys()
                .filter_map(|k| {
                    s.entry(k)
                        .map(|e| (k.to_string(), e.value.clone(), e.version))
                })
                .collect(),
        )
    }

    proptest::proptest! {
        /// (b) Applying a delta twice, or an old delta after a newer one, changes nothing; and
        /// deltas applied in any order with duplicates end at the owner's state.
        #[test]
        fn applying_twice_or_out_of_order_changes_nothing(
            ops in proptest::collection::vec((0u8..6, proptest::option::of(0u8..4)), 1..40),
            cuts in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 1..6),
            order in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 1..12),
        ) {
            let t = origin();
            let mut owner = NodeState::new(id());
            // Deltas taken at several points of the owner's history, each from several bases.
            let mut deltas = Vec::new();
            for (i, (key, value)) in ops.iter().enumerate() {
                let key = format!("k{key}");
                match value {
                    Some(v) => { owner.set_local(&key, Bytes::from(vec![*v]), None); }
                    None => { owner.delete_local(&key, t); }
                }
                if cuts.iter().any(|c| c.index(ops.len()) == i) {
                    let max = owner.max_version().0;
                    for from in [0, max / 2, max.saturating_sub(1)] {
                        deltas.push(delta_from(&owner, from));
                    }
                }
            }
            deltas.push(delta_from(&owner, 0));
            let mut replica = NodeState::new(id());
            let mut newest = 0;
            for o in &order {
                let d = &deltas[o.index(deltas.len())];
                let before = snapshot(&replica);
                let applied = replica.apply(&mut d.clone(), t, LIMITS, &KeyEvents::All).is_ok();
                if applied {
                    proptest::prop_assert!(d.max_version > before.0);
                    // Applying the same delta again changes nothing.
                    let after = snapshot(&replica);
                    proptest::prop_assert!(replica.apply(&mut d.clone(), t, LIMITS, &KeyEvents::All).is_err());
                    proptest::prop_assert_eq!(snapshot(&replica), after);
                } else {
                    proptest::prop_assert_eq!(snapshot(&replica), before);
                }
                proptest::prop_assert!(replica.max_version().0 >= newest, "versions only grow");
                newest = replica.max_version().0;
            }
            // The full delta always applies on top, and then the replica equals the owner.
            let _ = replica.apply(&mut deltas.last().unwrap().clone(), t, LIMITS, &KeyEvents::All);
            proptest::prop_assert_eq!(snapshot(&replica), snapshot(&owner));
        }
    }

    /// A delta cut after its first `keep` entries, claiming only what it carries, as a full
    /// message cuts it.
    fn cut(mut d: NodeDelta, keep: usize) -> NodeDelta {
        if keep < d.entries.len() {
            d.entries.truncate(keep);
            d.max_version = d
                .entries
                .last()
                .map_or(if d.reset { 0 } else { d.from_version }, |e| e.version);
        }
        d
    }

    /// Deltas cut from each of `copies` (a state, the heartbeat its sender holds of the
    /// owner, whether it is the owner itself) starting at the start, the middle and the end of
    /// the owner's versions `max` (each copy from no further than it holds): the `k`th copy's
    /// cut after `keeps[j + k]` entries, for the `j`th start.
    fn push_cut_deltas(
        deltas: &mut Vec<(NodeDelta, bool)>,
        copies: &[(&NodeState, u64, bool)],
        max: u64,
        keeps: &[usize],
    ) {
        for (j, from) in [0, max / 2, max.saturating_sub(1)].into_iter().enumerate() {
            let mut from = from;
            for (k, &(copy, heartbeat, by_owner)) in copies.iter().enumerate() {
                from = from.min(copy.max_version().0);
                let d = cut(delta_from(copy, from), keeps[j + k]);
                deltas.push((NodeDelta { heartbeat, ..d }, by_owner));
            }
        }
    }

    /// What `owner` sends `copy` to catch it up, as `build_delta` decides: a reset if the copy
    /// may hold a key whose tombstone the owner purged, else what comes after its version.
    fn catch_up(owner: &NodeState, copy: &NodeState) -> NodeDelta {
        if owner.gc_version() > copy.gc_version() && copy.max_version() < owner.gc_version() {
            owner.as_reset_delta()
        } else {
            delta_from(owner, copy.max_version().0)
        }
    }

    /// For every key whose last write by the owner (`writes`: key, version, value or
    /// deletion) is at or below the copy's `max_version`, the copy holds exactly that write
    /// (a deleted key: not alive). Keys written again above it may still show an older value,
    /// as any delta cut short leaves them, until the newer write arrives.
    fn holds_every_last_write_up_to_its_version(
        replica: &NodeState,
        writes: &[(String, u64, Option<Bytes>)],
    ) -> bool {
        let max = replica.max_version().0;
        let mut last: BTreeMap<&str, (u64, &Option<Bytes>)> = BTreeMap::new();
        for (k, v, value) in writes {
            last.insert(k, (*v, value));
        }
        last.into_iter()
            .filter(|(_, (v, _))| *v <= max)
            .all(|(k, (v, value))| match value {
                Some(value) => replica
                    .entry(k)
                    .is_some_and(|e| e.version == v && e.value.as_ref() == Some(value)),
                None => replica.get(k).is_none(),
            })
    }

    /// A copy that purged a tombstone the owner never purged (the owner wrote the key again
    /// within its grace) gives a newcomer a cut reset: the newcomer holds (max 1, gc 5). The
    /// owner's gc is 0, so it sends ordinary deltas, and a state too large for one message
    /// arrives in pieces, each claiming only up to its last entry, below 5. They must be
    /// taken, or the newcomer never catches up (found by review); a copy that purged less
    /// and holds less is still refused.
    #[test]
    fn the_owner_fills_in_below_the_gc_of_a_cut_reset_in_pieces() {
        let t = origin();
        let mut owner = NodeState::new(id());
        owner.set_local("a", "1".into(), None); // v1
        owner.set_local("m1", vec![b'x'; 600].into(), None); // v2
        owner.set_local("m2", vec![b'y'; 600].into(), None); // v3
        owner.set_local("k", "1".into(), None); // v4
        owner.delete_local("k", t); // v5
        let mut x = NodeState::new(id());
        x.apply(&mut owner.as_reset_delta(), t, LIMITS, &KeyEvents::None)
            .unwrap();
        x.purge_tombstones(t, Duration::ZERO);
        assert_eq!((x.max_version().0, x.gc_version().0), (5, 5));
        owner.set_local("k", "2".into(), None); // v6
        assert_eq!(owner.gc_version().0, 0);
        let mut r = NodeState::new(id());
        r.apply(&mut cut(x.as_reset_delta(), 1), t, LIMITS, &KeyEvents::None)
            .unwrap();
        assert_eq!((r.max_version().0, r.gc_version().0), (1, 5));
        // The same pieces from a copy that purged less (gc 0) and holds less than 5 are not.
        let mut stale = NodeState::new(id());
        stale
            .apply(
                &mut cut(owner.as_reset_delta(), 2),
                t,
                LIMITS,
                &KeyEvents::None,
            )
            .unwrap();
        assert_eq!(
            r.apply(
                &mut cut(delta_from(&stale, 1), 1),
                t,
                LIMITS,
                &KeyEvents::None
            ),
            Err(Rejected::Stale)
        );
        // Three pieces: m1 at 2, m2 at 3, k at 6.
        for _ in 0..3 {
            let mut piece = cut(catch_up(&owner, &r), 1);
            assert!(!piece.reset);
            r.apply_from(&mut piece, t, LIMITS, &KeyEvents::None, true)
                .unwrap();
        }
        assert_eq!(r.max_version(), owner.max_version());
        assert_eq!(r.get("k").map(|v| &v[..]), Some(&b"2"[..]));
    }

    /// The owner's delta built before a delete, arriving late (or replayed) at a copy that
    /// took a cut reset above the delete: older than the heartbeat the copy holds, it is not
    /// exempt, so it is refused and the deleted key stays deleted (found by review).
    #[test]
    fn a_late_owner_delta_cannot_fill_in_below_the_gc_of_a_cut_reset() {
        let t = origin();
        let mut owner = NodeState::new(id());
        owner.set_local("a", "1".into(), None); // v1
        owner.set_local("k", "1".into(), None); // v2
        let mut late = delta_from(&owner, 0); // heartbeat 2
        owner.set_local("b", "1".into(), None); // v3
        owner.delete_local("k", t); // v4
        owner.set_local("c", "1".into(), None); // v5
        owner.purge_tombstones(t, Duration::ZERO);
        let mut r = NodeState::new(id());
        let mut reset = cut(owner.as_reset_delta(), 1);
        reset.heartbeat = 5;
        r.apply(&mut reset, t, LIMITS, &KeyEvents::None).unwrap();
        r.set_heartbeat(5); // as the node learns it
        assert_eq!((r.max_version().0, r.gc_version().0), (1, 4));
        assert_eq!(
            r.apply_from(&mut late, t, LIMITS, &KeyEvents::None, true),
            Err(Rejected::Stale)
        );
        let mut now = catch_up(&owner, &r);
        r.apply_from(&mut now, t, LIMITS, &KeyEvents::None, true)
            .unwrap();
        assert_eq!(r.max_version(), owner.max_version());
        assert_eq!(r.get("k"), None, "k was deleted at 4 and purged");
    }

    /// Heartbeats rise once an interval, versions with every write: the owner's delta built
    /// before a delete in the same interval carries the same heartbeat as the deltas that
    /// carry the delete. A copy that took a cut reset from a peer that held the owner at that
    /// heartbeat must refuse it (found by review: `>=` the held heartbeat took it).
    #[test]
    fn an_owner_delta_from_the_interval_of_a_delete_cannot_fill_in_below_a_cut_reset() {
        let t = origin();
        let mut owner = NodeState::new(id());
        owner.set_heartbeat(5);
        owner.set_local("a", "1".into(), None); // v1
        owner.set_local("k", "1".into(), None); // v2
        let mut late = NodeDelta {
            heartbeat: 5,
            ..delta_from(&owner, 0)
        };
        owner.delete_local("k", t); // v3, still heartbeat 5
        owner.set_local("c", "1".into(), None); // v4
        let mut x = NodeState::new(id());
        x.apply(&mut owner.as_reset_delta(), t, LIMITS, &KeyEvents::None)
            .unwrap();
        x.set_heartbeat(5);
        x.purge_tombstones(t, Duration::ZERO);
        owner.purge_tombstones(t, Duration::ZERO);
        let mut r = NodeState::new(id());
        r.apply(&mut cut(x.as_reset_delta(), 1), t, LIMITS, &KeyEvents::None)
            .unwrap();
        r.set_heartbeat(5);
        assert_eq!((r.max_version().0, r.gc_version().0), (1, 3));
        assert_eq!(
            r.apply_from(&mut late, t, LIMITS, &KeyEvents::None, true),
            Err(Rejected::Stale)
        );
        // The owner's next interval is taken, in pieces.
        owner.set_heartbeat(6);
        while r.max_version() < owner.max_version() {
            let mut piece = NodeDelta {
                heartbeat: 6,
                ..cut(catch_up(&owner, &r), 1)
            };
            r.apply_from(&mut piece, t, LIMITS, &KeyEvents::None, true)
                .unwrap();
        }
        assert_eq!(r.get("k"), None, "k was deleted at 3 and purged");
    }

    #[test]
    fn a_state_record_stays_168_bytes() {
        // What learning a heartbeat touches in a peer's record is sized to it (design.md 7).
        assert_eq!(size_of::<NodeState>(), 168);
    }

    /// The heartbeat is the state's last field, so that in a peer's record it sits next to
    /// the failure detector's front fields, which learning a heartbeat touches with it
    /// (design.md 7). `cut_heartbeat`, added after it, had moved it 8 bytes away.
    #[test]
    fn the_heartbeat_is_the_states_last_field() {
        assert_eq!(
            std::mem::offset_of!(NodeState, heartbeat) + size_of::<u64>(),
            size_of::<NodeState>()
        );
    }

    /// One step of an owner history in the property tests below: writes `value` to
    /// `k{key}`, or deletes it, recording each write that made a version (deleting a key not
    /// held writes nothing); then, with `purge`, purges tombstones at the owner on odd
    /// versions and at the copy `stale` on even ones (graces end at different times on
    /// different nodes).
    fn owner_step(
        owner: &mut NodeState,
        stale: &mut NodeState,
        writes: &mut Vec<(String, u64, Option<Bytes>)>,
        key: u8,
        value: Option<u8>,
        purge: bool,
        t: Instant,
    ) {
        let key = format!("k{key}");
        let was = owner.max_version();
        match value {
            Some(v) => {
                owner.set_local(&key, Bytes::from(vec![v]), None);
            }
            None => {
                owner.delete_local(&key, t);
            }
        }
        if owner.max_version() > was {
            writes.push((
                key,
                owner.max_version().0,
                value.map(|v| Bytes::from(vec![v])),
            ));
        }
        if purge {
            if owner.max_version().0 % 2 == 1 {
                owner.purge_tombstones(t, Duration::ZERO);
            } else {
                stale.purge_tombstones(t, Duration::ZERO);
            }
        }
    }

    proptest::proptest! {
        /// Resets (whole and cut), ordinary deltas (whole and cut) from the owner and from a
        /// copy that never purged, taken at several points of a history with purges, applied
        /// in any order with duplicates: a delta applied twice changes nothing the second
        /// time, a refused one changes nothing, no deleted or overwritten value is ever alive
        /// again, and the owner's own catch-up then makes the copy equal to it.
        #[test]
        fn resets_purges_and_stale_copies_never_bring_a_value_back(
            ops in proptest::collection::vec((0u8..6, proptest::option::of(0u8..4), proptest::bool::weighted(0.15), proptest::bool::weighted(0.3)), 1..40),
            points in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 1..6),
            keeps in proptest::collection::vec(0usize..4, 4),
            order in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 1..16),
        ) {
            let t = origin();
            let mut owner = NodeState::new(id());
            // A copy that follows the owner's history but never purges (a peer that was away).
            let mut stale = NodeState::new(id());
            let mut writes = Vec::new();
            let mut deltas = Vec::new();
            // The owner's heartbeat: it rises once an interval (`tick`), not with each write,
            // so deltas built before and after a write can carry the same one.
            let mut hb = 1;
            owner.set_heartbeat(hb);
            for (i, (key, value, purge, tick)) in ops.iter().enumerate() {
                if *tick {
                    hb += 1;
                    owner.set_heartbeat(hb);
                }
                owner_step(&mut owner, &mut stale, &mut writes, *key, *value, *purge, t);
                if points.iter().any(|p| p.index(ops.len()) == i) {
                    let _ = stale.apply(&mut catch_up(&owner, &stale), t, LIMITS, &KeyEvents::None);
                    stale.set_heartbeat(hb);
                    let max = owner.max_version().0;
                    // (delta, sent by the owner itself), each with its sender's heartbeat of
                    // the owner; the owner's deltas may arrive late.
                    let sh = stale.heartbeat().0;
                    push_cut_deltas(&mut deltas, &[(&owner, hb, true), (&stale, sh, false)], max, &keeps);
                    let reset = NodeDelta { heartbeat: hb, ..owner.as_reset_delta() };
                    deltas.push((reset.clone(), true));
                    deltas.push((cut(reset, keeps[3]), true));
                    let reset = NodeDelta { heartbeat: sh, ..stale.as_reset_delta() };
                    deltas.push((reset.clone(), false));
                    deltas.push((cut(reset, keeps[0]), false));
                }
            }
            let mut replica = NodeState::new(id());
            for o in &order {
                let (d, by_owner) = &deltas[o.index(deltas.len())];
                let before = snapshot(&replica);
                let result = replica.apply_from(&mut d.clone(), t, LIMITS, &KeyEvents::All, *by_owner);
                if result.is_ok() {
                    let after = snapshot(&replica);
                    proptest::prop_assert!(replica.apply_from(&mut d.clone(), t, LIMITS, &KeyEvents::All, *by_owner).is_err());
                    proptest::prop_assert_eq!(snapshot(&replica), after);
                } else {
                    proptest::prop_assert_eq!(snapshot(&replica), before);
                }
                // The node learns the delta's heartbeat unless it was invalid.
                if result != Err(Rejected::Invalid) {
                    replica.set_heartbeat(d.heartbeat);
                }
                proptest::prop_assert!(holds_every_last_write_up_to_its_version(&replica, &writes), "{:?}", snapshot(&replica));
            }
            proptest::prop_assert!(holds_every_last_write_up_to_its_version(&replica, &writes));
            // The owner's catch-up an interval later, in pieces of one entry, as full messages
            // would cut it: each piece is taken and moves the copy on, until it equals the
            // owner.
            for _ in 0..=ops.len() {
                if replica.max_version() >= owner.max_version() {
                    break;
                }
                let mut piece = NodeDelta { heartbeat: hb + 1, ..cut(catch_up(&owner, &replica), 1) };
                let was = replica.max_version();
                proptest::prop_assert!(
                    replica.apply_from(&mut piece, t, LIMITS, &KeyEvents::All, true).is_ok(),
                    "the owner's piece was refused at {:?}", snapshot(&replica)
                );
                proptest::prop_assert!(replica.max_version() > was || piece.reset);
            }
            let live = |s: &NodeState| -> Vec<(String, Bytes)> {
                s.entries_after(0).filter_map(|(k, e)| Some((k.to_string(), e.value.clone()?))).collect()
            };
            proptest::prop_assert_eq!(replica.max_version(), owner.max_version());
            proptest::prop_assert_eq!(live(&replica), live(&owner));
        }
    }

    proptest::proptest! {
        /// As `resets_purges_and_stale_copies_never_bring_a_value_back`, with a third sender
        /// that purges early (its gc may pass the owner's), owner rebases, and cut resets
        /// built early reaching copies that are whole by then (they merge): besides the
        /// copy's contents, the key events are checked. Replayed onto a subscriber's view they
        /// give the copy's live keys after every delta; and a delta that does not replace the
        /// copy (ordinary, or a merged reset) reports a key deleted only if the owner deleted
        /// it after the version held, and claims exactly its `max_version` with the gc of both.
        #[test]
        fn merged_resets_report_only_real_changes_and_bring_no_value_back(
            ops in proptest::collection::vec((0u8..6, proptest::option::of(0u8..4), proptest::bool::weighted(0.15), proptest::bool::weighted(0.3), proptest::bool::weighted(0.04)), 1..40),
            points in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 1..8),
            keeps in proptest::collection::vec(0usize..5, 6),
            order in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 1..24),
        ) {
            let t = origin();
            let mut owner = NodeState::new(id());
            let mut stale = NodeState::new(id());
            // A copy that follows the owner closely and purges every tombstone it holds at
            // once (its grace ended first): its gc may be above the owner's.
            let mut eager = NodeState::new(id());
            let mut writes: Vec<(String, u64, Option<Bytes>)> = Vec::new();
            let mut deltas = Vec::new();
            let mut hb = 1;
            owner.set_heartbeat(hb);
            for (i, (key, value, purge, tick, rebase)) in ops.iter().enumerate() {
                if *tick {
                    hb += 1;
                    owner.set_heartbeat(hb);
                }
                if *rebase {
                    let past = owner.max_version().0 + 2;
                    let old: Vec<(String, Bytes)> = owner.entries_after(0)
                        .filter_map(|(k, e)| Some((k.to_string(), e.value.clone()?)))
                        .collect();
                    owner.rebase(past).unwrap();
                    for (k, v) in old {
                        let nv = owner.version_of(&k).unwrap().0;
                        writes.push((k, nv, Some(v)));
                    }
                }
                owner_step(&mut owner, &mut stale, &mut writes, *key, *value, *purge, t);
                let _ = eager.apply(&mut catch_up(&owner, &eager), t, LIMITS, &KeyEvents::None);
                eager.set_heartbeat(hb);
                if *purge {
                    eager.purge_tombstones(t, Duration::ZERO);
                }
                if points.iter().any(|p| p.index(ops.len()) == i) {
                    let _ = stale.apply(&mut catch_up(&owner, &stale), t, LIMITS, &KeyEvents::None);
                    stale.set_heartbeat(hb);
                    let max = owner.max_version().0;
                    let sh = stale.heartbeat().0;
                    push_cut_deltas(&mut deltas, &[(&owner, hb, true), (&stale, sh, false), (&eager, hb, false)], max, &keeps);
                    for (s, h, by_owner, k) in [(&owner, hb, true, keeps[3]), (&stale, sh, false, keeps[0]), (&eager, hb, false, keeps[5])] {
                        let reset = NodeDelta { heartbeat: h, ..s.as_reset_delta() };
                        deltas.push((reset.clone(), by_owner));
                        deltas.push((cut(reset.clone(), k), by_owner));
                        deltas.push((cut(reset, 1), by_owner));
                    }
                }
            }
            let live = |s: &NodeState| -> BTreeMap<String, Bytes> {
                s.entries_after(0).filter_map(|(k, e)| Some((k.to_string(), e.value.clone()?))).collect()
            };
            let mut replica = NodeState::new(id());
            let mut view: BTreeMap<String, Bytes> = BTreeMap::new();
            for o in &order {
                let (d, by_owner) = &deltas[o.index(deltas.len())];
                let before = snapshot(&replica);
                let held_before = replica.clone();
                let result = replica.apply_from(&mut d.clone(), t, LIMITS, &KeyEvents::All, *by_owner);
                match &result {
                    Ok(changes) => {
                        for c in changes {
                            match c {
                                KeyChange::Upserted(k, v) => { view.insert(k.clone(), v.clone()); }
                                KeyChange::Deleted(k) => { proptest::prop_assert!(view.remove(k).is_some(), "{k} deleted but not live"); }
                            }
                        }
                        let replaced = d.reset
                            && (before.0 < d.gc_version || before.0 < before.1);
                        if !replaced {
                            proptest::prop_assert_eq!(replica.max_version().0, d.max_version);
                            proptest::prop_assert_eq!(replica.gc_version().0, before.1.max(d.gc_version));
                            // A whole copy (every version up to its gc held) stays whole.
                            proptest::prop_assert!(before.0 < before.1 || replica.max_version() >= replica.gc_version());
                            for c in changes {
                                if let KeyChange::Deleted(k) = c {
                                    let held = held_before.version_of(k).unwrap().0;
                                    proptest::prop_assert!(
                                        writes.iter().any(|(wk, v, val)| wk == k && *v > held && *v <= d.max_version && val.is_none()),
                                        "{k} reported deleted by a delta that does not replace the copy, never deleted after {held}: {:?} -> {:?}", before, snapshot(&replica)
                                    );
                                }
                            }
                            // Nothing held is lost: every key held keeps its version or a
                            // newer one, unless its tombstone was purged.
                            for (k, e) in held_before.entries_after(0) {
                                let now_v = replica.version_of(k).map(|v| v.0);
                                proptest::prop_assert!(
                                    now_v.is_some_and(|v| v >= e.version) || (e.value.is_none() && e.version <= replica.gc_version().0),
                                    "{k} at {} lost: {:?} -> {:?}", e.version, before, snapshot(&replica)
                                );
                            }
                        }
                        let after = snapshot(&replica);
                        proptest::prop_assert!(replica.apply_from(&mut d.clone(), t, LIMITS, &KeyEvents::All, *by_owner).is_err());
                        proptest::prop_assert_eq!(snapshot(&replica), after);
                    }
                    Err(_) => proptest::prop_assert_eq!(snapshot(&replica), before.clone()),
                }
                proptest::prop_assert_eq!(&view, &live(&replica), "events replayed differ from the copy");
                if result != Err(Rejected::Invalid) {
                    replica.set_heartbeat(d.heartbeat);
                }
                proptest::prop_assert!(holds_every_last_write_up_to_its_version(&replica, &writes), "{:?}", snapshot(&replica));
            }
            for _ in 0..=ops.len() + 40 {
                if replica.max_version() >= owner.max_version() {
                    break;
                }
                let mut piece = NodeDelta { heartbeat: hb + 1, ..cut(catch_up(&owner, &replica), 1) };
                let was = replica.max_version();
                let r = replica.apply_from(&mut piece, t, LIMITS, &KeyEvents::All, true);
                proptest::prop_assert!(r.is_ok(), "the owner's piece was refused at {:?}", snapshot(&replica));
                for c in r.unwrap() {
                    match c {
                        KeyChange::Upserted(k, v) => { view.insert(k, v); }
                        KeyChange::Deleted(k) => { proptest::prop_assert!(view.remove(&k).is_some()); }
                    }
                }
                proptest::prop_assert!(replica.max_version() > was || piece.reset);
            }
            proptest::prop_assert_eq!(replica.max_version(), owner.max_version());
            proptest::prop_assert_eq!(live(&replica), live(&owner));
            proptest::prop_assert_eq!(&view, &live(&owner));
        }
    }

    #[test]
    fn out_of_order_entries_are_rejected_whole() {
        let t = origin();
        let mut s = NodeState::new(id());
        let bad = NodeDelta {
            tag: id().tag(),
            id: None,
            heartbeat: 1,
            reset: false,
            gc_version: 0,
            from_version: 0,
            max_version: 5,
            entries: vec![
                KeyEntry {
                    key: "a".into(),
                    version: 3,
                    value: None,
                },
                KeyEntry {
                    key: "b".into(),
                    version: 2,
                    value: None,
                },
            ],
        };
        assert_eq!(
            s.apply(&mut bad.clone(), t, LIMITS, &KeyEvents::All),
            Err(Rejected::Invalid)
        );
        assert_eq!(s.max_version(), Version(0));
    }

    /// A value first written without a TTL, then set again unchanged with one, expires at
    /// that deadline (no new version: peers see the same data). (A mutation review found
    /// that ignoring a TTL given to a value that had none failed no test: the lease lived on.)
    #[test]
    fn a_ttl_given_to_an_unchanged_value_that_had_none_expires() {
        let t = origin();
        let secs = Duration::from_secs;
        let mut s = NodeState::new(id());
        assert_eq!(s.set_local("lease", "me".into(), None), Some(1));
        assert_eq!(s.set_local("lease", "me".into(), Some(t + secs(5))), None);
        assert!(s.expire_ttls(t + secs(4)).is_empty());
        assert_eq!(s.expire_ttls(t + secs(5)), vec!["lease".to_owned()]);
        assert_eq!(s.get("lease"), None);
        assert_eq!(s.max_version().0, 2, "the expiry is a delete");
    }

    /// A rebase may take its versions up to `MAX_REBASE_VERSION` itself, not one past it.
    #[test]
    fn a_rebase_may_reach_the_highest_version_and_no_further() {
        let mut s = NodeState::new(id());
        s.set_local("k", "v".into(), None);
        assert_eq!(s.rebase(MAX_REBASE_VERSION - 1), None);
        assert_eq!(s.max_version().0, 1, "refused: nothing changed");
        assert_eq!(s.rebase(MAX_REBASE_VERSION - 2), Some(MAX_REBASE_VERSION));
        assert_eq!(s.version_of("k"), Some(Version(MAX_REBASE_VERSION)));
        assert_eq!(s.get_str("k"), Some("v"));
    }

    /// A delta of `entries` (key, version; each a value), from `from` and claiming `max`.
    fn delta_of(entries: &[(&str, u64)], from: u64, max: u64) -> NodeDelta {
        NodeDelta {
            tag: id().tag(),
            id: None,
            heartbeat: 1,
            reset: false,
            gc_version: 0,
            from_version: from,
            max_version: max,
            entries: entries
                .iter()
                .map(|&(key, version)| KeyEntry {
                    key: key.into(),
                    version,
                    value: Some("v".into()),
                })
                .collect(),
        }
    }

    /// Entries must take distinct versions, each above the delta's start and within what it
    /// claims, and name each key once; one that does not is refused whole (found by a
    /// mutation review: a repeated version, an entry past the claim, one at the start and a
    /// key named in exactly two entries were each taken).
    #[test]
    fn a_delta_with_entries_outside_its_range_or_repeated_is_refused_whole() {
        let t = origin();
        let mut s = NodeState::new(id());
        s.apply(
            &mut delta_of(&[("a", 1), ("b", 2)], 0, 2),
            t,
            LIMITS,
            &KeyEvents::All,
        )
        .unwrap();
        let before = snapshot(&s);
        for (what, mut bad) in [
            ("a repeated version", delta_of(&[("c", 3), ("d", 3)], 2, 3)),
            (
                "an entry past the claim",
                delta_of(&[("c", 3), ("d", 4)], 2, 3),
            ),
            (
                "an entry at the start",
                delta_of(&[("b", 2), ("c", 3)], 2, 3),
            ),
            ("a key named twice", delta_of(&[("c", 3), ("c", 4)], 2, 4)),
            ("a start past the claim", delta_of(&[], 3, 2)),
        ] {
            assert_eq!(
                s.apply(&mut bad, t, LIMITS, &KeyEvents::All),
                Err(Rejected::Invalid),
                "{what}"
            );
            assert_eq!(snapshot(&s), before, "{what}");
        }
    }

    /// A key exactly as long as the limit, a value exactly as large, and a state (reset or
    /// delta) of exactly the byte limit are all taken: the limits are inclusive (found by a
    /// mutation review: `>=` in place of `>` failed no test).
    #[test]
    fn keys_values_and_states_exactly_at_their_limits_are_taken() {
        let t = origin();
        let mut owner = NodeState::new(id());
        let key = "k".repeat(8);
        owner.set_local(&key, vec![b'v'; 16].into(), None);
        let limits = ApplyLimits {
            max_key_len: 8,
            max_value_len: 16,
            max_keys: 10,
            max_bytes: 8 + 16,
        };
        let mut replica = NodeState::new(id());
        replica
            .apply(&mut owner.as_reset_delta(), t, limits, &KeyEvents::All)
            .unwrap();
        assert_eq!(replica.size_bytes(), limits.max_bytes);
        // A delta that takes the copy from below the byte limit to exactly it.
        let mut owner = NodeState::new(id());
        owner.set_local("a", vec![b'v'; 10].into(), None);
        let mut replica = NodeState::new(id());
        replica
            .apply(&mut owner.as_reset_delta(), t, limits, &KeyEvents::All)
            .unwrap();
        owner.set_local("b", vec![b'v'; 12].into(), None);
        replica
            .apply(&mut delta_from(&owner, 1), t, limits, &KeyEvents::All)
            .unwrap();
        assert_eq!(replica.size_bytes(), limits.max_bytes);
        // One byte more is refused.
        owner.set_local("b", vec![b'v'; 13].into(), None);
        assert_eq!(
            replica.apply(&mut delta_from(&owner, 2), t, limits, &KeyEvents::All),
            Err(Rejected::Invalid)
        );
    }

    /// A copy at its byte limit takes a rewrite of a key to a value of the same size: the
    /// key's bytes are counted once, not again for its new value (found by a mutation review:
    /// counting them twice refused it).
    #[test]
    fn a_rewrite_at_the_byte_limit_counts_its_key_once() {
        let t = origin();
        let mut owner = NodeState::new(id());
        owner.set_local("key", "old".into(), None);
        let limits = ApplyLimits {
            max_bytes: 6,
            ..LIMITS
        };
        let mut replica = NodeState::new(id());
        replica
            .apply(&mut owner.as_reset_delta(), t, limits, &KeyEvents::All)
            .unwrap();
        owner.set_local("key", "new".into(), None);
        replica
            .apply(&mut delta_from(&owner, 1), t, limits, &KeyEvents::All)
            .unwrap();
        assert_eq!(replica.get_str("key"), Some("new"));
    }

    /// What the limits count: keys with the reserved prefix (known or not, live or
    /// tombstoned) apart from the user's, and only those: keys that merely sort after the
    /// prefix (`tidings;x`, `u`) or before it (`tidings`) are the user's. A copy counts as its
    /// owner does. (Found by a review's mutations: counting every key from the prefix on as
    /// reserved failed no test.)
    #[test]
    fn usage_counts_keys_with_the_reserved_prefix_apart_and_only_those() {
        let t = origin();
        let mut owner = NodeState::new(id());
        for (k, v) in [
            ("a", "12"),
            ("tidings", "1"),
            ("tidings;x", "123"),
            ("u", "1234"),
            ("b", "gone"),
            (KEY_READY, "1"),
            ("tidings:zz", "12345"),
            ("tidings:gone", "x"),
        ] {
            owner.set_local(k, v.into(), None);
        }
        owner.delete_local("b", t);
        owner.delete_local("tidings:gone", t);
        let want = Usage {
            keys: 5,
            bytes: (1 + 2) + (7 + 1) + (9 + 3) + (1 + 4) + 1,
            reserved_keys: 3,
            reserved_bytes: (13 + 1) + (10 + 5) + 12,
        };
        assert_eq!(owner.usage(), want);
        assert_eq!(want.keys + want.reserved_keys, owner.num_entries());
        assert_eq!(want.bytes + want.reserved_bytes, owner.size_bytes());
        let mut replica = NodeState::new(id());
        replica
            .apply(&mut owner.as_reset_delta(), t, LIMITS, &KeyEvents::All)
            .unwrap();
        assert_eq!(replica.usage(), want);
    }

    /// Reserved keys have a room of their own, `RESERVED_ROOM_KEYS` keys and
    /// `RESERVED_ROOM_BYTES` bytes, whatever the user's limits: with the user's keys at
    /// theirs, a copy filling the room exactly is taken, and one key or one byte more is
    /// refused, as a reset and as a delta; a rewrite at the full room is taken, and so is a new
    /// key in place of a tombstone the delta lets the copy purge. (Found by a review's
    /// mutations: leaving the room's byte bound out failed no test; reserved values longer
    /// than 32 bytes are taken when `max_value_len` is larger.)
    #[test]
    fn the_reserved_room_is_held_to_its_keys_and_bytes() {
        let t = origin();
        let limits = ApplyLimits {
            max_keys: 1,
            max_bytes: 2,
            ..LIMITS
        };
        let full_room = || {
            let mut owner = NodeState::new(id());
            owner.set_local("a", "1".into(), None);
            for i in 0..RESERVED_ROOM_KEYS {
                let key = format!("{RESERVED_PREFIX}{i:0>24}");
                assert_eq!(key.len(), RESERVED_KEY_MAX);
                owner.set_local(&key, vec![b'r'; RESERVED_VALUE_MAX].into(), None);
            }
            owner
        };
        let mut owner = full_room();
        let mut replica = NodeState::new(id());
        replica
            .apply(&mut owner.as_reset_delta(), t, limits, &KeyEvents::All)
            .unwrap();
        let room = Usage {
            keys: 1,
            bytes: 2,
            reserved_keys: RESERVED_ROOM_KEYS,
            reserved_bytes: RESERVED_ROOM_BYTES,
        };
        assert_eq!(replica.usage(), room);
        // One byte more: refused as a delta and as a reset.
        let at = owner.max_version().0;
        let first = format!("{RESERVED_PREFIX}{:0>24}", 0);
        owner.set_local(&first, vec![b'r'; RESERVED_VALUE_MAX + 1].into(), None);
        let before = snapshot(&replica);
        let refused = |replica: &mut NodeState, owner: &NodeState, at: u64| {
            assert_eq!(
                replica.apply(&mut delta_from(owner, at), t, limits, &KeyEvents::All),
                Err(Rejected::Invalid)
            );
            assert_eq!(snapshot(replica), before);
            assert_eq!(
                NodeState::new(id()).apply(&mut owner.as_reset_delta(), t, limits, &KeyEvents::All),
                Err(Rejected::Invalid)
            );
        };
        refused(&mut replica, &owner, at);
        // One key more: refused as a delta and as a reset.
        let mut owner = full_room();
        let at = owner.max_version().0;
        owner.set_local("tidings:x", "1".into(), None);
        refused(&mut replica, &owner, at);
        // A rewrite at the full room counts the key's old value out.
        let mut owner = full_room();
        owner.set_local(&first, vec![b's'; RESERVED_VALUE_MAX].into(), None);
        replica
            .apply(&mut delta_from(&owner, at), t, limits, &KeyEvents::All)
            .unwrap();
        assert_eq!(replica.usage(), room);
        // A reserved key deleted, purged and replaced by another: the copy, holding the
        // tombstone, takes the delta that lets it purge it.
        let at = owner.max_version().0;
        owner.delete_local(&first, t);
        replica
            .apply(&mut delta_from(&owner, at), t, limits, &KeyEvents::All)
            .unwrap();
        let at = owner.max_version().0;
        assert_eq!(owner.purge_tombstones(t, Duration::ZERO), 1);
        let new = "tidings:new";
        let fits = RESERVED_KEY_MAX + RESERVED_VALUE_MAX - new.len();
        owner.set_local(new, vec![b'n'; fits].into(), None);
        replica
            .apply(&mut delta_from(&owner, at), t, limits, &KeyEvents::All)
            .unwrap();
        assert_eq!(replica.usage(), room);
        assert_eq!(snapshot(&replica), snapshot(&owner));
    }

    /// What a delta lets this copy purge is discounted from the limit check only for the
    /// tombstones themselves: a live value is not purged, and a tombstone the delta writes
    /// again was counted with the delta's entry already. A delta that would leave the copy
    /// over its key limit is refused either way (found by a mutation review: discounting
    /// either took it).
    #[test]
    fn only_tombstones_a_delta_purges_and_does_not_rewrite_are_discounted_from_the_limit() {
        let t = origin();
        let limits = ApplyLimits {
            max_keys: 4,
            ..LIMITS
        };
        // Live values below the gc are not discounted: k0 and k1 live, d deleted and purged
        // (v3, v4), then three new keys make five live ones.
        let mut owner = NodeState::new(id());
        owner.set_local("k0", "v".into(), None); // v1
        owner.set_local("k1", "v".into(), None); // v2
        owner.set_local("d", "v".into(), None); // v3
        owner.delete_local("d", t); // v4
        let mut replica = NodeState::new(id());
        replica
            .apply(&mut owner.as_reset_delta(), t, limits, &KeyEvents::All)
            .unwrap();
        owner.purge_tombstones(t, Duration::ZERO);
        for k in ["n0", "n1", "n2"] {
            owner.set_local(k, "v".into(), None);
        }
        assert_eq!(
            replica.apply(&mut delta_from(&owner, 4), t, limits, &KeyEvents::All),
            Err(Rejected::Invalid),
            "five live keys over a limit of four"
        );
        // A tombstone the delta writes again is not discounted: d0 and d1 deleted (the copy
        // holds their tombstones), purged by the owner, then d0 written again and three new
        // keys. Only d1's tombstone goes, leaving k, d0, n0, n1 and n2.
        let mut owner = NodeState::new(id());
        owner.set_local("k", "v".into(), None); // v1
        owner.set_local("d0", "v".into(), None); // v2
        owner.set_local("d1", "v".into(), None); // v3
        owner.delete_local("d0", t); // v4
        owner.delete_local("d1", t); // v5
        let mut replica = NodeState::new(id());
        replica
            .apply(&mut owner.as_reset_delta(), t, limits, &KeyEvents::All)
            .unwrap();
        owner.purge_tombstones(t, Duration::ZERO);
        for k in ["d0", "n0", "n1", "n2"] {
            owner.set_local(k, "v".into(), None);
        }
        assert_eq!(
            replica.apply(&mut delta_from(&owner, 5), t, limits, &KeyEvents::All),
            Err(Rejected::Invalid),
            "k, d0, n0, n1, n2: five keys over a limit of four"
        );
        // Without n2, four keys: taken, and the tombstone of d1 purged.
        let mut owner2 = NodeState::new(id());
        owner2.set_local("k", "v".into(), None);
        owner2.set_local("d0", "v".into(), None);
        owner2.set_local("d1", "v".into(), None);
        owner2.delete_local("d0", t);
        owner2.delete_local("d1", t);
        owner2.purge_tombstones(t, Duration::ZERO);
        for k in ["d0", "n0", "n1"] {
            owner2.set_local(k, "v".into(), None);
        }
        replica
            .apply(&mut delta_from(&owner2, 5), t, limits, &KeyEvents::All)
            .unwrap();
        assert_eq!(snapshot(&replica), snapshot(&owner2));
    }

    /// An owner that wrote a, b, k (v1-v3), deleted k (v4) and purged it (gc 4), and a copy
    /// that took all four versions before the purge.
    fn purged_owner_and_full_copy() -> (Instant, NodeState, NodeState) {
        let t = origin();
        let mut owner = NodeState::new(id());
        owner.set_local("a", "1".into(), None); // v1
        owner.set_local("b", "1".into(), None); // v2
        owner.set_local("k", "1".into(), None); // v3
        owner.delete_local("k", t); // v4
        let mut full = NodeState::new(id());
        full.apply(&mut owner.as_reset_delta(), t, LIMITS, &KeyEvents::All)
            .unwrap();
        owner.purge_tombstones(t, Duration::ZERO);
        (t, owner, full)
    }

    /// A copy that holds every version up to the gc of a cut reset (it never purged) refuses
    /// it: taking it would drop the keys past the cut, heard deleted until they came back
    /// (found by a mutation review: `<=` for `<` took it).
    #[test]
    fn a_copy_holding_up_to_the_gc_of_a_cut_reset_refuses_it() {
        let (t, owner, mut full) = purged_owner_and_full_copy();
        assert_eq!((full.max_version().0, full.gc_version().0), (4, 0));
        assert_eq!(owner.gc_version().0, 4);
        assert_eq!(
            full.apply(
                &mut cut(owner.as_reset_delta(), 1),
                t,
                LIMITS,
                &KeyEvents::All
            ),
            Err(Rejected::Stale)
        );
        assert_eq!(full.get_str("b"), Some("1"));
        assert_eq!(full.max_version().0, 4);
    }

    /// A copy cut below a purged gc `g` takes the state of a copy that never purged but holds
    /// exactly up to `g`, by reset or by delta: it holds every deletion up to there (found by a
    /// mutation review: `<=` for `<` refused both, and only the owner could fill it in).
    #[test]
    fn a_copy_cut_below_a_gc_takes_a_copy_holding_exactly_up_to_it() {
        let (t, owner, full) = purged_owner_and_full_copy();
        let cut_copy = || {
            let mut r = NodeState::new(id());
            r.apply(
                &mut cut(owner.as_reset_delta(), 1),
                t,
                LIMITS,
                &KeyEvents::All,
            )
            .unwrap();
            assert_eq!((r.max_version().0, r.gc_version().0), (1, 4));
            r
        };
        let mut by_reset = cut_copy();
        by_reset
            .apply(&mut full.as_reset_delta(), t, LIMITS, &KeyEvents::All)
            .unwrap();
        let mut by_delta = cut_copy();
        by_delta
            .apply(&mut delta_from(&full, 1), t, LIMITS, &KeyEvents::All)
            .unwrap();
        for r in [&by_reset, &by_delta] {
            assert_eq!(r.max_version().0, 4);
            assert_eq!((r.get_str("a"), r.get_str("b")), (Some("1"), Some("1")));
            assert_eq!(r.get("k"), None);
        }
    }

    /// A reset that drops keys reports as deleted only those the filter wants, as a delta
    /// does (found by a mutation review: a reset reported every key it dropped).
    #[test]
    fn a_reset_reports_only_the_wanted_deletions() {
        let t = origin();
        let mut owner = NodeState::new(id());
        owner.set_local("svc/a", "1".into(), None);
        owner.set_local("other", "2".into(), None);
        let wanted = KeyEvents::Prefixes(vec!["svc/".into()]);
        let mut replica = NodeState::new(id());
        replica
            .apply(&mut owner.as_reset_delta(), t, LIMITS, &wanted)
            .unwrap();
        owner.delete_local("svc/a", t);
        owner.delete_local("other", t);
        owner.purge_tombstones(t, Duration::ZERO);
        let changes = replica
            .apply(&mut owner.as_reset_delta(), t, LIMITS, &wanted)
            .unwrap();
        assert_eq!(changes, vec![KeyChange::Deleted("svc/a".into())]);
        assert_eq!(replica.get("other"), None);
    }

    /// A reset that replaces a copy (the copy misses purges) is held to the byte limit too,
    /// not only to the key count: replacing, it skips the count of what a delta adds, so only
    /// the check of the reset whole keeps the copy within its limits (found by a mutation
    /// review: without the byte check, a reset of few but large values was taken).
    #[test]
    fn a_replacing_reset_over_the_byte_limit_is_refused() {
        let t = origin();
        let mut owner = NodeState::new(id());
        for k in ["a", "b", "c"] {
            owner.set_local(k, "v".into(), None);
        }
        let mut replica = NodeState::new(id());
        replica
            .apply(&mut owner.as_reset_delta(), t, LIMITS, &KeyEvents::All)
            .unwrap();
        let before = snapshot(&replica);
        owner.set_local("big", "a value far over the limit".into(), None);
        owner.delete_local("a", t);
        owner.purge_tombstones(t, Duration::ZERO);
        assert!(replica.max_version() < owner.gc_version());
        // Room for the keys, not for their bytes.
        let limits = ApplyLimits {
            max_keys: 5,
            max_bytes: replica.size_bytes() + 8,
            ..LIMITS
        };
        assert_eq!(
            replica.apply(&mut owner.as_reset_delta(), t, limits, &KeyEvents::All),
            Err(Rejected::Invalid)
        );
        assert_eq!(snapshot(&replica), before);
    }

    /// A copy cut short (below its own gc) takes a later reset whole, even one whose gc it
    /// reaches: merged above the cut instead, it would keep none of the reset's entries below
    /// the cut, and miss a key the reset holds there that the cut copy's sender had rewritten
    /// past its cut (found by a mutation review: without the cut-short clause, `k` read as
    /// absent in a copy claiming the version where it held "old").
    #[test]
    fn a_copy_cut_short_is_replaced_by_a_reset_it_reaches_the_gc_of() {
        let t = origin();
        let mut owner = NodeState::new(id());
        owner.set_local("k", "old".into(), None); // v1
        owner.set_local("c", "1".into(), None); // v2
        owner.set_local("a", "1".into(), None); // v3
        owner.set_local("b", "1".into(), None); // v4
        owner.delete_local("a", t); // v5
        owner.set_local("f", "1".into(), None); // v6
        let earlier = owner.as_reset_delta();
        owner.set_local("k", "new".into(), None); // v7
        owner.purge_tombstones(t, Duration::ZERO);
        assert_eq!(owner.gc_version().0, 5);
        let mut copy = NodeState::new(id());
        copy.apply(
            &mut cut(owner.as_reset_delta(), 1),
            t,
            LIMITS,
            &KeyEvents::All,
        )
        .unwrap();
        assert_eq!((copy.max_version().0, copy.gc_version().0), (2, 5));
        // A reset of the owner's state at v6, late: newer than the cut copy and holding
        // everything up to its gc (0), so taken.
        let mut late = earlier.clone();
        copy.apply(&mut late, t, LIMITS, &KeyEvents::All).unwrap();
        let mut whole = NodeState::new(id());
        whole
            .apply(&mut earlier.clone(), t, LIMITS, &KeyEvents::All)
            .unwrap();
        assert_eq!(copy.get_str("k"), Some("old"));
        assert_eq!(snapshot(&copy), snapshot(&whole));
    }

    /// The ring key is read only when it is exactly 24 bytes, three big-endian words, and
    /// reads back what was written: a peer's other value (another version's format, such as
    /// the 32 hex digits this one gossiped before it went binary) reads as none, never as some
    /// other ring's.
    #[test]
    fn the_ring_key_reads_only_three_binary_words() {
        let read = |v: Bytes| {
            let mut s = NodeState::new(id());
            s.set_local(KEY_RING, v, None);
            s.ring_key()
        };
        let key = RingKey {
            prev: 0xff,
            cur: 0x0123_4567_89ab_cdef,
            taken_at: 7,
        };
        assert_eq!(key.encode().len(), 24);
        assert_eq!(read(key.encode()), Some(key));
        assert_eq!(
            read(Bytes::from_static(
                b"\0\0\0\0\0\0\0\xff\x01\x23\x45\x67\x89\xab\xcd\xef\0\0\0\0\0\0\0\x07"
            )),
            Some(key),
            "big-endian"
        );
        assert!(key.encode().len() <= RESERVED_VALUE_MAX);
        assert_eq!(read(Bytes::from(vec![0; 23])), None, "23 bytes");
        assert_eq!(read(Bytes::from(vec![0; 25])), None, "25 bytes");
        assert_eq!(read(Bytes::from(vec![0; 16])), None, "two words");
        let hex = Bytes::from_static(b"00000000000000ff0123456789abcdef");
        assert_eq!(read(hex), None, "hex");
        assert_eq!(NodeState::new(id()).ring_key(), None, "no key");
    }
}
