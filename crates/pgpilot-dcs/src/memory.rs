//! In-process backend for tests and the simulation: the same semantics as etcd (revisions,
//! leases with TTL, create-if-absent and compare transactions, watch wake-ups) in a shared map.
pub struct MemoryPlaceholder;
