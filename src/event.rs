//! What the core tells its driver: membership and state changes.

use bytes::Bytes;

use crate::id::NodeId;
use crate::ring::{Fingerprint, Handoff};

/// A change of the local node's ownership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnershipChange {
    /// The new ring's fingerprint: nodes with equal fingerprints compute equal owners.
    pub fingerprint: Fingerprint,
    /// Members on the new ring.
    pub members: usize,
    /// Key ranges acquired and relinquished.
    pub handoff: Handoff,
}

/// A membership or state change seen by this node, drained with
/// [`Node::poll_event`](crate::Node::poll_event).
///
/// Events about one node come in the order this node learned them. A node's first event is
/// `Joined`; after `Left` only its `Expired` comes (once `left_grace` has passed). After
/// `Expired` the same incarnation comes back only as a new `Joined`, and only if it shows it
/// was alive all along (a heartbeat past the one it was expired at, after a partition longer
/// than `dead_grace`; design.md, section 4.2); a newer incarnation of the name is a `Joined`
/// of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A new node (or a new incarnation of a restarted one) was learned, and is alive.
    Joined(NodeId),
    /// A node that was down sends heartbeats again.
    Up(NodeId),
    /// A node's heartbeats stopped arriving: its phi passed the threshold.
    Down(NodeId),
    /// A node announced a graceful leave (for our own node: we started leaving).
    Left(NodeId),
    /// A node's state was dropped: it was down or left for longer than the grace period, or a
    /// newer incarnation replaced it.
    Expired(NodeId),
    /// A node marked itself ready or not ready, reported when its readiness changes (marking
    /// a ready node ready again is not: nodes are ready unless they say otherwise). A node
    /// first learned (after its `Joined`) is reported only if it is not ready. (A runtime
    /// subscription's replay of the current state states every member's readiness.)
    ReadyChanged {
        /// The node.
        node: NodeId,
        /// Its new readiness.
        ready: bool,
    },
    /// A key of a node's state was set (created or changed).
    KeyUpserted {
        /// The node that owns the key.
        node: NodeId,
        /// The key.
        key: String,
        /// Its new value.
        value: Bytes,
    },
    /// A key of a node's state was deleted (or its TTL ran out: its owner checks TTLs every
    /// fifth gossip round, and not once it is leaving, so that `Left` is its last change).
    KeyDeleted {
        /// The node that owns the key.
        node: NodeId,
        /// The key.
        key: String,
    },
    /// The ring changed (once membership held still for `ring_settle`, plus up to half of it
    /// at random, never later than `4 × ring_settle` after the first change; within a round of
    /// hearing a peer's graceful leave; at once when this node starts leaving) and this node's
    /// ownership with it: what it acquired, from whom, and what it relinquished, to whom.
    ///
    /// Two nodes' hand-offs are mirror images, with these exceptions (design.md, section 6),
    /// in which a service handing work over should not expect the peers named to hand it
    /// anything, nor every peer that relinquishes to it to be named:
    /// - After a quick restart under the same name (the previous process replaced before the
    ///   peers' rings dropped its name), the peers' rings do not change, so they emit nothing,
    ///   and the new process's first event says it acquired its share from nobody (its
    ///   previous process held it). It tells this from the heartbeat at which each peer says
    ///   it took its ring, and from the ring the previous process gossiped; a restart within
    ///   a few rounds of the peers' last ring change, after some peers dropped the name and
    ///   others did not, or of a process whose ring was not heard (one that crashed within a
    ///   round or two of its first ring) is taken for a join (next item), which names as
    ///   previous owners members that relinquished nothing.
    /// - A node whose ring was empty (its first ring; or fewer members than
    ///   `ring_min_members`, or none ready with `ring_ready_only`) names as previous owners
    ///   the members of the ring its peers held before, which it reads from the ring
    ///   fingerprints they gossip. Where they do not agree on one (a member's weight changed
    ///   while this node joined; peers of a version without them), a first ring falls back
    ///   to the members that look old enough, by their heartbeats, to have built a ring
    ///   before it came (`4.5 × ring_settle` plus two intervals older), at the weights it
    ///   knows now, and a later one to nobody.
    ///
    /// A rebuild that moves nothing to or from this node emits none; the ring itself
    /// ([`Node::ring`](crate::Node::ring), or the runtime's membership snapshot) changes all
    /// the same.
    Ownership(OwnershipChange),
    /// A newer incarnation of this node's own name is in the cluster and alive (the one carried
    /// here; alive: its heartbeat was seen to rise by more than a few beats, at a live node's
    /// pace, so that copies of a dead one differing by their last beats are not taken for it):
    /// this process was replaced, typically restarted elsewhere while it was frozen, or a second
    /// process was started under the same name. The higher generation wins, so peers already
    /// ignore this incarnation; from now on it owns nothing
    /// ([`Node::is_local_owner`](crate::Node::is_local_owner) is false), sends nothing and
    /// ignores what it receives. The service should stop acting as this member (the runtime
    /// stops the node). Emitted once, and last: writes then fail with
    /// [`Error::Left`](crate::Error::Left) and `leave` does nothing.
    Superseded(NodeId),
    /// Our leave has spread to enough peers (or timed out): the node stops gossiping.
    LeaveCompleted {
        /// Peers that confirmed they hold our leave.
        confirmed: usize,
    },
}

impl Event {
    /// The node the event is about, if any.
    pub fn node(&self) -> Option<&NodeId> {
        match self {
            Self::Joined(n)
            | Self::Up(n)
            | Self::Down(n)
            | Self::Left(n)
            | Self::Expired(n)
            | Self::Superseded(n) => Some(n),
            Self::ReadyChanged { node, .. }
            | Self::KeyUpserted { node, .. }
            | Self::KeyDeleted { node, .. } => Some(node),
            Self::LeaveCompleted { .. } | Self::Ownership(_) => None,
        }
    }

    /// The key the event is about, for key events.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::KeyUpserted { key, .. } | Self::KeyDeleted { key, .. } => Some(key),
            _ => None,
        }
    }

    /// Whether the event is about membership (not a key).
    pub fn is_membership(&self) -> bool {
        self.key().is_none()
    }
}

/// Which key events ([`Event::KeyUpserted`], [`Event::KeyDeleted`]) a [`Node`](crate::Node)
/// emits; membership events are always emitted. Building an event costs a copy of the node id
/// and of the key, which during a large state transfer is a good share of the work, so a
/// driver that knows what its readers want says so with
/// [`Node::set_key_events`](crate::Node::set_key_events). The runtime keeps it to the union of
/// its subscriptions' filters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum KeyEvents {
    /// Every key event (the default).
    #[default]
    All,
    /// No key event.
    None,
    /// Events about keys that start with one of these prefixes.
    Prefixes(Vec<String>),
}

impl KeyEvents {
    /// Whether an event about `key` is emitted.
    pub fn wants(&self, key: &str) -> bool {
        match self {
            Self::All => true,
            Self::None => false,
            Self::Prefixes(p) => p.iter().any(|p| key.starts_with(p.as_str())),
        }
    }

    /// Every key event either of `self` and `other` wants.
    pub fn union(self, other: &Self) -> Self {
        match (self, other) {
            (Self::All, _) | (_, Self::All) => Self::All,
            (Self::None, o) => o.clone(),
            (s, Self::None) => s,
            (Self::Prefixes(mut a), Self::Prefixes(b)) => {
                for p in b {
                    if !a.contains(p) {
                        a.push(p.clone());
                    }
                }
                Self::Prefixes(a)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_events_union_wants_what_either_wants() {
        let a = KeyEvents::Prefixes(vec!["svc/".into()]);
        let b = KeyEvents::Prefixes(vec!["cfg/".into(), "svc/".into()]);
        let u = a.clone().union(&b);
        assert_eq!(u, KeyEvents::Prefixes(vec!["svc/".into(), "cfg/".into()]));
        assert!(u.wants("svc/x") && u.wants("cfg/y") && !u.wants("other"));
        assert_eq!(KeyEvents::None.union(&a), a);
        assert_eq!(a.clone().union(&KeyEvents::None), a);
        assert_eq!(a.clone().union(&KeyEvents::All), KeyEvents::All);
        assert!(!KeyEvents::None.wants("svc/x"));
        assert!(KeyEvents::All.wants(""));
    }

    /// A prefix matches at the start of a key only.
    #[test]
    fn a_prefix_matches_only_at_the_start_of_a_key() {
        let p = KeyEvents::Prefixes(vec!["svc/".into()]);
        assert!(p.wants("svc/") && p.wants("svc/a"));
        assert!(!p.wants("a/svc/b") && !p.wants("svc") && !p.wants(""));
    }

    /// Every event but the local node's `LeaveCompleted` and `Ownership` names the node it is
    /// about; only key events name a key.
    #[test]
    fn events_name_their_node_and_key() {
        let n = NodeId::new("a", 1, "127.0.0.1:1".parse().unwrap());
        let key = |e: &Event| e.key().map(str::to_owned);
        for e in [
            Event::Joined(n.clone()),
            Event::Superseded(n.clone()),
            Event::ReadyChanged {
                node: n.clone(),
                ready: true,
            },
        ] {
            assert_eq!(e.node(), Some(&n), "{e:?}");
            assert!(e.is_membership() && key(&e).is_none(), "{e:?}");
        }
        for e in [
            Event::KeyUpserted {
                node: n.clone(),
                key: "k".into(),
                value: Bytes::from_static(b"v"),
            },
            Event::KeyDeleted {
                node: n.clone(),
                key: "k".into(),
            },
        ] {
            assert_eq!(e.node(), Some(&n), "{e:?}");
            assert_eq!(key(&e).as_deref(), Some("k"), "{e:?}");
            assert!(!e.is_membership());
        }
        assert_eq!(Event::LeaveCompleted { confirmed: 1 }.node(), None);
    }
}
