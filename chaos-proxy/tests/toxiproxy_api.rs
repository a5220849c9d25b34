//! Toxiproxy's API behaviours, one test each, named after the behaviour (the
//! Toxiproxy test that pins it down is named in its doc comment). Our own test
//! code, run against the embedded server on 127.0.0.1 with ephemeral ports.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use chaos_proxy::{ProxyClient, Server, ServerConfig, Stream, Toxic};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

async fn bounded<F: Future<Output = ()>>(f: F) {
    timeout(Duration::from_secs(15), f)
        .await
        .expect("test exceeded its time bound");
}

/// A server with no proxies, and its client.
async fn empty_server() -> (Server, ProxyClient) {
    let server = Server::start(ServerConfig {
        api: "127.0.0.1:0".into(),
        proxies: Vec::new(),
    })
    .await
    .unwrap();
    let api = server.client();
    (server, api)
}

/// An answer as seen on the wire.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request with a chosen User-Agent (or none); the body of the
/// answer is parsed as JSON (Null when empty).
async fn request(
    server: &Server,
    method: &str,
    path: &str,
    user_agent: Option<&str>,
    body: Option<&str>,
) -> Answer {
    let mut s = TcpStream::connect(server.api_addr()).await.unwrap();
    let body = body.unwrap_or("");
    let ua = user_agent
        .map(|ua| format!("User-Agent: {ua}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\n{ua}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        server.api_addr(),
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()))
    };
    Answer {
        status,
        headers,
        body,
    }
}

async fn call(server: &Server, method: &str, path: &str, body: Option<&str>) -> Answer {
    request(server, method, path, Some("chaos-proxy-tests"), body).await
}

/// An address nothing listens on (upstreams of proxies that are never used).
fn unused_upstream() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn create(server: &Server, name: &str) -> Value {
    let body = json!({"name": name, "listen": "127.0.0.1:0", "upstream": unused_upstream()});
    let a = call(server, "POST", "/proxies", Some(&body.to_string())).await;
    assert_eq!(a.status, 201, "{}", a.body);
    a.body
}

async fn add_toxic(server: &Server, proxy: &str, toxic: Value) -> Answer {
    call(
        server,
        "POST",
        &format!("/proxies/{proxy}/toxics"),
        Some(&toxic.to_string()),
    )
    .await
}

async fn toxics(server: &Server, proxy: &str) -> Vec<Value> {
    let a = call(server, "GET", &format!("/proxies/{proxy}/toxics"), None).await;
    assert_eq!(a.status, 200);
    a.body.as_array().unwrap().clone()
}

fn find<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|t| t["name"] == name)
}

async fn accepts_connections(listen: &str) -> bool {
    TcpStream::connect(listen).await.is_ok()
}

/// TestRequestId
#[tokio::test]
async fn every_answer_carries_a_request_id() {
    bounded(async {
        let (server, _) = empty_server().await;
        let a = call(&server, "GET", "/version", None).await;
        let b = call(&server, "GET", "/proxies/nope", None).await;
        let (ida, idb) = (
            a.header("X-Toxiproxy-Request-Id").expect("no request id"),
            b.header("X-Toxiproxy-Request-Id")
                .expect("no request id on 404"),
        );
        assert!(!ida.is_empty());
        assert_ne!(ida, idb, "request ids must differ");
        let refused = request(&server, "GET", "/proxies", Some("Mozilla/5.0"), None).await;
        assert!(refused.header("X-Toxiproxy-Request-Id").is_some());
    })
    .await;
}

/// TestBrowserGets403: and a browser cannot change anything either.
#[tokio::test]
async fn browser_user_agent_gets_403_and_changes_nothing() {
    bounded(async {
        let (server, _) = empty_server().await;
        create(&server, "db").await;
        let ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
        let a = request(&server, "GET", "/proxies", Some(ua), None).await;
        assert_eq!(a.status, 403);
        assert_eq!(
            a.body,
            json!({"error": "User agent not allowed", "status": 403})
        );
        // What a web page could send to 127.0.0.1: a simple POST.
        let toxic = json!({"name": "evil", "type": "timeout", "attributes": {"timeout": 0}});
        let a = request(
            &server,
            "POST",
            "/proxies/db/toxics",
            Some(ua),
            Some(&toxic.to_string()),
        )
        .await;
        assert_eq!(a.status, 403);
        let a = request(&server, "POST", "/reset", Some(ua), None).await;
        assert_eq!(a.status, 403);
        let a = request(&server, "DELETE", "/proxies/db", Some(ua), None).await;
        assert_eq!(a.status, 403);
        // Unknown paths too.
        let a = request(&server, "GET", "/nowhere", Some(ua), None).await;
        assert_eq!(a.status, 403);
        assert!(toxics(&server, "db").await.is_empty());
        assert_eq!(call(&server, "GET", "/proxies/db", None).await.status, 200);
    })
    .await;
}

/// TestNonBrowserGets200
#[tokio::test]
async fn non_browser_user_agents_are_served() {
    bounded(async {
        let (server, api) = empty_server().await;
        for ua in [
            Some("Wget/2.1"),
            Some("curl/8.5.0"),
            Some("toxiproxy-cli"),
            Some("Mozilla"),
            None,
        ] {
            let a = request(&server, "GET", "/proxies", ua, None).await;
            assert_eq!(a.status, 200, "{ua:?}");
        }
        // Our own client sends no browser User-Agent.
        api.proxies().await.unwrap();
    })
    .await;
}

/// TestIndexWithNoProxies
#[tokio::test]
async fn index_with_no_proxies_is_an_empty_object() {
    bounded(async {
        let (server, _) = empty_server().await;
        let a = call(&server, "GET", "/proxies", None).await;
        assert_eq!((a.status, a.body), (200, json!({})));
    })
    .await;
}

/// TestCreateProxyBlankName, TestCreateProxyBlankUpstream
#[tokio::test]
async fn create_proxy_needs_a_name_and_an_upstream() {
    bounded(async {
        let (server, _) = empty_server().await;
        let a = call(&server, "POST", "/proxies", Some(r#"{"name":""}"#)).await;
        assert_eq!(
            (a.status, a.body),
            (
                400,
                json!({"error": "missing required field: name", "status": 400})
            )
        );
        let a = call(&server, "POST", "/proxies", Some(r#"{"name":"x"}"#)).await;
        assert_eq!(
            (a.status, a.body),
            (
                400,
                json!({"error": "missing required field: upstream", "status": 400})
            )
        );
    })
    .await;
}

/// TestPopulateProxy, TestPopulateDefaultEnabled, TestPopulateDisabledProxy
#[tokio::test]
async fn populate_creates_in_order_enabled_by_default() {
    bounded(async {
        let (server, _) = empty_server().await;
        let up = unused_upstream();
        let body = json!([
            {"name": "one", "listen": "127.0.0.1:0", "upstream": up},
            {"name": "two", "listen": "127.0.0.1:0", "upstream": up, "enabled": false},
            {"name": "three", "listen": "127.0.0.1:0", "upstream": up, "enabled": true},
        ]);
        let a = call(&server, "POST", "/populate", Some(&body.to_string())).await;
        assert_eq!(a.status, 201, "{}", a.body);
        let list = a.body["proxies"].as_array().unwrap();
        let names: Vec<_> = list.iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["one", "two", "three"]);
        let enabled: Vec<_> = list
            .iter()
            .map(|p| p["enabled"].as_bool().unwrap())
            .collect();
        assert_eq!(enabled, [true, false, true]);
        assert!(accepts_connections(list[0]["listen"].as_str().unwrap()).await);
        assert!(accepts_connections(list[2]["listen"].as_str().unwrap()).await);
        let index = call(&server, "GET", "/proxies", None).await.body;
        assert_eq!(index.as_object().unwrap().len(), 3);
    })
    .await;
}

/// TestPopulateExistingProxy: an unchanged proxy (listen compared resolved,
/// `localhost` = 127.0.0.1) keeps its toxics; a changed one is replaced.
#[tokio::test]
async fn populate_keeps_an_unchanged_proxy_and_replaces_a_changed_one() {
    bounded(async {
        let (server, _) = empty_server().await;
        let one = create(&server, "one").await;
        let two = create(&server, "two").await;
        let port_one: SocketAddr = one["listen"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            add_toxic(&server, "one", json!({"type": "latency"}))
                .await
                .status,
            200
        );
        assert_eq!(
            add_toxic(&server, "two", json!({"type": "latency"}))
                .await
                .status,
            200
        );
        let new_two = format!("127.0.0.1:{}", free_port());
        let body = json!([
            {"name": "one", "listen": format!("localhost:{}", port_one.port()), "upstream": one["upstream"]},
            {"name": "two", "listen": new_two, "upstream": two["upstream"]},
        ]);
        let a = call(&server, "POST", "/populate", Some(&body.to_string())).await;
        assert_eq!(a.status, 201, "{}", a.body);
        let list = a.body["proxies"].as_array().unwrap();
        assert_eq!(list[0]["listen"], port_one.to_string());
        assert_eq!(list[1]["listen"], new_two);
        let kept = toxics(&server, "one").await;
        assert_eq!(kept.len(), 1, "populate replaced an unchanged proxy");
        assert_eq!(kept[0]["type"], "latency");
        assert!(toxics(&server, "two").await.is_empty());
        assert!(accepts_connections(&port_one.to_string()).await);
        assert!(accepts_connections(&new_two).await);
        assert!(
            !accepts_connections(two["listen"].as_str().unwrap()).await,
            "the replaced proxy's old listener is still open"
        );
    })
    .await;
}

/// TestPopulateWithBadName: nothing is created when any entry lacks a name.
#[tokio::test]
async fn populate_with_a_blank_name_creates_nothing() {
    bounded(async {
        let (server, _) = empty_server().await;
        let body = json!([
            {"name": "one", "listen": "127.0.0.1:0", "upstream": unused_upstream()},
            {"name": "", "listen": ""},
        ]);
        let a = call(&server, "POST", "/populate", Some(&body.to_string())).await;
        assert_eq!(a.status, 400);
        assert_eq!(a.body["error"], "missing required field: name at proxy 2");
        let index = call(&server, "GET", "/proxies", None).await.body;
        assert_eq!(index, json!({}));
    })
    .await;
}

/// TestPopulateProxyWithBadDataShouldReturnError: proxies before the bad one
/// stay, the bad one and those after it are not created.
#[tokio::test]
async fn populate_stops_at_a_bad_listen_address() {
    bounded(async {
        let (server, _) = empty_server().await;
        let up = unused_upstream();
        let body = json!([
            {"name": "one", "listen": "127.0.0.1:0", "upstream": up},
            {"name": "two", "listen": "local373", "upstream": up},
            {"name": "three", "listen": "127.0.0.1:0", "upstream": up},
        ]);
        let a = call(&server, "POST", "/populate", Some(&body.to_string())).await;
        assert!(a.status >= 400, "{}", a.body);
        assert!(a.body["error"].is_string(), "{}", a.body);
        let index = call(&server, "GET", "/proxies", None).await.body;
        let names: Vec<_> = index.as_object().unwrap().keys().cloned().collect();
        assert_eq!(names, ["one"]);
    })
    .await;
}

/// TestPopulateAddToxic
#[tokio::test]
async fn populated_proxies_take_toxics() {
    bounded(async {
        let (server, _) = empty_server().await;
        let body = json!([{"name": "one", "listen": "127.0.0.1:0", "upstream": unused_upstream()}]);
        assert_eq!(
            call(&server, "POST", "/populate", Some(&body.to_string()))
                .await
                .status,
            201
        );
        let a = add_toxic(
            &server,
            "one",
            json!({"type": "latency", "stream": "downstream"}),
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.body);
    })
    .await;
}

/// TestCreateProxyPortConflict: a taken listen address fails with 500 and
/// works again once the proxy holding it is deleted.
#[tokio::test]
async fn create_proxy_port_conflict_is_a_500_until_the_port_is_free() {
    bounded(async {
        let (server, _) = empty_server().await;
        let first = create(&server, "first").await;
        let listen = first["listen"].as_str().unwrap();
        let body = json!({"name": "second", "listen": listen, "upstream": unused_upstream()});
        let a = call(&server, "POST", "/proxies", Some(&body.to_string())).await;
        assert_eq!(a.status, 500, "{}", a.body);
        assert!(
            a.body["error"]
                .as_str()
                .unwrap()
                .starts_with(&format!("listen tcp {listen}")),
            "{}",
            a.body
        );
        assert_eq!(
            call(&server, "DELETE", "/proxies/first", None).await.status,
            204
        );
        let a = call(&server, "POST", "/proxies", Some(&body.to_string())).await;
        assert_eq!(a.status, 201, "{}", a.body);
    })
    .await;
}

/// TestCreateProxyNameConflict
#[tokio::test]
async fn create_proxy_name_conflict_is_a_409_until_deleted() {
    bounded(async {
        let (server, _) = empty_server().await;
        create(&server, "db").await;
        let body = json!({"name": "db", "listen": "127.0.0.1:0", "upstream": unused_upstream()});
        let a = call(&server, "POST", "/proxies", Some(&body.to_string())).await;
        assert_eq!(
            (a.status, a.body),
            (409, json!({"error": "proxy already exists", "status": 409}))
        );
        call(&server, "DELETE", "/proxies/db", None).await;
        let a = call(&server, "POST", "/proxies", Some(&body.to_string())).await;
        assert_eq!(a.status, 201);
    })
    .await;
}

/// TestDeleteProxy: the listener closes.
#[tokio::test]
async fn delete_proxy_closes_its_listener() {
    bounded(async {
        let (server, _) = empty_server().await;
        let p = create(&server, "db").await;
        let listen = p["listen"].as_str().unwrap();
        assert!(accepts_connections(listen).await);
        assert_eq!(
            call(&server, "DELETE", "/proxies/db", None).await.status,
            204
        );
        assert!(!accepts_connections(listen).await);
        assert_eq!(call(&server, "GET", "/proxies/db", None).await.status, 404);
    })
    .await;
}

/// TestResetState: proxies re-enabled, toxics gone, proxies kept.
#[tokio::test]
async fn reset_enables_proxies_and_removes_toxics() {
    bounded(async {
        let (server, _) = empty_server().await;
        let p = create(&server, "db").await;
        let toxic = json!({"type": "latency", "attributes": {"latency": 100, "jitter": 10}});
        assert_eq!(add_toxic(&server, "db", toxic).await.status, 200);
        let a = call(&server, "POST", "/proxies/db", Some(r#"{"enabled":false}"#)).await;
        assert_eq!(a.body["enabled"], false);
        assert_eq!(call(&server, "POST", "/reset", None).await.status, 204);
        let a = call(&server, "GET", "/proxies/db", None).await;
        assert_eq!(a.body["enabled"], true);
        assert_eq!(a.body["toxics"], json!([]));
        assert!(accepts_connections(p["listen"].as_str().unwrap()).await);
    })
    .await;
}

/// TestListingToxics, TestAddToxic, TestAddMultipleToxics
#[tokio::test]
async fn toxics_are_listed_as_added() {
    bounded(async {
        let (server, _) = empty_server().await;
        create(&server, "db").await;
        assert!(toxics(&server, "db").await.is_empty());
        let a = add_toxic(&server, "db", json!({"name": "a", "type": "latency"})).await;
        assert_eq!(
            a.body,
            json!({"name": "a", "type": "latency", "stream": "downstream", "toxicity": 1.0,
                   "attributes": {"latency": 0, "jitter": 0}})
        );
        add_toxic(
            &server,
            "db",
            json!({"name": "b", "type": "bandwidth", "stream": "upstream", "attributes": {"rate": 5}}),
        )
        .await;
        let list = toxics(&server, "db").await;
        let names: Vec<_> = list.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(find(&list, "b").unwrap()["stream"], "upstream");
    })
    .await;
}

/// TestAddConflictingToxic: same name, same stream.
#[tokio::test]
async fn add_conflicting_toxic_is_a_409_and_keeps_the_first() {
    bounded(async {
        let (server, _) = empty_server().await;
        create(&server, "db").await;
        add_toxic(
            &server,
            "db",
            json!({"name": "foobar", "type": "latency", "stream": "downstream"}),
        )
        .await;
        let a = add_toxic(
            &server,
            "db",
            json!({"name": "foobar", "type": "slow_close", "stream": "downstream"}),
        )
        .await;
        assert_eq!(
            (a.status, a.body),
            (409, json!({"error": "toxic already exists", "status": 409}))
        );
        let list = toxics(&server, "db").await;
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["type"], "latency");
        assert_eq!(list[0]["attributes"], json!({"latency": 0, "jitter": 0}));
    })
    .await;
}

/// TestAddConflictingToxicsMultistream: a name is unique per proxy, not per stream.
#[tokio::test]
async fn add_conflicting_toxics_multistream_is_a_409() {
    bounded(async {
        let (server, _) = empty_server().await;
        create(&server, "db").await;
        let a = add_toxic(
            &server,
            "db",
            json!({"name": "foobar", "type": "latency", "stream": "upstream"}),
        )
        .await;
        assert_eq!(a.status, 200);
        let a = add_toxic(
            &server,
            "db",
            json!({"name": "foobar", "type": "latency", "stream": "downstream"}),
        )
        .await;
        assert_eq!(a.status, 409);
        let list = toxics(&server, "db").await;
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["stream"], "upstream");
        assert_eq!(list[0]["toxicity"], 1.0);
    })
    .await;
}

/// TestAddConflictingToxicsMultistreamDefaults: default names include the stream.
#[tokio::test]
async fn default_toxic_names_differ_per_stream() {
    bounded(async {
        let (server, _) = empty_server().await;
        create(&server, "db").await;
        for stream in ["upstream", "downstream"] {
            let a = add_toxic(&server, "db", json!({"type": "latency", "stream": stream})).await;
            assert_eq!(a.status, 200, "{}", a.body);
        }
        let list = toxics(&server, "db").await;
        assert_eq!(
            find(&list, "latency_upstream").unwrap()["stream"],
            "upstream"
        );
        assert_eq!(
            find(&list, "latency_downstream").unwrap()["stream"],
            "downstream"
        );
    })
    .await;
}

/// TestAddToxicWithToxicity
#[tokio::test]
async fn toxicity_is_kept_as_given() {
    bounded(async {
        let (server, _) = empty_server().await;
        create(&server, "db").await;
        let a = add_toxic(
            &server,
            "db",
            json!({"type": "latency", "toxicity": 0.2, "attributes": {"latency": 100, "jitter": 10}}),
        )
        .await;
        assert_eq!(a.status, 200);
        let list = toxics(&server, "db").await;
        let t = find(&list, "latency_downstream").unwrap();
        assert!((t["toxicity"].as_f64().unwrap() - 0.2).abs() < 1e-6);
        assert_eq!(t["attributes"], json!({"latency": 100, "jitter": 10}));
    })
    .await;
}

/// TestAddNoop: `noop` exists, defaults to downstream, and passes bytes unchanged.
#[tokio::test]
async fn noop_toxic_is_accepted_and_changes_nothing() {
    bounded(async {
        let (server, _) = empty_server().await;
        // An echo upstream to see the bytes pass.
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let body =
            json!({"name": "db", "listen": "127.0.0.1:0", "upstream": echo_addr.to_string()});
        let p = call(&server, "POST", "/proxies", Some(&body.to_string()))
            .await
            .body;
        let a = add_toxic(
            &server,
            "db",
            json!({"name": "foobar", "type": "noop", "stream": "", "toxicity": 1.0}),
        )
        .await;
        assert_eq!(
            (a.status, a.body),
            (
                200,
                json!({"name": "foobar", "type": "noop", "stream": "downstream",
                       "toxicity": 1.0, "attributes": {}})
            )
        );
        let a = add_toxic(&server, "db", json!({"type": "noop", "stream": "upstream"})).await;
        assert_eq!(a.body["name"], "noop_upstream");
        let mut s = TcpStream::connect(p["listen"].as_str().unwrap())
            .await
            .unwrap();
        s.write_all(b"unchanged").await.unwrap();
        let mut buf = [0u8; 9];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"unchanged");
        // The typed model knows it too.
        let t: Toxic = serde_json::from_value(json!({"type": "noop"})).unwrap();
        assert_eq!(t.stream, Stream::Downstream);
    })
    .await;
}

/// TestUpdateToxics: attributes merged, toxicity kept when absent.
#[tokio::test]
async fn update_toxic_merges_attributes_and_keeps_toxicity() {
    bounded(async {
        let (server, _) = empty_server().await;
        create(&server, "db").await;
        add_toxic(
            &server,
            "db",
            json!({"type": "latency", "attributes": {"latency": 100, "jitter": 10}}),
        )
        .await;
        let path = "/proxies/db/toxics/latency_downstream";
        let a = call(
            &server,
            "POST",
            path,
            Some(r#"{"toxicity":0.5,"attributes":{"latency":1000}}"#),
        )
        .await;
        assert_eq!(a.status, 200);
        assert_eq!(a.body["attributes"], json!({"latency": 1000, "jitter": 10}));
        assert_eq!(a.body["toxicity"], 0.5);
        let a = call(
            &server,
            "POST",
            path,
            Some(r#"{"attributes":{"latency":500}}"#),
        )
        .await;
        assert_eq!(a.body["attributes"], json!({"latency": 500, "jitter": 10}));
        assert_eq!(a.body["toxicity"], 0.5);
        let list = toxics(&server, "db").await;
        assert_eq!(list[0]["attributes"], json!({"latency": 500, "jitter": 10}));
    })
    .await;
}

/// TestRemoveToxic
#[tokio::test]
async fn remove_toxic_then_it_is_gone() {
    bounded(async {
        let (server, _) = empty_server().await;
        create(&server, "db").await;
        add_toxic(&server, "db", json!({"type": "latency"})).await;
        let path = "/proxies/db/toxics/latency_downstream";
        assert_eq!(call(&server, "DELETE", path, None).await.status, 204);
        assert!(toxics(&server, "db").await.is_empty());
        let a = call(&server, "DELETE", path, None).await;
        assert_eq!(
            (a.status, a.body),
            (404, json!({"error": "toxic not found", "status": 404}))
        );
    })
    .await;
}

/// TestVersionEndpointReturnsVersion
#[tokio::test]
async fn version_endpoint_returns_a_2x_version() {
    bounded(async {
        let (server, _) = empty_server().await;
        let a = call(&server, "GET", "/version", None).await;
        assert_eq!(a.status, 200);
        assert!(a.body["version"].as_str().unwrap().starts_with("2."));
    })
    .await;
}

/// TestInvalidStream
#[tokio::test]
async fn invalid_stream_is_a_400() {
    bounded(async {
        let (server, _) = empty_server().await;
        create(&server, "db").await;
        let a = add_toxic(
            &server,
            "db",
            json!({"type": "latency", "stream": "walrustream"}),
        )
        .await;
        assert_eq!(
            (a.status, a.body),
            (
                400,
                json!({"error": "stream was invalid, can be either upstream or downstream", "status": 400})
            )
        );
        assert!(toxics(&server, "db").await.is_empty());
    })
    .await;
}

/// Ours (Toxiproxy would accept it and then forward nothing): a bandwidth rate
/// of 0 is refused with a message that says what to use instead, on create and
/// on update.
#[tokio::test]
async fn bandwidth_rate_zero_is_refused() {
    bounded(async {
        let (server, _) = empty_server().await;
        create(&server, "db").await;
        let a = add_toxic(
            &server,
            "db",
            json!({"type": "bandwidth", "attributes": {"rate": 0}}),
        )
        .await;
        assert_eq!(a.status, 400);
        let msg = a.body["error"].as_str().unwrap();
        assert!(msg.contains("rate must be at least 1"), "{msg}");
        assert!(msg.contains("timeout"), "{msg}");
        // Missing attributes default to 0, so a bare bandwidth toxic is refused too.
        assert_eq!(
            add_toxic(&server, "db", json!({"type": "bandwidth"}))
                .await
                .status,
            400
        );
        let a = add_toxic(
            &server,
            "db",
            json!({"name": "bw", "type": "bandwidth", "attributes": {"rate": 10}}),
        )
        .await;
        assert_eq!(a.status, 200);
        let a = call(
            &server,
            "POST",
            "/proxies/db/toxics/bw",
            Some(r#"{"attributes":{"rate":0}}"#),
        )
        .await;
        assert_eq!(a.status, 400);
        assert_eq!(toxics(&server, "db").await[0]["attributes"]["rate"], 10);
    })
    .await;
}
