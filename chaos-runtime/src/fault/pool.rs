//! Connection-pool exhaustion: a client in the test process holds every PostgreSQL connection.
//!
//! Inject: over the stack's 127.0.0.1 port, open connections (application name
//! `chaos-pool-hog`) until the server refuses one with `too many clients` (SQLSTATE 53300);
//! then terminate every other client's backend (`pg_terminate_backend`), so the order service
//! loses its pooled connections and has to reconnect into a full server. While the fault
//! holds, a keeper tops the hog up again and terminates any backend that slipped into a freed
//! slot. Heal: close every held connection at once (before anything else, so the slots free as
//! the heal begins), stop the keeper, and wait until the server shows none of them.
//!
//! Events: `pool_exhausted` once the server is full (`held`, `in_use`, `max_connections`,
//! `reason=too_many_connections`, the server's `refusal`), `backends_terminated` (`count`,
//! `application_name`) at injection and whenever the keeper evicts a newcomer, and
//! `pool_released` once every held slot is free again.
//!
//! A terminated backend frees its slot and the service reconnects at once, so whoever is
//! faster gets the slot. The hog wins that race with spare sockets: connected, with a forked
//! backend waiting for the startup packet (PostgreSQL takes the slot only after it), so a freed
//! slot is taken by sending a packet, not by connecting and forking.
//!
//! The same spares make the injection quick: the fault is armed before the run decides to
//! inject it ([`arm`], from `fault::prepare`), with the control connection and a spare for
//! every free slot and then some (a backend waiting for its startup packet holds no slot, so
//! the service sees nothing of it). Filling the server is then a startup packet per slot: the
//! fork of ~30 backends, which took 170-310 ms after the decision on a 2-core host, happens
//! before it.
//!
//! The test process is a superuser (`postgres`), so it also takes the
//! `superuser_reserved_connections` slots: nothing else gets in.
//!
//! [`PgSampler`] makes the connection counts part of the timeline: every 250 ms it counts
//! `pg_stat_activity` by application name and state, over one connection opened before the
//! fault (so it keeps working while the server is full), and emits `pg_connections`
//! observations (source `Service`).
use super::{FaultCx, FaultError, Healing, Injected};
use crate::clock::mono_ns;
use crate::observe::{Observation, Sink, Source};
use crate::spec::FaultSpec;
use crate::stack::Stack;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

/// Application name of the connections that hold the slots.
pub const HOG_APP: &str = "chaos-pool-hog";
/// Application name of the fault's own control connection.
pub const ADMIN_APP: &str = "chaos-pool-admin";
/// Application name of the sampler's connection.
pub const SAMPLER_APP: &str = "chaos-pg-sampler";
/// Observation kind of one `pg_stat_activity` sample.
pub const PG_CONNECTIONS: &str = "pg_connections";
/// How often the sampler counts.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// How often the keeper checks for freed slots and intruders.
const KEEP_EVERY: Duration = Duration::from_millis(5);
/// Clients of the stack that the fault leaves alone: its own and the sampler's.
const OURS: &str = "application_name LIKE 'chaos-%'";

/// One held connection.
struct Held {
    client: Client,
    task: JoinHandle<()>,
}

fn config(stack: &Stack, role: &str, app: &str) -> tokio_postgres::Config {
    let mut cfg: tokio_postgres::Config = stack
        .postgres_config(role)
        .unwrap_or_default()
        .parse()
        .expect("the stack's connection string parses");
    cfg.application_name(app);
    cfg
}

async fn connect(stack: &Stack, role: &str, app: &str) -> Result<Held, tokio_postgres::Error> {
    let (client, conn) = config(stack, role, app).connect(NoTls).await?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Held { client, task })
}

fn is_too_many(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::TOO_MANY_CONNECTIONS)
}

fn other(what: impl Into<String>) -> FaultError {
    FaultError::Other {
        fault: "pool_exhaustion postgres".into(),
        what: what.into(),
    }
}

/// Client backends now, and `max_connections`.
async fn occupancy(admin: &Client) -> Result<(usize, usize), tokio_postgres::Error> {
    let row = admin
        .query_one(
            "SELECT count(*)::int8, current_setting('max_connections')::int8 \
             FROM pg_stat_activity WHERE backend_type = 'client backend'",
            &[],
        )
        .await?;
    Ok((row.get::<_, i64>(0) as usize, row.get::<_, i64>(1) as usize))
}

/// Terminates every client backend that is not the fault's or the sampler's; returns how many
/// and whose (application names). Does not wait for them to exit.
async fn terminate_others(admin: &Client) -> Result<(usize, Vec<String>), tokio_postgres::Error> {
    let rows = admin
        .query(
            &format!(
                "SELECT coalesce(nullif(application_name, ''), '(none)'), pg_terminate_backend(pid) \
                 FROM pg_stat_activity WHERE backend_type = 'client backend' \
                 AND pid <> pg_backend_pid() AND NOT ({OURS})"
            ),
            &[],
        )
        .await?;
    let mut apps: Vec<String> = rows
        .iter()
        .filter(|r| r.get::<_, bool>(1))
        .map(|r| r.get(0))
        .collect();
    let n = apps.len();
    apps.sort();
    apps.dedup();
    Ok((n, apps))
}

/// Spare sockets kept open to PostgreSQL: each has a forked backend waiting for its startup
/// packet, which does not take a connection slot yet (PostgreSQL takes the slot, `InitProcess`,
/// after the startup packet). Sending the packet when a slot frees takes it within a fraction
/// of a millisecond, well before a client that still has to connect and fork.
const SPARES: usize = 12;
/// Spares are replaced before PostgreSQL's `authentication_timeout` (60 s) closes them.
const SPARE_MAX_AGE: Duration = Duration::from_secs(30);
/// How long to watch for terminated backends to free their slots.
const FREE_WAIT: Duration = Duration::from_millis(50);
/// How long the injection waits for the last terminated backends' slots before it says what
/// it holds.
const FULL_WAIT: Duration = Duration::from_secs(1);

/// The held connections, shared with the healing so that it drops them all at once, without
/// waiting for the keeper: the slots free the moment the heal begins.
#[derive(Clone)]
struct Holding(Arc<Mutex<Option<Vec<Held>>>>);

impl Holding {
    fn new() -> Self {
        Holding(Arc::new(Mutex::new(Some(Vec::new()))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<Held>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds connections; after the release they are dropped (closed) instead.
    fn add(&self, new: impl IntoIterator<Item = Held>) -> usize {
        match self.lock().as_mut() {
            Some(v) => {
                let before = v.len();
                v.extend(new);
                v.len() - before
            }
            None => 0,
        }
    }

    fn len(&self) -> usize {
        self.lock().as_ref().map_or(0, Vec::len)
    }

    /// Forgets connections the server closed.
    fn prune(&self) {
        if let Some(v) = self.lock().as_mut() {
            v.retain(|h| !h.client.is_closed());
        }
    }

    /// Takes every held connection; nothing is held from now on.
    fn release(&self) -> Vec<Held> {
        self.lock().take().unwrap_or_default()
    }
}

/// The client that holds the server full.
struct Hog {
    stack: Arc<Stack>,
    role: String,
    admin: Held,
    held: Holding,
    spares: Vec<(TcpStream, Instant)>,
}

impl Hog {
    fn pg_addr(&self) -> String {
        let port = self
            .stack
            .declared(&self.role)
            .and_then(|d| d.postgres.as_ref())
            .map_or(5432, |pg| pg.port);
        self.stack.addr(&self.role, port)
    }

    async fn occupancy(&self) -> Result<(usize, usize), FaultError> {
        occupancy(&self.admin.client)
            .await
            .map_err(|e| other(format!("counting connections: {e}")))
    }

    /// Keeps `SPARES` fresh spare sockets.
    async fn top_up_spares(&mut self) {
        let addr = self.pg_addr();
        self.top_up_spares_with(SPARES, || TcpStream::connect(addr.clone()))
            .await
    }

    /// Keeps `n` fresh spare sockets opened by `open`.
    async fn top_up_spares_with<F, Fut>(&mut self, n: usize, open: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = std::io::Result<TcpStream>>,
    {
        self.spares.retain(|(_, at)| at.elapsed() < SPARE_MAX_AGE);
        let missing = n.saturating_sub(self.spares.len());
        let opened = futures::future::join_all((0..missing).map(|_| open())).await;
        let now = Instant::now();
        self.spares
            .extend(opened.into_iter().flatten().map(|s| (s, now)));
    }

    /// Opens connections until the server refuses one for lack of slots. Returns the refusal.
    async fn fill(&mut self) -> Result<String, FaultError> {
        let started = Instant::now();
        loop {
            let (used, max) = self.occupancy().await?;
            // One more than the free slots: the extra attempt proves the server is full.
            let attempts = max.saturating_sub(used) + 1;
            let mut refusal = None;
            let mut failed = None;
            let mut opened = 0;
            for r in self.open(attempts).await {
                match r {
                    Ok(h) => opened += self.held.add([h]),
                    Err(e) if is_too_many(&e) => {
                        refusal = Some(
                            e.as_db_error()
                                .map(|d| d.message().to_string())
                                .unwrap_or_else(|| e.to_string()),
                        )
                    }
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(r) = refusal {
                return Ok(r);
            }
            // A spare whose backend went away fails alone; nothing opened at all is an error.
            if let (0, Some(e)) = (opened, failed) {
                return Err(other(format!("opening a connection to hold: {e}")));
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(other(format!(
                    "the server still accepts connections after {} were opened; is max_connections enforced?",
                    self.held.len()
                )));
            }
        }
    }

    /// Takes slots as they free (terminated backends take a moment to exit): for up to
    /// `FREE_WAIT`, whenever the server shows free slots, takes them; done once it took `want`.
    async fn take_freed(&mut self, want: usize) -> Result<usize, FaultError> {
        let until = Instant::now() + FREE_WAIT;
        let mut taken = 0;
        loop {
            let (used, max) = self.occupancy().await?;
            if used < max {
                taken += self.take(max - used).await;
            }
            if taken >= want || Instant::now() >= until {
                return Ok(taken);
            }
        }
    }

    /// Takes `free` slots: spares first, new connections for the rest. Returns how many it got.
    async fn take(&mut self, free: usize) -> usize {
        let opened = self.open(free).await;
        // A refusal here means a client was faster; the keeper's next round evicts it.
        self.held.add(opened.into_iter().flatten())
    }

    /// Opens `n` connections: over spares first (a startup packet each), new ones for the rest.
    async fn open(&mut self, n: usize) -> Vec<Result<Held, tokio_postgres::Error>> {
        let cfg = config(&self.stack, &self.role, HOG_APP);
        self.spares.retain(|(_, at)| at.elapsed() < SPARE_MAX_AGE);
        let n_spares = n.min(self.spares.len());
        let spares: Vec<TcpStream> = self.spares.drain(..n_spares).map(|(s, _)| s).collect();
        let raw = futures::future::join_all(spares.into_iter().map(|s| {
            let cfg = cfg.clone();
            async move {
                let (client, conn) = cfg.connect_raw(s, NoTls).await?;
                let task = tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok::<_, tokio_postgres::Error>(Held { client, task })
            }
        }));
        let stack = self.stack.clone();
        let role = self.role.clone();
        let fresh =
            futures::future::join_all((n_spares..n).map(|_| connect(&stack, &role, HOG_APP)));
        let (raw, fresh) = tokio::join!(raw, fresh);
        raw.into_iter().chain(fresh).collect()
    }

    /// Evicts the others, then takes the slots of terminated backends that exited only after
    /// [`Hog::take_freed`] stopped waiting (on a loaded host a backend takes longer than
    /// `FREE_WAIT` to go) and evicts whoever slipped into one, until the server is full or
    /// `FULL_WAIT` has passed (the keeper takes what is left). The `pool_exhausted` event then
    /// says what the fault holds once it is whole. Returns every backend terminated (count,
    /// application names) and the occupancy.
    async fn evict_until_full(
        &mut self,
    ) -> Result<((usize, Vec<String>), (usize, usize)), FaultError> {
        let until = Instant::now() + FULL_WAIT;
        let (mut terminated, mut apps) = (0, Vec::new());
        loop {
            let (n, a) = self.evict().await?;
            terminated += n;
            apps.extend(a);
            let (used, max) = self.occupancy().await?;
            if used >= max || Instant::now() >= until {
                apps.sort();
                apps.dedup();
                return Ok(((terminated, apps), (used, max)));
            }
            self.take_freed(max - used).await?;
        }
    }

    /// Terminates the others and takes their slots, until none is left (bounded).
    async fn evict(&mut self) -> Result<(usize, Vec<String>), FaultError> {
        let mut total = 0;
        let mut apps = Vec::new();
        for _ in 0..20 {
            let (n, a) = terminate_others(&self.admin.client)
                .await
                .map_err(|e| other(format!("pg_terminate_backend: {e}")))?;
            if n == 0 {
                break;
            }
            total += n;
            apps.extend(a);
            self.take_freed(n).await?;
            self.top_up_spares().await;
        }
        apps.sort();
        apps.dedup();
        Ok((total, apps))
    }
}

/// A pool exhaustion made ready before the run decides to inject it: the control connection,
/// and a spare socket (a backend forked and waiting for its startup packet, which holds no
/// slot) for every free slot and then some. Filling the server is then a startup packet per
/// slot, not a connect and a fork: tens of milliseconds instead of hundreds on a small host.
pub struct Armed(Hog);

/// Arms a pool exhaustion (see [`Armed`]); nothing of the server's slots is taken yet.
pub async fn arm(cx: &Arc<FaultCx>, spec: &FaultSpec) -> Result<Armed, FaultError> {
    if cx.stack.postgres_config(spec.target).is_none() {
        return Err(FaultError::Unsupported {
            fault: format!("pool_exhaustion {}", spec.target),
            why: "only PostgreSQL has a connection limit to exhaust".into(),
            fix: "target a service declared with Service::postgres".into(),
        });
    }
    let stack = cx.stack.clone();
    let role = spec.target.to_string();
    let admin = connect(&stack, &role, ADMIN_APP)
        .await
        .map_err(|e| other(format!("control connection: {e}")))?;
    let mut hog = Hog {
        stack,
        role,
        admin,
        held: Holding::new(),
        spares: Vec::new(),
    };
    let (used, max) = hog.occupancy().await?;
    // The free slots, the extra attempt that proves the server full, and spares for the slots
    // the service's terminated backends free; each one's backend forked and answering.
    let addr = hog.pg_addr();
    hog.top_up_spares_with(max.saturating_sub(used) + 1 + SPARES, || {
        answering_spare(addr.clone())
    })
    .await;
    Ok(Armed(hog))
}

/// A spare socket whose backend is known to be forked and waiting: PostgreSQL's postmaster
/// accepts and forks one connection after the other, so a connected socket may not have a
/// backend yet. The backend itself answers an SSLRequest (`N`: no TLS here), then waits for
/// the startup packet on the same connection, as after libpq's `sslmode=prefer` fallback.
async fn answering_spare(addr: String) -> std::io::Result<TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await?;
    // Length 8, request code 80877103.
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await?;
    let mut answer = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut answer))
        .await
        .map_err(|_| std::io::Error::other("no answer to the SSLRequest"))??;
    match answer[0] {
        b'N' => Ok(s),
        other => Err(std::io::Error::other(format!(
            "SSLRequest answered {:?}, not N",
            other as char
        ))),
    }
}

/// Injects an armed pool exhaustion: takes every free slot, then the service's.
pub async fn inject_armed(cx: &Arc<FaultCx>, armed: Armed) -> Result<Injected, FaultError> {
    let Armed(mut hog) = armed;
    let role = hog.role.clone();
    let refusal = hog.fill().await?;
    // In effect: every free slot is held and the server refuses a new connection. (Evicting
    // the clients already connected follows; `backends_terminated` is stamped when it is done.)
    super::in_effect();
    let ((terminated, apps), (used, max)) = hog.evict_until_full().await?;
    cx.event(
        "pool_exhausted",
        &role,
        &[
            ("held", hog.held.len().to_string()),
            ("in_use", used.to_string()),
            ("max_connections", max.to_string()),
            ("reason", "too_many_connections".into()),
            ("refusal", refusal),
        ],
    );
    cx.event(
        "backends_terminated",
        &role,
        &[
            ("count", terminated.to_string()),
            ("application_name", apps.join(",")),
        ],
    );

    let holding = hog.held.clone();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let keeper = tokio::spawn(keep(cx.clone(), hog, stop_rx));
    Ok(Injected {
        mechanism: "client holding every connection + pg_terminate_backend".into(),
        healing: Healing::new(move |cx, deadline| async move {
            // Close everything first, before any await: the slots free as the heal begins.
            let held = holding.release();
            let n = held.len();
            let tasks: Vec<JoinHandle<()>> = held
                .into_iter()
                .map(|h| {
                    drop(h.client); // the connection task sends Terminate and ends
                    h.task
                })
                .collect();
            let _ = stop_tx.send(());
            let hog = keeper
                .await
                .map_err(|e| other(format!("the keeper task failed: {e}")))?;
            release(hog, tasks, deadline).await?;
            // The fault is lifted: every slot it held is free again.
            cx.event("pool_released", &role, &[("released", n.to_string())]);
            Ok(())
        }),
    })
}

/// Holds the server full until told to stop: replaces held connections the server closed,
/// terminates intruders and takes their slots.
async fn keep(cx: Arc<FaultCx>, mut hog: Hog, mut stop: oneshot::Receiver<()>) -> Hog {
    loop {
        let round = async {
            tokio::time::sleep(KEEP_EVERY).await;
            hog.held.prune();
            // Errors are retried on the next round.
            match hog.evict().await {
                Ok((n, apps)) if n > 0 => {
                    cx.event(
                        "backends_terminated",
                        &hog.role,
                        &[
                            ("count", n.to_string()),
                            ("application_name", apps.join(",")),
                        ],
                    );
                }
                _ => {
                    if let Ok((used, max)) = hog.occupancy().await
                        && used < max
                    {
                        let _ = hog.take_freed(max - used).await;
                    }
                }
            }
            hog.top_up_spares().await;
        };
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = round => {}
        }
    }
    hog
}

/// Waits until the released connections are gone from the server.
async fn release(
    hog: Hog,
    tasks: Vec<JoinHandle<()>>,
    deadline: Duration,
) -> Result<(), FaultError> {
    let Hog {
        admin,
        held,
        spares,
        ..
    } = hog;
    drop(spares);
    drop(held.release()); // whatever the keeper opened after the release
    for t in tasks {
        let abort = t.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), t)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    let until = Instant::now() + deadline;
    let left = loop {
        let left: i64 = admin
            .client
            .query_one(
                "SELECT count(*)::int8 FROM pg_stat_activity WHERE application_name = $1",
                &[&HOG_APP],
            )
            .await
            .map(|r| r.get(0))
            .map_err(|e| other(format!("checking the release: {e}")))?;
        if left == 0 || Instant::now() >= until {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    drop(admin.client);
    let _ = tokio::time::timeout(Duration::from_secs(2), admin.task).await;
    if left > 0 {
        return Err(other(format!(
            "{left} held connections still open {} s after the release",
            deadline.as_secs()
        )));
    }
    Ok(())
}

/// Counts `pg_stat_activity` periodically into the timeline (`pg_connections`, source `Service`).
pub struct PgSampler {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl PgSampler {
    /// Opens the sampler's connection now (before any fault fills the server) and starts counting.
    pub async fn start(
        stack: Arc<Stack>,
        role: &str,
        sink: Sink,
    ) -> Result<PgSampler, tokio_postgres::Error> {
        let role = role.to_string();
        let mut conn = Some(connect(&stack, &role, SAMPLER_APP).await?);
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = tick.tick() => {}
                }
                if conn.as_ref().is_none_or(|c| c.client.is_closed()) {
                    // PostgreSQL restarted (another fault): reconnect, when it lets us in.
                    conn = connect(&stack, &role, SAMPLER_APP).await.ok();
                }
                let Some(c) = conn.as_ref() else { continue };
                let at_ns = mono_ns();
                if let Ok(detail) = sample(&c.client).await {
                    let _ = sink.send(Observation {
                        at_ns,
                        kind: PG_CONNECTIONS.into(),
                        source: Source::Service,
                        container: Some(role.clone()),
                        detail,
                    });
                }
            }
        });
        Ok(PgSampler {
            stop: Some(stop_tx),
            task,
        })
    }

    /// Stops counting and closes the connection.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let abort = self.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(3), &mut self.task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

/// One count: `total`, `max_connections`, and `<application>.<state>` for every group.
async fn sample(client: &Client) -> Result<BTreeMap<String, String>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT coalesce(nullif(application_name, ''), '(none)'), coalesce(state, '(none)'), count(*)::int8, \
             current_setting('max_connections') \
             FROM pg_stat_activity WHERE backend_type = 'client backend' GROUP BY 1, 2",
            &[],
        )
        .await?;
    let mut detail = BTreeMap::new();
    let mut total = 0;
    for r in &rows {
        let (app, state, n, max): (String, String, i64, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        total += n;
        detail.insert(format!("{app}.{state}"), n.to_string());
        detail.insert("max_connections".into(), max);
    }
    detail.insert("total".into(), total.to_string());
    Ok(detail)
}

/// Connections of one application in a `pg_connections` observation's detail (all states).
pub fn count_of(detail: &BTreeMap<String, String>, app: &str) -> usize {
    detail
        .iter()
        .filter(|(k, _)| k.rsplit_once('.').is_some_and(|(a, _)| a == app))
        .filter_map(|(_, v)| v.parse::<usize>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_an_application_over_its_states() {
        let d: BTreeMap<String, String> = [
            ("order-service.idle", "3"),
            ("order-service.active", "1"),
            ("chaos-pool-hog.idle", "28"),
            ("total", "32"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(count_of(&d, "order-service"), 4);
        assert_eq!(count_of(&d, HOG_APP), 28);
        assert_eq!(count_of(&d, "nobody"), 0);
    }
}
