//! The schema's versioned migrations (`migrations/NNNN_*.sql`, applied in
//! order at startup). They run under a transaction-level advisory lock, so
//! that brokers starting together apply each one once; a database whose
//! schema is newer than this broker knows is refused.

use tokio_postgres::Client;

/// Every migration, in order; version N is the N-th.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_jobs.sql"),
    include_str!("migrations/0002_schedules.sql"),
    include_str!("migrations/0003_sources.sql"),
    include_str!("migrations/0004_progress_results.sql"),
    include_str!("migrations/0005_flow_control.sql"),
];

/// The advisory lock key the migrations take ("sluice" in ASCII).
const MIGRATION_LOCK: i64 = 0x736c_7569_6365;

/// The schema version this broker writes and reads.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Why the schema cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The database talks back with an error.
    #[error("migrating the schema: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// A newer broker migrated this database.
    #[error(
        "the database's Sluice schema is version {found}, newer than this broker's {SCHEMA_VERSION}: upgrade this broker"
    )]
    TooNew {
        /// The version found.
        found: i32,
    },
}

/// Brings the schema to [`SCHEMA_VERSION`]; returns the migrations applied.
///
/// # Errors
/// [`SchemaError::TooNew`] for a newer schema, or a database error.
pub async fn migrate(client: &mut Client) -> Result<usize, SchemaError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS sluice_schema (
             version    integer     PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let found: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM sluice_schema", &[])
        .await?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(SchemaError::TooNew { found });
    }
    let mut applied = 0;
    for (version, sql) in (1..).zip(MIGRATIONS).skip(found as usize) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO sluice_schema (version) VALUES ($1)",
            &[&version],
        )
        .await?;
        applied += 1;
    }
    tx.commit().await?;
    Ok(applied)
}
