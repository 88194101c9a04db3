//! Database connections and migrations, for SQLite (embedded) and PostgreSQL.

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::SqlitePool;

use crate::write_gate::{self, Lane, WriteTurn};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlite(#[from] dossier_queue::sqlite_pool::ConnectError),
    #[error("cannot connect to {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0}: use sqlite://PATH or postgres://…")]
    Unsupported(String),
}

/// Runs the same statement on whichever pool the database is: the body is
/// written once and compiled for each engine.
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Database::Sqlite($pool) => $body,
            Database::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// `$first, $first+1, …` for `n` values: an `IN (…)` list that both engines read.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A connection pool to the business database.
#[derive(Debug, Clone)]
pub enum Database {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

pub use dossier_queue::sqlite_pool::sqlite_path;

/// Opens a SQLite pool tuned for a job queue and its business tables (see
/// [`dossier_queue::sqlite_pool::connect`]).
pub async fn connect_sqlite(url: &str, max_connections: u32) -> Result<SqlitePool, DbError> {
    Ok(dossier_queue::sqlite_pool::connect(url, max_connections).await?)
}

impl Database {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Database, DbError> {
        if url.starts_with("sqlite:") {
            Ok(Database::Sqlite(
                connect_sqlite(url, max_connections).await?,
            ))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(30))
                .connect(url)
                .await
                .map_err(|source| DbError::Connect {
                    url: crate::config::redact_url(url),
                    source,
                })?;
            Ok(Database::Postgres(pool))
        } else {
            Err(DbError::Unsupported(crate::config::redact_url(url)))
        }
    }

    /// A turn to write, on SQLite (see [`crate::write_gate`]); nothing to
    /// wait for on PostgreSQL, whose writers lock rows, not the database.
    /// Hold it from the transaction's start to its commit.
    pub async fn write_turn(&self, lane: Lane) -> Option<WriteTurn> {
        match self {
            Database::Sqlite(pool) => Some(sqlite_write_turn(pool, lane).await),
            Database::Postgres(_) => None,
        }
    }

    /// How many of this build's migrations the database lacks (0: ready).
    pub async fn missing_migrations(&self) -> usize {
        match self {
            Database::Sqlite(pool) => SQLITE_MIGRATIONS
                .iter()
                .count()
                .saturating_sub(applied_sqlite(pool).await),
            Database::Postgres(pool) => POSTGRES_MIGRATIONS
                .iter()
                .count()
                .saturating_sub(applied_postgres(pool).await),
        }
    }

    /// Applies every migration not applied yet; returns how many ran.
    pub async fn migrate(&self) -> Result<usize, DbError> {
        match self {
            Database::Sqlite(pool) => {
                let before = applied_sqlite(pool).await;
                SQLITE_MIGRATIONS.run(pool).await?;
                Ok(SQLITE_MIGRATIONS.iter().count().saturating_sub(before))
            }
            Database::Postgres(pool) => {
                let before = applied_postgres(pool).await;
                POSTGRES_MIGRATIONS.run(pool).await?;
                Ok(POSTGRES_MIGRATIONS.iter().count().saturating_sub(before))
            }
        }
    }
}

/// A turn to write on the SQLite file of `pool`.
pub async fn sqlite_write_turn(pool: &SqlitePool, lane: Lane) -> WriteTurn {
    let options = pool.connect_options();
    write_gate::for_file(&options.get_filename().to_string_lossy())
        .turn(lane)
        .await
}

/// Migrates every database the settings use: the business database, and the
/// SQLite queue when it lives in a file of its own. Returns how many ran.
pub async fn migrate_all(settings: &crate::config::Settings) -> Result<usize, DbError> {
    let mut urls = vec![settings.database.url.as_str()];
    if settings.queue.backend == crate::config::QueueBackendKind::Sqlite {
        let queue_url = settings.queue.sqlite_url(&settings.database.url);
        if queue_url != settings.database.url {
            urls.push(queue_url);
        }
    }
    let mut applied = 0;
    for url in urls {
        applied += Database::connect(url, 1).await?.migrate().await?;
    }
    Ok(applied)
}

// Before the first migration the bookkeeping table does not exist: zero applied.
async fn applied_sqlite(pool: &SqlitePool) -> usize {
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .map(|n| n as usize)
        .unwrap_or(0)
}

async fn applied_postgres(pool: &PgPool) -> usize {
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .map(|n| n as usize)
        .unwrap_or(0)
}

/// A column of a [`BulkInsert`] and the type PostgreSQL reads it as.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Col {
    Text(&'static str),
    Int(&'static str),
    Bool(&'static str),
}

impl Col {
    fn name(self) -> &'static str {
        match self {
            Col::Text(n) | Col::Int(n) | Col::Bool(n) => n,
        }
    }
}

/// Many rows inserted by one statement with one parameter: a JSON array of
/// objects keyed by column name. No bind-count limit, one round trip, and
/// the same rows on both engines (`json_to_recordset` / `json_each`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BulkInsert {
    pub table: &'static str,
    pub cols: &'static [Col],
    /// `ON CONFLICT …`, or empty.
    pub on_conflict: &'static str,
}

impl BulkInsert {
    fn names(&self) -> String {
        self.cols
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn postgres_sql(&self) -> String {
        self.postgres_sql_with(1)
    }

    /// [`Self::postgres_sql`] reading its rows from parameter `$n`.
    fn postgres_sql_with(&self, n: usize) -> String {
        let types = self
            .cols
            .iter()
            .map(|c| match c {
                Col::Text(n) => format!("{n} text"),
                Col::Int(n) => format!("{n} bigint"),
                Col::Bool(n) => format!("{n} boolean"),
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "INSERT INTO {} ({}) SELECT {} FROM json_to_recordset(${n}::json) AS x({types}) {}",
            self.table,
            self.names(),
            self.names(),
            self.on_conflict
        )
    }

    pub fn sqlite_sql(&self) -> String {
        let values = self
            .cols
            .iter()
            .map(|c| format!("json_extract(value, '$.{}')", c.name()))
            .collect::<Vec<_>>()
            .join(", ");
        // `WHERE true` keeps SQLite from reading ON CONFLICT as a join clause.
        format!(
            "INSERT INTO {} ({}) SELECT {values} FROM json_each($1) WHERE true {}",
            self.table,
            self.names(),
            self.on_conflict
        )
    }
}

/// Runs a [`BulkInsert`] inside a transaction of either engine.
pub(crate) trait BulkExec {
    async fn bulk(
        &mut self,
        insert: &BulkInsert,
        rows: &[serde_json::Value],
    ) -> Result<u64, sqlx::Error>;

    /// Several inserts, in this order; tables without rows are skipped.
    async fn bulk_all(
        &mut self,
        inserts: &[(&BulkInsert, Vec<serde_json::Value>)],
    ) -> Result<(), sqlx::Error> {
        for (insert, rows) in inserts {
            self.bulk(insert, rows).await?;
        }
        Ok(())
    }
}

impl BulkExec for sqlx::Transaction<'_, sqlx::Sqlite> {
    async fn bulk(
        &mut self,
        insert: &BulkInsert,
        rows: &[serde_json::Value],
    ) -> Result<u64, sqlx::Error> {
        if rows.is_empty() {
            return Ok(0);
        }
        let r = sqlx::query(sqlx::AssertSqlSafe(insert.sqlite_sql()))
            .bind(serde_json::to_string(rows).unwrap_or_default())
            .execute(&mut **self)
            .await?;
        Ok(r.rows_affected())
    }
}

impl BulkExec for sqlx::Transaction<'_, sqlx::Postgres> {
    async fn bulk(
        &mut self,
        insert: &BulkInsert,
        rows: &[serde_json::Value],
    ) -> Result<u64, sqlx::Error> {
        if rows.is_empty() {
            return Ok(0);
        }
        let r = sqlx::query(sqlx::AssertSqlSafe(insert.postgres_sql()))
            .bind(serde_json::to_string(rows).unwrap_or_default())
            .execute(&mut **self)
            .await?;
        Ok(r.rows_affected())
    }

    /// One statement for all of them (one data-modifying `WITH` part per
    /// table; foreign keys are checked at the end of the statement): one
    /// round trip rather than one per table, for a client created through
    /// the hook.
    async fn bulk_all(
        &mut self,
        inserts: &[(&BulkInsert, Vec<serde_json::Value>)],
    ) -> Result<(), sqlx::Error> {
        let present: Vec<_> = inserts
            .iter()
            .filter(|(_, rows)| !rows.is_empty())
            .collect();
        if present.is_empty() {
            return Ok(());
        }
        let parts = present
            .iter()
            .enumerate()
            .map(|(i, (insert, _))| format!("w{i} AS ({})", insert.postgres_sql_with(i + 1)))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("WITH {parts} SELECT 1");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (_, rows) in &present {
            q = q.bind(serde_json::to_string(rows).unwrap_or_default());
        }
        q.execute(&mut **self).await?;
        Ok(())
    }
}
