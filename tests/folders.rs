//! Folder trees, exercices and the rollover end to end, on real databases:
//! SQLite (database and queue), PostgreSQL (database and queue) and
//! PostgreSQL with the Redis queue — the same scenarios on each.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::NaiveDate;
use dossier_core::clients::{self, Fields, NewClient};
use dossier_core::db::Database;
use dossier_core::exercice::{self, Added, ExerciceError, Origin, RuleError};
use dossier_core::job::{JobFilter, JobStatus, NewJob, PushOutcome};
use dossier_core::jobs::exercice_rollover::{self, ExerciceRollover};
use dossier_core::jobs::{JobDeps, fiscal_folders, tree_setup};
use dossier_core::runtime::Registry;
use dossier_core::schedule::{self, Scheduled};
use dossier_core::sirene::{Quota, Sirene};
use dossier_core::tree::folders::{self, FolderKind};
use dossier_core::tree::template::TreeTemplate;
use dossier_core::tree::templates;
use dossier_e2e::{BackendKind, TestQueue};
use tokio_util::sync::CancellationToken;

const LONG: Duration = Duration::from_secs(30);
/// The built-in tree: 30 directories, 4 of them per exercice.
const DIRS: usize = 30;
const PER_EXERCICE: usize = 4;

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
}

/// A test queue and its business database.
struct Setup {
    q: TestQueue,
    db: Database,
}

impl Setup {
    async fn new(kind: BackendKind) -> Setup {
        let mut q = TestQueue::new(kind).await;
        let db = q.business_db().await;
        Setup { q, db }
    }

    fn deps(&self) -> Arc<JobDeps> {
        Arc::new(JobDeps {
            db: self.db.clone(),
            sirene: Sirene::new(vec![], Quota::local(), Duration::from_secs(1)),
            mail: dossier_core::jobs::Mailer::from_settings(
                &dossier_core::config::Settings::default(),
            )
            .expect("default mail settings"),
            queue: self.q.backend.clone(),
            queue_settings: self.q.settings.queue.clone(),
            imports: Default::default(),
            partners: dossier_core::jobs::Partners::from_settings(
                &dossier_core::config::Settings::default(),
            )
            .expect("default apps settings"),
            webhooks: dossier_core::jobs::webhook_delivery::Webhooks::from_settings(
                &dossier_core::config::Settings::default(),
            )
            .expect("webhooks settings"),
        })
    }

    fn registry(&self) -> Registry {
        let mut r = Registry::new();
        let deps = self.deps();
        tree_setup::register(&mut r, deps.clone());
        fiscal_folders::register(&mut r, deps.clone());
        exercice_rollover::register(&mut r, deps);
        r
    }

    async fn client(&self, firm: &str) -> String {
        dossier_e2e::add_firm(&self.db, firm).await;
        clients::create(
            &self.db,
            NewClient {
                firm_id: firm.into(),
                siret: None,
                entered: Fields::new(),
            },
        )
        .await
        .expect("client")
        .id
    }

    async fn cleanup(self) {
        self.q.cleanup_with(self.db).await;
    }
}

fn job(kind: &str, payload: serde_json::Value) -> NewJob {
    NewJob {
        kind: kind.into(),
        payload,
        run_at_ms: None,
        max_attempts: 3,
        idempotency_key: None,
        trace_id: None,
        group: None,
        subject: None,
        bulk: false,
    }
}

async fn paths(db: &Database, client: &str) -> Vec<String> {
    folders::list(db, client)
        .await
        .expect("folders")
        .into_iter()
        .map(|f| f.path)
        .collect()
}

async fn created(
    db: &Database,
    client: &str,
    start: &str,
    end: Option<&str>,
) -> exercice::Exercice {
    match exercice::add(
        db,
        client,
        d(start),
        end.map(d),
        false,
        Origin::Manual,
        false,
    )
    .await
    .expect("exercice accepted")
    {
        Added::Created(e) => e,
        Added::AlreadyThere(e) => panic!("already there: {e:?}"),
    }
}

/// Tree, a long first exercice, its successor, an earlier one added later;
/// every job run twice.
async fn trees_and_fiscal_folders(kind: BackendKind) {
    let s = Setup::new(kind).await;
    let client = s.client("cabinet-1").await;
    let first = created(&s.db, &client, "2025-03-15", Some("2026-12-31")).await;
    assert_eq!(first.label, "2025-2026");
    let setup =
        s.q.push(job(
            tree_setup::KIND,
            serde_json::json!({ "client_id": client }),
        ))
        .await;
    let w = s.q.start_worker(s.registry());
    let done =
        s.q.wait_for(&setup, LONG, |j| j.status == JobStatus::Done)
            .await;
    let expected = DIRS + PER_EXERCICE * (1 + 22);
    let result = done.result.expect("result");
    assert_eq!(result["folders"], expected);
    assert_eq!(result["created"], expected);
    let p = paths(&s.db, &client).await;
    assert_eq!(p.len(), expected);
    for want in [
        "Comptabilité/Achats/2025-2026/2025-03 Mars",
        "Comptabilité/Ventes/2025-2026/2026-02 Février",
        "Comptabilité/Notes de frais/2025-2026/2026-08 Août",
        "Comptabilité/Banque/2025-2026/2026-12 Décembre",
        "Dossier permanent/Kbis",
    ] {
        assert!(p.iter().any(|x| x == want), "missing {want}");
    }
    let e = exercice::get(&s.db, &first.id)
        .await
        .expect("get")
        .expect("exists");
    assert!(
        e.folders_done_at_ms.is_some(),
        "tree_setup writes existing exercices too"
    );

    // The next exercice, by its job; then the same job again.
    let next = created(&s.db, &client, "2027-01-01", None).await;
    assert_eq!((next.end, next.label.as_str()), (d("2027-12-31"), "2027"));
    let payload = serde_json::json!({ "client_id": client, "exercice_id": next.id });
    let j1 = s.q.push(job(fiscal_folders::KIND, payload.clone())).await;
    let r1 =
        s.q.wait_for(&j1, LONG, |j| j.status == JobStatus::Done)
            .await;
    let j2 = s.q.push(job(fiscal_folders::KIND, payload)).await;
    let r2 =
        s.q.wait_for(&j2, LONG, |j| j.status == JobStatus::Done)
            .await;
    assert_eq!(r1.result.expect("r1")["created"], PER_EXERCICE * 13);
    assert_eq!(
        r2.result.expect("r2")["created"],
        0,
        "a second run adds nothing"
    );

    // An earlier exercice added later fills its folders too.
    let earlier = created(&s.db, &client, "2024-03-15", Some("2025-03-14")).await;
    assert_eq!(earlier.label, "2024-2025");
    let j3 =
        s.q.push(job(
            fiscal_folders::KIND,
            serde_json::json!({ "client_id": client, "exercice_id": earlier.id }),
        ))
        .await;
    s.q.wait_for(&j3, LONG, |j| j.status == JobStatus::Done)
        .await;
    let p = paths(&s.db, &client).await;
    // 2024-03-15 → 2025-03-14 touches 13 months: March twice.
    assert_eq!(p.len(), expected + PER_EXERCICE * 13 + PER_EXERCICE * 14);
    assert!(
        p.iter()
            .any(|x| x == "Comptabilité/Achats/2024-2025/2024-03 Mars")
    );

    // Wrong payloads fail for good, naming what is wrong.
    let bad =
        s.q.push(job(
            fiscal_folders::KIND,
            serde_json::json!({ "client_id": "someone-else", "exercice_id": next.id }),
        ))
        .await;
    let dead =
        s.q.wait_for(&bad, LONG, |j| j.status == JobStatus::Dead)
            .await;
    assert_eq!(dead.attempts, 1);
    assert!(
        dead.last_error
            .expect("reason")
            .contains("belongs to client")
    );
    let bad =
        s.q.push(job(
            tree_setup::KIND,
            serde_json::json!({ "client_id": client, "template": "other" }),
        ))
        .await;
    let dead =
        s.q.wait_for(&bad, LONG, |j| j.status == JobStatus::Dead)
            .await;
    assert!(
        dead.last_error
            .expect("reason")
            .contains("already has the tree \"cabinet-standard\""),
    );
    w.stop().await;
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trees_and_fiscal_folders_on_sqlite() {
    trees_and_fiscal_folders(BackendKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trees_and_fiscal_folders_on_postgres() {
    trees_and_fiscal_folders(BackendKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trees_and_fiscal_folders_on_postgres_with_the_redis_queue() {
    trees_and_fiscal_folders(BackendKind::Redis).await;
}

/// Many writers at once over the same clients: every folder is created
/// exactly once (the creations reported add up to the rows), nothing fails.
async fn concurrent_writers_create_each_folder_once(kind: BackendKind) {
    let s = Setup::new(kind).await;
    let mut ids = Vec::new();
    for _ in 0..40 {
        let id = s.client("cabinet-1").await;
        created(&s.db, &id, "2026-01-01", None).await;
        ids.push(id);
    }
    // The test queue's database is the business database here.
    let url = s.q.settings.database.url.clone();
    let mut tasks = Vec::new();
    for i in 0..6 {
        // Separate pools, as separate worker processes would have.
        let db = Database::connect(&url, 2).await.expect("db");
        let mut mine = ids.clone();
        if i % 2 == 1 {
            mine.reverse();
        }
        tasks.push(tokio::spawn(async move {
            folders::materialize(&db, &mine, None).await
        }));
    }
    let mut total_created = 0;
    for t in tasks {
        let report = t.await.expect("task").expect("no writer fails");
        total_created += report.created;
    }
    let per_client = DIRS + PER_EXERCICE * 13;
    assert_eq!(total_created as usize, per_client * ids.len());
    for id in &ids {
        assert_eq!(paths(&s.db, id).await.len(), per_client);
    }
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_create_each_folder_once_on_sqlite() {
    concurrent_writers_create_each_folder_once(BackendKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_create_each_folder_once_on_postgres() {
    concurrent_writers_create_each_folder_once(BackendKind::Postgres).await;
}

/// Two workers running the same jobs at once: same outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_running_duplicate_jobs_write_once() {
    let s = Setup::new(BackendKind::Postgres).await;
    let client = s.client("cabinet-1").await;
    let ex = created(&s.db, &client, "2025-07-01", None).await;
    let payload = serde_json::json!({ "client_id": client, "exercice_id": ex.id });
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(s.q.push(job(fiscal_folders::KIND, payload.clone())).await);
    }
    let w1 = s.q.start_worker(s.registry());
    let w2 = s.q.start_worker(s.registry());
    let mut sum = 0;
    for id in &ids {
        let j =
            s.q.wait_for(id, LONG, |j| j.status == JobStatus::Done)
                .await;
        sum += j.result.expect("result")["created"]
            .as_u64()
            .expect("count");
    }
    w1.stop().await;
    w2.stop().await;
    assert_eq!(sum as usize, DIRS + PER_EXERCICE * 13);
    let p = paths(&s.db, &client).await;
    assert_eq!(p.len(), DIRS + PER_EXERCICE * 13);
    assert!(
        p.iter()
            .any(|x| x == "Comptabilité/Achats/2025-2026/2025-07 Juillet")
    );
    s.cleanup().await;
}

/// The rules hold in the store, and under two concurrent adds only one wins.
async fn exercice_rules_in_the_store(kind: BackendKind) {
    let s = Setup::new(kind).await;
    let client = s.client("cabinet-1").await;
    let add = |start: &str, end: Option<&str>, gap: bool| {
        let db = s.db.clone();
        let client = client.clone();
        let (start, end) = (d(start), end.map(d));
        async move { exercice::add(&db, &client, start, end, gap, Origin::Manual, false).await }
    };
    let rule = |r: Result<Added, ExerciceError>| match r {
        Err(ExerciceError::Rule(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert!(matches!(
        rule(add("2025-03-15", Some("2027-01-31"), false).await),
        RuleError::FirstClosesTooLate { .. }
    ));
    assert!(matches!(
        rule(add("2025-03-15", Some("2025-03-01"), false).await),
        RuleError::EndBeforeStart { .. }
    ));
    // Two adds of the same first exercice at once: one is created.
    let (a, b) = tokio::join!(
        add("2025-01-01", None, false),
        add("2025-01-01", None, false)
    );
    let created_n = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Ok(Added::Created(_))))
        .count();
    assert_eq!(created_n, 1, "{a:?} / {b:?}");
    let loser = if a.is_ok() { b } else { a };
    assert!(matches!(rule(loser), RuleError::Overlap { .. }));
    assert!(matches!(
        rule(add("2026-02-01", None, false).await),
        RuleError::GapAfterPrevious { .. }
    ));
    assert!(matches!(
        rule(add("2026-01-01", Some("2028-01-31"), false).await),
        RuleError::TooLong { .. }
    ));
    // A change of closing date: a short exercice, then a shifted one.
    let short = add("2026-01-01", Some("2026-06-30"), false)
        .await
        .expect("short");
    let (Added::Created(short) | Added::AlreadyThere(short)) = short;
    assert_eq!(short.label, "2026");
    let shifted = add("2026-07-01", None, false).await.expect("shifted");
    let (Added::Created(shifted) | Added::AlreadyThere(shifted)) = shifted;
    assert_eq!(
        (shifted.end, shifted.label.as_str()),
        (d("2027-06-30"), "2026-2027")
    );
    // With a gap allowed, two exercices in one year get distinct folders.
    let c2 = s.client("cabinet-1").await;
    exercice::add(
        &s.db,
        &c2,
        d("2025-01-01"),
        Some(d("2025-03-31")),
        false,
        Origin::Manual,
        false,
    )
    .await
    .expect("first");
    let second = exercice::add(
        &s.db,
        &c2,
        d("2025-06-01"),
        Some(d("2025-12-31")),
        true,
        Origin::Manual,
        false,
    )
    .await
    .expect("gap allowed");
    let (Added::Created(second) | Added::AlreadyThere(second)) = second;
    assert_eq!(second.label, "2025 clôture 2025-12-31");
    let missing = exercice::add(
        &s.db,
        "nobody",
        d("2025-01-01"),
        None,
        false,
        Origin::Manual,
        false,
    )
    .await;
    assert!(matches!(missing, Err(ExerciceError::ClientNotFound(_))));
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exercice_rules_on_sqlite() {
    exercice_rules_in_the_store(BackendKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exercice_rules_on_postgres() {
    exercice_rules_in_the_store(BackendKind::Postgres).await;
}

/// A firm's own template: loaded, made default, used by new clients; the
/// clients set up before keep theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firm_templates_and_defaults() {
    let s = Setup::new(BackendKind::Sqlite).await;
    let before = s.client("cabinet-2").await;
    folders::materialize(&s.db, std::slice::from_ref(&before), None)
        .await
        .expect("built-in tree");
    assert_eq!(paths(&s.db, &before).await.len(), DIRS);
    let small = TreeTemplate::parse(
        "small.toml",
        r#"
name = "petit"
[[themes]]
id = "compta"
label = "Comptabilité"
[[dirs]]
name = "Compta"
theme = "compta"
per_exercice = true
[[dirs]]
name = "Divers"
"#,
    )
    .expect("valid");
    let loaded = templates::load(&s.db, "cabinet-2", &small, "small.toml", true)
        .await
        .expect("load");
    assert_eq!(loaded, templates::Loaded::Created);
    let again = templates::load(&s.db, "cabinet-2", &small, "small.toml", false)
        .await
        .expect("reload");
    assert_eq!(again, templates::Loaded::Unchanged);
    assert_eq!(
        templates::default_for(&s.db, "cabinet-2")
            .await
            .expect("default")
            .template
            .name,
        "petit"
    );
    let after = s.client("cabinet-2").await;
    created(&s.db, &after, "2026-01-01", None).await;
    folders::materialize(&s.db, std::slice::from_ref(&after), None)
        .await
        .expect("firm tree");
    let p = paths(&s.db, &after).await;
    assert_eq!(p.len(), 2 + 1 + 12);
    assert!(p.iter().any(|x| x == "Compta/2026/2026-08 Août"));
    let list = folders::list(&s.db, &after).await.expect("list");
    let month = list
        .iter()
        .find(|f| f.kind == FolderKind::Month)
        .expect("month");
    assert_eq!(month.theme.as_deref(), Some("compta"));
    // The earlier client keeps the built-in tree.
    created(&s.db, &before, "2026-01-01", None).await;
    folders::materialize(&s.db, std::slice::from_ref(&before), None)
        .await
        .expect("still built-in");
    assert_eq!(paths(&s.db, &before).await.len(), DIRS + PER_EXERCICE * 13);
    // Another firm still gets the built-in tree.
    let other = s.client("cabinet-3").await;
    folders::materialize(&s.db, std::slice::from_ref(&other), Some("petit"))
        .await
        .expect_err("cabinet-3 has no template petit");
    s.cleanup().await;
}

/// The rollover: two schedulers fire the same tick once; two rollover runs
/// at once create each next exercice once, with its folders.
async fn rollover_with_two_schedulers(kind: BackendKind) {
    let s = Setup::new(kind).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let id = s.client("cabinet-1").await;
        // Half end within 30 days of 2026-12-10, half later.
        let start = if i % 2 == 0 {
            "2026-01-01"
        } else {
            "2026-07-01"
        };
        created(&s.db, &id, start, None).await;
        ids.push(id);
    }
    // A dormant client (ended long ago) and one already extended are left alone.
    let dormant = s.client("cabinet-1").await;
    created(&s.db, &dormant, "2020-01-01", None).await;
    // An exercice whose folders job was lost 20 minutes ago: repaired.
    let lost = s.client("cabinet-1").await;
    let lost_ex = created(&s.db, &lost, "2026-03-01", None).await;
    let back = "UPDATE exercices SET created_at = created_at - 1200000 WHERE id = $1";
    match &s.db {
        Database::Sqlite(p) => sqlx::query(back)
            .bind(&lost_ex.id)
            .execute(p)
            .await
            .map(|_| ()),
        Database::Postgres(p) => sqlx::query(back)
            .bind(&lost_ex.id)
            .execute(p)
            .await
            .map(|_| ()),
    }
    .expect("age the exercice");
    let extended = s.client("cabinet-1").await;
    created(&s.db, &extended, "2026-01-01", None).await;
    created(&s.db, &extended, "2027-01-01", None).await;

    let mut settings = s.q.settings.clone();
    settings.schedule.exercice_rollover.days_before_end = 30;
    let a = schedule::product(&settings).expect("schedules");
    let b = schedule::product(&settings).expect("schedules");
    let tick = chrono::DateTime::parse_from_rfc3339("2026-12-10T03:00:00Z")
        .expect("time")
        .with_timezone(&chrono::Utc);
    let (ra, rb) = tokio::join!(
        a[0].fire(&*s.q.backend, tick),
        b[0].fire(&*s.q.backend, tick)
    );
    let outcomes = [ra.expect("push a"), rb.expect("push b")];
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, PushOutcome::Created(_)))
            .count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(outcomes[0].id(), outcomes[1].id());
    let job_id = outcomes[0].id().to_string();

    // The queued job, and a second rollover for the same day run directly
    // at the same time, as a second scheduler's late job would.
    let w = s.q.start_worker(s.registry());
    let same_day = ExerciceRollover {
        as_of: Some(d("2026-12-10")),
        days_before_end: Some(30),
        dormant_after_days: Some(366),
    };
    let direct = exercice_rollover::run(&s.db, &same_day);
    let (direct, queued) = tokio::join!(
        direct,
        s.q.wait_for(&job_id, LONG, |j| j.status == JobStatus::Done)
    );
    w.stop().await;
    let direct = direct.expect("direct rollover");
    let queued = queued.result.expect("result");
    let created_total = direct.created + queued["created"].as_u64().expect("n") as usize;
    assert_eq!(created_total, 6, "direct {direct:?}, queued {queued}");
    for (i, id) in ids.iter().enumerate() {
        let list = exercice::list(&s.db, id).await.expect("list");
        if i % 2 == 0 {
            assert_eq!(list.len(), 2, "client {i}");
            assert_eq!(
                (list[1].start, list[1].end),
                (d("2027-01-01"), d("2027-12-31"))
            );
            assert_eq!(list[1].origin, "rollover");
            assert!(list[1].folders_done_at_ms.is_some());
            let p = paths(&s.db, id).await;
            assert!(
                p.iter()
                    .any(|x| x == "Comptabilité/Achats/2027/2027-01 Janvier")
            );
            assert_eq!(p.len(), DIRS + 2 * PER_EXERCICE * 13);
        } else {
            assert_eq!(list.len(), 1, "client {i} ends in June 2027: not yet");
        }
    }
    assert_eq!(
        exercice::list(&s.db, &dormant).await.expect("list").len(),
        1
    );
    assert_eq!(
        direct.lost_folders_repaired
            + queued["lost_folders_repaired"].as_u64().unwrap_or(0) as usize,
        1,
        "the lost exercice's folders are written once"
    );
    assert_eq!(paths(&s.db, &lost).await.len(), DIRS + PER_EXERCICE * 13);
    assert_eq!(
        exercice::list(&s.db, &extended).await.expect("list").len(),
        2
    );
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollover_with_two_schedulers_on_sqlite() {
    rollover_with_two_schedulers(BackendKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollover_with_two_schedulers_on_postgres() {
    rollover_with_two_schedulers(BackendKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollover_with_two_schedulers_on_redis() {
    rollover_with_two_schedulers(BackendKind::Redis).await;
}

/// Two scheduler loops on one queue, ticking every second: every tick each
/// of them fires lands once in the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scheduler_loops_enqueue_each_tick_once() {
    let q = TestQueue::new(BackendKind::Redis).await;
    let fired = Arc::new(AtomicUsize::new(0));
    let make = |fired: Arc<AtomicUsize>| {
        Scheduled::new(exercice_rollover::KIND, "* * * * * *", move |tick| {
            fired.fetch_add(1, Ordering::SeqCst);
            NewJob {
                kind: exercice_rollover::KIND.into(),
                payload: serde_json::json!({ "as_of": tick.date_naive() }),
                run_at_ms: None,
                max_attempts: 1,
                idempotency_key: None,
                trace_id: None,
                group: None,
                subject: None,
                bulk: false,
            }
        })
        .expect("cron")
    };
    let stop = CancellationToken::new();
    let loops = [
        tokio::spawn(schedule::run(
            q.backend.clone(),
            vec![make(fired.clone())],
            stop.clone(),
        )),
        tokio::spawn(schedule::run(
            q.backend.clone(),
            vec![make(fired.clone())],
            stop.clone(),
        )),
    ];
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    stop.cancel();
    for l in loops {
        l.await.expect("loop ends");
    }
    let jobs = q
        .backend
        .list(&JobFilter {
            kind: Some(exercice_rollover::KIND.into()),
            status: None,
            limit: 100,
            ..JobFilter::default()
        })
        .await
        .expect("list");
    let keys: BTreeSet<String> = jobs
        .iter()
        .filter_map(|j| j.idempotency_key.clone())
        .collect();
    let fires = fired.load(Ordering::SeqCst);
    assert!(jobs.len() >= 2, "{} ticks in 3.5 s", jobs.len());
    assert_eq!(keys.len(), jobs.len(), "one job per tick");
    assert!(
        fires >= 2 * jobs.len() - 1 && fires <= 2 * jobs.len(),
        "both loops fired each tick: {fires} fires for {} jobs",
        jobs.len()
    );
    q.cleanup().await;
}

/// The fast path (COPY / plain INSERT) meets rows it did not expect: the
/// unique key refuses the batch, which is written again skipping them.
async fn unexpected_existing_rows_fall_back_to_skipping(kind: BackendKind) {
    let s = Setup::new(kind).await;
    let client = s.client("cabinet-1").await;
    created(&s.db, &client, "2026-01-01", None).await;
    let first = folders::materialize(&s.db, std::slice::from_ref(&client), None)
        .await
        .expect("first");
    assert_eq!(first.created as usize, DIRS + PER_EXERCICE * 13);
    // Forget the client's tree: the next run thinks it has no folders.
    let forget = "DELETE FROM client_trees WHERE client_id = $1";
    match &s.db {
        Database::Sqlite(p) => sqlx::query(forget)
            .bind(&client)
            .execute(p)
            .await
            .map(|_| ()),
        Database::Postgres(p) => sqlx::query(forget)
            .bind(&client)
            .execute(p)
            .await
            .map(|_| ()),
    }
    .expect("delete");
    let second = folders::materialize(&s.db, std::slice::from_ref(&client), None)
        .await
        .expect("second run converges");
    assert_eq!(second.created, 0);
    assert_eq!(second.folders, first.folders);
    assert_eq!(paths(&s.db, &client).await.len(), DIRS + PER_EXERCICE * 13);
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unexpected_existing_rows_fall_back_to_skipping_on_sqlite() {
    unexpected_existing_rows_fall_back_to_skipping(BackendKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unexpected_existing_rows_fall_back_to_skipping_on_postgres() {
    unexpected_existing_rows_fall_back_to_skipping(BackendKind::Postgres).await;
}

/// The database connection dies in the middle of a long write (the server
/// kills it, as a crash or failover would): every batch is written whole or
/// not at all, and the next run completes the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_cut_off_midway_leaves_whole_batches_and_the_retry_completes() {
    let s = Setup::new(BackendKind::Postgres).await;
    let Database::Postgres(pool) = &s.db else {
        panic!("postgres")
    };
    let n = 4_000;
    let ids: Vec<String> = (0..n).map(|i| format!("cut-{i:05}")).collect();
    for chunk in ids.chunks(1_000) {
        sqlx::query(
            "INSERT INTO clients (id, firm_id, created_at, updated_at)
             SELECT id, 'cabinet-1', 0, 0 FROM UNNEST($1::text[]) AS u(id)",
        )
        .bind(chunk)
        .execute(pool)
        .await
        .expect("clients");
        sqlx::query(
            "INSERT INTO exercices (id, client_id, start_date, end_date, label, origin, created_at)
             SELECT id || '-ex', id, '2026-01-01', '2026-12-31', '2026', 'manual', 0
             FROM UNNEST($1::text[]) AS u(id)",
        )
        .bind(chunk)
        .execute(pool)
        .await
        .expect("exercices");
    }
    let db = s.db.clone();
    let all = ids.clone();
    let writer = tokio::spawn(async move { folders::materialize(&db, &all, None).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Cut every other connection to this database, repeatedly, until the
    // writer gives up or ends.
    while !writer.is_finished() {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .execute(pool)
        .await
        .ok();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = writer.await.expect("task");
    assert!(
        first.is_err(),
        "the cut should have stopped the writer: {first:?}"
    );
    let per_client = (DIRS + PER_EXERCICE * 13) as i64;
    let counts: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT c.n, COUNT(*) FROM (SELECT e.client_id, COUNT(f.path) AS n
             FROM exercices e LEFT JOIN client_folders f ON f.client_id = e.client_id
             GROUP BY e.client_id) c GROUP BY c.n",
    )
    .fetch_all(pool)
    .await
    .expect("counts");
    for (folders_n, _) in &counts {
        assert!(
            *folders_n == 0 || *folders_n == per_client,
            "a client has a partial tree: {counts:?}"
        );
    }
    let done_without_folders: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM exercices e WHERE folders_done_at IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM client_folders f WHERE f.client_id = e.client_id)",
    )
    .fetch_one(pool)
    .await
    .expect("done flags");
    assert_eq!(done_without_folders, 0);
    let before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM client_folders")
        .fetch_one(pool)
        .await
        .expect("count");
    let again = folders::materialize(&s.db, &ids, None)
        .await
        .expect("the retry completes");
    assert_eq!(again.created as i64, per_client * n - before);
    let after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM client_folders")
        .fetch_one(pool)
        .await
        .expect("count");
    assert_eq!(after, per_client * n);
    let pending: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM exercices WHERE folders_done_at IS NULL")
            .fetch_one(pool)
            .await
            .expect("pending");
    assert_eq!(pending, 0);
    s.cleanup().await;
}

async fn outbox_rows(db: &Database) -> i64 {
    let sql = "SELECT COUNT(*) FROM outbox";
    match db {
        Database::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await,
        Database::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await,
    }
    .expect("count")
}

async fn folder_jobs(q: &TestQueue) -> usize {
    q.backend
        .list(&JobFilter {
            kind: Some(fiscal_folders::KIND.into()),
            status: None,
            limit: 100,
            ..JobFilter::default()
        })
        .await
        .expect("list")
        .len()
}

/// An exercice and its folders job are written in one transaction: the job
/// survives the process dying before it reaches the queue (the relay pushes
/// it later), a push repeated after a crash adds nothing, and a refused
/// exercice leaves no job.
async fn staged_jobs_reach_the_queue_once(kind: BackendKind) {
    let s = Setup::new(kind).await;
    let client = s.client("cabinet-1").await;
    let added = exercice::add_with_folders(&s.db, &client, d("2026-01-01"), None, false, 5)
        .await
        .expect("added");
    let (Added::Created(ex) | Added::AlreadyThere(ex)) = added;
    // The process "dies" here: committed, never pushed.
    assert_eq!(outbox_rows(&s.db).await, 1);
    assert_eq!(folder_jobs(&s.q).await, 0);
    let refused = exercice::add_with_folders(&s.db, &client, d("2026-06-01"), None, false, 5).await;
    assert!(matches!(
        refused,
        Err(ExerciceError::Rule(RuleError::Overlap { .. }))
    ));
    assert_eq!(
        outbox_rows(&s.db).await,
        1,
        "a refused exercice stages nothing"
    );
    // A later relay (any worker's) pushes it.
    assert_eq!(
        dossier_core::outbox::relay(&s.db, &*s.q.backend)
            .await
            .expect("relay"),
        1
    );
    assert_eq!(outbox_rows(&s.db).await, 0);
    assert_eq!(folder_jobs(&s.q).await, 1);
    // A relay that pushed, then died before deleting its rows, pushes again:
    // the job's key makes that a no-op.
    let again = NewJob {
        kind: fiscal_folders::KIND.into(),
        payload: serde_json::json!({ "client_id": client, "exercice_id": ex.id }),
        run_at_ms: None,
        max_attempts: 5,
        idempotency_key: Some(format!("fiscal_folders:{}", ex.id)),
        trace_id: None,
        group: None,
        subject: None,
        bulk: false,
    };
    assert!(matches!(
        s.q.backend.push(again).await.expect("push"),
        PushOutcome::Duplicate(_)
    ));
    assert_eq!(folder_jobs(&s.q).await, 1);
    let w = s.q.start_worker(s.registry());
    let jobs =
        s.q.backend
            .list(&JobFilter {
                kind: Some(fiscal_folders::KIND.into()),
                status: None,
                limit: 1,
                ..JobFilter::default()
            })
            .await
            .expect("list");
    s.q.wait_for(&jobs[0].id, LONG, |j| j.status == JobStatus::Done)
        .await;
    w.stop().await;
    assert_eq!(paths(&s.db, &client).await.len(), DIRS + PER_EXERCICE * 13);
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_jobs_reach_the_queue_once_on_sqlite() {
    staged_jobs_reach_the_queue_once(BackendKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_jobs_reach_the_queue_once_on_postgres() {
    staged_jobs_reach_the_queue_once(BackendKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_jobs_reach_the_queue_once_on_postgres_with_the_redis_queue() {
    staged_jobs_reach_the_queue_once(BackendKind::Redis).await;
}
