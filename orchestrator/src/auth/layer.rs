//! The authentication layer of port 3000: one middleware in front of every HTTP route
//! and gRPC method. It reads `authorization: Bearer <token>`, verifies it, and attaches
//! the [`Caller`] (identity, client address, this peer) to the request; what the
//! caller may do is decided by the operation it asks for ([`crate::ops`]).
//!
//! Open without a token: the web UI's files (the page logs in with a token from the browser),
//! `/api/health`, `/health/primary`, `/health/replica` (load balancers) and, unless
//! configured otherwise, `/metrics` (scrapers). A refused request gets 401 (HTTP) or
//! `UNAUTHENTICATED` (gRPC); the presented token is never logged.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::tokens::TokenRegistry;
use super::Caller;

/// What the layer needs.
pub struct AuthSettings {
    pub tokens: Arc<TokenRegistry>,
    pub open_metrics: bool,
    pub node_id: u64,
    /// Refusals since the last one logged (so a scanner cannot flood the log).
    suppressed: AtomicU64,
    last_logged_ms: AtomicI64,
}

impl AuthSettings {
    pub fn new(tokens: Arc<TokenRegistry>, open_metrics: bool, node_id: u64) -> Self {
        Self {
            tokens,
            open_metrics,
            node_id,
            suppressed: AtomicU64::new(0),
            last_logged_ms: AtomicI64::new(0),
        }
    }

    /// Whether `path` answers without a token.
    pub fn is_open(&self, path: &str) -> bool {
        matches!(path, "/api/health" | "/health/primary" | "/health/replica")
            || crate::api::ui::is_asset(path)
            || (self.open_metrics && path == "/metrics")
    }

    /// Logs a refusal at most once a second, with how many were not logged.
    fn note_refusal(&self, from: &str, path: &str, why: &str) {
        let now = crate::unix_millis_now();
        let last = self.last_logged_ms.load(Ordering::Relaxed);
        if now - last >= 1000
            && self.last_logged_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            let path: String = path.chars().take(120).collect();
            tracing::warn!(%from, %path, reason = why, suppressed, "request refused: not authenticated");
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The bearer token of `headers`, if the request has one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn authenticate(
    State(settings): State<Arc<AuthSettings>>,
    mut request: Request,
    next: Next,
) -> Response {
    if settings.is_open(request.uri().path()) {
        return next.run(request).await;
    }
    let from = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_else(|| "unknown".into());
    let grpc = is_grpc(request.headers());
    let identity = match bearer(request.headers()) {
        Some(token) => settings.tokens.verify(token).ok_or("the token is not valid"),
        None if settings.tokens.is_disabled() => Ok(crate::auth::Identity::anonymous_admin()),
        None => Err("no bearer token"),
    };
    match identity {
        Ok(identity) => {
            request.extensions_mut().insert(Caller { identity, from, peer: settings.node_id });
            next.run(request).await
        }
        Err(why) => {
            settings.note_refusal(&from, request.uri().path(), why);
            let message = format!("{why}: send `authorization: Bearer <token>`");
            if grpc {
                tonic::Status::unauthenticated(message).into_http::<axum::body::Body>()
            } else {
                let mut response =
                    (StatusCode::UNAUTHORIZED, Json(serde_json::json!({ "error": message }))).into_response();
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
                response
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_and_open_paths() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer orch_x".parse().unwrap());
        assert_eq!(bearer(&h), Some("orch_x"));
        h.insert(header::AUTHORIZATION, "basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        let s = AuthSettings::new(Arc::new(TokenRegistry::disabled()), true, 1);
        for open in ["/", "/api/health", "/health/primary", "/health/replica", "/metrics"] {
            assert!(s.is_open(open), "{open}");
        }
        for closed in
            ["/api/clusters", "/orchestrator.v1.Orchestrator/Status", "/api/raft-state", "/index.html"]
        {
            assert!(!s.is_open(closed), "{closed}");
        }
        let closed_metrics = AuthSettings::new(Arc::new(TokenRegistry::disabled()), false, 1);
        assert!(!closed_metrics.is_open("/metrics"));
    }
}
