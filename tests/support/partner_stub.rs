//! A real HTTP server standing in for a partner's provisioning API: it
//! records every request (headers and raw body) and answers from a script,
//! then with a provisioned client.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

pub use crate::registry_stub::Scripted;

/// One request as the partner received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub timestamp: Option<i64>,
    pub signature: Option<String>,
    pub idempotency_key: Option<String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

#[derive(Default, Clone)]
pub struct PartnerStub {
    script: Arc<Mutex<VecDeque<Scripted>>>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl PartnerStub {
    /// Answers to give, in order, before the normal answer.
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.script.lock().expect("lock").extend(answers);
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// Starts on a free loopback port; returns its base URL.
    pub async fn start(&self) -> String {
        let app = Router::new()
            .route("/provision", post(handle))
            .route("/deprovision", post(handle))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    }
}

async fn handle(
    State(stub): State<PartnerStub>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    stub.received.lock().expect("lock").push(Received {
        path: uri.path().to_string(),
        timestamp: header("X-Dossier-Timestamp").and_then(|t| t.parse().ok()),
        signature: header("X-Dossier-Signature"),
        idempotency_key: header("Idempotency-Key"),
        body: body.to_vec(),
    });
    let next = stub.script.lock().expect("lock").pop_front();
    match next {
        Some(s) => {
            if s.delay > Duration::ZERO {
                tokio::time::sleep(s.delay).await;
            }
            let status = StatusCode::from_u16(s.status).unwrap_or(StatusCode::OK);
            let mut r = if s.endless {
                let chunk = Bytes::from(s.body);
                let chunks = futures_util::stream::repeat_with(move || {
                    Ok::<_, std::convert::Infallible>(chunk.clone())
                });
                (status, axum::body::Body::from_stream(chunks)).into_response()
            } else {
                (status, s.body).into_response()
            };
            if let Some(to) = &s.location {
                r.headers_mut()
                    .insert("Location", to.parse().expect("header value"));
            }
            if let Some(after) = s.retry_after {
                r.headers_mut().insert(
                    "Retry-After",
                    after.to_string().parse().expect("header value"),
                );
            }
            r
        }
        None => axum::Json(serde_json::json!({ "external_id": "ext-42", "status": "provisioned" }))
            .into_response(),
    }
}
