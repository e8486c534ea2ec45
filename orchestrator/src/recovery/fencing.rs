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
            continue;
        }
        let (_, state) = node.state();
        let replaced = state.recoveries.iter().any(|r| {
            !r.is_open()
                && r.failed_master.as_ref() == Some(&local)
                && state.clusters.get(&r.cluster).and_then(|c| c.master.as_ref()).is_some_and(|m| m != &local)
        }) && !state.clusters.values().any(|c| c.master.as_ref() == Some(&local));
        let fresh = discovery.observe(&local).await.state;
        let writable = fresh.reachable && fresh.last_probe.as_ref().is_some_and(|p| !p.read_only);
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
