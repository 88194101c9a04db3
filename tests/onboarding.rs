//! Creating a client: one transaction for the client, its exercice, tree,
//! invitation and apps, with the jobs staged in the outbox; on SQLite and on
//! PostgreSQL with the Redis queue.

use std::sync::Arc;
use std::time::Duration;

use dossier_core::apps;
use dossier_core::clients::Fields;
use dossier_core::config::MailTransportKind;
use dossier_core::db::Database;
use dossier_core::invitations::{self, Status};
use dossier_core::jobs::{self, JobDeps, Mailer, Partners};
use dossier_core::onboarding::{self, AppChoice, ClientForm, Director, OnboardingError};
use dossier_core::runtime::{self, Registry};
use dossier_core::secrets::KeyRing;
use dossier_core::sirene::{Quota, Sirene};
use dossier_e2e::{BackendKind, TestQueue};

const CATALOGUE: &str = r#"
[[apps]]
id = "banque_en_ligne"
name = "Banque en ligne"
kind = "redirection"
url = "https://banque.example/connexion"
"#;

fn form() -> ClientForm {
    ClientForm {
        firm_id: "cabinet-1".into(),
        siret: None,
        company: Fields::from([("legal_name".to_string(), "Boulangerie Martin".to_string())]),
        exercice_start: chrono::NaiveDate::from_ymd_opt(2026, 1, 1),
        exercice_end: None,
        tree: None,
        director: Some(Director {
            email: "camille.martin@boulangerie-martin.fr".into(),
            first_name: "Camille".into(),
            last_name: "Martin".into(),
        }),
        themes: None,
        invite: true,
        apps: vec![AppChoice {
            app_id: "banque_en_ligne".into(),
            settings: vec![],
            on_director_portal: true,
        }],
        collaborators: vec![],
    }
}

async fn count(db: &Database, table: &'static str) -> i64 {
    let sql = match table {
        "clients" => "SELECT COUNT(*) FROM clients",
        "outbox" => "SELECT COUNT(*) FROM outbox",
        _ => "SELECT COUNT(*) FROM invitations",
    };
    match db {
        Database::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await,
        Database::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await,
    }
    .expect("count")
}

async fn created_with_everything(kind: BackendKind) {
    let mut q = TestQueue::new(kind).await;
    if kind == BackendKind::Postgres {
        // The queue in the business database (queue.url unset).
        q.settings.queue.url = None;
    }
    let outbox_dir = q.dir.path().join("outbox");
    q.settings.mail.transport = MailTransportKind::File;
    q.settings.mail.outbox_dir = outbox_dir.display().to_string();
    let db = q.business_db().await;
    dossier_e2e::add_firm(&db, "cabinet-1").await;
    let catalogue = apps::parse_catalogue("t.toml", CATALOGUE).expect("catalogue");
    apps::load_catalogue(&db, "cabinet-1", &catalogue)
        .await
        .expect("load");
    let keys = KeyRing::new(&[]).expect("ring");
    let created = onboarding::create_client(&db, &q.settings.queue, &keys, form())
        .await
        .expect("created");
    assert_eq!(created.jobs, ["tree_setup", "app_setup", "invitation"]);
    if dossier_core::outbox::direct_queue(&q.settings.queue).is_some() {
        // The queue is this database's jobs table: the jobs were enqueued
        // inside the creating transaction, no outbox needed.
        assert_eq!(count(&db, "outbox").await, 0);
        let queued = q.backend.counts().await.expect("counts");
        assert_eq!(
            queued.iter().map(|c| c.pending).sum::<u64>(),
            3,
            "{queued:?}"
        );
    } else {
        // Committed with its jobs, none pushed yet: a crash here loses nothing.
        assert_eq!(count(&db, "outbox").await, 3);
        dossier_core::outbox::relay(&db, &*q.backend)
            .await
            .expect("relay");
    }
    let deps = Arc::new(JobDeps {
        db: db.clone(),
        sirene: Sirene::new(vec![], Quota::local(), Duration::from_secs(1)),
        mail: Mailer::from_settings(&q.settings).expect("mail"),
        queue: q.backend.clone(),
        queue_settings: q.settings.queue.clone(),
        imports: Default::default(),
        partners: Partners::from_settings(&q.settings).expect("partners"),
        webhooks: dossier_core::jobs::webhook_delivery::Webhooks::from_settings(
            &dossier_core::config::Settings::default(),
        )
        .expect("webhooks settings"),
    });
    let mut registry = Registry::new();
    jobs::register_all(&mut registry, deps);
    let w = q.start_worker(registry);
    tokio::time::timeout(
        Duration::from_secs(30),
        runtime::wait_until_drained(
            &*q.backend,
            &["tree_setup", "app_setup", "invitation"],
            Duration::from_millis(50),
        ),
    )
    .await
    .expect("drained in time")
    .expect("counts");
    w.stop().await;
    let id = &created.client_id;
    let folders = dossier_core::tree::folders::list(&db, id)
        .await
        .expect("folders");
    assert_eq!(folders.len(), 30 + 4 * 13, "tree and the exercice's months");
    let inv = invitations::list(&db, id).await.expect("invitations");
    assert_eq!(inv.len(), 1);
    assert_eq!(inv[0].status, Status::Sent);
    let emails = std::fs::read_dir(&outbox_dir).expect("outbox dir").count();
    assert_eq!(emails, 1);
    let app = apps::client_app(&db, id, "banque_en_ligne")
        .await
        .expect("app")
        .expect("exists");
    assert_eq!(
        (app.status.as_str(), app.on_director_portal),
        ("active", true)
    );
    let listed = dossier_core::clients::list(&db, "cabinet-1", 10)
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    q.cleanup_with(db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_with_everything_on_sqlite() {
    created_with_everything(BackendKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_with_everything_on_postgres_with_its_queue_in_the_same_transaction() {
    created_with_everything(BackendKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_with_everything_on_postgres_with_the_redis_queue() {
    created_with_everything(BackendKind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_form_lists_every_problem_and_writes_nothing() {
    let mut q = TestQueue::new(BackendKind::Sqlite).await;
    let db = q.business_db().await;
    dossier_e2e::add_firm(&db, "cabinet-1").await;
    let keys = KeyRing::new(&[]).expect("ring");
    let mut bad = form();
    bad.siret = Some("732 829 320 00075".into());
    bad.exercice_start = None;
    bad.themes = Some(vec!["secret".into()]);
    if let Some(d) = bad.director.as_mut() {
        d.email = "camille@@martin".into();
        d.last_name = " ".into();
    }
    let err = onboarding::create_client(&db, &q.settings.queue, &keys, bad)
        .await
        .expect_err("refused");
    let OnboardingError::Invalid(problems) = &err else {
        panic!("{err}")
    };
    let text = err.to_string();
    for want in [
        "siret:",
        "exercice: the start date of the current exercice is required",
        "director: email \"camille@@martin\" is not a valid address",
        "director: the last name is empty",
        "themes: unknown theme \"secret\"",
        "apps: firm cabinet-1 has no app banque_en_ligne",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert_eq!(problems.len(), 6, "{problems:?}");
    for table in ["clients", "outbox", "invitations"] {
        assert_eq!(count(&db, table).await, 0, "{table}");
    }
    // Without --no-invite a director is needed; with it, a draft and no job.
    let mut draft = form();
    draft.apps.clear();
    draft.invite = false;
    let created = onboarding::create_client(&db, &q.settings.queue, &keys, draft)
        .await
        .expect("created");
    assert_eq!(created.jobs, ["tree_setup"]);
    let inv = invitations::list(&db, &created.client_id)
        .await
        .expect("list");
    assert_eq!(inv[0].status, Status::Draft);
    q.cleanup_with(db).await;
}

/// The hooks: bearer tokens, POST /v1/clients with Idempotency-Key (one
/// client however often it is retried), refusals with JSON pointers,
/// GET /v1/clients/{id}, POST /v1/jobs/{kind}, health, and the OpenAPI
/// document matching the routes.
async fn http_hooks(kind: BackendKind) {
    let mut q = TestQueue::new(kind).await;
    let db = q.business_db().await;
    dossier_e2e::add_firm(&db, "cabinet-1").await;
    let bearer = "hook-token-abcdefghijklmnop";
    let settings = dossier_e2e::with_token(q.settings.clone(), bearer);
    let (base, stop) = dossier_e2e::serve_api(&db, q.backend.clone(), &settings).await;
    let web = reqwest::Client::new();

    let health = web
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let ready: serde_json::Value = web
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["migrations_missing"], 0, "{ready}");
    assert_eq!(ready["queue"], "ok");
    let no_auth = web
        .post(format!("{base}/v1/clients"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("r");
    assert_eq!(no_auth.status(), 401);

    let form = serde_json::json!({
        "firm_id": "cabinet-1",
        "company": { "legal_name": "Transports Rivière" },
        "exercice": { "start": "2026-01-01" },
        "director": { "email": "direction@transports-riviere.fr", "first_name": "Luc", "last_name": "Rivière" },
    });
    let post = |key: &str, body: &serde_json::Value| {
        web.post(format!("{base}/v1/clients"))
            .bearer_auth(bearer)
            .header("Idempotency-Key", key)
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .json(body)
            .send()
    };
    let first = post("req-1", &form).await.expect("post");
    assert_eq!(first.status(), 201);
    // The caller's trace id goes with every job of the client.
    dossier_core::outbox::relay(&db, &*q.backend)
        .await
        .expect("relay");
    let jobs = q
        .backend
        .list(&dossier_core::job::JobFilter {
            kind: None,
            status: None,
            limit: 10,
            ..dossier_core::job::JobFilter::default()
        })
        .await
        .expect("jobs");
    assert!(!jobs.is_empty());
    for j in &jobs {
        assert_eq!(
            j.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            "{j:?}"
        );
    }
    let bad_trace = web
        .post(format!("{base}/v1/clients"))
        .bearer_auth(bearer)
        .header("X-Trace-Id", "marie@example.fr")
        .json(&form)
        .send()
        .await
        .expect("post");
    assert_eq!(bad_trace.status(), 422);
    let first: serde_json::Value = first.json().await.expect("json");
    let again: serde_json::Value = post("req-1", &form)
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(first, again, "a retried request gets the first answer");
    // Every job of the client is labelled with it and its firm, and found
    // by either, on this deployment's queue.
    let client_id = first["client_id"].as_str().expect("client id");
    let by = |group: Option<&str>, subject: Option<&str>| dossier_core::job::JobFilter {
        group: group.map(str::to_string),
        subject: subject.map(str::to_string),
        limit: 100,
        ..dossier_core::job::JobFilter::default()
    };
    let of_client = q
        .backend
        .list(&by(None, Some(client_id)))
        .await
        .expect("list");
    let of_firm = q
        .backend
        .list(&by(Some("cabinet-1"), None))
        .await
        .expect("list");
    let ids = |l: &[dossier_core::job::JobRecord]| {
        l.iter()
            .map(|j| j.id.clone())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(ids(&of_client), ids(&jobs), "the client's jobs");
    assert_eq!(ids(&of_firm), ids(&jobs), "the firm's jobs");
    assert!(
        q.backend
            .list(&by(Some("cabinet-2"), None))
            .await
            .expect("list")
            .is_empty(),
        "no other firm's"
    );
    assert_eq!(
        dossier_core::clients::list(&db, "cabinet-1", 10)
            .await
            .expect("list")
            .len(),
        1
    );
    // Later too: the answer is stored, not held in memory.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let later = post("req-1", &form).await.expect("post");
    assert_eq!(later.status(), 201);
    let later: serde_json::Value = later.json().await.expect("json");
    assert_eq!(
        first, later,
        "a request retried later gets the first answer"
    );
    let mut other = form.clone();
    other["company"]["legal_name"] = "Autre".into();
    let reused = post("req-1", &other).await.expect("post");
    assert_eq!(reused.status(), 422);
    let reused: serde_json::Value = reused.json().await.expect("json");
    assert_eq!(reused["error"], "idempotency_key_reused", "{reused}");

    // Eight copies of one new request at once (a caller retrying after a
    // timeout while the first is still running): one client, and every
    // copy that is not the first gets its answer.
    let mut racing = form.clone();
    racing["company"]["legal_name"] = "Course".into();
    racing["director"]["email"] = "course@transports-riviere.fr".into();
    let answers = futures_util::future::join_all((0..8).map(|_| post("req-race", &racing))).await;
    let mut ids = std::collections::BTreeSet::new();
    for a in answers {
        let a = a.expect("post");
        assert_eq!(a.status(), 201);
        let v: serde_json::Value = a.json().await.expect("json");
        ids.insert(v["client_id"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(ids.len(), 1, "one client for eight copies: {ids:?}");
    assert_eq!(
        dossier_core::clients::list(&db, "cabinet-1", 10)
            .await
            .expect("list")
            .len(),
        2
    );

    let mut bad = form.clone();
    bad["siret"] = "123".into();
    bad["director"]["email"] = "nope".into();
    let refused = post("req-2", &bad).await.expect("post");
    let clients_before_refusal = 2;
    assert_eq!(refused.status(), 422);
    let body: serde_json::Value = refused.json().await.expect("json");
    let pointers: Vec<&str> = body["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["pointer"].as_str())
        .collect();
    assert!(
        pointers.contains(&"/siret") && pointers.contains(&"/director"),
        "{body}"
    );
    assert_eq!(
        dossier_core::clients::list(&db, "cabinet-1", 10)
            .await
            .expect("list")
            .len(),
        clients_before_refusal
    );

    let id = first["client_id"].as_str().expect("id");
    let got: serde_json::Value = web
        .get(format!("{base}/v1/clients/{id}"))
        .bearer_auth(bearer)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(got["client"]["company"]["legal_name"], "Transports Rivière");
    assert!(got["onboarding"].as_array().is_some_and(|s| !s.is_empty()));
    let missing = web
        .get(format!("{base}/v1/clients/nope"))
        .bearer_auth(bearer)
        .send()
        .await
        .expect("r");
    assert_eq!(missing.status(), 404);

    let enqueue = || {
        web.post(format!("{base}/v1/jobs/siret_check"))
            .bearer_auth(bearer)
            .header("Idempotency-Key", "check-1")
            .json(&serde_json::json!({ "payload": { "siret": "73282932000074" } }))
            .send()
    };
    let job = enqueue().await.expect("enqueue");
    assert_eq!(job.status(), 202);
    let job: serde_json::Value = job.json().await.expect("json");
    let retried: serde_json::Value = enqueue()
        .await
        .expect("enqueue")
        .json()
        .await
        .expect("json");
    assert_eq!(
        retried["job_id"], job["job_id"],
        "a retried request finds the first job"
    );
    assert_eq!(retried["duplicate"], true);
    let bad_job = web
        .post(format!("{base}/v1/jobs/nope"))
        .bearer_auth(bearer)
        .json(&serde_json::json!({ "payload": {} }))
        .send()
        .await
        .expect("enqueue");
    assert_eq!(bad_job.status(), 422);

    let doc: serde_json::Value = web
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    for (method, path, auth) in dossier_core::http::ROUTES {
        let op = &doc["paths"][path][method];
        assert!(
            op.is_object(),
            "{method} {path} missing from the OpenAPI document"
        );
        assert_eq!(
            op["security"].is_array(),
            auth.needs_token(),
            "{method} {path} security"
        );
    }
    let paths: std::collections::BTreeSet<&str> =
        dossier_core::http::ROUTES.iter().map(|r| r.1).collect();
    assert_eq!(
        doc["paths"].as_object().map(|p| p.len()),
        Some(paths.len()),
        "no undocumented or stale paths"
    );
    // And the list is the router's: each route answers (an unknown route
    // gets axum's empty 404, a wrong method 405).
    for (method, path, _) in dossier_core::http::ROUTES {
        let url = format!(
            "{base}{}",
            path.replace("{id}", "x").replace("{kind}", "siret_check")
        );
        let req = match *method {
            "get" => web.get(&url),
            "delete" => web.delete(&url),
            _ => web.post(&url).json(&serde_json::json!({})),
        };
        let resp = req.bearer_auth(bearer).send().await.expect("route");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        assert!(
            status != 405 && !(status == 404 && text.is_empty()),
            "{method} {path}: {status}"
        );
    }
    stop.cancel();
    q.cleanup_with(db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_hooks_on_sqlite() {
    http_hooks(BackendKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_hooks_on_postgres_with_its_queue() {
    http_hooks(BackendKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_hooks_on_postgres_and_redis() {
    http_hooks(BackendKind::Redis).await;
}

/// A valid SIRET for each `i` (SIREN and SIRET both pass Luhn).
fn siret(i: usize) -> String {
    use dossier_core::siret::with_luhn_digit;
    let siren = with_luhn_digit(&format!("{:08}", 31_000_000 + i * 7));
    with_luhn_digit(&format!("{siren}0001"))
}

/// Fifty clients through the hook and the command's code path, on a whole
/// deployment: registries, SMTP and a partner played by real servers. Every
/// folder, enrichment, invitation email and partner call is checked.
async fn fifty_clients(kind: BackendKind) {
    use dossier_e2e::partner_stub::PartnerStub;
    use dossier_e2e::registry_stub::RegistryStub;
    use dossier_e2e::smtp::{SmtpCapture, decoded};
    let mut q = TestQueue::new(kind).await;
    let registry = RegistryStub::default();
    registry.answer_every_siret();
    let registry_base = registry.start().await;
    let partner = PartnerStub::default();
    let partner_base = partner.start().await;
    let smtp = SmtpCapture::start(q.dir.path());
    {
        let s = &mut q.settings;
        s.sirene.providers = vec!["recherche-entreprises".into()];
        s.sirene.recherche_entreprises.base_url = registry_base;
        s.sirene.recherche_entreprises.quota_requests = 1_000;
        s.mail.transport = MailTransportKind::Smtp;
        s.mail.smtp.host = "127.0.0.1".into();
        s.mail.smtp.port = smtp.port;
        s.mail.smtp.security = dossier_core::config::SmtpSecurity::None;
        s.apps.encryption_keys =
            vec![serde_json::from_str(&format!("\"k1:{}\"", "cd".repeat(32))).expect("key")];
        s.apps.signing_keys.insert(
            "collecte".into(),
            serde_json::from_str("\"shared-secret-123456\"").expect("key"),
        );
        s.http.tokens =
            vec![serde_json::from_str("\"hook-token-0123456789abcdef\"").expect("token")];
        s.invitations.wait_for_enrichment_secs = 20;
    }
    let db = q.business_db().await;
    dossier_e2e::add_firm(&db, "cabinet-1").await;
    let catalogue = format!(
        r#"
[[apps]]
id = "collecte"
name = "Collecte"
kind = "automation"
provisioning_url = "{partner_base}/provision"
deprovisioning_url = "{partner_base}/deprovision"
settings = [{{ name = "api_key", type = "string", required = true, secret = true }},
            {{ name = "target_directory", type = "directory", required = true }}]
"#
    );
    apps::load_catalogue(
        &db,
        "cabinet-1",
        &apps::parse_catalogue("c.toml", &catalogue).expect("catalogue"),
    )
    .await
    .expect("load");
    let client_form = |i: usize| {
        serde_json::json!({
            "firm_id": "cabinet-1",
            "siret": siret(i),
            "company": { "legal_name": format!("Client typé {i}") },
            "exercice": { "start": "2026-01-01" },
            "director": { "email": format!("dirigeant{i}@client{i}.fr"), "first_name": "Alex", "last_name": format!("Durand{i}") },
            "apps": [{ "app_id": "collecte", "settings": { "api_key": format!("key-{i}"), "target_directory": "Comptabilité/Achats" } }],
        })
    };
    let (base, stop) = dossier_e2e::serve_api(&db, q.backend.clone(), &q.settings).await;
    let web = reqwest::Client::new();
    let keys = KeyRing::new(&q.settings.apps.encryption_keys).expect("keys");
    for i in 0..50 {
        if i % 2 == 0 {
            let r = web
                .post(format!("{base}/v1/clients"))
                .bearer_auth("hook-token-0123456789abcdef")
                .header("Idempotency-Key", format!("client-{i}"))
                .json(&client_form(i))
                .send()
                .await
                .expect("hook");
            assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
        } else {
            let f = client_form(i);
            let form = ClientForm {
                firm_id: "cabinet-1".into(),
                siret: Some(siret(i)),
                company: Fields::from([("legal_name".to_string(), format!("Client typé {i}"))]),
                exercice_start: chrono::NaiveDate::from_ymd_opt(2026, 1, 1),
                director: Some(Director {
                    email: f["director"]["email"].as_str().unwrap_or_default().into(),
                    first_name: "Alex".into(),
                    last_name: format!("Durand{i}"),
                }),
                invite: true,
                apps: vec![AppChoice {
                    app_id: "collecte".into(),
                    settings: vec![
                        ("api_key".into(), format!("key-{i}")),
                        ("target_directory".into(), "Comptabilité/Achats".into()),
                    ],
                    on_director_portal: false,
                }],
                ..ClientForm::default()
            };
            onboarding::create_client(&db, &q.settings.queue, &keys, form)
                .await
                .expect("created");
        }
    }
    let deps = Arc::new(
        JobDeps::from_settings(&q.settings, q.backend.clone())
            .await
            .expect("deps"),
    );
    let mut registry_kinds = Registry::new();
    jobs::register_all(&mut registry_kinds, deps);
    let relay_stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(dossier_core::outbox::run_relay(
        db.clone(),
        q.backend.clone(),
        Duration::from_millis(100),
        relay_stop.clone(),
    ));
    let w = q.start_worker(registry_kinds);
    tokio::time::timeout(
        Duration::from_secs(90),
        runtime::wait_until_drained(
            &*q.backend,
            &["tree_setup", "siret_enrichment", "app_setup", "invitation"],
            Duration::from_millis(100),
        ),
    )
    .await
    .expect("drained in time")
    .expect("counts");
    w.stop().await;
    relay_stop.cancel();
    stop.cancel();

    let clients = dossier_core::clients::list(&db, "cabinet-1", 100)
        .await
        .expect("list");
    assert_eq!(clients.len(), 50);
    for c in &clients {
        assert_eq!(
            c.enrichment_status,
            dossier_core::clients::EnrichmentStatus::Enriched,
            "{}",
            c.id
        );
        assert_eq!(c.company["naf_code"], "62.02A", "registry fills the gaps");
        assert!(
            c.company["legal_name"].starts_with("Client typé"),
            "typed value kept"
        );
        let folders = dossier_core::tree::folders::list(&db, &c.id)
            .await
            .expect("folders");
        assert_eq!(folders.len(), 30 + 4 * 13);
        let inv = invitations::list(&db, &c.id).await.expect("invitations");
        assert_eq!(inv[0].status, Status::Sent, "{}", c.id);
        let app = apps::client_app(&db, &c.id, "collecte")
            .await
            .expect("app")
            .expect("exists");
        assert_eq!(app.status, "active");
    }
    let messages = smtp.messages();
    assert_eq!(messages.len(), 50, "one email per client");
    assert!(
        messages
            .iter()
            .all(|m| decoded(m).contains("l'espace de GANYMEDE")),
        "emails name the company as the registry does"
    );
    let calls = partner.received();
    assert_eq!(calls.len(), 50, "one partner call per client");
    for c in &calls {
        let ts = c.timestamp.expect("timestamp");
        assert!(dossier_core::apps::signature::verify(
            b"shared-secret-123456",
            ts,
            &c.body,
            c.signature.as_deref().unwrap_or("")
        ));
    }
    q.cleanup_with(db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_on_the_embedded_deployment() {
    fifty_clients(BackendKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_on_postgres_and_redis() {
    fifty_clients(BackendKind::Redis).await;
}

/// The load generator behind scripts/bench-hooks counts exactly what it
/// created: every 201 it reports is a client in the database, none is cut
/// off by the clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hooks_load_generator_counts_exactly() {
    use dossier_core::hooks_bench::{LoadOptions, Mode, run};
    let mut q = TestQueue::new(BackendKind::Sqlite).await;
    let db = q.business_db().await;
    dossier_e2e::add_firm(&db, "charge").await;
    let bearer = "load-token-abcdefghijklmnop";
    let settings = dossier_e2e::with_token(q.settings.clone(), bearer);
    let (base, stop) = dossier_e2e::serve_api(&db, q.backend.clone(), &settings).await;
    let mut options = LoadOptions {
        base,
        token: bearer.into(),
        mode: Mode::Post,
        connections: 4,
        duration: std::time::Duration::from_millis(800),
        firm: "charge".into(),
        ids: Vec::new(),
        run_id: "t".into(),
    };
    let posted = run(&options).await.expect("load");
    let created = posted.statuses.get("201").copied().unwrap_or(0);
    assert!(created > 0, "{posted:?}");
    assert_eq!(posted.non_2xx, 0, "{posted:?}");
    assert_eq!(posted.created.len() as u64, created);
    let in_db = dossier_core::clients::list(&db, "charge", 100_000)
        .await
        .expect("list")
        .len() as u64;
    assert_eq!(in_db, created, "clients in the database = 201 answers");
    options.mode = Mode::Get;
    options.ids = posted.created.clone();
    let got = run(&options).await.expect("load");
    assert_eq!(
        got.statuses.get("200").copied(),
        Some(got.requests),
        "{got:?}"
    );
    assert!(got.p50_ms <= got.p99_ms && got.p99_ms <= got.max_ms);
    stop.cancel();
    q.cleanup_with(db).await;
}
