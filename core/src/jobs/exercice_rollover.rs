//! `exercice_rollover` (scheduled daily): for every client whose latest
//! exercice ends within `days_before_end` days, creates the next 12-month
//! exercice, starting the day after, and writes its folders in bulk. Also
//! writes the folders of any exercice whose `fiscal_folders` job never ran.
//!
//! Safe to run twice or from two schedulers at once: an exercice already
//! starting that day is kept (the client's row lock orders the two), and
//! folders are keyed by path.

use std::sync::Arc;

use chrono::{Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::JobDeps;
use super::folder_errors::{from_exercice, from_folders};
use crate::catalogue::KindSpec;
use crate::clock::now_ms;
use crate::exercice::{self, Added, ExerciceError, Origin};
use crate::job::JobError;
use crate::runtime::{JobContext, Registry};
use crate::tree::folders;

pub const KIND: &str = "exercice_rollover";

/// Clients handled per page (one folder transaction each).
const PAGE: i64 = folders::CLIENTS_PER_BATCH as i64;
/// An exercice still without folders this long after its creation lost its
/// job: the rollover writes them.
const LOST_FOLDERS_AFTER_MS: i64 = 10 * 60 * 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ExerciceRollover {
    /// The day the rollover runs for (the tick's date); absent: today, UTC.
    #[serde(default)]
    pub as_of: Option<NaiveDate>,
    #[serde(default)]
    pub days_before_end: Option<u32>,
    #[serde(default)]
    pub dormant_after_days: Option<u32>,
}

#[derive(Debug, Default, Serialize)]
pub struct RolloverReport {
    pub created: usize,
    pub already_there: usize,
    /// Clients whose next exercice breaks a rule (listed in the log).
    pub refused: usize,
    pub folders_created: u64,
    pub lost_folders_repaired: usize,
}

pub async fn run(
    db: &crate::db::Database,
    job: &ExerciceRollover,
) -> Result<RolloverReport, JobError> {
    let today = job.as_of.unwrap_or_else(|| Utc::now().date_naive());
    let horizon = today
        .checked_add_days(Days::new(u64::from(job.days_before_end.unwrap_or(30))))
        .ok_or_else(|| JobError::permanent("as_of + days_before_end is out of range"))?;
    let not_before = today
        .checked_sub_days(Days::new(u64::from(job.dormant_after_days.unwrap_or(366))))
        .ok_or_else(|| JobError::permanent("as_of − dormant_after_days is out of range"))?;
    let mut report = RolloverReport::default();
    let mut after = String::new();
    loop {
        let due = exercice::due_for_rollover(db, not_before, horizon, &after, PAGE)
            .await
            .map_err(from_exercice)?;
        let Some(last) = due.last() else { break };
        after = last.client_id.clone();
        let mut touched = Vec::new();
        for current in &due {
            let Some(start) = current.end.succ_opt() else {
                continue;
            };
            match exercice::add(
                db,
                &current.client_id,
                start,
                None,
                false,
                Origin::Rollover,
                true,
            )
            .await
            {
                Ok(Added::Created(_)) => {
                    report.created += 1;
                    touched.push(current.client_id.clone());
                }
                Ok(Added::AlreadyThere(_)) => report.already_there += 1,
                Err(ExerciceError::Rule(why)) => {
                    report.refused += 1;
                    tracing::warn!(client = %current.client_id, %why, "next exercice not created");
                }
                Err(ExerciceError::ClientNotFound(_)) => {}
                Err(e) => return Err(from_exercice(e)),
            }
        }
        report.folders_created += folders::materialize(db, &touched, None)
            .await
            .map_err(from_folders)?
            .created;
    }
    let lost = exercice::folders_pending(db, now_ms() - LOST_FOLDERS_AFTER_MS, PAGE)
        .await
        .map_err(from_exercice)?;
    if !lost.is_empty() {
        let mut clients: Vec<String> = lost.into_iter().map(|e| e.client_id).collect();
        clients.sort();
        clients.dedup();
        let r = folders::materialize(db, &clients, None)
            .await
            .map_err(from_folders)?;
        report.lost_folders_repaired = r.exercices;
        report.folders_created += r.created;
    }
    Ok(report)
}

pub async fn handle(
    job: ExerciceRollover,
    _ctx: JobContext,
    deps: Arc<JobDeps>,
) -> Result<serde_json::Value, JobError> {
    let report = run(&deps.db, &job).await?;
    Ok(serde_json::to_value(report).unwrap_or_default())
}

pub fn register(registry: &mut Registry, deps: Arc<JobDeps>) {
    registry.register(KIND, move |job: ExerciceRollover, ctx| {
        handle(job, ctx, deps.clone())
    });
}

pub fn spec() -> KindSpec {
    KindSpec::of::<ExerciceRollover>(
        KIND,
        "create each client's next exercice and its folders before the current one ends",
        &[],
    )
}
