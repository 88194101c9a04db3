//! The operators' dashboard: `GET /dashboard` (one static page, no data in
//! it, so it needs no token; it asks for one and sends it with every call)
//! and the JSON admin API it calls, behind the bearer token like every
//! route: queues with counts, jobs by kind and status, one job with its
//! payload (secrets redacted), attempts and errors, workers and their
//! heartbeats, retry or kill a job, retry every dead job of a kind.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::catalogue::Catalogue;
use crate::http::ApiState;
use crate::job::{JobFilter, JobRecord, JobStatus};
use crate::queue::AdminOutcome;

const PAGE: &str = include_str!("dashboard.html");

pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // The page runs its own script only and is never framed.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        PAGE,
    )
        .into_response()
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": code, "message": message.into() })),
    )
        .into_response()
}

fn queue_error(e: crate::queue::QueueError) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "queue", e.to_string())
}

fn redacted(mut job: JobRecord) -> JobRecord {
    Catalogue::product().redact(&job.kind, &mut job.payload);
    job
}

pub async fn queues(State(state): State<ApiState>) -> Response {
    match state.queue().counts().await {
        Ok(c) => Json(c).into_response(),
        Err(e) => queue_error(e),
    }
}

pub async fn workers(State(state): State<ApiState>) -> Response {
    match state.queue().workers().await {
        Ok(w) => Json(w).into_response(),
        Err(e) => queue_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    kind: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
}

pub async fn jobs(State(state): State<ApiState>, Query(q): Query<JobsQuery>) -> Response {
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match JobStatus::parse(s) {
            Some(s) => Some(s),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!(
                        "status {s:?}: use pending, scheduled, running, retrying, done or dead"
                    ),
                );
            }
        },
    };
    let filter = JobFilter {
        kind: q.kind.filter(|k| !k.is_empty()),
        status,
        limit: q.limit.unwrap_or(50).clamp(1, 500),
    };
    match state.queue().list(&filter).await {
        Ok(list) => Json(list.into_iter().map(redacted).collect::<Vec<_>>()).into_response(),
        Err(e) => queue_error(e),
    }
}

pub async fn job(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    match state.queue().get(&id).await {
        Ok(Some(j)) => Json(redacted(j)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "not_found", format!("no job {id}")),
        Err(e) => queue_error(e),
    }
}

fn outcome(id: &str, what: &str, o: AdminOutcome) -> Response {
    match o {
        AdminOutcome::Applied => {
            Json(serde_json::json!({ "id": id, "done": what })).into_response()
        }
        AdminOutcome::NotFound => error(StatusCode::NOT_FOUND, "not_found", format!("no job {id}")),
        AdminOutcome::Refused(s) => error(
            StatusCode::CONFLICT,
            "refused",
            format!("job {id} is {}: it cannot be {what}", s.as_str()),
        ),
    }
}

pub async fn retry(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    match state.queue().retry(&id).await {
        Ok(o) => {
            tracing::info!(job_id = %id, "retried from the dashboard");
            outcome(&id, "retried", o)
        }
        Err(e) => queue_error(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KillBody {
    reason: Option<String>,
}

pub async fn kill(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Option<Json<KillBody>>,
) -> Response {
    let reason = body
        .and_then(|b| b.0.reason)
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "killed from the dashboard".into());
    let reason: String = reason
        .chars()
        .filter(|c| !c.is_control())
        .take(500)
        .collect();
    match state.queue().kill(&id, &reason).await {
        Ok(o) => {
            tracing::info!(job_id = %id, "killed from the dashboard");
            outcome(&id, "killed", o)
        }
        Err(e) => queue_error(e),
    }
}

pub async fn retry_dead(State(state): State<ApiState>, Path(kind): Path<String>) -> Response {
    match state.queue().retry_all_dead(Some(&kind)).await {
        Ok(n) => {
            tracing::info!(%kind, jobs = n, "dead jobs retried from the dashboard");
            Json(serde_json::json!({ "kind": kind, "retried": n })).into_response()
        }
        Err(e) => queue_error(e),
    }
}
