//! The Trireme client library: typed errors, endpoint failover, session
//! consistency and client-side transactions over the `trireme.v1` gRPC API.
//!
//! A [`Client`] holds one lazily connected gRPC channel per endpoint. Every
//! request goes to the endpoint currently in use; when a node says it did not
//! take the request (`UNAVAILABLE`) or cannot be reached at all, the client
//! moves to the next endpoint and retries, within one per-request deadline.
//! Writes are never retried once they may have reached a node: a write whose
//! outcome is unknown surfaces as [`Error::Indeterminate`].
//!
//! Transactions live in the client, as the server keeps no per-transaction
//! state: [`Client::begin`] fetches a snapshot seqno (or
//! [`Client::begin_deferred`] lets the first read take it, in the same round
//! trip), reads are served at that snapshot ([`Transaction::get_many`] reads
//! many keys in one call), writes are buffered, and [`Transaction::commit`]
//! ships the whole write set (with the read set and scanned ranges, for
//! SERIALIZABLE) to be certified. [`Client::transaction`] runs a closure as a
//! deferred transaction and retries it when certification aborts it.
//!
//! Session consistency: the client remembers the highest seqno it has
//! committed or read, and [`ReadConsistency::Session`] reads ask the node to
//! have applied at least that much, so a client reads its own writes on any
//! node.
//!
//! CAVEATS:
//! - TLS is off unless [`ClientOptions::tls`] is set (`https://` endpoints;
//!   a client certificate when the server asks for one). With auth on, set
//!   [`ClientOptions::credentials`]: the client authenticates, sends the
//!   token with every request and authenticates again when it expires.
//! - Failover is round-robin over the configured endpoints; the client does
//!   not discover members from `Status`.
//! - A transaction's scan pages through the whole range before returning; it
//!   is meant for ranges that fit in memory.

#![warn(missing_docs)]

mod auth;
mod backoff;
mod client;
mod error;
mod txn;
mod types;
mod watch;

pub use client::{Client, ClientOptions, ClientTls, Credentials};
pub use error::{Error, Result};
pub use txn::Transaction;
pub use types::{
    prefix_end, Checksum, ClusterConfig, Isolation, KeyRange, MemberStatus, Members, NodeStatus,
    ReadConsistency, ScanSpec, Versioned,
};
pub use watch::{WatchEvent, WatchMessage, WatchOptions, WatchTarget};

/// The generated `trireme.v1` types, for callers of [`Client::commit`].
pub use trireme_proto::v1 as proto;
