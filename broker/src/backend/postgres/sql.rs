//! Statements run as prepared statements, each prepared once per pooled
//! connection (deadpool-postgres keeps them), with the database's errors
//! as the service's UNAVAILABLE; and the wake-up every broker LISTENs for.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::unavailable;
use crate::service::RequestError;

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Every row `sql` returns.
pub async fn rows(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, RequestError> {
    let statement = c.prepare_cached(sql).await.map_err(unavailable)?;
    c.query(&statement, params).await.map_err(unavailable)
}

/// The one row `sql` returns.
pub async fn row(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<Row, RequestError> {
    let statement = c.prepare_cached(sql).await.map_err(unavailable)?;
    c.query_one(&statement, params).await.map_err(unavailable)
}

/// The row `sql` returns, if any.
pub async fn row_opt(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, RequestError> {
    let statement = c.prepare_cached(sql).await.map_err(unavailable)?;
    c.query_opt(&statement, params).await.map_err(unavailable)
}

/// How many rows `sql` changed.
pub async fn execute(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, RequestError> {
    let statement = c.prepare_cached(sql).await.map_err(unavailable)?;
    c.execute(&statement, params).await.map_err(unavailable)
}

/// The channel every broker LISTENs on: a job became ready or was scheduled.
pub const WAKE_CHANNEL: &str = "sluice_wake";

/// Notifies [`WAKE_CHANNEL`], delivered when the transaction commits.
pub const WAKE: &str = "SELECT pg_notify('sluice_wake', '')";

/// Wakes every broker once `c`'s transaction commits (at once outside one).
pub async fn wake_all(c: &impl GenericClient) -> Result<(), RequestError> {
    execute(c, WAKE, &[]).await.map(|_| ())
}
