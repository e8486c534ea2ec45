//! The orchestrator peer, one per database host.
//!
//! Today it discovers a MySQL/MariaDB replication topology from a seed, probes every
//! instance on a fixed interval and serves what it sees over HTTP and gRPC. Raft,
//! failure analysis, recovery and the AWS side build on these modules (see
//! `ARCHITECTURE.md` at the repository root).
//!
//! Layout follows "functional core, imperative shell": [`topology`] is pure data and
//! pure functions over it; [`mysql`] is the only module that speaks SQL; [`discovery`]
//! is the loop joining the two; [`api`] serves the result.

pub mod analysis;
pub mod api;
pub mod aws;
pub mod config;
pub mod discovery;
pub mod metrics;
pub mod mysql;
pub mod raft;
pub mod recovery;
pub mod state;
pub mod topology;

/// Milliseconds since the Unix epoch, the timestamp unit of every API answer.
pub fn unix_millis_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
