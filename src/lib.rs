//! tidings: coordinator-free cluster membership, state gossip, failure detection and key
//! ownership.

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

pub mod ring;
#[cfg(feature = "tokio")]
pub mod runtime;

pub use config::{Config, ConfigError, Limits};
pub use crypto::Keyring;
pub use detector::Distribution;
pub use error::Error;
pub use event::{Event, OwnershipChange};
pub use id::{Generation, Heartbeat, NodeId, Version};
pub use node::{Channel, Member, MemberStatus, Node, Transmit};
pub use state::{KEY_WEIGHT, NodeState, RESERVED_PREFIX};
pub use stats::Stats;

#[cfg(feature = "sim")]
pub mod sim;
