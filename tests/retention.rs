//! The `retention` job removes exactly what `crate::retention`'s table says,
//! at the times it says: for each store one record just past its period
//! (removed) and one just within it (kept). Records are aged by moving
//! their stored times back. On SQLite, PostgreSQL with its queue, and
//! PostgreSQL with the Redis queue.

use std::time::{Duration, SystemTime};

use dossier_core::clock::now_ms;
use dossier_core::config::MailTransportKind;
use dossier_core::db::Database;
use dossier_core::import::{self, Limits, Request, store};
use dossier_core::import_bench::siret_for;
use dossier_core::invitations;
use dossier_core::job::{JobStatus, NewJob};
use dossier_core::jobs::retention::Retention;
use dossier_core::runtime::Registry;
use dossier_core::secrets::KeyRing;
use dossier_e2e::{BackendKind, TestQueue};

const FIRM: &str = "cabinet-retention";
const BEARER: &str = "hook-token-retention-012345678";
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

fn registry(q: &TestQueue, db: &Database) -> Registry {
    dossier_e2e::product_registry(q, db)
}

async fn exec(db: &Database, sql: &str, at: i64, id: &str) {
    match db {
        Database::Sqlite(p) => sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .bind(at)
            .bind(id)
            .execute(p)
            .await
            .map(|_| ()),
        Database::Postgres(p) => sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .bind(at)
            .bind(id)
            .execute(p)
            .await
            .map(|_| ()),
    }
    .expect("aged");
}

/// A statement with its values written in (the test's own).
async fn run_sql(db: &Database, sql: &str) {
    match db {
        Database::Sqlite(p) => sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(p)
            .await
            .map(|_| ()),
        Database::Postgres(p) => sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(p)
            .await
            .map(|_| ()),
    }
    .expect("statement");
}

async fn count(db: &Database, sql: &str) -> i64 {
    match db {
        Database::Sqlite(p) => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
                .fetch_one(p)
                .await
        }
        Database::Postgres(p) => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
                .fetch_one(p)
                .await
        }
    }
    .expect("count")
}

/// Moves a dead job's death back to `at`, wherever the backend keeps it.
async fn age_dead_job(q: &TestQueue, db: &Database, id: &str, at: i64) {
    match q.kind {
        BackendKind::Redis => {
            let client = redis::Client::open(dossier_e2e::redis_url()).expect("url");
            let mut c = client
                .get_multiplexed_async_connection()
                .await
                .expect("redis");
            let p = &q.settings.queue.prefix;
            let _: () = redis::cmd("HSET")
                .arg(format!("{p}:job:{id}"))
                .arg("finished_at")
                .arg(at)
                .query_async(&mut c)
                .await
                .expect("hset");
            let _: () = redis::cmd("ZADD")
                .arg(format!("{p}:dead:probe_dead"))
                .arg(at)
                .arg(id)
                .query_async(&mut c)
                .await
                .expect("zadd");
        }
        _ => exec(db, "UPDATE jobs SET finished_at = $1 WHERE id = $2", at, id).await,
    }
}

async fn retention_removes_what_its_table_says(kind: BackendKind) {
    let mut q = TestQueue::new(kind).await;
    if kind == BackendKind::Postgres {
        q.settings.queue.url = None;
    }
    q.settings.mail.transport = MailTransportKind::File;
    q.settings.invitations.wait_for_enrichment_secs = 0;
    let mail = q.dir.path().join("mail");
    q.settings.mail.outbox_dir = mail.display().to_string();
    let db = q.business_db().await;
    dossier_e2e::add_firm(&db, FIRM).await;
    let keys = KeyRing::new(&[]).expect("ring");
    let now = now_ms();

    // Two hook answers and two invitations (their emails as files).
    let settings = dossier_e2e::with_token(q.settings.clone(), BEARER);
    let (base, stop) = dossier_e2e::serve_api(&db, q.backend.clone(), &settings).await;
    let web = reqwest::Client::new();
    let mut clients = Vec::new();
    for (key, name, email) in [
        (
            "ret-old",
            "Menuiserie Ancienne",
            "ancien@menuiserie.example",
        ),
        ("ret-new", "Menuiserie Récente", "recent@menuiserie.example"),
    ] {
        let created: serde_json::Value = web
            .post(format!("{base}/v1/clients"))
            .bearer_auth(BEARER)
            .header("Idempotency-Key", key)
            .json(&serde_json::json!({
                "firm_id": FIRM,
                "company": { "legal_name": name },
                "exercice": { "start": "2026-01-01" },
                "director": { "email": email, "first_name": "Jeanne", "last_name": "Morel" },
            }))
            .send()
            .await
            .expect("post")
            .json()
            .await
            .expect("json");
        clients.push(created["client_id"].as_str().expect("id").to_string());
    }
    stop.cancel();
    // Two finished imports.
    let mut imports = Vec::new();
    for i in 0..2u64 {
        let csv = format!(
            "SIRET;Raison sociale;Début d'exercice;Fin d'exercice;Dirigeant email;Dirigeant prénom;Dirigeant nom;Inviter;Référence externe\r\n\
             {};Import {i};01/01/2026;;dirigeant{i}@import.example;Luc;Petit;non;REF-R{i}\r\n",
            siret_for(9_000 + i)
        );
        let id = store::new_id();
        let request = Request {
            firm_id: FIRM.into(),
            file_name: "clients.csv".into(),
            partial: true,
            providers: None,
            trace_id: None,
        };
        store::create(&db, &id, &request, csv.as_bytes(), None)
            .await
            .expect("recorded");
        import::run(
            &db,
            Limits::of(&q.settings),
            &keys,
            Some(q.backend.as_ref()),
            &id,
            &mut |_| {},
        )
        .await
        .expect("ran");
        imports.push(id);
    }
    dossier_core::outbox::relay(&db, &*q.backend)
        .await
        .expect("relay");
    let w = q.start_worker(registry(&q, &db));
    tokio::time::timeout(
        Duration::from_secs(30),
        dossier_core::runtime::wait_until_drained(
            &*q.backend,
            &["invitation", "tree_setup"],
            Duration::from_millis(50),
        ),
    )
    .await
    .expect("drained in time")
    .expect("counts");
    w.stop().await;
    // Two dead jobs.
    let mut dead = Vec::new();
    for i in 0..2 {
        let id = q
            .push(NewJob {
                kind: "probe_dead".into(),
                payload: serde_json::json!({ "note": format!("écrit à dirigeant{i}@dead.example") }),
                run_at_ms: Some(now + 3_600_000),
                max_attempts: 1,
                idempotency_key: None,
                trace_id: None,
                group: None,
                subject: None,
                bulk: false,
            })
            .await;
        q.backend.kill(&id, "test").await.expect("kill");
        dead.push(id);
    }

    // Aged: the first of each pair an hour past its period, the second an
    // hour within it (default periods).
    let periods = [24 * HOUR, 30 * DAY, 90 * DAY, 30 * DAY, 30 * DAY];
    let past = |i: usize| now - periods[i] - HOUR;
    let within = |i: usize| now - periods[i] + HOUR;
    for (key, at) in [("ret-old", past(0)), ("ret-new", within(0))] {
        // Stored under the firm's own key space.
        let key = format!("POST /v1/clients {FIRM} {key}");
        exec(
            &db,
            "UPDATE http_requests SET created_at = $1 WHERE key = $2",
            at,
            &key,
        )
        .await;
    }
    for (id, at) in [(&imports[0], past(1)), (&imports[1], within(1))] {
        exec(
            &db,
            "UPDATE imports SET finished_at = $1 WHERE id = $2",
            at,
            id,
        )
        .await;
    }
    let mut invitation_ids = Vec::new();
    for (client, at) in [(&clients[0], past(2)), (&clients[1], within(2))] {
        let inv = invitations::list(&db, client)
            .await
            .expect("list")
            .remove(0);
        assert_eq!(inv.status, invitations::Status::Sent);
        invitations::revoke(&db, &inv.id).await.expect("revoke");
        exec(
            &db,
            "UPDATE invitations SET updated_at = $1 WHERE id = $2",
            at,
            &inv.id,
        )
        .await;
        invitation_ids.push(inv.id);
    }
    let mut files: Vec<_> = std::fs::read_dir(&mail)
        .expect("mail")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2);
    for (file, at) in [(&files[0], past(3)), (&files[1], within(3))] {
        let when = SystemTime::UNIX_EPOCH + Duration::from_millis(at as u64);
        std::fs::File::options()
            .write(true)
            .open(file)
            .expect("open")
            .set_modified(when)
            .expect("mtime");
    }
    for (id, at) in [(&dead[0], past(4)), (&dead[1], within(4))] {
        age_dead_job(&q, &db, id, at).await;
    }
    // Events: one past its period and delivered, one within it, one past
    // it whose delivery is still pending (its endpoint still waits).
    run_sql(
        &db,
        &format!(
            "INSERT INTO webhook_endpoints (id, firm_id, url, events, secret, created_at)
             VALUES ('whk_ret', '{FIRM}', 'https://crm.example/hook', '[\"client.ready\"]', 'v1:k1:00', {now})"
        ),
    )
    .await;
    for (id, at, status) in [
        ("ev-old", past(4), "delivered"),
        ("ev-new", within(4), "delivered"),
        ("ev-waiting", past(4), "pending"),
    ] {
        run_sql(
            &db,
            &format!(
                "INSERT INTO events (id, firm_id, type, seq, body, created_at)
                 VALUES ('{id}', '{FIRM}', 'client.ready', 1, '{{}}', {at})"
            ),
        )
        .await;
        run_sql(
            &db,
            &format!(
                "INSERT INTO webhook_deliveries (event_id, endpoint_id, ordering_key, seq, status)
                 VALUES ('{id}', 'whk_ret', '{id}', 1, '{status}')"
            ),
        )
        .await;
    }

    // The scheduled job, with the periods the settings give.
    let schedules = dossier_core::schedule::product(&q.settings).expect("schedules");
    assert!(
        schedules.iter().any(|s| s.name == "retention"),
        "{schedules:?}"
    );
    let job = NewJob {
        kind: "retention".into(),
        payload: serde_json::to_value(Retention::from_settings(&q.settings.retention))
            .expect("payload"),
        run_at_ms: None,
        max_attempts: 3,
        idempotency_key: None,
        trace_id: None,
        group: None,
        subject: None,
        bulk: false,
    };
    let w = q.start_worker(registry(&q, &db));
    let first = q.push(job.clone()).await;
    let done = q
        .wait_for(&first, Duration::from_secs(30), |j| {
            j.status == JobStatus::Done
        })
        .await;
    let removed = done.result.expect("result")["removed"].clone();
    assert_eq!(
        removed,
        serde_json::json!({
            "http_requests": 1,
            "imports (files and reports)": 1,
            "invitations (personal fields)": 1,
            "mail files": 1,
            "dead jobs": 1,
            "events": 1,
        })
    );
    let left = count(
        &db,
        "SELECT COUNT(*) FROM events WHERE id IN ('ev-new', 'ev-waiting')",
    )
    .await;
    assert_eq!(left, 2, "the recent event and the one still waiting stay");
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM webhook_deliveries WHERE event_id = 'ev-old'"
        )
        .await,
        0
    );
    // Exactly those: the others are where they were.
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM http_requests WHERE key LIKE '% ret-new'"
        )
        .await,
        1
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM http_requests").await, 1);
    let first_import = store::get(&db, &imports[0])
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(first_import.rows_created, 1, "the counts stay");
    let emptied = format!(
        "SELECT COUNT(*) FROM imports WHERE id = '{}' AND LENGTH(content) = 0",
        imports[0]
    );
    assert_eq!(
        count(&db, &emptied).await,
        1,
        "the old import's file is gone"
    );
    let whole = format!(
        "SELECT COUNT(*) FROM imports WHERE id = '{}' AND LENGTH(content) > 0",
        imports[1]
    );
    assert_eq!(
        count(&db, &whole).await,
        1,
        "the recent import's file stays"
    );
    let old = invitations::get(&db, &invitation_ids[0])
        .await
        .expect("get")
        .expect("row stays");
    assert!(old.email.ends_with("@erased.invalid") && old.first_name.is_empty());
    let recent = invitations::get(&db, &invitation_ids[1])
        .await
        .expect("get")
        .expect("row");
    assert_eq!(recent.email, "recent@menuiserie.example");
    assert!(!files[0].exists() && files[1].exists());
    assert!(q.backend.get(&dead[0]).await.expect("get").is_none());
    assert!(q.backend.get(&dead[1]).await.expect("get").is_some());

    // Again: nothing left to remove.
    let second = q.push(job).await;
    let done = q
        .wait_for(&second, Duration::from_secs(30), |j| {
            j.status == JobStatus::Done
        })
        .await;
    let removed = done.result.expect("result")["removed"].clone();
    assert!(
        removed
            .as_object()
            .is_some_and(|m| m.values().all(|v| v == 0)),
        "{removed}"
    );
    w.stop().await;
    q.cleanup_with(db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_on_sqlite() {
    retention_removes_what_its_table_says(BackendKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_on_postgres_with_its_queue() {
    retention_removes_what_its_table_says(BackendKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_on_postgres_and_redis() {
    retention_removes_what_its_table_says(BackendKind::Redis).await;
}
