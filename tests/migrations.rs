//! Migrations apply on a fresh SQLite file and a fresh PostgreSQL database,
//! and applying them again is a no-op.

use dossier_core::db::Database;
use sqlx::Connection;

fn postgres_admin_url() -> String {
    std::env::var("DOSSIER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The admin URL with its database swapped for `db`.
fn with_database(admin: &str, db: &str) -> String {
    let (base, _) = admin.rsplit_once('/').unwrap_or((admin, ""));
    format!("{base}/{db}")
}

#[tokio::test]
async fn sqlite_migrations_apply_once() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!(
        "sqlite://{}",
        dir.path().join("nested/dossier.db").display()
    );
    let db = Database::connect(&url, 1)
        .await
        .expect("creates file and parent dir");
    assert_eq!(db.migrate().await.expect("migrates"), 2);
    assert_eq!(db.migrate().await.expect("idempotent"), 0);
    let Database::Sqlite(pool) = db else {
        panic!("sqlite url gives a sqlite pool")
    };
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('clients', 'jobs', 'workers') ORDER BY name")
            .fetch_all(&pool)
            .await
            .expect("query");
    assert_eq!(tables, vec!["clients", "jobs", "workers"]);
}

#[tokio::test]
async fn postgres_migrations_apply_once() {
    let admin_url = postgres_admin_url();
    let name = format!("dossier_test_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("PostgreSQL reachable: run scripts/test, or set DOSSIER_TEST_POSTGRES_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create test database");

    let db = Database::connect(&with_database(&admin_url, &name), 2)
        .await
        .expect("connects");
    assert_eq!(db.migrate().await.expect("migrates"), 2);
    assert_eq!(db.migrate().await.expect("idempotent"), 0);
    let Database::Postgres(pool) = &db else {
        panic!("postgres url gives a postgres pool")
    };
    let columns: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.columns WHERE table_name = 'jobs'",
    )
    .fetch_one(pool)
    .await
    .expect("query");
    assert_eq!(columns, 17, "same columns as the SQLite jobs table");
    pool.close().await;

    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("drop test database");
}
