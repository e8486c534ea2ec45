//! The orchestrator peer, one per database host.
//!
//! It discovers a MySQL/MariaDB replication topology, probes every instance, agrees
//! with the other peers through Raft on the decisions (registered clusters, recoveries,
//! downtimes, the audit), fails over a dead master, moves the NLB target groups, and
//! serves an authenticated HTTP/gRPC operator API (see `ARCHITECTURE.md` at the
//! repository root).
//!
//! Layout follows "functional core, imperative shell": [`topology`], [`analysis`],
//! [`state`] and the planners are pure; [`mysql`] is the only module that speaks SQL;
//! [`discovery`] is the probing loop; [`ops`] the typed operations every mutation goes
//! through; [`auth`] tokens, TLS and the authentication layer; [`api`] serves it all.

pub mod analysis;
pub mod api;
pub mod auth;
pub mod aws;
pub mod backup;
pub mod config;
pub mod discovery;
pub mod donor;
pub mod exit_watch;
pub mod fleet;
pub mod leave;
pub mod liveness;
pub mod membership;
pub mod metrics;
pub mod mysql;
pub mod ops;
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
