//! Jobs enqueued on a clock (cron expressions with seconds, UTC).
//!
//! Every worker process runs the scheduler, so the schedule survives any one
//! of them. Each tick is pushed with the idempotency key
//! `schedule:NAME:UNIX_SECONDS`: however many schedulers fire the same tick,
//! the queue keeps one job (apalis-cron gives each tick a random id, so
//! replicas would each enqueue it). A tick missed while no worker ran is not
//! replayed; the rollover's lead time (30 days) makes that harmless.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::job::{NewJob, PushOutcome};
use crate::jobs::exercice_rollover::{self, ExerciceRollover};
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

/// The product's schedules, from the settings.
pub fn product(settings: &Settings) -> Result<Vec<Scheduled>, ScheduleError> {
    let r = settings.schedule.exercice_rollover.clone();
    let max_attempts = settings.queue.kind(exercice_rollover::KIND).max_attempts;
    let rollover = Scheduled::new(exercice_rollover::KIND, &r.cron, move |tick| NewJob {
        kind: exercice_rollover::KIND.to_string(),
        payload: serde_json::to_value(ExerciceRollover {
            as_of: Some(tick.date_naive()),
            days_before_end: Some(r.days_before_end),
            dormant_after_days: Some(r.dormant_after_days),
        })
        .unwrap_or_default(),
        run_at_ms: None,
        max_attempts,
        idempotency_key: None,
        trace_id: None,
    })?;
    let housekeeping_attempts = settings
        .queue
        .kind(crate::jobs::invitation_housekeeping::KIND)
        .max_attempts;
    let housekeeping = Scheduled::new(
        crate::jobs::invitation_housekeeping::KIND,
        &settings.schedule.invitation_housekeeping.cron,
        move |_| NewJob {
            kind: crate::jobs::invitation_housekeeping::KIND.to_string(),
            payload: serde_json::json!({}),
            run_at_ms: None,
            max_attempts: housekeeping_attempts,
            idempotency_key: None,
            trace_id: None,
        },
    )?;
    let mut all = vec![rollover, housekeeping];
    let scan_attempts = settings
        .queue
        .kind(crate::jobs::import_scan::KIND)
        .max_attempts;
    for s in &settings.imports.schedules {
        let name = s.name.clone();
        all.push(Scheduled::new(
            &format!("import:{}", s.name),
            &s.cron,
            move |_| NewJob {
                kind: crate::jobs::import_scan::KIND.to_string(),
                payload: serde_json::json!({ "schedule": name }),
                run_at_ms: None,
                max_attempts: scan_attempts,
                idempotency_key: None,
                trace_id: None,
            },
        )?);
    }
    Ok(all)
}

/// Fires the schedules' ticks until `stop`. Push failures are logged and the
/// tick retried for up to a minute: a queue that is briefly down does not
/// lose the day's rollover.
pub async fn run(queue: Arc<dyn QueueBackend>, schedules: Vec<Scheduled>, stop: CancellationToken) {
    if schedules.is_empty() {
        return;
    }
    let mut last = Utc::now();
    loop {
        let Some((tick, due)) = schedules
            .iter()
            .filter_map(|s| s.next_after(last).map(|t| (t, s)))
            .min_by_key(|(t, _)| *t)
        else {
            return;
        };
        let wait = (tick - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let mut backoff = std::time::Duration::from_millis(500);
        loop {
            match due.fire(queue.as_ref(), tick).await {
                Ok(PushOutcome::Created(id)) => {
                    tracing::info!(schedule = %due.name, %tick, job = %id, "scheduled job enqueued");
                    break;
                }
                Ok(PushOutcome::Duplicate(id)) => {
                    tracing::debug!(schedule = %due.name, %tick, job = %id, "tick already enqueued by another scheduler");
                    break;
                }
                Err(e) if (Utc::now() - tick).num_seconds() < 60 => {
                    tracing::warn!(schedule = %due.name, %tick, error = %e, "cannot enqueue the tick; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
                }
                Err(e) => {
                    tracing::error!(schedule = %due.name, %tick, error = %e, "tick lost: the queue stayed unreachable for a minute");
                    break;
                }
            }
        }
        last = tick;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_have_stable_keys_and_dated_payloads() {
        let s = product(&Settings::default()).expect("valid");
        let r = &s[0];
        let t0 = DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let tick = r.next_after(t0).expect("a tick");
        assert_eq!(tick.to_rfc3339(), "2026-11-28T03:00:00+00:00");
        let job = r.job_for(tick);
        assert_eq!(
            job.idempotency_key.as_deref(),
            Some("schedule:exercice_rollover:1795834800")
        );
        assert_eq!(job.payload["as_of"], "2026-11-28");
        assert_eq!(job.payload["days_before_end"], 30);
        assert!(Scheduled::new("x", "every day", |_| -> NewJob { panic!("never fired") }).is_err());
    }

    #[test]
    fn each_drop_folder_gets_its_scan_schedule() {
        let mut settings = Settings::default();
        settings
            .imports
            .schedules
            .push(crate::config::ImportSchedule {
                name: "nuit".into(),
                cron: "0 */5 * * * *".into(),
                firm: "f".into(),
                folder: "/srv/drop".into(),
                partial: false,
                provider: None,
                settle_secs: 10,
            });
        let s = product(&settings).expect("valid");
        let scan = s
            .iter()
            .find(|s| s.name == "import:nuit")
            .expect("scheduled");
        let t0 = DateTime::parse_from_rfc3339("2026-11-27T12:01:00Z")
            .expect("time")
            .with_timezone(&Utc);
        // The next multiple of five minutes: 12:05.
        let job = scan.job_for(scan.next_after(t0).expect("a tick"));
        assert_eq!(job.kind, "import_scan");
        assert_eq!(job.payload, serde_json::json!({ "schedule": "nuit" }));
        assert_eq!(
            job.idempotency_key.as_deref(),
            Some("schedule:import:nuit:1795781100")
        );
        settings.imports.schedules[0].cron = "bientôt".into();
        assert!(product(&settings).is_err());
    }
}
