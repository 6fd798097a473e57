//! Liveness: heartbeats learned, deadlines kept, peers convicted and expired.

use std::time::{Duration, Instant};

use tracing::debug;

use super::{
    BURIAL_LIFT_BEATS, BURIAL_RISE_BEATS, Burial, Conflict, LIVENESS_CHECK_SLACK, Liveness, Node,
    Resolved, Stamp, UP_BEATS,
};
use crate::event::Event;
use crate::id::{NodeId, Tag};
use crate::wire::Digest;

/// Beats a beat may lead what we hold by beyond twice the rounds since we learned it: a
/// heartbeat we hold may have come by relay, some rounds old.
const BEAT_LEAD_SLACK: u64 = 16;
/// Rounds since a peer's heartbeat was last learned past which a beat must also not lead the
/// peer's schedule (`learn_beat`). Not sooner: a peer brought up by a stale heartbeat has its
/// schedule estimated from it, late, until a fresh one comes, and its beats would be refused.
const SCHEDULE_GUARD_ROUNDS: u64 = 32;

impl Node {
    pub(super) fn learn_heartbeat(&mut self, tag: Tag, hb: u64, now: Instant) {
        if let Some(slot) = self.nodes.slot(&tag) {
            self.learn_heartbeat_at(slot, tag, hb, now);
        }
    }

    /// Reads, in a loop of its own, the records of the peers whose heartbeat a message will
    /// teach (its beats and digest entries newer than what we hold), so that their cache misses
    /// overlap; the learning loop that follows does too much per beat for the CPU to reach the
    /// next miss early. Among hundreds of nodes in one process (or the simulator) nearly every
    /// record is a miss.
    pub(super) fn warm_learns(&self, digest: &Digest, resolved: &Resolved) {
        let beats = resolved.beats.iter().copied();
        let entries = digest
            .entries
            .iter()
            .zip(&resolved.slots)
            .filter_map(|(e, slot)| Some(((*slot)?, e.heartbeat)));
        let mut sum = 0u64;
        for (slot, hb) in beats.chain(entries) {
            if self.nodes.beat_at(slot) < hb
                && let Some((p, h)) = self.nodes.at_slot_both(slot)
            {
                sum = sum
                    .wrapping_add(p.detector.touch())
                    .wrapping_add(p.state.heartbeat().0)
                    .wrapping_add(h.max_version);
            }
        }
        std::hint::black_box(sum);
    }

    /// A beat: the tag is read from the table only when the heartbeat is news.
    pub(super) fn learn_beat(&mut self, slot: u32, hb: u64, now: Instant) {
        let held = self.nodes.beat_at(slot);
        if held >= hb {
            return;
        }
        // Not our own: a beat is a low byte read against what we hold, so a peer's copy of us
        // far behind can read as ahead (not a conflict, and nothing to learn either way).
        let Some(tag) = self.nodes.tag_at(slot).filter(|&t| t != self.me) else {
            return;
        };
        // The same for anyone's: a sender whose copy is 128 to 256 behind ours (it was cut
        // off, or learned it from a node that was) reads as up to 128 *ahead*. Learned, that
        // would hide the node's real heartbeats until they caught up, and every node would
        // convict it (found by review: 540 to 702 false downs of 756 pairs after a 14-20 s
        // isolation). A heartbeat moves a beat a round of the peer's: a lead past twice the
        // rounds since we learned ours, plus the slack of a relay, cannot be real.
        if let Some((p, h)) = self.nodes.at_slot_both(slot) {
            let interval = u128::try_from(p.detector.interval_ns(&self.params))
                .unwrap_or(1)
                .max(1);
            let rounds = self.stamp(now).since(h.hb_at).as_nanos() / interval;
            let allowed = u64::try_from(rounds.saturating_mul(2))
                .unwrap_or(u64::MAX)
                .saturating_add(BEAT_LEAD_SLACK);
            // That bound grows with the time since we learned one, which is long after we were
            // frozen (nothing is marked learned while catching up): a beat some hundred
            // heartbeats old arriving late then read 256 too high and passed (found by review:
            // a datagram 22 s late, just after a 13-s pause, taught a heartbeat 34 ahead, and
            // its peer heard its own heartbeat from the future). There the peer's schedule is
            // the better bound: a heartbeat is never far past it.
            let past_schedule = rounds > u128::from(SCHEDULE_GUARD_ROUNDS)
                && p.detector
                    .scheduled(now, &self.params)
                    .is_some_and(|due| hb > due.saturating_add(super::digest::SCHEDULE_SLACK));
            if hb - held > allowed || past_schedule {
                self.stats.beats_implausible += 1;
                return;
            }
        }
        self.learn_heartbeat_at(slot, tag, hb, now);
    }

    pub(super) fn learn_heartbeat_at(&mut self, slot: u32, tag: Tag, hb: u64, now: Instant) {
        if tag == self.me {
            // Our own heartbeat, as a peer holds it: never past the one we last sent.
            if hb > self.nodes.beat_at(slot) {
                let ours = self.own().state.heartbeat().0;
                if hb > ours {
                    self.note_identity_conflict(now, Conflict::Heartbeat, hb, ours);
                }
            }
            return;
        }
        // Most beats a node hears are ones it already has: the dense copy answers that
        // without touching the peer itself.
        if self.nodes.beat_at(slot) >= hb {
            return;
        }
        // Ages measured while this node's own rounds run late (health above zero) or just
        // after a pause measure this node as much as the peer: not learned, or they would sit
        // in the window for its whole length and widen every limit.
        let sample = self.health == 0 && now >= self.learn_ages_after;
        let now_at = self.stamp(now);
        let Some((p, h, beat)) = self.nodes.at_slot_of_mut(slot, tag) else {
            return;
        };
        let heard_before = p.heard_beating();
        if !p.state.set_heartbeat(hb) {
            return;
        }
        *beat = hb;
        self.stats.heartbeats_learned += 1;
        // Marks it fresh, to forward as a beat: a heartbeat's low byte, which a receiver reads
        // against the value it holds. Not while catching up after a pause: what arrives then
        // may be many seconds old, and a beat more than 128 heartbeats behind the receiver's
        // reads as one up to 128 ahead of the truth. Taken, that hid the subject's real
        // heartbeats and dragged its detector's phase back: a 14-s pause of one node at a
        // 100-ms interval had every node convict about ten live peers.
        if now >= self.learn_ages_after {
            h.hb_at = now_at;
        }
        match h.liveness {
            Liveness::Alive => {
                if !sample {
                    self.stats.ages_not_learned += 1;
                }
                if now < self.learn_ages_after {
                    p.detector.heartbeat_queued(now, hb, &self.params);
                } else {
                    p.detector.heartbeat(now, hb, sample, &self.params);
                }
                h.deadline = Stamp(p.detector.deadline_offset(&self.params));
                let first_heard = !heard_before && p.heard_beating();
                if first_heard {
                    self.num_heard += 1;
                }
                // First heard beating: a ring built without it (`rebuild_ring`) takes it in at
                // the next settle, unless a rebuild already waits. Only if it would enter the
                // ring, by `rebuild_ring`'s own filter: with `ring_ready_only`, one not ready
                // stays out (it comes in by `after_state_change` once it turns ready), and the
                // rebuild would change nothing but draw its jitter from the RNG.
                let enters = !self.config.ring_ready_only || p.state.is_ready();
                if first_heard && enters && self.ring_dirty.is_none() {
                    let name = p.state.id().name.clone();
                    if self.config.ring.is_some() && !self.ring.contains(&name) {
                        self.ring_changed(now);
                    }
                }
            }
            Liveness::Down { .. } if hb >= p.base_heartbeat.saturating_add(UP_BEATS) => {
                // Its schedule may have moved while it was away; do not learn the outage as an
                // age. Except while we catch up after a pause of our own: the heartbeat that
                // brings it up may have waited in our queue the whole pause, and a schedule
                // restarted from its arrival came out that much late, so that once the window
                // closed the peer's fresh beats passed it and were refused, and we convicted a
                // live peer (found by review). Its old schedule is kept then: a node's heartbeat
                // follows its own elapsed time, frozen or not.
                if now < self.learn_ages_after {
                    p.detector.heartbeat_queued(now, hb, &self.params);
                } else {
                    p.detector.restart_phase();
                    p.detector.heartbeat(now, hb, false, &self.params);
                }
                p.detector.rebase(now, &self.params);
                h.deadline = Stamp(p.detector.deadline_offset(&self.params));
                h.liveness = Liveness::Alive;
                // Hot for a spread time: our digests name it by a whole heartbeat, not a beat.
                // Peers still holding it down hold a copy as old as its outage, against which
                // a beat (a low byte) reads as behind once that is over 128 beats; only its
                // own Syns then brought it up, one peer at a time.
                h.changed_at = now_at;
                self.num_live += 1;
                // Up only past `base_heartbeat`: heard beating.
                self.num_heard += 1;
                self.events.push_back(Event::Up(p.state.id().clone()));
                self.ring_changed(now);
            }
            Liveness::Down { .. } | Liveness::Left { .. } => {}
        }
    }

    pub(super) fn check_liveness(&mut self, now: Instant) {
        let health = self.health;
        let mut downs = Vec::new();
        let mut expired = Vec::new();
        let epoch = self.params.epoch();
        let now_at = Stamp::of(now, epoch);
        let mut next: Option<Stamp> = None;
        for (tag, h) in self.nodes.hots_mut() {
            if tag == self.me {
                continue;
            }
            match h.liveness {
                Liveness::Alive if now_at > h.deadline => downs.push(tag),
                Liveness::Alive => next = Some(next.map_or(h.deadline, |t| t.min(h.deadline))),
                Liveness::Down { since } if now_at.since(since) >= self.config.dead_grace => {
                    expired.push(tag)
                }
                Liveness::Left { since } if now_at.since(since) >= self.config.left_grace => {
                    expired.push(tag)
                }
                _ => {}
            }
        }
        for tag in downs {
            if let Some((p, h)) = self.nodes.get_both_mut(&tag) {
                // The deadline was set at the last heartbeat; the prior may have grown since
                // (the cluster grew), and this node may be overloaded: check again before
                // convicting. The stored deadline stays the plain one, so the peer is looked at
                // again every round and convicted as soon as this node's health recovers (a
                // deadline stretched by a passing overload used to stick: up to 4.4 s instead
                // of 1.7 s for a kill among 200 nodes in one process).
                let limit = p.detector.age_limit(&self.params);
                h.deadline = Stamp::of(p.detector.evidence_at(&self.params) + limit, epoch);
                let stretched = p.detector.evidence_at(&self.params) + limit * (1 + health);
                if now <= stretched {
                    let stretched = Stamp::of(stretched, epoch);
                    next = Some(next.map_or(stretched, |t| t.min(stretched)));
                    continue;
                }
                h.liveness = Liveness::Down { since: now_at };
                if p.heard_beating() {
                    self.num_heard = self.num_heard.saturating_sub(1);
                }
                p.base_heartbeat = p.state.heartbeat().0;
                self.num_live -= 1;
                self.stats.downs += 1;
                let (mean, std) = p.detector.estimate(&self.params);
                debug!(
                    node = %p.state.id(),
                    age_ms = now.saturating_duration_since(p.detector.evidence_at(&self.params)).as_millis() as u64,
                    mean_ms = (mean * 1e3) as u64,
                    std_ms = (std * 1e3) as u64,
                    samples = p.detector.num_samples(),
                    health,
                    "down"
                );
                self.events.push_back(Event::Down(p.state.id().clone()));
                self.ring_changed(now);
            }
        }
        if !expired.is_empty() {
            // Room again: the nodes refused for want of it may be sent again (one is taken).
            // Not in `expire`, which a restart calls too: its new incarnation takes the room
            // at once, and an emptied list had peers send the refused nodes once more
            // (`a_restart_in_a_full_table_does_not_make_peers_send_the_refused_nodes_again`).
            self.refused.clear();
        }
        for tag in expired {
            self.expire(now, tag);
        }
        // Convict at the deadline, not at the next round: up to an interval sooner. Just past
        // it, since a peer exactly at its deadline is not convicted yet.
        self.next_liveness_check = next.map(|t| t.to_instant(epoch) + LIVENESS_CHECK_SLACK);
    }

    /// Whether gossip about `tag` at heartbeat `hb` is kept out by its burial: it is buried,
    /// and `hb` is not `BURIAL_LIFT_BEATS` past the heartbeat it was buried at, nor
    /// `BURIAL_RISE_BEATS` past the far-past one heard before (`Burial::heard`).
    pub(super) fn kept_buried(&self, tag: Tag, hb: u64) -> bool {
        self.buried.get(&tag).is_some_and(|b| {
            hb <= b.heartbeat.saturating_add(BURIAL_LIFT_BEATS)
                || b.heard
                    .is_some_and(|(h, _)| hb <= h.saturating_add(BURIAL_RISE_BEATS))
        })
    }

    /// Gossip stated heartbeat `hb` for the buried `tag` at `now`, and `kept_buried` let it
    /// through. The first time, notes it and keeps the burial (true). A later one lifts it
    /// (false) if it rose past the noted one at most as fast as a live node beats (one an
    /// interval, two of slack): copies of a dead node held apart before the heal differ by a
    /// jump time does not explain, which only replaces the noted value (found by review:
    /// the staler copy heard first let the fresher one lift the burial of a dead node).
    /// Not buried: false.
    pub(super) fn burial_holds(&mut self, tag: Tag, hb: u64, now: Instant) -> bool {
        let interval = self.config.gossip_interval;
        let Some(b) = self.buried.get_mut(&tag) else {
            return false;
        };
        if b.heard
            .is_some_and(|heard| rose_at_live_pace(heard, hb, now, interval))
        {
            self.lift_burial(tag);
            return false;
        }
        b.heard = Some((hb, now));
        true
    }

    /// Forgets the burial of `tag` (it proved alive). Its name's floor drops to the highest
    /// generation of that name still buried, if any: an older incarnation proving itself
    /// alive must not let in the generations between it and a newer buried one (found by
    /// review: the floor went entirely). Its grave stays.
    pub(super) fn lift_burial(&mut self, tag: Tag) {
        let Some(b) = self.buried.remove(&tag) else {
            return;
        };
        self.resent_buried.remove(&tag);
        // The floor is the highest of the name's burials (both lift by `until`), so it is
        // derived again from those left. Rare (a partition outlived `dead_grace`): a scan.
        let floor = self
            .buried
            .values()
            .filter(|o| o.name == b.name)
            .map(|o| (o.generation, o.until))
            .max();
        match floor {
            Some(f) => {
                self.buried_names.insert(b.name, f);
            }
            None => {
                self.buried_names.remove(&b.name);
            }
        }
    }

    /// Remembers that `tag` was buried at heartbeat `hb`, for good (within a bound).
    fn dig_grave(&mut self, tag: Tag, hb: u64, now: Instant) {
        let cap = self
            .config
            .limits
            .max_nodes
            .saturating_mul(super::GRAVES_PER_NODE);
        if self.graves.len() >= cap && !self.graves.contains_key(&tag) {
            // Full only after a great many restarts: forget the oldest (a scan, when full).
            let oldest = self
                .graves
                .iter()
                .min_by_key(|(t, (_, at))| (*at, **t))
                .map(|(t, _)| *t);
            if let Some(t) = oldest {
                self.graves.remove(&t);
            }
        }
        let g = self.graves.entry(tag).or_insert((hb, now));
        *g = (g.0.max(hb), now);
    }

    /// Drops a node's state and remembers its incarnation for `forget_after`.
    pub(super) fn expire(&mut self, now: Instant, tag: Tag) {
        let Some((p, h)) = self.nodes.remove(&tag) else {
            return;
        };
        self.params.set_cluster_size(self.nodes.len());
        if h.liveness == Liveness::Alive {
            self.num_live -= 1;
            if tag != self.me && p.heard_beating() {
                self.num_heard = self.num_heard.saturating_sub(1);
            }
        }
        let id = p.state.id().clone();
        if self.names.get(&id.name) == Some(&tag) {
            self.names.remove(&id.name);
        }
        self.bury(&id, tag, p.state.heartbeat().0, now);
        debug!(node = %id, "expired");
        self.events.push_back(Event::Expired(id));
        self.ring_changed(now);
    }

    /// Keeps incarnation `id` (`tag`), expired at heartbeat `hb`, out for `forget_after`, and
    /// its name's older generations with it.
    pub(super) fn bury(&mut self, id: &NodeId, tag: Tag, hb: u64, now: Instant) {
        let until = now + self.config.forget_after;
        self.buried.insert(
            tag,
            Burial {
                name: id.name.clone(),
                generation: id.generation,
                heartbeat: hb,
                until,
                heard: None,
            },
        );
        self.dig_grave(tag, hb, now);
        let entry = self
            .buried_names
            .entry(id.name.clone())
            .or_insert((id.generation, until));
        if id.generation >= entry.0 {
            *entry = (id.generation, until);
        }
    }
}

/// Whether gossip stating heartbeat `hb` at `now`, after it stated `h` at `at`, shows a rise
/// at most as fast as a live node beats (one an interval, two of slack). Copies of a dead
/// node held by different peers differ by a jump time does not explain.
pub(super) fn rose_at_live_pace(
    (h, at): (u64, Instant),
    hb: u64,
    now: Instant,
    interval: Duration,
) -> bool {
    let beats = now.saturating_duration_since(at).as_nanos() / interval.as_nanos().max(1);
    let paced = u64::try_from(beats).unwrap_or(u64::MAX).saturating_add(2);
    hb > h && hb - h <= paced
}
