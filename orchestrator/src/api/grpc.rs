//! The gRPC `Orchestrator` service on port 3000: one method per operation. Requests
//! arrive authenticated (the [`Caller`] the auth layer attached); mutations are parsed
//! into [`Operation`]s by the pure functions below and run by [`crate::ops`]; reads
//! come from [`super::views`].

use std::pin::Pin;

use futures::Stream;
use orch_proto::v1 as pb;
use orch_proto::v1::orchestrator_server::Orchestrator;
use tonic::{Request, Response, Status};

use super::pb::Reply;
use super::{views, AppState};
use crate::auth::Caller;
use crate::ops::{parse, OpError, Operation};
use crate::unix_millis_now;

/// Set to `unknown` on an UNAVAILABLE answer whose operation may still take effect (a
/// write the leader could not commit in time); every other UNAVAILABLE means nothing
/// was done, and the request may be sent to another peer.
pub const OUTCOME_HEADER: &str = "orch-outcome";

/// Largest request message accepted (operator requests are small).
pub const MAX_REQUEST_MESSAGE: usize = 64 * 1024;

pub struct OrchestratorService {
    state: AppState,
}

impl OrchestratorService {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    async fn run(&self, caller: Caller, operation: Result<Operation, OpError>) -> Result<Reply, Status> {
        let reply = self.state.ops.run(&caller, operation.map_err(status)?).await.map_err(status)?;
        Ok(self.state.raft.with_state(|s| super::pb::reply(&reply, s, unix_millis_now())))
    }
}

/// The status an [`OpError`] is sent as.
pub fn status(e: OpError) -> Status {
    match e {
        OpError::InvalidArgument(m) => Status::invalid_argument(m),
        OpError::NotFound(m) => Status::not_found(m),
        OpError::Refused(m) => Status::failed_precondition(m),
        OpError::Denied(m) => Status::permission_denied(m),
        OpError::Unauthenticated(m) => Status::unauthenticated(m),
        OpError::Unavailable(m) => Status::unavailable(m),
        OpError::Unknown(m) => {
            // UNAVAILABLE (no quorum), marked: unlike the others it may have been done.
            let mut s = Status::unavailable(format!("outcome unknown: {m}"));
            s.metadata_mut().insert(OUTCOME_HEADER, tonic::metadata::MetadataValue::from_static("unknown"));
            s
        }
        OpError::Failed(m) => Status::internal(m),
    }
}

fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no bearer token (authorization: Bearer <token>)"))
}

fn operation_reply(r: Reply) -> Result<Response<pb::OperationReply>, Status> {
    match r {
        Reply::Operation(o) => Ok(Response::new(o)),
        _ => Err(Status::internal("unexpected answer")),
    }
}

fn job_reply(r: Reply) -> Result<Response<pb::BackupJob>, Status> {
    match r {
        Reply::Job(j) => Ok(Response::new(j)),
        _ => Err(Status::internal("unexpected answer")),
    }
}

fn recovery_reply(r: Reply) -> Result<Response<pb::RecoveryReply>, Status> {
    match r {
        Reply::Recovery(o) => Ok(Response::new(o)),
        _ => Err(Status::internal("unexpected answer")),
    }
}

// The request parsers: strict, pure, one line per refusal.

pub fn create_backup_op(r: &pb::CreateBackupRequest) -> Result<Operation, OpError> {
    Ok(Operation::CreateBackup {
        cluster: parse::cluster("cluster", &r.cluster)?,
        kind: parse::backup_kind("kind", &r.kind)?,
        source: parse::optional_instance("source", &r.source)?,
    })
}

pub fn delete_backup_op(r: &pb::DeleteBackupRequest) -> Result<Operation, OpError> {
    Ok(Operation::DeleteBackup {
        cluster: parse::cluster("cluster", &r.cluster)?,
        id: parse::backup_id("id", &r.id)?,
    })
}

pub fn verify_backup_op(r: &pb::VerifyBackupRequest) -> Result<Operation, OpError> {
    Ok(Operation::VerifyBackup {
        cluster: parse::cluster("cluster", &r.cluster)?,
        id: parse::backup_id("id", &r.id)?,
    })
}

pub fn restore_backup_op(r: &pb::RestoreBackupRequest) -> Result<Operation, OpError> {
    let backup =
        if r.backup_id.is_empty() { None } else { Some(parse::backup_id("backup_id", &r.backup_id)?) };
    let to = if r.to.is_empty() { "latest" } else { r.to.as_str() };
    Ok(Operation::RestoreBackup {
        cluster: parse::cluster("cluster", &r.cluster)?,
        target: parse::instance("target", &r.target)?,
        point: crate::backup::restore::PointSpec::parse(to, r.exclusive)
            .map_err(|e| OpError::InvalidArgument(format!("to: {e}")))?,
        backup,
        dry_run: r.dry_run,
    })
}

pub fn discover_op(r: &pb::DiscoverRequest) -> Result<Operation, OpError> {
    Ok(Operation::Discover { instance: parse::instance("instance", &r.instance)? })
}

pub fn forget_op(r: &pb::ForgetRequest) -> Result<Operation, OpError> {
    Ok(Operation::Forget { instance: parse::instance("instance", &r.instance)? })
}

pub fn switchover_op(r: &pb::SwitchoverRequest) -> Result<Operation, OpError> {
    Ok(Operation::Switchover {
        cluster: parse::cluster("cluster", &r.cluster)?,
        target: parse::optional_instance("target", &r.target)?,
        expected_master: parse::optional_instance("expected_master", &r.expected_master)?,
        dry_run: r.dry_run,
    })
}

pub fn failover_op(r: &pb::ForceFailoverRequest) -> Result<Operation, OpError> {
    Ok(Operation::ForcedFailover {
        cluster: parse::cluster("cluster", &r.cluster)?,
        target: parse::optional_instance("target", &r.target)?,
        expected_master: parse::optional_instance("expected_master", &r.expected_master)?,
        dry_run: r.dry_run,
    })
}

pub fn acknowledge_op(r: &pb::AcknowledgeRecoveryRequest) -> Result<Operation, OpError> {
    Ok(Operation::AcknowledgeRecovery { id: r.id, comment: parse::text("comment", &r.comment, false)? })
}

pub fn begin_downtime_op(r: &pb::BeginDowntimeRequest) -> Result<Operation, OpError> {
    Ok(Operation::BeginDowntime {
        instance: parse::instance("instance", &r.instance)?,
        duration_s: parse::duration("duration", &r.duration)?.as_secs(),
        reason: parse::text("reason", &r.reason, true)?,
    })
}

pub fn end_downtime_op(r: &pb::EndDowntimeRequest) -> Result<Operation, OpError> {
    Ok(Operation::EndDowntime { instance: parse::instance("instance", &r.instance)? })
}

pub fn promotion_rule_op(r: &pb::SetPromotionRuleRequest) -> Result<Operation, OpError> {
    Ok(Operation::SetPromotionRule {
        instance: parse::instance("instance", &r.instance)?,
        rule: parse::promotion_rule("rule", &r.rule)?,
    })
}

pub fn add_peer_op(r: &pb::AddRaftPeerRequest) -> Result<Operation, OpError> {
    Ok(Operation::AddPeer {
        id: parse::peer_id("id", r.id)?,
        raft: parse::peer_address("raft", &r.raft)?,
        http: parse::peer_address("http", &r.http)?,
    })
}

pub fn remove_peer_op(r: &pb::RemoveRaftPeerRequest) -> Result<Operation, OpError> {
    Ok(Operation::RemovePeer { id: parse::peer_id("id", r.id)? })
}

pub fn transfer_op(r: &pb::TransferLeadershipRequest) -> Result<Operation, OpError> {
    Ok(Operation::TransferLeadership { to: parse::peer_id("to", r.to)? })
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;
type JobStream = Pin<Box<dyn Stream<Item = Result<pb::BackupJob, Status>> + Send>>;

#[tonic::async_trait]
impl Orchestrator for OrchestratorService {
    async fn status(&self, r: Request<pb::StatusRequest>) -> Result<Response<pb::StatusReply>, Status> {
        let caller = caller(&r)?;
        Ok(Response::new(views::status(&self.state, &caller)))
    }

    async fn list_clusters(
        &self,
        r: Request<pb::ListClustersRequest>,
    ) -> Result<Response<pb::ListClustersReply>, Status> {
        caller(&r)?;
        Ok(Response::new(views::clusters(&self.state)))
    }

    async fn get_cluster(
        &self,
        r: Request<pb::GetClusterRequest>,
    ) -> Result<Response<pb::ClusterTopology>, Status> {
        caller(&r)?;
        views::cluster(&self.state, &r.get_ref().alias).map(Response::new).map_err(status)
    }

    async fn get_instance(
        &self,
        r: Request<pb::GetInstanceRequest>,
    ) -> Result<Response<pb::Instance>, Status> {
        caller(&r)?;
        views::instance(&self.state, &r.get_ref().instance).map(Response::new).map_err(status)
    }

    async fn discover(&self, r: Request<pb::DiscoverRequest>) -> Result<Response<pb::DiscoverReply>, Status> {
        let caller = caller(&r)?;
        match self.run(caller, discover_op(r.get_ref())).await? {
            Reply::Discover(d) => Ok(Response::new(d)),
            _ => Err(Status::internal("unexpected answer")),
        }
    }

    async fn forget(&self, r: Request<pb::ForgetRequest>) -> Result<Response<pb::OperationReply>, Status> {
        let caller = caller(&r)?;
        operation_reply(self.run(caller, forget_op(r.get_ref())).await?)
    }

    async fn list_problems(
        &self,
        r: Request<pb::ListProblemsRequest>,
    ) -> Result<Response<pb::ListProblemsReply>, Status> {
        caller(&r)?;
        views::problems(&self.state, &r.get_ref().cluster).await.map(Response::new).map_err(status)
    }

    async fn switchover(
        &self,
        r: Request<pb::SwitchoverRequest>,
    ) -> Result<Response<pb::RecoveryReply>, Status> {
        let caller = caller(&r)?;
        recovery_reply(self.run(caller, switchover_op(r.get_ref())).await?)
    }

    async fn force_failover(
        &self,
        r: Request<pb::ForceFailoverRequest>,
    ) -> Result<Response<pb::RecoveryReply>, Status> {
        let caller = caller(&r)?;
        recovery_reply(self.run(caller, failover_op(r.get_ref())).await?)
    }

    async fn list_recoveries(
        &self,
        r: Request<pb::ListRecoveriesRequest>,
    ) -> Result<Response<pb::ListRecoveriesReply>, Status> {
        caller(&r)?;
        let q = r.get_ref();
        Ok(Response::new(views::recoveries(&self.state, &q.cluster, q.limit)))
    }

    async fn get_recovery(
        &self,
        r: Request<pb::GetRecoveryRequest>,
    ) -> Result<Response<pb::Recovery>, Status> {
        caller(&r)?;
        views::recovery(&self.state, r.get_ref().id).map(Response::new).map_err(status)
    }

    async fn acknowledge_recovery(
        &self,
        r: Request<pb::AcknowledgeRecoveryRequest>,
    ) -> Result<Response<pb::OperationReply>, Status> {
        let caller = caller(&r)?;
        operation_reply(self.run(caller, acknowledge_op(r.get_ref())).await?)
    }

    async fn begin_downtime(
        &self,
        r: Request<pb::BeginDowntimeRequest>,
    ) -> Result<Response<pb::OperationReply>, Status> {
        let caller = caller(&r)?;
        operation_reply(self.run(caller, begin_downtime_op(r.get_ref())).await?)
    }

    async fn end_downtime(
        &self,
        r: Request<pb::EndDowntimeRequest>,
    ) -> Result<Response<pb::OperationReply>, Status> {
        let caller = caller(&r)?;
        operation_reply(self.run(caller, end_downtime_op(r.get_ref())).await?)
    }

    async fn list_downtimes(
        &self,
        r: Request<pb::ListDowntimesRequest>,
    ) -> Result<Response<pb::ListDowntimesReply>, Status> {
        caller(&r)?;
        Ok(Response::new(views::downtimes(&self.state)))
    }

    async fn set_promotion_rule(
        &self,
        r: Request<pb::SetPromotionRuleRequest>,
    ) -> Result<Response<pb::OperationReply>, Status> {
        let caller = caller(&r)?;
        operation_reply(self.run(caller, promotion_rule_op(r.get_ref())).await?)
    }

    async fn list_promotion_rules(
        &self,
        r: Request<pb::ListPromotionRulesRequest>,
    ) -> Result<Response<pb::ListPromotionRulesReply>, Status> {
        caller(&r)?;
        Ok(Response::new(views::promotion_rules(&self.state)))
    }

    async fn set_global_recoveries(
        &self,
        r: Request<pb::SetGlobalRecoveriesRequest>,
    ) -> Result<Response<pb::GlobalRecoveriesReply>, Status> {
        let caller = caller(&r)?;
        let enabled = r.get_ref().enabled;
        match self.run(caller, Ok(Operation::SetGlobalRecoveries { enabled })).await? {
            Reply::Operation(o) => {
                Ok(Response::new(pb::GlobalRecoveriesReply { enabled, log_index: o.log_index }))
            }
            _ => Err(Status::internal("unexpected answer")),
        }
    }

    async fn get_global_recoveries(
        &self,
        r: Request<pb::GetGlobalRecoveriesRequest>,
    ) -> Result<Response<pb::GlobalRecoveriesReply>, Status> {
        caller(&r)?;
        Ok(Response::new(views::global_recoveries(&self.state)))
    }

    async fn get_raft_state(
        &self,
        r: Request<pb::GetRaftStateRequest>,
    ) -> Result<Response<pb::RaftState>, Status> {
        caller(&r)?;
        Ok(Response::new(views::raft_state(&self.state)))
    }

    async fn add_raft_peer(
        &self,
        r: Request<pb::AddRaftPeerRequest>,
    ) -> Result<Response<pb::OperationReply>, Status> {
        let caller = caller(&r)?;
        operation_reply(self.run(caller, add_peer_op(r.get_ref())).await?)
    }

    async fn remove_raft_peer(
        &self,
        r: Request<pb::RemoveRaftPeerRequest>,
    ) -> Result<Response<pb::OperationReply>, Status> {
        let caller = caller(&r)?;
        operation_reply(self.run(caller, remove_peer_op(r.get_ref())).await?)
    }

    async fn transfer_leadership(
        &self,
        r: Request<pb::TransferLeadershipRequest>,
    ) -> Result<Response<pb::OperationReply>, Status> {
        let caller = caller(&r)?;
        operation_reply(self.run(caller, transfer_op(r.get_ref())).await?)
    }

    async fn get_aws(&self, r: Request<pb::GetAwsRequest>) -> Result<Response<pb::AwsView>, Status> {
        caller(&r)?;
        views::aws(&self.state).await.map(Response::new).map_err(status)
    }

    async fn list_audit(
        &self,
        r: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditReply>, Status> {
        caller(&r)?;
        Ok(Response::new(views::audit(&self.state, r.get_ref().limit)))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, r: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        caller(&r)?;
        let cluster = r.into_inner().cluster;
        if !cluster.is_empty() {
            parse::cluster("cluster", &cluster).map_err(status)?;
        }
        let permit = self.state.watchers.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!("this peer already serves {} watchers", super::MAX_WATCHERS))
        })?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let state = self.state.clone();
        tokio::spawn(async move {
            super::watch::run(state, cluster, tx).await;
            drop(permit);
        });
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn create_backup(
        &self,
        r: Request<pb::CreateBackupRequest>,
    ) -> Result<Response<pb::BackupJob>, Status> {
        let caller = caller(&r)?;
        job_reply(self.run(caller, create_backup_op(r.get_ref())).await?)
    }

    async fn list_backups(
        &self,
        r: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<pb::BackupListing>, Status> {
        caller(&r)?;
        views::backups(&self.state, &r.get_ref().cluster).await.map(Response::new).map_err(status)
    }

    async fn verify_backup(
        &self,
        r: Request<pb::VerifyBackupRequest>,
    ) -> Result<Response<pb::BackupJob>, Status> {
        let caller = caller(&r)?;
        job_reply(self.run(caller, verify_backup_op(r.get_ref())).await?)
    }

    async fn delete_backup(
        &self,
        r: Request<pb::DeleteBackupRequest>,
    ) -> Result<Response<pb::OperationReply>, Status> {
        let caller = caller(&r)?;
        operation_reply(self.run(caller, delete_backup_op(r.get_ref())).await?)
    }

    async fn restore_backup(
        &self,
        r: Request<pb::RestoreBackupRequest>,
    ) -> Result<Response<pb::BackupJob>, Status> {
        let caller = caller(&r)?;
        job_reply(self.run(caller, restore_backup_op(r.get_ref())).await?)
    }

    type WatchJobStream = JobStream;

    async fn watch_job(
        &self,
        r: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        caller(&r)?;
        let id = r.into_inner().id;
        let first = self.state.ops.job(&id).await.map_err(status)?;
        let permit = self.state.watchers.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!("this peer already serves {} watchers", super::MAX_WATCHERS))
        })?;
        let ops = self.state.ops.clone();
        // Every 250 ms while the job runs (forwarded when another peer runs it); the
        // last state once it ended.
        let stream = futures::stream::unfold(Some((first, permit, true)), move |state| {
            let ops = ops.clone();
            async move {
                let (view, permit, fresh) = state?;
                if fresh {
                    let ended = view.ended_unix_ms > 0;
                    let next = (!ended).then(|| (view.clone(), permit));
                    return Some((Ok(super::pb::job(&view)), next.map(|(v, p)| (v, p, false))));
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                match ops.job(&view.id).await {
                    Ok(now) => {
                        let ended = now.ended_unix_ms > 0;
                        let item = Ok(super::pb::job(&now));
                        Some((item, (!ended).then_some((now, permit, false))))
                    }
                    Err(e) => Some((Err(status(e)), None)),
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message;

    #[test]
    fn errors_map_to_their_codes() {
        let cases = [
            (OpError::InvalidArgument("x".into()), tonic::Code::InvalidArgument),
            (OpError::NotFound("x".into()), tonic::Code::NotFound),
            (OpError::Refused("x".into()), tonic::Code::FailedPrecondition),
            (OpError::Denied("x".into()), tonic::Code::PermissionDenied),
            (OpError::Unauthenticated("x".into()), tonic::Code::Unauthenticated),
            (OpError::Unavailable("x".into()), tonic::Code::Unavailable),
        ];
        for (e, code) in cases {
            assert_eq!(status(e).code(), code);
        }
        let unknown = status(OpError::Unknown("x".into()));
        assert_eq!(unknown.code(), tonic::Code::Unavailable);
        assert_eq!(unknown.metadata().get(OUTCOME_HEADER).unwrap(), "unknown");
    }

    #[test]
    fn requests_are_parsed_strictly() {
        let ok = pb::SwitchoverRequest {
            cluster: "main".into(),
            target: "10.0.0.2:3306".into(),
            ..Default::default()
        };
        assert!(matches!(switchover_op(&ok), Ok(Operation::Switchover { target: Some(_), .. })));
        let bad =
            pb::SwitchoverRequest { cluster: "main".into(), target: "10.0.0.2".into(), ..Default::default() };
        assert!(switchover_op(&bad).unwrap_err().to_string().starts_with("target: "));
        let downtime =
            pb::BeginDowntimeRequest { instance: "a:1".into(), duration: "2h".into(), reason: "".into() };
        assert!(begin_downtime_op(&downtime).unwrap_err().to_string().starts_with("reason: "));
        assert!(
            add_peer_op(&pb::AddRaftPeerRequest { id: 0, raft: "a:1".into(), http: "a:2".into() }).is_err()
        );
    }

    proptest! {
        /// Random bytes as each request message: decoding refuses or yields a message,
        /// and parsing it refuses or yields a well-formed operation; nothing panics.
        #[test]
        fn random_request_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(r) = pb::SwitchoverRequest::decode(bytes.as_slice()) { let _ = switchover_op(&r); }
            if let Ok(r) = pb::ForceFailoverRequest::decode(bytes.as_slice()) { let _ = failover_op(&r); }
            if let Ok(r) = pb::BeginDowntimeRequest::decode(bytes.as_slice()) { let _ = begin_downtime_op(&r); }
            if let Ok(r) = pb::EndDowntimeRequest::decode(bytes.as_slice()) { let _ = end_downtime_op(&r); }
            if let Ok(r) = pb::SetPromotionRuleRequest::decode(bytes.as_slice()) { let _ = promotion_rule_op(&r); }
            if let Ok(r) = pb::AcknowledgeRecoveryRequest::decode(bytes.as_slice()) { let _ = acknowledge_op(&r); }
            if let Ok(r) = pb::DiscoverRequest::decode(bytes.as_slice()) { let _ = discover_op(&r); }
            if let Ok(r) = pb::ForgetRequest::decode(bytes.as_slice()) { let _ = forget_op(&r); }
            if let Ok(r) = pb::AddRaftPeerRequest::decode(bytes.as_slice()) { let _ = add_peer_op(&r); }
            if let Ok(r) = pb::RemoveRaftPeerRequest::decode(bytes.as_slice()) { let _ = remove_peer_op(&r); }
            if let Ok(r) = pb::TransferLeadershipRequest::decode(bytes.as_slice()) { let _ = transfer_op(&r); }
        }

        /// Random strings in every field of the requests with the most fields.
        #[test]
        fn random_fields_never_panic(a in "\\PC{0,60}", b in "\\PC{0,60}", c in "\\PC{0,60}", n in any::<u64>()) {
            let _ = switchover_op(&pb::SwitchoverRequest { cluster: a.clone(), target: b.clone(), expected_master: c.clone(), dry_run: n % 2 == 0 });
            let _ = begin_downtime_op(&pb::BeginDowntimeRequest { instance: a.clone(), duration: b.clone(), reason: c.clone() });
            let _ = add_peer_op(&pb::AddRaftPeerRequest { id: n, raft: a.clone(), http: b.clone() });
            let _ = promotion_rule_op(&pb::SetPromotionRuleRequest { instance: a, rule: c });
        }
    }
}
