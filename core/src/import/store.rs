//! The `imports` table: each import's file, options, progress and report.

use serde::Serialize;

use super::{ImportError, Request};
use crate::clock::now_ms;
use crate::db::{Database, on_pool};
use crate::write_gate::Lane;

/// Where an import stands.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq, sqlx::FromRow)]
pub struct ImportRecord {
    pub id: String,
    pub firm_id: String,
    pub file_name: String,
    /// `queued`, `running`, `done`, `refused` or `failed`.
    pub status: String,
    pub rows_total: i64,
    pub rows_validated: i64,
    pub rows_created: i64,
    pub rows_skipped: i64,
    pub rows_refused: i64,
    pub jobs_enqueued: i64,
    pub report: Option<String>,
    /// Why a `failed` import stopped.
    pub error: Option<String>,
    /// The drop-folder schedule that took the file, and where it was.
    pub schedule: Option<String>,
    pub source_path: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

impl ImportRecord {
    pub fn finished(&self) -> bool {
        matches!(self.status.as_str(), "done" | "refused" | "failed")
    }
}

const COLUMNS: &str = "id, firm_id, file_name, status, rows_total, rows_validated, rows_created, rows_skipped, rows_refused, jobs_enqueued, report, error, schedule, source_path, created_at, updated_at, finished_at";

/// A new import's id (time-ordered).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Records the new import `id` of `content`, `queued`; `schedule`: the
/// drop-folder schedule and the file's path.
pub async fn create(
    db: &Database,
    id: &str,
    request: &Request,
    content: &[u8],
    schedule: Option<(&str, &str)>,
) -> Result<(), ImportError> {
    crate::firms::require(db, &request.firm_id)
        .await
        .map_err(|e| match e {
            crate::firms::FirmError::Db(e) => ImportError::Db(e),
            e => ImportError::File(vec![format!("firm: {e}")]),
        })?;
    let now = now_ms();
    let options = serde_json::to_string(request).map_err(|e| ImportError::Other(e.to_string()))?;
    let _turn = db.write_turn(Lane::Background).await;
    on_pool!(db, pool => sqlx::query(
        "INSERT INTO imports (id, firm_id, file_name, content, options, status, schedule, source_path, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8, $8)",
    )
    .bind(id)
    .bind(&request.firm_id)
    .bind(&request.file_name)
    .bind(content)
    .bind(options)
    .bind(schedule.map(|s| s.0))
    .bind(schedule.map(|s| s.1))
    .bind(now)
    .execute(pool)
    .await
    .map(|_| ()))?;
    Ok(())
}

pub async fn get(db: &Database, id: &str) -> Result<Option<ImportRecord>, ImportError> {
    let sql = format!("SELECT {COLUMNS} FROM imports WHERE id = $1");
    let row: Option<ImportRecord> = on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?);
    Ok(row)
}

/// A firm's imports, newest first.
pub async fn list(db: &Database, firm: &str, limit: i64) -> Result<Vec<ImportRecord>, ImportError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM imports WHERE firm_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
    );
    let rows: Vec<ImportRecord> = on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(firm)
        .bind(limit)
        .fetch_all(pool)
        .await?);
    Ok(rows)
}

/// The file and the request of an import.
pub async fn content(db: &Database, id: &str) -> Result<Option<(Vec<u8>, Request)>, ImportError> {
    let row: Option<(Vec<u8>, String)> = on_pool!(db, pool => sqlx::query_as(
        "SELECT content, options FROM imports WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?);
    row.map(|(c, o)| {
        serde_json::from_str(&o)
            .map(|r| (c, r))
            .map_err(|e| ImportError::Other(format!("import {id}: stored options unreadable: {e}")))
    })
    .transpose()
}

/// The error report (CSV) of an import with refused rows.
pub async fn errors_csv(db: &Database, id: &str) -> Result<Option<String>, ImportError> {
    let row: Option<(Option<String>,)> = on_pool!(db, pool => sqlx::query_as(
        "SELECT errors_csv FROM imports WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?);
    Ok(row.and_then(|r| r.0))
}

/// The import is running: its rows counted and checked.
pub(crate) async fn started(
    db: &Database,
    id: &str,
    total: usize,
    created_before: usize,
) -> Result<(), ImportError> {
    let _turn = db.write_turn(Lane::Background).await;
    on_pool!(db, pool => sqlx::query(
        "UPDATE imports SET status = 'running', rows_total = $2, rows_validated = $2, rows_created = $3, updated_at = $4 WHERE id = $1",
    )
    .bind(id)
    .bind(total as i64)
    .bind(created_before as i64)
    .bind(now_ms())
    .execute(pool)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// How an import ended.
pub(crate) struct Finish<'a> {
    pub status: &'a str,
    pub skipped: usize,
    pub refused: usize,
    pub report: &'a str,
    pub errors_csv: Option<&'a str>,
    pub error: Option<&'a str>,
}

pub(crate) async fn finish(db: &Database, id: &str, f: Finish<'_>) -> Result<(), ImportError> {
    let now = now_ms();
    let _turn = db.write_turn(Lane::Background).await;
    let finished = |e: sqlx::Error| ImportError::from(e);
    on_pool!(db, pool => {
        let mut tx = pool.begin().await.map_err(finished)?;
        // The event once per import: a run that ends again (a rescued job
        // finding its import finished) tells nothing new. A write first, so
        // that a SQLite transaction takes the write lock at once instead of
        // upgrading a read lock (which another writer would make fail).
        let first = sqlx::query(
            "UPDATE imports SET finished_at = finished_at WHERE id = $1 AND finished_at IS NULL",
        )
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(finished)?
        .rows_affected()
            == 1;
        let row: Option<(String, i64, i64)> = sqlx::query_as(
            "UPDATE imports SET status = $2, rows_skipped = $3, rows_refused = $4, report = $5, errors_csv = $6, error = $7, updated_at = $8, finished_at = $8
             WHERE id = $1
             RETURNING firm_id, rows_total, rows_created",
        )
        .bind(id)
        .bind(f.status)
        .bind(f.skipped as i64)
        .bind(f.refused as i64)
        .bind(f.report)
        .bind(f.errors_csv)
        .bind(f.error)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(finished)?;
        if let (true, Some((firm, total, created))) = (first, row) {
            let event = crate::events::Event::for_import(
                crate::events::EventType::ImportFinished,
                &firm,
                id,
                serde_json::json!({
                    "status": f.status,
                    "rows": total,
                    "created": created,
                    "skipped": f.skipped,
                    "refused": f.refused,
                    "report": format!("dossier imports show {id}"),
                    "errors_csv": f.errors_csv.map(|_| format!("dossier imports show {id} --errors")),
                }),
            );
            crate::events::emit!(tx, &event).map_err(finished)?;
        }
        tx.commit().await.map_err(finished)?;
    });
    Ok(())
}

/// Takes over import `id` if nobody touched it since `seen_updated_at`
/// (one of several scans racing for a file left behind wins).
pub(crate) async fn take_over(
    db: &Database,
    id: &str,
    seen_updated_at: i64,
) -> Result<bool, ImportError> {
    let _turn = db.write_turn(Lane::Background).await;
    let done = on_pool!(db, pool => sqlx::query(
        "UPDATE imports SET updated_at = $3 WHERE id = $1 AND updated_at = $2",
    )
    .bind(id)
    .bind(seen_updated_at)
    .bind(now_ms().max(seen_updated_at + 1))
    .execute(pool)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}
