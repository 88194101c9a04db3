//! The company record the registries fill, whatever the provider.

use serde::{Deserialize, Serialize};

/// Open or closed, as the registry says (`A` active; `C` or `F` closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Active,
    Closed,
}

impl State {
    pub(crate) fn from_code(code: &str) -> Option<State> {
        match code {
            "A" => Some(State::Active),
            "C" | "F" => Some(State::Closed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub number: Option<String>,
    /// Repetition index (bis, ter…) as the registry codes it.
    pub repetition: Option<String>,
    /// Street type code (`RUE`, `AV`, `BD`…).
    pub street_type: Option<String>,
    pub street_name: Option<String>,
    pub complement: Option<String>,
    pub postal_code: Option<String>,
    pub city: Option<String>,
    pub cedex: Option<String>,
    /// Only when the establishment is abroad.
    pub country: Option<String>,
    /// The whole address on one line, as the registry prints it.
    pub line: Option<String>,
}

/// A director as a suggestion for the invitation: name and role only (the
/// registries' birth dates are never kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Director {
    pub first_names: Option<String>,
    /// Last name, or the company's name when the director is a company.
    pub name: String,
    pub role: Option<String>,
    pub is_person: bool,
}

impl std::fmt::Display for Director {
    /// `XAVIER MARIE ERWAN JOUPPE (Liquidateur)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(first) = &self.first_names {
            write!(f, "{first} ")?;
        }
        f.write_str(&self.name)?;
        if let Some(role) = &self.role {
            write!(f, " ({role})")?;
        }
        Ok(())
    }
}

/// What the registries say about one establishment and its company.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompanyFacts {
    /// Which provider answered.
    pub provider: String,
    pub siret: String,
    pub siren: String,
    pub nic: String,
    pub legal_name: Option<String>,
    pub head_office: Option<bool>,
    pub address: Address,
    /// NAF/APE code of the company, e.g. `62.02A`.
    pub naf_code: Option<String>,
    /// INSEE legal category code, e.g. `5710`.
    pub legal_form_code: Option<String>,
    /// Its usual name for common forms (SAS, SARL, EI…).
    pub legal_form_label: Option<String>,
    /// `YYYY-MM-DD`.
    pub creation_date: Option<String>,
    pub company_state: Option<State>,
    pub establishment_state: Option<State>,
    /// INSEE employee band code (`NN` = no employees in the year given).
    pub employee_band: Option<String>,
    pub vat_number: String,
    pub directors: Vec<Director>,
    /// Fields the registry holds but does not disclose (`[ND]`).
    pub undisclosed: Vec<String>,
}

impl CompanyFacts {
    /// A warning to show with the record, e.g. for a closed company.
    pub fn warning(&self) -> Option<String> {
        match (self.company_state, self.establishment_state) {
            (Some(State::Closed), _) => Some(format!(
                "the company (SIREN {}) is closed in the registry",
                self.siren
            )),
            (_, Some(State::Closed)) => Some(format!(
                "the establishment (SIRET {}) is closed in the registry",
                self.siret
            )),
            _ => None,
        }
    }
}

/// Reads registry strings: `null`, empty and `[ND]` (not disclosed) are
/// absent; `[ND]` is also remembered under the field's name.
pub(crate) struct Reader {
    pub undisclosed: Vec<String>,
}

impl Reader {
    pub fn new() -> Reader {
        Reader {
            undisclosed: Vec::new(),
        }
    }

    pub fn text(&mut self, field: &str, v: Option<&serde_json::Value>) -> Option<String> {
        match v {
            Some(serde_json::Value::String(s)) if s == "[ND]" => {
                if !self.undisclosed.iter().any(|f| f == field) {
                    self.undisclosed.push(field.to_string());
                }
                None
            }
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => {
                Some(s.trim().to_string())
            }
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        }
    }
}
