//! Invariants: what must be true once the system has recovered, checked after the steady
//! state returned. Their failures are the run's violations ([`crate::ChaosRun::lost_writes`]).
//!
//! Built in: [`SqlLedger`] (every acknowledged key is a row of a table, holding what was
//! written, once) and [`invariant_fn`] for a closure.
//!
//! ```no_run
//! use chaos_runtime::invariant::{invariant_fn, Violation};
//!
//! let no_empty_run = invariant_fn("something was acknowledged", |cx| {
//!     Box::pin(async move {
//!         Ok(if cx.acked().is_empty() {
//!             vec![Violation::new("nothing was acknowledged")]
//!         } else {
//!             vec![]
//!         })
//!     })
//! });
//! ```
use crate::stack::Stack;
use crate::workload::Ack;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Something that must hold after recovery. One method is required.
pub trait Invariant: Send + Sync + 'static {
    /// A short name, shown with each violation.
    fn name(&self) -> String;

    /// The violations found now (empty: it holds). `Err` when it could not be checked.
    fn check<'a>(
        &'a self,
        cx: &'a InvariantCx<'a>,
    ) -> BoxFuture<'a, Result<Vec<Violation>, String>>;
}

/// What an invariant can look at.
pub struct InvariantCx<'a> {
    pub(crate) stack: &'a Stack,
    pub(crate) acked: &'a [Ack],
}

impl<'a> InvariantCx<'a> {
    /// The running stack.
    pub fn stack(&self) -> &'a Stack {
        self.stack
    }

    /// Every write the system acknowledged during the run.
    pub fn acked(&self) -> &'a [Ack] {
        self.acked
    }
}

/// One broken promise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The invariant's name (filled in by the runtime).
    pub invariant: String,
    /// The key concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl Violation {
    /// A violation with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Violation {
            invariant: String::new(),
            key: None,
            message: message.into(),
        }
    }

    /// About one key.
    pub fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        Violation {
            key: Some(key.into()),
            ..Violation::new(message)
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.key {
            Some(k) => write!(f, "{}: {k}: {}", self.invariant, self.message),
            None => write!(f, "{}: {}", self.invariant, self.message),
        }
    }
}

/// An invariant made of a closure.
pub fn invariant_fn<F>(name: impl Into<String>, f: F) -> impl Invariant
where
    F: for<'a> Fn(&'a InvariantCx<'a>) -> BoxFuture<'a, Result<Vec<Violation>, String>>
        + Send
        + Sync
        + 'static,
{
    struct FnInvariant<F> {
        name: String,
        f: F,
    }
    impl<F> Invariant for FnInvariant<F>
    where
        F: for<'a> Fn(&'a InvariantCx<'a>) -> BoxFuture<'a, Result<Vec<Violation>, String>>
            + Send
            + Sync
            + 'static,
    {
        fn name(&self) -> String {
            self.name.clone()
        }
        fn check<'a>(
            &'a self,
            cx: &'a InvariantCx<'a>,
        ) -> BoxFuture<'a, Result<Vec<Violation>, String>> {
            (self.f)(cx)
        }
    }
    FnInvariant {
        name: name.into(),
        f,
    }
}

/// Every acknowledged key is a row of `table` in the PostgreSQL service `role`, exactly once,
/// and holds what the client wrote (each column of [`Ack::written`], compared as text).
#[derive(Clone, Debug)]
pub struct SqlLedger {
    role: String,
    table: String,
    key_column: String,
}

impl SqlLedger {
    /// Acknowledged keys live in `table` of `role` (a service declared with
    /// [`crate::system::Service::postgres`]), under the column `id`.
    pub fn new(role: impl Into<String>, table: impl Into<String>) -> Self {
        SqlLedger {
            role: role.into(),
            table: table.into(),
            key_column: "id".into(),
        }
    }

    /// The key column (default `id`).
    pub fn key_column(mut self, column: impl Into<String>) -> Self {
        self.key_column = column.into();
        self
    }

    /// Checks `acked` now: missing, changed and duplicated rows, in key order.
    pub async fn violations(&self, stack: &Stack, acked: &[Ack]) -> Result<Vec<Violation>, String> {
        let cfg = stack.postgres_config(&self.role).ok_or_else(|| {
            format!(
                "`{}` is not declared as PostgreSQL (Service::postgres)",
                self.role
            )
        })?;
        let timeout = Duration::from_secs(10);
        tokio::time::timeout(timeout, self.query(&cfg, acked))
            .await
            .map_err(|_| {
                format!(
                    "checking the ledger against {} timed out after {timeout:?}",
                    self.role
                )
            })?
    }

    async fn query(&self, cfg: &str, acked: &[Ack]) -> Result<Vec<Violation>, String> {
        let (client, conn) = tokio_postgres::connect(cfg, tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("connecting to {}: {e}", self.role))?;
        let task = tokio::spawn(conn);
        let mut columns: Vec<&str> = acked
            .iter()
            .flat_map(|a| a.written.keys().map(String::as_str))
            .collect();
        columns.sort_unstable();
        columns.dedup();
        let select: Vec<String> = std::iter::once(self.key_column.as_str())
            .chain(columns.iter().copied())
            .map(|c| format!("{}::text", quote_ident(c)))
            .collect();
        let keys: Vec<&str> = acked.iter().map(|a| a.key.as_str()).collect();
        let sql = format!(
            "SELECT {} FROM {} WHERE {}::text = ANY($1)",
            select.join(", "),
            quote_ident(&self.table),
            quote_ident(&self.key_column)
        );
        let rows = client.query(&sql, &[&keys]).await;
        drop(client);
        task.abort();
        let rows = rows.map_err(|e| format!("{sql}: {e}"))?;
        let mut found: HashMap<String, Vec<BTreeMap<String, Option<String>>>> = HashMap::new();
        for r in &rows {
            let key: Option<String> = r.get(0);
            let values = columns
                .iter()
                .enumerate()
                .map(|(i, c)| (c.to_string(), r.get::<_, Option<String>>(i + 1)))
                .collect();
            found
                .entry(key.unwrap_or_default())
                .or_default()
                .push(values);
        }
        Ok(compare(acked, &found))
    }
}

/// The violations of `acked` against the rows `found` per key.
fn compare(
    acked: &[Ack],
    found: &HashMap<String, Vec<BTreeMap<String, Option<String>>>>,
) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for a in acked {
        *seen.entry(a.key.as_str()).or_default() += 1;
    }
    let mut keys: Vec<&Ack> = acked.iter().collect();
    keys.sort_by(|a, b| natural(&a.key, &b.key));
    keys.dedup_by(|a, b| a.key == b.key);
    for a in keys {
        if seen[a.key.as_str()] > 1 {
            out.push(Violation::key(
                &a.key,
                format!(
                    "acknowledged {} times (one write, several acks)",
                    seen[a.key.as_str()]
                ),
            ));
        }
        match found.get(&a.key).map(Vec::as_slice) {
            None | Some([]) => out.push(Violation::key(&a.key, "acknowledged but not stored")),
            Some(rows) => {
                if rows.len() > 1 {
                    out.push(Violation::key(
                        &a.key,
                        format!("stored {} times", rows.len()),
                    ));
                }
                let row = &rows[0];
                for (col, want) in &a.written {
                    let got = row.get(col).cloned().flatten();
                    if got.as_deref() != Some(want.as_str()) {
                        out.push(Violation::key(
                            &a.key,
                            format!("{col} is {got:?}, the client wrote {want:?}"),
                        ));
                    }
                }
            }
        }
    }
    out
}

/// Numbers in numeric order, the rest as text.
fn natural(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<i128>(), b.parse::<i128>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Invariant for SqlLedger {
    fn name(&self) -> String {
        format!("ledger {}.{}", self.role, self.table)
    }

    fn check<'a>(
        &'a self,
        cx: &'a InvariantCx<'a>,
    ) -> BoxFuture<'a, Result<Vec<Violation>, String>> {
        Box::pin(self.violations(cx.stack, cx.acked))
    }
}

/// Runs every invariant; violations carry their invariant's name.
pub(crate) async fn check_all(
    invariants: &[std::sync::Arc<dyn Invariant>],
    stack: &Stack,
    acked: &[Ack],
) -> Result<Vec<Violation>, String> {
    let cx = InvariantCx { stack, acked };
    let mut out = Vec::new();
    for inv in invariants {
        let name = inv.name();
        let found = inv
            .check(&cx)
            .await
            .map_err(|e| format!("the invariant `{name}` could not be checked: {e}"))?;
        out.extend(found.into_iter().map(|mut v| {
            v.invariant = name.clone();
            v
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, &str)]) -> BTreeMap<String, Option<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect()
    }

    #[test]
    fn missing_changed_and_duplicated_rows_are_each_reported() {
        let acked = vec![
            Ack::new(1).with("qty", 5),
            Ack::new(2).with("qty", 7),
            Ack::new(3),
            Ack::new(4),
            Ack::new(4),
        ];
        let found = HashMap::from([
            ("1".to_string(), vec![row(&[("qty", "5")])]),
            ("2".to_string(), vec![row(&[("qty", "8")])]),
            ("4".to_string(), vec![row(&[]), row(&[])]),
        ]);
        let v = compare(&acked, &found);
        let said: Vec<String> = v
            .iter()
            .map(|v| format!("{}: {}", v.key.clone().unwrap(), v.message))
            .collect();
        assert_eq!(
            said,
            vec![
                "2: qty is Some(\"8\"), the client wrote \"7\"",
                "3: acknowledged but not stored",
                "4: acknowledged 2 times (one write, several acks)",
                "4: stored 2 times",
            ]
        );
    }

    #[test]
    fn a_ledger_that_holds_reports_nothing() {
        let acked = vec![Ack::new(10).with("side", "buy")];
        let found = HashMap::from([("10".to_string(), vec![row(&[("side", "buy")])])]);
        assert!(compare(&acked, &found).is_empty());
    }
}
