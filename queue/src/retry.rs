//! Retry policy: exponential backoff with jitter, and the decision taken
//! after a failed attempt.
//!
//! The delay is stored durably as the job's next run time, so no worker slot
//! is held while a job waits (apalis's in-process retry holds one).

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::job::JobError;

/// Per-kind retry settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub backoff_base_ms: u64,
    /// No delay grows past this.
    pub backoff_cap_ms: u64,
    /// Share of the delay taken off at random (0 to 1), so that jobs failing
    /// together do not come back together.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            backoff_base_ms: 1_000,
            backoff_cap_ms: 3_600_000,
            jitter: 0.2,
        }
    }
}

/// What happens to a job after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Run again no earlier than this delay from now.
    RetryIn(Duration),
    /// Give up: to the dead set.
    Dead,
}

impl RetryPolicy {
    /// The backoff before attempt `failed_attempt + 1`, without jitter:
    /// `base × 2^(failed_attempt − 1)`, capped.
    pub fn nominal_delay(&self, failed_attempt: u32) -> Duration {
        let exp = failed_attempt.saturating_sub(1).min(40);
        let ms = self
            .backoff_base_ms
            .saturating_mul(1u64 << exp)
            .min(self.backoff_cap_ms);
        Duration::from_millis(ms)
    }

    /// The delay with jitter applied: within `[nominal × (1 − jitter), nominal]`.
    pub fn delay(&self, failed_attempt: u32) -> Duration {
        let nominal = self.nominal_delay(failed_attempt);
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 || nominal.is_zero() {
            return nominal;
        }
        let cut: f64 = rand::rng().random_range(0.0..=jitter);
        nominal.mul_f64(1.0 - cut)
    }

    /// Decides what follows a failed attempt. A handler's `retry_after` wins
    /// over the backoff (a registry's `Retry-After` is the one number that
    /// is known to be right), but never beyond the attempt budget.
    pub fn next_step(&self, attempt: u32, max_attempts: u32, error: &JobError) -> NextStep {
        match error {
            JobError::Permanent { .. } => NextStep::Dead,
            // The runtime hands a snoozed job back uncounted; this arm only
            // keeps the decision total.
            JobError::Snooze { after, .. } => NextStep::RetryIn(*after),
            JobError::Transient { .. } if attempt >= max_attempts => NextStep::Dead,
            JobError::Transient {
                retry_after: Some(after),
                ..
            } => NextStep::RetryIn(*after),
            JobError::Transient { .. } => NextStep::RetryIn(self.delay(attempt)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            backoff_base_ms: 100,
            backoff_cap_ms: 1_000,
            jitter: 0.25,
        }
    }

    #[test]
    fn nominal_delay_doubles_then_caps() {
        let p = policy();
        let got: Vec<u128> = (1..=6).map(|a| p.nominal_delay(a).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jittered_delay_stays_within_bounds() {
        let p = policy();
        for attempt in 1..=6 {
            let nominal = p.nominal_delay(attempt);
            for _ in 0..200 {
                let d = p.delay(attempt);
                assert!(d <= nominal, "{d:?} > {nominal:?}");
                assert!(d >= nominal.mul_f64(0.75), "{d:?} < 75% of {nominal:?}");
            }
        }
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let p = RetryPolicy {
            backoff_cap_ms: u64::MAX,
            ..policy()
        };
        assert_eq!(p.nominal_delay(u32::MAX), Duration::from_millis(100 << 40));
    }

    #[test]
    fn permanent_errors_and_exhausted_attempts_go_dead() {
        let p = policy();
        assert_eq!(
            p.next_step(1, 5, &JobError::permanent("no")),
            NextStep::Dead
        );
        assert_eq!(p.next_step(5, 5, &JobError::transient("x")), NextStep::Dead);
        assert!(matches!(
            p.next_step(4, 5, &JobError::transient("x")),
            NextStep::RetryIn(_)
        ));
    }

    #[test]
    fn retry_after_overrides_backoff() {
        let p = policy();
        let e = JobError::retry_after("429", Duration::from_secs(7));
        assert_eq!(
            p.next_step(1, 5, &e),
            NextStep::RetryIn(Duration::from_secs(7))
        );
        assert_eq!(p.next_step(5, 5, &e), NextStep::Dead);
    }
}
