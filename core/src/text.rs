//! The rules every text field obeys, whatever door it comes in by (hook,
//! command, import file): a length bound, and no control characters —
//! a NUL is refused by PostgreSQL mid-transaction, and an escape sequence
//! stored in a name reaches the operator's terminal through
//! `dossier client list`. One place, so the importer and the forms agree.

/// Why a text value is refused. Never carries the value itself: it may be
/// a secret (an app setting) or personal data (an email).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("{chars} characters, over the limit of {max}: is a whole row pasted into one field?")]
    TooLong { chars: usize, max: usize },
    #[error(
        "holds the invisible control character U+{code:04X} at character {position}: retype the value"
    )]
    Control { code: u32, position: usize },
}

/// Longest name, label or address line.
pub const MAX_TEXT: usize = 500;
/// Longest identifier: a firm, a tree, an app, a theme, a setting's name.
pub const MAX_ID: usize = 200;
/// Longest value of an app setting (a private key in PEM fits).
pub const MAX_SETTING: usize = 16 * 1024;
/// Longest email address (RFC 5321's path limit).
pub const MAX_EMAIL: usize = 254;

/// Whether `c` is a character no field may hold: C0 and C1 controls, DEL,
/// and the bidirectional overrides that make a name read backwards.
fn forbidden(c: char, multiline: bool) -> bool {
    if multiline && matches!(c, '\n' | '\r' | '\t') {
        return false;
    }
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn check_with(value: &str, max: usize, multiline: bool) -> Result<(), TextError> {
    let chars = value.chars().count();
    if chars > max {
        return Err(TextError::TooLong { chars, max });
    }
    match value
        .chars()
        .enumerate()
        .find(|(_, c)| forbidden(*c, multiline))
    {
        Some((i, c)) => Err(TextError::Control {
            code: c as u32,
            position: i + 1,
        }),
        None => Ok(()),
    }
}

/// A one-line field: no control character at all.
pub fn check(value: &str, max: usize) -> Result<(), TextError> {
    check_with(value, max, false)
}

/// A cell of an import file: line breaks and tabs are the spreadsheet's
/// (an address typed over two lines); other controls are refused.
pub fn check_cell(value: &str, max: usize) -> Result<(), TextError> {
    check_with(value, max, true)
}

fn escaped(value: &str, multiline: bool) -> std::borrow::Cow<'_, str> {
    if !value.chars().any(|c| forbidden(c, multiline)) {
        return std::borrow::Cow::Borrowed(value);
    }
    std::borrow::Cow::Owned(
        value
            .chars()
            .map(|c| {
                if forbidden(c, multiline) {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// `value` made safe to print on one line: control characters shown as
/// `\u{…}` escapes. For data stored before the rules above, and for
/// anything read back from outside (a registry's answer, a file name).
pub fn printable(value: &str) -> std::borrow::Cow<'_, str> {
    escaped(value, false)
}

/// Text for a terminal: line breaks and tabs kept, every other control
/// (escape sequences that clear the screen or retitle the window)
/// escaped.
pub fn for_terminal(text: &str) -> std::borrow::Cow<'_, str> {
    escaped(text, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_controls() {
        assert!(check("Boulangerie Dupont", MAX_TEXT).is_ok());
        assert!(check("Émilie Ñúñez-Lefèvre", MAX_TEXT).is_ok());
        assert_eq!(
            check(&"x".repeat(501), MAX_TEXT),
            Err(TextError::TooLong {
                chars: 501,
                max: 500
            })
        );
        for bad in [
            "a\0b",
            "a\u{1b}[31mb",
            "a\nb",
            "a\u{7f}",
            "a\u{9b}b",
            "abc\u{202e}fdp.exe",
        ] {
            assert!(
                matches!(check(bad, MAX_TEXT), Err(TextError::Control { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(
            check("ab\0", 10),
            Err(TextError::Control {
                code: 0,
                position: 3
            })
        );
        assert!(check_cell("12 rue X\nBât. B\tétage 2", MAX_TEXT).is_ok());
        assert!(check_cell("a\0", MAX_TEXT).is_err());
    }

    #[test]
    fn printable_escapes_controls() {
        assert_eq!(printable("plain"), "plain");
        assert_eq!(printable("a\u{1b}[2Jb\n"), "a\\u{1b}[2Jb\\u{a}");
        assert_eq!(for_terminal("a\u{1b}[2Jb\n\tc"), "a\\u{1b}[2Jb\n\tc");
    }
}
