//! Archiving a client stops its work without deleting anything, and
//! unarchiving brings exactly that work back: on SQLite, on PostgreSQL with
//! its queue in the same database, and on PostgreSQL with the Redis queue.

use std::time::Duration;

use dossier_core::apps;
use dossier_core::client_archive::{self, CANCELLED};
use dossier_core::clients::{self, Fields};
use dossier_core::config::{MailTransportKind, Settings};
use dossier_core::db::Database;
use dossier_core::invitations::{self, Status};
use dossier_core::job::{JobFilter, JobStatus};

use dossier_core::onboarding::{self, AppChoice, ClientForm, Director};
use dossier_core::runtime::{self, Registry};
use dossier_core::secrets::KeyRing;
use dossier_e2e::partner_stub::PartnerStub;
use dossier_e2e::{BackendKind, TestQueue};

const FIRM: &str = "cabinet-archive";
const AUTOMATION: &str = "collecte_factures";
const ALL_KINDS: &[&str] = &[
    "tree_setup",
    "fiscal_folders",
    "app_setup",
    "app_teardown",
    "invitation",
];

fn catalogue(base: &str) -> String {
    format!(
        r#"
[[apps]]
id = "banque_en_ligne"
name = "Banque en ligne"
kind = "redirection"
url = "https://banque.example/connexion"

[[apps]]
id = "{AUTOMATION}"
name = "Collecte des factures"
kind = "automation"
provisioning_url = "{base}/provision"
deprovisioning_url = "{base}/deprovision"
settings = [
  {{ name = "api_key", type = "string", required = true, secret = true }},
]
"#
    )
}

fn settings() -> Settings {
    let mut s = dossier_e2e::fast_settings();
    s.apps.encryption_keys =
        vec![serde_json::from_str(&format!("\"k1:{}\"", "cd".repeat(32))).expect("key")];
    s.apps.signing_keys.insert(
        AUTOMATION.into(),
        serde_json::from_str("\"partner-shared-secret-0002\"").expect("key"),
    );
    s.mail.transport = MailTransportKind::File;
    s
}

fn form() -> ClientForm {
    ClientForm {
        firm_id: FIRM.into(),
        siret: None,
        company: Fields::from([("legal_name".to_string(), "Fromagerie Dubois".to_string())]),
        exercice_start: chrono::NaiveDate::from_ymd_opt(2026, 1, 1),
        exercice_end: None,
        tree: None,
        director: Some(Director {
            email: "louise.dubois@fromagerie-dubois.fr".into(),
            first_name: "Louise".into(),
            last_name: "Dubois".into(),
        }),
        themes: None,
        invite: true,
        apps: vec![
            AppChoice {
                app_id: "banque_en_ligne".into(),
                settings: vec![],
                on_director_portal: true,
            },
            AppChoice {
                app_id: AUTOMATION.into(),
                settings: vec![("api_key".into(), "cle-9911-tres-secrete".into())],
                on_director_portal: false,
            },
        ],
        collaborators: vec![],
    }
}

fn registry(q: &TestQueue, db: &Database) -> Registry {
    dossier_e2e::product_registry(q, db)
}

/// Runs `kinds` until none of them has work left.
async fn drain(q: &TestQueue, registry: Registry, kinds: &[&str]) {
    let w = q.start_worker(registry);
    tokio::time::timeout(
        Duration::from_secs(30),
        runtime::wait_until_drained(&*q.backend, kinds, Duration::from_millis(50)),
    )
    .await
    .expect("drained in time")
    .expect("counts");
    w.stop().await;
}

async fn jobs_of(q: &TestQueue, client: &str) -> Vec<dossier_core::job::JobRecord> {
    q.backend
        .list(&JobFilter {
            subject: Some(client.to_string()),
            limit: 100,
            ..JobFilter::default()
        })
        .await
        .expect("list")
}

async fn archive_stops_the_work_and_unarchive_brings_it_back(kind: BackendKind) {
    let mut q = TestQueue::with_settings(kind, settings()).await;
    q.settings.mail.outbox_dir = q.dir.path().join("mail").display().to_string();
    if kind == BackendKind::Postgres {
        q.settings.queue.url = None;
    }
    let mail_dir = std::path::PathBuf::from(&q.settings.mail.outbox_dir);
    let db = q.business_db().await;
    dossier_e2e::add_firm(&db, FIRM).await;
    let stub = PartnerStub::default();
    let base = stub.start().await;
    let list = apps::parse_catalogue("t.toml", &catalogue(&base)).expect("catalogue");
    apps::load_catalogue(&db, FIRM, &list).await.expect("load");
    let keys = KeyRing::new(&q.settings.apps.encryption_keys).expect("keys");
    let created = onboarding::create_client(&db, &q.settings.queue, &keys, form())
        .await
        .expect("created");
    dossier_core::outbox::relay(&db, &*q.backend)
        .await
        .expect("relay");
    let id = created.client_id.clone();

    // The apps are set up; the tree and the invitation still wait.
    drain(
        &q,
        registry(&q, &db).only(&["app_setup".into()]),
        &["app_setup"],
    )
    .await;
    let automation = apps::client_app(&db, &id, AUTOMATION)
        .await
        .expect("app")
        .expect("exists");
    assert_eq!(automation.status, "active");
    assert!(automation.external_id.is_some());

    let due = || async {
        let from = chrono::NaiveDate::from_ymd_opt(2025, 1, 1).expect("date");
        let to = chrono::NaiveDate::from_ymd_opt(2028, 1, 1).expect("date");
        dossier_core::exercice::due_for_rollover(&db, from, to, "", 100)
            .await
            .expect("due")
            .into_iter()
            .filter(|e| e.client_id == id)
            .count()
    };
    assert_eq!(due().await, 1, "an active client's exercice is rolled over");
    let done = client_archive::archive(&db, &*q.backend, &q.settings.queue, &id)
        .await
        .expect("archive")
        .expect("client exists");
    assert!(!done.already);
    assert_eq!(
        done.jobs_cancelled.len(),
        2,
        "tree_setup and invitation: {done:?}"
    );
    assert_eq!(done.invitations_revoked.len(), 1);
    assert_eq!(done.apps_disabled.len(), 2);
    assert_eq!(done.apps_torn_down, [AUTOMATION]);
    for job in jobs_of(&q, &id).await {
        if ["tree_setup", "invitation"].contains(&job.kind.as_str()) {
            assert_eq!(job.status, JobStatus::Dead, "{job:?}");
            assert_eq!(job.last_error.as_deref(), Some(CANCELLED));
        }
    }
    let inv = invitations::list(&db, &id).await.expect("invitations");
    assert_eq!(inv[0].status, Status::Revoked);
    let client = clients::get(&db, &id).await.expect("get").expect("kept");
    assert!(client.archived_at_ms.is_some(), "nothing deleted, marked");
    assert!(clients::list(&db, FIRM, 10).await.expect("list").is_empty());
    assert_eq!(
        clients::archived(&db, FIRM, 10).await.expect("list").len(),
        1
    );

    // The teardown runs; an operator's retry of a cancelled job does nothing.
    let tree_job = jobs_of(&q, &id)
        .await
        .into_iter()
        .find(|j| j.kind == "tree_setup")
        .expect("tree job");
    q.backend.retry(&tree_job.id).await.expect("retry");
    drain(&q, registry(&q, &db), ALL_KINDS).await;
    let calls: Vec<_> = stub.received().into_iter().map(|c| c.path).collect();
    assert_eq!(calls, ["/provision", "/deprovision"]);
    let apps_now = apps::client_apps(&db, &id).await.expect("apps");
    assert!(
        apps_now.iter().all(|a| a.status == "disabled"),
        "{apps_now:?}"
    );
    let retried = q
        .backend
        .get(&tree_job.id)
        .await
        .expect("get")
        .expect("job");
    assert_eq!(retried.status, JobStatus::Dead);
    assert_eq!(retried.last_error.as_deref(), Some(CANCELLED));
    let folders = dossier_core::tree::folders::list(&db, &id)
        .await
        .expect("folders");
    assert!(folders.is_empty(), "an archived client's job did its work");
    assert!(!mail_dir.exists() || std::fs::read_dir(&mail_dir).expect("dir").count() == 0);
    // New work is refused with the way back.
    let refused = invitations::create(
        &db,
        invitations::NewInvitation {
            client_id: id.clone(),
            email: "paul@fromagerie-dubois.fr".into(),
            first_name: "Paul".into(),
            last_name: "Dubois".into(),
            invited_by: None,
            themes: None,
        },
        false,
    )
    .await
    .expect_err("archived");
    assert!(refused.to_string().contains("is archived"), "{refused}");
    assert_eq!(due().await, 0, "an archived client gets no new exercice");
    let definition = apps::app(&db, FIRM, "banque_en_ligne").await.expect("app");
    let refused = apps::enable(&db, &id, &definition, &Default::default(), true)
        .await
        .expect_err("archived");
    assert!(refused.to_string().contains("is archived"), "{refused}");

    let again = client_archive::archive(&db, &*q.backend, &q.settings.queue, &id)
        .await
        .expect("archive")
        .expect("client exists");
    assert!(again.already && again.jobs_cancelled.is_empty() && again.apps_disabled.is_empty());

    // Unarchived: the cancelled jobs run, the invitation goes with a fresh
    // link, both apps come back (the automation provisioned anew).
    let back = client_archive::unarchive(&db, &*q.backend, &q.settings.queue, &id)
        .await
        .expect("unarchive")
        .expect("client exists");
    assert!(!back.was_active);
    assert_eq!(back.jobs_restarted.len(), 2, "{back:?}");
    assert_eq!(back.invitations_reinstated.len(), 1);
    assert_eq!(back.apps_reenabled.len(), 2);
    drain(&q, registry(&q, &db), ALL_KINDS).await;
    let folders = dossier_core::tree::folders::list(&db, &id)
        .await
        .expect("folders");
    assert_eq!(folders.len(), 30 + 4 * 13, "tree and the exercice's months");
    let inv = invitations::list(&db, &id).await.expect("invitations");
    assert_eq!(inv[0].status, Status::Sent);
    assert_eq!(std::fs::read_dir(&mail_dir).expect("mail").count(), 1);
    let apps_now = apps::client_apps(&db, &id).await.expect("apps");
    assert!(
        apps_now.iter().all(|a| a.status == "active"),
        "{apps_now:?}"
    );
    let calls: Vec<_> = stub.received().into_iter().map(|c| c.path).collect();
    assert_eq!(calls, ["/provision", "/deprovision", "/provision"]);
    assert_eq!(clients::list(&db, FIRM, 10).await.expect("list").len(), 1);
    let none = client_archive::unarchive(&db, &*q.backend, &q.settings.queue, &id)
        .await
        .expect("unarchive")
        .expect("client exists");
    assert!(none.was_active);
    q.cleanup_with(db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_and_unarchive_on_sqlite() {
    archive_stops_the_work_and_unarchive_brings_it_back(BackendKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_and_unarchive_on_postgres_with_its_queue() {
    archive_stops_the_work_and_unarchive_brings_it_back(BackendKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_and_unarchive_on_postgres_and_redis() {
    archive_stops_the_work_and_unarchive_brings_it_back(BackendKind::Redis).await;
}
