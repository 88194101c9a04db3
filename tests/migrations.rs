//! Migrations apply on a fresh SQLite file and a fresh PostgreSQL database,
//! and applying them again is a no-op.

use dossier_core::db::Database;
use dossier_e2e::{create_empty_postgres_database, drop_postgres_database};

/// How many migrations the repository ships for an engine.
fn shipped(engine: &str) -> usize {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/");
    std::fs::read_dir(format!("{dir}{engine}"))
        .expect("migrations dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count()
}

#[test]
fn both_engines_ship_the_same_migrations() {
    let names = |engine: &str| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/");
        let mut v: Vec<String> = std::fs::read_dir(format!("{dir}{engine}"))
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("sqlite"), names("postgres"));
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
    assert_eq!(db.migrate().await.expect("migrates"), shipped("sqlite"));
    assert_eq!(db.migrate().await.expect("idempotent"), 0);
    let Database::Sqlite(pool) = db else {
        panic!("sqlite url gives a sqlite pool")
    };
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('clients', 'jobs', 'workers', 'tree_templates', 'client_trees', 'exercices', 'client_folders', 'invitations') ORDER BY name")
            .fetch_all(&pool)
            .await
            .expect("query");
    assert_eq!(
        tables,
        vec![
            "client_folders",
            "client_trees",
            "clients",
            "exercices",
            "invitations",
            "jobs",
            "tree_templates",
            "workers"
        ]
    );
}

#[tokio::test]
async fn postgres_migrations_apply_once() {
    let (url, name) = create_empty_postgres_database().await;
    let db = Database::connect(&url, 2).await.expect("connects");
    assert_eq!(db.migrate().await.expect("migrates"), shipped("postgres"));
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
    assert_eq!(columns, 20, "same columns as the SQLite jobs table");
    pool.close().await;
    drop_postgres_database(&name).await;
}
