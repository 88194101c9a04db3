//! `app_teardown` (payload: client, app, generation): after `app disable`
//! on a provisioned automation app, POSTs the matching de-provisioning call
//! (signed, same `Idempotency-Key` across retries, same error classes as
//! `app_setup`), then marks the activation disabled.

use std::sync::Arc;

use super::JobDeps;
use super::app_setup::{AppJob, Partner, app_error, current, partner_failure, partner_of};
use crate::apps::{self, partner};
use crate::catalogue::KindSpec;
use crate::job::JobError;
use crate::runtime::{JobContext, Registry};

pub const KIND: &str = "app_teardown";

pub async fn handle(
    job: AppJob,
    _ctx: JobContext,
    deps: Arc<JobDeps>,
) -> Result<serde_json::Value, JobError> {
    let Some(activation) = current(&deps, &job, "disabling").await? else {
        return Ok(
            serde_json::json!({ "status": "skipped", "reason": "superseded by a later enable or disable" }),
        );
    };
    let Partner { url, key, .. } = partner_of(&deps, &job, |a| a.deprovisioning_url).await?;
    let body = serde_json::json!({
        "client": { "id": job.client_id },
        "app": job.app_id,
        "external_id": activation.external_id,
    });
    let idempotency = format!("{KIND}:{}:{}:{}", job.client_id, job.app_id, job.generation);
    if let Err(e) = partner::post(&deps.partners.http, &url, key, &idempotency, &body, &[]).await {
        return Err(partner_failure(&deps, &job, "disabling", e).await);
    }
    apps::record(
        &deps.db,
        &job.client_id,
        &job.app_id,
        job.generation,
        apps::Outcome::status("disabled"),
    )
    .await
    .map_err(app_error)?;
    Ok(serde_json::json!({ "status": "disabled" }))
}

pub fn register(registry: &mut Registry, deps: Arc<JobDeps>) {
    registry.register(KIND, move |job: AppJob, ctx| handle(job, ctx, deps.clone()));
}

pub fn spec() -> KindSpec {
    KindSpec::of::<AppJob>(
        KIND,
        "de-provision a client at a partner after `app disable`",
        &[],
    )
    .acting_on(crate::catalogue::Subject::Client)
}
