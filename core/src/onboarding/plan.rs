//! Checking a creation form against what the firm has (its trees, app
//! catalogue and members, loaded once into a [`Context`]) and turning it
//! into a [`Plan`]: every row to write and every job to stage. Pure once
//! the context is loaded, so an import checks ten thousand forms without a
//! query each.

use std::collections::HashMap;

use crate::apps::{self, App};
use crate::clients::EnrichmentStatus;
use crate::config::QueueSettings;
use crate::db::Database;
use crate::exercice::rules;
use crate::invitations;
use crate::job::NewJob;
use crate::jobs::{app_setup, siret_enrichment, tree_setup};
use crate::secrets::KeyRing;
use crate::siret::Siret;
use crate::tree::template::TreeTemplate;
use crate::tree::{folders, templates};

use super::{ClientForm, OnboardingError};

/// A tree template ready to give to clients.
#[derive(Debug, Clone)]
pub(crate) struct PreparedTree {
    pub snapshot_id: String,
    pub definition: String,
    shared: Vec<String>,
    directories: Vec<String>,
}

/// What a firm has that a form refers to.
#[derive(Debug, Clone)]
pub struct Context {
    pub firm_id: String,
    trees: HashMap<String, PreparedTree>,
    default_tree: String,
    apps: HashMap<String, App>,
    /// Lower-cased email → member id.
    members: HashMap<String, String>,
}

fn prepare(template: TreeTemplate) -> Result<PreparedTree, OnboardingError> {
    let (snapshot_id, definition) =
        folders::snapshot(&template).map_err(|e| OnboardingError::Other(e.to_string()))?;
    Ok(PreparedTree {
        shared: template
            .shared_themes()
            .into_iter()
            .map(|t| t.id.clone())
            .collect(),
        directories: template.folders().into_iter().map(|f| f.path).collect(),
        snapshot_id,
        definition,
    })
}

/// The built-in template, by name, ready to give.
fn prepared_builtin() -> Result<&'static (String, PreparedTree), OnboardingError> {
    static BUILTIN: std::sync::OnceLock<Result<(String, PreparedTree), String>> =
        std::sync::OnceLock::new();
    BUILTIN
        .get_or_init(|| {
            let t = templates::builtin().map_err(|e| e.to_string())?;
            let name = t.name.clone();
            Ok((name, prepare(t).map_err(|e| e.to_string())?))
        })
        .as_ref()
        .map_err(|e| OnboardingError::Other(e.clone()))
}

impl Context {
    /// What `firm_id` has; a firm not recorded is a refusal naming the field.
    pub async fn load(db: &Database, firm_id: &str) -> Result<Context, OnboardingError> {
        let other = |e: &dyn std::fmt::Display| OnboardingError::Other(e.to_string());
        match crate::firms::require(db, firm_id).await {
            Ok(_) => {}
            Err(crate::firms::FirmError::Db(e)) => return Err(OnboardingError::Db(e)),
            Err(e) => return Err(OnboardingError::Invalid(vec![format!("firm_id: {e}")])),
        }
        let mut trees = HashMap::new();
        let mut default_tree = None;
        for stored in templates::list(db, firm_id).await.map_err(|e| other(&e))? {
            if stored.is_default && default_tree.is_none() {
                default_tree = Some(stored.template.name.clone());
            }
            trees.insert(stored.template.name.clone(), prepare(stored.template)?);
        }
        // The built-in template answers to its name, and is the default of
        // a firm that named none. It is the same text for the life of the
        // process: parsed and snapshotted once, not at every creation.
        let (builtin_name, builtin) = prepared_builtin()?;
        let default_tree = default_tree.unwrap_or_else(|| builtin_name.clone());
        if !trees.contains_key(builtin_name) {
            trees.insert(builtin_name.clone(), builtin.clone());
        }
        let apps = apps::catalogue(db, firm_id)
            .await
            .map_err(|e| other(&e))?
            .into_iter()
            .map(|a| (a.id.clone(), a))
            .collect();
        let members = crate::collaborators::members(db, firm_id)
            .await
            .map_err(|e| other(&e))?
            .into_iter()
            .map(|m| (m.email.to_lowercase(), m.id))
            .collect();
        Ok(Context {
            firm_id: firm_id.to_string(),
            trees,
            default_tree,
            apps,
            members,
        })
    }

    pub(crate) fn tree(&self, name: &str) -> Option<&PreparedTree> {
        self.trees.get(name)
    }
}

/// The invitation row a plan writes.
#[derive(Debug, Clone)]
pub(crate) struct PlannedInvitation {
    pub id: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub themes: Vec<String>,
    /// Sent at once (`queued`) or kept as a `draft`.
    pub send: bool,
}

/// An app activation a plan writes, its secret settings sealed.
#[derive(Debug, Clone)]
pub(crate) struct PlannedApp {
    pub app_id: String,
    pub kind: &'static str,
    pub on_director_portal: bool,
    pub settings: String,
}

/// Everything creating one client writes, and the jobs it stages.
#[derive(Debug, Clone)]
pub struct Plan {
    pub client_id: String,
    pub(crate) firm_id: String,
    pub(crate) siret: Option<String>,
    pub(crate) entered: String,
    pub(crate) status: EnrichmentStatus,
    pub(crate) external_ref: Option<String>,
    /// The import and the file line it comes from.
    pub(crate) import: Option<(String, i64)>,
    pub exercice_id: String,
    pub(crate) span: rules::Span,
    pub(crate) tree_name: String,
    pub(crate) snapshot_id: String,
    pub(crate) invitation: Option<PlannedInvitation>,
    pub(crate) apps: Vec<PlannedApp>,
    pub(crate) members: Vec<String>,
    pub jobs: Vec<NewJob>,
}

impl Plan {
    pub fn siret(&self) -> Option<&str> {
        self.siret.as_deref()
    }
}

fn job(kind: &str, payload: serde_json::Value, key: String, queue: &QueueSettings) -> NewJob {
    NewJob {
        kind: kind.into(),
        payload,
        run_at_ms: None,
        max_attempts: queue.kind(kind).max_attempts,
        idempotency_key: Some(key),
        trace_id: None,
        group: None,
        subject: None,
        bulk: false,
    }
}

/// Options an import adds to a form.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub external_ref: Option<String>,
    pub import: Option<(String, i64)>,
    /// Registries the enrichment asks (`sirene.providers` when absent).
    pub providers: Option<Vec<String>>,
    /// Given at enqueue (hook header, `--trace-id`): in every log line of
    /// the client's jobs.
    pub trace_id: Option<String>,
}

/// Every text field of the form against [`crate::text`]'s rules, before
/// anything else of the form is looked at, so a NUL is a refusal, not a
/// failed query. Messages name the field, never the value (settings may
/// be secrets).
pub fn text_problems(form: &ClientForm) -> Vec<String> {
    use crate::text::{MAX_EMAIL, MAX_ID, MAX_SETTING, MAX_TEXT, check, check_cell};
    let mut problems = Vec::new();
    let mut field = |name: String, value: &str, max: usize| {
        if let Err(e) = check(value, max) {
            problems.push(format!("{name}: {e}"));
        }
    };
    field("firm_id".into(), &form.firm_id, MAX_ID);
    if let Some(s) = &form.siret {
        field("siret".into(), s, MAX_ID);
    }
    for (k, v) in &form.company {
        field(format!("company.{}", crate::text::printable(k)), k, MAX_ID);
        field(
            format!("company.{}", crate::text::printable(k)),
            v,
            MAX_TEXT,
        );
    }
    if let Some(t) = &form.tree {
        field("tree".into(), t, MAX_ID);
    }
    if let Some(d) = &form.director {
        field("director.email".into(), &d.email, MAX_EMAIL);
        field("director.first_name".into(), &d.first_name, MAX_TEXT);
        field("director.last_name".into(), &d.last_name, MAX_TEXT);
    }
    for t in form.themes.iter().flatten() {
        field("themes".into(), t, MAX_ID);
    }
    for a in &form.apps {
        field("apps.app_id".into(), &a.app_id, MAX_ID);
        for k in a.settings.iter().map(|(k, _)| k) {
            field("apps.settings (a name)".into(), k, MAX_ID);
        }
    }
    for c in &form.collaborators {
        field("collaborators".into(), c, MAX_EMAIL);
    }
    // A setting's value may be a secret over several lines (a PEM key).
    for a in &form.apps {
        for (k, v) in &a.settings {
            if let Err(e) = check_cell(v, MAX_SETTING) {
                problems.push(format!("apps.settings.{}: {e}", crate::text::printable(k)));
            }
        }
    }
    problems
}

/// Checks `form` against the firm; every problem is listed, each as
/// `field: message` (`siret`, `company`, `exercice`, `tree`, `director`,
/// `themes`, `apps`, `collaborators`). Whether the SIRET is already a
/// client's is the caller's to check.
pub fn validate(
    ctx: &Context,
    form: &ClientForm,
    origin: Origin,
    queue: &QueueSettings,
    keys: &KeyRing,
) -> Result<Plan, Vec<String>> {
    let mut problems = text_problems(form);
    if !problems.is_empty() {
        return Err(problems);
    }

    // Company: a valid SIRET, or at least a name.
    let siret = match form.siret.as_deref().map(Siret::parse).transpose() {
        Ok(s) => s,
        Err(e) => {
            problems.push(format!("siret: {e}"));
            None
        }
    };
    if form.siret.is_none()
        && form
            .company
            .get("legal_name")
            .is_none_or(|n| n.trim().is_empty())
    {
        problems.push(
            "company: give a SIRET, or the company's legal_name for a client entered by hand"
                .into(),
        );
    }

    // The first exercice.
    let span = match form.exercice_start {
        None => {
            problems.push("exercice: the start date of the current exercice is required".into());
            None
        }
        Some(start) => match form.exercice_end.or_else(|| rules::default_end(start)) {
            None => {
                problems.push(format!("exercice: {start} is out of range"));
                None
            }
            Some(end) => {
                let span = rules::Span { start, end };
                match rules::check_plausible(span, chrono::Utc::now().date_naive())
                    .and_then(|()| rules::check_new(span, &[], false))
                {
                    Ok(()) => Some(span),
                    Err(e) => {
                        problems.push(format!("exercice: {e}"));
                        None
                    }
                }
            }
        },
    };

    // The tree.
    let tree_name = form
        .tree
        .clone()
        .unwrap_or_else(|| ctx.default_tree.clone());
    let Some(tree) = ctx.trees.get(&tree_name) else {
        let mut known: Vec<&str> = ctx.trees.keys().map(String::as_str).collect();
        known.sort_unstable();
        problems.push(format!(
            "tree: firm {} has no tree template {tree_name:?}; it has: {} (see `dossier tree list`)",
            ctx.firm_id,
            known.join(", ")
        ));
        return Err(problems);
    };

    // The director and their themes.
    let themes = form.themes.clone().unwrap_or_else(|| tree.shared.clone());
    let mut invitation = None;
    if let Some(d) = &form.director {
        let email = match invitations::parse_email(&d.email) {
            Ok(a) => Some(a.to_string()),
            Err(p) => {
                problems.push(format!("director: {p}"));
                None
            }
        };
        for (what, v) in [("first name", &d.first_name), ("last name", &d.last_name)] {
            if v.trim().is_empty() {
                problems.push(format!("director: the {what} is empty"));
            }
        }
        for t in &themes {
            if !tree.shared.contains(t) {
                problems.push(format!(
                    "themes: unknown theme {t:?}; the tree shares: {}",
                    tree.shared.join(", ")
                ));
            }
        }
        invitation = email.map(|email| PlannedInvitation {
            id: uuid::Uuid::now_v7().to_string(),
            email,
            first_name: d.first_name.trim().to_string(),
            last_name: d.last_name.trim().to_string(),
            themes: themes.clone(),
            send: form.invite,
        });
    } else if form.invite {
        problems.push(
            "director: an invitation needs the director's email and name (or pass --no-invite)"
                .into(),
        );
    }

    // The apps and their settings, against the chosen tree's directories.
    let client_id = uuid::Uuid::now_v7().to_string();
    let mut planned_apps = Vec::new();
    for choice in &form.apps {
        let Some(app) = ctx.apps.get(&choice.app_id) else {
            problems.push(format!(
                "apps: {}",
                apps::AppError::UnknownApp {
                    firm: ctx.firm_id.clone(),
                    app: choice.app_id.clone(),
                }
            ));
            continue;
        };
        if choice.on_director_portal && app.kind != apps::AppKind::Redirection {
            problems.push(format!(
                "apps: {} is not a redirection app: it cannot be pinned",
                app.id
            ));
        }
        match apps::validate_settings(app, &client_id, &choice.settings, &tree.directories, keys) {
            Ok(sealed) => planned_apps.push(PlannedApp {
                app_id: app.id.clone(),
                kind: app.kind.as_str(),
                on_director_portal: choice.on_director_portal,
                settings: serde_json::to_string(&sealed).unwrap_or_else(|_| "{}".into()),
            }),
            Err(e) => problems.push(format!("apps: {e}")),
        }
    }

    // The collaborators, members of the firm.
    let mut members = Vec::new();
    for email in &form.collaborators {
        match ctx.members.get(&email.trim().to_lowercase()) {
            Some(id) => members.push(id.clone()),
            None => problems.push(format!(
                "collaborators: {} is not a member of firm {}: add it with `dossier member add`",
                email.trim(),
                ctx.firm_id
            )),
        }
    }
    members.sort();
    members.dedup();
    let (Some(span), true) = (span, problems.is_empty()) else {
        return Err(problems);
    };

    // The jobs: tree (with the exercice's folders), enrichment, apps, invitation.
    let mut jobs = vec![job(
        tree_setup::KIND,
        serde_json::json!({ "client_id": client_id }),
        format!("tree_setup:{client_id}"),
        queue,
    )];
    if siret.is_some() {
        let mut payload = serde_json::json!({ "client_id": client_id });
        if let Some(p) = &origin.providers {
            payload["providers"] = serde_json::json!(p);
        }
        jobs.push(job(
            siret_enrichment::KIND,
            payload,
            format!("siret_enrichment:{client_id}"),
            queue,
        ));
    }
    for app in &planned_apps {
        jobs.push(job(
            app_setup::KIND,
            serde_json::json!({ "client_id": client_id, "app_id": app.app_id, "generation": 0 }),
            format!("{}:{client_id}:{}:0", app_setup::KIND, app.app_id),
            queue,
        ));
    }
    if let Some(i) = invitation.as_ref().filter(|i| i.send) {
        jobs.push(invitations::send_job(
            &i.id,
            &client_id,
            0,
            queue.kind(crate::jobs::invitation::KIND).max_attempts,
        ));
    }
    for j in &mut jobs {
        j.trace_id.clone_from(&origin.trace_id);
        j.group = Some(ctx.firm_id.clone());
        j.subject = Some(client_id.clone());
        // An import's clients wait behind the ones created one by one.
        j.bulk = origin.import.is_some();
    }
    Ok(Plan {
        firm_id: ctx.firm_id.clone(),
        status: if siret.is_some() {
            EnrichmentStatus::Pending
        } else {
            EnrichmentStatus::Skipped
        },
        siret: siret.map(|s| s.as_str().to_string()),
        entered: serde_json::to_string(&form.company).unwrap_or_else(|_| "{}".into()),
        external_ref: origin.external_ref,
        import: origin.import,
        exercice_id: uuid::Uuid::now_v7().to_string(),
        span,
        tree_name,
        snapshot_id: tree.snapshot_id.clone(),
        invitation,
        apps: planned_apps,
        members,
        jobs,
        client_id,
    })
}
