//! Jobs enqueued on a clock (cron expressions with seconds, UTC), each
//! schedule an apalis-cron worker.
//!
//! Every worker process runs the schedules, so they survive any one of
//! them. Each tick is pushed with the idempotency key
//! `schedule:NAME:UNIX_SECONDS`: however many schedulers fire the same tick,
//! the queue keeps one job (apalis-cron gives each tick a random id, so
//! replicas would each enqueue it). A tick missed while no worker ran is
//! not replayed.

use std::sync::Arc;

use apalis_core::error::BoxDynError;
use apalis_core::monitor::Monitor;
use apalis_core::task::data::Data;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_cron::{CronScheduler, Tick};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::job::{NewJob, PushOutcome};
use crate::queue::{QueueBackend, QueueError};

/// A job kind pushed at each tick of a cron schedule.
pub struct Scheduled {
    pub name: String,
    pub cron: cron::Schedule,
    job: Box<dyn Fn(DateTime<Utc>) -> NewJob + Send + Sync>,
}

impl std::fmt::Debug for Scheduled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduled")
            .field("name", &self.name)
            .field("cron", &self.cron.to_string())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("schedule {name}: invalid cron expression {expr:?}: {message}")]
pub struct ScheduleError {
    pub name: String,
    pub expr: String,
    pub message: String,
}

impl Scheduled {
    pub fn new(
        name: &str,
        expr: &str,
        job: impl Fn(DateTime<Utc>) -> NewJob + Send + Sync + 'static,
    ) -> Result<Scheduled, ScheduleError> {
        let cron = expr.parse::<cron::Schedule>().map_err(|e| ScheduleError {
            name: name.to_string(),
            expr: expr.to_string(),
            message: e.to_string(),
        })?;
        Ok(Scheduled {
            name: name.to_string(),
            cron,
            job: Box::new(job),
        })
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.after(&t).next()
    }

    /// The job of one tick, with the key that makes it unique.
    pub fn job_for(&self, tick: DateTime<Utc>) -> NewJob {
        let mut job = (self.job)(tick);
        job.idempotency_key = Some(format!("schedule:{}:{}", self.name, tick.timestamp()));
        job
    }

    /// Pushes one tick's job; a tick another scheduler pushed is a duplicate.
    pub async fn fire(
        &self,
        queue: &dyn QueueBackend,
        tick: DateTime<Utc>,
    ) -> Result<PushOutcome, QueueError> {
        queue.push(self.job_for(tick)).await
    }
}

/// Adds one apalis-cron worker per schedule to `monitor`. Each schedule
/// has its own worker, so schedules falling on the same second all fire.
/// A tick whose push fails is retried for up to a minute: a queue that is
/// briefly down does not lose the day's rollover. `stop` ends those retries
/// at shutdown.
pub fn mount(
    mut monitor: Monitor,
    worker: &str,
    queue: Arc<dyn QueueBackend>,
    schedules: Vec<Scheduled>,
    stop: CancellationToken,
) -> Monitor {
    for s in schedules {
        let s = Arc::new(s);
        let name = format!("{worker}/schedule/{}", s.name);
        let (queue, stop) = (queue.clone(), stop.clone());
        monitor = monitor.register(move |_restarts| {
            WorkerBuilder::new(name.clone())
                .backend(CronScheduler::new(s.cron.clone()))
                .data(Ticking {
                    schedule: s.clone(),
                    queue: queue.clone(),
                    stop: stop.clone(),
                })
                .build(push_tick)
        });
    }
    monitor
}

/// What a cron worker's handler needs (apalis `Data`).
#[derive(Clone)]
struct Ticking {
    schedule: Arc<Scheduled>,
    queue: Arc<dyn QueueBackend>,
    stop: CancellationToken,
}

async fn push_tick(tick: Tick, ticking: Data<Ticking>) -> Result<(), BoxDynError> {
    let Some(tick) = DateTime::<Utc>::from_timestamp(tick.get_timestamp() as i64, 0) else {
        return Err("cron tick out of range".into());
    };
    let due = &ticking.schedule;
    let mut backoff = std::time::Duration::from_millis(500);
    loop {
        match due.fire(ticking.queue.as_ref(), tick).await {
            Ok(PushOutcome::Created(id)) => {
                tracing::info!(schedule = %due.name, %tick, job = %id, "scheduled job enqueued");
                return Ok(());
            }
            Ok(PushOutcome::Duplicate(id)) => {
                tracing::debug!(schedule = %due.name, %tick, job = %id, "tick already enqueued by another scheduler");
                return Ok(());
            }
            Err(e) if (Utc::now() - tick).num_seconds() < 60 => {
                tracing::warn!(schedule = %due.name, %tick, error = %e, "cannot enqueue the tick; retrying");
                tokio::select! {
                    _ = ticking.stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
            }
            Err(e) => {
                tracing::error!(schedule = %due.name, %tick, error = %e, "tick lost: the queue stayed unreachable for a minute");
                return Ok(());
            }
        }
    }
}

/// Fires the schedules' ticks until `stop`, on a Monitor of their own (a
/// scheduler without a pool).
pub async fn run(queue: Arc<dyn QueueBackend>, schedules: Vec<Scheduled>, stop: CancellationToken) {
    if schedules.is_empty() {
        return;
    }
    let ticks_stop = CancellationToken::new();
    let monitor = mount(
        Monitor::new().should_restart(|worker, error| {
            tracing::warn!(worker = %worker.name(), %error, "a schedule's worker failed; restarting it");
            true
        }),
        "scheduler",
        queue,
        schedules,
        ticks_stop.clone(),
    );
    let ctx = monitor.context();
    let mut running = tokio::spawn(monitor.run());
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = &mut running => return,
    }
    ticks_stop.cancel();
    let _ = ctx.shutdown();
    let _ = running.await;
}
