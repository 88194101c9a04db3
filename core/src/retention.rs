//! Retention: people's data is not kept longer than it serves. The
//! scheduled `retention` job (daily by default, `retention.cron`) sweeps
//! the stores that nothing else bounds; `docs/privacy.md` has the table of
//! what, where, how long and why, and `[retention]` the durations:
//!
//! | Store | After | What goes |
//! |---|---|---|
//! | `http_requests` | `hook_answers_hours` (24) from the answer | the row |
//! | `imports` | `import_files_days` (30) from the import's end | the file and the reports (the counts stay) |
//! | `invitations` accepted, expired or revoked | `closed_invitations_days` (90) from the last change | address, names, token, message id, last error (as an erasure does) |
//! | `.eml` files of the file transport | `mail_files_days` (30) from the file's time | the file |
//! | dead jobs, on any queue backend | `dead_jobs_days` (30) from the death | the job |
//! | `events`, `webhook_deliveries` | `events_days` (30) from the event, none of its deliveries pending | the event and its deliveries |
//!
//! Finished jobs already go after `queue.done_retention_secs` (7 days) and
//! the audit trail after `audit.retention_days` (365): their own sweeps.
//! Each step is idempotent: a retried job removes what is left.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::RetentionSettings;
use crate::db::{Database, on_pool};
use crate::queue::QueueBackend;
use crate::write_gate::Lane;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// What a sweep removed, per store.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Swept {
    pub removed: BTreeMap<&'static str, u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("queue: {0}")]
    Queue(#[from] crate::queue::QueueError),
    #[error("mail files in {path}: {source}")]
    Mail {
        path: String,
        source: std::io::Error,
    },
}

/// Sweeps every store.
pub async fn sweep(
    db: &Database,
    queue: &dyn QueueBackend,
    mail_dir: Option<&Path>,
    policy: &RetentionSettings,
) -> Result<Swept, RetentionError> {
    let now_ms = crate::clock::now_ms();
    let mut swept = Swept::default();
    let hooks_before = now_ms - i64::from(policy.hook_answers_hours) * HOUR_MS;
    let _turn = db.write_turn(Lane::Background).await;
    let n = on_pool!(db, pool => sqlx::query("DELETE FROM http_requests WHERE created_at < $1")
        .bind(hooks_before)
        .execute(pool)
        .await?
        .rows_affected());
    swept.removed.insert("http_requests", n);
    let imports_before = now_ms - i64::from(policy.import_files_days) * DAY_MS;
    let n = on_pool!(db, pool => sqlx::query(
        "UPDATE imports SET content = $1, report = NULL, errors_csv = NULL,
                error = COALESCE(error, 'file and reports removed after the retention period'), updated_at = $2
         WHERE status IN ('done', 'refused', 'failed') AND finished_at < $3
           AND (LENGTH(content) > 0 OR report IS NOT NULL OR errors_csv IS NOT NULL)",
    )
    .bind(Vec::<u8>::new())
    .bind(now_ms)
    .bind(imports_before)
    .execute(pool)
    .await?
    .rows_affected());
    swept.removed.insert("imports (files and reports)", n);
    drop(_turn);
    let invitations_before = now_ms - i64::from(policy.closed_invitations_days) * DAY_MS;
    let closed: Vec<(String,)> = on_pool!(db, pool => sqlx::query_as(
        "SELECT id FROM invitations
         WHERE status IN ('accepted', 'expired', 'revoked') AND updated_at < $1
           AND email NOT LIKE '%@erased.invalid'",
    )
    .bind(invitations_before)
    .fetch_all(pool)
    .await?);
    let ids: Vec<String> = closed.into_iter().map(|(id,)| id).collect();
    swept.removed.insert(
        "invitations (personal fields)",
        crate::erasure::scrub_invitations(db, &ids).await?,
    );
    let mail_before = SystemTime::UNIX_EPOCH
        + Duration::from_millis(
            u64::try_from(now_ms - i64::from(policy.mail_files_days) * DAY_MS).unwrap_or(0),
        );
    swept
        .removed
        .insert("mail files", delete_old_files(mail_dir, mail_before)?);
    let dead_for = Duration::from_secs(u64::from(policy.dead_jobs_days) * 86_400);
    swept
        .removed
        .insert("dead jobs", queue.purge_dead(dead_for).await?);
    let events_before = now_ms - i64::from(policy.events_days) * DAY_MS;
    swept
        .removed
        .insert("events", delete_old_events(db, events_before).await?);
    Ok(swept)
}

/// Deletes the events written before `before` that no endpoint still
/// waits for, with their deliveries: how many events.
async fn delete_old_events(db: &Database, before: i64) -> Result<u64, RetentionError> {
    let _turn = db.write_turn(Lane::Background).await;
    Ok(on_pool!(db, pool => {
        let mut tx = pool.begin().await?;
        sqlx::query(
            "DELETE FROM webhook_deliveries
             WHERE event_id IN (SELECT id FROM events WHERE created_at < $1)
               AND event_id NOT IN (SELECT event_id FROM webhook_deliveries WHERE status = 'pending')",
        )
        .bind(before)
        .execute(&mut *tx)
        .await?;
        let n = sqlx::query(
            "DELETE FROM events WHERE created_at < $1
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = events.id)",
        )
        .bind(before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        n
    }))
}

/// Deletes the mail files of `dir` last changed before `before`.
fn delete_old_files(dir: Option<&Path>, before: SystemTime) -> Result<u64, RetentionError> {
    let Some(dir) = dir else { return Ok(0) };
    crate::mail::remove_files(dir, |_, meta| Ok(meta.modified()? < before)).map_err(|source| {
        RetentionError::Mail {
            path: dir.display().to_string(),
            source,
        }
    })
}
