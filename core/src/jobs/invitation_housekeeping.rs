//! `invitation_housekeeping` (scheduled): marks sent invitations past their
//! expiry `expired`, and queues the one reminder of invitations sent more
//! than `invitations.reminder_after_days` ago and still not accepted. A
//! reminder is a new generation (a fresh link: only hashes are kept, so the
//! first link cannot be sent again) whose email says it is a reminder; the
//! invitation is marked reminded in the same statement, so never twice.
//! Invitations left queued for ten minutes get their job pushed again.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::JobDeps;
use super::invitation;
use crate::catalogue::KindSpec;
use crate::clock::now_ms;
use crate::invitations;
use crate::job::JobError;
use crate::runtime::{JobContext, Registry};

pub const KIND: &str = "invitation_housekeeping";

/// A queued invitation whose job has not sent it in this long is pushed
/// again (its job may have been lost between a commit and a push).
const STUCK_AFTER_MS: i64 = 10 * 60 * 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct InvitationHousekeeping {}

pub async fn handle(
    _job: InvitationHousekeeping,
    _ctx: JobContext,
    deps: Arc<JobDeps>,
) -> Result<serde_json::Value, JobError> {
    let transient = |e: invitations::InvitationError| JobError::transient(e.to_string());
    let expired = invitations::expire_stale(&deps.db)
        .await
        .map_err(transient)?;
    let after_ms = i64::from(deps.mail.invitations.reminder_after_days) * 86_400_000;
    let mut due = invitations::due_reminders(&deps.db, now_ms() - after_ms)
        .await
        .map_err(transient)?;
    let reminders = due.len();
    due.extend(
        invitations::stuck_in_queue(&deps.db, now_ms() - STUCK_AFTER_MS)
            .await
            .map_err(transient)?,
    );
    let attempts = deps.queue_settings.kind(invitation::KIND).max_attempts;
    // Keyed by invitation and generation: a retry of this job after the
    // update above re-queues nothing twice.
    let mut jobs: Vec<_> = due
        .iter()
        .map(|i| invitation::job_for(i, attempts))
        .collect();
    crate::owners::label(&deps.db, &mut jobs)
        .await
        .map_err(|e| JobError::transient(e.to_string()))?;
    deps.queue
        .push_bulk(jobs)
        .await
        .map_err(|e| JobError::transient(e.to_string()))?;
    Ok(serde_json::json!({
        "expired": expired,
        "reminders": reminders,
        "requeued": due.len() - reminders,
    }))
}

pub fn register(registry: &mut Registry, deps: Arc<JobDeps>) {
    registry.register(KIND, move |job: InvitationHousekeeping, ctx| {
        handle(job, ctx, deps.clone())
    });
}

pub fn spec() -> KindSpec {
    KindSpec::of::<InvitationHousekeeping>(
        KIND,
        "expire stale invitations and send the one reminder",
        &[],
    )
}
