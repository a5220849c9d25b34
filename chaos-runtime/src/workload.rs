//! The steady-state workload: orders (or reads) through nginx, every request recorded.
use crate::clock::mono_ns;
use crate::http;
use crate::timeline::Sample;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which requests the workload sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadKind {
    /// `POST /orders`; every 201 goes into the ledger.
    Orders,
    /// `GET /orders/{id}` over orders created at start (and 1 write in 10, ledgered).
    Reads,
}

impl WorkloadKind {
    /// From the macro's `workload` option.
    pub fn parse(s: &str) -> Self {
        match s {
            "reads" => Self::Reads,
            _ => Self::Orders,
        }
    }
}

/// Tuning of the workload.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Concurrent closed-loop clients.
    pub workers: usize,
    /// Pause between two requests of one client.
    pub pace: Duration,
    /// Client-side timeout of one request (longer than the service's own timeouts).
    pub request_timeout: Duration,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            workers: 4,
            pace: Duration::from_millis(20),
            request_timeout: Duration::from_secs(2),
        }
    }
}

/// A running workload.
pub struct Workload {
    samples: Arc<Mutex<Vec<Sample>>>,
    acked: Arc<Mutex<Vec<i64>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The config used.
    pub config: WorkloadConfig,
}

static SEQ: AtomicU64 = AtomicU64::new(1);

fn order_body() -> Bytes {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let side = if n.is_multiple_of(2) { "buy" } else { "sell" };
    Bytes::from(format!(
        r#"{{"symbol":"ACME","side":"{side}","qty":{},"price_cents":{}}}"#,
        1 + n % 100,
        10_000 + n % 5_000
    ))
}

fn parse_id(body: &[u8]) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("id")?.as_i64()
}

impl Workload {
    /// Starts the clients against `front` (e.g. `http://127.0.0.1:PORT`); times relative to `t0_ns`.
    pub async fn start(
        kind: WorkloadKind,
        front: String,
        t0_ns: u64,
        config: WorkloadConfig,
    ) -> Workload {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let client = http::client();
        let mut read_ids = Vec::new();
        if kind == WorkloadKind::Reads {
            for _ in 0..20 {
                if let Ok((201, body)) = http::request(
                    &client,
                    hyper::Method::POST,
                    &format!("{front}/orders"),
                    Some(order_body()),
                    config.request_timeout,
                )
                .await
                    && let Some(id) = parse_id(&body)
                {
                    read_ids.push(id);
                    acked.lock().unwrap().push(id);
                }
            }
        }
        let read_ids = Arc::new(read_ids);
        let mut tasks = Vec::new();
        for w in 0..config.workers {
            let (samples, acked, stop, client, front, cfg, ids) = (
                samples.clone(),
                acked.clone(),
                stop.clone(),
                client.clone(),
                front.clone(),
                config.clone(),
                read_ids.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    i += cfg.workers;
                    let write =
                        kind == WorkloadKind::Orders || ids.is_empty() || i.is_multiple_of(10);
                    let start = mono_ns();
                    let res = if write {
                        http::request(
                            &client,
                            hyper::Method::POST,
                            &format!("{front}/orders"),
                            Some(order_body()),
                            cfg.request_timeout,
                        )
                        .await
                        .map(|(code, body)| (code, body, None))
                    } else {
                        let id = ids[i % ids.len()];
                        http::request_with_header(
                            &client,
                            hyper::Method::GET,
                            &format!("{front}/orders/{id}"),
                            None,
                            cfg.request_timeout,
                            Some("x-cache"),
                        )
                        .await
                    };
                    let end = mono_ns();
                    let (ok, status, error) = match &res {
                        Ok((code, body, _)) if (200..300).contains(code) => {
                            if write && let Some(id) = parse_id(body) {
                                acked.lock().unwrap().push(id);
                            }
                            (true, *code, None)
                        }
                        Ok((code, body, _)) => {
                            let text = String::from_utf8_lossy(body);
                            (
                                false,
                                *code,
                                Some(format!(
                                    "HTTP {code}: {}",
                                    text.chars().take(120).collect::<String>()
                                )),
                            )
                        }
                        Err(e) => (false, 0, Some(e.clone())),
                    };
                    samples.lock().unwrap().push(Sample {
                        t_ms: (start.saturating_sub(t0_ns)) as f64 / 1e6,
                        latency_ms: (end - start) as f64 / 1e6,
                        ok,
                        status,
                        error,
                        cache: res.ok().and_then(|(_, _, cache)| cache),
                    });
                    tokio::time::sleep(cfg.pace).await;
                }
            }));
        }
        Workload {
            samples,
            acked,
            stop,
            tasks,
            config,
        }
    }

    /// A copy of the samples so far (completed requests only).
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    /// Stops the clients (waits for in-flight requests, bounded by their timeout).
    pub async fn stop(self) -> (Vec<Sample>, Vec<i64>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ =
                tokio::time::timeout(self.config.request_timeout + Duration::from_secs(1), t).await;
        }
        let mut samples = std::mem::take(&mut *self.samples.lock().unwrap());
        samples.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
        let acked = std::mem::take(&mut *self.acked.lock().unwrap());
        (samples, acked)
    }
}
