//! `import_scan` (scheduled, `import:NAME`): imports the files waiting in a
//! drop folder of `[[imports.schedules]]` (`crate::import::drop_folder`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::JobDeps;
use crate::catalogue::KindSpec;
use crate::import::{Limits, drop_folder};
use crate::job::JobError;
use crate::runtime::{JobContext, Registry};

pub const KIND: &str = "import_scan";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportScan {
    /// The name of an `[[imports.schedules]]` entry.
    pub schedule: String,
}

pub async fn handle(
    job: ImportScan,
    _ctx: JobContext,
    deps: Arc<JobDeps>,
) -> Result<serde_json::Value, JobError> {
    let schedule = deps
        .imports
        .schedules
        .iter()
        .find(|s| s.name == job.schedule)
        .ok_or_else(|| {
            JobError::permanent(format!(
                "no [[imports.schedules]] entry is named {:?} in this worker's configuration",
                job.schedule
            ))
        })?;
    let limits = Limits {
        queue: &deps.queue_settings,
        imports: &deps.imports,
    };
    let records = drop_folder::scan(
        &deps.db,
        limits,
        &deps.partners.keys,
        Some(deps.queue.as_ref()),
        schedule,
    )
    .await
    .map_err(|e| match e {
        crate::import::ImportError::NotFound(_) => JobError::permanent(e.to_string()),
        // A folder or database briefly unavailable: the next try, or the
        // next tick, picks the files up where they are.
        other => JobError::transient(other.to_string()),
    })?;
    Ok(serde_json::json!({
        "files": records.len(),
        "imports": records
            .iter()
            .map(|r| serde_json::json!({"id": r.id, "file": r.file_name, "status": r.status, "created": r.rows_created}))
            .collect::<Vec<_>>(),
    }))
}

pub fn register(registry: &mut Registry, deps: Arc<JobDeps>) {
    registry.register(KIND, move |job: ImportScan, ctx| {
        handle(job, ctx, deps.clone())
    });
}

pub fn spec() -> KindSpec {
    KindSpec::of::<ImportScan>(KIND, "import the files waiting in a drop folder", &[])
}
