//! shoal benches
