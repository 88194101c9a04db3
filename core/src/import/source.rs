//! Reading a spreadsheet file into a header and rows of text cells, with
//! the file line (CSV) or sheet row (Excel) of each row.
//!
//! CSV as French spreadsheets write it: UTF-8 with or without BOM, else
//! Windows-1252 (Excel's "CSV (séparateur : point-virgule)"); `;`, `,` or
//! tab separators, detected on the header line. Excel: the first sheet of
//! an `.xlsx`; numbers that are integers keep no decimal part, dates are
//! written ISO (`2025-01-01`).

use std::io::Cursor;

use calamine::{DataRef, Reader, Xlsx};

/// A file's cells, as text.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<RawRow>,
    /// `UTF-8`, `UTF-8 (BOM)`, `Windows-1252` or `xlsx`.
    pub encoding: &'static str,
    /// The CSV separator (`;` for Excel files, for their error report).
    pub separator: u8,
}

/// One row of cells, padded to the header's width.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRow {
    /// 1-based line of the file (CSV) or row of the sheet (Excel).
    pub line: usize,
    pub cells: Vec<String>,
    /// Cells beyond the header's width that held something.
    pub extra: usize,
}

/// A file that cannot be read as a table at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error(
        "the file is empty: it needs a header line and one line per client (see `dossier import template`)"
    )]
    Empty,
    #[error(
        "the file is {0}: save it as \"CSV UTF-8\" (Excel: File › Save as › CSV UTF-8) or as .xlsx"
    )]
    Unsupported(String),
    #[error("line {line}: {message}")]
    Csv { line: usize, message: String },
    #[error("the Excel file cannot be read ({0}): open it in Excel and save it again as .xlsx")]
    Excel(String),
    #[error(
        "the header has a single column {0:?}: separate the columns with ; or , (see `dossier import template`)"
    )]
    OneColumn(String),
    #[error(
        "the file is {size} bytes, over the limit of {limit} (imports.max_file_bytes): split it"
    )]
    TooLarge { size: usize, limit: usize },
    #[error(
        "the header has {found} columns, more than {max}: the import has 13 (see `dossier import template`); is this the right file?"
    )]
    TooManyColumns { found: usize, max: usize },
    #[error(
        "row {row} has a value in column {column}, beyond column {max}: delete what is right of the table, then save again"
    )]
    CellBeyondColumns {
        row: usize,
        column: usize,
        max: usize,
    },
    #[error(
        "the Excel file inflates to more than {limit} bytes: it is not a list of clients (or save it again from Excel, without pictures)"
    )]
    Inflated { limit: u64 },
}

/// Reads `bytes`, an `.xlsx` file or CSV text (told apart by content, not by
/// the name).
pub fn read(bytes: &[u8], max_bytes: usize) -> Result<Table, SourceError> {
    if bytes.len() > max_bytes {
        return Err(SourceError::TooLarge {
            size: bytes.len(),
            limit: max_bytes,
        });
    }
    if bytes.starts_with(b"PK\x03\x04") {
        return read_xlsx(bytes);
    }
    if bytes.starts_with(&[0xD0, 0xCF, 0x11, 0xE0]) {
        return Err(SourceError::Unsupported(
            "an Excel 97-2003 workbook (.xls)".into(),
        ));
    }
    let text = decode(bytes)?;
    read_csv(&text.0, text.1)
}

/// The text of a CSV file and the encoding it was in.
fn decode(bytes: &[u8]) -> Result<(String, &'static str), SourceError> {
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(SourceError::Unsupported(
            "UTF-16 text (Excel's \"Unicode text\")".into(),
        ));
    }
    if bytes.contains(&0) {
        // UTF-16 without its mark puts a NUL beside every ASCII letter.
        let nuls = bytes.iter().filter(|b| **b == 0).count();
        let what = if nuls * 3 >= bytes.len() {
            "UTF-16 text without a byte-order mark"
        } else {
            "binary, not text (it holds NUL bytes)"
        };
        return Err(SourceError::Unsupported(what.into()));
    }
    if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return match std::str::from_utf8(rest) {
            Ok(t) => Ok((t.to_string(), "UTF-8 (BOM)")),
            Err(e) => Err(SourceError::Unsupported(format!(
                "marked UTF-8 but byte {} is not UTF-8",
                e.valid_up_to() + 4
            ))),
        };
    }
    match std::str::from_utf8(bytes) {
        Ok(t) => Ok((t.to_string(), "UTF-8")),
        // Every byte means something in Windows-1252, the encoding of
        // Excel's plain "CSV" on a French Windows.
        Err(_) => {
            let (text, _, _) = encoding_rs::WINDOWS_1252.decode(bytes);
            Ok((text.into_owned(), "Windows-1252"))
        }
    }
}

/// The separator the header line uses most, outside quotes.
fn separator(text: &str) -> u8 {
    let header = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut counts = [(b';', 0usize), (b',', 0), (b'\t', 0)];
    let mut quoted = false;
    for b in header.bytes() {
        if b == b'"' {
            quoted = !quoted;
        } else if !quoted && let Some(c) = counts.iter_mut().find(|c| c.0 == b) {
            c.1 += 1;
        }
    }
    // Ties go to `;`, the French default.
    counts
        .iter()
        .max_by_key(|c| (c.1, c.0 == b';'))
        .map_or(b';', |c| c.0)
}

fn blank(cells: &[String]) -> bool {
    cells.iter().all(|c| c.trim().is_empty())
}

/// Pads or trims `cells` to `width`, counting the non-empty cells cut.
fn fit(line: usize, mut cells: Vec<String>, width: usize) -> RawRow {
    let extra = cells
        .iter()
        .skip(width)
        .filter(|c| !c.trim().is_empty())
        .count();
    cells.resize(width, String::new());
    RawRow { line, cells, extra }
}

/// The file line where a record starts. The reader's own line count lags
/// behind line ends it has not consumed yet, so lines are counted here from
/// the record's byte offset (records come in order: counting is linear).
struct LineCounter<'a> {
    bytes: &'a [u8],
    pos: usize,
    line: usize,
}

impl<'a> LineCounter<'a> {
    fn new(text: &'a str) -> Self {
        LineCounter {
            bytes: text.as_bytes(),
            pos: 0,
            line: 1,
        }
    }

    fn at(&mut self, mut byte: usize) -> usize {
        // A record starts after the line ends (and blank lines) before it.
        while matches!(self.bytes.get(byte), Some(b'\r' | b'\n')) {
            byte += 1;
        }
        let end = byte.min(self.bytes.len());
        if end >= self.pos {
            // A line ends at `\n`, or at a `\r` alone (old Mac files), as
            // the CSV reader sees it.
            let (from, bytes) = (self.pos, self.bytes);
            self.line += bytes[from..end]
                .iter()
                .enumerate()
                .filter(|(i, b)| {
                    **b == b'\n' || (**b == b'\r' && bytes.get(from + i + 1) != Some(&b'\n'))
                })
                .count();
            self.pos = end;
        }
        self.line
    }
}

fn read_csv(text: &str, encoding: &'static str) -> Result<Table, SourceError> {
    if text.trim().is_empty() {
        return Err(SourceError::Empty);
    }
    let sep = separator(text);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(sep)
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut headers: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    let mut lines = LineCounter::new(text);
    for record in reader.records() {
        let record = record.map_err(|e| SourceError::Csv {
            line: e.position().map_or(0, |p| lines.at(p.byte() as usize)),
            message: format!("{e}: check the quotes around this line's values"),
        })?;
        let line = record.position().map_or(0, |p| lines.at(p.byte() as usize));
        let cells: Vec<String> = record
            .iter()
            .map(|c| super::formula::restore(c.to_string()))
            .collect();
        if blank(&cells) {
            continue;
        }
        match &headers {
            None => {
                let mut h = cells;
                while h.last().is_some_and(|c| c.trim().is_empty()) {
                    h.pop();
                }
                if h.len() == 1 {
                    return Err(SourceError::OneColumn(h[0].clone()));
                }
                if h.len() > MAX_COLUMNS {
                    return Err(too_many_columns(h.len()));
                }
                headers = Some(h);
            }
            Some(h) => rows.push(fit(line, cells, h.len())),
        }
    }
    Ok(Table {
        headers: headers.ok_or(SourceError::Empty)?,
        rows,
        encoding,
        separator: sep,
    })
}

/// The most columns a file may have: the import knows 13, and a header of
/// thousands is a wrong file (or a way to make a report of gigabytes).
pub const MAX_COLUMNS: usize = 256;

/// The most an `.xlsx` may inflate to, all its parts together. A real
/// firm's portfolio of ten thousand clients inflates to a few megabytes; a
/// 2.5 MB "zip bomb" inflates to a gigabyte.
pub const MAX_INFLATED_BYTES: u64 = 128 * 1024 * 1024;

/// The most parts an `.xlsx` may hold (Excel writes about ten).
const MAX_PARTS: usize = 1_000;

fn too_many_columns(found: usize) -> SourceError {
    SourceError::TooManyColumns {
        found,
        max: MAX_COLUMNS,
    }
}

/// Inflates every part of the workbook once, counting, before calamine
/// holds any of it in memory (it loads the shared strings whole): the
/// sizes a zip declares can lie, so they are not trusted.
fn check_inflated_size(bytes: &[u8]) -> Result<(), SourceError> {
    use std::io::Read;
    let excel = |e: &dyn std::fmt::Display| SourceError::Excel(e.to_string());
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| excel(&e))?;
    if archive.len() > MAX_PARTS {
        return Err(SourceError::Excel(format!(
            "{} parts in the workbook, more than {MAX_PARTS}",
            archive.len()
        )));
    }
    let mut total: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    for i in 0..archive.len() {
        let mut part = archive.by_index(i).map_err(|e| excel(&e))?;
        loop {
            let n = part.read(&mut buf).map_err(|e| excel(&e))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > MAX_INFLATED_BYTES {
                return Err(SourceError::Inflated {
                    limit: MAX_INFLATED_BYTES,
                });
            }
        }
    }
    Ok(())
}

/// The text of one Excel cell.
fn cell_text(d: &DataRef<'_>) -> String {
    match d {
        DataRef::Empty => String::new(),
        DataRef::String(s) | DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => s.clone(),
        DataRef::SharedString(s) => (*s).to_string(),
        DataRef::Int(i) => i.to_string(),
        // Integers stored as floats (SIRETs, years) print without `.0`;
        // 5.52100554E+13 prints all its digits, so a lost leading zero shows.
        DataRef::Float(f) if f.fract() == 0.0 && f.abs() < 1e16 => format!("{f:.0}"),
        DataRef::Float(f) => f.to_string(),
        DataRef::Bool(b) => if *b { "oui" } else { "non" }.to_string(),
        DataRef::DateTime(dt) => dt
            .as_datetime()
            .map(|t| t.date().to_string())
            .unwrap_or_else(|| dt.as_f64().to_string()),
        DataRef::Error(e) => format!("#{e:?}"),
    }
}

/// The first sheet of an `.xlsx`, read cell by cell: memory follows the
/// cells that hold something, never the sheet's declared or apparent
/// dimensions (a single cell at XFD1048576 would otherwise make a grid of
/// seventeen billion cells).
fn read_xlsx(bytes: &[u8]) -> Result<Table, SourceError> {
    check_inflated_size(bytes)?;
    let excel = |e: &dyn std::fmt::Display| SourceError::Excel(e.to_string());
    let mut book: Xlsx<_> = Xlsx::new(Cursor::new(bytes)).map_err(|e| excel(&e))?;
    let first = book
        .sheet_names()
        .first()
        .cloned()
        .ok_or_else(|| SourceError::Excel("the workbook has no sheet".into()))?;
    let mut cells = book.worksheet_cells_reader(&first).map_err(|e| excel(&e))?;
    // (sheet row, its cells by column), rows in the order the sheet has them.
    let mut sheet: Vec<(u32, Vec<String>)> = Vec::new();
    while let Some(cell) = cells.next_cell().map_err(|e| excel(&e))? {
        let text = cell_text(cell.get_value());
        if text.trim().is_empty() {
            continue;
        }
        let (row, col) = cell.get_position();
        let col = col as usize;
        if col >= MAX_COLUMNS {
            return Err(SourceError::CellBeyondColumns {
                row: row as usize + 1,
                column: col + 1,
                max: MAX_COLUMNS,
            });
        }
        if sheet.last().is_none_or(|(r, _)| *r != row) {
            sheet.push((row, Vec::new()));
        }
        if let Some((_, line)) = sheet.last_mut() {
            if line.len() <= col {
                line.resize(col + 1, String::new());
            }
            line[col] = super::formula::restore(text);
        }
    }
    // The sheet's rows need not come in order; the file's lines do.
    sheet.sort_by_key(|(r, _)| *r);
    let mut headers: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    for (row, cells) in sheet {
        let line = row as usize + 1;
        match &headers {
            None => headers = Some(cells),
            Some(h) => rows.push(fit(line, cells, h.len())),
        }
    }
    Ok(Table {
        headers: headers.ok_or(SourceError::Empty)?,
        rows,
        encoding: "xlsx",
        separator: b';',
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    #[test]
    fn utf8_bom_semicolons_quotes_and_blank_lines() {
        let t = read(
            "\u{feff}SIRET;Raison sociale\r\n\r\n\"552 100 554 00013\";\"Dupont; fils\"\r\n;\r\n"
                .as_bytes(),
            MAX,
        )
        .expect("table");
        assert_eq!(t.encoding, "UTF-8 (BOM)");
        assert_eq!(t.headers, ["SIRET", "Raison sociale"]);
        assert_eq!(t.rows.len(), 1);
        assert_eq!(t.rows[0].line, 3);
        assert_eq!(t.rows[0].cells, ["552 100 554 00013", "Dupont; fils"]);
    }

    #[test]
    fn windows_1252_and_commas() {
        let bytes = b"siret,raison sociale\n55210055400013,Soci\xe9t\xe9 G\xe9n\xe9rale\n";
        let t = read(bytes, MAX).expect("table");
        assert_eq!(t.encoding, "Windows-1252");
        assert_eq!(t.separator, b',');
        assert_eq!(t.rows[0].cells[1], "Société Générale");
    }

    #[test]
    fn files_that_are_not_tables() {
        assert_eq!(read(b"", MAX), Err(SourceError::Empty));
        assert_eq!(read(b"  \n\n", MAX), Err(SourceError::Empty));
        let utf16: Vec<u8> = "SIRET;Nom\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert!(
            matches!(read(&utf16, MAX), Err(SourceError::Unsupported(m)) if m.contains("UTF-16"))
        );
        assert!(
            matches!(read(&[0xD0, 0xCF, 0x11, 0xE0, 1, 2], MAX), Err(SourceError::Unsupported(m)) if m.contains(".xls"))
        );
        assert_eq!(
            read(b"siret\n123\n", MAX),
            Err(SourceError::OneColumn("siret".into()))
        );
        assert!(matches!(
            read(b"a;b\n1;2\n", 3),
            Err(SourceError::TooLarge { .. })
        ));
    }

    #[test]
    fn absurd_headers_are_refused_at_once() {
        let header = (0..=MAX_COLUMNS)
            .map(|i| format!("c{i}"))
            .collect::<Vec<_>>()
            .join(";");
        assert_eq!(
            read(format!("{header}\r\n1;2\r\n").as_bytes(), MAX),
            Err(SourceError::TooManyColumns {
                found: MAX_COLUMNS + 1,
                max: MAX_COLUMNS
            })
        );
        let fits = (0..MAX_COLUMNS)
            .map(|i| format!("c{i}"))
            .collect::<Vec<_>>()
            .join(";");
        assert!(read(format!("{fits}\r\n1;2\r\n").as_bytes(), MAX).is_ok());
    }

    #[test]
    fn extra_cells_are_counted_and_short_rows_padded() {
        let t = read(b"a;b;c\n1;2\n1;2;3;4;\n", MAX).expect("table");
        assert_eq!(t.rows[0].cells, ["1", "2", ""]);
        assert_eq!(t.rows[1].extra, 1);
    }
}
