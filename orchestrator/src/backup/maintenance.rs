//! The leader's backup upkeep, every `maintenance_interval_s`: read each cluster's
//! catalog, publish what it says (`/metrics`, `/api/problems`: archive gaps, a lagging
//! archive, failed backups), start the backup the schedule asks for, and apply
//! retention (never a parent or a segment a kept backup needs; failed backups' parts).

use std::sync::Arc;
use std::time::Duration;

use super::archive::Gap;
use super::catalog::{self, Retention, Schedule};
use super::manifest::{BackupKind, Method};
use super::service::{BackupService, ClusterBackups};
use super::store::ObjectStore;
use crate::analysis::{describe, AnalysisCode, Problem};
use crate::ops::Operation;
use crate::topology::InstanceKey;

/// A scheduled backup that failed is tried again after this long.
const SCHEDULE_RETRY: Duration = Duration::from_secs(600);

/// The last upkeep of one cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MaintenanceStatus {
    pub checked_unix_ms: i64,
    pub error: String,
    pub gaps: Vec<Gap>,
    /// The newest archived commit (Unix µs).
    pub latest_archived_micros: Option<i64>,
    pub last_full_ms: Option<i64>,
    pub last_incremental_ms: Option<i64>,
    /// When the schedule last started a backup, and what became of it.
    pub scheduled_at_ms: Option<i64>,
    pub scheduled_result: String,
    pub deleted: usize,
    /// Transactions the master had at the previous pass are still not archived:
    /// the archive is at least this many seconds behind.
    pub archive_lag_s: Option<i64>,
    /// The master's executed set at this pass, and when it was read.
    pub master_seen: Option<(crate::topology::gtid::GtidSet, i64)>,
}

impl BackupService {
    pub fn maintenance_status(&self, alias: &str) -> Option<MaintenanceStatus> {
        self.maintenance_status.lock().unwrap_or_else(|e| e.into_inner()).get(alias).cloned()
    }

    /// Backup problems of every cluster, as the leader's last upkeep found them.
    pub fn problems(&self) -> Vec<(String, Problem)> {
        let lag_limit_us = (self.config.backup.binlog_flush_s.max(1) as i64) * 6 * 1_000_000;
        let mut out = Vec::new();
        let all = self.maintenance_status.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (alias, status) in all {
            let master = self
                .raft
                .with_state(|s| s.clusters.get(&alias).and_then(|c| c.master.clone()))
                .unwrap_or_else(|| InstanceKey::new("unknown", 0));
            let problem = |code: AnalysisCode, reason: String| {
                let kind = describe(code);
                (
                    alias.clone(),
                    Problem {
                        code,
                        instance: master.clone(),
                        reason,
                        priority: kind.priority,
                        needs_failover: false,
                    },
                )
            };
            for gap in &status.gaps {
                out.push(problem(
                    AnalysisCode::BinlogArchiveGap,
                    format!(
                        "transactions {} were purged before they were archived (after segment {}): no restore crosses them",
                        gap.missing, gap.after_seq
                    ),
                ));
            }
            if let Some(lag) = status.archive_lag_s.filter(|l| *l * 1_000_000 > lag_limit_us) {
                out.push(problem(
                    AnalysisCode::BinlogArchiveLagging,
                    format!("transactions the master had {lag} s ago are not archived yet"),
                ));
            }
            if !status.error.is_empty() {
                out.push(problem(AnalysisCode::BackupFailing, status.error.clone()));
            } else if status.scheduled_result.starts_with("failed") {
                out.push(problem(AnalysisCode::BackupFailing, status.scheduled_result.clone()));
            }
        }
        out
    }

    /// Runs until `stop`; acts only while this peer leads.
    pub async fn run_maintenance(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let every = Duration::from_secs(self.config.backup.maintenance_interval_s);
        let mut next = tokio::time::Instant::now() + Duration::from_secs(2).min(every);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep_until(next) => {}
            }
            next = tokio::time::Instant::now() + every;
            if !self.raft.is_leader() {
                continue;
            }
            for alias in self.cluster_aliases() {
                let status = self.maintain(&alias).await;
                self.maintenance_status.lock().unwrap_or_else(|e| e.into_inner()).insert(alias, status);
            }
        }
    }

    /// One upkeep pass of one cluster.
    pub async fn maintain(self: &Arc<Self>, alias: &str) -> MaintenanceStatus {
        let mut status = self.maintenance_status(alias).unwrap_or_default();
        status.checked_unix_ms = crate::unix_millis_now();
        let Ok(c) = self.cluster(alias) else { return status };
        let master_now = self.discovery.store().cluster(alias).and_then(|cluster| {
            let m = cluster.instances.iter().find(|i| i.state.key == cluster.master)?;
            m.state.last_probe.as_ref().map(|p| (p.gtid_executed.clone(), crate::unix_millis_now()))
        });
        let catalog = match self.catalog(alias).await {
            Ok(catalog) => catalog,
            Err(e) => {
                status.error = format!("reading the backup catalog: {e}");
                return status;
            }
        };
        status.error.clear();
        let listing = catalog.listing();
        status.gaps = listing.gaps.clone();
        status.latest_archived_micros = listing.latest_archived_micros;
        let archived = super::archive::archived_history(&catalog.segments);
        status.archive_lag_s = match &status.master_seen {
            Some((seen, at)) if !catalog.segments.is_empty() && !seen.is_subset_of(&archived) => {
                Some((status.checked_unix_ms - at) / 1000)
            }
            _ => None,
        };
        status.master_seen = master_now;
        let newest = |kind: BackupKind| {
            catalog.manifests.iter().filter(|m| m.kind == kind).map(|m| m.finished_at_ms).max()
        };
        status.last_full_ms = newest(BackupKind::Full);
        status.last_incremental_ms = newest(BackupKind::Incremental);
        self.metrics.backup_catalog(
            alias,
            status.last_full_ms,
            status.last_incremental_ms,
            listing.gaps.len(),
            listing.segments,
            status.archive_lag_s,
        );
        let now = crate::unix_millis_now();
        // The schedule.
        let b = &self.config.backup;
        let schedule = Schedule { full_every_s: b.full_every_s, incremental_every_s: b.incremental_every_s };
        let incrementals = match self.config.backup.method() {
            Ok(Some(m)) => m.incremental(),
            _ => catalog
                .manifests
                .iter()
                .max_by_key(|m| m.started_at_ms)
                .is_none_or(|m| m.method != Method::Clone),
        };
        let retry_ok = status.scheduled_at_ms.is_none_or(|at| now - at >= SCHEDULE_RETRY.as_millis() as i64);
        // A backup in progress (the lock held and not expired) is the one due, or
        // one an operator started: the schedule waits for it.
        let lock = c.backup_lock.read().await.ok().flatten().filter(|l| l.expires_at > now / 1000);
        let due = catalog::due(&catalog.manifests, schedule, now, incrementals).filter(|_| lock.is_none());
        if let (Some(kind), true) = (due, retry_ok) {
            status.scheduled_at_ms = Some(now);
            status.scheduled_result = match self.ops.get() {
                Some(ops) => match ops
                    .run_boxed(
                        &self.caller(),
                        Operation::CreateBackup {
                            cluster: alias.to_string(),
                            // An incremental when the source's data still holds a
                            // chain, else a full: the peer decides.
                            kind: (kind == BackupKind::Full).then_some(kind),
                            source: None,
                        },
                    )
                    .await
                {
                    Ok(reply) => format!("started: {}", reply.summary()),
                    Err(e) => format!("failed to start the scheduled {kind} backup: {e}"),
                },
                None => "failed: operations are not ready".into(),
            };
            tracing::info!(cluster = alias, result = %status.scheduled_result, "scheduled backup");
        }
        // Retention.
        let in_progress = lock.and_then(|l| {
            l.detail.split_whitespace().skip_while(|w| *w != "backup").nth(1).map(str::to_string)
        });
        let retention = Retention {
            keep_days: b.retention_days,
            keep_full: b.keep_full,
            incomplete_after_s: 2 * b.lock_lease_s,
        };
        let plan = catalog::plan_retention(
            &catalog.manifests,
            &catalog.segments,
            &catalog.incomplete,
            in_progress.as_deref(),
            retention,
            now,
        );
        status.deleted = self.apply_retention(c, &catalog, &plan).await;
        status
    }

    async fn apply_retention(
        &self,
        c: &ClusterBackups,
        catalog: &super::service::Catalog,
        plan: &catalog::RetentionPlan,
    ) -> usize {
        let mut deleted = 0;
        for (kind, id) in &plan.backups {
            // The manifest goes first: the backup stops counting as complete at once.
            if c.store.delete(&[c.layout.manifest_key(*kind, id)]).await.is_ok() {
                self.delete_prefix(c, &c.layout.backup_prefix(*kind, id)).await;
                tracing::info!(cluster = %c.alias, %kind, id, "retention deleted a backup");
                deleted += 1;
            }
        }
        for (kind, id) in &plan.incomplete {
            self.delete_prefix(c, &c.layout.backup_prefix(*kind, id)).await;
            tracing::info!(cluster = %c.alias, %kind, id, "removed the parts of a failed backup");
            deleted += 1;
        }
        if !plan.segments.is_empty() {
            let gone: std::collections::BTreeSet<u64> = plan.segments.iter().copied().collect();
            let known: std::collections::BTreeSet<u64> = catalog.segments.iter().map(|s| s.seq).collect();
            let newest_gone = gone.iter().next_back().copied().unwrap_or(0);
            let Ok(index) = c.store.list(&c.layout.segment_index_prefix()).await else { return deleted };
            let mut index_keys = Vec::new();
            let mut covered = std::collections::BTreeSet::new();
            for o in index {
                let name = o.key.rsplit('/').next().unwrap_or_default().to_string();
                let seqs: Vec<u64> = match name.strip_prefix("chunk-") {
                    Some(rest) => {
                        let mut it = rest.split('-').map(|v| v.parse::<u64>().ok());
                        match (it.next().flatten(), it.next().flatten()) {
                            (Some(first), Some(last)) => (first..=last).collect(),
                            _ => continue,
                        }
                    }
                    None => name.split('-').next().and_then(|v| v.parse().ok()).into_iter().collect(),
                };
                // An index object goes when every segment it names goes (a chunk may
                // hold later ones still needed). Entries this pass did not read (a
                // losing duplicate of a takeover) go only below the newest segment
                // deleted: an entry written since the catalog was read is never touched.
                if !seqs.is_empty()
                    && seqs.iter().all(|s| *s <= newest_gone && (gone.contains(s) || !known.contains(s)))
                {
                    covered.extend(seqs);
                    index_keys.push(o.key);
                }
            }
            let data: Vec<String> = catalog
                .segments
                .iter()
                .filter(|s| gone.contains(&s.seq) && covered.contains(&s.seq))
                .map(|s| s.key.clone())
                .collect();
            // The index entries go before the data, so no entry points at nothing.
            if !index_keys.is_empty()
                && c.store.delete(&index_keys).await.is_ok()
                && c.store.delete(&data).await.is_ok()
            {
                tracing::info!(cluster = %c.alias, segments = data.len(), "retention deleted archived binlog segments no kept backup needs");
                deleted += data.len();
            }
        }
        deleted
    }
}
