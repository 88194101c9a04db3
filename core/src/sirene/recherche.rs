//! `recherche-entreprises`: the public search API (no key; 7 requests/s per IP).
//!
//! `GET /search?q=<siret>`: not found is `200` with `results: []`; a SIRET
//! query lists the establishment in `matching_etablissements`; non-diffusible
//! units are absent.

use std::time::Duration;

use serde_json::Value;

use super::facts::{Address, CompanyFacts, Director, Reader, State};
use super::{
    LookupError, Provider, ProviderSettings, http_error, json_answer, legal_forms, refused,
    status_error,
};
use crate::outbound::Outbound;
use crate::siret::Siret;

pub const NAME: &str = "recherche-entreprises";

pub struct RechercheEntreprises {
    client: Outbound,
    settings: ProviderSettings,
}

impl RechercheEntreprises {
    /// `client` carries the timeout of `settings` (see `sirene::from_settings`).
    pub fn new(settings: ProviderSettings, client: Outbound) -> Self {
        RechercheEntreprises { client, settings }
    }
}

#[async_trait::async_trait]
impl Provider for RechercheEntreprises {
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
        let base = format!("{}/search", self.settings.base_url.trim_end_matches('/'));
        let url = url::Url::parse_with_params(&base, &[("q", siret.as_str())]).map_err(|e| {
            LookupError::Refused {
                provider: NAME.into(),
                status: 0,
                hint: format!(
                    "base_url is not a URL ({e}): fix sirene.recherche_entreprises.base_url"
                ),
            }
        })?;
        let response = self
            .client
            .request(reqwest::Method::GET, url.as_str())
            .map_err(|why| refused(NAME, &why))?
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

fn malformed(why: &str) -> LookupError {
    LookupError::Transient {
        provider: NAME.into(),
        message: format!("unexpected answer: {why}"),
    }
}

/// Maps a search answer onto the facts of `siret`.
pub fn map(siret: &Siret, body: &Value) -> Result<CompanyFacts, LookupError> {
    let results = body
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("no `results` array"))?;
    let siren = siret.siren();
    let not_found = || LookupError::NotFound {
        provider: NAME.into(),
        siret: siret.to_string(),
    };
    let Some(unit) = results
        .iter()
        .find(|r| r.get("siren").and_then(Value::as_str) == Some(siren.as_str()))
    else {
        return Err(not_found());
    };
    let is_ours = |e: &&Value| e.get("siret").and_then(Value::as_str) == Some(siret.as_str());
    let siege = unit.get("siege").filter(|s| is_ours(s));
    let matching = unit
        .get("matching_etablissements")
        .and_then(Value::as_array)
        .and_then(|list| list.iter().find(is_ours));
    let Some(establishment) = siege.or(matching) else {
        return Err(not_found());
    };

    let mut r = Reader::new();
    let legal_name = r
        .text("legal_name", unit.get("nom_raison_sociale"))
        .or_else(|| r.text("legal_name", unit.get("nom_complet")));
    let legal_form_code = r.text("legal_form_code", unit.get("nature_juridique"));
    // The detailed address parts are only given for the head office; other
    // establishments come with the one-line address.
    let address = Address {
        number: r.text("address.number", establishment.get("numero_voie")),
        repetition: r.text("address.repetition", establishment.get("indice_repetition")),
        street_type: r.text("address.street_type", establishment.get("type_voie")),
        street_name: r.text("address.street_name", establishment.get("libelle_voie")),
        complement: r.text(
            "address.complement",
            establishment.get("complement_adresse"),
        ),
        postal_code: r.text("address.postal_code", establishment.get("code_postal")),
        city: r.text("address.city", establishment.get("libelle_commune")),
        cedex: r.text("address.cedex", establishment.get("libelle_cedex")),
        country: r.text(
            "address.country",
            establishment.get("libelle_pays_etranger"),
        ),
        line: r.text("address.line", establishment.get("adresse")),
    };
    let directors = unit
        .get("dirigeants")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(|d| director(&mut r, d)).collect())
        .unwrap_or_default();
    Ok(CompanyFacts {
        provider: NAME.into(),
        siret: siret.to_string(),
        nic: siret.nic().to_string(),
        vat_number: siren.vat_number(),
        siren: siren.as_str().to_string(),
        legal_name,
        head_office: establishment.get("est_siege").and_then(Value::as_bool),
        address,
        naf_code: r.text("naf_code", unit.get("activite_principale")),
        legal_form_label: legal_form_code
            .as_deref()
            .and_then(legal_forms::label)
            .map(str::to_string),
        legal_form_code,
        creation_date: r.text("creation_date", unit.get("date_creation")),
        company_state: r
            .text("company_state", unit.get("etat_administratif"))
            .as_deref()
            .and_then(State::from_code),
        establishment_state: r
            .text(
                "establishment_state",
                establishment.get("etat_administratif"),
            )
            .as_deref()
            .and_then(State::from_code),
        employee_band: r.text("employee_band", unit.get("tranche_effectif_salarie")),
        directors,
        undisclosed: r.undisclosed,
    })
}

/// Name and role only: `date_de_naissance`, `annee_de_naissance` and
/// `nationalite` are deliberately not read.
fn director(r: &mut Reader, d: &Value) -> Option<Director> {
    let is_person = d.get("type_dirigeant").and_then(Value::as_str) == Some("personne physique");
    let name = if is_person {
        r.text("directors.name", d.get("nom"))?
    } else {
        r.text("directors.name", d.get("denomination"))?
    };
    Some(Director {
        first_names: if is_person {
            r.text("directors.first_names", d.get("prenoms"))
        } else {
            None
        },
        name,
        role: r.text("directors.role", d.get("qualite")),
        is_person,
    })
}
