//! The steady-state workload: your code (one request → an [`Outcome`]) or the built-in
//! [`HttpWorkload`], driven by closed-loop clients; every request is recorded as a
//! [`Sample`], every acknowledged write goes into the ledger ([`Ack`]).
//!
//! ```no_run
//! use chaos_runtime::workload::{Outcome, Workload, WorkloadCx};
//! use futures::future::BoxFuture;
//!
//! struct Ping;
//!
//! impl Workload for Ping {
//!     fn request<'a>(&'a self, cx: &'a WorkloadCx, _seq: u64) -> BoxFuture<'a, Outcome> {
//!         Box::pin(async move {
//!             match tokio::net::TcpStream::connect(cx.addr("cache", 6379)).await {
//!                 Ok(_) => Outcome::ok(),
//!                 Err(e) => Outcome::failed("connect", e.to_string()),
//!             }
//!         })
//!     }
//! }
//! ```
use crate::clock::mono_ns;
use crate::http::{self, HttpClient};
use crate::timeline::{Hypothesis, Sample};
use bytes::Bytes;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The steady-state workload of a system. One method is required; the rest have defaults.
pub trait Workload: Send + Sync + 'static {
    /// Runs once before the clients start (e.g. creates rows that reads use). A failure here
    /// fails the run before any fault, with this message.
    fn prepare<'a>(&'a self, cx: &'a WorkloadCx) -> BoxFuture<'a, Result<(), String>> {
        let _ = cx;
        Box::pin(async { Ok(()) })
    }

    /// One request. `seq` numbers requests across all clients, from 0. The runtime measures
    /// the latency and fails a request that takes longer than [`Workload::request_timeout`].
    fn request<'a>(&'a self, cx: &'a WorkloadCx, seq: u64) -> BoxFuture<'a, Outcome>;

    /// Concurrent closed-loop clients (default 4).
    fn clients(&self) -> usize {
        4
    }

    /// The pause of one client between two requests (default 20 ms).
    fn pace(&self) -> Duration {
        Duration::from_millis(20)
    }

    /// The longest a request may take before it counts as failed with class `timeout`
    /// (default 2 s; keep it above the service's own timeouts).
    fn request_timeout(&self) -> Duration {
        Duration::from_secs(2)
    }
}

/// What one request did.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// `None`: it met the steady-state contract. `Some`: why not.
    pub failure: Option<Failure>,
    /// A protocol status, if it has one (HTTP status; 0 for none).
    pub status: u16,
    /// Free-form tags kept with the sample (e.g. `cache = hit`).
    pub tags: BTreeMap<String, String>,
    /// A write the system acknowledged, for the invariants to check after recovery.
    pub ack: Option<Ack>,
}

/// Why a request failed: a stable class (`http_5xx`, `timeout`, `connection_refused`, ..) that
/// timelines and snapshots use, and the message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// A stable class, the same for the same kind of failure.
    pub class: String,
    /// What happened.
    pub message: String,
}

/// An acknowledged write: its key, and what was written (column → value as text).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The key the system answered with (e.g. the new row's id).
    pub key: String,
    /// What the client sent, as the store should hold it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub written: BTreeMap<String, String>,
}

impl Ack {
    /// An acknowledged key.
    pub fn new(key: impl ToString) -> Self {
        Ack {
            key: key.to_string(),
            written: BTreeMap::new(),
        }
    }

    /// A value the write carried (column name → value as the store prints it as text).
    pub fn with(mut self, column: impl Into<String>, value: impl ToString) -> Self {
        self.written.insert(column.into(), value.to_string());
        self
    }
}

impl Outcome {
    /// A request that met the contract.
    pub fn ok() -> Self {
        Outcome::default()
    }

    /// A failed request, with a stable class and a message.
    pub fn failed(class: impl Into<String>, message: impl Into<String>) -> Self {
        Outcome {
            failure: Some(Failure {
                class: class.into(),
                message: message.into(),
            }),
            ..Outcome::default()
        }
    }

    /// With a protocol status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// With a tag.
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// With an acknowledged write.
    pub fn with_ack(mut self, ack: Ack) -> Self {
        self.ack = Some(ack);
        self
    }

    /// The outcome of an HTTP exchange: 2xx is ok, any other status fails with class
    /// `http_5xx` / `http_other`, a transport error with its class (see [`http::classify`]).
    pub fn from_http(res: &Result<http::Response, String>) -> Self {
        match res {
            Ok(r) if (200..300).contains(&r.status) => Outcome::ok().with_status(r.status),
            Ok(r) => {
                let text = String::from_utf8_lossy(&r.body);
                let message = format!(
                    "HTTP {}: {}",
                    r.status,
                    text.chars().take(120).collect::<String>()
                );
                Outcome::failed(http::classify(&message), message).with_status(r.status)
            }
            Err(e) => Outcome::failed(http::classify(e), e.clone()),
        }
    }
}

/// What a workload's requests can reach.
pub struct WorkloadCx {
    pub(crate) addrs: BTreeMap<(String, u16), String>,
    pub(crate) http: HttpClient,
}

impl WorkloadCx {
    /// `host:port` at which the test process reaches `role`'s `port` (through the fault proxy
    /// when a fault puts it in front of `role`).
    pub fn addr(&self, role: &str, port: u16) -> String {
        self.addrs
            .get(&(role.to_string(), port))
            .cloned()
            .unwrap_or_else(|| {
                panic!("`{role}` has no published port {port}: declare it with `.port({port})`")
            })
    }

    /// `http://host:port` of `role`'s `port`.
    pub fn url(&self, role: &str, port: u16) -> String {
        format!("http://{}", self.addr(role, port))
    }

    /// A pooled HTTP/1.1 client (keep-alive, 1 s connect timeout, no Nagle).
    pub fn http(&self) -> &HttpClient {
        &self.http
    }
}

/// A workload made of a closure: `workload_fn(|cx, seq| async move { .. })`.
pub fn workload_fn<F>(f: F) -> impl Workload
where
    F: for<'a> Fn(&'a WorkloadCx, u64) -> BoxFuture<'a, Outcome> + Send + Sync + 'static,
{
    struct FnWorkload<F>(F);
    impl<F> Workload for FnWorkload<F>
    where
        F: for<'a> Fn(&'a WorkloadCx, u64) -> BoxFuture<'a, Outcome> + Send + Sync + 'static,
    {
        fn request<'a>(&'a self, cx: &'a WorkloadCx, seq: u64) -> BoxFuture<'a, Outcome> {
            (self.0)(cx, seq)
        }
    }
    FnWorkload(f)
}

/// The built-in HTTP workload: one request template, sent by closed-loop clients. `{seq}` in
/// the path or the body is replaced by the request's number. A REST service needs no code:
///
/// ```
/// use chaos_runtime::workload::HttpWorkload;
/// let w = HttpWorkload::post("web", 8080, "/items", r#"{"n":{seq}}"#)
///     .ack_json_field("id")
///     .clients(2)
///     .rate(100.0);
/// ```
#[derive(Clone, Debug)]
pub struct HttpWorkload {
    role: String,
    port: u16,
    method: hyper::Method,
    path: String,
    body: Option<String>,
    content_type: String,
    clients: usize,
    pace: Duration,
    timeout: Duration,
    ack_field: Option<String>,
    capture: Option<String>,
}

impl HttpWorkload {
    /// `GET path` on `role`'s `port`.
    pub fn get(role: impl Into<String>, port: u16, path: impl Into<String>) -> Self {
        HttpWorkload {
            role: role.into(),
            port,
            method: hyper::Method::GET,
            path: path.into(),
            body: None,
            content_type: "application/json".into(),
            clients: 4,
            pace: Duration::from_millis(20),
            timeout: Duration::from_secs(2),
            ack_field: None,
            capture: None,
        }
    }

    /// `POST path` with `body` on `role`'s `port`.
    pub fn post(
        role: impl Into<String>,
        port: u16,
        path: impl Into<String>,
        body: impl Into<String>,
    ) -> Self {
        HttpWorkload {
            method: hyper::Method::POST,
            body: Some(body.into()),
            ..HttpWorkload::get(role, port, path)
        }
    }

    /// Any method.
    pub fn method(mut self, method: hyper::Method) -> Self {
        self.method = method;
        self
    }

    /// The body's content type (default `application/json`).
    pub fn content_type(mut self, value: impl Into<String>) -> Self {
        self.content_type = value.into();
        self
    }

    /// Concurrent clients (default 4).
    pub fn clients(mut self, n: usize) -> Self {
        self.clients = n.max(1);
        self
    }

    /// Requests per second over all clients (sets each client's pace; default: 20 ms pauses).
    pub fn rate(mut self, per_second: f64) -> Self {
        if per_second > 0.0 {
            self.pace = Duration::from_secs_f64(self.clients as f64 / per_second);
        }
        self
    }

    /// The client-side timeout of one request (default 2 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A 2xx answer is a write acknowledged under the JSON field `field` of its body.
    pub fn ack_json_field(mut self, field: impl Into<String>) -> Self {
        self.ack_field = Some(field.into());
        self
    }

    /// Keeps the value of an answer header as a tag of each sample.
    pub fn capture_header(mut self, name: impl Into<String>) -> Self {
        self.capture = Some(name.into().to_ascii_lowercase());
        self
    }
}

impl Workload for HttpWorkload {
    fn request<'a>(&'a self, cx: &'a WorkloadCx, seq: u64) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let n = seq.to_string();
            let url = format!(
                "{}{}",
                cx.url(&self.role, self.port),
                self.path.replace("{seq}", &n)
            );
            let body = self
                .body
                .as_ref()
                .map(|b| Bytes::from(b.replace("{seq}", &n)));
            let res = http::Request::new(self.method.clone(), &url)
                .body(body, &self.content_type)
                .timeout(self.timeout)
                .send(cx.http())
                .await;
            let mut out = Outcome::from_http(&res);
            if let Ok(r) = &res {
                if let Some(h) = &self.capture
                    && let Some(v) = r.headers.get(h)
                {
                    out = out.with_tag(h.clone(), v.clone());
                }
                if out.failure.is_none()
                    && let Some(field) = &self.ack_field
                {
                    out = match json_field(&r.body, field) {
                        Some(key) => out.with_ack(Ack::new(key)),
                        // Written or not, nobody can tell: counted, shown, not ledgered.
                        None => out.with_tag(INDETERMINATE, format!("no `{field}` in the reply")),
                    };
                }
            }
            out
        })
    }

    fn clients(&self) -> usize {
        self.clients
    }

    fn pace(&self) -> Duration {
        self.pace
    }

    fn request_timeout(&self) -> Duration {
        self.timeout
    }
}

/// The tag of a sample whose write is indeterminate: a success without the key the ledger needs
/// (counted in the timeline's `indeterminate_writes`; set it from your own workload too).
pub const INDETERMINATE: &str = "indeterminate";

/// A top-level field of a JSON body, as text (numbers and strings).
pub fn json_field(body: &[u8], field: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    match v.get(field)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The first panic of a client, kept to be raised in the run (a client task's panic would
/// otherwise end only that task, silently, and the run would wait out its deadlines).
type Panicked = Arc<Mutex<Option<Box<dyn std::any::Any + Send>>>>;

fn raise(panicked: &Panicked) {
    let p = panicked.lock().unwrap().take();
    if let Some(p) = p {
        std::panic::resume_unwind(p);
    }
}

/// A running workload.
pub(crate) struct Running {
    samples: Arc<Mutex<Vec<Sample>>>,
    acked: Arc<Mutex<Vec<Ack>>>,
    stop: Arc<AtomicBool>,
    panicked: Panicked,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Per client, the start (monotonic ns) of its request in flight. A client takes its start
    /// under this lock and clears it only after its sample is recorded, so [`Running::settled_ms`]
    /// can say up to when the samples are final.
    inflight: Arc<Mutex<Vec<Option<u64>>>>,
    t0_ns: u64,
    pub(crate) request_timeout: Duration,
}

impl Running {
    /// Prepares the workload, then starts its clients; times relative to `t0_ns`.
    pub(crate) async fn start(
        workload: Arc<dyn Workload>,
        cx: WorkloadCx,
        t0_ns: u64,
    ) -> Result<Running, String> {
        let cx = Arc::new(cx);
        workload.prepare(&cx).await?;
        let samples = Arc::new(Mutex::new(Vec::new()));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let panicked: Panicked = Arc::default();
        let seq = Arc::new(AtomicU64::new(0));
        let timeout = workload.request_timeout();
        let pace = workload.pace();
        let mut tasks = Vec::new();
        let clients = workload.clients().max(1);
        let inflight = Arc::new(Mutex::new(vec![None; clients]));
        for client in 0..clients {
            let inflight = inflight.clone();
            let (samples, acked, stop, seq, cx, workload, panicked) = (
                samples.clone(),
                acked.clone(),
                stop.clone(),
                seq.clone(),
                cx.clone(),
                workload.clone(),
                panicked.clone(),
            );
            tasks.push(tokio::spawn(async move {
                use futures::FutureExt;
                while !stop.load(Ordering::Relaxed) {
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    let start = {
                        let mut inflight = inflight.lock().unwrap();
                        let start = mono_ns();
                        inflight[client] = Some(start);
                        start
                    };
                    let request = std::panic::AssertUnwindSafe(workload.request(&cx, n));
                    let out = match tokio::time::timeout(timeout, request.catch_unwind()).await {
                        Ok(Ok(out)) => out,
                        Ok(Err(p)) => {
                            // Every client stops; the run raises the panic at its next look.
                            stop.store(true, Ordering::Relaxed);
                            panicked.lock().unwrap().get_or_insert(p);
                            return;
                        }
                        Err(_) => Outcome::failed("timeout", "timeout"),
                    };
                    let end = mono_ns();
                    if let Some(ack) = &out.ack
                        && out.failure.is_none()
                    {
                        acked.lock().unwrap().push(ack.clone());
                    }
                    samples.lock().unwrap().push(Sample {
                        t_ms: (start.saturating_sub(t0_ns)) as f64 / 1e6,
                        latency_ms: (end - start) as f64 / 1e6,
                        ok: out.failure.is_none(),
                        status: out.status,
                        error: out.failure.as_ref().map(|f| f.message.clone()),
                        class: out.failure.map(|f| f.class),
                        tags: out.tags,
                    });
                    inflight.lock().unwrap()[client] = None;
                    tokio::time::sleep(pace).await;
                }
            }));
        }
        Ok(Running {
            samples,
            acked,
            stop,
            panicked,
            tasks,
            inflight,
            t0_ns,
            request_timeout: timeout,
        })
    }

    /// The instant (ms on the run's clock) before which every request has completed: the
    /// start of the oldest request still in flight, else now. Samples that started before it
    /// are all recorded, so a window that ends by then is final (read before the samples, as
    /// [`Running::first_holding`] does). Waiting a whole request timeout instead, as the run did, is
    /// only needed while a request hangs.
    pub(crate) fn settled_ms(&self) -> f64 {
        let inflight = self.inflight.lock().unwrap();
        let now = mono_ns();
        let oldest = inflight.iter().flatten().copied().fold(now, u64::min);
        oldest.saturating_sub(self.t0_ns) as f64 / 1e6
    }

    /// The first window from `from_ms` that holds `hyp`, among those that are final (end by
    /// [`Running::settled_ms`], read before the samples).
    pub(crate) fn first_holding(&self, hyp: &Hypothesis, from_ms: f64) -> Option<f64> {
        let settled = self.settled_ms();
        self.with_samples(|s| hyp.first_holding(s, from_ms, settled))
    }

    /// `f` over the samples so far (completed requests), in place: the run polls this while it
    /// waits for a window, and a copy of every sample (tags and error texts included) each
    /// poll would cost the machine more than the measurement it waits for. Raises a client's
    /// panic here, where the run looks at its workload, so it unwinds through the run's guards
    /// (the fault is healed, the stack removed) instead of the run waiting out its deadlines.
    pub(crate) fn with_samples<T>(&self, f: impl FnOnce(&[Sample]) -> T) -> T {
        raise(&self.panicked);
        f(&self.samples.lock().unwrap())
    }

    /// Stops the clients (waits for in-flight requests, bounded by their timeout).
    pub(crate) async fn stop(self) -> (Vec<Sample>, Vec<Ack>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = tokio::time::timeout(self.request_timeout + Duration::from_secs(1), t).await;
        }
        let mut samples = std::mem::take(&mut *self.samples.lock().unwrap());
        samples.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
        let acked = std::mem::take(&mut *self.acked.lock().unwrap());
        raise(&self.panicked);
        (samples, acked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Request 0 hangs until released; every other request answers at once.
    struct OneHangs(Arc<tokio::sync::Notify>);

    impl Workload for OneHangs {
        fn request<'a>(&'a self, _cx: &'a WorkloadCx, seq: u64) -> BoxFuture<'a, Outcome> {
            Box::pin(async move {
                if seq == 0 {
                    self.0.notified().await;
                }
                Outcome::ok()
            })
        }
        fn clients(&self) -> usize {
            2
        }
        fn pace(&self) -> Duration {
            Duration::from_millis(2)
        }
    }

    #[tokio::test]
    async fn samples_are_settled_up_to_the_oldest_request_in_flight() {
        let release = Arc::new(tokio::sync::Notify::new());
        let t0 = mono_ns();
        let running = Running::start(
            Arc::new(OneHangs(release.clone())),
            WorkloadCx {
                addrs: BTreeMap::new(),
                http: crate::http::client(),
            },
            t0,
        )
        .await
        .unwrap();
        // The other client completes requests while request 0 hangs.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while running.with_samples(<[Sample]>::len) < 20 {
            assert!(
                std::time::Instant::now() < deadline,
                "no requests completed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let settled = running.settled_ms();
        let completed = running.with_samples(<[Sample]>::to_vec);
        let latest = completed.iter().map(|s| s.t_ms).fold(0.0, f64::max);
        assert!(
            settled < latest,
            "settled at {settled} ms although a request from before {latest} ms is in flight"
        );
        release.notify_one();
        while running.with_samples(<[Sample]>::len) <= completed.len() {
            assert!(
                std::time::Instant::now() < deadline,
                "request 0 never completed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let settled_after = running.settled_ms();
        assert!(
            settled_after > latest,
            "settled at {settled_after} ms with nothing hanging"
        );
        let (all, _) = running.stop().await;
        // While it hung, the settled instant was its start: every request that started
        // before had been recorded.
        let hung = all.iter().find(|s| s.latency_ms > 20.0).expect("request 0");
        assert_eq!(settled, hung.t_ms);
        let before = all.iter().filter(|s| s.t_ms < settled).count();
        let recorded = completed.iter().filter(|s| s.t_ms < settled).count();
        assert_eq!(
            before, recorded,
            "a request from before {settled} ms was missing"
        );
    }
}
