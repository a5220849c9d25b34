//! The proxy registry, the listeners and the Toxiproxy-compatible HTTP API.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::client::ProxyClient;
use crate::link::{Counters, ToxicList, run_connection};
use crate::model::{
    ApiErrorBody, NewProxy, Proxy, ProxyUpdate, Toxic, ToxicError, ToxicKind, WireToxic,
};

/// The Toxiproxy version whose API this server speaks.
pub const TOXIPROXY_API_VERSION: &str = "2.12.0";

/// What to start: the API address and the proxies to create at startup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerConfig {
    /// API listen address, e.g. `0.0.0.0:8474` (`127.0.0.1:0` in tests).
    pub api: String,
    /// Proxies created (and, if enabled, bound) before the server is ready.
    pub proxies: Vec<NewProxy>,
}

/// A running chaos-proxy: the API and all proxy listeners are bound.
pub struct Server {
    api_addr: SocketAddr,
    app: Arc<App>,
    shutdown: Option<oneshot::Sender<()>>,
    api_task: JoinHandle<()>,
}

impl Server {
    /// Binds the API and every configured proxy, then serves in the background
    /// on the current tokio runtime. Returns once everything is listening.
    pub async fn start(config: ServerConfig) -> io::Result<Server> {
        let app = Arc::new(App::default());
        for p in config.proxies {
            app.create(p)
                .await
                .map_err(|e| io::Error::other(format!("proxy: {}", e.error)))?;
        }
        let listener = TcpListener::bind(config.api.as_str()).await?;
        let api_addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let router = router(app.clone());
        let api_task = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                eprintln!("chaos-proxy: api server error: {e}");
            }
        });
        Ok(Server {
            api_addr,
            app,
            shutdown: Some(tx),
            api_task,
        })
    }

    /// Where the HTTP API listens.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// A client for this server's API.
    pub fn client(&self) -> ProxyClient {
        ProxyClient::new(self.api_addr.to_string())
    }

    /// The current state of every proxy (same as `GET /proxies`, without HTTP).
    pub async fn proxies(&self) -> BTreeMap<String, Proxy> {
        let map = self.app.proxies.lock().await;
        map.iter().map(|(k, e)| (k.clone(), e.view())).collect()
    }

    /// Stops the API and every proxy, closing all connections.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let mut map = self.app.proxies.lock().await;
        for entry in map.values_mut() {
            entry.stop().await;
        }
        drop(map);
        // Idle keep-alive API connections must not hold up shutdown.
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.api_task).await;
        self.api_task.abort();
    }
}

#[derive(Default)]
pub(crate) struct App {
    proxies: Mutex<BTreeMap<String, Entry>>,
}

struct Running {
    /// Dropping it stops the accept loop and every connection.
    kill: watch::Sender<()>,
    task: JoinHandle<()>,
}

struct Entry {
    name: String,
    listen: String,
    upstream: String,
    toxics: Vec<Toxic>,
    toxics_tx: watch::Sender<ToxicList>,
    counters: Arc<Counters>,
    running: Option<Running>,
}

impl Entry {
    fn new(name: String, listen: String, upstream: String) -> Entry {
        let (toxics_tx, _) = watch::channel(Arc::new(Vec::new()));
        Entry {
            name,
            listen,
            upstream,
            toxics: Vec::new(),
            toxics_tx,
            counters: Arc::default(),
            running: None,
        }
    }

    fn enabled(&self) -> bool {
        self.running.is_some()
    }

    async fn start(&mut self) -> io::Result<()> {
        if self.running.is_some() {
            return Ok(());
        }
        let listen = if self.listen.is_empty() {
            "0.0.0.0:0"
        } else {
            self.listen.as_str()
        };
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("listen tcp {listen}: {e}")))?;
        self.listen = listener.local_addr()?.to_string();
        let (kill, kill_rx) = watch::channel(());
        let task = tokio::spawn(accept_loop(
            listener,
            self.upstream.clone(),
            self.toxics_tx.subscribe(),
            self.counters.clone(),
            kill_rx,
        ));
        self.running = Some(Running { kill, task });
        Ok(())
    }

    /// Closes the listener and every connection, and waits until they are closed.
    async fn stop(&mut self) {
        if let Some(Running { kill, task }) = self.running.take() {
            drop(kill);
            let _ = task.await;
        }
    }

    fn publish(&self) {
        self.toxics_tx.send_replace(Arc::new(self.toxics.clone()));
    }

    fn view(&self) -> Proxy {
        Proxy {
            name: self.name.clone(),
            listen: self.listen.clone(),
            upstream: self.upstream.clone(),
            enabled: self.enabled(),
            toxics: self.toxics.clone(),
            stats: Some(self.counters.snapshot()),
        }
    }

    /// Toxiproxy's `Differs`: a new listen address or upstream restarts the proxy.
    /// As in Toxiproxy the listen address is compared resolved, so
    /// `localhost:7070` is the same as a proxy bound to `127.0.0.1:7070`.
    async fn differs(&self, listen: &str, upstream: &str) -> bool {
        upstream != self.upstream || !same_listen(listen, &self.listen).await
    }
}

async fn same_listen(wanted: &str, current: &str) -> bool {
    if wanted == current {
        return true;
    }
    let Ok(current) = current.parse::<SocketAddr>() else {
        return false;
    };
    match tokio::net::lookup_host(wanted).await {
        Ok(mut addrs) => addrs.any(|a| a == current),
        Err(_) => false,
    }
}

/// Toxiproxy's browser guard and request id, around every answer.
///
/// A request whose `User-Agent` starts with `Mozilla/` is refused with 403: the
/// API listens on localhost without authentication, and a web page the
/// developer has open must not be able to steer it (a page can send simple
/// POSTs to 127.0.0.1 without CORS). Every answer carries an
/// `X-Toxiproxy-Request-Id`.
async fn guard(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let browser = req
        .headers()
        .get(header::USER_AGENT)
        .is_some_and(|ua| ua.as_bytes().starts_with(b"Mozilla/"));
    let mut response = if browser {
        ApiError::new(StatusCode::FORBIDDEN, "User agent not allowed").into_response()
    } else {
        next.run(req).await
    };
    if let Ok(id) = header::HeaderValue::from_str(&request_id()) {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    response
}

/// Header naming each API answer, as Toxiproxy's.
const REQUEST_ID: &str = "x-toxiproxy-request-id";

/// 20 lowercase hex digits: a per-process random prefix and a counter, so ids
/// are unique within a process and unlikely to repeat across restarts.
fn request_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| fastrand::u32(..));
    let n = NEXT.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff_ffff;
    format!("{prefix:08x}{n:012x}")
}

async fn accept_loop(
    listener: TcpListener,
    upstream: String,
    toxics: watch::Receiver<ToxicList>,
    counters: Arc<Counters>,
    mut kill: watch::Receiver<()>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = kill.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((sock, _)) => {
                    conns.spawn(run_connection(
                        sock,
                        upstream.clone(),
                        toxics.clone(),
                        counters.clone(),
                        kill.clone(),
                    ));
                }
                Err(e) => {
                    eprintln!("chaos-proxy: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
    drop(listener);
    // Every connection saw the same kill; wait until their sockets are closed.
    while conns.join_next().await.is_some() {}
}

/// An API error in Toxiproxy's shape.
#[derive(Debug)]
pub(crate) struct ApiError(ApiErrorBody);

impl ApiError {
    fn new(status: StatusCode, msg: impl Into<String>) -> ApiError {
        ApiError(ApiErrorBody {
            error: msg.into(),
            status: status.as_u16(),
        })
    }
    fn bad_body(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, format!("bad request body: {e}"))
    }
    fn missing(field: &str) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("missing required field: {field}"),
        )
    }
    fn proxy_not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "proxy not found")
    }
    fn toxic_not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "toxic not found")
    }
    fn io(e: io::Error) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
    fn toxic(e: ToxicError) -> ApiError {
        match e {
            ToxicError::InvalidType(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid toxic type")
            }
            ToxicError::InvalidStream(_) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "stream was invalid, can be either upstream or downstream",
            ),
            other => ApiError::new(StatusCode::BAD_REQUEST, other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json(status, &self.0)
    }
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

type ApiResult = Result<Response, ApiError>;

impl App {
    async fn create(&self, input: NewProxy) -> Result<Proxy, ApiErrorBody> {
        self.create_inner(input).await.map_err(|e| e.0)
    }

    async fn create_inner(&self, input: NewProxy) -> Result<Proxy, ApiError> {
        if input.name.is_empty() {
            return Err(ApiError::missing("name"));
        }
        if input.upstream.is_empty() {
            return Err(ApiError::missing("upstream"));
        }
        let mut map = self.proxies.lock().await;
        if map.contains_key(&input.name) {
            return Err(ApiError::new(StatusCode::CONFLICT, "proxy already exists"));
        }
        let mut entry = Entry::new(input.name.clone(), input.listen, input.upstream);
        if input.enabled {
            entry.start().await.map_err(ApiError::io)?;
        }
        let view = entry.view();
        map.insert(input.name, entry);
        Ok(view)
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/reset", post(reset))
        .route("/populate", post(populate))
        .route("/proxies", get(proxy_index).post(proxy_create))
        .route(
            "/proxies/{proxy}",
            get(proxy_show)
                .post(proxy_update)
                .patch(proxy_update)
                .delete(proxy_delete),
        )
        .route(
            "/proxies/{proxy}/toxics",
            get(toxic_index).post(toxic_create),
        )
        .route(
            "/proxies/{proxy}/toxics/{toxic}",
            get(toxic_show)
                .post(toxic_update)
                .patch(toxic_update)
                .delete(toxic_delete),
        )
        .layer(axum::middleware::from_fn(guard))
        .with_state(app)
}

async fn version() -> Response {
    json(
        StatusCode::OK,
        &serde_json::json!({
            "version": TOXIPROXY_API_VERSION,
            "chaos_proxy": env!("CARGO_PKG_VERSION"),
        }),
    )
}

async fn reset(State(app): State<Arc<App>>) -> ApiResult {
    let mut map = app.proxies.lock().await;
    for entry in map.values_mut() {
        entry.start().await.map_err(ApiError::io)?;
        entry.toxics.clear();
        entry.publish();
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn populate(State(app): State<Arc<App>>, body: Bytes) -> ApiResult {
    let input: Vec<NewProxy> = serde_json::from_slice(&body).map_err(ApiError::bad_body)?;
    for (i, p) in input.iter().enumerate() {
        if p.name.is_empty() {
            return Err(ApiError::missing(&format!("name at proxy {}", i + 1)));
        }
        if p.upstream.is_empty() {
            return Err(ApiError::missing(&format!("upstream at proxy {}", i + 1)));
        }
    }
    let mut map = app.proxies.lock().await;
    let mut done = Vec::new();
    for p in input {
        if let Some(existing) = map.get_mut(&p.name) {
            if !existing.differs(&p.listen, &p.upstream).await {
                done.push(existing.view());
                continue;
            }
            existing.stop().await;
            map.remove(&p.name);
        }
        let mut entry = Entry::new(p.name.clone(), p.listen, p.upstream);
        if p.enabled
            && let Err(e) = entry.start().await
        {
            let err = ApiError::io(e).0;
            let body = serde_json::json!({
                "error": err.error,
                "status": err.status,
                "proxies": done,
            });
            return Ok(json(StatusCode::INTERNAL_SERVER_ERROR, &body));
        }
        done.push(entry.view());
        map.insert(p.name, entry);
    }
    Ok(json(
        StatusCode::CREATED,
        &serde_json::json!({ "proxies": done }),
    ))
}

async fn proxy_index(State(app): State<Arc<App>>) -> Response {
    let map = app.proxies.lock().await;
    let all: BTreeMap<&String, Proxy> = map.iter().map(|(k, e)| (k, e.view())).collect();
    json(StatusCode::OK, &all)
}

async fn proxy_create(State(app): State<Arc<App>>, body: Bytes) -> ApiResult {
    let input: NewProxy = serde_json::from_slice(&body).map_err(ApiError::bad_body)?;
    let view = app.create_inner(input).await?;
    Ok(json(StatusCode::CREATED, &view))
}

async fn proxy_show(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    let map = app.proxies.lock().await;
    let entry = map.get(&name).ok_or_else(ApiError::proxy_not_found)?;
    Ok(json(StatusCode::OK, &entry.view()))
}

async fn proxy_update(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let mut map = app.proxies.lock().await;
    let entry = map.get_mut(&name).ok_or_else(ApiError::proxy_not_found)?;
    let input: ProxyUpdate = serde_json::from_slice(&body).map_err(ApiError::bad_body)?;
    let listen = input.listen.unwrap_or_else(|| entry.listen.clone());
    let upstream = input.upstream.unwrap_or_else(|| entry.upstream.clone());
    let enabled = input.enabled.unwrap_or(entry.enabled());
    if entry.differs(&listen, &upstream).await {
        entry.stop().await;
        entry.listen = listen;
        entry.upstream = upstream;
    }
    if enabled {
        entry.start().await.map_err(ApiError::io)?;
    } else {
        entry.stop().await;
    }
    Ok(json(StatusCode::OK, &entry.view()))
}

async fn proxy_delete(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    let mut map = app.proxies.lock().await;
    let mut entry = map.remove(&name).ok_or_else(ApiError::proxy_not_found)?;
    entry.stop().await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn toxic_index(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    let map = app.proxies.lock().await;
    let entry = map.get(&name).ok_or_else(ApiError::proxy_not_found)?;
    Ok(json(StatusCode::OK, &entry.toxics))
}

async fn toxic_create(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let mut map = app.proxies.lock().await;
    let entry = map.get_mut(&name).ok_or_else(ApiError::proxy_not_found)?;
    let wire: WireToxic = serde_json::from_slice(&body).map_err(ApiError::bad_body)?;
    let toxic = Toxic::try_from(wire).map_err(ApiError::toxic)?;
    if entry.toxics.iter().any(|t| t.name == toxic.name) {
        return Err(ApiError::new(StatusCode::CONFLICT, "toxic already exists"));
    }
    entry.toxics.push(toxic.clone());
    entry.publish();
    Ok(json(StatusCode::OK, &toxic))
}

async fn toxic_show(
    State(app): State<Arc<App>>,
    Path((name, toxic)): Path<(String, String)>,
) -> ApiResult {
    let map = app.proxies.lock().await;
    let entry = map.get(&name).ok_or_else(ApiError::proxy_not_found)?;
    let toxic = entry
        .toxics
        .iter()
        .find(|t| t.name == toxic)
        .ok_or_else(ApiError::toxic_not_found)?;
    Ok(json(StatusCode::OK, toxic))
}

async fn toxic_update(
    State(app): State<Arc<App>>,
    Path((name, toxic)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let mut map = app.proxies.lock().await;
    let entry = map.get_mut(&name).ok_or_else(ApiError::proxy_not_found)?;
    let idx = entry
        .toxics
        .iter()
        .position(|t| t.name == toxic)
        .ok_or_else(ApiError::toxic_not_found)?;
    let input: Value = serde_json::from_slice(&body).map_err(ApiError::bad_body)?;
    let Value::Object(input) = input else {
        return Err(ApiError::bad_body("expected a JSON object"));
    };
    let mut updated = entry.toxics[idx].clone();
    // As Toxiproxy: given attributes are merged over the current ones.
    if let Some(attrs) = input.get("attributes").filter(|v| !v.is_null()) {
        let Value::Object(attrs) = attrs else {
            return Err(ApiError::bad_body("attributes must be an object"));
        };
        let mut merged = match updated.kind.attributes() {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        merged.extend(attrs.clone());
        updated.kind = ToxicKind::from_parts(updated.kind.type_name(), &Value::Object(merged))
            .map_err(ApiError::toxic)?;
    }
    if let Some(t) = input.get("toxicity").filter(|v| !v.is_null()) {
        let t = t
            .as_f64()
            .ok_or_else(|| ApiError::bad_body("toxicity must be a number"))? as f32;
        if !(0.0..=1.0).contains(&t) {
            return Err(ApiError::toxic(ToxicError::InvalidToxicity(t.to_string())));
        }
        updated.toxicity = t;
    }
    entry.toxics[idx] = updated.clone();
    entry.publish();
    Ok(json(StatusCode::OK, &updated))
}

async fn toxic_delete(
    State(app): State<Arc<App>>,
    Path((name, toxic)): Path<(String, String)>,
) -> ApiResult {
    let mut map = app.proxies.lock().await;
    let entry = map.get_mut(&name).ok_or_else(ApiError::proxy_not_found)?;
    let idx = entry
        .toxics
        .iter()
        .position(|t| t.name == toxic)
        .ok_or_else(ApiError::toxic_not_found)?;
    entry.toxics.remove(idx);
    entry.publish();
    Ok(StatusCode::NO_CONTENT.into_response())
}
