//! The table of known nodes: a slab of peers, an index by tag, a membership fingerprint and a
//! lazily built sorted order.
//!
//! Two nodes that know exactly the same set of incarnations have the same fingerprint, and then
//! the same sorted order, so digests between them can name a node by its 2-byte position in that
//! order instead of its 8-byte tag (see `wire::Digest::indexed`).

use std::collections::BTreeMap;

use crate::id::Tag;

/// Nodes by tag, with O(log n) lookup, O(1) fingerprint upkeep and positions on demand.
#[derive(Debug)]
pub(crate) struct Table<T> {
    index: BTreeMap<Tag, u32>,
    slots: Vec<Option<(Tag, T)>>,
    free: Vec<u32>,
    fingerprint: u64,
    /// Tags (with their slots) in order; rebuilt when stale and asked for.
    order: Vec<(Tag, u32)>,
    order_valid: bool,
}

impl<T> Table<T> {
    pub(crate) fn new() -> Self {
        Self {
            index: BTreeMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            fingerprint: 0,
            order: Vec::new(),
            order_valid: true,
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
        self.slots[slot as usize].as_ref().map(|(_, v)| v)
    }

    pub(crate) fn get_mut(&mut self, tag: &Tag) -> Option<&mut T> {
        let slot = *self.index.get(tag)?;
        self.slots[slot as usize].as_mut().map(|(_, v)| v)
    }

    pub(crate) fn insert(&mut self, tag: Tag, value: T) {
        if let Some(&slot) = self.index.get(&tag) {
            self.slots[slot as usize] = Some((tag, value));
            return;
        }
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some((tag, value));
                s
            }
            None => {
                self.slots.push(Some((tag, value)));
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(tag, slot);
        self.fingerprint = self.fingerprint.wrapping_add(mix(tag.0));
        self.order_valid = false;
    }

    pub(crate) fn remove(&mut self, tag: &Tag) -> Option<T> {
        let slot = self.index.remove(tag)?;
        self.fingerprint = self.fingerprint.wrapping_sub(mix(tag.0));
        self.order_valid = false;
        self.free.push(slot);
        self.slots[slot as usize].take().map(|(_, v)| v)
    }

    /// Every node in tag order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Tag, &T)> + '_ {
        self.index
            .iter()
            .filter_map(|(t, s)| self.slots[*s as usize].as_ref().map(|(_, v)| (*t, v)))
    }

    /// Every node, in slot order (cheaper; no particular order).
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> + '_ {
        self.slots.iter().filter_map(|s| s.as_ref().map(|(_, v)| v))
    }

    /// Every node, mutably, in slot order.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = (Tag, &mut T)> + '_ {
        self.slots
            .iter_mut()
            .filter_map(|s| s.as_mut().map(|(t, v)| (*t, v)))
    }

    /// Nodes in tag order starting at `from`, wrapping around once.
    pub(crate) fn iter_from(&self, from: Tag) -> impl Iterator<Item = (Tag, &T)> + '_ {
        self.index
            .range(from..)
            .chain(self.index.range(..from))
            .filter_map(|(t, s)| self.slots[*s as usize].as_ref().map(|(_, v)| (*t, v)))
    }

    /// Builds the tag order if membership changed since it was last built.
    pub(crate) fn ensure_order(&mut self) {
        if !self.order_valid {
            self.order.clear();
            self.order.extend(self.index.iter().map(|(t, s)| (*t, *s)));
            self.order_valid = true;
        }
    }

    /// The position of `tag` in tag order. Call [`Table::ensure_order`] first.
    pub(crate) fn position(&self, tag: &Tag) -> Option<u32> {
        debug_assert!(self.order_valid);
        self.order
            .binary_search_by(|(t, _)| t.cmp(tag))
            .ok()
            .map(|p| p as u32)
    }

    /// The tag and slot at `position` in tag order. Call [`Table::ensure_order`] first.
    pub(crate) fn at(&self, position: u32) -> Option<(Tag, u32)> {
        debug_assert!(self.order_valid);
        self.order.get(position as usize).copied()
    }

    /// Where `tag` is stored; slots stay valid until the node is removed.
    pub(crate) fn slot(&self, tag: &Tag) -> Option<u32> {
        self.index.get(tag).copied()
    }

    pub(crate) fn at_slot(&self, slot: u32) -> Option<&T> {
        self.slots.get(slot as usize)?.as_ref().map(|(_, v)| v)
    }

    pub(crate) fn at_slot_mut(&mut self, slot: u32) -> Option<&mut T> {
        self.slots.get_mut(slot as usize)?.as_mut().map(|(_, v)| v)
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
            a.insert(Tag(t), ());
        }
        for t in [7u64, 2, 1, 9, 5] {
            b.insert(Tag(t), ());
        }
        assert_ne!(a.fingerprint(), b.fingerprint());
        b.remove(&Tag(2));
        assert_eq!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn positions_follow_tag_order_across_removals() {
        let mut t = Table::new();
        for x in [50u64, 10, 40, 20, 30] {
            t.insert(Tag(x), x);
        }
        t.remove(&Tag(20));
        t.insert(Tag(25), 25);
        t.ensure_order();
        let tags: Vec<u64> = (0..5).map(|p| t.at(p).unwrap().0.0).collect();
        assert_eq!(tags, vec![10, 25, 30, 40, 50]);
        assert_eq!(t.position(&Tag(40)), Some(3));
        assert_eq!(t.position(&Tag(20)), None);
        assert_eq!(t.get(&Tag(25)), Some(&25));
        let from: Vec<u64> = t.iter_from(Tag(35)).map(|(k, _)| k.0).collect();
        assert_eq!(from, vec![40, 50, 10, 25, 30]);
    }
}
