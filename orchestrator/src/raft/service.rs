//! The server side of peer-to-peer traffic on port 10008: Raft RPCs handed to openraft,
//! `PeerView`, which lets the leader ask this peer what it sees, `ProcessExited`, through
//! which the peer on a master's host tells that its mysqld died, `Forward`, through
//! which other peers hand this one an operator's request, and `PauseHeartbeats` (a
//! leadership transfer). With mutual TLS on, only peers holding a certificate of the
//! cluster's CA get this far.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use openraft::Raft;
use orch_proto::raft::raft_server::Raft as RaftRpc;
use orch_proto::raft::{
    BackupChunk, DonateBackupRequest, JoinReply, JoinRequest, PauseHeartbeatsReply, PauseHeartbeatsRequest,
    PeerViewReply, PeerViewRequest, PingReply, PingRequest, ProcessExitedReply, ProcessExitedRequest,
    RaftPayload,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::{NodeId, TypeConfig};
use crate::discovery::DiscoveryHandle;
use crate::topology::InstanceKey;

/// When this peer last heard from a leader (an AppendEntries it accepted).
#[derive(Default)]
pub struct LeaderContact {
    last: std::sync::Mutex<Option<Instant>>,
}

impl LeaderContact {
    pub fn touch(&self) {
        if let Ok(mut l) = self.last.lock() {
            *l = Some(Instant::now());
        }
    }

    pub fn last(&self) -> Option<Instant> {
        self.last.lock().ok().and_then(|l| *l)
    }
}

/// Answers what other peers forward (JSON in, JSON out) and what joining nodes ask;
/// see [`crate::ops`].
pub trait ForwardHandler: Send + Sync {
    fn handle(&self, payload: Vec<u8>) -> Pin<Box<dyn Future<Output = Vec<u8>> + Send + '_>>;
    /// Runs the `JoinPeer` operation for `caller` (routed to the leader, audited).
    fn join(
        &self,
        caller: crate::auth::Caller,
        id: NodeId,
        raft: String,
        http: String,
    ) -> Pin<Box<dyn Future<Output = Result<String, crate::ops::OpError>> + Send + '_>>;
}

/// Whether a client certificate (DER) is valid for `host`.
fn certificate_names(cert: &[u8], host: &str) -> bool {
    let der = rustls::pki_types::CertificateDer::from(cert);
    let Ok(cert) = webpki::EndEntityCert::try_from(&der) else {
        return false;
    };
    rustls::pki_types::ServerName::try_from(host)
        .is_ok_and(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
}

/// The host part of `host:port` (brackets of an IPv6 address removed).
pub(crate) fn host_of(address: &str) -> Option<&str> {
    address.rsplit_once(':').map(|(h, _)| h.trim_matches(['[', ']']))
}

pub struct RaftService {
    node_id: NodeId,
    raft: Raft<TypeConfig>,
    contact: Arc<LeaderContact>,
    discovery: DiscoveryHandle,
    forward: Arc<OnceLock<Arc<dyn ForwardHandler>>>,
    donor: Option<Arc<crate::donor::Donor>>,
}

impl RaftService {
    pub fn new(
        node_id: NodeId,
        raft: Raft<TypeConfig>,
        contact: Arc<LeaderContact>,
        discovery: DiscoveryHandle,
        forward: Arc<OnceLock<Arc<dyn ForwardHandler>>>,
        donor: Option<Arc<crate::donor::Donor>>,
    ) -> Self {
        Self { node_id, raft, contact, discovery, forward, donor }
    }

    fn is_leader(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.current_leader == Some(self.node_id) && m.state == openraft::ServerState::Leader
    }

    /// Refuses a request that may act in an operator's name (`Forward`,
    /// `PauseHeartbeats`) unless it comes from a current member: with mutual TLS, its
    /// certificate must name the address of one. A peer removed from the group, though
    /// its certificate is still signed by the CA, is refused. Without TLS
    /// (`tls.raft_insecure`) there is nothing to check.
    fn check_member<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(certs) = request.peer_certs() else { return Ok(()) };
        let Some(cert) = certs.first() else {
            return Err(Status::permission_denied("no client certificate"));
        };
        let hosts: Vec<String> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .filter_map(|(_, n)| host_of(&n.raft).map(str::to_string))
            .collect();
        if hosts.iter().any(|h| certificate_names(cert, h)) {
            Ok(())
        } else {
            Err(Status::permission_denied("the client certificate names no member of the group"))
        }
    }
}

fn decode<T: DeserializeOwned>(request: Request<RaftPayload>) -> Result<T, Status> {
    serde_json::from_slice(&request.into_inner().payload)
        .map_err(|e| Status::invalid_argument(format!("undecodable Raft message: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    serde_json::to_vec(value)
        .map(|payload| Response::new(RaftPayload { payload }))
        .map_err(|e| Status::internal(format!("cannot encode Raft answer: {e}")))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let result = self.raft.append_entries(decode(request)?).await;
        if matches!(&result, Ok(r) if r.is_success()) {
            self.contact.touch();
        }
        encode(&result)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        encode(&self.raft.vote(decode(request)?).await)
    }

    async fn install_snapshot(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let result = self.raft.install_snapshot(decode(request)?).await;
        if result.is_ok() {
            self.contact.touch();
        }
        encode(&result)
    }

    async fn ping(&self, _: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        let m = self.raft.metrics().borrow().clone();
        Ok(Response::new(PingReply {
            node_id: self.node_id,
            term: m.current_term,
            initialized: m.last_log_index.is_some() || m.membership_config.log_id().is_some(),
        }))
    }

    async fn forward(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_member(&request)?;
        let Some(handler) = self.forward.get().cloned() else {
            return Err(Status::unavailable(format!("peer {} is still starting", self.node_id)));
        };
        let payload = handler.handle(request.into_inner().payload).await;
        Ok(Response::new(RaftPayload { payload }))
    }

    async fn pause_heartbeats(
        &self,
        request: Request<PauseHeartbeatsRequest>,
    ) -> Result<Response<PauseHeartbeatsReply>, Status> {
        self.check_member(&request)?;
        if !self.is_leader() {
            return Err(Status::failed_precondition(format!("peer {} is not the leader", self.node_id)));
        }
        let pause = Duration::from_millis(request.into_inner().millis.min(5_000));
        super::pause_heartbeats(&self.raft, pause);
        Ok(Response::new(PauseHeartbeatsReply { paused_ms: pause.as_millis() as u64 }))
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        let from = request.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        let certs = request.peer_certs();
        let JoinRequest { id, raft, http } = request.into_inner();
        let host = host_of(&raft)
            .filter(|_| host_of(&http).is_some())
            .ok_or_else(|| Status::invalid_argument(format!("`{raft}` / `{http}` is not host:port")))?;
        if id == 0 {
            return Err(Status::invalid_argument("peer id 0 is not allowed"));
        }
        if let Some(certs) = certs {
            let cert = certs.first().ok_or_else(|| Status::permission_denied("no client certificate"))?;
            if !certificate_names(cert, host) {
                return Err(Status::permission_denied(format!(
                    "the client certificate does not name {host}: a node can only add itself"
                )));
            }
        }
        let Some(handler) = self.forward.get().cloned() else {
            return Err(Status::unavailable(format!("peer {} is still starting", self.node_id)));
        };
        let caller = crate::auth::Caller {
            identity: crate::auth::Identity {
                name: format!("node-certificate@{host}"),
                scope: crate::auth::Scope::Admin,
            },
            from,
            peer: self.node_id,
        };
        let message = handler.join(caller, id, raft, http).await.map_err(crate::api::grpc::status)?;
        let members: Vec<serde_json::Value> = {
            let m = self.raft.metrics().borrow().clone();
            let membership = m.membership_config.membership();
            let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
            membership
                .nodes()
                .map(|(id, n)| {
                    serde_json::json!({"id": id, "raft": n.raft, "http": n.http, "voter": voters.contains(id)})
                })
                .collect()
        };
        Ok(Response::new(JoinReply {
            message,
            members_json: serde_json::to_vec(&members).unwrap_or_default(),
        }))
    }

    type DonateBackupStream =
        Pin<Box<dyn futures::Stream<Item = Result<BackupChunk, Status>> + Send + 'static>>;

    async fn donate_backup(
        &self,
        request: Request<DonateBackupRequest>,
    ) -> Result<Response<Self::DonateBackupStream>, Status> {
        if let Some(certs) = request.peer_certs() {
            if certs.is_empty() {
                return Err(Status::permission_denied("no client certificate"));
            }
        }
        let Some(donor) = self.donor.clone() else {
            return Err(Status::failed_precondition(format!(
                "peer {} serves no backups (no local MariaDB server with a backup account)",
                self.node_id
            )));
        };
        let from = request.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        let stream = donor.stream(&from).map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(stream))
    }

    async fn process_exited(
        &self,
        request: Request<ProcessExitedRequest>,
    ) -> Result<Response<ProcessExitedReply>, Status> {
        self.check_member(&request)?;
        let certs = request.peer_certs();
        let ProcessExitedRequest { instance, pid, seen } = request.into_inner();
        let key: InstanceKey = instance
            .parse()
            .map_err(|e: crate::topology::InstanceKeyError| Status::invalid_argument(e.to_string()))?;
        if let Some(cert) = certs.as_ref().and_then(|c| c.first()) {
            if !certificate_names(cert, &key.host) {
                return Err(Status::permission_denied(format!(
                    "the client certificate does not name {}: a peer reports only the mysqld on its own host",
                    key.host
                )));
            }
        }
        let recorded = self.discovery.store().record_process_exit(&key, pid, &seen, crate::unix_millis_now());
        if !recorded {
            return Ok(Response::new(ProcessExitedReply { recorded }));
        }
        tracing::warn!(instance = %key, pid, seen = %seen, "the peer on its host saw the mysqld process exit");
        Ok(Response::new(ProcessExitedReply { recorded }))
    }

    async fn peer_view(&self, request: Request<PeerViewRequest>) -> Result<Response<PeerViewReply>, Status> {
        let PeerViewRequest { instance: wanted, probe_now } = request.into_inner();
        let topology = self.discovery.store();
        let states: Vec<_> = if wanted.is_empty() {
            topology.known_keys().iter().filter_map(|k| topology.instance(k)).map(|i| i.state).collect()
        } else {
            let key: InstanceKey = wanted
                .parse()
                .map_err(|e: crate::topology::InstanceKeyError| Status::invalid_argument(e.to_string()))?;
            if probe_now {
                vec![self.discovery.observe(&key).await.state]
            } else {
                topology.instance(&key).map(|i| i.state).into_iter().collect()
            }
        };
        let instances_json =
            serde_json::to_vec(&states).map_err(|e| Status::internal(format!("cannot encode view: {e}")))?;
        Ok(Response::new(PeerViewReply { node_id: self.node_id, instances_json }))
    }
}
