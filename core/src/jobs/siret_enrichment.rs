//! `siret_enrichment`: fills a client's company facts from the registries.
//!
//! Not found everywhere → permanent (the client is marked `not_found`, the
//! dead job names the SIRET and the providers); a refusal (bad key) →
//! permanent; over quota → retried at the registry's `Retry-After`; outages,
//! timeouts, malformed answers → retried with backoff; our shared quota
//! used up for a while → snoozed, the attempt not counted. A client without a
//! SIRET was entered by hand and is not enriched. Running it twice stores the
//! same record.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::JobDeps;
use crate::catalogue::KindSpec;
use crate::clients::{self, ClientError};
use crate::job::JobError;
use crate::runtime::{JobContext, Registry};
use crate::sirene::SireneError;
use crate::siret::Siret;

pub const KIND: &str = "siret_enrichment";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiretEnrichment {
    pub client_id: String,
    /// Only these providers (an import that chose one); absent: all the
    /// worker's `sirene.providers`, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub providers: Option<Vec<String>>,
}

fn db_error(e: ClientError) -> JobError {
    match e {
        ClientError::NotFound(id) => JobError::permanent(format!("client {id} does not exist")),
        other => JobError::transient(other.to_string()),
    }
}

pub async fn handle(
    job: SiretEnrichment,
    _ctx: JobContext,
    deps: Arc<JobDeps>,
) -> Result<serde_json::Value, JobError> {
    let client = clients::get(&deps.db, &job.client_id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| JobError::permanent(format!("client {} does not exist", job.client_id)))?;
    if client.archived_at_ms.is_some() {
        return Err(JobError::permanent(crate::client_archive::CANCELLED));
    }
    let Some(raw) = client.siret.as_deref() else {
        return Ok(
            serde_json::json!({"status": "skipped", "reason": "no SIRET: the client was entered by hand"}),
        );
    };
    let siret = Siret::parse(raw)
        .map_err(|e| JobError::permanent(format!("stored SIRET {raw} is invalid: {e}")))?;
    // An import's clients wait for the registry's quota behind the ones
    // created one by one.
    let priority = match client.import_id {
        Some(_) => crate::sirene::Priority::Bulk,
        None => crate::sirene::Priority::Interactive,
    };
    match deps
        .sirene
        .lookup_with(&siret, job.providers.as_deref(), priority)
        .await
    {
        Ok(facts) => {
            let client = clients::record_enrichment(&deps.db, &client.id, &facts)
                .await
                .map_err(db_error)?;
            Ok(serde_json::json!({
                "status": "enriched",
                "provider": facts.provider,
                "differences": client.differences.len(),
                "warning": client.warning,
            }))
        }
        Err(SireneError::NotFound(message)) => {
            clients::record_not_found(&deps.db, &client.id, &message)
                .await
                .map_err(db_error)?;
            Err(JobError::permanent(message))
        }
        Err(SireneError::Permanent(message)) => Err(JobError::permanent(message)),
        // Waiting for the shared quota never burns an attempt.
        Err(SireneError::Busy { message, wait }) => Err(JobError::snooze(message, wait)),
        Err(SireneError::Transient {
            message,
            retry_after: Some(after),
        }) => Err(JobError::retry_after(message, after)),
        Err(SireneError::Transient {
            message,
            retry_after: None,
        }) => Err(JobError::transient(message)),
    }
}

pub fn register(registry: &mut Registry, deps: Arc<JobDeps>) {
    registry.register(KIND, move |job: SiretEnrichment, ctx: JobContext| {
        let deps = deps.clone();
        async move {
            let client = job.client_id.clone();
            let result = handle(job, ctx.clone(), deps.clone()).await;
            super::step_outcome(&deps, &ctx, &client, result).await
        }
    });
}

pub fn spec() -> KindSpec {
    KindSpec::of::<SiretEnrichment>(
        KIND,
        "fill a client's company facts from the registries",
        &[],
    )
    .acting_on(crate::catalogue::Subject::Client)
}
