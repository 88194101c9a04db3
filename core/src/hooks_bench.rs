//! The load generator behind `scripts/bench-hooks` (`dossier-worker
//! load`): a fixed number of connections sending `POST /v1/clients` (each
//! a new client, with its own `Idempotency-Key`) or `GET /v1/clients/{id}`
//! for a duration, every request waited for to the end — none is cut off
//! by the clock, so the 201 answers counted here are exactly the clients
//! the server must have. One JSON report: requests, requests/s, p50, p99,
//! max, answers by status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Post,
    Get,
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// `http://127.0.0.1:8080`.
    pub base: String,
    pub token: String,
    pub mode: Mode,
    pub connections: usize,
    pub duration: Duration,
    /// The firm of the clients POSTed.
    pub firm: String,
    /// Client ids for GET, taken in turn.
    pub ids: Vec<String>,
    /// Makes the POSTed clients and keys distinct between runs.
    pub run_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub mode: Mode,
    pub connections: usize,
    pub seconds: f64,
    pub requests: u64,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The slowest answer to a request sent in each second of the run: a
    /// stall shows as the seconds it spans.
    pub per_second_max_ms: Vec<f64>,
    /// Answers by HTTP status (`"transport"` for no answer at all).
    pub statuses: BTreeMap<String, u64>,
    pub non_2xx: u64,
    /// The ids of the clients created (POST).
    #[serde(skip)]
    pub created: Vec<String>,
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    /// (second of the run the request was sent in, latency in µs).
    sent_at: Vec<(usize, u64)>,
    statuses: BTreeMap<String, u64>,
    created: Vec<String>,
}

fn body(firm: &str, run: &str, n: u64) -> serde_json::Value {
    serde_json::json!({
        "firm_id": firm,
        "company": { "legal_name": format!("Charge {run} {n}") },
        "exercice": { "start": "2026-01-01" },
        "director": {
            "email": format!("dirigeant-{run}-{n}@bench.invalid"),
            "first_name": "Camille",
            "last_name": format!("Charge{n}"),
        },
    })
}

/// The value at quantile `q` of sorted `v`, in ms.
fn quantile_ms(v: &[u64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)] as f64 / 1000.0
}

/// Runs the load and reports.
pub async fn run(o: &LoadOptions) -> Result<LoadReport, String> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(o.connections)
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    if o.mode == Mode::Get && o.ids.is_empty() {
        return Err("GET needs client ids (--ids-file)".into());
    }
    let counter = Arc::new(AtomicU64::new(0));
    let o = Arc::new(o.clone());
    let started = Instant::now();
    let deadline = started + o.duration;
    let mut tasks = Vec::new();
    for _ in 0..o.connections.max(1) {
        let (http, o, counter) = (http.clone(), o.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::default();
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                let request = match o.mode {
                    Mode::Post => http
                        .post(format!("{}/v1/clients", o.base))
                        .header("Idempotency-Key", format!("bench-{}-{n}", o.run_id))
                        .json(&body(&o.firm, &o.run_id, n)),
                    Mode::Get => {
                        let id = &o.ids[(n as usize) % o.ids.len()];
                        http.get(format!("{}/v1/clients/{id}", o.base))
                    }
                };
                let answer = request.bearer_auth(&o.token).send().await;
                let key = match answer {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let text = r.text().await.unwrap_or_default();
                        if o.mode == Mode::Post
                            && status == 201
                            && let Some(id) = serde_json::from_str::<serde_json::Value>(&text)
                                .ok()
                                .and_then(|v| v["client_id"].as_str().map(str::to_string))
                        {
                            t.created.push(id);
                        }
                        status.to_string()
                    }
                    Err(_) => "transport".to_string(),
                };
                let took = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                t.latencies_us.push(took);
                t.sent_at.push((
                    usize::try_from(sent.duration_since(started).as_secs()).unwrap_or(0),
                    took,
                ));
                *t.statuses.entry(key).or_default() += 1;
            }
            t
        }));
    }
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await.map_err(|e| e.to_string())?;
        all.latencies_us.extend(t.latencies_us);
        all.sent_at.extend(t.sent_at);
        all.created.extend(t.created);
        for (k, v) in t.statuses {
            *all.statuses.entry(k).or_default() += v;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    all.latencies_us.sort_unstable();
    let mut per_second = vec![0u64; all.sent_at.iter().map(|s| s.0 + 1).max().unwrap_or(0)];
    for (second, took) in &all.sent_at {
        per_second[*second] = per_second[*second].max(*took);
    }
    let requests = all.latencies_us.len() as u64;
    let non_2xx = all
        .statuses
        .iter()
        .filter(|(k, _)| !k.starts_with('2'))
        .map(|(_, v)| v)
        .sum();
    Ok(LoadReport {
        mode: o.mode,
        connections: o.connections,
        seconds,
        requests,
        requests_per_s: requests as f64 / seconds.max(1e-9),
        p50_ms: quantile_ms(&all.latencies_us, 0.50),
        p99_ms: quantile_ms(&all.latencies_us, 0.99),
        max_ms: all.latencies_us.last().map_or(0.0, |m| *m as f64 / 1000.0),
        per_second_max_ms: per_second.iter().map(|us| *us as f64 / 1000.0).collect(),
        statuses: all.statuses,
        non_2xx,
        created: all.created,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(quantile_ms(&v, 0.5), 51.0);
        assert_eq!(quantile_ms(&v, 0.99), 99.0);
        assert_eq!(quantile_ms(&[], 0.99), 0.0);
    }
}
