//! Formula injection: a cell that begins with `=`, `+`, `-`, `@`, a tab or
//! a carriage return is run as a formula by Excel and LibreOffice when the
//! error file is opened (OWASP, "CSV Injection"). Such cells are written
//! with a leading `'`, which spreadsheets take as "text", and the `'` is
//! taken off again when the corrected file is imported, so the file round
//! trips: a cell that really begins with `'=` comes back as `=`.

use std::borrow::Cow;

fn starts_a_formula(c: char) -> bool {
    matches!(c, '=' | '+' | '-' | '@' | '\t' | '\r')
}

/// The cell as it is safe to write into a CSV made for a spreadsheet.
pub fn neutralise(cell: &str) -> Cow<'_, str> {
    match cell.chars().next() {
        Some(c) if starts_a_formula(c) => Cow::Owned(format!("'{cell}")),
        _ => Cow::Borrowed(cell),
    }
}

/// Undoes [`neutralise`] on a cell read back from a file.
pub fn restore(cell: String) -> String {
    let mut chars = cell.chars();
    match (chars.next(), chars.next()) {
        (Some('\''), Some(c)) if starts_a_formula(c) => cell[1..].to_string(),
        _ => cell,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_neutralised_and_restored() {
        for cell in [
            "=HYPERLINK(\"http://x\")",
            "+33 1 23",
            "-2+3",
            "@SUM(A1)",
            "\tx",
            "\rx",
        ] {
            let safe = neutralise(cell);
            assert!(safe.starts_with('\''), "{cell:?}");
            assert_eq!(restore(safe.into_owned()), cell);
        }
        for cell in ["Boulangerie", "", "'quoted", "2026-01-01", "'x"] {
            assert_eq!(neutralise(cell), cell);
            assert_eq!(restore(cell.to_string()), cell);
        }
    }
}
