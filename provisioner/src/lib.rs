//! Provisioning of clusters and nodes.
//!
//! Today this crate owns three pieces of node bootstrap: the MySQL server configuration
//! every node runs with ([`mysql_config`]), its users and their least privileges per
//! flavor ([`mysql_users`]), and the cluster's certificate authority and
//! node certificates for the peers' mutual TLS ([`certs`]); the test bed and the
//! sandbox use both, as cloud-init will. The AWS resources (NLB, target groups, ASG,
//! DynamoDB, S3, Secrets Manager) come in their own issue.

pub mod certs;
pub mod mysql_config;
pub mod mysql_users;
