//! `tree_setup`: gives a new client its folder tree — the named template or
//! the firm's default, frozen for this client — and the folders of any
//! exercice it already has. Idempotent: a second run writes nothing.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::JobDeps;
use super::folder_errors::from_folders;
use crate::catalogue::KindSpec;
use crate::job::JobError;
use crate::runtime::{JobContext, Registry};
use crate::tree::folders;

pub const KIND: &str = "tree_setup";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeSetup {
    pub client_id: String,
    /// A template of the client's firm; absent: the firm's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

pub async fn handle(
    job: TreeSetup,
    _ctx: JobContext,
    deps: Arc<JobDeps>,
) -> Result<serde_json::Value, JobError> {
    super::for_live_client(&deps, &job.client_id).await?;
    let report = folders::materialize(
        &deps.db,
        std::slice::from_ref(&job.client_id),
        job.template.as_deref(),
    )
    .await
    .map_err(from_folders)?;
    Ok(serde_json::to_value(report).unwrap_or_default())
}

pub fn register(registry: &mut Registry, deps: Arc<JobDeps>) {
    registry.register(KIND, move |job: TreeSetup, ctx: JobContext| {
        let deps = deps.clone();
        async move {
            let client = job.client_id.clone();
            let result = handle(job, ctx.clone(), deps.clone()).await;
            super::step_outcome(&deps, &ctx, &client, result).await
        }
    });
}

pub fn spec() -> KindSpec {
    KindSpec::of::<TreeSetup>(
        KIND,
        "create a client's folder tree from the firm's template",
        &[],
    )
    .acting_on(crate::catalogue::Subject::Client)
}
