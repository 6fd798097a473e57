//! The tokio runtime (being written).
