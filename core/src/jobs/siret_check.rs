//! `siret_check`: validates a SIRET typed by a user or read from an import
//! and derives its SIREN, NIC and VAT number, without any network call. An
//! invalid number is a permanent failure: the dead set lists it with the
//! reason, which is what an operator needs to fix the source row.

use serde::{Deserialize, Serialize};

use crate::catalogue::KindSpec;
use crate::job::JobError;
use crate::runtime::{JobContext, Registry};
use crate::siret::Siret;

pub const KIND: &str = "siret_check";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiretCheck {
    /// As typed: spaces and dots are allowed.
    pub siret: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiretFacts {
    pub siret: String,
    pub siren: String,
    pub nic: String,
    pub vat_number: String,
}

pub async fn handle(job: SiretCheck, _ctx: JobContext) -> Result<SiretFacts, JobError> {
    let siret =
        Siret::parse(&job.siret).map_err(|e| JobError::permanent(format!("invalid SIRET: {e}")))?;
    let siren = siret.siren();
    Ok(SiretFacts {
        siret: siret.to_string(),
        nic: siret.nic().to_string(),
        vat_number: siren.vat_number(),
        siren: siren.as_str().to_string(),
    })
}

pub fn register(registry: &mut Registry) {
    registry.register(KIND, handle);
}

pub fn spec() -> KindSpec {
    KindSpec::of::<SiretCheck>(
        KIND,
        "validate a SIRET and derive its SIREN, NIC and VAT number",
        &[],
    )
    .acting_on(crate::catalogue::Subject::Nothing)
}
