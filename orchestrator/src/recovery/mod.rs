//! Recovery: what to do about a failed master, and doing it.
//!
//! - [`plan`] (pure): candidate choice and the replicas to repoint.
//! - [`executor`]: runs a failover or switchover step by step through the `Control`
//!   (MySQL) and `Decisions` (Raft) seams, idempotently, verifying each step.

pub mod executor;
pub mod plan;
