//! What ops watch: `/metrics` (Prometheus) on the embedded deployment and
//! on PostgreSQL + Redis — job outcomes and durations, queue depth, dead
//! set, imports — behind the bearer token.

use std::time::Duration;

use dossier_core::import::{self, Limits, Request, store};
use dossier_core::job::{JobStatus, NewJob};
use dossier_core::runtime::Registry;
use dossier_e2e::{BackendKind, TestQueue};

const BEARER: &str = "ops-token-abcdefghijklmnop";

fn check(siret: &str) -> NewJob {
    NewJob {
        kind: "siret_check".into(),
        payload: serde_json::json!({ "siret": siret }),
        run_at_ms: None,
        max_attempts: 3,
        idempotency_key: None,
        trace_id: None,
        group: None,
        subject: None,
        bulk: false,
    }
}

async fn metrics_tell_outcomes_depth_and_imports(kind: BackendKind) {
    let mut q = TestQueue::new(kind).await;
    let db = q.business_db().await;
    dossier_e2e::add_firm(&db, "ops").await;
    let settings = dossier_e2e::with_token(q.settings.clone(), BEARER);
    let (base, stop) = dossier_e2e::serve_api(&db, q.backend.clone(), &settings).await;

    let mut registry = Registry::new();
    dossier_core::jobs::siret_check::register(&mut registry);
    let w = q.start_worker(registry);
    let good = q.push(check("732 829 320 00074")).await;
    let bad = q.push(check("732 829 320 00075")).await;
    q.wait_for(&good, Duration::from_secs(20), |j| {
        j.status == JobStatus::Done
    })
    .await;
    q.wait_for(&bad, Duration::from_secs(20), |j| {
        j.status == JobStatus::Dead
    })
    .await;
    w.stop().await;
    // A waiting job, and a finished import.
    q.push(NewJob {
        run_at_ms: Some(dossier_core::clock::now_ms() + 3_600_000),
        ..check("732 829 320 00074")
    })
    .await;
    let keys = dossier_core::secrets::KeyRing::new(&[]).expect("ring");
    let req = Request {
        firm_id: "ops".into(),
        file_name: "c.csv".into(),
        partial: false,
        providers: None,
        trace_id: None,
    };
    let id = store::new_id();
    let csv = dossier_core::import_bench::generate_csv(3, 1);
    store::create(&db, &id, &req, csv.as_bytes(), None)
        .await
        .expect("recorded");
    import::run(&db, Limits::of(&q.settings), &keys, None, &id, &mut |_| {})
        .await
        .expect("import");

    // A paused kind, even one without jobs, shows as paused.
    q.backend
        .pause(&dossier_core::job::Pause {
            kind: "app_setup".into(),
            reason: "partner down".into(),
            by: "ops".into(),
            at_ms: dossier_core::clock::now_ms(),
        })
        .await
        .expect("pause");

    let web = reqwest::Client::new();
    let anonymous = web
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("get");
    assert_eq!(anonymous.status(), 401);
    let answer = web
        .get(format!("{base}/metrics"))
        .bearer_auth(BEARER)
        .send()
        .await
        .expect("get");
    assert_eq!(answer.status(), 200);
    assert!(
        answer
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/openmetrics-text")),
        "{:?}",
        answer.headers()
    );
    let text = answer.text().await.expect("body");
    // Counters are the process's: at least this test's (`cargo test` runs
    // both tests of this file in one process; nextest one each).
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    for (series, at_least) in [
        (
            "dossier_jobs_total{kind=\"siret_check\",outcome=\"done\"}",
            1.0,
        ),
        (
            "dossier_jobs_total{kind=\"siret_check\",outcome=\"dead\"}",
            1.0,
        ),
        ("dossier_job_attempts_total{kind=\"siret_check\"}", 2.0),
        (
            "dossier_job_duration_seconds_count{kind=\"siret_check\"}",
            2.0,
        ),
    ] {
        assert!(value(series) >= at_least, "{series} < {at_least}");
    }
    for line in [
        "dossier_queue_jobs{kind=\"siret_check\",status=\"done\"} 1",
        "dossier_queue_jobs{kind=\"siret_check\",status=\"dead\"} 1",
        "dossier_queue_jobs{kind=\"siret_check\",status=\"scheduled\"} 1",
        "dossier_dead_jobs{kind=\"siret_check\"} 1",
        "dossier_queue_paused{kind=\"app_setup\"} 1",
        "dossier_queue_paused{kind=\"siret_check\"} 0",
        "dossier_imports{status=\"done\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    // The registries', SMTP's and partners' families appear with their
    // first event (unit-tested in `metrics`); these are always there.
    for family in [
        "dossier_queue_oldest_pending_age_seconds",
        "dossier_smtp_send_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "no {family} in:\n{text}"
        );
    }
    // Labels never name a job or a client.
    assert!(!text.contains(&good) && !text.contains(&bad));
    stop.cancel();
    q.cleanup_with(db).await;
}

#[tokio::test]
async fn metrics_on_sqlite() {
    metrics_tell_outcomes_depth_and_imports(BackendKind::Sqlite).await;
}

#[tokio::test]
async fn metrics_on_postgres_and_redis() {
    metrics_tell_outcomes_depth_and_imports(BackendKind::Redis).await;
}

#[tokio::test]
async fn metrics_on_postgres_with_its_queue() {
    metrics_tell_outcomes_depth_and_imports(BackendKind::Postgres).await;
}

/// The audit trail keeps entries for its retention, then the purge
/// deletes them; on the embedded deployment and on PostgreSQL.
async fn the_audit_trail_is_kept_for_its_retention(kind: BackendKind) {
    use dossier_core::audit;
    let mut q = TestQueue::new(kind).await;
    let db = q.business_db().await;
    for target in ["siret_check", "app_setup"] {
        audit::record(
            &db,
            "ops (API)",
            audit::action::QUEUE_PAUSE,
            target,
            serde_json::json!({}),
        )
        .await
        .expect("record");
    }
    let day = Duration::from_secs(86_400);
    assert_eq!(
        audit::purge(&db, day).await.expect("purge"),
        0,
        "within retention"
    );
    assert_eq!(audit::list(&db, None, 10).await.expect("list").len(), 2);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        audit::purge(&db, Duration::from_millis(10))
            .await
            .expect("purge"),
        2,
        "past retention"
    );
    assert!(audit::list(&db, None, 10).await.expect("list").is_empty());
    q.cleanup_with(db).await;
}

#[tokio::test]
async fn the_audit_trail_is_kept_for_its_retention_on_sqlite() {
    the_audit_trail_is_kept_for_its_retention(BackendKind::Sqlite).await;
}

#[tokio::test]
async fn the_audit_trail_is_kept_for_its_retention_on_postgres() {
    the_audit_trail_is_kept_for_its_retention(BackendKind::Redis).await;
}
