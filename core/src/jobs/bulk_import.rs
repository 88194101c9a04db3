//! `bulk_import`: runs a recorded import (`crate::import`) in the worker —
//! the files too large to import from the CLI. A retried run resumes: the
//! lines already created are known by their import and line.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::JobDeps;
use crate::catalogue::KindSpec;
use crate::import::{self, ImportError, Limits};
use crate::job::JobError;
use crate::runtime::{JobContext, Registry};

pub const KIND: &str = "bulk_import";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkImport {
    pub import_id: String,
}

/// A database outage is retried; anything else about the import is not.
pub(crate) fn job_error(e: ImportError) -> JobError {
    match e {
        ImportError::Db(e) => JobError::transient(e.to_string()),
        other => JobError::permanent(other.to_string()),
    }
}

pub async fn handle(
    job: BulkImport,
    _ctx: JobContext,
    deps: Arc<JobDeps>,
) -> Result<serde_json::Value, JobError> {
    let limits = Limits {
        queue: &deps.queue_settings,
        imports: &deps.imports,
    };
    let id = job.import_id.clone();
    let record = import::run(
        &deps.db,
        limits,
        &deps.partners.keys,
        Some(deps.queue.as_ref()),
        &job.import_id,
        &mut |p| {
            tracing::info!(import = %id, created = p.created, jobs = p.jobs, total = p.total, "import batch written");
        },
    )
    .await
    .map_err(job_error)?;
    Ok(serde_json::json!({
        "status": record.status,
        "rows": record.rows_total,
        "created": record.rows_created,
        "skipped": record.rows_skipped,
        "refused": record.rows_refused,
        "jobs": record.jobs_enqueued,
    }))
}

pub fn register(registry: &mut Registry, deps: Arc<JobDeps>) {
    registry.register(KIND, move |job: BulkImport, ctx| {
        handle(job, ctx, deps.clone())
    });
}

pub fn spec() -> KindSpec {
    KindSpec::of::<BulkImport>(KIND, "run a recorded client import (import massif)", &[])
}
