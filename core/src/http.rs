//! The HTTP hooks `dossier-worker run` serves when `http.listen` is set.
//! Every route needs `Authorization: Bearer <token>` with one of
//! `http.tokens`; errors are JSON `{"error": code, "message": text}`.

use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::HttpSettings;
use crate::db::Database;
use crate::invitations;

/// A refused accept answers no sooner than this after the request came in,
/// whatever the reason, so timing tells nothing about why.
pub const REFUSAL_FLOOR: Duration = Duration::from_millis(300);

#[derive(Clone)]
pub struct ApiState {
    pub db: Database,
    /// SHA-256 of each accepted bearer token.
    tokens: Vec<[u8; 32]>,
}

impl ApiState {
    pub fn new(db: Database, settings: &HttpSettings) -> ApiState {
        ApiState {
            db,
            tokens: settings.tokens.iter().map(|t| digest(t.expose())).collect(),
        }
    }
}

fn digest(s: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(s.as_bytes()).into()
}

/// Equal digests, compared without an early exit.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": code, "message": message })),
    )
        .into_response()
}

async fn authenticate(
    State(state): State<ApiState>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| digest(t.trim()));
    // Every configured token is compared, match or not.
    let ok = presented.is_some_and(|p| {
        state
            .tokens
            .iter()
            .fold(false, |found, t| same(&p, t) | found)
    });
    if ok {
        next.run(req).await
    } else {
        error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <token> with a token from http.tokens",
        )
    }
}

#[derive(Deserialize)]
struct AcceptRequest {
    token: String,
}

async fn accept(State(state): State<ApiState>, body: axum::body::Bytes) -> Response {
    let started = Instant::now();
    // A malformed body is refused like any bad token: no different answer.
    let token = serde_json::from_slice::<AcceptRequest>(&body)
        .map(|b| b.token)
        .unwrap_or_default();
    match invitations::accept(&state.db, token.trim()).await {
        Ok(Some(inv)) => Json(serde_json::json!({
            "invitation_id": inv.id,
            "client_id": inv.client_id,
            "email": inv.email,
            "first_name": inv.first_name,
            "last_name": inv.last_name,
            "role": inv.role,
            "themes": inv.themes,
            "accepted_at_ms": inv.accepted_at_ms,
        }))
        .into_response(),
        Ok(None) => {
            tokio::time::sleep(REFUSAL_FLOOR.saturating_sub(started.elapsed())).await;
            error(
                StatusCode::NOT_FOUND,
                "invitation_invalid",
                "this invitation link is not valid: unknown, expired, revoked or already used",
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "accepting an invitation failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the service cannot answer now; try again shortly",
            )
        }
    }
}

pub fn router(state: ApiState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/invitations/accept", post(accept))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// Serves until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}
