//! End-to-end tests: a timestamping echo server, the proxy in-process, and a
//! client, all on 127.0.0.1 with ephemeral ports. Timings are measured, never
//! assumed; every test is bounded by `bounded`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use chaos_proxy::{
    Command, NewProxy, ProxyClient, Server, ServerConfig, Stream, Toxic, ToxicKind, parse_args,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

const MS: Duration = Duration::from_millis(1);

/// Runs a test body with a hard time limit: a guard against hangs, not a timing assertion (set
/// for a debug build on a loaded 2-core machine).
async fn bounded<F: Future<Output = ()>>(limit_s: u64, f: F) {
    timeout(Duration::from_secs(limit_s), f)
        .await
        .expect("test exceeded its time bound");
}

/// An echo server that reports the instant each chunk arrived.
async fn echo_server() -> (SocketAddr, mpsc::UnboundedReceiver<Instant>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            sock.set_nodelay(true).unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return, // dropping closes
                        Ok(n) => n,
                    };
                    let _ = tx.send(Instant::now());
                    if sock.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

struct Rig {
    server: Server,
    api: ProxyClient,
    proxy_addr: SocketAddr,
    echo_addr: SocketAddr,
    arrivals: mpsc::UnboundedReceiver<Instant>,
}

impl Rig {
    async fn new() -> Rig {
        let (echo_addr, arrivals) = echo_server().await;
        let server = Server::start(ServerConfig {
            api: "127.0.0.1:0".into(),
            proxies: vec![NewProxy::new("echo", "127.0.0.1:0", echo_addr.to_string())],
        })
        .await
        .unwrap();
        let api = server.client();
        let proxy_addr = api.proxy("echo").await.unwrap().listen.parse().unwrap();
        Rig {
            server,
            api,
            proxy_addr,
            echo_addr,
            arrivals,
        }
    }

    async fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.proxy_addr).await.unwrap();
        let _ = s.set_nodelay(true);
        s
    }

    /// One request/response; returns (client→server, server→client) one-way times.
    async fn round_trip(&mut self, s: &mut TcpStream) -> (Duration, Duration) {
        let msg = b"ping-0123456789";
        let mut buf = [0u8; 15];
        let t0 = Instant::now();
        s.write_all(msg).await.unwrap();
        let arrived = timeout(Duration::from_secs(5), self.arrivals.recv())
            .await
            .expect("request never reached the server")
            .unwrap();
        timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .expect("no echo")
            .unwrap();
        let t1 = Instant::now();
        assert_eq!(&buf, msg);
        (arrived - t0, t1 - arrived)
    }

    async fn rtts(&mut self, s: &mut TcpStream, n: usize) -> Vec<Duration> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let (up, down) = self.round_trip(s).await;
            v.push(up + down);
        }
        v
    }
}

fn p50(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Reads until EOF or error; returns what came and how it ended.
async fn read_to_end_or_err(s: &mut TcpStream) -> (Vec<u8>, io::Result<()>) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => return (out, Ok(())),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return (out, Err(e)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_downstream_is_accurate_and_counted() {
    bounded(15, async {
        let mut rig = Rig::new().await;
        let mut s = rig.connect().await;
        let base = p50(&rig.rtts(&mut s, 30).await);

        // Added while the connection is open: it must apply to it.
        rig.api
            .add_toxic("echo", &Toxic::latency("lat", Stream::Downstream, 100, 0))
            .await
            .unwrap();
        let mut ups = Vec::new();
        let mut downs = Vec::new();
        for _ in 0..20 {
            let (up, down) = rig.round_trip(&mut s).await;
            ups.push(up);
            downs.push(down);
        }
        let rtts: Vec<Duration> = ups.iter().zip(&downs).map(|(u, d)| *u + *d).collect();
        let p = p50(&rtts);
        eprintln!(
            "latency 100ms downstream: rtt p50 {:.3} ms (baseline {:.3} ms), error {:+.3} ms; up p50 {:.3} ms, down p50 {:.3} ms",
            ms(p),
            ms(base),
            ms(p) - ms(base) - 100.0,
            ms(p50(&ups)),
            ms(p50(&downs)),
        );
        assert!(
            (ms(p) - ms(base) - 100.0).abs() <= 2.0,
            "p50 {p:?} not within 2 ms of 100 ms + baseline {base:?}"
        );
        assert!(rtts.iter().all(|r| *r >= 100 * MS), "a chunk came early");
        assert!(p50(&ups) < 5 * MS, "requests were delayed: {:?}", p50(&ups));

        let stats = rig.api.proxy("echo").await.unwrap().stats.unwrap();
        assert!(stats.toxics_applied >= 20, "{stats:?}");
        assert_eq!(stats.bytes_upstream, 50 * 15);
        assert_eq!(stats.bytes_downstream, 50 * 15);
        assert_eq!(stats.connections_total, 1);
        assert_eq!(stats.connections_active, 1);
        rig.server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_latency_delays_only_requests() {
    bounded(15, async {
        let mut rig = Rig::new().await;
        rig.api
            .add_toxic("echo", &Toxic::latency("up", Stream::Upstream, 100, 0))
            .await
            .unwrap();
        let mut s = rig.connect().await;
        let mut ups = Vec::new();
        let mut downs = Vec::new();
        for _ in 0..15 {
            let (up, down) = rig.round_trip(&mut s).await;
            ups.push(up);
            downs.push(down);
        }
        eprintln!(
            "latency 100ms upstream: up p50 {:.3} ms, down p50 {:.3} ms",
            ms(p50(&ups)),
            ms(p50(&downs))
        );
        assert!((ms(p50(&ups)) - 100.0).abs() <= 2.0, "up {:?}", p50(&ups));
        assert!(ups.iter().all(|u| *u >= 100 * MS));
        assert!(
            p50(&downs) < 5 * MS,
            "responses were delayed: {:?}",
            p50(&downs)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitter_stays_in_bounds_and_order_is_kept() {
    bounded(15, async {
        let mut rig = Rig::new().await;
        let mut s = rig.connect().await;
        let base = p50(&rig.rtts(&mut s, 10).await);
        rig.api
            .add_toxic("echo", &Toxic::latency("jit", Stream::Downstream, 60, 30))
            .await
            .unwrap();
        let rtts = rig.rtts(&mut s, 30).await;
        let (min, max) = (*rtts.iter().min().unwrap(), *rtts.iter().max().unwrap());
        eprintln!(
            "latency 60±30ms: min {:.3} ms, p50 {:.3} ms, max {:.3} ms (baseline {:.3} ms)",
            ms(min),
            ms(p50(&rtts)),
            ms(max),
            ms(base)
        );
        // Never early (hard bound); late only by scheduling noise, so the upper
        // bound allows one outlier on a loaded 2-core machine.
        assert!(min >= 30 * MS, "below latency - jitter: {min:?}");
        let above = rtts
            .iter()
            .filter(|r| **r > 90 * MS + base + 3 * MS)
            .count();
        assert!(
            above <= 1,
            "{above} samples above latency + jitter: {rtts:?}"
        );
        assert!(
            max - min >= 15 * MS,
            "no jitter to speak of: {min:?}..{max:?}"
        );

        // A burst of numbered messages, each its own chunk: jitter must not reorder them.
        let writer = async {
            let (_, mut w) = s.split();
            for i in 0u32..40 {
                w.write_all(&i.to_be_bytes()).await.unwrap();
                tokio::time::sleep(MS).await;
            }
        };
        writer.await;
        let mut got = vec![0u8; 40 * 4];
        s.read_exact(&mut got).await.unwrap();
        let seq: Vec<u32> = got
            .chunks(4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(seq, (0..40).collect::<Vec<_>>());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toxics_apply_to_open_connections_and_can_change() {
    bounded(15, async {
        let mut rig = Rig::new().await;
        let mut s = rig.connect().await;
        let before = p50(&rig.rtts(&mut s, 5).await);
        assert!(before < 20 * MS);

        let lat = Toxic::latency("lat", Stream::Downstream, 150, 0);
        rig.api.add_toxic("echo", &lat).await.unwrap();
        let with = p50(&rig.rtts(&mut s, 3).await);
        assert!(with >= 150 * MS && with < 170 * MS, "{with:?}");

        let lat = Toxic::latency("lat", Stream::Downstream, 40, 0);
        rig.api.update_toxic("echo", &lat).await.unwrap();
        let updated = p50(&rig.rtts(&mut s, 3).await);
        assert!(updated >= 40 * MS && updated < 60 * MS, "{updated:?}");

        rig.api.remove_toxic("echo", "lat").await.unwrap();
        let after = p50(&rig.rtts(&mut s, 5).await);
        assert!(after < 20 * MS, "{after:?}");

        // toxicity 0: never applies.
        let never = Toxic::latency("never", Stream::Downstream, 200, 0).with_toxicity(0.0);
        rig.api.add_toxic("echo", &never).await.unwrap();
        let mut s2 = rig.connect().await;
        let unaffected = p50(&rig.rtts(&mut s2, 3).await);
        assert!(unaffected < 20 * MS, "{unaffected:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_zero_blackholes_until_removed() {
    bounded(15, async {
        let mut rig = Rig::new().await;
        let mut s = rig.connect().await;
        rig.round_trip(&mut s).await;
        rig.api
            .add_toxic("echo", &Toxic::timeout("hole", Stream::Downstream, 0))
            .await
            .unwrap();
        let applied_before = rig
            .api
            .proxy("echo")
            .await
            .unwrap()
            .stats
            .unwrap()
            .toxics_applied;
        s.write_all(b"lost").await.unwrap();
        // The server got it and answered; wait (bounded) until the proxy dropped the answer.
        timeout(Duration::from_secs(5), rig.arrivals.recv())
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stats = rig.api.proxy("echo").await.unwrap().stats.unwrap();
            if stats.toxics_applied > applied_before {
                break;
            }
            assert!(Instant::now() < deadline, "answer never dropped");
            tokio::time::sleep(5 * MS).await;
        }
        let mut buf = [0u8; 16];
        match s.try_read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => panic!("blackhole let something through: {other:?}"),
        }
        // Still open, not closed: nothing arrives for a while.
        assert!(timeout(300 * MS, s.read(&mut buf)).await.is_err());

        rig.api.remove_toxic("echo", "hole").await.unwrap();
        s.write_all(b"back").await.unwrap();
        let mut got = [0u8; 4];
        timeout(Duration::from_secs(5), s.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got, b"back", "the dropped answer must stay dropped");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_closes_after_its_delay() {
    bounded(15, async {
        let mut rig = Rig::new().await;
        let mut s = rig.connect().await;
        rig.round_trip(&mut s).await;
        let t0 = Instant::now();
        rig.api
            .add_toxic("echo", &Toxic::timeout("t", Stream::Upstream, 200))
            .await
            .unwrap();
        s.write_all(b"dropped").await.unwrap();
        let (data, _) = read_to_end_or_err(&mut s).await;
        let elapsed = t0.elapsed();
        eprintln!("timeout 200ms: closed after {:.3} ms", ms(elapsed));
        assert!(data.is_empty());
        assert!(elapsed >= 200 * MS && elapsed < 300 * MS, "{elapsed:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_peer_gives_econnreset() {
    bounded(15, async {
        let mut rig = Rig::new().await;
        let mut s = rig.connect().await;
        rig.round_trip(&mut s).await;
        let t0 = Instant::now();
        rig.api
            .add_toxic("echo", &Toxic::reset_peer("rst", Stream::Downstream, 100))
            .await
            .unwrap();
        let (_, end) = read_to_end_or_err(&mut s).await;
        let elapsed = t0.elapsed();
        eprintln!("reset_peer 100ms: reset after {:.3} ms", ms(elapsed));
        let err = end.expect_err("expected a reset, got a clean EOF");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
        assert!(elapsed >= 100 * MS && elapsed < 200 * MS, "{elapsed:?}");

        // timeout 0 resets new connections right away.
        rig.api.remove_toxic("echo", "rst").await.unwrap();
        rig.api
            .add_toxic("echo", &Toxic::reset_peer("rst0", Stream::Upstream, 0))
            .await
            .unwrap();
        // The RST may even beat the end of the client's connect.
        let end = match TcpStream::connect(rig.proxy_addr).await {
            Ok(mut s) => read_to_end_or_err(&mut s).await.1,
            Err(e) => Err(e),
        };
        assert_eq!(end.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
        let stats = rig.api.proxy("echo").await.unwrap().stats.unwrap();
        assert!(stats.toxics_applied >= 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_limits_throughput() {
    bounded(15, async {
        let rig = Rig::new().await;
        let rate_kb = 1000u64; // 1,000,000 B/s
        rig.api
            .add_toxic("echo", &Toxic::bandwidth("bw", Stream::Downstream, rate_kb))
            .await
            .unwrap();
        let total = 600_000usize;
        let s = rig.connect().await;
        let (mut r, mut w) = s.into_split();
        let payload = vec![7u8; total];
        let t0 = Instant::now();
        let sender = tokio::spawn(async move {
            w.write_all(&payload).await.unwrap();
            w
        });
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        while got < total {
            let n = r.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early at {got}");
            got += n;
        }
        let elapsed = t0.elapsed();
        let _w = sender.await.unwrap();
        let rate = total as f64 / elapsed.as_secs_f64();
        eprintln!(
            "bandwidth 1000 KB/s: {total} B in {:.3} ms = {:.0} B/s ({:+.1}%)",
            ms(elapsed),
            rate,
            (rate / 1e6 - 1.0) * 100.0
        );
        assert!((rate / 1e6 - 1.0).abs() <= 0.2, "rate {rate:.0} B/s");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_data_slow_close_and_slicer() {
    bounded(15, async {
        let mut rig = Rig::new().await;

        // limit_data: exactly N bytes, then the close.
        rig.api
            .add_toxic("echo", &Toxic::limit_data("lim", Stream::Downstream, 10))
            .await
            .unwrap();
        let mut s = rig.connect().await;
        s.write_all(&[1u8; 100]).await.unwrap();
        let (data, _) = read_to_end_or_err(&mut s).await;
        assert_eq!(data.len(), 10);
        rig.api.remove_toxic("echo", "lim").await.unwrap();

        // slow_close: the server's FIN reaches the client `delay` late.
        for delay in [0u32, 200] {
            if delay > 0 {
                rig.api
                    .add_toxic(
                        "echo",
                        &Toxic::slow_close("sc", Stream::Downstream, delay.into()),
                    )
                    .await
                    .unwrap();
            }
            let mut s = rig.connect().await;
            rig.round_trip(&mut s).await;
            let t0 = Instant::now();
            s.shutdown().await.unwrap();
            let (data, end) = read_to_end_or_err(&mut s).await;
            let elapsed = t0.elapsed();
            assert!(data.is_empty() && end.is_ok());
            eprintln!("slow_close {delay}ms: FIN after {:.3} ms", ms(elapsed));
            assert!(
                elapsed >= delay * MS && elapsed < (delay + 60) * MS,
                "{elapsed:?}"
            );
        }
        rig.api.remove_toxic("echo", "sc").await.unwrap();

        // slicer: the bytes arrive intact, in small pieces.
        let slicer = Toxic::new(
            "slice",
            Stream::Downstream,
            ToxicKind::Slicer {
                average_size: 10,
                size_variation: 5,
                delay: 100,
            },
        );
        rig.api.add_toxic("echo", &slicer).await.unwrap();
        let mut s = rig.connect().await;
        let payload: Vec<u8> = (0..2000u32).map(|i| (i % 251) as u8).collect();
        s.write_all(&payload).await.unwrap();
        let mut got = vec![0u8; payload.len()];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(got, payload);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_closes_everything_and_enable_reopens() {
    bounded(15, async {
        let mut rig = Rig::new().await;
        let mut s = rig.connect().await;
        rig.round_trip(&mut s).await;

        let p = rig.api.set_enabled("echo", false).await.unwrap();
        assert!(!p.enabled);
        assert_eq!(p.stats.unwrap().connections_active, 0);
        let (_, _) = timeout(Duration::from_secs(2), read_to_end_or_err(&mut s))
            .await
            .expect("open connection not closed by disable");
        let refused = TcpStream::connect(rig.proxy_addr).await;
        assert_eq!(
            refused.unwrap_err().kind(),
            io::ErrorKind::ConnectionRefused
        );

        let p = rig.api.set_enabled("echo", true).await.unwrap();
        assert!(p.enabled);
        assert_eq!(p.listen, rig.proxy_addr.to_string(), "same address again");
        let mut s = rig.connect().await;
        rig.round_trip(&mut s).await;

        // reset re-enables and clears toxics.
        rig.api
            .add_toxic("echo", &Toxic::latency("lat", Stream::Downstream, 500, 0))
            .await
            .unwrap();
        rig.api.set_enabled("echo", false).await.unwrap();
        rig.api.reset().await.unwrap();
        let p = rig.api.proxy("echo").await.unwrap();
        assert!(p.enabled && p.toxics.is_empty());
        let mut s = rig.connect().await;
        let rtt = p50(&rig.rtts(&mut s, 3).await);
        assert!(rtt < 50 * MS);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overhead_without_toxics() {
    bounded(15, async {
        let mut rig = Rig::new().await;
        let mut direct = TcpStream::connect(rig.echo_addr).await.unwrap();
        direct.set_nodelay(true).unwrap();
        let mut proxied = rig.connect().await;
        rig.rtts(&mut direct, 20).await;
        rig.rtts(&mut proxied, 20).await;
        let d = p50(&rig.rtts(&mut direct, 300).await);
        let p = p50(&rig.rtts(&mut proxied, 300).await);
        eprintln!(
            "no toxics: rtt p50 direct {:.1} µs, via proxy {:.1} µs, overhead {:.1} µs",
            d.as_secs_f64() * 1e6,
            p.as_secs_f64() * 1e6,
            (p.as_secs_f64() - d.as_secs_f64()) * 1e6
        );
        assert!(p < d + 2 * MS, "proxy adds {:?}", p - d);

        // Bulk throughput through the proxy.
        let total = 32 * 1024 * 1024usize;
        let (mut r, mut w) = proxied.into_split();
        let t0 = Instant::now();
        let sender = tokio::spawn(async move {
            let block = vec![1u8; 256 * 1024];
            for _ in 0..total / block.len() {
                w.write_all(&block).await.unwrap();
            }
            w
        });
        let mut got = 0;
        let mut buf = vec![0u8; 256 * 1024];
        while got < total {
            let n = r.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got += n;
        }
        let _w = sender.await.unwrap();
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "no toxics: echo of {} MiB through the proxy in {:.3} s = {:.0} MiB/s each way",
            total >> 20,
            secs,
            (total >> 20) as f64 / secs
        );
    })
    .await;
}

async fn raw(api: &ProxyClient, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let (status, body) = api
        .raw(method, path, body.map(str::as_bytes))
        .await
        .unwrap();
    let v = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "{method} {path}: not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        })
    };
    (status, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_is_toxiproxy_compatible() {
    bounded(15, async {
        let rig = Rig::new().await;
        let api = &rig.api;
        let example = r#"{"name":"lat","type":"latency","stream":"downstream","toxicity":1.0,"attributes":{"latency":100,"jitter":0}}"#;
        let example_v: Value = serde_json::from_str(example).unwrap();

        // serde round trip
        let t: Toxic = serde_json::from_str(example).unwrap();
        assert_eq!(serde_json::to_value(&t).unwrap(), example_v);
        assert_eq!(
            t.kind,
            ToxicKind::Latency {
                latency: 100,
                jitter: 0
            }
        );

        // HTTP round trip
        let (st, v) = raw(api, "POST", "/proxies/echo/toxics", Some(example)).await;
        assert_eq!((st, &v), (200, &example_v));
        let (st, v) = raw(api, "GET", "/proxies/echo/toxics/lat", None).await;
        assert_eq!((st, &v), (200, &example_v));
        let (st, v) = raw(api, "GET", "/proxies/echo/toxics", None).await;
        assert_eq!((st, v), (200, json!([example_v])));

        // Errors, as Toxiproxy.
        let (st, v) = raw(api, "POST", "/proxies/echo/toxics", Some(example)).await;
        assert_eq!((st, v), (409, json!({"error": "toxic already exists", "status": 409})));
        let (st, v) = raw(api, "GET", "/proxies/nope", None).await;
        assert_eq!((st, v), (404, json!({"error": "proxy not found", "status": 404})));
        let (st, v) = raw(api, "GET", "/proxies/echo/toxics/nope", None).await;
        assert_eq!((st, v), (404, json!({"error": "toxic not found", "status": 404})));
        let (st, v) = raw(api, "POST", "/proxies/nope/toxics", Some(example)).await;
        assert_eq!(st, 404, "{v}");
        let (st, v) = raw(
            api,
            "POST",
            "/proxies/echo/toxics",
            Some(r#"{"name":"x","type":"latency","stream":"sideways"}"#),
        )
        .await;
        assert_eq!(
            (st, v),
            (
                400,
                json!({"error": "stream was invalid, can be either upstream or downstream", "status": 400})
            )
        );
        let (st, v) = raw(api, "POST", "/proxies/echo/toxics", Some(r#"{"type":"nosuch"}"#)).await;
        assert_eq!((st, v), (400, json!({"error": "invalid toxic type", "status": 400})));
        let (st, v) = raw(api, "POST", "/proxies/echo/toxics", Some("{not json")).await;
        assert_eq!(st, 400);
        assert!(v["error"].as_str().unwrap().starts_with("bad request body"));
        let body = format!(
            r#"{{"name":"echo","listen":"127.0.0.1:0","upstream":"{}"}}"#,
            rig.echo_addr
        );
        let (st, v) = raw(api, "POST", "/proxies", Some(&body)).await;
        assert_eq!((st, v), (409, json!({"error": "proxy already exists", "status": 409})));
        let (st, v) = raw(api, "POST", "/proxies", Some(r#"{"name":"x"}"#)).await;
        assert_eq!(
            (st, v),
            (400, json!({"error": "missing required field: upstream", "status": 400}))
        );

        // Defaults: name {type}_{stream}, downstream, toxicity 1, missing attributes 0.
        let (st, v) = raw(
            api,
            "POST",
            "/proxies/echo/toxics",
            Some(r#"{"type":"latency","attributes":{"latency":5}}"#),
        )
        .await;
        assert_eq!(st, 200);
        assert_eq!(
            v,
            json!({"name":"latency_downstream","type":"latency","stream":"downstream",
                   "toxicity":1.0,"attributes":{"latency":5,"jitter":0}})
        );
        // Update merges attributes.
        let (st, v) = raw(
            api,
            "POST",
            "/proxies/echo/toxics/lat",
            Some(r#"{"attributes":{"jitter":7},"toxicity":0.5}"#),
        )
        .await;
        assert_eq!(st, 200);
        assert_eq!(v["attributes"], json!({"latency":100,"jitter":7}));
        assert_eq!(v["toxicity"], json!(0.5));

        // Proxies: index, show, create, update, delete.
        let (st, v) = raw(api, "GET", "/proxies", None).await;
        assert_eq!(st, 200);
        let p = &v["echo"];
        assert_eq!(p["name"], "echo");
        assert_eq!(p["listen"], rig.proxy_addr.to_string());
        assert_eq!(p["upstream"], rig.echo_addr.to_string());
        assert_eq!(p["enabled"], true);
        assert_eq!(p["toxics"].as_array().unwrap().len(), 2);
        assert!(p["stats"]["connections_total"].is_u64());

        let body = format!(
            r#"{{"name":"second","listen":"127.0.0.1:0","upstream":"{}","enabled":false}}"#,
            rig.echo_addr
        );
        let (st, v) = raw(api, "POST", "/proxies", Some(&body)).await;
        assert_eq!((st, &v["enabled"]), (201, &json!(false)));
        let (st, v) = raw(api, "PATCH", "/proxies/second", Some(r#"{"enabled":true}"#)).await;
        assert_eq!((st, &v["enabled"]), (200, &json!(true)));
        let (st, _) = raw(api, "DELETE", "/proxies/second", None).await;
        assert_eq!(st, 204);
        let (st, _) = raw(api, "DELETE", "/proxies/second", None).await;
        assert_eq!(st, 404);

        let (st, _) = raw(api, "DELETE", "/proxies/echo/toxics/lat", None).await;
        assert_eq!(st, 204);
        let (st, _) = raw(api, "POST", "/reset", None).await;
        assert_eq!(st, 204);
        assert!(api.toxics("echo").await.unwrap().is_empty());

        let (st, v) = raw(api, "GET", "/version", None).await;
        assert_eq!(st, 200);
        assert!(v["version"].as_str().unwrap().starts_with("2."));
        assert!(api.version().await.unwrap().starts_with("2."));

        // populate: create-or-replace, Toxiproxy's shape.
        let body = format!(
            r#"[{{"name":"echo","listen":"{}","upstream":"{}"}},{{"name":"third","listen":"127.0.0.1:0","upstream":"{}"}}]"#,
            rig.proxy_addr, rig.echo_addr, rig.echo_addr
        );
        let (st, v) = raw(api, "POST", "/populate", Some(&body)).await;
        assert_eq!(st, 201);
        assert_eq!(v["proxies"].as_array().unwrap().len(), 2);
        assert_eq!(api.proxies().await.unwrap().len(), 2);

        // The typed client reports API errors with their status.
        let err = api.proxy("nope").await.unwrap_err();
        assert_eq!(err.status(), Some(404));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_config_starts_proxies() {
    bounded(10, async {
        let (echo, _arrivals) = echo_server().await;
        let cmd = parse_args(
            [
                "--api".to_string(),
                "127.0.0.1:0".to_string(),
                "--proxy".to_string(),
                format!("e=127.0.0.1:0={echo}"),
            ],
            |_| None,
        )
        .unwrap();
        let Command::Run(config) = cmd else { panic!() };
        let server = Server::start(config).await.unwrap();
        let proxies = server.proxies().await;
        let p = &proxies["e"];
        assert!(p.enabled);
        let mut s = TcpStream::connect(p.listen.as_str()).await.unwrap();
        s.write_all(b"hi").await.unwrap();
        let mut b = [0u8; 2];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"hi");
        // A taken listen address fails startup.
        let clash = Server::start(ServerConfig {
            api: "127.0.0.1:0".into(),
            proxies: vec![NewProxy::new("x", p.listen.clone(), echo.to_string())],
        })
        .await;
        assert!(clash.is_err());
        server.shutdown().await;
    })
    .await;
}

/// A server that answers every connection with `reply` as soon as it has read
/// one byte, then closes at once.
async fn reply_and_close_server(reply: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut b = [0u8; 1];
                if sock.read(&mut b).await.is_ok() {
                    let _ = sock.write_all(&reply).await;
                }
                // Dropped: the FIN follows the reply at once.
            });
        }
    });
    addr
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_then_close_arrives_whole_under_latency() {
    bounded(20, async {
        let reply = pattern(300 * 1024, 3);
        let upstream = reply_and_close_server(reply.clone()).await;
        let server = Server::start(ServerConfig {
            api: "127.0.0.1:0".into(),
            proxies: vec![NewProxy::new("rc", "127.0.0.1:0", upstream.to_string())],
        })
        .await
        .unwrap();
        let api = server.client();
        let listen = api.proxy("rc").await.unwrap().listen;

        // Toxic present before the connection, then added to an open one
        // (the fast path must hand over to the toxic pipeline without loss).
        for added_after_connect in [false, true] {
            if !added_after_connect {
                let lat = Toxic::latency("lat", Stream::Downstream, 100, 0);
                api.add_toxic("rc", &lat).await.unwrap();
            }
            let mut s = TcpStream::connect(listen.as_str()).await.unwrap();
            if added_after_connect {
                // Let the proxy connect upstream and settle in its fast path.
                tokio::time::sleep(20 * MS).await;
                let lat = Toxic::latency("lat", Stream::Downstream, 100, 0);
                api.add_toxic("rc", &lat).await.unwrap();
                tokio::time::sleep(20 * MS).await;
            }
            let t0 = Instant::now();
            s.write_all(b"?").await.unwrap();
            let (got, end) = read_to_end_or_err(&mut s).await;
            let elapsed = t0.elapsed();
            end.unwrap();
            assert_eq!(
                got.len(),
                reply.len(),
                "added after connect: {added_after_connect}"
            );
            assert!(got == reply, "reply corrupted");
            assert!(elapsed >= 100 * MS, "latency not applied: {elapsed:?}");
            api.remove_toxic("rc", "lat").await.unwrap();
        }
        server.shutdown().await;
    })
    .await;
}

/// Echoes `total` bytes written in `piece`-sized writes while latency toxics
/// are added and removed in both directions; the echo must be byte-exact.
async fn echo_intact_while_toxics_toggle(total: usize, piece: usize) {
    let rig = Rig::new().await;
    let s = rig.connect().await;
    let data = pattern(total, 11);
    let (mut r, mut w) = s.into_split();
    let sent = data.clone();
    let sender = tokio::spawn(async move {
        for p in sent.chunks(piece) {
            w.write_all(p).await.unwrap();
            tokio::task::yield_now().await;
        }
        w
    });
    let api = rig.api.clone();
    let toggler = tokio::spawn(async move {
        for i in 0..10u64 {
            let stream = if i % 2 == 0 {
                Stream::Upstream
            } else {
                Stream::Downstream
            };
            let name = format!("t{i}");
            api.add_toxic("echo", &Toxic::latency(&name, stream, 1, 1))
                .await
                .unwrap();
            tokio::time::sleep(15 * MS).await;
            api.remove_toxic("echo", &name).await.unwrap();
            tokio::time::sleep(5 * MS).await;
        }
    });
    let mut got = Vec::with_capacity(total);
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < total {
        let n = r.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed early at {}", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    toggler.await.unwrap();
    let _w = sender.await.unwrap();
    assert!(got == data, "bytes lost, duplicated or reordered");
    let stats = rig.api.proxy("echo").await.unwrap().stats.unwrap();
    assert_eq!(stats.bytes_upstream, total as u64);
    assert_eq!(stats.bytes_downstream, total as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_stays_intact_while_toxics_come_and_go() {
    // Small writes: the fast path copies through its buffer.
    bounded(120, echo_intact_while_toxics_toggle(8 * 1024 * 1024, 7919)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_stays_intact_while_toxics_come_and_go() {
    // Large writes fill the proxy's buffer, so on Linux the fast path splices.
    bounded(
        120,
        echo_intact_while_toxics_toggle(32 * 1024 * 1024, 1024 * 1024),
    )
    .await;
}
