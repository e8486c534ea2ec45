//! Role-aware health endpoints for load-balancer health checks (DESIGN.md section 6):
//! the NLB itself drops a demoted master from the write target group, even when an API
//! call to move it is late — a second fence.
//!
//! - `GET /health/primary`: 200 only when this host's mysqld is the master Raft
//!   recorded, it is writable, and this peer is in contact with a quorum (a master cut
//!   off on the minority side fails its own check). A master whose last probe still
//!   says read-only (it was promoted since) is probed again before answering.
//! - `GET /health/replica?max_lag=N`: 200 only when this host's mysqld replicates with
//!   both threads running and lags at most N seconds (default 10).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use crate::topology::InstanceProbe;

pub fn routes() -> Router<AppState> {
    Router::new().route("/health/primary", get(primary)).route("/health/replica", get(replica))
}

fn answer(ok: bool, role: &str, reason: String) -> Response {
    let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(json!({ "healthy": ok, "role": role, "reason": reason }))).into_response()
}

/// The local instance's latest probe, if it answered it; else why not.
fn local_probe(state: &AppState) -> Result<(crate::topology::InstanceKey, InstanceProbe), String> {
    let key = state.local_instance.clone().ok_or("this peer has no local instance configured")?;
    let seen = state.store.instance(&key).ok_or_else(|| format!("{key} is not known to discovery"))?.state;
    match (seen.reachable, seen.last_probe) {
        (true, Some(p)) => Ok((key, p)),
        _ => Err(format!("{key} is unreachable: {}", seen.last_error.unwrap_or_default())),
    }
}

async fn primary(State(state): State<AppState>) -> Response {
    let (key, probe) = match local_probe(&state) {
        Ok(x) => x,
        Err(why) => return answer(false, "unknown", why),
    };
    if !state.raft.has_quorum_contact() {
        return answer(false, "master", "this peer is out of contact with a quorum of peers".into());
    }
    let (_, s) = state.raft.state();
    if !s.is_master(&key) {
        return answer(false, "replica", format!("{key} is not the master Raft recorded"));
    }
    // Just promoted: this peer's last probe may predate it, so look again now.
    let read_only = if probe.read_only {
        let seen = state.discovery.observe(&key).await.state;
        !seen.reachable || seen.last_probe.is_none_or(|p| p.read_only)
    } else {
        false
    };
    if read_only {
        return answer(false, "master", format!("{key} is read-only"));
    }
    answer(true, "master", format!("{key} is the writable master"))
}

#[derive(Deserialize)]
struct ReplicaParams {
    max_lag: Option<u64>,
}

async fn replica(State(state): State<AppState>, Query(p): Query<ReplicaParams>) -> Response {
    let max_lag = p.max_lag.unwrap_or(10);
    let (key, probe) = match local_probe(&state) {
        Ok(x) => x,
        Err(why) => return answer(false, "unknown", why),
    };
    let Some(r) = probe.replication.as_ref() else {
        return answer(false, "master", format!("{key} does not replicate"));
    };
    if !r.is_replicating() {
        return answer(
            false,
            "replica",
            format!("{key}: IO thread {}, SQL thread {}", r.io_thread, r.sql_thread),
        );
    }
    match r.seconds_behind {
        Some(lag) if lag <= max_lag => answer(true, "replica", format!("{key} replicates, {lag} s behind")),
        Some(lag) => answer(false, "replica", format!("{key} is {lag} s behind (limit {max_lag} s)")),
        None => answer(false, "replica", format!("{key} reports no lag (NULL)")),
    }
}
