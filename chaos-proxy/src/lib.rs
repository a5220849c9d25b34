//! # chaos-proxy
//!
//! The project's own TCP fault proxy: a drop-in for Toxiproxy 2.x (same HTTP API
//! and JSON), for machines without `tc netem`. It runs as a process in a
//! container on the Docker network between two services, e.g.
//! order service → chaos-proxy → PostgreSQL, and the test process steers it over
//! its HTTP API on a published port of 127.0.0.1.
//!
//! ## Running it
//!
//! ```text
//! chaos-proxy --api 0.0.0.0:8474 \
//!     --proxy postgres=0.0.0.0:15432=postgres:5432 \
//!     --proxy redis=0.0.0.0:16379=redis:6379
//! ```
//!
//! or with the environment: `CHAOS_PROXY_API=0.0.0.0:8474`,
//! `CHAOS_PROXY_PROXIES="postgres=0.0.0.0:15432=postgres:5432,redis=0.0.0.0:16379=redis:6379"`,
//! `CHAOS_PROXY_CONFIG=/etc/proxies.json` (a JSON array of
//! `{name, listen, upstream, enabled}`, as Toxiproxy's `-config`). Upstreams are
//! resolved at every connect, so Docker DNS names work. Once the API and every
//! listener are bound it prints `chaos-proxy ready` on stdout (flushed); it exits
//! on SIGTERM or SIGINT.
//!
//! ## The HTTP API (Toxiproxy 2.x)
//!
//! ```text
//! GET    /version                       {"version":"2.12.0","chaos_proxy":"0.1.0"}
//! GET    /proxies                       {"postgres": {...}, ...}
//! POST   /proxies                       {"name","listen","upstream","enabled"}  → 201
//! POST   /populate                      [{...}, ...]  create or replace       → 201
//! GET    /proxies/{name}                proxy, with extra "stats"
//! POST   /proxies/{name}  (or PATCH)    {"enabled": false} / {"upstream": ...} / {"listen": ...}
//! DELETE /proxies/{name}                                                      → 204
//! GET    /proxies/{name}/toxics         [toxic, ...]
//! POST   /proxies/{name}/toxics         toxic                                 → 200
//! GET    /proxies/{name}/toxics/{toxic}
//! POST   /proxies/{name}/toxics/{toxic} {"attributes": {...}, "toxicity": 0.5}  (merge)
//! DELETE /proxies/{name}/toxics/{toxic}                                       → 204
//! POST   /reset                         enable all proxies, remove all toxics → 204
//! ```
//!
//! Errors are Toxiproxy's: `{"error":"proxy not found","status":404}`,
//! `"toxic already exists"` (409), `"invalid toxic type"` (400), …
//!
//! As Toxiproxy, every answer carries an `X-Toxiproxy-Request-Id` header, and a
//! request whose `User-Agent` starts with `Mozilla/` (a browser) is refused with
//! 403 `{"error":"User agent not allowed","status":403}` whatever its path: the
//! API has no authentication, and a web page must not steer the proxy through
//! 127.0.0.1. Clients other than browsers (curl, the Toxiproxy clients,
//! [`ProxyClient`]) are not affected.
//!
//! ```text
//! $ curl -s -XPOST 127.0.0.1:8474/proxies/postgres/toxics -d \
//!   '{"name":"lat","type":"latency","stream":"downstream","toxicity":1.0,"attributes":{"latency":100,"jitter":0}}'
//! $ curl -s 127.0.0.1:8474/proxies/postgres
//! {"name":"postgres","listen":"0.0.0.0:15432","upstream":"postgres:5432","enabled":true,
//!  "toxics":[{"name":"lat","type":"latency","stream":"downstream","toxicity":1.0,
//!             "attributes":{"latency":100,"jitter":0}}],
//!  "stats":{"connections_total":3,"connections_active":1,"bytes_upstream":912,
//!           "bytes_downstream":4410,"toxics_applied":12}}
//! ```
//!
//! ## Toxics
//!
//! `stream` is `upstream` (client → server bytes) or `downstream` (server →
//! client; the default). `toxicity` (default 1.0) is the probability that the
//! toxic applies to a given connection, drawn once per connection and toxic.
//! Toxics added, updated or removed at run time act on open connections too.
//!
//! | type | attributes | effect |
//! |---|---|---|
//! | `latency` | `latency`, `jitter` (ms) | each chunk delayed by latency ± uniform jitter, measured from its arrival; order preserved |
//! | `bandwidth` | `rate` (KB/s, 1 KB = 1000 B) | throughput paced to the rate; `rate` 0 is refused (400) |
//! | `slow_close` | `delay` (ms) | the FIN is forwarded `delay` after the source closed |
//! | `timeout` | `timeout` (ms) | all data (and the FIN) dropped; connection closed after `timeout`, never if 0 |
//! | `reset_peer` | `timeout` (ms) | both sockets reset (RST, `SO_LINGER` 0) `timeout` after the toxic began on the connection |
//! | `limit_data` | `bytes` | connection closed once `bytes` bytes passed in this stream |
//! | `slicer` | `average_size`, `size_variation` (bytes), `delay` (µs) | chunks cut in pieces |
//! | `noop` | none (`{}`) | nothing: bytes pass unchanged |
//!
//! Disabling a proxy closes its listener and all its connections; enabling it
//! binds the same address again.
//!
//! Delays use a dedicated timer thread rather than tokio's 1 ms timer, so a
//! 100 ms latency measures 100.4–100.5 ms round trip on loopback (tokio's
//! timer gave 101.5 ms).
//!
//! A direction with no toxic (other than `noop`) is forwarded straight from
//! socket to socket through one reused buffer, or on Linux, while data comes in
//! bulk, with `splice(2)`, so the bytes never enter the proxy's memory; its first toxic switches it, on open
//! connections too, to the pipeline that timestamps and shapes chunks, and it
//! switches back once its toxics are gone and what was buffered has been
//! written. `BENCH-PROXY.md` (in the repository) has the numbers against a
//! direct connection and noxious, and the command that measures them.
//!
//! `stats.toxics_applied` counts every time a toxic acted: a chunk delayed,
//! throttled, sliced or dropped, a FIN delayed, or a connection closed or reset.
//! Bytes are counted before they are written, so a peer that has received them
//! also sees them in the stats.
//!
//! ### Differences from Toxiproxy
//!
//! - `reset_peer`'s timer starts when the toxic begins on the connection, not at
//!   the next chunk, so idle connections are reset too.
//! - `timeout`'s close comes `timeout` after the toxic began, and is not pushed
//!   back by further data.
//! - A read error on one side (e.g. an RST from the server) resets the other
//!   side too, as a real network path would.
//! - Toxics are listed in the order they were added (Toxiproxy lists upstream
//!   ones first); `toxicity` outside 0..=1 is refused with 400.
//! - `GET /version` answers `{"version":"2.12.0","chaos_proxy":"<crate version>"}`;
//!   Toxiproxy's `/metrics` is not implemented.
//! - A bandwidth `rate` of 0 is refused with 400 (Toxiproxy accepts it and then
//!   forwards nothing); the browser 403 has a JSON body (Toxiproxy's is text).
//!
//! ## From Rust
//!
//! The test process uses [`ProxyClient`] (a tiny HTTP/1.1 client, works against
//! real Toxiproxy too); tests can embed the server with [`Server::start`].
//!
//! ```no_run
//! use chaos_proxy::{ProxyClient, Stream, Toxic};
//! # async fn demo() -> Result<(), chaos_proxy::ClientError> {
//! let api = ProxyClient::new("127.0.0.1:8474");
//! api.add_toxic("postgres", &Toxic::latency("lat", Stream::Downstream, 100, 10)).await?;
//! // ... exercise the system ...
//! let stats = api.proxy("postgres").await?.stats.unwrap_or_default();
//! assert!(stats.toxics_applied > 0, "the proxy delayed something");
//! api.remove_toxic("postgres", "lat").await?;
//! api.set_enabled("postgres", false).await?; // the database "goes away"
//! api.reset().await?; // everything back to normal
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod cli;
mod client;
mod http;
mod link;
mod model;
pub mod reaper;
mod server;
#[cfg(target_os = "linux")]
mod splice;
mod timer;

pub use cli::{Command, DEFAULT_API, USAGE, parse_args, parse_proxy_spec};
pub use client::{ClientError, ProxyClient};
pub use model::{
    ApiErrorBody, NewProxy, Proxy, ProxyStats, ProxyUpdate, Stream, Toxic, ToxicError, ToxicKind,
};
pub use server::{Server, ServerConfig, TOXIPROXY_API_VERSION};

use std::io::Write;

/// Entry point of the `chaos-proxy` binary: parses the command line and the
/// environment, serves until SIGTERM/SIGINT, then exits the process.
pub fn main() {
    main_with_args(std::env::args().skip(1).collect());
}

/// [`main`] with the arguments given (without the program's name): for a process that is
/// the proxy without being started through its own `main`, such as a test binary the chaos
/// runtime copied into the proxy's container.
pub fn main_with_args(args: Vec<String>) {
    let config = match parse_args(args, |k| std::env::var(k).ok()) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return;
        }
        Ok(Command::Version) => {
            println!("chaos-proxy {}", env!("CARGO_PKG_VERSION"));
            return;
        }
        Ok(Command::Reap {
            owner,
            listen,
            socket,
            linger,
        }) => {
            let first_within = std::time::Duration::from_secs(60);
            let served = match owner {
                Some(owner) => reaper::serve(&owner, &listen, &socket, first_within).map(|_| ()),
                None => reaper::serve_shared(&listen, &socket, first_within, linger),
            };
            match served {
                Ok(()) => std::process::exit(0),
                Err(e) => {
                    eprintln!("chaos-proxy reap: {e}");
                    std::process::exit(1);
                }
            }
        }
        Err(e) => {
            eprintln!("chaos-proxy: {e}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("chaos-proxy")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chaos-proxy: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(serve(config));
    drop(runtime);
    std::process::exit(code);
}

async fn serve(config: ServerConfig) -> i32 {
    let server = match Server::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("chaos-proxy: {e}");
            return 1;
        }
    };
    eprintln!("chaos-proxy: api on {}", server.api_addr());
    for p in server.proxies().await.values() {
        eprintln!(
            "chaos-proxy: proxy {} {} -> {} ({})",
            p.name,
            p.listen,
            p.upstream,
            if p.enabled { "enabled" } else { "disabled" }
        );
    }
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "chaos-proxy ready");
        let _ = out.flush();
    }
    wait_for_signal().await;
    eprintln!("chaos-proxy: shutting down");
    server.shutdown().await;
    0
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
