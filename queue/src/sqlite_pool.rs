//! Opening the SQLite file the queue (and the application's tables beside
//! it) lives in.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot create the directory {path} for the SQLite database: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot connect to {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
}

/// The file a `sqlite:` URL names, when it names one (not `:memory:`).
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path.starts_with(":memory:") {
        None
    } else {
        Some(PathBuf::from(path))
    }
}

/// Opens a SQLite pool tuned for a job queue: WAL (readers never block the
/// writer), `synchronous=NORMAL` (durable across process crashes, which is
/// what a queue needs; apalis-sqlite's OFF is not), and a busy timeout so
/// that several processes on one file wait rather than fail.
pub async fn connect(url: &str, max_connections: u32) -> Result<SqlitePool, ConnectError> {
    if let Some(parent) = sqlite_path(url).and_then(|p| p.parent().map(PathBuf::from))
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(&parent).map_err(|source| ConnectError::CreateDir {
            path: parent.clone(),
            source,
        })?;
    }
    let redacted = crate::redact_url(url);
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|source| ConnectError::Connect {
            url: redacted.clone(),
            source,
        })?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    SqlitePoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await
        .map_err(|source| ConnectError::Connect {
            url: redacted,
            source,
        })
}

/// An in-memory database on the shipped schema, for the plan tests.
#[cfg(test)]
pub(crate) async fn migrated_in_memory() -> SqlitePool {
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .expect("memory database");
    sqlx::migrate!("../migrations/sqlite")
        .run(&pool)
        .await
        .expect("migrated");
    pool
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_path_reads_urls() {
        assert_eq!(
            sqlite_path("sqlite://var/x.db"),
            Some(PathBuf::from("var/x.db"))
        );
        assert_eq!(
            sqlite_path("sqlite:/tmp/x.db?mode=rwc"),
            Some(PathBuf::from("/tmp/x.db"))
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://h/db"), None);
    }
}
