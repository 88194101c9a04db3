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

/// `prefix` (ASCII digits) with the one digit appended that makes it pass
/// Luhn: how a SIREN's ninth digit and a SIRET's fourteenth are made.
pub fn with_luhn_digit(prefix: &str) -> String {
    (b'0'..=b'9')
        .map(|d| format!("{prefix}{}", char::from(d)))
        .find(|s| luhn(s))
        .unwrap_or_else(|| format!("{prefix}0"))
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
        format!("FR{}{}", vat_key(&self.0), self.0)
    }
}

/// A French intra-community VAT number: `FR`, a two-digit key, nine digits.
///
/// The nine digits are the company's SIREN, except for companies of Monaco,
/// which are registered for French VAT under numbers starting `000` that
/// are not SIRENs (so they carry no Luhn key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VatNumber(String);

impl VatNumber {
    /// Accepts `FR40303265045`, `fr 40 303 265 045`, `FR-40.303.265.045`,
    /// with or without `FR`; refuses a wrong key, a SIREN that fails Luhn,
    /// and the letter keys of the "new style" numbers (see docs/identifiers.md).
    pub fn parse(input: &str) -> Result<VatNumber, NumberError> {
        let compact: String = input
            .chars()
            .filter(|c| !is_separator(*c) && *c != '-')
            .collect();
        let body = match compact.get(..2) {
            Some(p) if p.eq_ignore_ascii_case("FR") => &compact[2..],
            _ => compact.as_str(),
        };
        let d = digits(body, "VAT number (without FR)", 11)?;
        let (key, number) = d.split_at(2);
        if !number.starts_with("000") && !luhn(number) {
            return Err(NumberError::Checksum {
                what: "VAT number (its last nine digits are not a valid SIREN)",
            });
        }
        if key != vat_key(number) {
            return Err(NumberError::Checksum {
                what: "VAT number (its key does not match the SIREN)",
            });
        }
        Ok(VatNumber(format!("FR{d}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SIREN inside, or `None` for a Monaco number.
    pub fn siren(&self) -> Option<Siren> {
        let number = &self.0[4..];
        (!number.starts_with("000")).then(|| Siren(number.to_string()))
    }
}

/// The two-digit key of a VAT number: (12 + 3 × (n mod 97)) mod 97.
fn vat_key(nine_digits: &str) -> String {
    // Nine ASCII digits always fit in a u64.
    let n: u64 = nine_digits.parse().unwrap_or(0);
    format!("{:02}", (12 + 3 * (n % 97)) % 97)
}

/// A valid 14-digit SIRET (SIREN + 5-digit NIC).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Siret(String);

/// La Poste's head office: the one SIRET of its SIREN that follows Luhn
/// (and whose digit sum, 26, is not a multiple of 5).
const LA_POSTE_HEAD_OFFICE: &str = "35600000000048";

impl Siret {
    /// Normalises then checks: 14 digits, the SIRET's own check (Luhn, or
    /// for La Poste's establishments but its head office a digit sum that
    /// is a multiple of 5), and a SIREN that passes Luhn.
    pub fn parse(input: &str) -> Result<Siret, NumberError> {
        let d = digits(input, "SIRET", 14)?;
        let own_check = if d.starts_with(LA_POSTE_SIREN) && d != LA_POSTE_HEAD_OFFICE {
            let sum: u32 = d.bytes().map(|b| u32::from(b - b'0')).sum();
            sum.is_multiple_of(5)
        } else {
            luhn(&d)
        };
        if !own_check {
            return Err(NumberError::Checksum { what: "SIRET" });
        }
        // Fourteen digits can pass Luhn around a mistyped SIREN: the SIREN
        // carries its own key, checked too.
        if !luhn(&d[..9]) {
            return Err(NumberError::Checksum {
                what: "SIRET (its first nine digits are not a valid SIREN)",
            });
        }
        Ok(Siret(d))
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
    /// `siret`, `siren` or `vat`, when valid.
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

/// Checks a SIRET, a SIREN when the input holds exactly 9 digits, or a VAT
/// number when it starts with `FR`.
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
    let is_vat = input
        .trim_start()
        .get(..2)
        .is_some_and(|p| p.eq_ignore_ascii_case("FR"));
    let outcome = if is_vat {
        VatNumber::parse(input).map(|vat| {
            report.kind = Some("vat");
            report.siren = vat.siren().map(|s| s.0);
            report.vat_number = Some(vat.0);
        })
    } else if digit_count == 9 {
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
    fn la_poste_head_office_follows_luhn() {
        // Digit sum 26: refused by the La Poste rule, valid by Luhn.
        assert!(Siret::parse("356 000 000 00048").is_ok());
        assert!(Siret::parse("35600000000049").is_err());
    }

    #[test]
    fn the_siren_inside_a_siret_passes_luhn_too() {
        // 14 digits that pass Luhn around a SIREN that does not.
        let s = "73282932100007";
        assert!(luhn(s) && !luhn(&s[..9]));
        assert!(matches!(Siret::parse(s), Err(NumberError::Checksum { .. })));
    }

    #[test]
    fn vat_numbers_are_read_back() {
        for ok in [
            "FR03552081317",
            "fr 03 552 081 317",
            "03552081317",
            "FR-39.356.000.000",
        ] {
            assert!(VatNumber::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            VatNumber::parse("FR 03 552081317").map(|v| v.siren().map(|s| s.0)),
            Ok(Some("552081317".into()))
        );
        for bad in [
            "FR04552081317",
            "FR03552081318",
            "FRK7399859412",
            "FR0355208131",
        ] {
            assert!(VatNumber::parse(bad).is_err(), "{bad}");
        }
        let r = check("FR 03 552 081 317");
        assert_eq!((r.valid, r.kind), (true, Some("vat")));
        assert_eq!(r.siren.as_deref(), Some("552081317"));
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
