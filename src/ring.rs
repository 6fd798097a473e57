//! Consistent-hash ring (being written).
