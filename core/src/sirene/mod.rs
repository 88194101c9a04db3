//! Company facts from the public registries (the SIRENE base): the mapped
//! record, the providers, their error classes and the fallback between them.
//!
//! Providers are tried in configured order. A provider that is down, over
//! quota or does not know the number hands over to the next; the answer is
//! "not found" only when every provider says so.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::siret::Siret;

pub mod facts;
pub mod file;
pub mod insee;
pub mod legal_forms;
pub mod quota;
pub mod recherche;

pub use facts::{Address, CompanyFacts, Director, State};
pub use quota::{Priority, Quota, QuotaStore};

/// Why a provider gave no facts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("SIRET {siret} not found by {provider}")]
    NotFound { provider: String, siret: String },
    #[error("{provider} refused the request ({status}): {hint}")]
    Refused {
        provider: String,
        status: u16,
        hint: String,
    },
    #[error("{provider} is over quota; retry in {retry_after:?}")]
    RateLimited {
        provider: String,
        retry_after: Duration,
    },
    /// Our own shared quota has no slot for a while: nothing was sent.
    #[error("{provider}'s shared quota is used up for the next {wait:?}")]
    QuotaExhausted { provider: String, wait: Duration },
    #[error("{provider} failed: {message}")]
    Transient { provider: String, message: String },
}

impl LookupError {
    /// A short name of the failure, for metrics.
    pub fn class(&self) -> &'static str {
        match self {
            LookupError::NotFound { .. } => "not_found",
            LookupError::Refused { .. } => "refused",
            LookupError::RateLimited { .. } => "rate_limited",
            LookupError::QuotaExhausted { .. } => "quota_exhausted",
            LookupError::Transient { .. } => "transient",
        }
    }

    /// True when trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LookupError::RateLimited { .. }
                | LookupError::Transient { .. }
                | LookupError::QuotaExhausted { .. }
        )
    }
}

/// One registry.
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// The name used in config, quotas and messages.
    fn name(&self) -> &str;
    /// Quota: at most `requests` per `window`; `None` for a local source.
    fn quota(&self) -> Option<(u32, Duration)>;
    async fn lookup(&self, siret: &Siret) -> Result<CompanyFacts, LookupError>;
}

/// Settings of one HTTP provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    pub base_url: String,
    pub timeout_ms: u64,
    /// At most `quota_requests` every `quota_window_ms`, shared by every worker process.
    pub quota_requests: u32,
    pub quota_window_ms: u64,
}

/// The outcome of a lookup across providers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SireneError {
    /// Every provider said the number is unknown.
    #[error("{0}")]
    NotFound(String),
    /// A provider refused us for good (bad key, missing rights) and none answered.
    #[error("{0}")]
    Permanent(String),
    /// Nothing was asked: every provider that might know is out of shared
    /// quota for `wait`. Not a failed attempt.
    #[error("{message}")]
    Busy { message: String, wait: Duration },
    /// At least one provider failed in a way that may pass; retry later.
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
}

/// The providers in order, and the quota they share with other processes.
pub struct Sirene {
    providers: Vec<Arc<dyn Provider>>,
    quota: Quota,
    /// A quota wait longer than this hands over to the next provider.
    max_quota_wait: Duration,
}

impl Sirene {
    pub fn new(
        providers: Vec<Arc<dyn Provider>>,
        quota: Quota,
        max_quota_wait: Duration,
    ) -> Sirene {
        Sirene {
            providers,
            quota,
            max_quota_wait,
        }
    }

    pub fn provider_names(&self) -> Vec<String> {
        self.providers
            .iter()
            .map(|p| p.name().to_string())
            .collect()
    }

    /// Asks each provider in turn until one knows the number.
    pub async fn lookup(&self, siret: &Siret) -> Result<CompanyFacts, SireneError> {
        self.lookup_with(siret, None, Priority::Interactive).await
    }

    /// [`Sirene::lookup`], asking only the providers named in `only` (an
    /// import that chose `sirene-file` to stay clear of the shared quota).
    /// `priority` is whose lookup it is for the shared quota: a client
    /// created by hand gets the next free slot before an import's.
    pub async fn lookup_with(
        &self,
        siret: &Siret,
        only: Option<&[String]>,
        priority: Priority,
    ) -> Result<CompanyFacts, SireneError> {
        let chosen: Vec<&Arc<dyn Provider>> = self
            .providers
            .iter()
            .filter(|p| only.is_none_or(|o| o.iter().any(|n| n == p.name())))
            .collect();
        if let (Some(only), true) = (only, chosen.is_empty()) {
            return Err(SireneError::Permanent(format!(
                "the job asks for provider(s) {} but this worker has only {}: add them to sirene.providers",
                only.join(", "),
                self.provider_names().join(", ")
            )));
        }
        let mut errors: Vec<LookupError> = Vec::new();
        for provider in chosen {
            let mut slot = None;
            if let Some((requests, window)) = provider.quota() {
                match self
                    .quota
                    .acquire(
                        provider.name(),
                        requests,
                        window,
                        self.max_quota_wait,
                        priority,
                    )
                    .await
                {
                    Ok(taken) => slot = Some(taken),
                    Err(quota::QuotaError::WaitTooLong(wait)) => {
                        errors.push(LookupError::QuotaExhausted {
                            provider: provider.name().to_string(),
                            wait,
                        });
                        continue;
                    }
                    Err(e) => {
                        errors.push(LookupError::Transient {
                            provider: provider.name().to_string(),
                            message: format!("quota store unavailable: {e}"),
                        });
                        continue;
                    }
                }
            }
            let answer = provider.lookup(siret).await;
            if let Some(slot) = slot {
                slot.answered().await;
            }
            match answer {
                Ok(facts) => return Ok(facts),
                Err(e) => {
                    tracing::info!(provider = provider.name(), error = %e, "provider gave no facts; trying the next");
                    crate::metrics::registry_error(provider.name(), e.class());
                    errors.push(e);
                }
            }
        }
        Err(classify(siret, errors))
    }
}

/// All not-found → permanent; any transient → transient (retry at the
/// earliest Retry-After when every failure was a quota); else permanent.
fn classify(siret: &Siret, errors: Vec<LookupError>) -> SireneError {
    let summary = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if errors.is_empty() {
        return SireneError::Permanent("no registry provider is configured".into());
    }
    let waits: Vec<Duration> = errors
        .iter()
        .filter_map(|e| match e {
            LookupError::QuotaExhausted { wait, .. } => Some(*wait),
            _ => None,
        })
        .collect();
    if !waits.is_empty()
        && errors.iter().all(|e| {
            matches!(
                e,
                LookupError::QuotaExhausted { .. } | LookupError::NotFound { .. }
            )
        })
    {
        return SireneError::Busy {
            message: summary,
            wait: waits.into_iter().min().unwrap_or_default(),
        };
    }
    if errors.iter().any(LookupError::is_transient) {
        let retry_after = if errors.iter().all(|e| {
            matches!(
                e,
                LookupError::RateLimited { .. } | LookupError::NotFound { .. }
            )
        }) {
            errors
                .iter()
                .filter_map(|e| match e {
                    LookupError::RateLimited { retry_after, .. } => Some(*retry_after),
                    _ => None,
                })
                .min()
        } else {
            None
        };
        return SireneError::Transient {
            message: summary,
            retry_after,
        };
    }
    if errors
        .iter()
        .all(|e| matches!(e, LookupError::NotFound { .. }))
    {
        return SireneError::NotFound(format!(
            "SIRET {siret} is not in the registries ({}): check the number, or enter the company by hand",
            errors
                .iter()
                .filter_map(|e| match e {
                    LookupError::NotFound { provider, .. } => Some(provider.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    SireneError::Permanent(summary)
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("cannot reach the quota store: {0}")]
    Quota(#[from] quota::QuotaError),
    #[error("{0}")]
    Config(String),
}

/// The providers the settings name, in order, counting their quotas where
/// `sirene.quota_store` says: in `db` (the business database, migrated) or
/// on Redis.
pub async fn from_settings(
    settings: &crate::config::Settings,
    db: &crate::db::Database,
) -> Result<Sirene, SetupError> {
    let s = &settings.sirene;
    let outbound = |p: &ProviderSettings| {
        crate::outbound::Outbound::new(
            crate::outbound::Policy::from_settings(&settings.outbound),
            Duration::from_millis(p.timeout_ms),
            &s.user_agent,
        )
    };
    let mut providers: Vec<Arc<dyn Provider>> = Vec::new();
    for name in &s.providers {
        let provider: Arc<dyn Provider> = match name.as_str() {
            recherche::NAME => Arc::new(recherche::RechercheEntreprises::new(
                s.recherche_entreprises.clone(),
                outbound(&s.recherche_entreprises)?,
            )),
            insee::NAME => {
                let key = s
                    .insee_api_key
                    .as_ref()
                    .ok_or_else(|| SetupError::Config("sirene.insee_api_key is not set".into()))?;
                Arc::new(insee::Insee::new(
                    s.insee.clone(),
                    key.expose().to_string(),
                    outbound(&s.insee)?,
                ))
            }
            file::NAME => Arc::new(file::SireneFile::open(&s.file_index).await.map_err(|e| {
                SetupError::Config(format!(
                    "sirene-file: cannot open the index {} ({e}); build it with `dossier sirene index`",
                    s.file_index
                ))
            })?),
            other => return Err(SetupError::Config(format!("unknown provider `{other}`"))),
        };
        providers.push(provider);
    }
    let quota = match settings.sirene.quota_store {
        crate::config::QuotaStoreKind::Database => {
            Quota::new(Arc::new(quota::DatabaseQuota::new(db.clone())))
        }
        crate::config::QuotaStoreKind::Redis => {
            let url = settings.sirene_quota_redis_url().ok_or_else(|| {
                SetupError::Config(
                    "sirene.quota_store = \"redis\" needs sirene.quota_redis_url".into(),
                )
            })?;
            Quota::new(Arc::new(
                quota::RedisQuota::connect(url, &settings.queue.prefix).await?,
            ))
        }
    };
    Ok(Sirene::new(
        providers,
        quota,
        Duration::from_millis(s.max_quota_wait_ms),
    ))
}

/// Reads a `Retry-After` header (seconds; HTTP dates are rare on these APIs
/// and fall back to `default`).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap, default: Duration) -> Duration {
    crate::outbound::retry_after(headers).unwrap_or(default)
}

/// Classifies an HTTP failure the same way for every provider.
pub(crate) fn http_error(provider: &str, e: &reqwest::Error) -> LookupError {
    if let Some(why) = crate::outbound::refusal(e) {
        return refused(provider, why);
    }
    let message = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else if e.is_decode() {
        format!("malformed answer: {e}")
    } else {
        e.to_string()
    };
    LookupError::Transient {
        provider: provider.to_string(),
        message,
    }
}

/// The outbound policy refused the call: nothing was sent, and retrying
/// will not change that (the settings must).
pub(crate) fn refused(provider: &str, why: &crate::outbound::Refused) -> LookupError {
    LookupError::Refused {
        provider: provider.to_string(),
        status: 0,
        hint: why.0.clone(),
    }
}

/// A registry answers a few kilobytes; past this it is not a registry
/// answer, and reading on would only fill memory.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The answer's JSON, read up to [`MAX_ANSWER_BYTES`].
pub(crate) async fn json_answer(
    provider: &str,
    response: reqwest::Response,
) -> Result<serde_json::Value, LookupError> {
    let (body, cut) = crate::outbound::body_up_to(response, MAX_ANSWER_BYTES)
        .await
        .map_err(|e| http_error(provider, &e))?;
    if cut {
        return Err(LookupError::Transient {
            provider: provider.to_string(),
            message: format!("answer larger than {MAX_ANSWER_BYTES} bytes: not read"),
        });
    }
    serde_json::from_slice(&body).map_err(|e| LookupError::Transient {
        provider: provider.to_string(),
        message: format!("malformed answer: {e}"),
    })
}

/// Common handling of statuses that mean the same on every registry.
pub(crate) fn status_error(
    provider: &str,
    siret: &Siret,
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
) -> Option<LookupError> {
    let p = provider.to_string();
    if let Some(why) = crate::outbound::redirect_refusal(status, headers) {
        return Some(LookupError::Refused {
            provider: p,
            status: status.as_u16(),
            hint: why,
        });
    }
    match status.as_u16() {
        200..=299 => None,
        404 => Some(LookupError::NotFound {
            provider: p,
            siret: siret.to_string(),
        }),
        401 => Some(LookupError::Refused {
            provider: p,
            status: 401,
            hint: "the API key is wrong or missing: check the provider's key setting".into(),
        }),
        403 => Some(LookupError::Refused {
            provider: p,
            status: 403,
            hint: "the API key lacks the rights for this data: check the subscription".into(),
        }),
        429 => Some(LookupError::RateLimited {
            provider: p,
            retry_after: retry_after(headers, Duration::from_secs(1)),
        }),
        code => Some(LookupError::Transient {
            provider: p,
            message: format!("HTTP {code}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn siret() -> Siret {
        Siret::parse("88087814500015").expect("valid")
    }

    fn nf(p: &str) -> LookupError {
        LookupError::NotFound {
            provider: p.into(),
            siret: "88087814500015".into(),
        }
    }

    #[tokio::test]
    async fn a_job_may_only_ask_providers_the_worker_has() {
        let sirene = Sirene::new(vec![], Quota::local(), Duration::from_secs(1));
        let only = vec!["sirene-file".to_string()];
        match sirene
            .lookup_with(&siret(), Some(&only), Priority::Interactive)
            .await
        {
            Err(SireneError::Permanent(m)) => assert!(
                m.starts_with("the job asks for provider(s) sirene-file but this worker has only"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn all_not_found_is_permanent_and_names_providers() {
        let e = classify(&siret(), vec![nf("insee"), nf("recherche-entreprises")]);
        assert_eq!(
            e,
            SireneError::NotFound(
                "SIRET 88087814500015 is not in the registries (insee, recherche-entreprises): check the number, or enter the company by hand".into()
            )
        );
    }

    #[test]
    fn any_transient_failure_means_retry() {
        let rl = LookupError::RateLimited {
            provider: "insee".into(),
            retry_after: Duration::from_secs(3),
        };
        match classify(&siret(), vec![rl, nf("recherche-entreprises")]) {
            SireneError::Transient { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(3)))
            }
            other => panic!("{other:?}"),
        }
        let down = LookupError::Transient {
            provider: "insee".into(),
            message: "HTTP 503".into(),
        };
        assert!(matches!(
            classify(&siret(), vec![down]),
            SireneError::Transient {
                retry_after: None,
                ..
            }
        ));
    }

    #[test]
    fn an_exhausted_local_quota_is_busy_not_a_failure() {
        let q = |p: &str, s| LookupError::QuotaExhausted {
            provider: p.into(),
            wait: Duration::from_secs(s),
        };
        assert!(matches!(
            classify(&siret(), vec![q("insee", 40), q("recherche-entreprises", 8)]),
            SireneError::Busy { wait, .. } if wait == Duration::from_secs(8)
        ));
        // A provider actually failing makes it an attempt.
        let down = LookupError::Transient {
            provider: "insee".into(),
            message: "HTTP 503".into(),
        };
        assert!(matches!(
            classify(&siret(), vec![down, q("recherche-entreprises", 8)]),
            SireneError::Transient { .. }
        ));
    }

    #[test]
    fn refusals_without_transient_errors_are_permanent() {
        let refused = LookupError::Refused {
            provider: "insee".into(),
            status: 401,
            hint: "the API key is wrong".into(),
        };
        assert!(matches!(
            classify(&siret(), vec![refused, nf("recherche-entreprises")]),
            SireneError::Permanent(m) if m.contains("401")
        ));
    }
}
