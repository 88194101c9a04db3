//! The `siret_enrichment` job end to end: clients in a real database
//! (SQLite, and PostgreSQL with the Redis queue), the registries played by a
//! real HTTP stub, jobs run by the worker runtime.

use std::sync::Arc;
use std::time::Duration;

use dossier_core::clients::{self, ClientError, EnrichmentStatus, Fields, NewClient};
use dossier_core::db::Database;
use dossier_core::job::{JobStatus, NewJob};
use dossier_core::jobs::{JobDeps, siret_enrichment};
use dossier_core::runtime::Registry;
use dossier_core::sirene::recherche::RechercheEntreprises;
use dossier_core::sirene::{Provider, ProviderSettings, Quota, Sirene};
use dossier_e2e::registry_stub::{RegistryStub, Scripted};
use dossier_e2e::{BackendKind, TestQueue};
use sqlx::Connection;

const GANYMEDE: &str = "88087814500015";
const UNKNOWN: &str = "73282932000074";
const LONG: Duration = Duration::from_secs(20);

async fn deps(db: Database, stub_base: &str) -> Arc<JobDeps> {
    let provider: Arc<dyn Provider> = Arc::new(
        RechercheEntreprises::new(
            ProviderSettings {
                base_url: stub_base.to_string(),
                timeout_ms: 1_000,
                quota_requests: 100,
                quota_window_ms: 1_000,
            },
            "dossier-tests",
        )
        .expect("client"),
    );
    Arc::new(JobDeps {
        db,
        sirene: Sirene::new(vec![provider], Quota::local(), Duration::from_secs(2)),
    })
}

fn registry(deps: Arc<JobDeps>) -> Registry {
    let mut r = Registry::new();
    siret_enrichment::register(&mut r, deps);
    r
}

fn job(client_id: &str) -> NewJob {
    NewJob {
        kind: siret_enrichment::KIND.into(),
        payload: serde_json::json!({ "client_id": client_id }),
        run_at_ms: None,
        max_attempts: 3,
        idempotency_key: None,
        trace_id: None,
    }
}

fn typed(pairs: &[(&str, &str)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn sqlite_db(q: &TestQueue) -> Database {
    let db = Database::connect(&q.settings.database.url, 2)
        .await
        .expect("db");
    db.migrate().await.expect("migrate");
    db
}

/// The scenario both database engines must pass.
async fn enriches_without_overwriting_what_was_typed(q: &TestQueue, db: Database) {
    let stub = RegistryStub::default();
    let base = stub.start().await;
    let deps = deps(db.clone(), &base).await;
    let client = clients::create(
        &db,
        NewClient {
            firm_id: "cabinet-1".into(),
            siret: Some("880 878 145 00015".into()),
            entered: typed(&[
                ("legal_name", "Ganymède Conseil"),
                ("address.city", "Paris 8"),
            ]),
        },
    )
    .await
    .expect("created");
    assert_eq!(client.enrichment_status, EnrichmentStatus::Pending);
    let id = q.push(job(&client.id)).await;
    let w = q.start_worker(registry(deps));
    let done = q.wait_for(&id, LONG, |j| j.status == JobStatus::Done).await;
    // Run it again: same record (idempotent).
    let again = q.push(job(&client.id)).await;
    q.wait_for(&again, LONG, |j| j.status == JobStatus::Done)
        .await;
    w.stop().await;

    let result = done.result.expect("result");
    assert_eq!(result["status"], "enriched");
    assert_eq!(result["provider"], "recherche-entreprises");
    let c = clients::get(&db, &client.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(c.enrichment_status, EnrichmentStatus::Enriched);
    assert_eq!(
        c.company["legal_name"], "Ganymède Conseil",
        "typed value kept"
    );
    assert_eq!(c.company["address.city"], "Paris 8");
    assert_eq!(c.company["naf_code"], "62.02A", "empty field filled");
    assert_eq!(c.company["legal_form_label"], "SAS");
    assert_eq!(c.company["vat_number"], "FR09880878145");
    assert_eq!(c.differences.len(), 1, "{:?}", c.differences);
    assert_eq!(c.differences[0].field, "legal_name");
    assert_eq!(c.differences[0].registry, "GANYMEDE");
    let registry = c.registry.expect("registry facts kept apart");
    assert_eq!(registry.legal_name.as_deref(), Some("GANYMEDE"));
    assert!(
        c.warning
            .expect("closed company warning")
            .contains("closed")
    );
    assert_eq!(c.directors.len(), 1);
    assert_eq!(c.directors[0].name, "JOUPPE");
    assert_eq!(stub.requests("search").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrichment_on_sqlite() {
    let q = TestQueue::new(BackendKind::Sqlite).await;
    let db = sqlite_db(&q).await;
    enriches_without_overwriting_what_was_typed(&q, db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrichment_on_postgres_with_the_redis_queue() {
    let admin_url = std::env::var("DOSSIER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("dossier_test_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("PostgreSQL reachable");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create database");
    let (base, _) = admin_url.rsplit_once('/').unwrap_or((&admin_url, ""));
    let db = Database::connect(&format!("{base}/{name}"), 4)
        .await
        .expect("connect");
    db.migrate().await.expect("migrate");

    let q = TestQueue::new(BackendKind::Redis).await;
    enriches_without_overwriting_what_was_typed(&q, db.clone()).await;

    // The unique index holds on PostgreSQL too.
    let dup = clients::create(
        &db,
        NewClient {
            firm_id: "cabinet-1".into(),
            siret: Some(GANYMEDE.into()),
            entered: Fields::new(),
        },
    )
    .await;
    assert!(
        matches!(dup, Err(ClientError::DuplicateSiret { .. })),
        "{dup:?}"
    );
    if let Database::Postgres(pool) = &db {
        pool.close().await;
    }
    q.cleanup().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("drop database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_siret_fails_for_good_and_manual_clients_are_skipped() {
    let q = TestQueue::new(BackendKind::Sqlite).await;
    let db = sqlite_db(&q).await;
    let stub = RegistryStub::default();
    let base = stub.start().await;
    let unknown = clients::create(
        &db,
        NewClient {
            firm_id: "f".into(),
            siret: Some(UNKNOWN.into()),
            entered: Fields::new(),
        },
    )
    .await
    .expect("created");
    let manual = clients::create(
        &db,
        NewClient {
            firm_id: "f".into(),
            siret: None,
            entered: typed(&[("legal_name", "Boulangerie Martin")]),
        },
    )
    .await
    .expect("a client without SIRET is allowed");
    assert_eq!(manual.enrichment_status, EnrichmentStatus::Skipped);
    let j1 = q.push(job(&unknown.id)).await;
    let j2 = q.push(job(&manual.id)).await;
    let j3 = q.push(job("no-such-client")).await;
    let w = q.start_worker(registry(deps(db.clone(), &base).await));
    let dead = q.wait_for(&j1, LONG, |j| j.status == JobStatus::Dead).await;
    let skipped = q.wait_for(&j2, LONG, |j| j.status == JobStatus::Done).await;
    let missing = q.wait_for(&j3, LONG, |j| j.status == JobStatus::Dead).await;
    w.stop().await;
    assert_eq!(dead.attempts, 1, "not found is permanent");
    let msg = dead.last_error.expect("reason");
    assert!(
        msg.contains(UNKNOWN) && msg.contains("recherche-entreprises"),
        "{msg}"
    );
    let c = clients::get(&db, &unknown.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        c.enrichment_status,
        EnrichmentStatus::NotFound,
        "{c:?} / {msg}"
    );
    assert_eq!(skipped.result.expect("result")["status"], "skipped");
    assert_eq!(
        missing.last_error.as_deref(),
        Some("client no-such-client does not exist")
    );
    assert_eq!(
        stub.requests("search").len(),
        1,
        "only the client with a SIRET asked the registry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_quota_is_retried_at_retry_after() {
    let q = TestQueue::new(BackendKind::Sqlite).await;
    let db = sqlite_db(&q).await;
    let stub = RegistryStub::default();
    let base = stub.start().await;
    stub.script("search", Scripted::too_many(1));
    let c = clients::create(
        &db,
        NewClient {
            firm_id: "f".into(),
            siret: Some(GANYMEDE.into()),
            entered: Fields::new(),
        },
    )
    .await
    .expect("created");
    let id = q.push(job(&c.id)).await;
    let w = q.start_worker(registry(deps(db.clone(), &base).await));
    let done = q.wait_for(&id, LONG, |j| j.status == JobStatus::Done).await;
    w.stop().await;
    assert_eq!(done.attempts, 2);
    assert_eq!(done.errors[0].class, "transient");
    let times = stub.requests("search");
    assert!(
        times[1] - times[0] >= Duration::from_millis(1_000),
        "{:?}",
        times[1] - times[0]
    );
}

#[tokio::test]
async fn duplicate_siret_in_a_firm_is_refused_naming_the_client() {
    let q = TestQueue::new(BackendKind::Sqlite).await;
    let db = sqlite_db(&q).await;
    let first = clients::create(
        &db,
        NewClient {
            firm_id: "f".into(),
            siret: Some(GANYMEDE.into()),
            entered: typed(&[("legal_name", "Ganymède")]),
        },
    )
    .await
    .expect("created");
    let err = clients::create(
        &db,
        NewClient {
            firm_id: "f".into(),
            siret: Some("880.878.145.00015".into()),
            entered: Fields::new(),
        },
    )
    .await
    .expect_err("duplicate");
    assert_eq!(
        err.to_string(),
        format!(
            "SIRET {GANYMEDE} is already used by client {} (Ganymède)",
            first.id
        )
    );
    // Another firm may have the same client.
    clients::create(
        &db,
        NewClient {
            firm_id: "other".into(),
            siret: Some(GANYMEDE.into()),
            entered: Fields::new(),
        },
    )
    .await
    .expect("other firm");
    let bad = clients::create(
        &db,
        NewClient {
            firm_id: "f".into(),
            siret: Some("8808781450001".into()),
            entered: Fields::new(),
        },
    )
    .await
    .expect_err("invalid");
    assert!(bad.to_string().contains("13 digits found"), "{bad}");
}
