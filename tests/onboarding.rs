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
    let outbox_dir = q.dir.path().join("outbox");
    q.settings.mail.transport = MailTransportKind::File;
    q.settings.mail.outbox_dir = outbox_dir.display().to_string();
    let db = q.business_db().await;
    let catalogue = apps::parse_catalogue("t.toml", CATALOGUE).expect("catalogue");
    apps::load_catalogue(&db, "cabinet-1", &catalogue)
        .await
        .expect("load");
    let keys = KeyRing::new(&[]).expect("ring");
    let created = onboarding::create_client(&db, &q.settings.queue, &keys, form())
        .await
        .expect("created");
    assert_eq!(created.jobs, ["tree_setup", "app_setup", "invitation"]);
    // Committed with its jobs, none pushed yet: a crash here loses nothing.
    assert_eq!(count(&db, "outbox").await, 3);
    dossier_core::outbox::relay(&db, &*q.backend)
        .await
        .expect("relay");
    let deps = Arc::new(JobDeps {
        db: db.clone(),
        sirene: Sirene::new(vec![], Quota::local(), Duration::from_secs(1)),
        mail: Mailer::from_settings(&q.settings).expect("mail"),
        queue: q.backend.clone(),
        queue_settings: q.settings.queue.clone(),
        partners: Partners::from_settings(&q.settings).expect("partners"),
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
async fn created_with_everything_on_postgres_with_the_redis_queue() {
    created_with_everything(BackendKind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_form_lists_every_problem_and_writes_nothing() {
    let mut q = TestQueue::new(BackendKind::Sqlite).await;
    let db = q.business_db().await;
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
