-- Sluice on PostgreSQL, schema version 5: flow control.
--
-- key: the customer or tenant a job belongs to (EnqueueRequest.key), NULL
-- for none; it follows the job to the history. A nullable column without
-- a default: adding it rewrites no row.
ALTER TABLE sluice_jobs ADD COLUMN key text;
ALTER TABLE sluice_finished ADD COLUMN key text;

-- A queue's limits (limits_record's JSON), its token bucket (tokens as of
-- tokens_at) and where fair dispatch goes on among its keys (cursor: the
-- last key dealt; '' is the jobs without a key). A queue's claims lock its
-- row, so that brokers claim its jobs one at a time: what makes the limits
-- hold across brokers.
CREATE TABLE sluice_limits (
    queue     text PRIMARY KEY,
    limits    jsonb NOT NULL,
    tokens    double precision,
    tokens_at timestamptz,
    cursor    text
);

-- A key's state beside its jobs: held back by a worker until held_until
-- (key_delay), and its token bucket. Rows of keys with neither are
-- removed.
CREATE TABLE sluice_keys (
    queue      text NOT NULL,
    key        text NOT NULL,
    held_until timestamptz,
    tokens     double precision,
    tokens_at  timestamptz,
    PRIMARY KEY (queue, key)
);

-- Fair dispatch walks a queue's keys with ready jobs in key order, and
-- takes each key's first jobs in the contract's order.
CREATE INDEX sluice_jobs_key_ready
    ON sluice_jobs (queue, (coalesce(key, '')), priority DESC, run_at, seq)
    WHERE state = 'ready';
-- The jobs in flight of a queue and of each key.
CREATE INDEX sluice_jobs_key_leased ON sluice_jobs (queue, (coalesce(key, '')))
    WHERE state = 'leased';
