//! The web UI: its three embedded files (the page, its script and its style sheet,
//! served with a Content-Security-Policy that lets the page talk only to this peer,
//! so no request leaves it) and `/api/events`, the live feed the page follows: the
//! same events as the gRPC `Watch` stream, as server-sent events. The page reads and
//! acts through the JSON API with the operator's token, like any other client: it has
//! no route or power of its own.

use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;

use super::http::ApiError;
use super::{views, AppState};
use crate::auth::Caller;
use crate::ops::parse;

const PAGE: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

/// Only this peer: scripts, styles, images and connections (the API and the feed).
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                      connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The paths that answer without a token: the UI's files hold no data.
pub fn is_asset(path: &str) -> bool {
    matches!(path, "/" | "/ui/app.js" | "/ui/app.css")
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { asset(PAGE, "text/html; charset=utf-8") }))
        .route("/ui/app.js", get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }))
        .route("/ui/app.css", get(|| async { asset(STYLE, "text/css; charset=utf-8") }))
        .route("/api/events", get(events))
        .route("/api/v1/clusters", get(|State(s): State<AppState>| async move { Json(views::clusters(&s)) }))
        .route("/api/v1/topology/{alias}", get(topology))
        .route("/api/v1/problems", get(problems))
        .route("/api/v1/recoveries", get(recoveries))
        .route("/api/v1/raft", get(|State(s): State<AppState>| async move { Json(views::raft_state(&s)) }))
        .route("/api/v1/aws", get(aws))
        .route(
            "/api/v1/downtimes",
            get(|State(s): State<AppState>| async move { Json(views::downtimes(&s)) }),
        )
        .route(
            "/api/v1/global-recoveries",
            get(|State(s): State<AppState>| async move { Json(views::global_recoveries(&s)) }),
        )
}

// ---- The gRPC read replies as JSON (`/api/v1/...`): the forms the page and the
// `Watch` events share, so the page draws one shape whichever way it learned it.

async fn topology(State(s): State<AppState>, Path(alias): Path<String>) -> Response {
    match views::cluster(&s, &alias) {
        Ok(t) => Json(t).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn problems(State(s): State<AppState>) -> Response {
    match views::problems(&s, "").await {
        Ok(p) => Json(p).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoveriesQuery {
    #[serde(default)]
    pub cluster: String,
    /// The newest this many (all when 0).
    #[serde(default)]
    pub limit: u32,
}

async fn recoveries(
    State(s): State<AppState>,
    q: Result<Query<RecoveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match q {
        Ok(Query(q)) => Json(views::recoveries(&s, &q.cluster, q.limit)).into_response(),
        Err(e) => {
            ApiError::new(StatusCode::BAD_REQUEST, format!("query string: {}", e.body_text())).into_response()
        }
    }
}

async fn aws(State(s): State<AppState>) -> Response {
    match views::aws(&s).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only this cluster's events (all when empty).
    #[serde(default)]
    pub cluster: String,
}

/// `GET /api/events`: `Watch` as server-sent events, one JSON `WatchEvent` each
/// (`event: topology|problems|recovery|master`), a comment every 10 s to keep proxies
/// from closing it. Counted against the same watcher limit as `Watch`.
async fn events(
    State(s): State<AppState>,
    Extension(_caller): Extension<Caller>,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let cluster = match q {
        Ok(Query(q)) => q.cluster,
        Err(e) => {
            return ApiError::new(StatusCode::BAD_REQUEST, format!("query string: {}", e.body_text()))
                .into_response()
        }
    };
    if !cluster.is_empty() {
        if let Err(e) = parse::cluster("cluster", &cluster) {
            return ApiError::from(e).into_response();
        }
    }
    let Ok(permit) = s.watchers.clone().try_acquire_owned() else {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("this peer already serves {} watchers", super::MAX_WATCHERS),
        )
        .into_response();
    };
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        super::watch::run(s, cluster, tx).await;
        drop(permit);
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let e = rx.recv().await?;
        Some((Ok::<Event, Infallible>(sse_event(&e)), rx))
    });
    let mut r = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(10)))
        .into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// One event: its kind as the SSE event name, the whole `WatchEvent` as JSON data.
fn sse_event(e: &orch_proto::v1::WatchEvent) -> Event {
    use orch_proto::v1::watch_event::Event as Kind;
    let name = match &e.event {
        Some(Kind::Topology(_)) => "topology",
        Some(Kind::Problems(_)) => "problems",
        Some(Kind::Recovery(_)) => "recovery",
        Some(Kind::Master(_)) => "master",
        None => "empty",
    };
    Event::default().event(name).data(serde_json::to_string(e).unwrap_or_else(|_| "{}".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_ui_files_are_open_and_the_policy_keeps_the_page_on_this_peer() {
        for open in ["/", "/ui/app.js", "/ui/app.css"] {
            assert!(is_asset(open), "{open}");
        }
        for closed in ["/ui/", "/ui/other.js", "/api/events", "/ui/app.js/x"] {
            assert!(!is_asset(closed), "{closed}");
        }
        assert!(POLICY.contains("connect-src 'self'") && POLICY.contains("default-src 'none'"));
        // The page loads its script and style from this peer, nothing inline.
        assert!(PAGE.contains("src=\"/ui/app.js\"") && PAGE.contains("href=\"/ui/app.css\""));
        assert!(!PAGE.contains("<script>") && !PAGE.contains("<style>"));
        assert!(!SCRIPT.contains("http://") && !SCRIPT.contains("https://"));
    }

    #[test]
    fn events_are_named_by_kind() {
        use orch_proto::v1 as pb;
        let e = pb::WatchEvent {
            at_unix_ms: 5,
            event: Some(pb::watch_event::Event::Master(pb::MasterChanged::default())),
        };
        let text = format!("{:?}", sse_event(&e));
        assert!(text.contains("master"), "{text}");
    }
}
