//! Provisioning of clusters and nodes.
//!
//! - The AWS side of one cluster, as the operator's tool for it: the spec
//!   ([`spec`], `deploy/cluster.example.toml`), the desired resources it implies
//!   ([`desired`], pure), the planner that diffs them against what exists ([`plan`],
//!   pure), the nodes' IAM policy ([`iam_policy`]), generated secrets
//!   ([`credentials`]), and the AWS edge that reads, creates, updates and deletes
//!   ([`cloud`]). The test bed and the sandbox build their AWS side with it.
//! - Node bootstrap ([`bootstrap`], `provisioner bootstrap`): a fresh instance made a
//!   member of its cluster (secrets, storage, MySQL, first master or replica under the
//!   fenced `bootstrap_lock`, the orchestrator peer joining Raft). Its pieces: the MySQL server configuration ([`mysql_config`]), users
//!   and least privileges per flavor ([`mysql_users`]), and the cluster's certificate
//!   authority and node certificates for the peers' mutual TLS ([`certs`]).

pub mod bootstrap;
pub mod certs;
pub mod cloud;
pub mod credentials;
pub mod desired;
pub mod iam_policy;
pub mod mysql_config;
pub mod mysql_users;
pub mod plan;
pub mod spec;
