//! Calls to partners' provisioning endpoints: signed (see `signature`),
//! with a stable `Idempotency-Key`, and their outcomes classified for the
//! retry policy. Request bodies hold secrets: nothing here logs them.

use std::time::Duration;

use serde::Deserialize;

use super::signature::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartnerError {
    /// 5xx, 429, timeouts, refused connections, malformed answers.
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// 4xx: the partner refused the request as it is.
    #[error("{0}")]
    Permanent(String),
}

/// The most of a partner's answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What a partner answers a provisioning call with.
#[derive(Debug, Clone, Deserialize)]
pub struct Provisioned {
    pub external_id: String,
    #[serde(default)]
    pub status: Option<String>,
}

/// The partner's own words, from a JSON error body or its text.
fn partner_message(body: &str) -> String {
    let from_json = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            ["message", "error", "detail"]
                .iter()
                .find_map(|k| v.get(k).and_then(|m| m.as_str()).map(str::to_string))
        });
    let text = from_json.unwrap_or_else(|| body.trim().to_string());
    text.chars().take(300).collect()
}

/// The partner's words made safe to store and log: a partner that echoes
/// what it was sent ("invalid api_key sk-…") would otherwise put an opened
/// secret into the job's errors, the logs and `GET /v1/clients/{id}`.
/// Every secret of the call becomes `***`, every email address
/// `<address>`, control characters are escaped.
fn scrubbed(message: &str, secrets: &[String]) -> String {
    let mut text = message.to_string();
    // Longest first, so that a secret containing another is removed whole.
    let mut secrets: Vec<&String> = secrets.iter().filter(|s| s.len() >= 4).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in secrets {
        text = text.replace(s.as_str(), "***");
    }
    crate::text::printable(&crate::mail::redact_addresses(&text)).into_owned()
}

/// POSTs a signed JSON body; returns the 2xx answer's body. `secrets` are
/// the opened secrets the body carries: scrubbed from any error message.
pub async fn post(
    http: &crate::outbound::Outbound,
    url: &str,
    key: &[u8],
    idempotency_key: &str,
    body: &serde_json::Value,
    secrets: &[String],
) -> Result<String, PartnerError> {
    let bytes = serde_json::to_vec(body).map_err(|e| PartnerError::Permanent(e.to_string()))?;
    let timestamp = chrono::Utc::now().timestamp();
    let response = http
        .request(reqwest::Method::POST, url)
        .map_err(|why| PartnerError::Permanent(format!("partner call refused: {why}")))?
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(SIGNATURE_HEADER, sign(key, timestamp, &bytes))
        .header("Idempotency-Key", idempotency_key)
        .body(bytes)
        .send()
        .await
        .map_err(|e| match crate::outbound::refusal(&e) {
            Some(why) => PartnerError::Permanent(format!("partner call refused: {why}")),
            None => PartnerError::Transient {
                message: format!(
                    "partner at {} unreachable: {}",
                    crate::config::redact_url(url),
                    if e.is_timeout() {
                        "timed out".to_string()
                    } else {
                        e.without_url().to_string()
                    }
                ),
                retry_after: None,
            },
        })?;
    let status = response.status();
    if let Some(why) = crate::outbound::redirect_refusal(status, response.headers()) {
        return Err(PartnerError::Permanent(format!("partner {why}")));
    }
    let retry_after = crate::outbound::retry_after(response.headers());
    // Enough for any provisioning answer; a partner cannot make a worker
    // buffer more, and only an excerpt of an error is kept.
    let text = match crate::outbound::body_up_to(response, MAX_ANSWER_BYTES).await {
        Ok((body, _)) => String::from_utf8_lossy(&body).into_owned(),
        Err(e) => {
            return Err(PartnerError::Transient {
                message: format!(
                    "partner answered {status} but its answer could not be read: {}",
                    if e.is_timeout() {
                        "timed out".to_string()
                    } else {
                        e.without_url().to_string()
                    }
                ),
                retry_after,
            });
        }
    };
    if status.is_success() {
        Ok(text)
    } else if status.as_u16() == 429 || status.is_server_error() {
        Err(PartnerError::Transient {
            message: format!(
                "partner answered {status}: {}",
                scrubbed(&partner_message(&text), secrets)
            ),
            retry_after,
        })
    } else {
        Err(PartnerError::Permanent(format!(
            "partner refused ({status}): {}",
            scrubbed(&partner_message(&text), secrets)
        )))
    }
}

/// A provisioning answer, or why it is malformed (transient: the partner
/// may answer properly next time, and the call is idempotent).
pub fn provisioned(body: &str) -> Result<Provisioned, PartnerError> {
    serde_json::from_str::<Provisioned>(body)
        .ok()
        .filter(|p| !p.external_id.trim().is_empty())
        .ok_or_else(|| PartnerError::Transient {
            message: "partner answered 2xx without a JSON {\"external_id\": …}".into(),
            retry_after: None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_secrets_and_addresses_are_scrubbed() {
        let secrets = vec!["sk-live-1234567890".to_string(), "abc".to_string()];
        let m = scrubbed(
            "invalid api_key sk-live-1234567890\nfor marie@dupont.fr abc",
            &secrets,
        );
        assert_eq!(m, "invalid api_key ***\\u{a}for <address> abc");
    }
}
