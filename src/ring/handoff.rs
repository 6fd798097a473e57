//! Hand-offs: what one member gains and loses between two rings.

use std::collections::BTreeMap;

use super::{Handoff, KeyRange, Ring, Transfer};

impl Ring {
    /// What `local` acquires and relinquishes when ownership goes from `old` to `new`.
    ///
    /// A pure function of the two rings: every member computes its own part, and for members A
    /// and B, `handoff(old, new, A)`'s ranges relinquished to B equal `handoff(old, new, B)`'s
    /// ranges acquired from A. Empty if `local` is on neither ring. Costs time linear in the
    /// two rings' partitions.
    pub fn handoff(old: &Self, new: &Self, local: &str) -> Handoff {
        let old_local = old.member_index(local);
        let new_local = new.member_index(local);
        if old_local.is_none() && new_local.is_none() {
            return Handoff::default();
        }
        if old.is_empty() || new.is_empty() || old.shift != new.shift {
            return Self::handoff_by_arcs(old, new, old_local, new_local);
        }
        // Same partitions on both sides: compare owners partition by partition, with ranges
        // gathered per peer index. This runs after every membership change on every node, and
        // walking arcs instead cost a millisecond at 200 members (five from a ring of one).
        let shift = old.shift;
        let mut acquired: Vec<Vec<KeyRange>> = vec![Vec::new(); old.names.len()];
        let mut relinquished: Vec<Vec<KeyRange>> = vec![Vec::new(); new.names.len()];
        for (p, (was, is)) in old.table.iter().zip(&new.table).enumerate() {
            let (was, is) = (was[0], is[0]);
            let was_local = Some(was) == old_local;
            let is_local = Some(is) == new_local;
            if was_local == is_local {
                continue;
            }
            // p < 2^MAX_PARTITION_BITS; for the last partition the end wraps to u64::MAX.
            let range = KeyRange {
                start: (p as u64) << shift,
                end: ((p as u64 + 1) << shift).wrapping_sub(1),
            };
            if was_local {
                push_range(&mut relinquished[usize::from(is)], range);
            } else {
                push_range(&mut acquired[usize::from(was)], range);
            }
        }
        // Indices follow name order, so the transfers come out sorted by peer.
        let collect = |ring: &Self, by_peer: Vec<Vec<KeyRange>>| {
            by_peer
                .into_iter()
                .enumerate()
                .filter(|(_, ranges)| !ranges.is_empty())
                .map(|(m, ranges)| Transfer {
                    // m < names.len() <= MAX_MEMBERS = 2^16.
                    peer: Some(ring.name(m as u16).to_owned()),
                    ranges,
                })
                .collect()
        };
        Handoff {
            acquired: collect(old, acquired),
            relinquished: collect(new, relinquished),
        }
    }

    /// [`Ring::handoff`] for rings that do not share a partition table (one is empty, or
    /// their partition counts differ): walks both rings' arcs.
    pub(super) fn handoff_by_arcs(
        old: &Self,
        new: &Self,
        old_local: Option<u16>,
        new_local: Option<u16>,
    ) -> Handoff {
        let mut acquired: BTreeMap<Option<&str>, Vec<KeyRange>> = BTreeMap::new();
        let mut relinquished: BTreeMap<Option<&str>, Vec<KeyRange>> = BTreeMap::new();
        for (range, was, is) in Segments::new(old, new) {
            let was_local = was.is_some() && was == old_local;
            let is_local = is.is_some() && is == new_local;
            if was_local && !is_local {
                let peer = is.map(|m| new.name(m));
                push_range(relinquished.entry(peer).or_default(), range);
            } else if is_local && !was_local {
                let peer = was.map(|m| old.name(m));
                push_range(acquired.entry(peer).or_default(), range);
            }
        }
        let collect = |map: BTreeMap<Option<&str>, Vec<KeyRange>>| {
            map.into_iter()
                .map(|(peer, ranges)| Transfer {
                    peer: peer.map(str::to_owned),
                    ranges,
                })
                .collect()
        };
        Handoff {
            acquired: collect(acquired),
            relinquished: collect(relinquished),
        }
    }
}

/// Elementary ranges of the hash space on which neither ring changes owner, with both owners.
struct Segments<'a> {
    old: std::iter::Peekable<ArcIter<'a>>,
    new: std::iter::Peekable<ArcIter<'a>>,
    start: Option<u64>,
}

type ArcIter<'a> = Box<dyn Iterator<Item = (u64, Option<u16>)> + 'a>;

impl<'a> Segments<'a> {
    fn new(old: &'a Ring, new: &'a Ring) -> Self {
        let ends = |ring: &'a Ring| -> ArcIter<'a> {
            if ring.is_empty() {
                Box::new(std::iter::once((u64::MAX, None)))
            } else {
                Box::new(ring.arcs().map(|(range, m)| (range.end, Some(m))))
            }
        };
        Self {
            old: ends(old).peekable(),
            new: ends(new).peekable(),
            start: Some(0),
        }
    }
}

impl Iterator for Segments<'_> {
    type Item = (KeyRange, Option<u16>, Option<u16>);

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.start?;
        let &(old_end, was) = self.old.peek()?;
        let &(new_end, is) = self.new.peek()?;
        let end = old_end.min(new_end);
        if old_end == end {
            self.old.next();
        }
        if new_end == end {
            self.new.next();
        }
        self.start = end.checked_add(1);
        Some((KeyRange { start, end }, was, is))
    }
}

/// Appends `range`, merging it into the last range when they touch.
pub(super) fn push_range(ranges: &mut Vec<KeyRange>, range: KeyRange) {
    if let Some(last) = ranges.last_mut()
        && last.end.checked_add(1) == Some(range.start)
    {
        last.end = range.end;
        return;
    }
    ranges.push(range);
}
