//! etcd v3 backend over native gRPC (etcd-client). Stored bytes and lease/txn semantics are
//! Patroni's (spec/dcs.md §2.5), so Patroni agents and patronictl interoperate.
