//! Running an import: check every row, then write the clients in batches,
//! one transaction each with their jobs, the progress recorded as it goes.

use std::collections::HashSet;

use super::store::{self, Finish, ImportRecord};
use super::{Analysis, ImportError, analyse, existing, report};
use crate::db::{Database, on_pool};
use crate::onboarding::{Context, Plan};
use crate::outbox::{self, Staged};
use crate::queue::QueueBackend;
use crate::secrets::KeyRing;
use crate::write_gate::Lane;

/// Counts shown while an import runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    pub total: usize,
    pub validated: usize,
    pub created: usize,
    pub skipped: usize,
    pub refused: usize,
    pub jobs: usize,
}

fn unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// Clients per write transaction on SQLite, and on PostgreSQL while the
/// hooks answer requests: about 20 ms of holding SQLite's one write lock
/// on the reference machine (1,000 took 200 ms, and a client created
/// through the hook meanwhile waited that long).
pub const SMALL_BATCH_ROWS: usize = 100;

/// Writes one batch and counts it on the import, in one transaction.
async fn write_batch(
    db: &Database,
    ctx: &Context,
    plans: &[Plan],
    direct: Option<&str>,
    import_id: &str,
) -> Result<Vec<Staged>, sqlx::Error> {
    let jobs: usize = plans.iter().map(|p| p.jobs.len()).sum();
    let _turn = db.write_turn(Lane::Background).await;
    on_pool!(db, pool => async {
        let mut tx = pool.begin().await?;
        let staged = crate::onboarding::write::write(&mut tx, ctx, plans, direct).await?;
        sqlx::query(
            "UPDATE imports SET rows_created = rows_created + $2, jobs_enqueued = jobs_enqueued + $3, updated_at = $4 WHERE id = $1",
        )
        .bind(import_id)
        .bind(plans.len() as i64)
        .bind(jobs as i64)
        .bind(crate::clock::now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(staged)
    }.await)
}

/// Runs the recorded import `import_id` to its end (or resumes it), calling
/// `progress` after the check and after each batch. Returns the import as
/// it ended; an import already finished is returned as it is.
pub async fn run(
    db: &Database,
    settings: super::Limits<'_>,
    keys: &KeyRing,
    queue: Option<&dyn QueueBackend>,
    import_id: &str,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<ImportRecord, ImportError> {
    let missing = || ImportError::NotFound(import_id.to_string());
    let record = store::get(db, import_id).await?.ok_or_else(missing)?;
    if record.finished() {
        return Ok(record);
    }
    let (content, request) = store::content(db, import_id).await?.ok_or_else(missing)?;
    let mut a = match analyse(db, settings, keys, &request, import_id, &content).await {
        Ok(a) => a,
        Err(ImportError::File(problems)) => {
            let report = format!(
                "import {import_id} of {} refused: nothing was created\n{}\n",
                request.file_name,
                problems
                    .iter()
                    .map(|p| format!("  - {p}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            store::finish(
                db,
                import_id,
                Finish {
                    status: "refused",
                    skipped: 0,
                    refused: 0,
                    report: &report,
                    errors_csv: None,
                    error: None,
                },
            )
            .await?;
            return store::get(db, import_id).await?.ok_or_else(missing);
        }
        Err(e) => return Err(e),
    };
    store::started(db, import_id, a.rows_total(), a.resumed).await?;
    let mut p = Progress {
        total: a.rows_total(),
        validated: a.rows_total(),
        created: a.resumed,
        skipped: a.skipped.len(),
        refused: a.bad_lines().len(),
        jobs: usize::try_from(record.jobs_enqueued).unwrap_or(0),
    };
    progress(&p);
    let refused = a.refused(request.partial);
    if !refused {
        write_all(
            db,
            settings,
            queue,
            import_id,
            &request.firm_id,
            &mut a,
            &mut p,
            progress,
        )
        .await?;
    }
    let text = report::summary(&a, &request, import_id, &p, refused);
    let csv = report::errors_csv(&a);
    store::finish(
        db,
        import_id,
        Finish {
            status: if refused { "refused" } else { "done" },
            skipped: a.skipped.len(),
            refused: a.bad_lines().len(),
            report: &text,
            errors_csv: csv.as_deref(),
            error: None,
        },
    )
    .await?;
    store::get(db, import_id).await?.ok_or_else(missing)
}

#[allow(clippy::too_many_arguments)]
async fn write_all(
    db: &Database,
    settings: super::Limits<'_>,
    queue: Option<&dyn QueueBackend>,
    import_id: &str,
    firm: &str,
    a: &mut Analysis,
    p: &mut Progress,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<(), ImportError> {
    let direct = outbox::direct_queue(settings.queue);
    // Each batch is one write transaction. On SQLite nobody else writes
    // meanwhile, and on PostgreSQL it takes the database's CPU: small ones
    // let a hook's creation in between.
    let size = || {
        match db {
            Database::Sqlite(_) => settings.imports.batch_rows.min(SMALL_BATCH_ROWS),
            Database::Postgres(_) if crate::interactive::busy() => {
                settings.imports.batch_rows.min(SMALL_BATCH_ROWS)
            }
            Database::Postgres(_) => settings.imports.batch_rows,
        }
        .max(1)
    };
    let mut plans = std::mem::take(&mut a.plans).into_iter().peekable();
    let mut staged = Vec::new();
    while plans.peek().is_some() {
        let started = std::time::Instant::now();
        let mut batch: Vec<Plan> = plans.by_ref().take(size()).collect();
        loop {
            // The jobs of the batch before are pushed to the queue while
            // this one is written: they are committed in the outbox already.
            let (written, ()) = tokio::join!(
                write_batch(db, &a.ctx, &batch, direct, import_id),
                push(db, queue, std::mem::take(&mut staged))
            );
            match written {
                Ok(s) => {
                    staged = s;
                    break;
                }
                // Someone created one of these clients since the check (a
                // hook, another import): skip it and write the rest.
                Err(e) if unique_violation(&e) => {
                    let have = existing(db, firm, import_id).await?;
                    let before = batch.len();
                    let mut gone = HashSet::new();
                    for plan in &batch {
                        let line = plan.import.as_ref().map_or(0, |i| i.1);
                        let by = plan.siret().and_then(|s| have.by_siret.get(s)).or_else(|| {
                            plan.external_ref
                                .as_ref()
                                .and_then(|r| have.by_ref.get(r))
                                .map(|t| &t.0)
                        });
                        if have.lines.contains(&line) {
                            p.created += 1;
                            gone.insert(plan.client_id.clone());
                        } else if let Some(id) = by {
                            a.skipped.push(super::Skip {
                                line: line as usize,
                                client_id: id.clone(),
                                reason: format!("created meanwhile as client {id}"),
                            });
                            gone.insert(plan.client_id.clone());
                        }
                    }
                    batch.retain(|plan| !gone.contains(&plan.client_id));
                    if batch.len() == before {
                        return Err(e.into());
                    }
                    p.skipped = a.skipped.len();
                }
                Err(e) => return Err(e.into()),
            }
        }
        p.created += batch.len();
        p.jobs += batch.iter().map(|b| b.jobs.len()).sum::<usize>();
        // Jobs written straight into the queue's table: wake this process's
        // fetchers rather than wait for their next poll.
        if let (Some(q), Some(_)) = (queue, direct) {
            let kinds: HashSet<&str> = batch
                .iter()
                .flat_map(|b| b.jobs.iter().map(|j| j.kind.as_str()))
                .collect();
            for kind in kinds {
                q.wakers().wake(kind);
            }
        }
        a.plans.extend(batch);
        progress(p);
        // While the hooks answer requests, pause as long as the batch
        // took: the import gets at most half of the time meanwhile
        // (crate::interactive).
        crate::interactive::idle_or(started.elapsed()).await;
    }
    push(db, queue, staged).await;
    // What an earlier run of this import (or anyone) left staged when it
    // died between a commit and its push.
    if let Some(q) = queue
        && let Err(e) = outbox::relay(db, q).await
    {
        tracing::warn!(error = %e, "import: jobs stay staged until a worker relays them");
    }
    Ok(())
}

/// Pushes a batch's staged jobs to the queue; on failure they stay staged
/// for the workers' relay.
async fn push(db: &Database, queue: Option<&dyn QueueBackend>, staged: Vec<Staged>) {
    if let Some(q) = queue
        && let Err(e) = outbox::push_staged(db, q, staged, Lane::Background).await
    {
        tracing::warn!(error = %e, "import: jobs stay staged until a worker relays them");
    }
}
