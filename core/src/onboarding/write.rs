//! Writing [`Plan`]s: every table in one statement each, whatever the number
//! of clients, inside the caller's transaction, with their jobs staged.

use std::collections::BTreeMap;

use crate::clock::now_ms;
use crate::db::{BulkExec, BulkInsert, Col};
use crate::exercice::{Origin, rules};
use crate::invitations::Role;
use crate::outbox::{StageJobs, Staged};

use super::plan::{Context, Plan};

const CLIENTS: BulkInsert = BulkInsert {
    table: "clients",
    cols: &[
        Col::Text("id"),
        Col::Text("firm_id"),
        Col::Text("siret"),
        Col::Text("entered"),
        Col::Text("company"),
        Col::Text("enrichment_status"),
        Col::Text("external_ref"),
        Col::Text("import_id"),
        Col::Int("import_line"),
        Col::Int("created_at"),
        Col::Int("updated_at"),
    ],
    on_conflict: "",
};

const EXERCICES: BulkInsert = BulkInsert {
    table: "exercices",
    cols: &[
        Col::Text("id"),
        Col::Text("client_id"),
        Col::Text("start_date"),
        Col::Text("end_date"),
        Col::Text("label"),
        Col::Text("origin"),
        Col::Int("created_at"),
    ],
    on_conflict: "",
};

const SNAPSHOTS: BulkInsert = BulkInsert {
    table: "tree_snapshots",
    cols: &[
        Col::Text("id"),
        Col::Text("template_name"),
        Col::Text("definition"),
        Col::Int("created_at"),
    ],
    on_conflict: "ON CONFLICT (id) DO NOTHING",
};

const CLIENT_TREES: BulkInsert = BulkInsert {
    table: "client_trees",
    cols: &[
        Col::Text("client_id"),
        Col::Text("template_name"),
        Col::Text("snapshot_id"),
        Col::Int("created_at"),
    ],
    on_conflict: "",
};

const INVITATIONS: BulkInsert = BulkInsert {
    table: "invitations",
    cols: &[
        Col::Text("id"),
        Col::Text("client_id"),
        Col::Text("email"),
        Col::Text("email_key"),
        Col::Text("first_name"),
        Col::Text("last_name"),
        Col::Text("role"),
        Col::Text("themes"),
        Col::Text("status"),
        Col::Int("created_at"),
        Col::Int("updated_at"),
        Col::Int("queued_at"),
    ],
    on_conflict: "",
};

const CLIENT_APPS: BulkInsert = BulkInsert {
    table: "client_apps",
    cols: &[
        Col::Text("client_id"),
        Col::Text("app_id"),
        Col::Text("kind"),
        Col::Bool("on_director_portal"),
        Col::Text("settings"),
        Col::Text("status"),
        Col::Int("generation"),
        Col::Int("created_at"),
        Col::Int("updated_at"),
    ],
    on_conflict: "",
};

const COLLABORATORS: BulkInsert = BulkInsert {
    table: "client_collaborators",
    cols: &[
        Col::Text("client_id"),
        Col::Text("member_id"),
        Col::Int("created_at"),
    ],
    on_conflict: "",
};

/// The rows of each table for `plans`, in the order they must be written.
fn rows(ctx: &Context, plans: &[Plan]) -> Vec<(&'static BulkInsert, Vec<serde_json::Value>)> {
    use serde_json::json;
    let now = now_ms();
    let mut snapshots = BTreeMap::new();
    let (mut clients, mut exercices, mut trees, mut invitations, mut apps, mut members) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for p in plans {
        clients.push(json!({
            "id": p.client_id, "firm_id": p.firm_id, "siret": p.siret,
            "entered": p.entered, "company": p.entered,
            "enrichment_status": p.status.as_str(), "external_ref": p.external_ref,
            "import_id": p.import.as_ref().map(|i| &i.0),
            "import_line": p.import.as_ref().map(|i| i.1),
            "created_at": now, "updated_at": now,
        }));
        exercices.push(json!({
            "id": p.exercice_id, "client_id": p.client_id,
            "start_date": p.span.start.to_string(), "end_date": p.span.end.to_string(),
            "label": rules::base_label(p.span), "origin": Origin::Manual.as_str(),
            "created_at": now,
        }));
        if let Some(tree) = ctx.tree(&p.tree_name) {
            snapshots.entry(p.snapshot_id.clone()).or_insert_with(|| {
                json!({
                    "id": p.snapshot_id, "template_name": p.tree_name,
                    "definition": tree.definition, "created_at": now,
                })
            });
        }
        trees.push(json!({
            "client_id": p.client_id, "template_name": p.tree_name,
            "snapshot_id": p.snapshot_id, "created_at": now,
        }));
        if let Some(i) = &p.invitation {
            invitations.push(json!({
                "id": i.id, "client_id": p.client_id, "email": i.email,
                "email_key": i.email.to_lowercase(), "first_name": i.first_name,
                "last_name": i.last_name, "role": Role::Director.as_str(),
                "themes": serde_json::to_string(&i.themes).unwrap_or_else(|_| "[]".into()),
                "status": if i.send { "queued" } else { "draft" },
                "created_at": now, "updated_at": now,
                "queued_at": i.send.then_some(now),
            }));
        }
        for a in &p.apps {
            apps.push(json!({
                "client_id": p.client_id, "app_id": a.app_id, "kind": a.kind,
                "on_director_portal": a.on_director_portal, "settings": a.settings,
                "status": "pending", "generation": 0, "created_at": now, "updated_at": now,
            }));
        }
        for m in &p.members {
            members.push(json!({ "client_id": p.client_id, "member_id": m, "created_at": now }));
        }
    }
    vec![
        (&CLIENTS, clients),
        (&EXERCICES, exercices),
        (&SNAPSHOTS, snapshots.into_values().collect()),
        (&CLIENT_TREES, trees),
        (&INVITATIONS, invitations),
        (&CLIENT_APPS, apps),
        (&COLLABORATORS, members),
    ]
}

/// Writes the plans' rows and stages their jobs in `tx` (either engine).
/// `direct`: the queue prefix when the queue is this database's `jobs` table.
/// Returns what went into the outbox.
pub(crate) async fn write<T>(
    tx: &mut T,
    ctx: &Context,
    plans: &[Plan],
    direct: Option<&str>,
) -> Result<Vec<Staged>, sqlx::Error>
where
    T: BulkExec + StageJobs,
{
    tx.bulk_all(&rows(ctx, plans)).await?;
    let jobs: Vec<_> = plans.iter().flat_map(|p| p.jobs.iter().cloned()).collect();
    tx.stage_jobs(&jobs, direct).await
}
