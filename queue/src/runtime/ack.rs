//! The one place an attempt's outcome is decided: the backend's own apalis
//! layer, outermost around everything a kind stacks, so it sees the final
//! typed error of every attempt.
//!
//! | the attempt ended in | class | what follows | attempt counted |
//! |---|---|---|---|
//! | `Ok(r)` | — | done, `r` stored | yes |
//! | `JobError::Transient` (its `retry_after` wins) | transient | retry policy | yes |
//! | `JobError::Permanent` | permanent | dead set | yes |
//! | `JobError::Snooze` | — | due again after its delay | no |
//! | apalis `RetryAfterError` | transient | retry after its duration | yes |
//! | apalis `AbortError` | permanent | dead set | yes |
//! | apalis `DeferredError` | — | due again after the kind's `defer` | no |
//! | a panic (our handler, or apalis's `PanicError`) | panic | retry policy | yes |
//! | the kind's timeout (`tower` `Elapsed`) | timeout | retry policy | yes |
//! | the shutdown grace ran out (hard stop) | — | handed back, handler aborted | no |
//! | anything else (a failed extractor, `anyhow`, I/O…) | transient | retry policy | yes |
//!
//! Outcomes go to the completer, which makes them durable in batches.

use std::error::Error as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis::layers::catch_panic::PanicError;
use apalis_core::error::{AbortError, BoxDynError, DeferredError, RetryAfterError};
use apalis_core::layers::{Layer, Service};
use apalis_core::task::Task;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::backend::{JobMeta, KindEnv};
use super::completer::Outcome;
use super::registry::JobContext;
use super::stack::Panicked;
use crate::clock::now_ms;
use crate::job::{AttemptError, JobError};
use crate::metrics::KindMetrics;
use crate::queue::{Completion, Failure};
use crate::retry::NextStep;
use crate::settings::KindSettings;

/// How an attempt that did not return `Ok` ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// Nothing was attempted: due again after `after`, uncounted.
    Snooze { reason: String, after: Duration },
    /// Interrupted by us (hard stop): due now, uncounted.
    HandBack,
    /// A failed attempt of `class`; the retry policy decides what follows.
    Failed {
        class: &'static str,
        error: JobError,
    },
}

/// Reads the error an attempt ended with. `timeout` and `defer` are the
/// kind's, for the messages and the deferral.
pub(crate) fn classify(e: &BoxDynError, timeout: Duration, defer: Duration) -> Verdict {
    if let Some(j) = e.downcast_ref::<JobError>() {
        return match j {
            JobError::Snooze { reason, after } => Verdict::Snooze {
                reason: reason.clone(),
                after: *after,
            },
            JobError::Permanent { .. } => Verdict::Failed {
                class: "permanent",
                error: j.clone(),
            },
            JobError::Transient { .. } => Verdict::Failed {
                class: "transient",
                error: j.clone(),
            },
        };
    }
    if let Some(p) = e.downcast_ref::<Panicked>() {
        return panicked(&p.0);
    }
    if e.downcast_ref::<tower::timeout::error::Elapsed>().is_some() {
        return Verdict::Failed {
            class: "timeout",
            error: JobError::transient(format!("attempt timed out after {timeout:?}")),
        };
    }
    if let Some(r) = e.downcast_ref::<RetryAfterError>() {
        return Verdict::Failed {
            class: "transient",
            error: JobError::retry_after(source_message(r), r.get_duration()),
        };
    }
    if let Some(a) = e.downcast_ref::<AbortError>() {
        if let Some(p) = a.source().and_then(|s| s.downcast_ref::<PanicError>()) {
            return panicked(&p.0);
        }
        return Verdict::Failed {
            class: "permanent",
            error: JobError::permanent(source_message(a)),
        };
    }
    if let Some(d) = e.downcast_ref::<DeferredError>() {
        return Verdict::Snooze {
            reason: source_message(d),
            after: defer,
        };
    }
    if let Some(j) = e.downcast_ref::<tokio::task::JoinError>() {
        return if j.is_panic() {
            panicked("the handler's task panicked")
        } else {
            Verdict::HandBack
        };
    }
    Verdict::Failed {
        class: "transient",
        error: JobError::transient(e.to_string()),
    }
}

fn panicked(message: &str) -> Verdict {
    Verdict::Failed {
        class: "panic",
        error: JobError::transient(format!("handler panicked: {message}")),
    }
}

/// apalis's error types prefix their own name; operators want the cause.
fn source_message(e: &dyn std::error::Error) -> String {
    e.source()
        .map(|s| s.to_string())
        .unwrap_or_else(|| e.to_string())
}

/// Turns an attempt's result into the outcome to store, logging it in the
/// job's span and counting it in the metrics.
pub(crate) fn decide<R: Serialize>(
    ctx: &JobContext,
    settings: &KindSettings,
    defer: Duration,
    metrics: &KindMetrics,
    result: Option<Result<R, BoxDynError>>,
    started: Instant,
) -> Outcome {
    let finished = |label: &str| {
        metrics.job_finished(label, started.elapsed().as_secs_f64());
    };
    let verdict = match result {
        None => Verdict::HandBack,
        Some(Ok(value)) => match serde_json::to_value(value) {
            Ok(result) => {
                tracing::debug!("done");
                finished("done");
                return Outcome::Done(Completion {
                    id: ctx.id.to_string(),
                    result,
                });
            }
            Err(e) => Verdict::Failed {
                class: "permanent",
                error: JobError::permanent(format!("handler result cannot be stored: {e}")),
            },
        },
        Some(Err(e)) => classify(&e, settings.timeout(), defer),
    };
    match verdict {
        Verdict::HandBack => {
            tracing::info!("handed back unfinished at shutdown");
            finished("handed_back");
            Outcome::Release {
                id: ctx.id.to_string(),
                run_at_ms: now_ms(),
            }
        }
        Verdict::Snooze { reason, after } => {
            tracing::info!(%reason, "snoozed for {after:?}; the attempt does not count");
            finished("snoozed");
            Outcome::Release {
                id: ctx.id.to_string(),
                run_at_ms: now_ms() + after.as_millis() as i64,
            }
        }
        Verdict::Failed { class, error } => failed(ctx, settings, class, &error, &finished),
    }
}

fn failed(
    ctx: &JobContext,
    settings: &KindSettings,
    class: &str,
    error: &JobError,
    finished: &dyn Fn(&str),
) -> Outcome {
    let now = now_ms();
    let step = settings
        .retry_policy()
        .next_step(ctx.attempt, ctx.max_attempts, error);
    let retry_at_ms = match step {
        NextStep::RetryIn(d) => {
            finished("retried");
            tracing::warn!(class, error = %error, "attempt failed; retry in {d:?}");
            Some(now + d.as_millis() as i64)
        }
        NextStep::Dead => {
            finished("dead");
            tracing::warn!(class, error = %error, "job failed for good: moved to the dead set");
            None
        }
    };
    Outcome::Failed(Failure {
        id: ctx.id.to_string(),
        error: AttemptError {
            attempt: ctx.attempt,
            at_ms: now,
            class: class.to_string(),
            message: error.to_string(),
        },
        retry_at_ms,
        lease_expires_at_ms: None,
    })
}

/// A payload that does not decode into the kind's type: permanent, since no
/// retry can fix it.
pub(crate) fn undecodable(meta: &JobMeta, env: &KindEnv, e: &serde_json::Error) -> Outcome {
    let _span = meta.span.enter();
    env.metrics.attempt_started();
    let error = JobError::permanent(format!("payload is not a valid {} job: {e}", meta.ctx.kind));
    failed(&meta.ctx, &env.settings, "permanent", &error, &|label| {
        env.metrics.job_finished(label, 0.0)
    })
}

/// The backend's layer (apalis `BackendConfig::Layer`).
#[derive(Clone)]
pub(crate) struct AckLayer {
    env: Arc<KindEnv>,
}

impl AckLayer {
    pub(crate) fn new(env: Arc<KindEnv>) -> AckLayer {
        AckLayer { env }
    }
}

impl<S> Layer<S> for AckLayer {
    type Service = AckService<S>;

    fn layer(&self, inner: S) -> AckService<S> {
        AckService {
            inner,
            env: self.env.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct AckService<S> {
    inner: S,
    env: Arc<KindEnv>,
}

impl<S, P> Service<Task<P>> for AckService<S>
where
    S: Service<Task<P>>,
    S::Error: Into<BoxDynError>,
    S::Response: Serialize,
{
    // The outcome is ours to store: apalis gets `()` (nothing to box per job).
    type Response = ();
    type Error = BoxDynError;
    type Future = AckFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxDynError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<P>) -> AckFuture<S::Future> {
        let Some(meta) = task.ctx().data().get::<Arc<JobMeta>>().cloned() else {
            return AckFuture::NoMeta;
        };
        // Armed before the inner stack is called: should a layer's `call`
        // panic, the job still goes back to the queue as it unwinds.
        let guard = OutcomeGuard {
            env: self.env.clone(),
            meta,
            armed: true,
        };
        // Entered while the inner stack spawns the handler, so its task
        // (apalis's parallelize) starts inside the job's span.
        let inner = {
            let _entered = guard.meta.span.enter();
            self.inner.call(task)
        };
        self.env.metrics.attempt_started();
        AckFuture::Running {
            inner: Some(inner),
            hard_stop: self.env.hard_stop.clone().cancelled_owned(),
            guard: Some(guard),
            started: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// One attempt in flight: the inner stack raced against the hard stop,
    /// decided and settled as soon as either ends. A named future rather
    /// than a boxed `async` block: it is on every job's path.
    #[project = AckProj]
    pub(crate) enum AckFuture<F> {
        Running {
            // Dropped the moment the attempt is decided: at a hard stop
            // that aborts the handler's task.
            #[pin]
            inner: Option<F>,
            #[pin]
            hard_stop: WaitForCancellationFutureOwned,
            guard: Option<OutcomeGuard>,
            started: Instant,
        },
        NoMeta,
    }
}

impl<F, R, E> Future for AckFuture<F>
where
    F: Future<Output = Result<R, E>>,
    E: Into<BoxDynError>,
    R: Serialize,
{
    type Output = Result<(), BoxDynError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let AckProj::Running {
            mut inner,
            hard_stop,
            guard,
            started,
        } = self.project()
        else {
            return Poll::Ready(Err(NoJobMeta.into()));
        };
        // Hard stop first, as a biased select: it wins over a result that
        // lands in the same poll.
        let result = if hard_stop.poll(cx).is_ready() {
            None
        } else {
            match inner.as_mut().as_pin_mut() {
                Some(f) => match f.poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => Some(r.map_err(Into::into)),
                },
                None => return Poll::Ready(Ok(())),
            }
        };
        inner.set(None);
        let Some(guard) = guard.take() else {
            return Poll::Ready(Ok(()));
        };
        // Only the decision logs: the span is entered for it alone rather
        // than at every poll of this future.
        let outcome = {
            let _entered = guard.meta.span.enter();
            let env = &guard.env;
            decide(
                &guard.meta.ctx,
                &env.settings,
                env.defer,
                &env.metrics,
                result,
                *started,
            )
        };
        guard.settle(outcome);
        Poll::Ready(Ok(()))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("a task reached the ack layer without its job metadata")]
struct NoJobMeta;

/// Makes sure a job whose attempt was dropped undecided (its worker future
/// dropped by a panic in the pool) still goes back to the queue and frees
/// its slot.
pub(crate) struct OutcomeGuard {
    env: Arc<KindEnv>,
    meta: Arc<JobMeta>,
    armed: bool,
}

impl OutcomeGuard {
    fn settle(mut self, outcome: Outcome) {
        self.armed = false;
        self.env.settle(outcome);
    }
}

impl Drop for OutcomeGuard {
    fn drop(&mut self) {
        if self.armed {
            let id = self.meta.ctx.id.to_string();
            tracing::warn!(job_id = %id, "attempt dropped undecided: handing the job back");
            self.env.settle(Outcome::Release {
                id,
                run_at_ms: now_ms(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(30);
    const D: Duration = Duration::from_secs(1);

    fn boxed(e: impl std::error::Error + Send + Sync + 'static) -> BoxDynError {
        Box::new(e)
    }

    fn failed_as(v: Verdict) -> (&'static str, JobError) {
        match v {
            Verdict::Failed { class, error } => (class, error),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn our_errors_keep_their_class() {
        let (c, e) = failed_as(classify(&boxed(JobError::transient("down")), T, D));
        assert_eq!((c, e), ("transient", JobError::transient("down")));
        let ra = JobError::retry_after("429", Duration::from_secs(7));
        assert_eq!(
            failed_as(classify(&boxed(ra.clone()), T, D)),
            ("transient", ra)
        );
        let p = JobError::permanent("unknown SIREN");
        assert_eq!(
            failed_as(classify(&boxed(p.clone()), T, D)),
            ("permanent", p)
        );
        assert_eq!(
            classify(
                &boxed(JobError::snooze("quota", Duration::from_secs(3))),
                T,
                D
            ),
            Verdict::Snooze {
                reason: "quota".into(),
                after: Duration::from_secs(3)
            }
        );
    }

    #[test]
    fn apalis_errors_are_honoured() {
        let io = || std::io::Error::other("429 from the registry");
        let (c, e) = failed_as(classify(
            &boxed(RetryAfterError::new(io(), Duration::from_secs(9))),
            T,
            D,
        ));
        assert_eq!(c, "transient");
        assert_eq!(
            e,
            JobError::retry_after("429 from the registry", Duration::from_secs(9))
        );
        let (c, e) = failed_as(classify(&boxed(AbortError::new(io())), T, D));
        assert_eq!(
            (c, e),
            ("permanent", JobError::permanent("429 from the registry"))
        );
        assert_eq!(
            classify(&boxed(DeferredError::new(io())), T, D),
            Verdict::Snooze {
                reason: "429 from the registry".into(),
                after: D
            }
        );
        // apalis's default catch-panic makes a panic an AbortError; we count
        // it as a panic (retried), not as permanent.
        let (c, _) = failed_as(classify(
            &boxed(AbortError::new(PanicError("boom".into()))),
            T,
            D,
        ));
        assert_eq!(c, "panic");
    }

    #[test]
    fn panics_timeouts_and_the_rest() {
        let (c, e) = failed_as(classify(&boxed(Panicked("boom".into())), T, D));
        assert_eq!(
            (c, e.to_string().as_str()),
            ("panic", "handler panicked: boom")
        );
        let elapsed: BoxDynError = tower::timeout::error::Elapsed::new().into();
        let (c, e) = failed_as(classify(&elapsed, T, D));
        assert_eq!(c, "timeout");
        assert_eq!(e.to_string(), "attempt timed out after 30s");
        let (c, e) = failed_as(classify(&boxed(std::io::Error::other("disk full")), T, D));
        assert_eq!((c, e), ("transient", JobError::transient("disk full")));
        let (c, _) = failed_as(classify(&boxed(super::super::registry::NoJobContext), T, D));
        assert_eq!(c, "transient");
    }

    fn ctx(attempt: u32, max_attempts: u32) -> JobContext {
        JobContext {
            id: "j1".into(),
            kind: "k".into(),
            attempt,
            max_attempts,
            trace_id: None,
            worker: Arc::from("w"),
        }
    }

    #[test]
    fn decisions_follow_the_retry_policy() {
        let settings = KindSettings {
            max_attempts: 3,
            backoff_base_ms: 1_000,
            jitter: 0.0,
            ..KindSettings::default()
        };
        let started = Instant::now();
        let ok = decide(
            &ctx(1, 3),
            &settings,
            D,
            &KindMetrics::new("test"),
            Some(Ok(serde_json::json!({"n": 1}))),
            started,
        );
        assert_eq!(
            ok,
            Outcome::Done(Completion {
                id: "j1".into(),
                result: serde_json::json!({"n": 1})
            })
        );
        let before = now_ms();
        let retry = decide::<()>(
            &ctx(2, 3),
            &settings,
            D,
            &KindMetrics::new("test"),
            Some(Err(boxed(JobError::transient("x")))),
            started,
        );
        let Outcome::Failed(f) = retry else {
            panic!("a failure")
        };
        assert_eq!((f.error.attempt, f.error.class.as_str()), (2, "transient"));
        let at = f.retry_at_ms.expect("retried");
        assert!(
            (before + 2_000..=now_ms() + 2_000).contains(&at),
            "backoff 2 s after the 2nd attempt"
        );
        let last = decide::<()>(
            &ctx(3, 3),
            &settings,
            D,
            &KindMetrics::new("test"),
            Some(Err(boxed(JobError::transient("x")))),
            started,
        );
        assert!(matches!(
            last,
            Outcome::Failed(Failure {
                retry_at_ms: None,
                ..
            })
        ));
        let retry_after = decide::<()>(
            &ctx(1, 3),
            &settings,
            D,
            &KindMetrics::new("test"),
            Some(Err(boxed(RetryAfterError::new(
                std::io::Error::other("429"),
                Duration::from_secs(60),
            )))),
            started,
        );
        let Outcome::Failed(f) = retry_after else {
            panic!("a failure")
        };
        assert!(f.retry_at_ms.expect("retried") >= before + 60_000);
        let handed = decide::<()>(
            &ctx(1, 3),
            &settings,
            D,
            &KindMetrics::new("test"),
            None,
            started,
        );
        assert!(matches!(handed, Outcome::Release { .. }));
        let snoozed = decide::<()>(
            &ctx(1, 3),
            &settings,
            D,
            &KindMetrics::new("test"),
            Some(Err(boxed(JobError::snooze("q", Duration::from_secs(5))))),
            started,
        );
        let Outcome::Release { run_at_ms, .. } = snoozed else {
            panic!("released")
        };
        assert!(run_at_ms >= before + 5_000);
    }

    /// One kind's environment with its one slot taken (as the feeder
    /// leaves it), and the outcomes the ack settles.
    fn one_slot_env() -> (
        Arc<KindEnv>,
        tokio::sync::mpsc::UnboundedReceiver<Outcome>,
        tokio_util::sync::CancellationToken,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (_leased_tx, leased_rx) = tokio::sync::mpsc::channel(1);
        let hard_stop = tokio_util::sync::CancellationToken::new();
        let env = Arc::new(KindEnv::new(
            "k",
            KindSettings::default(),
            Arc::from("w"),
            Arc::new(tokio::sync::Semaphore::new(0)),
            hard_stop.clone(),
            D,
            tx,
            leased_rx,
        ));
        (env, rx, hard_stop)
    }

    fn task(env: &KindEnv) -> Task<u32> {
        let job = crate::job::LeasedJob {
            id: "j1".into(),
            kind: "k".into(),
            payload: serde_json::json!(7),
            attempt: 1,
            max_attempts: 3,
            trace_id: None,
        };
        apalis_core::task::builder::TaskBuilder::new(7)
            .data(Arc::new(JobMeta::new(&job, env)))
            .build()
    }

    /// The inner stack of these tests: each call returns what `make` makes.
    #[derive(Clone)]
    struct Inner<F>(F);

    impl<F, Fut> Service<Task<u32>> for Inner<F>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<u32, BoxDynError>>,
    {
        type Response = u32;
        type Error = BoxDynError;
        type Future = Fut;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxDynError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Task<u32>) -> Fut {
            (self.0)()
        }
    }

    fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(std::task::Waker::noop()))
    }

    #[test]
    fn a_result_is_settled_once_and_frees_the_slot() {
        let (env, mut outcomes, _) = one_slot_env();
        let mut ack = AckLayer::new(env.clone()).layer(Inner(|| std::future::ready(Ok(42))));
        let mut fut = std::pin::pin!(ack.call(task(&env)));
        assert!(matches!(poll_once(fut.as_mut()), Poll::Ready(Ok(()))));
        assert_eq!(
            outcomes.try_recv().expect("settled"),
            Outcome::Done(Completion {
                id: "j1".into(),
                result: serde_json::json!(42)
            })
        );
        assert_eq!(env.slots.available_permits(), 1);
        // Polled again (a misbehaving caller): nothing is settled twice.
        assert!(matches!(poll_once(fut.as_mut()), Poll::Ready(Ok(()))));
        assert!(outcomes.try_recv().is_err());
        assert_eq!(env.slots.available_permits(), 1);
    }

    /// Dropped before it ends (the worker's future dropped by a panic in
    /// the pool): the job goes back uncounted and its slot is freed.
    #[test]
    fn an_attempt_dropped_undecided_is_handed_back() {
        let (env, mut outcomes, _) = one_slot_env();
        let mut ack = AckLayer::new(env.clone()).layer(Inner(std::future::pending));
        let mut fut = Box::pin(ack.call(task(&env)));
        assert!(poll_once(fut.as_mut()).is_pending());
        assert!(outcomes.try_recv().is_err(), "nothing decided yet");
        drop(fut);
        assert!(matches!(
            outcomes.try_recv().expect("handed back"),
            Outcome::Release { id, .. } if id == "j1"
        ));
        assert_eq!(env.slots.available_permits(), 1);
    }

    /// A hard stop decides the attempt (handed back, uncounted) and drops
    /// the handler's future at once, not when the ack's future goes.
    #[test]
    fn a_hard_stop_hands_back_and_drops_the_handler_at_once() {
        struct Flag(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let (env, mut outcomes, hard_stop) = one_slot_env();
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = dropped.clone();
        let mut ack = AckLayer::new(env.clone()).layer(Inner(move || {
            let guard = Flag(flag.clone());
            async move {
                std::future::pending::<()>().await;
                drop(guard);
                Ok(0)
            }
        }));
        let mut fut = std::pin::pin!(ack.call(task(&env)));
        assert!(poll_once(fut.as_mut()).is_pending());
        hard_stop.cancel();
        assert!(matches!(poll_once(fut.as_mut()), Poll::Ready(Ok(()))));
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
        assert!(matches!(
            outcomes.try_recv().expect("handed back"),
            Outcome::Release { id, .. } if id == "j1"
        ));
        assert_eq!(env.slots.available_permits(), 1);
    }

    #[test]
    fn a_task_without_job_metadata_is_refused() {
        let (env, mut outcomes, _) = one_slot_env();
        let mut ack = AckLayer::new(env.clone()).layer(Inner(|| std::future::ready(Ok(1))));
        let mut fut =
            std::pin::pin!(ack.call(apalis_core::task::builder::TaskBuilder::new(1).build()));
        assert!(matches!(poll_once(fut.as_mut()), Poll::Ready(Err(_))));
        assert!(outcomes.try_recv().is_err());
    }

    /// A layer under the ack that panics in `call`: the job goes back as
    /// the panic unwinds (the Monitor then rebuilds the worker).
    #[test]
    fn a_panic_in_a_layers_call_hands_the_job_back() {
        let (env, mut outcomes, _) = one_slot_env();
        let mut ack = AckLayer::new(env.clone()).layer(Inner(
            || -> std::future::Ready<Result<u32, BoxDynError>> { panic!("a layer's call panics") },
        ));
        let t = task(&env);
        let unwound =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(ack.call(t))));
        assert!(unwound.is_err());
        assert!(matches!(
            outcomes.try_recv().expect("handed back"),
            Outcome::Release { id, .. } if id == "j1"
        ));
        assert_eq!(env.slots.available_permits(), 1);
    }
}
