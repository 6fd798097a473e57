//! The error type of the public API.

use crate::config::ConfigError;

/// Why a call failed. Every variant says what happened to the state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is inconsistent. Nothing was started.
    #[error("invalid config: {0}")]
    Config(#[from] ConfigError),
    /// The key is empty or longer than `limits.max_key_len`. State is unchanged.
    #[error("key of {len} bytes is outside 1..={max}")]
    KeyLength {
        /// Key length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The key starts with the reserved `tidings:` prefix. State is unchanged.
    #[error("keys starting with \"tidings:\" are reserved")]
    ReservedKey,
    /// The value is larger than `limits.max_value_len`. State is unchanged.
    #[error("value of {len} bytes exceeds the limit of {max}")]
    ValueTooLarge {
        /// Value length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The write would exceed `limits.max_keys_per_node`. State is unchanged.
    #[error("node already holds the maximum of {max} keys")]
    TooManyKeys {
        /// The limit.
        max: usize,
    },
    /// The write would exceed `limits.max_state_bytes_per_node`. State is unchanged.
    #[error("state would grow to {size} bytes, above the limit of {max}")]
    StateTooLarge {
        /// Size after the write.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A ring weight that is not a number from 0.01 to 100 (relative to 1.0; the ring keeps
    /// weights in hundredths, from 1 to [`MAX_WEIGHT`](crate::ring::MAX_WEIGHT)). State is
    /// unchanged.
    #[error("ring weight {weight} is outside 0.01..=100")]
    InvalidWeight {
        /// The weight asked for.
        weight: f64,
    },
    /// The node name is empty or longer than 255 bytes. Nothing was started.
    #[error("node name of {len} bytes is outside 1..=255")]
    NodeName {
        /// Name length in bytes.
        len: usize,
    },
    /// The node has left the cluster (or is shutting down, or a newer incarnation of its name
    /// replaced it); it accepts no more writes.
    #[error("node has left the cluster")]
    Left,
    /// An address given to join through is of a family this node's socket cannot reach (an
    /// IPv6 address for a node bound to IPv4). Nothing was joined.
    #[error("{addr} is of an address family this node's socket cannot reach")]
    Unreachable {
        /// The address refused.
        addr: std::net::SocketAddr,
    },
    /// A socket or resolver error in the runtime.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    #[test]
    fn errors_are_send_sync_static() {
        fn assert<T: Send + Sync + 'static>() {}
        assert::<super::Error>();
        assert::<crate::config::ConfigError>();
    }
}
