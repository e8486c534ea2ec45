//! The peer's front door on port 3000: the JSON HTTP API, Prometheus metrics and the
//! gRPC services `orchctl` uses, all on one listener (HTTP/1.1 and h2c).

mod grpc;
mod health;
mod http;
mod ops;
mod pb;
mod raft;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::discovery::{DiscoveryHandle, TopologyStore};
use crate::metrics::Metrics;
use crate::raft::RaftNode;
use crate::recovery::detector::RecoveryService;

/// What every handler reads.
#[derive(Clone)]
pub struct AppState {
    pub node_id: u64,
    pub http_address: SocketAddr,
    pub started: Instant,
    pub store: Arc<TopologyStore>,
    pub discovery: DiscoveryHandle,
    pub metrics: Arc<Metrics>,
    pub raft: Arc<RaftNode>,
    pub recovery: Arc<RecoveryService>,
    /// The mysqld on this host (for the role health checks).
    pub local_instance: Option<crate::topology::InstanceKey>,
    /// For forwarding requests to other peers.
    pub http_client: reqwest::Client,
    /// The NLB/DynamoDB controller, when a cluster has `[clusters.aws]`.
    pub aws: Option<Arc<crate::aws::controller::AwsController<crate::aws::AwsClients>>>,
}

/// The HTTP routes and the gRPC services as one router.
pub fn router(state: AppState) -> axum::Router {
    let service = orch_proto::v1::orchestrator_server::OrchestratorServer::new(
        grpc::OrchestratorService::new(state.clone()),
    );
    // The HTTP router (with its JSON 404 fallback) is the base; gRPC paths are added
    // to it, so unknown paths keep answering JSON.
    tonic::service::Routes::from(http::router(state)).add_service(service).prepare().into_axum_router()
}

/// Serves [`router`] on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}
