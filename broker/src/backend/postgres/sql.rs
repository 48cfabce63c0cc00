//! The one way this backend runs SQL: a connection from the pool, a
//! transaction, and statements prepared once per connection
//! (deadpool-postgres caches them), each failure classified once here.
//!
//! A failure of the connection (lost, refused, timed out, the server
//! shutting down or out of connections, a standby that cannot write) is
//! [`BackendError::Unavailable`] with a message of ours: the client
//! retries and the health check looks at the database. Anything else (a
//! statement the database refused, a constraint violated, a value that
//! does not convert) is a defect: logged in full here and answered
//! [`BackendError::Internal`], so that no client retries it blindly and no
//! client reads the database's text.

use deadpool_postgres::{GenericClient, Object, Pool, PoolError, Transaction};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tracing::{debug, error};

use crate::backend::BackendError;

type Result<T> = std::result::Result<T, BackendError>;

/// A statement's parameters.
pub type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A connection from `pool`.
pub async fn connection(pool: &Pool) -> Result<Object> {
    pool.get().await.map_err(|e| pool_error(&e))
}

/// Begins a transaction on `client`.
pub async fn transaction(client: &mut Object) -> Result<Transaction<'_>> {
    client.transaction().await.map_err(|e| classify(&e))
}

/// Commits `tx`.
pub async fn commit(tx: Transaction<'_>) -> Result<()> {
    tx.commit().await.map_err(|e| classify(&e))
}

/// Every row `sql` returns.
pub async fn query(c: &impl GenericClient, sql: &str, params: Params<'_>) -> Result<Vec<Row>> {
    let statement = c.prepare_cached(sql).await.map_err(|e| classify(&e))?;
    c.query(&statement, params).await.map_err(|e| classify(&e))
}

/// The one row `sql` returns.
pub async fn query_one(c: &impl GenericClient, sql: &str, params: Params<'_>) -> Result<Row> {
    let statement = c.prepare_cached(sql).await.map_err(|e| classify(&e))?;
    c.query_one(&statement, params)
        .await
        .map_err(|e| classify(&e))
}

/// The row `sql` returns, if any.
pub async fn query_opt(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>> {
    let statement = c.prepare_cached(sql).await.map_err(|e| classify(&e))?;
    c.query_opt(&statement, params)
        .await
        .map_err(|e| classify(&e))
}

/// How many rows `sql` changed.
pub async fn execute(c: &impl GenericClient, sql: &str, params: Params<'_>) -> Result<u64> {
    let statement = c.prepare_cached(sql).await.map_err(|e| classify(&e))?;
    c.execute(&statement, params)
        .await
        .map_err(|e| classify(&e))
}

/// Column `name` of `row`; a column that is missing or of another type is
/// a defect of this backend, classified as such.
pub fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, name: &str) -> Result<T> {
    row.try_get(name).map_err(|e| classify(&e))
}

/// A pool failure: no connection within the wait, or none could be made.
pub fn pool_error(e: &PoolError) -> BackendError {
    match e {
        PoolError::Backend(e) => classify(e),
        PoolError::Timeout(_) => {
            debug!(error = %e, "no database connection");
            BackendError::Unavailable("no database connection could be had in time")
        }
        PoolError::Closed => BackendError::Unavailable("the database connection pool is closed"),
        PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {
            error!(error = %describe(e), "database connection pool");
            BackendError::Internal
        }
    }
}

/// A database failure as the service hears it: see the module doc.
pub fn classify(e: &tokio_postgres::Error) -> BackendError {
    let unavailable = |message: &'static str| {
        debug!(error = %describe(e), "database unavailable");
        BackendError::Unavailable(message)
    };
    let Some(db) = e.as_db_error() else {
        // No answer from the server: the connection (closed, refused, an
        // I/O error, a timeout), or a value that would not convert.
        return if e.is_closed() || source_is_io(e) || is_connection(e) {
            unavailable("the database connection was lost; the broker reconnects by itself")
        } else {
            error!(error = %describe(e), "database client error");
            BackendError::Internal
        };
    };
    let code = db.code();
    let class = &code.code()[..2];
    if class == "08" || class == "53" || class == "57" || class == "58" {
        // Connection exceptions, insufficient resources, operator
        // intervention (shutdown, statement timeout), system errors.
        unavailable("the database cannot serve now; the broker reconnects by itself")
    } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
    {
        unavailable("the database could not order this change with another; try again")
    } else if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
        unavailable("the database is read-only now (a standby, or a failover under way)")
    } else {
        error!(error = %describe(e), "database error");
        BackendError::Internal
    }
}

/// Whether the client error is of the connection (its text is all that
/// tells: tokio-postgres keeps its kinds private).
fn is_connection(e: &tokio_postgres::Error) -> bool {
    let text = e.to_string();
    [
        "error connecting",
        "timeout",
        "error performing TLS",
        "authentication error",
        "error communicating",
        "connection closed",
    ]
    .iter()
    .any(|prefix| text.starts_with(prefix))
}

fn source_is_io(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = e.source();
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// An error with its causes: tokio-postgres says only "db error" until
/// its source, the server's message, is added.
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
