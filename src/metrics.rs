//! Prometheus metrics of a running node (feature `prometheus`), registered in a registry the
//! application owns: nothing is put in the `prometheus` crate's global default registry.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tidings::metrics::Metrics;
//! use tidings::metrics::prometheus::{Encoder, Registry, TextEncoder};
//! use tidings::runtime::{self, RuntimeConfig};
//!
//! let mut config = RuntimeConfig::lan("node-1");
//! config.advertise = Some("10.0.0.7:7946".parse()?); // the address peers reach this node at
//! let handle = runtime::start(config).await?;
//! let registry = Registry::new();
//! Metrics::register(&handle, &registry)?;
//! // At scrape time:
//! let mut body = Vec::new();
//! TextEncoder::new().encode(&registry.gather(), &mut body)?;
//! # Ok(())
//! # }
//! ```
//!
//! # How values are read
//!
//! [`Metrics`] registers a [`Collector`] per metric: they hold no values of their own between
//! scrapes. At each scrape ([`Registry::gather`]) they read, without waiting on the node's
//! task:
//!
//! - the runtime's counters (sockets, connections, DNS, subscribers, membership events) as of
//!   that moment;
//! - the membership snapshot the node publishes on every change (members by status, ready
//!   members, ring members);
//! - the protocol core's counters, the highest phi and the subscribers' queues, which the
//!   node's task publishes about once a second while a [`Metrics`] for it exists (and once
//!   more when the node stops). These lag by at most about a second.
//!
//! A [`Metrics`] does not keep the node running: once every [`Handle`] is dropped the node
//! leaves as usual, and scrapes go on reporting its last values with `tidings_running 0`.
//!
//! # Metrics
//!
//! Every name starts with `tidings_`; byte counts are payload bytes (without IP, UDP or TCP
//! headers, nor the 4-byte TCP frame length). Counters:
//!
//! | name | labels | what |
//! | --- | --- | --- |
//! | `tidings_udp_datagrams_sent_total` | | UDP datagrams handed to the socket (failed sends are also in `tidings_udp_errors_total`) |
//! | `tidings_udp_datagrams_received_total` | | UDP datagrams received |
//! | `tidings_udp_sent_bytes_total` | | bytes in datagrams sent |
//! | `tidings_udp_received_bytes_total` | | bytes in datagrams received |
//! | `tidings_tcp_frames_sent_total` | | TCP frames handed to the transport (those it then dropped are in `tidings_tcp_frames_dropped_total`) |
//! | `tidings_tcp_frames_received_total` | | TCP frames received |
//! | `tidings_tcp_sent_bytes_total` | | bytes in frames sent |
//! | `tidings_tcp_received_bytes_total` | | bytes in frames received |
//! | `tidings_tcp_connections_total` | `direction="inbound\|outbound"` | TCP connections accepted or opened |
//! | `tidings_packets_dropped_total` | `reason="malformed\|bad_version\|oversized\|foreign_cluster\|auth_failed\|plaintext_refused\|replayed\|own_tag"` | packets (datagrams or frames) dropped on receipt |
//! | `tidings_gossip_rounds_total` | | gossip rounds run |
//! | `tidings_stream_syncs_total` | | exchanges started over TCP |
//! | `tidings_data_syncs_deferred_total` | | TCP exchanges (or requests in answer to one) for state not made: another exchange was already bringing state (usual while much state moves: forming, joins, restarts, many writes at once, large values) |
//! | `tidings_stream_syncs_lost_total` | | TCP exchanges awaited whose connection closed or failed before the answer |
//! | `tidings_deltas_total` | `result="applied\|ignored\|rejected"` | node deltas received (`ignored`: stale or duplicated, usual in a healthy cluster; `rejected`: broke the protocol or a limit) |
//! | `tidings_entries_applied_total` | | key entries received and applied |
//! | `tidings_heartbeats_learned_total` | | newer heartbeats learned |
//! | `tidings_nodes_refused_total` | | nodes dropped because `max_nodes` was reached |
//! | `tidings_pauses_detected_total` | | times this process found itself paused |
//! | `tidings_tombstones_purged_total` | | tombstones purged |
//! | `tidings_oversized_entries_total` | | deltas cut short at an entry too large for a datagram, which goes over TCP (per delta, not per entry: usual whenever such values are written or a node joins) |
//! | `tidings_digests_unreadable_total` | | indexed digests that could not be read: membership changed meanwhile (a few at each join or restart are usual) |
//! | `tidings_digests_malformed_total` | | indexed digests with malformed parts, which were dropped |
//! | `tidings_beats_implausible_total` | | heartbeats sent as their low byte that read further ahead than possible, not learned |
//! | `tidings_identity_conflicts_total` | | peers' copies of this node newer than the node itself: another process under its name and generation |
//! | `tidings_identity_rebases_total` | | times this node moved its state past such a copy, so that peers replace it |
//! | `tidings_replies_limited_total` | | answers to a datagram from a source not known as its sender's, cut to three times its size, and stream exchanges with such a source not started (a few at each join are usual) |
//! | `tidings_membership_events_total` | `event="joined\|up\|down\|left\|expired\|ready_changed"` | membership events |
//! | `tidings_ownership_changes_total` | | ring rebuilds that changed this node's ownership (`Ownership` events) |
//! | `tidings_ring_rebuilds_total` | | ring rebuilds for a new member set or weights, whether or not they moved anything here |
//! | `tidings_late_timers_total` | | timers handled more than 10 ms late: the node's task waited to run |
//! | `tidings_alone_warnings_total` | | warnings that no peer answers this node, which has seeds: 10 s alone, then at doubling intervals up to 5 min |
//! | `tidings_udp_errors_total` | `op="send\|receive"` | failed socket calls |
//! | `tidings_udp_send_dropped_total` | | datagrams dropped because the send buffer stayed full (the node does not wait for it) |
//! | `tidings_tcp_connect_failures_total` | | outgoing connections that failed or timed out |
//! | `tidings_tcp_connections_refused_total` | | connections refused: `max_connections` open, or `max_connections_per_ip` from one address |
//! | `tidings_tcp_errors_total` | | connections closed on an error or timeout, and failed accepts |
//! | `tidings_tcp_frames_oversize_total` | | frames over `max_frame_size`, received or not sent |
//! | `tidings_tcp_frames_dropped_total` | | outgoing frames dropped |
//! | `tidings_tcp_frames_waited_total` | | frames over 64 KiB from addresses neither members nor seeds that waited for room in the budget they share |
//! | `tidings_subscriber_lagged_events_total` | | events dropped for subscribers that fell behind |
//! | `tidings_dns_resolutions_total` | `result="success\|failure"` | DNS resolutions of seeds |
//!
//! Gauges:
//!
//! | name | labels | what |
//! | --- | --- | --- |
//! | `tidings_members` | `status="alive\|down\|left"` | known members, this node included |
//! | `tidings_members_ready` | | live members marked ready |
//! | `tidings_ring_members` | | members on the ownership ring |
//! | `tidings_ready` | | 1 if this node is alive and marked ready, else 0 |
//! | `tidings_running` | | 1 while the node runs, 0 once it stopped |
//! | `tidings_peer_phi_max` | | highest failure-detector phi over live peers (0 with none) |
//! | `tidings_tcp_connections_open` | | TCP connections open |
//! | `tidings_tcp_write_queued_bytes` | | bytes of outgoing frames queued or being written, at most two of the largest frames per connection |
//! | `tidings_subscribers` | | event subscriptions open |
//! | `tidings_subscriber_queued_events` | | events queued for subscribers, not read yet |
//! | `tidings_udp_max_datagram_bytes` | | largest datagram sent |
//! | `tidings_local_health` | | local health penalty, 0 to 8: this node's rounds ran late, so it waits up to `1 + penalty` times longer before convicting a peer |
//! | `tidings_superseded` | | 1 once a newer incarnation of this node's name replaced it (the node then stops), else 0 |
//!
//! # Several nodes in one registry
//!
//! Give each its own constant labels with [`Metrics::with_const_labels`], e.g.
//! `[("node", "a")]`, and register each with [`Metrics::register_in`]; two [`Metrics`] with
//! the same labels cannot share a registry (the registry refuses the second with
//! [`prometheus::Error::AlreadyReg`]).
//!
//! Each metric is a collector of its own, not all of a node's metrics one collector, because
//! a registry tells collectors apart by the sum of their metrics' hashes (FNV-1a of the name
//! and constant label values), and for label values one character apart those sums cancel
//! out often: nodes `s-3` and `s-5` collided, and the registry refused the second as already
//! registered.

use std::sync::{Mutex, PoisonError};

#[doc(no_inline)]
pub use prometheus;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, GaugeVec, IntCounter, IntCounterVec, Opts, Registry};

use crate::node::MemberStatus;
use crate::runtime::{Handle, Observer, Sample};

/// Reads a counter from a sample.
type ReadCount = fn(&Sample) -> u64;
/// Reads a gauge from a sample.
type ReadValue = fn(&Sample) -> f64;

/// A metric family: its name, help, label name (empty for none) and one reader per series
/// (label value, reader).
struct Spec<R: 'static> {
    name: &'static str,
    help: &'static str,
    label: &'static str,
    series: &'static [(&'static str, R)],
}

/// A family with a single, unlabelled series.
const fn one<R>(
    name: &'static str,
    help: &'static str,
    series: &'static [(&'static str, R)],
) -> Spec<R> {
    Spec {
        name,
        help,
        label: "",
        series,
    }
}

const COUNTERS: &[Spec<ReadCount>] = &[
    one(
        "tidings_udp_datagrams_sent_total",
        "UDP datagrams handed to the socket (failed sends are also counted as UDP errors).",
        &[("", |s| s.stats.core.tx_datagrams)],
    ),
    one(
        "tidings_udp_datagrams_received_total",
        "UDP datagrams received.",
        &[("", |s| s.stats.core.rx_datagrams)],
    ),
    one(
        "tidings_udp_sent_bytes_total",
        "Payload bytes in UDP datagrams handed to the socket.",
        &[("", |s| s.stats.core.tx_datagram_bytes)],
    ),
    one(
        "tidings_udp_received_bytes_total",
        "Payload bytes in UDP datagrams received.",
        &[("", |s| s.stats.core.rx_datagram_bytes)],
    ),
    one(
        "tidings_tcp_frames_sent_total",
        "TCP frames handed to the transport (those it dropped are also counted as dropped).",
        &[("", |s| s.stats.core.tx_frames)],
    ),
    one(
        "tidings_tcp_frames_received_total",
        "TCP frames received.",
        &[("", |s| s.stats.core.rx_frames)],
    ),
    one(
        "tidings_tcp_sent_bytes_total",
        "Payload bytes in TCP frames handed to the transport (without the length prefix).",
        &[("", |s| s.stats.core.tx_frame_bytes)],
    ),
    one(
        "tidings_tcp_received_bytes_total",
        "Payload bytes in TCP frames received (without the length prefix).",
        &[("", |s| s.stats.core.rx_frame_bytes)],
    ),
    Spec {
        name: "tidings_tcp_connections_total",
        help: "TCP connections accepted (inbound) or opened (outbound).",
        label: "direction",
        series: &[
            ("inbound", |s| s.stats.tcp_connections_in),
            ("outbound", |s| s.stats.tcp_connections_out),
        ],
    },
    Spec {
        name: "tidings_packets_dropped_total",
        help: "Packets (datagrams or frames) dropped on receipt, by reason.",
        label: "reason",
        series: &[
            ("malformed", |s| s.stats.core.rx_malformed),
            ("bad_version", |s| s.stats.core.rx_bad_version),
            ("oversized", |s| s.stats.core.rx_oversized),
            ("foreign_cluster", |s| s.stats.core.rx_foreign_cluster),
            ("auth_failed", |s| s.stats.core.rx_auth_failed),
            ("plaintext_refused", |s| s.stats.core.rx_plaintext_refused),
            ("replayed", |s| s.stats.core.rx_replayed),
            ("own_tag", |s| s.stats.core.rx_own_tag),
        ],
    },
    one(
        "tidings_gossip_rounds_total",
        "Gossip rounds run.",
        &[("", |s| s.stats.core.gossip_rounds)],
    ),
    one(
        "tidings_stream_syncs_total",
        "State exchanges started over TCP.",
        &[("", |s| s.stats.core.stream_syncs)],
    ),
    one(
        "tidings_data_syncs_deferred_total",
        "TCP exchanges (or requests in answer to one) not made: another was already bringing state (usual while much state moves).",
        &[("", |s| s.stats.core.data_syncs_deferred)],
    ),
    one(
        "tidings_stream_syncs_lost_total",
        "TCP exchanges awaited whose connection closed or failed before the answer.",
        &[("", |s| s.stats.core.stream_syncs_lost)],
    ),
    Spec {
        name: "tidings_deltas_total",
        help: "Node deltas received: applied, ignored (stale or duplicated) or rejected.",
        label: "result",
        series: &[
            ("applied", |s| s.stats.core.deltas_applied),
            ("ignored", |s| s.stats.core.deltas_ignored),
            ("rejected", |s| s.stats.core.deltas_rejected),
        ],
    },
    one(
        "tidings_entries_applied_total",
        "Key entries received from peers and applied.",
        &[("", |s| s.stats.core.entries_applied)],
    ),
    one(
        "tidings_heartbeats_learned_total",
        "Heartbeats learned (newer than the one held).",
        &[("", |s| s.stats.core.heartbeats_learned)],
    ),
    one(
        "tidings_nodes_refused_total",
        "Nodes dropped because max_nodes was reached.",
        &[("", |s| s.stats.core.nodes_refused)],
    ),
    one(
        "tidings_pauses_detected_total",
        "Times this process found itself paused and forgave its peers' silence.",
        &[("", |s| s.stats.core.pauses_detected)],
    ),
    one(
        "tidings_tombstones_purged_total",
        "Tombstones of deleted keys purged.",
        &[("", |s| s.stats.core.tombstones_purged)],
    ),
    one(
        "tidings_oversized_entries_total",
        "Deltas cut short at an entry too large for any datagram, which goes over TCP instead (per delta, not per entry).",
        &[("", |s| s.stats.core.oversized_entries)],
    ),
    one(
        "tidings_digests_unreadable_total",
        "Indexed digests dropped because membership changed before they arrived.",
        &[("", |s| s.stats.core.digests_unreadable)],
    ),
    one(
        "tidings_digests_malformed_total",
        "Indexed digests with malformed parts (dropped; the rest of the message was used).",
        &[("", |s| s.stats.core.digests_malformed)],
    ),
    one(
        "tidings_beats_implausible_total",
        "Heartbeats sent as their low byte that read further ahead than the node can have moved: not learned.",
        &[("", |s| s.stats.core.beats_implausible)],
    ),
    one(
        "tidings_identity_conflicts_total",
        "Peers' copies of this node newer than the node itself: another process runs under its name and generation.",
        &[("", |s| s.stats.core.identity_conflicts)],
    ),
    one(
        "tidings_identity_rebases_total",
        "Times this node moved its versions and heartbeat past a copy of it that peers held, so that they replace it.",
        &[("", |s| s.stats.core.identity_rebases)],
    ),
    one(
        "tidings_replies_limited_total",
        "Answers to a datagram from a source not known as its sender's, cut to three times its size, and stream exchanges with such a source not started.",
        &[("", |s| s.stats.core.replies_limited)],
    ),
    Spec {
        name: "tidings_membership_events_total",
        help: "Membership events seen by this node.",
        label: "event",
        series: &[
            ("joined", |s| s.stats.members_joined),
            ("up", |s| s.stats.members_up),
            ("down", |s| s.stats.members_down),
            ("left", |s| s.stats.members_left),
            ("expired", |s| s.stats.members_expired),
            ("ready_changed", |s| s.stats.ready_changes),
        ],
    },
    one(
        "tidings_ownership_changes_total",
        "Ring rebuilds that changed this node's key ownership.",
        &[("", |s| s.stats.ownership_changes)],
    ),
    one(
        "tidings_ring_rebuilds_total",
        "Ring rebuilds for a new member set or weights, whether or not they moved keys here.",
        &[("", |s| s.stats.ring_rebuilds)],
    ),
    one(
        "tidings_late_timers_total",
        "Timers handled more than 10 ms after their deadline: the node's task waited to run.",
        &[("", |s| s.stats.late_timers)],
    ),
    one(
        "tidings_alone_warnings_total",
        "Warnings that no peer answers this node although it has seeds to join through.",
        &[("", |s| s.stats.alone_warnings)],
    ),
    one(
        "tidings_tcp_frames_waited_total",
        "Frames over 64 KiB from addresses neither members nor seeds that waited for room.",
        &[("", |s| s.stats.tcp_frames_waited)],
    ),
    Spec {
        name: "tidings_udp_errors_total",
        help: "UDP socket calls that failed.",
        label: "op",
        series: &[
            ("send", |s| s.stats.udp_send_errors),
            ("receive", |s| s.stats.udp_recv_errors),
        ],
    },
    one(
        "tidings_udp_send_dropped_total",
        "Datagrams dropped because the UDP send buffer stayed full; the node does not wait for room.",
        &[("", |s| s.stats.udp_send_dropped)],
    ),
    one(
        "tidings_tcp_connect_failures_total",
        "Outgoing TCP connections that failed or timed out while connecting.",
        &[("", |s| s.stats.tcp_connect_failures)],
    ),
    one(
        "tidings_tcp_connections_refused_total",
        "TCP connections refused or not opened because max_connections were open, or max_connections_per_ip from one address.",
        &[("", |s| s.stats.tcp_connections_refused)],
    ),
    one(
        "tidings_tcp_errors_total",
        "TCP connections closed on a read or write error or timeout, or a malformed frame; failed accepts.",
        &[("", |s| s.stats.tcp_errors)],
    ),
    one(
        "tidings_tcp_frames_oversize_total",
        "TCP frames over max_frame_size: received (the connection is closed) or refused for sending.",
        &[("", |s| s.stats.tcp_frames_oversize)],
    ),
    one(
        "tidings_tcp_frames_dropped_total",
        "Outgoing TCP frames dropped: queue full, connection failed or already closed.",
        &[("", |s| s.stats.tcp_frames_dropped)],
    ),
    one(
        "tidings_subscriber_lagged_events_total",
        "Events dropped for subscribers whose buffer was full.",
        &[("", |s| s.stats.subscriber_lagged)],
    ),
    Spec {
        name: "tidings_dns_resolutions_total",
        help: "DNS resolutions of seed names, by result.",
        label: "result",
        series: &[
            ("success", |s| s.stats.dns_resolutions),
            ("failure", |s| s.stats.dns_failures),
        ],
    },
];

const GAUGES: &[Spec<ReadValue>] = &[
    Spec {
        name: "tidings_members",
        help: "Known members by status, this node included.",
        label: "status",
        series: &[
            ("alive", |s| members(s, MemberStatus::Alive)),
            ("down", |s| members(s, MemberStatus::Down)),
            ("left", |s| members(s, MemberStatus::Left)),
        ],
    },
    one(
        "tidings_members_ready",
        "Live members that marked themselves ready, this node included.",
        &[("", |s| s.membership.ready().count() as f64)],
    ),
    one(
        "tidings_ring_members",
        "Members on the key ownership ring.",
        &[("", |s| s.membership.ring.num_members() as f64)],
    ),
    one(
        "tidings_ready",
        "1 if this node is alive and marked ready in its own view, else 0.",
        &[("", |s| flag(is_ready(s)))],
    ),
    one(
        "tidings_running",
        "1 while the node runs, 0 once it has stopped.",
        &[("", |s| flag(s.running))],
    ),
    one(
        "tidings_peer_phi_max",
        "Highest failure-detector suspicion (phi) over live peers; 0 with none.",
        &[("", |s| s.phi_max)],
    ),
    one(
        "tidings_tcp_write_queued_bytes",
        "Bytes of outgoing TCP frames queued or being written.",
        &[("", |s| s.stats.tcp_write_queued_bytes as f64)],
    ),
    one(
        "tidings_tcp_connections_open",
        "TCP connections open, inbound and outbound.",
        &[("", |s| s.stats.tcp_connections_open as f64)],
    ),
    one(
        "tidings_subscribers",
        "Event subscriptions open.",
        &[("", |s| s.subscribers as f64)],
    ),
    one(
        "tidings_subscriber_queued_events",
        "Events queued for subscribers and not read yet, all subscribers together.",
        &[("", |s| s.subscriber_queued as f64)],
    ),
    one(
        "tidings_udp_max_datagram_bytes",
        "Largest UDP datagram sent, in bytes.",
        &[("", |s| s.stats.core.max_datagram as f64)],
    ),
    one(
        "tidings_local_health",
        "Local health penalty (0 to 8): age limits are multiplied by 1 + this before convicting.",
        &[("", |s| s.stats.core.local_health as f64)],
    ),
    one(
        "tidings_superseded",
        "1 once a newer incarnation of this node's name replaced it, else 0.",
        &[("", |s| s.stats.core.superseded as f64)],
    ),
];

fn members(s: &Sample, status: MemberStatus) -> f64 {
    s.membership
        .members
        .iter()
        .filter(|m| m.status == status)
        .count() as f64
}

fn is_ready(s: &Sample) -> bool {
    s.running
        && s.membership
            .member(&s.membership.local.name)
            .is_some_and(|m| m.status == MemberStatus::Alive && m.ready)
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// The Prometheus metrics of one node, read from the node's counters and membership at scrape
/// time (see the [module documentation](self) for the list).
///
/// Cheap to clone; clones export the same values. Register it once per registry, with
/// [`Metrics::register`] or [`Metrics::register_in`].
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: std::sync::Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    source: Observer,
    /// Each counter metric, with its series and their readers.
    counters: Vec<(IntCounterVec, Vec<(IntCounter, ReadCount)>)>,
    /// Each gauge metric, likewise.
    gauges: Vec<(GaugeVec, Vec<(Gauge, ReadValue)>)>,
    /// Serializes scrapes: each brings the counters up to date, then reads them.
    scrape: Mutex<()>,
}

/// One metric of a node's [`Metrics`], registered as a collector of its own (see "Several
/// nodes in one registry" in the module documentation).
#[derive(Clone, Debug)]
struct Family {
    inner: std::sync::Arc<Inner>,
    which: Which,
}

/// Which metric a [`Family`] is, by its index in `Inner`.
#[derive(Clone, Copy, Debug)]
enum Which {
    Counter(usize),
    Gauge(usize),
}

impl Metrics {
    /// The metrics of the node behind `handle`, not registered anywhere yet.
    ///
    /// Fails only if a metric cannot be described (it cannot with these names).
    pub fn new(handle: &Handle) -> Result<Self, prometheus::Error> {
        Self::with_const_labels(handle, std::iter::empty::<(String, String)>())
    }

    /// Like [`Metrics::new`], with constant labels added to every series, e.g.
    /// `[("node", "a")]` to export several nodes of one process through one registry.
    ///
    /// Fails if a label name is invalid or reserved (starts with `__`), or is one of the
    /// labels used by the metrics themselves (`direction`, `reason`, `result`, `event`, `op`,
    /// `status`).
    pub fn with_const_labels<K, V>(
        handle: &Handle,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, prometheus::Error>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let labels: Vec<(String, String)> = labels
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let opts = |name: &str, help: &str| {
            labels
                .iter()
                .fold(Opts::new(name, help), |o, (k, v)| o.const_label(k, v))
        };
        let names = |spec_label: &'static str| -> Vec<&'static str> {
            if spec_label.is_empty() {
                Vec::new()
            } else {
                vec![spec_label]
            }
        };
        let values = |value: &'static str| -> Vec<&'static str> {
            if value.is_empty() {
                Vec::new()
            } else {
                vec![value]
            }
        };
        let mut counters = Vec::with_capacity(COUNTERS.len());
        for spec in COUNTERS {
            let vec = IntCounterVec::new(opts(spec.name, spec.help), &names(spec.label))?;
            let series = spec
                .series
                .iter()
                .map(|(value, read)| Ok((vec.get_metric_with_label_values(&values(value))?, *read)))
                .collect::<Result<_, prometheus::Error>>()?;
            counters.push((vec, series));
        }
        let mut gauges = Vec::with_capacity(GAUGES.len());
        for spec in GAUGES {
            let vec = GaugeVec::new(opts(spec.name, spec.help), &names(spec.label))?;
            let series = spec
                .series
                .iter()
                .map(|(value, read)| Ok((vec.get_metric_with_label_values(&values(value))?, *read)))
                .collect::<Result<_, prometheus::Error>>()?;
            gauges.push((vec, series));
        }
        Ok(Self {
            inner: std::sync::Arc::new(Inner {
                source: handle.observer(),
                counters,
                gauges,
                scrape: Mutex::new(()),
            }),
        })
    }

    /// Creates the metrics of the node behind `handle` and registers them in `registry`.
    ///
    /// Fails with [`prometheus::Error::AlreadyReg`] if metrics with the same names and
    /// constant labels are already registered there (for example, another node's: use
    /// [`Metrics::with_const_labels`] and [`Metrics::register_in`] then).
    pub fn register(handle: &Handle, registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self::new(handle)?;
        metrics.register_in(registry)?;
        Ok(metrics)
    }

    /// Registers these metrics in `registry`: all of them, or, on an error, none.
    ///
    /// Fails with [`prometheus::Error::AlreadyReg`] if metrics with the same names and
    /// constant labels are already registered there.
    pub fn register_in(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        let families = self.families();
        for (i, family) in families.iter().enumerate() {
            if let Err(e) = registry.register(Box::new(family.clone())) {
                for done in &families[..i] {
                    // Registered just above: removing it cannot fail.
                    let _ = registry.unregister(Box::new(done.clone()));
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Removes these metrics from `registry` (every one registered there; the first error,
    /// if any, is returned after trying them all).
    pub fn unregister(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        let mut result = Ok(());
        for family in self.families() {
            let r = registry.unregister(Box::new(family));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }

    /// One collector per metric.
    fn families(&self) -> Vec<Family> {
        let counters = (0..self.inner.counters.len()).map(Which::Counter);
        let gauges = (0..self.inner.gauges.len()).map(Which::Gauge);
        counters
            .chain(gauges)
            .map(|which| Family {
                inner: std::sync::Arc::clone(&self.inner),
                which,
            })
            .collect()
    }

    /// The name of the node these metrics are about.
    pub fn node_name(&self) -> &str {
        &self.inner.source.id().name
    }
}

impl Collector for Family {
    fn desc(&self) -> Vec<&Desc> {
        match self.which {
            Which::Counter(i) => self.inner.counters[i].0.desc(),
            Which::Gauge(i) => self.inner.gauges[i].0.desc(),
        }
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let inner = &*self.inner;
        let _scrape = inner.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        let sample = inner.source.sample();
        match self.which {
            Which::Counter(i) => {
                let (vec, series) = &inner.counters[i];
                for (counter, read) in series {
                    // Counters only grow; bring the exported one up to the node's.
                    let (now, exported) = (read(&sample), counter.get());
                    if now > exported {
                        counter.inc_by(now - exported);
                    }
                }
                vec.collect()
            }
            Which::Gauge(i) => {
                let (vec, series) = &inner.gauges[i];
                for (gauge, read) in series {
                    gauge.set(read(&sample));
                }
                vec.collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = std::collections::BTreeSet::new();
        for (name, counter) in COUNTERS
            .iter()
            .map(|s| (s.name, true))
            .chain(GAUGES.iter().map(|s| (s.name, false)))
        {
            assert!(seen.insert(name), "{name} twice");
            assert!(name.starts_with("tidings_"), "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
            assert_eq!(name.ends_with("_total"), counter, "{name}");
        }
        for spec in COUNTERS {
            assert_eq!(
                spec.label.is_empty(),
                spec.series.len() == 1,
                "{}",
                spec.name
            );
        }
        for spec in GAUGES {
            assert_eq!(
                spec.label.is_empty(),
                spec.series.len() == 1,
                "{}",
                spec.name
            );
        }
    }

    use std::collections::BTreeMap;
    use std::sync::Arc;

    use crate::NodeId;
    use crate::node::Member;
    use crate::ring::{Ring, RingConfig};
    use crate::runtime::{Membership, RuntimeStats};
    use crate::stats::Stats;

    /// A sample in which every field a series could read has a value of its own, so that a
    /// series reading the wrong field (or two swapped label values) changes the result.
    /// `me_ready` and `running` drive `tidings_ready`.
    fn distinct_sample(me_ready: bool, running: bool) -> Sample {
        let core = Stats {
            tx_datagrams: 1001,
            tx_datagram_bytes: 1002,
            tx_frames: 1003,
            tx_frame_bytes: 1004,
            rx_datagrams: 1005,
            rx_datagram_bytes: 1006,
            rx_frames: 1007,
            rx_frame_bytes: 1008,
            max_datagram: 1009,
            rx_malformed: 1010,
            rx_bad_version: 1011,
            rx_foreign_cluster: 1012,
            rx_auth_failed: 1013,
            rx_plaintext_refused: 1014,
            rx_replayed: 1015,
            rx_oversized: 1016,
            rx_own_tag: 1017,
            gossip_rounds: 1018,
            stream_syncs: 1019,
            data_syncs_deferred: 1020,
            stream_syncs_lost: 1021,
            deltas_applied: 1022,
            deltas_ignored: 1023,
            deltas_rejected: 1024,
            entries_applied: 1025,
            heartbeats_learned: 1026,
            ages_not_learned: 1027,
            nodes_refused: 1028,
            pauses_detected: 1029,
            downs: 1030,
            local_health: 7,
            superseded: 1,
            tombstones_purged: 1031,
            oversized_entries: 1032,
            digests_unreadable: 1033,
            digests_malformed: 1034,
            beats_implausible: 1035,
            identity_conflicts: 1036,
            identity_rebases: 1037,
            replies_limited: 1038,
        };
        let stats = RuntimeStats {
            core,
            udp_send_errors: 2001,
            udp_recv_errors: 2002,
            tcp_connections_in: 2003,
            tcp_connections_out: 2004,
            tcp_connect_failures: 2005,
            tcp_connections_refused: 2006,
            tcp_connections_open: 2007,
            tcp_errors: 2008,
            tcp_frames_oversize: 2009,
            tcp_frames_dropped: 2010,
            tcp_write_queued_bytes: 2011,
            subscriber_lagged: 2012,
            dns_resolutions: 2013,
            dns_failures: 2014,
            members_joined: 2015,
            members_up: 2016,
            members_down: 2017,
            members_left: 2018,
            members_expired: 2019,
            ready_changes: 2020,
            ownership_changes: 2021,
            ring_rebuilds: 2022,
            late_timers: 2023,
            alone_warnings: 2024,
            tcp_frames_waited: 2025,
            udp_send_dropped: 2026,
        };
        // 6 alive (4 of them ready), 3 down, 2 left; 5 on the ring.
        let addr: std::net::SocketAddr = "127.0.0.1:7946".parse().unwrap();
        let member = |name: &str, status, ready| Member {
            id: NodeId::new(name, 1, addr),
            status,
            ready,
        };
        let members = vec![
            member("me", MemberStatus::Alive, me_ready),
            member("a1", MemberStatus::Alive, true),
            member("a2", MemberStatus::Alive, true),
            member("a3", MemberStatus::Alive, true),
            member("a4", MemberStatus::Alive, !me_ready),
            member("a5", MemberStatus::Alive, false),
            member("d1", MemberStatus::Down, true),
            member("d2", MemberStatus::Down, true),
            member("d3", MemberStatus::Down, false),
            member("l1", MemberStatus::Left, true),
            member("l2", MemberStatus::Left, false),
        ];
        let ring = Ring::new(RingConfig::default(), ["me", "a1", "a2", "a3", "a4"]).unwrap();
        let membership = Membership::new(0, NodeId::new("me", 1, addr), members, Arc::new(ring));
        Sample {
            stats,
            phi_max: 2.5,
            subscribers: 11,
            subscriber_queued: 13,
            membership: Arc::new(membership),
            running,
        }
    }

    /// Every series, keyed `name{label="value"}`, as read from `s`.
    fn read_all(s: &Sample) -> BTreeMap<String, f64> {
        let key = |name: &str, label: &str, value: &str| {
            if label.is_empty() {
                name.to_owned()
            } else {
                format!("{name}{{{label}=\"{value}\"}}")
            }
        };
        let mut out = BTreeMap::new();
        for spec in COUNTERS {
            for (value, read) in spec.series {
                out.insert(key(spec.name, spec.label, value), read(s) as f64);
            }
        }
        for spec in GAUGES {
            for (value, read) in spec.series {
                out.insert(key(spec.name, spec.label, value), read(s));
            }
        }
        out
    }

    /// Each documented series reads the counter or gauge its documentation names: a wrong
    /// field, a swapped label value or a wrong label name changes one of these values
    /// (integration tests only check that counters move, which all of them do).
    #[test]
    fn every_series_reads_its_own_field() {
        let s = distinct_sample(true, true);
        let want: BTreeMap<String, f64> = [
            ("tidings_udp_datagrams_sent_total", 1001.0),
            ("tidings_udp_datagrams_received_total", 1005.0),
            ("tidings_udp_sent_bytes_total", 1002.0),
            ("tidings_udp_received_bytes_total", 1006.0),
            ("tidings_tcp_frames_sent_total", 1003.0),
            ("tidings_tcp_frames_received_total", 1007.0),
            ("tidings_tcp_sent_bytes_total", 1004.0),
            ("tidings_tcp_received_bytes_total", 1008.0),
            (
                "tidings_tcp_connections_total{direction=\"inbound\"}",
                2003.0,
            ),
            (
                "tidings_tcp_connections_total{direction=\"outbound\"}",
                2004.0,
            ),
            (
                "tidings_packets_dropped_total{reason=\"malformed\"}",
                1010.0,
            ),
            (
                "tidings_packets_dropped_total{reason=\"bad_version\"}",
                1011.0,
            ),
            (
                "tidings_packets_dropped_total{reason=\"oversized\"}",
                1016.0,
            ),
            (
                "tidings_packets_dropped_total{reason=\"foreign_cluster\"}",
                1012.0,
            ),
            (
                "tidings_packets_dropped_total{reason=\"auth_failed\"}",
                1013.0,
            ),
            (
                "tidings_packets_dropped_total{reason=\"plaintext_refused\"}",
                1014.0,
            ),
            ("tidings_packets_dropped_total{reason=\"replayed\"}", 1015.0),
            ("tidings_packets_dropped_total{reason=\"own_tag\"}", 1017.0),
            ("tidings_gossip_rounds_total", 1018.0),
            ("tidings_stream_syncs_total", 1019.0),
            ("tidings_data_syncs_deferred_total", 1020.0),
            ("tidings_stream_syncs_lost_total", 1021.0),
            ("tidings_deltas_total{result=\"applied\"}", 1022.0),
            ("tidings_deltas_total{result=\"ignored\"}", 1023.0),
            ("tidings_deltas_total{result=\"rejected\"}", 1024.0),
            ("tidings_entries_applied_total", 1025.0),
            ("tidings_heartbeats_learned_total", 1026.0),
            ("tidings_nodes_refused_total", 1028.0),
            ("tidings_pauses_detected_total", 1029.0),
            ("tidings_tombstones_purged_total", 1031.0),
            ("tidings_oversized_entries_total", 1032.0),
            ("tidings_digests_unreadable_total", 1033.0),
            ("tidings_digests_malformed_total", 1034.0),
            ("tidings_beats_implausible_total", 1035.0),
            ("tidings_identity_conflicts_total", 1036.0),
            ("tidings_identity_rebases_total", 1037.0),
            ("tidings_replies_limited_total", 1038.0),
            ("tidings_membership_events_total{event=\"joined\"}", 2015.0),
            ("tidings_membership_events_total{event=\"up\"}", 2016.0),
            ("tidings_membership_events_total{event=\"down\"}", 2017.0),
            ("tidings_membership_events_total{event=\"left\"}", 2018.0),
            ("tidings_membership_events_total{event=\"expired\"}", 2019.0),
            (
                "tidings_membership_events_total{event=\"ready_changed\"}",
                2020.0,
            ),
            ("tidings_ownership_changes_total", 2021.0),
            ("tidings_ring_rebuilds_total", 2022.0),
            ("tidings_late_timers_total", 2023.0),
            ("tidings_alone_warnings_total", 2024.0),
            ("tidings_tcp_frames_waited_total", 2025.0),
            ("tidings_udp_errors_total{op=\"send\"}", 2001.0),
            ("tidings_udp_errors_total{op=\"receive\"}", 2002.0),
            ("tidings_udp_send_dropped_total", 2026.0),
            ("tidings_tcp_connect_failures_total", 2005.0),
            ("tidings_tcp_connections_refused_total", 2006.0),
            ("tidings_tcp_errors_total", 2008.0),
            ("tidings_tcp_frames_oversize_total", 2009.0),
            ("tidings_tcp_frames_dropped_total", 2010.0),
            ("tidings_subscriber_lagged_events_total", 2012.0),
            ("tidings_dns_resolutions_total{result=\"success\"}", 2013.0),
            ("tidings_dns_resolutions_total{result=\"failure\"}", 2014.0),
            // Gauges.
            ("tidings_members{status=\"alive\"}", 6.0),
            ("tidings_members{status=\"down\"}", 3.0),
            ("tidings_members{status=\"left\"}", 2.0),
            ("tidings_members_ready", 4.0),
            ("tidings_ring_members", 5.0),
            ("tidings_ready", 1.0),
            ("tidings_running", 1.0),
            ("tidings_peer_phi_max", 2.5),
            ("tidings_tcp_connections_open", 2007.0),
            ("tidings_tcp_write_queued_bytes", 2011.0),
            ("tidings_subscribers", 11.0),
            ("tidings_subscriber_queued_events", 13.0),
            ("tidings_udp_max_datagram_bytes", 1009.0),
            ("tidings_local_health", 7.0),
            ("tidings_superseded", 1.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(read_all(&s), want);

        // `tidings_ready` needs this node both running and marked ready.
        let ready =
            |me_ready, running| read_all(&distinct_sample(me_ready, running))["tidings_ready"];
        assert_eq!(ready(false, true), 0.0, "not marked ready");
        assert_eq!(ready(true, false), 0.0, "stopped");
        let stopped = read_all(&distinct_sample(true, false));
        assert_eq!(stopped["tidings_running"], 0.0);
    }
}
