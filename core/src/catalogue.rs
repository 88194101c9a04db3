//! What `dossier enqueue` accepts: each product job kind with its payload
//! check and the payload fields that must never be shown.

use serde::de::DeserializeOwned;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogueError {
    #[error("unknown job kind `{kind}`; known kinds: {known}")]
    UnknownKind { kind: String, known: String },
    #[error("invalid payload for `{kind}`: {message}")]
    BadPayload { kind: String, message: String },
}

/// What a job of a kind acts on: how a firm's token is confined to its own
/// firm when it enqueues one (`POST /v1/jobs/{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// Nothing stored: a computation on the payload alone.
    Nothing,
    /// The client named by the payload's `client_id`.
    Client,
    /// The invitation named by the payload's `invitation_id`.
    Invitation,
    /// Every firm (rollover, housekeeping, scans, imports): admin only.
    /// What a kind is unless it says otherwise.
    Platform,
}

/// One job kind as the catalogue describes it.
#[derive(Clone)]
pub struct KindSpec {
    pub kind: &'static str,
    pub description: &'static str,
    /// Payload fields (top level) that hold secrets: shown as `***`.
    pub secret_fields: &'static [&'static str],
    pub subject: Subject,
    check: fn(&serde_json::Value) -> Result<(), String>,
}

impl std::fmt::Debug for KindSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KindSpec")
            .field("kind", &self.kind)
            .finish()
    }
}

fn decodes_as<P: DeserializeOwned>(v: &serde_json::Value) -> Result<(), String> {
    P::deserialize(v).map(|_| ()).map_err(|e| e.to_string())
}

impl KindSpec {
    /// A kind whose payload must decode as `P`.
    pub fn of<P: DeserializeOwned>(
        kind: &'static str,
        description: &'static str,
        secret_fields: &'static [&'static str],
    ) -> KindSpec {
        KindSpec {
            kind,
            description,
            secret_fields,
            subject: Subject::Platform,
            check: decodes_as::<P>,
        }
    }

    /// This kind acts on `subject` (a firm's token may enqueue it for its
    /// own clients) rather than on the whole platform.
    pub fn acting_on(mut self, subject: Subject) -> KindSpec {
        self.subject = subject;
        self
    }

    pub fn check(&self, payload: &serde_json::Value) -> Result<(), CatalogueError> {
        (self.check)(payload).map_err(|message| CatalogueError::BadPayload {
            kind: self.kind.to_string(),
            message,
        })
    }
}

/// A set of kinds: the product's, plus any a test or an embedding adds.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    kinds: Vec<KindSpec>,
}

impl Catalogue {
    /// The product's kinds.
    pub fn product() -> Catalogue {
        Catalogue {
            kinds: crate::jobs::catalogue(),
        }
    }

    pub fn with(mut self, spec: KindSpec) -> Catalogue {
        self.kinds.push(spec);
        self
    }

    pub fn get(&self, kind: &str) -> Option<&KindSpec> {
        self.kinds.iter().find(|k| k.kind == kind)
    }

    pub fn kinds(&self) -> &[KindSpec] {
        &self.kinds
    }

    /// The kind, or an error listing the known ones (at most 80
    /// characters of `kind` quoted, escaped).
    pub fn spec(&self, kind: &str) -> Result<&KindSpec, CatalogueError> {
        self.get(kind).ok_or_else(|| CatalogueError::UnknownKind {
            kind: crate::text::for_terminal(&kind.chars().take(80).collect::<String>())
                .into_owned(),
            known: self
                .kinds
                .iter()
                .map(|k| k.kind)
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// Checks a payload before anything is enqueued.
    pub fn validate(&self, kind: &str, payload: &serde_json::Value) -> Result<(), CatalogueError> {
        self.spec(kind)?.check(payload)
    }

    /// Replaces secret values by `***` for display.
    pub fn redact(&self, kind: &str, payload: &mut serde_json::Value) {
        let Some(spec) = self.get(kind) else { return };
        if let Some(obj) = payload.as_object_mut() {
            for field in spec.secret_fields {
                if let Some(v) = obj.get_mut(*field) {
                    *v = serde_json::Value::String("***".into());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Secretive {
        name: String,
        api_key: String,
    }

    fn catalogue() -> Catalogue {
        Catalogue::default().with(KindSpec::of::<Secretive>("secretive", "test", &["api_key"]))
    }

    #[test]
    fn unknown_kind_lists_known_ones() {
        let err = catalogue()
            .validate("nope", &serde_json::json!({}))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown job kind `nope`; known kinds: secretive"
        );
    }

    #[test]
    fn bad_payload_says_why() {
        let err = catalogue()
            .validate(
                "secretive",
                &serde_json::json!({"name": "x", "api_key": "k", "extra": 1}),
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `extra`"), "{err}");
        let err = catalogue()
            .validate("secretive", &serde_json::json!({"name": 3}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid type"), "{err}");
    }

    #[test]
    fn redacts_secret_fields() {
        let mut p = serde_json::json!({"name": "x", "api_key": "k"});
        catalogue().redact("secretive", &mut p);
        assert_eq!(p, serde_json::json!({"name": "x", "api_key": "***"}));
    }
}
