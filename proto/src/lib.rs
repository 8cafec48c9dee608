//! The trireme.v1 gRPC API: generated message types, clients and servers.
//!
//! These types exist only at the edge: the server converts them into its own
//! domain types before anything is ordered or stored.

#![allow(clippy::all, missing_docs)]

/// trireme.v1, as generated from `proto/trireme/v1/trireme.proto`.
pub mod v1 {
    tonic::include_proto!("trireme.v1");
}

/// The subset of etcd's v3 API Trireme serves on its etcd listener: our own
/// definitions with etcd's package, message and field names and numbers.
pub mod etcd {
    /// etcd's key-value and event messages.
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    /// etcd's KV, Watch, Cluster and Maintenance services (the parts served).
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}

/// The encoded `FileDescriptorSet` of trireme.v1, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("trireme_descriptor");
