//! The client side of peer-to-peer Raft traffic: one lazily connected tonic channel per
//! target peer, each call bounded by the deadline openraft gives it. Every connection
//! to another peer is made by a [`PeerConnector`]: from this host's own address, and
//! with mutual TLS when `[tls.raft]` is configured.

use std::net::IpAddr;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use orch_proto::raft::raft_client::RaftClient;
use orch_proto::raft::RaftPayload;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::{NodeId, PeerNode, TypeConfig};

/// How long opening a TCP connection to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
/// Pause between attempts to reach an unreachable peer.
const UNREACHABLE_RETRY: Duration = Duration::from_millis(100);

/// Largest message between peers (snapshots of the replicated state travel in one).
pub const MAX_PEER_MESSAGE: usize = 64 * 1024 * 1024;

/// How this peer connects to the others on port 10008.
#[derive(Clone, Default)]
pub struct PeerConnector {
    /// This host's own address: traffic between simulated hosts on one machine is told
    /// apart (and can be cut).
    pub source: Option<IpAddr>,
    /// This peer's certificate and the cluster's CA (mutual TLS), when configured.
    pub tls: Option<ClientTlsConfig>,
}

impl PeerConnector {
    /// A lazily connected gRPC client of the peer at `address` (`host:10008`).
    pub fn channel(&self, address: &str, connect_timeout: Duration) -> Option<RaftClient<Channel>> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
            .ok()?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .local_address(self.source);
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).ok()?;
        }
        Some(
            RaftClient::new(endpoint.connect_lazy())
                .max_decoding_message_size(MAX_PEER_MESSAGE)
                .max_encoding_message_size(MAX_PEER_MESSAGE),
        )
    }
}

/// Makes a [`PeerClient`] per target; openraft asks for one per replication stream.
#[derive(Clone, Default)]
pub struct PeerNetworkFactory {
    pub connector: PeerConnector,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> PeerClient {
        PeerClient::new(target, &node.raft, &self.connector)
    }
}

/// Raft RPCs to one peer.
pub struct PeerClient {
    target: NodeId,
    address: String,
    client: Option<RaftClient<Channel>>,
}

impl PeerClient {
    pub fn new(target: NodeId, address: &str, connector: &PeerConnector) -> Self {
        let client = connector.channel(address, CONNECT_TIMEOUT);
        Self { target, address: address.to_string(), client }
    }

    /// Sends one request and decodes `Result<Resp, E>` from the answer.
    async fn call<Req, Resp, E>(
        &mut self,
        which: Rpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, PeerNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(client) = self.client.as_mut() else {
            let e = std::io::Error::other(format!("invalid peer address `{}`", self.address));
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        };
        let payload = serde_json::to_vec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut req = tonic::Request::new(RaftPayload { payload });
        req.set_timeout(option.hard_ttl());
        let answer = match which {
            Rpc::AppendEntries => client.append_entries(req).await,
            Rpc::Vote => client.vote(req).await,
            Rpc::InstallSnapshot => client.install_snapshot(req).await,
        };
        let answer = answer.map_err(|status| {
            let e = std::io::Error::other(format!(
                "peer {} at {}: {}: {}",
                self.target,
                self.address,
                status.code(),
                status.message()
            ));
            match status.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                    RPCError::Unreachable(Unreachable::new(&e))
                }
                _ => RPCError::Network(NetworkError::new(&e)),
            }
        })?;
        let decoded: Result<Resp, E> = serde_json::from_slice(&answer.into_inner().payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        decoded.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId>>> {
        self.call(Rpc::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, PeerNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Rpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }

    /// Retry an unreachable peer every 100 ms (openraft's default waits 500 ms): a
    /// restarted peer is fed again, and counted in elections, almost at once.
    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(UNREACHABLE_RETRY))
    }
}
