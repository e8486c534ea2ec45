//! The leader's AWS loop: keeps each cluster's NLB target groups and DynamoDB items
//! matching what Raft decided.
//!
//! It runs beside the recovery loop, never inside it: the MySQL side of a failover
//! never waits on AWS. On every change (Raft applied a command, the topology moved) and
//! at least every `reconcile_interval_ms` it compares the desired membership
//! ([`super::targets::desired`]) with `DescribeTargetHealth` and makes the ordered calls
//! ([`super::targets::reconcile`]). After making calls it looks again 100 ms later;
//! while AWS fails it retries with backoff doubling from 100 ms to `max_backoff_ms`.
//! While a recovery is open the write group is emptied, so the old master leaves it
//! before the new one joins, and the read group is left alone until every instance has
//! been probed after the outcome. When an instance id cannot be resolved (EC2 failing,
//! or the master has no instance) nothing is changed: an unknown id never empties the
//! write group.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::mirror::{topology_json, Fence, LockTable, MasterLock, PutOutcome, TopologyItem};
use super::sdk::{InstanceDirectory, TargetGroupApi};
use super::targets::{self, Action, Desired, Group, Target};
use super::AwsError;
use crate::config::{AwsConfig, ClusterAwsConfig, Config};
use crate::discovery::TopologyStore;
use crate::metrics::Metrics;
use crate::raft::RaftNode;
use crate::topology::{ClusterSnapshot, InstanceKey};
use crate::unix_millis_now;

/// What the API shows of one cluster's AWS side.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct ClusterAwsStatus {
    pub desired_write: Option<String>,
    pub desired_read: BTreeSet<String>,
    pub write_targets: Vec<String>,
    pub read_targets: Vec<String>,
    pub converged: bool,
    /// When the groups last matched (unix ms).
    pub converged_unix_ms: Option<i64>,
    pub last_error: Option<String>,
    pub master_lock_epoch: Option<u64>,
    /// The last mirror write DynamoDB refused (a newer decision holds the item).
    pub mirror_rejected: Option<String>,
}

/// How a pass ended, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PassOutcome {
    /// AWS matches Raft.
    Converged,
    /// Calls were just made, or the read group waits for fresh probes: look again soon.
    Pending,
    /// An AWS call failed: back off.
    Failed,
}

/// Which target groups already held what they should.
#[derive(Debug, Clone, Copy)]
struct Matched {
    write: bool,
    read: bool,
}

/// Per-cluster memory of the loop (leader-local; rebuilt after an election).
#[derive(Default)]
struct ClusterProgress {
    /// Since when AWS has differed from Raft.
    unconverged_since: Option<Instant>,
    /// The master whose arrival in the write group was last measured.
    measured_master_since: Option<i64>,
    /// The desired groups AWS last matched, and when.
    converged: Option<(Desired, Instant)>,
    master_lock: Option<(String, Fence, Instant)>,
    topology: Option<(String, Fence, Instant)>,
}

/// The controller; generic over the AWS edge so the same loop runs on the SDK.
pub struct AwsController<C> {
    clients: C,
    node: Arc<RaftNode>,
    store: Arc<TopologyStore>,
    metrics: Arc<Metrics>,
    settings: AwsConfig,
    clusters: Vec<(String, ClusterAwsConfig)>,
    local_ids: Mutex<BTreeMap<String, (Option<String>, Instant)>>,
    progress: Mutex<BTreeMap<String, ClusterProgress>>,
    status: Mutex<BTreeMap<String, ClusterAwsStatus>>,
}

/// How long an EC2 lookup that found no instance is trusted.
const NEGATIVE_LOOKUP_TTL: Duration = Duration::from_secs(30);
const MIN_BACKOFF: Duration = Duration::from_millis(100);

impl<C: TargetGroupApi + InstanceDirectory + LockTable + 'static> AwsController<C> {
    /// `None` when no cluster has `[clusters.aws]`.
    pub fn new(
        clients: C,
        node: Arc<RaftNode>,
        store: Arc<TopologyStore>,
        metrics: Arc<Metrics>,
        config: &Config,
    ) -> Option<Self> {
        let clusters: Vec<_> =
            config.clusters.iter().filter_map(|c| Some((c.alias.clone(), c.aws.clone()?))).collect();
        (!clusters.is_empty()).then(|| Self {
            clients,
            node,
            store,
            metrics,
            settings: config.aws.clone(),
            clusters,
            local_ids: Mutex::new(BTreeMap::new()),
            progress: Mutex::new(BTreeMap::new()),
            status: Mutex::new(BTreeMap::new()),
        })
    }

    /// The last pass's view of every managed cluster.
    pub fn status(&self) -> BTreeMap<String, ClusterAwsStatus> {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Runs until `shutdown` fires. A Raft change (role, term, an applied command such
    /// as a recovery's intent or outcome) starts a pass at once; a topology change does
    /// unless the loop is backing off after a failed pass; else every
    /// `reconcile_interval_ms`.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut topology = self.store.subscribe();
        let mut raft = self.node.watch();
        let raft_key = |m: &openraft::RaftMetrics<crate::raft::NodeId, crate::raft::PeerNode>| {
            (m.last_applied.map(|l| l.index), m.current_term, m.current_leader)
        };
        let mut last_raft = None;
        let interval = Duration::from_millis(self.settings.reconcile_interval_ms);
        let max_backoff = Duration::from_millis(self.settings.max_backoff_ms);
        let mut backoff = MIN_BACKOFF;
        let mut backing_off = false;
        let mut deadline = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = topology.changed(), if !backing_off => {}
                _ = raft.changed() => {
                    // Heartbeats change the metrics too; only decisions and roles count.
                    let key = raft_key(&raft.borrow_and_update());
                    if last_raft == Some(key) {
                        continue;
                    }
                    last_raft = Some(key);
                }
                _ = tokio::time::sleep_until(deadline) => {}
            }
            if !self.node.is_leader() || !self.node.has_quorum_contact() {
                if let Ok(mut p) = self.progress.lock() {
                    p.clear();
                }
                backing_off = false;
                deadline = tokio::time::Instant::now() + interval;
                continue;
            }
            let mut worst = PassOutcome::Converged;
            for (alias, aws) in &self.clusters {
                worst = worst.max(self.pass(alias, aws).await);
            }
            let now = tokio::time::Instant::now();
            match worst {
                PassOutcome::Converged => {
                    backoff = MIN_BACKOFF;
                    backing_off = false;
                    deadline = now + interval;
                }
                PassOutcome::Pending => {
                    backoff = MIN_BACKOFF;
                    backing_off = false;
                    deadline = now + MIN_BACKOFF;
                }
                PassOutcome::Failed => {
                    backing_off = true;
                    deadline = now + backoff;
                    backoff = (backoff * 2).min(max_backoff);
                }
            }
        }
    }

    fn failed(&self, e: &AwsError) {
        self.metrics.aws_call_failed(e.operation);
    }

    /// The EC2 instance of `key`: from config, else by private IP (cached).
    async fn instance_id(&self, key: &InstanceKey) -> Result<Option<String>, AwsError> {
        if let Some(id) = self.settings.instance_ids.get(&key.to_string()) {
            return Ok(Some(id.clone()));
        }
        if let Some((id, at)) = self.local_ids.lock().ok().and_then(|m| m.get(&key.host).cloned()) {
            if id.is_some() || at.elapsed() < NEGATIVE_LOOKUP_TTL {
                return Ok(id);
            }
        }
        let id = self.clients.instance_by_private_ip(&key.host).await.inspect_err(|e| self.failed(e))?;
        if id.is_none() {
            tracing::warn!(instance = %key, "no EC2 instance has this private IP; it is left out of the target groups");
        }
        if let Ok(mut m) = self.local_ids.lock() {
            m.insert(key.host.clone(), (id.clone(), Instant::now()));
        }
        Ok(id)
    }

    /// One reconcile of `alias`.
    async fn pass(&self, alias: &str, aws: &ClusterAwsConfig) -> PassOutcome {
        let (_, state) = self.node.state();
        let Some(record) = state.clusters.get(alias) else { return PassOutcome::Converged };
        let Some(master) = record.master.clone() else { return PassOutcome::Converged };
        // The cluster Raft's master is in (right after a failover the alias may still
        // name the old master's cluster until discovery regroups).
        let Some(snapshot) = self.store.cluster(&master.to_string()).or_else(|| self.store.cluster(alias))
        else {
            tracing::debug!(cluster = alias, %master, "master not known to discovery yet");
            return PassOutcome::Converged;
        };
        let recovering = state.recoveries.iter().any(|r| r.is_open() && r.cluster == alias);
        // The read group stays as it is from a recovery's intent until every instance
        // has been probed after its outcome, so it does not follow the replicas through
        // the moments they have no master.
        let read_frozen = recovering
            || snapshot.instances.iter().any(|i| i.state.last_checked_unix_ms < record.master_since_unix_ms);

        let mut ids = BTreeMap::new();
        let mut keys: Vec<&InstanceKey> = snapshot.instances.iter().map(|i| &i.state.key).collect();
        keys.push(&master);
        let mut errors = Vec::new();
        for key in keys {
            match self.instance_id(key).await {
                Ok(Some(id)) => {
                    ids.insert(key.clone(), id);
                }
                Ok(None) => {}
                Err(e) => errors.push(e.to_string()),
            }
        }
        if errors.is_empty() && !ids.contains_key(&master) {
            errors.push(format!("master {master} has no EC2 instance (set [aws.instance_ids])"));
        }
        if !errors.is_empty() {
            // Without every id the desired groups are unknown: change nothing (an
            // unknown master id must never empty the write group).
            tracing::warn!(cluster = alias, error = %errors[0], "cannot resolve instance ids; retrying");
            let status = ClusterAwsStatus { last_error: errors.first().cloned(), ..Default::default() };
            self.publish(alias, &status);
            return PassOutcome::Failed;
        }
        let now_ms = unix_millis_now();
        let downtimed = state.downtimed_at(now_ms);
        let mut desired =
            targets::desired(&snapshot, &master, &downtimed, self.settings.read_max_lag_s, |k| {
                ids.get(k).cloned()
            });
        if recovering {
            desired.write = None;
        }
        let fresh = self.progress.lock().ok().is_some_and(|p| {
            p.get(alias).and_then(|c| c.converged.as_ref()).is_some_and(|(d, at)| {
                *d == desired && at.elapsed() < Duration::from_millis(self.settings.reconcile_interval_ms)
            })
        });
        // What the mirror last did stays shown until a later write changes it.
        let (lock_epoch, rejected) = self
            .status
            .lock()
            .ok()
            .and_then(|s| s.get(alias).map(|p| (p.master_lock_epoch, p.mirror_rejected.clone())))
            .unwrap_or_default();
        let mut status = ClusterAwsStatus {
            desired_write: desired.write.clone(),
            desired_read: desired.read.clone(),
            master_lock_epoch: lock_epoch,
            mirror_rejected: rejected,
            ..Default::default()
        };
        let matched = if fresh {
            if let Ok(s) = self.status.lock() {
                if let Some(prev) = s.get(alias) {
                    status = prev.clone();
                }
            }
            Matched { write: true, read: true }
        } else {
            match self.converge_groups(aws, &desired, read_frozen, &mut status).await {
                Ok(matched) => matched,
                Err(e) => {
                    tracing::warn!(cluster = alias, error = %e, "target groups not converged; retrying");
                    errors.push(e.to_string());
                    Matched { write: false, read: false }
                }
            }
        };
        let groups_match = matched.write && matched.read;
        self.note_convergence(alias, record.master_since_unix_ms, &desired, matched, !recovering);
        status.converged = groups_match && errors.is_empty();
        status.last_error = errors.first().cloned();
        // Shown now: the DynamoDB calls below may take a while when AWS is down.
        self.publish(alias, &status);

        if !recovering {
            let fence = Fence {
                epoch: state.fencing_epochs.get(alias).copied().unwrap_or(0),
                raft_term: self.node.term(),
            };
            if let Err(e) = self.mirror(alias, aws, &master, fence, &snapshot, &mut status).await {
                tracing::warn!(cluster = alias, error = %e, "DynamoDB mirror not written; retrying");
                errors.push(e.to_string());
            }
        }
        status.converged = groups_match && errors.is_empty();
        status.last_error = errors.first().cloned();
        if groups_match {
            status.converged_unix_ms = Some(now_ms);
        }
        self.publish(alias, &status);
        match (status.converged, errors.is_empty()) {
            (true, _) => PassOutcome::Converged,
            (false, true) => PassOutcome::Pending,
            (false, false) => PassOutcome::Failed,
        }
    }

    /// Describes both groups and makes the calls that take them to `desired` (the
    /// write group only when `read_frozen`), stopping at the first failure so the order
    /// holds. Says which group already matched.
    async fn converge_groups(
        &self,
        aws: &ClusterAwsConfig,
        desired: &Desired,
        read_frozen: bool,
        status: &mut ClusterAwsStatus,
    ) -> Result<Matched, AwsError> {
        let write =
            self.clients.targets(&aws.write_target_group_arn).await.inspect_err(|e| self.failed(e))?;
        let read = self.clients.targets(&aws.read_target_group_arn).await.inspect_err(|e| self.failed(e))?;
        let names = |t: &[Target]| t.iter().map(|t| format!("{} ({})", t.id, t.state)).collect::<Vec<_>>();
        status.write_targets = names(&write);
        status.read_targets = names(&read);
        let actions = targets::reconcile(desired, &write, &read);
        let group_of = |a: &Action| match a {
            Action::Register { group, .. } | Action::Deregister { group, .. } => *group,
        };
        let matched = Matched {
            write: !actions.iter().any(|a| group_of(a) == Group::Write),
            read: !actions.iter().any(|a| group_of(a) == Group::Read),
        };
        for action in actions.iter().filter(|a| !read_frozen || group_of(a) == Group::Write) {
            if !self.node.is_leader() {
                break;
            }
            let (group, id, register) = match action {
                Action::Register { group, id } => (*group, id, true),
                Action::Deregister { group, id } => (*group, id, false),
            };
            let arn = match group {
                Group::Write => &aws.write_target_group_arn,
                Group::Read => &aws.read_target_group_arn,
            };
            let result = if register {
                self.clients.register(arn, id).await
            } else {
                self.clients.deregister(arn, id).await
            };
            result.inspect_err(|e| self.failed(e))?;
            tracing::info!(?group, target = %id, register, "target group changed");
        }
        Ok(matched)
    }

    /// Lag and convergence metrics.
    fn note_convergence(
        &self,
        alias: &str,
        master_since_ms: i64,
        desired: &Desired,
        matched: Matched,
        settled: bool,
    ) {
        let Ok(mut progress) = self.progress.lock() else { return };
        let p = progress.entry(alias.to_string()).or_default();
        tracing::debug!(
            cluster = alias,
            write_matched = matched.write,
            read_matched = matched.read,
            settled,
            write = ?desired.write,
            master_since_ms,
            measured = ?p.measured_master_since,
            "target groups checked"
        );
        if matched.write
            && settled
            && desired.write.is_some()
            && p.measured_master_since != Some(master_since_ms)
        {
            if p.measured_master_since.is_some() {
                let took = (unix_millis_now() - master_since_ms).max(0) as u64;
                self.metrics.aws_write_group_converged(Duration::from_millis(took));
                tracing::info!(cluster = alias, took_ms = took, "write target group holds the new master");
            }
            p.measured_master_since = Some(master_since_ms);
        }
        if matched.write && matched.read {
            p.unconverged_since = None;
            if p.converged.as_ref().is_none_or(|(d, _)| d != desired) {
                p.converged = Some((desired.clone(), Instant::now()));
            }
        } else {
            p.converged = None;
            p.unconverged_since.get_or_insert_with(Instant::now);
        }
        let lag = p.unconverged_since.map(|t| t.elapsed()).unwrap_or_default();
        self.metrics.set_aws_reconcile_lag(alias, lag);
    }

    /// Writes `master_lock` and `topology` when they changed or are due a refresh.
    async fn mirror(
        &self,
        alias: &str,
        aws: &ClusterAwsConfig,
        master: &InstanceKey,
        fence: Fence,
        snapshot: &ClusterSnapshot,
        status: &mut ClusterAwsStatus,
    ) -> Result<(), AwsError> {
        let table = aws.table_name();
        let refresh = Duration::from_secs(self.settings.topology_refresh_s);
        let lock_refresh =
            refresh.min(Duration::from_secs(self.settings.master_lock_ttl_s / 2).max(MIN_BACKOFF));
        let due = |last: Option<&(String, Fence, Instant)>, value: &str, every: Duration| {
            last.is_none_or(|(v, f, at)| v != value || *f != fence || at.elapsed() >= every)
        };
        let (lock_due, topology_due, json) = {
            let progress = self.progress.lock().map_err(|_| AwsError::new("PutItem", "state poisoned"))?;
            let p = progress.get(alias);
            let json = topology_json(snapshot, master, fence.epoch);
            let holder = master.to_string();
            (
                due(p.and_then(|p| p.master_lock.as_ref()), &holder, lock_refresh),
                due(p.and_then(|p| p.topology.as_ref()), &json, refresh),
                json,
            )
        };
        let now_s = unix_millis_now() / 1000;
        if lock_due {
            let lock = MasterLock {
                holder: master.to_string(),
                leader_id: self.node.id,
                fence,
                updated_at: now_s,
                expires_at: now_s + self.settings.master_lock_ttl_s as i64,
            };
            let outcome = self.clients.put_master_lock(&table, &lock).await;
            self.record_mirror("master_lock", alias, &outcome, status);
            if outcome? == PutOutcome::Written {
                status.master_lock_epoch = Some(fence.epoch);
                status.mirror_rejected = None;
            }
            self.remember(alias, |p| p.master_lock = Some((lock.holder.clone(), fence, Instant::now())));
        }
        if topology_due {
            let item = TopologyItem { fence, updated_at: now_s, json: json.clone() };
            let outcome = self.clients.put_topology(&table, &item).await;
            self.record_mirror("topology", alias, &outcome, status);
            outcome?;
            self.remember(alias, |p| p.topology = Some((json, fence, Instant::now())));
        }
        Ok(())
    }

    fn publish(&self, alias: &str, status: &ClusterAwsStatus) {
        if let Ok(mut s) = self.status.lock() {
            s.insert(alias.to_string(), status.clone());
        }
    }

    fn remember(&self, alias: &str, f: impl FnOnce(&mut ClusterProgress)) {
        if let Ok(mut progress) = self.progress.lock() {
            f(progress.entry(alias.to_string()).or_default());
        }
    }

    fn record_mirror(
        &self,
        item: &'static str,
        alias: &str,
        outcome: &Result<PutOutcome, AwsError>,
        status: &mut ClusterAwsStatus,
    ) {
        match outcome {
            Ok(PutOutcome::Written) => self.metrics.aws_mirror_write(item, "written"),
            Ok(PutOutcome::Rejected { stored }) => {
                self.metrics.aws_mirror_write(item, "rejected");
                let held = stored.map(|f| f.to_string()).unwrap_or_else(|| "unreadable".into());
                let why = format!("{item} holds a newer decision ({held}); this peer's write was refused");
                tracing::warn!(cluster = alias, "{why}");
                status.mirror_rejected = Some(why);
            }
            Err(e) => {
                self.metrics.aws_mirror_write(item, "error");
                self.failed(e);
            }
        }
    }
}
