-- Sluice on PostgreSQL, schema version 5: a job's flow-control key.
--
-- key: the customer or tenant a job belongs to (EnqueueRequest.key), NULL
-- for none; it follows the job to the history. A nullable column without
-- a default: adding it rewrites no row.
ALTER TABLE sluice_jobs ADD COLUMN key text;
ALTER TABLE sluice_finished ADD COLUMN key text;
