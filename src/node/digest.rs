//! Digests: this node's view (heartbeats and versions per node), sized to the datagram
//! budget, and a peer's view read against our table.

use std::time::Instant;

use rand::RngExt;

use super::{DIGEST_VIEWS_PER_ROUND, Liveness, Node, Resolved, Stamp};
use crate::id::Tag;
use crate::wire::{self, Beats, Digest, DigestEntry, size};
use tracing::debug;

/// How far past the schedule its detector expects a peer's heartbeat may be, in beats, for a
/// beat read while catching up after a pause (`Node::resolve_digest`): the schedule comes from
/// the least-delayed copy learned, so it may lag the peer by a little.
pub(super) const SCHEDULE_SLACK: u64 = 4;
/// How far behind that schedule such a beat may be and still be used: well within the 128 a
/// low byte reads exactly in.
pub(super) const CATCH_UP_BEAT_RANGE: u64 = 64;

/// See [`Node::digest_candidates`]. Nodes by position in tag order (valid for the round:
/// membership does not change while a round's Syns are built).
pub(super) struct Candidates {
    hot: Vec<u32>,
    fresh: Vec<u32>,
    /// A bit per position: the nodes already in the Syn being built (cleared for each).
    taken: Vec<u64>,
}

fn is_taken(taken: &[u64], position: u32) -> bool {
    taken
        .get(position as usize / 64)
        .is_some_and(|w| w & (1 << (position % 64)) != 0)
}

fn mark_taken(taken: &mut [u64], position: u32) {
    if let Some(w) = taken.get_mut(position as usize / 64) {
        *w |= 1 << (position % 64);
    }
}

impl Node {
    /// A digest for a Syn: ourselves, then recently changed nodes (so fresh updates are pushed
    /// within a few rounds whatever the cluster size), then freshly learned heartbeats, then a
    /// window of the rest in tag order, continuing where the previous one stopped. Together a
    /// round's Syns carry about `DIGEST_VIEWS_PER_ROUND` (3) full views, within the datagram
    /// budget. `full` lists every node (stream syncs); `indexed` names nodes by position (the
    /// receiver has our membership).
    pub(super) fn build_digest(
        &mut self,
        budget: usize,
        indexed: bool,
        syns: usize,
        cands: &mut Candidates,
    ) -> Digest {
        self.nodes.ensure_order();
        let mut used = 0;
        let n = self.nodes.len();
        // Entries per Syn, all parts together: a round's Syns carry about
        // `DIGEST_VIEWS_PER_ROUND` (3) full views.
        let quota = (n * DIGEST_VIEWS_PER_ROUND).div_ceil(syns).max(16);
        // Sized up front: growing these vectors entry by entry showed up as a tenth of the
        // idle CPU of a 200-node process (glibc's realloc, contended across worker threads).
        let mut entries = Vec::with_capacity(quota.min(n));
        let mut chosen: Vec<u32> = Vec::with_capacity(quota.min(n) + 1);
        chosen.extend(self.nodes.position(&self.me));
        // 1. Nodes whose state changed recently: fresh writes are pushed like rumours.
        chosen.extend(cands.hot.iter().take(quota / 3).copied());
        // What is in the Syn so far, as bits: the parts below test every candidate against it
        // (sorting and searching a list of them was a sixth of building a digest). Only what
        // was listed: the window's cover spans taken positions, and a node covered but not
        // listed reads as unknown to us, so the peer would send its whole state.
        let taken = &mut cands.taken;
        taken.clear();
        taken.resize(n.div_ceil(64), 0);
        self.push_entries(&chosen, indexed, budget, &mut used, &mut entries, taken);
        // 2. Heartbeats learned since the last round, in random order: the values peers most
        // likely lack. Forwarding them keeps every observer's evidence fresh, which is what lets
        // the failure detector be both fast and quiet. Between nodes that share a membership
        // they go as 2-byte beats, so about three times as many fit.
        let room = if indexed {
            wire::beats_room(budget.saturating_sub(used) * 2 / 3, n)
        } else {
            usize::MAX
        };
        let fresh = &mut cands.fresh;
        let k = fresh
            .len()
            .min((quota * 2 / 3).saturating_sub(chosen.len()))
            .min(room);
        for i in 0..k {
            let j = self.rng.random_range(i..fresh.len());
            fresh.swap(i, j);
        }
        let mut picked: Vec<u32> = Vec::with_capacity(k);
        picked.extend(fresh[..k].iter().filter(|&&p| !is_taken(taken, p)).copied());
        let mut beats = Beats::default();
        if indexed {
            // Beats all fit (`room`).
            for &p in &picked {
                mark_taken(taken, p);
            }
            let mut items: Vec<(u32, u64)> = Vec::with_capacity(picked.len());
            items.extend(picked.iter().filter_map(|&p| {
                let (_, slot) = self.nodes.at(p)?;
                Some((p, self.nodes.beat_at(slot)))
            }));
            beats = Beats::encode(&mut items);
            used += beats.len();
        } else {
            // Two thirds of the room left, as for beats: the window below keeps the rest, so
            // its cover moves on even when there are more fresh heartbeats than fit.
            let part = used + budget.saturating_sub(used) * 2 / 3;
            self.push_entries(&picked, false, part, &mut used, &mut entries, taken);
        }
        // 3. The window: nodes from the cursor in tag order, up to the rest of the quota.
        let window_quota = quota
            .saturating_sub(chosen.len() + picked.len())
            .max(quota / 3);
        let start = self.digest_cursor;
        let mut last = None;
        let mut complete = true;
        let order = self.nodes.ordered();
        let first = order.partition_point(|(t, _)| t.0 < start);
        for taken in 0..order.len() {
            let position = (first + taken) % order.len();
            let (tag, slot) = order[position];
            if taken >= window_quota {
                complete = false;
                break;
            }
            let Some(h) = self.nodes.hot_at(slot) else {
                continue;
            };
            if !is_taken(&cands.taken, position as u32) {
                let mut e = h.digest_entry(tag, self.nodes.beat_at(slot));
                if indexed {
                    e.tag = Tag(position as u64);
                }
                let s = size::digest_entry(&e);
                if used + s > budget {
                    complete = false;
                    break;
                }
                used += s;
                entries.push(e);
            }
            last = Some(tag);
        }
        // An indexed digest needs no cover: the receiver knows exactly our membership.
        let cover = if indexed {
            None
        } else if complete {
            Some((0, u64::MAX))
        } else {
            last.map(|l| (start, l.0))
        };
        let cover = self.narrow_cover(cover);
        self.digest_cursor = last.map_or(start, |l| l.0.wrapping_add(1));
        Digest {
            indexed,
            cover,
            entries,
            beats,
        }
    }

    /// Every node's entry, for a stream sync; `cover` says whether all fit.
    pub(super) fn full_digest(&mut self, budget: usize) -> Digest {
        let mut entries = Vec::new();
        let mut used = 0;
        for &(tag, slot) in self.nodes.ordered() {
            let Some(h) = self.nodes.hot_at(slot) else {
                continue;
            };
            let e = h.digest_entry(tag, self.nodes.beat_at(slot));
            used += size::digest_entry(&e);
            if used > budget {
                break;
            }
            entries.push(e);
        }
        let cover = (entries.len() == self.nodes.len()).then_some((0, u64::MAX));
        let cover = self.narrow_cover(cover);
        Digest {
            indexed: false,
            cover,
            entries,
            beats: Beats::default(),
        }
    }

    /// `cover`, a range of tags a digest lists every node of ours in, cut to leave out the
    /// tags peers would otherwise send us again and again: a peer sends the nodes a cover spans
    /// and the digest does not list, taking them for nodes we lack. Those are the nodes
    /// refused for want of room while the table is full (`Node::refused`), and buried
    /// incarnations a peer has sent us again (`Node::resent_buried`). Where such tags split the
    /// cover, one of the parts at random (over rounds, each part is covered in turn), or none
    /// if no part is left. Nothing changes while there are none, nor for any other tag: a new
    /// incarnation of a node we hold (a restart) replaces the old one even in a full table, and
    /// still reaches us this way. Draws from the RNG only when such a tag splits the cover, so
    /// other runs keep their traces.
    fn narrow_cover(&mut self, cover: Option<(u64, u64)>) -> Option<(u64, u64)> {
        let (start, end) = cover?;
        let full = !self.refused.is_empty() && self.nodes.len() >= self.config.limits.max_nodes;
        if !full && self.resent_buried.is_empty() {
            return cover;
        }
        let mut out: Vec<u64> = self.resent_buried.iter().map(|t| t.0).collect();
        if full {
            out.extend(self.refused.iter().map(|t| t.0));
        }
        // A cover of everything is a circle: start it just past the lowest left-out tag,
        // which then ends it (and is left out as the others are).
        let (start, end) = match out.iter().min() {
            Some(&r) if (start, end) == (0, u64::MAX) => (r.wrapping_add(1), r),
            _ => (start, end),
        };
        // In offsets from `start`, so that a cover wrapping past the last tag reads in order.
        let len = end.wrapping_sub(start);
        let mut inside: Vec<u64> = out
            .iter()
            .map(|t| t.wrapping_sub(start))
            .filter(|&o| o <= len)
            .collect();
        inside.sort_unstable();
        inside.dedup();
        if inside.is_empty() {
            return Some((start, end));
        }
        // The parts between left-out tags, as inclusive offset ranges, empty ones dropped.
        let mut parts = Vec::with_capacity(inside.len() + 1);
        let mut from = Some(0);
        for &o in &inside {
            if let (Some(a), Some(b)) = (from, o.checked_sub(1))
                && a <= b
            {
                parts.push((a, b));
            }
            from = o.checked_add(1);
        }
        if let Some(a) = from
            && a <= len
        {
            parts.push((a, len));
        }
        if parts.is_empty() {
            return None;
        }
        // One part (the circle cut at a single tag, or the tags at the cover's ends) is no
        // choice: no draw (until 2026-12-07 it drew, found by review:
        // `a_cover_cut_at_one_tag_draws_nothing_from_the_rng`).
        let (a, b) = match parts.len() {
            1 => parts[0],
            n => parts[self.rng.random_range(0..n)],
        };
        Some((start.wrapping_add(a), start.wrapping_add(b)))
    }

    /// The nodes worth putting first in this round's Syns: recently changed state (most
    /// recent first) and heartbeats learned since the last round. Computed once per round.
    pub(super) fn digest_candidates(&mut self, now: Instant) -> Candidates {
        self.nodes.ensure_order();
        let n = self.nodes.len();
        let hot_window = self.spread_time();
        let now_at = self.stamp(now);
        let fresh_since = self.stamp(now.checked_sub(self.config.gossip_interval).unwrap_or(now));
        let mut hot: Vec<(Stamp, u32)> = Vec::new();
        let mut fresh = Vec::with_capacity(n);
        for (position, &(tag, slot)) in self.nodes.ordered().iter().enumerate() {
            let Some(h) = self.nodes.hot_at(slot) else {
                continue;
            };
            if tag == self.me {
                continue;
            }
            let position = position as u32;
            if now_at.since(h.changed_at) < hot_window {
                hot.push((h.changed_at, position));
            }
            // Only for nodes held alive: a heartbeat held for a node we convicted may be far
            // behind, and as a beat a receiver would read it as ahead (see `learn_beat`).
            if h.hb_at > fresh_since && h.liveness == Liveness::Alive {
                fresh.push(position);
            }
        }
        // Newest change first (a stable sort: ties stay in tag order).
        hot.sort_by_key(|h| std::cmp::Reverse(h.0));
        Candidates {
            hot: hot.into_iter().map(|(_, t)| t).collect(),
            fresh,
            taken: Vec::with_capacity(n.div_ceil(64)),
        }
    }

    /// Our digest entry for the node at `position` in tag order, naming it by that position
    /// when `indexed`.
    pub(super) fn wire_entry(&self, position: u32, indexed: bool) -> Option<DigestEntry> {
        let (tag, slot) = self.nodes.at(position)?;
        let mut e = self
            .nodes
            .hot_at(slot)?
            .digest_entry(tag, self.nodes.beat_at(slot));
        if indexed {
            e.tag = Tag(u64::from(position));
        }
        Some(e)
    }

    /// Appends the digest entries of the nodes at `positions` that fit `budget`, counting
    /// their bytes in `used` and marking their positions in `taken`.
    fn push_entries(
        &self,
        positions: &[u32],
        indexed: bool,
        budget: usize,
        used: &mut usize,
        entries: &mut Vec<DigestEntry>,
        taken: &mut [u64],
    ) {
        for &p in positions {
            if let Some(e) = self.wire_entry(p, indexed)
                && *used + size::digest_entry(&e) <= budget
            {
                *used += size::digest_entry(&e);
                entries.push(e);
                mark_taken(taken, p);
            }
        }
    }

    /// Turns a peer's digest into tags and our slots. An indexed digest is readable only if its
    /// fingerprint is ours; otherwise its entries are dropped (the next exchange uses tags).
    /// The vectors of the result are the node's spare ones (`Node::resolved_spare`), which the
    /// caller hands back when done.
    pub(super) fn resolve_digest(
        &mut self,
        fp: u64,
        digest: &mut Digest,
        now: Instant,
    ) -> Resolved {
        let Resolved {
            mut slots,
            mut beats,
        } = std::mem::take(&mut self.resolved_spare);
        slots.clear();
        beats.clear();
        if !digest.indexed {
            // Beats only mean something between nodes that share a membership.
            slots.extend(digest.entries.iter().map(|e| self.nodes.slot(&e.tag)));
            return Resolved { slots, beats };
        }
        digest.indexed = false;
        if fp != self.nodes.fingerprint() {
            self.stats.digests_unreadable += 1;
            digest.entries.clear();
            digest.cover = None;
            return Resolved { slots, beats };
        }
        self.nodes.ensure_order();
        slots.reserve(digest.entries.len());
        let nodes = &self.nodes;
        let before = digest.entries.len();
        digest.entries.retain_mut(|e| {
            match u32::try_from(e.tag.0).ok().and_then(|p| nodes.at(p)) {
                Some((t, slot)) => {
                    e.tag = t;
                    slots.push(Some(slot));
                    true
                }
                None => false,
            }
        });
        // With our fingerprint the sender's membership is ours: a position past it, a beat
        // list cut short or longer than the membership is a fault of the sender (or a forgery).
        let mut malformed = digest.entries.len() < before;
        // At least two bytes a beat: the capacity bounds the vector without a regrowth.
        beats.reserve((digest.beats.len() / 2).min(nodes.len()));
        // A beat is read as the heartbeat with its low byte nearest to the copy we hold, which
        // is right while the sender's is within 128 of it. Not after we were frozen: every copy
        // is then as far behind as we were away, and so are the packets queued meanwhile. Past
        // 128 beats a beat reads as behind (nothing learned) or 256 too low (dated 256
        // intervals too old): a node frozen for 24-26 s at 100 ms convicted a live peer as its
        // catch-up window closed. Nor can the peer's schedule tell which reading is meant: a
        // queued beat read against it came out 256 too high (a crashed peer brought back up, a
        // peer hearing its own heartbeat from the future; found by review). So until the
        // window closes a beat is used only if its reading lies near where the peer's schedule
        // is now (`CATCH_UP_BEAT_RANGE` behind to `SCHEDULE_SLACK` ahead), where it is exact;
        // the rest comes in full entries, which peers send instead of beats to a node whose
        // Syn shows it far behind (`Node::on_syn`). Reading the schedule costs a read of the
        // peer's detector for every beat, only in that window.
        let catching_up = now < self.learn_ages_after;
        let params = &self.params;
        let mut read = digest.beats.decode();
        for (pos, low) in read.by_ref().take(nodes.len()) {
            let Some(slot) = nodes.slot_at(pos) else {
                malformed = true;
                continue;
            };
            let hb = wire::rebuild_heartbeat(nodes.beat_at(slot), low);
            if catching_up
                && let Some(due) = nodes
                    .at_slot(slot)
                    .and_then(|p| p.detector.scheduled(now, params))
                && (hb > due.saturating_add(SCHEDULE_SLACK)
                    || hb < due.saturating_sub(CATCH_UP_BEAT_RANGE))
            {
                continue;
            }
            beats.push((slot, hb));
        }
        if malformed || read.malformed() || !read.finished() {
            self.stats.digests_malformed += 1;
            debug!(
                entries_dropped = before - digest.entries.len(),
                "indexed digest with malformed parts: those dropped, the rest used"
            );
        }
        Resolved { slots, beats }
    }
}
