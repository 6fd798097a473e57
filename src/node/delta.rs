//! Deltas: what a peer lacks, built up to a budget, and what peers send us, applied.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::RngExt;
use tracing::{debug, warn};

use super::liveness::rose_at_live_pace;
use super::{
    BURIAL_LIFT_BEATS, BURIAL_RISE_BEATS, Channel, Conflict, DataSync, Hot, Liveness, Node, Peer,
    STREAM_SYNC_BACKOFF, Stamp, Want,
};
use crate::detector::PeerDetector;
use crate::event::Event;
use crate::id::{Generation, NodeId, Tag};
use crate::state::{self, KeyChange, NodeState, Rejected};
use crate::wire::{NodeDelta, size};

/// A delta that leaves out more than this many datagrams' worth of entries starts a stream
/// exchange: one writer's 80 KB took 6 s to reach two peers in 1.2 KB deltas (60 rounds).
const DATA_SYNC_DATAGRAMS_LEFT: usize = 4;
/// Most entries a delta reserves room for up front (more grow the vector as usual).
const MAX_DELTA_RESERVE: usize = 4096;
/// Least time between two stream syncs triggered by large state, to any address, in intervals
/// (and never below `STREAM_SYNC_MIN_SPACING`).
const STREAM_SYNC_SPACING_INTERVALS: u32 = 1;
const STREAM_SYNC_MIN_SPACING: Duration = Duration::from_millis(100);
/// How long an unanswered data sync blocks the next one. While a burst of writes is spreading,
/// a second exchange started before the first is answered fetches mostly the same entries
/// again; a sync that was lost (connection refused, peer gone) must not block forever either.
const DATA_SYNC_TIMEOUT: Duration = Duration::from_secs(3);
/// Least time a reset waits on an unanswered stream exchange before it goes in datagram
/// pieces (`Node::reset_may_go_in_pieces`): a stream on a slow or loaded path can take a few
/// hundred milliseconds to answer.
const RESET_STREAM_PATIENCE: Duration = Duration::from_secs(1);

impl Node {
    /// Fills a delta for a peer up to `budget` bytes: nodes it has never heard of first, then
    /// the nodes it is furthest behind on (scuttle-depth), ties broken at random, each node's
    /// entries in version order. Entries too large for a datagram, or a delta cut far short,
    /// start a stream exchange with the peer instead.
    pub(super) fn build_delta(
        &mut self,
        now: Instant,
        to: SocketAddr,
        channel: Channel,
        mut wants: Vec<Want>,
        budget: usize,
    ) -> (Vec<NodeDelta>, usize) {
        // Shuffle, then a stable sort: equal keys keep a random order.
        for i in (1..wants.len()).rev() {
            let j = self.rng.random_range(0..=i);
            wants.swap(i, j);
        }
        wants.sort_by_cached_key(|w| {
            let p = self.nodes.get(&w.tag);
            let mine = p.map_or(0, |p| p.state.max_version().0);
            // On the stream, resets for a copy the peer holds come right after introductions:
            // one that does not fit what is left of the frame waits for another (below).
            let reset_held = channel == Channel::Stream
                && !w.unknown
                && p.is_some_and(|p| w.misses_purges_up_to(p.state.gc_version().0));
            (
                !w.unknown,
                !reset_held,
                std::cmp::Reverse(mine.saturating_sub(w.peer_max)),
            )
        });
        let empty_budget = self.budget(channel);
        let mut out = Vec::new();
        let mut used = 0;
        let mut left_behind = 0usize;
        // About how many bytes of entries the delta leaves out (see `bytes_after`).
        let mut bytes_left = 0usize;
        let mut oversized = false;
        // A reset for a peer that holds a copy did not fit, and waits for the stream.
        let mut reset_waits = false;
        for w in wants {
            let Some(p) = self.nodes.get(&w.tag) else {
                continue;
            };
            let reset = w.unknown || w.misses_purges_up_to(p.state.gc_version().0);
            // Our copy is cut short (it holds versions only up to below its gc: it was
            // introduced by a delta with no room for entries, or took a reset in pieces): as a
            // reset, it would replace the peer's copy with only its entries, and the peer
            // would hear deleted the keys it holds that they lack (those past our cut, and
            // those rewritten past it), as from a reset cut to a datagram (below). A whole
            // copy sends it its reset (found by review).
            if reset && !w.unknown && p.state.max_version() < p.state.gc_version() {
                continue;
            }
            let from_version = if reset { 0 } else { w.peer_max };
            let mut nd = NodeDelta {
                tag: w.tag,
                id: w.unknown.then(|| p.state.id().clone()),
                heartbeat: p.state.heartbeat().0,
                reset,
                gc_version: p.state.gc_version().0,
                from_version,
                max_version: p.state.max_version().0,
                // At most one entry per version and per key held.
                entries: Vec::with_capacity(
                    usize::try_from(p.state.max_version().0.saturating_sub(from_version))
                        .unwrap_or(usize::MAX)
                        .min(p.state.num_entries())
                        .min(MAX_DELTA_RESERVE),
                ),
            };
            // Frame with a worst-case entry-count header, so the final size never exceeds it.
            let frame = size::node_delta_frame(&nd, 0x1_0000);
            if used + frame > budget {
                left_behind += 1;
                bytes_left = bytes_left.saturating_add(bytes_after(&p.state, from_version));
                continue;
            }
            let mut nd_size = frame;
            let mut complete = true;
            for (key, e) in p.state.entries_after(from_version) {
                let s = size::key_entry(key.len(), e.version, e.value.as_ref().map(Bytes::len));
                if frame + s > empty_budget {
                    // Too large for any message on this channel.
                    oversized = true;
                    complete = false;
                    break;
                }
                if used + nd_size + s > budget {
                    complete = false;
                    break;
                }
                nd_size += s;
                nd.entries.push(state::key_entry(key, e));
            }
            if !complete {
                left_behind += 1;
                let sent = nd.entries.last().map_or(from_version, |e| e.version);
                bytes_left = bytes_left.saturating_add(bytes_after(&p.state, sent));
                // A reset cut short replaces the peer's copy with its first entries (the peer
                // needs a reset: its copy misses purges; one that became whole meanwhile merges
                // it instead, `NodeState::apply_from`): until the rest comes, the keys beyond
                // the cut would be missing there, and heard deleted.
                // The stream carries it whole; cut pieces go only if the stream does not work.
                if reset
                    && !w.unknown
                    && channel == Channel::Datagram
                    && !self.reset_may_go_in_pieces(now, to)
                {
                    // Without a stream exchange under way, or after one that worked (the
                    // peer may have been busy with another and not asked), start one.
                    reset_waits |= self.stream_syncs.get(&to).is_none_or(|s| s.answered);
                    continue;
                }
                // Over the stream, a reset that would fit a frame of its own but not what is
                // left of this one (other nodes' entries came first) waits for the next
                // exchange, where it goes first: the datagram rounds meanwhile find the peer
                // still needing it and start that exchange. (Until 2026-12-06 it went cut, and
                // the peer heard the keys past the cut deleted, then upserted again:
                // `node::tests::a_reset_that_fits_a_frame_is_not_cut_by_other_deltas`.)
                // Validation keeps a whole state at our limits within a frame
                // (`Limits::frame_for_whole_state`), so only a state past them (taken from a
                // peer with larger limits: a misconfigured cluster) still goes cut.
                if reset
                    && !w.unknown
                    && channel == Channel::Stream
                    && frame + whole_size(&p.state) <= empty_budget
                {
                    continue;
                }
                match nd.entries.last() {
                    Some(last) => nd.max_version = last.version,
                    // Nothing fits: a bare header is only worth sending to introduce the node;
                    // it then claims no version at all. (To a peer holding a copy, a bare
                    // reset would only empty that copy: readers would lose every key and
                    // subscribers hear them deleted, for nothing learned.)
                    None if w.unknown => nd.max_version = 0,
                    None => continue,
                }
            }
            used += nd_size;
            out.push(nd);
        }
        if oversized {
            self.stats.oversized_entries += 1;
        }
        // Many nodes cut short, or much of one: datagrams would take many rounds to carry it.
        let much_left = bytes_left > empty_budget * DATA_SYNC_DATAGRAMS_LEFT;
        if channel == Channel::Datagram
            && (oversized || left_behind > 4 || much_left || reset_waits)
        {
            debug!(%to, oversized, left_behind, bytes_left, reset_waits, "state does not fit datagrams");
            self.data_sync(now, to);
        }
        (out, used)
    }

    /// Starts a stream exchange with `to` because state does not fit datagrams, either way
    /// (we hold much that it lacks, or it holds much that we lack). At most one such sync per
    /// node every few intervals, whatever the destination: when everyone writes at once, every
    /// exchange leaves data behind, and a sync per exchange would resend the same state many
    /// times over (the runtime measured 90,000 syncs for 2 MB of state at 200 nodes before this
    /// limit).
    pub(super) fn data_sync(&mut self, now: Instant, to: SocketAddr) {
        let spacing = (self.config.gossip_interval * STREAM_SYNC_SPACING_INTERVALS)
            .max(STREAM_SYNC_MIN_SPACING);
        let to_recently = self
            .stream_syncs
            .get(&to)
            .is_some_and(|s| now.saturating_duration_since(s.at) < STREAM_SYNC_BACKOFF);
        let busy = self.bulk_in_flight(now)
            || self
                .last_data_sync
                .is_some_and(|d| now.saturating_duration_since(d.at) < spacing);
        if to_recently || busy {
            self.stats.data_syncs_deferred += 1;
            return;
        }
        // Only to a peer's address: a datagram with a forged source would otherwise have us
        // connect to anyone and send them our digest (design.md 8, "Amplification").
        if !self.address_known(to) && (!self.is_member_addr(to) || self.is_own_addr(to)) {
            self.stats.replies_limited += 1;
            debug!(%to, "no stream exchange with a source not known as a peer's");
            return;
        }
        self.last_data_sync = Some(DataSync {
            to,
            at: now,
            answered: false,
        });
        self.send_stream_syn(now, to);
    }

    /// Whether a reset for `to` too large for a datagram may go in datagram pieces: only if
    /// the stream to it seems not to work, i.e. the exchange started there is unanswered and
    /// either its connection failed or it has waited `reset_stream_patience`. A stream that
    /// answered works, even if slowly or if the peer left its requests out (it had another
    /// exchange in flight): the reset then waits for the next exchange. (Until 2026-12-05 any
    /// exchange older than two intervals counted as failed: a stream slower than that, or a
    /// busy peer, got the reset in pieces and heard live keys deleted; found by review.)
    fn reset_may_go_in_pieces(&self, now: Instant, to: SocketAddr) -> bool {
        self.stream_syncs.get(&to).is_some_and(|s| {
            !s.answered
                && (s.failed || now.saturating_duration_since(s.at) >= self.reset_stream_patience())
        })
    }

    /// How long an unanswered stream exchange is waited on before a reset goes in pieces:
    /// two intervals, and at least `RESET_STREAM_PATIENCE`.
    pub(super) fn reset_stream_patience(&self) -> Duration {
        (self.config.gossip_interval * 2).max(RESET_STREAM_PATIENCE)
    }

    /// Whether a stream exchange is bringing this node state it asked for: a data sync it
    /// started and not yet answered, or requests it made in answer to one and whose Ack has not
    /// come (either for at most `DATA_SYNC_TIMEOUT`).
    pub(super) fn bulk_in_flight(&self, now: Instant) -> bool {
        let fresh = |at: Instant| now.saturating_duration_since(at) < DATA_SYNC_TIMEOUT;
        self.last_data_sync
            .is_some_and(|d| !d.answered && fresh(d.at))
            || self.stream_requests.is_some_and(|(_, at)| fresh(at))
    }

    /// Applies the deltas `sender` sent (each about one node, possibly the sender itself).
    pub(super) fn apply_deltas(&mut self, now: Instant, sender: Tag, deltas: Vec<NodeDelta>) {
        let limits = self.apply_limits();
        let now_at = self.stamp(now);
        for mut nd in deltas {
            if self.superseded.is_some() {
                return;
            }
            if nd.tag == self.me {
                // Nobody holds newer state of ours than we do: a forgery, or a same-name,
                // same-generation process elsewhere.
                self.stats.deltas_ignored += 1;
                let (own_max, own_hb) = {
                    let own = &self.own().state;
                    (own.max_version().0, own.heartbeat().0)
                };
                if nd.max_version > own_max {
                    self.note_identity_conflict(now, Conflict::Version, nd.max_version, own_max);
                }
                if nd.heartbeat > own_hb {
                    self.note_identity_conflict(now, Conflict::Heartbeat, nd.heartbeat, own_hb);
                }
                debug!(
                    version = nd.max_version,
                    "ignored a delta about this node itself"
                );
                continue;
            }
            if !self.nodes.contains(&nd.tag) {
                // Checked before it can introduce the node (and so replace an older
                // incarnation, or bury one): a malformed delta changes nothing at all.
                if NodeState::check_delta(&nd, limits).is_err() {
                    self.stats.deltas_rejected += 1;
                    debug!(
                        tag = nd.tag.0,
                        "rejected an invalid delta for a node not held"
                    );
                    continue;
                }
                if !self.admit(now, &nd) {
                    continue;
                }
            }
            let Some((p, h)) = self.nodes.get_both_mut(&nd.tag) else {
                continue;
            };
            let before = p.state.max_version();
            let entries = nd.entries.len() as u64;
            let (touched_ready, touched_weight, touched_interval) = reserved_keys_touched(&nd);
            // Changed only if the value held changes: a delta reaching past what is held
            // may carry again entries already applied, and a reset carries every key (found
            // by review: both reported a readiness that had not changed). A reset also
            // changes them by leaving them out (a restart that reused its generation rebased
            // its state without the previous run's: found by review).
            // Readiness by its meaning, not its key: a copy without the key reads as ready,
            // and a peer first learned that had once been marked not ready, then ready again,
            // carries the key as ready (found by review: every node that learned it later
            // reported it ready).
            let reserved_before = (touched_ready || touched_weight || nd.reset)
                .then(|| (p.state.is_ready(), p.state.get(state::KEY_WEIGHT).cloned()));
            let from_owner = nd.tag == sender;
            // Read only where a flip matters (`note_ready_flip`), not for every delta.
            let watch_ready =
                (touched_ready || nd.reset) && self.config.ring_ready_only && !self.had_ring;
            let was_ready = watch_ready && p.state.is_ready();
            let result = p
                .state
                .apply_from(&mut nd, now, limits, &self.key_events, from_owner);
            let (ready, weight) = reserved_before.map_or((false, false), |(r, w)| {
                (
                    p.state.is_ready() != r,
                    p.state.get(state::KEY_WEIGHT) != w.as_ref(),
                )
            });
            let is_ready = watch_ready && p.state.is_ready();
            // A peer's interval comes with its first delta (the key leads its state): its
            // record, made from that delta, is dated at its pace from the start.
            if (touched_interval || nd.reset)
                && p.detector
                    .set_interval(p.state.interval(), now, &self.params)
            {
                h.deadline = Stamp(p.detector.deadline_offset(&self.params));
            }
            h.sync(&p.state);
            if p.state.has_tombstones() {
                self.tombstoned.insert(nd.tag);
            }
            match result {
                Ok(changes) => {
                    self.stats.deltas_applied += 1;
                    self.stats.entries_applied += entries;
                    if p.state.max_version() != before {
                        h.changed_at = now_at;
                    }
                    let id = p.state.id();
                    for c in changes {
                        self.events.push_back(match c {
                            KeyChange::Upserted(key, value) => Event::KeyUpserted {
                                node: id.clone(),
                                key,
                                value,
                            },
                            KeyChange::Deleted(key) => Event::KeyDeleted {
                                node: id.clone(),
                                key,
                            },
                        });
                    }
                    self.after_state_change(now, nd.tag, ready, weight);
                    if watch_ready && was_ready != is_ready {
                        self.note_ready_flip(nd.tag, is_ready, now);
                    }
                }
                Err(Rejected::Invalid) => {
                    self.stats.deltas_rejected += 1;
                    debug!(node = %p.state.id(), "rejected invalid delta");
                    // Nor is its heartbeat learned: a delta is rejected whole.
                    continue;
                }
                Err(Rejected::Gap | Rejected::Stale) => self.stats.deltas_ignored += 1,
            }
            self.learn_heartbeat(nd.tag, nd.heartbeat, now);
        }
    }

    /// Decides whether a delta for an unknown tag introduces a node we accept, and if so
    /// creates it (replacing an older incarnation of the same name).
    pub(super) fn admit(&mut self, now: Instant, nd: &NodeDelta) -> bool {
        let Some(id) = nd.id.as_ref() else {
            // A delta for a node we no longer (or never) held, without its identity.
            self.stats.deltas_ignored += 1;
            debug!(tag = ?nd.tag, "ignored a delta for an unknown node without its identity");
            return false;
        };
        if id.tag() != nd.tag || id.name.is_empty() || !nd.reset {
            self.stats.deltas_rejected += 1;
            debug!(
                tag = ?nd.tag,
                name = %id.name,
                reset = nd.reset,
                "rejected a delta introducing a node: its identity does not match its tag, \
                 has no name, or it is not a reset"
            );
            return false;
        }
        if id.name == self.id.name {
            // An older incarnation of us, still gossiped: ignore it until it expires. A newer
            // one replaced us (we were frozen while our name restarted elsewhere, or a second
            // process took it): the higher generation wins everywhere, so we stand down.
            if id.generation > self.id.generation {
                self.note_successor(id, nd.heartbeat, now);
            } else if !self.had_ring {
                self.note_predecessor_ring(nd);
            }
            return false;
        }
        // A buried incarnation, or an older one of its name, stays out; gossip brings the
        // buried one back only far enough past the heartbeat it was buried at to prove it
        // alive (`BURIAL_LIFT_BEATS`: a partition outlived `dead_grace`).
        if self.kept_buried(nd.tag, nd.heartbeat) {
            // The sender still holds it, and read our covers as lacking it: they leave it out
            // from now on. Not a copy far past the burial heartbeat, which only
            // `Burial::heard` keeps out (a node on the other side of a partition that outlived
            // `dead_grace`): while it may be alive, its copies are what lift the burial, and
            // heard only on request they lifted it later (a review measured the heal 0.45 s
            // slower at 60 and 100 nodes).
            if self
                .buried
                .get(&nd.tag)
                .is_some_and(|b| nd.heartbeat <= b.heartbeat.saturating_add(BURIAL_LIFT_BEATS))
            {
                self.resent_buried.insert(nd.tag);
            }
            return false;
        }
        if self
            .buried_names
            .get(&id.name)
            .is_some_and(|(g, _)| id.generation < *g)
        {
            return false;
        }
        if self.burial_holds(nd.tag, nd.heartbeat, now) {
            debug!(node = %id, heartbeat = nd.heartbeat, "buried node gossiped far past its burial; taken back if it rises");
            return false;
        }
        // Once expired here, an incarnation comes back only with a heartbeat past the one it
        // was buried at (it was partitioned away, and went on beating), never with what it
        // said before it died: stale gossip, or its captured packets replayed.
        if self
            .graves
            .get(&nd.tag)
            .is_some_and(|&(hb, _)| nd.heartbeat <= hb)
        {
            return false;
        }
        if let Some(&old) = self.names.get(&id.name) {
            let old_gen = self
                .nodes
                .get(&old)
                .map_or(Generation(0), |p| p.state.id().generation);
            if id.generation < old_gen {
                return false;
            }
            // A restart: the new incarnation replaces the old one at once, and takes its room,
            // so the nodes refused for want of room stay refused (`Node::refused`).
            self.expire(now, old);
        }
        if self.nodes.len() >= self.config.limits.max_nodes {
            self.stats.nodes_refused += 1;
            debug!(name = %id.name, max_nodes = self.config.limits.max_nodes, "refused a node: max_nodes reached");
            let cap = self
                .config
                .limits
                .max_nodes
                .saturating_mul(super::REFUSED_PER_NODE);
            if !self.refused.contains(&nd.tag) && self.refused.len() >= cap {
                self.refused.pop_first();
            }
            self.refused.insert(nd.tag);
            return false;
        }
        let mut peer = Peer {
            state: NodeState::new(id.clone()),
            detector: PeerDetector::new(now, nd.heartbeat, &self.params),
            base_heartbeat: nd.heartbeat,
            fp: 0,
        };
        let hot = Hot::new(
            &peer.state,
            self.stamp(now),
            Stamp(peer.detector.deadline_offset(&self.params)),
        );
        let beat = peer.state.heartbeat().0;
        self.nodes.insert(nd.tag, peer, hot, beat);
        self.params.set_cluster_size(self.nodes.len());
        self.names.insert(id.name.clone(), nd.tag);
        self.num_live += 1;
        self.events.push_back(Event::Joined(id.clone()));
        self.ring_changed(now);
        true
    }

    /// Notes that gossip brought an older incarnation of our name, and whether this copy of
    /// it carries a ring key: whether that process built a ring tells a quick restart from a
    /// name whose peers handed it a share it never took (`Node::held_since_before_start`).
    fn note_predecessor_ring(&mut self, nd: &NodeDelta) {
        let ring = nd.entries.iter().any(|e| {
            &*e.key == state::KEY_RING
                && e.value
                    .as_deref()
                    .and_then(state::RingKey::decode)
                    .is_some()
        });
        self.predecessor_ring = Some(ring || self.predecessor_ring == Some(true));
    }

    /// Notes `newer`, a later incarnation of our name, at heartbeat `hb` at `now`, and stands
    /// down once gossip shows it alive: a heartbeat of it more than `BURIAL_RISE_BEATS` past
    /// the one noted, risen at a live node's pace (the rule that lifts a burial: see
    /// `Burial::heard`). Gossip about a dead one (this process got the lower generation from
    /// a clock that stepped back, say) must not stop a live process for good, and its holders
    /// may differ by its last few beats (found by review: a copy at 100 from one peer and at
    /// 102 from another stopped it). A live one rises that far within a couple of seconds.
    fn note_successor(&mut self, newer: &NodeId, hb: u64, now: Instant) {
        let tag = newer.tag();
        match self.successor {
            Some((seen, h, _)) if seen == tag && hb <= h.saturating_add(BURIAL_RISE_BEATS) => {}
            Some((seen, h, at))
                if seen == tag
                    && rose_at_live_pace((h, at), hb, now, self.config.gossip_interval) =>
            {
                self.supersede(newer.clone());
            }
            Some((seen, _, _)) if seen == tag => {
                // A jump time does not explain: a fresher copy. Noted instead.
                self.successor = Some((tag, hb, now));
            }
            _ => {
                debug!(other = %newer, hb, "heard of a newer incarnation of our name");
                self.successor = Some((tag, hb, now));
            }
        }
    }

    /// Stands down for `newer`, a later incarnation of our name: peers already prefer it, and
    /// a process that went on acting for the name would own the same keys as the newer one.
    /// What is queued to send is dropped; the node sends and handles nothing more.
    fn supersede(&mut self, newer: NodeId) {
        if self.superseded.is_some() {
            return;
        }
        warn!(me = %self.id, by = %newer, "a newer incarnation of this node's name replaced it; standing down");
        self.stats.superseded = 1;
        self.outbox.clear();
        self.events.push_back(Event::Superseded(newer.clone()));
        self.superseded = Some(newer);
    }

    /// Notes a peer turning ready before this node's first ring (see `Node::turned_ready`).
    fn note_ready_flip(&mut self, tag: Tag, ready: bool, now: Instant) {
        if ready {
            // Bounded by the peers held: incarnations gone since are dropped first.
            if self.turned_ready.len() >= self.nodes.len() {
                let nodes = &self.nodes;
                self.turned_ready.retain(|t, _| nodes.contains(t));
            }
            self.turned_ready.insert(tag, now);
        } else {
            self.turned_ready.remove(&tag);
        }
    }

    /// Reacts to a peer's state having changed: leave, readiness and ring weight.
    pub(super) fn after_state_change(
        &mut self,
        now: Instant,
        tag: Tag,
        ready_touched: bool,
        weight_touched: bool,
    ) {
        if ready_touched || weight_touched {
            self.ring_changed(now);
        }
        let now_at = self.stamp(now);
        let Some((p, h)) = self.nodes.get_both_mut(&tag) else {
            return;
        };
        if p.state.has_left() && !matches!(h.liveness, Liveness::Left { .. }) {
            if h.liveness == Liveness::Alive {
                self.num_live -= 1;
                if tag != self.me && p.heard_beating() {
                    self.num_heard = self.num_heard.saturating_sub(1);
                }
            }
            h.liveness = Liveness::Left { since: now_at };
            let id = p.state.id().clone();
            self.events.push_back(Event::Left(id.clone()));
            self.ring_changed_by_leave(now, &id.name);
        } else if ready_touched {
            self.events.push_back(Event::ReadyChanged {
                node: p.state.id().clone(),
                ready: p.state.is_ready(),
            });
        }
    }
}

/// Whether a delta writes the readiness key, the ring-weight key and the interval key.
fn reserved_keys_touched(nd: &NodeDelta) -> (bool, bool, bool) {
    let mut touched = (false, false, false);
    for e in nd
        .entries
        .iter()
        .filter(|e| e.key.starts_with(state::RESERVED_PREFIX))
    {
        touched.0 |= &*e.key == state::KEY_READY;
        touched.1 |= &*e.key == state::KEY_WEIGHT;
        touched.2 |= &*e.key == state::KEY_INTERVAL;
    }
    touched
}

/// The encoded size of every entry of `state`: what a reset of it carries past its header.
fn whole_size(state: &NodeState) -> usize {
    state
        .entries_after(0)
        .map(|(k, e)| size::key_entry(k.len(), e.version, e.value.as_ref().map(Bytes::len)))
        .fold(0, usize::saturating_add)
}

/// About how many bytes of `state`'s entries have versions above `after`: the versions left,
/// at most one entry each, times the state's mean entry size. Exact enough to tell a few
/// datagrams from many, without walking the entries.
fn bytes_after(state: &NodeState, after: u64) -> usize {
    let entries = state.num_entries();
    if entries == 0 {
        return 0;
    }
    let versions =
        usize::try_from(state.max_version().0.saturating_sub(after)).unwrap_or(usize::MAX);
    versions
        .min(entries)
        .saturating_mul(state.size_bytes().div_ceil(entries))
}
