//! Protocol configuration: every default, its unit and its trade-off.

use std::time::Duration;

use crate::detector::Distribution;

/// Parameters of a [`Node`](crate::Node). Start from [`Config::default()`] (the LAN preset),
/// [`Config::lan()`] or [`Config::wan()`], then change fields:
///
/// ```
/// let mut config = tidings::Config::default();
/// config.cluster_id = "payments".into();
/// config.validate().unwrap();
/// ```
///
/// design.md explains how these numbers were chosen.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// Cluster name, carried in every datagram and frame; packets of another cluster are dropped
    /// and counted. At most 64 bytes. Default: `"tidings"`.
    pub cluster_id: String,
    /// How often this node bumps its heartbeat and starts gossip exchanges. Default: 200 ms (LAN),
    /// 1 s (WAN).
    ///
    /// Shorter intervals spread state and detect failures faster (detection takes about 8 to 12
    /// intervals) at a bandwidth cost proportional to `fanout / gossip_interval`.
    ///
    /// Need not match across the cluster (a rolling change, a WAN node among LAN ones): each
    /// node gossips its interval, and its peers date its heartbeats and judge a slower node at
    /// its pace (the prior and the detector's floor below scale with it; design.md 4.1).
    pub gossip_interval: Duration,
    /// Peers this node starts an exchange with every interval. Default: 3. Allowed: 1 to 1,024.
    ///
    /// More spreads state faster (fewer rounds) and gives the failure detector more heartbeat
    /// arrivals, at a linear bandwidth cost.
    pub fanout: usize,
    /// Largest datagram this node sends, in bytes, envelope included. Default: 1,400 (fits an
    /// Ethernet MTU with IPv6 and UDP headers, so no IP fragmentation). Larger incoming datagrams
    /// are accepted up to 65,507 bytes (the largest UDP payload).
    pub max_datagram_size: usize,
    /// Largest stream (TCP) frame this node sends or accepts, in bytes. Default: 8 MiB.
    /// Allowed: `max_datagram_size` to 1 GiB, and at least
    /// [`Limits::frame_for_whole_state`]: one node's whole state, at the limits, must fit one
    /// frame, so that a peer too far behind takes it whole (a reset cut across frames would
    /// make it hear the keys past the cut deleted, then written again as the rest came).
    ///
    /// Exchanges carrying more than this (several nodes' states, for a joiner) are cut to size
    /// and finish over later exchanges.
    pub max_frame_size: usize,
    /// How often this node runs a full push-pull exchange over the stream transport with one
    /// random live peer, as anti-entropy, on average: each wait is this times a random factor
    /// from 0.5 to 1.5, so nodes started together spread out. Default: 30 s. Zero disables it.
    pub anti_entropy_interval: Duration,
    /// Phi above which a silent peer is declared down, from 1 to 50. Default: 10.0 (design.md,
    /// "Failure detection": about 9 gossip intervals of evidence age at 100 nodes).
    pub phi_threshold: f64,
    /// Heartbeat evidence-age samples the detector learns from, per peer (kept as sums over 16
    /// blocks, so the window holds this many plus or minus `ceil(window / 16)`, in constant
    /// memory). From 2 to 1,000,000. Default: 1,000.
    pub detector_window: usize,
    /// Floor on the standard deviation of heartbeat evidence ages, so that very regular
    /// arrivals do not make phi hair-trigger. Default: `None`, meaning one `gossip_interval`
    /// (whatever it is set to). Set, from a quarter of `gossip_interval` to `dead_grace`. For
    /// a peer gossiping more slowly than this node, scaled by the ratio of the intervals.
    ///
    /// A floor well below the interval convicts live peers: with gossip, a heartbeat now and
    /// then arrives a round late (relayed instead of direct), an age of two intervals, which a
    /// window of mostly one-interval ages and a tight floor puts beyond the threshold (with a
    /// 60-s interval and a 200-ms floor, about one false down per peer every few hours).
    pub detector_min_std: Option<Duration>,
    /// The distribution phi is computed from. Default: [`Distribution::Normal`].
    pub detector_distribution: Distribution,
    /// Samples' worth of weight given to the prior (mean `max(2, ceil(log2 n))` intervals, of
    /// the peer's if longer than this node's) so
    /// that a peer with few arrivals is judged by a sensible estimate; it fades out over the peer's
    /// first `4 ×` this many samples. Default: 10 (at 1,000 simulated nodes and 5 % loss, 5
    /// let 30 false convictions through in the seconds after a cold start, from peers whose
    /// spread was estimated from too few samples; 10 let none, at the same detection time).
    /// Positive: with none, a peer's first evidence age alone sets its mean, with no spread
    /// but the floor, and a later age a relay or two longer convicts it (at 1,000 simulated
    /// nodes and 5 % loss, every node was marked down by some observer in the first 10 s).
    /// Small weights are little better: 1 let 997 of the 1,000 be marked down, 5 let 3.
    pub detector_prior_weight: u32,
    /// How long a peer stays down before its state is dropped (`Expired`). Default: 2 min
    /// (LAN), 10 min (WAN).
    pub dead_grace: Duration,
    /// How long a peer that left gracefully is kept before its state is dropped: at least
    /// `leave_timeout` plus four gossip intervals. Default: 60 s (LAN), 5 min (WAN).
    pub left_grace: Duration,
    /// How long an expired incarnation is remembered, so stale gossip cannot bring it back.
    /// Default: 10 min (LAN), 50 min (WAN). Positive: with none, the burial lifted at the
    /// next garbage collection, and a node that died during a partition longer than
    /// `dead_grace` came back (`Joined`) at every node of the other side once it healed,
    /// from the copies its own side still held.
    pub forget_after: Duration,
    /// How long a tombstone (deleted or expired key) is kept before it is purged. Peers that
    /// were away longer than this get the owner's state reset instead. Default: 10 min.
    /// Positive: with none, every tombstone went at the next garbage collection (every five
    /// gossip intervals; an expired TTL's in the very pass that wrote it), so most deletes
    /// reached peers only as resets of the owner's whole state.
    pub tombstone_grace: Duration,
    /// How long [`Node::leave`](crate::Node::leave) keeps gossiping the leave while waiting for
    /// `leave_confirmations` peers to confirm it; positive. Default: 3 s (LAN), 10 s
    /// (WAN).
    pub leave_timeout: Duration,
    /// Peers that must hold our leave before leaving completes early; positive. Default: 3 (or
    /// all the peers that can confirm, if fewer).
    ///
    /// The peers that can confirm are counted when the leave starts, as this node sees them
    /// then: the live peers it has heard beat since it learned of them (before it has heard
    /// any, right after joining, every live peer). A member this node has just heard of and
    /// never heard beat (a crashed one its seed still introduced as alive) does not count; a
    /// peer heard that crashed since and is not yet marked down still does, and if that leaves
    /// fewer peers able to confirm than needed, the leave takes the whole `leave_timeout`.
    pub leave_confirmations: usize,
    /// Whether this node starts as ready. Default: true. See
    /// [`Node::set_ready`](crate::Node::set_ready).
    pub initially_ready: bool,
    /// Limits on local writes and on what peers may make this node store.
    pub limits: Limits,
    /// How the ownership ring is built; `None` turns ownership off. Default:
    /// [`RingConfig::default()`](crate::ring::RingConfig): 2^18 partitions, 256 vnodes per
    /// member, bounded load 1.08. At 1,000 members the ring takes about 3.75 MiB and 2 to 4 ms
    /// to rebuild after a membership change (BENCHMARKS.md, section 3).
    pub ring: Option<crate::ring::RingConfig>,
    /// Whether only members that marked themselves ready own keys. Default: false (every live
    /// member owns keys).
    pub ring_ready_only: bool,
    /// The fewest members a ring is built from, counted as the ring counts them (live, heard
    /// beating, and ready with `ring_ready_only`; this node included). With fewer, the ring is
    /// empty: no member owns any key, and this node relinquishes what it held (to nobody).
    /// Default: 1 (no minimum; 0 means the same).
    ///
    /// Without a minimum, a node cut off from the others (a network partition, a wrong key,
    /// seeds it cannot reach) owns every key once its ring settles, and each side of a split
    /// owns every key the other side owned. Set to a majority of the cluster's expected size,
    /// at most one side of a split owns keys; a cluster that shrinks below it (a rolling
    /// restart of most of it at once, say) owns nothing until it grows back. Every node should
    /// use the same value: while the members counted are at or above one node's value and
    /// below another's, the first builds a ring and the second an empty one. Changed one node
    /// at a time in a cluster that stays at or above both values, the rings agree throughout.
    /// At most `limits.max_nodes`.
    pub ring_min_members: usize,
    /// Shared keys for authenticated encryption of every datagram and frame
    /// (XChaCha20-Poly1305, 45 bytes per packet). `None`: plaintext. Default: `None`.
    /// A plaintext cluster trusts every host that can reach its port: anyone who can send it
    /// packets can mark members down or make them stand down (design.md section 8). Set a
    /// keyring on any network you do not fully control.
    pub keyring: Option<crate::crypto::Keyring>,
    /// With a keyring, still accept plaintext packets: the middle step of turning encryption
    /// on in a running cluster. Default: false.
    pub accept_plaintext: bool,
    /// With a keyring, still send plaintext: the first step of turning encryption on (every
    /// node gets the key, then every node starts sealing, then stops accepting plaintext).
    /// Needs `accept_plaintext` with a keyring: peers configured alike send plaintext.
    /// Default: false.
    pub send_plaintext: bool,
    /// How long membership must stay unchanged before the ring is rebuilt and an
    /// [`Event::Ownership`](crate::Event::Ownership) emitted, so flapping becomes one change
    /// (never postponed beyond four times this), plus a random delay of up to half of it per
    /// node, so that nodes sharing a host do not all rebuild at once. A peer's graceful leave
    /// does not wait it: the ring drops the leaver within a gossip interval (or half this, if
    /// shorter) of hearing the leave. A node's first ring, one settle after it starts, also
    /// waits while the node, knowing no peer yet, still awaits its seeds or their answer (at
    /// most four times this after start). Default: 1 s (LAN), 5 s (WAN).
    ///
    /// Zero means no settle: the ring is rebuilt at the first timeout after each change, one
    /// [`Event::Ownership`](crate::Event::Ownership) per change, and a node's first ring does
    /// not wait for its seeds: a joining node first owns every key alone, then hands them over
    /// as it learns the members.
    pub ring_settle: Duration,
}

/// Size limits. A local write beyond a limit fails with a typed error; peer input beyond a
/// limit is dropped and counted before anything is allocated for it.
///
/// Give every node of a cluster the same limits. A node refuses a peer's delta whole when it
/// would break its own limits (counted in `deltas_rejected`), so a node with lower limits than
/// a peer's state needs learns nothing of that state past the change that broke them (a node
/// started with them learns the part that fits), and is offered the same delta again at every
/// exchange. That includes the peer's reserved keys: the node misses the peer's later weight
/// and readiness changes, so its ring differs from the other nodes' (design.md 10, "Rolling
/// changes"), its ring fingerprints, so a first ring of its may name the wrong previous owners,
/// and its graceful leave, which it sees as a failure (`Down`). To raise a limit,
/// raise it on every node before writing to it; to lower one, first make sure no node's state
/// is over the new limit.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Longest key, in bytes, from 1 to 16,384. Default: 512.
    pub max_key_len: usize,
    /// Largest value, in bytes; positive. Default: 1 MiB.
    pub max_value_len: usize,
    /// Most keys (live or tombstoned) one node may hold in its own state. Default: 100,000.
    /// Peers refuse a delta that would make a node's state exceed it. tidings' five reserved
    /// keys (readiness, weight, the leave marker, the ring's fingerprints in `tidings:ring`,
    /// the gossip interval in `tidings:interval`) do not count: limits leave room for them,
    /// and they are written even when the user's state is full. The room, counted apart from
    /// the user's keys, is for ten keys and 10 × (32 + 32) bytes (a reserved key and its
    /// value may each be 32 bytes whatever `max_key_len` and `max_value_len`): five spare, so
    /// a peer of a later version that adds reserved keys is not refused.
    pub max_keys_per_node: usize,
    /// Most bytes of user keys and values one node's state may hold. Default: 4 MiB (every
    /// node holds a copy of every node's state: 4 GiB at most for 1,000 nodes). Enforced by
    /// peers as `max_keys_per_node` is (the reserved keys have room of their own). With
    /// `max_keys_per_node`, bounds [`Limits::frame_for_whole_state`], which
    /// `Config::max_frame_size` must hold.
    pub max_state_bytes_per_node: usize,
    /// Most nodes tracked (live, down or left), this node included: at least 2. Default:
    /// 16,384.
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_key_len: 512,
            max_value_len: 1 << 20,
            max_keys_per_node: 100_000,
            max_state_bytes_per_node: 4 << 20,
            max_nodes: 16_384,
        }
    }
}

impl Limits {
    /// The largest stream frame one node's whole state can take under these limits, envelope
    /// included: `Config::max_frame_size` must be at least this ([`ConfigError::StateLargerThanFrame`]).
    /// About 6 MiB at the defaults (4 MiB of keys and values, up to 18 bytes of encoding for
    /// each of 100,000 keys, and 1 KiB of framing).
    ///
    /// Counts the worst case: every key (live or tombstoned) with the longest headers its
    /// limits allow and a version past 32 bits, and the reserved keys' room on top (ten
    /// keys and their 10 × (32 + 32) bytes, with the headers of a 32-byte key and value where
    /// `max_key_len` and `max_value_len` are shorter: a peer's copy holds what its deltas
    /// carry).
    pub fn frame_for_whole_state(&self) -> usize {
        use crate::state::{
            RESERVED_KEY_MAX, RESERVED_ROOM_BYTES, RESERVED_ROOM_KEYS, RESERVED_VALUE_MAX,
        };
        let headers = |key_len: usize, value_len: usize| {
            crate::wire::size::key_entry(key_len, u64::MAX, Some(value_len))
                .saturating_sub(key_len)
                .saturating_sub(value_len)
        };
        let user = self
            .max_keys_per_node
            .saturating_mul(headers(self.max_key_len, self.max_value_len))
            .saturating_add(self.max_state_bytes_per_node);
        let reserved = RESERVED_ROOM_KEYS
            * headers(
                self.max_key_len.max(RESERVED_KEY_MAX),
                self.max_value_len.max(RESERVED_VALUE_MAX),
            )
            + RESERVED_ROOM_BYTES;
        user.saturating_add(reserved).saturating_add(ENTRY_FRAMING)
    }

    /// Checks a key and a value's length as [`Node::set`](crate::Node::set) does before it
    /// writes, so a service can refuse bad input before it starts a node. (A write can still
    /// fail later on the totals: `TooManyKeys`, `StateTooLarge`.)
    pub fn check_write(&self, key: &str, value_len: usize) -> Result<(), crate::Error> {
        if key.is_empty() || key.len() > self.max_key_len {
            return Err(crate::Error::KeyLength {
                len: key.len(),
                max: self.max_key_len,
            });
        }
        if key.starts_with(crate::state::RESERVED_PREFIX) {
            return Err(crate::Error::ReservedKey);
        }
        if value_len > self.max_value_len {
            return Err(crate::Error::ValueTooLarge {
                len: value_len,
                max: self.max_value_len,
            });
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::lan()
    }
}

impl Config {
    /// Preset for a data-centre network: 200 ms interval, detection in about 2 s.
    pub fn lan() -> Self {
        let gossip_interval = Duration::from_millis(200);
        Self {
            cluster_id: "tidings".into(),
            gossip_interval,
            fanout: 3,
            max_datagram_size: 1400,
            max_frame_size: 8 << 20,
            anti_entropy_interval: Duration::from_secs(30),
            phi_threshold: 10.0,
            detector_window: 1000,
            detector_min_std: None,
            detector_distribution: Distribution::Normal,
            detector_prior_weight: 10,
            dead_grace: Duration::from_secs(120),
            left_grace: Duration::from_secs(60),
            forget_after: Duration::from_secs(600),
            tombstone_grace: Duration::from_secs(600),
            leave_timeout: Duration::from_secs(3),
            leave_confirmations: 3,
            initially_ready: true,
            limits: Limits::default(),
            ring: Some(crate::ring::RingConfig::default()),
            ring_ready_only: false,
            ring_min_members: 1,
            keyring: None,
            accept_plaintext: false,
            send_plaintext: false,
            ring_settle: Duration::from_secs(1),
        }
    }

    /// Preset for links across regions: 1 s interval, detection in about 10 s, the dead, left
    /// and forget graces five times longer than [`Config::lan`] (`tombstone_grace` the same),
    /// `leave_timeout` 10 s and `ring_settle` 5 s.
    pub fn wan() -> Self {
        let gossip_interval = Duration::from_secs(1);
        let lan = Self::lan();
        Self {
            gossip_interval,
            dead_grace: lan.dead_grace * 5,
            left_grace: lan.left_grace * 5,
            forget_after: lan.forget_after * 5,
            leave_timeout: Duration::from_secs(10),
            ring_settle: Duration::from_secs(5),
            ..lan
        }
    }

    /// Checks every rule that one field's type cannot express. [`Node::new`](crate::Node::new)
    /// calls it, so an invalid configuration never runs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cluster_id.is_empty() || self.cluster_id.len() > MAX_CLUSTER_ID_LEN {
            return Err(ConfigError::ClusterId {
                len: self.cluster_id.len(),
            });
        }
        // Durations are added to instants and multiplied by small counts; beyond this the
        // arithmetic could overflow the clock (a `Duration::MAX` meant as "never" panicked).
        for (d, field) in [
            (self.gossip_interval, "gossip_interval"),
            (self.anti_entropy_interval, "anti_entropy_interval"),
            (
                self.detector_min_std.unwrap_or_default(),
                "detector_min_std",
            ),
            (self.dead_grace, "dead_grace"),
            (self.left_grace, "left_grace"),
            (self.forget_after, "forget_after"),
            (self.tombstone_grace, "tombstone_grace"),
            (self.leave_timeout, "leave_timeout"),
            (self.ring_settle, "ring_settle"),
        ] {
            if d > MAX_DURATION {
                return Err(ConfigError::TooLong {
                    field,
                    max: MAX_DURATION,
                });
            }
        }
        if self.gossip_interval.is_zero() {
            return Err(ConfigError::Zero("gossip_interval"));
        }
        if self.fanout == 0 {
            return Err(ConfigError::Zero("fanout"));
        }
        if self.fanout > MAX_FANOUT {
            return Err(ConfigError::Limit("fanout must be at most 1,024"));
        }
        if !(2..=MAX_DETECTOR_WINDOW).contains(&self.detector_window) {
            return Err(ConfigError::DetectorWindow(self.detector_window));
        }
        if !(PHI_THRESHOLD_RANGE.0..=PHI_THRESHOLD_RANGE.1).contains(&self.phi_threshold) {
            return Err(ConfigError::PhiThreshold(self.phi_threshold));
        }
        if let Some(std) = self.detector_min_std {
            let (min, max) = (self.gossip_interval / 4, self.dead_grace);
            if std < min || std > max {
                return Err(ConfigError::DetectorMinStd { std, min, max });
            }
        }
        if self.leave_timeout.is_zero() {
            return Err(ConfigError::Zero("leave_timeout"));
        }
        if self.leave_confirmations == 0 {
            return Err(ConfigError::Zero("leave_confirmations"));
        }
        // Zero graces kept nothing: a dead node's burial lifted at the next garbage collection
        // (it came back from the copies peers still held), and tombstones went before they
        // could spread (deletes travelled as whole-state resets). A zero prior weight judged a
        // peer by its first sample alone and convicted live peers by the thousand.
        for (d, field) in [
            (self.forget_after, "forget_after"),
            (self.tombstone_grace, "tombstone_grace"),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Zero(field));
            }
        }
        if self.detector_prior_weight == 0 {
            return Err(ConfigError::Zero("detector_prior_weight"));
        }
        // A leaving node gossips its heartbeat for up to `leave_timeout`, and peers relay it a
        // few rounds more: expired sooner, it came back as `Joined` and left again, over and
        // over (found by review: 39 such returns in 80 s at a `left_grace` of zero).
        let min_left = self.leave_timeout + self.gossip_interval * 4;
        if self.left_grace < min_left {
            return Err(ConfigError::LeftGraceTooShort {
                left_grace: self.left_grace,
                min: min_left,
            });
        }
        check_plaintext(
            self.keyring.is_some(),
            self.send_plaintext,
            self.accept_plaintext,
        )?;
        if self.max_datagram_size < MIN_DATAGRAM_SIZE {
            return Err(ConfigError::DatagramTooSmall {
                size: self.max_datagram_size,
                min: MIN_DATAGRAM_SIZE,
            });
        }
        if self.max_datagram_size > crate::wire::MAX_DATAGRAM_RECV {
            return Err(ConfigError::DatagramTooLarge {
                size: self.max_datagram_size,
                max: crate::wire::MAX_DATAGRAM_RECV,
            });
        }
        if self.max_frame_size > MAX_FRAME_SIZE {
            return Err(ConfigError::Limit("max_frame_size must be at most 1 GiB"));
        }
        if self.max_frame_size < self.max_datagram_size {
            return Err(ConfigError::FrameSmallerThanDatagram {
                frame: self.max_frame_size,
                datagram: self.max_datagram_size,
            });
        }
        if self.dead_grace < self.gossip_interval * 4 {
            return Err(ConfigError::DeadGraceTooShort {
                dead_grace: self.dead_grace,
                min: self.gossip_interval * 4,
            });
        }
        let l = &self.limits;
        if l.max_key_len == 0 || l.max_key_len > MAX_KEY_LEN_CAP {
            return Err(ConfigError::Limit(
                "limits.max_key_len must be from 1 to 16,384",
            ));
        }
        if l.max_value_len == 0 {
            return Err(ConfigError::Limit("limits.max_value_len must be positive"));
        }
        if l.max_keys_per_node == 0 {
            return Err(ConfigError::Limit(
                "limits.max_keys_per_node must be positive",
            ));
        }
        if l.max_nodes < 2 {
            return Err(ConfigError::Limit("limits.max_nodes must be at least 2"));
        }
        if l.max_state_bytes_per_node < l.max_key_len.saturating_add(l.max_value_len) {
            return Err(ConfigError::Limit(
                "limits.max_state_bytes_per_node must hold one largest key and value",
            ));
        }
        // An entry no frame can carry would stop its node's deltas at it for good: nothing
        // written after it (the leave marker included) would reach any peer.
        let entry = l
            .max_key_len
            .saturating_add(l.max_value_len)
            .saturating_add(ENTRY_FRAMING);
        if entry > self.max_frame_size {
            return Err(ConfigError::EntryLargerThanFrame {
                entry,
                frame: self.max_frame_size,
            });
        }
        // One node's whole state must fit a frame: a reset (a peer's copy replaced whole, when
        // it is too far behind the purged tombstones) cut across frames makes its receiver
        // hear the keys past the cut deleted, then written again as the following exchanges
        // bring them (design.md 5).
        let state = l.frame_for_whole_state();
        if state > self.max_frame_size {
            return Err(ConfigError::StateLargerThanFrame {
                state,
                frame: self.max_frame_size,
            });
        }
        if self.ring_min_members > l.max_nodes {
            return Err(ConfigError::RingMinMembers {
                min: self.ring_min_members,
                max_nodes: l.max_nodes,
            });
        }
        if let Some(ring) = &self.ring {
            ring.validate()
                .map_err(|e| ConfigError::Ring(e.to_string()))?;
            // Every node this one may track must fit one ring at the default weight: a rebuild
            // that cannot fails on every node alike, and each would keep the ring its own
            // history left it with.
            let vnodes = u64::from(ring.vnodes.get()).saturating_mul(l.max_nodes as u64);
            if l.max_nodes > crate::ring::MAX_MEMBERS || vnodes > crate::ring::MAX_VNODES as u64 {
                return Err(ConfigError::Limit(
                    "limits.max_nodes members of ring.vnodes each must fit one ring \
                     (ring::MAX_MEMBERS, ring::MAX_VNODES)",
                ));
            }
        }
        Ok(())
    }
}

/// The `phi_threshold`s accepted. Below 1, a peer is convicted for a silence that happens
/// more than one time in ten; above 50, with the exponential distribution a crashed peer is
/// hardly ever convicted (a threshold of a million kept one alive).
pub(crate) const PHI_THRESHOLD_RANGE: (f64, f64) = (1.0, 50.0);

/// With a keyring, sending plaintext while refusing it makes a node refuse exactly what
/// peers configured alike send it: no cluster forms.
pub(crate) fn check_plaintext(
    keyring: bool,
    send_plaintext: bool,
    accept_plaintext: bool,
) -> Result<(), ConfigError> {
    if keyring && send_plaintext && !accept_plaintext {
        return Err(ConfigError::PlaintextSentNotAccepted);
    }
    Ok(())
}

/// Bytes allowed around one key and value in a stream frame: the codec's header and seal,
/// the message's framing, a node delta's header with the node's identity (a 255-byte name),
/// and the entry's own (about 600 in all).
pub(crate) const ENTRY_FRAMING: usize = 1024;

/// A configuration rule was broken. Nothing was started.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The cluster id is empty or longer than 64 bytes.
    #[error("cluster_id must be 1 to 64 bytes, got {len}")]
    ClusterId {
        /// Its length in bytes.
        len: usize,
    },
    /// A field that must be positive is zero.
    #[error("{0} must be positive")]
    Zero(&'static str),
    /// `detector_window` is below 2 samples (no spread to learn from) or above 1,000,000 (a
    /// window that long would adapt over days; the detector's block sums are sized for at
    /// most this).
    #[error("detector_window must be from 2 to 1,000,000, got {0}")]
    DetectorWindow(usize),
    /// `phi_threshold` is outside 1 to 50, or not a number.
    #[error("phi_threshold must be from 1 to 50, got {0}")]
    PhiThreshold(f64),
    /// `detector_min_std` is below a quarter of `gossip_interval` (live peers would be
    /// convicted for a heartbeat relayed a round late) or above `dead_grace` (a crashed peer
    /// would be convicted only after minutes).
    #[error(
        "detector_min_std {std:?} must be from {min:?} (gossip_interval / 4) to {max:?} (dead_grace)"
    )]
    DetectorMinStd {
        /// The floor given.
        std: Duration,
        /// A quarter of `gossip_interval`.
        min: Duration,
        /// `dead_grace`.
        max: Duration,
    },
    /// `left_grace` is shorter than `leave_timeout` plus four gossip intervals: a peer that
    /// left would expire while its heartbeats still travel, and come back.
    #[error(
        "left_grace {left_grace:?} is below leave_timeout plus four gossip intervals ({min:?})"
    )]
    LeftGraceTooShort {
        /// The grace given.
        left_grace: Duration,
        /// `leave_timeout + 4 × gossip_interval`.
        min: Duration,
    },
    /// With a keyring, `send_plaintext` is set and `accept_plaintext` is not: nodes configured
    /// alike refuse what each other send. Turning encryption on takes `accept_plaintext` with
    /// `send_plaintext` (see their docs).
    #[error("send_plaintext with a keyring needs accept_plaintext too")]
    PlaintextSentNotAccepted,
    /// `max_datagram_size` leaves no room for a useful message.
    #[error("max_datagram_size {size} is below the minimum of {min}")]
    DatagramTooSmall {
        /// Configured size.
        size: usize,
        /// Smallest accepted.
        min: usize,
    },
    /// `max_datagram_size` exceeds what UDP can carry.
    #[error("max_datagram_size {size} is above the maximum of {max}")]
    DatagramTooLarge {
        /// Configured size.
        size: usize,
        /// Largest accepted.
        max: usize,
    },
    /// `max_frame_size` is smaller than `max_datagram_size`.
    #[error("max_frame_size {frame} is smaller than max_datagram_size {datagram}")]
    FrameSmallerThanDatagram {
        /// Configured frame size.
        frame: usize,
        /// Configured datagram size.
        datagram: usize,
    },
    /// A largest key and value (`limits.max_key_len + limits.max_value_len`), with 1 KiB for
    /// the framing around them, do not fit `max_frame_size`: such an entry could never be
    /// sent, and nothing written after it would reach any peer.
    #[error(
        "a largest entry ({entry} bytes with framing) does not fit max_frame_size {frame}; \
         lower limits.max_value_len or raise max_frame_size"
    )]
    EntryLargerThanFrame {
        /// `max_key_len + max_value_len` plus 1 KiB of framing.
        entry: usize,
        /// Configured frame size.
        frame: usize,
    },
    /// One node's whole state at the limits ([`Limits::frame_for_whole_state`]) does not fit
    /// `max_frame_size`: a peer catching up through a reset would take it in pieces, and hear
    /// live keys deleted and written again.
    #[error(
        "a node's whole state at the limits ({state} bytes with framing) does not fit \
         max_frame_size {frame}; lower limits.max_state_bytes_per_node or \
         limits.max_keys_per_node, or raise max_frame_size"
    )]
    StateLargerThanFrame {
        /// [`Limits::frame_for_whole_state`].
        state: usize,
        /// Configured frame size.
        frame: usize,
    },
    /// `dead_grace` is too short to tell a slow peer from a dead one.
    #[error("dead_grace {dead_grace:?} is below four gossip intervals ({min:?})")]
    DeadGraceTooShort {
        /// Configured grace.
        dead_grace: Duration,
        /// Smallest accepted.
        min: Duration,
    },
    /// A duration is longer than [`MAX_DURATION`] (365 days).
    #[error("{field} is longer than {max:?}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// The longest accepted.
        max: Duration,
    },
    /// A limit (a size, a count, the fanout) is zero or out of range.
    #[error("invalid limit: {0}")]
    Limit(&'static str),
    /// `ring_min_members` is above `limits.max_nodes`: no ring could ever be built.
    #[error("ring_min_members {min} is above limits.max_nodes {max_nodes}: no ring could be built")]
    RingMinMembers {
        /// The minimum given.
        min: usize,
        /// `limits.max_nodes`.
        max_nodes: usize,
    },
    /// The ring configuration is invalid.
    #[error("invalid ring config: {0}")]
    Ring(String),
}

/// Longest duration any configuration field accepts: 365 days. Longer ones are refused so
/// that no timer arithmetic can overflow the clock on any platform.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Largest `fanout` accepted (beyond it, per-round arithmetic and allocations lose their
/// bound; real clusters use 3 to 10).
const MAX_FANOUT: usize = 1024;
/// Largest `max_frame_size` accepted: 1 GiB (frames carry a 32-bit length, and stream budgets
/// are multiplied by small counts).
const MAX_FRAME_SIZE: usize = 1 << 30;

/// Longest cluster id, in bytes.
pub(crate) const MAX_CLUSTER_ID_LEN: usize = 64;
/// Largest `detector_window` accepted.
const MAX_DETECTOR_WINDOW: usize = 1_000_000;
/// Smallest `max_datagram_size` accepted.
pub(crate) const MIN_DATAGRAM_SIZE: usize = 512;
/// Highest `max_key_len` accepted (keys travel with a 16-bit length on the wire).
pub(crate) const MAX_KEY_LEN_CAP: usize = 16 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        Config::lan().validate().unwrap();
        Config::wan().validate().unwrap();
        assert_eq!(Config::default(), Config::lan());
    }

    /// A whole state at the limits must fit one frame: the default limits need about 6 MiB of
    /// the default 8 MiB; frames of exactly `frame_for_whole_state` are accepted, one byte
    /// less refused.
    #[test]
    fn a_whole_state_at_the_limits_must_fit_a_frame() {
        let reserved = crate::state::RESERVED_ROOM_BYTES + 1024;
        let d = Limits::default();
        // Keys of 512 bytes take a 3-byte header, values of 1 MiB a 5-byte one, versions 9:
        // 18 bytes a key, for 100,000 keys and the 10 of the reserved keys' room (which may be
        // as long as the user's).
        assert_eq!(
            d.frame_for_whole_state(),
            100_010 * 18 + (4 << 20) + reserved
        );
        let small = Limits {
            max_key_len: 100,
            max_value_len: 200,
            max_keys_per_node: 10,
            max_state_bytes_per_node: 1000,
            ..Limits::default()
        };
        // 2-byte key and value headers: 14 bytes a key.
        assert_eq!(small.frame_for_whole_state(), 20 * 14 + 1000 + reserved);
        // Keys and values shorter than 32 bytes: the user's headers are counted at their
        // limits (a 16-byte key takes a 1-byte string header: 13 bytes a key), the reserved
        // room's at 32 bytes, which a peer's copy may hold whatever the limits (a 2-byte
        // string header: 14 bytes a key). (Found by a review's mutations: counting the room's
        // headers at the user's lengths failed no test.)
        let short = Limits {
            max_key_len: 16,
            max_value_len: 16,
            max_keys_per_node: 10,
            max_state_bytes_per_node: 1000,
            ..Limits::default()
        };
        assert_eq!(
            short.frame_for_whole_state(),
            10 * 13 + 10 * 14 + 1000 + reserved
        );
        let mut c = Config::default();
        c.limits = small;
        c.max_datagram_size = 512;
        c.max_frame_size = c.limits.frame_for_whole_state();
        c.validate().unwrap();
        c.max_frame_size -= 1;
        assert_eq!(
            c.validate(),
            Err(ConfigError::StateLargerThanFrame {
                state: c.max_frame_size + 1,
                frame: c.max_frame_size,
            })
        );
        // The old default (64 MiB a node) with 8 MiB frames is refused.
        let mut c = Config::default();
        c.limits.max_state_bytes_per_node = 64 << 20;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::StateLargerThanFrame { frame, .. }) if frame == 8 << 20
        ));
    }

    #[test]
    fn invalid_fields_give_specific_errors() {
        let c = Config {
            fanout: 0,
            ..Config::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::Zero("fanout")));
        let c = Config {
            max_frame_size: 1000,
            ..Config::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::FrameSmallerThanDatagram { .. })
        ));
        let c = Config {
            max_frame_size: 1 << 20,
            ..Config::default()
        };
        assert_eq!(
            c.validate(),
            Err(ConfigError::EntryLargerThanFrame {
                entry: 512 + (1 << 20) + 1024,
                frame: 1 << 20
            })
        );
        let mut c = Config {
            max_frame_size: 1 << 20,
            ..Config::default()
        };
        c.limits.max_value_len = (1 << 20) - 512 - 1024;
        c.limits.max_state_bytes_per_node = 1 << 20;
        // The largest entry fits; a whole state holding it does not (its key's encoding and
        // the reserved keys come on top).
        assert!(matches!(
            c.validate(),
            Err(ConfigError::StateLargerThanFrame { .. })
        ));
        c.limits.max_value_len -= 1024;
        c.limits.max_keys_per_node = 10;
        c.limits.max_state_bytes_per_node = 512 + c.limits.max_value_len;
        c.validate().unwrap();
        let c = Config {
            cluster_id: "x".repeat(65),
            ..Config::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::ClusterId { len: 65 }));
        let c = Config {
            phi_threshold: f64::NAN,
            ..Config::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::PhiThreshold(_))));
        let c = Config {
            detector_window: 1_000_001,
            ..Config::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::DetectorWindow(1_000_001)));
        let c = Config {
            detector_window: 1_000_000,
            ..Config::default()
        };
        c.validate().unwrap();
    }

    /// A window below 2 is refused with the allowed range: the error said "must be positive"
    /// for a window of 1, which is positive, so a service's log gave nothing to act on.
    #[test]
    fn a_detector_window_below_two_is_refused_with_its_range() {
        for window in [0, 1] {
            let c = Config {
                detector_window: window,
                ..Config::default()
            };
            let e = c.validate().unwrap_err();
            assert_eq!(e, ConfigError::DetectorWindow(window));
            assert_eq!(
                e.to_string(),
                format!("detector_window must be from 2 to 1,000,000, got {window}")
            );
        }
        let c = Config {
            detector_window: 2,
            ..Config::default()
        };
        c.validate().unwrap();
    }

    /// A `ring_min_members` no cluster within `limits.max_nodes` could reach is refused.
    #[test]
    fn a_ring_min_members_above_max_nodes_is_refused() {
        let mut c = Config::default();
        c.ring_min_members = c.limits.max_nodes;
        assert_eq!(c.validate(), Ok(()));
        c.ring_min_members += 1;
        assert_eq!(
            c.validate(),
            Err(ConfigError::RingMinMembers {
                min: 16_385,
                max_nodes: 16_384
            })
        );
    }

    /// Each limit out of range is named alone, with its range: the error said "invalid limit:
    /// max_value_len, max_keys_per_node or max_nodes" for any of three fields, and "invalid
    /// limit: max_key_len" without the range (found by review).
    #[test]
    fn a_limit_out_of_range_is_named_with_its_range() {
        let d = Limits::default();
        let key_len = "limits.max_key_len must be from 1 to 16,384";
        let cases = [
            (
                Limits {
                    max_key_len: 0,
                    ..d.clone()
                },
                key_len,
            ),
            (
                Limits {
                    max_key_len: MAX_KEY_LEN_CAP + 1,
                    ..d.clone()
                },
                key_len,
            ),
            (
                Limits {
                    max_value_len: 0,
                    ..d.clone()
                },
                "limits.max_value_len must be positive",
            ),
            (
                Limits {
                    max_keys_per_node: 0,
                    ..d.clone()
                },
                "limits.max_keys_per_node must be positive",
            ),
            (
                Limits { max_nodes: 1, ..d },
                "limits.max_nodes must be at least 2",
            ),
        ];
        for (limits, message) in cases {
            let c = Config {
                limits,
                ..Config::default()
            };
            let e = c.validate().unwrap_err();
            assert_eq!(e.to_string(), format!("invalid limit: {message}"));
        }
        assert_eq!(MAX_KEY_LEN_CAP, 16_384, "the message states it");
    }

    /// Settings that validated but then broke the node (found by review): a hair-trigger or
    /// disabled detector, a leave that never went out, left peers coming back, a keyed
    /// cluster that could not form.
    #[test]
    fn settings_that_break_the_node_later_are_refused_now() {
        let ok = Config::default();
        let refused = |f: &dyn Fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            c.validate()
        };
        for phi in [0.1, 0.99, 50.01, 1e6, f64::INFINITY, f64::NAN] {
            assert!(
                matches!(
                    refused(&|c| c.phi_threshold = phi),
                    Err(ConfigError::PhiThreshold(_))
                ),
                "phi {phi}"
            );
        }
        for phi in [1.0, 1.5, 50.0] {
            refused(&|c| c.phi_threshold = phi).unwrap();
        }
        let quarter = ok.gossip_interval / 4;
        for std in [
            Duration::ZERO,
            quarter - Duration::from_nanos(1),
            ok.dead_grace + Duration::from_nanos(1),
        ] {
            assert_eq!(
                refused(&|c| c.detector_min_std = Some(std)),
                Err(ConfigError::DetectorMinStd {
                    std,
                    min: quarter,
                    max: ok.dead_grace
                })
            );
        }
        for std in [quarter, ok.dead_grace] {
            refused(&|c| c.detector_min_std = Some(std)).unwrap();
        }
        assert_eq!(
            refused(&|c| c.leave_timeout = Duration::ZERO),
            Err(ConfigError::Zero("leave_timeout"))
        );
        assert_eq!(
            refused(&|c| c.leave_confirmations = 0),
            Err(ConfigError::Zero("leave_confirmations"))
        );
        let min = ok.leave_timeout + ok.gossip_interval * 4;
        assert_eq!(
            refused(&|c| c.left_grace = min - Duration::from_nanos(1)),
            Err(ConfigError::LeftGraceTooShort {
                left_grace: min - Duration::from_nanos(1),
                min
            })
        );
        refused(&|c| c.left_grace = min).unwrap();
        Config::wan().validate().unwrap();
        let key = || Some(crate::crypto::Keyring::new([7; 32]));
        assert_eq!(
            refused(&|c| {
                c.keyring = key();
                c.send_plaintext = true;
            }),
            Err(ConfigError::PlaintextSentNotAccepted)
        );
        refused(&|c| {
            c.keyring = key();
            c.send_plaintext = true;
            c.accept_plaintext = true;
        })
        .unwrap();
        // Without a keyring the flags mean nothing: everything is plaintext.
        refused(&|c| c.send_plaintext = true).unwrap();
    }

    /// Zeros that validated and then broke the node (found by review, measured in the
    /// simulator): a `forget_after` of zero brought a node that died during a partition back
    /// at every node of the other side, a `tombstone_grace` of zero sent deletes as resets of
    /// the owner's whole state (11 to 100 times the stream syncs of a 10-min grace), and a
    /// `detector_prior_weight` of zero convicted live peers by the thousand. A zero
    /// `ring_settle` means no settle and is accepted.
    #[test]
    fn zero_graces_and_prior_weight_are_refused_a_zero_settle_is_not() {
        let with = |f: &dyn Fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            c.validate()
        };
        assert_eq!(
            with(&|c| c.forget_after = Duration::ZERO),
            Err(ConfigError::Zero("forget_after"))
        );
        assert_eq!(
            with(&|c| c.tombstone_grace = Duration::ZERO),
            Err(ConfigError::Zero("tombstone_grace"))
        );
        assert_eq!(
            with(&|c| c.detector_prior_weight = 0),
            Err(ConfigError::Zero("detector_prior_weight"))
        );
        with(&|c| c.forget_after = Duration::from_nanos(1)).unwrap();
        with(&|c| c.tombstone_grace = Duration::from_nanos(1)).unwrap();
        with(&|c| c.detector_prior_weight = 1).unwrap();
        with(&|c| c.ring_settle = Duration::ZERO).unwrap();
    }

    #[test]
    fn every_node_tracked_must_fit_one_ring() {
        let ring = |vnodes: u32| {
            Some(crate::ring::RingConfig {
                vnodes: std::num::NonZeroU32::new(vnodes).unwrap(),
                ..crate::ring::RingConfig::default()
            })
        };
        let with = |vnodes: u32, max_nodes: usize| Config {
            ring: ring(vnodes),
            limits: Limits {
                max_nodes,
                ..Limits::default()
            },
            ..Config::default()
        };
        // 2^21 vnodes for each of 16,384 nodes: 2^35, over the 2^28 a ring holds.
        assert!(matches!(
            with(1 << 21, 16_384).validate(),
            Err(ConfigError::Limit(_))
        ));
        with(1 << 21, 128).validate().unwrap();
        assert!(matches!(
            with(1, crate::ring::MAX_MEMBERS + 1).validate(),
            Err(ConfigError::Limit(_))
        ));
        // Without a ring, nothing to fit.
        let c = Config {
            ring: None,
            ..with(1 << 21, 16_384)
        };
        c.validate().unwrap();
    }

    #[test]
    fn limits_check_a_write_as_the_node_does() {
        use crate::Error;
        let l = Limits {
            max_key_len: 4,
            max_value_len: 10,
            ..Limits::default()
        };
        assert!(l.check_write("abcd", 10).is_ok());
        assert!(matches!(
            l.check_write("", 0),
            Err(Error::KeyLength { len: 0, max: 4 })
        ));
        assert!(matches!(
            l.check_write("abcde", 0),
            Err(Error::KeyLength { len: 5, max: 4 })
        ));
        assert!(matches!(
            l.check_write("abc", 11),
            Err(Error::ValueTooLarge { len: 11, max: 10 })
        ));
        assert!(matches!(
            Limits::default().check_write("tidings:weight", 1),
            Err(Error::ReservedKey)
        ));
        // The node refuses exactly what the check refuses.
        let c = Config {
            limits: l.clone(),
            ..Config::default()
        };
        let now = std::time::Instant::now();
        let id = crate::NodeId::new("n", 1, "127.0.0.1:1".parse().unwrap());
        let mut node = crate::Node::new(id, c, 1, now).unwrap();
        for (k, len) in [("abcd", 10), ("", 0), ("abcde", 1), ("abc", 11)] {
            let value = vec![0u8; len];
            assert_eq!(
                node.set(now, k, value).is_ok(),
                l.check_write(k, len).is_ok(),
                "{k:?}, {len}"
            );
        }
        assert!(node.delete(now, "abcde").is_err());
    }

    #[test]
    fn extreme_numbers_are_refused_not_overflowed() {
        // Each of these panicked (arithmetic overflow) in validation or in the first rounds.
        let mut c = Config {
            fanout: usize::MAX,
            ..Config::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::Limit(_))));
        c.fanout = MAX_FANOUT;
        c.validate().unwrap();
        c.max_frame_size = usize::MAX;
        assert!(matches!(c.validate(), Err(ConfigError::Limit(_))));
        c.max_frame_size = MAX_FRAME_SIZE;
        c.validate().unwrap();
        c.limits.max_value_len = usize::MAX;
        assert!(matches!(c.validate(), Err(ConfigError::Limit(_))));
    }
}
