//! The JSON HTTP API, with orchestrator's paths where it has them. Reads answer from
//! this peer's view; every mutation is parsed into an [`Operation`] (the pure
//! `*_from_*` functions below) and run by [`crate::ops`], like its gRPC twin.
//!
//! Mutations are `POST` (`GET` too where orchestrator uses it: discover, forget).
//! Every route but the open ones (see [`crate::auth::layer`]) needs a bearer token.
//! Errors are `{"error": "..."}` with 400 (bad input), 401, 403, 404, 409 (refused by a
//! precondition), 503 (no leader or quorum; the message starts `outcome unknown` when a
//! write the leader could not commit in time may still take effect) or 500.

use std::collections::BTreeMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::pb::Reply;
use super::{views, AppState};
use crate::auth::Caller;
use crate::ops::{parse, OpError, Operation};
use crate::topology::{ClusterInstance, ClusterSnapshot, InstanceKey};
use crate::unix_millis_now;

/// Largest request body (only `add-peer` takes one).
pub const MAX_BODY: usize = 64 * 1024;

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

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        let status = match &e {
            OpError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            OpError::NotFound(_) => StatusCode::NOT_FOUND,
            OpError::Refused(_) => StatusCode::CONFLICT,
            OpError::Denied(_) => StatusCode::FORBIDDEN,
            OpError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            OpError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            OpError::Unknown(_) => StatusCode::SERVICE_UNAVAILABLE,
            OpError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/status", get(status))
        .route("/api/clusters", get(clusters))
        .route("/api/cluster/{alias}", get(cluster))
        .route("/api/instance/{host}/{port}", get(instance))
        .route("/api/problems", get(problems))
        .route("/api/replication-analysis", get(problems))
        .route("/api/aws", get(aws_status))
        .route("/api/backups/{cluster}", get(backups).post(create_backup))
        .route("/api/backup-jobs/{id}", get(backup_job))
        .route("/api/recoveries", get(recoveries))
        .route("/api/recoveries/{id}", get(recovery))
        .route("/api/last-recovery", get(last_recovery))
        .route("/api/downtimed", get(downtimed))
        .route("/api/promotion-rules", get(promotion_rules))
        .route("/api/check-global-recoveries", get(check_recoveries))
        .route("/api/audit", get(audit))
        .route("/api/leader-check", get(leader_check))
        .route("/api/raft-state", get(raft_state))
        .route("/api/raft-health", get(raft_health))
        .route("/api/raft/state-machine", get(state_machine))
        .route("/api/discover/{host}/{port}", get(discover).post(discover))
        .route("/api/forget/{host}/{port}", get(forget).post(forget))
        .route("/api/graceful-master-takeover/{cluster}", post(switchover))
        .route("/api/graceful-master-takeover/{cluster}/{host}/{port}", post(switchover_to))
        .route("/api/force-master-failover/{cluster}", post(force_failover))
        .route("/api/force-master-failover/{cluster}/{host}/{port}", post(force_failover_to))
        .route("/api/force-master-takeover/{cluster}/{host}/{port}", post(force_failover_to))
        .route("/api/ack-recovery/{id}", post(ack_recovery))
        .route("/api/begin-downtime/{host}/{port}/{owner}/{reason}/{duration}", post(begin_downtime))
        .route("/api/end-downtime/{host}/{port}", post(end_downtime))
        .route("/api/register-candidate/{host}/{port}/{rule}", post(promotion_rule))
        .route("/api/disable-global-recoveries", post(disable_recoveries))
        .route("/api/enable-global-recoveries", post(enable_recoveries))
        .route("/api/raft/add-peer", post(add_peer))
        .route("/api/raft/remove-peer/{id}", post(remove_peer))
        .route("/api/raft/transfer-leadership/{id}", post(transfer_leadership))
        .merge(super::health::routes())
        .merge(super::ui::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(json_errors))
        .with_state(state)
}

/// Gives every HTTP error a JSON body `{"error": "..."}`, also those axum answers by
/// itself (a path segment that is not UTF-8, a method a route does not take).
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if !(status.is_client_error() || status.is_server_error())
        || content_type.starts_with("application/json")
        || content_type.starts_with("application/grpc")
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let message = match text.trim() {
        "" => status.canonical_reason().unwrap_or("error").to_lowercase(),
        t => crate::ops::one_line(t, 300),
    };
    let mut out = (parts.status, Json(json!({ "error": message }))).into_response();
    for (name, value) in
        parts.headers.iter().filter(|(n, _)| *n == header::ALLOW || *n == header::WWW_AUTHENTICATE)
    {
        out.headers_mut().insert(name, value.clone());
    }
    out
}

async fn not_found(uri: Uri) -> ApiError {
    let path: String = uri.path().chars().take(200).collect();
    ApiError::new(StatusCode::NOT_FOUND, format!("no such path: {path}"))
}

// ---- The parsers: path segments and query strings to operations (pure).

/// `{host}/{port}` segments as an instance key.
pub fn instance_from_path(host: &str, port: &str) -> Result<InstanceKey, OpError> {
    parse::instance("instance", &format!("{host}:{port}"))
}

/// Query parameters of a switchover or failover: `expected_master=host:port`, `dry_run`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoveryQuery {
    #[serde(default)]
    pub expected_master: String,
    #[serde(default)]
    pub dry_run: Option<String>,
}

pub fn recovery_from_path(
    switchover: bool,
    cluster: &str,
    target: Option<(&str, &str)>,
    q: &RecoveryQuery,
) -> Result<Operation, OpError> {
    let cluster = parse::cluster("cluster", cluster)?;
    let target = target.map(|(h, p)| instance_from_path(h, p)).transpose()?;
    let expected_master = parse::optional_instance("expected_master", &q.expected_master)?;
    let dry_run = q.dry_run.as_deref().map(|v| parse::flag("dry_run", v)).transpose()?.unwrap_or(false);
    Ok(if switchover {
        Operation::Switchover { cluster, target, expected_master, dry_run }
    } else {
        Operation::ForcedFailover { cluster, target, expected_master, dry_run }
    })
}

/// orchestrator's `begin-downtime/{host}/{port}/{owner}/{reason}/{duration}`. The owner
/// recorded is the token's name (the identity the audit knows); the path's `owner`
/// segment is accepted for compatibility and checked, not recorded.
pub fn downtime_from_path(
    host: &str,
    port: &str,
    owner: &str,
    reason: &str,
    duration: &str,
) -> Result<Operation, OpError> {
    let instance = instance_from_path(host, port)?;
    parse::text("owner", owner, false)?;
    let reason = parse::text("reason", reason, true)?;
    let duration_s = parse::duration("duration", duration)?.as_secs();
    Ok(Operation::BeginDowntime { instance, duration_s, reason })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckQuery {
    #[serde(default)]
    pub comment: String,
}

pub fn ack_from_path(id: &str, q: &AckQuery) -> Result<Operation, OpError> {
    Ok(Operation::AcknowledgeRecovery {
        id: parse::number("id", id)?,
        comment: parse::text("comment", &q.comment, false)?,
    })
}

pub fn promotion_rule_from_path(host: &str, port: &str, rule: &str) -> Result<Operation, OpError> {
    Ok(Operation::SetPromotionRule {
        instance: instance_from_path(host, port)?,
        rule: parse::promotion_rule("rule", rule)?,
    })
}

/// The body of `POST /api/raft/add-peer`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddPeerBody {
    pub id: u64,
    pub raft: String,
    pub http: String,
}

pub fn add_peer_from_body(b: &AddPeerBody) -> Result<Operation, OpError> {
    Ok(Operation::AddPeer {
        id: parse::peer_id("id", b.id)?,
        raft: parse::peer_address("raft", &b.raft)?,
        http: parse::peer_address("http", &b.http)?,
    })
}

pub fn peer_from_path(field: &str, id: &str) -> Result<u64, OpError> {
    parse::peer_id(field, parse::number(field, id)?)
}

// ---- Running operations.

/// Runs `operation` for `caller` and answers with the RPC's message as JSON. A
/// recovery that ran but failed answers 500 with its record.
async fn run(state: &AppState, caller: Caller, operation: Result<Operation, OpError>) -> Response {
    let operation = match operation {
        Ok(o) => o,
        Err(e) => return ApiError::from(e).into_response(),
    };
    match state.ops.run(&caller, operation).await {
        Ok(reply) => match state.raft.with_state(|s| super::pb::reply(&reply, s, unix_millis_now())) {
            Reply::Operation(o) => Json(o).into_response(),
            Reply::Discover(d) => Json(d).into_response(),
            Reply::Recovery(r) => {
                let failed = r.recovery.as_ref().is_some_and(|r| r.status != "succeeded");
                let code = if failed { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
                (code, Json(r)).into_response()
            }
            Reply::Job(j) => {
                let code =
                    if j.status == "failed" { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
                (code, Json(j)).into_response()
            }
        },
        Err(e) => ApiError::from(e).into_response(),
    }
}

type Host = Path<(String, String)>;

async fn discover(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((h, p)): Host,
) -> Response {
    run(&s, c, instance_from_path(&h, &p).map(|instance| Operation::Discover { instance })).await
}

async fn forget(State(s): State<AppState>, Extension(c): Extension<Caller>, Path((h, p)): Host) -> Response {
    run(&s, c, instance_from_path(&h, &p).map(|instance| Operation::Forget { instance })).await
}

fn query<T: for<'de> Deserialize<'de> + Default>(
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, OpError> {
    q.map(|Query(q)| q).map_err(|e| OpError::InvalidArgument(format!("query string: {}", e.body_text())))
}

async fn switchover(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(cluster): Path<String>,
    q: Result<Query<RecoveryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let op = query(q).and_then(|q| recovery_from_path(true, &cluster, None, &q));
    run(&s, c, op).await
}

async fn switchover_to(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((cluster, host, port)): Path<(String, String, String)>,
    q: Result<Query<RecoveryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let op = query(q).and_then(|q| recovery_from_path(true, &cluster, Some((&host, &port)), &q));
    run(&s, c, op).await
}

async fn force_failover(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(cluster): Path<String>,
    q: Result<Query<RecoveryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let op = query(q).and_then(|q| recovery_from_path(false, &cluster, None, &q));
    run(&s, c, op).await
}

async fn force_failover_to(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((cluster, host, port)): Path<(String, String, String)>,
    q: Result<Query<RecoveryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let op = query(q).and_then(|q| recovery_from_path(false, &cluster, Some((&host, &port)), &q));
    run(&s, c, op).await
}

async fn ack_recovery(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    q: Result<Query<AckQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    run(&s, c, query(q).and_then(|q| ack_from_path(&id, &q))).await
}

async fn begin_downtime(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((host, port, owner, reason, duration)): Path<(String, String, String, String, String)>,
) -> Response {
    run(&s, c, downtime_from_path(&host, &port, &owner, &reason, &duration)).await
}

async fn end_downtime(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((h, p)): Host,
) -> Response {
    run(&s, c, instance_from_path(&h, &p).map(|instance| Operation::EndDowntime { instance })).await
}

async fn promotion_rule(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((host, port, rule)): Path<(String, String, String)>,
) -> Response {
    run(&s, c, promotion_rule_from_path(&host, &port, &rule)).await
}

async fn disable_recoveries(State(s): State<AppState>, Extension(c): Extension<Caller>) -> Response {
    run(&s, c, Ok(Operation::SetGlobalRecoveries { enabled: false })).await
}

async fn enable_recoveries(State(s): State<AppState>, Extension(c): Extension<Caller>) -> Response {
    run(&s, c, Ok(Operation::SetGlobalRecoveries { enabled: true })).await
}

async fn add_peer(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    body: Result<Json<AddPeerBody>, JsonRejection>,
) -> Response {
    let op = match body {
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body: larger than {} KiB", MAX_BODY / 1024),
            )
            .into_response()
        }
        Err(e) => Err(OpError::InvalidArgument(format!("body: {}", e.body_text()))),
        Ok(Json(b)) => add_peer_from_body(&b),
    };
    run(&s, c, op).await
}

async fn remove_peer(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    run(&s, c, peer_from_path("id", &id).map(|id| Operation::RemovePeer { id })).await
}

async fn transfer_leadership(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    run(&s, c, peer_from_path("to", &id).map(|to| Operation::TransferLeadership { to })).await
}

// ---- Reads.

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

async fn status(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
) -> Json<orch_proto::v1::StatusReply> {
    Json(views::status(&s, &c))
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
    let alias = parse::cluster("cluster", &alias)?;
    state
        .store
        .cluster(&alias)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no cluster `{alias}`")))
}

async fn instance(State(state): State<AppState>, Path((host, port)): Host) -> ApiResult<ClusterInstance> {
    let key = instance_from_path(&host, &port)?;
    state
        .store
        .instance(&key)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("instance {key} is not known")))
}

/// The leader's analysis (a follower asks the leader).
async fn problems(State(state): State<AppState>) -> Response {
    match state.ops.problems().await {
        Ok(f) => Json(f).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// What the cluster's bucket holds (`orchctl backup list`).
async fn backups(State(state): State<AppState>, Path(cluster): Path<String>) -> Response {
    match super::views::backups(&state, &cluster).await {
        Ok(listing) => Json(listing).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupQuery {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    source: String,
}

/// Takes a backup (`?kind=full|incremental&source=host:port`).
async fn create_backup(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(cluster): Path<String>,
    q: Result<Query<BackupQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let op = query(q).and_then(|q| {
        super::grpc::create_backup_op(&orch_proto::v1::CreateBackupRequest {
            cluster,
            kind: q.kind,
            source: q.source,
        })
    });
    run(&s, c, op).await
}

/// One backup job (forwarded to the peer running it).
async fn backup_job(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.ops.job(&id).await {
        Ok(j) => Json(super::pb::job(&j)).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The leader's view of each cluster's target groups and DynamoDB mirror.
async fn aws_status(State(state): State<AppState>) -> Response {
    match state.ops.aws().await {
        Ok(Some(view)) => Json(view).into_response(),
        Ok(None) => {
            ApiError::new(StatusCode::NOT_FOUND, "no cluster has [clusters.aws] configured").into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Recoveries as this peer has applied them (says how fresh).
async fn recoveries(State(state): State<AppState>) -> Json<serde_json::Value> {
    let applied = state.raft.status().applied_index;
    let recoveries = state.raft.with_state(|s| serde_json::to_value(&s.recoveries).unwrap_or_default());
    Json(json!({ "applied_index": applied, "recoveries": recoveries }))
}

async fn recovery(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<orch_proto::v1::Recovery> {
    let id = parse::number("id", &id)?;
    Ok(Json(views::recovery(&state, id)?))
}

/// The newest recovery, with its steps and timings.
async fn last_recovery(State(state): State<AppState>) -> ApiResult<orch_proto::v1::Recovery> {
    let last = state.raft.with_state(|s| s.recoveries.last().map(super::pb::recovery));
    last.map(Json).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no recovery has run"))
}

async fn downtimed(State(state): State<AppState>) -> Json<orch_proto::v1::ListDowntimesReply> {
    Json(views::downtimes(&state))
}

async fn promotion_rules(State(state): State<AppState>) -> Json<orch_proto::v1::ListPromotionRulesReply> {
    Json(views::promotion_rules(&state))
}

async fn check_recoveries(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "recoveries_enabled": views::global_recoveries(&state).enabled }))
}

async fn audit(
    State(state): State<AppState>,
    q: Result<Query<BTreeMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<orch_proto::v1::ListAuditReply> {
    let q = query(q)?;
    let limit = match q.get("limit") {
        Some(l) => u32::try_from(parse::number("limit", l)?).unwrap_or(u32::MAX),
        None => 0,
    };
    Ok(Json(views::audit(&state, limit)))
}

async fn leader_check(State(state): State<AppState>) -> Response {
    if state.raft.is_leader() {
        Json(json!({ "leader": true, "node_id": state.node_id })).into_response()
    } else {
        let leader = state.raft.leader().map(|(id, _)| id);
        (
            StatusCode::NOT_FOUND,
            Json(json!({ "leader": false, "node_id": state.node_id, "leader_id": leader })),
        )
            .into_response()
    }
}

async fn raft_state(State(state): State<AppState>) -> Json<crate::raft::RaftStatus> {
    Json(super::views::raft_status(&state))
}

async fn raft_health(State(state): State<AppState>) -> Response {
    let status = state.raft.status();
    let healthy = state.raft.has_quorum_contact();
    let body = json!({
        "healthy": healthy,
        "role": status.role,
        "leader_id": status.leader_id,
        "term": status.term,
        "last_leader_contact_ms": status.last_leader_contact_ms,
        "millis_since_quorum_ack": status.millis_since_quorum_ack,
    });
    let code = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

/// The replicated state as this peer has applied it; says how fresh it is. The index
/// is read with the state (openraft's metrics publish it a moment later: a snapshot
/// just installed showed its entries with the index before it).
async fn state_machine(State(state): State<AppState>) -> Json<serde_json::Value> {
    let status = state.raft.status();
    let (applied_index, applied) = state.raft.state();
    let cluster_state = serde_json::to_value(&applied).unwrap_or_default();
    Json(json!({
        "node_id": state.node_id,
        "applied_index": applied_index,
        "committed_index": status.committed_index,
        "leader_id": status.leader_id,
        "state": cluster_state,
    }))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn orchestrator_paths_parse_into_operations() {
        let op = downtime_from_path("10.0.0.3", "3306", "alice", "maintenance", "1h").unwrap();
        assert_eq!(
            op,
            Operation::BeginDowntime {
                instance: "10.0.0.3:3306".parse().unwrap(),
                duration_s: 3600,
                reason: "maintenance".into()
            }
        );
        for (h, p, d) in [("10.0.0.3", "0", "1h"), ("a b", "3306", "1h"), ("h", "3306", "forever")] {
            assert!(downtime_from_path(h, p, "o", "r", d).is_err(), "{h}:{p} {d}");
        }
        let q = RecoveryQuery { expected_master: "10.0.0.1:3306".into(), dry_run: Some("1".into()) };
        match recovery_from_path(true, "main", Some(("10.0.0.2", "3306")), &q).unwrap() {
            Operation::Switchover { dry_run, expected_master, .. } => {
                assert!(dry_run);
                assert_eq!(expected_master.unwrap().to_string(), "10.0.0.1:3306");
            }
            other => panic!("{other:?}"),
        }
        let bad = RecoveryQuery { expected_master: "nope".into(), dry_run: None };
        assert!(recovery_from_path(true, "main", None, &bad)
            .unwrap_err()
            .to_string()
            .starts_with("expected_master"));
        assert!(ack_from_path("x", &AckQuery::default()).is_err());
        assert!(peer_from_path("id", "0").is_err());
    }

    proptest! {
        /// Whatever the path segments and query values, the parsers refuse or return a
        /// well-formed operation; none panics.
        #[test]
        fn path_parsers_never_panic(a in "\\PC{0,40}", b in "\\PC{0,12}", c in "\\PC{0,40}", d in "\\PC{0,20}") {
            let _ = downtime_from_path(&a, &b, &c, &c, &d);
            let _ = promotion_rule_from_path(&a, &b, &c);
            let _ = ack_from_path(&b, &AckQuery { comment: c.clone() });
            let q = RecoveryQuery { expected_master: c.clone(), dry_run: Some(d.clone()) };
            let _ = recovery_from_path(true, &a, Some((&c, &b)), &q);
            let _ = add_peer_from_body(&AddPeerBody { id: b.len() as u64, raft: a.clone(), http: c.clone() });
            let _ = peer_from_path("id", &d);
            if let Ok(k) = instance_from_path(&a, &b) {
                prop_assert!(k.port > 0);
            }
        }
    }
}
