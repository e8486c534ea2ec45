//! The replicated state machine: the decisions the peers agree on through Raft.
//!
//! Only decisions live here (DESIGN.md section 3): registered clusters, promotion
//! rules, downtimes, recovery intents and outcomes (with their steps) and their
//! acknowledgements, fencing epochs, the global recovery switch, the instances operators
//! added or forgot, and the audit of every operator request. Probe results do not.
//!
//! Nothing outside this crate writes a [`Command`]: operators reach the state through
//! the typed operations of [`crate::ops`], and recovery intents, candidates and outcomes
//! are written only by the leader's recovery code. Refusals that depend on the state
//! (ending a downtime that is not there, acknowledging a running recovery, forgetting a
//! master) are decided here, atomically with the apply.
//!
//! [`ClusterState::apply`] is deterministic: the time a command carries was stamped by
//! the leader when it proposed it ([`Proposal::at_unix_ms`]), never read from the
//! applying peer's clock. Snapshots carry [`STATE_VERSION`]; every field has a default
//! so a snapshot written by an older binary still loads.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::topology::InstanceKey;

/// Version of the snapshot layout written by this binary.
pub const STATE_VERSION: u32 = 1;

/// How many membership notes, finished recoveries and audit entries are kept (the
/// oldest are dropped first).
const KEEP_NOTES: usize = 100;
const KEEP_RECOVERIES: usize = 1000;
pub const KEEP_AUDIT: usize = 1000;
/// Steps kept per recovery (a recovery has a dozen or so).
const KEEP_STEPS: usize = 100;
/// Bounds on what operators can add, so the state (and every snapshot) stays small:
/// downtimes in force, promotion rules, seeds, and forgotten instances (the oldest of
/// which are dropped).
pub const MAX_ENTRIES: usize = 10_000;

/// Whether an instance may be promoted, and how eagerly (orchestrator's promotion rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PromotionRule {
    Prefer,
    #[default]
    Neutral,
    PreferNot,
    MustNot,
}

/// One command, as a client asks for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Registers a cluster (or updates its seeds); sets its master when it has none.
    RegisterCluster {
        alias: String,
        seeds: Vec<InstanceKey>,
        #[serde(default)]
        master: Option<InstanceKey>,
    },
    SetPromotionRule {
        instance: InstanceKey,
        rule: PromotionRule,
    },
    BeginDowntime {
        instance: InstanceKey,
        owner: String,
        reason: String,
        duration_s: u64,
    },
    EndDowntime {
        instance: InstanceKey,
    },
    /// Opens a recovery of `cluster` and bumps its fencing epoch.
    RecordRecoveryIntent {
        cluster: String,
        failed_master: InstanceKey,
        reason: String,
        #[serde(default)]
        kind: RecoveryKind,
        /// The operator (token name) who asked; `None` for an automatic recovery.
        #[serde(default)]
        requested_by: Option<String>,
    },
    /// The replica a recovery promotes, chosen once: a leader that takes over an
    /// unfinished recovery continues with it.
    SetRecoveryCandidate {
        id: u64,
        candidate: InstanceKey,
    },
    RecordRecoveryOutcome {
        id: u64,
        success: bool,
        new_master: Option<InstanceKey>,
        summary: String,
        /// What the recovery did, with timings.
        #[serde(default)]
        steps: Vec<RecoveryStep>,
        /// When the new master passed its write check, since the recovery began.
        #[serde(default)]
        writable_after_ms: Option<u64>,
    },
    /// Refused while the recovery runs or once it is acknowledged.
    AcknowledgeRecovery {
        id: u64,
        by: String,
        comment: String,
    },
    /// Not written any more; applied as before so older logs replay.
    BumpFencingEpoch {
        cluster: String,
    },
    SetRecoveriesEnabled {
        enabled: bool,
    },
    /// Not written any more; applied as before so older logs replay.
    MembershipNote {
        note: String,
    },
    /// An instance every peer discovers from (an operator's discover).
    AddSeed {
        instance: InstanceKey,
    },
    /// Every peer stops tracking `instance` until it is discovered again. Refused for
    /// the master of a registered cluster.
    ForgetInstance {
        instance: InstanceKey,
    },
    /// One operator request and its result.
    RecordAudit {
        entry: AuditEntry,
    },
}

/// One step of a recovery: what was done, and when since the recovery began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RecoveryStep {
    pub at_ms: u64,
    pub text: String,
}

impl std::fmt::Display for RecoveryStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:>5} ms  {}", self.at_ms, self.text)
    }
}

/// How an operator request ended, for the audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuditResult {
    /// Done (a recovery that ran, whatever its outcome, is `ok` with its summary).
    #[default]
    Ok,
    /// Refused by a precondition.
    Refused,
    /// The token's scope does not allow it.
    Denied,
    /// Bad arguments.
    Invalid,
    /// Tried and failed, or the outcome is unknown.
    Failed,
}

impl AuditResult {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditResult::Ok => "ok",
            AuditResult::Refused => "refused",
            AuditResult::Denied => "denied",
            AuditResult::Invalid => "invalid",
            AuditResult::Failed => "failed",
        }
    }
}

/// Who did what, from where, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct AuditEntry {
    /// Stamped by the leader when it records the entry.
    pub at_unix_ms: i64,
    /// The token's name.
    pub who: String,
    pub scope: String,
    /// The client's address as the receiving peer saw it.
    pub from: String,
    /// The peer that received the request.
    pub peer: u64,
    pub operation: String,
    pub arguments: BTreeMap<String, String>,
    pub result: AuditResult,
    /// The answer or the reason, in one line.
    pub detail: String,
}

/// A command as it is written to the Raft log: stamped by the leader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub at_unix_ms: i64,
    pub command: Command,
}

impl std::fmt::Display for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.command.name(), self.at_unix_ms)
    }
}

impl Command {
    /// The command's name as written in the log (`record_recovery_intent`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Command::RegisterCluster { .. } => "register_cluster",
            Command::SetPromotionRule { .. } => "set_promotion_rule",
            Command::BeginDowntime { .. } => "begin_downtime",
            Command::EndDowntime { .. } => "end_downtime",
            Command::RecordRecoveryIntent { .. } => "record_recovery_intent",
            Command::SetRecoveryCandidate { .. } => "set_recovery_candidate",
            Command::RecordRecoveryOutcome { .. } => "record_recovery_outcome",
            Command::AcknowledgeRecovery { .. } => "acknowledge_recovery",
            Command::BumpFencingEpoch { .. } => "bump_fencing_epoch",
            Command::SetRecoveriesEnabled { .. } => "set_recoveries_enabled",
            Command::MembershipNote { .. } => "membership_note",
            Command::AddSeed { .. } => "add_seed",
            Command::ForgetInstance { .. } => "forget_instance",
            Command::RecordAudit { .. } => "record_audit",
        }
    }
}

/// What applying a command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum CommandResult {
    #[default]
    Done,
    RecoveryOpened {
        id: u64,
        epoch: u64,
    },
    Epoch {
        epoch: u64,
    },
    /// The command was valid Raft input but refused by the state machine.
    Rejected {
        reason: String,
    },
}

impl std::fmt::Display for CommandResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandResult::Done => f.write_str("done"),
            CommandResult::RecoveryOpened { id, epoch } => write!(f, "recovery {id} opened (epoch {epoch})"),
            CommandResult::Epoch { epoch } => write!(f, "epoch {epoch}"),
            CommandResult::Rejected { reason } => write!(f, "refused: {reason}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ClusterRecord {
    pub seeds: Vec<InstanceKey>,
    pub registered_unix_ms: i64,
    /// The master the group agrees on; changed only by recoveries and switchovers.
    pub master: Option<InstanceKey>,
    pub master_since_unix_ms: i64,
}

/// Why a recovery runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryKind {
    /// The master died; recovered automatically.
    #[default]
    Failover,
    /// An operator forced a failover.
    ForcedFailover,
    /// A planned switchover with the master alive.
    Switchover,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Downtime {
    pub owner: String,
    pub reason: String,
    pub since_unix_ms: i64,
    pub until_unix_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RecoveryRecord {
    pub id: u64,
    pub cluster: String,
    pub failed_master: Option<InstanceKey>,
    pub reason: String,
    pub kind: RecoveryKind,
    pub epoch: u64,
    pub candidate: Option<InstanceKey>,
    pub started_unix_ms: i64,
    pub ended_unix_ms: Option<i64>,
    pub success: Option<bool>,
    pub new_master: Option<InstanceKey>,
    pub summary: String,
    pub acknowledged_by: Option<String>,
    pub acknowledge_comment: String,
    /// The operator who asked for it (`None`: automatic).
    pub requested_by: Option<String>,
    pub steps: Vec<RecoveryStep>,
    pub writable_after_ms: Option<u64>,
}

impl RecoveryRecord {
    pub fn is_open(&self) -> bool {
        self.ended_unix_ms.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Note {
    pub at_unix_ms: i64,
    pub note: String,
}

/// Everything the peers agree on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterState {
    /// Layout version of the snapshot this was loaded from (or [`STATE_VERSION`]).
    pub version: u32,
    pub clusters: BTreeMap<String, ClusterRecord>,
    pub promotion_rules: BTreeMap<InstanceKey, PromotionRule>,
    pub downtimes: BTreeMap<InstanceKey, Downtime>,
    pub recoveries: Vec<RecoveryRecord>,
    pub next_recovery_id: u64,
    pub fencing_epochs: BTreeMap<String, u64>,
    pub recoveries_enabled: bool,
    pub notes: Vec<Note>,
    /// Commands applied since the group began (a cheap consistency check across peers).
    pub applied_commands: u64,
    /// Instances operators added (`discover`): every peer discovers from them.
    pub seeds: BTreeSet<InstanceKey>,
    /// Instances operators forgot, with when: no peer tracks them until rediscovered.
    pub forgotten: BTreeMap<InstanceKey, i64>,
    /// Operator requests, oldest first, at most [`KEEP_AUDIT`].
    pub audit: Vec<AuditEntry>,
}

impl Default for ClusterState {
    fn default() -> Self {
        Self {
            version: STATE_VERSION,
            clusters: BTreeMap::new(),
            promotion_rules: BTreeMap::new(),
            downtimes: BTreeMap::new(),
            recoveries: Vec::new(),
            next_recovery_id: 1,
            fencing_epochs: BTreeMap::new(),
            recoveries_enabled: true,
            notes: Vec::new(),
            applied_commands: 0,
            seeds: BTreeSet::new(),
            forgotten: BTreeMap::new(),
            audit: Vec::new(),
        }
    }
}

fn rejected(reason: impl Into<String>) -> CommandResult {
    CommandResult::Rejected { reason: reason.into() }
}

impl ClusterState {
    /// Applies one proposal. Deterministic: same state + same proposal = same result.
    pub fn apply(&mut self, p: &Proposal) -> CommandResult {
        self.applied_commands += 1;
        let now = p.at_unix_ms;
        match &p.command {
            Command::RegisterCluster { alias, seeds, master } => {
                if alias.is_empty() {
                    return rejected("cluster alias must not be empty");
                }
                let record = self.clusters.entry(alias.clone()).or_default();
                record.seeds = seeds.clone();
                if record.registered_unix_ms == 0 {
                    record.registered_unix_ms = now;
                }
                if record.master.is_none() && master.is_some() {
                    record.master = master.clone();
                    record.master_since_unix_ms = now;
                }
                CommandResult::Done
            }
            Command::SetPromotionRule { instance, rule } => {
                if *rule == PromotionRule::Neutral {
                    self.promotion_rules.remove(instance);
                } else if !self.promotion_rules.contains_key(instance)
                    && self.promotion_rules.len() >= MAX_ENTRIES
                {
                    return rejected(format!("{MAX_ENTRIES} promotion rules are set already"));
                } else {
                    self.promotion_rules.insert(instance.clone(), *rule);
                }
                CommandResult::Done
            }
            Command::BeginDowntime { instance, owner, reason, duration_s } => {
                if *duration_s == 0 {
                    return rejected("downtime duration must be above 0 s");
                }
                // Expired downtimes go now: they mean nothing any more.
                self.downtimes.retain(|_, d| d.until_unix_ms > now);
                if !self.downtimes.contains_key(instance) && self.downtimes.len() >= MAX_ENTRIES {
                    return rejected(format!("{MAX_ENTRIES} downtimes are in force already"));
                }
                let until = now.saturating_add((*duration_s as i64).saturating_mul(1000));
                self.downtimes.insert(
                    instance.clone(),
                    Downtime {
                        owner: owner.clone(),
                        reason: reason.clone(),
                        since_unix_ms: now,
                        until_unix_ms: until,
                    },
                );
                CommandResult::Done
            }
            Command::EndDowntime { instance } => match self.downtimes.remove(instance) {
                Some(_) => CommandResult::Done,
                None => rejected(format!("{instance} is not downtimed")),
            },
            Command::RecordRecoveryIntent { cluster, failed_master, reason, kind, requested_by } => {
                if let Some(open) = self.recoveries.iter().find(|r| &r.cluster == cluster && r.is_open()) {
                    return rejected(format!("recovery {} of cluster {cluster} is still running", open.id));
                }
                let epoch = self.bump_epoch(cluster);
                let id = self.next_recovery_id;
                self.next_recovery_id += 1;
                self.recoveries.push(RecoveryRecord {
                    id,
                    cluster: cluster.clone(),
                    failed_master: Some(failed_master.clone()),
                    reason: reason.clone(),
                    kind: *kind,
                    epoch,
                    started_unix_ms: now,
                    requested_by: requested_by.clone(),
                    ..Default::default()
                });
                self.trim_recoveries();
                CommandResult::RecoveryOpened { id, epoch }
            }
            Command::SetRecoveryCandidate { id, candidate } => {
                match self.recoveries.iter_mut().find(|r| r.id == *id) {
                    Some(r) if r.is_open() => {
                        if r.candidate.is_none() {
                            r.candidate = Some(candidate.clone());
                        }
                        CommandResult::Done
                    }
                    Some(_) => rejected(format!("recovery {id} has already ended")),
                    None => rejected(format!("no recovery {id}")),
                }
            }
            Command::RecordRecoveryOutcome { id, success, new_master, summary, steps, writable_after_ms } => {
                match self.recoveries.iter_mut().find(|r| r.id == *id) {
                    Some(r) if r.is_open() => {
                        r.ended_unix_ms = Some(now);
                        r.success = Some(*success);
                        r.new_master = new_master.clone();
                        r.summary = summary.clone();
                        r.steps = steps.iter().take(KEEP_STEPS).cloned().collect();
                        r.writable_after_ms = *writable_after_ms;
                        if let Some(m) = new_master {
                            let record = self.clusters.entry(r.cluster.clone()).or_default();
                            record.master = Some(m.clone());
                            record.master_since_unix_ms = now;
                        }
                        CommandResult::Done
                    }
                    Some(_) => rejected(format!("recovery {id} has already ended")),
                    None => rejected(format!("no recovery {id}")),
                }
            }
            Command::AcknowledgeRecovery { id, by, comment } => {
                match self.recoveries.iter_mut().find(|r| r.id == *id) {
                    Some(r) if r.is_open() => rejected(format!("recovery {id} is still running")),
                    Some(r) if r.acknowledged_by.is_some() => rejected(format!(
                        "recovery {id} was already acknowledged by {}",
                        r.acknowledged_by.as_deref().unwrap_or_default()
                    )),
                    Some(r) => {
                        r.acknowledged_by = Some(by.clone());
                        r.acknowledge_comment = comment.clone();
                        CommandResult::Done
                    }
                    None => rejected(format!("no recovery {id}")),
                }
            }
            Command::BumpFencingEpoch { cluster } => CommandResult::Epoch { epoch: self.bump_epoch(cluster) },
            Command::SetRecoveriesEnabled { enabled } => {
                self.recoveries_enabled = *enabled;
                CommandResult::Done
            }
            Command::MembershipNote { note } => {
                self.notes.push(Note { at_unix_ms: now, note: note.clone() });
                if self.notes.len() > KEEP_NOTES {
                    let excess = self.notes.len() - KEEP_NOTES;
                    self.notes.drain(..excess);
                }
                CommandResult::Done
            }
            Command::AddSeed { instance } => {
                if !self.seeds.contains(instance) && self.seeds.len() >= MAX_ENTRIES {
                    return rejected(format!("{MAX_ENTRIES} instances were added already"));
                }
                self.forgotten.remove(instance);
                self.seeds.insert(instance.clone());
                CommandResult::Done
            }
            Command::ForgetInstance { instance } => {
                if let Some((alias, _)) =
                    self.clusters.iter().find(|(_, c)| c.master.as_ref() == Some(instance))
                {
                    return rejected(format!(
                        "{instance} is the master of cluster {alias}: switch over or fail over first"
                    ));
                }
                if let Some(open) = self.recoveries.iter().find(|r| {
                    r.is_open()
                        && (r.failed_master.as_ref() == Some(instance)
                            || r.candidate.as_ref() == Some(instance))
                }) {
                    return rejected(format!("recovery {} of {} involves {instance}", open.id, open.cluster));
                }
                self.seeds.remove(instance);
                self.forgotten.insert(instance.clone(), now);
                while self.forgotten.len() > MAX_ENTRIES {
                    let oldest = self
                        .forgotten
                        .iter()
                        .min_by_key(|(k, at)| (**at, (*k).clone()))
                        .map(|(k, _)| k.clone());
                    match oldest {
                        Some(k) => self.forgotten.remove(&k),
                        None => break,
                    };
                }
                CommandResult::Done
            }
            Command::RecordAudit { entry } => {
                self.audit.push(AuditEntry { at_unix_ms: now, ..entry.clone() });
                if self.audit.len() > KEEP_AUDIT {
                    let excess = self.audit.len() - KEEP_AUDIT;
                    self.audit.drain(..excess);
                }
                CommandResult::Done
            }
        }
    }

    fn bump_epoch(&mut self, cluster: &str) -> u64 {
        let epoch = self.fencing_epochs.entry(cluster.to_string()).or_insert(0);
        *epoch += 1;
        *epoch
    }

    /// Drops the oldest finished recoveries beyond the keep limit (open ones stay).
    fn trim_recoveries(&mut self) {
        while self.recoveries.len() > KEEP_RECOVERIES {
            match self.recoveries.iter().position(|r| !r.is_open()) {
                Some(i) => {
                    self.recoveries.remove(i);
                }
                None => break,
            }
        }
    }

    /// Whether `instance` is downtimed at `now_unix_ms` (expired downtimes do not count).
    pub fn is_downtimed(&self, instance: &InstanceKey, now_unix_ms: i64) -> bool {
        self.downtimes.get(instance).is_some_and(|d| d.until_unix_ms > now_unix_ms)
    }

    /// The instances downtimed at `now_unix_ms`.
    pub fn downtimed_at(&self, now_unix_ms: i64) -> BTreeSet<InstanceKey> {
        self.downtimes.keys().filter(|k| self.is_downtimed(k, now_unix_ms)).cloned().collect()
    }

    /// Whether some registered cluster has `instance` as its master.
    pub fn is_master(&self, instance: &InstanceKey) -> bool {
        self.clusters.values().any(|c| c.master.as_ref() == Some(instance))
    }

    /// The open recovery of `cluster`, if one runs.
    pub fn open_recovery(&self, cluster: &str) -> Option<&RecoveryRecord> {
        self.recoveries.iter().find(|r| r.cluster == cluster && r.is_open())
    }

    /// What discovery needs from the decisions: each registered cluster's master and
    /// former masters, the seeds operators added and the instances they forgot.
    pub fn registry(&self) -> crate::topology::Registry {
        let clusters = self
            .clusters
            .iter()
            .filter_map(|(alias, record)| {
                let master = record.master.clone()?;
                let former = self
                    .recoveries
                    .iter()
                    .filter(|r| &r.cluster == alias)
                    .filter_map(|r| r.failed_master.clone())
                    .filter(|f| f != &master)
                    .collect();
                Some(crate::topology::RegisteredCluster { alias: alias.clone(), master, former })
            })
            .collect();
        crate::topology::Registry {
            clusters,
            seeds: self.seeds.clone(),
            forgotten: self.forgotten.keys().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(s: &str) -> InstanceKey {
        s.parse().unwrap()
    }

    fn at(ms: i64, command: Command) -> Proposal {
        Proposal { at_unix_ms: ms, command }
    }

    #[test]
    fn downtime_begins_expires_and_ends() {
        let mut s = ClusterState::default();
        let cmd = Command::BeginDowntime {
            instance: key("a:1"),
            owner: "ops".into(),
            reason: "maintenance".into(),
            duration_s: 60,
        };
        assert_eq!(s.apply(&at(1_000, cmd)), CommandResult::Done);
        assert!(s.is_downtimed(&key("a:1"), 60_999));
        assert!(!s.is_downtimed(&key("a:1"), 61_000));
        assert_eq!(s.apply(&at(2_000, Command::EndDowntime { instance: key("a:1") })), CommandResult::Done);
        // An expired downtime is dropped when the next one begins.
        let short = |k: &str| Command::BeginDowntime {
            instance: key(k),
            owner: "o".into(),
            reason: "r".into(),
            duration_s: 1,
        };
        s.apply(&at(10_000, short("b:1")));
        s.apply(&at(20_000, short("c:1")));
        assert_eq!(s.downtimes.keys().cloned().collect::<Vec<_>>(), vec![key("c:1")]);
        assert!(matches!(
            s.apply(&at(3_000, Command::EndDowntime { instance: key("a:1") })),
            CommandResult::Rejected { .. }
        ));
    }

    #[test]
    fn recovery_intent_bumps_epoch_and_blocks_a_second_one_until_it_ends() {
        let mut s = ClusterState::default();
        let intent = Command::RecordRecoveryIntent {
            cluster: "main".into(),
            failed_master: key("m:1"),
            reason: "DeadMaster".into(),
            kind: RecoveryKind::Failover,
            requested_by: None,
        };
        assert_eq!(s.apply(&at(10, intent.clone())), CommandResult::RecoveryOpened { id: 1, epoch: 1 });
        match s.apply(&at(11, intent.clone())) {
            CommandResult::Rejected { reason } => {
                assert!(reason.contains("still running"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        let outcome = Command::RecordRecoveryOutcome {
            id: 1,
            success: true,
            new_master: Some(key("r:1")),
            summary: "promoted r:1".into(),
            steps: vec![RecoveryStep { at_ms: 3, text: "promoted r:1".into() }],
            writable_after_ms: Some(3),
        };
        assert_eq!(
            s.apply(&at(11, Command::SetRecoveryCandidate { id: 1, candidate: key("r:1") })),
            CommandResult::Done
        );
        assert_eq!(s.apply(&at(12, outcome.clone())), CommandResult::Done);
        assert_eq!(
            s.clusters["main"].master,
            Some(key("r:1")),
            "a recovery's new master becomes the cluster's"
        );
        assert_eq!(s.recoveries[0].candidate, Some(key("r:1")));
        assert!(matches!(s.apply(&at(13, outcome)), CommandResult::Rejected { .. }));
        assert_eq!(s.apply(&at(14, intent)), CommandResult::RecoveryOpened { id: 2, epoch: 2 });
        assert_eq!(
            s.apply(&at(15, Command::BumpFencingEpoch { cluster: "main".into() })),
            CommandResult::Epoch { epoch: 3 }
        );
        let ack = Command::AcknowledgeRecovery { id: 1, by: "alice".into(), comment: "checked".into() };
        assert_eq!(s.apply(&at(16, ack)), CommandResult::Done);
        assert_eq!(s.recoveries[0].acknowledged_by.as_deref(), Some("alice"));
        assert_eq!(s.recoveries[0].ended_unix_ms, Some(12));
    }

    #[test]
    fn acknowledging_needs_an_ended_recovery_and_happens_once() {
        let mut s = ClusterState::default();
        let intent = Command::RecordRecoveryIntent {
            cluster: "main".into(),
            failed_master: key("m:1"),
            reason: "switchover".into(),
            kind: RecoveryKind::Switchover,
            requested_by: Some("alice".into()),
        };
        assert_eq!(s.apply(&at(1, intent)), CommandResult::RecoveryOpened { id: 1, epoch: 1 });
        assert_eq!(s.recoveries[0].requested_by.as_deref(), Some("alice"));
        let ack = |by: &str| Command::AcknowledgeRecovery { id: 1, by: by.into(), comment: String::new() };
        let refused = |r: CommandResult, needle: &str| match r {
            CommandResult::Rejected { reason } => assert!(reason.contains(needle), "{reason}"),
            other => panic!("{other}"),
        };
        refused(s.apply(&at(2, ack("bob"))), "still running");
        let outcome = Command::RecordRecoveryOutcome {
            id: 1,
            success: true,
            new_master: Some(key("r:1")),
            summary: "promoted r:1".into(),
            steps: (0..500).map(|i| RecoveryStep { at_ms: i, text: format!("step {i}") }).collect(),
            writable_after_ms: Some(40),
        };
        s.apply(&at(3, outcome));
        assert_eq!(s.recoveries[0].steps.len(), KEEP_STEPS, "steps are bounded");
        assert_eq!(s.apply(&at(4, ack("bob"))), CommandResult::Done);
        refused(s.apply(&at(5, ack("carol"))), "already acknowledged by bob");
        refused(
            s.apply(&at(6, Command::AcknowledgeRecovery { id: 9, by: "x".into(), comment: "".into() })),
            "no recovery 9",
        );
    }

    #[test]
    fn seeds_forgetting_and_the_registry() {
        let mut s = ClusterState::default();
        let register = Command::RegisterCluster {
            alias: "main".into(),
            seeds: vec![key("m:1")],
            master: Some(key("m:1")),
        };
        s.apply(&at(1, register));
        s.apply(&at(2, Command::AddSeed { instance: key("n:1") }));
        match s.apply(&at(3, Command::ForgetInstance { instance: key("m:1") })) {
            CommandResult::Rejected { reason } => {
                assert!(reason.contains("master of cluster main"), "{reason}")
            }
            other => panic!("{other}"),
        }
        assert_eq!(s.apply(&at(4, Command::ForgetInstance { instance: key("n:1") })), CommandResult::Done);
        let r = s.registry();
        assert!(r.seeds.is_empty() && r.forgotten.contains(&key("n:1")));
        assert_eq!(r.clusters[0].master, key("m:1"));
        s.apply(&at(5, Command::AddSeed { instance: key("n:1") }));
        assert!(!s.registry().forgotten.contains(&key("n:1")), "discovering again un-forgets");
    }

    #[test]
    fn audit_is_bounded_and_stamped_by_the_leader() {
        let mut s = ClusterState::default();
        for i in 0..(KEEP_AUDIT as i64 + 5) {
            let entry = AuditEntry { who: format!("t{i}"), at_unix_ms: -1, ..Default::default() };
            s.apply(&at(i, Command::RecordAudit { entry }));
        }
        assert_eq!(s.audit.len(), KEEP_AUDIT);
        assert_eq!(s.audit[0].who, "t5", "the oldest are dropped first");
        assert_eq!(s.audit.last().unwrap().at_unix_ms, KEEP_AUDIT as i64 + 4);
    }

    #[test]
    fn promotion_rules_and_switches() {
        let mut s = ClusterState::default();
        let set = |rule| Command::SetPromotionRule { instance: key("a:1"), rule };
        s.apply(&at(1, set(PromotionRule::MustNot)));
        assert_eq!(s.promotion_rules.get(&key("a:1")), Some(&PromotionRule::MustNot));
        s.apply(&at(2, set(PromotionRule::Neutral)));
        assert!(s.promotion_rules.is_empty());
        s.apply(&at(3, Command::SetRecoveriesEnabled { enabled: false }));
        assert!(!s.recoveries_enabled);
        assert_eq!(s.applied_commands, 3);
    }

    #[test]
    fn snapshot_of_an_older_layout_still_loads() {
        // A version-1 snapshot written before fields such as `notes` existed.
        let old = r#"{"version":1,"clusters":{"main":{"seeds":["10.0.0.1:3306"]}},
                      "downtimes":{"10.0.0.2:3306":{"owner":"ops","until_unix_ms":5}},
                      "fencing_epochs":{"main":4}}"#;
        let s: ClusterState = serde_json::from_str(old).unwrap();
        assert_eq!(s.fencing_epochs["main"], 4);
        assert_eq!(s.clusters["main"].seeds, vec![key("10.0.0.1:3306")]);
        assert!(s.recoveries_enabled, "missing switch defaults to enabled");
        assert_eq!(s.next_recovery_id, 1);
        assert!(s.notes.is_empty());
    }

    fn command_strategy() -> impl Strategy<Value = Command> {
        let inst = prop::sample::select(vec!["a:1", "b:1", "c:1"]).prop_map(key);
        let cluster = prop::sample::select(vec!["x", "y"]).prop_map(String::from);
        prop_oneof![
            (inst.clone(), 0u64..100).prop_map(|(instance, duration_s)| Command::BeginDowntime {
                instance,
                owner: "o".into(),
                reason: "r".into(),
                duration_s
            }),
            inst.clone().prop_map(|instance| Command::EndDowntime { instance }),
            (cluster.clone(), inst.clone()).prop_map(|(cluster, failed_master)| {
                Command::RecordRecoveryIntent {
                    cluster,
                    failed_master,
                    reason: "r".into(),
                    kind: RecoveryKind::Failover,
                    requested_by: None,
                }
            }),
            (1u64..6, any::<bool>()).prop_map(|(id, success)| Command::RecordRecoveryOutcome {
                id,
                success,
                new_master: None,
                summary: String::new(),
                steps: Vec::new(),
                writable_after_ms: None,
            }),
            cluster.prop_map(|cluster| Command::BumpFencingEpoch { cluster }),
            any::<bool>().prop_map(|enabled| Command::SetRecoveriesEnabled { enabled }),
            (1u64..6).prop_map(|id| Command::AcknowledgeRecovery {
                id,
                by: "o".into(),
                comment: String::new()
            }),
            inst.clone().prop_map(|instance| Command::ForgetInstance { instance }),
            inst.clone().prop_map(|instance| Command::AddSeed { instance }),
            "[a-z]{0,8}"
                .prop_map(|who| Command::RecordAudit { entry: AuditEntry { who, ..Default::default() } }),
        ]
    }

    proptest! {
        /// Replicas applying the same log reach the same state, epochs never go back,
        /// and at most one recovery per cluster is open at a time; a snapshot round trip
        /// gives back the same state.
        #[test]
        fn apply_is_deterministic_and_keeps_invariants(cmds in prop::collection::vec(command_strategy(), 0..60)) {
            let mut a = ClusterState::default();
            let mut b = ClusterState::default();
            let mut epochs: BTreeMap<String, u64> = BTreeMap::new();
            for (i, c) in cmds.iter().enumerate() {
                let p = at(i as i64 * 10, c.clone());
                prop_assert_eq!(a.apply(&p), b.apply(&p));
                for (cluster, e) in &a.fencing_epochs {
                    let before = epochs.insert(cluster.clone(), *e).unwrap_or(0);
                    prop_assert!(*e >= before);
                }
                for cluster in ["x", "y"] {
                    prop_assert!(a.recoveries.iter().filter(|r| r.cluster == cluster && r.is_open()).count() <= 1);
                }
                prop_assert!(a.recoveries.iter().all(|r| r.acknowledged_by.is_none() || !r.is_open()), "a running recovery was acknowledged");
                prop_assert!(a.seeds.iter().all(|k| !a.forgotten.contains_key(k)), "an instance both added and forgotten");
                prop_assert!(a.audit.len() <= KEEP_AUDIT);
            }
            prop_assert_eq!(&a, &b);
            let json = serde_json::to_string(&a).unwrap();
            let back: ClusterState = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(a, back);
        }
    }
}
