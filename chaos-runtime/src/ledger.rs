//! The ledger of acknowledged writes, checked against PostgreSQL itself (not the cache).
use std::time::Duration;

/// Why the ledger could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// PostgreSQL did not answer.
    #[error("checking the ledger against PostgreSQL ({what}) failed")]
    Postgres {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: tokio_postgres::Error,
    },
    /// PostgreSQL did not answer in time.
    #[error("checking the ledger against PostgreSQL timed out after {0:?}")]
    Timeout(Duration),
}

/// Returns the acknowledged ids that are not in the `orders` table (lost writes), sorted.
pub async fn missing(pg_config: &str, acked: &[i64]) -> Result<Vec<i64>, LedgerError> {
    let timeout = Duration::from_secs(10);
    let check = async {
        let (client, conn) = tokio_postgres::connect(pg_config, tokio_postgres::NoTls)
            .await
            .map_err(|source| LedgerError::Postgres {
                what: "connect",
                source,
            })?;
        let task = tokio::spawn(conn);
        let rows = client
            .query("SELECT id FROM orders WHERE id = ANY($1)", &[&acked])
            .await
            .map_err(|source| LedgerError::Postgres {
                what: "select acknowledged ids",
                source,
            });
        drop(client);
        task.abort();
        let found: std::collections::HashSet<i64> =
            rows?.iter().map(|r| r.get::<_, i64>(0)).collect();
        let mut lost: Vec<i64> = acked
            .iter()
            .copied()
            .filter(|id| !found.contains(id))
            .collect();
        lost.sort_unstable();
        lost.dedup();
        Ok(lost)
    };
    tokio::time::timeout(timeout, check)
        .await
        .map_err(|_| LedgerError::Timeout(timeout))?
}
