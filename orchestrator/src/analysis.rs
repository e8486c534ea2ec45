//! Failure analysis: from one peer's snapshot of a cluster plus fresh observations from
//! the other peers, the list of problems, each with a code and a reason a human can read.
//!
//! Pure: no I/O and no clock (time comes in as `now_unix_ms`). This module says what is
//! wrong; recovery decides what to do about it.
//!
//! Layout, as in vtorc's `inst/analysis_problem.go`:
//! - [`AnalysisCode`]: every problem this module can raise;
//! - `Summary`: facts about the cluster computed once per analysis (the master, its
//!   direct replicas, how many peers see the master unreachable, who is writable);
//! - one small predicate per code over (summary, instance), returning the reason when
//!   the code holds; [`registry`] lists them with their description and priority.
//!
//! The master is dead (a failover is needed) only when this peer and a strict majority
//! of the voting peers see it unreachable, and its replicas confirm it: every reachable
//! replica's IO thread lost it, or the master has been hung (failing by timeouts) for
//! the hang window.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::topology::{
    ClusterInstance, ClusterSnapshot, FailureKind, GtidSet, InstanceKey, InstanceProbe, InstanceState,
    ReplicationStatus, Role, ThreadState,
};

/// Another peer's fresh observation of one instance (asked for by the Raft leader).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerObservation {
    pub peer: u64,
    pub instance: InstanceKey,
    pub reachable: bool,
    pub failure: Option<FailureKind>,
    pub checked_unix_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisSettings {
    /// An instance failing only by timeouts for this long counts as hung (treated as dead). Default 1500.
    pub hang_window_ms: i64,
    /// Replica lag (seconds_behind) above this is `ReplicaLagging`. Default 10.
    pub lag_threshold_s: u64,
    /// Peer observations older than this (relative to now) are ignored. Default 5000.
    pub observation_max_age_ms: i64,
}

impl Default for AnalysisSettings {
    fn default() -> Self {
        Self { hang_window_ms: 1500, lag_threshold_s: 10, observation_max_age_ms: 5000 }
    }
}

/// Everything one analysis looks at.
#[derive(Debug, Clone, Copy)]
pub struct AnalysisInput<'a> {
    /// This peer's view; `snapshot.master` is the root of the replication tree.
    pub snapshot: &'a ClusterSnapshot,
    /// The master the Raft group recorded (`None` before the cluster is registered).
    pub raft_master: Option<&'a InstanceKey>,
    /// Observations from the OTHER peers (this peer's own view is the snapshot).
    pub observations: &'a [PeerObservation],
    /// Number of voting peers in the Raft group, this one included.
    pub voters: usize,
    pub downtimed: &'a BTreeSet<InstanceKey>,
    pub settings: &'a AnalysisSettings,
    pub now_unix_ms: i64,
}

/// What is wrong. Declaration order is the tie-break after priority when sorting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AnalysisCode {
    DeadMaster,
    DeadMasterAndSomeReplicas,
    DeadMasterWithoutReplicas,
    UnreachableMaster,
    UnreachableMasterWithLaggingReplicas,
    AllMasterReplicasNotReplicating,
    LockedSemiSyncMaster,
    MasterSemiSyncBlocked,
    #[serde(rename = "ErrantGTID")]
    ErrantGtid,
    NoWriteableMaster,
    MultipleWriteableMasters,
    MasterIsReadOnly,
    ReplicaIsWritable,
    ConnectedToWrongMaster,
    DeadReplica,
    ReplicationStopped,
    ReplicaLagging,
    /// Raised by the backup upkeep (`backup::maintenance`), not by the topology.
    BinlogArchiveGap,
    BinlogArchiveLagging,
    BackupFailing,
}

impl AnalysisCode {
    /// The name operators know (the serde name).
    fn name(self) -> &'static str {
        use AnalysisCode::*;
        match self {
            DeadMaster => "DeadMaster",
            DeadMasterAndSomeReplicas => "DeadMasterAndSomeReplicas",
            DeadMasterWithoutReplicas => "DeadMasterWithoutReplicas",
            UnreachableMaster => "UnreachableMaster",
            UnreachableMasterWithLaggingReplicas => "UnreachableMasterWithLaggingReplicas",
            AllMasterReplicasNotReplicating => "AllMasterReplicasNotReplicating",
            LockedSemiSyncMaster => "LockedSemiSyncMaster",
            MasterSemiSyncBlocked => "MasterSemiSyncBlocked",
            ErrantGtid => "ErrantGTID",
            NoWriteableMaster => "NoWriteableMaster",
            MultipleWriteableMasters => "MultipleWriteableMasters",
            MasterIsReadOnly => "MasterIsReadOnly",
            ReplicaIsWritable => "ReplicaIsWritable",
            ConnectedToWrongMaster => "ConnectedToWrongMaster",
            DeadReplica => "DeadReplica",
            ReplicationStopped => "ReplicationStopped",
            ReplicaLagging => "ReplicaLagging",
            BinlogArchiveGap => "BinlogArchiveGap",
            BinlogArchiveLagging => "BinlogArchiveLagging",
            BackupFailing => "BackupFailing",
        }
    }
}

impl fmt::Display for AnalysisCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One problem found in a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    pub code: AnalysisCode,
    /// The instance the problem is about (the master for cluster-level codes).
    pub instance: InstanceKey,
    /// One line, for humans.
    pub reason: String,
    /// From the registry; lower = more urgent.
    pub priority: u8,
    /// The master failure codes a recovery acts on (DeadMaster, DeadMasterAndSomeReplicas,
    /// DeadMasterWithoutReplicas).
    pub needs_failover: bool,
}

/// Decides whether a code holds for one instance; returns the reason when it does.
type Predicate = fn(&Summary<'_>, &ClusterInstance) -> Option<String>;

/// One registry entry per code (vtorc style): description, priority, and a small predicate.
#[derive(Debug)]
pub struct ProblemKind {
    pub code: AnalysisCode,
    pub description: &'static str,
    pub priority: u8,
    pub needs_failover: bool,
    matches: Predicate,
}

const fn kind(
    code: AnalysisCode,
    priority: u8,
    needs_failover: bool,
    matches: Predicate,
    description: &'static str,
) -> ProblemKind {
    ProblemKind { code, description, priority, needs_failover, matches }
}

const FAILOVER: bool = true;
const REPORT: bool = false;

#[rustfmt::skip]
static REGISTRY: [ProblemKind; 20] = {
    use AnalysisCode::*;
    [
        kind(DeadMaster, 0, FAILOVER, dead_master,
            "master unreachable from a majority of peers and all its replicas lost it"),
        kind(DeadMasterAndSomeReplicas, 0, FAILOVER, dead_master_and_some_replicas,
            "master unreachable from a majority of peers, its reachable replicas lost it and some replicas are unreachable too"),
        kind(DeadMasterWithoutReplicas, 1, FAILOVER, dead_master_without_replicas,
            "master unreachable from a majority of peers and none of its replicas is reachable"),
        kind(UnreachableMaster, 2, REPORT, unreachable_master,
            "this peer cannot reach the master, but a majority of peers or its replicas do not confirm it is dead"),
        kind(UnreachableMasterWithLaggingReplicas, 2, REPORT, unreachable_master_with_lagging_replicas,
            "this peer cannot reach the master and all its reachable replicas lag behind"),
        kind(AllMasterReplicasNotReplicating, 3, REPORT, all_master_replicas_not_replicating,
            "master reachable but none of its reachable replicas replicates"),
        kind(LockedSemiSyncMaster, 3, REPORT, locked_semi_sync_master,
            "semi-sync master waits for acknowledgements with no semi-sync replica connected: commits hang"),
        kind(MasterSemiSyncBlocked, 4, REPORT, master_semi_sync_blocked,
            "semi-sync enabled on the master but switched itself off: acknowledged commits may exist only on the master"),
        kind(ErrantGtid, 4, REPORT, errant_gtid,
            "a replica executed transactions that came neither from its master nor through its IO thread"),
        kind(NoWriteableMaster, 2, REPORT, no_writeable_master,
            "master read-only and no other reachable instance of the cluster is writable"),
        kind(MultipleWriteableMasters, 0, REPORT, multiple_writeable_masters,
            "two or more reachable instances of the cluster are writable (split brain)"),
        kind(MasterIsReadOnly, 3, REPORT, master_is_read_only,
            "master is read-only"),
        kind(ReplicaIsWritable, 1, REPORT, replica_is_writable,
            "a replica is writable"),
        kind(ConnectedToWrongMaster, 3, REPORT, connected_to_wrong_master,
            "a replica replicates from another server than the master the Raft group recorded"),
        kind(DeadReplica, 5, REPORT, dead_replica,
            "a replica is unreachable from this peer"),
        kind(ReplicationStopped, 5, REPORT, replication_stopped,
            "a replica's IO or SQL thread is stopped while its master is reachable"),
        kind(ReplicaLagging, 6, REPORT, replica_lagging,
            "a replica lags behind its master more than the threshold"),
        kind(BinlogArchiveGap, 3, REPORT, backup_side,
            "the binlog archive misses transactions purged before they were archived: no restore crosses them"),
        kind(BinlogArchiveLagging, 4, REPORT, backup_side,
            "the binlog archive is behind the master: the recovery point is older than it should be"),
        kind(BackupFailing, 4, REPORT, backup_side,
            "backups fail (the catalog cannot be read, or a scheduled backup failed)"),
    ]
};

/// The backup codes: raised by the leader's backup upkeep from the bucket's catalog,
/// never by the topology.
fn backup_side(_: &Summary<'_>, _: &ClusterInstance) -> Option<String> {
    None
}

/// Every code exactly once, in declaration order.
pub fn registry() -> &'static [ProblemKind] {
    &REGISTRY
}

/// The registry entry of `code`.
pub fn describe(code: AnalysisCode) -> &'static ProblemKind {
    REGISTRY.iter().find(|k| k.code == code).expect("the registry lists every code")
}

/// All problems of the cluster, sorted by (priority, code, instance). Downtimed
/// instances raise no problem (a downtimed master none of the master-level codes).
pub fn analyze(input: &AnalysisInput) -> Vec<Problem> {
    let summary = Summary::new(input);
    let s = &summary;
    let mut problems: Vec<Problem> = input
        .snapshot
        .instances
        .iter()
        .filter(|i| !input.downtimed.contains(&i.state.key))
        .flat_map(|i| {
            REGISTRY.iter().filter_map(move |k| {
                (k.matches)(s, i).map(|reason| Problem {
                    code: k.code,
                    instance: i.state.key.clone(),
                    reason,
                    priority: k.priority,
                    needs_failover: k.needs_failover,
                })
            })
        })
        .collect();
    problems.sort_by(|a, b| (a.priority, a.code, &a.instance).cmp(&(b.priority, b.code, &b.instance)));
    problems
}

/// Peers (this one + others) that currently see `instance` unreachable, counting each
/// peer once (its latest fresh observation decides), ignoring stale observations.
pub fn peers_seeing_unreachable(input: &AnalysisInput, instance: &InstanceKey) -> usize {
    let here = input.snapshot.instance(instance).is_some_and(|i| !i.state.reachable);
    let mut latest: BTreeMap<u64, &PeerObservation> = BTreeMap::new();
    for o in input.observations.iter().filter(|o| &o.instance == instance) {
        if !is_fresh(input, o) {
            continue;
        }
        // Latest wins; on a tie "reachable" wins (never count a peer down on a coin toss).
        let newer =
            |cur: &PeerObservation| (o.checked_unix_ms, o.reachable) > (cur.checked_unix_ms, cur.reachable);
        match latest.get(&o.peer) {
            Some(cur) if !newer(cur) => {}
            _ => {
                latest.insert(o.peer, o);
            }
        }
    }
    usize::from(here) + latest.values().filter(|o| !o.reachable).count()
}

/// Whether `o` is recent enough to count (`observation_max_age_ms`).
fn is_fresh(input: &AnalysisInput, o: &PeerObservation) -> bool {
    input.now_unix_ms.saturating_sub(o.checked_unix_ms) <= input.settings.observation_max_age_ms
}

/// Whether `instance` has failed only by timeouts for at least the hang window (hung,
/// treat as dead). The state records the last failure's kind and when the run of
/// failures began, so "only by timeouts" is read as "the last failure was a timeout".
pub fn is_hung(state: &InstanceState, settings: &AnalysisSettings, now_unix_ms: i64) -> bool {
    hung_from(state, settings.hang_window_ms).is_some_and(|at| now_unix_ms >= at)
}

/// When `instance`, failing by timeouts now, counts as hung (unix ms): the start of
/// its run of failures plus the hang window. `None` when it is not failing by timeouts.
pub fn hung_from(state: &InstanceState, hang_window_ms: i64) -> Option<i64> {
    if state.reachable || state.failure != Some(FailureKind::Timeout) {
        return None;
    }
    state.unreachable_since_unix_ms.map(|since| since.saturating_add(hang_window_ms))
}

/// GTIDs a replica executed that came neither from the master nor through its own IO
/// thread: executed − (master.executed ∪ replica.received). Empty when not knowable
/// (the replica has no replication status, or one side is MariaDB and the other not).
pub fn errant_gtids(replica: &InstanceProbe, master: &InstanceProbe) -> GtidSet {
    match &replica.replication {
        Some(r) if replica.flavor.is_mariadb() == master.flavor.is_mariadb() => {
            replica.gtid_executed.subtract(&master.gtid_executed.union(&r.received))
        }
        _ => GtidSet::new(),
    }
}

/// Facts about the cluster, computed once per analysis.
struct Summary<'a> {
    input: &'a AnalysisInput<'a>,
    /// The master's state, when the snapshot holds it.
    master: Option<&'a InstanceState>,
    /// The master's direct replicas: instances whose last probe replicates from it.
    replicas: Vec<(&'a InstanceState, &'a ReplicationStatus)>,
    /// Peers (this one included) that see the master unreachable.
    peers_down: usize,
    /// This peer and a strict majority of the voters see the master unreachable, or
    /// the master's process exited.
    agreed: bool,
    hung: bool,
    /// The master's process is exiting or gone, as the peer on its host saw (this
    /// peer's own view, told by that peer, or that peer's fresh observation).
    exited: bool,
    /// Reachable instances with `read_only` off.
    writable: Vec<&'a InstanceKey>,
}

impl<'a> Summary<'a> {
    fn new(input: &'a AnalysisInput<'a>) -> Self {
        let snap = input.snapshot;
        let master = snap.instance(&snap.master).map(|i| &i.state);
        let replicas = snap
            .instances
            .iter()
            .filter(|i| i.state.key != snap.master)
            .filter_map(|i| {
                let r = i.state.last_probe.as_ref()?.replication.as_ref()?;
                (r.source == snap.master).then_some((&i.state, r))
            })
            .collect();
        let peers_down = peers_seeing_unreachable(input, &snap.master);
        let writable = snap
            .instances
            .iter()
            .filter(|i| i.state.reachable && i.state.last_probe.as_ref().is_some_and(|p| !p.read_only))
            .map(|i| &i.state.key)
            .collect();
        let exited = master.is_some_and(|m| !m.reachable)
            && (master.is_some_and(|m| m.failure == Some(FailureKind::Exited))
                || input.observations.iter().any(|o| {
                    o.instance == snap.master && o.failure == Some(FailureKind::Exited) && is_fresh(input, o)
                }));
        Summary {
            input,
            master,
            replicas,
            peers_down,
            agreed: master.is_some_and(|m| !m.reachable) && (peers_down * 2 > input.voters || exited),
            hung: master.is_some_and(|m| is_hung(m, input.settings, input.now_unix_ms)),
            exited,
            writable,
        }
    }

    fn reachable_replicas(&self) -> impl Iterator<Item = &'a ReplicationStatus> + '_ {
        self.replicas.iter().filter(|(st, _)| st.reachable).map(|(_, r)| *r)
    }

    fn reachable_count(&self) -> usize {
        self.reachable_replicas().count()
    }

    /// Every reachable replica lost its IO thread to the master, or the master is hung,
    /// or its process exited (its replicas' connections stay open until the kernel has
    /// freed its memory).
    fn replicas_confirm(&self) -> bool {
        self.hung || self.exited || self.reachable_replicas().all(|r| r.io_thread != ThreadState::Running)
    }

    /// Agreed unreachable, and nothing reachable contradicts it.
    fn dead(&self) -> bool {
        self.agreed && (self.reachable_count() == 0 || self.replicas_confirm())
    }

    /// At least one reachable replica, and all of them lag.
    fn replicas_lagging(&self) -> bool {
        let threshold = self.input.settings.lag_threshold_s;
        self.reachable_count() > 0
            && self.reachable_replicas().all(|r| match r.seconds_behind {
                Some(lag) => lag > threshold,
                None => r.io_thread == ThreadState::Running,
            })
    }

    fn is_master(&self, i: &ClusterInstance) -> bool {
        i.state.key == self.input.snapshot.master
    }

    /// `i` is the master and this peer cannot reach it.
    fn master_down(&self, i: &ClusterInstance) -> bool {
        self.is_master(i) && !i.state.reachable
    }

    /// The master's probe, when `i` is the master and it is reachable.
    fn master_up<'i>(&self, i: &'i ClusterInstance) -> Option<&'i InstanceProbe> {
        if self.is_master(i) && i.state.reachable {
            i.state.last_probe.as_ref()
        } else {
            None
        }
    }

    /// A reachable instance other than the master with replication configured.
    fn replica<'i>(&self, i: &'i ClusterInstance) -> Option<(&'i InstanceProbe, &'i ReplicationStatus)> {
        if self.is_master(i) || !i.state.reachable {
            return None;
        }
        let probe = i.state.last_probe.as_ref()?;
        Some((probe, probe.replication.as_ref()?))
    }

    /// The state of `key` when the snapshot holds it and it is reachable.
    fn reachable(&self, key: &InstanceKey) -> Option<&'a InstanceState> {
        self.input.snapshot.instance(key).map(|i| &i.state).filter(|st| st.reachable)
    }

    /// The instance that should be the only writable one.
    fn primary(&self) -> &'a InstanceKey {
        self.input.raft_master.unwrap_or(&self.input.snapshot.master)
    }

    // Reason fragments.

    fn down_text(&self) -> String {
        let cause = self.master.map_or("not probed", cause);
        let (master, voters) = (&self.input.snapshot.master, self.input.voters);
        format!("master {master} unreachable from {} of {voters} peers ({cause})", self.peers_down)
    }

    fn confirm_text(&self) -> String {
        if self.exited {
            "its mysqld process exited, seen by the peer on its host".to_string()
        } else if self.hung {
            let since =
                self.master.and_then(|m| m.unreachable_since_unix_ms).unwrap_or(self.input.now_unix_ms);
            format!("hung: failing by timeouts for {} ms", self.input.now_unix_ms.saturating_sub(since))
        } else {
            format!("its {} reachable replicas lost their IO thread", self.reachable_count())
        }
    }

    /// Why an unreachable master is not dead: no majority, replicas still connected, or both.
    fn not_dead_text(&self) -> String {
        let mut why = Vec::new();
        if !self.agreed {
            why.push(format!(
                "only {} of {} peers see it unreachable (a majority is needed)",
                self.peers_down, self.input.voters
            ));
        }
        if !self.replicas_confirm() {
            let running = self.reachable_replicas().filter(|r| r.io_thread == ThreadState::Running).count();
            why.push(format!(
                "{running} of its {} reachable replicas still replicate from it",
                self.reachable_count()
            ));
        }
        why.join(" and ")
    }
}

fn cause(state: &InstanceState) -> &'static str {
    match state.failure {
        Some(FailureKind::Refused) => "connection refused",
        Some(FailureKind::Timeout) => "timed out",
        Some(FailureKind::Rejected) => "rejected",
        Some(FailureKind::Other) | None => "probe failed",
        Some(FailureKind::Exited) => "its process exited",
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

// The predicates, one per code, in registry order.

fn dead_master(s: &Summary, i: &ClusterInstance) -> Option<String> {
    let all_reachable = s.reachable_count() == s.replicas.len();
    (s.master_down(i) && s.dead() && !s.replicas.is_empty() && all_reachable)
        .then(|| format!("{}; {}", s.down_text(), s.confirm_text()))
}

fn dead_master_and_some_replicas(s: &Summary, i: &ClusterInstance) -> Option<String> {
    let unreachable = s.replicas.len() - s.reachable_count();
    (s.master_down(i) && s.dead() && s.reachable_count() > 0 && unreachable > 0).then(|| {
        let total = s.replicas.len();
        format!(
            "{}; {}; {unreachable} of its {total} replicas unreachable too",
            s.down_text(),
            s.confirm_text()
        )
    })
}

fn dead_master_without_replicas(s: &Summary, i: &ClusterInstance) -> Option<String> {
    (s.master_down(i) && s.agreed && s.reachable_count() == 0).then(|| match s.replicas.len() {
        0 => format!("{}; it has no replicas", s.down_text()),
        n => format!("{}; none of its {n} replicas is reachable", s.down_text()),
    })
}

fn unreachable_master(s: &Summary, i: &ClusterInstance) -> Option<String> {
    (s.master_down(i) && !s.dead() && !s.replicas_lagging())
        .then(|| format!("{}; not confirmed dead: {}", s.down_text(), s.not_dead_text()))
}

fn unreachable_master_with_lagging_replicas(s: &Summary, i: &ClusterInstance) -> Option<String> {
    (s.master_down(i) && !s.dead() && s.replicas_lagging()).then(|| {
        format!(
            "{}; not confirmed dead: {}; all {} reachable replicas lag more than {}s",
            s.down_text(),
            s.not_dead_text(),
            s.reachable_count(),
            s.input.settings.lag_threshold_s
        )
    })
}

fn all_master_replicas_not_replicating(s: &Summary, i: &ClusterInstance) -> Option<String> {
    s.master_up(i)?;
    let n = s.reachable_count();
    (n > 0 && s.reachable_replicas().all(|r| !r.is_replicating())).then(|| {
        format!("master {} reachable but none of its {n} reachable replicas replicates", i.state.key)
    })
}

fn locked_semi_sync_master(s: &Summary, i: &ClusterInstance) -> Option<String> {
    let ss = &s.master_up(i)?.semi_sync;
    (ss.master_enabled && ss.master_active && ss.master_clients == 0).then(|| {
        format!(
            "semi-sync master {} waits for acknowledgements but no semi-sync replica is connected",
            i.state.key
        )
    })
}

fn master_semi_sync_blocked(s: &Summary, i: &ClusterInstance) -> Option<String> {
    let ss = &s.master_up(i)?.semi_sync;
    (ss.master_enabled && !ss.master_active).then(|| {
        format!(
            "semi-sync enabled on master {} but switched off ({} semi-sync replicas): acknowledged commits may exist only on the master",
            i.state.key, ss.master_clients
        )
    })
}

fn errant_gtid(s: &Summary, i: &ClusterInstance) -> Option<String> {
    let (probe, r) = s.replica(i)?;
    let source = s.reachable(&r.source)?.last_probe.as_ref()?;
    let errant = errant_gtids(probe, source);
    (!errant.is_empty()).then(|| {
        format!("replica {} executed transactions its master {} never had: {errant}", i.state.key, r.source)
    })
}

fn no_writeable_master(s: &Summary, i: &ClusterInstance) -> Option<String> {
    (s.master_up(i)?.read_only && s.writable.is_empty()).then(|| {
        format!(
            "master {} is read-only and no other reachable instance of the cluster is writable",
            i.state.key
        )
    })
}

fn multiple_writeable_masters(s: &Summary, i: &ClusterInstance) -> Option<String> {
    let key = &i.state.key;
    (s.writable.len() >= 2 && s.writable.contains(&key) && key != s.primary()).then(|| {
        let all: Vec<String> = s.writable.iter().map(|k| k.to_string()).collect();
        format!(
            "{} reachable instances are writable ({}); {key} is not the master {}",
            all.len(),
            all.join(", "),
            s.primary()
        )
    })
}

fn master_is_read_only(s: &Summary, i: &ClusterInstance) -> Option<String> {
    s.master_up(i)?.read_only.then(|| format!("master {} is read-only", i.state.key))
}

fn replica_is_writable(s: &Summary, i: &ClusterInstance) -> Option<String> {
    let (probe, r) = s.replica(i)?;
    (!probe.read_only).then(|| format!("replica {} of {} is writable (read_only off)", i.state.key, r.source))
}

fn connected_to_wrong_master(s: &Summary, i: &ClusterInstance) -> Option<String> {
    let master = s.input.raft_master?;
    let (_, r) = s.replica(i)?;
    (i.state.key != *master && r.source != *master).then(|| {
        format!("replica {} replicates from {} but the recorded master is {master}", i.state.key, r.source)
    })
}

fn dead_replica(s: &Summary, i: &ClusterInstance) -> Option<String> {
    (!s.is_master(i) && i.role == Role::Replica && !i.state.reachable)
        .then(|| format!("replica {} unreachable from this peer ({})", i.state.key, cause(&i.state)))
}

fn replication_stopped(s: &Summary, i: &ClusterInstance) -> Option<String> {
    let (_, r) = s.replica(i)?;
    s.reachable(&r.source)?;
    let stopped = r.io_thread == ThreadState::Stopped || r.sql_thread == ThreadState::Stopped;
    stopped.then(|| {
        let mut reason = format!(
            "replica {}: IO thread {}, SQL thread {} while its master {} is reachable",
            i.state.key, r.io_thread, r.sql_thread, r.source
        );
        if r.last_io_errno != 0 {
            reason += &format!("; IO error {}: {}", r.last_io_errno, one_line(&r.last_io_error));
        }
        if r.last_sql_errno != 0 {
            reason += &format!("; SQL error {}: {}", r.last_sql_errno, one_line(&r.last_sql_error));
        }
        reason
    })
}

fn replica_lagging(s: &Summary, i: &ClusterInstance) -> Option<String> {
    let (_, r) = s.replica(i)?;
    let threshold = s.input.settings.lag_threshold_s;
    let lag = r.seconds_behind.filter(|lag| *lag > threshold)?;
    Some(format!("replica {} is {lag}s behind its master {} (threshold {threshold}s)", i.state.key, r.source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{Flavor, SemiSyncStatus};
    use proptest::prelude::*;
    use AnalysisCode::*;

    const NOW: i64 = 1_700_000_000_000;
    const U1: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const U2: &str = "4f22ab58-82db-22f2-8f44-d91bb0530673";

    fn key(name: &str) -> InstanceKey {
        InstanceKey::new(name, 3306)
    }

    fn gtids(s: &str) -> GtidSet {
        GtidSet::parse(s).unwrap()
    }

    /// A healthy probe: writable when it replicates from nobody, read-only otherwise.
    fn probe(source: Option<&InstanceKey>) -> InstanceProbe {
        InstanceProbe {
            server_id: 1,
            server_uuid: None,
            version: "8.0.36".into(),
            flavor: Flavor::MySql,
            read_only: source.is_some(),
            super_read_only: Some(source.is_some()),
            log_bin: true,
            gtid_executed: GtidSet::new(),
            replication: source.map(|s| ReplicationStatus {
                source: s.clone(),
                io_thread: ThreadState::Running,
                sql_thread: ThreadState::Running,
                last_io_errno: 0,
                last_io_error: String::new(),
                last_sql_errno: 0,
                last_sql_error: String::new(),
                seconds_behind: Some(0),
                gtid_mode: "auto_position".into(),
                received: GtidSet::new(),
            }),
            replicas: vec![],
            semi_sync: SemiSyncStatus::default(),
        }
    }

    fn instance(name: &str, role: Role, source: Option<&InstanceKey>) -> ClusterInstance {
        let mut state = InstanceState::new(key(name));
        state.reachable = true;
        state.last_probe = Some(probe(source));
        state.last_checked_unix_ms = NOW;
        state.last_seen_unix_ms = Some(NOW);
        ClusterInstance { role, state }
    }

    /// One analysis scenario: a snapshot plus what the other peers say.
    struct Case {
        snapshot: ClusterSnapshot,
        raft_master: Option<InstanceKey>,
        observations: Vec<PeerObservation>,
        voters: usize,
        downtimed: BTreeSet<InstanceKey>,
        settings: AnalysisSettings,
    }

    impl Case {
        /// A healthy writable master `m` with `n` read-only replicas `r1..rn`, 3 voters.
        fn new(n: usize) -> Self {
            let mut instances = vec![instance("m", Role::Master, None)];
            for i in 1..=n {
                instances.push(instance(&format!("r{i}"), Role::Replica, Some(&key("m"))));
            }
            Case {
                snapshot: ClusterSnapshot {
                    alias: "main".into(),
                    master: key("m"),
                    instances,
                    taken_unix_ms: NOW,
                },
                raft_master: None,
                observations: vec![],
                voters: 3,
                downtimed: BTreeSet::new(),
                settings: AnalysisSettings::default(),
            }
        }

        fn state(&mut self, name: &str) -> &mut InstanceState {
            let k = key(name);
            &mut self.snapshot.instances.iter_mut().find(|i| i.state.key == k).unwrap().state
        }

        fn probe(&mut self, name: &str) -> &mut InstanceProbe {
            self.state(name).last_probe.as_mut().unwrap()
        }

        fn repl(&mut self, name: &str) -> &mut ReplicationStatus {
            self.probe(name).replication.as_mut().unwrap()
        }

        /// This peer has seen `name` fail by `failure` for `for_ms`.
        fn down(&mut self, name: &str, failure: FailureKind, for_ms: i64) {
            let st = self.state(name);
            st.reachable = false;
            st.failure = Some(failure);
            st.last_error = Some(format!("{failure:?}"));
            st.unreachable_since_unix_ms = Some(NOW - for_ms);
            st.consecutive_failures = 3;
        }

        /// `peer` saw `name` (un)reachable `age_ms` ago.
        fn seen(&mut self, peer: u64, name: &str, reachable: bool, age_ms: i64) {
            self.observations.push(PeerObservation {
                peer,
                instance: key(name),
                reachable,
                failure: (!reachable).then_some(FailureKind::Refused),
                checked_unix_ms: NOW - age_ms,
            });
        }

        fn replicas(&self) -> Vec<String> {
            let master = &self.snapshot.master;
            self.snapshot
                .instances
                .iter()
                .filter(|i| &i.state.key != master)
                .map(|i| i.state.key.host.clone())
                .collect()
        }

        /// The master stopped listening 3 s ago; peers 2 and 3 agree; replicas' IO threads reconnect.
        fn master_dies(&mut self) {
            self.down("m", FailureKind::Refused, 3000);
            for r in self.replicas() {
                let repl = self.repl(&r);
                repl.io_thread = ThreadState::Connecting;
                repl.seconds_behind = None;
                repl.last_io_errno = 2003;
                repl.last_io_error = "Can't connect to MySQL server".into();
            }
            self.seen(2, "m", false, 500);
            self.seen(3, "m", false, 800);
        }

        /// The master hangs (timeouts) for `for_ms`; peers 2 and 3 agree; replicas still connected.
        fn master_hangs(&mut self, for_ms: i64) {
            self.down("m", FailureKind::Timeout, for_ms);
            self.seen(2, "m", false, 500);
            self.seen(3, "m", false, 800);
        }

        fn input(&self) -> AnalysisInput<'_> {
            AnalysisInput {
                snapshot: &self.snapshot,
                raft_master: self.raft_master.as_ref(),
                observations: &self.observations,
                voters: self.voters,
                downtimed: &self.downtimed,
                settings: &self.settings,
                now_unix_ms: NOW,
            }
        }

        fn run(&self) -> Vec<Problem> {
            analyze(&self.input())
        }

        /// (code, instance host) of every problem, in output order.
        fn found(&self) -> Vec<(AnalysisCode, String)> {
            self.run().into_iter().map(|p| (p.code, p.instance.host)).collect()
        }
    }

    /// Runs `setup` on a healthy master with `replicas` replicas and checks the exact
    /// problems found, as (code, instance host).
    fn check(name: &str, replicas: usize, expected: &[(AnalysisCode, &str)], setup: impl FnOnce(&mut Case)) {
        let mut case = Case::new(replicas);
        setup(&mut case);
        let mut want: Vec<(AnalysisCode, String)> =
            expected.iter().map(|(code, host)| (*code, host.to_string())).collect();
        want.sort_by_key(|(code, host)| (describe(*code).priority, *code, host.clone()));
        assert_eq!(case.found(), want, "case `{name}`");
    }

    #[test]
    fn every_code_positive_and_near_miss() {
        check("healthy", 2, &[], |_| {});

        // DeadMaster and the quorum rule.
        check("dead master: 3 of 3 peers, replicas lost IO", 2, &[(DeadMaster, "m")], Case::master_dies);
        check("2 of 3 peers is a majority", 2, &[(DeadMaster, "m")], |c| {
            c.master_dies();
            c.observations.pop();
        });
        check("1 of 3 peers: only unreachable", 2, &[(UnreachableMaster, "m")], |c| {
            c.master_dies();
            c.observations.clear();
        });
        check("2 of 4 voters is no majority", 2, &[(UnreachableMaster, "m")], |c| {
            c.master_dies();
            c.observations.pop();
            c.voters = 4;
        });
        check("observation exactly max age counts", 2, &[(DeadMaster, "m")], |c| {
            c.master_dies();
            c.observations.clear();
            c.seen(2, "m", false, 5000);
        });
        check("stale observations ignored", 2, &[(UnreachableMaster, "m")], |c| {
            c.master_dies();
            c.observations.clear();
            c.seen(2, "m", false, 5001);
            c.seen(3, "m", false, 9000);
        });
        check("a peer observing twice counts once", 2, &[(UnreachableMaster, "m")], |c| {
            c.master_dies();
            c.observations.clear();
            c.voters = 5;
            for age in [100, 200, 300] {
                c.seen(2, "m", false, age);
            }
        });
        check("observations of another instance do not count", 2, &[(UnreachableMaster, "m")], |c| {
            c.master_dies();
            c.observations.clear();
            c.seen(2, "r1", false, 100);
        });
        check("replicas still connected: only unreachable", 2, &[(UnreachableMaster, "m")], |c| {
            c.down("m", FailureKind::Refused, 3000);
            c.seen(2, "m", false, 500);
            c.seen(3, "m", false, 800);
        });
        check(
            "this peer reaches the master: no master failure",
            2,
            &[(AllMasterReplicasNotReplicating, "m")],
            |c| {
                c.master_dies();
                c.state("m").reachable = true;
            },
        );

        // Hung master.
        check("hung 1.6 s by timeouts: dead though replicas' IO runs", 2, &[(DeadMaster, "m")], |c| {
            c.master_hangs(1600)
        });
        check("hung 0.9 s: not yet", 2, &[(UnreachableMaster, "m")], |c| c.master_hangs(900));
        check("refused for 1.6 s is not hung", 2, &[(UnreachableMaster, "m")], |c| {
            c.master_hangs(1600);
            c.state("m").failure = Some(FailureKind::Refused);
        });
        check("hung but no majority", 2, &[(UnreachableMaster, "m")], |c| {
            c.master_hangs(1600);
            c.observations.clear();
        });

        // A master whose process exited, seen by the peer on its host: its sockets stay
        // open (replicas still connected, other peers time out) until the kernel has
        // freed its memory, yet it is dead at once.
        check("exited, told to this peer: dead with replicas connected", 2, &[(DeadMaster, "m")], |c| {
            c.down("m", FailureKind::Exited, 5);
        });
        check("exited, seen by another peer: dead", 2, &[(DeadMaster, "m")], |c| {
            c.down("m", FailureKind::Timeout, 5);
            c.seen(2, "m", false, 3);
            c.observations[0].failure = Some(FailureKind::Exited);
        });
        check("an exit seen long ago is stale", 2, &[(UnreachableMaster, "m")], |c| {
            c.down("m", FailureKind::Timeout, 5);
            c.seen(2, "m", false, 5001);
            c.observations[0].failure = Some(FailureKind::Exited);
        });
        check("exited, but this peer reaches the master: no failure", 2, &[], |c| {
            c.seen(2, "m", false, 3);
            c.observations[0].failure = Some(FailureKind::Exited);
        });

        // DeadMasterAndSomeReplicas.
        check(
            "dead master and some replicas",
            2,
            &[(DeadMasterAndSomeReplicas, "m"), (DeadReplica, "r2")],
            |c| {
                c.master_dies();
                c.down("r2", FailureKind::Timeout, 2000);
            },
        );
        check("some replicas down, no majority", 2, &[(UnreachableMaster, "m"), (DeadReplica, "r2")], |c| {
            c.master_dies();
            c.observations.clear();
            c.down("r2", FailureKind::Refused, 2000);
        });

        // DeadMasterWithoutReplicas.
        let all_down = [(DeadMasterWithoutReplicas, "m"), (DeadReplica, "r1"), (DeadReplica, "r2")];
        check("dead master, every replica down", 2, &all_down, |c| {
            c.master_dies();
            c.down("r1", FailureKind::Refused, 2000);
            c.down("r2", FailureKind::Refused, 2000);
        });
        check(
            "dead master with no replica at all",
            0,
            &[(DeadMasterWithoutReplicas, "m")],
            Case::master_dies,
        );
        check("no replica and no majority", 0, &[(UnreachableMaster, "m")], |c| {
            c.master_dies();
            c.observations.clear();
        });

        // UnreachableMasterWithLaggingReplicas.
        let lagging = [(UnreachableMasterWithLaggingReplicas, "m"), (ReplicaLagging, "r1")];
        check("unreachable master, all replicas lag", 2, &lagging, |c| {
            c.down("m", FailureKind::Refused, 3000);
            c.repl("r1").seconds_behind = Some(30);
            c.repl("r2").seconds_behind = None; // IO running, lag unknown
        });
        check(
            "unreachable master, one replica up to date",
            2,
            &[(UnreachableMaster, "m"), (ReplicaLagging, "r1")],
            |c| {
                c.down("m", FailureKind::Refused, 3000);
                c.repl("r1").seconds_behind = Some(30);
                c.repl("r2").seconds_behind = Some(5);
            },
        );

        // AllMasterReplicasNotReplicating.
        let none = [(AllMasterReplicasNotReplicating, "m"), (ReplicationStopped, "r2")];
        check("no replica replicates", 2, &none, |c| {
            c.repl("r1").io_thread = ThreadState::Connecting;
            c.repl("r2").sql_thread = ThreadState::Stopped;
        });
        check("one replica still replicates", 2, &[], |c| c.repl("r1").io_thread = ThreadState::Connecting);

        // Semi-sync.
        let semi = |enabled, active, clients| SemiSyncStatus {
            master_enabled: enabled,
            replica_enabled: false,
            master_active: active,
            master_clients: clients,
        };
        check("semi-sync master with no semi-sync replica", 2, &[(LockedSemiSyncMaster, "m")], |c| {
            c.probe("m").semi_sync = semi(true, true, 0)
        });
        check("semi-sync master with a semi-sync replica", 2, &[], |c| {
            c.probe("m").semi_sync = semi(true, true, 1)
        });
        check("semi-sync switched itself off", 2, &[(MasterSemiSyncBlocked, "m")], |c| {
            c.probe("m").semi_sync = semi(true, false, 0)
        });
        check("semi-sync not enabled", 2, &[], |c| c.probe("m").semi_sync = semi(false, true, 0));

        // ErrantGtid.
        check("errant GTID on a replica", 2, &[(ErrantGtid, "r1")], |c| {
            c.probe("m").gtid_executed = gtids(&format!("{U1}:1-100"));
            c.probe("r1").gtid_executed = gtids(&format!("{U1}:1-100,{U2}:1-2"));
            c.repl("r1").received = gtids(&format!("{U1}:1-100"));
        });
        check("replica ahead of the master's probe through its IO thread", 2, &[], |c| {
            c.probe("m").gtid_executed = gtids(&format!("{U1}:1-100"));
            c.probe("r1").gtid_executed = gtids(&format!("{U1}:1-101"));
            c.repl("r1").received = gtids(&format!("{U1}:1-101"));
        });
        check("errant GTID not judged while the master is down", 2, &[(UnreachableMaster, "m")], |c| {
            c.probe("r1").gtid_executed = gtids(&format!("{U2}:1-2"));
            c.down("m", FailureKind::Refused, 3000);
        });

        // Writability.
        let read_only = [(NoWriteableMaster, "m"), (MasterIsReadOnly, "m")];
        check("read-only master, nothing writable", 2, &read_only, |c| c.probe("m").read_only = true);
        check(
            "read-only master, a replica writable",
            2,
            &[(ReplicaIsWritable, "r1"), (MasterIsReadOnly, "m")],
            |c| {
                c.probe("m").read_only = true;
                c.probe("r1").read_only = false;
            },
        );
        let split = [(MultipleWriteableMasters, "r1"), (ReplicaIsWritable, "r1")];
        check("split brain: a replica writable too", 2, &split, |c| c.probe("r1").read_only = false);
        let split =
            [(MultipleWriteableMasters, "m"), (ReplicaIsWritable, "r1"), (ConnectedToWrongMaster, "r2")];
        check("split brain where Raft recorded r1", 2, &split, |c| {
            c.raft_master = Some(key("r1"));
            c.probe("r1").read_only = false;
        });
        check("writable replica unreachable: no split brain", 2, &[(DeadReplica, "r1")], |c| {
            c.probe("r1").read_only = false;
            c.down("r1", FailureKind::Timeout, 1000);
        });

        // ConnectedToWrongMaster.
        check("replica follows another server", 2, &[(ConnectedToWrongMaster, "r2")], |c| {
            c.raft_master = Some(key("m"));
            c.repl("r2").source = key("x");
        });
        check("no recorded master: no wrong master", 2, &[], |c| c.repl("r2").source = key("x"));

        // DeadReplica.
        check("dead replica", 2, &[(DeadReplica, "r1")], |c| c.down("r1", FailureKind::Refused, 1000));
        check("never probed instance is no dead replica", 2, &[], |c| {
            c.snapshot
                .instances
                .push(ClusterInstance { role: Role::Unknown, state: InstanceState::new(key("u")) })
        });

        // ReplicationStopped.
        check("IO thread stopped", 2, &[(ReplicationStopped, "r1")], |c| {
            c.repl("r1").io_thread = ThreadState::Stopped
        });
        check("SQL thread stopped while the master is down", 2, &[(UnreachableMaster, "m")], |c| {
            c.repl("r1").sql_thread = ThreadState::Stopped;
            c.down("m", FailureKind::Refused, 3000);
        });

        // ReplicaLagging.
        check("replica 11 s behind", 2, &[(ReplicaLagging, "r1")], |c| {
            c.repl("r1").seconds_behind = Some(11)
        });
        check("replica 10 s behind", 2, &[], |c| c.repl("r1").seconds_behind = Some(10));

        // Downtime.
        check("downtimed master raises nothing", 2, &[], |c| {
            c.master_dies();
            c.downtimed.insert(key("m"));
        });
        check("downtimed replicas raise nothing", 2, &[], |c| {
            c.down("r1", FailureKind::Refused, 1000);
            c.probe("r2").read_only = false;
            c.downtimed.extend([key("r1"), key("r2")]);
        });
        check("downtimed master leaves replica problems", 2, &[(DeadReplica, "r2")], |c| {
            c.master_dies();
            c.down("r2", FailureKind::Refused, 1000);
            c.downtimed.insert(key("m"));
        });
    }

    #[test]
    fn problems_carry_registry_metadata_and_readable_reasons() {
        let mut case = Case::new(2);
        case.master_dies();
        let problems = case.run();
        assert_eq!(problems.len(), 1);
        let p = &problems[0];
        assert_eq!((p.priority, p.needs_failover), (0, true));
        assert_eq!(
            p.reason,
            "master m:3306 unreachable from 3 of 3 peers (connection refused); its 2 reachable replicas lost their IO thread"
        );

        let mut case = Case::new(2);
        case.master_dies();
        case.observations.clear();
        let p = &case.run()[0];
        assert_eq!((p.code, p.needs_failover), (UnreachableMaster, false));
        assert!(p.reason.contains("only 1 of 3 peers see it unreachable"), "{}", p.reason);

        let mut case = Case::new(2);
        case.down("m", FailureKind::Refused, 3000);
        let p = &case.run()[0];
        assert!(
            p.reason.contains("only 1 of 3 peers")
                && p.reason.contains("2 of its 2 reachable replicas still")
        );

        let mut case = Case::new(2);
        case.master_hangs(1600);
        assert!(case.run()[0].reason.ends_with("hung: failing by timeouts for 1600 ms"));

        let mut case = Case::new(2);
        case.probe("m").gtid_executed = gtids(&format!("{U1}:1-100"));
        case.probe("r1").gtid_executed = gtids(&format!("{U1}:1-100,{U2}:1-2"));
        assert!(case.run()[0].reason.ends_with(&format!("{U2}:1-2")));

        let mut case = Case::new(2);
        let r = case.repl("r1");
        r.io_thread = ThreadState::Stopped;
        r.last_io_errno = 1236;
        r.last_io_error = "Got fatal error 1236\nfrom master".into();
        let reason = &case.run()[0].reason;
        assert!(
            !reason.contains('\n') && reason.ends_with("IO error 1236: Got fatal error 1236 from master")
        );
    }

    #[test]
    fn output_is_sorted_by_priority_then_code_then_instance() {
        let mut case = Case::new(3);
        case.probe("r3").read_only = false; // MultipleWriteableMasters (0), ReplicaIsWritable (1)
        case.repl("r1").seconds_behind = Some(60); // ReplicaLagging (6)
        case.down("r2", FailureKind::Refused, 10); // DeadReplica (5)
        case.probe("m").semi_sync.master_enabled = true; // MasterSemiSyncBlocked (4)
        let found = case.found();
        let want: Vec<(AnalysisCode, String)> = [
            (MultipleWriteableMasters, "r3"),
            (ReplicaIsWritable, "r3"),
            (MasterSemiSyncBlocked, "m"),
            (DeadReplica, "r2"),
            (ReplicaLagging, "r1"),
        ]
        .iter()
        .map(|(c, h)| (*c, h.to_string()))
        .collect();
        assert_eq!(found, want);
    }

    /// Exhaustive, so a new code fails to compile here until the tests know it.
    fn ordinal(code: AnalysisCode) -> usize {
        match code {
            DeadMaster => 0,
            DeadMasterAndSomeReplicas => 1,
            DeadMasterWithoutReplicas => 2,
            UnreachableMaster => 3,
            UnreachableMasterWithLaggingReplicas => 4,
            AllMasterReplicasNotReplicating => 5,
            LockedSemiSyncMaster => 6,
            MasterSemiSyncBlocked => 7,
            ErrantGtid => 8,
            NoWriteableMaster => 9,
            MultipleWriteableMasters => 10,
            MasterIsReadOnly => 11,
            ReplicaIsWritable => 12,
            ConnectedToWrongMaster => 13,
            DeadReplica => 14,
            ReplicationStopped => 15,
            ReplicaLagging => 16,
            BinlogArchiveGap => 17,
            BinlogArchiveLagging => 18,
            BackupFailing => 19,
        }
    }

    #[test]
    fn registry_lists_every_code_once() {
        let ordinals: Vec<usize> = registry().iter().map(|k| ordinal(k.code)).collect();
        assert_eq!(ordinals, (0..20).collect::<Vec<_>>());
        for k in registry() {
            assert!(!k.description.is_empty(), "{}", k.code);
            assert_eq!(describe(k.code).code, k.code);
            let failover =
                matches!(k.code, DeadMaster | DeadMasterAndSomeReplicas | DeadMasterWithoutReplicas);
            assert_eq!(k.needs_failover, failover, "{}", k.code);
        }
        assert_eq!(describe(MultipleWriteableMasters).priority, 0);
        assert_eq!(describe(ReplicaLagging).priority, 6);
    }

    #[test]
    fn codes_serialize_as_operators_name_them() {
        assert_eq!(serde_json::to_string(&ErrantGtid).unwrap(), "\"ErrantGTID\"");
        assert_eq!(ErrantGtid.to_string(), "ErrantGTID");
        assert_eq!(serde_json::from_str::<AnalysisCode>("\"ErrantGTID\"").unwrap(), ErrantGtid);
        for k in registry() {
            let json = serde_json::to_string(&k.code).unwrap();
            assert_eq!(json, format!("\"{}\"", k.code));
            assert_eq!(serde_json::from_str::<AnalysisCode>(&json).unwrap(), k.code);
        }
        assert_eq!(DeadMasterAndSomeReplicas.to_string(), "DeadMasterAndSomeReplicas");
    }

    #[test]
    fn peers_counted_once_by_their_latest_fresh_observation() {
        let mut case = Case::new(1);
        case.down("m", FailureKind::Refused, 1000);
        case.seen(2, "m", false, 3000);
        case.seen(2, "m", true, 1000); // peer 2 reaches it again
        case.seen(3, "m", false, 100);
        case.seen(3, "m", false, 200);
        case.seen(4, "m", false, 6000); // stale
        case.seen(5, "m", false, 100);
        case.seen(5, "m", true, 100); // tie: reachable wins
        case.seen(6, "m", false, -50); // slightly in the future (clock skew) still counts
        assert_eq!(peers_seeing_unreachable(&case.input(), &key("m")), 3);
        case.state("m").reachable = true;
        assert_eq!(peers_seeing_unreachable(&case.input(), &key("m")), 2);
        assert_eq!(peers_seeing_unreachable(&case.input(), &key("nowhere")), 0);
    }

    #[test]
    fn hung_means_timeouts_for_the_whole_window() {
        let settings = AnalysisSettings::default();
        let mut st = InstanceState::new(key("m"));
        st.failure = Some(FailureKind::Timeout);
        st.unreachable_since_unix_ms = Some(NOW - 1500);
        assert!(is_hung(&st, &settings, NOW));
        assert!(!is_hung(&st, &settings, NOW - 1));
        st.failure = Some(FailureKind::Other);
        assert!(!is_hung(&st, &settings, NOW));
        st.failure = Some(FailureKind::Timeout);
        st.unreachable_since_unix_ms = None;
        assert!(!is_hung(&st, &settings, NOW));
        st.unreachable_since_unix_ms = Some(NOW - 5000);
        st.reachable = true;
        assert!(!is_hung(&st, &settings, NOW));
    }

    #[test]
    fn errant_gtids_are_executed_minus_master_and_received() {
        let mut master = probe(None);
        master.gtid_executed = gtids(&format!("{U1}:1-100"));
        let mut replica = probe(Some(&key("m")));
        replica.gtid_executed = gtids(&format!("{U1}:1-105,{U2}:7"));
        replica.replication.as_mut().unwrap().received = gtids(&format!("{U1}:1-103"));
        assert_eq!(errant_gtids(&replica, &master), gtids(&format!("{U1}:104-105,{U2}:7")));

        // MariaDB: domain positions.
        let (mut master, mut replica) = (master.clone(), replica.clone());
        master.flavor = Flavor::MariaDb;
        replica.flavor = Flavor::MariaDb;
        master.gtid_executed = gtids("0-1-100");
        replica.gtid_executed = gtids("0-1-100,1-2-3");
        replica.replication.as_mut().unwrap().received = gtids("0-1-100");
        assert_eq!(errant_gtids(&replica, &master), gtids("1-2-3"));

        // Not knowable: no replication status, or mixed flavors.
        let mut not_replica = replica.clone();
        not_replica.replication = None;
        assert!(errant_gtids(&not_replica, &master).is_empty());
        master.flavor = Flavor::MySql;
        assert!(errant_gtids(&replica, &master).is_empty());
    }

    fn thread() -> impl Strategy<Value = ThreadState> {
        prop_oneof![Just(ThreadState::Running), Just(ThreadState::Connecting), Just(ThreadState::Stopped)]
    }

    fn failure() -> impl Strategy<Value = FailureKind> {
        prop_oneof![
            Just(FailureKind::Refused),
            Just(FailureKind::Timeout),
            Just(FailureKind::Rejected),
            Just(FailureKind::Other)
        ]
    }

    /// Knobs of one instance: (reachable, probed, read_only, io, sql, lag, failure,
    /// down for ms, source choice, executed, received).
    type Knobs = (bool, bool, bool, ThreadState, ThreadState, Option<u64>, FailureKind, i64, u8, u64, u64);

    fn knobs() -> impl Strategy<Value = Knobs> {
        (
            any::<bool>(),
            prop::bool::weighted(0.9),
            any::<bool>(),
            thread(),
            thread(),
            prop::option::of(0u64..30),
            failure(),
            0i64..4000,
            0u8..4,
            0u64..5,
            0u64..5,
        )
    }

    /// (peer, instance index, reachable, age ms)
    type Seen = (u64, usize, bool, i64);

    fn random_case(
        nodes: Vec<Knobs>,
        seen: Vec<Seen>,
        voters: usize,
        semi: (bool, bool, u32),
        downtimed: Vec<bool>,
        raft_master: Option<usize>,
    ) -> Case {
        let mut case = Case::new(nodes.len() - 1);
        let names: Vec<String> = case.snapshot.instances.iter().map(|i| i.state.key.host.clone()).collect();
        case.probe("m").semi_sync = SemiSyncStatus {
            master_enabled: semi.0,
            replica_enabled: false,
            master_active: semi.1,
            master_clients: semi.2,
        };
        for (idx, (reachable, probed, read_only, io, sql, lag, fail, down_ms, src, exec, recv)) in
            nodes.into_iter().enumerate()
        {
            let name = &names[idx];
            let gtid = |n: u64| if n == 0 { GtidSet::new() } else { gtids(&format!("{U1}:1-{n}")) };
            let p = case.probe(name);
            p.read_only = read_only;
            p.gtid_executed = gtid(exec);
            if let Some(r) = p.replication.as_mut() {
                r.io_thread = io;
                r.sql_thread = sql;
                r.seconds_behind = lag;
                r.received = gtid(recv);
                // Mostly the master, sometimes another replica or an unknown server.
                r.source = match src {
                    0 | 1 => key("m"),
                    2 => key(&names[(idx + 1) % names.len()]),
                    _ => key("x"),
                };
            }
            if !reachable {
                case.down(name, fail, down_ms);
            }
            if !probed {
                let st = case.state(name);
                st.last_probe = None;
                st.reachable = false;
                if idx > 0 {
                    case.snapshot.instances[idx].role = Role::Unknown;
                }
            }
        }
        for (peer, idx, reachable, age) in seen {
            let name = names[idx % names.len()].clone();
            case.seen(peer, &name, reachable, age);
        }
        case.voters = voters;
        for (name, down) in names.iter().zip(downtimed) {
            if down {
                case.downtimed.insert(key(name));
            }
        }
        case.raft_master = raft_master.map(|i| key(&names[i % names.len()]));
        case
    }

    proptest! {
        #[test]
        fn analysis_invariants_hold_for_random_clusters(
            nodes in prop::collection::vec(knobs(), 1..6),
            seen in prop::collection::vec((2u64..7, 0usize..6, any::<bool>(), -100i64..8000), 0..10),
            voters in 1usize..7,
            semi in (any::<bool>(), any::<bool>(), 0u32..2),
            downtimed in prop::collection::vec(prop::bool::weighted(0.1), 6),
            raft_master in prop::option::of(0usize..6),
        ) {
            let case = random_case(nodes, seen, voters, semi, downtimed, raft_master);
            let input = case.input();
            let problems = analyze(&input);

            let order = |p: &Problem| (p.priority, p.code, p.instance.clone());
            prop_assert!(problems.windows(2).all(|w| order(&w[0]) <= order(&w[1])), "unsorted: {problems:?}");

            let master = &case.snapshot.master;
            let has = |code| problems.iter().any(|p| p.code == code && &p.instance == master);
            let dead = has(DeadMaster) || has(DeadMasterAndSomeReplicas) || has(DeadMasterWithoutReplicas);
            let unreachable = has(UnreachableMaster) || has(UnreachableMasterWithLaggingReplicas);
            prop_assert!(!(dead && unreachable), "{problems:?}");
            prop_assert!(!(has(UnreachableMaster) && has(UnreachableMasterWithLaggingReplicas)));
            let master_codes = problems.iter().filter(|p| p.needs_failover).count();
            prop_assert!(master_codes <= 1, "{problems:?}");

            let majority = peers_seeing_unreachable(&input, master) * 2 > case.voters;
            for p in &problems {
                if p.needs_failover {
                    prop_assert!(majority, "{p:?}");
                    prop_assert_eq!(&p.instance, master);
                }
                prop_assert!(!case.downtimed.contains(&p.instance), "{p:?}");
                prop_assert!(!p.reason.is_empty() && !p.reason.contains('\n'));
                prop_assert_eq!(p.priority, describe(p.code).priority);
            }
        }
    }
}
