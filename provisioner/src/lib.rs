//! Provisioning of clusters and nodes.
//!
//! Today this crate owns one piece of node bootstrap: the MySQL server configuration
//! every node runs with ([`mysql_config`]), used by the test bed and the sandbox as it
//! will be by cloud-init. The AWS resources (NLB, target groups, ASG, DynamoDB, S3,
//! Secrets Manager) come in their own issue.

pub mod mysql_config;
