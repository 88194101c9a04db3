//! The operators' dashboard: `GET /dashboard` (one static page, no data in
//! it, so it needs no token; it asks for one and sends it with every call)
//! and the JSON admin API it calls, behind the bearer token like every
//! route: queues with counts, jobs by kind and status, one job with its
//! payload (secrets redacted), attempts and errors, workers and their
//! heartbeats, retry or kill a job, retry every dead job of a kind.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

use crate::api_tokens::TokenName;
use crate::audit::{self, action};
use crate::catalogue::Catalogue;
use crate::http::ApiState;
use crate::job::{JobFilter, JobRecord, JobStatus};
use crate::queue::AdminOutcome;

const PAGE: &str = include_str!("dashboard.html");
const SCRIPT: &str = include_str!("dashboard.js");
const STYLE: &str = include_str!("dashboard.css");

/// The page loads its script and style from this server only: nothing
/// inline runs, so an injected `<script>` or `onclick=` cannot.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// The operators' dashboard: a static page that asks for a token.
#[utoipa::path(get, path = "/dashboard", tag = "dashboard",
    responses((status = 200, description = "the page", content_type = "text/html", body = String), (status = "default", description = "an error", body = crate::http::ErrorBody)))]
pub async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

#[utoipa::path(get, path = "/dashboard.js", tag = "dashboard",
    responses((status = 200, description = "the page's script", content_type = "text/javascript", body = String), (status = "default", description = "an error", body = crate::http::ErrorBody)))]
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

#[utoipa::path(get, path = "/dashboard.css", tag = "dashboard",
    responses((status = 200, description = "the page's style", content_type = "text/css", body = String), (status = "default", description = "an error", body = crate::http::ErrorBody)))]
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    crate::http::error(status, code, &message.into())
}

fn queue_error(e: crate::queue::QueueError) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "queue", e.to_string())
}

fn redacted(mut job: JobRecord) -> JobRecord {
    Catalogue::product().redact(&job.kind, &mut job.payload);
    job
}

#[utoipa::path(get, path = "/v1/admin/queues", tag = "admin", security(("bearer" = [])),
    responses((status = 200, description = "counts per kind and status, oldest waiting job", body = Vec<Object>), (status = "default", description = "an error", body = crate::http::ErrorBody)))]
pub async fn queues(State(state): State<ApiState>) -> Response {
    match crate::queue::counts_and_pauses(state.queue()).await {
        Ok(c) => Json(c).into_response(),
        Err(e) => queue_error(e),
    }
}

#[utoipa::path(get, path = "/v1/admin/waiting-by-firm", tag = "admin", security(("bearer" = [])),
    responses((status = 200, description = "the 20 firms with the most jobs due now and not yet fetched, interactive and bulk", body = Vec<Object>), (status = "default", description = "an error", body = crate::http::ErrorBody)))]
pub async fn waiting_by_firm(State(state): State<ApiState>) -> Response {
    match state.queue().waiting_by_group(20).await {
        Ok(w) => Json(w).into_response(),
        Err(e) => queue_error(e),
    }
}

#[utoipa::path(get, path = "/v1/admin/workers", tag = "admin", security(("bearer" = [])),
    responses((status = 200, description = "worker processes and their heartbeats", body = Vec<Object>), (status = "default", description = "an error", body = crate::http::ErrorBody)))]
pub async fn workers(State(state): State<ApiState>) -> Response {
    match state.queue().workers().await {
        Ok(w) => Json(w).into_response(),
        Err(e) => queue_error(e),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    /// Only jobs of this kind.
    kind: Option<String>,
    /// pending, scheduled, running, retrying, done or dead.
    status: Option<String>,
    /// Only this firm's jobs.
    firm: Option<String>,
    /// Only this client's jobs (its id).
    client: Option<String>,
    /// Only the jobs of this trace id.
    trace: Option<String>,
    /// Only jobs whose last error contains this text (ASCII letters in any case).
    error: Option<String>,
    /// At most this many (1 to 500; 50).
    limit: Option<usize>,
}

/// Which jobs a bulk action acts on: the filters of `GET /v1/admin/jobs`.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkFilter {
    kind: Option<String>,
    status: Option<String>,
    firm: Option<String>,
    client: Option<String>,
    trace: Option<String>,
    error: Option<String>,
}

impl From<JobsQuery> for BulkFilter {
    fn from(q: JobsQuery) -> Self {
        BulkFilter {
            kind: q.kind,
            status: q.status,
            firm: q.firm,
            client: q.client,
            trace: q.trace,
            error: q.error,
        }
    }
}

/// The filter a query or body names; a blank field matches anything (the
/// page's empty inputs), an unknown status is refused (400).
fn filter_of(f: BulkFilter, limit: usize) -> Result<JobFilter, Box<Response>> {
    let given = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let status = match given(f.status) {
        None => None,
        Some(s) => match JobStatus::parse(&s) {
            Some(s) => Some(s),
            None => {
                return Err(Box::new(error(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!(
                        "status {s:?}: use pending, scheduled, running, retrying, done or dead"
                    ),
                )));
            }
        },
    };
    let filter = JobFilter {
        kind: given(f.kind),
        status,
        group: given(f.firm),
        subject: given(f.client),
        trace_id: given(f.trace),
        error: given(f.error),
        limit,
    };
    crate::bulk::check_text(&filter)
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, "invalid", e.to_string())))?;
    Ok(filter)
}

#[utoipa::path(get, path = "/v1/admin/jobs", tag = "admin", security(("bearer" = [])),
    params(JobsQuery),
    responses((status = 200, description = "jobs, newest first (payloads redacted)", body = Vec<Object>),
        (status = 400, description = "an unknown status, or a filter with control characters", body = crate::http::ErrorBody), (status = "default", description = "an error", body = crate::http::ErrorBody)))]
pub async fn jobs(State(state): State<ApiState>, Query(q): Query<JobsQuery>) -> Response {
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let filter = match filter_of(q.into(), limit) {
        Ok(f) => f,
        Err(refusal) => return *refusal,
    };
    match state.queue().list(&filter).await {
        Ok(list) => Json(list.into_iter().map(redacted).collect::<Vec<_>>()).into_response(),
        Err(e) => queue_error(e),
    }
}

#[utoipa::path(get, path = "/v1/admin/jobs/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "the job's id")),
    responses((status = 200, description = "one job: payload (redacted), attempts and errors, result", body = Object),
        (status = 404, description = "no such job", body = crate::http::ErrorBody), (status = "default", description = "an error", body = crate::http::ErrorBody)))]
pub async fn job(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    if !crate::http::plausible_id(&id) {
        return error(StatusCode::NOT_FOUND, "not_found", "no such job");
    }
    match state.queue().get(&id).await {
        Ok(Some(j)) => Json(redacted(j)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "not_found", format!("no job {id}")),
        Err(e) => queue_error(e),
    }
}

/// `POST /v1/admin/jobs/bulk`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    /// `retry`, `kill` or `reschedule`.
    action: String,
    filter: BulkFilter,
    /// With `kill`: why (kept as the jobs' last error).
    reason: Option<String>,
    /// With `reschedule`: `now`, a delay ahead (30m, 12h, 2d), a date or an RFC 3339 time.
    run_at: Option<String>,
    /// Count what would change; change nothing.
    #[serde(default)]
    dry_run: bool,
}

#[utoipa::path(post, path = "/v1/admin/jobs/bulk", tag = "admin", security(("bearer" = [])),
    request_body(content = BulkBody, description = "what to do to which jobs"),
    responses((status = 200, description = "what matched and what changed (a dry run changes nothing)", body = Object),
        (status = 400, description = "an unknown status, or a filter with control characters", body = crate::http::ErrorBody),
        (status = 422, description = "no filter, an unknown kind or action, a bad time", body = crate::http::ErrorBody), (status = "default", description = "an error", body = crate::http::ErrorBody)))]
pub async fn bulk(
    State(state): State<ApiState>,
    Extension(who): Extension<TokenName>,
    body: Option<Json<BulkBody>>,
) -> Response {
    use crate::bulk::{Action, BulkError};
    let invalid = |m: String| error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m);
    let Some(Json(body)) = body else {
        return invalid(
            "send {\"action\": \"retry\"|\"kill\"|\"reschedule\", \"filter\": {…}, \"dry_run\": true}".into(),
        );
    };
    let action = match body.action.as_str() {
        "retry" => Action::Retry,
        "kill" => {
            let reason = body
                .reason
                .filter(|r| !r.trim().is_empty())
                .unwrap_or_else(|| "killed by an operator".into());
            if let Err(e) = crate::text::check(&reason, crate::text::MAX_TEXT) {
                return invalid(format!("reason: {e}"));
            }
            Action::Kill { reason }
        }
        "reschedule" => match body.run_at.as_deref().map(crate::bulk::parse_run_at) {
            Some(Ok(run_at_ms)) => Action::Reschedule { run_at_ms },
            Some(Err(e)) => return invalid(e.to_string()),
            None => return invalid("run_at: give the new run time".into()),
        },
        other => {
            return invalid(format!(
                "action {:?}: use retry, kill or reschedule",
                other.chars().take(40).collect::<String>()
            ));
        }
    };
    let filter = match filter_of(body.filter, crate::bulk::MAX_BULK) {
        Ok(f) => f,
        Err(refusal) => return *refusal,
    };
    match crate::bulk::run(state.queue(), &filter, &action, body.dry_run).await {
        Ok(report) => {
            if !report.dry_run {
                let mut detail = serde_json::to_value(&report).unwrap_or_default();
                detail.as_object_mut().map(|d| d.remove("dry_run"));
                match &action {
                    Action::Kill { reason } => detail["reason"] = reason.clone().into(),
                    Action::Reschedule { run_at_ms } => detail["run_at_ms"] = (*run_at_ms).into(),
                    Action::Retry => {}
                }
                audit::note(
                    &state.db,
                    &audit::api_actor(&who),
                    action.audit_action(),
                    &crate::bulk::describe(&filter),
                    detail,
                )
                .await;
            }
            Json(report).into_response()
        }
        Err(BulkError::Queue(e)) => queue_error(e),
        Err(e) => invalid(e.to_string()),
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

#[utoipa::path(post, path = "/v1/admin/jobs/{id}/retry", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "the job's id")),
    responses((status = 200, description = "the job runs now", body = Object),
        (status = 404, description = "no such job", body = crate::http::ErrorBody),
        (status = 409, description = "the job cannot be retried in its state", body = crate::http::ErrorBody), (status = "default", description = "an error", body = crate::http::ErrorBody)))]
pub async fn retry(
    State(state): State<ApiState>,
    Extension(who): Extension<TokenName>,
    Path(id): Path<String>,
) -> Response {
    if !crate::http::plausible_id(&id) {
        return error(StatusCode::NOT_FOUND, "not_found", "no such job");
    }
    match state.queue().retry(&id).await {
        Ok(o) => {
            tracing::info!(job_id = %id, "retried from the dashboard");
            if o == AdminOutcome::Applied {
                audit::note(
                    &state.db,
                    &audit::api_actor(&who),
                    action::JOB_RETRY,
                    &id,
                    serde_json::json!({}),
                )
                .await;
            }
            outcome(&id, "retried", o)
        }
        Err(e) => queue_error(e),
    }
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KillBody {
    reason: Option<String>,
}

#[utoipa::path(post, path = "/v1/admin/jobs/{id}/kill", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "the job's id")),
    request_body(content = Option<KillBody>, description = "why (shown with the dead job)"),
    responses((status = 200, description = "the job is dead", body = Object),
        (status = 404, description = "no such job", body = crate::http::ErrorBody),
        (status = 409, description = "the job cannot be killed in its state", body = crate::http::ErrorBody), (status = "default", description = "an error", body = crate::http::ErrorBody)))]
pub async fn kill(
    State(state): State<ApiState>,
    Extension(who): Extension<TokenName>,
    Path(id): Path<String>,
    body: Option<Json<KillBody>>,
) -> Response {
    if !crate::http::plausible_id(&id) {
        return error(StatusCode::NOT_FOUND, "not_found", "no such job");
    }
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
            if o == AdminOutcome::Applied {
                audit::note(
                    &state.db,
                    &audit::api_actor(&who),
                    action::JOB_KILL,
                    &id,
                    serde_json::json!({ "reason": reason }),
                )
                .await;
            }
            outcome(&id, "killed", o)
        }
        Err(e) => queue_error(e),
    }
}

#[utoipa::path(post, path = "/v1/admin/queues/{kind}/retry-dead", tag = "admin", security(("bearer" = [])),
    params(("kind" = String, Path, description = "a job kind")),
    responses((status = 200, description = "how many dead jobs of the kind were retried", body = Object), (status = "default", description = "an error", body = crate::http::ErrorBody)))]
pub async fn retry_dead(
    State(state): State<ApiState>,
    Extension(who): Extension<TokenName>,
    Path(kind): Path<String>,
) -> Response {
    if !crate::http::plausible_id(&kind) {
        return error(StatusCode::NOT_FOUND, "not_found", "no such kind");
    }
    match state.queue().retry_all_dead(Some(&kind)).await {
        Ok(n) => {
            tracing::info!(%kind, jobs = n, "dead jobs retried from the dashboard");
            audit::note(
                &state.db,
                &audit::api_actor(&who),
                action::DEAD_RETRY,
                &format!("dead jobs of {kind}"),
                serde_json::json!({ "retried": n }),
            )
            .await;
            Json(serde_json::json!({ "kind": kind, "retried": n })).into_response()
        }
        Err(e) => queue_error(e),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseBody {
    /// Why (shown in `dossier queues`, the dashboard and the metrics).
    reason: Option<String>,
}

fn pause_error(e: crate::controls::PauseError) -> Response {
    use crate::controls::PauseError;
    match e {
        PauseError::Kind(e) => error(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        PauseError::Reason(_) | PauseError::Concurrency(_) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string())
        }
        PauseError::Queue(e) => queue_error(e),
    }
}

#[utoipa::path(post, path = "/v1/admin/queues/{kind}/pause", tag = "admin", security(("bearer" = [])),
    params(("kind" = String, Path, description = "a job kind")),
    request_body(content = Option<PauseBody>, description = "why"),
    responses((status = 200, description = "paused (`changed` false: it was paused already, the first pause stays); no worker fetches the kind within a second", body = Object),
        (status = 404, description = "no such kind", body = crate::http::ErrorBody), (status = "default", description = "an error", body = crate::http::ErrorBody)))]
pub async fn pause(
    State(state): State<ApiState>,
    Extension(who): Extension<TokenName>,
    Path(kind): Path<String>,
    body: Option<Json<PauseBody>>,
) -> Response {
    let reason = body.and_then(|b| b.0.reason).unwrap_or_default();
    let actor = audit::api_actor(&who);
    match crate::controls::pause(state.queue(), &kind, &reason, &actor).await {
        Ok(changed) => {
            tracing::info!(%kind, "kind paused from the admin API");
            if changed {
                audit::note(
                    &state.db,
                    &actor,
                    action::QUEUE_PAUSE,
                    &kind,
                    serde_json::json!({ "reason": reason }),
                )
                .await;
            }
            Json(serde_json::json!({ "kind": kind, "paused": true, "changed": changed }))
                .into_response()
        }
        Err(e) => pause_error(e),
    }
}

#[utoipa::path(post, path = "/v1/admin/queues/{kind}/resume", tag = "admin", security(("bearer" = [])),
    params(("kind" = String, Path, description = "a job kind")),
    responses((status = 200, description = "resumed (`changed` false: it was not paused)", body = Object),
        (status = 404, description = "no such kind", body = crate::http::ErrorBody), (status = "default", description = "an error", body = crate::http::ErrorBody)))]
pub async fn resume(
    State(state): State<ApiState>,
    Extension(who): Extension<TokenName>,
    Path(kind): Path<String>,
) -> Response {
    match crate::controls::resume(state.queue(), &kind).await {
        Ok(changed) => {
            tracing::info!(%kind, "kind resumed from the admin API");
            if changed {
                audit::note(
                    &state.db,
                    &audit::api_actor(&who),
                    action::QUEUE_RESUME,
                    &kind,
                    serde_json::json!({}),
                )
                .await;
            }
            Json(serde_json::json!({ "kind": kind, "paused": false, "changed": changed }))
                .into_response()
        }
        Err(e) => pause_error(e),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries since: 7d, 12h, a date (2026-12-01) or an RFC 3339 time.
    since: Option<String>,
    /// At most this many (1 to 1,000; 100).
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", security(("bearer" = [])),
    params(AuditQuery),
    responses((status = 200, description = "operators' actions, newest first: who, what, when, on what", body = Vec<Object>),
        (status = 400, description = "an unreadable `since`", body = crate::http::ErrorBody), (status = "default", description = "an error", body = crate::http::ErrorBody)))]
pub async fn audit_trail(State(state): State<ApiState>, Query(q): Query<AuditQuery>) -> Response {
    let since = match q
        .since
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(audit::parse_since)
    {
        None => None,
        Some(Ok(ms)) => Some(ms),
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, "invalid", e.to_string()),
    };
    match audit::list(&state.db, since, q.limit.unwrap_or(100).clamp(1, 1_000)).await {
        Ok(entries) => Json(entries).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "reading the audit trail failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the audit trail cannot be read now",
            )
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleBody {
    /// Slots per worker (1 to 1,024); null: back to each worker's configured concurrency.
    concurrency: Option<u32>,
}

#[utoipa::path(post, path = "/v1/admin/queues/{kind}/scale", tag = "admin", security(("bearer" = [])),
    params(("kind" = String, Path, description = "a job kind")),
    request_body(content = ScaleBody, description = "the kind's slots per worker"),
    responses((status = 200, description = "every worker applies it within a second, and after restarts", body = Object),
        (status = 404, description = "no such kind", body = crate::http::ErrorBody),
        (status = 422, description = "a concurrency out of bounds", body = crate::http::ErrorBody), (status = "default", description = "an error", body = crate::http::ErrorBody)))]
pub async fn scale(
    State(state): State<ApiState>,
    Extension(who): Extension<TokenName>,
    Path(kind): Path<String>,
    body: Option<Json<ScaleBody>>,
) -> Response {
    let Some(Json(body)) = body else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "send {\"concurrency\": N} (1 to 1024), or null for the configured value",
        );
    };
    let actor = audit::api_actor(&who);
    match crate::controls::scale(state.queue(), &kind, body.concurrency, &actor).await {
        Ok(changed) => {
            tracing::info!(%kind, "kind scaled from the admin API");
            if changed {
                audit::note(
                    &state.db,
                    &actor,
                    action::QUEUE_SCALE,
                    &kind,
                    serde_json::json!({ "concurrency": body.concurrency }),
                )
                .await;
            }
            Json(serde_json::json!({ "kind": kind, "concurrency": body.concurrency, "changed": changed })).into_response()
        }
        Err(e) => pause_error(e),
    }
}
