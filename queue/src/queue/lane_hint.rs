//! The one-lane shortcut of the SQL fetches.
//!
//! A fair fetch first finds which (lane, group) pairs of a kind have due
//! work, then takes from each in turn. Most of the time there is one pair
//! (one firm's import, or jobs of no firm), and the survey then costs more
//! than the jobs it leases: on SQLite two index probes per fetch, on
//! PostgreSQL the planning of one recursive statement (measured: the drain
//! rate fell by ~40%, docs/benchmarks.md "Fair share"). So a fetch that
//! found a single pair remembers it, and the fetches that follow take that
//! pair's oldest jobs with the plain single statement, until
//!
//! - the kind is woken (`Wakers`: a push, a retry, a release in this
//!   process, or a PostgreSQL notification from another one: new work,
//!   maybe another firm's), or
//! - the pair runs short of the jobs asked for, or
//! - [`HINT_TTL`] passes (jobs that fall due by time, or pushes of other
//!   SQLite processes, which send no wake-up).
//!
//! Either way the next fetch surveys again. A firm whose job arrives while
//! another's pair is remembered therefore waits at most [`HINT_TTL`] more.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a survey that found one pair is trusted without a wake-up.
/// Short next to the interactive promise (a client's lookup within 5 s,
/// issue 18) and long next to a fetch (a few milliseconds under load).
pub const HINT_TTL: Duration = Duration::from_millis(250);

/// A (lane, group) pair: `bulk` as stored (0 or 1) and the group, `""` for
/// none, as the SQL fetches compare them.
pub type LaneKey = (i64, String);

#[derive(Debug, Default)]
pub struct LaneHints {
    by_kind: Mutex<HashMap<String, Hint>>,
}

#[derive(Debug)]
struct Hint {
    lane: LaneKey,
    /// `Wakers::wakes` when the survey began.
    wakes: u64,
    until: Instant,
}

impl LaneHints {
    /// The single pair of `kind` the last survey found, if no wake-up
    /// (`wakes_now`) and no [`HINT_TTL`] came since.
    pub fn one_lane(&self, kind: &str, wakes_now: u64) -> Option<LaneKey> {
        let mut map = self.by_kind.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(kind) {
            Some(h) if h.wakes == wakes_now && Instant::now() < h.until => Some(h.lane.clone()),
            Some(_) => {
                map.remove(kind);
                None
            }
            None => None,
        }
    }

    /// What a survey that began at `wakes` found: remembered when it is
    /// one pair, forgotten otherwise.
    pub fn observe(&self, kind: &str, lanes: &[LaneKey], wakes: u64) {
        let mut map = self.by_kind.lock().unwrap_or_else(|e| e.into_inner());
        match lanes {
            [lane] => {
                map.insert(
                    kind.to_string(),
                    Hint {
                        lane: lane.clone(),
                        wakes,
                        until: Instant::now() + HINT_TTL,
                    },
                );
            }
            _ => {
                map.remove(kind);
            }
        }
    }

    /// The remembered pair ran short: survey again.
    pub fn forget(&self, kind: &str) {
        let mut map = self.by_kind.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(g: &str) -> LaneKey {
        (1, g.to_string())
    }

    #[test]
    fn one_pair_is_remembered_until_a_wake_up() {
        let hints = LaneHints::default();
        hints.observe("k", &[lane("a")], 3);
        assert_eq!(hints.one_lane("k", 3), Some(lane("a")));
        assert_eq!(hints.one_lane("other", 3), None);
        assert_eq!(hints.one_lane("k", 4), None, "woken since the survey");
        assert_eq!(hints.one_lane("k", 3), None, "forgotten once stale");
    }

    #[test]
    fn several_pairs_or_none_are_not_remembered() {
        let hints = LaneHints::default();
        hints.observe("k", &[lane("a")], 0);
        hints.observe("k", &[lane("a"), lane("b")], 0);
        assert_eq!(hints.one_lane("k", 0), None);
        hints.observe("k", &[lane("a")], 0);
        hints.observe("k", &[], 0);
        assert_eq!(hints.one_lane("k", 0), None);
        hints.observe("k", &[lane("a")], 0);
        hints.forget("k");
        assert_eq!(hints.one_lane("k", 0), None);
    }

    #[test]
    fn a_remembered_pair_expires() {
        let hints = LaneHints::default();
        hints.observe("k", &[lane("a")], 0);
        if let Some(h) = hints
            .by_kind
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut("k")
        {
            h.until = Instant::now();
        }
        assert_eq!(hints.one_lane("k", 0), None);
    }
}
