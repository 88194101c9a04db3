//! Fiscal-year (exercice) dates: default end, the rules a new exercice must
//! satisfy, the months it touches and the names of its folders. Pure: no
//! database, so every rule is tested on its own.

use chrono::{Datelike, Months, NaiveDate};
use serde::{Deserialize, Serialize};

/// French month names, accents kept: folder names are read by people.
pub const MONTHS_FR: [&str; 12] = [
    "Janvier",
    "Février",
    "Mars",
    "Avril",
    "Mai",
    "Juin",
    "Juillet",
    "Août",
    "Septembre",
    "Octobre",
    "Novembre",
    "Décembre",
];

/// Longest exercice, in months.
pub const MAX_MONTHS: u32 = 24;

/// An exercice's dates, both days included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Span {
    pub start: NaiveDate,
    pub end: NaiveDate,
}

fn last_day_of_month(d: NaiveDate) -> bool {
    d.succ_opt().is_none_or(|n| n.month() != d.month())
}

/// The last day of a period of `months` months starting on `start`.
///
/// Counted from the day before the start, so that month ends stay month
/// ends: 2024-03-01 + 12 months ends 2025-02-28, 2023-03-01 ends 2024-02-29,
/// and 2024-02-29 ends 2025-02-28 (not the 27th, as "start + 12 months − 1
/// day" with day clamping would give).
pub fn period_end(start: NaiveDate, months: u32) -> Option<NaiveDate> {
    let before = start.pred_opt()?;
    let end = before.checked_add_months(Months::new(months))?;
    if last_day_of_month(before) {
        // Clamping already gives a month end when the target month is
        // shorter; a longer target month needs its own last day.
        let next_month = end.with_day(1)?.checked_add_months(Months::new(1))?;
        next_month.pred_opt()
    } else {
        Some(end)
    }
}

/// start + 12 months − 1 day, month ends kept.
pub fn default_end(start: NaiveDate) -> Option<NaiveDate> {
    period_end(start, 12)
}

/// The calendar months (year, month) the span touches, partial ones included.
pub fn months_touched(span: Span) -> Vec<(i32, u32)> {
    let mut out = Vec::new();
    let (mut y, mut m) = (span.start.year(), span.start.month());
    let last = (span.end.year(), span.end.month());
    while (y, m) <= last {
        out.push((y, m));
        (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    }
    out
}

/// `2026-02 Février`.
pub fn month_folder_name(year: i32, month: u32) -> String {
    let name = MONTHS_FR
        .get(month.saturating_sub(1) as usize)
        .copied()
        .unwrap_or("?");
    format!("{year:04}-{month:02} {name}")
}

/// The exercice folder's name: the year when the exercice lies within one
/// calendar year (`2025`), else first and last years (`2025-2026`). Two
/// exercices inside the same year (after a change of closing date) would
/// share it; the later-added one then gets `2025 clôture 2025-06-30`.
pub fn base_label(span: Span) -> String {
    if span.start.year() == span.end.year() {
        format!("{:04}", span.start.year())
    } else {
        format!("{:04}-{:04}", span.start.year(), span.end.year())
    }
}

pub fn disambiguated_label(span: Span) -> String {
    format!("{} clôture {}", base_label(span), span.end)
}

/// Why an exercice is refused. Messages say what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error(
        "{start} is not a plausible exercice start: it must fall between {earliest} and {latest} (check the year)"
    )]
    Implausible {
        start: NaiveDate,
        earliest: NaiveDate,
        latest: NaiveDate,
    },
    #[error("the end ({end}) is before the start ({start}): give an --end on or after the start")]
    EndBeforeStart { start: NaiveDate, end: NaiveDate },
    #[error(
        "{start} → {end} lasts more than {MAX_MONTHS} months (the limit ends on {limit}): give an earlier --end"
    )]
    TooLong {
        start: NaiveDate,
        end: NaiveDate,
        limit: NaiveDate,
    },
    #[error(
        "a first exercice must close by 31 December of the year after it starts: starting {start}, it must end by {limit}, not {end}"
    )]
    FirstClosesTooLate {
        start: NaiveDate,
        end: NaiveDate,
        limit: NaiveDate,
    },
    #[error(
        "{start} → {end} overlaps exercice {other_label} ({} → {}): exercices of one client cannot share a day",
        other.start, other.end
    )]
    Overlap {
        start: NaiveDate,
        end: NaiveDate,
        other: Span,
        other_label: String,
    },
    #[error(
        "the previous exercice {previous_label} ends on {}: this one must start on {expected} (it starts on {start}); pass --allow-gap to leave the days between uncovered",
        previous.end
    )]
    GapAfterPrevious {
        start: NaiveDate,
        expected: NaiveDate,
        previous: Span,
        previous_label: String,
    },
    #[error(
        "the next exercice {next_label} starts on {}: this one must end on {expected} (it ends on {end}); pass --allow-gap to leave the days between uncovered",
        next.start
    )]
    GapBeforeNext {
        end: NaiveDate,
        expected: NaiveDate,
        next: Span,
        next_label: String,
    },
    #[error("{0} is out of the supported date range")]
    OutOfRange(NaiveDate),
}

/// An exercice already recorded for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    pub span: Span,
    pub label: String,
}

/// Checks a new exercice against the rules and the client's others.
/// How far ahead of today an exercice may start: the next one is created a
/// few months ahead at most, so years ahead is a typing error (2062 for
/// 2026) or a forged date, and each would make its folders for nothing.
pub const MAX_YEARS_AHEAD: u32 = 3;

/// Whether `span` starts in a plausible year: from 1900 (companies are
/// older than the product, their exercices not much) to
/// [`MAX_YEARS_AHEAD`] years after `today`.
pub fn check_plausible(span: Span, today: NaiveDate) -> Result<(), RuleError> {
    let earliest = NaiveDate::from_ymd_opt(1900, 1, 1).unwrap_or(NaiveDate::MIN);
    let latest = today
        .checked_add_months(Months::new(12 * MAX_YEARS_AHEAD))
        .unwrap_or(NaiveDate::MAX);
    if span.start < earliest || span.start > latest {
        return Err(RuleError::Implausible {
            start: span.start,
            earliest,
            latest,
        });
    }
    Ok(())
}

pub fn check_new(span: Span, existing: &[Existing], allow_gap: bool) -> Result<(), RuleError> {
    let Span { start, end } = span;
    if end < start {
        return Err(RuleError::EndBeforeStart { start, end });
    }
    let limit = period_end(start, MAX_MONTHS).ok_or(RuleError::OutOfRange(start))?;
    if end > limit {
        return Err(RuleError::TooLong { start, end, limit });
    }
    if let Some(other) = existing
        .iter()
        .find(|e| e.span.start <= end && start <= e.span.end)
    {
        return Err(RuleError::Overlap {
            start,
            end,
            other: other.span,
            other_label: other.label.clone(),
        });
    }
    let previous = existing
        .iter()
        .filter(|e| e.span.end < start)
        .max_by_key(|e| e.span.end);
    let next = existing
        .iter()
        .filter(|e| e.span.start > end)
        .min_by_key(|e| e.span.start);
    match previous {
        None => {
            let limit = NaiveDate::from_ymd_opt(start.year() + 1, 12, 31)
                .ok_or(RuleError::OutOfRange(start))?;
            if end > limit {
                return Err(RuleError::FirstClosesTooLate { start, end, limit });
            }
        }
        Some(p) if !allow_gap => {
            let expected = p.span.end.succ_opt().ok_or(RuleError::OutOfRange(start))?;
            if start != expected {
                return Err(RuleError::GapAfterPrevious {
                    start,
                    expected,
                    previous: p.span,
                    previous_label: p.label.clone(),
                });
            }
        }
        Some(_) => {}
    }
    if let Some(n) = next
        && !allow_gap
    {
        let expected = n.span.start.pred_opt().ok_or(RuleError::OutOfRange(end))?;
        if end != expected {
            return Err(RuleError::GapBeforeNext {
                end,
                expected,
                next: n.span,
                next_label: n.label.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implausible_years_are_refused() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 1).expect("date");
        for (a, b, ok) in [
            ("2026-01-01", "2026-12-31", true),
            ("1900-01-01", "1900-12-31", true),
            ("2029-12-01", "2030-11-30", true),
            ("2029-12-02", "2030-12-01", false),
            ("4825-01-01", "4825-12-31", false),
            ("0000-01-01", "0000-12-31", false),
            ("1899-12-31", "1900-12-30", false),
        ] {
            assert_eq!(check_plausible(span(a, b), today).is_ok(), ok, "{a}");
        }
    }

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
    }

    fn span(a: &str, b: &str) -> Span {
        Span {
            start: d(a),
            end: d(b),
        }
    }

    fn names(a: &str, b: &str) -> Vec<String> {
        months_touched(span(a, b))
            .into_iter()
            .map(|(y, m)| month_folder_name(y, m))
            .collect()
    }

    #[test]
    fn default_end_is_twelve_months_less_a_day() {
        for (start, end) in [
            ("2025-01-01", "2025-12-31"),
            ("2025-07-01", "2026-06-30"),
            ("2025-03-15", "2026-03-14"),
            ("2024-03-01", "2025-02-28"),
            ("2023-03-01", "2024-02-29"),
            ("2024-02-29", "2025-02-28"),
            ("2025-01-31", "2026-01-30"),
            ("2025-10-01", "2026-09-30"),
        ] {
            assert_eq!(default_end(d(start)), Some(d(end)), "start {start}");
        }
    }

    #[test]
    fn calendar_year() {
        let n = names("2025-01-01", "2025-12-31");
        assert_eq!(n.len(), 12);
        assert_eq!(n[0], "2025-01 Janvier");
        assert_eq!(n[1], "2025-02 Février");
        assert_eq!(n[7], "2025-08 Août");
        assert_eq!(n[11], "2025-12 Décembre");
        assert_eq!(base_label(span("2025-01-01", "2025-12-31")), "2025");
    }

    #[test]
    fn shifted_year_july_to_june() {
        let n = names("2025-07-01", "2026-06-30");
        assert_eq!(n.len(), 12);
        assert_eq!(n.first().map(String::as_str), Some("2025-07 Juillet"));
        assert_eq!(n.last().map(String::as_str), Some("2026-06 Juin"));
        assert_eq!(base_label(span("2025-07-01", "2026-06-30")), "2025-2026");
    }

    #[test]
    fn long_first_exercice_counts_partial_months() {
        let n = names("2025-03-15", "2026-12-31");
        assert_eq!(n.len(), 22);
        assert_eq!(n[0], "2025-03 Mars");
        assert_eq!(n[21], "2026-12 Décembre");
        check_new(span("2025-03-15", "2026-12-31"), &[], false).expect("allowed");
    }

    #[test]
    fn short_first_exercice() {
        let n = names("2025-10-20", "2025-12-31");
        assert_eq!(
            n,
            ["2025-10 Octobre", "2025-11 Novembre", "2025-12 Décembre"]
        );
        assert_eq!(names("2025-05-10", "2025-05-20"), ["2025-05 Mai"]);
        check_new(span("2025-10-20", "2025-12-31"), &[], false).expect("allowed");
    }

    #[test]
    fn month_end_and_leap_starts() {
        assert_eq!(names("2024-02-29", "2025-02-28").len(), 13);
        assert_eq!(names("2025-01-31", "2026-01-30").len(), 13);
        assert_eq!(names("2024-03-01", "2025-02-28").len(), 12);
        let n = names("2024-02-01", "2024-02-29");
        assert_eq!(n, ["2024-02 Février"]);
    }

    #[test]
    fn refusals() {
        let ok = |a, b| check_new(span(a, b), &[], false);
        assert!(matches!(
            ok("2025-06-01", "2025-01-01"),
            Err(RuleError::EndBeforeStart { .. })
        ));
        assert!(ok("2025-01-01", "2026-12-31").is_ok(), "exactly 24 months");
        // Not a first exercice, so only the 24-month limit applies.
        let prev = [Existing {
            span: span("2024-03-01", "2025-02-28"),
            label: "2024-2025".into(),
        }];
        assert!(check_new(span("2025-03-01", "2027-02-28"), &prev, false).is_ok());
        let e = check_new(span("2025-03-01", "2027-03-01"), &prev, false).expect_err("25 months");
        assert!(matches!(e, RuleError::TooLong { .. }), "{e}");
        assert!(e.to_string().contains("2027-02-28"), "{e}");
        let e = ok("2025-03-15", "2027-01-31").expect_err("first closes late");
        assert!(matches!(e, RuleError::FirstClosesTooLate { .. }), "{e}");
        assert!(e.to_string().contains("2026-12-31"), "{e}");
    }

    #[test]
    fn overlaps_and_gaps() {
        let existing = [Existing {
            span: span("2025-01-01", "2025-12-31"),
            label: "2025".into(),
        }];
        let e = check_new(span("2025-12-31", "2026-12-30"), &existing, false).expect_err("overlap");
        assert!(matches!(e, RuleError::Overlap { .. }), "{e}");
        assert!(e.to_string().contains("exercice 2025"), "{e}");
        let e = check_new(span("2026-02-01", "2027-01-31"), &existing, false).expect_err("gap");
        assert!(
            e.to_string().contains("must start on 2026-01-01")
                && e.to_string().contains("--allow-gap"),
            "{e}"
        );
        check_new(span("2026-02-01", "2027-01-31"), &existing, true).expect("gap allowed");
        check_new(span("2026-01-01", "2026-12-31"), &existing, false).expect("contiguous");
        // An earlier one added later must end the day before the first starts.
        check_new(span("2024-01-01", "2024-12-31"), &existing, false).expect("earlier");
        let e = check_new(span("2024-01-01", "2024-11-30"), &existing, false).expect_err("gap");
        assert!(matches!(e, RuleError::GapBeforeNext { .. }), "{e}");
        assert!(e.to_string().contains("must end on 2024-12-31"), "{e}");
    }
}
