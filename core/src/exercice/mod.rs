//! Exercices (fiscal years) of a client: adding one under the rules of
//! [`rules`], listing them, and finding those the rollover must extend.
//!
//! Adding takes the client's row lock first (an `UPDATE` that changes
//! nothing), so two adds for one client — a user and the scheduler, or two
//! schedulers — are checked one after the other; the unique keys on
//! (client, start) and (client, label) hold even if that were bypassed.

pub mod rules;

use chrono::NaiveDate;
use serde::Serialize;

use crate::clock::now_ms;
use crate::db::{Database, on_pool};
use crate::write_gate::Lane;
pub use rules::{RuleError, Span};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `dossier exercice add`, or client creation.
    Manual,
    /// Created by the scheduled rollover before the previous one ends.
    Rollover,
}

impl Origin {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Origin::Manual => "manual",
            Origin::Rollover => "rollover",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Exercice {
    pub id: String,
    pub client_id: String,
    pub start: NaiveDate,
    pub end: NaiveDate,
    /// The exercice folder's name.
    pub label: String,
    pub origin: String,
    pub created_at_ms: i64,
    /// When its folders were written; `None` while the job is pending.
    pub folders_done_at_ms: Option<i64>,
}

impl Exercice {
    pub fn span(&self) -> Span {
        Span {
            start: self.start,
            end: self.end,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExerciceError {
    #[error("exercice refused: {0}")]
    Rule(#[from] RuleError),
    #[error("no client with id {0}")]
    ClientNotFound(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("stored exercice {id} is unreadable: {why}")]
    Corrupt { id: String, why: String },
}

type Row = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
);

/// Binds: id, client, start, end (YYYY-MM-DD), label, origin, created time.
pub(crate) const INSERT: &str =
    "INSERT INTO exercices (id, client_id, start_date, end_date, label, origin, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

const SELECT: &str = "SELECT id, client_id, start_date, end_date, label, origin, created_at, folders_done_at FROM exercices";

fn decode(row: Row) -> Result<Exercice, ExerciceError> {
    let (id, client_id, start, end, label, origin, created, done) = row;
    let date = |s: &str| {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|e| ExerciceError::Corrupt {
            id: id.clone(),
            why: format!("date {s:?}: {e}"),
        })
    };
    Ok(Exercice {
        start: date(&start)?,
        end: date(&end)?,
        id,
        client_id,
        label,
        origin,
        created_at_ms: created,
        folders_done_at_ms: done,
    })
}

fn decode_all(rows: Vec<Row>) -> Result<Vec<Exercice>, ExerciceError> {
    rows.into_iter().map(decode).collect()
}

/// A client's exercices, oldest first.
pub async fn list(db: &Database, client_id: &str) -> Result<Vec<Exercice>, ExerciceError> {
    let sql = format!("{SELECT} WHERE client_id = $1 ORDER BY start_date");
    let rows: Vec<Row> = on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(client_id).fetch_all(pool).await?);
    decode_all(rows)
}

pub async fn get(db: &Database, id: &str) -> Result<Option<Exercice>, ExerciceError> {
    let sql = format!("{SELECT} WHERE id = $1");
    let row: Option<Row> = on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?);
    row.map(decode).transpose()
}

/// The exercices of several clients, oldest first within each client.
pub async fn list_many(
    db: &Database,
    client_ids: &[String],
) -> Result<Vec<Exercice>, ExerciceError> {
    if client_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "{SELECT} WHERE client_id IN ({}) ORDER BY client_id, start_date",
        crate::db::placeholders(1, client_ids.len())
    );
    let rows: Vec<Row> = on_pool!(db, pool => {
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        for id in client_ids {
            q = q.bind(id);
        }
        q.fetch_all(pool).await?
    });
    decode_all(rows)
}

/// What [`add`] did.
#[derive(Debug, Clone)]
pub enum Added {
    Created(Exercice),
    /// Only with `if_absent`: an exercice already starts that day.
    AlreadyThere(Exercice),
}

/// Adds an exercice to a client. `end` defaults to start + 12 months − 1
/// day. With `if_absent`, an exercice already starting on `start` is
/// returned instead of refused (the rollover's way of being idempotent).
pub async fn add(
    db: &Database,
    client_id: &str,
    start: NaiveDate,
    end: Option<NaiveDate>,
    allow_gap: bool,
    origin: Origin,
    if_absent: bool,
) -> Result<Added, ExerciceError> {
    add_inner(
        db, client_id, start, end, allow_gap, origin, if_absent, None,
    )
    .await
}

/// Adds an exercice by hand and, in the same transaction, stages its
/// `fiscal_folders` job in the outbox (see `crate::outbox`).
pub async fn add_with_folders(
    db: &Database,
    client_id: &str,
    start: NaiveDate,
    end: Option<NaiveDate>,
    allow_gap: bool,
    max_attempts: u32,
) -> Result<Added, ExerciceError> {
    add_inner(
        db,
        client_id,
        start,
        end,
        allow_gap,
        Origin::Manual,
        false,
        Some(max_attempts),
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn add_inner(
    db: &Database,
    client_id: &str,
    start: NaiveDate,
    end: Option<NaiveDate>,
    allow_gap: bool,
    origin: Origin,
    if_absent: bool,
    folders_job_attempts: Option<u32>,
) -> Result<Added, ExerciceError> {
    let end = match end {
        Some(e) => e,
        None => rules::default_end(start).ok_or(RuleError::OutOfRange(start))?,
    };
    let span = Span { start, end };
    let id = uuid::Uuid::now_v7().to_string();
    let now = now_ms();
    let select = format!("{SELECT} WHERE client_id = $1 ORDER BY start_date");
    let _turn = db.write_turn(Lane::Background).await;
    let outcome = on_pool!(db, pool => {
        let mut tx = pool.begin().await?;
        // The write lock on the client's row (SQLite: on the database)
        // orders concurrent adds for this client.
        let locked = sqlx::query("UPDATE clients SET updated_at = updated_at WHERE id = $1")
            .bind(client_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if locked == 0 {
            return Err(ExerciceError::ClientNotFound(client_id.to_string()));
        }
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(select))
            .bind(client_id)
            .fetch_all(&mut *tx)
            .await?;
        let existing = decode_all(rows)?;
        if if_absent
            && let Some(same) = existing.iter().find(|e| e.start == start)
        {
            return Ok(Added::AlreadyThere(same.clone()));
        }
        let others: Vec<rules::Existing> = existing
            .iter()
            .map(|e| rules::Existing { span: e.span(), label: e.label.clone() })
            .collect();
        rules::check_plausible(span, chrono::Utc::now().date_naive())?;
        rules::check_new(span, &others, allow_gap)?;
        let base = rules::base_label(span);
        let label = if existing.iter().any(|e| e.label == base) {
            rules::disambiguated_label(span)
        } else {
            base
        };
        sqlx::query(INSERT)
        .bind(&id)
        .bind(client_id)
        .bind(start.to_string())
        .bind(end.to_string())
        .bind(&label)
        .bind(origin.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if let Some(attempts) = folders_job_attempts {
            let job = crate::job::NewJob {
                kind: crate::jobs::fiscal_folders::KIND.into(),
                payload: serde_json::json!({ "client_id": client_id, "exercice_id": id }),
                run_at_ms: None,
                max_attempts: attempts,
                idempotency_key: Some(format!("fiscal_folders:{id}")),
                trace_id: None,
                group: None,
                subject: None,
                bulk: false,
            };
            crate::outbox::stage!(tx, &job)?;
        }
        crate::events::emit_for_client!(
            tx,
            crate::events::EventType::ExerciceCreated,
            client_id,
            serde_json::json!({
                "exercice_id": id,
                "label": label,
                "start": start.to_string(),
                "end": end.to_string(),
                "origin": origin.as_str(),
            })
        )?;
        tx.commit().await?;
        Added::Created(Exercice {
            id: id.clone(),
            client_id: client_id.to_string(),
            start,
            end,
            label,
            origin: origin.as_str().to_string(),
            created_at_ms: now,
            folders_done_at_ms: None,
        })
    });
    Ok(outcome)
}

/// The latest exercice of each client that ends between `not_before` and
/// `horizon` and has no successor: those the rollover extends (archived
/// clients get none). Paged by client id.
pub async fn due_for_rollover(
    db: &Database,
    not_before: NaiveDate,
    horizon: NaiveDate,
    after_client: &str,
    limit: i64,
) -> Result<Vec<Exercice>, ExerciceError> {
    let sql = format!(
        "{SELECT} e WHERE end_date <= $1 AND end_date >= $2 AND client_id > $3
           AND NOT EXISTS (SELECT 1 FROM exercices later
                           WHERE later.client_id = e.client_id AND later.start_date > e.start_date)
           AND NOT EXISTS (SELECT 1 FROM clients c WHERE c.id = e.client_id AND c.archived_at IS NOT NULL)
         ORDER BY client_id LIMIT $4"
    );
    let rows: Vec<Row> = on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(horizon.to_string())
        .bind(not_before.to_string())
        .bind(after_client)
        .bind(limit)
        .fetch_all(pool)
        .await?);
    decode_all(rows)
}

/// Exercices created before `created_before_ms` whose folders were never
/// written (the job was lost before it was queued, say): the rollover
/// queues their folders again (not an archived client's).
pub async fn folders_pending(
    db: &Database,
    created_before_ms: i64,
    limit: i64,
) -> Result<Vec<Exercice>, ExerciceError> {
    let sql = format!(
        "{SELECT} e WHERE folders_done_at IS NULL AND created_at < $1
           AND NOT EXISTS (SELECT 1 FROM clients c WHERE c.id = e.client_id AND c.archived_at IS NOT NULL)
         ORDER BY created_at LIMIT $2"
    );
    let rows: Vec<Row> = on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(created_before_ms)
        .bind(limit)
        .fetch_all(pool)
        .await?);
    decode_all(rows)
}
