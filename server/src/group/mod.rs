//! The group channel: a totally ordered, durable log of write-set batches on openraft.

pub mod types;
