//! What an import tells: a text report, and a CSV of the refused rows that
//! can be corrected and imported again.

use std::collections::BTreeMap;

use super::{Analysis, Progress, Request};

/// The most problems a report lists: the report is stored and shown, and
/// must stay readable (and small) whatever the file holds.
pub const MAX_LISTED: usize = 1_000;

/// The text report of an import.
pub fn summary(
    a: &Analysis,
    request: &Request,
    import_id: &str,
    p: &Progress,
    refused: bool,
) -> String {
    let mut out = format!(
        "import {import_id}: {} ({}, {} rows) for firm {}\n",
        request.file_name,
        a.table.encoding,
        a.rows_total(),
        request.firm_id
    );
    if refused {
        out.push_str(&format!(
            "refused: {} of {} rows have problems, so nothing was created (fix them, or import with --partial to create the good rows)\n",
            a.bad_lines().len(),
            a.rows_total()
        ));
    } else {
        out.push_str(&format!(
            "created: {}   skipped (already clients): {}   refused: {}   jobs enqueued: {}\n",
            p.created,
            a.skipped.len(),
            a.bad_lines().len(),
            p.jobs
        ));
    }
    if !a.problems.is_empty() {
        out.push_str("\nproblems:\n");
        for pr in a.problems.iter().take(MAX_LISTED) {
            out.push_str(&format!("  - {pr}\n"));
        }
        if a.problems.len() > MAX_LISTED {
            out.push_str(&format!(
                "  … and {} more problems (every refused row is in the error file)\n",
                a.problems.len() - MAX_LISTED
            ));
        }
    }
    if !a.skipped.is_empty() {
        out.push_str("\nskipped:\n");
        for s in a.skipped.iter().take(MAX_LISTED) {
            out.push_str(&format!("  - line {}: {}\n", s.line, s.reason));
        }
        if a.skipped.len() > MAX_LISTED {
            out.push_str(&format!(
                "  … and {} more rows skipped\n",
                a.skipped.len() - MAX_LISTED
            ));
        }
    }
    if !a.notes.is_empty() {
        out.push_str("\nnotes:\n");
        for n in &a.notes {
            out.push_str(&format!("  - {n}\n"));
        }
    }
    out
}

/// The refused rows as they were, with an `erreurs` column, ready to be
/// corrected and imported again (UTF-8 with BOM and `;`, as Excel opens
/// it; cells that would run as formulas are neutralised, see
/// [`super::formula`]); `None` when no row was refused.
pub fn errors_csv(a: &Analysis) -> Option<String> {
    let mut by_line: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for p in a.problems.iter().filter(|p| p.line > 0) {
        by_line.entry(p.line).or_default().push(p.in_row());
    }
    if by_line.is_empty() {
        return None;
    }
    let errors_col = a
        .table
        .headers
        .iter()
        .position(|h| super::columns::IGNORED.contains(&super::columns::normalise(h).as_str()));
    let mut w = csv::WriterBuilder::new()
        .delimiter(b';')
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let mut headers = a.table.headers.clone();
    if errors_col.is_none() {
        headers.push("erreurs".into());
    }
    let safe = |cells: &[String]| -> Vec<String> {
        cells
            .iter()
            .map(|c| super::formula::neutralise(c).into_owned())
            .collect()
    };
    w.write_record(safe(&headers)).ok()?;
    for row in a
        .table
        .rows
        .iter()
        .filter(|r| by_line.contains_key(&r.line))
    {
        let message = by_line
            .get(&row.line)
            .map(|m| m.join(" | "))
            .unwrap_or_default();
        let mut cells = row.cells.clone();
        match errors_col {
            Some(i) => cells[i] = message,
            None => cells.push(message),
        }
        w.write_record(safe(&cells)).ok()?;
    }
    let bytes = w.into_inner().ok()?;
    Some(format!("\u{feff}{}", String::from_utf8(bytes).ok()?))
}
