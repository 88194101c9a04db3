//! The operators' audit trail: every operator action — from the command
//! line, the dashboard or the admin API — with who did it (a token's name,
//! or the OS user of the command line), what, when, and the ids or filter
//! it touched. `dossier audit list`, `GET /v1/admin/audit`, the dashboard.
//! Entries hold ids, kinds and operators' own words, never a payload, an
//! email address or a token; they are kept `audit.retention_days`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::db::{Database, on_pool};
use crate::write_gate::Lane;

/// Longest detail text kept (an operator's reason, say).
const MAX_TEXT: usize = 500;

/// What operators do, as recorded.
pub mod action {
    pub const JOB_RETRY: &str = "job.retry";
    pub const JOB_KILL: &str = "job.kill";
    pub const JOB_ENQUEUE: &str = "job.enqueue";
    pub const DEAD_RETRY: &str = "queue.retry_dead";
    pub const BULK_RETRY: &str = "jobs.bulk_retry";
    pub const BULK_KILL: &str = "jobs.bulk_kill";
    pub const BULK_RESCHEDULE: &str = "jobs.bulk_reschedule";
    pub const QUEUE_PAUSE: &str = "queue.pause";
    pub const QUEUE_RESUME: &str = "queue.resume";
    pub const QUEUE_SCALE: &str = "queue.scale";
    pub const FIRM_ADD: &str = "firm.add";
    pub const CLIENT_EXPORT: &str = "client.export";
    pub const CLIENT_ARCHIVE: &str = "client.archive";
    pub const CLIENT_UNARCHIVE: &str = "client.unarchive";
    pub const CLIENT_ERASE: &str = "client.erase";
    /// Its target never names the person (the trail would keep them).
    pub const PERSON_ERASE: &str = "person.erase";
    pub const TOKEN_CREATE: &str = "token.create";
    pub const TOKEN_REVOKE: &str = "token.revoke";
    pub const WEBHOOK_ADD: &str = "webhook.add";
    pub const WEBHOOK_REMOVE: &str = "webhook.remove";
    pub const WEBHOOK_ROTATE: &str = "webhook.rotate_secret";
    pub const WEBHOOK_ENABLE: &str = "webhook.enable";
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    pub id: String,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    /// The ids or the filter the action touched.
    pub target: String,
    pub detail: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(
        "since {0:?}: give a delay back (7d, 12h), a date (2026-12-01, from 00:00 UTC) or an RFC 3339 time"
    )]
    BadSince(String),
    #[error("audit trail: {0}")]
    Db(#[from] sqlx::Error),
}

impl AuditError {
    pub fn is_user_error(&self) -> bool {
        matches!(self, AuditError::BadSince(_))
    }
}

/// Who runs this command line: the OS user.
pub fn command_line_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let user: String = user.chars().take(64).filter(|c| !c.is_control()).collect();
    format!("{user} (command line)")
}

/// Who called the admin API: the token's name.
pub fn api_actor(token: &crate::api_tokens::TokenName) -> String {
    format!("{} (API)", token.0)
}

/// Control characters out, length bounded: entries are shown on
/// terminals and pages.
fn clean(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(MAX_TEXT)
        .collect()
}

/// Records an action.
pub async fn record(
    db: &Database,
    actor: &str,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<(), AuditError> {
    record_at(db, now_ms(), actor, action, target, detail).await
}

async fn record_at(
    db: &Database,
    at_ms: i64,
    actor: &str,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<(), AuditError> {
    let detail = match detail {
        serde_json::Value::String(s) => serde_json::Value::String(clean(&s)),
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => (k, serde_json::Value::String(clean(&s))),
                    v => (k, v),
                })
                .collect(),
        ),
        v => v,
    };
    let _turn = db.write_turn(Lane::Interactive).await;
    on_pool!(db, pool => sqlx::query(
        "INSERT INTO audit_log (id, at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(at_ms)
    .bind(clean(actor))
    .bind(action)
    .bind(clean(target))
    .bind(detail.to_string())
    .execute(pool)
    .await
    .map(|_| ())?);
    Ok(())
}

/// [`record`] for an action that has happened: a trail that cannot be
/// written is said in the logs (and returned, for the command line to
/// say), but does not undo or fail the action.
pub async fn note(
    db: &Database,
    actor: &str,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Option<AuditError> {
    match record(db, actor, action, target, detail).await {
        Ok(()) => None,
        Err(e) => {
            tracing::error!(error = %e, %action, "an operator action was done but not recorded in the audit trail");
            Some(e)
        }
    }
}

/// `7d`, `12h`, `30m` back from now, a date (from 00:00 UTC) or an RFC
/// 3339 time, into epoch ms.
pub fn parse_since(s: &str) -> Result<i64, AuditError> {
    crate::when::parse(s, crate::when::Direction::Back)
        .ok_or_else(|| AuditError::BadSince(crate::text::for_terminal(s.trim()).into_owned()))
}

/// Entries since `since_ms` (all without), newest first, at most `limit`.
pub async fn list(
    db: &Database,
    since_ms: Option<i64>,
    limit: i64,
) -> Result<Vec<Entry>, AuditError> {
    type Row = (String, i64, String, String, String, String);
    let rows: Vec<Row> = on_pool!(db, pool => sqlx::query_as(
        "SELECT id, at, actor, action, target, detail FROM audit_log
         WHERE at >= $1 ORDER BY at DESC, id DESC LIMIT $2",
    )
    .bind(since_ms.unwrap_or(0))
    .bind(limit.clamp(1, 10_000))
    .fetch_all(pool)
    .await?);
    Ok(rows
        .into_iter()
        .map(|(id, at_ms, actor, action, target, detail)| Entry {
            id,
            at_ms,
            actor,
            action,
            target,
            detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
        })
        .collect())
}

/// Deletes entries older than `retention`; how many.
pub async fn purge(db: &Database, retention: Duration) -> Result<u64, AuditError> {
    let cutoff = now_ms() - retention.as_millis() as i64;
    let _turn = db.write_turn(Lane::Background).await;
    Ok(
        on_pool!(db, pool => sqlx::query("DELETE FROM audit_log WHERE at < $1")
        .bind(cutoff)
        .execute(pool)
        .await?
        .rows_affected()),
    )
}

/// How often a worker purges the trail.
const PURGE_EVERY: Duration = Duration::from_secs(3_600);

/// Purges now and then every hour, until `stop`. Several workers purging
/// at once delete the same rows once.
pub async fn run_purge(db: Database, retention_days: u32, stop: CancellationToken) {
    let retention = Duration::from_secs(u64::from(retention_days) * 86_400);
    loop {
        match purge(&db, retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, "old audit entries deleted"),
            Err(e) => tracing::warn!(error = %e, "purging the audit trail failed; will try again"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PURGE_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_delay_back_a_date_or_a_time() {
        let now = now_ms();
        let week = parse_since("7d").expect("7d");
        assert!((now - week - 7 * 86_400_000).abs() < 5_000);
        assert_eq!(
            parse_since("2026-12-01").expect("date"),
            chrono::NaiveDate::from_ymd_opt(2026, 12, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc().timestamp_millis())
                .expect("day")
        );
        assert!(parse_since("2026-12-01T08:00:00+01:00").is_ok());
        for bad in ["", "yesterday", "xd", "7w"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn texts_lose_their_controls_and_length() {
        assert_eq!(clean("a\u{1b}[2Jb\nc"), "a[2Jbc");
        assert_eq!(clean(&"x".repeat(10_000)).len(), MAX_TEXT);
    }
}
