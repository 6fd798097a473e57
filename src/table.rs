//! The table of known nodes: a slab of peers, an index by tag, a membership fingerprint and a
//! lazily built sorted order.
//!
//! Each entry has three parts: the value (`T`, the bulk of a peer: its keys, its detector), a
//! small `H` kept in a dense array of its own, and its heartbeat in a denser one still. Gossip
//! reads the small part of every peer many times a round (versions, liveness); keeping those
//! together means a round's scans touch a few kilobytes instead of one cache line per peer
//! struct. Every digest entry and beat a node receives is compared with the heartbeat it
//! holds, most of them to find nothing new: 8 bytes a peer answer that, so the comparisons of a
//! few hundred nodes sharing a host (or a simulator) stay in cache.
//!
//! Two nodes that know exactly the same set of incarnations have the same fingerprint, and then
//! the same sorted order, so digests between them can name a node by its 2-byte position in that
//! order instead of its 8-byte tag (see `wire::Digest::indexed`).

// The one HashMap of the core (clippy.toml forbids them for their per-process order): it is
// only looked up, and the one iteration (`ensure_order`) sorts what it reads.
#[allow(clippy::disallowed_types)]
use std::collections::HashMap;

use crate::id::Tag;

/// One entry of the dense small parts, on a cache line of its own when it fits one (a peer's
/// `Hot` with its tag takes 64 bytes): learned heartbeats write them in no useful order, and an
/// entry across two lines cost two misses.
#[derive(Debug)]
#[repr(align(64))]
struct Line<T>(T);

/// Nodes by tag, with O(1) lookup, O(1) fingerprint upkeep and positions on demand.
///
/// The index is a `HashMap` with std's keyed hasher (tags come from peers, so a predictable
/// hash would let one flood a bucket); nothing iterates it except `ensure_order`, which sorts,
/// so its random order never reaches the protocol and simulations stay deterministic. A
/// `BTreeMap` cost about ten cache misses a lookup at 1,000 nodes, once per digest entry.
#[derive(Debug)]
pub(crate) struct Table<T, H> {
    #[allow(clippy::disallowed_types)]
    index: HashMap<Tag, u32>,
    /// The values, by slot; a free slot holds `T::default()`. Which slots are taken, and by
    /// which tag, is in `hot`: a peer's record is the largest part, and reading whether it is
    /// there (an `Option`'s discriminant) was a cache line of its own for every learned
    /// heartbeat.
    slots: Vec<T>,
    /// The small part of each entry, by slot (`None` where `slots` is free).
    hot: Vec<Line<Option<(Tag, H)>>>,
    /// Each entry's heartbeat, by slot (0 where `slots` is free).
    beats: Vec<u64>,
    free: Vec<u32>,
    fingerprint: u64,
    /// Tags (with their slots) in order; rebuilt when stale and asked for.
    order: Vec<(Tag, u32)>,
    order_valid: bool,
    /// Whether every entry sits at the slot of its position in tag order (see `relayout`).
    in_tag_order: bool,
    /// Calls of `relayout_if_settled` since membership last changed.
    quiet: u32,
}

impl<T: Default, H> Table<T, H> {
    pub(crate) fn new() -> Self {
        Self {
            #[allow(clippy::disallowed_types)]
            index: HashMap::new(),
            slots: Vec::new(),
            hot: Vec::new(),
            beats: Vec::new(),
            free: Vec::new(),
            fingerprint: 0,
            order: Vec::new(),
            order_valid: true,
            in_tag_order: true,
            quiet: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// Order-independent summary of the tag set; 0 only for the empty set (practically).
    pub(crate) fn fingerprint(&self) -> u64 {
        self.fingerprint ^ self.index.len() as u64
    }

    pub(crate) fn contains(&self, tag: &Tag) -> bool {
        self.index.contains_key(tag)
    }

    pub(crate) fn get(&self, tag: &Tag) -> Option<&T> {
        let slot = *self.index.get(tag)?;
        self.slots.get(slot as usize)
    }

    pub(crate) fn get_mut(&mut self, tag: &Tag) -> Option<&mut T> {
        let slot = *self.index.get(tag)?;
        self.slots.get_mut(slot as usize)
    }

    /// Both parts of the entry for `tag`.
    pub(crate) fn get_both(&self, tag: &Tag) -> Option<(&T, &H)> {
        self.at_slot_both(*self.index.get(tag)?)
    }

    /// Both parts of the entry for `tag`, mutably.
    pub(crate) fn get_both_mut(&mut self, tag: &Tag) -> Option<(&mut T, &mut H)> {
        let slot = *self.index.get(tag)?;
        self.at_slot_both_mut(slot)
    }

    /// The small part of the entry for `tag`.
    pub(crate) fn hot(&self, tag: &Tag) -> Option<&H> {
        self.hot_at(*self.index.get(tag)?)
    }

    /// The small part of the entry at `slot`.
    pub(crate) fn hot_at(&self, slot: u32) -> Option<&H> {
        self.hot.get(slot as usize)?.0.as_ref().map(|(_, h)| h)
    }

    /// The heartbeat of the entry at `slot` (0 if the slot is free).
    pub(crate) fn beat_at(&self, slot: u32) -> u64 {
        self.beats.get(slot as usize).copied().unwrap_or(0)
    }

    /// Whether every entry's recorded heartbeat is `beat` of its value, and every free slot's
    /// 0 (a check for debug builds and tests).
    pub(crate) fn beats_match(&self, beat: impl Fn(&T) -> u64) -> bool {
        self.slots
            .iter()
            .zip(&self.hot)
            .zip(&self.beats)
            .all(|((v, h), &b)| match h.0 {
                Some(_) => beat(v) == b,
                None => b == 0,
            })
    }

    /// Records the heartbeat of the entry for `tag` (the caller keeps it equal to the one in
    /// the entry's value).
    pub(crate) fn set_beat(&mut self, tag: &Tag, beat: u64) {
        if let Some(&slot) = self.index.get(tag)
            && let Some(b) = self.beats.get_mut(slot as usize)
        {
            *b = beat;
        }
    }

    /// The small part of the entry at `slot`, if it still holds `tag`.
    pub(crate) fn hot_at_of(&self, slot: u32, tag: Tag) -> Option<&H> {
        match &self.hot.get(slot as usize)?.0 {
            Some((t, h)) if *t == tag => Some(h),
            _ => None,
        }
    }

    /// Inserts (or replaces) the entry for `tag` with its heartbeat; returns its slot.
    pub(crate) fn insert(&mut self, tag: Tag, value: T, hot: H, beat: u64) -> u32 {
        if let Some(&slot) = self.index.get(&tag) {
            self.slots[slot as usize] = value;
            self.hot[slot as usize] = Line(Some((tag, hot)));
            self.beats[slot as usize] = beat;
            return slot;
        }
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = value;
                self.hot[s as usize] = Line(Some((tag, hot)));
                self.beats[s as usize] = beat;
                s
            }
            None => {
                self.slots.push(value);
                self.hot.push(Line(Some((tag, hot))));
                self.beats.push(beat);
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(tag, slot);
        self.fingerprint = self.fingerprint.wrapping_add(mix(tag.0));
        self.order_valid = false;
        self.in_tag_order = false;
        self.quiet = 0;
        slot
    }

    pub(crate) fn remove(&mut self, tag: &Tag) -> Option<(T, H)> {
        let slot = self.index.remove(tag)?;
        self.fingerprint = self.fingerprint.wrapping_sub(mix(tag.0));
        self.order_valid = false;
        self.in_tag_order = false;
        self.quiet = 0;
        self.free.push(slot);
        self.beats[slot as usize] = 0;
        let hot = self.hot[slot as usize].0.take().map(|(_, h)| h)?;
        Some((std::mem::take(&mut self.slots[slot as usize]), hot))
    }

    /// Every node, in slot order (cheaper; no particular order).
    pub(crate) fn values(&self) -> impl Iterator<Item = (&T, &H)> + '_ {
        self.slots
            .iter()
            .zip(&self.hot)
            .filter_map(|(v, h)| h.0.as_ref().map(|(_, h)| (v, h)))
    }

    /// Every node, mutably, in slot order.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = (Tag, &mut T, &mut H)> + '_ {
        self.slots
            .iter_mut()
            .zip(self.hot.iter_mut())
            .filter_map(|(v, h)| h.0.as_mut().map(|(t, h)| (*t, v, h)))
    }

    /// Every node's small part, mutably, in slot order.
    pub(crate) fn hots_mut(&mut self) -> impl Iterator<Item = (Tag, &mut H)> + '_ {
        self.hot
            .iter_mut()
            .filter_map(|l| l.0.as_mut().map(|(t, h)| (*t, h)))
    }

    /// Tags and slots in tag order. Call [`Table::ensure_order`] first.
    pub(crate) fn ordered(&self) -> &[(Tag, u32)] {
        debug_assert!(self.order_valid);
        &self.order
    }

    /// Builds the tag order if membership changed since it was last built.
    pub(crate) fn ensure_order(&mut self) {
        if !self.order_valid {
            self.order.clear();
            self.order.extend(self.index.iter().map(|(t, s)| (*t, *s)));
            self.order.sort_unstable_by_key(|(t, _)| *t);
            self.order_valid = true;
        }
    }

    /// Moves every entry to the slot of its position in tag order, once membership has not
    /// changed for `settle` calls (a node calls this once per round, when it holds no slot
    /// numbers). Digests name nodes by position, ascending, and the window walks them in tag
    /// order: with entries where they were first inserted (the order nodes were learned in),
    /// every such step was a random access into the dense arrays and the records, a cache
    /// miss each among hundreds of nodes in one process; in tag order they are sequential.
    /// Slots read before a relayout are invalid after it.
    pub(crate) fn relayout_if_settled(&mut self, settle: u32) {
        if self.in_tag_order {
            return;
        }
        self.quiet = self.quiet.saturating_add(1);
        if self.quiet <= settle {
            return;
        }
        self.ensure_order();
        // In place (new vectors left the old ones' memory fragmented: 0.6 GB more peak RSS in
        // a 1,000-node simulation): `dest[s]` is where the entry now in slot `s` goes, free
        // slots after the live ones; then each cycle of that permutation is rotated by swaps.
        let len = self.slots.len();
        let n = self.order.len();
        let mut dest = vec![u32::MAX; len];
        for (position, (tag, slot)) in self.order.iter_mut().enumerate() {
            if let Some(d) = dest.get_mut(*slot as usize) {
                *d = position as u32;
            }
            *slot = position as u32;
            self.index.insert(*tag, position as u32);
        }
        for (free, d) in (n as u32..).zip(dest.iter_mut().filter(|d| **d == u32::MAX)) {
            *d = free;
        }
        for i in 0..len {
            while dest[i] as usize != i {
                let j = dest[i] as usize;
                self.slots.swap(i, j);
                self.hot.swap(i, j);
                self.beats.swap(i, j);
                dest.swap(i, j);
            }
        }
        self.slots.truncate(n);
        self.hot.truncate(n);
        self.beats.truncate(n);
        self.free.clear();
        self.in_tag_order = true;
    }

    /// The position of `tag` in tag order. Call [`Table::ensure_order`] first.
    pub(crate) fn position(&self, tag: &Tag) -> Option<u32> {
        debug_assert!(self.order_valid);
        self.order
            .binary_search_by(|(t, _)| t.cmp(tag))
            .ok()
            .map(|p| p as u32)
    }

    /// The position of `tag`, stored at `slot`, in tag order. Call [`Table::ensure_order`]
    /// first. Once the table is laid out in tag order (most of the time) that is the slot
    /// itself, checked in the order array, with no search: a SynAck's beats name hundreds of
    /// nodes by position.
    pub(crate) fn position_at(&self, tag: &Tag, slot: u32) -> Option<u32> {
        if self.in_tag_order && self.order.get(slot as usize).is_some_and(|(t, _)| t == tag) {
            return Some(slot);
        }
        self.position(tag)
    }

    /// The tag and slot at `position` in tag order. Call [`Table::ensure_order`] first.
    pub(crate) fn at(&self, position: u32) -> Option<(Tag, u32)> {
        debug_assert!(self.order_valid);
        self.order.get(position as usize).copied()
    }

    /// The slot at `position` in tag order: the position itself once the table is laid out in
    /// tag order (with no free slot), so that a SynAck's hundreds of beats do not read the
    /// order array. Call [`Table::ensure_order`] first.
    pub(crate) fn slot_at(&self, position: u32) -> Option<u32> {
        debug_assert!(self.order_valid);
        if self.in_tag_order {
            return ((position as usize) < self.hot.len()).then_some(position);
        }
        self.order.get(position as usize).map(|&(_, slot)| slot)
    }

    /// The tag of the entry at `slot`.
    pub(crate) fn tag_at(&self, slot: u32) -> Option<Tag> {
        self.hot.get(slot as usize)?.0.as_ref().map(|(t, _)| *t)
    }

    /// Where `tag` is stored; slots stay valid until the node is removed.
    pub(crate) fn slot(&self, tag: &Tag) -> Option<u32> {
        self.index.get(tag).copied()
    }

    pub(crate) fn at_slot(&self, slot: u32) -> Option<&T> {
        self.at_slot_both(slot).map(|(v, _)| v)
    }

    pub(crate) fn at_slot_both(&self, slot: u32) -> Option<(&T, &H)> {
        let h = self.hot.get(slot as usize)?.0.as_ref().map(|(_, h)| h)?;
        Some((self.slots.get(slot as usize)?, h))
    }

    /// All three parts of the entry at `slot` (value, small part, heartbeat), if it still holds
    /// `tag` (a slot read before a membership change may have been freed and reused).
    pub(crate) fn at_slot_of_mut(
        &mut self,
        slot: u32,
        tag: Tag,
    ) -> Option<(&mut T, &mut H, &mut u64)> {
        match &mut self.hot.get_mut(slot as usize)?.0 {
            Some((t, h)) if *t == tag => Some((
                self.slots.get_mut(slot as usize)?,
                h,
                self.beats.get_mut(slot as usize)?,
            )),
            _ => None,
        }
    }

    pub(crate) fn at_slot_both_mut(&mut self, slot: u32) -> Option<(&mut T, &mut H)> {
        let h = self
            .hot
            .get_mut(slot as usize)?
            .0
            .as_mut()
            .map(|(_, h)| h)?;
        Some((self.slots.get_mut(slot as usize)?, h))
    }
}

/// splitmix64's finalizer: spreads tags so that their wrapping sum is a good set hash.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_depends_on_the_set_not_the_history() {
        let mut a = Table::new();
        let mut b = Table::new();
        for t in [5u64, 9, 1, 7] {
            a.insert(Tag(t), (), (), 0);
        }
        for t in [7u64, 2, 1, 9, 5] {
            b.insert(Tag(t), (), (), 0);
        }
        assert_ne!(a.fingerprint(), b.fingerprint());
        b.remove(&Tag(2));
        assert_eq!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn positions_follow_tag_order_across_removals() {
        let mut t = Table::new();
        for x in [50u64, 10, 40, 20, 30] {
            t.insert(Tag(x), x, (), x);
        }
        t.remove(&Tag(20));
        t.insert(Tag(25), 25, (), 25);
        t.ensure_order();
        let tags: Vec<u64> = (0..5).map(|p| t.at(p).unwrap().0.0).collect();
        assert_eq!(tags, vec![10, 25, 30, 40, 50]);
        assert_eq!(t.position(&Tag(40)), Some(3));
        assert_eq!(t.position(&Tag(20)), None);
        assert_eq!(t.get(&Tag(25)), Some(&25));
        let ordered: Vec<u64> = t.ordered().iter().map(|(k, _)| k.0).collect();
        assert_eq!(ordered, vec![10, 25, 30, 40, 50]);
    }

    #[test]
    fn a_relayout_puts_entries_in_tag_order_and_keeps_them() {
        let mut t = Table::new();
        for x in [50u64, 10, 40, 20, 30, 60] {
            t.insert(Tag(x), x, x as u32, x + 1000);
        }
        t.remove(&Tag(20));
        // Not before membership has been quiet for `settle` calls.
        t.relayout_if_settled(1);
        assert_eq!(t.slot(&Tag(10)), Some(1));
        t.relayout_if_settled(1);
        for (position, x) in [10u64, 30, 40, 50, 60].into_iter().enumerate() {
            let slot = t.slot(&Tag(x)).unwrap();
            assert_eq!(slot, position as u32, "tag {x}");
            assert_eq!(t.at(position as u32), Some((Tag(x), slot)));
            assert_eq!(t.slot_at(position as u32), Some(slot));
            assert_eq!(t.tag_at(slot), Some(Tag(x)));
            assert_eq!(t.at_slot_both(slot), Some((&x, &(x as u32))));
            assert_eq!(t.beat_at(slot), x + 1000);
        }
        assert!(t.beats_match(|v| v + 1000));
        // Positions by slot need no search now, and agree with the search.
        for x in [10u64, 30, 40, 50, 60] {
            let slot = t.slot(&Tag(x)).unwrap();
            assert_eq!(t.position_at(&Tag(x), slot), t.position(&Tag(x)));
            assert_eq!(t.position_at(&Tag(x), slot), Some(slot));
        }
        // A wrong slot (a stale one) falls back to the search.
        assert_eq!(t.position_at(&Tag(30), 4), Some(1));
        assert_eq!(t.position_at(&Tag(31), 1), None);
        // A change starts the count again, and slots are handed out as usual meanwhile.
        let s = t.insert(Tag(5), 5, 5, 1005);
        assert_eq!(s, 5);
        t.relayout_if_settled(1);
        assert_eq!(t.slot(&Tag(5)), Some(5));
        t.ensure_order();
        assert_eq!(
            t.position_at(&Tag(5), 5),
            Some(0),
            "out of tag order: searched"
        );
        // Out of tag order, a position's slot comes from the order array.
        assert_eq!(t.slot_at(0), Some(5));
        assert_eq!(t.slot_at(1), Some(0));
        assert_eq!(t.slot_at(6), None);
        t.relayout_if_settled(1);
        assert_eq!(t.slot(&Tag(5)), Some(0));
        assert_eq!(t.get_both(&Tag(60)), Some((&60, &60)));
        assert_eq!(t.len(), 6);
    }

    #[test]
    fn the_small_part_follows_its_entry_through_slot_reuse() {
        let mut t = Table::new();
        let a = t.insert(Tag(1), "a", 10u32, 100);
        t.insert(Tag(2), "b", 20, 200);
        assert_eq!(t.remove(&Tag(1)), Some(("a", 10)));
        assert_eq!(t.beat_at(a), 0, "a freed slot holds no heartbeat");
        assert_eq!(t.at_slot(a), None, "a freed slot holds no entry");
        assert_eq!(t.at_slot_both_mut(a), None);
        assert_eq!(t.values().count(), 1);
        assert_eq!(t.remove(&Tag(1)), None);
        let c = t.insert(Tag(3), "c", 30, 300);
        assert_eq!(a, c, "the freed slot is reused");
        assert_eq!(
            t.at_slot_of_mut(c, Tag(1)),
            None,
            "a stale slot no longer answers"
        );
        assert_eq!(t.get_both(&Tag(3)), Some((&"c", &30)));
        assert_eq!(t.beat_at(c), 300);
        t.set_beat(&Tag(3), 301);
        t.set_beat(&Tag(1), 101);
        assert_eq!(t.beat_at(c), 301);
        assert!(t.beats_match(|v| match *v {
            "b" => 200,
            _ => 301,
        }));
        let mut hots: Vec<(u64, u32)> = t.hots_mut().map(|(tag, h)| (tag.0, *h)).collect();
        hots.sort();
        assert_eq!(hots, vec![(2, 20), (3, 30)]);
    }

    /// Inserting a tag already held replaces its entry whole, its heartbeat too, in the same
    /// slot and with the same fingerprint. (A mutation review found the heartbeat's write on
    /// that path unpinned: the dense copy kept the old one.)
    #[test]
    fn inserting_a_held_tag_replaces_all_three_parts_in_place() {
        let mut t = Table::new();
        t.insert(Tag(2), 2u64, 2u32, 200);
        let s = t.insert(Tag(1), 1, 10, 100);
        let fp = t.fingerprint();
        assert_eq!(t.insert(Tag(1), 3, 30, 300), s);
        assert_eq!(t.get_both(&Tag(1)), Some((&3, &30)));
        assert_eq!(t.beat_at(s), 300);
        assert!(t.beats_match(|v| v * 100));
        assert_eq!(t.fingerprint(), fp, "the set did not change");
        assert_eq!(t.len(), 2);
    }

    /// Laid out in tag order, a position at or past the membership has no slot (a digest
    /// naming it is malformed), just as out of tag order.
    #[test]
    fn no_slot_at_the_position_past_the_last_in_tag_order() {
        let mut t = Table::new();
        for x in [30u64, 10, 20] {
            t.insert(Tag(x), x, (), x);
        }
        t.relayout_if_settled(0);
        t.ensure_order();
        assert_eq!(t.slot_at(2), Some(2));
        assert_eq!(t.slot_at(3), None);
        assert_eq!(t.slot_at(4), None);
    }

    /// A slot freed and reused answers `hot_at_of` only for the tag it now holds: callers keep
    /// slots across a delta that may expire a node and hand its slot to another.
    #[test]
    fn a_reused_slot_answers_hot_at_of_only_for_its_new_tag() {
        let mut t = Table::new();
        let a = t.insert(Tag(1), (), 10u32, 100);
        t.insert(Tag(2), (), 20, 200);
        assert_eq!(t.hot_at_of(a, Tag(1)), Some(&10));
        assert_eq!(t.hot_at_of(a, Tag(2)), None);
        t.remove(&Tag(1));
        assert_eq!(t.hot_at_of(a, Tag(1)), None, "a freed slot answered");
        assert_eq!(t.insert(Tag(3), (), 30, 300), a);
        assert_eq!(
            t.hot_at_of(a, Tag(1)),
            None,
            "a stale slot answered for its old tag"
        );
        assert_eq!(t.hot_at_of(a, Tag(3)), Some(&30));
    }
}
