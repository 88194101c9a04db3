//! A real HTTP server standing in for an upstream application's webhook
//! receiver: records every delivery (headers and raw body), answers from a
//! script then 200, and can go down (its port closed, its connections
//! ended) and come back on the same port.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio_util::sync::CancellationToken;

pub use crate::registry_stub::Scripted;

/// One delivery as the receiver got it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub at: Instant,
    pub path: String,
    /// What the receiver answered.
    pub answered: u16,
    pub timestamp: Option<i64>,
    pub signature: Option<String>,
    pub idempotency_key: Option<String>,
    pub event_type: Option<String>,
    pub body: Vec<u8>,
}

impl Delivery {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    /// Checks the signature as docs/webhooks.md tells receivers to.
    pub fn verifies(&self, secret: &str) -> bool {
        match (self.timestamp, &self.signature) {
            (Some(ts), Some(sig)) => {
                dossier_core::apps::signature::verify(secret.as_bytes(), ts, &self.body, sig)
            }
            _ => false,
        }
    }
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Scripted>,
    got: Vec<Delivery>,
}

/// The running server: what stops it, and its task.
type Serving = (CancellationToken, tokio::task::JoinHandle<()>);

#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Mutex<Inner>>,
    addr: Arc<Mutex<Option<SocketAddr>>>,
    stop: Arc<Mutex<Option<Serving>>>,
}

impl Receiver {
    /// Starts on a free loopback port.
    pub async fn start() -> Receiver {
        let r = Receiver {
            inner: Arc::default(),
            addr: Arc::default(),
            stop: Arc::default(),
        };
        r.up("127.0.0.1:0".parse().expect("addr")).await;
        r
    }

    async fn up(&self, at: SocketAddr) {
        let listener = tokio::net::TcpListener::bind(at).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        *self.addr.lock().expect("lock") = Some(addr);
        let app = Router::new()
            .route("/hook", post(handle))
            .route("/other", post(handle))
            .with_state(self.inner.clone());
        let token = CancellationToken::new();
        let stopping = token.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stopping.cancelled_owned())
                .await;
        });
        *self.stop.lock().expect("lock") = Some((token, task));
    }

    /// The endpoint URL.
    pub fn url(&self) -> String {
        format!(
            "http://{}/hook",
            self.addr.lock().expect("lock").expect("started")
        )
    }

    /// Another path on the same server (a redirect's target).
    pub fn other_url(&self) -> String {
        format!(
            "http://{}/other",
            self.addr.lock().expect("lock").expect("started")
        )
    }

    /// Closes the port and every connection: deliveries are refused.
    pub async fn down(&self) {
        let running = self.stop.lock().expect("lock").take();
        if let Some((token, task)) = running {
            token.cancel();
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    pub async fn back(&self) {
        let at = self.addr.lock().expect("lock").expect("started");
        self.up(at).await;
    }

    /// Answers to give, in order, before answering 200.
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.inner.lock().expect("lock").script.extend(answers);
    }

    /// Answers 200 from now on.
    pub fn clear_script(&self) {
        self.inner.lock().expect("lock").script.clear();
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.inner.lock().expect("lock").got.clone()
    }

    /// The deliveries answered 200, one per event id (the first), in the
    /// order they came: what a receiver deduplicating by id keeps.
    pub fn accepted_once(&self) -> Vec<Delivery> {
        let inner = self.inner.lock().expect("lock");
        let mut seen = std::collections::HashSet::new();
        inner
            .got
            .iter()
            .filter(|d| d.answered / 100 == 2)
            .filter(|d| {
                d.idempotency_key
                    .as_ref()
                    .is_some_and(|k| seen.insert(k.clone()))
            })
            .cloned()
            .collect()
    }
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
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
    let next = {
        let mut inner = inner.lock().expect("lock");
        let next = inner.script.pop_front();
        {
            inner.got.push(Delivery {
                at: Instant::now(),
                path: uri.path().to_string(),
                answered: next.as_ref().map_or(200, |s| s.status),
                timestamp: header("X-Dossier-Timestamp").and_then(|t| t.parse().ok()),
                signature: header("X-Dossier-Signature"),
                idempotency_key: header("Idempotency-Key"),
                event_type: header("X-Dossier-Event"),
                body: body.to_vec(),
            });
        }
        next
    };
    match next {
        Some(s) => {
            if s.delay > std::time::Duration::ZERO {
                tokio::time::sleep(s.delay).await;
            }
            let status = StatusCode::from_u16(s.status).unwrap_or(StatusCode::OK);
            let mut r = (status, s.body).into_response();
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
        None => (StatusCode::OK, "ok").into_response(),
    }
}
