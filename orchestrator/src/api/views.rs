//! The read side of the operator API, shared by gRPC and HTTP: each view is built from
//! this peer's topology and its applied Raft state (problems and the AWS view come
//! from the leader).

use orch_proto::v1 as pb;

use super::pb as conv;
use super::AppState;
use crate::auth::Caller;
use crate::ops::{parse, rule_name, OpError};
use crate::unix_millis_now;

pub fn status(s: &AppState, caller: &Caller) -> pb::StatusReply {
    let raft = s.raft.status();
    pb::StatusReply {
        node_id: s.node_id,
        version: env!("CARGO_PKG_VERSION").to_string(),
        http_address: s.http_address.to_string(),
        uptime_seconds: s.started.elapsed().as_secs(),
        known_instances: s.store.instance_count() as u32,
        clusters: s.store.cluster_count() as u32,
        raft_role: raft.role.clone(),
        leader_id: raft.leader_id.unwrap_or(0),
        raft_term: raft.term,
        quorum_contact: raft.quorum_contact,
        caller: caller.identity.name.clone(),
        caller_scope: caller.identity.scope.to_string(),
    }
}

pub fn clusters(s: &AppState) -> pb::ListClustersReply {
    let clusters = s.store.clusters();
    s.raft.with_state(|state| pb::ListClustersReply {
        clusters: clusters.iter().map(|c| conv::cluster_summary(c, state)).collect(),
    })
}

/// By alias, or by any member's `host:port`.
pub fn cluster(s: &AppState, hint: &str) -> Result<pb::ClusterTopology, OpError> {
    let hint = parse::cluster("cluster", hint)?;
    let c = s.store.cluster(&hint).ok_or_else(|| OpError::NotFound(format!("no cluster `{hint}`")))?;
    Ok(s.raft.with_state(|state| conv::topology(&c, state, unix_millis_now())))
}

pub fn instance(s: &AppState, key: &str) -> Result<pb::Instance, OpError> {
    let key = parse::instance("instance", key)?;
    let i =
        s.store.instance(&key).ok_or_else(|| OpError::NotFound(format!("instance {key} is not known")))?;
    Ok(s.raft.with_state(|state| conv::instance(&i, state, unix_millis_now())))
}

pub async fn problems(s: &AppState, cluster: &str) -> Result<pb::ListProblemsReply, OpError> {
    let findings = s.ops.problems().await?;
    let problems = findings
        .problems
        .iter()
        .filter(|(alias, _)| cluster.is_empty() || alias.as_str() == cluster)
        .flat_map(|(alias, problems)| problems.iter().map(move |p| conv::problem(alias, p)))
        .collect();
    Ok(pb::ListProblemsReply {
        problems,
        checked_unix_ms: findings.checked_unix_ms,
        leader_id: s.raft.leader().map(|(id, _)| id).unwrap_or(0),
    })
}

pub fn recoveries(s: &AppState, cluster: &str, limit: u32) -> pb::ListRecoveriesReply {
    let (applied, recoveries) = (
        s.raft.status().applied_index.unwrap_or(0),
        s.raft.with_state(|state| {
            let matching: Vec<pb::Recovery> = state
                .recoveries
                .iter()
                .filter(|r| cluster.is_empty() || r.cluster == cluster)
                .map(conv::recovery)
                .collect();
            let skip = if limit == 0 { 0 } else { matching.len().saturating_sub(limit as usize) };
            matching.into_iter().skip(skip).collect::<Vec<_>>()
        }),
    );
    pb::ListRecoveriesReply { recoveries, applied_index: applied }
}

pub fn recovery(s: &AppState, id: u64) -> Result<pb::Recovery, OpError> {
    s.raft
        .with_state(|state| state.recoveries.iter().find(|r| r.id == id).map(conv::recovery))
        .ok_or_else(|| OpError::NotFound(format!("no recovery {id}")))
}

/// Downtimes in force (expired ones are not shown).
pub fn downtimes(s: &AppState) -> pb::ListDowntimesReply {
    let now = unix_millis_now();
    s.raft.with_state(|state| pb::ListDowntimesReply {
        downtimes: state
            .downtimes
            .iter()
            .filter(|(k, _)| state.is_downtimed(k, now))
            .map(|(k, d)| conv::downtime(k, d))
            .collect(),
    })
}

pub fn promotion_rules(s: &AppState) -> pb::ListPromotionRulesReply {
    s.raft.with_state(|state| pb::ListPromotionRulesReply {
        rules: state
            .promotion_rules
            .iter()
            .map(|(k, r)| pb::PromotionRule { instance: k.to_string(), rule: rule_name(*r).to_string() })
            .collect(),
    })
}

pub fn global_recoveries(s: &AppState) -> pb::GlobalRecoveriesReply {
    pb::GlobalRecoveriesReply { enabled: s.raft.with_state(|state| state.recoveries_enabled), log_index: 0 }
}

pub fn raft_state(s: &AppState) -> pb::RaftState {
    conv::raft_state(&raft_status(s))
}

/// Raft's status with each member's instance in the Auto Scaling group, when the
/// group is followed: `not in the group` when it was read and holds no instance there.
pub fn raft_status(s: &AppState) -> crate::raft::RaftStatus {
    let mut status = s.raft.status();
    if let Some(fleet) = s.fleet.as_ref().filter(|f| f.is_known()) {
        for m in &mut status.members {
            let host = crate::raft::service::host_of(&m.raft).unwrap_or_default();
            match fleet.instance_at(host) {
                Some(i) => {
                    m.instance_state = Some(format!("{}, {}", i.lifecycle, i.health));
                    m.instance_id = Some(i.id);
                }
                None => m.instance_state = Some("not in the group".into()),
            }
        }
    }
    status
}

pub async fn aws(s: &AppState) -> Result<pb::AwsView, OpError> {
    let view = s
        .ops
        .aws()
        .await?
        .ok_or_else(|| OpError::NotFound("no cluster has [clusters.aws] configured".into()))?;
    Ok(pb::AwsView {
        clusters: view.iter().map(|(alias, a)| conv::cluster_aws(alias, a)).collect(),
        leader_id: s.raft.leader().map(|(id, _)| id).unwrap_or(0),
    })
}

pub fn audit(s: &AppState, limit: u32) -> pb::ListAuditReply {
    let applied = s.raft.status().applied_index.unwrap_or(0);
    let entries = s.raft.with_state(|state| {
        let skip = if limit == 0 { 0 } else { state.audit.len().saturating_sub(limit as usize) };
        state.audit.iter().skip(skip).map(conv::audit).collect()
    });
    pb::ListAuditReply { entries, applied_index: applied }
}

/// What a cluster's bucket holds (read from S3 by this peer), with who takes a
/// backup and who archives now (the two lock items).
pub async fn backups(s: &AppState, cluster: &str) -> Result<pb::BackupListing, OpError> {
    let cluster = parse::cluster("cluster", cluster)?;
    let backups = s.ops.backups()?;
    let c = backups.cluster(&cluster).map_err(OpError::from)?;
    let catalog = backups.catalog(&cluster).await.map_err(OpError::from)?;
    let listing = catalog.listing();
    let now_s = unix_millis_now() / 1000;
    let held = |lease: Option<crate::aws::lease::Lease>| lease.filter(|l| l.expires_at > now_s);
    let running = held(c.backup_lock.read().await.map_err(|e| OpError::Failed(e.to_string()))?)
        .map(|l| format!("{} (held by {})", l.detail, l.holder))
        .unwrap_or_default();
    let archiver = held(c.archive_lock.read().await.map_err(|e| OpError::Failed(e.to_string()))?);
    Ok(pb::BackupListing {
        cluster: cluster.clone(),
        bucket: crate::backup::store::ObjectStore::bucket(c.store.as_ref()).to_string(),
        backups: listing.backups.iter().map(conv::backup_entry).collect(),
        incomplete: listing.incomplete.iter().map(|(k, id)| format!("{k} {id}")).collect(),
        oldest_restorable_unix_ms: listing.oldest_restorable_ms.unwrap_or(0),
        archive: Some(pb::BinlogArchive {
            segments: listing.segments as u32,
            stored_bytes: listing.archived_bytes,
            latest_commit_unix_us: listing.latest_archived_micros.unwrap_or(0),
            gaps: listing
                .gaps
                .iter()
                .map(|g| pb::ArchiveGap { after_segment: g.after_seq, missing: g.missing.to_string() })
                .collect(),
            archiver: archiver.as_ref().map(|l| l.holder.clone()).unwrap_or_default(),
            archiver_expires_unix_ms: archiver.map(|l| l.expires_at * 1000).unwrap_or(0),
        }),
        running,
    })
}
