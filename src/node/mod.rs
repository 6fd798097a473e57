//! [`Node`]: the sans-IO gossip state machine.
//!
//! Where things happen, for a newcomer:
//! - a packet enters at [`Node::handle_datagram`] / [`Node::handle_stream_frame`], is decoded in
//!   `wire`, and dispatched by `on_message` to `on_syn`, `on_synack` or `on_ack`;
//! - state changes in `apply_deltas` (peers' state), `learn_heartbeat` (liveness) and the
//!   commands (`set`, `delete`, `leave`, our own state);
//! - packets leave through `send`, into the queue [`Node::poll_transmit`] drains.
//!
//! This file holds the node's data, its public API, its timers and the exchange handlers;
//! `digest` builds and reads digests, `delta` builds and applies deltas (and starts stream
//! syncs when state does not fit a datagram), `liveness` learns heartbeats and convicts.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use tracing::{debug, trace, warn};

mod delta;
mod digest;
mod liveness;

use crate::config::Config;
use crate::detector::{DetectorParams, PeerDetector};
use crate::error::Error;
use crate::event::{Event, KeyEvents, OwnershipChange};
use crate::id::{Generation, MAX_NAME_LEN, NodeId, Tag};
use crate::ring::{self, Ring};
use crate::state::{self, ApplyLimits, NodeState};
use crate::stats::Stats;
use crate::table::Table;
use crate::wire::{self, Beats, Codec, DecodeError, Digest, DigestEntry, Message, NodeDelta, size};

/// How a payload travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    /// One UDP datagram: small, may be lost, duplicated or reordered.
    Datagram,
    /// One frame on a reliable stream (TCP): large state, full syncs. Replies to a frame go back
    /// as frames to the address it came from, on the same connection if the driver still has it.
    Stream,
}

/// Why `addr` can never be a peer's address, if it cannot: an unspecified IP names no host to
/// send to (Linux delivers it to the local host, other systems refuse it: a peer on this host
/// is `127.0.0.1`), port 0 no port a peer listens on, and multicast or broadcast address many
/// hosts (a datagram to them is no exchange with one peer, and TCP cannot connect to them). A
/// subnet's directed broadcast address cannot be told without its netmask and passes.
pub(crate) fn not_a_peer(addr: SocketAddr) -> Option<&'static str> {
    not_a_peer_ip(addr.ip()).or_else(|| (addr.port() == 0).then_some("port 0"))
}

/// An address as this node's peers know it: IPv4-mapped IPv6 addresses (from a dual-stack
/// socket) become plain IPv4; every other address stays as it is.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// Why no peer can have `ip` whatever the port (`not_a_peer`), if it cannot. IPv4-mapped IPv6
/// addresses count as the IPv4 ones they carry.
pub(crate) fn not_a_peer_ip(ip: IpAddr) -> Option<&'static str> {
    let ip = ip.to_canonical();
    if ip.is_unspecified() {
        Some("it is unspecified (0.0.0.0 or ::); a peer on this host is 127.0.0.1 or ::1")
    } else if ip.is_multicast() {
        Some("it is a multicast address")
    } else if ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
        Some("it is the broadcast address")
    } else {
        None
    }
}

/// A payload the driver must send.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct Transmit {
    /// Destination gossip address.
    pub to: SocketAddr,
    /// Datagram or stream frame.
    pub channel: Channel,
    /// The bytes: a whole datagram, or a frame's payload (the driver adds the length prefix).
    pub payload: Bytes,
}

/// A member as seen from this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its identity.
    pub id: NodeId,
    /// Alive, down or left.
    pub status: MemberStatus,
    /// Whether it marked itself ready.
    pub ready: bool,
}

/// A member's liveness as judged by this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberStatus {
    /// Heartbeats arrive.
    Alive,
    /// Heartbeats stopped: phi passed the threshold.
    Down,
    /// It left gracefully.
    Left,
}

/// The gossip protocol of one node, with no IO: a pure function of the packets, commands and
/// times it is given.
///
/// Method kinds (as in quinn-proto):
/// - **handlers** take input from the network or the clock: [`handle_datagram`],
///   [`handle_stream_frame`], [`handle_timeout`];
/// - **commands** come from the application: [`join`], [`set`], [`delete`], [`leave`]...;
/// - **outputs** are drained after every handler or command, in this order:
///   [`poll_transmit`] until `None`, [`poll_event`] until `None`, then [`poll_timeout`] to
///   know when to call [`handle_timeout`] next;
/// - **getters** read the local view: [`members`], [`node_state`], [`get`], [`stats`].
///
/// Time MUST NOT go backwards between calls (an earlier `now` is treated as the latest one
/// seen). Randomness comes from the seed given to [`Node::new`], so a run is reproducible.
///
/// [`handle_datagram`]: Node::handle_datagram
/// [`handle_stream_frame`]: Node::handle_stream_frame
/// [`handle_timeout`]: Node::handle_timeout
/// [`join`]: Node::join
/// [`set`]: Node::set
/// [`delete`]: Node::delete
/// [`leave`]: Node::leave
/// [`poll_transmit`]: Node::poll_transmit
/// [`poll_event`]: Node::poll_event
/// [`poll_timeout`]: Node::poll_timeout
/// [`members`]: Node::members
/// [`node_state`]: Node::node_state
/// [`get`]: Node::get
/// [`stats`]: Node::stats
pub struct Node {
    config: Config,
    params: DetectorParams,
    codec: Codec,
    id: NodeId,
    me: Tag,
    rng: Xoshiro256PlusPlus,
    /// Every known node, ourselves included, by tag.
    nodes: Table<Peer, Hot>,
    /// The current incarnation of each name.
    names: BTreeMap<String, Tag>,
    /// Expired incarnations, remembered for `forget_after` so stale gossip cannot revive
    /// them.
    buried: BTreeMap<Tag, Burial>,
    /// The vectors of the last digest read, kept for the next: a node reads a few digests per
    /// interval from every peer it gossips with, and allocating these each time (several
    /// kilobytes, too large for the allocator's per-thread cache) was a tenth of a
    /// 200-node process's idle CPU with the other vectors of a message.
    resolved_spare: Resolved,
    /// The highest buried generation of each name.
    buried_names: BTreeMap<String, (Generation, Instant)>,
    /// Every incarnation expired here, with the heartbeat it was buried at and when, kept
    /// after its burial lifts (at most `GRAVES_PER_NODE * max_nodes`, the oldest forgotten
    /// first): it comes back only with a newer heartbeat. A burial lifts after `forget_after`,
    /// and so do the replay windows of its packets; without this, its captured packets
    /// replayed later brought a dead node back.
    graves: BTreeMap<Tag, (u64, Instant)>,
    /// The nodes refused for want of room (`limits.max_nodes`) since a node last left the
    /// table, by tag (at most `REFUSED_PER_NODE` x `max_nodes` of them, the lowest tag
    /// forgotten first). While the table is full, the covers of our digests leave them out
    /// (`Node::narrow_cover`): peers that hold them would otherwise read them as missing here
    /// and send them whole at every exchange. Emptied when nodes expire for silence or a
    /// leave (`check_liveness`), as the table then has room again; not when a restart
    /// replaces one (`Node::admit`), as the new incarnation takes its room.
    refused: BTreeSet<Tag>,
    /// Buried incarnations (`buried`) a peer sent us again, whole, as nodes we lacked, near the
    /// heartbeat we buried them at (not a far-past copy, which only `Burial::heard` keeps out:
    /// design.md 2.2): it still holds them (its `dead_grace` is longer), and our covers,
    /// spanning them, made it send them at every exchange until it expired them too
    /// (measured: 600 times in 60 s from two peers). Our covers leave these
    /// out (`Node::narrow_cover`). Kept while their burial lasts. A buried node that proves
    /// alive still comes back: peers' digests list it, and we ask for it
    /// (`Node::resolve_digest`).
    resent_buried: BTreeSet<Tag>,
    /// The round (`next_gossip`) whose lateness was last taken as a pause, so that a pause
    /// noticed by a packet handler is not forgiven again by the timer.
    pause_noted: Option<Instant>,
    /// Peers whose state held tombstones after its last change: garbage collection visits
    /// them and this node only (reading every peer's record each pass was a cache miss per
    /// peer).
    tombstoned: BTreeSet<Tag>,
    /// The newer incarnation of our name that replaced this one, once learned: the node is
    /// then quiet and owns nothing (see `Event::Superseded`).
    superseded: Option<NodeId>,
    /// A newer incarnation of our name heard of, a heartbeat of it heard, and when: we stand
    /// down once one far enough higher, risen at a live node's pace, shows it alive (see
    /// `Node::note_successor`).
    successor: Option<(Tag, u64, Instant)>,
    /// Nonces of sealed packets already accepted, per sender.
    replay: crate::crypto::ReplayGuard,
    seeds: Vec<SocketAddr>,
    /// Addresses other than the advertised one found to reach this node (`add_own_addr`),
    /// canonical, oldest first, at most `MAX_OWN_ADDRS`: left out of the seeds like it.
    own_addrs: VecDeque<(SocketAddr, Instant)>,
    /// The seeds last given (`set_seeds`, `join`), addresses no peer can have left out, but
    /// not our own: an own address forgotten (`OWN_ADDR_FORGET`) is a seed again.
    seeds_given: Vec<SocketAddr>,
    join: JoinState,
    outbox: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
    next_gossip: Instant,
    /// The earliest deadline of a live peer (plus `LIVENESS_CHECK_SLACK`): liveness is checked
    /// then as well as every round.
    next_liveness_check: Option<Instant>,
    /// Local health penalty, 0 (healthy) to `MAX_HEALTH_PENALTY`: age limits are multiplied by
    /// `1 + health` before convicting.
    health: u32,
    /// When the first gossip round was due: the heartbeat follows the intervals elapsed since.
    beat_origin: Instant,
    /// Heartbeats added to those intervals: a rebase moved the heartbeat past a previous run's
    /// (`rebase_own`), and it must still follow time from there.
    beat_lead: u64,
    next_anti_entropy: Option<Instant>,
    ticks: u64,
    digest_cursor: u64,
    /// Our membership fingerprint as of the last round, and the one before it changed:
    /// lets digests to peers that shared the previous one go by position once the change has
    /// spread (`Node::peer_reads_positions`).
    fp_track: FpTrack,
    last_now: Instant,
    leaving: Option<Leaving>,
    /// Syns sent in the last `SYN_ANSWER_WINDOW` not answered yet, oldest first (at most
    /// `SYNS_TRACKED`): a SynAck does not name the Syn it answers, a peer answers in order on
    /// each channel, so each SynAck takes the oldest to its address on its channel off, and
    /// one that answers a Syn from before the leave proves nothing about it.
    syns_out: VecDeque<SynOut>,
    /// The last stream exchange this node started with each address, for the last
    /// `STREAM_SYNC_BACKOFF` (longer while unanswered; see `collect_garbage`).
    stream_syncs: BTreeMap<SocketAddr, StreamSync>,
    /// The last stream sync this node started because state did not fit datagrams: where to
    /// and when, and whether its answer is still awaited.
    last_data_sync: Option<DataSync>,
    /// A peer this node asked for state in answer to its stream exchange, and when: awaiting
    /// its Ack.
    stream_requests: Option<(SocketAddr, Instant)>,
    num_live: usize,
    /// Live peers (not this node) heard beating (`Peer::heard_beating`): what
    /// `first_ring_wait` asks each time the ring's due time is read before the first ring,
    /// kept where a peer's liveness or `base_heartbeat` changes instead of scanned for (a
    /// scan of every peer per `poll_timeout`).
    num_heard: usize,
    /// Which key events to emit.
    key_events: KeyEvents,
    /// Evidence ages are not learned before this instant: set after this node finds it was
    /// paused (see `handle_timeout`).
    learn_ages_after: Instant,
    /// Ownership, rebuilt from the live members once membership has settled.
    ring: Arc<Ring>,
    /// First and latest unsettled membership change.
    ring_dirty: Option<(Instant, Instant)>,
    /// This node's extra settle time for the pending rebuild (see `ring_changed`).
    ring_jitter: Duration,
    /// When members of the ring that left gracefully are to be dropped from it, ahead of the
    /// settle (see `ring_changed_by_leave`).
    ring_prompt: Option<Instant>,
    /// Whether this node has built a ring yet (its first names previous owners: see
    /// `rebuild_ring`).
    had_ring: bool,
    /// The latest this node's first ring waits for a join in progress (`first_ring_wait`):
    /// `RING_MAX_SETTLES` settles after start.
    first_ring_by: Option<Instant>,
    /// The service said seeds are on their way (`expect_seeds`) and none came yet.
    seeds_expected: bool,
    /// Peers seen to turn ready before this node's first ring, and when (`ring_ready_only`
    /// only; emptied once the first ring is built): they owned nothing before, so that ring
    /// does not name them as previous owners.
    turned_ready: BTreeMap<Tag, Instant>,
    /// The version of each peer's ring key (`state::KEY_RING`) when this node's ring last
    /// emptied (below `ring_min_members`, or no member ready), while it stays empty: a peer
    /// that has not rewritten it since held the ring it gossips all along, this node in it if
    /// that ring is the one this node builds next, and hands it nothing (`ring_held_before`).
    ring_keys_when_emptied: BTreeMap<Tag, u64>,
    /// Whether gossip brought an older incarnation of this node's name before this node's
    /// first ring (`None`: not), and if so, whether a copy of it carried a ring key: that
    /// process built a ring (`held_since_before_start`).
    predecessor_ring: Option<bool>,
    /// When an identity conflict was last logged (see `Stats::identity_conflicts`).
    conflict_logged: Option<Instant>,
    /// The highest version and heartbeat seen in peers' copies of this node past its own,
    /// not yet rebased past (`rebase_own`).
    rebase_wanted: Option<(u64, u64)>,
    /// When this node last rebased its state (`REBASE_EVERY`).
    rebased_at: Option<Instant>,
}

/// A peer's record: the bulk of what a node holds per peer.
///
/// `repr(C)`, in this order, with `NodeState`'s heartbeat its last field: what a learned
/// heartbeat reads and writes (the state's heartbeat, then the detector's leading fields up to
/// its window's totals) is one run of 168 bytes, three or four cache lines; the rest of the
/// record (the keys, the detector's block sums) is read far less often.
#[repr(C)]
struct Peer {
    state: NodeState,
    detector: PeerDetector,
    /// The heartbeat it must beat past: the one it was introduced at (it enters this node's
    /// ring only once heard past it: a joiner is introduced as alive to members its seed
    /// already holds down, since liveness is each node's own verdict, and such a member never
    /// beats again), then the one it was marked down at (it comes back up only past this plus
    /// `UP_BEATS`).
    base_heartbeat: u64,
    /// The membership fingerprint in the peer's last Syn or SynAck (0: none yet, or still
    /// our previous one after our change spread; see `Node::note_fingerprint`). Equal to
    /// ours, digests to it name nodes by position (or to our previous one: see
    /// `Node::peer_reads_positions`). Read for the few peers a round sends to,
    /// so not in `Hot`.
    fp: u64,
}

/// How our membership fingerprint last changed (see `Node::peer_reads_positions`).
struct FpTrack {
    /// Our fingerprint as of the last gossip round.
    cur: u64,
    /// The one before `cur` (0: none).
    prev: u64,
    /// The round `cur` was first seen at.
    since: Instant,
    /// A peer has sent `cur` since: the change is not ours alone.
    confirmed: bool,
}

/// What a free slot of the table holds (see `Table`): allocates nothing.
impl Default for Peer {
    fn default() -> Self {
        Self {
            state: NodeState::new(NodeId::new(
                String::new(),
                0,
                SocketAddr::from(([0, 0, 0, 0], 0)),
            )),
            detector: PeerDetector::default(),
            base_heartbeat: 0,
            fp: 0,
        }
    }
}

/// The part of a peer that every round and every digest reads, kept in the table's dense array
/// (see `table`). 56 bytes, so that with its tag it is one cache line: every round scans all of
/// them, and every learned heartbeat writes one.
#[derive(Clone, Copy, Debug)]
struct Hot {
    /// Copies of the peer state's versions; `Hot::sync` refreshes them after every change to
    /// the state. (Its heartbeat's copy is in the table's own dense array: `Table::beat_at`.)
    max_version: u64,
    gc_version: u64,
    liveness: Liveness,
    /// When the detector's phi passes the threshold, if no heartbeat arrives before.
    deadline: Stamp,
    /// When this node last learned a newer version of the peer's state (or learned the peer).
    changed_at: Stamp,
    /// When this node last learned a newer heartbeat of the peer.
    hb_at: Stamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Liveness {
    Alive,
    Down { since: Stamp },
    Left { since: Stamp },
}

/// A time as nanoseconds from the node's epoch (`DetectorParams::epoch`, its creation): 8
/// bytes where an `Instant` takes 16, in the per-peer part every round scans. Signed, so that
/// a time before the epoch converts exactly too; comparisons and differences give exactly what
/// the `Instant`s would.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Stamp(i64);

impl Stamp {
    fn of(t: Instant, epoch: Instant) -> Self {
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        match t.checked_duration_since(epoch) {
            Some(d) => Self(nanos(d)),
            None => Self(-nanos(epoch.duration_since(t))),
        }
    }

    fn to_instant(self, epoch: Instant) -> Instant {
        let d = Duration::from_nanos(self.0.unsigned_abs());
        if self.0 >= 0 {
            epoch + d
        } else {
            epoch.checked_sub(d).unwrap_or(epoch)
        }
    }

    /// The time from `earlier` to this one (zero if `earlier` is later), as
    /// `Instant::saturating_duration_since`.
    fn since(self, earlier: Self) -> Duration {
        Duration::from_nanos(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

/// A stream exchange this node started (`Node::stream_syncs`).
#[derive(Clone, Copy, Debug)]
struct StreamSync {
    at: Instant,
    /// Its SynAck came: the stream to that address works.
    answered: bool,
    /// Its connection closed, or could not be opened, before the answer.
    failed: bool,
}

/// A Syn sent and not answered yet (`Node::syns_out`).
#[derive(Clone, Copy, Debug)]
struct SynOut {
    at: Instant,
    to: SocketAddr,
    channel: Channel,
    /// Sent before `leave()`: its answer says nothing about the leave.
    before_leave: bool,
}

struct Leaving {
    version: u64,
    needed: usize,
    deadline: Instant,
    confirmed: BTreeSet<Tag>,
    synced_to: BTreeSet<SocketAddr>,
    done: bool,
}

/// A stream exchange started because state did not fit datagrams.
#[derive(Clone, Copy, Debug)]
struct DataSync {
    to: SocketAddr,
    at: Instant,
    /// Its SynAck arrived, or its connection ended first: no longer in flight.
    answered: bool,
}

/// Retry state of the stream join to seeds: exponential backoff while no peer is known.
struct JoinState {
    next_attempt: Option<Instant>,
    backoff: Duration,
    /// Seeds `set_seeds` added that were not members: the only ones a node that has peers
    /// contacts at an attempt `set_seeds` brought forward (all of them would be a full
    /// exchange with every seed, on every node, each time one new address appears).
    pending: Vec<SocketAddr>,
    /// Whether the next attempt is the backoff's retry, scheduled while alone: it goes to
    /// every seed even if peers were found since. That second exchange, a second after
    /// joining, brings the seeds' by-then fuller membership at once: a 1,000-node cold start
    /// forms in 11 rounds with it, 20 without.
    retry: bool,
}

/// A peer's digest read against our table: the slot of each entry, and the beats as
/// `(slot, heartbeat)`.
#[derive(Default)]
struct Resolved {
    slots: Vec<Option<u32>>,
    beats: Vec<(u32, u64)>,
}

/// Rounds without a membership change before the table puts its entries in tag order
/// (`Table::relayout_if_settled`): not during a cold start, when every round changes it.
const RELAYOUT_SETTLE_ROUNDS: u32 = 3;

/// Expired incarnations remembered per tracked node (`Node::graves`): restarts leave one each.
const GRAVES_PER_NODE: usize = 4;
/// Refused nodes remembered (`Node::refused`) per node the table holds. A full table asks
/// each digest for one node it lacks and has not refused, so once more nodes are missing than
/// the list holds it forgets one at every refusal and asks for it again, for good: with room
/// for `max_nodes` only, a cluster one node over twice the limit brought 170 to 214
/// introductions in 100 rounds instead of 10 to 19 (found by review,
/// `node::tests::a_full_table_one_node_over_twice_its_limit_is_not_introduced_nodes_every_round`).
/// At 8 bytes a tag, 4 x 65,536 tags are 2 MiB at the largest `max_nodes`.
const REFUSED_PER_NODE: usize = 4;

/// How long a Syn's answer is awaited for `Node::syns_out`; answers later than this are rare
/// (an exchange times out after 3 s).
const SYN_ANSWER_WINDOW: Duration = Duration::from_secs(3);

/// Unanswered Syns remembered (`Node::syns_out`): several rounds' worth at the largest fanout
/// a round uses in practice; the oldest go first.
const SYNS_TRACKED: usize = 64;

/// Identity conflicts are logged at warn level at most this often.
const CONFLICT_LOG_EVERY: Duration = Duration::from_secs(60);

/// Least time between two rebases of this node's state (`Node::rebase_own`): a restart that
/// reused its identity needs one (two if peers' copies of the previous run differ by more
/// than `REBASE_MARGIN`); two live processes under one identity would otherwise push past
/// each other every round, each time with a reset to every peer.
const REBASE_EVERY: Duration = Duration::from_secs(10);

/// How far past the highest version seen in a peer's copy a rebase moves this node's
/// versions: other peers may hold a little more of the previous run (its last writes, still
/// spreading when it stopped), and a copy up to the rebase takes the reset too.
const REBASE_MARGIN: u64 = 256;

/// What a peer's copy of this node was seen past (`Node::note_identity_conflict`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Conflict {
    Heartbeat,
    Version,
}

/// Capacity of the event queue kept once it is drained (see `Node::poll_event`).
const EVENTS_KEPT: usize = 64;

/// A node the peer lacks data of, found while reading its digest.
#[derive(Clone, Copy, Debug)]
struct Want {
    tag: Tag,
    peer_max: u64,
    peer_gc: u64,
    unknown: bool,
}

impl Want {
    /// Whether the peer's copy may hold keys whose tombstones we purged up to `gc`, so that
    /// only a reset brings it up to date (`Hot::needs_reset`, from our side).
    fn misses_purges_up_to(&self, gc: u64) -> bool {
        gc > self.peer_gc && self.peer_max < gc
    }
}

/// Time until the next anti-entropy exchange: `interval` times a random factor in [0.5, 1.5),
/// so nodes started together (a deployment, a test process) do not all run their full-state
/// exchanges in the same moment, and drift further apart with every one. Among 200 nodes
/// started at once in one process, the first anti-entropy round of all of them landed on a
/// state load 30 s later and slowed it from about 5 s to 7.3 s (BENCHMARKS.md 4).
fn anti_entropy_wait(interval: Duration, rng: &mut Xoshiro256PlusPlus) -> Duration {
    // A factor below 1 cannot overflow; the sum saturates.
    (interval / 2).saturating_add(interval.mul_f64(rng.random::<f64>()))
}

/// Heartbeats past the one a node was convicted at before it counts as up again, so a last
/// heartbeat still spreading after the conviction does not flap it.
const UP_BEATS: u64 = 2;
/// An expired incarnation, kept out until `until`.
#[derive(Clone, Debug)]
struct Burial {
    name: String,
    /// Its generation: lifting it must not lift a newer buried generation of its name.
    generation: Generation,
    /// Its heartbeat when it expired here.
    heartbeat: u64,
    until: Instant,
    /// The last heartbeat gossip stated for it `BURIAL_LIFT_BEATS` past `heartbeat`, and when:
    /// it is taken back only once gossip states one `BURIAL_RISE_BEATS` higher, risen at a
    /// live node's pace (`burial_holds`). A live node's heartbeat rises once an interval; that
    /// of a node that died on the other side of a partition, still held there at its last
    /// value, never does (found by review: it came back as a ghost, Joined then Down, after
    /// the heal).
    heard: Option<(u64, Instant)>,
}

/// How far past `Burial::heard` gossip must go to lift the burial: the holders of a node that
/// died just before a heal may still differ by the few last beats it sent.
const BURIAL_RISE_BEATS: u64 = 8;

/// Heartbeats past the one an incarnation was buried at that gossip must state to bring it
/// back before its burial ends (twice, rising: see `Burial::heard`). It went on beating through a partition longer than
/// `dead_grace` (2 min is 1,200 beats at 100 ms); a dead node's last beats, still relayed,
/// are not this far past what its burier held (a beat rebuilt from one byte is at most 128
/// ahead). Without it only the nodes the other side contacted directly (its seeds) took it
/// back, and a long partition stayed split until `forget_after` (found by review: 570 s).
const BURIAL_LIFT_BEATS: u64 = 256;
/// How long after a live peer's deadline its liveness is checked (a timer that fires exactly at
/// the deadline would find the peer not past it yet).
const LIVENESS_CHECK_SLACK: Duration = Duration::from_millis(1);
/// Largest local health penalty: while this node's own rounds run late, a peer is convicted
/// only after up to `1 + MAX_HEALTH_PENALTY` times its usual age limit (memberlist uses 8).
const MAX_HEALTH_PENALTY: u32 = 8;
/// A SynAck names a node by a full entry rather than a beat when the Syn showed the peer this
/// many heartbeats behind us or more: a beat is read against the copy the peer holds, exactly
/// only within 128 of it.
const FULL_ENTRY_LAG: u64 = 64;
/// A tick later than this many intervals means this node was paused.
const PAUSE_INTERVALS: u32 = 3;
/// Least time between two stream syncs to the same address triggered by large state.
const STREAM_SYNC_BACKOFF: Duration = Duration::from_secs(2);
/// A Syn showing the sender ahead on more nodes than this starts a stream pull.
const PULL_SYNC_REQUESTS: usize = 3;
/// Ticks between garbage collection passes (tombstones, TTLs, graveyard).
const GC_EVERY_TICKS: u64 = 5;
/// Longest a rebuild waits, in `ring_settle`s: after the first of changes that keep coming
/// (flapping becomes one change), and a node's first ring after start for a join in progress
/// (`Node::first_ring_wait`).
const RING_MAX_SETTLES: u32 = 4;
/// Beats by which a member's ring must be older than this node's process for a first ring to
/// be taken for a quick restart's (`Node::held_since_before_start`): each of the two heartbeat
/// counts may be a beat off the times it stands for.
const RESTART_MARGIN_BEATS: u64 = 2;
/// Longest wait between stream join attempts to seeds while alone.
const MAX_JOIN_BACKOFF: Duration = Duration::from_secs(30);
/// Own addresses remembered besides the advertised one (`Node::add_own_addr`). A host has a
/// few addresses a node can be reached at (loopback, one per interface and family); the
/// bound keeps a runtime that learns them from network events from growing the list.
const MAX_OWN_ADDRS: usize = 16;
/// How long an address learned to reach this node (`Node::add_own_addr`) is left out of the
/// seeds. A virtual IP configured on the host (keepalived, kube-vip) reaches this node only
/// while it holds it: kept out for good, such a seed could not bring the node back to its
/// cluster after the address moved on (found by review). If it still leads here, the next
/// exchange through it learns it again.
const OWN_ADDR_FORGET: Duration = Duration::from_secs(600);
/// How many times per round a node's Syns together carry its whole view (within the MTU).
/// Measured in the simulator (design.md, "Failure detection"): with 3, heartbeat evidence is
/// fresh enough for detection in about 9 intervals without false alarms at 100 nodes and 10%
/// loss; with 2 a few live nodes per minute are falsely convicted.
const DIGEST_VIEWS_PER_ROUND: usize = 3;
/// Upper bound on the per-message framing around digest entries and deltas (array headers,
/// the sender tag, the cover), so filling to a budget never overshoots.
const MESSAGE_FRAMING: usize = 48;
/// How many times a datagram's size the answer to it may be when its source is not known as
/// its sender's (`Node::known_source`): a forged source address cannot turn a small datagram
/// into a large answer to someone else. QUIC allows a server the same factor toward an
/// address it has not validated (RFC 9000, section 8).
const AMPLIFICATION_FACTOR: usize = 3;

impl Node {
    /// Creates a node. `rng_seed` drives every random choice (peer selection, tie-breaks).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid `config`, [`Error::NodeName`] for a name empty or too
    /// long, [`Error::NotAPeer`] for an `id.addr` no peer could send to (unspecified, port 0,
    /// multicast, broadcast): peers gossip to the address a node gives out.
    pub fn new(id: NodeId, config: Config, rng_seed: u64, now: Instant) -> Result<Self, Error> {
        config.validate()?;
        if id.name.is_empty() || id.name.len() > MAX_NAME_LEN {
            return Err(Error::NodeName { len: id.name.len() });
        }
        // Peers would gossip to it: an address no peer can have makes a node nobody reaches.
        if let Some(reason) = not_a_peer(id.addr) {
            return Err(Error::NotAPeer {
                addr: id.addr,
                reason,
            });
        }
        let params = DetectorParams::new(
            config.detector_window,
            config.phi_threshold,
            config.detector_min_std.unwrap_or(config.gossip_interval),
            config.gossip_interval,
            config.detector_prior_weight,
            config.detector_distribution,
            now,
        );
        let me = id.tag();
        let mut state = NodeState::new(id.clone());
        state.set_heartbeat(1);
        // Peers date our heartbeats at our pace (`PeerDetector::set_interval`). Written first,
        // so that it leads every delta of our whole state.
        state.set_local(
            state::KEY_INTERVAL,
            Bytes::from(config.gossip_interval.as_nanos().to_string()),
            None,
        );
        if !config.initially_ready {
            state.set_local(state::KEY_READY, Bytes::from_static(b"0"), None);
        }
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(rng_seed);
        // A random phase, so nodes started together do not all gossip at the same instant.
        let phase = config.gossip_interval.mul_f64(rng.random::<f64>());
        let mut nodes = Table::new();
        // `now` is the detector's epoch: time 0.
        let hot = Hot::new(&state, Stamp(0), Stamp(0));
        let beat = state.heartbeat().0;
        nodes.insert(
            me,
            Peer {
                state,
                detector: PeerDetector::new(now, 1, &params),
                base_heartbeat: 0,
                fp: 0,
            },
            hot,
            beat,
        );
        let mut names = BTreeMap::new();
        names.insert(id.name.clone(), me);
        // An interval too long to add to `now` means never.
        let next_anti_entropy = (!config.anti_entropy_interval.is_zero())
            .then(|| now.checked_add(anti_entropy_wait(config.anti_entropy_interval, &mut rng)))
            .flatten();
        // Empty until the first rebuild, a settle after start (see below), like every later
        // change: a ring of this node alone would claim every key for that long, and a node
        // joining a cluster is about to learn it owns a small share.
        let ring = Ring::empty(config.ring.clone().unwrap_or_default())
            .map_err(|e| crate::config::ConfigError::Ring(e.to_string()))?;
        let codec = Codec::new(&config.cluster_id)
            .with_max_nodes(config.limits.max_nodes)
            .with_keyring(
                config.keyring.as_ref(),
                config.send_plaintext,
                config.accept_plaintext,
                me.0,
                rng.random::<u64>(),
            );
        let mut node = Self {
            codec,
            params,
            id,
            me,
            rng,
            nodes,
            names,
            buried: BTreeMap::new(),
            resolved_spare: Resolved::default(),
            buried_names: BTreeMap::new(),
            graves: BTreeMap::new(),
            refused: BTreeSet::new(),
            resent_buried: BTreeSet::new(),
            pause_noted: None,
            tombstoned: BTreeSet::new(),
            superseded: None,
            successor: None,
            // Two channels per node, and room for as many past incarnations.
            replay: crate::crypto::ReplayGuard::new(config.limits.max_nodes.saturating_mul(4)),
            seeds: Vec::new(),
            own_addrs: VecDeque::new(),
            seeds_given: Vec::new(),
            join: JoinState {
                next_attempt: None,
                backoff: Duration::from_secs(1),
                pending: Vec::new(),
                retry: false,
            },
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            next_gossip: now + phase,
            beat_origin: now + phase,
            beat_lead: 0,
            health: 0,
            next_liveness_check: None,
            next_anti_entropy,
            ticks: 0,
            digest_cursor: 0,
            fp_track: FpTrack {
                cur: 0,
                prev: 0,
                since: now,
                confirmed: false,
            },
            last_now: now,
            leaving: None,
            syns_out: VecDeque::new(),
            stream_syncs: BTreeMap::new(),
            last_data_sync: None,
            stream_requests: None,
            num_live: 1,
            num_heard: 0,
            key_events: KeyEvents::All,
            learn_ages_after: now,
            ring: Arc::new(ring),
            ring_dirty: None,
            ring_jitter: Duration::ZERO,
            ring_prompt: None,
            had_ring: false,
            first_ring_by: config
                .ring_settle
                .checked_mul(RING_MAX_SETTLES)
                .and_then(|d| now.checked_add(d)),
            seeds_expected: false,
            turned_ready: BTreeMap::new(),
            ring_keys_when_emptied: BTreeMap::new(),
            predecessor_ring: None,
            conflict_logged: None,
            rebase_wanted: None,
            rebased_at: None,
            config,
        };
        // The first ring, with the members known by then, comes with an `Ownership` event
        // saying what this node acquired.
        node.ring_changed(now);
        Ok(node)
    }

    // ----- getters -----

    /// This node's identity.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters since start.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Every known member (ourselves included), in no particular order.
    pub fn members(&self) -> impl Iterator<Item = Member> + '_ {
        self.nodes.values().map(|(p, h)| Member {
            id: p.state.id().clone(),
            status: h.status(),
            ready: p.state.is_ready(),
        })
    }

    /// Identities of live members (ourselves included until we start leaving: our status is
    /// then `Left`).
    pub fn live_members(&self) -> impl Iterator<Item = &NodeId> + '_ {
        self.nodes
            .values()
            .filter(|(_, h)| h.status() == MemberStatus::Alive)
            .map(|(p, _)| p.state.id())
    }

    /// Identities of live members that marked themselves ready.
    pub fn ready_members(&self) -> impl Iterator<Item = &NodeId> + '_ {
        self.nodes
            .values()
            .filter(|(p, h)| h.status() == MemberStatus::Alive && p.state.is_ready())
            .map(|(p, _)| p.state.id())
    }

    /// Number of live members: the members `live_members` lists, so ourselves included until
    /// we start leaving.
    pub fn num_live(&self) -> usize {
        self.num_live
    }

    /// Number of known members in any status, ourselves included.
    pub fn num_members(&self) -> usize {
        self.nodes.len()
    }

    /// The status of the member called `name`, if known.
    pub fn status(&self, name: &str) -> Option<MemberStatus> {
        let tag = self.names.get(name)?;
        self.nodes.hot(tag).map(Hot::status)
    }

    /// The state of the current incarnation of the node called `name`.
    pub fn node_state(&self, name: &str) -> Option<&NodeState> {
        self.peer_by_name(name).map(|p| &p.state)
    }

    /// Our own state.
    pub fn local_state(&self) -> &NodeState {
        &self.own().state
    }

    /// The live value of `key` in the state of the node called `name`.
    pub fn get(&self, name: &str, key: &str) -> Option<&Bytes> {
        self.node_state(name).and_then(|s| s.get(key))
    }

    /// Every live member's value of `key` (ourselves included until we start leaving), for
    /// the members whose state holds it live: what a service reads to find, say, every
    /// member's HTTP address. In no particular order; members without the key are skipped.
    pub fn values<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Iterator<Item = (&'a NodeId, &'a Bytes)> + 'a {
        self.nodes
            .values()
            .filter(|(_, h)| h.status() == MemberStatus::Alive)
            .filter_map(move |(p, _)| Some((p.state.id(), p.state.get(key)?)))
    }

    /// The current phi of the member called `name` (0 for ourselves and for members not
    /// alive).
    pub fn phi(&self, name: &str, now: Instant) -> Option<f64> {
        let (p, h) = self.nodes.get_both(self.names.get(name)?)?;
        Some(match h.liveness {
            Liveness::Alive if p.state.id() != &self.id => p.detector.phi(now, &self.params),
            _ => 0.0,
        })
    }

    /// The ownership ring, as of the last settled membership.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The ownership ring, shared: cheap to keep in a snapshot (it only changes when membership
    /// settles).
    pub fn ring_arc(&self) -> Arc<Ring> {
        Arc::clone(&self.ring)
    }

    /// The member that owns `key`, if the ring is not empty.
    pub fn owner(&self, key: &[u8]) -> Option<&str> {
        self.ring.owner(key)
    }

    /// The first `n` distinct members owning `key`, in ring order, without allocating.
    pub fn owners(&self, key: &[u8], n: usize) -> ring::Owners<'_> {
        self.ring.owners(key, n)
    }

    /// Whether this node owns `key`. Always false once a newer incarnation of its name
    /// replaced it ([`Event::Superseded`]): the ring names members, and that name is now the
    /// newer process's.
    pub fn is_local_owner(&self, key: &[u8]) -> bool {
        self.superseded.is_none() && self.ring.is_owner(key, &self.id.name)
    }

    /// Whether a graceful leave has completed; the node then sends nothing more.
    pub fn has_left(&self) -> bool {
        self.leaving.as_ref().is_some_and(|l| l.done)
    }

    /// The newer incarnation of this node's name that replaced it, if one was learned
    /// ([`Event::Superseded`]); the node then sends nothing more.
    pub fn superseded_by(&self) -> Option<&NodeId> {
        self.superseded.as_ref()
    }

    /// Whether the node has stopped taking part: its leave completed, or it was superseded.
    fn is_quiet(&self) -> bool {
        self.superseded.is_some() || self.has_left()
    }

    /// Whether local writes (and a leave) are refused: the node is leaving or left, or the
    /// name is another process's now.
    fn takes_no_writes(&self) -> bool {
        self.leaving.is_some() || self.superseded.is_some()
    }

    /// Whether this node is leaving or has left.
    pub fn is_leaving(&self) -> bool {
        self.leaving.is_some()
    }

    // ----- outputs -----

    /// The next payload to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front()
    }

    /// Events queued and not polled yet.
    #[cfg(feature = "tokio")]
    pub(crate) fn queued_events(&self) -> usize {
        self.events.len()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        let event = self.events.pop_front();
        if event.is_none() && self.events.capacity() > EVENTS_KEPT {
            // A burst (a stream sync can bring thousands of key changes at once) must not keep
            // its queue: 200 simulated nodes that each took 100 keys from every other kept
            // about 95 bytes per stored entry in drained queues.
            self.events.shrink_to(EVENTS_KEPT);
        }
        event
    }

    /// When [`Node::handle_timeout`] should be called next. `None` once a leave completed or
    /// the node was superseded.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_quiet() {
            return None;
        }
        let mut t = self.next_gossip;
        if let Some(c) = self.next_liveness_check {
            t = t.min(c);
        }
        if let Some(a) = self.next_anti_entropy {
            t = t.min(a);
        }
        if let Some(l) = &self.leaving {
            t = t.min(l.deadline);
        }
        if let Some(j) = self.join.next_attempt {
            t = t.min(j);
        }
        if let Some(r) = self.ring_due() {
            t = t.min(r);
        }
        if let Some(r) = self.ring_prompt {
            t = t.min(r);
        }
        Some(t)
    }

    // ----- commands -----

    /// Starts joining through `seeds`: a full push-pull exchange over the stream transport with
    /// each, then gossip. Addresses equal to our own are skipped, and so are addresses no peer
    /// can have (unspecified, port 0, multicast, `255.255.255.255`: see
    /// [`Node::set_seeds`]); an empty list forms a cluster of one. While no peer is known,
    /// seeds are retried with exponential backoff.
    pub fn join(&mut self, now: Instant, seeds: impl IntoIterator<Item = SocketAddr>) {
        let now = self.clock(now);
        self.set_seeds(seeds);
        self.join.backoff = Duration::from_secs(1);
        self.join.next_attempt = None;
        self.join.retry = false;
        self.join_attempt(now, true);
        // Gossip at once rather than after the first interval.
        self.next_gossip = self.next_gossip.min(now);
    }

    /// Sets which key events this node emits from now on (all, by default): key changes no
    /// reader wants are applied without building an event for them. Membership events are
    /// always emitted.
    pub fn set_key_events(&mut self, key_events: KeyEvents) {
        self.key_events = key_events;
    }

    /// Replaces the seed list (for example after a DNS re-resolution). Seeds new to the list
    /// and not yet known as members get an exchange at the next gossip round.
    ///
    /// Our own address is left out (the advertised one, and those given to
    /// [`Node::add_own_addr`]), and so is any address no peer can have: an unspecified IP
    /// (`0.0.0.0`, `::`), port 0, a multicast address or `255.255.255.255` (IPv4-mapped ones
    /// alike), each logged as a warning. Left out rather than refused: one such address (a DNS
    /// filter answers `0.0.0.0` for names it blocks) must not cost the others.
    pub fn set_seeds(&mut self, seeds: impl IntoIterator<Item = SocketAddr>) {
        let mut given: Vec<SocketAddr> = seeds
            .into_iter()
            .filter(|a| match not_a_peer(*a) {
                Some(reason) => {
                    warn!(addr = %a, reason, "left out of the seeds: no peer can have this address");
                    false
                }
                None => true,
            })
            .collect();
        given.sort();
        given.dedup();
        self.seeds_given = given;
        self.seeds_expected = false;
        self.refilter_seeds();
    }

    /// Tells the node that its seeds are still being looked up (a DNS name, say) and will
    /// come through [`Node::set_seeds`] ([`Node::join`] sets them too: call this after it).
    /// Until they do, a node that has built no ring and knows no peer holds its first ring
    /// back, as it does while a join exchange with a seed is in flight, for at most
    /// `4 * ring_settle` after it started: a ring of this node alone would tell the service
    /// it acquired every key, and a moment later, once the cluster is heard of, that it
    /// relinquished nearly all of them again.
    pub fn expect_seeds(&mut self) {
        if !self.had_ring && self.config.ring.is_some() {
            self.seeds_expected = true;
        }
    }

    /// Makes the seeds the ones last given but our own addresses (IPv4-mapped forms compared
    /// as IPv4: a dual-stack resolver may give our own address either way). Those new to the
    /// list and not known as members get an exchange at the next round.
    fn refilter_seeds(&mut self) {
        let list: Vec<SocketAddr> = self
            .seeds_given
            .iter()
            .copied()
            .filter(|a| !self.is_own_addr(*a))
            .collect();
        for addr in &list {
            if !self.seeds.contains(addr) && !self.is_member_addr(*addr) {
                // Unknown address: reach it at the next round and push-pull over the stream.
                self.join.next_attempt = Some(self.last_now);
                self.join.pending.push(*addr);
            }
        }
        self.seeds = list;
    }

    /// Exchanges full state over the stream, at the next timeout, with each of `addrs` that is
    /// a seed and not a live member, new to the seeds or not: `Handle::join` names addresses
    /// to try now, and one may be a seed already (an earlier exchange with it failed), which
    /// `set_seeds` alone would never try again while this node has live peers (found by
    /// review).
    #[cfg(feature = "tokio")]
    pub(crate) fn exchange_with_seeds(&mut self, addrs: &[SocketAddr]) {
        for &addr in addrs {
            let live = self
                .nodes
                .values()
                .any(|(p, h)| h.liveness == Liveness::Alive && p.state.id().addr == addr);
            if self.is_own_addr(addr) || live || !self.seeds.contains(&addr) {
                continue;
            }
            self.join.pending.push(addr);
            self.join.next_attempt = Some(self.last_now);
        }
    }

    /// Current seed addresses.
    pub fn seeds(&self) -> &[SocketAddr] {
        &self.seeds
    }

    /// Tells the node that `addr`, other than the address it advertises, reaches this node
    /// itself: say a seed list names it as `127.0.0.1` or by a second interface's address
    /// while it advertises another, and its packets there come back to it (dropped, as
    /// `Stats::rx_own_tag`). From now on `addr` is treated as the advertised address is: it
    /// leaves the seeds at once, [`Node::set_seeds`] and [`Node::join`] leave it out, and so
    /// no exchange or datagram goes there any more. IPv4-mapped forms count as IPv4.
    ///
    /// The caller MUST know `addr` reaches this node, not guess it: the tokio runtime learns
    /// it from a TCP connection accepted at a seed's address. It is forgotten 10 minutes after
    /// `now` (a seed again, if it still is one): an address can reach this node for a while
    /// only, as a virtual IP its host holds does. At most 16 such addresses are kept, the
    /// oldest forgotten first. Returns whether `addr` was new.
    pub fn add_own_addr(&mut self, now: Instant, addr: SocketAddr) -> bool {
        let now = self.clock(now);
        let addr = canonical(addr);
        if self.is_own_addr(addr) {
            return false;
        }
        if self.own_addrs.len() >= MAX_OWN_ADDRS {
            self.own_addrs.pop_front();
        }
        self.own_addrs.push_back((addr, now));
        self.seeds.retain(|a| canonical(*a) != addr);
        self.join.pending.retain(|a| canonical(*a) != addr);
        true
    }

    /// Forgets the own addresses learned `OWN_ADDR_FORGET` ago; those among the seeds given
    /// are seeds again.
    fn forget_own_addrs(&mut self, now: Instant) {
        let before = self.own_addrs.len();
        while self
            .own_addrs
            .front()
            .is_some_and(|(_, at)| now.saturating_duration_since(*at) >= OWN_ADDR_FORGET)
        {
            self.own_addrs.pop_front();
        }
        if self.own_addrs.len() != before {
            self.refilter_seeds();
        }
    }

    /// Whether `addr` is one of this node's own: the advertised address, or one learned by
    /// `add_own_addr` (IPv4-mapped forms compared as IPv4).
    fn is_own_addr(&self, addr: SocketAddr) -> bool {
        let addr = canonical(addr);
        addr == canonical(self.id.addr) || self.own_addrs.iter().any(|(a, _)| *a == addr)
    }

    /// Sets `key` to `value` in our own state. Setting the same value again changes nothing.
    pub fn set(
        &mut self,
        now: Instant,
        key: impl AsRef<str>,
        value: impl Into<Bytes>,
    ) -> Result<(), Error> {
        self.write(now, key.as_ref(), value.into(), None)
    }

    /// Sets `key` to `value`; it turns into a deletion after `ttl` unless set again (TTLs are
    /// checked every fifth gossip round, so up to five intervals later; not once the node is
    /// leaving). A `ttl` longer than the clock can count (such as `Duration::MAX`) never
    /// expires.
    pub fn set_with_ttl(
        &mut self,
        now: Instant,
        key: impl AsRef<str>,
        value: impl Into<Bytes>,
        ttl: Duration,
    ) -> Result<(), Error> {
        let now = self.clock(now);
        // A TTL past what the clock can count (`Duration::MAX` meant as "never") never expires.
        self.write(now, key.as_ref(), value.into(), now.checked_add(ttl))
    }

    /// Deletes `key` from our own state (a tombstone that peers learn, purged after
    /// `tombstone_grace`). Deleting a missing key changes nothing.
    pub fn delete(&mut self, now: Instant, key: impl AsRef<str>) -> Result<(), Error> {
        let now = self.clock(now);
        let key = key.as_ref();
        self.config.limits.check_write(key, 0)?;
        if self.takes_no_writes() {
            return Err(Error::Left);
        }
        let me = self.me;
        let now_at = self.stamp(now);
        if let Some((p, h)) = self.nodes.get_both_mut(&me)
            && p.state.delete_local(key, now).is_some()
        {
            h.changed_at = now_at;
            h.sync(&p.state);
            if self.key_events.wants(key) {
                self.events.push_back(Event::KeyDeleted {
                    node: self.id.clone(),
                    key: key.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Marks this node ready or not ready; peers see it in [`Member::ready`]. Never refused
    /// for the state limits (readiness has room of its own).
    ///
    /// # Errors
    ///
    /// [`Error::Left`] after a leave, or once replaced.
    pub fn set_ready(&mut self, now: Instant, ready: bool) -> Result<(), Error> {
        let value: &'static [u8] = if ready { b"1" } else { b"0" };
        self.write_reserved(now, state::KEY_READY, Bytes::from_static(value), None)
    }

    /// Sets this node's weight on the ownership ring (relative to 1.0: a node of weight 2
    /// owns about twice the keys of one of weight 1), gossiped in its `tidings:weight` key. The
    /// rings take it at their next rebuild, `ring_settle` after the write spreads.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidWeight`] unless `0.01 <= weight <= 100` (the ring keeps weights in
    /// hundredths); [`Error::Left`] after a leave.
    pub fn set_weight(&mut self, now: Instant, weight: f64) -> Result<(), Error> {
        let max = f64::from(ring::MAX_WEIGHT) / f64::from(ring::DEFAULT_WEIGHT);
        let min = 1.0 / f64::from(ring::DEFAULT_WEIGHT);
        if !(min..=max).contains(&weight) {
            return Err(Error::InvalidWeight { weight });
        }
        self.write_reserved(
            now,
            state::KEY_WEIGHT,
            Bytes::from(weight.to_string()),
            None,
        )
    }

    /// Replaces the keyring and the plaintext settings (key rotation without restart: add the
    /// new key everywhere, make it primary everywhere, then remove the old one). Refuses, and
    /// changes nothing, what `Config::validate` refuses: `send_plaintext` with a keyring
    /// needs `accept_plaintext`.
    pub fn set_keyring(
        &mut self,
        keyring: Option<crate::crypto::Keyring>,
        send_plaintext: bool,
        accept_plaintext: bool,
    ) -> Result<(), crate::config::ConfigError> {
        crate::config::check_plaintext(keyring.is_some(), send_plaintext, accept_plaintext)?;
        // The nonce sequence goes on under the new keys: one started again would repeat
        // nonces under any key the two keyrings share.
        self.codec
            .set_keyring(keyring.as_ref(), send_plaintext, accept_plaintext);
        self.config.keyring = keyring;
        self.config.send_plaintext = send_plaintext;
        self.config.accept_plaintext = accept_plaintext;
        Ok(())
    }

    /// Sets the salt of this node's sealed packets' nonces (with a keyring), starting their
    /// counter again under it. By default it is drawn from `rng_seed`, so a process restarted
    /// under the same name, generation and seed would seal with nonces it used before, which
    /// XChaCha20-Poly1305 must never see twice under one key (and receivers would drop its
    /// packets as replays). A driver over real sockets should call this once, before the
    /// first packet, with randomness from the operating system; the runtime does. The
    /// simulator keeps the seeded salt, so runs stay reproducible.
    pub fn set_nonce_salt(&mut self, salt: u64) {
        self.codec.set_nonce_salt(salt);
    }

    /// Starts a graceful leave: our state says "left", and we keep gossiping until
    /// `leave_confirmations` peers hold it or `leave_timeout` passes; then
    /// [`Event::LeaveCompleted`] comes and the node goes quiet. Peers drop us from their live set
    /// as soon as they learn it.
    pub fn leave(&mut self, now: Instant) {
        let now = self.clock(now);
        // Superseded: the name is another process's now, and ours sends nothing more.
        if self.takes_no_writes() {
            return;
        }
        let me = self.me;
        let now_at = self.stamp(now);
        let Some((p, h)) = self.nodes.get_both_mut(&me) else {
            return;
        };
        let version = p
            .state
            .set_local(state::KEY_LEFT, Bytes::from_static(b"1"), None)
            .unwrap_or_else(|| p.state.max_version().0);
        h.changed_at = now_at;
        h.liveness = Liveness::Left { since: now_at };
        h.sync(&p.state);
        self.num_live = self.num_live.saturating_sub(1);
        // The peers that can confirm: those heard beating. A live peer never heard may be a
        // crashed member our seed introduced as alive (its verdict lags ours), which would
        // hold the leave to its whole `leave_timeout` (found by an API review: a node that
        // joined just after a crash and left waited 3 s for it). Before any peer is heard (a
        // leave right after the join), every live peer counts, so the leave still waits for
        // its seed.
        let peers = if self.num_heard > 0 {
            self.num_heard
        } else {
            self.num_live
        };
        let needed = self.config.leave_confirmations.min(peers);
        for s in &mut self.syns_out {
            s.before_leave = true;
        }
        self.leaving = Some(Leaving {
            version,
            needed,
            deadline: now + self.config.leave_timeout,
            confirmed: BTreeSet::new(),
            synced_to: BTreeSet::new(),
            done: false,
        });
        self.events.push_back(Event::Left(self.id.clone()));
        // Our keys go to their next owners now, not after the settle: peers drop us from their
        // rings as soon as they hear we left, and the leave usually completes (the node goes
        // quiet) before a settle would have passed, so a pending rebuild would never run and
        // we would go on owning keys, with no event to flush them. Dropped from the ring as
        // built, as the peers drop us (`drop_leavers`): a rebuild from the live members took
        // in changes still settling, and handed ranges to owners the peers' rings did not
        // have (found by review).
        self.drop_leavers(now);
        self.next_gossip = now;
        self.check_leave_done(now);
    }

    // ----- handlers -----

    /// Handles one received datagram from `from`. Malformed or foreign input is dropped and
    /// counted; it never panics.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let now = self.clock(now);
        self.stats.rx_datagrams += 1;
        self.stats.rx_datagram_bytes += bytes.len() as u64;
        if bytes.len() > wire::MAX_DATAGRAM_RECV {
            self.stats.rx_oversized += 1;
            debug!(%from, len = bytes.len(), "dropped oversized datagram");
            return;
        }
        self.note_pause(now);
        self.receive(now, from, Channel::Datagram, bytes);
    }

    /// Handles one received stream frame's payload (without the length prefix) from `from`.
    ///
    /// Returns whether the frame was a message of this cluster: within the size limit,
    /// decodable, authenticated when keys are set, and not a replay. A driver should close a
    /// connection that sends anything else (the runtime does): it is broken or hostile, and
    /// frames that keep arriving must not keep its slot busy.
    pub fn handle_stream_frame(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> bool {
        let now = self.clock(now);
        self.stats.rx_frames += 1;
        self.stats.rx_frame_bytes += bytes.len() as u64;
        if bytes.len() > self.config.max_frame_size {
            self.stats.rx_oversized += 1;
            debug!(%from, len = bytes.len(), "dropped oversized frame");
            return false;
        }
        self.note_pause(now);
        self.receive(now, from, Channel::Stream, bytes)
    }

    /// Notices that this node was frozen (GC pause, suspended VM, overloaded host) if its
    /// round is more than `PAUSE_INTERVALS` late, once per pause. Called by every handler
    /// before it reads anything: a driver hands over the packets queued during the pause
    /// before the timer, and those must already be read as a paused node's. Not once the
    /// node is quiet (left or superseded): it runs no more rounds, so every packet after
    /// `PAUSE_INTERVALS` would count a pause, and it reads nothing anyway.
    fn note_pause(&mut self, now: Instant) {
        let late = now.saturating_duration_since(self.next_gossip);
        if self.is_quiet()
            || late <= self.config.gossip_interval * PAUSE_INTERVALS
            || self.pause_noted == Some(self.next_gossip)
        {
            return;
        }
        self.pause_noted = Some(self.next_gossip);
        // The silence we measured is ours, not our peers'. Forgive it rather than convict
        // everyone: as much of every peer's evidence age as we were away (at most an interval
        // more than this lateness), so that a peer already silent before the pause keeps that
        // silence counted.
        self.stats.pauses_detected += 1;
        debug!(
            late_ms = late.as_millis() as u64,
            "paused; forgiving that much silence"
        );
        let silence = late + self.config.gossip_interval;
        for (_, p, h) in self.nodes.values_mut() {
            p.detector.forgive(silence, now, &self.params);
            h.deadline = Stamp(p.detector.deadline_offset(&self.params));
        }
        // Nor learn from the ages seen while catching up: heartbeats queued during the pause
        // arrive in a burst, and whatever froze us (an overloaded host) may have slowed the
        // peers that relay them too. Such ages stay in the window for its whole length and
        // widen every limit; a few rounds later the flow is steady. Nor pass on what is
        // learned meanwhile as fresh beats (see `learn_heartbeat_at`).
        self.learn_ages_after = now + self.spread_time();
    }

    /// Tells the node that the stream connection with `peer` closed, or could not be opened,
    /// before an exchange it started there was answered. The node stops waiting on that
    /// exchange, so state that does not fit datagrams is fetched from another peer at the next
    /// chance instead of after a timeout (3 s). Closes after the answer change nothing.
    pub fn handle_stream_closed(&mut self, now: Instant, peer: SocketAddr) {
        self.stream_closed_after(now, peer, now);
    }

    /// As `handle_stream_closed`, for a connection whose last frame was queued at
    /// `last_sent`: exchanges started later went on another connection and stay awaited. For
    /// a runtime that finds a connection closed only when queueing the next frame, which the
    /// node may have made for a new exchange with the same peer.
    pub(crate) fn stream_closed_after(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        last_sent: Instant,
    ) {
        let _ = self.clock(now);
        if let Some(s) = self.stream_syncs.get_mut(&peer)
            && !s.answered
            && s.at <= last_sent
        {
            s.failed = true;
        }
        if let Some(d) = self.last_data_sync.as_mut()
            && d.to == peer
            && !d.answered
            && d.at <= last_sent
        {
            d.answered = true;
            self.stats.stream_syncs_lost += 1;
            debug!(%peer, "stream exchange lost with its connection");
        }
        if self
            .stream_requests
            .is_some_and(|(to, at)| to == peer && at <= last_sent)
        {
            self.stream_requests = None;
            self.stats.stream_syncs_lost += 1;
            debug!(%peer, "stream requests lost with their connection");
        }
    }

    /// Runs whatever is due at `now`: gossip round, failure detection, garbage collection,
    /// anti-entropy, join retries, leave deadline. Calling it early or twice is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock(now);
        debug_assert!(
            self.nodes.beats_match(|p| p.state.heartbeat().0),
            "the table's heartbeats drifted from the states'"
        );
        debug_assert!(
            self.nodes.values().all(|(p, h)| {
                (h.max_version, h.gc_version) == (p.state.max_version().0, p.state.gc_version().0)
            }),
            "a peer's small part drifted from its state's versions"
        );
        if self.is_quiet() {
            return;
        }
        self.forget_own_addrs(now);
        if self.join.next_attempt.is_some_and(|t| t <= now) {
            self.join.next_attempt = None;
            let all = std::mem::take(&mut self.join.retry) || self.num_live <= 1;
            self.join_attempt(now, all);
        }
        if now >= self.next_gossip {
            let late = now.saturating_duration_since(self.next_gossip);
            // Local health (after Lifeguard, Dadgar et al. 2018): rounds that run late mean this
            // node is overloaded, so the heartbeats it hears arrive late too. Each late round
            // widens the age limits; each punctual one narrows them back.
            if late > self.config.gossip_interval {
                self.health = (self.health + 1).min(MAX_HEALTH_PENALTY);
            } else if late <= self.config.gossip_interval / 4 {
                self.health = self.health.saturating_sub(1);
            }
            self.stats.local_health = u64::from(self.health);
            self.note_pause(now);
            self.gossip_round(now);
            self.next_gossip = if late > self.config.gossip_interval {
                now + self.config.gossip_interval
            } else {
                self.next_gossip + self.config.gossip_interval
            };
        } else if self.next_liveness_check.is_some_and(|t| t <= now) {
            self.check_liveness(now);
        }
        if self.next_anti_entropy.is_some_and(|t| t <= now) {
            self.next_anti_entropy = now.checked_add(anti_entropy_wait(
                self.config.anti_entropy_interval,
                &mut self.rng,
            ));
            let live: Vec<SocketAddr> = self.live_peer_addrs();
            if !live.is_empty() {
                let to = live[self.rng.random_range(0..live.len())];
                self.send_stream_syn(now, to);
            }
        }
        if self.ring_prompt.is_some_and(|t| t <= now) {
            self.drop_leavers(now);
        }
        if self.ring_due().is_some_and(|t| t <= now) {
            self.rebuild_ring(now);
        }
        self.check_leave_done(now);
    }

    // ----- internals: ownership -----

    /// Notes that the ring's inputs changed; it is rebuilt once they settle.
    fn ring_changed(&mut self, now: Instant) {
        if self.config.ring.is_none() {
            return;
        }
        self.ring_dirty = Some(match self.ring_dirty {
            Some((first, _)) => (first, now),
            None => {
                // Up to half a settle more, drawn per change: every node sees a membership
                // change within a round or two, and a rebuild takes a few milliseconds of CPU.
                // Where many nodes share a host (a test process, an overcommitted machine) the
                // rebuilds ran back to back, stalled everyone's rounds past the pause
                // threshold and so delayed their convictions (kill-to-down among 200 nodes in
                // one process: 4.3-5 s, against 0.8 s without the ring).
                let half =
                    u64::try_from(self.config.ring_settle.as_nanos() / 2).unwrap_or(u64::MAX);
                self.ring_jitter = Duration::from_nanos(self.rng.random_range(0..=half));
                (now, now)
            }
        });
    }

    /// Notes a peer's graceful leave. Besides the settled rebuild, a member of this node's
    /// ring that left is dropped from it within a round (`drop_leavers`): a leave is no flap
    /// (that incarnation never comes back), and the leaver gave up its keys the moment it
    /// started leaving, so waiting the settle left them without an owner for 1-1.5 s at the
    /// defaults (found by a user's-eye review). Only a ring already built, and only the
    /// leaver: a node that has not built its first ring yet (a joiner that hears of a recent
    /// leave in its join exchange) keeps to the settle, as do the other changes pending
    /// (a review of the first version found it built joiners' first rings early, giving keys
    /// two owners for a second, and took a crash just marked down out of the ring unsettled).
    fn ring_changed_by_leave(&mut self, now: Instant, name: &str) {
        self.ring_changed(now);
        if self.config.ring.is_none() || !self.had_ring || !self.ring.contains(name) {
            return;
        }
        // Up to a round, or half a settle if that is shorter, drawn per leave: the nodes
        // hearing of it in the same round do not all rebuild at once (see `ring_changed`).
        let spread = self.config.gossip_interval.min(self.config.ring_settle / 2);
        let spread = u64::try_from(spread.as_nanos()).unwrap_or(u64::MAX);
        let due = now + Duration::from_nanos(self.rng.random_range(0..=spread));
        self.ring_prompt = Some(self.ring_prompt.map_or(due, |p| p.min(due)));
    }

    /// The ring without its members that left gracefully, and nothing else changed: every
    /// node with the same ring drops the same members, so rings still agree; whatever else
    /// is pending waits for its settle (`rebuild_ring`, which then finds the leaver gone).
    fn drop_leavers(&mut self, now: Instant) {
        self.ring_prompt = None;
        let has_left = |name: &str| {
            self.names
                .get(name)
                .and_then(|t| self.nodes.get_both(t))
                .is_some_and(|(_, h)| matches!(h.liveness, Liveness::Left { .. }))
        };
        let stay: Vec<ring::Member> = self
            .ring
            .members()
            .filter(|(name, _)| !has_left(name))
            .map(|(name, weight)| ring::Member::new(name).with_weight(weight))
            .collect();
        if stay.len() == self.ring.num_members() {
            return;
        }
        let before = Arc::clone(&self.ring);
        if let Some(new) = self.build_ring(self.at_least_min(stay)) {
            self.take_ring(now, &before, new, &BTreeSet::new());
        }
    }

    /// `members`, or none if they are fewer than `ring_min_members`: a ring below the minimum
    /// is empty, on every node alike.
    fn at_least_min(&self, mut members: Vec<ring::Member>) -> Vec<ring::Member> {
        if members.len() < self.config.ring_min_members {
            members.clear();
        }
        members
    }

    /// Rebuilds the ring from `members` (reusing the vnodes of those that stay), tells the
    /// service what this node gained and lost against `before`, and gossips the fingerprints
    /// of the ring it held and the one it holds now (`state::KEY_RING`: a node whose ring was
    /// empty reads them, `ring_held_before`).
    fn take_ring(&mut self, now: Instant, before: &Ring, new: Ring, unheld: &BTreeSet<String>) {
        let mut handoff = Ring::handoff(before, &new, &self.id.name);
        if !unheld.is_empty() {
            handoff.acquired_from_nobody_of(unheld);
        }
        let key = state::RingKey {
            prev: self.ring.fingerprint().0,
            cur: new.fingerprint().0,
            taken_at: self.own().state.heartbeat().0,
        };
        self.ring_keys_when_emptied = if new.is_empty() {
            self.nodes
                .values()
                .filter(|(p, _)| p.state.id().tag() != self.me)
                .filter_map(|(p, _)| {
                    let v = p.state.version_of(state::KEY_RING)?;
                    Some((p.state.id().tag(), v.0))
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        self.ring = Arc::new(new);
        // A leaver takes no more writes, and its ring no longer matters to anyone.
        if !self.takes_no_writes() {
            let _ = self.write_reserved(now, state::KEY_RING, key.encode(), None);
        }
        debug!(fingerprint = %self.ring.fingerprint(), members = self.ring.num_members(), "ring rebuilt");
        if !handoff.is_empty() {
            self.events.push_back(Event::Ownership(OwnershipChange {
                fingerprint: self.ring.fingerprint(),
                members: self.ring.num_members(),
                handoff,
            }));
        }
    }

    /// The ring of `members`, built reusing the vnodes of the current ring's members that
    /// stay; `None` (logged) if it cannot be built, and the current ring is kept.
    fn build_ring(&self, members: Vec<ring::Member>) -> Option<Ring> {
        self.ring
            .rebuild(members)
            .inspect_err(|e| warn!(error = %e, "ring rebuild failed; keeping the previous ring"))
            .ok()
    }

    fn ring_due(&self) -> Option<Instant> {
        let (first, last) = self.ring_dirty?;
        let settle = self.config.ring_settle;
        let due = (last + settle).min(first + settle * RING_MAX_SETTLES) + self.ring_jitter;
        Some(self.first_ring_wait().map_or(due, |until| due.max(until)))
    }

    /// Until when this node's first ring waits, if it does: it has built none, knows no live
    /// peer, and is joining (an exchange with a seed in flight, seeds about to be tried, or
    /// seeds still being looked up: `expect_seeds`). Built then, the ring would hold this node
    /// alone, and the service would hear it acquired every key from nobody, then, once the
    /// seed answered, that it relinquished nearly all of them (a service that loads what it
    /// acquires would load everything once). Found on review of the first ring's timing: a
    /// seed slower to answer than `ring_settle` did it. The wait ends as soon as the join
    /// concludes (a peer is known, or every exchange failed), and at the latest
    /// `RING_MAX_SETTLES` settles after start, so a seed that never answers costs a
    /// bounded delay.
    ///
    /// Live peers known but none heard beating yet (`Peer::heard_beating`) hold it back too: a
    /// ring built then would hold this node alone, as above. A seed answering three to four
    /// settles after start made the first ring due at once, before the next beat (found by
    /// review: `a_first_ring_waits_to_hear_a_seed_that_answered_late`). A live peer is heard
    /// within a round or two and a dead one is convicted; the wait ends at the latest
    /// `RING_MAX_SETTLES` settles after the last change. Those peers are counted as they
    /// change (`num_heard`), not scanned for: this is read at every `poll_timeout`.
    fn first_ring_wait(&self) -> Option<Instant> {
        self.first_ring_wait_given(self.num_heard > 0)
    }

    /// `first_ring_wait`, given whether a live peer has been heard beating (the tests give it
    /// a scan's answer, to check the count against).
    fn first_ring_wait_given(&self, heard: bool) -> Option<Instant> {
        if self.had_ring {
            return None;
        }
        if self.num_live > 1 {
            if heard {
                return None;
            }
            let (_, last) = self.ring_dirty?;
            return self
                .config
                .ring_settle
                .checked_mul(RING_MAX_SETTLES)
                .and_then(|d| last.checked_add(d));
        }
        let by = self.first_ring_by?;
        let joining = self.seeds_expected
            || !self.join.pending.is_empty()
            || self.stream_syncs.values().any(|s| !s.answered && !s.failed);
        joining.then_some(by)
    }

    /// Rebuilds the ring from the live (and, if configured, ready) members this node has heard
    /// beat since it learned of them (`Peer::heard_beating`), and tells the service what it
    /// gained and lost.
    fn rebuild_ring(&mut self, now: Instant) {
        self.ring_dirty = None;
        self.ring_prompt = None;
        let Some(config) = self.config.ring.clone() else {
            return;
        };
        let me = self.me;
        let mut members: Vec<ring::Member> = self
            .nodes
            .values()
            .filter(|(_, h)| h.liveness == Liveness::Alive)
            .filter(|(p, _)| p.heard_beating() || p.state.id().tag() == me)
            .filter(|(p, _)| !self.config.ring_ready_only || p.state.is_ready())
            .map(|(p, _)| ring::Member::new(p.state.id().name.clone()).with_weight(p.ring_weight()))
            .collect();
        // Weights are each member's own say: together they may call for more vnodes than one
        // ring holds. Every node with these members finds that alike, so each falls back
        // alike, to equal weights (which config validation guarantees fit), instead of each
        // keeping the ring its own history left it with.
        let total: u64 = members.iter().map(|m| config.vnodes_for(m.weight)).sum();
        if total > ring::MAX_VNODES as u64 {
            warn!(
                vnodes = total,
                "ring weights call for more virtual nodes than a ring holds; ignoring weights"
            );
            for m in &mut members {
                m.weight = ring::DEFAULT_WEIGHT;
            }
        }
        let members = self.at_least_min(members);
        let mut want: Vec<(&str, u32)> = members
            .iter()
            .map(|m| (m.name.as_str(), m.weight))
            .collect();
        let mut have: Vec<(&str, u32)> = self.ring.members().collect();
        want.sort_unstable();
        have.sort_unstable();
        if want == have {
            return;
        }
        // A ring built over an empty one (this node's first: it starts empty; or one emptied
        // below `ring_min_members` or with no member ready): what it acquires came from
        // whoever owned it in the ring its peers held before this node came in, so the event
        // names them (mirroring their `relinquished`), not "nobody". Every node gossips the
        // fingerprints of its rings, so that ring is read exactly when they agree on it
        // (`ring_held_before`). Otherwise, for a first ring, it is guessed from the peers'
        // ages: only peers old enough to have built a ring before this node came count. When
        // nodes start or join together, the others' first rings hold this node already, and
        // they owned none of it (found by review: every node of a cold start was told it
        // acquired a quarter of the keys from each other one). A peer's first ring comes at
        // most `4 * ring_settle` plus the jitter after its membership first changed;
        // heartbeats count intervals since start. With `ring_ready_only`, a peer this node
        // saw turn ready that recently was in no ring either (found by review: nodes turning
        // ready together, one of them younger, were told they acquired from the older ones,
        // which relinquished nothing).
        let from_empty = self.ring.is_empty() && members.len() > 1;
        let Some(new) = self.build_ring(members) else {
            return;
        };
        let mut unheld = BTreeSet::new();
        let before = if from_empty {
            let interval = self.config.gossip_interval.as_nanos().max(1);
            let wait = self.config.ring_settle * 9 / 2 + self.config.gossip_interval * 2;
            let margin = u64::try_from(wait.as_nanos().div_ceil(interval)).unwrap_or(u64::MAX);
            let older = self.own().state.heartbeat().0.saturating_add(margin);
            // Whether a peer was ready long enough to have been in a ring before this one.
            let ready_before = |t: &Tag| {
                self.turned_ready
                    .get(t)
                    .is_none_or(|at| now.saturating_duration_since(*at) >= wait)
            };
            // Whether a peer may have held a ring, and been in it, before this node came in.
            let earlier = |t: &Tag| {
                self.nodes
                    .get(t)
                    .is_some_and(|p| p.state.heartbeat().0 > older)
                    && ready_before(t)
            };
            let restarted = !self.had_ring && self.held_since_before_start(&new);
            let held = if restarted {
                None
            } else {
                self.ring_held_before(&config, &new, &earlier, &ready_before)
            };
            match held {
                Some((r, names)) => {
                    unheld = names;
                    r
                }
                // A quick restart's share was its old process's: nobody hands it over.
                None if self.had_ring || restarted => Arc::clone(&self.ring),
                None => {
                    let guess: Vec<ring::Member> = new
                        .members()
                        .filter(|(name, _)| self.names.get(*name).is_some_and(&earlier))
                        .map(|(name, weight)| ring::Member::new(name).with_weight(weight))
                        .collect();
                    match Ring::new(config.clone(), self.at_least_min(guess)) {
                        Ok(r) => Arc::new(r),
                        Err(_) => Arc::clone(&self.ring),
                    }
                }
            }
        } else {
            Arc::clone(&self.ring)
        };
        debug_assert_eq!(&config, self.ring.config());
        self.take_ring(now, &before, new, &unheld);
        self.had_ring = true;
        self.turned_ready = BTreeMap::new();
    }

    /// Whether every other member of `new`, this node's first ring, has held `new` since
    /// before this node started: this node is a new process under a name their rings held
    /// all along (a restart quicker than their rings dropped the old process), so none of them
    /// hands it anything, and what it owns its old process held, which nobody hands over.
    /// Read from the heartbeat each member gossips it took its ring at: that many of its beats
    /// ago is longer ago than this node has been beating, by more than `RESTART_MARGIN_BEATS`
    /// (the two counts' phases). A member's heartbeat as this node knows it lags behind, which
    /// only makes its ring look younger: a restart within a spread time of the members' last
    /// ring change is taken for a join (`ring_held_before`).
    ///
    /// And each member took its ring before the heartbeat this node first heard it at
    /// (`Peer::base_heartbeat`), both in that member's own beats. The ages alone compare two
    /// nodes' beats, which stand for different times when their gossip intervals differ: a
    /// joiner at five times its peers' interval and with a longer `ring_settle` built its
    /// first ring seconds after they took it in, many of their beats ago, and was told it
    /// acquired from nobody what they relinquished to it (found by review;
    /// `sim_scenarios::a_slower_joiner_whose_first_ring_comes_late_acquires_from_the_owners`).
    /// The seed that answers a join takes the joiner into its ring after the heartbeat it
    /// answered with, so a join fails this for that member at least. The bound is later
    /// for a member this node convicted and heard again before its first ring
    /// (`base_heartbeat` then holds the heartbeat it was marked down at), and for one first
    /// heard of after it took this node in: for those, the ages decide alone.
    ///
    /// Not if gossip brought the previous process of this name (still gossiped as this node
    /// joined) but never with a ring key (`predecessor_ring`): one that crashed after the
    /// peers took it in but before its own first ring held nothing, though the peers
    /// relinquished its share to it, and the new process takes that share from them (found
    /// by review: a joiner crashing within its first second or so and restarting before its
    /// conviction was told it acquired from nobody what the peers relinquished to its name;
    /// `sim_scenarios::a_joiner_restarting_before_its_first_ring_acquires_from_those_that_relinquished_to_it`).
    /// A process that crashed a round or two after its first ring, before its key spread,
    /// is taken for a join as well, which names members that relinquished nothing: of the
    /// two mistakes, the one that loses no share. A previous process not heard at all
    /// leaves it to the ages.
    fn held_since_before_start(&self, new: &Ring) -> bool {
        if self.predecessor_ring == Some(false) {
            return false;
        }
        let new_fp = new.fingerprint().0;
        // With a rebase's lead (a restart that reused its generation moves its heartbeat past
        // its previous run's), so such a restart is taken for a join. Without it (tried), a
        // joiner that crashed before its first ring and restarted so was told it acquired from
        // nobody what its peers relinquished to it: its previous run, under the same tag,
        // never reaches `note_predecessor_ring` (found by review).
        let mine = self.own().state.heartbeat().0;
        let mut others = new
            .members()
            .filter(|(name, _)| *name != self.id.name)
            .peekable();
        others.peek().is_some()
            && others.all(|(name, _)| {
                let Some(peer) = self.names.get(name).and_then(|t| self.nodes.get(t)) else {
                    return false;
                };
                // The age compares two nodes' beats (their intervals may differ); the base
                // compares the peer's beats with its own.
                peer.state.ring_key().is_some_and(|k| {
                    let age = peer.state.heartbeat().0.saturating_sub(k.taken_at);
                    k.cur == new_fp
                        && age > mine.saturating_add(RESTART_MARGIN_BEATS)
                        && k.taken_at < peer.base_heartbeat
                })
            })
    }

    /// The ring this node's peers held before they took it in, for a ring `new` built over
    /// an empty one, read from the fingerprints they gossip (`state::KEY_RING`), with the
    /// members of it that held no ring of their own (what they owned in it, nobody handed
    /// over): `None` when the peers do not say it exactly, and the caller guesses from
    /// `earlier` (whether a peer may have held a ring, and been in it, before this node came).
    ///
    /// Each member of `new` but this node that gossips its fingerprints held, before this
    /// node came in, its current ring, or, if that is `new` already, the one before it. The
    /// members that held a non-empty ring form the candidate (less those `ready_before` says
    /// turned ready too lately to be in one: they hold a ring without themselves); it is the
    /// answer if every one of them held it, now or just before. A member that gossips no
    /// fingerprints but may have held a ring (a version without the key, or its key not heard
    /// yet) leaves it to the guess. Exact where the guess is not: a node started a few
    /// seconds after the others (less than the guess's margin), or whose join waited for a
    /// slow seed, and a side of a healed split that was below `ring_min_members`.
    fn ring_held_before(
        &self,
        config: &ring::RingConfig,
        new: &Ring,
        earlier: &dyn Fn(&Tag) -> bool,
        ready_before: &dyn Fn(&Tag) -> bool,
    ) -> Option<(Arc<Ring>, BTreeSet<String>)> {
        let (new_fp, empty_fp) = (new.fingerprint().0, self.ring.fingerprint().0);
        // The members that held a ring before this node came in, those that held none (or do
        // not say: young enough to have held none), and each holder's (previous, current,
        // before this node) fingerprints.
        let mut held = Vec::new();
        let mut unheld = Vec::new();
        let mut claims = Vec::new();
        for (name, weight) in new.members().filter(|(name, _)| *name != self.id.name) {
            let tag = self.names.get(name)?;
            let peer = self.nodes.get(tag)?;
            let member = || ring::Member::new(name).with_weight(weight);
            let Some(state::RingKey { prev, cur, .. }) = peer.state.ring_key() else {
                if earlier(tag) {
                    return None;
                }
                if ready_before(tag) {
                    unheld.push(member());
                }
                continue;
            };
            // Its ring unchanged since this node's emptied (a node that stopped hearing its
            // peers while they kept hearing it: found by review, a one-way cut under
            // `ring_min_members`): it held `new` with this node in it all along and hands it
            // nothing, so no ring its peers held names what this node acquires.
            if cur == new_fp
                && peer
                    .state
                    .version_of(state::KEY_RING)
                    .is_some_and(|v| self.ring_keys_when_emptied.get(tag) == Some(&v.0))
            {
                return None;
            }
            let before = if cur == new_fp { prev } else { cur };
            if before == empty_fp {
                if ready_before(tag) {
                    unheld.push(member());
                }
                continue;
            }
            claims.push((prev, cur, before));
            if ready_before(tag) {
                held.push(member());
            }
        }
        // The ring of `members` if every holder held it just before this node came in
        // (`strict`), or, failing that, at its previous or current ring.
        let held_by_all = |members: &[ring::Member], strict: bool| {
            let members = self.at_least_min(members.to_vec());
            let fp = Ring::fingerprint_of(config, &members)?.0;
            claims
                .iter()
                .all(|&(prev, cur, before)| before == fp || (!strict && (prev == fp || cur == fp)))
                .then(|| Ring::new(config.clone(), members).ok().map(Arc::new))
                .flatten()
        };
        let with = |extra: &[ring::Member]| {
            let mut all = held.clone();
            all.extend_from_slice(extra);
            all
        };
        // A member that crashed as this node joined may still be in its peers' rings (their
        // settle has not passed), and is in none of this node's, which never heard it beat:
        // the peers held outside `new` that were in a ring of their own.
        let me = self.me;
        let outside: Vec<ring::Member> = self
            .nodes
            .values()
            .filter(|(p, h)| {
                let id = p.state.id();
                id.tag() != me
                    && !new.contains(&id.name)
                    && !matches!(h.liveness, Liveness::Left { .. })
                    && (!self.config.ring_ready_only || p.state.is_ready())
                    && p.state.ring_key().is_some_and(|k| k.cur != empty_fp)
            })
            .map(|(p, _)| ring::Member::new(p.state.id().name.clone()).with_weight(p.ring_weight()))
            .collect();
        // In order: the holders alone (this node the only newcomer, or newcomers together);
        // with the members that held no ring of their own but were in the holders' (a node
        // started a second before this one, or a quick restart under its name, still building
        // its first ring), which handed nothing over, so what they owned in it is acquired from
        // nobody (the names returned); with the members outside `new` (a crash settling); then
        // the holders at either of their rings (one whose current ring already holds this node
        // but differs from `new`); and last, with the members outside `new` at either ring (a
        // crash settling where the holders took this node in before convicting the crashed
        // member: their current ring holds both). Each match is a ring every holder held.
        let none = BTreeSet::new;
        held_by_all(&held, true)
            .map(|r| (r, none()))
            .or_else(|| {
                let r = (!unheld.is_empty()).then(|| held_by_all(&with(&unheld), true))??;
                Some((r, unheld.iter().map(|m| m.name.clone()).collect()))
            })
            .or_else(|| {
                let r = (!outside.is_empty()).then(|| held_by_all(&with(&outside), true))??;
                Some((r, none()))
            })
            .or_else(|| held_by_all(&held, false).map(|r| (r, none())))
            .or_else(|| {
                let r = (!outside.is_empty()).then(|| held_by_all(&with(&outside), false))??;
                Some((r, none()))
            })
    }

    // ----- internals: time and helpers -----

    /// About how long news takes to reach every node (epidemic spread takes `log2 n` rounds),
    /// with two rounds of margin.
    /// `t` as this node's peers' small parts keep times.
    fn stamp(&self, t: Instant) -> Stamp {
        Stamp::of(t, self.params.epoch())
    }

    fn spread_time(&self) -> Duration {
        self.config.gossip_interval * (ceil_log2(self.nodes.len()) + 2)
    }

    fn clock(&mut self, now: Instant) -> Instant {
        // No assertion: a driver that reads the clock on one thread and hands the time to the
        // node on another can pass a `now` a little older than the last one, which is input,
        // not a bug to panic on (in debug builds) (found by review).
        self.last_now = self.last_now.max(now);
        self.last_now
    }

    fn own(&self) -> &Peer {
        // Invariant: our own entry is inserted in `new` and never removed (`expire` and
        // `admit` never touch our tag).
        self.nodes
            .get(&self.me)
            .expect("own entry is always present")
    }

    fn own_hot(&self) -> &Hot {
        // Same invariant as `own`.
        self.nodes
            .hot(&self.me)
            .expect("own entry is always present")
    }

    /// Remembers the membership fingerprint a known peer sent. Unknown senders are not
    /// remembered: their membership cannot equal ours, which includes every node that knows
    /// itself (and a map of every tag ever heard from would grow without bound).
    fn note_fingerprint(&mut self, now: Instant, tag: Tag, fp: u64) {
        let ours = self.nodes.fingerprint();
        let t = &mut self.fp_track;
        if fp == ours && fp == t.cur {
            t.confirmed = true;
        }
        // Still on the membership before our change, after it should have spread (or
        // answering a digest by position we sent on that guess): the peer is behind or differs
        // for good, so no more guessing for it (0: unknown) until it sends another.
        let fp = if fp != 0 && fp == t.prev && ours == t.cur && now >= t.since + self.spread_time()
        {
            0
        } else {
            fp
        };
        if let Some(p) = self.nodes.get_mut(&tag) {
            p.fp = fp;
        }
    }

    /// Whether a digest to `peer` may name nodes by position: it last sent our fingerprint,
    /// or the one we had before our membership last changed, that change has had time to spread
    /// (`spread_time`), and some peer has sent us the new one since (so the change is not ours
    /// alone). Every pair would otherwise exchange by tag until one of them happened to write
    /// to the other, about N / (2 × Syns a round) rounds after a change: after one restart
    /// at 200 nodes most Syns went by tag for 10 s, 4 times the bytes (found by review). A
    /// wrong guess costs one exchange, whose digest the peer cannot read; the fingerprint
    /// its answer carries then stops the guessing for it (`note_fingerprint`).
    fn peer_reads_positions(&self, now: Instant, peer: &Peer, fp: u64) -> bool {
        let t = &self.fp_track;
        peer.fp == fp
            || (peer.fp != 0
                && peer.fp == t.prev
                && fp == t.cur
                && t.confirmed
                && now >= t.since + self.spread_time())
    }

    fn peer_by_name(&self, name: &str) -> Option<&Peer> {
        self.names.get(name).and_then(|t| self.nodes.get(t))
    }

    /// Whether a node held (at any liveness, this one included) advertises `addr`.
    fn is_member_addr(&self, addr: SocketAddr) -> bool {
        self.nodes.values().any(|(p, _)| p.state.id().addr == addr)
    }

    fn live_peer_addrs(&self) -> Vec<SocketAddr> {
        self.nodes
            .values()
            .filter(|(p, h)| h.liveness == Liveness::Alive && p.state.id() != &self.id)
            .map(|(p, _)| p.state.id().addr)
            .collect()
    }

    fn write(
        &mut self,
        now: Instant,
        key: &str,
        value: Bytes,
        expires_at: Option<Instant>,
    ) -> Result<(), Error> {
        self.config.limits.check_write(key, value.len())?;
        self.write_own(now, key, value, expires_at, true)
    }

    /// Writes one of the reserved keys: never refused for the user's limits (they leave room
    /// for these, `state::RESERVED_ROOM_KEYS`), so readiness and weight can change even when
    /// the user's state is full.
    fn write_reserved(
        &mut self,
        now: Instant,
        key: &str,
        value: Bytes,
        expires_at: Option<Instant>,
    ) -> Result<(), Error> {
        debug_assert!(value.len() <= state::RESERVED_VALUE_MAX);
        self.write_own(now, key, value, expires_at, false)
    }

    /// Writes a key of our own state; `limited`: a user key, checked against the limits
    /// (which count user keys only).
    fn write_own(
        &mut self,
        now: Instant,
        key: &str,
        value: Bytes,
        expires_at: Option<Instant>,
        limited: bool,
    ) -> Result<(), Error> {
        let now = self.clock(now);
        if self.takes_no_writes() {
            return Err(Error::Left);
        }
        let limits = &self.config.limits;
        let me = self.me;
        let now_at = self.stamp(now);
        let Some((p, h)) = self.nodes.get_both_mut(&me) else {
            return Ok(());
        };
        if limited {
            let usage = p.state.usage();
            let old = p.state.get(key).map(Bytes::len);
            let is_new_key = p.state.version_of(key).is_none();
            if is_new_key && usage.keys >= limits.max_keys_per_node {
                return Err(Error::TooManyKeys {
                    max: limits.max_keys_per_node,
                });
            }
            let size = usage.bytes + value.len() + if is_new_key { key.len() } else { 0 }
                - old.unwrap_or(0);
            if size > limits.max_state_bytes_per_node {
                return Err(Error::StateTooLarge {
                    size,
                    max: limits.max_state_bytes_per_node,
                });
            }
        }
        let was_ready = p.state.is_ready();
        if p.state.set_local(key, value.clone(), expires_at).is_some() {
            h.changed_at = now_at;
            h.sync(&p.state);
            let node = self.id.clone();
            // Readiness by its meaning, as peers read it (`apply_deltas`): a node without the
            // key is ready, so marking it ready changes nothing (found by review: reported
            // here, though no peer reported it).
            let ready = p.state.is_ready();
            if (key == state::KEY_READY && ready != was_ready) || key == state::KEY_WEIGHT {
                self.ring_changed(now);
            }
            if key == state::KEY_READY {
                if ready != was_ready {
                    self.events.push_back(Event::ReadyChanged { node, ready });
                }
            } else if !key.starts_with(state::RESERVED_PREFIX) && self.key_events.wants(key) {
                self.events.push_back(Event::KeyUpserted {
                    node,
                    key: key.to_owned(),
                    value,
                });
            }
        }
        Ok(())
    }

    /// The limits a peer's user keys are held to; its reserved keys have a room of their own
    /// (`state::RESERVED_ROOM_KEYS`). `leave` writes the leave marker whatever the node holds
    /// (a node at its limit must still be able to leave gracefully); without the room, peers
    /// refused every delta carrying it and saw the node go down instead.
    fn apply_limits(&self) -> ApplyLimits {
        let l = &self.config.limits;
        ApplyLimits {
            max_key_len: l.max_key_len,
            max_value_len: l.max_value_len,
            max_keys: l.max_keys_per_node,
            max_bytes: l.max_state_bytes_per_node,
        }
    }

    /// Whether a message on `channel` from `from` naming `sender` comes from a source known
    /// as its sender's: over the stream (the connection's handshake proved the address), or
    /// from the gossip address `sender` advertises, a seed, or an address this node sent a
    /// Syn to lately. Anything else may carry a forged source address (design.md 8,
    /// "Amplification").
    fn known_source(&self, channel: Channel, sender: Tag, from: SocketAddr) -> bool {
        channel == Channel::Stream
            || self
                .nodes
                .get(&sender)
                .is_some_and(|p| p.state.id().addr == from)
            || self.address_known(from)
    }

    /// Whether `addr` is a seed or an address this node sent a Syn to lately.
    fn address_known(&self, addr: SocketAddr) -> bool {
        self.seeds.contains(&addr) || self.syns_out.iter().any(|s| s.to == addr)
    }

    /// The budget of an answer on `channel` to a message of `len` bytes from `from`: at most
    /// `AMPLIFICATION_FACTOR` times its size when its source is not `known`.
    fn answer_budget(
        &mut self,
        channel: Channel,
        (from, known): (SocketAddr, bool),
        len: usize,
    ) -> usize {
        let budget = self.budget(channel);
        if known {
            return budget;
        }
        let cap = len
            .saturating_mul(AMPLIFICATION_FACTOR)
            .saturating_sub(self.codec.overhead() + MESSAGE_FRAMING);
        if cap < budget {
            self.stats.replies_limited += 1;
            debug!(%from, len, cap, "answer cut: its source is not known as the sender's");
            cap
        } else {
            budget
        }
    }

    fn budget(&self, channel: Channel) -> usize {
        let total = match channel {
            Channel::Datagram => self.config.max_datagram_size,
            Channel::Stream => self.config.max_frame_size,
        };
        total - self.codec.overhead() - MESSAGE_FRAMING
    }

    fn send(&mut self, to: SocketAddr, channel: Channel, msg: &Message) {
        // Replies built after we learned, mid-message, that we were replaced.
        if self.superseded.is_some() {
            return;
        }
        let payload = self.codec.encode(msg, channel == Channel::Stream);
        let len = payload.len() as u64;
        debug_assert!(
            channel == Channel::Stream || payload.len() <= self.config.max_datagram_size,
            "datagram of {} bytes over budget",
            payload.len()
        );
        match channel {
            Channel::Datagram => {
                self.stats.tx_datagrams += 1;
                self.stats.tx_datagram_bytes += len;
                self.stats.max_datagram = self.stats.max_datagram.max(len);
            }
            Channel::Stream => {
                self.stats.tx_frames += 1;
                self.stats.tx_frame_bytes += len;
            }
        }
        trace!(%to, ?channel, len, "send");
        self.outbox.push_back(Transmit {
            to,
            channel,
            payload: Bytes::from(payload),
        });
    }

    // ----- gossip round -----

    fn gossip_round(&mut self, now: Instant) {
        self.ticks += 1;
        self.stats.gossip_rounds += 1;
        // Nothing holds a slot number between messages and rounds, so the table may move its
        // entries here: into tag order once membership has held still for a few rounds.
        self.nodes.relayout_if_settled(RELAYOUT_SETTLE_ROUNDS);
        self.rebase_own(now);
        let me = self.me;
        // One beat per interval of time, not per round run: a node whose rounds run late (an
        // overloaded host) still shows observers a heartbeat as fresh as it is, instead of
        // falling behind the schedule their detectors expect and being convicted.
        let due = self.beat_due(now);
        if let Some((p, h)) = self.nodes.get_both_mut(&me) {
            let hb = p.state.heartbeat().0.saturating_add(1).max(due);
            p.state.set_heartbeat(hb);
            h.sync(&p.state);
            self.nodes.set_beat(&me, hb);
        }
        self.check_liveness(now);
        if self.ticks.is_multiple_of(GC_EVERY_TICKS) {
            self.collect_garbage(now);
        }
        let fp = self.nodes.fingerprint();
        if fp != self.fp_track.cur {
            self.fp_track = FpTrack {
                cur: fp,
                prev: self.fp_track.cur,
                since: now,
                confirmed: false,
            };
        }
        let mut candidates = self.digest_candidates(now);
        let syns = self.syns_per_round();
        for (to, tag) in self.pick_targets(syns) {
            // While leaving, by tag: a peer whose membership changed since it last wrote to us
            // cannot read positions, empties the digest, and answers without asking for us,
            // which would count as holding our leave.
            let indexed = self.leaving.is_none()
                && tag.is_some_and(|t| {
                    self.nodes
                        .get(&t)
                        .is_some_and(|p| self.peer_reads_positions(now, p, fp))
                });
            let budget = self.budget(Channel::Datagram);
            let digest = self.build_digest(budget, indexed, syns, &mut candidates);
            if let Some(l) = self.leaving.as_mut() {
                l.synced_to.insert(to);
            }
            self.note_syn_sent(now, to, Channel::Datagram);
            self.send(
                to,
                Channel::Datagram,
                &Message::Syn {
                    from: me,
                    fp,
                    digest,
                },
            );
        }
    }

    /// Syns this round: `fanout`, or more (up to twice) when the digest a round should carry
    /// (`DIGEST_VIEWS_PER_ROUND` views of about 10 bytes an entry) does not fit `fanout`
    /// datagrams. Large clusters thus keep heartbeat evidence flowing, at a bandwidth that grows
    /// with the cluster only until the cap.
    fn syns_per_round(&self) -> usize {
        let want = self.nodes.len() * DIGEST_VIEWS_PER_ROUND * 10;
        let per_syn = self.budget(Channel::Datagram).max(1);
        want.div_ceil(per_syn)
            .clamp(self.config.fanout, 2 * self.config.fanout)
    }

    /// `syns` random live peers, plus now and then a down peer (to see it come back) and a
    /// seed (to heal partitions); every seed while we know no live peer.
    fn pick_targets(&mut self, syns: usize) -> Vec<(SocketAddr, Option<Tag>)> {
        let mut live = Vec::with_capacity(self.num_live);
        let mut down = Vec::new();
        self.nodes.ensure_order();
        for &(tag, slot) in self.nodes.ordered() {
            match self.nodes.hot_at(slot).map(|h| h.liveness) {
                Some(Liveness::Alive) if tag != self.me => live.push((slot, tag)),
                Some(Liveness::Down { .. }) => down.push((slot, tag)),
                _ => {}
            }
        }
        // Addresses only for the few picked: reading them touches the cold part of a peer.
        let addr = |nodes: &Table<Peer, Hot>, (slot, tag): (u32, Tag)| {
            nodes.at_slot(slot).map(|p| (p.state.id().addr, Some(tag)))
        };
        let mut targets = Vec::with_capacity(self.config.fanout + 2);
        let k = syns.min(live.len());
        for i in 0..k {
            let j = self.rng.random_range(i..live.len());
            live.swap(i, j);
            targets.extend(addr(&self.nodes, live[i]));
        }
        if !down.is_empty() && self.rng.random_bool(0.1) {
            targets.extend(addr(
                &self.nodes,
                down[self.rng.random_range(0..down.len())],
            ));
        }
        if live.is_empty() {
            targets.extend(self.seeds.iter().map(|a| (*a, None)));
        } else if !self.seeds.is_empty() && self.rng.random_bool(0.05) {
            targets.push((self.seeds[self.rng.random_range(0..self.seeds.len())], None));
        }
        targets.sort();
        targets.dedup_by_key(|t| t.0);
        targets
    }

    /// Exchanges state over the stream with every seed (`all`: joining, or still alone), or
    /// with the seeds added since the last attempt only.
    fn join_attempt(&mut self, now: Instant, all: bool) {
        let pending = std::mem::take(&mut self.join.pending);
        let seeds = if all {
            self.seeds.clone()
        } else {
            let mut new: Vec<SocketAddr> = pending
                .into_iter()
                .filter(|a| self.seeds.contains(a))
                .collect();
            new.sort();
            new.dedup();
            new
        };
        for addr in seeds {
            self.send_stream_syn(now, addr);
        }
        // While alone, retry with exponential backoff; once a peer is known, gossip takes over.
        if self.num_live <= 1 && !self.seeds.is_empty() {
            self.join.next_attempt = Some(now + self.join.backoff);
            self.join.backoff = (self.join.backoff * 2).min(MAX_JOIN_BACKOFF);
            self.join.retry = true;
        }
    }

    fn send_stream_syn(&mut self, now: Instant, to: SocketAddr) {
        self.stats.stream_syncs += 1;
        self.stream_syncs.insert(
            to,
            StreamSync {
                at: now,
                answered: false,
                failed: false,
            },
        );
        self.note_syn_sent(now, to, Channel::Stream);
        self.nodes.ensure_order();
        let digest = self.full_digest(self.budget(Channel::Stream));
        let me = self.me;
        let fp = self.nodes.fingerprint();
        self.send(
            to,
            Channel::Stream,
            &Message::Syn {
                from: me,
                fp,
                digest,
            },
        );
    }

    // ----- receiving -----

    /// Decodes and handles one packet; returns whether it was a message of this cluster (see
    /// `handle_stream_frame`).
    fn receive(&mut self, now: Instant, from: SocketAddr, channel: Channel, bytes: &[u8]) -> bool {
        // A node that left or was replaced reads nothing, so it takes nothing as a message of
        // this cluster (a driver closes the connection; the runtime is stopping by then).
        if self.is_quiet() {
            return false;
        }
        match self.codec.decode_with_nonce(bytes) {
            Ok((msg, nonce)) => {
                // Checked only once the packet authenticated, so strangers cannot fill the
                // guard; every later check sees the nonce as already used.
                // A packet sealed for the other channel is a replay too: an honest sender
                // never sends one (a captured datagram Syn sent as a frame was answered with
                // a whole state, the reply budget of a frame).
                if let Some(nonce) = nonce
                    && (nonce.stream != (channel == Channel::Stream)
                        || !self.replay.accept(now, nonce))
                {
                    self.stats.rx_replayed += 1;
                    debug!(%from, counter = nonce.counter, "dropped a replayed sealed packet");
                    return false;
                }
                self.handle_message(now, from, channel, msg, bytes.len());
                true
            }
            Err(e) => {
                match e {
                    DecodeError::ForeignCluster => self.stats.rx_foreign_cluster += 1,
                    DecodeError::Version(_) => self.stats.rx_bad_version += 1,
                    DecodeError::Auth => self.stats.rx_auth_failed += 1,
                    DecodeError::Plaintext => self.stats.rx_plaintext_refused += 1,
                    _ => self.stats.rx_malformed += 1,
                }
                debug!(%from, error = %e, "dropped packet");
                false
            }
        }
    }

    /// `handle_message` for a message of unknown size: answers are never limited
    /// (`AMPLIFICATION_FACTOR`).
    #[cfg(test)]
    fn on_message(&mut self, now: Instant, from: SocketAddr, channel: Channel, msg: Message) {
        self.handle_message(now, from, channel, msg, usize::MAX);
    }

    /// Handles a decoded message of `len` bytes.
    fn handle_message(
        &mut self,
        now: Instant,
        from: SocketAddr,
        channel: Channel,
        msg: Message,
        len: usize,
    ) {
        let sender = msg.from();
        if sender == self.me {
            // Our own packet, come back through an address of ours among the seeds not
            // known as ours yet (the advertised one and those given to `add_own_addr` are
            // left out), or a forgery of our tag: nothing to learn either way.
            self.stats.rx_own_tag += 1;
            debug!(%from, "dropped packet naming this node as its sender");
            return;
        }
        // A message straight from an incarnation we buried, stating a heartbeat newer than the
        // one we buried it at, proves it is alive: let it back in. (An old datagram of it,
        // replayed, states an old heartbeat: sealing cannot tell a replay from the original.)
        if let Some(b) = self.buried.get(&sender)
            && msg.own_heartbeat().is_some_and(|hb| hb > b.heartbeat)
        {
            debug!(%from, "buried node contacted us directly; forgetting its burial");
            self.lift_burial(sender);
        }
        match msg {
            Message::Syn {
                from: tag,
                fp,
                mut digest,
            } => {
                self.note_fingerprint(now, tag, fp);
                let resolved = self.resolve_digest(fp, &mut digest, now);
                self.on_syn(now, (from, len), channel, tag, digest, &resolved);
                self.resolved_spare = resolved;
            }
            Message::SynAck {
                from: tag,
                fp,
                digest,
                delta,
            } => {
                self.note_fingerprint(now, tag, fp);
                self.on_synack(now, (from, len), channel, tag, fp, digest, delta)
            }
            Message::Ack { delta, .. } => {
                if channel == Channel::Stream
                    && self.stream_requests.is_some_and(|(to, _)| to == from)
                {
                    self.stream_requests = None;
                }
                self.apply_deltas(now, sender, delta)
            }
        }
    }

    /// A Syn of `len` bytes from `from`.
    fn on_syn(
        &mut self,
        now: Instant,
        (from, len): (SocketAddr, usize),
        channel: Channel,
        sender: Tag,
        digest: Digest,
        resolved: &Resolved,
    ) {
        let known = self.known_source(channel, sender, from);
        let mut requests = Vec::new();
        // Nodes whose heartbeat we hold newer than the peer: (tag, slot, ours, the peer's).
        // Only a SynAck by tag reads their dense records (an indexed one sends beats). Sized up
        // front: often most of the digest.
        let mut fresher = Vec::with_capacity(resolved.beats.len() + digest.entries.len());
        let mut wants = Vec::new();
        let mut own_ahead = None;
        let table_full = self.nodes.len() >= self.config.limits.max_nodes;
        let mut asked_unknown = false;
        self.warm_learns(&digest, resolved);
        for &(slot, hb) in &resolved.beats {
            self.learn_beat(slot, hb, now);
            let known = self.nodes.beat_at(slot);
            // Not for a node we convicted: what we hold for it may be far behind, and sent
            // back as a beat it reads as ahead (see `learn_beat`).
            if known > hb
                && self
                    .nodes
                    .hot_at(slot)
                    .is_some_and(|h| h.liveness == Liveness::Alive)
                && let Some(tag) = self.nodes.tag_at(slot)
                && tag != self.me
            {
                fresher.push((tag, slot, known, hb));
            }
        }
        for (e, slot) in digest.entries.iter().zip(&resolved.slots) {
            if e.tag == self.me {
                self.note_leave_confirmation(sender, e.max_version);
            }
            if let Some(slot) = *slot {
                self.learn_heartbeat_at(slot, e.tag, e.heartbeat, now);
            }
            match slot.and_then(|s| Some((s, self.nodes.hot_at(s)?, self.nodes.beat_at(s)))) {
                Some((slot, p, known)) => {
                    let mine = p.max_version;
                    if e.heartbeat == 0 || mine > e.max_version || p.needs_reset(e) {
                        wants.push(Want {
                            tag: e.tag,
                            peer_max: e.max_version,
                            peer_gc: e.gc_version,
                            unknown: e.heartbeat == 0,
                        });
                    } else if e.max_version > mine && e.tag == self.me {
                        // Nobody can hold versions of ours we never wrote: not asked for.
                        own_ahead = Some((e.max_version, mine));
                    } else if e.max_version > mine {
                        requests.push(p.digest_entry(e.tag, known));
                    } else if known > e.heartbeat && e.tag != self.me {
                        fresher.push((e.tag, slot, known, e.heartbeat));
                    }
                }
                // While the table is full, one a digest, and none we refused: it is refused
                // when it comes (and recorded, so not asked for again) unless it is a restart
                // of a node we hold, which replaces the old incarnation. Asking for every one
                // made a full node pull a stream sync nearly every round, for good (found by
                // review: 65 in 99 rounds); asking for none left a restart to come only when
                // a cover spanned its tag, one of as many parts as there are refused tags
                // (found by review: up to 42 rounds, the old incarnation convicted first).
                None if (!table_full || (!asked_unknown && !self.refused.contains(&e.tag)))
                    && !self.kept_buried(e.tag, e.heartbeat) =>
                {
                    asked_unknown = true;
                    requests.push(DigestEntry {
                        tag: e.tag,
                        heartbeat: 0,
                        max_version: 0,
                        gc_version: 0,
                    })
                }
                None => {}
            }
        }
        if let Some((theirs, ours)) = own_ahead {
            self.note_identity_conflict(now, Conflict::Version, theirs, ours);
        }
        // The peer holds newer state of many nodes than fit a SynAck's requests and its Ack:
        // pull it all over the stream instead.
        if channel == Channel::Datagram && requests.len() > PULL_SYNC_REQUESTS {
            self.data_sync(now, from);
        }
        if let Some((start, end)) = digest.cover {
            let mut listed: Vec<Tag> = digest.entries.iter().map(|e| e.tag).collect();
            listed.sort();
            let in_cover = |t: Tag| {
                if start <= end {
                    (start..=end).contains(&t.0)
                } else {
                    t.0 >= start || t.0 <= end
                }
            };
            self.nodes.ensure_order();
            for &(tag, _) in self.nodes.ordered() {
                if in_cover(tag) && listed.binary_search(&tag).is_err() {
                    wants.push(Want {
                        tag,
                        peer_max: 0,
                        peer_gc: 0,
                        unknown: true,
                    });
                }
            }
        }
        let budget = self.answer_budget(channel, (from, known), len);
        // Requests first (they are small and unlock the Ack), then the delta, then heartbeat
        // news with whatever room is left.
        // Our own entry first: every exchange gives the initiator a direct, fresh heartbeat.
        let own = self
            .own_hot()
            .digest_entry(self.me, self.own().state.heartbeat().0);
        let mut used = size::digest_entry(&own);
        let mut entries = vec![own];
        if channel == Channel::Stream && !requests.is_empty() {
            if self.bulk_in_flight(now) {
                // Another stream exchange is already bringing us state; asking this peer for
                // newer versions too would bring much of the same again (what is still missing
                // comes later). Nodes we have never heard of are still asked for.
                self.stats.data_syncs_deferred += 1;
                requests.retain(|e| e.heartbeat == 0);
            } else {
                self.stream_requests = Some((from, now));
            }
        }
        for e in requests {
            let s = size::digest_entry(&e);
            if used + s > budget / 3 {
                break;
            }
            used += s;
            entries.push(e);
        }
        let (delta, delta_size) =
            self.build_delta(now, from, channel, wants, budget.saturating_sub(used));
        used += delta_size;
        let me = self.me;
        let fp = self.nodes.fingerprint();
        let indexed = self.nodes.get(&sender).is_some_and(|p| p.fp == fp);
        let mut beats = Beats::default();
        // No beats while catching up after a pause: the Syns read now may be seconds old, and
        // so may what we hold; a beat far behind what the peer holds by now would read there
        // as one far ahead (see `learn_heartbeat_at`). Full entries say the same safely. The
        // same to a peer far behind us (it was frozen or cut off): it reads a beat against the
        // copy it holds, exactly only within 128 of it.
        let beating = indexed && now >= self.learn_ages_after;
        // In place: this runs for every Syn, and most of `fresher` usually stays for beats.
        let mut room = true;
        fresher.retain(|&(tag, slot, hb, theirs)| {
            if beating && hb.saturating_sub(theirs) < FULL_ENTRY_LAG {
                return true;
            }
            if room && let Some(h) = self.nodes.hot_at_of(slot, tag) {
                let e = h.digest_entry(tag, hb);
                let s = size::digest_entry(&e);
                if used + s > budget {
                    room = false;
                } else {
                    used += s;
                    entries.push(e);
                }
            }
            false
        });
        if beating {
            self.nodes.ensure_order();
            let room = wire::beats_room(budget.saturating_sub(used), self.nodes.len());
            let mut items: Vec<(u32, u64)> = fresher
                .iter()
                .take(room)
                .filter_map(|&(tag, slot, hb, _)| Some((self.nodes.position_at(&tag, slot)?, hb)))
                .collect();
            beats = Beats::encode(&mut items);
        }
        let mut digest = Digest {
            indexed: false,
            cover: None,
            entries,
            beats,
        };
        if indexed {
            self.nodes.ensure_order();
            let positions: Option<Vec<u32>> = digest
                .entries
                .iter()
                .map(|e| self.nodes.position(&e.tag))
                .collect();
            if let Some(positions) = positions {
                for (e, p) in digest.entries.iter_mut().zip(positions) {
                    e.tag = Tag(u64::from(p));
                }
                digest.indexed = true;
            }
        }
        self.send(
            from,
            channel,
            &Message::SynAck {
                from: me,
                fp,
                digest,
                delta,
            },
        );
    }

    /// A SynAck of `len` bytes from `from`.
    #[allow(clippy::too_many_arguments)]
    fn on_synack(
        &mut self,
        now: Instant,
        (from, len): (SocketAddr, usize),
        channel: Channel,
        sender: Tag,
        fp: u64,
        mut digest: Digest,
        delta: Vec<NodeDelta>,
    ) {
        // Before the answered Syn leaves `syns_out`: an answer from where we sent one is
        // from a known source.
        let known = self.known_source(channel, sender, from);
        if channel == Channel::Stream {
            if let Some(d) = self.last_data_sync.as_mut()
                && d.to == from
            {
                d.answered = true;
            }
            if let Some(s) = self.stream_syncs.get_mut(&from) {
                s.answered = true;
            }
        }
        let answers_early = self
            .syns_out
            .iter()
            .position(|s| s.to == from && s.channel == channel)
            .and_then(|i| self.syns_out.remove(i))
            .is_some_and(|s| s.before_leave);
        // An indexed answer read against another membership loses its entries: it would not
        // ask for us even if the peer had, so it says nothing about a leave.
        let unreadable = digest.indexed && fp != self.nodes.fingerprint();
        // Read the digest against the membership the responder saw (before its delta).
        let resolved = self.resolve_digest(fp, &mut digest, now);
        self.warm_learns(&digest, &resolved);
        for &(slot, hb) in &resolved.beats {
            self.learn_beat(slot, hb, now);
        }
        self.apply_deltas(now, sender, delta);
        if self.superseded.is_some() {
            // Replaced: `Superseded` stays the last event, and nothing more is learned.
            return;
        }
        let mut wants = Vec::new();
        let mut asked_for_me = false;
        for (e, slot) in digest.entries.iter().zip(&resolved.slots) {
            if e.tag == self.me {
                asked_for_me = true;
                let ours = self.own_hot().max_version;
                if e.max_version > ours {
                    self.note_identity_conflict(now, Conflict::Version, e.max_version, ours);
                }
            }
            // The delta may have introduced the node; fall back to a lookup.
            let Some(slot) = slot.or_else(|| self.nodes.slot(&e.tag)) else {
                continue;
            };
            self.learn_heartbeat_at(slot, e.tag, e.heartbeat, now);
            // The delta may also have expired a node and reused its slot: check the tag.
            if let Some(p) = self.nodes.hot_at_of(slot, e.tag)
                && (e.heartbeat == 0 || p.max_version > e.max_version || p.needs_reset(e))
            {
                wants.push(Want {
                    tag: e.tag,
                    peer_max: e.max_version,
                    peer_gc: e.gc_version,
                    unknown: e.heartbeat == 0,
                });
            }
        }
        self.resolved_spare = resolved;
        // Only a datagram answer can show that the peer holds our leave: one over the stream
        // leaves out its requests when the peer has another stream exchange in flight
        // (`bulk_in_flight`), so not asking for us proves nothing there (found by review: the
        // leave completed while the peer still held the leaver alive).
        if !asked_for_me
            && !answers_early
            && !unreadable
            && channel == Channel::Datagram
            && let Some(l) = &self.leaving
            && l.synced_to.contains(&from)
        {
            let v = l.version;
            self.note_leave_confirmation(sender, v);
        }
        // Over the stream, a peer that asked for state awaits our Ack on this connection
        // (`stream_requests`): answer even with nothing, as when what it asked for is gone
        // here (a node replaced by a restart under its name, or expired, since our Syn).
        // Before 2026-12-07 no Ack came then, and the peer waited until the connection closed
        // and counted the exchange lost. A request names a node we hold newer (it is in
        // `wants`) or one gone here, which cannot be told from heartbeat news about it, so
        // those get an Ack too (as do entries we could not read). Not heartbeat news about
        // nodes we hold: the peer awaits no Ack for it, and `stream_requests` is kept by
        // address, so an empty Ack there read as the answer to a later exchange on the same
        // connection whose requests were still unanswered (found by review).
        let asked = channel == Channel::Stream
            && (unreadable
                || !wants.is_empty()
                || digest
                    .entries
                    .iter()
                    .any(|e| e.tag != sender && !self.nodes.contains(&e.tag)));
        let mut delta = Vec::new();
        if !wants.is_empty() {
            let budget = self.answer_budget(channel, (from, known), len);
            delta = self.build_delta(now, from, channel, wants, budget).0;
        }
        if !delta.is_empty() || asked {
            let me = self.me;
            self.send(from, channel, &Message::Ack { from: me, delta });
        }
    }

    fn collect_garbage(&mut self, now: Instant) {
        let me = self.me;
        let grace = self.config.tombstone_grace;
        let mut purged = 0;
        let mut expired_keys = Vec::new();
        let now_at = self.stamp(now);
        let leaving = self.leaving.is_some();
        if let Some((p, h)) = self.nodes.get_both_mut(&me) {
            // Not while leaving: the leave marker is our last write, so that after `Left` a
            // peer hears nothing more of us (a key deleted then reached every peer as a
            // `KeyDeleted` after `Left`). The key goes with the rest of our state.
            if !leaving {
                expired_keys = p.state.expire_ttls(now);
            }
            if !expired_keys.is_empty() {
                h.changed_at = now_at;
            }
            purged += p.state.purge_tombstones(now, grace);
            h.sync(&p.state);
        }
        let nodes = &mut self.nodes;
        self.tombstoned.retain(|tag| {
            let Some((p, h)) = nodes.get_both_mut(tag) else {
                return false;
            };
            let n = p.state.purge_tombstones(now, grace);
            // Only a purge changes the versions `Hot` copies.
            if n > 0 {
                h.sync(&p.state);
            }
            purged += n;
            p.state.has_tombstones()
        });
        self.stats.tombstones_purged += purged as u64;
        for key in expired_keys
            .into_iter()
            .filter(|k| self.key_events.wants(k))
        {
            self.events.push_back(Event::KeyDeleted {
                node: self.id.clone(),
                key,
            });
        }
        self.buried.retain(|_, b| b.until > now);
        let buried = &self.buried;
        self.resent_buried.retain(|t| buried.contains_key(t));
        self.buried_names.retain(|_, (_, until)| *until > now);
        self.replay.forget_idle(now, self.config.forget_after);
        // Unanswered ones stay until a reset waiting on them has had its chance to go in
        // pieces (`Node::reset_may_go_in_pieces`).
        let patience = self.reset_stream_patience();
        self.stream_syncs.retain(|_, s| {
            let age = now.saturating_duration_since(s.at);
            age < STREAM_SYNC_BACKOFF || (!s.answered && age < patience + STREAM_SYNC_BACKOFF)
        });
    }

    /// A peer showed a copy of this node past what it ever sent (`what`: heartbeat or version,
    /// `theirs` against `ours`): see `Stats::identity_conflicts`. The next round rebases this
    /// node's state past it (`rebase_own`).
    pub(super) fn note_identity_conflict(
        &mut self,
        now: Instant,
        what: Conflict,
        theirs: u64,
        ours: u64,
    ) {
        self.stats.identity_conflicts += 1;
        let (v, hb) = self.rebase_wanted.unwrap_or_default();
        self.rebase_wanted = Some(match what {
            Conflict::Version => (v.max(theirs), hb),
            Conflict::Heartbeat => (v, hb.max(theirs)),
        });
        if self
            .conflict_logged
            .is_none_or(|t| now.saturating_duration_since(t) >= CONFLICT_LOG_EVERY)
        {
            self.conflict_logged = Some(now);
            warn!(
                me = %self.id,
                ?what,
                theirs,
                ours,
                "a peer holds a newer copy of this node than it ever sent: this process \
                 restarted with its previous run's generation, or another process runs under \
                 this name and generation; this node moves its state past that copy, but two \
                 live processes under one identity keep undoing each other: give every run a \
                 higher generation"
            );
        } else {
            debug!(?what, theirs, ours, "identity conflict");
        }
    }

    /// The heartbeat this node is due at by time alone: the intervals elapsed since
    /// `beat_origin`, plus two, plus `beat_lead`.
    fn beat_due(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.beat_origin).as_nanos()
            / self.config.gossip_interval.as_nanos().max(1);
        u64::try_from(elapsed)
            .unwrap_or(u64::MAX)
            .saturating_add(2)
            .saturating_add(self.beat_lead)
    }

    /// Moves this node's versions and heartbeat past the copies of it that peers were seen to
    /// hold (`note_identity_conflict`), so that every peer takes a reset to this run's state
    /// instead of keeping a previous run's keys and refusing this run's writes. At most once
    /// per `REBASE_EVERY`; not while leaving (the leave waits on its version) or superseded.
    fn rebase_own(&mut self, now: Instant) {
        let Some((version, heartbeat)) = self.rebase_wanted else {
            return;
        };
        if self.takes_no_writes()
            || self
                .rebased_at
                .is_some_and(|t| now.saturating_duration_since(t) < REBASE_EVERY)
        {
            return;
        }
        self.rebase_wanted = None;
        let me = self.me;
        let now_at = self.stamp(now);
        let Some((p, h)) = self.nodes.get_both_mut(&me) else {
            return;
        };
        let (max, hb) = (p.state.max_version().0, p.state.heartbeat().0);
        // Each judged on its own: an absurd one of the two (only a forgery states one) must
        // not keep the other from being repaired.
        let sane = |x: u64, what: &str| {
            if x > state::MAX_REBASE_VERSION {
                debug!(x, what, "a peer's copy of this node states an absurd value");
                0
            } else {
                x
            }
        };
        let (version, heartbeat) = (sane(version, "version"), sane(heartbeat, "heartbeat"));
        if version <= max && heartbeat <= hb {
            return;
        }
        let past = version.max(max).saturating_add(REBASE_MARGIN);
        let Some(gc) = p.state.rebase(past) else {
            debug!(
                version,
                "no versions left to rebase past a peer's copy of this node"
            );
            return;
        };
        // The round that follows beats once past it.
        p.state.set_heartbeat(heartbeat);
        h.changed_at = now_at;
        h.sync(&p.state);
        let hb_now = p.state.heartbeat().0;
        self.nodes.set_beat(&me, hb_now);
        // From here the heartbeat still follows time, not rounds (a late round catches up):
        // due now at the beat this round sends.
        self.beat_lead = self
            .beat_lead
            .saturating_add(hb_now.saturating_add(1).saturating_sub(self.beat_due(now)));
        self.rebased_at = Some(now);
        self.stats.identity_rebases += 1;
        warn!(
            me = %self.id,
            gc_version = gc,
            heartbeat = hb_now,
            "rebased this node's state past a previous run's copy held by peers"
        );
    }

    /// Remembers a Syn sent, for `syns_out`.
    fn note_syn_sent(&mut self, now: Instant, to: SocketAddr, channel: Channel) {
        while let Some(at) = self.syns_out.front().map(|s| s.at)
            && (now.saturating_duration_since(at) >= SYN_ANSWER_WINDOW
                || self.syns_out.len() >= SYNS_TRACKED)
        {
            self.syns_out.pop_front();
        }
        self.syns_out.push_back(SynOut {
            at: now,
            to,
            channel,
            before_leave: false,
        });
    }

    fn note_leave_confirmation(&mut self, peer: Tag, version_seen: u64) {
        if let Some(l) = self.leaving.as_mut()
            && version_seen >= l.version
        {
            l.confirmed.insert(peer);
        }
    }

    fn check_leave_done(&mut self, now: Instant) {
        let Some(l) = self.leaving.as_mut() else {
            return;
        };
        if !l.done && (l.confirmed.len() >= l.needed || now >= l.deadline) {
            l.done = true;
            let confirmed = l.confirmed.len();
            debug!(confirmed, "leave complete");
            self.events.push_back(Event::LeaveCompleted { confirmed });
        }
    }
}

impl Peer {
    /// Whether this node has heard the peer beat since it was introduced. Counted for live
    /// peers in `Node::num_heard`: whatever changes this, or a peer's liveness, keeps it.
    fn heard_beating(&self) -> bool {
        self.state.heartbeat().0 > self.base_heartbeat
    }

    /// Ring weight from the well-known key (1.0 = 100), clamped to what the ring accepts.
    fn ring_weight(&self) -> u32 {
        self.state
            .get_str(state::KEY_WEIGHT)
            .and_then(|w| w.parse::<f64>().ok())
            // Infinities clamp like any out-of-range value; NaN means nothing.
            .filter(|w| !w.is_nan())
            .map_or(ring::DEFAULT_WEIGHT, |w| {
                let max = f64::from(ring::MAX_WEIGHT);
                (w * f64::from(ring::DEFAULT_WEIGHT))
                    .round()
                    .clamp(1.0, max) as u32
            })
    }
}

impl Hot {
    fn new(state: &NodeState, now: Stamp, deadline: Stamp) -> Self {
        Self {
            max_version: state.max_version().0,
            gc_version: state.gc_version().0,
            liveness: Liveness::Alive,
            deadline,
            changed_at: now,
            hb_at: now,
        }
    }

    /// Refreshes the copies of the state's versions.
    fn sync(&mut self, state: &NodeState) {
        self.max_version = state.max_version().0;
        self.gc_version = state.gc_version().0;
    }

    fn status(&self) -> MemberStatus {
        match self.liveness {
            Liveness::Alive => MemberStatus::Alive,
            Liveness::Down { .. } => MemberStatus::Down,
            Liveness::Left { .. } => MemberStatus::Left,
        }
    }

    fn digest_entry(&self, tag: Tag, heartbeat: u64) -> DigestEntry {
        DigestEntry {
            tag,
            heartbeat,
            max_version: self.max_version,
            gc_version: self.gc_version,
        }
    }

    /// Whether a peer at `e` may hold keys whose tombstones we purged.
    fn needs_reset(&self, e: &DigestEntry) -> bool {
        let gc = self.gc_version;
        gc > e.gc_version && e.max_version < gc
    }
}

fn ceil_log2(n: usize) -> u32 {
    usize::BITS - n.max(1).saturating_sub(1).leading_zeros()
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The identity is what matters when reading logs; the rest is in `stats()`.
        f.debug_struct("Node")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
