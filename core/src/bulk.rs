//! Acting on every job a filter matches — retry, kill, or move the run
//! time — for the command line, the admin API and the dashboard alike.
//!
//! A bulk action always has a filter (an empty one would be "every job",
//! which no operator means), reads its matches through the queue's indexes
//! ([`JobFilter`]), and says first what it would do: the dry run counts the
//! matches and how many of them the action applies to. Each job is then
//! changed by the backend's own single-job operation, which re-checks its
//! status: a job that finished meanwhile is skipped, never clobbered.

use serde::Serialize;

use crate::catalogue::Catalogue;
use crate::clock::now_ms;
use crate::job::{JobFilter, JobRecord, JobStatus};
use crate::queue::{AdminOutcome, QueueBackend, QueueError};

/// Most jobs one bulk action touches; more matches are reported, and the
/// operator runs it again (a retried or killed job no longer matches a
/// filter on its old status).
pub const MAX_BULK: usize = 10_000;

/// What to do with each matching job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Dead or waiting jobs run now (a spent budget gets one more attempt).
    Retry,
    /// Waiting or running jobs go to the dead set with this reason.
    Kill { reason: String },
    /// Waiting jobs run at this time (epoch ms) instead.
    Reschedule { run_at_ms: i64 },
}

impl Action {
    /// The audit trail's name of the action.
    pub fn audit_action(&self) -> &'static str {
        match self {
            Action::Retry => crate::audit::action::BULK_RETRY,
            Action::Kill { .. } => crate::audit::action::BULK_KILL,
            Action::Reschedule { .. } => crate::audit::action::BULK_RESCHEDULE,
        }
    }

    /// Whether the action applies to a job in `status`.
    pub fn applies_to(&self, status: JobStatus) -> bool {
        let waiting = matches!(
            status,
            JobStatus::Pending | JobStatus::Scheduled | JobStatus::Retrying
        );
        match self {
            Action::Retry => waiting || status == JobStatus::Dead,
            Action::Kill { .. } => waiting || status == JobStatus::Running,
            Action::Reschedule { .. } => waiting,
        }
    }
}

/// What a bulk action found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Jobs the filter matched (at most [`MAX_BULK`]).
    pub matched: usize,
    /// Of those, the ones whose status the action applies to.
    pub eligible: usize,
    /// Jobs changed (0 on a dry run).
    pub applied: usize,
    /// Eligible jobs that changed status before their turn came.
    pub skipped: usize,
    /// More than [`MAX_BULK`] jobs matched: run it again for the rest.
    pub more: bool,
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error(
        "a bulk action needs a filter: give at least one of kind, status, firm, client, trace or error"
    )]
    NoFilter,
    #[error("{field}: {problem}")]
    Field {
        field: &'static str,
        problem: String,
    },
    #[error(transparent)]
    Kind(#[from] crate::catalogue::CatalogueError),
    #[error(
        "run at {0:?}: give `now`, a delay ahead (30m, 12h, 2d), a date (2026-12-24) or an RFC 3339 time"
    )]
    RunAt(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl BulkError {
    pub fn is_user_error(&self) -> bool {
        !matches!(self, BulkError::Queue(_))
    }
}

/// The moment `--run-at` names: `now`, or a typed moment ahead
/// ([`crate::when`]).
pub fn parse_run_at(s: &str) -> Result<i64, BulkError> {
    if s.trim() == "now" {
        return Ok(now_ms());
    }
    crate::when::parse(s, crate::when::Direction::Ahead).ok_or_else(|| {
        BulkError::RunAt(crate::text::for_terminal(&s.chars().take(40).collect::<String>()).into())
    })
}

/// Checks what an operator typed for a bulk action: not empty, a known
/// kind, sane text ([`check_text`]).
pub fn check(filter: &JobFilter) -> Result<(), BulkError> {
    if filter.is_empty() {
        return Err(BulkError::NoFilter);
    }
    if let Some(kind) = &filter.kind {
        Catalogue::product().spec(kind)?;
    }
    check_text(filter)
}

/// The filter's texts, for listings too: no control character (PostgreSQL
/// refuses NUL in text), none blank, none longer than [`crate::text::MAX_TEXT`].
pub fn check_text(filter: &JobFilter) -> Result<(), BulkError> {
    let fields = [
        ("kind", &filter.kind),
        ("firm", &filter.group),
        ("client", &filter.subject),
        ("trace", &filter.trace_id),
        ("error", &filter.error),
    ];
    for (field, value) in fields {
        if let Some(v) = value {
            if v.is_empty() {
                return Err(BulkError::Field {
                    field,
                    problem: "empty; leave it out to match any".into(),
                });
            }
            crate::text::check(v, crate::text::MAX_TEXT).map_err(|e| BulkError::Field {
                field,
                problem: e.to_string(),
            })?;
        }
    }
    Ok(())
}

/// The filter as the audit trail and the command line show it.
pub fn describe(filter: &JobFilter) -> String {
    let mut parts = Vec::new();
    let fields = [
        ("kind", &filter.kind),
        ("firm", &filter.group),
        ("client", &filter.subject),
        ("trace", &filter.trace_id),
        ("error~", &filter.error),
    ];
    if let Some(s) = filter.status {
        parts.push(format!("status={s}"));
    }
    for (name, value) in fields {
        if let Some(v) = value {
            parts.push(format!("{name}={v:?}"));
        }
    }
    parts.join(" ")
}

/// The jobs `filter` matches now (at most [`MAX_BULK`]), and whether more do.
pub async fn matches(
    q: &dyn QueueBackend,
    filter: &JobFilter,
) -> Result<(Vec<JobRecord>, bool), BulkError> {
    check(filter)?;
    let mut found = q
        .list(&JobFilter {
            limit: MAX_BULK + 1,
            ..filter.clone()
        })
        .await?;
    let more = found.len() > MAX_BULK;
    found.truncate(MAX_BULK);
    Ok((found, more))
}

/// Applies `action` to every job `filter` matches, or with `dry_run`
/// only counts them.
pub async fn run(
    q: &dyn QueueBackend,
    filter: &JobFilter,
    action: &Action,
    dry_run: bool,
) -> Result<Report, BulkError> {
    let (found, more) = matches(q, filter).await?;
    let eligible: Vec<&JobRecord> = found
        .iter()
        .filter(|j| action.applies_to(j.status))
        .collect();
    let mut report = Report {
        matched: found.len(),
        eligible: eligible.len(),
        applied: 0,
        skipped: 0,
        more,
        dry_run,
    };
    if dry_run {
        return Ok(report);
    }
    for job in eligible {
        let outcome = match action {
            Action::Retry => q.retry(&job.id).await?,
            Action::Kill { reason } => q.kill(&job.id, reason).await?,
            Action::Reschedule { run_at_ms } => q.reschedule(&job.id, *run_at_ms).await?,
        };
        match outcome {
            AdminOutcome::Applied => report.applied += 1,
            AdminOutcome::NotFound | AdminOutcome::Refused(_) => report.skipped += 1,
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_is_not_a_filter() {
        let none = JobFilter {
            limit: 10,
            ..JobFilter::default()
        };
        assert!(matches!(check(&none), Err(BulkError::NoFilter)));
        let blank = JobFilter {
            subject: Some(String::new()),
            ..JobFilter::default()
        };
        assert!(matches!(
            check(&blank),
            Err(BulkError::Field {
                field: "client",
                ..
            })
        ));
        let typo = JobFilter {
            kind: Some("siret_chek".into()),
            ..JobFilter::default()
        };
        assert!(check(&typo).unwrap_err().to_string().contains("siret_chek"));
    }

    #[test]
    fn each_action_applies_to_the_statuses_it_can_change() {
        use JobStatus::*;
        let kill = Action::Kill { reason: "r".into() };
        let later = Action::Reschedule { run_at_ms: 0 };
        let table: Vec<(JobStatus, bool, bool, bool)> = JobStatus::ALL
            .into_iter()
            .map(|s| {
                (
                    s,
                    Action::Retry.applies_to(s),
                    kill.applies_to(s),
                    later.applies_to(s),
                )
            })
            .collect();
        assert_eq!(
            table,
            vec![
                (Pending, true, true, true),
                (Scheduled, true, true, true),
                (Running, false, true, false),
                (Retrying, true, true, true),
                (Done, false, false, false),
                (Dead, true, false, false),
            ]
        );
    }

    #[test]
    fn run_at_is_now_or_a_moment_ahead() {
        let before = now_ms();
        assert!(parse_run_at("now").unwrap() >= before);
        assert!(parse_run_at("2h").unwrap() >= before + 7_200_000);
        assert!(matches!(parse_run_at("tomorrow"), Err(BulkError::RunAt(_))));
    }

    #[test]
    fn the_description_names_every_field() {
        let f = JobFilter {
            kind: Some("invitation".into()),
            status: Some(JobStatus::Dead),
            group: Some("f1".into()),
            error: Some("SMTP".into()),
            ..JobFilter::default()
        };
        assert_eq!(
            describe(&f),
            r#"status=dead kind="invitation" firm="f1" error~="SMTP""#
        );
    }
}
