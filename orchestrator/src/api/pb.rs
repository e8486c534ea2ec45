//! Conversions from the model (topology, replicated state, operation replies) to the
//! protobuf messages of `orch-proto`. The HTTP API answers with the same messages as
//! JSON where it has no older shape of its own.

use orch_proto::v1 as pb;

use crate::analysis::{describe, Problem};
use crate::aws::controller::ClusterAwsStatus;
use crate::ops::{rule_name, OpReply, PlanView};
use crate::raft::RaftStatus;
use crate::state::{AuditEntry, ClusterState, Downtime, RecoveryKind, RecoveryRecord};
use crate::topology::{ClusterInstance, ClusterSnapshot, InstanceKey};

fn key_or_empty(k: &Option<InstanceKey>) -> String {
    k.as_ref().map(ToString::to_string).unwrap_or_default()
}

/// An instance, with what the replicated state says of it (downtime, promotion rule).
pub fn instance(i: &ClusterInstance, state: &ClusterState, now_unix_ms: i64) -> pb::Instance {
    let s = &i.state;
    let probe = s.last_probe.as_ref();
    let replication = probe.and_then(|p| p.replication.as_ref()).map(|r| pb::Replication {
        source: r.source.to_string(),
        io_thread: r.io_thread.to_string(),
        sql_thread: r.sql_thread.to_string(),
        last_io_error: r.last_io_error.clone(),
        last_sql_error: r.last_sql_error.clone(),
        seconds_behind: r.seconds_behind.map(|v| v as i64).unwrap_or(-1),
        gtid_mode: r.gtid_mode.clone(),
    });
    pb::Instance {
        key: s.key.to_string(),
        role: i.role.as_str().to_string(),
        reachable: s.reachable,
        last_error: s.last_error.clone().unwrap_or_default(),
        server_id: probe.map(|p| p.server_id).unwrap_or(0),
        version: probe.map(|p| p.version.clone()).unwrap_or_default(),
        flavor: probe.map(|p| p.flavor.to_string()).unwrap_or_default(),
        read_only: probe.is_some_and(|p| p.read_only),
        gtid_executed: probe.map(|p| p.gtid_executed.to_string()).unwrap_or_default(),
        gtid_received: probe
            .and_then(|p| p.replication.as_ref())
            .map(|r| r.received.to_string())
            .unwrap_or_default(),
        replication,
        replicas: probe.map(|p| p.replicas.iter().map(ToString::to_string).collect()).unwrap_or_default(),
        probe_latency_ms: s.probe_latency_ms,
        semi_sync_master: probe.is_some_and(|p| p.semi_sync.master_enabled),
        semi_sync_replica: probe.is_some_and(|p| p.semi_sync.replica_enabled),
        last_checked_unix_ms: s.last_checked_unix_ms,
        downtimed: state.is_downtimed(&s.key, now_unix_ms),
        promotion_rule: rule_name(state.promotion_rules.get(&s.key).copied().unwrap_or_default()).to_string(),
    }
}

/// A cluster as this peer sees it, with the Raft group's view of it.
pub fn topology(c: &ClusterSnapshot, state: &ClusterState, now_unix_ms: i64) -> pb::ClusterTopology {
    let record = state.clusters.get(&c.alias);
    pb::ClusterTopology {
        alias: c.alias.clone(),
        master: c.master.to_string(),
        instances: c.instances.iter().map(|i| instance(i, state, now_unix_ms)).collect(),
        snapshot_unix_ms: c.taken_unix_ms,
        recorded_master: record.map(|r| key_or_empty(&r.master)).unwrap_or_default(),
        open_recovery_id: state.open_recovery(&c.alias).map(|r| r.id).unwrap_or(0),
        fencing_epoch: state.fencing_epochs.get(&c.alias).copied().unwrap_or(0),
    }
}

pub fn cluster_summary(c: &ClusterSnapshot, state: &ClusterState) -> pb::ClusterSummary {
    pb::ClusterSummary {
        alias: c.alias.clone(),
        master: c.master.to_string(),
        instances: c.instances.len() as u32,
        reachable: c.reachable_count() as u32,
        recorded_master: state.clusters.get(&c.alias).map(|r| key_or_empty(&r.master)).unwrap_or_default(),
    }
}

pub fn kind_name(kind: RecoveryKind) -> &'static str {
    match kind {
        RecoveryKind::Failover => "failover",
        RecoveryKind::ForcedFailover => "forced_failover",
        RecoveryKind::Switchover => "switchover",
    }
}

pub fn recovery(r: &RecoveryRecord) -> pb::Recovery {
    let status = match r.success {
        None => "running",
        Some(true) => "succeeded",
        Some(false) => "failed",
    };
    pb::Recovery {
        id: r.id,
        cluster: r.cluster.clone(),
        kind: kind_name(r.kind).to_string(),
        failed_master: key_or_empty(&r.failed_master),
        reason: r.reason.clone(),
        epoch: r.epoch,
        candidate: key_or_empty(&r.candidate),
        started_unix_ms: r.started_unix_ms,
        ended_unix_ms: r.ended_unix_ms.unwrap_or(0),
        status: status.to_string(),
        new_master: key_or_empty(&r.new_master),
        summary: r.summary.clone(),
        requested_by: r.requested_by.clone().unwrap_or_default(),
        acknowledged_by: r.acknowledged_by.clone().unwrap_or_default(),
        acknowledge_comment: r.acknowledge_comment.clone(),
        steps: r.steps.iter().map(|s| pb::RecoveryStep { at_ms: s.at_ms, text: s.text.clone() }).collect(),
        writable_after_ms: r.writable_after_ms.unwrap_or(0),
    }
}

pub fn plan(p: &PlanView) -> pb::RecoveryPlan {
    let keys = |v: &[InstanceKey]| v.iter().map(ToString::to_string).collect();
    pb::RecoveryPlan {
        cluster: p.cluster.clone(),
        kind: kind_name(p.kind).to_string(),
        master: p.master.to_string(),
        candidate: key_or_empty(&p.candidate),
        donor: key_or_empty(&p.donor),
        repoint: keys(&p.repoint),
        unreachable: keys(&p.unreachable),
        passed_over: p
            .passed_over
            .iter()
            .map(|(k, why)| pb::PassedOver { instance: k.to_string(), reason: why.clone() })
            .collect(),
        refused: p.refused.clone().unwrap_or_default(),
    }
}

pub fn problem(cluster: &str, p: &Problem) -> pb::Problem {
    pb::Problem {
        cluster: cluster.to_string(),
        code: p.code.to_string(),
        instance: p.instance.to_string(),
        reason: p.reason.clone(),
        description: describe(p.code).description.to_string(),
        priority: u32::from(p.priority),
        needs_failover: p.needs_failover,
    }
}

pub fn downtime(instance: &InstanceKey, d: &Downtime) -> pb::Downtime {
    pb::Downtime {
        instance: instance.to_string(),
        owner: d.owner.clone(),
        reason: d.reason.clone(),
        since_unix_ms: d.since_unix_ms,
        until_unix_ms: d.until_unix_ms,
    }
}

pub fn raft_state(s: &RaftStatus) -> pb::RaftState {
    pb::RaftState {
        node_id: s.node_id,
        role: s.role.clone(),
        term: s.term,
        leader_id: s.leader_id.unwrap_or(0),
        leader_http: s.leader_http.clone().unwrap_or_default(),
        last_log_index: s.last_log_index.unwrap_or(0),
        committed_index: s.committed_index,
        applied_index: s.applied_index.unwrap_or(0),
        members: s
            .members
            .iter()
            .map(|m| pb::RaftMember {
                id: m.id,
                raft: m.raft.clone(),
                http: m.http.clone(),
                voter: m.voter,
                instance_id: m.instance_id.clone().unwrap_or_default(),
                instance_state: m.instance_state.clone().unwrap_or_default(),
                last_contact_ms: m.last_contact_ms.map(|ms| ms as i64).unwrap_or(-1),
            })
            .collect(),
        quorum_contact: s.quorum_contact,
        reachable_peers: s.reachable_peers as u32,
        last_leader_contact_ms: s.last_leader_contact_ms.map(|ms| ms as i64).unwrap_or(-1),
    }
}

pub fn cluster_aws(cluster: &str, a: &ClusterAwsStatus) -> pb::ClusterAws {
    pb::ClusterAws {
        cluster: cluster.to_string(),
        desired_write: a.desired_write.clone().unwrap_or_default(),
        desired_read: a.desired_read.iter().cloned().collect(),
        write_targets: a.write_targets.clone(),
        read_targets: a.read_targets.clone(),
        converged: a.converged,
        converged_unix_ms: a.converged_unix_ms.unwrap_or(0),
        last_error: a.last_error.clone().unwrap_or_default(),
        master_lock_epoch: a.master_lock_epoch.unwrap_or(0),
        mirror_rejected: a.mirror_rejected.clone().unwrap_or_default(),
    }
}

pub fn audit(e: &AuditEntry) -> pb::AuditEntry {
    pb::AuditEntry {
        at_unix_ms: e.at_unix_ms,
        who: e.who.clone(),
        scope: e.scope.clone(),
        from: e.from.clone(),
        peer: e.peer,
        operation: e.operation.clone(),
        arguments: e
            .arguments
            .iter()
            .map(|(name, value)| pb::AuditArgument { name: name.clone(), value: value.clone() })
            .collect(),
        result: e.result.as_str().to_string(),
        detail: e.detail.clone(),
    }
}

/// A committed operation's answer, as the message its RPC returns.
pub enum Reply {
    Operation(pb::OperationReply),
    Discover(pb::DiscoverReply),
    Recovery(pb::RecoveryReply),
    Job(pb::BackupJob),
}

/// A backup job as the API shows it.
pub fn job(j: &crate::backup::jobs::JobView) -> pb::BackupJob {
    pb::BackupJob {
        id: j.id.clone(),
        kind: j.kind.clone(),
        cluster: j.cluster.clone(),
        instance: j.instance.clone(),
        runner: j.runner,
        runner_http: j.runner_http.clone(),
        phase: j.phase.clone(),
        bytes_done: j.bytes_done,
        bytes_total: j.bytes_total,
        stored_bytes: j.stored_bytes,
        started_unix_ms: j.started_unix_ms,
        ended_unix_ms: j.ended_unix_ms,
        status: j.status.name().to_string(),
        result: j.result.clone(),
        backup_id: j.backup_id.clone(),
        phases: j
            .phases
            .iter()
            .map(|(name, at)| pb::JobPhase { name: name.clone(), started_unix_ms: *at })
            .collect(),
    }
}

/// One backup of `backup list`.
pub fn backup_entry(row: &crate::backup::catalog::BackupRow) -> pb::BackupEntry {
    let m = &row.manifest;
    pb::BackupEntry {
        id: m.id.clone(),
        kind: m.kind.name().to_string(),
        method: m.method.name().to_string(),
        parent: m.parent.clone().unwrap_or_default(),
        source: m.source.clone(),
        flavor: m.flavor.clone(),
        server_version: m.server_version.clone(),
        gtid_executed: m.gtid_executed.to_string(),
        started_unix_ms: m.started_at_ms,
        duration_ms: m.duration_ms() as u64,
        raw_bytes: m.raw_bytes,
        stored_bytes: m.stored_bytes,
        parts: m.parts.len() as u32,
        chain_complete: row.chain_complete,
        chain_problem: row.chain_problem.clone().unwrap_or_default(),
        consistent_unix_ms: m.consistent_at_ms,
        encrypted: m.encryption.is_some(),
        staged_locally: m.staged_locally,
        lsn_from: m.lsn.map(|l| l.from).unwrap_or(0),
        lsn_to: m.lsn.map(|l| l.to).unwrap_or(0),
    }
}

pub fn reply(r: &OpReply, state: &ClusterState, now_unix_ms: i64) -> Reply {
    match r {
        OpReply::Done { log_index, message, warning } => Reply::Operation(pb::OperationReply {
            log_index: *log_index,
            message: message.clone(),
            warning: warning.clone(),
        }),
        OpReply::Discovered { instance: i, log_index } => Reply::Discover(pb::DiscoverReply {
            key: i.state.key.to_string(),
            instance: Some(instance(i, state, now_unix_ms)),
            log_index: *log_index,
        }),
        OpReply::Recovery(r) => {
            Reply::Recovery(pb::RecoveryReply { plan: None, recovery: Some(recovery(r)) })
        }
        OpReply::Plan(p) => Reply::Recovery(pb::RecoveryReply { plan: Some(plan(p)), recovery: None }),
        OpReply::Job(j) => Reply::Job(job(j)),
    }
}
