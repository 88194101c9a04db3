//! What the pool counts, for Prometheus: attempts started and finished by
//! kind and outcome, and each attempt's duration. An application adds them
//! to its own registry with [`register`]. Labels are kinds and outcomes,
//! never a job id.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindOutcome {
    pub kind: String,
    /// `done`, `retried`, `dead`, `snoozed`, `handed_back`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    pub kind: String,
}

fn seconds_histogram() -> Histogram {
    // 5 ms … ~80 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

struct PoolMetrics {
    jobs: Family<KindOutcome, Counter>,
    job_seconds: Family<Kind, Histogram, fn() -> Histogram>,
    attempts: Family<Kind, Counter>,
}

static POOL: LazyLock<PoolMetrics> = LazyLock::new(|| PoolMetrics {
    jobs: Family::default(),
    job_seconds: Family::new_with_constructor(seconds_histogram),
    attempts: Family::default(),
});

/// Adds the pool's metrics to `registry` (as `jobs`, `job_duration_seconds`
/// and `job_attempts`, under the registry's prefix).
pub fn register(registry: &mut Registry) {
    registry.register(
        "jobs",
        "Job attempts finished in this process, by kind and outcome",
        POOL.jobs.clone(),
    );
    registry.register(
        "job_duration_seconds",
        "Time of one attempt, by kind",
        POOL.job_seconds.clone(),
    );
    registry.register(
        "job_attempts",
        "Attempts started in this process, by kind",
        POOL.attempts.clone(),
    );
}

/// The outcomes an attempt ends in (the `outcome` label).
const OUTCOMES: [&str; 5] = ["done", "retried", "dead", "snoozed", "handed_back"];

/// One kind's series, looked up once when its worker starts: an attempt
/// then touches atomics only, with no label strings to build, lock or hash
/// per job (the hot path of a drain). The series exist from the start, at 0.
#[derive(Clone)]
pub struct KindMetrics {
    kind: String,
    attempts: Counter,
    seconds: Histogram,
    outcomes: [Counter; OUTCOMES.len()],
}

impl KindMetrics {
    pub fn new(kind: &str) -> KindMetrics {
        let label = Kind {
            kind: kind.to_string(),
        };
        KindMetrics {
            kind: kind.to_string(),
            attempts: POOL.attempts.get_or_create(&label).clone(),
            seconds: POOL.job_seconds.get_or_create(&label).clone(),
            outcomes: OUTCOMES.map(|outcome| {
                POOL.jobs
                    .get_or_create(&KindOutcome {
                        kind: kind.to_string(),
                        outcome: outcome.to_string(),
                    })
                    .clone()
            }),
        }
    }

    pub fn attempt_started(&self) {
        self.attempts.inc();
    }

    pub fn job_finished(&self, outcome: &str, seconds: f64) {
        match OUTCOMES.iter().position(|o| *o == outcome) {
            Some(i) => {
                self.outcomes[i].inc();
                self.seconds.observe(seconds);
            }
            None => job_finished(&self.kind, outcome, seconds),
        }
    }
}

pub fn job_finished(kind: &str, outcome: &str, seconds: f64) {
    POOL.jobs
        .get_or_create(&KindOutcome {
            kind: kind.to_string(),
            outcome: outcome.to_string(),
        })
        .inc();
    POOL.job_seconds
        .get_or_create(&Kind {
            kind: kind.to_string(),
        })
        .observe(seconds);
}

pub fn attempt_started(kind: &str) {
    POOL.attempts
        .get_or_create(&Kind {
            kind: kind.to_string(),
        })
        .inc();
}
