//! The `siret_enrichment` job end to end: clients in a real database
//! (SQLite, and PostgreSQL with the Redis queue), the registries played by a
//! real HTTP stub, jobs run by the worker runtime.

use std::sync::Arc;
use std::time::Duration;

use dossier_core::clients::{self, ClientError, EnrichmentStatus, Fields, NewClient};
use dossier_core::config::QuotaStoreKind;
use dossier_core::db::Database;
use dossier_core::job::{JobStatus, NewJob};
use dossier_core::jobs::{JobDeps, siret_enrichment};
use dossier_core::runtime::Registry;
use dossier_core::sirene::recherche::RechercheEntreprises;
use dossier_core::sirene::{Provider, ProviderSettings, Quota, Sirene};
use dossier_e2e::registry_stub::{RegistryStub, Scripted};
use dossier_e2e::{BackendKind, TestQueue};

/// Not a test: the entry point of child worker processes (see support).
#[test]
#[ignore = "entry point of child worker processes, run by the suites themselves"]
fn child_worker() {
    dossier_e2e::child_worker_main();
}

const GANYMEDE: &str = "88087814500015";
const UNKNOWN: &str = "73282932000074";
const LONG: Duration = Duration::from_secs(20);

async fn deps(q: &TestQueue, db: Database, stub_base: &str) -> Arc<JobDeps> {
    let provider: Arc<dyn Provider> = Arc::new(RechercheEntreprises::new(
        ProviderSettings {
            base_url: stub_base.to_string(),
            timeout_ms: 1_000,
            quota_requests: 100,
            quota_window_ms: 1_000,
        },
        dossier_e2e::loopback_outbound(1_000),
    ));
    Arc::new(JobDeps {
        db,
        sirene: Sirene::new(vec![provider], Quota::local(), Duration::from_secs(2)),
        mail: dossier_core::jobs::Mailer::from_settings(&dossier_core::config::Settings::default())
            .expect("default mail settings"),
        queue: q.backend.clone(),
        queue_settings: q.settings.queue.clone(),
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
        group: None,
        subject: None,
        bulk: false,
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
    let deps = deps(q, db.clone(), &base).await;
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
    let (url, name) = dossier_e2e::create_postgres_database().await;
    let db = Database::connect(&url, 4).await.expect("connect");

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
    dossier_e2e::drop_postgres_database(&name).await;
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
    let w = q.start_worker(registry(deps(&q, db.clone(), &base).await));
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
    let w = q.start_worker(registry(deps(&q, db.clone(), &base).await));
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

/// Valid SIRETs: SIREN with a Luhn check digit, NIC 00001 + check digit.
fn sirets(n: usize) -> Vec<String> {
    use dossier_core::siret::with_luhn_digit;
    (0..n)
        .map(|i| {
            let siren = with_luhn_digit(&format!("{:08}", 40_000_000 + i * 7));
            with_luhn_digit(&format!("{siren}0000"))
        })
        .collect()
}

/// The most requests of `times` (sorted) in one second, and when that
/// second starts, from the first request.
fn busiest_second(times: &[std::time::Instant]) -> (usize, Duration) {
    (0..times.len())
        .map(|i| {
            let n = times[i..]
                .iter()
                .take_while(|t| **t - times[i] < Duration::from_secs(1))
                .count();
            (n, times[i] - times[0])
        })
        .max_by_key(|(n, _)| *n)
        .unwrap_or((0, Duration::ZERO))
}

/// Three worker processes enrich 200 clients through the 7 requests/s
/// provider: no second of the stub's log holds more than 7 requests, and
/// the run ends within 15% of the ideal (7 at once, then 7 per second). On
/// each deployment, with the quota counted where its setting says: the
/// Redis fleet in Redis; the PostgreSQL-queue deployment without Redis and
/// the embedded one in the business database.
async fn three_processes_share_the_registry_quota(kind: BackendKind, store: QuotaStoreKind) {
    let mut q = TestQueue::new(kind).await;
    let stub = RegistryStub::default();
    stub.answer_every_siret();
    let base = stub.start().await;
    let db = q.business_db().await;
    q.settings.sirene.quota_store = store;
    q.settings.sirene.recherche_entreprises.base_url = base.clone();
    q.settings.sirene.recherche_entreprises.quota_requests = 7;
    q.settings.sirene.recherche_entreprises.quota_window_ms = 1_000;
    q.settings.sirene.max_quota_wait_ms = 60_000;
    // An attempt must outlast its wait for quota plus its request, as with
    // the shipped defaults (5 min): with the suites' 10 s, a lookup in a
    // line slowed by a loaded host was cut after taking its slot, and its
    // retry asked the registry a second time (seen: 201 requests).
    q.settings.queue.defaults.timeout_ms = 120_000;
    q.settings.queue.defaults.concurrency = 8;
    let mut jobs = Vec::new();
    for s in sirets(200) {
        let c = clients::create(
            &db,
            NewClient {
                firm_id: "f".into(),
                siret: Some(s),
                entered: Fields::new(),
            },
        )
        .await
        .expect("client");
        jobs.push(job(&c.id));
    }
    let events = tempfile::tempdir().expect("dir");
    let mut children: Vec<_> = (0..3)
        .map(|_| dossier_e2e::spawn_child_worker(&q.child_env_enrich(events.path())))
        .collect();
    let deadline = std::time::Instant::now() + LONG;
    while q.backend.workers().await.expect("workers").len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "three workers register"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = std::time::Instant::now();
    q.backend.push_bulk(jobs).await.expect("push");
    tokio::time::timeout(
        Duration::from_secs(90),
        dossier_core::runtime::wait_until_drained(
            &*q.backend,
            &[siret_enrichment::KIND],
            Duration::from_millis(50),
        ),
    )
    .await
    .expect("drained in time")
    .expect("counts");
    let elapsed = started.elapsed();
    for c in &children {
        dossier_e2e::terminate(c);
    }
    for c in &mut children {
        assert!(c.wait().expect("exit").success());
    }
    let counts = q.backend.counts().await.expect("counts");
    assert_eq!((counts[0].done, counts[0].dead), (200, 0), "{counts:?}");
    let mut times = stub.requests("search");
    assert_eq!(times.len(), 200, "one request per client");
    times.sort();
    let (peak, peak_at) = busiest_second(&times);
    assert!(peak <= 7, "{peak} requests in the second from +{peak_at:?}");
    let ideal = Duration::from_secs_f64(193.0 / 7.0);
    assert!(
        elapsed <= ideal.mul_f64(1.15),
        "{elapsed:?} vs ideal {ideal:?}"
    );
    q.cleanup_with(db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_the_registry_quota_in_redis() {
    three_processes_share_the_registry_quota(BackendKind::Redis, QuotaStoreKind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_the_registry_quota_in_postgres_without_redis() {
    three_processes_share_the_registry_quota(BackendKind::Postgres, QuotaStoreKind::Database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_the_registry_quota_in_the_sqlite_file() {
    three_processes_share_the_registry_quota(BackendKind::Sqlite, QuotaStoreKind::Database).await;
}

/// Firm A's import is being enriched through a registry allowing 7
/// requests/s, by three worker processes, with 600 of its lookups queued
/// (each second of the run the import could use every slot;
/// `DOSSIER_FAIR_SHARE_IMPORT` sets another size: `scripts/bench-fair-share`
/// runs it with 10,000); meanwhile 20 clients are created one by one for
/// firm B, one a second. Each of firm B's is enriched within 5 s (p99), the
/// registry answers at least 95% of the nominal 7/s over the run when the
/// scenario runs alone, 90% in the loaded suite (firm A
/// has every slot firm B does not need), and no second holds more than 7
/// requests. On the
/// PostgreSQL-queue deployment without Redis (quota in the database) and on
/// the Redis one.
async fn an_import_does_not_hold_back_clients_created_one_by_one(
    kind: BackendKind,
    store: QuotaStoreKind,
) {
    let mut q = TestQueue::new(kind).await;
    let stub = RegistryStub::default();
    stub.answer_every_siret();
    let base = stub.start().await;
    let db = q.business_db().await;
    q.settings.sirene.quota_store = store;
    q.settings.sirene.recherche_entreprises.base_url = base.clone();
    q.settings.sirene.recherche_entreprises.quota_requests = 7;
    q.settings.sirene.recherche_entreprises.quota_window_ms = 1_000;
    q.settings.sirene.max_quota_wait_ms = 60_000;
    q.settings.queue.defaults.concurrency = 8;
    let size: usize = match std::env::var("DOSSIER_FAIR_SHARE_IMPORT") {
        Ok(n) => n
            .parse()
            .expect("DOSSIER_FAIR_SHARE_IMPORT is a number of clients"),
        Err(_) => 600,
    };
    let numbers = sirets(size + 20);
    let owned = |client: &str, firm: &str, bulk: bool| NewJob {
        group: Some(firm.into()),
        subject: Some(client.into()),
        bulk,
        ..job(client)
    };
    let mut import = Vec::new();
    for s in &numbers[..size] {
        let c = clients::create(
            &db,
            NewClient {
                firm_id: "firm-a".into(),
                siret: Some(s.clone()),
                entered: Fields::new(),
            },
        )
        .await
        .expect("client");
        import.push(owned(&c.id, "firm-a", true));
    }
    // Created by an import, as the importer records them.
    let Database::Postgres(pool) = &db else {
        panic!("both deployments keep the business data in PostgreSQL")
    };
    sqlx::query(
        "UPDATE clients SET import_id = 'import-a', import_line = n.line
         FROM (SELECT id, row_number() OVER (ORDER BY id) + 1 AS line FROM clients
               WHERE firm_id = 'firm-a') n
         WHERE clients.id = n.id",
    )
    .execute(pool)
    .await
    .expect("imported");
    let events = tempfile::tempdir().expect("dir");
    let mut children: Vec<_> = (0..3)
        .map(|_| dossier_e2e::spawn_child_worker(&q.child_env_enrich(events.path())))
        .collect();
    let deadline = std::time::Instant::now() + LONG;
    while q.backend.workers().await.expect("workers").len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "three workers register"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    q.backend
        .push_bulk(import)
        .await
        .expect("the import's jobs");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = std::time::Instant::now();
    let mut by_hand = Vec::new();
    for s in &numbers[size..] {
        let c = clients::create(
            &db,
            NewClient {
                firm_id: "firm-b".into(),
                siret: Some(s.clone()),
                entered: Fields::new(),
            },
        )
        .await
        .expect("client");
        by_hand.push(q.push(owned(&c.id, "firm-b", false)).await);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut waits = Vec::new();
    for id in &by_hand {
        let done = q
            .wait_for(id, Duration::from_secs(30), |j| j.status == JobStatus::Done)
            .await;
        waits.push(done.finished_at_ms.unwrap_or(i64::MAX) - done.created_at_ms);
    }
    let ended = started.elapsed();
    for c in &children {
        dossier_e2e::terminate(c);
    }
    for c in &mut children {
        assert!(c.wait().expect("exit").success());
    }
    waits.sort_unstable();
    let p99 = waits[(waits.len() * 99).div_ceil(100) - 1];
    let times = {
        let mut t = stub.requests("search");
        t.sort();
        t
    };
    let from = times.partition_point(|t| t.elapsed() > ended);
    let used = times.len() - from;
    // The nominal quota, 7 per second. A slot is held from its take to a
    // window after its answer (plus 10 ms for the clocks' grain): that
    // comes out of the 5% this leaves.
    let quota = ended.as_secs_f64() * 7.0;
    let (peak, peak_at) = busiest_second(&times);
    eprintln!(
        "fair share: {kind:?} queue, quota in {store:?}, import of {size}: firm B's 20 clients enriched in (ms) {waits:?}; p99 {p99} ms; registry used {used} of {quota:.0} slots of 7/s over {ended:.1?} ({:.1}%); busiest second {peak} (from +{peak_at:.1?})",
        100.0 * used as f64 / quota,
    );
    assert!(p99 <= 5_000, "firm B waited {p99} ms (p99): {waits:?}");
    // 95% when run alone (`scripts/bench-fair-share` asks for it); in the
    // whole suite, hundreds of other tests share the two cores and delay
    // the workers' takes (one run used 94.3%): 90% there.
    let floor: f64 = std::env::var("DOSSIER_FAIR_SHARE_MIN_USE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.90);
    assert!(
        used as f64 >= floor * quota,
        "the quota is used: {used} of {quota:.0} slots (at least {floor} asked)"
    );
    assert!(peak <= 7, "{peak} requests in the second from +{peak_at:?}");
    q.cleanup_with(db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_does_not_hold_back_clients_created_one_by_one_on_postgres_without_redis() {
    an_import_does_not_hold_back_clients_created_one_by_one(
        BackendKind::Postgres,
        QuotaStoreKind::Database,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_does_not_hold_back_clients_created_one_by_one_on_redis() {
    an_import_does_not_hold_back_clients_created_one_by_one(
        BackendKind::Redis,
        QuotaStoreKind::Redis,
    )
    .await;
}

/// Our shared quota used up: the job is snoozed, not failed, and still runs
/// within `max_attempts = 1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_quota_does_not_burn_attempts() {
    let q = TestQueue::new(BackendKind::Sqlite).await;
    let db = sqlite_db(&q).await;
    let stub = RegistryStub::default();
    stub.answer_every_siret();
    let base = stub.start().await;
    let provider: Arc<dyn Provider> = Arc::new(RechercheEntreprises::new(
        ProviderSettings {
            base_url: base.clone(),
            timeout_ms: 1_000,
            quota_requests: 1,
            quota_window_ms: 1_000,
        },
        dossier_e2e::loopback_outbound(1_000),
    ));
    // Never wait in the handler: any wait becomes a snooze.
    let deps = Arc::new(JobDeps {
        db: db.clone(),
        sirene: Sirene::new(vec![provider], Quota::local(), Duration::ZERO),
        mail: dossier_core::jobs::Mailer::from_settings(&dossier_core::config::Settings::default())
            .expect("default mail settings"),
        queue: q.backend.clone(),
        queue_settings: q.settings.queue.clone(),
        imports: Default::default(),
        partners: dossier_core::jobs::Partners::from_settings(
            &dossier_core::config::Settings::default(),
        )
        .expect("default apps settings"),
        webhooks: dossier_core::jobs::webhook_delivery::Webhooks::from_settings(
            &dossier_core::config::Settings::default(),
        )
        .expect("webhooks settings"),
    });
    let mut ids = Vec::new();
    for s in sirets(3) {
        let c = clients::create(
            &db,
            NewClient {
                firm_id: "f".into(),
                siret: Some(s),
                entered: Fields::new(),
            },
        )
        .await
        .expect("client");
        let mut j = job(&c.id);
        j.max_attempts = 1;
        ids.push(q.push(j).await);
    }
    let w = q.start_worker(registry(deps));
    for id in &ids {
        let done = q.wait_for(id, LONG, |j| j.status == JobStatus::Done).await;
        assert_eq!(done.attempts, 1);
        assert!(done.errors.is_empty(), "{:?}", done.errors);
    }
    w.stop().await;
    let mut times = stub.requests("search");
    times.sort();
    assert_eq!(times.len(), 3);
    assert!(
        times[2] - times[0] >= Duration::from_millis(2_000),
        "one request per second"
    );
}
