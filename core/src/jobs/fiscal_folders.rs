//! `fiscal_folders`: writes an exercice's folders — in each `per_exercice`
//! directory, the exercice folder and one folder per month it touches. The
//! client's tree is set up first if it is not yet. Idempotent and atomic
//! (see `tree::folders`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::JobDeps;
use super::folder_errors::{from_exercice, from_folders};
use crate::catalogue::KindSpec;
use crate::exercice;
use crate::job::JobError;
use crate::runtime::{JobContext, Registry};
use crate::tree::folders;

pub const KIND: &str = "fiscal_folders";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FiscalFolders {
    pub client_id: String,
    pub exercice_id: String,
}

pub async fn handle(
    job: FiscalFolders,
    _ctx: JobContext,
    deps: Arc<JobDeps>,
) -> Result<serde_json::Value, JobError> {
    super::for_live_client(&deps, &job.client_id).await?;
    let ex = exercice::get(&deps.db, &job.exercice_id)
        .await
        .map_err(from_exercice)?
        .ok_or_else(|| {
            JobError::permanent(format!("exercice {} does not exist", job.exercice_id))
        })?;
    if ex.client_id != job.client_id {
        return Err(JobError::permanent(format!(
            "exercice {} belongs to client {}, not {}",
            ex.id, ex.client_id, job.client_id
        )));
    }
    let report = folders::materialize(&deps.db, std::slice::from_ref(&job.client_id), None)
        .await
        .map_err(from_folders)?;
    Ok(serde_json::json!({
        "exercice": ex.label,
        "start": ex.start,
        "end": ex.end,
        "folders": report.folders,
        "created": report.created,
    }))
}

pub fn register(registry: &mut Registry, deps: Arc<JobDeps>) {
    registry.register(KIND, move |job: FiscalFolders, ctx: JobContext| {
        let deps = deps.clone();
        async move {
            let client = job.client_id.clone();
            let result = handle(job, ctx.clone(), deps.clone()).await;
            super::step_outcome(&deps, &ctx, &client, result).await
        }
    });
}

pub fn spec() -> KindSpec {
    KindSpec::of::<FiscalFolders>(
        KIND,
        "create an exercice's folder and monthly folders in the client's tree",
        &[],
    )
    .acting_on(crate::catalogue::Subject::Client)
}
