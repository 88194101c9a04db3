//! A [`JobFilter`] as the WHERE clause of both SQL backends.
//!
//! Only fixed fragments are written into the SQL; every value is bound.
//! Each present field becomes one condition that an index of the `jobs`
//! table serves (migration `*_job_owners.sql`), so the planner can start
//! from the most selective one instead of the backlog.

use crate::job::{JobFilter, JobStatus};

/// A value to bind, in placeholder order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bind {
    Int(i64),
    Text(String),
}

/// Where the two engines' SQL differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// `WHERE …` (or an empty string) for `filter` at `now`, with its values;
/// placeholders are numbered from `$1`.
pub(crate) fn where_clause(filter: &JobFilter, now: i64, dialect: Dialect) -> (String, Vec<Bind>) {
    let mut conditions: Vec<String> = Vec::new();
    let mut binds: Vec<Bind> = Vec::new();
    let bind = |b: Bind, binds: &mut Vec<Bind>| {
        binds.push(b);
        format!("${}", binds.len())
    };
    if let Some(status) = filter.status {
        conditions.push(match status {
            JobStatus::Pending => {
                format!(
                    "state = 'queued' AND run_at <= {}",
                    bind(Bind::Int(now), &mut binds)
                )
            }
            JobStatus::Scheduled => format!(
                "state = 'queued' AND run_at > {} AND attempts = 0",
                bind(Bind::Int(now), &mut binds)
            ),
            JobStatus::Retrying => format!(
                "state = 'queued' AND run_at > {} AND attempts > 0",
                bind(Bind::Int(now), &mut binds)
            ),
            JobStatus::Running => "state = 'running'".into(),
            JobStatus::Done => "state = 'done'".into(),
            JobStatus::Dead => "state = 'dead'".into(),
        });
    }
    let exact = [
        ("kind", &filter.kind),
        ("group_name", &filter.group),
        ("subject", &filter.subject),
        ("trace_id", &filter.trace_id),
    ];
    for (column, value) in exact {
        if let Some(v) = value {
            conditions.push(format!(
                "{column} = {}",
                bind(Bind::Text(v.clone()), &mut binds)
            ));
        }
    }
    if let Some(text) = &filter.error {
        let p = bind(Bind::Text(text.clone()), &mut binds);
        // `last_error IS NOT NULL` is the partial index's own condition:
        // only failed jobs are read. Lowering is ASCII-only on every
        // backend (PostgreSQL's under the C collation), so that all agree.
        conditions.push(match dialect {
            Dialect::Sqlite => {
                format!("last_error IS NOT NULL AND instr(lower(last_error), lower({p})) > 0")
            }
            Dialect::Postgres => format!(
                "last_error IS NOT NULL \
                 AND strpos(lower(last_error COLLATE \"C\"), lower({p} COLLATE \"C\")) > 0"
            ),
        });
    }
    if conditions.is_empty() {
        return (String::new(), binds);
    }
    (format!("WHERE {}", conditions.join(" AND ")), binds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_bound_never_written() {
        let filter = JobFilter {
            subject: Some("c'; DROP TABLE jobs; --".into()),
            error: Some("timeout".into()),
            status: Some(JobStatus::Pending),
            ..JobFilter::default()
        };
        let (sql, binds) = where_clause(&filter, 42, Dialect::Sqlite);
        assert_eq!(
            sql,
            "WHERE state = 'queued' AND run_at <= $1 AND subject = $2 \
             AND last_error IS NOT NULL AND instr(lower(last_error), lower($3)) > 0"
        );
        assert_eq!(
            binds,
            vec![
                Bind::Int(42),
                Bind::Text("c'; DROP TABLE jobs; --".into()),
                Bind::Text("timeout".into())
            ]
        );
    }

    #[test]
    fn an_empty_filter_selects_everything() {
        let (sql, binds) = where_clause(&JobFilter::default(), 0, Dialect::Postgres);
        assert_eq!(sql, "");
        assert!(binds.is_empty());
    }

    /// The plan SQLite makes of each filter, on the shipped schema: every
    /// field is read through its index, none through the table.
    #[tokio::test]
    async fn each_filter_reads_its_index_not_the_backlog() {
        let pool = crate::sqlite_pool::migrated_in_memory().await;
        let text = |v: &str| Some(v.to_string());
        let cases = [
            (
                JobFilter {
                    subject: text("c1"),
                    ..JobFilter::default()
                },
                "jobs_subject",
            ),
            (
                JobFilter {
                    group: text("f1"),
                    ..JobFilter::default()
                },
                "jobs_group",
            ),
            (
                JobFilter {
                    trace_id: text("t1"),
                    ..JobFilter::default()
                },
                "jobs_trace",
            ),
            (
                JobFilter {
                    error: text("smtp"),
                    ..JobFilter::default()
                },
                "jobs_failed",
            ),
            (
                JobFilter {
                    group: text("f1"),
                    status: Some(JobStatus::Dead),
                    ..JobFilter::default()
                },
                "jobs_group",
            ),
        ];
        for (filter, index) in cases {
            let (condition, binds) = where_clause(&filter, 0, Dialect::Sqlite);
            let sql = format!(
                "EXPLAIN QUERY PLAN SELECT id FROM jobs {condition} ORDER BY updated_at DESC, id DESC LIMIT 50"
            );
            let mut q = sqlx::query_as::<_, (i64, i64, i64, String)>(sqlx::AssertSqlSafe(sql));
            for b in binds {
                q = match b {
                    Bind::Int(v) => q.bind(v),
                    Bind::Text(v) => q.bind(v),
                };
            }
            let plan: Vec<String> = q
                .fetch_all(&pool)
                .await
                .expect("plan")
                .into_iter()
                .map(|r| r.3)
                .collect();
            // A search of the index for an exact field; the failed jobs'
            // index walked newest first for the error text.
            let wanted = if filter.error.is_some() {
                format!("SCAN jobs USING INDEX {index}")
            } else {
                format!("SEARCH jobs USING INDEX {index}")
            };
            assert!(
                plan.iter().any(|step| step.starts_with(&wanted)),
                "{filter:?} should use {index}: {plan:?}"
            );
            assert!(
                !plan.iter().any(|step| step == "SCAN jobs"),
                "{filter:?} reads the whole table: {plan:?}"
            );
        }
    }
}
