//! Bulk import end to end, on the embedded deployment (SQLite) and on the
//! production one (PostgreSQL data, Redis queue): bad files and bad rows
//! refused with their exact messages and nothing written, partial imports
//! and their error file, re-imports without duplicates, Excel files, a run
//! cut short and resumed, the `bulk_import` job, drop folders.

use std::sync::Arc;
use std::time::Duration;

use dossier_core::db::Database;
use dossier_core::import::{self, ImportError, Limits, Request, store};
use dossier_core::import_bench::{generate_csv, siret_for};
use dossier_core::jobs::{JobDeps, Mailer, Partners, bulk_import};
use dossier_core::runtime::Registry;
use dossier_core::secrets::KeyRing;
use dossier_core::sirene::{Quota, Sirene};
use dossier_e2e::{BackendKind, TestQueue};

const FIRM: &str = "cabinet-import";
const HEADER: &str = "SIRET;Raison sociale;Début d'exercice;Fin d'exercice;Arborescence;Dirigeant email;Dirigeant prénom;Dirigeant nom;Thèmes;Inviter;Applications;Collaborateurs;Référence externe";

struct Fixture {
    q: TestQueue,
    db: Database,
    keys: KeyRing,
}

/// SQLite for data and queue, or PostgreSQL data with the Redis queue.
async fn fixture(kind: BackendKind) -> Fixture {
    let mut q = TestQueue::new(kind).await;
    let db = q.business_db().await;
    dossier_e2e::add_firm(&db, FIRM).await;
    Fixture {
        q,
        db,
        keys: KeyRing::new(&[]).expect("ring"),
    }
}

fn request(partial: bool) -> Request {
    Request {
        firm_id: FIRM.into(),
        file_name: "clients.csv".into(),
        partial,
        providers: None,
        trace_id: None,
    }
}

impl Fixture {
    fn limits(&self) -> Limits<'_> {
        Limits::of(&self.q.settings)
    }

    async fn analyse(&self, bytes: &[u8]) -> Result<import::Analysis, ImportError> {
        import::analyse(
            &self.db,
            self.limits(),
            &self.keys,
            &request(false),
            &store::new_id(),
            bytes,
        )
        .await
    }

    /// Records and runs an import as the CLI and the job do.
    async fn import(&self, bytes: &[u8], req: &Request) -> store::ImportRecord {
        let id = store::new_id();
        store::create(&self.db, &id, req, bytes, None)
            .await
            .expect("recorded");
        import::run(
            &self.db,
            self.limits(),
            &self.keys,
            Some(self.q.backend.as_ref()),
            &id,
            &mut |_| {},
        )
        .await
        .expect("import runs")
    }

    /// Rows of every table an import writes to, and jobs in the queue.
    async fn census(&self) -> Vec<i64> {
        let mut out = Vec::new();
        for table in [
            "clients",
            "exercices",
            "client_trees",
            "invitations",
            "client_apps",
            "client_collaborators",
            "outbox",
        ] {
            let sql = format!("SELECT COUNT(*) FROM {table}");
            let n: i64 = match &self.db {
                Database::Sqlite(p) => {
                    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                        .fetch_one(p)
                        .await
                }
                Database::Postgres(p) => {
                    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                        .fetch_one(p)
                        .await
                }
            }
            .expect("count");
            out.push(n);
        }
        let counts = self.q.backend.counts().await.expect("counts");
        out.push(counts.iter().map(|c| c.pending + c.scheduled).sum::<u64>() as i64);
        out
    }

    async fn clients(&self) -> i64 {
        self.census().await[0]
    }

    async fn done(self) {
        self.q.cleanup_with(self.db).await;
    }
}

fn csv(rows: &[String]) -> Vec<u8> {
    let mut s = format!("{HEADER}\r\n");
    for r in rows {
        s.push_str(r);
        s.push_str("\r\n");
    }
    s.into_bytes()
}

fn file_errors(r: Result<import::Analysis, ImportError>) -> Vec<String> {
    match r {
        Err(ImportError::File(p)) => p,
        other => panic!("expected a file-level refusal, got {other:?}"),
    }
}

async fn bad_files(kind: BackendKind) {
    let f = fixture(kind).await;
    let before = f.census().await;
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(
            format!("{HEADER}\r\n")
                .encode_utf16()
                .flat_map(u16::to_le_bytes),
        )
        .collect();
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "empty file",
            Vec::new(),
            vec![
                "the file is empty: it needs a header line and one line per client (see `dossier import template`)",
            ],
        ),
        (
            "header only",
            format!("{HEADER}\r\n").into_bytes(),
            vec![
                "the file has a header but no client lines: add one line per client (see `dossier import template`)",
            ],
        ),
        (
            "UTF-16",
            utf16,
            vec![
                "the file is UTF-16 text (Excel's \"Unicode text\"): save it as \"CSV UTF-8\" (Excel: File › Save as › CSV UTF-8) or as .xlsx",
            ],
        ),
        (
            "xls",
            vec![0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1, 0, 0],
            vec![
                "the file is an Excel 97-2003 workbook (.xls): save it as \"CSV UTF-8\" (Excel: File › Save as › CSV UTF-8) or as .xlsx",
            ],
        ),
        (
            "missing columns",
            b"Raison sociale;Dirigeant email\nA;a@b.fr\n".to_vec(),
            vec![
                "no « Début d'exercice » column: each client needs the first day of its current exercice",
            ],
        ),
        (
            "unknown and repeated columns",
            b"SIRET;Siret;Debut;Couleur\n1;2;3;4\n".to_vec(),
            vec![
                "columns A and B both hold « SIRET »: keep one",
                "column D \"Couleur\" is not a known column: rename it to one of SIRET, Raison sociale, Début d'exercice, Fin d'exercice, Arborescence, Dirigeant email, Dirigeant prénom, Dirigeant nom, Thèmes, Inviter, Applications, Collaborateurs, Référence externe or delete it",
            ],
        ),
        (
            "one column",
            b"SIRET\n55210055400013\n".to_vec(),
            vec![
                "the header has a single column \"SIRET\": separate the columns with ; or , (see `dossier import template`)",
            ],
        ),
        (
            "unbalanced quote",
            format!("{HEADER}\n\"552;A;01/01/2026\n").into_bytes(),
            vec![],
        ),
    ];
    for (name, bytes, want) in cases {
        let got = f.analyse(&bytes).await;
        if want.is_empty() {
            // An open quote runs to the end of the file: one cell holds the
            // rest, refused like any wrong row, never a half import.
            let a = got.expect("read");
            assert!(a.refused(false), "{name}: {:?}", a.problems);
            continue;
        }
        assert_eq!(file_errors(got), want, "{name}");
    }
    // A refused file recorded and run (the job's path) ends `refused`,
    // its report holding the reason, and writes no client.
    let r = f.import(b"", &request(false)).await;
    assert_eq!(r.status, "refused");
    assert!(
        r.report
            .as_deref()
            .unwrap_or("")
            .contains("the file is empty"),
        "{r:?}"
    );
    assert_eq!(f.census().await, before, "nothing written");
    f.done().await;
}

#[tokio::test]
async fn bad_files_are_refused_with_their_exact_message_on_sqlite() {
    bad_files(BackendKind::Sqlite).await;
}

#[tokio::test]
async fn bad_files_are_refused_with_their_exact_message_on_postgres_and_redis() {
    bad_files(BackendKind::Redis).await;
}

/// Rows that are each wrong in one way, and two good ones.
fn bad_rows() -> Vec<String> {
    let big = "x".repeat(1 << 20);
    vec![
        format!("{};Bonne SARL;01/01/2026;;;;;;;;;;R1", siret_for(1)),
        "5521005540001;Zéro perdu;01/01/2026;;;;;;;;;;R2".into(),
        format!("{};Doublon;01/01/2026;;;;;;;;;;R3", siret_for(1)),
        ";Sans SIRET;30/02/2025;;;;;;;;;;R4".into(),
        ";Arbre;01/01/2026;;inconnue;;;;;;;;R5".into(),
        format!(
            "{};Thème;01/01/2026;;;marie@example.fr;Marie;Curie;magie;oui;;;R6",
            siret_for(6)
        ),
        format!("{};Appli;01/01/2026;;;;;;;;nope;;R7", siret_for(7)),
        format!(
            "{};Collab;01/01/2026;;;;;;;;;inconnu@cabinet.fr;R8",
            siret_for(8)
        ),
        "5,52100554E+13;Notation;01/01/2026;;;;;;;;;;R9".into(),
        format!("{};Invit;01/01/2026;;;;;;;peut-être;;;R10", siret_for(10)),
        format!("{};Énorme;01/01/2026;;;;;;;;;;{big}", siret_for(11)),
        format!("{};Autre;01/01/2026;;;;;;;;;;R1", siret_for(12)),
        format!("{};Mauvais;01/01/2026;;;;;;;;;;R13", "552 100 554 00014"),
        format!(
            "{};Seconde bonne;2026-07-01;2027-06-30;;;;;;;;;R14",
            siret_for(14)
        ),
        ";Sans date;;;;;;;;;;;R15".into(),
        // A line break in a quoted cell is the spreadsheet's; in a name it
        // would start a header of the invitation: refused, at its cell.
        format!(
            "{};Saut;01/01/2026;;;jean@example.fr;\"Jean\r\nBcc: x@evil.example\";Dupont;;oui;;;R16",
            siret_for(16)
        ),
    ]
}

async fn every_bad_row_reported(kind: BackendKind) {
    let f = fixture(kind).await;
    let before = f.census().await;
    let bytes = csv(&bad_rows());
    let a = f.analyse(&bytes).await.expect("readable");
    let got: Vec<String> = a.problems.iter().map(ToString::to_string).collect();
    let exact = [
        "line 3, column A « SIRET », value \"5521005540001\": 13 digits: the spreadsheet probably dropped a leading zero; format the column as Text and type the 14 digits (not guessed here)",
        &format!(
            "line 4, column A « SIRET », value \"{}\": this SIRET is also on line 2: keep one line per client",
            siret_for(1)
        ),
        "line 5, column C « Début d'exercice », value \"30/02/2025\": \"30/02/2025\" is not a date: month 02/2025 has 28 days",
        "line 10, column A « SIRET », value \"5,52100554E+13\": written in scientific notation, its last digits are lost: format the column as Text and type the 14 digits again",
        "line 11, column J « Inviter », value \"peut-être\": not a yes or no: write oui or non",
        "line 12, column M « Référence externe », value \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…\": 1048576 characters, over the limit of 1000 for a cell: is a whole row pasted into one cell?",
        "line 13, column M « Référence externe », value \"R1\": this reference is also on line 2: keep one line per client",
        "line 14, column A « SIRET », value \"552 100 554 00014\": not a SIRET: checksum failed: not a valid SIRET (check for a mistyped digit)",
        "line 16, column C « Début d'exercice »: empty: give the first day of the client's current exercice, e.g. 01/01/2026",
        "line 17, column G « Dirigeant prénom », value \"Jean\\r\\nBcc: x@evil.example\": holds the invisible control character U+000D at character 5: retype the value",
    ];
    for want in exact {
        assert!(
            got.iter().any(|g| g == want),
            "missing\n  {want}\nin\n  {}",
            got.join("\n  ")
        );
    }
    let prefixed = [
        "line 6, column E « Arborescence », value \"inconnue\": firm cabinet-import has no tree template \"inconnue\"; it has: cabinet-standard",
        "line 7, column I « Thèmes », value \"magie\": unknown theme \"magie\"; the tree shares: ",
        "line 8, column K « Applications », value \"nope\": ",
        "line 9, column L « Collaborateurs », value \"inconnu@cabinet.fr\": inconnu@cabinet.fr is not a member of firm cabinet-import: add it with `dossier member add`",
    ];
    for want in prefixed {
        assert!(
            got.iter().any(|g| g.starts_with(want)),
            "missing\n  {want}…\nin\n  {}",
            got.join("\n  ")
        );
    }
    assert_eq!(
        got.len(),
        exact.len() + prefixed.len(),
        "{}",
        got.join("\n")
    );
    assert_eq!(a.plans.len(), 2, "lines 2 and 15 are good");
    // Not partial: the import is refused whole.
    let r = f.import(&bytes, &request(false)).await;
    assert_eq!(
        (r.status.as_str(), r.rows_created, r.rows_refused),
        ("refused", 0, 14)
    );
    assert_eq!(f.census().await, before, "nothing written, nothing queued");
    f.done().await;
}

#[tokio::test]
async fn every_bad_row_is_reported_with_line_column_and_value_on_sqlite() {
    every_bad_row_reported(BackendKind::Sqlite).await;
}

#[tokio::test]
async fn every_bad_row_is_reported_with_line_column_and_value_on_postgres_and_redis() {
    every_bad_row_reported(BackendKind::Redis).await;
}

/// A file of 1,200 bad rows: the report lists 1,000 problems and says how
/// many more there are; the error file still holds every refused row.
#[tokio::test]
async fn reports_list_a_bounded_number_of_problems() {
    let f = fixture(BackendKind::Sqlite).await;
    let rows: Vec<String> = (0..1_200)
        .map(|i| format!(";Sans date {i};31/02/2026;;;;;;;non;;;B{i}"))
        .collect();
    let r = f.import(&csv(&rows), &request(true)).await;
    assert_eq!(r.rows_refused, 1_200);
    let report = r.report.unwrap_or_default();
    let listed = report.lines().filter(|l| l.starts_with("  - line")).count();
    assert_eq!(listed, 1_000, "{}", &report[..report.len().min(500)]);
    assert!(
        report.contains("… and 200 more problems"),
        "{}",
        &report[report.len().saturating_sub(300)..]
    );
    let errors = store::errors_csv(&f.db, &r.id)
        .await
        .expect("read")
        .expect("an error file");
    assert_eq!(errors.lines().count(), 1 + 1_200, "every refused row");
    f.done().await;
}

/// Cells that a spreadsheet would run as formulas come back in the error
/// file behind a `'` (OWASP's CSV-injection advice), and the corrected file
/// imports them as they were typed.
#[tokio::test]
async fn formulas_in_the_error_file_are_neutralised_and_round_trip() {
    let f = fixture(BackendKind::Sqlite).await;
    let rows = vec![";=1+2;31/04/2026;;;;;;;non;;;@ref-9".to_string()];
    let r = f.import(&csv(&rows), &request(true)).await;
    assert_eq!(r.rows_refused, 1, "{:?}", r.report);
    let errors = store::errors_csv(&f.db, &r.id)
        .await
        .expect("read")
        .expect("an error file");
    let line = errors.lines().nth(1).unwrap_or_default().to_string();
    assert!(line.starts_with(";'=1+2;31/04/2026;"), "{line}");
    assert!(line.contains(";'@ref-9;"), "{line}");
    let fixed = errors.replace("31/04/2026", "30/04/2026");
    let r2 = f.import(fixed.as_bytes(), &request(false)).await;
    assert_eq!(r2.rows_created, 1, "{:?}", r2.report);
    let clients = dossier_core::clients::list(&f.db, FIRM, 5)
        .await
        .expect("list");
    assert_eq!(
        clients[0].company.get("legal_name").map(String::as_str),
        Some("=1+2")
    );
    f.done().await;
}

async fn partial_then_corrected_then_reimported(kind: BackendKind) {
    let f = fixture(kind).await;
    let rows = vec![
        format!(
            "{};Boulangerie Dupont;01/01/2026;31/12/2026;;marie@dupont.example;Marie;Dupont;;oui;;;C1",
            siret_for(21)
        ),
        format!("{};Mauvaise date;31/04/2026;;;;;;;;;;C2", siret_for(22)),
        ";Atelier Martin;01/07/2026;;;;;;;non;;;C3".into(),
    ];
    let bytes = csv(&rows);
    let r = f.import(&bytes, &request(true)).await;
    assert_eq!(
        (
            r.status.as_str(),
            r.rows_created,
            r.rows_refused,
            r.jobs_enqueued
        ),
        ("done", 2, 1, 4),
        "{:?}",
        r.report
    );
    // tree_setup ×2, siret_enrichment, invitation: in the queue.
    assert_eq!(f.census().await[7], 4);
    let errors = store::errors_csv(&f.db, &r.id)
        .await
        .expect("read")
        .expect("an error file");
    assert!(errors.starts_with('\u{feff}'), "BOM for Excel");
    let lines: Vec<&str> = errors.trim_start_matches('\u{feff}').lines().collect();
    assert_eq!(lines.len(), 2, "{errors}");
    assert_eq!(lines[0], format!("{HEADER};erreurs"));
    assert!(
        lines[1].starts_with(&format!("{};Mauvaise date;31/04/2026;", siret_for(22)))
            && lines[1].contains("month 04/2026 has 30 days"),
        "{}",
        lines[1]
    );
    // The error file, corrected, imports (its `erreurs` column is ignored).
    let fixed = errors.replace("31/04/2026", "30/04/2026");
    let r2 = f.import(fixed.as_bytes(), &request(false)).await;
    assert_eq!(
        (r2.status.as_str(), r2.rows_created),
        ("done", 1),
        "{:?}",
        r2.report
    );
    // The whole first file again, and an overlapping one: nothing twice.
    let clients = f.clients().await;
    assert_eq!(clients, 3);
    let fixed_all = String::from_utf8(bytes.clone())
        .expect("utf8")
        .replace("31/04/2026", "30/04/2026");
    let r3 = f.import(fixed_all.as_bytes(), &request(false)).await;
    assert_eq!(
        (r3.status.as_str(), r3.rows_created, r3.rows_skipped),
        ("done", 0, 3)
    );
    let report = r3.report.unwrap_or_default();
    assert!(
        report.contains(&format!(
            "line 2: SIRET {} is already client",
            siret_for(21)
        )),
        "{report}"
    );
    assert!(
        report.contains("line 4: reference C3 is already client"),
        "{report}"
    );
    let overlap = csv(&[
        format!(
            "{};Boulangerie Dupont;01/01/2026;;;;;;;;;;C1",
            siret_for(21)
        ),
        format!("{};Nouvelle;01/01/2026;;;;;;;;;;C4", siret_for(24)),
    ]);
    let r4 = f.import(&overlap, &request(false)).await;
    assert_eq!((r4.rows_created, r4.rows_skipped), (1, 1));
    assert_eq!(f.clients().await, 4);
    // A reference that is another client's, with another SIRET, is refused.
    let clash = csv(&[format!(
        "{};Usurpateur;01/01/2026;;;;;;;;;;C1",
        siret_for(25)
    )]);
    let a = f.analyse(&clash).await.expect("read");
    assert!(
        a.problems[0].to_string().contains(&format!(
            "whose SIRET is {}, not {}: correct the reference or the SIRET",
            siret_for(21),
            siret_for(25)
        )),
        "{:?}",
        a.problems
    );
    f.done().await;
}

#[tokio::test]
async fn partial_import_error_file_corrected_and_reimport_without_duplicates_on_sqlite() {
    partial_then_corrected_then_reimported(BackendKind::Sqlite).await;
}

#[tokio::test]
async fn partial_import_error_file_corrected_and_reimport_without_duplicates_on_postgres_and_redis()
{
    partial_then_corrected_then_reimported(BackendKind::Redis).await;
}

#[tokio::test]
async fn windows_1252_and_comma_files_read_like_utf8() {
    let f = fixture(BackendKind::Sqlite).await;
    let text = format!(
        "siret,raison sociale,debut d'exercice\r\n{},Soci\u{e9}t\u{e9} G\u{e9}n\u{e9}rale,01/01/2026\r\n",
        siret_for(31)
    );
    let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(&text);
    let a = f.analyse(&bytes).await.expect("read");
    assert_eq!(a.table.encoding, "Windows-1252");
    assert!(a.problems.is_empty(), "{:?}", a.problems);
    let r = f.import(&bytes, &request(false)).await;
    assert_eq!(r.rows_created, 1);
    let list = dossier_core::clients::list(&f.db, FIRM, 5)
        .await
        .expect("list");
    assert_eq!(
        list[0].company.get("legal_name").map(String::as_str),
        Some("Société Générale")
    );
    f.done().await;
}

#[tokio::test]
async fn excel_files_import_numbers_and_dates_as_typed() {
    use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
    let f = fixture(BackendKind::Sqlite).await;
    let mut book = Workbook::new();
    let sheet = book.add_worksheet();
    let date = Format::new().set_num_format("dd/mm/yyyy");
    for (c, h) in ["SIRET", "Raison sociale", "Début d'exercice", "Inviter"]
        .iter()
        .enumerate()
    {
        sheet.write_string(0, c as u16, *h).expect("cell");
    }
    let good: f64 = siret_for(55_210_055).parse().expect("number");
    sheet.write_number(1, 0, good).expect("cell");
    sheet.write_string(1, 1, "Numérique SA").expect("cell");
    let d = ExcelDateTime::from_ymd(2026, 4, 1).expect("date");
    sheet
        .write_datetime_with_format(1, 2, &d, &date)
        .expect("cell");
    sheet.write_boolean(1, 3, false).expect("cell");
    // A SIRET typed as a number loses its leading zero.
    let zero = siret_for(5_521_005);
    assert!(zero.starts_with('0'));
    let lost: f64 = zero.parse().expect("number");
    sheet.write_number(2, 0, lost).expect("cell");
    sheet.write_string(2, 1, "Zéro SA").expect("cell");
    sheet.write_string(2, 2, "01/01/2026").expect("cell");
    let bytes = book.save_to_buffer().expect("xlsx");
    let a = f.analyse(&bytes).await.expect("read");
    assert_eq!(a.table.encoding, "xlsx");
    let got: Vec<String> = a.problems.iter().map(ToString::to_string).collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("line 3, column A « SIRET », value \"") && got[0].contains("13 digits"),
        "{got:?}"
    );
    assert_eq!(a.plans.len(), 1);
    let r = f
        .import(
            &bytes,
            &Request {
                partial: true,
                ..request(true)
            },
        )
        .await;
    assert_eq!(r.rows_created, 1);
    let ex = dossier_core::exercice::list(
        &f.db,
        &dossier_core::clients::list(&f.db, FIRM, 1)
            .await
            .expect("list")[0]
            .id,
    )
    .await
    .expect("exercices");
    assert_eq!(
        (ex[0].start.to_string(), ex[0].end.to_string()),
        ("2026-04-01".into(), "2027-03-31".into())
    );
    f.done().await;
}

async fn interrupted_then_resumed(kind: BackendKind) {
    let mut f = fixture(kind).await;
    f.q.settings.imports.batch_rows = 100;
    let bytes = generate_csv(450, 7);
    let id = store::new_id();
    store::create(&f.db, &id, &request(false), bytes.as_bytes(), None)
        .await
        .expect("recorded");
    // The process dies after its second batch is committed.
    let (db, settings, keys, backend, id2) = (
        f.db.clone(),
        f.q.settings.clone(),
        f.keys.clone(),
        f.q.backend.clone(),
        id.clone(),
    );
    let crashed = tokio::spawn(async move {
        let mut batches = 0;
        import::run(
            &db,
            Limits::of(&settings),
            &keys,
            Some(backend.as_ref()),
            &id2,
            &mut |p| {
                if p.created > 0 {
                    batches += 1;
                }
                assert!(batches < 2, "crash");
            },
        )
        .await
    })
    .await;
    assert!(crashed.is_err(), "the first run died");
    assert_eq!(f.clients().await, 200);
    let r = store::get(&f.db, &id).await.expect("get").expect("exists");
    assert_eq!((r.status.as_str(), r.rows_created), ("running", 200));
    // The job runs it again: it resumes, each line created once.
    let deps = Arc::new(JobDeps {
        db: f.db.clone(),
        sirene: Sirene::new(vec![], Quota::local(), Duration::from_secs(1)),
        mail: Mailer::from_settings(&f.q.settings).expect("mail"),
        queue: f.q.backend.clone(),
        queue_settings: f.q.settings.queue.clone(),
        imports: f.q.settings.imports.clone(),
        partners: Partners::from_settings(&f.q.settings).expect("partners"),
        webhooks: dossier_core::jobs::webhook_delivery::Webhooks::from_settings(
            &dossier_core::config::Settings::default(),
        )
        .expect("webhooks settings"),
    });
    let mut registry = Registry::new();
    bulk_import::register(&mut registry, deps);
    let w = f.q.start_worker(registry);
    let job =
        f.q.push(dossier_core::job::NewJob {
            kind: bulk_import::KIND.into(),
            payload: serde_json::json!({ "import_id": id }),
            run_at_ms: None,
            max_attempts: 3,
            idempotency_key: Some(format!("bulk_import:{id}")),
            trace_id: None,
            group: None,
            subject: None,
            bulk: true,
        })
        .await;
    let done =
        f.q.wait_for(&job, Duration::from_secs(60), |j| {
            j.status == dossier_core::job::JobStatus::Done
        })
        .await;
    w.stop().await;
    assert_eq!(
        done.result.as_ref().map(|r| r["created"].clone()),
        Some(serde_json::json!(450))
    );
    let r = store::get(&f.db, &id).await.expect("get").expect("exists");
    assert_eq!(
        (r.status.as_str(), r.rows_created, r.jobs_enqueued),
        ("done", 450, 1350)
    );
    assert_eq!(f.clients().await, 450);
    // Every client's three jobs, once each (the keys make a re-push a no-op).
    let counts = f.q.backend.counts().await.expect("counts");
    let queued: u64 = counts
        .iter()
        .filter(|c| c.kind != bulk_import::KIND)
        .map(|c| c.pending)
        .sum();
    assert_eq!(queued, 1350, "{counts:?}");
    f.done().await;
}

#[tokio::test]
async fn an_interrupted_import_resumes_in_the_bulk_import_job_on_sqlite() {
    interrupted_then_resumed(BackendKind::Sqlite).await;
}

#[tokio::test]
async fn an_interrupted_import_resumes_in_the_bulk_import_job_on_postgres_and_redis() {
    interrupted_then_resumed(BackendKind::Redis).await;
}

#[tokio::test]
async fn the_chosen_provider_goes_with_each_enrichment_job() {
    let f = fixture(BackendKind::Sqlite).await;
    let bytes = csv(&[format!("{};A;01/01/2026;;;;;;;;;;", siret_for(51))]);
    let mut req = request(false);
    req.providers = Some(vec!["sirene-file".into()]);
    let id = store::new_id();
    store::create(&f.db, &id, &req, &bytes, None)
        .await
        .expect("recorded");
    import::run(
        &f.db,
        f.limits(),
        &f.keys,
        Some(f.q.backend.as_ref()),
        &id,
        &mut |_| {},
    )
    .await
    .expect("runs");
    let jobs =
        f.q.backend
            .list(&dossier_core::job::JobFilter {
                kind: Some("siret_enrichment".into()),
                status: None,
                limit: 10,
                ..dossier_core::job::JobFilter::default()
            })
            .await
            .expect("list");
    assert_eq!(
        jobs[0].payload["providers"],
        serde_json::json!(["sirene-file"])
    );
    req.providers = Some(vec!["pages-jaunes".into()]);
    let e = import::analyse(&f.db, f.limits(), &f.keys, &req, "x", &bytes).await;
    assert_eq!(
        file_errors(e),
        [
            "provider \"pages-jaunes\" is not known: choose one of recherche-entreprises, insee, sirene-file"
        ]
    );
    f.done().await;
}

/// The names in a folder, sorted.
fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

async fn drop_folder(kind: BackendKind) {
    use dossier_core::config::ImportSchedule;
    use dossier_core::import::drop_folder;
    let f = fixture(kind).await;
    let root = f.q.dir.path().join("drop");
    let incoming = root.join("incoming");
    std::fs::create_dir_all(&incoming).expect("dir");
    let good = csv(&[
        format!("{};Une;01/01/2026;;;;;;;;;;D1", siret_for(61)),
        format!("{};Deux;01/01/2026;;;;;;;;;;D2", siret_for(62)),
    ]);
    std::fs::write(incoming.join("lundi.csv"), &good).expect("write");
    std::fs::write(
        incoming.join("mardi.csv"),
        csv(&[";Sans date;;;;;;;;;;;D3".into()]),
    )
    .expect("write");
    std::fs::write(incoming.join("mercredi.csv.part"), &good).expect("write");
    let schedule = ImportSchedule {
        name: "nuit".into(),
        cron: "0 * * * * *".into(),
        firm: FIRM.into(),
        folder: root.display().to_string(),
        partial: false,
        provider: None,
        settle_secs: 0,
    };
    // Two workers scan at the same moment: each file is taken once.
    let (a, b) = tokio::join!(
        drop_folder::scan(
            &f.db,
            f.limits(),
            &f.keys,
            Some(f.q.backend.as_ref()),
            &schedule
        ),
        drop_folder::scan(
            &f.db,
            f.limits(),
            &f.keys,
            Some(f.q.backend.as_ref()),
            &schedule
        ),
    );
    let (a, b) = (a.expect("scan a"), b.expect("scan b"));
    let mut names: Vec<(String, String)> = a
        .iter()
        .chain(b.iter())
        .map(|r| (r.file_name.clone(), r.status.clone()))
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(
        names,
        [
            ("lundi.csv".to_string(), "done".to_string()),
            ("mardi.csv".into(), "refused".into())
        ]
    );
    assert_eq!(f.clients().await, 2);
    let ls = |d: &str| names_in(&root.join(d));
    assert_eq!(ls("done"), ["lundi.csv", "lundi.csv.rapport.txt"]);
    assert_eq!(
        ls("failed"),
        [
            "mardi.csv",
            "mardi.csv.erreurs.csv",
            "mardi.csv.rapport.txt"
        ]
    );
    assert_eq!(
        ls("incoming"),
        ["mercredi.csv.part"],
        "a file being written is left"
    );
    assert!(ls("processing").is_empty());
    let report =
        std::fs::read_to_string(root.join("failed/mardi.csv.rapport.txt")).expect("report");
    assert!(
        report.contains("line 2, column C « Début d'exercice »: empty"),
        "{report}"
    );
    // The same file dropped again: imported, every row skipped.
    std::fs::write(incoming.join("lundi.csv"), &good).expect("write");
    let again = drop_folder::scan(&f.db, f.limits(), &f.keys, None, &schedule)
        .await
        .expect("scan");
    assert_eq!((again[0].rows_created, again[0].rows_skipped), (0, 2));
    assert!(
        ls("done").iter().any(|n| n.ends_with("--lundi.csv")),
        "{:?}",
        ls("done")
    );
    // A file younger than settle_secs waits for a later tick.
    std::fs::write(incoming.join("jeudi.csv"), &good).expect("write");
    let slow = ImportSchedule {
        settle_secs: 3600,
        ..schedule.clone()
    };
    let none = drop_folder::scan(&f.db, f.limits(), &f.keys, None, &slow)
        .await
        .expect("scan");
    assert!(none.is_empty());
    assert!(ls("incoming").contains(&"jeudi.csv".to_string()));
    // Left in processing/ by a worker that died: before recording its
    // import, or while running it (taken over only once stale).
    let orphan = store::new_id();
    let other = csv(&[format!("{};Orphelin;01/01/2026;;;;;;;;;;D9", siret_for(69))]);
    std::fs::write(
        root.join(format!("processing/{orphan}--vendredi.csv")),
        &other,
    )
    .expect("write");
    let running = store::new_id();
    let third = csv(&[format!("{};Repris;01/01/2026;;;;;;;;;;D10", siret_for(70))]);
    store::create(
        &f.db,
        &running,
        &request(false),
        &third,
        Some(("nuit", "x")),
    )
    .await
    .expect("recorded");
    std::fs::write(
        root.join(format!("processing/{running}--samedi.csv")),
        &third,
    )
    .expect("write");
    let r = drop_folder::scan(&f.db, f.limits(), &f.keys, None, &slow)
        .await
        .expect("scan");
    assert_eq!(
        r.iter().map(|r| r.file_name.as_str()).collect::<Vec<_>>(),
        ["vendredi.csv"]
    );
    assert_eq!(
        ls("processing"),
        [format!("{running}--samedi.csv")],
        "a live import is left alone"
    );
    let stale = dossier_core::clock::now_ms() - drop_folder::STALE_MS - 1;
    match &f.db {
        Database::Sqlite(p) => sqlx::query("UPDATE imports SET updated_at = $1")
            .bind(stale)
            .execute(p)
            .await
            .map(|_| ()),
        Database::Postgres(p) => sqlx::query("UPDATE imports SET updated_at = $1")
            .bind(stale)
            .execute(p)
            .await
            .map(|_| ()),
    }
    .expect("age");
    let r = drop_folder::scan(&f.db, f.limits(), &f.keys, None, &slow)
        .await
        .expect("scan");
    assert_eq!(
        r.iter()
            .map(|r| (r.id.as_str(), r.status.as_str()))
            .collect::<Vec<_>>(),
        [(running.as_str(), "done")]
    );
    assert!(ls("processing").is_empty());
    assert_eq!(f.clients().await, 4);
    f.done().await;
}

#[tokio::test]
async fn drop_folder_files_are_imported_once_and_filed_with_their_report_on_sqlite() {
    drop_folder(BackendKind::Sqlite).await;
}

#[tokio::test]
async fn drop_folder_files_are_imported_once_and_filed_with_their_report_on_postgres_and_redis() {
    drop_folder(BackendKind::Redis).await;
}

#[test]
fn the_template_imports_cleanly_and_names_every_column() {
    let t = import::columns::template();
    for (_, header, _) in import::columns::ALIASES {
        assert!(t.contains(header), "{header}");
    }
    let table = import::source::read(t.as_bytes(), 1 << 20).expect("read");
    assert_eq!(table.rows.len(), 2);
}

/// A workbook whose one sheet holds a header and a cell at the very last
/// column and row: read as a grid, seventeen billion cells.
fn last_cell_workbook() -> Vec<u8> {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    sheet.write_string(0, 0, "SIRET").expect("cell");
    sheet.write_string(0, 1, "Raison sociale").expect("cell");
    sheet.write_string(1_048_575, 16_383, "x").expect("cell");
    book.save_to_buffer().expect("xlsx")
}

/// A valid workbook with one more part that inflates to 200 MB from a few
/// hundred kilobytes.
fn inflating_workbook() -> Vec<u8> {
    use std::io::Write;
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    sheet.write_string(0, 0, "SIRET").expect("cell");
    sheet.write_string(0, 1, "Raison sociale").expect("cell");
    let plain = book.save_to_buffer().expect("xlsx");
    let mut source = zip::ZipArchive::new(std::io::Cursor::new(plain)).expect("zip");
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..source.len() {
        let part = source.by_index(i).expect("part");
        out.raw_copy_file(part).expect("copy");
    }
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    out.start_file("xl/media/padding.bin", options)
        .expect("part");
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..200 {
        out.write_all(&chunk).expect("write");
    }
    out.finish().expect("zip").into_inner()
}

/// What someone who can write into a drop folder may plant there: links
/// to files the worker can read, a directory, a FIFO, a stray name, links
/// where reports will be written, two workbook bombs. Each bad entry is
/// filed in failed/ with its report, alone; the good file is imported; no
/// file outside the folder is read or written; no scan hangs.
async fn hostile_drop_folder(kind: BackendKind) {
    use dossier_core::config::ImportSchedule;
    use dossier_core::import::drop_folder;
    let f = fixture(kind).await;
    let outside = f.q.dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("dir");
    let secret = outside.join("secret.csv");
    let secret_text = format!(
        "{HEADER}\r\n{};SECRET-ROW-4242;31/04/2026;;;;;;;;;;S1\r\n",
        siret_for(81)
    );
    std::fs::write(&secret, &secret_text).expect("write");
    let victim = outside.join("victim.txt");
    std::fs::write(&victim, "untouched").expect("write");

    let root = f.q.dir.path().join("drop");
    for d in ["incoming", "processing", "done", "failed"] {
        std::fs::create_dir_all(root.join(d)).expect("dir");
    }
    let incoming = root.join("incoming");
    let processing = root.join("processing");
    std::os::unix::fs::symlink(&secret, incoming.join("lien.csv")).expect("symlink");
    std::os::unix::fs::symlink(
        &secret,
        processing.join(format!("{}--lien2.csv", store::new_id())),
    )
    .expect("symlink");
    std::fs::create_dir(processing.join(format!("{}--dossier.csv", store::new_id()))).expect("dir");
    let fifo = processing.join(format!("{}--tube.csv", store::new_id()));
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    assert!(made, "mkfifo (coreutils) makes the FIFO");
    std::fs::write(processing.join("sans-identifiant.csv"), "x").expect("write");
    std::fs::write(incoming.join("case.xlsx"), last_cell_workbook()).expect("write");
    std::fs::write(incoming.join("gonfle.xlsx"), inflating_workbook()).expect("write");
    let good = csv(&[format!("{};Bonne;01/01/2026;;;;;;;;;;G1", siret_for(82))]);
    std::fs::write(incoming.join("bon.csv"), &good).expect("write");
    // Where the good file's report will be written, a link to a victim.
    std::os::unix::fs::symlink(&victim, root.join("done/bon.csv.rapport.txt")).expect("symlink");

    let schedule = ImportSchedule {
        name: "nuit".into(),
        cron: "0 * * * * *".into(),
        firm: FIRM.into(),
        folder: root.display().to_string(),
        partial: false,
        provider: None,
        settle_secs: 0,
    };
    let records = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        drop_folder::scan(
            &f.db,
            f.limits(),
            &f.keys,
            Some(f.q.backend.as_ref()),
            &schedule,
        ),
    )
    .await
    .expect("the scan never blocks")
    .expect("the scan succeeds: bad entries fail alone");
    let mut got: Vec<(String, String)> = records
        .iter()
        .map(|r| (r.file_name.clone(), r.status.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("bon.csv".to_string(), "done".to_string()),
            ("case.xlsx".into(), "refused".into()),
            ("gonfle.xlsx".into(), "refused".into()),
        ]
    );
    assert_eq!(f.clients().await, 1);
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "untouched"
    );
    assert_eq!(
        std::fs::read_to_string(&secret).expect("secret"),
        secret_text
    );
    let ls = |d: &str| names_in(&root.join(d));
    assert!(ls("processing").is_empty(), "{:?}", ls("processing"));
    assert!(ls("incoming").is_empty(), "{:?}", ls("incoming"));
    let failed = ls("failed");
    for name in [
        "lien.csv",
        "lien2.csv",
        "dossier.csv",
        "tube.csv",
        "sans-identifiant.csv",
        "case.xlsx",
        "gonfle.xlsx",
    ] {
        assert!(
            failed.iter().any(|f| f.ends_with(name)),
            "{name} filed in failed/: {failed:?}"
        );
        assert!(
            failed
                .iter()
                .any(|f| f.ends_with(&format!("{name}.rapport.txt"))),
            "{name} has its report: {failed:?}"
        );
    }
    // No report holds a line of the file a link pointed to.
    for d in ["done", "failed"] {
        for entry in std::fs::read_dir(root.join(d)).expect("dir") {
            let path = entry.expect("entry").path();
            if std::fs::symlink_metadata(&path)
                .expect("meta")
                .file_type()
                .is_file()
            {
                let text =
                    String::from_utf8_lossy(&std::fs::read(&path).expect("read")).to_string();
                assert!(
                    !text.contains("SECRET-ROW-4242"),
                    "{} leaks the secret",
                    path.display()
                );
            }
        }
    }
    let report = |suffix: &str| {
        let name = failed
            .iter()
            .find(|f| f.ends_with(suffix))
            .unwrap_or_else(|| panic!("{suffix} in {failed:?}"));
        std::fs::read_to_string(root.join("failed").join(name)).expect("report")
    };
    assert!(report("lien.csv.rapport.txt").contains("symbolic link"));
    assert!(report("tube.csv.rapport.txt").contains("FIFO"));
    assert!(
        report("case.xlsx.rapport.txt").contains("beyond column 256"),
        "{}",
        report("case.xlsx.rapport.txt")
    );
    assert!(
        report("gonfle.xlsx.rapport.txt").contains("inflates to more than"),
        "{}",
        report("gonfle.xlsx.rapport.txt")
    );
    // The good file's report went beside it under a new name.
    assert!(
        ls("done")
            .iter()
            .any(|n| n.ends_with("--bon.csv.rapport.txt")),
        "{:?}",
        ls("done")
    );

    // A drop folder whose subfolder is a link: refused as a whole, nothing moved.
    let linked = f.q.dir.path().join("drop2");
    std::fs::create_dir_all(linked.join("incoming")).expect("dir");
    std::os::unix::fs::symlink(&outside, linked.join("done")).expect("symlink");
    let bad = ImportSchedule {
        folder: linked.display().to_string(),
        ..schedule
    };
    let err = drop_folder::scan(&f.db, f.limits(), &f.keys, None, &bad)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("is not a directory"), "{err}");
    f.done().await;
}

#[tokio::test]
async fn hostile_drop_folder_entries_fail_alone_on_sqlite() {
    hostile_drop_folder(BackendKind::Sqlite).await;
}

#[tokio::test]
async fn hostile_drop_folder_entries_fail_alone_on_postgres_and_redis() {
    hostile_drop_folder(BackendKind::Redis).await;
}
