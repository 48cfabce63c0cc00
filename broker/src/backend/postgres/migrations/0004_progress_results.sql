-- Sluice on PostgreSQL, schema version 4: job progress and results.
--
-- progress: the last report of a running job (Broker.Progress), a JSON
-- object {"percent", "message", "attempt", "at_us"}; it follows the job to
-- the history. result: what the successful attempt's Ack carried, kept in
-- the history only (a job gets one when it finishes). Nullable columns
-- without a default: adding them rewrites no row.
ALTER TABLE sluice_jobs ADD COLUMN progress jsonb;
ALTER TABLE sluice_finished ADD COLUMN progress jsonb, ADD COLUMN result bytea;
