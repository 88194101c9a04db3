//! A moment as a person types it on a command line or in a query: a delay
//! (`90d`, `12h`, `30m`, with or without a `+`), a date (`2027-03-31`,
//! meaning 00:00 UTC that day) or an RFC 3339 time. Token expiries count
//! delays ahead, `--since` counts them back. (`--run-at` keeps its own
//! stricter form, `+30s` or RFC 3339: see `submit::parse_run_at`.)

use crate::clock::now_ms;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Ahead,
    Back,
}

/// Epoch ms, or `None` when `s` is none of the three forms.
pub fn parse(s: &str, direction: Direction) -> Option<i64> {
    let s = s.trim();
    let delay = s.strip_prefix('+').unwrap_or(s);
    if let Some(unit) = delay
        .chars()
        .last()
        .filter(|c| matches!(c, 'd' | 'h' | 'm'))
    {
        let n: i64 = delay[..delay.len() - 1].parse().ok()?;
        let ms = n.checked_mul(match unit {
            'd' => 86_400_000,
            'h' => 3_600_000,
            _ => 60_000,
        })?;
        return Some(match direction {
            Direction::Ahead => now_ms().saturating_add(ms),
            Direction::Back => now_ms().saturating_sub(ms),
        });
    }
    if let Ok(day) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(day.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis());
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_dates_and_times() {
        let now = now_ms();
        let ahead = parse("90d", Direction::Ahead).expect("90d");
        assert!((ahead - now - 90 * 86_400_000).abs() < 5_000);
        let back = parse("+12h", Direction::Back).expect("12h");
        assert!((now - back - 12 * 3_600_000).abs() < 5_000);
        assert_eq!(
            parse("2026-12-01", Direction::Back),
            chrono::NaiveDate::from_ymd_opt(2026, 12, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc().timestamp_millis())
        );
        assert!(parse("2026-12-01T08:00:00+01:00", Direction::Ahead).is_some());
        for bad in ["", "d", "xd", "7w", "yesterday", "9999999999999999999d"] {
            assert_eq!(parse(bad, Direction::Ahead), None, "{bad}");
        }
    }
}
