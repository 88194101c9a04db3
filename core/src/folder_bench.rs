//! `dossier-worker bench-folders`: writes the folders of N clients (the
//! built-in tree, one 12-month exercice each) the way the jobs do
//! ([`folders::materialize`]: trees assigned, exercices read, rows planned
//! and written with `ON CONFLICT DO NOTHING`), then inserts the very same
//! rows into an identical scratch table the fastest bare way the engine
//! has — `COPY` on PostgreSQL, one prepared multi-row `INSERT` reused in a
//! single transaction on SQLite — and prints both rates. Prints one JSON line.

use std::time::Instant;

use serde::Serialize;

use crate::clock::now_ms;
use crate::db::{Database, DbError, placeholders};
use crate::exercice::Exercice;
use crate::exercice::rules::{self, Span};
use crate::tree::folders::{self, COPY_COLUMNS as COLUMNS, Folder, FolderError, copy_line};
use crate::tree::templates;

#[derive(Debug, Clone)]
pub struct FolderBenchOptions {
    /// sqlite://… (a scratch file is best) or postgres://…
    pub database_url: String,
    pub clients: usize,
}

#[derive(Debug, Serialize)]
pub struct FolderBenchResult {
    pub engine: &'static str,
    pub clients: usize,
    pub folders: u64,
    pub materialize_s: f64,
    pub materialize_folders_per_s: f64,
    /// `copy` (PostgreSQL) or `prepared multi-row insert` (SQLite).
    pub baseline: &'static str,
    pub baseline_s: f64,
    pub baseline_rows_per_s: f64,
    /// materialize rate / baseline rate.
    pub ratio: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum FolderBenchError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Folders(#[from] FolderError),
    #[error(transparent)]
    Template(#[from] crate::tree::TemplateError),
    #[error(
        "the benchmark wrote {written} folders, expected {expected}: is the database shared with another run?"
    )]
    Mismatch { written: u64, expected: u64 },
}

const EXERCICE: (&str, &str) = ("2026-01-01", "2026-12-31");
const SEED_ROWS: usize = 1_000;
const BASELINE_ROWS: usize = 1_000;

pub async fn run(options: &FolderBenchOptions) -> Result<FolderBenchResult, FolderBenchError> {
    let db = Database::connect(&options.database_url, 4).await?;
    db.migrate().await?;
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let firm = format!("bench-{tag}");
    let ids: Vec<String> = (0..options.clients)
        .map(|i| format!("bench-{tag}-{i:06}"))
        .collect();
    seed(&db, &firm, &ids).await?;

    let started = Instant::now();
    let report = folders::materialize(&db, &ids, None).await?;
    let materialize_s = started.elapsed().as_secs_f64();

    let template = templates::builtin()?;
    let span = Span {
        start: chrono::NaiveDate::parse_from_str(EXERCICE.0, "%Y-%m-%d").unwrap_or_default(),
        end: chrono::NaiveDate::parse_from_str(EXERCICE.1, "%Y-%m-%d").unwrap_or_default(),
    };
    let mut rows = Vec::new();
    for id in &ids {
        let ex = Exercice {
            id: format!("{id}-ex"),
            client_id: id.clone(),
            start: span.start,
            end: span.end,
            label: rules::base_label(span),
            origin: "manual".into(),
            created_at_ms: 0,
            folders_done_at_ms: None,
        };
        rows.extend(folders::plan(id, &template, std::slice::from_ref(&ex)));
    }
    rows.sort_unstable_by(|a, b| (&a.client_id, &a.path).cmp(&(&b.client_id, &b.path)));
    if report.created != rows.len() as u64 {
        return Err(FolderBenchError::Mismatch {
            written: report.created,
            expected: rows.len() as u64,
        });
    }
    let scratch = format!("bench_folders_{tag}");
    let (baseline, baseline_s) = match &db {
        Database::Postgres(pool) => ("copy", copy_baseline(pool, &scratch, &rows).await?),
        Database::Sqlite(pool) => (
            "prepared multi-row insert",
            insert_baseline(pool, &scratch, &rows).await?,
        ),
    };
    cleanup(&db, &firm, &scratch).await?;
    let materialize_rate = report.created as f64 / materialize_s;
    let baseline_rate = rows.len() as f64 / baseline_s;
    Ok(FolderBenchResult {
        engine: match db {
            Database::Postgres(_) => "postgres",
            Database::Sqlite(_) => "sqlite",
        },
        clients: ids.len(),
        folders: report.created,
        materialize_s,
        materialize_folders_per_s: materialize_rate,
        baseline,
        baseline_s,
        baseline_rows_per_s: baseline_rate,
        ratio: materialize_rate / baseline_rate,
    })
}

/// Clients and their exercice, inserted in bulk (not measured).
async fn seed(db: &Database, firm: &str, ids: &[String]) -> Result<(), FolderBenchError> {
    let now = now_ms();
    for chunk in ids.chunks(SEED_ROWS) {
        let values = |cols: usize| {
            (0..chunk.len())
                .map(|i| format!("({})", placeholders(i * cols + 1, cols)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let clients = format!(
            "INSERT INTO clients (id, firm_id, created_at, updated_at) VALUES {}",
            values(4)
        );
        let exercices = format!(
            "INSERT INTO exercices (id, client_id, start_date, end_date, label, origin, created_at) VALUES {}",
            values(7)
        );
        crate::db::on_pool!(db, pool => {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(clients));
            for id in chunk {
                q = q.bind(id).bind(firm).bind(now).bind(now);
            }
            q.execute(pool).await?;
            let mut q = sqlx::query(sqlx::AssertSqlSafe(exercices));
            for id in chunk {
                q = q
                    .bind(format!("{id}-ex"))
                    .bind(id)
                    .bind(EXERCICE.0)
                    .bind(EXERCICE.1)
                    .bind("2026")
                    .bind("manual")
                    .bind(now);
            }
            q.execute(pool).await?;
        });
    }
    Ok(())
}

async fn copy_baseline(
    pool: &sqlx::PgPool,
    scratch: &str,
    rows: &[Folder],
) -> Result<f64, FolderBenchError> {
    use sqlx::postgres::PgPoolCopyExt;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {scratch} (LIKE client_folders INCLUDING ALL)"
    )))
    .execute(pool)
    .await?;
    let now = now_ms().to_string();
    let started = Instant::now();
    let statement = format!("COPY {scratch} ({COLUMNS}) FROM STDIN");
    let mut copy = pool.copy_in_raw(&statement).await?;
    let mut buf = String::with_capacity(1 << 20);
    for f in rows {
        copy_line(&mut buf, f, &now);
        if buf.len() >= 1 << 20 {
            copy.send(std::mem::take(&mut buf).into_bytes()).await?;
        }
    }
    copy.send(buf.into_bytes()).await?;
    copy.finish().await?;
    Ok(started.elapsed().as_secs_f64())
}

async fn insert_baseline(
    pool: &sqlx::SqlitePool,
    scratch: &str,
    rows: &[Folder],
) -> Result<f64, FolderBenchError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {scratch} (client_id TEXT NOT NULL, path TEXT NOT NULL, parent_path TEXT NOT NULL,
            name TEXT NOT NULL, kind TEXT NOT NULL, theme TEXT, exercice_id TEXT, created_at INTEGER NOT NULL,
            PRIMARY KEY (client_id, path)) WITHOUT ROWID"
    )))
    .execute(pool)
    .await?;
    let now = now_ms();
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    for chunk in rows.chunks(BASELINE_ROWS) {
        let sql = format!(
            "INSERT INTO {scratch} ({COLUMNS}) VALUES {}",
            vec!["(?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ")
        );
        folders::bind_rows(sqlx::query(sqlx::AssertSqlSafe(sql)), chunk, now)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(started.elapsed().as_secs_f64())
}

/// Removes everything the run wrote, so the database can be reused.
async fn cleanup(db: &Database, firm: &str, scratch: &str) -> Result<(), FolderBenchError> {
    // Client ids start with the firm's name (see `run`).
    let prefix = format!("{firm}-%");
    crate::db::on_pool!(db, pool => {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {scratch}"))).execute(pool).await?;
        for table in ["client_folders", "client_trees", "exercices"] {
            sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE client_id LIKE $1")))
                .bind(&prefix)
                .execute(pool)
                .await?;
        }
        sqlx::query("DELETE FROM clients WHERE firm_id = $1").bind(firm).execute(pool).await?;
    });
    Ok(())
}
