//! The typed operations: the only way operators change anything (DESIGN.md sections 10
//! and 11). HTTP routes and gRPC methods parse a request into an [`Operation`] and
//! hand it, with the authenticated [`Caller`], to [`Operations::run`], which
//!
//! 1. checks the caller's scope against the operation's ([`Operation::scope`]);
//! 2. sends it to the peer that must run it (the Raft leader; for a leadership
//!    transfer, the peer that is to lead) over the peers' mutually authenticated port;
//! 3. there checks the scope again and the operation's preconditions against the
//!    replicated state and the topology, and carries it out;
//! 4. records who, what, the arguments, from where and the result in the audit.
//!
//! Recovery intents, candidates and outcomes are not operations: only the leader's
//! recovery code writes them. A switchover or forced failover is an operation that
//! asks that code to run, with the operator's name on the recovery.
//!
//! [`parse`] holds the strict parsers both front ends use.

pub mod parse;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::{Caller, Scope};
use crate::aws::controller::ClusterAwsStatus;
use crate::backup::jobs::JobView;
use crate::backup::manifest::BackupKind;
use crate::backup::restore::{PointSpec, RestoreRequest};
use crate::backup::service::{BackupRequest, BackupService};
use crate::config::BackupSource;
use crate::discovery::DiscoveryHandle;
use crate::raft::{NodeId, PeerNode, RaftNode, WriteError};
use crate::recovery::detector::{DryRun, Findings, ManualError, ManualRecovery, RecoveryService};
use crate::state::{
    AuditEntry, AuditResult, Command, CommandResult, PromotionRule, RecoveryKind, RecoveryRecord,
};
use crate::topology::{ClusterInstance, InstanceKey};

/// How long the leader waits to hear from a quorum before it refuses to act (a leader
/// elected a moment ago has not heard its followers' answers yet).
const QUORUM_PATIENCE: Duration = Duration::from_millis(1000);

/// How long a forwarded request may take: a recovery runs for seconds.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(120);

/// Something an operator asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "snake_case")]
pub enum Operation {
    /// Probe `instance` and make every peer discover from it.
    Discover {
        instance: InstanceKey,
    },
    /// Every peer stops tracking `instance`.
    Forget {
        instance: InstanceKey,
    },
    Switchover {
        cluster: String,
        target: Option<InstanceKey>,
        expected_master: Option<InstanceKey>,
        dry_run: bool,
    },
    ForcedFailover {
        cluster: String,
        target: Option<InstanceKey>,
        expected_master: Option<InstanceKey>,
        dry_run: bool,
    },
    AcknowledgeRecovery {
        id: u64,
        comment: String,
    },
    BeginDowntime {
        instance: InstanceKey,
        duration_s: u64,
        reason: String,
    },
    EndDowntime {
        instance: InstanceKey,
    },
    SetPromotionRule {
        instance: InstanceKey,
        rule: PromotionRule,
    },
    SetGlobalRecoveries {
        enabled: bool,
    },
    AddPeer {
        id: NodeId,
        raft: String,
        http: String,
    },
    RemovePeer {
        id: NodeId,
    },
    TransferLeadership {
        to: NodeId,
    },
    /// A bootstrapped node adds itself (asked over the peer port with a certificate
    /// naming its address): a learner first; the leader's membership loop makes it a
    /// voter when the voters can stay an odd count.
    JoinPeer {
        id: NodeId,
        raft: String,
        http: String,
    },
    /// Take a backup of `source` (by default the instance `[backup] source` names) on
    /// its host's peer, under the `backup_lock`; `kind` `None`: an incremental when
    /// one can be taken, else a full.
    CreateBackup {
        cluster: String,
        kind: Option<BackupKind>,
        source: Option<InstanceKey>,
    },
    /// Delete a backup (refused while another needs it as its parent).
    DeleteBackup {
        cluster: String,
        id: String,
    },
    /// Check every part of a backup without restoring it (a job on this peer).
    VerifyBackup {
        cluster: String,
        id: String,
    },
    /// Restore onto the empty server `target`, then replay the archive to `point`
    /// (a job on the target host's peer).
    RestoreBackup {
        cluster: String,
        target: InstanceKey,
        point: PointSpec,
        backup: Option<String>,
        dry_run: bool,
    },
}

/// Which peer runs an operation.
enum RunsOn {
    Leader,
    Peer(NodeId),
    /// The peer that receives it.
    Here,
    /// The peer on this host (the instance's).
    Host(String),
}

impl Operation {
    /// The name in the audit.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Discover { .. } => "discover",
            Operation::Forget { .. } => "forget",
            Operation::Switchover { .. } => "switchover",
            Operation::ForcedFailover { .. } => "forced_failover",
            Operation::AcknowledgeRecovery { .. } => "acknowledge_recovery",
            Operation::BeginDowntime { .. } => "begin_downtime",
            Operation::EndDowntime { .. } => "end_downtime",
            Operation::SetPromotionRule { .. } => "set_promotion_rule",
            Operation::SetGlobalRecoveries { .. } => "set_global_recoveries",
            Operation::AddPeer { .. } => "add_raft_peer",
            Operation::RemovePeer { .. } => "remove_raft_peer",
            Operation::TransferLeadership { .. } => "transfer_leadership",
            Operation::JoinPeer { .. } => "join_raft_peer",
            Operation::CreateBackup { .. } => "create_backup",
            Operation::DeleteBackup { .. } => "delete_backup",
            Operation::VerifyBackup { .. } => "verify_backup",
            Operation::RestoreBackup { .. } => "restore_backup",
        }
    }

    /// The scope a token needs for it.
    pub fn scope(&self) -> Scope {
        match self {
            Operation::Switchover { .. }
            | Operation::AcknowledgeRecovery { .. }
            | Operation::BeginDowntime { .. }
            | Operation::EndDowntime { .. }
            | Operation::SetPromotionRule { .. }
            | Operation::CreateBackup { .. }
            | Operation::VerifyBackup { .. } => Scope::Operate,
            Operation::Discover { .. }
            | Operation::Forget { .. }
            | Operation::ForcedFailover { .. }
            | Operation::SetGlobalRecoveries { .. }
            | Operation::AddPeer { .. }
            | Operation::RemovePeer { .. }
            | Operation::TransferLeadership { .. }
            | Operation::JoinPeer { .. }
            | Operation::DeleteBackup { .. }
            | Operation::RestoreBackup { .. } => Scope::Admin,
        }
    }

    /// A dry run changes nothing and is not audited.
    pub fn is_dry_run(&self) -> bool {
        matches!(
            self,
            Operation::Switchover { dry_run: true, .. }
                | Operation::ForcedFailover { dry_run: true, .. }
                | Operation::RestoreBackup { dry_run: true, .. }
        )
    }

    fn runs_on(&self) -> RunsOn {
        match self {
            Operation::TransferLeadership { to } => RunsOn::Peer(*to),
            Operation::VerifyBackup { .. } => RunsOn::Here,
            Operation::RestoreBackup { target, .. } => RunsOn::Host(target.host.clone()),
            _ => RunsOn::Leader,
        }
    }

    /// The arguments as the audit shows them.
    pub fn arguments(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            a.insert(k.to_string(), v);
        };
        let show = |k: &Option<InstanceKey>| k.as_ref().map(ToString::to_string).unwrap_or_default();
        match self {
            Operation::Discover { instance }
            | Operation::Forget { instance }
            | Operation::EndDowntime { instance } => put("instance", instance.to_string()),
            Operation::Switchover { cluster, target, expected_master, dry_run }
            | Operation::ForcedFailover { cluster, target, expected_master, dry_run } => {
                put("cluster", cluster.clone());
                put("target", show(target));
                put("expected_master", show(expected_master));
                put("dry_run", dry_run.to_string());
            }
            Operation::AcknowledgeRecovery { id, comment } => {
                put("id", id.to_string());
                put("comment", comment.clone());
            }
            Operation::BeginDowntime { instance, duration_s, reason } => {
                put("instance", instance.to_string());
                put("duration_s", duration_s.to_string());
                put("reason", reason.clone());
            }
            Operation::SetPromotionRule { instance, rule } => {
                put("instance", instance.to_string());
                put("rule", rule_name(*rule).to_string());
            }
            Operation::SetGlobalRecoveries { enabled } => put("enabled", enabled.to_string()),
            Operation::AddPeer { id, raft, http } | Operation::JoinPeer { id, raft, http } => {
                put("id", id.to_string());
                put("raft", raft.clone());
                put("http", http.clone());
            }
            Operation::RemovePeer { id } => put("id", id.to_string()),
            Operation::TransferLeadership { to } => put("to", to.to_string()),
            Operation::CreateBackup { cluster, kind, source } => {
                put("cluster", cluster.clone());
                put("kind", kind.map(|k| k.name().to_string()).unwrap_or_else(|| "auto".into()));
                put("source", show(source));
            }
            Operation::DeleteBackup { cluster, id } | Operation::VerifyBackup { cluster, id } => {
                put("cluster", cluster.clone());
                put("id", id.clone());
            }
            Operation::RestoreBackup { cluster, target, point, backup, dry_run } => {
                put("cluster", cluster.clone());
                put("target", target.to_string());
                put("point", point.describe());
                put("backup", backup.clone().unwrap_or_default());
                put("dry_run", dry_run.to_string());
            }
        }
        a
    }
}

pub fn rule_name(rule: PromotionRule) -> &'static str {
    match rule {
        PromotionRule::Prefer => "prefer",
        PromotionRule::Neutral => "neutral",
        PromotionRule::PreferNot => "prefer_not",
        PromotionRule::MustNot => "must_not",
    }
}

/// Why an operation did not happen (or did not succeed). Each maps to one gRPC code
/// and HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum OpError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    /// A precondition refused it; nothing was changed.
    #[error("refused: {0}")]
    Refused(String),
    #[error("permission denied: {0}")]
    Denied(String),
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// No leader or no quorum: nothing was done.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// It may or may not have taken effect.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    #[error("failed: {0}")]
    Failed(String),
}

impl OpError {
    fn audit_result(&self) -> AuditResult {
        match self {
            OpError::InvalidArgument(_) | OpError::NotFound(_) => AuditResult::Invalid,
            OpError::Refused(_) => AuditResult::Refused,
            OpError::Denied(_) | OpError::Unauthenticated(_) => AuditResult::Denied,
            OpError::Unavailable(_) | OpError::Unknown(_) | OpError::Failed(_) => AuditResult::Failed,
        }
    }
}

impl From<WriteError> for OpError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::NotLeader { .. } => OpError::Unavailable(e.to_string()),
            WriteError::NoQuorum(_) => OpError::Unknown(e.to_string()),
            WriteError::Raft(_) => OpError::Failed(e.to_string()),
        }
    }
}

/// What a switchover or failover would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanView {
    pub cluster: String,
    pub kind: RecoveryKind,
    pub master: InstanceKey,
    pub candidate: Option<InstanceKey>,
    pub donor: Option<InstanceKey>,
    pub repoint: Vec<InstanceKey>,
    pub unreachable: Vec<InstanceKey>,
    /// Every replica not chosen, with why (lag, errant GTIDs, downtime, promotion
    /// rule, unreachable, ranked lower).
    pub passed_over: Vec<(InstanceKey, String)>,
    /// Why nothing may be promoted.
    pub refused: Option<String>,
}

/// What a committed operation answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OpReply {
    Done {
        log_index: u64,
        message: String,
        warning: String,
    },
    Discovered {
        instance: Box<ClusterInstance>,
        log_index: u64,
    },
    /// The recovery as Raft recorded it, steps included.
    Recovery(Box<RecoveryRecord>),
    Plan(PlanView),
    /// Backup work started (or, for a dry run, already answered) on a peer.
    Job(Box<JobView>),
}

impl OpReply {
    /// The reply in one line.
    pub fn summary(&self) -> String {
        match self {
            OpReply::Done { message, .. } => message.clone(),
            OpReply::Discovered { instance, .. } => format!("discovered {}", instance.state.key),
            OpReply::Recovery(r) => format!("recovery {}: {}", r.id, r.summary),
            OpReply::Plan(p) => match (&p.candidate, &p.refused) {
                (Some(c), _) => format!("would promote {c}"),
                (None, Some(why)) => format!("would be refused: {why}"),
                (None, None) => "no plan".into(),
            },
            OpReply::Job(j) if !j.result.is_empty() => j.result.clone(),
            OpReply::Job(j) => {
                format!("{} of {} started on peer {} (job {})", j.kind, j.instance, j.runner, j.id)
            }
        }
    }

    fn audit_result(&self) -> AuditResult {
        match self {
            OpReply::Recovery(r) if r.success != Some(true) => AuditResult::Failed,
            _ => AuditResult::Ok,
        }
    }
}

/// What one peer asks another over the peer port.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Run an operation (already authenticated by the sending peer).
    Operation { caller: Caller, operation: Operation },
    /// The leader's latest analysis.
    Problems,
    /// The leader's AWS controller view.
    Aws,
    /// Record an audit entry (from a peer that is not the leader).
    Audit(Box<AuditEntry>),
    /// Start a backup of this peer's server (from the leader, after its checks).
    StartBackup(BackupRequest),
    /// One of this peer's jobs.
    Job(String),
}

/// The answer to a [`PeerRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerAnswer {
    Operation(OpReply),
    Problems(Findings),
    Aws(Option<BTreeMap<String, ClusterAwsStatus>>),
    Audited,
    Job(Box<JobView>),
}

/// At most one denied request per token and operation is recorded in this long: a
/// token without the scope cannot push the real history out of the bounded audit.
const DENIED_AUDIT_EVERY: Duration = Duration::from_secs(10);

/// Runs operations; one per peer (cheap to clone: every part is shared).
#[derive(Clone)]
pub struct Operations {
    node: Arc<RaftNode>,
    discovery: DiscoveryHandle,
    recovery: Arc<RecoveryService>,
    aws: Option<Arc<crate::aws::controller::AwsController<crate::aws::AwsClients>>>,
    backups: Option<Arc<BackupService>>,
    /// Which instance backups copy unless the operator names one.
    backup_source: BackupSource,
    /// The mysqld beside this peer.
    local: Option<InstanceKey>,
    /// When a denied request of (token, operation) was last recorded.
    denied_recorded: Arc<std::sync::Mutex<BTreeMap<(String, &'static str), std::time::Instant>>>,
}

impl Operations {
    pub fn new(
        node: Arc<RaftNode>,
        discovery: DiscoveryHandle,
        recovery: Arc<RecoveryService>,
        aws: Option<Arc<crate::aws::controller::AwsController<crate::aws::AwsClients>>>,
        backups: Option<Arc<BackupService>>,
        config: &crate::config::Config,
    ) -> Self {
        Self {
            node,
            discovery,
            recovery,
            aws,
            backups,
            backup_source: config.backup.source().unwrap_or(BackupSource::Replica),
            local: config.local_instance(),
            denied_recorded: Arc::default(),
        }
    }

    /// The downtime Raft records for `instance` now, if any (this peer's copy).
    pub fn downtime_of(&self, instance: &InstanceKey) -> Option<crate::state::Downtime> {
        self.node.with_state(|s| s.downtimes.get(instance).cloned())
    }

    /// Whether `instance` is the master of `cluster` as this peer sees it.
    pub fn is_master(&self, cluster: &str, instance: &InstanceKey) -> bool {
        self.discovery.store().cluster(cluster).is_some_and(|c| &c.master == instance)
    }

    /// The backup side, when backups are on.
    pub fn backups(&self) -> Result<&Arc<BackupService>, OpError> {
        self.backups.as_ref().ok_or_else(|| {
            OpError::NotFound("backups are off on this peer (set [backup] enabled = true)".into())
        })
    }

    /// A job of this peer, or of the peer that runs it (its id starts with the
    /// runner's node id).
    pub async fn job(&self, id: &str) -> Result<JobView, OpError> {
        let runner: NodeId = id
            .split('-')
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| OpError::InvalidArgument(format!("`{id}` is not a job id")))?;
        if runner == self.node.id {
            let job =
                self.backups()?.jobs.get(id).ok_or_else(|| OpError::NotFound(format!("no job {id}")))?;
            return Ok(job.view());
        }
        match self.ask(runner, &PeerRequest::Job(id.to_string())).await? {
            PeerAnswer::Job(j) => Ok(*j),
            _ => Err(OpError::Failed(format!("peer {runner} gave an answer of the wrong kind"))),
        }
    }

    /// The peer whose host is `host` (its Raft address's host).
    fn peer_on_host(&self, host: &str) -> Option<NodeId> {
        self.node
            .status()
            .members
            .iter()
            .find(|m| crate::raft::service::host_of(&m.raft) == Some(host))
            .map(|m| m.id)
    }

    /// [`Operations::run`] as a boxed future, for code that `run` itself reaches (the
    /// backup side's downtimes): the box keeps the future types from referring to
    /// themselves.
    pub fn run_boxed<'a>(
        &'a self,
        caller: &'a Caller,
        operation: Operation,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<OpReply, OpError>> + Send + 'a>> {
        Box::pin(self.run(caller, operation))
    }

    /// Checks, routes, runs and audits `operation` for `caller`.
    pub async fn run(&self, caller: &Caller, operation: Operation) -> Result<OpReply, OpError> {
        if !caller.identity.scope.allows(operation.scope()) {
            let denied = denial(caller, &operation);
            self.audit(caller, &operation, &Err(denied.clone())).await;
            return Err(denied);
        }
        let target = match operation.runs_on() {
            RunsOn::Leader if self.node.is_leader() => None,
            RunsOn::Leader => Some(self.node.leader().map(|(id, _)| id).ok_or_else(|| {
                OpError::Unavailable(format!(
                    "peer {} knows no Raft leader (it cannot reach a quorum); nothing was done",
                    self.node.id
                ))
            })?),
            RunsOn::Peer(id) if id == self.node.id => None,
            RunsOn::Peer(id) if !self.node.status().members.iter().any(|m| m.id == id) => {
                let e = OpError::NotFound(format!("peer {id} is not a member"));
                self.audit(caller, &operation, &Err(e.clone())).await;
                return Err(e);
            }
            RunsOn::Peer(id) => Some(id),
            RunsOn::Here => None,
            RunsOn::Host(host) if self.local.as_ref().is_some_and(|l| l.host == host) => None,
            RunsOn::Host(host) => match self.peer_on_host(&host) {
                Some(id) if id == self.node.id => None,
                Some(id) => Some(id),
                None => {
                    let e = OpError::NotFound(format!(
                        "no orchestrator peer runs on {host}: {} runs on the instance's host",
                        operation.name()
                    ));
                    self.audit(caller, &operation, &Err(e.clone())).await;
                    return Err(e);
                }
            },
        };
        match target {
            None => self.run_here(caller, operation).await,
            Some(peer) => {
                let request = PeerRequest::Operation { caller: caller.clone(), operation };
                match self.ask(peer, &request).await? {
                    PeerAnswer::Operation(reply) => Ok(reply),
                    _ => Err(OpError::Failed(format!("peer {peer} gave an answer of the wrong kind"))),
                }
            }
        }
    }

    /// Runs on this peer (which must be the right one) and audits, in a task of its
    /// own: a client that goes away (a timeout, Ctrl-C) never stops a recovery between
    /// its steps, nor an operation between its commit and its audit.
    async fn run_here(&self, caller: &Caller, operation: Operation) -> Result<OpReply, OpError> {
        let (this, caller) = (self.clone(), caller.clone());
        let name = operation.name();
        tokio::spawn(async move { this.run_to_the_end(&caller, operation).await })
            .await
            .unwrap_or_else(|e| Err(OpError::Failed(format!("{name} stopped: {e}"))))
    }

    async fn run_to_the_end(&self, caller: &Caller, operation: Operation) -> Result<OpReply, OpError> {
        let leads_without_quorum = matches!(operation.runs_on(), RunsOn::Leader)
            && !self.node.await_quorum_contact(QUORUM_PATIENCE).await;
        let result = if !caller.identity.scope.allows(operation.scope()) {
            Err(denial(caller, &operation))
        } else if leads_without_quorum {
            Err(OpError::Unavailable(format!(
                "peer {} leads but cannot reach a quorum of peers; nothing was done",
                self.node.id
            )))
        } else {
            self.execute(caller, &operation).await
        };
        if !operation.is_dry_run() {
            self.audit(caller, &operation, &result).await;
        }
        match &result {
            Ok(reply) => tracing::info!(
                operation = operation.name(),
                who = %caller.identity.name,
                from = %caller.from,
                result = %reply.summary(),
                "operation"
            ),
            Err(e) => tracing::warn!(
                operation = operation.name(),
                who = %caller.identity.name,
                from = %caller.from,
                error = %e,
                "operation not done"
            ),
        }
        result
    }

    /// The leader's latest analysis (asked of the leader by a follower).
    pub async fn problems(&self) -> Result<Findings, OpError> {
        if self.node.is_leader() {
            return Ok(self.findings());
        }
        match self.ask_leader(&PeerRequest::Problems).await? {
            PeerAnswer::Problems(f) => Ok(f),
            _ => Err(OpError::Failed("the leader gave an answer of the wrong kind".into())),
        }
    }

    /// The analysis with the backup side's problems (archive gaps, lag, failures).
    fn findings(&self) -> Findings {
        let mut findings = self.recovery.findings();
        if let Some(b) = &self.backups {
            for (cluster, problem) in b.problems() {
                let list = findings.problems.entry(cluster).or_default();
                list.push(problem);
                list.sort_by_key(|p| (p.priority, p.code.to_string()));
            }
        }
        findings
    }

    /// The leader's AWS view; `None` when no cluster has `[clusters.aws]`.
    pub async fn aws(&self) -> Result<Option<BTreeMap<String, ClusterAwsStatus>>, OpError> {
        if self.node.is_leader() {
            return Ok(self.aws.as_ref().map(|a| a.status()));
        }
        match self.ask_leader(&PeerRequest::Aws).await? {
            PeerAnswer::Aws(a) => Ok(a),
            _ => Err(OpError::Failed("the leader gave an answer of the wrong kind".into())),
        }
    }

    /// Answers another peer (the server side of the peer port's `Forward`).
    pub async fn answer_peer(&self, request: PeerRequest) -> Result<PeerAnswer, OpError> {
        match request {
            PeerRequest::Operation { caller, operation } => {
                match operation.runs_on() {
                    RunsOn::Leader if !self.node.is_leader() => {
                        return Err(OpError::Unavailable(format!(
                            "peer {} is not the Raft leader any more; nothing was done",
                            self.node.id
                        )))
                    }
                    RunsOn::Peer(id) if id != self.node.id => {
                        return Err(OpError::Unavailable(format!(
                            "peer {} received a request for peer {id}; nothing was done",
                            self.node.id
                        )))
                    }
                    RunsOn::Host(host) if self.local.as_ref().is_none_or(|l| l.host != host) => {
                        return Err(OpError::Unavailable(format!(
                            "peer {} does not run on {host}; nothing was done",
                            self.node.id
                        )))
                    }
                    _ => {}
                }
                self.run_here(&caller, operation).await.map(PeerAnswer::Operation)
            }
            PeerRequest::Problems if self.node.is_leader() => Ok(PeerAnswer::Problems(self.findings())),
            PeerRequest::Aws if self.node.is_leader() => {
                Ok(PeerAnswer::Aws(self.aws.as_ref().map(|a| a.status())))
            }
            PeerRequest::Audit(entry) => {
                self.node.write(Command::RecordAudit { entry: *entry }).await?;
                Ok(PeerAnswer::Audited)
            }
            PeerRequest::StartBackup(request) => {
                let view = self.backups()?.start_backup(request).await.map_err(OpError::from)?;
                Ok(PeerAnswer::Job(Box::new(view)))
            }
            PeerRequest::Job(id) => {
                let job =
                    self.backups()?.jobs.get(&id).ok_or_else(|| OpError::NotFound(format!("no job {id}")))?;
                Ok(PeerAnswer::Job(Box::new(job.view())))
            }
            PeerRequest::Problems | PeerRequest::Aws => {
                Err(OpError::Unavailable(format!("peer {} is not the Raft leader any more", self.node.id)))
            }
        }
    }

    async fn ask_leader(&self, request: &PeerRequest) -> Result<PeerAnswer, OpError> {
        let leader = self.node.leader().map(|(id, _)| id).ok_or_else(|| {
            OpError::Unavailable(format!(
                "peer {} knows no Raft leader (it cannot reach a quorum)",
                self.node.id
            ))
        })?;
        self.ask(leader, request).await
    }

    async fn ask(&self, peer: NodeId, request: &PeerRequest) -> Result<PeerAnswer, OpError> {
        let payload = serde_json::to_vec(request)
            .map_err(|e| OpError::Failed(format!("cannot encode request: {e}")))?;
        let answer = self.node.forward(peer, payload, FORWARD_TIMEOUT).await.map_err(|e| match e {
            crate::raft::ForwardError::Unreachable(m) => OpError::Unavailable(m),
            crate::raft::ForwardError::Lost(m) => OpError::Unknown(m),
        })?;
        let decoded: Result<PeerAnswer, OpError> = serde_json::from_slice(&answer)
            .map_err(|e| OpError::Failed(format!("peer {peer} sent an unreadable answer: {e}")))?;
        decoded
    }

    /// Records the audit entry through the leader (this peer, or by asking it). A
    /// failure to record is logged: it does not change the operation's result.
    async fn audit(&self, caller: &Caller, operation: &Operation, result: &Result<OpReply, OpError>) {
        let (result, detail) = match result {
            Ok(reply) => (reply.audit_result(), reply.summary()),
            Err(e) => (e.audit_result(), e.to_string()),
        };
        if result == AuditResult::Denied {
            let key = (caller.identity.name.clone(), operation.name());
            let now = std::time::Instant::now();
            let recent = self.denied_recorded.lock().map(|mut m| {
                m.retain(|_, at| now.duration_since(*at) < DENIED_AUDIT_EVERY);
                let recent = m.contains_key(&key);
                if !recent {
                    m.insert(key, now);
                }
                recent
            });
            if recent.unwrap_or(false) {
                return;
            }
        }
        let entry = AuditEntry {
            at_unix_ms: 0,
            who: caller.identity.name.clone(),
            scope: caller.identity.scope.to_string(),
            from: caller.from.clone(),
            peer: caller.peer,
            operation: operation.name().to_string(),
            arguments: operation.arguments(),
            result,
            detail: one_line(&detail, 300),
        };
        let written = if self.node.is_leader() && !self.node.await_quorum_contact(QUORUM_PATIENCE).await {
            Err(OpError::Unavailable("the leader cannot reach a quorum".into()))
        } else if self.node.is_leader() {
            self.node.write(Command::RecordAudit { entry }).await.map(|_| ()).map_err(OpError::from)
        } else {
            self.ask_leader(&PeerRequest::Audit(Box::new(entry))).await.map(|_| ())
        };
        if let Err(e) = written {
            tracing::warn!(operation = operation.name(), who = %caller.identity.name, error = %e, "audit entry not recorded");
        }
    }

    /// Commits `command`; a state-machine refusal is [`OpError::Refused`].
    async fn commit(&self, command: Command) -> Result<u64, OpError> {
        let outcome = self.node.write(command).await?;
        match outcome.result {
            CommandResult::Rejected { reason } => Err(OpError::Refused(reason)),
            _ => Ok(outcome.log_index),
        }
    }

    fn done(log_index: u64, message: String, warning: String) -> OpReply {
        OpReply::Done { log_index, message, warning }
    }

    /// A note when `instance` is not known to discovery (a typo is likely).
    fn unknown_instance_warning(&self, instance: &InstanceKey) -> String {
        if self.discovery.store().instance(instance).is_some() {
            String::new()
        } else {
            format!("{instance} is not known to discovery on the leader")
        }
    }

    async fn execute(&self, caller: &Caller, operation: &Operation) -> Result<OpReply, OpError> {
        let who = &caller.identity.name;
        match operation {
            Operation::Discover { instance } => {
                let refused = |e: crate::mysql::ProbeError| {
                    OpError::Refused(format!("cannot discover {instance}: {e}"))
                };
                // It must answer before every peer is told to follow it.
                self.discovery.probe_once(instance).await.map_err(refused)?;
                let log_index = self.commit(Command::AddSeed { instance: instance.clone() }).await?;
                // Un-forgotten here at once (every peer follows the registry anyway).
                self.discovery.store().set_registry(self.node.with_state(|s| s.registry()));
                let seen = self.discovery.discover(instance.clone()).await.map_err(refused)?;
                Ok(OpReply::Discovered { instance: Box::new(seen), log_index })
            }
            Operation::Forget { instance } => {
                let known = self.discovery.store().instance(instance).is_some()
                    || self.node.with_state(|s| s.seeds.contains(instance));
                if !known {
                    return Err(OpError::NotFound(format!("instance {instance} is not known")));
                }
                let i = self.commit(Command::ForgetInstance { instance: instance.clone() }).await?;
                Ok(Self::done(i, format!("forgot {instance}"), String::new()))
            }
            Operation::Switchover { cluster, target, expected_master, dry_run }
            | Operation::ForcedFailover { cluster, target, expected_master, dry_run } => {
                let kind = match operation {
                    Operation::Switchover { .. } => RecoveryKind::Switchover,
                    _ => RecoveryKind::ForcedFailover,
                };
                let request = ManualRecovery {
                    cluster: cluster.clone(),
                    target: target.clone(),
                    kind,
                    expected_master: expected_master.clone(),
                    requested_by: Some(who.clone()),
                };
                let manual_error = |e: ManualError| match e {
                    ManualError::NotFound(m) => OpError::NotFound(m),
                    ManualError::Refused(m) => OpError::Refused(m),
                };
                if *dry_run {
                    let dry = self.recovery.dry_run(&request).await.map_err(manual_error)?;
                    return Ok(OpReply::Plan(plan_view(cluster, kind, dry)));
                }
                let outcome = self.recovery.manual(request).await.map_err(manual_error)?;
                let Some(id) = outcome.id else {
                    return Err(OpError::Refused(outcome.summary));
                };
                let record = self
                    .node
                    .with_state(|s| s.recoveries.iter().find(|r| r.id == id).cloned())
                    .unwrap_or_else(|| RecoveryRecord {
                        id,
                        cluster: cluster.clone(),
                        kind,
                        success: Some(outcome.success),
                        new_master: outcome.new_master.clone(),
                        summary: outcome.summary.clone(),
                        steps: outcome.steps.clone(),
                        requested_by: Some(who.clone()),
                        ..Default::default()
                    });
                Ok(OpReply::Recovery(Box::new(record)))
            }
            Operation::AcknowledgeRecovery { id, comment } => {
                if !self.node.with_state(|s| s.recoveries.iter().any(|r| r.id == *id)) {
                    return Err(OpError::NotFound(format!("no recovery {id}")));
                }
                let command =
                    Command::AcknowledgeRecovery { id: *id, by: who.clone(), comment: comment.clone() };
                let i = self.commit(command).await?;
                Ok(Self::done(i, format!("recovery {id} acknowledged by {who}"), String::new()))
            }
            Operation::BeginDowntime { instance, duration_s, reason } => {
                let warning = self.unknown_instance_warning(instance);
                let command = Command::BeginDowntime {
                    instance: instance.clone(),
                    owner: who.clone(),
                    reason: reason.clone(),
                    duration_s: *duration_s,
                };
                let i = self.commit(command).await?;
                Ok(Self::done(i, format!("{instance} downtimed for {duration_s} s"), warning))
            }
            Operation::EndDowntime { instance } => {
                if !self.node.with_state(|s| s.downtimes.contains_key(instance)) {
                    return Err(OpError::NotFound(format!("{instance} is not downtimed")));
                }
                let i = self.commit(Command::EndDowntime { instance: instance.clone() }).await?;
                Ok(Self::done(i, format!("downtime of {instance} ended"), String::new()))
            }
            Operation::SetPromotionRule { instance, rule } => {
                let warning = self.unknown_instance_warning(instance);
                let i = self
                    .commit(Command::SetPromotionRule { instance: instance.clone(), rule: *rule })
                    .await?;
                Ok(Self::done(i, format!("{instance}: promotion rule {}", rule_name(*rule)), warning))
            }
            Operation::SetGlobalRecoveries { enabled } => {
                let i = self.commit(Command::SetRecoveriesEnabled { enabled: *enabled }).await?;
                let state = if *enabled { "enabled" } else { "disabled" };
                Ok(Self::done(i, format!("automatic recoveries {state}"), String::new()))
            }
            Operation::AddPeer { id, raft, http } => {
                let members = self.node.status().members;
                if members.iter().any(|m| m.id == *id) {
                    return Err(OpError::Refused(format!("peer {id} is already a member")));
                }
                if let Some(m) = members.iter().find(|m| &m.raft == raft || &m.http == http) {
                    return Err(OpError::Refused(format!("peer {} already uses {raft} or {http}", m.id)));
                }
                let i = self.node.add_peer(*id, PeerNode { raft: raft.clone(), http: http.clone() }).await?;
                Ok(Self::done(i, format!("peer {id} ({raft}) added as a voter"), String::new()))
            }
            Operation::JoinPeer { id, raft, http } => {
                let members = self.node.status().members;
                if let Some(m) = members.iter().find(|m| m.id == *id) {
                    if &m.raft == raft && &m.http == http {
                        let role = if m.voter { "a voter" } else { "a learner" };
                        return Ok(Self::done(
                            0,
                            format!("peer {id} ({raft}) is already {role}"),
                            String::new(),
                        ));
                    }
                    return Err(OpError::Refused(format!(
                        "peer id {id} is taken by {}; a node's id comes from its address",
                        m.raft
                    )));
                }
                if let Some(m) = members.iter().find(|m| &m.raft == raft || &m.http == http) {
                    return Err(OpError::Refused(format!(
                        "peer {} already uses {raft} or {http}: remove it first (`orchctl raft remove-peer {}`)",
                        m.id, m.id
                    )));
                }
                let i =
                    self.node.add_learner(*id, PeerNode { raft: raft.clone(), http: http.clone() }).await?;
                Ok(Self::done(
                    i,
                    format!("peer {id} ({raft}) added as a learner; it becomes a voter when the voters can stay odd"),
                    String::new(),
                ))
            }
            Operation::RemovePeer { id } => {
                let members = self.node.status().members;
                let Some(member) = members.iter().find(|m| m.id == *id) else {
                    return Err(OpError::NotFound(format!("peer {id} is not a member")));
                };
                if member.voter && members.iter().filter(|m| m.voter).count() == 1 {
                    return Err(OpError::Refused(format!("peer {id} is the only voter")));
                }
                let i = self.node.remove_peer(*id).await?;
                Ok(Self::done(i, format!("peer {id} removed"), String::new()))
            }
            Operation::CreateBackup { cluster, kind, source } => {
                let backups = self.backups()?;
                backups.cluster(cluster).map_err(OpError::from)?;
                let snapshot = self
                    .discovery
                    .store()
                    .cluster(cluster)
                    .ok_or_else(|| OpError::NotFound(format!("no cluster {cluster}")))?;
                let wanted = match source {
                    Some(k) => BackupSource::Instance(k.clone()),
                    None => self.backup_source.clone(),
                };
                let members = self.node.status().members;
                let peer_hosts = members
                    .iter()
                    .filter_map(|m| crate::raft::service::host_of(&m.raft).map(str::to_string))
                    .collect();
                let (downtimes, rules) =
                    self.node.with_state(|s| (s.downtimes.clone(), s.promotion_rules.clone()));
                // Where the incremental chain is (unknown when the catalog cannot be
                // read now: any fit replica then).
                let chain_source: Option<InstanceKey> = match backups.catalog(cluster).await {
                    Ok(c) => crate::backup::catalog::newest_incremental_base(&c.manifests)
                        .and_then(|m| m.source.parse().ok()),
                    Err(_) => None,
                };
                let facts = crate::backup::source::SourceFacts {
                    chain_source: chain_source.as_ref(),
                    downtimes: &downtimes,
                    rules: &rules,
                    peer_hosts: &peer_hosts,
                    now_ms: crate::unix_millis_now(),
                    backup_owner: crate::backup::service::BACKUP_IDENTITY,
                };
                let chosen = crate::backup::source::choose_source(&snapshot, &wanted, &facts)
                    .map_err(OpError::Refused)?;
                let request = BackupRequest {
                    cluster: cluster.clone(),
                    kind: *kind,
                    source: chosen.clone(),
                    requested_by: who.clone(),
                };
                let view = match self.peer_on_host(&chosen.host) {
                    Some(id) if id != self.node.id => {
                        match self.ask(id, &PeerRequest::StartBackup(request)).await? {
                            PeerAnswer::Job(j) => *j,
                            _ => {
                                return Err(OpError::Failed(format!(
                                    "peer {id} gave an answer of the wrong kind"
                                )))
                            }
                        }
                    }
                    _ => backups.start_backup(request).await.map_err(OpError::from)?,
                };
                Ok(OpReply::Job(Box::new(view)))
            }
            Operation::DeleteBackup { cluster, id } => {
                let message = self.backups()?.delete(cluster, id).await.map_err(OpError::from)?;
                Ok(Self::done(0, message, String::new()))
            }
            Operation::VerifyBackup { cluster, id } => {
                let view = self.backups()?.start_verify(cluster, id).await.map_err(OpError::from)?;
                Ok(OpReply::Job(Box::new(view)))
            }
            Operation::RestoreBackup { cluster, target, point, backup, dry_run } => {
                let request = RestoreRequest {
                    cluster: cluster.clone(),
                    target: target.clone(),
                    point: point.clone(),
                    backup: backup.clone(),
                    dry_run: *dry_run,
                    requested_by: who.clone(),
                };
                let view = self.backups()?.start_restore(request).await.map_err(OpError::from)?;
                Ok(OpReply::Job(Box::new(view)))
            }
            Operation::TransferLeadership { to } => {
                let members = self.node.status().members;
                match members.iter().find(|m| m.id == *to) {
                    None => return Err(OpError::NotFound(format!("peer {to} is not a member"))),
                    Some(m) if !m.voter => return Err(OpError::Refused(format!("peer {to} is not a voter"))),
                    Some(_) => {}
                }
                let changed = self.node.take_leadership().await?;
                let message = if changed {
                    format!("peer {to} is the leader")
                } else {
                    format!("peer {to} was already the leader")
                };
                Ok(Self::done(0, message, String::new()))
            }
        }
    }
}

impl crate::raft::service::ForwardHandler for Operations {
    fn handle(
        &self,
        payload: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<u8>> + Send + '_>> {
        Box::pin(async move {
            let answer: Result<PeerAnswer, OpError> = match serde_json::from_slice::<PeerRequest>(&payload) {
                Ok(request) => self.answer_peer(request).await,
                Err(e) => Err(OpError::InvalidArgument(format!("unreadable peer request: {e}"))),
            };
            serde_json::to_vec(&answer).unwrap_or_default()
        })
    }

    fn join(
        &self,
        caller: Caller,
        id: NodeId,
        raft: String,
        http: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, OpError>> + Send + '_>> {
        Box::pin(async move {
            self.run(&caller, Operation::JoinPeer { id, raft, http }).await.map(|reply| reply.summary())
        })
    }
}

fn denial(caller: &Caller, operation: &Operation) -> OpError {
    OpError::Denied(format!(
        "token `{}` has scope {}; {} needs {}",
        caller.identity.name,
        caller.identity.scope,
        operation.name(),
        operation.scope()
    ))
}

/// The planner's answer for a dry run.
fn plan_view(cluster: &str, kind: RecoveryKind, dry: DryRun) -> PlanView {
    match dry.plan {
        Ok(plan) => {
            let mut passed_over = plan.passed_over;
            passed_over.extend(plan.unreachable.iter().map(|k| (k.clone(), "unreachable".to_string())));
            passed_over.sort();
            PlanView {
                cluster: cluster.to_string(),
                kind,
                master: dry.master,
                candidate: Some(plan.candidate),
                donor: plan.donor,
                repoint: plan.repoint,
                unreachable: plan.unreachable,
                passed_over,
                refused: None,
            }
        }
        Err(refused) => PlanView {
            cluster: cluster.to_string(),
            kind,
            master: dry.master,
            candidate: None,
            donor: None,
            repoint: Vec::new(),
            unreachable: Vec::new(),
            passed_over: dry.assessed,
            refused: Some(refused),
        },
    }
}

/// `text` on one line, at most `max` characters.
pub fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Identity;

    fn caller(scope: Scope) -> Caller {
        Caller { identity: Identity { name: "t".into(), scope }, from: "127.0.0.1:1".into(), peer: 1 }
    }

    #[test]
    fn scopes_follow_the_design() {
        let k: InstanceKey = "a:1".parse().unwrap();
        let operate = [
            Operation::Switchover {
                cluster: "c".into(),
                target: None,
                expected_master: None,
                dry_run: false,
            },
            Operation::AcknowledgeRecovery { id: 1, comment: String::new() },
            Operation::BeginDowntime { instance: k.clone(), duration_s: 60, reason: "r".into() },
            Operation::EndDowntime { instance: k.clone() },
            Operation::SetPromotionRule { instance: k.clone(), rule: PromotionRule::Prefer },
        ];
        let admin = [
            Operation::ForcedFailover {
                cluster: "c".into(),
                target: None,
                expected_master: None,
                dry_run: false,
            },
            Operation::SetGlobalRecoveries { enabled: false },
            Operation::AddPeer { id: 4, raft: "h:10008".into(), http: "h:3000".into() },
            Operation::RemovePeer { id: 4 },
            Operation::TransferLeadership { to: 2 },
            Operation::Discover { instance: k.clone() },
            Operation::Forget { instance: k },
        ];
        for op in &operate {
            assert_eq!(op.scope(), Scope::Operate, "{}", op.name());
            assert!(caller(Scope::Operate).identity.scope.allows(op.scope()));
            assert!(!caller(Scope::Read).identity.scope.allows(op.scope()));
        }
        for op in &admin {
            assert_eq!(op.scope(), Scope::Admin, "{}", op.name());
            assert!(!caller(Scope::Operate).identity.scope.allows(op.scope()));
        }
        let d = denial(&caller(Scope::Read), &operate[0]);
        assert_eq!(d.to_string(), "permission denied: token `t` has scope read; switchover needs operate");
    }

    #[test]
    fn operations_travel_between_peers_as_json() {
        let op = Operation::Switchover {
            cluster: "main".into(),
            target: Some("b:3306".parse().unwrap()),
            expected_master: Some("a:3306".parse().unwrap()),
            dry_run: true,
        };
        let request = PeerRequest::Operation { caller: caller(Scope::Admin), operation: op.clone() };
        let back: PeerRequest = serde_json::from_slice(&serde_json::to_vec(&request).unwrap()).unwrap();
        match back {
            PeerRequest::Operation { operation, caller: c } => {
                assert_eq!(operation, op);
                assert_eq!(c, caller(Scope::Admin));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(op.arguments()["expected_master"], "a:3306");
        assert!(op.is_dry_run());
    }

    #[test]
    fn one_line_flattens_and_bounds() {
        assert_eq!(one_line("a\nb", 10), "a b");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }
}
