//! Whose a job is: the firm it works for (the queue's *group*) and the
//! client it works on (its *subject*), so that operators find every job of
//! one client or one firm (`dossier jobs list --client … --firm …`) and act
//! on them in bulk, on every backend, through the queue's own indexes.
//!
//! The rule is one: a job whose payload names a `client_id` is that
//! client's, and the client's firm's. Producers that know the firm say so
//! ([`of_client`]); the others are labelled where they enqueue ([`label`],
//! [`label_in`]) by one lookup of the clients' firms.

use std::collections::BTreeMap;

use crate::db::{Database, on_pool, placeholders};
use crate::job::NewJob;

/// The client a payload names, if any.
pub fn client_of(payload: &serde_json::Value) -> Option<&str> {
    payload.get("client_id").and_then(serde_json::Value::as_str)
}

/// `job`, labelled as the job of `client` of `firm`.
pub fn of_client(mut job: NewJob, firm: &str, client: &str) -> NewJob {
    job.group = Some(firm.to_string());
    job.subject = Some(client.to_string());
    job
}

/// The clients of `jobs` whose firm is not known yet.
pub(crate) fn unlabelled(jobs: &[NewJob]) -> Vec<String> {
    let mut ids: Vec<String> = jobs
        .iter()
        .filter(|j| j.group.is_none())
        .filter_map(|j| client_of(&j.payload).map(str::to_string))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

pub(crate) fn apply(jobs: &mut [NewJob], firms: &BTreeMap<String, String>) {
    for job in jobs {
        let Some(client) = client_of(&job.payload).map(str::to_string) else {
            continue;
        };
        if job.group.is_none() {
            job.group = firms.get(&client).cloned();
        }
        job.subject.get_or_insert(client);
    }
}

/// The firms of `n` clients, bound as `$1…$n`: `(client id, firm id)` rows.
pub(crate) fn firms_of_sql(n: usize) -> String {
    format!(
        "SELECT id, firm_id FROM clients WHERE id IN ({})",
        placeholders(1, n)
    )
}

/// Labels `jobs` by their clients (one query); a client that does not
/// exist leaves its job with a subject and no group.
pub async fn label(db: &Database, jobs: &mut [NewJob]) -> Result<(), sqlx::Error> {
    let ids = unlabelled(jobs);
    let mut firms = BTreeMap::new();
    // Bounded IN lists: SQLite allows 32,766 variables, PostgreSQL 65,535.
    for chunk in ids.chunks(1_000) {
        let sql = firms_of_sql(chunk.len());
        let rows: Vec<(String, String)> = on_pool!(db, pool => {
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            q.fetch_all(pool).await?
        });
        firms.extend(rows);
    }
    apply(jobs, &firms);
    Ok(())
}

/// One job, [`label`]led.
pub async fn labelled(db: &Database, job: NewJob) -> Result<NewJob, sqlx::Error> {
    let mut jobs = [job];
    label(db, &mut jobs).await?;
    let [job] = jobs;
    Ok(job)
}

/// [`label`] inside a transaction, for jobs staged with the rows they are
/// about (the client may exist only in this transaction).
macro_rules! label_in {
    ($tx:expr, $jobs:expr) => {{
        let jobs: &mut [$crate::job::NewJob] = $jobs;
        let ids = $crate::owners::unlabelled(jobs);
        let mut firms = std::collections::BTreeMap::new();
        let mut result: Result<(), sqlx::Error> = Ok(());
        for chunk in ids.chunks(1_000) {
            let sql = $crate::owners::firms_of_sql(chunk.len());
            let mut q = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            match q.fetch_all(&mut *$tx).await {
                Ok(rows) => firms.extend(rows),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok() {
            $crate::owners::apply(jobs, &firms);
        }
        result
    }};
}
pub(crate) use label_in;

#[cfg(test)]
mod tests {
    use super::*;

    fn job(payload: serde_json::Value) -> NewJob {
        NewJob {
            kind: "k".into(),
            payload,
            run_at_ms: None,
            max_attempts: 1,
            idempotency_key: None,
            trace_id: None,
            group: None,
            subject: None,
            bulk: false,
        }
    }

    #[test]
    fn a_job_naming_a_client_is_the_clients_and_its_firms() {
        let mut jobs = vec![
            job(serde_json::json!({ "client_id": "c1" })),
            job(serde_json::json!({ "siret": "x" })),
            of_client(job(serde_json::json!({ "client_id": "c2" })), "f9", "c2"),
            job(serde_json::json!({ "client_id": "gone" })),
        ];
        assert_eq!(
            unlabelled(&jobs),
            vec!["c1".to_string(), "gone".to_string()]
        );
        let firms = BTreeMap::from([("c1".to_string(), "f1".to_string())]);
        apply(&mut jobs, &firms);
        let owners: Vec<_> = jobs
            .iter()
            .map(|j| (j.group.as_deref(), j.subject.as_deref()))
            .collect();
        assert_eq!(
            owners,
            vec![
                (Some("f1"), Some("c1")),
                (None, None),
                (Some("f9"), Some("c2")),
                (None, Some("gone")),
            ]
        );
    }
}
