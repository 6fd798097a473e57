//! Plain counters of what the core did, read with [`Node::stats`](crate::Node::stats).

/// Counters since the node started. All are totals except where noted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Datagrams handed to the driver to send (whether or not the socket then sent them).
    pub tx_datagrams: u64,
    /// Bytes in those datagrams.
    pub tx_datagram_bytes: u64,
    /// Stream frames handed to the driver to send.
    pub tx_frames: u64,
    /// Bytes in those frames (payload, without the length prefix).
    pub tx_frame_bytes: u64,
    /// Datagrams received.
    pub rx_datagrams: u64,
    /// Bytes in those datagrams.
    pub rx_datagram_bytes: u64,
    /// Stream frames received.
    pub rx_frames: u64,
    /// Bytes in those frames.
    pub rx_frame_bytes: u64,
    /// Largest datagram sent, in bytes (a maximum, not a total).
    pub max_datagram: u64,
    /// Packets dropped as malformed (bad magic, truncated, undecodable body).
    pub rx_malformed: u64,
    /// Packets dropped for an unsupported protocol version.
    pub rx_bad_version: u64,
    /// Packets dropped because they belong to another cluster.
    pub rx_foreign_cluster: u64,
    /// Packets dropped because they failed authentication or decryption.
    pub rx_auth_failed: u64,
    /// Plaintext packets refused because this node requires encryption.
    pub rx_plaintext_refused: u64,
    /// Sealed packets dropped because this node had already accepted one with the same nonce
    /// (a replay, or the network's duplicate), or one more than 2,048 packets newer from the
    /// same sender on the same channel.
    pub rx_replayed: u64,
    /// Packets larger than the receive limit.
    pub rx_oversized: u64,
    /// Packets dropped because they name this node itself as their sender: its own packets
    /// come back when one of its seeds is an address of its own other than the advertised
    /// one (a second interface, a host name resolving to 127.0.1.1), or a forgery. Not a
    /// fault by itself, so the runtime does not warn about it. The tokio runtime stops using
    /// such a seed once its own listener accepts a connection there (see
    /// [`Node::add_own_addr`](crate::Node::add_own_addr)), so a few at the start is usual.
    pub rx_own_tag: u64,
    /// Gossip rounds run.
    pub gossip_rounds: u64,
    /// Exchanges started over the stream transport.
    pub stream_syncs: u64,
    /// Stream exchanges wanted because state did not fit datagrams but not started, and
    /// answers to a stream exchange that did not ask for newer state: another exchange was
    /// already bringing state, or one had just been made. Grows in a healthy cluster too: this
    /// is the limit on stream exchanges at work when much state moves at once, at a cluster's
    /// forming (mostly on the seeds every joiner pulls from), at joins and restarts, after
    /// writes on many nodes at once, and while a value too large for a datagram spreads.
    pub data_syncs_deferred: u64,
    /// Stream exchanges this node was waiting on whose connection closed or failed first
    /// (reported by [`Node::handle_stream_closed`](crate::Node::handle_stream_closed)).
    pub stream_syncs_lost: u64,
    /// Node deltas applied.
    pub deltas_applied: u64,
    /// Node deltas ignored: stale, duplicated, building on a version not held yet, about
    /// this node itself, or for a node not held and without its identity. Grows in a healthy
    /// cluster too: the same news reaches a node from several peers, mostly around joins,
    /// writes and restarts.
    pub deltas_ignored: u64,
    /// Node deltas rejected: they broke the protocol or a limit.
    pub deltas_rejected: u64,
    /// Key entries received and applied.
    pub entries_applied: u64,
    /// Heartbeats learned (newer than what we held).
    pub heartbeats_learned: u64,
    /// Heartbeats learned while this node's rounds ran late (`local_health` above zero) or
    /// just after it found it had been paused, whose evidence age the failure detector did not
    /// learn (design.md 4.3).
    pub ages_not_learned: u64,
    /// Nodes dropped because `max_nodes` was reached.
    pub nodes_refused: u64,
    /// Times this node found itself paused (a tick came more than three intervals late) and
    /// forgave its peers' silence.
    pub pauses_detected: u64,
    /// Nodes marked down.
    pub downs: u64,
    /// Local health penalty now (a gauge, not a total), 0 to 8: each gossip round that ran more
    /// than one interval late raises it, each punctual one lowers it; while it is above 0
    /// a peer is convicted only after `1 + local_health` times its usual age limit.
    pub local_health: u64,
    /// 1 once this node learned that a newer incarnation of its name replaced it (a gauge; see
    /// [`Event::Superseded`](crate::Event::Superseded)), else 0.
    pub superseded: u64,
    /// Tombstones purged.
    pub tombstones_purged: u64,
    /// Deltas cut short at an entry too large for any datagram, which goes over the stream
    /// transport instead. Counted per delta, not per entry: one such value counts on the peers
    /// that hold it for each peer still lacking it, a few times each until a stream exchange
    /// brings it. Grows in a healthy cluster whenever values larger than a datagram are
    /// written, and at each join or restart while any are held.
    pub oversized_entries: u64,
    /// Indexed digests dropped because the sender's membership differed from ours by the time
    /// they arrived (the next exchange uses full tags). A few at each join or restart
    /// are usual.
    pub digests_unreadable: u64,
    /// Indexed digests, readable by their fingerprint, with malformed parts: entries or beats
    /// naming a position past the membership, or a beat list cut short or longer than the
    /// membership. Those parts are dropped and the rest of the message is used.
    pub digests_malformed: u64,
    /// Beats (heartbeats sent as their low byte) not learned because they read as further
    /// ahead of the heartbeat held than the node can have moved since: a sender far behind,
    /// whose low byte reads as ahead (design.md 2.2).
    pub beats_implausible: u64,
    /// Times a peer showed a copy of this node newer than the node itself (a heartbeat or a
    /// version it never sent): another process runs under this node's name and generation,
    /// this process restarted with its previous run's generation, or, without a keyring, a
    /// forgery. The node then rebases (`identity_rebases`). Logged at warn level at most once
    /// a minute (design.md 4.2).
    pub identity_conflicts: u64,
    /// Times this node moved its versions and heartbeat past a copy of it that peers held
    /// (after `identity_conflicts`), so that peers replace that copy with this run's state: at
    /// most once every 10 s (design.md 4.2).
    pub identity_rebases: u64,
    /// Answers to a datagram whose source is not known as its sender's (not the gossip address
    /// it advertises, a seed, or an address this node sent a Syn to) cut to three times the
    /// datagram's size, and stream exchanges such a datagram would have started with that
    /// source left out: a forged source address cannot turn one small datagram into a large
    /// answer to someone else (design.md 8, "Amplification"). Grows in a healthy cluster too:
    /// a newcomer's first datagrams, before its state arrives, and every small one from a
    /// peer whose packets leave from an address other than the one it advertises (NAT,
    /// several interfaces).
    pub replies_limited: u64,
}
