//! Dossier's shared library: everything both binaries (`dossier-worker` and
//! `dossier`) need. See `docs/architecture.md` for the map.

pub mod api_tokens;
pub mod apps;
pub mod audit;
pub mod bench;
pub mod bulk;
pub mod catalogue;
pub mod client_archive;
pub mod client_export;
pub mod clients;
pub mod collaborators;
pub mod config;
pub mod controls;
pub mod dashboard;
pub mod db;
pub mod demo;
pub mod digest;
pub mod erasure;
pub mod events;
pub mod exercice;
pub mod firms;
pub mod folder_bench;
pub mod hooks_bench;
pub mod http;
pub mod import;
pub mod import_bench;
pub mod invitations;
pub mod jobs;
pub mod logging;
pub mod mail;
pub mod metrics;
pub mod onboarding;
pub mod outbound;
pub mod outbox;
pub mod owners;
pub mod queue;
pub mod retention;
pub mod schedule;
pub mod secrets;
pub mod sirene;
pub mod siret;
pub mod submit;
pub mod text;
pub mod tree;
pub mod webhook_admin;
pub mod when;

// The generic job runtime, a crate of its own; re-exported under the paths
// the rest of the product has always used.
pub use dossier_queue::{clock, interactive, job, retry, runtime, write_gate};
