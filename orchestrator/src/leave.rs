//! Leaving the group on stop (`[membership] leave_on_stop`): switch the co-located
//! mysqld over if it is a master, hand Raft leadership to another voter if this peer
//! leads, then ask the leader to remove this peer. Every step is a typed operation
//! run as the `orchestrator:leave` caller (checked, routed to the leader, audited).
//! A peer that left leaves a marker in its data directory; at its next start its old
//! Raft state is set aside so that, with `join`, it asks to be added again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::{Caller, Identity, Scope};
use crate::ops::{Operation, Operations};
use crate::raft::RaftNode;
use crate::topology::InstanceKey;

/// The identity a leave's operations are audited under.
pub const LEAVE_IDENTITY: &str = "orchestrator:leave";

/// The file a peer that left writes into its data directory.
pub fn left_marker(data_dir: &Path) -> PathBuf {
    data_dir.join("left-the-group")
}

/// At start: a peer that left at its last stop sets its Raft state aside (renamed,
/// not deleted, so an operator can still read it). Returns whether it did.
pub fn set_aside_after_leave(data_dir: &Path) -> std::io::Result<bool> {
    let marker = left_marker(data_dir);
    if !marker.exists() {
        return Ok(false);
    }
    let raft = data_dir.join("raft");
    if raft.exists() {
        let aside = data_dir.join(format!("raft.left-{}", crate::unix_millis_now()));
        std::fs::rename(&raft, &aside)?;
    }
    std::fs::remove_file(&marker)?;
    Ok(true)
}

/// What a leave did, for the log.
#[derive(Debug, Default)]
pub struct LeaveReport {
    pub switched_over: Vec<String>,
    pub handed_over_to: Option<u64>,
    pub removed: bool,
    pub problems: Vec<String>,
}

/// Leaves the group, each step bounded by what is left of `timeout`.
pub async fn leave(
    ops: &Operations,
    node: &RaftNode,
    local: Option<&InstanceKey>,
    data_dir: &Path,
    timeout: Duration,
) -> LeaveReport {
    let deadline = tokio::time::Instant::now() + timeout;
    let caller = Caller {
        identity: Identity { name: LEAVE_IDENTITY.into(), scope: Scope::Admin },
        from: "peer stopping".into(),
        peer: node.id,
    };
    let mut report = LeaveReport::default();
    let run = |operation: Operation| {
        let caller = caller.clone();
        async move {
            match tokio::time::timeout_at(deadline, ops.run(&caller, operation)).await {
                Ok(result) => result.map(|r| r.summary()).map_err(|e| e.to_string()),
                Err(_) => Err(format!("not done within the {} s leave timeout", timeout.as_secs())),
            }
        }
    };

    // 1. The co-located mysqld stops being a master.
    if let Some(local) = local {
        let mastered: Vec<String> = node.with_state(|s| {
            s.clusters
                .iter()
                .filter(|(_, c)| c.master.as_ref() == Some(local))
                .map(|(alias, _)| alias.clone())
                .collect()
        });
        for cluster in mastered {
            tracing::info!(%cluster, master = %local, "leaving: switching the master over first");
            let switchover = Operation::Switchover {
                cluster: cluster.clone(),
                target: None,
                expected_master: Some(local.clone()),
                dry_run: false,
            };
            match run(switchover).await {
                Ok(summary) => {
                    tracing::info!(%cluster, %summary, "leaving: switched over");
                    report.switched_over.push(cluster);
                }
                Err(e) => {
                    tracing::error!(%cluster, error = %e, "leaving: switchover failed; {local} is still the master");
                    report.problems.push(format!("switchover of {cluster}: {e}"));
                }
            }
        }
    }

    // 2. Leadership goes to another voter.
    if node.is_leader() {
        let voters: Vec<u64> =
            node.status().members.iter().filter(|m| m.voter && m.id != node.id).map(|m| m.id).collect();
        for to in voters {
            match run(Operation::TransferLeadership { to }).await {
                Ok(_) => {
                    report.handed_over_to = Some(to);
                    break;
                }
                Err(e) => report.problems.push(format!("leadership to peer {to}: {e}")),
            }
        }
        // The new leader must be known here before the removal can be routed to it.
        while node.leader().is_none_or(|(id, _)| id == node.id) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // 3. Out of the group.
    match run(Operation::RemovePeer { id: node.id }).await {
        Ok(summary) => {
            tracing::info!(%summary, "left the Raft group");
            report.removed = true;
            if let Err(e) =
                std::fs::write(left_marker(data_dir), b"this peer left the Raft group at its last stop\n")
            {
                report.problems.push(format!("cannot write {}: {e}", left_marker(data_dir).display()));
            }
        }
        Err(e) => report.problems.push(format!("removal: {e}")),
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_state_is_set_aside_once_after_a_leave() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!set_aside_after_leave(dir.path()).unwrap());
        std::fs::create_dir(dir.path().join("raft")).unwrap();
        std::fs::write(dir.path().join("raft/LOG"), b"x").unwrap();
        std::fs::write(left_marker(dir.path()), b"").unwrap();
        assert!(set_aside_after_leave(dir.path()).unwrap());
        assert!(!dir.path().join("raft").exists());
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("raft.left-"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert!(!set_aside_after_leave(dir.path()).unwrap());
    }
}
