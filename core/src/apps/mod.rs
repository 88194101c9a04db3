//! Partner applications: the firm's catalogue (`config/apps/*.toml`), each
//! client's activations with their settings (secret ones sealed at rest,
//! shown as `***`), and what the `app_setup` / `app_teardown` jobs record.

pub mod partner;
pub mod signature;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::db::{Database, on_pool};
use crate::secrets::{KeyRing, SecretError};
use crate::write_gate::Lane;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppKind {
    /// A tile linking to the partner's site; nothing to provision.
    Redirection,
    /// Connected by API: provisioned for each client.
    Automation,
}

impl AppKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AppKind::Redirection => "redirection",
            AppKind::Automation => "automation",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettingType {
    String,
    Integer,
    Boolean,
    Email,
    /// A directory of the client's tree, by path (`Comptabilité/Banque`).
    Directory,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: SettingType,
    #[serde(default)]
    pub required: bool,
    /// Sealed at rest, never shown or logged.
    #[serde(default)]
    pub secret: bool,
    #[serde(default)]
    pub description: Option<String>,
}

/// One app of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    pub id: String,
    pub name: String,
    pub kind: AppKind,
    /// Redirection apps: where the tile leads.
    #[serde(default)]
    pub url: Option<String>,
    /// Automation apps: where the client is provisioned and de-provisioned.
    #[serde(default)]
    pub provisioning_url: Option<String>,
    #[serde(default)]
    pub deprovisioning_url: Option<String>,
    #[serde(default)]
    pub settings: Vec<SettingSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    apps: Vec<App>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{file}: {message}")]
    Catalogue { file: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("no client with id {0}")]
    ClientNotFound(String),
    #[error("firm {firm} has no app {app} in its catalogue (see `dossier app list`)")]
    UnknownApp { firm: String, app: String },
    #[error("app {app} is not enabled for client {client}")]
    NotEnabled { client: String, app: String },
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Firm(#[from] crate::firms::FirmError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("stored app data is unreadable: {0}")]
    Corrupt(String),
}

impl AppError {
    pub fn is_user_error(&self) -> bool {
        match self {
            AppError::Firm(e) => e.is_user_error(),
            e => !matches!(e, AppError::Db(_) | AppError::Corrupt(_)),
        }
    }
}

fn id_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn http_url(s: &Option<String>) -> bool {
    s.as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .is_some_and(|u| matches!(u.scheme(), "http" | "https"))
}

/// Parses and checks a catalogue file; every problem is listed.
pub fn parse_catalogue(file: &str, text: &str) -> Result<Vec<App>, AppError> {
    let parsed: CatalogueFile = toml::from_str(text).map_err(|e| AppError::Catalogue {
        file: file.to_string(),
        message: e.to_string().trim_end().to_string(),
    })?;
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for app in &parsed.apps {
        let who = format!("app {:?}", app.id);
        if !id_ok(&app.id) {
            problems.push(format!(
                "{who}: the id must be 1 to 64 of a-z, 0-9, _ (it names environment variables)"
            ));
        }
        if !seen.insert(app.id.clone()) {
            problems.push(format!("{who} is listed twice"));
        }
        if app.name.trim().is_empty() {
            problems.push(format!("{who}: empty name"));
        }
        match app.kind {
            AppKind::Redirection => {
                if !http_url(&app.url) {
                    problems.push(format!("{who}: a redirection app needs an http(s) `url`"));
                }
                if !app.settings.is_empty() {
                    problems.push(format!("{who}: a redirection app takes no settings"));
                }
            }
            AppKind::Automation => {
                if !http_url(&app.provisioning_url) || !http_url(&app.deprovisioning_url) {
                    problems.push(format!(
                        "{who}: an automation app needs http(s) `provisioning_url` and `deprovisioning_url`"
                    ));
                }
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for s in &app.settings {
            if !id_ok(&s.name) {
                problems.push(format!(
                    "{who}: setting {:?} must be 1 to 64 of a-z, 0-9, _",
                    s.name
                ));
            }
            if !names.insert(&s.name) {
                problems.push(format!("{who}: setting {:?} is listed twice", s.name));
            }
        }
    }
    refuse_if_any(file, problems)?;
    Ok(parsed.apps)
}

/// Checks that every partner endpoint of the catalogue is one the
/// outbound policy lets the jobs call (`crate::outbound`): refused at load,
/// not at a client's first provisioning.
pub fn check_destinations(
    file: &str,
    apps: &[App],
    outbound: &crate::config::OutboundSettings,
) -> Result<(), AppError> {
    let problems: Vec<String> = apps
        .iter()
        .flat_map(|a| {
            [
                ("provisioning_url", &a.provisioning_url),
                ("deprovisioning_url", &a.deprovisioning_url),
            ]
            .into_iter()
            .filter_map(move |(key, url)| {
                let why = outbound.url_problem(url.as_deref()?)?;
                Some(format!("app {:?}: {key}: {why}", a.id))
            })
        })
        .collect();
    refuse_if_any(file, problems)
}

/// Every problem of a catalogue file at once, or none.
fn refuse_if_any(file: &str, problems: Vec<String>) -> Result<(), AppError> {
    if problems.is_empty() {
        return Ok(());
    }
    Err(AppError::Catalogue {
        file: file.to_string(),
        message: format!(
            "{} problem(s):\n  - {}",
            problems.len(),
            problems.join("\n  - ")
        ),
    })
}

/// Replaces the firm's catalogue with these apps (clients keep their
/// activations of apps that leave it; they can still be disabled).
pub async fn load_catalogue(db: &Database, firm: &str, apps: &[App]) -> Result<(), AppError> {
    crate::firms::require(db, firm).await?;
    let now = now_ms();
    let _turn = db.write_turn(Lane::Interactive).await;
    on_pool!(db, pool => {
        let mut tx = pool.begin().await?;
        sqlx::query("DELETE FROM app_catalogue WHERE firm_id = $1")
            .bind(firm)
            .execute(&mut *tx)
            .await?;
        for app in apps {
            sqlx::query(
                "INSERT INTO app_catalogue (firm_id, app_id, definition, updated_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(firm)
            .bind(&app.id)
            .bind(serde_json::to_string(app).map_err(|e| AppError::Corrupt(e.to_string()))?)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
    });
    Ok(())
}

pub async fn catalogue(db: &Database, firm: &str) -> Result<Vec<App>, AppError> {
    let rows: Vec<(String,)> = on_pool!(db, pool => sqlx::query_as(
        "SELECT definition FROM app_catalogue WHERE firm_id = $1 ORDER BY app_id",
    )
    .bind(firm)
    .fetch_all(pool)
    .await?);
    rows.into_iter()
        .map(|(d,)| serde_json::from_str(&d).map_err(|e| AppError::Corrupt(e.to_string())))
        .collect()
}

pub async fn app(db: &Database, firm: &str, app_id: &str) -> Result<App, AppError> {
    catalogue(db, firm)
        .await?
        .into_iter()
        .find(|a| a.id == app_id)
        .ok_or_else(|| AppError::UnknownApp {
            firm: firm.to_string(),
            app: app_id.to_string(),
        })
}

/// Where a sealed setting belongs: a value sealed for another client, app
/// or setting does not open.
fn context(client: &str, app: &str, setting: &str) -> String {
    format!("{client}/{app}/{setting}")
}

/// Checks settings given as `name=value` against the app's schema and
/// seals the secret ones. Every problem is listed; nothing is returned then.
pub fn validate_settings(
    app: &App,
    client_id: &str,
    given: &[(String, String)],
    directories: &[String],
    keys: &KeyRing,
) -> Result<BTreeMap<String, serde_json::Value>, AppError> {
    let mut problems = Vec::new();
    let mut out = BTreeMap::new();
    for (name, value) in given {
        let Some(spec) = app.settings.iter().find(|s| &s.name == name) else {
            let known: Vec<&str> = app.settings.iter().map(|s| s.name.as_str()).collect();
            problems.push(format!(
                "unknown setting {name:?} for {}; its settings: {}",
                app.id,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
            continue;
        };
        if out.contains_key(name) {
            problems.push(format!("setting {name:?} is given twice"));
            continue;
        }
        let shown = if spec.secret { "***" } else { value.as_str() };
        let parsed = match spec.kind {
            SettingType::String if value.trim().is_empty() => Err("is empty".to_string()),
            SettingType::String => Ok(serde_json::Value::String(value.clone())),
            SettingType::Integer => value
                .parse::<i64>()
                .map(serde_json::Value::from)
                .map_err(|_| "is not an integer".to_string()),
            SettingType::Boolean => match value.as_str() {
                "true" | "yes" | "1" => Ok(true.into()),
                "false" | "no" | "0" => Ok(false.into()),
                _ => Err("is not true or false".to_string()),
            },
            SettingType::Email => crate::invitations::parse_email(value)
                .map(|a| serde_json::Value::String(a.to_string()))
                .map_err(|_| "is not an email address".to_string()),
            SettingType::Directory => {
                let path = value.trim_matches('/');
                if directories.iter().any(|d| d == path) {
                    Ok(serde_json::Value::String(path.to_string()))
                } else {
                    Err(format!(
                        "is not a directory of the client's tree (e.g. {})",
                        directories
                            .iter()
                            .take(3)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
            }
        };
        match parsed {
            Err(why) => problems.push(format!("setting {name}={shown} {why}")),
            Ok(v) if spec.secret => {
                let plain = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                match keys.seal(&plain, &context(client_id, &app.id, name)) {
                    Ok(sealed) => {
                        out.insert(name.clone(), serde_json::Value::String(sealed));
                    }
                    Err(e) => problems.push(format!("setting {name}: {e}")),
                }
            }
            Ok(v) => {
                out.insert(name.clone(), v);
            }
        }
    }
    for spec in app.settings.iter().filter(|s| s.required) {
        if !given.iter().any(|(n, _)| n == &spec.name) {
            problems.push(format!(
                "missing required setting {:?}{}",
                spec.name,
                spec.description
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ));
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(AppError::Invalid(format!(
            "settings of {} refused:\n  - {}",
            app.id,
            problems.join("\n  - ")
        )))
    }
}

/// A client's activation of an app.
#[derive(Debug, Clone, Serialize)]
pub struct ClientApp {
    pub client_id: String,
    pub app_id: String,
    pub kind: String,
    pub on_director_portal: bool,
    /// Secret values are sealed here; see [`ClientApp::redacted_settings`].
    #[serde(skip)]
    pub settings: BTreeMap<String, serde_json::Value>,
    pub status: String,
    pub generation: i64,
    pub external_id: Option<String>,
    pub partner_status: Option<String>,
    pub last_error: Option<String>,
    pub updated_at_ms: i64,
}

impl ClientApp {
    /// The settings as anyone may see them: sealed values as `***`.
    pub fn redacted_settings(&self) -> BTreeMap<String, serde_json::Value> {
        self.settings
            .iter()
            .map(|(k, v)| {
                let sealed = v.as_str().is_some_and(KeyRing::is_sealed);
                (k.clone(), if sealed { "***".into() } else { v.clone() })
            })
            .collect()
    }

    /// The settings with secrets opened, for the partner call only.
    pub fn opened_settings(
        &self,
        keys: &KeyRing,
    ) -> Result<BTreeMap<String, serde_json::Value>, AppError> {
        self.settings
            .iter()
            .map(|(k, v)| match v.as_str() {
                Some(s) if KeyRing::is_sealed(s) => Ok((
                    k.clone(),
                    serde_json::Value::String(
                        keys.open(s, &context(&self.client_id, &self.app_id, k))?,
                    ),
                )),
                _ => Ok((k.clone(), v.clone())),
            })
            .collect()
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    client_id: String,
    app_id: String,
    kind: String,
    on_director_portal: bool,
    settings: String,
    status: String,
    generation: i64,
    external_id: Option<String>,
    partner_status: Option<String>,
    last_error: Option<String>,
    updated_at: i64,
}

const COLUMNS: &str = "client_id, app_id, kind, on_director_portal, settings, status, generation, \
     external_id, partner_status, last_error, updated_at";

fn decode(r: Row) -> Result<ClientApp, AppError> {
    Ok(ClientApp {
        settings: serde_json::from_str(&r.settings)
            .map_err(|e| AppError::Corrupt(e.to_string()))?,
        client_id: r.client_id,
        app_id: r.app_id,
        kind: r.kind,
        on_director_portal: r.on_director_portal,
        status: r.status,
        generation: r.generation,
        external_id: r.external_id,
        partner_status: r.partner_status,
        last_error: r.last_error,
        updated_at_ms: r.updated_at,
    })
}

pub async fn client_app(
    db: &Database,
    client: &str,
    app: &str,
) -> Result<Option<ClientApp>, AppError> {
    let sql = format!("SELECT {COLUMNS} FROM client_apps WHERE client_id = $1 AND app_id = $2");
    let row: Option<Row> = on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(client).bind(app).fetch_optional(pool).await?);
    row.map(decode).transpose()
}

pub async fn client_apps(db: &Database, client: &str) -> Result<Vec<ClientApp>, AppError> {
    let sql = format!("SELECT {COLUMNS} FROM client_apps WHERE client_id = $1 ORDER BY app_id");
    let rows: Vec<Row> = on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(client).fetch_all(pool).await?);
    rows.into_iter().map(decode).collect()
}

/// Binds: client, app, kind, pinned on the director's portal, settings
/// (JSON, secrets sealed), time.
pub(crate) const ENABLE: &str = "INSERT INTO client_apps (client_id, app_id, kind, on_director_portal, settings, status, generation, created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6)
     ON CONFLICT (client_id, app_id) DO UPDATE
       SET kind = excluded.kind, on_director_portal = excluded.on_director_portal,
           settings = excluded.settings, status = 'pending', last_error = NULL,
           generation = client_apps.generation + 1, updated_at = excluded.updated_at";

/// Enables (or re-enables, with new settings) an app for a client: status
/// `pending` under a new generation; the caller queues `app_setup`.
pub async fn enable(
    db: &Database,
    client_id: &str,
    app: &App,
    settings: &BTreeMap<String, serde_json::Value>,
    on_director_portal: bool,
) -> Result<ClientApp, AppError> {
    if on_director_portal && app.kind != AppKind::Redirection {
        return Err(AppError::Invalid(format!(
            "{} is an automation app: only redirection apps are pinned on the director's portal",
            app.id
        )));
    }
    match crate::clients::is_archived(db, client_id).await {
        Ok(false) => {}
        Ok(true) => {
            return Err(AppError::Invalid(format!(
                "client {client_id} is archived: `dossier client unarchive {client_id}` first"
            )));
        }
        Err(crate::clients::ClientError::Db(e)) => return Err(e.into()),
        Err(e) => return Err(AppError::Corrupt(e.to_string())),
    }
    let now = now_ms();
    let settings = serde_json::to_string(settings).map_err(|e| AppError::Corrupt(e.to_string()))?;
    let _turn = db.write_turn(Lane::Background).await;
    let result = on_pool!(db, pool => sqlx::query(ENABLE)
    .bind(client_id)
    .bind(&app.id)
    .bind(app.kind.as_str())
    .bind(on_director_portal)
    .bind(&settings)
    .bind(now)
    .execute(pool)
    .await
    .map(|r| r.rows_affected()));
    if let Err(e) = result {
        if e.as_database_error()
            .is_some_and(|d| d.is_foreign_key_violation())
        {
            return Err(AppError::ClientNotFound(client_id.to_string()));
        }
        return Err(e.into());
    }
    client_app(db, client_id, &app.id)
        .await?
        .ok_or_else(|| AppError::Corrupt("activation vanished".into()))
}

/// Disables an app: `disabling` under a new generation (the caller queues
/// `app_teardown`), or `disabled` at once when nothing was provisioned.
pub async fn disable(db: &Database, client_id: &str, app_id: &str) -> Result<ClientApp, AppError> {
    let current = client_app(db, client_id, app_id)
        .await?
        .filter(|a| a.status != "disabled")
        .ok_or_else(|| AppError::NotEnabled {
            client: client_id.to_string(),
            app: app_id.to_string(),
        })?;
    let provisioned = current.kind == "automation" && current.external_id.is_some();
    let status = if provisioned { "disabling" } else { "disabled" };
    let _turn = db.write_turn(Lane::Background).await;
    on_pool!(db, pool => sqlx::query(
        "UPDATE client_apps SET status = $1, generation = generation + 1, updated_at = $2
         WHERE client_id = $3 AND app_id = $4",
    )
    .bind(status)
    .bind(now_ms())
    .bind(client_id)
    .bind(app_id)
    .execute(pool)
    .await?
    .rows_affected());
    client_app(db, client_id, app_id)
        .await?
        .ok_or_else(|| AppError::Corrupt("activation vanished".into()))
}

/// Enables again, with the settings it kept, an app that archiving its
/// client disabled (`crate::client_archive`): `pending` under a new
/// generation (the caller queues `app_setup`; a teardown still under way
/// is superseded). `None`: the app was enabled or removed meanwhile.
pub async fn reinstate(
    db: &Database,
    client_id: &str,
    app_id: &str,
) -> Result<Option<ClientApp>, AppError> {
    let _turn = db.write_turn(Lane::Background).await;
    let changed = on_pool!(db, pool => sqlx::query(
        "UPDATE client_apps SET status = 'pending', last_error = NULL, generation = generation + 1, updated_at = $1
         WHERE client_id = $2 AND app_id = $3 AND status IN ('disabled', 'disabling')",
    )
    .bind(now_ms())
    .bind(client_id)
    .bind(app_id)
    .execute(pool)
    .await?
    .rows_affected());
    if changed == 0 {
        return Ok(None);
    }
    client_app(db, client_id, app_id).await
}

/// What a job learnt about an activation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome<'a> {
    pub status: &'a str,
    pub external_id: Option<&'a str>,
    pub partner_status: Option<&'a str>,
    pub last_error: Option<&'a str>,
}

impl<'a> Outcome<'a> {
    pub fn status(status: &'a str) -> Outcome<'a> {
        Outcome {
            status,
            ..Outcome::default()
        }
    }
}

/// Records a job's outcome, if the activation is still at its generation.
pub async fn record(
    db: &Database,
    client_id: &str,
    app_id: &str,
    generation: i64,
    outcome: Outcome<'_>,
) -> Result<bool, AppError> {
    let Outcome {
        status,
        external_id,
        partner_status,
        last_error,
    } = outcome;
    let _turn = db.write_turn(Lane::Background).await;
    let n = on_pool!(db, pool => sqlx::query(
        "UPDATE client_apps SET status = $1, external_id = COALESCE($2, external_id),
                partner_status = COALESCE($3, partner_status), last_error = $4, updated_at = $5
         WHERE client_id = $6 AND app_id = $7 AND generation = $8",
    )
    .bind(status)
    .bind(external_id)
    .bind(partner_status)
    .bind(last_error)
    .bind(now_ms())
    .bind(client_id)
    .bind(app_id)
    .bind(generation)
    .execute(pool)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// Re-seals every secret setting not sealed with the current key; returns
/// how many values changed. Run after putting a new key first.
pub async fn rekey(db: &Database, keys: &KeyRing) -> Result<usize, AppError> {
    let rows: Vec<Row> = on_pool!(db, pool => sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM client_apps"))).fetch_all(pool).await?);
    let mut changed = 0;
    for row in rows {
        let mut a = decode(row)?;
        let mut touched = false;
        for (name, value) in a.settings.iter_mut() {
            if let Some(s) = value.as_str()
                && KeyRing::is_sealed(s)
                && !keys.is_current(s)
            {
                let ctx = context(&a.client_id, &a.app_id, name);
                *value = serde_json::Value::String(keys.seal(&keys.open(s, &ctx)?, &ctx)?);
                touched = true;
                changed += 1;
            }
        }
        if touched {
            let settings =
                serde_json::to_string(&a.settings).map_err(|e| AppError::Corrupt(e.to_string()))?;
            let _turn = db.write_turn(Lane::Background).await;
            on_pool!(db, pool => sqlx::query("UPDATE client_apps SET settings = $1 WHERE client_id = $2 AND app_id = $3")
                .bind(&settings)
                .bind(&a.client_id)
                .bind(&a.app_id)
                .execute(pool)
                .await?
                .rows_affected());
        }
    }
    Ok(changed)
}
