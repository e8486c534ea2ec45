//! Recovery: what to do about a failed master, and doing it.
//!
//! - [`plan`] (pure): candidate choice and the replicas to repoint.
//! - [`executor`]: runs a failover or switchover step by step through the `Control`
//!   (MySQL) and `Decisions` (Raft) seams, idempotently, verifying each step.
//! - [`shell`]: the real seams (MySQL, Raft, hook commands).
//! - [`detector`]: the leader's loop: register clusters, analyze, fail over, fence
//!   and rejoin former masters; operator switchovers.
//! - [`fencing`]: every peer's guard of its co-located mysqld (self-fencing).

pub mod detector;
pub mod executor;
pub mod fencing;
pub mod plan;
pub mod shell;
#[cfg(test)]
mod sim;
