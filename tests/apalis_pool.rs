//! The apalis pool's own guarantees, on each backend: handlers written the
//! apalis way (extractors, `Data`, apalis's error types), attempt numbering
//! as apalis and we count it, undecodable payloads, hard stops and timeouts
//! that leave no task behind, a blocking handler beside other kinds, and
//! schedules on apalis-cron, and a worker that fails inside the pool
//! rebuilt by the Monitor with no job lost.
//!
//! `apalis_contract_*` fails if an apalis upgrade moves the backend's layer
//! (the ack would no longer see panics and timeouts as ours) or changes how
//! attempts are counted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apalis_core::backend::{FetchById, TaskSink};
use apalis_core::backend::{Filter, ListQueues, ListTasks, ListWorkers, Metrics};
use apalis_core::error::{AbortError, BoxDynError, DeferredError, RetryAfterError};
use apalis_core::layers::Layer;
use apalis_core::task::attempt::Attempt;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::data::Data;
use apalis_core::task::status::Status;
use apalis_core::task::task_fn::task_fn;
use dossier_core::clock::now_ms;
use dossier_core::config::KindOverride;
use dossier_core::job::{JobError, JobFilter, JobStatus, NewJob};
use dossier_core::runtime::{JobContext, KindQueue, Registry};
use dossier_core::schedule::Scheduled;
use dossier_e2e::*;
use serde::{Deserialize, Serialize};

dossier_e2e::on_each_backend!(
    apalis_handlers_and_error_types_are_honoured,
    apalis_contract_ack_outermost_and_attempts_counted_like_ours,
    undecodable_payloads_go_dead_and_the_worker_lives_on,
    hard_stop_hands_back_uncounted_and_aborts_the_handler,
    timeouts_leave_no_detached_task,
    a_blocking_handler_does_not_stall_other_kinds,
    schedules_on_the_same_second_all_fire,
    apalis_producers_and_tools_use_our_queue,
    a_failed_apalis_worker_is_rebuilt_and_its_jobs_go_on,
);

const NATIVE: &str = "native";
const WITHIN: Duration = Duration::from_secs(20);

/// The payload of the kind written as a plain apalis handler.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Native {
    label: String,
    /// `abort`, `retry_after`, `defer`, `transient`, `panic`, `sleep`, `block` or `ok`.
    mode: String,
    /// Attempts 1..=fail_times fail as `mode` says.
    #[serde(default)]
    fail_times: u32,
    #[serde(default)]
    ms: u64,
}

impl Native {
    fn job(label: &str, mode: &str, fail_times: u32, ms: u64) -> NewJob {
        NewJob {
            kind: NATIVE.into(),
            payload: serde_json::json!({"label": label, "mode": mode, "fail_times": fail_times, "ms": ms}),
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

/// One run as the handler saw it: (our attempt, apalis's attempt, at ms).
type Run = (u32, usize, i64);

/// What the native handler saw, shared with the test through apalis `Data`.
#[derive(Clone, Default)]
struct Seen {
    /// label → its runs.
    runs: Arc<Mutex<BTreeMap<String, Vec<Run>>>>,
    /// Labels whose handler got past its sleep (it was not aborted).
    finished: Arc<Mutex<BTreeSet<String>>>,
}

impl Seen {
    fn runs(&self, label: &str) -> Vec<Run> {
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.get(label).cloned().unwrap_or_default()
    }

    fn finished(&self, label: &str) -> bool {
        let done = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        done.contains(label)
    }
}

/// An apalis handler: typed payload, then extractors of its choosing.
async fn native(
    job: Native,
    ctx: JobContext,
    attempt: Attempt,
    seen: Data<Seen>,
) -> Result<serde_json::Value, BoxDynError> {
    let run = {
        let mut runs = seen.runs.lock().unwrap_or_else(|e| e.into_inner());
        let runs = runs.entry(job.label.clone()).or_default();
        runs.push((ctx.attempt, attempt.current(), now_ms()));
        runs.len() as u32
    };
    let io = || std::io::Error::other(format!("{} failed", job.label));
    match job.mode.as_str() {
        "sleep" => tokio::time::sleep(Duration::from_millis(job.ms)).await,
        // Holds its thread: what a careless synchronous call does.
        "block" => std::thread::sleep(Duration::from_millis(job.ms)),
        _ => {}
    }
    seen.finished
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(job.label.clone());
    // A deferral spends no attempt: count runs instead.
    let failing = match job.mode.as_str() {
        "defer" => run,
        _ => ctx.attempt,
    } <= job.fail_times;
    if failing {
        return Err(match job.mode.as_str() {
            "abort" => AbortError::new(io()).into(),
            "retry_after" => RetryAfterError::new(io(), Duration::from_millis(job.ms)).into(),
            "defer" => DeferredError::new(io()).into(),
            "panic" => panic!("{} panics on attempt {}", job.label, ctx.attempt),
            _ => JobError::transient(format!("attempt {} failed", ctx.attempt)).into(),
        });
    }
    Ok(serde_json::json!({"label": job.label, "attempt": attempt.current()}))
}

fn native_registry(seen: &Seen) -> Registry {
    let mut r = Registry::new();
    r.register_service(NATIVE, Data::new(seen.clone()).layer(task_fn(native)));
    r
}

/// The native kind with `overrides`, its retries 200 ms apart, and the
/// probe kind beside it.
async fn queue(kind: BackendKind, overrides: KindOverride) -> TestQueue {
    let mut settings = fast_settings();
    settings.queue.defaults.jitter = 0.0;
    settings.queue.kinds.insert(NATIVE.into(), overrides);
    TestQueue::with_settings(kind, settings).await
}

async fn apalis_handlers_and_error_types_are_honoured(kind: BackendKind) {
    let q = queue(kind, KindOverride::default()).await;
    let seen = Seen::default();
    let abort = q.push(Native::job("abort", "abort", 1, 0)).await;
    let retry_after = q
        .push(Native::job("retry_after", "retry_after", 1, 1_500))
        .await;
    let defer = q.push(Native::job("defer", "defer", 1, 0)).await;
    let w = q.start_worker(native_registry(&seen));

    let dead = q
        .wait_for(&abort, WITHIN, |j| j.status == JobStatus::Dead)
        .await;
    assert_eq!(dead.attempts, 1, "AbortError is not retried");
    assert_eq!(dead.errors[0].class, "permanent");
    assert_eq!(dead.errors[0].message, "abort failed");

    let done = q
        .wait_for(&retry_after, WITHIN, |j| j.status == JobStatus::Done)
        .await;
    let runs = seen.runs("retry_after");
    assert_eq!(runs.len(), 2);
    let waited = runs[1].2 - runs[0].2;
    assert!(
        waited >= 1_500,
        "RetryAfterError's duration is honoured (not the 200 ms backoff): {waited} ms"
    );
    assert_eq!(done.errors[0].class, "transient");

    let done = q
        .wait_for(&defer, WITHIN, |j| j.status == JobStatus::Done)
        .await;
    assert_eq!(seen.runs("defer").len(), 2, "deferred, then run again");
    assert_eq!(
        done.attempts, 1,
        "a DeferredError does not spend an attempt"
    );
    assert!(done.errors.is_empty());
    w.stop().await;
    q.cleanup().await;
}

async fn apalis_contract_ack_outermost_and_attempts_counted_like_ours(kind: BackendKind) {
    let q = queue(
        kind,
        KindOverride {
            timeout_ms: Some(300),
            ..KindOverride::default()
        },
    )
    .await;
    let seen = Seen::default();
    let flaky = q.push(Native::job("flaky", "transient", 2, 0)).await;
    let panics = q.push(Native::job("panics", "panic", 1, 0)).await;
    let slow = q.push(Native::job("slow", "sleep", 0, 5_000)).await;
    let w = q.start_worker(native_registry(&seen));

    let done = q
        .wait_for(&flaky, WITHIN, |j| j.status == JobStatus::Done)
        .await;
    assert_eq!(done.attempts, 3);
    let counted: Vec<(u32, usize)> = seen.runs("flaky").iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(
        counted,
        vec![(1, 1), (2, 2), (3, 3)],
        "apalis's Attempt and ours agree on every run"
    );
    assert_eq!(
        done.result,
        Some(serde_json::json!({"label": "flaky", "attempt": 3}))
    );

    // Our catch-panic handler inside, the ack outside: a panic is a failed
    // attempt of class `panic`, retried (apalis's default would kill it).
    let done = q
        .wait_for(&panics, WITHIN, |j| j.status == JobStatus::Done)
        .await;
    assert_eq!(done.errors.len(), 1);
    assert_eq!(done.errors[0].class, "panic");
    assert!(done.errors[0].message.contains("panics on attempt 1"));

    // The timeout layer inside, the ack outside: class `timeout`.
    let timed_out = q.wait_for(&slow, WITHIN, |j| !j.errors.is_empty()).await;
    assert_eq!(timed_out.errors[0].class, "timeout");
    assert_eq!(timed_out.errors[0].attempt, 1);
    w.stop().await;
    q.cleanup().await;
}

async fn undecodable_payloads_go_dead_and_the_worker_lives_on(kind: BackendKind) {
    let q = queue(kind, KindOverride::default()).await;
    let seen = Seen::default();
    let w = q.start_worker(native_registry(&seen));
    let bad = q
        .push(NewJob {
            kind: NATIVE.into(),
            payload: serde_json::json!({"label": 42}),
            run_at_ms: None,
            max_attempts: 5,
            idempotency_key: None,
            trace_id: None,
            group: None,
            subject: None,
            bulk: false,
        })
        .await;
    let dead = q
        .wait_for(&bad, WITHIN, |j| j.status == JobStatus::Dead)
        .await;
    assert_eq!(dead.attempts, 1, "no retry can fix a payload");
    assert_eq!(dead.errors[0].class, "permanent");
    assert!(
        dead.errors[0]
            .message
            .starts_with("payload is not a valid native job"),
        "{}",
        dead.errors[0].message
    );
    let good = q.push(Native::job("after", "ok", 0, 0)).await;
    q.wait_for(&good, WITHIN, |j| j.status == JobStatus::Done)
        .await;
    w.stop().await;
    q.cleanup().await;
}

async fn hard_stop_hands_back_uncounted_and_aborts_the_handler(kind: BackendKind) {
    let mut settings = fast_settings();
    settings.queue.shutdown_timeout_ms = 300;
    let q = TestQueue::with_settings(kind, settings).await;
    let seen = Seen::default();
    let long = q.push(Native::job("long", "sleep", 0, 2_000)).await;
    let w = q.start_worker(native_registry(&seen));
    q.wait_for(&long, WITHIN, |j| j.status == JobStatus::Running)
        .await;
    let report = w.stop().await;
    assert_eq!(report.released, 1);
    let back = q.job(&long).await;
    assert_eq!(back.status, JobStatus::Pending, "handed back to the queue");
    assert_eq!(back.attempts, 0, "an interrupted attempt is not counted");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(
        !seen.finished("long"),
        "the handler was aborted, not left running detached"
    );
    q.cleanup().await;
}

async fn timeouts_leave_no_detached_task(kind: BackendKind) {
    let q = queue(
        kind,
        KindOverride {
            timeout_ms: Some(200),
            max_attempts: Some(1),
            ..KindOverride::default()
        },
    )
    .await;
    let seen = Seen::default();
    let w = q.start_worker(native_registry(&seen));
    let mut job = Native::job("sleepy", "sleep", 0, 1_200);
    job.max_attempts = 1;
    let sleepy = q.push(job).await;
    let dead = q
        .wait_for(&sleepy, WITHIN, |j| j.status == JobStatus::Dead)
        .await;
    assert_eq!(dead.errors[0].class, "timeout");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        !seen.finished("sleepy"),
        "the timed-out handler was dropped with its attempt"
    );
    w.stop().await;
    q.cleanup().await;
}

async fn a_blocking_handler_does_not_stall_other_kinds(kind: BackendKind) {
    let q = queue(kind, KindOverride::default()).await;
    let seen = Seen::default();
    let mut registry = native_registry(&seen);
    registry.register(PROBE, |job: Probe, ctx: JobContext| async move {
        Ok::<_, JobError>(serde_json::json!({"label": job.label, "attempt": ctx.attempt}))
    });
    let w = q.start_worker(registry);
    let blocker = q.push(Native::job("blocker", "block", 0, 3_000)).await;
    q.wait_for(&blocker, WITHIN, |j| j.status == JobStatus::Running)
        .await;
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(q.push(Probe::ok(&format!("beside-{i}")).job()).await);
    }
    for id in &ids {
        q.wait_for(id, WITHIN, |j| j.status == JobStatus::Done)
            .await;
    }
    assert!(
        q.job(&blocker).await.status == JobStatus::Running,
        "the other kind's 20 jobs finished while the blocking handler held its thread ({:?})",
        started.elapsed()
    );
    q.wait_for(&blocker, WITHIN, |j| j.status == JobStatus::Done)
        .await;
    w.stop().await;
    q.cleanup().await;
}

async fn schedules_on_the_same_second_all_fire(kind: BackendKind) {
    let q = TestQueue::new(kind).await;
    let fired = Arc::new(AtomicUsize::new(0));
    let schedules: Vec<Scheduled> = ["rollover", "housekeeping", "scan"]
        .into_iter()
        .map(|name| {
            let fired = fired.clone();
            Scheduled::new(name, "* * * * * *", move |_tick| {
                fired.fetch_add(1, Ordering::SeqCst);
                Probe::ok(name).job()
            })
            .expect("cron")
        })
        .collect();
    // A pool that does not run the probe kind: the ticks stay queued.
    let seen = Seen::default();
    let worker = dossier_core::runtime::Worker::new(
        dossier_core::runtime::worker_name("test"),
        q.settings.queue.clone(),
        q.backend.clone(),
        native_registry(&seen),
    )
    .expect("worker builds")
    .with_schedules(schedules)
    .spawn();
    tokio::time::sleep(Duration::from_millis(3_300)).await;
    worker.stop().await.expect("worker stops");
    let jobs = q
        .backend
        .list(&JobFilter {
            kind: Some(PROBE.into()),
            status: None,
            limit: 100,
            ..JobFilter::default()
        })
        .await
        .expect("list");
    let mut seconds: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for j in &jobs {
        let key = j.idempotency_key.clone().expect("ticks carry their key");
        let (name, second) = key
            .strip_prefix("schedule:")
            .and_then(|k| k.rsplit_once(':'))
            .expect("schedule:NAME:SECONDS");
        seconds
            .entry(name.to_string())
            .or_default()
            .insert(second.to_string());
    }
    assert_eq!(seconds.len(), 3, "every schedule fired: {seconds:?}");
    for (name, ticks) in &seconds {
        assert!(
            ticks.len() >= 2,
            "{name} fired {} ticks in 3.3 s",
            ticks.len()
        );
    }
    assert!(
        seconds["rollover"].intersection(&seconds["scan"]).count() >= 2,
        "the schedules fired on the same seconds: {seconds:?}"
    );
    assert_eq!(
        fired.load(Ordering::SeqCst),
        jobs.len(),
        "one job per tick fired"
    );
    q.cleanup().await;
}

/// Another Rust service pushes with apalis's `TaskSink` API, and tools read
/// the queue through apalis's inspection traits.
async fn apalis_producers_and_tools_use_our_queue(kind: BackendKind) {
    let q = queue(kind, KindOverride::default()).await;
    let seen = Seen::default();
    let mut sink =
        KindQueue::<Native>::new(q.backend.clone(), NATIVE, &q.settings.queue.kind(NATIVE));
    let native = |label: &str| Native {
        label: label.into(),
        mode: "ok".into(),
        fail_times: 0,
        ms: 0,
    };
    sink.push(native("pushed")).await.expect("push");
    sink.push_bulk(vec![native("bulk-1"), native("bulk-2")])
        .await
        .expect("push_bulk");
    for _ in 0..2 {
        let later = TaskBuilder::new(native("later"))
            .idempotency_key("later-once")
            .run_after(Duration::from_secs(3_600))
            .build();
        sink.push_task(later).await.expect("push_task");
    }
    let all = Filter {
        status: None,
        page: 1,
        page_size: Some(50),
    };
    let listed = sink.list_tasks(&all).await.expect("list_tasks");
    assert_eq!(listed.len(), 4, "the idempotency key enqueued once");
    let later = listed
        .iter()
        .find(|t| t.args["label"] == "later")
        .expect("listed");
    assert_eq!(later.ctx().status(), Status::Queued, "scheduled in an hour");
    assert_eq!(later.ctx().idempotency_key(), Some("later-once"));
    let later_id = later.ctx().task_id().expect("id").clone();
    let fetched = sink
        .fetch_by_id(&later_id)
        .await
        .expect("fetch_by_id")
        .expect("found");
    assert_eq!(fetched.args.label, "later", "typed as the kind's payload");

    let w = q.start_worker(native_registry(&seen));
    for label in ["pushed", "bulk-1", "bulk-2"] {
        let deadline = Instant::now() + WITHIN;
        while seen.runs(label).is_empty() {
            assert!(Instant::now() < deadline, "{label} ran");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    let deadline = Instant::now() + WITHIN;
    loop {
        let stats = sink.fetch_by_queue().await.expect("metrics");
        let done = stats.iter().find(|s| s.title == "Done").expect("Done");
        if done.value == "3" {
            let scheduled = stats
                .iter()
                .find(|s| s.title == "Scheduled")
                .expect("Scheduled");
            assert_eq!(scheduled.value, "1");
            break;
        }
        assert!(Instant::now() < deadline, "3 done: {stats:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let workers = sink.list_workers().await.expect("list_workers");
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].queue, NATIVE);
    let queues = sink.list_queues().await.expect("list_queues");
    assert!(
        queues
            .iter()
            .any(|qi| qi.name == NATIVE && qi.workers.len() == 1)
    );
    w.stop().await;
    q.cleanup().await;
}

/// A fault inside the pool itself, outside any handler (which catch-panic
/// would turn into a failed attempt): the stack's readiness panics once.
#[derive(Clone)]
struct PanicsWhenReady<S> {
    inner: S,
    armed: Arc<std::sync::atomic::AtomicBool>,
}

impl<S: apalis_core::layers::Service<apalis_core::task::Task<Native>>>
    apalis_core::layers::Service<apalis_core::task::Task<Native>> for PanicsWhenReady<S>
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        if self.armed.swap(false, Ordering::SeqCst) {
            panic!("a fault inside the pool, not in a handler");
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, task: apalis_core::task::Task<Native>) -> S::Future {
        self.inner.call(task)
    }
}

/// The Monitor restarts a worker whose future panicked: the attempt that
/// was in flight goes back to the queue uncounted (the ack's outcome
/// guard) and runs again, the jobs already leased reach the rebuilt
/// worker (its backend takes the kind's channel back), and the kind is
/// served afterwards.
async fn a_failed_apalis_worker_is_rebuilt_and_its_jobs_go_on(kind: BackendKind) {
    let q = queue(kind, KindOverride::default()).await;
    let seen = Seen::default();
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut registry = Registry::new();
    registry.register_service(
        NATIVE,
        PanicsWhenReady {
            inner: Data::new(seen.clone()).layer(task_fn(native)),
            armed: armed.clone(),
        },
    );
    let w = q.start_worker(registry);
    let long = q.push(Native::job("long", "sleep", 0, 1_500)).await;
    // Its handler runs (leased is not enough: it could still wait in the
    // backend's channel, and a fault then interrupts nothing).
    let deadline = Instant::now() + WITHIN;
    while seen.runs("long").is_empty() {
        assert!(Instant::now() < deadline, "the long job starts");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    armed.store(true, Ordering::SeqCst);
    let next = q.push(Native::job("next", "ok", 0, 0)).await;
    let done = q
        .wait_for(&long, WITHIN, |j| j.status == JobStatus::Done)
        .await;
    assert_eq!(
        done.attempts, 1,
        "the interrupted attempt was handed back uncounted"
    );
    assert!(
        !armed.load(Ordering::SeqCst),
        "the fault did fire (the test tests something)"
    );
    assert_eq!(seen.runs("long").len(), 2, "run again after the restart");
    q.wait_for(&next, WITHIN, |j| j.status == JobStatus::Done)
        .await;
    let after = q.push(Native::job("after", "ok", 0, 0)).await;
    q.wait_for(&after, WITHIN, |j| j.status == JobStatus::Done)
        .await;
    w.stop().await;
    q.cleanup().await;
}

/// A backend that leases jobs but refuses to record them done (here a
/// SQLite trigger: a disk that takes some writes and not others) gets no
/// more leased than the pool can keep track of: the outcomes waiting for
/// the completer stay bounded and most of the backlog stays queued, for
/// another worker or for later. Once the writes go through again,
/// every job is recorded done, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_that_cannot_be_recorded_hold_back_the_fetch() {
    let q = TestQueue::new(BackendKind::Sqlite).await;
    // The embedded deployment: the queue is in the business database's file.
    let db = sqlx::SqlitePool::connect(&q.settings.database.url)
        .await
        .expect("the file");
    sqlx::query(
        "CREATE TRIGGER refuse_done BEFORE UPDATE OF state ON jobs WHEN NEW.state = 'done'
         BEGIN SELECT RAISE(ABORT, 'this disk refuses the write'); END",
    )
    .execute(&db)
    .await
    .expect("trigger");
    let jobs: Vec<NewJob> = (0..6_000)
        .map(|i| Probe::ok(&format!("p{i}")).job())
        .collect();
    q.backend.push_bulk(jobs).await.expect("pushed");
    let w = q.start_worker(probe_registry(Recorder::default()));
    let leased = || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'running'")
            .fetch_one(&db)
            .await
            .expect("count");
        n
    };
    // Until the count stops growing for a second.
    let mut last = -1;
    let deadline = Instant::now() + WITHIN;
    loop {
        let now = leased().await;
        if now == last && now > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "leasing settles ({now} leased)");
        last = now;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // One kind: 1,024 slots at most, two batches of 1,000 outcomes, and
    // the fetch that was under way.
    assert!(
        (1_000..=3_024 + 64).contains(&last),
        "{last} jobs leased while none can be recorded"
    );
    sqlx::query("DROP TRIGGER refuse_done")
        .execute(&db)
        .await
        .expect("drop");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'done'")
            .fetch_one(&db)
            .await
            .expect("count");
        if done == 6_000 {
            break;
        }
        assert!(Instant::now() < deadline, "{done} of 6,000 done");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    w.stop().await;
    q.cleanup().await;
}
