//! Which column holds what: header names matched case- and
//! accent-insensitively against French and English aliases.

use std::collections::HashMap;

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    Siret,
    LegalName,
    ExerciceStart,
    ExerciceEnd,
    Tree,
    DirectorEmail,
    DirectorFirstName,
    DirectorLastName,
    Themes,
    Invite,
    Apps,
    Collaborators,
    ExternalRef,
}

/// Each field: the template's header, then the other accepted names
/// (already normalised: lower case, no accents, words split by spaces).
pub const ALIASES: &[(Field, &str, &[&str])] = &[
    (
        Field::Siret,
        "SIRET",
        &[
            "siret",
            "n siret",
            "no siret",
            "numero siret",
            "siret number",
        ],
    ),
    (
        Field::LegalName,
        "Raison sociale",
        &[
            "raison sociale",
            "denomination",
            "societe",
            "nom de la societe",
            "company",
            "company name",
            "legal name",
        ],
    ),
    (
        Field::ExerciceStart,
        "Début d'exercice",
        &[
            "debut d exercice",
            "debut exercice",
            "date de debut d exercice",
            "debut",
            "exercice start",
            "fiscal year start",
        ],
    ),
    (
        Field::ExerciceEnd,
        "Fin d'exercice",
        &[
            "fin d exercice",
            "fin exercice",
            "date de fin d exercice",
            "date de cloture",
            "cloture",
            "fin",
            "exercice end",
            "fiscal year end",
        ],
    ),
    (
        Field::Tree,
        "Arborescence",
        &[
            "arborescence",
            "modele d arborescence",
            "tree",
            "tree template",
        ],
    ),
    (
        Field::DirectorEmail,
        "Dirigeant email",
        &[
            "dirigeant email",
            "email dirigeant",
            "email du dirigeant",
            "dirigeant e mail",
            "e mail dirigeant",
            "courriel dirigeant",
            "director email",
        ],
    ),
    (
        Field::DirectorFirstName,
        "Dirigeant prénom",
        &[
            "dirigeant prenom",
            "prenom dirigeant",
            "prenom du dirigeant",
            "director first name",
        ],
    ),
    (
        Field::DirectorLastName,
        "Dirigeant nom",
        &[
            "dirigeant nom",
            "nom dirigeant",
            "nom du dirigeant",
            "director last name",
        ],
    ),
    (
        Field::Themes,
        "Thèmes",
        &["themes", "theme", "director themes"],
    ),
    (
        Field::Invite,
        "Inviter",
        &["inviter", "invitation", "invite"],
    ),
    (
        Field::Apps,
        "Applications",
        &["applications", "application", "apps"],
    ),
    (
        Field::Collaborators,
        "Collaborateurs",
        &["collaborateurs", "collaborateur", "collaborators"],
    ),
    (
        Field::ExternalRef,
        "Référence externe",
        &[
            "reference externe",
            "ref externe",
            "reference",
            "code client",
            "external reference",
            "external ref",
        ],
    ),
];

/// Headers that are read past: the error column of a report file being
/// re-imported once corrected.
pub const IGNORED: &[&str] = &["erreurs", "errors"];

/// The header's name for `field` (the template's).
pub fn label(field: Field) -> &'static str {
    ALIASES.iter().find(|a| a.0 == field).map_or("?", |a| a.1)
}

/// Lower case, accents off, anything but letters and digits a single space.
pub fn normalise(header: &str) -> String {
    let mut out = String::with_capacity(header.len());
    for c in header
        .trim_start_matches('\u{feff}')
        .chars()
        .flat_map(char::to_lowercase)
    {
        let mapped = match c {
            'à' | 'â' | 'ä' | 'á' => "a",
            'é' | 'è' | 'ê' | 'ë' => "e",
            'î' | 'ï' | 'í' => "i",
            'ô' | 'ö' | 'ó' => "o",
            'ù' | 'û' | 'ü' | 'ú' => "u",
            'ç' => "c",
            'ÿ' => "y",
            'œ' => "oe",
            'æ' => "ae",
            c if c.is_alphanumeric() => {
                out.push(c);
                continue;
            }
            _ => " ",
        };
        out.push_str(mapped);
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Spreadsheet column letters of a 0-based index: 0 → A, 26 → AA.
pub fn letter(mut index: usize) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'A' + (index % 26) as u8);
        if index < 26 {
            break;
        }
        index = index / 26 - 1;
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

/// The field each column holds.
#[derive(Debug, Clone)]
pub struct Columns {
    index: HashMap<Field, usize>,
    pub headers: Vec<String>,
}

impl Columns {
    /// Maps `headers`; every unknown, repeated or missing column is a problem.
    pub fn map(headers: &[String]) -> Result<Columns, Vec<String>> {
        let mut index = HashMap::new();
        let mut problems = Vec::new();
        for (i, h) in headers.iter().enumerate() {
            let n = normalise(h);
            if n.is_empty() {
                problems.push(format!(
                    "column {}: the header is empty: name the column (see `dossier import template`) or delete it",
                    letter(i)
                ));
                continue;
            }
            if IGNORED.contains(&n.as_str()) {
                continue;
            }
            let Some((field, ..)) = ALIASES.iter().find(|a| a.2.contains(&n.as_str())) else {
                problems.push(format!(
                    "column {} {h:?} is not a known column: rename it to one of {} or delete it",
                    letter(i),
                    ALIASES.iter().map(|a| a.1).collect::<Vec<_>>().join(", ")
                ));
                continue;
            };
            if let Some(first) = index.insert(*field, i) {
                problems.push(format!(
                    "columns {} and {} both hold « {} »: keep one",
                    letter(first),
                    letter(i),
                    label(*field)
                ));
            }
        }
        if !index.contains_key(&Field::Siret) && !index.contains_key(&Field::LegalName) {
            problems.push(
                "no « SIRET » column and no « Raison sociale » column: a client needs one of them"
                    .into(),
            );
        }
        if !index.contains_key(&Field::ExerciceStart) {
            problems.push(
                "no « Début d'exercice » column: each client needs the first day of its current exercice"
                    .into(),
            );
        }
        if problems.is_empty() {
            Ok(Columns {
                index,
                headers: headers.to_vec(),
            })
        } else {
            Err(problems)
        }
    }

    /// The column of `field`, if the file has one.
    pub fn of(&self, field: Field) -> Option<usize> {
        self.index.get(&field).copied()
    }

    /// How a problem names the column of `field`: `B « Raison sociale »`.
    pub fn name(&self, field: Field) -> String {
        match self.of(field) {
            Some(i) => format!("{} « {} »", letter(i), self.headers[i].trim()),
            None => format!("« {} »", label(field)),
        }
    }
}

/// The template: every column, and two example rows.
pub fn template() -> String {
    let headers: Vec<&str> = ALIASES.iter().map(|a| a.1).collect();
    let rows = [
        "552 100 554 00013;Boulangerie Dupont;01/01/2026;31/12/2026;;marie.dupont@example.fr;Marie;Dupont;;oui;;;CLI-0001",
        ";Atelier Martin (saisi à la main);01/07/2026;30/06/2027;cabinet-standard;;;;;non;;;CLI-0002",
    ];
    let mut out = String::from("\u{feff}");
    out.push_str(&headers.join(";"));
    out.push_str("\r\n");
    for r in rows {
        out.push_str(r);
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn aliases_match_whatever_the_case_and_accents() {
        let c = Columns::map(&h(&[
            "N° SIRET",
            "RAISON SOCIALE",
            "Début d’exercice",
            "Date de clôture",
            "E-mail dirigeant",
            "erreurs",
        ]))
        .expect("known");
        assert_eq!(c.of(Field::Siret), Some(0));
        assert_eq!(c.of(Field::ExerciceEnd), Some(3));
        assert_eq!(c.of(Field::DirectorEmail), Some(4));
        assert_eq!(c.name(Field::LegalName), "B « RAISON SOCIALE »");
    }

    #[test]
    fn every_template_header_is_its_own_alias() {
        for (field, header, aliases) in ALIASES {
            assert!(aliases.contains(&normalise(header).as_str()), "{field:?}");
        }
        let t = template();
        let first = t
            .trim_start_matches('\u{feff}')
            .lines()
            .next()
            .unwrap_or("");
        assert!(Columns::map(&h(&first.split(';').collect::<Vec<_>>())).is_ok());
    }

    #[test]
    fn unknown_repeated_and_missing_columns() {
        let e = Columns::map(&h(&["Siert", "siret", "Nom"])).expect_err("bad");
        assert!(
            e[0].starts_with("column A \"Siert\" is not a known column"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("column C \"Nom\" is not a known column"),
            "{e:?}"
        );
        assert!(e[2].starts_with("no « Début d'exercice » column"), "{e:?}");
        let e = Columns::map(&h(&["siret", "SIRET", "debut"])).expect_err("bad");
        assert_eq!(e, ["columns A and B both hold « SIRET »: keep one"]);
        assert_eq!(letter(0), "A");
        assert_eq!(letter(25), "Z");
        assert_eq!(letter(26), "AA");
    }
}
