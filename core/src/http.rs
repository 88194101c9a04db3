//! The HTTP hooks `dossier-worker run` serves when `http.listen` is set.
//! Every route but `/healthz`, `/readyz`, `/openapi.json` and the
//! dashboard's static files needs `Authorization: Bearer <token>`: one of
//! `http.tokens` or an admin token (platform-wide, every route), or a
//! firm's token from `dossier token create` ([`crate::api_tokens`]), which
//! reaches the hooks only ([`Auth`]) and sees its own firm only: another
//! firm's client answers 404, exactly like one that does not exist. Errors are
//! JSON `{"error": code, "message": text}`, with `"problems": [{"pointer":
//! "/director/email", "message": …}]` when a request is refused for its
//! content. The routes are described in [`openapi`].

use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use axum::extract::Path;
use axum::routing::get;

use crate::api_tokens::{self, Access, AuthError, Refusal, TokenName};
use crate::catalogue::Subject;
use crate::config::Settings;
use crate::db::{Database, on_pool};
use crate::invitations;
use crate::onboarding::{self, AppChoice, ClientForm, Director, OnboardingError, RequestKey};
use crate::queue::QueueBackend;
use crate::secrets::KeyRing;

/// A refused accept answers no sooner than this after the request came in,
/// whatever the reason, so timing tells nothing about why.
pub const REFUSAL_FLOOR: Duration = Duration::from_millis(300);

#[derive(Clone)]
pub struct ApiState {
    pub db: Database,
    queue: Arc<dyn QueueBackend>,
    settings: Arc<Settings>,
    keys: KeyRing,
    /// SHA-256 of each accepted bearer token.
    tokens: Vec<[u8; 32]>,
    /// When each wrong invitation token of the last minute came, per caller.
    accept_failures: Arc<std::sync::Mutex<AcceptFailures>>,
}

impl ApiState {
    pub(crate) fn queue(&self) -> &dyn QueueBackend {
        self.queue.as_ref()
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    pub(crate) fn keys(&self) -> &KeyRing {
        &self.keys
    }

    pub fn new(
        db: Database,
        queue: Arc<dyn QueueBackend>,
        settings: &Settings,
    ) -> Result<ApiState, crate::secrets::SecretError> {
        Ok(ApiState {
            db,
            queue,
            keys: KeyRing::new(&settings.apps.encryption_keys)?,
            tokens: settings
                .http
                .tokens
                .iter()
                .map(|t| digest(t.expose()))
                .collect(),
            settings: Arc::new(settings.clone()),
            accept_failures: Arc::default(),
        })
    }

    /// How long `caller` must wait before trying another invitation token,
    /// when its last minute's wrong ones used up the budget.
    fn accept_throttled(&self, caller: &Caller) -> Option<Duration> {
        let mut f = self
            .accept_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let limit = self.settings.http.accept_failures_per_minute as usize;
        let key = f.bucket(caller).clone();
        let times = f.by_caller.get_mut(&key)?;
        while times.front().is_some_and(|t| t.elapsed() >= ACCEPT_WINDOW) {
            times.pop_front();
        }
        (times.len() >= limit).then(|| {
            times
                .front()
                .map_or(ACCEPT_WINDOW, |t| ACCEPT_WINDOW.saturating_sub(t.elapsed()))
        })
    }

    fn accept_failed(&self, caller: &Caller) {
        let mut f = self
            .accept_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        f.record(caller);
    }
}

/// Who tries an invitation token: the end user the platform names in
/// `X-Dossier-End-User` (its address or id), else the connection's peer
/// address. Kept as a digest: the throttle holds no personal data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Caller([u8; 32]);

const END_USER_HEADER: &str = "x-dossier-end-user";

impl Caller {
    fn of(headers: &HeaderMap, peer: Option<std::net::SocketAddr>) -> Caller {
        let named = headers
            .get(END_USER_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty());
        match (named, peer) {
            (Some(user), _) => Caller(digest(&format!("user:{user}"))),
            (None, Some(addr)) => Caller(digest(&format!("peer:{}", addr.ip()))),
            (None, None) => Caller(digest("unknown")),
        }
    }
}

/// The wrong tokens of the last minute, per caller. At most
/// [`MAX_CALLERS`] callers are kept apart; past that (a flood of made-up
/// end users), new callers share one bucket, so memory stays bounded and
/// the flood throttles itself, not the known callers.
#[derive(Default)]
struct AcceptFailures {
    by_caller: std::collections::HashMap<Caller, std::collections::VecDeque<Instant>>,
}

const MAX_CALLERS: usize = 10_000;

impl AcceptFailures {
    const OVERFLOW: Caller = Caller([0; 32]);

    fn bucket<'a>(&self, caller: &'a Caller) -> &'a Caller {
        if self.by_caller.contains_key(caller) || self.by_caller.len() < MAX_CALLERS {
            caller
        } else {
            &Self::OVERFLOW
        }
    }

    fn record(&mut self, caller: &Caller) {
        if !self.by_caller.contains_key(caller) && self.by_caller.len() >= MAX_CALLERS {
            self.by_caller
                .retain(|_, times| times.back().is_some_and(|t| t.elapsed() < ACCEPT_WINDOW));
        }
        let key = self.bucket(caller).clone();
        self.by_caller
            .entry(key)
            .or_default()
            .push_back(Instant::now());
    }
}

const ACCEPT_WINDOW: Duration = Duration::from_secs(60);

fn digest(s: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(s.as_bytes()).into()
}

/// Equal digests, compared without an early exit.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Every error answer of the hooks, the framework's own included (see
/// [`json_errors`]): a stable code for programs, a sentence for people,
/// and for refused forms each problem with the JSON pointer it concerns.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// `invalid`, `unauthorized`, `not_found`, `unavailable`…
    pub error: String,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<ProblemOut>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ProblemOut {
    /// JSON pointer into the request body (`/director/email`), or empty.
    pub pointer: String,
    pub message: String,
}

pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(ErrorBody {
            error: code.to_string(),
            message: message.to_string(),
            problems: Vec::new(),
        }),
    )
        .into_response()
}

/// Answers the framework gives on its own (an unknown route's 404, a wrong
/// method's 405, a body over the limit's 413, a query it cannot parse's
/// 400) have no JSON body: they get the documented one.
async fn json_errors(req: Request, next: Next) -> Response {
    let answer = next.run(req).await;
    let status = answer.status();
    let is_json = answer
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return answer;
    }
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such route: see /openapi.json"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this route does not take this method: see /openapi.json",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("too_large", "the body is over http.max_body_bytes"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "send application/json"),
        StatusCode::BAD_REQUEST => (
            "bad_request",
            "the request could not be read (query or path parameters)",
        ),
        s if s.is_server_error() => (
            "unavailable",
            "the service cannot answer now; try again shortly",
        ),
        _ => ("invalid", "the request was refused"),
    };
    let mut replaced = error(status, code, message);
    for (name, value) in answer.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            replaced.headers_mut().insert(name.clone(), value.clone());
        }
    }
    replaced
}

/// Ids in paths are ours (UUIDs, kind names): anything else is a 404
/// before any query, so that a NUL or a 10,000-character id never reaches
/// a database.
pub(crate) fn plausible_id(id: &str) -> bool {
    (1..=100).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Longest bearer token looked at; anything longer is refused unread.
const MAX_BEARER: usize = 256;

async fn authenticate(
    State(state): State<ApiState>,
    headers: HeaderMap,
    mut req: Request,
    next: Next,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= MAX_BEARER);
    let access = match presented {
        None => Err(AuthError::Refused(Refusal::Unknown)),
        Some(token) => {
            // Every configured token is compared, match or not.
            let d = digest(token);
            let configured = state
                .tokens
                .iter()
                .fold(false, |found, t| same(&d, t) | found);
            if configured {
                Ok((Access::Platform, TokenName("http.tokens".into())))
            } else {
                api_tokens::authenticate(&state.db, token).await
            }
        }
    };
    match access {
        Ok((access, name)) => {
            req.extensions_mut().insert(access);
            req.extensions_mut().insert(name);
            // Background work of this process gives way while it is answered.
            let _in_flight = crate::interactive::begin();
            next.run(req).await
        }
        Err(AuthError::Refused(why)) => {
            error(StatusCode::UNAUTHORIZED, "unauthorized", &why.to_string())
        }
        Err(AuthError::Db(e)) => {
            // A token that cannot be checked is not taken for a bad one.
            tracing::error!(error = %e, "checking an API token failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the service cannot check tokens now; try again shortly",
            )
        }
    }
}

/// The admin routes: platform-wide callers only.
async fn admin_only(req: Request, next: Next) -> Response {
    match req.extensions().get::<Access>() {
        Some(Access::Platform) => next.run(req).await,
        _ => error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token is a firm's (scope hooks): /metrics, the dashboard's data and the admin API need an admin token (`dossier token create --scope admin`)",
        ),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
struct AcceptRequest {
    token: String,
}

#[utoipa::path(post, path = "/v1/invitations/accept", tag = "invitations", security(("bearer" = [])),
    request_body = AcceptRequest,
    params(("X-Dossier-End-User" = Option<String>, Header, description = "the end user trying the link (address or id): wrong tokens are throttled per end user")),
    responses((status = 200, description = "accepted (single use)", body = Object),
        (status = 404, description = "unknown, expired, revoked or used: always the same answer", body = ErrorBody),
        (status = 429, description = "too many wrong tokens from this caller in the last minute", body = ErrorBody), (status = "default", description = "an error, as every error of the hooks", body = ErrorBody)))]
async fn accept(
    State(state): State<ApiState>,
    axum::Extension(access): axum::Extension<Access>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let started = Instant::now();
    let caller = Caller::of(&headers, peer.map(|p| p.0.0));
    if let Some(wait) = state.accept_throttled(&caller) {
        let secs = wait.as_secs().max(1);
        tracing::warn!(
            "invitation accept throttled: this caller sent too many wrong tokens in the last minute"
        );
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, secs.to_string())],
            Json(serde_json::json!({
                "error": "too_many_attempts",
                "message": format!("too many invalid invitation links in the last minute; try again in {secs} s"),
            })),
        )
            .into_response();
    }
    // A malformed body is refused like any bad token: no different answer.
    let token = serde_json::from_slice::<AcceptRequest>(&body)
        .map(|b| b.token)
        .unwrap_or_default();
    match invitations::accept(&state.db, token.trim(), access.firm()).await {
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
            state.accept_failed(&caller);
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

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Anyone: health, the OpenAPI document, the dashboard's static files.
    Public,
    /// Any accepted token; a firm's token within its firm.
    Hooks,
    /// Platform-wide tokens only (configured, or scope admin).
    Admin,
}

impl Auth {
    pub fn needs_token(self) -> bool {
        self != Auth::Public
    }
}

/// Every route: (method, path, who may call it). The OpenAPI document and
/// the router are checked against this list by tests.
pub const ROUTES: &[(&str, &str, Auth)] = &[
    ("get", "/healthz", Auth::Public),
    ("get", "/readyz", Auth::Public),
    ("get", "/openapi.json", Auth::Public),
    ("post", "/v1/clients", Auth::Hooks),
    ("get", "/v1/clients/{id}", Auth::Hooks),
    ("get", "/v1/clients/{id}/export", Auth::Hooks),
    ("post", "/v1/clients/{id}/archive", Auth::Hooks),
    ("post", "/v1/clients/{id}/unarchive", Auth::Hooks),
    ("post", "/v1/clients/{id}/erase", Auth::Hooks),
    ("post", "/v1/persons/erase", Auth::Hooks),
    ("post", "/v1/jobs/{kind}", Auth::Hooks),
    ("post", "/v1/invitations/accept", Auth::Hooks),
    ("get", "/metrics", Auth::Admin),
    ("get", "/dashboard", Auth::Public),
    ("get", "/dashboard.js", Auth::Public),
    ("get", "/dashboard.css", Auth::Public),
    ("get", "/v1/admin/queues", Auth::Admin),
    ("get", "/v1/admin/workers", Auth::Admin),
    ("get", "/v1/admin/waiting-by-firm", Auth::Admin),
    ("get", "/v1/admin/jobs", Auth::Admin),
    ("get", "/v1/admin/jobs/{id}", Auth::Admin),
    ("post", "/v1/admin/jobs/bulk", Auth::Admin),
    ("post", "/v1/admin/jobs/{id}/retry", Auth::Admin),
    ("post", "/v1/admin/jobs/{id}/kill", Auth::Admin),
    ("post", "/v1/admin/queues/{kind}/retry-dead", Auth::Admin),
    ("post", "/v1/admin/queues/{kind}/pause", Auth::Admin),
    ("post", "/v1/admin/queues/{kind}/resume", Auth::Admin),
    ("post", "/v1/admin/queues/{kind}/scale", Auth::Admin),
    ("get", "/v1/admin/audit", Auth::Admin),
    ("get", "/v1/admin/webhooks", Auth::Admin),
    ("post", "/v1/admin/webhooks", Auth::Admin),
    ("delete", "/v1/admin/webhooks/{id}", Auth::Admin),
    ("post", "/v1/admin/webhooks/{id}/rotate-secret", Auth::Admin),
    ("post", "/v1/admin/webhooks/{id}/enable", Auth::Admin),
];

pub fn router(state: ApiState, max_body_bytes: usize) -> Router {
    let hooks = Router::new()
        .route("/v1/clients", post(create_client))
        .route("/v1/clients/{id}", get(get_client))
        .route("/v1/clients/{id}/export", get(export_client))
        .route("/v1/clients/{id}/archive", post(archive_client))
        .route("/v1/clients/{id}/unarchive", post(unarchive_client))
        .route("/v1/clients/{id}/erase", post(erase_client))
        .route("/v1/persons/erase", post(erase_person))
        .route("/v1/jobs/{kind}", post(enqueue))
        .route("/v1/invitations/accept", post(accept));
    let admin = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/admin/queues", get(crate::dashboard::queues))
        .route("/v1/admin/workers", get(crate::dashboard::workers))
        .route(
            "/v1/admin/waiting-by-firm",
            get(crate::dashboard::waiting_by_firm),
        )
        .route("/v1/admin/jobs", get(crate::dashboard::jobs))
        .route("/v1/admin/jobs/{id}", get(crate::dashboard::job))
        .route("/v1/admin/jobs/bulk", post(crate::dashboard::bulk))
        .route("/v1/admin/jobs/{id}/retry", post(crate::dashboard::retry))
        .route("/v1/admin/jobs/{id}/kill", post(crate::dashboard::kill))
        .route(
            "/v1/admin/queues/{kind}/retry-dead",
            post(crate::dashboard::retry_dead),
        )
        .route(
            "/v1/admin/queues/{kind}/pause",
            post(crate::dashboard::pause),
        )
        .route(
            "/v1/admin/queues/{kind}/resume",
            post(crate::dashboard::resume),
        )
        .route(
            "/v1/admin/queues/{kind}/scale",
            post(crate::dashboard::scale),
        )
        .route("/v1/admin/audit", get(crate::dashboard::audit_trail))
        .route(
            "/v1/admin/webhooks",
            get(crate::webhook_admin::list).post(crate::webhook_admin::add),
        )
        .route(
            "/v1/admin/webhooks/{id}",
            axum::routing::delete(crate::webhook_admin::remove),
        )
        .route(
            "/v1/admin/webhooks/{id}/rotate-secret",
            post(crate::webhook_admin::rotate_secret),
        )
        .route(
            "/v1/admin/webhooks/{id}/enable",
            post(crate::webhook_admin::enable),
        )
        .layer(middleware::from_fn(admin_only));
    let private = hooks
        .merge(admin)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/dashboard", get(crate::dashboard::page))
        .route("/dashboard.js", get(crate::dashboard::script))
        .route("/dashboard.css", get(crate::dashboard::style))
        .route("/openapi.json", get(openapi_json))
        .merge(private)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), time_limit))
        .layer(middleware::from_fn(json_errors))
        .with_state(state)
}

/// Each request, its body read included, within `http.request_timeout_ms`:
/// a body sent a byte a minute holds a connection slot no longer than that.
async fn time_limit(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let limit = Duration::from_millis(state.settings.http.request_timeout_ms.max(1));
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(answer) => answer,
        Err(_) => error(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request was not received and answered in time; send it again",
        ),
    }
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "alive", body = Object), (status = "default", description = "an error, as every error of the hooks", body = ErrorBody)))]
async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// Ready when the database answers with every migration applied and the
/// queue answers.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "database (migrated) and queue reachable", body = Object),
        (status = 503, description = "not ready: what is missing", body = Object), (status = "default", description = "an error, as every error of the hooks", body = ErrorBody)))]
async fn readyz(State(state): State<ApiState>) -> Response {
    let db_ok = on_pool!(&state.db, pool => sqlx::query("SELECT 1").execute(pool).await.is_ok());
    let missing = if db_ok {
        state.db.missing_migrations().await
    } else {
        0
    };
    let queue_ok = state.queue.counts().await.is_ok();
    let ready = db_ok && missing == 0 && queue_ok;
    let body = serde_json::json!({
        "database": if db_ok { "ok" } else { "unreachable" },
        "migrations_missing": missing,
        "queue": if queue_ok { "ok" } else { "unreachable" },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus scrape: this process's counters, the queue and the imports.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(("bearer" = [])),
    responses((status = 200, description = "Prometheus metrics (OpenMetrics text): jobs, queue depth, dead set, registries, SMTP, partners, imports",
        content_type = "application/openmetrics-text", body = String), (status = "default", description = "an error, as every error of the hooks", body = ErrorBody)))]
async fn metrics(State(state): State<ApiState>) -> Response {
    let body = crate::metrics::render(state.queue.as_ref(), &state.db).await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

#[utoipa::path(get, path = "/openapi.json", tag = "health",
    responses((status = 200, description = "this document", body = Object), (status = "default", description = "an error, as every error of the hooks", body = ErrorBody)))]
async fn openapi_json() -> Response {
    Json(openapi()).into_response()
}

/// At most this many problems are listed, so that a request cannot buy an
/// answer many times its own size.
pub const MAX_PROBLEMS: usize = 50;

/// A refusal listing every problem with the JSON pointer it concerns.
fn refused(problems: &[String]) -> Response {
    let mut list: Vec<ProblemOut> = problems
        .iter()
        .take(MAX_PROBLEMS)
        .map(|p| {
            let (field, message) = p.split_once(": ").unwrap_or(("", p));
            let pointer = if field.is_empty() || field.contains(' ') {
                String::new()
            } else {
                format!("/{}", field.replace('.', "/"))
            };
            ProblemOut {
                pointer,
                message: message.to_string(),
            }
        })
        .collect();
    if problems.len() > MAX_PROBLEMS {
        list.push(ProblemOut {
            pointer: String::new(),
            message: format!("and {} more problems", problems.len() - MAX_PROBLEMS),
        });
    }
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(ErrorBody {
            error: "invalid".into(),
            message: "the request was refused; nothing was created".into(),
            problems: list,
        }),
    )
        .into_response()
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ExerciceIn {
    start: Option<chrono::NaiveDate>,
    #[serde(default)]
    end: Option<chrono::NaiveDate>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DirectorIn {
    email: String,
    first_name: String,
    last_name: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AppIn {
    app_id: String,
    #[serde(default)]
    settings: std::collections::BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    on_director_portal: bool,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ClientIn {
    /// The client's firm; a firm's token may leave it out.
    #[serde(default)]
    firm_id: Option<String>,
    #[serde(default)]
    siret: Option<String>,
    #[serde(default)]
    company: crate::clients::Fields,
    exercice: ExerciceIn,
    #[serde(default)]
    tree: Option<String>,
    #[serde(default)]
    director: Option<DirectorIn>,
    #[serde(default)]
    themes: Option<Vec<String>>,
    #[serde(default = "yes")]
    invite: bool,
    #[serde(default)]
    apps: Vec<AppIn>,
    #[serde(default)]
    collaborators: Vec<String>,
}

fn yes() -> bool {
    true
}

/// Creates a client with its exercice, tree, invitation and apps; an
/// `Idempotency-Key` header makes retries safe (the first answer again).
#[utoipa::path(post, path = "/v1/clients", tag = "clients", security(("bearer" = [])),
    request_body = ClientIn,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "a retried request with the same key and body gets the first answer"),
        ("X-Trace-Id" = Option<String>, Header, description = "the caller's trace id, carried by every job of the client"),
    ),
    responses((status = 201, description = "created; its jobs are queued", body = crate::onboarding::Created),
        (status = 422, description = "refused, every problem listed; nothing was created", body = ErrorBody), (status = "default", description = "an error, as every error of the hooks", body = ErrorBody)))]
async fn create_client(
    State(state): State<ApiState>,
    axum::Extension(access): axum::Extension<Access>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let input: ClientIn = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return refused(&[format!(": the body is not a client form: {e}")]),
    };
    // A firm's token names its own firm or none; any other firm reads as
    // one that does not exist.
    let firm_id = match (access.firm(), input.firm_id) {
        (Some(own), None) => own.to_string(),
        (Some(own), Some(named)) if named == own => named,
        (Some(_), Some(named)) => {
            return refused(&[format!("firm_id: {}", crate::firms::unknown(&named))]);
        }
        (None, Some(named)) => named,
        (None, None) => {
            return refused(&[
                "firm_id: missing: give the client's firm (`dossier firm list`)".into(),
            ]);
        }
    };
    let form = ClientForm {
        firm_id: firm_id.clone(),
        siret: input.siret,
        company: input.company,
        exercice_start: input.exercice.start,
        exercice_end: input.exercice.end,
        tree: input.tree,
        director: input.director.map(|d| Director {
            email: d.email,
            first_name: d.first_name,
            last_name: d.last_name,
        }),
        themes: input.themes,
        invite: input.invite,
        apps: input
            .apps
            .into_iter()
            .map(|a| AppChoice {
                app_id: a.app_id,
                settings: a
                    .settings
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            k,
                            v.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| v.to_string()),
                        )
                    })
                    .collect(),
                on_director_portal: a.on_director_portal,
            })
            .collect(),
        collaborators: input.collaborators,
    };
    let trace_id = match crate::submit::trace_id_of(&headers) {
        Ok(t) => t,
        Err(e) => return refused(&[format!(": header X-Trace-Id / traceparent: {e}")]),
    };
    let request = headers
        .get("Idempotency-Key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.trim().is_empty())
        .map(|k| RequestKey {
            // Keys are the firm's own: another firm's key never finds
            // this firm's answer.
            key: format!("POST /v1/clients {firm_id} {}", k.trim()),
            request_hash: crate::digest::sha256_hex(&body),
        });
    // A replay is recognised when it fails: its SIRET is taken by the first
    // request's client, or its key's row exists (a unique violation, after
    // waiting for a first request still in flight to commit). Looking the
    // key up before every creation cost every first request a query.
    let result = onboarding::create_client_once(
        &state.db,
        &state.settings.queue,
        &state.keys,
        form,
        request.as_ref().map(|r| RequestKey {
            key: r.key.clone(),
            request_hash: r.request_hash.clone(),
        }),
        trace_id,
    )
    .await;
    match result {
        Ok(mut created) => {
            // Push this client's staged jobs now (the relay would, later);
            // jobs written straight into the queue's table only need this
            // process's fetchers woken.
            let staged = std::mem::take(&mut created.staged);
            if staged.is_empty() {
                for kind in &created.jobs {
                    state.queue.wakers().wake(kind);
                }
            } else if let Err(e) = crate::outbox::push_staged(
                &state.db,
                state.queue.as_ref(),
                staged,
                crate::write_gate::Lane::Interactive,
            )
            .await
            {
                tracing::warn!(error = %e, "jobs stay in the outbox for the relay");
            }
            (StatusCode::CREATED, Json(created)).into_response()
        }
        Err(OnboardingError::Invalid(problems)) => match &request {
            Some(r) => match stored_answer(&state.db, r).await {
                Some(answer) => answer,
                None => refused(&problems),
            },
            None => refused(&problems),
        },
        Err(OnboardingError::Duplicate) => match &request {
            Some(r) => stored_answer(&state.db, r).await.unwrap_or_else(|| {
                error(
                    StatusCode::CONFLICT,
                    "in_progress",
                    "the same request is being processed; retry",
                )
            }),
            None => error(StatusCode::CONFLICT, "duplicate", "duplicate request"),
        },
        Err(e) => {
            tracing::error!(error = %e, "creating a client failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the service cannot answer now; try again shortly",
            )
        }
    }
}

/// The first answer to a request with this key, or a refusal when the key
/// came with another body. A database that cannot answer is a 503: taking
/// it for "no answer stored" would run the request a second time.
async fn stored_answer(db: &Database, r: &RequestKey) -> Option<Response> {
    // `status` is an INTEGER column: 4 bytes on PostgreSQL, so it decodes
    // as i32 on both engines (an i64 here failed on PostgreSQL only, and
    // every replay there fell through to "in progress").
    let row: Result<Option<(String, i32, String)>, sqlx::Error> = on_pool!(db, pool => sqlx::query_as(
        "SELECT request_hash, status, body FROM http_requests WHERE key = $1",
    )
    .bind(&r.key)
    .fetch_optional(pool)
    .await);
    let (hash, status, body) = match row {
        Ok(row) => row?,
        Err(e) => {
            tracing::error!(error = %e, "reading a stored hook answer failed");
            return Some(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the service cannot answer now; try again shortly",
            ));
        }
    };
    if hash != r.request_hash {
        return Some(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used with another request body",
        ));
    }
    let status =
        StatusCode::from_u16(u16::try_from(status).unwrap_or(200)).unwrap_or(StatusCode::OK);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    Some((status, Json(body)).into_response())
}

#[utoipa::path(get, path = "/v1/clients/{id}", tag = "clients", security(("bearer" = [])),
    params(("id" = String, Path, description = "the client's id")),
    responses((status = 200, description = "the client with each onboarding step", body = Object),
        (status = 404, description = "no such client", body = ErrorBody), (status = "default", description = "an error, as every error of the hooks", body = ErrorBody)))]
async fn get_client(
    State(state): State<ApiState>,
    axum::Extension(access): axum::Extension<Access>,
    Path(id): Path<String>,
) -> Response {
    if !plausible_id(&id) {
        return error(StatusCode::NOT_FOUND, "not_found", "no client with this id");
    }
    match crate::clients::get(&state.db, &id).await {
        Ok(Some(client)) if access.sees(&client.firm_id) => {
            match onboarding::steps(&state.db, Some(state.queue.as_ref()), &id).await {
                Ok(steps) => Json(serde_json::json!({ "client": client, "onboarding": steps }))
                    .into_response(),
                Err(e) => {
                    tracing::error!(error = %e, "reading onboarding steps failed");
                    error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "try again shortly",
                    )
                }
            }
        }
        Ok(_) => error(StatusCode::NOT_FOUND, "not_found", "no client with this id"),
        Err(e) => {
            tracing::error!(error = %e, "reading a client failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "try again shortly",
            )
        }
    }
}

fn no_such_client() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no client with this id")
}

/// Whether the caller may act on the client: another firm's client is
/// touched by no one but an admin, and answers like a client that does not
/// exist.
async fn visible_client(state: &ApiState, access: &Access, id: &str) -> Result<(), Response> {
    if !plausible_id(id) {
        return Err(no_such_client());
    }
    match crate::clients::get(&state.db, id).await {
        Ok(Some(client)) if access.sees(&client.firm_id) => Ok(()),
        Ok(_) => Err(no_such_client()),
        Err(e) => {
            tracing::error!(error = %e, "reading a client failed");
            Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "try again shortly",
            ))
        }
    }
}

/// The firm stops working with the client (`client_archive`).
#[utoipa::path(post, path = "/v1/clients/{id}/archive", tag = "clients", security(("bearer" = [])),
    params(("id" = String, Path, description = "the client's id")),
    responses((status = 200, description = "archived (again: `already`): waiting jobs cancelled, invitations revoked, apps disabled; nothing deleted", body = Object),
        (status = 404, description = "no such client", body = ErrorBody), (status = "default", description = "an error, as every error of the hooks", body = ErrorBody)))]
async fn archive_client(
    State(state): State<ApiState>,
    axum::Extension(access): axum::Extension<Access>,
    axum::Extension(who): axum::Extension<TokenName>,
    Path(id): Path<String>,
) -> Response {
    archive_route(&state, &access, &who, &id, true).await
}

/// Undoes `archive` (`client_archive`).
#[utoipa::path(post, path = "/v1/clients/{id}/unarchive", tag = "clients", security(("bearer" = [])),
    params(("id" = String, Path, description = "the client's id")),
    responses((status = 200, description = "active again (`was_active`: it was not archived): cancelled jobs restarted, invitations sent again, apps enabled again", body = Object),
        (status = 404, description = "no such client", body = ErrorBody), (status = "default", description = "an error, as every error of the hooks", body = ErrorBody)))]
async fn unarchive_client(
    State(state): State<ApiState>,
    axum::Extension(access): axum::Extension<Access>,
    axum::Extension(who): axum::Extension<TokenName>,
    Path(id): Path<String>,
) -> Response {
    archive_route(&state, &access, &who, &id, false).await
}

/// Erases every personal datum of an archived client's people (`erasure`).
#[utoipa::path(post, path = "/v1/clients/{id}/erase", tag = "clients", security(("bearer" = [])),
    params(("id" = String, Path, description = "the client's id")),
    responses((status = 200, description = "erased (`already`: again): what was removed or replaced, per store", body = Object),
        (status = 404, description = "no such client", body = ErrorBody),
        (status = 409, description = "the client is not archived, or one of its jobs is running", body = ErrorBody),
        (status = "default", description = "an error, as every error of the hooks", body = ErrorBody)))]
async fn erase_client(
    State(state): State<ApiState>,
    axum::Extension(access): axum::Extension<Access>,
    axum::Extension(who): axum::Extension<TokenName>,
    Path(id): Path<String>,
) -> Response {
    if let Err(refused) = visible_client(&state, &access, &id).await {
        return refused;
    }
    let mail = crate::erasure::mail_dir(&state.settings);
    let done =
        crate::erasure::erase_client(&state.db, state.queue.as_ref(), mail.as_deref(), &id).await;
    match done {
        Ok(Some(done)) => {
            crate::audit::note(
                &state.db,
                &crate::audit::api_actor(&who),
                crate::audit::action::CLIENT_ERASE,
                &id,
                serde_json::to_value(&done.removed).unwrap_or_default(),
            )
            .await;
            Json(done).into_response()
        }
        Ok(None) => no_such_client(),
        Err(e) => erasure_refused(e),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PersonErase {
    email: String,
    /// Only this firm's clients; a firm's token always means its own.
    #[serde(default)]
    firm_id: Option<String>,
}

/// Erases one person's data across clients (`erasure::erase_person`).
#[utoipa::path(post, path = "/v1/persons/erase", tag = "clients", security(("bearer" = [])),
    request_body = PersonErase,
    responses((status = 200, description = "what was removed or replaced, per store", body = Object),
        (status = 400, description = "not an email address", body = ErrorBody),
        (status = "default", description = "an error, as every error of the hooks", body = ErrorBody)))]
async fn erase_person(
    State(state): State<ApiState>,
    axum::Extension(access): axum::Extension<Access>,
    axum::Extension(who): axum::Extension<TokenName>,
    body: axum::body::Bytes,
) -> Response {
    let Ok(asked) = serde_json::from_slice::<PersonErase>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "expected {\"email\": \"…\", \"firm_id\": \"…\" (optional)}",
        );
    };
    let firm = match (access.firm(), asked.firm_id.as_deref()) {
        (Some(own), Some(named)) if own != named => {
            return error(StatusCode::NOT_FOUND, "not_found", "no firm with this id");
        }
        (Some(own), _) => Some(own.to_string()),
        (None, named) => named.map(str::to_string),
    };
    let mail = crate::erasure::mail_dir(&state.settings);
    match crate::erasure::erase_person(
        &state.db,
        state.queue.as_ref(),
        mail.as_deref(),
        &asked.email,
        firm.as_deref(),
    )
    .await
    {
        Ok(done) => {
            // The trail keeps what was done, never whom for.
            let target = firm
                .as_deref()
                .map(|f| format!("a person of firm {f}"))
                .unwrap_or_else(|| "a person".into());
            crate::audit::note(
                &state.db,
                &crate::audit::api_actor(&who),
                crate::audit::action::PERSON_ERASE,
                &target,
                serde_json::to_value(&done.removed).unwrap_or_default(),
            )
            .await;
            Json(done).into_response()
        }
        Err(e) => erasure_refused(e),
    }
}

fn erasure_refused(e: crate::erasure::ErasureError) -> Response {
    use crate::erasure::ErasureError as E;
    match &e {
        E::NotArchived(_) | E::Running { .. } => {
            error(StatusCode::CONFLICT, "conflict", &e.to_string())
        }
        E::NotAnAddress => error(StatusCode::BAD_REQUEST, "invalid_body", &e.to_string()),
        _ => {
            tracing::error!(error = %e, "an erasure failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "try again shortly",
            )
        }
    }
}

/// `archive` (or, `archiving` false, `unarchive`) for a caller who sees
/// the client.
async fn archive_route(
    state: &ApiState,
    access: &Access,
    who: &TokenName,
    id: &str,
    archiving: bool,
) -> Response {
    if let Err(refused) = visible_client(state, access, id).await {
        return refused;
    }
    let (db, queue, settings) = (&state.db, state.queue.as_ref(), &state.settings.queue);
    if archiving {
        let done = crate::client_archive::archive(db, queue, settings, id).await;
        archive_answer(state, who, crate::audit::action::CLIENT_ARCHIVE, id, done).await
    } else {
        let done = crate::client_archive::unarchive(db, queue, settings, id).await;
        archive_answer(state, who, crate::audit::action::CLIENT_UNARCHIVE, id, done).await
    }
}

async fn archive_answer<T: serde::Serialize>(
    state: &ApiState,
    who: &TokenName,
    action: &str,
    id: &str,
    done: Result<Option<T>, crate::client_archive::ArchiveError>,
) -> Response {
    match done {
        Ok(Some(done)) => {
            let body = serde_json::to_value(&done).unwrap_or_default();
            crate::audit::note(
                &state.db,
                &crate::audit::api_actor(who),
                action,
                id,
                body.clone(),
            )
            .await;
            Json(body).into_response()
        }
        Ok(None) => no_such_client(),
        Err(e @ crate::client_archive::ArchiveError::Erased(_)) => {
            error(StatusCode::CONFLICT, "conflict", &e.to_string())
        }
        Err(e) => {
            tracing::error!(error = %e, action, "archiving or unarchiving a client failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "try again shortly",
            )
        }
    }
}

/// Everything held about one client and its people (`client_export`).
#[utoipa::path(get, path = "/v1/clients/{id}/export", tag = "clients", security(("bearer" = [])),
    params(("id" = String, Path, description = "the client's id")),
    responses((status = 200, description = "one JSON document: the client, exercices, folders, invitations, collaborators, apps (secrets masked), jobs, stored hook answers", body = Object),
        (status = 404, description = "no such client", body = ErrorBody), (status = "default", description = "an error, as every error of the hooks", body = ErrorBody)))]
async fn export_client(
    State(state): State<ApiState>,
    axum::Extension(access): axum::Extension<Access>,
    axum::Extension(who): axum::Extension<TokenName>,
    Path(id): Path<String>,
) -> Response {
    if let Err(refused) = visible_client(&state, &access, &id).await {
        return refused;
    }
    match crate::client_export::export(&state.db, Some(state.queue.as_ref()), &id).await {
        Ok(Some(doc)) => {
            crate::audit::note(
                &state.db,
                &crate::audit::api_actor(&who),
                crate::audit::action::CLIENT_EXPORT,
                &id,
                serde_json::json!({}),
            )
            .await;
            Json(doc).into_response()
        }
        Ok(None) => no_such_client(),
        Err(e) => {
            tracing::error!(error = %e, "exporting a client failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "try again shortly",
            )
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct EnqueueIn {
    payload: serde_json::Value,
    #[serde(default)]
    run_at: Option<String>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    trace_id: Option<String>,
}

/// What an enqueue answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct EnqueueOut {
    pub job_id: String,
    /// Whether the key found a job queued before.
    pub duplicate: bool,
}

/// The raw enqueue, with `dossier enqueue`'s validation.
/// An `Idempotency-Key` header becomes the job's key (unless the body
/// gives one): a retried request finds the first job and adds nothing.
#[utoipa::path(post, path = "/v1/jobs/{kind}", tag = "jobs", security(("bearer" = [])),
    request_body = EnqueueIn,
    params(("kind" = String, Path, description = "a job kind (`dossier kinds`)"),
        ("Idempotency-Key" = Option<String>, Header, description = "the job's key (unless the body gives one)")),
    responses((status = 202, description = "queued", body = EnqueueOut),
        (status = 200, description = "already queued under this key: the first job", body = EnqueueOut),
        (status = 422, description = "refused", body = ErrorBody), (status = "default", description = "an error, as every error of the hooks", body = ErrorBody)))]
async fn enqueue(
    State(state): State<ApiState>,
    axum::Extension(access): axum::Extension<Access>,
    axum::Extension(who): axum::Extension<TokenName>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let input: EnqueueIn = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return refused(&[format!(": the body is not an enqueue request: {e}")]),
    };
    let catalogue = crate::catalogue::Catalogue::product();
    if let (Some(firm), Some(spec)) = (access.firm(), catalogue.get(&kind))
        && let Some(refusal) =
            confined(&state.db, firm, spec.kind, spec.subject, &input.payload).await
    {
        return refusal;
    }
    let key = input.idempotency_key.or_else(|| {
        headers
            .get("Idempotency-Key")
            .and_then(|v| v.to_str().ok())
            .map(|k| k.trim().to_string())
    });
    let options = crate::submit::SubmitOptions {
        run_at: input.run_at,
        max_attempts: input.max_attempts,
        // A firm's keys are its own, like its clients.
        idempotency_key: match access.firm() {
            Some(firm) => key.map(|k| format!("firm:{firm}:{k}")),
            None => key,
        },
        trace_id: input.trace_id,
    };
    let job = match crate::submit::prepare(
        &catalogue,
        &state.settings.queue,
        &kind,
        &input.payload.to_string(),
        &options,
    ) {
        Ok(j) => j,
        Err(e) => return refused(&[format!("payload: {e}")]),
    };
    let job = match crate::owners::labelled(&state.db, job).await {
        Ok(j) => j,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the job's client");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database cannot be read now; try again shortly",
            );
        }
    };
    // Maintenance jobs touch every firm: who queued one is on record.
    let maintenance = catalogue
        .get(&kind)
        .is_some_and(|spec| spec.subject == Subject::Platform);
    let pushed = state.queue.push(job).await;
    if let (true, Ok(crate::job::PushOutcome::Created(id))) = (maintenance, &pushed) {
        crate::audit::note(
            &state.db,
            &crate::audit::api_actor(&who),
            crate::audit::action::JOB_ENQUEUE,
            id,
            serde_json::json!({ "kind": kind }),
        )
        .await;
    }
    match pushed {
        Ok(crate::job::PushOutcome::Created(id)) => (
            StatusCode::ACCEPTED,
            Json(EnqueueOut {
                job_id: id,
                duplicate: false,
            }),
        )
            .into_response(),
        Ok(crate::job::PushOutcome::Duplicate(id)) => (
            StatusCode::OK,
            Json(EnqueueOut {
                job_id: id,
                duplicate: true,
            }),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "enqueue failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the queue cannot take jobs now; try again shortly",
            )
        }
    }
}

/// Why a firm's token may not enqueue this job, if it may not: a platform
/// kind is a 403; a client or invitation of another firm, or none, a 404,
/// the answer a client that does not exist gets.
async fn confined(
    db: &Database,
    firm: &str,
    kind: &str,
    subject: Subject,
    payload: &serde_json::Value,
) -> Option<Response> {
    let named = |field: &str| {
        payload
            .get(field)
            .and_then(|v| v.as_str())
            .filter(|id| plausible_id(id))
            .map(str::to_string)
    };
    let owner: Result<Option<String>, sqlx::Error> = match subject {
        Subject::Nothing => return None,
        Subject::Platform => {
            return Some(error(
                StatusCode::FORBIDDEN,
                "forbidden",
                &format!("`{kind}` works on every firm's data: only an admin token may enqueue it"),
            ));
        }
        Subject::Client => match named("client_id") {
            None => Ok(None),
            Some(id) => on_pool!(db, pool => sqlx::query_scalar(
                "SELECT firm_id FROM clients WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await),
        },
        Subject::Invitation => match named("invitation_id") {
            None => Ok(None),
            Some(id) => on_pool!(db, pool => sqlx::query_scalar(
                "SELECT c.firm_id FROM invitations i JOIN clients c ON c.id = i.client_id WHERE i.id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await),
        },
    };
    match owner {
        Ok(Some(owner)) if owner == firm => None,
        Ok(_) => Some(error(
            StatusCode::NOT_FOUND,
            "not_found",
            match subject {
                Subject::Invitation => "no invitation with this id",
                _ => "no client with this id",
            },
        )),
        Err(e) => {
            tracing::error!(error = %e, "checking a job's subject failed");
            Some(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the service cannot answer now; try again shortly",
            ))
        }
    }
}

/// The document behind `/openapi.json`, generated from the handlers' own
/// annotations and types (utoipa): paths, parameters, request bodies and
/// the error body every answer but a success carries.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Dossier hooks", description = "Create clients, follow their onboarding, enqueue jobs, accept invitations; the operators' admin API."),
    paths(
        healthz, readyz, openapi_json, create_client, get_client, export_client, archive_client, unarchive_client, erase_client, erase_person, enqueue, accept, metrics,
        crate::dashboard::page, crate::dashboard::script, crate::dashboard::style,
        crate::dashboard::queues, crate::dashboard::workers, crate::dashboard::jobs,
        crate::dashboard::job, crate::dashboard::retry, crate::dashboard::kill,
        crate::dashboard::retry_dead, crate::dashboard::pause, crate::dashboard::resume,
        crate::dashboard::scale, crate::dashboard::audit_trail, crate::dashboard::bulk,
        crate::dashboard::waiting_by_firm,
        crate::webhook_admin::list, crate::webhook_admin::add, crate::webhook_admin::remove,
        crate::webhook_admin::rotate_secret, crate::webhook_admin::enable,
    ),
    components(schemas(ErrorBody, ProblemOut)),
    modifiers(&BearerScheme),
)]
struct ApiDoc;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI 3.1 description of [`ROUTES`].
pub fn openapi() -> serde_json::Value {
    use utoipa::OpenApi;
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    serde_json::to_value(&doc).unwrap_or_default()
}

/// Serves until `stop`, with the limits of `limits`: at most
/// `max_connections` connections at once (the others wait in the listen
/// queue, so the hooks cannot take every file descriptor from the jobs),
/// headers within `header_timeout_ms` (a half-sent request or an idle
/// kept-alive connection is cut), and each request within
/// `request_timeout_ms` (see [`router`]). On `stop`, no new connection is
/// taken and open ones finish their request.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: &crate::config::HttpSettings,
    stop: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_timeout_ms.max(1)))
        .max_buf_size(64 * 1024);
    let builder = Arc::new(builder);
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: wait for descriptors to come back
                    // rather than spin.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let builder = builder.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    let mut router = router.clone();
                    async move { tower_service::Service::call(&mut router, req).await }
                },
            );
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => { let _ = r; }
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(permit);
        });
    }
    // Every connection was told to finish its request and close: wait for
    // them (each permit comes back as one closes), so that a request in
    // flight is answered before the process exits.
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(DRAIN, permits.acquire_many(all)).await;
    Ok(())
}

/// How long a stopping server waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(30);
