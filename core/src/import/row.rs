//! One row of cells → a creation form, every cell checked on its own
//! (length, characters, SIRET, dates, yes/no, lists, app settings).

use chrono::NaiveDate;

use super::Problem;
use super::columns::{Columns, Field};
use super::source::RawRow;
use crate::onboarding::{AppChoice, ClientForm, Director};
use crate::siret::Siret;

/// What a row asks for.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub line: usize,
    pub form: ClientForm,
    pub external_ref: Option<String>,
    /// Said about the row without refusing it (a SIRET typed with spaces).
    pub notes: Vec<Problem>,
}

struct Row<'a> {
    raw: &'a RawRow,
    cols: &'a Columns,
    max_chars: usize,
    problems: Vec<Problem>,
}

impl Row<'_> {
    fn problem(&mut self, field: Field, value: &str, message: impl Into<String>) {
        self.problems.push(Problem::at(
            self.raw.line,
            Some(self.cols.name(field)),
            Some(value),
            message,
        ));
    }

    /// The trimmed cell of `field`, `None` when absent or empty, after the
    /// checks every cell passes.
    fn cell(&mut self, field: Field) -> Option<String> {
        let raw = self.raw.cells.get(self.cols.of(field)?)?;
        let v = raw.trim();
        if v.is_empty() {
            return None;
        }
        match crate::text::check_cell(v, self.max_chars) {
            Ok(()) => {}
            Err(crate::text::TextError::TooLong { chars, max }) => {
                self.problem(
                    field,
                    v,
                    format!(
                        "{chars} characters, over the limit of {max} for a cell: is a whole row pasted into one cell?"
                    ),
                );
                return None;
            }
            Err(e) => {
                self.problem(field, v, e.to_string());
                return None;
            }
        }
        Some(v.to_string())
    }
}

/// Parses `raw` (its cells already checked against the header's width).
pub fn parse(raw: &RawRow, cols: &Columns, max_chars: usize) -> Result<Parsed, Vec<Problem>> {
    let mut row = Row {
        raw,
        cols,
        max_chars,
        problems: Vec::new(),
    };
    if raw.extra > 0 {
        row.problems.push(Problem::at(
            raw.line,
            None,
            None,
            format!(
                "{} value(s) beyond the last column: a value probably holds the separator; put it in quotes",
                raw.extra
            ),
        ));
    }
    let mut notes = Vec::new();
    let mut form = ClientForm::default();

    if let Some(v) = row.cell(Field::Siret) {
        match siret(&v) {
            Ok(s) => {
                if s.as_str() != v {
                    notes.push(Problem::at(
                        raw.line,
                        Some(cols.name(Field::Siret)),
                        Some(&v),
                        format!("read as {s}"),
                    ));
                }
                form.siret = Some(s.as_str().to_string());
            }
            Err(m) => row.problem(Field::Siret, &v, m),
        }
    }
    if let Some(v) = row.cell(Field::LegalName) {
        form.company.insert("legal_name".into(), v);
    }
    for (field, slot) in [
        (Field::ExerciceStart, &mut form.exercice_start),
        (Field::ExerciceEnd, &mut form.exercice_end),
    ] {
        if let Some(v) = row.cell(field) {
            match date(&v) {
                Ok(d) => *slot = Some(d),
                Err(m) => row.problem(field, &v, m),
            }
        }
    }
    if form.exercice_start.is_none()
        && !row
            .problems
            .iter()
            .any(|p| p.column == Some(cols.name(Field::ExerciceStart)))
    {
        row.problem(
            Field::ExerciceStart,
            "",
            "empty: give the first day of the client's current exercice, e.g. 01/01/2026",
        );
    }
    form.tree = row.cell(Field::Tree);

    let email = row.cell(Field::DirectorEmail);
    let first = row.cell(Field::DirectorFirstName);
    let last = row.cell(Field::DirectorLastName);
    let director = email.is_some() || first.is_some() || last.is_some();
    if director {
        form.director = Some(Director {
            email: email.unwrap_or_default(),
            first_name: first.unwrap_or_default(),
            last_name: last.unwrap_or_default(),
        });
    }
    form.themes = row.cell(Field::Themes).map(|v| list(&v));
    form.invite = match row.cell(Field::Invite) {
        None => director,
        Some(v) => match yes_no(&v) {
            Some(b) => b,
            None => {
                row.problem(Field::Invite, &v, "not a yes or no: write oui or non");
                false
            }
        },
    };
    if let Some(v) = row.cell(Field::Apps) {
        match apps(&v) {
            Ok(a) => form.apps = a,
            Err(m) => row.problem(Field::Apps, &v, m),
        }
    }
    if let Some(v) = row.cell(Field::Collaborators) {
        form.collaborators = list(&v);
    }
    let external_ref = row.cell(Field::ExternalRef);
    if row.problems.is_empty() {
        Ok(Parsed {
            line: raw.line,
            form,
            external_ref,
            notes,
        })
    } else {
        Err(row.problems)
    }
}

/// A SIRET cell; what spreadsheets do to numbers is named, never repaired.
pub fn siret(v: &str) -> Result<Siret, String> {
    let compact: String = v.chars().filter(|c| !c.is_whitespace()).collect();
    let upper = compact.to_ascii_uppercase();
    if upper.contains('E')
        && upper
            .replace(['E', '+', ',', '.'], "")
            .chars()
            .all(|c| c.is_ascii_digit())
    {
        return Err(
            "written in scientific notation, its last digits are lost: format the column as Text and type the 14 digits again"
                .into(),
        );
    }
    let digits = compact.chars().filter(char::is_ascii_digit).count();
    if digits == 13 && compact.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(
            "13 digits: the spreadsheet probably dropped a leading zero; format the column as Text and type the 14 digits (not guessed here)"
                .into(),
        );
    }
    Siret::parse(v).map_err(|e| format!("not a SIRET: {e}"))
}

/// `DD/MM/YYYY` (also `-` or `.` between), or ISO `YYYY-MM-DD`.
pub fn date(v: &str) -> Result<NaiveDate, String> {
    let parts: Vec<&str> = v.split(['/', '-', '.']).collect();
    let (y, m, d) = match parts.as_slice() {
        [y, m, d] if y.len() == 4 => (*y, *m, *d),
        [d, m, y] if y.len() == 4 => (*y, *m, *d),
        [_, _, y] if y.len() == 2 => {
            return Err(format!(
                "{v:?}: write the year with 4 digits, e.g. 01/01/2026"
            ));
        }
        _ => {
            return Err(format!(
                "{v:?} is not a date: write it DD/MM/YYYY (31/12/2026) or YYYY-MM-DD"
            ));
        }
    };
    let num = |s: &str| {
        s.parse::<u32>()
            .ok()
            .filter(|_| !s.is_empty() && s.len() <= 4)
    };
    let (Some(y), Some(m), Some(d)) = (num(y), num(m), num(d)) else {
        return Err(format!(
            "{v:?} is not a date: write it DD/MM/YYYY (31/12/2026) or YYYY-MM-DD"
        ));
    };
    if !(1..=12).contains(&m) {
        return Err(format!("{v:?} is not a date: there is no month {m}"));
    }
    NaiveDate::from_ymd_opt(y as i32, m, d).ok_or_else(|| {
        let days = (28..=31)
            .rev()
            .find(|d| NaiveDate::from_ymd_opt(y as i32, m, *d).is_some())
            .unwrap_or(28);
        format!("{v:?} is not a date: month {m:02}/{y} has {days} days")
    })
}

fn yes_no(v: &str) -> Option<bool> {
    match super::columns::normalise(v).as_str() {
        "oui" | "o" | "yes" | "y" | "vrai" | "true" | "1" | "x" => Some(true),
        "non" | "n" | "no" | "faux" | "false" | "0" => Some(false),
        _ => None,
    }
}

/// Values separated by `,` `;` `|` or new lines.
fn list(v: &str) -> Vec<String> {
    v.split([',', ';', '|', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `app`, `app*` (pinned on the director's portal) or
/// `app(name=value; name=value)`, separated by `,` `|` or new lines.
fn apps(v: &str) -> Result<Vec<AppChoice>, String> {
    let mut items = Vec::new();
    let (mut depth, mut current) = (0i32, String::new());
    for c in v.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' | '|' | '\n' | ';' if depth == 0 => {
                items.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        if depth < 0 {
            return Err("a ')' closes nothing: write app(name=value; name=value)".into());
        }
        current.push(c);
    }
    if depth != 0 {
        return Err("a '(' is not closed: write app(name=value; name=value)".into());
    }
    items.push(current);
    let mut out = Vec::new();
    for item in items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let (head, settings) = match item.split_once('(') {
            Some((h, rest)) => (h.trim(), rest.trim_end().trim_end_matches(')')),
            None => (item, ""),
        };
        let (id, pinned) = match head.strip_suffix('*') {
            Some(id) => (id.trim(), true),
            None => (head, false),
        };
        if id.is_empty() {
            return Err(format!("{item:?} has no app id: write app(name=value)"));
        }
        let mut pairs = Vec::new();
        for s in settings
            .split([';', ','])
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let Some((k, val)) = s.split_once('=') else {
                return Err(format!("setting {s:?} of {id}: write name=value"));
            };
            pairs.push((k.trim().to_string(), val.trim().to_string()));
        }
        out.push(AppChoice {
            app_id: id.to_string(),
            settings: pairs,
            on_director_portal: pinned,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siret_cells() {
        assert_eq!(
            siret("552 100 554 00013").map(|s| s.as_str().to_string()),
            Ok("55210055400013".into())
        );
        assert!(
            siret("5521005540001")
                .expect_err("13")
                .starts_with("13 digits: the spreadsheet probably dropped a leading zero")
        );
        assert!(
            siret("5,52100554E+13")
                .expect_err("sci")
                .starts_with("written in scientific notation")
        );
        assert!(
            siret("55210055400014")
                .expect_err("luhn")
                .contains("checksum")
        );
    }

    #[test]
    fn dates() {
        assert_eq!(
            date("01/07/2026"),
            Ok(NaiveDate::from_ymd_opt(2026, 7, 1).expect("d"))
        );
        assert_eq!(
            date("2026-07-01"),
            Ok(NaiveDate::from_ymd_opt(2026, 7, 1).expect("d"))
        );
        assert_eq!(
            date("1.7.2026"),
            Ok(NaiveDate::from_ymd_opt(2026, 7, 1).expect("d"))
        );
        assert_eq!(
            date("30/02/2025").expect_err("feb"),
            "\"30/02/2025\" is not a date: month 02/2025 has 28 days"
        );
        assert_eq!(
            date("01/13/2025").expect_err("m"),
            "\"01/13/2025\" is not a date: there is no month 13"
        );
        assert!(date("01/01/25").expect_err("yy").contains("4 digits"));
        assert!(date("demain").expect_err("word").contains("DD/MM/YYYY"));
    }

    #[test]
    fn apps_and_lists() {
        let a = apps("ged(dossier=Social/Paie; mode=auto), portail*, paie").expect("apps");
        assert_eq!(a.len(), 3);
        assert_eq!(
            a[0].settings,
            [
                ("dossier".to_string(), "Social/Paie".to_string()),
                ("mode".into(), "auto".into())
            ]
        );
        assert!(a[1].on_director_portal);
        assert!(apps("ged(dossier=x").is_err());
        assert_eq!(
            list("a@x.fr; b@x.fr ,c@x.fr"),
            ["a@x.fr", "b@x.fr", "c@x.fr"]
        );
        assert_eq!(yes_no("OUI"), Some(true));
        assert_eq!(yes_no("peut-être"), None);
    }
}
