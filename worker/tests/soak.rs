//! The production-shaped fault runs: PostgreSQL data (behind a
//! fault-injecting proxy), a Redis queue of the test's own (AOF), a real
//! SMTP server, registry and partner servers, three `dossier-worker run`
//! processes, and the onboarding jobs of N clients (tree, enrichment,
//! partner app, invitation). Each scenario does its damage while the jobs
//! run, then waits for the queue to drain, and checks that every job is
//! done or dead with a reason, that no folder or partner call was made
//! twice, and that every invitation reached the mail server — a second
//! copy only ever the identical message, after a lost answer. The firm has
//! a webhook endpoint (a real HTTP receiver): every event written reaches
//! it, each client's in order, and a receiver deduplicating by id sees
//! each exactly once. N = 200 (800 jobs) in the suite; `DOSSIER_SOAK=1` runs
//! 1,250 clients (5,000 jobs). Each prints one JSON line of figures.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dossier_core::apps;
use dossier_core::clients::Fields;
use dossier_core::config::{MailTransportKind, QueueBackendKind};
use dossier_core::db::Database;
use dossier_core::invitations;
use dossier_core::job::JobStatus;
use dossier_core::onboarding::{self, AppChoice, ClientForm, Director};
use dossier_core::queue::QueueBackend;
use dossier_core::secrets::KeyRing;
use dossier_e2e::fault_proxy::FaultProxy;
use dossier_e2e::partner_stub::PartnerStub;
use dossier_e2e::receiver::Receiver;
use dossier_e2e::registry_stub::{RegistryStub, Scripted};
use dossier_e2e::smtp::SmtpCapture;
use dossier_e2e::{PrivateRedis, create_postgres_database, drop_postgres_database, fast_settings};

const BIN: &str = env!("CARGO_BIN_EXE_dossier-worker");
const KINDS: [&str; 4] = ["tree_setup", "siret_enrichment", "app_setup", "invitation"];
/// The events' deliveries: open ones count as unfinished work too.
const DELIVERY: &str = dossier_core::jobs::webhook_delivery::KIND;
const WORKERS: usize = 3;

/// A tiny xorshift: random fault times, reproducible from the printed seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

fn soak() -> bool {
    std::env::var("DOSSIER_SOAK").is_ok_and(|v| v == "1")
}

/// Everything a scenario runs against.
struct Fleet {
    dir: tempfile::TempDir,
    redis: PrivateRedis,
    pg: FaultProxy,
    pg_name: String,
    smtp: SmtpCapture,
    partner: PartnerStub,
    registry: RegistryStub,
    receiver: Receiver,
    /// The endpoint's signing secret.
    secret: String,
    config: PathBuf,
    /// The test's own connection, around the proxy.
    db: Database,
    queue: std::sync::Arc<dyn QueueBackend>,
    workers: Vec<Option<Child>>,
    clients: usize,
    started: Instant,
}

impl Fleet {
    async fn new() -> Fleet {
        let clients = if soak() { 1_250 } else { 200 };
        let dir = tempfile::tempdir().expect("dir");
        let redis = PrivateRedis::start(dir.path());
        let (pg_url, pg_name) = create_postgres_database().await;
        let pg_target = pg_url
            .split('@')
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .expect("host:port in the PostgreSQL URL")
            .to_string();
        let pg = FaultProxy::start(pg_target.clone()).await;
        let registry = RegistryStub::default();
        registry.answer_every_siret();
        let registry_base = registry.start().await;
        let partner = PartnerStub::default();
        let partner_base = partner.start().await;
        let smtp = SmtpCapture::start(dir.path());

        let mut s = fast_settings();
        // The workers reach PostgreSQL through the proxy.
        s.database.url = pg_url.replacen(&pg_target, &format!("127.0.0.1:{}", pg.port), 1);
        s.database.max_connections = 8;
        s.queue.backend = QueueBackendKind::Redis;
        s.queue.url = Some(redis.url());
        s.queue.prefix = "soak".into();
        // Enough attempts, far enough apart, to outlast a minute's outage.
        s.queue.defaults.max_attempts = 25;
        s.queue.defaults.backoff_cap_ms = 5_000;
        s.queue.defaults.concurrency = 8;
        s.sirene.providers = vec!["recherche-entreprises".into()];
        s.sirene.recherche_entreprises.base_url = registry_base;
        s.sirene.recherche_entreprises.quota_requests = 100_000;
        // A slow answer past this is a timeout (the registry scenario).
        s.sirene.recherche_entreprises.timeout_ms = 1_000;
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
        s.invitations.wait_for_enrichment_secs = 30;
        // Debug lines too in the suite: the logs are scanned for personal
        // data and secrets at the end.
        s.log.level = if soak() { "info" } else { "debug" }.into();
        let config = dir.path().join("soak.toml");
        std::fs::write(&config, toml::to_string(&s).expect("toml")).expect("config");

        let db = Database::connect(&pg_url, 8).await.expect("db");
        db.migrate().await.expect("migrate");
        dossier_core::firms::add(&db, "soak", "soak")
            .await
            .expect("firm");
        let receiver = Receiver::start().await;
        let (_, secret) = dossier_core::events::endpoints::add(
            &db,
            &KeyRing::new(&s.apps.encryption_keys).expect("keys"),
            &s.outbound,
            "soak",
            &receiver.url(),
            &dossier_core::events::EventType::ALL,
        )
        .await
        .expect("webhook endpoint");
        let catalogue = format!(
            r#"
[[apps]]
id = "collecte"
name = "Collecte"
kind = "automation"
provisioning_url = "{partner_base}/provision"
deprovisioning_url = "{partner_base}/deprovision"
settings = [{{ name = "api_key", type = "string", required = true, secret = true }}]
"#
        );
        apps::load_catalogue(
            &db,
            "soak",
            &apps::parse_catalogue("c.toml", &catalogue).expect("catalogue"),
        )
        .await
        .expect("load");
        let keys = KeyRing::new(&s.apps.encryption_keys).expect("keys");
        for i in 0..clients {
            let form = ClientForm {
                firm_id: "soak".into(),
                siret: Some(dossier_core::import_bench::siret_for(
                    5_000_000_000 + i as u64,
                )),
                company: Fields::from([("legal_name".to_string(), format!("Client {i}"))]),
                exercice_start: chrono::NaiveDate::from_ymd_opt(2026, 1, 1),
                director: Some(Director {
                    email: format!("dirigeant{i}@client{i}.example"),
                    first_name: "Alex".into(),
                    last_name: format!("Durand{i}"),
                }),
                invite: true,
                apps: vec![AppChoice {
                    app_id: "collecte".into(),
                    settings: vec![("api_key".into(), format!("key-{i}"))],
                    on_director_portal: false,
                }],
                ..ClientForm::default()
            };
            onboarding::create_client(&db, &s.queue, &keys, form)
                .await
                .expect("created");
        }
        let mut direct = s.clone();
        direct.database.url = pg_url;
        let queue = dossier_core::queue::open(&direct).await.expect("queue");
        let mut fleet = Fleet {
            dir,
            redis,
            pg,
            pg_name,
            smtp,
            partner,
            registry,
            receiver,
            secret,
            config,
            db,
            queue,
            workers: Vec::new(),
            clients,
            started: Instant::now(),
        };
        for i in 0..WORKERS {
            let w = fleet.spawn(i);
            fleet.workers.push(Some(w));
        }
        fleet.started = Instant::now();
        fleet
    }

    fn spawn(&self, i: usize) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("worker-{i}.log")))
            .expect("log file");
        Command::new(BIN)
            .args(["--config", &self.config.display().to_string(), "run"])
            .env_remove("DOSSIER_CONFIG")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("worker starts")
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut w) = self.workers[i].take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        self.workers[i] = Some(self.spawn(i));
    }

    fn sigterm_all(&mut self) {
        for w in self.workers.iter().flatten() {
            let _ = Command::new("kill")
                .args(["-TERM", &w.id().to_string()])
                .status();
        }
        for w in self.workers.iter_mut() {
            if let Some(mut c) = w.take() {
                let _ = c.wait();
            }
        }
    }

    fn start_all(&mut self) {
        for i in 0..WORKERS {
            if self.workers[i].is_none() {
                self.workers[i] = Some(self.spawn(i));
            }
        }
    }

    /// Jobs not finished (and staged in the outbox); `None` while the
    /// queue or the database does not answer.
    async fn open(&self) -> Option<(u64, u64)> {
        let counts = self.queue.counts().await.ok()?;
        let open: u64 = counts
            .iter()
            .filter(|c| KINDS.contains(&c.kind.as_str()) || c.kind == DELIVERY)
            .map(|c| c.pending + c.scheduled + c.running + c.retrying)
            .sum();
        let running: u64 = counts.iter().map(|c| c.running).sum();
        let outbox: i64 = match &self.db {
            Database::Postgres(p) => sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
                .fetch_one(p)
                .await
                .ok()?,
            Database::Sqlite(_) => 0,
        };
        Some((open + outbox as u64, running))
    }

    async fn drained(&self) -> bool {
        self.open().await.is_some_and(|(open, _)| open == 0)
    }

    async fn wait_drained(&self) {
        let deadline = Instant::now() + Duration::from_secs(if soak() { 1_800 } else { 300 });
        while !self.drained().await {
            assert!(
                Instant::now() < deadline,
                "not drained in time: {:?}",
                self.queue.counts().await
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Every job done or dead with a reason; no folder, email or partner
    /// call twice. Returns the figures.
    async fn verify(mut self, scenario: &str, faults: serde_json::Value) {
        let drained_in = self.started.elapsed();
        self.sigterm_all();
        // The workers' whole logs hold no address, API key or secret.
        let mut logs = String::new();
        for i in 0..WORKERS {
            logs.push_str(
                &std::fs::read_to_string(self.dir.path().join(format!("worker-{i}.log")))
                    .unwrap_or_default(),
            );
        }
        assert!(logs.contains("job"), "the workers logged nothing");
        let secret_key = "cd".repeat(32);
        for needle in [
            "@client",
            "dirigeant",
            "shared-secret-123456",
            secret_key.as_str(),
            "token=",
        ] {
            assert!(!logs.contains(needle), "{needle:?} in the workers' logs");
        }
        assert!(
            logs.match_indices("key-")
                .all(|(at, _)| logs[..at].chars().last().is_some_and(char::is_alphabetic)),
            "an app's API key (key-N) in the workers' logs"
        );
        let counts = self.queue.counts().await.expect("counts");
        let mut dead = Vec::new();
        for k in KINDS.into_iter().chain([DELIVERY]) {
            for j in self
                .queue
                .list(&dossier_core::job::JobFilter {
                    kind: Some(k.into()),
                    status: Some(JobStatus::Dead),
                    limit: 10_000,
                    ..dossier_core::job::JobFilter::default()
                })
                .await
                .expect("dead")
            {
                assert!(
                    j.last_error.as_deref().is_some_and(|e| !e.is_empty()),
                    "{j:?}"
                );
                dead.push(format!("{}: {}", j.kind, j.last_error.unwrap_or_default()));
            }
        }
        let done: u64 = counts
            .iter()
            .filter(|c| KINDS.contains(&c.kind.as_str()))
            .map(|c| c.done)
            .sum();
        assert_eq!(
            done + dead.len() as u64,
            4 * self.clients as u64,
            "every job done or dead: {counts:?}"
        );
        assert!(dead.is_empty(), "jobs died: {dead:?}");
        let list = dossier_core::clients::list(&self.db, "soak", 100_000)
            .await
            .expect("clients");
        assert_eq!(list.len(), self.clients);
        let (mut sent, mut repeated) = (0, 0);
        for c in &list {
            let folders = dossier_core::tree::folders::list(&self.db, &c.id)
                .await
                .expect("folders");
            let paths: BTreeSet<&str> = folders.iter().map(|f| f.path.as_str()).collect();
            assert_eq!(
                (folders.len(), paths.len()),
                (30 + 4 * 13, 30 + 4 * 13),
                "{}",
                c.id
            );
            let inv = invitations::list(&self.db, &c.id)
                .await
                .expect("invitations");
            if inv[0].status == invitations::Status::Sent {
                sent += 1;
                // Stopped between handing the message over and the
                // server's answer: sent again, identical, and said so (see
                // jobs::invitation).
                // "… lost (N time(s)) …": N copies may be extra.
                if let Some(note) = inv[0]
                    .last_error
                    .as_deref()
                    .filter(|n| n.contains("sent again"))
                {
                    let times = note
                        .split_once('(')
                        .and_then(|(_, rest)| rest.split_once(' '))
                        .and_then(|(n, _)| n.parse::<usize>().ok())
                        .unwrap_or_else(|| panic!("a repeat count in {note:?}"));
                    repeated += times;
                }
            }
        }
        assert_eq!(sent, self.clients, "every invitation sent");
        // Per client: its invitation's message arrived (0 lost), and every
        // copy of it is the identical message (a repeat after a lost
        // answer), never a second, different one.
        let messages = self.smtp.messages();
        let mut per_recipient: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for m in &messages {
            let to = m
                .lines()
                .find_map(|l| l.strip_prefix("X-Envelope-To: "))
                .unwrap_or_default()
                .to_string();
            let sent_bytes: Vec<&str> = m
                .lines()
                .filter(|l| !l.starts_with("X-Envelope-To:"))
                .collect();
            per_recipient
                .entry(to)
                .or_default()
                .insert(sent_bytes.join("\n"));
        }
        let lost = self.clients - per_recipient.len();
        assert_eq!(
            lost, 0,
            "{lost} invitation(s) never reached the mail server"
        );
        assert!(
            per_recipient.values().all(|copies| copies.len() == 1),
            "a person got two different messages"
        );
        let duplicates = messages.len() - per_recipient.len();
        assert!(
            duplicates <= repeated,
            "{duplicates} extra copies, but the invitations note only {repeated} repeats"
        );
        let calls = self.partner.received();
        let mut per_key: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for c in &calls {
            per_key
                .entry(c.idempotency_key.clone().unwrap_or_default())
                .or_default()
                .insert(c.json()["client"]["id"].to_string());
        }
        assert_eq!(per_key.len(), self.clients, "one provisioning per client");
        assert!(
            per_key.values().all(|ids| ids.len() == 1),
            "a retried call carries the same key for the same client"
        );
        for c in &list {
            let app = apps::client_app(&self.db, &c.id, "collecte")
                .await
                .expect("app")
                .expect("exists");
            assert_eq!(app.status, "active", "{}", c.id);
        }
        // Every event written reached the receiver: at least once, each
        // client's in order of sequence (first arrivals), signed; a
        // receiver keeping one per id has each exactly once.
        let written: BTreeMap<String, (String, Option<String>)> = match &self.db {
            Database::Postgres(p) => sqlx::query_as::<_, (String, String, Option<String>)>(
                "SELECT id, type, client_id FROM events",
            )
            .fetch_all(p)
            .await
            .expect("events"),
            Database::Sqlite(_) => Vec::new(),
        }
        .into_iter()
        .map(|(id, kind, client)| (id, (kind, client)))
        .collect();
        let deliveries = self.receiver.deliveries();
        assert!(
            deliveries.iter().all(|d| d.verifies(&self.secret)),
            "a delivery not signed with the endpoint's secret"
        );
        let kept = self.receiver.accepted_once();
        let received: BTreeSet<String> = kept
            .iter()
            .filter_map(|d| d.idempotency_key.clone())
            .collect();
        let missing: Vec<&String> = written
            .keys()
            .filter(|id| !received.contains(*id))
            .collect();
        assert!(
            missing.is_empty(),
            "{} event(s) never arrived: {missing:?}",
            missing.len()
        );
        assert_eq!(
            received.len(),
            written.len(),
            "the receiver got events never written"
        );
        let ready = written
            .values()
            .filter(|(k, _)| k == "client.ready")
            .count();
        assert_eq!(ready, self.clients, "client.ready once per client");
        let mut last: BTreeMap<String, i64> = BTreeMap::new();
        for d in &kept {
            let v = d.json();
            let client = v["client_id"].as_str().unwrap_or_default().to_string();
            let seq = v["sequence"].as_i64().unwrap_or_default();
            let before = last.insert(client.clone(), seq).unwrap_or(0);
            assert!(
                seq > before,
                "client {client}: event {seq} arrived after {before}"
            );
        }
        println!(
            "{}",
            serde_json::json!({
                "scenario": scenario,
                "events": written.len(),
                "event_deliveries": deliveries.iter().filter(|d| d.answered / 100 == 2).count(),
                "clients": self.clients,
                "jobs": 4 * self.clients,
                "faults": faults,
                "drained_in_s": (drained_in.as_secs_f64() * 10.0).round() / 10.0,
                "done": done,
                "dead": dead.len(),
                "emails": messages.len(),
                "lost": lost,
                "duplicates": duplicates,
                "sent_again_after_a_lost_answer": repeated,
                "partner_calls": calls.len(),
            })
        );
        let Fleet {
            db, pg_name, redis, ..
        } = self;
        drop(redis);
        if let Database::Postgres(p) = db {
            p.close().await;
        }
        drop_postgres_database(&pg_name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_at_random_lose_nothing() {
    let mut f = Fleet::new().await;
    let seed = (dossier_core::clock::now_ms() as u64) | 1;
    let mut rng = Rng(seed);
    let (mut kills, mut kills_mid_job) = (0, 0);
    loop {
        let pause = if soak() {
            500 + rng.next(2_500)
        } else {
            200 + rng.next(600)
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
        match f.open().await {
            Some((0, _)) => break,
            Some((_, running)) => {
                if running > 0 {
                    kills_mid_job += 1;
                }
                f.kill(rng.next(WORKERS as u64) as usize);
                kills += 1;
            }
            None => {}
        }
    }
    assert!(kills >= 5, "only {kills} kills before the queue drained");
    f.wait_drained().await;
    f.verify(
        "SIGKILL",
        serde_json::json!({ "seed": seed, "kills": kills, "kills_mid_job": kills_mid_job }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_then_unreachable_for_30_s() {
    let mut f = Fleet::new().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = f.open().await;
    f.redis.restart();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    f.redis.kill();
    tokio::time::sleep(Duration::from_secs(30)).await;
    f.redis.restart();
    f.wait_drained().await;
    f.verify(
        "Redis restarted (AOF), then down 30 s",
        serde_json::json!({ "open_jobs_at_restart": before.map(|b| b.0), "redis_down_s": 30 }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cut_then_refusing_connections_for_30_s() {
    let f = Fleet::new().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = f.open().await;
    // A restart as clients see it: every connection dropped at once.
    f.pg.cut_all();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    f.pg.refuse();
    tokio::time::sleep(Duration::from_secs(30)).await;
    f.pg.restore();
    f.wait_drained().await;
    f.verify(
        "PostgreSQL connections cut, then refused 30 s",
        serde_json::json!({ "open_jobs_at_cut": before.map(|b| b.0), "postgres_refused_s": 30 }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_down_for_60_s_then_back() {
    let mut f = Fleet::new().await;
    f.smtp.down();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let waiting = f.open().await;
    f.smtp.up();
    f.wait_drained().await;
    f.verify(
        "SMTP server down 60 s",
        serde_json::json!({ "open_jobs_when_back": waiting.map(|b| b.0), "smtp_down_s": 60 }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_fleet_stopped_with_sigterm_and_started_again() {
    let mut f = Fleet::new().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = f.open().await;
    f.sigterm_all();
    let stopped = f.open().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    f.start_all();
    f.wait_drained().await;
    f.verify(
        "fleet SIGTERM, then started again",
        serde_json::json!({
            "open_jobs_at_sigterm": before.map(|b| b.0),
            "open_jobs_when_stopped": stopped.map(|b| b.0),
        }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_answers_429_500_timeouts_and_truncated_json() {
    let f = Fleet::new().await;
    // The next lookups get, in turn: over quota (Retry-After 1 s), a
    // server error, an answer cut in the middle of its JSON, an answer
    // past the timeout, then a good one — over and over for the first
    // 60 % of the clients.
    let scripted = f.clients * 3 / 5;
    for i in 0..scripted {
        f.registry.script(
            "search",
            match i % 5 {
                0 => Scripted::too_many(1),
                1 => Scripted::status(500),
                2 => Scripted::truncated(),
                3 => Scripted::slow(Duration::from_millis(1_500)),
                _ => Scripted::status(200),
            },
        );
    }
    f.wait_drained().await;
    let enriched = dossier_core::clients::list(&f.db, "soak", 100_000)
        .await
        .expect("clients")
        .iter()
        .filter(|c| c.enrichment_status == dossier_core::clients::EnrichmentStatus::Enriched)
        .count();
    assert_eq!(enriched, f.clients, "every client enriched in the end");
    let asked = f.registry.requests("search").len();
    f.verify(
        "registry: 429, 500, truncated JSON, timeouts",
        serde_json::json!({ "scripted_failures": scripted * 4 / 5, "registry_requests": asked }),
    )
    .await;
}
