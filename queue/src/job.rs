//! The job as every backend stores it, and the outcome vocabulary handlers use.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where a job stands. "Scheduled" and "retrying" are both waiting for their
/// run time; they differ by whether the job has already been attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Due now, waiting for a worker.
    Pending,
    /// Due later, never attempted.
    Scheduled,
    /// Held by a worker under a lease.
    Running,
    /// Failed at least once, due again later.
    Retrying,
    /// Finished successfully.
    Done,
    /// Failed permanently, exhausted its attempts, or killed by an operator.
    Dead,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Pending,
        JobStatus::Scheduled,
        JobStatus::Running,
        JobStatus::Retrying,
        JobStatus::Done,
        JobStatus::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Scheduled => "scheduled",
            JobStatus::Running => "running",
            JobStatus::Retrying => "retrying",
            JobStatus::Done => "done",
            JobStatus::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job to be enqueued.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewJob {
    pub kind: String,
    pub payload: serde_json::Value,
    /// When to run it first (epoch ms); `None` means now.
    pub run_at_ms: Option<i64>,
    pub max_attempts: u32,
    /// The same key twice enqueues once; the second push returns the first job's id.
    pub idempotency_key: Option<String>,
    /// Correlates the job with the request that created it in logs.
    pub trace_id: Option<String>,
    /// Whom the job works for (a tenant; Dossier: the firm). Operators
    /// find, count and act on a group's jobs by it.
    #[serde(default)]
    pub group: Option<String>,
    /// What the job works on (Dossier: the client's id), so that every job
    /// of one record can be found without scanning the backlog.
    #[serde(default)]
    pub subject: Option<String>,
    /// One of a batch (an import): each fetch serves interactive jobs
    /// first, then bulk ones, every group with due work in turn within
    /// each (see [`FAIR_LANES`]).
    #[serde(default)]
    pub bulk: bool,
}

/// How many (lane, group) pairs with due work one fetch serves in turn. A
/// kind with more — over 256 firms importing at once — serves the first
/// 256 in group order each fetch until one of them runs dry.
pub const FAIR_LANES: usize = 256;

/// Which due jobs one fetch takes, given each (lane, group)'s oldest due
/// jobs (`candidates`, one list per pair, each in run order, interactive
/// pairs first): the pairs take turns, one job each per round, so a group
/// with one job waiting is served in the same fetch as a group with ten
/// thousand; interactive jobs all come before bulk ones.
pub fn fair_pick<T: Clone>(candidates: &[(bool, Vec<T>)], limit: usize) -> Vec<T> {
    let mut picked = Vec::with_capacity(limit);
    for bulk in [false, true] {
        let lanes: Vec<&Vec<T>> = candidates
            .iter()
            .filter(|(b, _)| *b == bulk)
            .map(|(_, c)| c)
            .collect();
        let longest = lanes.iter().map(|c| c.len()).max().unwrap_or(0);
        for turn in 0..longest {
            for lane in &lanes {
                if picked.len() == limit {
                    return picked;
                }
                if let Some(job) = lane.get(turn) {
                    picked.push(job.clone());
                }
            }
        }
    }
    picked
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "id", rename_all = "snake_case")]
pub enum PushOutcome {
    Created(String),
    /// A job with the same idempotency key already exists: its id.
    Duplicate(String),
}

impl PushOutcome {
    pub fn id(&self) -> &str {
        match self {
            PushOutcome::Created(id) | PushOutcome::Duplicate(id) => id,
        }
    }
}

/// One failed attempt, kept for operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    pub attempt: u32,
    pub at_ms: i64,
    /// `transient`, `permanent`, `panic`, `timeout`, `lost` (worker died) or `killed`.
    pub class: String,
    pub message: String,
}

/// A stored job, as listings and `jobs show` see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub status: JobStatus,
    pub attempts: u32,
    pub max_attempts: u32,
    pub run_at_ms: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_expires_at_ms: Option<i64>,
    pub idempotency_key: Option<String>,
    pub trace_id: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub bulk: bool,
    pub last_error: Option<String>,
    pub errors: Vec<AttemptError>,
    /// What the handler returned on success.
    pub result: Option<serde_json::Value>,
}

/// A job handed to a worker: enough to run it, nothing more.
#[derive(Debug, Clone)]
pub struct LeasedJob {
    pub id: String,
    pub kind: String,
    pub payload: serde_json::Value,
    /// This attempt's number, from 1.
    pub attempt: u32,
    pub max_attempts: u32,
    pub trace_id: Option<String>,
}

/// How a handler says it failed. The class decides what the runtime does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Worth trying again (server down, timeout, 429…). `retry_after`
    /// overrides the backoff, e.g. with an HTTP `Retry-After`.
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Will never succeed (bad input, not found, forbidden): straight to the dead set.
    #[error("{message}")]
    Permanent { message: String },
    /// Not a failure: nothing was attempted (e.g. the shared quota is
    /// exhausted for a while). The job runs again after `after` and the
    /// attempt is not counted.
    #[error("snoozed for {after:?}: {reason}")]
    Snooze { reason: String, after: Duration },
}

impl JobError {
    pub fn transient(message: impl Into<String>) -> Self {
        JobError::Transient {
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn retry_after(message: impl Into<String>, after: Duration) -> Self {
        JobError::Transient {
            message: message.into(),
            retry_after: Some(after),
        }
    }

    pub fn snooze(reason: impl Into<String>, after: Duration) -> Self {
        JobError::Snooze {
            reason: reason.into(),
            after,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        JobError::Permanent {
            message: message.into(),
        }
    }
}

/// Counts of one queue, as `dossier queues` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    pub kind: String,
    pub pending: u64,
    pub scheduled: u64,
    pub running: u64,
    pub retrying: u64,
    pub done: u64,
    pub dead: u64,
    /// Age of the oldest job due now and not yet picked up.
    pub oldest_pending_age_ms: Option<i64>,
    /// Set when an operator paused the kind ([`crate::queue::counts_and_pauses`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<Pause>,
}

/// One group's jobs due now and not yet fetched, every kind together:
/// what `dossier queues` and the dashboard show per firm.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GroupWaiting {
    /// `None`: the jobs of no group.
    pub group: Option<String>,
    pub interactive: u64,
    pub bulk: u64,
}

impl GroupWaiting {
    pub fn total(&self) -> u64 {
        self.interactive + self.bulk
    }
}

/// The groups with the most waiting first (ties by name), at most `limit`.
pub fn most_waiting_first(mut groups: Vec<GroupWaiting>, limit: usize) -> Vec<GroupWaiting> {
    groups.retain(|g| g.total() > 0);
    groups.sort_by(|a, b| {
        b.total()
            .cmp(&a.total())
            .then_with(|| a.group.cmp(&b.group))
    });
    groups.truncate(limit);
    groups
}

impl QueueCounts {
    /// Jobs that still have to run.
    pub fn outstanding(&self) -> u64 {
        self.pending + self.scheduled + self.running + self.retrying
    }
}

/// A kind an operator paused: no worker fetches its jobs until it is
/// resumed (running ones finish; pushes and schedules still enqueue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    pub kind: String,
    pub reason: String,
    /// Who paused it: a token's name, or the OS user of the command line.
    pub by: String,
    pub at_ms: i64,
}

/// A kind's concurrency set by an operator, per worker process: replaces
/// the configured `concurrency` on every worker, live and across restarts,
/// until cleared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scale {
    pub kind: String,
    pub concurrency: u32,
    pub by: String,
    pub at_ms: i64,
}

/// The most slots one kind may have in one worker process.
pub const MAX_CONCURRENCY: u32 = 1024;

/// A worker process as seen through its heartbeats.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub name: String,
    pub host: String,
    pub pid: u32,
    pub kinds: Vec<String>,
    pub started_at_ms: i64,
    pub last_heartbeat_ms: i64,
    pub running: u64,
    /// Each kind's slots in this process now (configured or scaled).
    #[serde(default)]
    pub concurrency: std::collections::BTreeMap<String, u32>,
}

/// A filter for job listings and bulk actions: every field set must match.
///
/// Each backend keeps an index per field, so a filter reads the jobs it
/// names, not the backlog: `group`, `subject` and `trace_id` are exact,
/// indexed matches; `error` (a substring of the last error, ASCII letters
/// matched regardless of case, as every backend can) reads only the jobs
/// that have failed, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub kind: Option<String>,
    pub status: Option<JobStatus>,
    pub group: Option<String>,
    pub subject: Option<String>,
    pub trace_id: Option<String>,
    pub error: Option<String>,
    pub limit: usize,
}

impl JobFilter {
    /// Whether `job` matches: the backends' final check, and what tests
    /// compare their answers with.
    pub fn matches(&self, job: &JobRecord) -> bool {
        fn eq(want: &Option<String>, have: &Option<String>) -> bool {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        }
        self.kind.as_ref().is_none_or(|k| *k == job.kind)
            && self.status.is_none_or(|s| s == job.status)
            && eq(&self.group, &job.group)
            && eq(&self.subject, &job.subject)
            && eq(&self.trace_id, &job.trace_id)
            && self.error.as_ref().is_none_or(|e| {
                job.last_error
                    .as_ref()
                    .is_some_and(|l| l.to_ascii_lowercase().contains(&e.to_ascii_lowercase()))
            })
    }

    /// Whether anything but the limit narrows it down.
    pub fn is_empty(&self) -> bool {
        *self
            == JobFilter {
                limit: self.limit,
                ..JobFilter::default()
            }
    }
}

#[cfg(test)]
mod tests {
    use super::fair_pick;

    #[test]
    fn groups_take_turns_and_interactive_jobs_come_first() {
        let lanes = vec![
            (false, vec!["a1", "a2", "a3", "a4"]),
            (false, vec!["b1"]),
            (true, vec!["i1", "i2"]),
            (true, vec!["j1"]),
        ];
        assert_eq!(fair_pick(&lanes, 3), vec!["a1", "b1", "a2"]);
        assert_eq!(
            fair_pick(&lanes, 10),
            vec!["a1", "b1", "a2", "a3", "a4", "i1", "j1", "i2"]
        );
        assert_eq!(fair_pick::<&str>(&[], 5), Vec::<&str>::new());
    }
}
