//! Configuration: built-in defaults → TOML file → `DOSSIER__SECTION__KEY`
//! environment variables, validated once at start-up.
//!
//! Every error names the key and where its value came from (file, variable
//! or built-in default), because "invalid config" alone costs an operator an
//! afternoon.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use dossier_queue::redact_url;
pub use dossier_queue::settings::{KindOverride, KindSettings, QueueBackendKind, QueueSettings};

/// Environment variable naming the configuration file when `--config` is absent.
pub const CONFIG_ENV: &str = "DOSSIER_CONFIG";
/// Prefix of the variables that override single keys (`DOSSIER__QUEUE__BACKEND`).
pub const ENV_PREFIX: &str = "DOSSIER__";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path} does not exist (given by {given_by})")]
    MissingFile { path: PathBuf, given_by: String },
    #[error("invalid configuration:\n{0}")]
    Invalid(String),
}

/// All settings. Field names are the TOML keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub queue: QueueSettings,
    pub worker: WorkerSettings,
    pub log: LogSettings,
    pub sirene: SireneSettings,
    pub schedule: ScheduleSettings,
    pub mail: MailSettings,
    pub invitations: InvitationSettings,
    pub http: HttpSettings,
    pub apps: AppsSettings,
    pub imports: ImportSettings,
    pub audit: AuditSettings,
    pub retention: RetentionSettings,
    pub outbound: OutboundSettings,
    pub webhooks: WebhookSettings,
}

/// The firms' event webhooks (`crate::events`, delivered by the
/// `webhook_delivery` job kind).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// Attempts at one event before it goes to the dead set (first one
    /// included), spaced by the `webhook_delivery` kind's backoff. With the
    /// default backoff (1 s doubling, capped at 1 h) 25 attempts span about
    /// 13 hours.
    pub max_attempts: u32,
    /// An endpoint that has answered nothing but failures for this long is
    /// disabled (8 hours): shorter than the attempts' span, so an endpoint
    /// that is gone is switched off before its events run out of attempts.
    pub disable_after_secs: u64,
    /// How long a receiver has to answer one delivery.
    pub timeout_ms: u64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            max_attempts: 25,
            disable_after_secs: 8 * 3600,
            timeout_ms: 10_000,
        }
    }
}

/// Where calls leaving the platform may go (`crate::outbound`): https to
/// public addresses, unless these open more.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundSettings {
    /// Plain http, and connections, to loopback addresses: local stand-ins
    /// and tests only.
    pub allow_plain_http_to_loopback: bool,
    /// Non-public networks calls may reach (CIDR, or one address), e.g. a
    /// partner gateway inside the firm's network: `["10.20.0.0/16"]`.
    pub allowed_networks: Vec<String>,
}

impl OutboundSettings {
    /// Each problem as (key, why).
    pub(crate) fn problems(&self) -> Vec<(&'static str, String)> {
        self.allowed_networks
            .iter()
            .filter(|n| crate::outbound::parse_network(n).is_none())
            .map(|n| {
                (
                    "outbound.allowed_networks",
                    format!(
                        "{:?} is not a network: write CIDR (\"10.20.0.0/16\", \"fd00::/8\") or one address",
                        crate::text::printable(n)
                    ),
                )
            })
            .collect()
    }

    /// Why `url` cannot be called, if it cannot.
    pub fn url_problem(&self, url: &str) -> Option<String> {
        crate::outbound::Policy::from_settings(self)
            .check_url(url)
            .err()
            .map(|r| r.0)
    }
}

/// How long people's data is kept where nothing else bounds it
/// (`crate::retention`, run by the scheduled `retention` job).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Cron expression with seconds, in UTC, of the `retention` job.
    pub cron: String,
    /// The hooks' stored answers (`Idempotency-Key`): a retry comes within
    /// minutes, a day covers a caller's outage.
    pub hook_answers_hours: u32,
    /// A finished import's file and reports (its counts stay).
    pub import_files_days: u32,
    /// The personal fields of an accepted, expired or revoked invitation,
    /// counted from its last change (the row and its dates stay).
    pub closed_invitations_days: u32,
    /// The `.eml` files of the file transport.
    pub mail_files_days: u32,
    /// Dead jobs (payload and errors), left this long for operators.
    pub dead_jobs_days: u32,
    /// The firms' events (`crate::events`) and their deliveries, once none
    /// is pending.
    pub events_days: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            cron: "0 30 3 * * *".into(),
            hook_answers_hours: 24,
            import_files_days: 30,
            closed_invitations_days: 90,
            mail_files_days: 30,
            dead_jobs_days: 30,
            events_days: 30,
        }
    }
}

impl RetentionSettings {
    /// Each problem as (key, why).
    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for (key, value) in [
            ("retention.hook_answers_hours", self.hook_answers_hours),
            ("retention.import_files_days", self.import_files_days),
            (
                "retention.closed_invitations_days",
                self.closed_invitations_days,
            ),
            ("retention.mail_files_days", self.mail_files_days),
            ("retention.dead_jobs_days", self.dead_jobs_days),
            ("retention.events_days", self.events_days),
        ] {
            if value == 0 {
                out.push((
                    key,
                    "must be at least 1 (0 would remove what is still in use)".to_string(),
                ));
            }
        }
        if let Err(e) = self.cron.parse::<cron::Schedule>() {
            out.push((
                "retention.cron",
                format!(
                    "not a cron expression ({e}): six fields, `sec min hour day month weekday`, e.g. \"0 30 3 * * *\""
                ),
            ));
        }
        out
    }
}

/// The operators' audit trail (`crate::audit`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Entries older than this are deleted by the workers (hourly).
    pub retention_days: u32,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            retention_days: 365,
        }
    }
}

/// Bulk imports (`crate::import`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImportSettings {
    /// Files with more rows run as a `bulk_import` job in the worker; the
    /// CLI shows its progress.
    pub inline_max_rows: usize,
    /// Clients written per transaction (at most
    /// `import::run::SMALL_BATCH_ROWS` on SQLite, and on PostgreSQL while
    /// the hooks answer requests, so that their writes get in between).
    pub batch_rows: usize,
    /// A longer cell is refused (a whole row pasted into one cell).
    pub max_cell_chars: usize,
    pub max_file_bytes: usize,
    /// Drop folders imported on a clock.
    pub schedules: Vec<ImportSchedule>,
}

impl Default for ImportSettings {
    fn default() -> Self {
        ImportSettings {
            inline_max_rows: 1000,
            batch_rows: 1000,
            max_cell_chars: 1000,
            max_file_bytes: 50 * 1024 * 1024,
            schedules: Vec::new(),
        }
    }
}

/// A drop folder: files put in `FOLDER/incoming/` are imported at each tick
/// and moved to `done/` or `failed/` with their report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportSchedule {
    /// Names the schedule (`import:NAME` in the queue).
    pub name: String,
    /// Cron expression with seconds, in UTC.
    pub cron: String,
    pub firm: String,
    pub folder: String,
    /// Create the good rows of a file with bad ones (else refuse the file).
    #[serde(default)]
    pub partial: bool,
    /// Registry provider for the enrichment (`sirene-file` stays clear of
    /// the shared API quota); absent: `sirene.providers`.
    #[serde(default)]
    pub provider: Option<String>,
    /// A file modified more recently than this may still be being written.
    #[serde(default = "default_settle_secs")]
    pub settle_secs: u64,
}

fn default_settle_secs() -> u64 {
    10
}

/// Partner applications.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppsSettings {
    /// Keys sealing secret settings at rest, `"ID:<64 hex>"`, the first one
    /// sealing: `DOSSIER__APPS__ENCRYPTION_KEYS='["k2:…", "k1:…"]'`.
    pub encryption_keys: Vec<Secret>,
    /// The HMAC key shared with each automation partner, by app id:
    /// `DOSSIER__APPS__SIGNING_KEYS__<APP_ID>=…`.
    pub signing_keys: std::collections::BTreeMap<String, Secret>,
    pub timeout_ms: u64,
}

impl Default for AppsSettings {
    fn default() -> Self {
        AppsSettings {
            encryption_keys: Vec::new(),
            signing_keys: Default::default(),
            timeout_ms: 10_000,
        }
    }
}

/// The HTTP hooks `dossier-worker run` serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// `127.0.0.1:8080`, say; empty: no HTTP server.
    pub listen: String,
    /// Bearer tokens the callers present (several, for rotation):
    /// `DOSSIER__HTTP__TOKENS='["…", "…"]'`, never a committed file.
    pub tokens: Vec<Secret>,
    pub max_body_bytes: usize,
    /// Wrong invitation tokens accepted per minute by this process; past
    /// it, `POST /v1/invitations/accept` answers 429 until the minute has
    /// passed (guessing tokens is hopeless; trying is also throttled).
    pub accept_failures_per_minute: u32,
    /// Connections served at once; more wait in the listen queue. Bounds
    /// the file descriptors the hooks can take from the jobs.
    pub max_connections: usize,
    /// A request's headers must arrive within this (also the longest a
    /// kept-alive connection may sit idle): half-sent requests are cut.
    pub header_timeout_ms: u64,
    /// A whole request, body and answer, within this: 408 past it.
    pub request_timeout_ms: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: String::new(),
            tokens: Vec::new(),
            max_body_bytes: 64 * 1024,
            accept_failures_per_minute: 60,
            max_connections: 512,
            header_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailTransportKind {
    /// One `.eml` file per message under `mail.outbox_dir`.
    File,
    Smtp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// TLS from the first byte (port 465).
    Tls,
    /// Plain connection upgraded with STARTTLS, required (port 587).
    Starttls,
    /// No encryption: a relay on the same host or a test server only.
    None,
}

/// Outgoing mail (invitations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailSettings {
    pub transport: MailTransportKind,
    pub outbox_dir: String,
    /// The firm's display name: the From name and the emails' signature.
    pub from_name: String,
    pub from_address: String,
    /// Who the invited person can ask (shown in the email, and Reply-To).
    pub contact_address: String,
    /// Links in emails start with this; never taken from a request.
    pub public_base_url: String,
    pub smtp: SmtpSettings,
    pub dkim: DkimSettings,
}

/// DKIM signing of outgoing mail (`crate::mail::Signer`): off while the
/// selector is empty.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DkimSettings {
    /// The DNS name's first label: the key is published at
    /// `{selector}._domainkey.{domain}`.
    pub selector: String,
    /// The signing domain (`d=`): the From address's domain or a parent of
    /// it, so that DMARC finds the signature aligned.
    pub domain: String,
    pub algorithm: DkimAlgorithm,
    /// `DOSSIER__MAIL__DKIM__PRIVATE_KEY` or `…_FILE`: RSA in PKCS#1 PEM
    /// (`-----BEGIN RSA PRIVATE KEY-----`), or Ed25519 as the base64 of its
    /// 32 bytes.
    pub private_key: Option<Secret>,
}

impl DkimSettings {
    pub fn enabled(&self) -> bool {
        !self.selector.is_empty()
    }

    /// The key itself is parsed where the signer is built (`crate::mail`).
    fn problems(&self, from_address: &str) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !self.enabled() {
            if self.private_key.is_some() || !self.domain.is_empty() {
                out.push((
                    "mail.dkim.selector",
                    "required when a DKIM key or domain is set (the DNS record's name, e.g. dossier2026)".into(),
                ));
            }
            return out;
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if !self.selector.split('.').all(label_ok) {
            out.push((
                "mail.dkim.selector",
                "must be DNS labels (letters, digits, hyphens), e.g. dossier2026".into(),
            ));
        }
        let from_domain = from_address
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default();
        let domain = self.domain.to_ascii_lowercase();
        if domain.is_empty() || !domain.split('.').all(label_ok) {
            out.push((
                "mail.dkim.domain",
                "required with a selector: the signing domain, e.g. cabinet.fr".into(),
            ));
        } else if from_domain != domain && !from_domain.ends_with(&format!(".{domain}")) {
            out.push((
                "mail.dkim.domain",
                format!(
                    "{domain} is not mail.from_address's domain ({from_domain}) nor a parent of it: DMARC would find the signature unaligned"
                ),
            ));
        }
        if self.private_key.is_none() {
            out.push((
                "mail.dkim.private_key",
                "required with a selector: set DOSSIER__MAIL__DKIM__PRIVATE_KEY or DOSSIER__MAIL__DKIM__PRIVATE_KEY_FILE".into(),
            ));
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DkimAlgorithm {
    /// Every receiver verifies RSA; Ed25519 (RFC 8463) not yet everywhere.
    #[default]
    Rsa,
    Ed25519,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// `DOSSIER__MAIL__SMTP__USERNAME` / `…__PASSWORD` (or `…_FILE`).
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub timeout_ms: u64,
}

/// Invitations to the client's director and employees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InvitationSettings {
    /// A link works this long after it is sent.
    pub expiry_days: u32,
    /// One reminder (with a fresh link) this long after the first email.
    pub reminder_after_days: u32,
    /// A new client's invitation waits this long for enrichment, so that
    /// the email carries the registry's name; then it goes with the typed one.
    pub wait_for_enrichment_secs: u64,
    /// `DOSSIER__INVITATIONS__LINK_KEY` or `…_FILE`: 64 hex characters, the
    /// key the links' tokens derive from (a retried send carries the same
    /// link). Unset: a key kept in the database (`server_keys`), shared by
    /// every process on it, so that a copy of the database and of this key
    /// together are needed to rebuild a link still in flight.
    pub link_key: Option<Secret>,
}

impl Default for MailSettings {
    fn default() -> Self {
        MailSettings {
            transport: MailTransportKind::File,
            outbox_dir: "var/outbox".into(),
            from_name: "Cabinet Exemple".into(),
            from_address: "invitations@cabinet.example".into(),
            contact_address: "contact@cabinet.example".into(),
            public_base_url: "http://localhost:8080".into(),
            smtp: SmtpSettings::default(),
            dkim: DkimSettings::default(),
        }
    }
}

impl Default for SmtpSettings {
    fn default() -> Self {
        SmtpSettings {
            host: "localhost".into(),
            port: 587,
            security: SmtpSecurity::Starttls,
            username: None,
            password: None,
            timeout_ms: 10_000,
        }
    }
}

impl Default for InvitationSettings {
    fn default() -> Self {
        InvitationSettings {
            expiry_days: 7,
            reminder_after_days: 3,
            wait_for_enrichment_secs: 120,
            link_key: None,
        }
    }
}

/// Jobs enqueued on a clock (`crate::schedule`). Every worker process runs
/// the scheduler; each tick is enqueued once however many run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleSettings {
    pub enabled: bool,
    pub exercice_rollover: RolloverSettings,
    pub invitation_housekeeping: CronSettings,
}

/// A schedule that is only a cron expression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronSettings {
    /// Cron expression with seconds, in UTC.
    pub cron: String,
}

/// Creating each client's next exercice before the current one ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloverSettings {
    /// Cron expression with seconds, in UTC: `sec min hour day month weekday`.
    pub cron: String,
    /// The next exercice is created this many days before the current one ends.
    pub days_before_end: u32,
    /// An exercice that ended longer ago than this is left alone: the
    /// client is dormant, and its next exercice is added by hand.
    pub dormant_after_days: u32,
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        ScheduleSettings {
            enabled: true,
            exercice_rollover: RolloverSettings::default(),
            invitation_housekeeping: CronSettings {
                cron: "0 */10 * * * *".into(),
            },
        }
    }
}

impl Default for RolloverSettings {
    fn default() -> Self {
        RolloverSettings {
            cron: "0 0 3 * * *".into(),
            days_before_end: 30,
            dormant_after_days: 366,
        }
    }
}

/// A secret value: read from the environment or a `_FILE`, never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The company registries (`crate::sirene`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SireneSettings {
    /// Tried in this order: `recherche-entreprises`, `insee`, `sirene-file`.
    pub providers: Vec<String>,
    /// Sent with every request (the public API asks for one that identifies you).
    pub user_agent: String,
    /// A provider whose quota frees later than this is skipped for the next one.
    pub max_quota_wait_ms: u64,
    pub recherche_entreprises: crate::sirene::ProviderSettings,
    pub insee: crate::sirene::ProviderSettings,
    /// INSEE API key: `DOSSIER__SIRENE__INSEE_API_KEY` or `…_FILE`, never a committed file.
    pub insee_api_key: Option<Secret>,
    /// The `sirene-file` provider's index, built by `dossier sirene index`.
    pub file_index: String,
    /// Where the providers' request quotas are counted. Every worker process
    /// and CLI that looks a company up must count in the same place, or N
    /// processes send N times the quota.
    pub quota_store: QuotaStoreKind,
    /// The Redis server of `quota_store = "redis"`; absent: `queue.url`
    /// when the queue is on Redis.
    pub quota_redis_url: Option<String>,
}

/// Where registry quotas are counted (`crate::sirene::quota`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaStoreKind {
    /// The business database (`database.url`, PostgreSQL or SQLite): shared
    /// by every process that uses it, whatever carries the queue.
    Database,
    /// A Redis server: for fleets that have one (`quota_redis_url`).
    Redis,
}

/// Provider names `sirene.providers` accepts.
pub const SIRENE_PROVIDERS: [&str; 3] = ["recherche-entreprises", "insee", "sirene-file"];

impl Default for SireneSettings {
    fn default() -> Self {
        SireneSettings {
            providers: vec!["recherche-entreprises".into()],
            user_agent: concat!("dossier/", env!("CARGO_PKG_VERSION")).into(),
            max_quota_wait_ms: 5_000,
            recherche_entreprises: crate::sirene::ProviderSettings {
                base_url: "https://recherche-entreprises.api.gouv.fr".into(),
                timeout_ms: 10_000,
                quota_requests: 7,
                quota_window_ms: 1_000,
            },
            insee: crate::sirene::ProviderSettings {
                base_url: "https://api.insee.fr/api-sirene/3.11".into(),
                timeout_ms: 10_000,
                quota_requests: 30,
                quota_window_ms: 60_000,
            },
            insee_api_key: None,
            file_index: "var/sirene-index.db".into(),
            quota_store: QuotaStoreKind::Database,
            quota_redis_url: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` (created when missing) or `postgres://…`.
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Apply pending migrations when the worker starts.
    pub migrate_on_start: bool,
    /// First part of the worker's name; host, pid and a random suffix follow.
    pub name_prefix: String,
    /// Async runtime threads of `dossier-worker`; 0 means one per core.
    /// On a small machine shared with Redis, 1 avoids fighting Redis for CPU.
    pub threads: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `dossier_core=debug,info`…); `RUST_LOG` wins.
    pub level: String,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: "sqlite://var/dossier.db".into(),
            max_connections: 8,
        }
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            migrate_on_start: true,
            name_prefix: "dossier-worker".into(),
            threads: 0,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl Settings {
    /// The Redis server registry quotas are counted on when
    /// `sirene.quota_store = "redis"`.
    pub fn sirene_quota_redis_url(&self) -> Option<&str> {
        self.sirene.quota_redis_url.as_deref().or(
            match (self.queue.backend, self.queue.url.as_deref()) {
                (QueueBackendKind::Redis, Some(url)) => Some(url),
                _ => None,
            },
        )
    }

    /// Loads settings from the built-in defaults, then `file` (or the file
    /// named by `DOSSIER_CONFIG`), then `DOSSIER__…` variables; validates them.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let env_file = std::env::var_os(CONFIG_ENV).map(PathBuf::from);
        let (path, given_by) = match (file, env_file) {
            (Some(p), _) => (Some(p.to_path_buf()), "--config".to_string()),
            (None, Some(p)) => (Some(p), format!("environment variable {CONFIG_ENV}")),
            (None, None) => (None, String::new()),
        };
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = path {
            if !path.is_file() {
                return Err(ConfigError::MissingFile { path, given_by });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(
            Env::prefixed(ENV_PREFIX)
                .split("__")
                .filter(|k| !k.as_str().to_ascii_lowercase().ends_with("_file")),
        );
        for secret in SecretFile::from_env()? {
            figment = figment.merge(secret);
        }
        Self::from_figment(&figment)
    }

    /// Extracts and validates settings from an assembled figment.
    pub fn from_figment(figment: &Figment) -> Result<Settings, ConfigError> {
        let settings: Settings = figment.extract().map_err(|e| {
            let lines: Vec<String> = e
                .into_iter()
                .map(|e| format!("  - {}", describe_error(&e)))
                .collect();
            ConfigError::Invalid(lines.join("\n"))
        })?;
        let problems = settings.problems(figment);
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(ConfigError::Invalid(
                problems
                    .into_iter()
                    .map(|p| format!("  - {p}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ))
        }
    }

    /// Every semantic problem at once, each naming its key and source.
    fn problems(&self, figment: &Figment) -> Vec<String> {
        let mut out = Vec::new();
        let mut bad = |key: &str, why: String| {
            out.push(format!("{key}: {why} (set by {})", source_of(figment, key)));
        };
        let database_problem = match url::Url::parse(&self.database.url) {
            Ok(u) if matches!(u.scheme(), "sqlite" | "postgres" | "postgresql") => None,
            Ok(u) => Some(format!(
                "scheme `{}` is not supported; use sqlite://PATH or postgres://…",
                u.scheme()
            )),
            Err(e) => Some(format!("not a valid URL: {e}")),
        };
        let database_url_ok = database_problem.is_none();
        if let Some(why) = database_problem {
            bad("database.url", why);
        }
        if self.database.max_connections == 0 {
            bad("database.max_connections", "must be at least 1".into());
        }
        match (self.queue.backend, self.queue.url.as_deref()) {
            (QueueBackendKind::Redis, None) => bad(
                "queue.url",
                "the redis backend needs a URL such as redis://127.0.0.1:6379/0".into(),
            ),
            (QueueBackendKind::Redis, Some(u)) => match url::Url::parse(u) {
                Ok(p) if matches!(p.scheme(), "redis" | "rediss" | "unix" | "redis+unix") => {}
                Ok(p) => bad(
                    "queue.url",
                    format!("scheme `{}` is not a Redis URL", p.scheme()),
                ),
                Err(e) => bad("queue.url", format!("not a valid URL: {e}")),
            },
            (QueueBackendKind::Sqlite, Some(u)) => match url::Url::parse(u) {
                Ok(p) if p.scheme() == "sqlite" => {}
                _ => bad(
                    "queue.url",
                    "the sqlite backend takes a sqlite:// URL (or none: database.url is used)"
                        .into(),
                ),
            },
            (QueueBackendKind::Postgres, Some(u)) => match url::Url::parse(u) {
                Ok(p) if matches!(p.scheme(), "postgres" | "postgresql") => {}
                _ => bad(
                    "queue.url",
                    "the postgres backend takes a postgres:// URL (or none: database.url is used)"
                        .into(),
                ),
            },
            (QueueBackendKind::Postgres, None) => {
                if database_url_ok && !self.database.url.starts_with("postgres") {
                    bad(
                        "queue.backend",
                        "the postgres queue needs a PostgreSQL database; set queue.url to a postgres:// URL".into(),
                    );
                }
            }
            (QueueBackendKind::Sqlite, None) => {
                if database_url_ok && !self.database.url.starts_with("sqlite:") {
                    bad(
                        "queue.backend",
                        "the sqlite queue needs a SQLite database; set queue.url to a sqlite:// URL or use the redis backend".into(),
                    );
                }
            }
        }
        for name in &self.sirene.providers {
            if !SIRENE_PROVIDERS.contains(&name.as_str()) {
                bad(
                    "sirene.providers",
                    format!(
                        "unknown provider `{name}`; available: {}",
                        SIRENE_PROVIDERS.join(", ")
                    ),
                );
            }
        }
        // Each provider in turn may wait for quota, then for its answer: an
        // attempt cut before the end would have taken a slot (and perhaps
        // been answered), and its retry would ask the registry again.
        let lookup_ms: u64 = self
            .sirene
            .providers
            .iter()
            .map(|name| {
                let timeout = match name.as_str() {
                    "recherche-entreprises" => self.sirene.recherche_entreprises.timeout_ms,
                    "insee" => self.sirene.insee.timeout_ms,
                    _ => 0,
                };
                self.sirene.max_quota_wait_ms + timeout
            })
            .sum();
        let attempt_ms = self
            .queue
            .kind(crate::jobs::siret_enrichment::KIND)
            .timeout_ms;
        if lookup_ms > 0 && attempt_ms <= lookup_ms {
            bad(
                "queue.kinds.siret_enrichment.timeout_ms",
                format!(
                    "is {attempt_ms} ms but a lookup may take {lookup_ms} ms (sirene.max_quota_wait_ms plus each provider's timeout_ms): raise it above that, or lower those"
                ),
            );
        }
        if self.sirene.quota_store == QuotaStoreKind::Redis
            && self.sirene_quota_redis_url().is_none()
        {
            bad(
                "sirene.quota_redis_url",
                "quota_store = \"redis\" needs a Redis server: set sirene.quota_redis_url to a redis:// URL (or put the queue on Redis)".into(),
            );
        }
        if let Some(url) = &self.sirene.quota_redis_url
            && !url.starts_with("redis://")
            && !url.starts_with("rediss://")
        {
            bad(
                "sirene.quota_redis_url",
                format!("{} is not a redis:// URL", redact_url(url)),
            );
        }
        if self.sirene.providers.iter().any(|p| p == "insee")
            && self
                .sirene
                .insee_api_key
                .as_ref()
                .is_none_or(|k| k.expose().trim().is_empty())
        {
            bad(
                "sirene.insee_api_key",
                "the insee provider needs an API key: set DOSSIER__SIRENE__INSEE_API_KEY or DOSSIER__SIRENE__INSEE_API_KEY_FILE".into(),
            );
        }
        for (key, p) in [
            (
                "sirene.recherche_entreprises",
                &self.sirene.recherche_entreprises,
            ),
            ("sirene.insee", &self.sirene.insee),
        ] {
            if let Some(why) = self.outbound.url_problem(&p.base_url) {
                bad(&format!("{key}.base_url"), why);
            }
            if p.quota_requests == 0 || p.quota_window_ms == 0 {
                bad(
                    &format!("{key}.quota_requests"),
                    "quota and its window must be greater than 0".into(),
                );
            }
            if p.timeout_ms == 0 {
                bad(
                    &format!("{key}.timeout_ms"),
                    "must be greater than 0".into(),
                );
            }
        }
        if let Err(e) = self
            .schedule
            .exercice_rollover
            .cron
            .parse::<cron::Schedule>()
        {
            bad(
                "schedule.exercice_rollover.cron",
                format!(
                    "not a cron expression ({e}): six fields, `sec min hour day month weekday`, e.g. \"0 0 3 * * *\""
                ),
            );
        }
        if self.schedule.exercice_rollover.days_before_end > 366 {
            bad(
                "schedule.exercice_rollover.days_before_end",
                "must be at most 366".into(),
            );
        }
        for (key, value) in [
            ("mail.from_address", &self.mail.from_address),
            ("mail.contact_address", &self.mail.contact_address),
        ] {
            if value.parse::<lettre::Address>().is_err() {
                bad(key, format!("{value:?} is not an email address"));
            }
        }
        if self.mail.from_name.trim().is_empty() {
            bad(
                "mail.from_name",
                "the firm's name is required: it signs every email".into(),
            );
        }
        if !url::Url::parse(&self.mail.public_base_url)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.query().is_none())
        {
            bad(
                "mail.public_base_url",
                "must be an http(s) URL without a query, e.g. https://app.cabinet.fr".into(),
            );
        }
        if self.mail.transport == MailTransportKind::Smtp {
            if self.mail.smtp.host.trim().is_empty() {
                bad("mail.smtp.host", "required with the smtp transport".into());
            }
            if self.mail.smtp.timeout_ms == 0 {
                bad("mail.smtp.timeout_ms", "must be greater than 0".into());
            }
            if self.mail.smtp.username.is_some() != self.mail.smtp.password.is_some() {
                bad(
                    "mail.smtp.password",
                    "set both DOSSIER__MAIL__SMTP__USERNAME and DOSSIER__MAIL__SMTP__PASSWORD (or its _FILE), or neither".into(),
                );
            }
        }
        if !self.http.listen.is_empty() {
            if self.http.listen.parse::<std::net::SocketAddr>().is_err() {
                bad(
                    "http.listen",
                    format!(
                        "{:?} is not an address:port, e.g. 127.0.0.1:8080",
                        self.http.listen
                    ),
                );
            }
            // None is fine: callers may present tokens issued by
            // `dossier token create` only. A short one is a guessable key
            // to every firm.
            if self
                .http
                .tokens
                .iter()
                .any(|t| t.expose().trim().len() < 16)
            {
                bad(
                    "http.tokens",
                    "each configured token is platform-wide and must have 16 characters or more (or issue tokens with `dossier token create`): DOSSIER__HTTP__TOKENS='[\"…\"]'".into(),
                );
            }
        }
        if let Err(e) = crate::secrets::KeyRing::new(&self.apps.encryption_keys) {
            bad("apps.encryption_keys", e.to_string());
        }
        for (key, why) in self.retention.problems() {
            bad(key, why);
        }
        for (key, why) in self.outbound.problems() {
            bad(key, why);
        }
        if self.webhooks.max_attempts == 0 || self.webhooks.max_attempts > 1000 {
            bad("webhooks.max_attempts", "must be between 1 and 1000".into());
        }
        if self.webhooks.disable_after_secs < 60 {
            bad(
                "webhooks.disable_after_secs",
                "must be at least 60: a receiver restarting must not lose its endpoint".into(),
            );
        }
        if self.webhooks.timeout_ms == 0 {
            bad("webhooks.timeout_ms", "must be greater than 0".into());
        }
        if self.audit.retention_days == 0 {
            bad(
                "audit.retention_days",
                "must be at least 1: the audit trail is what operators did".into(),
            );
        }
        if self.apps.timeout_ms == 0 {
            bad("apps.timeout_ms", "must be greater than 0".into());
        }
        if self.invitations.expiry_days == 0 || self.invitations.expiry_days > 90 {
            bad("invitations.expiry_days", "must be between 1 and 90".into());
        }
        if let Some(key) = &self.invitations.link_key
            && (key.expose().len() != 64 || !key.expose().chars().all(|c| c.is_ascii_hexdigit()))
        {
            bad(
                "invitations.link_key",
                "must be 64 hex characters (32 random bytes, e.g. `openssl rand -hex 32`)".into(),
            );
        }
        for (key, why) in self.mail.dkim.problems(&self.mail.from_address) {
            bad(key, why);
        }
        if self.worker.threads > 1024 {
            bad(
                "worker.threads",
                "must be at most 1024 (0 means one per core)".into(),
            );
        }
        if self.queue.prefix.is_empty() || self.queue.prefix.contains(char::is_whitespace) {
            bad("queue.prefix", "must be a non-empty word".into());
        }
        for (key, value) in [
            ("queue.poll_interval_ms", self.queue.poll_interval_ms),
            ("queue.lease_ms", self.queue.lease_ms),
            ("queue.heartbeat_ms", self.queue.heartbeat_ms),
            ("queue.rescue_interval_ms", self.queue.rescue_interval_ms),
            ("queue.fetch_batch", u64::from(self.queue.fetch_batch)),
        ] {
            if value == 0 {
                bad(key, "must be greater than 0".into());
            }
        }
        if self.queue.heartbeat_ms * 2 > self.queue.lease_ms {
            bad(
                "queue.heartbeat_ms",
                format!(
                    "must be at most half of queue.lease_ms ({}), or leases expire between heartbeats",
                    self.queue.lease_ms
                ),
            );
        }
        let kinds = std::iter::once(("queue.defaults".to_string(), self.queue.defaults.clone()))
            .chain(
                self.queue
                    .kinds
                    .keys()
                    .map(|k| (format!("queue.kinds.{k}"), self.queue.kind(k))),
            );
        for (prefix, k) in kinds {
            if k.concurrency == 0 {
                bad(
                    &format!("{prefix}.concurrency"),
                    "must be at least 1".into(),
                );
            }
            if k.max_attempts == 0 {
                bad(
                    &format!("{prefix}.max_attempts"),
                    "must be at least 1".into(),
                );
            }
            if k.timeout_ms == 0 {
                bad(
                    &format!("{prefix}.timeout_ms"),
                    "must be greater than 0".into(),
                );
            }
            if k.backoff_cap_ms < k.backoff_base_ms {
                bad(
                    &format!("{prefix}.backoff_cap_ms"),
                    "must not be below backoff_base_ms".into(),
                );
            }
            if !(0.0..=1.0).contains(&k.jitter) {
                bad(
                    &format!("{prefix}.jitter"),
                    "must be between 0 and 1".into(),
                );
            }
        }
        out
    }
}

/// A value read from a file named by `DOSSIER__SECTION__KEY_FILE` (the way
/// container platforms hand secrets over: the password never sits in the
/// environment or in a committed file).
struct SecretFile {
    key: String,
    variable: String,
    path: PathBuf,
    value: String,
}

impl SecretFile {
    fn from_env() -> Result<Vec<SecretFile>, ConfigError> {
        let mut out = Vec::new();
        for (name, path) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let Some(key) = rest.strip_suffix("_FILE") else {
                continue;
            };
            let path = PathBuf::from(path);
            let value = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::Invalid(format!(
                    "  - {}: cannot read secret file {} ({e}) (set by environment variable {name})",
                    key.replace("__", ".").to_lowercase(),
                    path.display()
                ))
            })?;
            out.push(SecretFile {
                key: key.replace("__", ".").to_lowercase(),
                variable: name.to_string(),
                path,
                value: value.trim_end_matches(['\n', '\r']).to_string(),
            });
        }
        Ok(out)
    }
}

impl figment::Provider for SecretFile {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(format!(
            "secret file {} (from {})",
            self.path.display(),
            self.variable
        ))
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        Serialized::default(&self.key, &self.value).data()
    }
}

/// Where a key's value came from, in words an operator can act on.
fn source_of(figment: &Figment, key: &str) -> String {
    describe_source(figment.find_metadata(key), key)
}

fn describe_source(meta: Option<&figment::Metadata>, key: &str) -> String {
    let Some(meta) = meta else {
        return "built-in default".into();
    };
    match &meta.source {
        Some(figment::Source::File(p)) => format!("file {}", p.display()),
        _ if meta.name.starts_with("secret file") => meta.name.to_string(),
        _ if meta.name.contains("environment") => {
            format!("environment variable {}", env_var_name(key))
        }
        _ => "built-in default".into(),
    }
}

/// `queue.defaults.concurrency` → `DOSSIER__QUEUE__DEFAULTS__CONCURRENCY`.
pub fn env_var_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "__").to_uppercase())
}

/// A figment error as `key: what is wrong (set by source)`.
fn describe_error(e: &figment::Error) -> String {
    let key = e
        .path
        .iter()
        .map(|p| p.to_lowercase())
        .collect::<Vec<_>>()
        .join(".");
    let what = match &e.kind {
        figment::error::Kind::UnknownField(field, expected) => format!(
            "unknown key `{}` (known here: {})",
            field.to_lowercase(),
            expected.join(", ")
        ),
        other => other.to_string(),
    };
    if key.is_empty() {
        format!("{what} ({})", describe_source(e.metadata.as_ref(), ""))
    } else {
        format!(
            "{key}: {what} (set by {})",
            describe_source(e.metadata.as_ref(), &key)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figment_with(toml: &str) -> Figment {
        Figment::from(Serialized::defaults(Settings::default())).merge(Toml::string(toml))
    }

    #[test]
    fn shipped_default_file_matches_built_in_defaults() {
        let text = include_str!("../../config/default.toml");
        let s = Settings::from_figment(&figment_with(text)).expect("default.toml is valid");
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn production_example_is_valid() {
        let text = include_str!("../../config/production.example.toml");
        let s = Settings::from_figment(&figment_with(text)).expect("production example is valid");
        assert_eq!(s.queue.backend, QueueBackendKind::Redis);
    }

    /// The setting picks where registry quotas are counted, whatever
    /// carries the queue: the database by default, Redis when asked, with a
    /// clear error when there is no Redis to count on.
    #[test]
    fn the_quota_store_is_chosen_by_a_setting() {
        let s = Settings::from_figment(&figment_with(
            "[queue]\nbackend = 'postgres'\n[database]\nurl = 'postgres://db/x'\n",
        ))
        .expect("valid");
        assert_eq!(s.sirene.quota_store, QuotaStoreKind::Database);
        let err = Settings::from_figment(&figment_with("[sirene]\nquota_store = 'redis'\n"))
            .expect_err("no Redis to count on")
            .to_string();
        assert!(err.contains("sirene.quota_redis_url"), "{err}");
        let err = Settings::from_figment(&figment_with(
            "[sirene]\nquota_store = 'redis'\nquota_redis_url = 'http://user:pw@host/'\n",
        ))
        .expect_err("not a Redis URL")
        .to_string();
        assert!(err.contains("is not a redis:// URL"), "{err}");
        assert!(!err.contains("pw"), "the password is not shown: {err}");
        let s = Settings::from_figment(&figment_with(
            "[sirene]\nquota_store = 'redis'\nquota_redis_url = 'redis://127.0.0.1:6379'\n",
        ))
        .expect("valid");
        assert_eq!(s.sirene_quota_redis_url(), Some("redis://127.0.0.1:6379"));
        let s = Settings::from_figment(&figment_with(
            "[queue]\nbackend = 'redis'\nurl = 'redis://q:6379'\n[sirene]\nquota_store = 'redis'\n",
        ))
        .expect("the queue's Redis counts");
        assert_eq!(s.sirene_quota_redis_url(), Some("redis://q:6379"));
    }

    #[test]
    fn dkim_and_link_key_settings_are_checked() {
        let refused = |toml: &str| {
            Settings::from_figment(&figment_with(toml))
                .expect_err("refused")
                .to_string()
        };
        let err = refused("[mail.dkim]\nselector = 'dossier2026'\ndomain = 'cabinet.example'\n");
        assert!(err.contains("mail.dkim.private_key: required"), "{err}");
        let err = refused(
            "[mail.dkim]\nselector = 'dossier2026'\ndomain = 'autre.fr'\nprivate_key = 'k'\n",
        );
        assert!(
            err.contains("autre.fr is not mail.from_address's domain (cabinet.example)"),
            "{err}"
        );
        let err = refused("[mail.dkim]\nprivate_key = 'k'\n");
        assert!(err.contains("mail.dkim.selector: required"), "{err}");
        let err = refused("[invitations]\nlink_key = 'short'\n");
        assert!(
            err.contains("invitations.link_key: must be 64 hex"),
            "{err}"
        );
        let ok = Settings::from_figment(&figment_with(
            "[mail]\nfrom_address = 'invitations@mail.cabinet.fr'\n[mail.dkim]\nselector = 's1'\ndomain = 'cabinet.fr'\nprivate_key = 'k'\n",
        ));
        assert!(ok.is_ok(), "a parent domain aligns: {ok:?}");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Settings::from_figment(&figment_with("[queue]\nbakend = 'redis'\n"))
            .expect_err("unknown key refused")
            .to_string();
        assert!(err.contains("bakend"), "{err}");
    }

    #[test]
    fn redis_without_url_is_refused_with_its_key() {
        let err = Settings::from_figment(&figment_with("[queue]\nbackend = 'redis'\n"))
            .expect_err("missing url refused")
            .to_string();
        assert!(err.contains("queue.url"), "{err}");
    }

    #[test]
    fn a_retention_period_of_zero_or_a_bad_cron_is_refused_with_its_key() {
        let err = Settings::from_figment(&figment_with(
            "[retention]\nimport_files_days = 0\ncron = 'tous les jours'\n",
        ))
        .expect_err("refused")
        .to_string();
        assert!(err.contains("retention.import_files_days"), "{err}");
        assert!(err.contains("retention.cron"), "{err}");
    }

    #[test]
    fn an_attempt_shorter_than_a_lookup_is_refused_with_its_key() {
        let err = Settings::from_figment(&figment_with(
            "[queue.kinds.siret_enrichment]\ntimeout_ms = 12000\n",
        ))
        .expect_err("refused")
        .to_string();
        assert!(
            err.contains("queue.kinds.siret_enrichment.timeout_ms"),
            "{err}"
        );
        assert!(err.contains("15000 ms"), "{err}");
    }

    #[test]
    fn env_var_names_follow_the_key() {
        // End to end (real variables) in enqueue-cli/tests/cli.rs.
        assert_eq!(
            env_var_name("queue.defaults.concurrency"),
            "DOSSIER__QUEUE__DEFAULTS__CONCURRENCY"
        );
    }

    #[test]
    fn kind_overrides_fall_back_to_defaults() {
        let s = Settings::from_figment(&figment_with(
            "[queue.defaults]\nconcurrency = 3\n[queue.kinds.x]\nmax_attempts = 2\n",
        ))
        .expect("valid");
        let k = s.queue.kind("x");
        assert_eq!((k.concurrency, k.max_attempts), (3, 2));
        assert_eq!(s.queue.kind("y").max_attempts, 10);
    }

    #[test]
    fn redact_url_hides_password() {
        assert_eq!(
            redact_url("redis://:s3cret@host:6379/0"),
            "redis://:***@host:6379/0"
        );
        assert_eq!(redact_url("sqlite://var/x.db"), "sqlite://var/x.db");
    }
}
