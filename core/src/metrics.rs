//! Prometheus metrics (`GET /metrics`): what this process counted — job
//! outcomes and durations, registry quota waits and errors, SMTP sends,
//! partner call failures — and, read at each scrape, what the queue and the
//! imports hold (depth by status, oldest pending job, dead set, imports
//! running). Labels stay small: kinds, statuses, providers, app ids; never
//! a client or job id.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::db::{Database, on_pool};
use crate::queue::QueueBackend;

pub use dossier_queue::metrics::{Kind, KindOutcome, attempt_started, job_finished};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindStatus {
    pub kind: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Provider {
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderClass {
    pub provider: String,
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Class {
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppClass {
    pub app: String,
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Status {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RowState {
    /// `total`, `validated`, `created`, `skipped`, `refused`.
    pub state: String,
}

fn seconds_histogram() -> Histogram {
    // 5 ms … ~80 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// Everything this process exposes.
pub struct Metrics {
    registry: Registry,
    pub queue_jobs: Family<KindStatus, Gauge>,
    pub oldest_pending_seconds: Family<Kind, Gauge<f64, AtomicU64>>,
    pub dead_jobs: Family<Kind, Gauge>,
    pub paused: Family<Kind, Gauge>,
    pub quota_waits: Family<Provider, Counter>,
    pub quota_wait_seconds: Family<Provider, Counter<f64, AtomicU64>>,
    pub registry_errors: Family<ProviderClass, Counter>,
    pub smtp_send_seconds: Histogram,
    pub smtp_failures: Family<Class, Counter>,
    pub partner_failures: Family<AppClass, Counter>,
    pub imports: Family<Status, Gauge>,
    pub import_rows: Family<RowState, Gauge>,
    pub webhook_deliveries: Family<Outcome, Counter>,
    pub webhook_endpoints: Family<State, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `delivered`, `failed` (an attempt), `gave_up`, `disabled`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct State {
    /// `enabled`, `failing`, `disabled`.
    pub state: String,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("dossier");
        let m = Metrics {
            queue_jobs: Family::default(),
            oldest_pending_seconds: Family::default(),
            dead_jobs: Family::default(),
            paused: Family::default(),
            quota_waits: Family::default(),
            quota_wait_seconds: Family::default(),
            registry_errors: Family::default(),
            smtp_send_seconds: seconds_histogram(),
            smtp_failures: Family::default(),
            partner_failures: Family::default(),
            imports: Family::default(),
            import_rows: Family::default(),
            webhook_deliveries: Family::default(),
            webhook_endpoints: Family::default(),
            registry: Registry::default(),
        };
        // What the pool records (attempts, outcomes, durations).
        dossier_queue::metrics::register(&mut registry);
        registry.register(
            "queue_jobs",
            "Jobs in the queue by kind and status (read at scrape)",
            m.queue_jobs.clone(),
        );
        registry.register(
            "queue_oldest_pending_age_seconds",
            "Age of the oldest job waiting to run, by kind (read at scrape)",
            m.oldest_pending_seconds.clone(),
        );
        registry.register(
            "dead_jobs",
            "Jobs in the dead set, by kind (read at scrape)",
            m.dead_jobs.clone(),
        );
        registry.register(
            "queue_paused",
            "1 for a kind an operator paused: its jobs are not fetched (read at scrape)",
            m.paused.clone(),
        );
        registry.register(
            "registry_quota_waits",
            "Lookups that waited for the registries' shared quota",
            m.quota_waits.clone(),
        );
        registry.register(
            "registry_quota_wait_seconds",
            "Time spent waiting for the registries' shared quota",
            m.quota_wait_seconds.clone(),
        );
        registry.register(
            "registry_errors",
            "Registry lookups that failed, by provider and class",
            m.registry_errors.clone(),
        );
        registry.register(
            "smtp_send_seconds",
            "Time to hand one message to the SMTP server",
            m.smtp_send_seconds.clone(),
        );
        registry.register(
            "smtp_failures",
            "Messages the SMTP server did not take, by class",
            m.smtp_failures.clone(),
        );
        registry.register(
            "partner_call_failures",
            "Partner calls that failed, by app and class",
            m.partner_failures.clone(),
        );
        registry.register(
            "imports",
            "Imports by status (read at scrape)",
            m.imports.clone(),
        );
        registry.register(
            "import_rows",
            "Rows of the imports running now, by state (read at scrape)",
            m.import_rows.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by outcome (disabled: the attempt that disabled its endpoint)",
            m.webhook_deliveries.clone(),
        );
        registry.register(
            "webhook_endpoints",
            "Webhook endpoints by state: enabled, failing, disabled (read at scrape)",
            m.webhook_endpoints.clone(),
        );
        Metrics { registry, ..m }
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// This process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

pub fn quota_waited(provider: &str, seconds: f64) {
    let p = Provider {
        provider: provider.to_string(),
    };
    get().quota_waits.get_or_create(&p).inc();
    get().quota_wait_seconds.get_or_create(&p).inc_by(seconds);
}

pub fn registry_error(provider: &str, class: &str) {
    get()
        .registry_errors
        .get_or_create(&ProviderClass {
            provider: provider.to_string(),
            class: class.to_string(),
        })
        .inc();
}

pub fn smtp_sent(seconds: f64) {
    get().smtp_send_seconds.observe(seconds);
}

pub fn smtp_failed(class: &str) {
    get()
        .smtp_failures
        .get_or_create(&Class {
            class: class.to_string(),
        })
        .inc();
}

pub fn partner_failed(app: &str, class: &str) {
    get()
        .partner_failures
        .get_or_create(&AppClass {
            app: app.to_string(),
            class: class.to_string(),
        })
        .inc();
}

pub fn webhook_delivery(outcome: &str) {
    get()
        .webhook_deliveries
        .get_or_create(&Outcome {
            outcome: outcome.to_string(),
        })
        .inc();
}

/// Reads the queue's and the imports' state into the gauges, then renders
/// everything in the Prometheus text format. A source that does not answer
/// leaves its gauges as last read; the render still succeeds.
pub async fn render(queue: &dyn QueueBackend, db: &Database) -> String {
    let m = get();
    match crate::queue::counts_and_pauses(queue).await {
        Ok(counts) => {
            m.queue_jobs.clear();
            m.oldest_pending_seconds.clear();
            m.dead_jobs.clear();
            m.paused.clear();
            for c in counts {
                for (status, n) in [
                    ("pending", c.pending),
                    ("scheduled", c.scheduled),
                    ("running", c.running),
                    ("retrying", c.retrying),
                    ("done", c.done),
                    ("dead", c.dead),
                ] {
                    m.queue_jobs
                        .get_or_create(&KindStatus {
                            kind: c.kind.clone(),
                            status: status.into(),
                        })
                        .set(n as i64);
                }
                let kind = Kind {
                    kind: c.kind.clone(),
                };
                m.dead_jobs.get_or_create(&kind).set(c.dead as i64);
                m.paused
                    .get_or_create(&kind)
                    .set(i64::from(c.paused.is_some()));
                m.oldest_pending_seconds
                    .get_or_create(&kind)
                    .set(c.oldest_pending_age_ms.unwrap_or(0) as f64 / 1000.0);
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: queue counts unavailable"),
    }
    type Row = (String, i64, i64, i64, i64, i64, i64);
    let rows: Result<Vec<Row>, sqlx::Error> = on_pool!(db, pool => sqlx::query_as(
        "SELECT status, COUNT(*),
                CAST(COALESCE(SUM(rows_total), 0) AS BIGINT), CAST(COALESCE(SUM(rows_validated), 0) AS BIGINT),
                CAST(COALESCE(SUM(rows_created), 0) AS BIGINT), CAST(COALESCE(SUM(rows_skipped), 0) AS BIGINT),
                CAST(COALESCE(SUM(rows_refused), 0) AS BIGINT)
         FROM imports GROUP BY status",
    )
    .fetch_all(pool)
    .await);
    match rows {
        Ok(rows) => {
            m.imports.clear();
            m.import_rows.clear();
            for (status, n, total, validated, created, skipped, refused) in rows {
                m.imports
                    .get_or_create(&Status {
                        status: status.clone(),
                    })
                    .set(n);
                if status == "running" {
                    for (state, v) in [
                        ("total", total),
                        ("validated", validated),
                        ("created", created),
                        ("skipped", skipped),
                        ("refused", refused),
                    ] {
                        m.import_rows
                            .get_or_create(&RowState {
                                state: state.into(),
                            })
                            .set(v);
                    }
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: imports unavailable"),
    }
    let endpoints: Result<Vec<(String, i64)>, sqlx::Error> = on_pool!(db, pool => sqlx::query_as(
        "SELECT CASE WHEN disabled_at IS NOT NULL THEN 'disabled'
                     WHEN failing_since IS NOT NULL THEN 'failing' ELSE 'enabled' END AS state,
                COUNT(*)
         FROM webhook_endpoints GROUP BY 1",
    )
    .fetch_all(pool)
    .await);
    match endpoints {
        Ok(rows) => {
            m.webhook_endpoints.clear();
            for state in ["enabled", "failing", "disabled"] {
                let n = rows.iter().find(|(s, _)| s == state).map_or(0, |r| r.1);
                m.webhook_endpoints
                    .get_or_create(&State {
                        state: state.into(),
                    })
                    .set(n);
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: webhook endpoints unavailable"),
    }
    encode()
}

/// Everything in the text format, as it stands.
pub fn encode() -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &get().registry) {
        tracing::warn!(error = %e, "metrics: encoding failed");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_smtp_and_partners_are_counted_with_small_labels() {
        quota_waited("recherche-entreprises", 0.25);
        registry_error("insee", "rate_limited");
        smtp_sent(0.04);
        smtp_failed("transient");
        partner_failed("banque_en_ligne", "permanent");
        let text = encode();
        for line in [
            "dossier_registry_quota_waits_total{provider=\"recherche-entreprises\"} 1",
            "dossier_registry_quota_wait_seconds_total{provider=\"recherche-entreprises\"} 0.25",
            "dossier_registry_errors_total{provider=\"insee\",class=\"rate_limited\"} 1",
            "dossier_smtp_send_seconds_count 1",
            "dossier_smtp_failures_total{class=\"transient\"} 1",
            "dossier_partner_call_failures_total{app=\"banque_en_ligne\",class=\"permanent\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }
}
