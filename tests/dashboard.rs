//! The dashboard in a real browser: Debian's Chromium, driven by
//! playwright-core (`tests/dashboard/retry.mjs`; `scripts/test` installs
//! both), logs in with the token, retries a dead job with a click, and the
//! job runs. The admin API it calls is checked on its own too.

use std::process::Command;
use std::time::Duration;

use dossier_core::db::Database;
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
        group: None,
        subject: None,
        bulk: false,
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
    // A NUL (PostgreSQL refuses it in text) or an escape sequence in a
    // filter is refused before any query, on every backend.
    for hostile in ["client=a%00b", "error=%1B%5B2J", "firm=a%09b"] {
        let r = admin(reqwest::Method::GET, &format!("/v1/admin/jobs?{hostile}"))
            .send()
            .await
            .expect("list");
        assert_eq!(r.status(), 400, "{hostile}");
    }

    // Three jobs of one firm, waiting an hour, killed at once through the
    // bulk action after a dry run; the browser retries them at once below.
    let mut firm_jobs = Vec::new();
    for (i, client) in ["c-1", "c-2", "c-3"].iter().enumerate() {
        let mut job = check("732 829 320 00074", Some(later));
        job.group = Some("cabinet-b".into());
        job.subject = Some((*client).into());
        job.idempotency_key = Some(format!("firm-job-{i}"));
        firm_jobs.push(q.push(job).await);
    }
    let bulk = |body: serde_json::Value| {
        admin(reqwest::Method::POST, "/v1/admin/jobs/bulk")
            .json(&body)
            .send()
    };
    let dry: serde_json::Value = bulk(serde_json::json!({
        "action": "kill", "filter": { "firm": "cabinet-b" }, "dry_run": true
    }))
    .await
    .expect("dry run")
    .json()
    .await
    .expect("json");
    assert_eq!(
        (
            dry["matched"].as_u64(),
            dry["eligible"].as_u64(),
            dry["applied"].as_u64()
        ),
        (Some(3), Some(3), Some(0)),
        "{dry}"
    );
    assert_eq!(
        q.job(&firm_jobs[0]).await.status,
        JobStatus::Scheduled,
        "a dry run changes nothing"
    );
    let everything = bulk(serde_json::json!({ "action": "retry", "filter": {} }))
        .await
        .expect("post");
    assert_eq!(everything.status(), 422, "no filter, no bulk action");
    let typo = bulk(serde_json::json!({ "action": "retry", "filter": { "kind": "siret_chek" } }))
        .await
        .expect("post");
    assert_eq!(typo.status(), 422);
    let killed_all: serde_json::Value = bulk(serde_json::json!({
        "action": "kill", "filter": { "firm": "cabinet-b", "kind": "siret_check" }, "reason": "doublons"
    }))
    .await
    .expect("kill")
    .json()
    .await
    .expect("json");
    assert_eq!(killed_all["applied"], 3, "{killed_all}");
    let found: serde_json::Value = admin(
        reqwest::Method::GET,
        "/v1/admin/jobs?firm=cabinet-b&status=dead&error=DOUBLON",
    )
    .send()
    .await
    .expect("list")
    .json()
    .await
    .expect("json");
    assert_eq!(found.as_array().map(Vec::len), Some(3), "{found}");
    // A firm's job no worker here runs: it waits, and the page lists the firm.
    q.push(NewJob {
        kind: "tree_setup".into(),
        payload: serde_json::json!({ "client_id": "c-w" }),
        group: Some("cabinet-w".into()),
        subject: Some("c-w".into()),
        ..check("732 829 320 00074", None)
    })
    .await;
    let waiting: serde_json::Value = admin(reqwest::Method::GET, "/v1/admin/waiting-by-firm")
        .send()
        .await
        .expect("waiting")
        .json()
        .await
        .expect("json");
    assert_eq!(waiting[0]["group"], "cabinet-w", "{waiting}");
    assert_eq!(waiting[0]["interactive"], 1, "{waiting}");
    // The page: no data in it, so no token needed to load it.
    let page = web
        .get(format!("{base}/dashboard"))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);

    // An invitation sent through a real SMTP server: its job's page shows
    // the server's answer.
    let smtp = dossier_e2e::smtp::SmtpCapture::start(q.dir.path());
    {
        use dossier_core::config::{MailTransportKind, SmtpSecurity};
        let m = &mut q.settings.mail;
        m.transport = MailTransportKind::Smtp;
        m.smtp.host = "127.0.0.1".into();
        m.smtp.port = smtp.port;
        m.smtp.security = SmtpSecurity::None;
    }
    dossier_e2e::add_firm(&db, "cabinet-i").await;
    let client = dossier_core::clients::create(
        &db,
        dossier_core::clients::NewClient {
            firm_id: "cabinet-i".into(),
            siret: None,
            entered: dossier_core::clients::Fields::from([(
                "legal_name".to_string(),
                "SCI Les Tilleuls".to_string(),
            )]),
        },
    )
    .await
    .expect("client")
    .id;
    let inv = dossier_core::invitations::create(
        &db,
        dossier_core::invitations::NewInvitation {
            client_id: client,
            email: "gerant@sci-tilleuls.fr".into(),
            first_name: "Hélène".into(),
            last_name: "Lefèvre".into(),
            ..Default::default()
        },
        true,
    )
    .await
    .expect("invitation");
    let mut sender = Registry::new();
    dossier_core::jobs::invitation::register(&mut sender, dossier_e2e::product_deps(&q, &db));
    let sw = q.start_worker(sender);
    let sent = q
        .push(dossier_core::jobs::invitation::job_for(&inv, 3))
        .await;
    q.wait_for(&sent, Duration::from_secs(20), |j| {
        j.status == JobStatus::Done
    })
    .await;
    sw.stop().await;
    assert_eq!(smtp.messages().len(), 1);

    // A firm's webhook endpoint, disabled after failing.
    let ring = dossier_core::secrets::KeyRing::new(&[serde_json::from_str(&format!(
        "\"k1:{}\"",
        "12".repeat(32)
    ))
    .expect("key")])
    .expect("ring");
    let (hook, _) = dossier_core::events::endpoints::add(
        &db,
        &ring,
        &q.settings.outbound,
        "cabinet-i",
        "https://crm.cabinet-i.example/hooks",
        &[dossier_core::events::EventType::ClientReady],
    )
    .await
    .expect("endpoint");
    let disable = "UPDATE webhook_endpoints SET disabled_at = $1, disabled_reason = 'every delivery failed for 28800 s' WHERE id = $2";
    match &db {
        Database::Sqlite(p) => sqlx::query(disable)
            .bind(1_i64)
            .bind(&hook.id)
            .execute(p)
            .await
            .map(|_| ()),
        Database::Postgres(p) => sqlx::query(disable)
            .bind(1_i64)
            .bind(&hook.id)
            .execute(p)
            .await
            .map(|_| ()),
    }
    .expect("disabled");

    // An operator clicks "relancer" on the killed job in Chromium.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboard/retry.mjs");
    let shot = q.dir.path().join("dashboard.png");
    let (base2, killed2, shot2, sent2) = (base.clone(), killed.clone(), shot.clone(), sent.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args([script, &base2, BEARER, &killed2])
            .arg(&shot2)
            .arg("cabinet-b")
            .arg(&sent2)
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
    assert!(said.contains("waiting: cabinet-w110"), "{said}");
    assert!(
        said.contains(&format!(
            "webhook notice: webhook désactivé : {} (cabinet cabinet-i) — every delivery failed for 28800 s ; dossier webhook enable {}",
            hook.id, hook.id
        )),
        "{said}"
    );
    assert!(
        said.contains("mail server: Réponse du serveur de courrier : 250 2.0.0 Ok: queued as 1"),
        "the invitation's page shows the server's answer: {said}"
    );
    assert!(
        said.contains(
            "bulk asks: 3 travaux correspondent au filtre ; 3 seront relancés. Continuer ?"
        ) && said.contains("bulk said: 3 travaux relancés"),
        "the bulk retry asked first, with the count: {said}"
    );
    for id in &firm_jobs {
        assert_eq!(
            q.job(id).await.status,
            JobStatus::Done,
            "retried from the page and run"
        );
    }
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
