//! The admin API of the firms' webhook endpoints (`/v1/admin/webhooks`),
//! what `dossier webhook …` does on the command line: list, add (the
//! secret in the answer, once), remove, rotate the secret, enable again.
//! Behind the admin scope, like the rest of `/v1/admin`; every change is
//! in the audit trail.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

use crate::api_tokens::TokenName;
use crate::audit::{self, action};
use crate::events::endpoints::{self, Endpoint, EndpointError};
use crate::http::ApiState;

fn failure(e: EndpointError) -> Response {
    let (status, code) = match &e {
        EndpointError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        _ if e.is_user_error() => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        _ => {
            tracing::error!(error = %e, "webhook endpoints: the store failed");
            return crate::http::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the webhook endpoints cannot be read or changed now; try again shortly",
            );
        }
    };
    crate::http::error(status, code, &e.to_string())
}

/// On the audit trail, under the token's name.
async fn noted(state: &ApiState, who: &TokenName, action: &str, e: &Endpoint) {
    audit::note(
        &state.db,
        &audit::api_actor(who),
        action,
        &e.id,
        serde_json::json!({ "firm": e.firm_id }),
    )
    .await;
}

fn shown(e: &Endpoint) -> serde_json::Value {
    let mut v = serde_json::to_value(e).unwrap_or_default();
    v["state"] = e.state().into();
    v
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this firm's endpoints.
    firm: Option<String>,
}

#[utoipa::path(get, path = "/v1/admin/webhooks", tag = "admin", security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, description = "the endpoints, oldest first, with their state (enabled, failing, disabled); never their secrets", body = Vec<Object>),
        (status = "default", description = "an error", body = crate::http::ErrorBody)))]
pub async fn list(State(state): State<ApiState>, Query(q): Query<ListQuery>) -> Response {
    match endpoints::list(&state.db, q.firm.as_deref()).await {
        Ok(list) => Json(list.iter().map(shown).collect::<Vec<_>>()).into_response(),
        Err(e) => failure(e),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    firm: String,
    /// https (http only to loopback, when the outbound policy allows it).
    url: String,
    /// Event types, or `["all"]`.
    events: Vec<String>,
}

#[utoipa::path(post, path = "/v1/admin/webhooks", tag = "admin", security(("bearer" = [])),
    request_body(content = AddBody, description = "the firm, the URL, the event types"),
    responses((status = 201, description = "the endpoint, and `secret`: the signing secret, shown this once", body = Object),
        (status = 422, description = "an unknown firm or event type, a URL the outbound policy refuses", body = crate::http::ErrorBody),
        (status = "default", description = "an error", body = crate::http::ErrorBody)))]
pub async fn add(
    State(state): State<ApiState>,
    Extension(who): Extension<TokenName>,
    body: Option<Json<AddBody>>,
) -> Response {
    let Some(Json(body)) = body else {
        return crate::http::error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "send {\"firm\": \"…\", \"url\": \"https://…\", \"events\": [\"client.ready\", …]}",
        );
    };
    let types = match endpoints::parse_events(&body.events) {
        Ok(t) => t,
        Err(e) => return failure(e),
    };
    match endpoints::add(
        &state.db,
        state.keys(),
        &state.settings().outbound,
        &body.firm,
        &body.url,
        &types,
    )
    .await
    {
        Ok((e, secret)) => {
            audit::note(
                &state.db,
                &audit::api_actor(&who),
                action::WEBHOOK_ADD,
                &e.id,
                serde_json::json!({ "firm": e.firm_id, "url": crate::config::redact_url(&e.url), "events": e.events }),
            )
            .await;
            let mut v = shown(&e);
            v["secret"] = secret.into();
            (StatusCode::CREATED, Json(v)).into_response()
        }
        Err(e) => failure(e),
    }
}

#[utoipa::path(delete, path = "/v1/admin/webhooks/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "an endpoint id")),
    responses((status = 200, description = "removed, with its undelivered events", body = Object),
        (status = 404, description = "no such endpoint", body = crate::http::ErrorBody),
        (status = "default", description = "an error", body = crate::http::ErrorBody)))]
pub async fn remove(
    State(state): State<ApiState>,
    Extension(who): Extension<TokenName>,
    Path(id): Path<String>,
) -> Response {
    match endpoints::remove(&state.db, &id, None).await {
        Ok(e) => {
            noted(&state, &who, action::WEBHOOK_REMOVE, &e).await;
            Json(shown(&e)).into_response()
        }
        Err(e) => failure(e),
    }
}

#[utoipa::path(post, path = "/v1/admin/webhooks/{id}/rotate-secret", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "an endpoint id")),
    responses((status = 200, description = "the endpoint, and its new `secret`, shown this once; the old one no longer signs", body = Object),
        (status = 404, description = "no such endpoint", body = crate::http::ErrorBody),
        (status = "default", description = "an error", body = crate::http::ErrorBody)))]
pub async fn rotate_secret(
    State(state): State<ApiState>,
    Extension(who): Extension<TokenName>,
    Path(id): Path<String>,
) -> Response {
    match endpoints::rotate_secret(&state.db, state.keys(), &id, None).await {
        Ok((e, secret)) => {
            noted(&state, &who, action::WEBHOOK_ROTATE, &e).await;
            let mut v = shown(&e);
            v["secret"] = secret.into();
            Json(v).into_response()
        }
        Err(e) => failure(e),
    }
}

#[utoipa::path(post, path = "/v1/admin/webhooks/{id}/enable", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "an endpoint id")),
    responses((status = 200, description = "enabled again: new events reach it", body = Object),
        (status = 404, description = "no such endpoint", body = crate::http::ErrorBody),
        (status = "default", description = "an error", body = crate::http::ErrorBody)))]
pub async fn enable(
    State(state): State<ApiState>,
    Extension(who): Extension<TokenName>,
    Path(id): Path<String>,
) -> Response {
    match endpoints::enable(&state.db, &id, None).await {
        Ok(e) => {
            noted(&state, &who, action::WEBHOOK_ENABLE, &e).await;
            Json(shown(&e)).into_response()
        }
        Err(e) => failure(e),
    }
}
