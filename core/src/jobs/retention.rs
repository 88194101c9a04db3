//! `retention` (scheduled, `retention.cron`): removes the people's data
//! kept past its time (`crate::retention`); answers the counts per store.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::JobDeps;
use crate::catalogue::KindSpec;
use crate::config::RetentionSettings;
use crate::job::JobError;
use crate::runtime::{JobContext, Registry};

pub const KIND: &str = "retention";

/// The periods, from `[retention]` (the schedule writes them in each job,
/// as the rollover's do); each absent one is the default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_answers_hours: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_files_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_invitations_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail_files_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_jobs_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_days: Option<u32>,
}

impl Retention {
    pub fn from_settings(s: &RetentionSettings) -> Retention {
        Retention {
            hook_answers_hours: Some(s.hook_answers_hours),
            import_files_days: Some(s.import_files_days),
            closed_invitations_days: Some(s.closed_invitations_days),
            mail_files_days: Some(s.mail_files_days),
            dead_jobs_days: Some(s.dead_jobs_days),
            events_days: Some(s.events_days),
        }
    }

    /// The policy, or why not (a period of 0 would remove what is in use).
    fn policy(&self) -> Result<RetentionSettings, JobError> {
        let d = RetentionSettings::default();
        let pick = |name: &str, v: Option<u32>, default: u32| match v {
            Some(0) => Err(JobError::permanent(format!(
                "{name} is 0: a period is at least 1 (0 would remove what is still in use)"
            ))),
            Some(v) => Ok(v),
            None => Ok(default),
        };
        Ok(RetentionSettings {
            hook_answers_hours: pick(
                "hook_answers_hours",
                self.hook_answers_hours,
                d.hook_answers_hours,
            )?,
            import_files_days: pick(
                "import_files_days",
                self.import_files_days,
                d.import_files_days,
            )?,
            closed_invitations_days: pick(
                "closed_invitations_days",
                self.closed_invitations_days,
                d.closed_invitations_days,
            )?,
            mail_files_days: pick("mail_files_days", self.mail_files_days, d.mail_files_days)?,
            dead_jobs_days: pick("dead_jobs_days", self.dead_jobs_days, d.dead_jobs_days)?,
            events_days: pick("events_days", self.events_days, d.events_days)?,
            cron: d.cron,
        })
    }
}

pub async fn handle(
    job: Retention,
    _ctx: JobContext,
    deps: Arc<JobDeps>,
) -> Result<serde_json::Value, JobError> {
    let policy = job.policy()?;
    let mail_dir = match &deps.mail.transport {
        crate::mail::Transport::File { dir } => Some(dir.as_path()),
        crate::mail::Transport::Smtp(_) => None,
    };
    let swept = crate::retention::sweep(&deps.db, deps.queue.as_ref(), mail_dir, &policy)
        .await
        .map_err(|e| JobError::transient(e.to_string()))?;
    Ok(serde_json::to_value(swept).unwrap_or_default())
}

pub fn register(registry: &mut Registry, deps: Arc<JobDeps>) {
    registry.register(KIND, move |job: Retention, ctx| {
        handle(job, ctx, deps.clone())
    });
}

pub fn spec() -> KindSpec {
    KindSpec::of::<Retention>(
        KIND,
        "remove the people's data kept past its retention period",
        &[],
    )
}
