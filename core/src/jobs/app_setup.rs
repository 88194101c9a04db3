//! `app_setup` (payload: client, app, generation): a redirection app's
//! access is recorded (no network); an automation app's client is
//! provisioned at the partner — the client's data and the app's settings
//! (secrets opened for this call only) POSTed, signed, with an
//! `Idempotency-Key` stable across retries — and the partner's external id
//! and status are stored. 5xx, 429, timeouts, refused connections and
//! malformed answers are retried; a 4xx is permanent, with the partner's
//! message on the job and on the activation.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::JobDeps;
use crate::apps::{self, AppError, ClientApp, partner};
use crate::catalogue::KindSpec;
use crate::job::{JobError, NewJob};
use crate::runtime::{JobContext, Registry};

pub const KIND: &str = "app_setup";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppJob {
    pub client_id: String,
    pub app_id: String,
    /// The activation's generation; a later enable/disable makes this a no-op.
    pub generation: i64,
}

/// The job for an activation's current generation (`kind` is `app_setup`
/// or `app_teardown`), keyed so that queueing it twice queues it once.
pub fn job_for(kind: &str, a: &ClientApp, max_attempts: u32) -> NewJob {
    NewJob {
        kind: kind.into(),
        payload: serde_json::json!({ "client_id": a.client_id, "app_id": a.app_id, "generation": a.generation }),
        run_at_ms: None,
        max_attempts,
        idempotency_key: Some(format!(
            "{kind}:{}:{}:{}",
            a.client_id, a.app_id, a.generation
        )),
        trace_id: None,
        group: None,
        subject: None,
        bulk: false,
    }
}

pub(super) fn app_error(e: AppError) -> JobError {
    if e.is_user_error() {
        JobError::permanent(e.to_string())
    } else {
        JobError::transient(e.to_string())
    }
}

/// Turns a partner failure into the job's outcome, recording a permanent
/// one on the activation.
pub(super) async fn partner_failure(
    deps: &JobDeps,
    job: &AppJob,
    status_on_refusal: &str,
    e: partner::PartnerError,
) -> JobError {
    let class = match &e {
        partner::PartnerError::Permanent(_) => "permanent",
        partner::PartnerError::Transient { .. } => "transient",
    };
    crate::metrics::partner_failed(&job.app_id, class);
    match e {
        partner::PartnerError::Permanent(why) => {
            let _ = apps::record(
                &deps.db,
                &job.client_id,
                &job.app_id,
                job.generation,
                apps::Outcome {
                    last_error: Some(&why),
                    ..apps::Outcome::status(status_on_refusal)
                },
            )
            .await;
            JobError::permanent(why)
        }
        partner::PartnerError::Transient {
            message,
            retry_after: Some(after),
        } => JobError::retry_after(message, after),
        partner::PartnerError::Transient { message, .. } => JobError::transient(message),
    }
}

/// What a partner call needs: the client, the endpoint, the HMAC key.
pub(super) struct Partner<'a> {
    pub client: crate::clients::Client,
    pub url: String,
    pub key: &'a [u8],
}

/// The client, the app's endpoint (`endpoint` picks provisioning or
/// de-provisioning) and the key shared with the partner.
pub(super) async fn partner_of<'a>(
    deps: &'a JobDeps,
    job: &AppJob,
    endpoint: fn(apps::App) -> Option<String>,
) -> Result<Partner<'a>, JobError> {
    let client = crate::clients::get(&deps.db, &job.client_id)
        .await
        .map_err(|e| JobError::transient(e.to_string()))?
        .ok_or_else(|| JobError::permanent(format!("client {} does not exist", job.client_id)))?;
    let firm_app = apps::app(&deps.db, &client.firm_id, &job.app_id)
        .await
        .map_err(app_error)?;
    let url = endpoint(firm_app).ok_or_else(|| {
        JobError::permanent(format!(
            "app {} has no partner endpoint for this call",
            job.app_id
        ))
    })?;
    let key = deps
        .partners
        .signing_key(&job.app_id)
        .map_err(JobError::permanent)?;
    Ok(Partner { client, url, key })
}

/// The activation this job is for, if it is still current.
pub(super) async fn current(
    deps: &JobDeps,
    job: &AppJob,
    wanted: &str,
) -> Result<Option<ClientApp>, JobError> {
    let a = apps::client_app(&deps.db, &job.client_id, &job.app_id)
        .await
        .map_err(app_error)?
        .ok_or_else(|| {
            JobError::permanent(format!(
                "app {} was never enabled for client {}",
                job.app_id, job.client_id
            ))
        })?;
    Ok((a.generation == job.generation && a.status == wanted).then_some(a))
}

pub async fn handle(
    job: AppJob,
    _ctx: JobContext,
    deps: Arc<JobDeps>,
) -> Result<serde_json::Value, JobError> {
    super::for_live_client(&deps, &job.client_id).await?;
    let Some(activation) = current(&deps, &job, "pending").await? else {
        return Ok(
            serde_json::json!({ "status": "skipped", "reason": "superseded by a later enable or disable" }),
        );
    };
    if activation.kind == "redirection" {
        apps::record(
            &deps.db,
            &job.client_id,
            &job.app_id,
            job.generation,
            apps::Outcome::status("active"),
        )
        .await
        .map_err(app_error)?;
        return Ok(
            serde_json::json!({ "status": "active", "on_director_portal": activation.on_director_portal }),
        );
    }
    let Partner { client, url, key } = partner_of(&deps, &job, |a| a.provisioning_url).await?;
    let settings = activation
        .opened_settings(&deps.partners.keys)
        .map_err(app_error)?;
    let field = |k: &str| client.company.get(k).cloned();
    let street = [
        "address.number",
        "address.street_type",
        "address.street_name",
    ]
    .into_iter()
    .filter_map(field)
    .collect::<Vec<_>>()
    .join(" ");
    let body = serde_json::json!({
        "client": {
            "id": client.id,
            "siret": client.siret,
            "legal_name": client.company.get("legal_name"),
            "address": {
                "street": street,
                "postal_code": client.company.get("address.postal_code"),
                "city": client.company.get("address.city"),
            },
        },
        "app": job.app_id,
        "settings": settings,
    });
    let idempotency = format!("{KIND}:{}:{}:{}", job.client_id, job.app_id, job.generation);
    // The values that were sealed at rest, opened for this call: a partner
    // echoing one must not make it readable in our errors.
    let secrets: Vec<String> = activation
        .settings
        .iter()
        .filter(|(_, v)| v.as_str().is_some_and(crate::secrets::KeyRing::is_sealed))
        .filter_map(|(k, _)| settings.get(k).and_then(|v| v.as_str()).map(str::to_string))
        .collect();
    let answer = match partner::post(
        &deps.partners.http,
        &url,
        key,
        &idempotency,
        &body,
        &secrets,
    )
    .await
    {
        Ok(text) => text,
        Err(e) => return Err(partner_failure(&deps, &job, "failed", e).await),
    };
    let provisioned = match partner::provisioned(&answer) {
        Ok(p) => p,
        Err(e) => return Err(partner_failure(&deps, &job, "failed", e).await),
    };
    apps::record(
        &deps.db,
        &job.client_id,
        &job.app_id,
        job.generation,
        apps::Outcome {
            external_id: Some(&provisioned.external_id),
            partner_status: provisioned.status.as_deref(),
            ..apps::Outcome::status("active")
        },
    )
    .await
    .map_err(app_error)?;
    Ok(serde_json::json!({ "status": "active", "external_id": provisioned.external_id }))
}

pub fn register(registry: &mut Registry, deps: Arc<JobDeps>) {
    registry.register(KIND, move |job: AppJob, ctx: JobContext| {
        let deps = deps.clone();
        async move {
            let client = job.client_id.clone();
            let result = handle(job, ctx.clone(), deps.clone()).await;
            super::step_outcome(&deps, &ctx, &client, result).await
        }
    });
}

pub fn spec() -> KindSpec {
    KindSpec::of::<AppJob>(
        KIND,
        "give a client access to a partner app; provision automation apps",
        &[],
    )
    .acting_on(crate::catalogue::Subject::Client)
}
