//! The product's schedules: the exercice rollover, the invitations'
//! housekeeping, the retention of people's data and each drop folder's scan, on the pool's apalis-cron
//! workers (`dossier_queue::schedule`). A missed rollover tick is harmless:
//! its lead time is 30 days.

use crate::config::Settings;
use crate::job::NewJob;
use crate::jobs::exercice_rollover::{self, ExerciceRollover};

pub use dossier_queue::schedule::{ScheduleError, Scheduled, mount, run};

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
        group: None,
        subject: None,
        bulk: false,
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
            group: None,
            subject: None,
            bulk: false,
        },
    )?;
    let retention_attempts = settings
        .queue
        .kind(crate::jobs::retention::KIND)
        .max_attempts;
    let periods = crate::jobs::retention::Retention::from_settings(&settings.retention);
    let retention = Scheduled::new(
        crate::jobs::retention::KIND,
        &settings.retention.cron,
        move |_| NewJob {
            kind: crate::jobs::retention::KIND.to_string(),
            payload: serde_json::to_value(&periods).unwrap_or_default(),
            run_at_ms: None,
            max_attempts: retention_attempts,
            idempotency_key: None,
            trace_id: None,
            group: None,
            subject: None,
            bulk: false,
        },
    )?;
    let mut all = vec![rollover, housekeeping, retention];
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
                group: None,
                subject: None,
                bulk: false,
            },
        )?);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

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
