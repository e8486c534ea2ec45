//! The DynamoDB mirror (DESIGN.md section 6): table `{cluster_id}-orchestrator`,
//! partition key `pk`, items `master_lock` and `topology`.
//!
//! Raft decides; DynamoDB mirrors the decision for tools outside the peer group. Every
//! write carries the fence of the decision it mirrors (the cluster's fencing epoch from
//! Raft, then the Raft term of the leader writing it) and is conditional on not going
//! back, so a deposed leader's late write is refused by DynamoDB itself instead of
//! overwriting a newer decision. This module holds the items and that rule; the SDK
//! calls live in [`super::sdk`].

use std::future::Future;

use serde::Serialize;

use super::AwsError;
use crate::topology::{ClusterSnapshot, InstanceKey, Role};

/// The key attribute of every item.
pub const PK: &str = "pk";
pub const MASTER_LOCK: &str = "master_lock";
pub const TOPOLOGY: &str = "topology";

/// The DynamoDB condition of every mirror write (`:epoch`, `:term` bound to the
/// writer's [`Fence`]): the item is new, or the writer's fence is not older.
pub const FENCE_CONDITION: &str =
    "attribute_not_exists(pk) OR epoch < :epoch OR (epoch = :epoch AND raft_term <= :term)";

/// The decision a write mirrors: fencing epoch first, then Raft term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize)]
pub struct Fence {
    pub epoch: u64,
    pub raft_term: u64,
}

impl std::fmt::Display for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "epoch {}, Raft term {}", self.epoch, self.raft_term)
    }
}

impl Fence {
    /// What [`FENCE_CONDITION`] lets through: may a write fenced `self` replace an item
    /// fenced `stored` (`None`: no item yet)?
    pub fn may_replace(&self, stored: Option<Fence>) -> bool {
        stored.is_none_or(|s| s <= *self)
    }
}

/// The `master_lock` item: which instance is master, by whose decision, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MasterLock {
    /// The master instance (`host:port`).
    pub holder: String,
    /// The Raft peer that wrote it.
    pub leader_id: u64,
    pub fence: Fence,
    pub updated_at: i64,
    /// Unix seconds; TTL attribute. Readers must check it themselves: TTL deletion
    /// lags on AWS and never happens on moto.
    pub expires_at: i64,
}

impl MasterLock {
    /// Whether the lock still holds at `now` (unix seconds).
    pub fn is_live(&self, now_s: i64) -> bool {
        self.expires_at > now_s
    }
}

/// The `topology` item: the cluster as the leader sees it, as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyItem {
    pub fence: Fence,
    pub updated_at: i64,
    pub json: String,
}

/// What a conditional write came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    Written,
    /// The stored item carries a newer fence: the write was refused.
    Rejected {
        stored: Option<Fence>,
    },
}

/// The DynamoDB table, as the controller uses it.
pub trait LockTable: Send + Sync {
    fn put_master_lock(
        &self,
        table: &str,
        lock: &MasterLock,
    ) -> impl Future<Output = Result<PutOutcome, AwsError>> + Send;
    fn put_topology(
        &self,
        table: &str,
        item: &TopologyItem,
    ) -> impl Future<Output = Result<PutOutcome, AwsError>> + Send;
    fn get_master_lock(
        &self,
        table: &str,
    ) -> impl Future<Output = Result<Option<MasterLock>, AwsError>> + Send;
}

#[derive(Serialize, PartialEq, Eq)]
struct InstanceDoc<'a> {
    key: &'a InstanceKey,
    role: Role,
    reachable: bool,
    read_only: Option<bool>,
    source: Option<&'a InstanceKey>,
    replicating: Option<bool>,
}

#[derive(Serialize, PartialEq, Eq)]
struct TopologyDoc<'a> {
    alias: &'a str,
    master: &'a InstanceKey,
    epoch: u64,
    instances: Vec<InstanceDoc<'a>>,
}

/// The `topology` JSON: the parts of the cluster that matter to a reader and change
/// only when the topology does (no timings or lag, so "changed" means changed).
pub fn topology_json(snapshot: &ClusterSnapshot, master: &InstanceKey, epoch: u64) -> String {
    let instances = snapshot
        .instances
        .iter()
        .map(|i| {
            let probe = i.state.last_probe.as_ref();
            let replication = probe.and_then(|p| p.replication.as_ref());
            InstanceDoc {
                key: &i.state.key,
                role: i.role,
                reachable: i.state.reachable,
                read_only: probe.map(|p| p.read_only),
                source: replication.map(|r| &r.source),
                replicating: replication.map(|r| r.is_replicating()),
            }
        })
        .collect();
    let doc = TopologyDoc { alias: &snapshot.alias, master, epoch, instances };
    serde_json::to_string(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(epoch: u64, raft_term: u64) -> Fence {
        Fence { epoch, raft_term }
    }

    #[test]
    fn a_write_never_goes_back_to_an_older_decision() {
        // (writer, stored, allowed)
        let table = [
            (f(1, 1), None, true),
            (f(2, 3), Some(f(2, 3)), true),  // refresh by the same leader
            (f(3, 1), Some(f(2, 9)), true),  // a newer recovery wins over any term
            (f(2, 4), Some(f(2, 3)), true),  // a newer leader, same decision
            (f(1, 9), Some(f(2, 3)), false), // deposed leader, older recovery
            (f(2, 2), Some(f(2, 3)), false), // deposed leader, same epoch
        ];
        for (writer, stored, allowed) in table {
            assert_eq!(writer.may_replace(stored), allowed, "{writer:?} over {stored:?}");
        }
    }

    #[test]
    fn topology_json_ignores_timings() {
        use crate::topology::{build_clusters, fixtures};
        let states = [fixtures::reachable("m:1", None), fixtures::reachable("a:1", Some("m:1"))];
        let map = states.iter().map(|s| (s.key.clone(), s.clone())).collect();
        let snap = build_clusters(&map, &[], &Default::default(), 0).remove(0);
        let master: InstanceKey = "m:1".parse().unwrap();
        let a = topology_json(&snap, &master, 3);
        let mut later = snap.clone();
        later.taken_unix_ms += 5000;
        for i in &mut later.instances {
            i.state.last_checked_unix_ms += 5000;
            i.state.probe_latency_ms += 1.0;
        }
        assert_eq!(a, topology_json(&later, &master, 3));
        let v: serde_json::Value = serde_json::from_str(&a).unwrap();
        assert_eq!(v["master"], "m:1");
        assert_eq!(v["instances"].as_array().unwrap().len(), 2);
        let mut down = snap.clone();
        down.instances[1].state.reachable = false;
        assert_ne!(a, topology_json(&down, &master, 3));
    }
}
