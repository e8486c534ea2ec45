//! Which instance a backup copies, pure: by default a replica that replicates, is not
//! downtimed by anyone else, lags least and runs a peer on its host (the tool runs
//! there); replicas the operators prefer to promote are passed over while another
//! will do, so a backup never holds up the best failover candidate. Or the master, or
//! a named instance.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::BackupSource;
use crate::state::{Downtime, PromotionRule};
use crate::topology::{ClusterSnapshot, InstanceKey, Role};

/// Replicas lagging more than this are not backed up (their copy would be old).
pub const MAX_SOURCE_LAG_S: u64 = 300;

/// What the choice looks at besides the topology.
pub struct SourceFacts<'a> {
    pub downtimes: &'a BTreeMap<InstanceKey, Downtime>,
    pub rules: &'a BTreeMap<InstanceKey, PromotionRule>,
    /// Hosts a Raft member's peer runs on.
    pub peer_hosts: &'a BTreeSet<String>,
    pub now_ms: i64,
    /// The downtime owner backups use: their own downtimes do not count.
    pub backup_owner: &'a str,
    /// The source of the newest backup an incremental can apply on: among replicas
    /// equally fit, it is chosen, so incrementals go on (they apply only on a copy of
    /// the same server's data).
    pub chain_source: Option<&'a InstanceKey>,
}

/// The instance to copy, or why none can be.
pub fn choose_source(
    cluster: &ClusterSnapshot,
    wanted: &BackupSource,
    facts: &SourceFacts<'_>,
) -> Result<InstanceKey, String> {
    let downtimed = |k: &InstanceKey| {
        facts
            .downtimes
            .get(k)
            .is_some_and(|d| d.until_unix_ms > facts.now_ms && d.owner != facts.backup_owner)
    };
    let instance = |k: &InstanceKey| cluster.instances.iter().find(|i| &i.state.key == k);
    match wanted {
        BackupSource::Master | BackupSource::Instance(_) => {
            let key = match wanted {
                BackupSource::Instance(k) => k.clone(),
                _ => cluster.master.clone(),
            };
            let Some(i) = instance(&key) else {
                return Err(format!("{key} is not an instance of cluster {}", cluster.alias));
            };
            if !i.state.reachable {
                return Err(format!("{key} is unreachable"));
            }
            if !facts.peer_hosts.contains(&key.host) {
                return Err(format!("no orchestrator peer runs on {} to run the backup tool", key.host));
            }
            Ok(key)
        }
        BackupSource::Replica => {
            let mut passed = Vec::new();
            let mut candidates = Vec::new();
            for i in &cluster.instances {
                let key = &i.state.key;
                if i.role != Role::Replica {
                    continue;
                }
                let lag = i
                    .state
                    .last_probe
                    .as_ref()
                    .and_then(|p| p.replication.as_ref())
                    .map(|r| (r.is_replicating(), r.seconds_behind));
                let why = if !i.state.reachable {
                    Some("unreachable".to_string())
                } else if downtimed(key) {
                    Some("downtimed".into())
                } else if !facts.peer_hosts.contains(&key.host) {
                    Some("no peer on its host".into())
                } else {
                    match lag {
                        Some((true, Some(s))) if s <= MAX_SOURCE_LAG_S => None,
                        Some((true, Some(s))) => Some(format!("{s} s behind")),
                        _ => Some("not replicating".into()),
                    }
                };
                match why {
                    Some(w) => passed.push(format!("{key}: {w}")),
                    None => {
                        let preferred = facts.rules.get(key) == Some(&PromotionRule::Prefer);
                        let behind = lag.and_then(|(_, s)| s).unwrap_or(0);
                        let other_chain = facts.chain_source != Some(key);
                        candidates.push((preferred, other_chain, behind, key.clone()));
                    }
                }
            }
            candidates.sort();
            candidates.into_iter().next().map(|(_, _, _, k)| k).ok_or_else(|| {
                if passed.is_empty() {
                    format!(
                        "cluster {} has no replica to back up (give --source master to copy the master)",
                        cluster.alias
                    )
                } else {
                    format!(
                        "no replica of cluster {} can be backed up ({})",
                        cluster.alias,
                        passed.join("; ")
                    )
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{fixtures, ClusterInstance, ThreadState};

    fn instance(key: &str, role: Role, lag: Option<u64>, running: bool) -> ClusterInstance {
        let source = (role == Role::Replica).then_some("10.0.0.1:3306");
        let mut state = fixtures::reachable(key, source);
        if let Some(r) = state.last_probe.as_mut().and_then(|p| p.replication.as_mut()) {
            r.seconds_behind = lag;
            if !running {
                r.io_thread = ThreadState::Stopped;
            }
        }
        ClusterInstance { role, state }
    }

    fn cluster() -> ClusterSnapshot {
        ClusterSnapshot {
            alias: "main".into(),
            master: "10.0.0.1:3306".parse().unwrap(),
            instances: vec![
                instance("10.0.0.1:3306", Role::Master, None, true),
                instance("10.0.0.2:3306", Role::Replica, Some(3), true),
                instance("10.0.0.3:3306", Role::Replica, Some(0), true),
                instance("10.0.0.4:3306", Role::Replica, Some(0), false),
            ],
            taken_unix_ms: 0,
        }
    }

    #[test]
    fn the_least_lagging_replica_not_preferred_for_promotion_is_copied() {
        let hosts: BTreeSet<String> =
            ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"].map(String::from).into();
        let mut rules = BTreeMap::new();
        let downtimes = BTreeMap::new();
        fn facts<'a>(
            rules: &'a BTreeMap<InstanceKey, PromotionRule>,
            downtimes: &'a BTreeMap<InstanceKey, Downtime>,
            hosts: &'a BTreeSet<String>,
        ) -> SourceFacts<'a> {
            SourceFacts {
                downtimes,
                rules,
                peer_hosts: hosts,
                now_ms: 0,
                backup_owner: "orchestrator:backup",
                chain_source: None,
            }
        }
        let c = cluster();
        assert_eq!(
            choose_source(&c, &BackupSource::Replica, &facts(&rules, &downtimes, &hosts))
                .unwrap()
                .to_string(),
            "10.0.0.3:3306"
        );
        // The replica holding the incremental chain is kept, though it lags more.
        let chain: InstanceKey = "10.0.0.2:3306".parse().unwrap();
        let keep = SourceFacts { chain_source: Some(&chain), ..facts(&rules, &downtimes, &hosts) };
        assert_eq!(choose_source(&c, &BackupSource::Replica, &keep).unwrap(), chain);
        rules.insert("10.0.0.3:3306".parse().unwrap(), PromotionRule::Prefer);
        assert_eq!(
            choose_source(&c, &BackupSource::Replica, &facts(&rules, &downtimes, &hosts))
                .unwrap()
                .to_string(),
            "10.0.0.2:3306"
        );
        let mut d = BTreeMap::new();
        for k in ["10.0.0.2:3306", "10.0.0.3:3306"] {
            d.insert(
                k.parse().unwrap(),
                Downtime {
                    owner: "alice".into(),
                    reason: String::new(),
                    since_unix_ms: 0,
                    until_unix_ms: 10,
                },
            );
        }
        let e = choose_source(&c, &BackupSource::Replica, &facts(&rules, &d, &hosts)).unwrap_err();
        assert!(
            e.contains("10.0.0.2:3306: downtimed") && e.contains("10.0.0.4:3306: not replicating"),
            "{e}"
        );
        assert_eq!(
            choose_source(&c, &BackupSource::Master, &facts(&rules, &d, &hosts)).unwrap().to_string(),
            "10.0.0.1:3306"
        );
        let e = choose_source(
            &c,
            &BackupSource::Instance("10.0.0.9:3306".parse().unwrap()),
            &facts(&rules, &d, &hosts),
        )
        .unwrap_err();
        assert!(e.contains("not an instance"), "{e}");
    }
}
