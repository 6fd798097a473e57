//! tidings: coordinator-free cluster membership, state gossip, failure detection and key
//! ownership, embedded in every instance of a service.
//!
//! Every node keeps its own versioned key-value state and gossips it Scuttlebutt-style
//! (digests, then deltas) over MTU-bounded UDP datagrams, with TCP for full syncs. Each node
//! runs a phi-accrual failure detector on the others' heartbeats and derives key ownership
//! locally from a consistent hash ring of the live members: the same members give the same
//! answer on every node, with no leader and no central service.
//!
//! The protocol is [`Node`], a deterministic state machine with **no IO**: it takes packets,
//! commands and the current time as arguments and returns packets to send, events and the next
//! time it wants to be woken. It reads no clock and no global randomness. The `tokio` feature
//! drives it over real sockets (`runtime`); the `sim` feature drives thousands of nodes in one
//! process over a virtual clock and a lossy network (`sim`). design.md (in the repository)
//! explains the protocol, invariants and defaults.
//!
//! # Where to start
//!
//! A service embeds the runtime: [`runtime::start`] a node from a [`runtime::RuntimeConfig`],
//! then use the [`runtime::Handle`] it returns to write its own state, read its peers', follow
//! [`Event`]s and ask who owns a key (the [`runtime`] module opens with that example, and the
//! README with a whole service). The example below drives the sans-IO core by hand instead,
//! which is what the runtime and the simulator do inside.
//!
//! # Driving the core by hand
//!
//! Two nodes exchanging packets in memory, the way the runtime and the simulator do:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use tidings::{Channel, Config, Node, NodeId};
//!
//! let t0 = Instant::now();
//! let config = Config::default();
//! let a_addr = "127.0.0.1:7001".parse().unwrap();
//! let b_addr = "127.0.0.1:7002".parse().unwrap();
//! let mut a = Node::new(NodeId::new("a", 1, a_addr), config.clone(), 1, t0)?;
//! let mut b = Node::new(NodeId::new("b", 1, b_addr), config.clone(), 2, t0)?;
//!
//! a.set(t0, "role", "leader")?;
//! b.join(t0, [a_addr]);
//!
//! let mut now = t0;
//! for _ in 0..10 {
//!     now += config.gossip_interval;
//!     for node in [&mut a, &mut b] {
//!         node.handle_timeout(now);
//!     }
//!     // Deliver everything in flight until both are quiet.
//!     loop {
//!         let mut flight = Vec::new();
//!         for (from, node) in [(a_addr, &mut a), (b_addr, &mut b)] {
//!             while let Some(t) = node.poll_transmit() {
//!                 flight.push((from, t));
//!             }
//!             while let Some(_event) = node.poll_event() {}
//!         }
//!         if flight.is_empty() {
//!             break;
//!         }
//!         for (from, t) in flight {
//!             let to = if t.to == a_addr { &mut a } else { &mut b };
//!             match t.channel {
//!                 Channel::Datagram => to.handle_datagram(now, from, &t.payload),
//!                 Channel::Stream => {
//!                     to.handle_stream_frame(now, from, &t.payload);
//!                 }
//!             }
//!         }
//!     }
//! }
//! assert_eq!(b.get("a", "role").map(|v| &v[..]), Some(&b"leader"[..]));
//! assert_eq!(b.num_live(), 2);
//! // Both compute the same owner for any key.
//! now += Duration::from_secs(2);
//! a.handle_timeout(now);
//! b.handle_timeout(now);
//! assert_eq!(a.owner(b"user:42"), b.owner(b"user:42"));
//! # Ok::<(), tidings::Error>(())
//! ```
//!
//! # Features
//!
//! - `tokio` (default): the runtime over UDP and TCP, with DNS join.
//! - `prometheus` (default): export counters into a user-supplied `prometheus::Registry`.
//! - `sim`: the deterministic simulator.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Unit tests only need an arbitrary origin for the instants they pass in.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

mod config;
mod crypto;
mod detector;
mod error;
mod event;
mod id;
mod node;
mod state;
mod stats;
mod table;
mod wire;

// The README's service example is compiled with the doc tests, so that it cannot drift from
// the API unnoticed.
#[cfg(all(doctest, feature = "tokio"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(feature = "prometheus")]
pub mod metrics;
pub mod ring;
#[cfg(feature = "tokio")]
pub mod runtime;

pub use config::{Config, ConfigError, Limits, MAX_DURATION};
pub use crypto::Keyring;
pub use detector::Distribution;
pub use error::Error;
pub use event::{Event, KeyEvents, OwnershipChange};
pub use id::{Generation, Heartbeat, NodeId, Version};
pub use node::{Channel, Member, MemberStatus, Node, Transmit};
pub use state::{KEY_WEIGHT, NodeState, RESERVED_PREFIX};
pub use stats::Stats;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "sim")]
pub mod sim;
