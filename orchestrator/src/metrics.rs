//! Prometheus metrics of the peer, served as text on `GET /metrics`.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::topology::InstanceKey;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    instance: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackupLabels {
    cluster: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MirrorLabels {
    item: &'static str,
    outcome: &'static str,
}

fn converge_histogram() -> Histogram {
    // 10 ms .. ~80 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.01, 2.0, 14))
}

fn probe_latency_histogram() -> Histogram {
    // 1 ms .. ~2 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 12))
}

/// Every metric the peer exports.
pub struct Metrics {
    registry: Mutex<Registry>,
    probes: Family<ProbeLabels, Counter>,
    probe_latency: Family<InstanceLabels, Histogram, fn() -> Histogram>,
    instance_up: Family<InstanceLabels, Gauge>,
    known_instances: Gauge,
    clusters: Gauge,
    raft_term: Gauge,
    raft_is_leader: Gauge,
    raft_role: Gauge,
    raft_commit_index: Gauge,
    raft_applied_index: Gauge,
    raft_heartbeat_age: Gauge<f64, AtomicU64>,
    aws_call_errors: Family<OperationLabels, Counter>,
    aws_reconcile_lag: Family<ClusterLabels, Gauge<f64, AtomicU64>>,
    aws_write_group_converge: Histogram,
    aws_mirror_writes: Family<MirrorLabels, Counter>,
    backup: BackupMetrics,
}

/// Backups and the binlog archive.
struct BackupMetrics {
    last_success: Family<BackupLabels, Gauge>,
    duration: Family<BackupLabels, Gauge<f64, AtomicU64>>,
    size: Family<BackupLabels, Gauge>,
    failures: Family<BackupLabels, Counter>,
    segments_archived: Family<ClusterLabels, Counter>,
    archived_bytes: Family<ClusterLabels, Counter>,
    recovery_point: Family<ClusterLabels, Gauge<f64, AtomicU64>>,
    archive_lag: Family<ClusterLabels, Gauge>,
    archive_gaps: Family<ClusterLabels, Gauge>,
    archive_segments: Family<ClusterLabels, Gauge>,
}

impl BackupMetrics {
    fn register(registry: &mut Registry) -> BackupMetrics {
        let m = BackupMetrics {
            last_success: Family::default(),
            duration: Family::default(),
            size: Family::default(),
            failures: Family::default(),
            segments_archived: Family::default(),
            archived_bytes: Family::default(),
            recovery_point: Family::default(),
            archive_lag: Family::default(),
            archive_gaps: Family::default(),
            archive_segments: Family::default(),
        };
        registry.register(
            "backup_last_success_timestamp_seconds",
            "When the newest complete backup of each kind finished (Unix seconds)",
            m.last_success.clone(),
        );
        registry.register(
            "backup_duration_seconds",
            "How long the last backup of each kind took",
            m.duration.clone(),
        );
        registry.register(
            "backup_size_bytes",
            "Bytes stored by the last backup of each kind",
            m.size.clone(),
        );
        registry.register("backup_failures", "Backups that failed, by kind", m.failures.clone());
        registry.register(
            "binlog_archive_segments_written",
            "Binlog segments this peer archived",
            m.segments_archived.clone(),
        );
        registry.register(
            "binlog_archive_bytes_written",
            "Bytes of binlog segments this peer stored",
            m.archived_bytes.clone(),
        );
        registry.register(
            "binlog_archive_recovery_point_seconds",
            "From the newest archived transaction's commit to its segment being stored (this peer's archiver)",
            m.recovery_point.clone(),
        );
        registry.register(
            "binlog_archive_lag_seconds",
            "At least how far the archive is behind the master (the leader's upkeep; 0 when caught up)",
            m.archive_lag.clone(),
        );
        registry.register(
            "binlog_archive_gaps",
            "Gaps in the binlog archive (the leader's upkeep)",
            m.archive_gaps.clone(),
        );
        registry.register(
            "binlog_archive_segments",
            "Segments in the binlog archive (the leader's upkeep)",
            m.archive_segments.clone(),
        );
        m
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("orchestrator");
        let probes = Family::<ProbeLabels, Counter>::default();
        let probe_latency = Family::<InstanceLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            probe_latency_histogram as fn() -> Histogram,
        );
        let instance_up = Family::<InstanceLabels, Gauge>::default();
        let known_instances = Gauge::default();
        let clusters = Gauge::default();
        registry.register("probes", "Instance probes by outcome (ok, error)", probes.clone());
        registry.register(
            "probe_duration_seconds",
            "Time one probe of an instance took",
            probe_latency.clone(),
        );
        registry.register(
            "instance_up",
            "1 when the last probe of the instance succeeded",
            instance_up.clone(),
        );
        registry.register("known_instances", "Instances discovery knows", known_instances.clone());
        registry.register("clusters", "Clusters discovery has formed", clusters.clone());
        let raft_term = Gauge::default();
        let raft_is_leader = Gauge::default();
        let raft_role = Gauge::default();
        let raft_commit_index = Gauge::default();
        let raft_applied_index = Gauge::default();
        let raft_heartbeat_age = Gauge::<f64, AtomicU64>::default();
        registry.register("raft_term", "Current Raft term", raft_term.clone());
        registry.register("raft_is_leader", "1 on the Raft leader", raft_is_leader.clone());
        registry.register(
            "raft_role",
            "Raft role: 0 learner, 1 follower, 2 candidate, 3 leader, -1 shut down",
            raft_role.clone(),
        );
        registry.register("raft_commit_index", "Last committed log index", raft_commit_index.clone());
        registry.register("raft_applied_index", "Last applied log index", raft_applied_index.clone());
        registry.register(
            "raft_last_heartbeat_age_seconds",
            "Seconds since this follower last accepted entries from a leader (0 on the leader)",
            raft_heartbeat_age.clone(),
        );
        let aws_call_errors = Family::<OperationLabels, Counter>::default();
        let aws_reconcile_lag = Family::<ClusterLabels, Gauge<f64, AtomicU64>>::default();
        let aws_write_group_converge = converge_histogram();
        let aws_mirror_writes = Family::<MirrorLabels, Counter>::default();
        registry.register("aws_call_errors", "Failed AWS calls by API operation", aws_call_errors.clone());
        registry.register(
            "aws_reconcile_lag_seconds",
            "How long the NLB target groups have not matched Raft (0 when they match)",
            aws_reconcile_lag.clone(),
        );
        registry.register(
            "aws_write_group_converge_seconds",
            "From a master change recorded in Raft to the write target group holding exactly the new master",
            aws_write_group_converge.clone(),
        );
        registry.register(
            "aws_mirror_writes",
            "DynamoDB mirror writes by item and outcome (written, rejected, error)",
            aws_mirror_writes.clone(),
        );
        let backup = BackupMetrics::register(&mut registry);
        Self {
            backup,
            aws_call_errors,
            aws_reconcile_lag,
            aws_write_group_converge,
            aws_mirror_writes,
            registry: Mutex::new(registry),
            probes,
            probe_latency,
            instance_up,
            known_instances,
            clusters,
            raft_term,
            raft_is_leader,
            raft_role,
            raft_commit_index,
            raft_applied_index,
            raft_heartbeat_age,
        }
    }

    /// One failed AWS call.
    pub fn aws_call_failed(&self, operation: &'static str) {
        self.aws_call_errors.get_or_create(&OperationLabels { operation }).inc();
    }

    /// How long `cluster`'s target groups have differed from Raft (0: they match).
    pub fn set_aws_reconcile_lag(&self, cluster: &str, lag: Duration) {
        self.aws_reconcile_lag
            .get_or_create(&ClusterLabels { cluster: cluster.to_string() })
            .set(lag.as_secs_f64());
    }

    /// A master change reached the write target group after `took`.
    pub fn aws_write_group_converged(&self, took: Duration) {
        self.aws_write_group_converge.observe(took.as_secs_f64());
    }

    /// One DynamoDB mirror write of `item` ended in `outcome`.
    pub fn aws_mirror_write(&self, item: &'static str, outcome: &'static str) {
        self.aws_mirror_writes.get_or_create(&MirrorLabels { item, outcome }).inc();
    }

    /// A backup of `kind` ended.
    pub fn backup_finished(&self, cluster: &str, kind: &str, ok: bool, duration_ms: i64, stored_bytes: u64) {
        let labels = BackupLabels { cluster: cluster.to_string(), kind: kind.to_string() };
        if ok {
            self.backup.last_success.get_or_create(&labels).set(crate::unix_millis_now() / 1000);
            self.backup.duration.get_or_create(&labels).set(duration_ms as f64 / 1000.0);
            self.backup.size.get_or_create(&labels).set(stored_bytes as i64);
        } else {
            self.backup.failures.get_or_create(&labels).inc();
        }
    }

    /// This peer's archiver stored a segment whose newest transaction committed at
    /// `last_commit_micros`.
    pub fn binlog_segment_archived(&self, cluster: &str, stored_bytes: u64, last_commit_micros: i64) {
        let labels = ClusterLabels { cluster: cluster.to_string() };
        self.backup.segments_archived.get_or_create(&labels).inc();
        self.backup.archived_bytes.get_or_create(&labels).inc_by(stored_bytes);
        let point = (crate::unix_millis_now() * 1000 - last_commit_micros) as f64 / 1e6;
        self.backup.recovery_point.get_or_create(&labels).set(point.max(0.0));
    }

    /// What the leader's upkeep read from the catalog.
    pub fn backup_catalog(
        &self,
        cluster: &str,
        last_full_ms: Option<i64>,
        last_incremental_ms: Option<i64>,
        gaps: usize,
        segments: usize,
        archive_lag_s: Option<i64>,
    ) {
        for (kind, at) in [("full", last_full_ms), ("incremental", last_incremental_ms)] {
            if let Some(at) = at {
                let labels = BackupLabels { cluster: cluster.to_string(), kind: kind.into() };
                self.backup.last_success.get_or_create(&labels).set(at / 1000);
            }
        }
        let labels = ClusterLabels { cluster: cluster.to_string() };
        self.backup.archive_gaps.get_or_create(&labels).set(gaps as i64);
        self.backup.archive_segments.get_or_create(&labels).set(segments as i64);
        self.backup.archive_lag.get_or_create(&labels).set(archive_lag_s.unwrap_or(0));
    }

    /// Raft gauges; `heartbeat_age_s` is `None` before any contact.
    pub fn set_raft(
        &self,
        term: u64,
        is_leader: bool,
        role: i64,
        committed: u64,
        applied: u64,
        heartbeat_age_s: Option<f64>,
    ) {
        self.raft_term.set(term as i64);
        self.raft_is_leader.set(i64::from(is_leader));
        self.raft_role.set(role);
        self.raft_commit_index.set(committed as i64);
        self.raft_applied_index.set(applied as i64);
        self.raft_heartbeat_age.set(heartbeat_age_s.unwrap_or(f64::NAN));
    }

    pub fn record_probe(&self, key: &InstanceKey, ok: bool, latency: Duration) {
        let instance = key.to_string();
        self.probes
            .get_or_create(&ProbeLabels {
                instance: instance.clone(),
                outcome: if ok { "ok" } else { "error" },
            })
            .inc();
        let labels = InstanceLabels { instance };
        self.probe_latency.get_or_create(&labels).observe(latency.as_secs_f64());
        self.instance_up.get_or_create(&labels).set(i64::from(ok));
    }

    pub fn set_topology_size(&self, instances: usize, clusters: usize) {
        self.known_instances.set(instances as i64);
        self.clusters.set(clusters as i64);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_metrics_are_exported() {
        let m = Metrics::new();
        let k = InstanceKey::new("127.0.0.1", 3306);
        m.record_probe(&k, true, Duration::from_millis(3));
        m.record_probe(&k, false, Duration::from_millis(900));
        m.set_topology_size(3, 1);
        let text = m.encode();
        assert!(
            text.contains(r#"orchestrator_probes_total{instance="127.0.0.1:3306",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"orchestrator_instance_up{instance="127.0.0.1:3306"} 0"#), "{text}");
        assert!(
            text.contains("orchestrator_probe_duration_seconds_count{instance=\"127.0.0.1:3306\"} 2"),
            "{text}"
        );
        assert!(text.contains("orchestrator_known_instances 3"), "{text}");
        m.set_raft(7, true, 3, 42, 41, Some(0.0));
        let text = m.encode();
        assert!(text.contains("orchestrator_raft_term 7"), "{text}");
        assert!(text.contains("orchestrator_raft_commit_index 42"), "{text}");
        assert!(text.contains("orchestrator_raft_is_leader 1"), "{text}");
    }
}
