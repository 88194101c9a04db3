//! `insee`: the INSEE Sirene API 3.11 (`GET /siret/{siret}`, header
//! `X-INSEE-Api-Key-Integration`; about 30 requests/min per key).
//!
//! Traps handled: the establishment's state is in `periodesEtablissement[0]`
//! (the current period); a sole trader (category 1000) has no
//! `denominationUniteLegale`; partially diffusible units answer `[ND]`; some
//! answers carry an `etablissements` array instead of `etablissement`.

use std::time::Duration;

use serde_json::Value;

use super::facts::{Address, CompanyFacts, Reader, State};
use super::{
    LookupError, Provider, ProviderSettings, http_error, json_answer, legal_forms, refused,
    status_error,
};
use crate::outbound::Outbound;
use crate::siret::Siret;

pub const NAME: &str = "insee";
const KEY_HEADER: &str = "X-INSEE-Api-Key-Integration";

pub struct Insee {
    client: Outbound,
    settings: ProviderSettings,
    api_key: String,
}

impl Insee {
    /// `client` carries the timeout of `settings` (see `sirene::from_settings`).
    pub fn new(settings: ProviderSettings, api_key: String, client: Outbound) -> Self {
        Insee {
            client,
            settings,
            api_key,
        }
    }
}

#[async_trait::async_trait]
impl Provider for Insee {
    fn name(&self) -> &str {
        NAME
    }

    fn quota(&self) -> Option<(u32, Duration)> {
        Some((
            self.settings.quota_requests,
            Duration::from_millis(self.settings.quota_window_ms),
        ))
    }

    async fn lookup(&self, siret: &Siret) -> Result<CompanyFacts, LookupError> {
        let url = format!(
            "{}/siret/{}",
            self.settings.base_url.trim_end_matches('/'),
            siret.as_str()
        );
        let response = self
            .client
            .request(reqwest::Method::GET, &url)
            .map_err(|why| refused(NAME, &why))?
            .header(KEY_HEADER, &self.api_key)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| http_error(NAME, &e))?;
        if let Some(e) = status_error(NAME, siret, response.status(), response.headers()) {
            return Err(e);
        }
        let body = json_answer(NAME, response).await?;
        map(siret, &body)
    }
}

fn malformed(provider: &str, why: &str) -> LookupError {
    LookupError::Transient {
        provider: provider.into(),
        message: format!("unexpected answer: {why}"),
    }
}

/// The sole trader's name: usual first name, then usage name or birth name.
fn person_name(r: &mut Reader, unit: &Value) -> Option<String> {
    let first = r
        .text("legal_name", unit.get("prenomUsuelUniteLegale"))
        .or_else(|| r.text("legal_name", unit.get("prenom1UniteLegale")));
    let last = r
        .text("legal_name", unit.get("nomUsageUniteLegale"))
        .or_else(|| r.text("legal_name", unit.get("nomUniteLegale")))?;
    Some(match first {
        Some(f) => format!("{f} {last}"),
        None => last,
    })
}

/// Maps a `/siret` answer onto the facts of `siret`.
pub fn map(siret: &Siret, body: &Value) -> Result<CompanyFacts, LookupError> {
    map_as(NAME, siret, body)
}

/// The same mapping for a source with the INSEE field names (the open-data
/// stock files), answering under its own name.
pub(crate) fn map_as(
    provider: &str,
    siret: &Siret,
    body: &Value,
) -> Result<CompanyFacts, LookupError> {
    let establishment = match (body.get("etablissement"), body.get("etablissements")) {
        (Some(e), _) if e.is_object() => e,
        (_, Some(Value::Array(list))) => list
            .iter()
            .find(|e| e.get("siret").and_then(Value::as_str) == Some(siret.as_str()))
            .ok_or_else(|| LookupError::NotFound {
                provider: provider.into(),
                siret: siret.to_string(),
            })?,
        _ => {
            return Err(malformed(
                provider,
                "neither `etablissement` nor `etablissements`",
            ));
        }
    };
    if establishment.get("siret").and_then(Value::as_str) != Some(siret.as_str()) {
        return Err(malformed(provider, "the answer is about another SIRET"));
    }
    let unit = establishment
        .get("uniteLegale")
        .ok_or_else(|| malformed(provider, "no `uniteLegale`"))?;
    let address = establishment
        .get("adresseEtablissement")
        .unwrap_or(&Value::Null);
    // The current period is the first one (dateFin null).
    let period = establishment
        .get("periodesEtablissement")
        .and_then(Value::as_array)
        .and_then(|p| p.first())
        .unwrap_or(&Value::Null);

    let mut r = Reader::new();
    let legal_form_code = r.text("legal_form_code", unit.get("categorieJuridiqueUniteLegale"));
    let legal_name = match r.text("legal_name", unit.get("denominationUniteLegale")) {
        Some(name) => Some(name),
        None => person_name(&mut r, unit),
    };
    let siren = siret.siren();
    Ok(CompanyFacts {
        provider: provider.into(),
        siret: siret.to_string(),
        nic: siret.nic().to_string(),
        vat_number: siren.vat_number(),
        siren: siren.as_str().to_string(),
        legal_name,
        head_office: establishment
            .get("etablissementSiege")
            .and_then(Value::as_bool),
        address: Address {
            number: r.text("address.number", address.get("numeroVoieEtablissement")),
            repetition: r.text(
                "address.repetition",
                address.get("indiceRepetitionEtablissement"),
            ),
            street_type: r.text("address.street_type", address.get("typeVoieEtablissement")),
            street_name: r.text(
                "address.street_name",
                address.get("libelleVoieEtablissement"),
            ),
            complement: r.text(
                "address.complement",
                address.get("complementAdresseEtablissement"),
            ),
            postal_code: r.text(
                "address.postal_code",
                address.get("codePostalEtablissement"),
            ),
            city: r
                .text("address.city", address.get("libelleCommuneEtablissement"))
                .or_else(|| {
                    r.text(
                        "address.city",
                        address.get("libelleCommuneEtrangerEtablissement"),
                    )
                }),
            cedex: r.text("address.cedex", address.get("libelleCedexEtablissement")),
            country: r.text(
                "address.country",
                address.get("libellePaysEtrangerEtablissement"),
            ),
            line: None,
        },
        naf_code: r
            .text("naf_code", unit.get("activitePrincipaleUniteLegale"))
            .or_else(|| r.text("naf_code", period.get("activitePrincipaleEtablissement"))),
        legal_form_label: legal_form_code
            .as_deref()
            .and_then(legal_forms::label)
            .map(str::to_string),
        legal_form_code,
        creation_date: r.text("creation_date", unit.get("dateCreationUniteLegale")),
        company_state: r
            .text("company_state", unit.get("etatAdministratifUniteLegale"))
            .as_deref()
            .and_then(State::from_code),
        establishment_state: r
            .text(
                "establishment_state",
                period.get("etatAdministratifEtablissement"),
            )
            .as_deref()
            .and_then(State::from_code),
        employee_band: r.text("employee_band", unit.get("trancheEffectifsUniteLegale")),
        directors: Vec::new(),
        undisclosed: r.undisclosed,
    })
}
