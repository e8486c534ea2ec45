//! The peers' Raft group: openraft type config, starting a peer's Raft node on its data
//! directory and port 10008, bootstrapping the group from the static peer list, and the
//! operations the API offers on it (write a command, membership, status).
//!
//! - [`store`]: RocksDB log, vote and snapshots; the in-memory state machine.
//! - [`network`]: tonic client per peer (mutual TLS when configured).
//! - [`service`]: tonic server on port 10008 (mutual TLS when configured): Raft RPCs,
//!   pings, views, and operator requests other peers hand to this one.
//! - [`quorum`]: whether this peer can reach a majority (pings on port 10008).

pub mod network;
pub mod quorum;
pub mod service;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, Raft, ServerState, SnapshotPolicy};
use orch_proto::raft::raft_client::RaftClient;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use crate::config::{Config, RaftTuning};
use crate::discovery::DiscoveryHandle;
use crate::metrics::Metrics;
use crate::state::{ClusterState, Command, CommandResult, Proposal};
use network::PeerConnector;
use quorum::QuorumMonitor;
use service::{ForwardHandler, LeaderContact};
use store::{AppliedState, LogStore, StateMachineStore};

pub type NodeId = u64;

/// Bound on opening a control channel to another peer.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

/// How long a new peer may take to catch up before it is made a voter.
pub const CATCH_UP_LIMIT: Duration = Duration::from_secs(10);

/// A member of the group as Raft stores it: where to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    /// `host:10008`
    pub raft: String,
    /// `host:3000`
    pub http: String,
}

impl std::fmt::Display for PeerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "raft={} http={}", self.raft, self.http)
    }
}

openraft::declare_raft_types!(
    /// The orchestrator's Raft types: log entries are [`Proposal`]s.
    pub TypeConfig:
        D = Proposal,
        R = CommandResult,
        NodeId = NodeId,
        Node = PeerNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Why Raft could not start.
#[derive(Debug, thiserror::Error)]
pub enum RaftStartError {
    #[error("cannot open Raft storage in {path}: {message}")]
    Storage { path: String, message: String },
    #[error("invalid Raft settings: {0}")]
    Config(String),
    #[error("cannot listen for Raft on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("Raft failed to start: {0}")]
    Raft(String),
}

/// Why a write through Raft did not happen, in words for the operator.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("this peer is not the Raft leader{}", leader_hint(.leader))]
    NotLeader { leader: Option<(NodeId, PeerNode)> },
    #[error("write not committed within {0:?}: the leader cannot reach a majority of peers")]
    NoQuorum(Duration),
    #[error("Raft refused the write: {0}")]
    Raft(String),
}

/// Why a request to another peer did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Not delivered: nothing was done there.
    #[error("{0}")]
    Unreachable(String),
    /// Sent, but the answer was lost: it may have been done.
    #[error("{0}")]
    Lost(String),
}

fn leader_hint(leader: &Option<(NodeId, PeerNode)>) -> String {
    match leader {
        Some((id, node)) => format!(" (leader is peer {id} at {})", node.http),
        None => " and no leader is known: this peer cannot reach a quorum".to_string(),
    }
}

/// The result of a committed write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteOutcome {
    pub log_index: u64,
    pub result: CommandResult,
}

/// One member in [`RaftStatus`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: NodeId,
    pub raft: String,
    pub http: String,
    pub voter: bool,
    /// Its EC2 instance in the Auto Scaling group (`[membership] auto_scaling_group`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// The instance's lifecycle state and health there (`InService, Healthy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_state: Option<String>,
    /// Milliseconds since this peer last heard from it (0 for itself; `None`: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_contact_ms: Option<u64>,
}

/// What `/api/raft-state` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RaftStatus {
    pub node_id: NodeId,
    pub initialized: bool,
    pub role: String,
    pub term: u64,
    pub leader_id: Option<NodeId>,
    pub leader_http: Option<String>,
    pub last_log_index: Option<u64>,
    pub committed_index: u64,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub members: Vec<MemberStatus>,
    /// Milliseconds since this peer last accepted entries from a leader (followers).
    pub last_leader_contact_ms: Option<u64>,
    /// Milliseconds since a quorum last acknowledged this leader (leader only).
    pub millis_since_quorum_ack: Option<u64>,
    /// Other voters that answered a ping recently.
    pub reachable_peers: usize,
    /// This peer is in working contact with a quorum (see `/api/raft-health`).
    pub quorum_contact: bool,
}

/// A running Raft peer.
pub struct RaftNode {
    pub id: NodeId,
    pub raft: Raft<TypeConfig>,
    applied: Arc<RwLock<AppliedState>>,
    committed_index: Arc<AtomicU64>,
    contact: Arc<LeaderContact>,
    quorum: Arc<QuorumMonitor>,
    tuning: RaftTuning,
    /// How connections to other peers are made (source address, mutual TLS).
    connector: PeerConnector,
    /// One control channel per peer, shared by pings, views, forwarded requests and
    /// leadership transfers: kept warm by the pings, so a failover never waits for a
    /// TCP and TLS handshake.
    peer_clients: std::sync::Mutex<BTreeMap<NodeId, (String, RaftClient<Channel>)>>,
    /// Who answers operator requests other peers forward here.
    forward_handler: Arc<OnceLock<Arc<dyn ForwardHandler>>>,
}

fn role_name(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

/// The openraft settings from ours.
pub fn openraft_config(cluster: &str, t: &RaftTuning) -> Result<openraft::Config, RaftStartError> {
    openraft::Config {
        cluster_name: cluster.to_string(),
        heartbeat_interval: t.heartbeat_interval_ms,
        election_timeout_min: t.election_timeout_min_ms,
        election_timeout_max: t.election_timeout_max_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_every_logs),
        max_in_snapshot_log_to_keep: t.logs_kept_after_snapshot,
        purge_batch_size: 64,
        install_snapshot_timeout: 2_000,
        ..Default::default()
    }
    .validate()
    .map_err(|e| RaftStartError::Config(e.to_string()))
}

impl RaftNode {
    /// Opens storage in `<data_dir>/raft`, starts Raft and its gRPC server on
    /// `raft_listen` (mutual TLS with `tls`), and bootstraps the group from the static
    /// peer list if this peer has never been part of one.
    pub async fn start(
        config: &Config,
        tls: Option<crate::auth::tls::RaftTls>,
        discovery: DiscoveryHandle,
        donor: Option<Arc<crate::donor::Donor>>,
        metrics: Arc<Metrics>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Arc<RaftNode>, RaftStartError> {
        let dir = config.data_dir.join("raft");
        let storage_error =
            |message: String| RaftStartError::Storage { path: dir.display().to_string(), message };
        std::fs::create_dir_all(&dir).map_err(|e| storage_error(e.to_string()))?;
        let db = store::open_db(&dir).map_err(|e| storage_error(e.to_string()))?;
        let log_store = LogStore::new(db.clone());
        let committed_index = log_store.committed_index();
        let sm = StateMachineStore::open(db).map_err(|e| storage_error(e.to_string()))?;
        let applied = sm.applied();
        let raft_config = Arc::new(openraft_config("orchestrator", &config.raft)?);
        let connector =
            PeerConnector { source: config.source_ip(), tls: tls.as_ref().map(|t| t.client.clone()) };
        let factory = network::PeerNetworkFactory { connector: connector.clone() };
        let raft = Raft::new(config.node_id, raft_config, factory, log_store, sm)
            .await
            .map_err(|e| RaftStartError::Raft(e.to_string()))?;

        let contact = Arc::new(LeaderContact::default());
        let forward_handler: Arc<OnceLock<Arc<dyn ForwardHandler>>> = Arc::new(OnceLock::new());
        let listener = tokio::net::TcpListener::bind(config.raft_listen)
            .await
            .map_err(|source| RaftStartError::Listen { addr: config.raft_listen, source })?;
        let service = service::RaftService::new(
            config.node_id,
            raft.clone(),
            contact.clone(),
            discovery,
            forward_handler.clone(),
            donor,
        );
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = &tls {
            server = server
                .tls_config(tls.server.clone())
                .map_err(|e| RaftStartError::Config(format!("mutual TLS on the Raft port: {e}")))?;
        }
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let incoming = tokio_stream_from(listener);
            let rpc = orch_proto::raft::raft_server::RaftServer::new(service)
                .max_decoding_message_size(network::MAX_PEER_MESSAGE)
                .max_encoding_message_size(network::MAX_PEER_MESSAGE);
            let result = server
                .add_service(rpc)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop.changed().await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "Raft gRPC server stopped");
            }
        });

        let node = Arc::new(RaftNode {
            id: config.node_id,
            raft,
            applied,
            committed_index,
            contact,
            quorum: Arc::new(QuorumMonitor::default()),
            tuning: config.raft.clone(),
            connector,
            peer_clients: std::sync::Mutex::new(BTreeMap::new()),
            forward_handler,
        });
        tokio::spawn(watch_raft(node.clone(), metrics, shutdown.clone()));
        tokio::spawn(ping_peers(node.clone(), shutdown.clone()));
        tokio::spawn(follow_membership(node.clone(), shutdown));
        let members: BTreeMap<NodeId, PeerNode> = config
            .peers
            .iter()
            .map(|p| (p.id, PeerNode { raft: p.raft.clone(), http: p.http.clone() }))
            .collect();
        if config.join {
            tokio::spawn(join_group(node.clone(), members));
        } else {
            tokio::spawn(bootstrap(node.clone(), members));
        }
        Ok(node)
    }

    fn metrics(&self) -> openraft::RaftMetrics<NodeId, PeerNode> {
        self.raft.metrics().borrow().clone()
    }

    pub fn is_leader(&self) -> bool {
        let m = self.metrics();
        m.current_leader == Some(self.id) && m.state == ServerState::Leader
    }

    /// The Raft term this peer is in.
    pub fn term(&self) -> u64 {
        self.metrics().current_term
    }

    /// Wakes on every change of this peer's Raft metrics (role, term, applied index).
    pub fn watch(&self) -> tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, PeerNode>> {
        self.raft.metrics()
    }

    /// The leader this peer knows of, with its address.
    pub fn leader(&self) -> Option<(NodeId, PeerNode)> {
        let m = self.metrics();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node))
    }

    /// A copy of the applied state and the log index it reflects.
    pub fn state(&self) -> (Option<u64>, ClusterState) {
        let a = self.applied.read().unwrap_or_else(|e| e.into_inner());
        (a.last_applied.map(|l| l.index), a.state.clone())
    }

    /// Reads the applied state in place (no copy), for what runs often.
    pub fn with_state<R>(&self, read: impl FnOnce(&ClusterState) -> R) -> R {
        let a = self.applied.read().unwrap_or_else(|e| e.into_inner());
        read(&a.state)
    }

    /// How this peer connects to the others (for its own clients of port 10008).
    pub fn connector(&self) -> &PeerConnector {
        &self.connector
    }

    /// The shared control channel to member `id` (at its current address).
    pub fn peer_client(&self, id: NodeId) -> Option<RaftClient<Channel>> {
        let address = self.metrics().membership_config.membership().get_node(&id)?.raft.clone();
        let mut clients = self.peer_clients.lock().ok()?;
        if let Some((a, c)) = clients.get(&id) {
            if *a == address {
                return Some(c.clone());
            }
        }
        let client = self.connector.channel(&address, PEER_CONNECT_TIMEOUT)?;
        clients.insert(id, (address, client.clone()));
        Some(client)
    }

    /// Sets who answers requests other peers forward here (once, at start).
    pub fn set_forward_handler(&self, handler: Arc<dyn ForwardHandler>) {
        let _ = self.forward_handler.set(handler);
    }

    /// Hands `payload` to peer `to`'s forward handler and returns its answer.
    pub async fn forward(
        &self,
        to: NodeId,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, ForwardError> {
        let member = self.status().members.into_iter().find(|m| m.id == to);
        let Some(member) = member else {
            return Err(ForwardError::Unreachable(format!("peer {to} is not a member; nothing was done")));
        };
        let Some(mut client) = self.peer_client(to) else {
            return Err(ForwardError::Unreachable(format!(
                "peer {to} has an invalid address {}",
                member.raft
            )));
        };
        let mut request = tonic::Request::new(orch_proto::raft::RaftPayload { payload });
        request.set_timeout(timeout);
        match client.forward(request).await {
            Ok(answer) => Ok(answer.into_inner().payload),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                Err(ForwardError::Unreachable(format!(
                    "peer {to} at {} is unreachable from peer {} ({}); nothing was done",
                    member.raft,
                    self.id,
                    status.message()
                )))
            }
            Err(status) => Err(ForwardError::Lost(format!(
                "no answer from peer {to} at {} ({}: {})",
                member.raft,
                status.code(),
                status.message()
            ))),
        }
    }

    /// Makes this peer the leader: asks the current leader to pause its heartbeats
    /// (over the peer port) so its followers' leases lapse, and campaigns. Returns
    /// whether leadership moved (false: this peer already led).
    pub async fn take_leadership(&self) -> Result<bool, WriteError> {
        if self.is_leader() {
            return Ok(false);
        }
        let lease = self.leader_lease();
        for _attempt in 0..3 {
            if let Some((leader, _)) = self.leader().filter(|(id, _)| *id != self.id) {
                if let Some(mut client) = self.peer_client(leader) {
                    let pause =
                        orch_proto::raft::PauseHeartbeatsRequest { millis: (lease * 4).as_millis() as u64 };
                    let mut request = tonic::Request::new(pause);
                    request.set_timeout(Duration::from_secs(1));
                    let _ = client.pause_heartbeats(request).await;
                }
            }
            let deadline = Instant::now() + lease * 4;
            while Instant::now() < deadline {
                if self.is_leader() {
                    return Ok(true);
                }
                self.campaign().await?;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Err(WriteError::Raft(format!("peer {} campaigned but did not become leader (3 attempts)", self.id)))
    }

    /// Role, term, leader, indexes and members.
    pub fn status(&self) -> RaftStatus {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| MemberStatus {
                id: *id,
                raft: node.raft.clone(),
                http: node.http.clone(),
                voter: voters.contains(id),
                instance_id: None,
                instance_state: None,
                last_contact_ms: if *id == self.id { Some(0) } else { self.quorum.last_contact_ms(*id) },
            })
            .collect();
        let leader_http = m.current_leader.and_then(|id| membership.get_node(&id)).map(|n| n.http.clone());
        RaftStatus {
            node_id: self.id,
            initialized: m.last_log_index.is_some() || m.membership_config.log_id().is_some(),
            role: role_name(m.state).to_string(),
            term: m.current_term,
            leader_id: m.current_leader,
            leader_http,
            last_log_index: m.last_log_index,
            committed_index: self.committed_index.load(Ordering::Relaxed),
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            members,
            last_leader_contact_ms: self.contact.last().map(|t| t.elapsed().as_millis() as u64),
            millis_since_quorum_ack: m.millis_since_quorum_ack,
            reachable_peers: self.quorum.reachable(
                self.id,
                &voters.iter().copied().collect::<Vec<_>>(),
                self.contact_window(),
            ),
            quorum_contact: self.has_quorum_contact(),
        }
    }

    /// How recent a contact must be to count.
    fn contact_window(&self) -> Duration {
        Duration::from_millis(self.tuning.election_timeout_max_ms * 3)
    }

    /// Whether this peer is (or, within `patience`, becomes) in working contact with a
    /// quorum: a leader elected a moment ago has not heard its followers' answers yet.
    pub async fn await_quorum_contact(&self, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        loop {
            if self.has_quorum_contact() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether this peer is in working contact with a quorum: a leader acknowledged by
    /// a quorum recently, or a follower that heard from its leader recently.
    ///
    /// A follower also needs to reach a majority of voters itself: a leader cut off
    /// with it on the minority side still sends it heartbeats.
    pub fn has_quorum_contact(&self) -> bool {
        let window = self.contact_window();
        let m = self.metrics();
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        match m.state {
            ServerState::Leader => {
                m.millis_since_quorum_ack.is_some_and(|ms| Duration::from_millis(ms) <= window)
            }
            ServerState::Follower | ServerState::Learner => {
                m.current_leader.is_some()
                    && self.contact.last().is_some_and(|t| t.elapsed() <= window)
                    && self.quorum.has_quorum(self.id, &voters, window)
            }
            _ => false,
        }
    }

    /// Proposes `command` (stamped with the leader's clock) and waits until it is
    /// committed and applied, or the write timeout passes.
    pub async fn write(&self, command: Command) -> Result<WriteOutcome, WriteError> {
        if !self.is_leader() {
            return Err(WriteError::NotLeader { leader: self.leader() });
        }
        let proposal = Proposal { at_unix_ms: crate::unix_millis_now(), command };
        let timeout = Duration::from_millis(self.tuning.write_timeout_ms);
        match tokio::time::timeout(timeout, self.raft.client_write(proposal)).await {
            Err(_) => Err(WriteError::NoQuorum(timeout)),
            Ok(Ok(r)) => Ok(WriteOutcome { log_index: r.log_id.index, result: r.data }),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(WriteError::NotLeader { leader: f.leader_id.zip(f.leader_node) })
            }
            Ok(Err(e)) => Err(WriteError::Raft(e.to_string())),
        }
    }

    /// Adds a peer: first as a learner, then, once it has caught up, as a voter. A
    /// learner that does not catch up within [`CATCH_UP_LIMIT`] (unreachable, or
    /// refusing our certificate) is removed again and the call fails.
    pub async fn add_peer(&self, id: NodeId, node: PeerNode) -> Result<u64, WriteError> {
        self.add_learner(id, node).await?;
        self.promote(BTreeSet::from([id])).await
    }

    /// Makes learners voters.
    pub async fn promote(&self, ids: BTreeSet<NodeId>) -> Result<u64, WriteError> {
        let timeout = Duration::from_millis(self.tuning.write_timeout_ms * 2);
        let shown = ids.iter().map(|id| id.to_string()).collect::<Vec<_>>().join(", ");
        let voters = tokio::time::timeout(
            timeout,
            self.raft.change_membership(ChangeMembers::AddVoterIds(ids), false),
        )
        .await
        .map_err(|_| WriteError::NoQuorum(timeout))?
        .map_err(|e| WriteError::Raft(e.to_string()))?;
        tracing::info!(peers = %shown, index = voters.log_id.index, "learners made voters");
        Ok(voters.log_id.index)
    }

    /// Adds a peer as a learner and waits until it has caught up with the log. One
    /// that does not within [`CATCH_UP_LIMIT`] is removed again and the call fails.
    pub async fn add_learner(&self, id: NodeId, node: PeerNode) -> Result<u64, WriteError> {
        if !self.is_leader() {
            return Err(WriteError::NotLeader { leader: self.leader() });
        }
        let timeout = Duration::from_millis(self.tuning.write_timeout_ms);
        let address = node.raft.clone();
        let learner = tokio::time::timeout(timeout, self.raft.add_learner(id, node, false))
            .await
            .map_err(|_| WriteError::NoQuorum(timeout))?
            .map_err(|e| WriteError::Raft(e.to_string()))?;
        tracing::info!(
            peer = id,
            index = learner.log_id.index,
            "peer added as learner, waiting for it to catch up"
        );
        let target = learner.log_id.index;
        let deadline = Instant::now() + CATCH_UP_LIMIT;
        loop {
            if self.matched_index(id).is_some_and(|m| m >= target) {
                return Ok(target);
            }
            if Instant::now() >= deadline || !self.is_leader() {
                let _ = tokio::time::timeout(
                    timeout,
                    self.raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false),
                )
                .await;
                return Err(WriteError::Raft(format!(
                    "peer {id} at {address} did not catch up within {} s: it is unreachable, or it refuses \
                     this peer's certificate (another CA); it was not added",
                    CATCH_UP_LIMIT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// On the leader: the last log index `id` is known to hold.
    fn matched_index(&self, id: NodeId) -> Option<u64> {
        self.metrics().replication.and_then(|r| r.get(&id).cloned().flatten()).map(|l| l.index)
    }

    /// Removes a peer from the group entirely.
    pub async fn remove_peer(&self, id: NodeId) -> Result<u64, WriteError> {
        if !self.is_leader() {
            return Err(WriteError::NotLeader { leader: self.leader() });
        }
        let timeout = Duration::from_millis(self.tuning.write_timeout_ms * 2);
        let r = tokio::time::timeout(
            timeout,
            self.raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false),
        )
        .await
        .map_err(|_| WriteError::NoQuorum(timeout))?
        .map_err(|e| WriteError::Raft(e.to_string()))?;
        let _ = tokio::time::timeout(
            timeout,
            self.raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false),
        )
        .await;
        tracing::info!(peer = id, index = r.log_id.index, "peer removed from the group");
        Ok(r.log_id.index)
    }

    /// On the leader: stops heartbeats for `pause`, so the followers' leader leases
    /// lapse and a chosen peer can win an election (openraft 0.9 has no leadership
    /// transfer of its own). Heartbeats resume after `pause` in any case.
    pub fn pause_heartbeats(&self, pause: Duration) -> Result<(), WriteError> {
        if !self.is_leader() {
            return Err(WriteError::NotLeader { leader: self.leader() });
        }
        pause_heartbeats(&self.raft, pause);
        Ok(())
    }

    /// How long a leader lease lasts (a follower refuses votes while its leader's lasts).
    pub fn leader_lease(&self) -> Duration {
        Duration::from_millis(self.tuning.election_timeout_max_ms)
    }

    /// Starts an election on this peer (used to transfer leadership to it).
    pub async fn campaign(&self) -> Result<(), WriteError> {
        self.raft.trigger().elect().await.map_err(|e| WriteError::Raft(e.to_string()))
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "Raft shutdown");
        }
    }
}

/// Stops `raft`'s heartbeats for `pause` (at most 5 s); they resume in any case.
pub(crate) fn pause_heartbeats(raft: &Raft<TypeConfig>, pause: Duration) {
    let pause = pause.min(Duration::from_secs(5));
    raft.runtime_config().heartbeat(false);
    let raft = raft.clone();
    tokio::spawn(async move {
        tokio::time::sleep(pause).await;
        raft.runtime_config().heartbeat(true);
    });
}

fn tokio_stream_from(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = Result<tokio::net::TcpStream, std::io::Error>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((accepted, listener))
    })
}

/// First start of a pristine peer: if no other peer reports an initialized group,
/// initialize with the static peer list (doing so on several peers with the same list
/// is safe); otherwise wait for the leader to replicate to us.
async fn bootstrap(node: Arc<RaftNode>, members: BTreeMap<NodeId, PeerNode>) {
    match node.raft.is_initialized().await {
        Ok(true) => {
            tracing::info!(node = node.id, "Raft state found on disk, rejoining the group");
            return;
        }
        Ok(false) => {}
        Err(e) => {
            tracing::error!(error = %e, "cannot read Raft state");
            return;
        }
    }
    if let Some(id) = initialized_peer(&node, &members).await {
        tracing::info!(peer = id, "a Raft group already exists, waiting to be replicated to");
        return;
    }
    tracing::info!(node = node.id, members = members.len(), "initializing the Raft group from the peer list");
    match node.raft.initialize(members).await {
        Ok(()) => {}
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
            tracing::info!("Raft group already initialized");
        }
        Err(e) => tracing::error!(error = %e, "Raft initialization failed"),
    }
}

/// A joining peer (`join` in its config) that holds no Raft state asks the members it
/// was given, in turn, to add it, until one answers that it did (the leader adds it as
/// a learner and waits for it to catch up) or state arrives by replication.
async fn join_group(node: Arc<RaftNode>, members: BTreeMap<NodeId, PeerNode>) {
    let Some(me) = members.get(&node.id).cloned() else {
        tracing::error!(node = node.id, "this peer is not in its own peer list; cannot join");
        return;
    };
    let mut last_warning: Option<Instant> = None;
    loop {
        match node.raft.is_initialized().await {
            Ok(true) => {
                tracing::info!(node = node.id, "Raft state present: this peer is a member");
                return;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot read Raft state");
                return;
            }
        }
        let mut errors = Vec::new();
        for (id, peer) in members.iter().filter(|(id, _)| **id != node.id) {
            let Some(mut client) = node.connector.channel(&peer.raft, Duration::from_millis(500)) else {
                continue;
            };
            let mut request = tonic::Request::new(orch_proto::raft::JoinRequest {
                id: node.id,
                raft: me.raft.clone(),
                http: me.http.clone(),
            });
            request.set_timeout(CATCH_UP_LIMIT + Duration::from_secs(5));
            match client.join(request).await {
                Ok(reply) => {
                    tracing::info!(via = id, answer = %reply.into_inner().message, "joined the Raft group");
                    return;
                }
                Err(status) => errors.push(format!("peer {id} at {}: {}", peer.raft, status.message())),
            }
        }
        if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            tracing::warn!(tried = %errors.join("; "), "not yet added to the Raft group; retrying");
            last_warning = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// On the leader: makes caught-up learners voters whenever the voters can stay an odd
/// count ([`crate::membership`]).
async fn follow_membership(node: Arc<RaftNode>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(Duration::from_millis(500));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = ticks.tick() => {}
        }
        if !node.is_leader() {
            continue;
        }
        let m = node.metrics();
        let membership = m.membership_config.membership();
        if membership.get_joint_config().len() > 1 {
            continue;
        }
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let last = m.last_log_index;
        let views: Vec<crate::membership::MemberView> = membership
            .nodes()
            .map(|(id, _)| crate::membership::MemberView {
                id: *id,
                voter: voters.contains(id),
                caught_up: crate::membership::is_caught_up(node.matched_index(*id), last),
            })
            .collect();
        let promote = crate::membership::voters_to_promote(&views);
        if !promote.is_empty() {
            if let Err(e) = node.promote(promote).await {
                tracing::warn!(error = %e, "cannot make learners voters");
            }
        }
    }
}

/// Pings every other member a few times a second (see [`quorum`]).
async fn ping_peers(node: Arc<RaftNode>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let period = Duration::from_millis((node.tuning.heartbeat_interval_ms * 4).max(100));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = ticks.tick() => {}
        }
        let members: Vec<NodeId> = node
            .metrics()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .filter(|id| *id != node.id)
            .collect();
        if let Ok(mut clients) = node.peer_clients.lock() {
            clients.retain(|id, _| members.contains(id));
        }
        let clients: Vec<(NodeId, RaftClient<Channel>)> =
            members.iter().filter_map(|id| node.peer_client(*id).map(|c| (*id, c))).collect();
        node.quorum.ping_round(node.id, clients, period).await;
    }
}

/// The first other peer that reports an initialized Raft group, if any answers so.
async fn initialized_peer(node: &RaftNode, members: &BTreeMap<NodeId, PeerNode>) -> Option<NodeId> {
    for (id, peer) in members.iter().filter(|(id, _)| **id != node.id) {
        let Some(mut client) = node.connector.channel(&peer.raft, Duration::from_millis(500)) else {
            continue;
        };
        let mut request = tonic::Request::new(orch_proto::raft::PingRequest { from: node.id });
        request.set_timeout(Duration::from_millis(500));
        if client.ping(request).await.is_ok_and(|r| r.into_inner().initialized) {
            return Some(*id);
        }
    }
    None
}

/// Logs elections and membership changes, and keeps the Raft gauges current.
async fn watch_raft(
    node: Arc<RaftNode>,
    metrics: Arc<Metrics>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut changes = node.raft.metrics();
    let mut ticks = tokio::time::interval(Duration::from_millis(250));
    let mut last: Option<(ServerState, Option<NodeId>, u64, String)> = None;
    let started = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            changed = changes.changed() => if changed.is_err() { break },
            _ = ticks.tick() => {}
        }
        let m = changes.borrow().clone();
        let voters: Vec<String> =
            m.membership_config.membership().voter_ids().map(|id| id.to_string()).collect();
        let membership = voters.join(", ");
        let now = (m.state, m.current_leader, m.current_term, membership.clone());
        if last.as_ref() != Some(&now) {
            match &last {
                Some((_, _, _, old_members)) if *old_members != membership => {
                    tracing::info!(voters = %membership, "Raft membership changed");
                }
                _ => {}
            }
            tracing::info!(
                role = role_name(m.state),
                term = m.current_term,
                leader = %m.current_leader.map(|id| id.to_string()).unwrap_or_else(|| "none".into()),
                since_start_ms = started.elapsed().as_millis() as u64,
                "Raft role"
            );
            last = Some(now);
        }
        let status = node.status();
        metrics.set_raft(
            status.term,
            m.state == ServerState::Leader,
            role_code(m.state),
            status.committed_index,
            status.applied_index.unwrap_or(0),
            if m.state == ServerState::Leader {
                Some(0.0)
            } else {
                status.last_leader_contact_ms.map(|ms| ms as f64 / 1000.0)
            },
        );
    }
}

fn role_code(s: ServerState) -> i64 {
    match s {
        ServerState::Learner => 0,
        ServerState::Follower => 1,
        ServerState::Candidate => 2,
        ServerState::Leader => 3,
        ServerState::Shutdown => -1,
    }
}
