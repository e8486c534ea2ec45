//! Operations on clusters (orchestrator-compatible paths where they exist): problems,
//! recoveries and their acknowledgement, downtimes, promotion rules, the global
//! recovery switch, planned switchover and forced failover.
//!
//! Mutations are Raft commands (forwarded to the leader by followers); switchover and
//! failover run on the leader, which answers once the recovery has ended.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::http::ApiError;
use super::raft::{commit, forward};
use super::AppState;
use crate::recovery::detector::ManualRecovery;
use crate::state::{Command, PromotionRule, RecoveryKind};
use crate::topology::InstanceKey;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/problems", get(problems))
        .route("/api/aws", get(aws_status))
        .route("/api/recoveries", get(recoveries))
        .route("/api/last-recovery", get(last_recovery))
        .route("/api/ack-recovery/{id}", post(ack_recovery))
        .route("/api/begin-downtime/{host}/{port}/{owner}/{reason}/{duration_s}", post(begin_downtime))
        .route("/api/end-downtime/{host}/{port}", post(end_downtime))
        .route("/api/register-candidate/{host}/{port}/{rule}", post(promotion_rule))
        .route("/api/disable-global-recoveries", post(disable_recoveries))
        .route("/api/enable-global-recoveries", post(enable_recoveries))
        .route("/api/check-global-recoveries", get(check_recoveries))
        .route("/api/graceful-master-takeover/{cluster}", post(switchover))
        .route("/api/graceful-master-takeover/{cluster}/{host}/{port}", post(switchover_to))
        .route("/api/force-master-failover/{cluster}", post(force_failover))
        .route("/api/force-master-failover/{cluster}/{host}/{port}", post(force_failover_to))
}

fn key(host: &str, port: &str) -> Result<InstanceKey, ApiError> {
    format!("{host}:{port}")
        .parse()
        .map_err(|e: crate::topology::InstanceKeyError| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))
}

/// Served by the leader (which runs the analysis); a follower forwards.
async fn problems(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !state.raft.is_leader() {
        return forward(&state, &headers, reqwest::Method::GET, "/api/problems", None).await;
    }
    Json(state.recovery.findings()).into_response()
}

/// The leader's view of each cluster's target groups and DynamoDB mirror.
async fn aws_status(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !state.raft.is_leader() {
        return forward(&state, &headers, reqwest::Method::GET, "/api/aws", None).await;
    }
    match &state.aws {
        Some(aws) => Json(aws.status()).into_response(),
        None => {
            ApiError::new(StatusCode::NOT_FOUND, "no cluster has [clusters.aws] configured").into_response()
        }
    }
}

async fn last_recovery(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !state.raft.is_leader() {
        return forward(&state, &headers, reqwest::Method::GET, "/api/last-recovery", None).await;
    }
    match state.recovery.last_outcome() {
        Some(o) => Json(json!({
            "id": o.id, "epoch": o.epoch, "success": o.success, "new_master": o.new_master,
            "summary": o.summary, "steps": o.steps,
            "writable_after_ms": o.writable_after.map(|d| d.as_millis() as u64),
        }))
        .into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, "this leader has run no recovery").into_response(),
    }
}

/// Recoveries as this peer has applied them (says how fresh).
async fn recoveries(State(state): State<AppState>) -> Json<serde_json::Value> {
    let (applied_index, s) = state.raft.state();
    Json(json!({ "applied_index": applied_index, "recoveries": s.recoveries }))
}

#[derive(Deserialize)]
struct AckParams {
    #[serde(default = "anonymous")]
    by: String,
    #[serde(default)]
    comment: String,
}

fn anonymous() -> String {
    "api".into()
}

async fn ack_recovery(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    Query(p): Query<AckParams>,
) -> Response {
    commit(&state, &headers, Command::AcknowledgeRecovery { id, by: p.by, comment: p.comment }).await
}

async fn begin_downtime(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((host, port, owner, reason, duration_s)): Path<(String, String, String, String, String)>,
) -> Response {
    let instance = match key(&host, &port) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let Ok(duration_s) = duration_s.trim_end_matches('s').parse::<u64>() else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("duration `{duration_s}` is not a number of seconds"),
        )
        .into_response();
    };
    commit(&state, &headers, Command::BeginDowntime { instance, owner, reason, duration_s }).await
}

async fn end_downtime(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((host, port)): Path<(String, String)>,
) -> Response {
    match key(&host, &port) {
        Ok(instance) => commit(&state, &headers, Command::EndDowntime { instance }).await,
        Err(e) => e.into_response(),
    }
}

async fn promotion_rule(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((host, port, rule)): Path<(String, String, String)>,
) -> Response {
    let instance = match key(&host, &port) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let rule = match rule.replace('-', "_").as_str() {
        "prefer" => PromotionRule::Prefer,
        "neutral" => PromotionRule::Neutral,
        "prefer_not" => PromotionRule::PreferNot,
        "must_not" => PromotionRule::MustNot,
        other => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("promotion rule `{other}` is not one of prefer, neutral, prefer_not, must_not"),
            )
            .into_response()
        }
    };
    commit(&state, &headers, Command::SetPromotionRule { instance, rule }).await
}

async fn disable_recoveries(State(state): State<AppState>, headers: HeaderMap) -> Response {
    commit(&state, &headers, Command::SetRecoveriesEnabled { enabled: false }).await
}

async fn enable_recoveries(State(state): State<AppState>, headers: HeaderMap) -> Response {
    commit(&state, &headers, Command::SetRecoveriesEnabled { enabled: true }).await
}

async fn check_recoveries(State(state): State<AppState>) -> Json<serde_json::Value> {
    let (_, s) = state.raft.state();
    Json(json!({ "recoveries_enabled": s.recoveries_enabled }))
}

/// Runs a switchover or forced failover on the leader (a follower forwards), to the
/// replica `host:port` when given.
async fn manual(
    state: AppState,
    headers: HeaderMap,
    uri: Uri,
    cluster: String,
    target: Option<(String, String)>,
    kind: RecoveryKind,
) -> Response {
    let target = match target.map(|(host, port)| key(&host, &port)).transpose() {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    if !state.raft.is_leader() {
        return forward(&state, &headers, reqwest::Method::POST, uri.path(), None).await;
    }
    match state.recovery.manual(ManualRecovery { cluster, target, kind }).await {
        Ok(o) => {
            let code = if o.success { StatusCode::OK } else { StatusCode::CONFLICT };
            let body = json!({
                "success": o.success, "recovery_id": o.id, "new_master": o.new_master, "summary": o.summary,
                "steps": o.steps, "writable_after_ms": o.writable_after.map(|d| d.as_millis() as u64),
            });
            (code, Json(body)).into_response()
        }
        Err(e) => ApiError::new(StatusCode::CONFLICT, e).into_response(),
    }
}

type Cluster = Path<String>;
type ClusterTarget = Path<(String, String, String)>;

async fn switchover(State(s): State<AppState>, h: HeaderMap, uri: Uri, Path(c): Cluster) -> Response {
    manual(s, h, uri, c, None, RecoveryKind::Switchover).await
}

async fn switchover_to(
    State(s): State<AppState>,
    h: HeaderMap,
    uri: Uri,
    Path((c, host, port)): ClusterTarget,
) -> Response {
    manual(s, h, uri, c, Some((host, port)), RecoveryKind::Switchover).await
}

async fn force_failover(State(s): State<AppState>, h: HeaderMap, uri: Uri, Path(c): Cluster) -> Response {
    manual(s, h, uri, c, None, RecoveryKind::ForcedFailover).await
}

async fn force_failover_to(
    State(s): State<AppState>,
    h: HeaderMap,
    uri: Uri,
    Path((c, host, port)): ClusterTarget,
) -> Response {
    manual(s, h, uri, c, Some((host, port)), RecoveryKind::ForcedFailover).await
}
