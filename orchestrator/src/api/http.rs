//! JSON HTTP routes, compatible in path and spirit with orchestrator's API.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::AppState;
use crate::mysql::ProbeError;
use crate::topology::{ClusterInstance, ClusterSnapshot, InstanceKey};

/// An API failure: a status and one line of explanation, sent as `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message });
        (self.status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/api/health", get(health))
        .route("/api/clusters", get(clusters))
        .route("/api/cluster/{alias}", get(cluster))
        .route("/api/instance/{host}/{port}", get(instance))
        .route("/api/discover/{host}/{port}", get(discover))
        .route("/metrics", get(metrics))
        .merge(super::raft::routes())
        .merge(super::ops::routes())
        .merge(super::health::routes())
        .fallback(not_found)
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no such path: {}", uri.path()))
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    node_id: u64,
    version: &'static str,
    uptime_seconds: u64,
}

async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        node_id: state.node_id,
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs(),
    })
}

/// One line per cluster in `GET /api/clusters`.
#[derive(Serialize)]
pub struct ClusterSummary {
    pub alias: String,
    pub master: String,
    pub instances: usize,
    pub reachable: usize,
}

impl From<&ClusterSnapshot> for ClusterSummary {
    fn from(c: &ClusterSnapshot) -> Self {
        Self {
            alias: c.alias.clone(),
            master: c.master.to_string(),
            instances: c.instances.len(),
            reachable: c.reachable_count(),
        }
    }
}

async fn clusters(State(state): State<AppState>) -> Json<Vec<ClusterSummary>> {
    Json(state.store.clusters().iter().map(ClusterSummary::from).collect())
}

async fn cluster(State(state): State<AppState>, Path(alias): Path<String>) -> ApiResult<ClusterSnapshot> {
    state
        .store
        .cluster(&alias)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no cluster `{alias}`")))
}

fn instance_key(host: &str, port: &str) -> Result<InstanceKey, ApiError> {
    format!("{host}:{port}")
        .parse()
        .map_err(|e: crate::topology::InstanceKeyError| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))
}

async fn instance(
    State(state): State<AppState>,
    Path((host, port)): Path<(String, String)>,
) -> ApiResult<ClusterInstance> {
    let key = instance_key(&host, &port)?;
    state
        .store
        .instance(&key)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("instance {key} is not known")))
}

async fn discover(
    State(state): State<AppState>,
    Path((host, port)): Path<(String, String)>,
) -> ApiResult<ClusterInstance> {
    let key = instance_key(&host, &port)?;
    state.discovery.discover(key.clone()).await.map(Json).map_err(|e| {
        let status = match e {
            ProbeError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_GATEWAY,
        };
        ApiError::new(status, format!("cannot discover {key}: {e}"))
    })
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.encode(),
    )
}

async fn index() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], include_str!("index.html"))
}
