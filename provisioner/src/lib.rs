//! Provisioning of clusters and nodes.
//!
//! Today this crate owns two pieces of node bootstrap: the MySQL server configuration
//! every node runs with ([`mysql_config`]), and the cluster's certificate authority and
//! node certificates for the peers' mutual TLS ([`certs`]); the test bed and the
//! sandbox use both, as cloud-init will. The AWS resources (NLB, target groups, ASG,
//! DynamoDB, S3, Secrets Manager) come in their own issue.

pub mod certs;
pub mod mysql_config;
