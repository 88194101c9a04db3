//! The dashboard in a real browser: Debian's Chromium, driven by
//! playwright-core (`tests/dashboard/retry.mjs`; `scripts/test` installs
//! both), logs in with the token, retries a dead job with a click, and the
//! job runs. The admin API it calls is checked on its own too.

use std::process::Command;
use std::time::Duration;

use dossier_core::job::{JobStatus, NewJob};
use dossier_core::runtime::Registry;
use dossier_e2e::{BackendKind, TestQueue};

const BEARER: &str = "dashboard-token-abcdefghijkl";

fn check(siret: &str, run_at_ms: Option<i64>) -> NewJob {
    NewJob {
        kind: "siret_check".into(),
        payload: serde_json::json!({ "siret": siret }),
        run_at_ms,
        max_attempts: 3,
        idempotency_key: None,
        trace_id: Some("dash-1".into()),
    }
}

async fn dashboard(kind: BackendKind) {
    let mut q = TestQueue::new(kind).await;
    let db = q.business_db().await;
    let settings = dossier_e2e::with_token(q.settings.clone(), BEARER);
    let (base, stop) = dossier_e2e::serve_api(&db, q.backend.clone(), &settings).await;
    let web = reqwest::Client::new();
    let admin = |method: reqwest::Method, path: &str| {
        web.request(method, format!("{base}{path}"))
            .bearer_auth(BEARER)
    };

    // The page and its assets: nothing inline may run (the browser run
    // below proves the page works under this policy).
    for path in ["/dashboard", "/dashboard.js", "/dashboard.css"] {
        let r = web.get(format!("{base}{path}")).send().await.expect("get");
        assert_eq!(r.status(), 200, "{path}");
        let csp = r
            .headers()
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        let text = r.text().await.expect("text");
        if path == "/dashboard" {
            assert!(
                !text.contains("<script>") && !text.contains("<style>"),
                "nothing inline"
            );
        }
    }

    // A job that fails for good (bad checksum), and one an operator killed
    // before it ran: both dead.
    let mut registry = Registry::new();
    dossier_core::jobs::siret_check::register(&mut registry);
    let w = q.start_worker(registry);
    let failed = q.push(check("732 829 320 00075", None)).await;
    q.wait_for(&failed, Duration::from_secs(20), |j| {
        j.status == JobStatus::Dead
    })
    .await;
    let later = dossier_core::clock::now_ms() + 3_600_000;
    let killed = q.push(check("732 829 320 00074", Some(later))).await;
    let anonymous = web
        .post(format!("{base}/v1/admin/jobs/{killed}/kill"))
        .send()
        .await
        .expect("post");
    assert_eq!(anonymous.status(), 401);
    let k = admin(
        reqwest::Method::POST,
        &format!("/v1/admin/jobs/{killed}/kill"),
    )
    .json(&serde_json::json!({ "reason": "client en doublon" }))
    .send()
    .await
    .expect("kill");
    assert_eq!(k.status(), 200);
    let job: serde_json::Value = admin(reqwest::Method::GET, &format!("/v1/admin/jobs/{killed}"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(job["status"], "dead");
    assert_eq!(job["last_error"], "client en doublon");
    let again = admin(
        reqwest::Method::POST,
        &format!("/v1/admin/jobs/{failed}/kill"),
    )
    .send()
    .await
    .expect("kill");
    assert_eq!(again.status(), 409, "a dead job cannot be killed again");
    let dead: serde_json::Value = admin(
        reqwest::Method::GET,
        "/v1/admin/jobs?status=dead&kind=siret_check",
    )
    .send()
    .await
    .expect("list")
    .json()
    .await
    .expect("json");
    assert_eq!(dead.as_array().map(Vec::len), Some(2), "{dead}");
    let bad = admin(reqwest::Method::GET, "/v1/admin/jobs?status=perdu")
        .send()
        .await
        .expect("list");
    assert_eq!(bad.status(), 400);

    // The page: no data in it, so no token needed to load it.
    let page = web
        .get(format!("{base}/dashboard"))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);

    // An operator clicks "relancer" on the killed job in Chromium.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboard/retry.mjs");
    let shot = q.dir.path().join("dashboard.png");
    let (base2, killed2, shot2) = (base.clone(), killed.clone(), shot.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args([script, &base2, BEARER, &killed2])
            .arg(&shot2)
            .output()
    })
    .await
    .expect("task")
    .expect("node runs: scripts/test installs Node, Chromium and playwright-core");
    assert!(
        out.status.success(),
        "the browser run failed (scripts/test installs chromium and tests/dashboard's playwright-core):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("paused label: suspendu : registre en panne") && said.contains("resumed"),
        "{said}"
    );
    assert!(q.backend.paused().await.expect("paused").is_empty());
    assert!(
        said.contains("http.tokens (API)queue.pausesiret_check{\"reason\":\"registre en panne\"}"),
        "the journal shows who paused, why: {said}"
    );
    let job = q.job(&killed).await;
    assert_eq!(job.status, JobStatus::Done, "{job:?}");
    assert_eq!(
        job.result.as_ref().map(|r| r["nic"].clone()),
        Some(serde_json::json!("00074"))
    );
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 10_000)
            .unwrap_or(false)
    );
    if let Ok(keep) = std::env::var("DOSSIER_DASHBOARD_SCREENSHOT") {
        std::fs::copy(&shot, keep).expect("screenshot copied");
    }

    // Retry every dead job of a kind.
    let r: serde_json::Value = admin(
        reqwest::Method::POST,
        "/v1/admin/queues/siret_check/retry-dead",
    )
    .send()
    .await
    .expect("retry dead")
    .json()
    .await
    .expect("json");
    assert_eq!(r["retried"], 1);
    q.wait_for(&failed, Duration::from_secs(20), |j| {
        j.status == JobStatus::Dead && j.attempts == 2
    })
    .await;
    w.stop().await;
    stop.cancel();
    q.cleanup_with(db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_retries_a_dead_job_from_the_dashboard_on_sqlite() {
    dashboard(BackendKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_retries_a_dead_job_from_the_dashboard_on_postgres_and_redis() {
    dashboard(BackendKind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_retries_a_dead_job_from_the_dashboard_on_postgres_with_its_queue() {
    dashboard(BackendKind::Postgres).await;
}
