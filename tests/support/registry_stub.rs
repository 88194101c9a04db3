//! A real HTTP server standing in for the company registries, serving the
//! recorded answers under `tests/fixtures/sirene` (shaped like
//! `../shared/fixtures/sirene`), with failures scripted per test.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The INSEE key the stub accepts.
pub const INSEE_KEY: &str = "test-insee-key";

/// A scripted answer, served instead of the fixture.
#[derive(Debug, Clone)]
pub struct Scripted {
    pub status: u16,
    pub retry_after: Option<u64>,
    /// A `Location` header (a redirect).
    pub location: Option<String>,
    pub body: String,
    /// The partner stub sends `body` again and again, never ending the
    /// answer (a hostile or broken partner).
    pub endless: bool,
    pub delay: Duration,
}

impl Scripted {
    pub fn status(status: u16) -> Scripted {
        Scripted {
            status,
            retry_after: None,
            location: None,
            body: "{}".into(),
            endless: false,
            delay: Duration::ZERO,
        }
    }

    pub fn too_many(retry_after_secs: u64) -> Scripted {
        Scripted {
            retry_after: Some(retry_after_secs),
            ..Scripted::status(429)
        }
    }

    /// `status` (301, 302, 307, 308…) pointing at `to`.
    pub fn redirect(status: u16, to: &str) -> Scripted {
        Scripted {
            location: Some(to.to_string()),
            ..Scripted::status(status)
        }
    }

    pub fn truncated() -> Scripted {
        Scripted {
            body: r#"{"results": [{"siren": "8808"#.into(),
            ..Scripted::status(200)
        }
    }

    pub fn slow(delay: Duration) -> Scripted {
        Scripted {
            delay,
            ..Scripted::status(200)
        }
    }
}

#[derive(Default)]
struct Inner {
    /// Per API (`search` or `insee`): answers to give before the fixtures.
    scripted: HashMap<&'static str, VecDeque<Scripted>>,
    /// INSEE bodies by SIRET, replacing the fixture.
    insee_bodies: HashMap<String, serde_json::Value>,
    /// (api, time) of every request.
    requests: Vec<(&'static str, Instant)>,
    /// Answer every search with GANYMEDE's record renumbered to the SIRET asked.
    echo_any: bool,
}

#[derive(Clone, Default)]
pub struct RegistryStub {
    inner: Arc<Mutex<Inner>>,
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/sirene")
}

impl RegistryStub {
    /// Serves on a free loopback port; returns the base URL.
    pub async fn start(&self) -> String {
        let app = Router::new()
            .route("/search", get(search))
            .route("/siret/{siret}", get(insee))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    }

    pub fn script(&self, api: &'static str, answer: Scripted) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.scripted.entry(api).or_default().push_back(answer);
    }

    /// Every SIRET asked exists (GANYMEDE's record, renumbered).
    pub fn answer_every_siret(&self) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .echo_any = true;
    }

    pub fn insee_body(&self, siret: &str, body: serde_json::Value) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.insee_bodies.insert(siret.to_string(), body);
    }

    pub fn requests(&self, api: &str) -> Vec<Instant> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .requests
            .iter()
            .filter(|(a, _)| *a == api)
            .map(|(_, t)| *t)
            .collect()
    }

    /// Records the request; returns the scripted answer to give, if any.
    fn next(&self, api: &'static str) -> Option<Scripted> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.requests.push((api, Instant::now()));
        inner.scripted.get_mut(api).and_then(VecDeque::pop_front)
    }
}

async fn scripted(answer: Scripted) -> Response {
    tokio::time::sleep(answer.delay).await;
    let mut headers = HeaderMap::new();
    headers.insert("content-type", "application/json".parse().expect("header"));
    if let Some(s) = answer.retry_after {
        headers.insert("retry-after", s.to_string().parse().expect("header"));
    }
    if let Some(to) = &answer.location {
        headers.insert("location", to.parse().expect("header"));
    }
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, headers, answer.body).into_response()
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [("content-type", "application/json")], body).into_response()
}

async fn search(
    State(stub): State<RegistryStub>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(answer) = stub.next("search") {
        if answer.status != 200 || answer.body != "{}" {
            return scripted(answer).await;
        }
        tokio::time::sleep(answer.delay).await;
    }
    let q = q.get("q").cloned().unwrap_or_default();
    let dir = fixtures().join("recherche-entreprises");
    let echo = stub
        .inner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .echo_any;
    if echo
        && q.len() == 14
        && let Ok(text) = std::fs::read_to_string(dir.join("search-q-88087814500015.json"))
    {
        let body = text
            .replace("88087814500015", &q)
            .replace("880878145", &q[..9]);
        return json(StatusCode::OK, body);
    }
    let body = std::fs::read_to_string(dir.join(format!("search-q-{q}.json")))
        .or_else(|_| std::fs::read_to_string(dir.join("search-q-12345678900003-empty.json")))
        .unwrap_or_else(|_| r#"{"results": []}"#.into());
    json(StatusCode::OK, body)
}

async fn insee(
    State(stub): State<RegistryStub>,
    Path(siret): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(answer) = stub.next("insee") {
        if answer.status != 200 || answer.body != "{}" {
            return scripted(answer).await;
        }
        tokio::time::sleep(answer.delay).await;
    }
    if headers
        .get("x-insee-api-key-integration")
        .and_then(|v| v.to_str().ok())
        != Some(INSEE_KEY)
    {
        return json(
            StatusCode::UNAUTHORIZED,
            r#"{"header":{"statut":401,"message":"Jeton invalide"}}"#.into(),
        );
    }
    let custom = {
        let inner = stub.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.insee_bodies.get(&siret).cloned()
    };
    if let Some(body) = custom {
        return json(StatusCode::OK, body.to_string());
    }
    let dir = fixtures().join("insee");
    match std::fs::read_to_string(dir.join(format!("siret-{siret}.json"))) {
        Ok(body) => json(StatusCode::OK, body),
        Err(_) => json(
            StatusCode::NOT_FOUND,
            format!(
                r#"{{"header":{{"statut":404,"message":"Aucun élément trouvé pour le siret {siret}"}}}}"#
            ),
        ),
    }
}

/// The INSEE fixture of GANYMEDE, to derive variants from.
pub fn insee_fixture() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("insee/siret-88087814500015.json"))
        .expect("fixture present");
    serde_json::from_str(&text).expect("fixture is JSON")
}
