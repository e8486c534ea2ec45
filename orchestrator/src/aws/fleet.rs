//! The Auto Scaling loop: every peer reads the group's instances every
//! `membership.interval_ms` (so `raft members` shows each member's instance on any
//! peer); the Raft leader, while in contact with a quorum, also carries out
//! [`crate::fleet::plan`]: hands leadership over when its own instance leaves,
//! protects the masters' instances from scale-in, marks a replica whose mysqld stays
//! down `Unhealthy`, and removes members whose instance is terminating or gone. Raft
//! changes go through [`Operations`] as the `orchestrator:fleet` caller, so they are
//! checked and audited like an operator's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::sdk::ScalingGroupApi;
use crate::auth::{Caller, Identity, Scope};
use crate::config::MembershipConfig;
use crate::discovery::TopologyStore;
use crate::fleet::{self, FleetView, GroupInstance, Member};
use crate::ops::{Operation, Operations};
use crate::raft::{NodeId, RaftNode};
use crate::unix_millis_now;

/// The identity the loop's Raft changes are audited under.
pub const FLEET_IDENTITY: &str = "orchestrator:fleet";

/// The group as last read, by private address.
#[derive(Default)]
pub struct FleetStatus {
    instances: Mutex<Option<BTreeMap<String, GroupInstance>>>,
}

impl FleetStatus {
    /// The instance at `host`, when the group was read and holds one.
    pub fn instance_at(&self, host: &str) -> Option<GroupInstance> {
        self.instances.lock().ok()?.as_ref()?.get(host).cloned()
    }

    /// Whether the group has been read at all.
    pub fn is_known(&self) -> bool {
        self.instances.lock().is_ok_and(|i| i.is_some())
    }

    fn set(&self, instances: &[GroupInstance]) {
        if let Ok(mut known) = self.instances.lock() {
            *known =
                Some(instances.iter().filter_map(|i| Some((i.private_ip.clone()?, i.clone()))).collect());
        }
    }
}

pub struct FleetLoop<C> {
    clients: C,
    group: String,
    settings: MembershipConfig,
    node: Arc<RaftNode>,
    store: Arc<TopologyStore>,
    ops: Arc<Operations>,
    status: Arc<FleetStatus>,
}

impl<C: ScalingGroupApi + 'static> FleetLoop<C> {
    pub fn new(
        clients: C,
        group: String,
        settings: MembershipConfig,
        node: Arc<RaftNode>,
        store: Arc<TopologyStore>,
        ops: Arc<Operations>,
        status: Arc<FleetStatus>,
    ) -> Self {
        Self { clients, group, settings, node, store, ops, status }
    }

    fn caller(&self) -> Caller {
        Caller {
            identity: Identity { name: FLEET_IDENTITY.into(), scope: Scope::Admin },
            from: format!("auto scaling group {}", self.group),
            peer: self.node.id,
        }
    }

    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(Duration::from_millis(self.settings.interval_ms));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut absent_since: BTreeMap<NodeId, i64> = BTreeMap::new();
        let mut last_error: Option<String> = None;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = ticks.tick() => {}
            }
            let instances = match self.clients.group_instances(&self.group).await {
                Ok(instances) => {
                    if last_error.take().is_some() {
                        tracing::info!(group = %self.group, "Auto Scaling group readable again");
                    }
                    self.status.set(&instances);
                    Some(instances)
                }
                Err(e) => {
                    if last_error.as_deref() != Some(&e.to_string()) {
                        tracing::warn!(group = %self.group, error = %e, "cannot read the Auto Scaling group; membership left as it is");
                        last_error = Some(e.to_string());
                    }
                    None
                }
            };
            if !self.node.is_leader() || !self.node.has_quorum_contact() {
                absent_since.clear();
                continue;
            }
            absent_since = self.pass(instances.as_deref(), absent_since).await;
        }
    }

    /// One leader pass; returns the absences to carry.
    async fn pass(
        &self,
        instances: Option<&[GroupInstance]>,
        absent_since: BTreeMap<NodeId, i64>,
    ) -> BTreeMap<NodeId, i64> {
        let status = self.node.status();
        let members: Vec<Member> = status
            .members
            .iter()
            .filter_map(|m| {
                let host = crate::raft::service::host_of(&m.raft)?;
                Some(Member { id: m.id, host: host.to_string(), voter: m.voter })
            })
            .collect();
        let master_hosts: BTreeSet<String> = self.node.with_state(|s| {
            s.clusters.values().filter_map(|c| c.master.as_ref().map(|k| k.host.clone())).collect()
        });
        let mut down: BTreeMap<String, Option<i64>> = BTreeMap::new();
        for cluster in self.store.clusters() {
            for i in &cluster.instances {
                let since = (!i.state.reachable).then_some(i.state.unreachable_since_unix_ms).flatten();
                down.insert(i.state.key.host.clone(), since);
            }
        }
        let replace_after_ms = match self.settings.replace_after_s {
            0 => i64::MAX,
            s => s as i64 * 1000,
        };
        let plan = fleet::plan(&FleetView {
            members: &members,
            instances,
            leader: self.node.id,
            absent_since: &absent_since,
            master_hosts: &master_hosts,
            mysqld_down_since: &down,
            now_unix_ms: unix_millis_now(),
            remove_after_ms: self.settings.remove_after_s as i64 * 1000,
            replace_after_ms,
        });
        if let Some(to) = plan.hand_over_to {
            tracing::warn!(
                to,
                "this peer's instance is leaving the Auto Scaling group: handing Raft leadership over"
            );
            if let Err(e) = self.ops.run(&self.caller(), Operation::TransferLeadership { to }).await {
                tracing::warn!(to, error = %e, "leadership not handed over; retrying");
            }
            return plan.absent_since;
        }
        if !plan.protect.is_empty() {
            match self.clients.set_protection(&self.group, &plan.protect, true).await {
                Ok(()) => {
                    tracing::info!(instances = %plan.protect.join(", "), "master's instance protected from scale-in")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "scale-in protection not set; retrying");
                    return plan.absent_since;
                }
            }
        }
        if !plan.unprotect.is_empty() {
            match self.clients.set_protection(&self.group, &plan.unprotect, false).await {
                Ok(()) => {
                    tracing::info!(instances = %plan.unprotect.join(", "), "scale-in protection removed (no longer a master)")
                }
                Err(e) => tracing::warn!(error = %e, "scale-in protection not removed; retrying"),
            }
        }
        for (id, why) in &plan.mark_unhealthy {
            match self.clients.set_unhealthy(id).await {
                Ok(()) => {
                    tracing::warn!(instance = %id, reason = %why, "instance marked Unhealthy: the group replaces it")
                }
                Err(e) => {
                    tracing::warn!(instance = %id, error = %e, "instance not marked Unhealthy; retrying")
                }
            }
        }
        let mut absent = plan.absent_since;
        for (id, why) in &plan.remove {
            tracing::warn!(peer = id, reason = %why, "removing a member whose instance left the Auto Scaling group");
            match self.ops.run(&self.caller(), Operation::RemovePeer { id: *id }).await {
                Ok(_) => {
                    absent.remove(id);
                }
                Err(e) => tracing::warn!(peer = id, error = %e, "member not removed; retrying"),
            }
        }
        absent
    }
}
