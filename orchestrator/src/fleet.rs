//! The Raft group following the Auto Scaling group (pure): which members leave
//! because their instance is terminating or gone, when the leader must hand over
//! first, which instance carries scale-in protection (the master's), and which
//! instance is marked `Unhealthy` so the group replaces it (a replica whose mysqld has
//! been unreachable longer than `replace_after_s`).
//!
//! Every rule leans to doing nothing when the picture is incomplete: an empty or
//! unreadable group removes nobody, a member is removed only after it has been absent
//! for the whole grace, the leader and the last voter are never removed, at most one
//! member leaves and one instance is marked per pass, no instance is marked while
//! more than a third of the group's servers look down (that is the leader's network,
//! not the servers), and protection is taken off an instance only once the master's
//! instance is known and protected.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::raft::NodeId;

/// One instance of the Auto Scaling group, as `DescribeAutoScalingGroups` and
/// `DescribeInstances` tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInstance {
    pub id: String,
    /// The private IPv4 address (the host part of its peer's Raft address).
    pub private_ip: Option<String>,
    /// `Pending`, `InService`, `Terminating`, `Terminating:Wait`, `Detaching`, ...
    pub lifecycle: String,
    /// `Healthy` or `Unhealthy`.
    pub health: String,
    pub protected_from_scale_in: bool,
}

impl GroupInstance {
    /// Launching, serving or parked: its member stays.
    pub fn is_staying(&self) -> bool {
        let state = self.lifecycle.as_str();
        state.starts_with("Pending")
            || state == "InService"
            || state.starts_with("Standby")
            || state.starts_with("EnteringStandby")
    }

    pub fn is_healthy(&self) -> bool {
        self.health.eq_ignore_ascii_case("healthy")
    }
}

/// One Raft member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    /// The host of its Raft address.
    pub host: String,
    pub voter: bool,
}

/// What one pass sees.
#[derive(Debug, Clone)]
pub struct FleetView<'a> {
    pub members: &'a [Member],
    /// The group's instances; `None` when they could not be read.
    pub instances: Option<&'a [GroupInstance]>,
    pub leader: NodeId,
    /// Since when (unix ms) each member has had no staying instance (carried from the
    /// previous pass's [`FleetPlan::absent_since`]).
    pub absent_since: &'a BTreeMap<NodeId, i64>,
    /// The hosts of the current masters (Raft's record per cluster).
    pub master_hosts: &'a BTreeSet<String>,
    /// The hosts whose mysqld is known to the leader, with since when it has been
    /// unreachable (`None`: reachable).
    pub mysqld_down_since: &'a BTreeMap<String, Option<i64>>,
    pub now_unix_ms: i64,
    pub remove_after_ms: i64,
    pub replace_after_ms: i64,
}

/// What to do, in this order: hand over, protect, unprotect, mark, remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetPlan {
    /// To carry into the next pass.
    pub absent_since: BTreeMap<NodeId, i64>,
    /// The leader's own instance is leaving: it transfers leadership to this voter.
    pub hand_over_to: Option<NodeId>,
    /// Instance ids to protect from scale-in (the masters').
    pub protect: Vec<String>,
    /// Instance ids to take protection off.
    pub unprotect: Vec<String>,
    /// Instance ids to mark `Unhealthy`, with why.
    pub mark_unhealthy: Vec<(String, String)>,
    /// Members to remove from Raft, with why.
    pub remove: Vec<(NodeId, String)>,
}

impl FleetPlan {
    pub fn is_idle(&self) -> bool {
        self.hand_over_to.is_none()
            && self.protect.is_empty()
            && self.unprotect.is_empty()
            && self.mark_unhealthy.is_empty()
            && self.remove.is_empty()
    }
}

/// The plan for one pass (see the module documentation for the rules).
pub fn plan(view: &FleetView) -> FleetPlan {
    let mut plan = FleetPlan::default();
    let Some(instances) = view.instances.filter(|i| !i.is_empty()) else {
        // Unreadable or empty: keep what was known, change nothing.
        plan.absent_since = view.absent_since.clone();
        return plan;
    };
    let by_ip: BTreeMap<&str, &GroupInstance> =
        instances.iter().filter_map(|i| Some((i.private_ip.as_deref()?, i))).collect();
    let staying = |host: &str| by_ip.get(host).is_some_and(|i| i.is_staying());

    // Membership.
    for m in view.members {
        if !staying(&m.host) {
            let since = view.absent_since.get(&m.id).copied().unwrap_or(view.now_unix_ms);
            plan.absent_since.insert(m.id, since);
        }
    }
    let voters = view.members.iter().filter(|m| m.voter).count();
    if plan.absent_since.contains_key(&view.leader) {
        plan.hand_over_to = view
            .members
            .iter()
            .filter(|m| m.voter && m.id != view.leader && staying(&m.host))
            .map(|m| m.id)
            .min();
    }
    let due = view
        .members
        .iter()
        .filter(|m| m.id != view.leader && !(m.voter && voters == 1))
        .filter_map(|m| {
            let since = *plan.absent_since.get(&m.id)?;
            let absent_ms = view.now_unix_ms - since;
            (absent_ms >= view.remove_after_ms).then(|| {
                let why = match by_ip.get(m.host.as_str()) {
                    Some(i) => format!("its instance {} is {}", i.id, i.lifecycle),
                    None => format!("no instance of the group has address {}", m.host),
                };
                (m.id, format!("{why} (for {} s)", absent_ms / 1000))
            })
        })
        // Learners first, then the lowest id: one member per pass.
        .min_by_key(|(id, _)| (view.members.iter().any(|m| m.id == *id && m.voter), *id));
    plan.remove.extend(due);

    // Scale-in protection: the masters' instances.
    let master_ids: Vec<Option<&GroupInstance>> =
        view.master_hosts.iter().map(|h| by_ip.get(h.as_str()).copied()).collect();
    for i in master_ids.iter().flatten() {
        if !i.protected_from_scale_in && i.is_staying() {
            plan.protect.push(i.id.clone());
        }
    }
    let every_master_known = !master_ids.is_empty() && master_ids.iter().all(|i| i.is_some());
    if every_master_known {
        let keep: BTreeSet<&str> = master_ids.iter().flatten().map(|i| i.id.as_str()).collect();
        plan.unprotect = instances
            .iter()
            .filter(|i| i.protected_from_scale_in && !keep.contains(i.id.as_str()))
            .map(|i| i.id.clone())
            .collect();
    }

    // Replacement of a replica whose mysqld stays down.
    let known: Vec<&GroupInstance> = instances
        .iter()
        .filter(|i| i.private_ip.as_deref().is_some_and(|ip| view.mysqld_down_since.contains_key(ip)))
        .collect();
    let down_now = known
        .iter()
        .filter(|i| i.private_ip.as_deref().is_some_and(|ip| view.mysqld_down_since[ip].is_some()))
        .count();
    let network_suspect = down_now * 3 > known.len();
    let already_unhealthy = instances.iter().any(|i| i.is_staying() && !i.is_healthy());
    if !network_suspect && !already_unhealthy {
        let victim = known
            .iter()
            .filter(|i| i.lifecycle == "InService" && i.is_healthy())
            .filter_map(|i| {
                let ip = i.private_ip.as_deref()?;
                let since = view.mysqld_down_since[ip]?;
                let down_ms = view.now_unix_ms - since;
                (!view.master_hosts.contains(ip) && down_ms >= view.replace_after_ms)
                    .then(|| (i.id.clone(), format!("mysqld at {ip} unreachable for {} s", down_ms / 1000)))
            })
            .min();
        plan.mark_unhealthy.extend(victim);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn instance(id: &str, ip: &str, lifecycle: &str) -> GroupInstance {
        GroupInstance {
            id: id.into(),
            private_ip: Some(ip.into()),
            lifecycle: lifecycle.into(),
            health: "Healthy".into(),
            protected_from_scale_in: false,
        }
    }

    fn members(n: u64) -> Vec<Member> {
        (1..=n).map(|i| Member { id: i, host: format!("10.0.0.{i}"), voter: true }).collect()
    }

    fn group(n: u64) -> Vec<GroupInstance> {
        (1..=n).map(|i| instance(&format!("i-{i}"), &format!("10.0.0.{i}"), "InService")).collect()
    }

    struct Case {
        members: Vec<Member>,
        instances: Option<Vec<GroupInstance>>,
        leader: NodeId,
        absent_since: BTreeMap<NodeId, i64>,
        masters: BTreeSet<String>,
        down: BTreeMap<String, Option<i64>>,
    }

    impl Case {
        fn new(n: u64) -> Case {
            Case {
                members: members(n),
                instances: Some(group(n)),
                leader: 1,
                absent_since: BTreeMap::new(),
                masters: BTreeSet::from(["10.0.0.1".to_string()]),
                down: (1..=n).map(|i| (format!("10.0.0.{i}"), None)).collect(),
            }
        }

        fn plan_at(&self, now: i64) -> FleetPlan {
            plan(&FleetView {
                members: &self.members,
                instances: self.instances.as_deref(),
                leader: self.leader,
                absent_since: &self.absent_since,
                master_hosts: &self.masters,
                mysqld_down_since: &self.down,
                now_unix_ms: now,
                remove_after_ms: 30_000,
                replace_after_ms: 60_000,
            })
        }

        fn set(&mut self, id: &str, f: impl FnOnce(&mut GroupInstance)) {
            let i = self.instances.as_mut().unwrap().iter_mut().find(|i| i.id == id).unwrap();
            f(i);
        }
    }

    #[test]
    fn a_terminated_member_leaves_after_the_grace() {
        let mut c = Case::new(5);
        c.set("i-1", |i| i.protected_from_scale_in = true);
        c.set("i-4", |i| i.lifecycle = "Terminating".into());
        let first = c.plan_at(100_000);
        assert!(first.remove.is_empty());
        assert_eq!(first.absent_since, BTreeMap::from([(4, 100_000)]));
        c.absent_since = first.absent_since;
        assert!(c.plan_at(129_999).remove.is_empty());
        let due = c.plan_at(130_000);
        assert_eq!(due.remove.len(), 1);
        assert_eq!(due.remove[0].0, 4);
        assert!(due.remove[0].1.contains("i-4 is Terminating"), "{}", due.remove[0].1);
        // Gone from the group entirely (detached, or terminated and dropped).
        c.instances.as_mut().unwrap().retain(|i| i.id != "i-4");
        let gone = c.plan_at(130_000);
        assert!(gone.remove[0].1.contains("no instance of the group has address 10.0.0.4"));
    }

    #[test]
    fn a_member_that_comes_back_starts_the_grace_again() {
        let mut c = Case::new(3);
        c.absent_since = BTreeMap::from([(3, 0)]);
        let p = c.plan_at(100_000);
        assert!(p.remove.is_empty() && p.absent_since.is_empty());
    }

    #[test]
    fn nothing_leaves_when_the_group_cannot_be_read_or_is_empty() {
        let mut c = Case::new(3);
        c.absent_since = BTreeMap::from([(2, 0)]);
        c.instances = None;
        let p = c.plan_at(1_000_000);
        assert!(p.is_idle());
        assert_eq!(p.absent_since, c.absent_since);
        c.instances = Some(Vec::new());
        assert!(c.plan_at(1_000_000).is_idle());
    }

    #[test]
    fn a_leaving_leader_hands_over_and_is_not_removed() {
        let mut c = Case::new(3);
        c.set("i-1", |i| i.lifecycle = "Terminating:Wait".into());
        c.absent_since = BTreeMap::from([(1, 0)]);
        let p = c.plan_at(1_000_000);
        assert_eq!(p.hand_over_to, Some(2));
        assert!(p.remove.is_empty());
    }

    #[test]
    fn one_member_per_pass_learners_first_never_the_last_voter() {
        let mut c = Case::new(3);
        c.members[2].voter = false;
        c.instances = Some(vec![instance("i-1", "10.0.0.1", "InService")]);
        c.absent_since = BTreeMap::from([(2, 0), (3, 0)]);
        let p = c.plan_at(1_000_000);
        assert_eq!(p.remove.iter().map(|r| r.0).collect::<Vec<_>>(), [3]);
        let mut alone = Case::new(1);
        alone.leader = 9;
        alone.instances = Some(vec![instance("i-9", "10.0.0.9", "InService")]);
        alone.absent_since = BTreeMap::from([(1, 0)]);
        assert!(alone.plan_at(1_000_000).remove.is_empty());
    }

    #[test]
    fn protection_follows_the_master() {
        let mut c = Case::new(3);
        assert_eq!(c.plan_at(0).protect, ["i-1"]);
        c.set("i-1", |i| i.protected_from_scale_in = true);
        assert!(c.plan_at(0).is_idle());
        // A switchover to 10.0.0.2: protect the new one, unprotect the old.
        c.masters = BTreeSet::from(["10.0.0.2".to_string()]);
        let p = c.plan_at(0);
        assert_eq!(
            (p.protect.as_slice(), p.unprotect.as_slice()),
            (&["i-2".to_string()][..], &["i-1".to_string()][..])
        );
        // A master with no instance: protection is left where it is.
        c.masters = BTreeSet::from(["10.9.9.9".to_string()]);
        assert!(c.plan_at(0).unprotect.is_empty());
        c.masters.clear();
        assert!(c.plan_at(0).unprotect.is_empty());
    }

    #[test]
    fn a_replica_down_past_replace_after_is_marked_unhealthy_never_the_master() {
        let mut c = Case::new(5);
        c.set("i-1", |i| i.protected_from_scale_in = true);
        c.down.insert("10.0.0.3".into(), Some(0));
        assert!(c.plan_at(59_999).mark_unhealthy.is_empty());
        let p = c.plan_at(60_000);
        assert_eq!(p.mark_unhealthy.len(), 1);
        assert_eq!(p.mark_unhealthy[0].0, "i-3");
        assert!(p.mark_unhealthy[0].1.contains("10.0.0.3 unreachable for 60 s"));
        // Once marked, nothing more until the group has replaced it.
        c.set("i-3", |i| i.health = "Unhealthy".into());
        c.down.insert("10.0.0.4".into(), Some(0));
        assert!(c.plan_at(120_000).mark_unhealthy.is_empty());
        // The master is failed over, never replaced from here.
        let mut m = Case::new(5);
        m.down.insert("10.0.0.1".into(), Some(0));
        assert!(m.plan_at(1_000_000).mark_unhealthy.is_empty());
    }

    #[test]
    fn many_servers_down_at_once_marks_none() {
        let mut c = Case::new(5);
        c.down.insert("10.0.0.2".into(), Some(0));
        c.down.insert("10.0.0.3".into(), Some(0));
        assert!(c.plan_at(1_000_000).mark_unhealthy.is_empty());
    }

    proptest! {
        #[test]
        fn never_removes_a_staying_member_the_leader_or_more_than_one(
            states in proptest::collection::vec(0usize..4, 1..8),
            absent_for in proptest::collection::vec(0i64..100_000, 8),
            leader in 1u64..8,
        ) {
            const LIFECYCLES: [&str; 4] = ["InService", "Pending", "Terminating", "Detached"];
            let n = states.len() as u64;
            let mut c = Case::new(n);
            c.leader = leader.min(n);
            for (i, s) in states.iter().enumerate() {
                c.set(&format!("i-{}", i + 1), |inst| inst.lifecycle = LIFECYCLES[*s].into());
            }
            c.absent_since = (1..=n).map(|id| (id, 100_000 - absent_for[id as usize - 1])).collect();
            let p = c.plan_at(100_000);
            prop_assert!(p.remove.len() <= 1);
            for (id, _) in &p.remove {
                prop_assert!(*id != c.leader);
                prop_assert!(states[*id as usize - 1] >= 2);
                prop_assert!(100_000 - c.absent_since[id] >= 30_000);
            }
            if let Some(to) = p.hand_over_to {
                prop_assert!(to != c.leader && states[to as usize - 1] < 2);
            }
        }
    }
}
