//! The AWS side of failover (DESIGN.md section 6).
//!
//! - [`targets`] (pure): what the NLB write and read target groups should hold, and
//!   the ordered calls that take them there.
//!
//! The SDK clients (ELBv2, DynamoDB, EC2) and the reconciling controller come with the
//! rest of issue 6.

pub mod targets;
