//! SIREN and SIRET numbers: normalisation, checksum, VAT number.
//!
//! Numbers stay strings: leading zeros matter (`00552013500038`).

use std::fmt;

/// Characters people paste inside numbers: spaces (also non-breaking and
/// narrow non-breaking, as French locales print them), tabs and dots.
fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '\t' | '.' | '\u{a0}' | '\u{202f}')
}

/// The SIREN of La Poste, whose SIRETs follow their own checksum.
const LA_POSTE_SIREN: &str = "356000000";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("empty: a {what} has {expected} digits")]
    Empty { what: &'static str, expected: usize },
    #[error(
        "{found} digits found, a {what} has {expected} (a spreadsheet may have dropped a leading zero)"
    )]
    WrongLength {
        what: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("character {ch:?} at position {position} is not a digit")]
    NonDigit { position: usize, ch: char },
    #[error("checksum failed: not a valid {what} (check for a mistyped digit)")]
    Checksum { what: &'static str },
}

/// Keeps the digits, refusing anything but digits and separators.
fn digits(input: &str, what: &'static str, expected: usize) -> Result<String, NumberError> {
    let mut out = String::with_capacity(expected);
    for (i, c) in input.chars().enumerate() {
        if c.is_ascii_digit() {
            out.push(c);
        } else if !is_separator(c) {
            return Err(NumberError::NonDigit {
                position: i + 1,
                ch: c,
            });
        }
    }
    match out.len() {
        0 => Err(NumberError::Empty { what, expected }),
        n if n != expected => Err(NumberError::WrongLength {
            what,
            expected,
            found: n,
        }),
        _ => Ok(out),
    }
}

/// The Luhn check over ASCII digits.
pub fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 { d2 - 9 } else { d2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A valid 9-digit SIREN.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Siren(String);

impl Siren {
    pub fn parse(input: &str) -> Result<Siren, NumberError> {
        let d = digits(input, "SIREN", 9)?;
        if luhn(&d) {
            Ok(Siren(d))
        } else {
            Err(NumberError::Checksum { what: "SIREN" })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Intra-community VAT number: `FR` + key + SIREN, key = (12 + 3 × (SIREN mod 97)) mod 97.
    pub fn vat_number(&self) -> String {
        // Nine digits always fit in a u64.
        let n: u64 = self.0.parse().unwrap_or(0);
        let key = (12 + 3 * (n % 97)) % 97;
        format!("FR{key:02}{}", self.0)
    }
}

/// A valid 14-digit SIRET (SIREN + 5-digit NIC).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Siret(String);

impl Siret {
    /// Normalises then checks: 14 digits and Luhn, or for La Poste a digit
    /// sum that is a multiple of 5.
    pub fn parse(input: &str) -> Result<Siret, NumberError> {
        let d = digits(input, "SIRET", 14)?;
        let valid = if d.starts_with(LA_POSTE_SIREN) {
            let sum: u32 = d.bytes().map(|b| u32::from(b - b'0')).sum();
            sum.is_multiple_of(5)
        } else {
            luhn(&d)
        };
        if valid {
            Ok(Siret(d))
        } else {
            Err(NumberError::Checksum { what: "SIRET" })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn siren(&self) -> Siren {
        Siren(self.0[..9].to_string())
    }

    pub fn nic(&self) -> &str {
        &self.0[9..]
    }
}

impl fmt::Display for Siret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl NumberError {
    /// A stable code for scripts: `empty`, `wrong_length`, `non_digit`, `checksum`.
    pub fn code(&self) -> &'static str {
        match self {
            NumberError::Empty { .. } => "empty",
            NumberError::WrongLength { .. } => "wrong_length",
            NumberError::NonDigit { .. } => "non_digit",
            NumberError::Checksum { .. } => "checksum",
        }
    }
}

/// What `dossier siret check` reports about a number.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckReport {
    pub input: String,
    pub valid: bool,
    /// `siret` or `siren`, when valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub siret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub siren: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vat_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Checks a SIRET, or a SIREN when the input holds exactly 9 digits.
pub fn check(input: &str) -> CheckReport {
    let digit_count = input.chars().filter(char::is_ascii_digit).count();
    let mut report = CheckReport {
        input: input.to_string(),
        valid: false,
        kind: None,
        siret: None,
        siren: None,
        nic: None,
        vat_number: None,
        error_code: None,
        error: None,
    };
    let outcome = if digit_count == 9 {
        Siren::parse(input).map(|siren| {
            report.kind = Some("siren");
            report.vat_number = Some(siren.vat_number());
            report.siren = Some(siren.0);
        })
    } else {
        Siret::parse(input).map(|siret| {
            let siren = siret.siren();
            report.kind = Some("siret");
            report.nic = Some(siret.nic().to_string());
            report.vat_number = Some(siren.vat_number());
            report.siren = Some(siren.0);
            report.siret = Some(siret.0);
        })
    };
    match outcome {
        Ok(()) => report.valid = true,
        Err(e) => {
            report.error_code = Some(e.code());
            report.error = Some(e.to_string());
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_sirets_with_separators() {
        let s = Siret::parse(" 732 829 320 00074 ").expect("valid");
        assert_eq!(s.as_str(), "73282932000074");
        assert_eq!(s.siren().as_str(), "732829320");
        assert_eq!(s.nic(), "00074");
        assert!(Siret::parse("732.829.320.00074").is_ok());
        assert!(Siret::parse("732\u{a0}829\u{202f}320 00074").is_ok());
        assert!(Siret::parse("88087814500015").is_ok());
    }

    #[test]
    fn keeps_leading_zeros() {
        assert_eq!(
            Siret::parse("00552013500038").map(|s| s.to_string()),
            Ok("00552013500038".into())
        );
    }

    #[test]
    fn la_poste_rule() {
        assert!(Siret::parse("35600000049837").is_ok());
        assert!(!luhn("35600000049837"));
        assert_eq!(
            Siret::parse("35600000049838"),
            Err(NumberError::Checksum { what: "SIRET" })
        );
    }

    #[test]
    fn explains_what_is_wrong() {
        assert_eq!(
            Siret::parse("7328293200007"),
            Err(NumberError::WrongLength {
                what: "SIRET",
                expected: 14,
                found: 13
            })
        );
        assert_eq!(
            Siret::parse("73282932O00074"),
            Err(NumberError::NonDigit {
                position: 9,
                ch: 'O'
            })
        );
        assert_eq!(
            Siret::parse("73282932000075"),
            Err(NumberError::Checksum { what: "SIRET" })
        );
        assert_eq!(
            Siret::parse("  "),
            Err(NumberError::Empty {
                what: "SIRET",
                expected: 14
            })
        );
    }

    #[test]
    fn check_reports_siret_and_siren() {
        let r = check("732 829 320 00074");
        assert!(r.valid);
        assert_eq!(r.kind, Some("siret"));
        assert_eq!(r.vat_number.as_deref(), Some("FR44732829320"));
        let r = check("732829320");
        assert_eq!((r.valid, r.kind), (true, Some("siren")));
        assert_eq!(r.nic, None);
        let r = check("7328293200007");
        assert_eq!(r.error_code, Some("wrong_length"));
        assert!(!r.valid);
    }

    #[test]
    fn thirteen_digits_that_pass_luhn_are_still_refused() {
        // A SIRET that lost its leading zero may still pass Luhn: length decides.
        let padded = "00552013500038";
        assert!(Siret::parse(padded).is_ok());
        assert!(luhn(&padded[1..]));
        assert_eq!(
            Siret::parse(&padded[1..]),
            Err(NumberError::WrongLength {
                what: "SIRET",
                expected: 14,
                found: 13
            })
        );
    }

    #[test]
    fn vat_numbers() {
        assert_eq!(
            Siren::parse("552081317").map(|s| s.vat_number()),
            Ok("FR03552081317".into())
        );
        assert_eq!(
            Siren::parse("356000000").map(|s| s.vat_number()),
            Ok("FR39356000000".into())
        );
    }
}
