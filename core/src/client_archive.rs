//! A client the firm stops working with: `dossier client archive ID` (or
//! `POST /v1/clients/{id}/archive`) and its way back, `unarchive`.
//!
//! Archiving deletes nothing. It stops the client's work, in an order that
//! leaves no gap for a job to slip through:
//!
//! 1. the client is marked archived, with a record of the invitations and
//!    apps it is about to stop. From then on every job of the client that
//!    starts — queued before, retried by an operator, or queued by a
//!    producer that raced the archive — fails permanently with
//!    [`CANCELLED`] instead of doing its work (`crate::jobs::for_live_client`),
//!    and the rollover gives it no new exercice;
//! 2. its waiting jobs (pending, scheduled, retrying) are killed with the
//!    same reason; a job already running finishes, and if it fails its
//!    retry is cancelled by step 1;
//! 3. its live invitations are revoked (their links stop working);
//! 4. its enabled apps are disabled, and provisioned automation apps are
//!    torn down at the partner through their normal `app_teardown` job
//!    (which is never cancelled).
//!
//! Archiving twice is harmless: the second run finishes what a crash may
//! have left undone and adds to the record. Unarchiving clears the mark,
//! retries every dead job of the client whose last error is [`CANCELLED`],
//! sends the recorded invitations again (fresh links; a draft stays a
//! draft), and enables the recorded apps again with the settings they kept.
//! Archived clients are left out of client listings and can still be read
//! (`client show`, `GET /v1/clients/{id}`, export).

use serde::{Deserialize, Serialize};

use crate::apps;
use crate::config::QueueSettings;
use crate::db::Database;
use crate::invitations::{self, Status};
use crate::job::{JobFilter, JobStatus};
use crate::jobs::{app_setup, app_teardown};
use crate::queue::{AdminOutcome, QueueBackend};

/// The last error of a job cancelled because its client is archived: what
/// `unarchive` looks for to restart it.
pub const CANCELLED: &str = "cancelled: the client is archived";

/// Most jobs of one client looked at (a client has tens).
const MAX_JOBS: usize = 10_000;

/// What archiving stopped, kept on the client for `unarchive`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stopped {
    /// Invitations revoked, with the status each had.
    pub invitations: Vec<StoppedInvitation>,
    /// Apps disabled.
    pub apps: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoppedInvitation {
    pub id: String,
    pub was: String,
}

/// What `archive` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Archived {
    pub client_id: String,
    /// The client was archived already (this run finished the job).
    pub already: bool,
    /// Waiting jobs killed (ids).
    pub jobs_cancelled: Vec<String>,
    /// Jobs running now: they finish; a retry of theirs is cancelled.
    pub jobs_running: Vec<String>,
    pub invitations_revoked: Vec<String>,
    pub apps_disabled: Vec<String>,
    /// Of those, the ones being torn down at the partner (`app_teardown`).
    pub apps_torn_down: Vec<String>,
}

/// What `unarchive` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Unarchived {
    pub client_id: String,
    /// The client was not archived: nothing was done.
    pub was_active: bool,
    pub jobs_restarted: Vec<String>,
    pub invitations_reinstated: Vec<String>,
    pub apps_reenabled: Vec<String>,
    /// What could not be brought back, and why (e.g. an invitation whose
    /// person was invited again meanwhile).
    pub left: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("client: {0}")]
    Client(#[from] crate::clients::ClientError),
    #[error("invitations: {0}")]
    Invitations(#[from] crate::invitations::InvitationError),
    #[error("apps: {0}")]
    Apps(#[from] crate::apps::AppError),
    #[error("jobs: {0}")]
    Queue(#[from] crate::queue::QueueError),
    #[error("jobs (labelling): {0}")]
    Label(#[from] sqlx::Error),
    #[error("stored archive record of client {0} is unreadable: {1}")]
    Corrupt(String, String),
    #[error(
        "client {0} was erased: it stays archived (its people's data is gone; create the client anew)"
    )]
    Erased(String),
}

fn read_record(id: &str, text: &str) -> Result<Stopped, ArchiveError> {
    if text.is_empty() {
        return Ok(Stopped::default());
    }
    serde_json::from_str(text).map_err(|e| ArchiveError::Corrupt(id.to_string(), e.to_string()))
}

/// Archives the client (see the module docs). `None`: no such client.
pub async fn archive(
    db: &Database,
    queue: &dyn QueueBackend,
    settings: &QueueSettings,
    id: &str,
) -> Result<Option<Archived>, ArchiveError> {
    if crate::clients::get(db, id).await?.is_none() {
        return Ok(None);
    }
    let previous = crate::clients::archive_record(db, id).await?;
    let already = previous.is_some();
    let mut record = read_record(id, previous.as_deref().unwrap_or_default())?;
    let live: Vec<_> = invitations::list(db, id)
        .await?
        .into_iter()
        .filter(|i| matches!(i.status, Status::Draft | Status::Queued | Status::Sent))
        .collect();
    let enabled: Vec<_> = apps::client_apps(db, id)
        .await?
        .into_iter()
        .filter(|a| a.status != "disabled" && a.status != "disabling")
        .collect();
    for inv in &live {
        if !record.invitations.iter().any(|s| s.id == inv.id) {
            record.invitations.push(StoppedInvitation {
                id: inv.id.clone(),
                was: inv.status.as_str().to_string(),
            });
        }
    }
    for app in &enabled {
        if !record.apps.contains(&app.app_id) {
            record.apps.push(app.app_id.clone());
        }
    }
    let text = serde_json::to_string(&record)
        .map_err(|e| ArchiveError::Corrupt(id.to_string(), e.to_string()))?;
    // Marked first: from here on no job of the client does its work.
    if crate::clients::set_archived(db, id, crate::clock::now_ms(), &text)
        .await?
        .is_none()
    {
        return Ok(None);
    }
    let mut done = Archived {
        client_id: id.to_string(),
        already,
        ..Archived::default()
    };
    for job in queue
        .list(&JobFilter {
            subject: Some(id.to_string()),
            limit: MAX_JOBS,
            ..JobFilter::default()
        })
        .await?
    {
        if job.kind == app_teardown::KIND {
            continue;
        }
        match job.status {
            JobStatus::Pending | JobStatus::Scheduled | JobStatus::Retrying => {
                if queue.kill(&job.id, CANCELLED).await? == AdminOutcome::Applied {
                    done.jobs_cancelled.push(job.id);
                }
            }
            JobStatus::Running => done.jobs_running.push(job.id),
            JobStatus::Done | JobStatus::Dead => {}
        }
    }
    for inv in live {
        match invitations::revoke(db, &inv.id).await {
            Ok(_) => done.invitations_revoked.push(inv.id),
            // Accepted or revoked meanwhile: nothing left to stop.
            Err(invitations::InvitationError::WrongStatus { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let teardown_attempts = settings.kind(app_teardown::KIND).max_attempts;
    for app in enabled {
        let disabled = match apps::disable(db, id, &app.app_id).await {
            Ok(disabled) => disabled,
            Err(apps::AppError::NotEnabled { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        if disabled.status == "disabling" {
            let job = app_setup::job_for(app_teardown::KIND, &disabled, teardown_attempts);
            queue.push(crate::owners::labelled(db, job).await?).await?;
            done.apps_torn_down.push(app.app_id.clone());
        }
        done.apps_disabled.push(app.app_id);
    }
    Ok(Some(done))
}

/// Brings an archived client back (see the module docs). `None`: no such
/// client.
pub async fn unarchive(
    db: &Database,
    queue: &dyn QueueBackend,
    settings: &QueueSettings,
    id: &str,
) -> Result<Option<Unarchived>, ArchiveError> {
    if crate::clients::get(db, id).await?.is_none() {
        return Ok(None);
    }
    let mut done = Unarchived {
        client_id: id.to_string(),
        ..Unarchived::default()
    };
    let Some(text) = crate::clients::archive_record(db, id).await? else {
        done.was_active = true;
        return Ok(Some(done));
    };
    if crate::clients::erased_at(db, id).await?.is_some() {
        return Err(ArchiveError::Erased(id.to_string()));
    }
    let record = read_record(id, &text)?;
    // Cleared first: the jobs restarted below must find the client active.
    if !crate::clients::clear_archived(db, id).await? {
        done.was_active = true;
        return Ok(Some(done));
    }
    for job in queue
        .list(&JobFilter {
            subject: Some(id.to_string()),
            status: Some(JobStatus::Dead),
            limit: MAX_JOBS,
            ..JobFilter::default()
        })
        .await?
    {
        if job.last_error.as_deref() != Some(CANCELLED) {
            continue;
        }
        if queue.retry(&job.id).await? == AdminOutcome::Applied {
            done.jobs_restarted.push(job.id);
        }
    }
    let send_attempts = settings.kind(crate::jobs::invitation::KIND).max_attempts;
    for stopped in record.invitations {
        let was = match stopped.was.as_str() {
            "draft" => Status::Draft,
            "sent" => Status::Sent,
            _ => Status::Queued,
        };
        match invitations::reinstate(db, &stopped.id, was, send_attempts).await {
            Ok(Some(_)) => done.invitations_reinstated.push(stopped.id),
            Ok(None) => {}
            Err(invitations::InvitationError::Invalid(why)) => done.left.extend(why),
            Err(e) => return Err(e.into()),
        }
    }
    if !done.invitations_reinstated.is_empty()
        && let Err(e) = crate::outbox::relay(db, queue).await
    {
        // Staged with their writes: the worker's relay pushes them later.
        tracing::warn!(error = %e, "invitation sends stay in the outbox for the relay");
    }
    let setup_attempts = settings.kind(app_setup::KIND).max_attempts;
    for app_id in record.apps {
        if let Some(app) = apps::reinstate(db, id, &app_id).await? {
            let job = app_setup::job_for(app_setup::KIND, &app, setup_attempts);
            queue.push(crate::owners::labelled(db, job).await?).await?;
            done.apps_reenabled.push(app_id);
        }
    }
    Ok(Some(done))
}
