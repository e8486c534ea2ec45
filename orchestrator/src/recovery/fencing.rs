//! Every peer guards its co-located mysqld. A peer cut off from a quorum for longer
//! than the fencing timeout makes that mysqld read-only if it is writable: on the
//! minority side of a partition the old master stops taking writes by itself, as
//! Patroni's leader does when it loses its key. A peer in contact with the quorum
//! fences its mysqld when Raft says another instance replaced it as master.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::discovery::DiscoveryHandle;
use crate::mysql::admin::MysqlAdmin;
use crate::raft::RaftNode;
use crate::state::ClusterState;
use crate::topology::InstanceKey;

/// What the guard should do now (pure, so it is table-tested).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardDecision {
    Nothing,
    /// Cut off from the quorum too long while the local mysqld is writable.
    FenceMinority,
    /// Raft recorded another master in place of the local mysqld, which is writable.
    FenceReplaced,
}

pub fn decide(
    quorum_lost_for: Option<Duration>,
    fencing_timeout: Duration,
    local_writable: bool,
    replaced_by_another: bool,
) -> GuardDecision {
    if !local_writable {
        return GuardDecision::Nothing;
    }
    match quorum_lost_for {
        Some(lost) if lost >= fencing_timeout => GuardDecision::FenceMinority,
        Some(_) => GuardDecision::Nothing,
        None if replaced_by_another => GuardDecision::FenceReplaced,
        None => GuardDecision::Nothing,
    }
}

/// Whether Raft says another instance replaced `local` as master: a recovery that
/// ended had `local` as its failed master, its cluster's master is another instance,
/// and no cluster has `local` as master. The candidate of a recovery still running is
/// never replaced: it is writable from its promotion until the outcome names it master
/// (a MySQL switchover's outcome waits about a second for the old master's repoint),
/// and an earlier recovery may have had it as failed master (a switchover back to a
/// former master: without this the guard fenced the new master in that window).
pub fn replaced_by_another(state: &ClusterState, local: &InstanceKey) -> bool {
    let candidate_now = state.recoveries.iter().any(|r| r.is_open() && r.candidate.as_ref() == Some(local));
    let replaced_once = state.recoveries.iter().any(|r| {
        !r.is_open()
            && r.failed_master.as_ref() == Some(local)
            && state.clusters.get(&r.cluster).and_then(|c| c.master.as_ref()).is_some_and(|m| m != local)
    });
    replaced_once && !candidate_now && !state.is_master(local)
}

/// Runs the guard until shutdown.
pub async fn guard_local_instance(
    node: Arc<RaftNode>,
    discovery: DiscoveryHandle,
    admin: Arc<MysqlAdmin>,
    local: InstanceKey,
    fencing_timeout: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut lost_since: Option<Instant> = None;
    // Whether the last pass found the local mysqld writable and replaced.
    let mut replaced_before = false;
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        if node.has_quorum_contact() {
            lost_since = None;
        } else {
            lost_since.get_or_insert_with(Instant::now);
        }
        let lost_for = lost_since.map(|t| t.elapsed());
        let seen = discovery.store().instance(&local).map(|i| i.state);
        let writable =
            seen.as_ref().is_some_and(|s| s.reachable && s.last_probe.as_ref().is_some_and(|p| !p.read_only));
        // Only worth a fresh look when a decision could follow.
        let could_fence = lost_for.is_some_and(|l| l >= fencing_timeout) || lost_for.is_none();
        if !could_fence || !writable {
            replaced_before = false;
            continue;
        }
        let fresh = discovery.observe(&local).await.state;
        let writable = fresh.reachable && fresh.last_probe.as_ref().is_some_and(|p| !p.read_only);
        // Read after the probe: a promotion the probe saw was recorded (its candidate)
        // before it happened. A follower applies that record a moment after the leader,
        // so "replaced" must hold on two passes in a row before it fences.
        let (_, state) = node.state();
        let replaced_now = writable && replaced_by_another(&state, &local);
        let replaced = replaced_now && replaced_before;
        replaced_before = replaced_now;
        match decide(lost_for, fencing_timeout, writable, replaced) {
            GuardDecision::Nothing => {}
            decision => match admin.fence(&local).await {
                Ok(()) => tracing::warn!(instance = %local, ?decision, "fenced the local mysqld (read-only)"),
                Err(e) => {
                    tracing::error!(instance = %local, ?decision, error = %e, "cannot fence the local mysqld")
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ClusterRecord, RecoveryRecord};

    #[test]
    fn the_candidate_of_a_running_switchover_back_to_a_former_master_is_not_replaced() {
        let (a, b, c) = (
            InstanceKey::new("10.0.0.1", 3306),
            InstanceKey::new("10.0.0.2", 3306),
            InstanceKey::new("10.0.0.3", 3306),
        );
        let ended = |id, failed: &InstanceKey, new: &InstanceKey| RecoveryRecord {
            id,
            cluster: "main".into(),
            failed_master: Some(failed.clone()),
            candidate: Some(new.clone()),
            new_master: Some(new.clone()),
            ended_unix_ms: Some(id as i64),
            ..Default::default()
        };
        let mut state = ClusterState::default();
        state.clusters.insert("main".into(), ClusterRecord { master: Some(a.clone()), ..Default::default() });
        assert!(!replaced_by_another(&state, &a), "never replaced");
        // a -> b, then b -> c: a and b were replaced, c is master.
        state.recoveries.push(ended(1, &a, &b));
        state.recoveries.push(ended(2, &b, &c));
        state.clusters.get_mut("main").unwrap().master = Some(c.clone());
        assert!(replaced_by_another(&state, &a));
        assert!(replaced_by_another(&state, &b));
        assert!(!replaced_by_another(&state, &c));
        // c -> b running: b is recorded as candidate and promoted, the outcome is not
        // recorded yet. b is not fenced; a (not the candidate) still is.
        state.recoveries.push(RecoveryRecord {
            id: 3,
            cluster: "main".into(),
            failed_master: Some(c.clone()),
            candidate: Some(b.clone()),
            ..Default::default()
        });
        assert!(!replaced_by_another(&state, &b), "the running recovery's candidate");
        assert!(replaced_by_another(&state, &a));
        assert!(!replaced_by_another(&state, &c), "still the master Raft names");
        // The outcome: b is master, c replaced.
        state.recoveries[2] = ended(3, &c, &b);
        state.clusters.get_mut("main").unwrap().master = Some(b.clone());
        assert!(!replaced_by_another(&state, &b));
        assert!(replaced_by_another(&state, &c));
    }

    #[test]
    fn guard_decisions() {
        let t = Duration::from_secs(2);
        let s = |ms| Some(Duration::from_millis(ms));
        use GuardDecision::*;
        let table = [
            (None, true, false, Nothing),
            (None, false, true, Nothing),
            (None, true, true, FenceReplaced),
            (s(500), true, false, Nothing),
            (s(500), true, true, Nothing),
            (s(2000), true, false, FenceMinority),
            (s(5000), false, false, Nothing),
        ];
        for (lost, writable, replaced, want) in table {
            assert_eq!(decide(lost, t, writable, replaced), want, "{lost:?} {writable} {replaced}");
        }
    }
}
