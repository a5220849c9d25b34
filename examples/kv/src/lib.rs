//! A key-value store under test, written the way a team would write its own system:
//!
//! - the image comes from its own Dockerfile (`image/`), built locally on top of the
//!   framework's Debian image (`CHAOS_BASE_IMAGE`);
//! - the workload is its own code: `SET kv:<n> <value>` over a fresh TCP connection, speaking
//!   the Redis protocol by hand; an `+OK` is an acknowledged write;
//! - the invariant is its own closure: every acknowledged key reads back with its value.
use chaos_runtime::invariant::{Violation, invariant_fn};
use chaos_runtime::workload::{Ack, Outcome, Workload, WorkloadCx};
use chaos_runtime::{Probe, Service, System};
use futures::future::BoxFuture;
use std::time::Duration;
use testcontainers::core::WaitFor;
use testcontainers::{GenericBuildableImage, GenericImage, ImageExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IMAGE: (&str, &str) = ("chaos-example-kv", "1");

/// The system: one durable store.
pub fn system() -> System {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/image");
    System::new("kv")
        .build(
            GenericBuildableImage::new(IMAGE.0, IMAGE.1)
                .with_dockerfile(format!("{dir}/Dockerfile"))
                .with_file(format!("{dir}/redis.conf"), "redis.conf"),
        )
        .service(
            Service::new("store", |w| {
                GenericImage::new(IMAGE.0, IMAGE.1)
                    .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
                    .with_mount(w.volume("data", "/data"))
            })
            .port(6379)
            .ready(Probe::exchange(6379, "PING\r\n", "+PONG")),
        )
        .workload("writes", Writes)
        .invariant(invariant_fn("acknowledged keys read back", |cx| {
            Box::pin(async move {
                let addr = cx.stack().addr("store", 6379);
                let mut out = Vec::new();
                for ack in cx.acked() {
                    let want = &ack.written["value"];
                    match command(&addr, &["GET", &ack.key]).await {
                        Ok(reply) if reply == format!("${}\r\n{want}\r\n", want.len()) => {}
                        Ok(reply) => out.push(Violation::key(
                            &ack.key,
                            format!("reads back {reply:?}, {want:?} was acknowledged"),
                        )),
                        Err(e) => return Err(format!("GET {}: {e}", ack.key)),
                    }
                }
                Ok(out)
            })
        }))
}

/// `SET kv:<seq> v<seq>` per request.
pub struct Writes;

impl Workload for Writes {
    fn request<'a>(&'a self, cx: &'a WorkloadCx, seq: u64) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let (key, value) = (format!("kv:{seq}"), format!("v{seq}"));
            match command(&cx.addr("store", 6379), &["SET", &key, &value]).await {
                Ok(reply) if reply == "+OK\r\n" => {
                    Outcome::ok().with_ack(Ack::new(key).with("value", value))
                }
                Ok(reply) => Outcome::failed("error_reply", reply.trim_end().to_string()),
                Err(e) => Outcome::failed(class(&e), e.to_string()),
            }
        })
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_secs(1)
    }
}

/// The class of a failed write, as the snapshot records it. A store that is gone refuses a
/// connection, or resets (or closes) one it had: which a given write meets depends on whether
/// it was in flight at the kill, to the millisecond, so both are one class. A class per TCP
/// outcome would make the first error of a kill differ from run to run for the same behaviour.
fn class(e: &std::io::Error) -> &'static str {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe
        | ErrorKind::UnexpectedEof => "store_unreachable",
        _ => "other",
    }
}

/// One Redis command on a fresh connection; the raw reply.
pub async fn command(addr: &str, args: &[&str]) -> std::io::Result<String> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(req.as_bytes()).await?;
    let mut buf = vec![0u8; 512];
    let mut n = 0;
    loop {
        let got = s.read(&mut buf[n..]).await?;
        if got == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        n += got;
        if complete(&buf[..n]) {
            return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

/// Whether `b` holds one whole simple, error, integer or bulk reply.
fn complete(b: &[u8]) -> bool {
    let Some(end) = b.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    match b[0] {
        b'$' => {
            let len: i64 = std::str::from_utf8(&b[1..end])
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            len < 0 || b.len() >= end + 2 + len as usize + 2
        }
        _ => true,
    }
}
