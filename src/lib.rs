//! tidings: coordinator-free cluster membership and state gossip.

pub mod ring;
