//! HTTP routes of the Raft group: leader check, state, health, the replicated state,
//! and the mutations (commands, membership, leadership transfer).
//!
//! A mutation received by a follower is forwarded to the leader (not redirected) and
//! the leader's answer is returned. A forwarded request is never forwarded again, so a
//! stale view of who leads cannot loop.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::http::ApiError;
use super::AppState;
use crate::raft::{NodeId, PeerNode, WriteError};
use crate::state::{Command, CommandResult};

/// Marks a request a peer forwarded to the leader.
const FORWARDED: &str = "x-orch-forwarded-by";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/leader-check", get(leader_check))
        .route("/api/raft-state", get(raft_state))
        .route("/api/raft-health", get(raft_health))
        .route("/api/raft/state-machine", get(state_machine))
        .route("/api/raft/apply", post(apply))
        .route("/api/raft/add-peer", post(add_peer))
        .route("/api/raft/remove-peer/{id}", post(remove_peer))
        .route("/api/raft/transfer-leadership/{id}", post(transfer_leadership))
        .route("/api/raft/pause-heartbeats/{ms}", post(pause_heartbeats))
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        let status = match e {
            WriteError::NotLeader { .. } | WriteError::NoQuorum(_) => StatusCode::SERVICE_UNAVAILABLE,
            WriteError::Raft(_) => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, e.to_string())
    }
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
    Json(state.raft.status())
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

/// The replicated state as this peer has applied it; says how fresh it is.
async fn state_machine(State(state): State<AppState>) -> Json<serde_json::Value> {
    let (applied_index, cluster_state) = state.raft.state();
    let status = state.raft.status();
    Json(json!({
        "node_id": state.node_id,
        "applied_index": applied_index,
        "committed_index": status.committed_index,
        "leader_id": status.leader_id,
        "state": cluster_state,
    }))
}

/// Sends the same request to the leader and relays its answer.
pub(super) async fn forward(
    state: &AppState,
    headers: &HeaderMap,
    method: reqwest::Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Response {
    if headers.contains_key(FORWARDED) {
        return ApiError::from(WriteError::NotLeader { leader: state.raft.leader() }).into_response();
    }
    let Some((leader_id, leader)) = state.raft.leader() else {
        return ApiError::from(WriteError::NotLeader { leader: None }).into_response();
    };
    let url = format!("http://{}{path}", leader.http);
    let mut request = state.http_client.request(method, &url).header(FORWARDED, state.node_id.to_string());
    if let Some(body) = body {
        request = request.json(body);
    }
    match request.send().await {
        Ok(resp) => {
            let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            match resp.json::<serde_json::Value>().await {
                Ok(body) => (status, Json(body)).into_response(),
                Err(e) => ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    format!("leader {leader_id} at {} sent an unreadable answer: {e}", leader.http),
                )
                .into_response(),
            }
        }
        Err(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "Raft leader {leader_id} at {} is unreachable from this peer ({e}); write refused",
                leader.http
            ),
        )
        .into_response(),
    }
}

#[derive(Serialize)]
struct ApplyAnswer {
    log_index: u64,
    #[serde(flatten)]
    result: CommandResult,
}

async fn apply(State(state): State<AppState>, headers: HeaderMap, Json(command): Json<Command>) -> Response {
    commit(&state, &headers, command).await
}

/// Commits `command` through Raft (forwarded to the leader by a follower) and answers
/// with the log index and result; a command the state machine rejects is a 409.
pub(super) async fn commit(state: &AppState, headers: &HeaderMap, command: Command) -> Response {
    if !state.raft.is_leader() {
        let body = serde_json::to_value(&command).unwrap_or_default();
        return forward(state, headers, reqwest::Method::POST, "/api/raft/apply", Some(&body)).await;
    }
    match state.raft.write(command).await {
        Ok(outcome) => {
            let code = match outcome.result {
                CommandResult::Rejected { .. } => StatusCode::CONFLICT,
                _ => StatusCode::OK,
            };
            let answer = ApplyAnswer { log_index: outcome.log_index, result: outcome.result };
            (code, Json(answer)).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[derive(Serialize, Deserialize)]
struct AddPeer {
    id: NodeId,
    raft: String,
    http: String,
}

async fn add_peer(State(state): State<AppState>, headers: HeaderMap, Json(peer): Json<AddPeer>) -> Response {
    if !state.raft.is_leader() {
        let body = serde_json::to_value(&peer).unwrap_or_default();
        return forward(&state, &headers, reqwest::Method::POST, "/api/raft/add-peer", Some(&body)).await;
    }
    let node = PeerNode { raft: peer.raft, http: peer.http };
    match state.raft.add_peer(peer.id, node).await {
        Ok(index) => Json(json!({ "added": peer.id, "log_index": index })).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn remove_peer(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<NodeId>) -> Response {
    if !state.raft.is_leader() {
        return forward(
            &state,
            &headers,
            reqwest::Method::POST,
            &format!("/api/raft/remove-peer/{id}"),
            None,
        )
        .await;
    }
    match state.raft.remove_peer(id).await {
        Ok(index) => Json(json!({ "removed": id, "log_index": index })).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Internal: the leader stops heartbeats for `ms` (part of a leadership transfer).
async fn pause_heartbeats(State(state): State<AppState>, Path(ms): Path<u64>) -> Response {
    let pause = std::time::Duration::from_millis(ms.min(5_000));
    match state.raft.pause_heartbeats(pause) {
        Ok(()) => Json(json!({ "paused_ms": pause.as_millis() as u64 })).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Makes peer `id` the leader: the request reaches that peer (forwarded if needed),
/// which starts an election and answers once it leads.
async fn transfer_leadership(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<NodeId>,
) -> Response {
    if id != state.node_id {
        if headers.contains_key(FORWARDED) {
            return ApiError::new(
                StatusCode::CONFLICT,
                format!("request for peer {id} reached peer {}", state.node_id),
            )
            .into_response();
        }
        let target = state.raft.status().members.into_iter().find(|m| m.id == id);
        let Some(target) = target else {
            return ApiError::new(StatusCode::NOT_FOUND, format!("peer {id} is not a member"))
                .into_response();
        };
        let url = format!("http://{}/api/raft/transfer-leadership/{id}", target.http);
        return match state.http_client.post(&url).header(FORWARDED, state.node_id.to_string()).send().await {
            Ok(resp) => {
                let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                let body = resp.json::<serde_json::Value>().await.unwrap_or_default();
                (status, Json(body)).into_response()
            }
            Err(e) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("peer {id} at {} is unreachable: {e}", target.http),
            )
            .into_response(),
        };
    }
    if state.raft.is_leader() {
        return Json(json!({ "leader": id, "changed": false })).into_response();
    }
    // Ask the leader to go quiet so leases lapse, then campaign until we lead.
    let lease = state.raft.leader_lease();
    for _attempt in 0..3 {
        if let Some((_, leader)) = state.raft.leader().filter(|(lid, _)| *lid != id) {
            let pause = (lease * 4).as_millis();
            let url = format!("http://{}/api/raft/pause-heartbeats/{pause}", leader.http);
            let _ = state.http_client.post(&url).header(FORWARDED, state.node_id.to_string()).send().await;
        }
        let deadline = std::time::Instant::now() + lease * 4;
        while std::time::Instant::now() < deadline {
            if state.raft.is_leader() {
                return Json(json!({ "leader": id, "changed": true })).into_response();
            }
            if let Err(e) = state.raft.campaign().await {
                return ApiError::from(e).into_response();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("peer {id} campaigned but did not become leader (3 attempts)"),
    )
    .into_response()
}
