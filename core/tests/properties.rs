//! Property tests of what parses outside input: SIRET numbers, import files
//! and rows, job payloads. A short run is part of the test suite; a long
//! one: `PROPTEST_CASES=200000 cargo test -p dossier-core --release --test properties`.

use chrono::{Datelike, NaiveDate};
use dossier_core::catalogue::Catalogue;
use dossier_core::import::columns::Columns;
use dossier_core::import::{row, source};
use dossier_core::siret::{Siret, with_luhn_digit};
use proptest::prelude::*;

fn digits(n: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(0u8..10, n)
        .prop_map(|v| v.into_iter().map(|d| char::from(b'0' + d)).collect())
}

/// A valid SIRET: 13 digits and the Luhn key (outside La Poste's SIREN).
fn valid_siret() -> impl Strategy<Value = String> {
    (digits(8), digits(4))
        .prop_map(|(siren, nic)| with_luhn_digit(&format!("{}{nic}", with_luhn_digit(&siren))))
        .prop_filter("not La Poste", |d| !d.starts_with("356000000"))
}

fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("client_id".to_string()),
                    Just("siret".to_string()),
                    Just("import_id".to_string()),
                    Just("invitation_id".to_string()),
                    Just("generation".to_string()),
                    any::<String>(),
                ],
                inner,
                0..5
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Printable text without the characters a CSV cell is refused for.
fn cell() -> impl Strategy<Value = String> {
    prop::collection::vec(
        any::<char>().prop_map(|c| if c.is_control() { ' ' } else { c }),
        0..30,
    )
    .prop_map(|v| v.into_iter().collect::<String>().trim().to_string())
}

proptest! {
    // 300 cases in the suite; PROPTEST_CASES for a long run.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300)
    ))]

    #[test]
    fn siret_parsing_never_panics_and_only_accepts_valid_numbers(input in any::<String>()) {
        if let Ok(s) = Siret::parse(&input) {
            prop_assert_eq!(s.as_str().len(), 14);
            prop_assert!(s.as_str().bytes().all(|b| b.is_ascii_digit()));
            prop_assert_eq!(Siret::parse(s.as_str()).ok(), Some(s.clone()));
        }
        if let Ok(s) = row::siret(&input) {
            prop_assert!(Siret::parse(s.as_str()).is_ok());
        }
    }

    #[test]
    fn valid_sirets_parse_whatever_the_spaces(s in valid_siret(), cuts in prop::collection::vec(0usize..14, 0..4)) {
        let mut spaced = s.clone();
        let mut cuts = cuts;
        cuts.sort_unstable();
        for c in cuts.into_iter().rev() {
            spaced.insert(c, ' ');
        }
        prop_assert_eq!(Siret::parse(&spaced).map(|p| p.as_str().to_string()), Ok(s.clone()));
        prop_assert!(row::siret(&spaced).is_ok());
    }

    #[test]
    fn one_mistyped_digit_is_always_caught(s in valid_siret(), at in 0usize..14, plus in 1u8..10) {
        let mut b = s.into_bytes();
        b[at] = b'0' + (b[at] - b'0' + plus) % 10;
        let typo = String::from_utf8(b).unwrap_or_default();
        prop_assert!(Siret::parse(&typo).is_err(), "{} accepted", typo);
    }

    #[test]
    fn a_siret_that_lost_its_leading_zero_is_never_guessed(s in valid_siret()) {
        let zeroed = format!("0{}", &s[1..]);
        prop_assert!(row::siret(&zeroed[1..]).is_err());
    }

    #[test]
    fn any_bytes_read_as_a_table_or_a_clear_error(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        match source::read(&bytes, 1 << 20) {
            Ok(t) => {
                for r in &t.rows {
                    prop_assert_eq!(r.cells.len(), t.headers.len());
                    prop_assert!(r.line >= 2);
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn csv_cells_come_back_as_written_at_their_line(
        rows in prop::collection::vec(prop::collection::vec(cell(), 3), 1..20),
        bom in any::<bool>(),
        comma in any::<bool>(),
    ) {
        let sep = if comma { b',' } else { b';' };
        let mut w = csv::WriterBuilder::new().delimiter(sep).from_writer(Vec::new());
        w.write_record(["SIRET", "Raison sociale", "Début d'exercice"]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for r in &rows {
            w.write_record(r).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        let mut bytes = if bom { vec![0xEF, 0xBB, 0xBF] } else { Vec::new() };
        bytes.extend(w.into_inner().map_err(|e| TestCaseError::fail(e.to_string()))?);
        let t = source::read(&bytes, 1 << 20).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let kept: Vec<&Vec<String>> = rows.iter().filter(|r| r.iter().any(|c| !c.trim().is_empty())).collect();
        prop_assert_eq!(t.rows.len(), kept.len());
        for (got, want) in t.rows.iter().zip(kept) {
            // Cells written as `'=…` (how the error file neutralises a
            // formula) come back without the quote.
            let want_cells: Vec<String> = want.iter().cloned().map(dossier_core::import::formula::restore).collect();
            prop_assert_eq!(&got.cells, &want_cells);
            // The reported line holds the row's first cell.
            let text = String::from_utf8_lossy(&bytes);
            let line = text.lines().nth(got.line - 1).unwrap_or("");
            let first = want.iter().find(|c| !c.is_empty()).map(String::as_str).unwrap_or("");
            let first_part = first.split(['\n', '"']).next().unwrap_or("");
            prop_assert!(line.contains(first_part), "line {} {:?} lacks {:?}", got.line, line, first_part);
        }
    }

    #[test]
    fn any_row_parses_or_names_its_problems(cells in prop::collection::vec(any::<String>(), 13)) {
        let headers: Vec<String> = dossier_core::import::columns::ALIASES.iter().map(|a| a.1.to_string()).collect();
        let cols = Columns::map(&headers).map_err(|e| TestCaseError::fail(e.join("; ")))?;
        let raw = source::RawRow { line: 7, cells, extra: 0 };
        if let Err(problems) = row::parse(&raw, &cols, 1000) {
            prop_assert!(!problems.is_empty());
            for p in problems {
                prop_assert_eq!(p.line, 7);
                prop_assert!(!p.message.is_empty());
            }
        }
    }

    #[test]
    fn dates_read_back_as_written(y in 1900i32..2200, ordinal in 1u32..366) {
        let d = NaiveDate::from_yo_opt(y, ordinal).unwrap_or_default();
        prop_assert_eq!(row::date(&d.format("%d/%m/%Y").to_string()), Ok(d));
        prop_assert_eq!(row::date(&d.to_string()), Ok(d));
        prop_assert_eq!(row::date(&format!("{}.{}.{}", d.day(), d.month(), d.year())), Ok(d));
    }

    #[test]
    fn any_text_is_a_date_or_a_reason(s in any::<String>()) {
        if let Err(e) = row::date(&s) {
            prop_assert!(!e.is_empty());
        }
    }

    #[test]
    fn payload_decoding_never_panics(payload in json(), kind in 0usize..16) {
        let catalogue = Catalogue::product();
        let kinds = catalogue.kinds();
        let spec = &kinds[kind % kinds.len()];
        let _ = catalogue.validate(spec.kind, &payload);
        let mut p = payload.clone();
        catalogue.redact(spec.kind, &mut p);
    }
}
