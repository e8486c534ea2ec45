//! The AWS side of failover (DESIGN.md section 6).
//!
//! - [`targets`] (pure): what the NLB write and read target groups should hold, and
//!   the ordered calls that take them there.
//! - [`mirror`] (pure part): the DynamoDB items (`master_lock`, `topology`) and the
//!   epoch fence every write carries.
//! - [`sdk`]: the edge. The real AWS SDK clients (ELBv2, DynamoDB, EC2) behind the
//!   small [`TargetGroupApi`], [`InstanceDirectory`] and [`LockTable`] traits, built
//!   from the standard credential chain plus an optional `endpoint_url` (moto).
//! - [`controller`]: the leader's loop that keeps AWS matching Raft, with bounded
//!   backoff, never in the way of the MySQL side of a failover.
//! - [`lease`]: fenced, renewed, expiring lock items (`bootstrap_lock`, `backup_lock`).
//! - [`fleet`]: the loop that keeps the Raft members, scale-in protection and
//!   instance health in step with the Auto Scaling group ([`crate::fleet`] decides).

pub mod controller;
pub mod fleet;
pub mod lease;
pub mod mirror;
pub mod sdk;
pub mod targets;

pub use mirror::{LockTable, PutOutcome};
pub use sdk::{AwsClients, InstanceDirectory, ScalingGroupApi, TargetGroupApi};

/// A failed AWS call, said in one line: the operation and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("AWS {operation}: {message}")]
pub struct AwsError {
    /// The API operation (`RegisterTargets`, `PutItem`, ...), also the metrics label.
    pub operation: &'static str,
    pub message: String,
}

impl AwsError {
    pub fn new(operation: &'static str, message: impl Into<String>) -> Self {
        Self { operation, message: message.into() }
    }
}
