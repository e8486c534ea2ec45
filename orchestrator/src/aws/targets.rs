//! Pure planning of the NLB target groups (DESIGN.md section 6): what the write and
//! read groups should hold, from what Raft and the probes say, and the ordered
//! register/deregister calls that take the groups there from what AWS reports.
//!
//! Order matters in a failover: the old master leaves the write group before anything
//! joins it, so the group never holds two masters.

use std::collections::BTreeSet;

use crate::topology::{ClusterSnapshot, InstanceKey, ThreadState};

/// Which target group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    /// Port 3306 on the NLB: the master only.
    Write,
    /// Port 3307 on the NLB: the replicas.
    Read,
}

/// A target as `describe_target_health` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub id: String,
    /// AWS target health state (`initial`, `healthy`, `unhealthy`, `draining`, ...).
    pub state: String,
}

impl Target {
    /// Whether it still belongs to the group: AWS keeps a deregistered target listed
    /// as `draining` until its connections drain, but it gets no new ones.
    pub fn is_member(&self) -> bool {
        self.state != "draining"
    }
}

/// One call to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Deregister { group: Group, id: String },
    Register { group: Group, id: String },
}

/// What the groups should hold (instance ids).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub write: Option<String>,
    pub read: BTreeSet<String>,
}

/// The groups' desired membership. `id_of` maps an instance to its EC2 instance id
/// (instances without one are left out). Read: reachable replicas of the master that
/// replicate (both threads running), are not downtimed and lag at most `max_lag_s`. If
/// none qualifies, one replica still serves reads so the group never empties while a
/// replica can answer: the best reachable one whose SQL thread runs (not downtimed
/// first, then replicating, then least lagging) — stale reads rather than none, e.g.
/// while the master is dead and every IO thread is reconnecting.
pub fn desired(
    snapshot: &ClusterSnapshot,
    master: &InstanceKey,
    downtimed: &BTreeSet<InstanceKey>,
    max_lag_s: u64,
    id_of: impl Fn(&InstanceKey) -> Option<String>,
) -> Desired {
    let write = id_of(master);
    // (key, downtimed, replicating, lag) of every reachable replica applying events.
    let applying: Vec<(&InstanceKey, bool, bool, u64)> = snapshot
        .instances
        .iter()
        .filter(|i| &i.state.key != master && i.state.reachable)
        .filter_map(|i| {
            let r = i.state.last_probe.as_ref()?.replication.as_ref()?;
            (r.source == *master && r.sql_thread == ThreadState::Running).then(|| {
                let key = &i.state.key;
                (key, downtimed.contains(key), r.is_replicating(), r.seconds_behind.unwrap_or(u64::MAX))
            })
        })
        .collect();
    let mut read: BTreeSet<String> = applying
        .iter()
        .filter(|(_, down, replicating, lag)| !down && *replicating && *lag <= max_lag_s)
        .filter_map(|(k, ..)| id_of(k))
        .collect();
    if read.is_empty() {
        let best = applying.iter().min_by_key(|(k, down, replicating, lag)| (*down, !replicating, *lag, *k));
        if let Some((k, ..)) = best {
            read.extend(id_of(k));
        }
    }
    Desired { write, read }
}

/// The calls that take the groups from `write`/`read` (as AWS reports them) to
/// `desired`: write-group removals first, then write-group additions, then the read
/// group. Targets AWS is already draining count as gone.
pub fn reconcile(desired: &Desired, write: &[Target], read: &[Target]) -> Vec<Action> {
    let present = |targets: &[Target]| -> BTreeSet<String> {
        targets.iter().filter(|t| t.is_member()).map(|t| t.id.clone()).collect()
    };
    let (write_now, read_now) = (present(write), present(read));
    let mut actions = Vec::new();
    for id in &write_now {
        if desired.write.as_ref() != Some(id) {
            actions.push(Action::Deregister { group: Group::Write, id: id.clone() });
        }
    }
    if let Some(id) = &desired.write {
        if !write_now.contains(id) {
            actions.push(Action::Register { group: Group::Write, id: id.clone() });
        }
    }
    for id in desired.read.difference(&read_now) {
        actions.push(Action::Register { group: Group::Read, id: id.clone() });
    }
    for id in read_now.difference(&desired.read) {
        actions.push(Action::Deregister { group: Group::Read, id: id.clone() });
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{build_clusters, InstanceState, ThreadState};
    use std::collections::BTreeMap;

    fn key(s: &str) -> InstanceKey {
        s.parse().unwrap()
    }

    fn state(
        k: &str,
        source: Option<&str>,
        lag: Option<u64>,
        reachable: bool,
        io: ThreadState,
    ) -> InstanceState {
        let mut st = crate::topology::fixtures::reachable(k, source);
        st.reachable = reachable;
        if let Some(r) = st.last_probe.as_mut().and_then(|p| p.replication.as_mut()) {
            r.seconds_behind = lag;
            r.io_thread = io;
        }
        st
    }

    fn snapshot(states: Vec<InstanceState>) -> ClusterSnapshot {
        let map: BTreeMap<InstanceKey, InstanceState> =
            states.into_iter().map(|s| (s.key.clone(), s)).collect();
        build_clusters(&map, &[], &Default::default(), 0).remove(0)
    }

    fn id_of(k: &InstanceKey) -> Option<String> {
        Some(format!("i-{}", k.host))
    }

    fn ids(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    use ThreadState::*;

    #[test]
    fn read_group_keeps_healthy_replicas_only_but_never_empties() {
        let m = key("m:1");
        let snap = snapshot(vec![
            state("m:1", None, None, true, Running),
            state("a:1", Some("m:1"), Some(0), true, Running),
            state("b:1", Some("m:1"), Some(50), true, Running),
            state("c:1", Some("m:1"), None, true, Connecting),
            state("d:1", Some("m:1"), Some(0), false, Running),
            state("e:1", Some("m:1"), Some(0), true, Running),
        ]);
        let downtimed = BTreeSet::from([key("e:1")]);
        let d = desired(&snap, &m, &downtimed, 10, id_of);
        assert_eq!(d.write.as_deref(), Some("i-m"));
        assert_eq!(d.read, ids(&["i-a"]), "lagging, not replicating, down and downtimed are out");
        // Every healthy replica lags: the least lagging one stays.
        let snap = snapshot(vec![
            state("m:1", None, None, true, Running),
            state("a:1", Some("m:1"), Some(90), true, Running),
            state("b:1", Some("m:1"), Some(40), true, Running),
        ]);
        assert_eq!(desired(&snap, &m, &BTreeSet::new(), 10, id_of).read, ids(&["i-b"]));
        // The master is dead, every IO thread reconnects: one replica keeps serving
        // (stale) reads, a downtimed one only if nothing else can.
        let snap = snapshot(vec![
            state("m:1", None, None, false, Running),
            state("a:1", Some("m:1"), None, true, Connecting),
            state("b:1", Some("m:1"), None, true, Connecting),
        ]);
        assert_eq!(desired(&snap, &m, &BTreeSet::from([key("a:1")]), 10, id_of).read, ids(&["i-b"]));
        let only_a = BTreeSet::from([key("a:1"), key("b:1")]);
        assert_eq!(desired(&snap, &m, &only_a, 10, id_of).read.len(), 1);
        // No SQL thread runs anywhere: empty.
        let mut stopped = state("a:1", Some("m:1"), None, true, Running);
        if let Some(r) = stopped.last_probe.as_mut().and_then(|p| p.replication.as_mut()) {
            r.sql_thread = Stopped;
        }
        let snap = snapshot(vec![state("m:1", None, None, true, Running), stopped]);
        assert!(desired(&snap, &m, &BTreeSet::new(), 10, id_of).read.is_empty());
    }

    fn t(id: &str, state: &str) -> Target {
        Target { id: id.into(), state: state.into() }
    }

    #[test]
    fn failover_deregisters_the_old_master_before_registering_the_new_one() {
        let desired = Desired { write: Some("i-b".into()), read: ids(&["i-c"]) };
        let actions =
            reconcile(&desired, &[t("i-a", "healthy")], &[t("i-b", "healthy"), t("i-c", "healthy")]);
        assert_eq!(
            actions,
            vec![
                Action::Deregister { group: Group::Write, id: "i-a".into() },
                Action::Register { group: Group::Write, id: "i-b".into() },
                Action::Deregister { group: Group::Read, id: "i-b".into() },
            ]
        );
    }

    #[test]
    fn converged_groups_need_nothing_and_draining_targets_count_as_gone() {
        let desired = Desired { write: Some("i-a".into()), read: ids(&["i-b", "i-c"]) };
        assert!(reconcile(&desired, &[t("i-a", "healthy")], &[t("i-b", "initial"), t("i-c", "unhealthy")])
            .is_empty());
        let actions =
            reconcile(&desired, &[t("i-a", "draining")], &[t("i-b", "healthy"), t("i-c", "healthy")]);
        assert_eq!(actions, vec![Action::Register { group: Group::Write, id: "i-a".into() }]);
        // No master known: the write group empties.
        let none = Desired { write: None, read: ids(&["i-b"]) };
        assert_eq!(
            reconcile(&none, &[t("i-a", "healthy")], &[t("i-b", "healthy")]),
            vec![Action::Deregister { group: Group::Write, id: "i-a".into() }]
        );
    }

    proptest::proptest! {
        /// Applying the planned calls one by one reaches the desired groups, and the
        /// write group never holds two targets on the way (from at most one).
        #[test]
        fn reconcile_reaches_desired_without_two_writers(
            write_now in proptest::option::of(0u8..5),
            read_now in proptest::collection::btree_set(0u8..5, 0..5),
            draining in proptest::collection::btree_set(0u8..5, 0..3),
            write_want in proptest::option::of(0u8..5),
            read_want in proptest::collection::btree_set(0u8..5, 0..5),
        ) {
            let name = |i: &u8| format!("i-{i}");
            let state = |i: &u8| if draining.contains(i) { "draining" } else { "healthy" };
            let write: Vec<Target> = write_now.iter().map(|i| t(&name(i), state(i))).collect();
            let read: Vec<Target> = read_now.iter().map(|i| t(&name(i), state(i))).collect();
            let want = Desired { write: write_want.as_ref().map(name), read: read_want.iter().map(name).collect() };
            let live = |v: &[Target]| -> BTreeSet<String> {
                v.iter().filter(|t| t.is_member()).map(|t| t.id.clone()).collect()
            };
            let (mut w, mut r) = (live(&write), live(&read));
            for action in reconcile(&want, &write, &read) {
                match action {
                    Action::Register { group: Group::Write, id } => { w.insert(id); }
                    Action::Deregister { group: Group::Write, id } => { w.remove(&id); }
                    Action::Register { group: Group::Read, id } => { r.insert(id); }
                    Action::Deregister { group: Group::Read, id } => { r.remove(&id); }
                }
                proptest::prop_assert!(w.len() <= 1, "two writers: {w:?}");
            }
            proptest::prop_assert_eq!(w, want.write.iter().cloned().collect::<BTreeSet<_>>());
            proptest::prop_assert_eq!(r, want.read);
        }
    }
}
