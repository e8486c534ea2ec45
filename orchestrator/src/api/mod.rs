//! The peer's front door on port 3000: the JSON HTTP API, the web UI, Prometheus
//! metrics and the gRPC operator API `orchctl` uses, all on one listener (HTTP/1.1 and
//! HTTP/2; TLS when `[tls.api]` is set), all behind one authentication layer
//! ([`crate::auth::layer`]).
//!
//! - [`http`]: routes (orchestrator's paths) and their parsers;
//! - [`grpc`]: the `orchestrator.v1.Orchestrator` service and its parsers;
//! - [`views`]: the read side both share; [`pb`]: model → protobuf conversions;
//! - [`watch`]: the `Watch` event stream; [`health`]: the NLB's role health checks;
//! - [`ui`]: the web UI's embedded files and its live feed (`/api/events`).

pub(crate) mod grpc;
mod health;
pub mod http;
mod pb;
pub mod ui;
mod views;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::ServiceExt;

use crate::auth::layer::AuthSettings;
use crate::discovery::{DiscoveryHandle, TopologyStore};
use crate::metrics::Metrics;
use crate::ops::Operations;
use crate::raft::RaftNode;

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
    /// The typed operations (and the leader-only reads).
    pub ops: Arc<Operations>,
    /// The mysqld on this host (for the role health checks).
    pub local_instance: Option<crate::topology::InstanceKey>,
    /// `Watch` streams this peer still accepts (each holds a permit while it runs).
    pub watchers: Arc<tokio::sync::Semaphore>,
    /// The Auto Scaling group as last read (`[membership] auto_scaling_group`).
    pub fleet: Option<Arc<crate::aws::fleet::FleetStatus>>,
}

/// How many `Watch` streams one peer serves at once.
pub const MAX_WATCHERS: usize = 64;

/// The HTTP routes and the gRPC services as one router, behind the auth layer.
pub fn router(state: AppState, auth: Arc<AuthSettings>) -> axum::Router {
    let service = orch_proto::v1::orchestrator_server::OrchestratorServer::new(
        grpc::OrchestratorService::new(state.clone()),
    )
    .max_decoding_message_size(grpc::MAX_REQUEST_MESSAGE);
    // The HTTP router (with its JSON 404 fallback) is the base; gRPC paths are added
    // to it, so unknown paths keep answering JSON.
    tonic::service::Routes::from(http::router(state))
        .add_service(service)
        .prepare()
        .into_axum_router()
        .layer(axum::middleware::from_fn_with_state(auth, crate::auth::layer::authenticate))
}

/// Serves [`router`] on `listener` until `shutdown` resolves: plain, or TLS with
/// `tls` (ALPN h2 and http/1.1).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Some(tls) = tls else {
        return axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown)
            .await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed on the API port");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream)).await;
            let stream = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "TLS handshake failed on the API port");
                    return;
                }
                Err(_) => return,
            };
            let service = router.map_request(move |mut r: axum::http::Request<hyper::body::Incoming>| {
                r.extensions_mut().insert(axum::extract::ConnectInfo(remote));
                r.map(axum::body::Body::new)
            });
            let service = hyper_util::service::TowerToHyperService::new(service);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}
