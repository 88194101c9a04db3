//! The product's job kinds: payload types, handlers and the catalogue entry
//! of each. New kinds (enrichment, folders, invitations, apps) land here.

use crate::catalogue::KindSpec;
use crate::runtime::Registry;

pub mod siret_check;

/// Every kind the product knows, for payload validation at enqueue.
pub fn catalogue() -> Vec<KindSpec> {
    vec![siret_check::spec()]
}

/// Registers the handler of every kind.
pub fn register_all(registry: &mut Registry) {
    siret_check::register(registry);
}
