//! Test support for the end-to-end suites: a real backend per test (its own
//! SQLite file or its own Redis key prefix), a probe job kind whose failures
//! are scripted by its payload, child worker processes, and a private
//! Redis server for tests that must kill one.

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dossier_core::clock::now_ms;
use dossier_core::config::{QueueBackendKind, Settings};
use dossier_core::db::Database;
use dossier_core::job::{JobError, JobRecord, NewJob};
use dossier_core::queue::redis::RedisQueue;
use dossier_core::queue::{self, QueueBackend};
use dossier_core::runtime::{self, JobContext, Registry, Worker};
use serde::{Deserialize, Serialize};

pub use dossier_core::runtime::CancellationToken;

pub mod fault_proxy;
pub mod partner_stub;
pub mod receiver;
pub mod registry_stub;
pub mod smtp;

/// One `#[tokio::test]` per backend (modules `sqlite`, `redis`, `postgres`)
/// for each named scenario, an `async fn(BackendKind)` of the calling file:
/// the behaviour every backend must show.
#[macro_export]
macro_rules! on_each_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::BackendKind::Sqlite).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::BackendKind::Redis).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::BackendKind::Postgres).await
                }
            )*
        }
    };
}

/// The probe kind every conformance test runs.
pub const PROBE: &str = "probe";

/// Which backend a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackendKind {
    Sqlite,
    Redis,
    Postgres,
}

/// The PostgreSQL server the suites use (each test creates its own database).
pub fn postgres_admin_url() -> String {
    std::env::var("DOSSIER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh, empty PostgreSQL database: (its URL, its name). Drop it with
/// [`drop_postgres_database`].
pub async fn create_empty_postgres_database() -> (String, String) {
    use sqlx::Connection;
    let admin_url = postgres_admin_url();
    let name = format!("dossier_test_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("PostgreSQL reachable: run scripts/test, or set DOSSIER_TEST_POSTGRES_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let (base, _) = admin_url.rsplit_once('/').unwrap_or((&admin_url, ""));
    (format!("{base}/{name}"), name)
}

/// A fresh, migrated PostgreSQL database: (its URL, its name).
pub async fn create_postgres_database() -> (String, String) {
    let (url, name) = create_empty_postgres_database().await;
    Database::connect(&url, 1)
        .await
        .expect("test database reachable")
        .migrate()
        .await
        .expect("migrations apply");
    (url, name)
}

/// Drops a database made by [`create_postgres_database`], connections and all.
pub async fn drop_postgres_database(name: &str) {
    use sqlx::Connection;
    if let Ok(mut admin) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await;
    }
}

/// The Redis the suites use (the machine's, or `scripts/test`'s).
pub fn redis_url() -> String {
    std::env::var("DOSSIER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// Every product job kind, for a worker on `q` with the business data in
/// `db`: mail, partners and imports as `q`'s settings say, no registry.
pub fn product_registry(q: &TestQueue, db: &Database) -> Registry {
    let mut registry = Registry::new();
    dossier_core::jobs::register_all(&mut registry, product_deps(q, db));
    registry
}

/// What the product's handlers get in [`product_registry`], for a test
/// that registers only some kinds.
pub fn product_deps(q: &TestQueue, db: &Database) -> Arc<dossier_core::jobs::JobDeps> {
    use dossier_core::sirene::{Quota, Sirene};
    product_deps_with(
        q,
        db,
        Sirene::new(vec![], Quota::local(), Duration::from_secs(1)),
    )
}

/// [`product_deps`] with registries of the test's own (a stub's).
pub fn product_deps_with(
    q: &TestQueue,
    db: &Database,
    sirene: dossier_core::sirene::Sirene,
) -> Arc<dossier_core::jobs::JobDeps> {
    use dossier_core::jobs::{JobDeps, Mailer, Partners};
    Arc::new(JobDeps {
        db: db.clone(),
        sirene,
        mail: Mailer::from_settings(&q.settings).expect("mail"),
        queue: q.backend.clone(),
        queue_settings: q.settings.queue.clone(),
        imports: q.settings.imports.clone(),
        partners: Partners::from_settings(&q.settings).expect("partners"),
        webhooks: dossier_core::jobs::webhook_delivery::Webhooks::from_settings(&q.settings)
            .expect("webhooks settings"),
    })
}

/// Every key under `prefix` on the suites' Redis with everything it holds
/// (hash fields and values, list, set and sorted-set members, strings), one
/// line per key: what a search of a deployment's Redis as bytes reads.
pub async fn redis_dump(prefix: &str) -> String {
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1_000)
            .query_async(&mut conn)
            .await
            .expect("scan");
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    let mut out = String::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("type");
        let items: Vec<Vec<u8>> = match kind.as_str() {
            "hash" => redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await,
            "list" => {
                redis::cmd("LRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await
            }
            "set" => {
                redis::cmd("SMEMBERS")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
            }
            "zset" => {
                redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await
            }
            "string" => redis::cmd("GET")
                .arg(&key)
                .query_async::<Vec<u8>>(&mut conn)
                .await
                .map(|v| vec![v]),
            _ => Ok(Vec::new()),
        }
        .expect("read key");
        out.push_str(&key);
        for item in items {
            out.push(' ');
            out.push_str(&String::from_utf8_lossy(&item));
        }
        out.push('\n');
    }
    out
}

/// What the probe does on each attempt, set by its payload.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Probe {
    /// Free label the test uses to find its events.
    pub label: String,
    /// Attempts 1..=fail_times fail.
    pub fail_times: u32,
    /// `transient`, `permanent`, `panic`, `retry_after` or `snooze` (the
    /// first `fail_times` runs snooze for `retry_after_ms`).
    pub mode: String,
    pub retry_after_ms: u64,
    /// Every attempt sleeps this long first.
    pub sleep_ms: u64,
}

impl Probe {
    pub fn ok(label: &str) -> Probe {
        Probe {
            label: label.into(),
            mode: "transient".into(),
            ..Probe::default()
        }
    }

    pub fn job(&self) -> NewJob {
        NewJob {
            kind: PROBE.into(),
            payload: serde_json::to_value(self).unwrap_or_default(),
            run_at_ms: None,
            max_attempts: 5,
            idempotency_key: None,
            trace_id: None,
            group: None,
            subject: None,
            bulk: false,
        }
    }
}

/// One attempt as the probe saw it.
#[derive(Debug, Clone)]
pub struct Event {
    pub label: String,
    pub attempt: u32,
    pub at_ms: i64,
    pub job_id: String,
}

/// Attempts seen by probes: in memory, and appended to a file when the
/// probe runs in a child process.
#[derive(Clone, Default)]
pub struct Recorder {
    events: Arc<Mutex<Vec<Event>>>,
    file: Option<PathBuf>,
}

impl Recorder {
    pub fn to_file(path: PathBuf) -> Recorder {
        Recorder {
            events: Arc::default(),
            file: Some(path),
        }
    }

    fn record(&self, e: Event) {
        if let Some(path) = &self.file
            && let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        {
            // One write call per line: concurrent probes append to the
            // same file, and `writeln!` would split the line into pieces.
            let line = format!("{} {} {} {}\n", e.job_id, e.attempt, e.at_ms, e.label);
            let _ = f.write_all(line.as_bytes());
        }
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e);
    }

    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Attempt times of one label, in order.
    pub fn times(&self, label: &str) -> Vec<i64> {
        self.events()
            .into_iter()
            .filter(|e| e.label == label)
            .map(|e| e.at_ms)
            .collect()
    }
}

/// Reads the files child probes wrote: job id → number of attempts that finished recording.
pub fn read_event_files(dir: &Path) -> HashMap<String, u32> {
    let mut out = HashMap::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if let Ok(text) = std::fs::read_to_string(entry.path()) {
                for line in text.lines() {
                    if let Some(id) = line.split(' ').next() {
                        *out.entry(id.to_string()).or_insert(0) += 1;
                    }
                }
            }
        }
    }
    out
}

async fn probe(
    job: Probe,
    ctx: JobContext,
    recorder: Recorder,
) -> Result<serde_json::Value, JobError> {
    recorder.record(Event {
        label: job.label.clone(),
        attempt: ctx.attempt,
        at_ms: now_ms(),
        job_id: ctx.id.to_string(),
    });
    if job.sleep_ms > 0 {
        tokio::time::sleep(Duration::from_millis(job.sleep_ms)).await;
    }
    if job.mode == "snooze" {
        let runs = recorder.times(&job.label).len() as u32;
        if runs <= job.fail_times {
            return Err(JobError::snooze(
                "quota used up",
                Duration::from_millis(job.retry_after_ms),
            ));
        }
    } else if ctx.attempt <= job.fail_times {
        return match job.mode.as_str() {
            "permanent" => Err(JobError::permanent(format!("{} refused", job.label))),
            "panic" => panic!("probe {} panics on attempt {}", job.label, ctx.attempt),
            "retry_after" => Err(JobError::retry_after(
                "over quota",
                Duration::from_millis(job.retry_after_ms),
            )),
            _ => Err(JobError::transient(format!(
                "attempt {} failed",
                ctx.attempt
            ))),
        };
    }
    Ok(serde_json::json!({"label": job.label, "attempt": ctx.attempt}))
}

/// A registry with the probe kind, recording into `recorder`.
pub fn probe_registry(recorder: Recorder) -> Registry {
    let mut r = Registry::new();
    r.register(PROBE, move |job: Probe, ctx| {
        probe(job, ctx, recorder.clone())
    });
    r
}

/// Fast timings so that retries, leases and rescues happen within seconds.
pub fn fast_settings() -> Settings {
    let mut s = Settings::default();
    let q = &mut s.queue;
    q.poll_interval_ms = 100;
    q.lease_ms = 2_000;
    q.heartbeat_ms = 400;
    q.rescue_interval_ms = 300;
    q.shutdown_timeout_ms = 1_500;
    q.defaults.concurrency = 4;
    q.defaults.max_attempts = 5;
    q.defaults.backoff_base_ms = 200;
    q.defaults.backoff_cap_ms = 2_000;
    q.defaults.jitter = 0.2;
    q.defaults.timeout_ms = 10_000;
    // The registries, partners and receivers are stand-ins on 127.0.0.1.
    s.outbound.allow_plain_http_to_loopback = true;
    s
}

/// The outbound client of a provider or partner under test, under
/// [`fast_settings`]'s policy (the stand-ins are on loopback).
pub fn loopback_outbound(timeout_ms: u64) -> dossier_core::outbound::Outbound {
    dossier_core::outbound::Outbound::new(
        dossier_core::outbound::Policy::from_settings(&fast_settings().outbound),
        Duration::from_millis(timeout_ms),
        "dossier-tests",
    )
    .expect("HTTP client")
}

/// Sends what the code under test logs (info and above) to the test's
/// captured output, so that `scripts/test` can scan the whole suite's logs
/// for personal data and secrets (`scripts/scan-logs`).
pub fn init_test_logs() {
    let filter = tracing_subscriber::EnvFilter::try_new("info,sqlx=warn")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

/// A backend private to one test.
pub struct TestQueue {
    pub kind: BackendKind,
    pub settings: Settings,
    pub backend: Arc<dyn QueueBackend>,
    redis: Option<Arc<RedisQueue>>,
    postgres_database: Option<String>,
    pub dir: tempfile::TempDir,
}

impl TestQueue {
    pub async fn new(kind: BackendKind) -> TestQueue {
        Self::with_settings(kind, fast_settings()).await
    }

    pub async fn with_settings(kind: BackendKind, mut settings: Settings) -> TestQueue {
        init_test_logs();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut redis = None;
        let mut postgres_database = None;
        let backend: Arc<dyn QueueBackend> = match kind {
            BackendKind::Postgres => {
                let (url, name) = create_postgres_database().await;
                postgres_database = Some(name);
                settings.database.url = url.clone();
                settings.queue.backend = QueueBackendKind::Postgres;
                settings.queue.url = Some(url);
                queue::open(&settings).await.expect("queue opens")
            }
            BackendKind::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join("queue.db").display());
                settings.database.url = url.clone();
                settings.queue.backend = QueueBackendKind::Sqlite;
                Database::connect(&url, 1)
                    .await
                    .expect("sqlite opens")
                    .migrate()
                    .await
                    .expect("migrations apply");
                queue::open(&settings).await.expect("queue opens")
            }
            BackendKind::Redis => {
                settings.queue.backend = QueueBackendKind::Redis;
                if settings.queue.url.is_none() {
                    settings.queue.url = Some(redis_url());
                }
                settings.queue.prefix = format!("test-{}", uuid::Uuid::now_v7().simple());
                let q = Arc::new(
                    RedisQueue::connect(
                        settings.queue.url.as_deref().unwrap_or_default(),
                        &settings.queue.prefix,
                    )
                    .await
                    .expect("redis reachable: run scripts/test, or start redis-server"),
                );
                redis = Some(q.clone());
                q
            }
        };
        TestQueue {
            kind,
            settings,
            backend,
            redis,
            postgres_database,
            dir,
        }
    }

    /// Starts an in-process worker running `registry`.
    pub fn start_worker(&self, registry: Registry) -> TestWorker {
        let worker = Worker::new(
            runtime::worker_name("test"),
            self.settings.queue.clone(),
            self.backend.clone(),
            registry,
        )
        .expect("worker builds");
        TestWorker {
            name: worker.name().to_string(),
            running: worker.spawn(),
        }
    }

    pub async fn push(&self, job: NewJob) -> String {
        self.backend.push(job).await.expect("push").id().to_string()
    }

    pub async fn job(&self, id: &str) -> JobRecord {
        self.backend
            .get(id)
            .await
            .expect("get")
            .expect("job exists")
    }

    /// Waits until `pred` holds for the job, or fails the test after `within`.
    pub async fn wait_for(
        &self,
        id: &str,
        within: Duration,
        pred: impl Fn(&JobRecord) -> bool,
    ) -> JobRecord {
        let deadline = Instant::now() + within;
        loop {
            let job = self.job(id).await;
            if pred(&job) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} did not reach the expected state within {within:?}: {job:#?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until no probe job is outstanding.
    pub async fn drain(&self, within: Duration) {
        tokio::time::timeout(
            within,
            runtime::wait_until_drained(&*self.backend, &[PROBE], Duration::from_millis(25)),
        )
        .await
        .expect("queue drained in time")
        .expect("counts readable");
    }

    /// Environment for a child worker process on this same backend.
    pub fn child_env(&self, events_dir: &Path) -> Vec<(String, String)> {
        self.child_env_with(events_dir, false)
    }

    /// Environment for a child worker that also runs `siret_enrichment`
    /// (database and registries as `self.settings` name them).
    pub fn child_env_enrich(&self, events_dir: &Path) -> Vec<(String, String)> {
        self.child_env_with(events_dir, true)
    }

    fn child_env_with(&self, events_dir: &Path, enrich: bool) -> Vec<(String, String)> {
        let config = ChildConfig {
            settings: self.settings.clone(),
            events_file: events_dir.join(format!("events-{}.log", uuid::Uuid::now_v7().simple())),
            enrich,
        };
        vec![(
            CHILD_ENV.into(),
            serde_json::to_string(&config).unwrap_or_default(),
        )]
    }

    /// The business database beside this queue, migrated: the queue's own
    /// database on SQLite and PostgreSQL, a fresh PostgreSQL database beside
    /// Redis (dropped by [`TestQueue::cleanup`]). Sets `database.url`.
    pub async fn business_db(&mut self) -> Database {
        if self.kind == BackendKind::Redis && self.postgres_database.is_none() {
            let (url, name) = create_postgres_database().await;
            self.settings.database.url = url;
            self.postgres_database = Some(name);
        }
        let db = Database::connect(&self.settings.database.url, 8)
            .await
            .expect("business database");
        db.migrate().await.expect("migrate");
        db
    }

    /// Closes `db` (so that its PostgreSQL database can be dropped), then
    /// cleans up.
    pub async fn cleanup_with(self, db: Database) {
        match db {
            Database::Postgres(p) => p.close().await,
            Database::Sqlite(p) => p.close().await,
        }
        self.cleanup().await;
    }

    pub async fn cleanup(self) {
        if let Some(r) = &self.redis {
            let _ = r.destroy().await;
        }
        if let Some(name) = &self.postgres_database {
            drop_postgres_database(name).await;
        }
    }
}

pub struct TestWorker {
    pub name: String,
    running: runtime::RunningWorker,
}

impl TestWorker {
    pub async fn stop(self) -> runtime::WorkerReport {
        self.running.stop().await.expect("worker ran without error")
    }
}

/// Child worker processes: the test binary runs itself with this variable
/// set and the ignored `child_worker` entry point selected.
pub const CHILD_ENV: &str = "DOSSIER_TEST_CHILD";

#[derive(Serialize, Deserialize)]
struct ChildConfig {
    settings: Settings,
    events_file: PathBuf,
    /// Also run the product's job kinds, with the dependencies the settings name.
    #[serde(default)]
    enrich: bool,
}

/// Spawns this test binary as a worker process on the same backend.
pub fn spawn_child_worker(env: &[(String, String)]) -> Child {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([
        "child_worker",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("child worker starts")
}

/// The body of a child worker process: runs probes until SIGTERM.
pub fn child_worker_main() {
    let Ok(raw) = std::env::var(CHILD_ENV) else {
        return;
    };
    let config: ChildConfig = serde_json::from_str(&raw).expect("child config");
    if std::env::var_os("DOSSIER_CHILD_LOGS").is_some() {
        dossier_core::logging::init(&config.settings.log);
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let backend = queue::open(&config.settings)
            .await
            .expect("child opens queue");
        let mut registry = probe_registry(Recorder::to_file(config.events_file));
        if config.enrich {
            let deps =
                dossier_core::jobs::JobDeps::from_settings(&config.settings, backend.clone())
                    .await
                    .expect("child job dependencies");
            dossier_core::jobs::register_all(&mut registry, Arc::new(deps));
        }
        let worker = Worker::new(
            runtime::worker_name("child"),
            config.settings.queue.clone(),
            backend,
            registry,
        )
        .expect("child worker builds");
        let stop = CancellationToken::new();
        tokio::spawn(runtime::stop_on_signal(stop.clone()));
        worker.run(stop).await.expect("child worker ran");
    });
}

/// Sends SIGTERM (std's `Child::kill` only sends SIGKILL).
/// Like [`spawn_child_worker`], with the child's logs (debug level) in `log`.
pub fn spawn_logged_child_worker(env: &[(String, String)], log: &Path) -> Child {
    let exe = std::env::current_exe().expect("test binary path");
    let file = std::fs::File::create(log).expect("log file");
    Command::new(exe)
        .args([
            "child_worker",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("DOSSIER_CHILD_LOGS", "1")
        .env("RUST_LOG", "debug")
        .spawn()
        .expect("child worker starts")
}

pub fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -TERM failed");
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A Redis server of the test's own, persisting with AOF (fsync always), so
/// the test can kill and restart it.
pub struct PrivateRedis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start(dir: &Path) -> PrivateRedis {
        let mut r = PrivateRedis {
            port: free_port(),
            dir: dir.to_path_buf(),
            child: None,
        };
        r.launch();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--dir",
                &self.dir.display().to_string(),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (scripts/test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "private redis did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: what the AOF holds is all that survives.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `run` with every log line of this thread (debug level) captured;
/// returns its result and the logs. Run the code under test on a
/// current-thread runtime inside, so that all its tasks log here.
pub fn with_captured_logs<T>(run: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    let out = {
        let _guard = tracing::subscriber::set_default(subscriber);
        run()
    };
    let logs = String::from_utf8_lossy(&captured.0.lock().expect("lock")).into_owned();
    (out, logs)
}

/// A current-thread runtime, for [`with_captured_logs`].
pub fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Every row of every table, as text, table by table.
pub async fn dump(db: &Database) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    match db {
        Database::Sqlite(p) => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
            )
            .fetch_all(p)
            .await
            .expect("tables");
            for t in tables {
                let cols: Vec<String> =
                    sqlx::query_scalar("SELECT name FROM pragma_table_info($1) ORDER BY cid")
                        .bind(&t)
                        .fetch_all(p)
                        .await
                        .expect("columns");
                let row = cols
                    .iter()
                    .map(|c| format!("quote(\"{c}\")"))
                    .collect::<Vec<_>>()
                    .join(" || ',' || ");
                let sql = format!(
                    "SELECT COALESCE(group_concat(r, char(10)), '') FROM (SELECT {row} AS r FROM \"{t}\" ORDER BY 1)"
                );
                let text: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_one(p)
                    .await
                    .expect("dump");
                out.insert(t, text);
            }
        }
        Database::Postgres(p) => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
            )
            .fetch_all(p)
            .await
            .expect("tables");
            for t in tables {
                let sql = format!(
                    "SELECT COALESCE(string_agg(x::text, E'\\n' ORDER BY x::text), '') FROM \"{t}\" x"
                );
                let text: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_one(p)
                    .await
                    .expect("dump");
                out.insert(t, text);
            }
        }
    }
    out
}

/// `settings` with `bearer` as the only accepted hook token.
pub fn with_token(mut settings: Settings, bearer: &str) -> Settings {
    settings.http.tokens = vec![serde_json::from_str(&format!("\"{bearer}\"")).expect("secret")];
    settings
}

/// Serves the HTTP hooks (and dashboard) on a free loopback port; returns
/// the base URL and the token that stops the server.
pub async fn serve_api(
    db: &Database,
    queue: Arc<dyn QueueBackend>,
    settings: &Settings,
) -> (String, CancellationToken) {
    let state = dossier_core::http::ApiState::new(db.clone(), queue, settings).expect("API state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    let router = dossier_core::http::router(state, settings.http.max_body_bytes);
    let limits = settings.http.clone();
    let serving = stop.clone();
    tokio::spawn(
        async move { dossier_core::http::serve(listener, router, &limits, serving).await },
    );
    (base, stop)
}

/// Records `id` as a firm (clients, templates, apps, members and imports
/// name a recorded firm); a firm already there is fine.
pub async fn add_firm(db: &Database, id: &str) {
    match dossier_core::firms::add(db, id, id).await {
        Ok(_) | Err(dossier_core::firms::FirmError::Exists(_)) => {}
        Err(e) => panic!("adding firm {id}: {e}"),
    }
}
