//! [`RuntimeStats`]: the core's counters plus the runtime's own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::handle::Membership;
use crate::stats::Stats;

/// Counters of a running node: the protocol core's [`Stats`] and what the runtime did with
/// sockets, connections and subscribers. All are totals since start except where noted. Plain
/// numbers, so an exporter (Prometheus, logs) can read them as they are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuntimeStats {
    /// The protocol core's counters (the last ones seen, once the node has stopped).
    pub core: Stats,
    /// Datagram sends on the UDP socket that failed (the datagram is lost; gossip goes on). A
    /// full send buffer is no failure: see `udp_send_dropped`.
    pub udp_send_errors: u64,
    /// `recv_from` calls on the UDP socket that failed.
    pub udp_recv_errors: u64,
    /// TCP connections accepted.
    pub tcp_connections_in: u64,
    /// TCP connections this node opened.
    pub tcp_connections_out: u64,
    /// Outgoing TCP connections that failed or timed out while connecting.
    pub tcp_connect_failures: u64,
    /// TCP connections refused (inbound) or not opened (outbound) because `max_connections`
    /// were already open, or (inbound) `max_connections_per_ip` from the same address.
    pub tcp_connections_refused: u64,
    /// TCP connections open now, each from when it takes its slot (an outbound one while it
    /// connects, too) until it closes (a gauge, not a total).
    pub tcp_connections_open: u64,
    /// TCP connections closed on a read or write error or timeout, or a malformed frame; and
    /// failed `accept` calls on the listener.
    pub tcp_errors: u64,
    /// Frames over `max_frame_size`: announced by a peer (the connection is closed), or made
    /// by this node and not sent.
    pub tcp_frames_oversize: u64,
    /// Outgoing frames dropped: the connection's queue was full, the connection could not be
    /// opened or failed with them still queued, or the destination was an inbound connection
    /// that had already closed.
    pub tcp_frames_dropped: u64,
    /// Bytes of outgoing frames queued on connections or being written now (a gauge): at most
    /// two of the largest frames (`protocol.max_frame_size`) per connection; a frame that
    /// would take a connection past that is dropped and counted in `tcp_frames_dropped`.
    pub tcp_write_queued_bytes: u64,
    /// Events dropped for subscribers whose buffer was full (each such subscriber is told it
    /// lagged).
    pub subscriber_lagged: u64,
    /// DNS resolutions of seeds and of the `dns` name that succeeded.
    pub dns_resolutions: u64,
    /// DNS resolutions that failed, one per name per pass (a pass whose resolver could not be
    /// built fails every name).
    pub dns_failures: u64,
    /// `Joined` events: members first seen.
    pub members_joined: u64,
    /// `Up` events: members seen alive again after being down.
    pub members_up: u64,
    /// `Down` events: members marked down by the failure detector.
    pub members_down: u64,
    /// `Left` events: members that left gracefully.
    pub members_left: u64,
    /// `Expired` events: down or left members forgotten.
    pub members_expired: u64,
    /// `ReadyChanged` events: members that marked themselves ready or not ready.
    pub ready_changes: u64,
    /// `Ownership` events: this node's ownership changed with a ring rebuild.
    pub ownership_changes: u64,
    /// Ring rebuilds for a new member set or new weights, whether or not they moved anything
    /// to or from this node (each costs a few milliseconds of CPU at 1,000 members).
    pub ring_rebuilds: u64,
    /// Timers the driver handled more than 10 ms after their deadline: the node's task waited
    /// to run (a busy tokio runtime or host; on-time wakes come up to a few milliseconds late
    /// from the timer's rounding, and are not counted). Input already queued is read first
    /// (design.md, section 9); a count that keeps growing means the node hears its peers late,
    /// and a starved runtime is the usual cause of false downs.
    pub late_timers: u64,
    /// Warnings that no peer answers: the node had seeds to join through and no live peer for
    /// 10 s, then again at doubling intervals up to 5 min while that lasts (design.md,
    /// section 9). A count that grows means the node is cut off from its cluster: wrong seed
    /// addresses, another `cluster_id` or keyring than its peers, or a firewall.
    pub alone_warnings: u64,
    /// Frames longer than 64 KiB from an address that is neither a known member's advertised
    /// address nor a seed that had to wait for room in the budget such frames share
    /// (design.md, section 8). A count that grows means strangers are holding that budget,
    /// or members send from other addresses than they advertise (NAT).
    pub tcp_frames_waited: u64,
    /// Datagrams dropped because the UDP socket's send buffer stayed full: the node waits
    /// at most 20 ms for room, once until a send gets through again, so a buffer held full
    /// (datagrams queued for unreachable neighbours, a saturated link) cannot stall its
    /// timers and receiving.
    pub udp_send_dropped: u64,
}

/// The runtime's counters, shared by its tasks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) udp_send_errors: AtomicU64,
    pub(crate) udp_recv_errors: AtomicU64,
    pub(crate) tcp_connections_in: AtomicU64,
    pub(crate) tcp_connections_out: AtomicU64,
    pub(crate) tcp_connect_failures: AtomicU64,
    pub(crate) tcp_connections_refused: AtomicU64,
    pub(crate) tcp_connections_open: AtomicU64,
    pub(crate) tcp_errors: AtomicU64,
    pub(crate) tcp_frames_oversize: AtomicU64,
    pub(crate) tcp_frames_dropped: AtomicU64,
    pub(crate) tcp_write_queued_bytes: AtomicU64,
    pub(crate) subscriber_lagged: AtomicU64,
    pub(crate) dns_resolutions: AtomicU64,
    pub(crate) dns_failures: AtomicU64,
    pub(crate) members_joined: AtomicU64,
    pub(crate) members_up: AtomicU64,
    pub(crate) members_down: AtomicU64,
    pub(crate) members_left: AtomicU64,
    pub(crate) members_expired: AtomicU64,
    pub(crate) ready_changes: AtomicU64,
    pub(crate) ownership_changes: AtomicU64,
    pub(crate) ring_rebuilds: AtomicU64,
    pub(crate) late_timers: AtomicU64,
    pub(crate) alone_warnings: AtomicU64,
    pub(crate) tcp_frames_waited: AtomicU64,
    pub(crate) udp_send_dropped: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self, core: Stats) -> RuntimeStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RuntimeStats {
            core,
            udp_send_errors: r(&self.udp_send_errors),
            udp_recv_errors: r(&self.udp_recv_errors),
            tcp_connections_in: r(&self.tcp_connections_in),
            tcp_connections_out: r(&self.tcp_connections_out),
            tcp_connect_failures: r(&self.tcp_connect_failures),
            tcp_connections_refused: r(&self.tcp_connections_refused),
            tcp_connections_open: r(&self.tcp_connections_open),
            tcp_errors: r(&self.tcp_errors),
            tcp_frames_oversize: r(&self.tcp_frames_oversize),
            tcp_frames_dropped: r(&self.tcp_frames_dropped),
            tcp_write_queued_bytes: r(&self.tcp_write_queued_bytes),
            subscriber_lagged: r(&self.subscriber_lagged),
            dns_resolutions: r(&self.dns_resolutions),
            dns_failures: r(&self.dns_failures),
            members_joined: r(&self.members_joined),
            members_up: r(&self.members_up),
            members_down: r(&self.members_down),
            members_left: r(&self.members_left),
            members_expired: r(&self.members_expired),
            ready_changes: r(&self.ready_changes),
            ownership_changes: r(&self.ownership_changes),
            ring_rebuilds: r(&self.ring_rebuilds),
            late_timers: r(&self.late_timers),
            alone_warnings: r(&self.alone_warnings),
            tcp_frames_waited: r(&self.tcp_frames_waited),
            udp_send_dropped: r(&self.udp_send_dropped),
        }
    }
}

/// Adds one to a counter.
pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What the driver publishes for exporters, refreshed about once a second while someone
/// watches it, and once more when the node stops.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Published {
    /// The core's counters.
    pub(crate) core: Stats,
    /// The highest phi over live peers (0 with none).
    pub(crate) phi_max: f64,
    /// Subscriptions open.
    pub(crate) subscribers: u64,
    /// Events queued for subscribers and not read yet, all subscribers together.
    pub(crate) subscriber_queued: u64,
}

/// Everything an exporter reads at once: the latest published snapshot, the runtime's
/// counters as of now, and the membership snapshot.
#[cfg_attr(not(feature = "prometheus"), allow(dead_code))]
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    pub(crate) stats: RuntimeStats,
    pub(crate) phi_max: f64,
    pub(crate) subscribers: u64,
    pub(crate) subscriber_queued: u64,
    pub(crate) membership: Arc<Membership>,
    pub(crate) running: bool,
}
