//! The runtime conformance suite: every test runs against each backend
//! (a real SQLite file, a real Redis server, a real PostgreSQL database),
//! each on its own data.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use dossier_core::clock::now_ms;
use dossier_core::job::{AttemptError, JobFilter, JobStatus, PushOutcome, WorkerInfo};
use dossier_core::queue::{AdminOutcome, Failure};
use dossier_e2e::*;

// One `#[tokio::test]` per backend for each scenario below.
dossier_e2e::on_each_backend!(
    runs_jobs_and_stores_results,
    retries_with_exponential_backoff,
    honours_retry_after,
    snoozed_jobs_do_not_burn_attempts,
    permanent_errors_go_straight_to_the_dead_set,
    exhausted_attempts_keep_every_error,
    panics_count_as_failed_attempts,
    timeouts_count_as_failed_attempts,
    dead_jobs_can_be_retried,
    jobs_can_be_killed,
    idempotency_keys_enqueue_once,
    scheduled_jobs_wait_for_their_time,
    graceful_shutdown_finishes_or_returns_in_flight_jobs,
    listings_and_counts_agree,
    finished_jobs_are_purged_after_retention,
    workers_are_listed_with_their_heartbeat,
    sigkill_mid_job_loses_nothing,
    sigterm_drains_and_exits_zero,
    two_processes_share_a_queue_each_job_once,
    background_jobs_give_way_to_hook_requests,
    lost_leases_come_back_through_the_retry_policy,
    a_renewed_lease_is_not_rescued,
    a_paused_kind_is_fetched_by_no_worker,
    a_kind_is_scaled_live_and_across_restarts,
    jobs_are_found_by_firm_client_trace_and_error,
    bulk_actions_change_what_a_filter_matches,
    each_fetch_serves_the_firms_in_turn_interactive_first,
    a_firm_arriving_while_another_drains_is_served_promptly,
    waiting_work_is_counted_per_firm,
    forgotten_jobs_leave_no_trace,
    retrying_every_dead_job_counts_each_once_while_they_die_again,
);

/// Not a test: the entry point of child worker processes (see support).
#[test]
#[ignore = "entry point of child worker processes, run by the suites themselves"]
fn child_worker() {
    child_worker_main();
}

const LONG: Duration = Duration::from_secs(20);

/// Jobs of the probe kind running now.
async fn running(q: &TestQueue) -> u64 {
    q.backend
        .counts()
        .await
        .expect("counts")
        .iter()
        .filter(|c| c.kind == PROBE)
        .map(|c| c.running)
        .sum()
}

/// While the hooks answer a request (and for a second after), a kind runs
/// a quarter of its slots; then its full concurrency comes back.
async fn background_jobs_give_way_to_hook_requests(kind: BackendKind) {
    let mut q = TestQueue::new(kind).await;
    q.settings.queue.defaults.concurrency = 8;
    for i in 0..40 {
        let mut p = Probe::ok(&format!("slow-{i}"));
        p.sleep_ms = 200;
        q.push(p.job()).await;
    }
    let request = dossier_core::interactive::begin();
    let w = q.start_worker(probe_registry(Recorder::default()));
    let share = dossier_core::interactive::background_share(8) as u64;
    let mut seen_busy = 0;
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let n = running(&q).await;
        assert!(n <= share, "{n} running while a request is in flight");
        seen_busy = seen_busy.max(n);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen_busy >= 1, "background work slows down, never stops");
    drop(request);
    let mut seen_idle = 0;
    let until = Instant::now() + LONG;
    while Instant::now() < until && seen_idle <= share {
        seen_idle = seen_idle.max(running(&q).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        seen_idle > share,
        "the full concurrency comes back: {seen_idle} at most"
    );
    q.drain(LONG).await;
    w.stop().await;
    q.cleanup().await;
}

async fn runs_jobs_and_stores_results(kind: BackendKind) {
    let q = TestQueue::new(kind).await;
    let rec = Recorder::default();
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(q.push(Probe::ok(&format!("job-{i}")).job()).await);
    }
    let w = q.start_worker(probe_registry(rec.clone()));
    q.drain(LONG).await;
    let report = w.stop().await;
    assert_eq!(report.succeeded, 30);
    for (i, id) in ids.iter().enumerate() {
        let job = q.job(id).await;
        assert_eq!(job.status, JobStatus::Done);
        assert_eq!(job.attempts, 1);
        assert!(job.lease_owner.is_none());
        assert_eq!(
            job.result,
            Some(serde_json::json!({"label": format!("job-{i}"), "attempt": 1}))
        );
    }
    assert_eq!(rec.events().len(), 30, "each job ran exactly once");
    q.cleanup().await;
}

async fn retries_with_exponential_backoff(kind: BackendKind) {
    // base 200 ms, jitter 0.2: the gap before attempt 2 is in [160, 200] ms
    // plus pickup, before attempt 3 in [320, 400] ms plus pickup.
    let q = TestQueue::new(kind).await;
    let rec = Recorder::default();
    let id = q
        .push(
            Probe {
                label: "flaky".into(),
                fail_times: 2,
                mode: "transient".into(),
                ..Probe::default()
            }
            .job(),
        )
        .await;
    let w = q.start_worker(probe_registry(rec.clone()));
    let job = q.wait_for(&id, LONG, |j| j.status == JobStatus::Done).await;
    w.stop().await;
    assert_eq!(job.attempts, 3);
    assert_eq!(job.errors.len(), 2);
    assert!(job.errors.iter().all(|e| e.class == "transient"));
    let t = rec.times("flaky");
    assert_eq!(t.len(), 3);
    let (gap1, gap2) = (t[1] - t[0], t[2] - t[1]);
    assert!(gap1 >= 160, "first backoff too short: {gap1} ms");
    assert!(gap2 >= 320, "second backoff too short: {gap2} ms");
    // Upper bounds: nominal delay + poll interval + generous scheduling slack.
    assert!(
        gap1 <= 200 + 100 + 1_500,
        "first backoff too long: {gap1} ms"
    );
    assert!(
        gap2 <= 400 + 100 + 1_500,
        "second backoff too long: {gap2} ms"
    );
    q.cleanup().await;
}

async fn honours_retry_after(kind: BackendKind) {
    let q = TestQueue::new(kind).await;
    let rec = Recorder::default();
    let id = q
        .push(
            Probe {
                label: "quota".into(),
                fail_times: 1,
                mode: "retry_after".into(),
                retry_after_ms: 1_200,
                ..Probe::default()
            }
            .job(),
        )
        .await;
    let w = q.start_worker(probe_registry(rec.clone()));
    let waiting = q
        .wait_for(&id, LONG, |j| j.status == JobStatus::Retrying)
        .await;
    assert!(waiting.run_at_ms - waiting.errors[0].at_ms >= 1_200);
    let job = q.wait_for(&id, LONG, |j| j.status == JobStatus::Done).await;
    w.stop().await;
    let t = rec.times("quota");
    assert!(
        t[1] - t[0] >= 1_200,
        "Retry-After not honoured: {} ms",
        t[1] - t[0]
    );
    assert_eq!(job.attempts, 2);
    q.cleanup().await;
}

async fn snoozed_jobs_do_not_burn_attempts(kind: BackendKind) {
    let q = TestQueue::new(kind).await;
    let rec = Recorder::default();
    let mut job = Probe {
        label: "patient".into(),
        fail_times: 2,
        mode: "snooze".into(),
        retry_after_ms: 400,
        ..Probe::default()
    }
    .job();
    job.max_attempts = 1;
    let id = q.push(job).await;
    let w = q.start_worker(probe_registry(rec.clone()));
    let waiting = q
        .wait_for(&id, LONG, |j| j.status == JobStatus::Scheduled)
        .await;
    assert_eq!(waiting.attempts, 0, "a snooze is not an attempt");
    let job = q.wait_for(&id, LONG, |j| j.status == JobStatus::Done).await;
    w.stop().await;
    assert_eq!(
        job.attempts, 1,
        "two snoozes, then one attempt within max_attempts = 1"
    );
    assert!(job.errors.is_empty(), "{:?}", job.errors);
    let t = rec.times("patient");
    assert_eq!(t.len(), 3);
    assert!(t[1] - t[0] >= 400 && t[2] - t[1] >= 400, "{t:?}");
    q.cleanup().await;
}

async fn permanent_errors_go_straight_to_the_dead_set(kind: BackendKind) {
    let q = TestQueue::new(kind).await;
    let rec = Recorder::default();
    let id = q
        .push(
            Probe {
                label: "bad-input".into(),
                fail_times: 99,
                mode: "permanent".into(),
                ..Probe::default()
            }
            .job(),
        )
        .await;
    let w = q.start_worker(probe_registry(rec.clone()));
    let job = q.wait_for(&id, LONG, |j| j.status == JobStatus::Dead).await;
    w.stop().await;
    assert_eq!(job.attempts, 1, "a permanent error is not retried");
    assert_eq!(job.last_error.as_deref(), Some("bad-input refused"));
    assert_eq!(job.errors[0].class, "permanent");
    assert!(job.finished_at_ms.is_some());
    assert_eq!(rec.times("bad-input").len(), 1);
    q.cleanup().await;
}

async fn exhausted_attempts_keep_every_error(kind: BackendKind) {
    let mut settings = fast_settings();
    settings.queue.defaults.backoff_base_ms = 20;
    let q = TestQueue::with_settings(kind, settings).await;
    let mut job = Probe {
        label: "always".into(),
        fail_times: 99,
        mode: "transient".into(),
        ..Probe::default()
    }
    .job();
    job.max_attempts = 3;
    let id = q.push(job).await;
    let w = q.start_worker(probe_registry(Recorder::default()));
    let job = q.wait_for(&id, LONG, |j| j.status == JobStatus::Dead).await;
    w.stop().await;
    assert_eq!(job.attempts, 3, "max attempts honoured");
    let attempts: Vec<u32> = job.errors.iter().map(|e| e.attempt).collect();
    assert_eq!(attempts, vec![1, 2, 3]);
    assert_eq!(job.last_error.as_deref(), Some("attempt 3 failed"));
    q.cleanup().await;
}

async fn panics_count_as_failed_attempts(kind: BackendKind) {
    let q = TestQueue::new(kind).await;
    let id = q
        .push(
            Probe {
                label: "boom".into(),
                fail_times: 1,
                mode: "panic".into(),
                ..Probe::default()
            }
            .job(),
        )
        .await;
    let w = q.start_worker(probe_registry(Recorder::default()));
    let job = q.wait_for(&id, LONG, |j| j.status == JobStatus::Done).await;
    let report = w.stop().await;
    assert_eq!(job.attempts, 2);
    assert_eq!(job.errors[0].class, "panic");
    assert!(
        job.errors[0]
            .message
            .contains("probe boom panics on attempt 1")
    );
    assert_eq!((report.succeeded, report.failed), (1, 1));
    q.cleanup().await;
}

async fn timeouts_count_as_failed_attempts(kind: BackendKind) {
    let mut settings = fast_settings();
    settings.queue.defaults.timeout_ms = 300;
    let q = TestQueue::with_settings(kind, settings).await;
    let mut job = Probe {
        label: "slow".into(),
        sleep_ms: 5_000,
        ..Probe::default()
    }
    .job();
    job.max_attempts = 2;
    let id = q.push(job).await;
    let w = q.start_worker(probe_registry(Recorder::default()));
    let job = q.wait_for(&id, LONG, |j| j.status == JobStatus::Dead).await;
    w.stop().await;
    assert_eq!(job.attempts, 2);
    assert!(
        job.errors.iter().all(|e| e.class == "timeout"),
        "{:?}",
        job.errors
    );
    q.cleanup().await;
}

/// "Retry every dead job" retries the jobs dead when it was asked, each
/// once, while a running worker fails them again at once (on Redis the
/// retry goes by batches: a job of the first that died again before the
/// next was once retried twice, and could be for ever).
async fn retrying_every_dead_job_counts_each_once_while_they_die_again(kind: BackendKind) {
    let q = TestQueue::new(kind).await;
    let jobs: Vec<_> = (0..1_500)
        .map(|i| {
            let mut j = Probe {
                label: format!("doomed-{i}"),
                fail_times: 99,
                mode: "permanent".into(),
                ..Probe::default()
            }
            .job();
            j.max_attempts = 1;
            j
        })
        .collect();
    q.backend.push_bulk(jobs).await.expect("push");
    let w = q.start_worker(probe_registry(Recorder::default()));
    q.drain(LONG).await;
    assert_eq!(
        q.backend.retry_all_dead(Some(PROBE)).await.expect("retry"),
        1_500
    );
    q.drain(LONG).await;
    w.stop().await;
    let counts = q.backend.counts().await.expect("counts");
    let probe = counts
        .iter()
        .find(|c| c.kind == PROBE)
        .expect("probe counts");
    assert_eq!(probe.dead, 1_500, "{probe:?}");
    q.cleanup().await;
}

async fn dead_jobs_can_be_retried(kind: BackendKind) {
    let mut settings = fast_settings();
    settings.queue.defaults.backoff_base_ms = 20;
    let q = TestQueue::with_settings(kind, settings).await;
    // Fails its first 2 attempts but only has 2: dead, then retried once more.
    let mut job = Probe {
        label: "second-chance".into(),
        fail_times: 2,
        mode: "transient".into(),
        ..Probe::default()
    }
    .job();
    job.max_attempts = 2;
    let id = q.push(job).await;
    let mut others = Vec::new();
    for i in 0..3 {
        let mut j = Probe {
            label: format!("other-{i}"),
            fail_times: 1,
            mode: "permanent".into(),
            ..Probe::default()
        }
        .job();
        j.max_attempts = 1;
        others.push(q.push(j).await);
    }
    let w = q.start_worker(probe_registry(Recorder::default()));
    q.wait_for(&id, LONG, |j| j.status == JobStatus::Dead).await;
    for o in &others {
        q.wait_for(o, LONG, |j| j.status == JobStatus::Dead).await;
    }
    assert_eq!(
        q.backend.retry(&id).await.expect("retry"),
        AdminOutcome::Applied
    );
    let job = q.wait_for(&id, LONG, |j| j.status == JobStatus::Done).await;
    assert_eq!(job.attempts, 3, "the retry granted one more attempt");
    assert_eq!(
        q.backend.retry(&id).await.expect("retry"),
        AdminOutcome::Refused(JobStatus::Done)
    );
    assert_eq!(
        q.backend.retry("no-such-job").await.expect("retry"),
        AdminOutcome::NotFound
    );
    // Retry of the whole dead set of a kind: the permanent failures run again.
    assert_eq!(
        q.backend
            .retry_all_dead(Some("other-kind"))
            .await
            .expect("retry all"),
        0
    );
    assert_eq!(
        q.backend
            .retry_all_dead(Some(PROBE))
            .await
            .expect("retry all"),
        3
    );
    for o in &others {
        // They are permanent on attempt 1 only: the second attempt succeeds.
        q.wait_for(o, LONG, |j| j.status == JobStatus::Done).await;
    }
    w.stop().await;
    q.cleanup().await;
}

async fn jobs_can_be_killed(kind: BackendKind) {
    let q = TestQueue::new(kind).await;
    let mut later = Probe::ok("later").job();
    later.run_at_ms = Some(now_ms() + 60_000);
    let scheduled = q.push(later).await;
    assert_eq!(q.job(&scheduled).await.status, JobStatus::Scheduled);
    assert_eq!(
        q.backend
            .kill(&scheduled, "client deleted")
            .await
            .expect("kill"),
        AdminOutcome::Applied
    );
    let job = q.job(&scheduled).await;
    assert_eq!(job.status, JobStatus::Dead);
    assert_eq!(job.errors[0].class, "killed");
    assert_eq!(job.last_error.as_deref(), Some("client deleted"));
    // A running job can be killed too; its worker's late outcome is ignored.
    let running = q
        .push(
            Probe {
                label: "long".into(),
                sleep_ms: 800,
                ..Probe::default()
            }
            .job(),
        )
        .await;
    let w = q.start_worker(probe_registry(Recorder::default()));
    q.wait_for(&running, LONG, |j| j.status == JobStatus::Running)
        .await;
    assert_eq!(
        q.backend.kill(&running, "stop it").await.expect("kill"),
        AdminOutcome::Applied
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(q.job(&running).await.status, JobStatus::Dead);
    assert_eq!(
        q.backend.kill(&running, "again").await.expect("kill"),
        AdminOutcome::Refused(JobStatus::Dead)
    );
    w.stop().await;
    q.cleanup().await;
}

async fn idempotency_keys_enqueue_once(kind: BackendKind) {
    let q = TestQueue::new(kind).await;
    let mut job = Probe::ok("once").job();
    job.idempotency_key = Some("client-42:siret".into());
    let first = q.backend.push(job.clone()).await.expect("push");
    let second = q.backend.push(job.clone()).await.expect("push");
    let PushOutcome::Created(id) = &first else {
        panic!("first push creates: {first:?}")
    };
    assert_eq!(second, PushOutcome::Duplicate(id.clone()));
    // Also within one bulk push.
    let mut other = job.clone();
    other.idempotency_key = Some("client-43:siret".into());
    let bulk = q
        .backend
        .push_bulk(vec![other.clone(), job.clone(), other])
        .await
        .expect("bulk");
    assert!(matches!(bulk[0], PushOutcome::Created(_)));
    assert_eq!(bulk[1], PushOutcome::Duplicate(id.clone()));
    assert_eq!(bulk[2], PushOutcome::Duplicate(bulk[0].id().to_string()));
    let counts = q.backend.counts().await.expect("counts");
    assert_eq!(counts[0].pending, 2);
    // A job is found by its key.
    let found = q
        .backend
        .get_by_key("client-42:siret")
        .await
        .expect("get by key")
        .expect("found");
    assert_eq!(&found.id, id);
    assert!(q.backend.get_by_key("nobody").await.expect("get").is_none());
    q.cleanup().await;
}

async fn scheduled_jobs_wait_for_their_time(kind: BackendKind) {
    let q = TestQueue::new(kind).await;
    let rec = Recorder::default();
    let run_at = now_ms() + 1_000;
    let mut job = Probe::ok("at").job();
    job.run_at_ms = Some(run_at);
    let id = q.push(job).await;
    let w = q.start_worker(probe_registry(rec.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(q.job(&id).await.status, JobStatus::Scheduled);
    q.wait_for(&id, LONG, |j| j.status == JobStatus::Done).await;
    w.stop().await;
    let started = rec.times("at")[0];
    assert!(started >= run_at, "ran {} ms early", run_at - started);
    assert!(started - run_at < 1_500, "ran {} ms late", started - run_at);
    q.cleanup().await;
}

async fn graceful_shutdown_finishes_or_returns_in_flight_jobs(kind: BackendKind) {
    let q = TestQueue::new(kind).await; // shutdown timeout 1.5 s
    let short = q
        .push(
            Probe {
                label: "short".into(),
                sleep_ms: 400,
                ..Probe::default()
            }
            .job(),
        )
        .await;
    let long = q
        .push(
            Probe {
                label: "long".into(),
                sleep_ms: 30_000,
                ..Probe::default()
            }
            .job(),
        )
        .await;
    let w = q.start_worker(probe_registry(Recorder::default()));
    q.wait_for(&long, LONG, |j| j.status == JobStatus::Running)
        .await;
    q.wait_for(&short, LONG, |j| j.status == JobStatus::Running)
        .await;
    let t = Instant::now();
    let report = w.stop().await;
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!((report.succeeded, report.released), (1, 1));
    assert_eq!(q.job(&short).await.status, JobStatus::Done);
    let back = q.job(&long).await;
    assert_eq!(back.status, JobStatus::Pending, "handed back to the queue");
    assert_eq!(back.attempts, 0, "an interrupted attempt is not counted");
    assert!(back.lease_owner.is_none());
    assert!(
        q.backend.workers().await.expect("workers").is_empty(),
        "deregistered"
    );
    q.cleanup().await;
}

async fn listings_and_counts_agree(kind: BackendKind) {
    let q = TestQueue::new(kind).await;
    let now = now_ms();
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(q.push(Probe::ok(&format!("p{i}")).job()).await);
    }
    for i in 0..2 {
        let mut j = Probe::ok(&format!("s{i}")).job();
        j.run_at_ms = Some(now + 3_600_000);
        q.push(j).await;
    }
    q.backend.kill(&ids[0], "test").await.expect("kill");
    let counts = q.backend.counts().await.expect("counts");
    assert_eq!(counts.len(), 1);
    let c = &counts[0];
    assert_eq!(
        (c.kind.as_str(), c.pending, c.scheduled, c.dead),
        (PROBE, 3, 2, 1)
    );
    assert!(c.oldest_pending_age_ms.is_some());
    let list = |status| JobFilter {
        kind: Some(PROBE.into()),
        status: Some(status),
        limit: 100,
        ..JobFilter::default()
    };
    assert_eq!(
        q.backend
            .list(&list(JobStatus::Pending))
            .await
            .expect("list")
            .len(),
        3
    );
    assert_eq!(
        q.backend
            .list(&list(JobStatus::Scheduled))
            .await
            .expect("list")
            .len(),
        2
    );
    assert_eq!(
        q.backend
            .list(&list(JobStatus::Dead))
            .await
            .expect("list")
            .len(),
        1
    );
    let all = q
        .backend
        .list(&JobFilter {
            kind: None,
            status: None,
            limit: 100,
            ..JobFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(all.len(), 6);
    let limited = q
        .backend
        .list(&JobFilter {
            kind: None,
            status: None,
            limit: 2,
            ..JobFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(limited.len(), 2);
    q.cleanup().await;
}

/// A worker that dies holding jobs: the rescuer records each lost attempt
/// and brings it back through the kind's retry policy (backoff, then the
/// dead set once out of attempts), not straight away.
async fn lost_leases_come_back_through_the_retry_policy(kind: BackendKind) {
    let mut settings = fast_settings();
    settings.queue.defaults.backoff_base_ms = 1_500;
    settings.queue.defaults.jitter = 0.0;
    let q = TestQueue::with_settings(kind, settings).await;
    let again = q.push(Probe::ok("again").job()).await;
    let mut once = Probe::ok("once").job();
    once.max_attempts = 1;
    let once = q.push(once).await;
    let leased = q
        .backend
        .fetch(PROBE, "ghost-worker", 10, Duration::from_millis(200))
        .await
        .expect("fetch");
    assert_eq!(leased.len(), 2, "the ghost holds both, then never renews");
    let recorder = Recorder::default();
    let w = q.start_worker(probe_registry(recorder.clone()));
    let back = q.wait_for(&again, LONG, |j| !j.errors.is_empty()).await;
    assert_eq!(back.errors[0].class, "lost");
    assert_eq!(back.errors[0].attempt, 1);
    assert!(back.errors[0].message.contains("ghost-worker"));
    let lost_at = back.errors[0].at_ms;
    let dead = q
        .wait_for(&once, LONG, |j| j.status == JobStatus::Dead)
        .await;
    assert_eq!(
        dead.errors[0].class, "lost",
        "out of attempts: dead, not retried"
    );
    let done = q
        .wait_for(&again, LONG, |j| j.status == JobStatus::Done)
        .await;
    assert_eq!(done.attempts, 2);
    let ran = recorder.times("again");
    assert_eq!(ran.len(), 1);
    assert!(
        ran[0] >= lost_at + 1_500,
        "the lost job waited its backoff: ran {} ms after the rescue",
        ran[0] - lost_at
    );
    assert!(recorder.times("once").is_empty());
    w.stop().await;
    q.cleanup().await;
}

/// The rescuer's write is fenced by the lease it read: a worker that
/// renewed meanwhile (slow, not dead) keeps its job.
async fn a_renewed_lease_is_not_rescued(kind: BackendKind) {
    let q = TestQueue::new(kind).await;
    let id = q.push(Probe::ok("slow").job()).await;
    q.backend
        .fetch(PROBE, "slow-worker", 1, Duration::from_millis(100))
        .await
        .expect("fetch");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let expired = q.backend.expired(10).await.expect("expired");
    assert_eq!(expired.len(), 1);
    assert_eq!(
        (expired[0].id.as_str(), expired[0].owner.as_str()),
        (id.as_str(), "slow-worker")
    );
    assert_eq!(expired[0].attempts, 1);
    let info = WorkerInfo {
        name: "slow-worker".into(),
        host: "h".into(),
        pid: 1,
        kinds: vec![PROBE.into()],
        started_at_ms: now_ms(),
        last_heartbeat_ms: now_ms(),
        running: 1,
        concurrency: Default::default(),
    };
    q.backend
        .heartbeat(&info, std::slice::from_ref(&id), Duration::from_secs(30))
        .await
        .expect("heartbeat");
    let rescued = q
        .backend
        .fail(
            "slow-worker",
            &Failure {
                id: id.clone(),
                error: AttemptError {
                    attempt: 1,
                    at_ms: now_ms(),
                    class: "lost".into(),
                    message: "lost".into(),
                },
                retry_at_ms: Some(now_ms()),
                lease_expires_at_ms: Some(expired[0].lease_expires_at_ms),
            },
        )
        .await
        .expect("fail");
    assert!(!rescued, "the renewed lease fences the rescuer out");
    let job = q.job(&id).await;
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!(job.lease_owner.as_deref(), Some("slow-worker"));
    assert!(job.errors.is_empty());
    assert!(q.backend.expired(10).await.expect("expired").is_empty());
    q.cleanup().await;
}

async fn sigkill_mid_job_loses_nothing(kind: BackendKind) {
    let q = TestQueue::new(kind).await; // lease 2 s, rescue every 0.3 s
    let events = tempfile::tempdir().expect("dir");
    let id = q
        .push(
            Probe {
                label: "victim".into(),
                sleep_ms: 1_500,
                ..Probe::default()
            }
            .job(),
        )
        .await;
    let mut child = spawn_child_worker(&q.child_env(events.path()));
    let running = q
        .wait_for(&id, LONG, |j| j.status == JobStatus::Running)
        .await;
    let victim = running.lease_owner.clone().expect("leased");
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let killed_at = Instant::now();
    let w = q.start_worker(probe_registry(Recorder::default()));
    let job = q.wait_for(&id, LONG, |j| j.status == JobStatus::Done).await;
    // Bound: lease (2 s) + rescue interval (0.3 s) + the 1.5 s the job takes + slack.
    assert!(
        killed_at.elapsed() < Duration::from_secs(10),
        "{:?}",
        killed_at.elapsed()
    );
    w.stop().await;
    assert_eq!(job.attempts, 2);
    let lost = &job.errors[0];
    assert_eq!(lost.class, "lost");
    assert!(lost.message.contains(&victim), "{}", lost.message);
    q.cleanup().await;
}

async fn sigterm_drains_and_exits_zero(kind: BackendKind) {
    let q = TestQueue::new(kind).await;
    let events = tempfile::tempdir().expect("dir");
    let id = q
        .push(
            Probe {
                label: "in-flight".into(),
                sleep_ms: 700,
                ..Probe::default()
            }
            .job(),
        )
        .await;
    let mut child = spawn_child_worker(&q.child_env(events.path()));
    q.wait_for(&id, LONG, |j| j.status == JobStatus::Running)
        .await;
    terminate(&child);
    let status = child.wait().expect("child exits");
    assert!(status.success(), "SIGTERM exit status {status:?}");
    assert_eq!(
        q.job(&id).await.status,
        JobStatus::Done,
        "in-flight job finished"
    );
    q.cleanup().await;
}

async fn two_processes_share_a_queue_each_job_once(kind: BackendKind) {
    let q = TestQueue::new(kind).await;
    let events = tempfile::tempdir().expect("dir");
    let env = q.child_env(events.path());
    let mut a = spawn_child_worker(&q.child_env(events.path()));
    let mut b = spawn_child_worker(&env);
    let deadline = Instant::now() + LONG;
    while q.backend.workers().await.expect("workers").len() < 2 {
        assert!(Instant::now() < deadline, "both workers register");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let jobs: Vec<_> = (0..200)
        .map(|i| {
            Probe {
                label: format!("shared-{i}"),
                sleep_ms: 10,
                ..Probe::default()
            }
            .job()
        })
        .collect();
    let ids: HashSet<String> = q
        .backend
        .push_bulk(jobs)
        .await
        .expect("bulk push")
        .into_iter()
        .map(|o| o.id().to_string())
        .collect();
    q.drain(Duration::from_secs(60)).await;
    let counts = q.backend.counts().await.expect("counts");
    assert_eq!((counts[0].done, counts[0].dead), (200, 0));
    terminate(&a);
    terminate(&b);
    assert!(a.wait().expect("exit").success());
    assert!(b.wait().expect("exit").success());
    let runs = read_event_files(events.path());
    assert_eq!(runs.len(), 200, "every job ran");
    assert!(runs.values().all(|&n| n == 1), "a job ran twice: {runs:?}");
    assert_eq!(runs.keys().cloned().collect::<HashSet<_>>(), ids);
    let files = std::fs::read_dir(events.path()).expect("dir").count();
    assert_eq!(files, 2, "both processes took a share of the work");
    q.cleanup().await;
}

/// Redis restarted mid-run (AOF, fsync always): the worker reconnects by
/// itself and no job is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_mid_run_loses_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let mut server = PrivateRedis::start(dir.path());
    let mut settings = fast_settings();
    settings.queue.url = Some(server.url());
    let q = TestQueue::with_settings(BackendKind::Redis, settings).await;
    let rec = Recorder::default();
    let jobs: Vec<_> = (0..300)
        .map(|i| {
            Probe {
                label: format!("r{i}"),
                sleep_ms: 15,
                ..Probe::default()
            }
            .job()
        })
        .collect();
    let ids: HashSet<String> = q
        .backend
        .push_bulk(jobs)
        .await
        .expect("push")
        .into_iter()
        .map(|o| o.id().to_string())
        .collect();
    let w = q.start_worker(probe_registry(rec.clone()));
    let deadline = Instant::now() + LONG;
    while rec.events().len() < 80 {
        assert!(Instant::now() < deadline, "work started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.restart();
    q.drain(Duration::from_secs(60)).await;
    let counts = q.backend.counts().await.expect("counts");
    assert_eq!((counts[0].done, counts[0].dead), (300, 0), "{counts:?}");
    let ran: HashSet<String> = rec.events().into_iter().map(|e| e.job_id).collect();
    assert_eq!(ran, ids, "every job ran");
    w.stop().await;
}

/// `forget` (an erasure's) removes jobs in every state but running, with
/// their idempotency keys and index entries; on Redis no key of the queue
/// names them afterwards.
async fn forgotten_jobs_leave_no_trace(kind: BackendKind) {
    let q = TestQueue::new(kind).await;
    let labelled = |mut job: dossier_core::job::NewJob, n: u32| {
        job.subject = Some("client-forgotten".into());
        job.group = Some("firm-forgotten".into());
        job.trace_id = Some(format!("trace-forgotten-{n}"));
        job.idempotency_key = Some(format!("forgotten:{n}"));
        job
    };
    let done = q.push(labelled(Probe::ok("done").job(), 1)).await;
    let mut bad = Probe {
        label: "dead".into(),
        fail_times: 1,
        mode: "permanent".into(),
        ..Probe::default()
    }
    .job();
    bad.max_attempts = 1;
    let dead = q.push(labelled(bad, 2)).await;
    let w = q.start_worker(probe_registry(Recorder::default()));
    q.drain(LONG).await;
    w.stop().await;
    // Leased by a worker of this test's own: running until its lease ends.
    let running = q.push(labelled(Probe::ok("running").job(), 3)).await;
    let leased = q
        .backend
        .fetch(PROBE, "forgetful-worker", 10, Duration::from_secs(60))
        .await
        .expect("fetch");
    assert_eq!(leased.len(), 1);
    let mut later = labelled(Probe::ok("scheduled").job(), 4);
    later.run_at_ms = Some(now_ms() + 60_000);
    let scheduled = q.push(later).await;
    let mut bulk = labelled(Probe::ok("pending").job(), 5);
    bulk.bulk = true;
    let pending = q.push(bulk).await;
    let gone = [&done, &dead, &scheduled, &pending];
    let mut all: Vec<String> = gone.iter().map(|id| id.to_string()).collect();
    all.push(running.clone());
    assert_eq!(q.backend.forget(&all).await.expect("forget"), 4);
    for id in gone {
        assert!(q.backend.get(id).await.expect("get").is_none(), "{id} left");
    }
    let left = q
        .backend
        .list(&JobFilter {
            subject: Some("client-forgotten".into()),
            limit: 100,
            ..JobFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(
        left.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        [running.as_str()],
        "a running job is left to its lease"
    );
    let waiting = q.backend.waiting_by_group(10).await.expect("waiting");
    assert!(waiting.is_empty(), "{waiting:?}");
    // The keys are free again; forgetting twice forgets nothing more.
    let again = q
        .backend
        .push(labelled(Probe::ok("again").job(), 1))
        .await
        .expect("push");
    assert!(matches!(again, PushOutcome::Created(_)), "{again:?}");
    assert_eq!(q.backend.forget(&all).await.expect("forget"), 0);
    if kind == BackendKind::Redis {
        let dump = dossier_e2e::redis_dump(&q.settings.queue.prefix).await;
        for id in gone {
            assert!(
                !dump.contains(id.as_str()),
                "{id} still named in Redis:\n{dump}"
            );
        }
    }
    q.cleanup().await;
}

async fn finished_jobs_are_purged_after_retention(kind: BackendKind) {
    let q = TestQueue::new(kind).await;
    let mut keyed = Probe::ok("keyed").job();
    keyed.idempotency_key = Some("import-7:row-3".into());
    let done_id = q.push(keyed.clone()).await;
    let mut bad = Probe {
        label: "bad".into(),
        fail_times: 1,
        mode: "permanent".into(),
        ..Probe::default()
    }
    .job();
    bad.max_attempts = 1;
    let dead_id = q.push(bad).await;
    let w = q.start_worker(probe_registry(Recorder::default()));
    q.drain(LONG).await;
    w.stop().await;
    // Nothing is old enough for a day's retention.
    assert_eq!(
        q.backend
            .purge(Duration::from_secs(86_400))
            .await
            .expect("purge"),
        0
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        q.backend
            .purge(Duration::from_millis(1))
            .await
            .expect("purge"),
        1
    );
    assert!(
        q.backend.get(&done_id).await.expect("get").is_none(),
        "done job purged"
    );
    assert_eq!(
        q.job(&dead_id).await.status,
        JobStatus::Dead,
        "dead jobs stay for operators"
    );
    // The purged job's idempotency key is free again.
    let again = q.backend.push(keyed).await.expect("push");
    assert!(matches!(again, PushOutcome::Created(_)), "{again:?}");
    q.cleanup().await;
}

async fn workers_are_listed_with_their_heartbeat(kind: BackendKind) {
    let q = TestQueue::new(kind).await;
    let id = q
        .push(
            Probe {
                label: "busy".into(),
                sleep_ms: 1_500,
                ..Probe::default()
            }
            .job(),
        )
        .await;
    let w = q.start_worker(probe_registry(Recorder::default()));
    q.wait_for(&id, LONG, |j| j.status == JobStatus::Running)
        .await;
    // Heartbeats every 400 ms: wait for one that saw the running job.
    let deadline = Instant::now() + LONG;
    let me = loop {
        let workers = q.backend.workers().await.expect("workers");
        if let Some(me) = workers
            .into_iter()
            .find(|x| x.name == w.name && x.running == 1)
        {
            break me;
        }
        assert!(
            Instant::now() < deadline,
            "worker listed with its running job"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(me.pid, std::process::id());
    assert_eq!(me.kinds, vec![PROBE.to_string()]);
    assert!(now_ms() - me.last_heartbeat_ms < 5_000);
    assert!(me.name.contains(&format!("-{}-", std::process::id())));
    w.stop().await;
    q.cleanup().await;
}

/// A paused kind is fetched by no worker — one in this process, one in a
/// child process, one started while paused — while its running job
/// finishes; jobs pushed meanwhile wait, and run once it is resumed.
async fn a_paused_kind_is_fetched_by_no_worker(kind: BackendKind) {
    let q = TestQueue::new(kind).await;
    let recorder = Recorder::default();
    let here = q.start_worker(probe_registry(recorder.clone()));
    let events = tempfile::tempdir().expect("dir");
    let mut child = spawn_child_worker(&q.child_env(events.path()));
    let deadline = Instant::now() + LONG;
    while q.backend.workers().await.expect("workers").len() < 2 {
        assert!(Instant::now() < deadline, "both workers register");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let long = q
        .push(
            Probe {
                label: "running-at-pause".into(),
                sleep_ms: 1_500,
                ..Probe::default()
            }
            .job(),
        )
        .await;
    q.wait_for(&long, LONG, |j| j.status == JobStatus::Running)
        .await;

    let pause = dossier_core::job::Pause {
        kind: PROBE.into(),
        reason: "partner down".into(),
        by: "ops".into(),
        at_ms: now_ms(),
    };
    assert!(q.backend.pause(&pause).await.expect("pause"));
    let again = dossier_core::job::Pause {
        reason: "second".into(),
        ..pause.clone()
    };
    assert!(
        !q.backend.pause(&again).await.expect("pause"),
        "paused already"
    );
    assert_eq!(
        q.backend.paused().await.expect("paused"),
        vec![pause.clone()]
    );
    let late = q.start_worker(probe_registry(recorder.clone()));
    // Every worker reads the pauses twice a second: past a second, none
    // fetches the kind.
    tokio::time::sleep(2 * dossier_core::runtime::CONTROLS_REFRESH + Duration::from_millis(100))
        .await;
    let waiting: Vec<String> = q
        .backend
        .push_bulk(
            (0..20)
                .map(|i| {
                    Probe {
                        label: format!("while-paused-{i}"),
                        ..Probe::default()
                    }
                    .job()
                })
                .collect(),
        )
        .await
        .expect("push while paused")
        .into_iter()
        .map(|o| o.id().to_string())
        .collect();
    q.wait_for(&long, LONG, |j| j.status == JobStatus::Done)
        .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let ran = |label: &str| {
        recorder.times(label).len()
            + std::fs::read_dir(events.path())
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                        .map(|t| {
                            t.lines()
                                .filter(|l| l.ends_with(&format!(" {label}")))
                                .count()
                        })
                        .sum::<usize>()
                })
                .unwrap_or(0)
    };
    for i in 0..20 {
        assert_eq!(
            ran(&format!("while-paused-{i}")),
            0,
            "job {i} ran while paused"
        );
    }
    let counts = dossier_core::queue::counts_and_pauses(&*q.backend)
        .await
        .expect("counts");
    assert_eq!(counts[0].pending, 20, "{counts:?}");
    assert_eq!(counts[0].paused.as_ref(), Some(&pause));

    assert!(q.backend.resume(PROBE).await.expect("resume"));
    assert!(
        !q.backend.resume(PROBE).await.expect("resume"),
        "not paused"
    );
    q.drain(LONG).await;
    for id in &waiting {
        assert_eq!(q.job(id).await.status, JobStatus::Done);
    }
    for i in 0..20 {
        assert_eq!(ran(&format!("while-paused-{i}")), 1, "job {i} ran once");
    }
    terminate(&child);
    assert!(child.wait().expect("exit").success());
    here.stop().await;
    late.stop().await;
    q.cleanup().await;
}

/// The most of `ids` that ran at once, from the probe's own record of
/// when each attempt started (each sleeps `sleep_ms`). The queue's
/// `running` count would overstate it: a slot is free once the outcome is
/// decided, before the completer stores it.
async fn most_running_while(
    q: &TestQueue,
    recorder: &Recorder,
    label: &str,
    ids: &[String],
    sleep_ms: i64,
) -> usize {
    for id in ids {
        q.wait_for(id, LONG, |j| j.status == JobStatus::Done).await;
    }
    let starts: Vec<i64> = recorder
        .events()
        .iter()
        .filter(|e| e.label.starts_with(&format!("{label}-")))
        .map(|e| e.at_ms)
        .collect();
    assert_eq!(starts.len(), ids.len(), "each ran once");
    // Ends are a few ms after start + sleep; 20 ms of slack keeps a job
    // that starts in a slot just freed from counting as overlapping.
    starts
        .iter()
        .map(|&t| {
            starts
                .iter()
                .filter(|&&u| u <= t && t < u + sleep_ms - 20)
                .count()
        })
        .max()
        .unwrap_or(0)
}

async fn slow_jobs(q: &TestQueue, label: &str, n: usize, sleep_ms: u64) -> Vec<String> {
    q.backend
        .push_bulk(
            (0..n)
                .map(|i| {
                    Probe {
                        label: format!("{label}-{i}"),
                        sleep_ms,
                        ..Probe::default()
                    }
                    .job()
                })
                .collect(),
        )
        .await
        .expect("push")
        .into_iter()
        .map(|o| o.id().to_string())
        .collect()
}

/// The kind's slots on this queue's workers, as their heartbeats say.
async fn slots_seen(q: &TestQueue) -> Vec<u32> {
    q.backend
        .workers()
        .await
        .expect("workers")
        .iter()
        .filter_map(|w| w.concurrency.get(PROBE).copied())
        .collect()
}

/// An operator scales a kind: every worker applies it within a second,
/// without a restart (down: running jobs finish first; up: at once), a
/// worker started later starts with it, and dropping it brings back the
/// configured concurrency (4 here). `dossier workers` shows the slots.
async fn a_kind_is_scaled_live_and_across_restarts(kind: BackendKind) {
    let q = TestQueue::new(kind).await;
    let settle = 2 * dossier_core::runtime::CONTROLS_REFRESH + Duration::from_millis(500);
    let recorder = Recorder::default();
    let first = q.start_worker(probe_registry(recorder.clone()));
    let deadline = Instant::now() + LONG;
    while slots_seen(&q).await != vec![4] {
        assert!(Instant::now() < deadline, "the worker reports its slots");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let scale = |n: u32| dossier_core::job::Scale {
        kind: PROBE.into(),
        concurrency: n,
        by: "ops".into(),
        at_ms: now_ms(),
    };
    // Down, while four jobs run: they finish, then one at a time.
    let busy = slow_jobs(&q, "busy", 4, 800).await;
    let deadline = Instant::now() + LONG;
    while running(&q).await < 4 {
        assert!(Instant::now() < deadline, "four run at once");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    q.backend.scale(&scale(1)).await.expect("scale");
    tokio::time::sleep(settle).await;
    for id in &busy {
        let job = q.wait_for(id, LONG, |j| j.status == JobStatus::Done).await;
        assert_eq!(job.attempts, 1, "a running job is never cut short");
    }
    let one = slow_jobs(&q, "one", 6, 150).await;
    assert!(
        most_running_while(&q, &recorder, "one", &one, 150).await <= 1,
        "one slot"
    );
    assert_eq!(slots_seen(&q).await, vec![1]);

    // Up, live.
    q.backend.scale(&scale(7)).await.expect("scale");
    tokio::time::sleep(settle).await;
    // More than the configured four at once, never more than seven (the
    // lower bound has slack: a loaded machine fetches slower).
    let many = slow_jobs(&q, "many", 14, 1_000).await;
    let most = most_running_while(&q, &recorder, "many", &many, 1_000).await;
    assert!((5..=7).contains(&most), "seven slots: {most} at most");
    assert_eq!(slots_seen(&q).await, vec![7]);

    // Kept across a restart.
    first.stop().await;
    let second = q.start_worker(probe_registry(recorder.clone()));
    let again = slow_jobs(&q, "again", 14, 1_000).await;
    let most = most_running_while(&q, &recorder, "again", &again, 1_000).await;
    assert!(
        (5..=7).contains(&most),
        "a new worker starts scaled: {most}"
    );
    assert_eq!(q.backend.scales().await.expect("scales").len(), 1);

    // Dropped: the configured concurrency again.
    assert!(q.backend.unscale(PROBE).await.expect("unscale"));
    assert!(!q.backend.unscale(PROBE).await.expect("unscale"));
    tokio::time::sleep(settle).await;
    let back = slow_jobs(&q, "back", 12, 500).await;
    let most = most_running_while(&q, &recorder, "back", &back, 500).await;
    assert!((3..=4).contains(&most), "four slots again: {most}");
    assert_eq!(slots_seen(&q).await, vec![4]);
    second.stop().await;
    q.cleanup().await;
}

/// A probe job of `firm`'s `client`, in `trace`.
fn owned(label: &str, firm: &str, client: &str, trace: Option<&str>) -> dossier_core::job::NewJob {
    dossier_core::job::NewJob {
        group: Some(firm.into()),
        subject: Some(client.into()),
        trace_id: trace.map(str::to_string),
        ..Probe::ok(label).job()
    }
}

fn ids(list: &[dossier_core::job::JobRecord]) -> std::collections::BTreeSet<String> {
    list.iter().map(|j| j.id.clone()).collect()
}

/// Operators find one client's, one firm's, one trace's jobs and the jobs
/// failing with some error; filters combine; every backend answers what
/// the filter's own rule ([`JobFilter::matches`]) says of the whole queue.
async fn jobs_are_found_by_firm_client_trace_and_error(kind: BackendKind) {
    let q = TestQueue::new(kind).await;
    // Pushed first, fetched first (every backend is FIFO within a kind).
    let failing = q.push(owned("b1-x", "firm-b", "b1", Some("t-9"))).await;
    let leased = q
        .backend
        .fetch(PROBE, "w-1", 1, Duration::from_secs(60))
        .await
        .expect("fetch");
    assert_eq!(
        leased.iter().map(|l| l.id.clone()).collect::<Vec<_>>(),
        vec![failing.clone()]
    );
    let failure = Failure {
        id: failing.clone(),
        error: AttemptError {
            attempt: 1,
            at_ms: now_ms(),
            class: "transient".into(),
            message: "registry TIMEOUT after 10 s".into(),
        },
        retry_at_ms: Some(now_ms() + 3_600_000),
        lease_expires_at_ms: None,
    };
    assert!(q.backend.fail("w-1", &failure).await.expect("fail"));
    let a1: Vec<String> = vec![
        q.push(owned("a1-x", "firm-a", "a1", Some("t-1"))).await,
        q.push(owned("a1-y", "firm-a", "a1", Some("t-1"))).await,
        q.push(owned("a1-z", "firm-a", "a1", None)).await,
    ];
    let a2 = q.push(owned("a2-x", "firm-a", "a2", Some("t-2"))).await;
    let b1 = q.push(owned("b1-y", "firm-b", "b1", None)).await;
    let unowned = q.push(Probe::ok("nobody").job()).await;
    assert_eq!(
        q.backend
            .kill(&a1[2], "SMTP 421: try again later")
            .await
            .expect("kill"),
        AdminOutcome::Applied
    );

    let stored = q.job(&a2).await;
    assert_eq!(
        (
            stored.group.as_deref(),
            stored.subject.as_deref(),
            stored.trace_id.as_deref()
        ),
        (Some("firm-a"), Some("a2"), Some("t-2"))
    );
    assert_eq!(
        (q.job(&unowned).await.group, q.job(&unowned).await.subject),
        (None, None)
    );

    let all = q
        .backend
        .list(&JobFilter {
            limit: 100,
            ..JobFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(all.len(), 7);
    let f = |group: Option<&str>,
             subject: Option<&str>,
             trace: Option<&str>,
             error: Option<&str>,
             status: Option<JobStatus>| JobFilter {
        group: group.map(str::to_string),
        subject: subject.map(str::to_string),
        trace_id: trace.map(str::to_string),
        error: error.map(str::to_string),
        status,
        limit: 100,
        ..JobFilter::default()
    };
    let cases: Vec<(JobFilter, std::collections::BTreeSet<String>)> = vec![
        (
            f(None, Some("a1"), None, None, None),
            a1.iter().cloned().collect(),
        ),
        (
            f(Some("firm-a"), None, None, None, None),
            a1.iter().cloned().chain([a2.clone()]).collect(),
        ),
        (
            f(Some("firm-b"), None, None, None, None),
            [failing.clone(), b1.clone()].into(),
        ),
        (
            f(None, None, Some("t-1"), None, None),
            a1[..2].iter().cloned().collect(),
        ),
        (
            f(None, None, None, Some("timeout"), None),
            [failing.clone()].into(),
        ),
        (
            f(None, None, None, Some("smtp 421"), None),
            [a1[2].clone()].into(),
        ),
        (
            f(Some("firm-a"), None, None, None, Some(JobStatus::Dead)),
            [a1[2].clone()].into(),
        ),
        (
            f(Some("firm-b"), None, None, None, Some(JobStatus::Retrying)),
            [failing.clone()].into(),
        ),
        (
            f(Some("firm-a"), Some("b1"), None, None, None),
            Default::default(),
        ),
        (
            f(None, Some("a1' OR '1'='1"), None, None, None),
            Default::default(),
        ),
        (f(None, None, None, Some("%"), None), Default::default()),
        (
            f(Some("firm-a"), None, None, None, Some(JobStatus::Pending)),
            [a1[0].clone(), a1[1].clone(), a2.clone()].into(),
        ),
    ];
    for (filter, want) in cases {
        let got = q.backend.list(&filter).await.expect("list");
        let by_rule: Vec<_> = all.iter().filter(|j| filter.matches(j)).cloned().collect();
        assert_eq!(ids(&got), want, "{filter:?}");
        assert_eq!(ids(&by_rule), want, "the rule itself, {filter:?}");
        // Newest change first, as on every backend.
        assert!(
            got.windows(2)
                .all(|w| w[0].updated_at_ms >= w[1].updated_at_ms)
        );
    }
    let limited = q
        .backend
        .list(&JobFilter {
            limit: 2,
            ..f(Some("firm-a"), None, None, None, None)
        })
        .await
        .expect("list");
    assert_eq!(limited.len(), 2);
    q.cleanup().await;
}

/// Retry, kill and move the run time of every job a filter matches: a dry
/// run changes nothing, each action changes only the statuses it applies
/// to, other firms' jobs are untouched, and an empty filter is refused.
async fn bulk_actions_change_what_a_filter_matches(kind: BackendKind) {
    use dossier_core::bulk::{self, Action, BulkError};
    let q = TestQueue::new(kind).await;
    let mut a = Vec::new();
    for i in 0..4 {
        a.push(
            q.push(owned(&format!("a{i}"), "firm-a", &format!("a{i}"), None))
                .await,
        );
    }
    let b: Vec<String> = vec![
        q.push(owned("b0", "firm-b", "b0", None)).await,
        q.push(owned("b1", "firm-b", "b1", None)).await,
    ];
    for id in a[..3].iter().chain(&b) {
        q.backend.kill(id, "partner down").await.expect("kill");
    }
    let dead_of = |firm: &str| JobFilter {
        group: Some(firm.into()),
        status: Some(JobStatus::Dead),
        limit: 100,
        ..JobFilter::default()
    };
    let firm = |firm: &str| JobFilter {
        group: Some(firm.into()),
        limit: 100,
        ..JobFilter::default()
    };
    let statuses = |list: Vec<dossier_core::job::JobRecord>| {
        let mut s: Vec<JobStatus> = list.into_iter().map(|j| j.status).collect();
        s.sort();
        s
    };
    let backend = q.backend.as_ref();

    let dry = bulk::run(backend, &dead_of("firm-a"), &Action::Retry, true)
        .await
        .expect("dry run");
    assert_eq!(
        (dry.matched, dry.eligible, dry.applied, dry.dry_run),
        (3, 3, 0, true)
    );
    assert_eq!(
        backend.list(&dead_of("firm-a")).await.expect("list").len(),
        3,
        "a dry run changes nothing"
    );

    let done = bulk::run(backend, &dead_of("firm-a"), &Action::Retry, false)
        .await
        .expect("retry");
    assert_eq!(
        (done.matched, done.applied, done.skipped, done.more),
        (3, 3, 0, false)
    );
    assert_eq!(
        statuses(backend.list(&firm("firm-a")).await.expect("list")),
        vec![JobStatus::Pending; 4]
    );
    assert_eq!(
        backend.list(&dead_of("firm-b")).await.expect("list").len(),
        2,
        "firm b untouched"
    );

    // Later: all four wait an hour, as never-run jobs (their attempts are kept).
    let later = Action::Reschedule {
        run_at_ms: now_ms() + 3_600_000,
    };
    let moved = bulk::run(backend, &firm("firm-a"), &later, false)
        .await
        .expect("reschedule");
    assert_eq!(moved.applied, 4);
    assert_eq!(
        statuses(backend.list(&firm("firm-a")).await.expect("list")),
        vec![JobStatus::Scheduled; 4]
    );
    // Back to now, for one client only.
    let one = JobFilter {
        subject: Some("a3".into()),
        limit: 100,
        ..JobFilter::default()
    };
    let now = Action::Reschedule {
        run_at_ms: now_ms(),
    };
    assert_eq!(
        bulk::run(backend, &one, &now, false)
            .await
            .expect("now")
            .applied,
        1
    );
    assert_eq!(q.job(&a[3]).await.status, JobStatus::Pending);

    // Killing applies to waiting jobs, not to the dead.
    let kill = Action::Kill {
        reason: "client left the firm".into(),
    };
    let none = bulk::run(backend, &firm("firm-b"), &kill, false)
        .await
        .expect("kill b");
    assert_eq!((none.matched, none.eligible, none.applied), (2, 0, 0));
    let killed = bulk::run(backend, &firm("firm-a"), &kill, false)
        .await
        .expect("kill a");
    assert_eq!(killed.applied, 4);
    let a_jobs = backend.list(&firm("firm-a")).await.expect("list");
    assert!(
        a_jobs.iter().all(|j| j.status == JobStatus::Dead
            && j.last_error.as_deref() == Some("client left the firm"))
    );
    // And the error text finds them again.
    let by_error = JobFilter {
        error: Some("LEFT THE FIRM".into()),
        limit: 100,
        ..JobFilter::default()
    };
    assert_eq!(
        ids(&backend.list(&by_error).await.expect("list")),
        a.iter().cloned().collect()
    );

    let everything = JobFilter {
        limit: 100,
        ..JobFilter::default()
    };
    assert!(matches!(
        bulk::run(backend, &everything, &Action::Retry, false).await,
        Err(BulkError::NoFilter)
    ));
    q.cleanup().await;
}

/// A Redis pause entry that does not read (written by hand, or by another
/// version) still pauses its kind — the safe side — and says so where
/// operators look; resuming clears it and the waiting job runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_redis_pause_entry_pauses_its_kind_until_resumed() {
    let q = TestQueue::new(BackendKind::Redis).await;
    let client = ::redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let _: i64 = ::redis::cmd("HSET")
        .arg(format!("{}:paused", q.settings.queue.prefix))
        .arg(PROBE)
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .expect("hset");
    let paused = q.backend.paused().await.expect("paused");
    assert_eq!(paused.len(), 1, "{paused:?}");
    assert_eq!(paused[0].kind, PROBE);
    assert!(
        paused[0].reason.contains("unreadable pause record"),
        "{paused:?}"
    );
    let counts = dossier_core::queue::counts_and_pauses(q.backend.as_ref())
        .await
        .expect("counts");
    assert!(counts.iter().any(|c| c.kind == PROBE && c.paused.is_some()));

    let recorder = Recorder::default();
    let w = q.start_worker(probe_registry(recorder.clone()));
    let held = q.push(Probe::ok("held").job()).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        q.job(&held).await.status,
        JobStatus::Pending,
        "not fetched while paused"
    );
    assert!(q.backend.resume(PROBE).await.expect("resume"));
    q.wait_for(&held, LONG, |j| j.status == JobStatus::Done)
        .await;
    assert!(q.backend.paused().await.expect("paused").is_empty());
    w.stop().await;
    q.cleanup().await;
}

/// One firm's import (200 bulk jobs, pushed first) does not make the others
/// wait: the first fetch takes every interactive job (a firm's and one of
/// no firm), then shares what is left between the firms importing; a firm
/// with three jobs waiting has them all within two fetches, where a FIFO
/// queue would hand out 16 of the first firm's. Every job is fetched once.
async fn each_fetch_serves_the_firms_in_turn_interactive_first(kind: BackendKind) {
    let q = TestQueue::new(kind).await;
    let job = |label: &str, firm: Option<&str>, bulk: bool| dossier_core::job::NewJob {
        group: firm.map(str::to_string),
        subject: firm.map(|f| format!("{f}-client")),
        bulk,
        ..Probe::ok(label).job()
    };
    let import: Vec<_> = (0..200)
        .map(|i| job(&format!("a{i}"), Some("firm-a"), true))
        .collect();
    q.backend.push_bulk(import).await.expect("import");
    let b: Vec<_> = (0..3)
        .map(|i| job(&format!("b{i}"), Some("firm-b"), true))
        .collect();
    q.backend.push_bulk(b).await.expect("firm b");
    let c: Vec<_> = (0..2)
        .map(|i| job(&format!("c{i}"), Some("firm-c"), false))
        .collect();
    q.backend.push_bulk(c).await.expect("firm c");
    q.push(job("nobody", None, false)).await;

    let label = |l: &dossier_core::job::LeasedJob| {
        l.payload["label"].as_str().unwrap_or_default().to_string()
    };
    let fetch = || async {
        q.backend
            .fetch(PROBE, "w-1", 8, Duration::from_secs(60))
            .await
            .expect("fetch")
            .iter()
            .map(label)
            .collect::<Vec<String>>()
    };
    let first = fetch().await;
    assert_eq!(first.len(), 8, "{first:?}");
    let of =
        |labels: &[String], prefix: &str| labels.iter().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(
        (of(&first, "c"), of(&first, "nobody")),
        (2, 1),
        "the interactive jobs first: {first:?}"
    );
    assert!(
        of(&first, "b") >= 2 && of(&first, "a") >= 2,
        "the two importing firms share the rest: {first:?}"
    );
    let second = fetch().await;
    assert_eq!(second.len(), 8);
    assert_eq!(
        of(&first, "b") + of(&second, "b"),
        3,
        "{first:?} {second:?}"
    );
    // The rest is firm A's, each job once.
    let mut seen: HashSet<String> = first.iter().chain(&second).cloned().collect();
    loop {
        let more = fetch().await;
        if more.is_empty() {
            break;
        }
        for l in more {
            assert!(seen.insert(l.clone()), "{l} fetched twice");
        }
    }
    assert_eq!(seen.len(), 206);
    q.cleanup().await;
}

/// While one firm's import is the only work, the SQL fetches remember its
/// (lane, firm) and skip the survey (`lane_hint`); a job of another firm
/// must still be served: at the next fetch when it is pushed in this
/// process (the push wakes the kind), and once the hint's time is up when
/// another process pushes it (an SQLite push sends no wake-up).
async fn a_firm_arriving_while_another_drains_is_served_promptly(kind: BackendKind) {
    let q = TestQueue::new(kind).await;
    let job = |label: &str, firm: &str, bulk: bool| dossier_core::job::NewJob {
        group: Some(firm.to_string()),
        bulk,
        ..Probe::ok(label).job()
    };
    let import: Vec<_> = (0..100)
        .map(|i| job(&format!("a{i}"), "firm-a", true))
        .collect();
    q.backend.push_bulk(import).await.expect("import");
    let fetch = || async {
        q.backend
            .fetch(PROBE, "w-1", 4, Duration::from_secs(60))
            .await
            .expect("fetch")
            .iter()
            .map(|l| l.payload["label"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<String>>()
    };
    for _ in 0..3 {
        assert!(fetch().await.iter().all(|l| l.starts_with('a')));
    }
    q.push(job("b", "firm-b", false)).await;
    let next = fetch().await;
    assert!(next.contains(&"b".to_string()), "{next:?}");
    assert!(fetch().await.iter().all(|l| l.starts_with('a')));

    let other_process = dossier_core::queue::open(&q.settings)
        .await
        .expect("a second queue handle");
    other_process
        .push(job("c", "firm-c", false))
        .await
        .expect("push from elsewhere");
    tokio::time::sleep(dossier_core::queue::LANE_HINT_TTL + Duration::from_millis(50)).await;
    let next = fetch().await;
    assert!(next.contains(&"c".to_string()), "{next:?}");
    q.cleanup().await;
}

/// The work due now and not yet fetched, per firm, the most first: what
/// `dossier queues` and the dashboard show. Scheduled and running jobs are
/// not waiting.
async fn waiting_work_is_counted_per_firm(kind: BackendKind) {
    use dossier_core::job::GroupWaiting;
    let q = TestQueue::new(kind).await;
    let job = |firm: Option<&str>, bulk: bool| dossier_core::job::NewJob {
        group: firm.map(str::to_string),
        bulk,
        ..Probe::ok("w").job()
    };
    let mut jobs: Vec<_> = (0..5).map(|_| job(Some("firm-a"), true)).collect();
    jobs.extend((0..2).map(|_| job(Some("firm-b"), false)));
    jobs.push(job(Some("firm-b"), true));
    jobs.push(job(None, false));
    jobs.push(dossier_core::job::NewJob {
        run_at_ms: Some(now_ms() + 3_600_000),
        ..job(Some("firm-c"), false)
    });
    q.backend.push_bulk(jobs).await.expect("push");
    let waiting = |firm: Option<&str>, interactive: u64, bulk: u64| GroupWaiting {
        group: firm.map(str::to_string),
        interactive,
        bulk,
    };
    assert_eq!(
        q.backend.waiting_by_group(10).await.expect("waiting"),
        vec![
            waiting(Some("firm-a"), 0, 5),
            waiting(Some("firm-b"), 2, 1),
            waiting(None, 1, 0),
        ]
    );
    assert_eq!(
        q.backend.waiting_by_group(1).await.expect("waiting").len(),
        1
    );
    // Fetched jobs wait no more: the interactive ones go first.
    let leased = q
        .backend
        .fetch(PROBE, "w-1", 3, Duration::from_secs(60))
        .await
        .expect("fetch");
    assert_eq!(leased.len(), 3);
    assert_eq!(
        q.backend.waiting_by_group(10).await.expect("waiting"),
        vec![waiting(Some("firm-a"), 0, 5), waiting(Some("firm-b"), 0, 1)]
    );
    q.cleanup().await;
}
