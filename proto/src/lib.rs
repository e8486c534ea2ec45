//! Generated gRPC types and services shared by the orchestrator daemon and `orchctl`.
//!
//! The `.proto` source is `proto/orchestrator.proto`; this crate only includes what
//! `build.rs` generates from it.

#![allow(clippy::all, missing_docs)]

/// Package `orchestrator.v1`: the control API `orchctl` uses (port 3000).
pub mod v1 {
    tonic::include_proto!("orchestrator.v1");
}

/// Package `orchestrator.raft.v1`: peer-to-peer Raft traffic (port 10008).
pub mod raft {
    tonic::include_proto!("orchestrator.raft.v1");
}
