//! Erasure of personal data: after `erase`, a dump of every table, every
//! Redis key of the deployment and every mail file holds neither the
//! person's address nor their name (searched as bytes, in hexadecimal
//! too, which is how the dumps show file contents), and the firm's other
//! clients are untouched. On SQLite, PostgreSQL with its queue, and
//! PostgreSQL with the Redis queue.

use std::time::Duration;

use dossier_core::client_archive::{self, ArchiveError};
use dossier_core::clients::Fields;
use dossier_core::config::MailTransportKind;
use dossier_core::db::Database;
use dossier_core::erasure::{self, ErasureError};
use dossier_core::import::{self, Limits, Request, store};
use dossier_core::import_bench::siret_for;
use dossier_core::invitations::{self, Status};
use dossier_core::job::JobFilter;

use dossier_core::onboarding::{self, ClientForm, Director};
use dossier_core::runtime::{self, Registry};
use dossier_core::secrets::KeyRing;
use dossier_e2e::{BackendKind, TestQueue};

const FIRM: &str = "cabinet-effacement";
const BEARER: &str = "hook-token-erasure-0123456789";
const LOUISE: &str = "louise.dubois@fromagerie-alpes.fr";
const PAUL: &str = "paul.martin@boulangerie-port.fr";
const MARC: &str = "marc.lefevre@garage-nord.fr";
const KINDS: &[&str] = &[
    "tree_setup",
    "fiscal_folders",
    "invitation",
    "siret_enrichment",
];

fn registry(q: &TestQueue, db: &Database) -> Registry {
    dossier_e2e::product_registry(q, db)
}

async fn drain(q: &TestQueue, db: &Database) {
    let w = q.start_worker(registry(q, db));
    let drained = tokio::time::timeout(
        Duration::from_secs(30),
        runtime::wait_until_drained(&*q.backend, KINDS, Duration::from_millis(50)),
    )
    .await;
    if drained.is_err() {
        let jobs = q
            .backend
            .list(&JobFilter {
                limit: 100,
                ..JobFilter::default()
            })
            .await;
        panic!("not drained: {jobs:?}");
    }
    w.stop().await;
}

/// Everything the deployment holds, as text: tables, the Redis keys of its
/// queue, the mail files.
async fn everything(q: &TestQueue, db: &Database, mail: &std::path::Path) -> String {
    let mut all: String = dossier_e2e::dump(db).await.into_values().collect();
    if q.kind == BackendKind::Redis {
        all.push_str(&dossier_e2e::redis_dump(&q.settings.queue.prefix).await);
    }
    if let Ok(files) = std::fs::read_dir(mail) {
        for f in files.flatten() {
            all.push_str(&String::from_utf8_lossy(
                &std::fs::read(f.path()).unwrap_or_default(),
            ));
        }
    }
    all.to_lowercase()
}

/// Whether `text` (lowercased) holds `needle` as text or as hexadecimal.
fn holds(text: &str, needle: &str) -> bool {
    let needle = needle.to_lowercase();
    let hex: String = needle.bytes().map(|b| format!("{b:02x}")).collect();
    text.contains(&needle) || text.contains(&hex)
}

async fn erasure_leaves_no_trace(kind: BackendKind) {
    let mut q = TestQueue::new(kind).await;
    if kind == BackendKind::Postgres {
        q.settings.queue.url = None;
    }
    q.settings.mail.transport = MailTransportKind::File;
    // No registry here: the import's invitation does not wait for one.
    q.settings.invitations.wait_for_enrichment_secs = 0;
    let mail = q.dir.path().join("mail");
    q.settings.mail.outbox_dir = mail.display().to_string();
    let db = q.business_db().await;
    dossier_e2e::add_firm(&db, FIRM).await;
    let keys = KeyRing::new(&[]).expect("ring");

    // Louise's client through the hook (its answer is kept for retries).
    let settings = dossier_e2e::with_token(q.settings.clone(), BEARER);
    let (base, stop) = dossier_e2e::serve_api(&db, q.backend.clone(), &settings).await;
    let web = reqwest::Client::new();
    let created: serde_json::Value = web
        .post(format!("{base}/v1/clients"))
        .bearer_auth(BEARER)
        .header("Idempotency-Key", "erasure-louise-1")
        .json(&serde_json::json!({
            "firm_id": FIRM,
            "company": { "legal_name": "Fromagerie des Alpes" },
            "exercice": { "start": "2026-01-01" },
            "director": { "email": LOUISE, "first_name": "Louise", "last_name": "Dubois" },
        }))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let louise_client = created["client_id"].as_str().expect("id").to_string();
    // Paul's client by hand.
    let paul_client = onboarding::create_client(
        &db,
        &q.settings.queue,
        &keys,
        ClientForm {
            firm_id: FIRM.into(),
            company: Fields::from([("legal_name".to_string(), "Boulangerie du Port".to_string())]),
            exercice_start: chrono::NaiveDate::from_ymd_opt(2026, 1, 1),
            director: Some(Director {
                email: PAUL.into(),
                first_name: "Paul".into(),
                last_name: "Martin".into(),
            }),
            invite: true,
            ..ClientForm::default()
        },
    )
    .await
    .expect("created")
    .client_id;
    // An import: Marc's client, and a refused row naming Louise.
    let csv = format!(
        "SIRET;Raison sociale;Début d'exercice;Fin d'exercice;Dirigeant email;Dirigeant prénom;Dirigeant nom;Inviter;Référence externe\r\n\
         {};Garage du Nord;01/01/2026;;{MARC};Marc;Lefèvre;oui;REF-1\r\n\
         12345678900000;Fromagerie des Alpes bis;01/01/2026;;{LOUISE};Louise;Dubois;oui;REF-2\r\n",
        siret_for(4_242)
    );
    let import_id = store::new_id();
    let request = Request {
        firm_id: FIRM.into(),
        file_name: "clients.csv".into(),
        partial: true,
        providers: None,
        trace_id: None,
    };
    store::create(&db, &import_id, &request, csv.as_bytes(), None)
        .await
        .expect("import recorded");
    let report = import::run(
        &db,
        Limits::of(&q.settings),
        &keys,
        Some(q.backend.as_ref()),
        &import_id,
        &mut |_| {},
    )
    .await
    .expect("import ran");
    assert_eq!((report.rows_created, report.rows_refused), (1, 1));
    dossier_core::outbox::relay(&db, &*q.backend)
        .await
        .expect("relay");
    drain(&q, &db).await;
    let before = everything(&q, &db, &mail).await;
    for held in [LOUISE, "louise", "dubois", PAUL, MARC] {
        assert!(
            holds(&before, held),
            "{held} should be held before the erasure"
        );
    }

    // Erasure is for archived clients, with none of their jobs running.
    let refused = erasure::erase_client(&db, &*q.backend, Some(&mail), &louise_client).await;
    assert!(
        matches!(refused, Err(ErasureError::NotArchived(_))),
        "{refused:?}"
    );
    client_archive::archive(&db, &*q.backend, &q.settings.queue, &louise_client)
        .await
        .expect("archive")
        .expect("exists");
    // A producer that raced the archive queued one more; a worker holds it.
    let late = q
        .push(dossier_core::owners::of_client(
            dossier_core::job::NewJob {
                kind: "tree_setup".into(),
                payload: serde_json::json!({ "client_id": louise_client }),
                run_at_ms: None,
                max_attempts: 3,
                idempotency_key: None,
                trace_id: None,
                group: None,
                subject: None,
                bulk: false,
            },
            FIRM,
            &louise_client,
        ))
        .await;
    let leased = q
        .backend
        .fetch("tree_setup", "slow-worker", 10, Duration::from_secs(60))
        .await
        .expect("fetch");
    assert_eq!(leased.len(), 1);
    let refused = erasure::erase_client(&db, &*q.backend, Some(&mail), &louise_client).await;
    assert!(
        matches!(refused, Err(ErasureError::Running { .. })),
        "{refused:?}"
    );
    q.backend
        .kill(&late, "test: the slow worker is gone")
        .await
        .expect("kill");

    let done = erasure::erase_client(&db, &*q.backend, Some(&mail), &louise_client)
        .await
        .expect("erase")
        .expect("exists");
    assert!(!done.already);
    let removed = |store: &str| done.removed.get(store).copied().unwrap_or(0);
    assert_eq!(removed("invitations"), 1, "{done:?}");
    assert_eq!(removed("http_requests"), 1, "{done:?}");
    assert_eq!(removed("imports"), 1, "{done:?}");
    assert_eq!(removed("mail files"), 1, "{done:?}");
    assert!(
        removed("queue jobs") >= 3,
        "tree, folders, invitation: {done:?}"
    );
    let after = everything(&q, &db, &mail).await;
    for gone in [LOUISE, "louise", "dubois"] {
        assert!(
            !holds(&after, gone),
            "{gone} is still held after the erasure"
        );
    }
    // The firm's other clients are untouched.
    for kept in [PAUL, MARC] {
        assert!(holds(&after, kept), "{kept} was erased too");
    }
    let paul = invitations::list(&db, &paul_client).await.expect("list");
    assert_eq!(
        (paul[0].email.as_str(), paul[0].status),
        (PAUL, Status::Sent)
    );
    let kept = dossier_core::clients::get(&db, &louise_client)
        .await
        .expect("get")
        .expect("the client stays");
    assert_eq!(kept.company["legal_name"], "Fromagerie des Alpes");
    assert!(
        q.backend
            .list(&JobFilter {
                subject: Some(louise_client.clone()),
                limit: 100,
                ..JobFilter::default()
            })
            .await
            .expect("list")
            .is_empty(),
        "no job of the erased client is left to write anything back"
    );

    // Again: nothing more; and an erased client stays archived.
    let again = erasure::erase_client(&db, &*q.backend, Some(&mail), &louise_client)
        .await
        .expect("erase")
        .expect("exists");
    assert!(again.already && again.total() == 0, "{again:?}");
    let back = client_archive::unarchive(&db, &*q.backend, &q.settings.queue, &louise_client).await;
    assert!(matches!(back, Err(ArchiveError::Erased(_))), "{back:?}");

    // One person across clients: Paul left; his client stays active.
    let done = erasure::erase_person(
        &db,
        &*q.backend,
        Some(&mail),
        "Paul.Martin@Boulangerie-Port.fr",
        Some(FIRM),
    )
    .await
    .expect("erase person");
    assert_eq!(done.removed.get("invitations"), Some(&1), "{done:?}");
    assert_eq!(done.removed.get("mail files"), Some(&1), "{done:?}");
    let after = everything(&q, &db, &mail).await;
    assert!(!holds(&after, PAUL), "Paul's address is still held");
    assert!(holds(&after, MARC), "Marc was erased too");
    let paul = invitations::list(&db, &paul_client).await.expect("list");
    assert_eq!(paul[0].status, Status::Revoked);
    assert!(
        dossier_core::clients::list(&db, FIRM, 10)
            .await
            .expect("list")
            .iter()
            .any(|c| c.id == paul_client)
    );
    let jobs_left = q.backend.counts().await.expect("counts");
    assert!(jobs_left.iter().all(|c| c.running == 0), "{jobs_left:?}");
    stop.cancel();
    q.cleanup_with(db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_leaves_no_trace_on_sqlite() {
    erasure_leaves_no_trace(BackendKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_leaves_no_trace_on_postgres_with_its_queue() {
    erasure_leaves_no_trace(BackendKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_leaves_no_trace_on_postgres_and_redis() {
    erasure_leaves_no_trace(BackendKind::Redis).await;
}
