//! The firms' event webhooks end to end: events written with the changes
//! that cause them, delivered by the `webhook_delivery` kind to a real
//! HTTP receiver, signed as docs/webhooks.md says; on SQLite, PostgreSQL
//! with its queue, and PostgreSQL with the Redis queue.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dossier_core::clients::Fields;
use dossier_core::config::{MailTransportKind, Settings};
use dossier_core::db::Database;
use dossier_core::events::EventType;
use dossier_core::events::endpoints;
use dossier_core::job::JobStatus;
use dossier_core::jobs::{self, JobDeps, Mailer, webhook_delivery};
use dossier_core::onboarding::{self, ClientForm, Director};
use dossier_core::runtime::Registry;
use dossier_core::secrets::KeyRing;
use dossier_core::sirene::recherche::RechercheEntreprises;
use dossier_core::sirene::{Provider, ProviderSettings, Quota, Sirene};
use dossier_e2e::receiver::{Receiver, Scripted};
use dossier_e2e::registry_stub::RegistryStub;
use dossier_e2e::{BackendKind, TestQueue, TestWorker};
use tokio_util::sync::CancellationToken;

const FIRM: &str = "cabinet-1";
const GANYMEDE: &str = "88087814500015";
const UNKNOWN: &str = "73282932000074";

fn settings() -> Settings {
    let mut s = dossier_e2e::fast_settings();
    s.apps.encryption_keys =
        vec![serde_json::from_str(&format!("\"k1:{}\"", "cd".repeat(32))).expect("key")];
    s.webhooks.timeout_ms = 2_000;
    s
}

struct Setup {
    q: TestQueue,
    db: Database,
    keys: KeyRing,
    receiver: Receiver,
    endpoint: String,
    secret: String,
    registry: RegistryStub,
    registry_base: String,
    relay: CancellationToken,
}

impl Setup {
    async fn new(kind: BackendKind, tweak: impl FnOnce(&mut Settings)) -> Setup {
        let mut s = settings();
        tweak(&mut s);
        let mut q = TestQueue::with_settings(kind, s).await;
        if kind == BackendKind::Postgres {
            // The queue in the business database: events and jobs in one.
            q.settings.queue.url = None;
        }
        q.settings.mail.transport = MailTransportKind::File;
        q.settings.mail.outbox_dir = q.dir.path().join("mail").display().to_string();
        let db = q.business_db().await;
        dossier_e2e::add_firm(&db, FIRM).await;
        let keys = KeyRing::new(&q.settings.apps.encryption_keys).expect("keys");
        let receiver = Receiver::start().await;
        let (e, secret) = endpoints::add(
            &db,
            &keys,
            &q.settings.outbound,
            FIRM,
            &receiver.url(),
            &EventType::ALL,
        )
        .await
        .expect("endpoint");
        let registry = RegistryStub::default();
        let registry_base = registry.start().await;
        let relay = CancellationToken::new();
        tokio::spawn(dossier_core::outbox::run_relay(
            db.clone(),
            q.backend.clone(),
            Duration::from_millis(50),
            relay.clone(),
        ));
        Setup {
            q,
            db,
            keys,
            receiver,
            endpoint: e.id,
            secret,
            registry,
            registry_base,
            relay,
        }
    }

    fn deps(&self) -> Arc<JobDeps> {
        let provider: Arc<dyn Provider> = Arc::new(RechercheEntreprises::new(
            ProviderSettings {
                base_url: self.registry_base.clone(),
                timeout_ms: 1_000,
                quota_requests: 100,
                quota_window_ms: 1_000,
            },
            dossier_e2e::loopback_outbound(1_000),
        ));
        dossier_e2e::product_deps_with(
            &self.q,
            &self.db,
            Sirene::new(vec![provider], Quota::local(), Duration::from_secs(2)),
        )
    }

    fn worker(&self) -> TestWorker {
        let mut registry = Registry::new();
        jobs::register_all(&mut registry, self.deps());
        self.q.start_worker(registry)
    }

    async fn create(&self, siret: Option<&str>, invite: bool) -> String {
        let form = ClientForm {
            firm_id: FIRM.into(),
            siret: siret.map(str::to_string),
            company: Fields::from([("legal_name".to_string(), "Ganymède Conseil".to_string())]),
            exercice_start: chrono::NaiveDate::from_ymd_opt(2026, 1, 1),
            exercice_end: None,
            tree: None,
            director: invite.then(|| Director {
                email: "camille.martin@ganymede.example".into(),
                first_name: "Camille".into(),
                last_name: "Martin".into(),
            }),
            themes: None,
            invite,
            apps: vec![],
            collaborators: vec![],
        };
        onboarding::create_client(&self.db, &self.q.settings.queue, &self.keys, form)
            .await
            .expect("created")
            .client_id
    }

    /// What the rollover does for `client`: its exercice starting on
    /// 1 January of `year`.
    async fn roll_over(&self, client: &str, year: i32) {
        dossier_core::exercice::add(
            &self.db,
            client,
            chrono::NaiveDate::from_ymd_opt(year, 1, 1).expect("date"),
            None,
            false,
            dossier_core::exercice::Origin::Rollover,
            true,
        )
        .await
        .expect("next exercice");
    }

    /// Imports `rows` generated clients (`seed` keeps them apart) and runs
    /// the import here, as the command line does with a small file.
    async fn import(&self, rows: usize, seed: u64) -> String {
        let request = dossier_core::import::Request {
            firm_id: FIRM.into(),
            file_name: "clients.csv".into(),
            partial: false,
            providers: None,
            trace_id: None,
        };
        let id = dossier_core::import::store::new_id();
        let csv = dossier_core::import_bench::generate_csv(rows, seed);
        dossier_core::import::store::create(&self.db, &id, &request, csv.as_bytes(), None)
            .await
            .expect("recorded");
        self.run_import(&id).await;
        id
    }

    async fn run_import(&self, id: &str) {
        dossier_core::import::run(
            &self.db,
            dossier_core::import::Limits::of(&self.q.settings),
            &self.keys,
            Some(self.q.backend.as_ref()),
            id,
            &mut |_| {},
        )
        .await
        .expect("import runs");
    }

    /// A worker running the deliveries only (the clients' jobs stay queued).
    fn deliveries_only(&self) -> TestWorker {
        let mut registry = Registry::new();
        webhook_delivery::register(&mut registry, self.deps());
        self.q.start_worker(registry)
    }

    /// The events the receiver kept (one per id), by client or import, in
    /// the order they came.
    fn by_subject(&self) -> BTreeMap<String, Vec<(String, i64)>> {
        let mut out: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
        for d in self.receiver.accepted_once() {
            let v = d.json();
            let subject = v["client_id"]
                .as_str()
                .or(v["import_id"].as_str())
                .unwrap_or_default()
                .to_string();
            out.entry(subject).or_default().push((
                v["type"].as_str().unwrap_or_default().to_string(),
                v["sequence"].as_i64().unwrap_or(-1),
            ));
        }
        out
    }

    /// Waits until the receiver holds `n` distinct events.
    async fn wait_for_events(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let got = self.receiver.accepted_once().len();
            if got >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{got} of {n} events arrived within {within:?}: {:#?}",
                self.by_subject()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn scalar(&self, sql: &'static str) -> i64 {
        match &self.db {
            Database::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await,
            Database::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await,
        }
        .expect("scalar")
    }

    async fn exec(&self, sql: &'static str, a: &str, b: i64) {
        match &self.db {
            Database::Sqlite(p) => sqlx::query(sql)
                .bind(a)
                .bind(b)
                .execute(p)
                .await
                .map(|_| ()),
            Database::Postgres(p) => sqlx::query(sql)
                .bind(a)
                .bind(b)
                .execute(p)
                .await
                .map(|_| ()),
        }
        .expect("exec");
    }

    async fn done(self) {
        self.relay.cancel();
        self.receiver.down().await;
        self.q.cleanup_with(self.db).await;
    }
}

fn types(list: &[(String, i64)]) -> Vec<&str> {
    list.iter().map(|(t, _)| t.as_str()).collect()
}

/// Each event type from the scenario that causes it, and from no other.
async fn each_event_from_its_scenario(kind: BackendKind) {
    let s = Setup::new(kind, |_| {}).await;
    let w = s.worker();
    // A: registry facts, an invitation sent, then ready.
    let a = s.create(Some(GANYMEDE), true).await;
    // B: typed by hand, nobody invited: ready with nothing else to say.
    let b = s.create(None, false).await;
    s.wait_for_events(4, Duration::from_secs(30)).await;
    // C: a SIRET no registry knows: the enrichment step fails for good.
    let c = s.create(Some(UNKNOWN), false).await;
    s.wait_for_events(5, Duration::from_secs(30)).await;
    // Give every other job time to finish and tell anything it would.
    tokio::time::timeout(
        Duration::from_secs(30),
        dossier_core::runtime::wait_until_drained(
            &*s.q.backend,
            &[
                "siret_enrichment",
                "tree_setup",
                "fiscal_folders",
                "invitation",
                "webhook_delivery",
            ],
            Duration::from_millis(50),
        ),
    )
    .await
    .expect("drained")
    .expect("counts");
    let got = s.by_subject();
    assert_eq!(
        types(&got[&a]),
        ["client.enriched", "invitation.sent", "client.ready"],
        "{got:#?}"
    );
    assert_eq!(
        got[&a].iter().map(|(_, n)| *n).collect::<Vec<_>>(),
        [1, 2, 3],
        "one client's sequence, in order"
    );
    assert_eq!(types(&got[&b]), ["client.ready"], "{got:#?}");
    assert_eq!(types(&got[&c]), ["client.step_failed"], "{got:#?}");

    // What each body says.
    let kept = s.receiver.accepted_once();
    let body = |client: &str, kind: &str| {
        kept.iter()
            .map(|d| d.json())
            .find(|v| v["client_id"] == client && v["type"] == kind)
            .expect("event")
    };
    let ready = body(&a, "client.ready");
    assert_eq!(ready["firm_id"], FIRM);
    assert_eq!(ready["data"]["enrichment"], "enriched");
    assert_eq!(ready["data"]["exercices"].as_array().map(Vec::len), Some(1));
    assert!(
        ready["data"]["folders"].as_i64().unwrap_or(0) > 12,
        "{ready}"
    );
    assert_eq!(ready["data"]["invitations"][0]["status"], "sent");
    let enriched = body(&a, "client.enriched");
    // The fixture's company is closed: the warning travels with the facts,
    // as do the differences with what was typed.
    assert_eq!(enriched["data"]["closed"], true, "{enriched}");
    assert!(
        enriched["data"]["warning"]
            .as_str()
            .unwrap_or_default()
            .contains("closed in the registry"),
        "{enriched}"
    );
    assert_eq!(
        enriched["data"]["differences"][0],
        serde_json::json!({ "field": "legal_name", "entered": "Ganymède Conseil", "registry": "GANYMEDE" })
    );
    let failed = body(&c, "client.step_failed");
    assert_eq!(failed["data"]["step"], "enrichment", "{failed}");
    assert_eq!(failed["data"]["will_retry"], false, "{failed}");
    assert!(
        failed["data"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains(UNKNOWN),
        "{failed}"
    );
    // Every delivery is signed with the endpoint's secret, carries the
    // event id as its idempotency key and its type in a header.
    for d in s.receiver.deliveries() {
        assert!(d.verifies(&s.secret), "{:?}", d);
        let v = d.json();
        assert_eq!(d.idempotency_key.as_deref(), v["id"].as_str());
        assert_eq!(d.event_type.as_deref(), v["type"].as_str());
        assert!(
            !String::from_utf8_lossy(&d.body).contains("camille"),
            "no personal data in an event: {v}"
        );
    }

    // The director accepts (the link's token is set here; the mail's own
    // is covered by the invitation suites).
    let invitation = kept
        .iter()
        .map(|d| d.json())
        .find(|v| v["type"] == "invitation.sent")
        .and_then(|v| v["data"]["invitation_id"].as_str().map(str::to_string))
        .expect("invitation id");
    let token = "ab".repeat(32);
    let hash = dossier_core::digest::sha256_hex(token.as_bytes());
    s.exec(
        "UPDATE invitations SET token_hash = $1, expires_at = $2 WHERE status = 'sent'",
        &hash,
        dossier_core::clock::now_ms() + 86_400_000,
    )
    .await;
    let accepted = dossier_core::invitations::accept(&s.db, &token, Some(FIRM))
        .await
        .expect("accept")
        .expect("accepted");
    assert_eq!(accepted.id, invitation);
    // A refused acceptance (a used link) changes nothing and tells nothing.
    assert!(
        dossier_core::invitations::accept(&s.db, &token, Some(FIRM))
            .await
            .expect("accept")
            .is_none()
    );
    // The rollover opens A's next exercice.
    s.roll_over(&a, 2027).await;
    // An exercice the rules refuse (overlapping) is rolled back: no event.
    assert!(
        dossier_core::exercice::add(
            &s.db,
            &a,
            chrono::NaiveDate::from_ymd_opt(2027, 6, 1).expect("date"),
            None,
            false,
            dossier_core::exercice::Origin::Manual,
            false,
        )
        .await
        .is_err()
    );
    s.wait_for_events(7, Duration::from_secs(30)).await;
    let got = s.by_subject();
    assert_eq!(
        types(&got[&a]),
        [
            "client.enriched",
            "invitation.sent",
            "client.ready",
            "invitation.accepted",
            "exercice.created"
        ],
        "ready once, even with a new exercice: {got:#?}"
    );
    let created = s
        .receiver
        .accepted_once()
        .iter()
        .map(|d| d.json())
        .find(|v| v["type"] == "exercice.created")
        .expect("exercice.created");
    assert_eq!(created["data"]["origin"], "rollover");
    assert_eq!(created["data"]["start"], "2027-01-01");

    // D: invited, never answers; the link runs out.
    let d = s.create(None, true).await;
    s.wait_for_events(9, Duration::from_secs(30)).await;
    s.exec(
        "UPDATE invitations SET expires_at = $2 WHERE client_id = $1",
        &d,
        dossier_core::clock::now_ms() - 1,
    )
    .await;
    assert_eq!(
        dossier_core::invitations::expire_stale(&s.db)
            .await
            .expect("expire"),
        1
    );
    s.wait_for_events(10, Duration::from_secs(30)).await;
    let got = s.by_subject();
    assert_eq!(
        types(&got[&d]),
        ["invitation.sent", "client.ready", "invitation.expired"],
        "{got:#?}"
    );
    w.stop().await;
    // Nothing was written that the receiver did not get, nor sent twice
    // where nothing failed.
    assert_eq!(s.scalar("SELECT COUNT(*) FROM events").await, 10);
    assert_eq!(
        s.scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'delivered'")
            .await,
        10
    );
    assert_eq!(s.receiver.deliveries().len(), 10);
    // An erased client's events go with it (the others stay).
    dossier_core::client_archive::archive(&s.db, &*s.q.backend, &s.q.settings.queue, &d)
        .await
        .expect("archive")
        .expect("archived");
    let erased = dossier_core::erasure::erase_client(&s.db, &*s.q.backend, None, &d)
        .await
        .expect("erase")
        .expect("erased");
    assert_eq!(erased.removed.get("events"), Some(&3), "{erased:?}");
    assert_eq!(s.scalar("SELECT COUNT(*) FROM events").await, 7);
    assert_eq!(s.scalar("SELECT COUNT(*) FROM webhook_deliveries").await, 7);
    s.done().await;
}

#[tokio::test]
async fn each_event_type_comes_from_its_scenario_on_sqlite() {
    each_event_from_its_scenario(BackendKind::Sqlite).await;
}

#[tokio::test]
async fn each_event_type_comes_from_its_scenario_on_postgres_with_its_queue() {
    each_event_from_its_scenario(BackendKind::Postgres).await;
}

#[tokio::test]
async fn each_event_type_comes_from_its_scenario_on_postgres_and_redis() {
    each_event_from_its_scenario(BackendKind::Redis).await;
}

#[tokio::test]
async fn an_import_tells_its_end_once_with_its_counts() {
    let s = Setup::new(BackendKind::Sqlite, |_| {}).await;
    let id = s.import(3, 4).await;
    // Run again, it finds the import finished: nothing new to tell.
    s.run_import(&id).await;
    let w = s.deliveries_only();
    s.wait_for_events(1, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.stop().await;
    let kept = s.receiver.accepted_once();
    assert_eq!(kept.len(), 1, "{:?}", s.by_subject());
    let v = kept[0].json();
    assert_eq!(v["type"], "import.finished");
    assert_eq!(v["import_id"], id.as_str());
    assert_eq!(v["data"]["status"], "done");
    assert_eq!(v["data"]["created"], 3);
    assert_eq!(v["data"]["report"], format!("dossier imports show {id}"));
    s.done().await;
}

/// A receiver gone for a minute gets everything once back, each client's
/// events in their order.
async fn receiver_down_then_back(kind: BackendKind) {
    let s = Setup::new(kind, |s| {
        s.webhooks.max_attempts = 500;
        s.webhooks.disable_after_secs = 3_600;
    })
    .await;
    let w = s.worker();
    s.receiver.down().await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        let c = s.create(None, false).await;
        for year in [2027, 2028] {
            dossier_core::exercice::add_with_folders(
                &s.db,
                &c,
                chrono::NaiveDate::from_ymd_opt(year, 1, 1).expect("date"),
                None,
                false,
                5,
            )
            .await
            .expect("exercice");
        }
        clients.push(c);
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    let failing = endpoints::get(&s.db, &s.endpoint, None)
        .await
        .expect("read")
        .expect("endpoint");
    assert_eq!(failing.state(), "failing", "{failing:?}");
    s.receiver.back().await;
    // Each client: two exercices, then ready (its first year's folders).
    s.wait_for_events(12, Duration::from_secs(60)).await;
    w.stop().await;
    let got = s.by_subject();
    for c in &clients {
        let seqs: Vec<i64> = got[c].iter().map(|(_, n)| *n).collect();
        assert_eq!(seqs, [1, 2, 3], "client {c}: {got:#?}");
    }
    let back = endpoints::get(&s.db, &s.endpoint, None)
        .await
        .expect("read")
        .expect("endpoint");
    assert_eq!(back.state(), "enabled", "a success ends the failing run");
    s.done().await;
}

#[tokio::test]
async fn a_receiver_down_for_a_minute_gets_everything_in_order_on_sqlite() {
    receiver_down_then_back(BackendKind::Sqlite).await;
}

#[tokio::test]
async fn a_receiver_down_for_a_minute_gets_everything_in_order_on_postgres_and_redis() {
    receiver_down_then_back(BackendKind::Redis).await;
}

#[tokio::test]
async fn an_endpoint_failing_long_enough_is_disabled_and_can_be_turned_back_on() {
    let s = Setup::new(BackendKind::Sqlite, |s| {
        s.webhooks.disable_after_secs = 1;
    })
    .await;
    s.receiver.script((0..40).map(|_| Scripted::status(500)));
    let w = s.worker();
    let c = s.create(None, false).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let dead =
            s.q.backend
                .list(&dossier_core::job::JobFilter {
                    kind: Some(webhook_delivery::KIND.into()),
                    status: Some(JobStatus::Dead),
                    limit: 10,
                    ..Default::default()
                })
                .await
                .expect("list");
        if let Some(j) = dead.into_iter().next() {
            break j;
        }
        assert!(Instant::now() < deadline, "the delivery never went dead");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let why = dead.last_error.clone().unwrap_or_default();
    assert!(why.contains("is disabled"), "{why}");
    assert!(why.contains("500"), "the receiver's answer: {why}");
    let e = endpoints::get(&s.db, &s.endpoint, None)
        .await
        .expect("read")
        .expect("endpoint");
    assert_eq!(e.state(), "disabled");
    assert!(
        e.disabled_reason
            .as_deref()
            .unwrap_or_default()
            .contains("webhooks.disable_after_secs"),
        "{e:?}"
    );
    let metrics = dossier_core::metrics::render(&*s.q.backend, &s.db).await;
    assert!(
        metrics.contains("dossier_webhook_endpoints{state=\"disabled\"} 1"),
        "{metrics}"
    );
    // A disabled endpoint gets no new deliveries.
    let before = s.scalar("SELECT COUNT(*) FROM webhook_deliveries").await;
    s.roll_over(&c, 2027).await;
    assert_eq!(
        s.scalar("SELECT COUNT(*) FROM webhook_deliveries").await,
        before
    );
    // Back on, the dead delivery retried: it arrives.
    s.receiver.clear_script();
    endpoints::enable(&s.db, &s.endpoint, None)
        .await
        .expect("enable");
    s.q.backend.retry(&dead.id).await.expect("retry");
    s.wait_for_events(1, Duration::from_secs(30)).await;
    w.stop().await;
    assert_eq!(s.receiver.accepted_once()[0].json()["type"], "client.ready");
    s.done().await;
}

#[test]
fn the_documented_test_vector_is_what_the_code_signs() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/webhooks.md"))
        .expect("docs/webhooks.md");
    let field = |name: &str| {
        doc.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("docs/webhooks.md gives no {name}"))
            .to_string()
    };
    let (secret, timestamp, body, signature) = (
        field("secret"),
        field("timestamp").parse::<i64>().expect("a timestamp"),
        field("body"),
        field("signature"),
    );
    assert_eq!(
        dossier_core::apps::signature::sign(secret.as_bytes(), timestamp, body.as_bytes()),
        signature
    );
    // And the documented check, independently: openssl's HMAC.
    let mut openssl = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", &secret])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl runs");
    use std::io::Write;
    openssl
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{timestamp}.{body}").as_bytes())
        .expect("write");
    let out = openssl.wait_with_output().expect("openssl");
    let hex = String::from_utf8_lossy(&out.stdout);
    assert!(
        hex.trim().ends_with(signature.trim_start_matches("v1=")),
        "{hex}"
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_retry_after_is_honoured() {
    let s = Setup::new(BackendKind::Sqlite, |_| {}).await;
    let mut busy = Scripted::status(503);
    busy.retry_after = Some(2);
    s.receiver
        .script([Scripted::redirect(307, &s.receiver.other_url()), busy]);
    let w = s.worker();
    let c = s.create(None, false).await;
    s.wait_for_events(1, Duration::from_secs(30)).await;
    w.stop().await;
    let got = s.receiver.deliveries();
    assert!(
        got.iter().all(|d| d.path == "/hook"),
        "the redirect's target got the signed body: {got:?}"
    );
    assert_eq!(
        got.iter().map(|d| d.answered).collect::<Vec<_>>(),
        [307, 503, 200]
    );
    assert!(
        got[2].at.duration_since(got[1].at) >= Duration::from_millis(1_900),
        "Retry-After: 2 was not waited: {:?}",
        got[2].at.duration_since(got[1].at)
    );
    assert_eq!(got[0].json()["client_id"], c.as_str());
    assert_eq!(
        s.scalar("SELECT attempts FROM webhook_deliveries").await,
        3,
        "three attempts counted"
    );
    s.done().await;
}

#[tokio::test]
async fn a_step_retried_says_so_once_then_the_client_is_ready() {
    let s = Setup::new(BackendKind::Sqlite, |_| {}).await;
    // Three failed attempts: told once, at the first.
    for _ in 0..3 {
        s.registry.script("search", Scripted::status(503));
    }
    let w = s.worker();
    let c = s.create(Some(GANYMEDE), false).await;
    s.wait_for_events(3, Duration::from_secs(30)).await;
    w.stop().await;
    let got = s.by_subject();
    assert_eq!(
        types(&got[&c]),
        ["client.step_failed", "client.enriched", "client.ready"],
        "{got:#?}"
    );
    let failed = s.receiver.accepted_once()[0].json();
    assert_eq!(failed["data"]["will_retry"], true, "{failed}");
    assert_eq!(failed["data"]["attempt"], 1, "{failed}");
    assert!(
        failed["data"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("503"),
        "{failed}"
    );
    s.done().await;
}

#[tokio::test]
async fn a_refused_invitation_fails_with_its_reason_and_the_client_is_not_ready() {
    let s = Setup::new(BackendKind::Sqlite, |_| {}).await;
    let smtp = dossier_e2e::smtp::SmtpCapture::start(s.q.dir.path());
    let mut settings = s.q.settings.clone();
    let m = &mut settings.mail;
    m.transport = MailTransportKind::Smtp;
    m.smtp.host = "127.0.0.1".into();
    m.smtp.port = smtp.port;
    m.smtp.security = dossier_core::config::SmtpSecurity::None;
    m.smtp.timeout_ms = 2_000;
    let deps = {
        let d = s.deps();
        Arc::new(JobDeps {
            db: d.db.clone(),
            sirene: Sirene::new(vec![], Quota::local(), Duration::from_secs(1)),
            mail: Mailer::from_settings(&settings).expect("mail"),
            queue: d.queue.clone(),
            queue_settings: d.queue_settings.clone(),
            imports: d.imports.clone(),
            partners: d.partners.clone(),
            webhooks: d.webhooks.clone(),
        })
    };
    let mut registry = Registry::new();
    jobs::register_all(&mut registry, deps);
    let w = s.q.start_worker(registry);
    let form = ClientForm {
        firm_id: FIRM.into(),
        siret: None,
        company: Fields::from([("legal_name".to_string(), "Fromagerie Roux".to_string())]),
        exercice_start: chrono::NaiveDate::from_ymd_opt(2026, 1, 1),
        exercice_end: None,
        tree: None,
        director: Some(Director {
            email: "reject.roux@fromagerie.example".into(),
            first_name: "Jeanne".into(),
            last_name: "Roux".into(),
        }),
        themes: None,
        invite: true,
        apps: vec![],
        collaborators: vec![],
    };
    let c = onboarding::create_client(&s.db, &s.q.settings.queue, &s.keys, form)
        .await
        .expect("created")
        .client_id;
    s.wait_for_events(2, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.stop().await;
    let got = s.by_subject();
    assert_eq!(
        types(&got[&c]),
        ["invitation.failed", "client.step_failed"],
        "a draft to fix is not ready: {got:#?}"
    );
    let kept = s.receiver.accepted_once();
    let failed = kept[0].json();
    let reason = failed["data"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("550"), "{failed}");
    assert!(
        !reason.contains("reject.roux"),
        "the address is redacted: {failed}"
    );
    assert_eq!(kept[1].json()["data"]["step"], "invitation");
    assert_eq!(kept[1].json()["data"]["will_retry"], false);
    s.done().await;
}

#[tokio::test]
async fn the_admin_api_manages_endpoints_and_shows_a_secret_once() {
    let s = Setup::new(BackendKind::Sqlite, |_| {}).await;
    let admin = "webhook-admin-token-0123456789";
    let settings = dossier_e2e::with_token(s.q.settings.clone(), admin);
    let (base, stop) = dossier_e2e::serve_api(&s.db, s.q.backend.clone(), &settings).await;
    let web = reqwest::Client::new();
    let added = web
        .post(format!("{base}/v1/admin/webhooks"))
        .bearer_auth(admin)
        .json(&serde_json::json!({
            "firm": FIRM, "url": s.receiver.other_url(), "events": ["import.finished"]
        }))
        .send()
        .await
        .expect("add");
    assert_eq!(added.status().as_u16(), 201);
    let added: serde_json::Value = added.json().await.expect("json");
    let id = added["id"].as_str().expect("id").to_string();
    let secret = added["secret"].as_str().expect("secret").to_string();
    assert!(secret.starts_with("whsec_"));
    let list: serde_json::Value = web
        .get(format!("{base}/v1/admin/webhooks?firm={FIRM}"))
        .bearer_auth(admin)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    assert!(!list.to_string().contains("whsec_"), "{list}");
    let bad = web
        .post(format!("{base}/v1/admin/webhooks"))
        .bearer_auth(admin)
        .json(
            &serde_json::json!({ "firm": FIRM, "url": "https://10.0.0.8/hook", "events": ["all"] }),
        )
        .send()
        .await
        .expect("add");
    assert_eq!(bad.status().as_u16(), 422);
    let why: serde_json::Value = bad.json().await.expect("json");
    assert!(
        why["message"]
            .as_str()
            .unwrap_or_default()
            .contains("10.0.0.8"),
        "{why}"
    );
    let rotated: serde_json::Value = web
        .post(format!("{base}/v1/admin/webhooks/{id}/rotate-secret"))
        .bearer_auth(admin)
        .send()
        .await
        .expect("rotate")
        .json()
        .await
        .expect("json");
    let new_secret = rotated["secret"].as_str().expect("secret");
    assert_ne!(new_secret, secret);
    // The new secret signs the next delivery.
    s.import(1, 9).await;
    let w = s.deliveries_only();
    // The same event to both endpoints: one delivery each.
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.receiver.deliveries().len() < 2 {
        assert!(Instant::now() < deadline, "{:?}", s.receiver.deliveries());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.stop().await;
    let at_other: Vec<_> = s
        .receiver
        .deliveries()
        .into_iter()
        .filter(|d| d.path == "/other")
        .collect();
    assert_eq!(at_other.len(), 1);
    assert!(at_other[0].verifies(new_secret) && !at_other[0].verifies(&secret));
    let gone = web
        .delete(format!("{base}/v1/admin/webhooks/{id}"))
        .bearer_auth(admin)
        .send()
        .await
        .expect("remove");
    assert_eq!(gone.status().as_u16(), 200);
    let again = web
        .delete(format!("{base}/v1/admin/webhooks/{id}"))
        .bearer_auth(admin)
        .send()
        .await
        .expect("remove");
    assert_eq!(again.status().as_u16(), 404);
    stop.cancel();
    s.done().await;
}

#[tokio::test]
async fn a_step_lost_with_its_workers_until_it_died_is_told() {
    let s = Setup::new(BackendKind::Sqlite, |_| {}).await;
    let c = s.create(None, false).await;
    // The client's tree job, taken by a worker that then vanishes on its
    // last attempt: only the rescuer sees that failure.
    let relayed = Instant::now() + Duration::from_secs(10);
    let leased = loop {
        dossier_core::outbox::relay(&s.db, &*s.q.backend)
            .await
            .expect("relay");
        let got =
            s.q.backend
                .fetch(
                    jobs::tree_setup::KIND,
                    "vanished-worker",
                    1,
                    Duration::from_millis(300),
                )
                .await
                .expect("fetch");
        if let Some(j) = got.into_iter().next() {
            break j;
        }
        assert!(Instant::now() < relayed, "the tree job never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let set_last = "UPDATE jobs SET max_attempts = attempts WHERE id = $1 AND $2 = $2";
    s.exec(set_last, &leased.id, 0).await;
    let w = s.worker();
    s.wait_for_events(1, Duration::from_secs(30)).await;
    w.stop().await;
    let v = s.receiver.accepted_once()[0].json();
    assert_eq!(v["type"], "client.step_failed", "{v}");
    assert_eq!(v["client_id"], c.as_str());
    assert_eq!(v["data"]["step"], "tree");
    assert_eq!(v["data"]["will_retry"], false);
    assert!(
        v["data"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("stopped renewing its lease"),
        "{v}"
    );
    s.done().await;
}
